"""How far SSD's α trades the forgotten people's recall against the retained people's on
``lm-facts`` (one seed): does any α reach retraining's forget level at the original's retain
level?

Reads the original model from the ``lm-facts`` run's cache (``dampen bench --preset lm-facts``
first). Accuracies are teacher-forced: a question is right when every answer token is the
arg-max, which for greedy decoding is the exact match of the answer (``tests/test_facts.py``
checks that the two agree). Run ``python benchmarks/lm_facts_sweep.py --help``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import dampen
from dampen.bench.lm_facts import LM_FACTS, LMFactsRunner, _data, _loader
from dampen.data.facts import forget_split
from dampen.eval.answers import teacher_forced_accuracy

ALPHAS = {"batch_sq": (5.0, 10.0, 20.0, 50.0, 100.0), "per_sample": (3.0, 10.0, 30.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/lm-facts", help="the lm-facts output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the loop fallback under sdpa; "alpha selects nothing"
    config = LM_FACTS
    data = _data(config, args.seed)
    runner = LMFactsRunner(config, args.run, log=print)
    original, _ = runner._trained(data.facts, data.facts.train_people, args.seed, "original")
    train = _loader(data.facts, data.facts.train_items, config)
    print(f"seed {args.seed}; teacher-forced accuracy in % (forgotten / retained)")
    print("| people | estimator | α | parameters dampened | forgotten | retained |")
    print("|---|---|---|---|---|---|")
    for estimator, alphas in ALPHAS.items():
        start = time.perf_counter()
        imp = dampen.importance(original, train, estimator=estimator)
        seconds = time.perf_counter() - start
        for count in config.forget_counts:
            split = forget_split(data.facts, count, seed=args.seed, batch_size=config.batch_size)
            before = teacher_forced_accuracy(original, split.forget)
            retain = teacher_forced_accuracy(original, split.retain)
            print(f"| {count} | original | | 0 | {100 * before:.1f} | {100 * retain:.1f} |")
            for alpha in alphas:
                model = dampen.unlearn(
                    original, split.forget, importance=imp, alpha=alpha, lambda_=1.0,
                    estimator=estimator,
                ).model  # fmt: skip
                print(
                    f"| {count} | {estimator} ({seconds:.1f} s) | {alpha:g} | "
                    f"{_selected(original, model):,} | "
                    f"{100 * teacher_forced_accuracy(model, split.forget):.1f} | "
                    f"{100 * teacher_forced_accuracy(model, split.retain):.1f} |",
                    flush=True,
                )


def _selected(before: torch.nn.Module, after: torch.nn.Module) -> int:
    return sum(
        int((p != q).sum()) for p, q in zip(before.parameters(), after.parameters(), strict=True)
    )


if __name__ == "__main__":
    main()
