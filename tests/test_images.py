"""images.py: every Pillow mode becomes the same uint8 grayscale; bad files raise ImageError with the reason."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from synthmri.images import ImageError, open_image, read_gray, sha256_file, to_gray, write_png
from synthmri.io import atomic_path


def test_16bit_png_is_scaled_by_its_own_range(tmp_path):
    a = np.linspace(1000, 5000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(a).save(tmp_path / "x.png")
    with open_image(tmp_path / "x.png") as img:
        assert img.mode == "I;16"
    g = read_gray(tmp_path / "x.png")
    expect = np.round((a.astype(np.float64) - 1000) * 255.0 / 4000).astype(np.uint8)
    assert g.dtype == np.uint8 and g.shape == (8, 8)
    np.testing.assert_array_equal(g, expect)
    assert g.min() == 0 and g.max() == 255


def test_16bit_png_holding_8bit_values_is_kept(tmp_path):
    a = np.arange(64, dtype=np.uint16).reshape(8, 8) * 3  # 0..189: an 8-bit image stored in 16 bits
    Image.fromarray(a).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "x.png"), a.astype(np.uint8))


def test_constant_16bit_image_is_black(tmp_path):
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "x.png")
    assert not read_gray(tmp_path / "x.png").any()


def test_rgba_is_composited_on_black(tmp_path):
    px = np.array([[[255, 255, 255, 0], [255, 255, 255, 255], [200, 200, 200, 128], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "x.png")
    g = read_gray(tmp_path / "x.png")
    assert g[0, 0] == 0  # fully transparent white is background, not white
    assert g[0, 1] == 255
    assert abs(int(g[0, 2]) - round(200 * 128 / 255)) <= 1
    assert g[0, 3] == 0


def test_la_image_is_composited_too():
    img = Image.fromarray(np.array([[[250, 0], [250, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(to_gray(img), [[0, 250]])


def test_cmyk_jpeg_reads_as_luma(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((0, 0, 0, 255), (0, 0, 8, 16))  # black ink on the left half
    cmyk.save(tmp_path / "x.jpg", quality=100)
    with open_image(tmp_path / "x.jpg") as img:
        assert img.mode == "CMYK" and img.format == "JPEG"
        g = to_gray(img)
    assert g[:, :6].max() < 10 and g[:, 10:].min() > 245


def test_palette_image_uses_its_palette(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * 759)
    img.save(tmp_path / "x.png")
    g = read_gray(tmp_path / "x.png")
    expect = np.asarray(img.convert("RGB").convert("L"))
    np.testing.assert_array_equal(g, expect)
    assert g[0, 0] == round(0.299 * 255) and g[0, 1] == round(0.587 * 255)


def test_palette_transparency_is_background(tmp_path):
    img = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    img.putpalette([255, 255, 255, 200, 200, 200] + [0] * 762)
    img.info["transparency"] = 0
    img.save(tmp_path / "x.png", transparency=0)
    np.testing.assert_array_equal(read_gray(tmp_path / "x.png"), [[0, 200]])


def test_animated_gif_reads_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "x.gif", save_all=True, append_images=frames[1:])
    with open_image(tmp_path / "x.gif") as img:
        assert img.n_frames == 2
        img.seek(1)
        assert to_gray(img).max() == 0


def test_write_png_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (13, 7), dtype=np.uint8)
    write_png(tmp_path / "sub" / "x.png", a)
    with Image.open(tmp_path / "sub" / "x.png") as img:
        assert img.mode == "L" and img.format == "PNG"
    np.testing.assert_array_equal(read_gray(tmp_path / "sub" / "x.png"), a)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8)])
def test_write_png_refuses_other_arrays(tmp_path, bad):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", bad)
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path):
    target = tmp_path / "x.png"
    target.mkdir()  # the final rename onto a folder fails after the temp file was written
    with pytest.raises(OSError):
        write_png(target, np.zeros((4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]

    keep = tmp_path / "keep.txt"
    keep.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(keep) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert keep.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "x.png"]


def _jpeg(path, size=(32, 32)):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, size[::-1], dtype=np.uint8)).save(path)
    return path


def test_open_image_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a picture\n")
    data = _jpeg(tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    _jpeg(tmp_path / "big.jpg", (40, 30))

    for name, reason in [("empty.jpg", "empty file"), ("text.jpg", "not an image"), ("cut.jpg", "truncated")]:
        with pytest.raises(ImageError, match=reason):
            open_image(tmp_path / name)
    with pytest.raises(ImageError, match="decompression bomb: 40x30 exceeds 1000 pixels"):
        open_image(tmp_path / "big.jpg", max_pixels=1000)
    with open_image(tmp_path / "big.jpg", max_pixels=1200) as img:
        assert img.size == (40, 30)


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(bytes(range(256)) * 5000)
    assert sha256_file(p, chunk=4096) == hashlib.sha256(p.read_bytes()).hexdigest()
