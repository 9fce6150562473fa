"""Tasks: a class mapping applied once (end of preprocess), checked at params time, pooled per-source generators."""

from __future__ import annotations

import pandas as pd
import pytest

from synthmri import CLASSES
from synthmri.classify.mixtures import read_synthetic
from synthmri.io import write_table
from synthmri.params import ParamsError
from synthmri.tasks import SOURCE_CLASS, apply_task, load_task

BINARY = {"glioma": "tumor", "meningioma": "tumor", "pituitary": "tumor", "notumor": "normal"}


def _data(task: dict | None = None, classes=CLASSES) -> dict:
    return {"data": {"classes": list(classes)}, **({"task": task} if task is not None else {})}


def _manifest() -> pd.DataFrame:
    # 3 glioma, 2 meningioma, 4 notumor, 1 pituitary in train; 1 of each in test
    rows = [("train", c, f"train/{c}/{i}.png") for c, n in
            (("glioma", 3), ("meningioma", 2), ("notumor", 4), ("pituitary", 1)) for i in range(n)]
    rows += [("test", c, f"test/{c}/0.png") for c in CLASSES]
    return pd.DataFrame(rows, columns=["split", "class", "out_path"])


def test_identity_is_the_default():
    task = load_task(_data())
    assert task.identity and task.classes == CLASSES
    assert task.expected_generator_classes() == CLASSES
    out = apply_task(_manifest(), task)
    assert (out[SOURCE_CLASS] == out["class"]).all()


def test_binary_mapping_counts_exactly():
    task = load_task(_data({"name": "binary", "map": BINARY}))
    assert task.classes == ("normal", "tumor")
    out = apply_task(_manifest(), task)
    assert list(out.columns) == ["split", SOURCE_CLASS, "class", "out_path"]
    counts = out.groupby(["split", "class"]).size().to_dict()
    assert counts == {("train", "tumor"): 6, ("train", "normal"): 4, ("test", "tumor"): 3, ("test", "normal"): 1}
    assert out.loc[out[SOURCE_CLASS] == "pituitary", "class"].tolist() == ["tumor", "tumor"]


def test_applied_twice_is_refused():
    task = load_task(_data({"name": "binary", "map": BINARY}))
    once = apply_task(_manifest(), task)
    with pytest.raises(ValueError, match="already has a 'source_class' column: task 'binary' would be applied twice"):
        apply_task(once, task)


def test_a_class_outside_data_classes_is_refused_at_run_time():
    task = load_task(_data({"map": BINARY}))
    df = _manifest()
    df.loc[0, "class"] = "astrocytoma"
    with pytest.raises(ValueError, match=r"class\(es\) \['astrocytoma'\] not in data.classes"):
        apply_task(df, task)


@pytest.mark.parametrize("task, match", [
    ({"map": {**BINARY, "astrocytoma": "tumor"}}, r"task.map: unknown source class\(es\) \['astrocytoma'\]"),
    ({"map": {"glioma": "tumor", "notumor": "normal"}}, r"task.map: class\(es\) \['meningioma', 'pituitary'\] .* unmapped"),
    ({"map": {**BINARY, "glioma": "tu mor"}}, r"task.map.glioma: target class must be letters"),
    ({"map": BINARY, "generators": "target", "generator_classes": list(CLASSES)},
     r"task.generator_classes: with task.generators: target it must be \['normal', 'tumor'\]"),
    ({"generator_classes": ["glioma"]}, r"task.generator_classes: with task.generators: source it must be"),
    ({"mapping": BINARY}, r"task: unknown key\(s\) \['mapping'\]"),
    ({"map": ["glioma"]}, r"task.map: expected a mapping"),
])
def test_bad_tasks_are_refused_at_params_time_naming_the_key(task, match):
    with pytest.raises(ParamsError, match=match):
        load_task(_data(task))


def test_per_source_generators_pool_into_their_target(tmp_path):
    task = load_task(_data({"map": BINARY}))
    assert task.generator_column == SOURCE_CLASS
    assert task.synthetic_folders() == {"normal": ("notumor",), "tumor": ("glioma", "meningioma", "pituitary")}
    for src, n in (("glioma", 2), ("meningioma", 3), ("pituitary", 1), ("notumor", 2)):
        rows = [{"path": f"{tmp_path}/{src}/{src}_{i:04d}.png", "class": BINARY[src], "index": i} for i in range(n)]
        write_table(pd.DataFrame(rows), tmp_path / src / "manifest.csv")
    pooled = read_synthetic(tmp_path, task.classes, task.synthetic_folders())
    assert {c: len(v) for c, v in pooled.items()} == {"normal": 2, "tumor": 6}
    with pytest.raises(ValueError, match="rows of class"):  # a folder labelled for another class
        read_synthetic(tmp_path, task.classes, {"normal": ("glioma",), "tumor": ()})
    target = load_task(_data({"map": BINARY, "generators": "target", "generator_classes": ["normal", "tumor"]}))
    assert target.generator_column == "class" and target.synthetic_folders() == {"normal": ("normal",), "tumor": ("tumor",)}


def test_report_labels_a_study_number_as_that_studys():
    from synthmri.report import _study_table

    acc = {"accuracy": {"mean": 0.61, "std": 0.02}}
    lines = _study_table({"tsvr": acc}, "dcgan_tumour_normal_demo")
    assert lines[0] == "## Beside the DCGAN tumour-vs-normal study (README)"
    assert "| tsvr | ResNet accuracy, trained on DCGAN images, tested on real | 0.610 ± 0.020 | 0.7219 |" in lines
    assert _study_table({"tsvr": acc}, "paper") == []
    assert "reports no number" in _study_table({}, "dcgan_64")[2]
