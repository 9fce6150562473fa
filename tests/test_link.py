"""The link stage: Kaggle images matched to the figshare slices they were exported from, on real image files
(PNG, JPEG, resized), and on a Kaggle-layout export of the figshare demo whose truth is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmri.cli import app
from synthmri.data.dedup import dedup
from synthmri.data.dedup_engines import load_thumbnails
from synthmri.data.demo import TRUTH_FILE, render_slice
from synthmri.data.demo_link import FIGSHARE_DIR, KAGGLE_DIR, make_kaggle_from_figshare, truth_counts
from synthmri.data.ingest import ingest
from synthmri.data.link import MATCHED, link, match, rank_vectors
from synthmri.io import read_table
from synthmri.params import DedupParams, DemoFigshareParams, DemoParams, IngestParams, LinkParams
from tests.conftest import copy_project, sh

CFG = LinkParams(workers=1)
INGEST = IngestParams(workers=1)
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
# ~200 figshare slices of 36 patients, ~170 exported: enough that one wrong match shows below 0.99
DEMO = DemoParams(size=96, figshare=DemoFigshareParams(patients_per_class=12, min_slices=4, max_slices=7))


# ---- the matcher on real image files -------------------------------------------------------------------


def _slice(seed: int, cls: str = "glioma", plane: str = "axial", side: int = 128) -> np.ndarray:
    img, _ = render_slice(np.random.default_rng([seed]), cls, plane, side, side)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _save(path: Path, u8: np.ndarray, fmt: str = "PNG", **kw) -> str:
    Image.fromarray(u8).save(path, format=fmt, **kw)
    return str(path)


def _thumbs(paths: list[str]) -> np.ndarray:
    th = load_thumbnails(paths, CFG.px_size, False, 1)
    assert not th.errors
    return th.thumbs


def test_rank_vectors_ignore_any_increasing_intensity_map():
    gray = np.random.default_rng(0).integers(0, 256, (3, 16, 16))
    t = np.repeat(gray[..., None], 3, axis=3).astype(np.uint8)  # grey thumbnails, as the dedup engine makes them
    warped = 255 * (t / 255.0) ** 0.5 * 0.8 + 20  # gamma, contrast, offset: strictly increasing
    np.testing.assert_allclose(rank_vectors(t, 0.6), rank_vectors(warped, 0.6), atol=1e-6)
    assert np.allclose(np.linalg.norm(rank_vectors(t, 0.6), axis=1), 1)
    assert not rank_vectors(np.zeros((1, 8, 8, 3), np.uint8), 0.6).any()  # a flat image matches nothing


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Five different slices as PNG references, and altered copies of the first."""
    d = tmp_path_factory.mktemp("matcher")
    images = [_slice(s, cls) for s, cls in zip(range(5), ("glioma", "meningioma", "pituitary", "glioma", "glioma"))]
    refs = [_save(d / f"ref{i}.png", a) for i, a in enumerate(images)]
    x = images[0].astype(np.float64) / 255
    half = np.asarray(Image.fromarray(images[0]).resize((64, 64), Image.BICUBIC))
    altered = {
        "gamma 0.6": _save(d / "gamma.png", np.round(255 * x**0.6).astype(np.uint8)),
        "gamma 1.6": _save(d / "gamma16.png", np.round(255 * x**1.6).astype(np.uint8)),
        "contrast x0.7 + 30": _save(d / "contrast.png", np.round(255 * x * 0.7 + 30).astype(np.uint8)),
        "jpeg q75": _save(d / "q75.jpg", images[0], "JPEG", quality=75),
        "0.5x resize": _save(d / "half.png", half),
        "all at once": _save(d / "all.jpg", np.round(200 * (np.asarray(half) / 255) ** 1.4).astype(np.uint8),
                             "JPEG", quality=75),
        "mirrored": _save(d / "mirror.jpg", np.ascontiguousarray(images[0][:, ::-1]), "JPEG", quality=75),
    }
    other = _save(d / "other.jpg", _slice(99, "glioma"), "JPEG", quality=75)  # another head, same plane
    return refs, altered, other


def test_matcher_is_robust_to_intensity_jpeg_and_resize(slices):
    refs, altered, other = slices
    m = match(_thumbs(list(altered.values())), _thumbs(refs), np.arange(len(refs)), CFG.rank_floor, flips=True)
    scores = {k: round(float(v), 3) for k, v in zip(altered, m.score)}
    print("scores of altered copies:", scores)
    assert m.best.tolist() == [0] * len(altered), scores
    assert (m.score >= CFG.min_score).all() and (m.patient_margin >= CFG.min_margin).all(), scores
    assert m.orientation.tolist() == [0] * (len(altered) - 1) + [4]  # the mirrored copy: found mirrored
    no = match(_thumbs([other]), _thumbs(refs), np.arange(len(refs)), CFG.rank_floor, flips=True)
    print("score of an unrelated slice:", round(float(no.score[0]), 3))
    assert no.score[0] < CFG.min_score


