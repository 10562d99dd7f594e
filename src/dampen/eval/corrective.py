"""Figures of corrective unlearning (SPEC §3): does a backdoor still fire, are labels healed?"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from dampen.core.batches import ForwardFn, default_forward
from dampen.eval.report import collect_outputs


def attack_figures(
    model: nn.Module,
    triggered: Iterable[Any],
    target: int,
    *,
    forward: ForwardFn = default_forward,
) -> dict[str, float]:
    """Healed accuracy and attack success rate on triggered test images of the other classes.

    Args:
        model: the model to measure.
        triggered: batches of test images of classes other than ``target`` with the trigger
            stamped on, labelled with their true classes.
        target: the label the trigger leads to.

    Returns:
        ``healed_acc``: the share classified as their true class; ``attack_success``: the
        share classified as ``target``.

    Raises:
        ValueError: if there are no images, or one is labelled ``target``.
    """
    out = collect_outputs(model, triggered, forward=forward)
    if len(out) == 0:
        raise ValueError("triggered holds no images")
    if bool((out.targets == target).any()):
        raise ValueError(f"triggered must hold images of classes other than the target {target}")
    predicted = out.logits.argmax(dim=1)
    return {
        "healed_acc": float((predicted == out.targets).double().mean()),
        "attack_success": float((predicted == target).double().mean()),
    }


def healed_share(value: float, poisoned: float, clean: float) -> float | None:
    """How much of the poison's damage is undone: ``(value − poisoned) / (clean − poisoned)``.

    ``value``, ``poisoned`` and ``clean`` are healed accuracies of the unlearned model, of the
    poisoned original and of a model trained on clean data; 1 means as good as clean, 0 no
    better than the poisoned model (Potion's "poison healed"). ``None`` when the poison did no
    damage (``clean <= poisoned``).
    """
    gap = clean - poisoned
    return None if gap <= 0 else (value - poisoned) / gap
