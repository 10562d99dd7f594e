"""The loss and the right-or-wrong of one sample, for classifiers and for token sequences.

Every gradient dampen takes and every accuracy it reads goes through here, so that one
definition serves both kinds of output:

- **classes**: logits ``[n, classes]`` and integer labels ``[n]`` (or soft labels shaped like
  the logits). A sample's loss is its cross-entropy (or, for ``objective="log_odds"``, minus
  the log-odds of its label, :func:`sample_log_odds_losses`); it is right when the arg-max is
  its label.
- **token sequences**: logits ``[n, T, vocab]`` and integer labels ``[n, T]`` where
  :data:`IGNORE_INDEX` (−100) marks positions without a target (prompt, padding). Logits and
  labels are already aligned (a causal LM's shift is done by the forward, see
  :func:`dampen.core.batches.default_forward`). A sequence's loss is the **mean cross-entropy
  over its labelled tokens**, so every sequence weighs the same whatever its length (this
  differs from the token-pooled mean Hugging Face models return). A sequence is right when
  every labelled token is the arg-max: for greedy decoding this is exact match of the answer
  (when the labels end with the end-of-sequence token). A sequence without labelled tokens has
  loss 0 and counts as right.

A batch's loss is the mean of its samples' losses.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from dampen.core.batches import check_label_range

IGNORE_INDEX = -100
"""Label value of a token position that has no target (Hugging Face's convention)."""


def is_sequence(logits: Tensor) -> bool:
    """Whether ``logits`` are per token (``[n, T, vocab]``) rather than per sample."""
    return logits.dim() == 3


def classes_of(logits: Tensor) -> int:
    """Number of outputs a label can name (classes, or the vocabulary of a sequence model)."""
    return int(logits.shape[-1])


def check_targets(logits: Tensor, targets: Tensor) -> None:
    """Raise ``ValueError`` unless ``targets`` fit ``logits`` (shape and label range)."""
    if logits.dim() == 2:
        if targets.is_floating_point():
            if targets.shape != logits.shape:
                hint = ""
                if targets.shape == logits.shape[:1]:
                    hint = f" (class labels need an integer dtype, e.g. long; got {targets.dtype})"
                raise ValueError(
                    f"soft targets must be shaped like the logits {tuple(logits.shape)}; "
                    f"got {tuple(targets.shape)}{hint}"
                )
            return
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"labels must be shaped [batch] = {tuple(logits.shape[:1])} for logits "
                f"{tuple(logits.shape)}; got {tuple(targets.shape)}"
            )
        check_label_range(targets, classes_of(logits))
        return
    if logits.dim() == 3:
        if targets.is_floating_point() or targets.shape != logits.shape[:2]:
            raise ValueError(
                f"token labels must be integers shaped [batch, tokens] = {tuple(logits.shape[:2])}"
                f" for logits {tuple(logits.shape)}; got {targets.dtype} {tuple(targets.shape)}"
            )
        check_label_range(labelled(targets), classes_of(logits))
        return
    raise ValueError(
        "expected logits shaped [batch, classes] or [batch, tokens, vocab]; "
        f"got {tuple(logits.shape)}"
    )


def labelled(targets: Tensor) -> Tensor:
    """The labels that name an output: token labels without :data:`IGNORE_INDEX`."""
    if targets.is_floating_point() or targets.dim() < 2:
        return targets
    return targets[targets != IGNORE_INDEX]


def token_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each token's cross-entropy in fp32 (``[n, T]``), 0 where the label is
    :data:`IGNORE_INDEX`; logits ``[n, T, vocab]`` aligned with ``targets``."""
    n, t, v = logits.shape
    flat = logits.float().reshape(n * t, v), targets.reshape(n * t)
    return F.cross_entropy(*flat, reduction="none", ignore_index=IGNORE_INDEX).reshape(n, t)


def sample_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each sample's loss in fp32 (``[n]``): see the module docstring."""
    if not is_sequence(logits):
        return F.cross_entropy(logits.float(), targets, reduction="none")
    return sequence_means(token_losses(logits, targets), targets)


