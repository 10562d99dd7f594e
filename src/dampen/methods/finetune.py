"""``finetune``: a few epochs of ordinary training on the retain set (catastrophic forgetting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from dampen.methods._common import (
    Clock,
    budget_of,
    check_budget,
    check_optimizer,
    forward_of,
    optimizer_for,
    require_retain,
    train_stats,
)
from dampen.methods.training import cross_entropy_loss, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning on Dr (SSD paper: SGD lr 0.02, momentum 0.9, weight decay 5e-4, for 5 CIFAR
    epochs, about 3,500 steps; here 300 steps by default).

    Attributes:
        steps: optimiser steps on retain batches (SPEC §4 "Fair budgets").
        epochs: when set, passes over the retain set instead of ``steps``.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
    """

    steps: int = 300
    epochs: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        check_budget(self.steps, self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)


@register("finetune", FinetuneConfig)
def run_finetune_(model: nn.Module, request: Request, config: FinetuneConfig) -> dict[str, Any]:
    """Train on ``request.retain`` only; the forget set is never read."""
    clock = Clock()
    retain = require_retain(request, "finetune")
    optimizer = optimizer_for(model, config)
    with clock.phase("train"):
        log = train_(
            model,
            retain,
            **budget_of(config),
            optimizer=optimizer,
            step_loss=cross_entropy_loss(forward_of(request)),
            progress=request.progress,
            desc="finetune",
        )
    return train_stats("finetune", log, clock)
