"""The U-LiRA and challenge drivers end to end on digits with a tiny, short-trained CNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dampen.bench.config import MethodSpec, ModelSpec
from dampen.proofs.challenge import challenge_digits, run_challenge
from dampen.proofs.ulira import ULiRAConfig, membership, run_ulira, ulira_digits

TINY = ModelSpec(
    "cnn",
    "cnn",
    kwargs={"channels": [4, 8]},
    train={"epochs": 2, "crop_padding": 1, "flip": False},
)


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
    for row in first["attack"].values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["auc"] <= 1.0
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
    assert set(scores) == {"ssd (stochastic)", "ssd (deterministic)"}
    # N identical deterministic runs: a point mass, ε = cap for every example, no points.
    assert scores["ssd (deterministic)"]["forget_score"] == 0.0
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    confs = np.array(rows["ssd (stochastic)"]["confs"])
    assert np.ptp(confs, axis=0).max() > 0  # the seeded runs differ
