"""``dampen ulira`` and ``dampen challenge``: per-example evidence that a model forgot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click


def _command(name: str, preset: str, changes: Mapping[str, object]) -> str:
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in changes.items() if v is not None]
    return " ".join([f"dampen {name} --preset {preset}", *flags])


@click.command("ulira")
@click.option(
    "--preset",
    "preset_name",
    default="ulira-digits",
    show_default=True,
    type=click.Choice(["ulira-digits", "ulira-cifar"]),
    help="ulira-digits: 32 shadows on digits (CPU, minutes); ulira-cifar: 64 on CIFAR-10 (GPU).",
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
    from dampen.bench.ulira import ULIRA_PRESETS, run_ulira

    changes = {
        "out_dir": None if out_dir is None else str(out_dir),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "shadows": shadows,
        "threads": threads,
        "device": device,
    }
    try:
        config = ULIRA_PRESETS[preset_name]().replace(
            **{k: v for k, v in changes.items() if v is not None}
        )
        flags = {"out": out_dir, "cache": cache_dir, "shadows": shadows, "threads": threads}
        run_ulira(config, command=_command("ulira", preset_name, flags), log=click.echo)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {Path(config.out_dir) / 'results.md'}")


@click.command("challenge")
@click.option(
    "--preset",
    "preset_name",
    default="challenge-digits",
    show_default=True,
    type=click.Choice(["challenge-digits"]),
    help="challenge-digits: 16 unlearned vs 16 retrained digits CNNs (CPU, minutes).",
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

    SSD-family methods run in a seeded stochastic mode (see dampen.bench.challenge).
    """
    from dampen.bench.challenge import CHALLENGE_PRESETS, run_challenge

    changes = {
        "out_dir": None if out_dir is None else str(out_dir),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "models": models,
        "threads": threads,
    }
    try:
        config = CHALLENGE_PRESETS[preset_name]().replace(
            **{k: v for k, v in changes.items() if v is not None}
        )
        flags = {"out": out_dir, "cache": cache_dir, "models": models, "threads": threads}
        run_challenge(config, command=_command("challenge", preset_name, flags), log=click.echo)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {Path(config.out_dir) / 'results.md'}")
