"""LPIPS (Zhang et al. 2018, v0.1), our own implementation: no torchvision, no ``lpips`` package.

d(a, b) = sum over taps k of mean over pixels of  w_k · (f̂_k(a) − f̂_k(b))²
where f_k are backbone activations (VGG16 after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, or AlexNet
after its five ReLUs), f̂ is f normalised to unit length over channels, and w_k ≥ 0 are the learned
1×1 "lin" weights. Inputs in [0, 1] are mapped to [−1, 1] and then shifted/scaled by the constants of
the reference implementation.

Weights: the backbone from torchvision's ImageNet files (``vgg16-397923af.pth`` /
``alexnet-owt-7be5be79.pth`` at download.pytorch.org; keys ``features.<i>.weight/bias``, the classifier
is ignored) and the lin layers from the ``lpips`` package's ``weights/v0.1/{vgg,alex}.pth`` (keys
``lin<k>.model.1.weight``, shape (1, C_k, 1, 1)); both read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.alignment.scorers import RewardWeightsMissing

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# (conv out channels or "M" for a 2x2 max-pool), the feature indices tapped (after these ReLUs)
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (3, 8, 15, 22, 29)
_ALEX_TAPS = (1, 4, 7, 9, 11)
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
MIN_SIZE = {"vgg": 32, "alex": 64}


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)  # indices match torchvision's vgg16().features up to relu5_3


def _alex_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
    )


class LPIPS(nn.Module):
    """``LPIPS(net)(a, b) -> (N,)`` perceptual distance of images in [0, 1]; frozen, differentiable.

    Args:
        net: "vgg" (the usual choice as a training loss) or "alex".
        min_size: images whose shorter side is smaller are upsampled (bilinear, aspect kept) to it first,
            so the deepest taps still see a few pixels (default 32 for VGG, 64 for AlexNet). 0 disables.
    A fresh module has random backbone weights and positive random lin weights (for tests); use
    :meth:`from_files` for the real ones.
    """

    def __init__(self, net: str = "vgg", min_size: int | None = None):
        super().__init__()
        if net not in CHANNELS:
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        self.features = _vgg_features() if net == "vgg" else _alex_features()
        self.taps = _VGG_TAPS if net == "vgg" else _ALEX_TAPS
        self.lins = nn.ParameterList([nn.Parameter(torch.rand(1, c, 1, 1) / c) for c in CHANNELS[net]])
        self.min_size = MIN_SIZE[net] if min_size is None else int(min_size)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):  # always eval
        return super().train(False)

    @classmethod
    def from_files(cls, backbone: Union[str, Path], lin: Union[str, Path], net: str = "vgg") -> LPIPS:
        """Loads torchvision backbone weights and LPIPS v0.1 lin weights (strict)."""
        model = cls(net)
        backbone, lin = Path(backbone), Path(lin)
        if not backbone.is_file():
            raise RewardWeightsMissing(
                f"LPIPS backbone weights not found: {backbone} (torchvision's {BACKBONE_FILES[net]}, from "
                f"https://download.pytorch.org/models/{BACKBONE_FILES[net]})"
            )
        if not lin.is_file():
            raise RewardWeightsMissing(
                f"LPIPS linear-layer weights not found: {lin} (the lpips package's lpips/weights/v0.1/{net}.pth)"
            )
        state = _read(backbone)
        wanted = {f"features.{k}" for k in model.features.state_dict()}
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        _check_keys(backbone, wanted, set(features), model.features.state_dict(), features, "features.")
        model.features.load_state_dict({k[len("features.") :]: v for k, v in features.items()})
        lins = _read(lin)
        wanted = {f"lin{k}.model.1.weight" for k in range(5)}
        expected = {f"lin{k}.model.1.weight": p for k, p in enumerate(model.lins)}
        _check_keys(lin, wanted, set(lins), expected, lins, "")
        with torch.no_grad():
            for k, param in enumerate(model.lins):
                param.copy_(lins[f"lin{k}.model.1.weight"])
        return model

    def activations(self, images: Tensor) -> list[Tensor]:
        x = (images * 2 - 1 - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                taps.append(x)
            if index >= self.taps[-1]:
                break
        return taps

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (N, 3, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        a, b = a.float(), b.float()
        short = min(a.shape[-2:])
        if self.min_size and short < self.min_size:
            factor = self.min_size / short
            size = (round(a.shape[-2] * factor), round(a.shape[-1] * factor))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        total = torch.zeros(a.shape[0], device=a.device)
        for fa, fb, weight in zip(self.activations(a), self.activations(b), self.lins):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((fa - fb).pow(2) * weight).sum(1).mean((1, 2))
        return total


def _read(path: Path) -> dict[str, Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read {path} as a torch state dict: {error}") from error
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return data


def _check_keys(path: Path, wanted: set, found: set, own: dict, state: dict, prefix: str) -> None:
    missing, unexpected = sorted(wanted - found), sorted(found - wanted)
    wrong = sorted(k for k in wanted & found if tuple(own[k[len(prefix) :]].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit LPIPS: missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}"
        )
