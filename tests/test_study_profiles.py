"""The studies' profiles (the GAN studies, the SD-Turbo study) compose, validate, keep the values that make them
what they claim, and run end to end on the demo data through `dvc exp run`; the SD-Turbo ratio sweep's commands."""

from __future__ import annotations

import json

import pytest
import yaml

from synthmri.profiles import validate
from synthmri.tasks import load_task
from tests.conftest import copy_project, sh

STUDIES = ("dcgan_tumour_normal", "dcgan_64", "sdturbo")
SDTURBO = ("sdturbo_as_coded", "sdturbo", "sdturbo_demo")


def _compose(root, tmp_path, profile: str, *overrides: str) -> dict:
    from synthmri.profiles import write_params

    return yaml.safe_load(write_params([f"profile={profile}", *overrides], tmp_path / f"{profile}.yaml",
                                       root / "conf").read_text())


@pytest.mark.parametrize("profile", [*STUDIES, *(f"{p}_demo" for p in STUDIES), "sdturbo_as_coded",
                                     "dcgan_tumour_normal_mobilenet"])
def test_study_profiles_compose_and_validate(root, tmp_path, profile):
    data = _compose(root, tmp_path, profile)
    validate(data)
    task = load_task(data)
    if profile.startswith("dcgan_tumour_normal"):
        assert task.classes == ("normal", "tumor") and data["task"]["generator_classes"] == ["normal", "tumor"]
        assert set(data["classify"]["scenarios"]) == {"baseline", "tsvr", "trts"}
        assert data["generator"]["dcgan"]["g_activation"] == "leaky_relu" and data["generator"]["dcgan"]["d_dropout"] > 0
        # the real val split selects the tsvr model: early stopping on it
        assert data["split"]["val_fraction"] == 0.2 and data["classify"]["train"]["early_stopping"]["restore_best"]
    elif profile.startswith("sdturbo"):
        assert task.identity and task.classes == ("glioma", "meningioma", "pituitary")
        assert data["data"]["format"] == "figshare" and data["generator"]["kind"] == "sd_turbo"
        assert set(data["classify"]["scenarios"]) == {"baseline"}  # the conditions are the ratio stage's
    else:
        assert task.identity and data["generator"]["dcgan"]["d_first_batchnorm"] and data["generator"]["dcgan"]["init"] == "torch"


def test_tumour_vs_normal_profiles_use_the_studys_two_classifiers(root, tmp_path):
    assert _compose(root, tmp_path, "dcgan_tumour_normal")["classify"]["model"] == {
        "arch": "resnet152v2", "pretrained": False, "weights_dir": "models/pretrained", "trainable": "all", "head": "default"}
    mobile = _compose(root, tmp_path, "dcgan_tumour_normal_mobilenet")["classify"]["model"]
    assert (mobile["arch"], mobile["pretrained"], mobile["head"]) == ("mobilenet_v2", True, "gap_dense")


def test_sdturbo_as_coded_is_the_studys_code(root, tmp_path):
    d = _compose(root, tmp_path, "sdturbo_as_coded")
    assert d["split"]["method"] == "image" and d["split"]["seed"] == 42
    assert d["split"]["fractions"] == {"train": 0.7, "val": 0.2, "test": 0.1}
    assert d["data"]["classes"] == ["glioma", "meningioma", "pituitary"] and d["preprocess"]["balance"]["classes"] == []
    assert d["classify"]["model"]["arch"] == "resnet50" and d["classify"]["model"]["pretrained"] is False
    t = d["classify"]["train"]
    assert (t["image_size"], t["batch_size"], t["lr"], t["epochs"]) == (224, 16, 1e-3, 100)
    assert t["early_stopping"] == {"patience": 5, "min_delta": 0.0, "restore_best": True}
    assert t["plateau"] == {"factor": 0.5, "patience": 3, "min_lr": 1e-7, "min_delta": 1e-4}
    assert t["augment"] == {"flip": "horizontal", "rotation": 15, "shift": 0.1, "shear": 10, "zoom": 0.2,
                            "brightness": [0.8, 1.2]}
    g, gen = d["generator"], d["generate"]
    assert g["sd_turbo"]["mode"] == "full" and not g["sd_turbo"]["tiny"] and g["val_fraction"] == 0.0
    assert (g["sd_turbo"]["lr"], g["sd_turbo"]["batch_size"], g["sd_turbo"]["image_size"]) == (1e-5, 8, 256)
    assert g["sd_turbo"]["prompts"]["meningioma"] == "Meningioma tumor MRI"
    assert gen["n_per_class"] == 5000 and gen["sd_turbo"]["mode"] == "img2img"
    assert gen["sd_turbo"]["img2img"] == {"strength": 0.75, "guidance_scale": 7.5, "steps": 50, "scheduler": "ddpm"}
    assert d["ratio"] == 4


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_sdturbo_corrects_only_the_split(root, tmp_path):
    coded, fixed = (_flat(_compose(root, tmp_path, p)) for p in ("sdturbo_as_coded", "sdturbo"))
    assert {k for k in coded.keys() | fixed.keys() if coded.get(k) != fixed.get(k)} == {"profile_name", "split.method"}
    assert fixed["split.method"] == "patient"


