"""Shared pieces of the per-example drivers (:mod:`dampen.proofs.ulira`, ``challenge``).

Outputs and population metrics of one model on index sets, and one unlearning call with the
importance of D taken from a disk cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from dampen.api import importance as compute_importance
from dampen.api import unlearn
from dampen.bench.config import SSD_FAMILY, DataSpec, MethodSpec, ModelSpec
from dampen.data.base import DataSplits, loader
from dampen.eval import (
    accuracy,
    collect_outputs,
    entropy,
    logit_scaled_confidence,
    paper_mia,
    svc_mia,
    zrf,
)
from dampen.eval.report import Outputs
from dampen.importances.store import Importance

EVAL_BATCH = 512

P = TypeVar("P", bound="ProofConfig")


@dataclass(frozen=True)
class ProofConfig:
    """What every per-example proof run (U-LiRA, the challenge score) is configured with.

    Attributes:
        name: shown in the report.
        data: the data set.
        model: the model and its recipe.
        methods: the methods under test.
        seed: seed of the data split(s) and of the trainings.
        batch_size: batch size of the forget, retain and importance loaders.
        out_dir: where results go.
        cache_dir: trained models and importances (default ``out_dir/cache``).
        threads: ``torch.set_num_threads`` (default: unchanged).
        device: where to train.
        description: one sentence for the report.
    """

    name: str
    data: DataSpec
    model: ModelSpec
    methods: tuple[MethodSpec, ...]
    seed: int = 0
    batch_size: int = 64
    out_dir: str = "runs/proof"
    cache_dir: str | None = None
    threads: int | None = None
    device: str = "cpu"
    description: str = ""

    @property
    def cache_path(self) -> Path:
        """The cache folder."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.out_dir) / "cache"

    def replace(self: P, **changes: Any) -> P:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


DIGITS_CNN = ModelSpec("cnn", "cnn", train={"epochs": 15, "crop_padding": 1, "flip": False})
"""The small CNN both digits presets train (15 epochs, 1-pixel crops, no flips)."""

FMNIST_MLP = ModelSpec("mlp", "mlp", train={"epochs": 60, "augment": False, "lr": 0.05})
"""An MLP (784-256-128-10) trained 60 epochs without augmentation, SGD lr 0.05: it memorises
2,000 Fashion-MNIST samples (99.4-99.6 % train accuracy, 83 % test), about 5 s per training on
one thread. (The recipe's lr 0.1 diverged to chance on 1 of 42 trainings.)"""

FMNIST_MEMORISED = DataSpec("fashion-mnist", limit=4000, test_limit=2000)
"""The Fashion-MNIST subset that :data:`FMNIST_MLP` memorises (4,000 train / 2,000 test)."""

FMNIST_MEMORISED_TEXT = (
    "Fashion-MNIST (4,000 train / 2,000 test), MLP 784-256-128-10 trained 60 epochs without "
    "augmentation"
)
"""How the presets on :data:`FMNIST_MEMORISED` describe their setting."""


def random_forgetting_rows(heldout: int) -> tuple[MethodSpec, ...]:
    """The rows of the per-example checks: the SSD family (paper α, ASSD, auto with ``heldout``
    unseen samples, LF-SSD, ALF) and the baselines that apply to random forgetting."""
    from dampen.bench.presets import baselines

    return (
        MethodSpec("ssd", label="ssd (α=10)", options={"alpha": 10.0, "lambda_": 1.0}),
        MethodSpec("assd"),
        MethodSpec("ssd", label="ssd (auto)", options={"alpha": "auto"}, heldout=heldout),
        MethodSpec("lfssd", label="lfssd (α=10)", options={"alpha": 10.0}),
        MethodSpec("alf"),
        *(spec for spec in baselines(epochs=5) if "random" in spec.kinds),
    )


def digest(payload: Any) -> str:
    """sha256 of a JSON-able payload (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def outputs(model: nn.Module, data: DataSplits, indices: Tensor, *, test: bool = False) -> Outputs:
    """``model``'s outputs on ``data.train[indices]`` (or ``data.test`` when ``test``)."""
    split = data.test if test else data.train
    return collect_outputs(model, loader(split, indices, batch_size=EVAL_BATCH))


