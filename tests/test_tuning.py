"""Tuning on a validation split (``dampen.bench.tuning``), the validation split itself, and a tiny
tuned benchmark run through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn

from dampen.bench import config_from_dict, load_config, plan
from dampen.bench import runner as bench_runner
from dampen.bench.config import DataSpec, MethodSpec
from dampen.bench.report import render_markdown, tuning_table
from dampen.bench.runner import load_data, load_with_validation, make_scenario, tuned_key
from dampen.bench.tuning import (
    ValidationSplits,
    budget_fields,
    check_grid,
    choose,
    grid_points,
    original_steps,
    resolve_budget,
    score,
    validation_figures,
    with_point,
)
from dampen.cli import main
from dampen.recipe import cache_key, cached_train
from test_bench import Counter, base_values, tiny_quick, write_config

# --------------------------------------------------------------------------- grids and budgets


def test_grid_points_in_order_last_key_fastest() -> None:
    points = grid_points({"lr": [0.1, 0.2], "budget": (0.1, 0.3, 0.5)})
    assert points == [
        {"lr": 0.1, "budget": 0.1},
        {"lr": 0.1, "budget": 0.3},
        {"lr": 0.1, "budget": 0.5},
        {"lr": 0.2, "budget": 0.1},
        {"lr": 0.2, "budget": 0.3},
        {"lr": 0.2, "budget": 0.5},
    ]
    assert grid_points({"sigma": [1.0]}) == [{"sigma": 1.0}]
    assert grid_points({}) == [{}]


def test_check_grid_accepts_lists_and_returns_tuples() -> None:
    assert check_grid({"lr": [0.1, 0.2], "budget": [1, 0.5]}, "g") == {
        "lr": (0.1, 0.2),
        "budget": (1, 0.5),
    }


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"lr": []}, r"g\['lr'\]: must be a non-empty list"),
        ({"lr": "0.1"}, r"g\['lr'\]: must be a non-empty list"),
        ({"lr": 0.1}, r"g\['lr'\]: must be a non-empty list"),
        ({"budget": [0.1, 0]}, r"g\['budget'\].*\(0, 1\]; got 0"),
        ({"budget": [1.5]}, r"g\['budget'\].*got 1.5"),
        ({"budget": [True]}, r"g\['budget'\]"),
        ({"budget": ["0.1"]}, r"g\['budget'\]"),
        ([("lr", [0.1])], "g: must be a mapping"),
    ],
)
def test_check_grid_refuses(grid: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_grid(grid, "g")


def test_budget_fields() -> None:
    assert budget_fields("finetune") == ("steps",)
    assert budget_fields("scrub") == ("steps",)
    assert budget_fields("unsir") == ("impair_steps", "repair_steps")
    for method in ("ssd", "jit"):  # no step budget
        with pytest.raises(ValueError, match=f"method {method!r} has no step budget"):
            budget_fields(method)


def test_original_steps() -> None:
    assert original_steps(2, 64, 300) == 10  # 5 batches a pass, the last one short
    assert original_steps(3, 100, 300) == 9  # exact batches
    assert original_steps(15, 64, 1437) == 15 * 23
    assert original_steps(1, 64, 1) == 1


def test_resolve_budget() -> None:
    options = {"lr": 0.1, "budget": 0.3}
    out, steps = resolve_budget("finetune", options, 10)
    assert (out, steps) == ({"lr": 0.1, "steps": 3}, 3)
    assert options == {"lr": 0.1, "budget": 0.3}  # the caller's dict is left alone
    assert resolve_budget("finetune", {"budget": 0.36}, 10) == ({"steps": 4}, 4)  # rounded
    assert resolve_budget("finetune", {"budget": 0.34}, 10) == ({"steps": 3}, 3)
    assert resolve_budget("finetune", {"budget": 0.01}, 10) == ({"steps": 1}, 1)  # at least 1
    assert resolve_budget("finetune", {"budget": 1}, 345) == ({"steps": 345}, 345)
    # A budget and a configured step count are two budgets: refused (see below).
    assert resolve_budget("unsir", {"budget": 0.2}, 50) == (
        {"impair_steps": 10, "repair_steps": 10},
        10,
    )
    assert resolve_budget("finetune", {"lr": 0.1}, 10) == ({"lr": 0.1}, None)
    assert resolve_budget("ssd", {"alpha": 5.0}, 10) == ({"alpha": 5.0}, None)
    with pytest.raises(ValueError, match="no step budget"):
        resolve_budget("ssd", {"budget": 0.5}, 10)
    for bad in (0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="budget must be a share"):
            resolve_budget("finetune", {"budget": bad}, 10)


def test_score_adds_only_a_positive_retain_drop() -> None:
    assert score({"retain_val": 0.7, "forget_term": 0.2}, 0.9) == pytest.approx(0.4)
    assert score({"retain_val": 0.95, "forget_term": 0.2}, 0.9) == pytest.approx(0.2)
    assert score({"retain_val": 0.9, "forget_term": 0.0}, 0.9) == 0.0


def test_choose_lowest_score_then_fewest_steps_then_earliest() -> None:
    assert choose([{"score": 0.3, "steps": 1}, {"score": 0.1, "steps": 50}]) == 1
    # 0.50001 and 0.5 tie at 4 decimals: the cheaper point wins.
    assert choose([{"score": 0.5, "steps": 10}, {"score": 0.50001, "steps": 5}]) == 1
    assert choose([{"score": 0.5, "steps": 10}, {"score": 0.5001, "steps": 5}]) == 0
    assert choose([{"score": 0.2, "steps": 3}, {"score": 0.2, "steps": 3}]) == 0
    failed = {"error": "RuntimeError: diverged"}
    assert choose([failed, {"score": 0.9, "steps": 1}, {"score": None}]) == 1
    assert choose([{"score": float("nan")}, {"score": 0.9}]) == 1
    with pytest.raises(ValueError, match="no grid point finished"):
        choose([failed, {"score": None}])
    with pytest.raises(ValueError, match="no grid point finished"):
        choose([])


# --------------------------------------------------------------------------- validation figures


class Logits(nn.Module):
    """Returns its inputs: every batch's x is the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(1, 1)  # a parameter, so that the model has a device

    def forward(self, x: Tensor) -> Tensor:
        return x


