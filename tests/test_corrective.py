"""Corrective scenarios: the corrupted data (``dampen.data.corrupted``), their figures
(``dampen.eval.corrective``), ``forget_kind="poison"/"label_errors"`` in ``dampen.unlearn`` and
``dampen forget --kind``. Real digits data and a briefly trained real CNN, no mocks."""

from __future__ import annotations

import copy
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import dampen
from conftest import loader as tiny_loader
from conftest import make_data, make_model
from dampen.cli.model import forget_cmd
from dampen.data import DataSplits, load_dataset
from dampen.data.base import loader
from dampen.data.corrupted import POISON_TARGET, label_errors, patch_size, poison, stamp
from dampen.data.scenarios import Scenario
from dampen.eval.corrective import attack_figures, healed_share
from dampen.functional import dampen_model_
from dampen.importances.measure import measure
from dampen.methods.auto_alpha import FORGET_KINDS
from dampen.recipe import recipe_for, train_model
from dampen.registry import get


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def as_set(indices: Tensor) -> set[int]:
    return set(indices.tolist())


def data_max(data: DataSplits) -> float:
    return float(torch.maximum(data.train.x.max(), data.test.x.max()))


def corner_mask(x: Tensor, size: int) -> Tensor:
    """True on the trigger's square (bottom-right ``size``×``size`` of every channel)."""
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., -size:, -size:] = True
    return mask


def check_partition(s: Scenario, n: int) -> None:
    """forget and retain: sorted, disjoint, together the whole training set."""
    for part in (s.forget, s.retain):
        assert part.dtype == torch.int64
        assert torch.equal(part, part.sort().values)
    assert not as_set(s.forget) & as_set(s.retain)
    assert torch.equal(torch.cat([s.forget, s.retain]).sort().values, torch.arange(n))


# --------------------------------------------------------------------------- trigger


def test_patch_size_and_stamp() -> None:
    assert [patch_size(s) for s in (8, 16, 17, 28, 32)] == [2, 2, 3, 3, 3]
    x = torch.randn(2, 3, 32, 32)
    before = x.clone()
    out = stamp(x, 7.0)
    assert torch.equal(x, before)  # a copy: the input is untouched
    mask = corner_mask(x, 3)
    assert bool((out[mask] == 7.0).all()) and int(mask.sum()) == 2 * 3 * 9
    assert torch.equal(out[~mask], x[~mask])
    small = stamp(torch.zeros(1, 1, 8, 8), 1.0)
    assert small.sum() == 4 and bool((small[0, 0, 6:, 6:] == 1).all())


# --------------------------------------------------------------------------- poison


@pytest.mark.parametrize("share", [0.05, 0.01, 0.0001])
def test_poison_stamps_and_relabels_exactly_the_poisoned_samples(
    digits: DataSplits, share: float
) -> None:
    s = poison(digits, share, identified=0.3, seed=0)
    train, old = s.data.train, digits.train
    n = len(old)
    assert s.kind == "poison" and s.target == POISON_TARGET == 0
    assert s.corrupted is not None
    poisoned = s.corrupted
    assert len(poisoned) == max(1, round(share * n))
    assert torch.equal(poisoned, poisoned.sort().values) and len(as_set(poisoned)) == len(poisoned)
    # never a sample of the target class, now all labelled with it
    assert bool((old.y[poisoned] != 0).all())
    assert bool((train.y[poisoned] == 0).all())
    # the labels change exactly on the poisoned samples
    assert as_set((train.y != old.y).nonzero().flatten()) == as_set(poisoned)
    # the trigger: the data maximum on the 2×2 bottom-right square, every other pixel as before
    value = data_max(digits)
    mask = corner_mask(old.x[poisoned], 2)
    assert bool((train.x[poisoned][mask] == value).all())
    assert torch.equal(train.x[poisoned][~mask], old.x[poisoned][~mask])
    rest = torch.ones(n, dtype=torch.bool)
    rest[poisoned] = False
    assert torch.equal(train.x[rest], old.x[rest]) and torch.equal(train.y[rest], old.y[rest])
    # the input is untouched and is the clean reference; the test split stays clean
    assert s.clean is digits
    fresh = load_dataset("digits")
    assert torch.equal(digits.train.x, fresh.train.x) and torch.equal(digits.train.y, fresh.train.y)
    assert s.data.test is digits.test
    # Df: part of the poison; forget / retain partition the training set
    assert as_set(s.forget) <= as_set(poisoned)
    check_partition(s, n)
    assert torch.equal(s.test, torch.arange(len(digits.test)))
    assert torch.equal(s.retain_test, s.test) and len(s.forget_test) == 0


def test_poison_attack_set(digits: DataSplits) -> None:
    s = poison(digits, 0.05, identified=0.1, seed=3)
    assert s.attack is not None
    others = (digits.test.y != 0).nonzero().flatten()
    assert len(s.attack) == len(others) < len(digits.test)
    assert torch.equal(s.attack.y, digits.test.y[others])  # true labels, target class left out
    assert bool((s.attack.y != 0).all())
    mask = corner_mask(s.attack.x, 2)
    assert bool((s.attack.x[mask] == data_max(digits)).all())
    assert torch.equal(s.attack.x[~mask], digits.test.x[others][~mask])
    assert s.attack.classes == digits.classes


def test_poison_other_target_by_name(digits: DataSplits) -> None:
    s = poison(digits, 0.05, identified=1.0, seed=0, target="7")
    assert s.target == 7 and s.corrupted is not None and s.attack is not None
    assert bool((digits.train.y[s.corrupted] != 7).all())
    assert bool((s.data.train.y[s.corrupted] == 7).all())
    assert bool((s.attack.y != 7).all())
    assert s.data.name != poison(digits, 0.05, identified=1.0, seed=0).data.name  # cache keys


