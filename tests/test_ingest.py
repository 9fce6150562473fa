"""ingest: every file under Training/ and Testing/ lands in exactly one of manifest.csv / quarantine.csv."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmri import CLASSES
from synthmri.cli import app
from synthmri.data import ingest as ingest_mod
from synthmri.data.ingest import MANIFEST_COLUMNS, QUARANTINE_COLUMNS, ingest
from synthmri.io import read_table
from synthmri.params import IngestParams, ParamsError
from tests.conftest import sh

CFG = IngestParams(workers=1)
RNG = np.random.default_rng(0)
W, H = 36, 32  # the test images: above ingest.min_side (32), 1,152 px


def _gray(w=W, h=H) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def make_dataset(root: Path, per_class: int = 1) -> Path:
    """A clean Kaggle-layout folder: per_class tiny JPEGs in every split/class folder."""
    for split in ("Training", "Testing"):
        for c in CLASSES:
            for i in range(per_class):
                prefix = "Tr" if split == "Training" else "Te"
                _save(root / split / c / f"{prefix}-{c[:2]}_{i:04d}.jpg", Image.fromarray(_gray()))
    return root


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_table(out / "manifest.csv"), read_table(out / "quarantine.csv")


def files_on_disk(root: Path) -> set[str]:
    """Independent count of what ingest must account for: every non-folder entry under the splits."""
    out = set()
    for split in ("Training", "Testing"):
        for d, dirs, files in os.walk(root / split):
            rel = Path(d).relative_to(root).as_posix()
            out.update(f"{rel}/{n}" for n in files + [x for x in dirs if (Path(d) / x).is_symlink()])
    return out


def test_every_format_and_mode_is_accepted(tmp_path):
    src = make_dataset(tmp_path / "ds")
    g = src / "Training" / "glioma"
    expect = {  # name -> (format, mode)
        "png16.png": ("PNG", "I;16"),
        "cmyk.jpg": ("JPEG", "CMYK"),
        "rgba.png": ("PNG", "RGBA"),
        "anim.gif": ("GIF", "P"),
        "x.bmp": ("BMP", "RGB"),
        "x.tif": ("TIFF", "L"),
        "x.webp": ("WEBP", "RGB"),
        "pal.png": ("PNG", "P"),
        "UPPER.JPG": ("JPEG", "RGB"),
        "mixed.Jpeg": ("JPEG", "L"),
        unicodedata.normalize("NFC", "café_é.jpg"): ("JPEG", "L"),
        unicodedata.normalize("NFD", "café_é.jpg"): ("JPEG", "L"),  # a different file on Linux: both kept
        'comma, "quoted" name.png': ("PNG", "L"),
        "line\nbreak.png": ("PNG", "L"),
        "NA.jpg": ("JPEG", "L"),
    }
    _save(g / "png16.png", Image.fromarray((_gray().astype(np.uint16) * 257)))
    _save(g / "cmyk.jpg", Image.new("CMYK", (W, H), (10, 20, 30, 40)))
    _save(g / "rgba.png", Image.fromarray(RNG.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA"))
    frames = [Image.fromarray(_gray()).convert("P") for _ in range(2)]
    _save(g / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    _save(g / "x.bmp", Image.fromarray(_gray()).convert("RGB"))
    _save(g / "x.tif", Image.fromarray(_gray()))
    _save(g / "x.webp", Image.fromarray(_gray()).convert("RGB"), lossless=True)
    _save(g / "pal.png", Image.fromarray(_gray()).convert("RGB").quantize(8))
    _save(g / "UPPER.JPG", Image.fromarray(_gray()).convert("RGB"), format="JPEG")
    for name in ("mixed.Jpeg", *list(expect)[-5:]):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        _save(g / name, Image.fromarray(_gray()), format=fmt)
    assert len({n for n in os.listdir(g)} & set(expect)) == len(expect)  # NFC and NFD really differ on disk

    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    man, q = tables(tmp_path / "out")
    assert q.empty, q.to_dict("records")
    assert list(man.columns) == list(MANIFEST_COLUMNS)
    assert m["files"] == m["images"] == 8 + len(expect) and m["quarantined"] == 0
    assert m["per_split_class"]["train"]["glioma"] == 1 + len(expect)
    rows = {r.relpath: r for r in man.itertuples()}
    for name, (fmt, mode) in expect.items():
        r = rows[f"Training/glioma/{name}"]  # names exactly as on disk, through a CSV round trip
        assert (r.format, r.mode, r.width, r.height) == (fmt, mode, W, H), name
        assert r.sha256 == hashlib.sha256((g / name).read_bytes()).hexdigest()
        assert r.bytes == (g / name).stat().st_size
        assert Path(r.path) == (g / name).absolute()  # tmp_path is outside the cwd: absolute
        assert r._2 == "glioma" and r.split == "train"
    assert rows["Training/glioma/anim.gif"].frames == 2
    keys = list(zip(man.split, man["class"], man.relpath))
    assert keys == sorted(keys)


def test_bad_files_are_quarantined_with_reasons_and_counts_reconcile(tmp_path):
    src = make_dataset(tmp_path / "ds", per_class=2)
    outside = _save(tmp_path / "elsewhere" / "secret.jpg", Image.fromarray(_gray()))
    g, m_ = src / "Training" / "glioma", src / "Testing" / "meningioma"
    data = (g / "Tr-gl_0000.jpg").read_bytes()
    (g / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (g / "zero.jpg").write_bytes(b"")
    (g / "text.jpg").write_text("name,label\nx,1\n")
    _save(g / "bomb.png", Image.fromarray(np.zeros((48, 48), np.uint8)))  # 2,304 px > max_pixels
    _save(g / "lab.tif", Image.new("LAB", (W, H)))  # Pillow reads it, but no stage could make it grayscale
    (g / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (g / "._Tr-gl_0000.jpg").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    (src / "Training" / "stray.jpg").write_bytes(data)  # not in a class folder
    os.symlink(outside, m_ / "link_out.jpg")
    os.symlink("../../Training/glioma/Tr-gl_0000.jpg", m_ / "link_in.jpg")  # stays in the source: fine
    os.symlink(tmp_path / "nowhere.jpg", m_ / "dangling.jpg")
    os.symlink(outside.parent, src / "Testing" / "pituitary" / "dir_out")  # a folder: never followed
    os.symlink("..", src / "Testing" / "notumor" / "loop")  # a loop is a folder link too
    bad_name = os.fsencode(str(src / "Testing" / "notumor")) + b"/bad\xff.jpg"
    with open(bad_name, "wb") as f:
        f.write(data)

    m = ingest(src, tmp_path / "out", IngestParams(max_pixels=2000, workers=1), CLASSES)
    man, q = tables(tmp_path / "out")
    assert list(q.columns) == list(QUARANTINE_COLUMNS)
    reasons = dict(zip(q.relpath, q.reason))
    assert reasons["Training/glioma/truncated.jpg"].startswith("truncated")
    assert reasons["Training/glioma/zero.jpg"] == "empty file"
    assert reasons["Training/glioma/text.jpg"] == "not an image"
    assert reasons["Training/glioma/bomb.png"] == "decompression bomb: 48x48 exceeds 2000 pixels"
    assert reasons["Training/glioma/lab.tif"].startswith("unsupported mode LAB")
    assert reasons["Training/glioma/.DS_Store"] == reasons["Training/glioma/._Tr-gl_0000.jpg"] == "hidden/system file"
    assert reasons["Training/stray.jpg"] == "not in a class folder"
    assert reasons["Testing/meningioma/link_out.jpg"] == "link outside source"
    assert reasons["Testing/pituitary/dir_out"] == (
        f"link to a folder (never followed): points to {os.path.realpath(outside.parent)} outside the source"
    )
    assert reasons["Testing/meningioma/dangling.jpg"] == "broken link"
    assert reasons["Testing/notumor/loop"] == "link to a folder (never followed): points to Testing in the source"
    assert reasons["Testing/notumor/bad\\xff.jpg"] == "file name is not valid UTF-8"
    assert dict(zip(q.relpath, q["class"]))["Training/stray.jpg"] == ""
    assert "secret" not in " ".join(man.path)  # the outside file was never read

    link_in = man[man.relpath == "Testing/meningioma/link_in.jpg"].iloc[0]
    assert link_in.path.endswith("Testing/meningioma/link_in.jpg")  # the link's own path, not its target
    assert link_in.sha256 == hashlib.sha256(data).hexdigest()

    # reconciliation: each file on disk in exactly one table, and the metrics add up
    on_disk = {os.fsencode(p).decode("utf-8", "backslashreplace") for p in files_on_disk(src)}
    assert set(man.relpath) | set(q.relpath) == on_disk
    assert not set(man.relpath) & set(q.relpath)
    assert m["files"] == len(on_disk) == m["images"] + m["quarantined"] == len(man) + len(q)
    assert m["quarantine_reasons"] == {
        "broken link": 1, "decompression bomb": 1, "empty file": 1, "file name is not valid UTF-8": 1,
        "hidden/system file": 2, "link outside source": 1, "link to a folder (never followed)": 2, "not an image": 1,
        "not in a class folder": 1, "truncated": 1, "unsupported mode LAB": 1,
    }
    assert sum(sum(c.values()) for c in m["per_split_class"].values()) == len(man) == 17


def test_files_outside_the_layout_are_listed(tmp_path):
    src = make_dataset(tmp_path / "ds")
    (src / "README.md").write_text("Brain tumour MRI\n")
    (src / "extra").mkdir()
    (src / "extra" / "truth.csv").write_text("a,b\n")
    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    assert m["outside_layout"] == {"count": 2, "names": ["README.md", "extra/truth.csv"], "names_truncated": False}
    assert read_table(tmp_path / "out" / "outside_layout.csv").name.tolist() == ["README.md", "extra/truth.csv"]
    assert m["files"] == m["images"] == 8


def _zip_dir(src: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, prefix + p.relative_to(src).as_posix())
    return archive


def test_zip_with_wrapping_folder_matches_folder_source(tmp_path, monkeypatch):
    src = make_dataset(tmp_path / "ds", per_class=2)
    _save(src / "Training" / "notumor" / "été, «x».PNG", Image.fromarray(_gray()), format="PNG")
    (src / "Testing" / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    archive = _zip_dir(src, tmp_path / "brain.zip", prefix="brain-tumor-mri-dataset/")
    with zipfile.ZipFile(archive, "a") as zf:  # what macOS Finder adds beside the wrapping folder
        zf.writestr("__MACOSX/brain-tumor-mri-dataset/._Training", b"\0\5\26\7")

    folder = ingest(src, tmp_path / "out_dir", CFG, CLASSES)
    out = tmp_path / "out_zip"
    (out / "extracted" / "stale").mkdir(parents=True)  # left by an earlier run: must go
    monkeypatch.chdir(tmp_path)  # extracted files are below the cwd: their paths are relative
    zipped = ingest(archive, Path("out_zip"), CFG, CLASSES)

    keys = ["split", "class", "relpath", "sha256", "width", "height", "mode", "format", "bytes"]
    (fm, fq), (zm, zq) = tables(tmp_path / "out_dir"), tables(out)
    pd.testing.assert_frame_equal(fm[keys], zm[keys])
    assert fq.relpath.tolist() == zq.relpath.tolist() == ["Testing/glioma/broken.jpg"]
    assert all(p.startswith("out_zip/extracted/brain-tumor-mri-dataset/") for p in zm.path)
    assert all(Path(p).is_file() for p in zm.path)
    assert not (out / "extracted" / "stale").exists()
    assert zipped["source_kind"] == "zip" and zipped["dataset_root"] == "brain-tumor-mri-dataset"
    assert zipped["outside_layout"]["names"] == ["__MACOSX/brain-tumor-mri-dataset/._Training"]
    for k in ("files", "images", "quarantined", "per_split_class", "quarantine_reasons"):
        assert zipped[k] == folder[k], k

    # the same out dir, now from a folder: the stale extraction is removed, nothing copied
    ingest(src, Path("out_zip"), CFG, CLASSES)
    assert not (out / "extracted").exists()
    assert read_table(out / "manifest.csv").path.str.startswith("ds/T").all()  # relative: src is below the cwd


@pytest.mark.parametrize("name", ["../evil.jpg", "/tmp/evil.jpg", "C:/evil.jpg", "Training/..\\..\\evil.jpg"])
def test_zip_path_traversal_is_refused(tmp_path, name):
    archive = _zip_dir(make_dataset(tmp_path / "ds"), tmp_path / "a.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(name, b"\xff\xd8 not really")
    with pytest.raises(ValueError, match=r"path traversal"):
        ingest(archive, tmp_path / "out" / "deep", CFG, CLASSES)
    assert not (tmp_path / "out" / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()
    assert not (tmp_path / "out" / "deep").exists()  # refused before anything was written


def test_zip_symlink_member_is_refused(tmp_path):
    archive = _zip_dir(make_dataset(tmp_path / "ds"), tmp_path / "a.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("Training/glioma/passwd.jpg")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        ingest(archive, tmp_path / "out", CFG, CLASSES)
    assert not (tmp_path / "out" / "extracted").exists()


def test_zip_bomb_is_refused_before_extraction(tmp_path):
    archive = _zip_dir(make_dataset(tmp_path / "ds"), tmp_path / "a.zip")
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Training/glioma/zeros.jpg", b"\0" * 200_000)  # ~200 bytes compressed
    assert archive.stat().st_size < 20_000
    with pytest.raises(ValueError, match="max_archive_bytes=100000"):
        ingest(archive, tmp_path / "out", IngestParams(max_archive_bytes=100_000, workers=1), CLASSES)
    with pytest.raises(ValueError, match="max_archive_members=10"):
        ingest(archive, tmp_path / "out", IngestParams(max_archive_members=10, workers=1), CLASSES)
    assert not (tmp_path / "out").exists()


def test_zip_member_larger_than_declared_is_refused(tmp_path):
    """An archive whose headers under-declare a member's size is caught while writing."""
    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Training/glioma/big.jpg", b"\0" * 50_000)
    raw = bytearray(archive.read_bytes())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 100)  # uncompressed size in the local header ...
    struct.pack_into("<I", raw, central + 24, 100)  # ... and in the central directory
    archive.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="big.jpg"):
        ingest(archive, tmp_path / "out", CFG, CLASSES)
    assert not (tmp_path / "out" / "extracted").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".extracted")]


