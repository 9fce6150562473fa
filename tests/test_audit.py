"""The audit stage (paper §3) on small real image files, and the plane clustering on MNI152 slices."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmri.cli import app
from synthmri.data.audit import MANIFEST_COLUMNS, audit
from synthmri.images import ImageError, sha256_file
from synthmri.data.planes import FEATURES, PLANES, assign_planes, plane_features
from synthmri.io import read_json, read_table
from synthmri.params import AuditParams

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- helpers ----------------------------------------------------------------------------------


def write_set(root, images) -> "pd.DataFrame":
    """Save (split, class, name, PIL image) as real files and return ingest's manifest for them."""
    rows = []
    for split, cls, name, img in images:
        rel = f"{'Training' if split == 'train' else 'Testing'}/{cls}/{name}"
        path = root / "raw" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        with Image.open(path) as back:
            rows.append({"split": split, "class": cls, "relpath": rel, "path": str(path), "sha256": sha256_file(path),
                         "width": back.width, "height": back.height, "mode": back.mode, "format": back.format,
                         "bytes": path.stat().st_size})
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def save_manifest(df, path):
    df.to_csv(path, index=False)
    return path


def textured(rng, h, w) -> np.ndarray:
    """A sharp synthetic image: an ellipse of speckled texture on black."""
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 < 1
    return np.where(inside, rng.integers(40, 255, (h, w)), 0).astype(np.uint8)


@pytest.fixture(scope="module")
def mni():
    from nilearn.datasets import load_mni152_template  # ships in the wheel: offline

    return np.clip(load_mni152_template(resolution=2).get_fdata(), 0, None).astype(np.float32)