def confidences(model: nn.Module, data: DataSplits, indices: Tensor) -> list[float]:
    """Logit-scaled confidences of ``model`` on ``data.train[indices]``."""
    out = outputs(model, data, indices)
    return [float(c) for c in logit_scaled_confidence(out.logits, out.targets)]


def population_metrics(
    model: nn.Module,
    data: DataSplits,
    retain: Tensor,
    forget: Tensor,
    incompetent: nn.Module,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracies, ZRF, the paper's entropy MIA and the SVC attacks of ``model``.

    ZRF compares the outputs on ``forget`` with ``incompetent``'s (a random-init model).
    """
    test_idx = torch.arange(len(data.test))
    r, f = outputs(model, data, retain), outputs(model, data, forget)
    t = outputs(model, data, test_idx, test=True)
    q = outputs(incompetent, data, forget)
    svc = svc_mia((r.probs(), r.targets), (t.probs(), t.targets), (f.probs(), f.targets), seed=seed)
    return {
        "retain_acc": accuracy(r.logits, r.targets),
        "forget_acc": accuracy(f.logits, f.targets),
        "test_acc": accuracy(t.logits, t.targets),
        "zrf": zrf(f.probs(), q.probs()),
        "mia": paper_mia(entropy(r.probs()), entropy(t.probs()), entropy(f.probs())),
        **{f"svc_{k}": v for k, v in svc.to_dict().items()},
    }


def cached_importance(
    model: nn.Module,
    data: DataSplits,
    indices: Tensor,
    *,
    model_key: str,
    estimator: str,
    batch_size: int,
    cache_dir: Path,
) -> Importance:
    """The importance of ``data.train[indices]`` for ``model``, cached on disk."""
    key = digest({"model": model_key, "estimator": estimator, "batch": batch_size})
    path = cache_dir / f"importance-{key}.safetensors"
    if path.is_file():
        try:
            return Importance.load(path, model=model)
        except (OSError, ValueError) as exc:
            warnings.warn(f"recomputing a broken cached importance: {exc}", stacklevel=2)
    imp = compute_importance(
        model, loader(data.train, indices, batch_size=batch_size), estimator=estimator
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    imp.save(path)
    return imp


def run_method(
    spec: MethodSpec,
    original: nn.Module,
    data: DataSplits,
    *,
    train: Tensor,
    forget: Tensor,
    seed: int,
    batch_size: int,
    importance: Importance | None = None,
    stochastic_fraction: float | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Unlearn ``data.train[forget]`` from ``original`` (trained on ``data.train[train]``).

    SSD family: with ``importance`` (of ``train``); with ``stochastic_fraction`` instead, the
    importance of D is computed on a seeded random share of ``train`` and the forget batches
    are shuffled with ``seed`` — the seeded stochastic mode of :mod:`dampen.proofs.challenge`.
    Baselines get ``retain = train \\ forget``, shuffled with ``seed``. ``heldout`` test samples
    (``spec.heldout``) are drawn with ``seed``.
    """
    options: dict[str, Any] = spec.pinned(spec.options)
    retain = train[~torch.isin(train, forget)]
    shuffle = stochastic_fraction is not None
    forget_batches = loader(data.train, forget, batch_size=batch_size, shuffle=shuffle, seed=seed)
    if spec.method in SSD_FAMILY:
        if stochastic_fraction is not None:
            rng = np.random.default_rng(seed)
            keep = max(1, round(stochastic_fraction * len(train)))
            part = train[torch.from_numpy(np.sort(rng.choice(len(train), keep, replace=False)))]
            options["train"] = loader(
                data.train, part, batch_size=batch_size, shuffle=True, seed=seed
            )
        elif importance is not None:
            options["importance"] = importance
        else:
            options["train"] = loader(data.train, train, batch_size=batch_size)
    else:
        options["retain"] = loader(
            data.train, retain, batch_size=batch_size, shuffle=True, seed=seed
        )
    if spec.heldout:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(data.test), generator=g)[: spec.heldout].sort().values
        options["heldout"] = loader(data.test, pick, batch_size=EVAL_BATCH)
    result = unlearn(original, forget_batches, method=spec.method, seed=seed, **options)
    stats: dict[str, Any] = {k: result.stats[k] for k in ("alpha", "selected") if k in result.stats}
    seconds = result.stats.get("seconds")
    if isinstance(seconds, dict) and "total" in seconds:
        stats["seconds"] = float(seconds["total"])
    return result.model, stats
