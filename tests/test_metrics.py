"""Metrics: regression, classification, brain-age gap correction, baselines beside the model."""

import json

import numpy as np
import pytest

from slicelib import metrics as M


def test_regression_metrics_and_baseline():
    y = np.array([20.0, 40.0, 60.0, 80.0])
    pred = y + np.array([1.0, -1.0, 2.0, -2.0])
    r = M.regression_metrics(y, pred, baseline=50.0)
    assert r["n"] == 4
    assert r["mae"] == pytest.approx(1.5)
    assert r["rmse"] == pytest.approx(np.sqrt(2.5))
    assert r["baseline_mae"] == pytest.approx(20.0)
    assert r["baseline_r2"] == pytest.approx(0.0)  # the mean of y: R2 exactly 0
    assert r["pearson_r"] > 0.99 and r["r2"] > 0.99
    assert r["baseline_pearson_r"] is None
    json.dumps(r)  # JSON-serialisable


def test_regression_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        M.regression_metrics([1, 2, 3], [1, 2], baseline=0)


def test_age_bias_correction_removes_regression_to_the_mean():
    rng = np.random.default_rng(0)
    age_val, age_test = rng.uniform(20, 90, 200), rng.uniform(20, 90, 200)
    # a model that shrinks towards 55 years: pred = 0.6 * age + 22 + noise
    pred_val = 0.6 * age_val + 22 + rng.normal(0, 2, 200)
    pred_test = 0.6 * age_test + 22 + rng.normal(0, 2, 200)
    a, b = M.fit_age_bias(age_val, pred_val)
    assert a == pytest.approx(0.6, abs=0.05) and b == pytest.approx(22, abs=3)
    g = M.brain_age_gap(age_test, pred_test, age_val, pred_val)
    assert g["gap_age_r"] < -0.9  # raw gap strongly depends on age
    assert abs(g["corrected_gap_age_r"]) < 0.2  # corrected gap does not
    assert abs(g["corrected_gap_mean"]) < 1.0
    corrected = M.correct_age_bias(age_test, pred_test, a, b)
    assert np.allclose(corrected - age_test, pred_test - (a * age_test + b))
    assert M.brain_age_gap(age_test, pred_test)["bias_slope"] is None  # no val: no correction


def test_binary_classification_metrics_and_baseline():
    y = np.array([0, 0, 0, 0, 1, 1])
    logits = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])  # one false positive
    r = M.classification_metrics(y, logits, majority_class=0)
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert r["auc"] == pytest.approx(1.0)
    assert r["confusion_matrix"] == [[3, 1], [0, 2]]
    assert r["baseline_accuracy"] == pytest.approx(4 / 6)
    assert r["baseline_balanced_accuracy"] == pytest.approx(0.5)
    assert r["baseline_auc"] == 0.5
    assert r["baseline_confusion_matrix"] == [[4, 0], [2, 0]]


def test_multiclass_and_single_class_auc():
    y = np.array([0, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 2, 1]] * 3.0  # last one wrong
    r = M.classification_metrics(y, logits, majority_class=2)
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert 0.5 < r["auc"] <= 1.0
    one = M.classification_metrics([1, 1], [0.3, 2.0], majority_class=1)
    assert one["auc"] is None and one["baseline_auc"] is None  # undefined with one class


def test_compute_metrics_dispatch_and_json():
    r = M.compute_metrics("regression", [1, 2], [1, 2], {"mean": 1.5})
    assert r["mae"] == 0 and r["baseline_mae"] == 0.5
    c = M.compute_metrics("binary", [0, 1], [-1, 1], {"majority_class": 0, "num_classes": 2})
    assert c["balanced_accuracy"] == 1.0
    with pytest.raises(ValueError, match="unknown task"):
        M.compute_metrics("ranking", [1], [1], {})
    assert M.to_jsonable({"a": np.float32(np.nan), "b": np.arange(2)}) == {"a": None, "b": [0, 1]}
    assert M.primary_metric("binary") == ("balanced_accuracy", "max")


