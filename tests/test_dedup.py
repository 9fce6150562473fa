"""The dedup stage (paper §4.1): both engines on real files, the real difPy 4.2.1 as the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from synthmri.cli import app
from synthmri.data.dedup import REASON_CROSS, REASON_WITHIN, _keep_rank, dedup
from synthmri.data.dedup_engines import Criterion, difpy_engine, fast_engine, near_pairs
from synthmri.images import sha256_file, thumbnail
from synthmri.io import read_table
from synthmri.params import DedupParams

PX = 50


def field(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Smooth MRI-like texture in [20, 200]: no clipping under bicubic resizing or +16."""
    x = gaussian_filter(rng.standard_normal((size, size)), 3)
    return ((x - x.min()) / (x.max() - x.min()) * 180 + 20).astype(np.uint8)


def thumb(x: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize((PX, PX), resample=Image.BICUBIC)).astype(int)


def exact_field(rng, check) -> np.ndarray:
    """A field whose thumbnail satisfies `check` (e.g. a 180-degree turn commutes with resizing)."""
    while not check(x := field(rng)):
        pass
    return x


def save(root: Path, rel: str, x: np.ndarray, **kw) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x).save(path, **kw)
    return path


def manifest(root: Path, out: Path) -> Path:
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        split, cls = path.relative_to(root).parts[:2]
        with Image.open(path) as im:
            w, h, mode = im.width, im.height, im.mode
        rows.append({"split": split, "class": cls, "relpath": path.relative_to(root).as_posix(), "path": str(path),
                     "sha256": sha256_file(path), "width": w, "height": h, "mode": mode, "blur": 1.5})
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """~30 images on which difPy is correct: exact, turned, near and cross-split duplicates."""
    root = tmp_path_factory.mktemp("dedup") / "raw"
    rng = np.random.default_rng(7)
    classes = ("glioma", "meningioma", "notumor", "pituitary")
    for k in range(20):
        x = exact_field(rng, lambda x: (np.rot90(thumb(x), 2) == thumb(np.rot90(x, 2).copy())).all())
        save(root, f"train/{classes[k % 4]}/b{k:02d}.png", x)
    for k in range(6):
        save(root, f"test/{classes[k % 4]}/t{k:02d}.png", field(rng))
    tr = root / "train"
    shutil.copyfile(tr / "glioma/b00.png", tr / "glioma/b00_copy.png")  # byte copy
    b01 = np.asarray(Image.open(tr / "meningioma/b01.png"))
    save(root, "train/meningioma/b01_rot180.png", np.rot90(b01, 2).copy())  # MSE 0 after a half turn
    b02 = np.asarray(Image.open(tr / "notumor/b02.png")).copy()
    b02[10:30, 10:30] += 3
    save(root, "train/notumor/b02_near.png", b02)  # 0 < MSE <= 5: 'similar' only
    b03 = np.asarray(Image.open(tr / "pituitary/b03.png"))
    save(root, "train/pituitary/b03_big.png", b03, compress_level=0)  # same pixels, larger file
    shutil.copyfile(tr / "meningioma/b05.png", tr / "glioma/b05_conflict.png")  # label conflict
    for name in ("leak_a", "leak_b"):  # a Training group that is a copy of a Testing image
        shutil.copyfile(root / "test/glioma/t00.png", tr / f"glioma/{name}.png")
    shutil.copyfile(root / "test/meningioma/t01.png", root / "test/meningioma/t01_copy.png")
    return root, manifest(root, root.parent / "manifest.csv")


def run(tmp_path, m, **kw) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / f"dedup-{len(list(tmp_path.iterdir()))}.csv"
    metrics = dedup(m, out, DedupParams(**kw))
    return read_table(out).set_index("relpath"), metrics


