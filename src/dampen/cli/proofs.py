"""``dampen ulira`` and ``dampen challenge``: per-example evidence that a model forgot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from dampen.proofs.common import ProofConfig


def _command(name: str, preset: str, changes: Mapping[str, object]) -> str:
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in changes.items() if v is not None]
    return " ".join([f"dampen {name} --preset {preset}", *flags])


def _run_preset(
    name: str,
    preset: ProofConfig,
    run: Callable[..., Any],
    flags: dict[str, Any],
    preset_name: str,
) -> None:
    """Apply the command-line ``flags`` to ``preset``, run it and report where it wrote.

    ``flags`` maps option names (``out``, ``cache``, …) to values, ``None`` when not given.
    """
    fields = {"out": "out_dir", "cache": "cache_dir"}
    changes = {
        fields.get(k, k): str(v) if isinstance(v, Path) else v
        for k, v in flags.items()
        if v is not None
    }
    try:
        config = preset.replace(**changes)
        run(config, command=_command(name, preset_name, flags), log=click.echo)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {Path(config.out_dir) / 'results.md'}")


@click.command("ulira")
@click.option(
    "--preset",
    "preset_name",
    default="ulira-digits",
    show_default=True,
    type=click.Choice(["ulira-digits", "ulira-fmnist", "ulira-cifar"]),
    help="ulira-digits: 32 shadows on digits (CPU, minutes); ulira-fmnist: 64 on a memorised "
    "Fashion-MNIST subset (CPU, about an hour); ulira-cifar: 64 on CIFAR-10 (GPU).",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--shadows", type=click.IntRange(6), help="Shadow models (even).")
@click.option("--threads", type=click.IntRange(1), help="torch threads.")
@click.option("--device", help="cpu or cuda (default: the preset's).")
def ulira_cmd(
    preset_name: str,
    out_dir: Path | None,
    cache_dir: Path | None,
    shadows: int | None,
    threads: int | None,
    device: str | None,
) -> None:
    """U-LiRA: per-example likelihood-ratio attacks, unlearned vs retrained (ideal 50 %).

    Resumable: shadow records and trainings are kept in OUT; a second run reuses them.
    """
    from dampen.proofs.ulira import ULIRA_PRESETS, run_ulira

    flags = {
        "out": out_dir,
        "cache": cache_dir,
        "shadows": shadows,
        "threads": threads,
        "device": device,
    }
    _run_preset("ulira", ULIRA_PRESETS[preset_name](), run_ulira, flags, preset_name)


@click.command("challenge")
@click.option(
    "--preset",
    "preset_name",
    default="challenge-digits",
    show_default=True,
    type=click.Choice(["challenge-digits", "challenge-fmnist"]),
    help="challenge-digits: 16 unlearned vs 16 retrained digits CNNs (CPU, minutes); "
    "challenge-fmnist: the memorising Fashion-MNIST MLP of ulira-fmnist.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--models", type=click.IntRange(3), help="N unlearned and N retrained models.")
@click.option("--threads", type=click.IntRange(1), help="torch threads.")
def challenge_cmd(
    preset_name: str,
    out_dir: Path | None,
    cache_dir: Path | None,
    models: int | None,
    threads: int | None,
) -> None:
    """The NeurIPS 2023 unlearning challenge score (per-example ε, utility ratios).

    SSD-family methods run in a seeded stochastic mode (see dampen.proofs.challenge).
    """
    from dampen.proofs.challenge import CHALLENGE_PRESETS, run_challenge

    flags = {"out": out_dir, "cache": cache_dir, "models": models, "threads": threads}
    _run_preset("challenge", CHALLENGE_PRESETS[preset_name](), run_challenge, flags, preset_name)
