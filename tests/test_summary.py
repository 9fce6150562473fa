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
    _write(metrics / "ingest.json", {"files": 295, "images": 292, "quarantined": 3,
                                     "provenance": {"profile": "demo", "raw": "data/raw/demo", "demo_data": True}})
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


def _run(tmp_path, profile="paper"):
    (tmp_path / "params.yaml").write_text(f"profile_name: {profile}\n")
    result = CliRunner().invoke(app, ["summary", str(tmp_path / "metrics"), "--params", str(tmp_path / "params.yaml")],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines


def _fidelity(random_weights: bool) -> dict:
    return {"summary": {"fid_mean": 61.25, "fid_real_floor_mean": 40.5, "fid_real_floor_resampled_mean": 52.25},
            "extractor": {"name": "inception-v3-compat", "random_weights": random_weights,
                          "weights_sha256": "random-ab12" if random_weights else "6726825d" + "0" * 56}}


def test_random_inception_weights_carry_the_banner_whatever_the_profile(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics / "fidelity.json", _fidelity(True))
    _write(metrics / "scenarios" / "baseline.json", {"accuracy": {"mean": 0.9}, "pretrained": True})
    out = _run(tmp_path, "paper")
    assert "Compare with nothing: these numbers show the stages run" in out
    # one line says why: IS about 1, FIDs in arbitrary units
    assert "Note: fidelity used a random Inception (`fidelity.random_weights: true`, no weights file here), so IS is " \
           "about 1 by construction and FID, KID and precision/recall are in arbitrary units" in out
    assert "classify.model.pretrained" not in out and "DEMO" not in out
    assert "FID floor, real resized as generated │ 52.25 │" in out  # the resampled floor's row


def test_random_classifier_weights_carry_the_banner_naming_the_scenarios(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics / "fidelity.json", _fidelity(False))
    _write(metrics / "scenarios" / "baseline.json", {"accuracy": {"mean": 0.9}, "pretrained": True})
    _write(metrics / "scenarios" / "s6_synthetic.json", {"accuracy": {"mean": 0.5}, "pretrained": False})
    out = _run(tmp_path, "paper_as_coded")
    assert "Note: the classifiers of s6_synthetic started from random weights " \
           "(`classify.model.pretrained: false`)" in out
    assert "random Inception" not in out
    _write(metrics / "scenarios" / "baseline.json", {"accuracy": {"mean": 0.9}, "pretrained": False})
    assert "every scenario's classifier started from random weights" in _run(tmp_path)


def test_real_weights_carry_no_banner_even_on_the_demo_profile(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics / "fidelity.json", _fidelity(False))
    _write(metrics / "scenarios" / "baseline.json", {"accuracy": {"mean": 0.9}, "pretrained": True,
                                                     "provenance": {"profile": "demo", "demo_data": True}})
    _write(metrics / "ratio.json", {"ratio": 1, "accuracy": {"mean": 0.9}, "pretrained": True})
    out = _run(tmp_path, "demo")
    assert "Compare with nothing" not in out and "DEMO numbers" in out
    _write(metrics / "ratio.json", {"ratio": 1, "accuracy": {"mean": 0.9}, "pretrained": False})
    assert "the classifiers of ratio started from random weights" in _run(tmp_path, "demo")


def test_summary_sets_synthetic_only_beside_the_baseline_and_says_what_to_open(tmp_path):
    metrics = tmp_path / "metrics"

    def write(profile):
        for name, (mean, lo, hi) in {"baseline": (0.875, 0.78125, 0.953125), "s6_synthetic": (0.5, 0.375, 0.625)}.items():
            _write(metrics / "scenarios" / f"{name}.json",
                   {"accuracy": {"mean": mean, "ci95_low": lo, "ci95_high": hi}, "pretrained": True,
                    "provenance": {"profile": profile, "raw": f"data/raw/{profile}", "demo_data": profile == "demo"}})

    write("demo")
    out = _run(tmp_path, "demo")
    assert "DEMO: Classifier accuracy on the real test set: trained on real images 0.88 (95% CI 0.78-0.95), " \
           "on synthetic images only (S6) 0.50 (95% CI 0.38-0.62); chance is 0.25." in out
    assert "synthetic only: accuracy │ 0.5 │" in out and "95% CI (test-set bootstrap) │ [0.38, 0.62] │" in out
    assert "Compare with nothing" not in out  # ImageNet classifiers, no fidelity run
    tail = out[out.index("Open next:"):]
    for what in ("reports/report.html", "plots/", "dvc exp show", "dvc plots show"):
        assert what in tail
    # metrics of a paper-profile run: the same line, not labelled DEMO, whatever params.yaml now selects
    write("paper")
    out = _run(tmp_path, "demo")
    assert "DEMO" not in out and "Classifier accuracy on the real test set" in out


def test_summary_shows_the_split_counts_and_shared_patients(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics / "split.json", {"method": "patient", "train": {"images": 70}, "val": {"images": 19},
                                    "test": {"images": 11}, "shared_patients": {"train-test": 0, "train-val": 0}})
    (tmp_path / "params.yaml").write_text("profile_name: demo\n")
    result = CliRunner().invoke(app, ["summary", str(metrics), "--params", str(tmp_path / "params.yaml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("patient" in ln and "method" in ln for ln in lines)
    assert any("70 / 19 / 11" in ln for ln in lines)
    shared = next(ln for ln in lines if "patients shared train-test" in ln)
    assert shared.rstrip().rstrip("│ ").endswith("0")
