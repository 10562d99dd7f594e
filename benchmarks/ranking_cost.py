"""What the signed ranking costs a class request (not a test).

``alpha="auto"`` in class forgetting searches with SSD's ranking and, unless the forget set met
the target as it was, once more with the signed one (``signed_ranking=True``, the default).
For each model (seed 0, the recipes of ``auto_plain.py``) and classes 1, 4 and 7, without and
with 200 held-out test samples of the other classes: the seconds of the request with both
rankings against SSD's alone, each the faster of two calls, interleaved in one process
(ratios within one run; the machine is shared).

Run: ``python benchmarks/ranking_cost.py [digits-cnn-wide fmnist-resnet18 fmnist-vit]``.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch

import dampen
from auto_plain import BATCH, HELDOUT, MODELS, load_data
from dampen.data.base import loader
from dampen.data.scenarios import full_class
from dampen.recipe import train_model

CLASSES = (1, 4, 7)


def seconds(model: torch.nn.Module, forget: object, imp: object, held: object, flag: bool) -> float:
    start = time.perf_counter()
    dampen.unlearn(model, forget, importance=imp, heldout=held, signed_ranking=flag)
    return time.perf_counter() - start


def main(names: list[str]) -> None:
    warnings.simplefilter("ignore")  # the rounds' and guards' notes, not the point here
    torch.set_num_threads(1)
    for name in names:
        data_name, recipe, _ = MODELS[name]
        data = load_data(data_name, 0)
        model = train_model(recipe, data, seed=0).eval()
        imp = dampen.importance(model, loader(data.train, None, batch_size=BATCH))
        for with_heldout in (False, True):
            ratios = []
            for cls in CLASSES:
                sc = full_class(data, cls)
                g = torch.Generator().manual_seed(0)
                pick = sc.retain_test[torch.randperm(len(sc.retain_test), generator=g)[:HELDOUT]]
                held = loader(data.test, pick.sort().values, batch_size=256)
                forget = loader(data.train, sc.forget, batch_size=BATCH)
                times: dict[bool, list[float]] = {False: [], True: []}
                for flag in (False, True, False, True):
                    times[flag].append(
                        seconds(model, forget, imp, held if with_heldout else None, flag)
                    )
                alone, both = min(times[False]), min(times[True])
                ratios.append(both / alone)
                label = "200 held-out" if with_heldout else "no heldout="
                print(
                    f"{name}, {label}, class {cls}: SSD's ranking {alone:.2f} s, both "
                    f"{both:.2f} s, ratio {both / alone:.2f}",
                    flush=True,
                )
            print(f"{name}, {label}: median ratio {statistics.median(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-cnn-wide", "fmnist-resnet18", "fmnist-vit"])
