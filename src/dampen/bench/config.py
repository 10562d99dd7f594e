"""What a benchmark runs: data, models, scenarios, methods and seeds, as frozen dataclasses.

A :class:`BenchConfig` is built from a preset (:mod:`dampen.bench.presets`) or from a JSON file
(:func:`load_config`); every field is checked when it is built, and errors name the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dampen.bench.tuning import BUDGET_OPTION, budget_fields, check_grid
from dampen.importances.estimators import LABELLED_ESTIMATORS, PAPER_ESTIMATOR
from dampen.methods.auto_alpha import CORRECTIVE
from dampen.recipe import TrainConfig
from dampen.registry import get

SSD_FAMILY: Mapping[str, str] = {
    "ssd": PAPER_ESTIMATOR,
    "assd": PAPER_ESTIMATOR,
    "lfssd": "lf",
    "alf": "lf",
}
"""SSD-family methods and the estimator of their importance in the bench unless a row's options
name another (the paper's, which the committed results use; the library's default is
``shuffled_sq``)."""

REFERENCE_ROWS: tuple[str, ...] = ("original", "retrain")
"""Rows every benchmark has: the model before unlearning and the one retrained without Df."""

CLEAN_ROW = "clean"
"""The reference row of corrective scenarios: the model trained on the data before it was
corrupted (no trigger, true labels)."""

SCENARIO_KINDS: tuple[str, ...] = ("full_class", "sub_class", "random", *CORRECTIVE)
"""Kinds of forgetting scenario (SPEC §3)."""

CORRECTIVE_KINDS: tuple[str, ...] = CORRECTIVE
"""Scenario kinds whose forget set is corrupted data to correct (they add the ``clean`` row);
named as ``alpha="auto"``'s corrective ``forget_kind`` values."""

_TARGET_FIELD = {"full_class": "cls", "sub_class": "fine_class", "random": "count"}
_CORRECTIVE_FIELDS = ("share", "identified", "identified_count", "confuse")

GROUPS: tuple[str, ...] = ("main", "baselines")
"""Method groups: the SSD family and friends, and the baselines."""

IMPORTANCE_MODES: tuple[str, ...] = ("stored", "on_the_fly")
"""How an SSD-family cell gets the importance of D: the cached one, or computed in the call."""


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    out = {str(k): v for k, v in value.items()}
    try:
        json.dumps(out, sort_keys=True)
    except TypeError as exc:
        raise _fail(where, f"must be JSON-serialisable ({exc})") from exc
    return dict(sorted(out.items()))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"must be a non-empty string, got {value!r}")
    return value


def _positive_int(value: Any, where: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"must be a positive int, got {value!r}")
    return value


