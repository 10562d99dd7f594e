"""Membership-inference attacks as pure functions of per-sample scores.

Two attacks: the SSD paper's entropy attack (a logistic regression on output entropy) and a
loss-threshold attack reported as ROC AUC and true-positive rate at a low false-positive rate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dampen.eval.functional import ArrayLike, to_cpu_tensor

_FPR_SLACK = 1e-12


class LossMIA(NamedTuple):
    """Result of the loss-threshold attack."""

    auc: float
    """Probability that a random member has a lower loss than a random non-member (ties 1/2)."""
    tpr_at_1fpr: float
    """Largest fraction of members caught while calling fewer than 1 % of non-members members
    (NaN, "not defined", with 100 non-members or fewer)."""


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    arr = to_cpu_tensor(x, name).numpy()
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per sample), got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` in ascending order; tied values share their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    mean_rank = last_rank - (counts - 1) / 2.0
    return mean_rank[inverse.reshape(-1)]


def roc_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """ROC AUC of "higher score means member", via the Mann–Whitney U statistic.

    Equals ``P(member score > non-member score) + P(equal) / 2``.

    Raises:
        ValueError: if either input is empty, not one-dimensional, or contains NaN.
    """
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    ranks = average_ranks(np.concatenate([pos, neg]))
    n_pos, n_neg = pos.size, neg.size
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def tpr_at_fpr(member_scores: ArrayLike, nonmember_scores: ArrayLike, max_fpr: float) -> float:
    """Best true-positive rate of a threshold rule ``score >= t`` whose FPR is **strictly
    below** ``max_fpr`` (LiRA's convention, Carlini et al. 2022).

    Thresholds run over every observed score (tied scores fall on the same side), plus the rule
    that calls nothing a member (TPR 0), so no interpolation between ROC points is done.

    Returns:
        The TPR, or NaN when the rate is not defined: with at most ``1 / max_fpr``
        non-members not one false positive fits strictly below ``max_fpr``, and the figure
        would be the TPR at FPR 0 instead.

    Raises:
        ValueError: if ``max_fpr`` is outside ``(0, 1]`` or the scores are invalid.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    pos = np.sort(_scores(member_scores, "member_scores"))
    neg = np.sort(_scores(nonmember_scores, "nonmember_scores"))
    if neg.size * max_fpr <= 1.0 + _FPR_SLACK:
        return float("nan")
    thresholds = np.unique(np.concatenate([pos, neg]))
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    allowed = fp / neg.size < max_fpr - _FPR_SLACK
    if not allowed.any():
        return 0.0
    return float(tp[allowed].max() / pos.size)


def loss_threshold_mia(forget_losses: ArrayLike, unseen_losses: ArrayLike) -> LossMIA:
    """Loss-threshold membership attack: a sample is called a member when its loss is low.

    Args:
        forget_losses: Per-sample losses on the forget set (the candidate members).
        unseen_losses: Per-sample losses on samples never trained on, ideally from the same
            distribution as the forget set.

    Returns:
        ``LossMIA(auc, tpr_at_1fpr)``; 0.5 AUC means the attacker cannot tell them apart.

    Raises:
        ValueError: if either input is empty, not one-dimensional, or contains NaN.
    """
    members = -_scores(forget_losses, "forget_losses")
    nonmembers = -_scores(unseen_losses, "unseen_losses")
    return LossMIA(
        auc=roc_auc(members, nonmembers),
        tpr_at_1fpr=tpr_at_fpr(members, nonmembers, max_fpr=0.01),
    )


def paper_mia(
    retain_entropy: ArrayLike, test_entropy: ArrayLike, forget_entropy: ArrayLike
) -> float:
    """The SSD paper's membership attack on output entropy.

    A ``LogisticRegression(class_weight="balanced")`` (lbfgs, fixed seed) learns to tell retain
    entropies (members, label 1) from test entropies (non-members, label 0); the result is the
    fraction of forget samples it calls members. Lower means more forgotten, but the target is
    the retrained model's value, not zero.

    Args:
        retain_entropy: Per-sample output entropy on the retain set.
        test_entropy: Per-sample output entropy on the test set.
        forget_entropy: Per-sample output entropy on the forget set.

    Returns:
        The fraction in ``[0, 1]`` of forget samples predicted "member".

    Raises:
        ValueError: if any input is empty, not one-dimensional, or contains NaN.
    """
    from sklearn.linear_model import LogisticRegression  # slow import, only needed here

    retain = _scores(retain_entropy, "retain_entropy")
    test = _scores(test_entropy, "test_entropy")
    forget = _scores(forget_entropy, "forget_entropy")
    features = np.concatenate([retain, test]).reshape(-1, 1)
    labels = np.concatenate([np.ones(retain.size, dtype=np.int64), np.zeros(test.size, np.int64)])
    attacker = LogisticRegression(class_weight="balanced", solver="lbfgs", random_state=0)
    attacker.fit(features, labels)
    return float(np.mean(attacker.predict(forget.reshape(-1, 1)) == 1))
