"""Importance estimators (SPEC §1): passes over data that sum squared or absolute gradients.

Each pass returns raw *sums* and *counts* so results from shards or later updates add up
exactly; :class:`dampen.importances.store.Importance` divides them into means.

- ``batch_sq``: per batch b, ``(dL_b/dθ)²`` with L_b the batch's mean cross-entropy (for token
  sequences the mean over sequences of each one's mean token loss, see
  :mod:`dampen.core.losses`); the unit counted is the batch.
- ``per_sample``: per sample s, ``(dℓ_s/dθ)²`` (the diagonal empirical Fisher), computed with
  ``torch.func.vmap(grad(...))`` in chunks; the unit counted is the sample.
- ``shuffled_sq``: what ``batch_sq`` gives on average when the batches of size B are drawn
  by shuffling, ``μ² + (n − B)/(B(n − 1)) · (m₂ − μ²)`` per parameter, from the per-sample
  gradients' mean μ and mean square m₂ over n samples (a random batch's mean gradient has
  mean μ and variance ``(m₂ − μ²)/B · (n − B)/(n − 1)``). It keeps ``batch_sq``'s weight on
  the gradient the samples share, which per-sample squares dilute, but no loader order can
  change it, and its sums (of ``g`` and ``g²``, per sample) subtract exactly. The pass is
  ``per_sample``'s, adding up the gradients too; B is the loader's batch size. The default
  (:data:`DEFAULT_ESTIMATOR`).
- ``lf``: per batch, ``|d/dθ mean_s ||f(x_s)||₂²|`` on the logits f; needs no labels.

``objective="log_odds"`` makes the label-based estimators differentiate minus the log-odds
of the label instead of the cross-entropy (:func:`dampen.core.losses.sample_log_odds_losses`):
the importance of what makes a label win, which does not vanish on samples the model already
fits with certainty (corrective unlearning measures the identified poison with it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from dampen.core.batches import (
    Batches,
    ForwardFn,
    check_label_range,
    default_forward,
    is_unlabeled,
    logits_only,
    split_batch,
)
from dampen.core.losses import (
    check_objective,
    check_targets,
    classes_of,
    labelled,
    mean_loss,
    output_energy,
    sum_loss,
)
from dampen.core.progress import progress_bar
from dampen.importances.per_sample_layers import LayerwisePerSample, supports

Estimator = Literal["batch_sq", "per_sample", "shuffled_sq", "lf"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)

LABELLED_ESTIMATORS: tuple[str, ...] = ("batch_sq", "per_sample", "shuffled_sq")
"""Estimators of the loss: they need labels (``lf`` does not)."""

PER_SAMPLE_PASS: tuple[str, ...] = ("per_sample", "shuffled_sq")
"""Estimators computed from per-sample gradients: their unit is the sample, not the batch."""

DEFAULT_ESTIMATOR = "shuffled_sq"
"""What :func:`dampen.importance`, the CLI and the callbacks use unless told: ``batch_sq``'s
value over shuffled batches, so no loader order or batch partition decides a request."""

PAPER_ESTIMATOR = "batch_sq"
"""The SSD paper's estimator: faster (no per-sample pass), but its value depends on how the
loader makes its batches. The ``dampen bench`` rows use it unless they name another."""

#: Default memory budget for one chunk of per-sample gradients (bytes).
PER_SAMPLE_CHUNK_BYTES = 2 * 2**30


@dataclass
class Sums:
    """Raw accumulation of one pass: per-parameter sums (in :func:`accumulator_dtype` during
    the pass, :func:`stored_dtype` once :func:`rounded_`) and what they count."""

    tensors: dict[str, Tensor]
    firsts: dict[str, Tensor] | None = None
    """Per-parameter sums of the per-sample gradients themselves (``shuffled_sq`` only)."""
    units: int = 0
    samples: int = 0
    batches: int = 0
    first_batch_size: int | None = None
    labels: dict[int, int] | None = field(default_factory=dict)
    """How many samples carried each integer label; None once a batch had no readable labels."""

    def count_labels(self, targets: Tensor | None) -> None:
        """Add a batch's integer labels to the histogram (None: labels unknown from now on)."""
        if self.labels is None:
            return
        if targets is None or targets.is_floating_point() or targets.dim() != 1:
            self.labels = None
            return
        for label, count in enumerate(torch.bincount(targets.detach().cpu()).tolist()):
            if count:
                self.labels[label] = self.labels.get(label, 0) + count


