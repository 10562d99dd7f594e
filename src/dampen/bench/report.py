"""``results.md``: paper-style tables of mean ± std over seeds, one per model."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dampen.bench.config import CLEAN_ROW, CORRECTIVE_KINDS, REFERENCE_ROWS
from dampen.core.files import atomic_write_text

REFERENCE = (*REFERENCE_ROWS, CLEAN_ROW)
"""The reference rows (no method): original, retrain and, in corrective scenarios, clean."""

COLUMNS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("Dr", ("retain_acc",), True),
    ("Df", ("forget_acc",), True),
    ("test", ("retain_test_acc", "test_acc"), True),
    ("MIA", ("mia",), True),
)
"""``(header, metric fields, shown in percent)`` per scenario, before the seconds column; the
first field that a cell has is shown (test: the retained classes' test accuracy when the
scenario forgets a class, else the whole test set's)."""

ATTACK_COLUMNS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("SVC-ent", ("svc_mia_entropy",), True),
    ("SVC-conf", ("svc_mia_confidence",), True),
    ("loss AUC", ("loss_mia_auc",), True),
    ("ZRF", ("zrf",), False),
)
"""The population attacks, each read against the retrain row (the target)."""

DISTANCE_COLUMNS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("MIA", ("gap:mia",), True),
    ("SVC-ent", ("gap:svc_mia_entropy",), True),
    ("SVC-conf", ("gap:svc_mia_confidence",), True),
    ("loss AUC", ("gap:loss_mia_auc",), True),
    ("ZRF", ("gap:zrf",), False),
)
"""Every population attack as ``|method − retrained model|`` on the same seed: 0 is ideal, and
a method that looks *more* forgotten than a model that never saw the data is as far off as one
that looks less forgotten."""

CORRECTIVE_COLUMNS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("healed", ("corrective:healed",), True),
    ("ASR", ("corrective:attack_success",), True),
    ("confused", ("corrective:confused_acc",), True),
    ("test", ("test_acc",), True),
    ("drop", ("corrective:test_drop",), True),
    ("Df", ("forget_acc",), True),
)
"""Corrective scenarios: the share of the poison's damage undone, the attack success rate, the
accuracy on the confused classes (label errors), the clean test accuracy and its drop from
the original (corrupted) model, and Df's accuracy on the labels it was trained with."""

CORRECTIVE = "corrective:"
"""Prefix of a field read from a cell's ``corrective`` figures instead of its metrics."""

GAP = "gap:"
"""Prefix of a derived field: ``gap:name`` is ``|metrics[name] − metrics[retrained_name]|``."""

MISSING = "—"


def mean_std(values: Sequence[float | None], *, percent: bool = False, digits: int = 1) -> str:
    """``"mean ± std"`` of the non-missing values (sample std, ``ddof=1``).

    One value is shown alone; no value gives ``"—"``. ``percent`` multiplies by 100 first.

    Examples:
        >>> mean_std([0.5, 0.7], percent=True)
        '60.0 ± 14.1'
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return MISSING
    scale = 100.0 if percent else 1.0
    xs = [x * scale for x in xs]
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seconds_text(values: Sequence[float | None]) -> str:
    """Seconds as mean ± std with a precision that suits their size."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return MISSING
    top = max(abs(x) for x in xs)
    digits = 3 if top < 1 else 2 if top < 10 else 1 if top < 100 else 0
    return mean_std(xs, digits=digits)


def _cells(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in results.get("cells", []) if isinstance(c, Mapping)]


