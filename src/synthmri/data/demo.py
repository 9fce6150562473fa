"""The demo dataset: slices of the MNI152 T1 template with class-specific lesions, in the Kaggle layout.

Real anatomy without a download: nilearn ships the MNI152 2009 template inside its wheel. Each image is
one slice (axial, sagittal or coronal) with a skull and scalp ring, T1-like contrast, a lesion where
radiology places it for the class, a smooth bias field and Rician noise. On top, the nuisances each data
stage exists for are planted on purpose and recorded in `demo_truth.csv`: RGB copies and blurred images
(audit, paper §3.2), exact, near and leaked duplicates (dedup, paper §4.1), varied sizes and aspect
ratios (preprocess, paper §4.2), and broken files (ingest).

Same seed, same bytes: every image draws from its own seed, derived from (seed, split, class, number),
so nothing depends on iteration order; encoders run with fixed settings.
"""

from __future__ import annotations

import functools
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from synthmri.io import atomic_dir, progress, write_table
from synthmri.params import DemoParams

TRUTH_FILE = "demo_truth.csv"
# dup_of: the original's relpath; mse50: the copy's MSE to it at difPy's 50 x 50 (0 = difPy
# 'duplicates', <= 5 = 'similar'), empty when dup_of is; detail: how the file was made.
TRUTH_COLUMNS = ("relpath", "split", "class", "plane", "nuisance", "dup_of", "mse50", "detail")
SIMILAR_MSE = 5.0  # difPy's 'similar' threshold
NUISANCES = ("clean", "rgb", "blur", "exact_dup", "near_dup", "leak_dup", "truncated", "empty", "not_image")
PLANES = ("axial", "sagittal", "coronal")
SPLIT_PREFIX = {"Training": "Tr", "Testing": "Te"}  # Kaggle file names: Tr-gl_0001.jpg, Te-no_0003.jpg

# MNI152 at 2 mm: voxel (i, j, k) = ((x + 98) / 2, (y + 134) / 2, (z + 72) / 2). The midline is i = 49;
# the sella turcica sits at about MNI (0, 0, -34) mm, in front of the brainstem below the hypothalamus
# (checked by eye on the template's three planes).
_MIDLINE_I = 49
_SELLA = (49.0, 67.0, 19.0)


# ---- per-class plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClassPlan:
    code: int  # stable number in seeds: a class's images do not change when another class is added
    abbrev: str  # Kaggle's two letters
    planes: dict[str, float]  # share of images per plane (paper §3.1, Fig. 2)
    non_square: float  # share of non-square images (Kaggle: notumor far more often)


_PLANS: dict[str, _ClassPlan] = {
    "glioma": _ClassPlan(0, "gl", {"axial": 1 / 3, "sagittal": 1 / 3, "coronal": 1 / 3}, 0.1),
    "meningioma": _ClassPlan(1, "me", {"axial": 1 / 3, "sagittal": 1 / 3, "coronal": 1 / 3}, 0.1),
    # paper §3.1: notumor is 94 % axial, 6 % sagittal, no coronal
    "notumor": _ClassPlan(2, "no", {"axial": 0.94, "sagittal": 0.06, "coronal": 0.0}, 0.4),
    "pituitary": _ClassPlan(3, "pi", {"axial": 1 / 3, "sagittal": 1 / 3, "coronal": 1 / 3}, 0.1),
}


