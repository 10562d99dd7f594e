"""The ``dampen`` command line."""

from __future__ import annotations

from pathlib import Path

import click

from dampen._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dampen")
def main() -> None:
    """Machine unlearning without retraining: Selective Synaptic Dampening and friends."""


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
    """Train a small CNN on scikit-learn's digits and forget one class with SSD and ASSD."""
    from dampen.demo import format_table, run_demo

    click.echo(f"dampen {__version__} demo: digits, small CNN, forgetting class {forget_class}")
    rows = run_demo(forget_class, seed=seed, epochs=epochs, out_dir=out_dir)
    click.echo(format_table(rows))
    click.echo(
        "Dr/Df acc: accuracy on the retained / forgotten training samples; test: accuracy on "
        "test samples of the other classes; Df-test: on test samples of the forgotten class; "
        "MIA: share of Df the paper's entropy attack calls 'member' (target: retrain's value)."
    )