def test_unknown_or_missing_class_folder_names_the_layout(tmp_path):
    src = make_dataset(tmp_path / "ds")
    _save(src / "Training" / "astrocytoma" / "a.jpg", Image.fromarray(_gray()))
    for p in (src / "Testing" / "notumor").iterdir():
        p.unlink()
    (src / "Testing" / "notumor").rmdir()
    with pytest.raises(ValueError) as e:
        ingest(src, tmp_path / "out", CFG, CLASSES)
    msg = str(e.value)
    assert "Training/: unknown class folder(s) ['astrocytoma'], missing []" in msg
    assert "Testing/: unknown class folder(s) [], missing ['notumor']" in msg
    assert str(list(CLASSES)) in msg


def test_missing_split_is_a_clear_error(tmp_path):
    src = make_dataset(tmp_path / "ds")
    (src / "Testing").rename(src / "Tst")
    with pytest.raises(ValueError, match=r"missing \['Testing'\]; found at the top: \['Training/', 'Tst/'\]"):
        ingest(src, tmp_path / "out", CFG, CLASSES)
    with pytest.raises(FileNotFoundError, match="source not found"):
        ingest(tmp_path / "nope", tmp_path / "out", CFG, CLASSES)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a readable zip archive"):
        ingest(tmp_path / "notes.txt", tmp_path / "out", CFG, CLASSES)


