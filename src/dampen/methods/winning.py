"""The forget samples whose trained label still wins: what corrective unlearning acts on,
and what ranks sample forgetting's candidates.

With ``forget_kind="poison"`` (or ``"label_errors"``) the forget set is the identified part of
a backdoor or of the wrong labels, each sample with the label the model was trained with. On
some of them that label does not win (the trigger did not take, or the model kept the true
class): their loss towards the wrong label is large, and its gradients point at the samples'
*content*. Measured on Fashion-MNIST (ResNet18, 1 % poison, 10 of 100 poisoned
samples identified, 2 of them not predicted as the target): with them, SSD's most selective
α already erased a whole class (Bag, the content of one of them); without them, ``alpha="auto"``
healed 96 % of the backdoor with 0.5 % of the parameters at a 1-point cost in clean accuracy
(with the cross-entropy importance of the time).

Sample forgetting with ``heldout=`` ranks its candidates by the importance of the forget
samples the model gets right (:func:`dampen.methods.ssd._ranked_by_winners`): a sample it
gets wrong was not memorised, and its cross-entropy gradients are the forget set's largest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from dampen.core.batches import (
    Batches,
    ForwardFn,
    cat_rows,
    default_forward,
    slice_rows,
    take_rows,
)
from dampen.core.state import preserved
from dampen.methods.auto_alpha import wins


class NotRegroupable(TypeError):
    """The forget batches cannot be filtered and regrouped sample by sample."""


def _check_entries(value: Any, n: int) -> None:
    """Every leaf of a batch must be a tensor of ``n`` samples (else filtering misaligns)."""
    if isinstance(value, Mapping):
        for v in value.values():
            _check_entries(v, n)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_entries(v, n)
    elif not (isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n):
        raise NotRegroupable(
            "corrective forgetting keeps the forget samples whose trained label still "
            f"wins, so every entry of a forget batch must be a tensor of its {n} samples; got "
            f"{type(value).__name__}"
            + (f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else "")
        )


class WinningSamples:
    """The samples of ``batches`` on which ``model`` (as it is now) predicts their label,
    gathered once and served again ``size`` at a time.

    They are kept in memory, on the device the batches come on (a forget set is small beside
    D; sample forgetting of a large one can pass ``winning_only=False``), so later passes
    neither depend on the loader's order nor on the model's later weights. Every entry of a
    batch (``(x, ..., y)``, ``{..., "labels": y}``, nested lists, tuples and dicts, also with a
    user ``forward``) must be a tensor whose first dimension is the batch.

    Raises:
        NotRegroupable: a TypeError, for a batch entry that is not such a tensor (it could
            not be filtered), or batches whose samples differ in shape (they could not be
            regrouped).
        ValueError: for labels outside the model's outputs.

    Attributes:
        total: how many samples ``batches`` held.
        count: how many of them are kept.
        batch_size: ``size``.
    """

    def __init__(
        self, model: torch.nn.Module, batches: Batches, forward: ForwardFn | None, size: int
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        fn = forward or default_forward
        parts: list[Any] = []
        self.total = self.count = 0
        with preserved(model, grad_all=False), torch.no_grad():
            for batch in batches:
                won = wins(*fn(model, batch), "forget set").cpu()
                n = int(won.shape[0])
                _check_entries(batch, n)
                self.total += n
                if bool(won.any()):
                    parts.append(take_rows(batch, won, n))
                    self.count += int(won.sum())
        try:
            self._joined = cat_rows(parts) if parts else None
        except ValueError as e:  # rows of different shapes
            raise NotRegroupable(
                "the forget samples whose trained label wins are regrouped into batches of "
                f"{size}, but the batches' samples differ in shape (e.g. padded to each "
                f"batch's longest sequence): {e}"
            ) from None
        self.batch_size = size

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self.count, self.batch_size):
            yield slice_rows(self._joined, start, start + self.batch_size)
