"""The samples of one label out of a stream of batches, re-batched to a fixed size.

``alpha="auto"`` forgets several whole classes one at a time (see :mod:`dampen.methods.ssd`):
each class's samples are gathered from the user's batches into batches of the original size,
so the ``batch_sq`` importance keeps its scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dampen.core.batches import Batches, cat_rows, slice_rows, split_batch, take_rows


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
            pending.append(take_rows(batch, mask, int(targets.shape[0])))
            count += kept
            while count >= self.batch_size:
                joined = cat_rows(pending)
                yield slice_rows(joined, 0, self.batch_size)
                count -= self.batch_size
                pending = (
                    [slice_rows(joined, self.batch_size, self.batch_size + count)] if count else []
                )
        if count:
            yield cat_rows(pending)
