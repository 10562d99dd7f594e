"""Repeated requests: forgetting two classes one after the other vs both at once (not a test).

For each pair of classes (a, b) of scikit-learn's digits, with a small CNN trained by the
project's recipe:
- at once: forget every sample of a and b from the original with the stored I_D;
- one after the other: forget a (stored I_D), then b from that model with the stored
  importance updated by ``I_D.subtract(result.forget_importance)`` — no training data read.
- one after the other, with the importance of D minus a recomputed from the training data:
  the reference for the update.
Prints accuracies of the three routes (Dr, Df_a, Df_b, test of the kept classes) and the
largest gaps. ``shuffled_sq`` (the library's default and this script's) and ``per_sample``
subtract exactly (their sums are per sample), so the two importances agree to rounding;
``batch_sq`` approximates the update.
With ``alpha="auto"`` a request holding several whole classes is itself forgotten one class at
a time, so "at once" and "one after the other" coincide; with a fixed α they do not.

Run: ``python benchmarks/repeated.py [--estimator shuffled_sq] [--alpha auto|10]``.
"""

from __future__ import annotations

import argparse
import itertools
import random

import torch

import dampen
from dampen.data.base import loader
from dampen.data.digits import load_digits
from dampen.eval.functional import accuracy
from dampen.recipe import recipe_for, train_model

BATCH = 64


def acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return accuracy(model.eval()(x), y) if len(y) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--estimator", default="shuffled_sq", choices=["shuffled_sq", "per_sample", "batch_sq"]
    )
    parser.add_argument("--alpha", default="auto", help="'auto' or a number")
    parser.add_argument("--pairs", type=int, default=8, help="random class pairs to try")
    parser.add_argument("--max-selected", type=float, default=0.1, help="cap for alpha=auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    alpha: float | str = args.alpha if args.alpha == "auto" else float(args.alpha)

    data = load_digits()
    train, test = data.train, data.test
    model = train_model(recipe_for("digits"), data, seed=args.seed)
    imp = dampen.importance(model, loader(train, batch_size=BATCH), estimator=args.estimator)
    pairs = list(itertools.combinations(range(10), 2))
    random.Random(args.seed).shuffle(pairs)

    print(
        f"digits, small CNN, estimator {args.estimator}, alpha {args.alpha}. Per pair (a, b), "
        "accuracies of three routes: both at once | a then b with the stored importance "
        "updated by subtract() (no training data) | a then b with the importance of D minus a "
        "recomputed from the training data (the reference for the update)"
    )
    print(f"{'pair':>6} " + " ".join(f"{h:>20}" for h in ("Dr", "Df_a", "Df_b", "test kept")))
    update_gaps, once_gaps = [], []
    for a, b in pairs[: args.pairs]:
        in_a, in_b = train.y == a, train.y == b
        both = in_a | in_b

        def batches(mask: torch.Tensor) -> object:
            return loader(train, mask.nonzero().flatten(), batch_size=BATCH)

        opts: dict[str, object] = {"estimator": args.estimator, "alpha": alpha}
        if alpha == "auto":
            opts["max_selected"] = args.max_selected
        once = dampen.unlearn(model, batches(both), importance=imp, **opts).model
        first = dampen.unlearn(model, batches(in_a), importance=imp, **opts)
        assert first.forget_importance is not None
        # Both importances belong to the original weights; first.model was unlearned since.
        updated = imp.subtract(first.forget_importance)
        second = dampen.unlearn(
            first.model, batches(in_b), importance=updated, check_values=False, **opts
        ).model
        exact_imp = dampen.importance(model, batches(~in_a), estimator=args.estimator)
        exact = dampen.unlearn(
            first.model, batches(in_b), importance=exact_imp, check_values=False, **opts
        ).model

        kept_test = (test.y != a) & (test.y != b)
        cols = []
        for x, y in (
            (train.x[~both], train.y[~both]),
            (train.x[in_a], train.y[in_a]),
            (train.x[in_b], train.y[in_b]),
            (test.x[kept_test], test.y[kept_test]),
        ):
            cols.append((acc(once, x, y), acc(second, x, y), acc(exact, x, y)))
        update_gaps.append(max(abs(u - v) for _, u, v in cols))
        once_gaps.append(max(abs(o - u) for o, u, _ in cols))
        cells = " ".join(f"{o:6.3f}|{u:6.3f}|{v:6.3f}" for o, u, v in cols)
        print(f"{a:>3},{b:<2} {cells}")
    n = len(update_gaps)
    print(
        f"updated vs recomputed importance: largest gap {max(update_gaps):.3f}, mean "
        f"{sum(update_gaps) / n:.3f} over {n} pairs; at once vs one after the other: largest "
        f"{max(once_gaps):.3f}, mean {sum(once_gaps) / n:.3f}"
    )


if __name__ == "__main__":
    main()
