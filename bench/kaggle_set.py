"""A Kaggle-sized demo set, fast: a pool of demo slices rendered once, every file a cheap seeded variation.

The Kaggle set (masoudnickparvar/brain-tumor-mri-dataset, paper §3) in shape, not in content: its split and
class counts (Training 1,321 / 1,339 / 1,595 / 1,457, Testing 300 / 306 / 405 / 300 for glioma / meningioma /
notumor / pituitary, 7,023 files; other sizes scale these by largest remainder), all JPEG, with

- sizes (paper §3.2.2: 69 % of Training at 512x512, 225x225 next at 4.7 %, most others 200-300 px; notumor
  holds most non-square images, §4.2): per original, tumour classes 78 % 512x512, 3 % 225x225, 10 % other
  squares of 200-300 px, 3 % squares of 350-650 px, 6 % non-square (aspect 1.03-1.5); notumor 45 / 9 / 14 /
  2 / 30 %. Training comes to about 69 % at 512x512;
- 1.3 % stored as RGB (paper §3.2.1: 92 of 7,022) and 24 % blurred (§3.2.3: 1,389 blurry in Training);
- planted byte copies (§4.1: 207 Training and 30 Testing files removed; docs/paper_as_coded.md: 103 Testing
  files copied into Training): 3.6 % of each Training class folder and 2.3 % of each Testing one are copies
  of an original of the same folder (several copies of one original happen), and 7.9 % of each Testing
  class's count are copied into its Training folder. With `dedup.similarity: duplicates` and
  `cross_split: true`, dedup removes exactly the planted copies.

How: `POOL` slices per class and split (planes in the demo's class shares) are rendered once at 512 px by the
demo renderer (`synthmri.data.demo`) and cached; each file is one of them under a seeded similarity transform
into its size (zoom, turn, shift, mirror), a gamma and gain, Gaussian noise, maybe a blur, JPEG at quality
88-96. Every file draws from its own seed (seed, split, class, number); the set is cached under
--cache-dir keyed by what it depends on, so a rerun skips building.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from synthmri.io import atomic_dir, parallel_map

VERSION = 1  # bump when what a (n, seed, pool) set holds changes: part of the cache key
SPLITS = {"Training": "train", "Testing": "test"}
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
KAGGLE = {"Training": {"glioma": 1321, "meningioma": 1339, "notumor": 1595, "pituitary": 1457},
          "Testing": {"glioma": 300, "meningioma": 306, "notumor": 405, "pituitary": 300}}
KAGGLE_TOTAL = 7023
BASE = 512  # the pool's side; Kaggle's commonest size
SIZE_MIX = {
    "tumour": {"512": 0.78, "225": 0.03, "small_square": 0.10, "large_square": 0.03, "non_square": 0.06},
    "notumor": {"512": 0.45, "225": 0.09, "small_square": 0.14, "large_square": 0.02, "non_square": 0.30},
}
RGB_SHARE = 92 / 7022  # paper §3.2.1
BLUR_SHARE = 0.24  # paper §3.2.3: 24.3 % blurry
WITHIN_SHARE = {"Training": 207 / 5712, "Testing": 30 / 1311}  # paper §4.1: removed as duplicates
LEAK_SHARE = 103 / 1311  # Testing files with a byte copy in Training (docs/paper_as_coded.md)
TRUTH = "truth.csv"
BUILT = "built.json"
PREFIX = {"Training": "Tr", "Testing": "Te"}
ABBREV = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}


def counts_for(n: int) -> dict[str, dict[str, int]]:
    """Files per split and class: Kaggle's counts scaled to `n` (largest remainder; n=7023 gives Kaggle's)."""
    cells = [(s, c) for s in KAGGLE for c in CLASSES]
    raw = np.array([KAGGLE[s][c] * n / KAGGLE_TOTAL for s, c in cells])
    k = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - k), kind="stable")[: n - k.sum()]:
        k[i] += 1
    out: dict[str, dict[str, int]] = {s: {} for s in KAGGLE}
    for (s, c), v in zip(cells, k):
        out[s][c] = int(v)
    return out


def _plan(counts: dict, seed: int) -> tuple[dict, dict]:
    """Per (split, class): number of originals, within-folder copies and (Training) leaked Testing copies.
    A folder of at least 8 files gets at least one of each kind, so tiny sets still plant duplicates."""
    copies, leaks = {}, {}
    for s in KAGGLE:
        for c in CLASSES:
            n = counts[s][c]
            floor = 1 if n >= 8 else 0
            leaks[(s, c)] = max(floor, round(LEAK_SHARE * counts["Testing"][c])) if s == "Training" else 0
            copies[(s, c)] = max(floor, round(WITHIN_SHARE[s] * n))
    return copies, leaks


# ---- the pool of rendered slices ------------------------------------------------------------------


def _render_base(job: tuple[int, int, int, str, str]) -> np.ndarray:
    from synthmri.data import demo

    seed, split_code, k, cls, plane = job
    rng = np.random.default_rng([seed, 7, split_code, demo._PLANS[cls].code, k])
    return demo._render(rng, cls, plane, BASE, BASE)


def build_pool(cache: Path, seed: int, pool: int, workers: int) -> Path:
    """(2, classes, pool, 512, 512) uint8: pool slices per split and class, planes in the demo's shares."""
    from synthmri.data import demo

    path = cache / f"pool-v{VERSION}-seed{seed}-p{pool}.npy"
    if path.is_file():
        return path
    jobs = []
    for split_code in range(len(KAGGLE)):
        for cls in CLASSES:
            planes = demo._exact_shares(np.random.default_rng([seed, 8, split_code, demo._PLANS[cls].code]),
                                        pool, demo._PLANS[cls].planes)
            jobs += [(seed, split_code, k, cls, planes[k]) for k in range(pool)]
    arr = np.stack(parallel_map(_render_base, jobs, desc="bench: pool slices", workers=workers, chunksize=4))
    arr = arr.reshape(len(KAGGLE), len(CLASSES), pool, BASE, BASE)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
    return path


