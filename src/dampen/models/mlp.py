"""A multi-layer perceptron over flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dampen.models._checks import positive_int


class MLP(nn.Module):
    """``flatten → (linear → relu → dropout) × len(hidden) → linear``.

    Args:
        in_features: size of a flattened input.
        num_classes: number of outputs.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 10,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("num_classes", num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, positive_int("hidden", h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits ``[N, num_classes]``."""
        return self.net(x)
