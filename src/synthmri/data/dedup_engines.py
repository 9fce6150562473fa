"""The two duplicate finders of the dedup stage (paper §4.1): difPy 4.2.1 as the paper ran it, and
`fast`, which applies difPy's criterion exactly, without its two bugs, in a fraction of the time.

difPy's criterion (read from difPy/dif.py, 4.2.1): each image is opened with Pillow, converted to RGB
unless its bands already are R, G, B, and resized bicubically to px_size x px_size; two images match
when the mean squared error of these thumbnails, on 0-255 values, is <= the threshold (`duplicates`
= 0, `similar` = 5), the smallest MSE over rotations of the second image being used; `same_dim`
(default True) compares only images whose sorted (height, width) agree.

difPy's bugs, which `fast` does not share:
  1. the MSE is taken on uint8 arrays, so (a - b) and its square wrap modulo 256: a thumbnail
     brightened by 16 (or any multiple of 16) has "MSE 0";
  2. above 5,000 images a batch path calls any two thumbnails with equal pixel sums duplicates
     (and never compares the last image).
It also compares only 0/90/180-degree turns of the second image of a pair (its comment says four), so
a copy turned 90 degrees one way is found or missed depending on file order; `fast` compares all
four quarter turns, which makes the relation symmetric.

Both engines return edges between row indices (i < j, MSE): enough to connect every duplicate group,
and its part within each split, but not necessarily every pair of it (difPy's own result lists only
the first match of each image).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmri.images import ImageError, thumbnail
from synthmri.io import parallel_map

DIFPY_PAIRWISE_MAX = 5000  # difPy switches to its buggy batch path above this many images
POOL_GRID = 8  # the fast engine's prefilter compares 8x8 block sums before exact MSE
_BLOCK = 256  # rows per block of the blocked search
_COL_CHUNK = 1024  # columns per exact float64 Gram product (bounds memory at ~60 MB)


@dataclass(frozen=True)
class Criterion:
    """difPy's matching rule, as params.yaml sets it."""

    px_size: int  # thumbnail side
    mse_threshold: float  # match when MSE <= this (0-255 scale)
    rotations: bool  # also compare quarter turns
    same_dim: bool  # only compare images of equal sorted (height, width)

    def as_dict(self) -> dict:
        return {"px_size": self.px_size, "mse_threshold": self.mse_threshold,
                "rotations": self.rotations, "same_dim": self.same_dim}


@dataclass(frozen=True)
class Edges:
    """Matches between row indices: i < j, with the pair's MSE (min over compared rotations)."""

    i: np.ndarray
    j: np.ndarray
    mse: np.ndarray

    @staticmethod
    def empty() -> Edges:
        return Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @staticmethod
    def concat(parts: list[Edges]) -> Edges:
        if not parts:
            return Edges.empty()
        return Edges(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("i", "j", "mse")))

    def __len__(self) -> int:
        return len(self.i)


@dataclass(frozen=True)
class EngineResult:
    edges: Edges
    unreadable: dict[int, str]  # row -> reason the engine could not read it
    info: dict  # engine-specific facts for the metrics


# ---- thumbnails exactly as difPy makes them -----------------------------------------------------


@dataclass(frozen=True)
class Thumbnails:
    """What the fast engine needs of each unique file, made in the decoding workers."""

    thumbs: np.ndarray  # (M, px, px, 3) uint8
    dims: np.ndarray  # (M, 2) sorted (h, w)
    grids: np.ndarray  # (M, g, g) float64 block sums for the lower bound (`_pool`)
    keys: list  # canonical digest (identical up to the compared turns), None if unreadable
    turns: np.ndarray  # (M,) the quarter turns that give the canonical orientation
    errors: dict[int, str]  # k -> reason it could not be read


