"""Rules of evidence (issue 9 §1): no test information reaches a model or a test input.

On a tiny demo dataset run through the real stage functions (ingest -> audit -> dedup -> preprocess):
- relabelling every Testing image in the manifest preprocess reads leaves every processed Testing
  pixel identical and every Training output byte-identical, under each shipped profile's
  preprocess settings and the per-class histogram option;
- the generator's training set and the fidelity reference set, taken by their own selection
  functions from the processed manifest, hold no Testing image (checked by content, so the planted
  Training copies of Testing images count as Testing images).
A negative control puts back the old behaviour (a Testing image matched to its own class's
reference) and checks that the relabelling test then fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from synthmri import CLASSES
from synthmri import params as P
from synthmri.data import preprocess as pre
from synthmri.data import preprocess_ops as ops
from synthmri.data.audit import audit
from synthmri.data.dedup import dedup
from synthmri.data.demo import TRUTH_FILE, make_demo_dataset
from synthmri.images import read_gray
from synthmri.data.ingest import ingest
from synthmri.data.split import split
from synthmri.fidelity.evaluate import _real_paths
from synthmri.generative.config import load_generator
from synthmri.generative.data import select
from synthmri.io import read_table, write_table
from synthmri.profiles import compose

DEMO = P.DemoParams(train_per_class=8, test_per_class=6, size=96)
SIZE = 48  # preprocess output side: small, the property does not depend on it


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """The demo set through ingest, audit and dedup, with and without the cross-split removal."""
    tmp = tmp_path_factory.mktemp("leak")
    raw = tmp / "raw"
    make_demo_dataset(raw, DEMO, CLASSES)
    ingest(raw, tmp / "ingest", P.IngestParams(workers=1), CLASSES)
    audit(tmp / "ingest" / "manifest.csv", tmp / "audit.csv", tmp / "plots", P.AuditParams(workers=1), CLASSES)
    for cross in (True, False):
        cfg = P.DedupParams(compare_engines=False, cross_split=cross, workers=1)
        dedup(tmp / "audit.csv", tmp / f"dedup_{cross}.csv", cfg)
    return {"root": tmp, "raw": raw, "dedup": tmp / "dedup_True.csv", "dedup_no_cross": tmp / "dedup_False.csv"}


def profile(root: Path, tmp: Path, name: str) -> dict:
    """The shipped profile's params, composed from conf/ as `dvc exp run -S profile=<name>` does."""
    return P.read_params(compose([f"profile={name}"], tmp / f"{name}.yaml", root / "conf"))


def small(cfg: P.PreprocessParams, **changes) -> P.PreprocessParams:
    return dataclasses.replace(cfg, size=SIZE, workers=1, **changes)


def configs(root: Path, tmp: Path) -> dict[str, P.PreprocessParams]:
    """Each shipped profile, plus the harshest legal per-class setting: Training matched within its
    class, Testing rotated too, balancing cutting classes (demo classes hold about 8 images)."""
    loaded = {n: P.load("preprocess", data=profile(root, tmp, n)) for n in ("paper", "paper_as_coded", "demo")}
    p = loaded["paper"]
    per_class = small(p, histmatch=dataclasses.replace(p.histmatch, reference="per_class"),
                      rotate=dataclasses.replace(p.rotate, test=True, probability=1.0),
                      balance=dataclasses.replace(p.balance, counts={}, min=5, max=6))
    return {**{n: small(c) for n, c in loaded.items()}, "per_class": per_class}


def relabel(manifest: Path, out: Path, held: tuple[str, ...] = ("test",)) -> Path:
    """Every Testing (or other `held` split's) image gets another class (a cyclic shift: no label
    stays); Training untouched."""
    df = read_table(manifest)
    shift = dict(zip(CLASSES, CLASSES[1:] + CLASSES[:1]))
    test = df["split"].isin(held)
    df.loc[test, "class"] = df.loc[test, "class"].map(shift)
    write_table(df, out)
    return out


def run(manifest: Path, out: Path, cfg: P.PreprocessParams) -> tuple[pd.DataFrame, dict, Path]:
    metrics = pre.preprocess(manifest, out, cfg, CLASSES)
    return read_table(out / "manifest.csv").set_index("relpath"), metrics, out


def train_record(man: pd.DataFrame, out: Path) -> dict[str, tuple]:
    """Everything preprocess produced for each Training row: decision, angle, file name and bytes."""
    rows = man[man["split"] == "train"]
    return {rel: (r["status"], r["reason"], r["rotation"],
                  Path(r["out_path"]).relative_to(out).as_posix() if r["out_path"] else "",
                  Path(r["out_path"]).read_bytes() if r["out_path"] else b"")
            for rel, r in rows.iterrows()}


