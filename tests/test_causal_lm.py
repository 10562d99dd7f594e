"""Causal language models: token losses, importance and unlearning on ``{input_ids,
attention_mask, labels}`` batches, and ``--pretrained`` folders on the command line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

import dampen
from dampen.cli import main
from dampen.core.batches import default_forward, is_causal_lm
from dampen.core.losses import IGNORE_INDEX, output_energy, sample_losses, sample_wins

transformers = pytest.importorskip("transformers")

VOCAB = 40


def tiny_lm(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=16, bos_token_id=0,
        eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def lm_batches(seed: int = 0, n: int = 8, size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Sequences of 10 tokens: a 4-token prompt without labels, right padding on some."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, 10), generator=g)
    mask = torch.ones_like(ids)
    for row in range(0, n, 3):  # every third sequence is 3 tokens shorter
        ids[row, 7:], mask[row, 7:] = 2, 0
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :4] = IGNORE_INDEX
    return [
        {"input_ids": ids[i : i + size], "attention_mask": mask[i : i + size],
         "labels": labels[i : i + size]}
        for i in range(0, n, size)
    ]  # fmt: skip


def singles(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [
        {k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))
    ]


def test_a_sequence_loss_is_the_models_own_loss_of_that_sequence() -> None:
    model = tiny_lm()
    for one in singles(lm_batches()):
        logits, targets = default_forward(model, one)
        with torch.no_grad():
            reference = model(**one).loss  # Hugging Face shifts and averages the tokens itself
            ours = sample_losses(logits, targets)
        assert ours.shape == (1,)
        torch.testing.assert_close(ours[0], reference)


def test_sequence_losses_and_wins_match_a_plain_loop_over_tokens() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 7, generator=g)
    targets = torch.randint(0, 7, (3, 5), generator=g)
    targets[0, :2] = IGNORE_INDEX
    targets[2, :] = IGNORE_INDEX  # no labelled token: loss 0, right
    targets[1] = logits[1].argmax(dim=1)  # every token right
    losses, wins = sample_losses(logits, targets), sample_wins(logits, targets)
    for s in range(3):
        tokens = [t for t in range(5) if targets[s, t] != IGNORE_INDEX]
        nll = [-F.log_softmax(logits[s, t], dim=0)[targets[s, t]] for t in tokens]
        expected = sum(nll) / len(nll) if nll else torch.tensor(0.0)
        torch.testing.assert_close(losses[s], torch.as_tensor(expected))
        right = all(int(logits[s, t].argmax()) == int(targets[s, t]) for t in tokens)
        assert bool(wins[s]) == right
    assert wins.tolist()[1:] == [True, True]
    assert not bool(wins[0]) or all(
        int(logits[0, t].argmax()) == int(targets[0, t]) for t in range(2, 5)
    )


def test_output_energy_of_sequences_averages_the_labelled_tokens() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 3, generator=g)
    targets = torch.tensor([[IGNORE_INDEX, 1, 2, 0], [IGNORE_INDEX, IGNORE_INDEX, 1, 1]])
    squares = logits.square().sum(dim=2)
    expected = (squares[0, 1:].mean() + squares[1, 2:].mean()) / 2
    torch.testing.assert_close(output_energy(logits, targets), expected)
    torch.testing.assert_close(output_energy(logits), squares.mean())


def test_only_decoder_language_models_are_shifted() -> None:
    assert is_causal_lm(tiny_lm())
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8, num_labels=2,
    )  # fmt: skip
    bert = transformers.BertForSequenceClassification(config)
    assert not is_causal_lm(bert)
    batch = lm_batches()[0]
    logits, targets = default_forward(tiny_lm(), batch)
    assert logits.shape == (4, 9, VOCAB)
    assert torch.equal(targets, batch["labels"][:, 1:])


def _grads_squared(model: torch.nn.Module, losses: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for loss in losses:
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for n, g in zip(params, grads, strict=True):
            if g is not None:
                total[n] += g.square()
    return total


def test_batch_sq_importance_of_a_language_model_matches_a_plain_loop() -> None:
    model, batches = tiny_lm(), lm_batches()
    imp = dampen.importance(model, batches, estimator="batch_sq")
    losses = []
    for batch in batches:
        per_sequence = [model(**one).loss for one in singles([batch])]
        losses.append(torch.stack(per_sequence).mean())
    expected = _grads_squared(model, losses)
    for name, value in imp.items():
        torch.testing.assert_close(value, expected[name] / len(batches), rtol=1e-4, atol=1e-9)


def test_per_sample_importance_of_a_language_model_matches_a_plain_loop() -> None:
    model, batches = tiny_lm(), lm_batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sdpa masks fall back to a loop
        imp = dampen.importance(model, batches, estimator="per_sample")
    expected = _grads_squared(model, [model(**one).loss for one in singles(batches)])
    for name, value in imp.items():
        torch.testing.assert_close(value, expected[name] / 8, rtol=1e-4, atol=1e-9)
    assert imp.samples == 8


def test_lf_importance_of_a_language_model_is_label_free_over_labelled_tokens() -> None:
    model, batches = tiny_lm(), lm_batches()
    imp = dampen.importance(model, batches, estimator="lf")
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        logits, targets = default_forward(model, batch)
        energy = sum(
            logits[s][targets[s] != IGNORE_INDEX].square().sum(dim=1).mean()
            for s in range(len(targets))
        ) / len(targets)
        grads = torch.autograd.grad(energy, list(params.values()), allow_unused=True)
        for n, g in zip(params, grads, strict=True):
            if g is not None:
                expected[n] += g.abs()
    for name, value in imp.items():
        torch.testing.assert_close(value, expected[name] / len(batches), rtol=1e-4, atol=1e-8)


def test_lf_reads_tuple_batches_of_a_language_model_like_dict_batches() -> None:
    model, batches = tiny_lm(), lm_batches()
    tuples = [(b["input_ids"], b["labels"]) for b in batches]
    masks = [{**b, "attention_mask": torch.ones_like(b["attention_mask"])} for b in batches]
    for est in ("lf", "batch_sq"):
        a = dampen.importance(model, tuples, estimator=est)
        b = dampen.importance(model, masks, estimator=est)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-9)


class Wrapped(torch.nn.Module):
    """A causal LM inside the user's own module (as in a LightningModule)."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = tiny_lm()

    def forward(self, **inputs: torch.Tensor) -> object:
        return self.lm(**inputs)


