"""Faults on the data stages: a stage killed mid-write, an unwritable output folder, a full disk.

Each fault is real, made by the kernel, not by a stand-in: a file-size limit kills the stage while it writes,
a folder without write permission refuses the write (root's override of permission bits is dropped first),
and a 16 kB tmpfs, mounted in a private mount namespace so nothing outside the test sees it, fills up.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import private_copy, ran, sh

pytestmark = pytest.mark.slow

KILL_AT = 8192  # bytes; the demo's manifest.csv is ~50 kB, so ingest dies while writing it


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_baseline) -> Path:
    """The project on the demo profile with its data pipeline run and committed (a good previous result)."""
    return private_copy(demo_baseline, tmp_path_factory.mktemp("faults") / "repo")


@pytest.fixture(scope="module")
def env(venv_env) -> dict[str, str]:
    return {**venv_env, "PYTHONDONTWRITEBYTECODE": "1"}  # only the stage's own writes count against limits


def stage_argv(repo: Path, stage: str) -> list[str]:
    """The stage's command from dvc.yaml, with ${data.raw} filled in from params.yaml."""
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    raw = yaml.safe_load((repo / "params.yaml").read_text())["data"]["raw"]
    return shlex.split(cmd.replace("${data.raw}", raw))


def killed_past(limit: int, argv: list[str]) -> str:
    """A shell command that runs `synthmri ...` in-process under a file-size limit with SIGXFSZ at its
    default action, so the kernel kills the stage the moment a write crosses `limit` bytes: mid-write and
    as abrupt as SIGKILL (no exception, no `finally`). CPython ignores SIGXFSZ unless told otherwise."""
    code = (f"import resource, signal; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "signal.signal(signal.SIGXFSZ, signal.SIG_DFL); "
            f"from synthmri.cli import app; app(args={argv[1:]!r}, prog_name='synthmri')")
    return f"python -c {shlex.quote(code)}"


def test_stage_killed_mid_write_leaves_nothing_a_later_stage_takes_as_complete(project, env):
    ingest, audit_csv = project / "data/interim/ingest", project / "data/interim/audit.csv"
    good_manifest, good_audit = (ingest / "manifest.csv").read_bytes(), audit_csv.read_bytes()
    dvc_yaml = project / "dvc.yaml"
    original = dvc_yaml.read_text()
    spec = yaml.safe_load(original)
    spec["stages"]["ingest"]["cmd"] = killed_past(KILL_AT, stage_argv(project, "ingest"))
    dvc_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:  # the changed command makes `dvc repro` rerun ingest over its previous, complete result
        proc = subprocess.run(["dvc", "repro", "audit"], cwd=project, env=env, capture_output=True, text=True)
    finally:
        dvc_yaml.write_text(original)
    assert proc.returncode != 0 and ran(proc.stdout + proc.stderr) == {"ingest"}, proc.stdout + proc.stderr

    partial = list(ingest.glob(".manifest.csv.*.tmp"))
    # killed inside the manifest's write (only an abrupt death skips atomic_path's cleanup of its temporary) ...
    assert [p.stat().st_size for p in partial] == [KILL_AT]
    assert not (ingest / "manifest.csv").exists()  # ... whose half never got the manifest's name
    status = sh(["dvc", "status", "audit"], project, env)
    assert "up to date" not in status and "data/interim/ingest" in status, status  # DVC does not take it as done

    # the next stage, run by hand, refuses instead of auditing a truncated manifest
    audit = subprocess.run(stage_argv(project, "audit"), cwd=project, env=env, capture_output=True, text=True)
    assert audit.returncode == 2 and "manifest not found" in audit.stderr, audit.stderr
    assert audit_csv.read_bytes() == good_audit

    # and `dvc repro` restores the stage's last complete result (from its run cache) into a clean folder
    out = sh(["dvc", "repro", "audit"], project, env)
    assert re.search(r"Running stage 'ingest'|Stage 'ingest' is cached", out), out
    assert not list((project / "data").rglob("*.tmp"))
    assert (ingest / "manifest.csv").read_bytes() == good_manifest
    assert "up to date" in sh(["dvc", "status", "audit"], project, env)


def without_permission_override() -> list[str]:
    """A prefix that runs a command without root's CAP_DAC_OVERRIDE, so permission bits apply to it."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root and util-linux's setpriv is missing: cannot make a folder unwritable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_unwritable_output_folder_is_a_clear_error(project, env, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    argv = [*stage_argv(project, "ingest")[:2], "data/raw/demo", str(locked), "--metrics", str(tmp_path / "m.json")]
    proc = subprocess.run([*without_permission_override(), *argv], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "permission denied" in proc.stderr.lower() and str(locked) in proc.stderr.replace("\n", "")
    assert not any(locked.iterdir())


def on_full_disk(folder: Path, argv: list[str]) -> list[str]:
    """Run `argv` with a 16 kB tmpfs mounted on `folder` in a private mount namespace, then list what the
    command left there (the tmpfs, and so its contents, vanish with the namespace)."""
    script = 'mount -t tmpfs -o size=16k synthmri-full "$0" || exit 97; "$@"; rc=$?; echo "left: [$(cd "$0" && find . -mindepth 1)]" >&2; exit $rc'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(folder), *argv]


@pytest.mark.parametrize("stage", ["demo-data", "ingest"])
def test_full_disk_is_a_clear_error(project, env, tmp_path, stage):
    if not shutil.which("unshare"):
        pytest.skip("util-linux's unshare is missing: cannot mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    args = {"demo-data": [str(out)], "ingest": ["data/raw/demo", str(out), "--metrics", str(tmp_path / "m.json")]}
    proc = subprocess.run(on_full_disk(disk, ["synthmri", stage, *args[stage]]), cwd=project, env=env,
                          capture_output=True, text=True)
    if proc.returncode == 97 or "unshare:" in proc.stderr:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "no space left on device" in proc.stderr.lower()
    left = proc.stderr.rsplit("left: [", 1)[1].split("]", 1)[0].split()
    assert not [p for p in left if p.endswith(".tmp") or Path(p).name.startswith(".")], left  # no temporaries
    assert not (tmp_path / "m.json").exists()