def test_split_folder_names_match_case_insensitively(tmp_path):
    src = make_dataset(tmp_path / "ds")
    (src / "Training").rename(src / "training")
    (src / "Testing").rename(src / "TESTING")
    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    assert m["split_folders"] == {"train": "training", "test": "TESTING"}
    man = read_table(tmp_path / "out" / "manifest.csv")
    assert set(man.split) == {"train", "test"} and man.relpath.str.match("^(training|TESTING)/").all()
    (src / "Training").mkdir()
    with pytest.raises(ValueError, match="ambiguous split folders"):
        ingest(src, tmp_path / "out", CFG, CLASSES)


def test_parallel_decoding_matches_serial(tmp_path):
    src = make_dataset(tmp_path / "ds", per_class=5)  # 40 files: enough for parallel_map to use processes
    (src / "Testing" / "glioma" / "bad.jpg").write_text("x")
    serial = ingest(src, tmp_path / "s", CFG, CLASSES)
    parallel = ingest(src, tmp_path / "p", IngestParams(workers=2), CLASSES)
    assert serial == parallel and serial["images"] == 40
    assert (tmp_path / "s" / "manifest.csv").read_bytes() == (tmp_path / "p" / "manifest.csv").read_bytes()
    assert (tmp_path / "s" / "quarantine.csv").read_bytes() == (tmp_path / "p" / "quarantine.csv").read_bytes()