def test_without_flips_a_mirrored_copy_is_not_matched(slices):
    refs, altered, _ = slices
    m = match(_thumbs([altered["mirrored"]]), _thumbs(refs), np.arange(len(refs)), CFG.rank_floor, flips=False)
    assert m.score[0] < CFG.min_score


def test_blocks_give_the_same_answer(slices):
    refs, altered, other = slices
    q, r = _thumbs([*altered.values(), other]), _thumbs(refs)
    groups = np.array([0, 1, 1, 2, 2])  # two patients with two slices each: margins per patient
    a, b = match(q, r, groups, 0.6, True), match(q, r, groups, 0.6, True, block=3)
    for f in ("best", "orientation"):
        assert getattr(a, f).tolist() == getattr(b, f).tolist()
    for f in ("score", "margin", "patient_margin"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), atol=1e-6)
    assert (a.patient_margin >= a.margin - 1e-6).all()  # another patient's best is never above the second slice


# ---- the demo export with known truth -----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The kaggle-from-figshare demo, through ingest, dedup and link; the truth and the link's outputs."""
    d = tmp_path_factory.mktemp("link_demo")
    summary = make_kaggle_from_figshare(d / "raw", DEMO)
    ingest(d / "raw" / KAGGLE_DIR, d / "ingest", INGEST, CLASSES, "kaggle")
    dedup(d / "ingest" / "manifest.csv", d / "dedup.csv", DedupParams(compare_engines=False, workers=1))
    cfg = LinkParams(figshare=str(d / "raw" / FIGSHARE_DIR), workers=1)
    metrics = link(d / "dedup.csv", d / "link", cfg, INGEST)
    out = read_table(d / "link" / "manifest.csv")
    truth = read_table(d / "raw" / KAGGLE_DIR / TRUTH_FILE)
    return summary, truth, out, metrics


def test_demo_export_has_straddling_patients_and_unrelated_images(demo):
    summary, truth, out, _ = demo
    assert summary == {"format": "kaggle-from-figshare", **truth_counts(truth)}
    assert summary["patients_in_both"] >= 10 and summary["unrelated"] >= 40
    assert len(out) == len(truth)  # nothing quarantined: every exported file is a row
    assert truth["detail"].str.contains("resized").sum() >= 20 and truth["detail"].str.contains("mirrored").any()
    assert (truth.loc[truth["class"] == "notumor", "figshare"] == "").all()


def test_demo_matching_precision_and_recall(demo):
    _, truth, out, metrics = demo
    t = out.merge(truth[["relpath", "figshare", "patient"]].rename(columns={"patient": "true_patient"}),
                  on="relpath", validate="one_to_one")
    predicted = t["link_status"] == MATCHED
    positive = t["figshare"] != ""
    correct = predicted & (t["link_best"] == t["figshare"])
    precision, recall = correct.sum() / predicted.sum(), correct.sum() / positive.sum()
    patient_ok = predicted & (t["patient"] == t["true_patient"])
    print(f"link on the demo: {int(predicted.sum())} matched, {int(positive.sum())} exported from a slice, "
          f"{int(correct.sum())} to the right slice: precision {precision:.4f}, recall {recall:.4f}; "
          f"right patient {int(patient_ok.sum())}; unrelated images {int((~positive).sum())}, "
          f"of them matched {int((predicted & ~positive).sum())}; "
          f"scores: matched min {metrics['scores']['matched_min']}, unmatched max {metrics['scores']['unmatched_max']}")
    assert precision >= 0.99 and recall >= 0.99
    assert patient_ok.sum() == correct.sum()
    assert (t.loc[~predicted, "patient"] == "").all()  # never forced: unmatched rows keep no patient


def test_demo_leakage_counts_equal_the_truth(demo):
    summary, truth, out, metrics = demo
    leak = metrics["leakage"]["all_images"]
    assert leak["patients"]["in_both"] == summary["patients_in_both"]
    assert leak["test_images_with_patient_in_train"] == summary["test_images_with_patient_in_train"]
    kaggle = {"Training": "train", "Testing": "test"}
    assert {s: metrics["matched"][kaggle[s]] for s in kaggle} == summary["from_figshare"]
    assert sum(sum(v.values()) for v in metrics["unmatched"].values()) == summary["unrelated"]
    assert metrics["class_disagreements"]["count"] == 0
    assert metrics["leakage"]["after_dedup"]["images"] == int((out["dedup_status"] == "keep").sum())
    # manifest-compatible: the dedup rows and columns, in order, with patient filled and link_* added
    dd = read_table(Path(metrics["figshare"]["source"]).parents[1] / "dedup.csv")
    assert out.columns.tolist()[: len(dd.columns)] == dd.columns.tolist()
    assert out["relpath"].tolist() == dd["relpath"].tolist()


