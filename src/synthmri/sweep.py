"""`synthmri sweep`: the SD-Turbo study's real:synthetic ratio sweep as DVC experiments, one per ratio, queued and
run one at a time, then compared. Not a stage: it drives `dvc exp run` (README, "The SD-Turbo study")."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import yaml

# Our reading of the study's eight conditions A-H (its notebooks do not record them): "up to 50 %" synthetic
# lowered the scores, "2x or more" raised them, 1:4 was the best (94.81 %).
RATIOS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
WAIT_S = 30  # between `dvc queue status` polls


def commands(profile: str, ratios: Sequence[float] = RATIOS, overrides: Sequence[str] = ()) -> list[list[str]]:
    """The dvc commands, in order: one queued experiment per ratio, then one worker (`-j 1`: more race, DVC #10673)."""
    sets = [a for o in (f"profile={profile}", *overrides) for a in ("-S", o)]
    return [["dvc", "exp", "run", "--queue", *sets, "-S", f"ratio={r:g}"] for r in ratios] + \
        [["dvc", "queue", "start", "-j", "1"]]


def check_coverage(profile: str, ratios: Sequence[float], overrides: Sequence[str] = (), root: Path = Path(".")) -> str:
    """Refuse a sweep whose largest ratio asks for more synthetic images than `generate.n_per_class` makes.
    The real training counts come from the workspace's processed manifest when it is this profile's; returns
    what was checked."""
    from synthmri.profiles import write_params

    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(write_params([f"profile={profile}", *overrides], Path(tmp) / "params.yaml",
                                           root / "conf").read_text())
    n, top = int(data["generate"]["n_per_class"]), max(ratios)
    workspace = root / "params.yaml"
    manifest = root / "data/processed/manifest.csv"
    if not manifest.is_file() or not workspace.is_file() \
            or (yaml.safe_load(workspace.read_text()) or {}).get("profile_name") != data["profile_name"]:
        return (f"generate.n_per_class={n}; ratio {top:g} not checked against the real counts (no processed data of "
                f"profile {profile} here: the ratio stage checks it when it runs)")
    man = pd.read_csv(manifest, keep_default_na=False, usecols=["status", "split", "class"])
    counts = man[(man["status"] == "kept") & (man["split"] == "train")].groupby("class").size()
    cls, real = str(counts.idxmax()), int(counts.max())
    need = int(top * real)  # the ratio stage's int(ratio x real) per class
    if need > n:
        raise ValueError(f"ratio {top:g} needs {need} synthetic {cls} images ({real} real), but generate.n_per_class is "
                         f"{n}: add -S generate.n_per_class={need} or drop the ratios above {n / real:.2f}")
    return f"generate.n_per_class={n} covers ratio {top:g} ({need} synthetic {cls} for {real} real)"


def _pending(run: Callable[..., subprocess.CompletedProcess]) -> int:
    out = run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if any(w in line.split() for w in ("Queued", "Running")))


def sweep(profile: str, ratios: Sequence[float] = RATIOS, overrides: Sequence[str] = (), *, dry_run: bool = False,
          wait: bool = True, echo: Callable[[str], None] = print,
          run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[list[str]]:
    """Queue one experiment per ratio, start one worker, wait for the queue to empty, show the comparison."""
    if not ratios:
        raise ValueError("no ratios to sweep")
    echo(check_coverage(profile, ratios, overrides))
    cmds = commands(profile, ratios, overrides)
    for cmd in cmds:
        echo(" ".join(cmd))
        if not dry_run:
            run(cmd, check=True)
    show = ["dvc", "exp", "show", "--only-changed"]
    if dry_run or not wait:
        echo(f"then, when `dvc queue status` shows none queued or running: {' '.join(show)}")
        return cmds
    while _pending(run):
        time.sleep(WAIT_S)
    run(show, check=True)
    return cmds