def sequence_means(token: Tensor, targets: Tensor) -> Tensor:
    """Each sequence's mean of ``token`` (``[n, T]``) over its labelled positions (0 for a
    sequence without labels)."""
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return token.sum(dim=1) / counts.clamp(min=1).to(token.dtype)


def mean_loss(logits: Tensor, targets: Tensor, objective: str = "cross_entropy") -> Tensor:
    """The batch loss: the mean of :func:`sample_losses` (of :func:`sample_log_odds_losses`
    for ``objective="log_odds"``)."""
    if objective == "log_odds":
        return sample_log_odds_losses(logits, targets).mean()
    check_objective(objective)
    if not is_sequence(logits):
        return F.cross_entropy(logits.float(), targets)
    return sample_losses(logits, targets).mean()


def sum_loss(logits: Tensor, targets: Tensor, objective: str = "cross_entropy") -> Tensor:
    """The sum of the samples' losses (per-sample gradients of a sum are the samples')."""
    if objective == "log_odds":
        return sample_log_odds_losses(logits, targets).sum()
    check_objective(objective)
    if not is_sequence(logits):
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    return sample_losses(logits, targets).sum()


OBJECTIVES: tuple[str, ...] = ("cross_entropy", "log_odds")
"""What a label-based importance differentiates: the cross-entropy, or the negative log-odds
of the label (:func:`sample_log_odds_losses`)."""


def check_objective(objective: str) -> str:
    """Return ``objective`` if it is one of :data:`OBJECTIVES`, else raise ``ValueError``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    return objective


def token_log_odds_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Per position, minus the log-odds of the label, ``logsumexp_{c≠y} z_c − z_y`` in fp32
    (``[n]`` for classes, ``[n, T]`` for tokens, 0 where the label is :data:`IGNORE_INDEX`).

    Soft labels count their arg-max as the label. Its gradient is the cross-entropy's divided
    by ``1 − p_y``: it does not vanish when the
    label already wins with certainty. Computed from the logits, not from ``1 − p_y``, which
    rounds to 0 in fp32 once the label's margin exceeds about 17.
    """
    if targets.is_floating_point():  # soft labels: their arg-max, as in sample_wins
        targets = targets.argmax(dim=-1)
    z = logits.float()
    known = targets != IGNORE_INDEX
    y = torch.where(known, targets, torch.zeros_like(targets)).unsqueeze(-1)
    own = z.gather(-1, y).squeeze(-1)
    others = z.scatter(-1, y, float("-inf")).logsumexp(dim=-1)
    return torch.where(known, others - own, torch.zeros_like(own))


def sample_log_odds_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each sample's minus log-odds of its label (``[n]``); for sequences the mean over its
    labelled tokens, as :func:`sample_losses` averages the cross-entropy."""
    token = token_log_odds_losses(logits, targets)
    return sequence_means(token, targets) if is_sequence(logits) else token


def sample_wins(logits: Tensor, targets: Tensor) -> Tensor:
    """Per sample: is it right (arg-max equals the label; every labelled token for sequences)?

    Soft labels count their arg-max as the label.
    """
    targets = targets.to(logits.device)
    if not is_sequence(logits):
        if targets.is_floating_point():
            targets = targets.argmax(dim=1)
        return logits.argmax(dim=1) == targets
    right = (logits.argmax(dim=2) == targets) | (targets == IGNORE_INDEX)
    return right.all(dim=1)


def output_energy(logits: Tensor, targets: Tensor | None = None) -> Tensor:
    """The label-free loss of the ``lf`` estimator: the mean over samples of ``‖f(x)‖₂²``.

    For sequences, a sample's ``‖f(x)‖₂²`` is the mean over its labelled tokens (over every
    position when no labels are known).
    """
    squares = logits.float().square().sum(dim=-1)
    if not is_sequence(logits):
        return squares.mean()
    if targets is None:
        return squares.mean(dim=1).mean()
    mask = (targets.to(logits.device) != IGNORE_INDEX).to(squares.dtype)
    return ((squares * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
