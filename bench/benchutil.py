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
