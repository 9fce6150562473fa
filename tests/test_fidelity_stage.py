"""The fidelity stage end to end on tiny real files, and the memorisation check."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from synthmri.images import read_gray, write_png
from synthmri.fidelity import memorisation as mem
from synthmri.fidelity import metrics as M
from synthmri.fidelity.commands import fidelity_cmd
from synthmri.fidelity.config import FidelityParams, MemorisationParams, load_fidelity
from synthmri.fidelity.evaluate import Resample, evaluate, resample_like_generated
from synthmri.fidelity.features import extract, load_images
from synthmri import pretrained as W
from synthmri.pretrained import MissingWeightsError
from synthmri.params import ParamsError
from tests.test_fidelity_metrics import TINY, blobs, fid_reference, tiny_extractor, tiny_weights

CLASSES = ("glioma", "notumor")


def make_project(root, n_train=12, n_test=6, n_synth=8, copies=(), size=32, trained_size=16):
    """A preprocess manifest and a synthetic folder of tiny PNGs; `copies`: glioma synthetic i := real train j.

    The synthetic manifests carry the generate stage's size columns (trained at `trained_size`, saved at `size`)."""
    rows = []
    real = {}
    for k, cls in enumerate(CLASSES):
        imgs = blobs(n_train + n_test + 1, size=size, seed=10 + k)
        real[cls] = imgs
        for i, img in enumerate(imgs):
            split = "train" if i < n_train else "test"
            status = "removed" if i == len(imgs) - 1 else "kept"  # a removed row is never read
            path = root / "data/processed" / split / cls / f"{i:03d}.png"
            if status == "kept":
                write_png(path, img)
            rows.append({"split": split, "class": cls, "plane": "axial", "status": status,
                         "reason": "" if status == "kept" else "duplicate", "out_path": path.as_posix() if status == "kept" else ""})
        synth = blobs(n_synth, size=size, seed=100 + k)
        for i, j in copies if k == 0 else ():  # planted in the first class only
            synth[i] = imgs[j].copy()
        rows_syn = []
        for i, img in enumerate(synth):
            path = root / "data/synthetic" / cls / f"{cls}_{i:04d}.png"
            write_png(path, img)
            rows_syn.append({"path": path.as_posix(), "class": cls, "index": i,
                             "trained_size": trained_size, "size": size})
        pd.DataFrame(rows_syn).to_csv(root / "data/synthetic" / cls / "manifest.csv", index=False)
    manifest = root / "data/processed/manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, root / "data/synthetic", real


def run_tiny(tmp_path, manifest, synthetic, cfg, out="fidelity.json", resample=None):
    weights = tiny_weights(tmp_path / "tiny.pth")
    cfg = FidelityParams(**{**cfg.to_dict(), "weights": str(weights),
                            "memorisation": MemorisationParams(**cfg.to_dict()["memorisation"])})
    return evaluate(manifest, synthetic, tmp_path / out, tmp_path / "plots", cfg, CLASSES, extractor_name=TINY,
                    resample=resample)


