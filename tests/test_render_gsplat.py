"""Backend dispatch and the gsplat call (a recording fake stands in for gsplat's CUDA rasterization)."""

from __future__ import annotations

import inspect
import math
import sys
import types

import pytest
import torch

import engine.render as render
from engine.geometry.cameras import look_at
from engine.render import RenderOutput, rasterize, resolve_backend
from engine.render.gsplat_backend import rasterize_gsplat
from engine.scene import Cameras, GaussianScene


def _scene(n=7, degree=2):
    gen = torch.Generator().manual_seed(0)
    return GaussianScene(
        means=torch.randn(n, 3, generator=gen),
        rotations=torch.randn(n, 4, generator=gen),
        log_scales=torch.randn(n, 3, generator=gen) - 2,
        opacity_logits=torch.randn(n, generator=gen),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=gen),
    )


def _cameras(num_views=2, width=10, height=6):
    eye = torch.tensor([[0.0, 0.0, -4.0], [3.0, -1.0, -3.0]])[:num_views]
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    K = Cameras.intrinsics_from_fov(math.radians(60), width, height).repeat(num_views, 1, 1)
    return Cameras(c2w, K, width, height)


class RecordingRasterization:
    """Stands in for gsplat.rasterization: records its arguments, returns recognisable tensors."""

    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        num_views, width, height = len(kwargs["viewmats"]), kwargs["width"], kwargs["height"]
        channel = torch.arange(4, dtype=torch.float32)
        # Depends on scales and opacities so that gradients through the conversion can be checked.
        scale = kwargs["scales"].sum() + kwargs["opacities"].sum()
        colors = channel.expand(num_views, height, width, 4) * scale
        alphas = torch.full((num_views, height, width, 1), 0.25) * scale
        return colors, alphas, {}


@pytest.fixture
def fake_gsplat(monkeypatch):
    """Installs a module named gsplat whose rasterization is a RecordingRasterization."""
    fake = RecordingRasterization()
    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=fake))
    return fake


def test_resolve_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "gsplat"
    assert resolve_backend("torch", torch.device("cuda")) == "torch"
    assert resolve_backend("gsplat", torch.device("cuda")) == "gsplat"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tiles", torch.device("cpu"))


def test_gsplat_call_converts_inputs_and_outputs(fake_gsplat):
    scene = _scene()
    cameras = _cameras()
    background = torch.tensor([0.1, 0.2, 0.3])
    out = rasterize_gsplat(scene, cameras, background, near_plane=0.5, far_plane=50.0, sh_degree=1)

    (kwargs,) = fake_gsplat.calls
    assert kwargs["means"] is scene.means
    assert kwargs["quats"] is scene.rotations  # gsplat normalises quaternions itself
    assert torch.allclose(kwargs["scales"], scene.log_scales.exp())
    assert torch.allclose(kwargs["opacities"], torch.sigmoid(scene.opacity_logits))
    assert kwargs["colors"] is scene.sh and kwargs["sh_degree"] == 1
    assert torch.allclose(kwargs["viewmats"], torch.linalg.inv(cameras.camera_to_world), atol=1e-5)
    assert torch.equal(kwargs["Ks"], cameras.intrinsics)
    assert (kwargs["width"], kwargs["height"]) == (10, 6)
    assert (kwargs["near_plane"], kwargs["far_plane"]) == (0.5, 50.0)
    assert kwargs["render_mode"] == "RGB+ED"
    assert torch.equal(kwargs["backgrounds"], background.expand(2, 3))

    scale = scene.scales.sum() + scene.opacities.sum()
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (2, 6, 10, 3) and out.alpha.shape == (2, 6, 10) and out.depth.shape == (2, 6, 10)
    assert torch.allclose(out.rgb[1, 2, 3], torch.tensor([0.0, 1.0, 2.0]) * scale)
    assert torch.allclose(out.depth, torch.full((2, 6, 10), 3.0) * scale)
    assert torch.allclose(out.alpha, torch.full((2, 6, 10), 0.25) * scale)


def test_gsplat_outputs_keep_gradients(fake_gsplat):
    scene = _scene()
    scene.log_scales.requires_grad_(True)
    scene.opacity_logits.requires_grad_(True)
    out = rasterize_gsplat(scene, _cameras(), torch.zeros(3), 0.01, 1e10, 2)
    out.rgb.sum().backward()
    # sum(rgb) = (0 + 1 + 2) * pixels * (sum(scales) + sum(opacities)), pixels = 2 * 6 * 10.
    factor = 3 * 2 * 6 * 10
    assert torch.allclose(scene.log_scales.grad, factor * scene.log_scales.detach().exp())
    sig = torch.sigmoid(scene.opacity_logits.detach())
    assert torch.allclose(scene.opacity_logits.grad, factor * sig * (1 - sig))


def test_rasterize_dispatches_to_gsplat_for_cuda_scenes(fake_gsplat, monkeypatch):
    # No CUDA here: pretend the scene's device is CUDA at the single place the decision is made.
    monkeypatch.setattr(render, "resolve_backend", lambda backend, device: "gsplat")
    out = rasterize(_scene(degree=3), _cameras(1), background=[1.0, 1.0, 1.0], near_plane=0.2)
    (kwargs,) = fake_gsplat.calls
    assert kwargs["sh_degree"] == 3 and kwargs["near_plane"] == 0.2 and kwargs["far_plane"] == 1e10
    assert torch.equal(kwargs["backgrounds"], torch.ones(1, 3))
    assert out.rgb.shape == (1, 6, 10, 3)


def test_auto_on_cpu_uses_the_torch_backend(fake_gsplat):
    scene, cameras = _scene(), _cameras()
    auto = rasterize(scene, cameras)
    assert fake_gsplat.calls == []
    explicit = rasterize(scene, cameras, backend="torch")
    assert torch.equal(auto.rgb, explicit.rgb) and torch.equal(auto.depth, explicit.depth)
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(scene, cameras, backend="gsplat")


def test_real_gsplat_signature_accepts_our_arguments(monkeypatch):
    gsplat = pytest.importorskip("gsplat")
    signature = inspect.signature(gsplat.rasterization)
    recorder = RecordingRasterization()
    monkeypatch.setattr(gsplat, "rasterization", recorder)
    rasterize_gsplat(_scene(), _cameras(), torch.zeros(3), 0.01, 1e10, 2)
    bound = signature.bind(**recorder.calls[0])  # TypeError on an unknown or missing argument
    assert bound.arguments["render_mode"] == "RGB+ED"
    assert "RGB+ED" in str(signature.parameters["render_mode"].annotation)
