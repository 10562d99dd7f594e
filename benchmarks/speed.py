"""Speed and memory of the SSD core, as ratios measured in one run (not a test).

Prints:
  (a) SSD (paper α = 10) forget time with a stored importance ÷ one forward+backward pass over
      Df (the floor), and the same for ``alpha="auto"`` (which adds forward passes);
  (b) SSD with I_D computed on the fly ÷ SSD with the stored I_D;
  (c) ``per_sample`` ÷ ``batch_sq`` importance time on the same data;
  (d) peak extra memory of SSD (stored I_D) in units of parameter bytes: in total, and beyond
      the peak of the plain forward+backward pass (the activations any method needs).

Model: ResNet18 (CIFAR-style stem) on 1×28×28 inputs. Data: Fashion-MNIST images when the
Debian package is installed, else random images of that shape (timing does not depend on the
pixel values). Run ``python benchmarks/speed.py --help`` for sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

import dampen
from dampen.models.resnet import ResNet18

PAGE = os.sysconf("SC_PAGE_SIZE")
PAPER_ALPHA = 10.0


def rss_bytes() -> int:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Samples the RSS every millisecond in a thread; ``peak`` is the largest seen."""

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Fashion-MNIST training images when available, else random ones."""
    try:
        from dampen.data.fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist().train
        return data.x[:n].contiguous(), data.y[:n].contiguous()
    except (FileNotFoundError, ValueError, ImportError):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def make_model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return ResNet18(num_classes=10, in_channels=1, width=width).eval()


def floor_pass(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """One forward+backward pass over the data: what any gradient method must at least do."""
    for x, y in data:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Median wall-clock seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def memory_probe(args: argparse.Namespace, imp_path: str) -> dict[str, float]:
    """In a fresh process: peak RSS growth of one operation (``--probe-op``).

    Each operation gets its own process so that memory cached by the allocator for one cannot
    hide the needs of the other; both include the activations of their passes.
    """
    model = make_model(args.width)
    x, y = images(args.forget, seed=1)
    forget = batches(x, y, args.batch)
    imp = dampen.Importance.load(imp_path, model=model)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    floor_pass(model, [(x[:1], y[:1])])  # load kernels with a one-sample batch: tiny buffers
    with PeakRSS() as peak:
        if args.probe_op == "floor":
            floor_pass(model, forget)
        else:
            dampen.unlearn(model, forget, importance=imp, alpha=PAPER_ALPHA)
    return {"param_bytes": param_bytes, "extra": (peak.peak - peak.start) / param_bytes}


def probe_memory(args: argparse.Namespace, imp: dampen.Importance, op: str) -> dict[str, float]:
    """Run :func:`memory_probe` for ``op`` in a subprocess and return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = imp.save(Path(tmp) / "imp.safetensors")
        flags = {
            "--memory-probe": path,
            "--probe-op": op,
            "--width": args.width,
            "--forget": args.forget,
            "--batch": args.batch,
            "--threads": args.threads,
        }
        command = [sys.executable, __file__] + [str(v) for kv in flags.items() for v in kv]
        probe = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(probe.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="ResNet18 width (64 = the real one)")
    parser.add_argument("--train", type=int, default=2048, help="samples in D")
    parser.add_argument("--forget", type=int, default=512, help="samples in Df")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-op", choices=["floor", "ssd"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args, args.memory_probe)))
        return

    model = make_model(args.width)
    params = sum(p.numel() for p in model.parameters())
    xd, yd = images(args.train, seed=0)
    train = batches(xd, yd, args.batch)
    forget = train[: max(1, args.forget // args.batch)]
    print(
        f"ResNet18 width {args.width} ({params / 1e6:.1f} M parameters) on 1×28×28; "
        f"|D| = {len(xd)}, |Df| = {sum(len(b[1]) for b in forget)}, batch {args.batch}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    t_bsq = best_of(1, lambda: dampen.importance(model, train, estimator="batch_sq"))
    t_ps = best_of(1, lambda: dampen.importance(model, train, estimator="per_sample"))
    t_ss = best_of(1, lambda: dampen.importance(model, train, estimator="shuffled_sq"))
    imp = dampen.importance(model, train, estimator="batch_sq")

    floor_pass(model, forget)  # warm-up
    t_floor = best_of(args.repeats, lambda: floor_pass(model, forget))
    t_stored = best_of(
        args.repeats, lambda: dampen.unlearn(model, forget, importance=imp, alpha=PAPER_ALPHA)
    )
    # The forget batches are random samples: as a class request, so that auto searches (as
    # sample forgetting without heldout= it would leave the model alone and measure nothing).
    t_auto = best_of(
        1,
        lambda: dampen.unlearn(model, forget, importance=imp, alpha="auto", forget_kind="class"),
    )
    t_fly = best_of(
        1,
        lambda: dampen.unlearn(model, forget, train=train, alpha=PAPER_ALPHA, estimator="batch_sq"),
    )

    floor_mem = probe_memory(args, imp, "floor")
    ssd_mem = probe_memory(args, imp, "ssd")
    mem = {
        "param_bytes": ssd_mem["param_bytes"],
        "ssd_extra": ssd_mem["extra"],
        "floor_extra": floor_mem["extra"],
    }

    rows = [
        (
            "(a) SSD, stored I_D ÷ fwd+bwd over Df",
            t_stored / t_floor,
            "≤ 1.5",
            f"{t_stored:.2f}s ÷ {t_floor:.2f}s",
        ),
        (
            "    SSD alpha=auto, stored I_D ÷ fwd+bwd",
            t_auto / t_floor,
            "(search: forward passes)",
            f"{t_auto:.2f}s ÷ {t_floor:.2f}s",
        ),
        (
            "(b) SSD, I_D on the fly ÷ stored I_D",
            t_fly / t_stored,
            "(what storing buys)",
            f"{t_fly:.2f}s ÷ {t_stored:.2f}s",
        ),
        (
            "(c) per_sample ÷ batch_sq importance",
            t_ps / t_bsq,
            "≤ 3",
            f"{t_ps:.2f}s ÷ {t_bsq:.2f}s",
        ),
        (
            "    shuffled_sq ÷ batch_sq importance",
            t_ss / t_bsq,
            "(order-free)",
            f"{t_ss:.2f}s ÷ {t_bsq:.2f}s",
        ),
        (
            "(d) SSD peak extra memory, total",
            mem["ssd_extra"],
            "≤ 3 (param bytes)",
            f"{mem['param_bytes'] / 2**20:.0f} MiB of parameters",
        ),
        (
            "    beyond the fwd+bwd pass's own peak",
            mem["ssd_extra"] - mem["floor_extra"],
            "",
            f"fwd+bwd alone: {mem['floor_extra']:.2f}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, ratio, target, detail in rows:
        print(f"{name:<{width}}  {ratio:7.2f}  {target:<20} {detail}")


if __name__ == "__main__":
    main()