def test_stage_writes_metrics_plots_and_reuses_real_features(tmp_path):
    manifest, synthetic, _ = make_project(tmp_path, copies=[(0, 3)])
    (synthetic / "glioma" / "glioma_0007.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable
    cfg = FidelityParams(cache_dir=str(tmp_path / "cache"), workers=1, kid_subset_size=92)
    out = run_tiny(tmp_path, manifest, synthetic, cfg)

    assert set(out) == {*CLASSES, "summary", "reference", "extractor", "feature_cache"}
    g = out["glioma"]
    for key in (M.FID, M.FID_REAL_FLOOR, M.PRECISION, M.RECALL, M.IS_REAL_PAPER, M.IS_GENERATED_PAPER):
        assert isinstance(g[key], float)
    assert g[M.IS_REAL]["mean"] >= 1 and g[M.IS_GENERATED]["splits"] == 7
    assert g[M.KID]["subset_size"] == 7  # 92 lowered to the 7 readable synthetic images
    assert g["images"] == {"real_train": 12, "real_test": 6, "synthetic": 7, "real_train_unreadable": 0,
                           "real_test_unreadable": 0, "synthetic_unreadable": 1}
    assert g["memorisation"]["pixel"]["near_copies"] == 1 and g[M.MEMORISED_SHARE] == pytest.approx(1 / 7)
    assert out["notumor"]["memorisation"]["pixel"]["near_copies"] == 0
    assert out["summary"]["fid_mean"] == pytest.approx(np.mean([out[c][M.FID] for c in CLASSES]))
    assert out["summary"]["memorised_share"] == pytest.approx(1 / 15)
    # a weights file outside the registry is recorded by its digest, never taken for a published file
    tiny = tmp_path / "tiny.pth"
    assert out["extractor"]["weights_file"] == {"path": tiny.as_posix(), "sha256": W.sha256_of(tiny),
                                                "bytes": tiny.stat().st_size, "verified": "none", "registry": None}
    assert json.loads((tmp_path / "fidelity.json").read_text())["summary"] == out["summary"]
    assert out["feature_cache"] == {"hits": 0, "misses": 4}  # train and test of two classes

    table = pd.read_csv(tmp_path / "plots/memorisation.csv", keep_default_na=False)
    assert len(table) == 16  # every synthetic file listed: 15 used + 1 unreadable, counts reconcile
    broken = table[table["status"] != "used"]
    assert list(broken["path"].str.endswith("glioma_0007.png")) == [True] and "unreadable" in broken["reason"].iloc[0]
    copy = table[(table["class"] == "glioma") & table["pixel_near_copy"].astype(str).eq("True")]
    assert list(copy["path"].str.endswith("glioma_0000.png")) == [True]
    assert copy["pixel_nearest"].iloc[0].endswith("train/glioma/003.png") and float(copy["pixel_mse"].iloc[0]) == 0
    for cls in CLASSES:
        assert (tmp_path / f"plots/memorisation_{cls}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second experiment: new synthetic images, real features from the cache, same real-side numbers
    write_png(synthetic / "notumor" / "notumor_0001.png", blobs(1, size=32, seed=999)[0])
    again = run_tiny(tmp_path, manifest, synthetic, cfg, out="again.json")
    assert again["feature_cache"] == {"hits": 4, "misses": 0}
    assert again["glioma"] == g
    for key in (M.FID_REAL_FLOOR, M.IS_REAL):
        assert again["notumor"][key] == out["notumor"][key]
    assert again["notumor"][M.FID] != out["notumor"][M.FID]


def test_stage_needs_synthetic_images_and_the_preprocess_manifest(tmp_path):
    manifest, synthetic, _ = make_project(tmp_path)
    cfg = FidelityParams(cache_dir="", workers=1)
    (synthetic / "notumor" / "manifest.csv").unlink()
    for f in (synthetic / "notumor").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"0 synthetic image\(s\) for class 'notumor'.*generate@notumor"):
        run_tiny(tmp_path, manifest, synthetic, cfg)
    with pytest.raises(ValueError, match="collide with keys of the metrics JSON"):
        evaluate(manifest, synthetic, tmp_path / "f.json", tmp_path / "plots", cfg, ("glioma", "summary"))
    pd.DataFrame({"split": ["train"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        run_tiny(tmp_path, tmp_path / "bad.csv", synthetic, cfg)


def test_missing_weights_stop_the_stage_naming_the_file_and_command(tmp_path):
    manifest, synthetic, _ = make_project(tmp_path, n_train=3, n_test=2, n_synth=2)
    missing = tmp_path / "models/pretrained/weights-inception-2015-12-05-6726825d.pth"
    cfg = FidelityParams(weights=str(missing), cache_dir="", workers=1)
    with pytest.raises(MissingWeightsError) as e:
        evaluate(manifest, synthetic, tmp_path / "f.json", tmp_path / "plots", cfg, CLASSES)
    assert "weights-inception-2015-12-05-6726825d.pth" in str(e.value)
    assert "synthmri weights fetch inception" in str(e.value)
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "plots").exists()


def test_fidelity_cmd_reads_params_and_stops_without_weights(tmp_path, monkeypatch):
    """The command as cli.py calls it: params.yaml's sections, then the missing-weights error."""
    monkeypatch.chdir(tmp_path)
    manifest, synthetic, _ = make_project(tmp_path, n_train=3, n_test=2, n_synth=3)
    params = {"data": {"classes": ["glioma"]}, "fidelity": {"cache_dir": "", "workers": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(MissingWeightsError, match=r"models/pretrained/weights-inception-2015-12-05-6726825d\.pth"):
        fidelity_cmd(manifest, synthetic, tmp_path / "metrics/fidelity.json", tmp_path / "plots", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "fidelity": {"isc_splits": 0}}))
    with pytest.raises(ParamsError, match="fidelity.isc_splits"):
        fidelity_cmd(manifest, synthetic, tmp_path / "m.json", tmp_path / "plots", tmp_path / "params.yaml")
    assert not (tmp_path / "metrics").exists()


def test_params_refuse_nonsense():
    assert load_fidelity(None) == FidelityParams()
    with pytest.raises(ParamsError, match=r"fidelity: unknown key\(s\) \['fid_layer'\]"):
        load_fidelity({"fid_layer": "2048"})
    with pytest.raises(ParamsError, match="fidelity.memorisation.feature_ratio"):
        load_fidelity({"memorisation": {"feature_ratio": 1.5}})
    with pytest.raises(ParamsError, match="fidelity.device"):
        load_fidelity({"device": "gpu"})
    with pytest.raises(ParamsError, match="fidelity.kid_subset_size"):
        load_fidelity({"kid_subset_size": 1})


# ---- memorisation ----------------------------------------------------------------------------------


def _sets(tmp_path, real_imgs, synth_imgs, px=16):
    paths = []
    for name, imgs in (("real", real_imgs), ("synth", synth_imgs)):
        ps = []
        for i, img in enumerate(imgs):
            p = tmp_path / name / f"{i:03d}.png"
            write_png(p, img)
            ps.append(p.as_posix())
        paths.append(ps)
    return load_images("real", paths[0], px, 1), load_images("synth", paths[1], px, 1)


def test_memorisation_finds_planted_copies(tmp_path):
    real_imgs = blobs(20, size=32, seed=1)
    rng = np.random.default_rng(0)
    noisy = np.clip(real_imgs[7].astype(int) + rng.integers(-3, 4, real_imgs[7].shape), 0, 255).astype(np.uint8)
    synth_imgs = blobs(6, size=32, seed=2) + [real_imgs[3].copy(), np.ascontiguousarray(real_imgs[11][:, ::-1]), noisy]
    real, synth = _sets(tmp_path, real_imgs, synth_imgs)
    ex = tiny_extractor(tmp_path)
    cfg = MemorisationParams(px_size=16, pixel_mse=100.0, feature_k=5, feature_ratio=0.33)
    near = mem.find_nearest(synth, extract(ex, synth.images, 8, "s")["feat"], real,
                            extract(ex, real.images, 8, "r")["feat"], cfg)
    pix, feat = near.near_copies(cfg)
    assert list(np.flatnonzero(pix)) == [6, 7, 8]
    assert list(near.pixel_index[6:]) == [3, 11, 7]
    assert near.pixel_mse[6] == 0 and near.pixel_mse[7] == 0 and near.pixel_mirrored[7] and not near.pixel_mirrored[6]
    assert 0 < near.pixel_mse[8] <= 4  # +-3 noise
    assert feat[6] and feat[8]  # identical / nearly identical features: ratio ~0
    assert near.feature_ratio[6] == pytest.approx(0.0, abs=1e-3)
    assert not feat[:6].any()


def test_memorisation_raises_no_false_alarm_on_distinct_images(tmp_path):
    real, synth = _sets(tmp_path, blobs(20, size=32, seed=1), blobs(12, size=32, seed=2))
    ex = tiny_extractor(tmp_path)
    cfg = MemorisationParams(px_size=16)
    near = mem.find_nearest(synth, extract(ex, synth.images, 8, "s")["feat"], real,
                            extract(ex, real.images, 8, "r")["feat"], cfg)
    pix, feat = near.near_copies(cfg)
    assert not pix.any() and not feat.any()
    assert near.pixel_mse.min() > cfg.pixel_mse
    summary = mem.summarise(near, near, cfg)
    assert summary["pixel"]["near_copies"] == 0 and summary["feature"]["share"] == 0.0


def test_nearest_pixel_is_exact_against_brute_force():
    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    query = rng.integers(0, 256, (11, 8, 8, 3), dtype=np.uint8)
    idx, mse, mirrored = mem.nearest_pixel(query, real, mirror=True)
    for q in range(len(query)):
        cands = [((v.astype(int) - r.astype(int)) ** 2).mean() for v in (query[q], query[q][:, ::-1]) for r in real]
        assert mse[q] == min(cands)
        assert (int(np.argmin(cands)) % len(real)) == idx[q] and mirrored[q] == (int(np.argmin(cands)) >= len(real))


# ---- the resampled floor: real Testing images resized as generated ones are --------------------------


def _pipeline_resample(path, r: Resample) -> np.ndarray:
    """What the generator pipeline itself does to an image: its loader, then its sampler's resize."""
    import torch

    from synthmri.generative.data import _load
    from synthmri.generative.sample import to_uint8

    small = _load((str(path), r.train_size))  # generator training input (generative/data.py)
    return to_uint8(torch.from_numpy(small).float()[None, None] / 255.0, r.out_size)[0]  # ddpm.py: uint8 / 255


@pytest.mark.parametrize("size,r", [(32, Resample(16, 32)), (256, Resample(128, 256)), (64, Resample(32, 16))])
def test_resample_is_the_generator_pipelines_resize_byte_for_byte(tmp_path, size, r):
    img = blobs(1, size=size, seed=5)[0]
    write_png(tmp_path / "a.png", img)
    ours = resample_like_generated(read_gray(tmp_path / "a.png"), r)
    assert ours.dtype == np.uint8 and ours.shape == (r.out_size, r.out_size)
    assert np.array_equal(ours, _pipeline_resample(tmp_path / "a.png", r))
    if r.out_size == size:  # the resampling is applied: the image comes back changed
        assert np.abs(ours.astype(int) - img.astype(int)).mean() > 0.5
    same = resample_like_generated(img, Resample(size, size))  # no size change: no op
    assert np.array_equal(same, img)


def test_stage_reports_the_resampled_floor_as_a_direct_computation(tmp_path):
    manifest, synthetic, _ = make_project(tmp_path)
    cfg = FidelityParams(cache_dir=str(tmp_path / "cache"), workers=1)
    r = Resample(16, 32)
    out = run_tiny(tmp_path, manifest, synthetic, cfg, resample=r)
    assert out["feature_cache"] == {"hits": 0, "misses": 6}  # train, test and resampled test of two classes
    assert out["reference"]["resample"]["train_size"] == 16 and out["reference"]["resample"]["out_size"] == 32
    assert out["extractor"]["random_weights"] is False

    ex = tiny_extractor(tmp_path)  # the same weights as run_tiny's (seed 0)
    df = pd.read_csv(manifest)
    for cls in CLASSES:
        rows = df[(df["class"] == cls) & (df["status"] == "kept")]
        train = [read_gray(p) for p in rows[rows["split"] == "train"]["out_path"]]
        test_paths = list(rows[rows["split"] == "test"]["out_path"])
        f_train = extract(ex, train, 8, "train")["feat"]
        f_test = extract(ex, [read_gray(p) for p in test_paths], 8, "test")["feat"]
        f_rs = extract(ex, [_pipeline_resample(p, r) for p in test_paths], 8, "resampled")["feat"]
        assert np.abs(f_rs - f_test).max() > 1e-3  # the resampling reaches the features
        got = out[cls]
        assert got[M.FID_REAL_FLOOR_RESAMPLED] == pytest.approx(fid_reference(f_rs, f_train), rel=1e-5)
        assert got[M.FID_REAL_FLOOR] == pytest.approx(fid_reference(f_test, f_train), rel=1e-5)
        assert got[M.FID_REAL_FLOOR_RESAMPLED] != pytest.approx(got[M.FID_REAL_FLOOR], rel=1e-3)
        assert got[M.KID_REAL_FLOOR_RESAMPLED]["subset_size"] == 6
        assert M.fid(f_rs, f_test) > 1e-4  # FID(real, resampled real) > 0
    assert out["summary"]["fid_real_floor_resampled_mean"] == pytest.approx(
        np.mean([out[c][M.FID_REAL_FLOOR_RESAMPLED] for c in CLASSES]))

    again = run_tiny(tmp_path, manifest, synthetic, cfg, out="again.json", resample=r)  # cached by transform too
    assert again["feature_cache"] == {"hits": 6, "misses": 0}
    assert again["glioma"][M.FID_REAL_FLOOR_RESAMPLED] == out["glioma"][M.FID_REAL_FLOOR_RESAMPLED]
    other = run_tiny(tmp_path, manifest, synthetic, cfg, out="other.json", resample=Resample(8, 32))
    assert other["feature_cache"] == {"hits": 4, "misses": 2}  # another transform is another cache entry
    without = run_tiny(tmp_path, manifest, synthetic, cfg, out="none.json")
    assert without["glioma"][M.FID_REAL_FLOOR_RESAMPLED] is None and without["reference"]["resample"] is None


def test_resample_sizes_come_from_the_synthetic_manifests(tmp_path, monkeypatch):
    manifest, synthetic, _ = make_project(tmp_path, n_train=3, n_test=2, n_synth=3, size=32, trained_size=16)
    assert Resample.from_manifests(synthetic, CLASSES) == Resample(16, 32)

    # fidelity_cmd hands exactly these to the stage
    import synthmri.fidelity.evaluate as E

    seen = {}
    monkeypatch.setattr(E, "evaluate", lambda *a, **k: seen.update(k) or {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"classes": list(CLASSES)}}))
    fidelity_cmd(manifest, synthetic, tmp_path / "f.json", tmp_path / "plots", tmp_path / "params.yaml")
    assert seen["resample"] == Resample(16, 32)

    glioma, notumor = (synthetic / c / "manifest.csv" for c in CLASSES)
    g, n = re.escape(str(glioma)), re.escape(str(notumor))
    good = pd.read_csv(notumor)
    good.assign(trained_size=8).to_csv(notumor, index=False)  # classes disagree: the later file is named
    with pytest.raises(ValueError, match=rf"^{n}: trained_size/size = 8/32, but {g} says 16/32"):
        Resample.from_manifests(synthetic, CLASSES)
    good.assign(size=[32, 32, 64]).to_csv(notumor, index=False)  # rows of one file disagree
    with pytest.raises(ValueError, match=rf"^{n}: rows disagree on trained_size/size"):
        Resample.from_manifests(synthetic, CLASSES)
    good.assign(size="").to_csv(notumor, index=False)
    with pytest.raises(ValueError, match=rf"^{n}: trained_size/size must be positive integers"):
        Resample.from_manifests(synthetic, CLASSES)
    good.drop(columns=["size"]).to_csv(notumor, index=False)  # a manifest from before the columns existed
    with pytest.raises(ValueError, match=rf"^{n}: missing column\(s\) \['size'\].*generate@notumor"):
        Resample.from_manifests(synthetic, CLASSES)
    notumor.unlink()  # images not made by the generate stage: nothing says how they were resized
    assert Resample.from_manifests(synthetic, CLASSES) is None
