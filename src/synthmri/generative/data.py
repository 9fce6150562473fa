"""The training images of one class: selected from the preprocess manifest, plane-balanced, split, decoded.

Paper §5.1.1: tumour classes are cut to the count of their least represented plane (seeded); notumor
is not; then a seeded 80/20 split stratified by plane (per plane, the validation share is rounded
up, as scikit-learn's `train_test_split` does: the paper's code got 555/558/534 training images from
232/233/223 per plane). Every selected row is accounted for in the returned table with its role
(train, val, cut) and, for cut rows, the reason.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from synthmri.images import ImageError, read_gray
from synthmri.generative.config import GeneratorParams
from synthmri.runtime import derive_seed
from synthmri.io import parallel_map

REQUIRED = ("split", "class", "plane", "status", "out_path")
ROLES = ("train", "val", "cut")


def select(manifest: pd.DataFrame, cls: str, cfg: GeneratorParams, column: str = "class") -> pd.DataFrame:
    """Rows of `cls` kept in Training, with columns out_path, plane, role, reason (sorted by out_path).

    `column`: `class` (the task's target class) or `source_class` (the dataset's class: a task's
    per-source generators, synthmri/tasks.py)."""
    missing = [c for c in (*REQUIRED, column) if c not in manifest.columns]
    if missing:
        raise ValueError(f"preprocess manifest lacks column(s) {missing}; has {list(manifest.columns)}")
    rows = manifest[(manifest["status"] == "kept") & (manifest["split"] == "train") & (manifest[column] == cls)]
    if rows.empty:
        known = sorted(set(manifest.loc[manifest["status"] == "kept", column]))
        raise ValueError(f"no kept Training images of class {cls!r} in the manifest; classes there: {known}")
    table = rows[["out_path", "plane"]].astype(str).sort_values("out_path", kind="stable").reset_index(drop=True)
    table["role"] = "train"
    table["reason"] = ""

    rng = np.random.default_rng(derive_seed(cfg.seed, cls, "plane_balance"))
    if cfg.plane_balance and cls not in cfg.balance_exempt:  # paper §5.1.1
        counts = table.groupby("plane").size()
        least = int(counts.min())
        for plane in sorted(counts.index):
            idx = table.index[table["plane"] == plane].to_numpy()
            if len(idx) > least:
                cut = np.sort(rng.choice(idx, size=len(idx) - least, replace=False))
                table.loc[cut, "role"] = "cut"
                table.loc[cut, "reason"] = f"plane_balance: {plane} cut to {least} ({counts.idxmin()} has the fewest)"

    rng = np.random.default_rng(derive_seed(cfg.seed, cls, "val_split"))
    for plane in sorted(table["plane"].unique()):
        idx = table.index[(table["plane"] == plane) & (table["role"] == "train")].to_numpy()
        n_val = math.ceil(cfg.val_fraction * len(idx))
        table.loc[np.sort(rng.permutation(idx)[:n_val]), "role"] = "val"
    return table


def counts(table: pd.DataFrame) -> dict[str, object]:
    """Selected = train + val + cut, per plane too."""
    out: dict[str, object] = {"selected": len(table)}
    out.update({role: int((table["role"] == role).sum()) for role in ROLES})
    out["per_plane"] = {
        plane: {role: int(((table["plane"] == plane) & (table["role"] == role)).sum()) for role in ROLES}
        for plane in sorted(table["plane"].unique())
    }
    return out


def _load(item: tuple[str, int]) -> np.ndarray:
    path, size = item
    a = read_gray(path)
    if a.shape[0] != a.shape[1]:
        raise ImageError(f"{path}: expected a square preprocessed image, got {a.shape[1]}x{a.shape[0]}")
    if a.shape[0] != size:
        # Pillow's bicubic filter widens its support when shrinking, so downsizing is antialiased.
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC))
    return a


def load_images(paths: list[str], size: int, workers: int | None = None) -> np.ndarray:
    """Decode once into uint8 (N, size, size), in the images' own orientation (no transpose)."""
    if not paths:
        return np.zeros((0, size, size), np.uint8)
    arrays = parallel_map(_load, [(str(Path(p)), size) for p in paths], desc="decoding", workers=workers)
    return np.stack(arrays)
