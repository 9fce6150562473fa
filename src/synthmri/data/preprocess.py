"""The preprocess stage (paper §4.2-4.4): the split stage's manifest in, 256x256 grayscale PNGs and a manifest out.

Order: read -> grayscale -> aspect filter -> class balancing -> [N4] -> resize -> rotate -> CLAHE ->
histogram matching -> write (`order: resize_last`, the paper's code: rotate -> CLAHE at the native
size -> resize). The filters and every random draw are decided on the manifest in this process before
any image is decoded, so results do not depend on the worker count. Each kept image is decoded once:
pass 1 (parallel) takes it as far as CLAHE and keeps the uint8 result in memory; the references are
built from those; pass 2 (parallel) applies each image's lookup table and writes the PNG.

No transform of a Testing image depends on its label or on other Testing images (rules of evidence):
its rotation is keyed by its path, and its histogram reference is the class-agnostic one built from
Training images. Only the aspect filter (paper §4.2, both splits) reads a Testing image's class: it
decides whether the image is kept, never its pixels. A val image is treated as a Testing image, and
more strictly: it is never rotated (`rotate.test` reproduces what the paper's code did to its Testing
folder; val did not exist there), never drawn by balancing, never in a reference.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from synthmri import params as P
from synthmri.data import preprocess_ops as ops
from synthmri.images import ImageError, read_gray, write_png
from synthmri.io import default_workers, manifest_path, parallel_map, read_table, write_json, write_table
from synthmri.tasks import Task, apply_task

SPLITS = P.SPLITS  # train, val, test
REQUIRED = ("split", "class", "relpath", "path", "width", "height", "plane", "dedup_status", "dedup_reason")

# removal reasons: metrics count by these categories; the manifest's `reason` may add a detail
DUPLICATE = "duplicate"
ASPECT = "aspect ratio"
NOT_DRAWN = "not drawn by class balancing"
UNREADABLE = "unreadable"
CHANGED = "changed since ingest"

# one independent random stream per purpose, so e.g. switching rotation on for Testing never
# changes which Training images the balancing draws
_BALANCE, _ROTATE, _REFERENCE, _REFERENCE_AGNOSTIC = 1, 2, 3, 4


def preprocess(manifest: Path, out_dir: Path, cfg: P.PreprocessParams, classes: Sequence[str],
               task: Task | None = None) -> dict[str, Any]:
    """Run the stage; write `out_dir/{train,val,test}/<class>/*.png`, `out_dir/manifest.csv` and
    `out_dir/params.json` (the resolved settings); return the metrics.

    `task` (synthmri/tasks.py) maps the classes at the very end: every decision here is made per dataset
    class, the manifest gets `source_class` and the mapped `class`; folders keep the dataset's class."""
    manifest, out_dir = Path(manifest), Path(out_dir)
    classes = tuple(classes)
    _check_params(cfg, classes)
    df = read_table(manifest)
    if task is not None and "source_class" in df.columns:  # refused before any work (tasks.apply_task says why)
        apply_task(df, task, str(manifest))
    _check_manifest(df, classes, manifest)
    _check_out_dir(out_dir, manifest)

    reason = pd.Series("", index=df.index, dtype=object)
    dup = df["dedup_status"] == "removed"
    reason[dup] = [f"{DUPLICATE}: {r}" if r else DUPLICATE for r in df.loc[dup, "dedup_reason"]]
    _aspect_filter(df, reason, cfg)
    balance = _balance(df, reason, cfg)
    rotation = _rotations(df, reason, cfg)

    # pass 1: decode, [N4], resize, rotate, CLAHE -> uint8 in memory
    kept = [i for i in df.index if reason[i] == ""]
    jobs = [_Job(str(df.at[i, "path"]), int(df.at[i, "width"]), int(df.at[i, "height"]), float(rotation[i]), cfg)
            for i in kept]
    done = parallel_map(_prepare, jobs, desc="preprocess", workers=P.workers(cfg.workers), chunksize=_chunk(len(jobs), cfg))
    images: dict[int, np.ndarray] = {}
    for i, (img, why) in zip(kept, done):
        if img is None:
            reason[i] = why
        else:
            images[i] = img

    # histogram matching references from pass 1's Training images (paper §4.4.2)
    refs, ref_meta = _references(df, images, cfg, classes) if cfg.histmatch.apply else (_Refs(None, {}), {})

    # pass 2: match and write
    _clean(out_dir)
    out_path = pd.Series("", index=df.index, dtype=object)
    for i, name in _out_names(df.loc[list(images)]).items():
        out_path[i] = manifest_path(out_dir / df.at[i, "split"] / df.at[i, "class"] / name)
    writes = [(images[i], _lut(images[i], _reference_for(df.at[i, "split"], df.at[i, "class"], refs)), out_path[i])
              for i in images]
    parallel_map(_write, writes, desc="write", workers=P.workers(cfg.workers), chunksize=_chunk(len(writes), cfg))

    out = df.copy()
    out["status"] = np.where(reason == "", "kept", "removed")
    out["reason"] = reason
    out["out_path"] = out_path
    out["rotation"] = [float(rotation[i]) if i in images else 0.0 for i in df.index]
    metrics = _metrics(out, reason, balance, ref_meta, cfg, classes)  # per dataset class (paper §4.2, Table 2)
    if task is not None:
        out = apply_task(out, task, str(manifest))
        kept = out[out["status"] == "kept"]
        metrics["task"] = {"name": task.name, "map": {c: task.target_of(c) for c in task.sources},
                           **{s: {c: int(((kept["split"] == s) & (kept["class"] == c)).sum()) for c in task.classes}
                              for s in SPLITS}}
    write_table(out, out_dir / "manifest.csv")
    write_json(out_dir / "params.json", asdict(cfg))
    return metrics


