"""U-LiRA (Hayes et al. 2024): per-example attacks against models that never saw the example.

Protocol (``dampen ulira --preset ulira-digits``):

1. Every training example is put in exactly half of ``K`` shadow training sets (seeded).
2. A fixed random set of ``candidates`` training examples is the forget pool; shadow ``k``
   forgets the candidates it trained on (``F_k``, about half of them).
3. Per shadow: the original (trained on its half with the recipe, cached), the retrained
   reference (its half minus ``F_k``, cached), and per method the unlearned model. The SSD
   family uses the importance of the shadow's own half, computed once and cached.
4. Leave one out: each shadow ``t`` in turn is the target. From the other shadows that had the
   candidate in their forget set, per candidate, a Gaussian of the logit-scaled confidence of
   their unlearned models ("in") and one of their retrained references ("out"; Hayes et al.:
   the negatives the attack sees are retrained models, so "out" is fitted on retrained ones,
   not on originals that never saw the example). Target pairs: ``F_t`` under ``t``'s unlearned
   model (label 1) and under ``t``'s retrained reference (label 0), scored by the likelihood
   ratio. The target's own models never enter a fit.
5. Attack accuracy (threshold 0 on the log ratio) and AUC over all pairs; 0.5 is ideal.

The ``original`` row is the sanity check: the original target (no unlearning) against its
retrained reference, "in" fitted on the other shadows' originals. Below about 60 % the setting
cannot show anything: no row can then be told from retraining, whatever it did.

Resumable: every shadow's record (confidences and metrics per row) is written to
``out_dir/shadows/<k>.json`` as soon as it is done; trainings and importances are cached.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch

from dampen.bench.config import SSD_FAMILY, DataSpec, MethodSpec, ModelSpec
from dampen.bench.runner import (
    load_data,
    machine_info,
    torch_threads,
    write_json,
)
from dampen.core.files import atomic_write_text
from dampen.eval.ulira import fit_gaussians, likelihood_ratio, ulira_attack
from dampen.proofs.common import (
    DIGITS_CNN,
    FMNIST_MEMORISED,
    FMNIST_MEMORISED_TEXT,
    FMNIST_MLP,
    ProofConfig,
    cached_importance,
    confidences,
    digest,
    population_metrics,
    random_forgetting_rows,
    run_method,
)
from dampen.recipe import cache_key, cached_train, init_model

REFERENCE = "original"
"""The sanity-check row: no unlearning at all."""


@dataclass(frozen=True)
class ULiRAConfig(ProofConfig):
    """A U-LiRA run (the shared fields: :class:`~dampen.proofs.common.ProofConfig`).

    Attributes:
        shadows: ``K``, even, at least 6; every shadow is also a target once.
        candidates: size of the forget pool (each shadow forgets the ones it trained on).
        global_variance: pool the Gaussians' variance over examples (LiRA's advice for few
            shadows) instead of one per example.
    """

    shadows: int = 32
    candidates: int = 64
    global_variance: bool = False
    out_dir: str = "runs/ulira"

    def __post_init__(self) -> None:
        if isinstance(self.shadows, bool) or not isinstance(self.shadows, int):
            raise TypeError(f"shadows must be an int, got {self.shadows!r}")
        if self.shadows < 6 or self.shadows % 2:
            raise ValueError(f"shadows must be even and >= 6, got {self.shadows}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int):
            raise TypeError(f"candidates must be an int, got {self.candidates!r}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be positive, got {self.candidates}")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels) or REFERENCE in labels or "retrain" in labels:
            raise ValueError(
                f"methods must have unique labels other than original/retrain: {labels}"
            )


def membership(n: int, shadows: int, seed: int) -> np.ndarray:
    """``[n, shadows]`` bool: each example in exactly half of the shadows (seeded)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n, shadows)), axis=1)
    return order < shadows // 2


def _method_payload(spec: MethodSpec) -> dict[str, Any]:
    return {"method": spec.method, "options": dict(spec.options), "heldout": spec.heldout}


