"""Atomic writes, manifests and parallel maps shared by every stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
R = TypeVar("R")


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A stage killed while writing leaves no half-written file that a later stage could take as complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a new empty folder beside `path`; it replaces `path` only if the block succeeds (as atomic_path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; the folder is not
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return o.as_posix()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def manifest_path(p: str | os.PathLike) -> str:
    """A path as manifests store it: POSIX, relative to the working directory (the repo root under DVC)
    when below it, else absolute, so a pipeline pulled onto another machine still resolves."""
    a = Path(os.path.abspath(p))
    try:
        return a.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return a.as_posix()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a manifest CSV atomically (UTF-8, no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8")


TEXT_COLUMNS = ("patient",)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV; strings stay strings (an image named 'NA.jpg' is not a missing value)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run the stage that writes it first)")
    # identifiers stay text: a patient ID "007123" is not the number 7123
    return pd.read_csv(path, keep_default_na=False, encoding="utf-8", dtype={c: str for c in TEXT_COLUMNS})


def progress() -> Progress:
    """The one progress-bar style of every long loop (written to stderr)."""
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    *,
    desc: str,
    workers: int | None = None,
    chunksize: int = 16,
) -> list[R]:
    """Ordered `map(fn, items)` over processes with a progress bar; `workers=1` stays in-process.

    `fn` must be a module-level function (it is pickled to the workers).
    """
    items = list(items)
    workers = default_workers() if workers is None else workers
    out: list[R] = []
    with progress() as bar:
        task = bar.add_task(desc, total=len(items))
        if workers <= 1 or len(items) < 2 * chunksize:
            for item in items:
                out.append(fn(item))
                bar.advance(task)
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                out.append(result)
                bar.advance(task)
    return out
