"""Ingest the figshare brain-tumour release (`data.format: figshare`): .mat slices -> PNGs and a manifest.

Accepted as published: the outer archive (four inner zips + cvind.mat + README.txt), the four inner zips in
a folder, or a folder of `<n>.mat` files (any mix, found recursively). Zips are read in place, member by
member: an inner zip is copied to a temporary file one at a time, never the whole release. The Kaggle
ingest's zip rules hold (limits on members and declared bytes, counted over every level; links, special
files, encrypted members, absolute or `..` names refused); zips nest at most MAX_NESTING deep.

Each slice is decoded (`synthmri.data.figshare`), windowed to 8 bits by its own percentiles
(`ingest.figshare.window_percentiles`, the same rule for every slice) and written as a lossless PNG, with
its tumour mask beside it (255 = tumour), under OUT_DIR/slices/. The manifest's `relpath` is the slice's
name inside its innermost container (`12.mat`), the same whichever packaging came in; `source` says where
it was. `patient` is the decoded PID, `fold` the publisher's cvind fold (empty without cvind.mat), `split`
empty: the split stage assigns it. quarantine.csv's `path` is the file's `source` (inside the zips there is
no path on disk). Every file lands in exactly one of manifest.csv, quarantine.csv or
outside_layout.csv (not slices: cvind.mat, README.txt, ...), checked against an independent listing
(os.walk and each zip's own name list, nested zips read as streams) before anything is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmri.data import figshare as fs
from synthmri.data.ingest import (
    HIDDEN, MANIFEST_COLUMNS, OUTSIDE_NAMES_IN_METRICS, QUARANTINE_COLUMNS, _clean, _is_hidden, _kind, _listdir,
    _listing, _member_parts, _mismatch, _printable, _Source, dvc_cache_dir,
)
from synthmri.images import sha256_file, write_png
from synthmri.io import manifest_path, parallel_map, write_table
from synthmri.params import IngestParams
from synthmri.params import workers as n_workers

MAX_NESTING = 2  # zips inside zips: the outer release archive holds the inner ones, no deeper
SLICES_DIR = "slices"
MASK_SUFFIX = "_mask.png"
UNSPLIT = "unsplit"  # the metrics' split key: the split stage assigns train / val / test
NOT_A_ZIP = "not a readable zip archive"
TOO_DEEP = f"archive nested more than {MAX_NESTING} deep"
DUPLICATE = "duplicate slice name"  # the reason continues with ": also at <source>"


@dataclass(frozen=True)
class _Entry:
    source: str  # where it is, from the source: "<archive>.zip/<inner>.zip/12.mat" (the accounting key)
    name: str  # inside its innermost container (or the source folder): "12.mat"
    where: tuple[str, ...]  # ("file", path) | ("zip", zip file on disk, member name)
    reason: str = ""  # quarantine reason known before decoding


class _Scan:
    """Walks folders and zips; sorts every file into slices, cvind candidates, others and quarantine."""

    def __init__(self, cfg: IngestParams, tmp: Path, src: _Source):
        self.cfg, self.tmp, self.src = cfg, tmp, src
        self.slices: list[_Entry] = []
        self.cvind: list[_Entry] = []
        self.other: list[str] = []
        self.bad: list[_Entry] = []
        self.containers: list[str] = []
        self.members = self.bytes = 0

    def folder(self, d: Path, rel: str) -> None:
        for name in _listdir(d):
            p, r = d / name, f"{rel}{name}"
            kind = _kind(p, self.src)
            if kind == "dir":
                self.folder(p, f"{r}/")
            elif kind != "file":  # links to folders, links out of the source, broken links, sockets
                self.bad.append(_Entry(r, r, ("file", str(p)), kind))
            else:
                self.file(r, r, ("file", str(p)), p, depth=0)

    def file(self, source: str, name: str, where: tuple[str, ...], disk: Path | None, depth: int) -> None:
        base = source.rsplit("/", 1)[-1]
        if any(_is_hidden(part) for part in source.split("/")):
            self.bad.append(_Entry(source, name, where, HIDDEN))
        elif base.lower().endswith(".zip"):
            if depth >= MAX_NESTING:
                self.bad.append(_Entry(source, name, where, TOO_DEEP))
            else:
                self.archive(disk if disk is not None else self._spool(where, source), source, depth + 1)
        elif base.lower() == fs.CVIND_FILE:
            self.cvind.append(_Entry(source, name, where))
        elif base.lower().endswith(".mat"):
            self.slices.append(_Entry(source, name, where))
        else:
            self.other.append(source)

    def archive(self, path: Path, source: str, depth: int, is_source: bool = False) -> None:
        """Check a zip as the Kaggle ingest does (ValueError: refused), then sort its members."""
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            if is_source:
                raise ValueError(f"{path}: {NOT_A_ZIP} ({e}); expected the figshare release, its inner zips "
                                 "or a folder of .mat files") from None
            self.bad.append(_Entry(source, source, ("file", str(path)), f"{NOT_A_ZIP}: {e}"))
            return
        with zf:
            infos = zf.infolist()
            self.members += len(infos)
            self.bytes += sum(i.file_size for i in infos)
            if self.members > self.cfg.max_archive_members:
                raise ValueError(f"{source}: {self.members} members (all zips) exceed "
                                 f"ingest.max_archive_members={self.cfg.max_archive_members}")
            if self.bytes > self.cfg.max_archive_bytes:
                raise ValueError(f"{source}: zips would expand to {self.bytes} bytes, over "
                                 f"ingest.max_archive_bytes={self.cfg.max_archive_bytes}")
            seen = set()
            planned = []
            for info in infos:
                parts = _member_parts(Path(source), info)
                if info.is_dir():
                    continue
                if parts in seen:
                    raise ValueError(f"{source}: duplicate member {info.filename!r}")
                seen.add(parts)
                planned.append((info, "/".join(parts)))
        self.containers.append(source)
        for info, inner in planned:
            self.file(f"{source}/{inner}", inner, ("zip", str(path), info.filename), None, depth)

    def _spool(self, where: tuple[str, ...], source: str) -> Path:
        """Copy one zip member (a nested zip) to a temporary file, within its declared size."""
        fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".zip")
        with os.fdopen(fd, "wb") as out:
            out.write(_read(where, source))
        return Path(tmp)


def _read(where: tuple[str, ...], source: str) -> bytes:
    """A file's bytes, or a zip member's, refusing a member that expands past its declared size."""
    if where[0] == "file":
        return Path(where[1]).read_bytes()
    try:
        with zipfile.ZipFile(where[1]) as zf:
            info = zf.getinfo(where[2])
            with zf.open(info) as f:
                data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
        raise ValueError(f"{source}: zip member cannot be read: {e}") from None
    if len(data) > info.file_size:
        raise ValueError(f"{source}: member expands past its declared size ({info.file_size} bytes)")
    return data


# ---- decoding (in worker processes) -------------------------------------------------------------


def _decode(item: tuple) -> dict[str, Any]:
    """Decode one slice and write its PNGs; its manifest fields, or {"reason": why it is quarantined}."""
    where, source, max_pixels, min_side, window, classes, png, mask_png = item
    try:
        data = _read(where, source)
    except ValueError as e:
        return {"reason": f"unreadable: {e}"}
    try:
        s = fs.read_slice(data, max_pixels)
        h, w = s.image.shape
        if min(w, h) < min_side:
            raise fs.MatError(f"too small: {w}x{h} px, a side below ingest.min_side={min_side}")
        u8, lo, hi = fs.to_8bit(s.image, window)
        if s.cls not in classes:
            raise fs.MatError(f"class {s.cls} (label {s.label}) is not in data.classes {list(classes)}")
    except fs.MatError as e:
        return {"reason": str(e)}
    except Exception as e:  # a decoder tripping on a malformed file is bad input, not a crash
        return {"reason": f"unreadable: {type(e).__name__}: {e}"}
    write_png(png, u8)
    write_png(mask_png, s.mask.astype(np.uint8) * 255)
    return {"class": s.cls, "label": s.label, "patient": s.pid, "format": "PNG", "mode": "L", "width": w,
            "height": h, "frames": 1, "bytes": os.path.getsize(png), "sha256": sha256_file(png),
            "path": manifest_path(png), "mask": manifest_path(mask_png), "mask_pixels": int(s.mask.sum()),
            "window_lo": round(lo, 3), "window_hi": round(hi, 3), "source_bytes": len(data)}


# ---- entry point --------------------------------------------------------------------------------

EXTRA_COLUMNS = ("source", "label", "mask_pixels", "window_lo", "window_hi", "source_bytes")


def ingest_figshare(source: Path, out_dir: Path, cfg: IngestParams, classes: tuple[str, ...]) -> dict[str, Any]:
    """Inventory the figshare release at `source` into OUT_DIR/{manifest,quarantine,outside_layout}.csv and
    OUT_DIR/slices/; return the metrics."""
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source} (expected the figshare release: its zip, the "
                                "four brainTumorDataPublic_*.zip in a folder, or a folder of .mat files)")
    if source.is_dir() and os.path.realpath(out_dir).startswith(os.path.realpath(source) + os.sep):
        raise ValueError(f"the output {out_dir} lies inside the source {source}; choose another output folder")
    _clean(out_dir)
    shutil.rmtree(out_dir / SLICES_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extracted.", dir=out_dir))  # _clean removes a killed run's leftovers
    try:
        return _ingest(source, out_dir, cfg, classes, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ingest(source: Path, out_dir: Path, cfg: IngestParams, classes: tuple[str, ...], tmp: Path) -> dict[str, Any]:
    src = _Source(os.path.realpath(source if source.is_dir() else source.parent),
                  dvc_cache_dir(source) if source.is_dir() else None)
    scan = _Scan(cfg, tmp, src)
    metrics: dict[str, Any] = {"source": source.as_posix(), "format": "figshare"}
    if source.is_dir():
        metrics["source_kind"] = "folder"
        scan.folder(source, "")
    else:
        metrics["source_kind"] = "zip"
        scan.archive(source, source.name, 1, is_source=True)

    bad = list(scan.bad)
    folds, cvind_info = _cvind(scan, bad)
    slices, first = [], {}
    for e in sorted(scan.slices, key=lambda e: e.source):  # a name seen twice: the first source keeps it
        if e.name in first:
            bad.append(_Entry(e.source, e.name, e.where, f"{DUPLICATE}: also at {_printable(first[e.name])}"))
        else:
            first[e.name] = e.source
            slices.append(e)

    window = tuple(cfg.figshare.window_percentiles)
    slices_dir = out_dir / SLICES_DIR
    items = []
    for e in slices:
        stem = _printable(e.name)[: -len(".mat")]
        items.append((e.where, e.source, cfg.max_pixels, cfg.min_side, window, tuple(classes),
                      str(slices_dir / f"{stem}.png"), str(slices_dir / f"{stem}{MASK_SUFFIX}")))
    results = parallel_map(_decode, items, desc="ingest: .mat slices", workers=n_workers(cfg.workers))

    images, quarantined = [], []
    for e in bad:
        quarantined.append({"split": "", "class": "", "relpath": _printable(e.name), "path": _printable(e.source),
                            "reason": e.reason})
    for e, r in zip(slices, results):
        if "reason" in r:
            quarantined.append({"split": "", "class": "", "relpath": _printable(e.name),
                                "path": _printable(e.source), "reason": r["reason"]})
            continue
        n = fs.slice_number(e.name)
        fold = int(folds[n - 1]) if folds is not None and n is not None and 1 <= n <= len(folds) else ""
        images.append({**r, "split": "", "relpath": _printable(e.name), "source": _printable(e.source),
                       "fold": fold})
    in_quarantine = {r["path"] for r in quarantined}
    outside = scan.other + [e.source for e in scan.cvind if _printable(e.source) not in in_quarantine]
    _check_accounting(source, src, [r["source"] for r in images] + [r["path"] for r in quarantined],
                      [_printable(x) for x in outside + scan.containers])

    man = pd.DataFrame(sorted(images, key=lambda r: _order(r["relpath"])),
                       columns=[*MANIFEST_COLUMNS, *EXTRA_COLUMNS])
    write_table(man, out_dir / "manifest.csv")
    write_table(pd.DataFrame(sorted(quarantined, key=lambda r: r["path"]), columns=list(QUARANTINE_COLUMNS)),
                out_dir / "quarantine.csv")
    outside = sorted(_printable(x) for x in outside)
    write_table(pd.DataFrame({"name": outside}, columns=["name"]), out_dir / "outside_layout.csv")

    metrics.update(_metrics(man, quarantined, outside, scan, window, cvind_info, classes))
    return metrics


def _order(relpath: str) -> tuple:
    """Slices in release order (1.mat, 2.mat, ..., 10.mat), other names after them."""
    n = fs.slice_number(relpath)
    return (n is None, n or 0, relpath)


def _cvind(scan: _Scan, bad: list[_Entry]) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The folds of cvind.mat (None without one); an unreadable cvind.mat is quarantined."""
    if not scan.cvind:
        return None, None
    if len(scan.cvind) > 1:
        raise ValueError(f"more than one {fs.CVIND_FILE}: {sorted(e.source for e in scan.cvind)}; keep one")
    e = scan.cvind[0]
    try:
        folds = fs.read_cvind(_read(e.where, e.source))
    except ValueError as err:  # MatError, or a zip member that cannot be read
        bad.append(_Entry(e.source, e.name, e.where, f"{fs.CVIND_FILE}: {err}"))
        return None, {"file": _printable(e.source), "error": str(err)}
    return folds, {"file": _printable(e.source), "slices": int(folds.size)}


