"""``alpha="auto"``: the least dampening that reaches a forgetting target.

SSD's selection is nested in α: lowering α only adds parameters to the selected set, and the
factor β of a selected parameter does not depend on α. So the candidates are indexed by how
many parameters they select, ``k``, and ``α_k`` is the k-th largest finite ratio
``I_Df / I_D``. Each candidate costs an elementwise re-dampening from the original weights and
one forward pass over the forget set (and over the held-out sample when given); no importance
is recomputed. A bisection on ``k`` (log scale) finds the smallest k whose forget accuracy
meets the target.

Target (``forget_kind``):
- ``"class"``: forget accuracy at most ``tolerance`` (a model that never saw a class does not
  predict it);
- ``"samples"``: forget accuracy at most the original model's accuracy on the held-out sample
  plus ``tolerance`` (it should look like data the model never trained on);
- ``"auto"``: ``"class"`` when the forget set holds every training sample of each of its labels
  (read from the importance's label histogram), else ``"samples"``.

Guards against collapse: at most ``max_selected`` of all parameters are ever selected, and when
a held-out sample of retained data is given in class mode, its accuracy may not fall more than
``max_heldout_drop`` below the original's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dampen.batches import Batches, ForwardFn, default_forward
from dampen.functional import dampen_
from dampen.state import preserved
from dampen.store import Importance


@dataclass(frozen=True)
class AutoSettings:
    """What ``alpha="auto"`` aims for (fields of the SSD configs)."""

    forget_kind: str = "auto"
    tolerance: float = 0.01
    max_selected: float = 0.1
    max_heldout_drop: float = 0.02
    steps: int = 12


@dataclass
class _Probe:
    k: int
    alpha: float
    forget_acc: float
    heldout_acc: float | None


def accuracy(model: nn.Module, batches: Batches, forward: ForwardFn | None) -> float:
    """Share of samples whose arg-max prediction equals the label (argmax of soft labels)."""
    correct = total = 0
    fn = forward or default_forward
    with preserved(model, grad_all=False), torch.no_grad():
        for batch in batches:
            logits, targets = fn(model, batch)
            if targets.is_floating_point():
                targets = targets.argmax(dim=1)
            correct += int((logits.argmax(dim=1) == targets).sum())
            total += int(targets.shape[0])
    if total == 0:
        raise ValueError("cannot measure accuracy on an empty set")
    return correct / total


def forget_kind(imp_d: Importance, imp_f: Importance, requested: str) -> str:
    """Resolve ``"auto"`` into ``"class"`` or ``"samples"`` from the label histograms."""
    if requested != "auto":
        return requested
    d, f = imp_d.label_counts, imp_f.label_counts
    if d and f and all(d.get(label, 0) == count for label, count in f.items()):
        return "class"
    return "samples"


def _sorted_ratios(imp_d: Mapping[str, Tensor], imp_f: Mapping[str, Tensor]) -> Tensor:
    parts = []
    for name in imp_d:
        r = (imp_f[name] / imp_d[name]).reshape(-1)
        parts.append(r[torch.isfinite(r) | (imp_f[name].reshape(-1) > 0)])
    ratios = torch.cat(parts)
    ratios = torch.where(torch.isinf(ratios), torch.finfo(ratios.dtype).max, ratios)
    return ratios.sort(descending=True).values


class _Searcher:
    """Applies candidate k to the model (from saved weights) and measures it."""

    def __init__(
        self,
        model: nn.Module,
        imp_d: Importance,
        imp_f: Mapping[str, Tensor],
        *,
        lambda_: float,
        exponent: float,
        upper: float,
        forget: Batches,
        heldout: Batches | None,
        forward: ForwardFn | None,
    ) -> None:
        self.model = model
        self.imp_d = imp_d
        self.imp_f = imp_f
        self.kw = {"lambda_": lambda_, "exponent": exponent, "upper": upper}
        self.forget = forget
        self.heldout = heldout
        self.forward = forward
        self.saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.ratios = _sorted_ratios(imp_d, imp_f)
        self.probes: list[_Probe] = []

    def alpha_for(self, k: int) -> float:
        """The α selecting the ``k`` parameters of largest ratio (``ratio > α``; ties select
        fewer). ``k = 0`` gives α = inf, which selects nothing."""
        if k <= 0:
            return math.inf
        return float(self.ratios[k]) if k < len(self.ratios) else 0.0

    def apply(self, alpha: float) -> dict[str, int]:
        """Re-dampen the saved weights with ``alpha``; return selected counts per tensor."""
        counts = {}
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(self.saved[name])
                counts[name] = dampen_(
                    p, self.imp_d[name], self.imp_f[name], alpha=alpha, **self.kw
                )
        return counts

    def probe(self, k: int) -> _Probe:
        alpha = self.alpha_for(k)
        self.apply(alpha)
        heldout = accuracy(self.model, self.heldout, self.forward) if self.heldout else None
        found = _Probe(k, alpha, accuracy(self.model, self.forget, self.forward), heldout)
        self.probes.append(found)
        return found

    def restore(self) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(self.saved[name])


def search_alpha_(
    model: nn.Module,
    imp_d: Importance,
    imp_f: Importance,
    *,
    forget: Batches,
    heldout: Batches | None,
    forward: ForwardFn | None,
    settings: AutoSettings,
    lambda_: float,
    exponent: float,
    upper: float,
    fallback_alpha: Callable[[], float],
) -> tuple[float, dict[str, Any]]:
    """Find α for ``alpha="auto"``; the model is left with its original weights.

    Returns ``(alpha, report)``; the report says the target, the kind, what was measured at
    the chosen α and why the search stopped.
    """
    kind = forget_kind(imp_d, imp_f, settings.forget_kind)
    means_f = {n: imp_f[n] for n in imp_f}
    searcher = _Searcher(
        model,
        imp_d,
        means_f,
        lambda_=lambda_,
        exponent=exponent,
        upper=upper,
        forget=forget,
        heldout=heldout,
        forward=forward,
    )
    original = searcher.probe(0)
    report: dict[str, Any] = {"kind": kind, "original_forget_acc": original.forget_acc}
    if kind == "samples" and heldout is None:
        searcher.restore()
        report.update(reason="sample forgetting without heldout=: ASSD's percentile rule used")
        return fallback_alpha(), report
    if kind == "class":
        target = settings.tolerance
    else:
        target = (original.heldout_acc or 0.0) + settings.tolerance
    floor = (
        original.heldout_acc - settings.max_heldout_drop
        if original.heldout_acc is not None and kind == "class"
        else None
    )
    report.update(target_forget_acc=target, original_heldout_acc=original.heldout_acc)
    total = sum(p.numel() for p in model.parameters())
    cap = max(1, min(len(searcher.ratios), int(settings.max_selected * total)))

    def ok(p: _Probe) -> bool:
        return p.forget_acc <= target

    def safe(p: _Probe) -> bool:
        return floor is None or p.heldout_acc is None or p.heldout_acc >= floor

    if ok(original):
        chosen, reason = original, "the forget set already meets the target: nothing dampened"
    else:
        top = searcher.probe(cap)
        if not ok(top):
            # Forget accuracy is not strictly monotone in k: look below the cap too.
            tried = [top] + [
                searcher.probe(max(1, int(cap * 0.5 ** (i / 2)))) for i in (1, 2, 3, 4)
            ]
            chosen = min(tried, key=lambda p: (p.forget_acc, p.k))
            reason = "target not reached within max_selected: the lowest forget accuracy found"
        else:
            _, chosen = _boundary(searcher, original, top, ok, settings.steps)
            reason = "target reached with the fewest parameters found"
        if not safe(chosen):
            chosen, _ = _boundary(searcher, original, chosen, lambda p: not safe(p), settings.steps)
            reason = "held-out accuracy would drop too far: stopped before the target"
    searcher.restore()
    report.update(
        reason=reason,
        forget_acc=chosen.forget_acc,
        heldout_acc=chosen.heldout_acc,
        evaluations=len(searcher.probes),
        max_selected=settings.max_selected,
    )
    return chosen.alpha, report


def _log_mid(lo: int, hi: int) -> int:
    mid = round(math.sqrt(max(lo, 1) * hi))
    return min(max(mid, lo + 1), hi - 1)


def _boundary(
    searcher: _Searcher,
    below: _Probe,
    above: _Probe,
    is_above: Callable[[_Probe], bool],
    steps: int,
) -> tuple[_Probe, _Probe]:
    """Bisect k (log scale) between ``below`` (``is_above`` False) and ``above`` (True).

    Returns the last probe found on each side: ``(largest k below, smallest k above)``.
    """
    for _ in range(steps):
        lo, hi = below.k, above.k
        if hi - lo <= max(1, hi // 50):
            break
        probe = searcher.probe(_log_mid(lo, hi))
        if is_above(probe):
            above = probe
        else:
            below = probe
    return below, above
