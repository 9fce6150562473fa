"""The dedup stage (paper §4.1): duplicate groups within Training, within Testing and across them.

The paper ran difPy on each split alone ('duplicates': MSE 0 on 50 px thumbnails) and removed 207
Training and 30 Testing images; it never compared the splits, and 103 of its 1,311 Testing images are
byte-identical to Training images (docs/paper_as_coded.md). Here the engine that finds the pairs is a choice
(`dedup.engine`: `fast`, our exact implementation of difPy's criterion, or `difpy` itself, bugs and
all), and `dedup.compare_engines` runs both so the metrics show how much difPy's bugs move the counts.

Decisions, the same whichever engine found the pairs:
- a group is a connected component of matched pairs; `dup_scope` is `cross` when it spans both splits;
- within a split, each component of that split's own pairs keeps one member: the highest resolution
  (width x height), then the larger file, then the smallest relpath. (difPy's `lower_quality` keeps
  the largest width + height, ties to the lexicographically last absolute path, which depends on
  where the data sits; the counts are the same.)
- with `dedup.cross_split`, every Training member of a group that holds a Testing image is removed
  ("duplicate of a Testing image"); Testing images are never removed because of Training copies.
- a group whose members carry different classes (a label conflict) is resolved like any other, as
  difPy would, and listed under `label_conflicts` in the metrics for a person to look at.
- a row no engine could read is removed with the reason; counts reconcile: images = kept + removed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from synthmri.data.dedup_engines import Criterion, Edges, EngineResult, difpy_engine, fast_engine
from synthmri.io import read_table, write_table
from synthmri.params import DedupParams, workers

REQUIRED_COLUMNS = ("split", "class", "relpath", "path", "sha256", "width", "height")
SPLITS = ("train", "test")
UNSPLIT = "unsplit"  # the metrics' key for rows with an empty split
REASON_WITHIN = "duplicate within split"
REASON_CROSS = "duplicate of a Testing image"
KEEP, REMOVED = "keep", "removed"
MAX_CONFLICTS_LISTED = 50


@dataclass(frozen=True)
class Decisions:
    """Per-row outcome of one engine's pairs (arrays in row order)."""

    union: np.ndarray  # connected component of all pairs, one label per row
    group: np.ndarray  # 1-based group id for rows in a component of >= 2, else 0
    scope: np.ndarray  # 'within' | 'cross' | ''
    dup_of: np.ndarray  # relpath of the kept member a removed row duplicates, else ''
    status: np.ndarray  # 'keep' | 'removed'
    reason: np.ndarray  # '' | REASON_WITHIN | REASON_CROSS | 'unreadable: ...'
    kept_with_duplicates: np.ndarray  # bool: kept rows that had duplicates removed in their split
    within_groups: dict[str, int]  # split -> components of >= 2 of that split's own pairs


def criterion(cfg: DedupParams) -> Criterion:
    return Criterion(cfg.px_size, cfg.mse_threshold, cfg.rotations, cfg.same_dim)


def dedup(manifest: Path, out_csv: Path, cfg: DedupParams) -> dict:
    """Find duplicate groups, choose what to keep, write `out_csv` (every input column + dup_group,
    dup_scope, dup_of, dedup_status, dedup_reason, rows in input order) and return the metrics."""
    df = read_table(manifest)
    _check_manifest(df, manifest)
    crit = criterion(cfg)
    paths = df["path"].astype(str).tolist()
    splits = df["split"].astype(str).to_numpy()
    rank = _keep_rank(df)
    log = Console(stderr=True)

    engines = (cfg.engine, *({"fast", "difpy"} - {cfg.engine})) if cfg.compare_engines else (cfg.engine,)
    results: dict[str, EngineResult] = {}
    for name in engines:
        start = time.perf_counter()
        if len(df) == 0:
            results[name] = EngineResult(Edges.empty(), {}, {})
        elif name == "fast":
            results[name] = fast_engine(paths, df["sha256"].astype(str).tolist(), splits.tolist(), crit,
                                        workers(cfg.workers))
        else:
            results[name] = difpy_engine(paths, splits.tolist(), crit, workers(cfg.workers))
        log.print(f"dedup: {name} engine took {time.perf_counter() - start:.1f} s")
    decided = {name: decide(splits, df["relpath"].astype(str).to_numpy(), rank, res, cfg.cross_split)
               for name, res in results.items()}

    d = decided[cfg.engine]
    out = df.copy()
    out["dup_group"] = [str(g) if g else "" for g in d.group]
    out["dup_scope"] = d.scope
    out["dup_of"] = d.dup_of
    out["dedup_status"] = d.status
    out["dedup_reason"] = d.reason
    write_table(out, out_csv)
    return _metrics(cfg, crit, df, splits, d, decided, results)