def test_balanced_accuracy_ignores_classes_only_predicted():
    # class 2 is predicted once but absent from y_true: the mean recall is over classes 0 and 1
    y = np.array([0, 0, 1, 1])
    logits = np.eye(3)[[0, 2, 1, 1]]
    r = M.classification_metrics(y, logits, majority_class=0, num_classes=3)
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["auc"] is None  # class 2 absent from y_true: one-vs-rest AUC undefined


def test_bootstrap_ci_covers_the_metric_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 200)
    pred = y + rng.normal(0, 5, 200)
    lo, hi = M.bootstrap_ci(y, pred, "mae", n_boot=2000, seed=0)
    mae = np.abs(y - pred).mean()
    assert lo < mae < hi and hi - lo < 2.0  # the SE of a mean of 200 |errors| is ~0.2 years
    assert M.bootstrap_ci(y, pred, "mae", seed=0) == (lo, hi)
    assert M.bootstrap_ci(y, pred, "mae", seed=1) != (lo, hi)
    # a callable gives the same interval as the vectorised MAE
    assert M.bootstrap_ci(y, pred, lambda t, p: np.abs(t - p).mean(), seed=0) == pytest.approx(
        (lo, hi)
    )
    wide = M.bootstrap_ci(y[:20], pred[:20], "mae", seed=0)
    assert wide[1] - wide[0] > hi - lo  # fewer subjects, wider interval
    assert M.bootstrap_ci([1.0], [2.0], "mae") == (None, None)


def test_classification_cis():
    rng = np.random.default_rng(1)
    y = np.arange(100) % 2
    logits = 2.0 * (y - 0.5) + rng.normal(0, 1.0, 100)  # AUC about 0.92
    auc = M.classification_metrics(y, logits, majority_class=0)["auc"]
    lo, hi = M.bootstrap_ci(y, logits, "auc", n_boot=500)
    assert lo < auc < hi <= 1.0
    cis = M.metric_cis("binary", y, logits, {"majority_class": 0}, n_boot=300)
    assert cis["baseline_balanced_accuracy_ci95"] == [0.5, 0.5]
    assert cis["balanced_accuracy_ci95"][0] > 0.6
    three = np.eye(3)[np.arange(90) % 3] * 3 + rng.normal(0, 1, (90, 3))  # (N, C) logits
    lo3, hi3 = M.bootstrap_ci(np.arange(90) % 3, three, "auc", n_boot=200)
    assert 0.8 < lo3 < hi3 <= 1.0


def test_ridge_baseline_learns_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30))
    y = 50 + 10 * x[:, 0] - 5 * x[:, 1] + rng.normal(0, 1, 120)
    r = M.ridge_baseline(x[:80], y[:80], x[80:], y[80:], n_boot=200)
    base = np.abs(y[80:] - y[:80].mean()).mean()
    assert r["ridge_mae"] < 0.2 * base and r["ridge_pearson_r"] > 0.95
    lo, hi = r["ridge_mae_ci95"]
    assert lo < r["ridge_mae"] < hi and r["ridge_n_features"] == 30


def test_vectorised_bootstrap_equals_the_sklearn_metrics():
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=40) < 0.3).astype(int)
    logits = np.round(y + rng.normal(0, 1, 40), 1)  # rounded: ties too
    for name in ("auc", "balanced_accuracy"):
        fast = M.bootstrap_ci(y, logits, name, n_boot=200, seed=3)
        slow = M.bootstrap_ci(y, logits, lambda t, p, f=M.METRICS[name]: f(t, p), 200, 3)
        assert fast == pytest.approx(slow, abs=1e-12), name


# -----------------------------------------------------------------------------
# paired statistics (two predictors, the same subjects)

