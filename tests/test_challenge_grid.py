"""The challenge's ε follows the organisers' public scorer: its threshold grid, its interval
widths, its conventions for discarded and perfect rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dampen.eval.challenge import DELTA, example_epsilon


def _organisers_epsilon(u: np.ndarray, r: np.ndarray, delta: float = DELTA) -> float:
    """The organisers' rules written out plainly, with comparisons broadcast over rules."""
    if min(np.ptp(u), np.ptp(r)) / max(np.ptp(u), np.ptp(r)) < 0.01:
        return 50.0
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    rates = []
    # Single threshold: 100 per unit over all confidences; positive when c >= t.
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    for t in np.linspace(lo, hi, math.ceil((hi - lo) * 100)):
        rates.append((np.mean(neg >= t), np.mean(pos < t)))
    # Double threshold: the peakier set is "positive" inside [l, r].
    a, b = (neg, pos) if np.ptp(pos) >= np.ptp(neg) else (pos, neg)
    w = min(np.ptp(a), np.ptp(b))
    right_lo, right_hi = a.min() + w - 2.0, a.max() + 2.0
    for right in np.linspace(right_lo, right_hi, math.ceil((right_hi - right_lo) * 100)):
        lefts = np.linspace(right - w - 2.0, right - w + 2.0, 400)
        tpr = ((lefts[:, None] <= a) & (a <= right)).mean(axis=1)
        fpr = ((lefts[:, None] <= b) & (b <= right)).mean(axis=1)
        rates.extend(zip(fpr, 1.0 - tpr, strict=True))
    best = -math.inf
    for fpr, fnr in rates:
        if fpr == 0 and fnr == 0:
            best = math.inf
        elif fpr > 0 and fnr > 0:
            # A log of a non-positive number is NaN in the organisers' code and drops out.
            terms = [(1 - delta - fpr) / fnr, (1 - delta - fnr) / fpr]
            eps = max((math.log(x) for x in terms if x > 0), default=-math.inf)
            best = max(best, max(eps, 0.0))
    return 0.0 if best == -math.inf else min(best, 50.0)


# Seeds 14, 64, 102 and 135 are cases where enumerating every threshold finds a larger ε than
# the grid (4 of the first 200 seeds at 8 models): they would catch a scorer that is not the grid.
@pytest.mark.parametrize("seed", [0, 1, 2, 14, 64, 102, 135])
def test_epsilon_equals_the_organisers_rules(seed: int) -> None:
    rng = np.random.default_rng(seed)
    u = rng.normal(rng.normal(0.0, 1.0), rng.uniform(0.3, 2.0), 8)
    r = rng.normal(0.0, 1.0, 8)
    assert example_epsilon(u, r) == pytest.approx(_organisers_epsilon(u, r), abs=1e-12)
    if seed > 2:
        assert example_epsilon(u, r, grid=False) > example_epsilon(u, r) + 1e-6


def test_epsilon_by_hand() -> None:
    """Retrained [0, 1, 2, 3] is positive (larger median). A threshold in (0.2, 0.3] calls 3 of
    4 retrained and 1 of 4 unlearned positive: FPR = FNR = 1/4, ε = ln((1 − δ − ¼)/¼) =
    ln(3 − 4δ); the interval [0, 0.25] around the peakier unlearned set gives the same, and
    no rule with both rates positive does better."""
    u, r = np.array([0.0, 0.1, 0.2, 0.3]), np.array([0.0, 1.0, 2.0, 3.0])
    assert example_epsilon(u, r) == pytest.approx(math.log(3 - 4 * DELTA), abs=1e-12)


def test_a_perfect_separation_is_infinite_and_capped() -> None:
    """Unlearned [0, .5, 1, 1.5] vs retrained [5, 5.5, 6, 6.5]: a threshold between them has
    FPR = FNR = 0, ε = ∞, reported as the cap 50."""
    u = np.array([0.0, 0.5, 1.0, 1.5])
    assert example_epsilon(u, u + 5.0) == 50.0


def test_the_grid_finds_less_than_enumerating_every_threshold() -> None:
    """Confidences closer together than the grid's 1/100 step: no grid threshold falls between
    them, so every grid rule has a zero rate and is discarded (ε = 0). The dense family has
    t = 0.0015, which calls 3 of 4 retrained and 2 of 4 unlearned positive: FNR = ¼, FPR = ½,
    ε = ln((1 − δ − ½)/¼) = ln(2 − 4δ)."""
    u = np.array([0.0, 0.001, 0.002, 0.003])
    r = u + 0.0005
    assert example_epsilon(u, r) == 0.0
    assert example_epsilon(u, r, grid=False) == pytest.approx(math.log(2 - 4 * DELTA))
