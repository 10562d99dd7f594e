"""Evaluation of unlearning: accuracies, membership-inference attacks, distance to retraining.

Pure metric functions live in :mod:`dampen.eval.functional` and :mod:`dampen.eval.mia`; the
model-facing loop, :func:`evaluate` and :class:`EvalReport` in :mod:`dampen.eval.report`.
"""

from dampen.eval.functional import (
    accuracy,
    activation_distance,
    correct_count,
    entropy,
    js_divergence,
)
from dampen.eval.mia import LossMIA, loss_threshold_mia, paper_mia, roc_auc, tpr_at_fpr
from dampen.eval.report import (
    METRICS,
    Direction,
    EvalReport,
    MetricInfo,
    Outputs,
    collect_outputs,
    evaluate,
)

__all__ = [
    "METRICS",
    "Direction",
    "EvalReport",
    "LossMIA",
    "MetricInfo",
    "Outputs",
    "accuracy",
    "activation_distance",
    "collect_outputs",
    "correct_count",
    "entropy",
    "evaluate",
    "js_divergence",
    "loss_threshold_mia",
    "paper_mia",
    "roc_auc",
    "tpr_at_fpr",
]
