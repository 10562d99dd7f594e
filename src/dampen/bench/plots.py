"""PNG plots of a benchmark: forget vs retain accuracy, seconds per method (log scale), and for
poison scenarios the poison healed against the identified share."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dampen.core.files import atomic_write

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _mean(values: Sequence[Any]) -> float | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(xs) / len(xs) if xs else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def _ok_cells(results: Mapping[str, Any], model: str) -> list[Mapping[str, Any]]:
    return [
        c
        for c in results.get("cells", [])
        if c.get("model") == model and "error" not in c and c.get("metrics")
    ]


def _save(fig: Any, path: Path) -> None:
    """Save ``fig`` as a PNG atomically (temporary file, then ``os.replace``)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _order(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def plot_forget_retain(results: Mapping[str, Any], model: str, path: Path) -> Path:
    """Forget-set accuracy (x) against retain-set accuracy (y), mean over seeds.

    One colour per method, one marker per scenario.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cells = _ok_cells(results, model)
    rows = _order([c["row"] for c in cells])
    scenarios = _order([c["scenario"] for c in cells])
    colours = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    try:
        for i, row in enumerate(rows):
            for j, scenario in enumerate(scenarios):
                here = [c for c in cells if c["row"] == row and c["scenario"] == scenario]
                x = _mean([c["metrics"].get("forget_acc") for c in here])
                y = _mean([c["metrics"].get("retain_acc") for c in here])
                if x is None or y is None:
                    continue
                ax.scatter(
                    100 * x,
                    100 * y,
                    color=colours(i % 20),
                    marker=_MARKERS[j % len(_MARKERS)],
                    s=60,
                    edgecolors="black" if row in ("original", "retrain") else "none",
                    label=row if j == 0 else None,
                )
        for j, scenario in enumerate(scenarios):
            ax.scatter([], [], color="grey", marker=_MARKERS[j % len(_MARKERS)], label=scenario)
        ax.set_xlabel("forget-set accuracy Df (%)")
        ax.set_ylabel("retain-set accuracy Dr (%)")
        ax.set_title(f"{results.get('name', '')}: {model} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_seconds(results: Mapping[str, Any], model: str, path: Path) -> Path:
    """Seconds per method (mean over scenarios and seeds) as bars on a log scale.

    The once-per-model importance of D gets its own bar, next to the stored-importance cells
    that reuse it.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cells = _ok_cells(results, model)
    labels: list[str] = []
    values: list[float] = []
    for row in _order([c["row"] for c in cells]):
        value = _mean([c.get("seconds") for c in cells if c["row"] == row])
        if value is not None and value > 0:
            labels.append(row)
            values.append(value)
    once = _mean([c.get("importance_seconds") for c in cells])
    if once is not None and once > 0:
        labels.append("importance of D\n(once per model)")
        values.append(once)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 2), 4.5))
    try:
        colours = ["#c44e52" if "importance of D" in lab else "#4c72b0" for lab in labels]
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        if values:
            ax.set_yscale("log")
        ax.set_ylabel("seconds (log scale)")
        ax.set_title(f"{results.get('name', '')}: {model}, time of the method alone")
        ax.grid(axis="y", alpha=0.3, which="both")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


_POISON = re.compile(r"^(?:.*:)?poison/(?P<share>[0-9.]+)%/id(?P<found>[0-9.]+%?)$")


def _poison_cells(results: Mapping[str, Any], model: str) -> list[tuple[str, str, Any]]:
    """``(poison share, identified, cell)`` for every finished poison cell of ``model``."""
    out = []
    for c in _ok_cells(results, model):
        match = _POISON.match(str(c.get("scenario", "")))
        if match and c.get("corrective"):
            found = match["found"]
            count = "" if found.endswith("%") else " sample" if found == "1" else " samples"
            out.append((f"{match['share']} %", found + count, c))
    return out


def plot_healed(results: Mapping[str, Any], model: str, path: Path) -> Path | None:
    """Poison scenarios: the share of the poison healed and the clean-accuracy drop (mean over
    seeds) against the identified share, one panel per poison share, one line per row.
    ``None`` (nothing written) without poison cells."""
    cells = _poison_cells(results, model)
    if not cells:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shares = _order([share for share, _, _ in cells])
    found = _order([f for _, f, _ in cells])
    rows = [r for r in _order([c["row"] for _, _, c in cells]) if r != "original"]
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(
        2, len(shares), figsize=(4.2 * len(shares) + 2.5, 7.0), squeeze=False, sharex=True
    )
    try:
        for j, share in enumerate(shares):
            for i, row in enumerate(rows):
                for k, (field, scale) in enumerate((("healed", 100.0), ("test_drop", 100.0))):
                    ys = []
                    for f in found:
                        here = [
                            c["corrective"].get(field)
                            for s, g, c in cells
                            if s == share and g == f and c["row"] == row
                        ]
                        mean = _mean(here)
                        ys.append(math.nan if mean is None else scale * mean)
                    axes[k][j].plot(
                        range(len(found)),
                        ys,
                        marker=_MARKERS[i % len(_MARKERS)],
                        color=colours(i % 20),
                        label=row if (j, k) == (0, 0) else None,
                    )
            axes[0][j].set_title(f"poison {share} of the training set")
            axes[1][j].set_xticks(range(len(found)), found)
            axes[1][j].set_xlabel("identified part of the poison")
            for k in (0, 1):
                axes[k][j].grid(alpha=0.3)
        for ax in axes[0]:  # a weak backdoor makes the share explode: keep the scale readable
            ax.set_ylim(-25, 115)
        axes[0][0].set_ylabel("poison healed (%, axis cut at −25 and 115)")
        axes[1][0].set_ylabel("clean test accuracy drop (points)")
        fig.legend(fontsize=7, loc="center right")
        fig.suptitle(f"{results.get('name', '')}: {model} (mean over seeds)")
        fig.tight_layout(rect=(0.0, 0.0, 0.85, 1.0))
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def write_plots(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``forget_retain_<model>.png`` and ``seconds_<model>.png`` for every model, and
    ``healed_<model>.png`` where there are poison scenarios."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    models = _order([c["model"] for c in results.get("cells", [])])
    for model in models:
        slug = _slug(model)
        paths.append(plot_forget_retain(results, model, folder / f"forget_retain_{slug}.png"))
        paths.append(plot_seconds(results, model, folder / f"seconds_{slug}.png"))
        healed = plot_healed(results, model, folder / f"healed_{slug}.png")
        if healed is not None:
            paths.append(healed)
    return paths
