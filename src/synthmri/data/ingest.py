"""Ingest: inventory a Kaggle-layout dataset (a folder, or a .zip of one) into two tables.

Every file found under Training/ and Testing/ lands in exactly one of `manifest.csv` (a usable image,
decoded once here) or `quarantine.csv` (with the reason); files outside those folders are counted and
named. Later stages read the manifest and never rescan folders (paper §3.1: the Kaggle set,
Training 5,712 and Testing 1,311 images in four class folders).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import pandas as pd

from synthmri import SPLITS
from synthmri.data.images import ImageError, open_image, sha256_file, to_gray
from synthmri.io import manifest_path, parallel_map, write_table
from synthmri.params import IngestParams
from synthmri.params import workers as n_workers

MANIFEST_COLUMNS = (
    "split", "class", "relpath", "path", "format", "mode", "width", "height", "frames", "bytes", "sha256",
)
QUARANTINE_COLUMNS = ("split", "class", "relpath", "path", "reason")
OUTSIDE_COLUMNS = ("name",)
OUTSIDE_NAMES_IN_METRICS = 100  # the full list is in outside_layout.csv

# Quarantine reasons decided before decoding; decoding adds images.ImageError's messages
# ("empty file", "not an image", "truncated: ...", "decompression bomb: WxH exceeds N pixels", ...).
HIDDEN = "hidden/system file"
LINK_OUTSIDE = "link outside source"
BROKEN_LINK = "broken link"
LINK_LOOP = "link loop"
NOT_REGULAR = "not a regular file"
NOT_IN_CLASS = "not in a class folder"
BAD_NAME = "file name is not valid UTF-8"

_SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "system volume information"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_LAYOUT = "Training/<class>/ and Testing/<class>/"


@dataclass(frozen=True)
class Found:
    """One file found under a split folder."""

    split: str  # train | test
    cls: str  # class folder, "" when the file is not in one
    relpath: str  # dataset-relative POSIX path, as on disk (no Unicode normalisation)
    path: Path  # where it is on disk (links inside the source are kept, not resolved)
    reason: str = ""  # quarantine reason known before decoding; "" = decode it


# ---- entry point ------------------------------------------------------------------------------


def ingest(source: Path, out_dir: Path, cfg: IngestParams, classes: tuple[str, ...]) -> dict[str, Any]:
    """Inventory `source` into OUT_DIR/{manifest,quarantine,outside_layout}.csv; return the metrics."""
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source} (expected a Kaggle-layout folder or a .zip of one)")
    extracted = out_dir / "extracted"
    if _within(os.path.realpath(source), os.path.realpath(extracted)):
        raise ValueError(f"source {source} lies inside {extracted}, which ingest replaces; copy it elsewhere first")
    _clean(out_dir)

    metrics: dict[str, Any] = {"source": source.as_posix()}
    if source.is_dir():  # read in place, never copied
        top = source
        metrics["source_kind"] = "folder"
    elif source.is_file():
        metrics["source_kind"] = "zip"
        metrics["archive"] = extract_zip(source, extracted, cfg)
        top = extracted
    else:
        raise ValueError(f"{source}: not a folder or a .zip archive")

    top_real = os.path.realpath(top)
    root, split_dirs = _layout(top, source, classes, top_real)
    found = _scan_splits(split_dirs, classes, top_real, source)
    outside = _outside_layout(top, root, split_dirs, top_real)

    todo = [f for f in found if not f.reason]
    results = parallel_map(
        _inspect,
        [(str(f.path), cfg.max_pixels) for f in todo],
        desc="ingest: decoding",
        workers=n_workers(cfg.workers),
    )
    decoded = dict(zip((f.relpath for f in todo), results, strict=True))

    images, quarantined = [], []
    for f in found:
        info = decoded.get(f.relpath, {"reason": f.reason})
        row = {"split": f.split, "class": f.cls, "relpath": _printable(f.relpath),
               "path": _printable(manifest_path(f.path))}
        if "reason" in info:
            quarantined.append({**row, "reason": info["reason"]})
        else:
            images.append({**row, **info})
    assert len({f.relpath for f in found}) == len(found) == len(images) + len(quarantined), "a file lost or doubled"

    order = itemgetter("split", "class", "relpath")  # deterministic row order
    write_table(pd.DataFrame(sorted(images, key=order), columns=list(MANIFEST_COLUMNS)), out_dir / "manifest.csv")
    write_table(
        pd.DataFrame(sorted(quarantined, key=order), columns=list(QUARANTINE_COLUMNS)), out_dir / "quarantine.csv"
    )
    write_table(pd.DataFrame({"name": outside}, columns=list(OUTSIDE_COLUMNS)), out_dir / "outside_layout.csv")

    per_split_class = {s: {c: 0 for c in classes} for s in SPLITS.values()}
    for r in images:
        per_split_class[r["split"]][r["class"]] += 1
    metrics.update(
        dataset_root="" if root == top else root.name,  # the one wrapping folder, if any
        split_folders={split: d.name for split, d in split_dirs.items()},
        files=len(found),
        images=len(images),
        quarantined=len(quarantined),
        outside_layout={"count": len(outside), "names": outside[:OUTSIDE_NAMES_IN_METRICS],
                        "names_truncated": len(outside) > OUTSIDE_NAMES_IN_METRICS},
        per_split_class=per_split_class,
        # "truncated: image file is truncated (20 bytes...)" counts as "truncated"
        quarantine_reasons=dict(sorted(Counter(r["reason"].split(":")[0] for r in quarantined).items())),
    )
    return metrics


def _clean(out_dir: Path) -> None:
    """Remove what an earlier run wrote, so a failed or partial run never leaves a stale mix."""
    if not out_dir.exists():
        return
    for p in out_dir.iterdir():
        if p.name == "extracted" or p.name.startswith(".extracted."):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        elif p.name in ("manifest.csv", "quarantine.csv", "outside_layout.csv"):
            p.unlink()


# ---- decoding (in worker processes) -----------------------------------------------------------


def _inspect(item: tuple[str, int]) -> dict[str, Any]:
    """Decode one file fully; its manifest fields, or {"reason": why it is quarantined}."""
    path, max_pixels = item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd metadata; real failures raise
            with open_image(path, max_pixels) as img:
                info = {"format": img.format or "", "mode": img.mode, "width": img.width, "height": img.height,
                        "frames": getattr(img, "n_frames", 1)}
                try:  # every later stage reads through to_gray: refuse a mode it cannot convert
                    to_gray(img)
                except Exception as e:
                    raise ImageError(f"unsupported mode {img.mode}: {e}") from None
        info["bytes"] = os.path.getsize(path)
        info["sha256"] = sha256_file(path)
        return info
    except ImageError as e:
        return {"reason": str(e)}
    except Exception as e:  # a decoder tripping on a malformed file is bad input, not a crash
        return {"reason": f"unreadable: {type(e).__name__}: {e}"}


# ---- layout -----------------------------------------------------------------------------------


def _layout(top: Path, source: Path, classes: tuple[str, ...], top_real: str) -> tuple[Path, dict[str, Path]]:
    """The dataset root (top, or its one wrapping folder) and its split folders."""
    root, splits = top, _split_dirs(top)
    wrappers = [top / n for n in _listdir(top) if not _is_hidden(n) and _kind(top / n, top_real, frozenset()) == "dir"]
    if not splits and len(wrappers) == 1:  # e.g. brain-tumor-mri-dataset/Training/...
        root, splits = wrappers[0], _split_dirs(wrappers[0])
    if len(splits) == len(SPLITS):
        return root, splits
    found = sorted(_printable(f"{n}/" if (root / n).is_dir() else n) for n in _listdir(root))
    missing = [folder for folder, split in SPLITS.items() if split not in splits]
    where = "at the top" if root == top else f"in the wrapping folder {root.name}/"
    raise ValueError(
        f"{source}: expected the Kaggle layout {_LAYOUT} with classes {list(classes)} "
        f"(split folder names match case-insensitively; one wrapping folder is allowed); "
        f"missing {missing}; found {where}: {found or 'nothing'}"
    )


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> folder. Kaggle spells them Training/Testing; any letter case is accepted."""
    out: dict[str, list[str]] = {}
    for name in _listdir(root):
        for folder, split in SPLITS.items():
            if name.lower() == folder.lower() and (root / name).is_dir():
                out.setdefault(split, []).append(name)
    for split, names in out.items():
        if len(names) > 1:
            raise ValueError(f"{root}: ambiguous split folders {sorted(names)}: keep exactly one")
    return {split: root / out[split][0] for split in SPLITS.values() if split in out}


