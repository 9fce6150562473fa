"""The fidelity stage (paper §5.1.3, §6.1, Tables 3 and 4): per class, generated vs real images.

Reference set of a class (the paper's): its preprocessed Training images, `status == kept` rows of
the preprocess manifest with `split == train`; the same for every generator, so numbers compare
across experiments. The real-vs-real floor the paper's notebooks also reported is its preprocessed
Testing images against that reference. Generated images are resized twice on their way here (the
generator trains at its image size and `generate` resizes its samples to `generate.out_size`:
256 -> 128 -> 256 in the paper), which alone raises FID; the resampled floor passes the Testing
images through the same two resize ops, so it is the floor a generated set can be held to. The two
sizes are read from the generate stage's manifests (`trained_size`, `size` on every row), not params:
they describe the images that were actually made. All metrics use one extractor (torch-fidelity's FID Inception, from `models/pretrained/`):
FID, KID and precision/recall on its 2048-d pool features, IS on its logits.

Outputs: the metrics JSON (a key per class, then `summary`, `reference`, `extractor`,
`feature_cache`), `<plots>/memorisation_<class>.png` (closest synthetic-real pairs) and
`<plots>/memorisation.csv` (every synthetic file: its nearest real images, or why it was not used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console

from synthmri.fidelity import memorisation as mem
from synthmri.fidelity import metrics as M
from synthmri.fidelity.config import FidelityParams
from synthmri.fidelity.features import INCEPTION, FeatureCache, ImageSet, build_extractor, extract, load_images
from synthmri.io import read_table, write_json, write_table

REQUIRED = ("split", "class", "status", "out_path")
SYNTHETIC_MANIFEST = "manifest.csv"
SYNTHETIC_SUFFIXES = (".png", ".jpg", ".jpeg")
SIZE_COLUMNS = ("trained_size", "size")  # on every row of the generate stage's manifest (generative/sample.py)
REFERENCE = {
    "real": "the class's preprocessed Training images (split train, status kept) of the preprocess manifest",
    "real_floor": "the class's preprocessed Testing images (split test, status kept) against that reference",
    "real_floor_resampled": "the same Testing images resized as generated images are (see `resample`), against that reference",
    "input": "grayscale uint8 PNG repeated to 3 channels, resized by the extractor to 299x299",
}
RESERVED = ("summary", "reference", "extractor", "feature_cache")  # top-level keys beside the classes
_err = Console(stderr=True)


@dataclass(frozen=True)
class Resample:
    """The sizes a generated image passes through: trained at `train_size`, saved at `out_size`."""

    train_size: int  # the generator's training side (paper §5.1.1: 128)
    out_size: int  # the saved samples' side, generate.out_size (paper §5.1.3: 256)

    @classmethod
    def from_manifests(cls, synthetic_dir: Path, classes: Sequence[str]) -> "Resample | None":
        """The sizes the generate stage recorded in `<synthetic_dir>/<class>/manifest.csv`, one for all classes.

        None (no resampled floor) when a class's folder has no manifest: its images did not come from
        the generate stage, so nothing says how they were resized. A manifest without the size columns,
        or sizes that differ between rows or classes, stop the stage naming the file.
        """
        seen: dict[tuple[int, int], Path] = {}
        for c in classes:
            path = Path(synthetic_dir) / c / SYNTHETIC_MANIFEST
            if not path.is_file():
                _err.print(f"fidelity: no {path}, so no record of how the generated images were resized: "
                           "the resampled floor is not computed")
                return None
            df = read_table(path)
            missing = [k for k in SIZE_COLUMNS if k not in df.columns]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; expected the generate stage's manifest "
                                 f"(rerun generate@{c})")
            pairs = df[list(SIZE_COLUMNS)].drop_duplicates()
            if len(pairs) > 1:
                raise ValueError(f"{path}: rows disagree on {'/'.join(SIZE_COLUMNS)}: "
                                 f"{sorted(map(tuple, pairs.astype(str).to_numpy()))}; expected one generate run")
            if len(pairs) == 0:
                continue  # no images: evaluate stops on the empty class with its own message
            try:
                pair = tuple(int(v) for v in pairs.iloc[0])
                if min(pair) < 1:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}: {'/'.join(SIZE_COLUMNS)} must be positive integers, got "
                                 f"{tuple(pairs.iloc[0])}") from None
            seen.setdefault(pair, path)
            if len(seen) > 1:
                (a, pa), (b, pb) = seen.items()
                raise ValueError(f"{pb}: {'/'.join(SIZE_COLUMNS)} = {b[0]}/{b[1]}, but {pa} says {a[0]}/{a[1]}; "
                                 "every class's images must be generated at the same sizes")
        return cls(*next(iter(seen))) if seen else None

    @property
    def tag(self) -> str:
        """Names the transform in the feature cache key (bump the version if the ops change)."""
        return f"resample/pil-bicubic-{self.train_size}/torch-bicubic-{self.out_size}/v1"

    def to_dict(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "out_size": self.out_size,
                "ops": f"Pillow bicubic to {self.train_size} px (generative/data.py), then /255, torch bicubic to "
                       f"{self.out_size} px, clamp, round to uint8 (generative/sample.py to_uint8)",
                "not_applied": "generate.paper_as_coded's mirror and JPEG (orientation/compression, not size)"}


def resample_like_generated(img: np.ndarray, r: Resample) -> np.ndarray:
    """uint8 (H, W) -> uint8 (out_size, out_size) by the generator pipeline's own resize ops.

    The same steps, in the same libraries, as generative/data.py `_load` (Pillow bicubic, which
    antialiases when shrinking) and generative/sample.py `to_uint8` (torch bicubic, antialiased only
    when shrinking, clamp, round); tests check the two agree byte for byte.
    """
    if img.shape != (r.train_size, r.train_size):
        img = np.asarray(Image.fromarray(img).resize((r.train_size, r.train_size), Image.Resampling.BICUBIC))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).float()[None, None] / 255.0  # ddpm.py: uint8 / 255
    if x.shape[-1] != r.out_size:
        x = F.interpolate(x, size=(r.out_size, r.out_size), mode="bicubic", align_corners=False,
                          antialias=r.out_size < x.shape[-1])
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)[0, 0].numpy()


def resampled_set(s: ImageSet, r: Resample) -> ImageSet:
    """`s` resized as generated images are; digests carry the transform, so the cache keeps both apart."""
    return ImageSet(f"{s.name} resampled {r.train_size}->{r.out_size}", list(s.paths),
                    [resample_like_generated(a, r) for a in s.images], [f"{d}|{r.tag}" for d in s.digests])


def evaluate(processed_manifest: Path, synthetic_dir: Path, out_json: Path, plots_dir: Path, cfg: FidelityParams,
             classes: Sequence[str], *, extractor_name: str = INCEPTION,
             resample: Resample | None = None, provenance: dict[str, Any] | None = None,
             folders: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Run the stage for every class; write the JSON, the PNGs and the CSV; return the metrics.

    `resample`: the generator's sizes, for the resampled floor (None: that floor is not computed).
    `provenance`: `synthmri.params.provenance` of the run, recorded in the JSON (the summary labels from it).
    `folders`: class -> the generator folders pooled into it (a task's per-source generators); default its own.
    """
    from synthmri.runtime import resolve_device, set_threads
    from synthmri.params import workers as n_workers

    processed_manifest, synthetic_dir, plots_dir = Path(processed_manifest), Path(synthetic_dir), Path(plots_dir)
    clash = sorted(set(classes) & set(RESERVED))
    if clash:
        raise ValueError(f"class name(s) {clash} collide with keys of the metrics JSON ({', '.join(RESERVED)})")
    df = read_table(processed_manifest)
    _check_manifest(df, processed_manifest)
    plan = {c: (_real_paths(df, c, "train"), _real_paths(df, c, "test"),
                [p for f in (folders or {}).get(c, (c,)) for p in synthetic_paths(synthetic_dir, f)])
            for c in classes}
    for c, (train, _, synth) in plan.items():
        if len(train) < 2:
            raise ValueError(f"{processed_manifest}: class {c!r} has {len(train)} kept Training image(s); "
                             "the reference set needs at least 2")
        if len(synth) < 2:
            raise ValueError(f"{synthetic_dir / c}: {len(synth)} synthetic image(s) for class {c!r}; need at least 2 "
                             f"(run the generate@{c} stage first)")

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    extractor = build_extractor(device, weights=None if cfg.random_weights else cfg.weights,
                                random_seed=cfg.weights_seed if cfg.random_weights else None, name=extractor_name)
    cache = FeatureCache(cfg.cache_dir)
    workers = n_workers(cfg.workers)

    per_class: dict[str, Any] = {}
    tables: list[pd.DataFrame] = []
    seconds = {"real": 0.0, "synthetic": 0.0}
    for c, paths in plan.items():
        per_class[c] = _one_class(c, paths, extractor, cache, cfg, plots_dir, workers, tables, seconds, resample)

    write_table(pd.concat(tables, ignore_index=True), plots_dir / "memorisation.csv")
    _err.print(f"fidelity: real-set features {seconds['real']:.1f} s ({cache.hits} set(s) from cache, "
               f"{cache.misses} extracted), synthetic features {seconds['synthetic']:.1f} s")
    out = {  # one top-level key per class (`dvc exp show`: glioma.fid, ...), then the rest
        **per_class,
        "summary": summarise(per_class),
        "reference": {**REFERENCE, "resample": resample.to_dict() if resample else None},
        "extractor": {"name": extractor.name, "weights": "random (Kaiming-normal, seed "
                      f"{cfg.weights_seed}): demo numbers, comparable with nothing" if cfg.random_weights else cfg.weights,
                      "random_weights": cfg.random_weights,  # the report's and summary's banner reads this
                      "weights_sha256": extractor.weights_sha256, "layers": extractor.layers, "device": device.type,
                      "weights_file": extractor.weights_file},  # full digest, and verified: sha256 | prefix | none
        "feature_cache": {"hits": cache.hits, "misses": cache.misses},  # params.yaml holds the settings
        **({"provenance": provenance} if provenance is not None else {}),
    }
    write_json(out_json, out)
    return out


