"""Faults on the data stages: a stage killed mid-write, an unwritable output folder, a full disk.

Each fault is made by the kernel where the machine allows it: a file-size limit kills the stage while it
writes, a folder without write permission refuses the write (root's override of permission bits is dropped
first), and a 16 kB tmpfs, mounted in a private mount namespace so nothing outside the test sees it, fills up.
That last one needs unprivileged user namespaces; where a machine lacks them the suite's summary says so, and
the same full disk is also simulated in-process (every Python-level write to the folder raises ENOSPC once a
few bytes have gone in), which runs everywhere.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synthmri.cli import app
from tests.conftest import machine_lacks, private_copy, ran, sh

SIMULATED = "test_disk_faults_simulated_in_process_are_clear_errors"  # runs on every machine
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


@pytest.mark.slow
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


def without_permission_override() -> None:
    """preexec_fn: as root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set (what
    `setpriv --bounding-set -dac_override,-dac_read_search` does), so the exec'd stage obeys permission bits."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(ctypes.get_errno())}")


@pytest.mark.slow
def test_unwritable_output_folder_is_a_clear_error(project, env, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    argv = [*stage_argv(project, "ingest")[:2], "data/raw/demo", str(locked), "--metrics", str(tmp_path / "m.json")]
    try:
        proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True,
                              preexec_fn=without_permission_override)
    except subprocess.SubprocessError as e:  # a container without CAP_SETPCAP cannot drop capabilities
        machine_lacks("a way to drop root's permission override", str(e), SIMULATED)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "permission denied" in proc.stderr.lower() and str(locked) in proc.stderr.replace("\n", "")
    assert not any(locked.iterdir())


def on_full_disk(folder: Path, argv: list[str]) -> list[str]:
    """Run `argv` with a 16 kB tmpfs mounted on `folder` in a private mount namespace, then list what the
    command left there (the tmpfs, and so its contents, vanish with the namespace)."""
    script = 'mount -t tmpfs -o size=16k synthmri-full "$0" || exit 97; "$@"; rc=$?; echo "left: [$(cd "$0" && find . -mindepth 1)]" >&2; exit $rc'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(folder), *argv]




@pytest.mark.slow
@pytest.mark.parametrize("stage", ["demo-data", "ingest"])
def test_full_disk_is_a_clear_error(project, env, tmp_path, stage):
    if not shutil.which("unshare"):
        machine_lacks("util-linux's unshare", "cannot mount a small tmpfs", SIMULATED)
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    args = {"demo-data": [str(out)], "ingest": ["data/raw/demo", str(out), "--metrics", str(tmp_path / "m.json")]}
    proc = subprocess.run(on_full_disk(disk, ["synthmri", stage, *args[stage]]), cwd=project, env=env,
                          capture_output=True, text=True)
    if proc.returncode == 97 or "unshare:" in proc.stderr:
        machine_lacks("unprivileged user and mount namespaces", proc.stderr.strip().splitlines()[-1], SIMULATED)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_disk_error(proc.stderr)
    left = proc.stderr.rsplit("left: [", 1)[1].split("]", 1)[0].split()
    assert not [p for p in left if p.endswith(".tmp") or Path(p).name.startswith(".")], left  # no temporaries
    assert not (tmp_path / "m.json").exists()


