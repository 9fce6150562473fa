"""classify.data: the in-memory image set, leak exclusion, device batches. Also the tiny-data builder
the other test_classify_* files use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthmri import CLASSES
from synthmri.classify.data import (IMAGENET_MEAN, IMAGENET_STD, NORM_IMAGENET, NORM_NO_MEAN, DeviceData, check_plan,
                                    load_images)
from synthmri.classify.mixtures import LeakageError, Plan
from synthmri.images import sha256_file, write_png


def pattern(cls_i: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable class signal (stripes in one of four directions/places) under noise."""
    img = rng.normal(70, 25, (size, size))
    q = size // 2
    if cls_i == 0:
        img[::4] += 120  # horizontal stripes
    elif cls_i == 1:
        img[:, ::4] += 120  # vertical stripes
    elif cls_i == 2:
        img[:q, :q] += 120  # bright top-left quadrant
    else:
        img[q:, q:] += 120  # bright bottom-right quadrant
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, *, train: int = 6, test: int = 3, synthetic: int = 5, size: int = 32, seed: int = 0,
                 leak: bool = False, classes=CLASSES, val: int = 0) -> tuple[Path, Path]:
    """processed/{train,test,val}/<class>/*.png + manifest.csv and synthetic/<class>/*.png + manifest.csv.

    `val` rows follow the split stage's contract: split == "val", images under processed/val/.
    Paths are relative to `root` (the tests chdir there), as the pipeline writes them relative to cwd.
    With `leak`, one Training row per class is a byte copy of a Testing image (as the paper's data had).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for ci, c in enumerate(classes):
        for split, n in (("train", train), ("test", test), ("val", val)):
            for i in range(n):
                src = root / "raw" / split / c / f"{i}.png"
                write_png(src, pattern(ci, size, rng))
                out = Path("processed") / split / c / f"{c}_{i:03d}.png"
                write_png(root / out, pattern(ci, size, rng))
                rows.append({"split": split, "class": c, "status": "kept", "sha256": sha256_file(src),
                             "out_path": out.as_posix(), "reason": ""})
        rows.append({"split": "train", "class": c, "status": "removed", "sha256": "x", "out_path": "", "reason": "blurry"})
        if leak:  # a Training row whose source and processed pixels copy test image 0
            t0 = next(r for r in rows if r["split"] == "test" and r["class"] == c)
            out = Path("processed") / "train" / c / f"{c}_leak.png"
            (root / out).write_bytes((root / t0["out_path"]).read_bytes())
            rows.append({"split": "train", "class": c, "status": "kept", "sha256": t0["sha256"],
                         "out_path": out.as_posix(), "reason": ""})
        syn_rows = []
        for i in range(synthetic):
            out = Path("synthetic") / c / f"{c}_{i:04d}.png"
            write_png(root / out, pattern(ci, size, rng))
            syn_rows.append({"path": out.as_posix(), "class": c, "index": i, "seed": 0})
        pd.DataFrame(syn_rows).to_csv(root / "synthetic" / c / "manifest.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "processed" / "manifest.csv", index=False)
    return Path("processed/manifest.csv"), Path("synthetic")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_dataset(tmp_path, leak=True)


def test_load_images_decodes_once_and_excludes_leaks(tiny):
    manifest, syn = tiny
    images = load_images(manifest, syn, CLASSES, 32, workers=1)
    n_train, n_test, n_syn = 4 * 7, 4 * 3, 4 * 5  # 6 + 1 leaked copy per class
    assert images.pixels.shape == (n_train + n_test + n_syn, 32, 32)
    assert images.pixels.dtype == torch.uint8
    assert {c: len(v) for c, v in images.pools.real.items()} == {c: 6 for c in CLASSES}
    assert len(images.pools.excluded) == 4
    assert all("duplicates a test image" in e["reason"] for e in images.pools.excluded)
    assert all(p.endswith("_leak.png") for p in (e["path"] for e in images.pools.excluded))
    assert len(images.pools.test) == n_test
    assert images.test_copies_found == 4 and images.pools_for(True) is images.pools
    # classify.drop_test_copies: false (the paper as coded): the same copies stay in place and are listed
    kept = images.pools_for(False)
    assert {c: len(v) for c, v in kept.real.items()} == {c: 7 for c in CLASSES}
    assert kept.kept_test_copies == {e["path"] for e in images.pools.excluded}
    assert kept.real["glioma"] == sorted(kept.real["glioma"])  # manifest order, as the dropped pools
    assert kept.excluded == [] and kept.test == images.pools.test and kept.synthetic == images.pools.synthetic
    # the decoded pixels are the file's pixels
    i = images.paths.index(images.pools.test[0][0])
    from synthmri.images import read_gray
    assert np.array_equal(images.pixels[i].numpy(), read_gray(images.pools.test[0][0]))


def test_check_plan_refuses_a_test_image_or_its_copy(tiny):
    manifest, syn = tiny
    images = load_images(manifest, syn, CLASSES, 32, workers=1)
    test_path, cls = images.pools.test[0]
    with pytest.raises(LeakageError, match="test image"):
        check_plan(images, Plan(((test_path, cls, "real"),), {}))
    leaked = images.pools.excluded[0]["path"]  # a copy under another name
    with pytest.raises(LeakageError, match="duplicates a test image"):
        check_plan(images, Plan(((leaked, "glioma", "real"),), {}))
    ok = images.pools.real["glioma"][0]
    assert check_plan(images, Plan(((ok, "glioma", "real"),), {})) == 0


def test_kept_test_copies_pass_counted_and_nothing_else(tiny, tmp_path):
    manifest, syn = tiny
    # a synthetic image identical to a test image: left out and refused whatever drop_test_copies says
    test_path = load_images(manifest, syn, CLASSES, 32, workers=1).pools.test[0][0]
    (tmp_path / "synthetic" / "glioma" / "glioma_0000.png").write_bytes((tmp_path / test_path).read_bytes())
    images = load_images(manifest, syn, CLASSES, 32, workers=1)
    kept = images.pools_for(False)
    copies = sorted(kept.kept_test_copies)
    rows = tuple((p, p.split("/")[2], "real") for p in copies) + ((kept.real["glioma"][0], "glioma", "real"),)
    assert check_plan(images, Plan(rows, {}), kept) == 4
    with pytest.raises(LeakageError, match="duplicates a test image"):
        check_plan(images, Plan(rows, {}))  # the default pools: dropped, so refused
    for pools in (kept, images.pools):
        assert "synthetic/glioma/glioma_0000.png" not in pools.synthetic["glioma"]
        assert [e["reason"] for e in pools.excluded if e["path"].startswith("synthetic/")] == [
            "synthetic image identical to a test image"]
        with pytest.raises(LeakageError, match="synthetic training image synthetic/glioma/glioma_0000.png"):
            check_plan(images, Plan((("synthetic/glioma/glioma_0000.png", "glioma", "synthetic"),), {}), pools)
        with pytest.raises(LeakageError, match="in the training set"):
            check_plan(images, Plan(((test_path, "glioma", "real"),), {}), pools)
        with pytest.raises(LeakageError, match="synthetic training image .*_leak.png .* duplicates a test image"):
            check_plan(images, Plan(((copies[0], "glioma", "synthetic"),), {}), pools)  # a copy under another source


def test_synthetic_images_are_resized_to_the_input_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest, syn = make_dataset(tmp_path, size=32)
    write_png(tmp_path / "synthetic" / "glioma" / "glioma_0000.png", np.full((48, 48), 200, np.uint8))
    images = load_images(manifest, syn, CLASSES, 32, workers=1)
    i = images.paths.index("synthetic/glioma/glioma_0000.png")
    assert images.pixels[i].shape == (32, 32) and int(images.pixels[i].float().mean()) == 200


def test_missing_manifest_column_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest, syn = make_dataset(tmp_path)
    df = pd.read_csv(manifest).drop(columns=["sha256"])
    df.to_csv(manifest, index=False)
    with pytest.raises(ValueError, match="missing column.*sha256"):
        load_images(manifest, syn, CLASSES, 32, workers=1)


def test_device_batch_normalises_and_repeats_channels_once():
    px = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    data = DeviceData(px, "imagenet", "none", channels_last=False)
    x = data.batch(torch.tensor([0]), train=False)
    assert x.shape == (1, 3, 2, 2)
    for ch in range(3):
        expect = (px[0].float() / 255 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
        assert torch.allclose(x[0, ch], expect)
    with pytest.raises(ValueError, match="unknown input normalisation 'raw255'"):
        DeviceData(px, "raw255", "none", channels_last=False)
    flip = DeviceData(px.repeat(64, 1, 1), "unit", "flip", False).batch(torch.arange(64), train=True,
                                                                       generator=torch.Generator().manual_seed(0))
    flipped = (flip[:, 0, 0, 0] == 1.0).sum()  # pixel (0,0) is 255 only after a horizontal flip
    assert 0 < flipped < 64


def test_as_coded_inputs_skip_the_mean_at_the_same_scale():
    """Paper's code: raw 0-255 into caffe-style VGG-19 (weights expect mean-subtracted 0-255). On torchvision
    weights the same slip is x/255/std: the corrected input plus mean/std, not x (a 1/(255*std) ~ 58x scale error)."""
    px = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    coded = DeviceData(px, NORM_NO_MEAN, "none", channels_last=False).batch(torch.tensor([0]), train=False)
    right = DeviceData(px, NORM_IMAGENET, "none", channels_last=False).batch(torch.tensor([0]), train=False)
    want = torch.tensor([[0.0, 255.0], [128.0, 64.0]])
    for ch, (m, sd) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        assert torch.allclose(coded[0, ch], want / 255 / sd)  # e.g. 255 -> 1/0.229 = 4.367 on channel 0
        assert torch.allclose(coded[0, ch] - right[0, ch], torch.full((2, 2), m / sd))  # only the mean is missing
    assert coded[0, 0, 0, 1].item() == pytest.approx(4.3668, abs=1e-4)
    assert coded[0, 2, 0, 0].item() == 0.0 and right[0, 2, 0, 0].item() == pytest.approx(-0.406 / 0.225)
    span = lambda x: (x.amax(dim=(-1, -2)) - x.amin(dim=(-1, -2)))  # noqa: E731
    assert torch.allclose(span(coded), span(right))  # the same scale
