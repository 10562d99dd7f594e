"""One training loop shared by everything that trains: original models, retraining, baselines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import ForwardFn, default_forward
from dampen.core.progress import progress_bar

StepLoss = Callable[[nn.Module, Any], Tensor]
"""``step_loss(model, batch) -> scalar loss`` for one optimisation step."""


def cross_entropy_loss(forward: ForwardFn = default_forward) -> StepLoss:
    """The usual step loss: mean cross-entropy of ``forward(model, batch)``."""

    def loss(model: nn.Module, batch: Any) -> Tensor:
        logits, targets = forward(model, batch)
        return F.cross_entropy(logits.float(), targets)

    return loss


@dataclass(frozen=True)
class TrainLog:
    """Mean loss per epoch and the number of optimisation steps taken."""

    epoch_losses: tuple[float, ...]
    steps: int


def train_(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    step_loss: StepLoss | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainLog:
    """Train ``model`` in place for ``epochs`` passes over ``batches``.

    ``scheduler`` (if any) steps once per epoch. The model is left in train mode only while
    training; its previous mode is restored at the end.

    Raises:
        ValueError: if ``epochs`` is negative or the loss becomes NaN/inf.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    loss_fn = step_loss or cross_entropy_loss()
    was_training = model.training
    model.train()
    losses: list[float] = []
    steps = 0
    try:
        for epoch in range(epochs):
            total, n = 0.0, 0
            bar = progress_bar(batches, enabled=progress, desc=f"{desc} {epoch + 1}/{epochs}")
            for batch in bar:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise ValueError(f"{desc}: the loss became {loss.item()} at step {steps}")
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                n += 1
                steps += 1
            if scheduler is not None:
                scheduler.step()
            losses.append(total / max(n, 1))
    finally:
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    return TrainLog(tuple(losses), steps)