def batches(*rows: tuple[list[float], int], size: int = 2) -> list[tuple[Tensor, Tensor]]:
    """Rows of (logits, target) in batches of ``size``."""
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        out.append((torch.tensor([r[0] for r in chunk]), torch.tensor([r[1] for r in chunk])))
    return out


def true_probability(logits: list[float], target: int) -> float:
    return math.exp(logits[target]) / sum(math.exp(v) for v in logits)


RETAIN = [([2.0, 0.0, 0.0], 0), ([0.0, 1.0, 0.0], 1), ([0.0, 0.0, 3.0], 1), ([1.0, 2.0, 0.0], 0)]
FORGET_VAL = [([0.0, 5.0, 0.0], 1), ([0.0, 0.0, 1.0], 1), ([1.0, 0.0, 0.0], 1)]
FORGET_TRAIN = [
    ([0.0, 4.0, 0.0], 1),
    ([0.0, 1.0, 0.5], 1),
    ([3.0, 0.0, 0.0], 0),
    ([0.0, 0.0, 1.0], 1),
]


def test_validation_figures_full_class() -> None:
    splits = ValidationSplits("full_class", batches(*RETAIN), batches(*FORGET_VAL), None)
    figures = validation_figures(Logits(), splits)
    assert figures == pytest.approx(
        {"retain_val": 2 / 4, "forget_val": 1 / 3, "forget_term": 1 / 3}
    )
    assert score(figures, 0.75) == pytest.approx(1 / 3 + 0.25)


