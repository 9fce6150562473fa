"""Plain entry points for the `train_generator@<class>` and `generate@<class>` stages.

Each reads its params section from params.yaml and calls one function; cli.py exposes them. Under
torchrun only rank 0 returns metrics (the caller writes them), the other ranks return None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synthmri.generative.config import load_generate, load_generator
from synthmri.params import read_params


def train_generator_cmd(manifest: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                        live_dir: Path | None = None, checkpoint_dir: Path | None = None) -> dict[str, Any] | None:
    from synthmri.generative.train import train_generator

    cfg = load_generator(read_params(params_path).get("generator"))
    metrics = train_generator(manifest, cls, out_dir, cfg, live_dir=live_dir, checkpoint_dir=checkpoint_dir)
    return metrics if int(os.environ.get("RANK", "0")) == 0 else None


def generate_cmd(model_dir: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    from synthmri.generative.sample import generate

    cfg = load_generate(read_params(params_path).get("generate"))
    return generate(model_dir, cls, out_dir, cfg)