def _thumbnail_job(job: tuple[str, int, bool]):
    """Worker: thumbnail bytes, dims, block sums and canonical digest, or the reason it failed."""
    path, px_size, rotations = job
    try:
        thumb, (a, b) = thumbnail(path, px_size)
    except ImageError as e:
        return f"unreadable: {e}"
    except (OSError, ValueError, SyntaxError) as e:  # a conversion Pillow refuses
        return f"unreadable: {type(e).__name__}: {e}"
    turned = [np.ascontiguousarray(np.rot90(thumb, t)).tobytes() for t in (range(4) if rotations else (0,))]
    turn = min(range(len(turned)), key=turned.__getitem__)
    digest = hashlib.blake2b(turned[turn], digest_size=20).digest()
    return thumb.tobytes(), a, b, _pool(thumb[None])[0], digest, turn


def load_thumbnails(paths: list[str], px_size: int, rotations: bool, workers: int | None) -> Thumbnails:
    """Decode each path once, in parallel (`synthmri.io.parallel_map`)."""
    jobs = [(p, px_size, rotations) for p in paths]
    out = parallel_map(_thumbnail_job, jobs, desc="dedup: thumbnails", workers=workers)
    m = len(paths)
    thumbs = np.zeros((m, px_size, px_size, 3), np.uint8)
    dims = np.zeros((m, 2), np.int64)
    grids = np.zeros((m, *_pool(thumbs[:1]).shape[1:]))
    keys: list = [None] * m
    turns = np.zeros(m, np.int64)
    errors: dict[int, str] = {}
    for k, res in enumerate(out):
        if isinstance(res, str):
            errors[k] = res
            continue
        thumbs[k] = np.frombuffer(res[0], np.uint8).reshape(px_size, px_size, 3)
        dims[k] = res[1:3]
        grids[k], keys[k], turns[k] = res[3:]
    return Thumbnails(thumbs, dims, grids, keys, turns, errors)


# ---- the fast engine -----------------------------------------------------------------------------


def fast_engine(paths: list[str], sha256: list[str], splits: list[str], crit: Criterion,
                workers: int | None) -> EngineResult:
    """difPy's criterion, exact and fast, over all rows at once.

    Byte-identical files (equal sha256) are decoded once; identical thumbnails (up to rotation) are
    hashed into classes (MSE 0 needs no arithmetic); for a threshold > 0 the class representatives
    are searched with `near_pairs`. The edges connect each group both as a whole and within each
    split (`splits`), so either can be taken apart later.
    """
    file_index: dict[str, int] = {}
    uniq_rows: list[int] = []  # unique file -> its first row
    file_of = np.empty(len(paths), np.int64)  # row -> unique file
    for r, digest in enumerate(sha256):
        key = digest or f"row:{r}"  # no digest: the row is its own file
        if key not in file_index:
            file_index[key] = len(uniq_rows)
            uniq_rows.append(r)
        file_of[r] = file_index[key]
    uniq = np.asarray(uniq_rows, np.int64)
    th = load_thumbnails([paths[r] for r in uniq], crit.px_size, crit.rotations, workers)
    errors = th.errors

    # Thumbnail classes: identical up to the compared turns (and dims when same_dim), so MSE 0.
    classes: dict[tuple, int] = {}
    first: list[int] = []  # class -> its first unique file
    class_of = np.full(len(uniq), -1, np.int64)
    for k in range(len(uniq)):
        if k in errors:
            continue
        key = (tuple(th.dims[k]) if crit.same_dim else (), th.keys[k])
        c = classes.get(key)
        if c is not None and not np.array_equal(_canonical(th, k), _canonical(th, first[c])):
            key, c = (key, k), None  # a digest collision, never seen: the file is a class of its own
        if c is None:
            c = classes[key] = len(first)
            first.append(k)
        class_of[k] = c
    row_class = class_of[file_of]  # -1: unreadable
    split_arr = np.asarray(splits)
    parts = [_clique(rows, split_arr) for rows in _groups(row_class) if row_class[rows[0]] >= 0]
    if crit.mse_threshold > 0 and len(classes) > 1:
        members = {int(row_class[rows[0]]): rows for rows in _groups(row_class, min_size=1)}
        rep = np.asarray(first)
        dim_key = np.unique(th.dims[rep], axis=0, return_inverse=True)[1].ravel() if crit.same_dim else None
        near = near_pairs(th.thumbs[rep], crit.mse_threshold, crit.rotations, dim_key, th.grids[rep])
        for a, b, mse in zip(near.i.tolist(), near.j.tolist(), near.mse.tolist()):
            parts.append(_bridge(members[a], members[b], mse, split_arr))
    edges = _ordered(Edges.concat(parts))
    unreadable = {int(r): errors[file_of[r]] for r in range(len(paths)) if file_of[r] in errors}
    info = {"decoded_files": len(uniq) - len(errors), "thumbnail_classes": len(classes),
            "rotations_compared": [0, 90, 180, 270] if crit.rotations else [0]}
    return EngineResult(edges, unreadable, info)


