"""The `report` stage: markdown tables in the shape of the paper's Tables 3-6 beside its published numbers
(paper §6), paired tests against the baseline, and figures like Figures 11-17.

Every reference number says where it comes from: **paper** (its tables and §6 text) or **notebooks**
(the study's code outputs, docs/paper_as_coded.md, never printed in the paper: the real-vs-real FID floors,
KID, the mini-classification and per-seed accuracies). Whether our numbers compare with anything is
read from the metrics files (random Inception or random classifier weights), not from the profile.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmri import report_figures as RF
from synthmri.classify import stats as S
from synthmri.classify.config import ClassifyParams
from synthmri.fidelity import metrics as FM
from synthmri.io import atomic_path, read_json, read_table, write_json
from synthmri.params import PROVENANCE
from synthmri.summary import weights_banner

BASELINE = "baseline"
PAPER, NOTEBOOKS = "paper", "notebooks"  # where a reference number comes from (the module docstring)
# ---- the paper's own numbers (paper §6)
PAPER_FID = {"glioma": 76.15, "meningioma": 66.42, "pituitary": 74.88, "notumor": 80.25}  # Table 3
PAPER_FID_MEAN = 74.43  # §6.1.1
PAPER_IS = {"glioma": (4.38, 3.34), "meningioma": (4.24, 3.52), "pituitary": (3.07, 2.36), "notumor": (3.43, 3.26)}  # Table 4
PAPER_TABLE5 = {  # precision, recall, F1, training images
    "glioma": (0.93, 0.91, 0.93, 867), "meningioma": (0.83, 0.88, 0.86, 802),
    "pituitary": (0.98, 0.94, 0.96, 721), "notumor": (0.98, 0.99, 0.98, 817),
}
PAPER_TABLE5_MACRO = (0.93, 0.93, 0.93)
PAPER_TABLE6 = {  # initial precision, recall; fine-tuned precision, recall
    "glioma": (0.91, 0.95, 0.95, 0.90), "meningioma": (0.86, 0.82, 0.84, 0.84),
    "notumor": (0.98, 0.99, 0.98, 0.99), "pituitary": (0.97, 0.95, 0.94, 0.97),
}
PAPER_ACCURACY = {  # mean accuracy where the paper's text states one (§6.2.1, §6.2.2)
    "baseline": 0.93, "s1_balance": 0.91, "s4_600": 0.93, "s5_finetune": 0.93, "s6_synthetic": 0.78,
}
# The other studies' headline numbers (docs/studies.md), each labelled as that study's, never the paper's:
# profile -> [(scenario, what the study reports, its value, our metric key)]; a scenario "ratio=<r>" is the
# ratio stage's run at that ratio (metrics/ratio.json), compared only when this experiment ran that ratio
STUDY_NUMBERS = {
    "sdturbo": ("the SD-Turbo study (README abstract)",
                [("baseline", "ResNet50 accuracy, real only (our reading: 94.81 % less the 1.3-point gain)", 0.9351, "accuracy"),
                 ("ratio=4", "ResNet50 accuracy, 4 synthetic per real image", 0.9481, "accuracy")]),
    "dcgan_tumour_normal": ("the DCGAN tumour-vs-normal study (README)",
                            [("tsvr", "ResNet accuracy, trained on DCGAN images, tested on real", 0.7219, "accuracy")]),
    "dcgan_64": ("the 64x64 DCGAN study", []),  # no quantitative result: loss curves and samples only
}
# §6.2.2's class-wise figures, as the text gives them: (scenarios, class, metric, value, the text's wording).
# Several scenarios: the text does not say at which amount; our value is shown for each.
PAPER_CLASSWISE = [
    (("s1_balance",), "glioma", "precision", 0.89, "S1: decreased by 0.04 (Table 5: 0.93)"),
    (("s1_balance",), "meningioma", "precision", 0.79, "S1: decreased by 0.04 (Table 5: 0.83)"),
    (("s6_synthetic",), "glioma", "precision", 0.67, "S6: decreasing to 0.67"),
    (("s6_synthetic",), "meningioma", "precision", 0.53, "S6: reaching 0.53"),
    (("s2_m10",), "glioma", "precision", 0.94, "S2 +11%: 0.94"),
    (("s2_m20",), "glioma", "precision", 0.98, "S2 +25%: 0.98"),
    (("s2_m33",), "glioma", "precision", 0.90, "S2 +50%: 0.90"),
    (("s2_m10",), "meningioma", "precision", 0.81, "S2 +11%: 0.81"),
    (("s2_m20",), "meningioma", "precision", 0.75, "S2 +25%: 0.75"),
    (("s2_m33",), "meningioma", "precision", 0.81, "S2 +50%: 0.81"),
    (("s2_m20",), "meningioma", "recall", 0.92, "S2 +25%: 0.92"),
    (("s3_mg10", "s3_mg20", "s3_mg33"), "glioma", "recall", 0.83, "S3: drops to 0.83 (amount not stated)"),
    (("s3_mg10", "s3_mg20", "s3_mg33"), "meningioma", "precision", 0.72, "S3: decreases to 0.72 (amount not stated)"),
    (("s4_600",), "meningioma", "precision", 0.81, "S4 +600: increased to 0.81"),
    (("s4_600",), "meningioma", "recall", 0.81, "S4 +600: increased to 0.81"),
]
# ---- the notebooks' numbers (docs/paper_as_coded.md), not in the paper
NOTEBOOK_FID_FLOOR = {"glioma": 48.28, "meningioma": 58.93, "pituitary": 45.33, "notumor": 41.02}  # Testing vs Training
NOTEBOOK_KID = {"glioma": (0.0457, 0.0059), "meningioma": (0.0357, 0.0044), "pituitary": (0.0738, 0.0067),
                "notumor": (0.0424, 0.0044)}  # generated vs Training, torch-fidelity, kid_subset_size 92
NOTEBOOK_ACCURACY = {  # mini-classification (§6.2.3 shows only Figure 17): mean, std over seeds
    "mini_r72": (0.62, 0.0755), "mini_r144": (0.7533, 0.0208), "mini_r720": (0.8567, 0.0153),
    "mini_s72": (0.7167, 0.0306), "mini_s648": (0.7833, 0.0252),
}
NOTEBOOK_PER_SEED = {  # accuracy per seed (33, 66, 99)
    "baseline": (0.93, 0.93, 0.94), "s1_balance": (0.90, 0.93, 0.91), "s4_200": (0.93, 0.87, 0.94),
    "s6_synthetic": (0.80, 0.76, 0.77),
}
# ---- the paper's data (§3, §4.1, Table 2), training set
PAPER_AUDIT = {"rgb": 92, "distinct_sizes": 382, "most_common": "512x512", "most_common_share": 0.692,
               "blurry": 1389, "blurry_share": 0.243, "blur_threshold": 50}
PAPER_DEDUP = {"train_images_with_duplicates": 155, "train_removed": 207, "test_images_with_duplicates": 21,
               "test_removed": 30}
PAPER_TABLE2 = {  # plane -> class -> training images after preprocessing
    "sagittal": {"glioma": 232, "meningioma": 315, "pituitary": 256, "notumor": 60},
    "axial": {"glioma": 322, "meningioma": 233, "pituitary": 223, "notumor": 757},
    "coronal": {"glioma": 313, "meningioma": 254, "pituitary": 242, "notumor": 0},
}
FIGURES = {"fig11": "accuracy over scenarios", "fig12": "S2 precision/recall", "fig13": "S3 precision/recall",
           "fig14": "S4 precision/recall", "fig15": "F1 per class", "fig16": "S5 confusion matrices",
           "fig17": "mini-classification", "confusion": "confusion matrix of every scenario",
           "ratio": "accuracy against the real:synthetic ratio", "samples": "generated images per class"}


def _pm(block: dict | None, key: str | None = None, digits: int = 3) -> str:
    if block is None:
        return "—"
    b = block[key] if key else block
    return f"{b['mean']:.{digits}f} ± {b['std']:.{digits}f}"


def _ci(block: dict) -> str:
    ci = (block.get("ci95_low"), block.get("ci95_high"))
    return "—" if None in ci or any(math.isnan(v) for v in ci) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _paper(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def load_results(metrics_dir: Path, predictions_dir: Path) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Scenario metrics (`metrics_dir/<name>.json`) and predictions (`predictions_dir/<name>/predictions.csv`)."""
    metrics = {p.stem: read_json(p) for p in sorted(Path(metrics_dir).glob("*.json"))}
    preds = {}
    for name in metrics:
        f = Path(predictions_dir) / name / "predictions.csv"
        if f.is_file():
            preds[name] = read_table(f)
    return metrics, preds


