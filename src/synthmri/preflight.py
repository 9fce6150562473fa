"""`synthmri check`: what a long run needs, checked in seconds before any compute (issue 14 §1).

A full run trains generators for hours before fidelity loads its Inception weights; a missing file
found then costs the whole run. This reads params.yaml and checks, without running any stage: every
section's params, the raw data and its layout, every pretrained file the profile will load (present
and verified against the registry), the device, free disk against an estimate of what the run
writes, and the wall time projected from the GPU benchmark's rates when its results are at hand.
Each check is `ok`, `warn` (runs, but read the line) or `FAIL` (the run would stop or lie).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from synthmri import pretrained
from synthmri import params as P
from synthmri.classify.config import load_classify
from synthmri.fidelity.config import load_fidelity
from synthmri.generative.config import load_generate, load_generator

Status = Literal["ok", "warn", "FAIL"]
DEMO_RAW = "data/raw/demo"  # written by the demo_data stage itself
# What a stage writes per image, in bytes: a 256 px 8-bit PNG of a brain slice is about 40 kB; kept generous.
PNG_BYTES = {128: 15_000, 256: 60_000}
GPU_RESULTS = Path("bench/results")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def run_checks(params_path: Path = Path("params.yaml"), root: Path = Path(".")) -> list[Check]:
    """Every check, in the order a run meets them. Never raises for what it checks: a FAIL says it."""
    try:
        raw = P.read_params(params_path)
    except P.ParamsError as e:
        return [Check("params", "FAIL", str(e))]
    checks = [_check_params(raw)]
    if checks[0].status == "FAIL":
        return checks
    checks.append(_check_raw(raw, root))
    checks += _check_weights(raw, root)
    checks.append(_check_device(raw))
    checks.append(_check_disk(raw, root))
    checks.append(_check_time(raw, root))
    return checks


def _profile(raw: dict) -> str:
    return str(raw.get("profile_name", "unnamed"))


def _check_params(raw: dict) -> Check:
    try:
        for section in P.SECTIONS:
            P.load(section, data=raw)
        load_generator(raw.get("generator"))
        load_generate(raw.get("generate"))
        load_fidelity(raw.get("fidelity"))
        load_classify(raw.get("classify"))
    except (P.ParamsError, ValueError, TypeError) as e:
        return Check("params", "FAIL", f"profile {_profile(raw)}: {e}")
    return Check("params", "ok", f"profile {_profile(raw)}: every section valid")


def _check_raw(raw: dict, root: Path) -> Check:
    data = P.load("data", data=raw)
    path = root / data.raw
    if data.raw == DEMO_RAW and not path.exists():
        return Check("raw data", "ok", f"{data.raw}: written by the demo_data stage")
    try:  # missing or empty: the raw_check stage's own message, in the profile's words (data.source)
        P.check_raw(path, raw)
    except FileNotFoundError as e:
        return Check("raw data", "FAIL", str(e))
    if data.format == "figshare":  # the .mat release: ingest checks its zips and every slice itself
        return Check("raw data", "ok", f"{data.raw}: data.format figshare ({'file' if path.is_file() else 'folder'})")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            return Check("raw data", "FAIL", f"{data.raw}: not a zip archive or a folder")
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
        folders = {part for m in members for part in m.strip("/").split("/")[:-1]}  # every folder named in it
        return _layout_result(data.raw, folders, data.classes, f"zip, {len(members):,} entries")
    tops = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(tops) == 1 and tops[0].is_dir() and not _splits(path):
        path = tops[0]  # one wrapping folder, as ingest allows
    names = {p.name for p in path.iterdir()}
    for d in _splits(path).values():
        names |= {p.name for p in d.iterdir() if p.is_dir()}
    n = sum(1 for d in _splits(path).values() for f in d.rglob("*") if f.is_file())
    return _layout_result(data.raw, names, data.classes, f"{n:,} files")


def _splits(root: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in root.iterdir() if p.is_dir() and p.name.lower() in ("training", "testing")}


def _layout_result(where: str, names: set[str], classes: tuple[str, ...], size: str) -> Check:
    lower = {n.lower() for n in names}
    missing = [n for n in ("Training", "Testing") if n.lower() not in lower] + [c for c in classes if c not in names]
    if missing:
        return Check("raw data", "FAIL", f"{where}: expected Training/<class>/ and Testing/<class>/ with classes "
                                         f"{list(classes)}; missing {missing}")
    return Check("raw data", "ok", f"{where}: Kaggle layout, {size}")


def _check_weights(raw: dict, root: Path) -> list[Check]:
    """The files the fidelity and classify stages will load, checked as they will check them."""
    fid, cls = load_fidelity(raw.get("fidelity")), load_classify(raw.get("classify"))
    wanted = []
    if fid.random_weights:
        wanted.append(("weights: fidelity", None, "random Inception weights (fidelity.random_weights): FID/IS compare with nothing"))
    else:
        wanted.append(("weights: fidelity", root / fid.weights, ""))
    if cls.model.pretrained:
        wanted.append((f"weights: classify ({cls.model.arch})", root / cls.model.weights_dir / pretrained.get(cls.model.arch).file, ""))
    else:
        wanted.append(("weights: classify", None, "classify.model.pretrained: false: classifiers start from random weights"))
    out = []
    for name, path, note in wanted:
        if path is None:
            out.append(Check(name, "warn", note))
            continue
        try:
            c = pretrained.check(path)
        except (pretrained.MissingWeightsError, pretrained.WeightsError) as e:
            out.append(Check(name, "FAIL", str(e)))
            continue
        how = {"sha256": "full sha256 verified", "prefix": "only the name's sha256 prefix checked",
               "none": "not a registry file: digest recorded, not verified"}[c.verified]
        out.append(Check(name, "ok" if c.verified == "sha256" else "warn", f"{c.path}: {how} ({c.sha256[:12]}…)"))
    return out


def _check_device(raw: dict) -> Check:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        n = torch.cuda.device_count()
        return Check("device", "ok", f"CUDA: {n} × {props.name}, {props.total_memory / 2**30:.0f} GiB")
    wants_cuda = [k for k, v in _device_params(raw).items() if str(v).startswith("cuda")]
    if wants_cuda:
        return Check("device", "FAIL", f"no CUDA device, but {', '.join(wants_cuda)} ask for one")
    if _profile(raw) == "demo":
        return Check("device", "ok", "CPU (the demo is sized for it)")
    return Check("device", "warn", "no CUDA device: the paper's generators (750 epochs × 4 classes) would take weeks on CPU")


def _device_params(raw: dict) -> dict[str, Any]:
    out = {}
    for section, sub in (("generator", "train"), ("generate", None), ("fidelity", None), ("classify", "train")):
        block = raw.get(section) or {}
        block = (block.get(sub) or {}) if sub else block
        if "device" in block:
            out[f"{section}.{sub + '.' if sub else ''}device"] = block["device"]
    return out


def estimate_bytes(raw: dict, root: Path) -> int:
    """What the run writes, roughly, counting DVC's cache copy of every cached output (x2)."""
    data, gen = P.load("data", data=raw), load_generate(raw.get("generate"))
    pre = P.load("preprocess", data=raw)
    path = root / data.raw
    raw_bytes = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir()
                 else path.stat().st_size if path.is_file() else 0)
    per_png = PNG_BYTES.get(pre.size, pre.size * pre.size)
    per_png_out = PNG_BYTES.get(gen.out_size, gen.out_size * gen.out_size)
    n_raw_images = max(raw_bytes // 25_000, 0)  # Kaggle JPEGs average about 20-30 kB
    processed = n_raw_images * per_png
    synthetic = gen.n_per_class * len(data.classes) * per_png_out
    generators = len(data.classes) * 3 * 60_000_000  # weights + Adam states of a (128, 256, 256) UNet, fp32
    return 2 * (raw_bytes + processed + synthetic + generators)


def _check_disk(raw: dict, root: Path) -> Check:
    need = estimate_bytes(raw, root)
    free = shutil.disk_usage(root).free
    detail = f"{free / 2**30:.1f} GiB free, the run writes about {need / 2**30:.1f} GiB (outputs + DVC cache)"
    return Check("disk", "ok" if free > 1.5 * need else "warn" if free > need else "FAIL", detail)


def _check_time(raw: dict, root: Path) -> Check:
    """From `bench/gpu.py`'s full runs (mode "full"; tiny and FLOPs-only runs measure no GPU rate)."""
    runs = [(r, json.loads(r.read_text())) for r in sorted((root / GPU_RESULTS).glob("gpu-*.json"))]
    runs = [(r, d) for r, d in runs if d.get("mode") == "full" and "total_s" in d.get("projection", {})]
    if not runs:
        return Check("wall time", "warn", "no GPU benchmark results (bench/results/gpu-*.json from a full "
                                          "`python bench/gpu.py` run on the GPU machine): no projection")
    path, d = runs[-1]
    minutes = d["projection"]["total_s"] / 60
    return Check("wall time", "ok", f"about {minutes:.0f} min for the whole paper on {d.get('device')} ({path.name}, "
                                    f"the paper profile's workload); other profiles scale with their epochs and counts")


def report(checks: list[Check]) -> tuple[str, int]:
    """Printable lines and the exit code (1 when any check FAILs)."""
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<4}  {c.name:<{width}}  {c.detail}" for c in checks]
    failed = sum(c.status == "FAIL" for c in checks)
    lines.append(f"{failed} check(s) failed: fix them before `dvc repro`" if failed else "ready")
    return "\n".join(lines), int(failed > 0)


def to_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
