"""U-LiRA's leave-one-out attack on simulated shadow records: Hayes et al.'s "out" Gaussian is
fitted on retrained references, and a target never enters its own fit."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from dampen.eval.ulira import GaussianFit, fit_gaussians
from dampen.proofs.ulira import REFERENCE, attack, membership

SHADOWS, EXAMPLES = 32, 200


def _records(unlearned_shift: float, retrained_shift: float, seed: int = 0) -> list[dict]:
    """Shadow records with confidences ~ N(μ_j + shift, 1) per example j: originals at
    ``μ_j``, retrained references at ``μ_j + retrained_shift``, the method's unlearned models
    at ``μ_j + unlearned_shift``."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, EXAMPLES)

    def draw(shift: float) -> list[float]:
        return list(mu + shift + rng.normal(0.0, 1.0, EXAMPLES))

    return [
        {
            "shadow": k,
            "rows": {
                REFERENCE: {"confs": draw(0.0)},
                "retrain": {"confs": draw(retrained_shift)},
                "method": {"confs": draw(unlearned_shift)},
            },
        }
        for k in range(SHADOWS)
    ]


def test_an_unlearner_left_at_the_originals_level_is_caught() -> None:
    """The issue's simulation: σ = 1, retrained 0.5 below the originals, the unlearner at the
    originals' level. Fitting "out" on the originals (the old code) saw nothing (49.4 %); on the
    retrained references the attack separates them (the issue measured 55.4 % / 59.1 AUC)."""
    member = membership(EXAMPLES, SHADOWS, seed=0)
    accs, aucs = [], []
    for seed in range(3):
        result = attack(_records(0.0, -0.5, seed), member, "method")
        accs.append(result["accuracy"])
        aucs.append(result["auc"])
    # Theory with exact Gaussians: accuracy Φ(0.25) = 0.599, AUC Φ(0.5/√2) = 0.638.
    assert 0.54 < float(np.mean(accs)) < 0.62
    assert 0.57 < float(np.mean(aucs)) < 0.66


def test_a_perfect_unlearner_scores_fifty() -> None:
    """Unlearned models distributed exactly as the retrained references: nothing to see."""
    member = membership(EXAMPLES, SHADOWS, seed=0)
    result = attack(_records(-0.5, -0.5), member, "method")
    assert abs(result["accuracy"] - 0.5) < 0.03 and abs(result["auc"] - 0.5) < 0.03
    assert result["pairs"] == int(member.sum())  # every (target, forgotten example) once


def test_the_target_never_enters_its_own_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shadow's values are tagged with its index; the fit for target t must not see any
    value of shadow t, neither in "in" nor in "out"."""
    member = membership(EXAMPLES, SHADOWS, seed=0)
    records = _records(0.0, -0.5)
    for k, record in enumerate(records):
        for row in record["rows"].values():
            row["confs"] = [1000.0 * k + j for j in range(EXAMPLES)]
    module = sys.modules["dampen.proofs.ulira"]
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def spy(in_confs: Any, out_confs: Any, in_mask: Any, out_mask: Any, **kw: Any) -> GaussianFit:
        seen.append((np.asarray(in_confs), np.asarray(out_confs), in_mask, out_mask))
        return fit_gaussians(in_confs, out_confs, in_mask, out_mask, **kw)

    monkeypatch.setattr(module, "fit_gaussians", spy)
    attack(records, member, "method")
    assert len(seen) == SHADOWS
    for t, (ins, outs, in_mask, out_mask) in enumerate(seen):
        shadows_in_fit = set((ins[:, 0] // 1000).astype(int)) | set(
            (outs[:, 0] // 1000).astype(int)
        )
        assert t not in shadows_in_fit and len(shadows_in_fit) == SHADOWS - 1
        # "in" and "out" come from the same shadows: those that had the example to forget.
        assert (in_mask == out_mask).all()
        assert (in_mask == member.T[np.arange(SHADOWS) != t]).all()


def test_leaking_the_target_into_its_fit_would_be_caught() -> None:
    """The guard above can fail: an attack that fits on all shadows lets the target's own
    values in (a deliberately wrong fit, to show the spy's check would see it)."""
    member = membership(EXAMPLES, SHADOWS, seed=0)
    confs = np.array([[1000.0 * k + j for j in range(EXAMPLES)] for k in range(SHADOWS)])
    leaky = fit_gaussians(confs, confs, member.T, member.T)  # no shadow left out
    assert leaky.count_in.max() == int(member.sum(axis=1).max())  # all shadows counted
    assert set((confs[:, 0] // 1000).astype(int)) == set(range(SHADOWS))


def test_fit_by_hand() -> None:
    """Means and unbiased standard deviations of the masked values, per example."""
    ins = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 99.0]])
    outs = np.array([[0.0, 4.0], [2.0, 6.0], [7.0, 8.0]])
    mask = np.array([[True, True], [True, True], [False, True]])
    fit = fit_gaussians(ins, outs, mask, mask)
    assert fit.mean_in.tolist() == [2.0, 43.0]
    assert fit.mean_out.tolist() == [1.0, 6.0]
    assert fit.std_in[0] == pytest.approx(np.sqrt(2.0))  # (1-2)² + (3-2)² over n-1 = 1
    assert fit.std_out[1] == pytest.approx(2.0)  # (4-6)² + 0 + (8-6)² over 2
