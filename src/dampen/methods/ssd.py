"""The SSD family: SSD, loss-free SSD, adaptive SSD and adaptive loss-free SSD (SPEC §1).

All four share one code path, :func:`ssd_`; they differ in the estimator and in how α is
chosen (fixed, or ASSD's percentile rule).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

from torch import nn

from dampen.core.batches import Batches, has_labels, loader_batch_size
from dampen.functional import adaptive_alpha, dampen_model_
from dampen.importances.estimators import DEFAULT_ESTIMATOR, LABELLED_ESTIMATORS, PER_SAMPLE_PASS
from dampen.importances.measure import measure
from dampen.importances.store import Importance
from dampen.methods._common import check_positive
from dampen.methods.auto_alpha import (
    CORRECTIVE,
    FORGET_KINDS,
    AutoOutcome,
    AutoSettings,
    accuracy,
    auto_dampen_,
    forget_kind,
)
from dampen.methods.class_batches import ClassBatches
from dampen.methods.erased import ERASED_TOLERANCE, with_erased_copies
from dampen.methods.pasted import PASTED_TOLERANCE, pasted_batches
from dampen.methods.signed import signed_candidates
from dampen.methods.winning import NotRegroupable, WinningSamples
from dampen.registry import FORGET_IMPORTANCE, Request, register


@dataclass(frozen=True)
class _Dampening:
    exponent: float = 1.0
    upper: float = 1.0

    def __post_init__(self) -> None:
        check_positive("exponent", self.exponent)
        check_positive("upper", self.upper)


@dataclass(frozen=True)
class _Alpha(_Dampening):
    """α fixed, or ``"auto"``: the least dampening that reaches a forgetting target.

    Attributes:
        alpha: selection weighting (a parameter is selected when ``I_Df > α·I_D``), or
            ``"auto"`` (see :mod:`dampen.methods.auto_alpha`). The paper used α=10 for ResNet18.
        lambda_: dampening constant in ``β = min((λ·I_D/I_Df)^exponent, upper)``.
        forget_kind: for ``"auto"``: ``"class"``, ``"samples"``, ``"poison"``,
            ``"label_errors"`` or ``"auto"`` (class or samples, read from the label
            histograms). The corrective kinds take Df with the labels it was trained with:
            ``"poison"`` removes what makes those labels win on it; ``"label_errors"``
            (with ``heldout=``) applies the dampening, in the order Df gives the parameters,
            with the least loss on the held-out samples.
        tolerance: for ``"auto"``: how far above the target forget accuracy may stay;
            ``None``: 1 %, or 5 % (``ERASED_TOLERANCE``) when erased copies join the forget
            set, 7.5 % (``PASTED_TOLERANCE``) when pasted images do.
        max_selected: for ``"auto"``: the largest share of parameters it may select (at most
            1 % for the corrective kinds without ``heldout=``).
        max_heldout_drop: for ``"auto"`` with ``heldout=`` of retained (class), unseen
            (samples) or clean (corrective) data: the largest drop of held-out accuracy
            accepted. For
            ``forget_kind="poison"`` a candidate that removes at most the smaller of
            ``max_importance_removed`` and 0.2 % of D's importance (what the data-free ceiling
            allows) passes whatever the drop (``stats["auto"]["importance_allowance"]``).
        rounds: for ``"auto"`` in class forgetting: how many times at most the forget set's
            importance is measured (again, on the dampened model) when one dampening does not
            reach the target within the guards.
        max_importance_removed: for ``"auto"`` in class forgetting without ``heldout=``, and
            in sample forgetting with it: the largest share of D's importance-weighted squared
            weights, ``Σ I_D (Δθ)² / Σ I_D θ²``, that the dampening of one class (or one
            sample request) may remove (a guard that needs no data; in a several-class
            request each class has its own share); for classes
            round r of R may remove r/R of it (up to 4× that while the forget samples keep
            their runner-up classes, ``runner_up_kept``). Corrective kinds without
            ``heldout=`` remove at most the smaller of it and 0.2 %
            (``BLIND_CORRECTIVE_REMOVED``); sample requests take it whole in their one round.
        winning_only: for ``"auto"`` with a corrective ``forget_kind``: use only the samples on
            which their trained label still wins (:mod:`dampen.methods.winning`); ``False``
            uses all of Df, as Potion's search does. In sample forgetting with ``heldout=``
            (not with ``lf``, whose importance uses no label): rank the candidates by the
            cross-entropy importance of the forget samples the model gets right
            (``stats["auto"]["winning"]`` of ``forget_samples``; the forget accuracy is still
            measured on all of Df); ``False`` ranks by all of Df, as the paper does.
        erased_copies: for ``"auto"`` with ``forget_kind="poison"`` on ``(images, labels)``
            batches: how many copies of each identified sample, each with a random rectangle
            erased, join the forget set (those on which the poison label still wins; fewer
            each when that would pass 512 in all, but one at least); ``0`` turns them off
            (:mod:`dampen.methods.erased`). Other batches (dicts, a ``forward=``, images
            under 4 pixels a side) and ``"label_errors"`` get none.
        pasted_trigger: for ``"auto"`` with ``forget_kind="poison"`` and ``heldout=``, both
            ``(images, labels)`` batches: locate the trigger on the identified images by
            occlusion and paste it onto the held-out images; those on which the poison label
            wins join the forget set (:mod:`dampen.methods.pasted`).
        recentre_target: for ``"auto"`` with ``forget_kind="poison"`` and ``heldout=``: measure
            each candidate with the target's logit raised by the least offset after which the
            held-out samples are classified as the target as often as by the original model,
            and add the chosen one's to the output layer's bias of the target
            (:mod:`dampen.methods.recentre`), so that lowering the target class everywhere
            does not pass for removing the trigger. Skipped (reported as
            ``stats["auto"]["recentred"] = False``) when the identified samples hold more
            than one label, labels are soft, logits are not ``(samples, classes)``, or no
            output bias raises the target's logit against the others by itself. The offset
            (``target_offset``) is not counted in ``selected`` or the importance removed.
            With ``forget_kind="label_errors"`` and ``heldout=`` every class the identified
            samples' labels name is re-centred (``recentred_classes``, ``class_offsets``).
        paced_path: for ``"auto"`` in class forgetting with ``heldout=`` and ``rounds`` > 1:
            search a second time from the original weights, paced by the data-free guard
            as well (round r of R may remove r/R of ``max_importance_removed``), and keep the
            path that reaches the target; when both do, the one that removed less of D's
            importance unless the other keeps more held-out accuracy by more than
            ``max_heldout_drop`` (``stats["auto"]["path"]``, ``"plain"`` or ``"paced"``;
            ``other_path`` reports the other). It doubles the search's cost and holds two
            more copies of the parameters while it runs.
        runner_up_kept: for ``"auto"`` in class forgetting without ``heldout=`` (and on the
            paced path with it): a dampening may remove up to 4× ``max_importance_removed``
            (``RUNNER_UP_WIDENING``; round r of R r/R of that) while at least this share of
            the forget samples keeps its runner-up class, the class of largest logit besides
            the forget set's, as the model ranked them before the dampening (in a
            several-class request, before this class's; ``stats["auto"]["runner_up_kept"]``).
            Forgetting a class moves its samples to their runners-up; a dampening that
            damages what the other classes use reshuffles them. Only for ``[samples,
            classes]`` logits with two classes or more besides the forget set's
            (``runner_up_floor`` is then reported); the forget batches are held in memory
            for the request. ``None``: the ceiling alone.
        signed_ranking: for ``"auto"`` in class forgetting, and in sample forgetting with
            ``heldout=`` (not with ``lf``): search a second time from the original weights
            with SSD's candidates limited to the parameters whose dampening raises the forget
            set's loss to first order (``g_i θ_i < 0``, ``g`` its gradient summed over Df,
            or over the winners a sample request ranks by, measured in each round;
            :mod:`dampen.methods.signed`), and keep the ranking that reaches the target;
            when both do, the one that keeps more held-out accuracy by more than
            ``max_heldout_drop``, else more forget samples on their runner-up class, else the
            one that removed less of D's importance (``stats["auto"]["ranking"]``, ``"ssd"``
            or ``"signed"``; ``other_ranking`` reports the other). It doubles the search's
            cost (one more backward pass over Df per round unless the importance is
            ``shuffled_sq``, which holds the sums) and holds two more copies of the parameters
            while it runs.
    """

    alpha: float | str = "auto"
    lambda_: float = 1.0
    forget_kind: str = "auto"
    tolerance: float | None = None
    max_selected: float = 0.1
    max_heldout_drop: float = 0.02
    rounds: int = 3
    winning_only: bool = True
    max_importance_removed: float = 0.025
    erased_copies: int = 32
    pasted_trigger: bool = True
    recentre_target: bool = True
    paced_path: bool = True
    runner_up_kept: float | None = 0.7
    signed_ranking: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for flag in ("pasted_trigger", "recentre_target", "paced_path", "signed_ranking"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool; got {getattr(self, flag)!r}")
        copies = self.erased_copies
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise ValueError(f"erased_copies must be an integer >= 0; got {copies!r}")
        if not isinstance(self.winning_only, bool):
            raise TypeError(f"winning_only must be a bool; got {self.winning_only!r}")
        if isinstance(self.alpha, str) and self.alpha != "auto":
            raise TypeError(f'alpha must be a number > 0 or "auto"; got {self.alpha!r}')
        if self.alpha != "auto":
            check_positive("alpha", self.alpha)
        check_positive("lambda_", self.lambda_)
        if self.forget_kind not in FORGET_KINDS:
            raise ValueError(
                f"forget_kind must be one of {', '.join(map(repr, FORGET_KINDS))}; "
                f"got {self.forget_kind!r}"
            )
        for name in ("tolerance", "max_heldout_drop", "runner_up_kept"):
            value = getattr(self, name)
            if value is None and name in ("tolerance", "runner_up_kept"):
                continue
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]; got {value!r}")
        if not isinstance(self.max_selected, (int, float)) or not 0.0 < self.max_selected <= 1.0:
            raise ValueError(f"max_selected must lie in (0, 1]; got {self.max_selected!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1; got {self.rounds!r}")
        check_positive("max_importance_removed", self.max_importance_removed)

    def auto_settings(self) -> AutoSettings:
        """The ``alpha="auto"`` options as one object."""
        return AutoSettings(
            forget_kind=self.forget_kind,
            tolerance=self.tolerance,
            max_selected=self.max_selected,
            max_heldout_drop=self.max_heldout_drop,
            rounds=self.rounds,
            winning_only=self.winning_only,
            max_importance_removed=self.max_importance_removed,
            erased_copies=self.erased_copies,
            pasted_trigger=self.pasted_trigger,
            recentre_target=self.recentre_target,
            paced_path=self.paced_path,
            runner_up_kept=self.runner_up_kept,
            signed_ranking=self.signed_ranking,
        )


@dataclass(frozen=True)
class SSDConfig(_Alpha):
    """SSD. ``alpha`` defaults to ``"auto"``; pass ``alpha=10.0`` for the paper's ResNet18 setting.

    Attributes:
        estimator: ``"shuffled_sq"`` (``batch_sq``'s value over shuffled batches: no loader
            order changes it), ``"batch_sq"`` (the paper's) or ``"per_sample"``. ``None`` (the
            default): the stored importance's, or ``"shuffled_sq"`` when D's is computed now.
    """

    estimator: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_labelled(self.estimator, "ssd", " (use method='lfssd' for the loss-free estimator)")


@dataclass(frozen=True)
class LFSSDConfig(_Alpha):
    """Loss-free SSD: the ``lf`` estimator for both importances; needs no labels (except to
    measure forget accuracy with ``alpha="auto"``)."""


@dataclass(frozen=True)
class ASSDConfig(_Dampening):
    """Adaptive SSD: λ = 1 and α from the percentile rule, nothing to tune."""

    estimator: str | None = None
    """As :class:`SSDConfig`'s."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_labelled(self.estimator, "assd", "")


