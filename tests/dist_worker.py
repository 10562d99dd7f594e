"""Run by test_distributed.py in each of two gloo processes (not a test module itself)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import dampen
from conftest import loader, make_data, make_model


def main(out: Path, mode: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    x, y = make_data(40)
    model = make_model()
    if mode == "ddp":
        model = DistributedDataParallel(model)
    for estimator in ("batch_sq", "per_sample", "shuffled_sq", "lf"):
        if mode == "sampler":
            # Each rank's own loader (the DistributedSampler idiom): rank r holds batches r, r+2, …
            mine = [b for i, b in enumerate(loader(x, y, 8)) if i % 2 == rank]
            imp = dampen.importance(model, mine, estimator=estimator)
        else:
            imp = dampen.importance(model, loader(x, y, 8), estimator=estimator, shard=True)
        if rank == 0:
            imp.save(out / f"{mode}-{estimator}.safetensors")
    # Drop DDP (its reducer holds the group) before the group goes: otherwise gloo sometimes
    # aborts at exit ("terminate called without an active exception").
    del model
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
