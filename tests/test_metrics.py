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
