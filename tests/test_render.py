"""The pure-PyTorch rasterizer against an independent brute-force reference, known answers, gradients.

The reference below shares no code with engine.render: it builds rotations by rotating the basis
vectors with quaternion products, gets the projection Jacobian from autograd, evaluates SH with
the recurrence-style (Sloan) polynomials gsplat's CUDA code uses, and composites every pixel
against every Gaussian with gsplat's sequential loop (skip alpha < 1/255, stop before T <= 1e-4).
"""

from __future__ import annotations

import math

import pytest
import torch

import engine.render.torch_backend as torch_backend
from engine.geometry.cameras import look_at
from engine.render import RenderOutput, rasterize
from engine.scene import Cameras, GaussianScene

# --------------------------------------------------------------------------- reference renderer


def _quat_mul(p, q):
    pw, px, py, pz = p
    qw, qx, qy, qz = q
    return (
        pw * qw - px * qx - py * qy - pz * qz,
        pw * qx + px * qw + py * qz - pz * qy,
        pw * qy - px * qz + py * qw + pz * qx,
        pw * qz + px * qy - py * qx + pz * qw,
    )


def _ref_rotation(quat):
    """Columns = images of the basis vectors under v -> q v q*."""
    q = quat / quat.norm()
    conj = (q[0], -q[1], -q[2], -q[3])
    cols = []
    for axis in range(3):
        v = [0.0, 0.0, 0.0]
        v[axis] = 1.0
        rotated = _quat_mul(_quat_mul(tuple(q), (0.0, *v)), conj)
        cols.append(torch.stack([torch.as_tensor(c, dtype=quat.dtype) for c in rotated[1:]]))
    return torch.stack(cols, dim=1)


def _ref_sh(coeffs, direction, degree):
    """gsplat-style (Sloan 2013) evaluation; coeffs (K, 3), direction (3,)."""
    x, y, z = (direction / direction.norm()).tolist()
    basis = [0.2820947917738781]
    if degree >= 1:
        basis += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        t0 = -1.092548430592079 * z
        c1, s1 = x * x - y * y, 2 * x * y
        basis += [0.5462742152960395 * s1, t0 * y, 0.9461746957575601 * z2 - 0.3153915652525201, t0 * x]
        basis += [0.5462742152960395 * c1]
    if degree >= 3:
        t0c = -2.285228997322329 * z2 + 0.4570457994644658
        t1b = 1.445305721320277 * z
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        basis += [
            -0.5900435899266435 * s2,
            t1b * s1,
            t0c * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            t0c * x,
            t1b * c1,
            -0.5900435899266435 * c2,
        ]
    basis = torch.tensor(basis, dtype=coeffs.dtype)
    return torch.clamp_min(basis @ coeffs[: len(basis)] + 0.5, 0.0)


