"""The facade and the SSD family: semantics, stats, bad input leaves the model unchanged."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import dampen
from conftest import loader, make_data, make_model, same_state, state_copy
from dampen.functional import dampening_factors

SSD_FAMILY = ["ssd", "lfssd", "assd", "alf"]
ESTIMATOR = {"ssd": "batch_sq", "assd": "batch_sq", "lfssd": "lf", "alf": "lf"}


def _setup(method: str) -> tuple[nn.Module, Any, Any, dampen.Importance]:
    model, (x, y) = make_model(), make_data()
    train = loader(x, y, 8)
    forget = loader(x[y == 1], y[y == 1], 8)
    return model, train, forget, dampen.importance(model, train, estimator=ESTIMATOR[method])


@pytest.mark.parametrize("method", SSD_FAMILY)
def test_result_is_a_copy_and_matches_the_formula(method: str) -> None:
    model, _train, forget, imp = _setup(method)
    before = state_copy(model)
    options = {} if method in ("assd", "alf") else {"alpha": 1.0}
    result = dampen.unlearn(model, forget, method=method, importance=imp, **options)
    assert isinstance(result, dampen.UnlearnResult) and result.method == method
    assert result.model is not model and same_state(model, before)
    imp_f = dampen.importance(model, forget, estimator=ESTIMATOR[method])
    alpha = result.stats["alpha"]
    lam = result.stats["lambda"]
    for (name, p), q in zip(model.named_parameters(), result.model.parameters(), strict=True):
        beta = dampening_factors(imp[name], imp_f[name], alpha=alpha, lambda_=lam)
        torch.testing.assert_close(q.detach(), p.detach() * beta)
        assert result.stats["selected_per_tensor"][name] == int(
            (imp_f[name] > alpha * imp[name]).sum()
        )
    for b0, b1 in zip(model.buffers(), result.model.buffers(), strict=True):
        assert torch.equal(b0, b1)  # buffers untouched
    stats = result.stats
    assert stats["selected"] == sum(stats["selected_per_tensor"].values()) > 0
    assert stats["parameters"] == sum(p.numel() for p in model.parameters())
    assert stats["importance"] == "stored" and stats["forget_samples"] == 8
    assert set(stats["seconds"]) >= {"importance_forget", "dampen", "total"}


def test_assd_alpha_is_the_percentile_of_ratios() -> None:
    import numpy as np

    model, _train, forget, imp = _setup("assd")
    result = dampen.unlearn(model, forget, method="assd", importance=imp)
    imp_f = dampen.importance(model, forget, estimator=ESTIMATOR["assd"])
    ratios = torch.cat([(imp_f[n] / imp[n]).reshape(-1) for n in imp])
    ratios = ratios[torch.isfinite(ratios)].double().numpy()
    p = 100 - math.log(1 + 100 * 8 / 24)
    assert result.stats["alpha"] == pytest.approx(float(np.percentile(ratios, p)), rel=1e-5)


def test_inplace_changes_the_callers_model() -> None:
    model, _train, forget, imp = _setup("ssd")
    copy_result = dampen.unlearn(model, forget, importance=imp)
    result = dampen.unlearn(model, forget, importance=imp, inplace=True)
    assert result.model is model
    assert same_state(model, state_copy(copy_result.model))


@pytest.mark.parametrize("estimator", [None, "batch_sq", "per_sample"])
def test_on_the_fly_equals_stored(estimator: str | None) -> None:
    """Without an estimator both sides take the default (shuffled_sq)."""
    model, train, forget, _ = _setup("ssd")
    named = {} if estimator is None else {"estimator": estimator}
    imp = dampen.importance(model, train, **named)
    stored = dampen.unlearn(model, forget, importance=imp, alpha=1.0)
    fly = dampen.unlearn(model, forget, train=train, alpha=1.0, **named)
    assert fly.stats["importance"] == "computed"
    assert fly.stats["estimator"] == stored.stats["estimator"] == (estimator or "shuffled_sq")
    assert stored.stats["selected"] > 0
    assert same_state(fly.model, state_copy(stored.model))


def test_deterministic() -> None:
    model, _train, forget, imp = _setup("assd")
    a = dampen.unlearn(model, forget, method="assd", importance=imp)
    b = dampen.unlearn(model, forget, method="assd", importance=imp)
    assert same_state(a.model, state_copy(b.model)) and a.stats["alpha"] == b.stats["alpha"]


def test_per_sample_estimator_and_stored_round_trip(tmp_path: Any) -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y, 5), estimator="per_sample")
    back = dampen.Importance.load(imp.save(tmp_path / "i.safetensors"), model=model)
    forget = loader(x[y == 2], y[y == 2], 3)  # any batch size: per_sample does not depend on it
    a = dampen.unlearn(model, forget, importance=imp, estimator="per_sample")
    b = dampen.unlearn(model, forget, importance=back, estimator="per_sample")
    assert same_state(a.model, state_copy(b.model))


def test_lfssd_needs_no_labels() -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, [(x[i : i + 8],) for i in range(0, 24, 8)], estimator="lf")
    forget = [(x[y == 0],)]
    result = dampen.unlearn(model, forget, method="lfssd", importance=imp, alpha=1.0)
    assert result.stats["selected"] > 0


def test_methods_lists_the_family() -> None:
    assert set(SSD_FAMILY) <= set(dampen.methods())
    assert dampen.methods() == sorted(dampen.methods())


def _nan_importance(imp: dampen.Importance) -> dampen.Importance:
    from dataclasses import replace

    sums = {n: t.clone() for n, t in imp.sums.items()}
    next(iter(sums.values()))[0] = float("nan")
    return replace(imp, sums=sums)


BAD: list[tuple[str, Callable[[Any, Any, Any, Any], dict[str, Any]], type, str]] = [
    ("empty forget set", lambda m, f, t, i: {"forget": [], "importance": i}, ValueError, "empty"),
    (
        "label outside the model",
        lambda m, f, t, i: {
            "forget": loader(torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 7, 2]), 8),
            "importance": i,
        },
        ValueError,
        "label 7",
    ),
    (
        "importance for another model",
        lambda m, f, t, i: {
            "forget": f,
            "importance": dampen.importance(
                make_model(classes=4), loader(torch.randn(8, 1, 6, 6), torch.arange(8) % 4)
            ),
        },
        ValueError,
        "another model",
    ),
    (
        "NaN in the importance",
        lambda m, f, t, i: {"forget": f, "importance": _nan_importance(i)},
        ValueError,
        "NaN",
    ),
    (
        "alpha zero",
        lambda m, f, t, i: {"forget": f, "importance": i, "alpha": 0.0},
        ValueError,
        "alpha",
    ),
    (
        "alpha negative",
        lambda m, f, t, i: {"forget": f, "importance": i, "alpha": -1},
        ValueError,
        "alpha",
    ),
    (
        "alpha nan",
        lambda m, f, t, i: {"forget": f, "importance": i, "alpha": math.nan},
        ValueError,
        "alpha",
    ),
    (
        "alpha text",
        lambda m, f, t, i: {"forget": f, "importance": i, "alpha": "10"},
        TypeError,
        "alpha",
    ),
    (
        "lambda zero",
        lambda m, f, t, i: {"forget": f, "importance": i, "lambda_": 0},
        ValueError,
        "lambda_",
    ),
    (
        "unknown option",
        lambda m, f, t, i: {"forget": f, "importance": i, "beta": 1},
        TypeError,
        "beta",
    ),
    (
        "unknown method",
        lambda m, f, t, i: {"forget": f, "importance": i, "method": "x"},
        ValueError,
        "unknown method",
    ),
    ("no importance", lambda m, f, t, i: {"forget": f}, ValueError, "importance="),
    (
        "both sources",
        lambda m, f, t, i: {"forget": f, "importance": i, "train": t},
        ValueError,
        "not both",
    ),
    (
        "estimator mismatch",
        lambda m, f, t, i: {"forget": f, "importance": i, "method": "lfssd"},
        ValueError,
        "estimator",
    ),
    (
        "batch size mismatch",
        lambda m, f, t, i: {"forget": loader(*make_data(12), 4), "importance": i},
        ValueError,
        "batch size",
    ),
    (
        "not an importance",
        lambda m, f, t, i: {"forget": f, "importance": {"a": 1}},
        TypeError,
        "Importance",
    ),
]


@pytest.mark.parametrize(("case", "build", "error", "match"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_named_and_changes_nothing(
    case: str, build: Callable[..., dict[str, Any]], error: type, match: str
) -> None:
    model, train, forget, imp = _setup("ssd")
    model.train()
    before = state_copy(model)
    kwargs = build(model, forget, train, imp)
    forget_arg = kwargs.pop("forget")
    with pytest.raises(error, match=match):
        dampen.unlearn(model, forget_arg, inplace=True, **kwargs)
    assert same_state(model, before) and model.training


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        dampen.unlearn(object(), [], importance=None)  # type: ignore[arg-type]


def test_forget_importance_is_handed_back_for_the_next_request() -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y, 4), estimator="per_sample")
    forget = loader(x[y == 1], y[y == 1], 4)
    result = dampen.unlearn(model, forget, importance=imp, estimator="per_sample", alpha=1.0)
    assert result.forget_importance is not None
    assert "forget_importance" not in result.stats
    direct = dampen.importance(model, forget, estimator="per_sample")
    for n in direct:
        torch.testing.assert_close(result.forget_importance[n], direct[n])
    remaining = imp.subtract(result.forget_importance)
    keep = y != 1
    want = dampen.importance(model, loader(x[keep], y[keep], 4), estimator="per_sample")
    assert remaining.samples == want.samples and remaining.label_counts == want.label_counts
    for n in want:
        torch.testing.assert_close(remaining[n], want[n], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_dampens_with_one_rounding(dtype: torch.dtype) -> None:
    model, (x, y) = make_model().to(dtype), make_data()
    imp = dampen.importance(model, loader(x, y, 8))
    forget = loader(x[y == 1], y[y == 1], 8)
    result = dampen.unlearn(model, forget, importance=imp, alpha=1.0)
    imp_f = dampen.importance(model, forget)
    assert all(t.dtype == torch.float32 for t in imp_f.sums.values())
    for (name, p), q in zip(model.named_parameters(), result.model.parameters(), strict=True):
        assert q.dtype == dtype
        beta = dampening_factors(imp[name], imp_f[name], alpha=1.0)
        assert torch.equal(q.detach(), (p.detach().float() * beta).to(dtype)), name
    assert result.stats["selected"] > 0