def mni_slices(vol, n_per_plane: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """MNI152 slices in the three planes, at varied positions, tilts, brightness, padding and sizes."""
    rng = np.random.default_rng(seed)
    brain = vol > 0.05
    out = []
    for plane, axis in (("axial", 2), ("sagittal", 0), ("coronal", 1)):
        other = tuple(a for a in range(3) if a != axis)
        lo, hi = np.nonzero(brain.any(axis=other))[0][[0, -1]]
        for _ in range(n_per_plane):
            k = int(round(lo + rng.uniform(0.2, 0.8) * (hi - lo)))
            s = np.take(vol, k, axis=axis).T[::-1]  # superior (axial: anterior) at the top
            if plane == "sagittal" and rng.random() < 0.5:
                s = s[:, ::-1]  # facing left or right
            s = s ** rng.uniform(0.7, 1.4) * rng.uniform(0.5, 1.0)
            pad = rng.integers(0, max(s.shape) // 3, size=4)
            s = np.pad(s, ((pad[0], pad[1]), (pad[2], pad[3])))
            f = int(rng.integers(64, 257)) / max(s.shape)
            s = cv2.resize(s, (round(s.shape[1] * f), round(s.shape[0] * f)), interpolation=cv2.INTER_CUBIC)
            tilt = cv2.getRotationMatrix2D((s.shape[1] / 2, s.shape[0] / 2), rng.uniform(-10, 10), 1.0)
            s = cv2.warpAffine(s, tilt, (s.shape[1], s.shape[0])) + rng.normal(0, 0.01, s.shape)
            out.append((plane, (np.clip(s, 0, 1) * 255).astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def mni_set(tmp_path_factory, mni):
    """36 MNI152 slices as PNG files of two classes, with their manifest and true planes."""
    root = tmp_path_factory.mktemp("mni")
    slices = mni_slices(mni, 12, seed=7)
    images = [("train" if i % 4 else "test", CLASSES[i % 2], f"{i:03d}.png", Image.fromarray(a))
              for i, (_, a) in enumerate(slices)]
    manifest = save_manifest(write_set(root, images), root / "manifest.csv")
    return root, manifest, [p for p, _ in slices]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Twelve images with known modes, sizes and blur, over two classes and both splits."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):  # glioma: sharp 64x64 grey images and their blurred copies (paper §3.2.3)
        sharp = textured(rng, 64, 64)
        images.append(("train", "glioma", f"sharp{i}.png", Image.fromarray(sharp)))
        images.append(("train", "glioma", f"blur{i}.png", Image.fromarray(cv2.GaussianBlur(sharp, (0, 0), 4))))
    # meningioma: two RGB copies (paper §3.2.1), a palette image, an 80x60 grey image in Testing
    images.append(("train", "meningioma", "rgb0.png", Image.fromarray(textured(rng, 64, 64)).convert("RGB")))
    images.append(("test", "meningioma", "rgb1.jpg", Image.fromarray(textured(rng, 64, 64)).convert("RGB")))
    images.append(("train", "meningioma", "pal.png", Image.fromarray(textured(rng, 64, 64)).convert("P")))
    images.append(("test", "meningioma", "wide.png", Image.fromarray(textured(rng, 60, 80))))
    df = write_set(root, images)
    return root, save_manifest(df, root / "manifest.csv"), df


def run(tmp_path, manifest, name="out", classes=CLASSES, **cfg):
    out = tmp_path / name
    cfg = AuditParams(**{"workers": 1, "histogram_samples": 5, **cfg})
    metrics = audit(manifest, out / "audit.csv", out / "plots", cfg, classes)
    return out, metrics


# ---- metrics ----------------------------------------------------------------------------------


def test_counts_modes_sizes_blur_and_intensity(tmp_path, small_set):
    _, manifest, df = small_set
    out, m = run(tmp_path, manifest)
    assert list(m) == ["colour_modes", "rgb_like", "dimensions", "blur", "planes", "intensity", "per_split"]
    assert m["colour_modes"] == {"L": 9, "P": 1, "RGB": 2}
    assert m["rgb_like"] == 3  # RGB and palette
    assert m["dimensions"]["distinct"] == 2
    assert m["dimensions"]["most_common"] == [["64x64", 11], ["80x60", 1]]
    assert m["dimensions"]["share_most_common"] == pytest.approx(11 / 12, abs=1e-6)
    assert m["blur"]["threshold"] == 50.0 and m["blur"]["blurry"] == 4
    assert m["blur"]["per_class"]["glioma"] == {"images": 8, "blurry": 4, "share": 0.5}
    for cls, n in (("glioma", 8), ("meningioma", 4)):
        assert sum(m["planes"][cls].values()) == n and set(m["planes"][cls]) == set(PLANES)

    table = read_table(out / "audit.csv")
    assert list(table.columns) == list(MANIFEST_COLUMNS) + ["lap_var", "mean_intensity", "plane", "plane_confidence"]
    assert (table["relpath"] == df["relpath"]).all()  # every row kept, in order
    lap = dict(zip(table["relpath"], table["lap_var"]))
    for i in range(4):  # a blurred copy has a far lower Laplacian variance
        blurred, sharp = lap[f"Training/glioma/blur{i}.png"], lap[f"Training/glioma/sharp{i}.png"]
        assert blurred < 50 < sharp and 10 * blurred < sharp
    # agreement with the reference recipe (OpenCV grey conversion, pyimagesearch's variance of the Laplacian)
    for rel, path in zip(table["relpath"], table["path"]):
        gray = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY)
        assert lap[rel] == pytest.approx(cv2.Laplacian(gray, cv2.CV_64F).var(), rel=0.02)

    pixels = np.concatenate([np.asarray(Image.open(p).convert("L")).ravel()
                             for p in df.loc[df["class"] == "glioma", "path"]])
    g = m["intensity"]["glioma"]
    assert g["images"] == 8
    assert g["mean"] == pytest.approx(pixels.mean(), abs=1e-3)
    assert g["std"] == pytest.approx(pixels.std(), abs=1e-3)
    assert g["dark_share"] == pytest.approx((pixels < 64).mean(), abs=1e-6)
    assert 0 < g["histogram_spread"] < 1

    train, test = m["per_split"]["train"], m["per_split"]["test"]
    assert train["colour_modes"] == {"L": 8, "P": 1, "RGB": 1} and test["colour_modes"] == {"L": 1, "RGB": 1}
    assert m["per_split"]["train"]["colour_modes"]["RGB"] == 1 and train["rgb_like"] == 2
    assert train["dimensions"]["distinct"] == 1 and test["dimensions"]["most_common"] == [["64x64", 1], ["80x60", 1]]
    assert train["blur"]["blurry"] + test["blur"]["blurry"] == m["blur"]["blurry"]
    assert train["intensity"]["meningioma"]["images"] + test["intensity"]["meningioma"]["images"] == 4


def test_threshold_changes_only_the_metrics(tmp_path, small_set):
    _, manifest, _ = small_set
    out_a, a = run(tmp_path, manifest, "a", blur_threshold=50.0)
    out_b, b = run(tmp_path, manifest, "b", blur_threshold=1e6)
    assert (out_a / "audit.csv").read_bytes() == (out_b / "audit.csv").read_bytes()
    assert a["blur"]["blurry"] == 4 and b["blur"]["blurry"] == 12
    a_rest = {k: v for k, v in a.items() if k not in ("blur", "per_split")}
    assert a_rest == {k: v for k, v in b.items() if k not in ("blur", "per_split")}


def test_empty_class_is_reported_not_dropped(tmp_path, small_set):
    _, manifest, _ = small_set
    out, m = run(tmp_path, manifest)  # notumor and pituitary have no images
    assert m["planes"]["notumor"] == {"axial": 0, "sagittal": 0, "coronal": 0}
    assert m["blur"]["per_class"]["pituitary"] == {"images": 0, "blurry": 0, "share": None}
    assert m["intensity"]["notumor"]["images"] == 0 and m["intensity"]["notumor"]["mean"] is None
    assert m["dimensions"]["per_class"]["notumor"]["distinct"] == 0
    json.dumps(m, allow_nan=False)  # valid JSON: no NaN where a class is empty
    assert (out / "plots" / "histograms.png").is_file()


def test_plots_are_valid_pngs(tmp_path, small_set):
    _, manifest, _ = small_set
    out, _ = run(tmp_path, manifest)
    for name in ("dimensions.png", "class_plane.png", "histograms.png"):
        path = out / "plots" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 200
            assert np.asarray(img.convert("L")).std() > 0  # something is drawn


# ---- planes -----------------------------------------------------------------------------------


def test_planes_of_mni152_slices(tmp_path, mni_set):
    _, manifest, truth = mni_set
    out, m = run(tmp_path, manifest)
    table = read_table(out / "audit.csv")
    accuracy = float(np.mean(table["plane"].to_numpy() == np.array(truth)))
    assert accuracy >= 0.85, f"plane accuracy {accuracy:.2f} on MNI152 slices"
    for plane in PLANES:  # the naming rules, not only the split, are right
        mine = table["plane"].to_numpy()[np.array(truth) == plane]
        assert np.mean(mine == plane) >= 0.7, plane
    assert table["plane_confidence"].between(0, 1).all() and table["plane_confidence"].mean() > 0.2
    assert sum(sum(v.values()) for v in m["planes"].values()) == len(truth)


def test_same_inputs_same_bytes_whatever_the_workers(tmp_path, mni_set):
    _, manifest, _ = mni_set
    out_a, a = run(tmp_path, manifest, "a", workers=1)
    out_b, b = run(tmp_path, manifest, "b", workers=2)  # a process pool: 36 images exceed parallel_map's chunk
    assert a == b
    assert (out_a / "audit.csv").read_bytes() == (out_b / "audit.csv").read_bytes()
    for name in ("dimensions.png", "class_plane.png", "histograms.png"):
        assert (out_a / "plots" / name).read_bytes() == (out_b / "plots" / name).read_bytes()


def test_seed_draws_the_histogram_sample(tmp_path, mni_set):
    _, manifest, _ = mni_set
    out_a, _ = run(tmp_path, manifest, "a", seed=1, histogram_samples=3)
    out_b, _ = run(tmp_path, manifest, "b", seed=2, histogram_samples=3)
    assert (out_a / "plots" / "histograms.png").read_bytes() != (out_b / "plots" / "histograms.png").read_bytes()


def test_tiny_sets(tmp_path, mni):
    slices = mni_slices(mni, 1, seed=5)  # one axial, one sagittal, one coronal
    feats = np.stack([plane_features(a) for _, a in slices])
    assert feats.shape == (3, len(FEATURES))
    assert assign_planes(feats[:0], seed=0) == ([], pytest.approx(np.zeros(0)))
    for rows in ([0], [1], [2], [0, 2], [1, 2]):  # too few to cluster: fixed thresholds, confidence 0
        planes, conf = assign_planes(feats[rows], seed=0)
        assert planes == [slices[r][0] for r in rows] and (conf == 0).all()
    planes, _ = assign_planes(np.repeat(feats[:1], 5, axis=0), seed=0)  # identical images: one plane
    assert len(set(planes)) == 1
    blank = plane_features(np.zeros((40, 50), np.uint8))  # no head at all: no crash
    assert np.isfinite(blank).all()


def test_two_images_and_none_through_the_stage(tmp_path, mni):
    images = [("train", "glioma", f"{i}.png", Image.fromarray(a)) for i, (_, a) in enumerate(mni_slices(mni, 1, 5)[:2])]
    manifest = save_manifest(write_set(tmp_path, images), tmp_path / "m.csv")
    out, m = run(tmp_path, manifest)
    assert sum(m["planes"]["glioma"].values()) == 2
    assert m["per_split"]["test"]["colour_modes"] == {"L": 0, "RGB": 0}  # the paper's two modes, always
    assert m["per_split"]["test"]["dimensions"] == {"distinct": 0, "most_common": [], "share_most_common": None,
                                                    "per_class": {c: {"distinct": 0, "most_common": [],
                                                                      "share_most_common": None} for c in CLASSES}}


# ---- bad input --------------------------------------------------------------------------------


def test_bad_manifests_give_clear_errors(tmp_path, small_set):
    root, _, df = small_set
    bad = save_manifest(df.drop(columns=["sha256", "mode"]), tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sha256', 'mode'\]"):
        run(tmp_path, bad)
    stranger = save_manifest(df.assign(**{"class": "astrocytoma"}), tmp_path / "class.csv")
    with pytest.raises(ValueError, match="astrocytoma.*not in data.classes"):
        run(tmp_path, stranger)
    stale = save_manifest(df.assign(width=df["width"] + 1), tmp_path / "stale.csv")
    with pytest.raises(ImageError, match="rerun ingest"):
        run(tmp_path, stale)
    assert not (tmp_path / "out" / "audit.csv").exists()  # nothing half-written


def test_cli(tmp_path, small_set):
    _, manifest, _ = small_set
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  classes: [glioma, meningioma]\naudit:\n  workers: 1\n  histogram_samples: 2\n")
    out = tmp_path / "cli"
    args = ["audit", str(manifest), str(out / "audit.csv"), "--plots", str(out / "plots"),
            "--params", str(params), "--metrics", str(out / "audit.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_json(out / "audit.json")
    assert set(m["planes"]) == {"glioma", "meningioma"} and m["colour_modes"]["RGB"] == 2
    assert (out / "plots" / "class_plane.png").is_file()
    params.write_text("data:\n  classes: [glioma]\n")  # meningioma rows now unknown: exit 2, no traceback
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "not in data.classes" in result.output


def test_empty_manifest(tmp_path):
    manifest = save_manifest(pd.DataFrame(columns=list(MANIFEST_COLUMNS)), tmp_path / "m.csv")
    out, m = run(tmp_path, manifest)
    assert len(read_table(out / "audit.csv")) == 0
    assert m["blur"]["blurry"] == 0 and m["dimensions"]["distinct"] == 0
    assert all(sum(v.values()) == 0 for v in m["planes"].values())
    assert (out / "plots" / "dimensions.png").read_bytes()[:8] == PNG_SIGNATURE
