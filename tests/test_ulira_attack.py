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


def _tagged_records() -> list[dict]:
    """Every shadow's values tagged with its index: value // 1000 is the shadow."""
    records = _records(0.0, -0.5)
    for k, record in enumerate(records):
        for row in record["rows"].values():
            row["confs"] = [1000.0 * k + j for j in range(EXAMPLES)]
    return records


def _check_fits(fits: list[tuple[np.ndarray, ...]], member: np.ndarray) -> None:
    """The fit for target t must see no value of shadow t, and fit "in" and "out" on the
    same shadows: the others that had the example in their forget set."""
    assert len(fits) == SHADOWS
    for t, (ins, outs, in_mask, out_mask) in enumerate(fits):
        shadows = set((ins[:, 0] // 1000).astype(int)) | set((outs[:, 0] // 1000).astype(int))
        assert t not in shadows and len(shadows) == SHADOWS - 1
        assert (in_mask == out_mask).all()
        assert (in_mask == member.T[np.arange(SHADOWS) != t]).all()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, ...]]:
    seen: list[tuple[np.ndarray, ...]] = []

    def spy(in_confs: Any, out_confs: Any, in_mask: Any, out_mask: Any, **kw: Any) -> GaussianFit:
        seen.append((np.asarray(in_confs), np.asarray(out_confs), in_mask, out_mask))
        return fit_gaussians(in_confs, out_confs, in_mask, out_mask, **kw)

    monkeypatch.setattr(sys.modules["dampen.proofs.ulira"], "fit_gaussians", spy)
    return seen


def test_the_target_never_enters_its_own_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    member = membership(EXAMPLES, SHADOWS, seed=0)
    seen = _spy(monkeypatch)
    attack(_tagged_records(), member, "method")
    _check_fits(seen, member)


def test_leaking_the_target_into_its_fit_would_be_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail: with a leave-one-out that leaves nobody out (the mask that
    selects "the other shadows" made all-true), the target's own values reach its fit."""
    member = membership(EXAMPLES, SHADOWS, seed=0)
    seen = _spy(monkeypatch)
    module = sys.modules["dampen.proofs.ulira"]
    real_arange = np.arange

    class LeakyNumpy:
        """numpy, except that ``arange(K) != t`` selects every shadow."""

        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

        @staticmethod
        def arange(*args: Any, **kwargs: Any) -> Any:
            class Everyone(np.ndarray):
                def __ne__(self, other: object) -> Any:  # type: ignore[override]
                    return np.ones(self.shape, dtype=bool)

            return real_arange(*args, **kwargs).view(Everyone)

    monkeypatch.setattr(module, "np", LeakyNumpy())
    attack(_tagged_records(), member, "method")
    with pytest.raises(AssertionError):
        _check_fits(seen, member)


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


def test_distances_to_retrain_by_hand() -> None:
    """|row − retrain| per shadow, then the mean; a value stored as null (NaN) is skipped."""
    from dampen.proofs.ulira import _mean_distances

    records = [
        {"rows": {"m": {"metrics": {"mia": 0.2}}, "retrain": {"metrics": {"mia": 0.5}}}},
        {"rows": {"m": {"metrics": {"mia": 0.9}}, "retrain": {"metrics": {"mia": 0.4}}}},
        {"rows": {"m": {"metrics": {"mia": None}}, "retrain": {"metrics": {"mia": 0.4}}}},
    ]
    assert _mean_distances(records, ["m"])["m"]["mia"] == pytest.approx((0.3 + 0.5) / 2)


def test_bench_gap_fields_by_hand() -> None:
    from dampen.bench.report import _metric

    cell = {"metrics": {"mia": 0.02, "retrained_mia": 0.23, "zrf": 0.5}}
    assert _metric(cell, ["gap:mia"]) == pytest.approx(0.21)
    assert _metric(cell, ["gap:zrf"]) is None  # no retrained value: nothing to compare
