"""Where a corrective request's clean accuracy drop falls: the poison's target class or the rest.

On ``fmnist-poison``'s cached models (run ``dampen bench --preset fmnist-poison`` first), for
the requests whose backdoor took (:func:`corrective_ceiling.took_pairs`), or ``--pairs`` of
them: dampen's ``alpha="auto"`` with ``forget_kind="poison"`` and the bench's 200 held-out
validation samples (re-centred, the default, and not: ``recentre_target=False``), and Potion
at ``--rho``. Per request and row, on the test split: healed share, accuracy drop, attack
success, and the test accuracy drop of the target class and the mean drop of the other
classes (points).

A drop concentrated on the target class means the dampening lowered that class's outputs
rather than removed the trigger alone: triggered images then leave the target class because
nothing is classified as it any more.

Run: ``python benchmarks/poison_by_class.py [--cache runs/fmnist-poison/cache] [--pairs 3]
[--rho 0.15]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import dampen
from dampen.bench.presets import fmnist_poison
from dampen.bench.runner import BenchRunner
from dampen.data import loader
from dampen.data.base import LabelledData

sys.path.insert(0, str(Path(__file__).parent))
from corrective_ceiling import PARTS, prepare, took_pairs

ROWS = {"dampen+heldout": True, "dampen+heldout, not re-centred": False}
"""dampen's rows: the default request and the same with ``recentre_target=False``."""


def class_accuracy(model: nn.Module, data: LabelledData, classes: int) -> torch.Tensor:
    """Test accuracy per class (eval mode, batches of 512)."""
    right = torch.zeros(classes)
    seen = torch.zeros(classes)
    model.eval()
    with torch.no_grad():
        for x, y in loader(data, batch_size=512):
            hit = (model(x).argmax(1) == y).float()
            right.index_add_(0, y, hit)
            seen.index_add_(0, y, torch.ones_like(hit))
    return right / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/fmnist-poison/cache"))
    parser.add_argument("--pairs", default=None, help="positions among the pairs that took")
    parser.add_argument("--rho", type=float, default=0.15, help="Potion's ρ")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    run = BenchRunner(fmnist_poison().replace(cache_dir=str(args.cache), threads=1))
    took = took_pairs(run)
    chosen = range(len(took)) if args.pairs is None else map(int, args.pairs.split(","))
    print("| request | row | healed % | drop | attack % | target class drop | others' drop |")
    print("|---|---|---|---|---|---|---|")
    for seed, share in (took[i] for i in chosen):
        for part in PARTS:
            label = f"poison/{share}/{part}"
            p = prepare(run, seed, label)
            s = p.scenario
            assert s.target is not None  # a poison scenario
            classes = s.data.num_classes
            before = class_accuracy(p.original, s.data.test, classes)
            identified = loader(s.data.train, s.forget, batch_size=run.config.batch_size)
            heldout = run._heldout(s, 200, seed, label)
            rows = {
                name: dampen.unlearn(
                    p.original,
                    identified,
                    importance=p.importance,
                    forget_kind="poison",
                    heldout=heldout,
                    recentre_target=recentre,
                ).model
                for name, recentre in ROWS.items()
            }
            retain = loader(
                s.data.train, s.retain, batch_size=run.config.batch_size, shuffle=True, seed=seed
            )
            rows[f"potion ρ={args.rho:g}"] = dampen.unlearn(
                p.original, identified, method="potion", retain=retain, rho=args.rho
            ).model
            for name, model in rows.items():
                healed, drop, attack = p.measure(model)["test"]
                lost = 100 * (before - class_accuracy(model, s.data.test, classes))
                others = torch.cat([lost[: s.target], lost[s.target + 1 :]]).mean()
                print(
                    f"| seed {seed} {label} | {name} | {healed:.1f} | {drop:.2f} | {attack:.1f} "
                    f"| {lost[s.target]:.1f} | {others:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