# ---- checks -------------------------------------------------------------------------------------


def _check_params(cfg: P.PreprocessParams, classes: tuple[str, ...]) -> None:
    """Cross-section checks params.py cannot make alone (they need data.classes)."""
    for key, names in (("preprocess.square_classes", cfg.square_classes), ("preprocess.balance.classes", cfg.balance.classes)):
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise P.ParamsError(f"{key}: unknown class(es) {unknown}; data.classes is {list(classes)}")


def _check_manifest(df: pd.DataFrame, classes: tuple[str, ...], path: Path) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected dedup's manifest (run `synthmri dedup` first)")
    # a row dedup removed may have no split (a removed copy without a kept twin, reassigned by the split stage)
    no_split = (df["split"] == "") & (df["dedup_status"] == "removed")
    for col, allowed in (("split", SPLITS), ("class", classes), ("dedup_status", ("keep", "removed"))):
        bad = df.loc[~df[col].isin(allowed) & ~(no_split if col == "split" else False), col]
        if len(bad):
            raise ValueError(f"{path}: column {col!r} has value(s) {sorted(set(map(str, bad)))[:5]} "
                             f"(row {bad.index[0] + 2}); expected one of {list(allowed)}")
    for col in ("width", "height"):
        v = pd.to_numeric(df[col], errors="coerce")
        if v.isna().any() or (v < 1).any() or (v != v.round()).any():
            row = int(np.flatnonzero(v.isna() | (v < 1) | (v != v.round()))[0]) + 2
            raise ValueError(f"{path}: column {col!r} must hold positive integers (row {row}: {df[col].iloc[row - 2]!r})")


def _check_out_dir(out_dir: Path, manifest: Path) -> None:
    m = manifest.resolve()
    for stale in _owned(out_dir):
        if m == stale.resolve() or stale.resolve() in m.parents:
            raise ValueError(f"{manifest} lies in {stale}, which this stage rewrites: choose another output folder")


# ---- decisions made on the manifest -------------------------------------------------------------


def _aspect_filter(df: pd.DataFrame, reason: pd.Series, cfg: P.PreprocessParams) -> None:
    """Paper §4.2, both splits (the paper's Table 1 counts Testing after the filter too)."""
    for i in df.index[reason == ""]:
        w, h = int(df.at[i, "width"]), int(df.at[i, "height"])
        if not ops.aspect_ok(w, h, df.at[i, "class"] in cfg.square_classes, cfg.aspect_tolerance):
            reason[i] = f"{ASPECT} {w}x{h}"


