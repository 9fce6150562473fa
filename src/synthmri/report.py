"""The `report` stage: markdown tables in the shape of the paper's Tables 3-6 beside its published numbers
(paper §6), paired tests against the baseline, and figures like Figures 11-17.

Every reference number says where it comes from: **paper** (its tables and §6 text) or **notebooks**
(the study's code outputs, docs/paper_as_coded.md, never printed in the paper: the real-vs-real FID floors,
KID, the mini-classification and per-seed accuracies). Whether our numbers compare with anything is
read from the metrics files (random Inception or random classifier weights), not from the profile.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmri.classify import stats as S
from synthmri.classify.config import ClassifyParams
from synthmri.fidelity import metrics as FM
from synthmri.io import atomic_path, read_json, read_table, write_json
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
FIGURES = {"fig11": "accuracy over scenarios", "fig12": "S2 precision/recall", "fig13": "S3 precision/recall",
           "fig14": "S4 precision/recall", "fig15": "F1 per class", "fig16": "S5 confusion matrices",
           "fig17": "mini-classification"}


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
                 fidelity_json: Path | None = None, profile: str = "") -> dict[str, Any]:
    """Write `out_dir/README.md`, `out_dir/paired_tests.json` and `out_dir/fig*.png`; return a summary."""
    from synthmri.classify.run import paired_vs_baseline

    metrics, preds = load_results(metrics_dir, predictions_dir)
    if not metrics:
        raise FileNotFoundError(f"no scenario metrics in {metrics_dir} (run the classify stages first)")
    out_dir = Path(out_dir)
    paired = {}
    if BASELINE in preds:
        for name, p in preds.items():
            if name != BASELINE:
                paired[name] = paired_vs_baseline(p, preds[BASELINE])
    fidelity = read_json(fidelity_json) if fidelity_json and Path(fidelity_json).is_file() else None

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
              "**paper** (its tables and §6 text) or **notebooks** (the study's code outputs, not in the paper).", ""]
    lines += _fidelity_tables(fidelity)
    lines += _table5(metrics.get(BASELINE))
    lines += _scenario_table(metrics, paired)
    lines += _classwise_table(metrics)
    lines += _table6(metrics)
    lines += ["## Figures", ""] + [f"- `{k}.png`: {v}" for k, v in FIGURES.items()] + [""]
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(out_dir / "paired_tests.json", paired)
    figures = _figures(metrics, out_dir)
    return {"scenarios": len(metrics), "paired_tests": len(paired), "figures": figures,
            "baseline_accuracy": metrics.get(BASELINE, {}).get(S.ACCURACY, {}).get("mean")}


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


# ---- figures ----------------------------------------------------------------------------------


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _figures(metrics: dict[str, dict], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_group: dict[str, list[str]] = {}
    for name, m in metrics.items():
        by_group.setdefault(m.get("group") or name, []).append(name)
    label = lambda n: metrics[n].get("label") or n  # noqa: E731

    # Figure 11: accuracy over scenarios (mean ± std)
    names = [n for n in metrics if not n.startswith("mini")]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names)), 3.5))
    acc = [metrics[n][S.ACCURACY] for n in names]
    ax.bar(range(len(names)), [a["mean"] for a in acc], yerr=[a["std"] for a in acc], capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    written.append(_save(fig, out_dir / "fig11.png"))

    # Figures 12-14: class-wise precision and recall, baseline vs each group
    for fig_name, group in (("fig12", "S2"), ("fig13", "S3"), ("fig14", "S4")):
        members = ([BASELINE] if BASELINE in metrics else []) + by_group.get(group, [])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, metric in zip(axes, (S.PRECISION, S.RECALL)):
            if members:
                classes = list(metrics[members[0]]["per_class"])
                width = 0.8 / len(members)
                for j, n in enumerate(members):
                    pc = metrics[n]["per_class"]
                    ax.bar(np.arange(len(classes)) + j * width, [pc[c][metric]["mean"] for c in classes], width,
                           yerr=[pc[c][metric]["std"] for c in classes], capsize=2, label=label(n))
                ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
            ax.set_title(f"{metric} (avg with std)")
            ax.set_ylim(0, 1.05)
        axes[0].legend(fontsize=7)
        written.append(_save(fig, out_dir / f"{fig_name}.png"))

    # Figure 15: F1 per class over scenarios
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names)), 3.5))
    if names:
        for c in metrics[names[0]]["per_class"]:
            ax.plot(range(len(names)), [metrics[n]["per_class"][c][S.F1]["mean"] for n in names], marker="o", label=c)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("F1")
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "fig15.png"))

    # Figure 16: confusion matrices before / after fine-tuning (mean row-normalised rates)
    ft = next((m for m in metrics.values() if "before" in m and "after" in m), None)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    if ft is not None:
        classes = list(ft["before"]["per_class"])
        for ax, phase in zip(axes, ("before", "after")):
            cm = np.asarray(ft[phase]["confusion_rate_mean"])
            ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            ax.set_title("initial" if phase == "before" else "fine-tuned")
    written.append(_save(fig, out_dir / "fig16.png"))

    # Figure 17: mini-classification, real only vs 72 real + synthetic
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for group, marker in (("mini-real", "o"), ("mini-mixed", "s")):
        members = by_group.get(group, [])
        if members:
            x = [sum(v["real"] + v["synthetic"] for v in metrics[n]["train_counts"].values()) for n in members]
            a = [metrics[n][S.ACCURACY] for n in members]
            ax.errorbar(x, [v["mean"] for v in a], yerr=[v["std"] for v in a], marker=marker, capsize=3, label=group)
    ax.set_xlabel("training images")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "fig17.png"))
    return written
