"""dampen's corrective request against Potion (its authors' PTN search), on ``fmnist-poison``.

The 28 (seed, scenario) requests of :mod:`corrective_ceiling` (the backdoor took), on the
preset's cached models (run ``dampen bench --preset fmnist-poison`` or that script first):

- ``potion`` at every ρ of :data:`RHOS` (the values its authors' scripts sweep), with the
  retain set D \\ Df that it needs (64-sample shuffled batches, as the bench hands baselines);
  ρ is chosen on validation by the rule that chose dampen's blind ceiling: the most healing
  whose mean validation drop stays within 1.4 points;
- dampen's ``alpha="auto"``, ``forget_kind="poison"``, with the stored importance of D, without
  held-out data and with the bench's 200 held-out validation samples.

Healed share, accuracy drop and attack success are measured on the 1,000 validation samples
(patched and clean) and on the test split, as in :mod:`corrective_ceiling`.

Run: ``python benchmarks/potion_compare.py [--cache runs/fmnist-poison/cache] [--out FILE]
[--pairs 0,1] [--reuse EARLIER.jsonl] [--report]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import warnings
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import nn

import dampen
from dampen.bench.presets import fmnist_poison
from dampen.bench.runner import BenchRunner, load_with_validation, make_scenario
from dampen.data import loader
from dampen.data.base import DataSplits
from dampen.eval.corrective import attack_figures, healed_share
from dampen.methods.auto_alpha import accuracy
from dampen.methods.potion import START_DIVISOR, PotionConfig, norm_importance, ptn_search_
from dampen.recipe import cache_key

sys.path.insert(0, str(Path(__file__).parent))
from corrective_ceiling import MAX_DROP, TOOK

RHOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 0.75)
"""ρ values of the Potion authors' ``CIFAR_ptn_runs.sh``."""
DAMPEN_ROWS = ("dampen", "dampen+heldout")


