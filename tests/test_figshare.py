"""The figshare release (Cheng et al.): real MATLAB v7.3 files written with h5py, read back in MATLAB's
orientation, windowed to 8 bits, quarantined when bad, ingested from every packaging the release comes in."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmri.cli import app
from synthmri.data import figshare as fs
from synthmri.data.audit import audit
from synthmri.data.dedup import dedup
from synthmri.data.demo import TRUTH_FILE
from synthmri.data.demo_figshare import (
    OUTER_ZIP, TRUTH_COLUMNS, MatVar, inner_ranges, make_figshare_demo, mat73_bytes, slice_vars, zip_bytes,
)
from synthmri.data.ingest import ingest
from synthmri.data.ingest_figshare import DUPLICATE, NOT_A_ZIP, TOO_DEEP, _check_accounting
from synthmri.io import read_table
from synthmri.params import AuditParams, DedupParams, DemoFigshareParams, DemoParams, IngestParams
from tests.conftest import copy_project, sh

CLASSES = ("glioma", "meningioma", "pituitary")
TINY = DemoParams(size=48, figshare=DemoFigshareParams(patients_per_class=5, min_slices=2, max_slices=3,
                                                       small_fraction=0.2))
CFG = IngestParams(workers=1)


def _slice(image=None, label=1.0, pid="100360", mask=None, border=(3.0, 4.0, 5.0, 6.0)) -> bytes:
    image = np.arange(6 * 9, dtype=np.int16).reshape(6, 9) * 7 if image is None else image
    mask = np.zeros(image.shape, np.uint8) if mask is None else mask
    return mat73_bytes(slice_vars(image, label, pid, mask, np.asarray(border)))


def _ingest(source: Path, out: Path, classes=CLASSES, cfg=CFG) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    m = ingest(source, out, cfg, classes, "figshare")
    return m, read_table(out / "manifest.csv"), read_table(out / "quarantine.csv")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The tiny demo release, and its truth."""
    raw = tmp_path_factory.mktemp("figshare") / "raw"
    summary = make_figshare_demo(raw, TINY)
    return raw, summary, read_table(raw / TRUTH_FILE)


# ---- the .mat format --------------------------------------------------------------------------------


def test_orientation_round_trips_as_matlab_shows_it():
    """A non-square, asymmetric image: HDF5 holds MATLAB's column-major transpose, read_slice undoes it."""
    image = np.arange(6 * 9, dtype=np.int16).reshape(6, 9) * 7  # 6 rows, 9 columns, as MATLAB shows it
    image[0, 8] = 1000  # top-right corner marked
    mask = np.zeros((6, 9), np.uint8)
    mask[1:3, 5:8] = 1
    data = _slice(image, mask=mask)
    with h5py.File(io.BytesIO(data), "r") as f:
        raw = f["cjdata/image"][()]
        assert raw.shape == (9, 6)  # what h5py sees: columns first
        assert np.array_equal(raw[0], image[:, 0])  # HDF5's first row is MATLAB's first column
        assert f["cjdata/image"].attrs["MATLAB_class"] == b"int16"
        assert f["cjdata/tumorMask"].attrs["MATLAB_class"] == b"logical"
        assert f["cjdata/PID"].shape == (6, 1) and f["cjdata/tumorBorder"].shape == (4, 1)
    s = fs.read_slice(data, 10**6)
    assert s.image.shape == (6, 9) and s.image.dtype == np.int16 and np.array_equal(s.image, image)
    assert s.image[0, 8] == 1000
    assert np.array_equal(s.mask, mask.astype(bool)) and s.border.tolist() == [3, 4, 5, 6]