def _scan_splits(split_dirs: dict[str, Path], classes: tuple[str, ...], top_real: str, source: Path) -> list[Found]:
    found: list[Found] = []
    problems: list[str] = []
    for split, d in split_dirs.items():
        kind = _kind(d, top_real, frozenset())
        if kind != "dir":  # the split folder itself is a link that leaves the source
            found.append(Found(split, "", d.name, d, kind))
            continue
        present, unknown = set(), []
        ancestors = frozenset({top_real, os.path.realpath(d.parent), os.path.realpath(d)})
        for name in _listdir(d):
            p, rel = d / name, f"{d.name}/{name}"
            kind = _kind(p, top_real, ancestors)
            # a file directly in the split folder has no class; a class folder that is a bad link does
            cls = name if name in classes and kind != "file" else ""
            if kind == "dir" and not cls and not _is_hidden(name):
                unknown.append(_printable(name))
                continue
            present.update({cls} - {""})
            if kind == "dir":
                entries = _walk(p, rel, top_real, ancestors)
            else:
                entries = iter([(rel, p, "" if kind == "file" else kind)])
            for r, q, reason in entries:
                found.append(Found(split, cls, r, q, reason or _name_reason(r, cls)))
        missing = [c for c in classes if c not in present]
        if unknown or missing:
            problems.append(f"{d.name}/: unknown class folder(s) {sorted(unknown)}, missing {missing}")
    if problems:
        raise ValueError(
            f"{source}: expected class folders exactly {list(classes)} in each split ({_LAYOUT}); "
            + "; ".join(problems)
        )
    return found


