"""DVC never serves a stale result: every stage depends on every synthmri source file its command imports
and on the pretrained weights folder when it can load weights (issue 9 §2).

The closure is computed statically: from the cli.py function that `synthmri <cmd>` runs (cli.py's
module-level imports, that function's own imports and those of the cli.py helpers it names), then
every import, top-level or inside a function, of each synthmri module reached, with the packages'
`__init__.py` files that importing a submodule executes. The second test runs the real `dvc status`
on a copy of the project after editing shared helpers.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from functools import cache
from pathlib import PurePosixPath

import pytest
import yaml

from synthmri import pretrained
from tests.conftest import ROOT, private_copy, sh

SRC = ROOT / "src"
CLI = "src/synthmri/cli.py"
WEIGHTS_DIR = pretrained.DEFAULT_DIR.as_posix()


# ---- the import closure ----------------------------------------------------------------------------


def _module_file(dotted: str) -> str | None:
    """src-relative POSIX path of a synthmri module or package, None if it is not one (an attribute)."""
    base = SRC.joinpath(*dotted.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p.relative_to(ROOT).as_posix()
    return None


def _package_of(file: str) -> str:
    parts = PurePosixPath(file).relative_to("src").with_suffix("").parts
    return ".".join(parts[:-1])  # a module's package; an __init__.py's own package


def _imported_files(nodes, file: str) -> set[str]:
    """The synthmri files that the import statements among `nodes` load, with their packages' __init__.py."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                pkg = _package_of(file).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    out: set[str] = set()
    for name in names:
        if name != "synthmri" and not name.startswith("synthmri."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            f = _module_file(".".join(parts[:i]))
            if f is not None:
                out.add(f)
    return out


@cache
def _tree(file: str) -> ast.Module:
    return ast.parse((ROOT / file).read_text(), filename=file)


@cache
def _module_imports(file: str) -> frozenset[str]:
    return frozenset(_imported_files(ast.walk(_tree(file)), file))


def _cli_entry_imports(func_name: str) -> set[str]:
    """What running cli.py's `func_name` imports: cli.py's module level, the function, the helpers it names."""
    tree = _tree(CLI)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(stmt)]
    seen, todo, nodes = set(), [func_name], list(top)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        body = list(ast.walk(funcs[name]))
        nodes += body
        local = {n.id for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        local |= {a.arg for a in ast.walk(funcs[name].args) if isinstance(a, ast.arg)}
        todo += [n.id for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                 and n.id in funcs and n.id not in local]
    return _imported_files(nodes, CLI) | {CLI}


def import_closure(func_name: str) -> set[str]:
    files, todo = set(), list(_cli_entry_imports(func_name))
    while todo:
        f = todo.pop()
        if f in files:
            continue
        files.add(f)
        if f != CLI:
            todo += _module_imports(f)
    return files


# ---- dvc.yaml ---------------------------------------------------------------------------------------


def cli_functions() -> dict[str, str]:
    """`synthmri <command>` -> the name of the cli.py function it runs (typer's own table)."""
    from synthmri.cli import app

    return {c.name or c.callback.__name__.replace("_", "-"): c.callback.__name__ for c in app.registered_commands}


def stages() -> dict[str, dict]:
    """dvc.yaml's stages (a foreach stage's template under `name@*`): cmd and deps."""
    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            name, stage = f"{name}@*", stage["do"]
        out[name] = {"cmd": " ".join(stage["cmd"].split()), "deps": [str(d) for d in stage.get("deps", [])]}
    return out


def covers(deps: list[str], path: str) -> bool:
    """A dep on the file, or on a folder above it."""
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


@cache
def stage_closures() -> dict[str, set[str]]:
    funcs = cli_functions()
    out = {}
    for name, stage in stages().items():
        words = [w for w in stage["cmd"].split() if not re.fullmatch(r"\$\{[^}]+\}", w)]  # a launcher param (torchrun)
        if words[0] != "synthmri" or words[1] not in funcs:
            raise AssertionError(f"stage {name}: cmd {stage['cmd']!r} is not a `synthmri <command>` this test can follow")
        out[name] = import_closure(funcs[words[1]])
    return out


def test_every_stage_depends_on_the_code_it_imports():
    missing = [f"stage {name}: {f} is imported by its command but not among its deps"
               for name, closure in stage_closures().items() for f in sorted(closure)
               if not covers(stages()[name]["deps"], f)]
    assert not missing, "\n".join(missing)


def test_no_stage_depends_on_code_it_does_not_import():
    """A source dep nothing imports reruns the stage for nothing (a folder counts if it holds an imported file)."""
    extra = [f"stage {name}: dep {d} holds no file its command imports"
             for name, stage in stages().items() for d in stage["deps"]
             if d.startswith("src/") and not any(covers([d], f) for f in stage_closures()[name])]
    assert not extra, "\n".join(extra)


def test_the_closure_follows_function_local_and_package_imports():
    """The walk itself, on imports whose truth is known: `_run` and `ingest` import lazily."""
    closure = import_closure("ingest")
    assert {CLI, "src/synthmri/__init__.py", "src/synthmri/params.py", "src/synthmri/io.py",
            "src/synthmri/data/__init__.py", "src/synthmri/data/ingest.py", "src/synthmri/images.py"} <= closure
    assert not any(f.startswith(("src/synthmri/classify/", "src/synthmri/generative/")) for f in closure)
    assert "src/synthmri/pretrained.py" in import_closure("classify")
    assert "src/synthmri/report_command.py" in import_closure("report")
    assert "src/synthmri/report.py" not in import_closure("classify")


def test_stages_that_can_load_weights_depend_on_the_weights_folder():
    """Stages reaching the checked loader depend on models/pretrained, which exists in every checkout
    (its README is tracked by git), so the demo profile, with no weights, still runs."""
    loaders = sorted(n for n, c in stage_closures().items() if "src/synthmri/pretrained.py" in c)
    assert {"fidelity", "classify@*", "ratio"} <= set(loaders)
    missing = [n for n in loaders if not covers(stages()[n]["deps"], WEIGHTS_DIR)]
    assert not missing, f"stages that load pretrained weights without a dep on {WEIGHTS_DIR}: {missing}"
    assert (ROOT / WEIGHTS_DIR / "README.md").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{WEIGHTS_DIR}/README.md"], cwd=ROOT).returncode
    assert ignored == 1, f"{WEIGHTS_DIR}/README.md must be tracked by git so the folder exists in a fresh clone"


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "conf/profile").glob("*.yaml")))
def test_every_profile_keeps_its_weights_under_the_tracked_folder(profile, tmp_path):
    from synthmri.profiles import compose

    raw = yaml.safe_load(compose([f"profile={profile}"], tmp_path / "params.yaml", ROOT / "conf").read_text())
    paths = []
    if not raw["fidelity"].get("random_weights"):
        paths.append(("fidelity.weights", raw["fidelity"]["weights"]))
    if raw["classify"]["model"].get("pretrained"):
        paths.append(("classify.model.weights_dir", raw["classify"]["model"]["weights_dir"]))
    for key, path in paths:
        assert covers([WEIGHTS_DIR], PurePosixPath(path).as_posix()), \
            f"profile {profile}: {key} = {path} lies outside {WEIGHTS_DIR}, which no stage depends on"


