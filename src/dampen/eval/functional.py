"""Pure evaluation metrics on tensors or numpy arrays; no model is involved.

Probabilities are ``[..., classes]`` (the last dimension sums to one); every leading position is
one sample. Results are computed on the CPU in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray
"""A ``torch.Tensor`` or a ``numpy.ndarray``."""

_SUM_TOLERANCE = 1e-2


def to_cpu_tensor(x: ArrayLike, name: str, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Return ``x`` as a detached CPU tensor (cast to ``dtype`` unless it is ``None``).

    Raises:
        TypeError: if ``x`` is neither a tensor nor a numpy array.
    """
    if isinstance(x, np.ndarray):
        t = torch.as_tensor(np.ascontiguousarray(x))
    elif isinstance(x, Tensor):
        t = x.detach()
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    t = t.to("cpu")
    return t if dtype is None else t.to(dtype)


def _probabilities(p: ArrayLike, name: str) -> Tensor:
    t = to_cpu_tensor(p, name)
    if t.dim() < 1 or t.shape[-1] == 0:
        raise ValueError(
            f"{name} must have shape [..., classes] with classes >= 1, got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} has negative entries: pass probabilities (softmax), not logits")
    sums = t.sum(dim=-1)
    if t.numel() and bool(((sums - 1).abs() > _SUM_TOLERANCE).any()):
        raise ValueError(
            f"{name} rows must sum to 1 (probabilities), got sums up to {sums.max():.4g}"
        )
    return t


def _paired(p: ArrayLike, q: ArrayLike) -> tuple[Tensor, Tensor]:
    pt, qt = _probabilities(p, "p"), _probabilities(q, "q")
    if pt.shape != qt.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(pt.shape)} and {tuple(qt.shape)}"
        )
    if pt.numel() == 0:
        raise ValueError("p and q hold no samples")
    return pt, qt


def logits_and_targets(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    logits_dtype: torch.dtype | None,
    min_classes: int = 1,
) -> tuple[Tensor, Tensor]:
    """CPU tensors of scores ``[n, classes >= min_classes]`` and integer targets ``[n]``.

    Raises:
        ValueError: if the shapes do not fit.
        TypeError: if ``targets`` are not integers.
    """
    lt = to_cpu_tensor(logits, "logits", dtype=logits_dtype)
    tt = to_cpu_tensor(targets, "targets", dtype=None)
    if lt.dim() != 2 or lt.shape[1] < min_classes:
        raise ValueError(
            f"logits must have shape [n, classes >= {min_classes}], got {tuple(lt.shape)}"
        )
    if tt.dim() != 1 or tt.shape[0] != lt.shape[0]:
        raise ValueError(
            f"targets must have shape [n] matching logits [n, classes]; got targets "
            f"{tuple(tt.shape)} and logits {tuple(lt.shape)}"
        )
    if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {tt.dtype}")
    return lt, tt


def correct_count(logits: ArrayLike, targets: ArrayLike) -> int:
    """Number of samples whose arg-max logit equals the target class.

    Args:
        logits: Scores ``[n, classes]`` (logits or probabilities).
        targets: Integer class indices ``[n]``.

    Raises:
        ValueError: if the shapes do not match.
        TypeError: if ``targets`` are not integers.
    """
    lt, tt = logits_and_targets(logits, targets, logits_dtype=None)
    if lt.shape[0] == 0:
        return 0
    return int((lt.argmax(dim=1) == tt.to(torch.long)).sum().item())


def accuracy(logits: ArrayLike, targets: ArrayLike) -> float:
    """Fraction of samples classified correctly: correct count over sample count.

    Args:
        logits: Scores ``[n, classes]`` (logits or probabilities).
        targets: Integer class indices ``[n]``.

    Returns:
        Accuracy in ``[0, 1]``.

    Raises:
        ValueError: if there are no samples or the shapes do not match.
    """
    correct = correct_count(logits, targets)
    n = int(to_cpu_tensor(targets, "targets", dtype=None).shape[0])
    if n == 0:
        raise ValueError("accuracy of zero samples is undefined (targets is empty)")
    return correct / n


def entropy(probs: ArrayLike) -> Tensor:
    """Shannon entropy (natural log) of each probability vector, with ``0 log 0 = 0``.

    Args:
        probs: Probabilities ``[..., classes]``.

    Returns:
        A float64 tensor of shape ``probs.shape[:-1]``; the entropy of a uniform vector over
        ``C`` classes is ``ln C``.
    """
    p = _probabilities(probs, "probs")
    return (-torch.xlogy(p, p).sum(dim=-1)).clamp_min(0.0)


def js_divergence(p: ArrayLike, q: ArrayLike, *, base: float = math.e) -> float:
    """Mean Jensen–Shannon divergence between paired probability vectors.

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, summed over classes
    per sample and averaged over samples. Zero probabilities contribute zero.

    Args:
        p: ``[n, classes]`` probabilities.
        q: the same shape.
        base: of the logarithm: ``e`` (nats, the default) or 2 (bits, as in ZRF).

    Returns:
        A value in ``[0, log_base 2]``: ``[0, ln 2]`` in nats, ``[0, 1]`` in bits. Only
        round-off below zero is clipped.

    Raises:
        ValueError: if the shapes differ, there are no samples, or the rows are not
            probabilities.
    """
    pt, qt = _paired(p, q)
    m = (pt + qt) / 2
    kl_pm = (torch.xlogy(pt, pt) - torch.xlogy(pt, m)).sum(dim=-1)
    kl_qm = (torch.xlogy(qt, qt) - torch.xlogy(qt, m)).sum(dim=-1)
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base}")
    per_sample = ((kl_pm + kl_qm) / 2).clamp(min=0.0) / math.log(base)
    return float(per_sample.mean().item())


def activation_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Mean L2 distance between paired probability vectors.

    Raises:
        ValueError: if the shapes differ, there are no samples, or the rows are not
            probabilities.
    """
    pt, qt = _paired(p, q)
    return float(torch.linalg.vector_norm(pt - qt, dim=-1).mean().item())
