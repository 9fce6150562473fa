"""The demo dataset in the figshare release's format (Cheng et al., figshare article 1512427).

Real MATLAB v7.3 files written with h5py: HDF5 behind a 512-byte userblock holding MATLAB's header, struct
`cjdata` with `image` int16, `label` (1, 1) double, `PID` char (uint16 codes), `tumorMask` logical and
`tumorBorder` (1, 2k), every array stored transposed as MATLAB (column-major) writes it. Several slices per
synthetic patient, neighbouring cuts of one head with one lesion (`demo.render_slice`); patients get the
publisher's kind of 5-fold patient-wise `cvind.mat`. Packaged like the release: one outer zip holding four
zips `brainTumorDataPublic_<a>-<b>.zip` of contiguous slice numbers, `cvind.mat` and `README.txt`; beside
it `demo_truth.csv` says what each slice is. Same seed, same bytes.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from synthmri.data.demo import PLANES, TRUTH_FILE, check_replaceable, render_slice, slice_position
from synthmri.data.figshare import CVIND, CVIND_FILE, LABELS, MAT_HEADER, STRUCT
from synthmri.io import atomic_dir, progress, write_table
from synthmri.params import DemoParams

OUTER_ZIP = "figshare_1512427.zip"
INNER_ZIPS = 4  # the release: brainTumorDataPublic_1-766.zip ... _2299-3064.zip
FOLDS = 5
TRUTH_COLUMNS = ("number", "relpath", "inner_zip", "patient", "class", "label", "plane", "fold", "width", "height",
                 "mask_pixels")
USERBLOCK = 512
_ZIP_TIME = (2017, 4, 3, 0, 0, 0)  # fixed member times: same seed, same bytes
_README = """Synthetic demo data in the layout of the figshare brain tumour dataset (Cheng et al.).
Not patient data: slices of the MNI152 template with painted lesions, made by `synthmri demo-data --format figshare`.

Each <n>.mat is a MATLAB v7.3 file holding a struct cjdata:
cjdata.label: 1 for meningioma, 2 for glioma, 3 for pituitary tumor
cjdata.PID: patient ID
cjdata.image: image data (int16)
cjdata.tumorBorder: coordinates of points on the tumor border, [x1, y1, x2, y2, ...] (x column, y row, 1-based)
cjdata.tumorMask: binary image, 1 = tumor
cvind.mat holds cvind, the patient-wise fold (1-5) of each slice.
"""


# ---- MATLAB v7.3 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatVar:
    """One MATLAB variable: the array as MATLAB shows it, and its MATLAB class."""

    array: np.ndarray
    matlab_class: str  # double | int16 | char | logical | ...


def mat73_header() -> bytes:
    """The 128-byte MATLAB header at the start of the userblock: text, subsystem offset, version, endianness."""
    text = MAT_HEADER + b", Platform: GLNXA64, Created on: Mon Apr  3 00:00:00 2017 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def mat73_bytes(variables: dict[str, MatVar | dict[str, MatVar]], header: bytes | None = None) -> bytes:
    """A MATLAB v7.3 file: a dict value is a struct (an HDF5 group), a MatVar an array stored transposed."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=USERBLOCK, track_order=True) as f:
        for name, value in variables.items():
            if isinstance(value, dict):
                g = f.create_group(name, track_order=True)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for field, var in value.items():
                    _write_var(g, field, var)
            else:
                _write_var(f, name, value)
    data = bytearray(buf.getvalue())
    head = mat73_header() if header is None else header
    data[: len(head)] = head
    return bytes(data)


def _write_var(g: h5py.Group, name: str, var: MatVar) -> None:
    a = np.asarray(var.array)
    big = a.size >= 1024
    ds = g.create_dataset(name, data=a.T, compression="gzip" if big else None,
                          compression_opts=3 if big else None)  # column-major: HDF5 holds the transpose
    ds.attrs["MATLAB_class"] = np.bytes_(var.matlab_class)
    if var.matlab_class in ("char", "logical"):
        ds.attrs["MATLAB_int_decode"] = np.int32(2 if var.matlab_class == "char" else 1)


def slice_vars(image: np.ndarray, label: float, pid: str, mask: np.ndarray, border: np.ndarray) -> dict:
    """The `cjdata` struct of one slice, as the release's files hold it."""
    return {STRUCT: {
        "PID": MatVar(np.array([[ord(c) for c in pid]], np.uint16), "char"),
        "image": MatVar(np.asarray(image, np.int16), "int16"),
        "label": MatVar(np.array([[label]], np.float64), "double"),
        "tumorBorder": MatVar(np.asarray(border, np.float64).reshape(1, -1), "double"),
        "tumorMask": MatVar(np.asarray(mask, np.uint8), "logical"),
    }}


