"""Replay an SSD-family request from its stats: the same dampenings, without any search.

``alpha="auto"`` may dampen in several rounds, each with its own α on an ``I_Df`` measured on
the model as the earlier rounds left it; a request for several whole classes forgets them one
at a time, the importance of D updated in between. ``stats["alpha"]`` alone therefore does not
say what was done; ``stats["auto"]`` does, and :func:`replay_` applies it: per round, measure
``I_Df`` on the model as it is now and dampen with that round's α.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from dampen.core.batches import Batches, ForwardFn, loader_batch_size
from dampen.functional import dampen_model_
from dampen.importances.measure import measure
from dampen.importances.store import Importance
from dampen.methods.auto_alpha import CORRECTIVE
from dampen.methods.class_batches import ClassBatches
from dampen.methods.winning import WinningSamples

SSD_FAMILY = ("ssd", "lfssd", "assd", "alf")


def replay_(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    stats: Mapping[str, Any],
    forward: ForwardFn | None = None,
) -> None:
    """Apply the dampenings ``stats`` reports to ``model`` in place.

    Raises:
        ValueError: when ``stats`` is not an SSD-family request's, or the importance was made
            with another estimator.
    """
    method = stats.get("method")
    if method not in SSD_FAMILY:
        raise ValueError(f"only SSD-family requests can be replayed; these stats are {method!r}")
    if importance.estimator != stats["estimator"]:
        raise ValueError(
            f"the request used the {stats['estimator']!r} estimator; the importance passed "
            f"was computed with {importance.estimator!r}"
        )
    options = {
        "lambda_": float(stats["lambda"]),
        "exponent": float(stats.get("exponent", 1.0)),
        "upper": float(stats.get("upper", 1.0)),
    }
    auto = stats.get("auto")
    size = loader_batch_size(forget) or importance.batch_size or 1  # as the request chose
    if not isinstance(auto, Mapping) or ("rounds" not in auto and "per_class" not in auto):
        _rounds(model, forget, importance, [float(stats["alpha"])], options, forward)
        return
    if "per_class" in auto:
        remaining = importance
        classes = auto["per_class"]
        size = importance.batch_size or size
        for number, entry in enumerate(classes):
            batches = ClassBatches(forget, int(entry["label"]), size)
            alphas = [float(r["alpha"]) for r in entry["rounds"]]
            first = _rounds(model, batches, remaining, alphas, options, forward)
            if number < len(classes) - 1:
                first = first or _measure(model, batches, remaining, forward)
                remaining = remaining.subtract(first)
        return
    if auto.get("kind") in CORRECTIVE and auto.get("winning", 0) < auto.get("identified", 0):
        forget = WinningSamples(model, forget, forward, size)
    alphas = [float(r["alpha"]) for r in auto["rounds"]]
    _rounds(model, forget, importance, alphas, options, forward)


def _measure(
    model: nn.Module, forget: Batches, importance: Importance, forward: ForwardFn | None
) -> Importance:
    return measure(
        model, forget, estimator=importance.estimator, forward=forward, hash_values=False
    )


def _rounds(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    alphas: Sequence[float],
    options: Mapping[str, float],
    forward: ForwardFn | None,
) -> Importance | None:
    """Per α: measure ``I_Df`` on the model as it is now and dampen. Returns the first
    ``I_Df`` (``None`` when there was no round)."""
    first = None
    for alpha in alphas:
        imp_f = _measure(model, forget, importance, forward)
        first = first or imp_f
        if math.isfinite(alpha):
            dampen_model_(model, importance, imp_f, alpha=alpha, **options)
    return first
