"""The ratio sweep as `dvc exp` variants, with the real DVC CLI in a temporary repo: `dvc exp run -S ratio=2`
reruns only the ratio stage, and `dvc exp show --json` lists its metrics. The stage commands call
classify.commands directly (the lead's cli.py wraps the same functions)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from synthmri import CLASSES
from tests.test_classify_data import make_dataset

CALL = ("python -c \"import sys; from pathlib import Path; from synthmri.io import write_json; "
        "from synthmri.classify.commands import {fn}; write_json(sys.argv[1], {fn}({args}))\"")
DVC_YAML = {
    "stages": {
        "classify": {
            "foreach": "${classify.scenarios}",
            "do": {
                "cmd": CALL.format(fn="classify_cmd", args="'${key}', Path('processed/manifest.csv'), Path('synthetic'), "
                                   "Path('out/${key}'), live_dir=Path('live')") + " metrics/scenarios/${key}.json",
                "deps": ["processed", "synthetic"],
                "params": ["classify", "data.classes"],
                "outs": ["out/${key}"],
                "metrics": [{"metrics/scenarios/${key}.json": {"cache": False}}],
            },
        },
        "ratio": {
            "cmd": CALL.format(fn="ratio_cmd", args="Path('processed/manifest.csv'), Path('synthetic'), Path('out/ratio'), "
                               "baseline_dir=Path('out/baseline'), plot_csv=Path('plots/ratio.csv')") + " metrics/ratio.json",
            "deps": ["processed", "synthetic", "out/baseline"],
            "params": ["ratio", "classify.model", "classify.train", "classify.draw_seed", "classify.paper_as_coded",
                       "classify.bootstrap", "data.classes"],
            "outs": ["out/ratio"],
            "metrics": [{"metrics/ratio.json": {"cache": False}}],
            "plots": [{"plots/ratio.csv": {"cache": False, "x": "ratio", "y": "accuracy"}}],
        },
    }
}


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_ratio_experiments_rerun_only_the_ratio_stage(tmp_path, venv_env):
    env = dict(venv_env, OMP_NUM_THREADS="1")
    make_dataset(tmp_path, train=4, test=2, synthetic=8, size=32)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"classes": list(CLASSES)}, "ratio": 1,
        "classify": {"model": {"arch": "mobilenet_v2", "pretrained": False, "trainable": "all"},
                     "train": {"image_size": 32, "epochs": 1, "batch_size": 8, "seeds": [1], "threads": 1},
                     "bootstrap": 20, "draw_seed": None, "paper_as_coded": False,
                     "scenarios": {"baseline": {}}}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (tmp_path / ".gitignore").write_text("raw/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                ["dvc", "repro", "-q"]):  # dvclive needs a first commit
        _run(cmd, tmp_path, env)
    base = json.loads((tmp_path / "metrics/scenarios/baseline.json").read_text())
    assert json.loads((tmp_path / "metrics/ratio.json").read_text())["train_counts"]["glioma"] == {"real": 4, "synthetic": 4}
    _run(["git", "add", "-A"], tmp_path, env)
    _run(["git", "commit", "-qm", "ratio 1"], tmp_path, env)

    out = _run(["dvc", "exp", "run", "-S", "ratio=2", "--name", "r2"], tmp_path, env)
    assert "Running stage 'ratio'" in out
    assert "Running stage 'classify@" not in out  # the scenarios did not change
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], tmp_path, env))
    exps = {e["name"]: e for row in shown for e in (row.get("experiments") or []) for e in [e["revs"][0]]}
    metrics = exps["r2"]["data"]["metrics"]
    ratio = metrics["metrics/ratio.json"]["data"]
    assert ratio["ratio"] == 2.0 and ratio["train_counts"]["glioma"] == {"real": 4, "synthetic": 8}
    assert {"accuracy", "macro_f1", "per_class", "vs_baseline"} <= set(ratio)
    assert set(ratio["per_class"]["glioma"]) == {"precision", "recall", "f1"}
    assert metrics["metrics/scenarios/baseline.json"]["data"]["accuracy"] == base["accuracy"]  # not rerun
    assert {"mean", "std", "ci95_low", "ci95_high"} <= set(ratio["accuracy"])
