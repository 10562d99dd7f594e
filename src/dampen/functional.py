"""Pure tensor maths of the SSD family (SPEC §1), shared by every SSD-style method.

- select parameter i where ``I_Df[i] > α · I_D[i]``;
- for selected i: ``θ_i ← β_i · θ_i`` with ``β_i = min((λ · I_D[i] / I_Df[i]) ** exponent, upper)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


def selection_mask(imp_d: Tensor, imp_f: Tensor, alpha: float) -> Tensor:
    """Boolean mask of the parameters SSD dampens: ``imp_f > alpha * imp_d``."""
    return imp_f > imp_d * alpha


def dampening_factors(
    imp_d: Tensor,
    imp_f: Tensor,
    *,
    alpha: float,
    lambda_: float = 1.0,
    exponent: float = 1.0,
    upper: float = 1.0,
) -> Tensor:
    """The multiplier per parameter: ``β`` where selected, 1 elsewhere (never NaN).

    A selected entry has ``imp_f > 0`` (as ``imp_f > α·imp_d ≥ 0``), so the ratio is finite;
    zero importance on D gives ``β = 0``.
    """
    mask = selection_mask(imp_d, imp_f, alpha)
    return _factors(imp_d, imp_f, mask, lambda_=lambda_, exponent=exponent, upper=upper)


def _factors(
    imp_d: Tensor, imp_f: Tensor, mask: Tensor, *, lambda_: float, exponent: float, upper: float
) -> Tensor:
    beta = (imp_d * lambda_).div_(torch.where(mask, imp_f, 1.0))
    if exponent != 1.0:
        beta.pow_(exponent)
    beta.clamp_(max=upper)
    return beta.masked_fill_(~mask, 1.0)


def dampen_(
    param: Tensor,
    imp_d: Tensor,
    imp_f: Tensor,
    *,
    alpha: float,
    lambda_: float = 1.0,
    exponent: float = 1.0,
    upper: float = 1.0,
) -> int:
    """Dampen ``param`` in place; return how many entries were selected.

    The product is formed in the importance's precision (fp32) and rounded once to the
    parameter's dtype, so a bf16/fp16 parameter loses nothing beyond its own precision.
    """
    if param.shape != imp_d.shape or param.shape != imp_f.shape:
        raise ValueError(
            f"shapes differ: parameter {tuple(param.shape)}, importance of D "
            f"{tuple(imp_d.shape)}, of the forget set {tuple(imp_f.shape)}"
        )
    mask = selection_mask(imp_d, imp_f, alpha)
    selected = int(mask.sum())
    if selected == 0:
        return 0
    factors = _factors(imp_d, imp_f, mask, lambda_=lambda_, exponent=exponent, upper=upper)
    with torch.no_grad():
        if param.dtype == factors.dtype:
            param.mul_(factors)
        else:
            param.copy_(param.to(factors.dtype) * factors)
    return selected


def dampen_model_(
    model: nn.Module,
    imp_d: Mapping[str, Tensor],
    imp_f: Mapping[str, Tensor],
    *,
    alpha: float,
    lambda_: float = 1.0,
    exponent: float = 1.0,
    upper: float = 1.0,
) -> dict[str, int]:
    """:func:`dampen_` every named parameter of ``model``; selected counts per parameter."""
    kw = {"alpha": alpha, "lambda_": lambda_, "exponent": exponent, "upper": upper}
    return {
        name: dampen_(p, imp_d[name], imp_f[name], **kw) for name, p in model.named_parameters()
    }


def assd_percentile_level(forget_samples: int, total_samples: int) -> float:
    """ASSD's percentile: ``p = 100 − ln(1 + 100·|Df|/|D|)``."""
    if forget_samples <= 0 or total_samples <= 0:
        raise ValueError("sample counts must be positive")
    return 100.0 - math.log1p(100.0 * forget_samples / total_samples)


def finite_ratios(imp_d: Iterable[Tensor], imp_f: Iterable[Tensor]) -> Tensor:
    """All finite ratios ``imp_f / imp_d`` pooled into one flat fp32 vector (NaN, ±inf dropped)."""
    parts = []
    for d, f in zip(imp_d, imp_f, strict=True):
        r = (f.float() / d.float()).reshape(-1)
        parts.append(r[torch.isfinite(r)])
    return torch.cat(parts) if parts else torch.empty(0)


def percentile(values: Tensor, q: float) -> float:
    """The ``q``-th percentile of a flat tensor, linear interpolation (NumPy's default).

    Uses ``kthvalue`` so it works on vectors of any length (``torch.quantile`` refuses
    more than 16 M elements).
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100]; got {q}")
    n = values.numel()
    if n == 0:
        raise ValueError("no finite values to take a percentile of")
    flat = values.reshape(-1)
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    low = float(flat.kthvalue(lo + 1).values)
    if hi == lo or pos == lo:
        return low
    high = float(flat.kthvalue(hi + 1).values)
    return low + (pos - lo) * (high - low)


def adaptive_alpha(
    imp_d: Mapping[str, Tensor],
    imp_f: Mapping[str, Tensor],
    forget_samples: int,
    total_samples: int,
) -> float:
    """ASSD's α: the percentile ``assd_percentile_level`` of all finite ``I_Df / I_D``."""
    names = list(imp_d)
    ratios = finite_ratios((imp_d[n] for n in names), (imp_f[n] for n in names))
    return percentile(ratios, assd_percentile_level(forget_samples, total_samples))
