"""Plain entry point for the `report` stage; cli.py exposes it. The work is `synthmri.report.write_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri import params as P
from synthmri.classify.config import load_classify


def report_cmd(metrics_dir: Path, predictions_dir: Path, out_dir: Path, params_path: Path = Path("params.yaml"),
               fidelity_json: Path | None = None, *, ratio_json: Path | None = None, data_metrics: Path | None = None,
               synthetic_dir: Path | None = None, plots_dir: Path | None = None,
               headline_json: Path | None = None) -> dict[str, Any]:
    """Write reports/: one page in the paper's order (data, fidelity, classification, paired tests) with the
    paper's tables and figures beside its numbers, and the headline metrics for `dvc exp show`."""
    from synthmri.report import write_report

    raw = P.read_params(params_path)
    cfg = load_classify(raw.get("classify"))
    return write_report(Path(metrics_dir), Path(predictions_dir), Path(out_dir), cfg,
                        fidelity_json=fidelity_json, profile=str(raw.get("profile_name", "")), ratio_json=ratio_json,
                        data_metrics=data_metrics, synthetic_dir=synthetic_dir, plots_dir=plots_dir,
                        headline_json=headline_json)
