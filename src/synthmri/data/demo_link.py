"""Demo data for the link stage: a Kaggle-layout export of the figshare demo's synthetic patients, with the truth.

The Kaggle set's tumour classes were exported from the figshare release with other intensity scaling and JPEG
compression, some resized, and split into Training/Testing by image, so patients straddle the two. This writer
does the same to the figshare demo (`demo_figshare`): it reads the slices back from the release it wrote, exports
a subset of them (own min-max window, then a random gamma and contrast, JPEG at a random quality, some resized,
a few mirrored or saved as 3-channel JPEGs), and adds images that come from no figshare slice: notumor images and
tumour images of other synthetic heads (as Kaggle's other sources), which the link stage must leave unmatched.

OUT_DIR/kaggle/{Training,Testing}/<class>/{Tr,Te}-xx_NNNN.jpg and OUT_DIR/kaggle/demo_truth.csv (the link
truth: which slice, which patient, what was done); OUT_DIR/figshare/ is the figshare demo release.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from synthmri.data.demo import _PLANS, PLANES, SPLIT_PREFIX, TRUTH_FILE, check_replaceable, render_slice
from synthmri.data.demo_figshare import OUTER_ZIP, make_figshare_demo
from synthmri.data.figshare import read_slice, slice_number
from synthmri.io import atomic_dir, read_table, write_table
from synthmri.params import DemoParams

KAGGLE_DIR, FIGSHARE_DIR = "kaggle", "figshare"
# figshare: the slice an image was exported from ("12.mat"), empty for an unrelated image; patient: its PID
TRUTH_COLUMNS = ("relpath", "split", "class", "figshare", "patient", "detail")
EXPORT_FRACTION = 0.85  # share of the figshare slices exported (Kaggle: most of the 3,064)
TEST_FRACTION = 0.2  # share of the exported images in Testing, drawn by image: patients straddle (Kaggle: ~19 %)
RESIZE_FRACTION = 0.3
RESIZE_SCALES = (0.5, 0.75)
MIN_RESIZED = 48  # px: never resized below this (ingest quarantines images under ingest.min_side)
MIRROR_FRACTION = 0.05
RGB_FRACTION = 0.1
UNRELATED_TUMOUR_FRACTION = 0.15  # per tumour class, images from other heads (Kaggle's other sources)
NOTUMOR_FRACTION = 0.3  # notumor images, as a share of the exported slices


def _release_slices(zip_path: Path) -> dict[str, tuple[np.ndarray, str, str]]:
    """{"12.mat": (int16 image, class, PID)} read back from the demo release (outer zip of inner zips)."""
    out = {}
    with zipfile.ZipFile(zip_path) as outer:
        for name in outer.namelist():
            if not name.endswith(".zip"):
                continue
            with zipfile.ZipFile(io.BytesIO(outer.read(name))) as inner:
                for member in inner.namelist():
                    s = read_slice(inner.read(member), 10**8)
                    out[member] = (s.image, s.cls, s.pid)
    return dict(sorted(out.items(), key=lambda kv: slice_number(kv[0])))


def _export(image: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """One slice as Kaggle's exporter might have written it: min-max to 8 bits, a monotone intensity change,
    maybe resized or mirrored, JPEG at a random quality (the JPEG bytes and what was done)."""
    x = image.astype(np.float64)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1.0)
    gamma, top = rng.uniform(0.6, 1.6), rng.uniform(0.75, 1.0)
    u8 = np.round(255 * top * x**gamma).astype(np.uint8)
    detail = [f"gamma {gamma:.2f}", f"max {255 * top:.0f}"]
    resize, scale = rng.random() < RESIZE_FRACTION, float(rng.choice(RESIZE_SCALES))
    side = int(round(u8.shape[0] * scale))
    if resize and side >= MIN_RESIZED:
        u8 = cv2.resize(u8, (side, side), interpolation=cv2.INTER_AREA)
        detail.append(f"resized x{scale:g}")
    if rng.random() < MIRROR_FRACTION:
        u8 = np.ascontiguousarray(u8[:, ::-1])
        detail.append("mirrored")
    quality = int(rng.integers(70, 96))
    detail.append(f"jpeg q{quality}")
    return _jpeg(u8, quality, rgb=rng.random() < RGB_FRACTION), ", ".join(detail)


def _jpeg(u8: np.ndarray, quality: int, rgb: bool) -> bytes:
    img = Image.fromarray(u8)
    buf = io.BytesIO()
    (img.convert("RGB") if rgb else img).save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _unrelated(cfg: DemoParams, cls: str, k: int, rng: np.random.Generator) -> tuple[bytes, str]:
    plane = PLANES[int(rng.integers(len(PLANES)))] if cls != "notumor" else "axial"
    img, _ = render_slice(np.random.default_rng([cfg.seed, 25, _PLANS[cls].code, k]), cls, plane, cfg.size, cfg.size)
    u8 = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    quality = int(rng.integers(70, 96))
    return _jpeg(u8, quality, rgb=False), f"unrelated {plane} {cls}, jpeg q{quality}"


def make_kaggle_from_figshare(out_dir: Path, cfg: DemoParams) -> dict:
    """Write OUT_DIR/figshare (the figshare demo) and OUT_DIR/kaggle (its Kaggle-layout export, with the truth);
    return counts, the patients in both splits and the Testing images whose patient is in Training."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or set(p.name for p in out_dir.iterdir()) - {KAGGLE_DIR, FIGSHARE_DIR}):
        raise ValueError(f"{out_dir} exists and is not a kaggle-from-figshare demo; refusing to overwrite it")
    for sub in (KAGGLE_DIR, FIGSHARE_DIR):
        check_replaceable(out_dir / sub)
    with atomic_dir(out_dir) as tmp:  # the old folder is replaced only by a complete one
        make_figshare_demo(tmp / FIGSHARE_DIR, cfg)
        truth = _write_kaggle(tmp / KAGGLE_DIR, _release_slices(tmp / FIGSHARE_DIR / OUTER_ZIP), cfg)
    return {"format": "kaggle-from-figshare", **truth_counts(truth)}


