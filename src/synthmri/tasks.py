"""Tasks are data: a class mapping from the dataset's classes (`data.classes`, the source classes) to the
classes every later stage works on (the target classes), e.g. the DCGAN tumour-vs-normal study's
`binary`: glioma, meningioma, pituitary -> tumor; notumor -> normal.

The mapping is applied at one point only, the end of the preprocess stage: its manifest keeps the
dataset's class as `source_class` and writes the mapped one as `class`. Preprocess is the place because
its own decisions (the aspect filter of the tumour classes, class balancing; paper §4.2) are made per
source class, and everything after it (generators, fidelity, classifiers, report) reads that manifest,
so they see the target classes with no special case. Pixels and file paths never depend on the task
(images stay under `<split>/<source class>/`): relabelling changes labels only.

Generators are trained per source class and pooled into their target class (`task.generators:
source`: each synthetic manifest row says both), or one per target class (`target`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from synthmri.params import ParamsError, build, load

SOURCE_CLASS = "source_class"  # the manifest column holding the dataset's class once a task is applied
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a class names folders, dvc stages (train_generator@<class>) and keys


@dataclass(frozen=True)
class TaskParams:
    name: str = "identity"  # the task's name in reports, e.g. binary
    map: dict[str, str] = field(default_factory=dict)  # {source class: target class}; {} = each class is its own
    generators: Literal["source", "target"] = "source"  # one generator per source class (pooled) or per target class
    # the classes train_generator@ / generate@ iterate (dvc.yaml foreach): data.classes with `source`, the
    # sorted target classes with `target`; checked, since dvc.yaml cannot compute it (() = not given: derived)
    generator_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """A checked task: the source classes, the mapping and what follows from it."""

    params: TaskParams
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.params.name

    @property
    def identity(self) -> bool:
        return all(self.target_of(c) == c for c in self.sources)

    def target_of(self, cls: str) -> str:
        return self.params.map.get(cls, cls) if self.params.map else cls

    @property
    def classes(self) -> tuple[str, ...]:
        """The target classes, sorted (the identity task keeps data.classes' order)."""
        if not self.params.map:
            return self.sources
        return tuple(sorted(set(self.params.map.values())))

    @property
    def generator_column(self) -> str:
        """The manifest column a generator's class is selected by."""
        return SOURCE_CLASS if self.params.generators == "source" else "class"

    def expected_generator_classes(self) -> tuple[str, ...]:
        return self.sources if self.params.generators == "source" else self.classes

    def synthetic_folders(self) -> dict[str, tuple[str, ...]]:
        """Target class -> the generator folders (`data/synthetic/<name>`) pooled into it."""
        if self.params.generators == "target":
            return {c: (c,) for c in self.classes}
        return {t: tuple(s for s in self.sources if self.target_of(s) == t) for t in self.classes}


def load_task(data: dict[str, Any]) -> Task:
    """The `task` section checked against `data.classes` (ParamsError naming the key)."""
    sources = load("data", data=data).classes
    raw = dict(data.get("task") or {})
    if "map" in raw and raw["map"] is None:
        raw["map"] = {}
    if not isinstance(raw.get("map", {}), dict):
        raise ParamsError(f"task.map: expected a mapping {{source class: target class}}, got {raw['map']!r}")
    p = build(TaskParams, raw, "task")
    for src, dst in p.map.items():
        if not isinstance(dst, str) or not _NAME.fullmatch(dst):
            raise ParamsError(f"task.map.{src}: target class must be letters, digits, _ or -, got {dst!r}")
    if p.map:
        unknown = sorted(set(p.map) - set(sources))
        if unknown:
            raise ParamsError(f"task.map: unknown source class(es) {unknown}; data.classes is {list(sources)}")
        unmapped = [c for c in sources if c not in p.map]
        if unmapped:
            raise ParamsError(f"task.map: class(es) {unmapped} of data.classes left unmapped; map every class "
                              f"(to itself to keep it)")
    task = Task(p, tuple(sources))
    want = task.expected_generator_classes()
    if p.generator_classes and p.generator_classes != want:
        raise ParamsError(f"task.generator_classes: with task.generators: {p.generators} it must be {list(want)} "
                          f"({'data.classes' if p.generators == 'source' else 'the target classes of task.map'}), "
                          f"got {list(p.generator_classes)}")
    return task


def target_classes(data: dict[str, Any]) -> tuple[str, ...]:
    """The classes every stage after preprocess works on."""
    return load_task(data).classes


def apply_task(df: pd.DataFrame, task: Task, where: str = "manifest") -> pd.DataFrame:
    """`df` with `source_class` (the dataset's class) and `class` mapped; refused on a mapped table or a
    class outside data.classes."""
    if SOURCE_CLASS in df.columns:
        raise ValueError(f"{where}: already has a {SOURCE_CLASS!r} column: task {task.name!r} would be applied twice "
                         f"(the mapping is applied once, by the preprocess stage)")
    unknown = sorted(set(df["class"].astype(str)) - set(task.sources))
    if unknown:
        raise ValueError(f"{where}: class(es) {unknown} not in data.classes {list(task.sources)}: task "
                         f"{task.name!r} cannot map them")
    out = df.copy()
    pos = list(out.columns).index("class")
    out.insert(pos, SOURCE_CLASS, out["class"].astype(str))
    out["class"] = [task.target_of(c) for c in out[SOURCE_CLASS]]
    return out