def _canonical(th: Thumbnails, k: int) -> np.ndarray:
    return np.rot90(th.thumbs[k], th.turns[k])


def _clique(rows: np.ndarray, splits: np.ndarray) -> Edges:
    """MSE-0 edges for a set of mutually matching rows: a chain per split, the chains' heads joined."""
    parts = [_chain(rows[splits[rows] == s]) for s in np.unique(splits[rows])]
    heads = [rows[splits[rows] == s][0] for s in np.unique(splits[rows])]
    return Edges.concat([*parts, _chain(np.asarray(heads))])


def _bridge(a: np.ndarray, b: np.ndarray, mse: float, splits: np.ndarray) -> Edges:
    """Edges for two matching cliques: one per split they share, and one between them anyway."""
    pairs = {(a[0], b[0])}
    for s in np.intersect1d(splits[a], splits[b]):
        pairs.add((a[splits[a] == s][0], b[splits[b] == s][0]))
    pairs = sorted(pairs)
    i, j = np.asarray(pairs, np.int64).T
    return Edges(i, j, np.full(len(i), mse))


def near_pairs(thumbs: np.ndarray, threshold: float, rotations: bool, dim_key: np.ndarray | None = None,
               grids: np.ndarray | None = None) -> Edges:
    """All pairs i < j of uint8 (M, px, px, 3) thumbnails whose MSE, minimised over quarter turns, is
    <= threshold. Exact, and fast because almost every pair is ruled out by two lower bounds:

    - the mean: (mean(a) - mean(b))^2 <= MSE, so a sweep over thumbnails sorted by mean only pairs
      those within sqrt(threshold) of each other;
    - 8x8 block sums (`_pool`): a block of c pixels whose sums differ by d adds >= d^2/c to the
      squared error (Cauchy-Schwarz), compared for all pairs of a block of rows by one matrix product.

    The candidates left get the exact integer squared error: pair by pair, or, when a block of rows
    has many, from float64 matrix products |a|^2 + |b|^2 - 2ab, exact because every term is an
    integer below 2^53 (float32 is not: the sums reach 5e8 > 2^24).
    """
    m = len(thumbs)
    if m < 2:
        return Edges.empty()
    n = thumbs[0].size
    limit = threshold * n  # on the squared-error sum
    turns = tuple(range(4)) if rotations else (0,)
    flat = thumbs.reshape(m, n)
    sums = flat.sum(axis=1, dtype=np.int64)
    order = np.argsort(sums, kind="stable")  # the sweep runs over thumbnails sorted by mean
    mean = sums[order] / n
    reach = np.sqrt(threshold) * (1 + 1e-9) + 1e-9
    grids = _pool(thumbs) if grids is None else grids
    pooled = [np.rot90(grids, t, axes=(1, 2)).reshape(m, -1)[order] for t in turns]  # rows turned
    pnorm = [np.einsum("ij,ij->i", p, p) for p in pooled]
    key = None if dim_key is None else np.asarray(dim_key)[order]
    found: list[Edges] = []
    for start in range(0, m, _BLOCK):
        rows = np.arange(start, min(m, start + _BLOCK))
        cols = np.arange(start, np.searchsorted(mean, mean[rows[-1]] + reach, side="right"))
        lower = np.full((len(rows), len(cols)), np.inf)
        for t in range(len(turns)):
            d = pnorm[t][rows, None] + pnorm[0][None, cols] - 2.0 * (pooled[t][rows] @ pooled[0][cols].T)
            np.minimum(lower, d, out=lower)
        slack = 1e-6 * (pnorm[0][rows, None] + pnorm[0][None, cols]) + 1.0  # float rounding of the bound
        cand = (lower <= limit + slack) & (cols[None, :] > rows[:, None])
        cand &= mean[None, cols] - mean[rows, None] <= reach
        if key is not None:
            cand &= key[rows, None] == key[None, cols]
        ri, ci = np.nonzero(cand)
        if len(ri) == 0:
            continue
        if len(ri) <= 2 * _BLOCK:
            i, j = order[rows[ri]], order[cols[ci]]
            mse = _pair_ssd(thumbs, i, j, turns) / n
        else:
            i, j, mse = _dense_mse(thumbs, order[rows], order[cols], cand, turns)
        keep = mse <= threshold
        found.append(Edges(np.minimum(i, j)[keep], np.maximum(i, j)[keep], mse[keep]))
    return Edges.concat(found)