def test_validation_figures_sub_class() -> None:
    splits = ValidationSplits(
        "sub_class", batches(*RETAIN), batches(*FORGET_VAL), batches(*FORGET_TRAIN)
    )
    figures = validation_figures(Logits(), splits)
    # Df: 3 of 4 right; validation samples of the forgotten class: 1 of 3.
    assert figures == pytest.approx(
        {"retain_val": 0.5, "forget_val": 1 / 3, "forget_term": abs(3 / 4 - 1 / 3)}
    )


def test_validation_figures_random() -> None:
    splits = ValidationSplits("random", batches(*RETAIN), None, batches(*FORGET_TRAIN))
    figures = validation_figures(Logits(), splits)
    df = sum(true_probability(x, y) for x, y in FORGET_TRAIN) / len(FORGET_TRAIN)
    val = sum(true_probability(x, y) for x, y in RETAIN) / len(RETAIN)
    assert df - val > 0.1  # Df is the more confident set here
    assert figures == pytest.approx(
        {"retain_val": 0.5, "confidence_gap": df - val, "forget_term": abs(df - val)}, abs=1e-9
    )
    assert "forget_val" not in figures  # Df's accuracy is never looked at
    # The gap keeps its sign; the term does not.
    swapped = ValidationSplits("random", batches(*FORGET_TRAIN), None, batches(*RETAIN))
    figures = validation_figures(Logits(), swapped)
    assert figures["confidence_gap"] == pytest.approx(val - df)
    assert figures["forget_term"] == pytest.approx(df - val)


def test_validation_figures_need_their_splits() -> None:
    with pytest.raises(ValueError, match="full-class tuning"):
        validation_figures(Logits(), ValidationSplits("full_class", batches(*RETAIN), None, None))
    with pytest.raises(ValueError, match="sub-class tuning"):
        validation_figures(
            Logits(), ValidationSplits("sub_class", batches(*RETAIN), batches(*FORGET_VAL), None)
        )
    with pytest.raises(ValueError, match="random tuning"):
        validation_figures(Logits(), ValidationSplits("random", batches(*RETAIN), None, None))


# --------------------------------------------------------------------------- the validation split


def rows(x: Tensor) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in x.flatten(1)}


def test_digits_validation_comes_out_of_the_test_split() -> None:
    plain = load_data(DataSpec("digits"))
    data, validation = load_with_validation(DataSpec("digits", validation=60))
    assert validation is not None
    assert (len(validation), len(data.test)) == (60, len(plain.test) - 60)
    assert validation.classes == plain.classes
    assert len(rows(plain.test.x)) == len(plain.test)  # no duplicate rows: rows identify samples
    val_rows, test_rows = rows(validation.x), rows(data.test.x)
    assert not val_rows & test_rows
    assert val_rows | test_rows == rows(plain.test.x)
    # Each sample keeps its label.
    label = {
        tuple(r.tolist()): int(y)
        for r, y in zip(plain.test.x.flatten(1), plain.test.y, strict=True)
    }
    assert all(
        label[tuple(r.tolist())] == int(y)
        for r, y in zip(validation.x.flatten(1), validation.y, strict=True)
    )
    assert len(set(validation.y.tolist())) >= 8  # a random draw, not a block of one class
    assert torch.equal(data.train.x, plain.train.x) and torch.equal(data.train.y, plain.train.y)
    # load_data gives the splits without the validation samples.
    assert torch.equal(load_data(DataSpec("digits", validation=60)).test.x, data.test.x)
    again, validation_again = load_with_validation(DataSpec("digits", validation=60))
    assert validation_again is not None
    assert torch.equal(validation_again.x, validation.x)
    assert torch.equal(again.test.x, data.test.x)
    none = load_with_validation(DataSpec("digits"))
    assert none[1] is None and torch.equal(none[0].test.x, plain.test.x)


def test_too_large_a_validation_split_is_refused() -> None:
    with pytest.raises(ValueError, match="data.validation=361 but only 360"):
        load_with_validation(DataSpec("digits", validation=361))
    data, validation = load_with_validation(DataSpec("digits", validation=360))
    assert validation is not None and len(validation) == 360 and len(data.test) == 0


