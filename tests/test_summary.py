"""`synthmri summary` (the end of `make demo`): reads the stages' metrics and labels demo numbers."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from synthmri.cli import app


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_summary_labels_demo_numbers_and_marks_missing_stages(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics / "ingest.json", {"files": 295, "images": 292, "quarantined": 3})
    _write(metrics / "scenarios" / "baseline.json", {"accuracy": {"mean": 0.6125}, "macro_f1": {"mean": 0.5}})
    (tmp_path / "params.yaml").write_text("profile_name: demo\n")
    result = CliRunner().invoke(app, ["summary", str(metrics), "--params", str(tmp_path / "params.yaml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "DEMO numbers" in out and "not a reproduction of the paper" in out
    assert "292" in out and "0.6125" in out
    assert "(not run)" in out  # audit, dedup, ... have no metrics here


def test_summary_on_the_paper_profile_is_not_labelled_demo(tmp_path):
    (tmp_path / "params.yaml").write_text("profile_name: paper\n")
    result = CliRunner().invoke(app, ["summary", str(tmp_path), "--params", str(tmp_path / "params.yaml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "DEMO" not in result.output
