"""Data sets, IDX/CIFAR readers, loaders and forgetting scenarios."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dampen.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUPERCLASSES,
    DataSplits,
    LabelledData,
    Scenario,
    full_class,
    load_cifar10,
    load_cifar20,
    load_cifar100,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    loader,
    random_samples,
    read_idx,
    sub_class,
)
from dampen.data.cifar import load_pickle
from dampen.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

# ---------------------------------------------------------------- helpers


def _splits(n_train: int = 40, n_test: int = 20, classes: int = 4) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    names = tuple(f"c{i}" for i in range(classes))

    def part(n: int) -> LabelledData:
        y = torch.arange(n, dtype=torch.int64) % classes
        return LabelledData(torch.randn(n, 1, 4, 4, generator=gen), y, names, "toy")

    return DataSplits(
        part(n_train), part(n_test), superclasses={"ab": ("c0", "c1"), "c": ("c2",), "d": ("c3",)}
    )


def _check_partition(s: Scenario) -> None:
    n_train, n_test = len(s.data.train), len(s.data.test)
    for arr in (s.forget, s.retain, s.test, s.retain_test, s.forget_test):
        assert arr.dtype == torch.int64 and arr.dim() == 1
        assert torch.equal(arr, arr.sort().values)
    forget, retain = s.forget.numpy(), s.retain.numpy()
    assert np.intersect1d(forget, retain).size == 0
    assert np.array_equal(np.union1d(forget, retain), np.arange(n_train))
    assert torch.equal(s.test, torch.arange(n_test))
    assert np.intersect1d(s.forget_test.numpy(), s.retain_test.numpy()).size == 0
    assert np.array_equal(np.union1d(s.forget_test, s.retain_test), np.arange(n_test))


# ---------------------------------------------------------------- LabelledData and loader


def test_labelled_data_validates() -> None:
    x = torch.zeros(3, 1, 2, 2)
    y = torch.tensor([0, 1, 1])
    with pytest.raises(TypeError, match="x must be float32"):
        LabelledData(x.double(), y, ("a", "b"), "t")
    with pytest.raises(TypeError, match="y must be"):
        LabelledData(x, y.int(), ("a", "b"), "t")
    with pytest.raises(ValueError, match="3 samples but y has 2"):
        LabelledData(x, y[:2], ("a", "b"), "t")
    with pytest.raises(ValueError, match="y must lie in"):
        LabelledData(x, y + 1, ("a", "b"), "t")
    data = LabelledData(x, y, ("a", "b"), "t")
    assert data.subset([2, 0]).y.tolist() == [1, 0]
    with pytest.raises(ValueError, match="indices must lie in"):
        data.subset([3])
    with pytest.raises(TypeError, match="indices must hold integers"):
        data.subset(torch.tensor([0.0]))


def test_from_dataset_and_relabel() -> None:
    pairs = [(torch.full((1, 2, 2), float(i)), i % 2) for i in range(5)]
    data = LabelledData.from_dataset(pairs, ("even", "odd"), "pairs")  # type: ignore[arg-type]
    assert data.x.shape == (5, 1, 2, 2) and data.y.tolist() == [0, 1, 0, 1, 0]
    merged = data.relabel([0, 0], ("all",))
    assert merged.classes == ("all",) and merged.y.tolist() == [0] * 5
    with pytest.raises(ValueError, match="label_map"):
        data.relabel([0], ("all",))


def test_loader_is_seeded_and_respects_indices() -> None:
    data = _splits().train

    def order(seed: int) -> list[int]:
        batches = loader(data, np.arange(10, 30), batch_size=7, shuffle=True, seed=seed)
        return [int(v) for _, y in batches for v in y]

    state = torch.get_rng_state()
    first = [x for x, _ in loader(data, np.arange(10, 30), batch_size=7, shuffle=True, seed=3)]
    again = [x for x, _ in loader(data, np.arange(10, 30), batch_size=7, shuffle=True, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(state, torch.get_rng_state())
    assert order(3) == order(3)
    plain = [x for x, _ in loader(data, None, batch_size=64)]
    assert torch.equal(plain[0], data.x)
    assert sum(len(x) for x in first) == 20
    with pytest.raises(ValueError, match="batch_size"):
        loader(data, batch_size=0)


# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_and_deterministic() -> None:
    a, b = load_digits(), load_digits()
    assert a.train.x.shape == (1437, 1, 8, 8) and a.test.x.shape == (360, 1, 8, 8)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert abs(float(a.train.x.mean())) < 1e-4
    assert abs(float(a.train.x.std()) - 1.0) < 1e-3
    counts = torch.bincount(a.test.y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    assert a.name == "digits" and load_digits(seed=1).name != "digits"
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="name="):
        load_dataset("imagenet")


# ---------------------------------------------------------------- scenarios


def test_full_class_scenario() -> None:
    data = _splits()
    s = full_class(data, "c2")
    _check_partition(s)
    assert s.kind == "full_class" and s.name == "toy/full_class/c2"
    assert len(s.forget) == 10 and bool((data.train.y[s.forget] == 2).all())
    assert bool((data.train.y[s.retain] != 2).all())
    assert len(s.forget_test) == 5 and bool((data.test.y[s.forget_test] == 2).all())
    assert s.label_map == (0, 1, 2, 3) and s.forget_class == "c2"
    assert torch.equal(full_class(data, 2).forget, s.forget)
    with pytest.raises(ValueError, match="cls='nope'"):
        full_class(data, "nope")
    with pytest.raises(ValueError, match="cls=9"):
        full_class(data, 9)
    with pytest.raises(TypeError, match="data must be"):
        full_class(data.train, 0)  # type: ignore[arg-type]


def test_sub_class_scenario_relabels_to_superclasses() -> None:
    data = _splits()
    s = sub_class(data, "c1")
    _check_partition(s)
    assert s.kind == "sub_class" and s.forget_class == "c1"
    assert s.label_map == (0, 0, 1, 2)
    assert s.data.classes == ("ab", "c", "d")
    assert bool((data.train.y[s.forget] == 1).all()) and len(s.forget) == 10
    assert bool((s.data.train.y[s.forget] == 0).all())  # labelled with its superclass
    assert len(s.forget_test) == 5
    explicit = sub_class(data, 1, {"ab": ["c0", "c1"], "cd": ["c2", "c3"]})
    assert explicit.label_map == (0, 0, 1, 1)
    with pytest.raises(ValueError, match="alone in its superclass"):
        sub_class(data, "c2")
    with pytest.raises(ValueError, match="fine_class='x'"):
        sub_class(data, "x")
    with pytest.raises(ValueError, match="superclass_map does not place"):
        sub_class(data, "c0", {"ab": ["c0", "c1"]})
    with pytest.raises(ValueError, match="twice"):
        sub_class(data, "c0", {"ab": ["c0", "c1"], "b": ["c1", "c2", "c3"]})
    bare = DataSplits(data.train, data.test)
    with pytest.raises(ValueError, match="superclass_map is required"):
        sub_class(bare, "c0")


def test_random_scenario_exact_and_deterministic() -> None:
    data = _splits()
    s = random_samples(data, 7, seed=5)
    _check_partition(s)
    assert len(s.forget) == 7 and len(s.retain) == 33
    assert len(s.forget_test) == 0 and torch.equal(s.retain_test, s.test)
    assert torch.equal(s.forget, random_samples(data, 7, seed=5).forget)
    assert not torch.equal(s.forget, random_samples(data, 7, seed=6).forget)
    with pytest.raises(ValueError, match="count=41"):
        random_samples(data, 41)
    with pytest.raises(ValueError, match="count must be positive"):
        random_samples(data, 0)
    with pytest.raises(TypeError, match="count must be an int"):
        random_samples(data, 2.5)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_random_scenario_sizes_property(count: int, seed: int) -> None:
    s = random_samples(_splits(), count, seed)
    assert len(s.forget) == count and len(s.forget) + len(s.retain) == 40
    assert np.intersect1d(s.forget.numpy(), s.retain.numpy()).size == 0


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, arr in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            raw = _idx(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_written_idx(tmp_path: Path, gz: bool) -> None:
    _write_fashion(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert data.train.x.shape == (30, 1, 28, 28) and data.test.x.shape == (10, 1, 28, 28)
    assert data.train.y.tolist() == [i % 10 for i in range(30)]
    assert data.classes == FASHION_MNIST_CLASSES and data.superclasses == FASHION_MNIST_SUPERCLASSES
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    expected = (raw.astype(np.float32) / 255.0)[:, None]
    expected = (expected - expected.mean()) / expected.std(ddof=1)
    assert np.allclose(data.train.x.numpy(), expected, atol=1e-4)
    small = load_fashion_mnist(tmp_path, limit=12, seed=3)
    assert len(small.train) == 12 and len(small.test) == 10
    again = load_fashion_mnist(tmp_path, limit=12, seed=3)
    assert torch.equal(small.train.y, again.train.y) and small.name != data.name
    s = sub_class(data, "Shirt")
    assert s.data.num_classes == 5 and s.label_map[FASHION_MNIST_CLASSES.index("Coat")] == 0


def test_idx_reader_rejects_malformed_files(tmp_path: Path) -> None:
    good = _idx(np.zeros((2, 3), dtype=np.uint8))
    cases = {
        "magic": (b"\x01" + good[1:], "not an IDX file"),
        "dtype": (good[:2] + b"\x0d" + good[3:], "unsigned-byte"),
        "size": (good[:-1], "needs 6 bytes"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_idx(path)
    path = tmp_path / "good"
    path.write_bytes(good)
    assert read_idx(path).shape == (2, 3)
    with pytest.raises(ValueError, match="expected 1 dimension"):
        read_idx(path, ndim=1)


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "missing")
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx(np.zeros(3, dtype=np.uint8)))
    )
    with pytest.raises(ValueError, match="10 images but 3 labels"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="limit must be"):
        _write_fashion(tmp_path)
        load_fashion_mnist(tmp_path, limit=0)


@pytest.mark.skipif(
    not (DEFAULT_FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_files() -> None:
    labels = read_idx(DEFAULT_FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [6000] * 10
    data = load_fashion_mnist(limit=500, test_limit=200)
    assert data.train.x.shape == (500, 1, 28, 28) and data.test.x.shape == (200, 1, 28, 28)
    assert load_dataset("fashion_mnist", limit=500, test_limit=200).name == data.name


# ---------------------------------------------------------------- CIFAR


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [
        n.encode()
        for n in (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        )
    ]
    _dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
    )
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = _images(per_batch, i)
        data[0, :1024] = 255  # first image: a saturated red plane
        data[0, 1024:] = 0
        labels = [(i + j) % 10 for j in range(per_batch)]
        _dump(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [b"x.png"] * per_batch,
            },
        )
    return folder


def _write_cifar100(root: Path, n: int = 12) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_names = [f"fine{i}".encode() for i in range(100)]
    fine_names[69] = b"rocket"
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    for seed, split in enumerate(("train", "test")):
        fine = [(7 * j + seed) % 100 for j in range(n)] + [69]
        fine += [f for f in range(100) if f not in fine] if split == "train" else []
        coarse = [f % 20 for f in fine]
        _dump(
            folder / split,
            {
                b"filenames": [b"f"] * len(fine),
                b"batch_label": b"b",
                b"fine_labels": fine,
                b"coarse_labels": coarse,
                b"data": _images(len(fine), seed),
            },
        )
    return folder


def test_cifar10_reader(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.train.x.shape == (20, 3, 32, 32) and data.test.x.shape == (4, 3, 32, 32)
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert data.train.y[:4].tolist() == [0, 1, 2, 3] and data.train.y[4:8].tolist() == [1, 2, 3, 4]
    first = data.train.x[0]
    assert float(first[0].min()) > float(first[1].max())  # red plane is channel 0
    assert torch.equal(load_cifar10(folder).train.x, data.train.x)
    assert load_dataset("cifar-10", root=tmp_path, limit=5).train.x.shape[0] == 5


def test_cifar100_and_cifar20_readers(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    c100 = load_cifar100(tmp_path)
    assert c100.num_classes == 100 and c100.classes[69] == "rocket"
    assert c100.superclasses is not None and len(c100.superclasses) == 20
    assert c100.superclasses["coarse9"] == tuple(
        f"fine{i}" if i != 69 else "rocket" for i in range(9, 100, 20)
    )
    c20 = load_cifar20(tmp_path)
    assert c20.num_classes == 20 and c20.classes[0] == "coarse0"
    assert torch.equal(c20.train.y, c100.train.y % 20)
    s = sub_class(c100, "rocket")
    assert s.data.num_classes == 20 and bool((s.data.train.y[s.forget] == 9).all())
    assert full_class(c20, 9).forget.numel() == int((c20.train.y == 9).sum())


def test_cifar_old_numpy_module_names_load(tmp_path: Path) -> None:
    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=2)
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != blob
    path = tmp_path / "old"
    path.write_bytes(old)
    assert load_pickle(path)[b"data"].tolist() == list(range(6))


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.target}",))


def test_cifar_refuses_malicious_pickles(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _dump(folder / "data_batch_3", {b"data": _Exploit(marker), b"labels": []})
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to load global (posix|os|nt)\.system"
    ):
        load_cifar10(tmp_path)
    assert not marker.exists()
    evil = tmp_path / "eval"
    evil.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        load_pickle(evil)
    codec = tmp_path / "codec"
    codec.write_bytes(b"c_codecs\nencode\n(X\x01\x00\x00\x00aX\x04\x00\x00\x00zlibtR.")
    with pytest.raises(pickle.UnpicklingError, match="encoding 'zlib'"):
        load_pickle(codec)


def test_cifar_missing_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_cifar10(tmp_path)
    monkeypatch.delenv("DAMPEN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="DAMPEN_DATA"):
        load_cifar100()
    _write_cifar100(tmp_path)
    monkeypatch.setenv("DAMPEN_DATA", str(tmp_path))
    assert load_cifar20().num_classes == 20
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(FileNotFoundError, match="missing file test"):
        load_cifar100(tmp_path)
