"""The per-image steps of the preprocess stage (paper §4.2-4.4), each a pure function on uint8 (H, W).

OpenCV does the resizing, rotation and CLAHE, SimpleITK the optional N4 bias-field correction; the
histogram matching is a 256-entry lookup table built from cumulative distribution functions.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

LEVELS = 256  # uint8 grey levels
N4_FIT_SIDE = 128  # N4 fits the bias field on a copy shrunk to about this side (a smooth field needs no more)
N4_ITERATIONS = (50, 50, 50, 50)  # per fitting level (ITK's default schedule)


def aspect_ok(width: int, height: int, square: bool, tolerance: float) -> bool:
    """Paper §4.2: tumour classes need width == height; the others need both
    width in [(1-tol)·height, (1+tol)·height] and height in [(1-tol)·width, (1+tol)·width].

    The tolerance is taken as the decimal it is written as (0.1 is exactly 1/10), so the boundaries
    are decided in exact arithmetic: with tol 0.1, 110x100 passes, 90x100 fails (100 > 1.1·90).
    """
    if square:
        return width == height
    t = Fraction(str(tolerance))
    return (1 - t) * height <= width <= (1 + t) * height and (1 - t) * width <= height <= (1 + t) * width


INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}


def resize(img: np.ndarray, size: int, interpolation: str = "auto") -> np.ndarray:
    """To size x size (paper §4.2). "auto": INTER_AREA when shrinking both sides (it averages, no
    aliasing), bicubic when either side grows (INTER_AREA would degrade to nearest neighbour there).
    "bilinear" is what the paper's code got from `cv2.resize` without a flag (docs/paper_as_coded.md)."""
    h, w = img.shape
    if (h, w) == (size, size):
        return img.copy()
    if interpolation == "auto":
        interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_CUBIC
    elif interpolation in INTERPOLATION:
        interp = INTERPOLATION[interpolation]
    else:
        raise ValueError(f"interpolation: expected 'auto' or one of {sorted(INTERPOLATION)}, got {interpolation!r}")
    return cv2.resize(img, (size, size), interpolation=interp)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the image centre, counter-clockwise for positive degrees (OpenCV's convention),
    bilinear, corners filled with black like the MRI background (paper §4.3)."""
    if degrees == 0:
        return img.copy()
    h, w = img.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def clahe(img: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalization (paper §4.4.1; OpenCV as the paper's code)."""
    return cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tile_grid, tile_grid)).apply(img)


def n4(img: np.ndarray) -> np.ndarray:
    """N4 bias-field correction (SimpleITK), an option the paper evaluated and left out (§4.5).

    The field is fitted on a copy shrunk by an integer factor to about N4_FIT_SIDE px (factor 4 for
    a 512-px slice: ~2 s per image on one core, against ~3.5 s at factor 2), inside an Otsu
    foreground mask, then divided out at full resolution; values are clipped back into 0-255 so the
    image keeps its intensity scale. One thread, so the result does not depend on the core count.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(img.astype(np.float32))
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        return img.copy()  # a blank image has no foreground to fit a field to
    shrink = [max(1, round(min(img.shape) / N4_FIT_SIDE))] * 2
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    corrector.SetNumberOfThreads(1)
    corrector.Execute(sitk.Shrink(image, shrink), sitk.Shrink(mask, shrink))
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.GetArrayFromImage(image / sitk.Exp(log_bias))
    return np.clip(np.rint(corrected), 0, 255).astype(np.uint8)


# ---- histogram matching (paper §4.4.2) ----------------------------------------------------------


def histogram(img: np.ndarray) -> np.ndarray:
    """Counts of each grey level, int64 (256,)."""
    return np.bincount(img.ravel(), minlength=LEVELS).astype(np.int64)


def cdf(hist: np.ndarray) -> np.ndarray:
    """Normalised cumulative distribution of a histogram, float64 (256,), last entry 1."""
    c = np.cumsum(np.asarray(hist, dtype=np.float64))
    return c / c[-1]


def reference_cdf(hists: np.ndarray) -> np.ndarray:
    """The class reference: CDF of the mean normalised histogram of the sampled images (paper §4.4.2).

    This equals the mean of their CDFs (what the paper's code averaged): the CDF is linear in the
    normalised histogram, so "average histogram" (text) and "average CDF" (code) are one reference.
    """
    hists = np.asarray(hists, dtype=np.float64)
    if hists.ndim != 2 or hists.shape[1] != LEVELS or len(hists) == 0:
        raise ValueError(f"expected (n >= 1, {LEVELS}) histograms, got {hists.shape}")
    normalised = hists / hists.sum(axis=1, keepdims=True)
    return cdf(normalised.mean(axis=0))


def match_lut(src_hist: np.ndarray, ref_cdf: np.ndarray) -> np.ndarray:
    """uint8 lookup table sending each source level to the reference level of the same quantile.

    As scikit-image's `match_histograms`: the source CDF is interpolated on the reference CDF over
    the levels the reference holds (there it rises strictly), then rounded. Interpolating, rather
    than taking the first level whose CDF reaches the quantile, keeps a large spike such as the black
    background from jumping a whole grey step when its share differs slightly from the reference's.
    Monotone, so the grey order is kept.
    """
    ref_cdf = np.asarray(ref_cdf, dtype=np.float64)
    present = np.flatnonzero(np.diff(ref_cdf, prepend=0.0) > 0)
    lut = np.interp(cdf(src_hist), ref_cdf[present], present.astype(np.float64))
    return np.clip(np.rint(lut), 0, LEVELS - 1).astype(np.uint8)


def cdf_distance(hist: np.ndarray, ref_cdf: np.ndarray) -> float:
    """Mean absolute difference between an image's CDF and a reference CDF (0 = identical)."""
    return float(np.abs(cdf(hist) - ref_cdf).mean())
