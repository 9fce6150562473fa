"""Benchmark: a newcomer's first commands on a fresh clone, timed in one run (issue: the first five minutes).

    python bench/demo.py [--dir ../synthmri-fresh] [--test] [--out FILE]

Clones this repository's HEAD into `--dir` (a new folder; put it beside the checkout so that it sits where
CI's clean clone does), then times `make install`, `make demo` and, with `--test`, `make test` there, in
that order, as the README tells a newcomer. Each command's output goes to `<dir>/bench-<step>.log`. Records
the wall time of each step (with the fidelity feature cache set aside: a newcomer's cold start), the demo's headline numbers (baseline and S6 accuracy), whether `git status`
after the demo shows only DVC's files, and the machine (with its load average before and after: the times
are only comparable on an otherwise idle machine). Targets: demo <= 300 s, test <= 600 s after the install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import machine, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the fidelity stage's feature cache (conf/config.yaml fidelity.cache_dir): set aside for the run, so the demo
# pays what a newcomer's first demo pays (a warm cache skips the real images' Inception features)
FIDELITY_CACHE = Path.home() / ".cache" / "synthmri" / "fidelity"
TARGETS_S = {"demo": 300, "test": 600}
# what a demo may leave in `git status` (DVC's lock and its uncached outputs; params.yaml on the demo profile)
DEMO_LEAVES = ("params.yaml", "dvc.lock", "metrics/", "plots/", "dvclive/", "checkpoints/")


def timed(step: str, cmd: list[str], cwd: Path) -> dict:
    log = cwd / f"bench-{step}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace").splitlines()[-3:]
    print(f"{step}: {wall:.0f} s, exit {rc}" + ("" if rc == 0 else f"\n  {' | '.join(tail)}"), flush=True)
    return {"wall_s": round(wall, 1), "exit": rc, "log": str(log), "tail": tail,
            **({"target_s": TARGETS_S[step], "met": rc == 0 and wall <= TARGETS_S[step]} if step in TARGETS_S else {})}


def git_status_after_demo(cwd: Path) -> dict:
    lines = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True).stdout.splitlines()
    paths = [ln[3:] for ln in lines if not ln[3:].startswith("bench-")]  # this script's own logs
    return {"lines": lines, "only_dvc_files": all(p.startswith(DEMO_LEAVES) for p in paths)}


def headline(cwd: Path) -> dict:
    out = {}
    for name in ("baseline", "s6_synthetic"):
        f = cwd / "metrics" / "scenarios" / f"{name}.json"
        if f.exists():
            acc = json.loads(f.read_text()).get("accuracy", {})
            out[name] = {k: acc.get(k) for k in ("mean", "ci95_low", "ci95_high")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=REPO.parent / "synthmri-fresh", help="the fresh clone (must not exist)")
    ap.add_argument("--test", action="store_true", help="also time `make test` after the demo")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/demo[-test].json)")
    args = ap.parse_args()
    if args.dir.exists():
        sys.exit(f"{args.dir} exists: the bench needs a fresh clone (remove it or pass --dir)")
    aside = FIDELITY_CACHE.with_name(f"fidelity.bench-aside-{os.getpid()}")
    if FIDELITY_CACHE.exists():
        FIDELITY_CACHE.rename(aside)
    try:
        run(args)
    finally:
        if aside.exists():
            shutil.rmtree(FIDELITY_CACHE, ignore_errors=True)
            aside.rename(FIDELITY_CACHE)


def run(args: argparse.Namespace) -> None:
    before = machine()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(args.dir)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.dir, capture_output=True,
                            text=True).stdout.strip()
    steps = {"install": timed("install", ["make", "install"], args.dir)}
    if steps["install"]["exit"] == 0:
        steps["demo"] = timed("demo", ["make", "demo"], args.dir)
        result_extra = {"git_status_after_demo": git_status_after_demo(args.dir), "demo_headline": headline(args.dir)}
        if args.test:
            steps["test"] = timed("test", ["make", "test"], args.dir)
    else:
        result_extra = {}
    path = write_result(args.out, "demo-test" if args.test else "demo",
                        {"commit": commit, "clone": str(args.dir), "steps": steps, **result_extra,
                         "machine": before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]})
    print(f"wrote {path}")
    if not all(s["exit"] == 0 for s in steps.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