Y6 = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
A6 = Y6 + np.array([1.0, -2.0, 3.0, -1.0, 2.0, 0.0])  # |errors| 1 2 3 1 2 0: MAE 1.5
B6 = Y6 + np.array([3.0, 2.0, -4.0, 1.0, -5.0, 2.0])  # |errors| 3 2 4 1 5 2: MAE 17/6


def test_paired_difference_matches_a_direct_computation():
    from scipy import stats

    r = M.paired_difference(Y6, A6, B6, n_boot=4000, seed=0)
    d = np.array([-2.0, 0.0, -1.0, 0.0, -3.0, -2.0])  # |err a| - |err b|, by hand
    assert r["n"] == 6
    assert r["mae_a"] == pytest.approx(1.5) and r["mae_b"] == pytest.approx(17 / 6)
    assert r["diff"] == pytest.approx(-8 / 6)  # = MAE(a) - MAE(b)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue)
    ea, eb = np.array([1, 2, 3, 1, 2, 0.0]), np.array([3, 2, 4, 1, 5, 2.0])
    assert r["ttest_p"] == pytest.approx(stats.ttest_rel(ea, eb).pvalue)
    # the interval against an independent percentile bootstrap of the subjects
    idx = np.random.default_rng(123).integers(0, 6, size=(20000, 6))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    assert r["diff_lo"] == pytest.approx(lo, abs=0.2) and r["diff_hi"] == pytest.approx(hi, abs=0.2)
    assert r["diff_lo"] < r["diff"] < r["diff_hi"] <= 0.0
    assert M.paired_difference(Y6, A6, B6, n_boot=4000, seed=0) == r  # seeded
    swapped = M.paired_difference(Y6, B6, A6, n_boot=4000, seed=0)
    assert swapped["diff"] == pytest.approx(-r["diff"])
    assert swapped["wilcoxon_p"] == pytest.approx(r["wilcoxon_p"])
    json.dumps(r)


def test_paired_difference_undefined_cases_and_bad_input():
    same = M.paired_difference(Y6, A6, A6)
    assert same["diff"] == 0 and same["diff_lo"] is None and same["wilcoxon_p"] is None
    with pytest.raises(ValueError, match="same subjects.*pred_b 5"):
        M.paired_difference(Y6, A6, B6[:5])
    with pytest.raises(ValueError, match="NaN"):
        M.paired_difference(Y6, A6, np.r_[B6[:5], np.nan])


def test_regression_cis_match_direct_values():
    from scipy import stats

    r = M.regression_cis(Y6, B6, n_boot=500, seed=0)
    assert r["n"] == 6 and r["mae"] == pytest.approx(17 / 6)
    assert r["r"] == pytest.approx(stats.pearsonr(Y6, B6).statistic)
    assert r["mae_lo"] <= r["mae"] <= r["mae_hi"] and r["r_lo"] <= r["r"] <= r["r_hi"] <= 1.0
    assert (r["mae_lo"], r["mae_hi"]) == M.bootstrap_ci(Y6, B6, "mae", n_boot=500, seed=0)
    assert M.regression_cis(Y6, np.full(6, 45.0))["r"] is None  # a constant has no r


def test_fold_bias_correction_uses_only_the_other_folds():
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 30)
    pred = 0.6 * age + 20 + rng.normal(0, 2, 30)
    fold = np.repeat([0, 1, 2], 10)
    corrected, coef = M.fold_bias_correction(age, pred, fold)
    for k in range(3):
        a, b = np.polyfit(age[fold != k], pred[fold != k], 1)
        assert np.allclose(coef[fold == k], [a, b])
        assert np.allclose(corrected[fold == k], pred[fold == k] + age[fold == k] * (1 - a) - b)
    moved = pred.copy()
    moved[fold == 0] += 50  # fold 0's own predictions do not enter fold 0's correction
    _, coef2 = M.fold_bias_correction(age, moved, fold)
    assert np.allclose(coef2[fold == 0], coef[fold == 0])
    with pytest.raises(ValueError, match="at least 2 folds"):
        M.fold_bias_correction(age, pred, np.zeros(30))