def compare(a: tuple, b: tuple, held: str = "test") -> dict[str, list[str]]:
    """How the run on the true labels (a) and on the relabelled manifest (b) differ; `test_*` are
    the `held` split's images."""
    (ma, meta_a, out_a), (mb, meta_b, out_b) = a, b
    ra, rb = train_record(ma, out_a), train_record(mb, out_b)
    ta, tb = ma[ma["split"] == held], mb[mb["split"] == held]
    kept_a, kept_b = set(ta.index[ta["status"] == "kept"]), set(tb.index[tb["status"] == "kept"])
    both = sorted(kept_a & kept_b)
    return {
        "train": sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k)),
        "train_metrics": [k for k in ("train", "table2", "balance", "reference") if meta_a[k] != meta_b[k]],
        "test_compared": both,
        "test_pixels": [r for r in both if (read_gray(ta.at[r, "out_path"]) != read_gray(tb.at[r, "out_path"])).any()],
        "test_rotation": [r for r in both if ta.at[r, "rotation"] != tb.at[r, "rotation"]],
        "test_kept_in_one": sorted(kept_a ^ kept_b),
    }


def aspect_decided(man: pd.DataFrame, relabelled: pd.DataFrame, cfg: P.PreprocessParams, held: str = "test") -> list[str]:
    """Testing (`held`) rows the aspect filter (paper §4.2: tumour classes square, notumor within 0.9-1.1)
    keeps under one labelling and removes under the other, decided independently of the stage."""
    test = man[(man["split"] == held) & (man["dedup_status"] == "keep")]
    ok = lambda r, cls: ops.aspect_ok(int(r["width"]), int(r["height"]), cls in cfg.square_classes,  # noqa: E731
                                      cfg.aspect_tolerance)
    return sorted(rel for rel, r in test.iterrows() if ok(r, r["class"]) != ok(r, relabelled.at[rel, "class"]))