def test_cli_writes_metrics_and_reports_errors(tmp_path):
    src = make_dataset(tmp_path / "ds")
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  workers: 1\n")
    metrics = tmp_path / "metrics" / "ingest.json"
    runner = CliRunner()
    out = str(tmp_path / "out")
    res = runner.invoke(app, ["ingest", str(src), out, "--params", str(params), "--metrics", str(metrics)])
    assert res.exit_code == 0, res.output
    m = json.loads(metrics.read_text())
    assert m["files"] == m["images"] == 8 and m["per_split_class"]["test"] == {c: 1 for c in CLASSES}

    (src / "Testing").rename(src / "Validation")
    res = runner.invoke(app, ["ingest", str(src), out, "--params", str(params)])
    assert res.exit_code == 2
    assert "missing ['Testing']" in " ".join(res.output.split())


# ---- links ------------------------------------------------------------------------------------


def test_folder_links_are_never_followed(tmp_path):
    """A link in Training/notumor/ to Testing/glioma must not turn test images into training images."""
    src = make_dataset(tmp_path / "ds", per_class=2)
    elsewhere = tmp_path / "elsewhere"
    _save(elsewhere / "a.jpg", Image.fromarray(_gray()))
    os.symlink("../../Testing/glioma", src / "Training" / "notumor" / "leak")  # relative, inside the source
    os.symlink(src / "Testing" / "meningioma", src / "Training" / "glioma" / "abs_leak")  # absolute, inside
    os.symlink(elsewhere, src / "Training" / "pituitary" / "outside")
    (src / "Testing" / "pituitary").rename(tmp_path / "pit")  # a class folder that is itself a link
    os.symlink(tmp_path / "pit", src / "Testing" / "pituitary")

    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    man, q = tables(tmp_path / "out")
    why = "link to a folder (never followed): points to"
    assert dict(zip(q.relpath, q.reason)) == {
        "Training/notumor/leak": f"{why} Testing/glioma in the source",
        "Training/glioma/abs_leak": f"{why} Testing/meningioma in the source",
        "Training/pituitary/outside": f"{why} {os.path.realpath(elsewhere)} outside the source",
        "Testing/pituitary": f"{why} {os.path.realpath(tmp_path / 'pit')} outside the source",
    }
    assert dict(zip(q.relpath, q["class"]))["Testing/pituitary"] == "pituitary"
    assert not man.relpath.str.contains("leak|outside").any()  # zero rows from inside any link
    assert set(man.relpath) | set(q.relpath) == files_on_disk(src)  # one row per link, nothing below it
    assert m["per_split_class"] == {"train": {c: 2 for c in CLASSES},
                                    "test": {"glioma": 2, "meningioma": 2, "notumor": 2, "pituitary": 0}}
    assert m["files"] == m["images"] + m["quarantined"] == 14 + 4
    assert m["quarantine_reasons"] == {"link to a folder (never followed)": 4}


