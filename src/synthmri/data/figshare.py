"""Reading the figshare brain-tumour release (Cheng et al., figshare article 1512427).

Each `<n>.mat` is MATLAB v7.3: HDF5 behind a 512-byte MATLAB header (scipy.io.loadmat refuses it; h5py
reads it). Struct `cjdata`: `image` int16, `label` (1, 1) double (1 meningioma, 2 glioma, 3 pituitary),
`PID` uint16 character codes, `tumorMask` logical, `tumorBorder` (1, 2k). MATLAB stores arrays column-major,
so HDF5 (and h5py) hold every array transposed: `read_slice` transposes back, so `image[r, c]` is what
MATLAB shows at `image(r+1, c+1)`. `cvind.mat` holds `cvind`, the publisher's patient-wise fold (1-5) of
each slice, in slice-number order. A file that breaks any of this raises `MatError`, whose message is the
quarantine reason.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import h5py
import numpy as np

LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}  # the release's README
STRUCT = "cjdata"
FIELDS = ("image", "label", "PID", "tumorMask", "tumorBorder")
CVIND_FILE, CVIND = "cvind.mat", "cvind"
MAT_HEADER = b"MATLAB 7.3 MAT-file"  # the text at the start of the 512-byte userblock
_NUMBERED = re.compile(r"^(\d+)\.mat$", re.IGNORECASE)


class MatError(ValueError):
    """A .mat file that is not a usable slice; the message is the quarantine reason."""


@dataclass(frozen=True)
class Slice:
    image: np.ndarray  # int16 (rows, cols) as MATLAB shows it
    label: int  # 1 | 2 | 3
    cls: str  # LABELS[label]
    pid: str  # patient ID, decoded from its character codes
    mask: np.ndarray  # bool (rows, cols)
    border: np.ndarray  # float64 (2k,): tumorBorder's values in file order


def slice_number(name: str) -> int | None:
    """The n of a `<n>.mat` file name (its index in the release and in cvind), else None."""
    m = _NUMBERED.match(os.path.basename(name))
    return int(m.group(1)) if m else None


def _open(data: bytes) -> h5py.File:
    try:
        return h5py.File(io.BytesIO(data), "r")
    except Exception:  # h5py raises OSError (no signature) or others on garbage
        raise MatError("not HDF5 (not a MATLAB v7.3 .mat file)") from None


def _matrix(g: h5py.Group, name: str, max_pixels: int) -> np.ndarray:
    """A 2-D field in MATLAB orientation; its size is checked before anything is read."""
    ds = g[name]
    if not isinstance(ds, h5py.Dataset):
        raise MatError(f"cjdata.{name} is not an array")
    if len(ds.shape) != 2:
        raise MatError(f"cjdata.{name} has {len(ds.shape)} dimensions, expected 2")
    if ds.shape[0] * ds.shape[1] > max_pixels:  # a small compressed file can declare a huge array
        raise MatError(f"decompression bomb: cjdata.{name} is {ds.shape[1]}x{ds.shape[0]}, over {max_pixels} values")
    return np.asarray(ds[()]).T  # HDF5 holds MATLAB's column-major array transposed


def _vector(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2 or 1 not in a.shape:
        raise MatError(f"cjdata.{name} is {a.shape[0]}x{a.shape[1]}, expected a 1xN vector")
    return a.ravel()


def decode_pid(codes: np.ndarray) -> str:
    """MATLAB char arrays are stored as UTF-16 code units: one character per code, not always digits."""
    return "".join(chr(int(c)) for c in codes).rstrip("\x00").strip()


def read_slice(data: bytes, max_pixels: int) -> Slice:
    """Decode one `<n>.mat` slice file (its bytes), or raise MatError with the reason."""
    with _open(data) as f:
        g = f.get(STRUCT)
        if not isinstance(g, h5py.Group):
            raise MatError(f"no {STRUCT} struct")
        missing = [k for k in FIELDS if k not in g]
        if missing:
            raise MatError(f"{STRUCT} lacks field(s) {missing}")
        try:
            image = _matrix(g, "image", max_pixels)
            label_arr = _matrix(g, "label", max_pixels)
            pid_codes = _vector(_matrix(g, "PID", max_pixels), "PID")
            mask = _matrix(g, "tumorMask", max_pixels)
            border = _vector(_matrix(g, "tumorBorder", max_pixels), "tumorBorder")
        except MatError:
            raise
        except Exception as e:  # a corrupt chunk, an unreadable type
            raise MatError(f"unreadable {STRUCT}: {type(e).__name__}: {e}") from None

    if not np.issubdtype(image.dtype, np.integer):
        raise MatError(f"image is {image.dtype}, expected integers (int16)")
    if min(image.shape) < 1:
        raise MatError(f"image is {image.shape[1]}x{image.shape[0]}, empty")
    if label_arr.shape != (1, 1):
        raise MatError(f"label is {label_arr.shape[0]}x{label_arr.shape[1]}, expected 1x1")
    value = float(label_arr[0, 0])
    if not value.is_integer() or int(value) not in LABELS:
        raise MatError(f"unknown label {value:g} (expected {', '.join(f'{k} {v}' for k, v in LABELS.items())})")
    if not np.issubdtype(pid_codes.dtype, np.integer) or (pid_codes.size and pid_codes.min() < 0):
        raise MatError(f"PID is {pid_codes.dtype}, expected character codes (uint16)")
    pid = decode_pid(pid_codes)
    if not pid:
        raise MatError("empty PID")
    if mask.shape != image.shape:
        raise MatError(f"tumorMask is {mask.shape[1]}x{mask.shape[0]}, image {image.shape[1]}x{image.shape[0]}")
    if border.size % 2:
        raise MatError(f"tumorBorder holds {border.size} values, expected (x, y) pairs (1x2k)")
    return Slice(image, int(value), LABELS[int(value)], pid, mask.astype(bool), border.astype(np.float64))


def to_8bit(image: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    """int16 -> uint8 by the slice's own percentile window: [lo, hi] -> [0, 255], clipped outside, rounded.
    The same rule for every slice (figshare images have no common intensity scale). Returns (u8, lo, hi)."""
    lo, hi = (float(v) for v in np.percentile(image, percentiles))
    if hi <= lo:
        raise MatError(f"no contrast: the {percentiles[0]:g}th and {percentiles[1]:g}th percentiles are both {lo:g}")
    scaled = (image.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8), lo, hi


def read_cvind(data: bytes) -> np.ndarray:
    """The fold (int, >= 1) of each slice, slice 1 first; v7.3 (HDF5) or an older MAT version."""
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if CVIND not in f or not isinstance(f[CVIND], h5py.Dataset):
                raise MatError(f"no {CVIND} array")
            values = np.asarray(f[CVIND][()])
    except MatError:
        raise
    except Exception:  # not HDF5: a MATLAB v5 file, which scipy reads
        from scipy.io import loadmat

        try:
            values = np.asarray(loadmat(io.BytesIO(data))[CVIND])
        except KeyError:
            raise MatError(f"no {CVIND} array") from None
        except Exception as e:
            raise MatError(f"not a .mat file: {type(e).__name__}: {e}") from None
    if values.ndim != 2 or 1 not in values.shape:
        raise MatError(f"{CVIND} has shape {values.shape}, expected a vector")
    values = values.ravel().astype(np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or values.min() < 1:
        raise MatError(f"{CVIND} must hold fold numbers >= 1")
    return values.astype(np.int64)
