"""``lm-facts``: forget every fact of a few fictitious people in a small causal language model.

A TOFU-like task generated in code (:mod:`dampen.data.facts`): a GPT-2-style model is trained
from scratch until it recalls the trained people's facts; then some people are forgotten by
SSD (fixed α, ``alpha="auto"`` without and with held-out people), by gradient-ascent baselines
and by fine-tuning, against retraining without them. Reported per row: the exact match of the
greedily generated answers on the forgotten, the retained and the held-out people (who were
never trained on: the level a retrained model reaches), the perplexity on the held-out people's
text and the seconds of the request.

Baselines are tuned on a separate draw of people and model (``tuning_seed``), never on the
seeds that are reported: each grid point is scored by how far the forget accuracy lands from
the held-out accuracy plus what it costs on the retained people.

The run is resumable: trained models are cached by a digest of what made them, and finished
cells are skipped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

import dampen
from dampen.bench.facts_recipe import FactsRecipe, init_facts_model, train_facts_model
from dampen.bench.runner import digest, machine_info, torch_threads, write_json
from dampen.core.files import atomic_write, atomic_write_text
from dampen.core.progress import progress_bar
from dampen.data.facts import FactsData, Person, QAItem, forget_split, make_facts, qa_batches
from dampen.eval.answers import answer_accuracy, perplexity, teacher_forced_accuracy
from dampen.importances.estimators import PAPER_ESTIMATOR

FORMAT = 1

Row = dict[str, Any]
"""A row of the table: ``{"name", "method", "options", "heldout"?, "tuned"?}``."""


@dataclass(frozen=True)
class LMFactsConfig:
    """What ``lm-facts`` trains, forgets and compares.

    Attributes:
        people: trained people; ``heldout_people`` more are never trained on. Half of those
            are handed to ``alpha="auto"`` as ``heldout=`` and the other half are evaluated.
        forget_counts: how many people each request forgets (1, 5 and 10 % as TOFU's
            forget01/05/10 splits).
        seeds: data, model and split seeds of the reported runs.
        tuning_seed: the seed of the separate run the baselines are tuned on.
        recipe: the GPT-2 and how it is trained (until it recalls the trained people); its
            seed is replaced by each run's.
        batch_size: questions per batch of the requests and of the stored importance.
        rows: the methods compared (besides ``original`` and ``retrain``).
        grids: per tuned row, the option sets tried on the tuning run.
    """

    name: str = "lm-facts"
    people: int = 200
    heldout_people: int = 40
    forget_counts: tuple[int, ...] = (2, 10, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    tuning_seed: int = 1000
    recipe: FactsRecipe = field(default_factory=FactsRecipe)
    batch_size: int = 32
    rows: tuple[Row, ...] = ()
    grids: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.tuning_seed in self.seeds:
            raise ValueError(
                f"tuning_seed {self.tuning_seed} is one of the reported seeds {self.seeds}: the "
                "baselines must be tuned on another draw of people and model"
            )

    def payload(self, what: str, **extra: Any) -> dict[str, Any]:
        """What a cached model or a cell depends on."""
        base = {
            "people": self.people,
            "heldout_people": self.heldout_people,
            "recipe": {k: v for k, v in asdict(self.recipe).items() if k != "seed"},
            "batch_size": self.batch_size,
        }
        return {"what": what, **base, **extra}


def default_rows() -> tuple[Row, ...]:
    """SSD at the paper's α, ``alpha="auto"`` without and with held-out people, and the tuned
    baselines: gradient ascent on the forget set, NegGrad+ and fine-tuning on the rest."""
    return (
        {"name": "ssd (α 10)", "method": "ssd", "options": {"alpha": 10.0, "lambda_": 1.0}},
        {"name": "ssd (auto)", "method": "ssd", "options": {}},
        {"name": "ssd (auto, heldout)", "method": "ssd", "options": {}, "heldout": True},
        {"name": "gradient ascent", "method": "neggrad", "options": {"plus": False}, "tuned": True},
        {"name": "neggrad+", "method": "neggrad", "options": {"plus": True}, "tuned": True},
        {"name": "finetune", "method": "finetune", "options": {}, "tuned": True},
    )


HELDOUT_LEVEL = "heldout"
"""An option value replaced by the original model's accuracy on the held-out people handed to
auto (what a model owner can measure): the ascent rows stop once the forget set is there."""


def default_grids() -> dict[str, tuple[dict[str, Any], ...]]:
    """Two learning rates × three budgets per tuned row (Adam, as LMs are trained); the ascent
    rows stop early at the held-out level. The largest budgets are about 10 % of the original
    training's steps for fine-tuning and 20 passes over 20 people's questions for ascent."""
    adam = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0}
    ascent = tuple(
        {**adam, "lr": lr, "steps": steps, "stop_accuracy": HELDOUT_LEVEL}
        for lr in (1e-4, 1e-3)
        for steps in (10, 40, 160)
    )
    tune = tuple(
        {**adam, "lr": lr, "steps": steps} for lr in (1e-4, 1e-3) for steps in (20, 80, 300)
    )
    return {"gradient ascent": ascent, "neggrad+": ascent, "finetune": tune}


LM_FACTS = LMFactsConfig(rows=default_rows(), grids=default_grids())


def all_rows(config: LMFactsConfig) -> list[Row]:
    """Every row of the table: the original and retraining references, then the methods."""
    return [{"name": "original"}, {"name": "retrain"}, *config.rows]


def _digest(payload: Any) -> str:
    """The cache key of ``payload``: the bench's digest, cut to 20 hex digits."""
    return digest(payload)[:20]


