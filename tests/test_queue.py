"""Experiment variants through DVC's own queue: `dvc exp run --queue -S ...` twice, `dvc queue start -j 2`.

The demo's data pipeline runs once as the committed baseline; each queued variant changes only the CLAHE
clip limit, so its worker checks the four upstream stages out of the shared cache and runs `preprocess`
alone, in its own temporary copy, leaving the workspace as it was. `dvc exp show --json` then tells the
variants apart by their params and by the hash of what they wrote.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_END, private_copy, ran, sh

pytestmark = pytest.mark.slow

PARAM = "preprocess.clahe.clip_limit"
VARIANTS = {"clip-1": 1.0, "clip-3": 3.0}  # the baseline (conf/config.yaml) is 2.0
TARGET = DATA_END  # keeps the test to the data stages as the pipeline grows
HANG_GUARD_S = 600  # not a performance bound: only stops a wedged queue from hanging the suite


def queue_states(repo: Path, env: dict[str, str]) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed | ...} from `dvc queue status`."""
    out = sh(["dvc", "queue", "status"], repo, env, stdout_only=True)
    return {m[1]: m[2] for m in re.finditer(r"^\S+\s+(\S+)\s+.*?\s(\w+)\s*$", out, re.M) if m[1] in VARIANTS}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, demo_baseline) -> Path:
    """The project with the demo data pipeline run and committed: the baseline the variants start from."""
    return private_copy(demo_baseline, tmp_path_factory.mktemp("queue") / "repo")


@pytest.fixture(scope="module")
def finished(repo, venv_env) -> dict[str, str]:
    """Queue both variants, start two workers, wait until neither is queued or running."""
    for name, value in VARIANTS.items():
        sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", "profile=demo", "-S", f"{PARAM}={value}", TARGET],
           repo, venv_env)
    assert set(queue_states(repo, venv_env).values()) == {"Queued"}
    started = sh(["dvc", "queue", "start", "-j", "2"], repo, venv_env)
    assert re.search(r"Started '2'", started), started
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while (states := queue_states(repo, venv_env)) and set(states.values()) & {"Queued", "Running"}:
            assert time.monotonic() < deadline, f"queue still busy after {HANG_GUARD_S} s: {states}"
            time.sleep(2)
        yield states
    finally:
        sh(["dvc", "queue", "stop"], repo, venv_env)  # idle workers exit; nothing is left running


def test_both_variants_succeed_running_only_the_changed_stage(repo, finished, venv_env):
    assert finished == {name: "Success" for name in VARIANTS}
    for name in VARIANTS:
        log = sh(["dvc", "queue", "logs", name], repo, venv_env)
        assert ran(log) == {TARGET}, log  # upstream stages came from the shared cache
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["preprocess"]["clahe"]["clip_limit"] == 2.0  # the workspace is untouched


def test_exp_show_compares_the_variants(repo, finished, venv_env):
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo, venv_env, stdout_only=True))
    baseline = next(e for e in shown if e.get("experiments"))
    exps = {rev["name"]: rev for exp in baseline["experiments"] for rev in exp["revs"]}
    assert set(VARIANTS) <= set(exps)
    assert baseline["error"] is None and all(exps[n]["error"] is None for n in VARIANTS)

    def clip(rev):
        return rev["data"]["params"]["params.yaml"]["data"]["preprocess"]["clahe"]["clip_limit"]

    def out_hash(rev, path):
        return rev["data"]["outs"][path]["hash"]

    assert {n: clip(exps[n]) for n in VARIANTS} == VARIANTS
    assert clip(baseline) == 2.0
    revs = [baseline] + [exps[n] for n in VARIANTS]
    assert len({out_hash(r, "data/processed") for r in revs}) == 3  # each clip limit wrote different images
    assert len({out_hash(r, "data/interim/dedup.csv") for r in revs}) == 1  # and shared everything upstream
    for rev in revs:
        assert out_hash(rev, "metrics/preprocess.json")  # each ran preprocess (its detail JSON: an uncached out)
