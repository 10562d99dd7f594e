"""The training-framework callbacks: real ``transformers.Trainer`` and ``lightning.Trainer`` runs
on tiny models, the saved file checked against an importance computed afterwards."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import dampen
from dampen import Importance


def _close(a: Importance, b: Importance) -> bool:
    return a.keys() == b.keys() and all(
        torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-10) for n in a
    )


def _state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


# -- transformers -----------------------------------------------------------------------------


class _Tokens(Dataset):
    """Token sequences whose label is the class of their first token."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 40, (n, 8), generator=g)
        self.labels = self.ids[:, 0] % 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def _tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config)
    model.bert.embeddings.requires_grad_(False)  # a frozen part, whose flags must survive
    return model


def _hf_args(output_dir: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it
    return transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )


@pytest.mark.filterwarnings("ignore:per_sample.*one sample at a time:RuntimeWarning")
def test_transformers_callback_saves_the_importance_of_the_training_data(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dampen.integrations.transformers import ImportanceCallback

    class Probe(transformers.TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.state = _state(kwargs["model"])

    model, data = _tiny_bert(), _Tokens(24, seed=1)
    before, callback, after = Probe(), ImportanceCallback(estimator="per_sample"), Probe()
    trainer = transformers.Trainer(
        model=model,
        args=_hf_args(tmp_path / "out"),
        train_dataset=data,
        data_collator=transformers.default_data_collator,
        callbacks=[before, callback, after],
    )
    trainer.train()

    assert callback.path == tmp_path / "out" / "importance.safetensors"
    assert before.state == after.state  # modes and requires_grad as the trainer left them
    assert not all(before.state[1])  # ... with the frozen embeddings still frozen
    saved = Importance.load(callback.path, model=model)  # the final weights' importance
    assert saved.estimator == "per_sample" and saved.samples == len(data)

    # per_sample does not depend on the trainer's shuffled order: recompute in order.
    def in_order(d: Dataset) -> DataLoader:
        return DataLoader(d, batch_size=8, collate_fn=transformers.default_data_collator)

    again = dampen.importance(model, in_order(data), estimator="per_sample")
    other = dampen.importance(model, in_order(_Tokens(24, seed=2)), estimator="per_sample")
    assert _close(saved, again)
    assert not _close(saved, other)
    assert callback.importance is not None and _close(callback.importance, saved)
    assert sum(float(t.sum()) for t in saved.sums.values()) > 0


class _Sequences(Dataset):
    """Token sequences of 5 to 10 tokens, unpadded, for a causal language model."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(5, 11, (n,), generator=g)
        self.ids = [torch.randint(3, 40, (int(k),), generator=g).tolist() for k in lengths]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.ids[i]}


def _tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16, bos_token_id=0,
        eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _lm_collator() -> Any:
    """The real language-modelling collator, on a word-level tokenizer built in memory."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"t{i}": i for i in range(40)}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0")),
        pad_token="t2",
        model_input_names=["input_ids", "attention_mask"],
    )
    # pads on the right; labels = input_ids with -100 on the padding
    return transformers.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)


@pytest.mark.filterwarnings("ignore:per_sample.*one sample at a time:RuntimeWarning")
def test_transformers_callback_saves_the_importance_of_a_causal_lms_training_data(
    tmp_path: Path,
) -> None:
    transformers = pytest.importorskip("transformers")
    from dampen.integrations.transformers import ImportanceCallback

    model, data, collator = _tiny_gpt2(), _Sequences(32, seed=1), _lm_collator()
    callback = ImportanceCallback(estimator="per_sample")
    trainer = transformers.Trainer(
        model=model,
        args=_hf_args(tmp_path / "out"),
        train_dataset=data,
        data_collator=collator,
        callbacks=[callback],
    )
    trainer.train()

    assert callback.path == tmp_path / "out" / "importance.safetensors"
    saved = Importance.load(callback.path, model=trainer.model)
    assert saved.estimator == "per_sample" and saved.samples == len(data)

    # per_sample does not depend on the trainer's shuffled order: recompute in order.
    def in_order(d: Dataset) -> DataLoader:
        return DataLoader(d, batch_size=8, collate_fn=collator)

    assert (next(iter(in_order(data)))["labels"] == -100).any()  # padded, and not counted
    again = dampen.importance(trainer.model, in_order(data), estimator="per_sample")
    other = dampen.importance(
        trainer.model, in_order(_Sequences(32, seed=2)), estimator="per_sample"
    )
    assert _close(saved, again)
    assert not _close(saved, other)
    assert sum(float(t.sum()) for t in saved.sums.values()) > 0


def test_transformers_callback_saves_nothing_off_the_main_process(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from dampen.integrations.transformers import ImportanceCallback

    model, data = _tiny_bert(), _Tokens(16, seed=1)
    loader = DataLoader(data, batch_size=8, collate_fn=transformers.default_data_collator)
    state = transformers.TrainerState(is_world_process_zero=False, is_local_process_zero=False)
    callback = ImportanceCallback()
    args = _hf_args(tmp_path / "out")
    callback.on_train_end(
        args, state, transformers.TrainerControl(), model=model, train_dataloader=loader
    )
    assert callback.path is None and not (tmp_path / "out").exists()
    # the pass still ran: under DDP every rank must join the sum over ranks
    assert callback.importance is not None and callback.importance.samples == 16


# -- lightning --------------------------------------------------------------------------------


def _digits(n: int, offset: int = 0) -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[offset : offset + n], dtype=torch.float32) / 16
    return TensorDataset(x, torch.tensor(y[offset : offset + n]))


