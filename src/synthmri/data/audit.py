"""The audit stage (paper §3): colour modes, image sizes, blur, imaging plane and intensities.

Each image is decoded once, in parallel, and everything the audit needs is measured in that one
pass: the Laplacian variance (blur, §3.2.3), the mean intensity and 256-bin histogram (§3.3) and the
plane features (§3.1, `synthmri.data.planes`). Colour modes and sizes come from ingest's manifest
without decoding. The output manifest keeps the raw measurements (a threshold change alters only
the metrics, so DVC does not rerun the stages below); the metrics and plots summarise them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from synthmri.data import planes as planes_mod
from synthmri.images import ImageError, read_gray
from synthmri.io import atomic_path, parallel_map, read_table, write_table
from synthmri.params import AuditParams, workers

MANIFEST_COLUMNS = ("split", "class", "relpath", "path", "sha256", "width", "height", "mode", "format", "bytes")
AUDIT_COLUMNS = ("lap_var", "mean_intensity", "plane", "plane_confidence")
SPLITS = ("train", "test")
# Pillow modes that store colour (paper §3.2.1 counts RGB images): channels or a colour palette.
RGB_LIKE_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"})
ALWAYS_MODES = ("L", "RGB")  # listed even when absent (0): the paper's two modes
DARK_LEVEL = 64  # a pixel below this value (the darkest quarter of 0-255) counts as dark (paper §3.3)
TOP_DIMENSIONS = 10  # sizes listed in the metrics (paper §3.2.2)
PLOT_DPI = 100

# metric keys (the summary table reads colour_modes.RGB, dimensions.distinct, blur.blurry)
COLOUR_MODES, RGB_LIKE, DIMENSIONS, BLUR, PLANES, INTENSITY, PER_SPLIT = (
    "colour_modes", "rgb_like", "dimensions", "blur", "planes", "intensity", "per_split")


def audit(manifest: Path, out_csv: Path, plots_dir: Path, cfg: AuditParams, classes) -> dict[str, Any]:
    """Audit every image in ingest's `manifest`; write `out_csv` and the PNG plots; return the metrics."""
    classes = tuple(classes)
    df = _check_manifest(read_table(manifest), classes, manifest)
    jobs = [(p, int(w), int(h), cfg.plane_features_px) for p, w, h in zip(df["path"], df["width"], df["height"])]
    results = parallel_map(_measure, jobs, desc="audit", workers=workers(cfg.workers))
    errors = [f"{job[0]}: {r}" for job, r in zip(jobs, results) if isinstance(r, str)]
    if errors:
        raise ImageError(
            f"{len(errors)} image(s) in {manifest} no longer match what ingest recorded (rerun ingest): "
            + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""))

    n = len(df)
    hists = np.stack([r[2] for r in results]) if n else np.zeros((0, 256), np.int64)
    features = np.stack([r[3] for r in results]) if n else np.zeros((0, len(planes_mod.FEATURES)))
    plane, confidence = planes_mod.assign_planes(features, cfg.seed)  # all images at once (paper §3.1)
    out = df.copy()
    out["lap_var"] = [round(r[0], 4) for r in results]
    out["mean_intensity"] = [round(r[1], 4) for r in results]
    out["plane"] = plane
    out["plane_confidence"] = np.round(confidence, 4)
    write_table(out, out_csv)

    metrics = _metrics(out, hists, cfg, classes)
    metrics[PER_SPLIT] = {s: _metrics(out, hists, cfg, classes, split=s) for s in SPLITS}
    _plots(out, hists, Path(plots_dir), cfg, classes)
    return metrics


def _check_manifest(df: pd.DataFrame, classes: tuple[str, ...], where: Path) -> pd.DataFrame:
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; an ingest manifest has {list(MANIFEST_COLUMNS)}")
    for col in ("width", "height"):
        size = pd.to_numeric(df[col], errors="coerce")
        bad = (size.isna() | (size < 1)).to_numpy()
        if bad.any():
            row = int(np.argmax(bad)) + 1
            raise ValueError(f"{where}: column {col!r} must hold positive integers (data row {row})")
        df[col] = size.astype(int)
    for col in ("split", "class", "mode", "path"):
        df[col] = df[col].astype(str)
    unknown = sorted(set(df["class"]) - set(classes))
    if unknown:
        raise ValueError(f"{where}: class(es) {unknown} are not in data.classes {list(classes)}")
    bad_split = sorted(set(df["split"]) - set(SPLITS) - {""})  # "": not split yet (the figshare release)
    if bad_split:
        raise ValueError(f"{where}: split(s) {bad_split} unknown; expected {list(SPLITS)} or empty")
    return df