def test_thumbnails_match_difpy_bit_for_bit(tmp_path):
    import difPy

    rng = np.random.default_rng(0)
    g = field(rng, 80)
    rgb = np.stack([g, field(rng, 80), 255 - g], axis=2)
    files = [save(tmp_path, "l.jpg", g, quality=90), save(tmp_path, "rgb.png", rgb),
             save(tmp_path, "rgba.png", np.dstack([rgb, g])), save(tmp_path, "wide.png", field(rng, 80)[:40])]
    Image.fromarray(rgb).quantize(16).save(tmp_path / "pal.png")
    Image.fromarray(g.astype(np.uint16) * 200).save(tmp_path / "i16.png")
    files += [tmp_path / "pal.png", tmp_path / "i16.png"]
    dif = difPy.build([str(f) for f in files], px_size=PX, show_progress=False, processes=1)
    assert len(dif._tensor_dictionary) == len(files)
    for k, name in dif._filename_dictionary.items():
        ours, dims = thumbnail(name, PX)
        assert np.array_equal(ours, dif._tensor_dictionary[k]), name
        assert dims == tuple(sorted(dif._id_to_shape_dictionary[k][:2]))


def test_planted_duplicates_found_and_kept_member_deterministic(tmp_path, dataset):
    root, m = dataset
    df, metrics = run(tmp_path, m, compare_engines=False, similarity="similar")
    group = df["dup_group"]
    for a, b in [("b00", "b00_copy"), ("b01", "b01_rot180"), ("b02", "b02_near"), ("b03", "b03_big")]:
        ra, rb = (next(r for r in df.index if r.endswith(f"/{x}.png")) for x in (a, b))
        assert group[ra] != "" and group[ra] == group[rb], (a, b)
    # identical files: the smallest relpath; same pixels: the larger file (before the relpath)
    assert df.loc["train/glioma/b00.png", "dedup_status"] == "keep"
    assert df.loc["train/glioma/b00_copy.png", "dup_of"] == "train/glioma/b00.png"
    assert df.loc["train/pituitary/b03_big.png", "dedup_status"] == "keep"
    assert df.loc["train/pituitary/b03.png", "dedup_reason"] == REASON_WITHIN
    assert metrics["train"]["groups"] == 6  # b00, b01, b02, b03, b05 and the leaked pair
    assert metrics["train"]["images_with_duplicates"] == 5  # the leaked pair keeps no member

    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(m).sample(frac=1, random_state=1).to_csv(shuffled, index=False)
    df2, metrics2 = run(tmp_path, shuffled, compare_engines=False, similarity="similar")
    assert df2.loc[df.index, "dedup_status"].tolist() == df["dedup_status"].tolist()
    assert df2.loc[df.index, "dup_of"].tolist() == df["dup_of"].tolist()
    for got in (metrics, metrics2):  # group ids follow row order; nothing else may
        for conflict in got["label_conflicts"]["listed"]:
            conflict["group"] = None
            conflict["members"].sort(key=lambda member: member["relpath"])
    assert metrics2 == metrics
    out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
    dedup(m, out1, DedupParams(compare_engines=False))
    dedup(m, out2, DedupParams(compare_engines=False))
    assert out1.read_bytes() == out2.read_bytes()


def test_cross_split_leakage_removed_from_training_only(tmp_path, dataset):
    _, m = dataset
    df, metrics = run(tmp_path, m, compare_engines=False)
    for name in ("leak_a", "leak_b"):
        row = df.loc[f"train/glioma/{name}.png"]
        assert (row.dedup_status, row.dedup_reason, row.dup_of) == ("removed", REASON_CROSS, "test/glioma/t00.png")
        assert row.dup_scope == "cross"
    assert df.loc["test/glioma/t00.png", "dedup_status"] == "keep"
    assert (df[df.split == "test"].dedup_reason != REASON_CROSS).all()
    assert df.loc["test/meningioma/t01_copy.png", "dedup_reason"] == REASON_WITHIN  # within Testing is removed
    assert metrics["cross_split"] == {"enabled": True, "groups": 1, "test_images_with_training_copies": 1,
                                      "training_images_with_testing_copies": 2, "removed": 2}
    assert metrics["test"]["removed"] == 1

    df_off, metrics_off = run(tmp_path, m, compare_engines=False, cross_split=False)
    assert metrics_off["cross_split"]["removed"] == 0
    assert metrics_off["cross_split"]["test_images_with_training_copies"] == 1  # still reported
    leaks = df_off.loc[["train/glioma/leak_a.png", "train/glioma/leak_b.png"], "dedup_status"].tolist()
    assert sorted(leaks) == ["keep", "removed"]  # an ordinary Training pair now