def test_v73_header_and_userblock(release):
    raw, _, _ = release
    with zipfile.ZipFile(raw / OUTER_ZIP) as outer:
        cvind = outer.read(fs.CVIND_FILE)
        inner = zipfile.ZipFile(io.BytesIO(outer.read(sorted(n for n in outer.namelist() if n.endswith(".zip"))[0])))
        mat = inner.read(inner.namelist()[0])
    for data in (mat, cvind):
        assert data.startswith(b"MATLAB 7.3 MAT-file")
        assert data[124:128] == b"\x00\x02IM"  # version 0x0200, little-endian indicator
        assert data[512:520] == b"\x89HDF\r\n\x1a\n"  # the HDF5 superblock right after the 512-byte userblock
        with h5py.File(io.BytesIO(data), "r") as f:
            assert f.userblock_size == 512
    from scipy.io import loadmat

    with pytest.raises(NotImplementedError):  # scipy refuses v7.3, as it does the release's files
        loadmat(io.BytesIO(mat))


@pytest.mark.parametrize("label, cls", [(1.0, "meningioma"), (2.0, "glioma"), (3.0, "pituitary")])
def test_label_mapping(label, cls):
    s = fs.read_slice(_slice(label=label), 10**6)
    assert (s.label, s.cls) == (int(label), cls)


@pytest.mark.parametrize("pid", ["100360", "MR040167F", "007123", "TCGA-02 x", "Ünï"])
def test_pid_decoding(pid):
    assert fs.read_slice(_slice(pid=pid), 10**6).pid == pid
    assert fs.decode_pid(np.array([ord(c) for c in pid] + [0], np.uint16)) == pid  # trailing NUL dropped


def test_window_to_8bit():
    image = np.arange(1000, dtype=np.int16).reshape(20, 50)
    u8, lo, hi = fs.to_8bit(image, (0.5, 99.5))
    assert (lo, hi) == pytest.approx((4.995, 994.005))
    assert u8.dtype == np.uint8 and u8.shape == image.shape
    assert u8[0, :5].tolist() == [0] * 5 and u8[-1, -5:].tolist() == [255] * 5  # clipped outside the window
    assert np.all(np.diff(u8.ravel().astype(int)) >= 0)  # monotonic
    assert u8.ravel()[500] == round((500 - lo) * 255 / (hi - lo))
    # per slice: a slice with another gain and offset maps to the same 8-bit picture
    assert np.array_equal(fs.to_8bit((image * 3 + 200).astype(np.int16), (0.5, 99.5))[0], u8)
    assert np.array_equal(fs.to_8bit(image, (0, 100))[0], np.round(image / 999 * 255).astype(np.uint8))
    with pytest.raises(fs.MatError, match="no contrast"):
        fs.to_8bit(np.full((4, 4), 7, np.int16), (0.5, 99.5))


# ---- quarantine ---------------------------------------------------------------------------------------


