"""``alpha="auto"`` called plainly, as the README's first example does (not a test).

For each model: train the original (seeded), compute the importance of D (``--estimator``,
default ``batch_sq``) with the loader in its fixed order and shuffled by two seeds, and then

- forget every class in turn with ``dampen.unlearn(model, forget, importance=imp)`` (no
  ``heldout=``), once per loader order: Df and Dr accuracy, and Dr as a share of the
  original's;
- forget every class again with 200 held-out test samples of the other classes, as the
  library does it (the better of two paths) and with the plain path alone
  (``paced_path=False``), recording the path kept and what the other one reached;
- forget ``random`` samples without and with ``heldout=`` (200 test samples), beside the
  original and a model retrained without them: Df, Dr and test accuracy.

Models: the digits small CNN (``quick``'s recipe) and a wider one (channels 64/128), and, with
``--fmnist``, the Fashion-MNIST ResNet18 (width 8) and ViT of the ``fmnist`` preset (10k
training samples). Each (model, seed) is written to ``OUT/<model>-<seed>.json`` as it finishes;
a second run skips what is there (``--redo-random`` measures the random rows of stored
files again, ``--redo-heldout`` the held-out class rows, after checking that the retrained
original is the stored one). ``--report`` prints the table from the files.

Run: ``python benchmarks/auto_plain.py [--fmnist] [--seeds 0 1 2] [--out DIR]
[--estimator batch_sq|per_sample|shuffled_sq]``.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

import dampen
from dampen.core.files import atomic_write_text
from dampen.data.base import loader
from dampen.data.digits import load_digits
from dampen.data.fashion_mnist import load_fashion_mnist
from dampen.data.scenarios import full_class, random_samples
from dampen.eval.functional import accuracy
from dampen.recipe import TrainConfig, train_model

BATCH = 64
HELDOUT = 200  # held-out test samples (of the retained classes in class forgetting)
ORDERS: dict[str, int | None] = {"fixed": None, "shuffled 1": 1, "shuffled 2": 2}
DIGITS: dict[str, Any] = {"epochs": 15, "crop_padding": 1, "flip": False}
FMNIST: dict[str, Any] = {"crop_padding": 2, "flip": True}
MODELS: dict[str, tuple[str, TrainConfig, int]] = {
    "digits-cnn": ("digits", TrainConfig(model="cnn", **DIGITS), 30),
    "digits-cnn-wide": (
        "digits",
        TrainConfig(model="cnn", model_kwargs={"channels": (64, 128)}, **DIGITS),
        30,
    ),
    "fmnist-resnet18": (
        "fmnist",
        TrainConfig(model="resnet18", model_kwargs={"width": 8}, epochs=5, lr=0.05, **FMNIST),
        100,
    ),
    "fmnist-vit": (
        "fmnist",
        TrainConfig(
            model="vit",
            model_kwargs={"patch_size": 7, "dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128},
            epochs=12,
            lr=0.05,
            **FMNIST,
        ),
        100,
    ),
}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in batches of 1,000, in eval mode."""
    model.eval()
    with torch.no_grad():
        right = sum(
            accuracy(model(x[i : i + 1000]), y[i : i + 1000]) * len(y[i : i + 1000])
            for i in range(0, len(y), 1000)
        )
    return float(right) / len(y)


def load_data(data_name: str, seed: int) -> Any:
    """The data set of a model of :data:`MODELS` for ``seed``."""
    if data_name == "digits":
        return load_digits(seed=seed)
    return load_fashion_mnist(limit=10_000, test_limit=2_000, seed=seed)


