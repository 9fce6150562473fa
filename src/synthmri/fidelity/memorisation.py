"""Memorisation check: is a synthetic image a near-copy of a real Training image?

A DDPM trained on a few hundred images can reproduce some of them, and synthetic data is offered as
privacy-safe, so each synthetic image is matched to its nearest real Training image of its class:

- in pixels: the MSE (0-255 scale) of the thumbnails the dedup stage compares (difPy's bicubic
  `px_size` thumbnails, `synthmri.images.thumbnail`), minimised over the image and its
  left-right mirror; a near-copy has MSE <= `pixel_mse`, i.e. it is what the dedup stage would call
  a duplicate at `dedup.similarity: <pixel_mse>`. Computed exactly (float64 Gram products of
  integers below 2^53, as in the dedup engine).
- in feature space (the FID features): Carlini et al. 2023's relative criterion, the distance to the
  nearest real image over the mean distance to the k nearest; a copy scores ~0, an image that is
  merely typical of the class ~1; a near-copy scores <= `feature_ratio`.

An img2img image (the SD-Turbo study) starts from a real Training image; its manifest's `source` column
names it, and `own_source` measures each image against its own source by the pixel criterion.

The same two criteria applied to the real Testing images (new images of the same class, after
dedup) give each criterion's false-alarm rate on this data, reported beside the synthetic share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthmri.fidelity.config import MemorisationParams
from synthmri.fidelity.features import ImageSet
from synthmri.io import atomic_path

_BLOCK = 256  # query rows per Gram product


@dataclass(frozen=True)
class Nearest:
    """For each query image, its nearest real image by pixels and by features."""

    pixel_index: np.ndarray  # (Q,) row of the real set
    pixel_mse: np.ndarray  # (Q,) thumbnail MSE, 0-255 scale
    pixel_mirrored: np.ndarray  # (Q,) the mirror matched better
    feature_index: np.ndarray  # (Q,)
    feature_distance: np.ndarray  # (Q,) Euclidean
    feature_ratio: np.ndarray  # (Q,) nearest / mean of the k nearest

    def near_copies(self, cfg: MemorisationParams) -> tuple[np.ndarray, np.ndarray]:
        return self.pixel_mse <= cfg.pixel_mse, self.feature_ratio <= cfg.feature_ratio


def nearest_pixel(query: np.ndarray, real: np.ndarray, mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest row of `real` for each row of `query` (uint8 (N, px, px, C) thumbnails) by exact MSE."""
    if len(real) == 0:
        raise ValueError("no real images to compare with")
    n = real[0].size
    r = real.reshape(len(real), n).astype(np.float64)
    r_sq = np.einsum("ij,ij->i", r, r)
    views = [query] + ([query[:, :, ::-1]] if mirror else [])  # width axis: left-right mirror
    best = np.full(len(query), np.inf)
    index = np.zeros(len(query), np.int64)
    mirrored = np.zeros(len(query), bool)
    for v, view in enumerate(views):
        q = np.ascontiguousarray(view).reshape(len(query), n).astype(np.float64)
        for s in range(0, len(q), _BLOCK):
            block = q[s:s + _BLOCK]
            ssd = np.einsum("ij,ij->i", block, block)[:, None] + r_sq[None, :] - 2.0 * (block @ r.T)
            j = np.argmin(ssd, axis=1)
            d = ssd[np.arange(len(block)), j] / n
            better = d < best[s:s + _BLOCK]
            best[s:s + _BLOCK][better] = d[better]
            index[s:s + _BLOCK][better] = j[better]
            mirrored[s:s + _BLOCK][better] = v == 1
    return index, np.maximum(best, 0.0), mirrored


