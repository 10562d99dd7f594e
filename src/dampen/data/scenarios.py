"""Forgetting scenarios: which training samples to forget, built deterministically from data.

Every scenario holds sorted int64 index tensors into ``data.train`` (``forget``, ``retain``:
disjoint, their union is the training set) and into ``data.test`` (``test``, ``retain_test``,
``forget_test``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dampen.data.base import DataSplits, LabelledData


@dataclass(frozen=True, eq=False)
class Scenario:
    """A forgetting request on a data set.

    Attributes:
        name: e.g. ``"cifar100/full_class/rocket"``.
        kind: ``"full_class"``, ``"sub_class"``, ``"random"``, ``"poison"`` or
            ``"label_errors"`` (see :mod:`dampen.data.corrupted` for the last two).
        data: the data with the labels the model is trained on (superclasses for sub-class).
        forget: sorted train indices to forget.
        retain: sorted train indices to keep.
        test: every test index.
        retain_test: test indices of the retained classes (all test indices for random).
        forget_test: test indices of the forgotten class (empty for random).
        label_map: ``label_map[original label] = label in data``.
        forget_class: name of the forgotten (fine) class, ``None`` for the other kinds.
        seed: the seed used (random and corrective scenarios), else ``None``.
        clean: corrective scenarios (``"poison"``, ``"label_errors"``): the data before it was
            corrupted (same samples, true labels, no trigger); ``None`` otherwise.
        corrupted: corrective scenarios: every corrupted train index (Df is part of it).
        attack: ``"poison"``: the test images of the other classes with the trigger stamped
            on, with their true labels.
        target: ``"poison"``: the label the trigger leads to.
    """

    name: str
    kind: str
    data: DataSplits
    forget: Tensor
    retain: Tensor
    test: Tensor
    retain_test: Tensor
    forget_test: Tensor
    label_map: tuple[int, ...]
    forget_class: str | None = None
    seed: int | None = None
    clean: DataSplits | None = None
    corrupted: Tensor | None = None
    attack: LabelledData | None = None
    target: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("forget", "retain", "test", "retain_test", "forget_test", "corrupted"):
            value = getattr(self, field_name)
            if field_name == "corrupted" and value is None:
                continue
            if not isinstance(value, Tensor) or value.dtype != torch.int64 or value.dim() != 1:
                raise TypeError(f"{field_name} must be a 1-d int64 tensor")


def _split(mask: Tensor) -> tuple[Tensor, Tensor]:
    return mask.nonzero().flatten(), (~mask).nonzero().flatten()


def _check_data(data: object) -> DataSplits:
    if not isinstance(data, DataSplits):
        raise TypeError(f"data must be a DataSplits, got {type(data).__name__}")
    return data


def _by_label(data: DataSplits, label: int, argument: str) -> tuple[Tensor, ...]:
    """Training and test positions with and without ``label``: forget, retain, forget_test,
    retain_test. Raises ValueError naming ``argument`` when no training sample has it."""
    forget, retain = _split(data.train.y == label)
    if forget.numel() == 0:
        raise ValueError(f"{argument} has no training samples in {data.name}")
    return (forget, retain, *_split(data.test.y == label))


def full_class(data: DataSplits, cls: int | str) -> Scenario:
    """Forget every training sample of class ``cls`` (index or name).

    Raises:
        ValueError: if ``cls`` is unknown or has no training samples.
    """
    data = _check_data(data)
    label = data.train.class_index(cls, "cls")
    forget, retain, forget_test, retain_test = _by_label(data, label, f"cls={cls!r}")
    class_name = data.classes[label]
    return Scenario(
        name=f"{data.name}/full_class/{class_name}",
        kind="full_class",
        data=data,
        forget=forget,
        retain=retain,
        test=torch.arange(len(data.test)),
        retain_test=retain_test,
        forget_test=forget_test,
        label_map=tuple(range(data.num_classes)),
        forget_class=class_name,
    )


def superclass_label_map(
    classes: Sequence[str], superclass_map: Mapping[str, Sequence[str]]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Turn ``{superclass: (class, ...)}`` into ``(label_map, superclass names)``.

    Raises:
        ValueError: naming ``superclass_map`` if a class is missing, unknown or listed twice.
    """
    position = {c: i for i, c in enumerate(classes)}
    label_map = [-1] * len(classes)
    names = tuple(str(s) for s in superclass_map)
    for s, members in enumerate(superclass_map.values()):
        if isinstance(members, str):
            raise TypeError("superclass_map values must be sequences of class names, not str")
        for member in members:
            if member not in position:
                raise ValueError(f"superclass_map names an unknown class {member!r}")
            if label_map[position[member]] != -1:
                raise ValueError(f"superclass_map lists class {member!r} twice")
            label_map[position[member]] = s
    missing = [c for c, m in zip(classes, label_map, strict=True) if m == -1]
    if missing:
        raise ValueError(f"superclass_map does not place the classes {missing}")
    return tuple(label_map), names