def _one_class(c: str, paths: tuple[list[str], list[str], list[str]], extractor, cache: FeatureCache,
               cfg: FidelityParams, plots_dir: Path, workers: int | None, tables: list, seconds: dict,
               resample: Resample | None = None) -> dict[str, Any]:
    """Decode, extract (real sets through the cache), measure and check memorisation for class `c`."""
    px = cfg.memorisation.px_size
    train = load_images(f"{c} real train", paths[0], px, workers)
    test = load_images(f"{c} real test", paths[1], px, workers)
    synth = load_images(f"{c} synthetic", paths[2], px, workers)
    for s in (train, synth):
        if len(s) < 2:
            raise ValueError(f"class {c!r}: only {len(s)} readable image(s) in {s.name}; unreadable: {s.rejected[:3]}")
    t0 = time.perf_counter()
    f_train = cache.features(extractor, train, cfg.batch_size)
    f_test = cache.features(extractor, test, cfg.batch_size) if len(test) else None
    f_test_rs = cache.features(extractor, resampled_set(test, resample), cfg.batch_size) \
        if len(test) and resample is not None else None
    t1 = time.perf_counter()
    f_syn = extract(extractor, synth.images, cfg.batch_size, f"features {synth.name}")
    seconds["real"] += t1 - t0
    seconds["synthetic"] += time.perf_counter() - t1

    layer = extractor.layers["fid"]
    result = class_metrics(f_syn, f_train, f_test, layer, extractor.layers["isc"], cfg, f_test_resampled=f_test_rs)
    nearest = mem.find_nearest(synth, f_syn[layer], train, f_train[layer], cfg.memorisation)
    if len(test):  # the criteria's false-alarm rate on new real images
        reference = mem.find_nearest(test, f_test[layer], train, f_train[layer], cfg.memorisation)
    else:
        reference = mem.Nearest(*(np.zeros(0),) * 6)
    result["memorisation"] = mem.summarise(nearest, reference, cfg.memorisation)
    own = mem.own_source(synth, train, synthetic_sources(Path(paths[2][0]).parent, synth.paths), cfg.memorisation)
    if own is not None:
        result["memorisation"]["own_source"] = own
    result[M.MEMORISED_SHARE] = result["memorisation"]["pixel"]["share"]
    result["images"] = {"real_train": len(train), "real_test": len(test), "synthetic": len(synth),
                        "real_train_unreadable": len(train.rejected), "real_test_unreadable": len(test.rejected),
                        "synthetic_unreadable": len(synth.rejected)}
    if cfg.memorisation.pairs_shown:
        mem.plot_pairs(plots_dir / f"memorisation_{c}.png", c, synth, train, nearest, cfg.memorisation)
    tables.append(mem.table(c, synth, train, nearest, cfg.memorisation))
    if train.rejected or test.rejected:
        tables.append(_rejected_rows(c, train, test))
    return result


