"""``retrain``: the gold standard — a fresh model trained from scratch on the retain set only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dampen.methods._common import (
    Clock,
    check_fraction,
    check_int,
    check_optimizer,
    forward_of,
    optimizer_for,
    require_retain,
)
from dampen.methods._fresh import ModelFactory, check_factory, refresh_
from dampen.methods.training import cross_entropy_loss, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining from scratch with the original recipe (SPEC §3; same defaults as
    :class:`dampen.recipe.TrainConfig` — match ``epochs`` to how the model was trained).

    Attributes:
        epochs: passes over the retain set.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        gamma: MultiStepLR decay factor.
        milestones: epochs at which the rate decays, as fractions of ``epochs``.
        model_factory: ``factory() -> nn.Module`` building a fresh model of the same
            architecture; None re-initialises a copy layer by layer (every nested module's
            ``reset_parameters()``).
    """

    epochs: int = 30
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gamma: float = 0.2
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    model_factory: ModelFactory | None = None

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        check_fraction("gamma", self.gamma)
        if not isinstance(self.milestones, tuple):
            raise TypeError(f"milestones must be a tuple; got {type(self.milestones).__name__}")
        for m in self.milestones:
            check_fraction("milestones", m, upper_open=True)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones must be strictly increasing; got {self.milestones}")
        check_factory("model_factory", self.model_factory)

    def milestone_epochs(self) -> list[int]:
        """The milestones as epoch numbers for ``MultiStepLR``."""
        return sorted({max(1, round(m * self.epochs)) for m in self.milestones})


@register("retrain", RetrainConfig)
def run_retrain_(model: nn.Module, request: Request, config: RetrainConfig) -> dict[str, Any]:
    """Re-initialise ``model`` and train it on ``request.retain``; the forget set is never read."""
    clock = Clock()
    retain = require_retain(request, "retrain")
    with clock.phase("reinit"):
        source = refresh_(model, config.model_factory)
    optimizer = optimizer_for(model, config)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=config.milestone_epochs(), gamma=config.gamma
    )
    with clock.phase("train"):
        log = train_(
            model,
            retain,
            epochs=config.epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            step_loss=cross_entropy_loss(forward_of(request)),
            progress=request.progress,
            desc="retrain",
        )
    return {
        "method": "retrain",
        "initialisation": source,
        "steps": log.steps,
        "epoch_losses": list(log.epoch_losses),
        "seconds": clock.seconds(),
    }
