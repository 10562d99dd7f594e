"""A small, fast CNN for 8×8 to 32×32 images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dampen.models._checks import positive_int


class SmallCNN(nn.Module):
    """Two convolutions with batch norm, then a linear head.

    ``conv-bn-relu-maxpool → conv-bn-relu → adaptive-avgpool(4) → linear``; works for any
    input of at least 8×8.

    Args:
        num_classes: number of outputs.
        in_channels: image channels.
        channels: output channels of the two convolutions.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, channels: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        if len(channels) != 2:
            raise ValueError(f"channels must hold two ints, got {channels!r}")
        c1, c2 = (positive_int("channels", c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(c2 * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.head(self.features(x).flatten(1))
