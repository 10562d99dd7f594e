"""The U-LiRA and challenge drivers end to end on digits with a tiny, short-trained CNN."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dampen.bench.config import MethodSpec, ModelSpec
from dampen.bench.runner import load_data
from dampen.proofs.challenge import REFERENCE_TWIN, challenge_digits, run_challenge
from dampen.proofs.ulira import ULiRAConfig, membership, run_ulira, ulira_digits

TINY = ModelSpec(
    "cnn",
    "cnn",
    kwargs={"channels": [4, 8]},
    train={"epochs": 2, "crop_padding": 1, "flip": False},
)


def _log_density(c: float, values: np.ndarray) -> float:
    """log N(c; mean, std) of ``values`` (std ddof=1, floored at 1e-3), up to the constant."""
    std = max(float(values.std(ddof=1)), 1e-3)
    return -0.5 * ((c - float(values.mean())) / std) ** 2 - math.log(std)


def _balanced_accuracy(pos: list[float], neg: list[float]) -> float:
    """½ share of positive log ratios among ``pos`` + ½ share of non-positive among ``neg``."""
    return 0.5 * sum(s > 0 for s in pos) / len(pos) + 0.5 * sum(s <= 0 for s in neg) / len(neg)


def _ulira_by_hand(
    records: list[dict[str, Any]], forgot: np.ndarray, label: str
) -> tuple[float, float, int, float]:
    """Leave-one-out U-LiRA written out from the saved confidences.

    For target ``t`` and each candidate ``j`` it forgot (``forgot[j, t]``): a Gaussian of the
    ``label`` row's confidences ("in") and one of the retrain row's ("out") over the other
    shadows that forgot ``j`` (std ddof=1, floored at 1e-3); the log ratio of the two densities
    scores ``t``'s ``label`` model (positive pair) and ``t``'s retrained one (negative pair).

    Returns:
        accuracy of "log ratio > 0 means unlearned", AUC, pairs, std of the per-target accuracy.
    """
    confs = [r["rows"][label]["confs"] for r in records]
    refs = [r["rows"]["retrain"]["confs"] for r in records]
    pos: list[float] = []
    neg: list[float] = []
    per_target: list[float] = []
    for t in range(len(records)):
        t_pos: list[float] = []
        t_neg: list[float] = []
        for j in np.nonzero(forgot[:, t])[0]:
            others = [k for k in range(len(records)) if k != t and forgot[j, k]]
            ins = np.array([confs[k][j] for k in others])
            outs = np.array([refs[k][j] for k in others])
            for c, side in ((confs[t][j], t_pos), (refs[t][j], t_neg)):
                side.append(_log_density(c, ins) - _log_density(c, outs))
        if t_pos:
            per_target.append(_balanced_accuracy(t_pos, t_neg))
        pos += t_pos
        neg += t_neg
    auc = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    return _balanced_accuracy(pos, neg), float(auc), len(pos), float(np.std(per_target, ddof=1))


def test_membership_puts_every_example_in_half_the_shadows() -> None:
    member = membership(50, 8, seed=0)
    assert member.shape == (50, 8)
    assert (member.sum(axis=1) == 4).all()
    assert not np.array_equal(member[:, 0], member[:, 1])


def test_ulira_config_validates_shadows() -> None:
    with pytest.raises(ValueError, match="shadows"):
        ulira_digits().replace(shadows=5)


@pytest.mark.slow
def test_ulira_driver_runs_and_resumes(tmp_path: Path) -> None:
    config: ULiRAConfig = ulira_digits().replace(
        model=TINY,
        methods=(MethodSpec("ssd", options={"alpha": 10.0, "lambda_": 1.0}),),
        shadows=6,
        candidates=12,
        out_dir=str(tmp_path),
    )
    first = run_ulira(config)
    assert set(first["attack"]) == {"original", "ssd"}
    # Which candidates each shadow forgot: the driver's seeded draws (membership, then the pool).
    n = len(load_data(config.data).train)
    pool = np.sort(np.random.default_rng(config.seed + 1).choice(n, size=12, replace=False))
    forgot = membership(n, 6, config.seed)[pool]  # [candidates, shadows]
    assert first["forgotten_per_shadow"] == pytest.approx(forgot.sum() / 6)
    records = [json.loads((tmp_path / "shadows" / f"{k}.json").read_text()) for k in range(6)]
    assert all(len(r["rows"][row]["confs"]) == 12 for r in records for row in r["rows"])
    for label, row in first["attack"].items():
        # One pair per (target, forgotten candidate); every figure recomputed from the records.
        accuracy, auc, pairs, spread = _ulira_by_hand(records, forgot, label)
        assert row["pairs"] == pairs == forgot.sum()
        assert row["accuracy"] == pytest.approx(accuracy)
        assert row["auc"] == pytest.approx(auc)
        assert row["accuracy_std_over_targets"] == pytest.approx(spread)
    assert "retrain" in first["metrics"] and "zrf" in first["metrics"]["retrain"]
    assert (tmp_path / "results.md").is_file()
    again = run_ulira(config)  # everything from the records: identical figures
    assert again["attack"] == first["attack"]


@pytest.mark.slow
def test_challenge_driver_stochastic_ssd_differs_from_deterministic(tmp_path: Path) -> None:
    config = challenge_digits().replace(
        model=TINY,
        methods=(MethodSpec("ssd", options={"alpha": 10.0, "lambda_": 1.0}),),
        deterministic=("ssd",),
        forget=6,
        models=3,
        out_dir=str(tmp_path),
    )
    results = run_challenge(config)
    scores = results["scores"]
    assert set(scores) == {REFERENCE_TWIN, "ssd (stochastic)", "ssd (deterministic)"}
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    # N identical deterministic runs: a point mass, ε = cap for every example, no points.
    assert np.ptp(np.array(rows["ssd (deterministic)"]["confs"]), axis=0).max() == 0.0
    assert scores["ssd (deterministic)"]["forget_score"] == 0.0
    # Each ratio is the row's mean accuracy over the retrained references' mean (saved per model).
    ref = rows["retrain"]
    for label, s in scores.items():
        assert s["retain_acc"] == pytest.approx(np.mean(rows[label]["retain_acc"]))
        assert s["retain_ratio"] == pytest.approx(s["retain_acc"] / np.mean(ref["retain_acc"]))
        assert s["test_ratio"] == pytest.approx(s["test_acc"] / np.mean(ref["test_acc"]))
        assert s["score"] == pytest.approx(s["forget_score"] * s["retain_ratio"] * s["test_ratio"])
    confs = np.array(rows["ssd (stochastic)"]["confs"])
    assert np.ptp(confs, axis=0).max() > 0  # the seeded runs differ