def test_without_the_release_the_stage_says_so_and_changes_nothing(demo, tmp_path):
    _, _, out, metrics = demo
    dd = Path(metrics["figshare"]["source"]).parents[1] / "dedup.csv"
    m = link(dd, tmp_path / "link", LinkParams(figshare=str(tmp_path / "absent"), workers=1), INGEST)
    assert m["ran"] is False and "no figshare release" in m["reason"]
    got = read_table(tmp_path / "link" / "manifest.csv")
    assert (got["patient"] == "").all() and got["link_status"].str.startswith("not compared").all()
    assert got["relpath"].tolist() == out["relpath"].tolist()


def test_an_ingest_manifest_as_link_figshare_gives_the_same_matches(demo, tmp_path):
    _, _, out, metrics = demo
    base = Path(metrics["figshare"]["source"]).parents[1]
    cfg = LinkParams(figshare=str(base / "link" / "figshare" / "manifest.csv"), workers=1)
    link(base / "dedup.csv", tmp_path / "link", cfg, INGEST)
    got = read_table(tmp_path / "link" / "manifest.csv")
    assert got["patient"].tolist() == out["patient"].tolist()


def test_cli_link_and_demo_data(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  size: 64\n  figshare: {patients_per_class: 2, min_slices: 2, max_slices: 3}\n"
                      f"link:\n  figshare: {tmp_path / 'd' / FIGSHARE_DIR}\n  workers: 1\n")
    r = CliRunner().invoke(app, ["demo-data", "--format", "kaggle-from-figshare", str(tmp_path / "d"),
                                 "--params", str(params)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [FIGSHARE_DIR, KAGGLE_DIR]
    bad = pd.DataFrame({"split": ["train"]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = CliRunner().invoke(app, ["link", str(tmp_path / "bad.csv"), str(tmp_path / "out"), "--params", str(params)])
    assert r.exit_code == 2 and "missing column(s)" in r.output
    (tmp_path / "d" / "stray.txt").write_text("x")  # a folder that is not the demo is never replaced
    r = CliRunner().invoke(app, ["demo-data", "--format", "kaggle-from-figshare", str(tmp_path / "d"),
                                 "--params", str(params)])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output


@pytest.mark.slow
def test_link_stage_through_dvc(tmp_path, root, venv_env):
    """The real dvc CLI: demo_data writes the export, ingest/dedup read its Kaggle half, link its figshare half."""
    repo = copy_project(root, tmp_path / "repo", venv_env)
    sh(["synthmri", "params", "profile=demo", "demo.format=kaggle-from-figshare", "data.raw=data/raw/demo/kaggle",
        "link.figshare=data/raw/demo/figshare", "demo.size=64", "demo.figshare.patients_per_class=3",
        "demo.figshare.max_slices=4"], repo, venv_env)
    out = sh(["dvc", "repro", "link"], repo, venv_env)
    assert "Running stage 'link'" in out
    truth = read_table(repo / "data/raw/demo/kaggle" / TRUTH_FILE)
    m = json.loads((repo / "metrics/link.json").read_text())
    want = truth_counts(truth)
    assert m["ran"] and m["leakage"]["all_images"]["patients"]["in_both"] == want["patients_in_both"]
    assert m["leakage"]["all_images"]["test_images_with_patient_in_train"] == want["test_images_with_patient_in_train"]
    assert m["provenance"]["demo_data"] is True
    assert "Running stage" not in sh(["dvc", "repro", "link"], repo, venv_env)  # nothing stale, nothing rerun


def test_rows_with_a_patient_are_kept_not_compared(demo, tmp_path):
    """A figshare manifest as input (data.format figshare): every row has its patient, nothing is matched."""
    _, _, _, metrics = demo
    fig = Path(metrics["figshare"]["source"]).parents[1] / "link" / "figshare" / "manifest.csv"
    m = link(fig, tmp_path / "link", LinkParams(figshare=str(fig), workers=1), INGEST)
    got = read_table(tmp_path / "link" / "manifest.csv")
    assert m["compared"] == 0 and m["status"] == {"patient known": len(got)}
    assert got["patient"].tolist() == read_table(fig)["patient"].tolist()
