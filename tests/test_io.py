"""Tests for honestface.io: every image mode a user may have, strict errors, atomic writes, tensor conversions.

All test images are generated in tmp_path with Pillow, OpenCV and numpy.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from honestface.io import ImageReadError, from_tensor, list_images, read_image, to_numpy, to_tensor, write_image

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _check(a: np.ndarray, shape=(12, 16, 3)) -> np.ndarray:
    assert a.dtype == np.float32 and a.shape == shape
    assert 0.0 <= a.min() and a.max() <= 1.0
    return a


# ----------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".webp"])
def test_lossless_rgb8(tmp_path, ext):
    p = tmp_path / f"img{ext}"
    Image.fromarray(RGB8).save(p, **({"lossless": True} if ext == ".webp" else {}))
    np.testing.assert_array_equal(_check(read_image(p)), RGB8 / np.float32(255))


def test_jpeg_rgb8(tmp_path):
    p = tmp_path / "img.JPG"
    smooth = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], 12, 0).repeat(3, 2)
    Image.fromarray(smooth).save(p, quality=98)
    assert np.abs(_check(read_image(p)) - smooth / 255.0).max() < 0.03


def test_gray_modes(tmp_path):
    g = RGB8[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "l.png")
    out = _check(read_image(tmp_path / "l.png"))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g / np.float32(255))
    Image.fromarray(g > 127).save(tmp_path / "bit.png")  # mode "1"
    assert Image.open(tmp_path / "bit.png").mode == "1"
    np.testing.assert_array_equal(_check(read_image(tmp_path / "bit.png"))[..., 1], (g > 127).astype(np.float32))


def test_alpha_modes(tmp_path):
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0
    rgba[:6, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    rgba[6:9, :, 3] = 51  # 20 % opaque rows
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    white = _check(read_image(tmp_path / "rgba.png"))
    np.testing.assert_allclose(white[0, 0], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(white[-1, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(white[7, 0], [0.2 * 200 / 255 + 0.8, 0.8, 0.8], atol=1e-6)
    black = read_image(tmp_path / "rgba.png", alpha="black")
    np.testing.assert_allclose(black[-1, 0], [0, 0, 0], atol=1e-6)
    drop, a = read_image(tmp_path / "rgba.png", alpha="drop", return_alpha=True)
    np.testing.assert_allclose(drop[-1, 0], [200 / 255, 0, 0], atol=1e-6)
    assert a.shape == (12, 16) and a[0, 0] == 1.0 and a[-1, 0] == 0.0 and abs(a[7, 0] - 0.2) < 1e-6
    # gray + alpha
    la = np.stack([np.full((12, 16), 100, np.uint8), rgba[..., 3]], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out, a2 = read_image(tmp_path / "la.png", return_alpha=True)
    np.testing.assert_allclose(out[0, 0], [100 / 255] * 3, atol=1e-6)
    np.testing.assert_allclose(out[-1, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(a2, a)
    # no alpha in file -> ones
    Image.fromarray(RGB8).save(tmp_path / "rgb.png")
    assert (read_image(tmp_path / "rgb.png", return_alpha=True)[1] == 1).all()
    with pytest.raises(ValueError, match="alpha"):
        read_image(tmp_path / "rgb.png", alpha="grey")


def test_palette_modes(tmp_path):
    pal = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9)
    idx = np.zeros((12, 16), np.uint8)
    idx[:, 8:] = 1
    idx[0, 0] = 2
    p = Image.fromarray(idx, "P")
    p.putpalette(pal)
    p.save(tmp_path / "p.png")
    out = _check(read_image(tmp_path / "p.png"))
    np.testing.assert_array_equal(out[5, 0], [1, 0, 0])
    np.testing.assert_array_equal(out[5, 15], [0, 1, 0])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 1])
    p.save(tmp_path / "pt.png", transparency=1)  # green index is transparent
    assert Image.open(tmp_path / "pt.png").mode == "P"
    out, a = read_image(tmp_path / "pt.png", alpha="black", return_alpha=True)
    np.testing.assert_array_equal(out[5, 15], [0, 0, 0])
    np.testing.assert_array_equal(out[5, 0], [1, 0, 0])
    assert a[5, 15] == 0.0 and a[5, 0] == 1.0
    p.save(tmp_path / "p.gif", transparency=1)  # GIF: read although not in list_images' extensions
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif")[5, 15], [1, 1, 1])


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = _check(read_image(tmp_path / "cmyk.jpg"))
    assert np.abs(out - np.array([1, 0, 0], np.float32)).max() < 0.03


def test_16bit_gray_png_keeps_precision(tmp_path):
    g = RNG.integers(0, 65536, (12, 16), dtype=np.uint16)
    g[0, 0], g[0, 1] = 1, 65535  # 1 / 65535 is lost in any 8-bit path
    Image.fromarray(g).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = _check(read_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(out[..., 2], g / np.float32(65535))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_rgb_keeps_precision(tmp_path, ext):
    """Pillow opens these as 8-bit RGB; read_image must return the full 16-bit values."""
    rgb = RNG.integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    rgb[0, 0] = [1, 2, 3]
    assert cv2.imwrite(str(tmp_path / f"rgb16{ext}"), rgb[..., ::-1])
    out = _check(read_image(tmp_path / f"rgb16{ext}"))
    np.testing.assert_array_equal(out, rgb / np.float32(65535))
    assert out[0, 0, 0] > 0  # not truncated to 8 bit


def test_16bit_rgba_png(tmp_path):
    rgba = RNG.integers(0, 65536, (12, 16, 4), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "rgba16.png"), rgba[..., [2, 1, 0, 3]])
    out, a = read_image(tmp_path / "rgba16.png", alpha="drop", return_alpha=True)
    np.testing.assert_array_equal(out, rgba[..., :3] / np.float32(65535))
    np.testing.assert_array_equal(a, rgba[..., 3] / np.float32(65535))


def test_float_tiff(tmp_path):
    f = RNG.random((12, 16), dtype=np.float32) * 1.2 - 0.1  # out-of-range values get clipped
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_check(read_image(tmp_path / "f.tif"))[..., 0], np.clip(f, 0, 1))
    f3 = RNG.random((12, 16, 3), dtype=np.float32)  # Pillow cannot open this one; OpenCV can
    assert cv2.imwrite(str(tmp_path / "f3.tif"), f3[..., ::-1])
    np.testing.assert_array_equal(_check(read_image(tmp_path / "f3.tif")), f3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation):
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    Image.fromarray(rgb).save(p, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p))) / np.float32(255)
    np.testing.assert_array_equal(read_image(p), expected)
    if orientation == 6:  # "rotate 90 CW to display": the stored bottom-left pixel shows at the top-left
        assert read_image(p).shape == (6, 4, 3)
        np.testing.assert_array_equal(read_image(p)[0, 0], rgb[-1, 0] / np.float32(255))


def test_exif_orientation_jpeg(tmp_path):
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "o6.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "o6.jpg")
    assert out.shape == (16, 8, 3)  # portrait now; the stored left half becomes the top
    assert out[:6].mean() > 0.95 and out[-6:].mean() < 0.05


# ----------------------------------------------------------------------------------------------- read errors


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_files_raise(tmp_path, monkeypatch, ext, fraction):
    src = tmp_path / f"full{ext}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src)
    data = src.read_bytes()
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageReadError, match="cut"):
        read_image(bad)
    # even when another library switched Pillow's global "load truncated images" on
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="cut"):
        read_image(bad)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_truncated_16bit_png_raises(tmp_path):
    rgb = RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "full.png"), rgb)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut16"):
        read_image(tmp_path / "cut16.png")


def test_bad_files(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match="notes.png") as e:
        read_image(tmp_path / "notes.png")
    assert "\n" not in str(e.value)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match="folder.png.*directory"):
        read_image(tmp_path / "folder.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    assert issubclass(ImageReadError, ValueError)


# ----------------------------------------------------------------------------------------------- writing


def test_write_roundtrips(tmp_path):
    f = RGB8 / np.float32(255)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", f)), f)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "u8.png", RGB8)), f)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "pil.png", Image.fromarray(RGB8))), f)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "l.webp", f, quality=100)), f)  # lossless
    assert np.abs(read_image(write_image(tmp_path / "a.jpg", f, quality=95)) - f).mean() < 0.05
    write_image(tmp_path / "gray.png", f[..., 0])
    assert Image.open(tmp_path / "gray.png").mode == "L"
    rgba = np.concatenate([f, np.full((12, 16, 1), 0.5, np.float32)], -1)
    _, a = read_image(write_image(tmp_path / "rgba.png", rgba), return_alpha=True)
    assert abs(a.mean() - 128 / 255) < 1e-6


def test_write_16bit_png(tmp_path):
    f = RNG.integers(0, 65536, (12, 16, 3), dtype=np.uint16) / np.float32(65535)
    out = read_image(write_image(tmp_path / "deep.png", f, bit_depth=16))
    np.testing.assert_allclose(out, f, atol=0.5 / 65535)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    g = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    np.testing.assert_allclose(read_image(write_image(tmp_path / "g16.png", g, bit_depth=16))[..., 0], g,
                               atol=0.5 / 65535)
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "deep.jpg", f, bit_depth=16)


def test_write_tensors(tmp_path):
    t = torch.rand(3, 12, 16)
    for name, x in [("chw.png", t), ("bchw.png", t[None])]:
        out = read_image(write_image(tmp_path / name, x))
        np.testing.assert_allclose(out, t.permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match="bad.png"):
        write_image(tmp_path / "bad.png", torch.rand(2, 3, 12, 16))


def test_write_creates_parents_and_refuses_overwrite(tmp_path):
    p = write_image(tmp_path / "a" / "b" / "out.png", RGB8)
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match="out.png"):
        write_image(p, 255 - RGB8)
    assert p.read_bytes() == before
    write_image(p, 255 - RGB8, overwrite=True)
    np.testing.assert_array_equal(read_image(p), (255 - RGB8) / np.float32(255))


def _assert_untouched(folder, target, original: bytes):
    assert target.read_bytes() == original
    assert sorted(x.name for x in folder.iterdir()) == [target.name]  # no temp files left


@pytest.mark.parametrize("bad", [
    ("out.gif", RGB8, ValueError), ("out.png", "not an image", TypeError), ("out.png", np.zeros((4, 4, 5)), ValueError),
    ("out.png", np.full((4, 4), np.nan), ValueError), ("out.jpg", np.zeros((4, 4, 4)), ValueError),
])
def test_failed_write_leaves_target_untouched(tmp_path, bad):
    name, image, exc = bad
    target = tmp_path / name
    target.write_bytes(b"original contents")
    with pytest.raises(exc, match=name):
        write_image(target, image, overwrite=True)
    _assert_untouched(tmp_path, target, b"original contents")


@pytest.mark.parametrize("fail", ["replace", "fsync"])
def test_failure_during_write_cleans_up(tmp_path, monkeypatch, fail):
    target = tmp_path / "out.png"
    target.write_bytes(b"original contents")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, fail, boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, RGB8, overwrite=True)
    monkeypatch.undo()
    _assert_untouched(tmp_path, target, b"original contents")
    monkeypatch.setattr(os, "fsync", boom)  # a new file: nothing may appear at all
    with pytest.raises(OSError):
        write_image(tmp_path / "new.png", RGB8)
    monkeypatch.undo()
    _assert_untouched(tmp_path, target, b"original contents")


# ----------------------------------------------------------------------------------------------- conversions


def test_tensor_round_trip(tmp_path):
    f = RGB8 / np.float32(255)
    t = to_tensor(f)
    assert t.shape == (3, 12, 16) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1 and abs(t.min().item() - (2 * f.min() - 1)) < 1e-6
    np.testing.assert_allclose(from_tensor(t), f, atol=1e-6)
    np.testing.assert_allclose(from_tensor(t[None]), f, atol=1e-6)
    t01 = to_tensor(f, value_range=(0, 1))
    np.testing.assert_allclose(to_numpy(t01), f, atol=1e-6)
    np.testing.assert_allclose(to_tensor(write_image(tmp_path / "x.png", f)), t, atol=1e-6)  # from a path
    np.testing.assert_array_equal(to_numpy(Image.fromarray(RGB8[..., 0])), np.repeat(f[..., :1], 3, -1))
    assert to_tensor(RGB8).shape == (3, 12, 16)


def test_list_images(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deep/d.TIFF", "notes.txt", ".hidden.png", ".git/e.png",
                "sub/.f.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert list_images(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "sub/c.webp",
                                     tmp_path / "sub/deep/d.TIFF"]
    assert list_images(tmp_path, recursive=False) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    assert list_images(tmp_path, extensions=["png"]) == [tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")
    with pytest.raises(NotADirectoryError, match="b.png"):
        list_images(tmp_path / "b.png")