def _exact_shares(rng: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    """n labels in exactly the given shares (largest remainder), in a seeded random order."""
    keys = list(shares)
    raw = np.array([shares[k] for k in keys], float) * n / max(sum(shares.values()), 1e-12)
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = [k for k, c in zip(keys, counts) for _ in range(c)]
    return [labels[i] for i in rng.permutation(n)]


# ---- anatomy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Volume:
    t1: np.ndarray  # MNI152 T1, float32 in [0, 1], (99, 117, 95) at 2 mm
    icv: np.ndarray  # intracranial mask: brain with sulci, cisterns and the sella filled in
    lo: np.ndarray  # (i, j, k) bounding box of the intracranial mask
    hi: np.ndarray


@functools.lru_cache(maxsize=1)
def _volume() -> _Volume:
    from nilearn.datasets import load_mni152_template  # loads from nilearn's wheel, no download

    t1 = np.clip(np.asarray(load_mni152_template(resolution=2).get_fdata(), np.float32), 0, 1)
    brain = t1 > 0.05
    # A smoothed, hole-filled brain mask is the inner surface of the skull: the skull follows the
    # head's outline, not every sulcus.
    icv = ndimage.binary_fill_holes(ndimage.gaussian_filter(brain.astype(np.float32), 2.0) > 0.3) | brain
    where = np.argwhere(icv)
    return _Volume(t1, icv, where.min(0), where.max(0))


def _cut(a: np.ndarray, plane: str, pos: int) -> np.ndarray:
    """One slice in display orientation: superior (axial: anterior) up, anterior left in sagittal."""
    if plane == "axial":
        out = a[:, :, pos].T[::-1, :]
    elif plane == "sagittal":
        out = a[pos, :, :].T[::-1, ::-1]
    elif plane == "coronal":
        out = a[:, pos, :].T[::-1, :]
    else:
        raise ValueError(f"unknown plane {plane!r}; known: {', '.join(PLANES)}")
    return np.ascontiguousarray(out)


def _voxel_to_rc(plane: str, ijk: tuple[float, float, float], shape: tuple[int, ...]) -> tuple[float, float]:
    """Where voxel (i, j, k) lands, as (row, col), in `_cut`'s picture of `plane`."""
    i, j, k = ijk
    _, nj, nk = shape
    return {"axial": (nj - 1 - j, i), "sagittal": (nk - 1 - k, nj - 1 - j), "coronal": (nk - 1 - k, i)}[plane]


def _slice_position(rng: np.random.Generator, cls: str, plane: str, vol: _Volume) -> int:
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    if cls == "pituitary":  # the sella must be in the slice: midline sagittal, coronal through it, low axial
        centre = _SELLA[axis]
        if plane == "sagittal":  # off the exact midline, whose template slice is mostly falx
            return int(centre + rng.choice([-1, 1]) * rng.integers(2, 5))
        return int(round(centre + rng.integers(-2, 3)))
    if plane == "sagittal":
        return int(_MIDLINE_I + rng.choice([-1, 1]) * rng.integers(3, 28))
    a, b = vol.lo[axis], vol.hi[axis]
    f = rng.uniform(0.22, 0.8) if plane == "axial" else rng.uniform(0.25, 0.75)
    return int(round(a + f * (b - a)))


# ---- one image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Canvas:
    img: np.ndarray  # tissue intensities in [0, 1], painted in place by the lesion painters
    t1: np.ndarray  # warped template (white matter is bright)
    brain: np.ndarray  # bool
    icv: np.ndarray  # bool, intracranial
    depth: np.ndarray  # distance inside the intracranial mask, px
    brain_width: float  # px
    white: float  # intensity of the brightest tissue (white matter) before bias, gain and gamma
    sella: tuple[float, float]  # (row, col) of the sella in this slice
    midline: tuple[np.ndarray, np.ndarray]  # a point on the midline and its direction (row, col), axial/coronal


def _field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth random field of unit-ish amplitude (cubic upsampling of a coarse Gaussian grid)."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _head(rng: np.random.Generator, plane: str, pos: int, w: int, h: int) -> _Canvas:
    """Place the slice on a w x h canvas with a skull and scalp ring, T1-like contrast."""
    vol = _volume()
    t1, icv = _cut(vol.t1, plane, pos), _cut(vol.icv, plane, pos).astype(np.float32)
    to_rc = functools.partial(_voxel_to_rc, plane, shape=vol.t1.shape)
    rows, cols = np.nonzero(icv > 0.5)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    thick = rng.uniform(4.0, 6.5)  # skull + scalp in voxels (8-13 mm)
    fill = rng.uniform(0.8, 0.95)  # share of the shorter canvas side the head spans
    scale = fill * min(w / (c1 - c0 + 1 + 2 * thick), h / (r1 - r0 + 1 + 2 * thick))
    angle = np.deg2rad(rng.uniform(-5, 5))
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    slack_x = max(0.0, w - scale * (c1 - c0 + 1 + 2 * thick)) / 2
    slack_y = max(0.0, h - scale * (r1 - r0 + 1 + 2 * thick)) / 2
    dst = np.array([w / 2 + rng.uniform(-0.5, 0.5) * slack_x, h / 2 + rng.uniform(-0.5, 0.5) * slack_y])
    src = np.array([(c0 + c1) / 2, (r0 + r1) / 2])
    M = np.hstack([rot, (dst - rot @ src)[:, None]])  # (x=col, y=row) -> canvas
    warp = lambda a, f: cv2.warpAffine(a, M, (w, h), flags=f, borderMode=cv2.BORDER_CONSTANT)  # noqa: E731
    t1c = np.clip(warp(t1, cv2.INTER_CUBIC), 0, 1)
    icvc = warp(icv, cv2.INTER_LINEAR) > 0.5
    brain = t1c > 0.08

    def project(r, c):
        x, y = M @ np.array([c, r, 1.0])
        return float(y), float(x)

    sella = project(*to_rc(_SELLA))
    mid_a, mid_b = np.array(project(*to_rc((_MIDLINE_I, 30, 30)))), np.array(project(*to_rc((_MIDLINE_I, 90, 70))))
    midline = (mid_a, (mid_b - mid_a) / max(np.linalg.norm(mid_b - mid_a), 1e-6))

    # Skull and scalp: layers by distance outside the intracranial surface, in units of the ring
    # thickness, with a little irregularity. Inner table / diploe / outer table / scalp fat / skin.
    ring = thick * scale
    out = cv2.distanceTransform((~icvc).astype(np.uint8), cv2.DIST_L2, 5)
    u = out / ring * (1 + 0.08 * _field(rng, h, w, 6))
    diploe = rng.uniform(0.3, 0.55)
    fat = rng.uniform(0.65, 0.9)
    bounds = [0.0, rng.uniform(0.08, 0.14), rng.uniform(0.3, 0.4), rng.uniform(0.44, 0.5), rng.uniform(0.82, 0.9), 1.0]
    levels = [0.05, diploe, 0.05, fat, rng.uniform(0.3, 0.45)]
    skull = np.zeros((h, w), np.float32)
    for a, b, v in zip(bounds[:-1], bounds[1:], levels):
        skull[(u > a) & (u <= b)] = v
    skull *= 1 + 0.15 * _field(rng, h, w, max(4, w // 10))  # diploe and fat are not uniform
    skull = cv2.GaussianBlur(skull, (0, 0), max(0.6, 0.15 * scale))

    # T1-like tissue: CSF dark, grey < white matter; the curve varies per image (class-independent).
    csf = rng.uniform(0.06, 0.16)
    peak = rng.uniform(0.8, 1.0)
    tissue = csf + (peak - csf) * t1c ** rng.uniform(0.8, 1.5)
    img = np.where(icvc, tissue, skull).astype(np.float32)
    depth = cv2.distanceTransform(icvc.astype(np.uint8), cv2.DIST_L2, 5)
    bc = np.nonzero(brain.any(0))[0]
    brain_width = float(bc.max() - bc.min() + 1) if bc.size else float(w)
    return _Canvas(img, t1c, brain, icvc, depth, brain_width, peak, sella, midline)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float32)


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """~1 where x < 0, ~0 where x > 0, over `width`: anti-aliased edges."""
    return 1.0 / (1.0 + np.exp(np.clip(x / max(width, 1e-3), -30, 30)))


def _blend(img: np.ndarray, weight: np.ndarray, value: np.ndarray | float) -> None:
    img[:] = img * (1 - weight) + value * weight


def _paint_glioma(c: _Canvas, rng: np.random.Generator, plane: str) -> np.ndarray:
    """Intra-axial, in white matter: irregular outline, heterogeneous core, edema halo."""
    h, w = c.img.shape
    R = rng.uniform(0.1, 0.2) * c.brain_width
    for need, margin in ((c.t1 > 0.7, 1.0), (c.brain, 0.6), (c.icv, 0.0)):
        cand = np.argwhere(need & (c.depth > margin * R))
        if len(cand):
            break
    cy, cx = cand[rng.integers(len(cand))]
    yy, xx = _grid(h, w)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    wobble = 1 + sum(rng.uniform(0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    r = np.hypot(dy, dx) / (R * wobble) + 0.08 * _field(rng, h, w, max(4, w // 12))
    core = _soft(r - 1, 0.06)
    edema_extent = rng.uniform(1.6, 2.2)
    inside = cv2.GaussianBlur(c.brain.astype(np.float32), (0, 0), 1.0)
    edema = _soft(r - edema_extent, 0.15) * (1 - core) * inside
    # T1: edema mildly hypointense; a FLAIR-like bright halo now and then
    edema_gain = rng.uniform(0.45, 0.7) if rng.random() < 0.8 else rng.uniform(1.15, 1.35)
    c.img[:] = c.img * (1 - edema + edema * edema_gain)
    texture = 0.08 * _field(rng, h, w, max(4, w // 8))
    level = c.white * rng.uniform(0.1, 0.35)
    _blend(c.img, core, np.clip(level + texture, 0, 1))
    if rng.random() < 0.45:  # ring enhancement around a necrotic centre
        rim = _soft(r - 1, 0.06) * (1 - _soft(r - rng.uniform(0.7, 0.85), 0.06))
        _blend(c.img, rim, rng.uniform(0.8, 1.0))
    return core


def _paint_meningioma(c: _Canvas, rng: np.random.Generator, plane: str) -> np.ndarray:
    """Extra-axial and dural-based: a round, well-circumscribed, homogeneous mass against the inner
    skull (convexity) or the falx, with a thin CSF cleft towards the brain."""
    h, w = c.img.shape
    R = rng.uniform(0.1, 0.2) * c.brain_width
    yy, xx = _grid(h, w)
    dura = cv2.GaussianBlur(c.icv.astype(np.float32), (0, 0), 0.7)  # the mass stops at the dura
    centre = None
    if plane in ("axial", "coronal") and rng.random() < 0.3:  # parafalcine
        p, d = c.midline
        ts = np.arange(-2 * max(h, w), 2 * max(h, w), 0.5)
        pts = p[None] + ts[:, None] * d[None]
        ok = [(y, x) for y, x in pts if 0 <= y < h and 0 <= x < w and c.depth[int(y), int(x)] > 1.2 * R]
        # where the falx reaches: coronal, the upper half of the fissure; axial, its front and back
        # thirds (the middle of a low slice is corpus callosum and ventricles)
        ok.sort()  # top to bottom (coronal), front to back (axial)
        ok = ok[: len(ok) // 2] if plane == "coronal" else ok[: len(ok) // 3] + ok[len(ok) - len(ok) // 3 :]
        if ok:
            y, x = ok[rng.integers(len(ok))]
            side = rng.choice([-1, 1])
            normal = side * np.array([-d[1], d[0]])  # perpendicular to the falx, towards the mass
            centre = np.array([y, x]) + normal * R * rng.uniform(0.5, 0.9)
            dura *= 1 - _soft((yy - y) * normal[0] + (xx - x) * normal[1], 0.7)  # flat against the falx
    if centre is None:  # convexity: a point on the inner skull surface, not on the skull base
        rows = np.nonzero(c.icv.any(1))[0]
        top, bottom = rows.min(), rows.max()
        limit = bottom if plane == "axial" else top + 0.65 * (bottom - top)
        surface = np.argwhere((c.depth > 0) & (c.depth <= 1.5))
        surface = surface[surface[:, 0] <= limit]
        p = surface[rng.integers(len(surface))].astype(np.float32)
        smooth = cv2.GaussianBlur(c.icv.astype(np.float32), (0, 0), 3.0)
        gy, gx = np.gradient(smooth)
        n = np.array([gy[int(p[0]), int(p[1])], gx[int(p[0]), int(p[1])]])
        n = n / max(np.linalg.norm(n), 1e-6)  # points into the head
        centre = p + n * R * rng.uniform(0.55, 0.85)
    ax = rng.uniform(0.85, 1.15)
    phi = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u, v = dx * np.cos(phi) + dy * np.sin(phi), -dx * np.sin(phi) + dy * np.cos(phi)
    r = np.hypot(u * ax, v / ax) / R
    if rng.random() < 0.6:
        cleft = _soft(r - 1.12, 0.03) * dura
        _blend(c.img, cleft, rng.uniform(0.05, 0.15))
    mass = _soft(r - 1, 0.025) * dura
    # homogeneous, iso- to hyperintense to white matter (T1 with contrast)
    _blend(c.img, mass, np.clip(c.white * rng.uniform(1.0, 1.3) + 0.02 * _field(rng, h, w, 8), 0, 1))
    return mass


def _paint_pituitary(c: _Canvas, rng: np.random.Generator, plane: str) -> np.ndarray:
    """Sellar mass on the midline, growing upwards (suprasellar) in sagittal and coronal slices."""
    h, w = c.img.shape
    R = rng.uniform(0.1, 0.16) * c.brain_width
    cy, cx = c.sella
    cy, cx = cy + rng.normal(0, 0.1 * R), cx + rng.normal(0, 0.1 * R)
    yy, xx = _grid(h, w)
    r = np.hypot(yy - cy, xx - cx) / R
    if plane != "axial":  # snowman: a second lobe above the sella
        up = R * rng.uniform(0.5, 1.1)
        r = np.minimum(r, np.hypot(yy - (cy - up), xx - cx) / (R * rng.uniform(0.65, 0.95)))
    r = r + 0.05 * _field(rng, h, w, max(4, w // 10))
    mass = _soft(r - 1, 0.05)
    _blend(c.img, mass, np.clip(c.white * rng.uniform(0.95, 1.25) + 0.04 * _field(rng, h, w, 10), 0, 1))
    if rng.random() < 0.3:  # a cystic part
        cyst = _soft(np.hypot(yy - cy, xx - cx) / (R * rng.uniform(0.25, 0.45)) - 1, 0.1)
        _blend(c.img, cyst, rng.uniform(0.15, 0.3))
    return mass


# Each painter changes the canvas in place and returns the lesion's weight map (1 = tumour).
_PAINTERS: dict[str, Callable[[_Canvas, np.random.Generator, str], np.ndarray] | None] = {
    "glioma": _paint_glioma,
    "meningioma": _paint_meningioma,
    "notumor": None,
    "pituitary": _paint_pituitary,
}


def render_slice(
    rng: np.random.Generator, cls: str, plane: str, w: int, h: int, pos: int | None = None,
    noise: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (h, w) slice of class `cls` as float intensities (~[0, 1]) and its lesion weight map (1 = tumour,
    all 0 for notumor). `pos`: the slice index along the plane's axis; None draws it (the Kaggle demo). The
    figshare demo passes neighbouring positions with one `rng` seed, so a patient's slices share head and
    lesion, and its own `noise` generator per slice (None: noise from `rng`)."""
    if pos is None:
        pos = _slice_position(rng, cls, plane, _volume())
    c = _head(rng, plane, pos, w, h)
    mask = np.zeros((h, w), np.float32)
    if _PAINTERS[cls] is not None:
        mask = _PAINTERS[cls](c, rng, plane)
    img = c.img
    img *= np.exp(rng.uniform(0.05, 0.25) * _field(rng, h, w, 3))  # coil bias field
    # Scanner/windowing differences, independent of the class: gain, offset, gamma.
    img = np.clip(img * rng.uniform(0.6, 1.15) + rng.uniform(0, 0.05), 0, None) ** rng.uniform(0.75, 1.35)
    sigma = rng.uniform(0.01, 0.04)  # Rician noise: magnitude of a complex signal with Gaussian noise
    noise = rng if noise is None else noise
    img = np.hypot(img + sigma * noise.standard_normal((h, w)), sigma * noise.standard_normal((h, w)))
    return img, mask


def slice_position(rng: np.random.Generator, cls: str, plane: str) -> int:
    """Where a slice of `cls` in `plane` is cut (the draw `render_slice` makes when not given one)."""
    return _slice_position(rng, cls, plane, _volume())


def _render(rng: np.random.Generator, cls: str, plane: str, w: int, h: int) -> np.ndarray:
    """One uint8 (h, w) slice of class `cls`."""
    img, _ = render_slice(rng, cls, plane, w, h)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


# ---- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    split: str
    cls: str
    plane: str
    nuisance: str
    data: bytes
    ext: str  # jpg | png
    dup_of: "_File | None" = None
    detail: str = ""


def _encode(arr: np.ndarray, ext: str, quality: int = 92) -> bytes:
    """Fixed encoder settings: the same array always gives the same bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    if ext == "jpg":
        img.save(buf, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=0)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()


def _sizes(rng: np.random.Generator, n: int, size: int, non_square: float) -> list[tuple[int, int]]:
    """Mostly size x size (Kaggle: 512 x 512 for 69 %), some other squares, some non-square; for
    notumor half of the non-square images stay within the 0.9-1.1 aspect preprocess accepts."""
    kinds = _exact_shares(rng, n, {"main": 0.85 - non_square, "square": 0.15, "near": non_square / 2, "far": non_square / 2})
    out = []
    for kind in kinds:
        if kind == "main":
            out.append((size, size))
            continue
        if kind == "square":
            s = int(round(size * rng.choice([0.7, 0.8, 1.25, 1.4])))
            out.append((max(32, s), max(32, s)))
            continue
        ratio = rng.uniform(1.03, 1.1) if kind == "near" else rng.uniform(1.15, 1.4)
        long, short = size, max(32, int(round(size / ratio)))
        out.append((long, short) if rng.random() < 0.5 else (short, long))
    return out


def _originals(cfg: DemoParams, split: str, cls: str, n: int) -> list[_File]:
    plan = _PLANS[cls]
    split_code = list(SPLIT_PREFIX).index(split)
    rng = np.random.default_rng([cfg.seed, split_code, plan.code])
    planes = _exact_shares(rng, n, plan.planes)
    sizes = _sizes(rng, n, cfg.size, plan.non_square)
    # rgb and blur are exclusive so each file has one nuisance label
    n_rgb = int(round(cfg.rgb_fraction * n))
    n_blur = min(n - n_rgb, int(round(cfg.blur_fraction * n)))
    nuis = _exact_shares(rng, n, {"rgb": n_rgb, "blur": n_blur, "clean": n - n_rgb - n_blur})
    fmts = _exact_shares(rng, n, {"jpg": 0.85, "png": 0.15})
    files = []
    for i in range(n):
        r = np.random.default_rng([cfg.seed, split_code, plan.code, i])  # independent of everything else
        w, h = sizes[i]
        arr = _render(r, cls, planes[i], w, h)
        if nuis[i] == "blur":  # Gaussian blur, strong enough that the Laplacian variance collapses
            arr = cv2.GaussianBlur(arr, (0, 0), r.uniform(2.0, 3.0) * max(1.0, min(w, h) / 160))
        if nuis[i] == "rgb":
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        data = _encode(arr, fmts[i], quality=int(r.integers(90, 96)))
        files.append(_File(split, cls, planes[i], nuis[i], data, fmts[i]))
    return files


def _mse50(a: np.ndarray, b: np.ndarray) -> float:
    """MSE between the 50 x 50 bicubic RGB thumbnails difPy compares (paper §4.1), in float: difPy's
    own uint8 arithmetic wraps around (docs/paper_as_coded.md), which only matters for differences >= 16."""
    thumb = lambda x: np.asarray(Image.fromarray(x).convert("RGB").resize((50, 50), Image.Resampling.BICUBIC), float)  # noqa: E731
    return float(np.mean((thumb(a) - thumb(b)) ** 2))


def _near_copy(orig: _File, kind: int, rng: np.random.Generator) -> _File:
    """Three kinds of near duplicate, cycling: the same pixels as PNG (difPy 'duplicates', MSE 0),
    re-encoded at a lower JPEG quality, or resized (both difPy 'similar', MSE <= 5; a resized copy
    only with same_dim=False). Small images keep more noise in a 50 x 50 thumbnail, so the change is
    made milder until 'similar' holds; `mse50` in the truth file records what it came to."""
    arr = _decode(orig.data)
    if kind == 0:
        data, ext, detail = _encode(arr, "png"), "png", "png_copy"
    elif kind == 1:
        for q in (int(rng.integers(70, 81)), 85, 90, 94):
            data, ext, detail = _encode(arr, "jpg", q), "jpg", f"jpeg_q{q}"
            if _mse50(arr, _decode(data)) <= SIMILAR_MSE:
                break
    else:
        h, w = arr.shape[:2]
        for f in (float(rng.choice([0.75, 0.8, 1.25])), 1.25, 1.5):  # upscaling keeps the thumbnail closest
            size = (max(32, int(round(w * f))), max(32, int(round(h * f))))
            resized = cv2.resize(arr, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
            data, ext, detail = _encode(resized, orig.ext, 92), orig.ext, f"resized_x{f}_{size[0]}x{size[1]}"
            if _mse50(arr, _decode(data)) <= SIMILAR_MSE:
                break
    return _File(orig.split, orig.cls, orig.plane, "near_dup", data, ext, orig, detail)


def _pick(rng: np.random.Generator, pool: list[_File], k: int) -> list[_File]:
    """k members of pool, distinct while the pool lasts."""
    if not pool or k == 0:
        return []
    order = [pool[i] for i in rng.permutation(len(pool))]
    return [order[i % len(order)] for i in range(k)]


def _plant(cfg: DemoParams, classes: tuple[str, ...], train: dict, test: dict) -> dict[str, list[_File]]:
    """Duplicates, leaks and broken files added to Training (paper §4.1; docs/paper_as_coded.md: 103 Testing
    images are byte-identical to Training images in the Kaggle set)."""
    extra: dict[str, list[_File]] = {c: [] for c in classes}
    for cls in classes:
        rng = np.random.default_rng([cfg.seed, 9, _PLANS[cls].code])
        for o in _pick(rng, train[cls], cfg.exact_duplicates):
            extra[cls].append(_File("Training", cls, o.plane, "exact_dup", o.data, o.ext, o, "copy"))
        jpegs = [f for f in train[cls] if f.ext == "jpg"]
        for kind, o in enumerate(_pick(rng, jpegs, cfg.near_duplicates)):
            extra[cls].append(_near_copy(o, kind % 3, rng))
        for o in _pick(rng, test[cls], cfg.leaked_duplicates):
            extra[cls].append(_File("Training", cls, o.plane, "leak_dup", o.data, o.ext, o, "copy of a Testing file"))
    if cfg.broken_files:
        rng = np.random.default_rng([cfg.seed, 10])
        arr = _render(rng, classes[0], "axial", cfg.size, cfg.size)
        jpeg = _encode(arr, "jpg", 92)
        broken = [
            ("truncated", "axial", jpeg[: len(jpeg) * 3 // 5], "first 60 % of a JPEG"),
            ("empty", "", b"", "zero bytes"),
            ("not_image", "", b"synthmri demo: this is a text file, not an image\n", "text named .jpg"),
        ]
        for i, (nuisance, plane, data, detail) in enumerate(broken):
            cls = classes[i % len(classes)]
            extra[cls].append(_File("Training", cls, plane, nuisance, data, "jpg", None, detail))
    return extra


def _check_classes(classes: tuple[str, ...]) -> None:
    unknown = [c for c in classes if c not in _PLANS]
    if unknown or not classes:
        raise ValueError(
            f"the demo dataset knows lesions for {', '.join(_PLANS)}; cannot make class(es) {', '.join(unknown) or '(none)'}"
        )


def check_replaceable(out_dir: Path) -> None:
    """A demo writer replaces `out_dir` only if it is absent, empty, or an earlier demo dataset (either format)."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / TRUTH_FILE).is_file())):
        raise ValueError(f"{out_dir} exists and is not a demo dataset (no {TRUTH_FILE}); refusing to overwrite it")


def make_demo_dataset(out_dir: Path, cfg: DemoParams, classes: tuple[str, ...]) -> dict:
    """Write the demo dataset to `out_dir` (Training/<class>/, Testing/<class>/, demo_truth.csv).

    `out_dir` is replaced as a whole, and only if it is absent, empty, or an earlier demo dataset.
    Returns counts: files per split, per nuisance and per plane.
    """
    _check_classes(classes)
    out_dir = Path(out_dir)
    check_replaceable(out_dir)

    train, test = {}, {}
    with progress() as bar:
        task = bar.add_task("demo images", total=len(classes) * (cfg.train_per_class + cfg.test_per_class))
        for cls in classes:
            train[cls] = _originals(cfg, "Training", cls, cfg.train_per_class)
            bar.advance(task, cfg.train_per_class)
            test[cls] = _originals(cfg, "Testing", cls, cfg.test_per_class)
            bar.advance(task, cfg.test_per_class)
    extra = _plant(cfg, classes, train, test)

    # Kaggle-style names; numbers shuffled per folder so a duplicate is not simply the last file.
    named: dict[int, str] = {}
    for split, groups in (("Testing", test), ("Training", {c: train[c] + extra[c] for c in classes})):
        for cls in classes:
            files = groups[cls]
            rng = np.random.default_rng([cfg.seed, 11, list(SPLIT_PREFIX).index(split), _PLANS[cls].code])
            for f, num in zip(files, rng.permutation(len(files)) + 1):
                named[id(f)] = f"{split}/{cls}/{SPLIT_PREFIX[split]}-{_PLANS[cls].abbrev}_{num:04d}.{f.ext}"

    rows = []
    with atomic_dir(out_dir) as tmp:  # the old folder is replaced only by a complete one
        for split in SPLIT_PREFIX:
            for cls in classes:
                (tmp / split / cls).mkdir(parents=True)
        for split, groups in (("Training", train), ("Testing", test)):
            for cls in classes:
                for f in groups[cls] + (extra[cls] if split == "Training" else []):
                    rel = named[id(f)]
                    (tmp / rel).write_bytes(f.data)
                    dup, mse = "", ""
                    if f.dup_of is not None:
                        dup = named[id(f.dup_of)]
                        mse = 0.0 if f.data == f.dup_of.data else round(_mse50(_decode(f.dup_of.data), _decode(f.data)), 4)
                    rows.append((rel, f.split, f.cls, f.plane, f.nuisance, dup, mse, f.detail))
        truth = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).sort_values("relpath", ignore_index=True)
        write_table(truth, tmp / TRUTH_FILE)

    return {
        "files": len(truth),
        "by_split": {s: int(n) for s, n in sorted(Counter(truth["split"]).items())},
        "by_class": {c: int(n) for c, n in sorted(Counter(truth["class"]).items())},
        "by_nuisance": {k: int(Counter(truth["nuisance"])[k]) for k in NUISANCES},
        "by_plane": {p: int(Counter(truth["plane"])[p]) for p in PLANES},
        "seed": cfg.seed,
    }
