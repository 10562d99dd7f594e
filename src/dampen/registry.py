"""One registry of unlearning methods: a name, a frozen config class and a function."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from dampen.core.batches import Batches, ForwardFn
from dampen.importances.store import Importance


@dataclass(frozen=True)
class Request:
    """Everything a method may use besides its config.

    Attributes:
        forget: batches of the forget set Df.
        importance: a stored importance of the training data D, if the caller has one.
        train: batches of D, to compute the importance on the fly.
        retain: batches of the retain set Dr (baselines only; SSD never needs it).
        heldout: a small sample the model never trained on, for ``alpha="auto"``.
        forward: ``forward(model, batch) -> (logits, targets)``, or None for the default.
        original: the caller's model, untouched (a teacher for distillation baselines).
        progress: show progress bars.
        seed: seed for anything random the method does.
        check_values: refuse a stored importance computed for other weights (stale).
    """

    forget: Batches
    importance: Importance | None = None
    train: Batches | None = None
    retain: Batches | None = None
    heldout: Batches | None = None
    forward: ForwardFn | None = None
    original: nn.Module | None = None
    progress: bool = False
    seed: int = 0
    check_values: bool = True


MethodFn = Callable[[nn.Module, Request, Any], dict[str, Any]]
"""``run_(model, request, config) -> stats``: unlearns ``model`` in place."""

FORGET_IMPORTANCE = "forget_importance"
"""Stats key under which a method may hand back the forget set's importance; ``unlearn``
moves it to :attr:`dampen.UnlearnResult.forget_importance`."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the name users pass as ``method=``.
        config_cls: frozen dataclass with the method's defaults and validation.
        run: the function that unlearns a model in place and returns its stats.
        validates_first: True when ``run`` checks all its inputs before changing the model,
            so ``inplace=True`` needs no scratch copy.
    """

    name: str
    config_cls: type
    run: MethodFn
    validates_first: bool = False

    def make_config(self, options: dict[str, Any]) -> Any:
        """Build the config from keyword options, naming any unknown one."""
        fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TypeError(
                f"method {self.name!r} has no option {', '.join(unknown)}; "
                f"its options are: {', '.join(sorted(fields)) or 'none'}"
            )
        return self.config_cls(**options)


_REGISTRY: dict[str, MethodSpec] = {}

F = TypeVar("F", bound=MethodFn)


def register(name: str, config_cls: type, *, validates_first: bool = False) -> Callable[[F], F]:
    """Decorator: register ``run`` under ``name`` with its config class."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls for {name!r} must be a dataclass")

    def decorate(run: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"a method named {name!r} is already registered")
        _REGISTRY[name] = MethodSpec(name, config_cls, run, validates_first)
        return run

    return decorate


def get(name: str) -> MethodSpec:
    """The method registered as ``name``; ``ValueError`` listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(names())}") from None


def names() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_REGISTRY)
