"""The stored importance: per-parameter sums and counts, saved as safetensors with metadata."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dampen._version import __version__
from dampen.core.files import atomic_write
from dampen.importances.distributed import unwrap
from dampen.importances.estimators import ESTIMATORS

FORMAT = "dampen.importance/1"
_PREFIX = "sum/"
_FIRST = "first/"  # the per-sample gradients' own sums (shuffled_sq)


@dataclass(frozen=True)
class Fingerprint:
    """Identifies a model: a hash of parameter names and shapes, one of their values and one of
    the persistent buffers' values (BatchNorm statistics shape the importance too).

    ``buffers`` is empty in files written before it existed; it is then not checked.
    """

    structure: str
    values: str
    buffers: str = ""

    @classmethod
    def of(cls, model: nn.Module, *, values: bool = True) -> Fingerprint:
        """Fingerprint ``model`` (the module inside a ``DistributedDataParallel`` wrapper);
        ``values=False`` skips hashing the weights and buffers (empty strings)."""
        model = unwrap(model)
        s = hashlib.sha256()
        v = hashlib.sha256()
        b = hashlib.sha256()
        for name, p in model.named_parameters():
            s.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
            if values:
                v.update(_raw(p))
        if not values:
            return cls(s.hexdigest()[:32], "", "")
        params = {name for name, _ in model.named_parameters()}
        for name, buf in model.state_dict(keep_vars=True).items():
            if name not in params and isinstance(buf, Tensor):
                b.update(f"{name};".encode())
                b.update(_raw(buf))
        return cls(s.hexdigest()[:32], v.hexdigest()[:32], b.hexdigest()[:32])


def _raw(t: Tensor) -> memoryview:
    return t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().data


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def _describe_mismatch(expected: Mapping[str, tuple[int, ...]], model: nn.Module) -> str:
    got = _shapes(model)
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    reshaped = [n for n in expected if n in got and got[n] != expected[n]]
    parts = []
    if missing:
        parts.append(f"parameters not in the model: {', '.join(missing[:3])}")
    if extra:
        parts.append(f"model parameters not in the importance: {', '.join(extra[:3])}")
    if reshaped:
        n = reshaped[0]
        parts.append(f"shape of {n}: importance {expected[n]}, model {got[n]}")
    return "; ".join(parts) or "parameter dtypes differ"


@dataclass(frozen=True, eq=False)
class Importance(Mapping[str, Tensor]):
    """Per-parameter importance of a data set for one model.

    Holds raw sums and the number of units they add up (batches for ``batch_sq`` and ``lf``,
    samples for ``per_sample`` and ``shuffled_sq``), so that shards and updates merge exactly.
    ``tensors()`` gives the importance that SSD uses: the means, or for ``shuffled_sq``
    ``μ² + (n − B)/(B(n − 1)) · (m₂ − μ²)`` from the mean gradient μ (``firsts / samples``), the
    mean squared gradient m₂ (``sums / samples``), n samples and the batch size B (see
    :mod:`dampen.importances.estimators`).

    Attributes:
        sums: per-parameter fp32 (or fp64) sums, keyed by parameter name.
        units: how many units the sums add up.
        samples: number of samples seen.
        batches: number of batches seen.
        estimator: ``"batch_sq"``, ``"per_sample"``, ``"shuffled_sq"`` or ``"lf"``.
        batch_size: nominal batch size of the pass (``batch_sq`` scale depends on it; it is
            ``shuffled_sq``'s B).
        fingerprint: the model the importance belongs to.
        shapes: parameter shapes, for error messages about another model.
        version: the dampen version that made it.
        label_counts: samples per integer label, when the data's labels were readable; lets
            ``alpha="auto"`` tell class forgetting (every sample of a class) from sample
            forgetting.
        firsts: per-parameter sums of the per-sample gradients (``shuffled_sq`` only).
    """

    sums: Mapping[str, Tensor]
    units: int
    samples: int
    batches: int
    estimator: str
    batch_size: int | None
    fingerprint: Fingerprint
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    version: str = __version__
    label_counts: Mapping[int, int] | None = None
    firsts: Mapping[str, Tensor] | None = None

    def __post_init__(self) -> None:
        for name in ("units", "samples", "batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Importance.{name} must be an int; got {type(value).__name__}")
        if self.units <= 0 or self.samples <= 0:
            raise ValueError("an importance needs at least one sample (the data was empty)")
        if self.batches <= 0:
            raise ValueError(f"Importance.batches must be positive; got {self.batches}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"Importance.batch_size must be positive; got {self.batch_size}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"Importance.estimator must be one of {', '.join(ESTIMATORS)}; "
                f"got {self.estimator!r}"
            )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
        ):
            raise TypeError(
                "Importance.batch_size must be an int or None; "
                f"got {type(self.batch_size).__name__}"
            )
        if not isinstance(self.fingerprint, Fingerprint):
            raise TypeError(
                "Importance.fingerprint must be a Fingerprint; "
                f"got {type(self.fingerprint).__name__}"
            )
        if not isinstance(self.sums, Mapping) or not all(
            isinstance(v, Tensor) for v in self.sums.values()
        ):
            raise TypeError("Importance.sums must map parameter names to tensors")
        if (self.firsts is not None) != (self.estimator == "shuffled_sq"):
            raise ValueError(
                "Importance.firsts (the sums of the gradients) belong to shuffled_sq and only to "
                f"it; estimator {self.estimator!r} "
                + ("lacks them" if self.firsts is None else "has no use for them")
            )
        if self.estimator == "shuffled_sq" and self.batch_size is None:
            raise ValueError("a shuffled_sq importance needs its batch size")
        if self.firsts is not None and (
            not isinstance(self.firsts, Mapping)
            or not all(isinstance(v, Tensor) for v in self.firsts.values())
        ):
            raise TypeError("Importance.firsts must map parameter names to tensors")
        if not self.shapes:
            object.__setattr__(self, "shapes", {n: tuple(t.shape) for n, t in self.sums.items()})

    # -- reading ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        """The importance itself per parameter: ``sums / units`` (for ``shuffled_sq`` see the
        class docstring)."""
        return {n: self[n] for n in self.sums}

    def __getitem__(self, name: str) -> Tensor:
        """The importance of one parameter (computed on access)."""
        if self.firsts is None:
            return self.sums[name] / self.units
        n, size = self.samples, self.batch_size or 1
        mean_sq = self.sums[name] / n
        mean = self.firsts[name].to(mean_sq.device) / n
        shared = mean * mean
        spread = (n - size) / (size * (n - 1)) if n > size else 0.0  # one batch: no spread
        return shared + spread * (mean_sq - shared).clamp_(min=0)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sums)

    def __len__(self) -> int:
        return len(self.sums)

    def numel(self) -> int:
        """Number of scalar entries (parameters) covered."""
        return sum(t.numel() for t in self.sums.values())

    def is_finite(self) -> bool:
        """True when no sum (nor sum of gradients) holds NaN or ±inf."""
        tensors = [*self.sums.values(), *(self.firsts or {}).values()]
        return all(bool(torch.isfinite(t).all()) for t in tensors)

    def to(self, device: torch.device | str) -> Importance:
        """A copy with the sums on ``device``."""
        return replace(
            self,
            sums={n: t.to(device) for n, t in self.sums.items()},
            firsts=_moved(self.firsts, device),
        )

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` unless every tensor is usable: its name and shape recorded in
        :attr:`shapes`, a float32/float64 dtype, and values finite and non-negative (sums of
        squares or absolute values cannot be anything else)."""
        names, recorded = set(self.sums), set(self.shapes)
        if names != recorded:
            missing, extra = sorted(recorded - names), sorted(names - recorded)
            raise ValueError(
                "the importance's tensors do not match its recorded parameters: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing[:3])}" if missing else "",
                        f"unexpected {', '.join(extra[:3])}" if extra else "",
                    )
                    if part
                )
            )
        for name, tensor in self.sums.items():
            if tuple(tensor.shape) != tuple(self.shapes[name]):
                raise ValueError(
                    f"importance tensor {name} has shape {tuple(tensor.shape)}; its recorded "
                    f"shape is {tuple(self.shapes[name])}"
                )
            if tensor.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"importance tensor {name} has dtype {tensor.dtype}; expected float32 or "
                    "float64"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"importance tensor {name} holds NaN or inf")
            if bool((tensor < 0).any()):
                raise ValueError(
                    f"importance tensor {name} holds negative values; an importance is a sum "
                    "of squares or absolute values (the file was altered or is not an importance)"
                )
        if self.firsts is not None:
            if set(self.firsts) != names:
                raise ValueError(
                    "the importance's gradient sums (firsts) do not match its parameters"
                )
            for name, tensor in self.firsts.items():
                if tuple(tensor.shape) != tuple(self.shapes[name]) or tensor.dtype != (
                    self.sums[name].dtype
                ):
                    raise ValueError(
                        f"the gradient sum of {name} has shape {tuple(tensor.shape)} and dtype "
                        f"{tensor.dtype}; its importance has {tuple(self.shapes[name])} and "
                        f"{self.sums[name].dtype}"
                    )
                if not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"the gradient sum of {name} holds NaN or inf")

    def check_model(self, model: nn.Module, *, check_values: bool = True) -> None:
        """Raise ``ValueError`` unless this importance was computed for ``model``.

        Every model parameter must have a tensor of the same shape here and vice versa, and
        the structure fingerprint must match. With ``check_values`` (the default) the weights
        must be the ones the importance was computed for; ``check_values=False`` accepts a
        model whose weights changed on purpose (e.g. one already unlearned by dampen).
        """
        model = unwrap(model)
        got = {n: tuple(p.shape) for n, p in model.named_parameters()}
        have = {n: tuple(t.shape) for n, t in self.sums.items()}
        if got != have:
            raise ValueError(
                "this importance belongs to another model: " + _describe_mismatch(have, model)
            )
        fp = Fingerprint.of(model, values=check_values)
        if fp.structure != self.fingerprint.structure:
            raise ValueError(
                "this importance belongs to another model: "
                + _describe_mismatch(self.shapes, model)
            )
        if check_values and not self.fingerprint.values:
            raise ValueError(
                "this importance records no weights fingerprint, so it cannot be checked "
                "against the model's weights; pass check_values=False (command line: "
                "--allow-changed-weights) if you know it belongs to them"
            )
        stale = fp.values != self.fingerprint.values or (
            bool(self.fingerprint.buffers) and fp.buffers != self.fingerprint.buffers
        )
        if check_values and stale:
            raise ValueError(
                "this importance was computed for different weights of this architecture (it is "
                "stale, or the model was trained further); pass check_values=False "
                "(command line: --allow-changed-weights) only if the model was unlearned by "
                "dampen since, or store the importance again with dampen.importance(...)"
            )

    def rebind(self, model: nn.Module) -> Importance:
        """The same importance, declared to belong to ``model``'s current weights.

        For a chain of requests: after ``result = unlearn(...)``,
        ``imp.subtract(result.forget_importance).rebind(result.model)`` is the importance to
        store for the next request, and later loads check it against the unlearned weights.
        """
        self.check_model(model, check_values=False)
        return replace(self, fingerprint=Fingerprint.of(model))

    # -- combining -------------------------------------------------------------------------
    def _check_compatible(self, other: Importance) -> None:
        if not isinstance(other, Importance):
            raise TypeError(f"can only combine with an Importance, got {type(other).__name__}")
        if other.estimator != self.estimator:
            raise ValueError(f"estimators differ: {self.estimator} and {other.estimator}")
        a, b = self.fingerprint, other.fingerprint
        if a.structure != b.structure or (a.values and b.values and a.values != b.values):
            raise ValueError("the importances belong to different models (fingerprints differ)")
        if self.estimator != "per_sample" and self.batch_size != other.batch_size:
            raise ValueError(
                f"{self.estimator} depends on the batch size: {self.batch_size} and "
                f"{other.batch_size} differ"
            )

    def merge(self, other: Importance) -> Importance:
        """Exact union of two passes over disjoint data: sums and counts add up."""
        self._check_compatible(other)
        sums = {n: s + other.sums[n].to(s.device) for n, s in self.sums.items()}
        return replace(
            self,
            sums=sums,
            firsts=_combined(self.firsts, other.firsts, 1),
            units=self.units + other.units,
            samples=self.samples + other.samples,
            batches=self.batches + other.batches,
            label_counts=_combine_labels(self.label_counts, other.label_counts, 1),
        )

    __add__ = merge

    def subtract(self, other: Importance) -> Importance:
        """Remove a pass over a subset of this data (e.g. a forget set already forgotten).

        Exact for ``per_sample`` and ``shuffled_sq``, whose sums are per sample: the result is
        the importance of the remaining samples. For ``batch_sq`` and ``lf`` the sums are per
        batch, so the result is exact only when ``other`` covered whole batches of this pass;
        otherwise it approximates the remaining data's importance (the forget set's own batches
        stand in for the mixed batches they were part of). Tiny negative round-off is clipped
        to zero.

        Raises:
            ValueError: if ``other`` is incompatible or not smaller than this importance.
        """
        self._check_compatible(other)
        if other.units >= self.units or other.samples >= self.samples:
            raise ValueError(
                f"cannot subtract {other.samples} samples ({other.units} units) from "
                f"{self.samples} samples ({self.units} units): nothing would remain"
            )
        sums = {n: (s - other.sums[n].to(s.device)).clamp_(min=0) for n, s in self.sums.items()}
        return replace(
            self,
            sums=sums,
            firsts=_combined(self.firsts, other.firsts, -1),
            units=self.units - other.units,
            samples=self.samples - other.samples,
            batches=max(self.batches - other.batches, 1),
            label_counts=_combine_labels(self.label_counts, other.label_counts, -1),
        )

    # -- files -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        """The string metadata stored beside the tensors."""
        return {
            "format": FORMAT,
            "estimator": self.estimator,
            "units": str(self.units),
            "samples": str(self.samples),
            "batches": str(self.batches),
            "batch_size": "" if self.batch_size is None else str(self.batch_size),
            "structure": self.fingerprint.structure,
            "values": self.fingerprint.values,
            "buffers": self.fingerprint.buffers,
            "shapes": json.dumps({n: list(s) for n, s in self.shapes.items()}),
            "version": self.version,
            "label_counts": ""
            if self.label_counts is None
            else json.dumps({str(k): v for k, v in sorted(self.label_counts.items())}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``path`` atomically (temp file in the same folder, then rename)."""
        return atomic_write(path, self.writer())

    def writer(self) -> Callable[[str], None]:
        """A function writing this importance to a file, for
        :func:`dampen.core.files.atomic_writes` (several files, all or none)."""
        tensors = {_PREFIX + n: t.detach().cpu().contiguous() for n, t in self.sums.items()}
        for n, t in (self.firsts or {}).items():
            tensors[_FIRST + n] = t.detach().cpu().contiguous()
        metadata = self.metadata()
        return lambda tmp: save_file(tensors, tmp, metadata=metadata)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model: nn.Module | None = None,
        check_values: bool = True,
    ) -> Importance:
        """Read an importance written by :meth:`save` (no pickle involved).

        Every tensor is validated (:meth:`validate`). When ``model`` is given the importance
        is checked against it (see :meth:`check_model`) and moved to its device; without it,
        :func:`dampen.unlearn` makes the same check.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a dampen importance or belongs to another model.
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no importance file at {source}")
        try:
            with safe_open(str(source), framework="pt") as f:
                meta = f.metadata() or {}
                stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{source} is not a readable safetensors file: {e}") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"{source} is not a dampen importance file (format {FORMAT})")
        stray = [k for k in stored if not k.startswith((_PREFIX, _FIRST))]
        if stray:
            raise ValueError(f"{source} holds tensors that are not importances: {stray[:3]}")
        sums = {k[len(_PREFIX) :]: v for k, v in stored.items() if k.startswith(_PREFIX)}
        firsts = {k[len(_FIRST) :]: v for k, v in stored.items() if k.startswith(_FIRST)}
        try:
            imp = cls(
                sums=sums,
                units=int(meta["units"]),
                samples=int(meta["samples"]),
                batches=int(meta["batches"]),
                estimator=meta["estimator"],
                batch_size=int(meta["batch_size"]) if meta["batch_size"] else None,
                fingerprint=Fingerprint(meta["structure"], meta["values"], meta.get("buffers", "")),
                shapes=_read_shapes(meta["shapes"]),
                version=meta["version"],
                label_counts=_read_labels(meta.get("label_counts", "")),
                firsts=firsts or None,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{source} has broken dampen metadata: {e}") from e
        try:
            imp.validate()
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e
        if model is not None:
            imp.check_model(model, check_values=check_values)
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            imp = imp.to(device)
        return imp


def _moved(
    tensors: Mapping[str, Tensor] | None, device: torch.device | str
) -> dict[str, Tensor] | None:
    return None if tensors is None else {n: t.to(device) for n, t in tensors.items()}


def _combined(
    a: Mapping[str, Tensor] | None, b: Mapping[str, Tensor] | None, sign: int
) -> dict[str, Tensor] | None:
    """``a + sign · b`` per tensor (the gradient sums of two compatible importances)."""
    if a is None or b is None:
        return None
    return {n: t + sign * b[n].to(t.device) for n, t in a.items()}


def _combine_labels(
    a: Mapping[int, int] | None, b: Mapping[int, int] | None, sign: int
) -> dict[int, int] | None:
    if a is None or b is None:
        return None
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    return {k: v for k, v in out.items() if v > 0}


def _read_labels(text: str) -> dict[int, int] | None:
    if not text:
        return None
    labels = json.loads(text)
    if not isinstance(labels, dict) or not all(type(v) is int and v >= 0 for v in labels.values()):
        raise ValueError("label_counts must be a JSON object of non-negative integer counts")
    return {int(k): int(v) for k, v in labels.items()}


def _read_shapes(text: str) -> dict[str, tuple[int, ...]]:
    shapes = json.loads(text)
    if not isinstance(shapes, dict) or not all(
        isinstance(s, list) and all(type(d) is int and d >= 0 for d in s) for s in shapes.values()
    ):
        raise ValueError("shapes must be a JSON object of integer lists")
    return {str(n): tuple(s) for n, s in shapes.items()}
