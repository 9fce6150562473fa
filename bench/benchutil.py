"""What every bench script records beside its figures: the machine, the command, and where the raw JSON goes.

Each script writes one JSON file (default under bench/results/, `--out` to choose) holding its figures,
the exact command line that produced them and the machine, so every row of BENCHMARKS.md can be
traced to a file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine(device: Any = None) -> dict[str, Any]:
    """CPU, cores, RAM, load, Python and library versions; the GPU when `device` is a CUDA device."""
    out: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "ram_gb": ram_gb(),
                           "loadavg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                           "platform": platform.platform()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda_build"] = torch.version.cuda
        if device is not None and getattr(device, "type", None) == "cuda":
            p = torch.cuda.get_device_properties(device)
            out["gpu"] = p.name
            out["gpu_memory_gb"] = round(p.total_memory / 2**30, 1)
            out["gpu_capability"] = f"{p.major}.{p.minor}"
            out["gpu_count"] = torch.cuda.device_count()
        else:
            out["gpu"] = None
    except ImportError:
        pass
    return out


def command() -> str:
    """The command line as typed from the repository root (python + script + arguments)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in keep.split("-") if part)


def write_result(out: Path | None, default_name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus command, machine if absent, UTC time) as JSON; return the path."""
    path = Path(out) if out else RESULTS / f"{default_name}.json"
    record = {"command": command(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    record.setdefault("machine", machine())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_jsonable, allow_nan=False) + "\n")
    return path


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if isinstance(x, Path):
        return x.as_posix()
    if isinstance(x, (set, frozenset, tuple)):
        return list(x)
    raise TypeError(f"not JSON: {type(x).__name__}")


def finite(x: float) -> float:
    """A measured figure must be a positive finite number; anything else is a bench bug."""
    if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
        raise ValueError(f"measured figure is not a positive finite number: {x!r}")
    return float(x)


def run_measured(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None,
                 interval: float = 0.2) -> dict[str, Any]:
    """Run `cmd` as a child process; its wall time and peak memory.

    - `maxrss_gb`: the kernel's RSS high-water mark of the largest single process of the tree
      (wait4's ru_maxrss covers the child and the descendants it waited for: pool workers);
    - `tree_rss_gb` / `tree_pss_gb`: the highest sum over the child and all its descendants, sampled every
      `interval` s with psutil (RSS counts pages shared by forked workers once per process: an upper bound;
      PSS shares them out). None when psutil is not installed.
    Raises RuntimeError with the end of stderr when the command fails.
    """
    import subprocess
    import tempfile
    import threading

    try:
        import psutil
    except ImportError:
        psutil = None
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = {"rss": 0, "pss": 0}
        done = threading.Event()

        def sample() -> None:
            try:
                top = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not done.is_set():
                rss = pss = 0
                try:
                    for p in [top, *top.children(recursive=True)]:
                        try:
                            m = p.memory_full_info()
                        except psutil.Error:
                            continue
                        rss += m.rss
                        pss += getattr(m, "pss", m.rss)
                except psutil.Error:
                    pass
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True) if psutil else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        done.set()
        if sampler:
            sampler.join()
        err.seek(0)
        tail = err.read().decode(errors="replace")[-3000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    gb = lambda b: round(b / 2**30, 3) if b else None  # noqa: E731
    return {"wall_s": round(wall, 3), "maxrss_gb": gb(usage.ru_maxrss * 1024),  # ru_maxrss: KiB on Linux
            "tree_rss_gb": gb(peak["rss"]), "tree_pss_gb": gb(peak["pss"]),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}
