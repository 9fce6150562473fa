"""End to end: the real `dvc` CLI runs the demo profile in a temporary copy of the repository.

This is the proof that dvc.yaml, params.yaml, conf/ and the stage commands fit together: a first
`dvc exp run -S profile=demo` runs every stage, a second `dvc repro` runs nothing, and a change to one
param reruns only the stages that read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from synthmri import CLASSES

from tests.conftest import copy_project, ran, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory, root, venv_env) -> Path:
    return copy_project(root, tmp_path_factory.mktemp("e2e") / "repo", venv_env)


@pytest.fixture(scope="module")
def first_run(repo, venv_env) -> str:
    return sh(["dvc", "exp", "run", "-S", "profile=demo"], repo, venv_env)


def test_demo_profile_runs_every_stage(repo, first_run):
    stages = {"demo_data", "ingest", "audit", "dedup", "preprocess"}
    stages |= {f"{stage}@{c}" for stage in ("train_generator", "generate") for c in CLASSES}
    stages |= {f"classify@{s}" for s in yaml.safe_load((repo / "params.yaml").read_text())["classify"]["scenarios"]}
    stages |= {"fidelity", "ratio", "report"}
    assert ran(first_run) == stages
    params = (repo / "params.yaml").read_text()
    assert "profile_name: demo" in params

    ingest = json.loads((repo / "metrics/ingest.json").read_text())
    assert ingest["files"] == ingest["images"] + ingest["quarantined"]
    assert ingest["quarantined"] >= 3  # the demo's truncated, empty and non-image files

    dedup = json.loads((repo / "metrics/dedup.json").read_text())
    assert dedup["cross_split"]["removed"] > 0  # the demo plants train<->test leakage
    assert dedup["train"]["removed"] > 0

    processed = pd.read_csv(repo / "data/processed/manifest.csv", keep_default_na=False)
    kept = processed[processed.status == "kept"]
    assert len(processed) == ingest["images"]  # every ingested image is accounted for
    assert all((repo / p).is_file() for p in kept.out_path)
    test_shas = set(processed[processed.split == "test"].sha256)
    assert not (set(kept[kept.split == "train"].sha256) & test_shas)  # no byte-identical leakage
    for name in ("dimensions.png", "class_plane.png", "histograms.png"):
        assert (repo / "plots/audit" / name).stat().st_size > 0


def test_demo_trains_and_samples_one_generator_per_class(repo, first_run):
    n = yaml.safe_load((repo / "params.yaml").read_text())["generate"]["n_per_class"]
    for cls in CLASSES:
        model = repo / "models/generators" / cls
        assert (model / "model.safetensors").stat().st_size > 0 and (model / "config.json").is_file()
        pngs = sorted((repo / "data/synthetic" / cls).glob("*.png"))
        assert len(pngs) == n
        with Image.open(pngs[0]) as im:
            assert im.mode == "L" and im.size == (64, 64)
        trained = json.loads((repo / "metrics/generator" / f"{cls}.json").read_text())
        assert trained["class"] == cls and trained["train_images"] > 0


def test_demo_classifies_every_scenario_and_reports(repo, first_run):
    baseline = json.loads((repo / "metrics/scenarios/baseline.json").read_text())
    assert baseline["accuracy"]["mean"] > 0.25  # four classes: better than chance even at demo sizes
    processed = pd.read_csv(repo / "data/processed/manifest.csv", keep_default_na=False)
    assert baseline["test_images"] == ((processed.split == "test") & (processed.status == "kept")).sum()
    assert (repo / "reports/README.md").read_text().count("|") > 20  # tables beside the paper's
    ratio = json.loads((repo / "metrics/ratio.json").read_text())
    assert ratio["ratio"] == 1.0 and "vs_baseline" in ratio


def test_second_repro_runs_nothing(repo, first_run, venv_env):
    out = sh(["dvc", "repro"], repo, venv_env)
    assert ran(out) == set(), out
    assert "up to date" in sh(["dvc", "status"], repo, venv_env)


def test_one_param_reruns_only_its_readers(repo, first_run, venv_env):
    before = (repo / "data/interim/dedup.csv").read_bytes()
    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", "audit.blur_threshold=80"], repo, venv_env)
    assert ran(out) == {"audit"}, out  # lap_var is stored raw: the threshold changes only metrics
    assert (repo / "data/interim/dedup.csv").read_bytes() == before

    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", "ratio=0.5"], repo, venv_env)
    assert ran(out) == {"ratio"}, out  # the ratio sweep reuses every generator and scenario
    assert json.loads((repo / "metrics/ratio.json").read_text())["ratio"] == 0.5

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo, venv_env, stdout_only=True))
    thresholds = {
        rev["data"]["metrics"]["metrics/audit.json"]["data"]["blur"]["threshold"]
        for entry in shown[1:] for exp in entry["experiments"] or [] for rev in exp["revs"]
    }
    assert {50.0, 80.0} <= thresholds  # `dvc exp show` lists each variant with its own metrics