def _measure(job: tuple[str, int, int, int]) -> tuple[float, float, np.ndarray, np.ndarray] | str:
    """Decode one image once and measure all it takes: (lap_var, mean, histogram, plane features)."""
    path, width, height, px = job
    try:
        gray = read_gray(path)
    except (ImageError, OSError) as e:
        return str(e) or type(e).__name__
    if gray.shape != (height, width):
        return f"decoded size {gray.shape[1]}x{gray.shape[0]} differs from the manifest's {width}x{height}"
    lap_var = float(cv2.Laplacian(gray, cv2.CV_64F).var())  # paper §3.2.3 (pyimagesearch's blur measure)
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.int64)
    return lap_var, float(gray.mean()), hist, planes_mod.plane_features(gray, px)


# ---- metrics ----------------------------------------------------------------------------------


def _metrics(df: pd.DataFrame, hists: np.ndarray, cfg: AuditParams, classes, split: str | None = None) -> dict:
    sel = np.ones(len(df), bool) if split is None else (df["split"] == split).to_numpy()
    d, h = df[sel], hists[sel]
    cls, plane = d["class"].to_numpy(), d["plane"].to_numpy()
    modes = Counter(d["mode"])
    blurry = d["lap_var"].to_numpy() < cfg.blur_threshold
    return {
        COLOUR_MODES: {m: modes[m] for m in sorted({*ALWAYS_MODES, *modes})},  # paper §3.2.1
        RGB_LIKE: int(sum(n for m, n in modes.items() if m in RGB_LIKE_MODES)),
        DIMENSIONS: {**_dimensions(d), "per_class": {c: _dimensions(d[cls == c], top=3) for c in classes}},
        BLUR: {  # paper §3.2.3
            "threshold": cfg.blur_threshold,
            "blurry": int(blurry.sum()),
            "share": _share(blurry.sum(), len(d)),
            "per_class": {c: {"images": int((cls == c).sum()), "blurry": int(blurry[cls == c].sum()),
                              "share": _share(blurry[cls == c].sum(), (cls == c).sum())} for c in classes},
        },
        PLANES: {c: {p: int(((cls == c) & (plane == p)).sum()) for p in planes_mod.PLANES} for c in classes},
        INTENSITY: {c: _intensity(h[cls == c]) for c in classes},  # paper §3.3
    }


def _dimensions(d: pd.DataFrame, top: int = TOP_DIMENSIONS) -> dict:
    """Paper §3.2.2: distinct width x height sizes and the commonest ones."""
    counts = Counter(f"{w}x{h}" for w, h in zip(d["width"], d["height"]))
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]  # ties by name: deterministic
    return {
        "distinct": len(counts),
        "most_common": [[k, n] for k, n in common],
        "share_most_common": _share(common[0][1], len(d)) if common else None,
    }


def _intensity(h: np.ndarray) -> dict:
    """Pooled pixel statistics of a class, and how much its images' histograms differ (paper §3.3)."""
    if len(h) == 0:
        return {"images": 0, "mean": None, "std": None, "dark_share": None, "histogram_spread": None}
    total = h.sum(axis=0).astype(np.float64)
    v = np.arange(256, dtype=np.float64)
    n = total.sum()
    mean = float((v * total).sum() / n)
    std = float(np.sqrt(max((v * v * total).sum() / n - mean * mean, 0.0)))
    p = h / h.sum(axis=1, keepdims=True)
    spread = float(0.5 * np.abs(p - p.mean(axis=0)).sum(axis=1).mean())  # mean total-variation distance
    return {"images": int(len(h)), "mean": round(mean, 4), "std": round(std, 4),
            "dark_share": round(float(total[:DARK_LEVEL].sum() / n), 6), "histogram_spread": round(spread, 6)}


def _share(k, n) -> float | None:
    return round(float(k) / float(n), 6) if n else None


# ---- plots ------------------------------------------------------------------------------------


