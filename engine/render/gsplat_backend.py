"""CUDA rasterization through ``gsplat.rasterization`` (gsplat >= 1.4), converted to RenderOutput.

gsplat takes activated parameters (unnormalised wxyz quaternions, linear scales, opacities in
(0, 1)), world-to-camera view matrices and SH coefficients (N, K, 3) with ``sh_degree`` set. With
``render_mode="RGB+ED"`` it returns (V, H, W, 4) = colour composited over the background plus the
expected depth (accumulated depth / max(alpha, 1e-10)), and alphas (V, H, W, 1).
"""

from __future__ import annotations

from torch import Tensor

from engine.render.output import RenderOutput
from engine.scene import Cameras, GaussianScene


def rasterize_gsplat(
    scene: GaussianScene,
    cameras: Cameras,
    background: Tensor,
    near_plane: float,
    far_plane: float,
    sh_degree: int,
) -> RenderOutput:
    """Renders with gsplat's CUDA kernels (the tensors must be on a CUDA device).

    Args:
        scene: N Gaussians.
        cameras: V cameras; moved to the scene's device and dtype.
        background: (3,) colour on the scene's device and dtype.
        near_plane, far_plane: camera-z culling range.
        sh_degree: SH degree to evaluate, at most ``scene.sh_degree``.
    """
    import gsplat  # imported here: loading it is slow and only CUDA runs need it

    dtype, device = scene.dtype, scene.device
    num_views = len(cameras)
    render, alphas, _meta = gsplat.rasterization(
        means=scene.means,
        quats=scene.rotations,
        scales=scene.scales,
        opacities=scene.opacities,
        colors=scene.sh,
        viewmats=cameras.world_to_camera.to(device=device, dtype=dtype),
        Ks=cameras.intrinsics.to(device=device, dtype=dtype),
        width=cameras.width,
        height=cameras.height,
        near_plane=near_plane,
        far_plane=far_plane,
        sh_degree=sh_degree,
        backgrounds=background.expand(num_views, 3),
        render_mode="RGB+ED",
        packed=True,  # gsplat's default: per-(camera, Gaussian) data only for visible pairs
    )
    expected = (num_views, cameras.height, cameras.width)
    if tuple(render.shape) != (*expected, 4) or tuple(alphas.shape) != (*expected, 1):
        raise RuntimeError(
            f"gsplat.rasterization returned colours {tuple(render.shape)} and alphas {tuple(alphas.shape)}, "
            f"expected {(*expected, 4)} and {(*expected, 1)}"
        )
    return RenderOutput(rgb=render[..., :3], alpha=alphas[..., 0], depth=render[..., 3])
