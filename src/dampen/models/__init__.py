"""Reference models: ResNet18, a small ViT, an MLP, a small CNN, and a tiny GPT-2
(:func:`tiny_gpt2`, which imports the optional ``transformers`` only when called)."""

from __future__ import annotations

from typing import Any

from torch import nn

from dampen.models.cnn import SmallCNN
from dampen.models.gpt import tiny_gpt2
from dampen.models.mlp import MLP
from dampen.models.resnet import ResNet18
from dampen.models.vit import ViT

MODEL_NAMES: tuple[str, ...] = ("cnn", "mlp", "resnet18", "vit")
"""Names accepted by :func:`build_model`."""


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build a reference model by name for ``in_channels × image_size × image_size`` inputs.

    Args:
        name: one of ``"resnet18"``, ``"vit"``, ``"mlp"``, ``"cnn"``.
        num_classes: number of outputs.
        in_channels: image channels.
        image_size: side of the square input images (used by ``vit`` and ``mlp``).
        **kwargs: model-specific options, e.g. ``width`` for ResNet18, ``depth`` for ViT,
            ``hidden`` for the MLP, ``channels`` for the CNN.

    Raises:
        ValueError: if ``name`` is unknown.
        TypeError: if ``kwargs`` holds an option the model does not take.
    """
    key = name.lower().replace("-", "").replace("_", "")
    try:
        if key == "resnet18":
            return ResNet18(num_classes=num_classes, in_channels=in_channels, **kwargs)
        if key == "vit":
            return ViT(
                image_size=image_size, in_channels=in_channels, num_classes=num_classes, **kwargs
            )
        if key == "mlp":
            return MLP(in_channels * image_size * image_size, num_classes=num_classes, **kwargs)
        if key == "cnn":
            return SmallCNN(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        raise TypeError(f"build_model({name!r}): {exc}") from exc
    raise ValueError(f"name={name!r} is not a model; choose from {MODEL_NAMES}")


__all__ = ["MLP", "MODEL_NAMES", "ResNet18", "SmallCNN", "ViT", "build_model", "tiny_gpt2"]
