"""Sample a trained generator into PNGs: batched, seeded, resized to the real images' size.

Paper §5.1.3: 600 images per class, sampled at the training size (128) and resized to 256. The
samples keep the training images' orientation (they were decoded without a transpose) and are
saved as single-channel lossless PNG. `paper_as_coded` reproduces what the paper's code saved:
MONAI's PILReader transposed each image and the code rotated the samples by -90 degrees, which is a
left-right mirror, and `plt.imsave` wrote lossy 3-channel JPEGs (docs/paper_as_coded.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from synthmri.images import write_png
from synthmri.generative import checkpoint as ckpt
from synthmri.generative.config import GenerateParams
from synthmri.generative.registry import get_kind
from synthmri.runtime import derive_seed, resolve_device, set_threads
from synthmri.io import atomic_path, progress, write_table

MANIFEST = "manifest.csv"


def load_generator_model(model_dir: Path, device: torch.device, precision: str = "fp32"):
    """The trained model of `model_dir` (config.json + model.safetensors; no unpickling)."""
    config, cfg = ckpt.read_config(Path(model_dir))
    model = get_kind(cfg.kind)(cfg, device, precision)
    ckpt.load_weights(model, Path(model_dir))
    return model, config


def generate(model_dir: Path, cls: str, out_dir: Path, cfg: GenerateParams, target: str | None = None) -> dict[str, Any]:
    """Write `cfg.n_per_class` images `<cls>_<0000>.png` and manifest.csv into `out_dir`.

    `target`: the class the images are labelled with (default `cls`); a task's per-source generator
    labels its images with the target class and records its own as `generator_class`."""
    target = cls if target is None else target
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model, config = load_generator_model(model_dir, device, cfg.precision)
    if config["class"] != cls:
        raise ValueError(f"{model_dir} holds the {config['class']!r} generator, not {cls!r}")
    if cfg.compile:
        model.compile_for_sampling()
    # DCGAN has no sampler: one generator pass per image.
    sampler = cfg.sampler if model.kind == "ddpm" else ""
    steps = {"ddim": cfg.ddim_steps, "ddpm": model.cfg.ddpm.timesteps}.get(sampler, 0)
    ext = "jpg" if cfg.paper_as_coded else "png"
    rows = []
    with progress() as bar:
        desc = f"sampling {cls} ({model.kind}" + (f", {sampler} {steps} steps)" if sampler else ")")
        task = bar.add_task(desc, total=cfg.n_per_class)
        for start in range(0, cfg.n_per_class, cfg.batch_size):
            n = min(cfg.batch_size, cfg.n_per_class - start)
            batch_seed = derive_seed(cfg.seed, cls, start)  # each batch seeded by its class and first index
            x = model.sample(n, batch_seed, sampler=cfg.sampler, steps=cfg.ddim_steps)
            for i, img in enumerate(to_uint8(x, cfg.out_size)):
                path = out_dir / f"{cls}_{start + i:04d}.{ext}"
                if cfg.paper_as_coded:
                    _write_as_coded(path, img, cfg.jpeg_quality)
                else:
                    write_png(path, img)
                # trained_size/size: the resize each image went through (fidelity's resampled floor reads them)
                rows.append({"path": path.as_posix(), "class": target, "generator_class": cls, "index": start + i, "seed": cfg.seed,
                             "batch_seed": batch_seed, "kind": model.kind, "sampler": sampler, "steps": steps,
                             "trained_size": model.size, "size": cfg.out_size})
            bar.advance(task, n)
    table = pd.DataFrame(rows)
    write_table(table, out_dir / MANIFEST)
    stale = _remove_stale(out_dir, cls, set(table["path"]))
    return {
        "class": cls,
        "target_class": target,
        "kind": model.kind,
        "images": len(table),
        "size": cfg.out_size,
        "trained_size": model.size,
        "sampler": sampler or None,
        "steps": steps or None,
        "format": "jpeg-rgb-mirrored" if cfg.paper_as_coded else "png-gray",
        "seed": cfg.seed,
        "stale_removed": stale,
    }


def _remove_stale(out_dir: Path, cls: str, written: set[str]) -> int:
    """Images of an earlier, larger run in `out_dir` would be taken as this run's: remove them."""
    pattern = re.compile(rf"{re.escape(cls)}_\d{{4,}}\.(png|jpg)")
    stale = [f for f in out_dir.iterdir() if pattern.fullmatch(f.name) and f.as_posix() not in written]
    for f in stale:
        f.unlink()
    return len(stale)


def to_uint8(x: torch.Tensor, size: int) -> np.ndarray:
    """float (N, 1, S, S) in [0, 1] -> uint8 (N, size, size); bicubic upsizing as the paper's cubic zoom."""
    x = x.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=size < x.shape[-1])
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].cpu().numpy()


def _write_as_coded(path: Path, img: np.ndarray, quality: int) -> None:
    """The paper's code: left-right mirror (transposed read + rotation by -90), 3-channel lossy JPEG."""
    rgb = np.repeat(np.ascontiguousarray(img[:, ::-1])[:, :, None], 3, axis=2)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)
