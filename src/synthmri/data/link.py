"""The link stage: each Kaggle image matched to the figshare slice it was exported from, so that Kaggle images
get a patient ID and the patients shared by Training and Testing can be counted (issue 10 §4; README "Patient
leakage in the Kaggle split").

The Kaggle set's tumour images were exported from the figshare release (Cheng et al.) with another intensity
scaling and JPEG compression, some resized. The matcher is built to ignore exactly that:
- thumbnails are the dedup engine's (`dedup_engines.load_thumbnails`: bicubic, antialiased), so resizing and
  JPEG blocking mostly average out at `link.px_size`;
- each thumbnail is replaced by its pixels' intensity ranks (0-1), so any increasing intensity map (window,
  gamma, contrast) leaves it unchanged; ranks below `link.rank_floor` are tied, because the dark half of a slice
  is background whose noise orders its pixels at random and would only add noise to the score;
- two thumbnails are compared by the correlation of these ranks (a Spearman correlation on the upper ranks),
  maximised over the 8 quarter turns and mirror images when `link.flips` is set;
- a match needs a score >= `link.min_score` and a patient margin >= `link.min_margin`: the score minus the best
  score of any slice of another patient. (The margin to the second-best slice, also recorded, is small by
  nature: a patient's neighbouring slices look alike.) Anything else stays unmatched, never forced.
Scores are one matrix product per block of Kaggle images against every figshare slice (and orientation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from synthmri.data.dedup_engines import load_thumbnails
from synthmri.io import read_table, write_table
from synthmri.params import IngestParams, LinkParams, workers

REQUIRED = ("split", "class", "relpath", "path")
FIGSHARE_REQUIRED = ("relpath", "path", "class", "patient")
FIGSHARE_DIR = "figshare"  # OUT_DIR/figshare: the release, ingested as the figshare ingest does
MATCHED, BELOW, AMBIGUOUS, KNOWN = "matched", "below min_score", "ambiguous patient", "patient known"
COLUMNS = ("link_status", "link_best", "link_class", "link_score", "link_margin", "link_patient_margin",
           "link_orientation")
ORIENTATIONS = ("identity", "rot90", "rot180", "rot270", "mirror", "mirror+rot90", "mirror+rot180",
                "mirror+rot270")  # what was done to the figshare slice to give the Kaggle image
_BLOCK = 512  # Kaggle images per matrix product
EXAMPLES = 20


# ---- the matcher ---------------------------------------------------------------------------------------


def rank_vectors(thumbs: np.ndarray, floor: float) -> np.ndarray:
    """(M, px, px[, 3]) thumbnails -> (M, px*px) float32 unit vectors of floored, centred intensity ranks.

    Invariant to any increasing intensity map; a flat image (nothing above the floor) is all zeros and matches
    nothing."""
    gray = thumbs.astype(np.float32)
    if gray.ndim == 4:
        gray = gray.mean(axis=3)
    flat = gray.reshape(len(gray), int(np.prod(gray.shape[1:])))
    ranks = rankdata(flat, axis=1).astype(np.float32) / max(flat.shape[1], 1)
    ranks = np.maximum(ranks, np.float32(floor))
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ranks, axis=1, keepdims=True)
    return np.divide(ranks, norm, out=np.zeros_like(ranks), where=norm > 1e-6)


def oriented(thumbs: np.ndarray, k: int) -> np.ndarray:
    """ORIENTATIONS[k] of each (M, px, px, ...) thumbnail."""
    t = thumbs[:, :, ::-1] if k >= 4 else thumbs
    return np.ascontiguousarray(np.rot90(t, k % 4, axes=(1, 2)))


@dataclass(frozen=True)
class Matches:
    """Per query: its best reference, the scores and margins, and the orientation that gave the best score."""

    best: np.ndarray  # index into the references
    score: np.ndarray  # best correlation
    margin: np.ndarray  # score minus the second-best reference's
    patient_margin: np.ndarray  # score minus the best reference of another group (patient)
    orientation: np.ndarray  # index into ORIENTATIONS


def match(queries: np.ndarray, refs: np.ndarray, groups: np.ndarray, floor: float, flips: bool,
          block: int = _BLOCK) -> Matches:
    """Best reference thumbnail for each query thumbnail, blockwise: (queries x references) scores per block,
    maximised over orientations, then per group (patient) by a reduceat over references sorted by group."""
    q = rank_vectors(queries, floor)
    variants = [rank_vectors(oriented(refs, k), floor) for k in range(8 if flips else 1)]
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    n, r = len(q), len(refs)
    out = {k: np.zeros(n, dt) for k, dt in
           (("best", np.int64), ("score", np.float64), ("margin", np.float64), ("patient_margin", np.float64),
            ("orientation", np.int64))}
    if r == 0:
        out["best"][:] = -1
        return Matches(**out)
    for a in range(0, n, block):
        qb = q[a:a + block]
        scores = np.full((len(qb), r), -np.inf, np.float32)
        which = np.zeros((len(qb), r), np.int8)
        for k, v in enumerate(variants):
            s = qb @ v.T
            better = s > scores
            scores[better], which[better] = s[better], k
        rows = np.arange(len(qb))
        best = scores.argmax(axis=1)
        top = scores[rows, best]
        second = np.partition(scores, r - 2, axis=1)[:, r - 2] if r > 1 else np.full(len(qb), -1.0)
        per_group = np.maximum.reduceat(scores[:, order], starts, axis=1)
        other = np.partition(per_group, per_group.shape[1] - 2, axis=1)[:, -2] if len(starts) > 1 else -1.0
        sl = slice(a, a + len(qb))
        out["best"][sl], out["score"][sl], out["orientation"][sl] = best, top, which[rows, best]
        out["margin"][sl], out["patient_margin"][sl] = top - second, top - other
    return Matches(**out)


# ---- the stage -----------------------------------------------------------------------------------------


def link(manifest: Path, out_dir: Path, cfg: LinkParams, ingest_cfg: IngestParams) -> dict[str, Any]:
    """Write OUT_DIR/manifest.csv (every input row, in order, with `patient` filled where a figshare slice
    matched and the COLUMNS added) and return the metrics."""
    df = read_table(manifest)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {missing}; expected the dedup (or ingest) manifest")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    if "patient" not in out.columns:
        out["patient"] = ""
    out["patient"] = out["patient"].astype(str)
    for c in COLUMNS:
        out[c] = ""
    known = out["patient"] != ""
    out.loc[known, "link_status"] = KNOWN

    source = Path(cfg.figshare) if cfg.figshare else None
    if source is None or not source.exists():
        reason = ("link.figshare is empty" if source is None else
                  f"no figshare release at {cfg.figshare} (link.figshare): nothing to match against")
        out.loc[~known, "link_status"] = "not compared: no figshare release"
        write_table(out, out_dir / "manifest.csv")
        return {"ran": False, "reason": reason, "images": len(out)}

    refs, fig_info = _references(source, out_dir / FIGSHARE_DIR, ingest_cfg)
    todo = np.flatnonzero(~known.to_numpy())
    th = load_thumbnails(out["path"].iloc[todo].astype(str).tolist(), cfg.px_size, False, workers(cfg.workers))
    for k, reason in th.errors.items():
        out.iat[todo[k], out.columns.get_loc("link_status")] = reason
    readable = np.array([k for k in range(len(todo)) if k not in th.errors], np.int64)
    ref_th = load_thumbnails(refs["path"].astype(str).tolist(), cfg.px_size, False, workers(cfg.workers))
    if ref_th.errors:
        k, reason = next(iter(ref_th.errors.items()))
        raise ValueError(f"figshare slice {refs['relpath'].iloc[k]} cannot be read ({reason}): rerun the figshare "
                         "ingest")
    codes = pd.factorize(refs["patient"].astype(str))[0]
    m = match(th.thumbs[readable], ref_th.thumbs, codes, cfg.rank_floor, cfg.flips)
    _fill(out, todo[readable], m, refs, cfg)
    write_table(out, out_dir / "manifest.csv")
    return _metrics(out, todo[readable], refs, fig_info, cfg)


def _references(source: Path, ingest_dir: Path, ingest_cfg: IngestParams) -> tuple[pd.DataFrame, dict]:
    """The figshare slices: a figshare ingest manifest as it is, or the release ingested into `ingest_dir`."""
    if source.is_file() and source.suffix.lower() == ".csv":
        refs, info = read_table(source), {"source": source.as_posix(), "kind": "ingest manifest"}
    else:
        from synthmri.data.figshare import LABELS
        from synthmri.data.ingest_figshare import ingest_figshare

        ing = ingest_figshare(source, ingest_dir, ingest_cfg, tuple(LABELS.values()))
        refs = read_table(ingest_dir / "manifest.csv")
        info = {"source": source.as_posix(), "kind": "release", "quarantined": ing["quarantined"]}
    missing = [c for c in FIGSHARE_REQUIRED if c not in refs.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; link.figshare must be the figshare release or "
                         "its ingest manifest")
    refs = refs[refs["patient"].astype(str) != ""].reset_index(drop=True)
    if refs.empty:
        raise ValueError(f"{source}: no figshare slice with a patient ID to match against")
    info.update(slices=len(refs), patients=int(refs["patient"].nunique()))
    return refs, info


def _fill(out: pd.DataFrame, rows: np.ndarray, m: Matches, refs: pd.DataFrame, cfg: LinkParams) -> None:
    ok_score = m.score >= cfg.min_score
    ok = ok_score & (m.patient_margin >= cfg.min_margin)
    status = np.where(ok, MATCHED, np.where(ok_score, AMBIGUOUS, BELOW))
    cols = {
        "link_status": status,
        "link_best": refs["relpath"].to_numpy()[m.best],
        "link_class": refs["class"].to_numpy()[m.best],
        "link_score": np.round(m.score, 4),
        "link_margin": np.round(m.margin, 4),
        "link_patient_margin": np.round(m.patient_margin, 4),
        "link_orientation": np.asarray(ORIENTATIONS)[m.orientation],
    }
    for c, v in cols.items():
        out[c] = out[c].astype(object)
        out.iloc[rows, out.columns.get_loc(c)] = v
    patients = refs["patient"].astype(str).to_numpy()[m.best]
    out.iloc[rows[ok], out.columns.get_loc("patient")] = patients[ok]


# ---- metrics -------------------------------------------------------------------------------------------


def leakage(df: pd.DataFrame) -> dict[str, Any]:
    """Patients (recovered or known) in both train and test, and test images whose patient is in train."""
    has = df["patient"] != ""
    train = set(df.loc[has & (df["split"] == "train"), "patient"])
    test = df[df["split"] == "test"]
    test_known = test[test["patient"] != ""]
    both = sorted(train & set(test_known["patient"]))
    leaked = test_known[test_known["patient"].isin(train)]
    return {
        "images": len(df),
        "patients": {"train": len(train), "test": int(test_known["patient"].nunique()), "in_both": len(both)},
        "test_images": len(test),
        "test_images_with_patient": len(test_known),
        "test_images_with_patient_in_train": len(leaked),
        "test_images_with_patient_in_train_per_class": _per_class(leaked),
        "patients_in_both_examples": both[:EXAMPLES],
    }


def _per_class(df: pd.DataFrame) -> dict[str, int]:
    return {c: int(n) for c, n in sorted(Counter(df["class"]).items())}


def _metrics(out: pd.DataFrame, compared: np.ndarray, refs: pd.DataFrame, fig_info: dict,
             cfg: LinkParams) -> dict[str, Any]:
    rows = out.iloc[compared]
    matched = rows[rows["link_status"] == MATCHED]
    unmatched = rows[rows["link_status"] != MATCHED]
    splits = sorted(set(out["split"]))
    score = rows["link_score"].astype(float)
    disagree = matched[matched["class"] != matched["link_class"]]
    square = rows["width"].astype(int) == rows["height"].astype(int) if {"width", "height"} <= set(rows) else None
    metrics: dict[str, Any] = {
        "ran": True,
        "figshare": fig_info,
        "images": len(out),
        "compared": len(rows),
        "status": dict(sorted(Counter(out["link_status"].map(lambda s: s.split(":")[0])).items())),
        "matched": {s: _per_class(matched[matched["split"] == s]) for s in splits},
        "unmatched": {s: _per_class(unmatched[unmatched["split"] == s]) for s in splits},
        # a Kaggle class other than the slice's figshare label: a relabelled image, or a wrong match to look at
        "class_disagreements": {"count": len(disagree),
                                "examples": disagree[["relpath", "class", "link_best", "link_class"]]
                                .head(EXAMPLES).to_dict("records")},
        "slices_matched_more_than_once": int((matched["link_best"].value_counts() > 1).sum()),
        "figshare_slices_matched": int(matched["link_best"].nunique()),
        "scores": {
            "matched_min": float(score[rows["link_status"] == MATCHED].min()) if len(matched) else None,
            "unmatched_max": float(score[rows["link_status"] != MATCHED].max()) if len(unmatched) else None,
            # close calls: a threshold moved by 0.05 would change these
            "near_threshold": int(((score >= cfg.min_score - 0.05) & (score < cfg.min_score + 0.05)).sum()),
        },
        # figshare slices are square; a non-square image left unmatched may be a crop the matcher cannot see
        "unmatched_non_square": None if square is None else int((~square[rows["link_status"] != MATCHED]).sum()),
        "leakage": {"all_images": leakage(out)},
    }
    if "dedup_status" in out.columns:  # what the paper's pipeline kept
        metrics["leakage"]["after_dedup"] = leakage(out[out["dedup_status"] == "keep"])
    return metrics
