"""Choose ``BLIND_CORRECTIVE_REMOVED`` on a validation split (not a test).

``fmnist-poison``'s cached models (run ``dampen bench --preset fmnist-poison`` first): for the
(seed, scenario) cells where the backdoor took on these models (:func:`took_pairs`; 24 on the
models this machine trains), the corrective request without held-out data
(``dampen.unlearn(model, identified, importance=imp, forget_kind="poison")``) is run with each
ceiling in turn (the module constant is set, the library's own path does the rest). Healed
share, accuracy drop and attack success are measured on the preset's 1,000 validation samples
(patched and clean) and, beside them, on the test split. The rule, fixed before the sweep: the
largest mean healed share whose mean validation drop stays within 1.4 points.

Run: ``python benchmarks/corrective_ceiling.py [--cache runs/fmnist-poison/cache]
[--out FILE] [--report]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dampen
from dampen.bench.presets import fmnist_poison
from dampen.bench.runner import BenchRunner, make_scenario
from dampen.data import loader
from dampen.data.base import DataSplits
from dampen.data.scenarios import Scenario
from dampen.eval.corrective import attack_figures, healed_share
from dampen.importances.store import Importance
from dampen.methods.auto_alpha import accuracy
from dampen.recipe import cache_key

CEILINGS = (0.0015, 0.002, 0.0025, 0.003, 0.0035, 0.004)
SHARES = ("0.5%", "1%", "2%")
"""The poison shares of the preset's scenarios, as their labels name them."""
TOOK_AT = 0.5
"""A backdoor took when the original classifies at least this share of the triggered test
images of the other classes as the target."""
MAX_DROP = 1.4  # points: the corrective issue's bound on the clean accuracy drop
PARTS = ("id1", "id10%", "id30%", "id100%")
"""The identified shares of the preset's scenarios, as their labels end."""


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """The JSON lines of every file, in order."""
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]


Figures = dict[str, tuple[float, float, float]]
"""``{"val"|"test": (healed %, accuracy drop in points, attack success %)}``."""


@dataclass(frozen=True)
class Prepared:
    """One request's scenario, poisoned model, stored importance of D, and how a model that
    unlearnt it is measured on the validation and the test split."""

    scenario: Scenario
    original: nn.Module
    importance: Importance
    measure: Callable[[nn.Module], Figures]


def prepare(run: BenchRunner, seed: int, label: str) -> Prepared:
    """The cached models of ``label`` on ``seed`` and the figures of the poisoned and the clean
    model that a healed share is measured between."""
    config = run.config
    spec = next(s for s in config.scenarios if s.label == label)
    data = run._load(config.data_for(spec))  # loaded once per runner, with its validation
    validation = run._validation[config.data_for(spec)]
    assert validation is not None
    scenario = make_scenario(data, spec, seed)
    val = make_scenario(
        DataSplits(data.train, validation, superclasses=data.superclasses), spec, seed
    )
    original, _ = run._trained("resnet18", scenario.data, None, seed)
    key = cache_key(run._recipe("resnet18"), scenario.data, None, seed)
    imp, _ = run._importance(original, key, scenario.data.train, "batch_sq")
    clean, _ = run._trained("resnet18", scenario.clean, None, seed)
    splits = {
        "test": (
            loader(scenario.attack, batch_size=512),
            loader(scenario.data.test, batch_size=512),
        ),
        "val": (loader(val.attack, batch_size=512), loader(val.data.test, batch_size=512)),
    }
    reference = {
        k: (
            attack_figures(original, a, scenario.target)["healed_acc"],
            attack_figures(clean, a, scenario.target)["healed_acc"],
            accuracy(original, t, None),
        )
        for k, (a, t) in splits.items()
    }

    def measure(model: nn.Module) -> Figures:
        out = {}
        for k, (attack, test) in splits.items():
            healed_o, healed_c, acc_o = reference[k]
            figures = attack_figures(model, attack, scenario.target)
            out[k] = (
                100 * healed_share(figures["healed_acc"], healed_o, healed_c),
                100 * (acc_o - accuracy(model, test, None)),
                100 * figures["attack_success"],
            )
        return out

    return Prepared(scenario, original, imp, measure)


