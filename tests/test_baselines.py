"""Baseline-specific behaviour: retrain's fresh start, retain requirements, UNSIR's scenario
check, SalUn's mask, config validation and the shared batch streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import dampen
from dampen.methods._fresh import reinitialise_
from dampen.methods._streams import Paired, Subsampled, Tagged
from dampen.methods.scrub import ScrubConfig

BASELINES = ["amnesiac", "bad_teacher", "finetune", "neggrad", "retrain", "salun", "scrub", "unsir"]
NEEDS_RETAIN = [b for b in BASELINES if b != "neggrad"]
CHEAP: dict[str, dict[str, Any]] = {
    "retrain": {"epochs": 1},
    "finetune": {"epochs": 1},
    "neggrad": {"epochs": 1},
    "amnesiac": {"epochs": 1},
    "scrub": {"epochs": 1, "max_steps": 1},
    "salun": {"epochs": 1},
    "unsir": {"noise_steps": 2, "noise_copies": 1},
}


def make_data(n_per: int = 20, classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per)
    x = torch.randn(len(y), 4, generator=g) + 3 * torch.eye(classes, 4)[y]
    return x, y


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 3)))


def split(x: Tensor, y: Tensor, forget: Tensor, batch_size: int = 8) -> dict[str, DataLoader]:
    return {
        "forget": DataLoader(TensorDataset(x[forget], y[forget]), batch_size=batch_size),
        "retain": DataLoader(TensorDataset(x[~forget], y[~forget]), batch_size=batch_size),
    }


@pytest.fixture
def class_split() -> dict[str, DataLoader]:
    x, y = make_data()
    return split(x, y, y == 0)


def params_of(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------- re-initialisation


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Conv1d(2, 2, 1), nn.BatchNorm1d(2))])
        self.attention = nn.MultiheadAttention(4, 2)
        self.norm = nn.LayerNorm(4)
        self.embed = nn.Embedding(5, 4)


class Bare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.head = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x * self.scale)


def test_reinitialise_resets_every_nested_parameter() -> None:
    model = nn.Sequential(Block(), nn.Sequential(Block(), nn.Linear(4, 2)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) + 5)  # "trained": far from any initial value
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for m in bns:
        m.register_buffer("running_mean", torch.full((2,), 3.0))
    before = params_of(model)
    assert reinitialise_(model) > 0
    for (name, new), old in zip(model.named_parameters(), before, strict=True):
        assert not torch.equal(old, new), name
    assert all(torch.equal(m.get_buffer("running_mean"), torch.zeros(2)) for m in bns)


def test_reinitialise_refuses_a_module_without_reset_and_changes_nothing() -> None:
    model = nn.Sequential(nn.Linear(3, 3), Bare())
    before = params_of(model)
    with pytest.raises(ValueError, match=r"'1'.*model_factory"):
        reinitialise_(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_retrain_starts_from_fresh_weights_everywhere(class_split: dict[str, DataLoader]) -> None:
    model = make_model()
    with torch.no_grad():
        for p in model.parameters():  # "trained" (api.unlearn's seed would redraw the same init)
            p.add_(1.0)
    result = dampen.unlearn(
        model,
        class_split["forget"],
        method="retrain",
        retain=class_split["retain"],
        epochs=1,
        lr=1e-9,
    )
    assert result.stats["initialisation"] == "reset"
    for old, new in zip(model.parameters(), result.model.parameters(), strict=True):
        assert not torch.equal(old, new)


def test_retrain_with_a_model_factory(class_split: dict[str, DataLoader]) -> None:
    calls: list[int] = []

    def factory() -> nn.Module:
        calls.append(1)
        return make_model(seed=7)

    model = make_model()
    out = dampen.unlearn(
        model,
        class_split["forget"],
        method="retrain",
        retain=class_split["retain"],
        epochs=1,
        model_factory=factory,
    )
    assert calls == [1]
    assert out.stats["initialisation"] == "model_factory"


def test_retrain_needs_a_factory_for_modules_without_reset() -> None:
    x, y = make_data()
    data = split(x[:, :3], y, y == 0)
    with pytest.raises(ValueError, match="model_factory"):
        dampen.unlearn(Bare(), data["forget"], method="retrain", retain=data["retain"], epochs=1)
    out = dampen.unlearn(
        Bare(),
        data["forget"],
        method="retrain",
        retain=data["retain"],
        epochs=1,
        model_factory=Bare,
    )
    assert out.stats["initialisation"] == "model_factory"


def test_retrain_rejects_a_factory_for_another_architecture(
    class_split: dict[str, DataLoader],
) -> None:
    with pytest.raises(ValueError, match="model_factory"):
        dampen.unlearn(
            make_model(),
            class_split["forget"],
            method="retrain",
            retain=class_split["retain"],
            epochs=1,
            model_factory=lambda: nn.Linear(4, 3),
        )


class Recording(Dataset[tuple[Tensor, Tensor]]):
    """A data set that records every index read from it."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        self.seen.add(int(i))
        return self.x[i], self.y[i]


