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
    "train_stats",
    "compute_metrics",
    "bootstrap_ci",
    "metric_cis",
    "ridge_baseline",
    "regression_cis",
    "paired_difference",
    "fold_bias_correction",
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


def train_stats(targets, task: str, num_classes: int | None, class_weights: str = "none") -> dict:
    """Training-set statistics: the baseline predictor, the target scale, class weights.

    Regression: ``n``, ``mean``, ``std`` (target units). Classification: ``n``, ``counts``,
    ``majority_class``, ``num_classes`` and with ``class_weights="balanced"`` one weight per
    class (scikit-learn's "balanced": n / (n_classes x count); 0 for a class with no subject).
    """
    from sklearn.utils.class_weight import compute_class_weight

    t = np.asarray(targets, dtype=np.float64)
    if task == "regression":
        return {"n": int(t.size), "mean": float(t.mean()), "std": float(t.std()) or 1.0}
    y = t.astype(np.int64)
    counts = np.bincount(y, minlength=num_classes or 2)
    stats = dict(n=int(t.size), counts=counts.tolist(), majority_class=int(counts.argmax()))
    stats["num_classes"] = len(counts)
    if class_weights == "balanced":
        present = np.flatnonzero(counts)
        w = np.zeros(len(counts))
        w[present] = compute_class_weight("balanced", classes=present, y=y)
        stats["class_weights"] = [round(float(v), 6) for v in w]
    return stats


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


# -----------------------------------------------------------------------------
# uncertainty: percentile bootstrap over subjects


def _mae(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.abs(t - p).mean())


def _predicted_class(p: np.ndarray) -> np.ndarray:
    """Class from logits: (N,) binary (logit > 0) or (N, C) multiclass (argmax)."""
    return (p > 0).astype(np.int64) if p.ndim == 1 else p.argmax(axis=1)


def _balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(t.astype(np.int64), _predicted_class(p)))