def write_report(metrics_dir: Path, predictions_dir: Path, out_dir: Path, cfg: ClassifyParams, *,
                 fidelity_json: Path | None = None, profile: str = "", ratio_json: Path | None = None,
                 data_metrics: Path | None = None, synthetic_dir: Path | None = None, plots_dir: Path | None = None,
                 headline_json: Path | None = None) -> dict[str, Any]:
    """Write `out_dir/report.html` (one self-contained page: every figure embedded), the same text as
    `out_dir/README.md` beside its PNGs, `out_dir/paired_tests.json`, and `headline_json` (the few numbers
    `dvc exp show` lists); return a summary.

    Sections follow the paper: data (§3-4: `data_metrics`' ingest/audit/dedup/preprocess JSON, `plots_dir`/audit),
    fidelity (§6.1: `fidelity_json`, samples from `synthetic_dir`, `plots_dir`/fidelity's memorisation pairs),
    classification (§6.2: scenarios in the paper's order, `ratio_json`), then the paired tests.
    """
    from synthmri.classify.run import paired_vs_baseline

    metrics, preds = load_results(metrics_dir, predictions_dir)
    if not metrics:
        raise FileNotFoundError(f"no scenario metrics in {metrics_dir} (run the classify stages first)")
    metrics = {n: metrics[n] for n in RF.scenario_order(metrics, cfg.scenarios)}  # the paper's order, not A-Z
    # the profile the numbers came from, as their stages recorded it: params.yaml may have moved on since
    recorded = sorted({str(p["profile"]) for m in metrics.values() if (p := m.get(PROVENANCE)) and p.get("profile")})
    profile = ", ".join(recorded) or profile
    out_dir = Path(out_dir)
    paired = {}
    if BASELINE in preds:
        for name, p in preds.items():
            if name != BASELINE and metrics.get(name, {}).get("test_set", "real") == "real":  # same test images only
                paired[name] = paired_vs_baseline(p, preds[BASELINE])
    paired = {n: paired[n] for n in metrics if n in paired}
    fidelity = _read(fidelity_json)
    ratio = _read(ratio_json)
    data = {k: _read(Path(data_metrics) / f"{k}.json") for k in ("ingest", "audit", "dedup", "preprocess")} \
        if data_metrics else {}
    classes = RF.classes_of(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}  # file in out_dir -> caption

    lines = ["# Results beside the paper", ""]
    banner = weights_banner(fidelity, metrics)  # from the metrics files, whatever the profile
    if banner:
        lines += [f"> **{banner}**", ""]
    if profile == "demo":
        lines += ["> **DEMO numbers** (tiny synthetic-anatomy data, small model): not a reproduction of the paper.", ""]
    archs = sorted({str(m.get("arch", cfg.model.arch)) for m in metrics.values()})
    pretrained = sorted({str(m.get("pretrained", "?")) for m in metrics.values()})
    lines += [f"Profile: `{profile or 'unknown'}`. Classifier: `{', '.join(archs)}` (ImageNet weights: "
              f"{', '.join(pretrained)}), paper_as_coded: {cfg.paper_as_coded}. Values are mean ± sample std over seeds; "
              "CI = 95% bootstrap over test images of the seed-averaged value; McNemar = exact paired test against the "
              "baseline on the same test images, per seed (beyond the paper). Reference columns say their source: "
              "**paper** (its tables and §6 text) or **notebooks** (the study's code outputs, not in the paper).", "",
              "Contents: 1. Data · 2. Fidelity · 3. Classification · 4. Statistical comparisons. "
              "Figures: a dashed line marks chance (1/number of classes); black diamonds, the paper's (or the "
              "notebooks') values where they publish one.", ""]

    def figure(name: str, fig, caption: str) -> None:
        images[_save(fig, out_dir / f"{name}.png")] = caption
        lines.extend([f"![{caption}]({name}.png)", "", f"*{caption}*", ""])

    def copy(src: Path, name: str, caption: str) -> None:
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(src.read_bytes())
        images[name] = caption
        lines.extend([f"![{caption}]({name})", "", f"*{caption}*", ""])

    # 1. data (paper §3-4)
    lines += ["## 1. Data (paper §3-4)", ""] + _data_tables(data, classes)
    audit_plots = Path(plots_dir) / "audit" if plots_dir else None
    for f in sorted(audit_plots.glob("*.png")) if audit_plots and audit_plots.is_dir() else []:
        copy(f, f"audit_{f.name}", f"Audit (paper §3): {f.stem.replace('_', ' ')}")

    # 2. fidelity (paper §5.1.3, §6.1)
    lines += ["## 2. Fidelity of the generated images (paper §6.1)", ""] + _demote(_fidelity_tables(fidelity))
    if synthetic_dir and Path(synthetic_dir).is_dir():
        rows = classes or list(PAPER_FID)
        if not all((Path(synthetic_dir) / c).is_dir() for c in rows):  # a task's per-source generators: their folders
            rows = sorted(d.name for d in Path(synthetic_dir).iterdir() if d.is_dir())
        figure("samples", RF.fig_samples(Path(synthetic_dir), rows),
               "Generated images, the first six of each class's generator (paper's Figure 10)")
    lines += _memorisation_table(fidelity)
    mem_plots = Path(plots_dir) / "fidelity" if plots_dir else None
    for f in sorted(mem_plots.glob("memorisation_*.png")) if mem_plots and mem_plots.is_dir() else []:
        copy(f, f.name, f"Closest synthetic-real pairs, {f.stem.split('_', 1)[1]} (near copies are marked COPY)")

    # 3. classification (paper §6.2)
    lines += ["## 3. Classification (paper §6.2)", ""]
    lines += _study_table(metrics, profile, ratio)
    lines += _demote(_table5(metrics.get(BASELINE)) + _scenario_table(metrics, paired) + _classwise_table(metrics)
                     + _table6(metrics))
    figs = RF.render(metrics, _figure_refs(), len(classes) or len(PAPER_FID))
    for name, caption in (("fig11", "Figure 11: accuracy per scenario"),
                          ("fig12", "Figure 12: class-wise precision and recall, baseline vs Scenario 2"),
                          ("fig13", "Figure 13: class-wise precision and recall, baseline vs Scenario 3"),
                          ("fig14", "Figure 14: class-wise precision and recall, baseline vs Scenario 4"),
                          ("fig15", "Figure 15: class-wise F1 over the scenarios"),
                          ("fig16", "Figure 16: Scenario 5's confusion matrices before and after fine-tuning"),
                          ("fig17", "Figure 17: the mini-classification, real only vs 72 real + synthetic"),
                          ("confusion", "Confusion matrix of every scenario")):
        figure(name, figs[name], caption)
    lines += ["### The real:synthetic ratio sweep", ""] + _ratio_lines(ratio, metrics.get(BASELINE))
    if ratio is not None:
        points = ([(0.0, metrics[BASELINE][S.ACCURACY])] if BASELINE in metrics else []) \
            + [(float(ratio["ratio"]), ratio[S.ACCURACY])]
        figure("ratio", RF.fig_ratio(points, len(classes) or len(PAPER_FID)),
               "Accuracy against synthetic images per real image, 95% bootstrap CIs (0: the baseline)")

    # 4. statistical comparisons
    lines += ["## 4. Statistical comparisons (beyond the paper)", ""] + _stats_lines(metrics, paired, ratio)

    text = "\n".join(lines) + "\n"
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(to_html(text, out_dir, title=f"synthmri report ({profile or 'unknown profile'})"))
    write_json(out_dir / "paired_tests.json", paired)
    if headline_json is not None:
        write_json(headline_json, headline(metrics, fidelity, ratio, data, profile, banner))
    return {"scenarios": len(metrics), "paired_tests": len(paired), "figures": sorted(images),
            "baseline_accuracy": metrics.get(BASELINE, {}).get(S.ACCURACY, {}).get("mean")}


