"""Tests for dampen.eval: pure metrics against hand-computed values, then evaluate() end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from dampen.eval import (
    METRICS,
    Direction,
    EvalReport,
    accuracy,
    activation_distance,
    collect_outputs,
    entropy,
    evaluate,
    js_divergence,
    loss_threshold_mia,
    paper_mia,
    roc_auc,
    tpr_at_fpr,
)

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- accuracy / entropy


def test_accuracy_counts_samples_not_batches() -> None:
    # Batch 1: one sample, correct. Batch 2: three samples, none correct.
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, targets) == pytest.approx(0.25)
    per_batch_average = (accuracy(logits[:1], targets[:1]) + accuracy(logits[1:], targets[1:])) / 2
    assert per_batch_average == pytest.approx(0.5)  # the trap the paper's code fell into


def test_accuracy_accepts_numpy_and_validates() -> None:
    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
    with pytest.raises(ValueError, match="targets"):
        accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="targets"):
        accuracy(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="zero samples"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match="logits"):
        accuracy([[0.0, 1.0]], torch.zeros(1, dtype=torch.long))  # type: ignore[arg-type]


def test_entropy_values() -> None:
    uniform = torch.full((3, 10), 0.1)
    assert torch.allclose(entropy(uniform), torch.full((3,), math.log(10), dtype=torch.float64))
    one_hot = torch.tensor([[1.0, 0.0, 0.0]])
    assert entropy(one_hot).item() == 0.0  # 0 log 0 = 0, no NaN
    assert entropy(np.array([0.5, 0.5])).item() == pytest.approx(LN2)


def test_entropy_rejects_logits() -> None:
    with pytest.raises(ValueError, match=r"probs.*negative"):
        entropy(torch.tensor([[-1.0, 2.0]]))
    with pytest.raises(ValueError, match="sum to 1"):
        entropy(torch.tensor([[3.0, 2.0]]))


# --------------------------------------------------------------------------- distances


def test_js_divergence_hand_values() -> None:
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])) == pytest.approx(
        LN2
    )
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4), JS = (3/4) ln(4/3) by hand.
    hand = 0.75 * math.log(4 / 3)
    assert js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(
        hand
    )
    # Mean over samples: (ln 2 + 0) / 2.
    pp = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    qq = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert js_divergence(pp, qq) == pytest.approx(LN2 / 2)


def test_js_divergence_bounds_and_shape_check() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 7, generator=gen) * 5, dim=1)
    q = torch.softmax(torch.randn(50, 7, generator=gen) * 5, dim=1)
    value = js_divergence(p, q)
    assert 0.0 <= value <= LN2
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(p, q[:, :6].softmax(dim=1))


def test_activation_distance_hand_value() -> None:
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]])
    hand = (math.sqrt(2) + 0.0 + math.sqrt(0.4**2 + 0.4**2)) / 3
    assert activation_distance(p, q) == pytest.approx(hand)
    with pytest.raises(ValueError, match="no samples"):
        activation_distance(torch.zeros(0, 2), torch.zeros(0, 2))


# --------------------------------------------------------------------------- attacks


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    members = rng.integers(0, 5, size=37).astype(float)
    nonmembers = rng.integers(1, 7, size=53).astype(float)
    labels = np.r_[np.ones(37), np.zeros(53)]
    expected = roc_auc_score(labels, np.r_[members, nonmembers])
    assert roc_auc(members, nonmembers) == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=30),
    st.lists(st.integers(0, 6), min_size=1, max_size=30),
)
def test_loss_auc_equals_sklearn(forget: list[int], unseen: list[int]) -> None:
    f, u = np.array(forget, float), np.array(unseen, float)
    labels = np.r_[np.ones(f.size), np.zeros(u.size)]
    expected = roc_auc_score(labels, -np.r_[f, u])  # lower loss = member
    assert loss_threshold_mia(f, u).auc == pytest.approx(expected)


def test_loss_auc_extremes() -> None:
    low, high = torch.zeros(10), torch.ones(10)
    assert loss_threshold_mia(low, high).auc == 1.0
    assert loss_threshold_mia(high, low).auc == 0.0
    assert loss_threshold_mia(low, low).auc == 0.5


def test_tpr_at_1pct_fpr_constructed() -> None:
    unseen = np.arange(1.0, 101.0)  # 100 non-members with losses 1..100
    # 30 members below every unseen loss, 20 between the first and second, 50 far above.
    forget = np.r_[np.full(30, 0.5), np.full(20, 1.5), np.full(50, 50.0)]
    # 1 % of 100 non-members = 1 false positive allowed: threshold 1.5 catches 50 members.
    assert loss_threshold_mia(forget, unseen).tpr_at_1fpr == pytest.approx(0.5)
    # A tie at the boundary: members sharing loss 2.0 with a non-member cannot be taken alone.
    tied = np.r_[np.full(30, 0.5), np.full(20, 2.0), np.full(50, 50.0)]
    assert loss_threshold_mia(tied, unseen).tpr_at_1fpr == pytest.approx(0.3)
    # No threshold with zero false positives catches anything here.
    assert tpr_at_fpr(np.array([1.0]), np.array([1.0, 2.0]), max_fpr=0.0) == 0.0


def test_attack_input_validation() -> None:
    with pytest.raises(ValueError, match="forget_losses is empty"):
        loss_threshold_mia(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="unseen_losses contains NaN"):
        loss_threshold_mia(np.array([1.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="max_fpr"):
        tpr_at_fpr(np.array([1.0]), np.array([1.0]), max_fpr=2.0)
    with pytest.raises(ValueError, match="retain_entropy"):
        paper_mia(np.zeros((2, 2)), np.zeros(3), np.zeros(3))


def test_paper_mia_on_separable_entropies() -> None:
    rng = np.random.default_rng(0)
    retain = rng.uniform(0.0, 0.2, size=300)  # members: confident, low entropy
    test = rng.uniform(1.0, 2.0, size=100)  # non-members: uncertain
    like_retain = rng.uniform(0.0, 0.2, size=50)
    like_test = rng.uniform(1.0, 2.0, size=50)
    assert paper_mia(retain, test, like_retain) >= 0.98
    assert paper_mia(retain, test, like_test) <= 0.02
    # Deterministic: same inputs, same answer.
    mixed = np.r_[like_retain, like_test]
    assert paper_mia(retain, test, mixed) == paper_mia(retain, test, mixed)


# --------------------------------------------------------------------------- model-facing layer


def _argmax_model() -> nn.Sequential:
    """Logits equal the 2-d input, so the prediction is the larger coordinate."""
    linear = nn.Linear(2, 2)
    norm = nn.BatchNorm1d(2, affine=False)
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)  # eval-mode BatchNorm is then the identity
    return nn.Sequential(linear, nn.Dropout(0.5), norm)


def _batches(points: list[tuple[float, float]], labels: list[int], sizes: list[int]) -> list[Any]:
    x, y = torch.tensor(points), torch.tensor(labels)
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def _splits() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    # retain: 5 samples in batches of 1 and 4; the first is right, the other four wrong -> 1/5.
    retain = _batches([(2.0, 0.0)] + [(2.0, 0.0)] * 4, [0, 1, 1, 1, 1], [1, 4])
    # forget: 3 of 4 right.
    forget = _batches([(3.0, 0.0), (0.0, 3.0), (3.0, 0.0), (0.0, 3.0)], [0, 1, 0, 0], [3, 1])
    test_x = torch.randn(12, 2, generator=gen)
    test = [
        (test_x[:7], torch.zeros(7, dtype=torch.long)),
        (test_x[7:], torch.ones(5, dtype=torch.long)),
    ]
    return {"retain": retain, "forget": forget, "test": test}


def test_collect_outputs_shapes_and_losses() -> None:
    model = _argmax_model()
    out = collect_outputs(model, _splits()["forget"])
    assert len(out) == 4
    assert out.logits.dtype == torch.float32 and out.logits.shape == (4, 2)
    expected = nn.functional.cross_entropy(out.logits.double(), out.targets, reduction="none")
    assert torch.allclose(out.losses, expected)


def test_evaluate_hand_checked_accuracy() -> None:
    report = evaluate(_argmax_model(), _splits())
    assert report.retain_acc == pytest.approx(1 / 5)  # a per-batch average would give 0.5
    assert report.forget_acc == pytest.approx(3 / 4)
    assert report.retain_test_acc is None and report.forget_test_acc is None
    assert report.js_to_retrained is None and report.retrained_mia is None
    assert 0.0 <= report.mia <= 1.0 and 0.0 <= report.loss_mia_auc <= 1.0
    d = report.to_dict()
    assert set(d) == {f for f in EvalReport.__dataclass_fields__}
    json.dumps(d)


def test_evaluate_with_retrained_and_optional_splits() -> None:
    model = _argmax_model()
    splits = _splits()
    splits["forget_test"] = _batches([(1.0, 0.0), (0.0, 1.0)], [0, 0], [2])
    splits["retain_test"] = []  # empty optional split -> None

    def once(items: list[Any]) -> Iterator[Any]:  # single-use generator: read in one pass
        yield from items

    splits["forget"] = once(splits["forget"])
    report = evaluate(model, splits, retrained=model)
    assert report.js_to_retrained == pytest.approx(0.0, abs=1e-12)
    assert report.activation_distance_to_retrained == pytest.approx(0.0, abs=1e-12)
    assert report.retrained_mia == report.mia
    assert report.retrained_loss_mia_auc == report.loss_mia_auc
    assert report.forget_test_acc == pytest.approx(0.5)
    assert report.retain_test_acc is None
    assert all(v == 0.0 for v in report.gaps().values() if v is not None)
    # The loss attack compares Df with forget_test when given: forget losses are lower here.
    f = collect_outputs(model, _splits()["forget"]).losses
    u = collect_outputs(model, splits["forget_test"]).losses
    assert report.loss_mia_auc == pytest.approx(loss_threshold_mia(f, u).auc)
    assert "mia" in report.to_text()


def test_evaluate_restores_modes_also_after_error() -> None:
    model = _argmax_model()
    model.train()
    model[2].eval()  # a mixed state that model.train() would not recreate
    before = [m.training for m in model.modules()]
    evaluate(model, _splits())
    assert [m.training for m in model.modules()] == before

    def broken(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        assert not m.training
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, _splits(), forward=broken)
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_split_errors() -> None:
    model = _argmax_model()
    splits = _splits()
    del splits["test"]
    with pytest.raises(ValueError, match="'test'"):
        evaluate(model, splits)
    with pytest.raises(ValueError, match="'forget' is empty"):
        evaluate(model, {**_splits(), "forget": []})
    with pytest.raises(ValueError, match="'forget' is empty"):
        evaluate(model, {**_splits(), "forget": iter([])})
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(model, {**_splits(), "forget-test": []})
    with pytest.raises(TypeError, match="splits"):
        evaluate(model, [("retain", [])])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retrained"):
        evaluate(model, _splits(), retrained="model")  # type: ignore[arg-type]


def test_metric_directions_cover_report() -> None:
    fields = set(EvalReport.__dataclass_fields__)
    for name, info in METRICS.items():
        assert name in fields
        if info.direction is Direction.CLOSER_TO_RETRAINED:
            assert info.reference in fields
    assert METRICS["retain_acc"].direction is Direction.HIGHER
    assert METRICS["js_to_retrained"].direction is Direction.LOWER
    assert METRICS["mia"].direction is Direction.CLOSER_TO_RETRAINED


def test_evaluate_rejects_non_finite_logits() -> None:
    def nan_forward(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        y = batch[-1]
        return torch.full((len(y), 2), float("nan")), y

    with pytest.raises(ValueError, match="NaN or infinite logits on split 'retain'"):
        evaluate(_argmax_model(), _splits(), forward=nan_forward)


def test_evaluate_adds_svc_attacks_and_zrf() -> None:
    from dampen.eval.population import svc_mia, zrf

    model = _argmax_model()
    other = _argmax_model()
    with torch.no_grad():
        other[0].weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # swaps the classes
    report = evaluate(model, _splits(), retrained=model, incompetent=other)
    outs = {k: collect_outputs(model, v) for k, v in _splits().items()}
    want = svc_mia(*((outs[k].probs(), outs[k].targets) for k in ("retain", "test", "forget")))
    assert report.svc_mia_entropy == pytest.approx(want.entropy)
    assert report.svc_mia_confidence == pytest.approx(want.confidence)
    assert report.retrained_svc_mia_confidence == report.svc_mia_confidence
    random_probs = collect_outputs(other, _splits()["forget"]).probs()
    assert report.zrf == pytest.approx(zrf(outs["forget"].probs(), random_probs))
    assert report.zrf is not None and report.zrf < 1.0
    same = evaluate(model, _splits(), incompetent=model)
    assert same.zrf == pytest.approx(1.0) and same.retrained_zrf is None
    assert evaluate(model, _splits()).zrf is None