def _lightning_module(dict_batches: bool) -> Any:
    pl = pytest.importorskip("lightning.pytorch")

    class Digits(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3))
            self.head = nn.Linear(16, 10)
            self.body[0].bias.requires_grad_(False)  # a frozen part, whose flag must survive

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = (batch["pixels"], batch["digit"]) if dict_batches else batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    torch.manual_seed(0)
    return Digits()


def _fit(module: Any, loader: DataLoader, tmp_path: Path, callbacks: list[Any]) -> Any:
    pl = pytest.importorskip("lightning.pytorch")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=5,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        default_root_dir=str(tmp_path / "root"),
        callbacks=callbacks,
    )
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def _probe() -> Any:
    """A lightning callback recording the module's modes and flags when training ends."""
    pl = pytest.importorskip("lightning.pytorch")

    class Probe(pl.Callback):
        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.state = _state(pl_module)

    return Probe()


def test_lightning_callback_saves_beside_the_checkpoints(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from dampen.integrations.lightning import ImportanceCallback

    module, data = _lightning_module(dict_batches=False), _digits(160)
    loader = DataLoader(data, batch_size=32)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts")
    before, callback, after = _probe(), ImportanceCallback(), _probe()
    _fit(module, loader, tmp_path, [checkpoints, before, callback, after])

    assert callback.path == tmp_path / "ckpts" / "importance.safetensors"
    assert any(p.suffix == ".ckpt" for p in (tmp_path / "ckpts").iterdir())
    assert before.state == after.state and not all(before.state[1])
    assert all(before.state[0])  # the module was training; dampen measured it in eval mode
    saved = Importance.load(callback.path, model=module)
    assert saved.estimator == "shuffled_sq" and saved.samples == 160 and saved.batch_size == 32
    again = dampen.importance(module, DataLoader(data, batch_size=32))
    other = dampen.importance(module, DataLoader(_digits(160, offset=500), batch_size=32))
    assert _close(saved, again)
    assert not _close(saved, other)
    assert sum(float(t.sum()) for t in saved.sums.values()) > 0


def test_lightning_callback_with_forward_writes_to_the_root_dir(tmp_path: Path) -> None:
    from dampen.integrations.lightning import ImportanceCallback

    def as_dicts(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        x, y = zip(*items, strict=True)
        return {"pixels": torch.stack(x), "digit": torch.stack(y)}

    def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        return model(batch["pixels"]), batch["digit"]

    module, data = _lightning_module(dict_batches=True), _digits(96)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=as_dicts)
    callback = ImportanceCallback(estimator="per_sample", forward=forward, filename="imp.st")
    _fit(module, loader, tmp_path, [callback])

    assert callback.path == tmp_path / "root" / "imp.st"
    saved = Importance.load(callback.path, model=module)
    ordered = DataLoader(data, batch_size=32, collate_fn=as_dicts)
    assert _close(
        saved, dampen.importance(module, ordered, estimator="per_sample", forward=forward)
    )


def test_lightning_callback_saves_nothing_off_global_rank_zero(tmp_path: Path) -> None:
    from dampen.integrations.lightning import ImportanceCallback

    trainer = SimpleNamespace(
        train_dataloader=DataLoader(_digits(40), batch_size=8),
        is_global_zero=False,
        checkpoint_callback=None,
        progress_bar_callback=None,
        default_root_dir=str(tmp_path / "root"),
    )
    callback = ImportanceCallback()
    callback.on_train_end(trainer, _lightning_module(dict_batches=False))
    assert callback.path is None and not (tmp_path / "root").exists()
    assert callback.importance is not None and callback.importance.samples == 40

    trainer.train_dataloader = [trainer.train_dataloader] * 2
    with pytest.raises(ValueError, match="one train dataloader"):
        callback.on_train_end(trainer, _lightning_module(dict_batches=False))


# -- both -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("transformers", "transformers", "dampen[transformers]"),
        ("lightning", "lightning", "dampen[lightning]"),
    ],
)
def test_a_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m == library or m.startswith(library + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # import now fails as if not installed
    monkeypatch.setitem(sys.modules, library, None)
    monkeypatch.delitem(sys.modules, "dampen.integrations", raising=False)
    monkeypatch.delitem(sys.modules, f"dampen.integrations.{module}", raising=False)
    importlib.import_module("dampen.integrations")  # the package itself needs neither library
    with pytest.raises(ImportError, match=re.escape(extra)):
        importlib.import_module(f"dampen.integrations.{module}")


@pytest.mark.parametrize("module", ["transformers", "lightning"])
def test_bad_options_are_refused_when_the_callback_is_made(module: str) -> None:
    pytest.importorskip("lightning.pytorch" if module == "lightning" else module)
    make = importlib.import_module(f"dampen.integrations.{module}").ImportanceCallback
    with pytest.raises(ValueError, match="estimator"):
        make(estimator="fisher")
    with pytest.raises(ValueError, match="filename"):
        make(filename="sub/importance.safetensors")
    with pytest.raises(TypeError, match="forward"):
        make(forward="not callable")
