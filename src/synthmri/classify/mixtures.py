"""Scenario entries -> exact, seeded per-class lists of training files (README, "Classification scenarios").

Pure functions over `Pools` (what is available); data.py fills the pools from the processed manifest
and the generators' folders, and leaves out of them the training images that copy a test image unless
`classify.drop_test_copies` is false (the paper as coded, docs/paper_as_coded.md: 103 Testing images had a
Training copy); then those copies are listed in `Pools.kept_test_copies`, the only test-image copies
the leakage check lets through, and counted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from synthmri.classify.config import PAIR, Amount, ScenarioMix, ScenarioParams
from synthmri.io import read_table

REAL, SYNTHETIC = "real", "synthetic"
MANIFEST_COLUMNS = ("split", "class", "status", "sha256", "out_path")
SYNTHETIC_EXT = (".png", ".jpg", ".jpeg")


class LeakageError(ValueError):
    """A test image (or a copy of one) would enter a training set."""


@dataclass(frozen=True)
class Pools:
    """Candidates per class, in a fixed order: real training images, synthetic images; and the test set."""

    real: Mapping[str, Sequence[str]]
    synthetic: Mapping[str, Sequence[str]]
    test: Sequence[tuple[str, str]]  # (path, class)
    excluded: Sequence[dict] = field(default_factory=tuple)  # training rows left out, with a reason
    kept_test_copies: frozenset[str] = frozenset()  # real paths in `real` that copy a test image (drop_test_copies: false)


@dataclass(frozen=True)
class Plan:
    """One training set: (path, class, source) rows and the counts per class."""

    rows: tuple[tuple[str, str, str], ...]
    counts: dict[str, dict[str, int]]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["path", "class", "source"])

    @property
    def size(self) -> int:
        return len(self.rows)


# ---- pools ------------------------------------------------------------------------------------


def read_real(manifest: str | Path, classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kept Training and kept Testing rows of the processed manifest (paper §4: the deduplicated split)."""
    df = read_table(manifest)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {missing}; expected the preprocess stage's manifest")
    unknown = sorted(set(df["class"]) - set(classes))
    if unknown:
        raise ValueError(f"{manifest}: class(es) {unknown} not in data.classes {list(classes)}")
    kept = df[df["status"] == "kept"]
    train = kept[kept["split"] == "train"].sort_values("out_path", kind="stable").reset_index(drop=True)
    test = kept[kept["split"] == "test"].sort_values("out_path", kind="stable").reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{manifest}: no kept Testing rows; the test set is always the real Testing split")
    return train, test


