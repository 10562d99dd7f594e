"""The original-training recipe (SGD, MultiStepLR, crop+flip) and a disk cache of its models.

Everything is deterministic given the seed: initialisation runs under ``torch.manual_seed(seed)``
inside ``torch.random.fork_rng()`` (the caller's global random state is left alone), batches are
shuffled and augmented with their own seeded ``torch.Generator`` objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import model_device
from dampen.core.files import atomic_write
from dampen.data.base import DataSplits, Indices, LabelledData, as_index_tensor, loader
from dampen.methods.training import StepLoss, TrainLog, cross_entropy_loss, train_
from dampen.models import build_model

CACHE_FORMAT = 1
"""Version of the cache layout; part of every cache key."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train an original model (defaults: the paper's ResNet18 recipe).

    Attributes:
        model: a :func:`dampen.models.build_model` name.
        model_kwargs: extra options for the model (JSON-serialisable).
        dataset: the data set's name; when set, the data passed in must carry it.
        epochs: passes over the training data.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        gamma: MultiStepLR decay factor.
        milestones: epochs at which the rate decays, as fractions of ``epochs``.
        batch_size: samples per step.
        augment: apply random crop (and flip, see ``flip``) to training batches.
        crop_padding: zero padding on each side before the random crop.
        flip: random horizontal flip (off for digits).
    """

    model: str = "resnet18"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dataset: str | None = None
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gamma: float = 0.2
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    batch_size: int = 64
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a model name, got {self.model!r}")
        if not isinstance(self.model_kwargs, Mapping):
            raise TypeError(f"model_kwargs must be a mapping, got {type(self.model_kwargs)}")
        kwargs = dict(sorted(self.model_kwargs.items()))
        try:
            json.dumps(kwargs)
        except TypeError as exc:
            raise TypeError(f"model_kwargs must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "model_kwargs", kwargs)
        for name in ("epochs", "batch_size", "crop_padding"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        milestones = tuple(float(m) for m in self.milestones)
        if any(not 0.0 < m < 1.0 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(
                f"milestones must be increasing fractions of epochs in (0, 1), got {milestones}"
            )
        object.__setattr__(self, "milestones", milestones)

    def milestone_epochs(self) -> list[int]:
        """The milestones in epochs (distinct, within ``1 .. epochs - 1``)."""
        epochs = {round(m * self.epochs) for m in self.milestones}
        return sorted(e for e in epochs if 0 < e < self.epochs)

    def to_json(self) -> str:
        """A canonical JSON form of the config (sorted keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The inverse of :meth:`to_json`."""
        values = json.loads(text)
        values["milestones"] = tuple(values.get("milestones", ()))
        return cls(**values)


def recipe_for(dataset: str, **overrides: Any) -> TrainConfig:
    """A sensible default config for a known data set, with ``overrides`` applied.

    ``digits`` and ``fashion-mnist`` use the small CNN (digits: 1-pixel crops, no flip);
    CIFAR data sets use ResNet18 with 4-pixel crops and flips.
    """
    key = dataset.lower()
    base: dict[str, Any]
    if key.startswith("digits"):
        base = {"model": "cnn", "epochs": 15, "crop_padding": 1, "flip": False}
    elif key.startswith("fashion"):
        base = {"model": "cnn", "epochs": 10, "crop_padding": 2, "flip": True}
    elif key.startswith("cifar"):
        base = {"model": "resnet18", "epochs": 30, "crop_padding": 4, "flip": True}
    else:
        raise ValueError(f"dataset={dataset!r} has no default recipe; build a TrainConfig")
    base.update(overrides)
    return TrainConfig(**base)


def random_crop_flip(
    x: Tensor, *, padding: int, flip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Randomly crop each image after zero-padding, and flip half of them horizontally.

    Args:
        x: images ``[N, C, H, W]``.
        padding: pixels of zero padding on each side (0 disables cropping).
        flip: flip each image left-right with probability 1/2.
        generator: source of randomness (on ``x``'s device).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    out = x
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        span = 2 * padding + 1
        dy = torch.randint(span, (n,), generator=generator, device=x.device)
        dx = torch.randint(span, (n,), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        out = padded[batch, channel, rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator, device=x.device) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def _train_split(data: LabelledData | DataSplits) -> LabelledData:
    if isinstance(data, DataSplits):
        return data.train
    if isinstance(data, LabelledData):
        return data
    raise TypeError(f"data must be LabelledData or DataSplits, got {type(data).__name__}")


def _check_dataset(config: TrainConfig, train: LabelledData) -> None:
    if config.dataset is not None and config.dataset != train.name:
        raise ValueError(f"config.dataset={config.dataset!r} but the data is {train.name!r}")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def init_model(
    config: TrainConfig,
    data: LabelledData | DataSplits,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build ``config.model`` for ``data``'s shapes with weights drawn from ``seed``."""
    train = _train_split(data)
    target = torch.device(device) if device is not None else torch.device("cpu")
    with _seeded(int(seed), torch.device("cpu")):
        model = build_model(
            config.model,
            num_classes=train.num_classes,
            in_channels=train.in_channels,
            image_size=train.image_size,
            **config.model_kwargs,
        )
    return model.to(target)


def _augmenting_loss(config: TrainConfig, generator: torch.Generator) -> StepLoss:
    base = cross_entropy_loss()

    def loss(model: nn.Module, batch: Any) -> Tensor:
        x, y = batch
        if config.augment:
            x = random_crop_flip(
                x, padding=config.crop_padding, flip=config.flip, generator=generator
            )
        return base(model, (x, y))

    return loss


def fit_(
    model: nn.Module,
    config: TrainConfig,
    data: LabelledData | DataSplits,
    indices: Indices | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> TrainLog:
    """Train ``model`` in place with the recipe on ``data[indices]`` (all when ``None``)."""
    train = _train_split(data)
    _check_dataset(config, train)
    batches = loader(train, indices, batch_size=config.batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=config.milestone_epochs(), gamma=config.gamma
    )
    augment_rng = torch.Generator().manual_seed(int(seed) + 1)
    with _seeded(int(seed) + 2, model_device(model)):  # dropout and the like
        return train_(
            model,
            batches,
            epochs=config.epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            step_loss=_augmenting_loss(config, augment_rng),
            progress=progress,
            desc=f"train {config.model}",
        )


def train_model(
    config: TrainConfig,
    data: LabelledData | DataSplits,
    train_indices: Indices | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Initialise and train a model with the recipe; returned in eval mode.

    Args:
        config: the recipe.
        data: the training split (or a :class:`DataSplits`, whose train split is used).
        train_indices: the training samples to use (all when ``None``).
        seed: seed of initialisation, shuffling and augmentation.
        progress: show a progress bar.
        device: where to train (CPU by default).
    """
    model = init_model(config, data, seed=seed, device=device)
    fit_(model, config, data, train_indices, seed=seed, progress=progress)
    return model.eval()


def indices_digest(indices: Indices | None, size: int) -> str:
    """sha256 of the training indices (order matters; ``None`` means all ``size``)."""
    idx = as_index_tensor(indices, size, "indices").numpy().astype("<i8")
    return hashlib.sha256(np.ascontiguousarray(idx).tobytes()).hexdigest()


def cache_key(
    config: TrainConfig, data: LabelledData | DataSplits, indices: Indices | None, seed: int
) -> str:
    """The sha256 that names a trained model in the cache."""
    train = _train_split(data)
    payload = {
        "format": CACHE_FORMAT,
        "config": json.loads(config.to_json()),
        "dataset": train.name,
        "shape": list(train.x.shape),
        "classes": list(train.classes),
        "indices": indices_digest(indices, len(train)),
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached_train(
    config: TrainConfig,
    data: LabelledData | DataSplits,
    indices: Indices | None,
    seed: int,
    cache_dir: str | os.PathLike[str],
    *,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Like :func:`train_model`, but load the result from ``cache_dir`` when it is there.

    A model is stored as ``<key>.safetensors`` (its state) and ``<key>.json`` (metadata), each
    written atomically; the key is :func:`cache_key`. Loading never unpickles.
    """
    train = _train_split(data)
    _check_dataset(config, train)
    key = cache_key(config, train, indices, seed)
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    model = init_model(config, train, seed=seed, device=device)
    if weights.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key:
                raise ValueError(f"{meta_path} records key {meta.get('key')!r}")
            load_model(model, weights, strict=True, device=str(device or "cpu"))
            return model.eval()
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            warnings.warn(f"ignoring a broken cache entry {key}: {exc}", stacklevel=2)
            model = init_model(config, train, seed=seed, device=device)
    log = fit_(model, config, train, indices, seed=seed, progress=progress)
    model.eval()
    atomic_write(weights, lambda tmp: save_model(model, tmp, metadata={"key": key}))
    meta = {
        "key": key,
        "format": CACHE_FORMAT,
        "config": json.loads(config.to_json()),
        "dataset": train.name,
        "num_indices": len(as_index_tensor(indices, len(train), "indices")),
        "indices_sha256": indices_digest(indices, len(train)),
        "seed": int(seed),
        "epoch_losses": list(log.epoch_losses),
        "steps": log.steps,
        "torch": torch.__version__,
    }
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return model