def _repo_with_cache(repo: Path) -> Path:
    """A DVC-repo-shaped folder: `.dvc/cache` holding one PNG, as `cache.type symlink` leaves it."""
    blob = repo / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef"
    blob.parent.mkdir(parents=True)
    Image.fromarray(_gray()).save(blob, format="PNG")
    return blob


def test_links_into_this_repos_dvc_cache_are_data_others_are_escapes(tmp_path):
    """`dvc config cache.type symlink` makes every raw file a link into .dvc/cache: only OUR cache is data."""
    own = _repo_with_cache(tmp_path / "repo")
    other = _repo_with_cache(tmp_path / "other")  # another repo's cache: a path containing .dvc/cache
    src = make_dataset(tmp_path / "repo" / "data" / "raw")
    os.symlink(own, src / "Training" / "glioma" / "own.png")
    os.symlink(os.path.relpath(own, src / "Testing" / "glioma"), src / "Testing" / "glioma" / "own_rel.png")
    os.symlink(other, src / "Training" / "notumor" / "other.png")
    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    man, q = tables(tmp_path / "out")
    assert {"Training/glioma/own.png", "Testing/glioma/own_rel.png"} <= set(man.relpath)
    assert dict(zip(q.relpath, q.reason)) == {"Training/notumor/other.png": "link outside source"}
    assert m["images"] == 8 + 2 and m["quarantined"] == 1

    # outside any DVC repository there is no cache to trust: the same kind of link is an escape
    loose = make_dataset(tmp_path / "loose")
    os.symlink(other, loose / "Training" / "glioma" / "other.png")
    assert ingest_mod.dvc_cache_dir(loose) is None
    ingest(loose, tmp_path / "out2", CFG, CLASSES)
    _, q = tables(tmp_path / "out2")
    assert dict(zip(q.relpath, q.reason)) == {"Training/glioma/other.png": "link outside source"}