def test_retrain_never_reads_a_forget_sample() -> None:
    x, y = make_data()
    data = Recording(x, y)
    forget_idx = torch.nonzero(y == 0).flatten().tolist()
    retain_idx = torch.nonzero(y != 0).flatten().tolist()
    forget = DataLoader(Subset(data, forget_idx), batch_size=8)
    retain = DataLoader(Subset(data, retain_idx), batch_size=8, shuffle=True)
    dampen.unlearn(make_model(), forget, method="retrain", retain=retain, epochs=2)
    assert data.seen == set(retain_idx)
    assert not data.seen & set(forget_idx)


# --------------------------------------------------------------------------- requirements


@pytest.mark.parametrize("name", NEEDS_RETAIN)
def test_methods_that_need_the_retain_set_say_so(
    name: str, class_split: dict[str, DataLoader]
) -> None:
    with pytest.raises(ValueError, match="retain"):
        dampen.unlearn(make_model(), class_split["forget"], method=name)


def test_neggrad_needs_retain_only_for_the_plus_variant(
    class_split: dict[str, DataLoader],
) -> None:
    out = dampen.unlearn(
        make_model(), class_split["forget"], method="neggrad", plus=False, epochs=1
    )
    assert out.stats["plus"] is False
    with pytest.raises(ValueError, match="retain"):  # NegGrad+ is the default
        dampen.unlearn(make_model(), class_split["forget"], method="neggrad")
    plus = dampen.unlearn(
        make_model(),
        class_split["forget"],
        method="neggrad",
        epochs=1,
        retain=class_split["retain"],
    )
    assert plus.stats["plus"] is True


@pytest.mark.parametrize("name", ["amnesiac", "bad_teacher", "neggrad", "salun", "scrub"])
def test_an_empty_forget_set_is_an_error(name: str, class_split: dict[str, DataLoader]) -> None:
    with pytest.raises(ValueError, match="forget set is empty"):
        dampen.unlearn(make_model(), [], method=name, retain=class_split["retain"])


@pytest.mark.parametrize("name", ["ssd", "lfssd", "assd", "alf"])
def test_ssd_family_ignores_the_retain_set(name: str) -> None:
    x, y = make_data()
    loaders = split(x, y, y == 0)
    train = DataLoader(TensorDataset(x, y), batch_size=8)
    model = make_model()
    a = dampen.unlearn(model, loaders["forget"], method=name, train=train)
    b = dampen.unlearn(model, loaders["forget"], method=name, train=train, retain=loaders["retain"])
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_unsir_refuses_random_forgetting() -> None:
    x, y = make_data()
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[::7] = True  # samples of every class
    loaders = split(x, y, forget)
    with pytest.raises(ValueError, match="class forgetting only"):
        dampen.unlearn(make_model(), loaders["forget"], method="unsir", retain=loaders["retain"])


def test_unsir_refuses_sub_class_forgetting() -> None:
    x, y = make_data()
    forget = (y == 1) & (torch.arange(len(y)) % 2 == 0)  # half of class 1
    loaders = split(x, y, forget)
    with pytest.raises(ValueError, match=r"forget class\(es\) \[1\]"):
        dampen.unlearn(make_model(), loaders["forget"], method="unsir", retain=loaders["retain"])


