"""The split stage on manifests with known patients: exact counts per method, patients never straddle
the grouped splits (and the check fires when they do), dedup's decisions honoured on the final splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from synthmri import params as P
from synthmri.cli import app
from synthmri.data import split as S
from synthmri.io import read_table, write_table

TUMOURS = ("glioma", "meningioma", "pituitary")  # figshare's three classes


def row(relpath: str, cls: str, *, split: str = "", patient: str = "", fold: int | str = "",
        status: str = "keep", group: str = "", dup_of: str = "", reason: str = "") -> dict:
    return {"split": split, "class": cls, "relpath": relpath, "path": f"raw/{relpath}", "patient": patient,
            "fold": fold, "dedup_status": status, "dedup_reason": reason, "dup_group": group, "dup_of": dup_of}


def patients_set(per_class: int = 10, images: int = 3, folders: bool = False) -> pd.DataFrame:
    """`per_class` patients of each class, `images` slices each; patient k is in fold k % 5 + 1;
    with `folders`, patients 0-7 in Training and 8-9 in Testing (Kaggle-style), else no folder (figshare)."""
    rows = []
    for cls in TUMOURS:
        for k in range(per_class):
            for j in range(images):
                split = ("train" if k < per_class - 2 else "test") if folders else ""
                rows.append(row(f"{cls}/{k:02d}_{j}.mat", cls, split=split, patient=f"{cls[:2]}{k:02d}", fold=k % 5 + 1))
    return pd.DataFrame(rows)


def cfg(**raw) -> P.SplitParams:
    return P.load("split", data={"split": raw})


def counts(out: pd.DataFrame) -> dict[str, dict[str, int]]:
    kept = out[out["dedup_status"] == "keep"]
    return {s: {c: int(((kept["split"] == s) & (kept["class"] == c)).sum()) for c in TUMOURS} for s in P.SPLITS}


def by_path(out: pd.DataFrame) -> dict[str, str]:
    return dict(zip(out["relpath"], out["split"]))


def run(df: pd.DataFrame, tmp: Path, c: P.SplitParams, cross_split: bool = True) -> tuple[pd.DataFrame, dict]:
    write_table(df, tmp / "dedup.csv")
    metrics = S.split(tmp / "dedup.csv", tmp / "split.csv", c, TUMOURS, cross_split=cross_split)
    return read_table(tmp / "split.csv"), metrics


# ---- patient --------------------------------------------------------------------------------------


def test_patient_split_is_exact_whole_patients_and_shares_none(tmp_path):
    out, m = run(patients_set(), tmp_path, cfg(method="patient"))
    # 30 images of 10 patients per class: 21 / 6 / 3 images = 7 / 2 / 1 whole patients
    assert counts(out) == {"train": dict.fromkeys(TUMOURS, 21), "val": dict.fromkeys(TUMOURS, 6),
                           "test": dict.fromkeys(TUMOURS, 3)}
    assert out.groupby("patient")["split"].nunique().max() == 1
    assert [m[s]["patients"] for s in P.SPLITS] == [21, 6, 3]
    assert m["shared_patients"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert m["patient_ids"] == "known" and m["patients"] == 30 and m["reconcile"] == {"in": 90, "kept": 90, "removed": 0}
    assert m["from_source_split"] == {"": {"train": 63, "val": 18, "test": 9}}


def test_patient_split_is_seeded_and_independent_of_row_order(tmp_path):
    df = patients_set()
    a, _ = run(df, tmp_path, cfg(method="patient", seed=7))
    b, _ = run(df.sample(frac=1, random_state=1), tmp_path, cfg(method="patient", seed=7))
    c, _ = run(df, tmp_path, cfg(method="patient", seed=8))
    assert by_path(a) == by_path(b)
    assert by_path(a) != by_path(c) and counts(a) == counts(c)


def test_patient_split_stratifies_uneven_patients_within_a_unit(tmp_path):
    """40 patients per class with 1-8 slices: every (split, class) count within one patient's slices
    of its target floor(share x n)."""
    rng = np.random.default_rng(3)
    rows = [row(f"{c}/{k:02d}_{j}.mat", c, patient=f"{c}{k}") for c in TUMOURS for k in range(40)
            for j in range(int(rng.integers(1, 9)))]
    out, m = run(pd.DataFrame(rows), tmp_path, cfg(method="patient"))
    for c in TUMOURS:
        n = sum(r["class"] == c for r in rows)
        goal = dict(zip(P.SPLITS, S.targets(n, (0.7, 0.2, 0.1))))
        for s in P.SPLITS:
            assert abs(m[s]["per_class"][c] - goal[s]) <= 8, (c, s, m[s]["per_class"][c], goal[s])
    assert sum(m["shared_patients"].values()) == 0


def test_the_shared_patient_check_fires_when_a_patient_straddles(tmp_path, monkeypatch):
    with pytest.raises(S.SplitError, match=r"split.method patient: 1 patient\(s\) in both train and test"):
        S.check_no_shared_patients({"train-val": [], "train-test": ["gl03"], "val-test": []}, "patient")
    # force the grouped assignment to scatter images (as the image method does): the stage refuses to write
    monkeypatch.setitem(S._METHODS, "patient", S._image)
    with pytest.raises(S.SplitError, match="a patient must never straddle splits"):
        run(patients_set(), tmp_path, cfg(method="patient"))
    assert not (tmp_path / "split.csv").exists()


# ---- image (the SD-Turbo study as coded) -----------------------------------------------------------


def test_image_split_reproduces_the_studys_counts_and_leaks_patients(tmp_path):
    """figshare's 708 / 1,426 / 930 slices per class: the study's recorded 2,144 / 612 / 308, per class
    495 / 998 / 651 train and 72 / 143 / 93 test (int(0.7 n), int(0.2 n), the rest, per class)."""
    sizes = {"meningioma": 708, "glioma": 1426, "pituitary": 930}
    rows = [row(f"{c}/{i}.mat", c, patient=f"{c}{i // 13}") for c, n in sizes.items() for i in range(n)]
    out, m = run(pd.DataFrame(rows), tmp_path, cfg(method="image", seed=42))
    assert [m[s]["images"] for s in P.SPLITS] == [2144, 612, 308]
    assert {c: m["train"]["per_class"][c] for c in sizes} == {"meningioma": 495, "glioma": 998, "pituitary": 651}
    assert {c: m["test"]["per_class"][c] for c in sizes} == {"meningioma": 72, "glioma": 143, "pituitary": 93}
    assert m["shared_patients"]["train-test"] > 100  # most patients straddle (13 slices each): reported, not refused
    again, _ = run(pd.DataFrame(rows), tmp_path, cfg(method="image", seed=42))
    assert by_path(again) == by_path(out)


# ---- cvind ----------------------------------------------------------------------------------------


def test_cvind_holds_out_the_publishers_fold_and_carves_val_by_patient(tmp_path):
    df = patients_set()
    out, m = run(df, tmp_path, cfg(method="cvind", fold=2, val_fraction=0.25))
    assert sorted(out.loc[out["split"] == "test", "relpath"]) == sorted(df.loc[df["fold"] == 2, "relpath"])
    # the other 24 slices (8 patients) per class: train floor(0.75 x 24) = 18, val 6 (2 patients)
    assert counts(out) == {"train": dict.fromkeys(TUMOURS, 18), "val": dict.fromkeys(TUMOURS, 6),
                           "test": dict.fromkeys(TUMOURS, 6)}
    assert m["shared_patients"] == {"train-val": 0, "train-test": 0, "val-test": 0} and m["fold"] == 2
    plain, _ = run(df, tmp_path, cfg(method="cvind", fold=5))
    assert counts(plain)["val"] == dict.fromkeys(TUMOURS, 0) and counts(plain)["train"] == dict.fromkeys(TUMOURS, 24)


def test_cvind_refuses_a_fold_that_is_not_there_rows_without_a_fold_and_a_leaky_fold(tmp_path):
    df = patients_set()
    with pytest.raises(S.SplitError, match=r"split.fold: 6 is not one of the manifest's folds \[1, 2, 3, 4, 5\]"):
        run(df, tmp_path, cfg(method="cvind", fold=6))
    with pytest.raises(S.SplitError, match="1 image\\(s\\) have no fold"):
        run(df.assign(fold=[""] + list(df["fold"][1:])), tmp_path, cfg(method="cvind"))
    with pytest.raises(S.SplitError, match="no 'fold' column"):
        run(df.drop(columns="fold"), tmp_path, cfg(method="cvind"))
    leaky = df.copy()
    leaky.loc[0, "fold"] = 3  # gl00's first slice in fold 3, its others in fold 1: the patient straddles
    with pytest.raises(S.SplitError, match="split.method cvind: 1 patient\\(s\\) in both"):
        run(leaky, tmp_path, cfg(method="cvind", fold=3))


# ---- folders (Kaggle, the paper) ------------------------------------------------------------------


def test_folders_keep_the_datasets_split_and_carve_val_from_training(tmp_path):
    df = patients_set(folders=True)
    out, m = run(df, tmp_path, cfg())  # the paper's profiles: folders, no val
    assert list(out["split"]) == list(df["split"]) and list(out["source_split"]) == list(df["split"])
    assert "val" not in set(out["split"]) and m["val"]["images"] == 0
    out, m = run(df, tmp_path, cfg(val_fraction=0.25))
    # Training holds 24 slices (8 patients) per class: val 24 - floor(0.75 x 24) = 6, two whole patients
    assert counts(out) == {"train": dict.fromkeys(TUMOURS, 18), "val": dict.fromkeys(TUMOURS, 6),
                           "test": dict.fromkeys(TUMOURS, 6)}
    assert (out.loc[df["split"] == "test", "split"] == "test").all()
    assert m["from_source_split"] == {"test": {"train": 0, "val": 0, "test": 18}, "train": {"train": 54, "val": 18, "test": 0}}
    assert m["shared_patients"] == {"train-val": 0, "train-test": 0, "val-test": 0}


def test_folders_without_patients_carve_by_image_and_say_patients_are_unknown(tmp_path):
    df = patients_set(folders=True).drop(columns=["patient", "fold"])
    out, m = run(df, tmp_path, cfg(val_fraction=0.1))
    assert counts(out)["val"] == dict.fromkeys(TUMOURS, 3)  # 24 - floor(0.9 x 24)
    assert m["patient_ids"] == "unknown" and m["shared_patients"] is None and m["patients"] == 0
    assert m["train"]["images_without_patient"] == 63 and m["val"]["patients"] == 0
    part = patients_set(folders=True)
    part.loc[part.index[:5], "patient"] = ""
    _, m = run(part, tmp_path, cfg())
    assert m["patient_ids"] == "partly known" and m["train"]["images_without_patient"] == 5


def test_folders_refuse_images_without_a_folder(tmp_path):
    with pytest.raises(S.SplitError, match="split.method folders: 90 image\\(s\\) have no Training/Testing folder"):
        run(patients_set(), tmp_path, cfg())


# ---- dedup's decisions ----------------------------------------------------------------------------


def copies_set() -> pd.DataFrame:
    """60 images of distinct patients, 20 duplicate groups of two kept copies (dedup.cross_split false
    kept both, as the paper's code) and one removed copy per group pointing at the first."""
    rows = []
    for k in range(20):
        cls = TUMOURS[k % 3]
        a, b = f"{cls}/{k}a.png", f"{cls}/{k}b.png"
        rows += [row(a, cls, patient=f"p{k}a", group=str(k + 1)), row(b, cls, patient=f"p{k}b", group=str(k + 1)),
                 row(f"{cls}/{k}c.png", cls, patient=f"p{k}c", group=str(k + 1), status="removed", dup_of=a,
                     reason="duplicate within split")]
    for k in range(60):
        cls = TUMOURS[k % 3]
        rows.append(row(f"{cls}/s{k}.png", cls, patient=f"s{k}"))
    return pd.DataFrame(rows)


def test_grouped_methods_keep_duplicate_groups_together(tmp_path):
    out, m = run(copies_set(), tmp_path, cfg(method="patient"))
    groups = out[out["dup_group"].astype(str) != ""]
    assert groups.groupby("dup_group")["split"].nunique().max() == 1  # the removed copy follows its twin too
    assert m["removed_across_final_splits"] == 0 and m["removed_by_dedup"] == 20


def test_copies_across_final_splits_leave_the_less_held_out_split(tmp_path):
    """The image method scatters copies; with dedup.cross_split the most held-out split keeps its copy."""
    df = copies_set()
    loose, m0 = run(df, tmp_path, cfg(method="image"), cross_split=False)
    kept_copies = loose[(loose["dedup_status"] == "keep") & (loose["dup_group"].astype(str) != "")]
    scattered = kept_copies.groupby("dup_group")["split"].nunique()
    assert (scattered > 1).sum() >= 3 and m0["removed_across_final_splits"] == 0  # not vacuous
    out, m = run(df, tmp_path, cfg(method="image"), cross_split=True)
    assert by_path(out) == by_path(loose)  # the assignment is the same; only copies are removed
    rank = {s: k for k, s in enumerate(P.SPLITS)}
    removed = out[out["dedup_reason"].str.endswith("(after the split)")]
    assert len(removed) == m["removed_across_final_splits"] == (scattered - 1).sum()
    for _, r in removed.iterrows():
        twin = out.set_index("relpath").loc[r["dup_of"]]
        assert twin["dedup_status"] == "keep" and rank[twin["split"]] > rank[r["split"]]
        assert r["dedup_reason"] == f"duplicate of a {twin['split']} image (after the split)"
    kept = out[(out["dedup_status"] == "keep") & (out["dup_group"].astype(str) != "")]
    assert kept.groupby("dup_group")["split"].nunique().max() == 1
    assert m["reconcile"]["removed"] == 20 + m["removed_across_final_splits"]


def test_removed_rows_stay_removed_and_follow_their_twin(tmp_path):
    df = copies_set()
    df.loc[len(df)] = row("glioma/broken.png", "glioma", patient="x", status="removed", reason="unreadable: truncated")
    out, _ = run(df, tmp_path, cfg(method="patient"))
    o = out.set_index("relpath")
    for rel, r in df.set_index("relpath").iterrows():
        if r["dedup_status"] == "removed":
            assert o.at[rel, "dedup_status"] == "removed" and o.at[rel, "dedup_reason"] == r["dedup_reason"]
            assert o.at[rel, "split"] == (o.at[r["dup_of"], "split"] if r["dup_of"] else "")


# ---- params and the command -----------------------------------------------------------------------


@pytest.mark.parametrize("raw, message", [
    ({"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}, r"split.fractions: must sum to 1"),
    ({"fractions": {"train": 0.9, "val": 0.2, "test": -0.1}}, r"split.fractions.test: must be in \[0, 1\]"),
    ({"fractions": {"train": 0.8, "val": 0.2, "test": 0.0}}, r"split.fractions: train and test must be > 0"),
    ({"method": "random"}, r"split.method: expected one of \['folders', 'image', 'patient', 'cvind'\]"),
    ({"fold": 0}, r"split.fold: must be >= 1"),
    ({"val_fraction": 1.0}, r"split.val_fraction: must be in \[0, 1\)"),
    ({"fractions": {"train": 0.7, "validation": 0.3}}, r"split.fractions: unknown key"),
])
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(P.ParamsError, match=message):
        cfg(**raw)


def test_cli_writes_the_manifest_and_metrics(tmp_path):
    write_table(patients_set(), tmp_path / "dedup.csv")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"classes": list(TUMOURS)}, "split": {"method": "patient"}}))
    args = ["split", str(tmp_path / "dedup.csv"), str(tmp_path / "split.csv"), "--params", str(params)]
    result = CliRunner().invoke(app, [*args, "--metrics", str(tmp_path / "split.json")])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "split.json").read_text())
    assert m["method"] == "patient" and m["test"]["images"] == 9 and P.PROVENANCE in m
    params.write_text(yaml.safe_dump({"data": {"classes": list(TUMOURS)}, "split": {"method": "folders"}}))
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "split.method folders" in bad.output


