"""How a batch becomes logits and targets.

A batch is ``(x, y)`` or ``(x, ..., y)`` (input first, target last), or a mapping with a
``labels`` entry (the model is called as ``model(**inputs)`` and ``.logits`` is taken from its
output when present). For a Hugging Face causal language model the mapping holds
``input_ids``, ``attention_mask`` and ``labels`` (−100 where no token is to be predicted), and
the logits are shifted against the labels as the model's own loss does. Anything else needs a
``forward(model, batch) -> (logits, targets)``; see :mod:`dampen.core.losses` for what logits
and targets may be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ForwardFn = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]
"""``forward(model, batch) -> (logits, targets)``: logits ``[n, classes]`` with labels ``[n]``, or
``[n, tokens, vocab]`` with token labels ``[n, tokens]`` (see :mod:`dampen.core.losses`)."""

Batches = Iterable[Any]
"""Anything iterable that yields batches: a ``DataLoader``, a list of tuples, a generator."""


def logits_of(output: Any) -> Tensor:
    """Return the logits tensor of a model output (a tensor or an object with ``.logits``)."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; expected a tensor of logits or an "
            "object with a .logits tensor (pass forward=fn(model, batch) -> (logits, targets))"
        )
    return logits


def split_batch(batch: Any) -> tuple[Any, Tensor]:
    """Split a batch into ``(model inputs, targets)``.

    Tuples and lists give ``(x, y)`` (extra middle elements are dropped); mappings give
    ``(inputs without labels, labels)``.
    """
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise TypeError("a dict batch needs a 'labels' entry (or pass forward=...)")
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch["labels"]
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        return batch[0], batch[-1]
    raise TypeError(
        f"cannot read a batch of type {type(batch).__name__}: expected (x, y), (x, ..., y) or a "
        "dict with 'labels'; pass forward=fn(model, batch) -> (logits, targets) for other shapes"
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _input_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def class_targets(targets: Any) -> Any:
    """Integer class labels as int64 (what ``cross_entropy`` takes); anything else unchanged."""
    if (
        isinstance(targets, Tensor)
        and not targets.is_floating_point()
        and not targets.is_complex()
        and targets.dtype not in (torch.int64, torch.bool)
    ):
        return targets.long()
    return targets


def checked_forward(forward: ForwardFn | None) -> ForwardFn | None:
    """A user's ``forward`` whose output is checked to be ``(logits, targets)`` and whose
    integer targets are cast to int64; ``None`` stays ``None`` (the default forward).

    ``targets`` may be ``None`` for unlabeled data (the loss-free estimator needs none)."""
    if forward is None:
        return None
    if not callable(forward):
        raise TypeError(f"forward must be callable; got {type(forward).__name__}")
    if getattr(forward, "__dampen_checked__", False):
        return forward

    def run(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        out = forward(model, batch)
        if not (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and isinstance(out[0], Tensor)
            and (out[1] is None or isinstance(out[1], Tensor))
        ):
            got = type(out).__name__
            if isinstance(out, (tuple, list)):
                got = f"{got} of {len(out)}: " + ", ".join(type(v).__name__ for v in out)
            raise TypeError(
                "forward= must return (logits, targets): a tensor and a tensor (or None for "
                f"unlabeled data); it returned {got}"
            )
        return out[0], class_targets(out[1])

    run.__dampen_checked__ = True  # type: ignore[attr-defined]
    run.__wrapped__ = forward  # type: ignore[attr-defined]
    return run


def is_unlabeled(batch: Any) -> bool:
    """Whether a standard batch carries no labels: a bare tensor or a 1-tuple ``(x,)``."""
    return isinstance(batch, Tensor) or (isinstance(batch, (list, tuple)) and len(batch) < 2)


def check_label_range(targets: Tensor, classes: int) -> None:
    """Raise ``ValueError`` when integer labels fall outside ``0..classes-1``."""
    if targets.is_floating_point() or targets.numel() == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"label {bad} is outside the model's {classes} outputs (0..{classes - 1})")


def has_labels(model: nn.Module, batches: Batches, forward: ForwardFn | None) -> bool:
    """Whether the batches carry labels, read from the first batch of a re-iterable
    (:func:`is_unlabeled`); with ``forward`` its targets must not be None."""
    for batch in batches:
        if forward is not None:
            with torch.no_grad():
                return forward(model, batch)[1] is not None
        return not is_unlabeled(batch)
    return True


def default_forward(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
    """Run ``model`` on a standard batch and return ``(logits, targets)`` on the model's device.

    Floating-point tensor inputs are cast to the model's parameter dtype, so a bf16 model can be
    fed float32 data; integer labels are cast to int64.
    """
    device = model_device(model)
    inputs, targets = split_batch(batch)
    inputs = _to_device(inputs, device)
    dtype = _input_dtype(model)
    if isinstance(inputs, Tensor):
        if dtype is not None and inputs.is_floating_point() and inputs.dtype != dtype:
            inputs = inputs.to(dtype)
        output = model(inputs)
    elif isinstance(inputs, Mapping):
        output = model(**inputs)
    else:
        output = model(inputs)
    logits, targets = logits_of(output), class_targets(_to_device(targets, device))
    if logits.dim() == 3 and isinstance(targets, Tensor) and holds_causal_lm(model):
        # position t predicts token t + 1, as the model's own loss shifts it
        return logits[:, :-1], targets[:, 1:]
    return logits, targets


def holds_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is, or wraps (e.g. a ``LightningModule``), a causal language model."""
    return any(is_causal_lm(m) for m in model.modules())


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face decoder-only language model (its logits at position
    ``t`` predict the token at ``t + 1``): it can generate and is not an encoder-decoder
    (transformers >= 4.50, where masked LMs no longer claim they can generate)."""
    can_generate = getattr(model, "can_generate", None)
    config = getattr(model, "config", None)
    return (
        callable(can_generate)
        and bool(can_generate())
        and not getattr(config, "is_encoder_decoder", False)
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def batch_size_of(targets: Tensor) -> int:
    """Number of samples in a batch, read from its targets."""
    return int(targets.shape[0]) if targets.dim() > 0 else 1


def loader_batch_size(loader: Batches) -> int | None:
    """The nominal batch size of a ``DataLoader`` (``None`` when unknown)."""
    size = getattr(loader, "batch_size", None)
    return int(size) if isinstance(size, int) else None


def logits_only(model: nn.Module, batch: Any, forward: ForwardFn | None) -> Tensor:
    """Logits of a batch that may carry no labels (a bare tensor or a 1-tuple ``(x,)``)."""
    if forward is None:
        if isinstance(batch, Tensor):
            batch = (batch,)
        if isinstance(batch, (list, tuple)) and len(batch) == 1:
            x = _to_device(batch[0], model_device(model))
            dtype = _input_dtype(model)
            if isinstance(x, Tensor) and dtype is not None and x.is_floating_point():
                x = x.to(dtype)
            return logits_of(model(x))
        return default_forward(model, batch)[0]
    return forward(model, batch)[0]


def _rebuilt(value: list[Any] | tuple[Any, ...], items: Iterable[Any]) -> Any:
    """A list or tuple of ``value``'s type holding ``items`` (named tuples take them as
    arguments)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*items)
    return type(value)(items)


def take_rows(value: Any, mask: Tensor, n: int) -> Any:
    """The rows ``mask`` selects of every tensor in a batch whose leading size is ``n``."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[mask.to(value.device)]
    if isinstance(value, Mapping):
        return {k: take_rows(v, mask, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _rebuilt(value, (take_rows(v, mask, n) for v in value))
    return value


def detached(value: Any) -> Any:
    """A batch whose every tensor is detached from any graph it carries (the batch itself,
    of whatever type, when none carries one)."""
    if not _carries_graph(value):
        return value
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, Mapping):
        return {k: detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _rebuilt(value, (detached(v) for v in value))
    return value


def _carries_graph(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.requires_grad
    if isinstance(value, Mapping):
        return any(_carries_graph(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_carries_graph(v) for v in value)
    return False


def cat_rows(parts: list[Any]) -> Any:
    """Batches of one structure joined along their leading dimension.

    Raises:
        ValueError: when a tensor's rows differ in shape from one batch to another (e.g.
            sequences padded to each batch's longest).
    """
    first = parts[0]
    if isinstance(first, Tensor) and first.dim() > 0:
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"rows of different shapes cannot be joined: {sorted(shapes)}")
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: cat_rows([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return _rebuilt(first, (cat_rows([p[i] for p in parts]) for i in range(len(first))))
    return first


def slice_rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor (with a dimension) in a batch."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return value[start:stop]
    if isinstance(value, Mapping):
        return {k: slice_rows(v, start, stop) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _rebuilt(value, (slice_rows(v, start, stop) for v in value))
    return value
