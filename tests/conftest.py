"""Shared fixtures: the project root and a PATH on which `synthmri` and `dvc` resolve to this venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# ---- helpers for tests that run the real CLI in a copy of the project ----------------------------
# (shared by the end-to-end, remote, queue and fault tests)

PIPELINE_OUTPUTS = ("data/", "metrics/", "plots/", "dvc.lock")


def sh(args: list[str], cwd: Path, env: dict[str, str], *, stdout_only: bool = False) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(root: Path, dst: Path, env: dict[str, str]) -> Path:
    """A git + DVC copy of the project's files (tracked and untracked, not ignored; no pipeline
    outputs) at `dst`, committed, with the `team` remote pointed at a folder beside it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = root / rel
        if src.is_file() and not rel.startswith(PIPELINE_OUTPUTS):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
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


def private_copy(repo: Path, dst: Path) -> Path:
    """A full copy of a repository (git history, workspace, DVC cache) to change freely."""
    shutil.copytree(repo, dst, symlinks=True)
    return dst
