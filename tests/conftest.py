"""Shared fixtures: the project root, a PATH on which `synthmri` and `dvc` resolve to this venv, copies of
the project for tests that run the real dvc CLI, and the suite's summary of tests this machine cannot run."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def venv_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's bin first, no telemetry, a git identity."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "synthmri tests")
    env.setdefault("GIT_AUTHOR_EMAIL", "tests@synthmri.invalid")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    return env


# ---- tests this machine cannot run ---------------------------------------------------------------
# A test that needs something the machine lacks (user namespaces, a tool) skips through `machine_lacks`,
# and the end of the run lists it apart from ordinary skips, with what else covers the same fault.

MACHINE_LACKS = "machine lacks "


def machine_lacks(feature: str, detail: str, covered_by: str) -> None:
    """Skip the calling test because this machine lacks `feature`; `covered_by` names the test that checks
    the same behaviour another way, which runs here."""
    pytest.skip(f"{MACHINE_LACKS}{feature}: {detail} (still covered by {covered_by})")


# ---- parallel runs (pytest-xdist, `make test`) ----------------------------------------------------
# A session fixture is built once per worker: the modules sharing `demo_run` (a whole demo pipeline) carry
# `DEMO_RUN_GROUP` so `--dist loadgroup` sends them to one worker and the suite pays for that run once.
DEMO_RUN_GROUP = pytest.mark.xdist_group("demo_run")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lacking = []
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reason = report.longrepr[2].removeprefix("Skipped: ")
            if reason.startswith(MACHINE_LACKS):
                lacking.append(f"{report.nodeid}: {reason.removeprefix(MACHINE_LACKS)}")
    if lacking:
        terminalreporter.write_sep("=", f"{len(lacking)} test(s) not run: this machine lacks what they need",
                                   yellow=True)
        for line in lacking:
            terminalreporter.write_line(line)


# ---- helpers for tests that run the real CLI in a copy of the project ----------------------------
# (shared by the end-to-end, classify, remote, queue, fault and kill/resume tests)


def sh(args: list[str], cwd: Path, env: dict[str, str], *, stdout_only: bool = False) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def declared_outputs(dvc_yaml: Path) -> list[str]:
    """Glob patterns of every path a stage of `dvc_yaml` writes (outs, metrics, plots; `${...}` as `*`),
    and dvc.lock: what a run leaves in the workspace, cached by DVC or not (checkpoints/, dvclive/, ...)."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    patterns = ["dvc.lock"]
    for stage in spec["stages"].values():
        body = stage.get("do", stage)  # foreach stages declare their outputs under `do`
        for key in ("outs", "metrics", "plots"):
            for entry in body.get(key) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                patterns.append(re.sub(r"\$\{[^}]*\}", "*", path).rstrip("/"))
    return patterns


def is_output(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p + "/*") for p in patterns)


def project_files(root: Path) -> list[str]:
    """The project's own files: tracked and untracked-but-not-ignored, minus every pipeline output, so a
    copy starts clean whatever the workspace holds (a `make demo` leaves checkpoints/, dvclive/, metrics/...)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    outputs = declared_outputs(root / "dvc.yaml")
    return [rel for rel in filter(None, listed) if (root / rel).is_file() and not is_output(rel, outputs)]


def copy_project(root: Path, dst: Path, env: dict[str, str]) -> Path:
    """A git + DVC copy of the project's files (`project_files`) at `dst`, committed, with the `team`
    remote pointed at a folder beside it. Its params.yaml is composed afresh from conf/ (the paper profile, as
    committed): the workspace's may be on another profile after `make demo`."""
    for rel in project_files(root):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst / rel)
    sh(["synthmri", "params", "profile=paper"], dst, env)
    sh(["git", "init", "-q", "-b", "main"], dst, env)
    sh(["dvc", "remote", "modify", "team", "url", str(dst.parent / "remote")], dst, env)
    sh(["git", "add", "-A"], dst, env)
    sh(["git", "commit", "-qm", "project"], dst, env)
    return dst


DATA_END = "preprocess"  # the data pipeline's last stage: tests that target it stay fast as the pipeline grows


@pytest.fixture(scope="session")
def demo_baseline(tmp_path_factory, root, venv_env) -> Path:
    """The project on the demo profile with the data pipeline run once and committed, its outputs in its
    DVC cache. Shared by several test modules: take a `private_copy`, never change this one."""
    repo = copy_project(root, tmp_path_factory.mktemp("baseline") / "repo", venv_env)
    sh(["synthmri", "params", "profile=demo"], repo, venv_env)
    sh(["dvc", "repro", DATA_END], repo, venv_env)
    sh(["git", "add", "-A"], repo, venv_env)
    sh(["git", "commit", "-qm", "demo data pipeline"], repo, venv_env)
    return repo


@dataclass(frozen=True)
class DemoRun:
    repo: Path  # the project after `dvc exp run -S profile=demo`, its results committed
    output: str  # what that command printed
    status: str  # `git status --porcelain` right after it, before the commit


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, root, venv_env) -> DemoRun:
    """`make demo`'s pipeline, once per test session: the whole demo profile run with the real
    `dvc exp run` in a copy of the project. Shared by the end-to-end and classify tests: read it, or take
    a `private_copy` to change anything."""
    repo = copy_project(root, tmp_path_factory.mktemp("demo_run") / "repo", venv_env)
    output = sh(["dvc", "exp", "run", "-S", "profile=demo"], repo, venv_env)
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], repo, venv_env, stdout_only=True)
    sh(["git", "add", "-A"], repo, venv_env)
    sh(["git", "commit", "-qm", "demo run"], repo, venv_env)
    return DemoRun(repo, output, status)


def private_copy(repo: Path, dst: Path) -> Path:
    """A full copy of a repository (git history, workspace, DVC cache) to change freely."""
    shutil.copytree(repo, dst, symlinks=True)
    return dst