def test_a_wrapped_language_model_is_shifted_too() -> None:
    wrapped, batch = Wrapped(), lm_batches()[0]
    logits, targets = default_forward(wrapped, batch)
    assert logits.shape == (4, 9, VOCAB)
    assert torch.equal(targets, batch["labels"][:, 1:])
    a = dampen.importance(wrapped, lm_batches())
    b = dampen.importance(wrapped.lm, lm_batches())
    torch.testing.assert_close(a["lm.transformer.wte.weight"], b["transformer.wte.weight"])


def test_a_token_label_outside_the_vocabulary_is_refused() -> None:
    batch = lm_batches()[0]
    batch["labels"] = batch["labels"].clone()
    batch["labels"][0, 6] = VOCAB
    with pytest.raises(ValueError, match="outside"):
        dampen.importance(tiny_lm(), [batch])


def test_ssd_dampens_a_language_model_and_moves_the_forget_loss_most() -> None:
    model, batches = tiny_lm(), lm_batches(n=16)
    imp = dampen.importance(model, batches)
    forget = batches[:1]
    result = dampen.unlearn(model, forget, importance=imp, alpha=1.2, lambda_=1.0)
    assert result.stats["selected"] > 0

    def mean_loss(m: torch.nn.Module, data: list[dict[str, torch.Tensor]]) -> float:
        with torch.no_grad():
            return float(torch.cat([sample_losses(*default_forward(m, b)) for b in data]).mean())

    rise_forget = mean_loss(result.model, forget) - mean_loss(model, forget)
    rise_retain = mean_loss(result.model, batches[1:]) - mean_loss(model, batches[1:])
    assert rise_forget > 0
    assert rise_forget > rise_retain


