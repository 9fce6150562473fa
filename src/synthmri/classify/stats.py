"""Classification metrics and the statistics the paper did not report (beyond paper §6.2).

mean ± std over seeds (sample std, ddof=1, as the paper's "avg with std"), a percentile bootstrap 95%
CI over test images, and an exact McNemar test of two classifiers on the same test images. No scipy or
statsmodels: the binomial tail is summed exactly with integers.

Every scalar metric is computed from confusion matrices (and, for ROC-AUC, from per-class
probabilities with per-image resample counts) in one vectorised function, so a run's value and its
bootstrap resamples come from the same code; tests check each against scikit-learn. Beyond the paper's
accuracy and macro P/R/F1 (the SD-Turbo study's list): support-weighted P/R/F1, Matthews correlation and
the macro one-vs-rest ROC-AUC (scikit-learn's `multi_class="ovr"` default); for a 2-class task also
sensitivity and specificity of the positive class and its ROC-AUC (the GAN study's tumour vs normal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# metric names: constants, not literals scattered through the code
ACCURACY = "accuracy"
MACRO_PRECISION = "macro_precision"
MACRO_RECALL = "macro_recall"
MACRO_F1 = "macro_f1"
PRECISION, RECALL, F1 = "precision", "recall", "f1"
WEIGHTED_PRECISION = "weighted_precision"  # per-class values averaged with weights = test images per class
WEIGHTED_RECALL = "weighted_recall"  # equals accuracy, by definition; reported because the studies list it
WEIGHTED_F1 = "weighted_f1"
MCC = "mcc"  # Matthews correlation, multi-class (Gorodkin's R_K, as scikit-learn)
ROC_AUC_OVR = "roc_auc_ovr"  # mean over classes of the class-vs-rest ROC-AUC of its probability
SENSITIVITY, SPECIFICITY, ROC_AUC = "sensitivity", "specificity", "roc_auc"  # 2-class tasks, of the positive class
POSITIVE_CLASS = "positive_class"
# scalar metrics with mean ± std over seeds and a bootstrap CI, in the order the metrics file lists them
SCALARS = (ACCURACY, MACRO_PRECISION, MACRO_RECALL, MACRO_F1, WEIGHTED_PRECISION, WEIGHTED_RECALL, WEIGHTED_F1, MCC)
NORMAL_CLASSES = ("normal", "notumor")  # a 2-class task's negative class when classify.positive_class is null


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted class."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 from confusion matrices (..., k, k); 0 where undefined (sklearn's zero_division=0)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    pred = cm.sum(axis=-2).astype(float)
    true = cm.sum(axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred > 0, tp / pred, 0.0)
        r = np.where(true > 0, tp / true, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return p, r, f


def positive_index(classes: Sequence[str], positive: str | None) -> int | None:
    """The positive class of a 2-class task (classify.positive_class, else the class not named normal or notumor);
    None for other tasks. Called before any training, so a bad setting stops the stage early."""
    classes = list(classes)
    if len(classes) != 2:
        if positive is not None:
            raise ValueError(f"classify.positive_class: {positive!r} applies to 2-class tasks; the classes are {classes}")
        return None
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"classify.positive_class: {positive!r} is not one of the classes {classes}")
        return classes.index(positive)
    rest = [i for i, c in enumerate(classes) if c not in NORMAL_CLASSES]
    if len(rest) != 1:
        raise ValueError(f"classify.positive_class: set it for the 2-class task {classes} (null takes the class not "
                         f"named {' or '.join(NORMAL_CLASSES)}, and here that is not exactly one)")
    return rest[0]


def cm_metrics(cm: np.ndarray, positive: int | None = None) -> dict[str, np.ndarray]:
    """Every confusion-matrix metric of (..., k, k) counts, batched over the leading axes.

    Where a value is undefined it is 0, as scikit-learn's zero_division=0 (and its MCC) give.
    """
    cm = np.asarray(cm)
    p, r, f = _prf(cm)
    true = cm.sum(axis=-1).astype(float)
    pred = cm.sum(axis=-2).astype(float)
    n = true.sum(axis=-1)
    correct = np.trace(cm, axis1=-2, axis2=-1).astype(float)
    nz = np.maximum(n, 1)
    cov_tp = correct * n - (true * pred).sum(axis=-1)
    cov = (n**2 - (pred * pred).sum(axis=-1)) * (n**2 - (true * true).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        mcc = np.where(cov > 0, cov_tp / np.sqrt(np.where(cov > 0, cov, 1)), 0.0)
    out = {
        ACCURACY: correct / nz,
        MACRO_PRECISION: p.mean(axis=-1), MACRO_RECALL: r.mean(axis=-1), MACRO_F1: f.mean(axis=-1),
        WEIGHTED_PRECISION: (p * true).sum(axis=-1) / nz, WEIGHTED_RECALL: (r * true).sum(axis=-1) / nz,
        WEIGHTED_F1: (f * true).sum(axis=-1) / nz,
        MCC: mcc,
    }
    if positive is not None:  # recall of the positive class, recall of the other one
        out[SENSITIVITY], out[SPECIFICITY] = r[..., positive], r[..., 1 - positive]
    return out


def auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC of `scores` for the boolean labels `positive` (n,), for each row of per-image counts `weights` (b, n).

    The Mann-Whitney form: P(score of a positive > score of a negative) + half P(tie), each image
    counted as often as its weight (a bootstrap resample's counts); NaN where a row has no positive
    or no negative image.
    """
    scores, positive = np.asarray(scores), np.asarray(positive, dtype=bool)
    w = np.ones((1, len(scores))) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores, ascending
    ws = w[:, order]
    pos_g = np.add.reduceat(ws * positive[order], starts, axis=1)
    neg_g = np.add.reduceat(ws * ~positive[order], starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    num = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    den = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auc_metrics(y_true: np.ndarray, proba: np.ndarray, positive: int | None = None,
                weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Macro one-vs-rest ROC-AUC of probabilities `proba` (n, k) (and the positive class's for a 2-class task)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    per_class = np.stack([auc(proba[:, c], y_true == c, weights) for c in range(proba.shape[1])])
    out = {ROC_AUC_OVR: per_class.mean(axis=0)}  # NaN if a class is absent, where scikit-learn raises
    if positive is not None:
        out[ROC_AUC] = per_class[positive]
    return out


def report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], proba: np.ndarray | None = None,
           positive: int | None = None) -> dict:
    """Every scalar metric, per-class precision/recall/F1 and the confusion matrix of one run.

    `proba` (n, k): class probabilities, columns in `classes` order (adds the ROC-AUCs); `positive`:
    the positive class's index in a 2-class task (adds sensitivity and specificity).
    """
    k = len(classes)
    cm = confusion(y_true, y_pred, k)
    p, r, f = _prf(cm)
    scalars = cm_metrics(cm, positive) | ({} if proba is None else auc_metrics(y_true, proba, positive))
    out: dict = {key: float(np.squeeze(v)) for key, v in scalars.items()}
    if positive is not None:
        out[POSITIVE_CLASS] = classes[positive]
    out["per_class"] = {c: {PRECISION: float(p[i]), RECALL: float(r[i]), F1: float(f[i]), "support": int(cm[i].sum())}
                        for i, c in enumerate(classes)}
    out["confusion"] = cm.tolist()
    return out


def mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarize(runs: Sequence[dict], classes: Sequence[str]) -> dict:
    """mean ± std over seeds of every number in `report`; the confusion matrix as mean row-normalised rates
    (and, for a 2-class task, each seed's counts of true/false positives/negatives)."""
    out: dict = {}
    for key in SCALARS + (ROC_AUC_OVR, SENSITIVITY, SPECIFICITY, ROC_AUC):
        if key in runs[0]:
            out[key] = mean_std([r[key] for r in runs])
    out["per_class"] = {
        c: {m: mean_std([r["per_class"][c][m] for r in runs]) for m in (PRECISION, RECALL, F1)} for c in classes
    }
    cms = np.asarray([r["confusion"] for r in runs], dtype=float)
    rates = cms / np.maximum(cms.sum(axis=-1, keepdims=True), 1)
    out["confusion_rate_mean"] = np.round(rates.mean(axis=0), 4).tolist()
    if POSITIVE_CLASS in runs[0]:
        pos = list(classes).index(runs[0][POSITIVE_CLASS])
        out[POSITIVE_CLASS] = runs[0][POSITIVE_CLASS]
        out["confusion_binary"] = {str(r.get("seed", i)): {
            "tp": r["confusion"][pos][pos], "fn": r["confusion"][pos][1 - pos],
            "fp": r["confusion"][1 - pos][pos], "tn": r["confusion"][1 - pos][1 - pos]} for i, r in enumerate(runs)}
    return out


def bootstrap_ci(y_true: np.ndarray, preds: Sequence[np.ndarray], k: int, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, probas: Sequence[np.ndarray] | None = None,
                 positive: int | None = None) -> dict[str, list[float]]:
    """Percentile bootstrap CI of every seed-averaged scalar metric, resampling test images.

    Every resample draws the same test images for all seeds' predictions (they are paired). With
    `probas` (per seed, (n, k) in class order) the ROC-AUCs get CIs too, over the resamples where
    they are defined (every class present).
    """
    y_true = np.asarray(y_true)
    preds = [np.asarray(p) for p in preds]
    n = len(y_true)
    keys = list(cm_metrics(np.zeros((k, k), int), positive))
    if probas is not None:
        keys += list(auc_metrics(np.zeros(1, int), np.zeros((1, k)), positive))
    if n_boot <= 0 or n == 0:
        return {key: [math.nan, math.nan] for key in keys}
    rng = np.random.default_rng(seed)
    sums = {key: np.zeros(n_boot) for key in keys}
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        t = y_true[idx]
        counts = None
        if probas is not None:  # how often each test image is in each resample
            counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
        for i, p in enumerate(preds):
            cells = (np.arange(b)[:, None] * k * k + t * k + p[idx]).ravel()
            cm = np.bincount(cells, minlength=b * k * k).reshape(b, k, k)
            values = cm_metrics(cm, positive)
            if counts is not None:
                values |= auc_metrics(y_true, probas[i], positive, counts)
            for key, v in values.items():
                sums[key][start:start + b] += v
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for key, v in sums.items():
        v = v / len(preds)
        v = v[np.isfinite(v)]
        out[key] = np.percentile(v, [lo, hi]).tolist() if len(v) else [math.nan, math.nan]
    return out


def binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n trials at p = 1/2: min(1, 2 * P(X <= min(k, n-k)))."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; Python floats the final ratio


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact McNemar test: do classifiers A and B err on the same test images at different rates?

    b = A right & B wrong, c = A wrong & B right; under H0 b ~ Binomial(b + c, 1/2).
    """
    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    if not (len(y_true) == len(pred_a) == len(pred_b)):
        raise ValueError("McNemar needs predictions on the same test images")
    a_ok, b_ok = pred_a == y_true, pred_b == y_true
    b = int(np.sum(a_ok & ~b_ok))
    c = int(np.sum(~a_ok & b_ok))
    return {"a_only_correct": b, "b_only_correct": c, "p_value": binom_two_sided_half(b, b + c)}
