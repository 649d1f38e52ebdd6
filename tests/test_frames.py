"""Photo folders and videos for ``reconstruct``: transparency, colour modes, orientation, hidden files, bad files,
mixed sizes (VGGT's official pad mode)."""

import struct
import subprocess
import sys
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
from cases import CASES
from PIL import Image

from engine.models.frames import (
    FramesError,
    _array_to_rgb,
    list_frame_files,
    load_image_rgb,
    official_mode,
    preprocess_frames,
    read_frames,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def on_white(rgb, alpha):
    a = alpha.astype(np.float64)[..., None] / 255
    return rgb * a + 255 * (1 - a)


# ---------------------------------------------------------------- transparency


def test_rgba_case_frames_are_composited_onto_white():
    folder = CASES / "rgba-frames" / "frames"
    frames = read_frames(folder)
    assert len(frames) == 3
    for path, frame in zip(sorted(folder.iterdir()), frames):
        rgba = np.asarray(Image.open(path))
        transparent = rgba[..., 3] == 0
        assert transparent.any() and (~transparent).any()
        assert frame.shape == rgba.shape[:2] + (3,) and frame.dtype == np.uint8
        assert np.all(frame[transparent] == 255)
        assert np.array_equal(frame[~transparent], rgba[..., :3][~transparent])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partial_alpha_is_blended_onto_white(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (10, 14, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    frame = load_image_rgb(tmp_path / "a.png")
    assert np.abs(frame - on_white(rgba[..., :3], rgba[..., 3])).max() <= 1.0


def test_grey_with_alpha_and_transparent_palette_are_composited(tmp_path):
    grey = RNG.integers(0, 256, (12, 16), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (12, 16), dtype=np.uint8)
    Image.fromarray(np.stack([grey, alpha], axis=-1), "LA").save(tmp_path / "la.png")
    frame = load_image_rgb(tmp_path / "la.png")
    assert np.abs(frame - on_white(np.repeat(grey[..., None], 3, -1), alpha)).max() <= 1.0

    palette_image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    indices = np.asarray(palette_image)
    palette_image.save(tmp_path / "p.png", transparency=int(indices[0, 0]))
    frame = load_image_rgb(tmp_path / "p.png")
    see_through = indices == indices[0, 0]
    assert np.all(frame[see_through] == 255)
    expected = np.asarray(palette_image.convert("RGB"))
    assert np.array_equal(frame[~see_through], expected[~see_through])


# ---------------------------------------------------------------- colour modes


def png_16bit(path, array, color_type):
    """A 16-bit PNG written chunk by chunk (Pillow cannot write 16-bit RGB)."""
    height, width = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def test_16_bit_grey_and_rgb_are_scaled_not_clipped(tmp_path):
    grey16 = RNG.integers(0, 65536, (12, 16)).astype(np.uint16)
    png_16bit(tmp_path / "g16.png", grey16, 0)
    frame = load_image_rgb(tmp_path / "g16.png")
    assert np.abs(frame - np.repeat(grey16[..., None] / 257, 3, -1)).max() <= 1.0
    rgb16 = RNG.integers(0, 65536, (12, 16, 3)).astype(np.uint16)
    png_16bit(tmp_path / "rgb16.png", rgb16, 2)
    assert np.abs(load_image_rgb(tmp_path / "rgb16.png") - rgb16 / 257).max() <= 1.0
    rgba16 = np.concatenate([rgb16, np.full((12, 16, 1), 65535, np.uint16)], axis=-1)
    rgba16[0, 0, 3] = 0
    png_16bit(tmp_path / "rgba16.png", rgba16, 6)
    frame = load_image_rgb(tmp_path / "rgba16.png")
    assert np.all(frame[0, 0] == 255) and np.abs(frame[1:] - rgb16[1:] / 257).max() <= 1.0


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp"])
def test_palette_grey_and_bilevel(tmp_path, suffix):
    if suffix == ".webp":
        grey = np.asarray(Image.fromarray(RGB).convert("L"))
        Image.fromarray(grey, "L").save(tmp_path / f"l{suffix}", lossless=True)
        assert np.array_equal(load_image_rgb(tmp_path / f"l{suffix}"), np.repeat(grey[..., None], 3, -1))
        return
    palette_image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette_image.save(tmp_path / f"p{suffix}")
    assert np.array_equal(load_image_rgb(tmp_path / f"p{suffix}"), np.asarray(palette_image.convert("RGB")))
    grey = np.asarray(Image.fromarray(RGB).convert("L"))
    Image.fromarray(grey, "L").save(tmp_path / f"l{suffix}")
    assert np.array_equal(load_image_rgb(tmp_path / f"l{suffix}"), np.repeat(grey[..., None], 3, -1))
    bits = grey > 128
    Image.fromarray(bits).convert("1").save(tmp_path / f"b{suffix}")
    assert np.array_equal(load_image_rgb(tmp_path / f"b{suffix}"), np.repeat(bits[..., None] * 255, 3, -1))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_becomes_rgb(tmp_path, suffix):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    cmyk.save(tmp_path / f"c{suffix}", **({"quality": 100} if suffix == ".jpg" else {}))
    frame = load_image_rgb(tmp_path / f"c{suffix}")
    assert Image.open(tmp_path / f"c{suffix}").mode == "CMYK" and frame.shape == (12, 16, 3)
    tolerance = 12 if suffix == ".jpg" else 0
    assert np.abs(frame.astype(int) - RGB).max() <= tolerance


def test_float_grey_in_unit_range(tmp_path):
    values = RNG.uniform(0, 1, (12, 16)).astype(np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    frame = load_image_rgb(tmp_path / "f.tif")
    assert np.abs(frame[..., 0] - values * 255).max() <= 0.5 + 1e-6


# ---------------------------------------------------------------- orientation


# EXIF orientation -> where the stored top-left pixel appears in the upright image (row, column as fractions)
ORIENTATIONS = {1: (0, 0), 3: (1, 1), 6: (0, 1), 8: (1, 0)}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.full((20, 40, 3), 255, np.uint8)  # landscape as stored by the camera
    stored[:5, :5] = (255, 0, 0)  # a red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    frame = load_image_rgb(tmp_path / "photo.jpg")
    assert frame.shape == ((20, 40, 3) if orientation in (1, 3) else (40, 20, 3))
    row = 2 if ORIENTATIONS[orientation][0] == 0 else frame.shape[0] - 3
    column = 2 if ORIENTATIONS[orientation][1] == 0 else frame.shape[1] - 3
    assert frame[row, column, 0] > 200 and frame[row, column, 1] < 60, frame[row, column]


# ---------------------------------------------------------------- folders: hidden files, bad files


def test_appledouble_case_folder_skips_the_hidden_file():
    folder = CASES / "appledouble-frames" / "frames"
    assert [p.name for p in list_frame_files(folder)] == ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"]
    frames = read_frames(folder)
    assert len(frames) == 3 and all(f.shape == (40, 60, 3) for f in frames)


def test_hidden_and_system_files_are_skipped(tmp_path):
    for index in range(3):
        Image.fromarray(RGB).save(tmp_path / f"frame{index}.png")
    (tmp_path / "._frame0.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (tmp_path / "THUMBS.DB").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / ".hidden.jpg").write_bytes(b"junk")
    assert [p.name for p in list_frame_files(tmp_path)] == ["frame0.png", "frame1.png", "frame2.png"]
    assert len(read_frames(tmp_path)) == 3


@pytest.mark.parametrize(
    "content",
    [b"this is text, not a JPEG", b"\xff\xd8\xff\xe0" + b"\x00" * 20, "truncated"],
    ids=["text", "header-only", "truncated"],
)
def test_an_undecodable_file_is_named(tmp_path, content):
    Image.fromarray(RGB).save(tmp_path / "IMG_0001.jpg")
    if content == "truncated":
        whole = (tmp_path / "IMG_0001.jpg").read_bytes()
        content = whole[: len(whole) // 2]
    (tmp_path / "IMG_0002.jpg").write_bytes(content)
    with pytest.raises(FramesError, match=r"IMG_0002\.jpg: cannot be decoded as an image") as info:
        read_frames(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("names", [["IMG_0004.HEIC"], ["b.dng", "a.CR2"]])
def test_heic_and_raw_photos_are_named_not_skipped(tmp_path, names):
    Image.fromarray(RGB).save(tmp_path / "IMG_0001.jpg")
    for name in names:
        (tmp_path / name).write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "._IMG_0005.HEIC").write_bytes(b"\x00\x05\x16\x07")  # hidden: still skipped
    first = sorted(names, key=str.lower)[0]
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    with pytest.raises(FramesError, match=rf"{first}{more}: HEIC and camera-raw photos cannot be read"):
        read_frames(tmp_path)


def test_reconstruct_stops_on_an_undecodable_file_with_one_line_and_status_2(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(RGB).save(frames / "IMG_0001.jpg")
    (frames / "._IMG_0001.jpg").write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    (frames / "IMG_0002.jpg").write_bytes(b"not an image at all")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "reconstruct",
            str(frames),
            "--model",
            str(tmp_path / "no-model"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IMG_0002.jpg: cannot be decoded as an image" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_video_frames_are_rgb_and_alpha_frames_go_onto_white(tmp_path):
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, np.full((3, 32, 48, 3), 100, dtype=np.uint8), fps=3)
    assert all(f.shape == (32, 48, 3) and np.abs(f.astype(int) - 100).max() <= 3 for f in read_frames(video))
    rgba = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    assert np.abs(_array_to_rgb(rgba, "frame") - on_white(rgba[..., :3], rgba[..., 3])).max() <= 0.5


# ---------------------------------------------------------------- mixed sizes: VGGT pad mode


def test_official_mode_picks_pad_for_mixed_aspect_ratios():
    same = [np.zeros((300, 400, 3), np.uint8), np.zeros((600, 800, 3), np.uint8)]
    mixed = [np.zeros((300, 400, 3), np.uint8), np.zeros((400, 300, 3), np.uint8)]
    assert official_mode("vggt", same) == "vggt"
    assert official_mode("vggt", mixed) == "vggt-pad"
    assert official_mode("anysplat", mixed) == "anysplat"


@pytest.mark.parametrize("height, width", [(300, 500), (500, 300), (518, 518), (120, 1000), (701, 333)])
def test_vggt_pad_mode_matches_the_official_numbers(height, width):
    colour = np.array([30, 140, 220], np.uint8)
    out = preprocess_frames([np.broadcast_to(colour, (height, width, 3)).copy()], "vggt-pad")
    assert out.shape == (1, 3, 518, 518)
    if width >= height:
        new_w, new_h = 518, round(height * (518 / width) / 14) * 14
    else:
        new_w, new_h = round(width * (518 / height) / 14) * 14, 518
    top, left = (518 - new_h) // 2, (518 - new_w) // 2
    image = (out[0].permute(1, 2, 0).numpy() * 255).round()
    inside = np.zeros((518, 518), bool)
    inside[top : top + new_h, left : left + new_w] = True
    assert np.all(image[~inside] == 255)  # white padding, centred (extra row/column at the bottom/right)
    assert np.abs(image[inside] - colour).max() <= 1


def test_mixed_photo_set_goes_through_pad_mode_whole(tmp_path):
    landscape = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    portrait = RNG.integers(0, 256, (400, 300, 3), dtype=np.uint8)
    Image.fromarray(landscape).save(tmp_path / "a1.png")
    Image.fromarray(portrait).save(tmp_path / "a2.png")
    frames = read_frames(tmp_path)
    mode = official_mode("vggt", frames)
    out = preprocess_frames(frames, mode)
    assert mode == "vggt-pad" and out.shape == (2, 3, 518, 518)
    # Nothing is cropped: the portrait keeps its full height, the landscape its full width.
    portrait_rows = (out[1] < 1.0).any(dim=0).any(dim=1)
    landscape_columns = (out[0] < 1.0).any(dim=0).any(dim=0)
    assert bool(portrait_rows[0]) and bool(portrait_rows[-1])
    assert bool(landscape_columns[0]) and bool(landscape_columns[-1])
