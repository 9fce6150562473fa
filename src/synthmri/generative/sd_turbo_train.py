"""Fine-tune one SD-Turbo for every class (the `train_generator_shared` stage): checkpoints, resume, dvclive.

Each class's Training images are selected as for the per-class generators (`data.select`: plane
balance and validation share as params); a batch mixes classes, each image prompted by its class.
Data order and noise come from generators seeded per (seed, epoch), so a run resumed from the
checkpoint of epoch k draws what an uninterrupted run draws and, on CPU, ends with the same weights.
Checkpoints hold only what trains (the UNet, or its LoRA adapters), the optimizer and the RNG states.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from synthmri import pretrained
from synthmri.generative import checkpoint as ckpt
from synthmri.generative.config import GeneratorParams
from synthmri.generative.data import counts, load_images, select
from synthmri.generative.sd_turbo import SOURCES_FILE, SDTurbo
from synthmri.generative.train import IMAGES_TABLE, TRAIN, VAL, _open_live, grid
from synthmri.images import sha256_file
from synthmri.io import atomic_path, read_table, write_table
from synthmri.runtime import (derive_seed, generator, init_distributed, rng_state, seed_everything, set_rng_state,
                              set_threads, tensors_sha256)

WEIGHTS_NAME = "sd-turbo"  # pretrained.HUB_FOLDERS entry


def train_sd_turbo(manifest: Path, classes: list[str], out_dir: Path, cfg: GeneratorParams, *,
                   live_dir: Path | None = None, checkpoint_dir: Path | None = None,
                   on_epoch: Callable[[int], None] | None = None, column: str = "class") -> dict[str, Any]:
    """Fine-tune on the kept Training images of `classes` (read from the manifest's `column`: the task's); write the model (`SDTurbo.save`), images.csv and
    sources.csv into `out_dir`, checkpoint.pt into `checkpoint_dir` (default `out_dir`)."""
    p = cfg.sd_turbo
    set_threads(cfg.train.threads)
    info, device, _ = init_distributed(cfg.train.device)
    if info.enabled:
        raise ValueError("generator.kind sd_turbo trains in one process: leave generator.train.launch empty")
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir or out_dir)
    missing = [c for c in classes if c not in p.prompts]
    if missing:
        raise ValueError(f"generator.sd_turbo.prompts has no prompt for class(es) {missing}; add "
                         + ", ".join(f"generator.sd_turbo.prompts.{c}" for c in missing))
    table = read_table(manifest)
    chosen = pd.concat([select(table, c, cfg, column).assign(**{"class": c}) for c in classes], ignore_index=True)
    train = chosen[chosen["role"] == "train"].reset_index(drop=True)
    val = chosen[chosen["role"] == "val"].reset_index(drop=True)
    if len(train) < p.batch_size:
        raise ValueError(f"{len(train)} training images over all classes, fewer than generator.sd_turbo.batch_size="
                         f"{p.batch_size}")
    base = None if p.tiny else pretrained.check_folder(WEIGHTS_NAME, Path(p.weights))  # pinned digests, or a one-line error

    images = torch.from_numpy(load_images(train["out_path"].tolist(), p.image_size)).unsqueeze(1).to(device)
    val_images = torch.from_numpy(load_images(val["out_path"].tolist(), p.image_size)).unsqueeze(1).to(device)
    labels, val_labels = train["class"].tolist(), val["class"].tolist()

    seed_everything(cfg.seed)
    model = SDTurbo(cfg, device, cfg.train.precision)
    fp = ckpt.fingerprint(cfg, ",".join(classes), train["out_path"].tolist(), val["out_path"].tolist())
    if base is not None:  # other base bytes: start over
        fp = hashlib.sha256((fp + json.dumps(base["sha256"], sort_keys=True)).encode()).hexdigest()
    ckpt_path = checkpoint_dir / ckpt.CHECKPOINT_FILE
    state = ckpt.load_checkpoint(ckpt_path, fp)
    if state is not None and state["epoch"] > p.epochs:
        state = None
    start, history = 0, {}
    if state is not None:
        _restore(model, state)
        set_rng_state(state["rng"])
        start, history = int(state["epoch"]), dict(state["history"])

    live = _open_live(live_dir, start) if live_dir is not None else None
    steps = len(train) // p.batch_size
    t0, seen = time.perf_counter(), 0
    for epoch in range(start, p.epochs):
        order = torch.randperm(len(train), generator=generator(torch.device("cpu"), cfg.seed, "sd_turbo", "order", epoch))
        g = generator(device, cfg.seed, "sd_turbo", "noise", epoch)
        total = torch.zeros((), device=device)
        for s in range(steps):
            idx = order[s * p.batch_size:(s + 1) * p.batch_size]
            x = model.to_input(images[idx.to(device)])
            total += model.train_step(x, [labels[i] for i in idx.tolist()], g)["loss"]
        seen += steps * p.batch_size
        done = epoch + 1
        if done % cfg.train.log_every == 0 or done == p.epochs:
            logged = {f"{TRAIN}/loss": (total / steps).item()}
            if len(val):
                logged[f"{VAL}/loss"] = _val_loss(model, val_images, val_labels, cfg)
            history = {**logged, "epoch": done}
            if live is not None:
                _log(live, model, logged, done, cfg, classes)
        if done % cfg.train.checkpoint_every == 0 or done == p.epochs:
            _save_checkpoint(ckpt_path, model, epoch=done, fingerprint=fp, history=history)
        if on_epoch is not None:
            on_epoch(done)
    seconds = time.perf_counter() - t0

    digest = tensors_sha256(model.trainable())
    metrics = {
        "classes": classes, "kind": cfg.kind, "mode": p.mode, "tiny": p.tiny, "epochs": p.epochs,
        "resumed_from_epoch": start, "steps_per_epoch": steps, "image_size": p.image_size, "batch_size": p.batch_size,
        "device": device.type, "train_images": len(train), "val_images": len(val),
        "images": {c: counts(chosen[chosen["class"] == c]) for c in classes},
        "trainable_parameters": sum(t.numel() for t in model.trainable().values()),
        **{k: v for k, v in history.items() if k != "epoch"},
        "seconds": round(seconds, 3),
        "train_images_per_second": round(seen / seconds, 3) if seen else None,
        "weights_sha256": digest,
        "base_weights": "tiny random-initialised (demo: numbers compare with nothing)" if base is None else base["record"],
    }
    model.save(out_dir, extra={"training": {k: metrics[k] for k in ("epochs", "train_images", "val_images")}})
    write_table(chosen, out_dir / IMAGES_TABLE)
    write_table(training_sources(table, classes, column), out_dir / SOURCES_FILE)
    if live is not None:
        live.end()
    return metrics


def training_sources(table: pd.DataFrame, classes: list[str], column: str = "class") -> pd.DataFrame:
    """Every kept image of the Training split (never val or test) per class, with its sha256: what
    img2img may start from. The generate stages read pixels only through this list, checking each digest."""
    rows = table[(table["status"] == "kept") & (table["split"] == "train") & table[column].isin(classes)]
    out = rows[[column, "out_path"]].astype(str).rename(columns={column: "class"}).sort_values(["class", "out_path"], kind="stable")
    out = out.rename(columns={"out_path": "path"}).reset_index(drop=True)
    out["sha256"] = [sha256_file(p) for p in out["path"]]
    return out


def _val_loss(model: SDTurbo, images: torch.Tensor, labels: list[str], cfg: GeneratorParams) -> float:
    g = generator(model.device, cfg.seed, "sd_turbo", "val")  # the same noise at every validation
    total, b = 0.0, cfg.sd_turbo.batch_size
    for i in range(0, len(images), b):
        x = model.to_input(images[i:i + b])
        total += model.val_loss(x, labels[i:i + b], g).item() * len(x)
    return total / len(images)


def _log(live, model: SDTurbo, logged: dict[str, float], step: int, cfg: GeneratorParams, classes: list[str]) -> None:
    live.step = step
    for name, value in logged.items():
        live.log_metric(name, value)
    n = cfg.train.sample_grid
    if n:  # a Turbo-style preview: txt2img, at most 4 steps, one block of images per class
        per = max(1, n // len(classes))
        x = torch.cat([model.txt2img(c, per, derive_seed(cfg.seed, c, "grid"), steps=min(cfg.train.grid_steps, 4),
                                     guidance_scale=0.0) for c in classes])
        live.log_image(f"samples/{step:05d}.png", grid(x))
    live.next_step()


def _save_checkpoint(path: Path, model: SDTurbo, *, epoch: int, fingerprint: str, history: dict[str, Any]) -> None:
    state = {"format": ckpt.FORMAT, "fingerprint": fingerprint, "epoch": epoch,
             "trainable": {k: v.detach().cpu() for k, v in model.trainable().items()},
             "optimizers": {"adamw": model.opt.state_dict()}, "rng": rng_state(), "history": history}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore(model: SDTurbo, state: dict[str, Any]) -> None:
    params = model.trainable()
    if set(params) != set(state["trainable"]):
        raise ValueError("checkpoint holds other trainable tensors than this model: delete it to start over")
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(state["trainable"][k])
    model.opt.load_state_dict(state["optimizers"]["adamw"])

