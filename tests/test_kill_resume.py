"""A generator stage SIGKILLed mid-training under `dvc repro` resumes from its last checkpoint on the next
`dvc repro` (checkpoints/ is a persisted output: DVC does not wipe it before rerunning the stage).

The copy it runs in must not inherit a workspace's outputs: after `make demo` the workspace holds the demo's
checkpoints, and a copy that took them would resume from the last epoch instead of being interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from tests.conftest import copy_project, declared_outputs, private_copy, project_files, sh

STAGE = "train_generator@glioma"


def test_project_copies_leave_out_every_pipeline_output(root, tmp_path, venv_env):
    """A workspace as `make demo` leaves it: copies (copy_project) take its sources, none of its outputs."""
    shutil.copy2(root / "dvc.yaml", tmp_path / "dvc.yaml")
    sources = ["dvc.yaml", "params.yaml", "conf/config.yaml", "src/synthmri/cli.py",
               "models/pretrained/weights.pth"]  # fetched weights are an input, not an output
    outputs = ["dvc.lock", "data/raw/demo/Training/glioma/Tr-gl_0001.jpg", "data/interim/ingest/manifest.csv",
               "data/processed/manifest.csv", "data/synthetic/glioma/0001.png", "data/classify/baseline/predictions.csv",
               "models/generators/glioma/model.safetensors", "checkpoints/generators/glioma/epoch_0002.pt",
               "dvclive/generator/glioma/metrics.json", "dvclive/classify/baseline/seed_33/metrics.json",
               "metrics/ingest.json", "metrics/scenarios/baseline.json", "plots/audit/dimensions.png",
               "reports/README.md"]
    for rel in sources[1:] + outputs:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    sh(["git", "init", "-q"], tmp_path, venv_env)
    assert sorted(project_files(tmp_path)) == sorted(sources)
    # every stage's outputs are covered, including the persisted, uncached ones of the generator stages
    patterns = declared_outputs(root / "dvc.yaml")
    assert {"checkpoints/generators/*", "dvclive/generator/*", "models/generators/*", "reports"} <= set(patterns)


@pytest.mark.slow
def test_sigkilled_generator_stage_resumes_from_its_checkpoint(tmp_path, demo_baseline, venv_env):
    repo = private_copy(demo_baseline, tmp_path / "repo")
    assert not (repo / "checkpoints").exists()  # a clean start, whatever the workspace held
    # Checkpoint every 2 epochs so the kill lands after one; 100 epochs so it lands well before the end (the
    # demo DCGAN runs an epoch in a fraction of a second). The epochs key
    # is the demo generator's own (generator.<kind>.epochs), whichever kind the demo profile trains.
    kind = yaml.safe_load((repo / "params.yaml").read_text())["generator"]["kind"]
    sh(["synthmri", "params", "profile=demo", f"generator.{kind}.epochs=100", "generator.train.checkpoint_every=2"],
       repo, venv_env)
    ckpt_dir = repo / "checkpoints" / "generators" / "glioma"
    proc = subprocess.Popen(["dvc", "repro", "--single-item", STAGE], cwd=repo, env=venv_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not any(ckpt_dir.glob("*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "the stage ended before it wrote a checkpoint: nothing was interrupted"
    time.sleep(1.0)  # let the checkpoint's atomic rename finish
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's process, abruptly
    proc.wait()
    assert not (repo / "models" / "generators" / "glioma" / "model.safetensors").exists()

    out = sh(["dvc", "repro", "--single-item", STAGE], repo, venv_env)
    assert f"Running stage '{STAGE}'" in out
    metrics = json.loads((repo / "metrics" / "generator" / "glioma.json").read_text())
    assert 2 <= metrics["resumed_from_epoch"] < 100 and metrics["epochs"] == 100  # continued, not started over
    assert (repo / "models" / "generators" / "glioma" / "model.safetensors").stat().st_size > 0
    assert "up to date" in sh(["dvc", "status", STAGE], repo, venv_env)


def test_project_copies_start_on_the_committed_profile_whatever_the_workspace_holds(root, tmp_path, venv_env):
    """After `make demo` the workspace's params.yaml is on the demo profile: a copy still starts as a clean
    checkout does, on the paper profile composed from conf/ (issue 13 §2)."""
    workspace = tmp_path / "workspace"
    for rel in project_files(root):
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, workspace / rel)
    sh(["git", "init", "-q"], workspace, venv_env)
    sh(["synthmri", "params", "profile=demo"], workspace, venv_env)
    copy = copy_project(workspace, tmp_path / "copy", venv_env)
    assert yaml.safe_load((copy / "params.yaml").read_text())["profile_name"] == "paper"
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=root, capture_output=True, check=True).stdout
    assert (copy / "params.yaml").read_bytes() == committed  # the committed composition, not the workspace's