def class_metrics(f_syn: dict, f_train: dict, f_test: dict | None, layer_fid: str, layer_is: str,
                  cfg: FidelityParams, *, f_test_resampled: dict | None = None) -> dict[str, Any]:
    """Every number of one class from its feature sets (the resampled Testing set optional)."""
    g, r = f_syn[layer_fid], f_train[layer_fid]
    kid_args = {"subsets": cfg.kid_subsets, "subset_size": cfg.kid_subset_size, "seed": cfg.seed}
    out: dict[str, Any] = {
        M.FID: M.fid(g, r),
        M.FID_REAL_FLOOR: None,
        M.KID: M.kid(g, r, **kid_args),
        M.KID_REAL_FLOOR: None,
        M.FID_REAL_FLOOR_RESAMPLED: None,
        M.KID_REAL_FLOOR_RESAMPLED: None,
        M.IS_REAL: M.inception_score(f_train[layer_is], splits=cfg.isc_splits, seed=cfg.seed),
        M.IS_GENERATED: M.inception_score(f_syn[layer_is], splits=cfg.isc_splits, seed=cfg.seed),
        M.IS_REAL_PAPER: M.inception_score_paper(f_train[layer_is]),
        M.IS_GENERATED_PAPER: M.inception_score_paper(f_syn[layer_is]),
    }
    out.update(M.precision_recall(g, r, neighborhood=cfg.prc_neighborhood))
    if f_test is not None and len(f_test[layer_fid]) >= 2:  # paper §6.1: Testing vs Training, the floor
        out[M.FID_REAL_FLOOR] = M.fid(f_test[layer_fid], r)
        out[M.KID_REAL_FLOOR] = M.kid(f_test[layer_fid], r, **kid_args)
    if f_test_resampled is not None and len(f_test_resampled[layer_fid]) >= 2:  # same images, resized as generated
        out[M.FID_REAL_FLOOR_RESAMPLED] = M.fid(f_test_resampled[layer_fid], r)
        out[M.KID_REAL_FLOOR_RESAMPLED] = M.kid(f_test_resampled[layer_fid], r, **kid_args)
    return out


