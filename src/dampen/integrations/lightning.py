"""A ``lightning.Trainer`` callback that stores the importance of the training data.

Requires ``pip install "dampen[lightning]"``. The callback is for the ``lightning`` package
(``lightning.pytorch``); the older standalone ``pytorch_lightning`` package is not supported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised with the library hidden
    raise ImportError(
        'dampen.integrations.lightning needs the lightning library: pip install "dampen[lightning]"'
    ) from e

from dampen.core.batches import Batches, ForwardFn
from dampen.importances.estimators import DEFAULT_ESTIMATOR
from dampen.importances.store import Importance
from dampen.integrations.end_of_training import Settings, measure_and_save

__all__ = ["ImportanceCallback"]


class ImportanceCallback(pl.Callback):
    """Compute the importance of the training data when ``Trainer.fit()`` ends training and save it.

    Runs in ``on_train_end``, while the model is still on its device, over
    ``trainer.train_dataloader`` (one loader; the trainer's per-process loader under DDP) with
    ``pl_module`` as the model. Without ``forward`` the batches must be ``(x, y)``,
    ``(x, ..., y)`` or dicts with ``labels``, and ``pl_module(x)`` must return the logits;
    modules that take their batches their own way pass
    ``forward(model, batch) -> (logits, targets)`` (the batch is not moved to the model's
    device for it).

    The file is written atomically to ``dirpath / filename``; ``dirpath`` defaults to the
    ``ModelCheckpoint``'s folder when the trainer has one, else ``trainer.default_root_dir``.
    The importance belongs to the final weights: a ``last.ckpt`` saved at the end matches it, a
    best-k checkpoint of an earlier epoch does not (``Importance.load(path, model=...)`` refuses
    such a pair).

    Distributed training (DDP): every process runs the pass over its own share of the data and
    the sums are added over processes, so the importance covers the whole training set; only
    global rank zero writes the file. The distributed sampler pads the data to equal shares, so a
    few samples may count twice. FSDP and DeepSpeed stage 3 split the parameters across processes
    and are not supported.

    Args:
        estimator: ``"shuffled_sq"`` (the default: ``batch_sq``'s mean over shuffled batches,
            order-free, from a per-sample pass), ``"batch_sq"`` (the paper's, faster; its value
            depends on how the batches are made), ``"per_sample"`` or ``"lf"``.
        filename: the file's name inside ``dirpath``.
        forward: ``forward(model, batch) -> (logits, targets)`` for other batch shapes.
        progress: show a progress bar (on global rank zero, when the trainer shows its own).
        dirpath: the folder to write to (default: see above).

    Attributes:
        importance: the :class:`dampen.Importance` computed (on every process), else ``None``.
        path: the file written (on global rank zero), else ``None``.

    Raises:
        ValueError, TypeError: for bad options, when the callback is made.
    """

    def __init__(
        self,
        estimator: str = DEFAULT_ESTIMATOR,
        filename: str = "importance.safetensors",
        forward: ForwardFn | None = None,
        progress: bool = True,
        dirpath: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = Settings(
            estimator=estimator, filename=filename, forward=forward, progress=progress
        )
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"dirpath must be a path or None; got {type(dirpath).__name__}")
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.importance: Importance | None = None
        self.path: Path | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the training data and save the importance (global rank zero only)."""
        outcome = measure_and_save(
            pl_module,
            _one_loader(trainer.train_dataloader),
            self.settings,
            folder=self.folder(trainer),
            save=trainer.is_global_zero,
            progress=self.settings.progress
            and trainer.is_global_zero
            and trainer.progress_bar_callback is not None,
        )
        self.importance, self.path = outcome.importance, outcome.path

    def folder(self, trainer: pl.Trainer) -> Path:
        """Where the file goes: ``dirpath``, else the checkpoint folder, else the root dir."""
        if self.dirpath is not None:
            return self.dirpath
        checkpoints = getattr(trainer.checkpoint_callback, "dirpath", None)
        if checkpoints is not None:
            return Path(checkpoints)
        return Path(trainer.default_root_dir)


def _one_loader(loaders: Any) -> Batches:
    if loaders is None:
        raise RuntimeError(
            "ImportanceCallback found no train dataloader on the Trainer "
            "(it runs at the end of Trainer.fit())"
        )
    if isinstance(loaders, (Mapping, Sequence)):
        raise ValueError(
            "ImportanceCallback needs one train dataloader; the trainer has "
            f"{len(loaders)} (compute dampen.importance over them yourself)"
        )
    return loaders
