"""dampen's corrective request against Potion (its authors' PTN search), on ``fmnist-poison``.

The requests of the (seed, poison share) pairs whose backdoor took (the original's attack
success ≥ 50 %, measured here on the preset's cached models: run ``dampen bench --preset
fmnist-poison`` first), four identified shares each:

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

import dampen
from dampen.bench.presets import fmnist_poison
from dampen.bench.runner import BenchRunner
from dampen.data import loader
from dampen.methods.potion import START_DIVISOR, PotionConfig, norm_importance, ptn_search_

sys.path.insert(0, str(Path(__file__).parent))
from corrective_ceiling import MAX_DROP, PARTS, prepare, read_rows, took_pairs

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
    prepared = prepare(run, seed, label)
    scenario, original, imp = prepared.scenario, prepared.original, prepared.importance
    measure = prepared.measure
    bs = config.batch_size
    identified = loader(scenario.data.train, scenario.forget, batch_size=bs)
    row: dict[str, Any] = {"seed": seed, "label": label}
    t = perf_counter()
    result = dampen.unlearn(original, identified, importance=imp, forget_kind="poison")
    row["dampen"] = {**measure(result.model), "seconds": perf_counter() - t}
    heldout = run._heldout(scenario, 200, seed, label)  # prepare loaded its validation split
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


def chosen_rho(rows: list[dict[str, Any]]) -> tuple[float, bool]:
    """The ρ with the most validation healing whose mean validation drop is ≤ MAX_DROP, and
    True; when no ρ stays within it, the ρ with the most validation healing, and False."""
    healed = {rho: means(rows, f"potion{rho}", "val") for rho in RHOS}
    within = [rho for rho in RHOS if healed[rho][1] <= MAX_DROP]
    pool = within or list(RHOS)
    return max(pool, key=lambda rho: healed[rho][0]), bool(within)


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
    rho, within = chosen_rho(rows)
    rule = (
        f"drop ≤ {MAX_DROP} points, most healed"
        if within
        else (f"no ρ keeps the validation drop ≤ {MAX_DROP} points: the most healed")
    )
    lines += ["", f"Potion's ρ chosen on validation ({rule}): {rho}"]
    lines += ["", "By identified share, test (healed % / drop / attack %):", ""]
    names = (*DAMPEN_ROWS, f"potion{rho}")
    lines += ["| identified | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for part in PARTS:
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
        default=None,
        help="which of the pairs whose backdoor took to run, by position (to split the run)",
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
            took = took_pairs(run)
            chosen = range(len(took)) if args.pairs is None else map(int, args.pairs.split(","))
            for seed, share in (took[i] for i in chosen):
                for identified in PARTS:
                    label = f"poison/{share}/{identified}"
                    row = request(run, seed, label, earlier.get((seed, label)))
                    f.write(json.dumps(row) + "\n")
                    f.flush()
    print(report(read_rows([args.out, *args.more])), end="")


if __name__ == "__main__":
    main()
