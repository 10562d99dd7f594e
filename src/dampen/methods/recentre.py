"""Re-centre the poison target's output on clean held-out data while a backdoor is dampened.

A dampening that takes the trigger's label off the identified samples can get there by
lowering the target class's outputs everywhere: on ``fmnist-poison`` (the 24 requests whose
backdoor took) the held-out search cost the target class 18.4 points of test accuracy on
average while the other classes gained (``benchmarks/poison_by_class.py``), and triggered
images left the target because less was classified as it. Re-centring tells the two apart:
for each candidate dampening the target's logit gets the offset ``c ≥ 0`` that makes the
clean held-out samples most accurate (:func:`best_offset`), and the forget set must lose the
target *with that offset*. The chosen dampening's offset is then added to the output layer's
bias of the target (:func:`output_bias`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAST_GAP = 1.0
"""How far beyond the last break point the offset goes when the best accuracy lies beyond
it (logits)."""


def output_bias(model: nn.Module, classes: int) -> nn.Parameter | None:
    """The bias of the model's last ``nn.Linear`` with ``classes`` outputs (the logits' layer),
    or ``None`` when there is no such layer or it has no bias."""
    found: nn.Linear | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == classes:
            found = module
    if found is None or found.bias is None:
        return None
    return found.bias


def target_wins(logits: Tensor, target: int, offset: float) -> Tensor:
    """Per sample: is ``target`` the arg-max once ``offset`` is added to its logit? (Ties
    between the target and another class go to the other class.)"""
    others = logits.clone()
    others[:, target] = -torch.inf
    return logits[:, target] + offset > others.max(dim=1).values


def predictions(logits: Tensor, target: int, offset: float) -> Tensor:
    """The arg-max predictions once ``offset`` is added to the target's logit."""
    others = logits.clone()
    others[:, target] = -torch.inf
    best_other = others.argmax(dim=1)
    return torch.where(target_wins(logits, target, offset), target, best_other)


def best_offset(logits: Tensor, labels: Tensor, target: int) -> float:
    """The offset ``c ≥ 0`` added to the target's logit that makes the most of ``labels``
    right; of the equally good ones, the middle of the first interval (accuracy only
    changes where the target starts to win on a sample, ``max_{j≠t} z_j − z_t``).

    Args:
        logits: ``(samples, classes)`` outputs of clean samples.
        labels: their integer labels.
        target: the poison's target class.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError("best_offset needs (samples, classes) logits and one label each")
    logits = logits.detach().float()
    others = logits.clone()
    others[:, target] = -torch.inf
    gaps = others.max(dim=1).values - logits[:, target]
    breaks = torch.unique(gaps[gaps >= 0])  # sorted; the target wins once c passes one
    if breaks.numel() == 0:
        return 0.0
    ends = torch.cat([breaks[1:], breaks[-1:] + 2 * LAST_GAP])
    candidates = torch.cat([torch.zeros(1), (breaks + ends) / 2])
    wins = candidates[:, None] > gaps[None, :]  # (candidates, samples)
    best_other = others.argmax(dim=1)
    right = torch.where(wins, labels[None, :] == target, (best_other == labels)[None, :])
    counts = right.sum(dim=1)
    return float(candidates[int(torch.argmax(counts))])  # argmax: the first of the best
