"""``amnesiac`` (Graves et al., AAAI 2021): train on Dr mixed with Df relabelled at random."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import Batches, ForwardFn
from dampen.methods._common import (
    Clock,
    budget_of,
    check_budget,
    check_optimizer,
    forward_of,
    optimizer_for,
    random_other_labels,
    require_forget,
    require_retain,
    seeded_generator,
    train_stats,
)
from dampen.methods._streams import Tagged
from dampen.methods.training import Budget, TrainLog, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class AmnesiacConfig:
    """Amnesiac unlearning (SSD paper: Adam lr 1e-4 for 3 CIFAR epochs, about 2,350 steps;
    here 200 steps by default).

    Every forget sample gets a uniformly drawn label other than its own, drawn anew each
    time its batch is seen; retain and forget batches are interleaved at random.

    Attributes:
        steps: optimiser steps over the mixed batches (SPEC §4 "Fair budgets").
        epochs: when set, passes over Dr ∪ Df instead of ``steps``.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum (unused by Adam).
        weight_decay: weight decay.
    """

    steps: int = 200
    epochs: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_budget(self.steps, self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)


@register("amnesiac", AmnesiacConfig)
def run_amnesiac_(model: nn.Module, request: Request, config: AmnesiacConfig) -> dict[str, Any]:
    """Cross-entropy on retain batches and on randomly relabelled forget batches."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "amnesiac")
    require_forget(request)
    generator = seeded_generator(request.seed)
    optimizer = optimizer_for(model, config)
    with clock.phase("train"):
        log = train_relabelled_(
            model,
            retain,
            request,
            forward=forward,
            generator=generator,
            optimizer=optimizer,
            budget=budget_of(config),
            desc="amnesiac",
        )
    return train_stats("amnesiac", log, clock)


def train_relabelled_(
    model: nn.Module,
    retain: Batches,
    request: Request,
    *,
    forward: ForwardFn,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    budget: Budget,
    desc: str,
) -> TrainLog:
    """Cross-entropy on retain batches and on forget batches relabelled at random, mixed in a
    seeded order (Amnesiac's training; SalUn runs it on its salient weights only)."""

    def loss(model: nn.Module, item: tuple[str, Any]) -> Tensor:
        tag, batch = item
        logits, targets = forward(model, batch)
        if tag == "forget":
            targets = random_other_labels(targets, logits.shape[-1], generator)
        return F.cross_entropy(logits.float(), targets)

    return train_(
        model,
        Tagged([("retain", retain), ("forget", request.forget)], generator),
        **budget,
        optimizer=optimizer,
        step_loss=loss,
        progress=request.progress,
        desc=desc,
    )
