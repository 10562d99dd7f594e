"""U-LiRA's scoring core (Hayes et al. 2024, "Inexact unlearning needs more careful evaluations").

Per forget example, two Gaussians of the logit-scaled confidence are fitted from shadow models
that had the example in their forget set: "in" — their unlearned models; "out" — their retrained
references (trained on their data without the forget set), the distribution of the negatives the
attack must reject. A target model's confidence on the example is scored by the log likelihood
ratio ``log N(c; μ_in, σ_in) − log N(c; μ_out, σ_out)``: positive means "this model unlearned
the example", negative "this model was retrained without it". On balanced targets (each forget
example under its unlearned model and under its retrained reference) the attack's accuracy is
0.5 for a perfect unlearning method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dampen.eval.functional import ArrayLike, to_cpu_tensor
from dampen.eval.mia import roc_auc

MIN_STD = 1e-3
"""Floor of a fitted standard deviation."""


@dataclass(frozen=True, eq=False)
class GaussianFit:
    """Per-example Gaussians of the "in" (unlearned) and "out" (never trained) confidences.

    Attributes:
        mean_in: ``[examples]``.
        std_in: ``[examples]``.
        mean_out: ``[examples]``.
        std_out: ``[examples]``.
        count_in: shadows behind each "in" fit.
        count_out: shadows behind each "out" fit.
    """

    mean_in: np.ndarray
    std_in: np.ndarray
    mean_out: np.ndarray
    std_out: np.ndarray
    count_in: np.ndarray
    count_out: np.ndarray

    def __len__(self) -> int:
        return int(self.mean_in.shape[0])


def _matrix(x: ArrayLike, name: str) -> np.ndarray:
    arr = to_cpu_tensor(x, name, dtype=None).numpy()
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [shadows, examples], got shape {arr.shape}")
    return arr


def _masked_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    var = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count - 1, 1)
    return mean, var


def fit_gaussians(
    in_confs: ArrayLike,
    out_confs: ArrayLike,
    in_mask: ArrayLike,
    out_mask: ArrayLike,
    *,
    global_variance: bool = False,
    min_std: float = MIN_STD,
) -> GaussianFit:
    """Fit the per-example "in" and "out" Gaussians from shadow confidences.

    Args:
        in_confs: ``[shadows, examples]`` confidences under the shadows' unlearned models.
        out_confs: ``[shadows, examples]`` confidences under the shadows' retrained references.
        in_mask: ``[shadows, examples]`` bool, the "in" value counts (the shadow trained on
            the example and unlearned it).
        out_mask: ``[shadows, examples]`` bool, the "out" value counts (in U-LiRA the same
            shadows as ``in_mask``: their references were retrained without the example).
        global_variance: one variance per side pooled over the examples (LiRA's advice when
            there are few shadows) instead of one per example.
        min_std: floor of the standard deviations.

    Raises:
        ValueError: if shapes differ, a mask is not boolean, or an example has fewer than two
            shadows on a side.

    The masks may overlap: one shadow gives both an unlearned model and a retrained one.
    """
    ic, oc = _matrix(in_confs, "in_confs"), _matrix(out_confs, "out_confs")
    im, om = _matrix(in_mask, "in_mask"), _matrix(out_mask, "out_mask")
    for name, arr in (("out_confs", oc), ("in_mask", im), ("out_mask", om)):
        if arr.shape != ic.shape:
            raise ValueError(f"{name} must have in_confs' shape {ic.shape}, got {arr.shape}")
    if im.dtype != np.bool_ or om.dtype != np.bool_:
        raise ValueError("in_mask and out_mask must be boolean")
    ic, oc = ic.astype(np.float64), oc.astype(np.float64)
    if not (np.isfinite(ic[im]).all() and np.isfinite(oc[om]).all()):
        raise ValueError("in_confs/out_confs hold NaN or infinite values where masked in")
    if not min_std > 0:
        raise ValueError(f"min_std must be positive, got {min_std}")
    n_in, n_out = im.sum(axis=0), om.sum(axis=0)
    if (n_in < 2).any() or (n_out < 2).any():
        raise ValueError("every example needs at least two 'in' and two 'out' shadows")
    mean_in, var_in = _masked_stats(ic, im)
    mean_out, var_out = _masked_stats(oc, om)
    if global_variance:
        var_in = np.full_like(var_in, float(np.average(var_in, weights=n_in - 1)))
        var_out = np.full_like(var_out, float(np.average(var_out, weights=n_out - 1)))
    return GaussianFit(
        mean_in=mean_in,
        std_in=np.maximum(np.sqrt(var_in), min_std),
        mean_out=mean_out,
        std_out=np.maximum(np.sqrt(var_out), min_std),
        count_in=n_in,
        count_out=n_out,
    )


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def likelihood_ratio(fit: GaussianFit, confs: ArrayLike, examples: ArrayLike) -> np.ndarray:
    """Log likelihood ratio "unlearned" over "never trained" of each target confidence.

    Args:
        fit: the per-example Gaussians.
        confs: ``[k]`` confidences of target models.
        examples: ``[k]`` the example (column of the fit) each confidence belongs to.

    Raises:
        ValueError: if the lengths differ or an example index is out of range.
    """
    c = to_cpu_tensor(confs, "confs").numpy().reshape(-1)
    e = to_cpu_tensor(examples, "examples", dtype=None).numpy().reshape(-1)
    if c.shape != e.shape:
        raise ValueError(f"confs and examples must have the same length, got {c.size}, {e.size}")
    if e.size and (not np.issubdtype(e.dtype, np.integer) or e.min() < 0 or e.max() >= len(fit)):
        raise ValueError(f"examples must be integer indices in [0, {len(fit)})")
    return _log_normal(c, fit.mean_in[e], fit.std_in[e]) - _log_normal(
        c, fit.mean_out[e], fit.std_out[e]
    )


@dataclass(frozen=True)
class ULiRAResult:
    """How well U-LiRA tells unlearned from retrained models.

    Attributes:
        accuracy: balanced accuracy of "unlearned when the log ratio > 0"; ideal 0.5.
        auc: ROC AUC of the log ratio, unlearned as positives; ideal 0.5.
        pairs: number of (unlearned, retrained) target pairs scored.
    """

    accuracy: float
    auc: float
    pairs: int


def ulira_attack(unlearned_scores: ArrayLike, retrained_scores: ArrayLike) -> ULiRAResult:
    """Accuracy and AUC from log ratios of unlearned targets and retrained targets.

    Raises:
        ValueError: if either side is empty or holds NaN.
    """
    u = to_cpu_tensor(unlearned_scores, "unlearned_scores").numpy().reshape(-1)
    r = to_cpu_tensor(retrained_scores, "retrained_scores").numpy().reshape(-1)
    if u.size == 0 or r.size == 0:
        raise ValueError("unlearned_scores and retrained_scores must not be empty")
    if np.isnan(u).any() or np.isnan(r).any():
        raise ValueError("unlearned_scores and retrained_scores must not hold NaN")
    accuracy = 0.5 * float((u > 0).mean()) + 0.5 * float((r <= 0).mean())
    return ULiRAResult(accuracy=accuracy, auc=roc_auc(u, r), pairs=int(min(u.size, r.size)))