def _shadow_record(
    config: ULiRAConfig,
    k: int,
    member: np.ndarray,
    pool: torch.Tensor,
    data: Any,
    previous: dict[str, Any] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    recipe = config.model.train_config()
    train = torch.from_numpy(np.nonzero(member[:, k])[0])
    forget = pool[torch.from_numpy(member[pool.numpy(), k])]
    retain = train[~torch.isin(train, forget)]
    seed = 1000 * config.seed + k
    record: dict[str, Any] = previous or {"shadow": k, "rows": {}}
    cache = config.cache_path
    t = perf_counter()
    original = cached_train(recipe, data, train, seed, cache, device=config.device)
    retrained = cached_train(recipe, data, retain, seed, cache, device=config.device)
    incompetent = init_model(recipe, data, seed=10_000 + seed, device=config.device)
    rows: dict[str, Any] = record["rows"]
    for label, model in ((REFERENCE, original), ("retrain", retrained)):
        if label not in rows:
            rows[label] = {
                "confs": confidences(model, data, pool),
                "metrics": population_metrics(model, data, retain, forget, incompetent, seed=seed),
            }
    model_key = cache_key(recipe, data, train, seed)
    imps: dict[str, Any] = {}
    for spec in config.methods:
        payload = _method_payload(spec)
        if spec.label in rows and rows[spec.label].get("digest") == digest(payload):
            continue
        imp = None
        if spec.method in SSD_FAMILY:
            estimator = str(spec.estimator(spec.options))
            if estimator not in imps:
                imps[estimator] = cached_importance(
                    original,
                    data,
                    train,
                    model_key=model_key,
                    estimator=estimator,
                    batch_size=config.batch_size,
                    cache_dir=cache,
                )
            imp = imps[estimator]
        model, stats = run_method(
            spec,
            original,
            data,
            train=train,
            forget=forget,
            seed=seed,
            batch_size=config.batch_size,
            importance=imp,
        )
        rows[spec.label] = {
            "digest": digest(payload),
            "confs": confidences(model, data, pool),
            "metrics": population_metrics(model, data, retain, forget, incompetent, seed=seed),
            "stats": stats,
        }
    record["seconds"] = record.get("seconds", 0.0) + perf_counter() - t
    log(f"shadow {k}: {len(forget)} forgotten, {perf_counter() - t:.1f} s")
    return record


def _setup_digest(config: ULiRAConfig) -> str:
    return digest(
        {
            "data": dataclasses.asdict(config.data),
            "model": dataclasses.asdict(config.model),
            "shadows": config.shadows,
            "candidates": config.candidates,
            "seed": config.seed,
            "batch": config.batch_size,
            "format": 1,
        }
    )


def attack(
    records: list[dict[str, Any]],
    member: np.ndarray,
    label: str,
    *,
    global_variance: bool = False,
) -> dict[str, float]:
    """Leave-one-out U-LiRA of one row over the shadow records (see the module docstring)."""
    k_all = len(records)
    confs = np.array([r["rows"][label]["confs"] for r in records])  # [K, m]
    refs = np.array([r["rows"]["retrain"]["confs"] for r in records])
    inside = member.T  # [K, m]: shadow k trained on candidate j, so j is in its forget set
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    per_target: list[float] = []
    for t in range(k_all):
        others = np.arange(k_all) != t
        fit = fit_gaussians(
            confs[others],
            refs[others],
            inside[others],
            inside[others],
            global_variance=global_variance,
        )
        examples = np.nonzero(inside[t])[0]
        if examples.size == 0:
            continue
        p = likelihood_ratio(fit, confs[t, examples], examples)
        n = likelihood_ratio(fit, refs[t, examples], examples)
        pos.append(p)
        neg.append(n)
        per_target.append(ulira_attack(p, n).accuracy)
    result = ulira_attack(np.concatenate(pos), np.concatenate(neg))
    return {
        "accuracy": result.accuracy,
        "auc": result.auc,
        "pairs": result.pairs,
        "accuracy_std_over_targets": float(np.std(per_target, ddof=1)),
    }


def run_ulira(
    config: ULiRAConfig,
    *,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or load) the shadows, unlearn, attack; write ``results.json`` and ``results.md``.

    Returns:
        The results as written to ``out_dir/results.json``.
    """
    say = log or (lambda _m: None)
    with torch_threads(config.threads):
        data = load_data(config.data)
        n = len(data.train)
        member = membership(n, config.shadows, config.seed)
        rng = np.random.default_rng(config.seed + 1)
        pool = torch.from_numpy(
            np.sort(rng.choice(n, size=min(config.candidates, n), replace=False))
        )
        setup = _setup_digest(config)
        folder = Path(config.out_dir) / "shadows"
        records = []
        for k in range(config.shadows):
            path = folder / f"{k}.json"
            previous = None
            if path.is_file():
                stored = json.loads(path.read_text())
                previous = stored if stored.get("setup") == setup else None
            record = _shadow_record(config, k, member, pool, data, previous, say)
            record["setup"] = setup
            write_json(path, record)
            # As stored (±inf and NaN become null), so that a fresh run and a resumed one
            # report the same means.
            records.append(json.loads(path.read_text()))
        attack_started = perf_counter()
        pool_member = member[pool.numpy()]  # [m, K]
        rows = [REFERENCE, *(m.label for m in config.methods)]
        table = {}
        for label in rows:
            table[label] = attack(
                records, pool_member, label, global_variance=config.global_variance
            )
        results = {
            "name": config.name,
            "description": config.description,
            "command": command,
            "machine": machine_info(),
            "config": json.loads(json.dumps(dataclasses.asdict(config))),
            # The shadows' seconds summed over every run that worked on them (a resumed or
            # repeated run adds only its own), plus this run's attack.
            "seconds": sum(float(r.get("seconds", 0.0)) for r in records)
            + (perf_counter() - attack_started),
            "forgotten_per_shadow": float(
                np.mean([pool_member[:, k].sum() for k in range(config.shadows)])
            ),
            "attack": table,
            "metrics": _mean_metrics(records, [*rows, "retrain"]),
            "distances": _mean_distances(records, rows),
            "stats": {
                label: {
                    key: float(np.nanmean([_num(r["rows"][label]["stats"][key]) for r in records]))
                    for key in ("alpha", "selected", "seconds")
                    if all(key in r["rows"][label].get("stats", {}) for r in records)
                }
                for label in rows[1:]
            },
        }
        out = Path(config.out_dir)
        write_json(out / "results.json", results, indent=1)
        atomic_write_text(out / "results.md", render_ulira(results))
        return results


def _mean_metrics(records: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, float]]:
    """Per row and metric, the mean over shadows."""
    return _shadow_means(records, labels, _metric)


def _mean_distances(
    records: list[dict[str, Any]], labels: list[str]
) -> dict[str, dict[str, float]]:
    """Per row and metric, the mean over shadows of ``|row − the shadow's retrained model|``:
    0 is ideal, whichever side of retraining a row falls on."""
    return _shadow_means(
        records,
        labels,
        lambda r, label, name: abs(_metric(r, label, name) - _metric(r, "retrain", name)),
    )


def _shadow_means(
    records: list[dict[str, Any]],
    labels: list[str],
    value: Callable[[dict[str, Any], str, str], float],
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label in labels:
        names = records[0]["rows"][label]["metrics"].keys()
        out[label] = {
            name: float(np.nanmean([value(r, label, name) for r in records])) for name in names
        }
    return out


def _metric(record: dict[str, Any], label: str, name: str) -> float:
    return _num(record["rows"][label]["metrics"][name])


def _num(value: float | None) -> float:
    """A stored number as a float: JSON keeps NaN and ±inf as null."""
    return math.nan if value is None else float(value)


def _pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def render_ulira(results: dict[str, Any]) -> str:
    """The ``results.md`` text of a U-LiRA run."""
    cfg = results["config"]
    m = results["machine"]
    ref = results["metrics"]["retrain"]
    lines = [
        f"# dampen ulira: {results['name']}",
        "",
        results.get("description", ""),
        "",
        f"- command: `{results.get('command', '')}`",
        f"- shadows: {cfg['shadows']} (each also a target, leave-one-out), forget pool "
        f"{cfg['candidates']} candidates, {results['forgotten_per_shadow']:.1f} forgotten per "
        f"shadow; per-example variance: {'pooled' if cfg['global_variance'] else 'per example'}",
        f"- machine: {m['cpu_count']} CPU cores, {m['torch_threads']} torch threads, torch "
        f"{m['torch']}; compute {results['seconds'] / 60:.1f} min over all runs "
        "(cached trainings count once)",
        "",
        "U-LiRA: accuracy and AUC (%) of the per-example likelihood-ratio attack telling the "
        "unlearned target from its retrained reference; **50 is ideal** (indistinguishable), "
        "100 is total failure. `original` = no unlearning, against its retrained reference: "
        "below about 60 % the setting cannot show anything. Population metrics are means over "
        "the shadows, each next to the retrained references' value (the target): Dr/Df/test "
        "accuracy, ZRF (1 − JS in bits to a random-init model, summed over classes), the "
        "paper's entropy MIA and the SVC attacks (share of Df called member).",
        "",
        "| method | U-LiRA acc | U-LiRA AUC | Dr | Df | test | ZRF | MIA (entropy) | "
        "SVC entropy | SVC m-entropy | SVC confidence | SVC correctness | α | selected | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, a in results["attack"].items():
        mm = results["metrics"][label]
        st = results["stats"].get(label, {})
        cells = [
            label,
            f"{_pct(a['accuracy'])} ± {_pct(a['accuracy_std_over_targets'])}",
            _pct(a["auc"]),
            _pct(mm["retain_acc"]),
            _pct(mm["forget_acc"]),
            _pct(mm["test_acc"]),
            f"{mm['zrf']:.3f}",
            _pct(mm["mia"]),
            _pct(mm["svc_entropy"]),
            _pct(mm["svc_modified_entropy"]),
            _pct(mm["svc_confidence"]),
            _pct(mm["svc_correctness"]),
            f"{st['alpha']:.3g}" if "alpha" in st else "—",
            f"{st['selected']:.0f}" if "selected" in st else "—",
            f"{st['seconds']:.2f}" if "seconds" in st else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| *retrain (target)* | 50 | 50 | "
        + " | ".join(
            [
                _pct(ref["retain_acc"]),
                _pct(ref["forget_acc"]),
                _pct(ref["test_acc"]),
                f"{ref['zrf']:.3f}",
                _pct(ref["mia"]),
                _pct(ref["svc_entropy"]),
                _pct(ref["svc_modified_entropy"]),
                _pct(ref["svc_confidence"]),
                _pct(ref["svc_correctness"]),
                "—",
                "—",
                "—",
            ]
        )
        + " |"
    )
    lines += [
        "",
        "U-LiRA acc is mean over all target pairs ± std of the per-target accuracies.",
        "",
    ]
    distances = results.get("distances")
    if distances:
        names = (
            ("Dr", "retain_acc", True),
            ("Df", "forget_acc", True),
            ("test", "test_acc", True),
            ("ZRF", "zrf", False),
            ("MIA (entropy)", "mia", True),
            ("SVC entropy", "svc_entropy", True),
            ("SVC m-entropy", "svc_modified_entropy", True),
            ("SVC confidence", "svc_confidence", True),
            ("SVC correctness", "svc_correctness", True),
        )
        lines += [
            "The same metrics as distances to each shadow's retrained model, mean over shadows "
            "of |row − retrain| (0 is ideal: looking *more* forgotten than retraining is as far "
            "off as looking less forgotten).",
            "",
            "| method | " + " | ".join(n for n, _, _ in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for label, d in distances.items():
            cells = [_pct(d[k]) if pct else f"{d[k]:.3f}" for _, k, pct in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def ulira_digits() -> ULiRAConfig:
    """Digits, small CNN (15 epochs on 718 samples, ~1.6 s per training on one thread).

    32 shadows, each also a target: 64 trainings; 64 candidates, ~32 forgotten per shadow.
    SSD (paper α = 10), ASSD, SSD ``alpha="auto"``, LF-SSD, ALF and the baselines that apply to
    random forgetting (UNSIR forgets whole classes only), with 5 epochs where they train.
    """
    return ULiRAConfig(
        name="ulira-digits",
        description="digits (1,437 train / 360 test), small CNN trained on random halves",
        data=DataSpec("digits"),
        model=DIGITS_CNN,
        methods=random_forgetting_rows(heldout=200),
        shadows=32,
        candidates=64,
        out_dir="runs/ulira-digits",
    )


def ulira_fmnist() -> ULiRAConfig:
    """Fashion-MNIST in a memorising regime, sized for 2 CPU cores (about an hour).

    4,000 training samples, each shadow trains on a random half; 64 shadows, each also a
    target: 128 trainings of ~6 s. 200 candidates, ~100 forgotten per shadow. The rows of
    :func:`~dampen.proofs.common.random_forgetting_rows` (auto with 200 held-out test samples).
    """
    return ULiRAConfig(
        name="ulira-fmnist",
        description=f"{FMNIST_MEMORISED_TEXT} on random halves: it memorises its 2,000 samples",
        data=FMNIST_MEMORISED,
        model=FMNIST_MLP,
        methods=random_forgetting_rows(heldout=200),
        shadows=64,
        candidates=200,
        out_dir="runs/ulira-fmnist",
    )


def ulira_cifar() -> ULiRAConfig:
    """CIFAR-10, ResNet18 width 64 with the paper's recipe, 64 shadows: for a GPU.

    128 trainings of 30 epochs on 25k images (about 15 GPU-hours on one A100-class card);
    a pool of 500 candidates (~250 forgotten per shadow, 1 % of a half).
    """
    return ULiRAConfig(
        name="ulira-cifar",
        description="CIFAR-10, ResNet18 (width 64, 30 epochs) trained on random halves",
        data=DataSpec("cifar10"),
        model=ModelSpec("resnet18", "resnet18", kwargs={"width": 64}, train={"epochs": 30}),
        methods=(
            MethodSpec("ssd", label="ssd (α=10)", options={"alpha": 10.0, "lambda_": 1.0}),
            MethodSpec("assd"),
            MethodSpec("ssd", label="ssd (auto)", options={"alpha": "auto"}, heldout=1000),
            MethodSpec("finetune", options={"epochs": 5}, group="baselines"),
            MethodSpec("scrub", group="baselines"),
            MethodSpec("salun", group="baselines"),
        ),
        shadows=64,
        candidates=500,
        device="cuda",
        out_dir="runs/ulira-cifar",
    )


ULIRA_PRESETS: dict[str, Callable[[], ULiRAConfig]] = {
    "ulira-digits": ulira_digits,
    "ulira-fmnist": ulira_fmnist,
    "ulira-cifar": ulira_cifar,
}
"""U-LiRA presets by name."""

__all__ = ["ULIRA_PRESETS", "ULiRAConfig", "attack", "membership", "run_ulira"]