def assert_one_line_disk_error(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("left: [")]
    errors = [line for line in lines if line.startswith("error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    message = " ".join(stderr[stderr.index("error:"):].split())  # Rich may wrap the one line
    assert "No space left on device" in message and "the disk is full" in message, message


class FaultyFolder:
    """`folder` as the kernel would present it on a full disk (`free` bytes left: writes go through until the
    bytes run out, then raise ENOSPC as write(2) does) or when it is not writable (creating a file or folder
    in it raises EACCES with the path, as open(2) and mkdir(2) do). It catches every file opened through
    Python (`open`, `io.open`, `os.open`: pandas, pathlib, PIL, tempfile), which is how these stages write."""

    def __init__(self, folder: Path, fault: int, free: int = 0):
        self.folder, self.fault, self.free, self.used, self.refused = os.path.realpath(folder), fault, free, 0, 0
        self._open, self._os_open, self._mkdir = builtins.open, os.open, os.mkdir

    def inside(self, path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(self.folder + os.sep)

    def refuse(self, path=None):
        self.refused += 1
        return OSError(self.fault, os.strerror(self.fault), *([os.fspath(path)] if path is not None else []))

    def open(self, file, mode="r", *args, **kwargs):
        writing = self.inside(file) and any(c in mode for c in "wax+")
        if writing and self.fault == errno.EACCES:
            raise self.refuse(file)
        f = self._open(file, mode, *args, **kwargs)
        if writing:
            write = f.write

            def full_write(data):
                n = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
                if self.used + n > self.free:
                    raise self.refuse()  # write(2) names no file
                self.used += n
                return write(data)

            f.write = full_write
        return f

    def os_open(self, path, flags, *args, **kwargs):
        if self.fault == errno.EACCES and self.inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise self.refuse(path)
        return self._os_open(path, flags, *args, **kwargs)

    def mkdir(self, path, *args, **kwargs):
        if self.fault == errno.EACCES and self.inside(path):
            raise self.refuse(path)
        return self._mkdir(path, *args, **kwargs)


@pytest.mark.parametrize("fault, stage", [(errno.ENOSPC, "demo-data"), (errno.ENOSPC, "ingest"), (errno.EACCES, "ingest")],
                         ids=["full-demo-data", "full-ingest", "unwritable-ingest"])
def test_disk_faults_simulated_in_process_are_clear_errors(tmp_path, monkeypatch, fault, stage):
    """The full-disk and unwritable-folder tests above without a tmpfs or dropped capabilities: the stage runs
    in this process against a folder with 1 kB left, or one that refuses new files."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "data": {"classes": ["glioma", "meningioma", "notumor", "pituitary"]},
        "demo": {"train_per_class": 4, "test_per_class": 1, "size": 64, "exact_duplicates": 1,
                 "near_duplicates": 1, "leaked_duplicates": 1},
        "ingest": {"workers": 1},
    }))
    source = tmp_path / "source"
    if stage == "ingest":  # a real dataset to inventory, written while the disk still had room
        result = CliRunner().invoke(app, ["demo-data", str(source), "--params", str(params)])
        assert result.exit_code == 0, result.output
    disk = tmp_path / "disk"
    disk.mkdir()
    out, metrics = disk / "out", tmp_path / "m.json"
    if fault == errno.EACCES:
        out.mkdir()  # as in the real test: the output folder exists and refuses what goes in it
    args = {"demo-data": [str(out)], "ingest": [str(source), str(out), "--metrics", str(metrics)]}[stage]
    folder = FaultyFolder(out if fault == errno.EACCES else disk, fault, free=1024)
    monkeypatch.setattr(builtins, "open", folder.open)
    monkeypatch.setattr(io, "open", folder.open)
    monkeypatch.setattr(os, "open", folder.os_open)
    monkeypatch.setattr(os, "mkdir", folder.mkdir)
    result = CliRunner().invoke(app, [stage, *args, "--params", str(params)])
    monkeypatch.undo()

    assert folder.refused >= 1  # the stage did hit the fault ...
    assert result.exit_code == 2, result.output  # ... and said so in one line, not a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if fault == errno.ENOSPC:
        assert_one_line_disk_error(result.stderr)
    else:
        message = " ".join(result.stderr.split())
        assert message.count("error:") == 1 and "Traceback" not in message, result.stderr
        assert "Permission denied" in message and str(out) in result.stderr.replace("\n", ""), result.stderr
    left = [p.relative_to(disk).as_posix() for p in disk.rglob("*")]
    assert not [p for p in left if p.endswith(".tmp") or any(part.startswith(".") for part in p.split("/"))], left
    assert not (out / "manifest.csv").exists() and not metrics.exists()  # nothing complete-looking
