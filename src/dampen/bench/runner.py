"""Run a benchmark cell by cell, keeping every finished cell in ``results.json``.

A cell is one model × scenario × seed × row (``original``, ``retrain`` or a method). Cells that
share a model, scenario and seed share the original model, the retrained reference and the
importance of D, all cached on disk, so an interrupted run resumes where it stopped: a cell
already in ``results.json`` with the same digest (a hash of everything that affects it) is
not run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dampen._version import __version__
from dampen.api import importance as compute_importance
from dampen.api import unlearn
from dampen.bench.config import (
    CLEAN_ROW,
    CORRECTIVE_KINDS,
    REFERENCE_ROWS,
    SSD_FAMILY,
    BenchConfig,
    DataSpec,
    MethodSpec,
    ScenarioSpec,
)
from dampen.bench.tuning import (
    ValidationSplits,
    choose,
    grid_points,
    original_steps,
    resolve_budget,
    score,
    validation_figures,
    with_point,
)
from dampen.core.files import atomic_write_text
from dampen.data import load_dataset
from dampen.data.base import DataSplits, LabelledData, loader, subsample
from dampen.data.corrupted import label_errors, poison
from dampen.data.scenarios import Scenario, full_class, random_samples, sub_class
from dampen.eval import evaluate
from dampen.eval.corrective import attack_figures, healed_share
from dampen.eval.functional import accuracy
from dampen.eval.report import collect_outputs
from dampen.importances.store import Importance
from dampen.recipe import TrainConfig, cache_key, cached_train, init_model

RESULTS_FORMAT = 1
"""Version of the ``results.json`` layout; part of every cell digest."""

RESULTS_FILE = "results.json"

TUNING_FORMAT = 1
"""Version of the ``tuning.json`` layout; part of every grid point's digest."""

TUNING_FILE = "tuning.json"

CLASS_KINDS = ("full_class", "sub_class")
"""Scenario kinds that forget a class: they have retain- and forget-class test samples."""


@dataclass(frozen=True)
class Cell:
    """One unit of work and of resumption.

    Attributes:
        model: the model label.
        scenario: the scenario label.
        kind: the scenario kind.
        seed: training seed.
        row: the row label (``original``, ``retrain`` or a method's label).
        method: the :class:`MethodSpec` (``None`` for the reference rows).
        options: the method's options for this model and scenario kind.
        digest: sha256 of everything that affects the cell's result.
    """

    model: str
    scenario: str
    kind: str
    seed: int
    row: str
    method: MethodSpec | None
    options: Mapping[str, Any]
    digest: str

    @property
    def key(self) -> str:
        """``model|scenario|seed|row``: the cell's identity in ``results.json``."""
        return f"{self.model}|{self.scenario}|{self.seed}|{self.row}"


def digest(payload: Any) -> str:
    """The SHA-256 of ``payload`` as canonical JSON (sorted keys): what a cache key hashes."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _data_payload(spec: DataSpec) -> dict[str, Any]:
    out = dataclasses.asdict(spec)
    if out.get("validation") is None:  # keeps the digests of configs without validation
        out.pop("validation", None)
    return out


def tuned_key(model: str, scenario: str, row: str) -> str:
    """``model|scenario|row``: where a tuned method's chosen options are filed."""
    return f"{model}|{scenario}|{row}"


def plan(config: BenchConfig, tuned: Mapping[str, Mapping[str, Any]] | None = None) -> list[Cell]:
    """Every cell of ``config``, grouped by model, seed and scenario.

    ``tuned`` maps :func:`tuned_key` to the options a tuned method runs with (they replace
    its configured options).
    """
    tuned = tuned or {}
    cells: list[Cell] = []
    methods = {m.label: m for m in config.methods}
    for model in config.models:
        for seed in config.seeds:
            for scenario in config.scenarios:
                for row in config.rows():
                    if row == CLEAN_ROW and scenario.kind not in CORRECTIVE_KINDS:
                        continue
                    spec = methods.get(row) if row not in (*REFERENCE_ROWS, CLEAN_ROW) else None
                    if spec is not None and scenario.kind not in spec.kinds:
                        continue
                    options = spec.options_for(model.label, scenario.kind) if spec else {}
                    if spec is not None and spec.grid:
                        key = tuned_key(model.label, scenario.label, row)
                        options = dict(sorted(tuned.get(key, options).items()))
                    payload = {
                        "format": RESULTS_FORMAT,
                        "data": _data_payload(config.data_for(scenario)),
                        "model": dataclasses.asdict(model),
                        "scenario": scenario.payload(),
                        "seed": seed,
                        "batch_size": config.batch_size,
                        "eval": [config.eval_batch_size, config.eval_retain_limit],
                        "row": row,
                        "method": None if spec is None else spec.method,
                        "importance": None if spec is None else spec.importance,
                        "heldout": 0 if spec is None else spec.heldout,
                        "options": options,
                    }
                    if (
                        spec is not None
                        and spec.heldout
                        and heldout_from_validation(config, scenario)
                    ):
                        payload["heldout_from"] = "validation"
                    cells.append(
                        Cell(
                            model.label,
                            scenario.label,
                            scenario.kind,
                            seed,
                            row,
                            spec,
                            options,
                            digest(payload),
                        )
                    )
    return cells


