"""report: the tables in the shape of the paper's Tables 3-6 render beside its numbers, with the paired
tests and the figures, from real classify stage outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from synthmri import CLASSES
from synthmri.classify.commands import classify_cmd, report_cmd
from synthmri.io import write_json
from tests.test_classify_data import make_dataset

torch.set_num_threads(1)

SCENARIOS = {
    "baseline": {"group": "baseline"},
    "s2_m33": {"synthetic": {"meningioma": "33%"}, "group": "S2", "label": "R66:S33"},
    "s5_finetune": {"finetune": {"real": {"glioma": "all", "meningioma": "all"}, "synthetic": "all"},
                    "finetune_epochs": 1, "group": "S5"},
    "mini_r72": {"real": 2, "group": "mini-real"},
    "mini_s72": {"real": 2, "synthetic": 2, "group": "mini-mixed"},
}


def test_report_renders_tables_figures_and_paired_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, train=6, test=3, synthetic=4, size=32)
    Path("params.yaml").write_text(yaml.safe_dump({
        "profile_name": "demo", "data": {"classes": list(CLASSES)},
        "classify": {"model": {"arch": "mobilenet_v2", "pretrained": False, "trainable": "all"},
                     "train": {"image_size": 32, "epochs": 1, "batch_size": 16, "seeds": [1, 2], "threads": 1},
                     "bootstrap": 50, "scenarios": SCENARIOS}}))
    for name in SCENARIOS:
        m = classify_cmd(name, Path("processed/manifest.csv"), Path("synthetic"), Path("data/classify") / name)
        write_json(Path("metrics/scenarios") / f"{name}.json", m)
    write_json("metrics/fidelity.json", {"glioma": {"fid": 12.5, "is": 2.0, "is_real": 2.5}})
    summary = report_cmd(Path("metrics/scenarios"), Path("data/classify"), Path("reports"),
                         fidelity_json=Path("metrics/fidelity.json"))
    md = Path("reports/README.md").read_text()
    assert "DEMO numbers" in md
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Every scenario"):
        assert title in md
    assert "| paper | 76.15 | 66.42 | 74.88 | 80.25 |" in md  # Table 3 beside ours
    assert "| ours | 12.50 |" in md
    assert "0.93 / 0.91 / 0.93 / 867" in md  # Table 5's glioma row
    assert "0.91, 0.95 → 0.95, 0.9" in md  # Table 6's glioma row
    base = json.loads(Path("metrics/scenarios/baseline.json").read_text())
    assert f"{base['accuracy']['mean']:.3f} ± {base['accuracy']['std']:.3f}" in md
    assert "| s2_m33 | S2 | R66:S33 | 24 | 3 |" in md  # 6 real per class; round(6*33/67) = 3 synthetic meningioma
    paired = json.loads(Path("reports/paired_tests.json").read_text())
    assert set(paired) == set(SCENARIOS) - {"baseline"}
    assert set(paired["s2_m33"]["per_seed"]) == {"1", "2"}
    assert summary["scenarios"] == 5 and summary["paired_tests"] == 4
    for f in summary["figures"]:
        with Image.open(Path("reports") / f) as im:
            assert im.format == "PNG" and im.width > 100
    assert sorted(summary["figures"]) == [f"fig{i}.png" for i in range(11, 18)]


def test_report_without_metrics_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("classify: {}\n")
    with pytest.raises(FileNotFoundError, match="no scenario metrics in empty"):
        report_cmd(Path("empty"), Path("data/classify"), Path("reports"))