def test_difpy_bug1_reproduced_with_real_difpy_not_by_fast(tmp_path):
    rng = np.random.default_rng(1)
    x = exact_field(rng, lambda x: ((thumb(x + 16) - thumb(x)) == 16).all())
    paths = [str(save(tmp_path, "a.png", x)), str(save(tmp_path, "a_plus16.png", x + 16))]
    crit = Criterion(PX, 0.0, True, True)
    difpy = difpy_engine(paths, ["train", "train"], crit, 1)
    assert [(int(i), int(j), m) for i, j, m in zip(difpy.edges.i, difpy.edges.j, difpy.edges.mse)] == [(0, 1, 0.0)]
    fast = fast_engine(paths, [sha256_file(p) for p in paths], ["train"] * 2, crit, 1)
    assert len(fast.edges) == 0
    both = np.stack([thumbnail(p, PX)[0] for p in paths])
    assert near_pairs(both, 300.0, True).mse.tolist() == [256.0]  # the true MSE


def test_equal_pixel_sums_are_not_duplicates():
    """difPy's batch path (> 5,000 images) calls equal sums duplicates (bug 2); ours compares pixels."""
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (PX, PX, 3), dtype=np.uint8)
    b = rng.permutation(a.ravel()).reshape(a.shape)
    assert a.sum() == b.sum()
    assert len(near_pairs(np.stack([a, b]), 5.0, True)) == 0


def test_agreement_with_real_difpy_pair_for_pair(tmp_path, dataset):
    _, m = dataset
    for similarity in ("duplicates", "similar"):
        _, metrics = run(tmp_path, m, similarity=similarity, engine="difpy")
        agreement = metrics["engines"]["agreement"]
        assert agreement["pairs_only_fast"] == agreement["pairs_only_difpy"] == 0, similarity
        assert agreement["pairs_both"] == (9 if similarity == "similar" else 8)
        assert metrics["engines"]["fast"]["train"] == metrics["engines"]["difpy"]["train"]
    # each match difPy reports joins two images we group too, with the MSE we compute exactly
    df = pd.read_csv(m)
    crit = Criterion(PX, 5.0, True, True)
    difpy = difpy_engine(df.path.tolist(), df.split.tolist(), crit, 2)
    fast = fast_engine(df.path.tolist(), df.sha256.tolist(), df.split.tolist(), crit, 2)
    assert len(difpy.edges) == 9  # 7 within the splits, leak_a and leak_b to t00
    for i, j, v in zip(difpy.edges.i, difpy.edges.j, difpy.edges.mse):
        a, b = (thumbnail(df.path[k], PX)[0].astype(float) for k in (i, j))
        assert v == min(np.mean((a - np.rot90(b, k)) ** 2) for k in range(3))
        assert _same_group(fast.edges, i, j)


def _same_group(edges, i, j) -> bool:
    reach, frontier = {int(i)}, [int(i)]
    while frontier:
        x = frontier.pop()
        for a, b in zip(edges.i.tolist(), edges.j.tolist()):
            for u, w in ((a, b), (b, a)):
                if u == x and w not in reach:
                    reach.add(w)
                    frontier.append(w)
    return int(j) in reach


