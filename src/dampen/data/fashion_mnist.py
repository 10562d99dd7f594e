"""Fashion-MNIST from IDX files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from dampen.data.base import DataSplits, image_splits

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the IDX files."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The 10 Fashion-MNIST class names, index = label."""

FASHION_MNIST_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "Tops": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
    "Trouser": ("Trouser",),
    "Dress": ("Dress",),
    "Footwear": ("Sandal", "Sneaker", "Ankle boot"),
    "Bag": ("Bag",),
}
"""Five superclasses for sub-class forgetting, ``{superclass: (fine class, ...)}``."""

_IDX_MAGIC_UBYTE = 0x08
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or plain) into a uint8 array.

    Args:
        path: the file.
        ndim: the number of dimensions the file must have (any when ``None``).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the magic number, dimensions or size are wrong.
    """
    path = Path(path)
    with path.open("rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    if raw[2] != _IDX_MAGIC_UBYTE:
        raise ValueError(
            f"{path}: only unsigned-byte IDX data (0x08) is supported, got 0x{raw[2]:02x}"
        )
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path}: expected {ndim} dimension(s), the header says {dims}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header shape {shape} needs {expected} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz exists")


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = _FILES[split]
    images = read_idx(_find(folder, image_stem), ndim=3)
    labels = read_idx(_find(folder, label_stem), ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: {split} has {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{folder}: {split} images are {images.shape[1:]}, expected (28, 28)")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{folder}: {split} labels go up to {int(labels.max())}, expected < 10")
    return images, labels


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Fashion-MNIST as ``1×28×28`` images standardised with the training mean and std.

    Args:
        root: the folder holding the four IDX files (``.gz`` or plain); defaults to
            ``/usr/share/datasets/fashion-mnist``.
        limit: keep a seeded random subset of this many training samples.
        test_limit: the same for the test split.
        seed: seed of the subsets.

    Raises:
        FileNotFoundError: if the folder or a file is missing.
        ValueError: if a file is malformed.
    """
    folder = Path(root) if root is not None else DEFAULT_FASHION_MNIST_DIR
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {folder} does not exist: run `apt-get install "
            "dataset-fashion-mnist` or pass root= a folder with the IDX files "
            "(train-images-idx3-ubyte[.gz] and friends); dampen never downloads"
        )
    train_images, train_labels = _read_split(folder, "train")
    test_images, test_labels = _read_split(folder, "test")
    return image_splits(
        (train_images[:, None], train_labels.astype(np.int64)),
        (test_images[:, None], test_labels.astype(np.int64)),
        FASHION_MNIST_CLASSES,
        "fashion-mnist",
        limit,
        test_limit,
        seed,
        FASHION_MNIST_SUPERCLASSES,
    )