def _ordered(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _metric(cell: Mapping[str, Any], names: Sequence[str]) -> float | None:
    metrics = cell.get("metrics") or {}
    for name in names:
        if name.startswith(CORRECTIVE):
            value = (cell.get("corrective") or {}).get(name[len(CORRECTIVE) :])
            if value is not None:
                return float(value)
        elif name.startswith(GAP):
            base = name[len(GAP) :]
            value, target = metrics.get(base), metrics.get(f"retrained_{base}")
            if value is not None and target is not None:
                return abs(float(value) - float(target))
        elif metrics.get(name) is not None:
            return float(metrics[name])
    return None


def corrective_only(results: Mapping[str, Any]) -> dict[str, Any]:
    """``results`` with the cells of corrective scenarios only."""
    return {**results, "cells": [c for c in _cells(results) if c.get("kind") in CORRECTIVE_KINDS]}


def model_table(
    results: Mapping[str, Any],
    model: str,
    columns: tuple[tuple[str, tuple[str, ...], bool], ...] = COLUMNS,
    *,
    seconds: bool = True,
) -> str:
    """The markdown table of one model: rows = methods, column groups = scenarios."""
    cells = [c for c in _cells(results) if c.get("model") == model]
    scenarios = _ordered(c["scenario"] for c in cells)
    rows = _ordered([*results.get("rows", []), *(c["row"] for c in cells)])
    rows = [r for r in rows if any(c["row"] == r for c in cells)]
    groups: Mapping[str, str] = results.get("groups", {})
    expected = len(results.get("config", {}).get("seeds", [])) or 1
    head = ["method"]
    for s in scenarios:
        head += [f"{s} {h}" if i == 0 else h for i, (h, _, _) in enumerate(columns)]
        head += ["s"] if seconds else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    previous_group = None
    for row in rows:
        group = "reference" if row in REFERENCE else groups.get(row, "main")
        if previous_group is not None and group != previous_group and group == "baselines":
            lines.append("| *baselines* |" + " |" * (len(head) - 1))
        previous_group = group
        line = [row]
        for s in scenarios:
            here = [c for c in cells if c["row"] == row and c["scenario"] == s]
            ok = [c for c in here if "error" not in c]
            width = len(columns) + int(seconds)
            if not here:  # the method does not apply to this scenario
                line += [MISSING] * width
                continue
            if not ok:
                line += ["failed"] * width
                continue
            mark = "*" if len(ok) < expected else ""
            for _, names, percent in columns:
                digits = 1 if percent else 3
                values = [_metric(c, names) for c in ok]
                line.append(mean_std(values, percent=percent, digits=digits) + mark)
            if seconds:
                line.append(seconds_text([c.get("seconds") for c in ok]) + mark)
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def ssd_details(results: Mapping[str, Any], model: str) -> str:
    """α, selected parameters and the once-per-model importance seconds of the SSD family."""
    cells = [
        c
        for c in _cells(results)
        if c.get("model") == model and c.get("importance") and "error" not in c
    ]
    if not cells:
        return ""
    lines = [
        "| method | scenario | importance of D | α | selected parameters | "
        "seconds (method) | seconds (importance of D, once per model) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in _ordered(c["row"] for c in cells):
        for s in _ordered(c["scenario"] for c in cells):
            here = [c for c in cells if c["row"] == row and c["scenario"] == s]
            if not here:
                continue
            mode = str(here[0].get("importance"))
            once = (
                seconds_text([c.get("importance_seconds") for c in here])
                if mode == "stored"
                else "inside the call"
            )
            lines.append(
                f"| {row} | {s} | {mode.replace('_', ' ')} | "
                f"{mean_std([c.get('alpha') for c in here], digits=2)} | "
                f"{mean_std([c.get('selected') for c in here], digits=0)} | "
                f"{seconds_text([c.get('seconds') for c in here])} | {once} |"
            )
    return "\n".join(lines)


def _header(results: Mapping[str, Any]) -> list[str]:
    machine = results.get("machine", {})
    runs = results.get("runs", [])
    total = sum(float(r.get("seconds", 0.0)) for r in runs)
    seeds = results.get("config", {}).get("seeds", [])
    lines = [
        f"# dampen bench: {results.get('name', '?')}",
        "",
    ]
    if results.get("description"):
        lines += [str(results["description"]), ""]
    lines += [
        f"- command: `{results.get('command', '?')}`",
        f"- config: `{results.get('name', '?')}` (in full in `results.json`)",
        f"- seeds: {', '.join(str(s) for s in seeds)}",
        f"- machine: {machine.get('cpu_count', '?')} CPU cores, "
        f"{machine.get('torch_threads', '?')} torch threads, torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}",
        f"- wall-clock: {total / 60:.1f} min in {len(runs)} run(s) "
        "(trainings, importances, methods and evaluations)",
        "",
        "Each cell is mean ± std over seeds. Dr, Df, test: accuracy (%) on the retained and "
        "forgotten training samples and on the test samples of the retained classes (all test "
        "samples for random forgetting); MIA: share (%) of Df the paper's entropy attack calls "
        "'member' (the target is retrain's value, not zero); s: seconds of the method alone, "
        "metrics excluded (retrain: its training; SSD family with a stored importance: without "
        "the once-per-model importance of D, which is listed below). —: not applicable "
        "(e.g. UNSIR forgets whole classes only).",
        "",
    ]
    return lines


#: Goals of the class sweep: forget accuracy within this of the retrained model's …
FORGET_GOAL = 0.02
#: … and retain accuracy within this of the original's.
RETAIN_GOAL = 0.01


def class_sweep(results: Mapping[str, Any], model: str) -> str:
    """Worst case and mean over the full-class scenarios of each row (needs ≥ 2 classes).

    Per class and seed: forget gap = Df acc − the retrained model's Df acc; retain drop = the
    original's Dr acc − Dr acc. A class meets the goals when the gap is at most
    ``FORGET_GOAL`` and the drop at most ``RETAIN_GOAL``.
    """
    cells = [
        c
        for c in _cells(results)
        if c.get("model") == model and c.get("kind") == "full_class" and "metrics" in c
    ]
    scenarios = _ordered(c["scenario"] for c in cells)
    if len(scenarios) < 2:
        return ""
    original = {
        (c["scenario"], c["seed"]): c["metrics"]["retain_acc"]
        for c in cells
        if c["row"] == "original"
    }
    head = (
        "| method | forget gap mean | forget gap worst | retain drop mean | retain drop worst "
        "| classes meeting both goals |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for row in _ordered(c["row"] for c in cells):
        if row in ("original", "retrain"):
            continue
        gaps, drops, met = [], [], 0
        for c in (c for c in cells if c["row"] == row):
            m = c["metrics"]
            ref = m.get("retrained_forget_acc")
            base = original.get((c["scenario"], c["seed"]))
            if ref is None or base is None:
                continue
            gap, drop = m["forget_acc"] - ref, base - m["retain_acc"]
            gaps.append(gap)
            drops.append(drop)
            # Accuracies are shares of a count: compare without the last bits of float noise.
            met += round(gap, 9) <= FORGET_GOAL and round(drop, 9) <= RETAIN_GOAL
        if not gaps:
            continue
        lines.append(
            f"| {row} | {100 * sum(gaps) / len(gaps):.1f} | {100 * max(gaps):.1f} "
            f"| {100 * sum(drops) / len(drops):.1f} | {100 * max(drops):.1f} "
            f"| {met} / {len(gaps)} |"
        )
    return "\n".join(lines)


def _point_text(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in point.items())


def tuning_table(results: Mapping[str, Any]) -> str:
    """One row per tuned method, model and scenario: the grid, the chosen point and its
    validation figures (see :mod:`dampen.bench.tuning`); empty without tuning."""
    entries = results.get("tuning") or {}
    if not entries:
        return ""
    lines = [
        "| model | scenario | row | grid | chosen | score | retain-val (orig → chosen) "
        "| forget term | steps | s | tuning s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in entries.items():
        model, scenario, row = key.split("|", 2)
        grid = "; ".join(f"{k}: {', '.join(str(v) for v in vs)}" for k, vs in entry["grid"].items())
        failed = sum(1 for p in entry["points"] if "error" in p)
        if failed:
            grid += f" ({failed} failed)"
        chosen = entry.get("chosen")
        if chosen is None:
            lines.append(f"| {model} | {scenario} | {row} | {grid} | none finished | | | | | | |")
            continue
        spent = sum(float(p.get("seconds") or 0.0) for p in entry["points"])
        best = entry["points"][chosen]
        orig = entry["original"]["retain_val"]
        seconds = best.get("seconds")
        lines.append(
            f"| {model} | {scenario} | {row} | {grid} | {_point_text(best['point'])} "
            f"| {best['score']:.3f} | {100 * orig:.1f} → {100 * best['retain_val']:.1f} "
            f"| {best['forget_term']:.3f} | {best.get('steps', '')} "
            f"| {'' if seconds is None else f'{seconds:.1f}'} | {spent:.0f} |"
        )
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The whole ``results.md`` text."""
    lines = _header(results)
    models = _ordered(c["model"] for c in _cells(results))
    for model in models:
        table = model_table(results, model)
        lines += [f"## {model}", "", table, ""]
        if re.search(r"[0-9—]\*", table):
            lines += ["\\* fewer seeds than configured (failed or not run yet).", ""]
        attacks = model_table(results, model, ATTACK_COLUMNS, seconds=False)
        if any((c.get("metrics") or {}).get("zrf") is not None for c in _cells(results)):
            lines += [
                "Population attacks (read each against the retrain row, the target): SVC-ent / "
                "SVC-conf: share (%) of Df that SalUn-style SVC attacks on the entropy / the "
                "confidence call member; loss AUC (%): loss-threshold attack, Df vs unseen "
                "samples; ZRF: 1 − JS (in bits, summed over classes) to a random-init model on Df.",
                "",
                attacks,
                "",
                "The same attacks as distances to the retrained model of the same seed, "
                "|method − retrain| (0 is ideal; the paper's entropy MIA included): a method "
                "whose Df looks more forgotten than a model that never trained on it is off "
                "as much as one that looks less forgotten.",
                "",
                model_table(results, model, DISTANCE_COLUMNS, seconds=False),
                "",
            ]
        if any(
            c.get("kind") in CORRECTIVE_KINDS for c in _cells(results) if c.get("model") == model
        ):
            lines += [
                "Corrective scenarios, in %: healed = share of the poison's damage to the "
                "triggered test images' accuracy that is undone, (method − original) / (clean − "
                'original), Potion\'s "poison healed"; ASR = share of triggered test images of '
                "the other classes classified as the target; confused = test accuracy on the "
                "confused classes (label errors; every class for random flips); drop = original "
                "test accuracy − this one; Df = accuracy on the identified samples with the "
                "labels they were trained with. "
                "clean = trained on the data before the corruption; retrain = trained without "
                "the identified samples (the rest of the corruption stays).",
                "",
                model_table(corrective_only(results), model, CORRECTIVE_COLUMNS),
                "",
            ]
        details = ssd_details(results, model)
        if details:
            lines += ["SSD family:", "", details, ""]
        sweep = class_sweep(results, model)
        if sweep:
            lines += [
                "Every class forgotten in turn (full-class scenarios), in points: forget gap = "
                "Df acc − retrained Df acc; retain drop = original Dr acc − Dr acc. Goals: gap "
                f"≤ {100 * FORGET_GOAL:.0f}, drop ≤ {100 * RETAIN_GOAL:.0f}.",
                "",
                sweep,
                "",
            ]
        failed = [c for c in _cells(results) if c.get("model") == model and "error" in c]
        for c in failed:
            lines.append(f"- failed: `{c['key']}`: {c['error']}")
        if failed:
            lines.append("")
    tuning = tuning_table(results)
    if tuning:
        lines += [
            "## Tuning (validation split, first seed)",
            "",
            "Each tuned row ran at every grid point on the first seed's original model; the "
            "point with the lowest score on the validation split (never the test split) serves "
            "every seed. Score = forget term + drop in retain-validation accuracy. Forget term: "
            "full-class, accuracy on validation samples of the forgotten class; sub-class, "
            "|Df accuracy − accuracy on validation samples of the forgotten class|; random, "
            "|mean true-class probability on Df − on validation samples|. budget = share of the "
            "original training's optimiser steps; s: the chosen point's seconds; tuning s: "
            "all points' seconds together (the methods alone, evaluations excluded), to set "
            "against the retrain row. Every point: `tuning.json`.",
            "",
            tuning,
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write :func:`render_markdown` to ``path`` atomically."""
    target = Path(path)
    atomic_write_text(target, render_markdown(results))
    return target
