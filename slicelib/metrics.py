"""Metrics for brain-age regression and diagnosis classification, always beside a baseline.

Every metric function returns a plain ``dict`` of JSON-serialisable numbers (``None`` where a
metric is undefined, e.g. ROC AUC when only one class is present). The model's figures and a
trivial baseline's figures sit side by side under keys ``<name>`` and ``baseline_<name>``:

- regression baseline: predict the *training* mean target for everybody;
- classification baseline: predict the *training* majority class for everybody (its ROC AUC is
  0.5 by definition: a constant score ranks no subject above another).

Brain-age gap bias correction (``fit_age_bias`` / ``correct_age_bias``): brain-age models
regress towards the mean (the young look older, the old look younger), so the raw gap
``pred - age`` correlates negatively with age. We use the linear correction of Beheshti et al.
(2019) and de Lange & Cole (2020): on the *validation* set fit ``pred = a * age + b`` by least
squares, then on any other set ``corrected_pred = pred + age - (a * age + b)``, i.e. subtract
the gap expected for that age. (The alternative of Cole et al. 2018, ``(pred - b) / a``,
amplifies noise when ``a`` is small; we do not use it.) The correction uses the true age,
so corrected MAE is not a fair accuracy figure; it is reported for the gap analysis only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import expit, softmax

from slicelib.utils import pearson_r

__all__ = [
    "regression_metrics",
    "classification_metrics",
    "fit_age_bias",
    "correct_age_bias",
    "brain_age_gap",
    "compute_metrics",
    "primary_metric",
    "to_jsonable",
]


def _float(x) -> float | None:
    """Convert to a Python float, mapping NaN/inf to ``None`` (JSON null)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _as_1d(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: metrics need at least one subject")
    return arr


def regression_metrics(y_true, y_pred, baseline: float) -> dict:
    """Regression metrics of the model and of a constant baseline.

    Args:
        y_true: array-like [N], true targets (e.g. age in years).
        y_pred: array-like [N], predictions in the same unit.
        baseline: the constant prediction of the baseline (the training-set mean, same unit).

    Returns:
        dict with ``n``, ``mae``, ``rmse`` (target unit), ``pearson_r``, ``r2`` (unitless) and
        ``baseline_mae``, ``baseline_rmse``, ``baseline_r2`` (``baseline_pearson_r`` is ``None``:
        a constant has no correlation). ``r2`` is ``None`` for fewer than 2 subjects.
    """
    from sklearn import metrics as skm  # imported here: sklearn takes seconds to import

    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    b = np.full_like(t, float(baseline))
    out = {"n": int(t.size)}
    for prefix, pred in (("", p), ("baseline_", b)):
        out[prefix + "mae"] = _float(skm.mean_absolute_error(t, pred))
        out[prefix + "rmse"] = _float(math.sqrt(skm.mean_squared_error(t, pred)))
        out[prefix + "r2"] = _float(skm.r2_score(t, pred)) if t.size >= 2 else None
    out["pearson_r"] = pearson_r(t, p)
    out["baseline_pearson_r"] = None
    return out


def fit_age_bias(age, pred) -> tuple[float, float]:
    """Fit the linear age bias ``pred = a * age + b`` (least squares), normally on validation.

    Args:
        age: array-like [N], true ages (years).
        pred: array-like [N], predicted ages (years).

    Returns:
        (a, b): slope (unitless) and intercept (years). With fewer than 2 distinct ages the fit
        is undefined and the identity (1.0, 0.0) is returned, i.e. no correction.
    """
    x = _as_1d(age, "age")
    y = _as_1d(pred, "pred")
    if x.size < 2 or np.ptp(x) == 0:
        return 1.0, 0.0
    a, b = np.polyfit(x, y, deg=1)
    return float(a), float(b)


def correct_age_bias(age, pred, a: float, b: float) -> np.ndarray:
    """Apply the linear age-bias correction (Beheshti 2019 / de Lange & Cole 2020).

    ``corrected = pred + age - (a * age + b)``: the gap expected at that age is removed.

    Args:
        age: array-like [N], true ages (years).
        pred: array-like [N], predicted ages (years).
        a, b: slope and intercept from :func:`fit_age_bias` (fitted on validation).

    Returns:
        np.ndarray float64 [N], corrected predicted ages (years).
    """
    x = _as_1d(age, "age")
    y = _as_1d(pred, "pred")
    return y + x - (a * x + b)


def brain_age_gap(age, pred, val_age=None, val_pred=None) -> dict:
    """Brain-age gap (``pred - age``, years) before and after the linear bias correction.

    Args:
        age, pred: array-like [N], true and predicted ages (years) of the evaluated set.
        val_age, val_pred: array-like [M], the validation set on which the correction is
            fitted. If omitted, no correction is fitted (``bias_slope`` is ``None``).

    Returns:
        dict with ``gap_mean``, ``gap_sd`` (years), ``gap_age_r`` (Pearson r of gap with age,
        typically negative before correction), and when validation data is given:
        ``bias_slope``, ``bias_intercept`` (years), ``corrected_gap_mean``, ``corrected_gap_sd``,
        ``corrected_gap_age_r``, ``corrected_mae`` (years; uses true age, not an accuracy figure).
    """
    x = _as_1d(age, "age")
    y = _as_1d(pred, "pred")
    gap = y - x
    out = {
        "gap_mean": _float(gap.mean()),
        "gap_sd": _float(gap.std(ddof=1)) if gap.size > 1 else None,
        "gap_age_r": pearson_r(gap, x),
        "bias_slope": None,
        "bias_intercept": None,
    }
    if val_age is None or val_pred is None:
        return out
    a, b = fit_age_bias(val_age, val_pred)
    corrected = correct_age_bias(x, y, a, b)
    cgap = corrected - x
    out.update(
        bias_slope=_float(a),
        bias_intercept=_float(b),
        corrected_gap_mean=_float(cgap.mean()),
        corrected_gap_sd=_float(cgap.std(ddof=1)) if cgap.size > 1 else None,
        corrected_gap_age_r=pearson_r(cgap, x),
        corrected_mae=_float(np.abs(cgap).mean()),
    )
    return out


def classification_metrics(
    y_true, output, majority_class: int, num_classes: int | None = None
) -> dict:
    """Classification metrics of the model and of the majority-class baseline.

    Args:
        y_true: array-like [N] of integer class labels in ``0 .. C-1``.
        output: the model's raw output: logits [N] for binary (class 1 = positive; decision at
            logit 0, i.e. probability 0.5), or logits [N, C] for multiclass.
        majority_class: the training set's most frequent class (the baseline's prediction).
        num_classes: C; defaults to 2 for 1-D ``output`` and to ``output.shape[1]`` otherwise.

    Returns:
        dict with ``n``, ``accuracy``, ``balanced_accuracy``, ``auc`` (ROC AUC; binary, or
        one-vs-rest macro for multiclass; ``None`` if a class is absent from ``y_true``),
        ``confusion_matrix`` (C x C nested list, rows = true class, columns = predicted), and
        ``baseline_accuracy``, ``baseline_balanced_accuracy``, ``baseline_auc`` (0.5 when
        defined), ``baseline_confusion_matrix``.
    """
    from sklearn import metrics as skm  # imported here: sklearn takes seconds to import

    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    z = np.asarray(output, dtype=np.float64)
    if t.size == 0:
        raise ValueError("y_true is empty: metrics need at least one subject")
    if z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 1):
        z = z.reshape(-1)
        c = num_classes or 2
        prob = expit(z)  # (N,) P(class 1)
        pred = (z > 0).astype(np.int64)
    else:
        c = num_classes or z.shape[1]
        prob = softmax(z, axis=1)  # (N, C)
        pred = prob.argmax(axis=1)
    if len(pred) != t.size:
        raise ValueError(f"y_true has {t.size} values but the output has {len(pred)} rows")
    labels = list(range(c))
    base = np.full_like(t, int(majority_class))
    present = np.unique(t)
    out: dict = {"n": int(t.size)}
    for prefix, p in (("", pred), ("baseline_", base)):
        out[prefix + "accuracy"] = _float(skm.accuracy_score(t, p))
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected
            warnings.simplefilter("ignore", UserWarning)
            # mean recall over the classes present in y_true
            out[prefix + "balanced_accuracy"] = _float(skm.balanced_accuracy_score(t, p))
        out[prefix + "confusion_matrix"] = skm.confusion_matrix(t, p, labels=labels).tolist()
    auc = None
    if len(present) == c:
        if c == 2:
            auc = _float(skm.roc_auc_score(t, prob if prob.ndim == 1 else prob[:, 1]))
        else:
            auc = _float(skm.roc_auc_score(t, prob, multi_class="ovr", labels=labels))
    out["auc"] = auc
    out["baseline_auc"] = 0.5 if auc is not None else None
    return out


