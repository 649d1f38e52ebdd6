"""The stitched scene decoder: one differentiable decode, and the no-grad forward as a thin wrapper of it."""

import pytest
import torch

from engine.pipeline.decoders import StitchedSceneDecoder
from engine.testing.tiny import build_stitched_decoder


@pytest.fixture(scope="module")
def scene_decoder():
    return StitchedSceneDecoder(build_stitched_decoder(seed=1))


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 16, 2, 4, 4, generator=generator)  # 5 frames of 32 x 32
    frames = torch.rand(1, 5, 3, 32, 32, generator=generator)
    return latent, frames


def test_forward_is_decode_without_gradients(scene_decoder):
    latent, frames = _inputs()
    inferred = scene_decoder(latent, frames)
    decoded = scene_decoder.decode(latent, frames)
    assert not inferred.gaussians.means.requires_grad
    size = scene_decoder.input_size(5, (4, 4))
    assert decoded.frames.shape == (5, 3, *size) and len(decoded.cameras) == 5
    assert torch.equal(inferred.gaussians.means, decoded.gaussians.means.detach())
    # (autograd may pick another kernel for the pose maths: equal up to rounding)
    assert torch.allclose(inferred.cameras.camera_to_world, decoded.cameras.camera_to_world.detach(), atol=1e-6)
    assert torch.equal(inferred.depth, decoded.depth.detach())
    assert torch.allclose(decoded.cameras.camera_to_world[0], torch.eye(4), atol=1e-5)  # relative to the first


def test_decode_is_differentiable_in_the_latent_and_the_frames(scene_decoder):
    latent, frames = _inputs(1)
    latent.requires_grad_(True)
    frames.requires_grad_(True)
    decoded = scene_decoder.decode(latent, frames, voxel_merge=False, relative_to_first=False)
    (decoded.gaussians.means.square().mean() + decoded.gaussians.sh.mean()).backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_decode_refuses_frames_of_the_wrong_shape(scene_decoder):
    latent, frames = _inputs()
    with pytest.raises(ValueError, match=r"frames must be \(1, T, 3, H, W\)"):
        scene_decoder.decode(latent, frames[0])
