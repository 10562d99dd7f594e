"""The original-training recipe of the facts task: a tiny GPT-2 trained from scratch on CPU
until it recalls the trained people's facts.

It lives here, above :mod:`dampen.methods` (whose shared loop :func:`train_` it uses) and
:mod:`dampen.eval` (whose teacher-forced accuracy decides when to stop).

Measured on a busy 2-core machine with ``torch.set_num_threads(1)`` and the defaults
(``make_facts()``: 200 trained people, 2,400 questions): 30-35 epochs and 65-75 seconds to
≥ 99 % answer exact match on the trained people (≥ 95 % after 26 epochs), while the 40
held-out people answer 11-14 % right against a chance level of 12.5 %.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dampen.data.facts import FactsData, Person, qa_batches
from dampen.eval.answers import teacher_forced_accuracy
from dampen.methods.training import TrainLog, train_
from dampen.models.gpt import tiny_gpt2

POSITION_MARGIN = 8
"""Positions the model has beyond the longest item, room for generating a long answer."""


@dataclass(frozen=True)
class FactsRecipe:
    """How to train a tiny GPT-2 on the facts task.

    Attributes:
        n_layer: transformer blocks.
        n_embd: width; a multiple of ``n_head``.
        n_head: attention heads.
        attn_implementation: ``"eager"`` or ``"sdpa"`` (about 25 % faster on CPU).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear warm-up, after which the rate follows a cosine that
            reaches zero at ``max_epochs``.
        max_epochs: most passes over the questions.
        batch_size: questions per step.
        target_accuracy: stop once the teacher-forced answer accuracy on the trained people
            reaches this (checked every ``check_every`` epochs); ``None`` trains all
            ``max_epochs``.
        check_every: epochs between accuracy checks.
        full_text: train on every token of the question and answer (a language model of the
            whole text, whose perplexity on held-out people's text means something) rather
            than on the answer tokens only.
        seed: seed of the initial weights and of the shuffling.
    """

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    attn_implementation: str = "eager"
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: int = 3
    max_epochs: int = 150
    batch_size: int = 32
    target_accuracy: float | None = 0.99
    check_every: int = 5
    full_text: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "max_epochs", "batch_size", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {w!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        target = self.target_accuracy
        if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
            raise ValueError(f"target_accuracy must lie in (0, 1] or be None, got {target!r}")

    def lr_factor(self, epoch: int) -> float:
        """The learning rate after ``epoch`` passes, as a fraction of ``lr``."""
        warm = min(1.0, (epoch + 1) / (self.warmup_epochs + 1))
        return (
            warm * 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.max_epochs) / self.max_epochs))
        )


@dataclass(frozen=True, eq=False)
class FactsModel:
    """A trained facts model and how its training went.

    Attributes:
        model: the ``GPT2LMHeadModel``, in eval mode.
        log: the per-epoch mean losses and the steps taken.
        epochs: passes over the questions.
        train_accuracy: teacher-forced answer accuracy on the people trained on, at the end.
        reached: whether ``target_accuracy`` was reached (``False`` when it is ``None``).
        seconds: wall-clock training time, accuracy checks included.
    """

    model: nn.Module
    log: TrainLog
    epochs: int
    train_accuracy: float
    reached: bool
    seconds: float


def init_facts_model(data: FactsData, recipe: FactsRecipe) -> nn.Module:
    """A fresh tiny GPT-2 sized for ``data``'s tokenizer and items, weights from ``recipe.seed``."""
    return tiny_gpt2(
        len(data.tokenizer),
        data.max_length() + POSITION_MARGIN,
        n_layer=recipe.n_layer,
        n_embd=recipe.n_embd,
        n_head=recipe.n_head,
        seed=recipe.seed,
        pad_token_id=data.tokenizer.pad_id,
        eos_token_id=data.tokenizer.eos_id,
        attn_implementation=recipe.attn_implementation,
    )


def train_facts_model(
    data: FactsData,
    recipe: FactsRecipe | None = None,
    *,
    people: Sequence[Person] | None = None,
    progress: bool = False,
) -> FactsModel:
    """Train a fresh tiny GPT-2 on every question about ``people`` (AdamW, warm-up then cosine).

    The loss is :func:`train_`'s default: per question, the mean cross-entropy of its answer
    tokens and ``<eos>``; averaged over the batch.

    Args:
        data: the facts task.
        recipe: the hyperparameters (the defaults when ``None``).
        people: whom to train on; ``data.train_people`` when ``None`` (pass the retained
            people to retrain without the forgotten ones).
        progress: show a progress bar.

    Raises:
        ValueError: if ``people`` is empty.
    """
    recipe = recipe or FactsRecipe()
    people = data.train_people if people is None else tuple(people)
    if not people:
        raise ValueError("people must not be empty")
    start = time.perf_counter()
    items = data.items(people)
    length = data.max_length()
    batches = qa_batches(
        items,
        data.tokenizer,
        batch_size=recipe.batch_size,
        shuffle=True,
        seed=recipe.seed,
        full_text=recipe.full_text,
        length=length,
    )
    check = qa_batches(items, data.tokenizer, batch_size=256, length=length)
    model = init_facts_model(data, recipe)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    steps_per_epoch = len(batches)
    steps = 0

    def stop() -> bool:
        nonlocal steps
        steps += 1
        target = recipe.target_accuracy
        if target is None or steps % steps_per_epoch:
            return False
        if (steps // steps_per_epoch) % recipe.check_every:
            return False
        return teacher_forced_accuracy(model, check) >= target

    log = train_(
        model,
        batches,
        epochs=recipe.max_epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        progress=progress,
        desc="facts",
        stop=stop,
    )
    model.eval()
    accuracy = teacher_forced_accuracy(model, check)
    reached = recipe.target_accuracy is not None and accuracy >= recipe.target_accuracy
    return FactsModel(
        model, log, len(log.epoch_losses), accuracy, reached, time.perf_counter() - start
    )
