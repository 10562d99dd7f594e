"""``jit`` (Foster et al., 2024, "Zero-shot machine unlearning at scale via Lipschitz
regularization"): make the model's output insensitive to input noise around each forget sample.

Like SSD, JiT reads only the forget set. For every forget batch it draws ``samples`` noisy
copies ``x' = clamp(x + σ·ε)`` (ε standard normal, clamped to the batch's range) and takes one
SGD step on the Lipschitz estimate

    L = (1/N) Σ_n Σ_i ‖f(x_i) − f(x'_i)‖₂ / ‖x_i − x'_i‖₂

with gradients flowing through the clean outputs ``f(x_i)`` only (logits; the noisy outputs are
constants), summed over the batch and averaged over the N copies, as in the authors' code.

Where this implementation chooses (the paper and code leave these open or do otherwise):

* the model is in eval mode, so BatchNorm statistics are not updated by the forget set (the
  authors' models had no BatchNorm, and their code never switched modes);
* gradients are zeroed before every step (the authors' loop never zeroed them, so each step
  used the sum of all gradients so far; with a single forget batch the two agree);
* noise is drawn from a generator seeded with the request's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dampen.core.batches import split_batch
from dampen.methods._common import (
    Clock,
    check_int,
    check_optimizer,
    check_positive,
    forward_of,
    optimizer_for,
    require_forget,
    seeded_generator,
    train_stats,
)
from dampen.methods.training import train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class JiTConfig:
    """JiT with the authors' full-class settings for their convolutional model (σ = 0.5,
    SGD lr 3e-4 without momentum, 25 noisy copies, one pass over Df).

    The authors' code uses other values per task and model: ViT full-class σ 0.8 / lr 1.5,
    sub-class σ 1.5 / lr 0.5, random σ 0.5 / lr 0.1; VGG sub-class and random σ 0.01 / lr 3e-4.

    Attributes:
        lr: learning rate (η).
        sigma: standard deviation of the Gaussian input noise (σ), in the model's input units.
        samples: noisy copies per forget sample (N).
        epochs: passes over the forget set (one step per forget batch).
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: weight decay.
    """

    lr: float = 3e-4
    sigma: float = 0.5
    samples: int = 25
    epochs: int = 1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        check_int("samples", self.samples)
        check_int("epochs", self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)


def _with_input(batch: Any, x: Tensor) -> Any:
    """``batch`` with its input (first element) replaced by ``x``."""
    return (x, *batch[1:])


def _float_input(batch: Any) -> Tensor:
    if not isinstance(batch, (tuple, list)):
        raise TypeError(
            "jit perturbs input tensors: it needs batches (x, ..., y) with a floating-point "
            f"tensor x; got a batch of type {type(batch).__name__}"
        )
    x, _ = split_batch(batch)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            "jit perturbs input tensors: it needs a floating-point tensor x in batches "
            f"(x, ..., y); got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else "")
        )
    return x


def lipschitz_loss(
    model: nn.Module,
    batch: Any,
    *,
    forward: Any,
    sigma: float,
    samples: int,
    generator: torch.Generator,
) -> Tensor:
    """JiT's loss on one batch: the output/input distance ratio over ``samples`` noisy copies,
    summed over the batch and averaged over the copies (gradient through clean outputs)."""
    x = _float_input(batch)
    clean, _ = forward(model, batch)
    clean = clean.float()
    low, high = x.min(), x.max()
    total = clean.new_zeros(())
    for _ in range(samples):
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        noisy = torch.clamp(x + sigma * noise, min=low, max=high)
        with torch.no_grad():
            out, _ = forward(model, _with_input(batch, noisy))
        in_norm = (x - noisy).flatten(1).float().norm(dim=1)
        out_norm = (clean - out.float()).flatten(1).norm(dim=1)
        # A copy the clamp left unchanged has no direction: it adds nothing.
        ratio = torch.where(in_norm > 0, out_norm / in_norm.clamp_min(1e-12), 0.0)
        total = total + ratio.sum()
    return total / samples


@register("jit", JiTConfig)
def run_jit_(model: nn.Module, request: Request, config: JiTConfig) -> dict[str, Any]:
    """One SGD step on the Lipschitz loss per forget batch, for ``epochs`` passes."""
    clock = Clock()
    forward = forward_of(request)
    require_forget(request)
    generator = seeded_generator(request.seed)
    optimizer = optimizer_for(model, config)

    def loss(model: nn.Module, batch: Any) -> Tensor:
        return lipschitz_loss(
            model,
            batch,
            forward=forward,
            sigma=config.sigma,
            samples=config.samples,
            generator=generator,
        )

    with clock.phase("train"):
        log = train_(
            model,
            request.forget,
            epochs=config.epochs,
            optimizer=optimizer,
            step_loss=loss,
            progress=request.progress,
            desc="jit",
            eval_mode=True,
        )
    return train_stats("jit", log, clock)