def test_identified_parts_are_nested_and_share_one_corruption(digits: DataSplits) -> None:
    parts = {found: poison(digits, 0.05, identified=found, seed=1) for found in (0.1, 0.3, 1.0)}
    one = poison(digits, 0.05, identified_count=1, seed=1)
    first = parts[1.0]
    assert first.corrupted is not None
    size = len(first.corrupted)
    for found, s in parts.items():
        assert s.corrupted is not None
        assert torch.equal(s.corrupted, first.corrupted)
        # one corruption, so one trained model: the same data and the same data name
        assert s.data.name == first.data.name == one.data.name
        assert torch.equal(s.data.train.x, first.data.train.x)
        assert torch.equal(s.data.train.y, first.data.train.y)
        assert len(s.forget) == math.ceil(found * size)
        check_partition(s, len(digits.train))
    assert as_set(one.forget) <= as_set(parts[0.1].forget)
    assert as_set(parts[0.1].forget) < as_set(parts[0.3].forget) < as_set(parts[1.0].forget)
    assert torch.equal(parts[1.0].forget, first.corrupted)
    assert len(one.forget) == 1
    names = {s.name for s in (*parts.values(), one)}
    assert len(names) == 4  # the scenarios themselves differ
    assert one.name.endswith("/id1@1") and parts[0.3].name.endswith("/id30%@1")


