"""Plain entry point for the `report` stage; cli.py exposes it. The work is `synthmri.report.write_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri import params as P
from synthmri.classify.config import load_classify


def report_cmd(metrics_dir: Path, predictions_dir: Path, out_dir: Path, params_path: Path = Path("params.yaml"),
               fidelity_json: Path | None = None) -> dict[str, Any]:
    """Write reports/: tables in the shape of the paper's Tables 3-6 beside its numbers, and figures 11-17."""
    from synthmri.report import write_report

    raw = P.read_params(params_path)
    cfg = load_classify(raw.get("classify"))
    return write_report(Path(metrics_dir), Path(predictions_dir), Path(out_dir), cfg,
                        fidelity_json=fidelity_json, profile=str(raw.get("profile_name", "")))
