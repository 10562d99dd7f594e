"""``dampen importance`` and ``dampen forget``: the command line for a user's own model.

Both run under ``torchrun``: the process group is initialised from its variables, the batches
are shared out between the ranks, and only rank 0 writes the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import dampen
from dampen.bench.config import SSD_FAMILY
from dampen.cli.pretrained import check_output_folder, load_pretrained, write_pretrained
from dampen.cli.terms import cli_terms
from dampen.cli.userspec import (
    build_batches,
    build_model,
    load_weights_,
    parse_option,
    weights_writer,
)
from dampen.core.files import atomic_writes, check_distinct, check_writable
from dampen.importances.distributed import init_from_env, rank_and_world
from dampen.importances.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from dampen.methods._common import RetainRequired
from dampen.methods.auto_alpha import FORGET_KINDS


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


def _check_paths(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse outputs that are one file or overwrite an input, or cannot be written, before
    any work starts."""
    check_distinct(outputs, inputs)
    for name, path in outputs.items():
        if path is not None:
            check_writable(path, what=name)


def _model(spec: str | None, weights: Path | None, pretrained: Path | None) -> Any:
    """The user's model: ``--model`` with ``--weights``, or a ``--pretrained`` folder."""
    if pretrained is not None:
        if spec is not None or weights is not None:
            raise ValueError("give either --pretrained or --model with --weights, not both")
        return load_pretrained(pretrained)
    if spec is None or weights is None:
        raise ValueError("give --model and --weights (or --pretrained FOLDER)")
    model = build_model(spec)
    load_weights_(model, weights)
    return model