def _write_kaggle(root: Path, slices: dict, cfg: DemoParams) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 24])
    names = list(slices)
    exported = sorted(rng.permutation(len(names))[: int(round(EXPORT_FRACTION * len(names)))].tolist())
    items = []  # (class, figshare name, patient, bytes, detail)
    for i in exported:
        image, cls, pid = slices[names[i]]
        data, detail = _export(image, np.random.default_rng([cfg.seed, 26, i]))
        items.append((cls, names[i], pid, data, detail))
    per_class = Counter(cls for cls, *_ in items)
    extra = {c: int(round(UNRELATED_TUMOUR_FRACTION * n)) for c, n in sorted(per_class.items())}
    extra["notumor"] = int(round(NOTUMOR_FRACTION * len(items)))
    for cls, n in extra.items():
        for k in range(n):
            data, detail = _unrelated(cfg, cls, k, np.random.default_rng([cfg.seed, 27, _PLANS[cls].code, k]))
            items.append((cls, "", "", data, detail))
    order = rng.permutation(len(items))  # file numbers say nothing about the source
    testing = set(order[: int(round(TEST_FRACTION * len(items)))].tolist())
    counters: Counter = Counter()
    rows = []
    for k in order:
        cls, source, pid, data, detail = items[k]
        split = "Testing" if k in testing else "Training"
        counters[split, cls] += 1
        rel = f"{split}/{cls}/{SPLIT_PREFIX[split]}-{_PLANS[cls].abbrev}_{counters[split, cls]:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rows.append({"relpath": rel, "split": split, "class": cls, "figshare": source, "patient": pid,
                     "detail": detail})
    truth = pd.DataFrame(sorted(rows, key=lambda r: r["relpath"]), columns=list(TRUTH_COLUMNS))
    write_table(truth, root / TRUTH_FILE)
    return truth


def truth_counts(truth: pd.DataFrame) -> dict:
    """What the link stage should find: images per split and class that came from a slice, the patients in
    both Training and Testing, and the Testing images whose patient is in Training."""
    linked = truth[truth["patient"] != ""]
    train = set(linked.loc[linked["split"] == "Training", "patient"])
    test = linked[linked["split"] == "Testing"]
    return {
        "images": len(truth),
        "from_figshare": {s: {c: int(n) for c, n in sorted(Counter(linked.loc[linked["split"] == s, "class"]).items())}
                          for s in ("Training", "Testing")},
        "unrelated": int((truth["patient"] == "").sum()),
        "patients_in_both": len(train & set(test["patient"])),
        "test_images_with_patient_in_train": int(test["patient"].isin(train).sum()),
    }


def read_truth(kaggle_root: Path) -> pd.DataFrame:
    return read_table(Path(kaggle_root) / TRUTH_FILE)
