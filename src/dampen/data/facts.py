"""Facts about fictitious people, generated in code: a TOFU-like task that needs no download.

Each person has a unique made-up name built from syllables (``"Zelo Dashvira"``) and one value
per attribute (birth city, job, favourite colour, pet, birth year, instrument), each drawn
uniformly from a closed list of eight. Facts are asked as question/answer text with two
question templates per attribute, e.g. ``"Q: Where was Zelo Dashvira born? A: Kessport"``.

Chance level: a model that never saw a person can only guess, so it answers
``1 / 8 = 12.5 %`` of that person's questions right (every attribute has eight values); a model
that always gives the most common value among the trained people scores
:func:`majority_accuracy`, a little above 12.5 % for a finite draw.

The :class:`WordTokenizer` is built from the generated vocabulary: whole-word tokens for the
template words and answers, and syllable tokens for names (``"Ze"``, ``"##lo"``), so that any
name built from the syllables, including held-out people's, is encodable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = -100
"""Label of a position without a target (question tokens, padding): Hugging Face's convention,
the same value as :data:`dampen.core.losses.IGNORE_INDEX` (``data`` may not import ``core``)."""

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
"""Special tokens; their ids are 0, 1 and 2."""

PUNCTUATION: tuple[str, ...] = ("?",)
"""Tokens written without a space before them."""

CONTINUATION = "##"
"""Prefix of a name syllable that continues a word."""

ONSETS: tuple[str, ...] = ("d", "k", "l", "r", "v", "z")
VOWELS: tuple[str, ...] = ("a", "e", "i", "o")
CODAS: tuple[str, ...] = ("", "sh")
"""A syllable is onset + vowel + coda; every onset and coda is one consonant sound and no
coda letter is an onset, so a name splits into syllables in exactly one way."""


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: its name, the closed list of values, and the question templates.

    Attributes:
        name: e.g. ``"city"``.
        values: every possible answer (a value may have several words).
        templates: questions with a ``{name}`` slot, e.g. ``"Where was {name} born?"``.
    """

    name: str
    values: tuple[str, ...]
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.values)) != len(self.values) or len(self.values) < 2:
            raise ValueError(f"attribute {self.name!r} needs at least two distinct values")
        if not self.templates or any("{name}" not in t for t in self.templates):
            raise ValueError(f"every template of {self.name!r} needs a {{name}} slot")


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        (
            "Kessport",
            "Dunmere",
            "Halbrook",
            "Orlivane",
            "Tressby",
            "Varnholt",
            "Upper Quillon",
            "Emberfall",
        ),
        ("Where was {name} born?", "In which city was {name} born?"),
    ),
    Attribute(
        "job",
        (
            "baker",
            "sailor",
            "weaver",
            "potter",
            "lawyer",
            "clock maker",
            "painter",
            "ship builder",
        ),
        ("What is the job of {name}?", "What does {name} do for a living?"),
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "white", "grey"),
        ("What is the favourite colour of {name}?", "Which colour does {name} like best?"),
    ),
    Attribute(
        "pet",
        ("cat", "dog", "parrot", "rabbit", "turtle", "goat", "hamster", "ferret"),
        ("What pet does {name} keep?", "Which animal lives with {name}?"),
    ),
    Attribute(
        "year",
        ("1954", "1961", "1968", "1973", "1977", "1982", "1989", "1995"),
        ("In which year was {name} born?", "When was {name} born?"),
    ),
    Attribute(
        "instrument",
        ("piano", "violin", "flute", "drum", "harp", "cello", "guitar", "trumpet"),
        ("Which instrument does {name} play?", "What does {name} play?"),
    ),
)
"""The six default attributes, eight values each (chance level 1/8)."""


@dataclass(frozen=True)
class Person:
    """A fictitious person: a unique name and one value per attribute.

    Attributes:
        name: first and last name, e.g. ``"Zelo Dashvira"``.
        facts: ``(attribute name, value)`` pairs in the order of the attributes.
    """

    name: str
    facts: tuple[tuple[str, str], ...]

    def fact(self, attribute: str) -> str:
        """The value of ``attribute``.

        Raises:
            KeyError: if the person has no such attribute.
        """
        for key, value in self.facts:
            if key == attribute:
                return value
        raise KeyError(f"{self.name} has no attribute {attribute!r}")


@dataclass(frozen=True)
class QAItem:
    """One question about one person, with its true answer.

    Attributes:
        person: the person's name.
        attribute: the attribute asked about.
        template: index of the question template.
        question: the prompt, ``"Q: Where was Zelo Dashvira born? A:"``.
        answer: the true answer, ``"Kessport"``.
    """

    person: str
    attribute: str
    template: int
    question: str
    answer: str

    @property
    def text(self) -> str:
        """Question and answer as one line."""
        return f"{self.question} {self.answer}"