def test_digits_test_limit_is_kept_whole_beside_validation() -> None:
    limited = load_data(DataSpec("digits", test_limit=120))
    data, validation = load_with_validation(DataSpec("digits", test_limit=120, validation=60))
    assert validation is not None
    assert torch.equal(data.test.x, limited.test.x)  # "exactly those without validation"
    assert not rows(validation.x) & rows(limited.test.x)


# --------------------------------------------------------------------------- config and plan


def grid_values(validation: int | None) -> dict[str, Any]:
    values = base_values()
    values["data"] = {"name": "digits", "validation": validation}
    values["methods"] = [{"method": "finetune", "grid": {"lr": [0.01, 0.1], "budget": [0.1]}}]
    return values


def test_a_grid_needs_a_validation_split() -> None:
    with pytest.raises(ValueError, match=r"data\.validation"):
        config_from_dict(grid_values(None))
    config = config_from_dict(grid_values(60))
    assert config.methods[0].grid == {"lr": (0.01, 0.1), "budget": (0.1,)}
    with pytest.raises(ValueError, match=r"data\.validation"):
        config_from_dict(grid_values(0))


@pytest.mark.parametrize(
    ("method", "match"),
    [
        ({"method": "finetune", "grid": {"lr": []}}, r"grid\['lr'\]"),
        ({"method": "finetune", "grid": {"budget": [2]}}, r"grid\['budget'\]"),
        ({"method": "retrain", "grid": {"epochs": [1]}}, "retrain is not tuned"),
        ({"method": "ssd", "grid": {"budget": [0.1]}}, "no step budget"),
        ({"method": "ssd", "options": {"budget": 0.1}}, "no step budget"),
    ],
)
def test_bad_grids_name_the_method(method: dict[str, Any], match: str) -> None:
    values = grid_values(60)
    values["methods"] = [method]
    with pytest.raises(ValueError, match=match):
        config_from_dict(values)


def test_plan_uses_the_tuned_options_of_tuned_rows_only() -> None:
    values = grid_values(60)
    values["methods"] = [
        {"method": "finetune", "options": {"steps": 2}, "grid": {"lr": [0.01, 0.1]}},
        {"method": "neggrad", "options": {"steps": 3}},
    ]
    config = config_from_dict(values)
    untuned = {c.row: c for c in plan(config)}
    key = tuned_key("cnn", "full_class/3", "finetune")
    assert key == "cnn|full_class/3|finetune"
    tuned = {c.row: c for c in plan(config, {key: {"steps": 2, "lr": 0.1}})}
    assert untuned["finetune"].options == {"steps": 2}
    assert tuned["finetune"].options == {"lr": 0.1, "steps": 2}
    assert tuned["finetune"].digest != untuned["finetune"].digest
    assert tuned["neggrad"].options == untuned["neggrad"].options == {"steps": 3}
    assert tuned["neggrad"].digest == untuned["neggrad"].digest
    # A key for a row without a grid changes nothing.
    other = plan(config, {tuned_key("cnn", "full_class/3", "neggrad"): {"steps": 99}})
    assert [c.digest for c in other] == [c.digest for c in plan(config)]


# --------------------------------------------------------------------------- report


def tuning_entry(chosen: int | None) -> dict[str, Any]:
    return {
        "method": "finetune",
        "grid": {"lr": [0.01, 0.1], "budget": [0.1]},
        "original": {"retain_val": 0.95, "forget_val": 0.9, "forget_term": 0.9},
        "points": [
            {
                "point": {"lr": 0.01, "budget": 0.1},
                "score": 0.25,
                "retain_val": 0.9,
                "forget_term": 0.2,
                "steps": 3,
                "seconds": 1.25,
            },
            {"point": {"lr": 0.1, "budget": 0.1}, "error": "ValueError: diverged"},
            {
                "point": {"lr": 0.5, "budget": 0.1},
                "score": 0.5,
                "retain_val": 0.5,
                "forget_term": 0.05,
                "steps": 3,
                "seconds": 2.0,
            },
        ],
        "chosen": chosen,
    }


