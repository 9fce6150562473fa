"""The split stage: train / val / test for every image, decided once and written down as data.

dedup's manifest in, the same rows out with `split` assigned (the dataset's own folder kept as
`source_split`), and metrics/split.json: per split the images per class, the patients, and the
patients each pair of splits shares. Methods (`split.method`):
- folders: the dataset's Training/Testing folders (Kaggle, the paper); `split.val_fraction` > 0
  carves a seeded val set out of Training, stratified by class and grouped by patient.
- image: the SD-Turbo study as coded: random by image, seed 42. Its recorded split (2,144 / 612 / 308)
  is per class exactly int(0.7 n), int(0.2 n) and the rest (495 / 998 / 651 train, 72 / 143 / 93 test
  of 708 / 1,426 / 930), so each class is shuffled (seeded) and cut so; the shuffle itself cannot be
  replayed (its image order and RNG are not recorded). Patients straddle the splits.
- patient: the corrected default where patients are known: whole patients go to one split, each
  class as close to `split.fractions` as whole patients allow.
- cvind: the publisher's patient-wise fold `split.fold` (figshare's cvind.mat) is test; val is carved
  out of the other folds by patient.
A row's patient is its `patient` column when present and non-empty; a row without one is its own
patient and is counted as an image without a patient, never as a known patient.

Dedup's decisions and the splits. Dedup ran on the dataset's folders; every row it removed has a kept
twin (or is unreadable), so removing it loses no content whatever the splits are: removed rows stay
removed, and a reassigned one follows its kept twin (`dup_of`). But the leakage rule (`dedup.cross_split`:
no copy of a held-out image trains) is about the *final* splits, which only exist here, so it is applied
here, again, after the assignment: when copies kept by dedup land in different splits, the copy in the
less held-out split (train < val < test) is removed. Grouped assignments (patient, cvind's carve-out,
the folders carve-out) move duplicate groups as one unit, so there it never fires; it fires for the
image method (as coded, copies scatter) and across the publisher's folds. With `dedup.cross_split`
false (the as-coded profiles) nothing is removed here, as dedup removed nothing across folders.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from synthmri.io import read_table, write_table
from synthmri.params import SPLITS, SplitParams

REQUIRED = ("split", "class", "relpath", "dedup_status", "dedup_reason", "dup_group", "dup_of")
GROUPED = ("patient", "cvind")  # methods that promise no patient in two splits (checked, not assumed)
NO_PATIENT = "image:"  # prefix of the stand-in patient key of a row without a patient
EXAMPLES = 20  # shared patients listed per pair of splits


class SplitError(ValueError):
    """A split that breaks its method's promise, or a manifest the method cannot split."""


def split(manifest: Path, out_csv: Path, cfg: SplitParams, classes: Sequence[str], *,
          cross_split: bool = True) -> dict[str, Any]:
    """Run the stage: write `out_csv` (every input row, in order, with `split` assigned and
    `source_split` added) and return the metrics. `cross_split` is `dedup.cross_split`."""
    df = read_table(manifest)
    _check_manifest(df, tuple(classes), Path(manifest))
    out, after = assign(df, cfg, cross_split=cross_split)
    shared = shared_patients(out)
    if cfg.method in GROUPED:
        check_no_shared_patients(shared, cfg.method)
    write_table(out, out_csv)
    return _metrics(out, after, shared, cfg, tuple(classes), cross_split)


def assign(df: pd.DataFrame, cfg: SplitParams, *, cross_split: bool = True) -> tuple[pd.DataFrame, int]:
    """The manifest with `split` assigned by `cfg.method` and `source_split` added; the final-split
    leakage rule applied (module docstring). Returns it and the number of rows that rule removed."""
    out = df.copy()
    out["source_split"] = df["split"].astype(str)
    kept = out.index[out["dedup_status"] == "keep"]
    final = pd.Series("", index=out.index, dtype=object)
    final[kept] = _METHODS[cfg.method](out.loc[kept], cfg)
    removed = out.index[out["dedup_status"] != "keep"]
    if cfg.method == "folders":
        final[removed] = out.loc[removed, "source_split"]
    else:  # a removed copy follows the kept twin it duplicates; one without a twin has no split
        where = dict(zip(out.loc[kept, "relpath"].astype(str), final[kept]))
        final[removed] = [where.get(str(t), "") for t in out.loc[removed, "dup_of"]]
    out["split"] = final
    after = _remove_copies_across_splits(out) if cross_split else 0
    return out, after


