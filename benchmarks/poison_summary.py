"""Healed share, accuracy drop and attack success of every row of ``fmnist-poison`` runs, on the
(seed, scenario) cells they share (not a test).

The rerun of ``docs/results/fmnist-poison/rerun`` left out the four trained baselines (their
tuning is the long part); they were run later on the same cached models, on the cells where the
backdoor took (``bench_by_seed.py run ... --scenarios``). This joins such a run with the rerun:
it checks that the original and retrained references of every shared cell are the same, and
prints the mean healed % / clean accuracy drop (points) / attack success % of each row over the
shared cells, overall and by identified share.

Run: ``python benchmarks/poison_summary.py RERUN/results.json PART/results.json ...``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

SHARES = ("id1", "id10%", "id30%", "id100%")
TITLES = {"id1": "1 sample", "id10%": "10 %", "id30%": "30 %", "id100%": "100 %"}


def cell_key(cell: dict[str, Any]) -> tuple[int, str, str]:
    return cell["seed"], cell["scenario"], cell["row"]


def joined(rerun: Path, parts: list[Path]) -> list[dict[str, Any]]:
    """The cells of ``parts`` and the rerun's other rows on the same (seed, scenario) cells."""
    reference = {cell_key(c): c for c in json.loads(rerun.read_text())["cells"]}
    cells: list[dict[str, Any]] = []
    for part in parts:
        cells += json.loads(part.read_text())["cells"]
    shared = {(c["seed"], c["scenario"]) for c in cells}
    for c in cells:
        if c["row"] in ("original", "retrain"):
            other = reference.get(cell_key(c))
            if other is None or other["corrective"] != c["corrective"]:
                raise SystemExit(f"{cell_key(c)}: not the rerun's reference")
    rows = {c["row"] for c in cells}
    cells += [
        c for key, c in reference.items() if (key[0], key[1]) in shared and key[2] not in rows
    ]
    return cells


def table(cells: list[dict[str, Any]]) -> str:
    shared = sorted({(c["seed"], c["scenario"]) for c in cells})
    by_row: dict[str, list[tuple[str, float, float, float]]] = defaultdict(list)
    for c in cells:
        f = c.get("corrective")
        if f is None:
            continue
        share = c["scenario"].rsplit("/", 1)[1]
        by_row[c["row"]].append(
            (share, 100 * f["healed"], 100 * f["test_drop"], 100 * f["attack_success"])
        )

    def mean(values: list[tuple[str, float, float, float]]) -> str:
        columns = ([v[1] for v in values], [v[2] for v in values], [v[3] for v in values])
        return " / ".join(f"{statistics.mean(c):.1f}" for c in columns)

    lines = [
        f"Mean healed % / clean accuracy drop (points) / attack success % over {len(shared)} "
        "(seed, scenario) cells: "
        + ", ".join(f"seed {s} {sc.removeprefix('poison/')}" for s, sc in shared),
        "",
        "| row | all | " + " | ".join(TITLES[s] for s in SHARES) + " |",
        "|---" * (2 + len(SHARES)) + "|",
    ]
    for row, values in by_row.items():
        parts = [mean([v for v in values if v[0] == s]) for s in SHARES]
        lines.append(f"| {row} | {mean(values)} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rerun", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args()
    print(table(joined(args.rerun, args.parts)), end="")


if __name__ == "__main__":
    main()
