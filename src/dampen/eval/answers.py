"""Metrics of a causal language model on question/answer text: answer exact match and perplexity.

Batches are ``{"input_ids", "attention_mask", "labels"}`` with right padding; a label of
``-100`` carries no loss. Token ``t`` is predicted from the logits at position ``t - 1`` (the
usual causal shift: ``logits[:, :-1]`` against ``labels[:, 1:]``).

The pure functions take logits and labels; the model-facing ones put the model in eval mode,
run without gradients and restore the model's previous mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dampen.core.batches import logits_of, model_device
from dampen.core.losses import IGNORE_INDEX, sample_wins, token_losses
from dampen.data.facts import QAItem, WordTokenizer


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token negative log-likelihood ``[n, T - 1]`` (fp32) of ``labels[:, 1:]`` under
    ``logits[:, :-1]``; zero where the label is ``-100``."""
    _check_shapes(logits, labels)
    return token_losses(logits[:, :-1], labels[:, 1:])


def label_mask(labels: Tensor) -> Tensor:
    """Where a shifted label is scored: ``labels[:, 1:] != -100`` (``[n, T - 1]``, bool)."""
    return labels[:, 1:] != IGNORE_INDEX


def teacher_forced_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Per sample (``[n]``, bool): every scored label token is the argmax of the logits that
    predict it (:func:`dampen.core.losses.sample_wins` after the causal shift). With answer
    labels that end in ``<eos>`` this is the exact match of greedy decoding (up to argmax
    ties).

    Raises:
        ValueError: if a sample has no scored token.
    """
    _check_shapes(logits, labels)
    if bool((label_mask(labels).sum(dim=1) == 0).any()):
        raise ValueError("every sample needs a label that is not -100 after the shift")
    return sample_wins(logits[:, :-1], labels[:, 1:])


def perplexity(model: nn.Module, batches: Iterable[Mapping[str, Tensor]]) -> float:
    """``exp(total token NLL / scored tokens)`` over every scored label token of ``batches``.

    Raises:
        ValueError: if the batches score no token.
    """
    total, count = 0.0, 0
    with _evaluating(model):
        for batch in batches:
            logits, labels = _logits(model, batch)
            total += float(token_nll(logits, labels).double().sum())
            count += int(label_mask(labels).sum())
    if count == 0:
        raise ValueError("the batches score no token")
    return math.exp(total / count)


def teacher_forced_accuracy(model: nn.Module, batches: Iterable[Mapping[str, Tensor]]) -> float:
    """Share of samples whose scored label tokens are all argmax under teacher forcing
    (:func:`teacher_forced_correct`): a cheap stand-in for :func:`answer_accuracy`.

    Raises:
        ValueError: if the batches hold no sample.
    """
    correct, n = 0, 0
    with _evaluating(model):
        for batch in batches:
            logits, labels = _logits(model, batch)
            hits = teacher_forced_correct(logits, labels)
            correct += int(hits.sum())
            n += int(hits.numel())
    if n == 0:
        raise ValueError("the batches hold no sample")
    return correct / n


def generate_answers(
    model: nn.Module,
    items: Sequence[QAItem],
    tokenizer: WordTokenizer,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
) -> tuple[str, ...]:
    """Greedy answers to each item's question: tokens are appended one at a time (argmax)
    until ``<eos>`` or ``max_new_tokens``; the text before ``<eos>`` is returned.

    Prompts are batched by equal length, so no padding is needed. Special tokens generated
    before ``<eos>`` stay in the text (``"<pad>"``), so they never match an answer. Generation
    also stops where the model runs out of positions (``config.n_positions`` or
    ``config.max_position_embeddings``, when it has one).

    Args:
        model: a causal LM called as ``model(input_ids=..., attention_mask=...)``.
        items: the questions.
        tokenizer: the tokenizer of the items.
        max_new_tokens: most tokens to generate; the longest true answer plus its ``<eos>``
            when ``None`` (a longer output cannot match).
        batch_size: prompts per forward pass.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    prompts = [tokenizer.encode(item.question) for item in items]
    if max_new_tokens is None:
        max_new_tokens = 1 + max((len(tokenizer.encode(i.answer)) for i in items), default=0)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    answers = [""] * len(items)
    device = model_device(model)
    limit = _positions(model)
    with _evaluating(model):
        for length, positions in by_length.items():
            steps = max_new_tokens if limit is None else min(max_new_tokens, limit - length + 1)
            if steps < 1:
                raise ValueError(
                    f"a prompt of {length} tokens exceeds the model's {limit} positions"
                )
            for start in range(0, len(positions), batch_size):
                chunk = positions[start : start + batch_size]
                ids = torch.tensor([prompts[i] for i in chunk], dtype=torch.int64, device=device)
                new = _greedy(model, ids, steps, tokenizer.eos_id)
                for i, row in zip(chunk, new.tolist(), strict=True):
                    if tokenizer.eos_id in row:
                        row = row[: row.index(tokenizer.eos_id)]
                    answers[i] = tokenizer.decode(row, skip_special=False)
    return tuple(answers)


def answer_accuracy(
    model: nn.Module,
    items: Sequence[QAItem],
    tokenizer: WordTokenizer,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
) -> float:
    """Exact match of the greedy answer (:func:`generate_answers`) with the true answer.

    Raises:
        ValueError: if ``items`` is empty.
    """
    if not items:
        raise ValueError("items must not be empty")
    answers = generate_answers(
        model, items, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return sum(a == item.answer for a, item in zip(answers, items, strict=True)) / len(items)


def _greedy(model: nn.Module, ids: Tensor, steps: int, eos_id: int) -> Tensor:
    """The ``[n, <= steps]`` tokens greedily appended to ``ids``; rows that have produced
    ``<eos>`` are padded with it, and generation stops once every row has."""
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    out: list[Tensor] = []
    for _ in range(steps):
        logits = logits_of(model(input_ids=ids, attention_mask=torch.ones_like(ids)))
        token = logits[:, -1].argmax(dim=-1).masked_fill(done, eos_id)
        out.append(token)
        done |= token == eos_id
        if bool(done.all()):
            break
        ids = torch.cat([ids, token[:, None]], dim=1)
    return torch.stack(out, dim=1)


def _positions(model: nn.Module) -> int | None:
    """The longest input the model reads, from its config (``None`` when unknown)."""
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _logits(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    device = model_device(model)
    if "labels" not in batch or "input_ids" not in batch:
        raise TypeError("a batch needs 'input_ids' and 'labels' (and may have 'attention_mask')")
    inputs: dict[str, Any] = {"input_ids": batch["input_ids"].to(device)}
    if "attention_mask" in batch:
        inputs["attention_mask"] = batch["attention_mask"].to(device)
    return logits_of(model(**inputs)), batch["labels"].to(device)


def _check_shapes(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits must be [n, T, vocab] and labels [n, T]; got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients; the model's previous mode is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