def sub_class(
    data: DataSplits,
    fine_class: int | str,
    superclass_map: Mapping[str, Sequence[str]] | None = None,
) -> Scenario:
    """Forget one fine class of a model that predicts superclasses.

    Targets become superclass labels; the forget set is every training sample of
    ``fine_class``, labelled with its superclass.

    Args:
        data: data with fine labels.
        fine_class: the fine class to forget (index or name).
        superclass_map: ``{superclass: (fine class name, ...)}`` covering every class once;
            defaults to ``data.superclasses``.

    Raises:
        ValueError: if ``fine_class`` is unknown or alone in its superclass, or if
            ``superclass_map`` is missing or invalid.
    """
    data = _check_data(data)
    label = data.train.class_index(fine_class, "fine_class")
    if superclass_map is None:
        superclass_map = data.superclasses
        if superclass_map is None:
            raise ValueError(f"superclass_map is required: {data.name} defines no superclasses")
    label_map, names = superclass_label_map(data.classes, superclass_map)
    if sum(1 for m in label_map if m == label_map[label]) < 2:
        raise ValueError(
            f"fine_class={data.classes[label]!r} is alone in its superclass "
            f"{names[label_map[label]]!r}: sub-class forgetting would forget the whole class"
        )
    forget, retain, forget_test, retain_test = _by_label(data, label, f"fine_class={fine_class!r}")
    mapped = DataSplits(
        data.train.relabel(label_map, names),
        data.test.relabel(label_map, names),
        superclasses=None,
    )
    return Scenario(
        name=f"{data.name}/sub_class/{data.classes[label]}",
        kind="sub_class",
        data=mapped,
        forget=forget,
        retain=retain,
        test=torch.arange(len(data.test)),
        retain_test=retain_test,
        forget_test=forget_test,
        label_map=label_map,
        forget_class=data.classes[label],
    )


def random_samples(data: DataSplits, count: int, seed: int = 0) -> Scenario:
    """Forget exactly ``count`` training samples drawn uniformly with ``seed``.

    Raises:
        ValueError: if ``count`` is not in ``[1, len(data.train)]``.
    """
    data = _check_data(data)
    n = len(data.train)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if count > n:
        raise ValueError(f"count={count} exceeds the {n} training samples of {data.name}")
    rng = np.random.default_rng(int(seed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(rng.choice(n, size=int(count), replace=False))] = True
    forget, retain = _split(mask)
    return Scenario(
        name=f"{data.name}/random/{count}@{seed}",
        kind="random",
        data=data,
        forget=forget,
        retain=retain,
        test=torch.arange(len(data.test)),
        retain_test=torch.arange(len(data.test)),
        forget_test=torch.zeros(0, dtype=torch.int64),
        label_map=tuple(range(data.num_classes)),
        seed=int(seed),
    )
