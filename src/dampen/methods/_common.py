"""Helpers shared by the baseline methods: config checks, request access, optimisers, timing."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

import torch
from torch import Tensor, nn

from dampen.core.batches import Batches, ForwardFn, default_forward
from dampen.methods.training import Budget, TrainLog
from dampen.registry import Request

OPTIMIZERS = ("sgd", "adam")
"""Optimiser names a baseline config accepts."""


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise unless ``value`` is an int ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")


def check_positive(name: str, value: Any) -> None:
    """Raise unless ``value`` is a finite number ``> 0``."""
    _check_real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")


def check_non_negative(name: str, value: Any) -> None:
    """Raise unless ``value`` is a finite number ``>= 0``."""
    _check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")


def check_fraction(name: str, value: Any, *, upper_open: bool = False) -> None:
    """Raise unless ``0 < value <= 1`` (``< 1`` with ``upper_open``)."""
    _check_real(name, value)
    if value <= 0 or value > 1 or (upper_open and value == 1):
        bound = "< 1" if upper_open else "<= 1"
        raise ValueError(f"{name} must be > 0 and {bound}; got {value}")


def check_budget(steps: Any, epochs: Any) -> None:
    """Check a training budget: ``steps`` an int >= 1, ``epochs`` None or an int >= 1."""
    check_int("steps", steps)
    if epochs is not None:
        check_int("epochs", epochs)


def budget_of(config: Any, phase: str | None = None) -> Budget:
    """``{"epochs": n}`` when a config sets ``epochs``, else ``{"steps": config.steps}``:
    the keyword budget for :func:`dampen.methods.training.train_`. With ``phase`` the fields
    are ``<phase>_epochs`` and ``<phase>_steps``."""
    prefix = f"{phase}_" if phase else ""
    epochs = getattr(config, f"{prefix}epochs")
    if epochs is not None:
        return {"epochs": int(epochs)}
    return {"steps": int(getattr(config, f"{prefix}steps"))}


def check_optimizer(
    optimizer: Any, lr: Any, momentum: Any, weight_decay: Any, *, lr_name: str = "lr"
) -> None:
    """Check the optimiser settings every baseline config carries."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    check_positive(lr_name, lr)
    _check_real("momentum", momentum)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be >= 0 and < 1; got {momentum}")
    check_non_negative("weight_decay", weight_decay)


def make_optimizer(
    model: nn.Module, *, kind: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over the model's trainable parameters.

    Raises:
        ValueError: if no parameter requires grad.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True to train")
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def optimizer_for(
    model: nn.Module, config: Any, *, lr: float | None = None
) -> torch.optim.Optimizer:
    """:func:`make_optimizer` from a config's ``optimizer``, ``lr``, ``momentum`` and
    ``weight_decay`` fields (``lr`` overrides the config's)."""
    return make_optimizer(
        model,
        kind=config.optimizer,
        lr=config.lr if lr is None else lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def train_stats(method: str, log: TrainLog, clock: Clock) -> dict[str, Any]:
    """The stats of a method with one training phase."""
    return {
        "method": method,
        "steps": log.steps,
        "epoch_losses": list(log.epoch_losses),
        "seconds": clock.seconds(),
    }


class RetainRequired(ValueError):
    """A method that trains on the retain set was called without ``retain=``."""


def require_retain(request: Request, method: str) -> Batches:
    """The retain set, or a :class:`RetainRequired` telling the caller to pass ``retain=``."""
    if request.retain is None:
        raise RetainRequired(
            f"method {method!r} needs the retain set: pass retain=<batches of Dr> to "
            "dampen.unlearn (SSD-family methods do not need it)"
        )
    return request.retain


def require_forget(request: Request) -> Any:
    """The first batch of the forget set; ``ValueError`` if the forget set is empty."""
    for batch in request.forget:
        return batch
    raise ValueError("the forget set is empty")


def forward_of(request: Request) -> ForwardFn:
    """The caller's ``forward`` or :func:`dampen.core.batches.default_forward`."""
    return request.forward or default_forward


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for a method's own random draws (labels, batch order)."""
    return torch.Generator().manual_seed(seed)


def random_other_labels(targets: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """Replace every label with a uniformly drawn *different* class.

    Raises:
        ValueError: if the model has fewer than two classes.
    """
    if num_classes < 2:
        raise ValueError(f"relabelling needs at least 2 classes; the model has {num_classes}")
    shift = torch.randint(1, num_classes, tuple(targets.shape), generator=generator)
    return (targets.cpu().long() + shift).remainder(num_classes).to(targets.device)


def freeze_(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with no parameter requiring grad; returns it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` (a distillation teacher)."""
    return freeze_(copy.deepcopy(model))


class Clock:
    """Wall-clock seconds per phase plus ``"total"`` since construction."""

    def __init__(self) -> None:
        self._start = perf_counter()
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block under ``name`` (repeated phases add up)."""
        t = perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + perf_counter() - t

    def seconds(self) -> dict[str, float]:
        """The phases timed so far and the total."""
        return {**self._seconds, "total": perf_counter() - self._start}
