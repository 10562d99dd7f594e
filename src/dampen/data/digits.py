"""scikit-learn's 8×8 handwritten digits: the embedded data set that needs no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits
from sklearn.model_selection import train_test_split

from dampen.data.base import DataSplits, LabelledData, normalise

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
"""Class names of the digits data: ``"0"`` to ``"9"``."""


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """The 1,797 digits as a stratified train/test split of ``1×8×8`` images.

    Pixels are scaled to ``[0, 1]`` and then standardised with the training mean and std.

    Args:
        test_fraction: share of samples held out for testing, in ``(0, 1)``.
        seed: seed of the split.
    """
    if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    bunch = _sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=float(test_fraction),
        stratify=labels,
        random_state=int(seed),
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    x_train, x_test = normalise(x[train_idx], [x[test_idx]])
    name = (
        "digits"
        if (test_fraction, seed) == (0.2, 0)
        else f"digits[test={test_fraction},seed={seed}]"
    )
    return DataSplits(
        LabelledData(x_train.contiguous(), y[train_idx], DIGITS_CLASSES, name),
        LabelledData(x_test.contiguous(), y[test_idx], DIGITS_CLASSES, name),
    )