MODEL = click.option(
    "--model",
    "model_spec",
    metavar="PKG.MODULE:FACTORY",
    help="A function that builds the model (no arguments).",
)
WEIGHTS = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="The trained weights: .safetensors or a torch state dict.",
)
PRETRAINED = click.option(
    "--pretrained",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead of --model/--weights: a Hugging Face model folder (save_pretrained layout, "
    "safetensors), e.g. a causal language model.",
)


@click.command("importance")
@MODEL
@WEIGHTS
@PRETRAINED
@click.option(
    "--data",
    "data_spec",
    required=True,
    metavar="PKG.MODULE:LOADER_FN",
    help="A function returning the training batches (e.g. a DataLoader).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to store the importance (.safetensors).",
)
@click.option(
    "--estimator",
    default=DEFAULT_ESTIMATOR,
    show_default=True,
    type=click.Choice(ESTIMATORS),
    help="shuffled_sq: batch_sq's value over shuffled batches (no loader order changes it); "
    "batch_sq: the paper's, faster, order-dependent.",
)
@click.option(
    "--shard/--no-shard",
    default=True,
    show_default=True,
    help="Under torchrun, give each rank every world-th batch of the loader.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def importance_cmd(
    model_spec: str | None,
    weights: Path | None,
    pretrained: Path | None,
    data_spec: str,
    out: Path,
    estimator: str,
    shard: bool,
    progress: bool,
) -> None:
    """Compute the importance of the training data once and store it."""
    init_from_env()
    rank, world = rank_and_world()
    try:
        _check_paths(outputs={"--out": out}, inputs={"--weights": weights})
        model = _model(model_spec, weights, pretrained)
        batches = build_batches(data_spec, what="--data")
        imp = dampen.importance(
            model, batches, estimator=estimator, progress=progress and rank == 0, shard=shard
        )
    except (ValueError, TypeError) as e:
        raise _fail(e) from e
    if rank == 0:
        imp.save(out)
        click.echo(
            f"importance ({estimator}) of {imp.samples} samples in {imp.batches} batches "
            f"over {world} process(es) written to {out}"
        )


@click.command("forget")
@MODEL
@WEIGHTS
@PRETRAINED
@click.option(
    "--importance",
    "importance_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The stored importance of the training data.",
)
@click.option(
    "--forget",
    "forget_spec",
    required=True,
    metavar="PKG.MODULE:LOADER_FN",
    help="A function returning the batches to forget.",
)
@click.option(
    "--heldout",
    "heldout_spec",
    metavar="PKG.MODULE:LOADER_FN",
    help="Batches the model never trained on, for alpha=auto (the default).",
)
@click.option(
    "--update-importance",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the importance with the forget set removed, for the next request.",
)
@click.option(
    "--method",
    default="ssd",
    show_default=True,
    help="ssd, lfssd, assd or alf (the stored importance), or jit; the methods that train on "
    "the retain set need the Python API (dampen.unlearn with retain=).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A method option, e.g. -o alpha=10 (repeatable).",
)
@click.option(
    "--kind",
    type=click.Choice(FORGET_KINDS),
    help="What the forget set is, for alpha=auto: a whole class, samples, the identified part "
    "of a backdoor (poison, with the labels it was trained with) or of wrong labels "
    "(label_errors); default auto (class or samples, from the labels).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write the unlearned weights (.safetensors or torch); with --pretrained, "
    "the folder to write the unlearned model to.",
)
@click.option(
    "--allow-changed-weights",
    is_flag=True,
    help="Accept an importance made for other weights of the same architecture "
    "(e.g. the model was already unlearned once).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def forget_cmd(
    model_spec: str | None,
    weights: Path | None,
    pretrained: Path | None,
    importance_path: Path,
    forget_spec: str,
    heldout_spec: str | None,
    update_importance: Path | None,
    method: str,
    options: tuple[str, ...],
    kind: str | None,
    out: Path,
    allow_changed_weights: bool,
    progress: bool,
) -> None:
    """Unlearn the forget set from the model with a stored importance."""
    init_from_env()
    rank, _ = rank_and_world()
    try:
        if pretrained is None:
            _check_paths(
                outputs={"--out": out, "--update-importance": update_importance},
                inputs={"--weights": weights, "--importance": importance_path},
            )
        else:
            check_output_folder(
                out,
                what="--out",
                inputs={
                    "--pretrained": pretrained,
                    "--importance": importance_path,
                    "--update-importance": update_importance,
                },
            )
            _check_paths(
                outputs={"--update-importance": update_importance},
                inputs={"--importance": importance_path},
            )
        config = dict(parse_option(o) for o in options)
        if kind is not None:
            if "forget_kind" in config and config["forget_kind"] != kind:
                raise ValueError(
                    f"--kind {kind} and -o forget_kind={config['forget_kind']} disagree"
                )
            if config.get("alpha", "auto") != "auto" or method not in ("ssd", "lfssd"):
                raise ValueError(
                    "--kind chooses the target of alpha=auto: it needs --method ssd or lfssd "
                    f"without a fixed alpha (got --method {method}"
                    + (f", alpha={config['alpha']}" if "alpha" in config else "")
                    + ")"
                )
            config["forget_kind"] = kind
        if update_importance is not None and method not in SSD_FAMILY:
            raise ValueError(
                f"--update-importance needs an SSD-family method ({', '.join(SSD_FAMILY)}), "
                f"which hands back the forget set's importance; got {method!r}"
            )
        model = _model(model_spec, weights, pretrained)
        imp = dampen.Importance.load(
            importance_path, model=model, check_values=not allow_changed_weights
        )
        forget = build_batches(forget_spec, what="--forget")
        heldout = build_batches(heldout_spec, what="--heldout") if heldout_spec else None
        result = dampen.unlearn(
            model,
            forget,
            method=method,
            importance=imp,
            heldout=heldout,
            progress=progress and rank == 0,
            inplace=True,
            check_values=not allow_changed_weights,
            **config,
        )
        writes = [] if pretrained is not None else [(out, weights_writer(result.model, out))]
        if update_importance is not None:
            if result.forget_importance is None:
                raise ValueError(
                    f"--update-importance: method {method!r} gives no forget importance to "
                    "take out (use an SSD-family method)"
                )
            updated = imp.subtract(result.forget_importance)
            if not allow_changed_weights:
                # The importance was checked against --weights, so the update belongs to the
                # unlearned weights written to --out. With the flag nothing was checked, and
                # the update keeps the fingerprint it had (later loads need the flag too).
                updated = updated.rebind(result.model)
            writes.append((update_importance, updated.writer()))
    except RetainRequired as e:
        raise click.ClickException(
            f"--method {method} trains on the retain set, which dampen forget does not take: "
            f"use an SSD-family method ({', '.join(SSD_FAMILY)}) or jit, or call "
            "dampen.unlearn(..., retain=<batches of Dr>) from Python"
        ) from e
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise _fail(e) from e
    if rank == 0:
        if pretrained is not None:
            write_pretrained(
                result.model, pretrained, out, before_swap=lambda: atomic_writes(writes)
            )
        else:
            atomic_writes(writes)
        if update_importance is not None:
            click.echo(f"importance without the forget set written to {update_importance}")
        s = result.stats
        click.echo(
            f"{method}: alpha {s.get('alpha', float('nan')):.4g}, "
            f"{s.get('selected', 0):,} of {s.get('parameters', 0):,} parameters dampened in "
            f"{s['seconds']['total']:.2f}s; weights written to {out}"
        )
        auto = s.get("auto")
        if isinstance(auto, dict) and auto.get("reason"):
            line = f"alpha=auto ({auto.get('kind')}): {cli_terms(auto['reason'])}"
            if "identified" in auto:
                line += (
                    f"; {auto['winning']} of {auto['identified']} identified samples still "
                    "predicted as their trained label were used"
                )
            elif 0 < (auto.get("winning") or 0) < auto.get("forget_samples", 0):
                line += (
                    f"; ranked by the {auto['winning']} of {auto['forget_samples']} forget "
                    "samples predicted right"
                )
            elif "forget_samples" in auto and auto.get("winning") is None:
                line += (
                    "; ranked by all of the forget set (its batches could not be regrouped "
                    "sample by sample)"
                )
            if auto.get("ranking") == "signed":
                line += (
                    "; ranked by the signed candidates (only parameters whose dampening raises "
                    "the forget set's loss)"
                )
            classes = auto.get("per_class") or []
            signed = sum(c.get("ranking") == "signed" for c in classes)
            if signed:
                line += (
                    f"; {signed} of {len(classes)} classes ranked by the signed candidates (only "
                    "parameters whose dampening raises the class's loss)"
                )
            click.echo(line)