def test_rotation_duplicates(tmp_path):
    rng = np.random.default_rng(4)
    x = field(rng)
    paths = [str(save(tmp_path, "a0.png", x)), str(save(tmp_path, "a1_ccw.png", np.rot90(x, 1).copy())),
             str(save(tmp_path, "b0.png", (y := field(rng)))), str(save(tmp_path, "b1_cw.png", np.rot90(y, -1).copy()))]
    shas = [sha256_file(p) for p in paths]
    # a quarter turn is not exact after bicubic resizing: a 'similar' match
    fast = fast_engine(paths, shas, ["train"] * 4, Criterion(PX, 5.0, True, True), 1)
    assert sorted(zip(fast.edges.i.tolist(), fast.edges.j.tolist())) == [(0, 1), (2, 3)]
    assert (fast.edges.mse < 1.0).all()
    assert len(fast_engine(paths, shas, ["train"] * 4, Criterion(PX, 5.0, False, True), 1).edges) == 0
    # difPy turns only the second image by 0/90/180: the counter-clockwise copy after it is missed
    difpy = difpy_engine(paths, ["train"] * 4, Criterion(PX, 5.0, True, True), 1)
    assert sorted(zip(difpy.edges.i.tolist(), difpy.edges.j.tolist())) == [(2, 3)]


def test_similar_threshold(tmp_path, dataset):
    _, m = dataset
    near = "train/notumor/b02_near.png"
    pair = ["train/notumor/b02.png", near]
    df, _ = run(tmp_path, m, compare_engines=False, similarity="similar")
    assert df.loc[pair[0], "dup_group"] == df.loc[near, "dup_group"] != ""
    assert sorted(df.loc[pair, "dedup_status"]) == ["keep", "removed"]
    df, _ = run(tmp_path, m, compare_engines=False, similarity="duplicates")
    assert df.loc[pair, "dedup_status"].tolist() == ["keep", "keep"]
    assert df.loc[pair, "dup_group"].tolist() == ["", ""]
    b02, b02n = (thumbnail(p, PX)[0].astype(float) for p in
                 (m.parent / "raw/train/notumor/b02.png", m.parent / "raw" / near))
    mse = float(np.mean((b02 - b02n) ** 2))
    assert 0 < mse <= 5
    df, _ = run(tmp_path, m, compare_engines=False, similarity=str(mse * 0.999))
    assert df.loc[near, "dup_group"] == ""
    df, _ = run(tmp_path, m, compare_engines=False, similarity=str(mse))
    assert df.loc[near, "dup_group"] != ""


@pytest.mark.parametrize("rotations", [True, False])
def test_near_pairs_is_exact_against_brute_force(rotations):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (34, 12, 12, 3), dtype=np.uint8)
    noisy = np.clip(base[:6].astype(int) + rng.integers(-3, 4, (6, 12, 12, 3)), 0, 255).astype(np.uint8)
    thumbs = np.concatenate([base, np.rot90(noisy, 1, axes=(1, 2))])
    turns = range(4) if rotations else (0,)
    ref = {}
    for i in range(len(thumbs)):
        for j in range(i + 1, len(thumbs)):
            ref[i, j] = min(np.mean((thumbs[i].astype(float) - np.rot90(thumbs[j], k)) ** 2) for k in turns)
    # 1e9 takes every pair: more than a block's worth, so the float64 Gram path is checked too
    for threshold in (0.5, 3.9, 4.5, 11000.0, 1e9):
        got = near_pairs(thumbs, threshold, rotations)
        assert {(int(i), int(j)): v for i, j, v in zip(got.i, got.j, got.mse)} == \
            {p: v for p, v in ref.items() if v <= threshold}, threshold