def _check_labelled(estimator: str | None, method: str, hint: str) -> None:
    if estimator is not None and estimator not in LABELLED_ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {', '.join(LABELLED_ESTIMATORS)} for {method}; got "
            f"{estimator!r}{hint}"
        )


def labelled_estimator(chosen: str | None, request: Request) -> str:
    """The estimator of a labelled SSD method: the one chosen, else the stored importance's,
    else the default (D's importance computed now)."""
    if chosen is not None:
        return chosen
    stored = request.importance
    if isinstance(stored, Importance) and stored.estimator in LABELLED_ESTIMATORS:
        return stored.estimator
    return DEFAULT_ESTIMATOR


@dataclass(frozen=True)
class ALFConfig(_Dampening):
    """Adaptive loss-free SSD: ASSD's α rule with the ``lf`` estimator."""


def importance_of_train(
    model: nn.Module, request: Request, estimator: str
) -> tuple[Importance, str]:
    """The importance of D: the stored one (checked) or one computed from ``request.train``."""
    if request.importance is not None and request.train is not None:
        raise ValueError("pass either importance= or train=, not both")
    if request.importance is not None:
        imp = request.importance
        check_stored(imp, model, estimator=estimator, check_values=request.check_values)
        return imp, "stored"
    if request.train is None:
        raise ValueError(
            "SSD needs the importance of the training data: pass importance= (stored, fast) "
            "or train= (computed now)"
        )
    return compute_importance(model, request.train, estimator, request, "training data"), "computed"


