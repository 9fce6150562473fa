"""Typed parameters read from params.yaml: every unknown key or bad value stops before any compute.

One frozen dataclass per params.yaml section; a stage loads only the sections it reads, matching the
narrow `params:` keys dvc.yaml declares for it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from synthmri import CLASSES


class ParamsError(ValueError):
    """A params.yaml problem, with the dotted key that caused it."""


# ---- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataParams:
    raw: str = "data/raw/kaggle"  # Kaggle-layout folder or zip the pipeline ingests
    classes: tuple[str, ...] = CLASSES  # class folder names expected in Training/ and Testing/
    source: str = ""  # how to get the raw data, shown when data.raw is missing (`synthmri check-raw`)
    # kaggle: Training/<class>/, Testing/<class>/ image folders | figshare: the .mat v7.3 release of
    # Cheng et al. (outer zip, its four inner zips, or a folder of .mat files)
    format: Literal["kaggle", "figshare"] = "kaggle"
    class_names: dict[str, str] = field(default_factory=dict)  # class folder name -> class, e.g. {yes: tumor} (ingest)

    def __post_init__(self):
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ParamsError(f"data.classes must be distinct and non-empty, got {list(self.classes)}")
        if self.class_names is None:
            object.__setattr__(self, "class_names", {})
        _check(isinstance(self.class_names, dict), "data.class_names",
               f"expected a mapping {{folder name: class}}, got {self.class_names!r}")
        for folder, cls in self.class_names.items():
            _check(isinstance(folder, str) and isinstance(cls, str) and cls in self.classes,
                   f"data.class_names.{folder}", f"must name a class of data.classes {list(self.classes)}, got {cls!r}")


@dataclass(frozen=True)
class DemoFigshareParams:
    patients_per_class: int = 6  # synthetic patients per class (meningioma, glioma, pituitary)
    min_slices: int = 3  # slices per patient, drawn in [min_slices, max_slices] (the release: about 13)
    max_slices: int = 6
    small_fraction: float = 0.15  # share of patients scanned at half of demo.size (the release: a few 256 px)


@dataclass(frozen=True)
class DemoParams:
    seed: int = 0  # same seed -> byte-identical dataset
    train_per_class: int = 48  # clean Training images per class, before planted nuisances
    test_per_class: int = 16  # clean Testing images per class
    size: int = 160  # nominal side in pixels; actual sizes vary around it
    rgb_fraction: float = 0.1  # share of images saved as 3-channel copies
    blur_fraction: float = 0.15  # share of images blurred (paper §3.2.3)
    exact_duplicates: int = 4  # per class, byte-identical copies within Training
    near_duplicates: int = 3  # per class, re-encoded / slightly changed copies within Training
    leaked_duplicates: int = 2  # per class, Testing images copied into Training (leakage)
    broken_files: bool = True  # a truncated JPEG, a zero-byte file, a non-image named .jpg (Kaggle layout)
    # the layout the demo_data stage writes; kaggle-from-figshare: the figshare demo and its Kaggle-layout export
    # (OUT/figshare, OUT/kaggle with the link truth), for the link stage
    format: Literal["kaggle", "figshare", "kaggle-from-figshare"] = "kaggle"
    figshare: DemoFigshareParams = field(default_factory=DemoFigshareParams)  # format: figshare only

    def __post_init__(self):
        f = self.figshare
        _check(f.patients_per_class >= 1, "demo.figshare.patients_per_class", "must be >= 1")
        _check(1 <= f.min_slices <= f.max_slices, "demo.figshare.min_slices",
               f"need 1 <= min_slices <= max_slices, got {f.min_slices} and {f.max_slices}")
        _check(0 <= f.small_fraction <= 1, "demo.figshare.small_fraction", "must be in [0, 1]")
        _check(self.train_per_class >= 4, "demo.train_per_class", "must be >= 4")
        _check(self.test_per_class >= 1, "demo.test_per_class", "must be >= 1")
        _check(32 <= self.size <= 1024, "demo.size", "must be in [32, 1024]")
        for name in ("rgb_fraction", "blur_fraction"):
            _check(0 <= getattr(self, name) <= 1, f"demo.{name}", "must be in [0, 1]")
        for name in ("exact_duplicates", "near_duplicates", "leaked_duplicates"):
            _check(getattr(self, name) >= 0, f"demo.{name}", "must be >= 0")


@dataclass(frozen=True)
class FigshareIngestParams:
    # int16 -> 8 bit: each slice's own [low, high] percentiles map to 0 and 255 (clipped outside)
    window_percentiles: tuple[float, ...] = (0.5, 99.5)


@dataclass(frozen=True)
class IngestParams:
    max_pixels: int = 50_000_000  # larger images are quarantined as decompression bombs
    max_archive_bytes: int = 20 * 1024**3  # refuse a zip that would expand beyond this
    max_archive_members: int = 200_000  # refuse a zip with more entries than this
    min_side: int = 32  # px; images whose smaller side is below this are quarantined (never upscaled into data)
    workers: int = 0  # decoding processes; 0 = all cores
    figshare: FigshareIngestParams = field(default_factory=FigshareIngestParams)  # data.format: figshare

    def __post_init__(self):
        w = self.figshare.window_percentiles
        _check(len(w) == 2 and 0 <= w[0] < w[1] <= 100, "ingest.figshare.window_percentiles",
               f"expected [low, high] with 0 <= low < high <= 100, got {list(w)}")
        _check(self.max_pixels > 0, "ingest.max_pixels", "must be > 0")
        _check(self.max_archive_bytes > 0, "ingest.max_archive_bytes", "must be > 0")
        _check(self.max_archive_members > 0, "ingest.max_archive_members", "must be > 0")
        _check(self.min_side >= 1, "ingest.min_side", "must be >= 1")
        _check(self.workers >= 0, "ingest.workers", "must be >= 0")


@dataclass(frozen=True)
class AuditParams:
    blur_threshold: float = 50.0  # Laplacian variance below this is blurry (paper §3.2.3)
    histogram_samples: int = 100  # images per class drawn for the histogram plot (paper §3.3, Fig. 4)
    plane_features_px: int = 32  # side of the thumbnail the plane clustering looks at
    seed: int = 33  # plane clustering (KMeans random_state) and the histogram plot's sample
    workers: int = 0  # decoding processes; 0 = all cores

    def __post_init__(self):
        _check(self.blur_threshold >= 0, "audit.blur_threshold", "must be >= 0")
        _check(self.histogram_samples >= 1, "audit.histogram_samples", "must be >= 1")
        _check(8 <= self.plane_features_px <= 128, "audit.plane_features_px", "must be in [8, 128]")
        _check(self.workers >= 0, "audit.workers", "must be >= 0")


@dataclass(frozen=True)
class DedupParams:
    engine: Literal["fast", "difpy"] = "fast"  # whose groups the pipeline uses
    compare_engines: bool = True  # also run the other engine and report its counts
    similarity: str = "duplicates"  # difPy's criterion: 'duplicates' (MSE 0), 'similar' (MSE <= 5) or a number
    px_size: int = 50  # difPy compares bicubic px_size x px_size thumbnails
    rotations: bool = True  # also compare quarter turns (difPy: 0/90/180 of the 2nd image; fast: all four)
    same_dim: bool = True  # difPy's default: only compare images of equal sorted (height, width)
    cross_split: bool = True  # remove Training images that duplicate a Testing image (leakage)
    workers: int = 0

    def __post_init__(self):
        self.mse_threshold  # validates `similarity`
        _check(10 <= self.px_size <= 256, "dedup.px_size", "must be in [10, 256] (difPy refuses < 10)")
        _check(self.workers >= 0, "dedup.workers", "must be >= 0")

    @property
    def mse_threshold(self) -> float:
        """difPy's similarity names as MSE thresholds on 0-255 pixel values."""
        named = {"duplicates": 0.0, "similar": 5.0}
        if self.similarity in named:
            return named[self.similarity]
        try:
            value = float(self.similarity)
        except ValueError:
            raise ParamsError(
                f"dedup.similarity: expected 'duplicates', 'similar' or a number >= 0, got {self.similarity!r}"
            ) from None
        _check(value >= 0, "dedup.similarity", "must be >= 0")
        return value


