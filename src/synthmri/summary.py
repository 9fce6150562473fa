"""`synthmri summary`: one table of what each stage produced, read from metrics/*.json.

Whether the numbers compare with anything is read from the metrics files themselves (the fidelity
extractor's `random_weights`, each scenario's `pretrained`), never from the profile's name: a paper
profile run with random weights is flagged like the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synthmri.io import read_json

# stage -> (metrics file, [(label, dotted key)]); a missing key prints as "-"
ROWS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ingest": ("ingest.json", [("files found", "files"), ("images", "images"), ("quarantined", "quarantined")]),
    "audit": ("audit.json", [("RGB images", "colour_modes.RGB"), ("distinct sizes", "dimensions.distinct"),
                             ("blurry", "blur.blurry")]),
    "dedup": ("dedup.json", [("images with duplicates", "total.images_with_duplicates"),
                             ("removed", "total.removed"), ("train->test leakage removed", "cross_split.removed")]),
    "preprocess": ("preprocess.json", [("train images", "train.total"), ("test images", "test.total")]),
    "fidelity": ("fidelity.json", [("mean FID over classes", "summary.fid_mean"),
                                   ("real-vs-real FID floor", "summary.fid_real_floor_mean"),
                                   ("FID floor, real resized as generated", "summary.fid_real_floor_resampled_mean"),
                                   ("near-copies of training images", "summary.memorised_share")]),
    "classify baseline": ("scenarios/baseline.json", [("accuracy (mean over seeds)", "accuracy.mean"),
                                                      ("macro F1", "macro_f1.mean")]),
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


def weights_banner(fidelity: dict[str, Any] | None, scenarios: dict[str, dict[str, Any]]) -> str | None:
    """The "compare with nothing" line when any number came from random network weights, else None."""
    reasons = []
    if random_inception(fidelity):
        reasons.append("fidelity used a random Inception (`fidelity.random_weights: true`), so FID, KID, IS "
                       "(about 1) and precision/recall are in arbitrary units")
    untrained = sorted(n for n, m in scenarios.items() if m.get("pretrained") is False)
    if untrained:
        which = "every scenario's classifier" if len(untrained) == len(scenarios) else \
            f"the classifiers of {', '.join(untrained)}"
        reasons.append(f"{which} started from random weights (`classify.model.pretrained: false`), "
                       "not ImageNet's as in the paper")
    if not reasons:
        return None
    return "Compare with nothing: " + "; ".join(reasons) + ". These numbers show the stages run, not the paper's results."


def read_weights_banner(metrics_dir: Path) -> str | None:
    """`weights_banner` from a metrics folder (fidelity.json, scenarios/*.json, ratio.json)."""
    metrics_dir = Path(metrics_dir)
    fidelity = read_json(metrics_dir / FIDELITY) if (metrics_dir / FIDELITY).is_file() else None
    scenarios = {p.stem: read_json(p) for p in sorted((metrics_dir / SCENARIOS).glob("*.json"))}
    if (metrics_dir / RATIO).is_file():
        scenarios["ratio"] = read_json(metrics_dir / RATIO)
    return weights_banner(fidelity, scenarios)


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "-"
        d = d[part]
    return d


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
    title = profile_title(read_provenance(metrics_dir), params.get("profile_name"))
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
    banner = read_weights_banner(metrics_dir)
    if banner:  # one line above the table: the first thing a reader of the demo's output sees
        console.print(f"[bold yellow]{banner}[/]", highlight=False)
    console.print(table)
