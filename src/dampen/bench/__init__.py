"""``dampen bench``: methods × scenarios × seeds, resumable, with a report and plots."""

from dampen.bench.config import (
    BenchConfig,
    DataSpec,
    MethodSpec,
    ModelSpec,
    Override,
    ScenarioSpec,
    config_from_dict,
    load_config,
)
from dampen.bench.presets import PRESETS, preset
from dampen.bench.runner import BenchRunner, plan, run_bench

__all__ = [
    "PRESETS",
    "BenchConfig",
    "BenchRunner",
    "DataSpec",
    "MethodSpec",
    "ModelSpec",
    "Override",
    "ScenarioSpec",
    "config_from_dict",
    "load_config",
    "plan",
    "preset",
    "run_bench",
]
