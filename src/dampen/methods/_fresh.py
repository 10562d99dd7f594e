"""Fresh (untrained) weights for a model: a factory's, or every layer re-initialised."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ModelFactory = Callable[[], nn.Module]
"""``factory() -> nn.Module``: builds a freshly initialised model of the same architecture."""


def _reset_fn(module: nn.Module) -> Callable[[], Any] | None:
    for attr in ("reset_parameters", "_reset_parameters"):
        fn = getattr(module, attr, None)
        if callable(fn):
            return fn
    return None


def reinitialise_(model: nn.Module) -> int:
    """Re-initialise every submodule of ``model`` in place, nested ones included.

    Calls ``reset_parameters()`` (or ``_reset_parameters()``, as ``nn.MultiheadAttention``
    has) on every module that defines it; BatchNorm running statistics are reset with it.
    All modules are checked before anything changes.

    Returns:
        The number of modules reset.

    Raises:
        ValueError: if a module holds parameters of its own but has no reset method; pass a
            ``model_factory`` for such models.
    """
    modules = list(model.named_modules())
    missing = [
        name or type(m).__name__
        for name, m in modules
        if any(True for _ in m.parameters(recurse=False)) and _reset_fn(m) is None
    ]
    if missing:
        raise ValueError(
            "cannot re-initialise the model: module(s) "
            f"{', '.join(repr(n) for n in missing)} hold parameters but have no "
            "reset_parameters(); pass model_factory=<callable returning a fresh model>"
        )
    count = 0
    with torch.no_grad():
        for _, m in modules:
            reset = _reset_fn(m)
            if reset is not None:
                reset()
                count += 1
    return count


def load_fresh_(model: nn.Module, factory: ModelFactory) -> None:
    """Overwrite ``model``'s parameters and buffers with those of ``factory()``.

    Raises:
        TypeError: if the factory does not return an ``nn.Module``.
        ValueError: if its parameter or buffer names or shapes differ from ``model``'s.
    """
    fresh = factory()
    if not isinstance(fresh, nn.Module):
        raise TypeError(f"model_factory must return an nn.Module; got {type(fresh).__name__}")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if ours != theirs:
        diff = sorted(set(ours.items()) ^ set(theirs.items()))[:5]
        raise ValueError(
            "model_factory built a model whose state differs from the model's "
            f"(names/shapes, first differences: {diff})"
        )
    model.load_state_dict(fresh.state_dict())


def refresh_(model: nn.Module, factory: ModelFactory | None) -> str:
    """Give ``model`` fresh weights in place; returns ``"model_factory"`` or ``"reset"``."""
    if factory is not None:
        load_fresh_(model, factory)
        return "model_factory"
    reinitialise_(model)
    return "reset"


def fresh_copy(model: nn.Module, factory: ModelFactory | None) -> nn.Module:
    """A deep copy of ``model`` with fresh weights, on the same device and dtype."""
    fresh = copy.deepcopy(model)
    refresh_(fresh, factory)
    return fresh


def check_factory(name: str, factory: Any) -> None:
    """Raise ``TypeError`` unless ``factory`` is None or callable."""
    if factory is not None and not callable(factory):
        raise TypeError(f"{name} must be a callable returning an nn.Module or None")