def default_chunk_size(param_bytes: int) -> int:
    """Samples per ``vmap`` chunk of ``per_sample`` when none is given: each sample of a chunk
    costs about 3x the parameter bytes (measured on a GPT-2 with a 50k-token tied embedding,
    docs/results/lm-memory.txt), so 4x keeps a chunk within :data:`PER_SAMPLE_CHUNK_BYTES`."""
    return max(1, PER_SAMPLE_CHUNK_BYTES // (4 * param_bytes))


def check_estimator(name: str) -> str:
    """Return ``name`` if it is a known estimator, else raise ``ValueError``."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {name!r}")
    return name


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name: every one is a dampening candidate."""
    return dict(model.named_parameters())


def zero_sums(params: Mapping[str, Tensor]) -> Sums:
    """Fresh accumulators shaped like the parameters, in :func:`accumulator_dtype`."""
    return Sums({n: torch.zeros_like(p, dtype=accumulator_dtype(p)) for n, p in params.items()})


def accumulator_dtype(p: Tensor) -> torch.dtype:
    """fp64 on the CPU, so that no loader order decides the result: summed in fp32, the
    ``shuffled_sq`` importance of a digits CNN differed between the fixed and a shuffled
    order in 68 % of its 29k entries (by up to 2.4e-6 relative, enough to move ``alpha="auto"``
    by two samples of a class); summed in fp64 and stored in fp32, in none (nor on the
    Fashion-MNIST ResNet18 and ViT). Every sum over samples must happen in this dtype.
    Elsewhere :func:`stored_dtype` (fp64 arithmetic is slow on most GPUs, whose kernels are
    not bitwise reproducible anyway)."""
    return torch.float64 if p.device.type == "cpu" else stored_dtype(p)


def stored_dtype(p: Tensor) -> torch.dtype:
    """The dtype an importance is kept in: fp32 (fp64 for fp64 models)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def rounded_(sums: Sums, params: Mapping[str, Tensor]) -> Sums:
    """``sums`` with its tensors in :func:`stored_dtype` (in place; returned)."""
    sums.tensors = {n: t.to(stored_dtype(params[n])) for n, t in sums.tensors.items()}
    if sums.firsts is not None:
        sums.firsts = {n: t.to(stored_dtype(params[n])) for n, t in sums.firsts.items()}
    return sums


def accumulate(
    model: nn.Module,
    batches: Batches,
    estimator: str,
    *,
    forward: ForwardFn | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    sums: Sums | None = None,
    per_sample_impl: str = "auto",
    objective: str = "cross_entropy",
) -> Sums:
    """Run one pass of ``estimator`` over ``batches`` and add into ``sums`` (new when None).

    The caller is responsible for the model's mode and ``requires_grad`` flags
    (see :func:`dampen.core.state.preserved`). ``per_sample_impl`` picks how ``per_sample`` is
    computed: ``"layers"`` (hooks on common layers, see
    :mod:`dampen.importances.per_sample_layers`), ``"vmap"`` (``torch.func``, any model) or
    ``"auto"`` (layers when the model qualifies and no ``chunk_size`` is forced).
    ``objective`` is what the label-based estimators differentiate (see the module docstring).
    """
    check_estimator(estimator)
    if check_objective(objective) != "cross_entropy" and estimator == "lf":
        raise ValueError(f"the lf estimator uses no labels: objective={objective!r} does not apply")
    params = named_parameters(model)
    if not params:
        raise ValueError("the model has no parameters")
    acc = sums if sums is not None else zero_sums(params)
    if estimator == "shuffled_sq" and acc.firsts is None:
        acc.firsts = {n: torch.zeros_like(t) for n, t in acc.tensors.items()}
    bar = progress_bar(batches, enabled=progress, desc=f"importance ({estimator})")
    if estimator in PER_SAMPLE_PASS:
        if per_sample_impl not in ("auto", "layers", "vmap"):
            raise ValueError(f"per_sample_impl must be auto, layers or vmap; got {per_sample_impl}")
        layerwise = per_sample_impl == "layers" or (
            per_sample_impl == "auto" and chunk_size is None and supports(model)
        )
        if layerwise:
            _layerwise_pass(model, bar, forward, acc, objective)
            return acc
        step = _PerSampleStep(model, params, forward, chunk_size, objective)
        for batch in bar:
            step(batch, acc)
            acc.count_labels(_plain_labels(batch, forward))
        return acc
    # Squares are folded in as each gradient is produced and the gradient dropped at once, so
    # at most a layer's gradients exist at a time (not a whole copy of the parameters).
    handles = [
        p.register_post_accumulate_grad_hook(_folder(acc.tensors[n], estimator))
        for n, p in params.items()
    ]
    for p in params.values():
        p.grad = None
    try:
        for batch in bar:
            if estimator == "lf":
                logits, labels = _lf_outputs(model, batch, forward)
                loss = output_energy(logits, labels if logits.dim() == 3 else None)
            else:
                logits, labels = (forward or default_forward)(model, batch)
                check_targets(logits, labels)
                loss = mean_loss(logits, labels, objective)
            n = int(logits.shape[0])
            if n == 0:
                continue
            acc.count_labels(labels)
            loss.backward()
            _count(acc, units=1, samples=n)
    finally:
        for h in handles:
            h.remove()
    return acc


def _folder(target: Tensor, estimator: str) -> Callable[[Tensor], None]:
    """A post-accumulate-grad hook adding ``g²`` (``|g|`` for ``lf``) into ``target``."""

    def fold(param: Tensor) -> None:
        grad = param.grad
        if grad is None:
            return
        g = grad.to(target.dtype)
        if estimator == "lf":
            target.add_(g.abs_() if g is not grad else g.abs())
        else:
            target.addcmul_(g, g)
        param.grad = None

    return fold


def _layerwise_pass(
    model: nn.Module,
    batches: Iterable[Any],
    forward: ForwardFn | None,
    acc: Sums,
    objective: str,
) -> None:
    """Per-sample squares (and sums, when ``acc.firsts`` is kept) from layer inputs and output
    gradients (one backward per batch)."""
    step = LayerwisePerSample(model)
    firsts = None if acc.firsts is None else acc.firsts.__getitem__
    fn = forward or default_forward
    sizes: list[int] = []

    def loss_of(batch: Any) -> Tensor:
        logits, targets = fn(model, batch)
        check_targets(logits, targets)
        sizes.append(int(logits.shape[0]))
        acc.count_labels(targets)
        return sum_loss(logits, targets, objective)

    for batch in batches:
        sizes.clear()
        step(batch, loss_of, acc.tensors.__getitem__, firsts)
        if sizes and sizes[0]:
            _count(acc, units=sizes[0], samples=sizes[0])


def _plain_labels(batch: Any, forward: ForwardFn | None) -> Tensor | None:
    """The integer labels of a standard batch without running the model (None if unknown)."""
    if forward is not None or is_unlabeled(batch):
        return None
    try:
        labels = split_batch(batch)[1]
    except TypeError:
        return None
    return labels if isinstance(labels, Tensor) else None


def _lf_outputs(model: nn.Module, batch: Any, forward: ForwardFn | None) -> tuple[Tensor, Any]:
    """Logits and, when known without a user's forward, the labels (aligned with the logits)."""
    if forward is None and not is_unlabeled(batch):
        return default_forward(model, batch)
    return logits_only(model, batch, forward), _plain_labels(batch, forward)


def _count(acc: Sums, *, units: int, samples: int) -> None:
    acc.units += units
    acc.samples += samples
    acc.batches += 1
    if acc.first_batch_size is None:
        acc.first_batch_size = samples


class _ForwardModule(nn.Module):
    """Wraps ``model`` so that ``functional_call`` can run a user's ``forward(model, batch)``."""

    def __init__(self, model: nn.Module, forward: ForwardFn | None) -> None:
        super().__init__()
        self.model = model
        self.fn = forward or default_forward

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        return self.fn(self.model, batch)


def _leading_size(batch: Any) -> int:
    leaves = _tensor_leaves(batch)
    if not leaves:
        raise TypeError("per_sample needs a batch holding tensors with a leading batch dimension")
    return int(leaves[0].shape[0])


def _tensor_leaves(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value] if value.dim() > 0 else []
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensor_leaves(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensor_leaves(v)]
    return []


def _in_dims(value: Any, n: int) -> Any:
    """vmap ``in_dims`` for a batch: 0 for tensors with ``n`` rows, None for everything else."""
    if isinstance(value, Tensor):
        return 0 if value.dim() > 0 and value.shape[0] == n else None
    if isinstance(value, Mapping):
        return {k: _in_dims(v, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_in_dims(v, n) for v in value)
    return None


def _slice(value: Any, n: int, start: int, stop: int) -> Any:
    if isinstance(value, Tensor):
        return value[start:stop] if value.dim() > 0 and value.shape[0] == n else value
    if isinstance(value, Mapping):
        return {k: _slice(v, n, start, stop) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_slice(v, n, start, stop) for v in value)
    return value


def _unsqueeze(value: Any, dims: Any) -> Any:
    if isinstance(value, Tensor):
        return value.unsqueeze(0) if dims == 0 else value
    if isinstance(value, Mapping):
        return {k: _unsqueeze(v, dims[k]) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unsqueeze(v, d) for v, d in zip(value, dims, strict=True))
    return value


class _PerSampleStep:
    """Adds ``sum_s (dℓ_s/dθ)²`` of one batch into the accumulators, chunk by chunk (and
    ``sum_s dℓ_s/dθ`` when ``acc.firsts`` is kept)."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, nn.Parameter],
        forward: ForwardFn | None,
        chunk_size: int | None,
        objective: str = "cross_entropy",
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        self.wrapper = _ForwardModule(model, forward)
        self.live = params
        self.params = {f"model.{n}": p.detach() for n, p in params.items()}
        self.vectorised = True
        param_bytes = sum(p.numel() * 4 for p in params.values())
        self.chunk_size = chunk_size or default_chunk_size(param_bytes)
        self.classes: int | None = None
        self.objective = objective

    def _loss(self, params: dict[str, Tensor], sample: Any, dims: Any) -> Tensor:
        logits, targets = functional_call(self.wrapper, params, (_unsqueeze(sample, dims),))
        return mean_loss(logits, targets, self.objective)

    def __call__(self, batch: Any, acc: Sums) -> None:
        n = _leading_size(batch)
        if n == 0:
            return
        dims = _in_dims(batch, n)
        self._check_labels(batch)
        per_sample_grad = vmap(grad(self._loss), in_dims=(None, dims, None))
        for start in range(0, n, self.chunk_size):
            chunk = _slice(batch, n, start, min(n, start + self.chunk_size))
            if self.vectorised:
                try:
                    grads = per_sample_grad(self.params, chunk, dims)
                except RuntimeError as e:
                    if "vmap" not in str(e):
                        raise
                    self._give_up_vectorising(e)
            if not self.vectorised:
                self._one_by_one(chunk, acc)
                continue
            for key, g in grads.items():
                name = key[len("model.") :]
                target = acc.tensors[name]
                g = g.to(target.dtype)
                if acc.firsts is not None:
                    acc.firsts[name].add_(g.sum(dim=0))
                target.add_(g.square_().sum(dim=0))
        _count(acc, units=n, samples=n)

    def _give_up_vectorising(self, error: RuntimeError) -> None:
        self.vectorised = False
        warnings.warn(
            "the per-sample pass (per_sample, shuffled_sq): this model cannot run under "
            "torch.func.vmap (data-dependent control "
            f"flow: {str(error).splitlines()[0][:120]}); computing one sample at a time instead "
            "(same result, slower)",
            RuntimeWarning,
            stacklevel=4,
        )

    def _one_by_one(self, chunk: Any, acc: Sums) -> None:
        """The fallback: one backward pass per sample (exact, not vectorised)."""
        n = _leading_size(chunk)
        names = list(self.live)
        for i in range(n):
            logits, targets = self.wrapper(_slice(chunk, n, i, i + 1))
            loss = mean_loss(logits, targets, self.objective)
            grads = torch.autograd.grad(loss, [self.live[k] for k in names], allow_unused=True)
            for name, g in zip(names, grads, strict=True):
                if g is not None:
                    target = acc.tensors[name]
                    g = g.to(target.dtype)
                    target.addcmul_(g, g)
                    if acc.firsts is not None:
                        acc.firsts[name].add_(g)

    def _check_labels(self, batch: Any) -> None:
        """Check labels: a forward pass on the first batch, then a range check on the rest."""
        if self.classes is None:
            with torch.no_grad():
                logits, targets = self.wrapper(batch)
            check_targets(logits, targets)
            self.classes = classes_of(logits)
        elif self.wrapper.fn is default_forward:
            targets = split_batch(batch)[1]
            check_label_range(labelled(targets), self.classes)
