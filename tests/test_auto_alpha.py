"""``alpha="auto"``: nested candidates, the target, the fall-backs and the guards."""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

import pytest
import torch

import dampen
from conftest import loader, make_data, make_model, same_state, state_copy
from dampen.methods.auto_alpha import _Searcher, accuracy, forget_kind, importance_removed
from dampen.methods.training import train_


def _setup(n: int = 100) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, dampen.Importance]:
    """A tiny 10-class model trained to fit its data, and the importance of that data."""
    model, (x, y) = make_model(classes=10), make_data(n, classes=10)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    train_(model, loader(x, y, 8), epochs=30, optimizer=optimizer)
    return model.eval(), x, y, dampen.importance(model, loader(x, y, 8))


def test_candidate_k_selects_the_k_largest_ratios() -> None:
    model, x, y, imp = _setup()
    imp_f = dampen.importance(model, loader(x[y == 1], y[y == 1], 8))
    searcher = _Searcher(
        model,
        imp,
        {n: imp_f[n] for n in imp_f},
        lambda_=1.0,
        exponent=1.0,
        upper=1.0,
        forget=[],
        heldout=None,
        forward=None,
    )
    flat = torch.cat([(imp_f[n] / imp[n]).reshape(-1) for n in imp])
    flat = flat[~torch.isnan(flat)]
    order = flat.sort(descending=True).values
    for k in (0, 1, 5, 37, len(order) - 1):
        counts = searcher.apply(searcher.alpha_for(k))
        selected = sum(counts.values())
        assert selected == int((flat > searcher.alpha_for(k)).sum())
        assert selected <= k or (k == 0 and selected == 0)
        if k and order[k - 1] > order[k]:  # no tie at the boundary: exactly k
            assert selected == k
    searcher.restore()
    assert math.isinf(searcher.alpha_for(0))


def test_class_forgetting_reaches_the_target_and_reports_why() -> None:
    model, x, y, imp = _setup()
    forget = loader(x[y == 1], y[y == 1], 8)
    before = state_copy(model)
    result = dampen.unlearn(model, forget, importance=imp, max_selected=0.5)
    auto = result.stats["auto"]
    assert auto["kind"] == "class"  # every training sample of label 1 is in the forget set
    assert auto["target_forget_acc"] == pytest.approx(0.01)
    assert auto["original_forget_acc"] > 0.5
    assert auto["forget_acc"] <= 0.01 and auto["reason"].startswith("target reached")
    assert result.stats["selected_fraction"] <= 0.5
    # The reported accuracy is the model's: measured again here.
    logits = result.model.eval()(x[y == 1])
    assert (logits.argmax(1) == 1).float().mean().item() == pytest.approx(auto["forget_acc"])
    assert same_state(model, before)
    # The least dampening found: one fewer halving of the candidates would not reach it.
    fewer = dampen.unlearn(
        model, forget, importance=imp, alpha=result.stats["alpha"] * 1.5, max_selected=0.5
    )
    assert fewer.stats["selected"] <= result.stats["selected"]


def test_cap_bounds_the_share_selected() -> None:
    model, x, y, _ = _setup()
    # batch_sq: with the default shuffled_sq one parameter of this 218 already forgets class 1.
    imp = dampen.importance(model, loader(x, y, 8), estimator="batch_sq")
    forget = loader(x[y == 1], y[y == 1], 8)
    # SSD's ranking (the signed one reaches the target with that one parameter)
    result = dampen.unlearn(
        model, forget, importance=imp, max_selected=0.001, tolerance=0.0, signed_ranking=False
    )
    total = result.stats["parameters"]
    assert result.stats["selected"] <= max(1, int(0.001 * total))
    assert "not reached" in result.stats["auto"]["reason"]


def _removed_by_hand(
    imp: dampen.Importance, before: torch.nn.Module, after: torch.nn.Module
) -> float:
    """Σ I_D (θ − θ0)² / Σ I_D θ0², element by element in Python floats."""
    num = den = 0.0
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters(), strict=True):
        flat = (t.flatten().tolist() for t in (imp[name], p0, p1))
        for i, w0, w1 in zip(*flat, strict=True):
            num += i * (w1 - w0) ** 2
            den += i * w0**2
    return num / den


def test_importance_removed_matches_a_plain_loop() -> None:
    model, _, _, imp = _setup(40)
    changed = copy.deepcopy(model)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in changed.parameters():
            p.mul_(torch.rand_like(p))
    origin = {n: p.detach() for n, p in model.named_parameters()}
    norm = sum(float((imp[n] * w * w).sum()) for n, w in origin.items())
    assert importance_removed(imp, origin, changed, norm) == pytest.approx(
        _removed_by_hand(imp, model, changed), rel=1e-6
    )
    assert importance_removed(imp, origin, model, norm) == 0.0


def test_sample_forgetting_uses_the_heldout_level_or_leaves_the_model_alone() -> None:
    model, x, y, imp = _setup()
    forget = loader(x[:10], y[:10], 8)
    before = state_copy(model)
    with pytest.warns(UserWarning, match="left the model unchanged"):
        without = dampen.unlearn(model, forget, importance=imp)
    assert without.stats["auto"]["kind"] == "samples"
    assert "nothing dampened" in without.stats["auto"]["reason"]
    assert without.stats["selected"] == 0 and same_state(without.model, before)
    hx, hy = make_data(30, classes=10, seed=9)
    with_heldout = dampen.unlearn(model, forget, importance=imp, heldout=loader(hx, hy, 8))
    auto = with_heldout.stats["auto"]
    p = auto["original_heldout_acc"]
    margin = 1.645 * math.sqrt(p * (1 - p) * (1 / 10 + 1 / 30))  # 10 forget, 30 held-out samples
    assert auto["sampling_margin"] == pytest.approx(margin)
    assert auto["target_forget_acc"] == pytest.approx(p + margin + 0.01)


def test_heldout_guard_stops_before_collapse() -> None:
    model, x, y, imp = _setup()
    forget = loader(x[y == 1], y[y == 1], 8)
    keep = y != 1
    guard = loader(x[keep], y[keep], 8)
    result = dampen.unlearn(
        model,
        forget,
        importance=imp,
        heldout=guard,
        max_selected=1.0,
        tolerance=0.0,
        max_heldout_drop=0.0,
    )
    auto = result.stats["auto"]
    assert auto["heldout_acc"] >= auto["original_heldout_acc"]


def test_forget_kind_from_label_histograms() -> None:
    model, x, y, imp = _setup()
    full = dampen.importance(model, loader(x[y == 2], y[y == 2], 8))
    part = dampen.importance(model, loader(x[y == 2][:5], y[y == 2][:5], 8))
    assert forget_kind(imp, full, "auto") == "class"
    assert forget_kind(imp, part, "auto") == "samples"
    assert forget_kind(imp, part, "class") == "class"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("forget_kind", "some"),
        ("tolerance", 2.0),
        ("max_selected", 0.0),
        ("rounds", 0),
        ("max_importance_removed", 0.0),
        ("runner_up_kept", 1.5),
        ("alpha", "best"),
    ],
)
def test_bad_auto_options(option: str, value: object) -> None:
    model, x, y, imp = _setup()
    with pytest.raises((ValueError, TypeError), match=option if option != "alpha" else "alpha"):
        dampen.unlearn(model, loader(x[:8], y[:8], 8), importance=imp, **{option: value})