def test_sweep_lists_the_eight_dvc_commands(root, monkeypatch):
    from typer.testing import CliRunner

    from synthmri.cli import app

    monkeypatch.chdir(root)
    out = CliRunner().invoke(app, ["sweep", "--profile", "sdturbo", "--dry-run"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("dvc ")]
    assert lines == [f"dvc exp run --queue -S profile=sdturbo -S ratio={r}"
                     for r in ("0", "0.25", "0.5", "1", "1.5", "2", "3", "4")] + ["dvc queue start -j 1"]
    assert "generate.n_per_class=5000" in out.output and "dvc exp show --only-changed" in out.output


def test_sweep_refuses_ratios_that_n_per_class_cannot_cover(root, tmp_path):
    import shutil

    from synthmri.sweep import check_coverage, commands, sweep

    shutil.copytree(root / "conf", tmp_path / "conf")
    (tmp_path / "params.yaml").write_text("profile_name: sdturbo_demo\n")
    (tmp_path / "data/processed").mkdir(parents=True)
    rows = ["status,split,class"] + ["kept,train,glioma"] * 30 + ["kept,train,meningioma"] * 31 \
        + ["kept,test,glioma"] * 9 + ["quarantined,train,glioma"] * 5
    (tmp_path / "data/processed/manifest.csv").write_text("\n".join(rows) + "\n")
    assert "covers ratio 3 (93 synthetic meningioma for 31 real)" in check_coverage("sdturbo_demo", [0, 3], root=tmp_path)
    with pytest.raises(ValueError, match=r"ratio 4 needs 124 synthetic meningioma images \(31 real\), but "
                                         r"generate.n_per_class is 120"):
        check_coverage("sdturbo_demo", [0, 4], root=tmp_path)
    # another profile's processed data prove nothing: not checked, left to the ratio stage
    (tmp_path / "params.yaml").write_text("profile_name: demo\n")
    assert "not checked" in check_coverage("sdturbo_demo", [4], root=tmp_path)
    assert commands("p", [1], ["classify.train.epochs=1"]) == [
        ["dvc", "exp", "run", "--queue", "-S", "profile=p", "-S", "classify.train.epochs=1", "-S", "ratio=1"],
        ["dvc", "queue", "start", "-j", "1"]]
    with pytest.raises(ValueError, match="no ratios"):
        sweep("sdturbo", [], dry_run=True)


def test_report_puts_the_sdturbo_studys_numbers_beside_ours():
    from synthmri.report import _study_table

    acc = {"accuracy": {"mean": 0.9, "std": 0.0}}
    lines = _study_table({"baseline": acc}, "sdturbo_demo", {"ratio": 4.0, **acc})
    assert lines[0] == "## Beside the SD-Turbo study (README abstract)"
    assert "| baseline | ResNet50 accuracy, real only (our reading: 94.81 % less the 1.3-point gain) | 0.900 ± 0.000 | 0.9351 |" in lines
    assert "| ratio=4 | ResNet50 accuracy, 4 synthetic per real image | 0.900 ± 0.000 | 0.9481 |" in lines
    assert "(this run: ratio 2)" in _study_table({}, "sdturbo", {"ratio": 2.0, **acc})[-2]


# the demo profiles at a few steps: the point is that every stage runs on the mapped classes, not the numbers
TINY = ["demo.train_per_class=24", "demo.test_per_class=6", "preprocess.balance.min=16", "preprocess.balance.max=20",
        "generator.dcgan.epochs=2", "generator.dcgan.batch_size=8", "generator.train.checkpoint_every=1", "generator.train.log_every=1",
        "generate.n_per_class=8", "classify.train.epochs=1", "classify.bootstrap=10", "ratio=0"]


@pytest.mark.slow
def test_tumour_vs_normal_demo_runs_end_to_end(root, tmp_path, venv_env):
    repo = copy_project(root, tmp_path / "repo", venv_env)
    sh(["dvc", "exp", "run", "-S", "profile=dcgan_tumour_normal_demo", *[a for o in TINY for a in ("-S", o)]],
       repo, venv_env)
    import pandas as pd

    man = pd.read_csv(repo / "data/processed/manifest.csv", keep_default_na=False)
    kept = man[man["status"] == "kept"]
    assert set(kept["class"]) == {"normal", "tumor"}
    assert (kept.loc[kept["source_class"] == "notumor", "class"] == "normal").all()
    assert ((kept["source_class"] != "notumor") == (kept["class"] == "tumor")).all()
    assert sorted(p.name for p in (repo / "data/synthetic").iterdir()) == ["normal", "tumor"]
    tsvr = json.loads((repo / "metrics/scenarios/tsvr.json").read_text())
    assert tsvr["train_counts"] == {"normal": {"real": 0, "synthetic": 8}, "tumor": {"real": 0, "synthetic": 8}}
    assert tsvr["test_set"] == "real"
    trts = json.loads((repo / "metrics/scenarios/trts.json").read_text())
    assert trts["test_set"] == "synthetic" and trts["test_images"] == 16
    assert all(v["synthetic"] == 0 for v in trts["train_counts"].values())
    fid = json.loads((repo / "metrics/fidelity.json").read_text())
    assert {"normal", "tumor"} <= set(fid)
    assert "Beside the DCGAN tumour-vs-normal study" in (repo / "reports/README.md").read_text()


# the SD-Turbo demo at a few steps; early stopping made to fire after epoch 2 (no val loss falls by 10)
SDT_TINY = ["generator.sd_turbo.epochs=1", "generate.n_per_class=40", "ratio=1", "classify.train.epochs=5",
            "classify.train.early_stopping.patience=1", "classify.train.early_stopping.min_delta=10",
            "classify.bootstrap=10"]


@pytest.mark.slow
def test_sdturbo_demo_runs_end_to_end(root, tmp_path, venv_env):
    repo = copy_project(root, tmp_path / "repo", venv_env)
    sh(["dvc", "exp", "run", "-S", "profile=sdturbo_demo", *[a for o in SDT_TINY for a in ("-S", o)]], repo, venv_env)
    import pandas as pd

    truth = pd.read_csv(repo / "data/raw/demo/demo_truth.csv", keep_default_na=False)
    ingest = json.loads((repo / "metrics/ingest.json").read_text())
    assert ingest["format"] == "figshare" and ingest["images"] == len(truth) and ingest["quarantined"] == 0
    split = json.loads((repo / "metrics/split.json").read_text())
    assert split["method"] == "patient" and split["patient_ids"] == "known"
    assert split["shared_patients"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert split["patients"] == truth["patient"].nunique()
    assert sum(split[s]["images"] for s in ("train", "val", "test")) == len(truth)
    man = pd.read_csv(repo / "data/processed/manifest.csv", keep_default_na=False)
    train = set(man.loc[(man["status"] == "kept") & (man["split"] == "train"), "out_path"])
    for c in ("glioma", "meningioma", "pituitary"):
        syn = pd.read_csv(repo / f"data/synthetic/{c}/manifest.csv", keep_default_na=False)
        assert len(syn) == 40 and set(syn["source"]) <= train  # img2img from training images only
    base = json.loads((repo / "metrics/scenarios/baseline.json").read_text())
    assert base["arch"] == "small_cnn" and base["val_images"] == split["val"]["images"]
    assert {k: base["training"]["train"]["33"][k] for k in ("epochs", "stopped_epoch", "best_epoch")} == \
        {"epochs": 2, "stopped_epoch": 2, "best_epoch": 1}
    ratio = json.loads((repo / "metrics/ratio.json").read_text())
    assert ratio["ratio"] == 1 and ratio["train_counts"] == {
        c: {"real": n, "synthetic": n} for c, n in split["train"]["per_class"].items()}
    assert "Beside the SD-Turbo study" in (repo / "reports/README.md").read_text()

    # the study as coded: the same run with its image-level split (sdturbo_as_coded's one difference) leaks patients
    sh(["dvc", "exp", "run", "-S", "profile=sdturbo_demo", "-S", "split.method=image",
        *[a for o in SDT_TINY for a in ("-S", o)]], repo, venv_env)
    coded = json.loads((repo / "metrics/split.json").read_text())
    assert coded["method"] == "image" and sum(coded[s]["images"] for s in ("train", "val", "test")) == len(truth)
    assert coded["shared_patients"]["train-test"] > 0  # what the corrected profile fixes
    assert json.loads((repo / "metrics/ratio.json").read_text())["ratio"] == 1
    assert (repo / "reports/report.html").is_file()
