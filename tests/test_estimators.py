"""Importance estimators against plain loops (the oracles), and state restoration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dampen
from conftest import loader, make_data, make_model
from dampen.core.losses import IGNORE_INDEX, sample_log_odds_losses
from dampen.importances.measure import measure


def _grads(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    gs = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    return dict(zip(names, gs, strict=True))


def _oracle_batch_sq(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> dict:
    model.eval()
    out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for i in range(0, len(x), bs):
        g = _grads(model, F.cross_entropy(model(x[i : i + bs]), y[i : i + bs]))
        for n in out:
            out[n] += g[n] ** 2
        batches += 1
    return {n: v / batches for n, v in out.items()}


def _oracle_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    model.eval()
    out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        g = _grads(model, F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]))
        for n in out:
            out[n] += g[n] ** 2
    return {n: v / len(x) for n, v in out.items()}


def _oracle_lf(model: nn.Module, x: torch.Tensor, bs: int) -> dict:
    model.eval()
    out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for i in range(0, len(x), bs):
        logits = model(x[i : i + bs])
        g = _grads(model, (logits.norm(dim=1) ** 2).mean())
        for n in out:
            out[n] += g[n].abs()
        batches += 1
    return {n: v / batches for n, v in out.items()}


def _assert_close(imp: dampen.Importance, oracle: dict) -> None:
    assert set(imp) == set(oracle)
    for n, v in oracle.items():
        torch.testing.assert_close(imp[n], v, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("bs", [5, 8, 24])
def test_batch_sq_matches_loop(bs: int) -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(model, loader(x, y, bs), estimator="batch_sq")
    _assert_close(imp, _oracle_batch_sq(make_model(), x, y, bs))
    assert imp.batches == -(-len(x) // bs) and imp.units == imp.batches
    assert imp.samples == len(x) and imp.batch_size == bs


@pytest.mark.parametrize(
    ("impl", "chunk"), [("auto", None), ("layers", None), ("vmap", None), ("vmap", 1), ("vmap", 3)]
)
def test_per_sample_matches_loop_over_single_samples(impl: str, chunk: int | None) -> None:
    model, (x, y) = make_model(), make_data()
    imp = dampen.importance(
        model, loader(x, y, 7), estimator="per_sample", chunk_size=chunk, per_sample_impl=impl
    )
    _assert_close(imp, _oracle_per_sample(make_model(), x, y))
    assert imp.units == len(x) == imp.samples


def test_per_sample_does_not_depend_on_batch_size() -> None:
    model, (x, y) = make_model(), make_data()
    a = dampen.importance(model, loader(x, y, 4), estimator="per_sample")
    b = dampen.importance(model, loader(x, y, 24), estimator="per_sample")
    for n in a:
        torch.testing.assert_close(a[n], b[n])


def test_lf_matches_loop_and_needs_no_labels() -> None:
    model, (x, y) = make_model(), make_data()
    labelled = dampen.importance(model, loader(x, y, 8), estimator="lf")
    unlabelled = dampen.importance(
        model, [(x[i : i + 8],) for i in range(0, 24, 8)], estimator="lf"
    )
    oracle = _oracle_lf(make_model(), x, 8)
    _assert_close(labelled, oracle)
    _assert_close(unlabelled, oracle)


class DictModel(nn.Module):
    """A transformers-like model: keyword inputs, an output object with ``.logits``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(pixel_values)}


@pytest.mark.parametrize("estimator", ["batch_sq", "per_sample", "lf"])
def test_dict_batches_and_custom_forward_agree(estimator: str) -> None:
    x, y = make_data()
    plain = dampen.importance(make_model(), loader(x, y, 8), estimator=estimator)
    dict_batches = [{"pixel_values": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, 24, 8)]
    as_dict = dampen.importance(DictModel(), dict_batches, estimator=estimator)
    triples = [(y[i : i + 8], "meta", x[i : i + 8]) for i in range(0, 24, 8)]

    def forward(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch[2]), batch[0]

    custom = dampen.importance(make_model(), triples, estimator=estimator, forward=forward)
    for n in plain:
        torch.testing.assert_close(as_dict["net." + n], plain[n])
        torch.testing.assert_close(custom[n], plain[n])


