"""`synthmri summary`: one table of what each stage produced, read from metrics/*.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synthmri.io import read_json

# stage -> (metrics file, [(label, dotted key)]); a missing key prints as "-"
ROWS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ingest": ("ingest.json", [("files found", "files"), ("images", "images"), ("quarantined", "quarantined")]),
    "audit": ("audit.json", [("RGB images", "colour_modes.RGB"), ("distinct sizes", "dimensions.distinct"),
                             ("blurry", "blur.blurry")]),
    "dedup": ("dedup.json", [("images with duplicates", "total.images_with_duplicates"),
                             ("removed", "total.removed"), ("train->test leakage removed", "cross_split.removed")]),
    "preprocess": ("preprocess.json", [("train images", "train.total"), ("test images", "test.total")]),
    "fidelity": ("fidelity.json", [("mean FID over classes", "summary.fid_mean"),
                                   ("real-vs-real FID floor", "summary.fid_real_floor_mean"),
                                   ("near-copies of training images", "summary.memorised_share")]),
    "classify baseline": ("scenarios/baseline.json", [("accuracy (mean over seeds)", "accuracy.mean"),
                                                      ("macro F1", "macro_f1.mean")]),
    "ratio": ("ratio.json", [("synthetic per real image", "ratio"), ("accuracy", "accuracy.mean"),
                             ("McNemar p < 0.05 vs baseline (seeds)", "vs_baseline.seeds_p_below_0_05")]),
}


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "-"
        d = d[part]
    return d


def print_summary(metrics_dir: Path, params: dict[str, Any]) -> None:
    profile = params.get("profile_name", "?")
    title = f"synthmri pipeline — profile [bold]{profile}[/]"
    if profile == "demo":
        title += " — DEMO numbers on generated data, not a reproduction of the paper"
    table = Table(title=title, title_justify="left")
    for col in ("stage", "measure", "value"):
        table.add_column(col)
    for stage, (fname, keys) in ROWS.items():
        path = metrics_dir / fname
        if not path.is_file():
            table.add_row(stage, "(not run)", "")
            continue
        data = read_json(path)
        for i, (label, key) in enumerate(keys):
            value = _get(data, key)
            table.add_row(stage if i == 0 else "", label, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
