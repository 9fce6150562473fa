"""Benchmark: difPy 4.2.1 against synthmri's `fast` dedup engine on the same images (paper §4.1).

Generates N MRI-like images (mostly 512x512 JPEG like the Kaggle set: a soft-edged head ellipse of
smooth multi-scale noise on black), plants duplicate groups (byte copies, lossless PNG re-encodes,
JPEG re-encodes at another quality, 180-degree turns) whose members are checked to match by difPy's
criterion with an independent reference (float64 MSE on difPy's thumbnails), and adds decoys: copies
brightened by +16, which are not duplicates (MSE about 256) but which difPy's uint8 arithmetic calls
MSE 0 (its bug 1). Then it runs difPy as a user would (build + search on the folder) and our engine,
and prints both times, the speed ratio, agreement, precision/recall against the planted truth, and
the false pairs of difPy's batch path (bug 2, above 5,000 images).

    python bench/dedup.py --images 3000 --similarity duplicates     # MSE 0
    python bench/dedup.py --images 3000                             # MSE <= 5 (the default, 'similar')
    python bench/dedup.py --images 7000 --workdir /tmp/bench-dedup

Writes the full report with the command and the machine to bench/results/dedup-<n>-<similarity>.json (or --out).

Images are cached in --workdir per (N, size, seed); timings exclude generation. "Pairs" are pairs of
images an engine puts in one group (the transitive closure of its matches): difPy's result lists
only enough matches to connect each group.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from synthmri.data.dedup_engines import DIFPY_PAIRWISE_MAX, Criterion, fast_engine
from synthmri.images import sha256_file
from synthmri.io import parallel_map
from synthmri.params import DedupParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import write_result  # noqa: E402


# ---- synthetic MRI-like images ----------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-scale smooth noise in [0, 1] (1/f^3 spectrum), not white noise."""
    f = np.fft.rfft2(rng.standard_normal((size, size)))
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    f /= 1.0 + (np.hypot(kx, ky) * size / 4.0) ** 1.5
    x = np.fft.irfft2(f, s=(size, size))
    return (x - x.min()) / (x.max() - x.min() + 1e-12)