def test_eval_mode_is_used_and_caller_state_restored() -> None:
    model, (x, y) = make_model(), make_data()
    model.train()
    model.head.eval()  # mixed modes must come back exactly
    model.head.bias.requires_grad_(False)
    sentinel = torch.full_like(model.head.weight, 7.0)
    model.head.weight.grad = sentinel
    hooks_before = [
        (len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
        for m in model.modules()
    ]
    imp = dampen.importance(model, loader(x, y), estimator="per_sample")
    dampen.importance(model, loader(x, y), estimator="batch_sq")
    assert model.training and not model.head.training and model.features.training
    assert not model.head.bias.requires_grad and model.features[0].weight.requires_grad
    assert model.head.weight.grad is sentinel and model.features[0].weight.grad is None
    hooks_after = [
        (len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
        for m in model.modules()
    ]
    assert hooks_after == hooks_before
    assert all(not getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters())
    # Eval mode during the pass: equal to the eval-mode oracle although dropout is on here.
    _assert_close(imp, _oracle_per_sample(make_model(), x, y))
    assert imp["head.bias"].abs().sum() > 0  # frozen parameters are candidates too


def test_state_restored_after_an_error() -> None:
    model, (x, y) = make_model(), make_data()
    model.train()
    model.head.bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match="label 5"):
        dampen.importance(model, loader(x, torch.full_like(y, 5)))
    assert model.training and [p.requires_grad for p in model.parameters()] == flags


def test_bad_inputs_are_named() -> None:
    model, (x, y) = make_model(), make_data()
    with pytest.raises(ValueError, match="estimator"):
        dampen.importance(model, loader(x, y), estimator="fisher")
    with pytest.raises(ValueError, match="no samples"):
        dampen.importance(model, [])
    with pytest.raises(TypeError, match="nn.Module"):
        dampen.importance("model", loader(x, y))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch"):
        dampen.importance(model, [x])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_accumulate_in_fp32(dtype: torch.dtype) -> None:
    x, y = make_data()
    ref = dampen.importance(make_model(), loader(x, y), estimator="batch_sq")
    low = make_model().to(dtype)
    imp = dampen.importance(low, loader(x, y), estimator="batch_sq")
    for n in imp:
        assert imp.sums[n].dtype == torch.float32
        assert torch.isfinite(imp[n]).all()
    # Same order of magnitude as the fp32 model: nothing lost to underflow in the squares.
    total_ref = sum(float(ref[n].sum()) for n in ref)
    total_low = sum(float(imp[n].sum()) for n in imp)
    assert total_low == pytest.approx(total_ref, rel=0.2)


def test_deterministic() -> None:
    x, y = make_data()
    a = dampen.importance(make_model(), loader(x, y), estimator="per_sample")
    b = dampen.importance(make_model(), loader(x, y), estimator="per_sample")
    assert all(torch.equal(a.sums[n], b.sums[n]) for n in a)


def test_model_with_unused_parameter() -> None:
    model = make_model()
    model.unused = nn.Linear(2, 2)  # type: ignore[assignment]
    x, y = make_data()
    imp = dampen.importance(model, loader(x, y))
    assert imp["unused.weight"].abs().sum() == 0


# --------------------------------------------------------------------- the log-odds objective


def _log_odds_loop(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Minus the log-odds of each label, log(Σ_{c≠y} e^{z_c}) − z_y, one sample at a time."""
    out = []
    for z, label in zip(logits.double().tolist(), y.tolist(), strict=True):
        others = [v for c, v in enumerate(z) if c != label]
        top = max(others)
        out.append(top + math.log(sum(math.exp(v - top) for v in others)) - z[label])
    return out


def test_log_odds_losses_match_a_loop_for_classes_and_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(7, 5, generator=g) * 4, torch.randint(0, 5, (7,), generator=g)
    got = sample_log_odds_losses(logits, y)
    torch.testing.assert_close(got.double(), torch.tensor(_log_odds_loop(logits, y)).double())
    # Tokens: the mean over labelled positions; a sequence without labels has loss 0.
    tok = torch.randn(3, 4, 6, generator=g)
    labels = torch.randint(0, 6, (3, 4), generator=g)
    labels[0, :2] = IGNORE_INDEX
    labels[2] = IGNORE_INDEX
    want = []
    for i in range(3):
        keep = labels[i] != IGNORE_INDEX
        per = _log_odds_loop(tok[i][keep], labels[i][keep])
        want.append(sum(per) / len(per) if per else 0.0)
    got = sample_log_odds_losses(tok, labels)
    torch.testing.assert_close(got.double(), torch.tensor(want).double())
    soft = torch.softmax(logits, dim=1)  # soft labels: their arg-max is the label
    torch.testing.assert_close(
        sample_log_odds_losses(logits, soft), sample_log_odds_losses(logits, soft.argmax(dim=1))
    )


def test_log_odds_gradient_is_the_cross_entropys_over_one_minus_p() -> None:
    z = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (ce,) = torch.autograd.grad(F.cross_entropy(z, y), z)
    (odds,) = torch.autograd.grad(sample_log_odds_losses(z, y).sum(), z)
    p = torch.softmax(z.detach(), dim=1)[0, 0]
    torch.testing.assert_close(odds, ce / (1 - p))


def test_log_odds_gradient_does_not_vanish_where_the_cross_entropys_does() -> None:
    # A label winning by a margin of 40: in fp32 its probability rounds to 1.
    z = torch.tensor([[40.0, 0.0, -1.0]], requires_grad=True)
    y = torch.tensor([0])
    (ce,) = torch.autograd.grad(F.cross_entropy(z, y), z)
    (odds,) = torch.autograd.grad(sample_log_odds_losses(z, y).sum(), z)
    assert float(ce.abs().max()) < 1e-15
    want = torch.tensor([[-1.0, 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))]])
    torch.testing.assert_close(odds, want)


def _oracle_log_odds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> dict:
    """Batches of ``bs`` (``bs=1``: per sample): the mean of the squared gradients of the
    batch's mean minus log-odds, with the loss written out by hand."""
    model.eval()
    out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for i in range(0, len(x), bs):
        logits, labels = model(x[i : i + bs]), y[i : i + bs]
        own = logits[torch.arange(len(labels)), labels]
        mask = F.one_hot(labels, logits.shape[1]).bool()
        others = logits.masked_fill(mask, float("-inf")).logsumexp(dim=1)
        g = _grads(model, (others - own).mean())
        for n in out:
            out[n] += g[n] ** 2
        batches += 1
    return {n: v / batches for n, v in out.items()}


@pytest.mark.parametrize(
    ("estimator", "impl", "bs"),
    [("batch_sq", "auto", 5), ("per_sample", "layers", 1), ("per_sample", "vmap", 1)],
)
def test_log_odds_objective_matches_loop(estimator: str, impl: str, bs: int) -> None:
    model, (x, y) = make_model(), make_data()
    imp = measure(
        model,
        loader(x, y, 5),
        estimator=estimator,
        per_sample_impl=impl,
        objective="log_odds",
    )
    _assert_close(imp, _oracle_log_odds(make_model(), x, y, bs))
    plain = dampen.importance(model, loader(x, y, 5), estimator=estimator)
    assert any(not torch.allclose(imp[n], plain[n]) for n in imp)  # another quantity


def test_objective_is_checked() -> None:
    model, (x, y) = make_model(), make_data()
    with pytest.raises(ValueError, match="objective must be one of"):
        measure(model, loader(x, y), estimator="batch_sq", objective="hinge")
    with pytest.raises(ValueError, match="lf estimator uses no labels"):
        measure(model, loader(x, y), estimator="lf", objective="log_odds")
