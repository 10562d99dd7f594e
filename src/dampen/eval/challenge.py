"""The NeurIPS 2023 machine-unlearning challenge's score, as pure functions.

Followed: the organisers' description "Evaluation for the NeurIPS Machine Unlearning
Competition" (August 2023, https://unlearning-challenge.github.io/assets/data/
Machine_Unlearning_Metric.pdf) and the conventions of their public scorer
(github.com/google-deepmind/unlearning_evaluation, ``metric.py``). This is an independent
implementation; where it differs it says so.

Per forget example, ``N`` unlearned and ``N`` retrained models give two sets of logit-scaled
confidences. The set with the larger median is "positive". Threshold attacks tell them apart:

* single threshold: "positive" when ``c ≥ t``;
* double threshold: "the peakier set" (smaller range) when ``l ≤ c ≤ r``.

Each rule's false-positive and false-negative rates give
``ε = max(log((1 − δ − FPR) / FNR), log((1 − δ − FNR) / FPR))`` (clipped at 0); rules with
exactly one of FPR, FNR zero are discarded (too few samples to trust), a rule with both zero is a
perfect separation (ε = ∞). The example's ε is the largest over the rules, clipped to
``[0, cap]``. If the smaller range is under 1 % of the larger one (a collapsed, peaky set) ε is the
cap outright, as in the organisers' scorer.

The thresholds are the organisers' grid (:func:`single_thresholds`, :func:`double_thresholds`):
100 per unit between the smallest and largest confidence for the single rule; for the interval
rule, right ends 100 per unit from ``min + w − 2`` to ``max + 2`` of the peakier set and, for
each, 400 left ends from ``r − w − 2`` to ``r − w + 2``, ``w`` the smaller of the two ranges.
A denser rule family (``grid=False``: every achievable threshold and interval, enumerated from
the observed values) finds a larger ε in 16 % of 500 random cases of 16 models each, by up to
0.98; it is kept only to show that difference. Rates are counted exactly (no float32 rounding),
and an example whose every rule is discarded gets ε = 0 (the organisers' code stops with an
assertion), except two distinct point masses, which get the cap however close they are.

Points: ε falls in a bucket of width 1/2; bucket ``k`` (``ε ∈ [k/2, (k+1)/2)``) earns
``2^-k`` points, for buckets up to ``ceil(ln(N − 1))``; beyond that an example earns nothing.
The forget score is the mean of the points; the final score multiplies it by the retain- and
test-accuracy ratios of unlearned over retrained models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from dampen.eval.functional import ArrayLike, to_cpu_tensor

DELTA = 1e-5
"""The challenge's δ."""
EPSILON_CAP = 50.0
"""The challenge's cap on ε."""
PEAKY_RATIO = 0.01
"""A set whose range is below this share of the other's gets ε = cap."""
BUCKET_WIDTH = 0.5
"""Width of an ε bucket."""


def _confs(x: ArrayLike, name: str) -> np.ndarray:
    arr = to_cpu_tensor(x, name).numpy()
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [models, examples], got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 models and 1 example, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    arr = to_cpu_tensor(x, name).numpy().reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def epsilon_from_rates(fpr: ArrayLike, fnr: ArrayLike, *, delta: float = DELTA) -> np.ndarray:
    """ε of each rule from its error rates, with the challenge's conventions.

    Returns ``inf`` where both rates are zero, ``nan`` (discarded) where exactly one is, and
    ``max(log((1−δ−FPR)/FNR), log((1−δ−FNR)/FPR))`` clipped at 0 elsewhere.

    Raises:
        ValueError: if the rates are outside ``[0, 1]`` or differ in shape, or ``delta`` is
            outside ``[0, 1)``.
    """
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    a = to_cpu_tensor(fpr, "fpr").numpy().astype(np.float64)
    b = to_cpu_tensor(fnr, "fnr").numpy().astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"fpr and fnr must have the same shape, got {a.shape} and {b.shape}")
    if ((a < 0) | (a > 1) | (b < 0) | (b > 1)).any():
        raise ValueError("fpr and fnr must lie in [0, 1]")
    out = np.full(a.shape, np.nan)
    both = (a == 0) & (b == 0)
    ok = (a > 0) & (b > 0)
    out[both] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.where(ok, 1 - delta - a, 1.0)) - np.log(np.where(ok, b, 1.0))
        second = np.log(np.where(ok, 1 - delta - b, 1.0)) - np.log(np.where(ok, a, 1.0))
    best = np.fmax(np.nan_to_num(first, nan=-np.inf), np.nan_to_num(second, nan=-np.inf))
    out[ok] = np.maximum(best[ok], 0.0)
    return out


PER_UNIT = 100
"""Thresholds per unit of confidence in the organisers' grid."""
BUFFER = 2.0
"""How far (in confidence units) the interval grid reaches beyond the data."""


def _grid(lo: float, hi: float) -> np.ndarray:
    """``PER_UNIT`` points per unit from ``lo`` to ``hi`` (ends included)."""
    return np.linspace(lo, hi, num=math.ceil((hi - lo) * PER_UNIT))


