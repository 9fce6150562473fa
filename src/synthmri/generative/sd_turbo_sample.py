"""Sample one class from the fine-tuned SD-Turbo (`generate@<class>` for generator.kind sd_turbo).

- img2img (the SD-Turbo study's code): each image starts from a Training-split image of its class,
  drawn with replacement by a seeded generator from sources.csv (written by the training stage from the
  preprocess manifest's kept Training rows: never val or test). The source's path is the manifest's
  `source` column, so the memorisation check can compare each image with its own source.
- txt2img (Turbo-style): from noise in 1-4 steps without guidance.
Images are written as 1-channel lossless PNG in the inputs' orientation (nothing is transposed), with
the columns every generator's manifest has (`trained_size`, `size`, seed, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthmri.generative.config import GenerateParams
from synthmri.generative.data import load_images
from synthmri.generative.sample import MANIFEST, _remove_stale, to_uint8
from synthmri.generative.sd_turbo import SOURCES_FILE, load_trained
from synthmri.images import sha256_file, write_png
from synthmri.io import progress, read_table, write_table
from synthmri.runtime import derive_seed, resolve_device, set_threads


def class_sources(model_dir: Path, cls: str) -> pd.DataFrame:
    """The Training-split images of `cls` img2img may start from (path, sha256), sorted by path."""
    table = read_table(Path(model_dir) / SOURCES_FILE)
    rows = table[table["class"] == cls].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{model_dir / SOURCES_FILE}: no Training images of class {cls!r} to start img2img from")
    return rows


def draw_sources(sources: pd.DataFrame, n: int, seed: int, cls: str) -> list[str]:
    """`n` source paths drawn with replacement (study's code: a random training image per synthetic one)."""
    rng = np.random.default_rng(derive_seed(seed, cls, "sources"))
    return sources["path"].iloc[rng.integers(0, len(sources), size=n)].tolist()


def _read_sources(paths: list[str], digests: dict[str, str], size: int) -> torch.Tensor:
    for p in sorted(set(paths)):
        if sha256_file(p) != digests[p]:
            raise ValueError(f"{p} changed since the model was trained (sha256 in sources.csv); rerun "
                             "train_generator_shared (dvc repro)")
    return torch.from_numpy(load_images(paths, size, workers=1)).unsqueeze(1)


def generate_sd_turbo(model_dir: Path, cls: str, out_dir: Path, cfg: GenerateParams) -> dict[str, Any]:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = load_trained(model_dir, device, cfg.precision)
    g = cfg.sd_turbo
    img2img = g.mode == "img2img"
    if img2img:
        sources = class_sources(model_dir, cls)
        digests = dict(zip(sources["path"], sources["sha256"]))
        drawn = draw_sources(sources, cfg.n_per_class, cfg.seed, cls)
        steps, guidance, sampler = g.img2img.steps, g.img2img.guidance_scale, f"img2img-{g.img2img.scheduler}"
    else:
        steps, guidance, sampler = g.txt2img.steps, g.txt2img.guidance_scale, "txt2img-euler"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with progress() as bar:
        task = bar.add_task(f"sampling {cls} (sd_turbo {sampler}, {steps} steps)", total=cfg.n_per_class)
        for start in range(0, cfg.n_per_class, cfg.batch_size):
            n = min(cfg.batch_size, cfg.n_per_class - start)
            batch_seed = derive_seed(cfg.seed, cls, start)
            if img2img:
                src = drawn[start:start + n]
                x = model.img2img(cls, _read_sources(src, digests, model.size), batch_seed,
                                  strength=g.img2img.strength, guidance_scale=guidance, steps=steps,
                                  scheduler=g.img2img.scheduler)
            else:
                src = [""] * n
                x = model.txt2img(cls, n, batch_seed, steps=steps, guidance_scale=guidance)
            for i, img in enumerate(to_uint8(x, cfg.out_size)):
                path = out_dir / f"{cls}_{start + i:04d}.png"
                write_png(path, img)
                rows.append({"path": path.as_posix(), "class": cls, "index": start + i, "seed": cfg.seed,
                             "batch_seed": batch_seed, "kind": model.kind, "sampler": sampler, "steps": steps,
                             "trained_size": model.size, "size": cfg.out_size, "guidance_scale": guidance,
                             "strength": g.img2img.strength if img2img else "", "source": src[i],
                             "prompt": model.cfg.sd_turbo.prompts[cls]})
            bar.advance(task, n)
    table = pd.DataFrame(rows)
    write_table(table, out_dir / MANIFEST)
    stale = _remove_stale(out_dir, cls, set(table["path"]))
    return {"class": cls, "kind": model.kind, "mode": g.mode, "images": len(table), "size": cfg.out_size,
            "trained_size": model.size, "sampler": sampler, "steps": steps, "guidance_scale": guidance,
            "distinct_sources": int(table["source"].replace("", np.nan).nunique()) if img2img else None,
            "format": "png-gray", "seed": cfg.seed, "stale_removed": stale}