def check_stored(imp: Any, model: nn.Module, *, estimator: str, check_values: bool) -> None:
    """Refuse a stored importance of D that is not one, was made with another estimator, holds
    bad values, or belongs to another model (or, with ``check_values``, other weights)."""
    if not isinstance(imp, Importance):
        raise TypeError(f"importance must be a dampen.Importance; got {type(imp).__name__}")
    if imp.estimator != estimator:
        hint = " (an 'lf' importance serves method='lfssd' or 'alf')"
        hint = hint if imp.estimator == "lf" else ""
        raise ValueError(
            f"the importance was computed with estimator {imp.estimator!r}; "
            f"this method needs {estimator!r}{hint}"
        )
    try:
        imp.validate()  # finite, non-negative, shapes as recorded
    except ValueError as e:
        raise ValueError(f"the importance of the training data: {e}") from None
    imp.check_model(model, check_values=check_values)


def compute_importance(
    model: nn.Module,
    batches: Any,
    estimator: str,
    request: Request,
    what: str,
    objective: str = "cross_entropy",
    batch_size: int | None = None,
) -> Importance:
    """One importance pass for a method: caller's state preserved, ranks combined."""
    return measure(
        model,
        batches,
        estimator=estimator,
        forward=request.forward,
        progress=request.progress,
        hash_values=False,
        what=what,
        objective=objective,
        batch_size=batch_size,
    )


def shuffled_batch_size(imp_d: Importance) -> int | None:
    """The batch size a forget set's importance must record to be compared with ``imp_d``:
    D's, for ``shuffled_sq`` (its B; the forget loader's own batches do not matter)."""
    return imp_d.batch_size if imp_d.estimator == "shuffled_sq" else None


def forget_objective(estimator: str, kind: str | None) -> str:
    """What the forget set's importance differentiates in the search of ``alpha="auto"``
    (``kind``: the request's resolved forget kind; ``None`` for a fixed or adaptive α).

    Class forgetting and the corrective kinds measure minus the log-odds of the trained labels
    (not with ``lf``, which uses no labels): a class or a poison the model fitted with near
    certainty has vanishing cross-entropy gradients (they carry the factor ``1 − p_y``), so
    the cross-entropy's ``I_Df`` comes from the few samples the model is least sure of.
    Measured on the Fashion-MNIST ResNet18 with 2 % poison, 10 % of it identified (20
    samples): with the cross-entropy, selecting 10 % of the parameters left every identified
    sample on the trigger's label; with the log-odds, 0.75 % of them healed 93 % of the
    backdoor. In class forgetting, on the digits CNNs (every class, three seeds, plain calls),
    it took the classes forgotten with Df ≤ 2 % and Dr at most 1 point down from 48 to 53 of
    60 without ``heldout=`` and from 52 to 56 with it. Sample forgetting keeps the paper's
    cross-entropy, as fixed and adaptive α do.
    """
    labelled = kind == "class" or kind in CORRECTIVE
    return "log_odds" if labelled and estimator != "lf" else "cross_entropy"


