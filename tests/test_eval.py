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


def _js_by_hand(p: Tensor, q: Tensor, base: float = math.e) -> float:
    """Mean over rows of ½ Σ p ln(p/m) + ½ Σ q ln(q/m), m = (p + q)/2, 0 ln 0 = 0, in ``base``."""
    total = 0.0
    for p_row, q_row in zip(p.tolist(), q.tolist(), strict=True):
        for a, b in zip(p_row, q_row, strict=True):
            m = (a + b) / 2
            total += 0.5 * a * math.log(a / m) if a > 0 else 0.0
            total += 0.5 * b * math.log(b / m) if b > 0 else 0.0
    return total / len(p) / math.log(base)


def _l2_by_hand(p: Tensor, q: Tensor) -> float:
    """Mean over rows of sqrt(Σ (p − q)²)."""
    rows = [
        math.sqrt(sum((a - b) ** 2 for a, b in zip(p_row, q_row, strict=True)))
        for p_row, q_row in zip(p.tolist(), q.tolist(), strict=True)
    ]
    return sum(rows) / len(rows)


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


def test_js_divergence_in_bits_and_shape_check() -> None:
    # Disjoint supports: m = (½, ¼, ¼), KL(p‖m) = ln(1/½) = ln 2, KL(q‖m) = 2 · ½ ln(½/¼) = ln 2:
    # JS = ln 2 nats = 1 bit, reached exactly (nothing clamps it).
    p, q = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.5, 0.5]])
    assert js_divergence(p, q) == pytest.approx(LN2)
    assert js_divergence(p, q, base=2.0) == pytest.approx(1.0)
    # Half overlap: p = (½, ½, 0), q = (0, ½, ½), m = (¼, ½, ¼).
    # KL(p‖m) = ½ ln(½/¼) + ½ ln(½/½) = ½ ln 2, KL(q‖m) the same: JS = ½ ln 2 nats = ½ bit.
    p, q = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, 0.5, 0.5]])
    assert js_divergence(p, q) == pytest.approx(LN2 / 2)
    assert js_divergence(p, q, base=2.0) == pytest.approx(0.5)
    # p = (1, 0), q = (½, ½), m = (¾, ¼): JS = ½ ln(4/3) + ½ (½ ln(2/3) + ½ ln 2) = ¾ ln(4/3)
    # ≈ 0.2158 nats; in bits the same over ln 2 ≈ 0.3113.
    p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    assert js_divergence(p, q, base=2.0) == pytest.approx(0.75 * math.log(4 / 3) / LN2)
    assert js_divergence(p, q, base=2.0) == pytest.approx(0.31127812445913283)
    # Random rows against the formula written out, in nats, bits and base 10; symmetric.
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 7, generator=gen) * 5, dim=1)
    q = torch.softmax(torch.randn(50, 7, generator=gen) * 5, dim=1)
    nats = _js_by_hand(p.double(), q.double())
    assert js_divergence(p, q) == pytest.approx(nats)
    assert js_divergence(p, q, base=2.0) == pytest.approx(nats / LN2)
    assert js_divergence(p, q, base=10.0) == pytest.approx(nats / math.log(10))
    assert js_divergence(q, p) == pytest.approx(nats)
    with pytest.raises(ValueError, match="base"):
        js_divergence(p, q, base=1.0)
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
    # FPR strictly below 1 % (LiRA): among 101 non-members one false positive is allowed
    # (1/101 < 1 %); among 200 one is (1/200 = 0.5 %), two are not (2/200 = 1 %). With 100 or
    # fewer not even one fits, and the figure would be the TPR at FPR 0: not defined (NaN).
    # 30 members below every unseen loss, 20 at 1.5, 50 above every unseen loss.
    forget = np.r_[np.full(30, 0.5), np.full(20, 1.5), np.full(50, 500.0)]
    # 101 non-members with losses 1..101: "loss <= 1.5" has one false positive: 50 of 100.
    assert loss_threshold_mia(forget, np.arange(1.0, 102.0)).tpr_at_1fpr == pytest.approx(0.5)
    # 200 non-members 1..200: "loss <= 1.5" has one false positive (loss 1): 50 of 100.
    unseen = np.arange(1.0, 201.0)
    assert loss_threshold_mia(forget, unseen).tpr_at_1fpr == pytest.approx(0.5)
    # A tie: 20 members share loss 2.0 with a non-member, so "loss <= 2" has two false positives
    # (losses 1 and 2), FPR exactly 1 %, not below: the best rule stays "loss < 1", 30 of 100.
    tied = np.r_[np.full(30, 0.5), np.full(20, 2.0), np.full(50, 500.0)]
    assert loss_threshold_mia(tied, unseen).tpr_at_1fpr == pytest.approx(0.3)
    # 100 and 99 non-members: no false positive fits strictly below 1 %: not defined.
    assert math.isnan(loss_threshold_mia(forget, np.arange(1.0, 101.0)).tpr_at_1fpr)
    assert math.isnan(loss_threshold_mia(forget, np.arange(1.0, 100.0)).tpr_at_1fpr)
    # Scores (higher = member) 3, 1 against 2, 0. Below FPR 1: "score >= 1" has FPR ½, TPR 1.
    # Below FPR ½ with 2 non-members no false positive fits: not defined.
    members, nonmembers = np.array([3.0, 1.0]), np.array([2.0, 0.0])
    assert tpr_at_fpr(members, nonmembers, max_fpr=1.0) == 1.0
    assert math.isnan(tpr_at_fpr(members, nonmembers, max_fpr=0.5))
    with pytest.raises(ValueError, match="max_fpr"):
        tpr_at_fpr(members, nonmembers, max_fpr=0.0)


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
    # Separable: the boundary lies in the gap (0.2, 1.0), so every sample falls on its side.
    assert paper_mia(retain, test, like_retain) == 1.0
    assert paper_mia(retain, test, like_test) == 0.0
    assert paper_mia(retain, test, np.r_[like_retain, like_test]) == 0.5  # 50 of 100