# ---- the shape: stage packages stand on the ground floor only ------------------------------------------

GROUND_FLOOR = frozenset(f"src/synthmri/{name}" for name in
                         ("__init__.py", "params.py", "io.py", "runtime.py", "pretrained.py", "images.py",
                          "tasks.py"))  # tasks: the class mapping every stage after preprocess reads
STAGE_PACKAGES = ("data", "generative", "fidelity", "classify")  # cli.py, report*.py, summary.py, profiles.py aggregate


def floor_violations(file: str, tree: ast.Module, allowed: str | None) -> list[str]:
    """Each import statement in `file` that loads a synthmri file outside the ground floor and the `allowed` folder."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bad = sorted(f for f in _imported_files([node], file)
                         if f not in GROUND_FLOOR and not (allowed and f.startswith(allowed)))
            if bad:
                out.append(f"{file}:{node.lineno}: `{ast.unparse(node)}` loads {', '.join(bad)}")
    return out


def test_stage_packages_import_only_the_ground_floor_and_themselves():
    """Issue 9 §7: a stage package imports (at any depth of a function) only the ground floor and its own
    files; a service two stages need moves down to the ground floor, which imports only itself."""
    files = {f: f"src/synthmri/{pkg}/" for pkg in STAGE_PACKAGES
             for f in sorted(p.relative_to(ROOT).as_posix() for p in (SRC / "synthmri" / pkg).rglob("*.py"))}
    assert len(files) > 30 and all(any(f.startswith(d) for f in files) for d in set(files.values()))
    files.update({f: None for f in sorted(GROUND_FLOOR)})
    bad = [v for f, allowed in files.items() for v in floor_violations(f, _tree(f), allowed)]
    assert not bad, "\n".join(bad)

    # the check itself: a lazy import of another stage's module is caught, named with its line
    probe = ast.parse("def resample():\n    from synthmri.generative.config import load_generate\n")
    assert floor_violations("src/synthmri/fidelity/evaluate.py", probe, "src/synthmri/fidelity/") == [
        "src/synthmri/fidelity/evaluate.py:2: `from synthmri.generative.config import load_generate` loads "
        "src/synthmri/generative/__init__.py, src/synthmri/generative/config.py"]
    relative = ast.parse("from ..data import dedup_engines\nfrom . import metrics\n")
    assert floor_violations("src/synthmri/fidelity/features.py", relative, "src/synthmri/fidelity/") == [
        "src/synthmri/fidelity/features.py:1: `from ..data import dedup_engines` loads "
        "src/synthmri/data/__init__.py, src/synthmri/data/dedup_engines.py"]


# ---- the real dvc CLI ---------------------------------------------------------------------------------


def _modified(status: dict, path: str) -> set[str]:
    """Stages for which `dvc status` reports `path`, or a folder dep above it, as a modified dependency."""
    return {stage for stage, changes in status.items() for change in changes if isinstance(change, dict)
            and covers([d for d, how in change.get("changed deps", {}).items() if how == "modified"], path)}


@pytest.mark.slow
def test_dvc_status_marks_exactly_the_stages_that_import_an_edited_helper(tmp_path, demo_baseline, venv_env):
    """The data stages have run (a lock entry each): an edit must show on exactly those that import the
    file. Stages never run list every dep as modified, so for them this checks dvc.yaml's lists as DVC reads them."""
    repo = private_copy(demo_baseline, tmp_path / "repo")
    edited = ("src/synthmri/images.py", "src/synthmri/data/planes.py", "src/synthmri/io.py")
    for rel in edited:
        with open(repo / rel, "a") as f:
            f.write("# an edit that changes no behaviour, but DVC cannot know that\n")
    status = json.loads(sh(["dvc", "status", "--json"], repo, venv_env, stdout_only=True))
    ran = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert {"demo_data", "ingest", "audit", "dedup", "preprocess"} <= ran
    closures = stage_closures()
    for rel in edited:
        expected = {s for s in ran | set(status) if rel in closures[s.split("@")[0] + ("@*" if "@" in s else "")]}
        assert _modified(status, rel) == expected, rel
    assert _modified(status, "src/synthmri/images.py") & ran == {"ingest", "audit", "dedup", "link", "preprocess"}
    assert _modified(status, "src/synthmri/data/planes.py") == {"audit"}
    assert _modified(status, "src/synthmri/io.py") >= ran  # the ground floor: every stage