def mri_like(seed: int, size: int) -> np.ndarray:
    """uint8 (h, w): a soft-edged tilted ellipse of tissue-like texture on a black background."""
    rng = np.random.default_rng(seed)
    h = w = size
    if rng.random() < 0.1:  # a tenth in other sizes, as the Kaggle set mixes a few
        h, w = (int(v) for v in rng.integers(size // 2, size + size // 4, 2))
    tex = smooth_field(rng, max(h, w))[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    ay, ax = h * rng.uniform(0.3, 0.45), w * rng.uniform(0.25, 0.4)
    t = rng.uniform(-0.4, 0.4)
    u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / ax
    v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / ay
    edge = 1.0 / (1.0 + np.exp((np.hypot(u, v) - 1.0) * 25.0))  # soft skull edge
    img = edge * (40.0 + 180.0 * tex)
    return np.clip(img, 0, 220).astype(np.uint8)  # <= 220 leaves room for +16 decoys


def _gen_base(job: tuple[int, int, str, int]) -> None:
    seed, size, path, quality = job
    Image.fromarray(mri_like(seed, size)).save(path, format="JPEG", quality=quality)


# ---- reference criterion (independent of the engine under test) -----------------------------------


def ref_thumb(path: Path, px: int) -> np.ndarray:
    """difPy's thumbnail, written as difPy writes it: RGB, bicubic px x px."""
    with Image.open(path) as img:
        if img.getbands() != ("R", "G", "B"):
            img = img.convert("RGB")
        return np.asarray(img.resize((px, px), resample=Image.BICUBIC)).astype(np.float64)


def ref_mse(a: np.ndarray, b: np.ndarray) -> float:
    return min(float(np.mean((a - np.rot90(b, k)) ** 2)) for k in range(4))


# ---- the data set -------------------------------------------------------------------------------------


NEAR_TARGET = 5.0  # JPEG re-encodes are made to match at difPy's 'similar' (MSE <= 5)


def build_set(root: Path, n: int, size: int, seed: int, px: int, decoys: int, workers):
    """Write the images once per (n, size, seed): returns (planted groups as [original, [[copy, mse], ...]],
    decoys as [original, brightened, mse]); which copies count as duplicates depends on the threshold."""
    marker = root / "planted.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if (saved["px"], saved["n_decoys"]) == (px, decoys):
            return saved["groups"], saved["decoys"]
    if root.exists():
        shutil.rmtree(root)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_groups = max(2, n // 40)
    copies = rng.integers(1, 4, n_groups)  # 1-3 copies per planted group
    n_base = n - int(copies.sum()) - decoys
    jobs = [(seed * 1_000_003 + k, size, str(img_dir / f"b{k:05d}.jpg"), int(rng.integers(85, 96)))
            for k in range(n_base)]
    parallel_map(_gen_base, jobs, desc="bench: images", workers=workers)

    groups, decoy_list = [], []
    originals = rng.choice(n_base, n_groups + decoys, replace=False)
    kinds = ("copy", "png", "jpeg", "rot180")
    for g, (k, m) in enumerate(zip(originals[:n_groups], copies)):
        src = img_dir / f"b{k:05d}.jpg"
        with Image.open(src) as im:
            pixels = np.asarray(im)
        ref = ref_thumb(src, px)
        members = []
        for c in range(int(m)):
            kind = kinds[int(rng.integers(len(kinds)))]
            dst = img_dir / f"d{g:04d}_{c}_{kind}.{'jpg' if kind in ('copy', 'jpeg') else 'png'}"
            if kind == "copy":
                shutil.copyfile(src, dst)
            elif kind == "png":
                Image.fromarray(pixels).save(dst)
            elif kind == "rot180":
                Image.fromarray(np.rot90(pixels, 2).copy()).save(dst)
            else:  # re-encode at a higher quality until it is 'similar'
                for q in range(int(rng.integers(80, 95)), 101):
                    Image.fromarray(pixels).save(dst, format="JPEG", quality=q)
                    if ref_mse(ref, ref_thumb(dst, px)) <= NEAR_TARGET:
                        break
            members.append([dst.name, ref_mse(ref, ref_thumb(dst, px))])
        groups.append([src.name, members])
    for d, k in enumerate(originals[n_groups:]):
        src = img_dir / f"b{k:05d}.jpg"
        with Image.open(src) as im:
            pixels = np.asarray(im)
        dst = img_dir / f"x{d:04d}_bright16.png"
        Image.fromarray(pixels + np.uint8(16)).save(dst)  # no overflow: pixels <= 220
        decoy_list.append([src.name, dst.name, ref_mse(ref_thumb(src, px), ref_thumb(dst, px))])
    marker.write_text(json.dumps({"px": px, "n_decoys": decoys, "groups": groups, "decoys": decoy_list}))
    return groups, decoy_list


# ---- pairs -----------------------------------------------------------------------------------------


def components(edges: list[tuple[str, str]]) -> list[list[str]]:
    """Connected components (of two or more names) of `edges`."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    comps: dict[str, list[str]] = {}
    for x in list(parent):
        comps.setdefault(find(x), []).append(x)
    return list(comps.values())


def closure(edges: list[tuple[str, str]]) -> set[frozenset]:
    """All pairs of names that share a connected component of `edges`."""
    return {frozenset(p) for c in components(edges) for p in combinations(sorted(c), 2)}


def prf(found: set, truth: set) -> dict:
    tp = len(found & truth)
    return {"pairs": len(found), "true": tp, "false": len(found) - tp,
            "precision": tp / len(found) if found else 1.0, "recall": tp / len(truth) if truth else 1.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3000, help="number of images (3000 and 7000 in BENCHMARKS.md)")
    ap.add_argument("--size", type=int, default=512, help="side of most images (Kaggle: 512)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/synthmri-bench-dedup"))
    ap.add_argument("--similarity", default="similar", help="duplicates | similar | a number (MSE threshold)")
    ap.add_argument("--px-size", type=int, default=50)
    ap.add_argument("--decoys", type=int, default=10, help="+16-brightened copies (not duplicates; difPy bug 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="processes for both engines; 0 = all cores")
    ap.add_argument("--skip-difpy", action="store_true", help="time only our engine")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default under bench/results/)")
    args = ap.parse_args(argv)
    cfg = DedupParams(similarity=args.similarity, px_size=args.px_size)
    crit = Criterion(cfg.px_size, cfg.mse_threshold, True, True)
    workers = args.workers or (os.cpu_count() or 1)

    root = args.workdir / f"n{args.images}-s{args.size}-seed{args.seed}"
    planted, decoys = build_set(root, args.images, args.size, args.seed, crit.px_size, args.decoys, workers)
    folder = root / "images"
    names = sorted(p.name for p in folder.iterdir())
    # The truth at this threshold: pairs inside each planted group (copies of one original may match
    # each other better than the original) that match by the reference criterion; decoys never do.
    thumbs = {}

    def ref(name):
        return thumbs.setdefault(name, ref_thumb(folder / name, crit.px_size))

    true_edges = [(a, b) for src, members in planted
                  for a, b in combinations([src, *(c for c, _ in members)], 2)
                  if ref_mse(ref(a), ref(b)) <= crit.mse_threshold]
    true_edges += [(a, b) for a, b, mse in decoys if mse <= crit.mse_threshold]
    decoy_names = {b for _, b, mse in decoys if mse > crit.mse_threshold}
    truth = closure(true_edges)
    report: dict = {"images": len(names), "similarity": args.similarity, "mse_threshold": crit.mse_threshold,
                    "planted_groups": len(components(true_edges)), "planted_pairs": len(truth),
                    "decoys": len(decoy_names),
                    "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}

    paths = [str(folder / n) for n in names]
    for p in paths:  # warm the page cache, so neither engine pays for the first read
        Path(p).read_bytes()
    t0 = time.perf_counter()
    shas = [sha256_file(p) for p in paths]  # in the pipeline, ingest's manifest carries these
    t1 = time.perf_counter()
    res = fast_engine(paths, shas, ["train"] * len(paths), crit, workers)
    report.update(sha256_seconds=t1 - t0, fast_seconds=time.perf_counter() - t1)
    fast_edges = [(names[i], names[j]) for i, j in zip(res.edges.i, res.edges.j)]

    if not args.skip_difpy:
        import difPy

        t0 = time.perf_counter()
        dif = difPy.build(str(folder), px_size=crit.px_size, show_progress=False, processes=workers)
        t1 = time.perf_counter()
        found = difPy.search(dif, similarity=crit.mse_threshold, show_progress=False, processes=workers)
        t2 = time.perf_counter()
        report.update(difpy_build_seconds=t1 - t0, difpy_search_seconds=t2 - t1, difpy_seconds=t2 - t0,
                      difpy_path="pairwise" if len(names) <= DIFPY_PAIRWISE_MAX else "batch (equal sums)")
        difpy_edges = [(Path(k).name, Path(m).name) for k, ms in found.result.items() for m, _ in ms]
        report["speedup"] = report["difpy_seconds"] / report["fast_seconds"]
        report["speedup_with_sha256"] = report["difpy_seconds"] / (report["fast_seconds"] + report["sha256_seconds"])
    report["loadavg_after"] = os.getloadavg()

    # Decoys are difPy's bug 1 by construction: judge them apart from the clean set.
    def clean(pairs):
        return {p for p in pairs if not (p & decoy_names)}

    fast_pairs = closure(fast_edges)
    report["fast"] = prf(clean(fast_pairs), truth)
    report["fast"]["decoy_pairs"] = len(fast_pairs) - len(clean(fast_pairs))
    if not args.skip_difpy:
        difpy_pairs = closure(difpy_edges)
        report["difpy"] = prf(clean(difpy_pairs), truth)
        report["difpy"]["decoy_pairs"] = len(difpy_pairs) - len(clean(difpy_pairs))
        both, either = clean(fast_pairs) & clean(difpy_pairs), clean(fast_pairs) | clean(difpy_pairs)
        report["agreement"] = {"pairs_both": len(both), "pairs_either": len(either),
                               "ratio": len(both) / len(either) if either else 1.0}
        # Bug 2: reported matches that are neither planted nor decoys, and whether their sums are equal.
        false = [(a, b) for a, b in difpy_edges if frozenset((a, b)) not in truth and b not in decoy_names
                 and a not in decoy_names]
        equal_sums = sum(ref_thumb(folder / a, crit.px_size).sum() == ref_thumb(folder / b, crit.px_size).sum()
                         for a, b in false)
        report["difpy_false_matches"] = {"count": len(false), "with_equal_pixel_sums": int(equal_sums)}
    _print(report)
    out = write_result(args.out, f"dedup-{args.images}-{args.similarity}" + ("-fast-only" if args.skip_difpy else ""),
                       report)
    print(f"\nfull results: {out}")
    return report


def _print(r: dict) -> None:
    print(f"\n{r['images']} images ({r['planted_groups']} planted groups, {r['planted_pairs']} planted pairs, "
          f"{r['decoys']} decoys), criterion MSE <= {r['mse_threshold']}, {r['cpus']} CPUs, "
          f"load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}")
    print(f"fast engine: {r['fast_seconds']:.2f} s (decode + search; + {r['sha256_seconds']:.2f} s of sha256, "
          f"which ingest computes in the pipeline)")
    if "difpy_seconds" in r:
        print(f"difPy ({r['difpy_path']} path): {r['difpy_seconds']:.1f} s "
              f"(build {r['difpy_build_seconds']:.1f} s + search {r['difpy_search_seconds']:.1f} s)")
        print(f"speed ratio difPy / fast: {r['speedup']:.1f}x ({r['speedup_with_sha256']:.1f}x counting sha256)")
        a = r["agreement"]
        print(f"agreement (decoys aside): {a['pairs_both']} pairs found by both / {a['pairs_either']} by either "
              f"= {a['ratio']:.1%}")
    for name in ("fast", "difpy"):
        if name in r:
            m = r[name]
            print(f"{name:6s} vs planted truth: recall {m['recall']:.1%}, precision {m['precision']:.1%} "
                  f"({m['true']} true, {m['false']} false pairs; {m['decoy_pairs']} pairs with +16 decoys)")
    if "difpy_false_matches" in r:
        f = r["difpy_false_matches"]
        print(f"difPy false matches outside decoys: {f['count']} ({f['with_equal_pixel_sums']} with equal pixel sums)")


if __name__ == "__main__":
    main(sys.argv[1:])