def _pair_ssd(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, turns: tuple[int, ...]) -> np.ndarray:
    """Exact squared error of each pair (i[k], j[k]), minimised over turns of the second, in integers."""
    out = np.empty(len(i), np.int64)
    for s in range(0, len(i), 512):
        a = thumbs[i[s:s + 512]].astype(np.int32)
        b = thumbs[j[s:s + 512]]
        best = None
        for t in turns:
            d = a - np.rot90(b, t, axes=(1, 2))
            ssd = np.einsum("kxyc,kxyc->k", d, d, dtype=np.int64)
            best = ssd if best is None else np.minimum(best, ssd)
        out[s:s + 512] = best
    return out


def _dense_mse(thumbs, rows, cols, cand, turns):
    """Exact MSE for the candidate pairs of a block of rows, via float64 Gram products."""
    n = thumbs[0].size
    hit = np.flatnonzero(cand.any(axis=0))
    turned = [np.rot90(thumbs[rows], t, axes=(1, 2)).reshape(len(rows), n).astype(np.float64) for t in turns]
    out_i, out_j, out_mse = [], [], []
    for c0 in range(0, len(hit), _COL_CHUNK):
        sub = hit[c0:c0 + _COL_CHUNK]
        other = thumbs[cols[sub]].reshape(len(sub), n).astype(np.float64)
        gram = np.max([a @ other.T for a in turned], axis=0)  # max ab <=> min squared error
        ssd = _sq(thumbs, rows)[:, None] + _sq(thumbs, cols[sub])[None, :] - 2.0 * gram
        ri, ci = np.nonzero(cand[:, sub])
        out_i.append(rows[ri])
        out_j.append(cols[sub][ci])
        out_mse.append(ssd[ri, ci] / n)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_mse)


