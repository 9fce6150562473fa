"""`synthmri summary`: one table of what each stage produced, read from metrics/*.json, then what the
numbers say (baseline beside synthetic-only), what they do not (random weights), and what to open next.

Whether the numbers compare with anything is read from the metrics files themselves (the fidelity
extractor's `random_weights`, each scenario's `pretrained`), never from the profile's name: a paper
profile run with random weights is flagged like the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synthmri import CLASSES
from synthmri.io import read_json

# stage -> (metrics file, [(label, dotted key)]); a missing key prints as "-"
ROWS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ingest": ("ingest.json", [("files found", "files"), ("images", "images"), ("quarantined", "quarantined")]),
    "audit": ("audit.json", [("RGB images", "colour_modes.RGB"), ("distinct sizes", "dimensions.distinct"),
                             ("blurry", "blur.blurry")]),
    "dedup": ("dedup.json", [("images with duplicates", "total.images_with_duplicates"),
                             ("removed", "total.removed"), ("train->test leakage removed", "cross_split.removed")]),
    "split": ("split.json", [("method", "method"), ("train / val / test images", "train.images|val.images|test.images"),
                             ("patients shared train-test (null: unknown)", "shared_patients.train-test")]),
    "preprocess": ("preprocess.json", [("train images", "train.total"), ("val images", "val.total"),
                                       ("test images", "test.total")]),
    "fidelity": ("fidelity.json", [("mean FID over classes", "summary.fid_mean"),
                                   ("real-vs-real FID floor", "summary.fid_real_floor_mean"),
                                   ("FID floor, real resized as generated", "summary.fid_real_floor_resampled_mean"),
                                   ("Inception Score of generated images", "summary.is_generated_mean"),
                                   ("near-copies of training images", "summary.memorised_share")]),
    "classify baseline": ("scenarios/baseline.json", [("accuracy (mean over seeds)", "accuracy.mean"),
                                                      ("  95% CI (test-set bootstrap)", "accuracy.ci95"),
                                                      ("macro F1", "macro_f1.mean")]),
    "classify S6": ("scenarios/s6_synthetic.json", [("synthetic only: accuracy", "accuracy.mean"),
                                                     ("  95% CI (test-set bootstrap)", "accuracy.ci95")]),
    "ratio": ("ratio.json", [("synthetic per real image", "ratio"), ("accuracy", "accuracy.mean"),
                             ("McNemar p < 0.05 vs baseline (seeds)", "vs_baseline.seeds_p_below_0_05")]),
}


FIDELITY = "fidelity.json"
SCENARIOS = "scenarios"  # metrics/scenarios/<name>.json
RATIO = "ratio.json"


def random_inception(fidelity: dict[str, Any] | None) -> bool:
    """The fidelity metrics came from a random Inception (`fidelity.random_weights`)."""
    ex = (fidelity or {}).get("extractor") or {}
    return bool(ex.get("random_weights")) or str(ex.get("weights_sha256", "")).startswith("random-")


# Why a random Inception's numbers mean nothing, in one line: its features are nearly the same for any
# image, so every class probability is near uniform (IS = exp(KL to the mean) is about 1).
RANDOM_INCEPTION = ("fidelity used a random Inception (`fidelity.random_weights: true`, no weights file here), so "
                    "IS is about 1 by construction and FID, KID and precision/recall are in arbitrary units "
                    "(read an FID only against the real-vs-real floor beside it)")


def weights_reasons(fidelity: dict[str, Any] | None, scenarios: dict[str, dict[str, Any]]) -> list[str]:
    """Each reason why some numbers compare with nothing: random Inception, classifiers from random weights."""
    reasons = []
    if random_inception(fidelity):
        reasons.append(RANDOM_INCEPTION)
    untrained = sorted(n for n, m in scenarios.items() if m.get("pretrained") is False)
    if untrained:
        which = "every scenario's classifier" if len(untrained) == len(scenarios) else \
            f"the classifiers of {', '.join(untrained)}"
        reasons.append(f"{which} started from random weights (`classify.model.pretrained: false`), "
                       "not ImageNet's as in the paper")
    return reasons


def weights_banner(fidelity: dict[str, Any] | None, scenarios: dict[str, dict[str, Any]]) -> str | None:
    """The "compare with nothing" line when any number came from random network weights, else None."""
    reasons = weights_reasons(fidelity, scenarios)
    if not reasons:
        return None
    return "Compare with nothing: " + "; ".join(reasons) + ". These numbers show the stages run, not the paper's results."


def _read_weighted(metrics_dir: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """fidelity.json and every classifier's metrics (scenarios/*.json, ratio.json) of a metrics folder."""
    metrics_dir = Path(metrics_dir)
    fidelity = read_json(metrics_dir / FIDELITY) if (metrics_dir / FIDELITY).is_file() else None
    scenarios = {p.stem: read_json(p) for p in sorted((metrics_dir / SCENARIOS).glob("*.json"))}
    if (metrics_dir / RATIO).is_file():
        scenarios["ratio"] = read_json(metrics_dir / RATIO)
    return fidelity, scenarios


def read_weights_banner(metrics_dir: Path) -> str | None:
    """`weights_banner` from a metrics folder (fidelity.json, scenarios/*.json, ratio.json)."""
    return weights_banner(*_read_weighted(metrics_dir))


def _ci(block: Any) -> tuple[float, float] | None:
    """A metrics block's 95% CI (ci95_low, ci95_high), if it has one."""
    lo, hi = (block.get(k) if isinstance(block, dict) else None for k in ("ci95_low", "ci95_high"))
    return (lo, hi) if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else None