def _plots(df: pd.DataFrame, hists: np.ndarray, plots_dir: Path, cfg: AuditParams, classes) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    _save(_plot_dimensions(df, classes), plots_dir / "dimensions.png")
    _save(_plot_class_plane(df, classes), plots_dir / "class_plane.png")
    _save(_plot_histograms(df, hists, cfg, classes), plots_dir / "histograms.png")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:  # no metadata: same data, same bytes
        fig.savefig(tmp, format="png", dpi=PLOT_DPI, metadata={"Software": None})


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (5.0, 4.0)):
    from matplotlib.figure import Figure  # object API: no pyplot state, no GUI backend

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _plot_dimensions(df: pd.DataFrame, classes) -> Any:
    """Paper Fig. 3: image sizes per class (the commonest sizes, and every size as width x height)."""
    fig, ax = _figure(2, size=(6.0, 4.5))
    dims = [f"{w}x{h}" for w, h in zip(df["width"], df["height"])]
    top = [k for k, _ in sorted(Counter(dims).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_DIMENSIONS]]
    labels = top + (["other"] if len(set(dims)) > len(top) else [])
    named = np.array([x if x in top else "other" for x in dims])
    left = np.zeros(len(labels))
    for c, colour in zip(classes, _colours(len(classes))):
        counts = np.array([((named == lab) & (df["class"] == c).to_numpy()).sum() for lab in labels])
        ax[0, 0].barh(labels, counts, left=left, color=colour, label=c)
        left += counts
        sel = (df["class"] == c).to_numpy()
        if sel.any():
            wh = Counter(zip(df["width"][sel], df["height"][sel]))
            pts = np.array(sorted(wh))
            ax[0, 1].scatter(pts[:, 0], pts[:, 1], s=[12 * np.sqrt(wh[tuple(p)]) for p in pts], color=colour,
                             alpha=0.6, label=c)
    ax[0, 0].invert_yaxis()
    ax[0, 0].set(xlabel="images", title="Commonest image sizes (width x height)")
    ax[0, 1].set(xlabel="width (px)", ylabel="height (px)", title="All sizes (area ~ count)")
    for a in ax[0]:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize="small")
    if not len(df):
        ax[0, 0].text(0.5, 0.5, "no images", ha="center", transform=ax[0, 0].transAxes)
    return fig


def _plot_class_plane(df: pd.DataFrame, classes) -> Any:
    """Paper Fig. 2: (a) planes per class, (b) classes per plane, as shares of each bar."""
    fig, ax = _figure(2, size=(6.0, 4.0))
    cls, plane = df["class"].to_numpy(), df["plane"].to_numpy()
    for a, groups, key, parts, pkey, title in (
        (ax[0, 0], list(classes), cls, planes_mod.PLANES, plane, "(a) MRI planes per class"),
        (ax[0, 1], list(planes_mod.PLANES), plane, list(classes), cls, "(b) classes per MRI plane"),
    ):
        bars = ["all"] + groups
        sizes = np.array([len(df)] + [(key == g).sum() for g in groups], float)
        bottom = np.zeros(len(bars))
        for part, colour in zip(parts, _colours(len(parts))):
            n = np.array([(pkey == part).sum()] + [((key == g) & (pkey == part)).sum() for g in groups], float)
            share = np.divide(100 * n, sizes, out=np.zeros_like(n), where=sizes > 0)
            a.bar(bars, share, bottom=bottom, color=colour, label=part)
            bottom += share
        a.set(ylabel="% of images", ylim=(0, 100), title=title)
        a.set_xticks(range(len(bars)), [f"{b}\n(n={int(s)})" for b, s in zip(bars, sizes)], fontsize="small")
        a.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def _plot_histograms(df: pd.DataFrame, hists: np.ndarray, cfg: AuditParams, classes) -> Any:
    """Paper Fig. 4: the intensity histograms of `histogram_samples` random images per class."""
    ncols = min(2, max(1, len(classes)))
    nrows = -(-max(1, len(classes)) // ncols)
    fig, ax = _figure(ncols, nrows, size=(4.0, 3.2))
    cls = df["class"].to_numpy()
    for i, (c, colour) in enumerate(zip(classes, _colours(len(classes)))):
        a = ax[i // ncols, i % ncols]
        rows = np.nonzero(cls == c)[0]
        rng = np.random.default_rng([cfg.seed, i])  # one stream per class: adding a class moves no other
        pick = np.sort(rng.choice(len(rows), size=min(cfg.histogram_samples, len(rows)), replace=False))
        for r in rows[pick]:
            a.plot(np.arange(256), hists[r] / hists[r].sum(), color=colour, alpha=0.15, linewidth=0.8)
        a.set(title=f"{c} ({len(pick)} of {len(rows)} images)", xlabel="pixel value", ylabel="share of pixels",
              xlim=(0, 255))
        if not len(rows):
            a.text(0.5, 0.5, "no images", ha="center", transform=a.transAxes)
    for j in range(len(classes), nrows * ncols):
        ax[j // ncols, j % ncols].set_axis_off()
    return fig
