"""dampen bench: config validation, a tiny quick-preset run through the CLI, resume, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from dampen.bench import config_from_dict, load_config, plan, preset
from dampen.bench import runner as bench_runner
from dampen.bench.report import mean_std, render_markdown, seconds_text
from dampen.bench.runner import load_data, make_scenario
from dampen.cli import main
from dampen.recipe import cache_key, cached_train


def tiny_quick(out: Path) -> dict[str, Any]:
    """The quick preset shrunk: 300 digits, 2 epochs, 1 seed, 2 scenarios, 3 methods."""
    values = preset("quick").to_dict()
    values["data"].update(limit=300, test_limit=120)
    values["models"][0]["train"]["epochs"] = 2
    values["scenarios"] = [s for s in values["scenarios"] if s["kind"] != "sub_class"]
    values["scenarios"][-1]["count"] = 10
    keep = {"ssd", "ssd (on the fly)", "finetune"}
    values["methods"] = [m for m in values["methods"] if m["label"] in keep]
    for m in values["methods"]:
        if m["method"] == "finetune":
            m["options"] = {"epochs": 1}
    values["seeds"] = [0]
    values["out_dir"] = str(out)
    return values


def write_config(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(json.dumps(values))
    return path


def base_values() -> dict[str, Any]:
    return {
        "data": {"name": "digits"},
        "models": [{"model": "cnn"}],
        "scenarios": [{"kind": "full_class", "cls": "3"}],
        "methods": ["ssd"],
    }


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda v: v.update(data={"name": "mnist"}), "data.name"),
        (lambda v: v.update(colour="red"), "config"),
        (lambda v: v.pop("models"), "models"),
        (lambda v: v.update(models=[]), "models"),
        (lambda v: v.update(models=[{"model": "lenet"}]), "models['lenet'].model"),
        (lambda v: v["models"][0].update(train={"epochs": -1}), ".train"),
        (lambda v: v["models"][0].update(train={"optimizer": "adam"}), "models['cnn']"),
        (lambda v: v.update(scenarios=[{"kind": "full_class"}]), "cls"),
        (lambda v: v.update(scenarios=[{"kind": "forget_all"}]), "scenarios[].kind"),
        (lambda v: v.update(scenarios=[{"kind": "random", "count": 0}]), "count"),
        (lambda v: v.update(scenarios=[{"kind": "random", "count": 5, "cls": 1}]), "cls"),
        (lambda v: v.update(methods=["forgetful"]), "methods[].method"),
        (lambda v: v.update(methods=["ssd", "ssd"]), "methods[].label"),
        (lambda v: v.update(methods=[{"method": "retrain", "options": {"epochs": 1}}]), "retrain"),
        (
            lambda v: v.update(methods=[{"method": "finetune", "importance": "on_the_fly"}]),
            "importance",
        ),
        (lambda v: v.update(methods=[{"method": "ssd", "group": "extra"}]), "group"),
        (
            lambda v: v.update(
                methods=[{"method": "ssd", "overrides": [{"model": "vit", "options": {}}]}]
            ),
            "overrides.model",
        ),
        (lambda v: v.update(seeds=[]), "seeds"),
        (lambda v: v.update(seeds=[0, 0]), "seeds"),
        (lambda v: v.update(batch_size=0), "batch_size"),
    ],
)
def test_bad_config_names_the_field(change: Any, field: str) -> None:
    values = base_values()
    change(values)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(values)


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    for name in ("quick", "fmnist", "fmnist-baselines", "cifar"):
        config = preset(name)
        path = write_config(tmp_path / f"{name}.json", config.to_dict())
        again = load_config(path)
        assert again.to_dict() == config.to_dict()
        assert [c.digest for c in plan(again)] == [c.digest for c in plan(config)]


def test_bad_json_and_unknown_preset(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(ValueError, match="preset='nope'"):
        preset("nope")


def test_vit_alpha_differs_per_scenario_kind() -> None:
    config = preset("fmnist")
    ssd = next(m for m in config.methods if m.label == "ssd")
    assert ssd.options_for("vit", "full_class")["alpha"] == 5.0
    assert ssd.options_for("vit", "sub_class")["alpha"] == 25.0
    assert ssd.options_for("vit", "random")["alpha"] == 10.0
    assert ssd.options_for("resnet18", "sub_class")["alpha"] == 10.0
    baselines = preset("fmnist-baselines")
    assert baselines.rows()[-1] == "jit"
    assert all(m.grid for m in baselines.methods if m.group == "baselines")


def test_cifar_preset_fails_clearly_without_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "--preset", "cifar", "--out", str(tmp_path / "out"), "--no-progress"],
        env={"DAMPEN_DATA": str(tmp_path / "nothing-here")},
    )
    assert result.exit_code != 0
    assert "cifar" in result.output.lower()
    assert not (tmp_path / "out" / "cache").exists() or not any(
        (tmp_path / "out" / "cache").glob("*.safetensors")
    )


def test_cli_needs_a_preset_or_a_config() -> None:
    result = CliRunner().invoke(main, ["bench"])
    assert result.exit_code != 0
    assert "--preset" in result.output


# --------------------------------------------------------------------------- smoke run + resume


class Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_quick_smoke_run_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.json", tiny_quick(out))
    args = ["bench", "--config", str(config), "--threads", "1", "--no-progress"]

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = ["original", "retrain", "ssd", "ssd (on the fly)", "finetune"]
    assert results["rows"] == rows
    assert len(results["cells"]) == 2 * len(rows)
    assert not [c for c in results["cells"] if "error" in c]
    by_key = {c["key"]: c for c in results["cells"]}
    ssd = by_key["cnn|full_class/3|0|ssd"]
    assert ssd["importance"] == "stored" and ssd["importance_seconds"] > 0
    assert ssd["alpha"] == 10.0 and ssd["selected"] > 0 and ssd["seconds"] > 0
    fly = by_key["cnn|full_class/3|0|ssd (on the fly)"]
    assert fly["importance"] == "on_the_fly" and fly["importance_seconds"] is None
    # The importance of D computed inside the call is the stored one: same selection, same model.
    assert fly["selected"] == ssd["selected"]
    assert fly["metrics"] == pytest.approx(ssd["metrics"])
    assert fly["seconds_breakdown"]["importance_train"] > 0
    assert by_key["cnn|random/10|0|retrain"]["seconds"] > 0
    assert by_key["cnn|random/10|0|original"]["seconds"] is None
    assert by_key["cnn|random/10|0|ssd"]["forget_samples"] == 10
    for cell in results["cells"]:  # every row is measured against the retrain row's model
        reference = by_key[f"cnn|{cell['scenario']}|0|retrain"]["metrics"]
        assert cell["metrics"]["retrained_mia"] == reference["mia"]
        assert cell["metrics"]["retrained_forget_acc"] == reference["forget_acc"]
    # Dr accuracy of the reference rows, recomputed from the cached models by a plain loop
    # (one wrong sample would move it by 1/|Dr|).
    bench = load_config(config)
    assert bench.eval_retain_limit is None  # the Dr metrics cover the whole retain set
    recipe = bench.models[0].train_config()
    for spec in bench.scenarios:
        scenario = make_scenario(load_data(bench.data_for(spec)), spec, 0)
        x, y = scenario.data.train.x[scenario.retain], scenario.data.train.y[scenario.retain]
        for row, indices in (("original", None), ("retrain", scenario.retain)):
            key = cache_key(recipe, scenario.data, indices, 0)
            assert (bench.cache_path / f"{key}.safetensors").is_file()  # loaded, not trained
            model = cached_train(recipe, scenario.data, indices, 0, bench.cache_path).eval()
            with torch.no_grad():
                correct = int((model(x).argmax(dim=1) == y).sum())
            retain_acc = by_key[f"cnn|{spec.label}|0|{row}"]["metrics"]["retain_acc"]
            assert retain_acc == pytest.approx(correct / len(y), abs=1e-12)
    md = (out / "results.md").read_text()
    assert "## cnn" in md and "| ssd (on the fly) |" in md and "full_class/3 Dr" in md
    assert "dampen bench --config" in md
    for name in ("forget_retain_cnn.png", "seconds_cnn.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # A second run recomputes nothing.
    unlearn = Counter(bench_runner.unlearn)
    train = Counter(bench_runner.cached_train)
    imp = Counter(bench_runner.compute_importance)
    monkeypatch.setattr(bench_runner, "unlearn", unlearn)
    monkeypatch.setattr(bench_runner, "cached_train", train)
    monkeypatch.setattr(bench_runner, "compute_importance", imp)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (unlearn.calls, train.calls, imp.calls) == (0, 0, 0)
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 2

    # Drop one finished cell: only that one runs again, from the cached model and importance.
    stored = json.loads((out / "results.json").read_text())
    stored["cells"] = [c for c in stored["cells"] if c["key"] != "cnn|full_class/3|0|ssd"]
    (out / "results.json").write_text(json.dumps(stored))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert unlearn.calls == 1 and imp.calls == 0
    assert len(json.loads((out / "results.json").read_text())["cells"]) == 2 * len(rows)


# --------------------------------------------------------------------------- report


def test_mean_std_formatting() -> None:
    assert mean_std([0.5, 0.7], percent=True) == "60.0 ± 14.1"
    assert mean_std([0.25], percent=True) == "25.0"
    assert mean_std([None, None]) == "—"
    assert mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"
    assert seconds_text([0.0123, 0.0125]) == "0.012 ± 0.000"
    assert seconds_text([120.0, 130.0]) == "125 ± 7"


def test_markdown_from_hand_made_results() -> None:
    def cell(row: str, seed: int, retain: float, forget: float, seconds: float | None) -> Any:
        return {
            "key": f"m|full_class/1|{seed}|{row}",
            "model": "m",
            "scenario": "full_class/1",
            "seed": seed,
            "row": row,
            "seconds": seconds,
            "metrics": {
                "retain_acc": retain,
                "forget_acc": forget,
                "test_acc": 0.5,
                "retain_test_acc": 0.9,
                "mia": 0.1,
            },
        }

    results = {
        "name": "hand",
        "rows": ["original", "retrain", "ssd"],
        "groups": {"ssd": "main"},
        "machine": {"cpu_count": 2, "torch": "x"},
        "runs": [{"seconds": 90.0}],
        "config": {"seeds": [0, 1]},
        "cells": [
            cell("original", 0, 1.0, 1.0, None),
            cell("original", 1, 0.98, 0.96, None),
            cell("retrain", 0, 0.99, 0.0, 10.0),
            cell("retrain", 1, 0.97, 0.02, 12.0),
            cell("ssd", 0, 0.95, 0.1, 0.5),
            {**cell("ssd", 1, 0.0, 0.0, 0.0), "error": "RuntimeError: boom", "metrics": None},
        ],
    }
    md = render_markdown(results)
    assert "| original | 99.0 ± 1.4 | 98.0 ± 2.8 | 90.0 ± 0.0 | 10.0 ± 0.0 | — |" in md
    assert "| retrain | 98.0 ± 1.4 | 1.0 ± 1.4 | 90.0 ± 0.0 | 10.0 ± 0.0 | 11.0 ± 1.4 |" in md
    assert "| ssd | 95.0* | 10.0* | 90.0* | 10.0* | 0.500* |" in md
    assert "fewer seeds than configured" in md
    assert "failed: `m|full_class/1|1|ssd`: RuntimeError: boom" in md
    assert "1.5 min in 1 run(s)" in md and "2 CPU cores" in md


def test_bad_class_fails_before_any_training(tmp_path: Path) -> None:
    values = base_values()
    values["scenarios"] = [{"kind": "full_class", "cls": "eleven"}]
    values["out_dir"] = str(tmp_path / "out")
    config = write_config(tmp_path / "bad.json", values)
    result = CliRunner().invoke(main, ["bench", "--config", str(config), "--no-progress"])
    assert result.exit_code != 0
    assert "cls='eleven'" in result.output
    assert not list((tmp_path / "out").glob("cache/*.safetensors"))


def test_quick_plan_runs_every_method_and_unsir_on_classes_only() -> None:
    from dampen import methods

    config = preset("quick")
    cells = plan(config)
    ran = {c.method.method for c in cells if c.method is not None}
    # retrain: the cached reference row; potion: a corrective method, in the corrective presets
    assert ran | {"retrain", "potion"} == set(methods())
    assert "potion" in {m.method for m in preset("digits-poison").methods}
    assert {c.kind for c in cells if c.row == "unsir"} == {"full_class"}
    assert len({c.key for c in cells}) == len(cells) == 92  # 2 seeds x (3 x 15 + unsir)
    with pytest.raises(ValueError, match="kinds"):
        config_from_dict({**base_values(), "methods": [{"method": "ssd", "kinds": ["all"]}]})


def test_class_sweep_worst_case_and_mean_by_hand() -> None:
    from dampen.bench.report import class_sweep

    def cell(scenario: str, row: str, retain: float, forget: float, ref: float) -> Any:
        return {
            "model": "m",
            "scenario": scenario,
            "kind": "full_class",
            "seed": 0,
            "row": row,
            "metrics": {"retain_acc": retain, "forget_acc": forget, "retrained_forget_acc": ref},
        }

    results = {
        "cells": [
            cell("full_class/a", "original", 0.99, 1.0, 0.0),
            cell("full_class/b", "original", 0.98, 1.0, 0.0),
            # a: gap 1 point, drop 0.5 → meets both; b: gap 30 points, drop 3 → meets neither
            cell("full_class/a", "ssd", 0.985, 0.01, 0.0),
            cell("full_class/b", "ssd", 0.95, 0.31, 0.01),
        ]
    }
    table = class_sweep(results, "m")
    assert "| ssd | 15.5 | 30.0 | 1.8 | 3.0 | 1 / 2 |" in table
    assert class_sweep({"cells": results["cells"][::2]}, "m") == ""  # one class: no sweep
    # On the boundary: 0.76 - 0.75 is 0.01000…01 in floats, yet a drop of exactly 1 point.
    edge = [
        cell("full_class/a", "original", 0.76, 1.0, 0.0),
        cell("full_class/b", "original", 0.76, 1.0, 0.0),
        cell("full_class/a", "ssd", 0.75, 0.02, 0.0),
        cell("full_class/b", "ssd", 0.7499, 0.0, 0.0),
    ]
    assert class_sweep({"cells": edge}, "m").endswith("| 1 / 2 |")


def test_attack_table_when_population_attacks_are_present() -> None:
    metrics = {"retain_acc": 0.9, "forget_acc": 0.1, "test_acc": 0.9, "mia": 0.2}
    attacks = {"svc_mia_entropy": 0.25, "svc_mia_confidence": 0.5, "loss_mia_auc": 0.6, "zrf": 0.7}
    cells = [
        {"key": f"m|s|0|{row}", "model": "m", "scenario": "s", "seed": 0, "row": row,
         "seconds": 1.0, "metrics": {**metrics, **attacks}}
        for row in ("original", "retrain", "ssd")
    ]  # fmt: skip
    md = render_markdown({"name": "x", "rows": ["original", "retrain", "ssd"], "cells": cells})
    assert "| method | s SVC-ent | SVC-conf | loss AUC | ZRF |" in md
    assert "| ssd | 25.0 | 50.0 | 60.0 | 0.700 |" in md
    no_attacks = [{**c, "metrics": metrics} for c in cells]
    assert "SVC-ent" not in render_markdown({"name": "x", "cells": no_attacks})


def test_the_quick_preset_itself_runs_every_method(tmp_path: Path) -> None:
    """The real ``quick`` preset end to end (one seed): every row finishes, nothing fails."""
    out = tmp_path / "quick"
    args = ["bench", "--preset", "quick", "--out", str(out), "--seeds", "1", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    cells = results["cells"]
    assert len(cells) == len(plan(preset("quick"))) // 2  # one seed of two
    assert not [c["key"] for c in cells if "error" in c]
    md = (out / "results.md").read_text()
    for row in {c["row"] for c in cells}:
        assert f"| {row} |" in md
    assert (out / "forget_retain_cnn.png").stat().st_size > 0


def test_results_json_is_standard_json(tmp_path: Path) -> None:
    from dampen.bench.runner import write_json

    write_json(tmp_path / "r.json", {"alpha": float("inf"), "xs": [1.0, float("nan")], "k": "v"})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"alpha": None, "xs": [1.0, None], "k": "v"}
