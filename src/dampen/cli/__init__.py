"""The ``dampen`` command line."""

from __future__ import annotations

import signal
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import click

from dampen._version import __version__
from dampen.bench.presets import PRESETS
from dampen.cli.model import forget_cmd, importance_cmd
from dampen.cli.proofs import challenge_cmd, ulira_cmd
from dampen.cli.terms import cli_terms

LM_FACTS_PRESET = "lm-facts"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dampen")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Machine unlearning without retraining: Selective Synaptic Dampening and friends."""
    _exit_on_sigterm()
    _show_warnings_in_cli_terms(ctx)


def _show_warnings_in_cli_terms(ctx: click.Context) -> None:
    """Format the library's warnings with :func:`cli_warning` while the command runs (other
    code's warnings as before), and put the previous formatter back when it ends."""
    previous = warnings.formatwarning
    package = Path(__file__).resolve().parent.parent

    def formatter(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        if Path(filename).resolve().is_relative_to(package):
            return cli_warning(message, category)
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = formatter
    ctx.call_on_close(lambda: setattr(warnings, "formatwarning", previous))


def cli_warning(message: Warning | str, category: type[Warning]) -> str:
    """One of the library's warnings as the command line shows it: its category and text
    (not the library's source line), in the options' words (:func:`cli_terms`)."""
    return f"{category.__name__}: {cli_terms(str(message))}\n"


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``finally`` blocks run: a file being written
    loses its temporary file, and a model changed in place is restored."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


@main.command()
@click.option(
    "--forget-class",
    default=0,
    show_default=True,
    type=click.IntRange(0, 9),
    help="Digit class to forget.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Training seed.")
@click.option(
    "--epochs",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Training epochs of the small CNN.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the stored importance (default: a temporary folder).",
)
def demo(forget_class: int, seed: int, epochs: int, out_dir: Path | None) -> None:
    """Train a small CNN on scikit-learn's digits and forget one class with SSD, ASSD and auto.

    Auto runs twice: alone, and with held-out test samples of the other classes as its guard."""
    from dampen.cli.demo import format_table, run_demo

    click.echo(f"dampen {__version__} demo: digits, small CNN, forgetting class {forget_class}")
    rows = run_demo(forget_class, seed=seed, epochs=epochs, out_dir=out_dir)
    click.echo(format_table(rows))
    click.echo(
        "Dr/Df acc: accuracy on the retained / forgotten training samples; test: accuracy on "
        "test samples of the other classes (less the 100 that the last row gets as heldout=); "
        "Df-test: on test samples of the forgotten class; "
        "MIA: share of Df the paper's entropy attack calls 'member' (target: retrain's value)."
    )


def _bench_lm_facts(
    out_dir: Path | None, seeds: int | None, threads: int | None, report_only: bool, progress: bool
) -> None:
    """``dampen bench --preset lm-facts``: the language-model runner (its own tables)."""
    import json

    from dampen.bench.lm_facts import LM_FACTS, report, run_lm_facts
    from dampen.core.files import atomic_write_text

    config = LM_FACTS
    if seeds is not None:
        config = replace(config, seeds=tuple(range(seeds)))
    if threads is not None:
        config = replace(config, threads=threads)
    out = out_dir or Path("runs") / LM_FACTS_PRESET
    if report_only:
        path = out / "results.json"
        if not path.is_file():
            raise click.ClickException(f"no {path} to report on")
        atomic_write_text(out / "results.md", report(json.loads(path.read_text()), config))
        click.echo(f"wrote {out / 'results.md'}")
        return
    run_lm_facts(config, out, progress=progress, log=click.echo)
    click.echo(f"results in {out / 'results.md'}")


@main.command()
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(sorted([*PRESETS, LM_FACTS_PRESET])),
    help="A named configuration (see dampen.bench.presets; lm-facts: dampen.bench.lm_facts).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON bench config instead of a preset.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: the config's out_dir, e.g. runs/quick).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache of trained models and importances (default: OUT/cache).",
)
@click.option(
    "--with-baselines",
    is_flag=True,
    help="fmnist: run fmnist-baselines instead (tuned baselines, ResNet18); cifar: add the "
    "baselines with the SSD paper's epochs (quick always has them).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1),
    help="Use seeds 0 .. N-1 instead of the config's seeds.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="torch threads (default: the config's, else every core).",
)
@click.option("--device", help="Where to train and unlearn, e.g. cpu or cuda (default: config's).")
@click.option(
    "--report-only",
    is_flag=True,
    help="Rewrite results.md and the plots from results.json without running anything.",
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Tune the methods that have a grid on the validation split first (cached in "
    "OUT/tuning.json); --no-tune runs them with their configured options.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
def bench(
    preset_name: str | None,
    config_path: Path | None,
    out_dir: Path | None,
    cache_dir: Path | None,
    with_baselines: bool,
    seeds: int | None,
    threads: int | None,
    device: str | None,
    report_only: bool,
    tune: bool,
    progress: bool,
) -> None:
    """Benchmark methods × scenarios × seeds; resumable; writes results.json/.md and plots.

    Finished cells are kept in OUT/results.json and skipped when the command runs again;
    trained models and importances are cached in OUT/cache. Methods with a tuning grid are
    first tuned on the validation split (OUT/tuning.json, also resumable).

    \b
    Examples:
      dampen bench --preset quick --out runs/quick
      dampen bench --preset fmnist-baselines
      dampen bench --config my_bench.json --out runs/mine
    """
    from dampen.bench.config import load_config
    from dampen.bench.presets import preset
    from dampen.bench.runner import RESULTS_FILE, read_results, run_bench

    if preset_name is not None and config_path is not None:
        raise click.UsageError("give either --preset or --config, not both")
    if preset_name == LM_FACTS_PRESET:
        _bench_lm_facts(out_dir, seeds, threads, report_only, progress)
        return
    if config_path is not None and with_baselines:
        raise click.UsageError("--with-baselines applies to presets only")
    try:
        if config_path is not None:
            config = load_config(config_path)
        elif preset_name is not None:
            config = preset(preset_name, with_baselines=with_baselines)
        else:
            raise click.UsageError("give --preset NAME or --config FILE")
        changes: dict[str, object] = {}
        if out_dir is not None:
            changes["out_dir"] = str(out_dir)
        if cache_dir is not None:
            changes["cache_dir"] = str(cache_dir)
        if seeds is not None:
            changes["seeds"] = tuple(range(seeds))
        if threads is not None:
            changes["threads"] = threads
        if device is not None:
            changes["device"] = device
        config = config.replace(**changes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    out = Path(config.out_dir)
    if report_only:
        from dampen.bench.plots import write_plots
        from dampen.bench.report import write_markdown

        results = read_results(out / RESULTS_FILE)
        if results is None:
            raise click.ClickException(f"no readable {out / RESULTS_FILE} to report on")
        write_markdown(results, out / "results.md")
        write_plots(results, out)
        click.echo(f"wrote {out / 'results.md'} and the plots")
        return

    given = {
        "--preset": preset_name,
        "--config": config_path,
        "--out": out_dir,
        "--cache": cache_dir,
        "--seeds": seeds,
        "--threads": threads,
        "--device": device,
    }
    command = " ".join(
        ["dampen bench"]
        + [f"{flag} {value}" for flag, value in given.items() if value is not None]
        + (["--with-baselines"] if with_baselines else [])
        + ([] if tune else ["--no-tune"])
    )
    click.echo(f"dampen bench: {config.name} -> {out}")
    try:
        run_bench(config, progress=progress, command=command, log=click.echo, tune=tune)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out / RESULTS_FILE}, {out / 'results.md'} and PNG plots in {out}")


main.add_command(importance_cmd)
main.add_command(forget_cmd)
main.add_command(ulira_cmd)
main.add_command(challenge_cmd)
