"""Labelled image tensors, train/test pairs, and seeded data loaders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

Indices = Sequence[int] | np.ndarray | Tensor
"""Positions into a :class:`LabelledData`: a list, a numpy int array or an int tensor."""


@dataclass(frozen=True, eq=False)
class LabelledData:
    """One split of an image classification data set.

    Attributes:
        x: float32 images ``[N, C, H, W]``.
        y: int64 labels ``[N]`` in ``[0, len(classes))``.
        classes: class names, index = label.
        name: a short name that identifies the data (used in cache keys).
    """

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.dim() != 4:
            raise TypeError(f"x must be a 4-d tensor [N, C, H, W], got {_describe(self.x)}")
        if self.x.dtype != torch.float32:
            raise TypeError(f"x must be float32, got {self.x.dtype}")
        if not isinstance(self.y, Tensor) or self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise TypeError(f"y must be a 1-d int64 tensor, got {_describe(self.y)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]} labels")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.classes:
            raise ValueError("classes must not be empty")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise ValueError(
                f"y must lie in [0, {len(self.classes)}) for {len(self.classes)} classes, got "
                f"[{int(self.y.min())}, {int(self.y.max())}]"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height ``H`` (images are expected square)."""
        return int(self.x.shape[2])

    def subset(self, indices: Indices) -> LabelledData:
        """The samples at ``indices``, in that order."""
        idx = as_index_tensor(indices, len(self), "indices")
        return LabelledData(self.x[idx], self.y[idx], self.classes, self.name)

    def relabel(self, label_map: Sequence[int], classes: Sequence[str]) -> LabelledData:
        """A copy whose label ``k`` becomes ``label_map[k]``, with new class names."""
        if len(label_map) != len(self.classes):
            raise ValueError(
                f"label_map must have one entry per class ({len(self.classes)}), "
                f"got {len(label_map)}"
            )
        table = torch.tensor(list(label_map), dtype=torch.int64)
        return LabelledData(self.x, table[self.y], tuple(classes), self.name)

    def class_index(self, cls: int | str, argument: str = "cls") -> int:
        """The label of a class given by index or name.

        Raises:
            ValueError: naming ``argument`` when the class is unknown.
        """
        if isinstance(cls, bool):
            raise TypeError(f"{argument} must be a class index or name, got a bool")
        if isinstance(cls, (int, np.integer)):
            if not 0 <= int(cls) < len(self.classes):
                raise ValueError(
                    f"{argument}={int(cls)} is out of range for {len(self.classes)} classes"
                )
            return int(cls)
        if isinstance(cls, str):
            if cls not in self.classes:
                shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
                raise ValueError(f"{argument}={cls!r} is not a class of {self.name}: {shown}")
            return self.classes.index(cls)
        raise TypeError(f"{argument} must be a class index or name, got {type(cls).__name__}")

    @classmethod
    def from_dataset(cls, dataset: Dataset[Any], classes: Sequence[str], name: str) -> LabelledData:
        """Stack a map-style dataset of ``(image, label)`` pairs into tensors."""
        xs: list[Tensor] = []
        ys: list[int] = []
        for i in range(len(dataset)):  # type: ignore[arg-type]
            item = dataset[i]
            xs.append(torch.as_tensor(item[0], dtype=torch.float32))
            ys.append(int(item[-1]))
        if not xs:
            raise ValueError("dataset is empty")
        return cls(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), tuple(classes), name)


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A train split and a test split that share classes.

    Attributes:
        train: the training samples.
        test: the test samples.
        superclasses: optional grouping of class names, ``{superclass: (class, ...)}``, used
            by sub-class scenarios.
    """

    train: LabelledData
    test: LabelledData
    superclasses: Mapping[str, tuple[str, ...]] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise ValueError("train and test must have the same classes")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise ValueError(
                f"train images {tuple(self.train.x.shape[1:])} and test images "
                f"{tuple(self.test.x.shape[1:])} differ in shape"
            )
        if self.superclasses is not None:
            object.__setattr__(
                self,
                "superclasses",
                {str(k): tuple(str(c) for c in v) for k, v in self.superclasses.items()},
            )

    @property
    def name(self) -> str:
        """The train split's name."""
        return self.train.name

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label."""
        return self.train.classes

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.train.num_classes


def as_index_tensor(indices: Indices | None, size: int, argument: str = "indices") -> Tensor:
    """Validate ``indices`` into ``range(size)`` and return them as an int64 tensor.

    ``None`` means every position.
    """
    if indices is None:
        return torch.arange(size, dtype=torch.int64)
    if isinstance(indices, Tensor):
        idx = indices.detach().to("cpu")
    else:
        arr = np.asarray(indices)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        idx = torch.tensor(arr)
    if idx.dim() != 1:
        raise ValueError(f"{argument} must be one-dimensional, got shape {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
        raise TypeError(f"{argument} must hold integers, got {idx.dtype}")
    idx = idx.to(torch.int64)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise ValueError(
            f"{argument} must lie in [0, {size}), got [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


def loader(
    data: LabelledData,
    indices: Indices | None = None,
    *,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader[tuple[Tensor, ...]]:
    """A ``DataLoader`` of ``(x, y)`` batches over ``data[indices]``.

    Shuffling uses its own ``torch.Generator`` seeded with ``seed``, so the order of batches
    is the same on every run and does not touch the global random state.

    Args:
        data: the split to read.
        indices: positions to include (all when ``None``).
        batch_size: samples per batch.
        shuffle: reshuffle each epoch.
        seed: seed of the shuffling generator.
        drop_last: drop a final incomplete batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    idx = as_index_tensor(indices, len(data))
    dataset: Dataset[tuple[Tensor, ...]] = TensorDataset(data.x, data.y)
    if len(idx) != len(data) or not torch.equal(idx, torch.arange(len(data))):
        dataset = Subset(dataset, idx.tolist())
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=0,
    )


