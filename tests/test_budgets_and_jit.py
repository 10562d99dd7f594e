"""Step budgets (``train_(steps=...)``, the baselines' ``steps``/``epochs`` configs), NegGrad+'s
forget-accuracy stop rule, and JiT (its Lipschitz loss against a per-sample oracle)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import dampen
from conftest import make_data as conv_data
from conftest import make_model as conv_model
from conftest import same_state, state_copy
from dampen.core.batches import default_forward
from dampen.methods._common import budget_of, check_budget
from dampen.methods.amnesiac import AmnesiacConfig
from dampen.methods.bad_teacher import BadTeacherConfig
from dampen.methods.finetune import FinetuneConfig
from dampen.methods.jit import JiTConfig, lipschitz_loss
from dampen.methods.neggrad import ForgetAccuracyStop, NegGradConfig
from dampen.methods.salun import SalUnConfig
from dampen.methods.scrub import ScrubConfig
from dampen.methods.training import train_
from dampen.methods.unsir import UNSIRConfig

# --------------------------------------------------------------------------- train_ budgets


class Counter:
    """A parameter ``p`` with ``loss = p`` under SGD lr 1: every optimiser step lowers it by
    exactly 1, so ``-p`` counts the steps; ``seen`` records the batches the loss was asked."""

    def __init__(self) -> None:
        self.model = nn.Module()
        self.model.p = nn.Parameter(torch.zeros(()))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.seen: list[int] = []
        self.modes: list[bool] = []

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        self.seen.append(int(batch))
        self.modes.append(model.training)
        return model.p * 1.0

    @property
    def optimiser_steps(self) -> int:
        return round(-float(self.model.p.detach()))


class PassCounter:
    """A stand-in scheduler counting its ``step`` calls."""

    def __init__(self) -> None:
        self.calls = 0

    def step(self) -> None:
        self.calls += 1


def test_steps_run_exactly_that_many_steps_across_passes() -> None:
    c, sched = Counter(), PassCounter()
    c.model.eval()
    log = train_(
        c.model, [0, 1, 2], steps=7, optimizer=c.optimizer, step_loss=c.loss, scheduler=sched
    )
    assert log.steps == 7
    assert c.optimiser_steps == 7
    assert c.seen == [0, 1, 2, 0, 1, 2, 0]  # the third pass is cut short after one batch
    assert len(log.epoch_losses) == 3 and sched.calls == 3  # one loss and scheduler step a pass
    assert all(c.modes) and not c.model.training  # trained in train mode, eval mode restored


def test_steps_shorter_than_one_pass_and_zero_steps() -> None:
    c = Counter()
    log = train_(c.model, [0, 1, 2, 3], steps=2, optimizer=c.optimizer, step_loss=c.loss)
    assert (log.steps, c.seen, c.optimiser_steps) == (2, [0, 1], 2)
    c = Counter()
    log = train_(c.model, [0, 1, 2], steps=0, optimizer=c.optimizer, step_loss=c.loss)
    assert (log.steps, c.seen, log.epoch_losses) == (0, [], ())


def test_epochs_still_make_full_passes() -> None:
    c = Counter()
    log = train_(c.model, [0, 1, 2], epochs=2, optimizer=c.optimizer, step_loss=c.loss)
    assert (log.steps, c.optimiser_steps, c.seen) == (6, 6, [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        ({}, "exactly one"),
        ({"epochs": 1, "steps": 1}, "exactly one"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"epochs": -1}, "epochs must be >= 0"),
    ],
)
def test_bad_budgets_are_refused(budget: dict[str, int], match: str) -> None:
    c = Counter()
    with pytest.raises(ValueError, match=match):
        train_(c.model, [0], optimizer=c.optimizer, step_loss=c.loss, **budget)
    assert c.seen == []


def test_empty_batches_with_steps_raise_instead_of_looping() -> None:
    c = Counter()
    with pytest.raises(ValueError, match="empty"):
        train_(c.model, [], steps=3, optimizer=c.optimizer, step_loss=c.loss)
    # No steps asked, or epochs: nothing to refuse.
    assert train_(c.model, [], steps=0, optimizer=c.optimizer, step_loss=c.loss).steps == 0
    assert train_(c.model, [], epochs=2, optimizer=c.optimizer, step_loss=c.loss).steps == 0


@pytest.mark.parametrize("budget", [{"steps": 100}, {"epochs": 50}])
def test_stop_ends_training_after_the_step_it_answers_true(budget: dict[str, int]) -> None:
    c = Counter()
    log = train_(
        c.model,
        [0, 1, 2],
        optimizer=c.optimizer,
        step_loss=c.loss,
        stop=lambda: len(c.seen) >= 4,
        **budget,
    )
    assert (log.steps, c.optimiser_steps, c.seen) == (4, 4, [0, 1, 2, 0])
    never = Counter()
    log = train_(
        never.model, [0, 1, 2], steps=8, optimizer=never.optimizer, step_loss=never.loss,
        stop=lambda: False,
    )  # fmt: skip
    assert log.steps == 8


# --------------------------------------------------------------------------- configs


STEP_CONFIGS = [
    (FinetuneConfig, 300),
    (AmnesiacConfig, 200),
    (BadTeacherConfig, 200),
    (SalUnConfig, 200),
    (NegGradConfig, 200),
]


@pytest.mark.parametrize(("config_cls", "default"), STEP_CONFIGS)
def test_configs_budget_in_steps_unless_epochs_are_set(config_cls: Any, default: int) -> None:
    assert config_cls().epochs is None
    assert budget_of(config_cls()) == {"steps": default}
    assert budget_of(config_cls(steps=7)) == {"steps": 7}
    assert budget_of(config_cls(epochs=3)) == {"epochs": 3}
    assert budget_of(config_cls(steps=7, epochs=2)) == {"epochs": 2}


@pytest.mark.parametrize(("config_cls", "default"), STEP_CONFIGS)
@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("steps", 0, ValueError),
        ("steps", -3, ValueError),
        ("steps", True, TypeError),
        ("steps", 1.5, TypeError),
        ("steps", None, TypeError),
        ("epochs", 0, ValueError),
        ("epochs", True, TypeError),
        ("epochs", 2.0, TypeError),
    ],
)
def test_configs_refuse_bad_budgets(
    config_cls: Any, default: int, field: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=field):
        config_cls(**{field: value})


def test_check_budget_directly() -> None:
    check_budget(1, None)
    check_budget(5, 2)
    with pytest.raises(ValueError, match="steps"):
        check_budget(0, None)
    with pytest.raises(TypeError, match="epochs"):
        check_budget(5, False)


def test_unsir_budget_per_phase() -> None:
    config = UNSIRConfig()
    assert UNSIRConfig.BUDGET_FIELDS == ("impair_steps", "repair_steps")
    assert (config.budget("impair"), config.budget("repair")) == ({"steps": 100}, {"steps": 100})
    config = UNSIRConfig(impair_steps=9, repair_steps=0, repair_epochs=2)
    assert (config.budget("impair"), config.budget("repair")) == ({"steps": 9}, {"epochs": 2})
    assert UNSIRConfig(impair_epochs=1).budget("impair") == {"epochs": 1}
    for bad in ({"impair_steps": 0}, {"repair_steps": -1}, {"impair_epochs": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            UNSIRConfig(**bad)
    with pytest.raises(TypeError, match="impair_steps"):
        UNSIRConfig(impair_steps=2.5)


@pytest.mark.parametrize(
    "bad", [{"optimizer": "bogus"}, {"impair_lr": -1.0}, {"repair_lr": 0.0}, {"momentum": 1.5}]
)
def test_unsir_still_checks_its_optimiser_settings(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        UNSIRConfig(**bad)


# ------------------------------------------------------------------ baselines honour budgets


def toy_task(sep: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """3 classes × 16 samples in 4-d; class 0 sits ``sep`` away from class 1 (easy to unlearn)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(16)
    centres = torch.tensor([[sep, 3.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    return torch.randn(len(y), 4, generator=g) * 0.3 + centres[y], y


def toy_model(x: Tensor | None = None, y: Tensor | None = None, seed: int = 0) -> nn.Module:
    """A small MLP, trained on ``(x, y)`` with 100 full-batch SGD steps when given."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    if x is not None and y is not None:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def toy_loaders(x: Tensor, y: Tensor, batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    """(forget = class 0, retain = the rest): 2 and 4 batches of 8."""
    f = y == 0
    return (
        DataLoader(TensorDataset(x[f], y[f]), batch_size=batch_size),
        DataLoader(TensorDataset(x[~f], y[~f]), batch_size=batch_size),
    )


def accuracy(model: nn.Module, batches: Any) -> float:
    with torch.no_grad():
        hits = torch.cat([model(x).argmax(dim=1) == y for x, y in batches])
    return float(hits.double().mean())


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("finetune", {}),
        ("amnesiac", {}),
        ("bad_teacher", {}),
        ("salun", {}),
        ("neggrad", {"stop_accuracy": None}),
        ("neggrad", {"plus": False, "stop_accuracy": None}),
    ],
)
def test_baselines_take_exactly_their_step_budget(method: str, options: dict[str, Any]) -> None:
    x, y = toy_task()
    forget, retain = toy_loaders(x, y)
    for steps in (5, 11):  # 11 is more than one pass over any of the streams
        result = dampen.unlearn(
            toy_model(), forget, method=method, retain=retain, seed=0, steps=steps, **options
        )
        assert result.stats["steps"] == steps


@pytest.mark.parametrize(
    ("method", "options", "per_pass"),
    [
        ("finetune", {}, 4),  # the 4 retain batches
        ("amnesiac", {}, 6),  # retain and forget batches mixed
        ("neggrad", {"stop_accuracy": None}, 4),  # NegGrad+: one pair per retain batch
        ("neggrad", {"plus": False, "stop_accuracy": None}, 2),  # plain ascent: Df
    ],
)
def test_epochs_override_makes_whole_passes(
    method: str, options: dict[str, Any], per_pass: int
) -> None:
    x, y = toy_task()
    forget, retain = toy_loaders(x, y)
    result = dampen.unlearn(
        toy_model(), forget, method=method, retain=retain, seed=0, epochs=2, steps=1, **options
    )
    assert result.stats["steps"] == 2 * per_pass


def test_unsir_phases_take_their_steps() -> None:
    x, y = toy_task()
    forget, retain = toy_loaders(x, y)
    cheap = {"noise_steps": 2, "noise_copies": 1}
    result = dampen.unlearn(
        toy_model(), forget, method="unsir", retain=retain, impair_steps=3, repair_steps=2, **cheap
    )
    assert result.stats["steps"] == 5
    assert len(result.stats["impair_losses"]) == 1 and len(result.stats["repair_losses"]) == 1
    result = dampen.unlearn(
        toy_model(), forget, method="unsir", retain=retain, impair_steps=9, repair_steps=0, **cheap
    )
    # 9 steps over the 4 retain + 1 noise batches: two passes; no repair at all.
    assert result.stats["steps"] == 9
    assert len(result.stats["impair_losses"]) == 2 and result.stats["repair_losses"] == []


def test_scrub_steps_are_split_over_epochs() -> None:
    assert ScrubConfig().steps == 300
    with pytest.raises(ValueError, match="steps"):
        ScrubConfig(steps=0)
    x, y = toy_task()
    forget, retain = toy_loaders(x, y)  # 2 forget batches, 4 retain batches
    common: dict[str, Any] = {"retain": retain, "seed": 0, "epochs": 2, "max_steps": 1}
    split = dampen.unlearn(toy_model(), forget, method="scrub", steps=10, **common)
    # One max pass over Df (2 steps), then 10 / 2 = 5 min steps per epoch (a pass and a bit).
    assert split.stats["steps"] == 2 + 5 + 5
    assert len(split.stats["max_losses"]) == 1 and len(split.stats["min_losses"]) == 4
    full = dampen.unlearn(toy_model(), forget, method="scrub", steps=None, **common)
    assert full.stats["steps"] == 2 + 4 + 4  # steps=None: one whole pass over Dr per epoch


# --------------------------------------------------------------------------- NegGrad+ stop rule


def logits_for(predicted: list[int], classes: int = 3) -> Tensor:
    """Logits whose argmax is ``predicted``."""
    return 5.0 * torch.eye(classes)[torch.tensor(predicted)]


def test_forget_accuracy_stop_waits_for_a_full_pass() -> None:
    stop = ForgetAccuracyStop(0.0, batches_per_pass=2)
    assert not stop()
    stop.record(logits_for([1, 2]), torch.tensor([0, 0]))  # 0 of 2 right
    assert not stop() and stop.stopped_at is None  # only half a pass seen
    stop.record(logits_for([1]), torch.tensor([0]))
    assert stop() and stop.stopped_at == 0.0


def test_forget_accuracy_stop_window_slides_over_the_latest_pass() -> None:
    stop = ForgetAccuracyStop(0.0, batches_per_pass=2)
    stop.record(logits_for([0, 0]), torch.tensor([0, 0]))  # right
    stop.record(logits_for([1, 1]), torch.tensor([0, 0]))  # wrong
    assert not stop()  # the pass has accuracy 0.5
    stop.record(logits_for([2, 2]), torch.tensor([0, 0]))  # the right batch leaves the window
    assert stop() and stop.stopped_at == 0.0


def test_forget_accuracy_stop_weighs_samples_not_batches() -> None:
    # 1 of 1 right, then 0 of 3: the pass accuracy is 1/4 (a mean of batch accuracies: 1/2).
    stop = ForgetAccuracyStop(0.3, batches_per_pass=2)
    stop.record(logits_for([0]), torch.tensor([0]))
    stop.record(logits_for([1, 1, 2]), torch.tensor([0, 0, 0]))
    assert stop() and stop.stopped_at == pytest.approx(0.25)
    exact = ForgetAccuracyStop(0.5, batches_per_pass=1)  # "at most" the threshold
    exact.record(logits_for([0, 1]), torch.tensor([0, 0]))
    assert exact()
    above = ForgetAccuracyStop(0.49, batches_per_pass=1)
    above.record(logits_for([0, 1]), torch.tensor([0, 0]))
    assert not above() and above.stopped_at is None


def test_forget_accuracy_stop_without_threshold_never_stops() -> None:
    stop = ForgetAccuracyStop(None, batches_per_pass=1)
    for _ in range(3):
        stop.record(logits_for([1, 1]), torch.tensor([0, 0]))
        assert not stop()
    assert stop.stopped_at is None


def test_neggrad_config_checks_stop_accuracy() -> None:
    config = NegGradConfig()
    assert (config.plus, config.stop_accuracy) == (True, 0.0)
    NegGradConfig(stop_accuracy=None)
    NegGradConfig(stop_accuracy=1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="stop_accuracy"):
            NegGradConfig(stop_accuracy=bad)


def test_neggrad_plus_default_stops_once_the_forget_class_is_gone() -> None:
    x, y = toy_task(sep=1.0)
    model = toy_model(x, y)
    forget, retain = toy_loaders(x, y)
    assert accuracy(model, forget) > 0.9
    result = dampen.unlearn(model, forget, method="neggrad", retain=retain, seed=0)
    budget = NegGradConfig().steps
    assert result.stats["stopped_early"] is True
    assert 2 <= result.stats["steps"] < budget / 4  # a full pass (2 batches) before any stop
    assert accuracy(result.model, forget) == 0.0
    assert accuracy(result.model, retain) > 0.9
    # Without the rule the same request runs its whole budget.
    never = dampen.unlearn(model, forget, method="neggrad", retain=retain, stop_accuracy=None)
    assert never.stats["stopped_early"] is False and never.stats["steps"] == budget


# --------------------------------------------------------------------------- JiT


class Flat(nn.Module):
    """Flatten, then a small MLP: the inputs are ``[n, 2, 3]``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def oracle_loss(
    model: nn.Module, x: Tensor, *, sigma: float, samples: int, seed: int, detach: bool = True
) -> tuple[Tensor, bool]:
    """(1/N) Σ_n Σ_i ‖f(x_i) − f(x'_i)‖₂ / ‖x_i − x'_i‖₂, one sample at a time; also whether
    the clamp changed anything."""
    g = torch.Generator().manual_seed(seed)
    low, high = x.min(), x.max()
    total = torch.zeros(())
    clamped = False
    for _ in range(samples):
        noise = torch.randn(x.shape, generator=g)
        raw = x + sigma * noise
        clamped = clamped or bool(((raw < low) | (raw > high)).any())
        noisy = torch.clamp(raw, low, high)
        for i in range(len(x)):
            clean_out = model(x[i : i + 1])[0]
            noisy_out = model(noisy[i : i + 1])[0]
            if detach:
                noisy_out = noisy_out.detach()
            out_dist = torch.sqrt(((clean_out - noisy_out) ** 2).sum())
            in_dist = math.sqrt(sum(float(d) ** 2 for d in (x[i] - noisy[i]).flatten()))
            total = total + out_dist / in_dist
    return total / samples, clamped


def grads(model: nn.Module, loss: Tensor) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    out = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return out


def test_lipschitz_loss_matches_a_per_sample_oracle() -> None:
    model = Flat().eval()
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    batch = (x, torch.zeros(5, dtype=torch.long))
    g = torch.Generator().manual_seed(7)
    loss = lipschitz_loss(model, batch, forward=default_forward, sigma=1.5, samples=4, generator=g)
    expected, clamped = oracle_loss(model, x, sigma=1.5, samples=4, seed=7)
    assert clamped  # σ = 1.5 pushes some noisy values past the batch range
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # Exactly 4 draws of x's shape were taken from the generator.
    after = torch.Generator().manual_seed(7)
    for _ in range(4):
        torch.randn(x.shape, generator=after)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=after))
    # Another seed draws other noise: another value.
    other = lipschitz_loss(
        model, batch, forward=default_forward, sigma=1.5, samples=4,
        generator=torch.Generator().manual_seed(8),
    )  # fmt: skip
    assert float(other.detach()) != pytest.approx(float(expected.detach()), rel=1e-3)


def test_lipschitz_gradient_flows_through_the_clean_outputs_only() -> None:
    model = Flat().eval()
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2))
    batch = (x, torch.zeros(4, dtype=torch.long))
    loss = lipschitz_loss(
        model, batch, forward=default_forward, sigma=0.5, samples=3,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    got = grads(model, loss)
    clean_only = grads(model, oracle_loss(model, x, sigma=0.5, samples=3, seed=5)[0])
    both = grads(model, oracle_loss(model, x, sigma=0.5, samples=3, seed=5, detach=False)[0])
    assert len(got) == len(clean_only) == 4
    for a, b in zip(got, clean_only, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # The check can tell: gradients through both outputs are different.
    assert not all(
        torch.allclose(a, b, rtol=1e-2, atol=1e-4) for a, b in zip(got, both, strict=True)
    )


def test_lipschitz_loss_is_zero_when_the_clamp_leaves_no_room() -> None:
    model = Flat().eval()
    x = torch.full((3, 2, 3), 0.25)  # min == max: every noisy copy is clamped back onto x
    loss = lipschitz_loss(
        model, (x, torch.zeros(3, dtype=torch.long)), forward=default_forward, sigma=1.0,
        samples=2, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0


def jit_forget() -> DataLoader:
    x, y = conv_data(16)
    return DataLoader(TensorDataset(x, y), batch_size=8)


JIT = {"lr": 0.05, "sigma": 0.5, "samples": 3}


def test_jit_is_seeded_leaves_the_caller_alone_and_keeps_batchnorm_stats() -> None:
    model = conv_model()
    before = state_copy(model)
    a = dampen.unlearn(model, jit_forget(), method="jit", seed=0, **JIT)
    b = dampen.unlearn(model, jit_forget(), method="jit", seed=0, **JIT)
    c = dampen.unlearn(model, jit_forget(), method="jit", seed=1, **JIT)
    assert same_state(model, before)  # not in place
    assert model.training  # and its mode is untouched
    assert a.method == "jit" and a.stats["steps"] == 2  # one step per forget batch
    assert same_state(b.model, state_copy(a.model))
    assert not same_state(c.model, state_copy(a.model))
    state = a.model.state_dict()
    assert not torch.equal(state["head.weight"], before["head.weight"])  # it did train
    for name in ("features.1.running_mean", "features.1.running_var"):
        assert torch.equal(state[name], before[name])  # eval mode: BatchNorm stats untouched
    assert int(state["features.1.num_batches_tracked"]) == int(
        before["features.1.num_batches_tracked"]
    )


def test_jit_epochs_and_config_checks() -> None:
    result = dampen.unlearn(conv_model(), jit_forget(), method="jit", epochs=3, **JIT)
    assert result.stats["steps"] == 6 and len(result.stats["epoch_losses"]) == 3
    for bad, error in (
        ({"sigma": 0.0}, ValueError),
        ({"samples": 0}, ValueError),
        ({"epochs": 0}, ValueError),
        ({"samples": 2.0}, TypeError),
        ({"optimizer": "lbfgs"}, ValueError),
    ):
        with pytest.raises(error, match=next(iter(bad))):
            JiTConfig(**bad)


def test_jit_refuses_dict_batches_clearly() -> None:
    x, y = conv_data(4)
    with pytest.raises(TypeError, match="jit perturbs input tensors.*dict"):
        dampen.unlearn(conv_model(), [{"x": x, "labels": y}], method="jit")


def test_jit_refuses_integer_inputs_clearly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 3))
    tokens = torch.randint(0, 10, (4, 2))
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        dampen.unlearn(model, [(tokens, torch.zeros(4, dtype=torch.long))], method="jit")


def test_paired_cycles_the_other_stream_across_passes() -> None:
    """Any len(other) consecutive partners are one whole pass over ``other``."""
    from dampen.methods._streams import Paired

    paired = Paired([10, 11, 12, 13], [0, 1, 2], other_name="forget set")
    partners = [p for _ in range(3) for _, p in paired]
    assert partners == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    for start in range(len(partners) - 2):
        assert sorted(partners[start : start + 3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="forget set is empty"):
        list(Paired([1], [], other_name="forget set"))


def test_the_stop_rule_is_off_without_a_forget_length() -> None:
    stop = ForgetAccuracyStop(0.0, None)
    stop.record(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    assert not stop()
