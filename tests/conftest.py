"""Tiny CPU models and data shared by the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# The models here are tiny: one thread is as fast, and immune to a busy machine's other load.
torch.set_num_threads(1)


class TinyConvNet(nn.Module):
    """Conv + BatchNorm + dropout + linear head on 1×6×6 inputs: every layer kind SSD meets."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def make_data(n: int = 24, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y


def make_model(seed: int = 0, classes: int = 3) -> TinyConvNet:
    torch.manual_seed(seed)
    model = TinyConvNet(classes)
    # Non-trivial running statistics, so that eval mode visibly differs from train mode.
    x, _ = make_data(32, classes, seed + 1)
    model.train()
    with torch.no_grad():
        model(x)
    return model


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


@pytest.fixture
def model() -> TinyConvNet:
    return make_model()


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data()


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