def image_splits(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    name: str,
    limit: int | None,
    test_limit: int | None,
    seed: int,
    superclasses: dict[str, tuple[str, ...]] | None = None,
) -> DataSplits:
    """Splits from ``uint8`` images ``N×C×H×W`` and integer labels: seeded subsets of
    ``limit`` / ``test_limit`` samples, pixels scaled to [0, 1] and standardised per channel
    with the training statistics; the subset is recorded in the data set's name."""
    keep_train = subsample(train[1], limit, seed, "limit")
    keep_test = subsample(test[1], test_limit, seed + 1, "test_limit")
    x_train = torch.from_numpy(train[0][keep_train]).float().div_(255.0)
    x_test = torch.from_numpy(test[0][keep_test]).float().div_(255.0)
    x_train, x_test = normalise(x_train, [x_test])
    if limit is not None or test_limit is not None:
        name += f"[limit={limit},test_limit={test_limit},seed={seed}]"
    return DataSplits(
        LabelledData(x_train.contiguous(), torch.from_numpy(train[1][keep_train]), classes, name),
        LabelledData(x_test.contiguous(), torch.from_numpy(test[1][keep_test]), classes, name),
        superclasses=superclasses,
    )


def normalise(train_x: Tensor, others: Iterable[Tensor]) -> list[Tensor]:
    """Standardise every tensor with the per-channel mean and std of ``train_x``."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [(train_x - mean) / std, *[(t - mean) / std for t in others]]


def subsample(y: np.ndarray, limit: int | None, seed: int, argument: str = "limit") -> np.ndarray:
    """Sorted positions of a seeded random subset of ``limit`` samples (all when ``None``)."""
    n = len(y)
    if limit is None:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"{argument} must be a positive int or None, got {limit!r}")
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(limit), replace=False))


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dim()}-d {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
