"""Plain entry points for the `train_generator@<class>` and `generate@<class>` stages.

Each reads its params section from params.yaml and calls one function; cli.py exposes them. Under
torchrun only rank 0 returns metrics (the caller writes them), the other ranks return None. For a
class-conditional kind (sd_turbo) `train_generator@<class>` writes a marker, `generate@<class>` samples
the class from the model of `train_generator_shared` (dvc.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synthmri.generative.config import load_generate, load_generator
from synthmri.generative.markers import is_marker, write_marker
from synthmri.generative.registry import is_conditional
from synthmri.io import read_json
from synthmri.params import read_params


def train_generator_cmd(manifest: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                        live_dir: Path | None = None, checkpoint_dir: Path | None = None) -> dict[str, Any] | None:
    cfg = load_generator(read_params(params_path).get("generator"))
    if is_conditional(cfg.kind):
        return write_marker(out_dir, cfg.kind, cls, live_dir, checkpoint_dir)
    from synthmri.generative.train import train_generator

    metrics = train_generator(manifest, cls, out_dir, cfg, live_dir=live_dir, checkpoint_dir=checkpoint_dir)
    return metrics if int(os.environ.get("RANK", "0")) == 0 else None


def generate_cmd(model_dir: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                 shared_dir: Path | None = None) -> dict[str, Any]:
    cfg = load_generate(read_params(params_path).get("generate"))
    if is_marker(model_dir):
        kind = read_json(Path(model_dir) / "config.json")["kind"]
        if not is_conditional(kind):
            raise ValueError(f"{model_dir} is a marker of the per-class kind {kind!r}: rerun train_generator@{cls}")
        if shared_dir is None:
            raise ValueError(f"{kind} trains one model for all classes: pass its folder with --shared")
        from synthmri.generative.sd_turbo_sample import generate_sd_turbo

        return generate_sd_turbo(Path(shared_dir), cls, out_dir, cfg)
    from synthmri.generative.sample import generate

    return generate(model_dir, cls, out_dir, cfg)
