"""``salun`` (Fan et al., ICLR 2024): random-label fine-tuning restricted to salient weights.

The saliency of a weight is the magnitude of the forget loss's gradient, summed over the
forget batches with the model in eval mode; the top ``threshold`` share of all weights
(pooled over every trainable parameter) is salient. Training then mixes retain batches with
randomly relabelled forget batches and changes only the salient weights: their gradients
are masked before each optimiser step and every other weight is restored after it, so
momentum and weight decay cannot move them either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import Batches, ForwardFn
from dampen.core.progress import progress_bar
from dampen.core.state import preserved
from dampen.methods._common import (
    Clock,
    budget_of,
    check_budget,
    check_fraction,
    check_optimizer,
    forward_of,
    optimizer_for,
    require_forget,
    require_retain,
    seeded_generator,
)
from dampen.methods.amnesiac import train_relabelled_
from dampen.registry import Request, register


@dataclass(frozen=True)
class SalUnConfig:
    """SalUn (authors' CIFAR-10 example: SGD lr 0.013, threshold 0.5, for 10 epochs, about
    7,800 steps; here 200 steps by default).

    Attributes:
        threshold: share of all trainable weights that is salient (and may change).
        steps: optimiser steps over the mixed batches (SPEC §4 "Fair budgets").
        epochs: when set, passes over Dr ∪ Df instead of ``steps``.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay (applied to the salient weights only).
    """

    threshold: float = 0.5
    steps: int = 200
    epochs: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.013
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        check_fraction("threshold", self.threshold)
        check_budget(self.steps, self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)


def saliency_masks(
    model: nn.Module,
    params: list[nn.Parameter],
    forget: Batches,
    forward: ForwardFn,
    threshold: float,
    *,
    progress: bool = False,
) -> list[Tensor]:
    """Boolean masks (one per parameter) of the largest forget-gradient magnitudes.

    Exactly ``max(1, round(threshold · n))`` of the ``n`` weights, pooled over all the
    parameters, are selected.
    """
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    with preserved(model, grad_all=False):
        for batch in progress_bar(forget, enabled=progress, desc="salun saliency"):
            logits, targets = forward(model, batch)
            loss = F.cross_entropy(logits.float(), targets)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for s, g in zip(sums, grads, strict=True):
                if g is not None:
                    s.add_(g.float())
    flat = torch.cat([s.abs().flatten() for s in sums])
    k = min(flat.numel(), max(1, round(threshold * flat.numel())))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.topk(flat, k, sorted=False).indices] = True
    parts = chosen.split([p.numel() for p in params])
    return [m.view_as(p) for m, p in zip(parts, params, strict=True)]


@register("salun", SalUnConfig)
def run_salun_(model: nn.Module, request: Request, config: SalUnConfig) -> dict[str, Any]:
    """Compute the saliency masks, then random-label training of the salient weights only."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "salun")
    require_forget(request)
    generator = seeded_generator(request.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True to train")
    with clock.phase("saliency"):
        masks = saliency_masks(
            model, params, request.forget, forward, config.threshold, progress=request.progress
        )

    optimizer = optimizer_for(model, config)
    kept = [p.detach().clone() for p in params]

    def mask_grads(*_: Any) -> None:
        for p, m in zip(params, masks, strict=True):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0)

    def restore_others(*_: Any) -> None:
        with torch.no_grad():
            for p, m, old in zip(params, masks, kept, strict=True):
                p.copy_(torch.where(m, p, old))

    handles = [
        optimizer.register_step_pre_hook(mask_grads),
        optimizer.register_step_post_hook(restore_others),
    ]
    try:
        with clock.phase("train"):
            log = train_relabelled_(
                model,
                retain,
                request,
                forward=forward,
                generator=generator,
                optimizer=optimizer,
                budget=budget_of(config),
                desc="salun",
            )
    finally:
        for handle in handles:
            handle.remove()
    salient = int(sum(int(m.sum()) for m in masks))
    return {
        "method": "salun",
        "salient": salient,
        "salient_fraction": salient / max(sum(p.numel() for p in params), 1),
        "steps": log.steps,
        "epoch_losses": list(log.epoch_losses),
        "seconds": clock.seconds(),
    }
