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
from synthmri.tasks import load_task


def train_generator_cmd(manifest: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                        live_dir: Path | None = None, checkpoint_dir: Path | None = None) -> dict[str, Any] | None:
    from synthmri.generative.train import train_generator

    data = read_params(params_path)
    cfg = load_generator(data.get("generator"))
    task = load_task(data)
    _check_generator_class(task, cls)
    metrics = train_generator(manifest, cls, out_dir, cfg, live_dir=live_dir, checkpoint_dir=checkpoint_dir,
                              column=task.generator_column)
    return metrics if int(os.environ.get("RANK", "0")) == 0 else None


def generate_cmd(model_dir: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    from synthmri.generative.sample import generate

    data = read_params(params_path)
    cfg = load_generate(data.get("generate"))
    task = load_task(data)
    _check_generator_class(task, cls)
    # a per-source generator's images are its target class's (pooled by the readers: Task.synthetic_folders)
    return generate(model_dir, cls, out_dir, cfg, target=task.target_of(cls) if task.params.generators == "source" else cls)


def _check_generator_class(task, cls: str) -> None:
    allowed = task.expected_generator_classes()
    if cls not in allowed:
        raise ValueError(f"no {cls!r} generator in task {task.name!r}: task.generators: {task.params.generators} "
                         f"trains {list(allowed)}")