# ---- through preprocess ---------------------------------------------------------------------------


def _dedup_manifest(tmp: Path) -> Path:
    """test_preprocess's tiny set of real images, with the columns dedup adds."""
    from tests.test_preprocess import standard_set

    path = standard_set(tmp)
    write_table(read_table(path).assign(dup_group="", dup_scope="", dup_of=""), path)
    return path


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_preprocess_writes_val_and_folders_without_val_change_nothing(tmp_path):
    from synthmri.data.preprocess import preprocess
    from tests.test_preprocess import config

    classes = ("glioma", "meningioma", "notumor", "pituitary")
    dedup_csv = _dedup_manifest(tmp_path)
    pre = config(**{"rotate.probability": 1.0, "rotate.test": True})
    direct = preprocess(dedup_csv, tmp_path / "direct", pre, classes)

    # folders, no val (the paper's profiles): the same images, byte for byte, and the same metrics
    S.split(dedup_csv, tmp_path / "same.csv", cfg(), classes)
    same = preprocess(tmp_path / "same.csv", tmp_path / "same", pre, classes)
    assert _tree(tmp_path / "same") == _tree(tmp_path / "direct") and same == direct

    # a val carve-out: val/<class>/*.png and manifest rows split=val, never rotated, matched to the agnostic reference
    S.split(dedup_csv, tmp_path / "val.csv", cfg(val_fraction=0.3), classes)
    m = preprocess(tmp_path / "val.csv", tmp_path / "val", pre, classes)
    man = read_table(tmp_path / "val" / "manifest.csv")
    val = man[(man["split"] == "val") & (man["status"] == "kept")]
    files = sorted(p.relative_to(tmp_path / "val").as_posix() for p in (tmp_path / "val" / "val").rglob("*.png"))
    assert len(val) >= 6 and files == sorted(Path(p).relative_to(tmp_path / "val").as_posix() for p in val["out_path"])
    assert (val["rotation"] == 0).all() and m["rotated"]["val"] == 0 and m["rotated"]["test"] == m["test"]["total"]
    assert m["val"]["total"] == len(val) and m["histmatch_reference"]["val"] == "agnostic"
    assert m["reference"]["agnostic"]["per_split"] == {"train": pre.histmatch.reference_images, "test": 0}
    assert (val["source_split"] == "train").all()  # carved out of Training; Testing untouched
    assert m["test"] == direct["test"]


