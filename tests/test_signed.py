"""The signed ranking's pieces: Df's gradient sums and the candidates whose dampening raises
Df's loss (:mod:`dampen.methods.signed`), each against a plain loop."""

from __future__ import annotations

import copy

import pytest
import torch

import dampen
from conftest import loader, make_data, make_model, same_state, state_copy
from dampen.importances.measure import measure
from dampen.methods.signed import first_order_sums, gradient_sums, raising_only

ONE = {"lambda_": 1.0, "exponent": 1.0, "upper": 1.0}


def _minus_log_odds(z: torch.Tensor, label: int) -> torch.Tensor:
    others = torch.cat([z[:label], z[label + 1 :]])
    return torch.logsumexp(others, 0) - z[label]


def _sums_by_hand(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Sample by sample, in eval mode: the gradients of minus the log-odds, summed in fp64."""
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    model.eval()
    for i in range(len(y)):
        loss = _minus_log_odds(model(x[i : i + 1])[0], int(y[i]))
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            sums[name] += g.double()
    return sums


def test_gradient_sums_add_up_the_samples_gradients_and_leave_no_trace() -> None:
    model, (x, y) = make_model(), make_data(20)
    model.train()
    before = state_copy(model)
    got = gradient_sums(model, loader(x, y, 6), None, "log_odds")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert same_state(model, before)
    want = _sums_by_hand(copy.deepcopy(model), x, y)
    assert set(got) == set(want)
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-7), name
    only = gradient_sums(model, loader(x, y, 6), None, "log_odds", frozenset({"head.bias"}))
    assert set(only) == {"head.bias"}
    assert torch.equal(only["head.bias"], got["head.bias"])


def test_shuffled_sq_importance_holds_the_same_sums() -> None:
    """first_order_sums takes shuffled_sq's own sums; other estimators take a backward pass:
    both are the per-sample gradients of Df summed, with the same sign convention."""
    model, (x, y) = make_model(), make_data(20)
    model.eval()
    want = _sums_by_hand(copy.deepcopy(model), x, y)
    for estimator in ("shuffled_sq", "batch_sq", "per_sample"):
        imp_f = measure(
            model, loader(x, y, 6), estimator=estimator, objective="log_odds", hash_values=False
        )
        got = first_order_sums(imp_f, model, loader(x, y, 6), None, "log_odds")
        assert (imp_f.firsts is not None) == (estimator == "shuffled_sq")
        for name in want:
            assert torch.allclose(got[name].double(), want[name], rtol=1e-5, atol=1e-7), name


def test_raising_only_keeps_exactly_the_entries_with_negative_g_theta() -> None:
    model = make_model()
    imp = {n: torch.rand_like(p) + 0.1 for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(3)
    sums = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in imp.items()}
    sums["head.bias"][0] = 0.0  # no first-order change: not a candidate
    got = raising_only(imp, imp, model, sums, **ONE)
    weights = dict(model.named_parameters())
    for name, values in imp.items():
        theta, s = weights[name].detach().flatten().tolist(), sums[name].flatten().tolist()
        for i, v in enumerate(values.flatten().tolist()):
            want = v if s[i] * theta[i] < 0 else 0.0
            assert got[name].flatten()[i].item() == want
    assert got["head.bias"][0] == 0


def test_dampening_a_kept_parameter_raises_the_loss_and_a_dropped_one_lowers_it() -> None:
    """What the sign means: shrinking the parameter of largest |g θ| that the signed ranking
    keeps by 1 % raises Df's summed log-odds loss, and shrinking the largest it drops lowers
    it (finite differences)."""
    model, (x, y) = make_model(), make_data(20)
    model.eval()
    forget = loader(x[y == 1], y[y == 1], 4)
    sums = gradient_sums(model, forget, None, "log_odds")
    weights = dict(model.named_parameters())
    ones = {n: torch.ones_like(p) for n, p in weights.items()}
    kept = raising_only(ones, ones, model, sums, **ONE)

    def loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return sum(
                float(_minus_log_odds(m(xb[i : i + 1])[0], int(yb[i])))
                for xb, yb in forget
                for i in range(len(yb))
            )

    base = loss(model)
    scores = {n: (sums[n] * weights[n].detach().double()).abs() for n in weights}
    for keep in (True, False):
        name, index, best = "", 0, -1.0
        for n, s in scores.items():
            masked = torch.where((kept[n] > 0) == keep, s, torch.zeros_like(s))
            if masked.max() > best:
                name, index, best = n, int(masked.argmax()), float(masked.max())
        shrunk = copy.deepcopy(model)
        with torch.no_grad():
            dict(shrunk.named_parameters())[name].view(-1)[index] *= 0.99
        change = loss(shrunk) - base
        assert change > 0 if keep else change < 0, (keep, name, change)


def test_where_upper_lets_a_parameter_grow_the_signs_swap() -> None:
    """With upper > 1 an entry whose λ·I_D/I_Df exceeds 1 is multiplied by β > 1: it raises
    the loss where g θ > 0. Element by element against β from the dampening formula."""
    model = make_model()
    g = torch.Generator().manual_seed(5)
    imp_f = {n: torch.rand(p.shape, generator=g) + 0.1 for n, p in model.named_parameters()}
    imp_d = {n: torch.rand(p.shape, generator=g) + 0.1 for n, p in model.named_parameters()}
    sums = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in imp_f.items()}
    kw = {"lambda_": 1.0, "exponent": 1.0, "upper": 3.0}
    got = raising_only(imp_f, imp_d, model, sums, **kw)
    weights = dict(model.named_parameters())
    grows = 0
    for name, values in imp_f.items():
        theta, s = weights[name].detach().flatten().tolist(), sums[name].flatten().tolist()
        d = imp_d[name].flatten().tolist()
        for i, v in enumerate(values.flatten().tolist()):
            beta = min(d[i] / v, 3.0)
            grows += beta > 1
            raises = s[i] * theta[i] * (1 - beta) < 0
            assert got[name].flatten()[i].item() == (v if raises else 0.0), (name, i, beta)
    assert grows, "no entry grew: the swap was not checked"
    same = raising_only(imp_f, imp_d, model, sums, **{**kw, "upper": 1.0})
    assert any(not torch.equal(same[n], got[n]) for n in got)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_signed_ranking_must_be_a_bool(value: object) -> None:
    model, (x, y) = make_model(), make_data(12)
    imp = dampen.importance(model, loader(x, y, 4))
    with pytest.raises(TypeError, match="signed_ranking"):
        dampen.unlearn(model, loader(x[:4], y[:4], 4), importance=imp, signed_ranking=value)
