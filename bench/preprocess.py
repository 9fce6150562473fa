"""Benchmark: preprocess throughput (images/s) against decoding alone (read_gray), same images, same run.

    python bench/preprocess.py [--images 500] [--side 512] [--workers 0]

Generates `--images` grayscale JPEGs of side x side in a temporary folder (four classes, a dedup-style
manifest), decodes them all with `read_gray`, then runs the whole preprocess stage on them with the
paper's settings (256 px, rotation, CLAHE, histogram matching; balancing off so every image is
processed), both with the same worker count. Prints both rates and their ratio, and writes them with the
command and the machine to bench/results/preprocess-<n>-w<workers>.json (or --out).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from synthmri import CLASSES
from synthmri import params as P
from synthmri.images import read_gray
from synthmri.data.preprocess import preprocess
from synthmri.io import default_workers, parallel_map, write_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import write_result  # noqa: E402


def make_images(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """n JPEGs of an elliptic 'head' with texture and a lesion, quality 90, and their manifest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    rows = []
    for k in range(n):
        cls = CLASSES[k % len(CLASSES)]
        r = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.36) ** 2
        level = rng.uniform(70, 200)
        img = np.where(r < 1, level * (1 - 0.4 * r) + rng.normal(0, 12, r.shape), 0.0)
        cy, cx, rad = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.04, 0.1)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] += 60
        relpath = f"Training/{cls}/img_{k:05d}.jpg"
        path = root / "raw" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        rows.append({"split": "train", "class": cls, "relpath": relpath, "path": str(path), "width": side,
                     "height": side, "mode": "L", "plane": "axial", "dedup_status": "keep", "dedup_reason": ""})
    manifest = root / "dedup.csv"
    write_table(pd.DataFrame(rows), manifest)
    return manifest


def _decode(path: str) -> tuple[int, int]:
    return read_gray(path).shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--side", type=int, default=512, help="side of the generated JPEGs")
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default under bench/results/)")
    args = ap.parse_args()

    cfg = P.load("preprocess", data={"preprocess": {"balance": {"classes": []}, "workers": args.workers}})
    workers = P.workers(args.workers) or default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_images(root, args.images, args.side)
        paths = pd.read_csv(manifest)["path"].tolist()

        t0 = time.perf_counter()
        parallel_map(_decode, paths, desc="decode", workers=P.workers(args.workers))
        decode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        metrics = preprocess(manifest, root / "processed", cfg, CLASSES)
        pre_s = time.perf_counter() - t0
        assert metrics["reconcile"]["kept"] == args.images, metrics["reconcile"]

    n = args.images
    print(f"machine: {platform.processor() or platform.machine()}, {default_workers()} cores; workers {workers}")
    print(f"{n} JPEGs {args.side}x{args.side} -> {cfg.size}x{cfg.size} PNG "
          f"(rotate p={cfg.rotate.probability}, CLAHE, histogram matching)")
    print(f"decode only (read_gray): {n / decode_s:8.1f} images/s  ({decode_s:.2f} s)")
    print(f"preprocess stage:        {n / pre_s:8.1f} images/s  ({pre_s:.2f} s)")
    print(f"ratio preprocess/decode: {pre_s / decode_s:8.2f}x the time of decoding alone")
    path = write_result(args.out, f"preprocess-{n}-w{workers}", {
        "images": n, "side": args.side, "out_size": cfg.size, "workers": workers,
        "decode_s": decode_s, "preprocess_s": pre_s, "decode_images_per_s": n / decode_s,
        "preprocess_images_per_s": n / pre_s, "ratio_preprocess_over_decode_time": pre_s / decode_s})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
