"""Run a bench preset one seed per process, and merge the seeds' results.

``run PRESET SEED OUT [--skip METHOD ...] [--rows ROW ...] [--scenarios LABEL ...] [--cache
DIR]``: the preset with one seed (its grids tuned on that seed, as the other seeds' processes
tune on theirs), without the skipped methods, with ``--rows`` only the methods of those row
labels (the references always run) and with ``--scenarios`` on those scenarios only, in
``OUT/seedN`` (resumable), with the models and importances cached in ``runs/PRESET/cache``
(or ``--cache``).

``merge OUT DEST [--add OTHER ...]``: every ``OUT/seed*/results.json`` in one
``DEST/results.json`` (each seed's tuning in ``DEST/tuning-per-seed.json``), with the rows of
``OTHER/seed*`` (the same preset, run with other methods skipped) that ``OUT`` lacks; then
``dampen bench --preset PRESET --out DEST --report-only`` writes the report and plots.

The fmnist-poison rerun of ``docs/results/fmnist-poison/rerun``: ``run fmnist-poison N
runs/fpfull --skip finetune scrub salun bad_teacher`` for N = 0, 1, 2 side by side, then
``merge runs/fpfull docs/results/fmnist-poison/rerun``. Its four trained baselines, on the
(seed, share) cells where the backdoor took: ``run fmnist-poison 0 runs/fpbase --skip ssd lfssd
assd alf potion --scenarios`` with the 1 and 2 % scenarios (seed 1: 2 %; seed 2: all twelve).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from dampen.bench.presets import PRESETS
from dampen.bench.runner import run_bench, write_json


def _known(option: str, asked: list[str], known: list[str], preset: str) -> None:
    """Refuse names in ``asked`` that ``preset`` does not have."""
    unknown = sorted(set(asked) - set(known))
    if unknown:
        names = ", ".join(dict.fromkeys(known))
        raise SystemExit(f"{option}: {preset} has no {', '.join(unknown)} (it has {names})")


def run(
    preset: str,
    seed: int,
    out: Path,
    skip: list[str],
    scenarios: list[str] | None = None,
    rows: list[str] | None = None,
    cache: str | None = None,
) -> None:
    """One seed of ``preset`` without the ``skip`` methods, only the methods of ``rows`` (row
    labels; all when ``None``), on ``scenarios`` (labels; all when ``None``), in
    ``out/seed<seed>``, caching in ``cache`` (``runs/<preset>/cache`` when ``None``)."""
    full = PRESETS[preset]()
    _known("--skip", skip, [m.method for m in full.methods], preset)
    _known("--rows", rows or [], [m.label for m in full.methods], preset)
    _known("--scenarios", scenarios or [], [s.label for s in full.scenarios], preset)
    config = full.replace(
        scenarios=tuple(s for s in full.scenarios if scenarios is None or s.label in scenarios),
        methods=tuple(
            m for m in full.methods if m.method not in skip and (rows is None or m.label in rows)
        ),
        seeds=(seed,),
        out_dir=str(out / f"seed{seed}"),
        cache_dir=cache or f"runs/{preset}/cache",
        threads=1,
    )
    torch.set_num_threads(1)
    command = f"benchmarks/bench_by_seed.py run {preset} {seed} {out}"
    if skip:
        command += " --skip " + " ".join(skip)
    if rows:
        command += " --rows " + " ".join(f"'{r}'" for r in rows)
    if scenarios:
        command += " --scenarios " + " ".join(scenarios)
    if cache:
        command += f" --cache {cache}"
    run_bench(config, command=command, log=lambda m: print(m, flush=True))


def with_rows(part: dict[str, Any], other: dict[str, Any], where: Path) -> dict[str, Any]:
    """``part`` with the rows of ``other`` (another run of the same preset and seed) it lacks:
    their cells, tuning, methods and groups; rows in the preset's order."""
    if other["name"] != part["name"]:
        raise SystemExit(f"{where}: a run of {other['name']}, not {part['name']}")
    have = {c["row"] for c in part["cells"]}
    new = [r for r in other["rows"] if r not in have]
    out = {**part, "cells": part["cells"] + [c for c in other["cells"] if c["row"] in new]}
    out["runs"] = part["runs"] + [{**r, "note": f"rows {', '.join(new)}"} for r in other["runs"]]
    out["tuning"] = {**part.get("tuning", {}), **other.get("tuning", {})}
    groups = other["groups"]
    out["groups"] = {**part["groups"], **{r: groups[r] for r in new if r in groups}}
    out["command"] = f"{part['command']}; rows {', '.join(new)}: {other['command']}"
    methods = [m for m in other["config"]["methods"] if (m.get("label") or m["method"]) in new]
    out["config"] = {**part["config"], "methods": part["config"]["methods"] + methods}
    present = have | set(new)
    out["rows"] = [r for r in PRESETS[part["name"]]().rows() if r in present]
    return out


