"""Replay an SSD-family request from its stats: the same dampenings, without any search.

``alpha="auto"`` may dampen in several rounds, each with its own α on an ``I_Df`` measured on
the model as the earlier rounds left it; a request for several whole classes forgets them one
at a time, the importance of D updated in between. ``stats["alpha"]`` alone therefore does not
say what was done; ``stats["auto"]`` does, and :func:`replay_` applies it: per round, measure
``I_Df`` on the model as it is now (of ``stats["auto"]["objective"]``: minus the log-odds for
class forgetting and corrective requests, the cross-entropy when the stats record none) and
dampen with that round's α (where the request ranked by the signed candidates,
``stats["auto"]["ranking"]``, only those: :mod:`dampen.methods.signed`). ``I_Df`` is
measured on the forget samples the request ranked
by: those whose label wins (corrective requests, and sample forgetting with ``heldout=``,
``stats["auto"]["winning"]``), found again on the model as the call received it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dampen.core.batches import Batches, ForwardFn
from dampen.core.losses import check_objective
from dampen.functional import dampen_model_
from dampen.importances.measure import measure
from dampen.importances.store import Importance
from dampen.methods.auto_alpha import CORRECTIVE
from dampen.methods.class_batches import ClassBatches
from dampen.methods.recentre import output_bias
from dampen.methods.signed import signed_candidates
from dampen.methods.ssd import (
    check_stored,
    class_batch_size,
    join_erased_copies,
    join_pasted_trigger,
    shuffled_batch_size,
    winners_batch_size,
)
from dampen.methods.winning import WinningSamples

SSD_FAMILY = ("ssd", "lfssd", "assd", "alf")


def replay_(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    stats: Mapping[str, Any],
    forward: ForwardFn | None = None,
    *,
    check_values: bool = True,
    heldout: Batches | None = None,
) -> None:
    """Apply the dampenings ``stats`` reports to ``model`` in place.

    Raises:
        ValueError: when ``stats`` is not an SSD-family request's (or lacks what a replay
            needs, e.g. the ``heldout`` a pasted trigger was pasted onto), or the importance
            was made with another estimator or for another model.
    """
    method = stats.get("method")
    if method not in SSD_FAMILY:
        raise ValueError(f"only SSD-family requests can be replayed; these stats are {method!r}")
    try:
        estimator = str(stats["estimator"])
        options = {
            "lambda_": float(stats["lambda"]),
            "exponent": float(stats["exponent"]),
            "upper": float(stats["upper"]),
        }
        alpha = float(stats["alpha"])
    except KeyError as e:
        raise ValueError(f"the stats lack {e.args[0]!r}: not a request to replay") from None
    check_stored(importance, model, estimator=estimator, check_values=check_values)
    first_param = next(model.parameters(), None)
    if first_param is not None:
        importance = importance.to(first_param.device)
    auto = stats.get("auto")
    if not isinstance(auto, Mapping) or ("rounds" not in auto and "per_class" not in auto):
        _rounds(model, forget, importance, [alpha], options, forward)
        return
    if "per_class" in auto:
        _classes(model, forget, importance, auto["per_class"], options, forward)
        return
    objective = _objective(auto)
    filtered = auto.get("kind") in CORRECTIVE and auto.get("winning", 0) < auto.get("identified", 0)
    fallback = bool(auto.get("erased_fallback"))
    copied = bool(auto.get("erased_winning")) and not fallback
    pasted = bool(auto.get("pasted_winning")) and not fallback
    if pasted and heldout is None:
        raise ValueError(
            "the request pasted the trigger onto its heldout= samples: pass the same heldout= "
            "to replay"
        )
    if auto.get("kind") == "samples" and _ranks_by_winners(auto):
        size = _regroup_size(model, forget, importance, forward)
        forget = _winners(model, forget, forward, size, auto, "forget_samples")
    if auto.get("kind") in CORRECTIVE and (filtered or copied or pasted):
        size = _regroup_size(model, forget, importance, forward)
        if filtered:
            forget = _winners(model, forget, forward, size, auto, "identified")
        identified = forget
        if copied:
            forget, made = join_erased_copies(model, forget, int(auto["erased_copies"]), size)
            _check_made(made, auto, "erased copies", ("erased_added", "erased_winning"))
        if pasted:
            assert heldout is not None  # checked above
            forget, made = join_pasted_trigger(model, forget, identified, heldout, size)
            _check_made(made, auto, "pasted images", ("pasted_added", "pasted_winning"))
            if made.get("trigger_window") != list(auto.get("trigger_window") or []):
                raise ValueError(
                    f"the trigger was located at {made.get('trigger_window')}, the request "
                    f"located it at {auto.get('trigger_window')}: another forget set, or stats "
                    "of another dampen version"
                )
    signed = _signed(auto)
    _rounds(model, forget, importance, _alphas(auto), options, forward, objective, signed)
    if auto.get("recentred"):
        _recentre(model, auto)
    elif "target_offset" in auto or "class_offsets" in auto:
        raise ValueError("the stats record offsets but no re-centring: not replayable")


def _regroup_size(
    model: nn.Module, forget: Batches, importance: Importance, forward: ForwardFn | None
) -> int:
    """The batch size the request regrouped its winning samples to (as ``ssd_`` finds it)."""
    whole = None if importance.batch_size else _measure(model, forget, importance, forward)
    return winners_batch_size(forget, importance, whole or importance)


def _winners(
    model: nn.Module,
    forget: Batches,
    forward: ForwardFn | None,
    size: int,
    auto: Mapping[str, Any],
    total_key: str,
) -> WinningSamples:
    """The forget samples whose label wins, found again and regrouped ``size`` at a time;
    refused unless as many of as many win as the request recorded (``winning`` of
    ``total_key``)."""
    winners = WinningSamples(model, forget, forward, size)
    if (winners.count, winners.total) != (auto.get("winning"), auto.get(total_key)):
        raise ValueError(
            f"{winners.count} of {winners.total} forget samples win, the request recorded "
            f"{auto.get('winning')} of {auto.get(total_key)}: another forget set or model, or "
            "stats of another dampen version"
        )
    return winners


def _ranks_by_winners(auto: Mapping[str, Any]) -> bool:
    """Whether a sample request ranked by the forget samples its model got right: some but
    not all of them (``winning`` is ``None`` when they could not be regrouped)."""
    winning, total = auto.get("winning"), auto.get("forget_samples")
    if winning is None or total is None:
        return False
    if not isinstance(winning, int) or not isinstance(total, int):
        raise ValueError(f"the stats record {winning!r} winning of {total!r} forget samples")
    return 0 < winning < total


def _recentre(model: nn.Module, auto: Mapping[str, Any]) -> None:
    """Add the recorded offsets to the output bias: the poison target's (``target_class``,
    ``target_offset``) or the label errors' classes' (``recentred_classes``,
    ``class_offsets``); nothing when they are 0."""
    classes = auto.get("classes")
    several = auto.get("kind") == "label_errors"
    mine, other = (
        ("recentred_classes", "target_class") if several else ("target_class", "recentred_classes")
    )
    if mine not in auto or other in auto:
        raise ValueError(f"the stats of a {auto.get('kind')} request re-centred without {mine}")
    if several:
        targets, offsets = auto.get("recentred_classes"), auto.get("class_offsets")
    else:
        targets, offsets = [auto.get("target_class")], [auto.get("target_offset")]
    if not isinstance(targets, list) or not isinstance(offsets, list) or not targets:
        raise ValueError("the stats record re-centred classes without their offsets")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in offsets)
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in [*targets, classes])
    if not integers or not numbers or len(targets) != len(offsets):
        raise ValueError("the stats record a re-centred target without its class or offset")
    assert isinstance(classes, int)  # checked above
    if len(set(targets)) != len(targets):
        raise ValueError(f"the stats re-centre a class twice: {targets}")
    for offset in offsets:
        if not math.isfinite(offset) or offset < 0:
            raise ValueError(f"the stats record a target offset of {offset}: it must be >= 0")
    if any(offsets) and not auto.get("rounds"):
        raise ValueError("the stats record a target offset but no dampening round")
    bias = output_bias(model, classes)
    if bias is None or not all(0 <= t < classes for t in targets):
        raise ValueError(f"the model has no output bias of {classes} classes to re-centre")
    with torch.no_grad():
        for target, offset in zip(targets, offsets, strict=True):
            bias[target] += float(offset)


def _objective(auto: Mapping[str, Any]) -> str:
    """What the request's ``I_Df`` differentiated (the cross-entropy before dampen recorded it)."""
    try:
        return check_objective(str(auto.get("objective", "cross_entropy")))
    except ValueError as e:
        raise ValueError(f"the stats record an unknown objective: {e}") from None


