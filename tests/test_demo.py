"""The demo dataset: layout, determinism, every planted nuisance, lesion placement and learnability."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from typer.testing import CliRunner

from synthmri import CLASSES
from synthmri.cli import app
from synthmri.data import demo
from synthmri.data.demo import NUISANCES, TRUTH_COLUMNS, TRUTH_FILE, make_demo_dataset
from synthmri.images import ImageError, read_gray, sha256_file
from synthmri.io import read_table
from synthmri.params import DemoParams

SMALL = DemoParams(train_per_class=8, test_per_class=4, size=96)
NAME = re.compile(r"^(Tr|Te)-(gl|me|no|pi)_\d{4}\.(jpg|png)$")


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "raw"
    summary = make_demo_dataset(out, SMALL, CLASSES)
    return out, summary, read_table(out / TRUTH_FILE)


def test_layout_counts_and_truth(small):
    out, summary, truth = small
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    assert TRUTH_COLUMNS[:6] == ("relpath", "split", "class", "plane", "nuisance", "dup_of")
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {TRUTH_FILE}
    assert set(truth["relpath"]) == on_disk and truth["relpath"].is_unique
    assert sorted(p.name for p in out.iterdir()) == ["Testing", "Training", TRUTH_FILE]
    for split in ("Training", "Testing"):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASSES)
    assert all(NAME.match(Path(r).name) for r in truth["relpath"])
    assert all(Path(r).name.startswith({"Training": "Tr-", "Testing": "Te-"}[s]) for r, s in zip(truth["relpath"], truth["split"]))
    assert set(truth["nuisance"]) <= set(NUISANCES)

    n_extra = SMALL.exact_duplicates + SMALL.near_duplicates + SMALL.leaked_duplicates
    for cls in CLASSES:
        t = truth[truth["class"] == cls]
        assert (t["split"] == "Testing").sum() == SMALL.test_per_class
        originals = t[(t["split"] == "Training") & t["nuisance"].isin(["clean", "rgb", "blur"])]
        assert len(originals) == SMALL.train_per_class
        assert (t["nuisance"] == "exact_dup").sum() == SMALL.exact_duplicates
        assert (t["nuisance"] == "near_dup").sum() == SMALL.near_duplicates
        assert (t["nuisance"] == "leak_dup").sum() == SMALL.leaked_duplicates
        assert (t["split"] == "Training").sum() == SMALL.train_per_class + n_extra + t["nuisance"].isin(["truncated", "empty", "not_image"]).sum()
    assert summary["files"] == len(truth)
    assert summary["by_nuisance"] == {k: int((truth["nuisance"] == k).sum()) for k in NUISANCES}

    # paper §3.1: tumour classes in all three planes; notumor mostly axial, never coronal
    planes = truth[truth["nuisance"].isin(["clean", "rgb", "blur"])].groupby("class")["plane"].value_counts().unstack(fill_value=0)
    for cls in ("glioma", "meningioma", "pituitary"):
        assert (planes.loc[cls, ["axial", "sagittal", "coronal"]] >= 3).all()
    assert planes.loc["notumor"].get("coronal", 0) == 0
    assert planes.loc["notumor", "axial"] > planes.loc["notumor"].drop("axial").sum()
    exts = truth["relpath"].str.rsplit(".", n=1).str[1]
    assert (exts == "jpg").mean() > 0.6 and (exts == "png").any()


def test_sizes_vary_like_kaggle(small):
    out, _, truth = small
    ok = truth[~truth["nuisance"].isin(["truncated", "empty", "not_image"])]
    sizes = {r: Image.open(out / r).size for r in ok["relpath"]}
    square_main = [r for r, (w, h) in sizes.items() if w == h == SMALL.size]
    assert len(square_main) > len(sizes) / 2  # Kaggle: 69 % are 512 x 512
    assert any(w == h != SMALL.size for w, h in sizes.values())
    notumor = [sizes[r] for r in ok.loc[ok["class"] == "notumor", "relpath"]]
    tumour = [sizes[r] for r in ok.loc[ok["class"] != "notumor", "relpath"]]
    non_square = lambda s: np.mean([w != h for w, h in s])  # noqa: E731
    assert non_square(notumor) > non_square(tumour)
    assert any(w != h and 0.9 <= w / h <= 1.1 for w, h in notumor)  # kept by preprocess' aspect filter
    assert any(not 0.9 <= w / h <= 1.1 for w, h in notumor)  # removed by it


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    out, _, _ = small
    again = tmp_path / "again"
    make_demo_dataset(again, SMALL, CLASSES)
    assert _hashes(again) == _hashes(out)
    other = tmp_path / "other"
    make_demo_dataset(other, dataclasses.replace(SMALL, seed=1), CLASSES)
    a, b = _hashes(out), _hashes(other)
    images = set(read_table(out / TRUTH_FILE).query("nuisance == 'clean'")["relpath"]) & set(b)
    assert len(images) > 10 and all(a[k] != b[k] for k in images)


def test_planted_duplicates(small):
    out, _, truth = small
    for row in truth[truth["nuisance"] == "exact_dup"].itertuples():
        assert row.dup_of.startswith("Training/") and row.dup_of != row.relpath
        assert (out / row.relpath).read_bytes() == (out / row.dup_of).read_bytes()
    leaks = truth[truth["nuisance"] == "leak_dup"]
    assert len(leaks) == SMALL.leaked_duplicates * len(CLASSES)
    for row in leaks.to_dict("records"):
        assert row["split"] == "Training" and row["dup_of"].startswith(f"Testing/{row['class']}/")
        assert (out / row["relpath"]).read_bytes() == (out / row["dup_of"]).read_bytes()
    near = truth[truth["nuisance"] == "near_dup"]
    assert {d.rstrip("0123456789x._") for d in near["detail"]} >= {"png_copy", "jpeg_q", "resized"}
    for row in near.to_dict("records"):
        assert (out / row["relpath"]).read_bytes() != (out / row["dup_of"]).read_bytes()
        assert float(row["mse50"]) == pytest.approx(demo._mse50(read_gray(out / row["dup_of"]), read_gray(out / row["relpath"])), abs=1e-3)
        assert float(row["mse50"]) <= demo.SIMILAR_MSE  # difPy's 'similar' at this size
        if row["detail"] == "png_copy":  # same pixels: difPy's 'duplicates'
            assert np.array_equal(read_gray(out / row["relpath"]), read_gray(out / row["dup_of"]))
    assert (truth.loc[truth["dup_of"] == "", "mse50"] == "").all()
    # originals are not duplicates of each other
    originals = truth[truth["nuisance"].isin(["clean", "rgb", "blur"])]
    assert originals["relpath"].map(lambda r: sha256_file(out / r)).is_unique


def _groups(pairs) -> set[frozenset]:
    """Connected components of a list of (a, b) pairs."""
    parent: dict = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    comps: dict = {}
    for x in parent:
        comps.setdefault(root(x), set()).add(x)
    return {frozenset(c) for c in comps.values()}


@pytest.mark.parametrize("similarity", ["duplicates", "similar"])
def test_difpy_finds_exactly_the_planted_duplicate_groups(small, similarity):
    import difPy

    out, _, truth = small
    dif = difPy.build(str(out / "Training"), show_progress=False)  # logs the three broken files
    found = difPy.search(dif, similarity=similarity, same_dim=False, show_progress=False).result
    found_pairs = [(Path(k).relative_to(out).as_posix(), Path(m).relative_to(out).as_posix()) for k, v in found.items() for m, _ in v]
    limit = 0.0 if similarity == "duplicates" else demo.SIMILAR_MSE
    t = truth[truth["dup_of"].str.startswith("Training/")]
    planted = [(r, d) for r, d, m in zip(t["relpath"], t["dup_of"], t["mse50"]) if float(m) <= limit]
    assert planted and _groups(found_pairs) == _groups(planted)


def test_broken_files_fail_to_decode(small):
    out, _, truth = small
    broken = truth[truth["nuisance"].isin(["truncated", "empty", "not_image"])]
    assert sorted(broken["nuisance"]) == ["empty", "not_image", "truncated"]
    assert broken["class"].is_unique and (broken["split"] == "Training").all()
    assert all(r.endswith(".jpg") for r in broken["relpath"])
    reasons = {"truncated": "truncated", "empty": "empty file", "not_image": "not an image"}
    for row in broken.itertuples():
        with pytest.raises(ImageError, match=reasons[row.nuisance]):
            read_gray(out / row.relpath)
    assert (out / broken.loc[broken["nuisance"] == "empty", "relpath"].item()).stat().st_size == 0


def test_rgb_copies_and_blurred_images(small):
    out, _, truth = small
    ok = truth[truth["nuisance"].isin(["clean", "rgb", "blur"])].copy()
    ok["mode"] = [Image.open(out / r).mode for r in ok["relpath"]]
    assert (ok.loc[ok["nuisance"] == "rgb", "mode"] == "RGB").all() and (ok["nuisance"] == "rgb").any()
    assert (ok.loc[ok["nuisance"] != "rgb", "mode"] == "L").all()
    ok["lapvar"] = [cv2.Laplacian(read_gray(out / r), cv2.CV_64F).var() for r in ok["relpath"]]
    assert (ok["nuisance"] == "blur").sum() >= len(CLASSES)
    for (split, cls), g in ok.groupby(["split", "class"]):
        median = g["lapvar"].median()
        blurred = g.loc[g["nuisance"] == "blur", "lapvar"]
        assert (blurred < median / 5).all(), (split, cls, blurred.tolist(), median)
        # and the paper's threshold (§3.2.3, Laplacian variance < 50) calls them blurry, the others not
        assert (blurred < 50).all() and (g.loc[g["nuisance"] != "blur", "lapvar"] > 50).all()


def _lesion(cls: str, plane: str, seed: int):
    """One canvas of `cls` in `plane`, its lesion weight map, and the pixels the painter changed."""
    rng = np.random.default_rng(seed)
    c = demo._head(rng, plane, demo._slice_position(rng, cls, plane, demo._volume()), 128, 128)
    before = c.img.copy()
    weight = demo._PAINTERS[cls](c, rng, plane)
    return c, weight > 0.5, np.abs(c.img - before)


@pytest.mark.parametrize("plane", ["axial", "sagittal", "coronal"])
def test_lesions_sit_where_radiology_places_them(plane):
    for seed in range(6):
        # glioma: intra-axial, the tumour inside the brain, with an edema halo around it
        c, core, diff = _lesion("glioma", plane, seed)
        assert core.sum() > 20 and c.brain[core].mean() > 0.9 and c.icv[core].all()
        assert (diff[~core] > 0.05).sum() > 0.5 * core.sum()
        assert np.median(diff[core]) > 0.1  # visible against the tissue it replaces
        # meningioma: extra-axial, against the inner skull surface (dura), never beyond it; round
        c, mass, diff = _lesion("meningioma", plane, seed)
        assert mass.sum() > 20
        p, d = c.midline
        ys, xs = np.nonzero(mass)
        to_falx = np.abs((ys - p[0]) * d[1] - (xs - p[1]) * d[0])
        assert c.depth[mass].min() <= 2.0 or (plane != "sagittal" and to_falx.min() <= 2.0)
        assert not mass[~c.icv].any()
        r = max(np.ptp(ys), np.ptp(xs)) / 2
        assert mass.sum() > 0.45 * np.pi * r * r  # a filled disc (cut flat by the skull), not a ring
        # pituitary: on the midline, below the centre of the head (sagittal/coronal), central (axial)
        c, mass, diff = _lesion("pituitary", plane, seed)
        ys, xs = np.nonzero(mass)
        hy, hx = np.argwhere(c.icv).mean(0)
        assert mass.sum() > 20
        if plane != "sagittal":
            assert abs(xs.mean() - hx) < 0.1 * c.brain_width
        if plane != "axial":
            assert ys.mean() > hy + 0.1 * c.brain_width
    assert demo._PAINTERS["notumor"] is None


LEARN = DemoParams(seed=0, train_per_class=160, test_per_class=30, size=64, exact_duplicates=0,
                   near_duplicates=0, leaked_duplicates=0, broken_files=False)


def _thumbnails(root: Path):
    """32 x 32 thumbnails of a demo set, their classes, and the Training mask."""
    make_demo_dataset(root, LEARN, CLASSES)
    truth = read_table(root / TRUTH_FILE)
    thumbs = np.stack([cv2.resize(read_gray(root / r), (32, 32), interpolation=cv2.INTER_AREA).ravel()
                       for r in truth["relpath"]]).astype(np.float32)
    return thumbs, truth["class"].to_numpy(), (truth["split"] == "Training").to_numpy()


def _accuracy(clf, x, y, tr) -> float:
    return float((clf.fit(x[tr], y[tr]).predict(x[~tr]) == y[~tr]).mean())


def _lesion_model_accuracy(thumbs, y, tr) -> float:
    norm = thumbs / np.percentile(thumbs, 99, axis=1, keepdims=True)  # per-image brightness varies
    return _accuracy(ExtraTreesClassifier(300, random_state=0), norm, y, tr)


def test_class_is_learnable_from_the_lesions(tmp_path, monkeypatch):
    thumbs, y, tr = _thumbnails(tmp_path / "with")
    with_lesions = _lesion_model_accuracy(thumbs, y, tr)
    assert with_lesions >= 0.6  # chance is 0.25
    # the same images without lesions: what is left (plane, slice level, aspect) is far less
    monkeypatch.setitem(demo._PAINTERS, "glioma", None)
    monkeypatch.setitem(demo._PAINTERS, "meningioma", None)
    monkeypatch.setitem(demo._PAINTERS, "pituitary", None)
    assert _lesion_model_accuracy(*_thumbnails(tmp_path / "without")) <= with_lesions - 0.15


def test_class_is_not_given_away_by_one_pixel_or_global_statistics(tmp_path):
    thumbs, y, tr = _thumbnails(tmp_path / "d")
    # brightness, contrast and histogram vary per image independently of the class
    stats = np.stack([thumbs.mean(1), thumbs.std(1), *np.percentile(thumbs, [5, 25, 50, 75, 95, 99], axis=1)], 1)
    assert _accuracy(RandomForestClassifier(300, random_state=0), stats, y, tr) <= 0.5
    # the pixel whose value best predicts the class in Training, with up to three thresholds, is
    # near chance on Testing
    stump = lambda: DecisionTreeClassifier(max_leaf_nodes=4, random_state=0)  # noqa: E731
    train_acc = [stump().fit(thumbs[tr][:, [j]], y[tr]).score(thumbs[tr][:, [j]], y[tr]) for j in range(thumbs.shape[1])]
    assert _accuracy(stump(), thumbs[:, [int(np.argmax(train_acc))]], y, tr) <= 0.45


def test_refuses_to_overwrite_a_foreign_folder_and_replaces_an_old_demo(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo dataset"):
        make_demo_dataset(foreign, SMALL, CLASSES)
    assert (foreign / "notes.txt").read_text() == "keep me"

    cfg = DemoParams(train_per_class=4, test_per_class=1, size=48, exact_duplicates=1, near_duplicates=1,
                     leaked_duplicates=1, broken_files=False)
    out = tmp_path / "demo"
    make_demo_dataset(out, cfg, ("glioma", "notumor"))
    stale = out / "Training" / "glioma" / "stale.jpg"
    stale.write_bytes(b"old")
    make_demo_dataset(out, cfg, ("glioma", "notumor"))
    assert not stale.exists() and not list(tmp_path.glob(".demo.*"))  # no temporary folder left behind
    assert sorted(p.name for p in (out / "Training").iterdir()) == ["glioma", "notumor"]


def test_unknown_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="astrocytoma"):
        make_demo_dataset(tmp_path / "d", SMALL, ("glioma", "astrocytoma"))
    assert not (tmp_path / "d").exists()


def test_cli_demo_data(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"classes": list(CLASSES)},
                                      "demo": {"train_per_class": 4, "test_per_class": 1, "size": 48}}))
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "out"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    truth = read_table(tmp_path / "out" / TRUTH_FILE)
    assert (truth["split"] == "Testing").sum() == len(CLASSES)
    params.write_text(yaml.safe_dump({"demo": {"size": 8}}))
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "bad"), "--params", str(params)])
    assert result.exit_code != 0 and "demo.size" in result.output