def test_several_classes_are_forgotten_one_after_the_other() -> None:
    model, x, y, _ = _setup()
    imp = dampen.importance(model, loader(x, y, 8), estimator="per_sample")
    both = (y == 1) | (y == 2)
    opts = {"estimator": "per_sample", "max_selected": 0.5}
    once = dampen.unlearn(model, loader(x[both], y[both], 8), importance=imp, **opts)
    auto = once.stats["auto"]
    assert [c["label"] for c in auto["per_class"]] == [1, 2]
    assert once.forget_importance is not None and once.forget_importance.samples == 20
    # The same as two requests by hand, the stored importance updated in between.
    first = dampen.unlearn(model, loader(x[y == 1], y[y == 1], 8), importance=imp, **opts)
    assert first.forget_importance is not None
    second = dampen.unlearn(
        first.model,
        loader(x[y == 2], y[y == 2], 8),
        importance=imp.subtract(first.forget_importance).rebind(first.model),
        **opts,
    )
    assert same_state(once.model, state_copy(second.model))
    assert once.stats["selected"] == first.stats["selected"] + second.stats["selected"]


def test_class_batches_regroup_one_label_at_full_size() -> None:
    from dampen.methods.class_batches import ClassBatches

    y = torch.tensor([0, 1, 1, 0, 1, 1, 1, 0, 1])
    x = torch.arange(9.0).view(9, 1)
    tuples = [(x[i : i + 4], "meta", y[i : i + 4]) for i in range(0, 9, 4)]
    got = list(ClassBatches(tuples, 1, 2))
    assert [b[0].flatten().tolist() for b in got] == [[1.0, 2.0], [4.0, 5.0], [6.0, 8.0]]
    assert all(b[1] == "meta" and (b[2] == 1).all() for b in got)
    dicts = [{"pixels": x[i : i + 4], "labels": y[i : i + 4]} for i in range(0, 9, 4)]
    got_d = list(ClassBatches(dicts, 0, 2))
    assert [b["pixels"].flatten().tolist() for b in got_d] == [[0.0, 3.0], [7.0]]
    assert list(ClassBatches(tuples, 5, 2)) == []


@pytest.fixture(scope="module")
def digits_cnn() -> tuple[torch.nn.Module, object, dampen.Importance]:
    """The recipe's small CNN on scikit-learn digits and the stored importance of D."""
    from dampen.data.base import loader as data_loader
    from dampen.data.digits import load_digits
    from dampen.recipe import recipe_for, train_model

    data = load_digits()
    model = train_model(recipe_for("digits"), data, seed=0).eval()
    return model, data, dampen.importance(model, data_loader(data.train, batch_size=64))


def _forget_importance(
    model: torch.nn.Module, forget: Any, imp: dampen.Importance, objective: str
) -> dampen.Importance:
    """Df's importance of ``objective`` as the request measures it (D's estimator and B)."""
    from dampen.importances.measure import measure

    return measure(
        model,
        forget,
        estimator=imp.estimator,
        objective=objective,
        hash_values=False,
        batch_size=imp.batch_size,
    )


def _raising_by_hand(
    model: torch.nn.Module, forget: Any, imp_f: dampen.Importance, objective: str = "log_odds"
) -> dict:
    """Oracle of the signed ranking: ``imp_f`` where ``g θ < 0``, ``g`` the gradient of minus
    the log-odds (or the cross-entropy) summed sample by sample in fp64 (a plain loop)."""
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    model.eval()
    for x, y in forget:
        for i in range(len(y)):
            z = model(x[i : i + 1])[0]
            if objective == "cross_entropy":
                loss = -torch.log_softmax(z, 0)[int(y[i])]
            else:
                others = torch.cat([z[: int(y[i])], z[int(y[i]) + 1 :]])
                loss = torch.logsumexp(others, 0) - z[int(y[i])]
            grads = torch.autograd.grad(loss, list(params.values()))
            for name, g in zip(params, grads, strict=True):
                sums[name] += g.double()
    return {
        n: torch.where(sums[n] * params[n].detach().double() < 0, t, torch.zeros_like(t))
        for n, t in imp_f.tensors().items()
    }


def test_rounds_equal_dampening_round_by_round(digits_cnn: tuple) -> None:
    """Oracle: each round is SSD with its reported α and I_Df (minus the label's log-odds, the
    objective class forgetting searches with) measured on the model so far; with the signed
    ranking, zero where dampening would not raise the loss (by a plain loop)."""
    from dampen.data.base import loader as data_loader
    from dampen.functional import dampen_

    model, data, imp = digits_cnn
    train, test = data.train, data.test
    rankings = []
    for label, both in itertools.product(range(10), (False, True)):
        forget = data_loader(train, (train.y == label).nonzero().flatten(), batch_size=64)
        kept = (test.y != label).nonzero().flatten()[:100]
        heldout = data_loader(test, kept, batch_size=64)
        result = dampen.unlearn(model, forget, importance=imp, heldout=heldout, signed_ranking=both)
        rounds = result.stats["auto"]["rounds"]
        if len(rounds) < 2:
            continue
        assert result.stats["auto"]["objective"] == "log_odds"
        signed = result.stats["auto"]["ranking"] == "signed"
        assert both or not signed
        rankings.append(signed)
        by_hand = copy.deepcopy(model)
        for step in rounds:
            imp_f = _forget_importance(by_hand, forget, imp, "log_odds")
            if signed:
                imp_f = _raising_by_hand(by_hand, forget, imp_f)
            with torch.no_grad():
                for name, p in by_hand.named_parameters():
                    dampen_(p, imp[name], imp_f[name], alpha=step["alpha"])
        assert same_state(result.model, state_copy(by_hand))
        selected = result.stats["selected"]
        assert max(s["selected"] for s in rounds) <= selected <= sum(s["selected"] for s in rounds)
        assert result.stats["alpha"] == rounds[-1]["alpha"]
        measured = accuracy(result.model, forget, None)
        assert measured == pytest.approx(result.stats["auto"]["forget_acc"])
        assert measured < rounds[0]["forget_acc"]  # the later rounds forgot more
        accs = [result.stats["auto"]["original_forget_acc"]] + [s["forget_acc"] for s in rounds]
        assert all(later < earlier for earlier, later in itertools.pairwise(accs))
    assert set(rankings) == {False, True}, f"rounds checked only with signed in {rankings}"