def read_synthetic(synthetic_dir: str | Path | None, classes: Sequence[str],
                   folders: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Synthetic paths per class in generation order: `<dir>/<folder>/manifest.csv` if present, else sorted files.

    `folders`: class -> the generator folders pooled into it (a task's per-source generators,
    `Task.synthetic_folders`); default one folder per class, named by it."""
    out: dict[str, list[str]] = {c: [] for c in classes}
    if synthetic_dir is None:
        return out
    root = Path(synthetic_dir)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"synthetic images: {root} is not a folder")
    for c in classes:
        for name in (folders or {}).get(c, (c,)):
            folder = root / name
            manifest = folder / "manifest.csv"
            if manifest.is_file():
                table = read_table(manifest)
                if "path" not in table.columns:
                    raise ValueError(f"{manifest}: no 'path' column")
                bad = sorted(set(table["class"]) - {c}) if "class" in table.columns else []
                if bad:
                    raise ValueError(f"{manifest}: rows of class(es) {bad} in a folder of class {c!r}")
                order = table.sort_values("index", kind="stable") if "index" in table.columns else table
                out[c] += [str(p) for p in order["path"]]
            elif folder.is_dir():
                out[c] += sorted(p.as_posix() for p in folder.iterdir() if p.suffix.lower() in SYNTHETIC_EXT)
    return out


# ---- amounts ----------------------------------------------------------------------------------


def _amount_for(spec: Amount | Mapping[str, Amount], cls: str, classes: Sequence[str], what: str, where: str) -> Amount:
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(classes))
        if unknown:
            raise ValueError(f"{where}: unknown class(es) {unknown} in {what}; known: {list(classes)}")
        return spec.get(cls, 0)
    return spec


def _real_count(amount: Amount, available: int) -> int:
    if isinstance(amount, int):
        return amount
    if amount == "all":
        return available
    if amount.startswith("x"):
        return int(float(amount[1:]) * available)
    raise ValueError(f"{amount!r} is not a real-image amount")


def _synthetic_count(amount: Amount, available: int, real_n: int, largest: int) -> int:
    if isinstance(amount, int):
        return amount
    if amount == "all":
        return available
    if amount == "fill":  # paper §5.2.2, Scenario 1: balance every class to the largest
        return max(0, largest - real_n)
    if amount.startswith("x"):  # paper's code, Scenarios 2/3: int(n * 0.113 / 0.25 / 0.5)
        return int(float(amount[1:]) * real_n)
    pair = PAIR.match(amount)
    if pair:  # paper's text §5.2.2, Scenarios 2/3: R90:S10, R80:S20, R66:S33 taken as written (s per r real)
        return int(Fraction(real_n) * Fraction(pair["s"]) / Fraction(pair["r"]))  # exact: 802 at R66:S33 -> 401
    raise ValueError(f"{amount!r} is not a synthetic-image amount")


# ---- plans ------------------------------------------------------------------------------------


def plan_mixture(pools: Pools, mix: ScenarioParams | ScenarioMix, classes: Sequence[str], seed: int,
                 where: str = "scenario") -> Plan:
    """The exact training files of `mix`; the same seed gives the same files.

    An impossible request (more images than available, an unknown class) raises ValueError naming the
    scenario, class and counts, before anything is trained.
    """
    classes = tuple(classes)
    for name, pool in (("real", pools.real), ("synthetic", pools.synthetic)):
        unknown = sorted(set(pool) - set(classes))
        if unknown:
            raise ValueError(f"{where}: {name} images of unknown class(es) {unknown}; known: {list(classes)}")
    if mix.draw == "pooled":
        real_sel = _draw_pooled(pools, mix, classes, seed, where)
    else:
        real_sel = {}
        for ci, c in enumerate(classes):
            pool = pools.real.get(c, ())
            n = _real_count(_amount_for(mix.real, c, classes, "real", where), len(pool))
            if n > len(pool):
                raise ValueError(f"{where}: {n} real {c} images requested, only {len(pool)} available "
                                 f"({_available_what(pools)})")
            real_sel[c] = _draw(pool, n, [seed, ci, 0])
    real_n = {c: len(real_sel[c]) for c in classes}
    largest = max(real_n.values())
    syn_n: dict[str, int] = {}
    for c in classes:
        available = len(pools.synthetic.get(c, ()))
        n = _synthetic_count(_amount_for(mix.synthetic, c, classes, "synthetic", where), available, real_n[c], largest)
        if n > available:
            raise ValueError(f"{where}: {n} synthetic {c} images requested, only {available} were generated "
                             f"(raise generate.n_per_class or ask for fewer)")
        syn_n[c] = n
    rows: list[tuple[str, str, str]] = []
    for ci, c in enumerate(classes):
        rows += [(path, c, REAL) for path in real_sel[c]]
        rows += [(path, c, SYNTHETIC) for path in _draw(pools.synthetic.get(c, ()), syn_n[c], [seed, ci, 1])]
    if not rows:
        raise ValueError(f"{where}: the training set is empty (every class has 0 real and 0 synthetic images)")
    counts = {c: {REAL: real_n[c], SYNTHETIC: syn_n[c]} for c in classes}
    return Plan(tuple(rows), counts)


def _available_what(pools: Pools) -> str:
    if pools.kept_test_copies:
        return "kept Training images, copies of test images included (classify.drop_test_copies: false)"
    return "kept Training images not duplicating a test image"


def _draw(pool: Sequence[str], n: int, seed: list[int]) -> list[str]:
    """n of `pool`, seeded, in pool order."""
    if n == len(pool):
        return list(pool)
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(order)]


def _draw_pooled(pools: Pools, mix: ScenarioParams | ScenarioMix, classes: Sequence[str], seed: int,
                 where: str) -> dict[str, list[str]]:
    """Real images drawn from all classes together, so the per-class counts follow the draw.

    Paper's code, Scenario 5: `shuffle(train_paths, ...)` over every real image, then the first half
    (`train_paths[:len // 2]`); config refuses a per-class amount here.
    """
    if isinstance(mix.real, Mapping):
        raise ValueError(f"{where}: draw: pooled takes one real amount for all classes together, not a mapping")
    pooled = [(p, c) for c in classes for p in pools.real.get(c, ())]
    n = _real_count(mix.real, len(pooled))
    if n > len(pooled):
        raise ValueError(f"{where}: {n} real images requested, only {len(pooled)} available "
                         f"in all classes together ({_available_what(pools)})")
    picked = np.random.default_rng([seed, len(classes), 2]).permutation(len(pooled))[:n]
    out: dict[str, list[str]] = {c: [] for c in classes}
    for i in sorted(picked):
        p, c = pooled[i]
        out[c].append(p)
    return out


def assert_no_leakage(plan: Plan, pools: Pools, *, train_keys: Mapping[str, Collection[str]],
                      test_keys: Mapping[str, Collection[str]]) -> int:
    """Refuse a training set holding a test image: by path, or by a content key (source sha256, pixel hash).

    `train_keys`/`test_keys` map a path to its content keys; every training path must have at least one.
    The one exception is a real image listed in `pools.kept_test_copies` (classify.drop_test_copies:
    false, the paper as coded): let through and counted. Returns that count; a synthetic image, a test
    image itself, or any other copy is still refused.
    """
    test_paths = {p for p, _ in pools.test}
    synthetic = {p for ps in pools.synthetic.values() for p in ps}
    if test_paths & synthetic:
        raise LeakageError(f"synthetic image(s) in the test set: {sorted(test_paths & synthetic)[:3]}")
    forbidden = {k for p in test_paths for k in test_keys[p]}
    copies = 0
    for path, cls, source in plan.rows:
        if path in test_paths:
            raise LeakageError(f"test image {path} in the training set")
        keys = train_keys.get(path)
        if not keys:
            raise LeakageError(f"training image {path} has no content key to check against the test set")
        if forbidden.intersection(keys):
            if source == REAL and path in pools.kept_test_copies:
                copies += 1  # the paper's leak, kept on purpose (classify.drop_test_copies: false)
                continue
            raise LeakageError(f"{source} training image {path} ({cls}) duplicates a test image")
    return copies
