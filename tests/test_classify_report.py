"""report: the tables in the shape of the paper's Tables 3-6 render beside its numbers, with the paired
tests and the figures, from real classify stage outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from synthmri import CLASSES
from synthmri.classify.commands import classify_cmd
from synthmri.io import write_json
from synthmri.report_command import report_cmd
from tests.test_classify_data import make_dataset

torch.set_num_threads(1)

SCENARIOS = {
    "baseline": {"group": "baseline"},
    "s2_m33": {"synthetic": {"meningioma": "R66:S33"}, "group": "S2", "label": "R66:S33"},
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
    write_json("metrics/fidelity.json", {"glioma": {"fid": 12.5}})
    summary = report_cmd(Path("metrics/scenarios"), Path("data/classify"), Path("reports"),
                         fidelity_json=Path("metrics/fidelity.json"), synthetic_dir=Path("synthetic"),
                         headline_json=Path("metrics/headline.json"))
    md = Path("reports/README.md").read_text()
    assert "DEMO numbers" in md
    assert "Compare with nothing: every scenario's classifier started from random weights" in md  # pretrained false
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Every scenario"):
        assert title in md
    assert "| paper (Table 3): generated vs Training | 76.15 | 66.42 | 74.88 | 80.25 | 74.43 |" in md  # Table 3 beside ours
    assert "| ours: generated vs Training | 12.50 | — | — | — | — |" in md
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
    assert sorted(summary["figures"]) == ["confusion.png"] + [f"fig{i}.png" for i in range(11, 18)] + ["samples.png"]
    # the paper's order, not the alphabet: sections, then scenarios in the table and in the headline metrics
    heads = [md.index(h) for h in ("## 1. Data", "## 2. Fidelity", "## 3. Classification", "## 4. Statistical")]
    assert heads == sorted(heads)
    rows = [ln.split(" | ")[0][2:] for ln in md.splitlines() if ln.startswith(tuple(f"| {n} | " for n in SCENARIOS))
            and ln.count("|") == 13]
    assert rows == list(SCENARIOS)  # baseline, s2_m33, s5_finetune, mini_r72, mini_s72
    head = json.loads(Path("metrics/headline.json").read_text())
    assert list(head["accuracy"]) == list(SCENARIOS) and head["accuracy"]["baseline"] == round(base["accuracy"]["mean"], 4)
    assert head["profile"] == "demo" and head["compare_with_nothing"] is True
    # report.html: one page that needs no other file: every figure inlined, nothing fetched
    html = Path("reports/report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(summary["figures"])
    assert re.findall(r'(?:src|href)="(?!data:)', html) == []
    assert "<table>" in html and "DEMO numbers" in html


def test_report_without_metrics_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("classify: {}\n")
    with pytest.raises(FileNotFoundError, match="no scenario metrics in empty"):
        report_cmd(Path("empty"), Path("data/classify"), Path("reports"))


# ---- the tables from a small hand-made metrics fixture: exact cells ---------------------------------


def _ms(v: float, sd: float = 0.0) -> dict:
    return {"mean": v, "std": sd}


def _scenario(name: str, group: str, per_class: dict, acc: float, pretrained: bool = True) -> dict:
    """A scenario's metrics JSON in the shape classify writes, with chosen values."""
    return {"scenario": name, "group": group, "label": name, "arch": "vgg19", "pretrained": pretrained,
            "paper_as_coded": False, "seeds": [33, 66], "train_images": 40,
            "train_counts": {c: {"real": 10, "synthetic": 0} for c in CLASSES},
            "accuracy": {**_ms(acc, 0.01), "ci95_low": acc - 0.02, "ci95_high": acc + 0.02},
            "macro_f1": {**_ms(acc, 0.01), "ci95_low": acc - 0.02, "ci95_high": acc + 0.02},
            "macro_precision": _ms(acc), "macro_recall": _ms(acc),
            "per_class": {c: {"precision": _ms(per_class.get(c, (0.5, 0.5))[0], 0.01),
                              "recall": _ms(per_class.get(c, (0.5, 0.5))[1], 0.02), "f1": _ms(0.5)} for c in CLASSES}}


def _fidelity(random_weights: bool) -> dict:
    """metrics/fidelity.json with known values for glioma and meningioma (pituitary, notumor absent)."""
    cls = {
        "glioma": {"fid": 60.0, "fid_real_floor": 40.0, "fid_real_floor_resampled": 52.5,
                   "kid": {"mean": 0.05, "std": 0.001}, "kid_real_floor": {"mean": 0.01, "std": 0.001},
                   "kid_real_floor_resampled": {"mean": 0.03, "std": 0.001}, "precision": 0.625, "recall": 0.5,
                   "is_real": {"mean": 2.5, "std": 0.125, "splits": 10}, "is_generated": {"mean": 2.0, "std": 0.25, "splits": 10},
                   "is_real_paper_formula": 3.75, "is_generated_paper_formula": 2.75},
        "meningioma": {"fid": 70.0, "fid_real_floor": 50.0, "fid_real_floor_resampled": 55.5,
                       "is_real_paper_formula": 4.0, "is_generated_paper_formula": 3.0},
    }
    return {**cls, "summary": {}, "reference": {"resample": {"train_size": 128, "out_size": 256}},
            "extractor": {"name": "inception-v3-compat", "random_weights": random_weights,
                          "weights_sha256": "random-0" if random_weights else "6726825d" + "0" * 56}}


