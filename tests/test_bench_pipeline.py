"""bench/pipeline.py's dry run at a tiny size (CPU) so the data-half benchmark cannot rot: the set it builds
holds Kaggle's split and class shares exactly, every stage ran through `synthmri <stage>` and was measured,
each stage's counts reconcile with what was built (planted copies, sizes the aspect filter refuses), and the
classifier's loader and fidelity's feature extraction ran on what preprocess kept."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
N = 200  # the smallest size with 8 files in every Testing class folder
# Kaggle's 1321/1339/1595/1457 Training and 300/306/405/300 Testing, scaled to 200 by largest remainder
EXPECTED = {"train": {"glioma": 38, "meningioma": 38, "notumor": 45, "pituitary": 41},
            "test": {"glioma": 9, "meningioma": 9, "notumor": 11, "pituitary": 9}}


def data_half() -> list[str]:
    """dvc.yaml's stages from ingest to preprocess: what the bench must have run and measured."""
    names = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    return names[names.index("ingest"):names.index("preprocess") + 1]


STAGES = data_half()
pytestmark = pytest.mark.slow  # ~1-3 min on 2 shared cores: the MNI152 template, six stage processes, Inception


@pytest.fixture(scope="module")
def run(tmp_path_factory, venv_env) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("pipeline")
    out = tmp / "pipeline.json"
    cmd = [sys.executable, "bench/pipeline.py", "--images", str(N), "--pool", "2", "--workers", "1",
           "--features", "2", "--cache-dir", str(tmp / "cache"), "--workdir", str(tmp / "work"),
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=venv_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sets = list((tmp / "cache").glob("kaggle-*"))
    assert len(sets) == 1, sets
    return json.loads(out.read_text()), sets[0]


def test_every_stage_measured(run):
    res, _ = run
    assert res["command"].startswith("python bench/pipeline.py --images 200")
    assert res["sizes"] == [N]
    r = res["runs"][str(N)]
    assert list(r["stages"]) == STAGES and {"audit", "dedup"} < set(STAGES)
    for s in STAGES:
        fig = r["stages"][s]
        for key in ("wall_s", "cpu_s", "maxrss_gb"):
            assert fig[key] > 0, (s, key)
    assert r["total_s"] == pytest.approx(sum(r["stages"][s]["wall_s"] for s in STAGES), abs=0.05)
    assert r["slowest"] in STAGES
    kept = r["counts"]["preprocess"]["kept"]
    assert r["loader"]["images"] == r["loader"]["kept_images"] == kept  # every kept image, decoded once
    assert r["features"]["images"] == 2 and r["features"]["kept_images"] == kept
    for part in ("loader", "features"):
        assert r[part]["images_per_s"] > 0 and r[part]["maxrss_gb"] > 0, part


def test_set_holds_kaggle_shares(run):
    res, folder = run
    on_disk = {split: {c: len(list((folder / d / c).glob("*.jpg"))) for c in EXPECTED[split]}
               for d, split in (("Training", "train"), ("Testing", "test"))}
    assert on_disk == EXPECTED
    assert res["runs"][str(N)]["set"]["per_split_class"] == EXPECTED


def test_counts_reconcile(run):
    res, folder = run
    c = res["runs"][str(N)]["counts"]
    assert c["ingest"] == EXPECTED and c["ingest_quarantined"] == 0
    assert c["audit_images"] == N
    truth = pd.read_csv(folder / "truth.csv")
    planted = {"within_train": int(((truth["kind"] == "within") & (truth["split"] == "train")).sum()),
               "within_test": int(((truth["kind"] == "within") & (truth["split"] == "test")).sum()),
               "leaks": int((truth["kind"] == "leak").sum())}
    assert planted["within_train"] > 0 and planted["within_test"] > 0 and planted["leaks"] > 0
    assert c["planted"] == planted
    assert c["dedup_removed"] == {"within_train": planted["within_train"], "within_test": planted["within_test"],
                                  "cross": planted["leaks"]}
    # preprocess: the planted copies, then the sizes paper §4.2 refuses (tumour classes square, notumor within
    # 10 %), counted here from the truth table; at this size no class reaches the balancing draw
    orig = truth[truth["kind"] == "original"]
    tol = Fraction(1, 10)

    def refused(row) -> bool:
        w, h = int(row["width"]), int(row["height"])
        if row["class"] != "notumor":
            return w != h
        return not ((1 - tol) * h <= w <= (1 + tol) * h and (1 - tol) * w <= h <= (1 + tol) * w)

    aspect = int(orig.apply(refused, axis=1).sum())
    assert aspect > 0
    dups = sum(planted.values())
    assert c["preprocess_removed"] == {"aspect ratio": aspect, "duplicate": dups}
    assert c["preprocess"] == {"in": N, "kept": N - dups - aspect, "removed": dups + aspect}