def _forget_importance(
    model: nn.Module,
    request: Request,
    estimator: str,
    what: str,
    objective: str = "cross_entropy",
    batch_size: int | None = None,
) -> Importance:
    """The importance of the forget set for ``model`` as it is now (checked finite)."""
    imp_f = compute_importance(
        model, request.forget, estimator, request, what, objective, batch_size
    )
    if not imp_f.is_finite():
        raise ValueError(f"the importance of the {what} holds NaN or inf")
    return imp_f


def _ranked_by_winners(
    model: nn.Module,
    request: Request,
    imp_d: Importance,
    imp_f: Importance,
    estimator: str,
    size: int | None,
    seconds: dict[str, float],
) -> tuple[Importance, dict[str, Any], Batches]:
    """Sample forgetting: the cross-entropy importance of the forget samples the model gets
    right (:mod:`dampen.methods.winning`), which ranks the candidates; the search still
    measures the forget accuracy on all of Df.

    A sample the model gets wrong was not memorised, and its cross-entropy gradients (with the
    factor ``1 − p_y``) are the largest of Df: they point at what its wrong class uses.
    Measured on Fashion-MNIST (random 100, 200 held-out samples; ``benchmarks/
    random_ranking.py``), on the two requests of ``random_reference.py`` whose forget accuracy
    was above the target (ResNet18 and ViT, seed 0): ranked by all of Df, reaching it cost
    0.5 and 0.6 points of retained accuracy, and the ViT 0.8 of test accuracy (3.1 % of its
    parameters selected); ranked by the winners, nothing (0.4 %; both within 0.3 points up).
    Not everywhere: in ``dampen bench --preset fmnist`` (ResNet18, seed 0) the winners cost
    1.35 points of retained accuracy where all of Df cost 0.2.

    Returns the importance to rank by, ``{"forget_samples": n, "winning": m}`` for the
    stats and the batches that importance was measured on (the signed ranking takes its signs
    from them); ``imp_f`` and the forget set itself when every sample or none wins, or when
    the samples cannot be regrouped (a batch entry that is not a per-sample tensor, or batches
    whose samples differ in shape, e.g. padded to each batch's longest sequence): then
    ``winning`` is ``None``.
    Records the pass that finds the winners in ``seconds["winning"]`` and their importance in
    ``seconds["importance_forget"]``.
    """
    t = perf_counter()
    regroup = winners_batch_size(request.forget, imp_d, imp_f)
    try:
        winners: WinningSamples | None = WinningSamples(
            model, request.forget, request.forward, regroup
        )
    except NotRegroupable:
        winners = None
    seconds["winning"] = perf_counter() - t
    if winners is None:
        return imp_f, {"forget_samples": imp_f.samples, "winning": None}, request.forget
    ranked = {"forget_samples": winners.total, "winning": winners.count}
    if not 0 < winners.count < winners.total:
        return imp_f, ranked, request.forget
    t = perf_counter()
    winning = replace(request, forget=winners)
    ranking = _forget_importance(model, winning, estimator, "forget set", "cross_entropy", size)
    seconds["importance_forget"] += perf_counter() - t
    return ranking, ranked, winners


def winners_batch_size(forget: Any, imp_d: Importance, imp_f: Importance) -> int:
    """The batch size the winning forget samples are regrouped to (as the forget loader's)."""
    return loader_batch_size(forget) or imp_d.batch_size or imp_f.batch_size or 1


def class_batch_size(imp_d: Importance, imp_f: Importance) -> int:
    """The batch size each class of a several-class request is regrouped to (as D's)."""
    return imp_d.batch_size or imp_f.batch_size or 1


def _check_reiterable(batches: Any, what: str) -> None:
    if batches is not None and iter(batches) is batches:
        raise ValueError(
            f'alpha="auto" reads {what} several times, but it is a one-shot iterator; pass a '
            "DataLoader or a list of batches (or a numeric alpha)"
        )


def _check_batch_sizes(imp_d: Importance, imp_f: Importance, forget: Any) -> None:
    if imp_d.estimator in PER_SAMPLE_PASS or imp_d.batch_size is None:
        return
    nominal = loader_batch_size(forget)
    mismatch = (
        nominal != imp_d.batch_size
        if nominal is not None
        else (imp_f.batch_size or 0) > imp_d.batch_size
        or ((imp_f.batch_size or 0) < imp_d.batch_size and imp_f.batches > 1)
    )
    if mismatch:
        raise ValueError(
            f"{imp_d.estimator} importance depends on the batch size: the training data used "
            f"{imp_d.batch_size}, the forget set uses {nominal or imp_f.batch_size}; use the "
            "same batch size (or the shuffled_sq or per_sample estimator, whose forget sets may "
            "use any)"
        )


def join_erased_copies(
    model: nn.Module, forget: Batches, copies: int, size: int
) -> tuple[Batches, dict[str, int]]:
    """The forget batches followed by the erased copies of their samples on which the label
    still wins (:mod:`dampen.methods.erased`), ``size`` a batch, and what was added:
    ``{"erased_copies": copies, "erased_added": n, "erased_winning": m}`` (``copies`` asked
    per sample; :func:`dampen.methods.erased.per_sample` makes fewer for large forget sets,
    ``n / identified`` each). The batches are
    returned as they are when they are not ``(images, labels)`` pairs or no copy wins."""
    originals = list(forget)
    batches, added = with_erased_copies(originals, copies, size)
    info = {"erased_copies": copies, "erased_added": added, "erased_winning": 0}
    if not added:
        return forget, info
    winners = WinningSamples(model, batches[len(originals) :], None, size)
    info["erased_winning"] = winners.count
    return (originals + list(winners) if winners.count else forget), info


