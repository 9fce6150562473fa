"""`synthmri check`: each missing piece of a long run is a FAIL naming what to do, before any compute."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from synthmri import CLASSES, pretrained
from synthmri.preflight import run_checks
from synthmri.profiles import compose
from tests.conftest import ROOT


def params_for(tmp_path: Path, *overrides: str, name: str = "params.yaml") -> Path:
    return compose(list(overrides), tmp_path / name, ROOT / "conf")


def by_name(checks) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


def kaggle_folder(root: Path, classes=CLASSES) -> None:
    for split in ("Training", "Testing"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / "a.jpg").write_bytes(b"x")


def test_paper_profile_with_nothing_fetched_fails_on_data_and_each_weights_file(tmp_path):
    checks = by_name(run_checks(params_for(tmp_path, "profile=paper"), tmp_path))
    assert checks["params"] == ("ok", "profile paper: every section valid")
    status, detail = checks["raw data"]
    assert status == "FAIL" and detail.startswith(f"raw data not found: {tmp_path.as_posix()}/data/raw/kaggle "
                                                  "(data.raw of profile paper); get it: ")
    assert "kaggle.json" in detail and detail.endswith("dvc exp run -S profile=demo")
    status, detail = checks["weights: fidelity"]
    assert status == "FAIL" and "synthmri weights fetch inception" in detail
    status, detail = checks["weights: classify (vgg19)"]
    assert status == "FAIL" and "synthmri weights fetch vgg19" in detail


def test_the_command_exits_1_on_a_failure_and_0_when_ready(tmp_path, venv_env):
    paper = params_for(tmp_path, "profile=paper")
    proc = subprocess.run(["synthmri", "check", "--params", str(paper)], cwd=tmp_path, env=venv_env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1] == "3 check(s) failed: fix them before `dvc repro`"
    assert "Traceback" not in proc.stderr
    demo = params_for(tmp_path, "profile=demo", name="demo.yaml")
    proc = subprocess.run(["synthmri", "check", "--params", str(demo), "--json", "c.json"], cwd=tmp_path,
                          env=venv_env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "ready", proc.stdout
    statuses = {c["name"]: c["status"] for c in yaml.safe_load((tmp_path / "c.json").read_text())}
    assert statuses["raw data"] == "ok" and statuses["params"] == "ok"  # the demo_data stage writes the demo data
    assert statuses["weights: fidelity"] == statuses["weights: classify"] == "warn"  # random weights, said so


@pytest.mark.parametrize("packed", [False, True])
def test_raw_data_layout_is_checked_folder_or_zip(tmp_path, packed):
    params = params_for(tmp_path, "profile=paper")
    kaggle_folder(tmp_path / "src" / "brain-tumor")  # one wrapping folder, as ingest allows
    if packed:
        raw = tmp_path / "data/raw/kaggle.zip"
        raw.parent.mkdir(parents=True)
        with zipfile.ZipFile(raw, "w") as zf:
            for f in sorted((tmp_path / "src").rglob("*.jpg")):
                zf.write(f, f.relative_to(tmp_path / "src").as_posix())
        raw_cfg = yaml.safe_load(params.read_text())
        raw_cfg["data"]["raw"] = "data/raw/kaggle.zip"
        params.write_text(yaml.safe_dump(raw_cfg))
        expect = "data/raw/kaggle.zip: Kaggle layout, zip, 8 entries"
    else:
        (tmp_path / "data/raw").mkdir(parents=True)
        (tmp_path / "src").rename(tmp_path / "data/raw/kaggle")
        expect = "data/raw/kaggle: Kaggle layout, 8 files"
    assert by_name(run_checks(params, tmp_path))["raw data"] == ("ok", expect)


def test_a_missing_class_folder_is_named(tmp_path):
    params = params_for(tmp_path, "profile=paper")
    kaggle_folder(tmp_path / "data/raw/kaggle", classes=("glioma", "meningioma", "pituitary"))
    status, detail = by_name(run_checks(params, tmp_path))["raw data"]
    assert status == "FAIL" and detail.endswith("missing ['notumor']")


def test_weights_are_checked_as_the_stages_check_them(tmp_path, monkeypatch):
    params = params_for(tmp_path, "profile=paper")
    weights = tmp_path / "models/pretrained"
    weights.mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, weights / pretrained.get("vgg19").file)  # wrong bytes, right name
    torch.save({"w": torch.ones(2)}, weights / "inception-own.pth")
    entry = pretrained.get("inception")  # the registry entry swapped for this test: these bytes are "published"
    monkeypatch.setitem(pretrained.REGISTRY, "inception", pretrained.WeightsFile(
        entry.name, "inception-own.pth", entry.url, pretrained.sha256_of(weights / "inception-own.pth"), entry.used_by))
    raw = yaml.safe_load(params.read_text())
    raw["fidelity"]["weights"] = "models/pretrained/inception-own.pth"
    params.write_text(yaml.safe_dump(raw))
    checks = by_name(run_checks(params, tmp_path))
    assert checks["weights: fidelity"][0] == "ok" and "full sha256 verified" in checks["weights: fidelity"][1]
    status, detail = checks["weights: classify (vgg19)"]
    assert status == "FAIL" and "bytes, the published vgg19 file has 574,673,361" in detail

    (weights / "mine.pth").write_bytes((weights / "inception-own.pth").read_bytes())
    raw["fidelity"]["weights"] = "models/pretrained/mine.pth"  # a user's own file: runs, never "verified"
    params.write_text(yaml.safe_dump(raw))
    status, detail = by_name(run_checks(params, tmp_path))["weights: fidelity"]
    assert status == "warn" and "not a registry file" in detail


def test_bad_params_stop_the_checks_with_the_key(tmp_path):
    params = params_for(tmp_path, "profile=paper")
    raw = yaml.safe_load(params.read_text())
    raw["preprocess"]["histmatch"].update(apply=True, reference_splits=["train", "test"])
    params.write_text(yaml.safe_dump(raw))
    checks = run_checks(params, tmp_path)
    assert [c.name for c in checks] == ["params"] and checks[0].status == "FAIL"
    assert "preprocess.histmatch" in checks[0].detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_a_profile_asking_for_cuda_fails_on_a_cpu_machine(tmp_path):
    params = params_for(tmp_path, "profile=demo", "generator.train.device=cuda")
    assert by_name(run_checks(params, tmp_path))["device"] == (
        "FAIL", "no CUDA device, but generator.train.device ask for one")


def test_wall_time_comes_from_a_full_gpu_benchmark_run_only(tmp_path):
    params = params_for(tmp_path, "profile=demo")
    results = tmp_path / "bench/results"
    results.mkdir(parents=True)
    (results / "gpu-flops.json").write_text('{"mode": "flops-only", "device": "cpu"}')
    (results / "gpu-tiny.json").write_text('{"mode": "tiny", "device": "cpu", "projection": {"total_s": 5}}')
    assert by_name(run_checks(params, tmp_path))["wall time"][0] == "warn"
    (results / "gpu-h100.json").write_text('{"mode": "full", "device": "NVIDIA H100", "projection": {"total_s": 2400}}')
    assert by_name(run_checks(params, tmp_path))["wall time"] == (
        "ok", "about 40 min for the whole paper on NVIDIA H100 (gpu-h100.json, the paper profile's workload); "
              "other profiles scale with their epochs and counts")
