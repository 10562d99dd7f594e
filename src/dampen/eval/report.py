"""Running models over data splits and gathering the unlearning metrics into one report.

The loop that feeds data (:func:`collect_outputs`) is kept apart from the metrics
(:mod:`dampen.eval.functional`, :mod:`dampen.eval.mia`) and from what each metric means
(:data:`METRICS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import Enum
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dampen.core.batches import (
    ForwardFn,
    check_label_range,
    checked_forward,
    class_targets,
    default_forward,
)
from dampen.core.progress import progress_bar
from dampen.eval.functional import accuracy, activation_distance, entropy, js_divergence
from dampen.eval.mia import loss_threshold_mia, paper_mia
from dampen.eval.population import SVCMIA, svc_mia, zrf

REQUIRED_SPLITS = ("retain", "forget", "test")
"""Splits :func:`evaluate` cannot do without."""
OPTIONAL_SPLITS = ("retain_test", "forget_test")
"""Test samples of the retained / forgotten classes (class-forgetting scenarios)."""


# --------------------------------------------------------------------------- what metrics mean


class Direction(str, Enum):
    """Which way a metric improves."""

    HIGHER = "higher"
    LOWER = "lower"
    CLOSER_TO_RETRAINED = "closer_to_retrained"


@dataclass(frozen=True)
class MetricInfo:
    """What a reported metric means and which way is better.

    For ``Direction.CLOSER_TO_RETRAINED`` the target is stored in the report field
    ``retrained_<name>``.
    """

    name: str
    direction: Direction
    description: str

    @property
    def reference(self) -> str | None:
        """Name of the report field holding the retrained model's value, if any."""
        if self.direction is Direction.CLOSER_TO_RETRAINED:
            return f"retrained_{self.name}"
        return None


def _info(name: str, direction: Direction, description: str) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, direction, description)


METRICS: Mapping[str, MetricInfo] = MappingProxyType(
    dict(
        [
            _info("retain_acc", Direction.HIGHER, "accuracy on the retain set Dr"),
            _info("forget_acc", Direction.CLOSER_TO_RETRAINED, "accuracy on the forget set Df"),
            _info("test_acc", Direction.HIGHER, "accuracy on the test set"),
            _info("retain_test_acc", Direction.HIGHER, "test accuracy on the retained classes"),
            _info(
                "forget_test_acc",
                Direction.CLOSER_TO_RETRAINED,
                "test accuracy on the forgotten classes",
            ),
            _info(
                "mia",
                Direction.CLOSER_TO_RETRAINED,
                "paper's entropy MIA: fraction of Df called member",
            ),
            _info(
                "loss_mia_auc",
                Direction.CLOSER_TO_RETRAINED,
                "loss-threshold MIA AUC, Df vs unseen samples",
            ),
            _info(
                "loss_mia_tpr_at_1fpr",
                Direction.CLOSER_TO_RETRAINED,
                "loss-threshold MIA TPR at 1% FPR, Df vs unseen samples",
            ),
            _info(
                "svc_mia_entropy",
                Direction.CLOSER_TO_RETRAINED,
                "SalUn-style SVC attack on the entropy: fraction of Df called member",
            ),
            _info(
                "svc_mia_confidence",
                Direction.CLOSER_TO_RETRAINED,
                "SalUn-style SVC attack on the confidence: fraction of Df called member",
            ),
            _info(
                "zrf",
                Direction.CLOSER_TO_RETRAINED,
                "ZRF: 1 − JS (summed over classes) to a random-init model on Df",
            ),
            _info(
                "js_to_retrained",
                Direction.LOWER,
                "Jensen-Shannon divergence to the retrained model's outputs on Df",
            ),
            _info(
                "activation_distance_to_retrained",
                Direction.LOWER,
                "mean L2 distance to the retrained model's probabilities on Df",
            ),
        ]
    )
)
"""Every metric in an :class:`EvalReport`, keyed by field name, with its direction."""


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class EvalReport:
    """Unlearning metrics of one model; ``None`` where a split or the retrained model is missing.

    Accuracies are fractions in ``[0, 1]`` weighted by sample count. ``retrained_*`` fields are
    the retrained model's own values, the targets of the "closer to retrained" metrics.
    """

    retain_acc: float
    forget_acc: float
    test_acc: float
    mia: float
    loss_mia_auc: float
    loss_mia_tpr_at_1fpr: float
    retain_test_acc: float | None = None
    forget_test_acc: float | None = None
    js_to_retrained: float | None = None
    activation_distance_to_retrained: float | None = None
    retrained_forget_acc: float | None = None
    retrained_forget_test_acc: float | None = None
    retrained_mia: float | None = None
    retrained_loss_mia_auc: float | None = None
    retrained_loss_mia_tpr_at_1fpr: float | None = None
    svc_mia_entropy: float | None = None
    svc_mia_confidence: float | None = None
    zrf: float | None = None
    retrained_svc_mia_entropy: float | None = None
    retrained_svc_mia_confidence: float | None = None
    retrained_zrf: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """All fields as a JSON-able ``{name: float or None}`` dict."""
        out: dict[str, float | None] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = None if value is None else float(value)
        return out

    def gaps(self) -> dict[str, float | None]:
        """``|value - retrained value|`` per "closer to retrained" metric (``None`` if unknown or
        not defined, e.g. a TPR at 1 % FPR with fewer than 100 non-members)."""
        out: dict[str, float | None] = {}
        for name, info in METRICS.items():
            if info.reference is None:
                continue
            value, target = getattr(self, name), getattr(self, info.reference)
            known = value is not None and target is not None
            out[name] = abs(value - target) if known and math.isfinite(value - target) else None
        return out

    def to_text(self) -> str:
        """A small human-readable table: metric, value, direction and retrained target."""
        arrows = {Direction.HIGHER: "↑", Direction.LOWER: "↓", Direction.CLOSER_TO_RETRAINED: "≈"}
        width = max(len(name) for name in METRICS)
        lines = []
        for name, info in METRICS.items():
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                continue
            line = f"{name:<{width}}  {value:8.4f}  {arrows[info.direction]}"
            target = getattr(self, info.reference) if info.reference else None
            if target is not None:
                line += f"  (retrained {target:.4f})"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# --------------------------------------------------------------------------- the feeding loop