# ---- classify's data layer ------------------------------------------------------------------------


def test_classify_data_exposes_val_and_never_trains_on_it(tmp_path, monkeypatch):
    from synthmri import CLASSES
    from synthmri.classify.data import check_plan, load_images
    from synthmri.classify.mixtures import LeakageError, Plan
    from tests.test_classify_data import make_dataset

    monkeypatch.chdir(tmp_path)
    manifest, syn = make_dataset(tmp_path, train=6, test=3, synthetic=2, leak=True)
    df = read_table(manifest)
    # two Training images per class become val; each class's leaked copy of a test image becomes val too
    first = df[(df["split"] == "train") & (df["status"] == "kept")].groupby("class").head(2).index
    leaked = df.index[df["out_path"].str.endswith("_leak.png")]
    df.loc[first.union(leaked), "split"] = "val"
    write_table(df, manifest)

    images = load_images(manifest, syn, CLASSES, 32, workers=1)
    val = sorted(df.loc[first, "out_path"])
    assert sorted(p for p, _ in images.val) == val and all(c in p for p, c in images.val)
    assert sorted(e["path"] for e in images.val_excluded) == sorted(df.loc[leaked, "out_path"])  # copies of test images
    assert not set(val) & {p for c in CLASSES for p in images.pools.real[c]}
    assert images.pixels[images.index(val)].shape == (len(val), 32, 32)  # decoded, ready for a classifier
    assert images.test_copies_found == 0  # the leaked copies left Training with the val split
    for path in (val[0], images.val_excluded[0]["path"]):
        with pytest.raises(LeakageError, match="a val image in a training set"):
            check_plan(images, Plan(rows=((path, "glioma", "real"),), counts={}))