def summarise(per_class: dict[str, Any]) -> dict[str, Any]:
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    n_syn = sum(r["memorisation"]["images"] for r in per_class.values())
    copies = sum(r["memorisation"]["pixel"]["near_copies"] for r in per_class.values())
    return {
        "fid_mean": mean(r[M.FID] for r in per_class.values()),
        "fid_real_floor_mean": mean(r[M.FID_REAL_FLOOR] for r in per_class.values()),
        "fid_real_floor_resampled_mean": mean(r.get(M.FID_REAL_FLOOR_RESAMPLED) for r in per_class.values()),
        "kid_mean": mean(r[M.KID]["mean"] for r in per_class.values()),
        "is_generated_mean": mean(r[M.IS_GENERATED]["mean"] for r in per_class.values()),
        "memorised_share": copies / n_syn if n_syn else 0.0,
        "classes": len(per_class),
    }


# ---- inputs ---------------------------------------------------------------------------------------


def _check_manifest(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected the preprocess manifest "
                         "(run `synthmri preprocess` first)")


def _real_paths(df: pd.DataFrame, cls: str, split: str) -> list[str]:
    rows = df[(df["class"] == cls) & (df["split"] == split) & (df["status"] == "kept")]
    return [str(p) for p in rows["out_path"]]


def synthetic_paths(synthetic_dir: Path, cls: str) -> list[str]:
    """The files the generate stage wrote for `cls`: its manifest's list, else the folder's images, sorted."""
    folder = Path(synthetic_dir) / cls
    manifest = folder / SYNTHETIC_MANIFEST
    if manifest.is_file():
        listed = read_table(manifest)
        if "path" not in listed.columns:
            raise ValueError(f"{manifest}: no 'path' column; expected the generate stage's manifest")
        return [(folder / Path(str(p)).name).as_posix() for p in listed["path"]]  # robust to the cwd it ran in
    if not folder.is_dir():
        raise FileNotFoundError(f"no synthetic images for class {cls!r}: {folder} does not exist "
                                f"(run the generate@{cls} stage first)")
    return sorted(p.as_posix() for p in folder.iterdir() if p.suffix.lower() in SYNTHETIC_SUFFIXES)


def synthetic_sources(folder: Path, paths: list[str]) -> dict[str, str]:
    """Synthetic path -> the real image img2img started from (the manifest's `source` column), if recorded."""
    manifest = Path(folder) / SYNTHETIC_MANIFEST
    if not manifest.is_file():
        return {}
    listed = read_table(manifest)
    if "source" not in listed.columns:
        return {}
    named = {(Path(folder) / Path(str(p)).name).as_posix(): str(s) for p, s in zip(listed["path"], listed["source"])}
    return {p: named[p] for p in paths if named.get(p)}


def _rejected_rows(cls: str, *sets: ImageSet) -> pd.DataFrame:
    rows = [{"class": cls, "path": p, "status": f"unreadable ({s.name})", "reason": why}
            for s in sets for p, why in s.rejected]
    return pd.DataFrame(rows, columns=["class", "path", "status", "reason"])
