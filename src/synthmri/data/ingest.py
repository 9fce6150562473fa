"""Ingest: inventory a Kaggle-layout dataset (a folder, or a .zip of one) into two tables.

Layouts: `<split>/<class>/` (Kaggle's Training/Testing, or Train/Test) or `<class>/` with no split level,
whose rows get an empty split for the split stage to assign; class folders may carry other names
(`data.class_names`, e.g. {yes: tumor}). A source matching neither stops with what was found there.

Every file found under Training/ and Testing/ lands in exactly one of `manifest.csv` (a usable image,
decoded once here) or `quarantine.csv` (with the reason); files outside those folders are counted and
named. That is checked against a second, independent listing of the source (`os.walk`) before anything
is written. Links to folders are never followed (a link in Training/ to a Testing folder would leak test
images into training); links to files are followed only within the source or into this DVC repository's
own cache. Later stages read the manifest and never rescan folders (paper §3.1: the Kaggle set,
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
from synthmri.images import ImageError, open_image, sha256_file, to_gray
from synthmri.io import manifest_path, parallel_map, write_table
from synthmri.params import IngestParams
from synthmri.params import workers as n_workers

# patient, fold, mask: known for the figshare release (data.format: figshare), empty for the Kaggle layout
MANIFEST_COLUMNS = (
    "split", "class", "relpath", "path", "format", "mode", "width", "height", "frames", "bytes", "sha256",
    "patient", "fold", "mask",
)
QUARANTINE_COLUMNS = ("split", "class", "relpath", "path", "reason")
OUTSIDE_COLUMNS = ("name",)
OUTSIDE_NAMES_IN_METRICS = 100  # the full list is in outside_layout.csv

# Quarantine reasons decided before decoding; decoding adds images.ImageError's messages
# ("empty file", "not an image", "truncated: ...", "decompression bomb: WxH exceeds N pixels", ...).
HIDDEN = "hidden/system file"
LINK_OUTSIDE = "link outside source"
BROKEN_LINK = "broken link"
DIR_LINK = "link to a folder (never followed)"  # the reason continues with ": points to <target> ..."
NOT_REGULAR = "not a regular file"
NOT_IN_CLASS = "not in a class folder"
BAD_NAME = "file name is not valid UTF-8"

_SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "system volume information"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_LAYOUT = "Training/<class>/ and Testing/<class>/"
_CLASS_LAYOUT = "<class>/ with no split level"
_SPLIT_NAMES = {**SPLITS, "Train": "train", "Test": "test"}  # folder -> split (any letter case)


@dataclass(frozen=True)
class _Source:
    """Where links may point: inside the source, or (file links only) into this repository's DVC cache."""

    top_real: str  # the source folder (or the extraction folder), resolved
    dvc_cache: str | None  # the resolved cache of the DVC repository holding the source; None outside one


@dataclass(frozen=True)
class Found:
    """One file found under a split folder."""

    split: str  # train | test; "" with no split level
    cls: str  # class folder, "" when the file is not in one
    relpath: str  # dataset-relative POSIX path, as on disk (no Unicode normalisation)
    path: Path  # where it is on disk (links inside the source are kept, not resolved)
    reason: str = ""  # quarantine reason known before decoding; "" = decode it


# ---- entry point ------------------------------------------------------------------------------


