"""Re-centre the poison target's output on clean held-out data while a backdoor is dampened.

A dampening that takes the trigger's label off the identified samples can get there by
lowering the target class's outputs everywhere: on ``fmnist-poison`` (the 24 requests whose
backdoor took) the held-out search cost the target class 18.4 points of test accuracy on
average while the other classes gained (``benchmarks/poison_by_class.py``), and triggered
images left the target because less was classified as it. Re-centring tells the two apart:
for each candidate dampening the target's logit gets the smallest offset ``c ≥ 0`` after
which the target is predicted on the clean held-out samples as often as the original model
predicted it (:func:`restoring_offset`; no labels needed), and the forget set must lose the
target *with that offset*. The chosen dampening's offset is then added to the output layer's
bias of the target (:func:`output_bias`). (The models trained on clean data predict the
target about as often as the poisoned ones: their target-class accuracy was within 1.6 points
on ``fmnist-poison``.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MARGIN = 1e-3
"""How far past the last sample's break point the offset goes (logits): the target then wins
on it outright rather than ties."""


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


def restoring_offset(logits: Tensor, target: int, count: int) -> float:
    """The smallest offset ``c ≥ 0`` on the target's logit after which the target wins on at
    least ``count`` of these samples (plus :data:`MARGIN`; ``0`` when it already does).

    Args:
        logits: ``(samples, classes)`` outputs of clean samples.
        target: the poison's target class.
        count: on how many of them the original model predicted the target.
    """
    if logits.ndim != 2:
        raise ValueError("restoring_offset needs (samples, classes) logits")
    if not 0 <= count <= logits.shape[0]:
        raise ValueError(f"count must lie in [0, {logits.shape[0]}]; got {count}")
    logits = logits.detach().float()
    others = logits.clone()
    others[:, target] = -torch.inf
    gaps = (others.max(dim=1).values - logits[:, target]).sort().values  # wins once c > gap
    if count == 0 or int((gaps < 0).sum()) >= count:
        return 0.0
    return float(gaps[count - 1]) + MARGIN