@dataclass(frozen=True, eq=False)
class Outputs:
    """A model's outputs over one split, on the CPU.

    Attributes:
        logits: ``[n, classes]`` float32.
        targets: ``[n]`` integer class indices.
        losses: ``[n]`` per-sample cross-entropy, float64 (computed from the float32 logits).
    """

    logits: Tensor
    targets: Tensor
    losses: Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def probs(self) -> Tensor:
        """Softmax probabilities ``[n, classes]`` in float64."""
        return torch.softmax(self.logits.double(), dim=1)


@contextmanager
def _eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """Put ``models`` in eval mode; restore every submodule's own flag afterwards."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


def _check_outputs(logits: Any, targets: Any) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"forward must return logits of shape [n, classes], got {shape}")
    if not isinstance(targets, Tensor) or targets.dim() != 1:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise TypeError(f"forward must return targets of shape [n], got {shape}")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"forward returned {logits.shape[0]} rows of logits but {targets.shape[0]} targets"
        )
    check_label_range(targets, int(logits.shape[1]))


def _collect_many(
    models: Sequence[nn.Module],
    batches: Iterable[Any],
    forward: ForwardFn,
    progress: bool,
    desc: str,
) -> list[Outputs]:
    """Feed every batch to each model in one pass, so their outputs stay sample-aligned."""
    logit_parts: list[list[Tensor]] = [[] for _ in models]
    target_parts: list[Tensor] = []
    with _eval_mode(models), torch.no_grad():
        for batch in progress_bar(batches, enabled=progress, desc=desc):
            targets: Tensor | None = None
            for i, model in enumerate(models):
                logits, model_targets = forward(model, batch)
                model_targets = class_targets(model_targets)
                _check_outputs(logits, model_targets)
                logit_parts[i].append(logits.detach().to("cpu", torch.float32))
                if targets is None:
                    targets = model_targets.detach().to("cpu", torch.long)
            if targets is not None:
                target_parts.append(targets)
    all_targets = torch.cat(target_parts) if target_parts else torch.empty(0, dtype=torch.long)
    outputs = []
    for parts in logit_parts:
        logits = torch.cat(parts) if parts else torch.empty(0, 0)
        losses = (
            F.cross_entropy(logits.double(), all_targets, reduction="none")
            if len(all_targets)
            else torch.empty(0, dtype=torch.float64)
        )
        outputs.append(Outputs(logits=logits, targets=all_targets, losses=losses))
    return outputs


def collect_outputs(
    model: nn.Module,
    batches: Iterable[Any],
    forward: ForwardFn = default_forward,
    progress: bool = False,
) -> Outputs:
    """Run ``model`` over ``batches`` without gradients, in eval mode.

    The train/eval flag of every submodule is restored afterwards, also after an error.

    Args:
        model: The network.
        batches: Any iterable of batches (``DataLoader``, list, generator).
        forward: ``forward(model, batch) -> (logits, targets)``.
        progress: Show a progress bar.

    Returns:
        Logits, targets and per-sample cross-entropy on the CPU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(batches, Iterable):
        raise TypeError(f"batches must be iterable, got {type(batches).__name__}")
    return _collect_many([model], batches, forward, progress, desc="outputs")[0]