def test_poison_is_deterministic_per_seed(digits: DataSplits) -> None:
    a = poison(digits, 0.05, identified=0.3, seed=0)
    b = poison(digits, 0.05, identified=0.3, seed=0)
    c = poison(digits, 0.05, identified=0.3, seed=1)
    assert a.corrupted is not None and b.corrupted is not None and c.corrupted is not None
    assert torch.equal(a.corrupted, b.corrupted) and torch.equal(a.forget, b.forget)
    assert torch.equal(a.data.train.x, b.data.train.x) and a.data.name == b.data.name
    assert not torch.equal(a.corrupted, c.corrupted)
    # the data's name is what the model cache keys on: it must follow the corruption
    other_share = poison(digits, 0.1, identified=0.3, seed=0)
    names = {a.data.name, c.data.name, other_share.data.name, digits.name}
    assert len(names) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"share": 0.0, "identified": 0.1}, ValueError, r"share must lie in \(0, 1\]"),
        ({"share": 1.5, "identified": 0.1}, ValueError, r"share must lie in \(0, 1\]"),
        ({"share": True, "identified": 0.1}, TypeError, "share must be a number"),
        ({"share": 1.0, "identified": 0.1}, ValueError, "only 1295 can be used"),
        ({"share": 0.05}, ValueError, "exactly one of identified"),
        (
            {"share": 0.05, "identified": 0.1, "identified_count": 1},
            ValueError,
            "exactly one of identified",
        ),
        ({"share": 0.05, "identified_count": 73}, ValueError, r"identified_count=73.*\[1, 72\]"),
        ({"share": 0.05, "identified_count": 0}, ValueError, "identified_count=0"),
        ({"share": 0.05, "identified": 0.0}, ValueError, r"identified must lie in \(0, 1\]"),
        ({"share": 0.05, "identified": 1.01}, ValueError, "identified must lie"),
        ({"share": 0.05, "identified": 0.1, "target": 10}, ValueError, "target"),
    ],
)
def test_poison_errors(
    digits: DataSplits, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    share = kwargs.pop("share")
    with pytest.raises(error, match=match):
        poison(digits, share, **kwargs)


def test_poison_identified_count_may_be_the_whole_poison(digits: DataSplits) -> None:
    s = poison(digits, 0.05, identified_count=72, seed=0)
    assert s.corrupted is not None and torch.equal(s.forget, s.corrupted)


# --------------------------------------------------------------------------- label errors


def test_random_label_errors(digits: DataSplits) -> None:
    s = label_errors(digits, 0.2, identified=0.3, seed=0)
    old, new = digits.train, s.data.train
    n = len(old)
    assert s.kind == "label_errors" and s.corrupted is not None
    flipped = s.corrupted
    assert len(flipped) == round(0.2 * n)
    assert as_set((new.y != old.y).nonzero().flatten()) == as_set(flipped)  # never kept
    assert torch.equal(new.x, old.x)  # only labels change
    # the new label is drawn from the other classes: every offset 1..9 occurs
    offsets = ((new.y[flipped] - old.y[flipped]) % 10).tolist()
    assert set(offsets) == set(range(1, 10))
    assert as_set(s.forget) <= as_set(flipped)
    assert len(s.forget) == math.ceil(0.3 * len(flipped))
    check_partition(s, n)
    assert torch.equal(s.forget_test, torch.arange(len(digits.test)))
    assert s.attack is None and s.target is None and s.clean is digits


def test_interclass_confusion(digits: DataSplits) -> None:
    s = label_errors(digits, 0.2, identified=1.0, seed=2, confuse=("3", "5"))
    old, new = digits.train, s.data.train
    assert s.corrupted is not None
    pool = ((old.y == 3) | (old.y == 5)).nonzero().flatten()
    assert len(s.corrupted) == round(0.2 * len(pool))
    assert as_set(s.corrupted) <= as_set(pool)
    assert as_set((new.y != old.y).nonzero().flatten()) == as_set(s.corrupted)
    was = old.y[s.corrupted]
    assert torch.equal(new.y[s.corrupted], torch.where(was == 3, 5, 3))
    # both directions occur
    assert {3, 5} == set(was.tolist())
    assert torch.equal(s.forget, s.corrupted)
    expected_test = ((digits.test.y == 3) | (digits.test.y == 5)).nonzero().flatten()
    assert torch.equal(s.forget_test, expected_test)
    same = label_errors(digits, 0.2, identified=1.0, seed=2, confuse=(3, 5))
    assert same.corrupted is not None and torch.equal(same.corrupted, s.corrupted)
    assert same.data.name == s.data.name
    # names follow the corruption (cache keys)
    names = {
        s.data.name,
        label_errors(digits, 0.2, identified=1.0, seed=3, confuse=(3, 5)).data.name,
        label_errors(digits, 0.1, identified=1.0, seed=2, confuse=(3, 5)).data.name,
        label_errors(digits, 0.2, identified=1.0, seed=2, confuse=(3, 8)).data.name,
        label_errors(digits, 0.2, identified=1.0, seed=2).data.name,
        digits.name,
    }
    assert len(names) == 6


@pytest.mark.parametrize(
    ("confuse", "match"),
    [
        (("3", "3"), "two different classes"),
        ((3, "3"), "two different classes"),
        (("3",), "two classes"),
        (("3", "5", "8"), "two classes"),
        ("35", "two classes"),
        (("3", "x"), "confuse='x'"),
    ],
)
def test_label_error_errors(digits: DataSplits, confuse: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        label_errors(digits, 0.1, identified=0.1, confuse=confuse)


def test_label_errors_share_and_identified_errors(digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="share"):
        label_errors(digits, 0.0, identified=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        label_errors(digits, 0.1)
    pool = int(((digits.train.y == 3) | (digits.train.y == 5)).sum())
    with pytest.raises(ValueError, match="identified_count"):
        label_errors(digits, 0.1, identified_count=round(0.1 * pool) + 1, confuse=(3, 5))


def test_scenario_checks_corrupted() -> None:
    idx = torch.arange(3)
    base: dict[str, Any] = {
        "name": "x",
        "kind": "poison",
        "data": None,
        "forget": idx,
        "retain": idx,
        "test": idx,
        "retain_test": idx,
        "forget_test": idx,
        "label_map": (0,),
    }
    with pytest.raises(TypeError, match="corrupted"):
        Scenario(**base, corrupted=torch.tensor([1.0]))
    with pytest.raises(TypeError, match="corrupted"):
        Scenario(**base, corrupted=torch.zeros(2, 2, dtype=torch.int64))
    assert Scenario(**base).corrupted is None


# --------------------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def poisoned_model(digits: DataSplits) -> tuple[Scenario, nn.Module, dampen.Importance]:
    """The small CNN trained 4 epochs (no crops, so the corner trigger stays put) on digits
    with 5 % poison, and the importance of its training data."""
    s = poison(digits, 0.05, identified=0.3, seed=0)
    model = train_model(recipe_for("digits", epochs=4, crop_padding=0), s.data, seed=0).eval()
    imp = dampen.importance(model, loader(s.data.train, batch_size=64))
    return s, model, imp


def per_sample_figures(model: nn.Module, x: Tensor, y: Tensor, target: int) -> tuple[float, float]:
    """Oracle: one image at a time."""
    model.eval()
    right = hits = 0
    with torch.no_grad():
        for i in range(len(y)):
            predicted = int(model(x[i : i + 1]).argmax(dim=1))
            right += predicted == int(y[i])
            hits += predicted == target
    return right / len(y), hits / len(y)


def test_attack_figures_match_a_per_sample_loop(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance], digits: DataSplits
) -> None:
    s, model, _ = poisoned_model
    assert s.attack is not None
    model.train()  # attack_figures measures in eval mode and leaves the flag as it was
    got = attack_figures(model, loader(s.attack, batch_size=37), 0)
    assert model.training
    healed, success = per_sample_figures(model, s.attack.x, s.attack.y, 0)
    assert got["healed_acc"] == pytest.approx(healed, abs=1e-12)
    assert got["attack_success"] == pytest.approx(success, abs=1e-12)
    assert got["attack_success"] > 0.5  # the backdoor was learnt
    # the same model on the clean test images of the other classes: the trigger did it
    others = digits.test.y != 0
    clean_healed, clean_success = per_sample_figures(
        model, digits.test.x[others], digits.test.y[others], 0
    )
    assert clean_healed > got["healed_acc"] and clean_success < got["attack_success"]
    # an untrained model of the same architecture, also against the oracle
    fresh = dampen.models.build_model("cnn", num_classes=10, in_channels=1, image_size=8).eval()
    got = attack_figures(fresh, loader(s.attack, batch_size=64), 0)
    healed, success = per_sample_figures(fresh, s.attack.x, s.attack.y, 0)
    assert (got["healed_acc"], got["attack_success"]) == pytest.approx((healed, success))


def test_attack_figures_refuse_target_labels_and_nothing(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance], digits: DataSplits
) -> None:
    _, model, _ = poisoned_model
    with pytest.raises(ValueError, match="other than the target 0"):
        attack_figures(model, loader(digits.test, batch_size=64), 0)
    with pytest.raises(ValueError, match="no images"):
        attack_figures(model, [], 0)


def test_healed_share() -> None:
    assert healed_share(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert healed_share(0.5, 0.5, 0.9) == 0.0
    assert healed_share(0.9, 0.5, 0.9) == 1.0
    assert healed_share(0.3, 0.5, 0.9) == pytest.approx(-0.5)  # worse than the poisoned model
    assert healed_share(1.0, 0.5, 0.9) == pytest.approx(1.25)
    assert healed_share(0.8, 0.5, 0.5) is None  # no damage to undo
    assert healed_share(0.8, 0.6, 0.5) is None


# --------------------------------------------------------------------------- unlearn


def accuracy_on(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def test_ssd_forget_kind_poison(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    s, model, imp = poisoned_model
    assert s.attack is not None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forget = loader(s.data.train, s.forget, batch_size=64)
    heldout = loader(s.data.test, torch.arange(100), batch_size=64)
    result = dampen.unlearn(  # the identified samples alone (copies, pasted: their own tests)
        model,
        forget,
        method="ssd",
        importance=imp,
        heldout=heldout,
        forget_kind="poison",
        erased_copies=0,
        pasted_trigger=False,
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    report = result.stats["auto"]
    assert report["kind"] == "poison"
    assert report["original_forget_acc"] == 1.0  # Df with the labels it was trained with
    assert report["target_forget_acc"] == pytest.approx(0.01)  # the default tolerance
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    forget_acc = accuracy_on(result.model, x, y)
    assert forget_acc == pytest.approx(report["forget_acc"])
    if forget_acc <= 0.01:
        assert report["reason"].startswith("target reached"), report
    else:
        assert "not reached" in report["reason"] or "held-out" in report["reason"], report
    assert result.stats["selected"] > 0
    # what the identified part shares with the rest of the poison went with it
    triggered = loader(s.attack, batch_size=512)
    assert (
        attack_figures(result.model, triggered, 0)["attack_success"]
        < attack_figures(model, triggered, 0)["attack_success"]
    )

    # "label_errors" takes the candidate with the least held-out loss instead
    # (tests/test_label_errors_auto.py); "auto" reads Df as samples (another target)
    other = dampen.unlearn(
        model, forget, method="ssd", importance=imp, heldout=heldout, forget_kind="label_errors"
    )
    found = other.stats["auto"]
    assert found["search"] == "the least held-out loss" and found["recentred_classes"] == [0]
    hx = torch.cat([b[0] for b in heldout])
    hy = torch.cat([b[1] for b in heldout])
    with torch.no_grad():  # the loss reported is the applied model's, offsets included
        loss = float(torch.nn.functional.cross_entropy(other.model(hx), hy))
    assert loss == pytest.approx(found["heldout_loss"], rel=1e-5)
    auto = dampen.unlearn(model, forget, method="ssd", importance=imp, heldout=heldout)
    assert auto.stats["auto"]["kind"] == "samples"
    assert auto.stats["auto"]["target_forget_acc"] > 0.5
    # Without heldout=, "label_errors" does no harm: nothing tells healing from erasing.
    with pytest.warns(UserWarning, match='forget_kind="label_errors" needs heldout='):
        blind = dampen.unlearn(
            model, forget, method="ssd", importance=imp, forget_kind="label_errors"
        )
    assert blind.stats["selected"] == 0 and blind.stats["auto"]["rounds"] == []
    assert "nothing dampened" in blind.stats["auto"]["reason"]
    assert all(torch.equal(v, before[k]) for k, v in blind.model.state_dict().items())
    poison_blind = dampen.unlearn(model, forget, method="ssd", importance=imp, forget_kind="poison")
    assert poison_blind.stats["selected"] > 0  # the backdoor's kind still acts without it


def test_forget_kind_values(poisoned_model: tuple[Scenario, nn.Module, dampen.Importance]) -> None:
    assert FORGET_KINDS == ("auto", "class", "samples", "poison", "label_errors")
    for method in ("ssd", "lfssd"):
        for kind in FORGET_KINDS:
            assert get(method).make_config({"forget_kind": kind}).forget_kind == kind
    s, model, imp = poisoned_model
    forget = loader(s.data.train, s.forget, batch_size=64)
    message = r"forget_kind must be one of 'auto', 'class', 'samples', 'poison', 'label_errors'"
    with pytest.raises(ValueError, match=message + "; got 'backdoor'"):
        dampen.unlearn(model, forget, method="ssd", importance=imp, forget_kind="backdoor")
    with pytest.raises(ValueError, match=message):
        get("lfssd").make_config({"forget_kind": "poisoned"})


# --------------------------------------------------------------------------- CLI


USER_MODULE = textwrap.dedent(
    """
    from conftest import loader, make_data, make_model

    def factory():
        return make_model(seed=1)

    def forget_batches():
        x, y = make_data(24)
        return loader(x[:5], y[:5], 8)

    def all_batches():
        return loader(*make_data(24), 8)

    def uneven_batches():  # images of two sizes: the winners cannot be regrouped
        import torch.nn.functional as F

        x, y = make_data(24)
        return [(x[:12], y[:12]), (F.pad(x[12:], (1, 1, 1, 1)), y[12:])]

    def scrambled_heldout():  # labels the model never predicts: the lowest sample target
        x, _ = make_data(30, seed=5)
        return loader(x, (factory().eval()(x).argmax(dim=1) + 1) % 3, 8)
    """
)


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "corrective_user.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = make_model(seed=1)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors"
    )
    dampen.importance(model, tiny_loader(*make_data(24), 8)).save(tmp_path / "i.safetensors")
    return tmp_path


def _forget(user: Path, *extra: str) -> Any:
    args = [
        "--model",
        "corrective_user:factory",
        "--weights",
        str(user / "w.safetensors"),
        "--importance",
        str(user / "i.safetensors"),
        "--forget",
        "corrective_user:forget_batches",
        "--out",
        str(user / "out.safetensors"),
        "--no-progress",
        *extra,
    ]
    return CliRunner().invoke(forget_cmd, args, catch_exceptions=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "poison", "-o", "forget_kind=class"], "--kind poison and -o forget_kind=class"),
        (["--kind", "poison", "-o", "alpha=10"], "alpha=10"),
        (["--kind", "label_errors", "--method", "assd"], "--method assd"),
        (["--kind", "class", "--method", "alf"], "--method alf"),
        (["--kind", "samples", "--method", "finetune"], "--method finetune"),
        (["--kind", "backdoor"], "Invalid value for '--kind'"),
    ],
)
def test_forget_kind_flag_errors(user: Path, extra: list[str], message: str) -> None:
    r = _forget(user, *extra)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert not (user / "out.safetensors").exists()


def test_forget_kind_flag_sets_the_target(user: Path) -> None:
    model = make_model(seed=1)
    x, y = make_data(24)
    imp = dampen.importance(model, tiny_loader(x, y, 8))
    want = dampen.unlearn(model, tiny_loader(x[:5], y[:5], 8), importance=imp, forget_kind="poison")
    assert want.stats["auto"]["kind"] == "poison"
    with pytest.warns(UserWarning, match="left the model unchanged"):
        plain = dampen.unlearn(model, tiny_loader(x[:5], y[:5], 8), importance=imp)
    assert plain.stats["auto"]["kind"] == "samples"  # no heldout=: nothing dampened
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    assert plain.stats["auto"]["reason"] != want.stats["auto"]["reason"]
    r = _forget(user)  # without --kind: the default target
    assert r.exit_code == 0, r.output
    assert "sample forgetting without --heldout: nothing" in r.output  # in the CLI's words
    got = load_file(str(user / "out.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in plain.model.state_dict().items())
    for extra in (
        ["--kind", "poison"],
        ["--kind", "poison", "-o", "forget_kind=poison", "-o", "alpha=auto"],
        ["--kind", "poison", "--method", "ssd"],
    ):
        (user / "out.safetensors").unlink(missing_ok=True)
        r = _forget(user, *extra)
        assert r.exit_code == 0, r.output
        got = load_file(str(user / "out.safetensors"))
        for k, v in want.model.state_dict().items():
            assert torch.equal(got[k], v), (extra, k)
        assert f"alpha=auto (poison): {want.stats['auto']['reason']}" in r.output
        assert f"{want.stats['auto']['winning']} of 5 identified samples" in r.output


def test_cli_names_the_winners_that_rank_a_sample_request(user: Path) -> None:
    from corrective_user import all_batches, scrambled_heldout

    model = make_model(seed=1)
    imp = dampen.importance(model, tiny_loader(*make_data(24), 8))
    want = dampen.unlearn(
        model, all_batches(), importance=imp, heldout=scrambled_heldout(), forget_kind="samples"
    )
    auto = want.stats["auto"]
    assert 0 < auto["winning"] < auto["forget_samples"] == 24 and auto["rounds"]
    heldout = ("--heldout", "corrective_user:scrambled_heldout")
    r = _forget(user, "--kind", "samples", *heldout, "--forget", "corrective_user:all_batches")
    assert r.exit_code == 0, r.output
    assert f"ranked by the {auto['winning']} of 24 forget samples predicted right" in r.output
    got = load_file(str(user / "out.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in want.model.state_dict().items())


def test_cli_says_when_a_sample_request_ranks_by_all_of_the_forget_set(user: Path) -> None:
    from corrective_user import scrambled_heldout, uneven_batches

    model = make_model(seed=1)
    imp = dampen.importance(model, tiny_loader(*make_data(24), 8))
    want = dampen.unlearn(
        model, uneven_batches(), importance=imp, heldout=scrambled_heldout(), forget_kind="samples"
    )
    assert want.stats["auto"]["winning"] is None and want.stats["auto"]["forget_samples"] == 24
    heldout = ("--heldout", "corrective_user:scrambled_heldout")
    r = _forget(user, "--kind", "samples", *heldout, "--forget", "corrective_user:uneven_batches")
    assert r.exit_code == 0, r.output
    assert "ranked by all of the forget set (its batches could not be regrouped" in r.output
    got = load_file(str(user / "out.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in want.model.state_dict().items())


# --------------------------------------------------------------------------- winning samples


def with_losers(s: Scenario, count: int) -> tuple[Tensor, Tensor]:
    """Df with its trained labels, plus ``count`` clean samples of other classes labelled 0:
    those lose their label on the poisoned model."""
    clean = torch.nonzero(s.data.train.y != 0).flatten()[:count]
    x = torch.cat([s.data.train.x[s.forget], s.data.train.x[clean]])
    y = torch.cat([s.data.train.y[s.forget], torch.zeros(len(clean), dtype=torch.int64)])
    return x, y


def test_winning_samples_match_a_loop_and_ignore_later_weights(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.winning import WinningSamples

    s, model, _ = poisoned_model
    x, y = with_losers(s, 20)
    batches = [(x[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    winners = WinningSamples(model, batches, None, size=5)
    expected = [i for i in range(len(y)) if int(model(x[i : i + 1]).argmax()) == int(y[i])]
    assert winners.total == len(y) and winners.count == len(expected)
    assert 0 < winners.count < len(y)
    got = list(winners)
    assert [len(b[1]) for b in got[:-1]] == [5] * (len(got) - 1) and len(winners) == len(got)
    assert torch.equal(torch.cat([b[0] for b in got]), x[expected])
    with torch.no_grad():  # the selection was made once: changing the model changes nothing
        copy = {k: v.clone() for k, v in model.state_dict().items()}
        next(model.parameters()).mul_(0.0)
        again = list(winners)
        model.load_state_dict(copy)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again, strict=True))


def test_poison_kind_uses_the_winning_samples_and_returns_all_of_df(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    s, model, imp = poisoned_model
    x, y = with_losers(s, 10)
    forget = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]
    result = dampen.unlearn(model, forget, method="ssd", importance=imp, forget_kind="poison")
    report = result.stats["auto"]
    wins = accuracy_on(model, x, y)
    assert report["identified"] == len(y)
    assert report["winning"] == round(wins * len(y)) < len(y)
    assert report["original_forget_acc"] == 1.0  # measured on the winning samples only
    # the forget importance handed back covers all of Df (to take it out of the stored one)
    assert result.forget_importance is not None
    assert result.forget_importance.samples == len(y)


def test_poison_kind_without_a_winning_sample_changes_nothing(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    s, model, imp = poisoned_model
    clean = torch.nonzero(s.data.train.y == 3).flatten()[:12]  # labelled 0: never wins
    x, y = s.data.train.x[clean], torch.zeros(len(clean), dtype=torch.int64)
    assert accuracy_on(model, x, y) == 0.0
    result = dampen.unlearn(model, [(x, y)], method="ssd", importance=imp, forget_kind="poison")
    assert result.stats["selected"] == 0 and result.stats["alpha"] == math.inf
    assert "already lose" in result.stats["auto"]["reason"]
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_poison_kind_without_heldout_stays_within_the_blind_share(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.auto_alpha import BLIND_CORRECTIVE_REMOVED, BLIND_CORRECTIVE_SHARE

    s, model, imp = poisoned_model
    forget = loader(s.data.train, s.forget, batch_size=64)
    blind = dampen.unlearn(model, forget, method="ssd", importance=imp, forget_kind="poison")
    assert blind.stats["selected_fraction"] <= BLIND_CORRECTIVE_SHARE
    # ... and within the data-free guard, measured here from the weights themselves.
    report = blind.stats["auto"]
    assert report["max_importance_removed"] == BLIND_CORRECTIVE_REMOVED
    origin = dict(model.named_parameters())
    removed = sum(
        float((imp[n] * (p.detach() - origin[n].detach()) ** 2).sum())
        for n, p in blind.model.named_parameters()
    ) / sum(float((imp[n] * p.detach() ** 2).sum()) for n, p in model.named_parameters())
    assert removed == pytest.approx(report["importance_removed"], rel=1e-4)
    assert 0 < removed <= BLIND_CORRECTIVE_REMOVED
    lower = dampen.unlearn(
        model,
        forget,
        method="ssd",
        importance=imp,
        forget_kind="poison",
        max_importance_removed=removed / 2,  # a smaller share of the caller's stays
    ).stats["auto"]
    assert lower["max_importance_removed"] == removed / 2
    assert lower["importance_removed"] <= removed / 2
    held = dampen.unlearn(
        model,
        forget,
        method="ssd",
        importance=imp,
        forget_kind="poison",
        heldout=loader(s.data.test, torch.arange(100), batch_size=64),
    )
    assert len(held.stats["auto"]["rounds"]) <= 1  # corrective requests take one round


def test_winning_samples_refuse_entries_they_cannot_filter(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.winning import WinningSamples

    s, model, _ = poisoned_model
    x, y = s.data.train.x[s.forget][:4], s.data.train.y[s.forget][:4]

    def forward(m: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return m(batch["image"]), batch["target"]

    texts = {"image": x, "target": y, "text": ["a", "b", "c", "d"]}
    with pytest.raises(TypeError, match="every entry of a forget batch must be a tensor"):
        WinningSamples(model, [texts], forward, size=2)
    weights = {"image": x, "target": y, "weights": torch.ones(3)}
    with pytest.raises(TypeError, match=r"of shape \(3,\)"):
        WinningSamples(model, [weights], forward, size=2)
    fine = WinningSamples(model, [{"image": x, "target": y}], forward, size=3)
    expected = int((model(x).argmax(dim=1) == y).sum())
    assert fine.count == expected and sum(len(b["target"]) for b in fine) == expected
    with pytest.raises(ValueError, match="forget set: .*label"):
        WinningSamples(model, [(x, torch.full((4,), 12))], None, size=2)


def test_corrective_kinds_refuse_unlabelled_or_out_of_range_forget_sets(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    s, model, _ = poisoned_model
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    lf = dampen.importance(model, loader(s.data.train, batch_size=64), estimator="lf")
    with pytest.raises(ValueError, match="needs the forget batches with the labels"):
        dampen.unlearn(model, [(x,)], method="lfssd", importance=lf, forget_kind="poison")
    with pytest.raises(ValueError, match="label"):
        dampen.unlearn(
            model,
            [(x, torch.full_like(y, 12))],
            method="lfssd",
            importance=lf,
            forget_kind="poison",
        )


def test_blind_cap_is_reported(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.auto_alpha import BLIND_CORRECTIVE_SHARE

    s, model, imp = poisoned_model
    forget = loader(s.data.train, s.forget, batch_size=64)
    report = dampen.unlearn(
        model, forget, method="ssd", importance=imp, forget_kind="poison"
    ).stats["auto"]
    assert report["max_selected"] == BLIND_CORRECTIVE_SHARE
    if "not reached" in report["reason"]:
        assert "the cap of corrective requests without heldout=" in report["reason"]
    small = dampen.unlearn(
        model, forget, method="ssd", importance=imp, forget_kind="poison", max_selected=0.005
    ).stats["auto"]
    assert small["max_selected"] == 0.005  # a smaller cap of the caller's stays


def test_winning_only_false_dampens_for_all_of_df(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    s, model, imp = poisoned_model
    x, y = with_losers(s, 10)
    forget = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]
    every = dampen.unlearn(
        model,
        forget,
        method="ssd",
        importance=imp,
        forget_kind="poison",
        winning_only=False,
        erased_copies=0,
    )
    assert "winning" not in every.stats["auto"]
    assert every.stats["auto"]["original_forget_acc"] == pytest.approx(accuracy_on(model, x, y))
    assert every.stats["auto"]["objective"] == "log_odds"
    # The recorded α on the log-odds importance of all of Df (losers included) gives its weights.
    same = copy.deepcopy(model)
    imp_f = measure(
        model, forget, estimator=imp.estimator, objective="log_odds", batch_size=imp.batch_size
    )
    dampen_model_(same, imp, imp_f, alpha=every.stats["alpha"])
    for k, v in every.model.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    with pytest.raises(TypeError, match="winning_only must be a bool"):
        dampen.unlearn(model, forget, method="ssd", importance=imp, winning_only=1)


def test_erase_rectangles_change_one_rectangle_of_each_copy_to_its_minimum() -> None:
    from dampen.methods.erased import erase_rectangles

    h = w = 12
    x = torch.rand(3, 2, h, w) + 1.0  # distinct values: a changed pixel shows
    copies = erase_rectangles(x, 5)
    assert copies.shape == (15, 2, h, w)
    # each sample's copies follow from its values alone, wherever it stands
    moved = erase_rectangles(x[[2, 0, 1]], 5)
    assert torch.equal(moved[5:10], copies[:5]) and torch.equal(moved[:5], copies[10:])
    for i in range(15):
        source = x[i // 5]  # copies of a sample sit next to each other
        changed = (copies[i] != source).any(dim=0)
        rows = changed.any(dim=1).nonzero().flatten()
        cols = changed.any(dim=0).nonzero().flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        box = copies[i][:, top : bottom + 1, left : right + 1]
        assert torch.all(box == source.min())  # every channel of the rectangle
        outside = torch.ones(h, w, dtype=torch.bool)
        outside[top : bottom + 1, left : right + 1] = False
        assert not changed[outside].any()
        for side, full in ((bottom - top + 1, h), (right - left + 1, w)):
            # the image's minimum inside the box may leave one row or column unchanged
            assert full // 4 - 1 <= side <= full * 3 // 4
    assert not torch.equal(copies[0], copies[1])


def test_with_erased_copies_counts_and_leaves_other_batches_alone() -> None:
    from dampen.methods.erased import ERASED_TOTAL, with_erased_copies

    x, y = torch.rand(22, 1, 8, 8), torch.arange(22) % 10
    batches, added = with_erased_copies([(x[:16], y[:16]), (x[16:], y[16:])], 32, 64)
    per_sample = ERASED_TOTAL // 22
    assert added == 22 * per_sample < ERASED_TOTAL
    assert sum(len(b[1]) for b in batches[2:]) == added and len(batches[2][1]) == 64
    labels = torch.cat([b[1] for b in batches[2:]])
    assert torch.equal(labels, y.repeat_interleave(per_sample))
    _, one = with_erased_copies([(x[:1], y[:1])], 32, 64)
    assert one == 32
    _, many = with_erased_copies([(torch.rand(600, 1, 8, 8), torch.zeros(600).long())], 32, 64)
    assert many == 600  # one each
    for other in (
        [(x.flatten(1), y)],  # not images
        [(x[:, :, :3, :3], y)],  # too small for a rectangle
        [{"x": x, "labels": y}],
        [(x, y, y)],
        [(x, y), (x.flatten(1), y)],  # one batch that is not a pair of images
    ):
        assert with_erased_copies(other, 32, 64) == (other, 0)
    assert with_erased_copies([(x, y)], 0, 64)[1] == 0


def test_poison_kind_adds_the_erased_copies_its_label_still_wins_on(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.erased import ERASED_TOLERANCE, erase_rectangles

    s, model, imp = poisoned_model
    assert s.attack is not None
    forget = loader(s.data.train, s.forget, batch_size=64)
    heldout = loader(s.data.test, torch.arange(100), batch_size=64)
    # copies only (re-centring has its own tests, tests/test_recentre.py)
    options: dict[str, Any] = {
        "forget_kind": "poison",
        "pasted_trigger": False,
        "recentre_target": False,
    }
    result = dampen.unlearn(model, forget, importance=imp, heldout=heldout, **options)
    report = result.stats["auto"]
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    assert accuracy_on(model, x, y) == 1.0  # every identified sample wins here
    per_sample = min(32, 512 // len(y))
    copies = erase_rectangles(x, per_sample)
    labels = y.repeat_interleave(per_sample)
    won = [
        bool(model(copies[i : i + 1]).argmax(dim=1) == labels[i]) for i in range(len(labels))
    ]  # oracle: one copy at a time
    assert report["erased_copies"] == 32 and report["erased_added"] == len(labels)
    assert report["erased_winning"] == sum(won) > 0
    assert report["target_forget_acc"] == pytest.approx(ERASED_TOLERANCE)
    kept = torch.tensor(won)
    joined_x, joined_y = torch.cat([x, copies[kept]]), torch.cat([y, labels[kept]])
    assert report["forget_acc"] == pytest.approx(accuracy_on(result.model, joined_x, joined_y))
    assert "erased_fallback" not in report
    # ... and they take more of the backdoor out than the identified samples alone.
    alone = dampen.unlearn(
        model, forget, importance=imp, heldout=heldout, **options, erased_copies=0
    )
    assert "erased_added" not in alone.stats["auto"]
    triggered = loader(s.attack, batch_size=512)
    assert (
        attack_figures(result.model, triggered, 0)["attack_success"]
        < attack_figures(alone.model, triggered, 0)["attack_success"]
    )
    with pytest.raises(ValueError, match="erased_copies must be an integer >= 0"):
        dampen.unlearn(model, forget, importance=imp, forget_kind="poison", erased_copies=-1)
    # The loader's order changes nothing (the stored importance is shuffled_sq's), and the
    # request replays exactly from its stats, also from the reordered loader.
    assert imp.estimator == "shuffled_sq"
    order = torch.randperm(len(s.forget), generator=torch.Generator().manual_seed(3))
    shuffled = loader(s.data.train, s.forget[order], batch_size=64)
    other = dampen.unlearn(model, shuffled, importance=imp, heldout=heldout, **options)
    assert other.stats["auto"]["erased_winning"] == report["erased_winning"]
    assert other.stats["auto"]["forget_acc"] == report["forget_acc"]
    for k, v in other.model.state_dict().items():
        torch.testing.assert_close(v, result.model.state_dict()[k], rtol=1e-4, atol=1e-6)
    stats = json.loads(json.dumps(result.stats))
    again = dampen.replay(model, shuffled, importance=imp, stats=stats)
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, result.model.state_dict()[k], rtol=1e-4, atol=1e-6)
    stats["auto"]["erased_winning"] += 1  # stats that do not fit the copies made now
    with pytest.raises(ValueError, match="the erased copies differ from the request's"):
        dampen.replay(model, forget, importance=imp, stats=stats)


def test_poison_kind_falls_back_to_the_identified_samples_when_copies_change_nothing(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    # On digits (5 % poison: the trigger weighs in D's importance too) no dampening within the
    # blind guards takes the label off the copies.
    s, model, imp = poisoned_model
    forget = loader(s.data.train, s.forget, batch_size=64)
    blind = dampen.unlearn(model, forget, importance=imp, forget_kind="poison")
    alone = dampen.unlearn(model, forget, importance=imp, forget_kind="poison", erased_copies=0)
    report = blind.stats["auto"]
    assert report["erased_winning"] > 0 and report["erased_fallback"] is True
    assert blind.stats["selected"] == alone.stats["selected"] > 0
    assert report["target_forget_acc"] == pytest.approx(0.01)
    assert "not reached" in report["erased_reason"]  # why the copies were set aside
    for k, v in blind.model.state_dict().items():
        assert torch.equal(v, alone.model.state_dict()[k]), k
    again = dampen.replay(model, forget, importance=imp, stats=json.loads(json.dumps(blind.stats)))
    for k, v in again.state_dict().items():
        assert torch.equal(v, blind.model.state_dict()[k]), k


# --------------------------------------------------------------------------- pasted trigger


def test_window_side() -> None:
    from dampen.methods.pasted import window_side

    assert [window_side(s, s) for s in (4, 8, 14, 28, 32)] == [2, 2, 2, 4, 5]
    assert window_side(28, 8) == 2


def test_locate_trigger_matches_a_loop_over_windows_and_images(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.pasted import locate_trigger

    s, model, _ = poisoned_model
    x, y = s.data.train.x[s.forget][:6], s.data.train.y[s.forget][:6]

    def margin(image: Tensor, label: int) -> float:
        with torch.no_grad():
            z = model(image[None])[0]
        others = [float(z[c]) for c in range(len(z)) if c != label]
        return float(z[label]) - max(others)

    best: tuple[int, int, int, float] | None = None
    for top in range(0, 8 - 2 + 1):  # side 2 on 8×8 images, step 1
        for left in range(0, 8 - 2 + 1):
            drops = []
            for i in range(len(y)):
                occluded = x[i].clone()
                occluded[:, top : top + 2, left : left + 2] = x[i].min()
                drops.append(max(0.0, margin(x[i], int(y[i])) - margin(occluded, int(y[i]))))
            score = sum(drops) / len(drops)
            if best is None or score > best[3] + 1e-6:
                best = (top, left, 2, score)
    assert best is not None
    found = locate_trigger(model.eval(), x, y)
    assert found[:3] == best[:3]
    assert found[3] == pytest.approx(best[3], rel=1e-5)
    # the trigger is the 2×2 square in the bottom-right corner
    assert found[:3] == (6, 6, 2)


@pytest.mark.parametrize(("size", "trigger"), [(32, 3), (32, 1), (28, 3)])
def test_locate_trigger_reaches_the_far_corner(size: int, trigger: int) -> None:
    """A model that answers the poison label exactly when the bottom-right corner is bright:
    the window flush with both far edges must be tried, whatever the image size."""
    from dampen.methods.pasted import locate_trigger, window_side

    class CornerModel(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            corner = x[:, 0, -trigger:, -trigger:].mean(dim=(1, 2))
            return torch.stack([10 * corner, torch.zeros_like(corner)], dim=1)

    x = torch.zeros(3, 1, size, size)
    x[:, :, -trigger:, -trigger:] = 1.0
    top, left, side, score = locate_trigger(CornerModel(), x, torch.zeros(3, dtype=torch.long))
    assert side == window_side(size, size) and score > 0
    assert (top, left) == (size - side, size - side)  # covers the whole trigger


def test_pasted_batches_skip_soft_labels_and_images_without_a_trigger() -> None:
    from dampen.methods.pasted import pasted_batches

    class Blind(nn.Module):  # the same answer whatever the image
        def forward(self, x: Tensor) -> Tensor:
            return torch.tensor([[1.0, 0.0]]).repeat(len(x), 1)

    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    held = [(torch.rand(5, 1, 8, 8), torch.ones(5, dtype=torch.long))]
    batches, info = pasted_batches(Blind(), [(x, y)], held, 64)
    assert batches == [] and info["pasted_added"] == 0 and info["trigger_score"] == 0.0
    soft = [(torch.rand(5, 1, 8, 8), torch.full((5, 2), 0.5))]
    assert pasted_batches(Blind(), [(x, y)], soft, 64) == ([], {"pasted_added": 0})


def test_paste_trigger_matches_a_loop() -> None:
    from dampen.methods.erased import sample_seed
    from dampen.methods.pasted import paste_trigger

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 1, 8, 8, generator=g), torch.tensor([0, 0, 1])
    held_x, held_y = torch.rand(7, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 1, 0, 2])
    px, py = paste_trigger(held_x, held_y, x, y, (5, 4, 3))
    sources = sorted(range(3), key=lambda i: sample_seed(x[i]))
    targets = sorted(range(7), key=lambda i: sample_seed(held_x[i]))
    expected = []
    for k, i in enumerate(targets):
        j = sources[k % 3]
        if int(held_y[i]) != int(y[j]):
            image = held_x[i].clone()
            for r in range(5, 8):
                for c in range(4, 7):
                    image[0, r, c] = x[j, 0, r, c]
            expected.append((image, int(y[j])))
    assert len(px) == len(expected) > 0
    for (image, label), got, got_label in zip(expected, px, py, strict=True):
        assert torch.equal(image, got) and label == int(got_label)
    # the order of either set changes nothing (as a set of pasted images)
    qx, _ = paste_trigger(held_x.flip(0), held_y.flip(0), x.flip(0), y.flip(0), (5, 4, 3))
    assert sorted(map(sample_seed, qx)) == sorted(map(sample_seed, px))


def test_pasted_batches_leave_other_batches_alone() -> None:
    from dampen.methods.pasted import pasted_batches

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    for ids, held in (
        ([(x, y)], [{"x": x, "labels": y}]),
        ([(x.flatten(1), y)], [(x, y)]),
        ([(x, y)], [(torch.rand(4, 1, 6, 6), y)]),  # another image shape
        ([(x, y)], []),
    ):
        assert pasted_batches(model, ids, held, 64) == ([], {"pasted_added": 0})


def test_poison_kind_with_heldout_pastes_the_located_trigger(
    poisoned_model: tuple[Scenario, nn.Module, dampen.Importance],
) -> None:
    from dampen.methods.erased import erase_rectangles
    from dampen.methods.pasted import LOCATE_SAMPLES, checksum_order, locate_trigger
    from dampen.methods.pasted import paste_trigger as paste

    s, model, imp = poisoned_model
    forget = loader(s.data.train, s.forget, batch_size=64)
    heldout = loader(s.data.test, torch.arange(100), batch_size=64)
    result = dampen.unlearn(model, forget, importance=imp, heldout=heldout, forget_kind="poison")
    report = result.stats["auto"]
    x, y = s.data.train.x[s.forget], s.data.train.y[s.forget]
    held_x, held_y = s.data.test.x[:100], s.data.test.y[:100]
    some = checksum_order(x)[:LOCATE_SAMPLES]
    window = locate_trigger(model, x[some], y[some])
    assert report["trigger_window"] == [*window[:3]] == [6, 6, 2]
    px, py = paste(held_x, held_y, x, y, window[:3])
    won = [bool(model(px[i : i + 1]).argmax(1) == py[i]) for i in range(len(py))]  # oracle
    assert report["pasted_added"] == len(py) == int((held_y != 0).sum())
    assert report["pasted_winning"] == sum(won) > 0
    assert report["importance_allowance"] == pytest.approx(0.002)
    # the forget accuracy is measured on the identified samples, the winning copies and the
    # winning pasted images
    each = min(32, 512 // len(y))
    copies, labels = erase_rectangles(x, each), y.repeat_interleave(each)
    kept = torch.tensor(
        [bool(model(copies[i : i + 1]).argmax(1) == labels[i]) for i in range(len(labels))]
    )
    joined_x = torch.cat([x, copies[kept], px[torch.tensor(won)]])
    joined_y = torch.cat([y, labels[kept], py[torch.tensor(won)]])
    assert report["forget_acc"] == pytest.approx(accuracy_on(result.model, joined_x, joined_y))
    # the loaders' order changes nothing; the request replays exactly with the same heldout=
    order = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    reordered = loader(s.data.test, order, batch_size=32)
    other = dampen.unlearn(model, forget, importance=imp, heldout=reordered, forget_kind="poison")
    assert other.stats["auto"]["pasted_winning"] == report["pasted_winning"]
    for k, v in other.model.state_dict().items():
        torch.testing.assert_close(v, result.model.state_dict()[k], rtol=1e-4, atol=1e-6)
    stats = json.loads(json.dumps(result.stats))
    again = dampen.replay(model, forget, importance=imp, stats=stats, heldout=heldout)
    for k, v in again.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="pass the same heldout= to replay"):
        dampen.replay(model, forget, importance=imp, stats=stats)
    stats["auto"]["pasted_winning"] += 1
    with pytest.raises(ValueError, match="the pasted images differ from the request's"):
        dampen.replay(model, forget, importance=imp, stats=stats, heldout=heldout)
    stats["auto"]["pasted_winning"] -= 1
    stats["auto"]["trigger_window"] = [0, 0, 2]
    with pytest.raises(ValueError, match="the trigger was located at"):
        dampen.replay(model, forget, importance=imp, stats=stats, heldout=heldout)
    with pytest.raises(TypeError, match="pasted_trigger must be a bool"):
        dampen.unlearn(model, forget, importance=imp, forget_kind="poison", pasted_trigger=1)
    # without heldout= nothing is pasted
    blind = dampen.unlearn(model, forget, importance=imp, forget_kind="poison")
    assert "pasted_added" not in blind.stats["auto"]
    assert "importance_allowance" not in blind.stats["auto"]


def test_the_heldout_floor_does_not_stop_what_the_allowance_covers() -> None:
    from dampen.methods.auto_alpha import _Probe, _Rule

    rule = _Rule(target=0.05, floor=0.80, keep=0.85, allowance=0.002)
    below_floor = _Probe(10, 1.0, 0.5, 0.70, 0.0015)
    assert rule.safe(below_floor)  # within the allowance: the floor does not stop it
    assert not rule.safe(_Probe(10, 1.0, 0.5, 0.70, 0.0025))  # beyond it the floor does
    assert rule.safe(_Probe(10, 1.0, 0.5, 0.81, 0.0300))  # above the floor: any share
    assert not _Rule(target=0.05, floor=0.80, keep=0.85).safe(below_floor)
