"""CIFAR-10, CIFAR-100 and CIFAR-20 from the standard python-pickle folders.

The folders are ``cifar-10-batches-py`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``) and ``cifar-100-python`` (``train``, ``test``, ``meta``). They are pickles, so
they are read with :class:`SafeUnpickler`, which only rebuilds numpy arrays, dicts, lists,
strings, bytes and numbers and refuses any other global: a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dampen.data.base import DataSplits, image_splits

DATA_ENV = "DAMPEN_DATA"
"""Environment variable naming the folder that holds the CIFAR folders when ``root`` is None."""

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_IMAGE_BYTES = 3 * 32 * 32

_reconstruct: Callable[..., Any] = np.zeros(0).__reduce__()[0]  # type: ignore[assignment]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _scalar(dtype: np.dtype[Any], data: bytes = b"") -> Any:
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing a numpy scalar of object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and builtin containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        """Return a whitelisted global or raise ``pickle.UnpicklingError``."""
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: CIFAR files may only contain numpy "
                "arrays, dicts, lists, strings and numbers (the file may be tampered with)"
            )
        return allowed


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load one CIFAR pickle file safely (bytes keys stay bytes).

    Raises:
        pickle.UnpicklingError: if the file references anything outside the whitelist.
    """
    with Path(path).open("rb") as fh:
        return SafeUnpickler(fh, encoding="bytes").load()


def _entry(record: Any, key: str, path: Path) -> Any:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a dict, found {type(record).__name__}")
    for k in (key.encode(), key):
        if k in record:
            return record[k]
    raise ValueError(f"{path}: missing entry {key!r}")


def _names(record: Any, key: str, path: Path) -> tuple[str, ...]:
    values = _entry(record, key, path)
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _images(record: Any, path: Path) -> np.ndarray:
    data = np.asarray(_entry(record, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        raise ValueError(
            f"{path}: 'data' must be a uint8 array [N, {_IMAGE_BYTES}], "
            f"got {data.dtype} {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32)


def _labels(record: Any, key: str, path: Path, count: int, classes: int) -> np.ndarray:
    labels = np.asarray(_entry(record, key, path))
    if labels.ndim != 1 or labels.shape[0] != count or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {key!r} must be {count} integer labels, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{path}: {key!r} must lie in [0, {classes})")
    return labels.astype(np.int64)


def _folder(root: str | os.PathLike[str] | None, name: str) -> Path:
    if root is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            raise FileNotFoundError(
                f"no {name} folder given: pass root= the folder holding {name} (or {name} "
                f"itself), or set ${DATA_ENV}; dampen never downloads data"
            )
        root = env
    base = Path(root)
    folder = base if base.name == name else base / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: put the python-pickle version of the data set ({name}) "
            "there and pass its parent folder as root=; dampen never downloads data"
        )
    return folder


def _file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: missing file {name}")
    return path


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """CIFAR-10 as ``3×32×32`` images standardised per channel with training statistics.

    Args:
        root: the folder holding ``cifar-10-batches-py`` (or that folder itself); defaults to
            ``$DAMPEN_DATA``.
        limit: keep a seeded random subset of this many training samples.
        test_limit: the same for the test split.
        seed: seed of the subsets.
    """
    folder = _folder(root, _CIFAR10_DIR)
    meta_path = _file(folder, "batches.meta")
    classes = _names(load_pickle(meta_path), "label_names", meta_path)

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            path = _file(folder, n)
            record = load_pickle(path)
            images = _images(record, path)
            xs.append(images)
            ys.append(_labels(record, "labels", path, len(images), len(classes)))
        return np.concatenate(xs), np.concatenate(ys)

    train = read([f"data_batch_{i}" for i in range(1, 6)])
    test = read(["test_batch"])
    return image_splits(train, test, classes, "cifar10", limit, test_limit, seed)


def _read_cifar100(
    root: str | os.PathLike[str] | None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], tuple[str, ...], tuple[str, ...]]:
    folder = _folder(root, _CIFAR100_DIR)
    meta_path = _file(folder, "meta")
    meta = load_pickle(meta_path)
    fine_names = _names(meta, "fine_label_names", meta_path)
    coarse_names = _names(meta, "coarse_label_names", meta_path)
    splits = {}
    for split in ("train", "test"):
        path = _file(folder, split)
        record = load_pickle(path)
        images = _images(record, path)
        fine = _labels(record, "fine_labels", path, len(images), len(fine_names))
        coarse = _labels(record, "coarse_labels", path, len(images), len(coarse_names))
        splits[split] = (images, fine, coarse)
    return splits, fine_names, coarse_names


def _superclasses(
    fine: np.ndarray, coarse: np.ndarray, fine_names: tuple[str, ...], coarse_names: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    parent: dict[int, int] = {}
    for f, c in zip(fine.tolist(), coarse.tolist(), strict=True):
        if parent.setdefault(f, c) != c:
            raise ValueError(f"CIFAR-100 fine class {fine_names[f]!r} has two coarse labels")
    groups: dict[str, tuple[str, ...]] = {}
    for c, cname in enumerate(coarse_names):
        groups[cname] = tuple(fine_names[f] for f in sorted(parent) if parent[f] == c)
    return groups


def load_cifar100(
    root: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """CIFAR-100 with its 100 fine labels; ``superclasses`` holds the 20 coarse groups.

    Args:
        root: the folder holding ``cifar-100-python`` (or that folder itself); defaults to
            ``$DAMPEN_DATA``.
        limit: keep a seeded random subset of this many training samples.
        test_limit: the same for the test split.
        seed: seed of the subsets.
    """
    splits, fine_names, coarse_names = _read_cifar100(root)
    images, fine, coarse = splits["train"]
    groups = _superclasses(fine, coarse, fine_names, coarse_names)
    test_images, test_fine, _ = splits["test"]
    return image_splits(
        (images, fine),
        (test_images, test_fine),
        fine_names,
        "cifar100",
        limit,
        test_limit,
        seed,
        superclasses=groups,
    )


def load_cifar20(
    root: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """CIFAR-100 images labelled with its 20 coarse classes (superclasses).

    Args:
        root: the folder holding ``cifar-100-python`` (or that folder itself); defaults to
            ``$DAMPEN_DATA``.
        limit: keep a seeded random subset of this many training samples.
        test_limit: the same for the test split.
        seed: seed of the subsets.
    """
    splits, _, coarse_names = _read_cifar100(root)
    images, _, coarse = splits["train"]
    test_images, _, test_coarse = splits["test"]
    return image_splits(
        (images, coarse),
        (test_images, test_coarse),
        coarse_names,
        "cifar20",
        limit,
        test_limit,
        seed,
    )
