"""Plain entry points for the `fidelity` stage and `weights fetch`; cli.py exposes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from synthmri.fidelity.config import load_fidelity
from synthmri.fidelity.weights import DEFAULT_DIR, fetch
from synthmri.params import load, read_params


def fidelity_cmd(processed_manifest: Path, synthetic_dir: Path, out_json: Path, plots_dir: Path,
                 params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Write `out_json` (metrics per class and a summary) and the memorisation plots; return the metrics."""
    from synthmri.fidelity.evaluate import evaluate

    data = read_params(params_path)
    cfg = load_fidelity(data.get("fidelity"))
    classes = load("data", params_path, data).classes
    return evaluate(processed_manifest, synthetic_dir, out_json, plots_dir, cfg, classes)


def weights_fetch_cmd(names: Sequence[str] | None, dest_dir: Path = DEFAULT_DIR) -> list[dict[str, Any]]:
    """Download the named pretrained weight files (all when none are named) and check their sha256."""
    return fetch(list(names or []), dest_dir)
