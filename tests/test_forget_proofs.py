"""Issue 7's pure functions: logit-scaled confidence, the challenge's ε, U-LiRA, ZRF, SVC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dampen.eval import (
    challenge_score,
    example_epsilons,
    fit_gaussians,
    likelihood_ratio,
    logit_scaled_confidence,
    modified_entropy,
    svc_mia,
    ulira_attack,
    zrf,
)
from dampen.eval.challenge import (
    DELTA,
    EPSILON_CAP,
    bucket_points,
    epsilon_from_rates,
    example_epsilon,
)

# ------------------------------------------------------------------ logit-scaled confidence


def test_logit_scaled_confidence_matches_probabilities() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), dim=1)
    expected = torch.log(p[[0, 1], [0, 2]]) - torch.log(1 - p[[0, 1], [0, 2]])
    assert torch.allclose(logit_scaled_confidence(logits, targets), expected)


def test_logit_scaled_confidence_is_stable_for_huge_logits() -> None:
    logits = torch.tensor([[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]])
    out = logit_scaled_confidence(logits, torch.tensor([0, 0]))
    assert torch.isfinite(out).all()
    assert out[0] == pytest.approx(1000 - math.log(2))
    assert out[1] == pytest.approx(-1000)


def test_logit_scaled_confidence_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="targets"):
        logit_scaled_confidence(torch.zeros(2, 3), torch.tensor([0, 3]))


# ------------------------------------------------------------------ the challenge's ε


def test_epsilon_from_rates_conventions() -> None:
    eps = epsilon_from_rates(np.array([0.0, 0.0, 0.25, 0.5]), np.array([0.0, 0.3, 0.25, 0.5]))
    assert eps[0] == math.inf  # perfect separation
    assert math.isnan(eps[1])  # one rate zero: discarded
    assert eps[2] == pytest.approx(math.log((0.75 - DELTA) / 0.25))
    assert eps[3] == 0.0  # a coin flip


def test_identical_sets_give_zero_epsilon_and_full_points() -> None:
    confs = np.tile(np.linspace(-2.0, 3.0, 16)[:, None], (1, 5))
    eps = example_epsilons(confs, confs.copy())
    assert np.all(eps == 0.0)
    assert np.all(bucket_points(eps, 16) == 1.0)


def test_separated_sets_give_the_cap_and_no_points() -> None:
    retrained = np.tile(np.linspace(0.0, 1.0, 16)[:, None], (1, 3))
    eps = example_epsilons(retrained + 10.0, retrained)
    assert np.all(eps == EPSILON_CAP)
    assert np.all(bucket_points(eps, 16) == 0.0)


def test_collapsed_unlearned_set_gets_the_cap() -> None:
    # Deterministic unlearning: N identical runs. The challenge gives such a peaky set ε = cap.
    retrained = np.linspace(0.0, 1.0, 8)
    assert example_epsilon(np.full(8, 0.5), retrained) == EPSILON_CAP


def test_known_single_threshold_epsilon() -> None:
    # "member when c >= 4": TPR 3/4, FPR 1/4, the best single-threshold rule here.
    retrained = np.array([0.0, 1.0, 2.0, 5.0])
    unlearned = np.array([3.0, 4.0, 6.0, 7.0])
    expected = math.log((0.75 - DELTA) / 0.25)
    assert example_epsilon(unlearned, retrained, double=False) == pytest.approx(expected)
    assert example_epsilon(unlearned, retrained) >= expected  # intervals can only add


def test_bucket_points_follow_the_challenge() -> None:
    # N = 16: buckets up to ceil(ln 15) = 3, i.e. six buckets of width 1/2.
    eps = np.array([0.0, 0.49, 0.5, math.log(3), 2.99, 3.0, 50.0])
    assert bucket_points(eps, 16).tolist() == [1.0, 1.0, 0.5, 0.25, 1 / 32, 0.0, 0.0]
    with pytest.raises(ValueError, match="n_models"):
        bucket_points(eps, 2)


def test_challenge_score_multiplies_the_utility_ratios() -> None:
    confs = np.tile(np.linspace(-1.0, 1.0, 8)[:, None], (1, 4))
    out = challenge_score(
        confs,
        confs.copy(),
        unlearned_retain_acc=[0.9, 0.9],
        retrained_retain_acc=[1.0],
        unlearned_test_acc=[0.8],
        retrained_test_acc=[0.8],
    )
    assert out.forget_score == 1.0
    assert out.score == pytest.approx(0.9)
    with pytest.raises(ValueError, match="same shape"):
        challenge_score(
            confs,
            confs[:, :2],
            unlearned_retain_acc=[1.0],
            retrained_retain_acc=[1.0],
            unlearned_test_acc=[1.0],
            retrained_test_acc=[1.0],
        )


# ------------------------------------------------------------------ U-LiRA


def _synthetic_ulira(shift: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    shadows, examples = 32, 60
    base = rng.normal(0.0, 3.0, size=examples)  # each example has its own difficulty
    member = np.zeros((shadows, examples), dtype=bool)
    for i in range(examples):
        member[rng.permutation(shadows)[: shadows // 2], i] = True
    in_confs = base + shift + rng.normal(size=(shadows, examples))
    out_confs = base + rng.normal(size=(shadows, examples))
    fit = fit_gaussians(in_confs, out_confs, member, ~member)
    idx = np.repeat(np.arange(examples), 4)
    unlearned = base[idx] + shift + rng.normal(size=idx.size)
    retrained = base[idx] + rng.normal(size=idx.size)
    result = ulira_attack(
        likelihood_ratio(fit, unlearned, idx), likelihood_ratio(fit, retrained, idx)
    )
    assert result.pairs == idx.size
    return result.accuracy


def test_ulira_separates_distinguishable_models() -> None:
    assert _synthetic_ulira(shift=8.0) > 0.99


def test_ulira_is_at_chance_for_indistinguishable_models() -> None:
    assert abs(_synthetic_ulira(shift=0.0) - 0.5) < 0.06


def test_fit_gaussians_needs_two_shadows_per_side() -> None:
    confs = np.zeros((3, 2))
    member = np.array([[True, True], [False, True], [False, False]])
    with pytest.raises(ValueError, match="at least two"):
        fit_gaussians(confs, confs, member, ~member)


# ------------------------------------------------------------------ ZRF and the SVC attack


def test_zrf_sums_js_over_classes() -> None:
    """ZRF = 1 − mean JS in bits, JS summed over classes (not averaged over them)."""
    p = torch.tensor([[1.0, 0.0]])
    q = torch.tensor([[0.5, 0.5]])
    # m = (¾, ¼): KL(p‖m) = ln(4/3), KL(q‖m) = ½ ln(2/3) + ½ ln 2, JS = their mean, in bits
    # over ln 2: ≈ 0.2158 / 0.6931 ≈ 0.3113 bits, so ZRF ≈ 0.6887.
    js_bits = (math.log(4 / 3) / 2 + (0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2) / math.log(2)
    assert zrf(p, q) == pytest.approx(1 - js_bits)
    assert zrf(p, q) == pytest.approx(0.68872188)
    # Identical rows: JS = 0, ZRF exactly 1.
    assert zrf(q, q) == 1.0
    # Disjoint one-hot rows: JS = ln 2 nats = 1 bit per row, ZRF exactly 0 (the lower end).
    assert zrf(torch.eye(3), torch.eye(3)[[1, 2, 0]]) == pytest.approx(0.0, abs=1e-15)
    # The mean over samples: (0.3113 + 1) / 2 bits.
    both_p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    both_q = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    assert zrf(both_p, both_q) == pytest.approx(1 - (js_bits + 1) / 2)


def test_modified_entropy_by_hand() -> None:
    p = np.array([[0.7, 0.2, 0.1]])
    expected = -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    assert modified_entropy(p, np.array([0]))[0] == pytest.approx(expected)


def test_svc_mia_calls_confident_samples_members() -> None:
    rng = np.random.default_rng(0)

    def confident(n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, size=n)
        p = np.full((n, 3), (1 - level) / 2)
        p[np.arange(n), y] = level
        return p, y

    retain, test = confident(200, 0.99), confident(200, 0.5)
    remembered = svc_mia(retain, test, confident(50, 0.99))
    forgotten = svc_mia(retain, test, confident(50, 0.5))
    assert remembered.confidence == 1.0 and forgotten.confidence == 0.0
    assert remembered.entropy == 1.0 and forgotten.entropy == 0.0
