"""Does the loaders' batch order decide what ``alpha="auto"`` forgets? (not a test)

For every class of scikit-learn's digits, with the project's small CNN (the ``quick`` preset's
recipe, seed 0): compute the importance of D and forget the class with ``alpha="auto"`` and
200 held-out test samples of the other classes, three times: with D and Df in their fixed
order, and with both shuffled by two seeds. Prints Df / Dr accuracy per order and the largest
spread over the orders. ``batch_sq`` (the paper's estimator) sums squared gradients of batch
means, so it depends on how batches are composed; ``per_sample`` does not.

Run: ``python benchmarks/auto_order.py [--estimator batch_sq|per_sample]``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch

import dampen
from dampen.data.base import loader
from dampen.data.digits import load_digits
from dampen.data.scenarios import full_class
from dampen.eval.functional import accuracy
from dampen.recipe import TrainConfig, train_model

BATCH = 64
ORDERS: dict[str, int | None] = {"fixed": None, "shuffled (seed 1)": 1, "shuffled (seed 2)": 2}


def acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return accuracy(model.eval()(x), y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", default="batch_sq", choices=("batch_sq", "per_sample"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    data = load_digits(seed=0)
    recipe = TrainConfig(model="cnn", epochs=15, crop_padding=1, flip=False)
    original = train_model(recipe, data, seed=0).eval()
    train = data.train

    def batches(indices: torch.Tensor | None, order: int | None) -> Any:
        return loader(train, indices, batch_size=BATCH, shuffle=order is not None, seed=order or 0)

    importances = {
        name: dampen.importance(original, batches(None, order), estimator=args.estimator)
        for name, order in ORDERS.items()
    }
    print(
        f"digits, small CNN, estimator {args.estimator}, alpha auto with 200 held-out samples. "
        f"Per forgotten class, Df / Dr accuracy with the loaders in each order: {', '.join(ORDERS)}"
    )
    spread_df = spread_dr = 0.0
    for cls in range(10):
        scenario = full_class(data, cls)
        pick = torch.randperm(len(scenario.retain_test), generator=torch.Generator().manual_seed(0))
        held = loader(data.test, scenario.retain_test[pick[:200]], batch_size=200)
        row = []
        for name, order in ORDERS.items():
            result = dampen.unlearn(
                original,
                batches(scenario.forget, order),
                importance=importances[name],
                heldout=held,
                estimator=args.estimator,
            )
            row.append(
                (
                    acc(result.model, train.x[scenario.forget], train.y[scenario.forget]),
                    acc(result.model, train.x[scenario.retain], train.y[scenario.retain]),
                )
            )
        dfs, drs = [df for df, _ in row], [dr for _, dr in row]
        spread_df = max(spread_df, max(dfs) - min(dfs))
        spread_dr = max(spread_dr, max(drs) - min(drs))
        print(f"  class {cls}  " + "   ".join(f"{df:.3f} / {dr:.3f}" for df, dr in row))
    print(
        f"largest spread over the orders: Df {100 * spread_df:.1f} points, "
        f"Dr {100 * spread_dr:.1f} points"
    )


if __name__ == "__main__":
    main()
