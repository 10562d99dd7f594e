"""Reference models: output shapes, argument checks and torch.func compatibility."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from dampen.models import MLP, MODEL_NAMES, ResNet18, SmallCNN, ViT, build_model

SMALL = {
    "resnet18": {"width": 4},
    "vit": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "patch_size": 4},
    "mlp": {"hidden": (16,)},
    "cnn": {"channels": (4, 8)},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32), (3, 8), (1, 32)])
def test_output_shapes(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size, **SMALL[name])
    x = torch.randn(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)


def test_defaults_match_the_reference_architectures() -> None:
    resnet = ResNet18(num_classes=10)
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules()) > 0
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in resnet.modules())
    assert isinstance(build_model("ResNet-18"), ResNet18)
    assert isinstance(build_model("cnn", in_channels=1), SmallCNN)
    assert isinstance(build_model("mlp", in_channels=1, image_size=8), MLP)
    vit = build_model("vit", image_size=32)
    assert isinstance(vit, ViT) and vit.pos_embed.shape == (1, 65, 128)


def test_argument_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="name='lenet'"):
        build_model("lenet")
    with pytest.raises(TypeError, match="build_model\\('cnn'\\).*depth"):
        build_model("cnn", depth=3)
    with pytest.raises(ValueError, match="width"):
        ResNet18(width=0)
    with pytest.raises(ValueError, match="patch_size"):
        ViT(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="heads"):
        ViT(dim=10, heads=3)
    with pytest.raises(ValueError, match="dropout"):
        MLP(4, dropout=1.0)
    with pytest.raises(ValueError, match="expected 8×8 images"):
        ViT(image_size=8, **SMALL["vit"])(torch.randn(1, 3, 16, 16))  # type: ignore[arg-type]


def test_vit_per_sample_gradients_match_a_loop() -> None:
    torch.manual_seed(0)
    model = ViT(
        image_size=8, in_channels=1, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8, patch_size=4
    ).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi[None],))
        return F.cross_entropy(logits, yi[None])

    batched = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(4):
        single = grad(loss)(params, x[i], y[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], single[k], rtol=1e-4, atol=1e-6)