def border_of(mask: np.ndarray, points: int = 40) -> np.ndarray:
    """[x1, y1, x2, y2, ...] (column, row, 1-based) of up to `points` points on the largest outline."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(0)
    c = max(contours, key=len)[:, 0, :]  # (n, 2) as (x, y)
    c = c[np.linspace(0, len(c) - 1, min(points, len(c))).astype(int)]
    return (c + 1).astype(np.float64).ravel()


# ---- patients -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    code: int  # stable number in seeds
    cls: str
    pid: str
    plane: str
    slices: int
    size: int
    gain: float  # float intensity -> int16 scale (the release's values run to a few thousand)
    fold: int


def _patients(cfg: DemoParams) -> list[_Patient]:
    f = cfg.figshare
    rng = np.random.default_rng([cfg.seed, 20])
    classes = list(LABELS.values())
    n = f.patients_per_class * len(classes)
    small = set(rng.permutation(n)[: int(round(f.small_fraction * n))].tolist())
    folds: dict[int, int] = {}
    for k in range(len(classes)):  # patient-wise folds, stratified by class
        codes = k * f.patients_per_class + rng.permutation(f.patients_per_class)
        folds.update({int(c): i % FOLDS + 1 for i, c in enumerate(codes)})
    out = []
    for code in range(n):
        cls = classes[code // f.patients_per_class]
        # unique IDs; the release's are not always digits, and a leading zero must survive every table
        digits = f"{'0' if code % 5 == 2 else '1'}{7919 * code % 100000:05d}"
        pid = f"MR{digits}" if code % 5 == 4 else digits
        size = max(32, cfg.size // 2) if code in small else cfg.size
        out.append(_Patient(code, cls, pid, PLANES[int(rng.integers(len(PLANES)))],
                            int(rng.integers(f.min_slices, f.max_slices + 1)), size,
                            float(rng.uniform(800, 3000)), folds[code]))
    return [out[i] for i in rng.permutation(n)]  # the release is not sorted by class


def _slices(cfg: DemoParams, p: _Patient) -> list[tuple[np.ndarray, np.ndarray]]:
    """(int16 image, bool mask) of each of the patient's slices: neighbouring cuts of one head and lesion."""
    pos0 = slice_position(np.random.default_rng([cfg.seed, 23, p.code]), p.cls, p.plane)
    step = 1 if p.cls == "pituitary" else 2  # the sella is small
    out = []
    for k in range(p.slices):
        img, lesion = render_slice(np.random.default_rng([cfg.seed, 21, p.code]), p.cls, p.plane, p.size, p.size,
                                   pos=pos0 + step * (k - (p.slices - 1) // 2),
                                   noise=np.random.default_rng([cfg.seed, 22, p.code, k]))
        out.append((np.clip(np.round(img * p.gain), 0, np.iinfo(np.int16).max).astype(np.int16), lesion > 0.5))
    return out


# ---- packaging ----------------------------------------------------------------------------------


def inner_ranges(n: int, parts: int = INNER_ZIPS) -> list[tuple[int, int]]:
    """Contiguous 1-based (first, last) slice numbers of each inner zip, as equal as possible."""
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a) + 1, int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def make_figshare_demo(out_dir: Path, cfg: DemoParams) -> dict:
    """Write OUT_DIR/{figshare_1512427.zip, demo_truth.csv}; return counts (slices, patients, per class, folds)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    patients = _patients(cfg)
    mats: dict[int, bytes] = {}
    rows = []
    with progress() as bar:
        task = bar.add_task("demo .mat slices", total=sum(p.slices for p in patients))
        for p in patients:
            label = next(k for k, v in LABELS.items() if v == p.cls)
            for image, mask in _slices(cfg, p):
                n = len(mats) + 1
                mats[n] = mat73_bytes(slice_vars(image, label, p.pid, mask, border_of(mask)))
                rows.append({"number": n, "relpath": f"{n}.mat", "patient": p.pid, "class": p.cls, "label": label,
                             "plane": p.plane, "fold": p.fold, "width": p.size, "height": p.size,
                             "mask_pixels": int(mask.sum())})
                bar.advance(task)
    ranges = inner_ranges(len(mats))
    outer: dict[str, bytes] = {}
    for a, b in ranges:
        name = f"brainTumorDataPublic_{a}-{b}.zip"
        outer[name] = zip_bytes({f"{n}.mat": mats[n] for n in range(a, b + 1)})
        for r in rows[a - 1: b]:
            r["inner_zip"] = name
    cvind = np.array([[r["fold"]] for r in rows], np.float64)  # (N, 1) double, slice 1 first
    outer[CVIND_FILE] = mat73_bytes({CVIND: MatVar(cvind, "double")})
    outer["README.txt"] = _README.encode()

    with atomic_dir(out_dir) as tmp:  # the old folder is replaced only by a complete one
        (tmp / OUTER_ZIP).write_bytes(zip_bytes(outer))
        truth = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))
        write_table(truth, tmp / TRUTH_FILE)
    return {
        "format": "figshare",
        "slices": len(truth),
        "patients": len(patients),
        "by_class": {c: int(n) for c, n in sorted(Counter(truth["class"]).items())},
        "patients_by_class": {c: int(n) for c, n in sorted(Counter(p.cls for p in patients).items())},
        "by_fold": {int(k): int(n) for k, n in sorted(Counter(truth["fold"]).items())},
        "inner_zips": [f"brainTumorDataPublic_{a}-{b}.zip" for a, b in ranges],
        "seed": cfg.seed,
    }
