"""Scaling figures (not a test): importance throughput over processes, memory of a stream.

Prints:
  (e) importance throughput (samples/s) of ``batch_sq`` and ``per_sample`` on ResNet18 with
      1 process × 1 thread, 1 process × 2 threads and 2 processes × 1 thread (gloo on
      loopback, the way ``torchrun --nproc-per-node 2`` runs it);
  (f) peak memory of the importance pass over a synthetic stream of 28×28 images generated
      batch by batch, for streams of 1× to 10× Fashion-MNIST's 60,000 training images: it
      must stay flat (one batch plus the importance tensors), whatever the stream's length.

Run: ``python benchmarks/scale.py [--width 16] [--samples 1024]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import dampen
from dampen.models.resnet import ResNet18
from speed import PeakRSS

FMNIST_TRAIN = 60_000


def synthetic(n: int, batch: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` random 1×28×28 images with labels, made one batch at a time."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        yield torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)


def throughput_worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): time the importance pass, print samples/s."""
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, in_channels=1, width=args.width).eval()
    data = list(synthetic(args.samples, 64))
    dampen.importance(model, data[:1], estimator=args.estimator)  # warm-up
    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    imp = dampen.importance(model, data, estimator=args.estimator, shard=True)
    seconds = time.perf_counter() - start
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps({"samples": imp.samples, "seconds": seconds}))
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_throughput(args: argparse.Namespace, estimator: str, procs: int, threads: int) -> float:
    cmd = [
        sys.executable, __file__, "--worker", "--width", str(args.width),
        "--samples", str(args.samples), "--estimator", estimator, "--threads", str(threads),
    ]  # fmt: skip
    port = str(_free_port())
    launched = []
    for rank in range(procs):
        env = dict(os.environ)
        if procs > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank),
                       WORLD_SIZE=str(procs))  # fmt: skip
        launched.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate()[0] for p in launched]
    if any(p.returncode for p in launched):
        raise RuntimeError(f"a worker failed: {outputs}")
    result = json.loads(outputs[0].strip().splitlines()[-1])
    return float(result["samples"] / result["seconds"])


def stream_memory(batch: int) -> list[tuple[int, float]]:
    """Peak RSS growth (MiB) of the importance pass over streams of growing length."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    dampen.importance(model, synthetic(batch, batch), estimator="batch_sq")  # warm-up
    rows = []
    for factor in (1, 2, 5, 10):
        with PeakRSS() as peak:
            imp = dampen.importance(
                model, synthetic(factor * FMNIST_TRAIN, batch, seed=factor), estimator="batch_sq"
            )
        rows.append((imp.samples, (peak.peak - peak.start) / 2**20))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--estimator", default="batch_sq")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stream-batch", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        throughput_worker(args)
        return

    print(f"(e) importance throughput, ResNet18 width {args.width}, {args.samples} samples, "
          "batch 64 (samples/s)")  # fmt: skip
    for estimator in ("batch_sq", "per_sample"):
        one = run_throughput(args, estimator, 1, 1)
        two_threads = run_throughput(args, estimator, 1, 2)
        two_procs = run_throughput(args, estimator, 2, 1)
        print(f"    {estimator:<10} 1 proc × 1 thread {one:7.1f}   1 proc × 2 threads "
              f"{two_threads:7.1f}   2 procs × 1 thread {two_procs:7.1f}")  # fmt: skip
    torch.set_num_threads(args.threads)
    print(f"(f) importance over a synthetic stream, MLP 784-256-10, batch {args.stream_batch}: "
          "peak memory growth")  # fmt: skip
    for samples, mib in stream_memory(args.stream_batch):
        print(f"    {samples:>9,} samples ({samples / FMNIST_TRAIN:4.1f}× Fashion-MNIST)  "
              f"{mib:7.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
