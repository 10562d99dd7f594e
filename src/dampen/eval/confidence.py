"""The logit-scaled confidence of LiRA-style attacks, as a pure function."""

from __future__ import annotations

import torch
from torch import Tensor

from dampen.eval.functional import ArrayLike, to_cpu_tensor


def logit_scaled_confidence(logits: ArrayLike, targets: ArrayLike) -> Tensor:
    """``log p_y − log Σ_{j≠y} p_j`` per sample, computed stably in float64.

    Works in log space (``log_softmax`` then ``logsumexp`` over the other classes), so it stays
    finite where the probabilities themselves underflow. This is the statistic of LiRA
    (Carlini et al. 2022), U-LiRA (Hayes et al. 2024) and the NeurIPS 2023 unlearning challenge.

    Args:
        logits: scores ``[n, classes]`` with at least two classes.
        targets: integer class indices ``[n]``.

    Returns:
        A float64 tensor ``[n]``; positive when the true class holds more than half the mass.

    Raises:
        ValueError: if the shapes do not fit, there are fewer than two classes, or a target is
            out of range.
        TypeError: if ``targets`` are not integers.
    """
    lt = to_cpu_tensor(logits, "logits")
    tt = to_cpu_tensor(targets, "targets", dtype=None)
    if lt.dim() != 2 or lt.shape[1] < 2:
        raise ValueError(f"logits must have shape [n, classes >= 2], got {tuple(lt.shape)}")
    if tt.dim() != 1 or tt.shape[0] != lt.shape[0]:
        raise ValueError(
            f"targets must have shape [n] matching logits; got {tuple(tt.shape)} and "
            f"{tuple(lt.shape)}"
        )
    if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {tt.dtype}")
    tt = tt.to(torch.long)
    if len(tt) and (int(tt.min()) < 0 or int(tt.max()) >= lt.shape[1]):
        raise ValueError(f"targets must lie in [0, {lt.shape[1]}), got [{tt.min()}, {tt.max()}]")
    if not bool(torch.isfinite(lt).all()):
        raise ValueError("logits contains NaN or infinite values")
    log_p = torch.log_softmax(lt, dim=1)
    rows = torch.arange(lt.shape[0])
    correct = log_p[rows, tt]
    others = log_p.clone()
    others[rows, tt] = float("-inf")
    return correct - torch.logsumexp(others, dim=1)