# --------------------------------------------------------------------------- evaluate()


@dataclass(frozen=True)
class _Attacks:
    mia: float
    loss_mia_auc: float
    loss_mia_tpr_at_1fpr: float
    svc: SVCMIA | None
    zrf: float | None


def _attacks(outs: Mapping[str, Outputs], incompetent: Outputs | None) -> _Attacks:
    unseen = outs["forget_test"] if "forget_test" in outs else outs["test"]
    mia = paper_mia(
        entropy(outs["retain"].probs()),
        entropy(outs["test"].probs()),
        entropy(outs["forget"].probs()),
    )
    loss_mia = loss_threshold_mia(outs["forget"].losses, unseen.losses)
    svc = None
    if outs["forget"].targets.dim() == 1:  # the SVC features need integer labels
        svc = svc_mia(*((outs[k].probs(), outs[k].targets) for k in ("retain", "test", "forget")))
    z = None if incompetent is None else zrf(outs["forget"].probs(), incompetent.probs())
    return _Attacks(mia, loss_mia.auc, loss_mia.tpr_at_1fpr, svc, z)


def _acc(out: Outputs | None) -> float | None:
    return None if out is None else accuracy(out.logits, out.targets)


def _check_splits(splits: Any) -> None:
    if not isinstance(splits, Mapping):
        raise TypeError(
            f"splits must be a mapping of split name to batches, got {type(splits).__name__}"
        )
    known = REQUIRED_SPLITS + OPTIONAL_SPLITS
    unknown = sorted(str(k) for k in splits if k not in known)
    if unknown:
        raise ValueError(
            f"splits has unknown split(s) {unknown}; expected keys among {list(known)}"
        )
    for name in REQUIRED_SPLITS:
        if splits.get(name) is None:
            raise ValueError(f"splits is missing the required split {name!r}")
    for name, batches in splits.items():
        if batches is not None and not isinstance(batches, Iterable):
            raise TypeError(
                f"split {name!r} must be an iterable of batches, got {type(batches).__name__}"
            )
        if name in REQUIRED_SPLITS and isinstance(batches, Sized) and len(batches) == 0:
            raise ValueError(f"split {name!r} is empty")