def test_reconciliation_columns_unreadable_and_conflicts(tmp_path, dataset):
    root, m = dataset
    broken = tmp_path / "broken.png"
    broken.write_bytes((root / "train/glioma/b00.png").read_bytes()[:200])
    df_in = pd.read_csv(m)
    row = {**df_in.iloc[0].to_dict(), "split": "train", "class": "glioma", "relpath": "train/glioma/broken.png",
           "path": str(broken), "sha256": sha256_file(broken)}
    df_in = pd.concat([df_in, pd.DataFrame([row])])
    m2 = tmp_path / "m2.csv"
    df_in.to_csv(m2, index=False)
    df, metrics = run(tmp_path, m2, compare_engines=False)
    assert df.index.tolist() == df_in.relpath.tolist()  # input order
    new = ["dup_group", "dup_scope", "dup_of", "dedup_status", "dedup_reason"]
    assert list(pd.read_csv(next(tmp_path.glob("dedup-*.csv"))).columns) == [*df_in.columns, *new]
    assert df.loc["train/glioma/broken.png", "dedup_reason"].startswith("unreadable: ")
    for split in ("train", "test"):
        c = metrics[split]
        assert c["images"] == c["kept"] + c["removed"] == (df.split == split).sum()
        assert c["removed"] == c["removed_within"] + c["removed_cross"] + c["unreadable"]
        assert c["removed"] == ((df.split == split) & (df.dedup_status == "removed")).sum()
    assert metrics["train"]["unreadable"] == 1
    t = metrics["total"]
    assert t["images"] == len(df) == t["kept"] + t["removed"]
    conflicts = metrics["label_conflicts"]
    assert (conflicts["groups"], conflicts["images"]) == (1, 2)
    assert conflicts["listed"][0]["classes"] == {"glioma": 1, "meningioma": 1}


def test_keep_rank_prefers_resolution_then_bytes_then_relpath(tmp_path):
    small, big = tmp_path / "s.png", tmp_path / "b.png"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 20)
    df = pd.DataFrame({"relpath": ["z", "b", "a", "c"], "path": [str(small), str(small), str(big), str(small)],
                       "width": [20, 10, 10, 10], "height": [10, 10, 10, 10]})
    assert _keep_rank(df).tolist() == [0, 2, 1, 3]
    assert _keep_rank(df.assign(bytes=[1, 1, 1, 5])).tolist() == [0, 3, 2, 1]  # ingest's sizes win


def test_bad_manifest_is_a_clear_error(tmp_path, dataset):
    _, m = dataset
    bad = tmp_path / "bad.csv"
    pd.read_csv(m).drop(columns=["sha256"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="sha256"):
        dedup(bad, tmp_path / "o.csv", DedupParams())
    pd.read_csv(m).assign(width="wide").to_csv(bad, index=False)
    with pytest.raises(ValueError, match="width"):
        dedup(bad, tmp_path / "o.csv", DedupParams())
    pd.read_csv(m).head(0).to_csv(bad, index=False)  # an empty manifest is not an error
    metrics = dedup(bad, tmp_path / "o.csv", DedupParams())
    assert metrics["total"] == {"images": 0, "images_with_duplicates": 0, "removed": 0, "kept": 0}


def test_cli(tmp_path, dataset):
    _, m = dataset
    params = tmp_path / "params.yaml"
    params.write_text("dedup:\n  similarity: similar\n  workers: 1\n")
    out, metrics = tmp_path / "out.csv", tmp_path / "metrics" / "dedup.json"
    result = CliRunner().invoke(app, ["dedup", str(m), str(out), "--params", str(params), "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    got = json.loads(metrics.read_text())
    assert got["engine"] == "fast" and set(got["engines"]) == {"fast", "difpy", "agreement"}
    assert got["criterion"] == {"px_size": 50, "mse_threshold": 5.0, "rotations": True, "same_dim": True}
    assert len(read_table(out)) == len(pd.read_csv(m))
    params.write_text("dedup:\n  similarity: nearly\n")
    result = CliRunner().invoke(app, ["dedup", str(m), str(out), "--params", str(params)])
    assert result.exit_code == 2 and "dedup.similarity" in result.output
