"""Weights, resolved config and resumable checkpoints on disk; nothing here ever unpickles.

- `model.safetensors` + `config.json`: the trained generator (safetensors holds tensors only).
- `checkpoint.pt`: everything a resumed run needs (weights, optimizer states, RNG states, epoch),
  written with `torch.save` and read with `torch.load(weights_only=True)`, which refuses any object
  that is not a tensor, a number, a string or a container of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from synthmri import __version__
from synthmri.generative.base import GeneratorModel
from synthmri.generative.config import GeneratorParams
from synthmri.io import atomic_path, read_json, write_json

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1
KIND_SECTIONS = {"ddpm", "dcgan", "sd_turbo"}  # GeneratorParams' per-kind sections


def save_model(model: GeneratorModel, out_dir: Path, cls: str, extra: dict[str, Any] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_tensors().items()}
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        # One metadata key: safetensors writes a map's keys in random order, and the same weights
        # must give the same bytes (DVC hashes the file).
        meta = json.dumps({"kind": model.kind, "class": cls, "format": FORMAT}, sort_keys=True)
        save_file(tensors, str(tmp), metadata={"synthmri": meta})
    write_json(out_dir / CONFIG_FILE, {
        "format": FORMAT,
        "synthmri": __version__,
        "kind": model.kind,
        "class": cls,
        "image_size": model.size,
        "value_range": "uint8 / 255" if model.kind == "ddpm" else "uint8 / 127.5 - 1",
        "generator": model.cfg.to_dict(),
        **(extra or {}),
    })


def read_config(model_dir: Path) -> tuple[dict[str, Any], GeneratorParams]:
    from synthmri.generative.config import load_generator

    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train_generator stage for this class first")
    config = read_json(path)
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported format {config.get('format')!r} (expected {FORMAT})")
    return config, load_generator(config["generator"])


def load_weights(model: GeneratorModel, model_dir: Path) -> None:
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train_generator stage for this class first")
    model.load_state_tensors(load_file(str(path), device=str(model.device)))


def save_checkpoint(path: Path, model: GeneratorModel, *, epoch: int, fingerprint: str, rng: dict[str, Any],
                    history: dict[str, Any]) -> None:
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "nets": {name: net.state_dict() for name, net in model.nets().items()},
        "optimizers": {name: opt.state_dict() for name, opt in model.optimizers().items()},
        "rng": rng,
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run's config and data, else None (start over)."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT or state.get("fingerprint") != fingerprint:
        return None
    return state


def restore(model: GeneratorModel, state: dict[str, Any]) -> None:
    for name, net in model.nets().items():
        net.load_state_dict(state["nets"][name], strict=True)
    for name, opt in model.optimizers().items():
        opt.load_state_dict(state["optimizers"][name])  # moves state to the parameters' device


def fingerprint(cfg: GeneratorParams, cls: str, train_paths: list[str], val_paths: list[str]) -> str:
    """What a checkpoint must match to be resumed: the config minus the epoch budget and logging
    cadence (so a longer budget continues a finished run), the class and the exact image split."""
    import hashlib

    d = cfg.to_dict()
    d[cfg.kind] = {k: v for k, v in d[cfg.kind].items() if k != "epochs"}
    d["train"] = {k: v for k, v in d["train"].items() if k in ("precision",)}
    for other in KIND_SECTIONS - {cfg.kind}:  # another kind's params never invalidate this one's run
        d.pop(other)
    blob = json.dumps({"config": d, "class": cls, "train": train_paths, "val": val_paths}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
