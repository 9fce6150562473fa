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