def _balance(df: pd.DataFrame, reason: pd.Series, cfg: P.PreprocessParams) -> dict[str, dict[str, Any]]:
    """Paper §4.2: each listed class keeps a seeded sample of randint(min, max) Training images, or
    of `balance.counts[class]` where given (the paper's Table 2 counts).

    Each class draws from its own stream (seed, class name), over its candidates sorted by relpath.
    """
    out = {}
    for cls in cfg.balance.classes:
        cand = df.index[(df["split"] == "train") & (df["class"] == cls) & (reason == "")]
        cand = list(df.loc[cand].sort_values("relpath").index)
        rng = _rng(cfg.seed, _BALANCE, cls)
        drawn = int(rng.integers(cfg.balance.min, cfg.balance.max, endpoint=True))  # drawn either way: same stream
        source = "counts" if cls in cfg.balance.counts else "randint"
        drawn = cfg.balance.counts.get(cls, drawn)
        if drawn < len(cand):
            chosen = set(rng.choice(len(cand), size=drawn, replace=False).tolist())
            for j, i in enumerate(cand):
                if j not in chosen:
                    reason[i] = NOT_DRAWN
        kept = min(drawn, len(cand))
        out[cls] = {"available": len(cand), "drawn": drawn, "kept": kept, "short_by": drawn - kept, "source": source}
    return out


def _rotations(df: pd.DataFrame, reason: pd.Series, cfg: P.PreprocessParams) -> pd.Series:
    """Paper §4.3: with probability p, a uniform angle in [-max, max] degrees, rounded to 0.01° so the
    manifest records exactly what was applied; with `whole_degrees`, the paper's code's
    `randrange(-max, max)`: a whole degree in -max..max-1. Training only unless rotate.test (the
    paper's code rotated Testing too); val never. Each image draws from its own stream (seed,
    split/relpath), so its angle depends neither on which other images were kept nor on its class."""
    angles = pd.Series(0.0, index=df.index)
    r = cfg.rotate
    for i in df.index[reason == ""]:
        split = df.at[i, "split"]
        if split == "val" or (split == "test" and not r.test):
            continue
        rng = _rng(cfg.seed, _ROTATE, f"{split}/{df.at[i, 'relpath']}")
        hit = rng.random() < r.probability
        if r.whole_degrees:
            m = int(r.max_degrees)
            angle = float(rng.integers(-m, m)) if m > 0 else 0.0  # high end excluded, as randrange
        else:
            angle = rng.uniform(-r.max_degrees, r.max_degrees)
        angles[i] = round(float(angle), 2) + 0.0 if hit else 0.0  # + 0.0: no "-0.0" in the manifest
    return angles


class _Refs(NamedTuple):
    """The histogram references: one class-agnostic CDF (None when nothing is matched) and, with
    `histmatch.reference: per_class`, one CDF per class for Training images."""

    agnostic: np.ndarray | None
    per_class: dict[str, np.ndarray]


def _references(df: pd.DataFrame, images: dict[int, np.ndarray], cfg: P.PreprocessParams,
                classes: tuple[str, ...]) -> tuple[_Refs, dict[str, Any]]:
    """Paper §4.4.2: a reference is the mean histogram of `reference_images` seeded-random images
    from `reference_splits` (Training only whenever matching is applied: params refuse Testing),
    taken after CLAHE. The agnostic reference draws from every class; a per-class one from its class."""
    h = cfg.histmatch
    present = df.loc[list(images)]
    pool = present[present["split"].isin(h.reference_splits)]
    meta: dict[str, Any] = {}
    agnostic = None
    if len(present):
        agnostic, sample = _one_reference(pool, images, cfg, _rng(cfg.seed, _REFERENCE_AGNOSTIC, "all"), "")
        meta["agnostic"] = {**_sample_meta(pool, sample), "per_class": {c: int((pool.loc[sample, "class"] == c).sum())
                                                                        for c in classes}}
    per_class: dict[str, np.ndarray] = {}
    if h.reference == "per_class":
        meta["per_class"] = {}
        for cls in classes:
            if not ((present["class"] == cls) & (present["split"] == "train")).any():
                continue  # only Training images are matched to a class reference
            cand = pool[pool["class"] == cls]
            per_class[cls], sample = _one_reference(cand, images, cfg, _rng(cfg.seed, _REFERENCE, cls), cls)
            meta["per_class"][cls] = _sample_meta(cand, sample)
    return _Refs(agnostic, per_class), meta