def compute_metrics(task: str, y_true, output, train_stats: dict) -> dict:
    """Dispatch to the regression or classification metrics with the training-set baseline.

    Args:
        task: "regression" | "binary" | "multiclass".
        y_true: array-like [N] of targets (years) or integer labels.
        output: model output, [N] (years or binary logits) or [N, C] (multiclass logits).
        train_stats: dict with ``mean`` (regression) or ``majority_class`` and ``num_classes``
            (classification), as stored by :func:`slicelib.train.train` in the run config.

    Returns:
        dict of metrics (see :func:`regression_metrics` / :func:`classification_metrics`).
    """
    if task == "regression":
        return regression_metrics(y_true, output, baseline=train_stats["mean"])
    if task in ("binary", "multiclass"):
        return classification_metrics(
            y_true,
            output,
            majority_class=train_stats["majority_class"],
            num_classes=train_stats.get("num_classes"),
        )
    raise ValueError(f"unknown task {task!r}; use 'regression', 'binary' or 'multiclass'")


def primary_metric(task: str) -> tuple[str, str]:
    """The headline metric of a task and its direction.

    Returns:
        (name, mode): ("mae", "min") for regression, ("balanced_accuracy", "max") otherwise.
    """
    return ("mae", "min") if task == "regression" else ("balanced_accuracy", "max")


def to_jsonable(obj):
    """Recursively convert numpy scalars/arrays and non-finite floats for ``json.dump``.

    Returns:
        the same structure with Python ints/floats/lists; NaN and inf become ``None``.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _float(obj)
    return obj