def join_pasted_trigger(
    model: nn.Module, forget: Batches, identified: Batches, heldout: Batches, size: int
) -> tuple[Batches, dict[str, Any]]:
    """The forget batches followed by the held-out images with the identified samples' trigger
    pasted in on which the poison label wins (:mod:`dampen.methods.pasted`), ``size`` a batch,
    and what was done (:func:`dampen.methods.pasted.pasted_batches`' report and
    ``pasted_winning``). The batches are returned as they are when nothing was pasted or no
    pasted image wins."""
    pasted, info = pasted_batches(model, identified, heldout, size)
    info["pasted_winning"] = 0
    if not pasted:
        return forget, info
    winners = WinningSamples(model, pasted, None, size)
    info["pasted_winning"] = winners.count
    return (list(forget) + list(winners) if winners.count else forget), info


def _with_poison_inputs(
    model: nn.Module,
    request: Request,
    settings: AutoSettings,
    size: int,
    report: dict[str, Any],
    seconds: dict[str, float],
) -> tuple[Request, AutoSettings]:
    """For ``forget_kind="poison"`` (default forward): the request with the erased copies and,
    with ``heldout=``, the pasted trigger joined to its forget set when any of them wins, and
    the settings with the copies' tolerance; what was added goes into ``report``."""
    if settings.forget_kind != "poison" or request.forward is not None:
        return request, settings
    identified, heldout = request.forget, request.heldout
    Join = Callable[[Batches], tuple[Batches, dict[str, Any]]]
    joins: list[tuple[str, str, float, Join]] = []
    if settings.erased_copies:
        copies = settings.erased_copies
        joins.append(
            (
                "erased_copies",
                "erased_winning",
                ERASED_TOLERANCE,
                lambda forget: join_erased_copies(model, forget, copies, size),
            )
        )
    if settings.pasted_trigger and heldout is not None:
        joins.append(
            (
                "pasted_trigger",
                "pasted_winning",
                PASTED_TOLERANCE,
                lambda forget: join_pasted_trigger(model, forget, identified, heldout, size),
            )
        )
    tolerance = settings.tolerance
    for name, winning, own, join in joins:
        t = perf_counter()
        joined, info = join(request.forget)
        report.update(info)
        if info[winning]:
            request = replace(request, forget=joined)
            if settings.tolerance is None:  # the largest of the joined kinds' own
                tolerance = own if tolerance is None else max(tolerance, own)
        seconds[name] = perf_counter() - t
    if tolerance != settings.tolerance:
        settings = replace(settings, tolerance=tolerance)
    return request, settings


