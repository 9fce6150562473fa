"""Each stage's metrics record the profile and raw data they came from, and `synthmri summary` labels its
numbers from those records, not from params.yaml (which a later `dvc exp run -S ...` may have switched)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from synthmri import params as P
from synthmri.cli import app
from synthmri.data.demo import TRUTH_FILE
from synthmri.summary import profile_title
from tests.test_ingest import make_dataset

DEMO = {"profile": "demo", "raw": "data/raw/demo", "demo_data": True}
PAPER = {"profile": "paper", "raw": "data/raw/kaggle", "demo_data": False}


def test_the_demo_marker_is_the_demo_sets_truth_file(tmp_path):
    assert P.DEMO_MARKER == TRUTH_FILE
    raw = tmp_path / "raw"
    raw.mkdir()
    data = {"profile_name": "paper", "data": {"raw": str(raw)}}
    assert P.provenance(data) == {"profile": "paper", "raw": str(raw), "demo_data": False}
    (raw / TRUTH_FILE).write_text("relpath\n")  # the demo set under another profile's name is still generated data
    assert P.provenance(data) == {"profile": "paper", "raw": str(raw), "demo_data": True}
    assert P.provenance({}) == {"profile": None, "raw": "data/raw/kaggle", "demo_data": False}


def test_a_stage_writes_its_provenance_into_its_metrics(tmp_path):
    src = make_dataset(tmp_path / "ds")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile_name": "paper_as_coded", "data": {"raw": str(src)},
                                      "ingest": {"workers": 1}}))
    metrics = tmp_path / "metrics" / "ingest.json"
    result = CliRunner().invoke(app, ["ingest", str(src), str(tmp_path / "out"), "--params", str(params),
                                      "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    m = json.loads(metrics.read_text())
    assert m["images"] == 8 and m["provenance"] == {"profile": "paper_as_coded", "raw": str(src), "demo_data": False}


def _summary(tmp_path, selected: str) -> str:
    (tmp_path / "params.yaml").write_text(f"profile_name: {selected}\n")
    result = CliRunner().invoke(app, ["summary", str(tmp_path / "metrics"), "--params", str(tmp_path / "params.yaml")],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_demo_metrics_stay_demo_after_params_switch_to_paper(tmp_path):
    """The issue's case: `make demo`, then `dvc exp run -S ratio=2` recomposes params.yaml on the paper
    profile and stops at ingest; the metrics in the workspace are still the demo's."""
    for name in ("ingest.json", "preprocess.json", "scenarios/baseline.json"):
        _write(tmp_path / "metrics" / name, {"images": 1, "provenance": DEMO})
    out = _summary(tmp_path, "paper")
    assert out.startswith("synthmri pipeline — profile demo, data data/raw/demo — DEMO numbers on generated data, "
                          "not a reproduction of the paper (params.yaml now selects paper: `dvc repro` reruns on it)")


def test_labels_come_from_the_metrics(tmp_path):
    assert profile_title({"ingest": PAPER, "ratio": PAPER}, "paper") == \
        "synthmri pipeline — profile [bold]paper[/], data data/raw/kaggle"
    # the paper's settings run on the generated demo set are demo numbers all the same
    assert profile_title({"ingest": {**PAPER, "raw": "data/raw/demo", "demo_data": True}}, "paper") == \
        "synthmri pipeline — profile [bold]paper[/], data data/raw/demo — DEMO numbers on generated data, " \
        "not a reproduction of the paper"
    assert profile_title({"ingest": DEMO, "ratio": PAPER}, "paper") == \
        "synthmri pipeline — metrics from different profiles: ingest demo, ratio paper — DEMO numbers on " \
        "generated data, not a reproduction of the paper"
    assert profile_title({"ingest": {**DEMO, "raw": "data/raw/kaggle", "demo_data": False}}, "demo") == \
        "synthmri pipeline — profile [bold]demo[/], data data/raw/kaggle — DEMO settings (tiny models, few " \
        "epochs), not a reproduction of the paper"
    assert profile_title({"ingest": None}, "demo") == \
        "synthmri pipeline — profile [bold]not recorded[/] (params.yaml now selects demo: `dvc repro` reruns on it)"
    assert profile_title({}, "demo") == "synthmri pipeline — no metrics yet"


def test_fidelity_records_its_provenance(tmp_path):
    """fidelity.json is written by the stage itself (not through cli's metrics writer): same record
    (`fidelity_cmd` passes `provenance(params)`; a tiny extractor here, the real Inception is slow on CPU)."""
    from synthmri.fidelity.config import FidelityParams, MemorisationParams
    from synthmri.fidelity.evaluate import evaluate
    from tests.test_fidelity_metrics import TINY, tiny_weights
    from tests.test_fidelity_stage import CLASSES, make_project

    manifest, synthetic, _ = make_project(tmp_path, n_train=3, n_test=2, n_synth=3)
    cfg = FidelityParams(weights=str(tiny_weights(tmp_path / "tiny.pth")), cache_dir="", workers=1,
                         memorisation=MemorisationParams())
    out = evaluate(manifest, synthetic, tmp_path / "fidelity.json", tmp_path / "plots", cfg, CLASSES,
                   extractor_name=TINY, provenance=DEMO)
    assert out["provenance"] == DEMO
    assert json.loads((tmp_path / "fidelity.json").read_text())["provenance"] == DEMO
