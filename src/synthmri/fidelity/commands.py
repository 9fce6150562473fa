"""Plain entry point for the `fidelity` stage; cli.py exposes it (`weights fetch` is `synthmri.pretrained.fetch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri.fidelity.config import load_fidelity
from synthmri.params import load, provenance, read_params


def fidelity_cmd(processed_manifest: Path, synthetic_dir: Path, out_json: Path, plots_dir: Path,
                 params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Write `out_json` (metrics per class and a summary) and the memorisation plots; return the metrics."""
    from synthmri.fidelity.evaluate import Resample, evaluate

    data = read_params(params_path)
    cfg = load_fidelity(data.get("fidelity"))
    classes = load("data", params_path, data).classes
    return evaluate(processed_manifest, synthetic_dir, out_json, plots_dir, cfg, classes,
                    resample=Resample.from_manifests(synthetic_dir, classes),  # sizes the generate stage recorded
                    provenance=provenance(data))