def ssd_(
    model: nn.Module,
    request: Request,
    *,
    method: str,
    estimator: str,
    alpha: float | str | None,
    lambda_: float,
    exponent: float,
    upper: float,
    auto: AutoSettings | None = None,
) -> dict[str, Any]:
    """Run an SSD-family method on ``model`` in place.

    ``alpha=None`` means ASSD's percentile rule; ``alpha="auto"`` searches for the least
    dampening that reaches the forgetting target (``auto`` holds its settings).

    Every input is checked before the first parameter changes.
    """
    if alpha == "auto":
        _check_reiterable(request.forget, "the forget set")
        _check_reiterable(request.heldout, "heldout")
        if not has_labels(model, request.forget, request.forward):
            if auto is not None and auto.forget_kind in CORRECTIVE:
                raise ValueError(
                    f"forget_kind={auto.forget_kind!r} needs the forget batches with the labels "
                    "the model was trained with (x, y); these carry none"
                )
            if estimator != "lf":
                raise ValueError(
                    f"{method} needs labelled forget batches (x, y); these carry none (use "
                    "method='lfssd' or 'alf', which need no labels)"
                )
            warnings.warn(
                'alpha="auto" measures forget accuracy, which needs labels, and the forget '
                "batches carry none: using the adaptive percentile rule (as method='alf') "
                "instead; pass a numeric alpha to choose it yourself",
                UserWarning,
                stacklevel=4,
            )
            alpha = None
    seconds: dict[str, float] = {}
    start = perf_counter()
    imp_d, source = importance_of_train(model, request, estimator)
    seconds["importance_train"] = perf_counter() - start

    t = perf_counter()
    size = shuffled_batch_size(imp_d)
    imp_f = _forget_importance(model, request, estimator, "forget set", "cross_entropy", size)
    _check_batch_sizes(imp_d, imp_f, request.forget)
    seconds["importance_forget"] = perf_counter() - t

    t = perf_counter()
    device = imp_f.sums[next(iter(imp_f.sums))].device
    if any(s.device != device for s in imp_d.sums.values()):
        imp_d = imp_d.to(device)
    settings = auto or AutoSettings()
    corrective: dict[str, Any] | None = None
    ranked: dict[str, Any] | None = None  # sample forgetting: the winners that rank
    imp_all = imp_f  # Df's importance as handed back (all of Df, also when only part is used)
    kind = forget_kind(imp_d, imp_f, settings.forget_kind) if alpha == "auto" else None
    if kind is not None:
        # Resolved once, on all of Df: the searches must not read it again from an importance
        # of part of Df (the winners' label histograms may hold whole classes).
        settings = replace(settings, forget_kind=kind)
    objective = forget_objective(estimator, kind)
    imp_source = request.forget  # what imp_f was measured on
    if alpha == "auto" and settings.forget_kind in CORRECTIVE:
        corrective = {"objective": objective}
        regroup = winners_batch_size(request.forget, imp_d, imp_f)
        if settings.winning_only:
            winners = WinningSamples(model, request.forget, request.forward, regroup)
            corrective.update(identified=winners.total, winning=winners.count)
            seconds["winning"] = perf_counter() - t
            if winners.count == 0:
                if request.heldout is not None:  # checked as it would be by a search
                    corrective["heldout_acc"] = accuracy(model, request.heldout, request.forward)
                corrective["kind"] = settings.forget_kind
                return _untouched(
                    model,
                    method,
                    estimator,
                    (lambda_, exponent, upper),
                    imp_d,
                    imp_f,
                    source,
                    seconds,
                    start,
                    corrective,
                )
            if winners.count < winners.total:  # dampen for the samples where it wins
                request = replace(request, forget=winners)
        without_copies = (request, settings)  # the fallback when the copies change nothing
        request, settings = _with_poison_inputs(
            model, request, settings, regroup, corrective, seconds
        )
        # With the importance of what makes the trained labels win; the forget importance
        # handed back (to take Df out of the stored importance) stays the cross-entropy one
        # of all of Df.
        if objective != "cross_entropy" or request.forget is not imp_source:
            t = perf_counter()
            imp_f = _forget_importance(model, request, estimator, "forget set", objective, size)
            seconds["importance_forget"] += perf_counter() - t
        t = perf_counter()
    if alpha == "auto" and _several_classes(imp_d, imp_f, settings, request):
        stats = _class_by_class_(
            model,
            request,
            imp_d,
            imp_f,
            method=method,
            estimator=estimator,
            lambda_=lambda_,
            exponent=exponent,
            upper=upper,
            settings=settings,
        )
        stats["seconds"] = {**seconds, **stats["seconds"], "total": perf_counter() - start}
        stats["importance"] = source
        return stats
    auto_report: dict[str, Any] | None = None
    per_tensor: dict[str, int]
    ranks_by_winners = (
        kind == "samples"
        and request.heldout is not None
        and settings.winning_only
        and estimator != "lf"  # its importance has no label, so no 1 − p_y factor
    )
    signs_on: Batches | None = None  # the batches the ranking's importance was measured on
    if ranks_by_winners:  # rank by the samples the model gets right
        spent = perf_counter()
        imp_f, ranked, signs_on = _ranked_by_winners(
            model, request, imp_d, imp_f, estimator, size, seconds
        )
        t += perf_counter() - spent  # timed as "winning" and "importance_forget"
    if kind == "class" and objective != "cross_entropy":
        # The search ranks by the log-odds importance; the forget importance handed back (to
        # take Df out of the stored importance) stays the cross-entropy one.
        t = perf_counter()
        imp_f = _forget_importance(model, request, estimator, "forget set", objective, size)
        seconds["importance_forget"] += perf_counter() - t
        t = perf_counter()
    if alpha == "auto":

        def search(request: Request, settings: AutoSettings, imp_f: Importance) -> AutoOutcome:
            return auto_dampen_(
                model,
                imp_d,
                imp_f,
                # Later rounds are for class forgetting only: sample forgetting (whose first
                # round may rank by the winners) takes one round.
                remeasure=lambda: _forget_importance(
                    model, request, estimator, "forget set, again", objective, size
                ),
                forget=request.forget,
                heldout=request.heldout,
                forward=request.forward,
                settings=settings,
                lambda_=lambda_,
                exponent=exponent,
                upper=upper,
                # the signed ranking's candidates (lf's importance has no label); their signs
                # come from the winners when the ranking was measured on them, else from this
                # search's own forget set (a corrective search may run on other batches)
                signed=None
                if estimator == "lf"
                else lambda imp: signed_candidates(
                    imp,
                    imp_d,
                    model,
                    request.forget if signs_on is None else signs_on,
                    request.forward,
                    objective,
                    lambda_=lambda_,
                    exponent=exponent,
                    upper=upper,
                ),
            )

        outcome = search(request, settings, imp_f)
        added = ("erased_winning", "pasted_winning")
        if (
            corrective is not None
            and any(corrective.get(k) for k in added)
            and not any(outcome.selected.values())
        ):
            # No dampening within the guards took the label off the copies (erased, or the
            # pasted trigger): measured on digits (5 % poison, where the trigger also weighs
            # in D's importance). The identified samples alone decide, as without copies.
            request, settings = without_copies
            corrective.update(erased_fallback=True, erased_reason=outcome.report["reason"])
            t = perf_counter()
            imp_f = _forget_importance(model, request, estimator, "forget set", objective, size)
            seconds["importance_forget"] += perf_counter() - t
            t = perf_counter()
            outcome = search(request, settings, imp_f)
        alpha, per_tensor, auto_report = outcome.alpha, outcome.selected, outcome.report
        seconds["alpha"] = perf_counter() - t
    else:
        fixed_alpha = alpha
        if alpha is None:
            alpha = adaptive_alpha(imp_d, imp_f, imp_f.samples, imp_d.samples)
            seconds["alpha"] = perf_counter() - t
            t = perf_counter()
        if isinstance(alpha, str):
            raise ValueError(f"alpha must be a number, None or 'auto'; got {alpha!r}")
        bounded = _warn_unreachable_alpha(alpha, imp_d, imp_f, adaptive=fixed_alpha is None)
        per_tensor = dampen_model_(
            model, imp_d, imp_f, alpha=alpha, lambda_=lambda_, exponent=exponent, upper=upper
        )
        if not any(per_tensor.values()) and not bounded:
            warnings.warn(
                f"alpha={alpha:.4g} selected no parameter (no I_Df/I_D ratio exceeds it): "
                "nothing was forgotten; lower alpha, or use alpha='auto'",
                UserWarning,
                stacklevel=4,
            )
        seconds["dampen"] = perf_counter() - t
    seconds["total"] = perf_counter() - start
    stats = _stats(
        model,
        method=method,
        estimator=estimator,
        alpha=float(alpha),
        lambda_=lambda_,
        per_tensor=per_tensor,
        imp_d=imp_d,
        imp_f=imp_all,  # handed back: the cross-entropy importance of all of Df
        seconds=seconds,
        exponent=exponent,
        upper=upper,
    )
    stats["importance"] = source
    if auto_report is not None:
        stats["auto"] = auto_report
        if kind == "class":
            stats["auto"]["objective"] = objective
    for extra in (corrective, ranked):
        if extra is not None:
            stats["auto"].update(extra)
    return stats


