"""Leave no trace: record and restore a model's mode, ``requires_grad`` flags and gradients."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True, grad_all: bool = True) -> Iterator[None]:
    """Temporarily put ``model`` in eval mode with every parameter requiring grad.

    On exit (also after an error) every submodule's train/eval flag, every parameter's
    ``requires_grad`` and every ``.grad`` are what they were on entry.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode:
            model.eval()
        if grad_all:
            for p in params:
                p.requires_grad_(True)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def put_weights_(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` (by parameter name, e.g. saved clones) into ``model``'s parameters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