_POOL: dict[str, np.ndarray] = {}


def _pool(path: str) -> np.ndarray:
    if path not in _POOL:
        _POOL[path] = np.load(path, mmap_mode="r")  # shared pages, not a copy per worker
    return _POOL[path]


# ---- one file -------------------------------------------------------------------------------------


def _size(rng: np.random.Generator, kind: str) -> tuple[int, int]:
    if kind == "512":
        return BASE, BASE
    if kind == "225":
        return 225, 225
    if kind == "small_square":
        s = int(rng.integers(200, 301))
        return s, s
    if kind == "large_square":
        s = int(rng.integers(350, 651))
        return s, s
    short, ratio = int(rng.integers(200, 501)), rng.uniform(1.03, 1.5)
    long = int(round(short * ratio))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _variant(job: tuple) -> None:
    """Write one original: a pool slice, transformed into (w, h), re-toned, noised, maybe blurred, JPEG."""
    pool_path, dest, split_code, cls_code, seed_key, w, h, rgb, blur = job
    rng = np.random.default_rng(seed_key)
    pool = _pool(pool_path)
    base = np.asarray(pool[split_code, cls_code, int(rng.integers(pool.shape[2]))])
    fit = min(w, h) / BASE * rng.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((BASE / 2, BASE / 2), rng.uniform(-6, 6), fit)
    m[:, 2] += (w / 2 - BASE / 2 + rng.uniform(-0.04, 0.04) * w, h / 2 - BASE / 2 + rng.uniform(-0.04, 0.04) * h)
    if rng.random() < 0.5:  # mirror left-right
        m[0] = -m[0]
        m[0, 2] += w
    img = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_AREA if fit < 0.9 else cv2.INTER_LINEAR)
    lut = np.clip(255 * (np.arange(256) / 255) ** rng.uniform(0.85, 1.2) * rng.uniform(0.85, 1.15), 0, 255)
    img = cv2.LUT(img, lut.astype(np.uint8)).astype(np.float32)
    img += rng.standard_normal((h, w), dtype=np.float32) * rng.uniform(1.5, 4.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 3.0) * max(1.0, min(w, h) / 256))
    out = Image.fromarray(img)
    if rgb:
        out = out.convert("RGB")
    out.save(dest, format="JPEG", quality=int(rng.integers(88, 97)))


# ---- the set --------------------------------------------------------------------------------------


