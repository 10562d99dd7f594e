"""Iterable datasets and loaders of unknown length stream through every estimator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import dampen
from conftest import loader, make_data, make_model


class Stream(IterableDataset):
    """Samples generated one by one, with no ``__len__``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from zip(self.x, self.y, strict=True)


def _generator(x: torch.Tensor, y: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


@pytest.mark.parametrize("estimator", ["batch_sq", "per_sample", "lf"])
@pytest.mark.parametrize("progress", [False, True])
def test_streams_of_unknown_length_equal_a_loader(estimator: str, progress: bool) -> None:
    model, (x, y) = make_model(), make_data()
    want = dampen.importance(model, loader(x, y, 8), estimator=estimator)
    stream = DataLoader(Stream(x, y), batch_size=8)
    with pytest.raises(TypeError):
        len(stream)
    got = dampen.importance(model, stream, estimator=estimator, progress=progress)
    gen = dampen.importance(model, _generator(x, y, 8), estimator=estimator, progress=progress)
    for imp in (got, gen):
        assert (imp.units, imp.samples, imp.batch_size) == (want.units, want.samples, 8)
        for n in want:
            torch.testing.assert_close(imp[n], want[n])


def test_unlearn_from_a_generator() -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, _generator(x, y, 8))
    forget = _generator(x[y == 1], y[y == 1], 8)
    result = dampen.unlearn(model, forget, importance=imp, alpha=1.0)
    assert result.stats["forget_samples"] == 8


def test_auto_alpha_refuses_a_one_shot_forget_iterator() -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y, 8))
    with pytest.raises(ValueError, match="one-shot iterator"):
        dampen.unlearn(model, _generator(x[y == 1], y[y == 1], 8), importance=imp)