def _read(path: Path | None) -> Any:
    return read_json(path) if path and Path(path).is_file() else None


def _demote(lines: list[str]) -> list[str]:
    """The paper's tables one heading level down, under the report's sections."""
    return ["#" + ln if ln.startswith("#") else ln for ln in lines]


# ---- tables -----------------------------------------------------------------------------------


def _val(fidelity: Any, cls: str, key: str, field: str | None = None) -> Any:
    """`fidelity[cls][key]` (or its `field`) of metrics/fidelity.json; None where absent."""
    v = fidelity.get(cls, {}).get(key) if isinstance(fidelity, dict) and isinstance(fidelity.get(cls), dict) else None
    if field is not None:
        v = v.get(field) if isinstance(v, dict) else None
    return v


def _num(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def _mean(values: list[Any]) -> float | None:
    ok = [v for v in values if isinstance(v, (int, float))]
    return float(np.mean(ok)) if ok and len(ok) == len(values) else None


def _fidelity_tables(fidelity: Any) -> list[str]:
    """Tables 3 and 4, and KID, each row labelled with its source and, for IS, its formula."""
    classes = list(PAPER_FID)
    head = ["| | " + " | ".join(classes) + " | mean |", "|---" * (len(classes) + 2) + "|"]

    def ours(key: str, field: str | None = None, digits: int = 2) -> list[str]:
        vals = [_val(fidelity, c, key, field) for c in classes]
        return [_num(v, digits) for v in vals] + [_num(_mean(vals), digits)]

    rs = fidelity.get("reference", {}).get("resample") if isinstance(fidelity, dict) else None
    rs_label = f"{rs['train_size']}→{rs['out_size']} px" if isinstance(rs, dict) else "as generated"
    out = ["## Table 3: FID per class, and the real-vs-real floors", "", *head,
           _row("paper (Table 3): generated vs Training", [f"{PAPER_FID[c]:.2f}" for c in classes] + [f"{PAPER_FID_MEAN:.2f}"]),
           _row("ours: generated vs Training", ours(FM.FID)),
           _row("notebooks: real Testing vs Training (floor)",
                [f"{NOTEBOOK_FID_FLOOR[c]:.2f}" for c in classes] + [_num(_mean(list(NOTEBOOK_FID_FLOOR.values())))]),
           _row("ours: real Testing vs Training (floor)", ours(FM.FID_REAL_FLOOR)),
           _row(f"ours: real Testing resized {rs_label} as generated images are, vs Training (floor for generated images)",
                ours(FM.FID_REAL_FLOOR_RESAMPLED)), "",
           "A generated set can at best reach the resampled floor: its images went through the same two resizes. "
           "The paper's FID used Keras InceptionV3 features and its floors come from its notebooks (docs/paper_as_coded.md), "
           "so they are not comparable with torch-fidelity's Inception values here; compare each row with its floor.",
           "", "## KID per class (generated vs Training; beyond the paper's text)", "", *head,
           _row("notebooks: generated vs Training (torch-fidelity, subset size 92)",
                [f"{NOTEBOOK_KID[c][0]:.4f} ± {NOTEBOOK_KID[c][1]:.4f}" for c in classes] + ["—"]),
           _row("ours: generated vs Training", ours(FM.KID, "mean", 4)),
           _row("ours: real Testing vs Training (floor)", ours(FM.KID_REAL_FLOOR, "mean", 4)),
           _row(f"ours: real Testing resized {rs_label}, vs Training", ours(FM.KID_REAL_FLOOR_RESAMPLED, "mean", 4)),
           _row("ours: improved precision, generated vs Training", ours(FM.PRECISION, None, 3)),
           _row("ours: improved recall, generated vs Training", ours(FM.RECALL, None, 3)), ""]

    def standard(key: str) -> list[str]:
        cells = []
        for c in classes:
            b = _val(fidelity, c, key)
            cells.append(f"{b['mean']:.2f} ± {b['std']:.2f} ({b.get('splits', '?')} splits)"
                         if isinstance(b, dict) and isinstance(b.get("mean"), (int, float)) else "—")
        return cells + ["—"]

    to_std = lambda v: v ** math.log(2)  # noqa: E731 - undo the paper's 1/ln 2 exponent (docs/paper_as_coded.md)
    out += ["## Table 4: Inception Score, real (Training) and generated", "",
            "The paper's code took the KL divergence in bits (`entropy(..., base=2)`) and then `exp`, on one split: "
            "its IS is the standard IS raised to 1/ln 2 ≈ 1.44 (docs/paper_as_coded.md). Rows marked **paper's formula** apply "
            "that formula to our logits and compare with the paper's numbers; rows marked **standard IS** are "
            "torch-fidelity's (natural log, mean ± std over splits); the paper's values converted to the standard "
            "one-split IS (value^ln 2) are shown for reference.", "", *head,
            _row("paper (Table 4): real, paper's formula", [f"{PAPER_IS[c][0]:.2f}" for c in classes] + ["—"]),
            _row("ours: real, paper's formula", ours(FM.IS_REAL_PAPER)),
            _row("paper (Table 4): generated, paper's formula", [f"{PAPER_IS[c][1]:.2f}" for c in classes] + ["—"]),
            _row("ours: generated, paper's formula", ours(FM.IS_GENERATED_PAPER)),
            _row("paper: real, converted to standard IS (1 split)", [f"{to_std(PAPER_IS[c][0]):.2f}" for c in classes] + ["—"]),
            _row("paper: generated, converted to standard IS (1 split)",
                 [f"{to_std(PAPER_IS[c][1]):.2f}" for c in classes] + ["—"]),
            _row("ours: real, standard IS", standard(FM.IS_REAL)),
            _row("ours: generated, standard IS", standard(FM.IS_GENERATED)), ""]
    return out


def _table5(base: dict | None) -> list[str]:
    out = ["## Table 5: baseline (real data only)", ""]
    if base is None:
        return out + ["(no baseline scenario was run)", ""]
    out += ["| class | precision | recall | F1 | training images | paper P / R / F1 / n |", "|---|---|---|---|---|---|"]
    for c, pc in base["per_class"].items():
        paper = PAPER_TABLE5.get(c)
        counts = base["train_counts"].get(c, {})
        out.append(f"| {c} | {_pm(pc, 'precision')} | {_pm(pc, 'recall')} | {_pm(pc, 'f1')} | "
                   f"{counts.get('real', 0) + counts.get('synthetic', 0)} | "
                   + (" / ".join(f"{v:g}" for v in paper) if paper else "—") + " |")
    out.append(f"| macro average | {_pm(base, S.MACRO_PRECISION)} | {_pm(base, S.MACRO_RECALL)} | {_pm(base, S.MACRO_F1)} | "
               f"{base['train_images']} | {' / '.join(f'{v:g}' for v in PAPER_TABLE5_MACRO)} |")
    out += ["", f"Accuracy {_pm(base, S.ACCURACY)} (CI {_ci(base[S.ACCURACY])}); paper 0.93.", ""]
    return out


def _scenario_table(metrics: dict[str, dict], paired: dict[str, dict]) -> list[str]:
    out = ["## Every scenario (Figures 11, 15, 17)", "",
           "| scenario | group | label | real | synthetic | accuracy | CI | macro F1 | CI | McNemar vs baseline: seeds p<0.05 (max p) "
           "| paper accuracy (§6.2) | notebooks accuracy |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        real = sum(v["real"] for v in m["train_counts"].values())
        syn = sum(v["synthetic"] for v in m["train_counts"].values())
        if "finetune_counts" in m:
            real_ft = sum(v["real"] for v in m["finetune_counts"].values())
            syn_ft = sum(v["synthetic"] for v in m["finetune_counts"].values())
            real, syn = f"{real} → {real_ft}", f"{syn} → {syn_ft}"
        pt = paired.get(name)
        mc = "—" if not pt or pt["max_p"] is None else f"{pt['seeds_p_below_0_05']}/{pt['seeds']} ({pt['max_p']:.3g})"
        out.append(f"| {name} | {m.get('group', '')} | {m.get('label', '')} | {real} | {syn} | {_pm(m, S.ACCURACY)} | "
                   f"{_ci(m[S.ACCURACY])} | {_pm(m, S.MACRO_F1)} | {_ci(m[S.MACRO_F1])} | {mc} | "
                   f"{_paper(PAPER_ACCURACY.get(name))} | {_notebooks(name)} |")
    return out + ["", "Notebooks accuracies are the study's code outputs (docs/paper_as_coded.md): mean ± std over seeds for "
                      "the mini-classification (the paper shows only Figure 17), per seed (33 / 66 / 99) elsewhere.", ""]


def _notebooks(name: str) -> str:
    if name in NOTEBOOK_ACCURACY:
        m, sd = NOTEBOOK_ACCURACY[name]
        return f"{m:.4f} ± {sd:.4f}"
    if name in NOTEBOOK_PER_SEED:
        return " / ".join(f"{v:.2f}" for v in NOTEBOOK_PER_SEED[name])
    return "—"


def _classwise_table(metrics: dict[str, dict]) -> list[str]:
    """§6.2.2's class-wise figures, where the text gives one, beside ours (Figures 12-14 draw the rest)."""
    out = ["## §6.2.2: class-wise figures the paper's text states", "",
           "| paper's text | scenario | class | metric | paper | ours |", "|---|---|---|---|---|---|"]
    for names, cls, metric, value, words in PAPER_CLASSWISE:
        for name in names:
            pc = metrics.get(name, {}).get("per_class", {}).get(cls)
            ours = _pm(pc, metric) if isinstance(pc, dict) and metric in pc else "(not run)"
            out.append(f"| {words} | {name} | {cls} | {metric} | {value:.2f} | {ours} |")
    return out + [""]


def _table6(metrics: dict[str, dict]) -> list[str]:
    ft = next((m for m in metrics.values() if "before" in m and "after" in m), None)
    out = ["## Table 6: Scenario 5, class-wise precision and recall before and after fine-tuning", ""]
    if ft is None:
        return out + ["(no fine-tuning scenario was run)", ""]
    out += [f"Scenario `{ft['scenario']}`.", "", "| class | initial P | initial R | fine-tuned P | fine-tuned R | paper (P, R → P, R) |",
            "|---|---|---|---|---|---|"]
    for c in ft["before"]["per_class"]:
        b, a = ft["before"]["per_class"][c], ft["after"]["per_class"][c]
        paper = PAPER_TABLE6.get(c)
        out.append(f"| {c} | {_pm(b, 'precision')} | {_pm(b, 'recall')} | {_pm(a, 'precision')} | {_pm(a, 'recall')} | "
                   + (f"{paper[0]}, {paper[1]} → {paper[2]}, {paper[3]}" if paper else "—") + " |")
    out += ["", f"Accuracy {_pm(ft['before'], S.ACCURACY)} → {_pm(ft['after'], S.ACCURACY)}; paper 0.93 → 0.93.", ""]
    return out




# ---- data, memorisation, ratio and the paired tests ---------------------------------------------------------


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _cell(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "—" if v is None else str(v)


def _data_tables(data: dict[str, Any], classes: list[str]) -> list[str]:
    """Ingest counts, the audit (§3) and dedup (§4.1) beside the paper's training-set numbers, and Table 2."""
    if not any(data.values()):
        return ["(no data-stage metrics were given to the report)", ""]
    ing, aud, ded, pre = (data.get(k) or {} for k in ("ingest", "audit", "dedup", "preprocess"))
    tr = _get(aud, "per_split.train") or aud  # the paper audited the Training split
    common = (_get(tr, "dimensions.most_common") or [[None]])[0]
    share = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    out = ["### The data as ingested", "",
           f"{_cell(ing.get('files'))} files found, {_cell(ing.get('images'))} images, "
           f"{_cell(ing.get('quarantined'))} quarantined "
           f"({', '.join(f'{k}: {v}' for k, v in (ing.get('quarantine_reasons') or {}).items()) or 'none'}).", ""]
    per = ing.get("per_split_class") or {}
    if per:
        cols = classes or sorted({c for v in per.values() for c in v})
        out += ["| split | " + " | ".join(cols) + " | Σ |", "|---" * (len(cols) + 2) + "|"]
        for split, counts in per.items():
            out.append(_row(split, [_cell(counts.get(c, 0)) for c in cols] + [_cell(sum(counts.values()))]))
        out.append("")
    out += ["### The audit (paper §3) and duplicates (paper §4.1), Training split", "",
            "| measure | ours | paper |", "|---|---|---|",
            f"| RGB images (converted to grayscale) | {_cell(_get(tr, 'colour_modes.RGB') or 0)} | {PAPER_AUDIT['rgb']} |",
            f"| distinct image sizes | {_cell(_get(tr, 'dimensions.distinct'))} | {PAPER_AUDIT['distinct_sizes']} |",
            f"| most common size (share) | {common[0] or '—'} ({share(_get(tr, 'dimensions.share_most_common'))}) | "
            f"{PAPER_AUDIT['most_common']} ({share(PAPER_AUDIT['most_common_share'])}) |",
            f"| blurry (Laplacian variance < {_cell(_get(tr, 'blur.threshold'))}) | {_cell(_get(tr, 'blur.blurry'))} "
            f"({share(_get(tr, 'blur.share'))}) | {PAPER_AUDIT['blurry']} ({share(PAPER_AUDIT['blurry_share'])}, "
            f"threshold {PAPER_AUDIT['blur_threshold']}) |",
            f"| Training images with a duplicate | {_cell(_get(ded, 'train.images_with_duplicates'))} | "
            f"{PAPER_DEDUP['train_images_with_duplicates']} |",
            f"| Training images removed as duplicates | {_cell(_get(ded, 'train.removed'))} | {PAPER_DEDUP['train_removed']} |",
            f"| Testing images with a duplicate | {_cell(_get(ded, 'test.images_with_duplicates'))} | "
            f"{PAPER_DEDUP['test_images_with_duplicates']} |",
            f"| Testing images removed as duplicates | {_cell(_get(ded, 'test.removed'))} | {PAPER_DEDUP['test_removed']} |",
            f"| Training copies of Testing images removed (beyond the paper) | {_cell(_get(ded, 'cross_split.removed'))} | — |",
            ""]
    t2 = pre.get("table2")
    if isinstance(t2, dict):
        cols = classes or list(PAPER_TABLE5)
        planes = [p for p in PAPER_TABLE2 if p in t2] + [p for p in t2 if p not in PAPER_TABLE2]
        out += ["### Table 2: the final Training set per plane and class, ours (paper)", "",
                "| plane | " + " | ".join(cols) + " | Σ |", "|---" * (len(cols) + 2) + "|"]

        def cell(ours: int, paper: int | None) -> str:
            return f"{ours} ({paper})" if paper is not None else str(ours)

        for p in planes:
            ours, paper = t2[p], PAPER_TABLE2.get(p, {})
            out.append(_row(p, [cell(ours.get(c, 0), paper.get(c)) for c in cols]
                            + [cell(sum(ours.get(c, 0) for c in cols), sum(paper.values()) if paper else None)]))
        totals = [cell(sum(t2[p].get(c, 0) for p in planes), sum(PAPER_TABLE2[p][c] for p in PAPER_TABLE2)
                       if c in PAPER_TABLE5 else None) for c in cols]
        grand = sum(sum(t2[p].get(c, 0) for c in cols) for p in planes)
        out += [_row("Σ", totals + [cell(grand, sum(sum(v.values()) for v in PAPER_TABLE2.values()))]), "",
                f"Testing images kept: {_cell(_get(pre, 'test.total'))}; removed by preprocessing: "
                + (", ".join(f"{k} {v}" for k, v in (pre.get("removed") or {}).items()) or "none") + ".", ""]
    return out


def _memorisation_table(fidelity: Any) -> list[str]:
    classes = [c for c in PAPER_FID if isinstance(fidelity, dict) and isinstance(fidelity.get(c), dict)]
    out = ["### Memorisation: generated images near a training image (beyond the paper)", ""]
    if not classes:
        return out + ["(no fidelity metrics)", ""]
    out += ["| class | generated | near copies (pixels) | share | criterion | near copies (features) | "
            "median nearest-real MSE, generated | same, real Testing |", "|---|---|---|---|---|---|---|---|"]
    for c in classes:
        m = fidelity[c].get("memorisation") or {}
        px, ft = m.get("pixel") or {}, m.get("feature") or {}
        out.append(f"| {c} | {_cell(m.get('images'))} | {_cell(px.get('near_copies'))} | {_cell(px.get('share'))} | "
                   f"{px.get('criterion', '—')} | {_cell(ft.get('near_copies'))} | {_cell(px.get('nearest_mse_median'))} | "
                   f"{_cell(px.get('real_test_nearest_mse_median'))} |")
    return out + ["", "A real Testing image's distance to its nearest Training image is the scale: generated images "
                      "much closer than that are suspect.", ""]


def _figure_refs() -> dict[str, Any]:
    """The reference values each figure marks: the paper's (§6.2, Table 5, §6.2.2) and the notebooks' (mini)."""
    classwise = {(BASELINE, c, m): v[i] for c, v in PAPER_TABLE5.items() for i, m in enumerate((S.PRECISION, S.RECALL))}
    classwise |= {(names[0], c, m): v for names, c, m, v, _ in PAPER_CLASSWISE if len(names) == 1}
    return {"accuracy": PAPER_ACCURACY, "classwise": classwise,
            "f1": {(BASELINE, c): v[2] for c, v in PAPER_TABLE5.items()},
            "mini": {n: v[0] for n, v in NOTEBOOK_ACCURACY.items()}}


def _ratio_lines(ratio: dict | None, base: dict | None) -> list[str]:
    if ratio is None:
        return ["(the ratio stage has not run)", ""]
    out = ["| synthetic per real image | training images | accuracy | CI | macro F1 | CI |", "|---|---|---|---|---|---|"]
    if base is not None:
        out.append(f"| 0 (baseline) | {base['train_images']} | {_pm(base, S.ACCURACY)} | {_ci(base[S.ACCURACY])} | "
                   f"{_pm(base, S.MACRO_F1)} | {_ci(base[S.MACRO_F1])} |")
    out.append(f"| {ratio['ratio']:g} | {ratio.get('train_images', '—')} | {_pm(ratio, S.ACCURACY)} | "
               f"{_ci(ratio[S.ACCURACY])} | {_pm(ratio, S.MACRO_F1)} | {_ci(ratio[S.MACRO_F1])} |")
    return out + ["", "One run measures one ratio (`dvc exp run -S ratio=2`); `dvc plots diff` over the experiments "
                      "draws the whole curve from `plots/ratio.csv`.", ""]


def _stats_lines(metrics: dict[str, dict], paired: dict[str, dict], ratio: dict | None) -> list[str]:
    base = metrics.get(BASELINE)
    out = ["Each scenario against the baseline on the same test images: the exact McNemar test per seed "
           "(discordant pairs: images only the baseline got right, only the scenario got right), and the difference "
           "of mean accuracy. With several seeds and scenarios, read p-values as a screen, not a verdict.", "",
           "| scenario | Δ accuracy vs baseline | per seed: baseline-only / scenario-only correct (p) | seeds p<0.05 |",
           "|---|---|---|---|"]
    rows = list(paired.items()) + ([("ratio", ratio["vs_baseline"])] if ratio and "vs_baseline" in ratio else [])
    for name, pt in rows:
        m = ratio if name == "ratio" else metrics[name]
        delta = "—" if base is None else f"{m[S.ACCURACY]['mean'] - base[S.ACCURACY]['mean']:+.3f}"
        seeds = "; ".join(f"{s}: {v['a_only_correct']} / {v['b_only_correct']} ({v['p_value']:.3g})"
                          for s, v in pt["per_seed"].items())
        out.append(f"| {name} | {delta} | {seeds or '—'} | {pt['seeds_p_below_0_05']}/{pt['seeds']} |")
    if not rows:
        out.append("| (no baseline predictions to pair with) | — | — | — |")
    return out + [""]


def _study_table(metrics: dict[str, dict], profile: str, ratio: dict | None = None) -> list[str]:
    """The headline numbers of the study a profile runs (STUDY_NUMBERS), beside ours, labelled as that study's."""
    key = next((k for k in STUDY_NUMBERS if profile == k or profile.startswith(f"{k}_")), None)
    if key is None:
        return []
    who, rows = STUDY_NUMBERS[key]
    out = [f"## Beside {who}", ""]
    if not rows:
        return out + [f"{who[0].upper()}{who[1:]} reports no number to compare with (its loss curves and sample "
                      "grids: `dvc plots show`).", ""]
    out += ["| scenario | what | ours | " + who + " |", "|---|---|---|---|"]
    for scen, what, value, metric in rows:
        m, missing = metrics.get(scen), "(not run)"
        if scen.startswith("ratio="):
            at = float(scen.split("=", 1)[1])
            m = ratio if ratio is not None and float(ratio["ratio"]) == at else None
            missing = f"(this run: ratio {ratio['ratio']:g})" if ratio is not None and m is None else missing
        out.append(f"| {scen} | {what} | {_pm(m, metric) if m else missing} | {value:.4g} |")
    return out + [""]


def headline(metrics: dict[str, dict], fidelity: Any, ratio: dict | None, data: dict[str, Any], profile: str,
             banner: str | None) -> dict[str, Any]:
    """The few numbers `dvc exp show` lists (metrics/headline.json); the detail stays in each stage's file."""
    r = lambda v: round(v, 4) if isinstance(v, float) else v  # noqa: E731
    summary = fidelity.get("summary", {}) if isinstance(fidelity, dict) else {}
    out: dict[str, Any] = {"profile": profile, "compare_with_nothing": banner is not None}
    aud = _get(data.get("audit"), "per_split.train") or data.get("audit") or {}
    out["data"] = {k: v for k, v in {
        "images": _get(data.get("ingest"), "images"), "quarantined": _get(data.get("ingest"), "quarantined"),
        "blur_threshold": _get(aud, "blur.threshold"), "blurry": _get(aud, "blur.blurry"),
        "duplicates_removed": _get(data.get("dedup"), "total.removed"),
        "train_images": _get(data.get("preprocess"), "train.total"),
        "test_images": _get(data.get("preprocess"), "test.total")}.items() if v is not None}
    out["fidelity"] = {k: r(summary[k]) for k in ("fid_mean", "fid_real_floor_mean", "fid_real_floor_resampled_mean",
                                                  "kid_mean", "memorised_share") if k in summary}
    out["accuracy"] = {n: r(m[S.ACCURACY]["mean"]) for n, m in metrics.items()}
    out["macro_f1"] = {n: r(m[S.MACRO_F1]["mean"]) for n, m in metrics.items()}
    if ratio is not None:
        out["ratio"] = {"ratio": ratio["ratio"], "accuracy": r(ratio[S.ACCURACY]["mean"]),
                        "macro_f1": r(ratio[S.MACRO_F1]["mean"])}
    return out


# ---- files: PNG figures and the one self-contained page ------------------------------------------------------


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path.name


_CSS = ("body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #bbb;padding:2px 6px}"
        "blockquote{background:#fff3cd;border-left:4px solid #e0a800;margin:1em 0;padding:.3em 1em}"
        "img{max-width:100%}code{background:#f4f4f4}")


def to_html(markdown: str, folder: Path, title: str) -> str:
    """The Markdown as one HTML page with each image it names from `folder` inlined as a data URI: the
    file opens offline in any browser, alone (a Markdown viewer would need the PNGs beside it)."""
    from markdown_it import MarkdownIt  # ships with rich, a dependency

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)  # text, never markup

    def inline(m: re.Match) -> str:
        f = Path(folder) / m.group(1)
        if not f.is_file() or "/" in m.group(1):
            return m.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n")
