"""``potion``: Potion's importance, percentile cutoff, dampening and PTN search against plain
loops, its guards, and a real corrective request on digits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import dampen
from conftest import loader, make_data, make_model, same_state, state_copy
from dampen.data import load_dataset
from dampen.data import loader as data_loader
from dampen.data.corrupted import poison
from dampen.methods.auto_alpha import accuracy
from dampen.methods.potion import (
    START_DIVISOR,
    PotionConfig,
    cutoff_of,
    dampen_from_,
    norm_importance,
    percentile_of,
    ptn_search_,
)
from dampen.recipe import recipe_for, train_model


def test_norm_importance_matches_the_linear_models_gradient() -> None:
    """For f(x) = Wx + b, ∂ mean_s ‖f(x_s)‖ / ∂W = mean_s f_s x_sᵀ / ‖f_s‖: summed in absolute
    value per batch and divided by the number of batches."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.randn(10, 5)
    y = torch.zeros(10, dtype=torch.long)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    imp, samples = norm_importance(model, batches)
    expected_w = torch.zeros(3, 5)
    expected_b = torch.zeros(3)
    with torch.no_grad():
        for xb, _ in batches:
            f = model(xb)
            unit = f / f.norm(dim=1, keepdim=True)
            expected_w += (unit.T @ xb / len(xb)).abs()
            expected_b += unit.mean(dim=0).abs()
    assert samples == 10
    torch.testing.assert_close(imp["weight"], expected_w / 2)
    torch.testing.assert_close(imp["bias"], expected_b / 2)


def test_norm_importance_leaves_the_model_as_it_was(model: nn.Module) -> None:
    x, y = make_data()
    model.train()
    state = state_copy(model)
    norm_importance(model, loader(x, y))
    assert model.training and same_state(model, state)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="empty"):
        norm_importance(model, [])


def test_cutoff_matches_numpy_over_a_loop_of_finite_ratios() -> None:
    g = torch.Generator().manual_seed(1)
    imp_d = {"a": torch.rand(6, 4, generator=g), "b": torch.rand(5, generator=g)}
    imp_f = {"a": torch.rand(6, 4, generator=g), "b": torch.rand(5, generator=g)}
    imp_d["a"][0, 0] = 0.0  # 0/0: undefined, left out
    imp_f["a"][0, 0] = 0.0
    imp_d["b"][1] = 0.0  # x/0: infinite, left out
    ratios = []
    for name in imp_d:
        for d, f in zip(
            imp_d[name].reshape(-1).tolist(), imp_f[name].reshape(-1).tolist(), strict=True
        ):
            if d != 0.0:
                ratios.append(f / d)
    assert len(ratios) == 24 + 5 - 2
    for q in (0.0, 50.0, 97.3, 100.0):
        assert cutoff_of(imp_d, imp_f, q) == pytest.approx(np.percentile(ratios, q), rel=1e-12)
    with pytest.raises(ValueError, match="finite"):
        cutoff_of({"a": torch.zeros(2)}, {"a": torch.ones(2)}, 50.0)


def test_percentile_of_the_share() -> None:
    assert percentile_of(0.0) == 100.0
    assert percentile_of(0.01) == pytest.approx(100.0 - math.log(2.0))
    assert percentile_of(1e50) == 0.0


def test_dampen_from_keeps_float64_weights_and_counts_the_selection() -> None:
    model = nn.Linear(3, 2).double()
    origin = {n: p.detach().clone() for n, p in model.named_parameters()}
    imp_d = {n: torch.ones(p.shape) for n, p in origin.items()}
    imp_f = {n: torch.full(p.shape, 0.8) for n, p in origin.items()}
    imp_f["bias"][0] = 2.0
    # cutoff 0.5 selects every entry (0.8 > 0.5), but only bias[0] is dampened (β = 0.5 < 1)
    assert dampen_from_(model, origin, imp_d, imp_f, 0.5) == 8
    assert torch.equal(model.weight, origin["weight"])  # β = 1: bit for bit in float64
    assert float(model.bias[0]) == float(origin["bias"][0]) * 0.5
    assert float(model.bias[1]) == float(origin["bias"][1])


def test_dampen_from_matches_a_loop() -> None:
    model = make_model()
    origin = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    imp_d = {n: torch.rand(p.shape, generator=g) for n, p in origin.items()}
    imp_f = {n: torch.rand(p.shape, generator=g) * 2 for n, p in origin.items()}
    first = next(iter(imp_d))
    imp_d[first].view(-1)[0] = 0.0  # selected with β = 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the result must not depend on the current weights
    cutoff = 1.3
    selected = dampen_from_(model, origin, imp_d, imp_f, cutoff)
    count = 0
    for name, p in model.named_parameters():
        for i, (theta, d, f) in enumerate(
            zip(
                origin[name].reshape(-1),
                imp_d[name].reshape(-1),
                imp_f[name].reshape(-1),
                strict=True,
            )
        ):
            if float(f) > cutoff * float(d):
                count += 1
                expected = float(theta) * min(1.0, float(d) / float(f))
            else:
                expected = float(theta)
            assert float(p.detach().reshape(-1)[i]) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert selected == count > 0