def took_pairs(run: BenchRunner) -> list[tuple[int, str]]:
    """The (seed, poison share) pairs whose original's attack success is at least TOOK_AT."""
    pairs = []
    for seed in run.config.seeds:
        for share in SHARES:
            spec = next(s for s in run.config.scenarios if s.label == f"poison/{share}/id1")
            scenario = make_scenario(run._load(run.config.data_for(spec)), spec, seed)
            original, _ = run._trained("resnet18", scenario.data, None, seed)
            attack = loader(scenario.attack, batch_size=512)
            if attack_figures(original, attack, scenario.target)["attack_success"] >= TOOK_AT:
                pairs.append((seed, share))
    return pairs


def cell(run: BenchRunner, seed: int, label: str) -> dict[str, Any]:
    """One request under every ceiling: ``{split+ceiling: (healed %, drop, attack %)}``."""
    constants = importlib.import_module("dampen.methods.auto_alpha")
    p = prepare(run, seed, label)
    s = p.scenario
    identified = loader(s.data.train, s.forget, batch_size=64)
    row: dict[str, Any] = {"seed": seed, "label": label}
    saved = constants.BLIND_CORRECTIVE_REMOVED
    try:
        for ceiling in CEILINGS:
            constants.BLIND_CORRECTIVE_REMOVED = ceiling
            result = dampen.unlearn(
                p.original, identified, importance=p.importance, forget_kind="poison"
            )
            for k, figures in p.measure(result.model).items():
                row[f"{k}{ceiling}"] = figures
    finally:
        constants.BLIND_CORRECTIVE_REMOVED = saved
    return row


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{len(rows)} requests without heldout=; mean healed % / drop (points) / attack success %",
        "",
        "| ceiling | validation | test |",
        "|---|---|---|",
    ]
    best = None
    for c in CEILINGS:
        means = {
            k: [statistics.mean(r[f"{k}{c}"][i] for r in rows) for i in range(3)]
            for k in ("val", "test")
        }
        if means["val"][1] <= MAX_DROP and (best is None or means["val"][0] > best[1]):
            best = (c, means["val"][0])
        lines.append(
            f"| {100 * c:.2f} % | "
            + " | ".join(
                " / ".join(f"{v:.2f}" if i == 1 else f"{v:.1f}" for i, v in enumerate(means[k]))
                for k in ("val", "test")
            )
            + " |"
        )
    if best is not None:
        lines += [
            "",
            f"chosen on validation (drop ≤ {MAX_DROP} points, most healed): {100 * best[0]:.2f} %",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/fmnist-poison/cache"))
    parser.add_argument("--out", type=Path, default=Path("runs/corrective-ceiling.jsonl"))
    parser.add_argument("--more", type=Path, nargs="*", default=[], help="more rows to report")
    parser.add_argument("--report", action="store_true", help="print the table of --out and stop")
    parser.add_argument(
        "--pairs",
        default=None,
        help="which of the pairs whose backdoor took to run, by position (to split the run)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if not args.report:
        torch.set_num_threads(1)
        run = BenchRunner(fmnist_poison().replace(cache_dir=str(args.cache), threads=1))
        with args.out.open("w") as f:
            took = took_pairs(run)
            chosen = range(len(took)) if args.pairs is None else map(int, args.pairs.split(","))
            for seed, share in (took[i] for i in chosen):
                for identified in PARTS:
                    row = cell(run, seed, f"poison/{share}/{identified}")
                    f.write(json.dumps(row) + "\n")
                    f.flush()
    print(report(read_rows([args.out, *args.more])), end="")


if __name__ == "__main__":
    main()
