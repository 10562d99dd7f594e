"""The signed ranking of ``alpha="auto"`` in class forgetting, and in sample forgetting with
held-out data (there the signs come from the samples the ranking's importance was measured on:
the winners, :mod:`dampen.methods.winning`, when the request ranks by them).

SSD's importances are squared gradients: they say how much the forget set's loss depends on a
parameter, not in which direction. Dampening multiplies a parameter by ``β_i``, by
``Δθ_i = −(1 − β_i) θ_i``, which changes the forget set's loss by about ``g_i Δθ_i`` (``g``
its gradient summed over Df). With ``β_i ≤ 1`` (always, unless ``upper > 1``) the parameter
shrinks and the loss rises only where ``g_i θ_i < 0``; where ``g_i θ_i > 0`` the parameter
works against the class (a negative weight into its logit, say), and dampening it makes the
class more recognised, not less. (Where ``upper > 1`` lets ``β_i`` exceed 1 the parameter
grows, and the signs swap.) The signed ranking keeps SSD's candidates and their order but
drops those that do not raise the loss (their ``I_Df`` set to zero, so no α selects them).

On the wide digits CNN (seed 2, class 4, no ``heldout=``) SSD's ranking stopped with 58.6 %
of the class recognised; the signed ranking forgot it (0 %) at 1.5 points of retained
accuracy (``benchmarks/rankings_alone.py``). Neither ranking is better on every class, so
``alpha="auto"`` searches with both (:func:`dampen.methods.auto_alpha.auto_dampen_`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dampen.core.batches import Batches, ForwardFn, default_forward
from dampen.core.losses import sum_loss
from dampen.core.state import preserved
from dampen.functional import dampening_factors
from dampen.importances.store import Importance


def gradient_sums(
    model: nn.Module,
    batches: Batches,
    forward: ForwardFn | None,
    objective: str,
    names: frozenset[str] | None = None,
) -> dict[str, Tensor]:
    """The gradient of ``objective`` summed over every sample of ``batches`` (eval mode; the
    model's modes, flags and gradients are left as they were), per parameter name in
    ``names`` (default: every parameter), accumulated in fp64."""
    fn = forward or default_forward
    params = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params}
    with preserved(model):
        for batch in batches:
            logits, targets = fn(model, batch)
            grads = torch.autograd.grad(
                sum_loss(logits, targets, objective), [p for _, p in params], allow_unused=True
            )
            for (name, _), grad in zip(params, grads, strict=True):
                if grad is not None:
                    sums[name] += grad.detach().double()
    return sums


def first_order_sums(
    imp_f: Importance,
    model: nn.Module,
    batches: Batches,
    forward: ForwardFn | None,
    objective: str,
) -> Mapping[str, Tensor]:
    """The per-sample gradients of Df summed: ``shuffled_sq``'s own sums when ``imp_f`` holds
    them (added sample by sample in fp64 on the CPU, so the same in any loader order), else
    one backward pass (each batch's gradient summed in the parameters' precision, so for
    ``per_sample`` a sign within rounding of zero may depend on how the loader batches Df)."""
    if imp_f.firsts is not None:
        return imp_f.firsts
    return gradient_sums(model, batches, forward, objective, frozenset(imp_f.sums))


def raising_only(
    imp_f: Mapping[str, Tensor],
    imp_d: Mapping[str, Tensor],
    model: nn.Module,
    sums: Mapping[str, Tensor],
    *,
    lambda_: float,
    exponent: float,
    upper: float,
) -> dict[str, Tensor]:
    """``imp_f`` with zero wherever dampening would not raise the forget set's loss to first
    order: ``g_i θ_i >= 0`` (``g`` = ``sums``) where the factor ``β_i`` is at most 1, and
    ``g_i θ_i <= 0`` where ``upper > 1`` lets it exceed 1 (the parameter grows)."""
    weights = dict(model.named_parameters())
    out = {}
    for name, imp in imp_f.items():
        theta = weights[name].detach().to(device=imp.device, dtype=torch.float64)
        slope = sums[name].to(device=imp.device, dtype=torch.float64) * theta
        raises = slope < 0
        if upper > 1.0:  # β > 1 where λ·I_D/I_Df (to the exponent) exceeds 1
            beta = dampening_factors(
                imp_d[name], imp, alpha=0.0, lambda_=lambda_, exponent=exponent, upper=upper
            )
            raises = torch.where(beta > 1.0, slope > 0, raises)
        out[name] = torch.where(raises, imp, torch.zeros_like(imp))
    return out


def signed_candidates(
    imp_f: Importance,
    imp_d: Mapping[str, Tensor],
    model: nn.Module,
    batches: Batches,
    forward: ForwardFn | None,
    objective: str,
    *,
    lambda_: float,
    exponent: float,
    upper: float,
) -> dict[str, Tensor]:
    """The signed ranking's candidates for ``model`` as it is now: ``imp_f`` (measured on
    ``batches`` with ``objective``) where dampening raises the forget set's loss to first order
    (:func:`first_order_sums`, :func:`raising_only`). What the search ranks by in each round
    and what :func:`dampen.replay` dampens with."""
    sums = first_order_sums(imp_f, model, batches, forward, objective)
    return raising_only(
        imp_f.tensors(), imp_d, model, sums, lambda_=lambda_, exponent=exponent, upper=upper
    )