def _metrics(man: pd.DataFrame, quarantined: list[dict], outside: list[str], scan: _Scan, window, cvind_info,
             classes: tuple[str, ...]) -> dict[str, Any]:
    per_class = {c: int((man["class"] == c).sum()) for c in classes}
    patients = man.groupby("patient")["class"].agg(lambda s: sorted(set(s)))
    per_patient = man.groupby("patient").size()
    if cvind_info is not None and "error" not in cvind_info:
        known = man[man["fold"] != ""]
        n_folds = known.groupby("patient")["fold"].nunique()
        cvind_info.update(
            folds={int(k): int(v) for k, v in sorted(Counter(known["fold"].astype(int)).items())},
            slices_without_fold=int((man["fold"] == "").sum()),
            # the publisher's folds are patient-wise: a patient in two folds means a wrong cvind
            patients_in_several_folds=int((n_folds > 1).sum()),
        )
    sizes = Counter(f"{w}x{h}" for w, h in zip(man["width"], man["height"]))
    return {
        "archive": {"zips": len(scan.containers), "members": scan.members, "bytes": scan.bytes},
        "files": len(man) + len(quarantined),
        "images": len(man),
        "quarantined": len(quarantined),
        "outside_layout": {"count": len(outside), "names": outside[:OUTSIDE_NAMES_IN_METRICS],
                           "names_truncated": len(outside) > OUTSIDE_NAMES_IN_METRICS},
        "per_split_class": {UNSPLIT: per_class},
        "patients": {"count": int(len(patients)),
                     "per_class": {c: int(sum(c in v for v in patients)) for c in classes},
                     "with_several_classes": int(sum(len(v) > 1 for v in patients)),
                     "slices_min": int(per_patient.min()) if len(per_patient) else 0,
                     "slices_max": int(per_patient.max()) if len(per_patient) else 0},
        "sizes": dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "window_percentiles": list(window),
        "cvind": cvind_info,
        "quarantine_reasons": dict(sorted(Counter(r["reason"].split(":")[0] for r in quarantined).items())),
    }