# ---- the methods (each gets the kept rows, returns their splits) ------------------------------------


def _folders(rows: pd.DataFrame, cfg: SplitParams) -> np.ndarray:
    source = rows["source_split"].to_numpy(object)
    missing = ~np.isin(source, ("train", "test"))
    if missing.any():
        raise SplitError(f"split.method folders: {int(missing.sum())} image(s) have no Training/Testing folder "
                         f"(e.g. {rows['relpath'].iloc[int(np.argmax(missing))]!r}; figshare ships none): "
                         "choose split.method patient, image or cvind")
    final = source.copy()
    if cfg.val_fraction > 0:  # carved out of Training only; Testing stays the dataset's
        train = np.flatnonzero(source == "train")
        carved = _grouped(rows.iloc[train], (1 - cfg.val_fraction, cfg.val_fraction), ("train", "val"),
                          cfg.seed, "folders")
        final[train] = carved
    return final


def _image(rows: pd.DataFrame, cfg: SplitParams) -> np.ndarray:
    """The SD-Turbo study as coded: per class, a seeded shuffle cut at floor(f n) (its recorded counts)."""
    f = cfg.fractions
    final = np.empty(len(rows), object)
    for cls in sorted(set(rows["class"])):
        idx = np.flatnonzero(rows["class"].to_numpy() == cls)
        idx = idx[np.argsort(rows["relpath"].to_numpy()[idx], kind="stable")]  # row order does not matter
        idx = idx[_rng(cfg.seed, f"image/{cls}").permutation(len(idx))]
        counts = targets(len(idx), (f.train, f.val, f.test))
        final[idx] = np.repeat(SPLITS, counts)
    return final


def _patient(rows: pd.DataFrame, cfg: SplitParams) -> np.ndarray:
    f = cfg.fractions
    return _grouped(rows, (f.train, f.val, f.test), SPLITS, cfg.seed, "patient")


def _cvind(rows: pd.DataFrame, cfg: SplitParams) -> np.ndarray:
    """The publisher's fold `split.fold` is test (figshare's cvind.mat: patient-wise 5-fold indices)."""
    if "fold" not in rows.columns:
        raise SplitError("split.method cvind: the manifest has no 'fold' column (the publisher's cvind.mat, "
                         "which only the figshare ingest reads)")
    fold = pd.to_numeric(rows["fold"], errors="coerce").to_numpy(float)
    bad = np.isnan(fold) | (fold != np.round(fold))
    if bad.any():
        i = int(np.argmax(bad))
        raise SplitError(f"split.method cvind: {int(bad.sum())} image(s) have no fold "
                         f"(e.g. {rows['relpath'].iloc[i]!r}: {rows['fold'].iloc[i]!r})")
    folds = sorted({int(k) for k in fold})
    if cfg.fold not in folds:
        raise SplitError(f"split.fold: {cfg.fold} is not one of the manifest's folds {folds}")
    final = np.full(len(rows), "test", object)
    rest = np.flatnonzero(fold != cfg.fold)
    final[rest] = _grouped(rows.iloc[rest], (1 - cfg.val_fraction, cfg.val_fraction), ("train", "val"),
                           cfg.seed, "cvind")
    return final


_METHODS = {"folders": _folders, "image": _image, "patient": _patient, "cvind": _cvind}


# ---- grouped, stratified assignment ---------------------------------------------------------------


def targets(n: int, shares: Sequence[float]) -> list[int]:
    """floor(share x n) for every split but the last, which takes the rest: the SD-Turbo study's counts
    (3,064 -> 2,144 / 612 / 308), and for a (train, val) carve-out val = n - floor((1 - f) n)."""
    counts = [math.floor(s * n + 1e-9) for s in shares[:-1]]
    return [*counts, n - sum(counts)]


