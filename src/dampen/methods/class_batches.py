"""The samples of one label out of a stream of batches, re-batched to a fixed size.

``alpha="auto"`` forgets several whole classes one at a time (see :mod:`dampen.methods.ssd`):
each class's samples are gathered from the user's batches into batches of the original size,
so the ``batch_sq`` importance keeps its scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from dampen.core.batches import Batches, split_batch


def _take(value: Any, mask: Tensor, n: int) -> Any:
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[mask.to(value.device)]
    if isinstance(value, Mapping):
        return {k: _take(v, mask, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take(v, mask, n) for v in value)
    return value


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Tensor) and first.dim() > 0:
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: _cat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))
    return first


def _slice(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, Tensor) and value.dim() > 0:
        return value[start:stop]
    if isinstance(value, Mapping):
        return {k: _slice(v, start, stop) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_slice(v, start, stop) for v in value)
    return value


class ClassBatches:
    """Re-iterable batches holding only the samples labelled ``label``, ``size`` at a time.

    Works for ``(x, ..., y)`` and ``{..., "labels": y}`` batches with integer labels.
    """

    def __init__(self, batches: Batches, label: int, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        self.batches = batches
        self.label = label
        self.batch_size = size

    def __iter__(self) -> Iterator[Any]:
        pending: list[Any] = []
        count = 0
        for batch in self.batches:
            targets = split_batch(batch)[1]
            mask = targets == self.label
            kept = int(mask.sum())
            if not kept:
                continue
            pending.append(_take(batch, mask, int(targets.shape[0])))
            count += kept
            while count >= self.batch_size:
                joined = _cat(pending)
                yield _slice(joined, 0, self.batch_size)
                count -= self.batch_size
                pending = (
                    [_slice(joined, self.batch_size, self.batch_size + count)] if count else []
                )
        if count:
            yield _cat(pending)