# ---- accounting ---------------------------------------------------------------------------------


def _check_accounting(source: Path, src: _Source, rows: list[str], others: list[str]) -> None:
    """Every file, zip members included, in exactly one table row (`others`: outside_layout.csv and the zips
    themselves), against a listing made another way: os.walk for folders, each zip's own name list, nested
    zips opened as streams (not the spooled copies). A link is opened only where ingest follows it."""
    if source.is_dir():
        listing = []
        for rel in _listing(source):
            p = source / rel
            opens = not os.path.islink(p) or _kind(p, src) == "file"
            listing.extend(_expand(_printable(rel), lambda p=p: open(p, "rb"), 0, not opens))
    else:
        listing = _expand(source.name, lambda: open(source, "rb"), 0, False)
    problems = _mismatch("manifest.csv / quarantine.csv / outside_layout.csv", listing, [*rows, *others])
    if problems:
        raise RuntimeError(f"{source}: ingest's tables do not match a listing of the source (files changed "
                           "during the scan, or a bug in ingest); nothing written: " + "; ".join(problems))


def _expand(rel: str, opener, depth: int, link: bool) -> list[str]:
    """`rel`, and when it is a readable zip within the nesting limit, every member below it."""
    out = [rel]
    if link or depth >= MAX_NESTING or not rel.lower().endswith(".zip") or any(_is_hidden(p) for p in rel.split("/")):
        return out
    try:
        with opener() as f, zipfile.ZipFile(f) as zf:
            for name in zf.namelist():
                if name.endswith("/"):
                    continue
                member = "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
                out.extend(_expand(f"{rel}/{member}", lambda name=name, zf=zf: zf.open(name), depth + 1, False))
    except (zipfile.BadZipFile, OSError):
        pass  # an unreadable zip is one row itself
    return out
