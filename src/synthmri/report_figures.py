"""The report's figures, in the shape of the paper's Figures 10-17, each a matplotlib Figure (tests read
the plotted data back). Every figure has a title and axis labels; a dashed chance line (gid "chance") at
1/number of classes where a score is plotted; the paper's (or the notebooks') values as black markers
(gid "paper"/"notebooks") where they exist; lines join only scenarios of one group (one amount series).

Scenarios come in the paper's order (`scenario_order`), never alphabetically: the mini-classification's
`mini_r144` sorts before `mini_r72` by name, which made Figure 17's lines zigzag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synthmri.classify import stats as S

# the paper's order of scenario groups (§5.2.2): baseline, Scenarios 1-6, then the mini-classification
GROUP_ORDER = ("baseline", "S1", "S2", "S3", "S4", "S5", "S6", "mini-real", "mini-mixed")
MINI_GROUPS = ("mini-real", "mini-mixed")
CHANCE, PAPER_GID, NOTEBOOKS_GID = "chance", "paper", "notebooks"


def _natural(name: str) -> list:
    """`mini_r72` before `mini_r144`: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def scenario_order(metrics: dict[str, dict], configured: Iterable[str] = ()) -> list[str]:
    """Scenario names in the paper's order: by group (GROUP_ORDER, unknown groups after), then as params.yaml
    lists them (conf/ writes them in the paper's order), then by name with numbers compared as numbers."""
    conf = {n: i for i, n in enumerate(configured)}

    def key(n: str):
        g = group_of(metrics, n)
        rank = GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER)
        return rank, g if rank == len(GROUP_ORDER) else "", conf.get(n, len(conf)), _natural(n)

    return sorted(metrics, key=key)


def group_of(metrics: dict[str, dict], name: str) -> str:
    return str(metrics[name].get("group") or name)


def train_total(m: dict) -> int:
    """Training images of a scenario's first phase (real + synthetic, all classes)."""
    return int(sum(v.get("real", 0) + v.get("synthetic", 0) for v in m["train_counts"].values()))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _chance(ax, n_classes: int) -> None:
    ax.axhline(1 / n_classes, ls="--", lw=1, color="grey", gid=CHANCE, label=f"chance (1/{n_classes})")


def _ref(ax, x, y, label: str, gid: str = PAPER_GID) -> None:
    if len(x):
        ax.scatter(x, y, marker="D", s=22, color="black", zorder=5, gid=gid, label=label)


def classes_of(metrics: dict[str, dict]) -> list[str]:
    first = next(iter(metrics.values()), {})
    return list(first.get("per_class", {}))


# ---- Figure 11: accuracy per scenario --------------------------------------------------------------------


def fig11_accuracy(metrics: dict[str, dict], paper: dict[str, float], n_classes: int) -> Figure:
    """Accuracy per scenario (mean ± std over seeds), baseline and Scenarios 1-6, the paper's §6.2 values beside."""
    names = [n for n in metrics if group_of(metrics, n) not in MINI_GROUPS]
    fig = _figure(max(5.5, 0.55 * len(names) + 2), 4)
    ax = fig.subplots()
    x = np.arange(len(names))
    acc = [metrics[n][S.ACCURACY] for n in names]
    groups = [group_of(metrics, n) for n in names]
    palette = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(groups))}
    ax.bar(x, [a["mean"] for a in acc], yerr=[a["std"] for a in acc], capsize=3,
           color=[palette[g] for g in groups], gid="ours")
    ref = [(i, paper[n]) for i, n in enumerate(names) if n in paper]
    _ref(ax, [i for i, _ in ref], [v for _, v in ref], "paper (§6.2)")
    _chance(ax, n_classes)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("scenario (paper's order)")
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Figure 11: accuracy per scenario")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# ---- Figures 12-14: class-wise precision and recall, baseline vs one group ----------------------------------