def _toy(seed: int = 0) -> tuple[nn.Module, Any, Any]:
    """A tiny conv net that memorised 6 relabelled samples (the forget set) beside 42 clean
    ones (the retain batches)."""
    torch.manual_seed(seed)
    model = make_model(seed)
    x, y = make_data(48, seed=seed)
    y = y.clone()
    y[:6] = (y[:6] + 1) % 3
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.eval()  # no dropout: let it memorise
    for _ in range(400):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, loader(x[:6], y[:6]), loader(x[6:], y[6:])


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_ptn_search_stops_at_the_first_share_that_reaches_rho(rho: float) -> None:
    model, forget, retain = _toy()
    origin = {n: p.detach().clone() for n, p in model.named_parameters()}
    imp_d, n_r = norm_importance(model, retain)
    imp_f, n_f = norm_importance(model, forget)
    start = n_f / (n_f + n_r) / START_DIVISOR
    before = accuracy(model, forget, None)
    assert before > 0.5
    stats = ptn_search_(model, forget, imp_d, imp_f, start=start, config=PotionConfig(rho))
    assert stats["reached"] and stats["forget_acc"] <= rho * before
    assert stats["forget_acc"] == accuracy(model, forget, None)
    # Oracle: replay the tries one by one from the original weights.
    oracle = make_model()
    share = start
    for t in range(1, stats["tries"] + 1):
        oracle.load_state_dict(model.state_dict())
        with torch.no_grad():
            for n, p in oracle.named_parameters():
                p.copy_(origin[n])
        cutoff = cutoff_of(imp_d, imp_f, percentile_of(share))
        dampen_from_(oracle, origin, imp_d, imp_f, cutoff)
        acc = accuracy(oracle, forget, None)
        if t < stats["tries"]:
            assert acc > rho * before  # an earlier try did not reach the goal
            share *= 1.1
    assert stats["share"] == pytest.approx(share)
    assert stats["alpha"] == cutoff
    for (n, p), (_, q) in zip(model.named_parameters(), oracle.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_ptn_search_keeps_the_last_try_when_it_runs_out_of_tries() -> None:
    model, forget, retain = _toy()
    imp_d, _ = norm_importance(model, retain)
    imp_f, _ = norm_importance(model, forget)
    stats = ptn_search_(
        model, forget, imp_d, imp_f, start=1e-3, config=PotionConfig(rho=0.0, max_tries=20)
    )
    assert not stats["reached"] and stats["tries"] == 20
    assert stats["share"] == pytest.approx(1e-3 * 1.1**19)
    assert stats["forget_acc"] == accuracy(model, forget, None) > 0.0


def test_ptn_search_gives_up_when_everything_is_selected() -> None:
    model, forget, retain = _toy()
    imp_d, _ = norm_importance(model, retain)
    imp_f, _ = norm_importance(model, forget)
    stats = ptn_search_(
        model, forget, imp_d, imp_f, start=1e50, config=PotionConfig(rho=0.0, max_tries=5)
    )
    assert stats["tries"] == 1 and stats["percentile"] == 0.0
    assert stats["share"] == 1e50  # not grown: the 0th percentile was tried and the search ended


def test_ptn_search_restores_the_weights_after_a_failure() -> None:
    model, forget, retain = _toy()
    imp_d, _ = norm_importance(model, retain)
    imp_f, _ = norm_importance(model, forget)
    state = state_copy(model)
    calls = {"n": 0}

    def flaky(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        calls["n"] += 1
        if calls["n"] > 3:  # after the first try has changed the weights
            raise RuntimeError("disk gone")
        return m(batch[0]), batch[1]

    with pytest.raises(RuntimeError, match="disk gone"):
        ptn_search_(
            model, forget, imp_d, imp_f, start=1e-4, config=PotionConfig(0.0), forward=flaky
        )
    assert same_state(model, state)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"rho": -0.1}, ValueError, "rho"),
        ({"rho": 1.5}, ValueError, "rho"),
        ({"rho": True}, TypeError, "rho"),
        ({"step": 1.0}, ValueError, "step"),
        ({"max_tries": 0}, ValueError, "max_tries"),
    ],
)
def test_config_errors(options: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PotionConfig(**options)


def test_unlearn_needs_the_retain_set_and_changes_nothing_without_it() -> None:
    model, forget, _ = _toy()
    state = state_copy(model)
    with pytest.raises(ValueError, match="retain"):
        dampen.unlearn(model, forget, method="potion", inplace=True)
    assert same_state(model, state)


def test_potion_removes_a_digits_backdoor_from_the_identified_samples() -> None:
    """A real request: the small CNN with a 5 % corner backdoor, 30 % of it identified."""
    s = poison(load_dataset("digits"), 0.05, identified=0.3, seed=0)
    model = train_model(recipe_for("digits", epochs=4, crop_padding=0), s.data, seed=0).eval()
    forget = data_loader(s.data.train, s.forget, batch_size=64)
    retain = data_loader(s.data.train, s.retain, batch_size=64, shuffle=True, seed=0)
    attack = data_loader(s.attack, batch_size=256)
    before = accuracy(model, forget, None)
    result = dampen.unlearn(model, forget, method="potion", retain=retain, rho=0.1)
    stats = result.stats
    assert stats["reached"] and stats["forget_acc"] <= 0.1 * before
    assert stats["forget_acc_before"] == before
    assert 0 < stats["selected_fraction"] < 0.2
    asr = [
        float((m(x).argmax(1) == s.target).float().mean())
        for m in (model, result.model)
        for x, _ in attack
    ]
    assert asr[1] < asr[0]  # the trigger wins less often on unseen patched images
