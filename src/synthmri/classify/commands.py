"""Plain entry points for the `classify@<scenario>` and `ratio` stages; cli.py exposes them.

Each reads its params from params.yaml, writes its outputs and returns the metrics (the caller writes
them). Predictions go to `<out_dir>/predictions.csv` (also the dvc plots source of the confusion
matrices); the resolved params go beside them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from synthmri import params as P
from synthmri.classify.config import load_classify, load_ratio, ratio_scenario
from synthmri.io import read_table, write_json, write_table
from synthmri.tasks import load_task

PREDICTIONS = "predictions.csv"


def _setup(params_path: Path, processed_manifest: Path, synthetic_dir: Path | None):
    from synthmri.classify.data import load_images

    raw = P.read_params(params_path)
    cfg = load_classify(raw.get("classify"))
    task = load_task(raw)  # the task's (mapped) classes, as the processed manifest holds them
    classes = task.classes
    images = load_images(processed_manifest, synthetic_dir, classes, cfg.train.image_size,
                         folders=task.synthetic_folders())
    return raw, cfg, classes, images


def _write(out_dir: Path, metrics: dict, preds, cfg, extra: dict[str, Any] | None = None) -> None:
    out_dir = Path(out_dir)
    write_table(preds, out_dir / PREDICTIONS)
    write_json(out_dir / "params.json", {"classify": asdict(cfg)} | (extra or {}))


def classify_cmd(scenario: str, processed_manifest: Path, synthetic_dir: Path | None, out_dir: Path,
                 params_path: Path = Path("params.yaml"), live_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate scenario `scenario` of `classify.scenarios` for every seed; return its metrics."""
    from synthmri.classify.run import run_scenario

    cfg = load_classify(P.read_params(params_path).get("classify"))
    if scenario not in cfg.scenarios:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(cfg.scenarios) or '(none in params)'}")
    _, cfg, classes, images = _setup(params_path, processed_manifest, synthetic_dir)
    metrics, preds = run_scenario(scenario, cfg.scenarios[scenario], cfg, images, classes, live_dir=live_dir)
    _write(out_dir, metrics, preds, cfg)
    return metrics


def ratio_cmd(processed_manifest: Path, synthetic_dir: Path | None, out_dir: Path, params_path: Path = Path("params.yaml"),
              live_dir: Path | None = None, baseline_dir: Path | None = None, plot_csv: Path | None = None) -> dict[str, Any]:
    """The top-level `ratio`: all real images plus int(ratio x real) synthetic ones per class (the SD-Turbo study's sweep).

    With `baseline_dir` (the baseline scenario's out_dir), adds an exact McNemar test per seed against it.
    """
    from synthmri.classify.run import paired_vs_baseline, run_scenario

    raw = P.read_params(params_path)
    ratio = load_ratio(raw.get("ratio", 0))
    load_classify(raw.get("classify"))  # refuse bad params before decoding anything
    _, cfg, classes, images = _setup(params_path, processed_manifest, synthetic_dir)
    metrics, preds = run_scenario("ratio", ratio_scenario(ratio), cfg, images, classes, live_dir=live_dir)
    metrics = {"ratio": ratio} | metrics
    if baseline_dir is not None:
        metrics["vs_baseline"] = paired_vs_baseline(preds, read_table(Path(baseline_dir) / PREDICTIONS))
    _write(out_dir, metrics, preds, cfg, {"ratio": ratio})
    if plot_csv is not None:  # one row per seed: `dvc plots diff` across experiments draws the ratio curve
        import pandas as pd

        rows = [{"ratio": ratio, "seed": int(s), **v} for s, v in metrics["per_seed"].items()]
        write_table(pd.DataFrame(rows), plot_csv)
    return metrics
