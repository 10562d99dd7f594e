"""A user's own code and files for the command line: ``pkg.module:attr`` specs and weights."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def resolve(spec: str, *, what: str) -> Callable[..., Any]:
    """Import ``pkg.module:attr`` and return the callable it names.

    Raises:
        ValueError: naming ``what`` when the spec is malformed, missing or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must look like 'package.module:function'; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what}: cannot import module {module_name!r} ({e})") from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{what}: {spec!r} is not callable")
    return target


def build_batches(spec: str, *, what: str) -> Iterable[Any]:
    """Call the batch factory named by ``spec`` and check it returns an iterable of batches."""
    batches = resolve(spec, what=what)()
    try:  # iter() also takes sequences that define only __getitem__, as the library does
        iter(batches)
        usable = not isinstance(batches, (str, bytes, Mapping))
    except TypeError:
        usable = False
    if not usable:
        raise ValueError(
            f"{what} {spec!r} returned {type(batches).__name__}, not an iterable of batches "
            "(e.g. a DataLoader)"
        )
    return batches


def build_model(spec: str) -> nn.Module:
    """Call the model factory named by ``spec`` and check it returns an ``nn.Module``."""
    model = resolve(spec, what="--model")()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights_(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a state dict into ``model``: safetensors, or a torch file read with weights_only."""
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"--weights: no file at {source}")
    try:
        if source.suffix == ".safetensors":
            state = load_file(str(source))
        else:
            state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # each format raises its own error types
        raise ValueError(f"--weights: cannot read {source}: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"--weights: {source} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"--weights {source} does not fit the model: {e}") from e


def weights_writer(model: nn.Module, path: str | os.PathLike[str]) -> Callable[[str], None]:
    """A function writing ``model``'s state dict to a file (safetensors for a ``.safetensors``
    ``path``, else torch), for :func:`dampen.core.files.atomic_writes`."""
    safetensors = Path(path).suffix == ".safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    def write(tmp: str) -> None:
        if safetensors:
            save_file(state, tmp)
        else:
            torch.save(state, tmp)

    return write


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as int, float, bool or else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option must look like key=value; got {text!r}")
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw
