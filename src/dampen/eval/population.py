"""Population metrics, corrected: ZRF and the SalUn-style SVC membership attack.

Both look at the forget set as a whole; report them next to the retrained model's value, which
is the target (see :mod:`dampen.eval.ulira` for per-example evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dampen.eval.functional import ArrayLike, entropy, js_divergence, to_cpu_tensor

_CLAMP = 1e-30


def zrf(probs: ArrayLike, incompetent_probs: ArrayLike) -> float:
    """Zero Retrain Forgetting score (Chundawat et al. 2023): ``1 − mean_x JS(p(x) ‖ q(x))``.

    JS is in bits (log base 2), summed over classes per sample and averaged over samples — not
    ``kl_div(reduction="mean")``, which also divides by the number of classes. ``q`` is a
    randomly initialised ("incompetent") model of the same architecture. The value lies in
    ``[0, 1]`` as in the paper: 1 means the outputs on the forget set are the random model's,
    0 that they are one-hot where the random model's are one-hot elsewhere.

    Raises:
        ValueError: if the shapes differ, there are no samples, or the rows are not
            probabilities.
    """
    return 1.0 - js_divergence(probs, incompetent_probs, base=2.0)


def _probs_targets(probs: ArrayLike, targets: ArrayLike, name: str) -> tuple[np.ndarray, ...]:
    p = to_cpu_tensor(probs, f"{name}_probs")
    t = to_cpu_tensor(targets, f"{name}_targets", dtype=None)
    if p.dim() != 2 or t.dim() != 1 or p.shape[0] != t.shape[0] or p.shape[0] == 0:
        raise ValueError(
            f"{name}_probs must be [n, classes] and {name}_targets [n] with n >= 1, got "
            f"{tuple(p.shape)} and {tuple(t.shape)}"
        )
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name}_targets must be integer class indices, got {t.dtype}")
    tl = t.to(torch.long)
    if int(tl.min()) < 0 or int(tl.max()) >= p.shape[1]:
        raise ValueError(f"{name}_targets must lie in [0, {p.shape[1]})")
    return p.numpy(), tl.numpy()


def modified_entropy(probs: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Song & Mittal's modified entropy per sample.

    ``−(1 − p_y) log p_y − Σ_{j≠y} p_j log(1 − p_j)``: low for confident correct outputs, high
    for confident wrong ones (unlike the plain entropy, which ignores the label).
    """
    p, t = _probs_targets(probs, targets, "")
    rows = np.arange(p.shape[0])
    py = p[rows, t]
    terms = -p * np.log(np.clip(1.0 - p, _CLAMP, None))
    terms[rows, t] = 0.0
    return -(1.0 - py) * np.log(np.clip(py, _CLAMP, None)) + terms.sum(axis=1)


SVC_FEATURES: tuple[str, ...] = ("entropy", "modified_entropy", "confidence", "correctness")
"""The features of the SalUn-style attack, one attack model each."""


def svc_features(probs: ArrayLike, targets: ArrayLike) -> dict[str, np.ndarray]:
    """Per-sample attack features: entropy, modified entropy, p_y, and 1.0 if correct.

    Raises:
        ValueError: if the shapes do not fit.
    """
    p, t = _probs_targets(probs, targets, "")
    rows = np.arange(p.shape[0])
    return {
        "entropy": entropy(p).numpy(),
        "modified_entropy": modified_entropy(p, t),
        "confidence": p[rows, t],
        "correctness": (p.argmax(axis=1) == t).astype(np.float64),
    }


@dataclass(frozen=True)
class SVCMIA:
    """Share of the forget set each SVC attack calls "member" (SalUn's MIA-efficacy is 1 − it).

    The target is the retrained model's value, not zero.
    """

    entropy: float
    modified_entropy: float
    confidence: float
    correctness: float

    def to_dict(self) -> dict[str, float]:
        """``{feature: share called member}``."""
        return {name: float(getattr(self, name)) for name in SVC_FEATURES}


def svc_mia(
    retain: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
    forget: tuple[ArrayLike, ArrayLike],
    *,
    max_samples: int | None = 2000,
    seed: int = 0,
) -> SVCMIA:
    """SalUn-style SVC membership attacks, one per feature of :func:`svc_features`.

    Each attack is ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` on one standardised
    feature, trained on retain samples (members, 1) against test samples (non-members, 0); the
    larger side is subsampled (seeded) to the smaller one's size, so the classes are balanced,
    and both to at most ``max_samples``. The result is the share of forget samples predicted
    "member". Standardising uses the training features' mean and std.

    Args:
        retain: ``(probs [n, classes], targets [n])`` of retain samples.
        test: the same for unseen test samples.
        forget: the same for the forget set.
        max_samples: cap per side (``None``: no cap).
        seed: seed of the subsampling.

    Raises:
        ValueError: for malformed inputs or a bad ``max_samples``.
    """
    from sklearn.svm import SVC  # slow import, only needed here

    if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
    feats = {
        side: svc_features(*_probs_targets(p, t, side))
        for side, (p, t) in (("retain", retain), ("test", test), ("forget", forget))
    }
    rng = np.random.default_rng(seed)
    n = min(len(feats["retain"]["entropy"]), len(feats["test"]["entropy"]))
    if max_samples is not None:
        n = min(n, int(max_samples))
    pick = {
        side: np.sort(rng.choice(len(feats[side]["entropy"]), size=n, replace=False))
        for side in ("retain", "test")
    }
    out: dict[str, float] = {}
    for name in SVC_FEATURES:
        x = np.concatenate(
            [feats["retain"][name][pick["retain"]], feats["test"][name][pick["test"]]]
        )
        y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
        mean, std = float(x.mean()), float(x.std())
        if std == 0.0:  # a constant feature says nothing: the SVC would fail
            out[name] = float("nan")
            continue
        attacker = SVC(C=3, gamma="auto", kernel="rbf")
        attacker.fit(((x - mean) / std).reshape(-1, 1), y)
        target = (feats["forget"][name] - mean) / std
        out[name] = float(np.mean(attacker.predict(target.reshape(-1, 1)) == 1))
    return SVCMIA(**out)
