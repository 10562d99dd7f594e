"""The ``shuffled_sq`` estimator: batch_sq's mean over every way of drawing a batch, order-free."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

import dampen
from conftest import loader, make_data, make_model, same_state, state_copy
from dampen.importances.store import Importance


def _over_every_batch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, size: int
) -> dict[str, torch.Tensor]:
    """Oracle: the mean of ``(d mean-loss of the batch / dθ)²`` over every batch of ``size``
    distinct samples (what batch_sq averages to when the loader shuffles)."""
    model.eval()
    params = dict(model.named_parameters())
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    subsets = list(itertools.combinations(range(len(x)), size))
    for subset in subsets:
        rows = torch.tensor(subset)
        loss = F.cross_entropy(model(x[rows]), y[rows])
        grads = torch.autograd.grad(loss, list(params.values()))
        for n, g in zip(out, grads, strict=True):
            out[n] += g**2 / len(subsets)
    return out


@pytest.mark.parametrize("impl", ["layers", "vmap"])
def test_equals_batch_sq_over_every_batch_of_its_size(impl: str) -> None:
    model = make_model()
    x, y = make_data(7)
    want = _over_every_batch(model, x, y, 3)
    imp = dampen.importance(model, loader(x, y, 3), estimator="shuffled_sq", per_sample_impl=impl)
    assert (imp.batch_size, imp.samples, imp.units) == (3, 7, 7)
    for n, v in want.items():
        torch.testing.assert_close(imp[n], v, rtol=1e-4, atol=1e-9, msg=n)


def test_no_order_or_partition_of_the_batches_changes_it() -> None:
    model = make_model()
    x, y = make_data(24)
    fixed = dampen.importance(model, loader(x, y, 8), estimator="shuffled_sq")
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    shuffled = dampen.importance(model, loader(x[order], y[order], 8), estimator="shuffled_sq")
    uneven = [(x[:5], y[:5]), (x[5:], y[5:])]  # other batches, B given as the loader's
    regrouped = dampen.importance(model, uneven, estimator="shuffled_sq")
    regrouped = replace(regrouped, batch_size=8)
    for n in fixed:
        torch.testing.assert_close(shuffled[n], fixed[n], rtol=1e-5, atol=1e-10)
        torch.testing.assert_close(regrouped[n], fixed[n], rtol=1e-5, atol=1e-10)
    batch_sq = [dampen.importance(model, loader(x, y, 8), estimator="batch_sq")]
    batch_sq.append(dampen.importance(model, loader(x[order], y[order], 8), estimator="batch_sq"))
    assert any(not torch.allclose(batch_sq[0][n], batch_sq[1][n]) for n in fixed)


def test_one_batch_of_everything_is_batch_sq_of_that_batch() -> None:
    model = make_model()
    x, y = make_data(6)
    imp = dampen.importance(model, loader(x, y, 6), estimator="shuffled_sq")
    whole = dampen.importance(model, loader(x, y, 6), estimator="batch_sq")
    for n in whole:
        torch.testing.assert_close(imp[n], whole[n], rtol=1e-4, atol=1e-10)


def test_merge_and_subtract_are_exact_and_files_keep_the_sums(tmp_path) -> None:
    model = make_model()
    x, y = make_data(24)
    whole = dampen.importance(model, loader(x, y, 8), estimator="shuffled_sq")
    part = dampen.importance(model, loader(x[:5], y[:5], 8), estimator="shuffled_sq")
    rest = dampen.importance(model, loader(x[5:], y[5:], 8), estimator="shuffled_sq")
    for combined in (whole.subtract(part), part.merge(rest)):
        want = rest if combined.samples == 19 else whole
        for n in whole:
            torch.testing.assert_close(combined[n], want[n], rtol=1e-4, atol=1e-10)
    whole.save(tmp_path / "imp.safetensors")
    back = Importance.load(tmp_path / "imp.safetensors", model=model)
    assert back.estimator == "shuffled_sq" and back.firsts is not None
    for n in whole:
        assert torch.equal(back[n], whole[n])


def test_gradient_sums_belong_to_shuffled_sq_alone(tmp_path) -> None:
    model = make_model()
    x, y = make_data(12)
    imp = dampen.importance(model, loader(x, y, 4), estimator="shuffled_sq")
    with pytest.raises(ValueError, match="lacks them"):
        replace(imp, firsts=None)
    per_sample = dampen.importance(model, loader(x, y, 4), estimator="per_sample")
    with pytest.raises(ValueError, match="no use for them"):
        replace(per_sample, firsts=imp.firsts)
    with pytest.raises(ValueError, match="batch size"):
        replace(imp, batch_size=None)
    assert imp.firsts is not None
    broken = replace(imp, firsts={**imp.firsts, "head.bias": torch.full((3,), float("nan"))})
    with pytest.raises(ValueError, match="head.bias holds NaN"):
        broken.validate()
    other = dampen.importance(model, loader(x, y, 6), estimator="shuffled_sq")
    with pytest.raises(ValueError, match="batch size"):
        imp.merge(other)


def _fitted() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny model fitted to 48 samples, so that there is something to forget."""
    model = make_model().eval()
    x, y = make_data(48)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def test_ssd_takes_b_from_the_stored_importance_and_replays() -> None:
    model, x, y = _fitted()
    imp = dampen.importance(model, loader(x, y, 8), estimator="shuffled_sq")
    forget = (y == 1).nonzero().flatten()
    before = state_copy(model)
    results = [
        dampen.unlearn(
            model,
            loader(x[forget], y[forget], size),
            importance=imp,
            estimator="shuffled_sq",
            alpha=2.0,
        )
        for size in (3, 16)  # the forget loader's batch size does not matter
    ]
    assert same_state(model, before)
    assert results[0].stats["selected"] > 0
    for n, p in results[0].model.named_parameters():
        torch.testing.assert_close(p, dict(results[1].model.named_parameters())[n])
    auto = dampen.unlearn(
        model,
        loader(x[forget], y[forget], 5),
        importance=imp,
        estimator="shuffled_sq",
        max_importance_removed=0.5,  # the tiny model forgets nothing within the default
    )
    assert auto.stats["auto"]["rounds"]
    assert not same_state(auto.model, before)  # it dampened something
    stats = json.loads(json.dumps(auto.stats))
    again = dampen.replay(model, loader(x[forget], y[forget], 5), importance=imp, stats=stats)
    assert same_state(again, state_copy(auto.model))