def test_tuning_table_by_hand() -> None:
    assert tuning_table({}) == ""
    table = tuning_table(
        {
            "tuning": {
                "cnn|full_class/3|finetune": tuning_entry(0),
                "cnn|random/10|finetune": tuning_entry(None),
            }
        }
    )
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2] == (
        "| cnn | full_class/3 | finetune | lr: 0.01, 0.1; budget: 0.1 (1 failed) "
        "| lr 0.01, budget 0.1 | 0.250 | 95.0 → 90.0 | 0.200 | 3 | 1.2 | 3 |"
    )
    assert lines[3].startswith("| cnn | random/10 | finetune |") and "none finished" in lines[3]
    md = render_markdown(
        {"name": "t", "rows": [], "cells": [], "tuning": {"m|s|r": tuning_entry(0)}}
    )
    assert "## Tuning" in md and "| m | s | r |" in md
    assert "## Tuning" not in render_markdown({"name": "t", "rows": [], "cells": []})


# --------------------------------------------------------------------------- through the CLI


def tuned_tiny(out: Path) -> dict[str, Any]:
    """``tiny_quick`` with one full-class scenario, one tuned baseline and 60 validation
    samples taken out of the 360 digits test samples."""
    values = tiny_quick(out)
    values["data"].update(test_limit=None, validation=60)
    values["scenarios"] = [s for s in values["scenarios"] if s["kind"] == "full_class"]
    values["methods"] = [
        {
            "method": "finetune",
            "group": "baselines",
            "options": {"steps": 2},
            "grid": {"lr": [0.01, 0.1], "budget": [0.1]},
        }
    ]
    return values


