"""The stored importance: round trip, fingerprints, merging, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dampen
from conftest import TinyConvNet, loader, make_data, make_model


def test_round_trip(tmp_path: Path) -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y), estimator="per_sample")
    path = imp.save(tmp_path / "sub" / "imp.safetensors")
    back = dampen.Importance.load(path, model=model)
    assert back.estimator == "per_sample" and back.units == imp.units
    assert back.samples == imp.samples and back.batches == imp.batches
    assert back.batch_size == imp.batch_size and back.fingerprint == imp.fingerprint
    assert back.version == dampen.__version__
    assert all(torch.equal(back.sums[n], imp.sums[n]) for n in imp)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["imp.safetensors"]


def test_load_against_another_model_is_a_clear_error(tmp_path: Path) -> None:
    x, y = make_data()
    path = dampen.importance(make_model(), loader(x, y)).save(tmp_path / "i.safetensors")
    with pytest.raises(ValueError, match="another model.*head"):
        dampen.Importance.load(path, model=TinyConvNet(classes=5))
    other_weights = make_model(seed=3)
    with pytest.raises(ValueError, match="different weights"):
        dampen.Importance.load(path, model=other_weights)
    # An unlearned model keeps names and shapes: accepted when asked for.
    assert dampen.Importance.load(path, model=other_weights, check_values=False).units > 0


def test_not_a_dampen_file(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a dampen importance"):
        dampen.Importance.load(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable"):
        dampen.Importance.load(garbage)
    with pytest.raises(FileNotFoundError):
        dampen.Importance.load(tmp_path / "missing.safetensors")


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y))
    path = imp.save(tmp_path / "i.safetensors")
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("dampen.importances.store.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        imp.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["i.safetensors"]


@pytest.mark.parametrize("estimator", ["per_sample", "batch_sq", "lf"])
def test_shards_merge_exactly(estimator: str) -> None:
    model, (x, y) = make_model(), make_data()
    whole = dampen.importance(model, loader(x, y, 4), estimator=estimator)
    a = dampen.importance(model, loader(x[:12], y[:12], 4), estimator=estimator)
    b = dampen.importance(model, loader(x[12:], y[12:], 4), estimator=estimator)
    merged = a + b
    assert (merged.units, merged.samples, merged.batches) == (whole.units, whole.samples, 6)
    for n in whole:
        torch.testing.assert_close(merged[n], whole[n])


def test_merge_refuses_mismatches() -> None:
    model, (x, y) = make_model(), make_data()
    a = dampen.importance(model, loader(x, y, 4))
    with pytest.raises(ValueError, match="batch size"):
        a.merge(dampen.importance(model, loader(x, y, 8)))
    with pytest.raises(ValueError, match="estimators differ"):
        a.merge(dampen.importance(model, loader(x, y, 4), estimator="lf"))
    with pytest.raises(ValueError, match="different models"):
        a.merge(dampen.importance(make_model(seed=5), loader(x, y, 4)))
    with pytest.raises(TypeError):
        a.merge("x")  # type: ignore[arg-type]


def test_empty_importance_is_refused() -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y))
    with pytest.raises(ValueError, match="at least one sample"):
        dampen.Importance(
            sums=imp.sums,
            units=0,
            samples=0,
            batches=0,
            estimator="batch_sq",
            batch_size=8,
            fingerprint=imp.fingerprint,
        )


def test_label_counts_are_kept_saved_and_merged(tmp_path: Path) -> None:
    model, (x, y) = make_model(), make_data(25)
    imp = dampen.importance(model, loader(x, y, 4))
    assert imp.label_counts == {0: 9, 1: 8, 2: 8}
    back = dampen.Importance.load(imp.save(tmp_path / "i.safetensors"), model=model)
    assert back.label_counts == imp.label_counts
    a = dampen.importance(model, loader(x[:12], y[:12], 4))
    b = dampen.importance(model, loader(x[12:], y[12:], 4))
    assert (a + b).label_counts == imp.label_counts
    unlabelled = dampen.importance(model, [(x,)], estimator="lf")
    assert unlabelled.label_counts is None


def test_subtract_is_exact_for_per_sample() -> None:
    model, (x, y) = make_model(), make_data()
    whole = dampen.importance(model, loader(x, y, 5), estimator="per_sample")
    forget = y == 1
    gone = dampen.importance(model, loader(x[forget], y[forget], 3), estimator="per_sample")
    kept = dampen.importance(model, loader(x[~forget], y[~forget], 7), estimator="per_sample")
    rest = whole.subtract(gone)
    assert (rest.units, rest.samples) == (kept.units, kept.samples)
    assert rest.label_counts == {0: 8, 2: 8}
    for n in kept:
        torch.testing.assert_close(rest[n], kept[n], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="nothing would remain"):
        gone.subtract(whole)


def test_subtract_whole_batches_is_exact_for_batch_sq() -> None:
    model, (x, y) = make_model(), make_data()
    whole = dampen.importance(model, loader(x, y, 4), estimator="batch_sq")
    first = dampen.importance(model, loader(x[:8], y[:8], 4), estimator="batch_sq")
    rest = dampen.importance(model, loader(x[8:], y[8:], 4), estimator="batch_sq")
    left = whole.subtract(first)
    for n in rest:
        torch.testing.assert_close(left[n], rest[n], rtol=1e-4, atol=1e-7)