def _name_reason(relpath: str, cls: str) -> str:
    if not _utf8(relpath):
        return BAD_NAME
    if any(_is_hidden(part) for part in relpath.split("/")):
        return HIDDEN
    return "" if cls else NOT_IN_CLASS


def _outside_layout(top: Path, root: Path, split_dirs: dict[str, Path], top_real: str) -> list[str]:
    """Names (relative to the source) of every file that is not under a split folder."""
    skip = set(split_dirs.values())
    out: list[str] = []

    def visit(d: Path, rel: str) -> None:
        for name in _listdir(d):
            p, r = d / name, f"{rel}{name}"
            if p in skip:
                continue
            if p == root:  # the wrapping folder: its other entries are outside the layout
                visit(p, f"{r}/")
                continue
            if _kind(p, top_real, frozenset({top_real})) == "dir":
                out.extend(_printable(x) for x, _, _ in _walk(p, r, top_real, frozenset({top_real})))
            else:
                out.append(_printable(r))

    visit(top, "")
    return sorted(out)


# ---- walking ----------------------------------------------------------------------------------


def _walk(d: Path, rel: str, top_real: str, ancestors: frozenset[str]) -> Iterator[tuple[str, Path, str]]:
    """(relpath, path, reason) for every file below `d`; links are followed only while they stay in the source."""
    ancestors = ancestors | {os.path.realpath(d)}
    try:
        names = _listdir(d)
    except OSError as e:
        yield rel, d, f"unreadable folder: {e.strerror}"
        return
    for name in names:
        p, r = d / name, f"{rel}/{name}"
        kind = _kind(p, top_real, ancestors)
        if kind == "dir":
            yield from _walk(p, r, top_real, ancestors)
        else:
            yield r, p, "" if kind == "file" else kind