def fig_classwise(metrics: dict[str, dict], group: str, number: int, paper: dict[tuple[str, str, str], float],
                  n_classes: int, baseline: str = "baseline") -> Figure:
    """Class-wise precision and recall (mean ± std) of the baseline and each scenario of `group`;
    `paper[(scenario, class, metric)]`: the paper's values (Table 5, §6.2.2's text)."""
    members = ([baseline] if baseline in metrics else []) + [n for n in metrics if group_of(metrics, n) == group]
    classes = classes_of(metrics)
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(len(members), 1)
    for ax, metric in zip(axes, (S.PRECISION, S.RECALL)):
        ref_x, ref_y = [], []
        for j, n in enumerate(members):
            pc = metrics[n]["per_class"]
            xs = np.arange(len(classes)) + j * width
            ax.bar(xs, [pc[c][metric]["mean"] for c in classes], width, yerr=[pc[c][metric]["std"] for c in classes],
                   capsize=2, label=metrics[n].get("label") or n)
            for xi, c in zip(xs, classes):
                if (n, c, metric) in paper:
                    ref_x.append(xi)
                    ref_y.append(paper[(n, c, metric)])
        _ref(ax, ref_x, ref_y, "paper (Table 5, §6.2.2)")
        _chance(ax, n_classes)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
        ax.set_xlabel("class")
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.set_title(metric)
        ax.set_ylim(0, 1.1)
    axes[1].legend(fontsize=7, loc="lower right")
    run = "" if len(members) > 1 else f" ({group} not run)"
    fig.suptitle(f"Figure {number}: class-wise precision and recall, baseline vs {group}{run}")
    fig.tight_layout()
    return fig


# ---- Figure 15: F1 per class over scenarios ---------------------------------------------------------------


def fig15_f1(metrics: dict[str, dict], paper: dict[tuple[str, str], float], n_classes: int) -> Figure:
    """Class-wise F1 over the scenarios (not mini); a line joins only the scenarios of one group (S2's three
    amounts, say), a gap separates groups. `paper[(scenario, class)]`: the paper's F1 (Table 5)."""
    names = [n for n in metrics if group_of(metrics, n) not in MINI_GROUPS]
    classes = classes_of(metrics)
    pos, x, prev = {}, 0.0, None
    for n in names:
        g = group_of(metrics, n)
        x += 0 if prev is None else (1 if g == prev else 1.6)
        pos[n], prev = x, g
    fig = _figure(max(6, 0.55 * len(names) + 2.5), 4)
    ax = fig.subplots()
    for ci, c in enumerate(classes):
        color = f"C{ci % 10}"
        for g in dict.fromkeys(group_of(metrics, n) for n in names):
            members = [n for n in names if group_of(metrics, n) == g]
            ax.plot([pos[n] for n in members], [metrics[n]["per_class"][c][S.F1]["mean"] for n in members],
                    marker="o", color=color, gid=f"{g}:{c}", label=c if g == group_of(metrics, names[0]) else None)
    ref = [(pos[n], paper[(n, c)]) for n in names for c in classes if (n, c) in paper]
    _ref(ax, [p for p, _ in ref], [v for _, v in ref], "paper (Table 5)")
    _chance(ax, n_classes)
    ax.set_xticks([pos[n] for n in names], names, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("scenario (paper's order; lines join one group's amounts)")
    ax.set_ylabel("F1 (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Figure 15: class-wise F1 over scenarios")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# ---- confusion matrices -----------------------------------------------------------------------------------


def _confusion(ax, cm: np.ndarray, classes: list[str], title: str, fontsize: int = 7) -> None:
    ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if cm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(classes)), classes, fontsize=fontsize)
    ax.set_xlabel("predicted class", fontsize=fontsize + 1)
    ax.set_ylabel("true class", fontsize=fontsize + 1)
    ax.set_title(title, fontsize=fontsize + 1)


def fig16_finetune(metrics: dict[str, dict]) -> Figure:
    """Scenario 5's confusion matrices (row-normalised rates, mean over seeds) before and after fine-tuning."""
    ft = next((n for n in metrics if "before" in metrics[n] and "after" in metrics[n]), None)
    fig = _figure(9, 4.4)
    axes = fig.subplots(1, 2)
    if ft is None:
        for ax in axes:
            ax.set_axis_off()
        fig.suptitle("Figure 16: Scenario 5's confusion matrices (no fine-tuning scenario was run)")
        return fig
    m = metrics[ft]
    classes = list(m["before"]["per_class"])
    for ax, phase, title in zip(axes, ("before", "after"), ("initial training", "after fine-tuning")):
        _confusion(ax, np.asarray(m[phase]["confusion_rate_mean"]), classes, title)
    fig.suptitle(f"Figure 16: {ft}, confusion matrices (rows: true class, rate per row, mean over seeds)")
    fig.tight_layout()
    return fig


