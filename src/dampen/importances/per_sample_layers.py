"""Per-sample squared gradients layer by layer, for models built of common layers.

For a model whose every parameter sits in a ``Linear``, ``Conv1d/2d`` (zero padding),
eval-mode ``BatchNorm`` or ``LayerNorm``, the per-sample gradient of each weight is a product
of the layer's input and the gradient of its output. One backward pass of ``sum_s ℓ_s``
provides the output gradients; it runs with the parameters frozen, so it computes no weight
gradient at all, only the gradients that flow between layers. The squares are then summed
without keeping every sample's gradient at once: a ``Linear`` on one vector per sample needs
none (``Σ_s (g_s x_sᵀ)² = (g²)ᵀ x²``), and a convolution forms its per-sample gradients a few
MiB at a time and folds their squares in while they are still in cache: on many output
positions as the weight gradient of one convolution with the samples as groups, on few as
matrix products of the unfolded input, a block of output channels at a time. Samples must not
interact (true in eval mode), which the ``per_sample`` estimator assumes anyway.

:func:`supports` says whether a model qualifies; otherwise the estimator uses ``vmap``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn import grad as conv_grad

from dampen.core.batches import detached

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _layer_ok(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, _CONVS):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, _NORMS):
        return (not module.training) and module.running_mean is not None
    return isinstance(module, nn.LayerNorm)


def supports(model: nn.Module) -> bool:
    """True when every parameter belongs to a layer this module handles."""
    covered: set[int] = set()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if not _layer_ok(module):
            return False
        covered.update(id(p) for p in own)
    return all(id(p) in covered for p in model.parameters())


def _conv_unfold(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """``[N, C·k, L]`` patches of the input, as the convolution sees them."""
    k, d, s = module.kernel_size, module.dilation, module.stride
    p = module.padding
    if not isinstance(p, tuple):
        raise ValueError(f"unsupported padding {p!r}")
    if x.dim() == 4:
        return F.unfold(x, k, d, p, s)
    # 1-d: a 2-d unfold over a height of one
    return F.unfold(x.unsqueeze(2), (1, k[0]), (1, d[0]), (0, p[0]), (1, s[0]))


def _squares(module: nn.Module, x: Tensor, g: Tensor) -> dict[str, Tensor]:
    """Per-sample gradients ``{param name: [N, *shape]}`` of one call of ``module``."""
    n = x.shape[0]
    out: dict[str, Tensor] = {}
    if isinstance(module, nn.Linear):
        x2 = x.reshape(n, -1, x.shape[-1])
        g2 = g.reshape(n, -1, g.shape[-1])
        out["weight"] = torch.einsum("nlo,nli->noi", g2, x2)
        if module.bias is not None:
            out["bias"] = g2.sum(dim=1)
    elif isinstance(module, _CONVS):
        groups = module.groups
        cols = _conv_unfold(module, x)  # [N, C·k, L]
        grads = g.reshape(n, g.shape[1], -1)  # [N, O, L]
        cols = cols.reshape(n, groups, cols.shape[1] // groups, cols.shape[2])
        grads = grads.reshape(n, groups, grads.shape[1] // groups, grads.shape[2])
        w = torch.einsum("ngol,ngkl->ngok", grads, cols)
        out["weight"] = w.reshape(n, *module.weight.shape)
        if module.bias is not None:
            out["bias"] = g.reshape(n, g.shape[1], -1).sum(dim=2)
    elif isinstance(module, _NORMS):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = module.running_mean.view(shape)  # type: ignore[union-attr]
        var = module.running_var.view(shape)  # type: ignore[union-attr]
        xhat = (x - mean) / torch.sqrt(var + module.eps)
        if module.weight is not None:
            out["weight"] = (g * xhat).reshape(n, x.shape[1], -1).sum(dim=2)
        if module.bias is not None:
            out["bias"] = g.reshape(n, x.shape[1], -1).sum(dim=2)
    elif isinstance(module, nn.LayerNorm):
        dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        xhat = (x - mean) / torch.sqrt(var + module.eps)
        lead = x.dim() - len(module.normalized_shape)
        sum_dims = tuple(range(1, lead))
        if module.weight is not None:
            prod = g * xhat
            out["weight"] = prod.sum(dim=sum_dims) if sum_dims else prod
        if module.bias is not None:
            out["bias"] = g.sum(dim=sum_dims) if sum_dims else g
    return out


_CHUNK = 1 << 21
"""How many gradient entries (8 MiB in fp32) a convolution forms at a time when it folds its
per-sample gradients in: as many samples (or, with few positions, output channels of a few
samples) as fit, at least one."""

_MANY_POSITIONS = 100
"""Output positions from which a convolution forms its per-sample gradients as the weight
gradient of one convolution with the samples as groups (oneDNN's kernels, no unfolded input);
below, as matrix products of the unfolded input, a block of output channels at a time (width-64
ResNet18 on 28×28, 64 samples: 28×28 and 14×14 layers 3-6× faster grouped, 4×4 layers 2×
faster blocked, so that the fp64 block stays in cache while the samples' squares go in)."""

_SAMPLES_PER_PRODUCT = 8
"""Samples per batched matrix product of the blocked path."""


def _widened(t: Tensor) -> Tensor:
    """``t`` in fp32, or as it is when it is fp64 (an fp64 model's gradients stay fp64)."""
    return t if t.dtype == torch.float64 else t.float()


def _fold(acc: Tensor, first: Tensor | None, chunk: Tensor) -> None:
    """Add the squares of the per-sample gradients ``chunk`` (``[samples, *acc.shape]``) into
    ``acc`` and their sum into ``first``. The in-place operations compute in the sums' dtype
    (an fp32 product is exact in fp64), sample by sample, without a widened copy."""
    for w in chunk:
        acc.addcmul_(w, w)  # ~5x faster than square().sum(0)
        if first is not None:
            first.add_(w)  # 2-4x faster than a sum over the chunk in the sums' dtype


def _conv_weight_grads(module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> Tensor:
    """``[N, O, C·k]``: each sample's weight gradient, as the weight gradient of a single
    convolution that treats the N samples as N groups (its result is bit for bit the same
    whichever samples share a call)."""
    n, o = x.shape[0], module.out_channels
    shape = (n * o, *module.weight.shape[1:])
    stacked_x = x.reshape(1, n * x.shape[1], *x.shape[2:])
    stacked_g = g.reshape(1, n * o, *g.shape[2:])
    is_2d = isinstance(module, nn.Conv2d)
    grad_weight = conv_grad.conv2d_weight if is_2d else conv_grad.conv1d_weight
    w = grad_weight(
        stacked_x,
        shape,
        stacked_g,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=n,
    )
    return w.reshape(n, o, -1)


def _sample_groups(n: int, size: int) -> list[slice]:
    """Consecutive groups of ``size`` samples (at least 2), the last one merged into the one
    before when it would hold a single sample: a call on one sample runs other kernels, whose
    rounding differs, and which samples end up alone depends on the loader's order."""
    size = max(2, size)
    groups = [slice(start, min(start + size, n)) for start in range(0, n, size)]
    if len(groups) > 1 and groups[-1].stop - groups[-1].start == 1:
        groups[-2:] = [slice(groups[-2].start, n)]
    return groups


def _with_second(t: Tensor) -> Tensor:
    """``t`` with a zero sample appended when it holds one sample (see :func:`_sample_groups`;
    the zero sample's result is dropped)."""
    return torch.cat([t, torch.zeros_like(t)]) if t.shape[0] == 1 else t


def _fold_conv(
    module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor, flat: Tensor, first: Tensor | None
) -> None:
    """Fold the per-sample weight gradients of a convolution without groups into ``flat``
    (``[O, C·k]``, and their sum into ``first``), a bounded number of entries at a time, two
    samples or more per call."""
    n, o = x.shape[0], flat.shape[0]
    if g[0, 0].numel() >= _MANY_POSITIONS:
        for part in _sample_groups(n, _CHUNK // flat.numel()):
            grads = _conv_weight_grads(module, _with_second(x[part]), _with_second(g[part]))
            _fold(flat, first, grads[: part.stop - part.start])
        return
    cols = _with_second(_conv_unfold(module, x).transpose(1, 2))  # [N, L, C·k]
    grads = _with_second(g.reshape(n, o, -1))  # [N, O, L]
    rows = max(1, _CHUNK // (_SAMPLES_PER_PRODUCT * flat.shape[1]))
    for top in range(0, o, rows):
        block = slice(top, top + rows)
        block_first = None if first is None else first[block]
        for part in _sample_groups(grads.shape[0], _SAMPLES_PER_PRODUCT):
            products = torch.bmm(grads[part, block], cols[part])
            _fold(flat[block], block_first, products[: min(part.stop, n) - part.start])


def _fold_squares(
    module: nn.Module,
    x: Tensor,
    g: Tensor,
    target: Callable[[str], Tensor],
    first: Callable[[str], Tensor] | None,
) -> bool:
    """Add ``Σ_s (dℓ_s/dθ)²`` of one call of ``module`` into ``target(key)`` (and
    ``Σ_s dℓ_s/dθ`` into ``first(key)`` when given) without holding every sample's gradient;
    False (nothing added) where :func:`_squares` must do it."""
    n = x.shape[0]
    if isinstance(module, nn.Linear) and x.dim() == 2:
        acc = target("weight")
        g, x = g.to(acc.dtype), x.to(acc.dtype)  # every sum over samples in the sums' dtype
        g2 = g * g
        acc.addmm_(g2.t(), x * x)
        if first is not None:
            first("weight").addmm_(g.t(), x)
        if module.bias is not None:
            target("bias").add_(g2.sum(dim=0))
            if first is not None:
                first("bias").add_(g.sum(dim=0))
        return True
    if not (isinstance(module, _CONVS) and module.groups == 1):
        return False
    acc = target("weight")
    if not acc.is_contiguous():  # channels_last accumulators take the general path
        return False
    flat = acc.view(acc.shape[0], -1)
    flat_first = None if first is None else first("weight").view(acc.shape[0], -1)
    _fold_conv(module, x, g, flat, flat_first)
    if module.bias is not None:
        bias = target("bias")
        b = g.reshape(n, g.shape[1], -1).sum(dim=2).to(bias.dtype)
        bias.add_((b * b).sum(dim=0))
        if first is not None:
            first("bias").add_(b.sum(dim=0))
    return True


class LayerwisePerSample:
    """Adds ``sum_s (dℓ_s/dθ)²`` of a batch into accumulators, from layer inputs and output
    gradients captured by hooks (removed again after every batch)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = {
            m: name for name, m in model.named_modules() if list(m.parameters(recurse=False))
        }
        self.params = dict(model.named_parameters())

    def __call__(
        self,
        batch: Any,
        loss_of: Callable[[Any], Tensor],
        acc: Callable[[str], Tensor],
        first: Callable[[str], Tensor] | None = None,
    ) -> None:
        """Run ``loss_of(batch)`` (the *sum* of per-sample losses) and add each parameter's
        ``sum_s g_s²`` into ``acc(name)``, the accumulator tensor of that parameter, and
        ``sum_s g_s`` into ``first(name)`` when given."""
        calls: list[tuple[nn.Module, Tensor, list[Tensor]]] = []
        roots: list[Tensor] = []  # every layer's input: the backward reaches each layer
        versions: list[tuple[Tensor, int]] = []

        def pre_hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = inputs[0]
            if not isinstance(x, Tensor) or not x.is_floating_point():
                return None
            if x.requires_grad:  # from an earlier layer (or a graph of the caller's)
                roots.append(x)
                return None
            leaf = x.detach().requires_grad_(True)  # where the gradients start flowing back
            roots.append(leaf)
            return (leaf, *inputs[1:])

        def forward_hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
            holder: list[Tensor] = []
            x = inputs[0]
            versions.append((x, x._version))
            calls.append((module, _widened(x.detach()), holder))
            output.register_hook(lambda grad: holder.append(_widened(grad.detach())))

        params = list(self.params.values())
        flags = [p.requires_grad for p in params]
        handles = [m.register_forward_pre_hook(pre_hook) for m in self.layers]
        handles += [m.register_forward_hook(forward_hook) for m in self.layers]
        try:
            for p in params:  # the backward then computes no weight gradient
                p.requires_grad_(False)
            # Inputs that carry a graph of their own would hide layers from the leaves below.
            loss = loss_of(detached(batch))
            if roots:
                torch.autograd.grad(loss, roots, allow_unused=True)
            if any(x._version != version for x, version in versions):
                # The frozen weights keep autograd from saving the inputs, so it cannot tell.
                raise RuntimeError(
                    "per_sample: a layer's input was modified in place after the layer used it; "
                    "its per-sample gradients cannot be formed (make the operation out of place)"
                )
        finally:
            for h in handles:
                h.remove()
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
        # A layer called several times adds its per-sample gradients over the calls before
        # squaring; every other layer is folded in and dropped at once, to bound memory.
        remaining = Counter(module for module, _, holder in calls if holder)
        pending: dict[nn.Module, dict[str, Tensor]] = {}
        while calls:
            module, x, holder = calls.pop()
            if not holder:  # the output did not reach the loss
                continue
            single = remaining[module] == 1 and module not in pending
            target = self._target(module, acc)
            firsts = None if first is None else self._target(module, first)
            if single and _fold_squares(module, x, holder[0], target, firsts):
                continue
            grads = _squares(module, x, holder[0])
            del x, holder
            if remaining[module] > 1 or module in pending:
                summed = pending.setdefault(module, {})
                for key, value in grads.items():
                    summed[key] = summed[key] + value if key in summed else value
                remaining[module] -= 1
                if remaining[module]:
                    continue
                grads = pending.pop(module)
            _add_squares(grads, target, firsts)
            del grads

    def _target(self, module: nn.Module, acc: Callable[[str], Tensor]) -> Callable[[str], Tensor]:
        """``acc`` of the module's own parameter names (``"weight"`` → ``"layer.weight"``)."""
        prefix = self.layers[module]
        return lambda key: acc(f"{prefix}.{key}" if prefix else key)


def _add_squares(
    grads: dict[str, Tensor],
    target: Callable[[str], Tensor],
    first: Callable[[str], Tensor] | None,
) -> None:
    """Add the squares of per-sample gradients ``{key: [N, *shape]}`` into ``target(key)``
    (and their sum into ``first(key)`` when given)."""
    for key, value in grads.items():
        _fold(target(key), None if first is None else first(key), value)