@dataclass
class _Data:
    """One seed's people, split for a request."""

    facts: FactsData
    heldout_for_auto: tuple[QAItem, ...]
    heldout_eval: tuple[QAItem, ...]
    heldout_level: float = math.nan
    """The original model's teacher-forced accuracy on ``heldout_for_auto`` (set once trained)."""


def _data(config: LMFactsConfig, seed: int) -> _Data:
    facts = make_facts(config.people, config.heldout_people, seed=seed)
    half = len(facts.heldout_people) // 2
    return _Data(
        facts,
        facts.items(facts.heldout_people[:half]),
        facts.items(facts.heldout_people[half:]),
    )


class LMFactsRunner:
    """Runs (and resumes) ``lm-facts`` into ``out_dir``: ``results.json`` and ``results.md``."""

    def __init__(
        self,
        config: LMFactsConfig,
        out_dir: str | Path,
        *,
        progress: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    def run(self) -> dict[str, Any]:
        """Tune the baselines, then run every seed × forget count × row not yet done."""
        self.out.mkdir(parents=True, exist_ok=True)
        with torch_threads(self.config.threads):
            results = self._load()
            results["tuning"] = self._tune(results.get("tuning", {}))
            self._drop_stale(results)
            self._save(results)
            for seed in self.config.seeds:
                for count in self.config.forget_counts:
                    self._cells(results, seed, count)
        return results

    # -- models -------------------------------------------------------------------------
    def _trained(
        self, data: FactsData, people: Sequence[Person], seed: int, what: str
    ) -> tuple[nn.Module, float]:
        """A model trained on every question about ``people`` (from the cache when it was
        trained before), and the seconds its training took."""
        recipe = replace(self.config.recipe, seed=seed)
        names = [p.name for p in people]
        key = _digest(self.config.payload(what, seed=seed, people=names))
        cache = self.out / "cache"
        weights, meta = cache / f"{key}.safetensors", cache / f"{key}.json"
        if weights.is_file() and meta.is_file():
            model = init_facts_model(data, recipe)
            load_model(model, str(weights))
            return model.eval(), float(json.loads(meta.read_text())["seconds"])
        self.log(f"training {what} (seed {seed}, {len(people)} people)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trained = train_facts_model(data, recipe, people=people, progress=self.progress)
        model = trained.model.eval()
        atomic_write(weights, lambda tmp: save_model(model, tmp))
        info = {"seconds": trained.seconds, "epochs": trained.epochs,
                "train_accuracy": trained.train_accuracy, "reached": trained.reached}  # fmt: skip
        atomic_write_text(meta, json.dumps(info))
        return model, trained.seconds

    # -- cells --------------------------------------------------------------------------
    def _cells(self, results: dict[str, Any], seed: int, count: int) -> None:
        c = self.config
        rows = all_rows(c)
        cells = results["cells"]
        tuning = results["tuning"]
        todo = [r for r in rows if self._key(seed, count, r, tuning) not in cells]
        if not todo:
            return
        d = _data(c, seed)
        original, original_seconds = self._trained(d.facts, d.facts.train_people, seed, "original")
        d.heldout_level = teacher_forced_accuracy(original, _loader(d.facts, d.heldout_for_auto, c))
        split = forget_split(d.facts, count, seed=seed, batch_size=c.batch_size)
        start = time.perf_counter()
        importance = dampen.importance(
            original, _loader(d.facts, d.facts.train_items, c), estimator=PAPER_ESTIMATOR
        )
        importance_seconds = time.perf_counter() - start
        for row in progress_bar(todo, enabled=self.progress, desc=f"seed {seed}, forget {count}"):
            name = row["name"]
            if name == "original":
                model, seconds = original, original_seconds
            elif name == "retrain":
                model, seconds = self._trained(d.facts, split.retain_people, seed, "retrain")
            else:
                options = self._options(row, tuning, count)
                model, seconds = _unlearn(row, options, original, split, d, importance, seed)
            figures = _figures(model, d, split.forget_items, split.retain_items)
            cells[self._key(seed, count, row, tuning)] = {
                "seed": seed,
                "forget_people": count,
                "row": name,
                "seconds": seconds,
                "importance_seconds": importance_seconds if row.get("method") else None,
                **figures,
            }
            self.log(
                f"seed {seed} forget {count} {name}: forget {figures['forget_acc']:.3f} "
                f"retain {figures['retain_acc']:.3f} ppl {figures['perplexity']:.2f} "
                f"{seconds:.1f}s"
            )
            self._save(results)

    def _planned(self, tuning: Mapping[str, Any]) -> set[str]:
        rows = all_rows(self.config)
        c = self.config
        return {self._key(s, n, r, tuning) for s in c.seeds for n in c.forget_counts for r in rows}

    def _drop_stale(self, results: dict[str, Any]) -> None:
        """Forget stored cells that a planned cell replaces (e.g. a tuned row whose options
        changed), so that the table averages only current ones; cells of seeds or forget counts
        this config does not run are kept."""
        planned = self._planned(results["tuning"])
        c = self.config
        names = [r["name"] for r in all_rows(c)]
        places = {(s, n, name) for s in c.seeds for n in c.forget_counts for name in names}
        stale = [
            key
            for key, cell in results["cells"].items()
            if key not in planned and (cell["seed"], cell["forget_people"], cell["row"]) in places
        ]
        for key in stale:
            del results["cells"][key]
        if stale:
            self.log(f"dropping {len(stale)} stored cell(s) that the config no longer produces")

    def _key(self, seed: int, count: int, row: Row, tuning: Mapping[str, Any]) -> str:
        """A cell's identity: what it ran, with a tuned row's chosen options."""
        payload = self.config.payload("cell", seed=seed, count=count, row=row)
        if row.get("tuned"):
            payload["options"] = self._options(row, tuning, count)
        return _digest(payload)

    def _options(self, row: Row, tuning: Mapping[str, Any], count: int) -> dict[str, Any]:
        options = dict(row.get("options", {}))
        if row.get("tuned"):
            options.update(tuning[f"{row['name']}|{count}"]["best"])
        return options

    # -- tuning -------------------------------------------------------------------------
    def _tune(self, done: Mapping[str, Any]) -> dict[str, Any]:
        c = self.config
        tuned = [r for r in c.rows if r.get("tuned")]
        entries = dict(done)
        keys = {f"{r['name']}|{count}": r for r in tuned for count in c.forget_counts}
        todo = {
            k: r for k, r in keys.items() if entries.get(k, {}).get("key") != self._tuning_key(k, r)
        }
        if not todo:
            return entries
        d = _data(c, c.tuning_seed)
        original, _ = self._trained(d.facts, d.facts.train_people, c.tuning_seed, "original")
        heldout_acc = teacher_forced_accuracy(original, _loader(d.facts, d.heldout_for_auto, c))
        d.heldout_level = heldout_acc
        for key, row in todo.items():
            count = int(key.rsplit("|", 1)[1])
            split = forget_split(d.facts, count, seed=c.tuning_seed, batch_size=c.batch_size)
            retain_before = teacher_forced_accuracy(original, split.retain)
            tried: list[dict[str, Any]] = []
            for options in _grid(c, row):
                model, _ = _unlearn(row, options, original, split, d, None, c.tuning_seed)
                forget = teacher_forced_accuracy(model, split.forget)
                retain = teacher_forced_accuracy(model, split.retain)
                score = abs(forget - heldout_acc) + max(0.0, retain_before - retain)
                tried.append({"options": dict(options), "forget": forget, "retain": retain,
                              "score": score})  # fmt: skip
            best = min(tried, key=lambda t: t["score"])
            entries[key] = {"key": self._tuning_key(key, row), "grid": _grid(c, row),
                            "best": best["options"], "tried": tried,
                            "heldout_acc": heldout_acc, "retain_before": retain_before}  # fmt: skip
            self.log(f"tuned {key}: {best['options']} (score {best['score']:.3f})")
        return entries

    def _tuning_key(self, key: str, row: Row) -> str:
        """What a tuning entry depends on: the tuning run's data, model and grid."""
        c = self.config
        return _digest(c.payload("tuning", seed=c.tuning_seed, entry=key, grid=_grid(c, row)))

    # -- files --------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self.results_path.is_file():
            stored = json.loads(self.results_path.read_text())
            if stored.get("format") == FORMAT and stored.get("name") == self.config.name:
                return dict(stored)
        return {"format": FORMAT, "name": self.config.name, "cells": {}, "tuning": {}}

    def _save(self, results: dict[str, Any]) -> None:
        results["config"] = _config_json(self.config)
        results["machine"] = machine_info()
        write_json(self.results_path, results, indent=1)
        atomic_write_text(self.out / "results.md", report(results, self.config))


def _grid(config: LMFactsConfig, row: Row) -> list[dict[str, Any]]:
    """The option sets a tuned row tries: its own options with each grid point on top."""
    return [{**row.get("options", {}), **o} for o in config.grids.get(row["name"], ())]


def _config_json(config: LMFactsConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config), default=str))


