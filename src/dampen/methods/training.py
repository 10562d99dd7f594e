"""One training loop shared by everything that trains: original models, retraining, baselines."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from torch import Tensor, nn

from dampen.core.batches import ForwardFn, default_forward
from dampen.core.losses import mean_loss
from dampen.core.progress import progress_bar

StepLoss = Callable[[nn.Module, Any], Tensor]
"""``step_loss(model, batch) -> scalar loss`` for one optimisation step."""


def cross_entropy_loss(forward: ForwardFn = default_forward) -> StepLoss:
    """The usual step loss: mean cross-entropy of ``forward(model, batch)`` (per sample, then
    averaged; see :mod:`dampen.core.losses` for token sequences)."""

    def loss(model: nn.Module, batch: Any) -> Tensor:
        return mean_loss(*forward(model, batch))

    return loss


class Budget(TypedDict, total=False):
    """How long :func:`train_` trains: ``{"epochs": n}`` or ``{"steps": n}``."""

    epochs: int
    steps: int


@dataclass(frozen=True)
class TrainLog:
    """Mean loss per epoch and the number of optimisation steps taken."""

    epoch_losses: tuple[float, ...]
    steps: int


def train_(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    step_loss: StepLoss | None = None,
    progress: bool = False,
    desc: str = "train",
    stop: Callable[[], bool] | None = None,
    eval_mode: bool = False,
) -> TrainLog:
    """Train ``model`` in place for ``epochs`` passes over ``batches``, or for exactly
    ``steps`` optimisation steps (as many passes as that takes, the last one cut short).

    ``scheduler`` (if any) steps once per pass. ``stop`` (if any) is asked after every step
    and ends training when it returns True. The model is in train mode while training (in
    eval mode with ``eval_mode``, so BatchNorm statistics and dropout stay as they are); its
    previous mode is restored at the end.

    Raises:
        ValueError: unless exactly one of ``epochs`` / ``steps`` is given and ``>= 0``, if
            ``steps`` is positive but ``batches`` yields nothing, or if the loss becomes
            NaN/inf.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("pass exactly one of epochs= and steps=")
    budget = epochs if steps is None else steps
    if budget is None or budget < 0:
        raise ValueError(f"{'epochs' if steps is None else 'steps'} must be >= 0, got {budget}")
    loss_fn = step_loss or cross_entropy_loss()
    was_training = model.training
    model.train(not eval_mode)
    losses: list[float] = []
    steps_done = 0
    passes = epochs if epochs is not None else math.inf

    def finished() -> bool:
        return (steps is not None and steps_done >= steps) or (stop is not None and stop())

    try:
        epoch = 0
        done = steps == 0
        while epoch < passes and not done:
            total, n = 0.0, 0
            where = f"{epoch + 1}/{epochs}" if epochs is not None else f"{steps_done}/{steps} steps"
            bar = progress_bar(batches, enabled=progress, desc=f"{desc} {where}")
            for batch in bar:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise ValueError(f"{desc}: the loss became {loss.item()} at step {steps_done}")
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                n += 1
                steps_done += 1
                done = finished()
                if done:
                    break
            if n == 0 and steps is not None:
                raise ValueError(f"{desc}: the batches are empty; cannot take {steps} steps")
            if scheduler is not None:
                scheduler.step()
            losses.append(total / max(n, 1))
            epoch += 1
    finally:
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    return TrainLog(tuple(losses), steps_done)
