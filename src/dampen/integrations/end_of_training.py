"""What both callbacks do when training ends: measure the training data, save on one process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dampen.api import importance
from dampen.core.batches import Batches, ForwardFn, checked_forward
from dampen.importances.estimators import DEFAULT_ESTIMATOR, check_estimator
from dampen.importances.store import Importance


@dataclass(frozen=True)
class Settings:
    """A callback's options, checked when the callback is made (not after hours of training).

    Attributes:
        estimator: ``"shuffled_sq"`` (default), ``"batch_sq"``, ``"per_sample"`` or ``"lf"``.
        filename: the file's name (no folder) inside the folder the callback writes to.
        forward: ``forward(model, batch) -> (logits, targets)`` for other batch shapes.
        progress: show a progress bar during the pass.
    """

    estimator: str = DEFAULT_ESTIMATOR
    filename: str = "importance.safetensors"
    forward: ForwardFn | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_estimator(self.estimator)
        if not isinstance(self.filename, str) or not self.filename:
            raise TypeError(f"filename must be a non-empty str; got {self.filename!r}")
        if Path(self.filename).name != self.filename or self.filename in (".", ".."):
            raise ValueError(
                f"filename must be a file name without a folder; got {self.filename!r} "
                "(the folder is the trainer's, or the callback's dirpath=)"
            )
        object.__setattr__(self, "forward", checked_forward(self.forward))
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool; got {type(self.progress).__name__}")


@dataclass(frozen=True)
class Outcome:
    """The importance computed at the end of training, and where it was saved.

    Attributes:
        importance: the importance of the training data for the trained weights.
        path: the saved file; ``None`` on processes other than the main one.
    """

    importance: Importance
    path: Path | None


def measure_and_save(
    model: nn.Module,
    batches: Batches,
    settings: Settings,
    *,
    folder: Path,
    save: bool,
    progress: bool,
) -> Outcome:
    """Compute the importance of ``batches`` for ``model``; save it to ``folder`` when ``save``.

    Every process of a process group must call this (the sums are all-reduced); each passes its
    own share of the data and only the one with ``save=True`` writes.
    """
    imp = importance(
        model,
        batches,
        estimator=settings.estimator,
        forward=settings.forward,
        progress=progress,
    )
    path = imp.save(folder / settings.filename) if save else None
    return Outcome(importance=imp, path=path)
