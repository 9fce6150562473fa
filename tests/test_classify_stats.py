"""classify.stats against independent computations (scikit-learn, scipy, a plain loop bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from synthmri.classify import stats as S

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def _fake_preds(seed: int, n: int = 200, acc: float = 0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    p = np.where(rng.random(n) < acc, y, rng.integers(0, 4, n))
    return y, p


def test_report_matches_sklearn():
    y, p = _fake_preds(0)
    p[p == 3] = 2  # class 3 never predicted: precision 0 by sklearn's zero_division=0
    r = S.report(y, p, CLASSES)
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    assert r["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert r["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    for i, c in enumerate(CLASSES):
        assert r["per_class"][c]["precision"] == pytest.approx(prec[i])
        assert r["per_class"][c]["recall"] == pytest.approx(rec[i])
        assert r["per_class"][c]["f1"] == pytest.approx(f1[i])
        assert r["per_class"][c]["support"] == sup[i]
    assert r["confusion"] == confusion_matrix(y, p, labels=range(4)).tolist()


def test_mean_std_is_the_sample_std():
    assert S.mean_std([0.93, 0.93, 0.94]) == {"mean": pytest.approx(0.9333333), "std": pytest.approx(np.std([0.93, 0.93, 0.94], ddof=1))}
    assert S.mean_std([0.5]) == {"mean": 0.5, "std": 0.0}


def test_bootstrap_matches_a_plain_loop():
    y, p1 = _fake_preds(1)
    _, p2 = _fake_preds(2)
    ci = S.bootstrap_ci(y, [p1, p2], 4, n_boot=300, seed=7)
    rng = np.random.default_rng(7)
    accs, f1s = [], []
    idx_all = rng.integers(0, len(y), size=(300, len(y)))  # same draws in the same order
    for idx in idx_all:
        accs.append(np.mean([accuracy_score(y[idx], q[idx]) for q in (p1, p2)]))
        f1s.append(np.mean([f1_score(y[idx], q[idx], labels=range(4), average="macro", zero_division=0) for q in (p1, p2)]))
    assert ci["accuracy"] == pytest.approx(np.percentile(accs, [2.5, 97.5]).tolist())
    assert ci["macro_f1"] == pytest.approx(np.percentile(f1s, [2.5, 97.5]).tolist())
    lo, hi = ci["accuracy"]
    assert lo < np.mean([accuracy_score(y, p1), accuracy_score(y, p2)]) < hi


@pytest.mark.parametrize("k, n", [(0, 0), (0, 5), (3, 10), (10, 10), (40, 100), (480, 1000), (7, 31)])
def test_exact_binomial_matches_scipy(k, n):
    expected = 1.0 if n == 0 else binomtest(k, n, 0.5).pvalue
    assert S.binom_two_sided_half(k, n) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_counts_discordant_pairs():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])
    a = np.array([0, 0, 1, 1, 2, 2, 3, 0, 1, 1])  # wrong at 7, 8
    b = np.array([0, 1, 1, 0, 2, 2, 3, 3, 0, 2])  # wrong at 1, 3, 9
    r = S.mcnemar(y, a, b)
    assert (r["a_only_correct"], r["b_only_correct"]) == (3, 2)
    assert r["p_value"] == pytest.approx(binomtest(2, 5, 0.5).pvalue)
    same = S.mcnemar(y, a, a)
    assert same == {"a_only_correct": 0, "b_only_correct": 0, "p_value": 1.0}
    big_y = np.zeros(1000, int)
    assert S.mcnemar(big_y, big_y, np.r_[np.ones(60, int), np.zeros(940, int)])["p_value"] < 1e-15
    with pytest.raises(ValueError, match="same test images"):
        S.mcnemar(y, a, b[:5])


def test_summarize_over_seeds():
    runs = [S.report(*_fake_preds(s), CLASSES) for s in range(3)]
    out = S.summarize(runs, CLASSES)
    assert out["accuracy"]["mean"] == pytest.approx(np.mean([r["accuracy"] for r in runs]))
    assert out["per_class"]["notumor"]["f1"]["std"] == pytest.approx(np.std([r["per_class"]["notumor"]["f1"] for r in runs], ddof=1))
    assert np.allclose(np.sum(out["confusion_rate_mean"], axis=1), 1.0, atol=1e-3)


# ---- the added metrics, each against scikit-learn on fixed predictions (to 1e-12) ------------------------------

from sklearn.metrics import matthews_corrcoef, recall_score, roc_auc_score  # noqa: E402

EXACT = 1e-12


def _fake_proba(y: np.ndarray, k: int, seed: int, decimals: int | None = 2) -> np.ndarray:
    """Class probabilities leaning to the true class; rounded so that scores tie (ROC-AUC's hard case)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(y), k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:
        p = np.round(p, decimals)
        p[:, -1] = 1 - p[:, :-1].sum(1)  # rows still sum to 1 (scikit-learn checks)
    return p


def _sk(y, p, proba=None, k=4):
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=range(k), average="weighted", zero_division=0)
    out = {S.WEIGHTED_PRECISION: prec, S.WEIGHTED_RECALL: rec, S.WEIGHTED_F1: f1, S.MCC: matthews_corrcoef(y, p),
           S.ACCURACY: accuracy_score(y, p), S.MACRO_F1: f1_score(y, p, labels=range(k), average="macro", zero_division=0)}
    if proba is not None:
        out[S.ROC_AUC_OVR] = roc_auc_score(y, proba, multi_class="ovr", labels=range(k))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_added_metrics_equal_sklearn(seed):
    y, p = _fake_preds(seed)
    p[p == 3] = 2  # a class never predicted: its precision is 0 (zero_division=0)
    proba = _fake_proba(y, 4, seed)
    r = S.report(y, p, CLASSES, proba)
    for key, expected in _sk(y, p, proba).items():
        assert abs(r[key] - expected) <= EXACT, key
    assert r[S.WEIGHTED_RECALL] == pytest.approx(r[S.ACCURACY], abs=EXACT)  # by definition
    assert S.SENSITIVITY not in r and S.POSITIVE_CLASS not in r  # 4 classes: no positive class


