"""Differentiable Gaussian rasterization (gsplat on CUDA, pure PyTorch on the CPU).

Both backends follow gsplat 1.5's ``rasterization`` conventions: EWA projection with the tan-FoV
clipped Jacobian, 0.3 px^2 low-pass dilation, opacity-aware 3-sigma culling, alpha clamped at 0.999
and skipped below 1/255, front-to-back compositing by camera z stopping before the transmittance
reaches 1e-4, SH colours ``max(SH + 0.5, 0)`` and expected depth ("ED").

Usage::

    from engine.render import rasterize
    out = rasterize(scene, cameras, background=(1.0, 1.0, 1.0))
    out.rgb    # (V, H, W, 3)
    out.alpha  # (V, H, W)
    out.depth  # (V, H, W)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from engine.render.output import RenderOutput
from engine.scene import Cameras, GaussianScene

BACKENDS = ("auto", "torch", "gsplat")

__all__ = ["BACKENDS", "RenderOutput", "rasterize", "resolve_backend"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for a request: "auto" is gsplat on CUDA devices and torch elsewhere.

    Raises:
        ValueError: for an unknown backend name, or "gsplat" on a non-CUDA device.
    """
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError(f"rasterize: the gsplat backend needs the scene on a CUDA device, it is on {device}")
    return backend


def rasterize(
    scene: GaussianScene,
    cameras: Cameras,
    *,
    background: Optional[Union[Tensor, Sequence[float]]] = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backend: str = "auto",
) -> RenderOutput:
    """Renders N Gaussians from V cameras.

    Args:
        scene: the Gaussians; gradients flow to every parameter tensor.
        cameras: V cameras sharing one image size (moved to the scene's device and dtype).
        background: (3,) colour behind the Gaussians; None is black.
        near_plane, far_plane: Gaussians whose camera z lies outside [near, far] are culled.
        sh_degree: SH degree to evaluate (0..scene.sh_degree); None uses the scene's degree.
        backend: "auto" (gsplat if the scene is on CUDA, else torch), "torch" or "gsplat".

    Returns:
        RenderOutput with rgb (V, H, W, 3), alpha (V, H, W) and expected depth (V, H, W).
    """
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"rasterize: scene must be a GaussianScene, got {type(scene).__name__}")
    if not isinstance(cameras, Cameras):
        raise TypeError(f"rasterize: cameras must be a Cameras, got {type(cameras).__name__}")
    if not 0 < near_plane < far_plane:
        raise ValueError(f"rasterize: need 0 < near_plane < far_plane, got {near_plane} and {far_plane}")
    if sh_degree is None:
        sh_degree = scene.sh_degree
    if not 0 <= sh_degree <= scene.sh_degree:
        raise ValueError(f"rasterize: sh_degree must be in 0..{scene.sh_degree} for this scene, got {sh_degree}")
    background_color = _background_tensor(background, scene.dtype, scene.device)
    chosen = resolve_backend(backend, scene.device)

    if chosen == "gsplat":
        from engine.render.gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(scene, cameras, background_color, near_plane, far_plane, sh_degree)
    from engine.render.torch_backend import rasterize_torch

    return rasterize_torch(scene, cameras, background_color, near_plane, far_plane, sh_degree)


def _background_tensor(background, dtype: torch.dtype, device: torch.device) -> Tensor:
    """None / (3,) sequence / (3,) tensor -> (3,) tensor in the scene's dtype and device."""
    if background is None:
        return torch.zeros(3, dtype=dtype, device=device)
    color = torch.as_tensor(background, dtype=dtype, device=device)
    if color.shape != (3,):
        raise ValueError(f"rasterize: background must have shape (3,), got {tuple(color.shape)}")
    return color
