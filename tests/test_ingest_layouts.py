"""Ingest layouts beyond Kaggle's: `<class>/` with no split level, Train/Test, class folder aliases, no match."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from synthmri.data.ingest import ingest
from synthmri.io import read_table
from synthmri.params import DataParams, IngestParams, ParamsError
from tests.test_ingest import _gray

CFG = IngestParams(workers=1)


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_gray()).save(folder / f"{i:03d}.png")


def test_class_folders_without_a_split_level_leave_split_empty(tmp_path):
    src = tmp_path / "ds" / "wrapper"  # one wrapping folder is allowed
    _images(src / "yes", 3)
    _images(src / "no", 2)
    (src / "yes" / "notes.txt").write_text("x")  # quarantined, not dropped
    m = ingest(tmp_path / "ds", tmp_path / "out", CFG, ("normal", "tumor"), class_names={"yes": "tumor", "no": "normal"})
    man, q = read_table(tmp_path / "out" / "manifest.csv"), read_table(tmp_path / "out" / "quarantine.csv")
    assert m["layout"] == "<class>/ with no split level" and m["split_folders"] == {}
    assert m["per_split_class"] == {"": {"normal": 2, "tumor": 3}}
    assert man.split.fillna("").eq("").all() and sorted(man.relpath)[:2] == ["no/000.png", "no/001.png"]
    assert q.relpath.tolist() == ["yes/notes.txt"] and m["files"] == 6


def test_one_class_folder_named_by_an_alias(tmp_path):
    """The 64x64 DCGAN study's set: one folder of slices (its name has a space), one class."""
    _images(tmp_path / "ds" / "GAN-Traning Images", 4)
    m = ingest(tmp_path / "ds", tmp_path / "out", CFG, ("brain",), class_names={"GAN-Traning Images": "brain"})
    assert m["per_split_class"] == {"": {"brain": 4}} and m["dataset_root"] == ""


def test_train_test_split_folders_and_aliases(tmp_path):
    for split, n in (("train", 3), ("TEST", 1)):
        _images(tmp_path / "ds" / split / "yes", n)
        _images(tmp_path / "ds" / split / "no", n)
    m = ingest(tmp_path / "ds", tmp_path / "out", CFG, ("normal", "tumor"), class_names={"yes": "tumor", "no": "normal"})
    assert m["split_folders"] == {"train": "train", "test": "TEST"}
    assert m["per_split_class"] == {"train": {"normal": 3, "tumor": 3}, "test": {"normal": 1, "tumor": 1}}
    man = read_table(tmp_path / "out" / "manifest.csv")
    assert set(zip(man.split, man["class"])) == {("train", "tumor"), ("train", "normal"), ("test", "tumor"), ("test", "normal")}


def test_a_layout_matching_nothing_lists_what_it_found(tmp_path):
    _images(tmp_path / "ds" / "scans", 1)
    _images(tmp_path / "ds" / "labels", 1)
    (tmp_path / "ds" / "README.md").write_text("x")
    with pytest.raises(ValueError) as e:
        ingest(tmp_path / "ds", tmp_path / "out", CFG, ("normal", "tumor"), class_names={"yes": "tumor"})
    msg = str(e.value)
    assert "found at the top: ['README.md', 'labels/', 'scans/']" in msg
    assert "<class>/ with no split level" in msg and "{'yes': 'tumor'}" in msg
    _images(tmp_path / "ds2" / "Training" / "yes", 1)  # a split level with one split: refused, not guessed
    with pytest.raises(ValueError, match=r"missing \['Testing'\]; found at the top: \['Training/'\]"):
        ingest(tmp_path / "ds2", tmp_path / "out", CFG, ("tumor",), class_names={"yes": "tumor"})


def test_class_names_must_name_a_class():
    with pytest.raises(ParamsError, match=r"data.class_names.yes: must name a class"):
        DataParams(classes=("normal", "tumor"), class_names={"yes": "tumour"})