def evaluate(
    model: nn.Module,
    splits: Mapping[str, Iterable[Any]],
    retrained: nn.Module | None = None,
    *,
    incompetent: nn.Module | None = None,
    forward: ForwardFn = default_forward,
    progress: bool = False,
) -> EvalReport:
    """Measure how well ``model`` has forgotten: accuracies, membership attacks, distances.

    Each split is read once; when ``retrained`` is given, both models see each batch in the
    same pass, so their outputs on the forget set are compared sample by sample (shuffled
    loaders and single-use generators are fine).

    Args:
        model: The unlearned (or original) model.
        splits: ``{"retain", "forget", "test"}`` (required) and optionally ``"retain_test"`` and
            ``"forget_test"``, each an iterable of batches. A missing or empty optional split
            gives ``None`` for its metrics. The loss attack compares Df with ``"forget_test"``
            when present (unseen samples of the same distribution), else with ``"test"``.
        retrained: A model retrained without Df; adds the distances to it and its own attack
            values (the targets).
        incompetent: A randomly initialised model of the same architecture; adds ZRF.
        forward: ``forward(model, batch) -> (logits, targets)``.
        progress: Show progress bars.

    Returns:
        An :class:`EvalReport`.

    Raises:
        ValueError: if a required split is missing or empty, or a key is unknown.
        TypeError: if ``model``/``retrained`` is not a module or ``splits`` not a mapping.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if retrained is not None and not isinstance(retrained, nn.Module):
        raise TypeError(
            f"retrained must be a torch.nn.Module or None, got {type(retrained).__name__}"
        )
    _check_splits(splits)
    if forward is not default_forward:
        forward = checked_forward(forward) or default_forward

    if incompetent is not None and not isinstance(incompetent, nn.Module):
        raise TypeError(
            f"incompetent must be a torch.nn.Module or None, got {type(incompetent).__name__}"
        )
    models = [model] if retrained is None else [model, retrained]
    ours: dict[str, Outputs] = {}
    theirs: dict[str, Outputs] = {}
    random_forget: Outputs | None = None
    for name in REQUIRED_SPLITS + OPTIONAL_SPLITS:
        batches = splits.get(name)
        if batches is None:
            continue
        # The retrained model is not needed on retain_test: none of its metrics use it.
        fed = models[:1] if name == "retain_test" else models
        if name == "forget" and incompetent is not None:
            fed = [*fed, incompetent]
        outs = _collect_many(fed, batches, forward, progress, desc=f"eval {name}")
        if name == "forget" and incompetent is not None:
            random_forget = outs.pop()
        if len(outs[0]) == 0:
            if name in REQUIRED_SPLITS:
                raise ValueError(f"split {name!r} is empty")
            continue
        for who, out in zip(("model", "retrained"), outs, strict=False):
            if not bool(torch.isfinite(out.logits).all()):
                raise ValueError(f"{who} produced NaN or infinite logits on split {name!r}")
        ours[name] = outs[0]
        if len(outs) > 1:
            theirs[name] = outs[1]

    attacks = _attacks(ours, random_forget)
    js = act = retrained_forget_acc = retrained_forget_test_acc = None
    target: _Attacks | None = None
    if retrained is not None:
        target = _attacks(theirs, random_forget)
        p, q = ours["forget"].probs(), theirs["forget"].probs()
        js, act = js_divergence(p, q), activation_distance(p, q)
        retrained_forget_acc = _acc(theirs["forget"])
        retrained_forget_test_acc = _acc(theirs.get("forget_test"))
    return EvalReport(
        retain_acc=accuracy(ours["retain"].logits, ours["retain"].targets),
        forget_acc=accuracy(ours["forget"].logits, ours["forget"].targets),
        test_acc=accuracy(ours["test"].logits, ours["test"].targets),
        retain_test_acc=_acc(ours.get("retain_test")),
        forget_test_acc=_acc(ours.get("forget_test")),
        mia=attacks.mia,
        loss_mia_auc=attacks.loss_mia_auc,
        loss_mia_tpr_at_1fpr=attacks.loss_mia_tpr_at_1fpr,
        js_to_retrained=js,
        activation_distance_to_retrained=act,
        retrained_forget_acc=retrained_forget_acc,
        retrained_forget_test_acc=retrained_forget_test_acc,
        retrained_mia=None if target is None else target.mia,
        retrained_loss_mia_auc=None if target is None else target.loss_mia_auc,
        retrained_loss_mia_tpr_at_1fpr=None if target is None else target.loss_mia_tpr_at_1fpr,
        svc_mia_entropy=None if attacks.svc is None else attacks.svc.entropy,
        svc_mia_confidence=None if attacks.svc is None else attacks.svc.confidence,
        zrf=attacks.zrf,
        retrained_svc_mia_entropy=None
        if target is None or target.svc is None
        else target.svc.entropy,
        retrained_svc_mia_confidence=None
        if target is None or target.svc is None
        else target.svc.confidence,
        retrained_zrf=None if target is None else target.zrf,
    )