def _signed(auto: Mapping[str, Any]) -> bool:
    """Whether the request ranked by the signed candidates (``ranking``; SSD's when the stats
    record none)."""
    ranking = auto.get("ranking", "ssd")
    if ranking not in ("ssd", "signed"):
        raise ValueError(f"the stats record an unknown ranking: {ranking!r}")
    return ranking == "signed"


def _check_made(
    made: Mapping[str, Any], auto: Mapping[str, Any], what: str, keys: tuple[str, str]
) -> None:
    """Refuse a replay whose remade ``what`` differ from the request's."""
    if any(made[k] != auto.get(k) for k in keys):
        raise ValueError(
            f"the {what} differ from the request's ({made[keys[0]]} made, {made[keys[1]]} "
            f"winning; the stats say {auto.get(keys[0])} and {auto.get(keys[1])}): another "
            "forget set or heldout=, or stats of another dampen version"
        )


def _alphas(report: Mapping[str, Any]) -> list[float]:
    try:
        return [float(r["alpha"]) for r in report["rounds"]]
    except (KeyError, TypeError):
        raise ValueError(
            "the stats do not record the rounds of alpha='auto' (made by an older dampen?)"
        ) from None


def _classes(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    classes: Sequence[Mapping[str, Any]],
    options: Mapping[str, float],
    forward: ForwardFn | None,
) -> None:
    """A several-class request: class by class, the importance of D updated in between."""
    whole = None if importance.batch_size else _measure(model, forget, importance, forward)
    size = class_batch_size(importance, whole or importance)
    remaining = importance
    for number, entry in enumerate(classes):
        batches = ClassBatches(forget, int(entry["label"]), size)
        objective = _objective(entry)
        # the class's cross-entropy importance, on the model as the request measured it
        measured = (
            _measure(model, batches, remaining, forward) if number < len(classes) - 1 else None
        )
        signed = _signed(entry)
        _rounds(model, batches, remaining, _alphas(entry), options, forward, objective, signed)
        if measured is not None:
            remaining = remaining.subtract(measured)


def _measure(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    forward: ForwardFn | None,
    objective: str = "cross_entropy",
) -> Importance:
    return measure(
        model,
        forget,
        estimator=importance.estimator,
        forward=forward,
        hash_values=False,
        objective=objective,
        batch_size=shuffled_batch_size(importance),
    )


def _rounds(
    model: nn.Module,
    forget: Batches,
    importance: Importance,
    alphas: Sequence[float],
    options: Mapping[str, float],
    forward: ForwardFn | None,
    objective: str = "cross_entropy",
    signed: bool = False,
) -> None:
    """Per α: measure ``I_Df`` (of ``objective``) on the model as it is now and dampen (with
    ``signed``, only where that raises the forget set's loss, :mod:`dampen.methods.signed`)."""
    for alpha in alphas:
        imp_f = _measure(model, forget, importance, forward, objective)
        if not math.isfinite(alpha):
            continue
        ranked: Mapping[str, torch.Tensor] = imp_f
        if signed:
            ranked = signed_candidates(
                imp_f, importance, model, forget, forward, objective, **options
            )
        dampen_model_(model, importance, ranked, alpha=alpha, **options)