@dataclass(frozen=True)
class BalanceParams:
    classes: tuple[str, ...] = ("glioma", "meningioma", "pituitary")  # classes cut by seeded sampling
    min: int = 700  # each listed class keeps randint(min, max) images (paper §4.2; code: seed 10)
    max: int = 900
    # explicit {class: images} overriding the draw for the classes it names: the paper's Table 2
    # (867/802/721) comes out of no seeded draw we can rerun (docs/paper_as_coded.md), so its profiles say it
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.counts is None:  # `counts: null` in YAML: no explicit counts
            object.__setattr__(self, "counts", {})
        _check(isinstance(self.counts, dict), "preprocess.balance.counts",
               f"expected a mapping {{class: images}}, got {self.counts!r}")
        for cls, n in self.counts.items():
            _check(isinstance(cls, str), "preprocess.balance.counts", f"class names must be strings, got {cls!r}")
            _check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"preprocess.balance.counts.{cls}",
                   f"expected an integer >= 1, got {n!r}")
        extra = sorted(set(self.counts) - set(self.classes))
        _check(not extra, "preprocess.balance.counts",
               f"class(es) {extra} not in preprocess.balance.classes {list(self.classes)}")


@dataclass(frozen=True)
class RotateParams:
    probability: float = 0.5  # share of images rotated (paper §4.3)
    max_degrees: float = 10.0  # uniform angle in [-max, +max]
    test: bool = False  # paper's code also rotated Testing images; corrected: never augment test
    whole_degrees: bool = False  # paper's code: randrange(-max, max), whole degrees -max..max-1


