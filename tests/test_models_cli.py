"""``python -m engine reconstruct`` with tiny saved models, and the frame preprocessing."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.cli import main
from engine.io.scene_io import load_cameras_json, load_gaussian_ply, load_point_ply
from engine.models.anysplat import AnySplat
from engine.models.frames import FramesError, list_frame_files, preprocess_frames, read_frames
from engine.models.vggt import VGGT
from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config


def _trained_like(model, head):
    with torch.no_grad():
        head.pose_branch.fc2.bias[6] += 1.0
        head.pose_branch.fc2.bias[7:9] += 0.6
    return model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("reconstruct")
    torch.manual_seed(0)
    anysplat = AnySplat(tiny_anysplat_config())
    _trained_like(anysplat, anysplat.encoder.camera_head).save_pretrained(root / "anysplat")
    vggt = VGGT(tiny_vggt_config())
    _trained_like(vggt, vggt.camera_head).save_pretrained(root / "vggt")
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for index in (10, 2, 1):  # natural order: 1, 2, 10
        iio.imwrite(frames / f"frame{index}.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    return root


def test_anysplat_writes_gaussians_and_cameras(workspace):
    out = workspace / "out_anysplat"
    code = main(
        [
            "reconstruct",
            str(workspace / "frames"),
            "--model",
            str(workspace / "anysplat"),
            "--out",
            str(out),
            "--size",
            "28",
            "--voxel-size",
            "0",
        ]
    )
    assert code == 0
    scene = load_gaussian_ply(out / "gaussians.ply")
    cameras = load_cameras_json(out / "cameras.json")
    assert len(scene) == 3 * 28 * 28 and scene.sh_degree == 3
    assert len(cameras) == 3 and (cameras.width, cameras.height) == (28, 28)
    assert torch.allclose(cameras.camera_to_world[0], torch.eye(4), atol=1e-6)


def test_vggt_writes_points(workspace):
    out = workspace / "out_vggt"
    code = main(
        [
            "reconstruct",
            str(workspace / "frames"),
            "--model",
            str(workspace / "vggt"),
            "--out",
            str(out),
            "--size",
            "28",
            "--points-from",
            "depth",
        ]
    )
    assert code == 0
    points = load_point_ply(out / "points.ply")
    assert len(points) == 3 * 14 * 28  # width 28, height round(40 * 28 / 60 / 14) * 14
    assert json.loads((out / "cameras.json").read_text())


def test_vggt_on_a_mixed_phone_folder_uses_pad_mode(workspace, tmp_path, caplog):
    """Portrait and landscape RGBA photos plus a macOS ._ file: read, composited, padded, reconstructed."""
    from PIL import Image

    frames = tmp_path / "photos"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for name, shape in (("IMG_1.png", (40, 60, 4)), ("IMG_2.png", (60, 40, 4)), ("IMG_3.png", (45, 60, 4))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "RGBA").save(frames / name)
    (frames / "._IMG_1.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    out = tmp_path / "out"
    caplog.set_level("INFO")
    code = main(
        [
            "reconstruct",
            str(frames),
            "--model",
            str(workspace / "vggt"),
            "--out",
            str(out),
            "--size",
            "28",
            "--points-from",
            "depth",
        ]
    )
    assert code == 0
    assert "preprocessing vggt-pad" in caplog.text
    cameras = load_cameras_json(out / "cameras.json")
    assert len(cameras) == 3 and (cameras.width, cameras.height) == (28, 28)
    assert len(load_point_ply(out / "points.ply")) == 3 * 28 * 28


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preprocess", "none"], "not a multiple of the patch size 14"),
        (["--max-views", "1"], "at least 2 views"),
        (["--model-type", "vggt"], "holds AnySplat weights"),
    ],
)
def test_clear_errors(workspace, caplog, extra, message):
    out = workspace / "out_error"
    code = main(
        ["reconstruct", str(workspace / "frames"), "--model", str(workspace / "anysplat"), "--out", str(out), *extra]
    )
    assert code == 2
    assert message in caplog.text
    assert not (out / "cameras.json").exists()


def test_frames_natural_order_and_video(workspace, tmp_path):
    assert [p.name for p in list_frame_files(workspace / "frames")] == ["frame1.png", "frame2.png", "frame10.png"]
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, np.full((4, 32, 48, 3), 128, dtype=np.uint8), fps=4)
    frames = read_frames(video, stride=2)
    assert len(frames) == 2 and frames[0].shape == (32, 48, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FramesError, match="no .png"):
        read_frames(tmp_path / "empty")


def test_official_preprocessing_sizes():
    wide = [np.zeros((300, 500, 3), dtype=np.uint8)]
    anysplat = preprocess_frames(wide, "anysplat")
    assert anysplat.shape == (1, 3, 448, 448) and anysplat.dtype == torch.float32
    vggt = preprocess_frames(wide, "vggt")
    assert vggt.shape == (1, 3, round(300 * 518 / 500 / 14) * 14, 518)
    tall = preprocess_frames([np.full((900, 400, 3), 255, dtype=np.uint8)], "vggt")
    assert tall.shape == (1, 3, 518, 518) and float(tall.max()) == 1.0
    # Different shapes after the crop are padded with white to the largest, as the official loader does.
    mixed = preprocess_frames([np.zeros((300, 500, 3), np.uint8), np.zeros((500, 300, 3), np.uint8)], "vggt")
    assert mixed.shape == (2, 3, 518, 518) and float(mixed[0, :, 0, 0].min()) == 1.0
    with pytest.raises(FramesError, match="different sizes"):
        preprocess_frames([np.zeros((28, 56, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)], "none")
