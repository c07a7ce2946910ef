"""Cross-validation through fixed subject folds: out-of-fold predictions and paired summaries.

The unit of every real-data comparison is a table of out-of-fold predictions, ``oof.csv``, one
row per subject, arm and seed::

    participant_id, fold, arm, seed, prediction, target

where ``prediction`` comes from the arm's model fitted on the other folds only. Any method can
add its rows (the classical baselines here; deep models through the same format), and
:func:`summarise_oof` turns the table into MAE [CI], r [CI] and the bias-corrected brain-age gap
per arm, and every pairwise **paired** difference of per-subject absolute errors with its
bootstrap CI and paired tests (:func:`slicelib.metrics.paired_difference`).

The folds (:func:`slicelib.splits.make_folds`, re-exported here; shipped as
``data/ixi_hh_4mm/folds.tsv``): subject-level, stratified by age bins crossed with sex
(scikit-learn ``StratifiedKFold``), seeded. :func:`ensemble_oof` adds the mean of several arms'
out-of-fold predictions as one more arm.

The classical baselines (:func:`baseline_arms`), each fitted on the training folds only, its
penalty chosen by an inner cross-validation on those training subjects (``RidgeCV``'s efficient
leave-one-out over ``RIDGE_ALPHAS``): the training-mean age, a ridge on the log regional
volumes, a ridge on the registered brains block-averaged to 8 mm (standardised features clipped
to +-5 SD). :func:`run_cv` fits them fold by fold, records every model's training subjects in
``fits.json``, refuses an out-of-fold prediction whose subject was among its model's training
subjects, and resumes: the (arm, fold, seed) triples already in ``oof.csv`` are not refitted.

The frozen-feature arms (:data:`FROZEN`): the same ridge on block-pooled slice features of a
frozen MobileNetV2 (ImageNet or seeded random weights, 3 axes; volumes z-scored, quantile-
standardised or kept inside the template's brain mask, optionally smoothed; 0, 2 or 4 grid
copies per head), encoded once and cached under ``<out>/cache/`` (keyed by weights, preprocessing).

    python -m slicelib.cv --data data/ixi_hh_4mm --out benchmarks/results/ixi_cv_baselines
    python -m slicelib.cv --data data/ixi_hh_4mm --out benchmarks/results/ixi_cv_frozen --arms \\
        mean ridge_roi ridge_voxels ridge_frozen_imagenet ridge_frozen_random --blocks 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from itertools import combinations
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from slicelib import metrics as M
from slicelib.augment import copy_of, premade_copies, training_copies
from slicelib.datasets import ixi_derivative
from slicelib.errors import ConfigError, DataError, PipelineError
from slicelib.frozen import CLIP_SD, RIDGE_ALPHAS, penalty_splits, pooled_features
from slicelib.splits import make_folds
from slicelib.utils import atomic_write, block_mean, pearson_r, print_tables

__all__ = ["OOF_COLUMNS", "BASELINES", "RIDGE_ALPHAS", "FROZEN", "ARMS", "make_folds", "read_oof"]
__all__ += ["read_folds", "fold_splits", "roi_features", "voxel_features", "baseline_arms"]
__all__ += ["run_cv", "summarise_oof", "ensemble_oof", "cv_baselines", "feature_rows"]
__all__ += ["ridge_estimator", "frozen_arm_features"]

OOF_COLUMNS = ["participant_id", "fold", "arm", "seed", "prediction", "target"]
# RIDGE_ALPHAS, CLIP_SD: the one ridge recipe, shared with the frozen ridge head (slicelib.frozen).
# Standardised features are clipped to +-CLIP_SD (training mean and SD): one IXI head's regional
# volumes (IXI256-HH-1723, a failed parcellation) lie 11 SD out; unclipped, it is predicted 135 y
BASELINES = ("mean", "ridge_roi", "ridge_voxels")  # the arms of baseline_arms
SMOOTHED = dict(normalise="template", smooth_mm=10.0)  # a 10 mm FWHM Gaussian when read
# arm -> (weights, None: seeded random; PreprocessConfig overrides; augmented copies per head)
FROZEN = {
    "ridge_frozen_imagenet": ("imagenet", dict(normalise="foreground"), 0),
    "ridge_frozen_random": (None, dict(normalise="foreground"), 0),
    "ridge_frozen_imagenet_quantile": ("imagenet", dict(normalise="quantile"), 0),
    "ridge_frozen_imagenet_augment": ("imagenet", dict(normalise="foreground"), 2),
    "ridge_frozen_imagenet_template": ("imagenet", dict(normalise="template"), 0),
    "ridge_frozen_imagenet_template_augment": ("imagenet", dict(normalise="template"), 2),
    "ridge_frozen_imagenet_template_augment4": ("imagenet", dict(normalise="template"), 4),
    "ridge_frozen_imagenet_template_smooth_augment": ("imagenet", SMOOTHED, 2),
}
ARMS = BASELINES + tuple(FROZEN)
FROZEN_BACKBONE, FROZEN_AXES = "mobilenet_v2", ("sagittal", "coronal", "axial")


# -----------------------------------------------------------------------------
# folds


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a folds table (``folds.tsv``: participant_id, fold, ...; tab-separated):
    a DataFrame with ``participant_id`` (str) and ``fold`` (int) and any other columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"folds file {path} does not exist; write it with data/ixi_hh_4mm/make_folds.py"
        )
    df = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    _check_folds(df, str(path))
    return df


def _check_folds(df: pd.DataFrame, where: str) -> None:
    for col in ("participant_id", "fold"):
        if col not in df.columns:
            raise DataError(f"{where}: no column {col!r}; columns are {list(df.columns)}")
    dup = df["participant_id"].duplicated()
    if dup.any():
        raise DataError(
            f"{where}: subjects {df.loc[dup, 'participant_id'].tolist()[:5]} are in more than "
            "one row; each subject belongs to exactly one fold"
        )
    fold = pd.to_numeric(df["fold"], errors="coerce")
    if fold.isna().any() or (fold != fold.round()).any():
        row = int(np.flatnonzero(fold.isna() | (fold != fold.round()))[0])
        raise DataError(
            f"{where}: row {row} ({df['participant_id'].iat[row]}) has fold "
            f"{df['fold'].iat[row]!r}; fold must be an integer in every row"
        )
    if fold.nunique() < 2:
        raise DataError(f"{where}: {fold.nunique()} distinct fold(s); cross-validation needs 2+")


def fold_splits(folds: pd.DataFrame):
    """Yield ``(fold, train_ids, test_ids)`` for each fold (ids as lists of str, table order).

    The training subjects of fold k are all subjects of the other folds.
    """
    _check_folds(folds, "folds")
    ids = folds["participant_id"].astype(str).to_numpy()
    f = folds["fold"].astype(int).to_numpy()
    for k in sorted(set(f.tolist())):
        yield k, ids[f != k].tolist(), ids[f == k].tolist()


# -----------------------------------------------------------------------------
# features of the classical baselines


def roi_features(path: str | os.PathLike, ids=None) -> pd.DataFrame:
    """Log regional volumes: ``log(1 + volume)`` per region, indexed by participant_id.

    Args:
        path: a CSV/TSV of regional volumes (mm^3) (e.g. ``roi_volumes.csv``): the first column
            (or ``participant_id``) the subject id. ids: optional subjects, in that order.

    Returns:
        DataFrame [N subjects, P regions] of float64 (log mm^3).
    """
    path = Path(path)
    df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    key = "participant_id" if "participant_id" in df.columns else df.columns[0]
    df = df.set_index(df[key].astype(str)).drop(columns=[key])
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() | (num < 0)
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise DataError(
            f"{path}: row {df.index[r]} column {df.columns[c]} is {df.iat[r, c]!r}; regional "
            "volumes must be numbers >= 0 (mm^3)"
        )
    out = np.log1p(num.astype(np.float64))
    return out if ids is None else feature_rows(out, ids, str(path))


def voxel_features(paths: Mapping[str, str | os.PathLike], block: int = 2) -> pd.DataFrame:
    """Registered brains z-scored inside the brain and block-averaged, one row per subject.

    Each NIfTI brain (e.g. ``data/ixi_hh_4mm/brains/*.nii.gz``: registered to MNI, 0 outside
    the brain) is z-scored over its non-zero voxels, set to 0 outside, padded by edge repetition
    to a multiple of ``block`` and averaged in ``block``^3 blocks (4 mm voxels, block 2: 8 mm,
    23 x 27 x 23 = 14283 features).

    Args: ``paths``: participant_id -> brain file, all on one grid; ``block``: the block edge
    in voxels (1: no averaging). Returns: DataFrame [N, P] float32 (z units) by participant_id.
    """
    rows, shape = [], None
    for p in paths.values():
        a = np.asarray(nib.load(p).get_fdata(dtype=np.float32))  # (X, Y, Z)
        if shape is not None and a.shape != shape:
            raise DataError(f"{p}: grid {a.shape} differs from the first brain's {shape}")
        shape = a.shape
        mask = a != 0
        if mask.sum() < 2:
            raise DataError(f"{p}: no brain voxel (the array is 0 everywhere); re-preprocess it")
        z = np.zeros_like(a)
        v = a[mask]
        z[mask] = (v - v.mean()) / (v.std() or 1.0)
        rows.append(block_mean(z, block).ravel())
    return pd.DataFrame(
        np.stack(rows), index=pd.Index([str(i) for i in paths], name="participant_id")
    )


def feature_rows(feats: pd.DataFrame, ids, where: str) -> pd.DataFrame:
    """The rows [len(ids), P] of ``feats`` for ``ids``, in that order; DataError naming ``where``."""
    ids = [str(i) for i in ids]
    missing = sorted(set(ids) - set(feats.index))
    if missing:
        raise DataError(
            f"{where} has no row for subjects {missing[:5]} ({len(missing)} in all); its ids "
            f"look like {list(feats.index[:3])}"
        )
    return feats.loc[ids]


# -----------------------------------------------------------------------------
# the baselines


def _clip(x, limit: float = CLIP_SD):
    return np.clip(x, -limit, limit)


def ridge_estimator():
    """StandardScaler -> clip to +-CLIP_SD -> RidgeCV over RIDGE_ALPHAS (leave-one-out;
    :func:`run_cv` sets subject folds, :func:`slicelib.frozen.penalty_splits`, when the training
    rows hold copies)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(StandardScaler(), FunctionTransformer(_clip), RidgeCV(alphas=RIDGE_ALPHAS))


def baseline_arms(data_dir: str | os.PathLike, ids) -> dict[str, tuple[Callable, pd.DataFrame]]:
    """The classical baselines of a derivative folder, as ``arm -> (make_estimator, features)``.

    ``mean``: scikit-learn ``DummyRegressor`` (the training-mean age; its features are
    ignored). ``ridge_roi``: log regional volumes (``roi_volumes.csv``). ``ridge_voxels``: the
    brains of ``participants.tsv``'s ``path`` column, block-averaged to 8 mm
    (:func:`voxel_features`). Both ridges standardise each feature with the training subjects'
    mean and SD, clip it to +-:data:`CLIP_SD` and fit ``RidgeCV``, its penalty chosen among
    :data:`RIDGE_ALPHAS` by leave-one-out on the training subjects of each fold.

    Args:
        data_dir: a folder like ``data/ixi_hh_4mm`` (participants.tsv, roi_volumes.csv, brains).
        ids: the subjects (participant_id) whose features are loaded.

    Returns:
        dict arm -> (a function returning a fresh unfitted estimator, features DataFrame
        [N, P] indexed by participant_id).
    """
    from sklearn.dummy import DummyRegressor

    data_dir = Path(data_dir)
    ids = [str(i) for i in ids]
    part = pd.read_csv(data_dir / "participants.tsv", sep="\t", dtype={"participant_id": str})
    part = feature_rows(part.set_index("participant_id"), ids, str(data_dir / "participants.tsv"))
    paths = {i: data_dir / p for i, p in part["path"].items()}
    absent = [str(p) for p in paths.values() if not p.is_file()]
    if absent:
        raise DataError(f"brain files missing: {absent[:3]} ({len(absent)}); regenerate them")
    return {
        "mean": (lambda: DummyRegressor(strategy="mean"), pd.DataFrame({"one": 1.0}, index=ids)),
        "ridge_roi": (ridge_estimator, roi_features(data_dir / "roi_volumes.csv", ids)),
        "ridge_voxels": (ridge_estimator, voxel_features(paths)),
    }


# -----------------------------------------------------------------------------
# running the folds


def read_oof(path: str | os.PathLike) -> pd.DataFrame:
    """Read an ``oof.csv`` (columns :data:`OOF_COLUMNS`), checking it.

    Returns:
        DataFrame with participant_id, arm (str), fold, seed (int), prediction, target (years).
    """
    df = pd.read_csv(path, dtype={"participant_id": str, "arm": str})
    return _check_oof(df, str(path))


def _check_oof(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in OOF_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: columns {missing} missing; an oof table has {OOF_COLUMNS}")
    df = df.copy()
    df["participant_id"] = df["participant_id"].astype(str)
    df["arm"] = df["arm"].astype(str)
    for col in ("prediction", "target"):
        v = pd.to_numeric(df[col], errors="coerce")
        if not np.isfinite(v).all():
            row = int(np.flatnonzero(~np.isfinite(v))[0])
            raise DataError(
                f"{where}: row {row} ({df['participant_id'].iat[row]}, arm "
                f"{df['arm'].iat[row]}) has {col} {df[col].iat[row]!r}; every row needs a "
                "finite number (drop or rerun that fold)"
            )
        df[col] = v.astype(np.float64)
    df["fold"] = df["fold"].astype(int)
    df["seed"] = df["seed"].astype(int)
    dup = df.duplicated(["participant_id", "arm", "seed"], keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise DataError(
            f"{where}: subject {r['participant_id']} has {int(dup.sum())} rows for arm "
            f"{r['arm']} seed {r['seed']}; an arm and seed predict each subject once"
        )
    return df


def run_cv(
    folds: pd.DataFrame, targets: Mapping[str, float],
    arms: Mapping[str, tuple[Callable, pd.DataFrame]], out_dir: str | os.PathLike, seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """Fit every arm on the training folds of every fold and predict the held-out fold.

    For fold k the estimator ``make_estimator()`` is fitted on the features and targets of the
    subjects of the other folds only, then predicts the subjects of fold k. Results go to
    ``out_dir/oof.csv`` (:data:`OOF_COLUMNS`) and ``out_dir/fits.json`` (per arm, fold and
    seed: the training ids, the chosen penalty, the seconds), both rewritten atomically after
    every fit. Resume: an (arm, fold, seed) already in ``oof.csv`` is not refitted; an existing
    ``oof.csv`` whose subjects sit in other folds than ``folds`` is refused.

    Args:
        folds: participant_id, fold (:func:`read_folds`).
        targets: participant_id -> target (years) for every subject of ``folds``.
        arms: arm name -> (function returning a fresh scikit-learn-style estimator, features
            DataFrame [N, P] indexed by participant_id). The estimator is given the features
            as a DataFrame (index = participant_id) and the targets as an array [N].
        out_dir: the folder of ``oof.csv`` and ``fits.json``.
        seed: recorded in the ``seed`` column (the baselines are deterministic).

    Returns:
        the complete oof table (previous rows and new ones).
    """
    out_dir = Path(out_dir)
    oof_path, fits_path = out_dir / "oof.csv", out_dir / "fits.json"
    _check_folds(folds, "folds")
    fold_of = dict(zip(folds["participant_id"].astype(str), folds["fold"].astype(int)))
    missing = sorted(set(fold_of) - {str(k) for k in targets})
    if missing:
        raise DataError(f"run_cv: no target for subjects {missing[:5]} ({len(missing)} in all)")
    oof = read_oof(oof_path) if oof_path.is_file() else pd.DataFrame(columns=OOF_COLUMNS)
    for p, f in zip(oof["participant_id"], oof["fold"]):
        if fold_of.get(p) != f:
            there = "not in the folds given" if p not in fold_of else f"in fold {fold_of[p]}"
            raise ConfigError(
                f"{oof_path} was written with other folds (subject {p} is in fold {f} there, "
                f"{there}); use another --out folder or delete it"
            )
    fits = json.loads(fits_path.read_text()) if fits_path.is_file() else {}
    done = set(zip(oof["arm"], oof["fold"].astype(int), oof["seed"].astype(int)))
    for arm, (make_estimator, feats) in arms.items():
        for k, train_ids, test_ids in fold_splits(folds):
            if (arm, k, seed) in done:
                continue
            t0 = time.perf_counter()  # training rows: the subjects and their augmented copies
            train_set = set(train_ids)
            train_rows = train_ids + [c for c in feats.index if copy_of(c) in train_set]
            x_train = feature_rows(feats, train_rows, f"features of arm {arm}")
            x_test = feature_rows(feats, test_ids, f"features of arm {arm}")
            y_train = np.array([float(targets[copy_of(i) or i]) for i in train_rows])  # years
            model = make_estimator()
            splits = penalty_splits(train_rows)  # with copies: the penalty by subject folds
            if splits is not None and "ridgecv__cv" in getattr(model, "get_params", dict)():
                model.set_params(ridgecv__cv=splits)
            model = model.fit(x_train, y_train)
            pred = np.asarray(model.predict(x_test), dtype=np.float64).reshape(-1)  # (N_test,)
            seen = {copy_of(i) or i for i in train_rows} & set(test_ids)
            if seen:  # by construction impossible; a guard against a broken fold table
                raise PipelineError(f"arm {arm} fold {k}: {sorted(seen)[:3]} in train and test")
            rows = pd.DataFrame(
                dict(participant_id=test_ids, fold=k, arm=arm, seed=seed, prediction=pred)
            )
            rows["target"] = [float(targets[i]) for i in test_ids]
            oof = pd.concat([oof, rows], ignore_index=True) if len(oof) else rows
            last = model[-1] if hasattr(model, "steps") else model
            alpha = getattr(last, "alpha_", None)
            fits[f"{arm}/fold{k}/seed{seed}"] = dict(
                arm=arm, fold=k, seed=seed, n_train=len(train_ids), n_test=len(test_ids),
                n_copies=len(train_rows) - len(train_ids), alpha=alpha and float(alpha),
                seconds=round(time.perf_counter() - t0, 3), train_ids=list(train_ids),
            )  # fmt: skip
            atomic_write(oof_path, lambda tmp, t=oof: t[OOF_COLUMNS].to_csv(tmp, index=False))
            atomic_write(fits_path, lambda tmp: tmp.write_text(json.dumps(fits, indent=1)))
            if progress:
                mae = float(np.abs(pred - rows["target"].to_numpy()).mean())
                a = "" if alpha is None else f", alpha {float(alpha):g}"
                print(f"{arm} fold {k}: MAE {mae:.2f} on {len(test_ids)} subjects{a}", flush=True)
    return _check_oof(oof[OOF_COLUMNS], str(oof_path))


# -----------------------------------------------------------------------------
# the summary


def summarise_oof(
    oof: pd.DataFrame, n_boot: int = 2000, boot_seed: int = 0, seeds: str = "mean"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-arm accuracy with bootstrap CIs, and every pairwise paired difference.

    Args:
        oof: rows participant_id, fold, arm, seed, prediction, target (:data:`OOF_COLUMNS`),
            any number of arms.
        n_boot, boot_seed: bootstrap resamples over subjects and their seed.
        seeds: an arm run with several seeds: ``"mean"`` scores the mean prediction over its
            seeds (a seed ensemble); ``"each"`` scores each seed as its own arm ``arm/seed<k>``.

    Returns:
        (summary, paired). ``summary``: one row per arm (order of first appearance) with
        ``arm``, ``n`` (subjects), ``n_seeds``, ``mae``, ``mae_lo``, ``mae_hi`` (years),
        ``r``, ``r_lo``, ``r_hi``, ``gap_age_r`` (r of the raw gap with age), and the
        bias-corrected gap (:func:`slicelib.metrics.fold_bias_correction`: fold k corrected by
        a fit on the other folds): ``corrected_gap_mae`` [``_lo``, ``_hi``] (mean |corrected
        gap|, years; uses the true age, so not an accuracy figure) and
        ``corrected_gap_age_r``. ``paired``: one row per pair of arms (a before b in the
        summary's order), on the subjects both predicted: ``arm_a``, ``arm_b``, ``n``,
        ``mae_a``, ``mae_b``, ``diff`` (mean |err a| - |err b|, years; negative: a better),
        ``diff_lo``, ``diff_hi``, ``wilcoxon_p``, ``ttest_p``
        (:func:`slicelib.metrics.paired_difference`).
    """
    df = _check_oof(oof, "oof")
    if seeds == "each":
        n_seeds = df.groupby("arm")["seed"].nunique()
        many = df["arm"].map(n_seeds) > 1
        df.loc[many, "arm"] = df.loc[many, "arm"] + "/seed" + df.loc[many, "seed"].astype(str)
    elif seeds != "mean":
        raise ConfigError(f"seeds={seeds!r}: use 'mean' (seed ensemble) or 'each'")
    target = df.groupby("participant_id")["target"].agg(["min", "max"])
    differ = target.index[target["max"] - target["min"] > 1e-6 * target["max"].abs().clip(1)]
    if len(differ):
        raise DataError(
            f"oof: subject {differ[0]} has different targets in different rows; every arm "
            "must be scored against the same target"
        )
    by_arm = {}
    for arm in df["arm"].unique():
        g = df[df["arm"] == arm]
        folds_per = g.groupby("participant_id")["fold"].nunique()
        if (folds_per > 1).any():
            raise DataError(
                f"oof: arm {arm} has subject {folds_per.index[folds_per > 1][0]} in several "
                "folds; all its seeds must use the same folds"
            )
        by_arm[arm] = g.groupby("participant_id").agg(
            prediction=("prediction", "mean"), target=("target", "first"),
            fold=("fold", "first"), n_seeds=("seed", "nunique"),
        )  # fmt: skip
    summary = []
    for arm, g in by_arm.items():
        t, p = g["target"].to_numpy(), g["prediction"].to_numpy()
        row = dict(arm=arm, n_seeds=int(g["n_seeds"].max()))
        row.update(M.regression_cis(t, p, n_boot=n_boot, seed=boot_seed))
        row["gap_age_r"] = pearson_r(p - t, t)
        if g["fold"].nunique() >= 2:
            corrected, _ = M.fold_bias_correction(t, p, g["fold"].to_numpy())
            lo, hi = M.bootstrap_ci(t, corrected, "mae", n_boot=n_boot, seed=boot_seed)
            row.update(
                corrected_gap_mae=float(np.abs(corrected - t).mean()),
                corrected_gap_mae_lo=lo, corrected_gap_mae_hi=hi,
                corrected_gap_age_r=pearson_r(corrected - t, t),
            )  # fmt: skip
        summary.append(row)
    paired = []
    for a, b in combinations(by_arm, 2):
        common = by_arm[a].index.intersection(by_arm[b].index)
        if len(common) == 0:
            continue
        ga, gb = by_arm[a].loc[common], by_arm[b].loc[common]
        res = M.paired_difference(
            ga["target"], ga["prediction"], gb["prediction"], n_boot=n_boot, seed=boot_seed
        )
        paired.append(dict(arm_a=a, arm_b=b, **res))
    cols = ["arm", "n", "n_seeds", "mae", "mae_lo", "mae_hi", "r", "r_lo", "r_hi", "gap_age_r"]
    cols += ["corrected_gap_mae", "corrected_gap_mae_lo", "corrected_gap_mae_hi"]
    cols += ["corrected_gap_age_r"]
    pcols = ["arm_a", "arm_b", "n", "mae_a", "mae_b", "diff", "diff_lo", "diff_hi"]
    pcols += ["wilcoxon_p", "ttest_p"]
    return pd.DataFrame(summary).reindex(columns=cols), pd.DataFrame(paired, columns=pcols)


def ensemble_oof(oof: pd.DataFrame, arms, name: str) -> pd.DataFrame:
    """An ensemble arm: per subject the mean prediction of ``arms`` (each arm's seeds averaged
    first), as oof rows (arm ``name``, seed 0) to summarise beside its members.

    No weight is fitted, so every ensemble prediction is as out-of-fold as its members': each
    member's prediction of a subject comes from a model that never saw that subject.

    Raises:
        DataError naming the arm that is missing, or when the arms predicted different subjects
        or put one subject in different folds.
    """
    df = _check_oof(oof, "oof")
    means = []
    for arm in arms:
        g = df[df["arm"] == arm]
        if g.empty:
            raise DataError(f"ensemble {name}: no arm {arm!r}; arms are {sorted(set(df.arm))}")
        means.append(g.groupby("participant_id")[["fold", "prediction", "target"]].mean())
    ids = means[0].index
    for arm, m in zip(arms, means):
        if set(m.index) != set(ids):
            raise DataError(
                f"ensemble {name}: arm {arm} predicted {len(m)} subjects, {arms[0]} {len(ids)}; "
                "members must predict the same subjects (complete arms)"
            )
        if not np.array_equal(m.loc[ids, "fold"], means[0]["fold"]):
            raise DataError(f"ensemble {name}: arm {arm} put subjects in other folds")
    pred = np.mean([m.loc[ids, "prediction"].to_numpy() for m in means], axis=0)  # (N,) years
    return pd.DataFrame(
        dict(participant_id=ids, fold=means[0]["fold"].astype(int).to_numpy(), arm=name,
             seed=0, prediction=pred, target=means[0]["target"].to_numpy())
    )[OOF_COLUMNS]  # fmt: skip


# -----------------------------------------------------------------------------
# the command


def frozen_arm_features(
    arm: str, data_dir: str | os.PathLike, ids, n_blocks: int = 4, seed: int = 0,
    imagenet_weights=None, cache_dir=None, progress: bool = False, copies=None,
) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """One frozen arm's (:data:`FROZEN`) features of the heads ``ids`` of a derivative folder:
    :func:`slicelib.frozen.pooled_features` of MobileNetV2 on :data:`FROZEN_AXES` on the
    derivative's grid with the arm's normalisation, with rows ``<id>~aug<k>`` for the arm's
    augmented copies (:func:`slicelib.augment.training_copies`; :func:`run_cv` trains on a
    subject's copies with it) and for the pre-made copies of ``copies`` (a participants table,
    :func:`slicelib.augment.premade_copies`); returns its (features [N, P], record)."""
    weights, overrides, n_copies = FROZEN[arm]
    if weights == "imagenet" and imagenet_weights:
        weights = imagenet_weights
    t = ixi_derivative(data_dir)
    table = feature_rows(t.set_index("participant_id"), ids, f"{data_dir}/participants.tsv")
    table = table.reset_index()  # + n_copies augmented copies of each head, as more rows
    table = pd.concat(
        [table, training_copies(table, n_copies, seed, cache_dir), premade_copies(table, copies)]
    )
    return pooled_features(
        table, {**t.attrs["preprocess"], **overrides}, n_blocks,
        FROZEN_BACKBONE, weights, FROZEN_AXES, seed, cache_dir, progress,
    )  # fmt: skip


def cv_baselines(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike,
    folds: str | os.PathLike | None = None, arms=None, n_boot: int = 2000, n_blocks: int = 4,
    seed: int = 0, imagenet_weights=None, cache_dir=None, progress: bool = True, copies=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Cross-validate the baselines and frozen-feature arms (:func:`frozen_arm_features`, read
    out by the baselines' ridge: features standardised on the training folds and clipped, so
    random features get a fair start) of a derivative folder (e.g. ``data/ixi_hh_4mm``).

    ``out_dir`` receives ``oof.csv``, ``fits.json`` (:func:`run_cv`, resumable), ``summary.csv``
    and ``paired.csv`` (:func:`summarise_oof`), and with frozen arms ``features.json`` (per arm
    the encoder's record: key, features, heads encoded, seconds; a resume keeps it). ``arms``:
    names among :data:`ARMS` (default :data:`BASELINES`); ``seed``: the random encoder's and
    the oof's seed column; ``cache_dir``: the frozen arms' cache (default ``out_dir/cache``);
    ``copies``: a table of pre-made training copies (``make_derivative.py --copies``) every
    frozen arm also trains on; those arms are then named ``<arm>_scancopies`` in the output.

    Returns:
        (summary, paired) DataFrames, as written.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    arms = list(BASELINES) if arms is None else list(arms)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ConfigError(f"unknown arms {unknown}; choose among {list(ARMS)}")
    fold_table = read_folds(folds or data_dir / "folds.tsv")
    part = pd.read_csv(data_dir / "participants.tsv", sep="\t", dtype={"participant_id": str})
    ages = pd.to_numeric(part.set_index("participant_id")["age"], errors="coerce").dropna()
    ids = fold_table["participant_id"].tolist()
    available = baseline_arms(data_dir, ids) if set(arms) & set(BASELINES) else {}
    info = {}
    for arm in [a for a in arms if a in FROZEN]:  # the heads on the derivative's grid
        feats, info[arm] = frozen_arm_features(
            arm, data_dir, ids, n_blocks, seed, imagenet_weights,
            Path(cache_dir or out_dir / "cache"), progress, copies,
        )  # fmt: skip
        available[arm] = (ridge_estimator, feats)
    names = {a: f"{a}_scancopies" if copies and a in FROZEN else a for a in arms}
    info = {names[a]: i for a, i in info.items()}
    if info:
        path = out_dir / "features.json"  # keeps the record of the call that encoded
        old = json.loads(path.read_text()) if path.is_file() else {}
        old.update({a: i for a, i in info.items() if i["n_encoded"] or a not in old})
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(old, indent=1)))
    oof = run_cv(
        fold_table, ages.to_dict(), {names[a]: available[a] for a in arms}, out_dir, seed, progress
    )
    summary, paired = summarise_oof(oof, n_boot=n_boot)
    for name, table in (("summary.csv", summary), ("paired.csv", paired)):
        atomic_write(
            out_dir / name, lambda tmp, t=table: t.to_csv(tmp, index=False, float_format="%.4g")
        )
    return summary, paired


def main(argv=None) -> None:
    """``python -m slicelib.cv``: the classical baselines through the folds (see the module)."""
    ap = argparse.ArgumentParser(prog="python -m slicelib.cv", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="derivative folder, e.g. data/ixi_hh_4mm")
    ap.add_argument("--out", required=True, help="output folder (resumes what is there)")
    ap.add_argument("--folds", default=None, help="folds.tsv (default: DATA/folds.tsv)")
    ap.add_argument("--arms", nargs="+", default=None, choices=ARMS, help="default: BASELINES")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=4, help="frozen arms: slice blocks per axis")
    ap.add_argument("--seed", type=int, default=0, help="the random encoder's seed")
    ap.add_argument("--imagenet-weights", default=None, help="default: slicelib.weights finds it")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--copies", default=None,
        help="pre-made training copies (make_derivative.py --copies OUT: OUT/participants.tsv) "
        "the frozen arms also train on (named <arm>_scancopies)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    args = (a.data, a.out, a.folds, a.arms, a.n_boot, a.blocks, a.seed, a.imagenet_weights)
    summary, paired = cv_baselines(*args, copies=a.copies)
    print_tables(summary, paired, t0)


if __name__ == "__main__":
    main()