def patient_keys(rows: pd.DataFrame) -> np.ndarray:
    """Each row's patient, or a stand-in unique to the image when it has none."""
    if "patient" in rows.columns:
        pid = rows["patient"].astype(str).str.strip().to_numpy(object)
    else:
        pid = np.full(len(rows), "", object)
    stand_in = np.array([f"{NO_PATIENT}{r}" for r in rows["relpath"].astype(str)], object)
    return np.where(pid == "", stand_in, pid)


def units(rows: pd.DataFrame) -> np.ndarray:
    """What must move as one: rows joined when they share a patient or a duplicate group (connected
    components), one label per row."""
    n = len(rows)
    pat = pd.factorize(patient_keys(rows))[0]
    group = rows["dup_group"].astype(str).to_numpy(object)
    has = group != ""
    dup = pd.factorize(group[has])[0]
    i = np.concatenate([np.arange(n), np.flatnonzero(has)])
    j = np.concatenate([n + pat, n + pat.max(initial=-1) + 1 + dup])
    m = n + pat.max(initial=-1) + 1 + dup.max(initial=-1) + 1
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(m, m))
    return connected_components(graph, directed=False)[1][:n]


def _grouped(rows: pd.DataFrame, shares: Sequence[float], names: Sequence[str], seed: int, purpose: str) -> np.ndarray:
    """Whole units to splits, greedily: biggest units first (seeded order among equals), each to the
    split whose per-class counts it brings closest to their targets (L1), ties to the split with the
    largest share still to fill. Splits whose share is 0 get nothing."""
    label = units(rows)
    classes = sorted(set(rows["class"]))
    cls = pd.Categorical(rows["class"], categories=classes).codes
    u_ids, u_of_row = np.unique(label, return_inverse=True)
    size = np.zeros((len(u_ids), len(classes)), np.int64)
    np.add.at(size, (u_of_row, cls), 1)
    goal = np.array([targets(int((cls == c).sum()), shares) for c in range(len(classes))], np.int64).T  # (S, C)
    open_ = goal.sum(1) > 0
    # the seeded order comes from the units' sorted first relpaths, so it does not depend on row order
    first = pd.Series(rows["relpath"].astype(str).to_numpy()).groupby(u_of_row).min().to_numpy()
    order = np.argsort(first, kind="stable")
    order = order[_rng(seed, f"{purpose}/order").permutation(len(order))]
    order = order[np.argsort(-size[order].sum(1), kind="stable")]
    have = np.zeros_like(goal)
    split_of_unit = np.empty(len(u_ids), np.int64)
    for u in order:
        v = size[u]
        change = np.abs(goal - have - v).sum(1) - np.abs(goal - have).sum(1)
        left = (goal.sum(1) - have.sum(1)) / np.maximum(goal.sum(1), 1)
        best = min(np.flatnonzero(open_), key=lambda s: (change[s], -left[s], s))
        split_of_unit[u] = best
        have[best] += v
    return np.asarray(names, object)[split_of_unit[u_of_row]]


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])  # crc32: stable across runs


# ---- leakage on the final splits ------------------------------------------------------------------


def _remove_copies_across_splits(out: pd.DataFrame) -> int:
    """Copies kept by dedup that landed in different splits: the most held-out split keeps its copy."""
    rank = {s: k for k, s in enumerate(SPLITS)}
    kept = out[(out["dedup_status"] == "keep") & (out["dup_group"].astype(str) != "")]
    removed = 0
    for _, g in kept.groupby(kept["dup_group"].astype(str), sort=True):
        if g["split"].nunique() < 2:
            continue
        top = max(g["split"], key=rank.__getitem__)
        twin = sorted(g.loc[g["split"] == top, "relpath"].astype(str))[0]
        lower = g.index[g["split"] != top]
        out.loc[lower, "dedup_status"] = "removed"
        out.loc[lower, "dedup_reason"] = f"duplicate of a {top} image (after the split)"
        out.loc[lower, "dup_of"] = twin
        removed += len(lower)
    return removed


# ---- patients shared between splits ---------------------------------------------------------------