def _report(tmp_path, monkeypatch, profile: str, random_inception: bool, pretrained: bool = True) -> str:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"profile_name": profile, "classify": {}}))
    base = {"glioma": (0.93, 0.91), "meningioma": (0.83, 0.88)}
    for name, group, per_class, acc in (
            ("baseline", "baseline", base, 0.92), ("s2_m20", "S2", {"glioma": (0.875, 0.9), "meningioma": (0.7, 0.925)}, 0.9),
            ("s3_mg10", "S3", {"glioma": (0.9, 0.8125)}, 0.89), ("s3_mg33", "S3", {"glioma": (0.9, 0.75)}, 0.88),
            ("mini_r72", "mini-real", {}, 0.6)):
        write_json(Path("metrics/scenarios") / f"{name}.json", _scenario(name, group, per_class, acc, pretrained))
    write_json("metrics/fidelity.json", _fidelity(random_inception))
    report_cmd(Path("metrics/scenarios"), Path("data/classify"), Path("reports"), fidelity_json=Path("metrics/fidelity.json"))
    return Path("reports/README.md").read_text()


def test_report_tables_show_each_number_beside_its_source(tmp_path, monkeypatch):
    md = _report(tmp_path, monkeypatch, "paper", random_inception=False)
    assert "Compare with nothing" not in md and "DEMO" not in md
    # Table 3: ours beside the paper's, the notebooks' floors, ours and the resampled floor (means over 2 classes: —)
    assert "| notebooks: real Testing vs Training (floor) | 48.28 | 58.93 | 45.33 | 41.02 | 48.39 |" in md
    assert "| ours: generated vs Training | 60.00 | 70.00 | — | — | — |" in md
    assert "| ours: real Testing vs Training (floor) | 40.00 | 50.00 | — | — | — |" in md
    assert ("| ours: real Testing resized 128→256 px as generated images are, vs Training (floor for generated images) "
            "| 52.50 | 55.50 | — | — | — |") in md
    # KID and precision/recall
    assert ("| notebooks: generated vs Training (torch-fidelity, subset size 92) | 0.0457 ± 0.0059 | 0.0357 ± 0.0044 "
            "| 0.0738 ± 0.0067 | 0.0424 ± 0.0044 | — |") in md
    assert "| ours: generated vs Training | 0.0500 | — | — | — | — |" in md
    assert "| ours: real Testing resized 128→256 px, vs Training | 0.0300 | — | — | — | — |" in md
    assert "| ours: improved precision, generated vs Training | 0.625 | — | — | — | — |" in md
    # Table 4: the paper's formula beside the paper, the standard IS in its own rows, the paper's converted
    assert "| paper (Table 4): real, paper's formula | 4.38 | 4.24 | 3.07 | 3.43 | — |" in md
    assert "| ours: real, paper's formula | 3.75 | 4.00 | — | — | — |" in md
    assert "| paper (Table 4): generated, paper's formula | 3.34 | 3.52 | 2.36 | 3.26 | — |" in md
    assert "| ours: generated, paper's formula | 2.75 | 3.00 | — | — | — |" in md
    assert "| paper: real, converted to standard IS (1 split) | 2.78 | 2.72 | 2.18 | 2.35 | — |" in md  # 4.38^ln2
    assert "| ours: real, standard IS | 2.50 ± 0.12 (10 splits) | — | — | — | — |" in md
    assert "| ours: generated, standard IS | 2.00 ± 0.25 (10 splits) | — | — | — | — |" in md
    # every scenario: the paper's text and the notebooks in their own columns
    assert "| baseline | baseline | baseline | 40 | 0 | 0.920 ± 0.010 | [0.900, 0.940] |" in md
    assert md.count("| 0.93 | 0.93 / 0.93 / 0.94 |") == 1  # baseline: paper §6.2.1, notebooks per seed
    assert "| mini_r72 | mini-real | mini_r72 | 40 | 0 | 0.600 ± 0.010 |" in md
    assert "| — | 0.6200 ± 0.0755 |" in md  # mini: the notebooks only, not the paper
    # §6.2.2's class-wise figures beside ours; the unspecified S3 amount shown for each S3 scenario run
    assert "| S2 +25%: 0.98 | s2_m20 | glioma | precision | 0.98 | 0.875 ± 0.010 |" in md
    assert "| S2 +25%: 0.92 | s2_m20 | meningioma | recall | 0.92 | 0.925 ± 0.020 |" in md
    assert "| S3: drops to 0.83 (amount not stated) | s3_mg10 | glioma | recall | 0.83 | 0.812 ± 0.020 |" in md
    assert "| S3: drops to 0.83 (amount not stated) | s3_mg33 | glioma | recall | 0.83 | 0.750 ± 0.020 |" in md
    assert "| S3: drops to 0.83 (amount not stated) | s3_mg20 | glioma | recall | 0.83 | (not run) |" in md
    assert "| S6: reaching 0.53 | s6_synthetic | meningioma | precision | 0.53 | (not run) |" in md


def test_random_weights_carry_the_banner_on_the_paper_profile(tmp_path, monkeypatch):
    md = _report(tmp_path, monkeypatch, "paper", random_inception=True)
    assert md.splitlines()[2].startswith("> **Compare with nothing: fidelity used a random Inception")
    assert "classify.model.pretrained" not in md and "DEMO" not in md
    md = _report(tmp_path, monkeypatch, "paper_as_coded", random_inception=False, pretrained=False)
    assert "> **Compare with nothing: every scenario's classifier started from random weights " \
           "(`classify.model.pretrained: false`)" in md
    assert "random Inception" not in md