def _keys(values: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class DataSpec:
    """The data set and how much of it to use.

    Attributes:
        name: a :func:`dampen.data.dataset_names` name (``"digits"``, ``"fashion-mnist"``, ...).
        root: folder holding the files (default: the loader's default).
        limit: keep a seeded random subset of this many training samples.
        test_limit: the same for the test split.
        seed: seed of the subsets (and of the digits split).
        validation: set aside this many unseen samples as a validation split for tuning
            (:mod:`dampen.bench.tuning`): drawn from the test samples that ``test_limit``
            leaves out, or, without ``test_limit``, taken out of the test split.
    """

    name: str
    root: str | None = None
    limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    validation: int | None = None

    def __post_init__(self) -> None:
        from dampen.data import dataset_names

        key = _name(self.name, "data.name").lower().replace("_", "-")
        known = {n.replace("-", ""): n for n in dataset_names()}
        if key.replace("-", "") not in known:
            raise _fail("data.name", f"{self.name!r} is not a data set; choose from {known}")
        object.__setattr__(self, "name", known[key.replace("-", "")])
        if self.root is not None and not isinstance(self.root, str):
            raise _fail("data.root", f"must be a path string or null, got {self.root!r}")
        _positive_int(self.limit, "data.limit", allow_none=True)
        _positive_int(self.test_limit, "data.test_limit", allow_none=True)
        _positive_int(self.validation, "data.validation", allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise _fail("data.seed", f"must be a non-negative int, got {self.seed!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark and its training recipe.

    Attributes:
        label: the model's name in results (unique), e.g. ``"resnet18"``.
        model: a :func:`dampen.models.build_model` name.
        kwargs: model options, e.g. ``{"width": 16}``.
        train: :class:`dampen.recipe.TrainConfig` fields overriding the recipe's defaults.
    """

    label: str
    model: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from dampen.models import MODEL_NAMES

        where = f"models[{self.label!r}]"
        _name(self.label, "models[].label")
        if _name(self.model, f"{where}.model") not in MODEL_NAMES:
            raise _fail(f"{where}.model", f"{self.model!r} is not a model; choose {MODEL_NAMES}")
        object.__setattr__(self, "kwargs", _mapping(self.kwargs, f"{where}.kwargs"))
        train = _mapping(self.train, f"{where}.train")
        allowed = [f.name for f in dataclasses.fields(TrainConfig)]
        _keys(train, [a for a in allowed if a not in ("model", "model_kwargs", "dataset")], where)
        object.__setattr__(self, "train", train)
        try:
            self.train_config()
        except (TypeError, ValueError) as exc:
            raise _fail(f"{where}.train", str(exc)) from exc

    def train_config(self) -> TrainConfig:
        """The recipe that trains this model (originals and retrained references)."""
        values = dict(self.train)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return TrainConfig(model=self.model, model_kwargs=dict(self.kwargs), **values)


@dataclass(frozen=True)
class ScenarioSpec:
    """A forgetting scenario (SPEC §3).

    Attributes:
        kind: one of :data:`SCENARIO_KINDS`.
        cls: the class to forget (full-class), by name or index.
        fine_class: the fine class to forget (sub-class), by name or index.
        count: samples to forget (random); drawn with the cell's seed.
        superclasses: ``{superclass: [class, ...]}`` for sub-class scenarios on data that
            defines none (e.g. digits).
        dataset: a data set for this scenario only (default: the config's ``data``).
        share: corrective kinds: the poisoned (``poison``) or mislabelled (``label_errors``)
            share, drawn with the cell's seed (see :mod:`dampen.data.corrupted`).
        identified: corrective kinds: the share of the corrupted samples the owner identified
            (Df), in (0, 1];
        identified_count: or their number (e.g. 1).
        confuse: ``label_errors``: two classes whose labels are swapped on ``share`` of their
            samples (interclass confusion); without it labels are flipped at random.
    """

    kind: str
    cls: str | int | None = None
    fine_class: str | int | None = None
    count: int | None = None
    superclasses: Mapping[str, Sequence[str]] | None = None
    dataset: DataSpec | None = None
    share: float | None = None
    identified: float | None = None
    identified_count: int | None = None
    confuse: Sequence[str | int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise _fail("scenarios[].kind", f"{self.kind!r} is not one of {SCENARIO_KINDS}")
        where = f"scenarios[{self.kind}]"
        if self.kind in CORRECTIVE_KINDS:
            self._check_corrective(where)
        else:
            self._check_forgetting(where)
        if self.dataset is not None and not isinstance(self.dataset, DataSpec):
            raise _fail(f"{where}.dataset", "must be a DataSpec")

    def _check_forgetting(self, where: str) -> None:
        needed = _TARGET_FIELD[self.kind]
        for name in ("cls", "fine_class", "count", *_CORRECTIVE_FIELDS):
            value = getattr(self, name)
            if name == needed and value is None:
                raise _fail(f"{where}.{name}", f"is required for {self.kind}")
            if name != needed and value is not None:
                raise _fail(f"{where}.{name}", f"does not apply to {self.kind}")
        target = getattr(self, needed)
        if needed == "count":
            _positive_int(target, f"{where}.count")
        elif isinstance(target, bool) or not isinstance(target, (str, int)):
            raise _fail(f"{where}.{needed}", f"must be a name or index: {target!r}")
        if self.superclasses is not None:
            if self.kind != "sub_class":
                raise _fail(f"{where}.superclasses", "applies to sub_class only")
            groups = _mapping(self.superclasses, f"{where}.superclasses")
            for key, members in groups.items():
                if isinstance(members, str) or not isinstance(members, Sequence):
                    raise _fail(f"{where}.superclasses[{key!r}]", "must be a list of classes")
            object.__setattr__(
                self, "superclasses", {k: tuple(str(m) for m in v) for k, v in groups.items()}
            )

    def _check_corrective(self, where: str) -> None:
        for name in ("cls", "fine_class", "count", "superclasses"):
            if getattr(self, name) is not None:
                raise _fail(f"{where}.{name}", f"does not apply to {self.kind}")
        for name in ("share", "identified"):
            value = getattr(self, name)
            if value is None and name == "identified":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(f"{where}.{name}", f"must be a number in (0, 1], got {value!r}")
            if not 0.0 < float(value) <= 1.0:
                raise _fail(f"{where}.{name}", f"must lie in (0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        if (self.identified is None) == (self.identified_count is None):
            raise _fail(f"{where}.identified", "give exactly one of identified, identified_count")
        _positive_int(self.identified_count, f"{where}.identified_count", allow_none=True)
        if self.confuse is not None:
            if self.kind != "label_errors":
                raise _fail(f"{where}.confuse", "applies to label_errors only")
            pair = _list(self.confuse, f"{where}.confuse")
            if len(pair) != 2 or any(
                isinstance(c, bool) or not isinstance(c, (str, int)) for c in pair
            ):
                raise _fail(f"{where}.confuse", f"must name two classes, got {self.confuse!r}")
            object.__setattr__(self, "confuse", tuple(pair))

    @property
    def label(self) -> str:
        """A short name, e.g. ``"full_class/3"``, ``"random/100"`` or ``"poison/1%/id10%"``."""
        prefix = f"{self.dataset.name}:" if self.dataset is not None else ""
        if self.kind in CORRECTIVE_KINDS:
            assert self.share is not None
            found = (
                f"id{self.identified_count}"
                if self.identified_count is not None
                else f"id{100 * (self.identified or 0):g}%"
            )
            how = "" if self.confuse is None else "/" + "-".join(str(c) for c in self.confuse)
            return f"{prefix}{self.kind}{how}/{100 * self.share:g}%/{found}"
        return f"{prefix}{self.kind}/{getattr(self, _TARGET_FIELD[self.kind])}"

    def payload(self) -> dict[str, Any]:
        """The fields that identify the scenario in digests (unset corrective fields left out,
        so the digests of the other kinds are those of earlier versions)."""
        out = dataclasses.asdict(self)
        for name in _CORRECTIVE_FIELDS:
            if out.get(name) is None:
                out.pop(name, None)
        return out


@dataclass(frozen=True)
class Override:
    """Method options for some models and/or scenario kinds (``None`` matches any)."""

    options: Mapping[str, Any]
    model: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _mapping(self.options, "methods[].overrides.options"))
        if self.kind is not None and self.kind not in SCENARIO_KINDS:
            raise _fail("methods[].overrides.kind", f"{self.kind!r} not in {SCENARIO_KINDS}")
        if self.model is not None:
            _name(self.model, "methods[].overrides.model")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the results: a registered method with its options.

    Attributes:
        method: a name from :func:`dampen.methods`, or ``"retrain"`` (the cached retrained
            reference, trained with the model's recipe on Dr).
        label: the row's name (default: ``method``; add ``" (on the fly)"`` style labels to run
            one method twice).
        options: keyword options for :func:`dampen.unlearn`.
        overrides: options for given models / scenario kinds, applied in order after ``options``.
        importance: SSD family only: ``"stored"`` (the cached importance of D) or
            ``"on_the_fly"`` (computed inside the timed call).
        group: ``"main"`` or ``"baselines"`` (only for grouping in the report).
        kinds: the scenario kinds the method runs on (default: every kind), e.g. UNSIR's
            ``["full_class"]``: it learns noise that maximises the loss of whole classes.
        heldout: how many unseen samples to hand the method as ``heldout=`` (for
            ``alpha="auto"``): test samples of the retained classes in class scenarios, of
            any class in random ones; in corrective scenarios samples of the validation split
            when the data has one (else test samples); drawn with the cell's seed. 0: none.
        grid: ``{option: [value, ...]}``: tune the method on the data's validation split
            (:mod:`dampen.bench.tuning`), once per model and scenario on the first seed; the
            chosen point overrides ``options`` for every seed. ``options`` (and the grid) may
            hold ``budget``: a share of the original training's optimiser steps that sets the
            method's step budget.
    """

    method: str
    label: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    importance: str = "stored"
    group: str = "main"
    kinds: tuple[str, ...] = SCENARIO_KINDS
    heldout: int = 0
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from dampen.api import methods

        known = methods()
        if self.method not in known:
            raise _fail("methods[].method", f"{self.method!r} is not one of {known}")
        if not self.label:
            object.__setattr__(self, "label", self.method)
        where = f"methods[{self.label!r}]"
        if self.label in (*REFERENCE_ROWS, CLEAN_ROW) and self.label != self.method:
            raise _fail(f"{where}.label", f"{self.label!r} is reserved for the reference row")
        object.__setattr__(self, "options", _mapping(self.options, f"{where}.options"))
        overrides = tuple(
            o if isinstance(o, Override) else Override(**_mapping(o, f"{where}.overrides[]"))
            for o in self.overrides
        )
        object.__setattr__(self, "overrides", overrides)
        if self.method == "retrain" and (self.options or overrides):
            raise _fail(
                f"{where}.options",
                "retrain is trained with the model's recipe; set it in models[].train",
            )
        if self.importance not in IMPORTANCE_MODES:
            raise _fail(f"{where}.importance", f"must be one of {IMPORTANCE_MODES}")
        if self.importance != "stored" and self.method not in SSD_FAMILY:
            raise _fail(f"{where}.importance", "applies to the SSD family only")
        if self.group not in GROUPS:
            raise _fail(f"{where}.group", f"must be one of {GROUPS}, got {self.group!r}")
        kinds = tuple(_list(self.kinds, f"{where}.kinds"))
        if not kinds or any(k not in SCENARIO_KINDS for k in kinds):
            raise _fail(f"{where}.kinds", f"must list kinds among {SCENARIO_KINDS}, got {kinds}")
        object.__setattr__(self, "kinds", kinds)
        if "model_factory" in self.options or "teacher_factory" in self.options:
            raise _fail(f"{where}.options", "factories cannot be given in a bench config")
        grid = check_grid(_mapping(self.grid, f"{where}.grid"), f"{where}.grid")
        if grid and self.method == "retrain":
            raise _fail(f"{where}.grid", "retrain is not tuned")
        if grid and self.heldout:
            raise _fail(f"{where}.grid", "a tuned method cannot also take heldout= test samples")
        fields = set(getattr(get(self.method).config_cls, "__dataclass_fields__", {}))
        unknown = sorted(k for k in grid if k != BUDGET_OPTION and k not in fields)
        if unknown:
            raise _fail(f"{where}.grid", f"{unknown} are not options of {self.method!r}")
        object.__setattr__(self, "grid", grid)
        if BUDGET_OPTION in {*self.options, *grid}:
            try:
                budget_fields(self.method)
            except ValueError as exc:
                raise _fail(f"{where}.options", str(exc)) from exc

    def options_for(self, model: str, kind: str) -> dict[str, Any]:
        """The options for one model label and scenario kind."""
        out = dict(self.options)
        for o in self.overrides:
            if o.model in (None, model) and o.kind in (None, kind):
                out.update(o.options)
        return dict(sorted(out.items()))

    def estimator(self, options: Mapping[str, Any]) -> str | None:
        """The estimator of the importance this method reads (``None`` outside the SSD family)."""
        if self.method not in SSD_FAMILY:
            return None
        return str(options.get("estimator", SSD_FAMILY[self.method]))

    def pinned(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with the bench's estimator spelled out for the methods that take one, so
        a method that computes D's importance itself uses the same one as a stored importance."""
        out = dict(options)
        estimator = self.estimator(options)
        if estimator in LABELLED_ESTIMATORS:
            out["estimator"] = estimator
        return out


@dataclass(frozen=True)
class BenchConfig:
    """A whole benchmark: models × scenarios × seeds × methods.

    Attributes:
        name: a short name shown in the report (the preset's name, or the file's stem).
        data: the default data set.
        models: the models (each trained once per seed and label set).
        scenarios: the forgetting scenarios.
        methods: the rows besides ``original`` and ``retrain`` (always present).
        seeds: training seeds; each seed also draws the random scenarios' forget sets.
        batch_size: batch size of the forget, retain and importance loaders (the ``batch_sq``
            importance depends on it, so one value serves all).
        eval_batch_size: batch size of evaluation passes.
        eval_retain_limit: evaluate the Dr metrics (accuracy, the MIA's member side) on a
            seeded subset of at most this many retain samples (all when ``None``).
        out_dir: where results go.
        cache_dir: where trained models and importances are cached (default ``out_dir/cache``).
        threads: ``torch.set_num_threads`` (default: every core).
        device: where models train and unlearn, e.g. ``"cpu"`` or ``"cuda"``.
        description: a sentence for the report's header.
    """

    name: str
    data: DataSpec
    models: tuple[ModelSpec, ...]
    scenarios: tuple[ScenarioSpec, ...]
    methods: tuple[MethodSpec, ...]
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 64
    eval_batch_size: int = 512
    eval_retain_limit: int | None = None
    out_dir: str = "bench-results"
    cache_dir: str | None = None
    threads: int | None = None
    device: str = "cpu"
    description: str = ""

    def __post_init__(self) -> None:
        _name(self.name, "name")
        if not isinstance(self.data, DataSpec):
            raise _fail("data", "must be a DataSpec")
        for fname, cls in (
            ("models", ModelSpec),
            ("scenarios", ScenarioSpec),
            ("methods", MethodSpec),
        ):
            items = tuple(getattr(self, fname))
            if not items and fname != "methods":
                raise _fail(fname, "must not be empty")
            for item in items:
                if not isinstance(item, cls):
                    raise _fail(fname, f"must hold {cls.__name__} objects, got {item!r}")
            object.__setattr__(self, fname, items)
        _unique([m.label for m in self.models], "models[].label")
        _unique([s.label for s in self.scenarios], "scenarios")
        _unique([m.label for m in self.methods], "methods[].label")
        seeds = tuple(self.seeds)
        if not seeds:
            raise _fail("seeds", "must not be empty")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise _fail("seeds", f"must hold non-negative ints, got {s!r}")
        _unique([str(s) for s in seeds], "seeds")
        object.__setattr__(self, "seeds", seeds)
        _positive_int(self.batch_size, "batch_size")
        _positive_int(self.eval_batch_size, "eval_batch_size")
        _positive_int(self.eval_retain_limit, "eval_retain_limit", allow_none=True)
        _name(self.out_dir, "out_dir")
        if self.cache_dir is not None:
            _name(self.cache_dir, "cache_dir")
        _positive_int(self.threads, "threads", allow_none=True)
        try:
            torch.device(_name(self.device, "device"))
        except RuntimeError as exc:
            raise _fail("device", f"{self.device!r} is not a torch device ({exc})") from exc
        for scenario in self.scenarios:
            tuned = any(m.grid and scenario.kind in m.kinds for m in self.methods)
            if tuned and self.data_for(scenario).validation is None:
                raise _fail(
                    "data.validation",
                    f"methods with a grid are tuned on a validation split: set "
                    f"validation for the data of {scenario.label!r}",
                )
        labels = {m.label for m in self.models}
        for method in self.methods:
            for o in method.overrides:
                if o.model is not None and o.model not in labels:
                    raise _fail(
                        f"methods[{method.label!r}].overrides.model",
                        f"{o.model!r} is not a model label; labels: {sorted(labels)}",
                    )

    @property
    def cache_path(self) -> Path:
        """The cache folder."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.out_dir) / "cache"

    def rows(self) -> tuple[str, ...]:
        """Every row label: the references, then the methods in order."""
        extra = tuple(m.label for m in self.methods if m.label not in REFERENCE_ROWS)
        clean = (CLEAN_ROW,) if any(s.kind in CORRECTIVE_KINDS for s in self.scenarios) else ()
        return (*REFERENCE_ROWS, *clean, *extra)

    def data_for(self, scenario: ScenarioSpec) -> DataSpec:
        """The data set of ``scenario``."""
        return scenario.dataset or self.data

    def replace(self, **changes: Any) -> BenchConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :func:`config_from_dict` turns back into this config."""
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        return json.loads(json.dumps(out))


def _unique(values: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise _fail(where, f"{v!r} appears twice")
        seen.add(v)


_TOP_KEYS = [f.name for f in dataclasses.fields(BenchConfig)]


def _data_from(value: Any, where: str) -> DataSpec:
    values = _mapping(value, where)
    _keys(values, [f.name for f in dataclasses.fields(DataSpec)], where)
    if "name" not in values:
        raise _fail(f"{where}.name", "is required")
    return DataSpec(**values)


def config_from_dict(values: Mapping[str, Any], *, name: str = "config") -> BenchConfig:
    """Build a :class:`BenchConfig` from plain JSON values.

    Args:
        values: the config; ``models``, ``scenarios`` and ``methods`` are lists of objects,
            ``data`` an object, a method may also be given as a plain string.
        name: the config's name when ``values`` has none.

    Raises:
        ValueError: naming the first field that is missing or wrong.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"a bench config must be a JSON object, got {type(values).__name__}")
    top = dict(values)
    _keys(top, _TOP_KEYS, "config")
    for required in ("data", "models", "scenarios"):
        if required not in top:
            raise _fail(required, "is required")
    top.setdefault("name", name)
    top["data"] = _data_from(top["data"], "data")
    models = []
    for i, m in enumerate(_list(top["models"], "models")):
        where = f"models[{i}]"
        mv = _mapping(m, where)
        _keys(mv, [f.name for f in dataclasses.fields(ModelSpec)], where)
        mv.setdefault("label", mv.get("model", ""))
        if "model" not in mv:
            raise _fail(f"{where}.model", "is required")
        models.append(ModelSpec(**mv))
    scenarios = []
    for i, s in enumerate(_list(top["scenarios"], "scenarios")):
        where = f"scenarios[{i}]"
        sv = _mapping(s, where)
        _keys(sv, [f.name for f in dataclasses.fields(ScenarioSpec)], where)
        if "kind" not in sv:
            raise _fail(f"{where}.kind", "is required")
        if sv.get("dataset") is not None:
            sv["dataset"] = _data_from(sv["dataset"], f"{where}.dataset")
        scenarios.append(ScenarioSpec(**sv))
    methods = []
    for i, m in enumerate(_list(top.get("methods", []), "methods")):
        where = f"methods[{i}]"
        mv = {"method": m} if isinstance(m, str) else _mapping(m, where)
        _keys(mv, [f.name for f in dataclasses.fields(MethodSpec)], where)
        if "method" not in mv:
            raise _fail(f"{where}.method", "is required")
        mv["overrides"] = tuple(
            Override(**_override(o, f"{where}.overrides[{j}]"))
            for j, o in enumerate(_list(mv.get("overrides", []), f"{where}.overrides"))
        )
        methods.append(MethodSpec(**mv))
    top["models"], top["scenarios"], top["methods"] = tuple(models), tuple(scenarios), methods
    top["seeds"] = tuple(_list(top.get("seeds", [0]), "seeds"))
    return BenchConfig(**top)


def _override(value: Any, where: str) -> dict[str, Any]:
    values = _mapping(value, where)
    _keys(values, ["options", "model", "kind"], where)
    if "options" not in values:
        raise _fail(f"{where}.options", "is required")
    return values


def _list(value: Any, where: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _fail(where, f"must be a list, got {type(value).__name__}")
    return list(value)


def load_config(path: str | os.PathLike[str]) -> BenchConfig:
    """Read a :class:`BenchConfig` from a JSON file (its stem is the default name).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not valid JSON or a field is wrong (the message names it).
    """
    source = Path(path)
    try:
        values = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from exc
    return config_from_dict(values, name=source.stem)