def _one_reference(cand: pd.DataFrame, images: dict[int, np.ndarray], cfg: P.PreprocessParams,
                   rng: np.random.Generator, cls: str) -> tuple[np.ndarray, list[int]]:
    """The reference CDF from a seeded sample of `cand` (sorted first: the draw does not depend on
    row order), and the sampled row labels."""
    h = cfg.histmatch
    order = list(cand.sort_values(["split", "relpath"]).index)
    if not order:
        what = f"class {cls!r} has" if cls else "there is"
        raise ValueError(f"histogram matching: {what} no kept image in preprocess.histmatch.reference_splits "
                         f"{list(h.reference_splits)} to build a reference from")
    pick = sorted(rng.choice(len(order), size=min(h.reference_images, len(order)), replace=False).tolist())
    sample = [order[j] for j in pick]
    return ops.reference_cdf(np.stack([ops.histogram(images[i]) for i in sample])), sample


def _sample_meta(cand: pd.DataFrame, sample: list[int]) -> dict[str, Any]:
    # reference_splits can only name train and test: a val image is never in a reference
    return {"images": len(sample), "per_split": {s: int((cand.loc[sample, "split"] == s).sum()) for s in ("train", "test")}}


def _reference_for(split: str, cls: str, refs: _Refs) -> np.ndarray | None:
    """The reference an image is matched to: its class's for a Training image under `per_class`,
    else the agnostic one. A Testing image never gets a class reference: that would make its
    pixels depend on its label (the paper's text matched every image within its class); nor does a val image."""
    if split == "train" and cls in refs.per_class:
        return refs.per_class[cls]
    return refs.agnostic


def _out_names(kept: pd.DataFrame) -> dict[int, str]:
    """`<source stem>.png`, unique per split/class folder (case-insensitively): stems shared by
    several sources become `<stem>-1`, `<stem>-2`, ... in relpath order, skipping taken names."""
    names: dict[int, str] = {}
    for _, g in kept.groupby(["split", "class"], sort=True):
        g = g.sort_values("relpath")
        stems = [PurePosixPath(str(r).replace("\\", "/")).stem for r in g["relpath"]]
        counts = Counter(s.lower() for s in stems)
        taken = {s.lower() for s in stems if counts[s.lower()] == 1}
        for i, stem in zip(g.index, stems):
            name = stem
            if counts[stem.lower()] > 1:
                k = 1
                while f"{stem}-{k}".lower() in taken:
                    k += 1
                name = f"{stem}-{k}"
                taken.add(name.lower())
            names[i] = f"{name}.png"
    return names


# ---- the two parallel passes (module level: pickled to the workers) ------------------------------


class _Job:
    """Pass 1's work for one image: a small picklable record."""

    __slots__ = ("path", "width", "height", "angle", "size", "interpolation", "resize_last", "n4", "clahe")

    def __init__(self, path: str, width: int, height: int, angle: float, cfg: P.PreprocessParams):
        self.path, self.width, self.height, self.angle = path, width, height, angle
        self.size, self.interpolation, self.n4 = cfg.size, cfg.resize_interpolation, cfg.n4
        self.resize_last = cfg.order == "resize_last"
        self.clahe = (cfg.clahe.clip_limit, cfg.clahe.tile_grid) if cfg.clahe.enabled else None


def _prepare(job: _Job) -> tuple[np.ndarray | None, str]:
    """Decode once and take the image through [N4], resize, rotate and CLAHE (or [N4], rotate, CLAHE,
    resize: the paper's code); a file that fails becomes a removal reason, never a crash."""
    try:
        img = read_gray(job.path)  # paper §4: grayscale, whatever the file's mode
    except (ImageError, OSError) as e:
        return None, f"{UNREADABLE}: {e}"
    if img.shape != (job.height, job.width):
        return None, f"{CHANGED}: now {img.shape[1]}x{img.shape[0]}, manifest says {job.width}x{job.height}"
    if job.n4:
        img = ops.n4(img)  # before any interpolation, on the image as acquired
    if not job.resize_last:
        img = ops.resize(img, job.size, job.interpolation)  # paper §4.2
    img = ops.rotate(img, job.angle)  # paper §4.3
    if job.clahe is not None:
        img = ops.clahe(img, *job.clahe)  # paper §4.4.1
    if job.resize_last:
        img = ops.resize(img, job.size, job.interpolation)  # the paper's code resized last
    return img, ""