@dataclass(frozen=True)
class ClaheParams:
    enabled: bool = True
    clip_limit: float = 2.0  # OpenCV createCLAHE clipLimit (paper's code)
    tile_grid: int = 8  # tiles per side (paper's code: 8x8)


@dataclass(frozen=True)
class HistMatchParams:
    apply: bool = True  # paper's code computed the matched image but saved the CLAHE image
    # agnostic: one reference for every image, whatever its class. per_class: Training images are
    # matched to their own class's reference (paper §4.4.2 "intra-class"); Testing images still get
    # the agnostic Training reference, so no transform of a test image depends on its label
    reference: Literal["agnostic", "per_class"] = "agnostic"
    reference_images: int = 100  # random images averaged into each reference (paper §4.4.2)
    reference_splits: tuple[Literal["train", "test"], ...] = ("train",)  # paper's code: both splits


@dataclass(frozen=True)
class PreprocessParams:
    size: int = 256  # output side (paper §4.2)
    square_classes: tuple[str, ...] = ("glioma", "meningioma", "pituitary")  # need width == height
    aspect_tolerance: float = 0.1  # other classes: width/height within [1-tol, 1+tol] (paper: notumor 0.9-1.1)
    balance: BalanceParams = field(default_factory=BalanceParams)
    rotate: RotateParams = field(default_factory=RotateParams)
    clahe: ClaheParams = field(default_factory=ClaheParams)
    histmatch: HistMatchParams = field(default_factory=HistMatchParams)
    n4: bool = False  # N4 bias-field correction (SimpleITK); paper §4.5 found it unnecessary
    # resize_first: resize -> rotate -> CLAHE at the output size; resize_last: the paper's code,
    # rotate -> CLAHE at the native size -> resize (docs/paper_as_coded.md, "Data and preprocessing")
    order: Literal["resize_first", "resize_last"] = "resize_first"
    # auto: area when shrinking, bicubic when growing; bilinear: cv2.resize's default (paper's code)
    resize_interpolation: Literal["auto", "bilinear", "bicubic", "area"] = "auto"
    seed: int = 10  # paper's code: random.seed(10)
    workers: int = 0

    def __post_init__(self):
        _check(16 <= self.size <= 2048, "preprocess.size", "must be in [16, 2048]")
        _check(0 <= self.aspect_tolerance < 1, "preprocess.aspect_tolerance", "must be in [0, 1)")
        b = self.balance
        _check(0 < b.min <= b.max, "preprocess.balance", f"need 0 < min <= max, got min={b.min} max={b.max}")
        _check(0 <= self.rotate.probability <= 1, "preprocess.rotate.probability", "must be in [0, 1]")
        _check(0 <= self.rotate.max_degrees <= 180, "preprocess.rotate.max_degrees", "must be in [0, 180]")
        _check(not self.rotate.whole_degrees or self.rotate.max_degrees == int(self.rotate.max_degrees),
               "preprocess.rotate.max_degrees", "must be a whole number with rotate.whole_degrees: true")
        _check(self.clahe.clip_limit > 0, "preprocess.clahe.clip_limit", "must be > 0")
        _check(1 <= self.clahe.tile_grid <= 64, "preprocess.clahe.tile_grid", "must be in [1, 64]")
        _check(self.histmatch.reference_images >= 1, "preprocess.histmatch.reference_images", "must be >= 1")
        splits = self.histmatch.reference_splits
        _check(len(splits) >= 1, "preprocess.histmatch.reference_splits", "must name a split")
        _check(len(set(splits)) == len(splits), "preprocess.histmatch.reference_splits", "must not repeat a split")
        # rules of evidence: no Testing image may shape a transform that is applied (with apply:
        # false the reference is never built, so the paper's as-coded [train, test] stays valid)
        _check(not (self.histmatch.apply and "test" in splits), "preprocess.histmatch.reference_splits",
               "must be [train] when preprocess.histmatch.apply is true: a reference built from Testing "
               "images would carry test information into every matched image")
        for key, names in (("square_classes", self.square_classes), ("balance.classes", b.classes)):
            _check(len(set(names)) == len(names), f"preprocess.{key}", f"must not repeat a class, got {list(names)}")
        _check(self.seed >= 0, "preprocess.seed", "must be >= 0")
        _check(self.workers >= 0, "preprocess.workers", "must be >= 0")


