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

Label errors name several classes (``forget_kind="label_errors"``; an interclass confusion
names two): dampening what makes a wrong label win lowers the classes the labels name, and on
``fmnist-label-errors`` took the confused classes from 64 % to 51-60 %. There every class the
identified samples' labels name is re-centred, one after the other until none needs more
(:func:`restoring_offsets`).
"""

from __future__ import annotations

from collections.abc import Iterable

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


def winning_counts(logits: Tensor, classes: Iterable[int]) -> dict[int, int]:
    """On how many samples each of ``classes`` wins outright (:func:`target_wins`, no offset):
    the counts :func:`restoring_offsets` and :func:`restoring_offset` restore."""
    return {int(c): int(target_wins(logits, int(c), 0.0).sum()) for c in classes}


def predictions(logits: Tensor, target: int, offset: float) -> Tensor:
    """The arg-max predictions once ``offset`` is added to the target's logit."""
    others = logits.clone()
    others[:, target] = -torch.inf
    best_other = others.argmax(dim=1)
    return torch.where(target_wins(logits, target, offset), target, best_other)


MAX_SWEEPS = 16
"""How many times :func:`restoring_offsets` goes over the classes at most (raising one class
takes samples from the others, which may then need more)."""


def restoring_offsets(logits: Tensor, counts: dict[int, int]) -> Tensor:
    """Offsets ``≥ 0`` on the logits of the classes in ``counts`` (zeros elsewhere) after
    which each wins on at least its count of these samples (the first arg-max wins).

    First the classes are raised together, by the least common offset after which they win
    on as many samples together as their counts add up to (each raised alone would only take
    the samples they contest from each other); then class by class, each by
    :func:`restoring_offset` given the others' offsets, until a sweep raises none (at most
    :data:`MAX_SWEEPS` sweeps: where two classes still contest one sample, one of them ends a
    sample short). One class gets exactly :func:`restoring_offset`.

    Args:
        logits: ``(samples, classes)`` outputs of clean samples.
        counts: per class, on how many of them the original model predicted it.
    """
    if logits.ndim != 2:
        raise ValueError("restoring_offsets needs (samples, classes) logits")
    logits = logits.detach().double()
    offsets = torch.zeros(logits.shape[1], dtype=torch.float64, device=logits.device)
    named = list(counts)
    if len(named) > 1:
        rest = [c for c in range(logits.shape[1]) if c not in counts]
        together = logits[:, named].max(dim=1).values
        if rest:
            # the named classes as one: how far they trail the best other class
            joined = torch.cat([logits[:, rest], together[:, None]], dim=1)
            common = restoring_offset(joined, len(rest), min(sum(counts.values()), len(logits)))
            offsets[named] = common
    for _ in range(MAX_SWEEPS):
        raised = False
        for target, count in counts.items():
            more = restoring_offset(logits + offsets, target, count)
            if more > 0.0:
                offsets[target] += more
                raised = True
        if not raised:
            break
    return offsets


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
