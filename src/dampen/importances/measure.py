"""One importance pass end to end: state preserved, ranks combined, an Importance built."""

from __future__ import annotations

import torch
from torch import nn

from dampen.core.batches import Batches, ForwardFn, loader_batch_size
from dampen.core.state import preserved
from dampen.importances.distributed import all_reduce_sums_, rank_and_world, shard_batches, unwrap
from dampen.importances.estimators import accumulate, check_estimator, rounded_
from dampen.importances.store import Fingerprint, Importance


def measure(
    model: nn.Module,
    batches: Batches,
    *,
    estimator: str,
    forward: ForwardFn | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    shard: bool = False,
    hash_values: bool = True,
    what: str = "data",
    per_sample_impl: str = "auto",
    objective: str = "cross_entropy",
    batch_size: int | None = None,
) -> Importance:
    """Compute the importance of ``batches`` for ``model``.

    In a process group every rank's sums and counts are summed (see
    :mod:`dampen.importances.distributed`); ``shard=True`` makes each rank take every
    world-th batch of ``batches`` itself. ``objective`` is what the label-based estimators
    differentiate: the cross-entropy, or minus the log-odds of the label (see
    :mod:`dampen.importances.estimators`). ``batch_size`` is the batch size to record (by
    default the loader's, else the first batch's): ``shuffled_sq``'s B, which a forget set's
    importance takes from the training data's.

    Raises:
        ValueError: naming ``what`` when it holds no samples.
    """
    check_estimator(estimator)
    inner = unwrap(model)
    if shard:
        rank, world = rank_and_world()
        batches = shard_batches(batches, rank, world)
    with preserved(inner), torch.enable_grad():
        sums = accumulate(
            inner,
            batches,
            estimator,
            forward=forward,
            progress=progress,
            chunk_size=chunk_size,
            per_sample_impl=per_sample_impl,
            objective=objective,
        )
    all_reduce_sums_(sums)
    rounded_(sums, dict(inner.named_parameters()))
    if sums.units == 0:
        raise ValueError(f"the {what} is empty (no samples)")
    return Importance(
        sums=sums.tensors,
        units=sums.units,
        samples=sums.samples,
        batches=sums.batches,
        estimator=estimator,
        batch_size=batch_size or loader_batch_size(batches) or sums.first_batch_size,
        fingerprint=Fingerprint.of(inner, values=hash_values),
        label_counts=sums.labels,
        firsts=sums.firsts,
    )