def test_class_search_ranks_by_log_odds_but_hands_back_the_cross_entropy(
    digits_cnn: tuple,
) -> None:
    """An auto class request records the log-odds objective, and the forget importance it hands
    back (what ``Importance.subtract`` takes out of D's) is the cross-entropy one of Df, not the
    log-odds one its search ranked by."""
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train = data.train
    forget = data_loader(train, (train.y == 3).nonzero().flatten(), batch_size=64)
    result = dampen.unlearn(model, forget, importance=imp)
    assert result.stats["auto"]["objective"] == "log_odds"
    handed = result.forget_importance
    assert handed is not None
    cross = _forget_importance(model, forget, imp, "cross_entropy")
    log_odds = _forget_importance(model, forget, imp, "log_odds")
    assert all(torch.equal(handed[n], cross[n]) for n in cross.sums)
    assert not all(torch.equal(handed[n], log_odds[n]) for n in log_odds.sums)


def test_without_heldout_rounds_stay_within_the_data_free_guard(digits_cnn: tuple) -> None:
    """No held-out data: rounds run, each request removes at most its share of importance,
    and the reported share is the one measured on the weights."""
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train = data.train
    ceiling = 0.025
    several = 0
    for label in range(10):
        forget = data_loader(train, (train.y == label).nonzero().flatten(), batch_size=64)
        result = dampen.unlearn(
            model, forget, importance=imp, max_importance_removed=ceiling, runner_up_kept=None
        )
        auto = result.stats["auto"]
        measured = _removed_by_hand(imp, model, result.model)
        assert measured == pytest.approx(auto["importance_removed"], rel=1e-4, abs=1e-12)
        assert measured <= ceiling * (1 + 1e-6)
        rounds = auto["rounds"]
        several += len(rounds) > 1
        for step in rounds:  # round r of R may use r/R of it
            assert step["importance_removed"] <= ceiling * step["round"] / 3 * (1 + 1e-6)
    assert several >= 1, "no class took a second round without heldout="
    tight = dampen.unlearn(
        model,
        data_loader(train, (train.y == 3).nonzero().flatten(), batch_size=64),
        importance=imp,
        max_importance_removed=1e-9,
    )
    assert tight.stats["selected"] == 0 or _removed_by_hand(imp, model, tight.model) <= 1e-9


def test_runner_ups_match_a_plain_loop() -> None:
    """Per sample, the class of largest logit other than the label's (soft labels: their
    arg-max), against a loop over samples and classes."""
    from dampen.methods.auto_alpha import runner_ups

    torch.manual_seed(0)
    logits = torch.randn(50, 7)
    labels = torch.randint(0, 7, (50,))
    soft = torch.softmax(torch.randn(50, 7), dim=1)
    for given, hard in ((labels, labels), (soft, soft.argmax(dim=1))):
        for also in (None, torch.tensor([2, 5])):
            left_out = set() if also is None else set(also.tolist())
            want = []
            for row, label in zip(logits.tolist(), hard.tolist(), strict=True):
                best = max((v, c) for c, v in enumerate(row) if c != label and c not in left_out)
                want.append(best[1])
            assert runner_ups(logits, given, also).tolist() == want


def test_the_runner_up_guard_needs_two_classes_besides_the_forget_sets() -> None:
    """With two classes the runner-up of every sample is the other class whatever the
    dampening does: the guard stays off (the ceiling alone); with three it is on, and a
    several-class request reports it per class."""
    for classes, on in ((2, False), (3, True)):
        model, (x, y) = make_model(classes=classes), make_data(60, classes=classes)
        torch.manual_seed(0)
        train_(model, loader(x, y, 8), epochs=20, optimizer=torch.optim.Adam(model.parameters()))
        model.eval()
        imp = dampen.importance(model, loader(x, y, 8))
        result = dampen.unlearn(model, loader(x[y == 1], y[y == 1], 8), importance=imp)
        assert ("runner_up_floor" in result.stats["auto"]) == on
    model, x, y, imp = _setup()
    both = (y == 1) | (y == 2)
    several = dampen.unlearn(model, loader(x[both], y[both], 8), importance=imp)
    assert all(c["runner_up_floor"] == 0.7 for c in several.stats["auto"]["per_class"])


