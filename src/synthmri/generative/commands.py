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
from synthmri.tasks import load_task


def train_generator_cmd(manifest: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                        live_dir: Path | None = None, checkpoint_dir: Path | None = None) -> dict[str, Any] | None:
    data = read_params(params_path)
    cfg = load_generator(data.get("generator"))
    task = load_task(data)
    _check_generator_class(task, cls)
    if is_conditional(cfg.kind):
        return write_marker(out_dir, cfg.kind, cls, live_dir, checkpoint_dir)
    from synthmri.generative.train import train_generator

    metrics = train_generator(manifest, cls, out_dir, cfg, live_dir=live_dir, checkpoint_dir=checkpoint_dir,
                              column=task.generator_column)
    return metrics if int(os.environ.get("RANK", "0")) == 0 else None


def generate_cmd(model_dir: Path, cls: str, out_dir: Path, params_path: Path = Path("params.yaml"),
                 shared_dir: Path | None = None) -> dict[str, Any]:
    data = read_params(params_path)
    cfg = load_generate(data.get("generate"))
    task = load_task(data)
    _check_generator_class(task, cls)
    if is_marker(model_dir):
        kind = read_json(Path(model_dir) / "config.json")["kind"]
        if not is_conditional(kind):
            raise ValueError(f"{model_dir} is a marker of the per-class kind {kind!r}: rerun train_generator@{cls}")
        if shared_dir is None:
            raise ValueError(f"{kind} trains one model for all classes: pass its folder with --shared")
        from synthmri.generative.sd_turbo_sample import generate_sd_turbo

        return generate_sd_turbo(Path(shared_dir), cls, out_dir, cfg)
    from synthmri.generative.sample import generate

    # a per-source generator's images are its target class's (pooled by the readers: Task.synthetic_folders)
    return generate(model_dir, cls, out_dir, cfg, target=task.target_of(cls) if task.params.generators == "source" else cls)


def _check_generator_class(task, cls: str) -> None:
    allowed = task.expected_generator_classes()
    if cls not in allowed:
        raise ValueError(f"no {cls!r} generator in task {task.name!r}: task.generators: {task.params.generators} "
                         f"trains {list(allowed)}")