def _check_manifest(df: pd.DataFrame, manifest: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {missing}; expected the audit stage's manifest")
    bad = sorted(set(df["split"].astype(str)) - set(SPLITS) - {""})  # "": not split yet (the figshare release)
    if bad:
        raise ValueError(f"{manifest}: column 'split' must be train, test or empty, found {bad}")
    for col in ("width", "height"):
        if len(df) and not pd.api.types.is_integer_dtype(df[col]):
            raise ValueError(f"{manifest}: column {col!r} must hold integer pixel counts")
    if df["relpath"].duplicated().any():
        dup = df.loc[df["relpath"].duplicated(), "relpath"].iloc[0]
        raise ValueError(f"{manifest}: relpath must be unique, {dup!r} repeats")


def _keep_rank(df: pd.DataFrame) -> np.ndarray:
    """Rank 0 is the member a group keeps: largest width x height, then larger file, then smallest relpath."""
    area = df["width"].to_numpy(np.int64) * df["height"].to_numpy(np.int64)
    if "bytes" in df.columns and pd.api.types.is_integer_dtype(df["bytes"]):  # ingest's file sizes
        size = df["bytes"].to_numpy(np.int64)
    else:
        size = np.array([_file_bytes(p) for p in df["path"].astype(str)], np.int64)
    order = sorted(range(len(df)), key=lambda r: (-area[r], -size[r], df["relpath"].iat[r]))
    rank = np.empty(len(df), np.int64)
    rank[order] = np.arange(len(df))
    return rank


def _file_bytes(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _components(n: int, edges: Edges, mask: np.ndarray | None = None) -> np.ndarray:
    i, j = (edges.i, edges.j) if mask is None else (edges.i[mask], edges.j[mask])
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """Rows of each label held by two or more rows, groups ordered by their first row."""
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    groups = [order[s:s + c] for s, c in zip(starts, counts) if c > 1]
    return sorted(groups, key=lambda g: g[0])


def decide(splits: np.ndarray, relpath: np.ndarray, rank: np.ndarray, res: EngineResult, cross_split: bool) -> Decisions:
    """Turn one engine's matches into groups and keep/remove decisions (rules in the module docstring)."""
    n = len(splits)
    edges = res.edges
    union = _components(n, edges)
    group = np.zeros(n, np.int64)
    scope = np.full(n, "", object)
    dup_of = np.full(n, "", object)
    status = np.full(n, KEEP, object)
    reason = np.full(n, "", object)
    kept_with_duplicates = np.zeros(n, bool)
    for gid, members in enumerate(_members(union), start=1):
        group[members] = gid
        scope[members] = "cross" if len(set(splits[members])) > 1 else "within"

    is_train = splits == "train"
    leaked = np.zeros(n, bool)
    if cross_split:
        test_labels = np.unique(union[~is_train])
        leaked = is_train & np.isin(union, test_labels) & (group > 0)

    same_split = splits[edges.i] == splits[edges.j]
    within = _components(n, edges, same_split)
    within_groups = {s: 0 for s in (*SPLITS, "")}
    for members in _members(within):
        within_groups[splits[members[0]]] += 1
        free = members[~leaked[members]]
        if len(free) == 0:
            continue  # every member is a Training copy of a Testing image
        keep = free[np.argmin(rank[free])]
        drop = free[free != keep]
        status[drop], reason[drop], dup_of[drop] = REMOVED, REASON_WITHIN, relpath[keep]
        kept_with_duplicates[keep] = len(drop) > 0

    for r in np.flatnonzero(leaked):  # after the Testing decisions: point at a kept Testing image
        tests = np.flatnonzero((union == union[r]) & ~is_train & (status == KEEP))
        status[r], reason[r], dup_of[r] = REMOVED, REASON_CROSS, relpath[tests[np.argmin(rank[tests])]]

    for r, why in res.unreadable.items():
        status[r], reason[r], dup_of[r] = REMOVED, why, ""
    return Decisions(union, group, scope, dup_of, status, reason, kept_with_duplicates, within_groups)


# ---- metrics ----------------------------------------------------------------------------------------


def _pairs(labels: np.ndarray) -> int:
    """Image pairs that share a group (the transitive closure of an engine's matches)."""
    _, counts = np.unique(labels, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _split_counts(d: Decisions, splits: np.ndarray, split: str) -> dict:
    rows = splits == split
    removed_within = int((rows & (d.reason == REASON_WITHIN)).sum())
    removed_cross = int((rows & (d.reason == REASON_CROSS)).sum())
    removed = int((rows & (d.status == REMOVED)).sum())
    counts = {
        "images": int(rows.sum()),
        "images_with_duplicates": int((rows & d.kept_with_duplicates).sum()),  # paper: 155 TR / 21 TE
        "groups": d.within_groups[split],
        "removed": removed,  # paper: 207 TR / 30 TE
        "removed_within": removed_within,
        "removed_cross": removed_cross,
        "unreadable": removed - removed_within - removed_cross,
        "kept": int((rows & (d.status == KEEP)).sum()),
    }
    assert counts["images"] == counts["kept"] + counts["removed"], counts
    return counts


def _cross_counts(d: Decisions, splits: np.ndarray, enabled: bool) -> dict:
    cross = d.scope == "cross"
    return {
        "enabled": enabled,
        "groups": int(len(np.unique(d.group[cross]))),
        "test_images_with_training_copies": int((cross & (splits == "test")).sum()),
        "training_images_with_testing_copies": int((cross & (splits == "train")).sum()),
        "removed": int((d.reason == REASON_CROSS).sum()),  # from Training only
    }


def _engine_summary(d: Decisions, splits: np.ndarray, res: EngineResult, cross_split: bool) -> dict:
    return {
        "pairs": _pairs(d.union),
        "groups": int(d.group.max(initial=0)),
        **{s: {k: v for k, v in _split_counts(d, splits, s).items() if k in ("groups", "removed", "kept")}
           for s in SPLITS},
        "cross_split": _cross_counts(d, splits, cross_split),
        "unreadable": len(res.unreadable),
        **res.info,
    }


def _agreement(a: Decisions, b: Decisions) -> dict:
    """Pairs (images sharing a group) found by both engines, and by only one of them."""
    both = _pairs(a.union.astype(np.int64) * (int(b.union.max(initial=0)) + 1) + b.union)
    pa, pb = _pairs(a.union), _pairs(b.union)
    return {"pairs_both": both, "pairs_only_fast": pa - both, "pairs_only_difpy": pb - both}


def _label_conflicts(d: Decisions, df: pd.DataFrame) -> dict:
    classes = df["class"].astype(str).to_numpy()
    listed, groups, images = [], 0, 0
    for members in _members(d.union):
        found = classes[members]
        if len(set(found)) < 2:
            continue
        groups += 1
        images += len(members)
        if len(listed) < MAX_CONFLICTS_LISTED:
            listed.append({
                "group": int(d.group[members[0]]),
                "scope": str(d.scope[members[0]]),
                "classes": {c: int((found == c).sum()) for c in sorted(set(found))},
                "members": [{"relpath": str(df["relpath"].iat[r]), "class": str(classes[r]),
                             "status": str(d.status[r])} for r in members[:10]],
            })
    return {"groups": groups, "images": images, "listed": listed}


def _metrics(cfg, crit, df, splits, d, decided, results) -> dict:
    per_split = {s: _split_counts(d, splits, s) for s in SPLITS}
    if (splits == "").any():  # rows not split yet (the figshare release): one group of their own
        per_split[UNSPLIT] = _split_counts(d, splits, "")
    engines = {name: _engine_summary(dec, splits, results[name], cfg.cross_split) for name, dec in decided.items()}
    if len(decided) == 2:
        engines["agreement"] = _agreement(decided["fast"], decided["difpy"])
    return {
        "engine": cfg.engine,
        "criterion": crit.as_dict(),
        **per_split,
        "cross_split": _cross_counts(d, splits, cfg.cross_split),
        "total": {
            "images": len(df),
            "images_with_duplicates": sum(v["images_with_duplicates"] for v in per_split.values()),
            "removed": sum(v["removed"] for v in per_split.values()),
            "kept": sum(v["kept"] for v in per_split.values()),
        },
        "label_conflicts": _label_conflicts(d, df),
        "engines": engines,
    }