def _runner_ups_kept(
    before: torch.nn.Module, after: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> float:
    """The share of samples whose runner-up class (largest logit besides the label's) is the
    same for both models, by hand."""
    with torch.no_grad():
        a, b = before.eval()(x), after.eval()(x)
    same = 0
    for row_a, row_b, label in zip(a.tolist(), b.tolist(), y.tolist(), strict=True):
        up_a = max((v, c) for c, v in enumerate(row_a) if c != label)[1]
        up_b = max((v, c) for c, v in enumerate(row_b) if c != label)[1]
        same += up_a == up_b
    return same / len(y)


def test_the_runner_up_guard_widens_the_ceiling_only_while_runner_ups_stay(
    digits_cnn: tuple,
) -> None:
    """Without held-out data, a class request may remove up to 4x max_importance_removed (r/R
    of it in round r) while at least runner_up_kept of the forget samples keep their runner-up
    class; with runner_up_kept=None, the ceiling alone. The reported share is the one measured
    on the weights."""
    from dampen.data.base import loader as data_loader
    from dampen.methods.auto_alpha import RUNNER_UP_WIDENING

    model, data, imp = digits_cnn
    train = data.train
    ceiling, floor, slack = 0.002, 0.7, 1 + 1e-6
    widened = 0
    for label in range(10):
        rows = (train.y == label).nonzero().flatten()
        forget = data_loader(train, rows, batch_size=64)
        alone = dampen.unlearn(
            model, forget, importance=imp, max_importance_removed=ceiling, runner_up_kept=None
        )
        assert _removed_by_hand(imp, model, alone.model) <= ceiling * slack
        assert "runner_up_floor" not in alone.stats["auto"]
        result = dampen.unlearn(model, forget, importance=imp, max_importance_removed=ceiling)
        auto = result.stats["auto"]
        assert auto["runner_up_floor"] == floor
        kept = _runner_ups_kept(model, result.model, train.x[rows], train.y[rows])
        assert kept == pytest.approx(auto["runner_up_kept"])
        removed = _removed_by_hand(imp, model, result.model)
        assert removed <= RUNNER_UP_WIDENING * ceiling * slack
        if removed > ceiling * slack:
            assert kept >= floor
            widened += 1
            # Runner-ups are compared sample by sample, yet a loader that reshuffles on every
            # pass gives the same weights: the request holds the samples in one order.
            shuffled = data_loader(train, rows, batch_size=64, shuffle=True, seed=label)
            again = dampen.unlearn(model, shuffled, importance=imp, max_importance_removed=ceiling)
            assert same_state(again.model, state_copy(result.model))
        for step in auto["rounds"]:
            share = step["round"] / 3
            assert step["importance_removed"] <= RUNNER_UP_WIDENING * ceiling * share * slack
            if step["importance_removed"] > ceiling * share * slack:
                assert step["runner_up_kept"] >= floor
    assert widened >= 1, "no request went beyond the ceiling: the widening was not exercised"


def test_one_round_is_the_single_search(digits_cnn: tuple) -> None:
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train = data.train
    forget = data_loader(train, (train.y == 4).nonzero().flatten(), batch_size=64)
    result = dampen.unlearn(model, forget, importance=imp, rounds=1)
    assert len(result.stats["auto"]["rounds"]) == 1
    assert result.stats["selected"] == result.stats["auto"]["rounds"][0]["selected"]


def test_a_guard_that_allows_nothing_says_so_and_changes_nothing() -> None:
    model, x, y, imp = _setup()
    before = state_copy(model)
    forget, keep = loader(x[y == 9], y[y == 9], 8), y != 9
    result = dampen.unlearn(
        model,
        forget,
        importance=imp,
        heldout=loader(x[keep], y[keep], 8),
        tolerance=0.0,
        max_heldout_drop=0.0,
    )
    auto = result.stats["auto"]
    assert auto["original_forget_acc"] > 0.0  # there was something to forget …
    assert auto["rounds"] == [] and result.stats["selected"] == 0  # … but no step was safe
    assert auto["reason"].startswith("held-out accuracy would drop too far")
    assert same_state(result.model, before)


def test_a_failing_later_round_leaves_the_callers_model_as_it_was(
    digits_cnn: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train, test = data.train, data.test

    def request(label: int) -> tuple[object, object]:
        forget = data_loader(train, (train.y == label).nonzero().flatten(), batch_size=64)
        kept = (test.y != label).nonzero().flatten()[:100]
        return forget, data_loader(test, kept, batch_size=64)

    # A class whose request takes a second round (which one depends on the trained weights).
    label = next(
        (
            c
            for c in range(10)
            if len(
                dampen.unlearn(model, request(c)[0], importance=imp, heldout=request(c)[1])
                .stats["auto"]
                .get("rounds", [])
            )
            > 1
        ),
        None,
    )
    assert label is not None, "no class needed a second round: the test would check nothing"
    ssd_module = sys.modules["dampen.methods.ssd"]
    measure_forget = ssd_module._forget_importance

    def fails_again(*args: object) -> object:
        if any("again" in str(a) for a in args):
            raise RuntimeError("out of memory (simulated) in the second pass over the forget set")
        return measure_forget(*args)

    monkeypatch.setattr(ssd_module, "_forget_importance", fails_again)
    forget, heldout = request(label)
    mine = copy.deepcopy(model)
    before = state_copy(mine)
    with pytest.raises(RuntimeError, match="simulated"):
        dampen.unlearn(mine, forget, importance=imp, heldout=heldout, inplace=True)
    assert same_state(mine, before)


def _replayed_equals(
    model: torch.nn.Module, forget: object, imp: object, result: object, heldout: object = None
) -> bool:
    """``dampen.replay`` of ``result`` on the original gives its weights bit for bit, and
    leaves the original as it was."""
    before = state_copy(model)
    assert not same_state(result.model, before)  # type: ignore[attr-defined]  # it did something
    stats = json.loads(json.dumps(result.stats))  # type: ignore[attr-defined]  # as stored
    again = dampen.replay(model, forget, importance=imp, stats=stats, heldout=heldout)
    assert same_state(model, before)
    return same_state(again, state_copy(result.model))  # type: ignore[attr-defined]


def test_replay_gives_the_weights_of_every_kind_of_request(digits_cnn: tuple) -> None:
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train, test = data.train, data.test

    def of(labels: tuple[int, ...]) -> object:
        picked = torch.isin(train.y, torch.tensor(labels)).nonzero().flatten()
        return data_loader(train, picked, batch_size=64)

    several_rounds = False
    for label in range(10):  # without heldout=, until a request takes several rounds
        result = dampen.unlearn(model, of((label,)), importance=imp)
        assert _replayed_equals(model, of((label,)), imp, result)
        if len(result.stats["auto"]["rounds"]) > 1:
            several_rounds = True
            break
    assert several_rounds, "no class took several rounds: the replay of rounds was not checked"
    kept = (test.y != 3).nonzero().flatten()[:100]
    guarded = dampen.unlearn(
        model, of((3,)), importance=imp, heldout=data_loader(test, kept, batch_size=64)
    )
    assert _replayed_equals(model, of((3,)), imp, guarded)
    two = dampen.unlearn(model, of((1, 7)), importance=imp)  # one class after the other
    assert len(two.stats["auto"]["per_class"]) == 2
    assert _replayed_equals(model, of((1, 7)), imp, two)
    some = data_loader(train, torch.arange(0, 300, 10), batch_size=64)
    assd = dampen.unlearn(model, some, method="assd", importance=imp)
    assert _replayed_equals(model, some, imp, assd)
    fixed = dampen.unlearn(model, of((5,)), importance=imp, alpha=10.0, exponent=2.0)
    assert _replayed_equals(model, of((5,)), imp, fixed)
    # Corrective: only the samples whose trained label still wins are dampened for.
    picked = torch.arange(0, 400, 10)
    x, y = train.x[picked], train.y[picked].clone()
    y[:15] = (y[:15] + 1) % 10  # labels the model was not trained with: they do not win
    wrong = [(x[:20], y[:20]), (x[20:], y[20:])]
    per_sample = dampen.importance(model, data_loader(train, batch_size=64), estimator="per_sample")
    # poison: the labels stop winning; label errors: the least held-out loss, re-centred
    made = {
        kind: dampen.unlearn(
            model,
            wrong,
            importance=per_sample,
            estimator="per_sample",
            forget_kind=kind,
            heldout=data_loader(test, torch.arange(100), batch_size=64),
            max_selected=0.5,
        )
        for kind in ("poison", "label_errors")
    }
    auto = made["poison"].stats["auto"]
    assert 0 < auto["winning"] < auto["identified"] and auto["rounds"]
    assert auto["objective"] == "log_odds"
    assert made["label_errors"].stats["auto"]["winning"] == auto["winning"]
    for result in made.values():
        assert _replayed_equals(model, wrong, per_sample, result)
    # Every identified sample wins: dampened for the caller's batches as they are (uneven).
    with torch.no_grad():
        right = (model(train.x).argmax(dim=1) == train.y).nonzero().flatten()[:148]
    x, y = train.x[right], train.y[right]
    uneven = [(x[:64], y[:64]), (x[64:84], y[64:84]), (x[84:], y[84:])]
    clean = data_loader(test, torch.arange(100), batch_size=64)
    winners = dampen.unlearn(
        model,
        uneven,
        importance=imp,
        forget_kind="poison",
        heldout=clean,
        max_selected=0.5,
        max_heldout_drop=1.0,
    )
    assert winners.stats["auto"]["winning"] == winners.stats["auto"]["identified"] == 148
    assert winners.stats["auto"]["erased_winning"] > 0  # replayed with its erased copies
    assert "erased_fallback" not in winners.stats["auto"]
    assert _replayed_equals(model, uneven, imp, winners, heldout=clean)


def test_an_empty_heldout_is_refused_not_ignored() -> None:
    model, x, y, imp = _setup()
    with pytest.raises(ValueError, match="empty"):
        dampen.unlearn(model, loader(x[:10], y[:10], 8), importance=imp, heldout=[])


def test_replay_refuses_other_methods_and_estimators(digits_cnn: tuple) -> None:
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    forget = data_loader(data.train, (data.train.y == 2).nonzero().flatten(), batch_size=64)
    result = dampen.unlearn(model, forget, importance=imp, alpha=10.0)
    with pytest.raises(ValueError, match="only SSD-family"):
        dampen.replay(model, forget, importance=imp, stats={**result.stats, "method": "scrub"})
    other = dampen.importance(model, forget, estimator="per_sample")
    with pytest.raises(ValueError, match="estimator"):
        dampen.replay(model, forget, importance=other, stats=result.stats)
    stale = copy.deepcopy(model)
    with torch.no_grad():
        next(stale.parameters()).add_(1.0)
    with pytest.raises(ValueError):  # the importance belongs to other weights
        dampen.replay(stale, forget, importance=imp, stats=result.stats)
    with pytest.raises(ValueError, match="lack"):
        dampen.replay(model, forget, importance=imp, stats={"method": "ssd"})


def _class_request(data: object, label: int) -> tuple[object, object]:
    """All training samples of ``label`` and 100 test samples of the other classes."""
    from dampen.data.base import loader as data_loader

    train, test = data.train, data.test  # type: ignore[attr-defined]
    forget = data_loader(train, (train.y == label).nonzero().flatten(), batch_size=64)
    kept = (test.y != label).nonzero().flatten()[:100]
    return forget, data_loader(test, kept, batch_size=64)


def _path_kept_by_the_rule(kept: dict, other: dict, target: float, paced: bool) -> bool:
    """The rule of the two paths, written out: the path that alone reaches the target, else
    (both reaching it) the higher held-out accuracy if higher by more than 2 points and
    otherwise the less importance removed, else (neither) the lower forget accuracy; ties go
    to the plain path."""
    reached, other_reached = kept["forget_acc"] <= target, other["forget_acc"] <= target
    if reached != other_reached:
        return reached
    lead = kept["heldout_acc"] - other["heldout_acc"]
    if reached and abs(lead) > 0.02:
        better, tie = lead > 0, False
    elif reached:
        better, tie = (
            kept["importance_removed"] < other["importance_removed"],
            kept["importance_removed"] == other["importance_removed"],
        )
    else:
        better, tie = (
            kept["forget_acc"] < other["forget_acc"],
            kept["forget_acc"] == other["forget_acc"],
        )
    return better or (tie and not paced)


def test_with_heldout_the_better_of_two_paths_is_kept(digits_cnn: tuple) -> None:
    """Class forgetting with heldout=: the plain path (the held-out guard alone) is the
    request with paced_path=False; the path kept follows the rule against the other one's
    report. Either way the reported accuracies are those of the weights, and replay gives
    them."""
    model, data, imp = digits_cnn
    taken = set()
    widened = 0
    for label in range(10):
        forget, heldout = _class_request(data, label)
        # one ranking, SSD's (the rankings are chosen between after their paths)
        result = dampen.unlearn(
            model, forget, importance=imp, heldout=heldout, signed_ranking=False
        )
        plain = dampen.unlearn(
            model, forget, importance=imp, heldout=heldout, paced_path=False, signed_ranking=False
        )
        auto, alone = result.stats["auto"], plain.stats["auto"]
        assert "path" not in alone
        assert accuracy(result.model, heldout, None) == pytest.approx(auto["heldout_acc"])
        assert accuracy(result.model, forget, None) == pytest.approx(auto["forget_acc"])
        if not alone["rounds"]:  # nothing to forget: one path
            assert "path" not in auto
            continue
        taken.add(auto["path"])
        paced = auto["path"] == "paced"
        other = auto["other_path"]
        assert _path_kept_by_the_rule(auto, other, auto["target_forget_acc"], paced)
        assert _replayed_equals(model, forget, imp, result)
        if not paced:
            assert same_state(result.model, state_copy(plain.model))
            assert auto["rounds"] == alone["rounds"]
            continue
        # the plain path, as the request without paced_path
        assert other["forget_acc"] == alone["forget_acc"]
        assert other["heldout_acc"] == alone["heldout_acc"]
        assert other["rounds"] == len(alone["rounds"])
        for step in auto["rounds"]:  # paced by the data-free guard: r/R of its share,
            share = 0.025 * step["round"] / 3 * (1 + 1e-6)  # 4x while runner-ups stay
            assert step["importance_removed"] <= 4 * share
            if step["importance_removed"] > share:
                assert step["runner_up_kept"] >= auto["runner_up_floor"]
                widened += 1
    assert taken == {"plain", "paced"}, f"only {taken} taken: the choice was not checked"
    assert widened, "no paced step went beyond its share: the runner-up guard was not checked"


def _interrupted_in_place(
    model: torch.nn.Module,
    monkeypatch: pytest.MonkeyPatch,
    fails: Any,
    *args: Any,
    **kwargs: Any,
) -> list[dict]:
    """Run ``dampen.unlearn(copy of model, *args, inplace=True, **kwargs)`` with every search
    path that ``fails(its keyword arguments)`` raising after it dampened, and check that
    auto_dampen_ itself put the caller's weights back (the API's own undo of in-place requests
    is switched off, so that it cannot hide a missing one). Returns each path's keywords."""
    from dampen import api
    from dampen.methods import auto_alpha

    one_path = auto_alpha._one_path
    monkeypatch.setattr(api, "_restore_", lambda *a: None)
    calls: list[dict] = []

    def interrupted(*a: object, **kw: object) -> object:
        outcome = one_path(*a, **kw)  # type: ignore[arg-type]  # the weights changed
        calls.append(kw)
        if fails(kw):
            raise RuntimeError("interrupted (simulated) at the end of a search path")
        return outcome

    monkeypatch.setattr(auto_alpha, "_one_path", interrupted)
    mine = copy.deepcopy(model)
    before = state_copy(mine)
    with pytest.raises(RuntimeError, match="simulated"):
        dampen.unlearn(mine, *args, inplace=True, **kwargs)
    assert same_state(mine, before)
    return calls


def test_a_failing_second_path_leaves_the_callers_model_as_it_was(
    digits_cnn: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data, imp = digits_cnn
    forget, heldout = _class_request(data, 3)
    fails = lambda kw: kw["paced"]  # noqa: E731
    _interrupted_in_place(model, monkeypatch, fails, forget, importance=imp, heldout=heldout)


def test_several_classes_with_heldout_record_each_path_and_replay(digits_cnn: tuple) -> None:
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    train, test = data.train, data.test
    labels = torch.tensor((1, 7))
    forget = data_loader(train, torch.isin(train.y, labels).nonzero().flatten(), batch_size=64)
    kept = (~torch.isin(test.y, labels)).nonzero().flatten()[:100]
    heldout = data_loader(test, kept, batch_size=64)
    result = dampen.unlearn(model, forget, importance=imp, heldout=heldout)
    per_class = result.stats["auto"]["per_class"]
    assert [c["label"] for c in per_class] == [1, 7]
    assert all(
        c["path"] in ("plain", "paced") and "forget_acc" in c["other_path"] for c in per_class
    )
    assert all(c["ranking"] in ("ssd", "signed") for c in per_class)
    assert _replayed_equals(model, forget, imp, result, heldout=heldout)


def test_the_sample_warning_names_the_callers_line() -> None:
    model, x, y, imp = _setup()
    with pytest.warns(UserWarning, match="heldout=") as caught:
        dampen.unlearn(model, loader(x[:8], y[:8], 8), importance=imp, forget_kind="samples")
    assert any(w.filename == __file__ for w in caught), [w.filename for w in caught]


def test_paced_path_must_be_a_bool() -> None:
    model, x, y, imp = _setup()
    with pytest.raises(TypeError, match="paced_path"):
        dampen.unlearn(model, loader(x[:8], y[:8], 8), importance=imp, paced_path=1)


def _shuffled_labels(test: Any) -> torch.Tensor:
    """The labels of the first 100 test samples, shuffled: a held-out accuracy near chance,
    so that a sample request's target is low and its search dampens."""
    return test.y[:100][torch.randperm(100, generator=torch.Generator().manual_seed(0))]


def _partly_mislabelled(train: Any) -> tuple[torch.Tensor, torch.Tensor, list]:
    """60 training samples, the first 12 with labels the model does not predict, and the
    same as two forget batches: a sample request where some but not all samples win."""
    picked = torch.arange(0, 600, 10)
    x, y = train.x[picked], train.y[picked].clone()
    y[:12] = (y[:12] + 1) % 10
    return x, y, [(x[:25], y[:25]), (x[25:], y[25:])]


def _both_rankings(
    model: torch.nn.Module, forget: Any, imp: dampen.Importance, heldout: Any, **options: Any
) -> dict[bool, Any]:
    """A sample request with ``heldout``, ranked by the winners (``True``) and by all of Df."""
    return {
        ranks: dampen.unlearn(
            model,
            forget,
            importance=imp,
            heldout=heldout,
            forget_kind="samples",
            winning_only=ranks,
            **options,
        )
        for ranks in (True, False)
    }


def test_sample_forgetting_ranks_by_the_samples_the_model_gets_right(digits_cnn: tuple) -> None:
    from dampen.functional import dampen_model_

    model, data, imp = digits_cnn
    train, test = data.train, data.test
    x, y, forget = _partly_mislabelled(train)
    with torch.no_grad():
        right = model(x).argmax(dim=1) == y  # a plain loop's answer, sample by sample
    assert 0 < int(right.sum()) < len(y)
    held_y = _shuffled_labels(test)
    heldout = [(test.x[:100], held_y)]
    made = _both_rankings(model, forget, imp, heldout)
    auto = made[True].stats["auto"]
    assert (auto["winning"], auto["forget_samples"]) == (int(right.sum()), len(y))
    assert "winning" not in made[False].stats["auto"]
    assert auto["original_forget_acc"] == pytest.approx(float(right.double().mean()))
    measured_on = {True: [(x[right], y[right])], False: forget}
    ranked_by = {
        ranks: _forget_importance(model, batches, imp, "cross_entropy")
        for ranks, batches in measured_on.items()
    }
    for ranks, result in made.items():
        assert result.stats["auto"]["rounds"], "nothing dampened: the ranking was not checked"
        candidates: Any = ranked_by[ranks]
        if result.stats["auto"]["ranking"] == "signed":  # signs from what the ranking measured
            candidates = _raising_by_hand(model, measured_on[ranks], candidates, "cross_entropy")
        expected = copy.deepcopy(model)
        dampen_model_(expected, imp, candidates, alpha=result.stats["alpha"])
        auto = result.stats["auto"]
        if "other_ranking" in auto:  # both searched: the rule of class forgetting's rankings
            signed = auto["ranking"] == "signed"
            target = auto["target_forget_acc"]
            assert _ranking_kept_by_the_rule(auto, auto["other_ranking"], target, signed)
        assert same_state(result.model, state_copy(expected))
        # the importance handed back (to take Df out of D's) is all of Df's either way
        handed = result.forget_importance
        assert handed is not None
        assert all(torch.equal(handed[n], ranked_by[False][n]) for n in handed)
        assert _replayed_equals(model, forget, imp, result)
    assert not same_state(made[True].model, state_copy(made[False].model))


def test_sample_forgetting_stops_at_the_held_out_floor(digits_cnn: tuple) -> None:
    """The held-out floor guards sample requests too: a forget set far above its held-out
    set (60 % of whose labels are shuffled) reaches the target only by taking held-out
    accuracy more than ``max_heldout_drop`` down; with the default the search stops at the
    floor, forgetting what it allows, and replay gives the weights."""
    model, data, imp = digits_cnn
    train, test = data.train, data.test
    forget = [(train.x[:60], train.y[:60])]
    y = test.y[:200].clone()
    y[:120] = y[:120][torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    heldout = [(test.x[:200], y)]
    guarded = dampen.unlearn(model, forget, importance=imp, heldout=heldout, forget_kind="samples")
    free = dampen.unlearn(
        model, forget, importance=imp, heldout=heldout, forget_kind="samples", max_heldout_drop=1.0
    )
    a, b = guarded.stats["auto"], free.stats["auto"]
    assert b["forget_acc"] <= b["target_forget_acc"]  # reachable, at a cost
    assert b["heldout_acc"] < b["original_heldout_acc"] - 0.02  # that the floor refuses
    assert a["reason"].startswith("held-out accuracy would drop too far")
    assert a["heldout_acc"] >= a["original_heldout_acc"] - 0.02 - 1e-9
    assert accuracy(guarded.model, heldout, None) == pytest.approx(a["heldout_acc"])
    assert a["forget_acc"] < a["original_forget_acc"]
    assert _replayed_equals(model, forget, imp, guarded)


def test_sample_forgetting_stops_at_the_data_free_ceiling(digits_cnn: tuple) -> None:
    """With heldout=, a sample request may remove at most ``max_importance_removed`` of D's
    importance, whatever the held-out floor allows (here switched off)."""
    model, data, imp = digits_cnn
    train, test = data.train, data.test
    forget = [(train.x[:60], train.y[:60])]
    heldout = [(test.x[:100], _shuffled_labels(test))]
    made = {
        cap: dampen.unlearn(
            model,
            forget,
            importance=imp,
            heldout=heldout,
            forget_kind="samples",
            max_heldout_drop=1.0,
            max_importance_removed=cap,
        )
        for cap in (0.002, 1.0)
    }
    capped, free = made[0.002].stats["auto"], made[1.0].stats["auto"]
    assert _replayed_equals(model, forget, imp, made[0.002])
    assert free["importance_removed"] > 0.002  # what the ceiling refuses
    assert capped["reason"].startswith("the data-free guard")
    assert 0 < capped["importance_removed"] <= 0.002
    assert capped["max_importance_removed"] == 0.002
    assert capped["forget_acc"] < capped["original_forget_acc"]


def test_a_signed_sample_request_takes_its_signs_from_the_winners(digits_cnn: tuple) -> None:
    """With ``per_sample`` (no stored gradient sums: the signs come from a backward pass over
    the batches the ranking's importance was measured on) a request ranked by the winners
    keeps the signed ranking (signs summed over all of Df instead gave SSD's, measured by
    patching the winners out), and replay, which finds the winners again, gives its weights."""
    from dampen.data.base import loader as data_loader

    model, data, _ = digits_cnn
    train, test = data.train, data.test
    imp = dampen.importance(model, data_loader(train, batch_size=64), estimator="per_sample")
    _, _, forget = _partly_mislabelled(train)  # not every sample wins
    heldout = [(test.x[:100], _shuffled_labels(test))]
    result = dampen.unlearn(model, forget, importance=imp, heldout=heldout, forget_kind="samples")
    auto = result.stats["auto"]
    assert 0 < auto["winning"] < auto["forget_samples"]
    assert auto["ranking"] == "signed" and "other_ranking" in auto
    assert _replayed_equals(model, forget, imp, result)


def test_sample_ranking_falls_back_to_all_of_df_on_batches_it_cannot_filter(
    digits_cnn: tuple,
) -> None:
    model, data, imp = digits_cnn
    train, test = data.train, data.test
    x, y = train.x[:60], train.y[:60].clone()
    y[:12] = (y[:12] + 1) % 10
    names = [f"sample {i}" for i in range(60)]  # an entry that is not a per-sample tensor
    forget = [
        {"x": x[:30], "y": y[:30], "id": names[:30]},
        {"x": x[30:], "y": y[30:], "id": names[30:]},
    ]
    held_y = _shuffled_labels(test)
    heldout = [{"x": test.x[:100], "y": held_y, "id": ["h"] * 100}]

    def forward(m: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return m(batch["x"]), batch["y"]

    made = _both_rankings(model, forget, imp, heldout, forward=forward)
    auto = made[True].stats["auto"]
    assert auto["winning"] is None and auto["forget_samples"] == 60
    assert auto["rounds"]
    assert same_state(made[True].model, state_copy(made[False].model))
    stats = json.loads(json.dumps(made[True].stats))  # as stored
    again = dampen.replay(model, forget, importance=imp, stats=stats, forward=forward)
    assert same_state(again, state_copy(made[True].model))


class _MeanOfTokens(torch.nn.Module):
    """Token embeddings averaged over a sequence of any length, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(tokens).mean(dim=1))


def test_sample_ranking_falls_back_on_batches_of_different_lengths() -> None:
    model = _MeanOfTokens().eval()
    g = torch.Generator().manual_seed(1)
    lengths = (5, 7, 6, 9)  # each batch padded to its own length: rows cannot be regrouped
    data = [torch.randint(0, 16, (10, n), generator=g) for n in lengths]
    with torch.no_grad():
        predicted = [model(x).argmax(dim=1) for x in data]
    labels = [p.clone() for p in predicted]
    labels[0][:4] = (labels[0][:4] + 1) % 3  # some forget samples the model gets wrong
    imp = dampen.importance(model, list(zip(data, labels, strict=True)))
    forget = list(zip(data[:2], labels[:2], strict=True))
    heldout = [(data[3], (predicted[3] + 1) % 3)]  # never predicted: the lowest target
    made = _both_rankings(model, forget, imp, heldout)
    assert made[True].stats["auto"]["winning"] is None
    assert made[True].stats["auto"]["rounds"]
    assert same_state(made[True].model, state_copy(made[False].model))


def test_winners_do_not_turn_a_sample_request_into_several_classes(digits_cnn: tuple) -> None:
    """Two whole classes the model gets right plus a few samples it gets wrong: the label
    histograms of all of Df say samples; those of the winners alone would say two classes."""
    model, data, imp = digits_cnn
    train, test = data.train, data.test
    with torch.no_grad():
        right = model(train.x).argmax(dim=1) == train.y
    classes = torch.isin(train.y, torch.tensor([1, 7]))
    if not bool(right[classes].all()):
        pytest.skip("the model misses a sample of classes 1 and 7")
    wrong = (~right & ~classes).nonzero().flatten()[:6]
    assert len(wrong) > 0
    picked = torch.cat([classes.nonzero().flatten(), wrong])
    forget = [(train.x[picked], train.y[picked])]
    kept = (~torch.isin(test.y, torch.tensor([1, 7]))).nonzero().flatten()[:100]
    heldout = [(test.x[kept], test.y[kept])]
    for ranks in (True, False):
        result = dampen.unlearn(model, forget, importance=imp, heldout=heldout, winning_only=ranks)
        assert result.stats["auto"]["kind"] == "samples"


def test_named_tuple_batches_rank_by_the_winners_and_replay(digits_cnn: tuple) -> None:
    from collections import namedtuple

    model, data, imp = digits_cnn
    train, test = data.train, data.test
    pair = namedtuple("pair", ["images", "labels"])
    x, y = train.x[:60], train.y[:60].clone()
    y[:12] = (y[:12] + 1) % 10
    forget = [pair(x[:30], y[:30]), pair(x[30:], y[30:])]
    held_y = _shuffled_labels(test)
    heldout = [pair(test.x[:100], held_y)]
    made = _both_rankings(model, forget, imp, heldout)
    auto = made[True].stats["auto"]
    assert auto["winning"] is not None and 0 < auto["winning"] < auto["forget_samples"] == 60
    assert auto["rounds"]
    assert not same_state(made[True].model, state_copy(made[False].model))
    assert _replayed_equals(model, forget, imp, made[True])


def test_replay_refuses_a_forget_set_with_other_winners(digits_cnn: tuple) -> None:
    model, data, imp = digits_cnn
    train, test = data.train, data.test
    x, y = train.x[:60], train.y[:60].clone()
    y[:12] = (y[:12] + 1) % 10
    held_y = _shuffled_labels(test)
    result = dampen.unlearn(
        model, [(x, y)], importance=imp, heldout=[(test.x[:100], held_y)], forget_kind="samples"
    )
    assert result.stats["auto"]["rounds"]
    stats = json.loads(json.dumps(result.stats))
    with pytest.raises(ValueError, match="forget samples win, the request recorded"):
        dampen.replay(model, [(x[:50], y[:50])], importance=imp, stats=stats)


def test_lf_sample_requests_are_not_ranked_by_winners(digits_cnn: tuple) -> None:
    model, data, _ = digits_cnn
    from dampen.data.base import loader as data_loader

    train, test = data.train, data.test
    imp = dampen.importance(model, data_loader(train, batch_size=64), estimator="lf")
    x, y = train.x[:60], train.y[:60].clone()
    y[:12] = (y[:12] + 1) % 10
    held_y = _shuffled_labels(test)
    result = dampen.unlearn(
        model,
        [(x, y)],
        method="lfssd",
        importance=imp,
        heldout=[(test.x[:100], held_y)],
        forget_kind="samples",
    )
    assert result.stats["auto"]["kind"] == "samples"
    assert "winning" not in result.stats["auto"]


def _ranking_kept_by_the_rule(kept: dict, other: dict, target: float, signed: bool) -> bool:
    """The rule of the two rankings, written out: the one that alone reaches the target; else
    (neither) the lower forget accuracy; else (both) the higher held-out accuracy if higher
    by more than 2 points, then more runner-ups kept, then less importance removed; ties go to
    SSD's."""
    reached, other_reached = kept["forget_acc"] <= target, other["forget_acc"] <= target
    if reached != other_reached:
        return reached
    keys: list[tuple[str, int]] = [("forget_acc", -1)]
    if reached:
        keys = [("runner_up_kept", 1), ("importance_removed", -1)]
        if kept["heldout_acc"] is not None:
            lead = kept["heldout_acc"] - other["heldout_acc"]
            if abs(lead) > 0.02:
                return lead > 0
    for key, sign in keys:
        a, b = kept.get(key), other.get(key)
        if a is None or b is None or a == b:
            continue
        return (a - b) * sign > 0
    return not signed


def test_class_forgetting_keeps_the_better_of_two_rankings(digits_cnn: tuple) -> None:
    """Every digits class, without and with heldout=: the ranking kept follows the rule
    against the other one's report, the other one is the request with signed_ranking=False
    when the signed one is kept, and replay gives the weights."""
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    taken = set()
    for label in range(10):
        forget, held = _class_request(data, label)
        for heldout in (None, held):
            result = dampen.unlearn(model, forget, importance=imp, heldout=heldout)
            auto = result.stats["auto"]
            if not auto["rounds"] and "other_ranking" not in auto:
                continue  # met as it was: one search
            taken.add(auto["ranking"])
            other = auto["other_ranking"]
            signed = auto["ranking"] == "signed"
            assert _ranking_kept_by_the_rule(auto, other, auto["target_forget_acc"], signed)
            assert accuracy(result.model, forget, None) == pytest.approx(auto["forget_acc"])
            assert _replayed_equals(model, forget, imp, result)
            if signed:
                alone = dampen.unlearn(
                    model, forget, importance=imp, heldout=heldout, signed_ranking=False
                ).stats["auto"]
                assert alone["ranking"] == "ssd" and "other_ranking" not in alone
                for key in ("forget_acc", "heldout_acc", "importance_removed", "runner_up_kept"):
                    assert other[key] == alone[key], key
                assert auto["evaluations"] > alone["evaluations"]  # both searches counted
                # the signs are shuffled_sq's per-sample sums: any forget order, same weights
                rows = (data.train.y == label).nonzero().flatten()
                shuffled = data_loader(data.train, rows, batch_size=64, shuffle=True, seed=label)
                again = dampen.unlearn(model, shuffled, importance=imp, heldout=heldout)
                assert again.stats["auto"]["ranking"] == "signed"
                assert same_state(again.model, state_copy(result.model))
    assert taken == {"ssd", "signed"}, f"only {taken} taken: the choice was not checked"


def test_better_ranking_follows_its_order_of_criteria() -> None:
    from dampen.methods.auto_alpha import AutoOutcome, _better_ranking

    def outcome(**report: object) -> AutoOutcome:
        base = {
            "forget_acc": 0.0,
            "target_forget_acc": 0.01,
            "heldout_acc": None,
            "runner_up_kept": None,
            "importance_removed": 0.01,
        }
        return AutoOutcome(1.0, {}, {**base, **report})

    assert _better_ranking(outcome(), outcome(forget_acc=0.5), 0.02)  # only it reaches
    assert not _better_ranking(outcome(forget_acc=0.5), outcome(), 0.02)
    assert _better_ranking(outcome(forget_acc=0.3), outcome(forget_acc=0.5), 0.02)  # neither
    assert not _better_ranking(outcome(forget_acc=0.5), outcome(forget_acc=0.5), 0.02)  # tie
    # both reach: held-out accuracy beyond the margin, whatever the rest
    ahead = outcome(heldout_acc=0.95, runner_up_kept=0.1, importance_removed=0.5)
    assert _better_ranking(ahead, outcome(heldout_acc=0.9, runner_up_kept=0.9), 0.02)
    # within the margin: runner-ups kept, then importance removed
    more = outcome(heldout_acc=0.9, runner_up_kept=0.8, importance_removed=0.5)
    assert _better_ranking(more, outcome(heldout_acc=0.91, runner_up_kept=0.7), 0.02)
    assert not _better_ranking(outcome(runner_up_kept=0.7), outcome(runner_up_kept=0.8), 0.02)
    assert _better_ranking(outcome(importance_removed=0.001), outcome(), 0.02)
    assert not _better_ranking(outcome(), outcome(), 0.02)  # ties: SSD's


def test_a_failing_signed_search_leaves_the_callers_model_as_it_was(
    digits_cnn: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signed search fails after it dampened."""
    from dampen.methods import auto_alpha

    model, data, imp = digits_cnn
    forget, _ = _class_request(data, 3)
    fails = lambda kw: kw["candidates"] is not auto_alpha._unsigned  # noqa: E731
    calls = _interrupted_in_place(model, monkeypatch, fails, forget, importance=imp)
    assert calls[0]["candidates"] is auto_alpha._unsigned and len(calls) == 2


def test_lf_and_other_kinds_search_one_ranking(digits_cnn: tuple) -> None:
    """The signed ranking is for class forgetting, and sample forgetting with held-out data,
    with a labelled importance: lf's has no label; a sample request whose forget set met the
    target as it was searches once."""
    from dampen.data.base import loader as data_loader

    model, data, imp = digits_cnn
    forget, _ = _class_request(data, 4)
    lf = dampen.importance(model, data_loader(data.train, batch_size=64), estimator="lf")
    result = dampen.unlearn(model, forget, importance=lf, method="lfssd", alpha="auto")
    assert result.stats["auto"].get("ranking", "ssd") == "ssd"
    assert "other_ranking" not in result.stats["auto"]
    some = data_loader(data.train, torch.arange(40), batch_size=64)
    held = data_loader(data.test, torch.arange(200), batch_size=64)
    samples = dampen.unlearn(model, some, importance=imp, heldout=held).stats["auto"]
    assert samples["kind"] == "samples" and not samples["rounds"]
    assert samples["ranking"] == "ssd" and "other_ranking" not in samples
