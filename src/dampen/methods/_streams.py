"""Re-iterable views over batch streams, for methods that train on more than one data set.

Each object can be passed to :func:`dampen.methods.training.train_` as ``batches``: every pass
(epoch) iterates the underlying loaders afresh and draws new random choices from the
method's seeded generator. ``len()`` works when the underlying loaders have a length, so
progress bars show totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch


def length_of(batches: Iterable[Any]) -> int | None:
    """``len(batches)``, or ``None`` for a stream without a length."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


class Tagged:
    """The batches of several streams in a random interleaving, each as ``(tag, batch)``.

    With known lengths the order is a uniform random permutation of all batches; otherwise
    each step picks one of the streams that still have batches, uniformly.
    """

    def __init__(
        self, streams: Sequence[tuple[str, Iterable[Any]]], generator: torch.Generator
    ) -> None:
        self.streams = list(streams)
        self.generator = generator

    def __len__(self) -> int:
        lengths = [length_of(s) for _, s in self.streams]
        if any(n is None for n in lengths):
            raise TypeError("a stream has no length")
        return sum(n for n in lengths if n is not None)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        iters = [iter(s) for _, s in self.streams]
        tags = [t for t, _ in self.streams]
        lengths = [length_of(s) for _, s in self.streams]
        if all(n is not None for n in lengths):
            order = torch.cat(
                [torch.full((n or 0,), i, dtype=torch.long) for i, n in enumerate(lengths)]
            )
            order = order[torch.randperm(len(order), generator=self.generator)]
            for i in order.tolist():
                batch = next(iters[i], _END)
                if batch is not _END:
                    yield tags[i], batch
            for i, it in enumerate(iters):  # a stream longer than it said
                for batch in it:
                    yield tags[i], batch
            return
        alive = list(range(len(iters)))
        while alive:
            j = alive[int(torch.randint(len(alive), (1,), generator=self.generator))]
            batch = next(iters[j], _END)
            if batch is _END:
                alive.remove(j)
            else:
                yield tags[j], batch


class Subsampled:
    """A random ``fraction`` of the batches of a stream, drawn anew on every pass.

    With a known length exactly ``max(1, round(fraction·n))`` batches are kept; otherwise each
    batch is kept with probability ``fraction``. Skipped batches are still loaded.
    """

    def __init__(self, batches: Iterable[Any], fraction: float, generator: torch.Generator) -> None:
        self.batches = batches
        self.fraction = fraction
        self.generator = generator

    def _kept(self, n: int) -> int:
        return min(n, max(1, round(self.fraction * n)))

    def __len__(self) -> int:
        n = length_of(self.batches)
        if n is None:
            raise TypeError("the stream has no length")
        return self._kept(n)

    def __iter__(self) -> Iterator[Any]:
        n = length_of(self.batches)
        if n is not None:
            keep = set(torch.randperm(n, generator=self.generator)[: self._kept(n)].tolist())
            for i, batch in enumerate(self.batches):
                if i in keep:
                    yield batch
            return
        for batch in self.batches:
            if float(torch.rand((), generator=self.generator)) < self.fraction:
                yield batch


class Paired:
    """Every batch of ``main`` together with the next batch of ``other``, cycled: ``other``
    goes on where it stopped when a new pass over ``main`` begins, so any ``len(other)``
    consecutive partners are one whole pass over ``other``.

    Raises:
        ValueError: on iteration, if ``other`` yields no batch.
    """

    def __init__(self, main: Iterable[Any], other: Iterable[Any], *, other_name: str) -> None:
        self.main = main
        self.other = other
        self.other_name = other_name
        self._partners: Iterator[Any] | None = None

    def __len__(self) -> int:
        n = length_of(self.main)
        if n is None:
            raise TypeError("the stream has no length")
        return n

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.main:
            partner = _END if self._partners is None else next(self._partners, _END)
            if partner is _END:
                self._partners = iter(self.other)
                partner = next(self._partners, _END)
                if partner is _END:
                    raise ValueError(f"the {self.other_name} is empty")
            yield batch, partner


_END: Any = object()