# --------------------------------------------------------------------------- model-facing layer


Weight = list[list[float]]

EYE: Weight = [[1.0, 0.0], [0.0, 1.0]]
"""Logits (x0, x1): the prediction is the larger coordinate."""
RETRAINED: Weight = [[1.0, 0.0], [0.0, -0.5]]
"""Logits (x0, −x1/2): calls (0, 3) class 0 by a margin of 1.5 (``EYE``: class 1 by 3)."""
SWAP: Weight = [[0.0, 1.0], [1.0, 0.0]]
"""Logits (x1, x0): the classes swapped."""

RETAIN_X = [(2.0, 0.0)] * 5
RETAIN_Y = [0, 1, 1, 1, 1]
FORGET_X = [(3.0, 0.0), (0.0, 3.0), (3.0, 0.0), (0.0, 3.0)]
FORGET_Y = [0, 1, 0, 0]
TEST_Y = [0] * 7 + [1] * 5


def _linear_model(weight: Weight) -> nn.Sequential:
    """Logits equal ``weight @ x`` for a 2-d input ``x`` (in eval mode)."""
    linear = nn.Linear(2, 2)
    norm = nn.BatchNorm1d(2, affine=False)
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.zero_()
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)  # eval-mode BatchNorm is then the identity
    return nn.Sequential(linear, nn.Dropout(0.5), norm)


def _argmax_model() -> nn.Sequential:
    """Logits equal the 2-d input, so the prediction is the larger coordinate."""
    return _linear_model(EYE)


def _test_x() -> Tensor:
    """The 12 seeded test points; their margins x0 − x1 all lie in (−1, 2)."""
    return torch.randn(12, 2, generator=torch.Generator().manual_seed(0))


def _probs(weight: Weight, x: Any) -> Tensor:
    """softmax(weight @ x) per row, in float64: the probabilities of the known logits."""
    logits = torch.as_tensor(x, dtype=torch.float64) @ torch.tensor(weight, dtype=torch.float64).T
    return torch.softmax(logits, dim=1)


def _entropy_by_hand(p: Tensor) -> np.ndarray:
    """−Σ p ln p per row (no zeros in a softmax of finite logits)."""
    return (-(p * p.log()).sum(dim=1)).numpy()


def _losses_by_hand(p: Tensor, y: list[int]) -> np.ndarray:
    """−ln p_y per row."""
    return -p[torch.arange(len(y)), torch.tensor(y)].log().numpy()


def _batches(points: list[tuple[float, float]], labels: list[int], sizes: list[int]) -> list[Any]:
    x, y = torch.tensor(points), torch.tensor(labels)
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def _splits() -> dict[str, Any]:
    # retain: 5 samples in batches of 1 and 4; the first is right, the other four wrong -> 1/5.
    retain = _batches(RETAIN_X, RETAIN_Y, [1, 4])
    # forget: 3 of 4 right under EYE (the last, (0, 3) labelled 0, is wrong).
    forget = _batches(FORGET_X, FORGET_Y, [3, 1])
    test_x = _test_x()
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
    assert torch.allclose(out.logits, torch.tensor(FORGET_X))  # logits = x under EYE
    assert out.targets.tolist() == FORGET_Y
    expected = nn.functional.cross_entropy(out.logits.double(), out.targets, reduction="none")
    assert torch.allclose(out.losses, expected)