def merge(out: Path, dest: Path, add: list[Path] | None = None) -> None:
    """The seeds' results in one ``dest/results.json`` and their tunings by seed; with ``add``,
    each seed's part first gains the rows the runs in those folders have (:func:`with_rows`)."""
    merged: dict[str, Any] | None = None
    tunings: dict[str, Any] = {}
    for path in sorted(out.glob("seed*/results.json")):
        seed = path.parent.name.removeprefix("seed")
        part = json.loads(path.read_text())
        for folder in add or []:
            extra = folder / path.parent.name / "results.json"
            if extra.is_file():
                part = with_rows(part, json.loads(extra.read_text()), extra)
        runs = [{**r, "note": f"seed {seed}"} for r in part["runs"]]
        if merged is None:
            merged = {**part, "runs": runs}
        else:
            merged["cells"] += part["cells"]
            merged["runs"] += runs
        tunings[seed] = part.get("tuning", {})
    if merged is None:
        raise SystemExit(f"no {out}/seed*/results.json")
    merged["config"]["seeds"] = sorted({c["seed"] for c in merged["cells"]})
    order = {row: i for i, row in enumerate(merged["rows"])}
    where = {s.label: i for i, s in enumerate(PRESETS[merged["name"]]().scenarios)}
    merged["cells"].sort(
        key=lambda c: (
            where.get(c["scenario"], len(where)),
            c["scenario"],
            order.get(c["row"], len(order)),
            c["seed"],
        )
    )
    first = min(tunings, key=int)
    merged["tuning"] = tunings[first]
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / "results.json", merged, indent=1)
    note = "each seed's tuned rows were tuned on that seed's own original model and validation"
    write_json(
        dest / "tuning-per-seed.json",
        {"format": 1, "name": merged["name"], "note": note, "seeds": tunings},
        indent=1,
    )
    print(f"{len(merged['cells'])} cells in {dest / 'results.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one seed of a preset")
    one.add_argument("preset", choices=sorted(PRESETS))
    one.add_argument("seed", type=int)
    one.add_argument("out", type=Path)
    one.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    one.add_argument("--rows", nargs="+", help="row labels of the methods to run (default: all)")
    one.add_argument("--scenarios", nargs="+", help="scenario labels to run (default: all)")
    one.add_argument("--cache", help="the cache directory (default: runs/PRESET/cache)")
    joined = sub.add_parser("merge", help="the seeds' results in one results.json")
    joined.add_argument("out", type=Path)
    joined.add_argument("dest", type=Path)
    joined.add_argument(
        "--add", nargs="*", type=Path, default=[], help="runs with the rows OUT lacks"
    )
    args = parser.parse_args()
    if args.command == "run":
        run(args.preset, args.seed, args.out, args.skip, args.scenarios, args.rows, args.cache)
    else:
        merge(args.out, args.dest, args.add)


if __name__ == "__main__":
    main()
