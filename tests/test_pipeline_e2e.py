"""End to end: the real `dvc` CLI runs the demo profile in a temporary copy of the repository (`demo_run`).

This is the proof that dvc.yaml, params.yaml, conf/ and the stage commands fit together, and that what they
produce is right: the demo generator records every nuisance it plants in `demo_truth.csv`, so every count the
data stages report is checked exactly against what that file, the raw files and params.yaml say it must be
(never against a previous run's output). Then: every later stage's outputs are present and well-formed, a
second `dvc repro` runs nothing, a change to one param reruns only the stages that read it, and the run
leaves git's view of the checkout as `make demo` should (only DVC's own files changed).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from synthmri import CLASSES, SPLITS
from synthmri import params as P
from synthmri.data.demo import TRUTH_FILE
from tests.conftest import DEMO_RUN_GROUP, declared_outputs, is_output, private_copy, ran, sh

pytestmark = [pytest.mark.slow, DEMO_RUN_GROUP]  # one demo run per test session (conftest)

# What each nuisance the demo plants must become (demo.py's NUISANCES). A nuisance this test does not know
# fails it, so a new one gets its expected outcome written down here.
QUARANTINED = {"truncated": "truncated", "empty": "empty file", "not_image": "not an image"}  # -> reason prefix
IMAGES = {"clean", "rgb", "blur", "exact_dup", "near_dup", "leak_dup"}


def read(repo: Path, rel: str):
    return json.loads((repo / rel).read_text())


def table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype={"dup_group": str})


# ---- the truth: what every data stage must report, from demo_truth.csv, the raw files and params -------


@dataclass(frozen=True)
class Truth:
    files: int  # every file under Training/ and Testing/
    quarantined: dict[str, str]  # relpath -> reason prefix
    images: pd.DataFrame  # ingested images: relpath, split, class, nuisance, dup_of, width, height, bytes
    groups: set[frozenset[str]]  # duplicate groups dedup must find (connected components, >= 2 members)
    removed: dict[str, str]  # relpath -> "within" | "cross"
    kept: pd.DataFrame  # images left after dedup and the aspect filter, before class balancing


def _components(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, str]:
    parent = {n: n for n in nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        parent[find(a)] = find(b)
    return {n: find(n) for n in nodes}


def derive_truth(raw: Path, params: dict) -> Truth:
    truth = pd.read_csv(raw / TRUTH_FILE, keep_default_na=False)
    unknown = set(truth.nuisance) - set(QUARANTINED) - IMAGES
    assert not unknown, f"the demo plants nuisance(s) {unknown}: write down here what the pipeline must do with them"
    ingest_cfg, dedup_cfg = P.load("ingest", data=params), P.load("dedup", data=params)
    pre_cfg = P.load("preprocess", data=params)

    records = truth.to_dict("records")
    quarantined = {r["relpath"]: QUARANTINED[r["nuisance"]] for r in records if r["nuisance"] in QUARANTINED}
    rows = []
    for r in records:
        if r["relpath"] in quarantined:
            continue
        with Image.open(raw / r["relpath"]) as im:
            w, h = im.size
        if min(w, h) < ingest_cfg.min_side:  # issue 9: never upscaled into a training image
            quarantined[r["relpath"]] = "too small"
            continue
        rows.append({**{k: r[k] for k in ("relpath", "class", "nuisance", "dup_of", "mse50")},
                     "split": SPLITS[r["split"]], "width": w, "height": h, "bytes": (raw / r["relpath"]).stat().st_size})
    images = pd.DataFrame(rows).set_index("relpath", drop=False)

    # dedup (paper §4.1): a planted copy is a duplicate under the criterion when its recorded 50 px MSE is
    # within the threshold and, with same_dim, it kept its original's size
    def found(r) -> bool:
        if not r.dup_of or r.dup_of not in images.index:
            return False
        o = images.loc[r.dup_of]
        return float(r.mse50) <= dedup_cfg.mse_threshold and (not dedup_cfg.same_dim or (r.width, r.height) == (o.width, o.height))

    edges = [(r.relpath, r.dup_of) for r in images.itertuples() if found(r)]
    union = _components(list(images.index), edges)
    members: dict[str, set[str]] = {}
    for n, c in union.items():
        members.setdefault(c, set()).add(n)
    groups = {frozenset(m) for m in members.values() if len(m) > 1}

    # dedup's documented decisions: Training copies of a Testing image go (cross_split); within a split, a
    # group keeps its largest image (width x height), then the larger file, then the smallest relpath
    split = images["split"].to_dict()
    removed: dict[str, str] = {}
    if dedup_cfg.cross_split:
        for g in groups:
            if any(split[n] == "test" for n in g):
                removed.update({n: "cross" for n in g if split[n] == "train"})
    within = _components(list(images.index), [(a, b) for a, b in edges if split[a] == split[b]])
    by_within: dict[str, list[str]] = {}
    for n, c in within.items():
        by_within.setdefault(c, []).append(n)
    for g in by_within.values():
        free = [n for n in g if n not in removed]
        if len(g) > 1 and free:
            keep = min(free, key=lambda n: (-images.at[n, "width"] * images.at[n, "height"], -images.at[n, "bytes"], n))
            removed.update({n: "within" for n in free if n != keep})

    # preprocess's aspect filter (paper §4.2): tumour classes square, the others within the tolerance
    tol = Fraction(str(pre_cfg.aspect_tolerance))

    def aspect_ok(r) -> bool:
        if r["class"] in pre_cfg.square_classes:
            return r.width == r.height
        return (1 - tol) * r.height <= r.width <= (1 + tol) * r.height and (1 - tol) * r.width <= r.height <= (1 + tol) * r.width

    left = images[~images.relpath.isin(list(removed))]
    kept = left[left.apply(aspect_ok, axis=1)]
    return Truth(len(truth), quarantined, images, groups, removed, kept)


@pytest.fixture(scope="module")
def repo(demo_run) -> Path:
    return demo_run.repo


@pytest.fixture(scope="module")
def params(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.fixture(scope="module")
def truth(repo, params) -> Truth:
    return derive_truth(repo / params["data"]["raw"], params)


def counts(df: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {(s, c): int(((df["split"] == s) & (df["class"] == c)).sum()) for s in SPLITS.values() for c in CLASSES}


# ---- every stage ran, the checkout stays clean ----------------------------------------------------------


def test_demo_profile_runs_every_stage(demo_run, params):
    stages = {"demo_data", "raw_check", "ingest", "audit", "dedup", "link", "split", "preprocess"}
    stages |= {f"{stage}@{c}" for stage in ("train_generator", "generate") for c in CLASSES}
    stages |= {f"classify@{s}" for s in params["classify"]["scenarios"]}
    stages |= {"train_generator_shared", "fidelity", "ratio", "report"}
    assert ran(demo_run.output) == stages
    assert params["profile_name"] == "demo"


def test_every_metrics_file_records_what_it_came_from(repo):
    """`synthmri summary` labels demo numbers from these records, whatever params.yaml says later."""
    files = sorted((repo / "metrics").rglob("*.json"))
    assert len(files) > 10
    for f in files:
        m = read(repo, f.relative_to(repo).as_posix())
        if f.name == "headline.json":  # the report's few `dvc exp show` columns: the profile its inputs recorded
            assert m["profile"] == "demo", f
            continue
        assert m["provenance"] == {"profile": "demo", "raw": "data/raw/demo", "demo_data": True}, f


def test_the_run_changes_only_dvcs_own_files(demo_run, root):
    """`make demo` leaves the checkout clean in git's eyes: no tracked file other than params.yaml changes (no
    .gitignore edited or created: the committed ones already ignore every cached output), and everything new
    is dvc.lock or an uncached output dvc.yaml declares (metrics, plots, dvclive, checkpoints)."""
    outputs = declared_outputs(root / "dvc.yaml")
    entries = [(line[:2], line[3:]) for line in demo_run.status.splitlines() if line.strip()]
    changed = {path for code, path in entries if code != "??"}
    assert changed == {"params.yaml"}, demo_run.status
    new = [path for code, path in entries if code == "??"]
    assert "dvc.lock" in new and not [p for p in new if not is_output(p, outputs)], demo_run.status
    assert not [p for p in new if p.endswith(".gitignore")], demo_run.status


# ---- the data stages against the truth ------------------------------------------------------------------


def test_ingest_counts_every_file_and_quarantines_every_broken_one(repo, truth):
    m = read(repo, "metrics/ingest.json")
    assert (m["files"], m["images"], m["quarantined"]) == (truth.files, len(truth.images), len(truth.quarantined))
    assert m["outside_layout"]["names"] == [TRUTH_FILE]
    assert {(s, c): n for s, per in m["per_split_class"].items() for c, n in per.items()} == counts(truth.images)
    q = table(repo / "data/interim/ingest/quarantine.csv")
    assert set(q.relpath) == set(truth.quarantined)
    for r in q.itertuples():
        assert r.reason.startswith(truth.quarantined[r.relpath]), (r.relpath, r.reason)
    manifest = table(repo / "data/interim/ingest/manifest.csv").set_index("relpath")
    assert set(manifest.index) == set(truth.images.relpath)
    assert (manifest.loc[truth.images.index, ["width", "height"]].to_numpy()
            == truth.images[["width", "height"]].to_numpy()).all()


def test_dedup_finds_every_planted_duplicate_and_leak_and_nothing_else(repo, truth):
    assert truth.groups and any(v == "cross" for v in truth.removed.values())  # the demo plants both kinds
    d = table(repo / "data/interim/dedup.csv").set_index("relpath", drop=False)
    found = {frozenset(g.relpath) for _, g in d[d.dup_group != ""].groupby("dup_group")}
    assert found == truth.groups  # every planted copy with its original, no false pair
    removed = d[d.dedup_status == "removed"]
    assert dict(zip(removed.relpath, removed.dedup_reason)) == {
        n: {"within": "duplicate within split", "cross": "duplicate of a Testing image"}[k] for n, k in truth.removed.items()}
    for r in removed.itertuples():  # each removed image points at a kept member of its own group
        assert d.at[r.dup_of, "dedup_status"] == "keep" and d.at[r.dup_of, "dup_group"] == r.dup_group, r.relpath

    m = read(repo, "metrics/dedup.json")
    kinds = Counter((truth.images.at[n, "split"], k) for n, k in truth.removed.items())
    for split in SPLITS.values():
        assert m[split]["removed_within"] == kinds[(split, "within")]
        assert m[split]["removed_cross"] == kinds[(split, "cross")]
        assert m[split]["kept"] == int((truth.images.split == split).sum()) - kinds[(split, "within")] - kinds[(split, "cross")]
    assert m["cross_split"]["removed"] == kinds[("train", "cross")] == int((truth.images.nuisance == "leak_dup").sum())


def test_preprocess_keeps_exactly_what_the_filters_leave(repo, params, truth):
    cfg = P.load("preprocess", data=params)
    processed = table(repo / "data/processed/manifest.csv")
    assert set(processed.relpath) == set(truth.images.relpath)  # every ingested image is accounted for
    kept = processed[processed.status == "kept"]
    assert all((repo / p).is_file() for p in kept.out_path)
    with Image.open(repo / kept.out_path.iloc[0]) as im:
        assert im.mode == "L" and im.size == (cfg.size, cfg.size)
    assert not set(kept.relpath) & set(truth.removed)
    available, got = counts(truth.kept), counts(kept)
    balance = read(repo, "metrics/preprocess.json")["balance"]
    for (split, cls), n in available.items():
        if split == "test" or cls not in cfg.balance.classes:
            assert got[(split, cls)] == n, (split, cls)  # no draw: every image the filters leave
            continue
        assert balance[cls]["available"] == n, cls
        if cls in cfg.balance.counts:
            assert got[(split, cls)] == min(n, cfg.balance.counts[cls]), cls
        else:  # paper §4.2: a seeded randint(min, max) of them
            assert min(n, cfg.balance.min) <= got[(split, cls)] == balance[cls]["kept"] <= min(n, cfg.balance.max), cls
    # no test information in Training: no kept Training image is byte-identical to a Testing one
    sha = table(repo / "data/interim/ingest/manifest.csv").set_index("relpath")["sha256"]
    train = set(sha[kept[kept.split == "train"].relpath])
    assert not train & set(sha[processed[processed.split == "test"].relpath])
    for name in ("dimensions.png", "class_plane.png", "histograms.png"):
        assert (repo / "plots/audit" / name).stat().st_size > 0


# ---- the later stages: present and well-formed ----------------------------------------------------------


def kept_per_class(repo: Path, split: str) -> dict[str, int]:
    processed = table(repo / "data/processed/manifest.csv")
    kept = processed[(processed.status == "kept") & (processed.split == split)]
    return {c: int((kept["class"] == c).sum()) for c in CLASSES}


def test_demo_trains_and_samples_one_generator_per_class(repo, params):
    n, size = params["generate"]["n_per_class"], params["generate"]["out_size"]
    train = kept_per_class(repo, "train")
    for cls in CLASSES:
        model = repo / "models/generators" / cls
        assert (model / "model.safetensors").stat().st_size > 0 and (model / "config.json").is_file()
        pngs = sorted((repo / "data/synthetic" / cls).glob("*.png"))
        assert len(pngs) == n
        with Image.open(pngs[0]) as im:
            assert im.mode == "L" and im.size == (size, size)
        trained = read(repo, f"metrics/generator/{cls}.json")
        assert trained["class"] == cls and trained["kind"] == params["generator"]["kind"]
        assert trained["epochs"] == params["generator"][trained["kind"]]["epochs"]
        # its images come from the class's kept Training images only (paper §5.1)
        assert 0 < trained["train_images"] and trained["train_images"] + trained["val_images"] <= train[cls]


def test_fidelity_reports_every_class_with_a_random_extractor_marked(repo, params):
    from synthmri.fidelity import metrics as M

    f = read(repo, "metrics/fidelity.json")
    train, test = kept_per_class(repo, "train"), kept_per_class(repo, "test")
    for cls in CLASSES:
        c = f[cls]
        for key in (M.FID, M.FID_REAL_FLOOR, M.KID, M.IS_REAL, M.IS_GENERATED, M.IS_REAL_PAPER, M.IS_GENERATED_PAPER,
                    M.MEMORISED_SHARE):
            assert key in c, (cls, key)
        assert math.isfinite(c[M.FID]) and c[M.FID] >= 0 and math.isfinite(c[M.FID_REAL_FLOOR])
        assert c["images"]["real_train"] == train[cls] and c["images"]["real_test"] == test[cls]
        assert c["images"]["synthetic"] == params["generate"]["n_per_class"]
    assert {"summary", "reference", "extractor"} <= set(f)
    rs, kind = f["reference"]["resample"], params["generator"]["kind"]  # sizes read from the generate manifests
    assert (rs["train_size"], rs["out_size"]) == (params["generator"][kind]["image_size"], params["generate"]["out_size"])
    assert params["fidelity"]["random_weights"] is True  # the demo has no Inception weights file
    assert "random" in f["extractor"]["weights"] and f["extractor"]["weights_sha256"].startswith("random-")
    for cls in CLASSES:
        assert (repo / "plots/fidelity" / f"memorisation_{cls}.png").stat().st_size > 0


def test_every_scenario_has_well_formed_metrics(repo, params):
    seeds = params["classify"]["train"]["seeds"]
    test_images = sum(kept_per_class(repo, "test").values())
    scenarios = params["classify"]["scenarios"]
    assert sorted(p.stem for p in (repo / "metrics/scenarios").glob("*.json")) == sorted(scenarios)
    for name in scenarios:
        m = read(repo, f"metrics/scenarios/{name}.json")
        assert m["scenario"] == name and m["seeds"] == seeds and m["test_images"] == test_images, name
        assert set(m["per_seed"]) == {str(s) for s in seeds}, name
        for key in ("accuracy", "macro_f1"):
            block = m[key]
            assert 0 <= block["ci95_low"] <= block["ci95_high"] <= 1, (name, key, block)
            assert 0 <= block["mean"] <= 1 and block["std"] >= 0, (name, key, block)
            per_seed = [m["per_seed"][str(s)][key] for s in seeds]
            assert all(0 <= v <= 1 for v in per_seed) and block["mean"] == pytest.approx(np.mean(per_seed)), name
        assert set(m["train_counts"]) == set(CLASSES) and m["train_images"] == sum(
            v["real"] + v["synthetic"] for v in m["train_counts"].values()), name
        predictions = pd.read_csv(repo / "data/classify" / name / "predictions.csv", keep_default_na=False)
        assert len(predictions[predictions.phase == predictions.phase.iloc[-1]]) == test_images * len(seeds), name
    baseline = read(repo, "metrics/scenarios/baseline.json")
    assert baseline["train_counts"] == {c: {"real": n, "synthetic": 0} for c, n in kept_per_class(repo, "train").items()}


def test_report_lists_every_scenario_under_the_weights_banner(repo, params):
    from synthmri.summary import read_weights_banner

    text = (repo / "reports/README.md").read_text()
    scenarios = params["classify"]["scenarios"]
    assert read(repo, "metrics/report.json")["scenarios"] == len(scenarios)
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert set(scenarios) <= rows
    banner = read_weights_banner(repo / "metrics")  # the demo's fidelity runs on random Inception weights
    assert banner and banner in text
    ratio = read(repo, "metrics/ratio.json")
    assert ratio["ratio"] == params["ratio"] and set(ratio["vs_baseline"]["per_seed"]) == {
        str(s) for s in params["classify"]["train"]["seeds"]}


# ---- DVC serves results, reruns only what a change touches ------------------------------------------------


def test_second_repro_runs_nothing(repo, venv_env):
    out = sh(["dvc", "repro"], repo, venv_env)
    assert ran(out) == set(), out
    assert "up to date" in sh(["dvc", "status"], repo, venv_env)


def test_one_param_reruns_only_its_readers(demo_run, tmp_path, venv_env):
    repo = private_copy(demo_run.repo, tmp_path / "repo")
    before = (repo / "data/interim/dedup.csv").read_bytes()
    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", "audit.blur_threshold=80"], repo, venv_env)
    assert ran(out) == {"audit", "report"}, out  # lap_var is stored raw: the threshold changes only metrics (and the report)
    assert (repo / "data/interim/dedup.csv").read_bytes() == before

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo, venv_env, stdout_only=True))
    thresholds = {
        rev["data"]["metrics"]["metrics/headline.json"]["data"]["data"]["blur_threshold"]
        for entry in shown for exp in entry.get("experiments") or [] for rev in exp["revs"]
    }
    assert 80.0 in thresholds  # `dvc exp show` lists the variant with its own headline metrics
    assert list(shown[0]["data"]["metrics"]) == ["metrics/headline.json"]  # the one narrow metrics file
    assert shown[0]["data"]["metrics"]["metrics/headline.json"]["data"]["data"]["blur_threshold"] == 80.0  # workspace
