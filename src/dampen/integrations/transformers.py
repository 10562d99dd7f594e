"""A ``transformers.Trainer`` callback that stores the importance of the training data.

Requires ``pip install "dampen[transformers]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as e:  # pragma: no cover - exercised with the library hidden
    raise ImportError(
        "dampen.integrations.transformers needs the transformers library: "
        'pip install "dampen[transformers]"'
    ) from e

from dampen.core.batches import ForwardFn
from dampen.importances.estimators import DEFAULT_ESTIMATOR
from dampen.importances.store import Importance
from dampen.integrations.end_of_training import Outcome, Settings, measure_and_save

__all__ = ["ImportanceCallback"]


class ImportanceCallback(TrainerCallback):
    """Compute the importance of the training data when ``Trainer.train()`` ends and save it.

    The pass reuses the trainer's train dataloader (its batches, its collator, its device
    placement) on the weights the trainer holds at the end, i.e. after
    ``load_best_model_at_end`` has loaded the best checkpoint. The file is written atomically to
    ``os.path.join(args.output_dir, filename)``, where ``trainer.save_model()`` puts the final
    model by default; the ``checkpoint-*`` folders hold earlier weights, which it does not match
    (``Importance.load(path, model=...)`` refuses such a pair).

    Batches are the trainer's dicts with a ``labels`` entry and the model's output has
    ``.logits``: ``[batch, classes]`` for classifiers, ``[batch, tokens, vocab]`` with token
    labels (−100 ignored) for token classifiers and causal language models (whose logits are
    shifted against the labels; see :mod:`dampen.core.losses`). Other outputs need
    ``forward(model, batch) -> (logits, targets)``.

    Distributed training (DDP through ``torchrun``/``accelerate``): every process runs the pass
    over its own share of the data (the trainer's per-process loader) and the sums are added over
    processes, so the importance covers the whole training set; only the main process
    (``state.is_world_process_zero``) writes the file. The sampler pads the data to equal shares,
    so a few samples may count twice. FSDP and DeepSpeed ZeRO-3 split the parameters across
    processes and are not supported.

    Args:
        estimator: ``"shuffled_sq"`` (the default: ``batch_sq``'s mean over shuffled batches,
            order-free, from a per-sample pass), ``"batch_sq"`` (the paper's, faster; its value
            depends on how the batches are made), ``"per_sample"`` or ``"lf"``.
        filename: the file's name inside ``args.output_dir``.
        forward: ``forward(model, batch) -> (logits, targets)`` for other outputs or batches.
        progress: show a progress bar (on the local main process, unless ``disable_tqdm``).

    Attributes:
        importance: the :class:`dampen.Importance` computed (on every process), else ``None``.
        path: the file written (on the main process), else ``None``.

    Raises:
        ValueError, TypeError: for bad options, when the callback is made.
    """

    def __init__(
        self,
        estimator: str = DEFAULT_ESTIMATOR,
        filename: str = "importance.safetensors",
        forward: ForwardFn | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = Settings(
            estimator=estimator, filename=filename, forward=forward, progress=progress
        )
        self.importance: Importance | None = None
        self.path: Path | None = None

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Measure the training data and save the importance (main process only)."""
        model = kwargs.get("model")
        loader = kwargs.get("train_dataloader")
        if model is None or loader is None:
            raise RuntimeError(
                "ImportanceCallback got no model or train dataloader from the Trainer "
                "(it runs at the end of Trainer.train())"
            )
        if args.output_dir is None:
            raise ValueError("ImportanceCallback writes to args.output_dir, which is None")
        outcome: Outcome = measure_and_save(
            model,
            loader,
            self.settings,
            folder=Path(args.output_dir),
            save=state.is_world_process_zero,
            progress=self.settings.progress
            and state.is_local_process_zero
            and not args.disable_tqdm,
        )
        self.importance, self.path = outcome.importance, outcome.path
