"""``unsir`` (Tarun et al., IEEE TNNLS 2023): error-maximising noise, then impair and repair.

For class forgetting only. For each forget class a batch of input-space noise is learnt that
*maximises* the model's loss for that class (with an L2 penalty on the noise). The impair
phase trains on retain batches interleaved with copies of the noise batches labelled with
their forget class; the repair phase trains on the retain batches alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import ForwardFn, logits_only, model_device, split_batch
from dampen.core.state import preserved
from dampen.methods._common import (
    Clock,
    budget_of,
    check_int,
    check_non_negative,
    check_optimizer,
    check_positive,
    forward_of,
    optimizer_for,
    require_retain,
    seeded_generator,
)
from dampen.methods._streams import Tagged
from dampen.methods.training import Budget, StepLoss, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class UNSIRConfig:
    """UNSIR with the SSD paper's settings (noise batch 32, 25 Adam steps at lr 0.1 with L2
    weight 0.1, 80 noise copies; impair and repair Adam lr 1e-4), except for the budget: 100
    steps per phase instead of one CIFAR epoch each (SPEC §4 "Fair budgets").

    Attributes:
        noise_batch_size: noise samples learnt per forget class.
        noise_steps: optimisation steps of the noise.
        noise_lr: Adam learning rate of the noise.
        noise_weight: weight of the mean squared L2 norm penalty on the noise.
        noise_copies: copies of each class's noise batch mixed into an impair epoch.
        impair_steps: optimiser steps over retain + noise batches.
        repair_steps: optimiser steps over retain batches (0: no repair).
        impair_epochs: when set, passes over retain + noise batches instead of ``impair_steps``.
        repair_epochs: when set, passes over retain batches instead of ``repair_steps``.
        optimizer: ``"adam"`` or ``"sgd"`` for impair and repair.
        impair_lr: learning rate of the impair phase.
        repair_lr: learning rate of the repair phase.
        momentum: SGD momentum (unused by Adam).
        weight_decay: weight decay.
    """

    noise_batch_size: int = 32
    noise_steps: int = 25
    noise_lr: float = 0.1
    noise_weight: float = 0.1
    noise_copies: int = 80
    impair_steps: int = 100
    repair_steps: int = 100
    impair_epochs: int | None = None
    repair_epochs: int | None = None
    optimizer: str = "adam"
    impair_lr: float = 1e-4
    repair_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0

    BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("impair_steps", "repair_steps")
    """The fields a benchmark's budget sets (every other baseline: ``steps``)."""

    def __post_init__(self) -> None:
        check_int("noise_batch_size", self.noise_batch_size)
        check_int("noise_steps", self.noise_steps)
        check_positive("noise_lr", self.noise_lr)
        check_non_negative("noise_weight", self.noise_weight)
        check_int("noise_copies", self.noise_copies)
        check_int("impair_steps", self.impair_steps)
        check_int("repair_steps", self.repair_steps, minimum=0)
        if self.impair_epochs is not None:
            check_int("impair_epochs", self.impair_epochs)
        if self.repair_epochs is not None:
            check_int("repair_epochs", self.repair_epochs, minimum=0)
        check_optimizer(
            self.optimizer, self.impair_lr, self.momentum, self.weight_decay, lr_name="impair_lr"
        )
        check_positive("repair_lr", self.repair_lr)

    def budget(self, phase: str) -> Budget:
        """The ``train_`` budget of ``phase`` (``"impair"`` or ``"repair"``)."""
        return budget_of(self, phase)


class _Noise(nn.Module):
    """A learnable batch of inputs."""

    def __init__(self, noise: Tensor) -> None:
        super().__init__()
        self.noise = nn.Parameter(noise)


