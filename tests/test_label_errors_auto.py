"""``forget_kind="label_errors"`` with ``heldout=``: the classes the wrong labels name are
re-centred (``dampen.methods.recentre.restoring_offsets``) and the candidate with the least
held-out loss is applied. Oracles by loops, a stand-in searcher for the choice, and a real
digits request with its replay."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

import dampen
from dampen.data import load_dataset
from dampen.data.base import loader
from dampen.data.corrupted import label_errors
from dampen.methods.recentre import MARGIN, restoring_offset, restoring_offsets
from dampen.recipe import recipe_for, train_model

auto_alpha = importlib.import_module("dampen.methods.auto_alpha")


def looped_counts(logits: Tensor, offsets: list[float]) -> list[int]:
    """Oracle: per class, on how many rows it is the first arg-max of the shifted logits."""
    counts = [0] * logits.shape[1]
    for row in logits.tolist():
        shifted = [v + o for v, o in zip(row, offsets, strict=True)]
        counts[shifted.index(max(shifted))] += 1
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_restoring_offsets_restore_every_count_and_none_is_larger_than_needed(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(60, 5, generator=g) * 2
    before = looped_counts(logits, [0.0] * 5)
    counts = {1: before[1], 3: before[3]}
    lowered = logits.clone()
    lowered[:, 1] -= 1.5  # a dampening lowered the two named classes, by different amounts
    lowered[:, 3] -= 0.7
    offsets = restoring_offsets(lowered, counts)
    assert offsets.shape == (5,)
    assert [float(offsets[c]) for c in (0, 2, 4)] == [0.0, 0.0, 0.0]  # only named classes
    after = looped_counts(lowered, offsets.tolist())
    assert after[1] >= counts[1] and after[3] >= counts[3]
    # Together first: the least common offset after which the two win on 20 samples together
    # (grid oracle), below which neither goes ...
    grid = [i / 1000 for i in range(0, 8001)]
    common = next(
        c
        for c in grid
        if sum(looped_counts(lowered, [0.0, c, 0.0, c, 0.0])[k] for k in (1, 3))
        >= counts[1] + counts[3]
    )
    assert min(float(offsets[1]), float(offsets[3])) >= common - 2e-3
    for c in (1, 3):  # ... and each one raised further is the least that gives its count
        if offsets[c] > common + 2e-3:
            less = offsets.tolist()
            less[c] -= 2 * MARGIN
            assert looped_counts(lowered, less)[c] < counts[c]


def test_restoring_offsets_of_one_class_is_restoring_offset() -> None:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(30, 4, generator=g)
    count = int((logits.argmax(dim=1) == 2).sum())
    logits[:, 2] -= 2.0
    offsets = restoring_offsets(logits, {2: count})
    assert float(offsets[2]) == pytest.approx(restoring_offset(logits, 2, count), abs=1e-6)
    assert float(offsets.abs().sum()) == float(offsets[2])
    assert torch.equal(restoring_offsets(logits, {2: 0}), torch.zeros(4))
    with pytest.raises(ValueError, match="samples, classes"):
        restoring_offsets(torch.zeros(2, 3, 4), {0: 1})


def test_recentring_several_counts_each_label_of_the_forget_set() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 4)
    model = nn.Sequential(nn.Linear(4, 3))
    held = [(x, torch.tensor([0, 1, 2] * 4))]
    forget = [(x[:6], torch.tensor([2, 0, 2, 0, 0, 2]))]  # two labels
    assert auto_alpha.recentring(model, forget, held, None) is None  # one target only
    found = auto_alpha.recentring(model, forget, held, None, several=True)
    assert found is not None and found.several
    expected = looped_counts(model(x).detach(), [0.0, 0.0, 0.0])
    assert found.counts == {0: expected[0], 2: expected[2]}


@dataclass
class _Probe:
    k: int
    heldout_acc: float | None
    heldout_loss: float | None
    removed: float = 0.0


class StandIn:
    """Measures candidate k as given (accuracy 0.8 and loss 1.0 otherwise), and records
    which k were asked."""

    def __init__(self, measured: dict[int, tuple[float, float]]) -> None:
        self.measured = measured
        self.asked: list[int] = []

    def probe(self, k: int) -> _Probe:
        self.asked.append(k)
        acc, loss = self.measured.get(k, (0.8, 1.0))
        return _Probe(k, acc, loss, removed=k / 10_000)  # grows with k


def test_scored_best_takes_the_least_held_out_loss_above_the_floor() -> None:
    start = _Probe(0, 0.8, 0.9)
    measured = {10: (0.8, 0.85), 56: (0.79, 0.6), 178: (0.81, 0.6), 1000: (0.7, 0.3)}
    searcher = StandIn(measured)
    chosen, reason = auto_alpha._scored_best(searcher, start, 2000, 0.75, 1.0)
    # 1000 is below the floor; 178 ties with 56: fewer parameters win
    assert chosen.k == 56 and "least held-out loss" in reason
    # the candidates: 10^(i/4) up to the cap, the cap included
    expected = [1, 2, 3, 6, 10, 18, 32, 56, 100, 178, 316, 562, 1000, 1778, 2000]
    assert searcher.asked == expected
    assert auto_alpha._scored_best(StandIn(measured), start, 2000, None, 1.0)[0].k == 1000
    # above the ceiling of importance removed (1000 removes 0.1 here)
    assert auto_alpha._scored_best(StandIn(measured), start, 2000, None, 0.05)[0].k == 56
    # none lowers the loss where it started (ties included): nothing is applied
    chosen, reason = auto_alpha._scored_best(StandIn({56: (0.9, 0.9)}), start, 2000, 0.75, 1.0)
    assert chosen is start and "nothing dampened" in reason


@pytest.fixture(scope="module")
def request_() -> dict:
    """A digits CNN with 20 % of the 3 and 8 labels swapped, 30 % of them identified."""
    s = label_errors(load_dataset("digits"), 0.2, identified=0.3, seed=0, confuse=(3, 8))
    model = train_model(recipe_for("digits", epochs=8, crop_padding=0), s.data, seed=0).eval()
    return {
        "model": model,
        "imp": dampen.importance(model, loader(s.data.train, batch_size=64)),
        "forget": loader(s.data.train, s.forget, batch_size=64),
        "heldout": loader(s.data.test, torch.arange(100), batch_size=64),
    }


def test_a_label_errors_request_and_its_replay(request_: dict) -> None:
    model, imp, forget, heldout = (request_[k] for k in ("model", "imp", "forget", "heldout"))
    result = dampen.unlearn(
        model, forget, importance=imp, heldout=heldout, forget_kind="label_errors"
    )
    report = result.stats["auto"]
    assert report["recentred"] is True and report["search"] == "the least held-out loss"
    assert report["recentred_classes"] == [3, 8] and report["classes"] == 10
    assert len(report["class_offsets"]) == 2 and min(report["class_offsets"]) >= 0
    assert result.stats["selected"] > 0  # this request dampens: the path below is exercised
    assert report["importance_removed"] <= 0.025  # max_importance_removed's default
    # The held-out figures reported are the applied model's (bias moved): its loss is below
    # the original's, its accuracy within the 2-point floor.
    x = torch.cat([b[0] for b in heldout])
    y = torch.cat([b[1] for b in heldout])
    with torch.no_grad():
        after, before = result.model(x), model(x)
    acc = float((after.argmax(dim=1) == y).double().mean())
    assert acc == pytest.approx(report["heldout_acc"])
    assert float((before.argmax(dim=1) == y).double().mean()) == report["original_heldout_acc"]
    assert acc >= report["original_heldout_acc"] - 0.02
    loss = float(nn.functional.cross_entropy(after, y))
    assert loss == pytest.approx(report["heldout_loss"], rel=1e-5)
    assert float(nn.functional.cross_entropy(before, y)) == pytest.approx(
        report["original_heldout_loss"], rel=1e-5
    )
    assert loss < report["original_heldout_loss"]
    replayed = dampen.replay(model, forget, importance=imp, stats=result.stats, heldout=heldout)
    for name, p in result.model.state_dict().items():
        assert torch.equal(p, replayed.state_dict()[name]), name
    bad = {
        "offset of -1.0: it must be >= 0": {"class_offsets": [-1.0, 0.0]},
        "a class twice": {"recentred_classes": [3, 3]},
        "without recentred_classes": {"target_class": 3, "target_offset": 0.0},
        "class or offset": {"class_offsets": [0.0]},
        "without their offsets": {"class_offsets": None},
        "no output bias of 7 classes": {"classes": 7},
        "no re-centring": {"recentred": False},
    }
    for message, change in bad.items():
        tampered = {**result.stats, "auto": {**report, **change}}
        with pytest.raises(ValueError, match=message):
            dampen.replay(model, forget, importance=imp, stats=tampered, heldout=heldout)


def test_label_errors_without_recentring_still_takes_the_least_held_out_loss(
    request_: dict,
) -> None:
    model, imp, forget, heldout = (request_[k] for k in ("model", "imp", "forget", "heldout"))
    result = dampen.unlearn(
        model,
        forget,
        importance=imp,
        heldout=heldout,
        forget_kind="label_errors",
        recentre_target=False,
    )
    report = result.stats["auto"]
    assert "recentred" not in report and "class_offsets" not in report
    assert report["search"] == "the least held-out loss"
    x = torch.cat([b[0] for b in heldout])
    y = torch.cat([b[1] for b in heldout])
    with torch.no_grad():  # measured on the applied model, without offsets
        after = result.model(x)
    assert float(nn.functional.cross_entropy(after, y)) == pytest.approx(
        report["heldout_loss"], rel=1e-5
    )
    acc = float((after.argmax(dim=1) == y).double().mean())
    assert acc == pytest.approx(report["heldout_acc"])