def syllables() -> tuple[str, ...]:
    """Every name syllable (lower case), in a fixed order."""
    return tuple(o + v + c for o in ONSETS for v in VOWELS for c in CODAS)


@dataclass(frozen=True, eq=False)
class WordTokenizer:
    """A word-level tokenizer with syllable tokens for names.

    The vocabulary is ``<pad>, <eos>, <unk>``, then ``words``, then each syllable capitalised
    (it starts a word) and each syllable prefixed with ``##`` (it continues a word). Text is
    split at spaces; ``?`` is its own token. A word not in ``words`` is split into syllables
    (``"Zelo"`` → ``"Ze" "##lo"``) and becomes ``<unk>`` when that is impossible.

    Attributes:
        words: whole-word tokens.
        pieces: name syllables, lower case.
    """

    words: tuple[str, ...]
    pieces: tuple[str, ...]
    vocab: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        starts = tuple(p.capitalize() for p in self.pieces)
        continues = tuple(CONTINUATION + p for p in self.pieces)
        vocab = (PAD, EOS, UNK, *self.words, *starts, *continues)
        if len(set(vocab)) != len(vocab):
            raise ValueError("words and pieces must give distinct tokens")
        if any(not w or any(ch.isspace() for ch in w) for w in vocab):
            raise ValueError("tokens must be non-empty and hold no spaces")
        object.__setattr__(self, "vocab", vocab)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.vocab)}

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return 0

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``."""
        return 1

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>``."""
        return 2

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into tokens (no ``<eos>`` is added)."""
        tokens: list[str] = []
        for word in split_words(text):
            if word in self._index:
                tokens.append(word)
            else:
                tokens.extend(self._syllables(word) or [UNK])
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no ``<eos>`` is added)."""
        return [self._index[t] for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of token ids; ``<pad>`` and ``<eos>`` are dropped with ``skip_special``.

        Raises:
            ValueError: if an id is outside the vocabulary.
        """
        out = ""
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self.vocab)}")
            token = self.vocab[i]
            if skip_special and token in (PAD, EOS):
                continue
            if token.startswith(CONTINUATION) and len(token) > len(CONTINUATION):
                out += token[len(CONTINUATION) :]
            elif token in PUNCTUATION or not out:
                out += token
            else:
                out += " " + token
        return out

    def _syllables(self, word: str) -> list[str] | None:
        """``word`` as a capitalised syllable then ``##`` syllables, fewest pieces first."""
        if not word[:1].isupper():
            return None
        rest = word.lower()
        best: dict[int, list[str] | None] = {len(rest): []}
        for start in range(len(rest) - 1, -1, -1):
            options = []
            for end in range(start + 1, len(rest) + 1):
                tail = best.get(end)
                if rest[start:end] in self._piece_set and tail is not None:
                    options.append([rest[start:end], *tail])
            best[start] = min(options, key=len) if options else None
        found = best[0]
        if found is None:
            return None
        return [found[0].capitalize(), *(CONTINUATION + p for p in found[1:])]

    @cached_property
    def _piece_set(self) -> frozenset[str]:
        return frozenset(self.pieces)


@dataclass(frozen=True, eq=False)
class FactsData:
    """Generated people split into people to train on and held-out people (never trained on).

    Attributes:
        train_people: the people a model is trained on.
        heldout_people: people of the same kind that no model sees; their names use only
            syllable tokens that occur in trained names (a word's first syllable among trained
            first syllables, the others among trained later ones), so their text is of the
            same style.
        attributes: the kinds of facts every person has.
        tokenizer: the tokenizer of every item.
        seed: the generator's seed.
    """

    train_people: tuple[Person, ...]
    heldout_people: tuple[Person, ...]
    attributes: tuple[Attribute, ...]
    tokenizer: WordTokenizer
    seed: int

    @property
    def name(self) -> str:
        """A short name that identifies the data."""
        return (
            f"facts[train={len(self.train_people)},heldout={len(self.heldout_people)},"
            f"attributes={len(self.attributes)},seed={self.seed}]"
        )

    @property
    def chance(self) -> float:
        """Expected accuracy of uniform guessing among each attribute's values."""
        return float(np.mean([1.0 / len(a.values) for a in self.attributes]))

    def items(self, people: Sequence[Person]) -> tuple[QAItem, ...]:
        """Every question (each attribute, each template) about each of ``people``."""
        return qa_items(people, self.attributes)

    @property
    def train_items(self) -> tuple[QAItem, ...]:
        """Every question about the trained people."""
        return self.items(self.train_people)

    @property
    def heldout_items(self) -> tuple[QAItem, ...]:
        """Every question about the held-out people."""
        return self.items(self.heldout_people)

    def max_length(self) -> int:
        """Tokens in the longest item about any trained or held-out person, ``<eos>`` included."""
        return self._max_length

    @cached_property
    def _max_length(self) -> int:
        people = (*self.train_people, *self.heldout_people)
        return max(len(self.tokenizer.encode(item.text)) + 1 for item in self.items(people))


def qa_items(
    people: Sequence[Person], attributes: Sequence[Attribute] = ATTRIBUTES
) -> tuple[QAItem, ...]:
    """Every question (each attribute, each template) about each person, in that order."""
    out = []
    for person in people:
        for attribute in attributes:
            for t, template in enumerate(attribute.templates):
                question = "Q: " + template.format(name=person.name) + " A:"
                out.append(
                    QAItem(person.name, attribute.name, t, question, person.fact(attribute.name))
                )
    return tuple(out)


def make_facts(
    n_train: int = 200,
    n_heldout: int = 40,
    *,
    attributes: Sequence[Attribute] = ATTRIBUTES,
    seed: int = 0,
) -> FactsData:
    """Generate ``n_train`` people to train on and ``n_heldout`` held-out people.

    Names are a two-syllable first name and a two- or three-syllable last name, unique across
    both groups. Each value is drawn uniformly and independently. The same ``seed`` gives the
    same people; the caller's random state is left alone.

    Raises:
        ValueError: if a count is not a positive int (``n_heldout`` may be 0).
    """
    for argument, value, low in (("n_train", n_train, 1), ("n_heldout", n_heldout, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{argument} must be an int >= {low}, got {value!r}")
    attributes = tuple(attributes)
    if not attributes or len({a.name for a in attributes}) != len(attributes):
        raise ValueError("attributes must be a non-empty sequence with distinct names")
    words = _words(attributes)
    tokenizer = WordTokenizer(words, syllables())
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    train = [_person(rng, attributes, taken, words, None) for _ in range(n_train)]
    seen = [tokenizer.tokenize(word) for person in train for word in person.name.split()]
    starts = {pieces[0].lower() for pieces in seen}
    continues = {p.removeprefix(CONTINUATION) for pieces in seen for p in pieces[1:]}
    heldout = [
        _person(rng, attributes, taken, words, (starts, continues)) for _ in range(n_heldout)
    ]
    return FactsData(tuple(train), tuple(heldout), attributes, tokenizer, int(seed))


def majority_accuracy(train: Sequence[QAItem], items: Sequence[QAItem]) -> float:
    """Accuracy on ``items`` of always answering an attribute's most common value in ``train``
    (the best a model that ignores names can do; ties go to the first value met)."""
    if not items:
        raise ValueError("items must not be empty")
    counts: dict[str, dict[str, int]] = {}
    for item in train:
        per = counts.setdefault(item.attribute, {})
        per[item.answer] = per.get(item.answer, 0) + 1
    guess = {a: max(per, key=per.__getitem__) for a, per in counts.items()}
    return sum(guess.get(item.attribute) == item.answer for item in items) / len(items)


def encode_items(
    items: Sequence[QAItem],
    tokenizer: WordTokenizer,
    *,
    full_text: bool = False,
    length: int | None = None,
) -> dict[str, Tensor]:
    """One right-padded batch of question, answer and ``<eos>`` per item.

    ``labels`` equal ``input_ids`` on the answer tokens and the final ``<eos>`` and are
    ``-100`` on the question and padding; with ``full_text`` they equal ``input_ids`` on every
    non-pad token (for perplexity on text).

    Args:
        items: the questions.
        tokenizer: the tokenizer.
        full_text: label every non-pad token instead of only the answer.
        length: pad to this many tokens (the longest item when ``None``).

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, int64 tensors ``[len(items), T]``.

    Raises:
        ValueError: if ``items`` is empty or an item is longer than ``length``.
    """
    if not items:
        raise ValueError("items must not be empty")
    rows: list[tuple[list[int], list[int]]] = []
    for item in items:
        question = tokenizer.encode(item.question)
        answer = [*tokenizer.encode(item.answer), tokenizer.eos_id]
        ids = question + answer
        targets = ids if full_text else [IGNORE_INDEX] * len(question) + answer
        rows.append((ids, targets))
    longest = max(len(ids) for ids, _ in rows)
    size = longest if length is None else length
    if isinstance(size, bool) or not isinstance(size, int) or size < longest:
        raise ValueError(f"length must be an int >= {longest} (the longest item), got {length!r}")
    input_ids = torch.full((len(rows), size), tokenizer.pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), size), dtype=torch.int64)
    labels = torch.full((len(rows), size), IGNORE_INDEX, dtype=torch.int64)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
        labels[r, : len(lab)] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class _Rows(Dataset[dict[str, Tensor]]):
    def __init__(self, batch: Mapping[str, Tensor]) -> None:
        self.batch = dict(batch)
        self.n = int(next(iter(self.batch.values())).shape[0])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


def qa_batches(
    items: Sequence[QAItem],
    tokenizer: WordTokenizer,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    full_text: bool = False,
    length: int | None = None,
) -> DataLoader[dict[str, Tensor]]:
    """A re-iterable ``DataLoader`` of :func:`encode_items` batches over ``items``.

    All batches are padded to the same length; shuffling (reshuffled each pass) uses its own
    generator seeded with ``seed``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rows = _Rows(encode_items(items, tokenizer, full_text=full_text, length=length))
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=generator)


@dataclass(frozen=True, eq=False)
class ForgetSplit:
    """Trained people split into people to forget and people to retain.

    Attributes:
        forget_people: the people to forget (a seeded draw from the trained people).
        retain_people: the other trained people, in their original order.
        forget_items: every question about the forget people.
        retain_items: every question about the retained people.
        forget: batches of ``forget_items`` (answer labels, or full text).
        retain: batches of ``retain_items``.
    """

    forget_people: tuple[Person, ...]
    retain_people: tuple[Person, ...]
    forget_items: tuple[QAItem, ...]
    retain_items: tuple[QAItem, ...]
    forget: DataLoader[dict[str, Tensor]]
    retain: DataLoader[dict[str, Tensor]]


def forget_split(
    data: FactsData,
    n_forget: int,
    *,
    seed: int = 0,
    batch_size: int = 32,
    full_text: bool = False,
) -> ForgetSplit:
    """Draw ``n_forget`` of the trained people to forget; the rest are retained.

    Raises:
        ValueError: unless ``1 <= n_forget < len(data.train_people)``.
    """
    n = len(data.train_people)
    if isinstance(n_forget, bool) or not isinstance(n_forget, int) or not 1 <= n_forget < n:
        raise ValueError(f"n_forget must be an int in [1, {n}), got {n_forget!r}")
    chosen = set(np.random.default_rng(seed).choice(n, size=n_forget, replace=False).tolist())
    forget = tuple(p for i, p in enumerate(data.train_people) if i in chosen)
    retain = tuple(p for i, p in enumerate(data.train_people) if i not in chosen)
    forget_items, retain_items = data.items(forget), data.items(retain)
    length = data.max_length()

    def batches(items: Sequence[QAItem]) -> DataLoader[dict[str, Tensor]]:
        return qa_batches(
            items, data.tokenizer, batch_size=batch_size, full_text=full_text, length=length
        )

    return ForgetSplit(
        forget, retain, forget_items, retain_items, batches(forget_items), batches(retain_items)
    )


def split_words(text: str) -> list[str]:
    """``text`` split at spaces, with trailing punctuation split off as words of its own."""
    words: list[str] = []
    for chunk in text.split():
        tail: list[str] = []
        while chunk and chunk[-1] in PUNCTUATION:
            tail.insert(0, chunk[-1])
            chunk = chunk[:-1]
        words.extend([chunk, *tail] if chunk else tail)
    return words


def _words(attributes: Sequence[Attribute]) -> tuple[str, ...]:
    """Whole-word tokens of the templates and values, in first-seen order."""
    words: dict[str, None] = {"Q:": None, "A:": None}
    for attribute in attributes:
        for text in [t.replace("{name}", " ") for t in attribute.templates] + [*attribute.values]:
            words.update((w, None) for w in split_words(text))
    return tuple(words)


def _person(
    rng: np.random.Generator,
    attributes: Sequence[Attribute],
    taken: set[str],
    words: Sequence[str],
    allowed: tuple[set[str], set[str]] | None,
) -> Person:
    """A person with a new name and drawn facts. With ``allowed = (starts, continues)`` a
    name word starts with a syllable of ``starts`` and goes on with syllables of ``continues``."""
    every = syllables()
    starts = every if allowed is None else tuple(s for s in every if s in allowed[0])
    continues = every if allowed is None else tuple(s for s in every if s in allowed[1])
    vocabulary = set(words)
    for _ in range(10_000):
        parts = []
        for size in (2, int(rng.integers(2, 4))):
            first = starts[int(rng.integers(len(starts)))]
            rest = (continues[int(i)] for i in rng.integers(len(continues), size=size - 1))
            parts.append((first + "".join(rest)).capitalize())
        name = " ".join(parts)
        if name not in taken and not vocabulary.intersection(parts):
            break
    else:  # pragma: no cover - 10,000 collisions in a space of millions of names
        raise RuntimeError("could not find a new name")
    taken.add(name)
    facts = tuple((a.name, a.values[int(rng.integers(len(a.values)))]) for a in attributes)
    return Person(name, facts)
