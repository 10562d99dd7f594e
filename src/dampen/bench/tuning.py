"""Tuning a method on validation data (SPEC §4 "Fair budgets"), never on test metrics.

A :class:`~dampen.bench.config.MethodSpec` with a ``grid`` is run at every point of the grid
on the first seed's original model, and the point with the lowest validation *score* is used
for every seed. The score adds a forget term, which depends on the scenario, to the drop in
retain-validation accuracy (original minus unlearned, if positive):

* full-class: the accuracy on validation samples of the forgotten class (a retrained model
  gets them wrong);
* sub-class: ``|accuracy on Df − accuracy on validation samples of the forgotten fine class|``
  (a retrained model treats Df like unseen samples of that class; note that erasing the fine
  class altogether scores as well as keeping it at its unseen level);
* random: ``|mean true-class probability on Df − the same on the validation samples|``, the
  gap a membership attack reads; Df's accuracy is never looked at;
* poison and label errors: the accuracy on Df with the corrupted labels it was trained with
  (what should stop winning on the identified samples). The trigger and the true labels stay
  unknown to the tuning, as they are to a model owner.

Ties go to the cheaper point (fewer optimiser steps). A grid may hold ``budget``: a share of
the original training's optimiser steps, which sets the method's step budget
(:func:`resolve_budget`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from dampen.eval.functional import accuracy
from dampen.eval.report import Outputs, collect_outputs
from dampen.methods.auto_alpha import CORRECTIVE
from dampen.registry import get

BUDGET_OPTION = "budget"
"""The bench-only option holding a share of the original training's optimiser steps."""


def budget_fields(method: str) -> tuple[str, ...]:
    """The config fields a budget sets: ``BUDGET_FIELDS`` of the method's config, else
    ``("steps",)``.

    Raises:
        ValueError: if the method's config has none of them.
    """
    config_cls = get(method).config_cls
    fields = tuple(getattr(config_cls, "BUDGET_FIELDS", ("steps",)))
    known = getattr(config_cls, "__dataclass_fields__", {})
    missing = [f for f in fields if f not in known]
    if missing:
        raise ValueError(f"method {method!r} has no step budget to set (no field {missing[0]!r})")
    return fields


def original_steps(epochs: int, batch_size: int, samples: int) -> int:
    """Optimiser steps of the original training: ``epochs · ⌈samples / batch_size⌉``."""
    return epochs * math.ceil(samples / batch_size)


def resolve_budget(
    method: str, options: Mapping[str, Any], train_steps: int
) -> tuple[dict[str, Any], int | None]:
    """``options`` with ``budget`` (a share of ``train_steps``) replaced by the method's step
    fields, and the steps it gives (``None`` when there is no budget option).

    Raises:
        ValueError: if the budget is not in (0, 1], the method has no step budget, or the
            options also set steps or epochs.
    """
    out = dict(options)
    if BUDGET_OPTION not in out:
        return out, None
    fields = budget_fields(method)
    clashes = [k for k in _budget_keys(fields) if out.get(k) is not None]
    if clashes:
        raise ValueError(f"budget and {clashes[0]} both set the budget of {method!r}: give one")
    share = out.pop(BUDGET_OPTION)
    check_share(share, BUDGET_OPTION)
    steps = max(1, round(share * train_steps))
    for name in fields:
        out[name] = steps
    return out, steps


def check_share(value: Any, where: str) -> None:
    """Raise unless ``value`` is a share of the original training's steps in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"{where} must be a share of the original training's steps in (0, 1]; got {value!r}"
        )


def _budget_keys(fields: tuple[str, ...]) -> tuple[str, ...]:
    """Every option that sets a budget given the method's step ``fields``."""
    return (*fields, "epochs", *(f.replace("_steps", "_epochs") for f in fields))