def test_unsir_learns_one_noise_batch_per_forget_class() -> None:
    x, y = make_data()
    loaders = split(x, y, y != 2)
    out = dampen.unlearn(
        make_model(),
        loaders["forget"],
        method="unsir",
        retain=loaders["retain"],
        **CHEAP["unsir"],
    )
    assert out.stats["forget_classes"] == [0, 1]


# --------------------------------------------------------------------------- dict batches


class DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(features)}


def dict_batches(x: Tensor, y: Tensor) -> list[dict[str, Tensor]]:
    return [{"features": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, len(y), 8)]


@pytest.mark.parametrize("name", [b for b in BASELINES if b != "unsir"])
def test_dict_batches_work(name: str) -> None:
    x, y = make_data()
    f = y == 0
    model = DictModel()
    out = dampen.unlearn(
        model,
        dict_batches(x[f], y[f]),
        method=name,
        retain=dict_batches(x[~f], y[~f]),
        **CHEAP.get(name, {}),
    )
    assert isinstance(out.model, DictModel)


def test_unsir_needs_tensor_inputs() -> None:
    x, y = make_data()
    f = y == 0
    with pytest.raises(TypeError, match="tensor"):
        dampen.unlearn(
            DictModel(),
            dict_batches(x[f], y[f]),
            method="unsir",
            retain=dict_batches(x[~f], y[~f]),
        )


# --------------------------------------------------------------------------- SalUn's mask


