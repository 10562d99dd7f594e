"""Corrective scenarios (SPEC §3): training data with a backdoor or wrong labels, of which the
model owner has identified only a part.

The corruption is drawn with a seed; the identified part is a prefix of a seeded order of the
corrupted samples, so requests that identify more of the same corruption are nested (10 % ⊂
30 % ⊂ 100 %) and share one trained model. Df is the identified part *with the labels the
model was trained with*; the rest of the corruption stays in Dr, unseen by the owner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dampen.data.base import DataSplits, LabelledData
from dampen.data.scenarios import Scenario

POISON_TARGET = 0
"""The label a BadNets trigger leads to (SPEC §3)."""


def patch_size(image_size: int) -> int:
    """The trigger's side: 2 pixels on images of at most 16 pixels (digits' 8×8), else 3."""
    return 2 if image_size <= 16 else 3


def stamp(x: Tensor, value: float) -> Tensor:
    """A copy of images ``x`` ``[N, C, H, W]`` with the trigger (a square of ``value`` in the
    bottom-right corner, every channel) stamped on."""
    size = patch_size(int(x.shape[-2]))
    out = x.clone()
    out[..., -size:, -size:] = value
    return out


def _share(value: float, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number, got {type(value).__name__}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{argument} must lie in (0, 1], got {value}")
    return float(value)


def _identified(order: Tensor, identified: float | None, identified_count: int | None) -> Tensor:
    """The identified prefix of ``order`` (sorted), from a share or a count (exactly one)."""
    if (identified is None) == (identified_count is None):
        raise ValueError("give exactly one of identified (a share) and identified_count")
    if identified_count is not None:
        if isinstance(identified_count, bool) or not isinstance(identified_count, int):
            raise TypeError("identified_count must be an int")
        if not 1 <= identified_count <= len(order):
            raise ValueError(
                f"identified_count={identified_count} must lie in [1, {len(order)}] (the "
                "corrupted samples)"
            )
        count = identified_count
    else:
        count = max(1, math.ceil(_share(identified, "identified") * len(order) - 1e-9))  # type: ignore[arg-type]
    return order[:count].sort().values


def _choose(pool: np.ndarray, share: float, of: int, rng: np.random.Generator) -> Tensor:
    """``round(share · of)`` (at least 1) positions drawn from ``pool``, in drawn order."""
    count = max(1, round(share * of))
    if count > len(pool):
        raise ValueError(f"the share asks for {count} samples but only {len(pool)} can be used")
    return torch.from_numpy(rng.choice(pool, size=count, replace=False)).long()


def _label(identified: float | None, identified_count: int | None) -> str:
    if identified_count is not None:
        return f"id{identified_count}"
    return f"id{100 * float(identified or 0):g}%"


def poison(
    data: DataSplits,
    share: float,
    *,
    identified: float | None = None,
    identified_count: int | None = None,
    seed: int = 0,
    target: int = POISON_TARGET,
) -> Scenario:
    """A BadNets backdoor on ``share`` of the training samples, part of it identified.

    ``round(share · |train|)`` samples (at least one) of the other classes get the trigger (a
    square of the training data's maximum value in the bottom-right corner) and the label
    ``target``. An identified share is rounded up (10 % of 72 samples identifies 8).

    Args:
        data: the clean data.
        share: poisoned share of the training set, in (0, 1].
        identified: share of the poison the owner identified (Df), in (0, 1];
        identified_count: or a number of identified samples (e.g. 1).
        seed: draws the poisoned samples and the order in which they are identified.
        target: the label the trigger leads to.

    Raises:
        ValueError: on shares outside (0, 1], an unknown target, or too few samples.
    """
    train, test = data.train, data.test
    target = train.class_index(target, "target")
    share = _share(share, "share")
    rng = np.random.default_rng(int(seed))
    pool = (train.y != target).nonzero().flatten().numpy()
    poisoned = _choose(pool, share, len(train), rng)
    order = poisoned[torch.from_numpy(rng.permutation(len(poisoned)))]
    forget = _identified(order, identified, identified_count)
    value = float(train.x.max())  # of the training data only: the name below keys the cache
    x, y = train.x.clone(), train.y.clone()
    x[poisoned] = stamp(train.x[poisoned], value)
    y[poisoned] = target
    name = f"{train.name}[poison {100 * share:g}% to {target}, seed {seed}]"
    corrupt = DataSplits(
        LabelledData(x, y, train.classes, name), test, superclasses=data.superclasses
    )
    others = (test.y != target).nonzero().flatten()
    attack = LabelledData(
        stamp(test.x[others], value), test.y[others], test.classes, f"{test.name}[triggered]"
    )
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[forget] = True
    everything = torch.arange(len(test))
    return Scenario(
        name=f"{data.name}/poison/{100 * share:g}%/{_label(identified, identified_count)}@{seed}",
        kind="poison",
        data=corrupt,
        forget=forget,
        retain=(~mask).nonzero().flatten(),
        test=everything,
        retain_test=everything,
        forget_test=torch.zeros(0, dtype=torch.int64),
        label_map=tuple(range(data.num_classes)),
        seed=int(seed),
        clean=data,
        corrupted=poisoned.sort().values,
        attack=attack,
        target=target,
    )


def label_errors(
    data: DataSplits,
    share: float,
    *,
    identified: float | None = None,
    identified_count: int | None = None,
    seed: int = 0,
    confuse: Sequence[int | str] | None = None,
) -> Scenario:
    """Wrong labels on part of the training set, part of them identified.

    Without ``confuse``: ``round(share · |train|)`` samples (at least one) get a label drawn
    uniformly from the other classes. With ``confuse=(a, b)`` (interclass confusion):
    ``round(share · |a ∪ b|)`` samples of the two classes get the other one's label; ``(b, a)``
    gives the same data. An identified share is rounded up. ``forget_test`` holds the
    test samples of the confused classes (of every class for random flips): their accuracy is
    the metric.

    Raises:
        ValueError: on shares outside (0, 1], unknown or equal classes, or too few samples.
    """
    train, test = data.train, data.test
    share = _share(share, "share")
    rng = np.random.default_rng(int(seed))
    y = train.y.clone()
    if confuse is None:
        flipped = _choose(np.arange(len(train)), share, len(train), rng)
        offsets = torch.from_numpy(rng.integers(1, data.num_classes, size=len(flipped)))
        y[flipped] = (train.y[flipped] + offsets) % data.num_classes
        forget_test = torch.arange(len(test))
        how = "random"
    else:
        if isinstance(confuse, (str, bytes)) or len(confuse) != 2:
            raise ValueError(f"confuse must name two classes, got {confuse!r}")
        a, b = sorted(train.class_index(c, "confuse") for c in confuse)
        if a == b:
            raise ValueError(f"confuse must name two different classes, got {confuse!r}")
        pool = ((train.y == a) | (train.y == b)).nonzero().flatten().numpy()
        flipped = _choose(pool, share, len(pool), rng)
        y[flipped] = torch.where(train.y[flipped] == a, b, a)
        forget_test = ((test.y == a) | (test.y == b)).nonzero().flatten()
        how = f"{data.classes[a]}<->{data.classes[b]}"
    order = flipped[torch.from_numpy(rng.permutation(len(flipped)))]
    forget = _identified(order, identified, identified_count)
    name = f"{train.name}[label errors {how} {100 * share:g}%, seed {seed}]"
    corrupt = DataSplits(
        LabelledData(train.x, y, train.classes, name), test, superclasses=data.superclasses
    )
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[forget] = True
    return Scenario(
        name=f"{data.name}/label_errors/{how}/{100 * share:g}%/"
        f"{_label(identified, identified_count)}@{seed}",
        kind="label_errors",
        data=corrupt,
        forget=forget,
        retain=(~mask).nonzero().flatten(),
        test=torch.arange(len(test)),
        retain_test=torch.arange(len(test)),
        forget_test=forget_test,
        label_map=tuple(range(data.num_classes)),
        seed=int(seed),
        clean=data,
        corrupted=flipped.sort().values,
    )
