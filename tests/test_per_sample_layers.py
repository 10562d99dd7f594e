"""The layer-wise per-sample path against a loop over single samples, on every layer kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dampen.core.state import preserved
from dampen.importances.estimators import accumulate
from dampen.importances.per_sample_layers import supports


class Mixed(nn.Module):
    """Grouped/strided/dilated convs, 1-d conv, sequence Linear, LayerNorm, BatchNorm1d,
    a layer used twice and an in-place ReLU right after a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 6, 3, padding=1)
        self.norm = nn.LayerNorm(6)
        self.shared = nn.Linear(6, 6)
        self.bn1 = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x), inplace=True)
        h = self.bn2(self.grouped(h))  # [N, 4, 4, 4]
        seq = self.conv1d(h.flatten(2))  # [N, 6, 16]
        seq = self.norm(seq.transpose(1, 2))  # [N, 16, 6]
        seq = self.shared(torch.tanh(self.shared(seq)))  # used twice
        pooled = self.bn1(seq.mean(dim=1))
        return self.head(pooled)


def _trained_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def _oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    # In the accumulators' dtype on the CPU (fp64), squares of fp32 gradients.
    out = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for n, g in zip(out, grads, strict=True):
            out[n] += g.double() ** 2
    return out


@pytest.fixture(params=["grouped", "blocked"])
def conv_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which of the two ways of forming a convolution's per-sample gradients every
    convolution takes (in the library, chosen by its number of output positions)."""
    positions = 0 if request.param == "grouped" else 1 << 30
    monkeypatch.setattr("dampen.importances.per_sample_layers._MANY_POSITIONS", positions)
    # several products per batch, the last one short
    monkeypatch.setattr("dampen.importances.per_sample_layers._SAMPLES_PER_PRODUCT", 3)
    return str(request.param)


@pytest.mark.parametrize("impl", ["layers", "vmap"])
def test_layerwise_equals_a_loop_over_samples(impl: str, conv_path: str) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(10, 2, 8, 8), torch.arange(10) % 3
    model = _trained_bn(Mixed(), torch.randn(16, 2, 8, 8))
    assert supports(model)
    want = _oracle(model, x, y)
    with preserved(model):
        batches = [(x[:6], y[:6]), (x[6:9], y[6:9]), (x[9:], y[9:])]  # the last one alone
        sums = accumulate(model, batches, "per_sample", per_sample_impl=impl)
    assert (sums.units, sums.samples, sums.batches) == (10, 10, 3)
    assert sums.labels == {0: 4, 1: 3, 2: 3}
    for n, v in want.items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8, msg=n)


class WithRawParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(3))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) + self.offset


def test_models_with_other_parameters_use_vmap() -> None:
    assert not supports(WithRawParameter())
    train_bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert not supports(train_bn.train())  # batch statistics couple the samples
    assert supports(train_bn.eval())
    torch.manual_seed(0)
    model = WithRawParameter()
    x, y = torch.randn(5, 4), torch.arange(5) % 3
    with preserved(model):
        sums = accumulate(model, [(x, y)], "per_sample")
    for n, v in _oracle(model, x, y).items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8)


def test_unknown_impl_is_refused() -> None:
    with pytest.raises(ValueError, match="per_sample_impl"):
        accumulate(nn.Linear(2, 2), [], "per_sample", per_sample_impl="fast")


class TwoBranches(nn.Module):
    """Two layers read the raw input; a wide convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(2, 70, 3, padding=1)
        self.side = nn.Conv1d(2, 3, 2, bias=False)
        self.head = nn.Linear(70 + 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.wide(x)).mean(dim=(2, 3))
        b = self.side(x.flatten(2)).mean(dim=2)
        return self.head(torch.cat([a, b], dim=1))


@pytest.mark.parametrize("chunk", [1 << 18, 2000])  # all samples at once, or 1 at a time
def test_every_branch_from_the_input_and_wide_convolutions(
    chunk: int, conv_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dampen.importances.per_sample_layers._CHUNK", chunk)
    torch.manual_seed(1)
    model = TwoBranches().eval()
    x, y = torch.randn(7, 2, 5, 5), torch.arange(7) % 4
    want = _oracle(model, x, y)
    model.head.bias.requires_grad_(False)  # a caller's frozen parameter stays frozen
    with preserved(model):
        sums = accumulate(model, [(x, y)], "per_sample", per_sample_impl="layers")
    assert not model.head.bias.requires_grad and model.wide.weight.requires_grad
    for n, v in want.items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8, msg=n)


def test_inputs_that_require_grad_are_left_alone() -> None:
    torch.manual_seed(2)
    model = TwoBranches().eval()
    x, y = torch.randn(5, 2, 5, 5), torch.arange(5) % 4
    want = _oracle(model, x, y)
    leaf = x.clone().requires_grad_(True)
    with preserved(model):
        sums = accumulate(model, [(leaf, y)], "per_sample", per_sample_impl="layers")
    assert leaf.grad is None
    for n, v in want.items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8, msg=n)


def test_a_graph_of_the_callers_own_before_the_model_does_not_hide_layers() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3))
    prompt = nn.Parameter(torch.randn(5))  # e.g. a learned input offset outside the model
    x, y = torch.randn(6, 5), torch.arange(6) % 3
    want = _oracle(model, x + prompt.detach(), y)
    with preserved(model):
        sums = accumulate(
            model,
            [(x, y)],
            "per_sample",
            forward=lambda m, b: (m(b[0] + prompt), b[1]),
            per_sample_impl="layers",
        )
    assert prompt.grad is None
    for n, v in want.items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8, msg=n)


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h += self.b(h)  # changes b's input after b used it
        return self.head(h)


def test_an_input_changed_in_place_after_its_layer_is_refused() -> None:
    model = InPlace()
    x, y = torch.randn(5, 4), torch.arange(5) % 3
    with preserved(model), pytest.raises(RuntimeError, match="modified in place"):
        accumulate(model, [(x, y)], "per_sample", per_sample_impl="layers")


def test_channels_last_convolutions() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 3)
    ).to(memory_format=torch.channels_last)
    x, y = torch.randn(6, 3, 5, 5), torch.arange(6) % 3
    want = _oracle(model, x, y)
    with preserved(model):
        sums = accumulate(model, [(x, y)], "per_sample", per_sample_impl="layers")
    for n, v in want.items():
        torch.testing.assert_close(sums.tensors[n], v, rtol=1e-4, atol=1e-8, msg=n)
