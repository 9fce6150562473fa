"""The report's figures, read back from the matplotlib objects: every figure renders from a small metrics
fixture built from the demo profile's scenario definitions, its plotted x order follows those definitions
(not the alphabet: Figure 17 once drew x = 32, 48, 64, 16, 80), lines join only one group's scenarios,
and each has its title, axis labels, chance line and the paper's values."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from synthmri import CLASSES
from synthmri import report_figures as RF
from synthmri.classify.config import load_classify
from synthmri.report import _figure_refs
from tests.conftest import ROOT

N = len(CLASSES)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from synthmri.profiles import compose

    out = compose(["profile=paper"], tmp_path_factory.mktemp("params") / "params.yaml", ROOT / "conf")
    return load_classify(yaml.safe_load(out.read_text())["classify"])


def _ms(v: float, sd: float = 0.02) -> dict:
    return {"mean": v, "std": sd}


def _counts(amount, classes=CLASSES) -> dict[str, int]:
    """Per-class counts of a scenario amount when it is a plain number (10 stands in for "all", "fill", ...)."""
    if isinstance(amount, dict):
        return {c: amount.get(c, 0) if isinstance(amount.get(c, 0), int) else 10 for c in classes}
    return {c: amount if isinstance(amount, int) else 10 for c in classes}


def _metrics(cfg) -> dict[str, dict]:
    """A scenario metrics JSON per configured scenario, in ALPHABETICAL order (as a folder glob gives them)."""
    out = {}
    for i, name in enumerate(sorted(cfg.scenarios)):
        sc = cfg.scenarios[name]
        real, syn = _counts(sc.real), _counts(sc.synthetic)
        acc = 0.5 + 0.01 * i
        pc = {c: {"precision": _ms(acc), "recall": _ms(acc - 0.05), "f1": _ms(acc - 0.02)} for c in CLASSES}
        m = {"scenario": name, "group": sc.group, "label": sc.label, "accuracy": _ms(acc) | {"ci95_low": acc - 0.05,
             "ci95_high": acc + 0.04}, "macro_f1": _ms(acc - 0.02), "per_class": pc,
             "train_counts": {c: {"real": real[c], "synthetic": syn[c]} for c in CLASSES},
             "confusion_rate_mean": (np.eye(N) * 0.7 + 0.1).round(4).tolist()}
        if sc.finetune is not None:
            m["before"] = {"per_class": pc, "accuracy": _ms(acc), "confusion_rate_mean": m["confusion_rate_mean"]}
            m["after"] = m["before"]
        out[name] = m
    return out


@pytest.fixture(scope="module")
def figures(cfg):
    metrics = _metrics(cfg)
    ordered = {n: metrics[n] for n in RF.scenario_order(metrics, cfg.scenarios)}
    figs = RF.render(ordered, _figure_refs(), N)
    figs["ratio"] = RF.fig_ratio([(1.0, ordered["s1_balance"]["accuracy"]), (0.0, ordered["baseline"]["accuracy"])], N)
    return metrics, ordered, figs


def _expected_x(cfg, group: str) -> list[int]:
    """Training images of each scenario of `group`, in params.yaml's (the paper's) order of definition."""
    return [sum(_counts(sc.real).values()) + sum(_counts(sc.synthetic).values())
            for sc in cfg.scenarios.values() if sc.group == group]


def test_the_paper_order_not_the_alphabet(cfg, figures):
    metrics, ordered, _ = figures
    assert list(metrics)[:3] == ["baseline", "mini_r144", "mini_r216"]  # what a glob gives
    names = list(ordered)
    assert names == list(cfg.scenarios)  # conf/ lists them in the paper's order
    assert names[:2] == ["baseline", "s1_balance"] and names[-9:-4] == ["mini_r72", "mini_r144", "mini_r216",
                                                                          "mini_r360", "mini_r720"]
    # without params (an unknown profile): group rank, then numbers compared as numbers
    assert RF.scenario_order(metrics) == names


def test_fig17_draws_each_series_in_order_of_training_images(cfg, figures):
    ax = figures[2]["fig17"].axes[0]
    lines = {ln.get_gid(): list(ln.get_xdata()) for ln in ax.lines if ln.get_gid() in RF.MINI_GROUPS}
    assert lines["mini-real"] == _expected_x(cfg, "mini-real") == [72, 144, 216, 360, 720]  # the paper: 18..180 real per class
    assert lines["mini-mixed"] == _expected_x(cfg, "mini-mixed") == [144, 216, 360, 720]  # 18 real + 18..162 synthetic per class
    notebooks = [c for c in ax.collections if c.get_gid() == RF.NOTEBOOKS_GID][0].get_offsets()
    assert sorted(map(tuple, np.asarray(notebooks).tolist())) == [(72, 0.62), (144, 0.7167), (144, 0.7533), (720, 0.7833),
                                                                  (720, 0.8567)]  # the notebooks' means at our x


def test_lines_join_only_scenarios_of_one_group(figures):
    _, ordered, figs = figures
    ax = figs["fig15"].axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == [n for n in ordered if not n.startswith("mini")]
    at = dict(zip(ax.get_xticks(), names))
    drawn = [ln for ln in ax.lines if ln.get_gid() != RF.CHANCE]
    assert len(drawn) == len(CLASSES) * len({RF.group_of(ordered, n) for n in names})
    for ln in drawn:
        groups = {ordered[at[x]]["group"] for x in ln.get_xdata()}
        assert groups == {ln.get_gid().split(":")[0]}, ln.get_gid()
    s2 = [ln for ln in drawn if ln.get_gid() == "S2:glioma"][0]
    assert [at[x] for x in s2.get_xdata()] == ["s2_m10", "s2_m20", "s2_m33"]


def test_every_figure_has_a_title_labels_and_its_references(figures):
    _, ordered, figs = figures
    assert set(figs) == {"fig11", "fig12", "fig13", "fig14", "fig15", "fig16", "fig17", "confusion", "ratio"}
    for name, fig in figs.items():
        title = fig._suptitle.get_text() if fig._suptitle else ""
        for ax in (a for a in fig.axes if a.axison):
            assert title or ax.get_title(), name
            assert ax.get_xlabel() and ax.get_ylabel(), name
        if name not in ("fig16", "confusion"):  # scores: a chance line at 1/4 on every panel
            for ax in fig.axes:
                chance = [ln for ln in ax.lines if ln.get_gid() == RF.CHANCE]
                assert len(chance) == 1 and list(chance[0].get_ydata()) == [1 / N, 1 / N], name
    for ax in figs["confusion"].axes[: len(ordered)]:  # one matrix per scenario, axes named
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [ax.get_title() for ax in figs["confusion"].axes[:2]] == ["baseline (real only)", "s1_balance (balanced)"]
    assert figs["fig16"].axes[0].get_xlabel() == "predicted class"
    # the paper's values where it gives them: §6.2 accuracies on Figure 11, Table 5 on Figure 12
    ax11 = figs["fig11"].axes[0]
    ticks = [t.get_text() for t in ax11.get_xticklabels()]
    paper = [c for c in ax11.collections if c.get_gid() == RF.PAPER_GID][0].get_offsets()
    assert {ticks[int(x)]: round(y, 2) for x, y in np.asarray(paper)} == {
        "baseline": 0.93, "s1_balance": 0.91, "s4_600": 0.93, "s5_finetune": 0.93, "s6_synthetic": 0.78}
    prec = [c for c in figs["fig12"].axes[0].collections if c.get_gid() == RF.PAPER_GID][0].get_offsets()
    assert sorted(round(y, 2) for _, y in np.asarray(prec)) == sorted([0.93, 0.83, 0.98, 0.98, 0.94, 0.98, 0.90,
                                                                        0.81, 0.75, 0.81])  # Table 5 + §6.2.2's S2
    # the ratio curve: sorted by ratio, 95% CI bars
    ratio = [ln for ln in figs["ratio"].axes[0].lines if ln.get_gid() == "ratio"][0]
    assert list(ratio.get_xdata()) == [0.0, 1.0]


def test_figures_render_to_png(figures, tmp_path):
    for name, fig in figures[2].items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name
