"""Evaluation of unlearning: accuracies, membership-inference attacks, distance to retraining.

Pure metric functions live in :mod:`dampen.eval.functional`, :mod:`dampen.eval.mia`,
:mod:`dampen.eval.population` (ZRF, SVC attacks), :mod:`dampen.eval.challenge` (the NeurIPS 2023
challenge's ε score) and :mod:`dampen.eval.ulira` (U-LiRA's per-example scoring); the
model-facing loop, :func:`evaluate` and :class:`EvalReport` in :mod:`dampen.eval.report`.
"""

from dampen.eval.challenge import ChallengeScore, challenge_score, example_epsilons
from dampen.eval.confidence import logit_scaled_confidence
from dampen.eval.functional import (
    accuracy,
    activation_distance,
    correct_count,
    entropy,
    js_divergence,
)
from dampen.eval.mia import LossMIA, loss_threshold_mia, paper_mia, roc_auc, tpr_at_fpr
from dampen.eval.population import SVCMIA, modified_entropy, svc_mia, zrf
from dampen.eval.report import (
    METRICS,
    Direction,
    EvalReport,
    MetricInfo,
    Outputs,
    collect_outputs,
    evaluate,
)
from dampen.eval.ulira import (
    GaussianFit,
    ULiRAResult,
    fit_gaussians,
    likelihood_ratio,
    ulira_attack,
)

__all__ = [
    "METRICS",
    "SVCMIA",
    "ChallengeScore",
    "Direction",
    "EvalReport",
    "GaussianFit",
    "LossMIA",
    "MetricInfo",
    "Outputs",
    "ULiRAResult",
    "accuracy",
    "activation_distance",
    "challenge_score",
    "collect_outputs",
    "correct_count",
    "entropy",
    "evaluate",
    "example_epsilons",
    "fit_gaussians",
    "js_divergence",
    "likelihood_ratio",
    "logit_scaled_confidence",
    "loss_threshold_mia",
    "modified_entropy",
    "paper_mia",
    "roc_auc",
    "svc_mia",
    "tpr_at_fpr",
    "ulira_attack",
    "zrf",
]