def _sq(thumbs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    flat = thumbs[idx].reshape(len(idx), -1)
    return np.einsum("ij,ij->i", flat, flat, dtype=np.int64).astype(np.float64)


def _pool(thumbs: np.ndarray) -> np.ndarray:
    """(M, px, px, 3) -> (M, g, g) block sums / sqrt(block pixels): |pool(a) - pool(b)|^2 <= |a - b|^2.

    The blocks are mirror-symmetric, so pooling a turned thumbnail is turning the pooled grid.
    """
    px = thumbs.shape[1]
    g = min(POOL_GRID, px)
    half = np.floor(np.arange(g // 2 + 1) * px / g + 0.5).astype(int)
    edges = np.unique(np.concatenate([half, px - half]))
    s = thumbs.sum(axis=3, dtype=np.int32)
    s = np.add.reduceat(np.add.reduceat(s, edges[:-1], axis=1), edges[:-1], axis=2)
    size = np.diff(edges)
    counts = size[:, None] * size[None, :] * thumbs.shape[3]
    return s / np.sqrt(counts)


def _groups(labels: np.ndarray, min_size: int = 2) -> list[np.ndarray]:
    """Indices (ascending) sharing a label, for each label held by at least `min_size` of them."""
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    return [order[s:s + c] for s, c in zip(starts, counts) if c >= min_size]


def _chain(members: np.ndarray) -> Edges:
    """MSE-0 edges joining sorted members in a chain (enough to connect the group)."""
    members = np.sort(members)
    return Edges(members[:-1], members[1:], np.zeros(len(members) - 1))


def _ordered(e: Edges) -> Edges:
    lo, hi = np.minimum(e.i, e.j), np.maximum(e.i, e.j)
    return Edges(lo.astype(np.int64), hi.astype(np.int64), e.mse.astype(np.float64))


# ---- difPy, as the paper ran it --------------------------------------------------------------------

# difPy's `limit_extensions` list (dif.py `_filter_extensions`); links get a suffix it accepts.
_DIFPY_EXTENSIONS = frozenset(
    "apng bw cdf cur dcx dds dib emf eps fli flc fpx ftex fits gd gd2 gif gbr icb icns iim ico im imt j2k jfif "
    "jfi jif jp2 jpe jpeg jpg jpm jpf jpx mic mpo msp nc pbm pcd pcx pgm png ppm psd pixar ras rgb rgba sgi spi "
    "spider sun tga tif tiff vda vst wal webp xbm xpm".split()
)


def difpy_engine(paths: list[str], splits: list[str], crit: Criterion, workers: int | None) -> EngineResult:
    """difPy 4.2.1's build + search, once per split as the paper did (paper §4.1; docs/paper_as_coded.md), and
    once on both splits together for the cross-split pairs the paper never looked for.

    Each run sees a temporary folder of symlinks named by row number, passed as a sorted file list:
    difPy globs folders in filesystem order, which would make its order-dependent results
    (rotations, the batch path) differ between machines.
    """
    import difPy

    processes = min(workers or os.cpu_count() or 1, os.cpu_count() or 1)
    splits_arr = np.asarray(splits)
    runs = [(s, np.flatnonzero(splits_arr == s)) for s in ("train", "test")]
    if all(len(rows) for _, rows in runs):
        runs.append(("both", np.arange(len(paths))))
    parts: list[Edges] = []
    unreadable: dict[int, str] = {}
    info: dict = {"runs": [], "rotations_compared": [0, 90, 180] if crit.rotations else [0]}
    with tempfile.TemporaryDirectory(prefix="synthmri-difpy-") as tmp:
        for name, rows in runs:
            if len(rows) < 2:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            files = {}
            for r in rows:
                suffix = Path(paths[r]).suffix.lower()
                link = folder / f"{r:08d}{suffix if suffix[1:] in _DIFPY_EXTENSIONS else '.png'}"
                _link(Path(paths[r]).resolve(), link)
                files[os.path.normpath(str(link))] = int(r)
            dif = difPy.build(sorted(files), px_size=crit.px_size, show_progress=False, processes=processes)
            found = difPy.search(dif, similarity=crit.mse_threshold, rotate=crit.rotations,
                                 same_dim=crit.same_dim, show_progress=False, processes=processes)
            i, j, mse = [], [], []
            for key, matches in found.result.items():
                for match, value in matches:
                    a, b = files[os.path.normpath(key)], files[os.path.normpath(match)]
                    if name == "both" and splits[a] == splits[b]:
                        continue  # within-split pairs come from the per-split runs, as in the paper
                    i.append(a)
                    j.append(b)
                    mse.append(float(value))
            parts.append(Edges(np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(mse, np.float64)))
            for path, reason in dif.stats["invalid_files"]["logs"].items():
                row = files.get(os.path.normpath(path))
                if row is not None:
                    unreadable.setdefault(row, f"unreadable by difPy: {reason}")
            info["runs"].append({
                "split": name, "images": int(len(rows)),
                "path": "pairwise" if len(rows) <= DIFPY_PAIRWISE_MAX else "batch (equal sums)",
                "cross_matches" if name == "both" else "reported_matches": len(i),
            })
    info["invalid_files"] = len(unreadable)
    return EngineResult(_ordered(Edges.concat(parts)), unreadable, info)


def _link(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target)
    except OSError:  # no symlinks (some Windows setups): a copy reads the same
        import shutil

        shutil.copyfile(target, link)
