"""The facts task: generated people, the word tokenizer, label masks, answer metrics, training."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pytest
import torch

from dampen.data.facts import (
    ATTRIBUTES,
    IGNORE_INDEX,
    FactsData,
    QAItem,
    encode_items,
    forget_split,
    majority_accuracy,
    make_facts,
    qa_batches,
    syllables,
)
from dampen.eval.answers import (
    answer_accuracy,
    generate_answers,
    perplexity,
    teacher_forced_accuracy,
    teacher_forced_correct,
)

transformers = pytest.importorskip("transformers")

from dampen.bench.facts_recipe import FactsModel, FactsRecipe, train_facts_model  # noqa: E402
from dampen.models import tiny_gpt2  # noqa: E402


def test_people_are_the_same_for_a_seed_and_differ_across_seeds() -> None:
    a, b, c = make_facts(30, 10, seed=1), make_facts(30, 10, seed=1), make_facts(30, 10, seed=2)
    assert a.train_people == b.train_people and a.heldout_people == b.heldout_people
    assert a.tokenizer.vocab == b.tokenizer.vocab
    assert a.train_people != c.train_people


def test_names_are_unique_and_made_of_syllables() -> None:
    data = make_facts(200, 50, seed=0)
    people = (*data.train_people, *data.heldout_people)
    names = [p.name for p in people]
    assert len(set(names)) == len(names) == 250
    first = {data.tokenizer.vocab.index(s.capitalize()) for s in syllables()}
    rest = {data.tokenizer.vocab.index("##" + s) for s in syllables()}
    for name in names:
        for word in name.split():
            ids = data.tokenizer.encode(word)
            assert len(ids) >= 2 and ids[0] in first and set(ids[1:]) <= rest, word
    for person in people:
        assert [a for a, _ in person.facts] == [a.name for a in ATTRIBUTES]
        for attribute in ATTRIBUTES:
            assert person.fact(attribute.name) in attribute.values


def test_heldout_names_use_only_syllables_of_trained_names() -> None:
    data = make_facts(40, 40, seed=3)
    tok = data.tokenizer
    trained = {t for p in data.train_people for t in tok.encode(p.name)}
    heldout = {t for p in data.heldout_people for t in tok.encode(p.name)}
    assert heldout <= trained


def test_tokenizer_round_trip() -> None:
    data = make_facts(50, 20, seed=0)
    tok = data.tokenizer
    for item in (*data.train_items, *data.heldout_items):
        ids = tok.encode(item.text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == item.text
        assert tok.decode([*ids, tok.eos_id, tok.pad_id]) == item.text
    # a name nobody has is still encodable from syllables
    assert tok.decode(tok.encode("Q: Where was Zoshka Velidash born? A:")) == (
        "Q: Where was Zoshka Velidash born? A:"
    )
    assert tok.encode("Where was Xylophone")[-1] == tok.unk_id
    assert tok.decode([tok.eos_id], skip_special=False) == "<eos>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([len(tok)])


@pytest.mark.parametrize("full_text", [False, True])
def test_labels_are_masked_exactly_on_question_and_padding(full_text: bool) -> None:
    data = make_facts(6, 2, seed=4)
    tok = data.tokenizer
    items = (*data.train_items, *data.heldout_items)
    batch = encode_items(items, tok, full_text=full_text, length=data.max_length() + 2)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(v.dtype == torch.int64 and v.shape == batch["labels"].shape for v in batch.values())
    for r, item in enumerate(items):
        question, answer = tok.encode(item.question), tok.encode(item.answer)
        for t in range(batch["input_ids"].shape[1]):
            ids, mask, label = (int(batch[k][r, t]) for k in batch)
            if t < len(question):
                assert (ids, mask) == (question[t], 1)
                assert label == (ids if full_text else IGNORE_INDEX)
            elif t < len(question) + len(answer):
                assert (ids, mask, label) == (answer[t - len(question)],) * 1 + (1, ids)
            elif t == len(question) + len(answer):
                assert (ids, mask, label) == (tok.eos_id, 1, tok.eos_id)
            else:
                assert (ids, mask, label) == (tok.pad_id, 0, IGNORE_INDEX)


def test_the_ignore_index_is_dampens() -> None:
    from dampen.core.losses import IGNORE_INDEX as CORE_IGNORE_INDEX

    assert IGNORE_INDEX == CORE_IGNORE_INDEX == -100


def test_encode_items_rejects_a_short_length() -> None:
    data = make_facts(3, 0, seed=0)
    with pytest.raises(ValueError, match="length"):
        encode_items(data.train_items, data.tokenizer, length=3)
    with pytest.raises(ValueError, match="empty"):
        encode_items((), data.tokenizer)


def test_forget_split_is_a_seeded_partition_of_the_trained_people() -> None:
    data = make_facts(20, 5, seed=0)
    split = forget_split(data, 4, seed=7, batch_size=8)
    forget = {p.name for p in split.forget_people}
    retain = {p.name for p in split.retain_people}
    assert len(forget) == 4 and not forget & retain
    assert forget | retain == {p.name for p in data.train_people}
    assert not forget & {p.name for p in data.heldout_people}
    assert {i.person for i in split.forget_items} == forget
    assert {i.person for i in split.retain_items} == retain
    assert sum(len(b["labels"]) for b in split.forget) == len(split.forget_items)
    assert sum(len(b["labels"]) for b in split.retain) == len(split.retain_items)
    again = forget_split(data, 4, seed=7)
    assert again.forget_people == split.forget_people
    assert forget_split(data, 4, seed=8).forget_people != split.forget_people
    for bad in (0, 20):
        with pytest.raises(ValueError, match="n_forget"):
            forget_split(data, bad)


def test_majority_accuracy_counts_the_most_common_value() -> None:
    def item(attribute: str, answer: str) -> QAItem:
        return QAItem("X", attribute, 0, "Q:", answer)

    train = [item("pet", "cat"), item("pet", "cat"), item("pet", "dog"), item("job", "baker")]
    test = [item("pet", "cat"), item("pet", "dog"), item("job", "baker"), item("job", "miner")]
    assert majority_accuracy(train, test) == 0.5


def _untrained(data: FactsData, seed: int = 0) -> torch.nn.Module:
    return tiny_gpt2(
        len(data.tokenizer),
        data.max_length() + 4,
        n_layer=1,
        n_embd=16,
        n_head=2,
        seed=seed,
        pad_token_id=data.tokenizer.pad_id,
        eos_token_id=data.tokenizer.eos_id,
    )


@pytest.mark.parametrize("full_text", [False, True])
def test_perplexity_matches_a_loop_over_single_sequences(full_text: bool) -> None:
    data = make_facts(4, 2, seed=5)
    items = (*data.train_items, *data.heldout_items)
    model = _untrained(data)
    model.train()
    batches = qa_batches(items, data.tokenizer, batch_size=5, full_text=full_text)
    got = perplexity(model, batches)
    assert model.training
    total, count = 0.0, 0
    with torch.no_grad():
        for item in items:
            ids = data.tokenizer.encode(item.question)
            answer = [*data.tokenizer.encode(item.answer), data.tokenizer.eos_id]
            first = 1 if full_text else len(ids)
            ids = ids + answer
            logp = model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
            for t in range(first, len(ids)):
                total -= float(logp[t - 1, ids[t]])
                count += 1
    assert got == pytest.approx(math.exp(total / count), rel=1e-5)


def test_teacher_forced_correct_matches_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 4, generator=g)
    labels = logits.argmax(-1).roll(1, dims=1)  # labels[:, t] = argmax at t - 1
    labels[:, 0] = IGNORE_INDEX
    labels[1, 3] = (labels[1, 3] + 1) % 4  # a wrong token
    labels[2, 4] = IGNORE_INDEX
    labels[3, 2] = (labels[3, 2] + 1) % 4
    labels[3, 2:] = IGNORE_INDEX  # the wrong token is masked
    expected = []
    for r in range(6):
        right = True
        for t in range(1, 5):
            if labels[r, t] != IGNORE_INDEX and logits[r, t - 1].argmax() != labels[r, t]:
                right = False
        expected.append(right)
    assert teacher_forced_correct(logits, labels).tolist() == expected
    assert expected == [True, False, True, True, True, True]
    labels[4, 1:] = IGNORE_INDEX
    with pytest.raises(ValueError, match="-100"):
        teacher_forced_correct(logits, labels)


def test_generation_stops_at_the_models_positions() -> None:
    data = make_facts(2, 0, seed=0)
    model = tiny_gpt2(len(data.tokenizer), 6, n_layer=1, n_embd=8, n_head=2)
    with pytest.raises(ValueError, match="positions"):
        generate_answers(model, data.train_items, data.tokenizer)


def test_tiny_gpt2_is_seeded_and_has_no_dropout() -> None:
    a, b = tiny_gpt2(30, 12, n_embd=16, seed=3), tiny_gpt2(30, 12, n_embd=16, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    c = tiny_gpt2(30, 12, n_embd=16, seed=4)
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)
    assert a.config.resid_pdrop == a.config.embd_pdrop == a.config.attn_pdrop == 0.0
    with pytest.raises(ValueError, match="multiple"):
        tiny_gpt2(30, 12, n_embd=10, n_head=4)


def test_tiny_gpt2_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"dampen\[transformers\]"):
        tiny_gpt2(30, 12)


# -- a short real training ---------------------------------------------------------------------

TINY = FactsRecipe(n_layer=2, n_embd=32, n_head=4, lr=1e-2, max_epochs=60, batch_size=16)


@dataclass(frozen=True)
class Trained:
    data: FactsData
    result: FactsModel


@pytest.fixture(scope="module")
def trained() -> Trained:
    data = make_facts(12, 8, seed=0)
    return Trained(data, train_facts_model(data, TINY))


def test_generated_and_teacher_forced_answers_agree(trained: Trained) -> None:
    data, model = trained.data, trained.result.model
    items = (*data.train_items, *data.heldout_items)
    generated = generate_answers(model, items, data.tokenizer)
    exact = [g == item.answer for g, item in zip(generated, items, strict=True)]
    batch = encode_items(items, data.tokenizer)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    forced = teacher_forced_correct(logits, batch["labels"]).tolist()
    assert forced == exact
    assert 0 < sum(exact) < len(exact)  # both kinds occur, so the comparison means something
    batches = qa_batches(items, data.tokenizer, batch_size=7)
    assert teacher_forced_accuracy(model, batches) == pytest.approx(sum(exact) / len(exact))


def test_trained_people_are_recalled_and_heldout_people_answer_near_chance(
    trained: Trained,
) -> None:
    data, result = trained.data, trained.result
    assert result.reached and result.epochs < TINY.max_epochs
    assert not result.model.training
    train = answer_accuracy(result.model, data.train_items, data.tokenizer)
    heldout = answer_accuracy(result.model, data.heldout_items, data.tokenizer)
    assert train >= 0.95
    assert data.chance == 1 / 8
    assert heldout <= 0.35, heldout  # chance is 0.125; 96 correlated questions
    # the held-out answers are guesses among the asked attribute's values, not garbage
    values = {a.name: a.values for a in data.attributes}
    answers = generate_answers(result.model, data.heldout_items, data.tokenizer)
    valid = [a in values[i.attribute] for a, i in zip(answers, data.heldout_items, strict=True)]
    assert sum(valid) >= 0.8 * len(valid)
    length = data.max_length()
    seen = qa_batches(data.train_items, data.tokenizer, full_text=True, length=length)
    unseen = qa_batches(data.heldout_items, data.tokenizer, full_text=True, length=length)
    assert perplexity(result.model, seen) < perplexity(result.model, unseen)
