"""Classification metrics and the statistics the paper did not report (beyond paper §6.2).

mean ± std over seeds (sample std, ddof=1, as the paper's "avg with std"), a percentile bootstrap 95%
CI over test images, and an exact McNemar test of two classifiers on the same test images. No scipy or
statsmodels: the binomial tail is summed exactly with integers.
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


def report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix of one run."""
    k = len(classes)
    cm = confusion(y_true, y_pred, k)
    p, r, f = _prf(cm)
    return {
        ACCURACY: float(np.trace(cm) / max(1, cm.sum())),
        MACRO_PRECISION: float(p.mean()),
        MACRO_RECALL: float(r.mean()),
        MACRO_F1: float(f.mean()),
        "per_class": {c: {PRECISION: float(p[i]), RECALL: float(r[i]), F1: float(f[i]), "support": int(cm[i].sum())}
                      for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarize(runs: Sequence[dict], classes: Sequence[str]) -> dict:
    """mean ± std over seeds of every number in `report`; the confusion matrix as mean row-normalised rates."""
    out: dict = {}
    for key in (ACCURACY, MACRO_PRECISION, MACRO_RECALL, MACRO_F1):
        out[key] = mean_std([r[key] for r in runs])
    out["per_class"] = {
        c: {m: mean_std([r["per_class"][c][m] for r in runs]) for m in (PRECISION, RECALL, F1)} for c in classes
    }
    cms = np.asarray([r["confusion"] for r in runs], dtype=float)
    rates = cms / np.maximum(cms.sum(axis=-1, keepdims=True), 1)
    out["confusion_rate_mean"] = np.round(rates.mean(axis=0), 4).tolist()
    return out


def bootstrap_ci(y_true: np.ndarray, preds: Sequence[np.ndarray], k: int, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap CI of the seed-averaged accuracy and macro F1, resampling test images.

    Every resample draws the same test images for all seeds' predictions (they are paired).
    """
    y_true = np.asarray(y_true)
    preds = [np.asarray(p) for p in preds]
    n = len(y_true)
    if n_boot <= 0 or n == 0:
        return {ACCURACY: [math.nan, math.nan], MACRO_F1: [math.nan, math.nan]}
    rng = np.random.default_rng(seed)
    acc = np.zeros(n_boot)
    f1 = np.zeros(n_boot)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        t = y_true[idx]
        for p in preds:
            cells = (np.arange(b)[:, None] * k * k + t * k + p[idx]).ravel()
            cm = np.bincount(cells, minlength=b * k * k).reshape(b, k, k)
            acc[start:start + b] += np.trace(cm, axis1=1, axis2=2) / n
            f1[start:start + b] += _prf(cm)[2].mean(axis=-1)
    acc /= len(preds)
    f1 /= len(preds)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {ACCURACY: np.percentile(acc, [lo, hi]).tolist(), MACRO_F1: np.percentile(f1, [lo, hi]).tolist()}


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