@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_salun_changes_only_the_salient_share_of_weights(
    threshold: float, class_split: dict[str, DataLoader]
) -> None:
    model = make_model()
    out = dampen.unlearn(
        model,
        class_split["forget"],
        method="salun",
        retain=class_split["retain"],
        threshold=threshold,
        epochs=2,
    )
    total = sum(p.numel() for p in model.parameters())
    changed = sum(
        int((a != b).sum()) for a, b in zip(model.parameters(), out.model.parameters(), strict=True)
    )
    assert out.stats["salient"] == round(threshold * total)
    assert 0 < changed <= out.stats["salient"]


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("name", "options", "error", "field"),
    [
        ("retrain", {"epochs": 0}, ValueError, "epochs"),
        ("retrain", {"epochs": 2.5}, TypeError, "epochs"),
        ("retrain", {"milestones": (0.6, 0.3)}, ValueError, "milestones"),
        ("retrain", {"milestones": (0.3, 1.0)}, ValueError, "milestones"),
        ("retrain", {"gamma": 0.0}, ValueError, "gamma"),
        ("retrain", {"model_factory": 3}, TypeError, "model_factory"),
        ("finetune", {"lr": -0.1}, ValueError, "lr"),
        ("finetune", {"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ("finetune", {"momentum": 1.0}, ValueError, "momentum"),
        ("neggrad", {"beta": 1.0}, ValueError, "beta"),
        ("neggrad", {"plus": 1}, TypeError, "plus"),
        ("amnesiac", {"weight_decay": -1.0}, ValueError, "weight_decay"),
        ("bad_teacher", {"retain_fraction": 0.0}, ValueError, "retain_fraction"),
        ("bad_teacher", {"temperature": float("nan")}, ValueError, "temperature"),
        ("unsir", {"noise_steps": 0}, ValueError, "noise_steps"),
        ("unsir", {"repair_lr": 0.0}, ValueError, "repair_lr"),
        ("unsir", {"impair_lr": -1.0}, ValueError, "impair_lr"),
        ("scrub", {"max_steps": -1}, ValueError, "max_steps"),
        ("scrub", {"alpha": -0.5}, ValueError, "alpha"),
        ("scrub", {"lr_decay_epochs": [3]}, TypeError, "lr_decay_epochs"),
        ("salun", {"threshold": 1.5}, ValueError, "threshold"),
        ("salun", {"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_options_are_named(
    name: str,
    options: dict[str, Any],
    error: type[Exception],
    field: str,
    class_split: dict[str, DataLoader],
) -> None:
    with pytest.raises(error, match=field):
        dampen.unlearn(
            make_model(),
            class_split["forget"],
            method=name,
            retain=class_split["retain"],
            **options,
        )


def test_published_defaults() -> None:
    from dampen import registry

    def defaults(name: str) -> Any:
        return registry.get(name).make_config({})

    # Rates and knobs are the papers'; budgets are optimiser steps (SPEC §4 "Fair budgets").
    assert (defaults("finetune").steps, defaults("finetune").lr) == (300, 0.02)
    assert (defaults("amnesiac").steps, defaults("amnesiac").lr) == (200, 1e-4)
    bad = defaults("bad_teacher")
    assert (bad.steps, bad.lr, bad.retain_fraction, bad.temperature) == (200, 1e-4, 0.3, 1.0)
    unsir = defaults("unsir")
    assert (unsir.impair_steps, unsir.repair_steps, unsir.impair_epochs) == (100, 100, None)
    assert defaults("scrub").temperature == 4.0
    assert defaults("salun").threshold == 0.5
    retrain = defaults("retrain")
    assert (retrain.lr, retrain.momentum, retrain.weight_decay, retrain.gamma) == (
        0.1,
        0.9,
        5e-4,
        0.2,
    )


def test_scrub_learning_rate_decays_after_the_listed_epochs() -> None:
    config = ScrubConfig(lr=1.0, lr_decay_epochs=(3,), lr_decay_rate=0.1)
    assert [config.lr_at(e) for e in (1, 3, 4, 5)] == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_progress_bars_do_not_break_anything(class_split: dict[str, DataLoader]) -> None:
    out = dampen.unlearn(
        make_model(),
        class_split["forget"],
        method="scrub",
        retain=class_split["retain"],
        progress=True,
        epochs=1,
        max_steps=1,
    )
    assert out.stats["steps"] > 0


# --------------------------------------------------------------------------- batch streams


def unsized(items: list[int]) -> Iterator[int]:
    yield from items


class Unsized:
    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[int]:
        return unsized(self.items)


@pytest.mark.parametrize("make", [list, Unsized])
def test_tagged_yields_every_batch_once_per_pass(make: Any) -> None:
    stream = Tagged([("a", make([1, 2, 3])), ("b", make([10, 20]))], torch.Generator())
    for _ in range(2):
        items = list(stream)
        assert sorted(items) == [("a", 1), ("a", 2), ("a", 3), ("b", 10), ("b", 20)]
        assert [b for t, b in items if t == "a"] == [1, 2, 3]  # order within a stream kept


def test_tagged_order_depends_on_the_generator() -> None:
    a = list(range(20))
    orders = {
        tuple(Tagged([("a", a), ("b", a)], torch.Generator().manual_seed(s))) for s in range(4)
    }
    assert len(orders) > 1


def test_subsampled_keeps_the_fraction() -> None:
    stream = Subsampled(list(range(10)), 0.3, torch.Generator().manual_seed(0))
    assert len(stream) == 3
    passes = [list(stream) for _ in range(5)]
    assert all(len(p) == 3 and p == sorted(p) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # drawn anew every pass
    assert len(list(Subsampled(Unsized(list(range(200))), 0.3, torch.Generator()))) in range(
        30, 100
    )


def test_paired_cycles_the_shorter_stream() -> None:
    assert list(Paired([1, 2, 3], ["x", "y"], other_name="forget set")) == [
        (1, "x"),
        (2, "y"),
        (3, "x"),
    ]
    with pytest.raises(ValueError, match="forget set is empty"):
        list(Paired([1], [], other_name="forget set"))


def test_neggrad_plus_differs_from_plain_ascent(class_split: dict[str, DataLoader]) -> None:
    model = make_model()
    kwargs: dict[str, Any] = {"retain": class_split["retain"], "epochs": 1}
    plain = dampen.unlearn(model, class_split["forget"], method="neggrad", plus=False, **kwargs)
    plus = dampen.unlearn(model, class_split["forget"], method="neggrad", **kwargs)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(plain.model.parameters(), plus.model.parameters(), strict=True)
    )
