"""The original-training recipe, its augmentation and its disk cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import dampen.recipe as recipe
from dampen.data import DataSplits, load_digits
from dampen.recipe import (
    TrainConfig,
    cache_key,
    cached_train,
    random_crop_flip,
    recipe_for,
    train_model,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Train on one thread: tiny models gain nothing from two, and a busy machine hurts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_digits()


def _accuracy(model: torch.nn.Module, data: DataSplits) -> float:
    with torch.no_grad():
        return float((model(data.test.x).argmax(1) == data.test.y).float().mean())


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_config_defaults_validation_and_json() -> None:
    config = TrainConfig()
    assert (config.lr, config.momentum, config.weight_decay, config.gamma) == (0.1, 0.9, 5e-4, 0.2)
    assert config.batch_size == 64 and config.augment and config.flip
    assert TrainConfig(epochs=10).milestone_epochs() == [3, 6, 8]
    assert TrainConfig(epochs=2, milestones=(0.5, 0.9)).milestone_epochs() == [1]
    with_kwargs = TrainConfig(model="cnn", model_kwargs={"channels": [8, 16]})
    assert TrainConfig.from_json(with_kwargs.to_json()) == with_kwargs
    assert hash(with_kwargs) == hash(TrainConfig(model="cnn", model_kwargs={"channels": [8, 16]}))
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(0.5, 1.5))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(TypeError, match="model_kwargs"):
        TrainConfig(model_kwargs={"f": object()})
    with pytest.raises(ValueError, match="dataset="):
        recipe_for("imagenet")
    assert recipe_for("digits").flip is False and recipe_for("cifar100").model == "resnet18"


def test_random_crop_flip() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    flipped = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    out = random_crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(1))
    again = random_crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is some window of the padded image, maybe flipped
        windows = [
            w
            for dy in range(5)
            for dx in range(5)
            for w in (padded[i, :, dy : dy + 5, dx : dx + 5],)
            for w in (w, w.flip(-1))
        ]
        assert any(torch.equal(out[i], w) for w in windows)
    with pytest.raises(ValueError, match="x must be"):
        random_crop_flip(x[0], padding=1, flip=False)


def test_training_on_digits_reaches_80_percent(digits: DataSplits) -> None:
    model = train_model(recipe_for("digits", epochs=5), digits, seed=0)
    assert not model.training
    assert _accuracy(model, digits) > 0.8


def test_training_is_deterministic_and_leaves_global_rng_alone(digits: DataSplits) -> None:
    config = recipe_for("digits", epochs=1, model_kwargs={"channels": [4, 8]})
    subset = torch.arange(300)
    state = torch.get_rng_state()
    model = train_model(config, digits, subset, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert _equal_states(model, train_model(config, digits.train, subset, seed=0))
    assert not _equal_states(model, train_model(config, digits, subset, seed=1))


def test_dataset_name_is_checked(digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="config.dataset='cifar10'"):
        train_model(TrainConfig(model="cnn", dataset="cifar10", epochs=0), digits)


def test_cache_hit_skips_training(
    digits: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fit = recipe.fit_

    def counting_fit(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(recipe, "fit_", counting_fit)
    config = recipe_for("digits", epochs=1, model_kwargs={"channels": [8, 16]})
    indices = torch.arange(0, 600)
    first = cached_train(config, digits, indices, 0, tmp_path)
    assert len(calls) == 1
    key = cache_key(config, digits, indices, 0)
    weights, meta = tmp_path / f"{key}.safetensors", tmp_path / f"{key}.json"
    assert weights.is_file() and meta.is_file()
    assert json.loads(meta.read_text())["num_indices"] == 600
    assert not list(tmp_path.glob("*.tmp"))
    stamp = weights.stat().st_mtime_ns
    second = cached_train(config, digits, indices, 0, tmp_path)
    assert len(calls) == 1 and weights.stat().st_mtime_ns == stamp
    assert _equal_states(first, second) and not second.training
    cached_train(config, digits, indices, 1, tmp_path)
    assert len(calls) == 2
    assert _equal_states(first, train_model(config, digits, indices, seed=0))
    assert cache_key(config, digits, indices.flip(0), 0) != key
    assert cache_key(recipe_for("digits", epochs=2), digits, indices, 0) != key


def test_broken_cache_entry_is_retrained(digits: DataSplits, tmp_path: Path) -> None:
    config = recipe_for("digits", epochs=1, model_kwargs={"channels": [4, 8]})
    model = cached_train(config, digits, None, 0, tmp_path)
    key = cache_key(config, digits, None, 0)
    (tmp_path / f"{key}.safetensors").write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="broken cache entry"):
        again = cached_train(config, digits, None, 0, tmp_path)
    assert _equal_states(model, again)
