"""LPIPS (Zhang et al. 2018, v0.1), our own implementation: no torchvision, no ``lpips`` package.

d(a, b) = sum over taps k of mean over pixels of  w_k · (f̂_k(a) − f̂_k(b))²
where f_k are backbone activations (VGG16 after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, or AlexNet
after its five ReLUs), f̂ is f normalised to unit length over channels, and w_k ≥ 0 are the learned
1×1 "lin" weights. Inputs in [0, 1] are mapped to [−1, 1] and then shifted/scaled by the constants of
the reference implementation.

Weights: the backbone from torchvision's ImageNet files (``vgg16-397923af.pth`` /
``alexnet-owt-7be5be79.pth`` at download.pytorch.org; keys ``features.<i>.weight/bias``, the classifier
is ignored) and the lin layers from the ``lpips`` package's ``weights/v0.1/{vgg,alex}.pth`` (keys
``lin<k>.model.1.weight``, shape (1, C_k, 1, 1)); both read with safetensors or
``torch.load(weights_only=True)``.

Small inputs: by default images whose shorter side is under 32 px (VGG) or 64 px (AlexNet) are first
upsampled bilinearly, aspect kept, so the deepest tap still has at least 2×2 (VGG, after 4 max-pools)
or 3×3 (AlexNet) pixels; a 16 px image is compared at 32 px. ``min_size=0`` turns this off (the
reference implementation has no resize; it then fails below 16 px for VGG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.alignment.scorers import RewardWeightsMissing
from engine.models.checkpoint import read_state_dict

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
    :meth:`from_files` for the real ones. The weights are frozen and the module stays in eval mode.
    """

    def __init__(self, net: str = "vgg", min_size: int | None = None):
        super().__init__()
        if net not in CHANNELS:
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        self.features = _vgg_features() if net == "vgg" else _alex_features()
        self.taps = _VGG_TAPS if net == "vgg" else _ALEX_TAPS
        self.lins = nn.ParameterList([nn.Parameter((torch.rand(1, c, 1, 1) + 0.1) / c) for c in CHANNELS[net]])
        self.min_size = MIN_SIZE[net] if min_size is None else int(min_size)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):  # always eval
        return super().train(False)

    @classmethod
    def from_files(
        cls, backbone: Union[str, Path], lin: Union[str, Path], net: str = "vgg", min_size: int | None = None
    ) -> LPIPS:
        """Loads torchvision backbone weights and LPIPS v0.1 lin weights, strictly.

        Args:
            backbone: torchvision's ``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth`` (or the same
                keys in another file); ``classifier.*`` keys are ignored.
            lin: the lpips package's ``weights/v0.1/{vgg,alex}.pth``.
            net, min_size: as for the constructor.
        Raises:
            RewardWeightsMissing: a file does not exist (the message says where it comes from).
            ValueError: missing, unexpected or mis-shaped keys (named), or an unreadable file.
        """
        model = cls(net, min_size)
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
        state = read_state_dict(backbone)
        wanted = {f"features.{k}" for k in model.features.state_dict()}
        # torchvision's files also hold the classifier (and an empty avgpool): not used here
        features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _check_keys(backbone, wanted, set(features), model.features.state_dict(), features, "features.")
        with torch.no_grad():
            for key, param in model.features.state_dict(keep_vars=True).items():
                param.copy_(features[f"features.{key}"])
        lins = read_state_dict(lin)
        wanted = {f"lin{k}.model.1.weight" for k in range(5)}
        expected = {f"lin{k}.model.1.weight": p for k, p in enumerate(model.lins)}
        _check_keys(lin, wanted, set(lins), expected, lins, "")
        with torch.no_grad():
            for k, param in enumerate(model.lins):
                param.copy_(lins[f"lin{k}.model.1.weight"])
        return model

    def activations(self, images: Tensor) -> list[Tensor]:
        """The five tapped backbone activations of images in [0, 1] (no resize here)."""
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
        """(N,) float32 distances between images ``a`` and ``b`` (N, 3, H, W) in [0, 1]."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (N, 3, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if not (a.is_floating_point() and b.is_floating_point()):
            raise ValueError(f"LPIPS needs floating-point images in [0, 1], got {a.dtype} and {b.dtype}")
        dtype = self.lins[0].dtype
        x = torch.cat([a, b]).to(dtype)  # one backbone pass for both
        short = min(x.shape[-2:])
        if self.min_size and short < self.min_size:
            factor = self.min_size / short
            size = (round(x.shape[-2] * factor), round(x.shape[-1] * factor))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        n = a.shape[0]
        total = torch.zeros(n, device=x.device, dtype=torch.float32)
        for feature, weight in zip(self.activations(x), self.lins):
            unit = feature / (feature.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((unit[:n] - unit[n:]).pow(2), weight).mean((1, 2, 3)).float()
        return total


def _check_keys(path: Path, wanted: set, found: set, own: dict, state: dict, prefix: str) -> None:
    missing, unexpected = sorted(wanted - found), sorted(found - wanted)
    wrong = sorted(k for k in wanted & found if tuple(own[k[len(prefix) :]].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit LPIPS: missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}"
        )