def test_auc_without_ties_and_mcc_edge_cases_equal_sklearn():
    y, p = _fake_preds(5, n=50)
    proba = _fake_proba(y, 4, 5, decimals=None)
    assert abs(S.report(y, p, CLASSES, proba)[S.ROC_AUC_OVR] - roc_auc_score(y, proba, multi_class="ovr")) <= EXACT
    one = np.zeros_like(y)  # every image predicted as class 0: MCC's denominator is 0, scikit-learn gives 0
    assert S.report(y, one, CLASSES)[S.MCC] == matthews_corrcoef(y, one) == 0.0
    assert S.report(y, y, CLASSES)[S.MCC] == matthews_corrcoef(y, y) == 1.0


def test_binary_task_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.where(rng.random(120) < 0.8, y, 1 - y)
    proba = _fake_proba(y, 2, 3)
    classes = ("normal", "tumor")
    pos = S.positive_index(classes, None)
    assert pos == 1  # the class not named normal
    r = S.report(y, p, classes, proba, pos)
    assert r[S.POSITIVE_CLASS] == "tumor"
    assert abs(r[S.SENSITIVITY] - recall_score(y, p, pos_label=1)) <= EXACT
    assert abs(r[S.SPECIFICITY] - recall_score(y, p, pos_label=0)) <= EXACT
    assert abs(r[S.ROC_AUC] - roc_auc_score(y == 1, proba[:, 1])) <= EXACT
    assert abs(r[S.ROC_AUC_OVR] - roc_auc_score(y, proba[:, 1])) <= EXACT  # two classes: the same curve twice
    for key, expected in _sk(y, p, k=2).items():
        assert abs(r[key] - expected) <= EXACT, key
    cm = confusion_matrix(y, p, labels=[0, 1])
    summary = S.summarize([r | {"seed": 7}], classes)
    assert summary["confusion_binary"] == {"7": {"tp": cm[1, 1], "fn": cm[1, 0], "fp": cm[0, 1], "tn": cm[0, 0]}}
    # the positive class named by the param: sensitivity and specificity swap
    r0 = S.report(y, p, classes, proba, S.positive_index(classes, "normal"))
    assert (r0[S.SENSITIVITY], r0[S.SPECIFICITY]) == (r[S.SPECIFICITY], r[S.SENSITIVITY])
    assert abs(r0[S.ROC_AUC] - roc_auc_score(y == 0, proba[:, 0])) <= EXACT


@pytest.mark.parametrize("classes, positive, match", [
    (("glioma", "meningioma"), None, r"classify.positive_class: set it for the 2-class task"),
    (("normal", "tumor"), "cancer", r"classify.positive_class: 'cancer' is not one of the classes"),
    (CLASSES, "glioma", r"classify.positive_class: 'glioma' applies to 2-class tasks"),
])
def test_positive_class_is_refused_where_it_means_nothing(classes, positive, match):
    with pytest.raises(ValueError, match=match):
        S.positive_index(classes, positive)
    assert S.positive_index(("notumor", "tumor"), None) == 1 and S.positive_index(CLASSES, None) is None


def test_bootstrap_of_every_added_metric_matches_a_plain_sklearn_loop():
    y, p1 = _fake_preds(1, n=120)
    _, p2 = _fake_preds(2, n=120)
    probas = [_fake_proba(y, 4, 1), _fake_proba(y, 4, 2)]
    ci = S.bootstrap_ci(y, [p1, p2], 4, n_boot=40, seed=3, probas=probas)
    assert set(ci) == set(S.SCALARS) | {S.ROC_AUC_OVR}
    draws = np.random.default_rng(3).integers(0, len(y), size=(40, len(y)))  # same draws in the same order
    per = {key: [] for key in _sk(y, p1, probas[0])}
    for idx in draws:
        values = [_sk(y[idx], q[idx], pr[idx]) for q, pr in zip((p1, p2), probas)]
        for key in per:
            per[key].append(np.mean([v[key] for v in values]))
    for key, vals in per.items():
        assert np.allclose(ci[key], np.percentile(vals, [2.5, 97.5]), rtol=0, atol=EXACT), key
    lo, hi = ci[S.MCC]
    assert -1 <= lo < hi <= 1


def test_binary_bootstrap_has_sensitivity_specificity_and_auc():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 80)
    p = np.where(rng.random(80) < 0.8, y, 1 - y)
    proba = _fake_proba(y, 2, 4)
    ci = S.bootstrap_ci(y, [p], 2, n_boot=30, seed=0, probas=[proba], positive=1)
    draws = np.random.default_rng(0).integers(0, 80, size=(30, 80))
    sens = [recall_score(y[i], p[i], pos_label=1) for i in draws]
    auc = [roc_auc_score(y[i] == 1, proba[i, 1]) for i in draws]
    assert np.allclose(ci[S.SENSITIVITY], np.percentile(sens, [2.5, 97.5]), rtol=0, atol=EXACT)
    assert np.allclose(ci[S.ROC_AUC], np.percentile(auc, [2.5, 97.5]), rtol=0, atol=EXACT)
    assert S.SPECIFICITY in ci