def random_split(data: Any, count: int, seed: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``count`` random samples to forget (the scenario), the test indices handed over as
    ``heldout=`` and the mask of the other test samples, on which test accuracy is measured."""
    sc = random_samples(data, count, seed=seed)
    test = data.test
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:HELDOUT]
    rest = torch.ones(len(test), dtype=torch.bool)
    rest[pick] = False
    return sc, pick, rest


def random_scores(
    model: torch.nn.Module, data: Any, sc: Any, rest: torch.Tensor
) -> dict[str, float]:
    """Df, Dr and test accuracy (on the ``rest`` of the test samples) of ``model``."""
    train, test = data.train, data.test
    return {
        "df": evaluate(model, train.x[sc.forget], train.y[sc.forget]),
        "dr": evaluate(model, train.x[sc.retain], train.y[sc.retain]),
        "test": evaluate(model, test.x[rest], test.y[rest]),
    }


@dataclass
class RandomRequest:
    """A random-sample request of this script, set up again: the data, the scenario, the
    held-out test indices handed over as ``heldout=``, the mask of the other test samples, the
    original trained again and its :func:`random_scores`."""

    data: Any
    scenario: Any
    heldout: torch.Tensor
    rest: torch.Tensor
    original: torch.nn.Module
    scores: dict[str, float]

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """:func:`random_scores` of ``model`` on this request."""
        return random_scores(model, self.data, self.scenario, self.rest)

    def loaders(self) -> tuple[dampen.Importance, Any, Any]:
        """The importance of D, and the forget and held-out loaders, as this script makes them."""
        train = self.data.train
        imp = dampen.importance(self.original, loader(train, None, batch_size=BATCH))
        forget = loader(train, self.scenario.forget, batch_size=BATCH)
        return imp, forget, loader(self.data.test, self.heldout, batch_size=BATCH)


def random_request(name: str, seed: int, *expected: dict[str, float]) -> RandomRequest:
    """The random-sample request of model ``name`` and ``seed``, its original trained again;
    exits when the original's scores are not each of ``expected`` (an earlier run's)."""
    data_name, recipe, count = MODELS[name]
    data = load_data(data_name, seed)
    sc, pick, rest = random_split(data, count, seed)
    original = train_model(recipe, data, seed=seed)
    scores = random_scores(original, data, sc, rest)
    if any(scores != other for other in expected):
        raise SystemExit(f"{name} seed {seed}: the original is not the one of the earlier run")
    return RandomRequest(data, sc, pick, rest, original, scores)


def run(
    name: str,
    seed: int,
    done: dict[str, Any] | None = None,
    estimator: str = "batch_sq",
    redo_heldout: bool = False,
    redo_random: bool = False,
) -> dict[str, Any]:
    """Every class without held-out data in three orders and with it (unless ``done`` has
    them; ``redo_heldout``: only the held-out rows again), then random samples."""
    data_name, recipe, count = MODELS[name]
    data = load_data(data_name, seed)
    train = data.train
    t = perf_counter()
    original = train_model(recipe, data, seed=seed).eval()
    out: dict[str, Any] = {
        "model": name,
        "seed": seed,
        "estimator": estimator,
        "train_seconds": perf_counter() - t,
    }

    def batches(indices: torch.Tensor | None, order: int | None) -> Any:
        return loader(train, indices, batch_size=BATCH, shuffle=order is not None, seed=order or 0)

    orders = ORDERS if done is None else {"fixed": None}  # the random rows use the fixed one
    imps = {
        o: dampen.importance(original, batches(None, s), estimator=estimator)
        for o, s in orders.items()
    }
    if done is not None and redo_heldout:
        for kept in done["classes"]:
            retain = full_class(data, kept["class"]).retain
            if evaluate(original, train.x[retain], train.y[retain]) != kept["dr_original"]:
                raise SystemExit(f"{name} seed {seed}: the original is not the stored one")
        out["classes"] = [
            {**kept, **heldout_rows(data, original, imps["fixed"], batches, kept["class"], seed)}
            for kept in done["classes"]
        ]
        out["random"] = done["random"]
        if redo_random:
            out["random"] = random_rows(data, recipe, original, imps["fixed"], batches, count, seed)
        return out
    if done is not None:
        out["classes"] = done["classes"]
        out["random"] = random_rows(data, recipe, original, imps["fixed"], batches, count, seed)
        return out
    classes = []
    for cls in range(data.num_classes):
        sc = full_class(data, cls)
        dr0 = evaluate(original, train.x[sc.retain], train.y[sc.retain])
        row: dict[str, Any] = {"class": cls, "dr_original": dr0}
        for o, s in ORDERS.items():
            t = perf_counter()
            result = dampen.unlearn(
                original, batches(sc.forget, s), importance=imps[o], estimator=estimator
            )
            row[o] = {
                "df": evaluate(result.model, train.x[sc.forget], train.y[sc.forget]),
                "dr": evaluate(result.model, train.x[sc.retain], train.y[sc.retain]),
                "selected": result.stats["selected_fraction"],
                "rounds": len(result.stats["auto"].get("rounds", [])),
                "reason": result.stats["auto"]["reason"],
                "seconds": perf_counter() - t,
            }
        row.update(heldout_rows(data, original, imps["fixed"], batches, cls, seed))
        classes.append(row)
        print(name, seed, "class", cls, {o: round(row[o]["df"], 3) for o in ORDERS}, flush=True)
    out["classes"] = classes
    out["random"] = random_rows(data, recipe, original, imps["fixed"], batches, count, seed)
    return out


def heldout_rows(
    data: Any,
    original: torch.nn.Module,
    imp: dampen.Importance,
    batches: Any,
    cls: int,
    seed: int,
) -> dict[str, Any]:
    """Class ``cls`` forgotten with 200 held-out test samples of the other classes (fixed
    order): as the library does it (``"heldout"``, the better of its two paths) and with
    the plain path alone (``"heldout, plain path"``, ``paced_path=False``)."""
    train, test = data.train, data.test
    sc = full_class(data, cls)
    g = torch.Generator().manual_seed(seed)
    pick = sc.retain_test[torch.randperm(len(sc.retain_test), generator=g)[:HELDOUT]]
    held = loader(test, pick.sort().values, batch_size=256)
    rows: dict[str, Any] = {}
    for label, paced in (("heldout", True), ("heldout, plain path", False)):
        t = perf_counter()
        result = dampen.unlearn(
            original, batches(sc.forget, None), importance=imp, heldout=held, paced_path=paced
        )
        auto = result.stats["auto"]
        rows[label] = {
            "df": evaluate(result.model, train.x[sc.forget], train.y[sc.forget]),
            "dr": evaluate(result.model, train.x[sc.retain], train.y[sc.retain]),
            "rounds": len(auto.get("rounds", [])),
            "path": auto.get("path"),
            "heldout_acc": auto.get("heldout_acc"),
            "original_heldout_acc": auto.get("original_heldout_acc"),
            "other_path": auto.get("other_path"),
            "reason": auto["reason"],
            "seconds": perf_counter() - t,
        }
    return rows


def random_rows(
    data: Any,
    recipe: TrainConfig,
    original: torch.nn.Module,
    imp: dampen.Importance,
    batches: Any,
    count: int,
    seed: int,
) -> dict[str, Any]:
    """``count`` random samples: the original, retraining and auto without and with 200
    held-out test samples (test accuracy on the other test samples)."""
    sc, pick, rest = random_split(data, count, seed)
    held = loader(data.test, pick, batch_size=BATCH)

    def scores(model: torch.nn.Module) -> dict[str, float]:
        return random_scores(model, data, sc, rest)

    retrained = train_model(recipe, data, sc.retain, seed=seed)
    randoms = {"count": count, "original": scores(original), "retrain": scores(retrained)}
    for label, heldout in (("auto", None), ("auto, heldout", held)):
        result = dampen.unlearn(
            original,
            batches(sc.forget, None),
            importance=imp,
            heldout=heldout,
            estimator=imp.estimator,
        )
        randoms[label] = {**scores(result.model), "reason": result.stats["auto"]["reason"]}
    return randoms


def report(folder: Path) -> str:
    """The summary table of every file in ``folder``."""
    files = sorted(folder.glob("*.json"))
    results = [json.loads(f.read_text()) for f in files]
    estimators = sorted({r.get("estimator", "batch_sq") for r in results}) or ["batch_sq"]
    lines = [
        f"Every class forgotten with the plain call (no heldout=), {', '.join(estimators)} "
        "importance, loaders in three orders (fixed, shuffled 1, shuffled 2).",
        "",
        "| model | seed | worst Df (class) | worst Dr / original (class) | classes with Df ≤ 5 % "
        "and Dr ≥ 97 % of the original's | with Df ≤ 2 % and Dr at most 1 point below the "
        "original's | largest spread over the orders: Df / Dr (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [(c["class"], c[o], c["dr_original"]) for c in r["classes"] for o in ORDERS]
        worst_df = max(cells, key=lambda c: c[1]["df"])
        worst_dr = min(cells, key=lambda c: c[1]["dr"] / c[2])
        good = sum(c[1]["df"] <= 0.05 and c[1]["dr"] >= 0.97 * c[2] for c in cells)
        close = sum(c[1]["df"] <= 0.02 and c[1]["dr"] >= c[2] - 0.01 for c in cells)
        spread_df = max(
            max(c[o]["df"] for o in ORDERS) - min(c[o]["df"] for o in ORDERS) for c in r["classes"]
        )
        spread_dr = max(
            max(c[o]["dr"] for o in ORDERS) - min(c[o]["dr"] for o in ORDERS) for c in r["classes"]
        )
        lines.append(
            f"| {r['model']} | {r['seed']} | {100 * worst_df[1]['df']:.1f} ({worst_df[0]}) | "
            f"{worst_dr[1]['dr'] / worst_dr[2]:.3f} ({worst_dr[0]}) | {good} / {len(cells)} | "
            f"{close} / {len(cells)} | "
            f"{100 * spread_df:.1f} / {100 * spread_dr:.1f} |"
        )
    held = [r for r in results if "heldout" in r["classes"][0]]
    if held:
        lines += [
            "",
            f"Every class forgotten with {HELDOUT} held-out test samples of the other classes "
            "(fixed order): the library's call (the better of the plain and the paced path) "
            "against the plain path alone (`paced_path=False`). Goals as above: Df ≤ 5 % with "
            "Dr ≥ 97 % of the original's; Df ≤ 2 % with Dr at most 1 point below.",
            "",
            "| model | seed | Df ≤ 5 %, Dr ≥ 97 %: plain path → library | Df ≤ 2 %, drop ≤ 1 "
            "point: plain path → library | worst Df (library) | worst Dr / original "
            "(library) | paced path kept |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in held:
            rows = r["classes"]

            def count(key: str, df: float, rows: list[Any] = rows, strict: bool = False) -> int:
                return sum(
                    c[key]["df"] <= df
                    and (
                        c[key]["dr"] >= c["dr_original"] - 0.01
                        if strict
                        else c[key]["dr"] >= 0.97 * c["dr_original"]
                    )
                    for c in rows
                )

            worst_df = max(c["heldout"]["df"] for c in rows)
            worst_dr = min(c["heldout"]["dr"] / c["dr_original"] for c in rows)
            paced = sum(c["heldout"]["path"] == "paced" for c in rows)
            lines.append(
                f"| {r['model']} | {r['seed']} | {count('heldout, plain path', 0.05)} → "
                f"{count('heldout', 0.05)} / {len(rows)} | "
                f"{count('heldout, plain path', 0.02, strict=True)} → "
                f"{count('heldout', 0.02, strict=True)} / {len(rows)} | {100 * worst_df:.1f} | "
                f"{worst_dr:.3f} | {paced} |"
            )
    lines += [
        "",
        f"Random samples (Df / Dr / test accuracy, %; test excludes the {HELDOUT} held-out "
        "samples):",
        "",
        "| model | seed | n | original | retrain | auto | auto, 200 held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rnd = r["random"]
        cell = [
            " / ".join(f"{100 * rnd[k][m]:.1f}" for m in ("df", "dr", "test"))
            for k in ("original", "retrain", "auto", "auto, heldout")
        ]
        lines.append(f"| {r['model']} | {r['seed']} | {rnd['count']} | " + " | ".join(cell) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fmnist", action="store_true", help="also the Fashion-MNIST models")
    parser.add_argument("--only", nargs="*", default=None, help="model names to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs/auto-plain"))
    parser.add_argument("--report", action="store_true", help="print the table and stop")
    parser.add_argument(
        "--estimator", default="batch_sq", choices=("batch_sq", "per_sample", "shuffled_sq")
    )
    parser.add_argument(
        "--redo-random", action="store_true", help="measure the random rows of stored files again"
    )
    parser.add_argument(
        "--redo-heldout",
        action="store_true",
        help="measure the classes with held-out data of stored files again",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        names = args.only or [n for n in MODELS if args.fmnist or MODELS[n][0] == "digits"]
        for name in names:
            for seed in args.seeds:
                path = args.out / f"{name}-{seed}.json"
                done = json.loads(path.read_text()) if path.exists() else None
                if done is not None and not (args.redo_random or args.redo_heldout):
                    continue
                result = run(name, seed, done, args.estimator, args.redo_heldout, args.redo_random)
                atomic_write_text(path, json.dumps(result, indent=1))
    print(report(args.out), end="")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    main()
