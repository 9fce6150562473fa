"""Training-set selection (paper §5.1.1): plane balancing, the per-plane 80/20 split, decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthmri.images import ImageError, read_gray, write_png
from synthmri.generative.config import load_generator
from synthmri.generative.data import counts, load_images, select
from synthmri.io import write_table

PLANES = ("axial", "coronal", "sagittal")


def asymmetric(size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A bright block in the left half, dark right half: any mirror or transpose shows.

    With `rng`, each image varies (brightness, position) as a real training set does.
    """
    a = np.full((size, size), 10, np.uint8)
    if rng is None:
        a[size // 8 : size - size // 8, size // 8 : size // 2] = 230
        return a
    top, left = rng.integers(0, size // 4, 2)
    a[top : top + size // 2 + size // 8, left : left + size // 4 + size // 8] = rng.integers(150, 250)
    return a


def make_manifest(root: Path, per_plane: dict[str, int], *, cls: str = "glioma", size: int = 16,
                  extra_rows: list[dict] | None = None, seed: int = 0) -> Path:
    """A preprocess-style manifest of real PNGs (asymmetric images with noise), plus other rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for plane, n in per_plane.items():
        for i in range(n):
            path = root / "processed" / "train" / cls / f"{plane}_{i:03d}.png"
            write_png(path, asymmetric(size, rng))
            rows.append({"split": "train", "class": cls, "plane": plane, "status": "kept", "out_path": path.as_posix()})
    rows += extra_rows or []
    rows = [{**r, "source_class": r.get("source_class", r["class"])} for r in rows]  # preprocess writes both (tasks)
    manifest = root / "manifest.csv"
    write_table(pd.DataFrame(rows), manifest)
    return manifest


def _read(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest, keep_default_na=False)


def test_tumour_classes_are_cut_to_the_least_represented_plane(tmp_path):
    others = [
        {"split": "test", "class": "glioma", "plane": "axial", "status": "kept", "out_path": "t.png"},
        {"split": "train", "class": "glioma", "plane": "axial", "status": "removed", "out_path": "r.png"},
        {"split": "train", "class": "pituitary", "plane": "axial", "status": "kept", "out_path": "p.png"},
    ]
    m = make_manifest(tmp_path, {"axial": 12, "coronal": 5, "sagittal": 9}, extra_rows=others)
    table = select(_read(m), "glioma", load_generator({}))
    assert len(table) == 26  # test, removed and other-class rows are not this class's training set
    c = counts(table)
    assert c["selected"] == c["train"] + c["val"] + c["cut"] == 26
    assert c["cut"] == (12 - 5) + (9 - 5)
    for plane in PLANES:  # 5 each, split 80/20 per plane with the validation share rounded up (1 of 5)
        assert c["per_plane"][plane]["train"] == 4 and c["per_plane"][plane]["val"] == 1
    cut = table[table["role"] == "cut"]
    assert cut["reason"].str.startswith("plane_balance: ").all() and (table.loc[table["role"] != "cut", "reason"] == "").all()


def test_papers_split_sizes_per_plane(tmp_path):
    # Paper's code: glioma 232 per plane -> 555 training images; rounding the validation share up gives it.
    cfg = load_generator({})
    table = pd.DataFrame({"split": "train", "class": "glioma", "status": "kept",
                          "plane": np.repeat(PLANES, 232), "out_path": [f"{i}.png" for i in range(696)]})
    assert counts(select(table, "glioma", cfg))["train"] == 555


def test_notumor_is_not_plane_balanced_and_selection_is_seeded(tmp_path):
    m = make_manifest(tmp_path, {"axial": 20, "coronal": 3, "sagittal": 2}, cls="notumor")
    cfg = load_generator({})
    a = select(_read(m), "notumor", cfg)
    assert counts(a)["cut"] == 0 and counts(a)["val"] == 4 + 1 + 1
    b = select(_read(m).sample(frac=1.0, random_state=1), "notumor", cfg)  # row order does not matter
    pd.testing.assert_frame_equal(a, b)
    other = select(_read(m), "notumor", load_generator({"seed": 34}))
    assert not a["role"].equals(other["role"])


def test_balancing_can_be_switched_off(tmp_path):
    m = make_manifest(tmp_path, {"axial": 10, "coronal": 2})
    assert counts(select(_read(m), "glioma", load_generator({"plane_balance": False})))["cut"] == 0
    assert counts(select(_read(m), "glioma", load_generator({"plane_balance": True})))["cut"] == 8


def test_errors_name_what_is_missing(tmp_path):
    m = make_manifest(tmp_path, {"axial": 2})
    with pytest.raises(ValueError, match=r"no kept Training images of class 'meningioma'.*\['glioma'\]"):
        select(_read(m), "meningioma", load_generator({}))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['plane'\]"):
        select(_read(m).drop(columns=["plane"]), "glioma", load_generator({}))


def test_images_decode_resized_in_their_own_orientation(tmp_path):
    m = make_manifest(tmp_path, {"axial": 2}, size=32)
    paths = _read(m)["out_path"].tolist()
    a = load_images(paths, 16)
    assert a.shape == (2, 16, 16) and a.dtype == np.uint8
    assert a[:, :, :8].mean() > a[:, :, 8:].mean() + 40  # the bright block stays on the left
    same = load_images(paths, 32)
    np.testing.assert_array_equal(same[0], read_gray(paths[0]))
    write_png(tmp_path / "wide.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(ImageError, match="expected a square"):
        load_images([str(tmp_path / "wide.png")], 16)