def with_point(method: str, base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """A grid point over a method's configured options; a point's ``budget`` replaces any
    step or epoch budget the options set."""
    out = dict(base)
    if BUDGET_OPTION in point:
        for key in _budget_keys(budget_fields(method)):
            out.pop(key, None)
    out.update(point)
    return dict(sorted(out.items()))


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


@dataclass(frozen=True)
class ValidationSplits:
    """What the score reads, as batch iterables.

    Attributes:
        kind: the scenario kind.
        retain: validation samples of the retained classes (all of them for random and
            corrective scenarios).
        forget: validation samples of the forgotten class (``None`` for random and
            corrective scenarios).
        forget_train: the forget set Df (read in sub-class, random and corrective scenarios).
    """

    kind: str
    retain: Iterable[Any]
    forget: Iterable[Any] | None
    forget_train: Iterable[Any] | None


def _acc(out: Outputs) -> float:
    return accuracy(out.logits, out.targets)


def _true_probability(out: Outputs) -> float:
    return float(out.probs().gather(1, out.targets.long()[:, None]).mean())


def validation_figures(model: nn.Module, splits: ValidationSplits) -> dict[str, float]:
    """Retain-validation accuracy and the scenario's forget term (see the module docstring)."""
    retain = collect_outputs(model, splits.retain)
    figures = {"retain_val": _acc(retain)}
    if splits.kind == "full_class":
        if splits.forget is None:
            raise ValueError("full-class tuning needs validation samples of the forgotten class")
        figures["forget_val"] = _acc(collect_outputs(model, splits.forget))
        figures["forget_term"] = figures["forget_val"]
    elif splits.kind == "sub_class":
        if splits.forget is None or splits.forget_train is None:
            raise ValueError("sub-class tuning needs validation samples of the forgotten class")
        figures["forget_val"] = _acc(collect_outputs(model, splits.forget))
        forget_train = _acc(collect_outputs(model, splits.forget_train))
        figures["forget_term"] = abs(forget_train - figures["forget_val"])
    elif splits.kind in CORRECTIVE:
        if splits.forget_train is None:
            raise ValueError("corrective tuning needs the forget set")
        # Df carries the corrupted labels: what should no longer win on the identified samples.
        figures["forget_term"] = _acc(collect_outputs(model, splits.forget_train))
    else:
        if splits.forget_train is None:
            raise ValueError("random tuning needs the forget set")
        df = _true_probability(collect_outputs(model, splits.forget_train))
        figures["confidence_gap"] = df - _true_probability(retain)
        figures["forget_term"] = abs(figures["confidence_gap"])
    return figures


def score(figures: Mapping[str, float], original_retain_val: float) -> float:
    """Forget term plus the drop in retain-validation accuracy (lower is better)."""
    drop = max(0.0, original_retain_val - figures["retain_val"])
    return float(figures["forget_term"] + drop)


def choose(points: Sequence[Mapping[str, Any]]) -> int:
    """Index of the best point: the lowest score (to 4 decimals), then the fewest steps, then
    the earliest. Points without a score (failed) are never chosen.

    Raises:
        ValueError: if no point has a score.
    """
    scored = [
        (round(float(p["score"]), 4), float(p.get("steps") or 0), i)
        for i, p in enumerate(points)
        if p.get("score") is not None and math.isfinite(float(p["score"]))
    ]
    if not scored:
        raise ValueError("no grid point finished: nothing to choose")
    return min(scored)[2]


def check_grid(grid: Any, where: str) -> dict[str, tuple[Any, ...]]:
    """A grid as ``{option: (value, ...)}``: non-empty value lists, budgets in (0, 1].

    Raises:
        ValueError: naming ``where`` and the faulty key.
    """
    if not isinstance(grid, Mapping):
        raise ValueError(f"{where}: must be a mapping of option -> list of values")
    out: dict[str, tuple[Any, ...]] = {}
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{where}[{key!r}]: must be a non-empty list of values")
        if key == BUDGET_OPTION:
            for v in values:
                check_share(v, f"{where}[{key!r}]")
        out[str(key)] = tuple(values)
    return out


__all__ = [
    "BUDGET_OPTION",
    "ValidationSplits",
    "budget_fields",
    "check_grid",
    "choose",
    "grid_points",
    "original_steps",
    "resolve_budget",
    "score",
    "validation_figures",
]