def test_evaluate_hand_checked_accuracy() -> None:
    report = evaluate(_argmax_model(), _splits())
    assert report.retain_acc == pytest.approx(1 / 5)  # a per-batch average would give 0.5
    assert report.forget_acc == pytest.approx(3 / 4)
    assert report.retain_test_acc is None and report.forget_test_acc is None
    assert report.js_to_retrained is None and report.retrained_mia is None
    # test: margins x0 − x1 of the seeded points; 6 of the 7 label-0 rows have a positive one,
    # 2 of the 5 label-1 rows a negative one.
    margins = (_test_x()[:, 0] - _test_x()[:, 1]).tolist()
    assert sum(m > 0 for m in margins[:7]) + sum(m < 0 for m in margins[7:]) == 8
    assert report.test_acc == pytest.approx(8 / 12)
    assert max(abs(m) for m in margins) < 2.0
    # Paper MIA: every retain row is (2, 0), entropy H(σ(2)) ≈ 0.365, below every test entropy
    # (all |margins| < 1.96 give > 0.375), so the attacker separates them; Df's margin 3 gives
    # H(σ(3)) ≈ 0.191, on the member side: all four called members.
    ent = {k: _entropy_by_hand(_probs(EYE, x)) for k, x in (("r", RETAIN_X), ("f", FORGET_X))}
    assert ent["r"].tolist() == pytest.approx([0.36533386] * 5)
    assert ent["f"].tolist() == pytest.approx([0.19086497] * 4)
    test_ent = _entropy_by_hand(_probs(EYE, _test_x()))
    assert test_ent.min() > ent["r"].max()
    assert paper_mia(ent["r"], test_ent, ent["f"]) == 1.0
    assert report.mia == 1.0
    # Loss attack, Df against test: three Df losses are ln(1 + e^-3) (right by a margin of 3),
    # one is ln(1 + e^3) (the wrong (0, 3) labelled 0). Every test loss ln(1 + e^-m) with
    # |m| < 3 lies strictly between, so AUC = (3 · 12 + 0) / (4 · 12) = 3/4.
    f_loss = _losses_by_hand(_probs(EYE, FORGET_X), FORGET_Y)
    want_loss = [math.log1p(math.exp(-3))] * 3 + [math.log1p(math.exp(3))]
    assert f_loss.tolist() == pytest.approx(want_loss)
    assert report.loss_mia_auc == pytest.approx(0.75)
    # 12 non-members: fewer than 100, so the TPR at 1 % FPR is not defined.
    assert math.isnan(report.loss_mia_tpr_at_1fpr)
    d = report.to_dict()
    assert set(d) == {f for f in EvalReport.__dataclass_fields__}
    json.dumps(d)