def _write(item: tuple[np.ndarray, np.ndarray | None, str]) -> None:
    img, lut, path = item
    write_png(path, img if lut is None else lut[img])  # paper §4.4.2: the matched image is saved


def _lut(img: np.ndarray, ref: np.ndarray | None) -> np.ndarray | None:
    return None if ref is None else ops.match_lut(ops.histogram(img), ref)


def _chunk(n: int, cfg: P.PreprocessParams) -> int:
    """Chunks small enough that every worker gets work on small sets too (at most 16)."""
    workers = P.workers(cfg.workers) or default_workers()
    return max(1, min(16, n // (4 * workers)))


# ---- outputs ------------------------------------------------------------------------------------


def _owned(out_dir: Path) -> list[Path]:
    """What this stage writes inside out_dir, and so removes first (a rerun gives exactly the new set)."""
    return [out_dir / s for s in SPLITS] + [out_dir / "manifest.csv", out_dir / "params.json"]


def _clean(out_dir: Path) -> None:
    for p in _owned(out_dir):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _metrics(out: pd.DataFrame, reason: pd.Series, balance: dict, ref_meta: dict,
             cfg: P.PreprocessParams, classes: tuple[str, ...]) -> dict[str, Any]:
    kept = out[out["status"] == "kept"]
    # val is reported where the split stage made one (the paper's profiles have none: their metrics stay as they were)
    splits = [s for s in SPLITS if s != "val" or (out["split"] == "val").any()]
    split_counts = {
        s: {"total": int((kept["split"] == s).sum()),
            "per_class": {c: int(((kept["split"] == s) & (kept["class"] == c)).sum()) for c in classes}}
        for s in splits
    }
    train = kept[kept["split"] == "train"]
    planes = sorted(set(train["plane"].astype(str)))
    table2 = {(p or "unknown"): {c: int(((train["plane"].astype(str) == p) & (train["class"] == c)).sum()) for c in classes}
              for p in planes}
    categories = Counter(_category(r) for r in reason if r)
    n_in, n_kept = len(out), len(kept)
    n_removed = int((out["status"] == "removed").sum())
    if n_in != n_kept + n_removed or n_removed != sum(categories.values()):
        raise RuntimeError(f"preprocess counts do not reconcile: in {n_in}, kept {n_kept}, removed {n_removed}")
    return {
        **split_counts,
        "table2": table2,  # paper Table 2: final Training set by plane and class
        "removed": {k: categories[k] for k in sorted(categories)},
        "balance": balance,
        "rotated": {s: int(((kept["split"] == s) & (kept["rotation"] != 0)).sum()) for s in splits},
        "reference": ref_meta,
        "reconcile": {"in": n_in, "kept": n_kept, "removed": n_removed},
        "histmatch_applied": cfg.histmatch.apply,
        # which reference each split was matched to ("none" when matching is off)
        "histmatch_reference": {"train": ("own class" if cfg.histmatch.reference == "per_class" else "agnostic")
                                if cfg.histmatch.apply else "none",
                                **{s: "agnostic" if cfg.histmatch.apply else "none" for s in splits if s != "train"}},
        "reference_splits": list(cfg.histmatch.reference_splits),
        "rotate_test": cfg.rotate.test,
        "rotate_whole_degrees": cfg.rotate.whole_degrees,
        "order": cfg.order,
        "resize_interpolation": cfg.resize_interpolation,
        "clahe": cfg.clahe.enabled,
        "n4": cfg.n4,
        "size": cfg.size,
        "seed": cfg.seed,
    }


def _category(reason: str) -> str:
    for cat in (DUPLICATE, ASPECT, NOT_DRAWN, UNREADABLE, CHANGED):
        if reason.startswith(cat):
            return cat
    return reason


def _rng(seed: int, purpose: int, key: str) -> np.random.Generator:
    """A generator for one (seed, purpose, key): a stable 64-bit hash of the key, not Python's
    salted hash(), so every run and every worker count draws the same numbers."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, purpose, digest])