def _loader(data: FactsData, items: Sequence[QAItem], config: LMFactsConfig) -> Any:
    return qa_batches(items, data.tokenizer, batch_size=config.batch_size, length=data.max_length())


def _unlearn(
    row: Row,
    options: Mapping[str, Any],
    original: nn.Module,
    split: Any,
    d: _Data,
    importance: dampen.Importance | None,
    seed: int,
) -> tuple[nn.Module, float]:
    """Run one row's request; seconds exclude the stored importance (made once at training)."""
    method = row["method"]
    kwargs: dict[str, Any] = dict(options)
    if kwargs.get("stop_accuracy") == HELDOUT_LEVEL:
        kwargs["stop_accuracy"] = d.heldout_level
    if method in ("ssd", "lfssd"):
        kwargs["importance"] = importance
        if row.get("heldout"):
            kwargs["heldout"] = qa_batches(
                d.heldout_for_auto, d.facts.tokenizer, length=d.facts.max_length()
            )
    else:
        kwargs["retain"] = split.retain
    start = time.perf_counter()
    result = dampen.unlearn(original, split.forget, method=method, seed=seed, **kwargs)
    return result.model.eval(), time.perf_counter() - start


def _figures(
    model: nn.Module, d: _Data, forget: Sequence[QAItem], retain: Sequence[QAItem]
) -> dict[str, float]:
    tok = d.facts.tokenizer
    text = qa_batches(d.heldout_eval, tok, full_text=True, length=d.facts.max_length())
    return {
        "forget_acc": answer_accuracy(model, forget, tok),
        "retain_acc": answer_accuracy(model, retain, tok),
        "heldout_acc": answer_accuracy(model, d.heldout_eval, tok),
        "perplexity": perplexity(model, text),
    }


