"""``potion``: Potion (Schoepf, Foster, Brintrup 2024, "Potion: Towards Poison Unlearning"), the
published corrective baseline, as its authors' code runs it.

- **Importance** (their outlier-resistant loss-free variant): per batch b,
  ``|∂/∂θ mean_s ‖f(x_s)‖₂|`` on the logits f (the norm, not its square), summed over batches
  and divided by their number. D's importance is measured on the retain set (D without the
  identified samples), the identified samples' on themselves.
- **Selection** (ASSD's percentile rule on a share ``s``): the cutoff ``c`` is the
  ``100 − ln(1 + 100 s)`` percentile of the finite ratios ``I_Df / I_D`` over every parameter;
  parameters with ``I_Df > c · I_D`` are multiplied by ``min(1, I_D / I_Df)`` (λ = 1).
- **PTN search**: ``s`` starts at ``|Df| / (|Df| + |Dr|) / 25`` and grows ×1.1, each try from the
  original weights, until the accuracy on the identified samples (with the labels they were
  trained with) is at most ``rho`` times the original model's.

Potion needs the retain set (``retain=``), which dampen's own corrective request does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dampen.core.batches import Batches, ForwardFn, logits_only
from dampen.core.progress import progress_bar
from dampen.core.state import preserved, put_weights_
from dampen.functional import dampening_factors, selection_mask
from dampen.methods._common import Clock, check_int, check_positive, require_retain
from dampen.methods.auto_alpha import counted_accuracy
from dampen.registry import Request, register

START_DIVISOR = 25.0
"""The search's first share is ``|Df| / (|Df| + |Dr|)`` divided by this (the authors' code)."""


@dataclass(frozen=True)
class PotionConfig:
    """Potion's PTN search.

    Attributes:
        rho: the search stops once the accuracy on the identified samples is at most ``rho``
            times the original model's (the paper's ρ; its scripts sweep 0 to 0.75).
        step: the share's growth per try (the authors' 1.1).
        max_tries: tries before the search gives up and keeps the last one (the authors' 500).
    """

    rho: float = 0.1
    step: float = 1.1
    max_tries: int = 500

    def __post_init__(self) -> None:
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)):
            raise TypeError(f"rho must be a number; got {type(self.rho).__name__}")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1]; got {self.rho}")
        check_positive("step", self.step)
        if self.step <= 1.0:
            raise ValueError(f"step must be > 1 (the share must grow); got {self.step}")
        check_int("max_tries", self.max_tries)


def norm_importance(
    model: nn.Module, batches: Batches, forward: ForwardFn | None = None, *, progress: bool = False
) -> tuple[dict[str, Tensor], int]:
    """Potion's importance and the number of samples it saw: per batch the absolute gradient of
    the batch's mean logit norm, summed over batches and divided by their number.

    Raises:
        ValueError: if the batches hold no sample.
    """
    params = {n: p for n, p in model.named_parameters()}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = samples = 0
    with preserved(model):
        for batch in progress_bar(batches, enabled=progress, desc="importance (potion)"):
            logits = logits_only(model, batch, forward)
            if logits.shape[0] == 0:
                continue
            loss = logits.float().norm(dim=-1).mean()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    sums[name].add_(g.detach().float().abs())
            count += 1
            samples += int(logits.shape[0])
    if count == 0:
        raise ValueError("cannot measure an importance on an empty set")
    return {n: s.div_(count) for n, s in sums.items()}, samples


def percentile_of(share: float) -> float:
    """The percentile of the ratios that sets the cutoff: ``100 − ln(1 + 100·share)``, at least
    0 (every ratio)."""
    return max(0.0, 100.0 - math.log1p(100.0 * share))


def cutoff_of(imp_d: Mapping[str, Tensor], imp_f: Mapping[str, Tensor], percentile: float) -> float:
    """The ``percentile`` of the ratios ``I_Df / I_D`` over every parameter, the undefined (0/0)
    and infinite ones left out (numpy's linear interpolation, as the authors' code).

    Raises:
        ValueError: if no ratio is finite.
    """
    return float(np.percentile(finite_ratios(imp_d, imp_f), percentile))


def finite_ratios(imp_d: Mapping[str, Tensor], imp_f: Mapping[str, Tensor]) -> np.ndarray:
    """The finite ratios ``I_Df / I_D`` of every parameter, in float64 on the CPU.

    Raises:
        ValueError: if no ratio is finite.
    """
    parts = []
    for name, d in imp_d.items():
        ratio = (imp_f[name].double() / d.double()).reshape(-1)
        parts.append(ratio[torch.isfinite(ratio)].cpu())
    ratios = torch.cat(parts).numpy() if parts else np.empty(0)
    if ratios.size == 0:
        raise ValueError("no parameter has a finite importance ratio I_Df / I_D")
    return ratios


def dampen_from_(
    model: nn.Module,
    origin: Mapping[str, Tensor],
    imp_d: Mapping[str, Tensor],
    imp_f: Mapping[str, Tensor],
    cutoff: float,
) -> int:
    """Set the weights to ``origin`` dampened with selection weighting ``cutoff`` and λ = 1;
    return how many parameters were selected."""
    selected = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            selected += int(selection_mask(imp_d[name], imp_f[name], cutoff).sum())
            factors = dampening_factors(imp_d[name], imp_f[name], alpha=cutoff)
            wide = torch.promote_types(origin[name].dtype, factors.dtype)
            p.copy_((origin[name].to(wide) * factors.to(wide)).to(p.dtype))
    return selected


def ptn_search_(
    model: nn.Module,
    forget: Batches,
    imp_d: Mapping[str, Tensor],
    imp_f: Mapping[str, Tensor],
    *,
    start: float,
    config: PotionConfig,
    forward: ForwardFn | None = None,
) -> dict[str, Any]:
    """Run the PTN search on ``model`` in place (see the module docstring); the stats.

    On an error the model is back at its original weights.
    """
    origin = {n: p.detach().clone() for n, p in model.named_parameters()}
    right, total = counted_accuracy(model, forget, forward, "the forget set")
    original_acc = right / total
    goal = config.rho * original_acc
    share, tries, reached = start, 0, False
    percentile = cutoff = math.nan
    selected, acc = 0, original_acc
    try:
        ratios = finite_ratios(imp_d, imp_f)  # the same for every try
        for tries in range(1, config.max_tries + 1):
            percentile = percentile_of(share)
            cutoff = float(np.percentile(ratios, percentile))
            selected = dampen_from_(model, origin, imp_d, imp_f, cutoff)
            right, total = counted_accuracy(model, forget, forward, "the forget set")
            acc = right / total
            reached = acc <= goal
            # Stop at the goal, or at the 0th percentile (growing changes nothing more; out of
            # reach in practice: it needs a share near e^100 / 100).
            if reached or percentile == 0.0 or tries == config.max_tries:
                break
            share *= config.step
    except BaseException:
        put_weights_(model, origin)
        raise
    return {
        "rho": config.rho,
        "tries": tries,
        "reached": reached,
        "share": share,
        "percentile": percentile,
        "alpha": cutoff,
        "selected": selected,
        "selected_fraction": selected / max(1, sum(t.numel() for t in origin.values())),
        "forget_acc_before": original_acc,
        "forget_acc": acc,
    }


@register("potion", PotionConfig)
def run_potion_(model: nn.Module, request: Request, config: PotionConfig) -> dict[str, Any]:
    """Potion: its label-free importance on Dr and Df, then the PTN search (module docstring)."""
    retain = require_retain(request, "potion")
    clock = Clock()
    with clock.phase("importance"):
        imp_d, retained = norm_importance(model, retain, request.forward, progress=request.progress)
        imp_f, forgotten = norm_importance(model, request.forget, request.forward)
    with clock.phase("search"):
        stats = ptn_search_(
            model,
            request.forget,
            imp_d,
            imp_f,
            start=forgotten / (forgotten + retained) / START_DIVISOR,
            config=config,
            forward=request.forward,
        )
    return {"method": "potion", **stats, "seconds": clock.seconds()}


__all__ = [
    "PotionConfig",
    "cutoff_of",
    "dampen_from_",
    "finite_ratios",
    "norm_importance",
    "percentile_of",
    "ptn_search_",
]