def test_evaluate_with_retrained_and_optional_splits() -> None:
    splits = _splits()
    forget_test_x = [(2.0, 0.0), (0.0, 1.0)]
    splits["forget_test"] = _batches(forget_test_x, [0, 0], [2])
    splits["retain_test"] = []  # empty optional split -> None

    def once(items: list[Any]) -> Iterator[Any]:  # single-use generator: read in one pass
        yield from items

    splits["forget"] = once(splits["forget"])
    report = evaluate(_argmax_model(), splits, retrained=_linear_model(RETRAINED))

    # Df logits: model (3, 0), (0, 3), (3, 0), (0, 3); retrained (3, 0), (0, −1.5), (3, 0),
    # (0, −1.5). Rows 1 and 3 agree; rows 2 and 4 compare (1 − σ(3), σ(3)) with
    # (σ(1.5), 1 − σ(1.5)): JS ≈ 0.351 nats each, so the mean is ≈ 0.1755; the L2 distance is
    # √2 · (σ(3) + σ(1.5) − 1) ≈ 1.089 each, mean ≈ 0.5446.
    p, q = _probs(EYE, FORGET_X), _probs(RETRAINED, FORGET_X)
    js, l2 = _js_by_hand(p, q), _l2_by_hand(p, q)
    s3, s15 = 1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1.5))
    assert l2 == pytest.approx(math.sqrt(2) * (s3 + s15 - 1) / 2)
    assert report.js_to_retrained == pytest.approx(js) and js == pytest.approx(0.17552429)
    assert report.activation_distance_to_retrained == pytest.approx(l2)
    assert l2 == pytest.approx(0.54457730)
    # Df accuracy, labels 0, 1, 0, 0: model predicts 0, 1, 0, 1 (3/4); retrained 0, 0, 0, 0
    # (3/4, other rows). forget_test (2, 0), (0, 1), both labelled 0: model predicts 0, 1 (1/2);
    # retrained (2, 0), (0, −0.5): 0, 0 (1).
    assert (report.forget_acc, report.retrained_forget_acc) == (0.75, 0.75)
    assert (report.forget_test_acc, report.retrained_forget_test_acc) == (0.5, 1.0)
    assert report.retain_test_acc is None
    # Paper MIA: retain entropies are H(σ(2)) under both. Retrained Df entropies are H(σ(3)) ≈
    # 0.191 (member side) and H(σ(1.5)) ≈ 0.475 (among the test entropies): 2 of 4 members.
    test_x = _test_x()
    retain_ent = _entropy_by_hand(_probs(RETRAINED, RETAIN_X))
    test_ent = _entropy_by_hand(_probs(RETRAINED, test_x))
    forget_ent = _entropy_by_hand(q)
    assert forget_ent.tolist() == pytest.approx([0.19086497, 0.47505156] * 2)
    assert paper_mia(retain_ent, test_ent, forget_ent) == 0.5
    assert (report.mia, report.retrained_mia) == (1.0, 0.5)
    # Loss attack against forget_test (not test): with a = ln(1 + e^-3) ≈ 0.049,
    # model: Df (a, a, a, ln(1 + e^3) ≈ 3.05), unseen (ln(1 + e^-2) ≈ 0.127, ln(1 + e) ≈ 1.31):
    #   each a is below both unseen losses, the last above both: AUC = 6/8.
    # retrained: Df (a, ln(1 + e^1.5) ≈ 1.70, a, ln(1 + e^-1.5) ≈ 0.201), unseen
    #   (ln(1 + e^-2) ≈ 0.127, ln(1 + e^-0.5) ≈ 0.474): 2 + 0 + 2 + 1 = 5 pairs of 8.
    f_loss = _losses_by_hand(q, FORGET_Y)
    u_loss = _losses_by_hand(_probs(RETRAINED, forget_test_x), [0, 0])
    below = sum(float(f < u) for f in f_loss for u in u_loss)
    assert below == 5.0
    assert report.loss_mia_auc == pytest.approx(6 / 8)
    assert report.retrained_loss_mia_auc == pytest.approx(5 / 8)
    # Two non-members: the TPR at 1 % FPR is not defined for either, so its gap is None.
    assert math.isnan(report.loss_mia_tpr_at_1fpr)
    assert report.retrained_loss_mia_tpr_at_1fpr is not None
    assert math.isnan(report.retrained_loss_mia_tpr_at_1fpr)
    gaps = report.gaps()
    assert gaps["forget_acc"] == 0.0 and gaps["forget_test_acc"] == 0.5
    assert gaps["mia"] == 0.5 and gaps["loss_mia_auc"] == pytest.approx(0.125)
    assert gaps["loss_mia_tpr_at_1fpr"] is None and gaps["zrf"] is None
    text = report.to_text()
    assert "(retrained 0.5000)" in text and "loss_mia_tpr_at_1fpr" not in text


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
    from dampen.eval.population import svc_mia

    model = _argmax_model()
    report = evaluate(
        model, _splits(), retrained=_linear_model(RETRAINED), incompetent=_linear_model(SWAP)
    )
    # The SVC attacks of both models, on probabilities of the known logits.
    xy = [(RETAIN_X, RETAIN_Y), (_test_x(), TEST_Y), (FORGET_X, FORGET_Y)]
    for weight, got in (
        (EYE, (report.svc_mia_entropy, report.svc_mia_confidence)),
        (RETRAINED, (report.retrained_svc_mia_entropy, report.retrained_svc_mia_confidence)),
    ):
        want = svc_mia(*((_probs(weight, x), torch.tensor(y)) for x, y in xy))
        assert got == pytest.approx((want.entropy, want.confidence))
    # ZRF in bits. Under the model each Df row is (σ(3), 1 − σ(3)) or its mirror image, under
    # the swapped model the other one; m = (½, ½), so JS = ln 2 − H(σ(3)) nats and
    # ZRF = 1 − (ln 2 − H(σ(3))) / ln 2 = H(σ(3)) in bits ≈ 0.2754.
    s3 = 1 / (1 + math.exp(-3))
    assert report.zrf == pytest.approx(-(s3 * math.log2(s3) + (1 - s3) * math.log2(1 - s3)))
    assert report.zrf == pytest.approx(0.27535995)
    # Retrained: rows 1 and 3 as above; rows 2 and 4 are (σ(1.5), 1 − σ(1.5)) against
    # (σ(3), 1 − σ(3)), JS ≈ 0.0342 bits: ZRF = 1 − (2 (1 − 0.2754) + 2 · 0.0342) / 4 ≈ 0.6206.
    want_zrf = 1 - _js_by_hand(_probs(RETRAINED, FORGET_X), _probs(SWAP, FORGET_X), base=2)
    assert report.retrained_zrf == pytest.approx(want_zrf)
    assert want_zrf == pytest.approx(0.62056016)
    # Identical outputs: JS = 0, ZRF exactly 1.
    same = evaluate(model, _splits(), incompetent=_argmax_model())
    assert same.zrf == 1.0 and same.retrained_zrf is None
    assert evaluate(model, _splits()).zrf is None