def forget_classes(request: Request) -> tuple[list[int], tuple[int, ...]]:
    """The classes in the forget set and the shape of one input sample.

    Raises:
        TypeError: if batches do not hold a tensor input and integer class labels.
    """
    classes: set[int] = set()
    shape: tuple[int, ...] | None = None
    for batch in request.forget:
        inputs, targets = split_batch(batch)
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError(
                "unsir learns noise in input space and needs batches (x, y) with a tensor x; "
                f"got inputs of type {type(inputs).__name__}"
            )
        if targets.is_floating_point() or targets.dim() != 1:
            raise TypeError("unsir needs integer class labels of shape [batch]")
        shape = shape or tuple(inputs.shape[1:])
        classes.update(int(c) for c in targets.unique().tolist())
    if shape is None:
        raise ValueError("the forget set is empty")
    return sorted(classes), shape


def learn_noise_(
    model: nn.Module, noise: _Noise, label: int, config: UNSIRConfig, progress: bool
) -> None:
    """Optimise ``noise`` to maximise ``model``'s loss for ``label`` (model frozen, eval mode)."""
    targets = torch.full((config.noise_batch_size,), label, device=model_device(model))

    def loss(module: nn.Module, _: int) -> Tensor:
        x = noise.noise
        logits = logits_only(model, x, None)
        penalty = x.float().pow(2).flatten(1).sum(dim=1).mean()
        return -F.cross_entropy(logits.float(), targets) + config.noise_weight * penalty

    with preserved(model, grad_all=False):
        for p in model.parameters():
            p.requires_grad_(False)
        train_(
            noise,
            range(config.noise_steps),
            epochs=1,
            optimizer=torch.optim.Adam(noise.parameters(), lr=config.noise_lr),
            step_loss=loss,
            progress=progress,
            desc=f"unsir noise (class {label})",
        )


def _retain_loss(forward: ForwardFn, classes: list[int]) -> StepLoss:
    forbidden = torch.tensor(classes)

    def loss(model: nn.Module, batch: Any) -> Tensor:
        logits, targets = forward(model, batch)
        if torch.isin(targets.cpu(), forbidden).any():
            raise ValueError(
                "unsir works for class forgetting only: the retain set holds samples of the "
                f"forget class(es) {classes} (random or sub-class forgetting?); use another "
                "method for this scenario"
            )
        return F.cross_entropy(logits.float(), targets)

    return loss


@register("unsir", UNSIRConfig)
def run_unsir_(model: nn.Module, request: Request, config: UNSIRConfig) -> dict[str, Any]:
    """Learn error-maximising noise per forget class, impair with it, then repair on Dr."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "unsir")
    generator = seeded_generator(request.seed)
    with clock.phase("classes"):
        classes, shape = forget_classes(request)
    device = model_device(model)
    noise_batches: list[tuple[Tensor, Tensor]] = []
    with clock.phase("noise"):
        for label in classes:
            start = torch.randn((config.noise_batch_size, *shape), generator=generator)
            noise = _Noise(start.to(device))
            learn_noise_(model, noise, label, config, request.progress)
            x = noise.noise.detach()
            noise_batches.append((x, torch.full((config.noise_batch_size,), label, device=device)))
    retain_loss = _retain_loss(forward, classes)

    def impair_loss(model: nn.Module, item: tuple[str, Any]) -> Tensor:
        tag, batch = item
        if tag == "noise":
            x, y = batch
            return F.cross_entropy(logits_only(model, x, None).float(), y)
        return retain_loss(model, batch)

    with clock.phase("impair"):
        impair = train_(
            model,
            Tagged([("retain", retain), ("noise", noise_batches * config.noise_copies)], generator),
            **config.budget("impair"),
            optimizer=optimizer_for(model, config, lr=config.impair_lr),
            step_loss=impair_loss,
            progress=request.progress,
            desc="unsir impair",
        )
    with clock.phase("repair"):
        repair = train_(
            model,
            retain,
            **config.budget("repair"),
            optimizer=optimizer_for(model, config, lr=config.repair_lr),
            step_loss=retain_loss,
            progress=request.progress,
            desc="unsir repair",
        )
    return {
        "method": "unsir",
        "forget_classes": classes,
        "steps": impair.steps + repair.steps,
        "impair_losses": list(impair.epoch_losses),
        "repair_losses": list(repair.epoch_losses),
        "seconds": clock.seconds(),
    }
