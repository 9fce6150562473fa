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


def _report(tmp_path, monkeypatch, profile: str, random_inception: bool, pretrained: bool = True,
            ran_on: str | None = None) -> str:
    """`profile`: what params.yaml selects when the report runs; `ran_on`: the profile the scenario metrics
    record (their provenance), when it differs."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"profile_name": profile, "classify": {}}))
    base = {"glioma": (0.93, 0.91), "meningioma": (0.83, 0.88)}
    for name, group, per_class, acc in (
            ("baseline", "baseline", base, 0.92), ("s2_m20", "S2", {"glioma": (0.875, 0.9), "meningioma": (0.7, 0.925)}, 0.9),
            ("s3_mg10", "S3", {"glioma": (0.9, 0.8125)}, 0.89), ("s3_mg33", "S3", {"glioma": (0.9, 0.75)}, 0.88),
            ("mini_r72", "mini-real", {}, 0.6)):
        scenario = _scenario(name, group, per_class, acc, pretrained)
        if ran_on is not None:
            scenario["provenance"] = {"profile": ran_on, "raw": f"data/raw/{ran_on}", "demo_data": ran_on == "demo"}
        write_json(Path("metrics/scenarios") / f"{name}.json", scenario)
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


def test_the_profile_is_the_one_the_metrics_record_not_params_yaml(tmp_path, monkeypatch):
    """Demo numbers stay DEMO after params.yaml is switched back to the paper (issue 14 §3)."""
    md = _report(tmp_path, monkeypatch, "paper", random_inception=False, ran_on="demo")
    assert "DEMO" in md and "Profile: `demo`" in md
    md = _report(tmp_path, monkeypatch, "demo", random_inception=False, ran_on="paper")
    assert "DEMO" not in md and "Profile: `paper`" in md


# ---- the whole page: data, samples, memorisation, ratio and paired tests, from hand-made stage outputs -------


def _data_metrics() -> None:
    """metrics/{ingest,audit,dedup,preprocess}.json with chosen values, in the shapes those stages write."""
    write_json("metrics/ingest.json", {"files": 12, "images": 10, "quarantined": 2,
                                       "quarantine_reasons": {"truncated": 1, "not an image": 1},
                                       "per_split_class": {"train": {c: 2 for c in CLASSES}, "test": {c: 1 for c in CLASSES}}})
    train = {"colour_modes": {"L": 6, "RGB": 2}, "dimensions": {"distinct": 3, "most_common": [["160x160", 5]],
                                                               "share_most_common": 0.625},
             "blur": {"threshold": 50.0, "blurry": 1, "share": 0.125}}
    write_json("metrics/audit.json", {**train, "per_split": {"train": train}})
    write_json("metrics/dedup.json", {"train": {"images_with_duplicates": 2, "removed": 1},
                                      "test": {"images_with_duplicates": 0, "removed": 0}, "cross_split": {"removed": 1},
                                      "total": {"removed": 2}})
    write_json("metrics/preprocess.json", {"train": {"total": 7}, "test": {"total": 4},
                                           "table2": {"axial": {"glioma": 1, "meningioma": 2, "notumor": 1, "pituitary": 0},
                                                      "coronal": {"glioma": 1, "meningioma": 0, "notumor": 0, "pituitary": 1},
                                                      "sagittal": {"glioma": 0, "meningioma": 0, "notumor": 0, "pituitary": 1}},
                                           "removed": {"duplicate": 2}})


def test_the_page_has_every_section_with_its_numbers(tmp_path, monkeypatch):
    _report(tmp_path, monkeypatch, "paper", random_inception=False)  # scenario and fidelity metrics
    _data_metrics()
    ratio = _scenario("ratio", "ratio", {}, 0.95)
    write_json("metrics/ratio.json", {"ratio": 1.5, **ratio, "vs_baseline": {
        "per_seed": {"33": {"a_only_correct": 1, "b_only_correct": 4, "p_value": 0.375}}, "seeds_p_below_0_05": 0,
        "seeds": 1, "max_p": 0.375}})
    for c in CLASSES:  # three generated images per class, and an audit and a memorisation plot
        for i in range(3):
            Path(f"data/synthetic/{c}").mkdir(parents=True, exist_ok=True)
            Image.new("L", (16, 16), 40 * i).save(f"data/synthetic/{c}/{c}_{i:04d}.png")
    for rel in ("plots/audit/dimensions.png", "plots/fidelity/memorisation_glioma.png"):
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 10), 128).save(rel)
    summary = report_cmd(Path("metrics/scenarios"), Path("data/classify"), Path("reports"),
                         fidelity_json=Path("metrics/fidelity.json"), ratio_json=Path("metrics/ratio.json"),
                         data_metrics=Path("metrics"), synthetic_dir=Path("data/synthetic"), plots_dir=Path("plots"),
                         headline_json=Path("metrics/headline.json"))
    md = Path("reports/README.md").read_text()
    # data: ingest, the audit and dedup beside the paper's §3-4 numbers, Table 2 with the paper's in brackets
    assert "12 files found, 10 images, 2 quarantined (truncated: 1, not an image: 1)." in md
    assert "| RGB images (converted to grayscale) | 2 | 92 |" in md
    assert "| most common size (share) | 160x160 (62.5%) | 512x512 (69.2%) |" in md
    assert "| blurry (Laplacian variance < 50) | 1 (12.5%) | 1389 (24.3%, threshold 50) |" in md
    assert "| Training images removed as duplicates | 1 | 207 |" in md
    assert "| sagittal | 0 (232) | 0 (315) | 0 (60) | 1 (256) | 1 (863) |" in md
    assert "| Σ | 2 (867) | 2 (802) | 1 (817) | 2 (721) | 7 (3207) |" in md
    # fidelity: memorisation rows; classification: the ratio beside the baseline; the paired tests
    assert "| ours: generated vs Training | 60.00 | 70.00 | — | — | — |" in md
    assert "| 1.5 | 40 | 0.950 ± 0.010 | [0.930, 0.970] |" in md
    assert "| 0 (baseline) | 40 | 0.920 ± 0.010 | [0.900, 0.940] |" in md
    assert "| ratio | +0.030 | 33: 1 / 4 (0.375) | 0/1 |" in md
    order = [md.index(s) for s in ("## 1. Data", "Table 2", "## 2. Fidelity", "Table 3", "(samples.png)",
                                   "Memorisation", "(memorisation_glioma.png)", "## 3. Classification", "Table 5",
                                   "(fig11.png)", "(fig17.png)", "(confusion.png)", "(ratio.png)", "## 4. Statistical")]
    assert order == sorted(order)
    assert sorted(summary["figures"]) == sorted(["audit_dimensions.png", "confusion.png", "memorisation_glioma.png",
                                                 "ratio.png", "samples.png"] + [f"fig{i}.png" for i in range(11, 18)])
    html = Path("reports/report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(summary["figures"])
    head = json.loads(Path("metrics/headline.json").read_text())
    assert head["data"] == {"images": 10, "quarantined": 2, "blur_threshold": 50.0, "blurry": 1, "duplicates_removed": 2,
                            "train_images": 7, "test_images": 4}
    assert head["ratio"] == {"ratio": 1.5, "accuracy": 0.95, "macro_f1": 0.95}
    assert list(head["accuracy"]) == ["baseline", "s2_m20", "s3_mg10", "s3_mg33", "mini_r72"]
