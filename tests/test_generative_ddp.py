"""torchrun-style DDP: two CPU processes (gloo) train a few steps and end with identical replicas."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from synthmri.generative.checkpoint import MODEL_FILE
from synthmri.generative.config import load_generator
from synthmri.generative.sample import load_generator_model
from synthmri.runtime import tensors_sha256
from synthmri.generative.train import train_generator
from tests.test_generative_data import make_manifest
from tests.test_generative_train import tiny

WORLD = 2


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # held open together, so the ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _worker(rank: int, ports: list[int], manifest: Path, root: Path) -> None:
    # What torchrun sets for each process. Each run below joins and leaves its own process group:
    # a fresh port each, as re-creating the rendezvous store on one port races with the other rank.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    out = {}
    runs = [("ddpm", {"epochs": 2}), ("dcgan", {"epochs": 2}), ("odd", {"batch_size": 7})]  # dcgan: BN buffers too
    for (name, over), port in zip(runs, ports):
        os.environ["MASTER_PORT"] = str(port)
        kind = "ddpm" if name == "odd" else name
        cfg = load_generator(tiny(kind, **{kind: over}))
        try:
            out[name] = train_generator(manifest, "glioma", root / name, cfg, live_dir=root / f"live_{name}")
        except ValueError as e:
            out[name] = str(e)
    (root / f"rank{rank}.json").write_text(json.dumps(out))


def test_two_gloo_processes_end_with_identical_replicas(tmp_path):
    manifest = make_manifest(tmp_path, {"axial": 8, "coronal": 8, "sagittal": 8})  # 18 train: 2 steps of 8 (4 per rank)
    ctx = mp.spawn(_worker, args=(_free_ports(3), manifest, tmp_path), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 600  # a hang guard, not a speed check: a deadlock must not stall the suite
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("DDP workers still running after 600 s: a collective is deadlocked")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert "must divide evenly over 2 processes" in r0["odd"] and r0["odd"] == r1["odd"]
    for kind in ("ddpm", "dcgan"):
        assert r0[kind]["world_size"] == r1[kind]["world_size"] == WORLD
        assert r0[kind]["steps_per_epoch"] == 2
        assert r0[kind]["weights_sha256"] == r1[kind]["weights_sha256"]
        model, _ = load_generator_model(tmp_path / kind, torch.device("cpu"))  # what rank 0 wrote
        assert tensors_sha256(model.state_tensors()) == r0[kind]["weights_sha256"]
        assert "train/loss" in r0[kind] or "train/loss_d" in r0[kind]
        assert (tmp_path / f"live_{kind}" / "metrics.json").is_file()
    assert not (tmp_path / "odd" / MODEL_FILE).exists()


def test_dvc_yaml_cmd_with_a_torchrun_launch_trains_on_two_processes(tmp_path, venv_env):
    """generator.train.launch puts torchrun inside the stage's cmd: the cmd dvc.yaml declares, interpolated
    as DVC does, runs two CPU processes and writes one model (rank 0) and its metrics."""
    import re
    import subprocess

    import yaml

    from tests.conftest import ROOT
    from tests.test_generative_train import tiny

    make_manifest(tmp_path, {"axial": 8, "coronal": 8, "sagittal": 8})
    launch = "torchrun --standalone --nproc_per_node 2 --no-python"
    gen = tiny("ddpm", ddpm={"epochs": 1})
    gen["train"] = {**gen["train"], "launch": launch, "threads": 1}
    params = {"generator": gen, "data": {"classes": ["glioma", "meningioma", "notumor", "pituitary"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_generator"]["do"]["cmd"]
    values = {"generator.train.launch": launch, "item": "glioma"}
    cmd = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], cmd)
    assert cmd.startswith(launch + " synthmri train-generator ")
    proc = subprocess.run(cmd.replace("data/processed/manifest.csv", str(tmp_path / "manifest.csv")), shell=True,
                          cwd=tmp_path, env=venv_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "metrics/generator/glioma.json").read_text())
    assert metrics["world_size"] == 2
    model, _ = load_generator_model(tmp_path / "models/generators/glioma", torch.device("cpu"))
    assert tensors_sha256(model.state_tensors()) == metrics["weights_sha256"]


def test_launch_accepts_only_a_torchrun_prefix():
    from synthmri.params import ParamsError

    for bad in ("python -m x", "torchrun --nproc_per_node 2", "torchrun --no-python; rm -rf /"):
        with pytest.raises(ParamsError, match="generator.train.launch: must be empty or a torchrun prefix"):
            load_generator({"train": {"launch": bad}})
