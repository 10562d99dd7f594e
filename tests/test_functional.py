"""The dampening rule and ASSD's percentile against hand-computed values and NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dampen.functional import (
    adaptive_alpha,
    assd_percentile_level,
    dampen_,
    dampening_factors,
    finite_ratios,
    percentile,
    selection_mask,
)


def test_selection_and_factors_by_hand() -> None:
    imp_d = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0, 3.0])
    imp_f = torch.tensor([5.0, 20.0, 40.0, 1.0, 0.0, 30.0])
    # α = 10: selected where imp_f > 10·imp_d → [F, T, T, T, F, F] (30 > 30 is not selected)
    mask = selection_mask(imp_d, imp_f, 10.0)
    assert mask.tolist() == [False, True, True, True, False, False]
    beta = dampening_factors(imp_d, imp_f, alpha=10.0, lambda_=1.0)
    torch.testing.assert_close(beta, torch.tensor([1.0, 1 / 20, 2 / 40, 0.0, 1.0, 1.0]))


def test_clamp_at_upper_and_exponent() -> None:
    imp_d = torch.tensor([1.0, 1.0])
    imp_f = torch.tensor([4.0, 1.5])
    # α = 1 selects both; λ = 2: ratios λ·d/f = 0.5 and 1.333 → clamped to upper = 1
    beta = dampening_factors(imp_d, imp_f, alpha=1.0, lambda_=2.0)
    torch.testing.assert_close(beta, torch.tensor([0.5, 1.0]))
    beta = dampening_factors(imp_d, imp_f, alpha=1.0, lambda_=2.0, exponent=2.0, upper=1.5)
    torch.testing.assert_close(beta, torch.tensor([0.25, 1.5]))


def test_zero_importance_on_d_gives_zero_not_nan() -> None:
    p = torch.tensor([3.0, -2.0, 1.0])
    imp_d = torch.zeros(3)
    imp_f = torch.tensor([1.0, 0.5, 0.0])
    selected = dampen_(p, imp_d, imp_f, alpha=10.0)
    assert selected == 2
    assert p.tolist() == [0.0, 0.0, 1.0]  # -0.0 == 0.0; the unselected entry is untouched
    assert not torch.isnan(p).any()


def test_dampen_counts_selected_even_when_beta_is_one() -> None:
    p = torch.ones(2)
    selected = dampen_(
        p, torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.5]), alpha=1.0, lambda_=5.0
    )
    assert selected == 1 and p.tolist() == [1.0, 1.0]


def test_dampen_low_precision_rounds_once() -> None:
    p32 = torch.tensor([1.2345678, -3.3333333])
    p16 = p32.to(torch.bfloat16)
    d, f = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 7.0])
    dampen_(p16, d, f, alpha=1.0)
    expected = (p32.to(torch.bfloat16).float() * torch.tensor([1 / 3, 1 / 7])).to(torch.bfloat16)
    assert torch.equal(p16, expected)


def test_dampen_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes"):
        dampen_(torch.ones(3), torch.ones(2), torch.ones(3), alpha=1.0)


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(finite, finite), min_size=1, max_size=40),
    params=st.lists(st.floats(-1e3, 1e3, width=32), min_size=40, max_size=40),
    alpha=st.floats(0.01, 100.0),
    lambda_=st.floats(0.01, 10.0),
    exponent=st.floats(0.1, 3.0),
    upper=st.floats(0.1, 2.0),
)
def test_dampening_properties(
    pairs: list[tuple[float, float]],
    params: list[float],
    alpha: float,
    lambda_: float,
    exponent: float,
    upper: float,
) -> None:
    d = torch.tensor([a for a, _ in pairs])
    f = torch.tensor([b for _, b in pairs])
    beta = dampening_factors(d, f, alpha=alpha, lambda_=lambda_, exponent=exponent, upper=upper)
    assert torch.isfinite(beta).all()
    mask = f > alpha * d
    assert (beta[~mask] == 1.0).all()
    assert (beta[mask] >= 0).all() and (beta[mask] <= upper).all()
    # Against the formula written element by element.
    for i in range(len(pairs)):
        if mask[i]:
            ratio = float(d[i] * lambda_ / f[i])  # the ratio itself is formed in fp32
            want = min(ratio**exponent, upper)
            assert float(beta[i]) == pytest.approx(want, rel=1e-4, abs=1e-6)
    p = torch.tensor(params[: len(pairs)])
    q = p.clone()
    assert dampen_(q, d, f, alpha=alpha, lambda_=lambda_, exponent=exponent, upper=upper) == int(
        mask.sum()
    )
    torch.testing.assert_close(q, p * beta)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=200),
    q=st.floats(0.0, 100.0),
)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    t = torch.tensor(values)
    want = float(np.percentile(t.numpy().astype(np.float64), q))
    assert percentile(t, q) == pytest.approx(want, rel=1e-5, abs=1e-3)


def test_percentile_beyond_quantile_limit() -> None:
    # torch.quantile refuses more than 16 M elements; ours must not.
    t = torch.arange(17_000_001, dtype=torch.float32)
    assert percentile(t, 50.0) == pytest.approx(8_500_000.0)


def test_percentile_level() -> None:
    assert assd_percentile_level(1, 100) == pytest.approx(100 - math.log(2))
    assert round(assd_percentile_level(100, 10_000), 2) == 99.31
    with pytest.raises(ValueError):
        assd_percentile_level(0, 10)


def test_finite_ratios_and_adaptive_alpha() -> None:
    d = {"a": torch.tensor([1.0, 0.0, 0.0, 2.0]), "b": torch.tensor([[4.0]])}
    f = {"a": torch.tensor([3.0, 1.0, 0.0, 1.0]), "b": torch.tensor([[2.0]])}
    r = finite_ratios(d.values(), f.values())
    assert sorted(r.tolist()) == [0.5, 0.5, 3.0]  # 1/0 = inf and 0/0 = nan dropped
    alpha = adaptive_alpha(d, f, forget_samples=1, total_samples=100)
    assert alpha == pytest.approx(float(np.percentile([0.5, 0.5, 3.0], 100 - math.log(2))))