def shared_patients(out: pd.DataFrame) -> dict[str, list[str]] | None:
    """Known patients each pair of splits shares (kept rows), or None when no row names a patient."""
    kept = out[out["dedup_status"] == "keep"]
    keys = pd.Series(patient_keys(kept), index=kept.index)
    known = ~keys.str.startswith(NO_PATIENT)
    if not known.any():
        return None
    by_split = {s: set(keys[known & (kept["split"] == s)]) for s in SPLITS}
    return {f"{a}-{b}": sorted(by_split[a] & by_split[b]) for a, b in combinations(SPLITS, 2)}


def check_no_shared_patients(shared: dict[str, list[str]] | None, method: str) -> None:
    """The promise of the grouped methods, checked on what was written (not an assert: it stays on)."""
    for pair, ids in (shared or {}).items():
        if ids:
            raise SplitError(f"split.method {method}: {len(ids)} patient(s) in both {pair.replace('-', ' and ')} "
                             f"(e.g. {ids[:5]}); a patient must never straddle splits")


# ---- checks and metrics ---------------------------------------------------------------------------


def _check_manifest(df: pd.DataFrame, classes: tuple[str, ...], path: Path) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected dedup's manifest (run `synthmri dedup` first)")
    bad = sorted(set(df["dedup_status"].astype(str)) - {"keep", "removed"})
    if bad:
        raise ValueError(f"{path}: column 'dedup_status' has value(s) {bad[:5]}; expected keep or removed")
    unknown = sorted(set(df["class"].astype(str)) - set(classes))
    if unknown:
        raise ValueError(f"{path}: class(es) {unknown[:5]} not in data.classes {list(classes)}")
    if df["relpath"].duplicated().any():
        raise ValueError(f"{path}: relpath must be unique, {df.loc[df['relpath'].duplicated(), 'relpath'].iloc[0]!r} repeats")


def _metrics(out: pd.DataFrame, after: int, shared: dict[str, list[str]] | None, cfg: SplitParams,
             classes: tuple[str, ...], cross_split: bool) -> dict[str, Any]:
    kept = out[out["dedup_status"] == "keep"]
    keys = pd.Series(patient_keys(kept), index=kept.index)
    known = ~keys.str.startswith(NO_PATIENT)
    per_split = {}
    for s in SPLITS:
        rows = kept["split"] == s
        per_split[s] = {
            "images": int(rows.sum()),
            "per_class": {c: int((rows & (kept["class"] == c)).sum()) for c in classes},
            "patients": int(keys[rows & known].nunique()),  # known patients only
            "images_without_patient": int((rows & ~known).sum()),
        }
    n_in, n_kept = len(out), len(kept)
    if n_kept != sum(per_split[s]["images"] for s in SPLITS):
        raise RuntimeError(f"split counts do not reconcile: {n_kept} kept, {per_split}")
    source = sorted(set(kept["source_split"].astype(str)))
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        **({"fractions": {s: getattr(cfg.fractions, s) for s in SPLITS}} if cfg.method in ("image", "patient") else {}),
        **({"val_fraction": cfg.val_fraction} if cfg.method in ("folders", "cvind") else {}),
        **({"fold": cfg.fold} if cfg.method == "cvind" else {}),
        **per_split,
        # "unknown": no row names a patient, so shared counts cannot be measured (null)
        "patient_ids": "unknown" if not known.any() else ("known" if known.all() else "partly known"),
        "patients": int(keys[known].nunique()),
        "shared_patients": None if shared is None else {pair: len(ids) for pair, ids in shared.items()},
        "shared_patient_examples": None if shared is None else {pair: ids[:EXAMPLES] for pair, ids in shared.items()},
        # where the dataset's own folders went: {source split ('' when none): {final split: images}}
        "from_source_split": {src: {s: int(((kept["source_split"] == src) & (kept["split"] == s)).sum()) for s in SPLITS}
                              for src in source},
        "removed_by_dedup": int((out["dedup_status"] != "keep").sum()) - after,
        "removed_across_final_splits": after,  # copies in a less held-out split than their twin (dedup.cross_split)
        "cross_split": cross_split,
        "reconcile": {"in": n_in, "kept": n_kept, "removed": n_in - n_kept},
    }