def _auc(t: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC from logits (binary (N,), or (N, C) one-vs-rest macro); None if a class is absent."""
    from sklearn.metrics import roc_auc_score

    t = t.astype(np.int64)
    c = 2 if p.ndim == 1 else p.shape[1]
    if len(np.unique(t)) < c:
        return None
    if p.ndim == 1:
        return float(roc_auc_score(t, p))  # logits rank like probabilities
    return float(roc_auc_score(t, softmax(p, axis=1), multi_class="ovr", labels=list(range(c))))


def _batched_balanced_accuracy(t: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row: labels ``t`` and ``correct`` (bool), both (R, N)."""
    recalls = []
    for c in np.unique(t):
        n_c = (t == c).sum(axis=1)  # (R,)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(n_c > 0, ((t == c) & correct).sum(axis=1) / n_c, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)  # mean recall over the classes present


def _batched_binary_auc(t: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U over ranks, ties averaged); NaN if one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)  # (R, N)
    n1 = t.sum(axis=1)
    n0 = t.shape[1] - n1
    u = (ranks * t).sum(axis=1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


METRICS = {"mae": _mae, "balanced_accuracy": _balanced_accuracy, "auc": _auc}


def bootstrap_ci(
    y_true, y_pred, metric, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of a metric, resampling subjects.

    Args:
        y_true: array-like [N], targets (years) or class labels 0..C-1.
        y_pred: array-like [N] predictions / binary logits, or [N, C] multiclass logits.
        metric: "mae" | "auc" | "balanced_accuracy", or a callable ``f(y_true, y_pred) ->
            float | None`` on numpy arrays (``None`` = undefined on that resample).
        n_boot: resamples (N subjects drawn with replacement each time).
        seed: seeds the resampling (the same seed gives the same interval).
        level: coverage (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``(lo, hi)`` in the metric's unit; ``(None, None)`` for fewer than 2 subjects or when
        the metric is undefined on most resamples (e.g. an AUC with very few of one class).
    """
    f = METRICS[metric] if isinstance(metric, str) else metric
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    n = len(t)
    if n < 2 or len(p) != n:
        return None, None
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, N)
    if f is _mae:  # the common cases vectorised: 2000 resamples in milliseconds
        values = np.abs(t - p)[idx].mean(axis=1)
    elif f is _balanced_accuracy:
        values = _batched_balanced_accuracy(t[idx], (_predicted_class(p) == t)[idx])
    elif f is _auc and p.ndim == 1:
        values = _batched_binary_auc(t[idx], p[idx])
    else:
        values = np.array([np.nan if (v := f(t[i], p[i])) is None else v for i in idx])
    values = values[np.isfinite(values)]
    if len(values) < n_boot / 2:
        return None, None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def metric_cis(task: str, y_true, output, train_stats: dict, n_boot: int = 2000, seed: int = 0):
    """95 % bootstrap intervals of the headline metrics, for the model and the baseline.

    Returns:
        regression: ``mae_ci95``, ``baseline_mae_ci95`` ([lo, hi] years); classification:
        ``auc_ci95``, ``balanced_accuracy_ci95`` and ``baseline_balanced_accuracy_ci95``.
    """
    y = np.asarray(y_true, dtype=np.float64)
    kw = dict(n_boot=n_boot, seed=seed)
    if task == "regression":
        base = np.full_like(y, float(train_stats["mean"]))
        return dict(
            mae_ci95=list(bootstrap_ci(y, output, "mae", **kw)),
            baseline_mae_ci95=list(bootstrap_ci(y, base, "mae", **kw)),
        )
    out, k = np.asarray(output, dtype=np.float64), int(train_stats["majority_class"])
    if out.ndim == 1:  # binary logits: the majority class's sign
        majority = np.full(len(y), 1.0 if k == 1 else -1.0)  # (N,)
    else:
        majority = np.eye(out.shape[1])[np.full(len(y), k)]  # (N, C) one-hot
    return dict(
        auc_ci95=list(bootstrap_ci(y, out, "auc", **kw)),
        balanced_accuracy_ci95=list(bootstrap_ci(y, out, "balanced_accuracy", **kw)),
        baseline_balanced_accuracy_ci95=list(bootstrap_ci(y, majority, "balanced_accuracy", **kw)),
    )


# -----------------------------------------------------------------------------
# several predictors scored on the same subjects: intervals and paired comparisons


def regression_cis(y_true, y_pred, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """MAE and Pearson r of one predictor with percentile bootstrap intervals over subjects.

    Both intervals come from the same ``n_boot`` resamples of the subjects (see
    :func:`bootstrap_ci`; the same seed gives the same intervals).

    Args:
        y_true: array-like [N], true targets (years).
        y_pred: array-like [N], predictions (years).
        n_boot, seed, level: resamples, their seed, the interval's coverage.

    Returns:
        dict with ``n``, ``mae``, ``mae_lo``, ``mae_hi`` (years), ``r``, ``r_lo``, ``r_hi``
        (``None`` where undefined, e.g. r of a constant prediction).
    """
    t, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    mae_lo, mae_hi = bootstrap_ci(t, p, "mae", **kw)
    r_lo, r_hi = bootstrap_ci(t, p, pearson_r, **kw)
    return dict(
        n=int(t.size), mae=_mae(t, p), mae_lo=mae_lo, mae_hi=mae_hi,
        r=pearson_r(t, p), r_lo=r_lo, r_hi=r_hi,
    )  # fmt: skip


def paired_difference(
    y_true, pred_a, pred_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """Paired comparison of two predictors scored on the same subjects.

    The per-subject difference of absolute errors ``d_i = |a_i - y_i| - |b_i - y_i|`` (years;
    negative: ``a`` is closer to the truth). Its mean equals ``MAE(a) - MAE(b)``; its interval
    is a percentile bootstrap over subjects (``scipy.stats.bootstrap`` of the mean of ``d``:
    resampling ``d`` resamples each subject with both of its errors, i.e. paired). The tests
    are ``scipy.stats.wilcoxon(d)`` (signed ranks, two-sided) and
    ``scipy.stats.ttest_rel(|a - y|, |b - y|)`` (two-sided).

    Args:
        y_true: array-like [N], true targets (years).
        pred_a, pred_b: array-like [N], the two predictors' predictions of the same N subjects
            in the same order (years).
        n_boot, seed, level: bootstrap resamples, their seed, the interval's coverage.

    Returns:
        dict with ``n``, ``mae_a``, ``mae_b``, ``diff`` (mean of ``d``, years), ``diff_lo``,
        ``diff_hi`` (the interval; ``None`` for fewer than 2 subjects or when every ``d`` is
        equal), ``wilcoxon_p`` and ``ttest_p`` (``None`` when undefined, e.g. ``d`` all zero).
    """
    from scipy import stats

    t = _as_1d(y_true, "y_true")
    a, b = _as_1d(pred_a, "pred_a"), _as_1d(pred_b, "pred_b")
    if not (t.shape == a.shape == b.shape):
        raise ValueError(
            f"paired_difference needs the same subjects for both predictors: y_true has "
            f"{t.size} values, pred_a {a.size}, pred_b {b.size}"
        )
    if not (np.isfinite(t).all() and np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference: a target or prediction is NaN/inf; drop that subject")
    ea, eb = np.abs(a - t), np.abs(b - t)
    d = ea - eb  # (N,) years
    out = dict(n=int(t.size), mae_a=float(ea.mean()), mae_b=float(eb.mean()))
    out.update(diff=float(d.mean()), diff_lo=None, diff_hi=None, wilcoxon_p=None, ttest_p=None)
    if t.size < 2 or np.ptp(d) == 0:
        return out
    ci = stats.bootstrap(
        (d,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    out.update(diff_lo=_float(ci.low), diff_hi=_float(ci.high))
    if np.any(d != 0):
        out["wilcoxon_p"] = _float(stats.wilcoxon(d).pvalue)
    out["ttest_p"] = _float(stats.ttest_rel(ea, eb).pvalue)
    return out


def fold_bias_correction(age, pred, fold) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected out-of-fold predictions: each fold corrected by a fit on the other folds.

    For every fold k, :func:`fit_age_bias` (``pred = a * age + b``) is fitted on the subjects
    of the other folds, which are fold k's training subjects, using their own out-of-fold
    predictions (predictions of subjects their model did not see, so the fit measures the
    regression to the mean a test subject meets; in-sample predictions would understate it),
    and :func:`correct_age_bias` applies it to fold k. Fold k's subjects are not among the
    points fitted. (The other folds' predictions come from models whose training included
    fold k, a second-order dependence on fold k's ages through two numbers pooled over the
    other folds; the format of out-of-fold predictions holds no training-set predictions.)

    Args:
        age: array-like [N], true ages (years).
        pred: array-like [N], out-of-fold predicted ages (years).
        fold: array-like [N], the fold of each subject (any labels, at least 2 folds).

    Returns:
        (corrected, coef): corrected predicted ages [N] (years) and per-subject coefficients
        [N, 2] (the slope a and intercept b applied to that subject).
    """
    x, y = _as_1d(age, "age"), _as_1d(pred, "pred")
    f = np.asarray(fold).reshape(-1)
    if not (x.shape == y.shape == f.shape):
        raise ValueError(f"age, pred and fold differ in length: {x.size}, {y.size}, {f.size}")
    folds = np.unique(f)
    if len(folds) < 2:
        raise ValueError(
            f"fold_bias_correction needs at least 2 folds (got {folds.tolist()}): the "
            "correction of a fold is fitted on the others"
        )
    corrected, coef = np.empty_like(y), np.empty((y.size, 2))
    for k in folds:
        test = f == k
        a, b = fit_age_bias(x[~test], y[~test])
        corrected[test] = correct_age_bias(x[test], y[test], a, b)
        coef[test] = (a, b)
    return corrected, coef


# -----------------------------------------------------------------------------
# a classical baseline: ridge regression


def ridge_baseline(
    x_fit, y_fit, x_eval, y_eval, n_boot: int = 2000, seed: int = 0, prefix: str = "ridge_"
) -> dict:
    """Ridge regression from features (e.g. down-sampled voxels, log regional volumes).

    The features are standardised (mean 0, SD 1 on the fitting set) and scikit-learn's
    ``RidgeCV`` chooses the penalty among ``logspace(-2, 6, 17)`` by efficient leave-one-out
    cross-validation on the fitting set; the fitted model predicts ``x_eval``.

    Args:
        x_fit: [N, P] features of the fitting subjects; y_fit: [N] targets (years).
        x_eval: [M, P] features of the evaluated subjects; y_eval: [M] targets.

    Returns:
        dict with ``<prefix>mae`` (years), ``<prefix>mae_ci95`` ([lo, hi], bootstrap),
        ``<prefix>pearson_r``, ``<prefix>alpha`` (the chosen penalty), ``<prefix>n_features``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit, x_eval = np.asarray(x_fit, np.float64), np.asarray(x_eval, np.float64)
    y_fit, y_eval = _as_1d(y_fit, "y_fit"), _as_1d(y_eval, "y_eval")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 6, 17)))
    model.fit(x_fit, y_fit)
    pred = model.predict(x_eval)  # (M,) years
    return {
        prefix + "mae": _mae(y_eval, pred),
        prefix + "mae_ci95": list(bootstrap_ci(y_eval, pred, "mae", n_boot=n_boot, seed=seed)),
        prefix + "pearson_r": pearson_r(y_eval, pred),
        prefix + "alpha": float(model[-1].alpha_),
        prefix + "n_features": int(x_fit.shape[1]),
    }


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
