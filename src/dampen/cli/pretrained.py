"""A Hugging Face model folder (``save_pretrained`` layout) on the command line.

Read with its own class (``config.json``'s ``architectures``), from safetensors only (nothing
pickled is loaded), and written back as a whole folder: the weights by ``save_pretrained`` and
the other files of the source folder (tokenizer, generation settings) copied beside them,
swapped in by renames so that a failure leaves the old folder as it was. An existing output
folder is replaced only when it is empty or an earlier output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from dampen.core.files import current_umask

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_WRITTEN_BY_SAVE = ("config.json", "generation_config.json", "model.safetensors.index.json")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise ValueError(
            "--pretrained needs transformers: pip install 'dampen[transformers]'"
        ) from e
    return transformers


def load_pretrained(folder: str | os.PathLike[str]) -> nn.Module:
    """The model saved in ``folder``, built by the class its ``config.json`` names.

    Raises:
        ValueError: when the folder has no config or no safetensors weights, or the class is
            unknown to the installed transformers.
    """
    source = Path(folder)
    if not (source / "config.json").is_file():
        raise ValueError(f"--pretrained: {source} holds no config.json (a save_pretrained folder)")
    if not any(source.glob("*.safetensors")):
        raise ValueError(
            f"--pretrained: {source} holds no .safetensors weights; dampen does not load pickled "
            "weights (re-save the model with save_pretrained(..., safe_serialization=True))"
        )
    transformers = _transformers()
    transformers.utils.logging.disable_progress_bar()  # dampen's --progress shows its own
    config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None:
        raise ValueError(
            f"--pretrained: {source}/config.json names no model class this transformers "
            f"version knows (architectures={names})"
        )
    try:
        model = cls.from_pretrained(source, local_files_only=True, use_safetensors=True)
    except (OSError, RuntimeError) as e:
        raise ValueError(f"--pretrained: cannot load {source}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ValueError(f"--pretrained: {names[0]} is not a torch model")
    model.eval()
    return model


def _usual_modes(folder: Path) -> None:
    """The permissions a new folder and its files get under this process's umask (temporary
    folders and some writers use owner-only modes)."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for item in folder.iterdir():
        if item.is_file():
            os.chmod(item, 0o666 & ~mask)


def check_output_folder(
    folder: str | os.PathLike[str], *, what: str, inputs: dict[str, Path | None]
) -> None:
    """Raise ``ValueError`` unless ``folder`` can be created, or replaced as a model folder.

    An existing folder is replaced only when it is empty or looks like an earlier output (a
    ``config.json`` and ``.safetensors`` weights, no subfolders), and never when it holds, or
    lies inside, one of ``inputs``.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{what}: {target} is a file; give a folder for a --pretrained model")
    here = target.resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        there = Path(path).resolve()
        if here == there or there.is_relative_to(here) or here.is_relative_to(there):
            raise ValueError(f"{what} {target} would overwrite or sit inside {name} ({path})")
    if target.is_dir():
        items = list(target.iterdir())
        earlier_output = (
            (target / "config.json").is_file()
            and any(i.suffix == ".safetensors" for i in items)
            and not any(i.is_dir() for i in items)
        )
        if items and not earlier_output:
            raise ValueError(
                f"{what}: {target} is a folder that holds other things than a model written by "
                "dampen; give a new or empty folder (it is replaced as a whole)"
            )
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write a folder in {parent}")


def write_pretrained(
    model: nn.Module, source: Path, target: Path, *, before_swap: Callable[[], None] | None = None
) -> None:
    """Write ``model`` as a ``save_pretrained`` folder at ``target``, with the non-weight files
    of ``source`` (not its subfolders); ``target`` is replaced only once the new folder is
    complete (check it first with :func:`check_output_folder`).

    ``before_swap`` runs between the two (e.g. the other files of the request): if it fails,
    ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        for item in source.iterdir():
            if item.is_file() and not (
                item.name.endswith(_WEIGHT_SUFFIXES) or item.name in _WRITTEN_BY_SAVE
            ):
                shutil.copy2(item, tmp / item.name)
        _transformers().utils.logging.disable_progress_bar()
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        _usual_modes(tmp)
        if before_swap is not None:
            before_swap()
        if target.exists():
            old = Path(
                tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old")
            )
            os.rmdir(old)
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
