"""Importance across processes with ``torch.distributed``: shard the data, all-reduce the sums.

Under ``torchrun`` (or any initialised process group) each rank runs the importance pass over
its own share of the batches; the per-parameter sums and the counts are then summed over ranks,
so every rank ends with the importance of the whole data set. When the ranks together see the
same batches as one process would (e.g. :func:`shard_batches`), the result equals the
single-process one to float tolerance for every estimator; ``per_sample`` does not even need
the same batching.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dampen.importances.estimators import Sums

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``; other models unchanged.

    Importances are computed on the inner module: its parameter names carry no ``module.``
    prefix, and no gradient synchronisation hook of the wrapper fires.
    """
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, parallel):
        model = model.module
    return model


def shard_batches(batches: Iterable[T], rank: int, world: int) -> Iterator[T]:
    """Every ``world``-th batch starting at ``rank``: the ranks' shares partition the batches."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world; got rank={rank}, world={world}")
    for i, batch in enumerate(batches):
        if i % world == rank:
            yield batch


def all_reduce_sums_(sums: Sums) -> None:
    """Sum the tensors and counts of ``sums`` over all ranks, in place.

    Tensors are flattened into one buffer per dtype so a model with many parameters costs a
    few collective calls, not one per tensor. The nominal batch size becomes rank 0's.
    """
    if not is_distributed():
        return
    names = list(sums.tensors)
    device = sums.tensors[names[0]].device if names else torch.device("cpu")
    _all_reduce_tensors_(sums.tensors)
    if sums.firsts is not None:
        _all_reduce_tensors_(sums.firsts)
    counts = torch.tensor(
        [sums.units, sums.samples, sums.batches], dtype=torch.float64, device=device
    )
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    sums.units, sums.samples, sums.batches = (int(v) for v in counts.tolist())
    first = torch.tensor([sums.first_batch_size or 0], dtype=torch.float64, device=device)
    dist.broadcast(first, src=0)
    sums.first_batch_size = int(first.item()) or sums.first_batch_size
    _all_reduce_labels_(sums, device)


def _all_reduce_tensors_(tensors: dict[str, Tensor]) -> None:
    """Sum each tensor over all ranks in place, through one flat buffer per dtype."""
    by_dtype: dict[torch.dtype, list[str]] = {}
    for n, t in tensors.items():
        by_dtype.setdefault(t.dtype, []).append(n)
    for group in by_dtype.values():
        flat = torch.cat([tensors[n].reshape(-1) for n in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for n in group:
            t = tensors[n]
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def _all_reduce_labels_(sums: Sums, device: torch.device) -> None:
    """Sum the label histograms; unknown on any rank means unknown on all."""
    labels = sums.labels
    known = torch.tensor([labels is not None], dtype=torch.float64, device=device)
    size = torch.tensor([max(labels, default=-1) + 1 if labels else 0], device=device)
    dist.all_reduce(known, op=dist.ReduceOp.MIN)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    if not known.item() or labels is None:
        sums.labels = None
        return
    counts = torch.zeros(int(size.item()), dtype=torch.float64, device=device)
    for label, count in labels.items():
        counts[label] = count
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    sums.labels = {i: int(c) for i, c in enumerate(counts.tolist()) if c}


def init_from_env() -> bool:
    """Initialise the default process group from torchrun's variables, when they are set.

    Uses NCCL when CUDA is available and gloo otherwise. Returns True when a group with more
    than one rank is active afterwards.
    """
    if dist.is_available() and not dist.is_initialized() and "RANK" in os.environ:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return is_distributed()