def reference_render(scene, cameras, background=None, near=0.01, far=1e10, degree=None):
    """Dense per-pixel gsplat semantics, float64. Returns rgb (V,H,W,3), alpha (V,H,W), depth (V,H,W)."""
    scene = scene.detach().to(dtype=torch.float64)
    degree = scene.sh_degree if degree is None else degree
    bg = torch.zeros(3, dtype=torch.float64) if background is None else torch.as_tensor(background).double()
    width, height = cameras.width, cameras.height
    vs, us = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([us.flatten() + 0.5, vs.flatten() + 0.5], dim=1).double()  # (P, 2)
    rgbs, alphas, depths = [], [], []
    for c2w, K in zip(cameras.camera_to_world.double(), cameras.intrinsics.double()):
        w2c = torch.linalg.inv(c2w)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]

        def project(p, fx=fx, fy=fy, cx=cx, cy=cy):
            return torch.stack([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])

        lim_x = (cx / fx + 0.3 * 0.5 * width / fx, (width - cx) / fx + 0.3 * 0.5 * width / fx)
        lim_y = (cy / fy + 0.3 * 0.5 * height / fy, (height - cy) / fy + 0.3 * 0.5 * height / fy)
        splats = []
        for i in range(len(scene)):
            p = w2c[:3, :3] @ scene.means[i] + w2c[:3, 3]
            z = p[2]
            if not near <= z <= far:
                continue
            rot = _ref_rotation(scene.rotations[i])
            cov = rot @ torch.diag(scene.log_scales[i].exp() ** 2) @ rot.T
            cov_cam = w2c[:3, :3] @ cov @ w2c[:3, :3].T
            clipped = torch.stack(
                [z * (p[0] / z).clamp(-lim_x[0], lim_x[1]), z * (p[1] / z).clamp(-lim_y[0], lim_y[1]), z]
            )
            jac = torch.autograd.functional.jacobian(project, clipped)
            cov2 = jac @ cov_cam @ jac.T + 0.3 * torch.eye(2, dtype=torch.float64)
            color = _ref_sh(scene.sh[i], scene.means[i] - c2w[:3, 3], degree)
            splats.append(
                (z.item(), i, project(p), torch.linalg.inv(cov2), torch.sigmoid(scene.opacity_logits[i]), color)
            )
        splats.sort(key=lambda s: (s[0], s[1]))

        trans = torch.ones(len(pix), dtype=torch.float64)
        done = torch.zeros(len(pix), dtype=torch.bool)
        color_sum = torch.zeros(len(pix), 3, dtype=torch.float64)
        depth_sum = torch.zeros(len(pix), dtype=torch.float64)
        for z, _, mean2d, conic, opacity, color in splats:
            d = mean2d[None] - pix
            power = 0.5 * torch.einsum("pi,ij,pj->p", d, conic, d)
            alpha = torch.clamp_max(opacity * torch.exp(-power), 0.999)
            active = ~done & (power >= 0) & (alpha >= 1 / 255)
            next_trans = trans * (1 - alpha)
            stop = active & (next_trans <= 1e-4)
            done |= stop
            use = active & ~stop
            weight = torch.where(use, alpha * trans, torch.zeros_like(alpha))
            color_sum += weight[:, None] * color
            depth_sum += weight * z
            trans = torch.where(use, next_trans, trans)
        alpha_img = 1 - trans
        rgbs.append((color_sum + trans[:, None] * bg).reshape(height, width, 3))
        alphas.append(alpha_img.reshape(height, width))
        depths.append((depth_sum / alpha_img.clamp_min(1e-10)).reshape(height, width))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


# --------------------------------------------------------------------------- scene builders