def ingest(
    source: Path, out_dir: Path, cfg: IngestParams, classes: tuple[str, ...], fmt: str = "kaggle",
    class_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Inventory `source` into OUT_DIR/{manifest,quarantine,outside_layout}.csv; return the metrics.
    `fmt` (data.format): kaggle, or figshare (the .mat release, `synthmri.data.ingest_figshare`).
    `class_names`: class folder name -> class (`data.class_names`, e.g. {yes: tumor}); a folder named
    after a class is that class."""
    if fmt == "figshare":
        from synthmri.data.ingest_figshare import ingest_figshare

        return ingest_figshare(source, out_dir, cfg, classes)
    if fmt != "kaggle":
        raise ValueError(f"data.format: unknown format {fmt!r}; known: kaggle, figshare")
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source} (expected a Kaggle-layout folder or a .zip of one)")
    extracted = out_dir / "extracted"
    if _within(os.path.realpath(source), os.path.realpath(extracted)):
        raise ValueError(f"source {source} lies inside {extracted}, which ingest replaces; copy it elsewhere first")
    _clean(out_dir)

    metrics: dict[str, Any] = {"source": source.as_posix(), "format": "kaggle"}
    if source.is_dir():  # read in place, never copied
        top = source
        metrics["source_kind"] = "folder"
    elif source.is_file():
        metrics["source_kind"] = "zip"
        metrics["archive"] = extract_zip(source, extracted, cfg)
        top = extracted
    else:
        raise ValueError(f"{source}: not a folder or a .zip archive")

    # an extracted zip holds no links (extract_zip refuses them): only a folder source can use the cache
    src = _Source(os.path.realpath(top), dvc_cache_dir(source) if metrics["source_kind"] == "folder" else None)
    names = _folder_classes(classes, class_names or {})
    root, split_dirs = _layout(top, source, classes, src, names)
    found = _scan_splits(split_dirs, classes, src, source, names)
    outside = _outside_layout(top, root, split_dirs, src)

    todo = [f for f in found if not f.reason]
    results = parallel_map(
        _inspect,
        [(str(f.path), cfg.max_pixels, cfg.min_side) for f in todo],
        desc="ingest: decoding",
        workers=n_workers(cfg.workers),
    )
    decoded = dict(zip((f.relpath for f in todo), results, strict=True))

    images, quarantined = [], []
    for f in found:
        info = decoded.get(f.relpath, {"reason": f.reason})
        row = {"split": f.split, "class": f.cls, "relpath": _printable(f.relpath),
               "path": _printable(manifest_path(f.path)), "raw_relpath": f.relpath,  # raw: not a column
               "patient": "", "fold": "", "mask": ""}  # the Kaggle layout knows none of them
        if "reason" in info:
            quarantined.append({**row, "reason": info["reason"]})
        else:
            images.append({**row, **info})
    check_accounting(top, root, split_dirs, [r["raw_relpath"] for r in images + quarantined], outside, source)
    outside = sorted(_printable(x) for x in outside)

    order = itemgetter("split", "class", "relpath")  # deterministic row order
    write_table(pd.DataFrame(sorted(images, key=order), columns=list(MANIFEST_COLUMNS)), out_dir / "manifest.csv")
    write_table(
        pd.DataFrame(sorted(quarantined, key=order), columns=list(QUARANTINE_COLUMNS)), out_dir / "quarantine.csv"
    )
    write_table(pd.DataFrame({"name": outside}, columns=list(OUTSIDE_COLUMNS)), out_dir / "outside_layout.csv")

    per_split_class = {s: {c: 0 for c in classes} for s in split_dirs}  # "": no split level (the split stage assigns)
    for r in images:
        per_split_class[r["split"]][r["class"]] += 1
    metrics.update(
        dataset_root="" if root == top else root.name,  # the one wrapping folder, if any
        layout=_LAYOUT if "" not in split_dirs else _CLASS_LAYOUT,
        split_folders={split: d.name for split, d in split_dirs.items() if split},
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
        elif p.name == "slices" and p.is_dir() and not p.is_symlink():  # a figshare ingest's decoded PNGs
            shutil.rmtree(p)


# ---- decoding (in worker processes) -----------------------------------------------------------


def _inspect(item: tuple[str, int, int]) -> dict[str, Any]:
    """Decode one file fully; its manifest fields, or {"reason": why it is quarantined}."""
    path, max_pixels, min_side = item
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
                if min(img.width, img.height) < min_side:  # preprocess would upscale it into a training image
                    raise ImageError(
                        f"too small: {img.width}x{img.height} px, a side below ingest.min_side={min_side}"
                    )
        info["bytes"] = os.path.getsize(path)
        info["sha256"] = sha256_file(path)
        return info
    except ImageError as e:
        return {"reason": str(e)}
    except Exception as e:  # a decoder tripping on a malformed file is bad input, not a crash
        return {"reason": f"unreadable: {type(e).__name__}: {e}"}


# ---- layout -----------------------------------------------------------------------------------


def _folder_classes(classes: tuple[str, ...], class_names: dict[str, str]) -> dict[str, str]:
    """Class folder name -> class: each class's own name, and `data.class_names`' aliases."""
    return {**{c: c for c in classes}, **class_names}


def _layout(top: Path, source: Path, classes: tuple[str, ...], src: _Source,
            names: dict[str, str]) -> tuple[Path, dict[str, Path]]:
    """The dataset root (top, or its one wrapping folder) and its split folders: {split: folder} for
    `<split>/<class>/` (both splits), {"": root} for `<class>/` with no split level (the rows' split
    stays empty: the split stage assigns it). Anything else stops, listing what was found."""
    def match(root: Path) -> dict[str, Path] | None:
        splits = _split_dirs(root)
        if splits:
            return splits if len(splits) == len(SPLITS) else None
        dirs = [n for n in _listdir(root) if not _is_hidden(n) and _kind(root / n, src) == "dir"]
        return {"": root} if dirs and all(n in names for n in dirs) else None

    root, splits = top, match(top)
    wrappers = [top / n for n in _listdir(top) if not _is_hidden(n) and _kind(top / n, src) == "dir"]
    if splits is None and not _split_dirs(top) and len(wrappers) == 1:  # e.g. brain-tumor-mri-dataset/Training/...
        root, splits = wrappers[0], match(wrappers[0])
    if splits is not None:
        return root, splits
    found = sorted(_printable(f"{n}/" if (root / n).is_dir() else n) for n in _listdir(root))
    present = _split_dirs(root)
    missing = f"missing {[f for f, s in SPLITS.items() if s not in present]}; " if present else ""
    where = "at the top" if root == top else f"in the wrapping folder {root.name}/"
    aliases = {k: v for k, v in names.items() if k != v}
    raise ValueError(
        f"{source}: expected the Kaggle layout {_LAYOUT} or {_CLASS_LAYOUT} with classes {list(classes)}"
        + (f" (class folder aliases {aliases}, data.class_names)" if aliases else "")
        + f" (split folders: {'/'.join(_SPLIT_NAMES)}, any letter case; one wrapping folder is allowed); "
        f"{missing}found {where}: {found or 'nothing'}"
        + ("; this looks like the figshare .mat release: set data.format: figshare"
           if any(n.lower().endswith((".mat", ".zip")) for n in found) else "")
    )


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> folder. Kaggle spells them Training/Testing; Train/Test and any letter case are accepted."""
    out: dict[str, list[str]] = {}
    for name in _listdir(root):
        for folder, split in _SPLIT_NAMES.items():
            if name.lower() == folder.lower() and (root / name).is_dir():
                out.setdefault(split, []).append(name)
    for split, names in out.items():
        if len(names) > 1:
            raise ValueError(f"{root}: ambiguous split folders {sorted(names)}: keep exactly one")
    return {split: root / out[split][0] for split in SPLITS.values() if split in out}


def _scan_splits(split_dirs: dict[str, Path], classes: tuple[str, ...], src: _Source, source: Path,
                 names: dict[str, str] | None = None) -> list[Found]:
    names = _folder_classes(classes, {}) if names is None else names
    found: list[Found] = []
    problems: list[str] = []
    for split, d in split_dirs.items():
        prefix = f"{d.name}/" if split else ""  # relpaths are relative to the dataset root
        kind = _kind(d, src)
        if kind != "dir":  # the split folder itself is a link: one quarantine row, not followed
            found.append(Found(split, "", d.name, d, kind))
            continue
        present, unknown = set(), []
        for name in _listdir(d):
            p, rel = d / name, f"{prefix}{name}"
            kind = _kind(p, src)
            # a file directly in the split folder has no class; a class folder that is a bad link does
            cls = names[name] if name in names and kind != "file" else ""
            if kind == "dir" and not cls and not _is_hidden(name):
                unknown.append(_printable(name))
                continue
            present.update({cls} - {""})
            if kind == "dir":
                entries = _walk(p, rel, src)
            else:
                entries = iter([(rel, p, "" if kind == "file" else kind)])
            for r, q, reason in entries:
                found.append(Found(split, cls, r, q, reason or _name_reason(r, cls)))
        missing = [c for c in classes if c not in present]
        if unknown or missing:
            problems.append(f"{prefix or d.name + '/'}: unknown class folder(s) {sorted(unknown)}, missing {missing}")
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


def _outside_layout(top: Path, root: Path, split_dirs: dict[str, Path], src: _Source) -> list[str]:
    """Names (relative to the source, as on disk) of every file that is not under a split folder."""
    skip = set(split_dirs.values())
    out: list[str] = []
    if top in skip:  # `<class>/` at the top: everything there is in the layout
        return out

    def visit(d: Path, rel: str) -> None:
        for name in _listdir(d):
            p, r = d / name, f"{rel}{name}"
            if p in skip:
                continue
            if p == root:  # the wrapping folder: its other entries are outside the layout
                visit(p, f"{r}/")
                continue
            if _kind(p, src) == "dir":
                out.extend(x for x, _, _ in _walk(p, r, src))
            else:
                out.append(r)

    visit(top, "")
    return out


# ---- walking ----------------------------------------------------------------------------------


def _walk(d: Path, rel: str, src: _Source) -> Iterator[tuple[str, Path, str]]:
    """(relpath, path, reason) for every file below `d`; a link to a folder is one entry, never entered."""
    try:
        names = _listdir(d)
    except OSError as e:
        yield rel, d, f"unreadable folder: {e.strerror}"
        return
    for name in names:
        p, r = d / name, f"{rel}/{name}"
        kind = _kind(p, src)
        if kind == "dir":
            yield from _walk(p, r, src)
        else:
            yield r, p, "" if kind == "file" else kind


def _kind(p: Path, src: _Source) -> str:
    """'dir', 'file', or why the entry is not read."""
    try:
        link = p.is_symlink()
        target = os.path.realpath(p) if link else ""
        if link and not os.path.exists(target):
            return BROKEN_LINK
        mode = p.stat().st_mode
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if link and stat.S_ISDIR(mode):
        # Never followed: Training/notumor/x -> Testing/glioma would re-ingest test images as training ones.
        if _within(target, src.top_real):
            return f"{DIR_LINK}: points to {_printable(os.path.relpath(target, src.top_real))} in the source"
        return f"{DIR_LINK}: points to {_printable(target)} outside the source"
    if link and not _within(target, src.top_real) and not (src.dvc_cache and _within(target, src.dvc_cache)):
        return LINK_OUTSIDE
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else NOT_REGULAR


# ---- the DVC cache ----------------------------------------------------------------------------


def dvc_cache_dir(source: Path) -> str | None:
    """The resolved cache folder of the DVC repository holding `source`, or None outside one.

    DVC's `cache.type symlink` turns every tracked raw file into a link into this cache: data, not an
    escape. Only this repository's cache counts, not any path that happens to contain `.dvc/cache`.
    The repository is the nearest folder above the source holding `.dvc/` (as DVC finds it); its
    `cache.dir` in `.dvc/config` or `.dvc/config.local` (relative to `.dvc/`, as DVC reads it) wins.
    """
    here = Path(os.path.abspath(source))
    for repo in (here, *here.parents):
        dvc_dir = repo / ".dvc"
        if dvc_dir.is_dir():
            cache = str(dvc_dir / "cache")
            for name in ("config", "config.local"):  # config.local overrides config
                cache = _config_cache_dir(dvc_dir / name) or cache
            return os.path.realpath(os.path.join(dvc_dir, os.path.expanduser(cache)))
    return None


def _config_cache_dir(config: Path) -> str | None:
    """`dir` of the `[cache]` section of a DVC config file (INI-style), or None."""
    try:
        lines = config.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    section, found = "", None
    for line in lines:
        line = line.strip()
        if head := re.fullmatch(r"\[\s*['\"]?(.*?)['\"]?\s*\]", line):
            section = head.group(1).strip()
        elif section == "cache" and (kv := re.fullmatch(r"dir\s*=\s*(.*?)\s*", line)):
            found = kv.group(1).strip("'\"")
    return found or None


# ---- accounting -------------------------------------------------------------------------------


def check_accounting(
    top: Path, root: Path, split_dirs: dict[str, Path], rows: list[str], outside: list[str], source: Path
) -> None:
    """Every entry on disk in exactly one table row, checked against an independent `os.walk` listing.

    `rows` are the manifest and quarantine relpaths (relative to the dataset root, as on disk), `outside`
    the outside-layout names (relative to `top`). A file (or link, of any kind) missing, doubled or
    unknown raises (never an `assert`, which `python -O` strips).
    """
    split_rels = [d.relative_to(top).as_posix() for d in split_dirs.values()]
    root_rel = root.relative_to(top).as_posix()
    in_layout, off_layout = [], []
    for rel in _listing(top):
        if any(s == "." or rel == s or rel.startswith(s + "/") for s in split_rels):
            in_layout.append(rel if root_rel == "." else rel[len(root_rel) + 1:])
        else:
            off_layout.append(rel)
    problems = [
        *_mismatch("manifest.csv / quarantine.csv", in_layout, rows),
        *_mismatch("outside_layout.csv", off_layout, outside),
    ]
    if problems:
        raise RuntimeError(
            f"{source}: ingest's tables do not match a listing of the source (files changed during the scan, "
            "or a bug in ingest); nothing written: " + "; ".join(problems)
        )


def _listing(top: Path) -> list[str]:
    """Every non-folder entry below `top` (files, links of any kind, special files), relative, via os.walk."""
    out: list[str] = []
    unreadable: list[OSError] = []
    for d, dirs, files in os.walk(top, onerror=unreadable.append, followlinks=False):
        # os.walk lists a link to a folder among `dirs` and, with followlinks=False, does not enter it
        out.extend(os.path.join(d, n) for n in files + [n for n in dirs if os.path.islink(os.path.join(d, n))])
    out.extend(e.filename for e in unreadable if e.filename)  # a folder that cannot be listed is one entry
    return [Path(os.path.relpath(p, top)).as_posix() for p in out]


def _mismatch(table: str, on_disk: list[str], listed: list[str], shown: int = 20) -> list[str]:
    counts, disk = Counter(listed), set(on_disk)
    gaps = {
        "missing from": sorted(disk - set(counts)),
        "listed more than once in": sorted(r for r, n in counts.items() if n > 1),
        "not on disk but in": sorted(set(counts) - disk),
    }
    return [
        f"{len(names)} {what} {table}: {[_printable(n) for n in names[:shown]]}{' ...' if len(names) > shown else ''}"
        for what, names in gaps.items() if names
    ]


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