@pytest.fixture(scope="module")
def property_runs(chain, root, tmp_path_factory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp("runs")
    relabelled = relabel(chain["dedup"], tmp / "relabelled.csv")
    out = {}
    for name, cfg in configs(root, tmp).items():
        a = run(chain["dedup"], tmp / name / "true", cfg)
        b = run(relabelled, tmp / name / "relabelled", cfg)
        out[name] = (cfg, a, b, relabelled)
    return out


@pytest.mark.parametrize("name", ["paper", "paper_as_coded", "demo", "per_class"])
def test_relabelling_testing_changes_no_test_pixel_and_no_training_byte(property_runs, chain, name):
    cfg, a, b, relabelled = property_runs[name]
    d = compare(a, b)
    assert d["train"] == [] and d["train_metrics"] == []
    assert d["test_pixels"] == [] and d["test_rotation"] == []
    # the aspect filter is the one step that reads a Testing image's class: it decides whether the
    # image is kept (paper §4.2, Table 1 counts Testing after it), never its pixels
    man, rel = read_table(chain["dedup"]).set_index("relpath"), read_table(relabelled).set_index("relpath")
    assert d["test_kept_in_one"] == aspect_decided(man, rel, cfg)
    assert all(man.at[r, "width"] != man.at[r, "height"] for r in d["test_kept_in_one"])
    # not vacuous: every square Testing image dedup kept is compared, pixel for pixel
    square = {r for r, x in man.iterrows() if x["split"] == "test" and x["dedup_status"] == "keep"
              and x["width"] == x["height"]}
    assert square <= set(d["test_compared"]) and len(square) >= 3 * len(CLASSES)
    if cfg.histmatch.apply:  # the test images were matched, and to a reference that holds no test image
        assert a[1]["reference"]["agnostic"]["per_split"]["test"] == 0
        assert a[1]["histmatch_reference"]["test"] == "agnostic"


def test_val_is_held_out_like_testing_relabelling_it_changes_no_val_pixel_and_no_training_byte(
        chain, root, tmp_path):
    """The split stage carves val out of Training (folders, val_fraction 0.3); under the harshest legal
    settings (Training matched within its class, Testing rotated too, every image a rotation draw)
    relabelling every val and Testing image changes no val pixel and no Training byte; val is never
    rotated, never in a reference, never in the generator's or fidelity's training sets."""
    cfg = configs(root, tmp_path)["per_class"]
    manifest = tmp_path / "split.csv"
    split(chain["dedup"], manifest, P.SplitParams(val_fraction=0.3), CLASSES)
    relabelled = relabel(manifest, tmp_path / "relabelled.csv", held=("val", "test"))
    a, b = run(manifest, tmp_path / "true", cfg), run(relabelled, tmp_path / "relabelled", cfg)
    d = compare(a, b, held="val")
    assert d["train"] == [] and d["train_metrics"] == []
    assert d["test_pixels"] == [] and d["test_rotation"] == []
    man, rel = read_table(manifest).set_index("relpath"), read_table(relabelled).set_index("relpath")
    assert d["test_kept_in_one"] == aspect_decided(man, rel, cfg, held="val")
    processed = a[0]
    val = processed[(processed["split"] == "val") & (processed["status"] == "kept")]
    assert len(d["test_compared"]) >= len(CLASSES) and len(val) >= 2 * len(CLASSES)  # not vacuous
    assert (val["rotation"] == 0).all() and a[1]["rotated"]["test"] > 0  # Testing rotated (rotate.test), val never
    assert all(Path(p).parent.parent.name == "val" for p in val["out_path"])
    assert a[1]["histmatch_reference"]["val"] == "agnostic" and a[1]["val"]["total"] == len(val)
    gen = load_generator(profile(root, tmp_path, "paper").get("generator"))
    flat = processed.reset_index()
    for cls in CLASSES:
        seen = set(select(flat, cls, gen)["out_path"]) | set(_real_paths(flat, cls, "train"))
        assert not seen & set(val["out_path"])


def test_negative_control_a_test_image_matched_to_its_class_reference_fails_the_property(
        property_runs, chain, monkeypatch, tmp_path):
    """The old code matched every image, Testing too, to its own class's reference. Put that back
    and the relabelling test must see Testing pixels change (and Training still untouched)."""
    cfg, a, _, relabelled = property_runs["per_class"]
    monkeypatch.setattr(pre, "_reference_for", lambda split, cls, refs: refs.per_class.get(cls, refs.agnostic))
    a2 = run(chain["dedup"], tmp_path / "true", cfg)
    b2 = run(relabelled, tmp_path / "relabelled", cfg)
    d = compare(a2, b2)
    assert d["train"] == []
    assert len(d["test_pixels"]) > len(d["test_compared"]) // 2, (len(d["test_pixels"]), len(d["test_compared"]))


def test_per_class_matching_of_testing_is_refused_at_params_time():
    """A reference built from Testing images cannot be applied; nothing class-wise reaches Testing."""
    both = ["train", "test"]
    with pytest.raises(P.ParamsError, match="preprocess.histmatch.reference_splits"):
        P.load("preprocess", data={"preprocess": {"histmatch": {"reference": "per_class", "reference_splits": both}}})
    cfg = P.load("preprocess", data={"preprocess": {"histmatch": {"apply": False, "reference_splits": both}}})
    assert cfg.histmatch.reference_splits == ("train", "test")  # the paper's as-coded setting: nothing matched saved


def _testing_copies(man: pd.DataFrame, paths: list[str]) -> list[str]:
    """Which of `paths` (processed files) come from a file byte-identical to a Testing image."""
    testing = set(man.loc[man["split"] == "test", "sha256"])
    by_out = man[man["out_path"] != ""].set_index("out_path")
    return sorted(by_out.at[p, "relpath"] for p in paths
                  if by_out.at[p, "sha256"] in testing or by_out.at[p, "split"] != "train")


def test_generator_training_set_and_fidelity_reference_hold_no_testing_image(chain, root, tmp_path):
    """Through the generator's `select` and fidelity's `_real_paths`, on the processed manifest.
    Fidelity's real-vs-real floor (and the memorisation false-alarm check) deliberately read the
    Testing images as the *other* set: a measurement against the Training reference, not something
    a generator or a reference statistic sees."""
    data = profile(root, tmp_path, "paper")
    gen = load_generator(data.get("generator"))
    cfg = small(P.load("preprocess", data=data))
    truth = read_table(chain["raw"] / TRUTH_FILE)
    leaks = set(truth.loc[truth["nuisance"] == "leak_dup", "relpath"])
    assert len(leaks) == DEMO.leaked_duplicates * len(CLASSES)

    found = {}
    for key in ("dedup", "dedup_no_cross"):
        pre.preprocess(chain[key], tmp_path / key, cfg, CLASSES)
        man = read_table(tmp_path / key / "manifest.csv")
        kept_train = man[(man["status"] == "kept") & (man["split"] == "train")]
        hits = []
        for cls in CLASSES:
            table = select(man, cls, gen)  # every kept Training row of the class, in roles train/val/cut
            reference = _real_paths(man, cls, "train")
            expect = sorted(kept_train.loc[kept_train["class"] == cls, "out_path"])
            assert sorted(table["out_path"]) == sorted(reference) == expect
            hits += _testing_copies(man, list(table["out_path"]))
        found[key] = (sorted(hits), sorted(leaks & set(kept_train["relpath"])))

    assert found["dedup"] == ([], [])  # the corrected profile: dedup removed every planted copy
    # the check is live: without the cross-split removal (the paper's code) the planted copies that
    # survive preprocessing reach both sets, and are found exactly
    hits, surviving = found["dedup_no_cross"]
    assert hits == surviving and len(surviving) >= len(CLASSES)