def test_auto_alpha_reads_sequence_accuracy_on_a_language_model() -> None:
    model, batches = tiny_lm(), lm_batches(n=8)
    imp = dampen.importance(model, batches)
    result = dampen.unlearn(model, batches[:1], importance=imp, heldout=batches[1:])
    auto = result.stats["auto"]
    assert auto["kind"] == "samples"
    # an untrained model gets no sequence right: nothing to forget, nothing changed
    assert auto["original_forget_acc"] == 0.0
    assert result.stats["selected"] == 0


@pytest.fixture
def lm_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "lm"
    tiny_lm().save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_text("{}")
    return folder


DATA_MODULE = """
import torch
from tests.test_causal_lm import lm_batches
def train():
    return lm_batches(n=16)
def forget():
    return lm_batches(n=16)[:1]
"""


@pytest.fixture
def data_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "lm_data_for_cli.py").write_text(DATA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    return "lm_data_for_cli"


def test_cli_unlearns_a_pretrained_folder(
    lm_folder: Path, data_module: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    imp_path, out = tmp_path / "imp.safetensors", tmp_path / "unlearned"
    args = ["--pretrained", str(lm_folder), "--no-progress"]
    done = runner.invoke(
        main, ["importance", *args, "--data", f"{data_module}:train", "--out", str(imp_path)]
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        main,
        ["forget", *args, "--importance", str(imp_path), "--forget", f"{data_module}:forget",
         "-o", "alpha=1.2", "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (out / "tokenizer.json").read_text() == "{}"
    unlearned = type(tiny_lm()).from_pretrained(out, local_files_only=True)
    original, expected = tiny_lm(), dampen.unlearn(
        tiny_lm(), lm_batches(n=16)[:1], importance=dampen.importance(tiny_lm(), lm_batches(n=16)),
        alpha=1.2,
    ).model  # fmt: skip
    changed = 0
    for (name, p), q, r in zip(
        unlearned.named_parameters(), expected.parameters(), original.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)
        changed += int(not torch.equal(p, r))
    assert changed > 0


def test_cli_refuses_pickled_weights_and_mixed_model_options(
    lm_folder: Path, data_module: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    imp_path = tmp_path / "imp.safetensors"
    dampen.importance(tiny_lm(), lm_batches()).save(imp_path)
    pickled, empty = tmp_path / "pickled", tmp_path / "empty"
    pickled.mkdir()
    empty.mkdir()
    (pickled / "config.json").write_text((lm_folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    for extra, message in [
        (["--pretrained", str(pickled)], "no .safetensors"),
        (["--pretrained", str(lm_folder), "--model", "x:y"], "not both"),
        (["--pretrained", str(empty)], "no config.json"),
    ]:
        done = runner.invoke(
            main,
            ["forget", *extra, "--importance", str(imp_path), "--forget",
             f"{data_module}:forget", "--out", str(tmp_path / "out"), "--no-progress"],
        )  # fmt: skip
        assert done.exit_code != 0
        assert message in done.output
        assert not (tmp_path / "out").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for out, message in [
        (lm_folder, "overwrite or sit inside --pretrained"),
        (tmp_path, "sit inside --pretrained"),  # holds the model and the importance
        (notes, "holds other things"),
    ]:
        done = runner.invoke(
            main,
            ["forget", "--pretrained", str(lm_folder), "--importance", str(imp_path),
             "--forget", f"{data_module}:forget", "--out", str(out), "--no-progress"],
        )  # fmt: skip
        assert done.exit_code != 0 and message in done.output, done.output
    assert (notes / "todo.txt").read_text() == "mine"
    assert (lm_folder / "model.safetensors").is_file() and imp_path.is_file()


def test_a_failed_write_leaves_the_old_output_folder(
    lm_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dampen.cli.pretrained import write_pretrained

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_pretrained(tiny_lm(), lm_folder, out, before_swap=fail)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "out"]  # no temporary left
    write_pretrained(tiny_lm(), lm_folder, out)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