def machine_info() -> dict[str, Any]:
    """CPU count, threads, torch, Python and platform: what the header of results.md shows."""
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dampen": __version__,
    }


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the block (``None``: unchanged), then back."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def finite_json(value: Any) -> Any:
    """``value`` with every NaN/±inf float replaced by ``None``, so the JSON is standard
    (``alpha=inf`` from ``alpha="auto"`` means nothing was selected)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_json(path: Path, value: Any, *, indent: int | None = None) -> None:
    """Write standard JSON (no NaN/Infinity) atomically."""
    atomic_write_text(path, json.dumps(finite_json(value), indent=indent, allow_nan=False))


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at ``path``; ``None`` when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        warnings.warn(f"ignoring unreadable {path}: {exc}", stacklevel=2)
        return None
    return value if isinstance(value, dict) else None


def read_results(path: Path) -> dict[str, Any] | None:
    """The results stored at ``path``, or ``None`` when there are none (or they are broken)."""
    if not path.is_file():
        return None
    results = _read_json(path)
    if results is None or results.get("format") != RESULTS_FORMAT:
        warnings.warn(f"ignoring {path}: not a dampen results file", stacklevel=2)
        return None
    return results


# --------------------------------------------------------------------------- data and scenarios


def load_data(spec: DataSpec) -> DataSplits:
    """Load the data set of ``spec``, without its validation samples (see
    :func:`load_with_validation`)."""
    return load_with_validation(spec)[0]


def load_with_validation(spec: DataSpec) -> tuple[DataSplits, LabelledData | None]:
    """The splits of ``spec`` and its validation split (``None`` unless ``spec.validation``).

    With ``test_limit``, the validation samples are drawn (seeded) from the test samples the
    limit leaves out, so the training and test splits are exactly those without validation;
    otherwise they are taken out of the test split.

    Raises:
        ValueError: if there are fewer spare test samples than ``validation``.
    """
    data = _load_splits(spec)
    if spec.validation is None:
        return data, None
    rng = np.random.default_rng(20_000 + spec.seed)
    if spec.test_limit is not None:
        full = _load_splits(dataclasses.replace(spec, test_limit=None)).test
        kept = subsample(full.y.numpy(), spec.test_limit, spec.seed + 1, "data.test_limit")
        if not torch.equal(full.y[torch.from_numpy(kept)], data.test.y):
            raise RuntimeError("the test subset could not be reproduced to set validation aside")
        spare = np.setdiff1d(np.arange(len(full)), kept)
        source, rest = full, None
    else:
        spare = np.arange(len(data.test))
        source, rest = data.test, spare
    if spec.validation > len(spare):
        raise ValueError(
            f"data.validation={spec.validation} but only {len(spare)} unseen test samples are "
            f"left for it in {data.name}"
        )
    chosen = np.sort(rng.choice(spare, size=spec.validation, replace=False))
    pick = torch.from_numpy(chosen)
    validation = LabelledData(
        source.x[pick], source.y[pick], source.classes, f"{source.name}[validation]"
    )
    if rest is not None:  # the validation samples leave the test split
        keep = torch.from_numpy(np.setdiff1d(rest, chosen))
        test = LabelledData(data.test.x[keep], data.test.y[keep], data.classes, data.test.name)
        data = DataSplits(data.train, test, superclasses=data.superclasses)
    return data, validation


def _load_splits(spec: DataSpec) -> DataSplits:
    """Load the data set of ``spec`` (digits get ``limit``/``test_limit`` applied here)."""
    if spec.name != "digits":
        return load_dataset(
            spec.name,
            root=spec.root,
            limit=spec.limit,
            test_limit=spec.test_limit,
            seed=spec.seed,
        )
    if spec.root is not None:
        raise ValueError("data.root does not apply to digits (it is embedded)")
    data = load_dataset("digits", seed=spec.seed)
    if spec.limit is None and spec.test_limit is None:
        return data
    name = f"{data.name}[limit={spec.limit},test_limit={spec.test_limit},seed={spec.seed}]"

    def cut(split: LabelledData, limit: int | None, seed: int, field: str) -> LabelledData:
        keep = subsample(split.y.numpy(), limit, seed, field)
        return LabelledData(split.x[keep], split.y[keep], split.classes, name)

    return DataSplits(
        cut(data.train, spec.limit, spec.seed, "data.limit"),
        cut(data.test, spec.test_limit, spec.seed + 1, "data.test_limit"),
        superclasses=data.superclasses,
    )


def make_scenario(data: DataSplits, spec: ScenarioSpec, seed: int) -> Scenario:
    """Build the :class:`Scenario` of ``spec``; random and corrective scenarios draw Df (and
    the corruption) with ``seed``."""
    if spec.kind in CORRECTIVE_KINDS and spec.share is not None:
        if spec.kind == "poison":
            return poison(
                data,
                spec.share,
                identified=spec.identified,
                identified_count=spec.identified_count,
                seed=seed,
            )
        return label_errors(
            data,
            spec.share,
            identified=spec.identified,
            identified_count=spec.identified_count,
            seed=seed,
            confuse=spec.confuse,
        )
    if spec.kind == "full_class" and spec.cls is not None:
        return full_class(data, spec.cls)
    if spec.kind == "sub_class" and spec.fine_class is not None:
        return sub_class(data, spec.fine_class, spec.superclasses)
    if spec.kind == "random" and spec.count is not None:
        return random_samples(data, spec.count, seed)
    raise ValueError(f"scenario {spec.label!r} is incomplete")


# --------------------------------------------------------------------------- the runner


class BenchRunner:
    """Runs the cells of a :class:`BenchConfig` that ``results.json`` does not hold yet.

    Args:
        config: the benchmark.
        progress: show progress bars (cells, and training epochs inside a cell).
        command: the command line to record in the results.
        log: where to print one line per event (``None``: silent).
        tune: tune the methods that have a grid first (``tuning.json``, resumable); without
            it they run with their configured options.
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        progress: bool = False,
        command: str | None = None,
        log: Callable[[str], None] | None = None,
        tune: bool = True,
    ) -> None:
        self.config = config
        self.tune_methods = tune
        self.progress = progress
        self.command = command or " ".join(sys.argv)
        self.log = log or (lambda _message: None)
        self.out_dir = Path(config.out_dir)
        self.cache_dir = config.cache_path
        self._data: dict[DataSpec, DataSplits] = {}
        self._validation: dict[DataSpec, LabelledData | None] = {}
        self._models: dict[str, tuple[nn.Module, float | None]] = {}
        self._importances: dict[str, tuple[Importance, float | None]] = {}

    @property
    def results_path(self) -> Path:
        """``out_dir/results.json``."""
        return self.out_dir / RESULTS_FILE

    def run(self) -> dict[str, Any]:
        """Run every missing cell; returns the results (also in ``results.json``).

        Raises:
            FileNotFoundError: if a data set's files are missing (before any training).
            ValueError: if a scenario does not fit its data.
        """
        with torch_threads(self.config.threads or os.cpu_count() or 1):
            return self._run()

    def _run(self) -> dict[str, Any]:
        started = perf_counter()
        for spec in self.config.scenarios:  # fail early on missing data or a bad class name
            make_scenario(self._load(self.config.data_for(spec)), spec, self.config.seeds[0])
        device = torch.device(self.config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.config.device!r} but torch sees no CUDA GPU here")
        has_grid = any(m.grid for m in self.config.methods)
        tuned = self.tune() if self.tune_methods else {}
        if not self.tune_methods and has_grid:
            self.log(
                "--no-tune: the rows with a grid run with their configured options and replace "
                "the cells an earlier tuning gave those rows"
            )
        cells = plan(self.config, tuned)
        results = self._start(cells)
        if self.tune_methods and has_grid:
            stored = _read_json(self.tuning_path) or {}
            entries = stored.get("entries", {})
            results["tuning"] = {k: entries[k] for k in _tuned_keys(self.config) if k in entries}
        done = {c["key"] for c in results["cells"] if "error" not in c}
        todo = [c for c in cells if c.key not in done]
        self.log(
            f"{len(cells)} cells: {len(cells) - len(todo)} already done, {len(todo)} to run; "
            f"results in {self.results_path}"
        )
        run_record: dict[str, Any] = {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": 0.0,
            "cells": 0,
        }
        results["runs"].append(run_record)
        bar = tqdm(
            total=len(cells),
            initial=len(cells) - len(todo),
            desc="bench",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            for group in _groups(todo):
                for cell, record in self._run_group(group):
                    results["cells"] = [c for c in results["cells"] if c["key"] != cell.key]
                    results["cells"].append(record)
                    run_record["cells"] += 1
                    run_record["seconds"] = perf_counter() - started
                    self._save(results)
                    bar.set_postfix_str(cell.key, refresh=False)
                    bar.update(1)
                self._forget_models()
        finally:
            bar.close()
            run_record["seconds"] = perf_counter() - started
            self._save(results)
        order = {c.key: i for i, c in enumerate(cells)}
        results["cells"].sort(key=lambda c: order.get(c["key"], len(order)))
        self._save(results)
        return results

    # ----------------------------------------------------------------- results bookkeeping

    def _start(self, cells: list[Cell]) -> dict[str, Any]:
        digests = {c.key: c.digest for c in cells}
        previous = read_results(self.results_path)
        kept: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        if previous is not None:
            stale = 0
            for record in previous.get("cells", []):
                if digests.get(record.get("key")) == record.get("digest"):
                    kept.append(record)
                else:
                    stale += 1
            if stale:
                self.log(f"dropping {stale} stored cell(s) that the config no longer produces")
            runs = list(previous.get("runs", []))
        return {
            "format": RESULTS_FORMAT,
            "name": self.config.name,
            "description": self.config.description,
            "command": self.command,
            "config": self.config.to_dict(),
            "machine": machine_info(),
            "rows": list(self.config.rows()),
            "groups": {m.label: m.group for m in self.config.methods},
            "runs": runs,
            "cells": kept,
        }

    def _save(self, results: Mapping[str, Any]) -> None:
        write_json(self.results_path, results, indent=1)

    # ----------------------------------------------------------------- cached artefacts

    def _load(self, spec: DataSpec) -> DataSplits:
        if spec not in self._data:
            self._data[spec], self._validation[spec] = load_with_validation(spec)
        return self._data[spec]

    def _recipe(self, model_label: str) -> TrainConfig:
        """The training recipe of the model labelled ``model_label``."""
        return next(m for m in self.config.models if m.label == model_label).train_config()

    def _scenario_spec(self, label: str) -> ScenarioSpec:
        """The scenario labelled ``label``."""
        return next(s for s in self.config.scenarios if s.label == label)

    def _trained(
        self, model_label: str, data: DataSplits, indices: Any, seed: int
    ) -> tuple[nn.Module, float | None]:
        """A model trained with the recipe (cached on disk) and its training seconds."""
        recipe = self._recipe(model_label)
        key = cache_key(recipe, data, indices, seed)
        if key in self._models:
            return self._models[key]
        cached = (self.cache_dir / f"{key}.safetensors").is_file()
        sidecar = self.cache_dir / f"{key}.bench.json"
        t = perf_counter()
        model = cached_train(
            recipe,
            data,
            indices,
            seed,
            self.cache_dir,
            progress=self.progress,
            device=self.config.device,
        )
        seconds: float | None = perf_counter() - t
        if not cached:
            atomic_write_text(sidecar, json.dumps({"train_seconds": seconds}))
        elif sidecar.is_file():
            seconds = float(json.loads(sidecar.read_text())["train_seconds"])
        else:
            seconds = None  # trained outside the bench: its time is unknown
        self._models[key] = (model, seconds)
        return self._models[key]

    def _importance(
        self, original: nn.Module, model_key: str, train: LabelledData, estimator: str
    ) -> tuple[Importance, float | None]:
        """The importance of D for ``original`` (cached on disk) and the seconds it took."""
        key = digest({"model": model_key, "estimator": estimator, "batch": self.config.batch_size})
        if key in self._importances:
            return self._importances[key]
        path = self.cache_dir / f"importance-{key}.safetensors"
        sidecar = self.cache_dir / f"importance-{key}.json"
        if path.is_file() and sidecar.is_file():
            try:
                imp = Importance.load(path, model=original)
                seconds = float(json.loads(sidecar.read_text())["seconds"])
                self._importances[key] = (imp, seconds)
                return self._importances[key]
            except (OSError, ValueError, KeyError) as exc:
                warnings.warn(f"recomputing a broken cached importance: {exc}", stacklevel=2)
        batches = loader(train, batch_size=self.config.batch_size)
        t = perf_counter()
        imp = compute_importance(original, batches, estimator=estimator, progress=self.progress)
        seconds = perf_counter() - t
        imp.save(path)
        atomic_write_text(sidecar, json.dumps({"seconds": seconds, "estimator": estimator}))
        self._importances[key] = (imp, seconds)
        return self._importances[key]

    def _forget_models(self) -> None:
        # Bound memory: drop the in-memory models and importances once more than 8 are held.
        if len(self._models) > 8:
            self._models.clear()
        if len(self._importances) > 8:
            self._importances.clear()

    # ----------------------------------------------------------------- tuning

    @property
    def tuning_path(self) -> Path:
        """``out_dir/tuning.json``: every grid point run so far and the chosen ones."""
        return self.out_dir / TUNING_FILE

    def tune(self) -> dict[str, dict[str, Any]]:
        """Tune every method with a grid (resuming from ``tuning.json``).

        Returns:
            The chosen options by :func:`tuned_key`.
        """
        specs = [m for m in self.config.methods if m.grid]
        if not specs:
            return {}
        stored = _read_json(self.tuning_path)
        entries: dict[str, Any] = {}
        if stored is not None and stored.get("format") == TUNING_FORMAT:
            entries = dict(stored.get("entries", {}))
        seed = self.config.seeds[0]
        chosen: dict[str, dict[str, Any]] = {}
        for model_spec in self.config.models:
            for scenario_spec in self.config.scenarios:
                todo = [m for m in specs if scenario_spec.kind in m.kinds]
                if todo:
                    self._tune_scenario(model_spec.label, scenario_spec, todo, seed, entries)
                for spec in todo:
                    key = tuned_key(model_spec.label, scenario_spec.label, spec.label)
                    entry = entries[key]
                    if entry.get("chosen") is None:
                        errors = "; ".join(sorted({str(p.get("error")) for p in entry["points"]}))
                        raise ValueError(
                            f"tuning {key}: every grid point failed ({errors}); see "
                            f"{self.tuning_path} (its stored points are reused: delete the file "
                            "to run them again)"
                        )
                    chosen[key] = entry["points"][entry["chosen"]]["options"]
        return chosen

    def _save_tuning(self, entries: Mapping[str, Any]) -> None:
        write_json(
            self.tuning_path,
            {"format": TUNING_FORMAT, "name": self.config.name, "entries": entries},
            indent=1,
        )

    def _tune_scenario(
        self,
        model_label: str,
        scenario_spec: ScenarioSpec,
        specs: list[MethodSpec],
        seed: int,
        entries: dict[str, Any],
    ) -> None:
        data_spec = self.config.data_for(scenario_spec)
        data = self._load(data_spec)
        validation = self._validation[data_spec]
        if validation is None:
            raise ValueError(f"tuning needs data.validation for {scenario_spec.label!r}")
        scenario = make_scenario(data, scenario_spec, seed)
        original, _ = self._trained(model_label, scenario.data, None, seed)
        model_key = cache_key(self._recipe(model_label), scenario.data, None, seed)
        held = make_scenario(
            DataSplits(data.train, validation, superclasses=data.superclasses), scenario_spec, seed
        )
        bs = self.config.eval_batch_size
        val = held.data.test
        splits = ValidationSplits(
            kind=scenario.kind,
            retain=loader(val, held.retain_test, batch_size=bs),
            forget=loader(val, held.forget_test, batch_size=bs)
            if scenario.kind in CLASS_KINDS
            else None,
            forget_train=loader(scenario.data.train, scenario.forget, batch_size=bs),
        )
        if scenario.kind in CLASS_KINDS and len(held.forget_test) == 0:
            raise ValueError(
                f"the validation split has no sample of the forgotten class of "
                f"{scenario_spec.label!r}: raise data.validation"
            )
        reference = validation_figures(original, splits)
        forget = loader(scenario.data.train, scenario.forget, batch_size=self.config.batch_size)
        for spec in specs:
            key = tuned_key(model_label, scenario_spec.label, spec.label)
            base = spec.options_for(model_label, scenario.kind)
            previous = {p["digest"]: p for p in entries.get(key, {}).get("points", [])}
            points: list[dict[str, Any]] = []
            for point in grid_points(spec.grid):
                options = with_point(spec.method, base, point)
                point_key = digest(
                    {
                        "format": TUNING_FORMAT,
                        "data": _data_payload(data_spec),
                        "model": model_key,
                        "scenario": scenario_spec.payload(),
                        "seed": seed,
                        "batch_size": self.config.batch_size,
                        "method": spec.method,
                        "heldout": spec.heldout,
                        "options": options,
                    }
                )
                if point_key in previous:  # a point is deterministic: its failure too
                    points.append(previous[point_key])
                    continue
                record: dict[str, Any] = {"point": point, "options": options, "digest": point_key}
                cell = Cell(
                    model_label,
                    scenario_spec.label,
                    scenario.kind,
                    seed,
                    spec.label,
                    spec,
                    options,
                    point_key,
                )
                try:
                    model, stats = self._unlearn(cell, spec, original, model_key, scenario, forget)
                    figures = validation_figures(model, splits)
                    record.update(figures)
                    record["score"] = score(figures, reference["retain_val"])
                    record["steps"] = stats.get("steps")
                    record["seconds"] = stats.get("seconds")
                except Exception as exc:  # a diverging grid point must not end the tuning
                    record["error"] = f"{type(exc).__name__}: {exc}"
                points.append(record)
                entries[key] = _tuning_entry(spec, reference, points, final=False)
                self._save_tuning(entries)
                self.log(f"tuned {key} {point}: {record.get('score', record.get('error'))}")
            entries[key] = _tuning_entry(spec, reference, points, final=True)
            self._save_tuning(entries)

    # ----------------------------------------------------------------- one group of cells

    def _run_group(self, group: list[Cell]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        first = group[0]
        spec = self._scenario_spec(first.scenario)
        scenario = make_scenario(self._load(self.config.data_for(spec)), spec, first.seed)
        data, train = scenario.data, scenario.data.train
        original, original_seconds = self._trained(first.model, data, None, first.seed)
        retrained, retrain_seconds = self._trained(first.model, data, scenario.retain, first.seed)
        recipe = self._recipe(first.model)
        model_key = cache_key(recipe, data, None, first.seed)
        # ZRF's "incompetent" model: the same architecture, freshly initialised (seeded).
        incompetent = init_model(
            recipe, data, seed=first.seed + 10_000, device=self.config.device
        ).eval()
        splits = self._splits(scenario, first.seed)
        bs = self.config.batch_size
        forget = loader(train, scenario.forget, batch_size=bs)
        base = {
            "model": first.model,
            "scenario": first.scenario,
            "kind": first.kind,
            "seed": first.seed,
            "forget_samples": len(scenario.forget),
            "original_train_seconds": original_seconds,
        }
        corrective = self._corrective(scenario, first.model, first.seed, original)
        for cell in group:
            record: dict[str, Any] = {
                "key": cell.key,
                "digest": cell.digest,
                **base,
                "row": cell.row,
                "method": cell.row if cell.method is None else cell.method.method,
                "group": "reference" if cell.method is None else cell.method.group,
                "options": dict(cell.options),
            }
            try:
                if cell.row == CLEAN_ROW:
                    assert corrective is not None  # the clean row is planned for them only
                    model, record["seconds"] = corrective.clean, corrective.clean_seconds
                elif cell.method is None:
                    model = original if cell.row == "original" else retrained
                    record["seconds"] = None if cell.row == "original" else retrain_seconds
                else:
                    model, stats = self._unlearn(
                        cell, cell.method, original, model_key, scenario, forget
                    )
                    record.update(stats)
                report = evaluate(model, splits, retrained=retrained, incompetent=incompetent)
                record["metrics"] = report.to_dict()
                if corrective is not None:
                    record["corrective"] = corrective.figures(
                        model, report.test_acc, report.forget_test_acc
                    )
            except Exception as exc:  # one failing method must not end an hour-long run
                record["error"] = f"{type(exc).__name__}: {exc}"
                self.log(f"{cell.key} failed: {record['error']}")
            yield cell, record

    def _corrective(
        self, scenario: Scenario, model_label: str, seed: int, original: nn.Module
    ) -> _Corrective | None:
        """The clean reference of a corrective scenario and the poisoned model's healed
        accuracy (``None`` for the other scenarios)."""
        if scenario.clean is None:
            return None
        clean, seconds = self._trained(model_label, scenario.clean, None, seed)
        triggered = None
        if scenario.attack is not None and scenario.target is not None:
            triggered = loader(scenario.attack, batch_size=self.config.eval_batch_size)
        test = loader(scenario.data.test, batch_size=self.config.eval_batch_size)
        return _Corrective(clean, seconds, triggered, scenario.target, original, test)

    def _splits(self, scenario: Scenario, seed: int) -> dict[str, Any]:
        train, test = scenario.data.train, scenario.data.test
        bs = self.config.eval_batch_size
        retain = scenario.retain
        limit = self.config.eval_retain_limit
        if limit is not None and len(retain) > limit:
            rng = np.random.default_rng(10_000 + seed)
            pick = np.sort(rng.choice(len(retain), size=limit, replace=False))
            retain = retain[torch.from_numpy(pick)]
        splits: dict[str, Any] = {
            "retain": loader(train, retain, batch_size=bs),
            "forget": loader(train, scenario.forget, batch_size=bs),
            "test": loader(test, scenario.test, batch_size=bs),
        }
        if scenario.kind in CLASS_KINDS:
            splits["retain_test"] = loader(test, scenario.retain_test, batch_size=bs)
        if len(scenario.forget_test):
            splits["forget_test"] = loader(test, scenario.forget_test, batch_size=bs)
        return splits

    def _heldout(self, scenario: Scenario, count: int, seed: int, label: str) -> Any:
        """``count`` unseen samples for ``heldout=``, drawn with ``seed``: in corrective
        scenarios from the validation split when there is one (the test split is scored),
        else test samples of the retained classes (class scenarios) or of any class."""
        spec = self._scenario_spec(label)
        source = scenario.data.test
        if heldout_from_validation(self.config, spec):
            validation = self._validation[self.config.data_for(spec)]
            assert validation is not None  # heldout_from_validation checked it
            source = validation
            pool = torch.arange(len(validation))
        elif scenario.kind in CLASS_KINDS:
            pool = scenario.retain_test
        else:
            pool = scenario.test
        if count > len(pool):
            raise ValueError(f"heldout={count} but only {len(pool)} samples can be drawn")
        g = torch.Generator().manual_seed(seed)
        chosen = pool[torch.randperm(len(pool), generator=g)[:count]].sort().values
        return loader(source, chosen, batch_size=self.config.eval_batch_size)

    def _unlearn(
        self,
        cell: Cell,
        spec: MethodSpec,
        original: nn.Module,
        model_key: str,
        scenario: Scenario,
        forget: Any,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Run one method on a copy of ``original``; the model and the figures to record."""
        train = scenario.data.train
        bs = self.config.batch_size
        recipe = self._recipe(cell.model)
        train_steps = original_steps(recipe.epochs, recipe.batch_size, len(train))
        kwargs, budget_steps = resolve_budget(spec.method, spec.pinned(cell.options), train_steps)
        extra: dict[str, Any] = {"importance": None, "importance_seconds": None}
        if budget_steps is not None:
            extra.update(budget_steps=budget_steps, original_steps=train_steps)
        if spec.method in SSD_FAMILY:
            estimator = str(spec.estimator(cell.options))
            if spec.importance == "stored":
                imp, imp_seconds = self._importance(original, model_key, train, estimator)
                kwargs["importance"] = imp
                extra.update(importance="stored", importance_seconds=imp_seconds)
            else:
                kwargs["train"] = loader(train, batch_size=bs)
                extra["importance"] = "on_the_fly"
        else:
            kwargs["retain"] = loader(
                train, scenario.retain, batch_size=bs, shuffle=True, seed=cell.seed
            )
        if spec.heldout:
            kwargs["heldout"] = self._heldout(scenario, spec.heldout, cell.seed, cell.scenario)
        t = perf_counter()
        result = unlearn(original, forget, method=spec.method, seed=cell.seed, **kwargs)
        wall = perf_counter() - t
        stats = result.stats
        seconds = stats.get("seconds", {}) if isinstance(stats.get("seconds"), dict) else {}
        extra["seconds"] = float(seconds.get("total", wall))
        extra["wall_seconds"] = wall
        extra["seconds_breakdown"] = {k: float(v) for k, v in seconds.items()}
        for name in ("alpha", "selected", "selected_fraction", "auto", "steps"):
            if name in stats:
                extra[name] = stats[name]
        return result.model, extra


class _Corrective:
    """What a corrective scenario's cells are measured against: the model trained on clean
    data and, for a backdoor, the triggered test images."""

    def __init__(
        self,
        clean: nn.Module,
        clean_seconds: float | None,
        triggered: Any,
        target: int | None,
        poisoned: nn.Module,
        test: Any,
    ) -> None:
        self.clean, self.clean_seconds = clean, clean_seconds
        self.original_test_acc = _test_accuracy(poisoned, test)
        self.triggered, self.target = triggered, target
        self._ends: tuple[float, float] | None = None
        if triggered is not None and target is not None:
            before = attack_figures(poisoned, triggered, target)["healed_acc"]
            after = attack_figures(clean, triggered, target)["healed_acc"]
            self._ends = (before, after)

    def figures(
        self, model: nn.Module, test_acc: float, forget_test_acc: float | None
    ) -> dict[str, Any]:
        """The drop of ``test_acc`` from the corrupted original's, and the healed accuracy,
        attack success and healed share (poison) or the accuracy on the confused classes'
        test samples, ``forget_test_acc`` (label errors)."""
        out: dict[str, Any] = {"test_drop": self.original_test_acc - test_acc}
        if self.triggered is None or self.target is None or self._ends is None:
            out["confused_acc"] = forget_test_acc
            return out
        out.update(attack_figures(model, self.triggered, self.target))
        out["healed"] = healed_share(out["healed_acc"], *self._ends)
        return out


def _test_accuracy(model: nn.Module, batches: Any) -> float:
    out = collect_outputs(model, batches)
    return accuracy(out.logits, out.targets)


def heldout_from_validation(config: BenchConfig, scenario: ScenarioSpec) -> bool:
    """Whether ``heldout=`` samples come from the validation split: in corrective scenarios
    whose data has one (their test split is what the figures score)."""
    return scenario.kind in CORRECTIVE_KINDS and config.data_for(scenario).validation is not None


def _tuning_entry(
    spec: MethodSpec, reference: Mapping[str, float], points: list[dict[str, Any]], *, final: bool
) -> dict[str, Any]:
    """A row's record in ``tuning.json``; ``chosen`` (the best point's index, ``None`` while
    the grid is unfinished or when no point finished) is set once ``final``."""
    best: int | None = None
    if final:
        with contextlib.suppress(ValueError):  # no point finished
            best = choose(points)
    return {
        "method": spec.method,
        "grid": spec.grid,
        "original": reference,
        "points": points,
        "chosen": best,
    }


def _tuned_keys(config: BenchConfig) -> list[str]:
    """The :func:`tuned_key` of every tuned row, in the config's order."""
    return [
        tuned_key(model.label, scenario.label, spec.label)
        for model in config.models
        for scenario in config.scenarios
        for spec in config.methods
        if spec.grid and scenario.kind in spec.kinds
    ]


def _groups(cells: list[Cell]) -> Iterator[list[Cell]]:
    """Consecutive cells sharing model, scenario and seed."""
    group: list[Cell] = []
    for cell in cells:
        if group and (cell.model, cell.scenario, cell.seed) != (
            group[0].model,
            group[0].scenario,
            group[0].seed,
        ):
            yield group
            group = []
        group.append(cell)
    if group:
        yield group


def run_bench(
    config: BenchConfig,
    *,
    progress: bool = False,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    tune: bool = True,
) -> dict[str, Any]:
    """Run ``config`` (resuming from its ``results.json``) and write the report and plots.

    ``tune``: tune the methods that have a grid first (see :class:`BenchRunner`).

    Returns:
        The results, as written to ``out_dir/results.json``.
    """
    from dampen.bench.plots import write_plots
    from dampen.bench.report import write_markdown

    results = BenchRunner(config, progress=progress, command=command, log=log, tune=tune).run()
    out = Path(config.out_dir)
    write_markdown(results, out / "results.md")
    write_plots(results, out)
    return results
