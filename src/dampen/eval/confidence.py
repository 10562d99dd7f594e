"""The logit-scaled confidence of LiRA-style attacks, as a pure function."""

from __future__ import annotations

import torch
from torch import Tensor

from dampen.eval.functional import ArrayLike, logits_and_targets


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
    lt, tt = logits_and_targets(logits, targets, logits_dtype=torch.float64, min_classes=2)
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
