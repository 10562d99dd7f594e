"""``neggrad``: gradient ascent on the forget set; NegGrad+ mixes in descent on the retain set.

NegGrad+ (Kurmanji et al., NeurIPS 2023), the default, minimises ``β·CE(Dr) − (1 − β)·CE(Df)``,
pairing every retain batch with the next forget batch (the forget set is cycled). Ascent has no
natural end, so training stops early once a whole pass over the forget batches is classified
no better than ``stop_accuracy``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dampen.core.losses import mean_loss, sample_wins
from dampen.methods._common import (
    Clock,
    budget_of,
    check_budget,
    check_fraction,
    check_non_negative,
    check_optimizer,
    forward_of,
    optimizer_for,
    require_forget,
    require_retain,
)
from dampen.methods._streams import Paired, length_of
from dampen.methods.training import StepLoss, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class NegGradConfig:
    """NegGrad+ (default) or plain gradient ascent on Df (``plus=False``).

    There is no single published default; the rate follows the usual ResNet18/CIFAR settings,
    the budget is in steps (SPEC §4 "Fair budgets").

    Attributes:
        steps: optimiser steps (one retain and one forget batch each for NegGrad+).
        epochs: when set, passes over Dr (NegGrad+) or Df (plain) instead of ``steps``.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        plus: NegGrad+: descend on Dr while ascending on Df (needs ``retain=``).
        beta: NegGrad+ weight of the retain loss; the forget loss gets ``1 − beta``.
        stop_accuracy: stop once the forget batches of the latest pass over Df (as seen in
            training) are classified with at most this accuracy; None never stops early (nor
            does a forget set without ``len()``). The default 0 is the end point of class
            forgetting; for random samples, where a retrained model keeps Df at test accuracy,
            pass None.
    """

    steps: int = 200
    epochs: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    plus: bool = True
    beta: float = 0.95
    stop_accuracy: float | None = 0.0

    def __post_init__(self) -> None:
        check_budget(self.steps, self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        if not isinstance(self.plus, bool):
            raise TypeError(f"plus must be a bool; got {type(self.plus).__name__}")
        check_fraction("beta", self.beta, upper_open=True)
        if self.stop_accuracy is not None:
            check_non_negative("stop_accuracy", self.stop_accuracy)
            if self.stop_accuracy > 1:
                raise ValueError(f"stop_accuracy must be <= 1; got {self.stop_accuracy}")


class ForgetAccuracyStop:
    """Accuracy on the forget batches of the latest pass over Df, as training sees them.

    ``record`` is called with each forget batch's logits and targets; ``__call__`` is True
    once a full pass (``batches_per_pass`` batches) has been seen and its accuracy is at most
    ``threshold``.
    """

    def __init__(self, threshold: float | None, batches_per_pass: int | None) -> None:
        self.threshold = threshold if batches_per_pass else None
        self.window: deque[tuple[int, int]] = deque(maxlen=max(1, batches_per_pass or 1))
        self.stopped_at: float | None = None

    def record(self, logits: Tensor, targets: Tensor) -> None:
        if self.threshold is None:
            return
        right = sample_wins(logits.detach(), targets)
        self.window.append((int(right.sum()), int(right.numel())))

    def __call__(self) -> bool:
        if self.threshold is None or len(self.window) < (self.window.maxlen or 1):
            return False
        correct = sum(c for c, _ in self.window)
        total = sum(n for _, n in self.window)
        accuracy = correct / max(total, 1)
        if accuracy <= self.threshold:
            self.stopped_at = accuracy
            return True
        return False


@register("neggrad", NegGradConfig)
def run_neggrad_(model: nn.Module, request: Request, config: NegGradConfig) -> dict[str, Any]:
    """Ascend the cross-entropy of Df (and, with ``plus``, descend that of Dr)."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "neggrad (plus=True)") if config.plus else None
    require_forget(request)
    stop = ForgetAccuracyStop(config.stop_accuracy, length_of(request.forget))

    def ascent(model: nn.Module, batch: Any) -> Tensor:
        logits, targets = forward(model, batch)
        stop.record(logits, targets)
        return -mean_loss(logits, targets)

    def ascent_plus(model: nn.Module, pair: tuple[Any, Any]) -> Tensor:
        retain_batch, forget_batch = pair
        logits_r, targets_r = forward(model, retain_batch)
        logits_f, targets_f = forward(model, forget_batch)
        stop.record(logits_f, targets_f)
        return config.beta * mean_loss(logits_r, targets_r) - (1 - config.beta) * mean_loss(
            logits_f, targets_f
        )

    optimizer = optimizer_for(model, config)
    stream: Any
    loss: StepLoss
    if retain is None:
        stream, loss, desc = request.forget, ascent, "neggrad"
    else:
        stream = Paired(retain, request.forget, other_name="forget set")
        loss, desc = ascent_plus, "neggrad+"
    with clock.phase("train"):
        log = train_(
            model,
            stream,
            **budget_of(config),
            optimizer=optimizer,
            step_loss=loss,
            progress=request.progress,
            desc=desc,
            stop=stop,
        )
    return {
        "method": "neggrad",
        "plus": config.plus,
        "steps": log.steps,
        "stopped_early": stop.stopped_at is not None,
        "epoch_losses": list(log.epoch_losses),
        "seconds": clock.seconds(),
    }
