"""The GAN studies' profiles compose, validate, and run end to end on the demo data through `dvc exp run`."""

from __future__ import annotations

import json

import pytest
import yaml

from synthmri.profiles import validate
from synthmri.tasks import load_task
from tests.conftest import copy_project, sh

STUDIES = ("dcgan_tumour_normal", "dcgan_64")


@pytest.mark.parametrize("profile", [*STUDIES, *(f"{p}_demo" for p in STUDIES)])
def test_study_profiles_compose_and_validate(root, tmp_path, profile):
    from synthmri.profiles import write_params

    data = yaml.safe_load(write_params([f"profile={profile}"], tmp_path / "params.yaml", root / "conf").read_text())
    validate(data)
    task = load_task(data)
    if profile.startswith("dcgan_tumour_normal"):
        assert task.classes == ("normal", "tumor") and data["task"]["generator_classes"] == ["normal", "tumor"]
        assert set(data["classify"]["scenarios"]) == {"baseline", "tsvr", "trts"}
        assert data["generator"]["dcgan"]["g_activation"] == "leaky_relu" and data["generator"]["dcgan"]["d_dropout"] > 0
    else:
        assert task.identity and data["generator"]["dcgan"]["d_first_batchnorm"] and data["generator"]["dcgan"]["init"] == "torch"


# the demo profiles at a few steps: the point is that every stage runs on the mapped classes, not the numbers
TINY = ["demo.train_per_class=24", "demo.test_per_class=6", "preprocess.balance.min=16", "preprocess.balance.max=20",
        "generator.dcgan.epochs=2", "generator.train.checkpoint_every=1", "generator.train.log_every=1",
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
