"""The ratio sweep as `dvc exp` variants, through the shipped dvc.yaml and the real DVC CLI: on the demo run
(`demo_run`, every stage done), `dvc exp run -S profile=demo -S ratio=0.25` reruns only the `ratio` stage,
reuses every generator and scenario (the report follows), and `dvc exp show --json` lists the variant with its own
headline metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from synthmri import CLASSES
from tests.conftest import DEMO_RUN_GROUP, private_copy, ran, sh

pytestmark = [pytest.mark.slow, DEMO_RUN_GROUP]  # one demo run per test session (conftest)
RATIO = 0.25  # not the demo's own 0.5; it generates 60 images per class for about 100 real ones: ratios up to 0.5 fit


def test_ratio_experiment_reruns_only_the_ratio_stage(demo_run, tmp_path, venv_env):
    repo = private_copy(demo_run.repo, tmp_path / "repo")
    baseline = json.loads((repo / "metrics/scenarios/baseline.json").read_text())
    lock_before = (repo / "dvc.lock").read_text()

    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", f"ratio={RATIO}", "--name", "r05"], repo, venv_env)
    assert ran(out) == {"ratio", "report"}, out  # no generator, sample or scenario reruns

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo, venv_env, stdout_only=True))
    exps = {e["name"]: e["revs"][0] for row in shown for e in (row.get("experiments") or [])}
    headline = exps["r05"]["data"]["metrics"]["metrics/headline.json"]["data"]
    ratio = json.loads((repo / "metrics/ratio.json").read_text())  # the detail: the experiment's workspace file
    assert headline["ratio"] == {"ratio": RATIO, "accuracy": round(ratio["accuracy"]["mean"], 4),
                                 "macro_f1": round(ratio["macro_f1"]["mean"], 4)}
    real = {c: baseline["train_counts"][c]["real"] for c in CLASSES}  # all kept Training images of the class
    assert ratio["ratio"] == RATIO
    assert ratio["train_counts"] == {c: {"real": n, "synthetic": int(RATIO * n)} for c, n in real.items()}
    assert {"accuracy", "macro_f1", "per_class", "vs_baseline"} <= set(ratio)
    assert set(ratio["per_class"]["glioma"]) >= {"precision", "recall", "f1"}
    assert {"mean", "std", "ci95_low", "ci95_high"} <= set(ratio["accuracy"])
    assert all({"mean", "ci95_low", "ci95_high"} <= set(ratio[k]) for k in ("weighted_f1", "mcc", "roc_auc_ovr"))
    assert ratio["vs_baseline"]["seeds"] == len(baseline["seeds"])  # paired against the baseline's predictions
    assert headline["accuracy"]["baseline"] == round(baseline["accuracy"]["mean"], 4)  # not rerun
    assert exps["r05"]["data"]["params"]["params.yaml"]["data"]["ratio"] == RATIO

    # dvc.lock changed only in the ratio stage's entry
    before, after = yaml.safe_load(lock_before)["stages"], yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {s for s in before if before[s] != after[s]} == {"ratio", "report"}