def random_scene(n, degree, seed, dtype=torch.float64, spread=1.5, log_scale=-2.0):
    """Gaussians around the origin, some elongated, a few in odd places (near plane, far off-axis)."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen, dtype=dtype) * 2 - 1) * spread
    log_scales = log_scale + torch.randn(n, 3, generator=gen, dtype=dtype) * 0.7
    sh = torch.randn(n, (degree + 1) ** 2, 3, generator=gen, dtype=dtype) * 0.4
    return GaussianScene(
        means=means,
        rotations=torch.randn(n, 4, generator=gen, dtype=dtype),
        log_scales=log_scales,
        opacity_logits=torch.randn(n, generator=gen, dtype=dtype) * 1.5 + 0.5,
        sh=sh,
    )


def orbit_cameras(num_views, width, height, dtype=torch.float64, distance=4.0, fov_deg=50.0, seed=0):
    """Cameras looking at the origin from a ring, with slightly off-centre principal points and fx != fy."""
    gen = torch.Generator().manual_seed(seed)
    angles = torch.linspace(0, 2 * math.pi, num_views + 1, dtype=dtype)[:-1] + 0.3
    eye = torch.stack([distance * torch.sin(angles), -0.8 * torch.ones_like(angles), -distance * torch.cos(angles)], 1)
    c2w = look_at(eye, torch.zeros(3, dtype=dtype), torch.tensor([0.0, -1.0, 0.0], dtype=dtype))
    K = Cameras.intrinsics_from_fov(math.radians(fov_deg), width, height).to(dtype).repeat(num_views, 1, 1)
    K[:, 1, 1] *= 1.1
    K[:, 0, 2] += torch.rand(num_views, generator=gen, dtype=dtype) * 4 - 2
    K[:, 1, 2] += torch.rand(num_views, generator=gen, dtype=dtype) * 4 - 2
    return Cameras(c2w, K, width, height)


def single_camera(width=33, height=27, focal=40.0, dtype=torch.float64):
    """Identity pose (camera at origin looking down +z), centred principal point."""
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype)[None], K[None], width, height)


def gaussians(means, scales, opacities, colors, dtype=torch.float64):
    """Isotropic degree-0 Gaussians from plain lists."""
    means = torch.tensor(means, dtype=dtype)
    n = len(means)
    colors = torch.tensor(colors, dtype=dtype)
    return GaussianScene.from_activated(
        means,
        torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype),
        torch.tensor(scales, dtype=dtype)[:, None].expand(n, 3).clone(),
        torch.tensor(opacities, dtype=dtype),
        ((colors - 0.5) / 0.28209479177387814)[:, None, :],
    )


def assert_matches_reference(out: RenderOutput, ref, atol=1e-4):
    rgb, alpha, depth = ref
    assert out.rgb.shape == rgb.shape and out.alpha.shape == alpha.shape and out.depth.shape == depth.shape
    assert (out.rgb.double() - rgb).abs().max() < atol
    assert (out.alpha.double() - alpha).abs().max() < atol
    assert (out.depth.double() - depth).abs().max() < atol * max(1.0, depth.abs().max().item())


# --------------------------------------------------------------------------- tests against the reference


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_matches_reference_random_scenes(degree):
    scene = random_scene(40, degree, seed=degree)
    cameras = orbit_cameras(2, 37, 29, seed=degree)
    out = rasterize(scene, cameras, backend="torch")
    ref = reference_render(scene, cameras)
    assert ref[1].max() > 0.9 and (ref[1] == 0).any()  # the scene covers part of the image, opaquely
    assert_matches_reference(out, ref)


def test_matches_reference_with_background_lower_sh_degree_and_near_culling():
    scene = random_scene(50, 3, seed=11, spread=2.0)
    cameras = orbit_cameras(2, 30, 34, distance=2.5, seed=5)
    background = (0.2, 0.5, 0.9)
    out = rasterize(scene, cameras, background=background, near_plane=1.5, sh_degree=2, backend="torch")
    ref = reference_render(scene, cameras, background=background, near=1.5, degree=2)
    # Near culling must matter in this setup, or the test would not test it.
    assert (ref[0] - reference_render(scene, cameras, background=background, near=0.01, degree=2)[0]).abs().max() > 0.05
    assert_matches_reference(out, ref)


def test_matches_reference_far_plane_dense_opaque_and_large_off_screen_gaussians():
    """Many opaque layers (early termination), Gaussians far outside the view whose tails reach in
    (FoV-clipped Jacobian), and a far plane that removes the back ones."""
    gen = torch.Generator().manual_seed(3)
    n = 60
    means = torch.cat(
        [torch.randn(n - 4, 3, generator=gen, dtype=torch.float64) * 0.3, torch.zeros(4, 3, dtype=torch.float64)]
    )
    means[:, 2] += 3.0
    means[-4:] = torch.tensor(
        [[4.0, 0.0, 2.0], [-5.0, 0.5, 3.0], [0.3, 3.5, 2.5], [0.0, -0.5, 9.0]], dtype=torch.float64
    )
    log_scales = torch.full((n, 3), -1.5, dtype=torch.float64)
    log_scales[-4:-1] = torch.tensor([0.2, 0.2, -1.0], dtype=torch.float64)
    scene = GaussianScene(
        means=means,
        rotations=torch.randn(n, 4, generator=gen, dtype=torch.float64),
        log_scales=log_scales,
        opacity_logits=torch.full((n,), 4.0, dtype=torch.float64),
        sh=torch.randn(n, 4, 3, generator=gen, dtype=torch.float64) * 0.5,
    )
    cameras = single_camera(41, 35)
    out = rasterize(scene, cameras, far_plane=8.0, backend="torch")
    ref = reference_render(scene, cameras, far=8.0)
    assert ref[1].max() > 0.999  # some pixels hit the transmittance cut
    assert_matches_reference(out, ref)


@pytest.fixture
def tiny_segments(monkeypatch):
    """Forces many short segments and small chunks so that every list walk spans several of them."""
    monkeypatch.setattr(torch_backend, "SEGMENT_LENGTH", 3)
    monkeypatch.setattr(torch_backend, "TILES_PER_CHUNK", 5)


def test_matches_reference_with_many_segments_and_early_finished_tiles(tiny_segments):
    """Long per-tile lists of opaque Gaussians: tiles finish (all pixels cut) part-way through."""
    gen = torch.Generator().manual_seed(9)
    n = 90
    means = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.5, 0.4, 0.8], dtype=torch.float64)
    means[:, 2] += 3.0
    scene = GaussianScene(
        means=means,
        rotations=torch.randn(n, 4, generator=gen, dtype=torch.float64),
        log_scales=torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.5 - 1.6,
        opacity_logits=torch.randn(n, generator=gen, dtype=torch.float64) * 2 + 3,
        sh=torch.randn(n, 4, 3, generator=gen, dtype=torch.float64) * 0.5,
    )
    cameras = single_camera(19, 14, focal=20.0)
    out = rasterize(scene, cameras, background=(0.5, 0.5, 0.5), backend="torch")
    ref = reference_render(scene, cameras, background=(0.5, 0.5, 0.5))
    assert (ref[1] > 0.999).float().mean() > 0.3  # T < 1e-3: much of the image is at or near the cut
    assert_matches_reference(out, ref)


def test_float32_matches_reference():
    scene = random_scene(30, 2, seed=7).to(dtype=torch.float32)
    cameras = orbit_cameras(1, 32, 32, seed=7).to(dtype=torch.float32)
    out = rasterize(scene, cameras, backend="torch")
    assert out.rgb.dtype == torch.float32
    assert_matches_reference(out, reference_render(scene, cameras), atol=2e-4)


# --------------------------------------------------------------------------- known answers


def test_single_centred_gaussian_peak():
    cameras = single_camera(33, 27)
    # The principal point (16.5, 13.5) is the centre of pixel (16, 13).
    for opacity in (0.6, 0.9995):
        scene = gaussians([[0.0, 0.0, 3.0]], [0.05], [opacity], [[0.8, 0.3, 0.1]])
        out = rasterize(scene, cameras, background=(0.0, 0.0, 1.0), backend="torch")
        expected_alpha = min(0.999, opacity)  # gsplat 1.5 clamps at 0.999
        assert out.alpha[0, 13, 16].item() == pytest.approx(expected_alpha, abs=1e-9)
        expected_rgb = torch.tensor([0.8, 0.3, 0.1], dtype=torch.float64) * expected_alpha + torch.tensor(
            [0.0, 0.0, 1.0], dtype=torch.float64
        ) * (1 - expected_alpha)
        assert torch.allclose(out.rgb[0, 13, 16], expected_rgb, atol=1e-9)
        assert out.alpha[0].max() == out.alpha[0, 13, 16]
        # Expected depth of a single Gaussian is its z wherever it is visible.
        visible = out.alpha[0] > 0
        assert visible.sum() > 1
        assert torch.allclose(out.depth[0][visible], torch.full_like(out.depth[0][visible], 3.0), atol=1e-9)
        assert (out.depth[0][~visible] == 0).all()
        assert (out.rgb[0][~visible] == torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).all()


def test_gaussian_behind_camera_or_below_threshold_renders_nothing():
    cameras = single_camera()
    scene = gaussians(
        [[0.0, 0.0, -3.0], [0.0, 0.0, 0.005], [0.0, 0.0, 3.0]], [0.5, 0.5, 0.5], [0.99, 0.99, 0.003], [[1, 1, 1]] * 3
    )
    out = rasterize(scene, cameras, backend="torch")
    assert (out.alpha == 0).all() and (out.rgb == 0).all() and (out.depth == 0).all()


def test_off_screen_and_beyond_far_plane_gaussians_render_nothing():
    cameras = single_camera()
    scene = gaussians([[50.0, 0.0, 3.0], [0.0, 0.0, 1e6]], [0.1, 0.1], [0.99, 0.99], [[1, 0, 0]] * 2)
    out = rasterize(scene, cameras, far_plane=1e5, backend="torch")
    assert (out.alpha == 0).all()
    # Within the far plane the distant one is a dot: the 0.3 px^2 dilation keeps it visible (as in gsplat).
    dot = rasterize(scene, cameras, backend="torch").alpha[0]
    assert dot[13, 16].item() == pytest.approx(0.99, abs=1e-6)
    assert (dot > 0).sum() <= 9


@pytest.mark.parametrize("flip", [False, True])
def test_nearer_of_two_opaque_gaussians_wins_regardless_of_order(flip):
    cameras = single_camera()
    means = [[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]]
    colors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    order = [1, 0] if flip else [0, 1]
    scene = gaussians([means[i] for i in order], [0.3, 0.6], [0.9, 0.9], [colors[i] for i in order])
    out = rasterize(scene, cameras, backend="torch")
    centre = out.rgb[0, 13, 16]
    # Front (red) gets alpha 0.9, the green one behind 0.9 * (1 - 0.9).
    assert centre[0].item() == pytest.approx(0.9, abs=1e-9)
    assert centre[1].item() == pytest.approx(0.09, abs=1e-9)
    assert out.depth[0, 13, 16].item() == pytest.approx((0.9 * 2 + 0.09 * 4) / 0.99, abs=1e-9)


def test_expected_depth_of_single_opaque_gaussian_equals_z():
    cameras = single_camera()
    scene = gaussians([[0.2, -0.1, 5.5]], [0.4], [0.999], [[0.5, 0.5, 0.5]])
    out = rasterize(scene, cameras, backend="torch")
    assert out.alpha[0].max() > 0.95
    visible = out.alpha[0] > 0
    assert torch.allclose(out.depth[0][visible], torch.full_like(out.depth[0][visible], 5.5), atol=1e-9)


def test_transmittance_cut_excludes_the_gaussian_that_would_cross_it():
    """Two 0.999 layers give T = 1e-6 < 1e-4, so gsplat composites only the front one."""
    cameras = single_camera()
    scene = gaussians(
        [[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]], [0.3] * 3, [0.999] * 3, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    )
    # Middle layer has alpha 0.999 at the centre: T after it would be 1e-6 -> dropped, and so is the rest.
    out = rasterize(scene, cameras, background=(1.0, 1.0, 1.0), backend="torch")
    centre = out.rgb[0, 13, 16]
    assert torch.allclose(centre, torch.tensor([0.999 + 0.001, 0.001, 0.001], dtype=torch.float64), atol=1e-9)
    assert out.alpha[0, 13, 16].item() == pytest.approx(0.999, abs=1e-12)


def test_batch_of_cameras_equals_single_renders():
    scene = random_scene(25, 1, seed=4)
    cameras = orbit_cameras(3, 20, 16, seed=4)
    together = rasterize(scene, cameras, backend="torch")
    for v in range(3):
        alone = rasterize(scene, cameras[v], backend="torch")
        assert torch.equal(together.rgb[v], alone.rgb[0])
        assert torch.equal(together.depth[v], alone.depth[0])


def test_bad_arguments_are_reported():
    scene = random_scene(3, 1, seed=0)
    cameras = single_camera()
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(scene, cameras, sh_degree=2)
    with pytest.raises(ValueError, match="background"):
        rasterize(scene, cameras, background=(1.0, 0.0))
    with pytest.raises(ValueError, match="backend"):
        rasterize(scene, cameras, backend="cuda")
    with pytest.raises(ValueError, match="near_plane"):
        rasterize(scene, cameras, near_plane=0.0)


# --------------------------------------------------------------------------- gradients


def _gradcheck_render(num_gaussians, degree, seed, fast_mode, num_views=2):
    scene = random_scene(num_gaussians, degree, seed=seed, spread=0.6, log_scale=-1.6)
    cameras = orbit_cameras(num_views, 12, 10, distance=3.0, fov_deg=40.0, seed=seed)
    assert reference_render(scene, cameras)[1].max() > 0.5  # the Gaussians are in view
    background = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    weights = torch.rand(5, num_views, 10, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def render(means, rotations, log_scales, opacity_logits, sh):
        out = rasterize(GaussianScene(means, rotations, log_scales, opacity_logits, sh), cameras, background=background)
        # A few pixel-weighted sums keep the Jacobian small while touching every output.
        return torch.stack(
            [
                (out.rgb[..., 0] * weights[0]).sum(),
                (out.rgb[..., 1] * weights[1]).sum(),
                (out.rgb[..., 2] * weights[2]).sum(),
                (out.alpha * weights[3]).sum(),
                (out.depth * weights[4]).sum(),
            ]
        )

    inputs = tuple(
        t.clone().requires_grad_(True)
        for t in (scene.means, scene.rotations, scene.log_scales, scene.opacity_logits, scene.sh)
    )
    return torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast_mode)


@pytest.mark.slow
def test_gradcheck_all_parameters():
    assert _gradcheck_render(num_gaussians=4, degree=1, seed=21, fast_mode=False, num_views=1)


def test_gradcheck_sh_degree_3_fast_mode():
    assert _gradcheck_render(num_gaussians=6, degree=3, seed=8, fast_mode=True)


@pytest.mark.slow
def test_gradcheck_across_segments(tiny_segments):
    assert _gradcheck_render(num_gaussians=8, degree=0, seed=13, fast_mode=True)


def test_gradcheck_through_the_transmittance_cut(tiny_segments):
    """Opaque stacked layers: gradients must respect the cut (entries past it get none)."""
    gen = torch.Generator().manual_seed(17)
    n = 10
    means = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.15
    means[:, 2] += torch.linspace(2.0, 4.0, n, dtype=torch.float64)
    base = dict(
        means=means,
        rotations=torch.randn(n, 4, generator=gen, dtype=torch.float64),
        log_scales=torch.full((n, 3), -1.2, dtype=torch.float64)
        + 0.1 * torch.randn(n, 3, generator=gen, dtype=torch.float64),
        opacity_logits=torch.full((n,), 5.0, dtype=torch.float64) + torch.rand(n, generator=gen, dtype=torch.float64),
        sh=torch.randn(n, 1, 3, generator=gen, dtype=torch.float64),
    )
    cameras = single_camera(9, 8, focal=12.0)
    assert reference_render(GaussianScene(**base), cameras)[1].max() > 0.9998  # the cut is reached

    def render(means, opacity_logits, sh):
        scene = GaussianScene(means, base["rotations"], base["log_scales"], opacity_logits, sh)
        out = rasterize(scene, cameras, background=(0.2, 0.4, 0.6))
        return torch.cat([out.rgb.flatten(), out.depth.flatten()])

    inputs = tuple(base[k].clone().requires_grad_(True) for k in ("means", "opacity_logits", "sh"))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradients_reach_every_parameter_in_float32():
    scene = random_scene(20, 3, seed=5, spread=0.8).to(dtype=torch.float32)
    params = [scene.means, scene.rotations, scene.log_scales, scene.opacity_logits, scene.sh]
    for p in params:
        p.requires_grad_(True)
    out = rasterize(scene, orbit_cameras(2, 24, 20, seed=5).to(dtype=torch.float32))
    (out.rgb.sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_compositing_adds_rows_without_multidimensional_index_add(tiny_segments, monkeypatch):
    """Regression guard for a CPU speed trap, not for values (those are the reference tests above).

    torch's ``index_add_`` along the first dimension of a tensor of more than one dimension stalls on a
    CPU whose cores other processes also use: 80 ms instead of 0.02 ms per call with 2 threads on the shared
    2-core machine, which made a fly-through render (one call per segment) twice as slow. The compositor
    adds rows with ``torch_backend._add_to_rows`` instead; 1-D ``index_add_`` (the backward's gradient
    scatter) is not affected.
    """
    dimensions = []
    original = torch.Tensor.index_add_

    def recording(self, *args, **kwargs):
        dimensions.append(self.dim())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "index_add_", recording)
    scene = random_scene(40, 1, seed=3)
    for p in (scene.means, scene.opacity_logits, scene.sh):
        p.requires_grad_(True)
    out = rasterize(scene, orbit_cameras(2, 21, 17, seed=3), backend="torch")
    (out.rgb.sum() + out.alpha.sum()).backward()
    assert dimensions and set(dimensions) == {1}, dimensions  # the backward's scatter ran, only in 1-D