# -- report -----------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summary(results: Mapping[str, Any]) -> dict[tuple[int, str], dict[str, float]]:
    """Means over seeds per (forget count, row)."""
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for cell in results["cells"].values():
        groups.setdefault((cell["forget_people"], cell["row"]), []).append(cell)
    out = {}
    for key, cells in groups.items():
        out[key] = {
            name: _mean([float(c[name]) for c in cells])
            for name in ("forget_acc", "retain_acc", "heldout_acc", "perplexity", "seconds")
        }
        out[key]["seeds"] = len(cells)
    return out


def report(results: Mapping[str, Any], config: LMFactsConfig) -> str:
    """The markdown table with the goal checks (forgotten within 5 points of retraining's,
    retained within 2 points of the original's)."""
    means = summary(results)
    lines = [
        f"# {config.name}",
        "",
        f"Command: `dampen bench --preset {config.name}`. GPT-2 ({config.recipe.n_layer} layers, "
        f"width {config.recipe.n_embd}) trained from scratch on {config.people} fictitious people; "
        f"{config.heldout_people} held-out people never trained on (half as `heldout=` for "
        "auto, half evaluated). Accuracies are exact match of greedy answers, in %; "
        "perplexity on the evaluated held-out people's question-and-answer text. Means over "
        "seeds; seconds of the request (SSD's exclude the stored importance, computed once "
        "after training).",
        "",
    ]
    rows = [r["name"] for r in all_rows(config)]
    for count in config.forget_counts:
        retrain = means.get((count, "retrain"))
        original = means.get((count, "original"))
        lines += [
            f"## Forget {count} of {config.people} people",
            "",
            "| row | seeds | forgotten | retained | held-out | perplexity | seconds | goal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in rows:
            m = means.get((count, name))
            if m is None:
                continue
            goal = ""
            if retrain and original and name not in ("original", "retrain"):
                gap_f = 100 * (m["forget_acc"] - retrain["forget_acc"])
                gap_r = 100 * (m["retain_acc"] - original["retain_acc"])
                ok = abs(gap_f) <= 5 and gap_r >= -2
                goal = f"{'met' if ok else 'missed'} ({gap_f:+.1f} / {gap_r:+.1f})"
            lines.append(
                f"| {name} | {m['seeds']:.0f} | {100 * m['forget_acc']:.1f} | "
                f"{100 * m['retain_acc']:.1f} | {100 * m['heldout_acc']:.1f} | "
                f"{m['perplexity']:.2f} | {m['seconds']:.2f} | {goal} |"
            )
        lines.append("")
    lines += [
        "Goal column: met when the forgotten people's accuracy is within 5 points of "
        "retraining's and the retained people's within 2 points of the original's; in "
        "brackets the two gaps in points.",
        "",
    ]
    return "\n".join(lines)


def run_lm_facts(
    config: LMFactsConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) ``lm-facts`` into ``out_dir``."""
    return LMFactsRunner(config, out_dir, progress=progress, log=log).run()


def cut(config: LMFactsConfig, **changes: Any) -> LMFactsConfig:
    """``config`` with some fields changed (e.g. fewer seeds for a quick run)."""
    return replace(config, **changes)