def _untouched(
    model: nn.Module,
    method: str,
    estimator: str,
    dampening: tuple[float, float, float],
    imp_d: Importance,
    imp_f: Importance,
    source: str,
    seconds: dict[str, float],
    start: float,
    corrective: dict[str, Any],
) -> dict[str, Any]:
    """The stats of a corrective request on whose samples the trained labels already lose."""
    seconds["total"] = perf_counter() - start
    lambda_, exponent, upper = dampening
    stats = _stats(
        model,
        method=method,
        estimator=estimator,
        alpha=math.inf,
        lambda_=lambda_,
        exponent=exponent,
        upper=upper,
        per_tensor={name: 0 for name in imp_f.sums},
        imp_d=imp_d,
        imp_f=imp_f,
        seconds=seconds,
    )
    stats["importance"] = source
    held = corrective.pop("heldout_acc", None)
    stats["auto"] = {
        "reason": "the labels of the forget set already lose on every sample: nothing dampened",
        "original_forget_acc": 0.0,
        "forget_acc": 0.0,
        "heldout_acc": held,
        "original_heldout_acc": held,
        "evaluations": 0,
        "rounds": [],
        **corrective,
    }
    return stats


def _warn_unreachable_alpha(
    alpha: float, imp_d: Importance, imp_f: Importance, *, adaptive: bool
) -> bool:
    """Warn when a fixed α provably selects nothing; True when it warned.

    With ``per_sample`` and Df a part of D, ``I_Df/I_D`` is at most ``|D|/|Df|``: the sum over
    D includes the sum over Df, and the means divide by |D| and |Df|.
    """
    if adaptive or imp_d.estimator != "per_sample":
        return False
    bound = imp_d.samples / imp_f.samples
    # At the bound itself, float rounding of I_Df/I_D can still select a parameter whose
    # gradient comes from the forget set alone; warn only clearly above it.
    if alpha <= bound * (1 + 1e-4):
        return False
    warnings.warn(
        f"alpha={alpha:.4g} can select nothing: with the per_sample estimator and the forget "
        f"set part of the training data, I_Df/I_D <= |D|/|Df| = {imp_d.samples}/"
        f"{imp_f.samples} = {bound:.4g}; use alpha below {bound:.4g}, or alpha='auto'",
        UserWarning,
        stacklevel=5,
    )
    return True


def _stats(
    model: nn.Module,
    *,
    method: str,
    estimator: str,
    alpha: float,
    lambda_: float,
    per_tensor: dict[str, int],
    imp_d: Importance,
    imp_f: Importance,
    seconds: dict[str, float],
    exponent: float,
    upper: float,
) -> dict[str, Any]:
    """The SSD family's stats, with the forget importance under ``FORGET_IMPORTANCE``."""
    total = sum(per_tensor.values())
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "method": method,
        "estimator": estimator,
        "alpha": alpha,
        "lambda": float(lambda_),
        "exponent": float(exponent),
        "upper": float(upper),
        "selected": total,
        "selected_fraction": total / max(parameters, 1),
        "selected_per_tensor": per_tensor,
        "parameters": parameters,
        "forget_samples": imp_f.samples,
        "train_samples": imp_d.samples,
        "seconds": seconds,
        FORGET_IMPORTANCE: imp_f,
    }


def _several_classes(
    imp_d: Importance, imp_f: Importance, settings: AutoSettings, request: Request
) -> bool:
    """Whether ``alpha="auto"`` should forget the forget set's classes one at a time."""
    labels = imp_f.label_counts or {}
    return (
        len(labels) > 1
        and request.forward is None
        and forget_kind(imp_d, imp_f, settings.forget_kind) == "class"
    )