def test_dvc_cache_dir_follows_the_repos_config(tmp_path, venv_env):
    """The real dvc CLI: `cache.type symlink` with `cache.dir` moved (config.local, relative), then `dvc add`."""
    repo = tmp_path / "repo"
    src = make_dataset(repo / "data" / "raw")
    for args in (["init", "--no-scm", "-q"], ["config", "cache.type", "symlink"],
                 ["config", "--local", "cache.dir", "../ext_cache"]):  # relative to cwd, stored relative to .dvc/
        sh(["dvc", *args], repo, venv_env)
    sh(["dvc", "add", "-q", "data/raw"], repo, venv_env)
    assert os.path.realpath(ingest_mod.dvc_cache_dir(src)) == os.path.realpath(tmp_path / "ext_cache")
    links = [p for p in src.rglob("*.jpg") if p.is_symlink()]
    assert len(links) == 8 and all(os.path.realpath(p).startswith(str(tmp_path / "ext_cache")) for p in links)
    os.symlink(_repo_with_cache(repo), src / "Training" / "glioma" / "old_default.png")  # .dvc/cache: not the cache now

    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    man, q = tables(tmp_path / "out")
    assert m["images"] == 8 and sorted(man.relpath) == sorted(p.relative_to(src).as_posix() for p in links)
    assert dict(zip(q.relpath, q.reason)) == {"Training/glioma/old_default.png": "link outside source"}


