"""The public facade: ``importance()``, ``unlearn()``, ``replay()``, ``methods()``."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dampen import registry
from dampen.core.batches import Batches, ForwardFn, checked_forward
from dampen.importances.distributed import unwrap
from dampen.importances.estimators import DEFAULT_ESTIMATOR
from dampen.importances.measure import measure
from dampen.importances.store import Importance
from dampen.registry import Request


def importance(
    model: nn.Module,
    batches: Batches,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    forward: ForwardFn | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    shard: bool = False,
    per_sample_impl: str = "auto",
) -> Importance:
    """Compute the importance of a data set for ``model`` (SPEC §1).

    The model is in eval mode during the pass; its modes, ``requires_grad`` flags and
    gradients are restored afterwards.

    Args:
        model: the trained model.
        batches: a DataLoader (or any iterable) of ``(x, y)``/``(x, ..., y)``/dict batches.
        estimator: ``"shuffled_sq"`` (the default: ``batch_sq``'s value over shuffled batches
            of the loader's batch size, from one per-sample pass, so no loader order changes
            it), ``"batch_sq"`` (the paper's: faster, but its value depends on how the loader
            makes its batches), ``"per_sample"`` or ``"lf"`` (label-free).
        forward: ``forward(model, batch) -> (logits, targets)`` for other batch shapes.
        progress: show a progress bar.
        chunk_size: samples per ``vmap`` chunk for ``per_sample`` (default: from memory).
        per_sample_impl: ``"auto"`` (layer by layer when every parameter sits in a Linear,
            Conv1d/2d, eval-mode BatchNorm or LayerNorm, else ``torch.func.vmap``),
            ``"layers"`` or ``"vmap"``; all give the same values.
        shard: in a process group, let each rank take every world-th batch of ``batches``
            (leave False when the loader is already per-rank, e.g. a ``DistributedSampler``).
            Either way the ranks' sums and counts are all-reduced.

    Returns:
        A :class:`dampen.Importance` holding sums, counts and the model's fingerprint. A model
        wrapped in ``DistributedDataParallel`` is fingerprinted as its inner module.

    Raises:
        ValueError: for an unknown estimator, empty data or labels the model does not have.
    """
    _check_module(model)
    return measure(
        model,
        batches,
        estimator=estimator,
        forward=checked_forward(forward),
        progress=progress,
        chunk_size=chunk_size,
        shard=shard,
        per_sample_impl=per_sample_impl,
    )


@dataclass(frozen=True)
class UnlearnResult:
    """What :func:`unlearn` returns.

    Attributes:
        model: the unlearned model (a copy unless ``inplace=True``).
        method: the method's registered name.
        config: the frozen config used, defaults filled in (an SSD/ASSD ``estimator`` left
            ``None`` followed the stored importance: ``stats["estimator"]`` names it).
        stats: method-specific figures; the SSD family reports ``alpha``, ``selected``,
            ``selected_per_tensor``, ``parameters`` and ``seconds`` per phase (and ``auto``
            for ``alpha="auto"``).
        forget_importance: the SSD family's importance of the forget set, computed on the
            model before unlearning. ``importance.subtract(result.forget_importance)`` is the
            stored importance to use for the next request (see :meth:`Importance.subtract`).
    """

    model: nn.Module
    method: str
    config: Any
    stats: dict[str, Any]
    forget_importance: Importance | None = None


def unlearn(
    model: nn.Module,
    forget: Batches,
    *,
    method: str = "ssd",
    importance: Importance | None = None,
    train: Batches | None = None,
    retain: Batches | None = None,
    heldout: Batches | None = None,
    forward: ForwardFn | None = None,
    inplace: bool = False,
    check_values: bool = True,
    progress: bool = False,
    seed: int = 0,
    **config: Any,
) -> UnlearnResult:
    """Make ``model`` forget the samples in ``forget``.

    Args:
        model: the trained model; left untouched unless ``inplace=True``.
        forget: batches of the forget set Df.
        method: a name from :func:`methods`.
        importance: the stored importance of the training data (SSD family).
        train: batches of the training data, to compute that importance now instead.
        retain: batches of the retain set (baselines that need it).
        heldout: batches the model never trained on, for ``alpha="auto"``: from the forget
            set's distribution for sample forgetting (the target level), from retained
            classes for class forgetting and clean samples for the corrective kinds
            (``forget_kind="poison"``: a collapse guard; ``"label_errors"``: the candidate
            with the least loss on them is applied).
        forward: ``forward(model, batch) -> (logits, targets)`` for other batch shapes.
        inplace: change ``model`` itself instead of a copy (a copy of the module inside a
            ``DistributedDataParallel``/``DataParallel`` wrapper). The request is all-or-nothing: on
            any error (also ``KeyboardInterrupt``) the model's parameters and buffers are
            restored bit for bit.
        check_values: refuse an ``importance`` computed for other weights of this model (a
            stale one). Pass False only when the model was unlearned by dampen since the
            importance was stored (or use :meth:`Importance.rebind`).
        progress: show progress bars.
        seed: seed for anything random the method does.
        **config: the method's options (see its config class), e.g. ``alpha=10.0``.

    The call works under ``torch.no_grad()`` too: gradients are switched on inside it.

    Raises:
        ValueError, TypeError: for bad input; the model is then unchanged.
    """
    spec = registry.get(method)
    cfg = spec.make_config(config)
    _check_module(model)
    inner = unwrap(model)  # a DistributedDataParallel/DataParallel model is unlearned inside
    request = Request(
        forget=forget,
        importance=importance,
        train=train,
        retain=retain,
        heldout=heldout,
        forward=checked_forward(forward),
        original=inner,
        progress=progress,
        seed=seed,
        check_values=check_values,
    )
    with _all_or_nothing(inner, inplace):
        work = inner if inplace and spec.validates_first else copy.deepcopy(inner)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            stats = spec.run(work, request, cfg)
        if inplace and work is not inner:
            _copy_state_(inner, work)
        if inplace:
            work = model
    forget_imp = stats.pop(registry.FORGET_IMPORTANCE, None)
    return UnlearnResult(
        model=work, method=method, config=cfg, stats=stats, forget_importance=forget_imp
    )


def replay(
    model: nn.Module,
    forget: Batches,
    *,
    importance: Importance,
    stats: dict[str, Any],
    forward: ForwardFn | None = None,
    heldout: Batches | None = None,
    inplace: bool = False,
    check_values: bool = True,
) -> nn.Module:
    """Apply an SSD-family request again from its ``stats`` (e.g. loaded from a JSON file).

    Every round of ``alpha="auto"`` is applied with its recorded α on ``I_Df`` measured on the
    model as the rounds before left it, class by class for a several-class request (the
    importance of D updated in between as the request did); nothing is searched. With the same
    model, forget batches (same order and batch size) and importance this gives the request's
    weights bit for bit.

    Args:
        model: the original model; left untouched unless ``inplace=True``.
        forget: the request's forget batches.
        importance: the stored importance of the training data the request used.
        stats: ``UnlearnResult.stats`` of the request.
        forward: the request's ``forward``, if it had one.
        heldout: the request's ``heldout``, needed when a poison request pasted its trigger
            onto it (``stats["auto"]["pasted_winning"]``). A re-centred target's offset
            (``stats["auto"]["target_offset"]``) is added to the output bias as recorded.
        inplace: change ``model`` itself (restored bit for bit on any error).
        check_values: refuse an importance computed for other weights of this model, as
            :func:`unlearn` does.

    Raises:
        ValueError: for stats of another method, an importance of another estimator or
            model, or a poison request that pasted its trigger onto ``heldout`` when none (or
            another, giving other counts) is passed.
    """
    from dampen.methods.replay import replay_

    _check_module(model)
    inner = unwrap(model)
    with _all_or_nothing(inner, inplace):
        work = inner if inplace else copy.deepcopy(inner)
        with torch.enable_grad():
            replay_(
                work,
                forget,
                importance,
                stats,
                checked_forward(forward),
                check_values=check_values,
                heldout=heldout,
            )
    return model if inplace else work


def methods() -> list[str]:
    """Names of every registered unlearning method, sorted."""
    return registry.names()


def _check_module(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")


@contextlib.contextmanager
def _all_or_nothing(model: nn.Module, inplace: bool) -> Iterator[None]:
    """For an in-place request: on any error (also ``KeyboardInterrupt``) put ``model``'s
    parameters and buffers back bit for bit."""
    saved = _snapshot(model) if inplace else None
    try:
        yield
    except BaseException:
        if saved is not None:
            _restore_(model, saved)
        raise


def _snapshot(model: nn.Module) -> list[torch.Tensor]:
    """Copies of every parameter and buffer, to undo a failed in-place request."""
    with torch.no_grad():
        return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


def _restore_(model: nn.Module, saved: list[torch.Tensor]) -> None:
    """Put the snapshot back. A second Ctrl-C (or SIGTERM) during the restore does not stop it
    halfway: the restore starts over and the first interrupt is the one that propagates."""
    while True:
        try:
            with torch.no_grad():
                for t, s in zip((*model.parameters(), *model.buffers()), saved, strict=True):
                    t.copy_(s)
            return
        except (KeyboardInterrupt, SystemExit):
            continue


def _copy_state_(dst: nn.Module, src: nn.Module) -> None:
    with torch.no_grad():
        for p, q in zip(dst.parameters(), src.parameters(), strict=True):
            p.copy_(q)
        for a, b in zip(dst.buffers(), src.buffers(), strict=True):
            a.copy_(b)
