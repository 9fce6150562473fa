"""Entry point of the `train_generator_shared` stage: a class-conditional kind's one model, or a marker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri.generative.config import load_generator
from synthmri.generative.markers import write_marker
from synthmri.generative.registry import is_conditional
from synthmri.params import read_params
from synthmri.tasks import load_task


def train_shared_cmd(manifest: Path, out_dir: Path, params_path: Path = Path("params.yaml"),
                     live_dir: Path | None = None, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    raw = read_params(params_path)
    cfg = load_generator(raw.get("generator"))
    if not is_conditional(cfg.kind):
        return write_marker(out_dir, cfg.kind, None, live_dir, checkpoint_dir)
    from synthmri.generative.sd_turbo_train import train_sd_turbo

    task = load_task(raw)  # the classes the task trains generators for, read from its column
    return train_sd_turbo(manifest, list(task.expected_generator_classes()), out_dir, cfg, live_dir=live_dir,
                          checkpoint_dir=checkpoint_dir, column=task.generator_column)
