"""Retraining as a reference for random-sample forgetting, over several seeds (not a test).

Issue 15 asks that forgetting random samples leave Df "within 2 points of retraining's". One
retrained model is a noisy reference: on 30 digits samples one sample is 3.3 points, and a
model retrained with another seed classifies other samples right. For each (model, seed) of
an ``auto_plain.py`` folder this trains the same original and picks the same random samples
as ``auto_plain.py`` does, retrains without them with ``--retrains`` seeds (the original's
seed, then seed + 100, + 200, ...), and compares the stored ``alpha="auto"`` rows (without
and with 200 held-out samples) with the retrained models' mean Df: within 2 points of it, and
Dr and test accuracy within 1 point of the original's.

Run: ``python benchmarks/random_reference.py AUTO_PLAIN_DIR OUT_DIR [--retrains 5] [--only
NAME ...]`` (one file per (model, seed) in OUT_DIR, skipped when there), then ``--report``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

from auto_plain import HELDOUT, MODELS, load_data, random_scores, random_split
from dampen.core.files import atomic_write_text
from dampen.recipe import train_model
from sampling_margin import meets

SEED_STEP = 100  # the retrained models' seeds: seed, seed + 100, seed + 200, ...


def measure(stored: dict[str, Any], retrains: int) -> dict[str, Any]:
    """The retrained models' scores for the random rows of one ``auto_plain.py`` file."""
    name, seed = stored["model"], stored["seed"]
    data_name, recipe, count = MODELS[name]
    data = load_data(data_name, seed)
    sc, _, rest = random_split(data, count, seed)  # as auto_plain.py picks them

    def scores(model: torch.nn.Module) -> dict[str, float]:
        return random_scores(model, data, sc, rest)

    original = scores(train_model(recipe, data, seed=seed))
    if original != {k: stored["random"]["original"][k] for k in ("df", "dr", "test")}:
        raise SystemExit(f"{name} seed {seed}: the original is not the one of the stored file")
    models = []
    for number in range(retrains):
        t = perf_counter()
        model = train_model(recipe, data, sc.retain, seed=seed + SEED_STEP * number)
        models.append({**scores(model), "seed": seed + SEED_STEP * number})
        models[-1]["seconds"] = perf_counter() - t
        print(name, seed, "retrain", number, {k: round(v, 3) for k, v in models[-1].items()})
    if {k: models[0][k] for k in ("df", "dr", "test")} != {
        k: stored["random"]["retrain"][k] for k in ("df", "dr", "test")
    }:
        raise SystemExit(f"{name} seed {seed}: the first retrain is not the stored one")
    return {
        "model": name,
        "seed": seed,
        "count": count,
        "random": stored["random"],
        "retrains": models,
    }


def report(folder: Path) -> str:
    """The table of every file in ``folder``."""
    lines = [
        'Random samples: `alpha="auto"` against retraining with several seeds (Df, Dr, test '
        f"accuracy in %; test excludes the {HELDOUT} held-out samples). Goal: Df within 2 "
        "points of the retrained models' mean, Dr and test within 1 point of the original's.",
        "",
        "| model | seed | n | original Df | retrained Df: mean ± sd (min–max), seeds | "
        "auto: Df / Dr change / test change | meets | auto, 200 held-out | meets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    met = {"auto": 0, "auto, heldout": 0}
    files = sorted(folder.glob("*.json"))
    for f in files:
        r = json.loads(f.read_text())
        dfs = [100 * m["df"] for m in r["retrains"]]
        mean = statistics.mean(dfs)
        sd = statistics.stdev(dfs) if len(dfs) > 1 else 0.0
        orig = r["random"]["original"]
        cells = []
        for row in ("auto", "auto, heldout"):
            a = r["random"][row]
            dr, te = 100 * (a["dr"] - orig["dr"]), 100 * (a["test"] - orig["test"])
            ok = meets(a, orig, mean)
            met[row] += ok
            cells += [f"{100 * a['df']:.1f} / {dr:+.1f} / {te:+.1f}", "yes" if ok else "no"]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['count']} | {100 * orig['df']:.1f} | "
            f"{mean:.1f} ± {sd:.1f} ({min(dfs):.1f}–{max(dfs):.1f}), {len(dfs)} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        f"Met: auto {met['auto']} / {len(files)}, auto with 200 held-out samples "
        f"{met['auto, heldout']} / {len(files)}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("auto_plain", type=Path, help="a folder of auto_plain.py files")
    parser.add_argument("out", type=Path)
    parser.add_argument("--retrains", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="model names to run")
    parser.add_argument("--report", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if args.report:
        print(report(args.out), end="")
        return
    if args.retrains < 2:
        raise SystemExit("--retrains must be at least 2 (a spread needs two)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.auto_plain.glob("*.json")):
        stored = json.loads(path.read_text())
        if args.only and stored["model"] not in args.only:
            continue
        target = args.out / path.name
        if target.exists():
            continue
        result = measure(stored, args.retrains)
        atomic_write_text(target, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