def test_a_corrective_request_measures_the_forget_set_with_ds_batch_size(monkeypatch) -> None:
    import importlib

    ssd = importlib.import_module("dampen.methods.ssd")
    recorded: list[tuple[str, int | None]] = []
    measure = ssd.measure

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        imp = measure(*args, **kwargs)
        recorded.append((kwargs.get("objective"), imp.batch_size))
        return imp

    monkeypatch.setattr(ssd, "measure", spy)
    model = make_model()
    x, y = make_data(48)
    imp = dampen.importance(model, loader(x, y, 8), estimator="shuffled_sq")
    result = dampen.unlearn(
        model,
        loader(x[:12], y[:12], 4),
        importance=imp,
        forget_kind="poison",
        estimator="shuffled_sq",
    )
    assert 0 < result.stats["auto"]["winning"] < result.stats["auto"]["identified"]
    assert ("log_odds", 8) in recorded
    assert all(size == 8 for _, size in recorded)


def test_the_plain_calls_are_order_free() -> None:
    """``dampen.importance`` and ``dampen.unlearn`` without an estimator: shuffled_sq, so
    another loader order gives the same selection and (to rounding) the same weights."""
    model, x, y = _fitted()
    forget = (y == 1).nonzero().flatten()
    outcomes = []
    for seed in (0, 1):
        order = torch.randperm(48, generator=torch.Generator().manual_seed(seed))
        imp = dampen.importance(model, loader(x[order], y[order], 8))
        assert imp.estimator == "shuffled_sq"
        f = forget[torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed))]
        result = dampen.unlearn(model, loader(x[f], y[f], 4), importance=imp, alpha=2.0)
        assert result.stats["estimator"] == "shuffled_sq"
        outcomes.append(result)
    assert outcomes[0].stats["selected"] == outcomes[1].stats["selected"] > 0
    after = [dict(r.model.named_parameters()) for r in outcomes]
    for n, p in after[0].items():
        torch.testing.assert_close(p, after[1][n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("estimator", ["batch_sq", "per_sample", "shuffled_sq"])
@pytest.mark.parametrize("method", ["ssd", "assd"])
def test_without_an_estimator_the_stored_importance_decides(method: str, estimator: str) -> None:
    model, x, y = _fitted()
    imp = dampen.importance(model, loader(x, y, 8), estimator=estimator)
    forget = loader(x[y == 1], y[y == 1], 8)
    alpha = {"alpha": 2.0} if method == "ssd" else {}
    plain = dampen.unlearn(model, forget, method=method, importance=imp, **alpha)
    named = dampen.unlearn(
        model, forget, method=method, importance=imp, estimator=estimator, **alpha
    )
    assert plain.stats["estimator"] == estimator
    assert same_state(plain.model, state_copy(named.model))


def test_an_estimator_chosen_must_match_the_stored_one() -> None:
    model, x, y = _fitted()
    forget = loader(x[y == 1], y[y == 1], 8)
    imp = dampen.importance(model, loader(x, y, 8), estimator="batch_sq")
    with pytest.raises(ValueError, match="computed with estimator 'batch_sq'.*needs 'shuffled_sq'"):
        dampen.unlearn(model, forget, importance=imp, estimator="shuffled_sq", alpha=2.0)
    lf = dampen.importance(model, loader(x, y, 8), estimator="lf")
    with pytest.raises(ValueError, match="'lf' importance serves method='lfssd' or 'alf'"):
        dampen.unlearn(model, forget, importance=lf, alpha=2.0)


def test_computed_now_without_an_estimator_is_shuffled_sq() -> None:
    model, x, y = _fitted()
    forget = loader(x[y == 1], y[y == 1], 8)
    result = dampen.unlearn(model, forget, train=loader(x, y, 8), alpha=2.0)
    stored = dampen.unlearn(
        model, forget, importance=dampen.importance(model, loader(x, y, 8)), alpha=2.0
    )
    assert result.stats["estimator"] == "shuffled_sq"
    assert same_state(result.model, state_copy(stored.model))


@pytest.mark.parametrize(
    ("summed_in", "impl"),
    [
        ("accumulators", "layers"),
        ("accumulators", "layers, grouped"),
        ("accumulators", "vmap"),
        ("fp32", "layers"),
    ],
)
def test_no_loader_order_changes_a_bit_of_it(summed_in: str, impl: str, monkeypatch) -> None:
    """The sums of a pass are fp64 on the CPU, so another loader order leaves every entry of
    the stored fp32 importance of the digits CNN (sums and gradient sums) the same, bit for
    bit. Summed in fp32 (the check that this test can tell) most entries differ. "grouped":
    the convolutions form their per-sample gradients as one grouped convolution's weight
    gradient (the path of layers with many output positions), whose calls hold other samples
    in another order."""
    from dampen.data.base import loader as data_loader
    from dampen.data.digits import load_digits
    from dampen.importances import estimators, per_sample_layers
    from dampen.models import build_model

    if summed_in == "fp32":
        monkeypatch.setattr(estimators, "accumulator_dtype", estimators.stored_dtype)
    if impl == "layers, grouped":
        monkeypatch.setattr(per_sample_layers, "_MANY_POSITIONS", 0)
        # three samples per call on one layer: a batch of 64 leaves a single one at its end
        monkeypatch.setattr(per_sample_layers, "_CHUNK", 864)
        impl = "layers"
    data = load_digits()
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, image_size=8).eval()
    imps = [
        dampen.importance(
            model,
            data_loader(data.train, batch_size=64, shuffle=seed > 0, seed=seed),
            per_sample_impl=impl,
        )
        for seed in (0, 1)
    ]
    sums = [
        {**imp.sums, **{f"first {n}": t for n, t in (imp.firsts or {}).items()}} for imp in imps
    ]
    assert len(sums[0]) == 2 * len(imps[0].sums)
    assert all(t.dtype == torch.float32 for t in sums[0].values())
    differ = sum(int((t != sums[1][n]).sum()) for n, t in sums[0].items())
    if summed_in == "fp32":
        assert differ > imps[0].numel() // 2
    else:
        assert differ == 0
