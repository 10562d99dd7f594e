"""What each importance estimator costs on the bench's Fashion-MNIST models (not a test).

``shuffled_sq`` is the default estimator; it needs the per-sample pass. This times
``batch_sq``, ``per_sample`` and ``shuffled_sq`` over the same batches, in one run, on the
``fmnist`` preset's two models (untrained: the time does not depend on the weights):

- ResNet18 width 8, whose parameters all sit in layers the hooks handle (the layer-wise path);
- the ViT (patch 7, dim 64, depth 4), whose attention needs ``torch.func.vmap``.

Prints seconds and the ratios to ``batch_sq`` (the median of ``--repeats`` passes). Data:
Fashion-MNIST training images when the Debian package is installed, else random images.
Run: ``python benchmarks/estimator_cost.py [--samples 2048] [--batch 64] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import torch

import dampen
from dampen.models import build_model
from speed import batches, best_of, images

ESTIMATORS = ("batch_sq", "per_sample", "shuffled_sq")
MODELS = {
    "ResNet18 width 8 (layer-wise)": ("resnet18", {"width": 8}),
    "ViT patch 7 / dim 64 / depth 4 (vmap)": (
        "vit",
        {"patch_size": 7, "dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128},
    ),
}


def timed(model: torch.nn.Module, data: list, estimator: str, repeats: int) -> float:
    """Median seconds of ``repeats`` importance passes."""
    return best_of(repeats, lambda: dampen.importance(model, data, estimator=estimator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = images(args.samples, seed=0)
    data = batches(x, y, args.batch)
    print(
        f"|D| = {len(x)}, batch {args.batch}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats}"
    )
    for label, (name, kwargs) in MODELS.items():
        torch.manual_seed(0)
        model = build_model(name, in_channels=1, image_size=28, **kwargs).eval()
        dampen.importance(model, data[:2], estimator="shuffled_sq")  # warm-up
        seconds = {e: timed(model, data, e, args.repeats) for e in ESTIMATORS}
        ratios = ", ".join(
            f"{e} {seconds[e]:.2f} s ({seconds[e] / seconds['batch_sq']:.2f}×)" for e in ESTIMATORS
        )
        print(f"{label}: {ratios}", flush=True)


if __name__ == "__main__":
    main()
