"""The main job on the embedded default: train on digits, store I_D, forget a class, compare."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import torch
from torch import nn

import dampen
from dampen.data.base import loader
from dampen.data.digits import load_digits
from dampen.data.scenarios import Scenario, full_class
from dampen.eval import evaluate
from dampen.methods.training import train_
from dampen.models.cnn import SmallCNN

BATCH = 64
HELDOUT = 100
"""Test samples of the retained classes handed to ``alpha="auto"`` as ``heldout=``."""


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo's table."""

    method: str
    retain_acc: float
    forget_acc: float
    test_acc: float
    forget_test_acc: float
    mia: float
    selected: int | None
    seconds: float


def _train(scenario: Scenario, indices: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    data = scenario.data
    model = SmallCNN(num_classes=data.num_classes, in_channels=data.train.in_channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batches = loader(data.train, indices, batch_size=BATCH, shuffle=True, seed=seed)
    train_(model, batches, epochs=epochs, optimizer=optimizer, desc="train")
    return model.eval()


def _row(
    method: str, model: nn.Module, scenario: Scenario, selected: int | None, seconds: float
) -> DemoRow:
    train, test = scenario.data.train, scenario.data.test
    splits = {
        "retain": loader(train, scenario.retain, batch_size=256),
        "forget": loader(train, scenario.forget, batch_size=256),
        "test": loader(test, scenario.retain_test[HELDOUT:], batch_size=256),
        "forget_test": loader(test, scenario.forget_test, batch_size=256),
    }
    report = evaluate(model, splits)
    return DemoRow(
        method,
        report.retain_acc,
        report.forget_acc,
        report.test_acc,
        report.forget_test_acc or 0.0,
        report.mia,
        selected,
        seconds,
    )


def run_demo(
    forget_class: int = 0, *, seed: int = 0, epochs: int = 20, out_dir: Path | None = None
) -> list[DemoRow]:
    """Train a small CNN on digits, store its importance and forget ``forget_class``.

    Returns the table's rows: the original, a model retrained without the class, SSD (paper
    α=10, λ=1) with the stored importance, SSD computing the importance on the fly, ASSD, and
    SSD with ``alpha="auto"`` (the default), without and with ``heldout=`` (the first
    :data:`HELDOUT` test samples of the other classes, left out of every row's test column).
    """
    scenario = full_class(load_digits(), forget_class)
    train = scenario.data.train
    rows: list[DemoRow] = []

    t = perf_counter()
    original = _train(scenario, torch.arange(len(train)), seed, epochs)
    rows.append(_row("original", original, scenario, None, perf_counter() - t))

    t = perf_counter()
    retrained = _train(scenario, scenario.retain, seed, epochs)
    rows.append(_row("retrain", retrained, scenario, None, perf_counter() - t))

    with ExitStack() as stack:
        folder = out_dir
        if folder is None:  # a temporary folder, removed when the requests are done
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dampen-demo-")))
        rows += _requests(original, scenario, Path(folder), temporary=out_dir is None)
    return rows


def _requests(
    original: nn.Module, scenario: Scenario, folder: Path, *, temporary: bool
) -> list[DemoRow]:
    """The SSD-family rows, after storing the importance of D in ``folder``."""
    train = scenario.data.train
    rows: list[DemoRow] = []
    # Stored once, right after training: every later request only passes over the forget set.
    t = perf_counter()
    imp = dampen.importance(original, loader(train, batch_size=BATCH))
    path = imp.save(folder / "digits-cnn.importance.safetensors")
    store_seconds = perf_counter() - t
    imp = dampen.Importance.load(path, model=original)

    forget = loader(train, scenario.forget, batch_size=BATCH)
    ssd = dampen.unlearn(original, forget, method="ssd", importance=imp, alpha=10.0, lambda_=1.0)
    rows.append(_ssd_row("SSD (stored I_D)", ssd, scenario))
    fly = dampen.unlearn(
        original, forget, method="ssd", train=loader(train, batch_size=BATCH), alpha=10.0
    )
    rows.append(_ssd_row("SSD (I_D on the fly)", fly, scenario))
    assd = dampen.unlearn(original, forget, method="assd", importance=imp)
    rows.append(_ssd_row("ASSD (stored I_D)", assd, scenario))
    auto = dampen.unlearn(original, forget, method="ssd", importance=imp)  # alpha="auto"
    rows.append(_ssd_row("SSD auto (stored I_D)", auto, scenario))
    heldout = loader(scenario.data.test, scenario.retain_test[:HELDOUT], batch_size=BATCH)
    guarded = dampen.unlearn(original, forget, method="ssd", importance=imp, heldout=heldout)
    rows.append(_ssd_row("SSD auto + heldout", guarded, scenario))
    where = f"{path} (a temporary folder; --out DIR keeps it)" if temporary else f"{path}"
    print(f"importance of D computed and stored in {store_seconds:.2f}s at {where}")
    return rows


def _ssd_row(name: str, result: dampen.UnlearnResult, scenario: Scenario) -> DemoRow:
    seconds = result.stats["seconds"]["total"]
    return _row(name, result.model, scenario, result.stats["selected"], seconds)


def format_table(rows: list[DemoRow]) -> str:
    """A plain-text table of the demo's rows."""
    head = (
        f"{'method':<22}{'Dr acc':>8}{'Df acc':>8}{'test':>8}{'Df-test':>9}{'MIA':>7}"
        f"{'selected':>10}{'seconds':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        selected = "-" if r.selected is None else f"{r.selected:,}"
        lines.append(
            f"{r.method:<22}{r.retain_acc:>8.3f}{r.forget_acc:>8.3f}{r.test_acc:>8.3f}"
            f"{r.forget_test_acc:>9.3f}{r.mia:>7.3f}{selected:>10}{r.seconds:>9.3f}"
        )
    return "\n".join(lines)
