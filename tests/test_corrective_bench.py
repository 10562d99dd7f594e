"""Corrective scenarios in ``dampen bench``: ``ScenarioSpec`` (validation, labels, digests),
the presets, the tuning score, the report table, and one small real run on digits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dampen import recipe as recipe_module
from dampen.bench import config_from_dict, load_config, plan, preset
from dampen.bench import runner as bench_runner
from dampen.bench.config import (
    CLEAN_ROW,
    CORRECTIVE_KINDS,
    SCENARIO_KINDS,
    DataSpec,
    MethodSpec,
    ScenarioSpec,
)
from dampen.bench.presets import (
    CORRECTIVE_GRIDS,
    DIGITS_CNN,
    IDENTIFIED,
    POTION_GRID,
    PRESETS,
    TUNING_GRIDS,
    corrective_methods,
)
from dampen.bench.report import CORRECTIVE_COLUMNS, corrective_only, model_table, render_markdown
from dampen.bench.runner import load_data, make_scenario, tuned_key
from dampen.bench.tuning import ValidationSplits, score, validation_figures
from dampen.cli import main
from dampen.data.base import loader
from dampen.eval.corrective import attack_figures
from dampen.recipe import cache_key, cached_train
from test_bench import Counter, base_values, write_config

CORRECTIVE_FIELDS = ("share", "identified", "identified_count", "confuse")

# --------------------------------------------------------------------------- ScenarioSpec


def test_corrective_kinds() -> None:
    assert CORRECTIVE_KINDS == ("poison", "label_errors")
    assert set(CORRECTIVE_KINDS) <= set(SCENARIO_KINDS)
    assert CLEAN_ROW == "clean"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "poison", "share": 0.05}, r"scenarios\[poison\]\.identified: give exactly one"),
        (
            {"kind": "poison", "share": 0.05, "identified": 0.1, "identified_count": 1},
            r"scenarios\[poison\]\.identified: give exactly one",
        ),
        ({"kind": "poison", "identified": 0.1}, r"scenarios\[poison\]\.share: must be a number"),
        (
            {"kind": "poison", "share": 0, "identified": 0.1},
            r"scenarios\[poison\]\.share: must lie in \(0, 1\]",
        ),
        (
            {"kind": "poison", "share": True, "identified": 0.1},
            r"scenarios\[poison\]\.share: must be a number",
        ),
        (
            {"kind": "label_errors", "share": 0.1, "identified": 1.5},
            r"scenarios\[label_errors\]\.identified: must lie in \(0, 1\]",
        ),
        (
            {"kind": "poison", "share": 0.05, "identified_count": 0},
            r"scenarios\[poison\]\.identified_count: must be a positive int",
        ),
        (
            {"kind": "poison", "share": 0.05, "identified_count": 1.0},
            r"scenarios\[poison\]\.identified_count: must be a positive int",
        ),
        (
            {"kind": "poison", "share": 0.05, "identified": 0.1, "cls": "3"},
            r"scenarios\[poison\]\.cls: does not apply to poison",
        ),
        (
            {"kind": "label_errors", "share": 0.05, "identified": 0.1, "count": 3},
            r"scenarios\[label_errors\]\.count: does not apply to label_errors",
        ),
        (
            {"kind": "poison", "share": 0.05, "identified": 0.1, "superclasses": {"a": ["1"]}},
            r"scenarios\[poison\]\.superclasses: does not apply",
        ),
        (
            {"kind": "poison", "share": 0.05, "identified": 0.1, "confuse": ["3", "5"]},
            r"scenarios\[poison\]\.confuse: applies to label_errors only",
        ),
        (
            {"kind": "label_errors", "share": 0.05, "identified": 0.1, "confuse": ["3"]},
            r"scenarios\[label_errors\]\.confuse: must name two classes",
        ),
        (
            {"kind": "label_errors", "share": 0.05, "identified": 0.1, "confuse": "35"},
            r"scenarios\[label_errors\]\.confuse: must be a list",
        ),
        (
            {"kind": "label_errors", "share": 0.05, "identified": 0.1, "confuse": [3, True]},
            r"scenarios\[label_errors\]\.confuse: must name two classes",
        ),
        ({"kind": "full_class", "cls": "3", "share": 0.1}, r"full_class\]\.share: does not apply"),
        (
            {"kind": "random", "count": 5, "identified": 0.1},
            r"scenarios\[random\]\.identified: does not apply",
        ),
        (
            {"kind": "sub_class", "fine_class": "8", "identified_count": 1},
            r"sub_class\]\.identified_count: does not apply",
        ),
        ({"kind": "full_class", "cls": "3", "confuse": [3, 5]}, r"\.confuse: does not apply"),
    ],
)
def test_scenario_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScenarioSpec(**kwargs)
    # the same message through a JSON config
    values = {**base_values(), "scenarios": [kwargs]}
    with pytest.raises(ValueError, match=match):
        config_from_dict(values)


def test_scenario_spec_labels_and_normalisation() -> None:
    assert ScenarioSpec("poison", share=0.05, identified=0.1).label == "poison/5%/id10%"
    assert ScenarioSpec("poison", share=0.05, identified_count=1).label == "poison/5%/id1"
    assert ScenarioSpec("poison", share=0.005, identified=1).label == "poison/0.5%/id100%"
    assert ScenarioSpec("label_errors", share=0.2, identified=0.3).label == (
        "label_errors/20%/id30%"
    )
    confused = ScenarioSpec("label_errors", share=0.2, identified=0.3, confuse=["3", 5])
    assert confused.label == "label_errors/3-5/20%/id30%"
    assert confused.confuse == ("3", 5)
    with_data = ScenarioSpec("poison", share=0.05, identified_count=2, dataset=DataSpec("digits"))
    assert with_data.label == "digits:poison/5%/id2"
    spec = ScenarioSpec("poison", share=1, identified=1)
    assert isinstance(spec.share, float) and isinstance(spec.identified, float)
    # scenarios that differ only in the identified part have their own labels
    labels = {ScenarioSpec("poison", share=0.05, **found).label for found in IDENTIFIED}
    assert labels == {"poison/5%/id1", "poison/5%/id10%", "poison/5%/id30%", "poison/5%/id100%"}


def test_payload_of_other_kinds_is_the_earlier_one() -> None:
    specs = [*preset("quick").scenarios, ScenarioSpec("random", count=5)]
    for spec in specs:
        full = dataclasses.asdict(spec)
        assert all(full[k] is None for k in CORRECTIVE_FIELDS)
        earlier = {k: v for k, v in full.items() if k not in CORRECTIVE_FIELDS}
        assert spec.payload() == earlier
        assert list(spec.payload()) == [
            "kind",
            "cls",
            "fine_class",
            "count",
            "superclasses",
            "dataset",
        ]
    poison = ScenarioSpec("poison", share=0.05, identified=0.3)
    assert poison.payload() == {
        "kind": "poison",
        "cls": None,
        "fine_class": None,
        "count": None,
        "superclasses": None,
        "dataset": None,
        "share": 0.05,
        "identified": 0.3,
    }
    confused = ScenarioSpec("label_errors", share=0.2, identified_count=4, confuse=(3, 5))
    assert confused.payload()["confuse"] == (3, 5)
    assert confused.payload()["identified_count"] == 4 and "identified" not in confused.payload()


def test_digests_of_other_scenarios_ignore_corrective_ones() -> None:
    """Adding a corrective scenario (and with it the clean row) keeps every other cell."""
    plain = config_from_dict({**base_values(), "methods": ["ssd", "assd"], "seeds": [0, 1]})
    more = plain.replace(
        scenarios=(*plain.scenarios, ScenarioSpec("poison", share=0.05, identified=0.1))
    )
    assert CLEAN_ROW not in plain.rows()
    assert more.rows() == ("original", "retrain", CLEAN_ROW, "ssd", "assd")
    before = {c.key: c.digest for c in plan(plain)}
    after = {c.key: c.digest for c in plan(more)}
    assert {k: after[k] for k in before} == before
    assert {c.row for c in plan(more) if c.kind == "full_class"} == set(plain.rows())
    assert [c.key for c in plan(more) if c.row == CLEAN_ROW] == [
        "cnn|poison/5%/id10%|0|clean",
        "cnn|poison/5%/id10%|1|clean",
    ]
    with pytest.raises(ValueError, match="reserved"):
        MethodSpec("ssd", label=CLEAN_ROW)


def test_scenario_spec_json_round_trip(tmp_path: Path) -> None:
    values = {
        **base_values(),
        "scenarios": [
            {"kind": "poison", "share": 0.05, "identified_count": 1},
            {"kind": "label_errors", "share": 0.2, "identified": 0.3, "confuse": ["3", "5"]},
        ],
    }
    config = config_from_dict(values)
    assert config.scenarios[1].confuse == ("3", "5")
    again = load_config(write_config(tmp_path / "c.json", config.to_dict()))
    assert again.to_dict() == config.to_dict()
    assert again.scenarios == config.scenarios
    assert [c.digest for c in plan(again)] == [c.digest for c in plan(config)]
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict({**values, "scenarios": [{"kind": "poison", "share": 0.1, "found": 1}]})


def test_make_scenario_builds_corrective_scenarios() -> None:
    data = load_data(DataSpec("digits"))
    s = make_scenario(data, ScenarioSpec("poison", share=0.05, identified_count=3), 2)
    assert s.kind == "poison" and len(s.forget) == 3 and s.seed == 2 and s.attack is not None
    assert s.corrupted is not None and len(s.corrupted) == round(0.05 * len(data.train))
    t = make_scenario(
        data, ScenarioSpec("label_errors", share=0.2, identified=1.0, confuse=("3", "5")), 2
    )
    assert t.kind == "label_errors" and t.corrupted is not None
    assert torch.equal(t.forget, t.corrupted)
    assert set(data.train.y[t.forget].tolist()) == {3, 5}
    u = make_scenario(data, ScenarioSpec("label_errors", share=0.1, identified=0.5), 2)
    assert len(u.forget_test) == len(data.test)  # random flips: every test sample
    with pytest.raises(ValueError, match="identified_count"):
        make_scenario(data, ScenarioSpec("poison", share=0.01, identified_count=100), 0)


# --------------------------------------------------------------------------- presets


def test_corrective_presets() -> None:
    for name in ("digits-poison", "fmnist-poison", "fmnist-label-errors", "fmnist-label-noise"):
        assert name in PRESETS
        config = preset(name)
        assert config.name == name
        assert CLEAN_ROW in config.rows()
        assert all(s.kind in CORRECTIVE_KINDS for s in config.scenarios)
        cells = plan(config)
        assert len({c.key for c in cells}) == len(cells)
        per_seed = len(config.scenarios) * len(config.rows())
        assert len(cells) == len(config.seeds) * per_seed  # every method runs on every one
        auto = [m for m in config.methods if m.options.get("alpha") == "auto"]
        kind = "poison" if name.endswith("poison") else "label_errors"
        assert auto and all(m.options["forget_kind"] == kind for m in auto)
    digits = preset("digits-poison")
    assert [s.label for s in digits.scenarios] == [
        "poison/5%/id1",
        "poison/5%/id10%",
        "poison/5%/id30%",
        "poison/5%/id100%",
    ]
    assert digits.models == (DIGITS_CNN,)
    assert len(preset("fmnist-poison").scenarios) == 12
    confusion = preset("fmnist-label-errors").scenarios
    assert {s.confuse for s in confusion} == {("T-shirt/top", "Shirt")}
    assert {s.identified for s in confusion} == {0.1, 0.3, 1.0}
    noise = preset("fmnist-label-noise").scenarios
    assert {(s.confuse, s.share) for s in noise} == {(None, 0.1)}
    assert {s.identified for s in noise} == {0.1, 0.3, 1.0}


def test_corrective_presets_round_trip_through_json(tmp_path: Path) -> None:
    for name in ("digits-poison", "fmnist-poison", "fmnist-label-errors", "fmnist-label-noise"):
        config = preset(name)
        again = load_config(write_config(tmp_path / f"{name}.json", config.to_dict()))
        assert again.to_dict() == config.to_dict()
        assert [c.digest for c in plan(again)] == [c.digest for c in plan(config)]


def test_corrective_methods() -> None:
    methods = corrective_methods(heldout=50)
    labels = [m.label for m in methods]
    assert labels[:6] == ["ssd", "lfssd", "assd", "alf", "ssd (auto)", "ssd (auto, heldout)"]
    assert {m.heldout for m in methods if m.label == "ssd (auto, heldout)"} == {50}
    baselines = [m for m in methods if m.group == "baselines"]
    assert [m.method for m in baselines] == [*CORRECTIVE_GRIDS, "potion"]
    potion = baselines.pop()
    assert dict(potion.grid) == POTION_GRID and potion.kinds == ("poison", "label_errors")
    for m in baselines:
        assert m.kinds == ("poison", "label_errors")
        assert dict(m.grid) == CORRECTIVE_GRIDS[m.method]
        # a smaller grid than the full tuning: learning rates and budgets taken from it
        for key, values in CORRECTIVE_GRIDS[m.method].items():
            assert set(values) <= set(TUNING_GRIDS[m.method][key]), (m.method, key)


# --------------------------------------------------------------------------- tuning score


def test_validation_figures_corrective_forget_term() -> None:
    """The forget term is Df's accuracy with the labels it was trained with (a plain loop)."""
    data = load_data(DataSpec("digits"))
    s = make_scenario(data, ScenarioSpec("label_errors", share=0.3, identified=0.5), 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    with torch.no_grad():
        df = float((model(x).argmax(dim=1) == y).double().mean())
        val = float((model(data.test.x).argmax(dim=1) == data.test.y).double().mean())
        true_df = float((model(x).argmax(dim=1) == data.train.y[s.forget]).double().mean())
    assert df != true_df  # the wrong labels, not the true ones, are read
    for kind in CORRECTIVE_KINDS:
        splits = ValidationSplits(
            kind=kind,
            retain=loader(data.test, batch_size=50),
            forget=None,
            forget_train=loader(s.data.train, s.forget, batch_size=33),
        )
        figures = validation_figures(model, splits)
        assert set(figures) == {"retain_val", "forget_term"}
        assert figures["forget_term"] == pytest.approx(df, abs=1e-12)
        assert figures["retain_val"] == pytest.approx(val, abs=1e-12)
        assert score(figures, val + 0.1) == pytest.approx(df + 0.1)
        with pytest.raises(ValueError, match="corrective tuning needs the forget set"):
            validation_figures(model, dataclasses.replace(splits, forget_train=None))


# --------------------------------------------------------------------------- report


def test_corrective_table_from_hand_made_results() -> None:
    def cell(row: str, scenario: str, corrective: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": f"m|{scenario}|0|{row}",
            "model": "m",
            "scenario": scenario,
            "kind": scenario.split("/")[0],
            "seed": 0,
            "row": row,
            "seconds": 2.0,
            "metrics": {"retain_acc": 0.9, "forget_acc": 0.25, "test_acc": 0.8, "mia": 0.1},
        }
        if corrective is not None:
            out["corrective"] = corrective
        return out

    poisoned = {"test_drop": 0.02, "healed_acc": 0.5, "attack_success": 0.4, "healed": 0.5}
    cells = [
        cell("original", "poison/5%/id10%", {**poisoned, "test_drop": 0.0, "healed": 0.0}),
        cell("clean", "poison/5%/id10%", {**poisoned, "healed": 1.0, "attack_success": 0.0}),
        cell("ssd", "poison/5%/id10%", poisoned),
        cell("ssd", "label_errors/20%/id10%", {"test_drop": -0.01, "confused_acc": 0.75}),
    ]
    results = {"name": "x", "rows": ["original", "retrain", "clean", "ssd"], "cells": cells}
    table = model_table(results, "m", CORRECTIVE_COLUMNS)
    assert table.splitlines()[0] == (
        "| method | poison/5%/id10% healed | ASR | confused | test | drop | Df | s "
        "| label_errors/20%/id10% healed | ASR | confused | test | drop | Df | s |"
    )
    assert "| original | 0.0 | 40.0 | — | 80.0 | 0.0 | 25.0 | 2.00 | — |" in table
    assert "| clean | 100.0 | 0.0 | — | 80.0 | 2.0 | 25.0 | 2.00 | — |" in table
    assert table.endswith(
        "| ssd | 50.0 | 40.0 | — | 80.0 | 2.0 | 25.0 | 2.00 "
        "| — | — | 75.0 | 80.0 | -1.0 | 25.0 | 2.00 |"
    )
    assert "| retrain |" not in table  # no cell
    md = render_markdown(results)
    assert "Corrective scenarios, in %" in md and table in md
    # the table is there for corrective scenarios, not for the others
    other = [{**c, "kind": "full_class", "scenario": "full_class/3"} for c in cells[:3]]
    assert "Corrective scenarios" not in render_markdown({**results, "cells": other})
    # a corrective cell that failed shows as failed, not as "does not apply"
    failed = [*cells[:2], {**cells[2], "error": "RuntimeError: boom"}]
    shown = model_table(corrective_only({**results, "cells": failed}), "m", CORRECTIVE_COLUMNS)
    assert "| ssd | failed |" in shown


# --------------------------------------------------------------------------- a real run


def tiny_corrective(out: Path) -> dict[str, Any]:
    """Digits, the small CNN for 4 epochs without crops (so the 2×2 trigger is learnt), one
    class scenario and two corrective ones, SSD at α = 10, SSD auto for corrective data, and a
    tuned finetune (two grid points) on the poison scenario only."""
    model = dataclasses.asdict(DIGITS_CNN)
    model["train"] = {**model["train"], "epochs": 4, "crop_padding": 0}
    return {
        "name": "tiny-corrective",
        "data": {"name": "digits", "validation": 120},
        "models": [model],
        "scenarios": [
            {"kind": "full_class", "cls": "3"},
            {"kind": "poison", "share": 0.05, "identified": 0.3},
            {"kind": "label_errors", "share": 0.2, "identified": 1.0, "confuse": ["3", "5"]},
        ],
        "methods": [
            {"method": "ssd", "options": {"alpha": 10.0}},
            {
                "method": "ssd",
                "label": "ssd (auto)",
                "options": {"alpha": "auto", "forget_kind": "poison"},
                "heldout": 100,
            },
            {
                "method": "finetune",
                "group": "baselines",
                "kinds": ["poison"],
                "grid": {"lr": [0.02], "budget": [0.05, 0.1]},
            },
        ],
        "seeds": [0],
        "out_dir": str(out),
    }


def test_tiny_corrective_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    path = write_config(tmp_path / "tiny.json", tiny_corrective(out))
    args = ["bench", "--config", str(path), "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == ["original", "retrain", "clean", "ssd", "ssd (auto)", "finetune"]
    cells = results["cells"]
    assert not [(c["key"], c["error"]) for c in cells if "error" in c]
    by_key = {c["key"]: c for c in cells}
    poison, confused, klass = "poison/5%/id30%", "label_errors/3-5/20%/id100%", "full_class/3"
    rows = {s: [c["row"] for c in cells if c["scenario"] == s] for s in (poison, confused, klass)}
    assert rows[klass] == ["original", "retrain", "ssd", "ssd (auto)"]
    assert rows[poison] == ["original", "retrain", "clean", "ssd", "ssd (auto)", "finetune"]
    assert rows[confused] == ["original", "retrain", "clean", "ssd", "ssd (auto)"]
    assert not [c["key"] for c in cells if c["scenario"] == klass and "corrective" in c]

    for c in cells:
        if c["scenario"] == poison:
            assert set(c["corrective"]) == {"test_drop", "healed_acc", "attack_success", "healed"}
        elif c["scenario"] == confused:
            assert set(c["corrective"]) == {"test_drop", "confused_acc"}
    fig = {row: by_key[f"cnn|{poison}|0|{row}"]["corrective"] for row in rows[poison]}
    assert fig["original"]["attack_success"] > 0.5  # the backdoor was learnt
    assert fig["clean"]["attack_success"] < 0.1
    assert fig["original"]["healed"] == 0.0 and fig["clean"]["healed"] == 1.0
    assert fig["original"]["test_drop"] == 0.0
    assert by_key[f"cnn|{confused}|0|original"]["corrective"]["test_drop"] == 0.0
    for row, f in fig.items():  # healed is (acc − original) / (clean − original)
        gap = fig["clean"]["healed_acc"] - fig["original"]["healed_acc"]
        assert f["healed"] == pytest.approx((f["healed_acc"] - fig["original"]["healed_acc"]) / gap)
        assert f["healed_acc"] + f["attack_success"] <= 1.0 + 1e-12, row
    auto = by_key[f"cnn|{poison}|0|ssd (auto)"]
    assert auto["auto"]["kind"] == "poison" and auto["auto"]["original_heldout_acc"] is not None
    assert by_key[f"cnn|{confused}|0|ssd (auto)"]["auto"]["kind"] == "poison"
    assert by_key[f"cnn|{klass}|0|ssd (auto)"]["auto"]["kind"] == "poison"  # as configured

    # Oracles from the cached models, by plain loops.
    bench = load_config(path)
    recipe = bench.models[0].train_config()
    data = load_data(bench.data)
    assert len(data.test) == 360 - 120  # validation taken out
    cache = bench.cache_path

    def model_for(train_data: Any, indices: Any) -> nn.Module:
        key = cache_key(recipe, train_data, indices, 0)
        assert (cache / f"{key}.safetensors").is_file()  # loaded, not trained
        return cached_train(recipe, train_data, indices, 0, cache).eval()

    def acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return int((model(x).argmax(dim=1) == y).sum()) / len(y)

    spec = next(s for s in bench.scenarios if s.label == poison)
    s = make_scenario(data, spec, 0)
    assert s.attack is not None and s.clean is not None
    original, clean = model_for(s.data, None), model_for(s.clean, None)
    retrained = model_for(s.data, s.retain)
    # the clean model is the one the class scenario's original row uses (one cache file)
    assert cache_key(recipe, s.clean, None, 0) == cache_key(
        recipe, make_scenario(data, bench.scenarios[0], 0).data, None, 0
    )
    for row, model in (("original", original), ("clean", clean), ("retrain", retrained)):
        healed = acc(model, s.attack.x, s.attack.y)
        success = int((model(s.attack.x).argmax(dim=1) == 0).sum()) / len(s.attack)
        assert fig[row]["healed_acc"] == pytest.approx(healed, abs=1e-12), row
        assert fig[row]["attack_success"] == pytest.approx(success, abs=1e-12), row
        drop = acc(original, data.test.x, data.test.y) - acc(model, data.test.x, data.test.y)
        assert fig[row]["test_drop"] == pytest.approx(drop, abs=1e-12), row
    assert attack_figures(original, loader(s.attack), 0)["healed_acc"] == pytest.approx(
        fig["original"]["healed_acc"]
    )
    # Df of the poison row is read with the labels it was trained with (the target)
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    assert by_key[f"cnn|{poison}|0|original"]["metrics"]["forget_acc"] == pytest.approx(
        acc(original, x, y)
    )

    spec = next(sp for sp in bench.scenarios if sp.label == confused)
    t = make_scenario(data, spec, 0)
    original = model_for(t.data, None)
    x, y = data.test.x[t.forget_test], data.test.y[t.forget_test]
    assert set(y.tolist()) == {3, 5}
    for row, model in (("original", original), ("clean", model_for(t.clean, None))):
        got = by_key[f"cnn|{confused}|0|{row}"]["corrective"]["confused_acc"]
        assert got == pytest.approx(acc(model, x, y), abs=1e-12), row

    # tuning: corrective score, finetune's point chosen and used
    tuning = json.loads((out / "tuning.json").read_text())["entries"]
    entry = tuning[tuned_key("cnn", poison, "finetune")]
    assert len(entry["points"]) == 2 and entry["chosen"] in (0, 1)
    for point in entry["points"]:
        assert "error" not in point and "forget_val" not in point
        assert point["score"] == pytest.approx(
            point["forget_term"] + max(0.0, entry["original"]["retain_val"] - point["retain_val"])
        )
    assert entry["original"]["forget_term"] == pytest.approx(1.0)  # Df as trained: all target
    chosen = entry["points"][entry["chosen"]]["options"]
    assert by_key[f"cnn|{poison}|0|finetune"]["options"] == chosen

    md = (out / "results.md").read_text()
    assert "Corrective scenarios, in %" in md
    assert f"| {poison} healed | ASR | confused | test | drop | Df | s |" in md
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if f"| {poison} healed |" in line)
    table = lines[head : lines.index("", head)]
    at = [h.strip() for h in table[0].split("|")].index(f"{poison} healed")
    shown = {r.split("|")[1].strip(): r.split("|")[at].strip() for r in table[2:]}
    assert shown["original"] == "0.0" and shown["clean"] == "100.0"
    assert shown["ssd"] == f"{100 * fig['ssd']['healed']:.1f}"
    assert (out / "healed_cnn.png").stat().st_size > 0  # the poison healed vs identified plot

    # A second run recomputes nothing (the tuning reloads the original from the cache).
    unlearn = Counter(bench_runner.unlearn)
    train = Counter(recipe_module.fit_)
    monkeypatch.setattr(bench_runner, "unlearn", unlearn)
    monkeypatch.setattr(recipe_module, "fit_", train)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (unlearn.calls, train.calls) == (0, 0)
    assert json.loads((out / "results.json").read_text())["cells"] == cells


def test_too_large_identified_count_fails_before_any_training(tmp_path: Path) -> None:
    values = tiny_corrective(tmp_path / "out")
    values["scenarios"] = [{"kind": "poison", "share": 0.01, "identified_count": 100}]
    values["methods"] = ["ssd"]
    path = write_config(tmp_path / "bad.json", values)
    result = CliRunner().invoke(main, ["bench", "--config", str(path), "--no-progress"])
    assert result.exit_code != 0
    assert "identified_count=100 must lie in [1, 14]" in result.output
    assert not list((tmp_path / "out").glob("cache/*.safetensors"))


def test_digits_poison_preset_runs_in_ci(tmp_path: Path) -> None:
    """The ``digits-poison`` preset itself, cut to one seed, the 30 % scenario and its untuned
    rows: what CI runs to show the corrective benchmark works end to end."""
    from dampen.bench.presets import digits_poison
    from dampen.bench.runner import run_bench

    full = digits_poison()
    config = full.replace(
        seeds=(0,),
        scenarios=tuple(s for s in full.scenarios if s.identified == 0.3),
        methods=tuple(m for m in full.methods if not m.grid),
        out_dir=str(tmp_path / "run"),
        threads=1,
    )
    results = run_bench(config)
    cells = {c["row"]: c for c in results["cells"]}
    assert not [r for r, c in cells.items() if "error" in c]
    assert set(cells) == {
        "original",
        "retrain",
        "clean",
        "ssd",
        "lfssd",
        "assd",
        "alf",
        "ssd (auto)",
        "ssd (auto, heldout)",
        "ssd (auto, all of Df)",
        "ssd (auto, no copies)",
    }
    figures = {r: c["corrective"] for r, c in cells.items()}
    assert "winning" not in cells["ssd (auto, all of Df)"]["auto"]
    assert "erased_added" not in cells["ssd (auto, no copies)"]["auto"]
    assert cells["ssd (auto)"]["auto"]["erased_added"] > 0
    held = cells["ssd (auto, heldout)"]["auto"]
    assert held["erased_winning"] > 0 and "erased_fallback" not in held  # the copies were used
    assert figures["original"]["attack_success"] > 0.5  # the 5 % backdoor was learnt
    assert figures["clean"]["attack_success"] < 0.1
    assert figures["original"]["healed"] == 0.0 and figures["clean"]["healed"] == 1.0
    for row in ("ssd (auto)", "ssd (auto, heldout)"):
        auto = cells[row]["auto"]
        assert auto["kind"] == "poison" and auto["winning"] <= auto["identified"] == 22
        assert figures[row]["attack_success"] <= figures["original"]["attack_success"]
    assert (tmp_path / "run" / "healed_cnn.png").is_file()