def single_thresholds(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """The organisers' thresholds for the rule "positive when c ≥ t"."""
    both = np.concatenate([pos, neg])
    return _grid(float(both.min()), float(both.max()))


def double_thresholds(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The organisers' intervals ``[l, r]`` for the rule "the peakier set when l ≤ c ≤ r".

    ``pos`` must be the peakier set (smaller range). Returns the left and right ends.
    """
    width = min(float(np.ptp(pos)), float(np.ptp(neg)))
    rights = _grid(float(pos.min()) + width - BUFFER, float(pos.max()) + BUFFER)
    steps = math.ceil(2 * BUFFER * PER_UNIT)
    lefts = np.concatenate(
        [np.linspace(r - width - BUFFER, r - width + BUFFER, num=steps) for r in rights]
    )
    return lefts, np.repeat(rights, steps)


def _at_least(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """How many of ``values`` (sorted) are ``>= t``, for every ``t``."""
    return values.size - np.searchsorted(values, t, side="left")


def _within(values: np.ndarray, lefts: np.ndarray, rights: np.ndarray) -> np.ndarray:
    """How many of ``values`` (sorted) lie in ``[l, r]``, for every interval."""
    inside = np.searchsorted(values, rights, side="right") - np.searchsorted(
        values, lefts, side="left"
    )
    return np.maximum(inside, 0)


def _single_rates(
    pos: np.ndarray, neg: np.ndarray, grid: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and FNR of "positive when c ≥ t" on the grid (or every observed t)."""
    t = single_thresholds(pos, neg) if grid else np.unique(np.concatenate([pos, neg]))
    ps, ns = np.sort(pos), np.sort(neg)
    return _at_least(ns, t) / ns.size, 1.0 - _at_least(ps, t) / ps.size


def _double_rates(
    pos: np.ndarray, neg: np.ndarray, grid: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and FNR of "the peakier set when l ≤ c ≤ r" on the grid (or every interval)."""
    if np.ptp(pos) >= np.ptp(neg):  # the peakier set plays "positive" for this rule
        pos, neg = neg, pos
    ps, ns = np.sort(pos), np.sort(neg)
    if grid:
        lefts, rights = double_thresholds(pos, neg)
    else:  # every interval [v_i, v_j], i <= j, of the observed values
        v = np.unique(np.concatenate([pos, neg]))
        i, j = np.triu_indices(v.size)
        lefts, rights = v[i], v[j]
    return _within(ns, lefts, rights) / ns.size, 1.0 - _within(ps, lefts, rights) / ps.size


def example_epsilon(
    unlearned: ArrayLike,
    retrained: ArrayLike,
    *,
    delta: float = DELTA,
    cap: float = EPSILON_CAP,
    double: bool = True,
    grid: bool = True,
) -> float:
    """ε of one forget example from its confidences under unlearned and retrained models.

    Args:
        unlearned: logit-scaled confidences ``[N]`` under the unlearned models.
        retrained: the same ``[M]`` under the retrained models.
        delta: δ of (ε, δ)-unlearning.
        cap: the largest ε reported.
        double: also try double-threshold (interval) rules.
        grid: the organisers' threshold grid (default); False enumerates every achievable
            threshold and interval (a denser family, for comparison only).

    Returns:
        ε in ``[0, cap]``; 0 also when no rule has both error rates positive.

    Raises:
        ValueError: for empty or non-finite inputs or a bad ``delta``/``cap``.
    """
    if not cap > 0:
        raise ValueError(f"cap must be positive, got {cap}")
    u, r = _vector(unlearned, "unlearned"), _vector(retrained, "retrained")
    ru, rr = float(np.ptp(u)), float(np.ptp(r))
    largest, smallest = max(ru, rr), min(ru, rr)
    if largest == 0.0:  # two point masses
        return 0.0 if float(u[0]) == float(r[0]) else float(cap)
    if smallest / largest < PEAKY_RATIO:
        return float(cap)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    fprs, fnrs = _single_rates(pos, neg, grid)
    if double:
        fd, nd = _double_rates(pos, neg, grid)
        fprs, fnrs = np.concatenate([fprs, fd]), np.concatenate([fnrs, nd])
    eps = epsilon_from_rates(fprs, fnrs, delta=delta)
    kept = eps[~np.isnan(eps)]
    if kept.size == 0:
        return 0.0
    return float(min(kept.max(), cap))


def example_epsilons(
    unlearned_confs: ArrayLike,
    retrained_confs: ArrayLike,
    *,
    delta: float = DELTA,
    cap: float = EPSILON_CAP,
    double: bool = True,
    grid: bool = True,
) -> np.ndarray:
    """:func:`example_epsilon` for every column of ``[models, examples]`` confidences.

    Raises:
        ValueError: if the arrays are not 2-d, differ in their number of examples, or hold
            fewer than 2 models.
    """
    u = _confs(unlearned_confs, "unlearned_confs")
    r = _confs(retrained_confs, "retrained_confs")
    if u.shape[1] != r.shape[1]:
        raise ValueError(
            f"unlearned_confs and retrained_confs must cover the same examples, got "
            f"{u.shape[1]} and {r.shape[1]} columns"
        )
    return np.array(
        [
            example_epsilon(u[:, i], r[:, i], delta=delta, cap=cap, double=double, grid=grid)
            for i in range(u.shape[1])
        ]
    )


def bucket_points(epsilons: ArrayLike, n_models: int) -> np.ndarray:
    """Points per example: ``2^-k`` for ε in bucket ``k`` (width 1/2), 0 past the last bucket.

    The buckets reach ``ceil(ln(n_models − 1))``: with few models, large ε cannot be told
    apart, so they all earn nothing.

    Raises:
        ValueError: if ``n_models < 3`` (no bucket would exist).
    """
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 3:
        raise ValueError(f"n_models must be an int >= 3, got {n_models!r}")
    eps = to_cpu_tensor(epsilons, "epsilons").numpy().reshape(-1)
    buckets = round(math.ceil(math.log(n_models - 1)) / BUCKET_WIDTH)
    k = np.floor(eps / BUCKET_WIDTH).astype(np.int64)
    return np.where(k < buckets, np.power(0.5, np.clip(k, 0, None)), 0.0)


@dataclass(frozen=True)
class ChallengeScore:
    """The challenge's score and its parts.

    Attributes:
        score: ``forget_score × retain_ratio × test_ratio``.
        forget_score: mean points over the forget examples, in ``[0, 1]``.
        retain_ratio: mean retain accuracy of the unlearned models over the retrained models'.
        test_ratio: the same for test accuracy.
        mean_epsilon: mean per-example ε.
        epsilons: per-example ε.
        n_models: models per side.
    """

    score: float
    forget_score: float
    retain_ratio: float
    test_ratio: float
    mean_epsilon: float
    epsilons: tuple[float, ...]
    n_models: int


Accuracies = ArrayLike | Sequence[float]
"""Accuracies as a tensor, an array or a sequence of floats."""


def _mean_acc(x: Accuracies, name: str) -> float:
    if not isinstance(x, (np.ndarray, Tensor)):
        x = np.asarray(x, dtype=np.float64)
    arr = to_cpu_tensor(x, name).numpy().reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
        raise ValueError(f"{name} must hold accuracies in [0, 1]")
    return float(arr.mean())


def challenge_score(
    unlearned_confs: ArrayLike,
    retrained_confs: ArrayLike,
    *,
    unlearned_retain_acc: Accuracies,
    retrained_retain_acc: Accuracies,
    unlearned_test_acc: Accuracies,
    retrained_test_acc: Accuracies,
    delta: float = DELTA,
    cap: float = EPSILON_CAP,
) -> ChallengeScore:
    """The NeurIPS 2023 unlearning challenge score of one method on one forget set.

    Args:
        unlearned_confs: logit-scaled confidences ``[N, examples]`` of the forget set under
            ``N`` unlearned models (see :func:`dampen.eval.logit_scaled_confidence`).
        retrained_confs: the same under ``N`` models retrained without the forget set.
        unlearned_retain_acc: retain accuracy of each unlearned model (averaged).
        retrained_retain_acc: retain accuracy of each retrained model (averaged).
        unlearned_test_acc: test accuracy of each unlearned model.
        retrained_test_acc: test accuracy of each retrained model.
        delta: δ.
        cap: the cap on ε.

    Raises:
        ValueError: if the shapes differ, ``N < 3``, or an accuracy is out of range or zero
            for the retrained models.
    """
    u = _confs(unlearned_confs, "unlearned_confs")
    r = _confs(retrained_confs, "retrained_confs")
    if u.shape != r.shape:
        raise ValueError(
            f"unlearned_confs and retrained_confs must have the same shape, got {u.shape} and "
            f"{r.shape}"
        )
    eps = example_epsilons(u, r, delta=delta, cap=cap)
    forget = float(bucket_points(eps, u.shape[0]).mean())
    ra_u = _mean_acc(unlearned_retain_acc, "unlearned_retain_acc")
    ra_r = _mean_acc(retrained_retain_acc, "retrained_retain_acc")
    ta_u = _mean_acc(unlearned_test_acc, "unlearned_test_acc")
    ta_r = _mean_acc(retrained_test_acc, "retrained_test_acc")
    if ra_r == 0 or ta_r == 0:
        raise ValueError("the retrained models' accuracies must be positive")
    return ChallengeScore(
        score=forget * (ra_u / ra_r) * (ta_u / ta_r),
        forget_score=forget,
        retain_ratio=ra_u / ra_r,
        test_ratio=ta_u / ta_r,
        mean_epsilon=float(eps.mean()),
        epsilons=tuple(float(e) for e in eps),
        n_models=int(u.shape[0]),
    )