def fig_confusions(metrics: dict[str, dict], cols: int = 4) -> Figure:
    """One confusion matrix per scenario (paper's order; a fine-tuned scenario's after fine-tuning)."""
    names = [n for n in metrics if _rates(metrics[n]) is not None]
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(3.1 * cols, 3.0 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, n in zip(axes, names):
        m = metrics[n]
        classes = list((m.get("after") or m)["per_class"])
        label = m.get("label") or ""
        _confusion(ax, _rates(m), classes, f"{n}" + (f" ({label})" if label and label != n else ""), fontsize=6)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.suptitle("Confusion matrices per scenario (rows: true class, rate per row, mean over seeds)")
    fig.tight_layout()
    return fig


def _rates(m: dict) -> np.ndarray | None:
    cm = (m.get("after") or {}).get("confusion_rate_mean", m.get("confusion_rate_mean"))
    return None if cm is None else np.asarray(cm, dtype=float)


# ---- Figure 17: the mini-classification -------------------------------------------------------------------


def fig17_mini(metrics: dict[str, dict], notebooks: dict[str, float], n_classes: int) -> Figure:
    """Accuracy against training images: real only vs 72 real + synthetic, each line sorted by its x;
    `notebooks[scenario]`: the study's code outputs (mean over seeds), at our x for the same scenario."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    ref_x, ref_y = [], []
    for group, marker, label in (("mini-real", "o", "real only"), ("mini-mixed", "s", "72 real + synthetic")):
        members = sorted((n for n in metrics if group_of(metrics, n) == group), key=lambda n: train_total(metrics[n]))
        if not members:
            continue
        x = [train_total(metrics[n]) for n in members]
        a = [metrics[n][S.ACCURACY] for n in members]
        ax.errorbar(x, [v["mean"] for v in a], yerr=[v["std"] for v in a], marker=marker, capsize=3, label=label,
                    gid=group)
        for xi, n in zip(x, members):
            if n in notebooks:
                ref_x.append(xi)
                ref_y.append(notebooks[n])
    _ref(ax, ref_x, ref_y, "notebooks (same scenario)", NOTEBOOKS_GID)
    _chance(ax, n_classes)
    ax.set_xlabel("training images (real + synthetic, all classes)")
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Figure 17: mini-classification, real vs real + synthetic")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---- the ratio sweep ----------------------------------------------------------------------------------------


def fig_ratio(points: list[tuple[float, dict]], n_classes: int) -> Figure:
    """Accuracy against synthetic images per real image (0: the baseline), with the 95% bootstrap CIs.
    One `dvc exp run -S ratio=…` adds one point; `dvc plots diff` draws the curve across experiments."""
    points = sorted(points, key=lambda p: p[0])
    fig = _figure(6, 4)
    ax = fig.subplots()
    if points:
        x = [p[0] for p in points]
        y = [p[1]["mean"] for p in points]
        lo = [max(0.0, p[1]["mean"] - p[1].get("ci95_low", p[1]["mean"])) for p in points]
        hi = [max(0.0, p[1].get("ci95_high", p[1]["mean"]) - p[1]["mean"]) for p in points]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=4, gid="ratio", label="ours (95% bootstrap CI)")
    _chance(ax, n_classes)
    ax.set_xlabel("synthetic images per real image (every class; 0 = baseline)")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Accuracy against the real:synthetic ratio")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---- generated samples ----------------------------------------------------------------------------------------


def fig_samples(synthetic_dir: Path, classes: list[str], per_class: int = 6) -> Figure:
    """The first `per_class` generated images of each class's generator (like the paper's Figure 10)."""
    from PIL import Image

    fig = _figure(1.3 * per_class, 1.4 * len(classes) + 0.4)
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for row, c in zip(axes, classes):
        files = sorted(p for p in (Path(synthetic_dir) / c).glob("*.png"))[:per_class]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(files):
                with Image.open(files[j]) as im:
                    ax.imshow(np.asarray(im.convert("L")), cmap="gray", vmin=0, vmax=255)
            if j == 0:
                ax.set_ylabel(c, fontsize=8)
    fig.suptitle("Figure 10 (ours): generated images, one row per class's generator")
    fig.tight_layout()
    return fig


def render(metrics: dict[str, dict], refs: dict[str, Any], n_classes: int) -> dict[str, Figure]:
    """Figures 11-17 and the per-scenario confusion matrices from scenario metrics in the paper's order.
    `refs`: accuracy, classwise, f1, mini (the paper's and notebooks' values each figure marks)."""
    return {
        "fig11": fig11_accuracy(metrics, refs["accuracy"], n_classes),
        "fig12": fig_classwise(metrics, "S2", 12, refs["classwise"], n_classes),
        "fig13": fig_classwise(metrics, "S3", 13, refs["classwise"], n_classes),
        "fig14": fig_classwise(metrics, "S4", 14, refs["classwise"], n_classes),
        "fig15": fig15_f1(metrics, refs["f1"], n_classes),
        "fig16": fig16_finetune(metrics),
        "fig17": fig17_mini(metrics, refs["mini"], n_classes),
        "confusion": fig_confusions(metrics),
    }