@dataclass(frozen=True)
class LinkParams:
    # the figshare release (zip, inner zips or .mat folder; under data/raw, the stage's dependency) or its ingest
    # manifest.csv; absent: the link stage records that it did not run
    figshare: str = "data/raw/figshare"
    px_size: int = 32  # thumbnail side (the dedup engine's thumbnails)
    rank_floor: float = 0.6  # intensity ranks (0-1) below this are tied: background noise carries no identity
    flips: bool = True  # also compare the quarter turns and mirror images of each slice
    min_score: float = 0.95  # a match needs a rank correlation >= this
    min_margin: float = 0.02  # ... and this much above the best slice of any other patient
    workers: int = 0  # thumbnail decoding processes; 0 = all cores

    def __post_init__(self):
        _check(8 <= self.px_size <= 128, "link.px_size", "must be in [8, 128]")
        _check(0 <= self.rank_floor < 1, "link.rank_floor", "must be in [0, 1)")
        _check(-1 <= self.min_score <= 1, "link.min_score", "must be in [-1, 1] (a correlation)")
        _check(0 <= self.min_margin <= 2, "link.min_margin", "must be in [0, 2]")
        _check(self.workers >= 0, "link.workers", "must be >= 0")


SPLITS = ("train", "val", "test")  # the final splits, least to most held-out
SPLIT_METHODS = ("folders", "image", "patient", "cvind")


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.7  # the SD-Turbo study's 70/20/10 (methods image and patient)
    val: float = 0.2
    test: float = 0.1


