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