def test_tuned_bench_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "tuned.json", tuned_tiny(out))
    args = ["bench", "--config", str(config_path), "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("tuned cnn|full_class/3|finetune") == 2

    tuning = json.loads((out / "tuning.json").read_text())
    entry = tuning["entries"]["cnn|full_class/3|finetune"]
    points = entry["points"]
    assert [p["point"] for p in points] == [
        {"lr": 0.01, "budget": 0.1},
        {"lr": 0.1, "budget": 0.1},
    ]
    original = entry["original"]
    for p in points:
        assert "error" not in p
        assert p["options"] == {"budget": 0.1, "lr": p["point"]["lr"]}  # replaces steps
        assert p["steps"] == 1  # 10% of the original's 2 epochs × 5 batches
        drop = max(0.0, original["retain_val"] - p["retain_val"])
        assert p["score"] == pytest.approx(p["forget_term"] + drop)
        assert p["forget_term"] == p["forget_val"]
    best = min(range(2), key=lambda i: (round(points[i]["score"], 4), i))
    assert entry["chosen"] == best

    # The reference figures are the original model's accuracies on the validation samples.
    bench = load_config(config_path)
    spec = bench.scenarios[0]
    data, validation = load_with_validation(bench.data_for(spec))
    assert validation is not None
    scenario = make_scenario(data, spec, 0)
    recipe = bench.models[0].train_config()
    model = cached_train(recipe, scenario.data, None, 0, bench.cache_path).eval()
    assert (bench.cache_path / f"{cache_key(recipe, scenario.data, None, 0)}.safetensors").is_file()
    with torch.no_grad():
        hits = model(validation.x).argmax(dim=1) == validation.y
    gone = validation.y == data.classes.index("3")
    assert 0 < int(gone.sum()) < 60
    assert original["forget_val"] == pytest.approx(float(hits[gone].double().mean()), abs=1e-12)
    assert original["retain_val"] == pytest.approx(float(hits[~gone].double().mean()), abs=1e-12)

    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == ["original", "retrain", "finetune"]
    assert not [c for c in results["cells"] if "error" in c]
    cell = next(c for c in results["cells"] if c["row"] == "finetune")
    assert cell["options"] == points[best]["options"]
    assert (cell["budget_steps"], cell["original_steps"], cell["steps"]) == (1, 10, 1)
    assert results["tuning"] == tuning["entries"]
    md = (out / "results.md").read_text()
    assert "## Tuning" in md
    # Grid keys are sorted when the config is read.
    assert f"| budget 0.1, lr {points[best]['point']['lr']} |" in md

    # Again: neither the grid points nor the cells run again.
    unlearn = Counter(bench_runner.unlearn)
    monkeypatch.setattr(bench_runner, "unlearn", unlearn)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert unlearn.calls == 0 and "tuned " not in result.output
    assert json.loads((out / "tuning.json").read_text()) == tuning

    # --no-tune: the row runs once with its configured options; tuning.json is left alone.
    result = CliRunner().invoke(main, [*args, "--no-tune"])
    assert result.exit_code == 0, result.output
    assert unlearn.calls == 1 and "tuned " not in result.output
    assert "run with their configured options and replace" in result.output
    results = json.loads((out / "results.json").read_text())
    cell = next(c for c in results["cells"] if c["row"] == "finetune")
    assert cell["options"] == {"steps": 2} and cell["steps"] == 2
    assert "budget_steps" not in cell and "tuning" not in results
    assert "## Tuning" not in (out / "results.md").read_text()
    assert json.loads((out / "tuning.json").read_text()) == tuning
    assert "--no-tune" in results["command"]


def test_budget_refuses_a_second_budget_in_the_same_options() -> None:
    with pytest.raises(ValueError, match="budget and epochs"):
        resolve_budget("finetune", {"budget": 0.1, "epochs": 2}, 1000)
    with pytest.raises(ValueError, match="budget and steps"):
        resolve_budget("amnesiac", {"budget": 0.1, "steps": 5}, 1000)
    with pytest.raises(ValueError, match="budget and impair_epochs"):
        resolve_budget("unsir", {"budget": 0.1, "impair_epochs": 1}, 1000)
    options, steps = resolve_budget("finetune", {"budget": 0.1, "epochs": None}, 1000)
    assert (options["steps"], steps) == (100, 100)


def test_a_grid_names_options_of_its_method_and_takes_no_heldout() -> None:
    with pytest.raises(ValueError, match=r"\['lrr'\] are not options of 'finetune'"):
        MethodSpec("finetune", grid={"lrr": [0.1]})
    with pytest.raises(ValueError, match="heldout"):
        MethodSpec("ssd", grid={"alpha": [1.0, 10.0]}, heldout=10)
    assert MethodSpec("jit", grid={"sigma": [0.1], "lr": [1e-3]}).grid == {
        "lr": (1e-3,),
        "sigma": (0.1,),
    }


def test_a_grid_budget_replaces_the_configured_budget() -> None:
    base = {"steps": 2, "epochs": 3, "lr": 0.5}
    assert with_point("finetune", base, {"budget": 0.1, "lr": 0.1}) == {"budget": 0.1, "lr": 0.1}
    assert with_point("finetune", base, {"lr": 0.1}) == {"epochs": 3, "lr": 0.1, "steps": 2}
    unsir = {"impair_steps": 5, "repair_epochs": 1, "impair_lr": 1e-3}
    assert with_point("unsir", unsir, {"budget": 0.2}) == {"budget": 0.2, "impair_lr": 1e-3}


def test_a_failed_grid_point_is_kept_and_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point is deterministic: its failure is stored like a score and reused on resume."""
    real = bench_runner.unlearn

    def failing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("lr") == 0.01:
            raise ValueError("diverged on purpose")
        return real(*args, **kwargs)

    calls = Counter(failing)
    monkeypatch.setattr(bench_runner, "unlearn", calls)
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "tuned.json", tuned_tiny(out))
    args = ["bench", "--config", str(config_path), "--threads", "1", "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    entry = json.loads((out / "tuning.json").read_text())["entries"]["cnn|full_class/3|finetune"]
    assert [("error" in p) for p in entry["points"]] == [True, False]
    assert entry["chosen"] == 1
    before = calls.calls
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert calls.calls == before  # neither point, nor any cell, ran again
    assert "tuned " not in second.output