@dataclass(frozen=True)
class SplitParams:
    # folders: the dataset's own Training/Testing folders (+ val carved from Training); image: random by
    # image (the SD-Turbo study's code); patient: grouped by patient, stratified by class; cvind: the
    # publisher's patient-wise fold `fold` is test (figshare's cvind.mat)
    method: Literal["folders", "image", "patient", "cvind"] = "folders"
    val_fraction: float = 0.0  # folders, cvind: share of the non-test images carved out as val (by patient)
    fractions: SplitFractions = field(default_factory=SplitFractions)  # image, patient: shares of all images
    seed: int = 42  # the SD-Turbo study's code: 42
    fold: int = 1  # cvind: the publisher's fold used as test (1-based, as cvind.mat numbers them)

    def __post_init__(self):
        _check(0 <= self.val_fraction < 1, "split.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        f = self.fractions
        for name in SPLITS:
            _check(0 <= getattr(f, name) <= 1, f"split.fractions.{name}", f"must be in [0, 1], got {getattr(f, name)}")
        total = f.train + f.val + f.test
        _check(abs(total - 1) < 1e-6, "split.fractions",
               f"must sum to 1, got {f.train} + {f.val} + {f.test} = {total:g}")
        _check(f.train > 0 and f.test > 0, "split.fractions", "train and test must be > 0")
        _check(self.seed >= 0, "split.seed", "must be >= 0")
        _check(self.fold >= 1, "split.fold", f"must be >= 1 (cvind.mat numbers its folds from 1), got {self.fold}")


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "demo": DemoParams,
    "ingest": IngestParams,
    "audit": AuditParams,
    "dedup": DedupParams,
    "link": LinkParams,
    "split": SplitParams,
    "preprocess": PreprocessParams,
}

# ---- loading ----------------------------------------------------------------------------------


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {msg}")


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def load(section: str, path: str | Path = "params.yaml", data: dict[str, Any] | None = None):
    """Load one params.yaml section as its dataclass; a missing section takes the defaults."""
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r}; known: {', '.join(SECTIONS)}")
    data = read_params(path) if data is None else data
    raw = data.get(section, {})
    return build(SECTIONS[section], raw if raw is not None else {}, section)


def build(cls: type, raw: Any, where: str):
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(names), n=1, cutoff=0.6)
        hint = f" (did you mean {where}.{close[0]}?)" if close else ""
        raise ParamsError(f"{where}: unknown key(s) {unknown}{hint}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ParamsError(f"{where}: {e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, where)
            except ParamsError:
                continue
        raise ParamsError(f"{where}: {value!r} does not fit {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. dedup.similarity: 2.5
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# the bundled demo set's truth file (synthmri.data.demo.TRUTH_FILE; a test checks they agree): a raw folder
# holding it is generated data, whatever the profile's name
DEMO_MARKER = "demo_truth.csv"
PROVENANCE = "provenance"  # the key of every stage's metrics that says what they came from


def provenance(data: dict[str, Any]) -> dict[str, Any]:
    """What a stage's metrics came from: the profile and the raw data. Recorded in every stage's metrics
    (`synthmri summary` labels from it), so a params.yaml switched since the run cannot relabel them."""
    raw = str((data.get("data") or {}).get("raw", DataParams.raw))
    return {"profile": data.get("profile_name"), "raw": raw, "demo_data": (Path(raw) / DEMO_MARKER).is_file()}


def check_raw(raw: str | Path, data: dict[str, Any]) -> dict[str, str]:
    """The raw dataset is there (a non-empty folder, or a file such as a .zip): return what was found.
    Else one line saying what to do, in the profile's words (`data.source`): DVC's own error for a missing
    dependency names only the path (the `raw_check` stage runs this before ingest)."""
    raw = Path(raw)
    if raw.is_file() or (raw.is_dir() and any(raw.iterdir())):
        return {"raw": raw.as_posix(), "format": "folder" if raw.is_dir() else "file"}
    cfg = load("data", data=data)
    profile = data.get("profile_name") or "?"
    tracked = Path(f"{raw}.dvc")
    if tracked.is_file():
        todo = f"DVC tracks it ({tracked}): `dvc pull {tracked}` fetches it from the remote"
    elif cfg.source:
        todo = f"get it: {cfg.source}"
    else:
        todo = "put the dataset there or point data.raw at it (-S data.raw=<path>)"
    if profile != "demo":
        todo += "; or run on the bundled demo data: dvc exp run -S profile=demo"
    what = "is an empty folder" if raw.is_dir() else "not found"
    raise FileNotFoundError(f"raw data {what}: {raw.as_posix()} (data.raw of profile {profile}); {todo}")


def workers(n: int) -> int | None:
    """params `workers: 0` means all cores."""
    return None if n == 0 else n