def nearest_feature(query: np.ndarray, real: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest row of `real` by Euclidean distance, and that distance over the mean of the k nearest."""
    q = np.asarray(query, np.float64)
    r = np.asarray(real, np.float64)
    k = min(k, len(r))
    r_sq = np.einsum("ij,ij->i", r, r)
    index = np.zeros(len(q), np.int64)
    d1 = np.zeros(len(q))
    ratio = np.ones(len(q))
    for s in range(0, len(q), _BLOCK):
        block = q[s:s + _BLOCK]
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + r_sq[None, :] - 2.0 * (block @ r.T)
        d = np.sqrt(np.maximum(d2, 0.0))
        j = np.argmin(d, axis=1)
        near = d[np.arange(len(block)), j]
        mean_k = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
        index[s:s + _BLOCK] = j
        d1[s:s + _BLOCK] = near
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio[s:s + _BLOCK] = np.where(mean_k > 0, near / mean_k, 0.0)
    if k < 2:
        ratio[:] = 1.0  # one real image: no "closer than the others" to speak of
    return index, d1, ratio


def find_nearest(query: ImageSet, query_features: np.ndarray, real: ImageSet, real_features: np.ndarray,
                 cfg: MemorisationParams) -> Nearest:
    pi, pm, mir = nearest_pixel(query.thumbs, real.thumbs, cfg.mirror)
    fi, fd, fr = nearest_feature(query_features, real_features, cfg.feature_k)
    return Nearest(pi, pm, mir, fi, fd, fr)


def own_source(query: ImageSet, real: ImageSet, sources: dict[str, str], cfg: MemorisationParams) -> dict | None:
    """img2img (the SD-Turbo study): each synthetic image against the Training image it started from (the
    `source` column of its manifest), by the pixel criterion; None when no image names a source."""
    index = {p: i for i, p in enumerate(real.paths)}
    pairs = [(i, index[sources[p]]) for i, p in enumerate(query.paths) if sources.get(p) in index]
    if not pairs:
        return None
    q = query.thumbs[[i for i, _ in pairs]].astype(np.float64)
    r = real.thumbs[[j for _, j in pairs]].astype(np.float64)
    mse = ((q - r) ** 2).reshape(len(pairs), -1).mean(axis=1)
    if cfg.mirror:
        mse = np.minimum(mse, ((q[:, :, ::-1] - r) ** 2).reshape(len(pairs), -1).mean(axis=1))
    copies = mse <= cfg.pixel_mse
    return {"criterion": f"thumbnail MSE to its own img2img source <= {cfg.pixel_mse}", "images": len(pairs),
            "near_copies": int(copies.sum()), "share": float(copies.mean()), "mse_min": float(mse.min()),
            "mse_median": float(np.median(mse))}


def summarise(nearest: Nearest, reference: Nearest, cfg: MemorisationParams) -> dict:
    """Counts and shares of near-copies, with the same criteria's rate on real Testing images."""
    pix, feat = nearest.near_copies(cfg)
    ref_pix, ref_feat = reference.near_copies(cfg)
    n, m = len(pix), len(ref_pix)
    return {
        "images": n,
        "pixel": {
            "criterion": f"thumbnail MSE <= {cfg.pixel_mse} ({cfg.px_size}px, dedup's thumbnails"
                         + (", image or its mirror)" if cfg.mirror else ")"),
            "near_copies": int(pix.sum()),
            "share": float(pix.mean()) if n else 0.0,
            "nearest_mse_min": float(nearest.pixel_mse.min()) if n else None,
            "nearest_mse_median": float(np.median(nearest.pixel_mse)) if n else None,
            "real_test_share": float(ref_pix.mean()) if m else None,
            "real_test_nearest_mse_median": float(np.median(reference.pixel_mse)) if m else None,
        },
        "feature": {
            "criterion": f"nearest / mean of {cfg.feature_k} nearest feature distances <= {cfg.feature_ratio}",
            "near_copies": int(feat.sum()),
            "share": float(feat.mean()) if n else 0.0,
            "ratio_min": float(nearest.feature_ratio.min()) if n else None,
            "ratio_median": float(np.median(nearest.feature_ratio)) if n else None,
            "real_test_share": float(ref_feat.mean()) if m else None,
            "real_test_ratio_median": float(np.median(reference.feature_ratio)) if m else None,
        },
    }


def table(cls: str, query: ImageSet, real: ImageSet, nearest: Nearest, cfg: MemorisationParams) -> pd.DataFrame:
    """One row per synthetic file: its nearest real images and flags; unreadable files with their reason."""
    pix, feat = nearest.near_copies(cfg)
    rows = [{
        "class": cls, "path": p, "status": "used", "reason": "",
        "pixel_nearest": real.paths[nearest.pixel_index[i]], "pixel_mse": round(float(nearest.pixel_mse[i]), 6),
        "pixel_mirrored": bool(nearest.pixel_mirrored[i]), "pixel_near_copy": bool(pix[i]),
        "feature_nearest": real.paths[nearest.feature_index[i]],
        "feature_distance": float(nearest.feature_distance[i]), "feature_ratio": float(nearest.feature_ratio[i]),
        "feature_near_copy": bool(feat[i]),
    } for i, p in enumerate(query.paths)]
    rows += [{"class": cls, "path": p, "status": "unreadable", "reason": why} for p, why in query.rejected]
    return pd.DataFrame(rows, columns=["class", "path", "status", "reason", "pixel_nearest", "pixel_mse",
                                       "pixel_mirrored", "pixel_near_copy", "feature_nearest", "feature_distance",
                                       "feature_ratio", "feature_near_copy"])


def plot_pairs(path: str | Path, cls: str, query: ImageSet, real: ImageSet, nearest: Nearest,
               cfg: MemorisationParams) -> None:
    """The synthetic images closest to a real one (by pixel MSE), each beside its nearest real images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.lexsort((np.arange(len(query)), nearest.pixel_mse))[:max(cfg.pairs_shown, 1)]
    height = 2.3 * len(order) + 0.5
    fig = Figure(figsize=(6.6, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(order), 3, squeeze=False)
    pix, feat = nearest.near_copies(cfg)
    for row, i in enumerate(order):
        panels = [
            (query.images[i], f"synthetic {Path(query.paths[i]).name}"),
            (real.images[nearest.pixel_index[i]],
             f"pixel NN: MSE {nearest.pixel_mse[i]:.1f}{' (mirror)' if nearest.pixel_mirrored[i] else ''}"
             f"{' COPY' if pix[i] else ''}"),
            (real.images[nearest.feature_index[i]],
             f"feature NN: ratio {nearest.feature_ratio[i]:.2f}{' COPY' if feat[i] else ''}"),
        ]
        for ax, (img, title) in zip(axes[row], panels):
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{cls}: closest synthetic-real pairs (near-copy: MSE <= {cfg.pixel_mse}, "
                 f"ratio <= {cfg.feature_ratio})", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # leave the suptitle its own band
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