def _kind(p: Path, top_real: str, ancestors: frozenset[str]) -> str:
    """'dir', 'file', or why the entry is not followed."""
    try:
        if p.is_symlink():
            target = os.path.realpath(p)
            if not os.path.exists(target):
                return BROKEN_LINK
            if not _within(target, top_real) and not _in_dvc_cache(target):
                return LINK_OUTSIDE
        mode = p.stat().st_mode
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if stat.S_ISDIR(mode):
        return LINK_LOOP if os.path.realpath(p) in ancestors else "dir"
    return "file" if stat.S_ISREG(mode) else NOT_REGULAR


def _in_dvc_cache(target: str) -> bool:
    # DVC's `cache.type symlink` turns every tracked raw file into a link into .dvc/cache: data, not an escape.
    parts = Path(target).parts
    return any(a == ".dvc" and b == "cache" for a, b in zip(parts, parts[1:]))


def _listdir(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_NAMES


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes in a file name, kept by Python as surrogates
        return False


def _printable(s: str) -> str:
    """A file name as CSV can hold it: undecodable bytes become \\xNN."""
    return s if _utf8(s) else os.fsencode(s).decode("utf-8", "backslashreplace")


# ---- zip archives -----------------------------------------------------------------------------


def extract_zip(archive: Path, dest: Path, cfg: IngestParams) -> dict[str, int]:
    """Safely extract `archive` into `dest` (which must not exist); {members, bytes} of the archive.

    Refused, before anything is written: more than cfg.max_archive_members entries, declared sizes over
    cfg.max_archive_bytes, absolute or drive-letter names, `..` components, links or special files,
    encrypted or duplicate members. While writing, a member that expands past its declared size (or the
    running total past the limit) stops extraction. Extraction goes to a temporary sibling first.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{archive}: not a readable zip archive ({e}); expected a Kaggle-layout folder or a .zip of one"
        ) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > cfg.max_archive_members:
            raise ValueError(
                f"{archive}: {len(infos)} members exceed ingest.max_archive_members={cfg.max_archive_members}"
            )
        declared = sum(i.file_size for i in infos)
        if declared > cfg.max_archive_bytes:
            raise ValueError(
                f"{archive}: would expand to {declared} bytes, over ingest.max_archive_bytes={cfg.max_archive_bytes}"
            )
        plan, seen = [], set()
        for info in infos:
            parts = _member_parts(archive, info)
            if not info.is_dir():
                if parts in seen:
                    raise ValueError(f"{archive}: duplicate member {info.filename!r}")
                seen.add(parts)
            plan.append((info, parts))

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extracted.", dir=dest.parent))
        try:
            written = 0
            for info, parts in plan:
                target = tmp.joinpath(*parts)
                try:
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "xb") as out:
                        n = 0
                        while chunk := src.read(1 << 20):
                            n += len(chunk)
                            written += len(chunk)
                            if n > info.file_size or written > cfg.max_archive_bytes:
                                raise ValueError(
                                    f"{archive}: member {info.filename!r} expands past its declared size "
                                    f"({info.file_size} bytes) or the archive past ingest.max_archive_bytes"
                                )
                            out.write(chunk)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as e:
                    raise ValueError(f"{archive}: member {info.filename!r} cannot be extracted: {e}") from None
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return {"members": len(infos), "bytes": declared}


def _member_parts(archive: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path components, or ValueError when extracting it could write outside the folder."""
    name = info.filename
    mode = info.external_attr >> 16  # Unix mode, when the archiver recorded one
    if stat.S_ISLNK(mode):
        raise ValueError(f"{archive}: member {name!r} is a symbolic link; archives with links are refused")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ValueError(f"{archive}: member {name!r} is a special file; archives with them are refused")
    if info.flag_bits & 0x1:
        raise ValueError(f"{archive}: member {name!r} is encrypted; extract it yourself and ingest the folder")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ValueError(f"{archive}: member {name!r} has an absolute path; refused (path traversal)")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))  # Windows archivers write '\'
    if ".." in parts:
        raise ValueError(f"{archive}: member {name!r} contains '..'; refused (path traversal)")
    if not parts:
        raise ValueError(f"{archive}: member {name!r} has an empty name")
    return parts
