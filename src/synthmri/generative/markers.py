"""Markers: what a generator stage writes when the kind in use trains elsewhere (dvc.yaml, train_generator_shared).

A class-conditional kind (registry.CONDITIONAL) trains one model in `train_generator_shared`, so each
`train_generator@<class>` writes a marker; a per-class kind trains in `train_generator@<class>`, so
`train_generator_shared` writes one. A marker's bytes depend only on the kind (and class), so switching
any other param never reruns a stage that reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmri.generative.registry import is_conditional
from synthmri.io import read_json, write_json

MARKER_FILE = "config.json"  # where a trained model keeps its config: a stage reading the folder finds either
FORMAT = 1


def write_marker(out_dir: Path, kind: str, cls: str | None, *also: Path | None) -> dict[str, Any]:
    """The marker of `out_dir` (and the empty folders `also` a stage declares); returns the stage's metrics."""
    trained_by = "train_generator_shared" if is_conditional(kind) else "train_generator@<class>"
    marker = {"format": FORMAT, "marker": True, "kind": kind, "trained_by": trained_by}
    if cls is not None:
        marker["class"] = cls
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for folder in also:
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(out_dir) / MARKER_FILE, marker)
    return {**({"class": cls} if cls else {}), "kind": kind, "trained": False, "trained_by": trained_by}


def is_marker(model_dir: Path) -> bool:
    path = Path(model_dir) / MARKER_FILE
    return path.is_file() and bool(read_json(path).get("marker"))
