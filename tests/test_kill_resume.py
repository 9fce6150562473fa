"""A generator stage SIGKILLed mid-training under `dvc repro` resumes from its last checkpoint on the next
`dvc repro` (checkpoints/ is a persisted output: DVC does not wipe it before rerunning the stage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import private_copy, sh

pytestmark = pytest.mark.slow
STAGE = "train_generator@glioma"


def test_sigkilled_generator_stage_resumes_from_its_checkpoint(tmp_path, demo_baseline, venv_env):
    repo = private_copy(demo_baseline, tmp_path / "repo")
    # Checkpoint every 2 epochs so the kill lands after one; 12 epochs keep the test short.
    sh(["synthmri", "params", "profile=demo", "generator.ddpm.epochs=12", "generator.train.checkpoint_every=2"],
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
    assert metrics["resumed_from_epoch"] >= 2 and metrics["epochs"] == 12  # continued, not started over
    assert (repo / "models" / "generators" / "glioma" / "model.safetensors").stat().st_size > 0
    assert "up to date" in sh(["dvc", "status", STAGE], repo, venv_env)