def test_dvc_config_parsing(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    sub = repo / "data" / "raw"
    sub.mkdir(parents=True)
    assert ingest_mod.dvc_cache_dir(sub) == os.path.realpath(repo / ".dvc" / "cache")  # the default
    (repo / ".dvc" / "config").write_text("[core]\n    remote = team\n['remote \"team\"']\n    url = ../r\n"
                                          "[cache]\n    type = symlink\n    dir = /mnt/cache\n")
    assert ingest_mod.dvc_cache_dir(sub) == os.path.realpath("/mnt/cache")
    (repo / ".dvc" / "config.local").write_text("[cache]\n    dir = ../../c\n")  # config.local wins
    assert ingest_mod.dvc_cache_dir(sub) == os.path.realpath(tmp_path / "c")
    (repo / "data" / ".dvc").mkdir()  # a nested repository is the nearer one, as DVC finds it
    assert ingest_mod.dvc_cache_dir(sub) == os.path.realpath(repo / "data" / ".dvc" / "cache")


# ---- degenerate images ----------------------------------------------------------------------


def test_images_below_min_side_are_quarantined(tmp_path):
    src = make_dataset(tmp_path / "ds")
    g = src / "Training" / "glioma"
    sizes = {"1x1.png": (1, 1), "31x40.png": (31, 40), "40x31.png": (40, 31), "32x32.png": (32, 32),
             "32x500.png": (32, 500)}
    for name, (w, h) in sizes.items():
        _save(g / name, Image.fromarray(_gray(w, h)))
    m = ingest(src, tmp_path / "out", CFG, CLASSES)
    man, q = tables(tmp_path / "out")
    assert dict(zip(q.relpath, q.reason)) == {
        f"Training/glioma/{n}": f"too small: {n[:-4]} px, a side below ingest.min_side=32"
        for n in ("1x1.png", "31x40.png", "40x31.png")
    }
    kept = man.set_index("relpath")
    assert kept.loc["Training/glioma/32x32.png", ["width", "height"]].tolist() == [32, 32]
    assert kept.loc["Training/glioma/32x500.png", ["width", "height"]].tolist() == [32, 500]
    assert m["images"] == 8 + 2 and m["quarantine_reasons"] == {"too small": 3}

    m = ingest(src, tmp_path / "out", IngestParams(min_side=1, workers=1), CLASSES)  # the param decides
    assert m["images"] == 8 + 5 and m["quarantined"] == 0
    with pytest.raises(ParamsError, match="ingest.min_side"):
        IngestParams(min_side=0)


# ---- accounting -----------------------------------------------------------------------------


def _faulty_walk(monkeypatch, fault: str, victim: str = "Training/glioma/Tr-gl_0000.jpg") -> None:
    """Make the scan lose (`drop`) or repeat (`dup`) one file; the independent listing must notice."""
    real = ingest_mod._walk

    def walk(*args):
        for entry in real(*args):
            if entry[0] != victim:
                yield entry
            elif fault == "dup":
                yield entry
                yield entry

    monkeypatch.setattr(ingest_mod, "_walk", walk)


@pytest.mark.parametrize("fault, says", [("drop", "1 missing from"), ("dup", "1 listed more than once in")])
def test_accounting_is_checked_against_an_independent_listing(tmp_path, monkeypatch, fault, says):
    src = make_dataset(tmp_path / "ds")
    _faulty_walk(monkeypatch, fault)
    with pytest.raises(RuntimeError) as e:
        ingest(src, tmp_path / "out", CFG, CLASSES)
    assert f"{says} manifest.csv / quarantine.csv: ['Training/glioma/Tr-gl_0000.jpg']" in str(e.value)
    assert not (tmp_path / "out" / "manifest.csv").exists()  # nothing written

    # the outside-layout list is checked too, and so is a name the listing never saw
    monkeypatch.undo()
    (src / "README.md").write_text("x")
    monkeypatch.setattr(ingest_mod, "_outside_layout", lambda *a: ["README.md", "ghost.txt"])
    with pytest.raises(RuntimeError, match=r"1 not on disk but in outside_layout.csv: \['ghost.txt'\]"):
        ingest(src, tmp_path / "out", CFG, CLASSES)


def test_accounting_check_survives_python_O(tmp_path):
    """The check is a raise, not an assert: `python -O` (which strips asserts) still stops a lost file."""
    src = make_dataset(tmp_path / "ds")
    script = textwrap.dedent(f"""
        import sys
        from synthmri import CLASSES
        from synthmri.data import ingest as m
        from synthmri.params import IngestParams
        real = m._walk
        m._walk = lambda *a: (e for e in real(*a) if e[0] != "Testing/pituitary/Te-pi_0000.jpg")
        assert False, "asserts are on"  # stripped under -O: reaching the ingest below proves it
        try:
            m.ingest({str(src)!r}, {str(tmp_path / "out")!r}, IngestParams(workers=1), CLASSES)
        except RuntimeError as e:
            print("optimize", sys.flags.optimize, "raised:", e)
    """)
    proc = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("optimize 1 raised:")
    assert "1 missing from manifest.csv / quarantine.csv: ['Testing/pituitary/Te-pi_0000.jpg']" in proc.stdout
