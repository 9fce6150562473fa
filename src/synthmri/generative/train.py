"""Train one class's generator: data on the device, checkpoints, resume, dvclive, torchrun DDP.

The training images are decoded once and held as a uint8 tensor on the device; a step gathers its
batch by index on the device and returns its losses as device tensors, so the host syncs only when
it logs. Each epoch's data order and noise come from generators seeded by (seed, class, epoch,
rank): a run resumed from the checkpoint of epoch k draws exactly what an uninterrupted run draws
from epoch k on, and on CPU ends with bit-identical weights.

Under torchrun every process trains on its share of each global batch (DDP averages the
gradients); rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from synthmri.generative import checkpoint as ckpt
from synthmri.generative.base import GeneratorModel
from synthmri.generative.config import GeneratorParams
from synthmri.generative.data import counts, load_images, select
from synthmri.generative.registry import get_kind
from synthmri.runtime import (
    Dist,
    all_mean,
    derive_seed,
    generator,
    init_distributed,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
    tensors_sha256,
)
from synthmri.io import read_table, write_table

TRAIN = "train"  # metric prefixes: train/<loss>, val/<loss>
VAL = "val"
IMAGES_TABLE = "images.csv"  # out_dir: every selected image with its role (train, val, cut) and reason


def train_generator(
    manifest: Path,
    cls: str,
    out_dir: Path,
    cfg: GeneratorParams,
    *,
    live_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[int], None] | None = None,
    column: str = "class",
) -> dict[str, Any]:
    """Train the `cfg.kind` generator of class `cls` on the kept Training images of `manifest`.

    Writes model.safetensors, config.json and images.csv into `out_dir`, and checkpoint.pt into
    `checkpoint_dir` (default `out_dir`); a checkpoint of the same config and images is resumed.
    `on_epoch(epoch)` is called after each finished epoch (and its checkpoint, if any), e.g. to stop
    a run. `column`: the manifest column `cls` is matched in (`source_class` for a task's per-source
    generators). Returns the run's metrics. Under torchrun, call it from every process.
    """
    set_threads(cfg.train.threads)
    info, device, owns_group = init_distributed(cfg.train.device)
    try:
        return _train(Path(manifest), cls, Path(out_dir), cfg, info, device,
                      Path(live_dir) if live_dir else None, Path(checkpoint_dir or out_dir), on_epoch, column)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(manifest: Path, cls: str, out_dir: Path, cfg: GeneratorParams, info: Dist, device: torch.device,
           live_dir: Path | None, checkpoint_dir: Path, on_epoch: Callable[[int], None] | None,
           column: str) -> dict[str, Any]:
    p = cfg.model
    table = select(read_table(manifest), cls, cfg, column)
    train_paths = table.loc[table["role"] == "train", "out_path"].tolist()
    val_paths = table.loc[table["role"] == "val", "out_path"].tolist()
    if p.batch_size % info.world_size:
        raise ValueError(f"generator.{cfg.kind}.batch_size={p.batch_size} is the global batch: it must divide "
                         f"evenly over {info.world_size} processes")
    if len(train_paths) < p.batch_size:
        raise ValueError(f"class {cls!r} has {len(train_paths)} training images, fewer than "
                         f"generator.{cfg.kind}.batch_size={p.batch_size}")

    images = _to_device(load_images(train_paths, p.image_size), device)
    val_images = _to_device(load_images(val_paths, p.image_size), device)

    seed_everything(cfg.seed)  # model initialisation
    model = get_kind(cfg.kind)(cfg, device, cfg.train.precision)
    fp = ckpt.fingerprint(cfg, cls, train_paths, val_paths)
    ckpt_path = checkpoint_dir / ckpt.CHECKPOINT_FILE
    state = ckpt.load_checkpoint(ckpt_path, fp)
    if state is not None and state["epoch"] > p.epochs:
        state = None  # trained past this budget: a shorter run must start over
    start, history = 0, {}
    if state is not None:
        ckpt.restore(model, state)
        set_rng_state(state["rng"])
        start, history = int(state["epoch"]), dict(state["history"])
    model.prepare_training(info, cfg.train.compile)

    live = _open_live(live_dir, start) if (info.main and live_dir is not None) else None
    steps = len(train_paths) // p.batch_size  # full batches only: DDP shards stay equal
    local = p.batch_size // info.world_size
    t0, seen = time.perf_counter(), 0
    for epoch in range(start, p.epochs):
        order = torch.randperm(len(train_paths), generator=generator(torch.device("cpu"), cfg.seed, cls, "order", epoch))
        idx = order[: steps * p.batch_size].view(steps, p.batch_size)[:, info.rank :: info.world_size].to(device)
        g = generator(device, cfg.seed, cls, "noise", epoch, info.rank)
        sums = {name: torch.zeros((), device=device) for name in model.losses}
        for s in range(steps):
            losses = model.train_step(model.to_input(images[idx[s]]), g)
            for name in model.losses:
                sums[name] += losses[name]
        seen += steps * local
        done = epoch + 1
        if done % cfg.train.log_every == 0 or done == p.epochs:
            logged = {f"{TRAIN}/{k}": all_mean(v / steps, info).item() for k, v in sums.items()}
            if info.main:
                if len(val_paths):
                    logged[f"{VAL}/{model.val_loss_name}"] = _val_loss(model, val_images, cfg, cls)
                history = {**logged, "epoch": done}
                if live is not None:
                    _log(live, model, logged, done, cfg, cls)
        if done % cfg.train.checkpoint_every == 0 or done == p.epochs:
            if info.main:
                ckpt.save_checkpoint(ckpt_path, model, epoch=done, fingerprint=fp, rng=rng_state(), history=history)
        if on_epoch is not None:
            on_epoch(done)
    seconds = time.perf_counter() - t0

    digest = _agree(model, info)
    metrics = {
        "class": cls,
        "kind": cfg.kind,
        "epochs": p.epochs,
        "resumed_from_epoch": start,
        "steps_per_epoch": steps,
        "image_size": p.image_size,
        "batch_size": p.batch_size,
        "world_size": info.world_size,
        "device": device.type,
        "train_images": len(train_paths),
        "val_images": len(val_paths),
        "images": counts(table),
        **{k: v for k, v in history.items() if k != "epoch"},
        "seconds": round(seconds, 3),
        "train_images_per_second": round(seen * info.world_size / seconds, 3) if seen else None,
        "weights_sha256": digest,
    }
    if info.main:
        ckpt.save_model(model, out_dir, cls, extra={"training": {k: metrics[k] for k in ("epochs", "train_images", "val_images")}})
        write_table(table, out_dir / IMAGES_TABLE)
        if live is not None:
            live.end()
    return metrics


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(a).unsqueeze(1).to(device)  # (N, 1, S, S) uint8: a quarter of float32's memory


@torch.no_grad()
def _val_loss(model: GeneratorModel, images: torch.Tensor, cfg: GeneratorParams, cls: str) -> float:
    """Mean validation loss with the same noise at every validation (comparable across epochs)."""
    g = generator(model.device, cfg.seed, cls, "val")
    total = torch.zeros((), device=model.device)
    b = cfg.model.batch_size
    for i in range(0, len(images), b):
        x = model.to_input(images[i : i + b])
        total += model.val_loss(x, g) * len(x)
    return (total / len(images)).item()


def _agree(model: GeneratorModel, info: Dist) -> str:
    """Digest of the final weights; under DDP, check that every replica holds the same ones.

    DDP keeps parameters in step; batch-norm buffers are broadcast from rank 0 at each forward, so
    the last forward's local update is overwritten here with rank 0's, which is what gets saved.
    """
    if info.enabled:
        for net in model.nets().values():
            for buf in net.buffers():
                dist.broadcast(buf, 0)
    digest = tensors_sha256(model.state_tensors())
    if info.enabled:
        digests: list[str | None] = [None] * info.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP replicas diverged: weight digests {digests}")
    return digest


def _open_live(live_dir: Path, start: int):
    from dvclive import Live

    if start > 0:
        _trim_live(live_dir, start)
    # The stage's dvc.yaml declares this folder's metrics and plots; dvclive writes no dvc.yaml of its own.
    return Live(dir=str(live_dir), resume=start > 0, save_dvc_exp=False, dvcyaml=None)


def _trim_live(live_dir: Path, last_step: int) -> None:
    """Drop history a killed run logged after its last checkpoint, so resumed steps are not doubled."""
    import pandas as pd

    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        df = pd.read_csv(tsv, sep="\t")
        if "step" in df.columns and (df["step"] > last_step).any():
            df[df["step"] <= last_step].to_csv(tsv, sep="\t", index=False)


def _log(live, model: GeneratorModel, logged: dict[str, float], step: int, cfg: GeneratorParams, cls: str) -> None:
    live.step = step
    for name, value in logged.items():
        live.log_metric(name, value)
    if cfg.train.sample_grid:
        x = model.sample(cfg.train.sample_grid, derive_seed(cfg.seed, cls, "grid"), sampler="ddim",
                         steps=cfg.train.grid_steps)
        live.log_image(f"samples/{step:05d}.png", grid(x))
    live.next_step()


def grid(x: torch.Tensor) -> np.ndarray:
    """(N, 1, S, S) in [0, 1] -> one uint8 (H, W) mosaic, ceil(sqrt(N)) images per row."""
    from torchvision.utils import make_grid

    nrow = math.ceil(math.sqrt(len(x)))
    m = make_grid(x.float().cpu(), nrow=nrow, padding=2, pad_value=0.0)[0]
    return (m * 255).round().clamp(0, 255).to(torch.uint8).numpy()