def _class_by_class_(
    model: nn.Module,
    request: Request,
    imp_d: Importance,
    imp_f: Importance,
    *,
    method: str,
    estimator: str,
    lambda_: float,
    exponent: float,
    upper: float,
    settings: AutoSettings,
) -> dict[str, Any]:
    """Forget several whole classes one after the other, each with ``alpha="auto"``.

    With all classes at once, ``I_Df`` averages the classes' importances and dilutes what is
    specific to each, so SSD forgets less for the same dampening. After each class the stored
    importance is updated with :meth:`Importance.subtract` (exact for ``shuffled_sq`` and
    ``per_sample``; the next
    class's importance is measured on the already dampened model, an approximation).
    """
    size = class_batch_size(imp_d, imp_f)
    labels = sorted(imp_f.label_counts or {})
    _plan_classes(imp_d, imp_f, labels, size)
    remaining = imp_d
    one_class = replace(settings, forget_kind="class")
    per_tensor: Counter[str] = Counter()
    per_class: list[dict[str, Any]] = []
    forgotten: Importance | None = None
    seconds: Counter[str] = Counter()
    for number, label in enumerate(labels):
        sub = replace(
            request,
            forget=ClassBatches(request.forget, label, size),
            importance=remaining,
            train=None,
            check_values=False,  # the model is the one dampened for the classes before
        )
        stats = ssd_(
            model,
            sub,
            method=method,
            estimator=estimator,
            alpha="auto",
            lambda_=lambda_,
            exponent=exponent,
            upper=upper,
            auto=one_class,
        )
        imp_c: Importance = stats.pop(FORGET_IMPORTANCE)
        if number < len(labels) - 1:
            remaining = remaining.subtract(imp_c)
        forgotten = imp_c if forgotten is None else forgotten.merge(imp_c)
        per_tensor.update(stats["selected_per_tensor"])
        seconds.update({k: v for k, v in stats["seconds"].items() if k != "total"})
        per_class.append(
            {
                "label": label,
                "alpha": stats["alpha"],
                "selected": stats["selected"],
                "forget_acc": stats["auto"]["forget_acc"],
                "reason": stats["auto"]["reason"],
                "rounds": stats["auto"].get("rounds", []),
                **{
                    k: stats["auto"][k]
                    for k in (
                        "objective",
                        "path",
                        "other_path",
                        "ranking",
                        "other_ranking",
                        "runner_up_floor",
                        "runner_up_kept",
                    )
                    if k in stats["auto"]
                },
            }
        )
    assert forgotten is not None  # the forget set holds at least two labels
    stats = _stats(
        model,
        method=method,
        estimator=estimator,
        alpha=min(c["alpha"] for c in per_class),
        lambda_=lambda_,
        per_tensor=dict(per_tensor),
        imp_d=imp_d,
        imp_f=forgotten,
        seconds=dict(seconds),
        exponent=exponent,
        upper=upper,
    )
    stats["auto"] = {
        "kind": "class",
        "objective": forget_objective(estimator, "class"),
        "reason": f"{len(per_class)} classes forgotten one at a time (selected counts add up)",
        "forget_acc": accuracy(model, request.forget, request.forward),
        "per_class": per_class,
    }
    return stats


def _plan_classes(imp_d: Importance, imp_f: Importance, labels: list[int], size: int) -> None:
    """Check, before any weight changes, that every class of a several-class request can be
    taken out of the importance of D in turn (:meth:`Importance.subtract` must leave some)."""
    counts = imp_f.label_counts or {}
    units, samples = imp_d.units, imp_d.samples
    for label in labels[:-1]:
        n = counts[label]
        unit = n if imp_d.estimator in PER_SAMPLE_PASS else math.ceil(n / size)
        units, samples = units - unit, samples - n
        if units <= 0 or samples <= 0:
            raise ValueError(
                f"cannot forget {len(labels)} classes one at a time: after class {label} the "
                f"{imp_d.estimator} importance of D ({imp_d.samples} samples in {imp_d.units} "
                f"{'samples' if imp_d.estimator in PER_SAMPLE_PASS else 'batches'}) would have "
                "nothing left for the next class; forget fewer classes per request, or use "
                "the shuffled_sq or per_sample estimator, which count samples, not batches"
            )


@register("ssd", SSDConfig, validates_first=True)
def run_ssd_(model: nn.Module, request: Request, config: SSDConfig) -> dict[str, Any]:
    """Selective Synaptic Dampening with a fixed α."""
    return ssd_(
        model,
        request,
        method="ssd",
        estimator=labelled_estimator(config.estimator, request),
        alpha=config.alpha,
        lambda_=config.lambda_,
        exponent=config.exponent,
        upper=config.upper,
        auto=config.auto_settings(),
    )


@register("lfssd", LFSSDConfig, validates_first=True)
def run_lfssd_(model: nn.Module, request: Request, config: LFSSDConfig) -> dict[str, Any]:
    """Loss-free SSD: importances from the logits' squared norm, no labels needed."""
    return ssd_(
        model,
        request,
        method="lfssd",
        estimator="lf",
        alpha=config.alpha,
        lambda_=config.lambda_,
        exponent=config.exponent,
        upper=config.upper,
        auto=config.auto_settings(),
    )


@register("assd", ASSDConfig, validates_first=True)
def run_assd_(model: nn.Module, request: Request, config: ASSDConfig) -> dict[str, Any]:
    """Adaptive SSD: α from the percentile rule, λ = 1."""
    return ssd_(
        model,
        request,
        method="assd",
        estimator=labelled_estimator(config.estimator, request),
        alpha=None,
        lambda_=1.0,
        exponent=config.exponent,
        upper=config.upper,
    )


@register("alf", ALFConfig, validates_first=True)
def run_alf_(model: nn.Module, request: Request, config: ALFConfig) -> dict[str, Any]:
    """Adaptive loss-free SSD."""
    return ssd_(
        model,
        request,
        method="alf",
        estimator="lf",
        alpha=None,
        lambda_=1.0,
        exponent=config.exponent,
        upper=config.upper,
    )
