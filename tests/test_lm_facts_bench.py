"""The ``lm-facts`` bench: a tiny real run, its resumption, its table and the command line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("transformers")

from dampen.bench.facts_recipe import FactsRecipe
from dampen.bench.lm_facts import (
    HELDOUT_LEVEL,
    LM_FACTS,
    LMFactsConfig,
    LMFactsRunner,
    report,
    run_lm_facts,
    summary,
)
from dampen.cli import main

ROWS = ["original", "retrain", *(r["name"] for r in LM_FACTS.rows)]


def tiny_config() -> LMFactsConfig:
    adam = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "lr": 1e-3}
    return replace(
        LM_FACTS,
        people=8,
        heldout_people=4,
        forget_counts=(1,),
        seeds=(0,),
        tuning_seed=5,
        recipe=FactsRecipe(n_layer=1, n_embd=64, max_epochs=60, lr=5e-3, target_accuracy=None),
        grids={
            "gradient ascent": ({**adam, "steps": 3, "stop_accuracy": HELDOUT_LEVEL},),
            "neggrad+": (
                {**adam, "steps": 3, "stop_accuracy": HELDOUT_LEVEL},
                {**adam, "steps": 6, "stop_accuracy": HELDOUT_LEVEL},
            ),
            "finetune": ({**adam, "steps": 3},),
        },
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("lm-facts")
    log: list[str] = []
    run_lm_facts(tiny_config(), out, log=log.append)
    return out, log


def test_every_row_gets_a_cell_with_figures_in_range(finished: tuple[Path, list[str]]) -> None:
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    cells = list(results["cells"].values())
    assert sorted(c["row"] for c in cells) == sorted(ROWS)
    for cell in cells:
        for name in ("forget_acc", "retain_acc", "heldout_acc"):
            assert 0.0 <= cell[name] <= 1.0
        assert cell["perplexity"] > 1.0
    by_row = {c["row"]: c for c in cells}
    # the trained model recalls part of what it was trained on, more than of held-out people
    assert by_row["original"]["retain_acc"] > by_row["original"]["heldout_acc"]
    # the original and retraining differ on the forgotten person, whom only one saw
    assert by_row["original"]["forget_acc"] > by_row["retrain"]["forget_acc"]
    assert by_row["ssd (α 10)"]["importance_seconds"] > 0
    assert by_row["retrain"]["importance_seconds"] is None


def test_tuning_picks_the_lowest_score_of_its_grid(finished: tuple[Path, list[str]]) -> None:
    out, _ = finished
    tuning = json.loads((out / "results.json").read_text())["tuning"]
    entry = tuning["neggrad+|1"]
    assert len(entry["tried"]) == 2
    # each row is tuned as it runs: plain gradient ascent without NegGrad+'s retain term
    assert [t["options"]["plus"] for t in tuning["gradient ascent|1"]["tried"]] == [False]
    assert entry["best"]["plus"] is True
    best = min(entry["tried"], key=lambda t: t["score"])
    assert entry["best"] == best["options"]
    for tried in entry["tried"]:
        expected = abs(tried["forget"] - entry["heldout_acc"]) + max(
            0.0, entry["retain_before"] - tried["retain"]
        )
        assert tried["score"] == pytest.approx(expected)


def test_a_second_run_trains_and_unlearns_nothing(finished: tuple[Path, list[str]]) -> None:
    out, first = finished
    assert sum("training" in line for line in first) == 3  # tuning original, original, retrain
    before = (out / "results.json").read_text()
    again: list[str] = []
    run_lm_facts(tiny_config(), out, log=again.append)
    assert again == []
    assert json.loads((out / "results.json").read_text())["cells"] == json.loads(before)["cells"]


def test_the_table_checks_the_goals_against_its_own_means() -> None:
    cells = {}
    figures = {
        "original": (1.0, 1.0),
        "retrain": (0.10, 1.0),
        "ssd (α 10)": (0.14, 0.985),  # within 5 and 2 points: met
        "ssd (auto)": (0.20, 1.0),  # 10 points above retraining: missed
        "finetune": (0.10, 0.97),  # 3 points of the retained lost: missed
    }
    for i, (row, (forget, retain)) in enumerate(figures.items()):
        cells[str(i)] = {"seed": 0, "forget_people": 1, "row": row, "forget_acc": forget,
                         "retain_acc": retain, "heldout_acc": 0.1, "perplexity": 3.0,
                         "seconds": 1.0}  # fmt: skip
    results = {"cells": cells}
    text = report(results, replace(LM_FACTS, forget_counts=(1,)))
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert "met (+4.0 / -1.5)" in lines["ssd (α 10)"]
    assert "missed (+10.0 / +0.0)" in lines["ssd (auto)"]
    assert "missed (+0.0 / -3.0)" in lines["finetune"]
    assert summary(results)[(1, "retrain")]["forget_acc"] == pytest.approx(0.10)


def test_the_command_line_reports_or_says_what_is_missing(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(
        main, ["bench", "--preset", "lm-facts", "--out", str(tmp_path), "--report-only"]
    )
    assert done.exit_code != 0 and "no " in done.output
    (tmp_path / "results.json").write_text(json.dumps({"cells": {}}))
    done = runner.invoke(
        main, ["bench", "--preset", "lm-facts", "--out", str(tmp_path), "--report-only"]
    )
    assert done.exit_code == 0, done.output
    assert (tmp_path / "results.md").read_text().startswith("# lm-facts")


def test_cells_the_config_no_longer_makes_are_dropped(
    finished: tuple[Path, list[str]], tmp_path: Path
) -> None:
    out, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stored = json.loads((copy / "results.json").read_text())
    old = dict(next(iter(stored["cells"].values())), row="neggrad+")
    stored["cells"]["from-an-old-grid"] = old
    stored["cells"]["another-seed"] = dict(old, seed=7)  # not this config's: kept
    (copy / "results.json").write_text(json.dumps(stored))
    log: list[str] = []
    run_lm_facts(tiny_config(), copy, log=log.append)
    assert log == ["dropping 1 stored cell(s) that the config no longer produces"]
    cells = json.loads((copy / "results.json").read_text())["cells"]
    assert "from-an-old-grid" not in cells and "another-seed" in cells
    assert len(cells) == len(ROWS) + 1


def test_the_tuning_seed_must_not_be_reported_and_keys_follow_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tuning_seed"):
        replace(LM_FACTS, seeds=(0, 1), tuning_seed=1)
    row = next(r for r in LM_FACTS.rows if r.get("tuned"))
    keys = {
        LMFactsRunner(replace(LM_FACTS, **change), tmp_path)._tuning_key("x|2", row)
        for change in ({}, {"tuning_seed": 7}, {"people": 50}, {"recipe": FactsRecipe(n_layer=1)})
    }
    assert len(keys) == 4
