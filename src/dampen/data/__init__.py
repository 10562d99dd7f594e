"""Data sets, seeded loaders and forgetting scenarios."""

from __future__ import annotations

import os
from collections.abc import Callable

from dampen.data.base import DataSplits, Indices, LabelledData, loader
from dampen.data.cifar import SafeUnpickler, load_cifar10, load_cifar20, load_cifar100
from dampen.data.digits import DIGITS_CLASSES, load_digits
from dampen.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUPERCLASSES,
    load_fashion_mnist,
    read_idx,
)
from dampen.data.scenarios import Scenario, full_class, random_samples, sub_class

_LOADERS: dict[str, Callable[..., DataSplits]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cifar20": load_cifar20,
    "fashion-mnist": load_fashion_mnist,
}


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`."""
    return ("digits", *sorted(_LOADERS))


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a data set by name (see :func:`dataset_names`).

    ``root``, ``limit`` and ``test_limit`` do not apply to ``"digits"``, which is embedded.

    Raises:
        ValueError: if ``name`` is unknown, or options are given for digits.
    """
    key = name.lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key.replace("-", "") in ("cifar10", "cifar100", "cifar20"):
        key = key.replace("-", "")
    if key == "digits":
        if root is not None or limit is not None or test_limit is not None:
            raise ValueError("root, limit and test_limit do not apply to name='digits'")
        return load_digits(seed=seed)
    if key not in _LOADERS:
        raise ValueError(f"name={name!r} is not a data set; choose from {dataset_names()}")
    return _LOADERS[key](root, limit=limit, test_limit=test_limit, seed=seed)


__all__ = [
    "DIGITS_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SUPERCLASSES",
    "DataSplits",
    "Indices",
    "LabelledData",
    "SafeUnpickler",
    "Scenario",
    "dataset_names",
    "full_class",
    "load_cifar10",
    "load_cifar20",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "loader",
    "random_samples",
    "read_idx",
    "sub_class",
]
