"""The `report` stage: markdown tables in the shape of the paper's Tables 3-6 beside its published numbers
(seeds/README.md, paper §6), paired tests against the baseline, and figures like Figures 11-17."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmri.classify import stats as S
from synthmri.classify.config import ClassifyParams
from synthmri.io import atomic_path, read_json, read_table, write_json

BASELINE = "baseline"
# the paper's published numbers (paper §6; PAPER_CODE.md for the mini-classification and per-seed values)
PAPER_FID = {"glioma": 76.15, "meningioma": 66.42, "pituitary": 74.88, "notumor": 80.25}  # Table 3
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
PAPER_ACCURACY = {  # mean accuracy where the paper (or its notebooks) state one
    "baseline": 0.93, "s1_balance": 0.91, "s4_600": 0.93, "s5_finetune": 0.93, "s6_synthetic": 0.78,
    "mini_r72": 0.62, "mini_r144": 0.7533, "mini_r720": 0.8567, "mini_s72": 0.7167, "mini_s648": 0.7833,
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
    if profile == "demo":
        lines += ["> **DEMO numbers** (tiny synthetic-anatomy data, small model): not a reproduction of the paper.", ""]
    lines += [f"Profile: `{profile or 'unknown'}`. Classifier: `{cfg.model.arch}` (pretrained: {cfg.model.pretrained}), "
              f"paper_as_coded: {cfg.paper_as_coded}. Values are mean ± sample std over seeds; CI = 95% bootstrap "
              "over test images of the seed-averaged value; McNemar = exact paired test against the baseline on the "
              "same test images, per seed (beyond the paper).", ""]
    lines += _fidelity_tables(fidelity)
    lines += _table5(metrics.get(BASELINE))
    lines += _scenario_table(metrics, paired)
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


def _fid_of(fidelity: Any, cls: str, *names: str) -> float | None:
    """Tolerant lookup: {cls: {name: v}} or {name: {cls: v}} or {cls: {name: {"value"|"mean": v}}}."""
    if not isinstance(fidelity, dict):
        return None
    for name in names:
        for v in (fidelity.get(cls, {}).get(name) if isinstance(fidelity.get(cls), dict) else None,
                  fidelity.get(name, {}).get(cls) if isinstance(fidelity.get(name), dict) else None):
            if isinstance(v, dict):
                v = v.get("value", v.get("mean"))
            if isinstance(v, (int, float)):
                return float(v)
    return None


def _fidelity_tables(fidelity: Any) -> list[str]:
    classes = list(PAPER_FID)
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    out = ["## Table 3: FID per class", "", "| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|",
           "| paper | " + " | ".join(f"{PAPER_FID[c]:.2f}" for c in classes) + " |",
           "| ours | " + " | ".join(fmt(_fid_of(fidelity, c, "fid", "FID")) for c in classes) + " |", "",
           "The paper's FID used Keras InceptionV3 features (PAPER_CODE.md): not comparable with torch-fidelity's.", "",
           "## Table 4: Inception Score, real / generated", "", "| | " + " | ".join(classes) + " |",
           "|---" * (len(classes) + 1) + "|",
           "| paper | " + " | ".join(f"{PAPER_IS[c][0]:.2f} / {PAPER_IS[c][1]:.2f}" for c in classes) + " |",
           "| ours | " + " | ".join(f"{fmt(_fid_of(fidelity, c, 'is_real', 'isc_real'))} / {fmt(_fid_of(fidelity, c, 'is', 'isc', 'is_generated'))}"
                                   for c in classes) + " |", "",
           "The paper's IS is the true IS raised to 1/ln 2 (PAPER_CODE.md).", ""]
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
           "| scenario | group | label | real | synthetic | accuracy | CI | macro F1 | CI | McNemar vs baseline: seeds p<0.05 (max p) | paper accuracy |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
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
                   f"{_paper(PAPER_ACCURACY.get(name))} |")
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
