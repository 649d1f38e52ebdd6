"""LPIPS: the distance against a hand computation, its properties, and loading torchvision-format files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.alignment.lpips import LPIPS
from engine.alignment.scorers import RewardWeightsMissing


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return LPIPS("vgg")


def _hand_lpips(model: LPIPS, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS written out from its definition, with the module's weights."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    xa, xb = (a * 2 - 1 - shift) / scale, (b * 2 - 1 - shift) / scale
    total = torch.zeros(a.shape[0])
    tap = 0
    for index, layer in enumerate(model.features):
        xa, xb = layer(xa), layer(xb)
        if index in model.taps:
            na = xa / (xa.norm(dim=1, keepdim=True) + 1e-10)
            nb = xb / (xb.norm(dim=1, keepdim=True) + 1e-10)
            total += F.conv2d((na - nb) ** 2, model.lins[tap]).mean((1, 2, 3))
            tap += 1
    assert tap == 5
    return total


def test_distance_matches_the_definition_and_its_properties(vgg):
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 48, 40, generator=g), torch.rand(2, 3, 48, 40, generator=g)
    distance = vgg(a, b)
    assert distance.shape == (2,) and (distance > 0).all()
    assert torch.allclose(distance, _hand_lpips(vgg, a, b), rtol=1e-5, atol=1e-7)
    assert torch.allclose(vgg(b, a), distance, rtol=1e-5)
    assert torch.equal(vgg(a, a), torch.zeros(2))
    near = (a + 0.01 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (vgg(a, near) < distance).all()


def test_alexnet_distance_matches_the_definition():
    torch.manual_seed(3)
    alex = LPIPS("alex")
    assert [m.out_channels for m in alex.features if isinstance(m, torch.nn.Conv2d)] == [64, 192, 384, 256, 256]
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 3, 64, 72, generator=g), torch.rand(2, 3, 64, 72, generator=g)
    assert torch.allclose(alex(a, b), _hand_lpips(alex, a, b), rtol=1e-5, atol=1e-7)
    assert torch.equal(alex(b, b), torch.zeros(2))


def test_bad_inputs_are_refused(vgg):
    with pytest.raises(ValueError, match="one shape"):
        vgg(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="floating-point"):
        vgg(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        LPIPS("squeeze")


def test_gradients_reach_both_inputs_and_not_the_weights(vgg):
    a = torch.rand(1, 3, 32, 32, requires_grad=True)
    b = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def test_small_images_are_upsampled_to_the_minimum_size(vgg):
    a, b = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    up = lambda x: F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)  # noqa: E731
    assert torch.allclose(vgg(a, b), _hand_lpips(vgg, up(a), up(b)), rtol=1e-5)
    plain = LPIPS("vgg", min_size=0)
    plain.load_state_dict(vgg.state_dict())
    assert torch.allclose(plain(a, b), _hand_lpips(vgg, a, b), rtol=1e-5)  # no resize: 1×1 at relu5_3


@pytest.mark.parametrize(
    "net, convs", [("vgg", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)), ("alex", (0, 3, 6, 8, 10))]
)
def test_loads_torchvision_backbones_and_lpips_lin_files(tmp_path, net, convs):
    torch.manual_seed(2)
    source = LPIPS(net)
    backbone = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    assert sorted({int(k.split(".")[1]) for k in backbone}) == list(convs)  # torchvision's layer indices
    backbone["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files also hold the classifier
    lins = {f"lin{k}.model.1.weight": p.detach().clone() for k, p in enumerate(source.lins)}
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(lins, tmp_path / "lin.pth")
    loaded = LPIPS.from_files(tmp_path / "backbone.pth", tmp_path / "lin.pth", net=net)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded(a, b), source(a, b))

    with pytest.raises(RewardWeightsMissing, match="vgg16-397923af.pth|alexnet-owt"):
        LPIPS.from_files(tmp_path / "absent.pth", tmp_path / "lin.pth", net=net)
    with pytest.raises(RewardWeightsMissing, match=f"absent.pth.*lpips/weights/v0.1/{net}.pth"):
        LPIPS.from_files(tmp_path / "backbone.pth", tmp_path / "absent.pth", net=net)
    del lins["lin4.model.1.weight"]
    torch.save(lins, tmp_path / "lin_short.pth")
    with pytest.raises(ValueError, match="lin4.model.1.weight"):
        LPIPS.from_files(tmp_path / "backbone.pth", tmp_path / "lin_short.pth", net=net)
    for extra in ("features.99.weight", "fc.weight"):  # unexpected keys (the classifier alone is ignored)
        torch.save({**backbone, extra: torch.zeros(1)}, tmp_path / "extra.pth")
        with pytest.raises(ValueError, match=f"unexpected.*{extra}"):
            LPIPS.from_files(tmp_path / "extra.pth", tmp_path / "lin.pth", net=net)
    backbone[f"features.{convs[-1]}.weight"] = torch.zeros(3, 3)
    torch.save(backbone, tmp_path / "bad_backbone.pth")
    with pytest.raises(ValueError, match=f"features.{convs[-1]}.weight"):
        LPIPS.from_files(tmp_path / "bad_backbone.pth", tmp_path / "lin.pth", net=net)