def _bad_files() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, the start of its quarantine reason)."""
    img = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    no_struct = mat73_bytes({"other": MatVar(np.ones((2, 2)), "double")})
    no_field = mat73_bytes({"cjdata": {k: v for k, v in slice_vars(img, 1, "1", img * 0, [1, 2])["cjdata"].items()
                                       if k != "tumorMask"}})
    cube = mat73_bytes({"cjdata": {**slice_vars(img, 1, "1", img * 0, [1, 2])["cjdata"],
                                   "image": MatVar(np.zeros((4, 40, 40), np.int16), "int16")}})
    return {
        "20.mat": (b"this is text, not HDF5\n", "not HDF5"),
        "21.mat": (no_struct, "no cjdata struct"),
        "22.mat": (no_field, "cjdata lacks field(s) ['tumorMask']"),
        "23.mat": (_slice(img, label=7.0), "unknown label 7"),
        "24.mat": (cube, "cjdata.image has 3 dimensions"),
        "25.mat": (_slice(img, mask=np.zeros((40, 39), np.uint8)), "tumorMask is 39x40, image 40x40"),
        "26.mat": (_slice(img, border=(1.0, 2.0, 3.0)), "tumorBorder holds 3 values"),
        "27.mat": (_slice(img, pid=""), "empty PID"),
        "28.mat": (_slice(np.ones((40, 40), np.int16) * 5), "no contrast"),
        "29.mat": (_slice(img[:20, :20]), "too small: 20x20"),
        "30.mat": (b"", "not HDF5"),
    }


def test_each_kind_of_bad_mat_is_quarantined_with_its_reason(tmp_path):
    src = tmp_path / "mats"
    src.mkdir()
    good = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    (src / "1.mat").write_bytes(_slice(good, label=2.0, pid="MR7"))
    for name, (data, _) in _bad_files().items():
        (src / name).write_bytes(data)
    (src / "._1.mat").write_bytes(b"AppleDouble")
    m, man, q = _ingest(src, tmp_path / "out")
    assert man["relpath"].tolist() == ["1.mat"] and man["class"].tolist() == ["glioma"]
    reasons = dict(zip(q["relpath"], q["reason"]))
    for name, (_, why) in _bad_files().items():
        assert reasons.pop(name).startswith(why), (name, why)
    assert reasons == {"._1.mat": "hidden/system file"}
    assert m["files"] == 1 + len(_bad_files()) + 1 and m["quarantined"] == len(_bad_files()) + 1
    assert set(q["split"]) == {""}


def test_a_class_outside_data_classes_is_quarantined_not_dropped(tmp_path):
    src = tmp_path / "mats"
    src.mkdir()
    img = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    for n, label in ((1, 1.0), (2, 3.0)):
        (src / f"{n}.mat").write_bytes(_slice(img, label=label))
    _, man, q = _ingest(src, tmp_path / "out", classes=("meningioma", "glioma"))
    assert man["relpath"].tolist() == ["1.mat"]
    assert q["reason"].tolist() == ["class pituitary (label 3) is not in data.classes ['meningioma', 'glioma']"]
    assert sorted(p.name for p in (tmp_path / "out/slices").iterdir()) == ["1.png", "1_mask.png"]  # none for it


# ---- the release, every packaging ---------------------------------------------------------------------


def _packagings(raw: Path, tmp: Path) -> dict[str, Path]:
    """The outer zip alone, the four inner zips with cvind.mat in a folder, and a folder of .mat files."""
    outer = tmp / "outer"
    outer.mkdir()
    shutil.copy2(raw / OUTER_ZIP, outer / OUTER_ZIP)
    inner, mats = tmp / "inner", tmp / "mats"
    with zipfile.ZipFile(raw / OUTER_ZIP) as zf:
        zf.extractall(inner)
    mats.mkdir()
    for z in sorted(inner.glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            zf.extractall(mats)
    shutil.copy2(inner / fs.CVIND_FILE, mats / fs.CVIND_FILE)
    return {"outer zip": outer / OUTER_ZIP, "inner zips": inner, "mat folder": mats}


def test_outer_zip_inner_zips_and_folder_give_identical_manifests(release, tmp_path, monkeypatch):
    raw, _, truth = release
    monkeypatch.chdir(tmp_path)
    sources = _packagings(raw, tmp_path)
    manifests, metrics = {}, {}
    for kind, source in sources.items():
        metrics[kind], man, q = _ingest(source, Path("out"))
        assert q.empty, kind
        pngs = sorted(p.name for p in Path("out/slices").iterdir())
        assert len(pngs) == 2 * len(truth)
        manifests[kind] = man
    assert [s.split("/")[:-1] for s in manifests["outer zip"]["source"].head(1)] == [
        [OUTER_ZIP, truth["inner_zip"].iloc[0]]]
    assert manifests["mat folder"]["source"].tolist() == manifests["mat folder"]["relpath"].tolist()
    first = manifests["outer zip"].drop(columns="source")
    for kind in ("inner zips", "mat folder"):
        pd.testing.assert_frame_equal(manifests[kind].drop(columns="source"), first)
    assert metrics["outer zip"]["outside_layout"]["names"] == [f"{OUTER_ZIP}/README.txt", f"{OUTER_ZIP}/{fs.CVIND_FILE}"]
    assert metrics["outer zip"]["archive"]["zips"] == 5 and metrics["inner zips"]["archive"]["zips"] == 4
    assert metrics["mat folder"]["archive"]["zips"] == 0


def test_counts_match_the_generators_truth(release, tmp_path, monkeypatch):
    raw, summary, truth = release
    monkeypatch.chdir(tmp_path)
    m, man, q = _ingest(raw, Path("out"))  # the demo folder: the outer zip and demo_truth.csv
    assert q.empty and m["outside_layout"]["names"][0] == TRUTH_FILE
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    n = len(truth)
    assert summary["slices"] == n == m["images"] == len(man)
    assert man["relpath"].tolist() == [f"{i}.mat" for i in range(1, n + 1)]  # release order
    t = truth.set_index("relpath").loc[man["relpath"]]
    assert man["class"].tolist() == t["class"].tolist()
    assert man["patient"].tolist() == t["patient"].tolist()
    assert man["fold"].astype(int).tolist() == t["fold"].tolist()
    assert man["label"].astype(int).tolist() == t["label"].tolist()
    assert man["mask_pixels"].astype(int).tolist() == t["mask_pixels"].tolist()
    assert (man["width"].tolist(), man["height"].tolist()) == (t["width"].tolist(), t["height"].tolist())
    assert set(man["split"]) == {""}
    patients = 5 * 3
    assert summary["patients"] == m["patients"]["count"] == truth["patient"].nunique() == patients
    assert m["patients"]["per_class"] == {c: 5 for c in CLASSES} and m["patients"]["with_several_classes"] == 0
    per_class = truth["class"].value_counts().to_dict()
    assert m["per_split_class"] == {"unsplit": {c: per_class[c] for c in CLASSES}}
    assert sum(per_class.values()) == n
    assert 2 * patients <= n <= 3 * patients
    assert m["cvind"]["patients_in_several_folds"] == 0 and m["cvind"]["slices"] == n
    assert m["cvind"]["folds"] == {k: int(v) for k, v in sorted(truth["fold"].value_counts().items())}
    assert {int(w) for w in man["width"]} == {48, 32}  # the common size and the smaller scans
    assert any(not p.isdigit() for p in man["patient"]) and any(p.startswith("0") for p in man["patient"])
    # the PNGs are the windowed slices, the masks beside them
    row = man.iloc[0]
    png = np.asarray(Image.open(row["path"]))
    mask = np.asarray(Image.open(row["mask"]))
    assert png.dtype == np.uint8 and png.shape == (row["height"], row["width"]) and png.min() == 0 and png.max() == 255
    assert set(np.unique(mask)) <= {0, 255} and int((mask == 255).sum()) == int(row["mask_pixels"])
    assert row["mask"] == row["path"].replace(".png", "_mask.png")


def test_cvind_is_patient_wise_and_inner_zips_contiguous(release):
    raw, _, truth = release
    with zipfile.ZipFile(raw / OUTER_ZIP) as zf:
        names = zf.namelist()
        folds = fs.read_cvind(zf.read(fs.CVIND_FILE))
    assert folds.tolist() == truth["fold"].tolist() and set(folds) == {1, 2, 3, 4, 5}
    assert truth.groupby("patient")["fold"].nunique().max() == 1
    ranges = inner_ranges(len(truth))
    assert names == [f"brainTumorDataPublic_{a}-{b}.zip" for a, b in ranges] + [fs.CVIND_FILE, "README.txt"]
    assert ranges[0][0] == 1 and ranges[-1][1] == len(truth) and all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    assert inner_ranges(3064) == [(1, 766), (767, 1532), (1533, 2298), (2299, 3064)]  # the release's names
    # a patient's slices are neighbours in the release, each patient one class
    assert truth.groupby("patient")["class"].nunique().max() == 1
    assert all(np.ptp(g["number"].to_numpy()) == len(g) - 1 for _, g in truth.groupby("patient"))


def test_same_seed_same_bytes(release, tmp_path):
    raw, _, _ = release
    again = tmp_path / "again"
    make_figshare_demo(again, TINY)
    assert (again / OUTER_ZIP).read_bytes() == (raw / OUTER_ZIP).read_bytes()


# ---- zips: safety and accounting ------------------------------------------------------------------------


def test_zip_rules_as_for_kaggle(tmp_path):
    img = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    good = _slice(img)
    traversal = tmp_path / "traversal.zip"
    traversal.write_bytes(zip_bytes({"inner.zip": zip_bytes({"../1.mat": good})}))
    with pytest.raises(ValueError, match=r"contains '\.\.'"):
        ingest(traversal, tmp_path / "o1", CFG, CLASSES, "figshare")
    many = tmp_path / "many.zip"
    many.write_bytes(zip_bytes({"a.zip": zip_bytes({f"{i}.mat": good for i in range(1, 5)})}))
    with pytest.raises(ValueError, match="ingest.max_archive_members=4"):  # counted over every level
        ingest(many, tmp_path / "o2", IngestParams(workers=1, max_archive_members=4), CLASSES, "figshare")
    with pytest.raises(ValueError, match="ingest.max_archive_bytes"):
        ingest(many, tmp_path / "o3", IngestParams(workers=1, max_archive_bytes=len(good) * 3), CLASSES, "figshare")
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=NOT_A_ZIP):
        ingest(not_zip, tmp_path / "o4", CFG, CLASSES, "figshare")


def test_nested_hidden_broken_and_duplicate_members_are_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    good = _slice(img)
    release = zip_bytes({
        "a.zip": zip_bytes({"1.mat": good, "deep.zip": zip_bytes({"9.mat": good}), "sub/2.mat": good}),
        "b.zip": zip_bytes({"1.mat": good}),  # the same name again: quarantined, not a second 1.mat
        "broken.zip": b"PK but not really",
        "__MACOSX/._a.zip": b"AppleDouble",
        "notes.txt": b"hello",
    })
    (tmp_path / "r.zip").write_bytes(release)
    m, man, q = _ingest(tmp_path / "r.zip", Path("out"))
    assert man["relpath"].tolist() == ["1.mat", "sub/2.mat"]
    assert man["source"].tolist() == ["r.zip/a.zip/1.mat", "r.zip/a.zip/sub/2.mat"]
    assert dict(zip(q["path"], q["reason"])) == {
        "r.zip/__MACOSX/._a.zip": "hidden/system file",
        "r.zip/a.zip/deep.zip": TOO_DEEP,
        "r.zip/b.zip/1.mat": f"{DUPLICATE}: also at r.zip/a.zip/1.mat",
        "r.zip/broken.zip": f"{NOT_A_ZIP}: File is not a zip file",
    }
    assert m["outside_layout"]["names"] == ["r.zip/notes.txt"]
    assert m["files"] == 6 and m["cvind"] is None and set(man["fold"]) == {""}
    assert not list(Path("out").glob(".extracted.*"))  # the spooled inner zips are gone


def test_accounting_covers_zip_members(tmp_path):
    img = np.arange(40 * 40, dtype=np.int16).reshape(40, 40)
    (tmp_path / "r.zip").write_bytes(zip_bytes({"a.zip": zip_bytes({"1.mat": _slice(img), "2.mat": _slice(img)})}))
    from synthmri.data.ingest import _Source

    src = _Source(str(tmp_path), None)
    _check_accounting(tmp_path / "r.zip", src, ["r.zip/a.zip/1.mat", "r.zip/a.zip/2.mat"], ["r.zip", "r.zip/a.zip"])
    with pytest.raises(RuntimeError, match=r"1 missing from .*r.zip/a.zip/2.mat"):
        _check_accounting(tmp_path / "r.zip", src, ["r.zip/a.zip/1.mat"], ["r.zip", "r.zip/a.zip"])
    with pytest.raises(RuntimeError, match="listed more than once"):
        _check_accounting(tmp_path / "r.zip", src, ["r.zip/a.zip/1.mat"] * 2 + ["r.zip/a.zip/2.mat"],
                          ["r.zip", "r.zip/a.zip"])


def test_kaggle_format_on_the_release_says_which_format(release, tmp_path):
    raw, _, _ = release
    with pytest.raises(ValueError, match="set data.format: figshare"):
        ingest(raw, tmp_path / "out", CFG, CLASSES, "kaggle")


# ---- downstream ------------------------------------------------------------------------------------------


def test_patient_survives_audit_and_dedup(release, tmp_path, monkeypatch):
    raw, _, truth = release
    monkeypatch.chdir(tmp_path)
    _, man, _ = _ingest(raw, Path("out"))
    audit(Path("out/manifest.csv"), Path("audit.csv"), Path("plots"), AuditParams(workers=1, histogram_samples=4),
          CLASSES)
    metrics = dedup(Path("audit.csv"), Path("dedup.csv"), DedupParams(workers=1, compare_engines=False))
    for table in ("audit.csv", "dedup.csv"):
        out = read_table(table)
        assert out["patient"].tolist() == man["patient"].tolist() == truth["patient"].tolist(), table
        assert out["fold"].astype(int).tolist() == truth["fold"].tolist() and out["mask"].tolist() == man["mask"].tolist()
    assert any(p.startswith("0") for p in read_table("dedup.csv")["patient"])  # "0..." stays text
    assert metrics["unsplit"]["images"] == metrics["total"]["images"] == len(truth)


def test_cli_demo_data_format_figshare(tmp_path, root):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  size: 48\n  figshare: {patients_per_class: 1, min_slices: 1, max_slices: 1}\n")
    result = CliRunner().invoke(app, ["demo-data", "--format", "figshare", str(tmp_path / "d"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [TRUTH_FILE, OUTER_ZIP]
    assert len(read_table(tmp_path / "d" / TRUTH_FILE)) == 3
    bad = CliRunner().invoke(app, ["demo-data", "--format", "nifti", str(tmp_path / "e"), "--params", str(params)])
    assert bad.exit_code == 2 and "expected kaggle or figshare" in bad.output


@pytest.mark.slow
def test_demo_figshare_through_dvc(tmp_path, root, venv_env):
    """The figshare demo through the real dvc CLI: demo_data writes the release, ingest reads it, audit and
    dedup carry the patient IDs."""
    repo = copy_project(root, tmp_path / "repo", venv_env)
    sh(["synthmri", "params", "profile=demo", "demo.format=figshare", "data.format=figshare",
        "data.classes=[glioma,meningioma,pituitary]", "demo.size=48", "demo.figshare.patients_per_class=2",
        "demo.figshare.max_slices=3"], repo, venv_env)
    out = sh(["dvc", "repro", "dedup"], repo, venv_env)
    assert "Running stage 'demo_data'" in out and "Running stage 'ingest'" in out
    truth = read_table(repo / "data/raw/demo" / TRUTH_FILE)
    man = read_table(repo / "data/interim/ingest/manifest.csv")
    assert man["relpath"].tolist() == [f"{i}.mat" for i in range(1, len(truth) + 1)]
    assert man["patient"].tolist() == truth["patient"].tolist() and man["class"].tolist() == truth["class"].tolist()
    assert read_table(repo / "data/interim/dedup.csv")["patient"].tolist() == truth["patient"].tolist()
    assert "Running stage" not in sh(["dvc", "repro", "dedup"], repo, venv_env)  # nothing stale, nothing rerun


def test_preflight_accepts_the_release_under_data_format_figshare(release):
    from synthmri.preflight import _check_raw

    raw, _, _ = release
    assert _check_raw({"data": {"raw": raw.as_posix(), "format": "figshare"}}, Path("/")).status == "ok"
    assert _check_raw({"data": {"raw": raw.as_posix()}}, Path("/")).status == "FAIL"  # not the Kaggle layout