def _get(d: dict[str, Any], dotted: str) -> Any:
    if "|" in dotted:  # several values on one row: "a / b / c"
        return " / ".join(str(_get(d, part)) for part in dotted.split("|"))
    if dotted.endswith(".ci95"):  # "[low, high]" of the block
        ci = _ci(_get(d, dotted[: -len(".ci95")]))
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "-"
        d = d[part]
    return d


def _accuracy(m: dict[str, Any] | None) -> str | None:
    acc = (m or {}).get("accuracy") or {}
    if not isinstance(acc.get("mean"), (int, float)):
        return None
    ci = _ci(acc)
    return f"{acc['mean']:.2f}" + (f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


def story(scenarios: dict[str, dict[str, Any]], n_classes: int) -> str | None:
    """One line: the baseline's accuracy beside the synthetic-only classifier's (S6), against chance."""
    base, syn = _accuracy(scenarios.get("baseline")), _accuracy(scenarios.get("s6_synthetic"))
    if base is None:
        return None
    line = f"Classifier accuracy on the real test set: trained on real images {base}"
    if syn is not None:
        line += f", on synthetic images only (S6) {syn}"
    return line + f"; chance is {1 / n_classes:.2f}."


NEXT = (  # what to open after a run, in the order a reader wants it
    ("reports/report.html", "one page, in the paper's order: its tables and figures beside these numbers"),
    ("plots/", "audit and fidelity plots (memorisation pairs), dvclive/ the training curves and sample grids"),
    ("dvc exp show", "every experiment's params and metrics side by side"),
    ("dvc plots show", "all plots in one page (dvc_plots/index.html)"),
)


def profile_title(provenance: dict[str, dict[str, Any] | None], selected: str | None) -> str:
    """The table's title from the metrics' own provenance ({stage: metrics' `provenance`, None when not
    recorded}), never from params.yaml: `selected`, the profile params.yaml holds now, is only named when
    it differs from what the metrics came from."""
    from rich.markup import escape

    ran = {stage: escape(str((p or {}).get("profile") or "not recorded")) for stage, p in provenance.items()}
    names = sorted(set(ran.values()))
    raws = sorted({escape(str(p["raw"])) for p in provenance.values() if p and p.get("raw")})
    if not names:
        title = "synthmri pipeline — no metrics yet"
    elif len(names) == 1:
        title = f"synthmri pipeline — profile [bold]{names[0]}[/]" + (f", data {raws[0]}" if len(raws) == 1 else "")
    else:  # e.g. a run on a new profile that stopped half-way: say which numbers are which
        title = "synthmri pipeline — metrics from different profiles: " + ", ".join(f"{s} {n}" for s, n in ran.items())
    known = [p for p in provenance.values() if p]
    if any(p.get("demo_data") for p in known):
        title += " — DEMO numbers on generated data, not a reproduction of the paper"
    elif any(p.get("profile") == "demo" for p in known):  # the demo's sizes pointed at other data
        title += " — DEMO settings (tiny models, few epochs), not a reproduction of the paper"
    if names and selected and selected not in names:
        title += f" (params.yaml now selects {selected}: `dvc repro` reruns on it)"
    return title


def read_provenance(metrics_dir: Path) -> dict[str, dict[str, Any] | None]:
    """{stage: the provenance its metrics record} for each metrics file the summary shows."""
    from synthmri.params import PROVENANCE

    files = {stage: Path(metrics_dir) / fname for stage, (fname, _) in ROWS.items()}
    return {stage: read_json(f).get(PROVENANCE) for stage, f in files.items() if f.is_file()}


def print_summary(metrics_dir: Path, params: dict[str, Any]) -> None:
    provenance = read_provenance(metrics_dir)
    title = profile_title(provenance, params.get("profile_name"))
    demo = any((p or {}).get("profile") == "demo" for p in provenance.values())  # from the metrics, not params.yaml
    table = Table(title=title, title_justify="left")
    for col in ("stage", "measure", "value"):
        table.add_column(col)
    for stage, (fname, keys) in ROWS.items():
        path = metrics_dir / fname
        if not path.is_file():
            table.add_row(stage, "(not run)", "")
            continue
        data = read_json(path)
        for i, (label, key) in enumerate(keys):
            value = _get(data, key)
            table.add_row(stage if i == 0 else "", label, f"{value:.4g}" if isinstance(value, float) else str(value))
    console = Console()
    fidelity, scenarios = _read_weighted(metrics_dir)
    reasons = weights_reasons(fidelity, scenarios)
    if reasons:  # above the table: the first thing a reader of the demo's output sees
        console.print("[bold yellow]Compare with nothing: these numbers show the stages run, not the paper's "
                      "results.[/]", highlight=False)
    console.print(table)
    task_map = (params.get("task") or {}).get("map") or {}  # a task's target classes set the chance level
    n_classes = len(set(task_map.values())) if task_map else len(params.get("data", {}).get("classes") or CLASSES)
    line = story({k: v for k, v in scenarios.items() if k != "ratio"}, n_classes)
    if line:
        console.print(("DEMO: " if demo else "") + line, highlight=False)
    for reason in reasons:  # one line each: why a number compares with nothing
        console.print(f"[yellow]Note: {reason}.[/]", highlight=False)
    console.print("Open next:", highlight=False)
    for what, why in NEXT:
        console.print(f"  {what:<18} {why}", highlight=False, soft_wrap=True)
