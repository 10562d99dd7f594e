"""``scrub`` (Kurmanji et al., NeurIPS 2023): max-min distillation from the original model.

Each epoch first (for the first ``max_steps`` epochs) *maximises* the KL divergence between
the student and the original model on Df (a full pass), then *minimises* ``gamma·CE + alpha·KL``
on Dr for ``steps / epochs`` steps (a full pass over Dr, as published, when ``steps`` is None).
Both passes share one optimiser; the learning rate decays by ``lr_decay_rate`` after each
epoch listed in ``lr_decay_epochs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.methods._common import (
    Clock,
    check_fraction,
    check_int,
    check_non_negative,
    check_optimizer,
    check_positive,
    forward_of,
    frozen_copy,
    optimizer_for,
    require_forget,
    require_retain,
)
from dampen.methods.training import Budget, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class ScrubConfig:
    """SCRUB with the authors' published defaults, except for the budget on Dr: 300 steps in
    all rather than 5 full passes (SPEC §4 "Fair budgets").

    Attributes:
        epochs: SCRUB epochs (``sgda_epochs``); each has a min pass over Dr.
        steps: optimiser steps of all the min passes together, split evenly over the epochs;
            None makes each min pass a full pass over Dr. With fewer steps than epochs some
            min passes are empty.
        max_steps: the first ``max_steps`` epochs also have a max pass over Df (``msteps``).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        temperature: distillation temperature (``kd_T``); the KL is scaled by T².
        alpha: weight of the KL term on Dr.
        gamma: weight of the cross-entropy term on Dr.
        lr_decay_epochs: epochs after which the rate is multiplied by ``lr_decay_rate``.
        lr_decay_rate: the decay factor.
    """

    epochs: int = 5
    steps: int | None = 300
    max_steps: int = 3
    optimizer: str = "sgd"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.5
    gamma: float = 1.0
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)
    lr_decay_rate: float = 0.1

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs)
        if self.steps is not None:
            check_int("steps", self.steps)
        check_int("max_steps", self.max_steps, minimum=0)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        check_positive("temperature", self.temperature)
        check_non_negative("alpha", self.alpha)
        check_non_negative("gamma", self.gamma)
        if not isinstance(self.lr_decay_epochs, tuple):
            raise TypeError(
                f"lr_decay_epochs must be a tuple; got {type(self.lr_decay_epochs).__name__}"
            )
        for e in self.lr_decay_epochs:
            check_int("lr_decay_epochs", e)
        check_fraction("lr_decay_rate", self.lr_decay_rate)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of (1-based) ``epoch``."""
        decays = sum(1 for e in self.lr_decay_epochs if epoch > e)
        return self.lr * self.lr_decay_rate**decays


def distill_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton's distillation loss: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per sample."""
    kl = F.kl_div(
        F.log_softmax(student.float() / temperature, dim=-1),
        F.softmax(teacher.float() / temperature, dim=-1),
        reduction="batchmean",
    )
    return kl * temperature**2


@register("scrub", ScrubConfig)
def run_scrub_(model: nn.Module, request: Request, config: ScrubConfig) -> dict[str, Any]:
    """Alternate max passes on Df and min passes on Dr against a frozen copy of the model."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "scrub")
    require_forget(request)
    teacher = frozen_copy(model)
    T = config.temperature

    def teacher_logits(batch: Any) -> Tensor:
        with torch.no_grad():
            return forward(teacher, batch)[0]

    def max_loss(model: nn.Module, batch: Any) -> Tensor:
        logits, _ = forward(model, batch)
        return -distill_kl(logits, teacher_logits(batch), T)

    def min_loss(model: nn.Module, batch: Any) -> Tensor:
        logits, targets = forward(model, batch)
        kd = distill_kl(logits, teacher_logits(batch), T)
        return config.gamma * F.cross_entropy(logits.float(), targets) + config.alpha * kd

    optimizer = optimizer_for(model, config)
    max_losses: list[float] = []
    min_losses: list[float] = []
    steps = 0
    for epoch in range(1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        where = f"{epoch}/{config.epochs}"
        if epoch <= config.max_steps:
            with clock.phase("max"):
                log = train_(
                    model,
                    request.forget,
                    epochs=1,
                    optimizer=optimizer,
                    step_loss=max_loss,
                    progress=request.progress,
                    desc=f"scrub max {where}",
                )
            max_losses += log.epoch_losses
            steps += log.steps
        min_budget: Budget = {"epochs": 1}
        if config.steps is not None:  # the epochs' shares add up to exactly ``steps``
            share = config.steps * epoch // config.epochs
            min_budget = {"steps": share - config.steps * (epoch - 1) // config.epochs}
        with clock.phase("min"):
            log = train_(
                model,
                retain,
                **min_budget,
                optimizer=optimizer,
                step_loss=min_loss,
                progress=request.progress,
                desc=f"scrub min {where}",
            )
        min_losses += log.epoch_losses
        steps += log.steps
    return {
        "method": "scrub",
        "steps": steps,
        "max_losses": max_losses,
        "min_losses": min_losses,
        "seconds": clock.seconds(),
    }