# ---- the figshare demo release, through the real stages ---------------------------------------------


@pytest.fixture(scope="module")
def figshare_dedup(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The tiny figshare demo (real v7.3 .mat files, patient-wise cvind.mat) through ingest, audit, dedup."""
    from synthmri.data.audit import audit
    from synthmri.data.dedup import dedup
    from synthmri.data.demo import TRUTH_FILE
    from synthmri.data.demo_figshare import make_figshare_demo
    from synthmri.data.ingest import ingest

    tmp = tmp_path_factory.mktemp("figshare")
    cfg = P.DemoParams(size=48, figshare=P.DemoFigshareParams(patients_per_class=10, min_slices=2, max_slices=4))
    make_figshare_demo(tmp / "raw", cfg)
    ingest(tmp / "raw", tmp / "ingest", P.IngestParams(workers=1), TUMOURS, "figshare")
    audit(tmp / "ingest" / "manifest.csv", tmp / "audit.csv", tmp / "plots", P.AuditParams(workers=1), TUMOURS)
    dedup(tmp / "audit.csv", tmp / "dedup.csv", P.DedupParams(compare_engines=False, workers=1))
    return tmp / "dedup.csv", read_table(tmp / "raw" / TRUTH_FILE)


def test_figshare_release_splits_by_patient_and_by_the_publishers_folds(figshare_dedup, tmp_path):
    dedup_csv, truth = figshare_dedup
    folds = truth.set_index("relpath")["fold"]
    for c in (cfg(method="patient"), cfg(method="cvind", fold=3, val_fraction=0.25)):
        m = S.split(dedup_csv, tmp_path / "split.csv", c, TUMOURS)
        out = read_table(tmp_path / "split.csv")
        kept = out[out["dedup_status"] == "keep"]
        assert m["patient_ids"] == "known" and m["patients"] == truth["patient"].nunique() == 30
        assert m["shared_patients"] == {"train-val": 0, "train-test": 0, "val-test": 0}
        assert kept.groupby("patient")["split"].nunique().max() == 1 and m["val"]["patients"] >= 3
        assert sum(m[s]["patients"] for s in P.SPLITS) == 30
        if c.method == "cvind":
            test = set(kept.loc[kept["split"] == "test", "relpath"])
            assert test == {r for r in kept["relpath"] if folds[r] == 3}
    m = S.split(dedup_csv, tmp_path / "split.csv", cfg(method="image"), TUMOURS)
    assert sum(m["shared_patients"].values()) > 10  # by image, most patients straddle
    with pytest.raises(S.SplitError, match="split.method folders"):
        S.split(dedup_csv, tmp_path / "split.csv", cfg(), TUMOURS)
