"""``neggrad``: gradient ascent on the forget set; NegGrad+ mixes in descent on the retain set.

NegGrad+ (Kurmanji et al., NeurIPS 2023) minimises ``β·CE(Dr) − (1 − β)·CE(Df)``, pairing
every retain batch with the next forget batch (the forget set is cycled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from dampen.methods._common import (
    Clock,
    check_fraction,
    check_int,
    check_optimizer,
    forward_of,
    optimizer_for,
    require_forget,
    require_retain,
)
from dampen.methods._streams import Paired
from dampen.methods.training import StepLoss, train_
from dampen.registry import Request, register


@dataclass(frozen=True)
class NegGradConfig:
    """Gradient ascent on Df, or NegGrad+ with ``plus=True``.

    There is no single published default; these follow the usual ResNet18/CIFAR settings.
    Plain ascent is unbounded: keep ``epochs``/``lr`` small or use NegGrad+.

    Attributes:
        epochs: passes over Df (plain) or over Dr (NegGrad+).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        plus: NegGrad+: descend on Dr while ascending on Df (needs ``retain=``).
        beta: NegGrad+ weight of the retain loss; the forget loss gets ``1 − beta``.
    """

    epochs: int = 5
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    plus: bool = False
    beta: float = 0.999

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs)
        check_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        if not isinstance(self.plus, bool):
            raise TypeError(f"plus must be a bool; got {type(self.plus).__name__}")
        check_fraction("beta", self.beta, upper_open=True)


@register("neggrad", NegGradConfig)
def run_neggrad_(model: nn.Module, request: Request, config: NegGradConfig) -> dict[str, Any]:
    """Ascend the cross-entropy of Df (and, with ``plus``, descend that of Dr)."""
    clock = Clock()
    forward = forward_of(request)
    retain = require_retain(request, "neggrad (plus=True)") if config.plus else None
    require_forget(request)

    def ascent(model: nn.Module, batch: Any) -> Tensor:
        logits, targets = forward(model, batch)
        return -F.cross_entropy(logits.float(), targets)

    def ascent_plus(model: nn.Module, pair: tuple[Any, Any]) -> Tensor:
        retain_batch, forget_batch = pair
        logits_r, targets_r = forward(model, retain_batch)
        logits_f, targets_f = forward(model, forget_batch)
        return config.beta * F.cross_entropy(logits_r.float(), targets_r) - (
            1 - config.beta
        ) * F.cross_entropy(logits_f.float(), targets_f)

    optimizer = optimizer_for(model, config)
    stream: Any
    loss: StepLoss
    if retain is None:
        stream, loss, desc = request.forget, ascent, "neggrad"
    else:
        stream = Paired(retain, request.forget, other_name="forget set")
        loss, desc = ascent_plus, "neggrad+"
    with clock.phase("train"):
        log = train_(
            model,
            stream,
            epochs=config.epochs,
            optimizer=optimizer,
            step_loss=loss,
            progress=request.progress,
            desc=desc,
        )
    return {
        "method": "neggrad",
        "plus": config.plus,
        "steps": log.steps,
        "epoch_losses": list(log.epoch_losses),
        "seconds": clock.seconds(),
    }
