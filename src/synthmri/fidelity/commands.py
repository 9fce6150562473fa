"""Plain entry point for the `fidelity` stage; cli.py exposes it (`weights fetch` is `synthmri.pretrained.fetch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri.fidelity.config import load_fidelity
from synthmri.params import provenance, read_params
from synthmri.tasks import load_task


def fidelity_cmd(processed_manifest: Path, synthetic_dir: Path, out_json: Path, plots_dir: Path,
                 params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Write `out_json` (metrics per class and a summary) and the memorisation plots; return the metrics."""
    from synthmri.fidelity.evaluate import Resample, evaluate

    data = read_params(params_path)
    cfg = load_fidelity(data.get("fidelity"))
    task = load_task(data)  # the task's (mapped) classes; a per-source task pools several generator folders
    folders = task.synthetic_folders()
    return evaluate(processed_manifest, synthetic_dir, out_json, plots_dir, cfg, task.classes,
                    resample=Resample.from_manifests(synthetic_dir, task.params.generator_classes or
                                                     task.expected_generator_classes()),  # sizes generate recorded
                    provenance=provenance(data), folders=folders)
