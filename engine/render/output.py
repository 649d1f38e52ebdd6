"""The result type shared by both rasterizer backends."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class RenderOutput:
    """Images rendered from V cameras.

    Attributes:
        rgb: (V, H, W, 3) colour composited over the background: ``sum_i w_i c_i + (1 - alpha) * bg``.
        alpha: (V, H, W) accumulated opacity ``1 - T`` (T = final transmittance).
        depth: (V, H, W) expected camera-z depth ``sum_i w_i z_i / alpha`` (gsplat's "ED"), 0 where
            alpha is 0.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