def key(n: int, seed: int, pool: int) -> str:
    blob = json.dumps({"v": VERSION, "n": n, "seed": seed, "pool": pool, "mix": SIZE_MIX, "rgb": RGB_SHARE,
                       "blur": BLUR_SHARE, "within": WITHIN_SHARE, "leak": LEAK_SHARE}, sort_keys=True)
    return f"kaggle-n{n}-seed{seed}-p{pool}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build(n: int, cache: Path, *, seed: int = 0, pool: int = 48, workers: int = 0) -> tuple[Path, dict]:
    """The set of `n` files under cache/<key>/{Training,Testing}/<class>/, its truth table and build record.

    Returns (folder, record); a folder already there (its build record written last) is reused."""
    cache = Path(os.path.expanduser(str(cache)))
    root = cache / key(n, seed, pool)
    if (root / BUILT).is_file():
        return root, json.loads((root / BUILT).read_text())
    if n < 8 * len(CLASSES):
        raise ValueError(f"--images {n}: at least {8 * len(CLASSES)} (8 files per split and class)")
    workers = workers or (os.cpu_count() or 1)
    t0 = time.perf_counter()
    pool_path = build_pool(cache, seed, pool, workers)
    t_pool = time.perf_counter() - t0

    counts = counts_for(n)
    copies, leaks = _plan(counts, seed)
    with atomic_dir(root) as tmp:  # a half-built set never sits at `root`
        rows, jobs, plan_copies = [], [], []
        originals: dict[tuple[str, str], list[str]] = {}
        for si, s in enumerate(KAGGLE):
            for ci, c in enumerate(CLASSES):
                (tmp / s / c).mkdir(parents=True)
                n_orig = counts[s][c] - copies[(s, c)] - leaks[(s, c)]
                rng = np.random.default_rng([seed, 1, si, ci])
                mix = SIZE_MIX["notumor" if c == "notumor" else "tumour"]
                kinds = _shares(rng, n_orig, mix)
                rgb = set(rng.choice(n_orig, int(round(RGB_SHARE * n_orig)), replace=False).tolist())
                blur = set(rng.choice(n_orig, int(round(BLUR_SHARE * n_orig)), replace=False).tolist())
                names = [f"{s}/{c}/{PREFIX[s]}-{ABBREV[c]}_{num:04d}.jpg" for num in rng.permutation(counts[s][c]) + 1]
                originals[(s, c)] = names[:n_orig]
                for i in range(n_orig):
                    w, h = _size(np.random.default_rng([seed, 2, si, ci, i]), kinds[i])
                    jobs.append((str(pool_path), str(tmp / names[i]), si, ci, [seed, 3, si, ci, i], w, h,
                                 i in rgb, i in blur))
                    rows.append({"relpath": names[i], "split": SPLITS[s], "class": c, "width": w, "height": h,
                                 "mode": "RGB" if i in rgb else "L", "blurred": i in blur, "copy_of": "", "kind": "original"})
                # within-folder copies: of originals of this folder, drawn with replacement
                for j, name in enumerate(names[n_orig:n_orig + copies[(s, c)]]):
                    plan_copies.append((name, names[int(rng.integers(n_orig))], "within"))
                plan_copies += [(name, None, "leak") for name in names[n_orig + copies[(s, c)]:]]
        parallel_map(_variant, jobs, desc="bench: files", workers=workers, chunksize=32)

        by_name = {r["relpath"]: r for r in rows}
        leak_rng = np.random.default_rng([seed, 4])
        leak_sources = {c: list(leak_rng.permutation(originals[("Testing", c)])) for c in CLASSES}
        for name, src, kind in plan_copies:
            if kind == "leak":  # a distinct Testing original of the same class per leak
                c = name.split("/")[1]
                if not leak_sources[c]:
                    raise ValueError(f"--images {n}: too few Testing {c} originals to plant the leaks")
                src = leak_sources[c].pop()
            shutil.copyfile(tmp / src, tmp / name)
            rows.append({**by_name[src], "relpath": name, "split": SPLITS[name.split("/")[0]], "copy_of": src,
                         "kind": kind})
        truth = pd.DataFrame(rows).sort_values("relpath", ignore_index=True)
        truth.to_csv(tmp / TRUTH, index=False)
        record = {
            "key": root.name, "images": n, "seed": seed, "pool_per_class_split": pool,
            "per_split_class": {SPLITS[s]: counts[s] for s in KAGGLE},
            "planted": {"within_train": int(sum(copies[("Training", c)] for c in CLASSES)),
                        "within_test": int(sum(copies[("Testing", c)] for c in CLASSES)),
                        "leaks": int(sum(leaks[("Training", c)] for c in CLASSES))},
            "at_512": int(((truth["width"] == BASE) & (truth["height"] == BASE)).sum()),
            "rgb": int((truth["mode"] == "RGB").sum()),
            "distinct_sizes": int(len(set(zip(truth["width"], truth["height"])))),
            "bytes": int(sum(f.stat().st_size for f in tmp.rglob("*.jpg"))),
            "build_s": {"pool": round(t_pool, 2), "total": round(time.perf_counter() - t0, 2)},
            "workers": workers,
        }
        (tmp / BUILT).write_text(json.dumps(record, indent=2) + "\n")
    return root, record


def _shares(rng: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    from synthmri.data.demo import _exact_shares

    return _exact_shares(rng, n, shares)
