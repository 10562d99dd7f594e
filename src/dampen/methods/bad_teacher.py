"""``bad_teacher`` (Chundawat et al., AAAI 2023): distil from a good and a "bad" teacher.

The student (the model) learns the original model's outputs on retain batches and a randomly
initialised model's outputs on forget batches, by KL divergence at temperature T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.methods._common import (
    Clock,
    budget_of,
    check_budget,
    check_fraction,
    check_optimizer,
    check_positive,
    forward_of,
    freeze_,
    frozen_copy,
    optimizer_for,
    require_forget,
    require_retain,
    seeded_generator,
    train_stats,
)
from dampen.methods._fresh import ModelFactory, check_factory, fresh_copy
from dampen.methods._streams import Subsampled, Tagged
from dampen.methods.training import train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class BadTeacherConfig:
    """Bad-teacher distillation (SSD paper: Adam lr 1e-4, 30 % of Dr, T = 1, for 1 CIFAR epoch,
    about 230 steps; here 200 steps by default).

    Attributes:
        steps: optimiser steps over the mixed batches (SPEC §4 "Fair budgets").
        epochs: when set, passes over the sampled Dr batches plus Df instead of ``steps``.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum (unused by Adam).
        weight_decay: weight decay.
        retain_fraction: share of the retain batches used, drawn anew every epoch.
        temperature: softmax temperature of the KL divergence.
        teacher_factory: ``factory() -> nn.Module`` building the incompetent teacher; None
            re-initialises a copy of the model layer by layer.
    """

    steps: int = 200
    epochs: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    retain_fraction: float = 0.3
    temperature: float = 1.0
    teacher_factory: ModelFactory | None = None

    def __post_init__(self) -> None:
        check_budget(self.steps, self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        check_fraction("retain_fraction", self.retain_fraction)
        check_positive("temperature", self.temperature)
        check_factory("teacher_factory", self.teacher_factory)


def kl_to_teacher(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``KL(softmax(teacher/T) ‖ softmax(student/T))`` averaged over the batch."""
    return F.kl_div(
        F.log_softmax(student.float() / temperature, dim=-1),
        F.softmax(teacher.float() / temperature, dim=-1),
        reduction="batchmean",
    )


@register("bad_teacher", BadTeacherConfig)
def run_bad_teacher_(
    model: nn.Module, request: Request, config: BadTeacherConfig
) -> dict[str, Any]:
    """Distil the original model on sampled retain batches and a random model on Df."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "bad_teacher")
    require_forget(request)
    generator = seeded_generator(request.seed)
    with clock.phase("teachers"):
        competent = frozen_copy(model)
        incompetent = freeze_(fresh_copy(model, config.teacher_factory))

    def loss(model: nn.Module, item: tuple[str, Any]) -> Tensor:
        tag, batch = item
        logits, _ = forward(model, batch)
        with torch.no_grad():
            target, _ = forward(incompetent if tag == "forget" else competent, batch)
        return kl_to_teacher(logits, target, config.temperature)

    stream = Tagged(
        [
            ("retain", Subsampled(retain, config.retain_fraction, generator)),
            ("forget", request.forget),
        ],
        generator,
    )
    optimizer = optimizer_for(model, config)
    with clock.phase("train"):
        log = train_(
            model,
            stream,
            **budget_of(config),
            optimizer=optimizer,
            step_loss=loss,
            progress=request.progress,
            desc="bad_teacher",
        )
    return train_stats("bad_teacher", log, clock)