def request(
    run: BenchRunner, seed: int, label: str, reuse: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every row on one request: ``{row: {"val"|"test": (healed %, drop, attack %)}, ...}``.
    ``reuse``: an earlier output row of this request whose Potion rows are kept (the same
    cached models and Potion's code give the same figures; dampen's rows are run again)."""
    config = run.config
    spec = next(s for s in config.scenarios if s.label == label)
    data, validation = load_with_validation(config.data_for(spec))
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

    def measure(model: nn.Module) -> dict[str, tuple[float, float, float]]:
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

    bs = config.batch_size
    identified = loader(scenario.data.train, scenario.forget, batch_size=bs)
    row: dict[str, Any] = {"seed": seed, "label": label}
    t = perf_counter()
    result = dampen.unlearn(original, identified, importance=imp, forget_kind="poison")
    row["dampen"] = {**measure(result.model), "seconds": perf_counter() - t}
    run._load(config.data_for(spec))  # _heldout draws from the runner's validation split
    heldout = run._heldout(scenario, 200, seed, label)
    t = perf_counter()
    result = dampen.unlearn(
        original, identified, importance=imp, forget_kind="poison", heldout=heldout
    )
    row["dampen+heldout"] = {**measure(result.model), "seconds": perf_counter() - t}

    if reuse is not None:
        return {**row, **{k: v for k, v in reuse.items() if k.startswith("potion")}}
    retain = loader(scenario.data.train, scenario.retain, batch_size=bs, shuffle=True, seed=seed)
    t = perf_counter()
    imp_d, retained = norm_importance(original, retain)
    imp_f, forgotten = norm_importance(original, identified)
    importance_seconds = perf_counter() - t
    start = forgotten / (forgotten + retained) / START_DIVISOR
    for rho in RHOS:
        model = copy.deepcopy(original)
        t = perf_counter()
        stats = ptn_search_(model, identified, imp_d, imp_f, start=start, config=PotionConfig(rho))
        row[f"potion{rho}"] = {
            **measure(model),
            "seconds": importance_seconds + perf_counter() - t,
            "tries": stats["tries"],
            "selected_fraction": stats["selected_fraction"],
        }
    return row


def means(rows: list[dict[str, Any]], name: str, split: str) -> list[float]:
    """Mean healed %, drop and attack % of one row over the requests."""
    return [statistics.mean(r[name][split][i] for r in rows) for i in range(3)]


def chosen_rho(rows: list[dict[str, Any]]) -> float | None:
    """The ρ with the most validation healing whose mean validation drop is ≤ MAX_DROP."""
    best: tuple[float, float] | None = None
    for rho in RHOS:
        healed, drop, _ = means(rows, f"potion{rho}", "val")
        if drop <= MAX_DROP and (best is None or healed > best[1]):
            best = (rho, healed)
    return None if best is None else best[0]


def triple(values: list[float]) -> str:
    """``healed / drop / attack`` with the drop to two decimals."""
    return " / ".join(f"{v:.2f}" if i == 1 else f"{v:.1f}" for i, v in enumerate(values))


def report(rows: list[dict[str, Any]]) -> str:
    def cells(name: str) -> str:
        return " | ".join(triple(means(rows, name, k)) for k in ("val", "test"))

    def seconds(name: str) -> str:
        return f"{statistics.mean(r[name]['seconds'] for r in rows):.1f}"

    lines = [
        f"{len(rows)} requests; mean healed % / drop (points) / attack success %",
        "",
        "| row | validation | test | s |",
        "|---|---|---|---|",
    ]
    for name in DAMPEN_ROWS:
        lines.append(f"| {name} | {cells(name)} | {seconds(name)} |")
    for rho in RHOS:
        lines.append(f"| potion ρ = {rho} | {cells(f'potion{rho}')} | {seconds(f'potion{rho}')} |")
    rho = chosen_rho(rows)
    lines += [
        "",
        f"Potion's ρ chosen on validation (drop ≤ {MAX_DROP} points, most healed): {rho}",
    ]
    if rho is not None:
        lines += ["", "By identified share, test (healed % / drop / attack %):", ""]
        names = (*DAMPEN_ROWS, f"potion{rho}")
        lines += ["| identified | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for part in ("id1", "id10%", "id30%", "id100%"):
            some = [r for r in rows if r["label"].endswith("/" + part)]
            lines.append(
                f"| {part} | " + " | ".join(triple(means(some, n, "test")) for n in names) + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/fmnist-poison/cache"))
    parser.add_argument("--out", type=Path, default=Path("runs/potion-compare.jsonl"))
    parser.add_argument("--more", type=Path, nargs="*", default=[], help="more rows to report")
    parser.add_argument("--report", action="store_true", help="print the table of --out and stop")
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="*",
        default=[],
        help="earlier outputs whose Potion rows are kept (the same models: only dampen reruns)",
    )
    parser.add_argument(
        "--pairs",
        default=",".join(map(str, range(len(TOOK)))),
        help="which (seed, share) pairs of TOOK to run, by position (to split the run)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if not args.report:
        torch.set_num_threads(1)
        run = BenchRunner(fmnist_poison().replace(cache_dir=str(args.cache), threads=1))
        earlier = {
            (r["seed"], r["label"]): r
            for path in args.reuse
            for r in map(json.loads, path.read_text().splitlines())
        }
        with args.out.open("w") as f:
            for seed, share in (TOOK[int(i)] for i in args.pairs.split(",")):
                for identified in ("id1", "id10%", "id30%", "id100%"):
                    label = f"poison/{share}/{identified}"
                    row = request(run, seed, label, earlier.get((seed, label)))
                    f.write(json.dumps(row) + "\n")
                    f.flush()
    rows = [
        json.loads(line)
        for out in (args.out, *args.more)
        for line in out.read_text().splitlines()
        if line
    ]
    print(report(rows), end="")


if __name__ == "__main__":
    main()
