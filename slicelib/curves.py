"""Learning curves on the fixed folds: out-of-fold MAE against the number of training subjects.

For every fold k of a folds table (``data/ixi_hh_4mm/folds.tsv``) and every subset seed, the
training subjects of fold k (the other folds) are put in one seeded, stratified order
(:func:`nested_subsets`); the first ``round(fraction * N_train)`` of that order are the training
subjects at ``fraction``, so the 25 % subset lies inside the 50 % one, which lies inside the
75 % one, and 100 % is all of them. **Every arm is fitted on the same subjects** at each
(fold, subset seed, fraction) point (one list of ids per point, handed to every arm) and
predicts the **whole** held-out fold k, so every point of every arm is scored on all subjects
and the arms can be compared subject by subject.

The arms are those of :mod:`slicelib.cv` whose features are computed once and cached
(:func:`curve_arms`): ``mean``, ``ridge_roi``, ``ridge_voxels``, ``ridge_frozen_imagenet``,
``ridge_frozen_random``, each the same estimator as in the cross-validation (``RidgeCV`` on
standardised, clipped features, its penalty chosen by leave-one-out on the training subset).
Deep trained arms (the fine-tuned ImageNet slice model, scratch, SFCN) are not fitted here
(an hour per point on CPU); ``benchmarks/curve_deep.py`` trains them on the same subsets
(``slicelib compare --folds ... --train-ids``, the ids of every point from ``subsets.json``)
and writes their rows; ``--extra`` adds them (``--from-predictions``: without refitting the
others), and the figure and table mark the arms without rows "not measured".

    python -m slicelib.curves --data data/ixi_hh_4mm --out benchmarks/results/learning_curve \\
        --fractions 0.25 0.5 0.75 1 --subset-seeds 0 1 2

writes ``predictions.csv.gz`` (:data:`PREDICTION_COLUMNS`, one row per arm, point and held-out
subject), ``subsets.json``, ``summary.csv`` and ``paired.csv`` (:func:`summarise_curve`) and
``learning_curve.png`` (:func:`plot_curve`).
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from slicelib import metrics as M
from slicelib.cv import (
    ARMS,
    FROZEN,
    baseline_arms,
    feature_rows,
    fold_splits,
    frozen_arm_features,
    read_folds,
    ridge_estimator,
)
from slicelib.errors import ConfigError, DataError, PipelineError
from slicelib.utils import atomic_write, print_tables

__all__ = ["PREDICTION_COLUMNS", "DEEP_ARMS", "nested_subsets", "learning_curve", "curve_arms"]
__all__ += ["summarise_curve", "crossing", "plot_curve", "read_extra", "run_curve"]

PREDICTION_COLUMNS = ["arm", "fraction", "n_train", "subset_seed", "fold", "participant_id"]
PREDICTION_COLUMNS += ["prediction", "target"]
# the deep trained arms of issue 20's curve, not fitted by this module (see the module docstring)
DEEP_ARMS = {
    "finetune_imagenet": "ImageNet slice model, fine-tuned",
    "finetune_scratch": "slice model from scratch, fine-tuned",
    "sfcn": "SFCN (3D CNN)",
}
LABELS = {
    "mean": "training-mean age",
    "ridge_roi": "ridge, log regional volumes",
    "ridge_voxels": "ridge, voxels (8 mm blocks)",
    "ridge_frozen_imagenet": "ridge, frozen ImageNet slice features",
    "ridge_frozen_random": "ridge, frozen random slice features",
    **DEEP_ARMS,
}


# -----------------------------------------------------------------------------
# the subsets


def nested_subsets(
    ids: Sequence[str], ages, fractions: Sequence[float], seed: int = 0, n_age_bins: int = 5,
    sex=None,
) -> dict[float, list[str]]:  # fmt: skip
    """Nested, seeded, stratified subsets of one fold's training subjects.

    Each subject gets a stratum: its age quantile bin (``n_age_bins`` bins over ``ages``),
    crossed with its sex when ``sex`` is given. Within a stratum of ``m`` subjects the
    subjects are shuffled (``numpy.random.default_rng(seed)``) and the j-th gets the key
    ``(j + u) / m`` with one uniform ``u`` in [0, 1) per stratum; all subjects sorted by key
    form one order, whose every prefix holds each stratum in proportion to its size (within one
    subject). The subset at ``fraction`` is the first ``round(fraction * len(ids))`` of the
    order, so a smaller fraction's subset lies inside a larger one's and 1.0 gives every id.

    Args:
        ids: the training subjects (participant_id), N of them, unique.
        ages: array-like [N], their ages (years), finite.
        fractions: each in (0, 1]; a fraction giving fewer than 3 subjects is refused.
        seed: the order's seed (the same ids, ages and seed give the same subsets).
        n_age_bins: age quantile bins (fewer if ages repeat).
        sex: optional array-like [N] of labels crossed with the age bins.

    Returns:
        dict fraction -> list of ids (in the seeded order; sizes non-decreasing in fraction).
    """
    ids = [str(i) for i in ids]
    age = np.asarray(ages, dtype=np.float64).reshape(-1)  # (N,) years
    if len(set(ids)) != len(ids) or age.shape != (len(ids),):
        raise DataError(
            f"nested_subsets: {len(ids)} ids ({len(set(ids))} unique) and {age.size} ages; "
            "give one age per distinct subject"
        )
    if not np.isfinite(age).all():
        bad = [i for i, a in zip(ids, age) if not np.isfinite(a)]
        raise DataError(f"nested_subsets: subjects {bad[:5]} have no age; drop them first")
    sizes = {}
    for f in fractions:
        n = int(round(float(f) * len(ids)))
        if not 0 < float(f) <= 1 or n < 3:
            raise ConfigError(
                f"fraction {f!r} of {len(ids)} training subjects gives {n}; fractions must lie "
                "in (0, 1] and keep at least 3 subjects (the ridge's leave-one-out needs them)"
            )
        sizes[float(f)] = n
    edges = np.quantile(age, np.linspace(0, 1, n_age_bins + 1)[1:-1])
    strata = np.searchsorted(edges, age, side="right").astype(str)  # (N,) age bin
    if sex is not None:
        strata = np.char.add(np.char.add(strata, "_"), np.asarray(sex).astype(str))
    rng = np.random.default_rng(seed)
    key = np.empty(len(ids))
    for s in sorted(set(strata.tolist())):
        rows = rng.permutation(np.flatnonzero(strata == s))
        key[rows] = (np.arange(len(rows)) + rng.uniform()) / len(rows)
    order = [ids[i] for i in np.argsort(key, kind="stable")]
    return {f: order[:n] for f, n in sizes.items()}


# -----------------------------------------------------------------------------
# fitting


def learning_curve(
    folds: pd.DataFrame, targets: Mapping[str, float],
    arms: Mapping[str, tuple[Callable, pd.DataFrame]],
    fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), subset_seeds: Sequence[int] = (0,),
    sex: Mapping[str, str] | None = None, progress: bool = False,
) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Fit every arm on nested training subsets of every fold; predict the whole held-out fold.

    For fold k (:func:`slicelib.cv.fold_splits`) and subset seed s, :func:`nested_subsets`
    of fold k's training subjects (stratified by age, crossed with ``sex`` if given) gives the
    training ids of each fraction; ``make_estimator()`` of every arm is fitted on exactly those
    ids (features from its table, targets from ``targets``) and predicts every subject of
    fold k. The full training set (fraction 1.0) is the same for every seed, so it is fitted
    once, under the first seed.

    Args:
        folds: participant_id, fold (:func:`slicelib.cv.read_folds`).
        targets: participant_id -> target (years), for every subject of ``folds``.
        arms: arm -> (function returning a fresh scikit-learn-style estimator, features
            DataFrame [N, P] indexed by participant_id), as :func:`curve_arms` returns.
        fractions: of each fold's training subjects, in (0, 1].
        subset_seeds: seeds of the subset orders (several: the spread of a point over subsets).
        sex: participant_id -> sex, to stratify the subsets by sex too.

    Returns:
        (predictions, subsets). ``predictions``: :data:`PREDICTION_COLUMNS`, one row per arm,
        fold, subset seed, fraction and held-out subject (prediction and target in years).
        ``subsets``: ``"fold<k>/seed<s>/<fraction>"`` -> the training ids every arm was fitted
        on there.
    """
    fractions = sorted({float(f) for f in fractions})
    seeds = list(dict.fromkeys(int(s) for s in subset_seeds))
    if not fractions or not seeds:
        raise ConfigError("learning_curve needs at least one fraction and one subset seed")
    missing = sorted(set(folds["participant_id"].astype(str)) - {str(k) for k in targets})
    if missing:
        raise DataError(f"learning_curve: no target for subjects {missing[:5]} ({len(missing)})")
    rows, subsets = [], {}
    for k, train_ids, test_ids in fold_splits(folds):
        y_of = {i: float(targets[i]) for i in train_ids + test_ids}
        for s in seeds:
            sx = None if sex is None else [str(sex[i]) for i in train_ids]
            ages = [y_of[i] for i in train_ids]
            by_fraction = nested_subsets(train_ids, ages, fractions, s, sex=sx)
            for f, ids in by_fraction.items():
                if f == 1.0 and s != seeds[0]:
                    continue  # every seed's full set is the same subjects: fitted once
                if set(ids) & set(test_ids):  # impossible by construction; guards the folds
                    raise PipelineError(f"fold {k}: {sorted(set(ids) & set(test_ids))[:3]} in both")
                subsets[f"fold{k}/seed{s}/{f:g}"] = list(ids)
                y = np.array([y_of[i] for i in ids])  # (n_train,) years
                for arm, (make_estimator, feats) in arms.items():
                    model = make_estimator().fit(feature_rows(feats, ids, f"features of {arm}"), y)
                    x_test = feature_rows(feats, test_ids, f"features of {arm}")
                    pred = np.asarray(model.predict(x_test), dtype=np.float64).reshape(-1)
                    point = dict(arm=arm, fraction=f, n_train=len(ids), subset_seed=s, fold=k)
                    rows.append(pd.DataFrame(dict(**point, participant_id=test_ids)))
                    rows[-1]["prediction"] = pred
                    rows[-1]["target"] = [y_of[i] for i in test_ids]
                if progress:
                    print(f"fold {k} seed {s} fraction {f:g}: {len(ids)} subjects", flush=True)
    return pd.concat(rows, ignore_index=True)[PREDICTION_COLUMNS], subsets


def curve_arms(
    data_dir: str | os.PathLike, ids, arms: Sequence[str], n_blocks: int = 4, seed: int = 0,
    imagenet_weights=None, cache_dir=None, progress: bool = False,
) -> tuple[dict[str, tuple[Callable, pd.DataFrame]], dict]:  # fmt: skip
    """The arms of :mod:`slicelib.cv` for a derivative folder, features loaded or encoded once.

    The baselines come from :func:`slicelib.cv.baseline_arms`; the frozen arms
    (:data:`slicelib.cv.FROZEN`) are :func:`slicelib.frozen.pooled_features` of MobileNetV2 on
    3 axes with ``n_blocks`` slice blocks (ImageNet weights, or random initialisation seeded by
    ``seed``), read out by the same ridge: exactly the features of
    :func:`slicelib.cv.cv_baselines`, cached under ``cache_dir`` (default: the slicelib cache,
    ``$SLICELIB_CACHE`` or ``~/.cache/slicelib``).

    Returns:
        (arms, info): arm -> (make_estimator, features DataFrame [N, P] indexed by
        participant_id); info: frozen arm -> the encoder record (key, features, seconds).
    """
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ConfigError(f"unknown arms {unknown}; choose among {list(ARMS)}")
    data_dir, ids = Path(data_dir), [str(i) for i in ids]
    out = baseline_arms(data_dir, ids) if set(arms) - set(FROZEN) else {}
    info = {}
    for arm in [a for a in arms if a in FROZEN]:
        feats, info[arm] = frozen_arm_features(
            arm, data_dir, ids, n_blocks, seed, imagenet_weights, cache_dir, progress
        )
        out[arm] = (ridge_estimator, feats)
    return {a: out[a] for a in arms}, info


# -----------------------------------------------------------------------------
# the summary


def _subject_errors(pred: pd.DataFrame) -> pd.DataFrame:
    """Per arm, fraction and subject (sorted by participant_id, as ``slicelib.cv`` orders its
    bootstrap): the absolute error averaged over the subset seeds."""
    p = pred.assign(abs_error=(pred["prediction"] - pred["target"]).abs())
    return p.groupby(["arm", "fraction", "participant_id"]).agg(
        abs_error=("abs_error", "mean"), n_seeds=("subset_seed", "nunique"),
        n_train=("n_train", "mean"),
    ).reset_index()  # fmt: skip


def summarise_curve(
    pred: pd.DataFrame, reference: str = "ridge_roi", n_boot: int = 2000, boot_seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MAE [95 % CI] per arm and fraction, and each arm's paired difference to ``reference``.

    A point's MAE is the mean over subjects of the subject's absolute error averaged over the
    subset seeds (the expected MAE of one model fitted on a random stratified subset of that
    size, not of an ensemble); its CI is a percentile bootstrap over subjects
    (:func:`slicelib.metrics.bootstrap_ci` on the per-subject errors). ``mae_seed_sd`` is the
    SD over subset seeds of each seed's MAE (the subset's own luck; 0 with one seed).

    Args:
        pred: :data:`PREDICTION_COLUMNS` rows (:func:`learning_curve`, plus ``--extra``).
        reference: the arm every other arm is compared with, subject by subject, at each
            fraction (:func:`slicelib.metrics.paired_difference` of the absolute errors
            averaged over the subset seeds both arms were fitted on, ``subset_seeds``, so each
            pair saw the same training subjects: ``diff`` < 0 means the arm's errors are
            smaller).
        n_boot, boot_seed: bootstrap resamples over subjects and their seed.

    Returns:
        (summary, paired). summary: ``arm``, ``fraction``, ``n_train`` (mean over folds),
        ``n_train_min``, ``n_train_max``, ``n_seeds``, ``n`` (subjects), ``mae``, ``mae_lo``,
        ``mae_hi``, ``mae_seed_sd`` (years). paired: ``arm``, ``reference``, ``fraction``,
        ``subset_seeds``, ``n_train``, ``n``, ``mae``, ``mae_reference``, ``diff``, ``diff_lo``, ``diff_hi``
        (years), ``wilcoxon_p``, ``ttest_p``.
    """
    missing = sorted(set(PREDICTION_COLUMNS) - set(pred.columns))
    if missing:
        raise DataError(f"learning-curve predictions lack columns {missing}")
    errors = _subject_errors(pred)
    train = pred.groupby(["arm", "fraction", "fold"])["n_train"].first().groupby(level=[0, 1])
    rows = []
    for (arm, f), g in errors.groupby(["arm", "fraction"], sort=False):
        e = g["abs_error"].to_numpy()  # (N,) years
        # bootstrap_ci's "mae" of target 0 and "prediction" e resamples the mean of e
        lo, hi = M.bootstrap_ci(np.zeros_like(e), e, "mae", n_boot=n_boot, seed=boot_seed)
        p = pred[(pred["arm"] == arm) & (pred["fraction"] == f)]
        per_seed = (p["prediction"] - p["target"]).abs().groupby(p["subset_seed"]).mean()
        n_train = train.get_group((arm, f))
        rows.append(dict(
            arm=arm, fraction=f, n_train=round(float(n_train.mean()), 1),
            n_train_min=int(n_train.min()), n_train_max=int(n_train.max()),
            n_seeds=int(g["n_seeds"].max()), n=len(g), mae=float(e.mean()), mae_lo=lo,
            mae_hi=hi, mae_seed_sd=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
        ))  # fmt: skip
    summary = pd.DataFrame(rows).sort_values(["arm", "fraction"], kind="stable")
    summary = summary.reset_index(drop=True)
    paired = []
    seeds = pred.groupby(["arm", "fraction"])["subset_seed"].unique().map(set)
    for (arm, f), g in errors[errors["arm"] != reference].groupby(["arm", "fraction"], sort=False):
        # the same subjects and the same training subsets: the seeds both arms were fitted on
        both = seeds[(arm, f)] & seeds.get((reference, f), set())
        if not both:
            continue
        pair = pred[(pred["fraction"] == f) & pred["subset_seed"].isin(both)]
        ga = _subject_errors(pair[pair["arm"] == arm]).set_index("participant_id")
        gb = _subject_errors(pair[pair["arm"] == reference]).set_index("participant_id")
        common = ga.index.intersection(gb.index)
        if len(common) == 0:
            continue
        g = ga.loc[common]
        ea, eb = g["abs_error"], gb.loc[common, "abs_error"]
        # errors are >= 0, so with target 0 the per-subject |a| - |b| is ea - eb
        res = M.paired_difference(np.zeros(len(common)), ea, eb, n_boot=n_boot, seed=boot_seed)
        res = {k: v for k, v in res.items() if k not in ("mae_a", "mae_b")}
        paired.append(dict(
            arm=arm, reference=reference, fraction=f, subset_seeds=",".join(map(str, sorted(both))),
            n_train=float(g["n_train"].mean()), mae=float(ea.mean()),
            mae_reference=float(eb.mean()), **res,
        ))  # fmt: skip
    pcols = ["arm", "reference", "fraction", "subset_seeds", "n_train", "n", "mae"]
    pcols += ["mae_reference", "diff"]
    pcols += ["diff_lo", "diff_hi", "wilcoxon_p", "ttest_p"]
    return summary, pd.DataFrame(paired, columns=pcols)


def crossing(summary: pd.DataFrame, a: str, b: str, paired: pd.DataFrame | None = None) -> dict:
    """Where arm ``a``'s MAE curve crosses arm ``b``'s (linear interpolation in n_train).

    Args:
        summary: :func:`summarise_curve`'s summary. a, b: two of its arms.
        paired: optional :func:`summarise_curve` paired table with ``a`` against reference
            ``b``: the text then says at which points the paired difference's CI excludes 0.

    Returns:
        dict ``crosses`` (bool), ``n_train`` (the interpolated crossing points, training
        subjects; empty if none), ``sign`` (per fraction: -1 where a's MAE is lower, +1 where
        higher, 0 equal), ``separated`` (the n_train of the points where the paired CI
        excludes 0; None without ``paired``) and ``text`` (sentences saying so, with the MAEs
        at the ends).
    """
    sa = summary[summary["arm"] == a].set_index("fraction")
    sb = summary[summary["arm"] == b].set_index("fraction")
    fr = sorted(set(sa.index) & set(sb.index))
    if not fr:
        raise DataError(f"crossing: arms {a!r} and {b!r} share no fraction in the summary")
    n = sa.loc[fr, "n_train"].to_numpy(float)
    d = sa.loc[fr, "mae"].to_numpy(float) - sb.loc[fr, "mae"].to_numpy(float)  # (F,) years
    sign = np.sign(d).astype(int)
    points = []
    for i in range(len(fr) - 1):
        if d[i] == 0:
            points.append(float(n[i]))
        elif d[i] * d[i + 1] < 0:
            points.append(float(n[i] + (n[i + 1] - n[i]) * d[i] / (d[i] - d[i + 1])))
    if len(fr) and d[-1] == 0:
        points.append(float(n[-1]))
    ends = f"MAE {sa.loc[fr[0], 'mae']:.2f} vs {sb.loc[fr[0], 'mae']:.2f} at n={n[0]:.0f}, "
    ends += f"{sa.loc[fr[-1], 'mae']:.2f} vs {sb.loc[fr[-1], 'mae']:.2f} at n={n[-1]:.0f}"
    if points:
        where = ", ".join(f"n~{p:.0f}" for p in points)
        text = f"{LABELS.get(a, a)} and {LABELS.get(b, b)} cross at {where} ({ends})"
    else:
        lower = LABELS.get(a, a) if d[0] < 0 else LABELS.get(b, b)
        text = f"{LABELS.get(a, a)} and {LABELS.get(b, b)} do not cross: {lower} is lower at "
        text += f"every point ({ends})"
    separated = None
    if paired is not None:
        p = paired[(paired["arm"] == a) & (paired["reference"] == b)]
        p = p[p["fraction"].isin(fr)]
        out = p[(p["diff_lo"] > 0) | (p["diff_hi"] < 0)]
        separated = [float(v) for v in out["n_train"]]
        if len(p) and not separated:
            text += ". The paired difference's 95 % CI includes 0 at every point"
        elif separated:
            text += ". The paired difference's 95 % CI excludes 0 at n = "
            text += ", ".join(f"{v:.0f}" for v in separated)
    return dict(
        crosses=bool(points), n_train=points, sign=sign.tolist(), separated=separated, text=text
    )


def plot_curve(
    summary: pd.DataFrame, cross: dict | Sequence[dict] | None = None,
    not_measured: Sequence[str] = (),
    title: str = "Learning curve: IXI brain age, 5-fold CV", ax=None,
    off_scale: Sequence[str] = ("mean",),
):  # fmt: skip
    """MAE [95 % CI] against the number of training subjects, one line per arm.

    Args:
        summary: :func:`summarise_curve`'s summary (``n_train`` on x, ``mae`` with
            ``mae_lo``/``mae_hi`` error bars on y, years).
        cross: :func:`crossing`'s result, or a list of them, marked on the figure (a dotted
            line at each crossing and the sentences in a box).
        not_measured: arms listed in the legend as "not measured" (no line is drawn).
        title; ax: a matplotlib Axes to draw into.
        off_scale: arms not drawn but named in the legend with their MAE range (the
            training-mean age, about twice the others' MAE, would flatten them).

    Returns:
        the matplotlib Figure (not saved).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.6), layout="constrained")
    arms = [a for a in dict.fromkeys(summary["arm"]) if a not in off_scale]
    for i, arm in enumerate(arms):
        g = summary[summary["arm"] == arm].sort_values("n_train")
        off = (i - (len(arms) - 1) / 2) * 0.6  # a small x offset so the error bars do not hide
        yerr = np.vstack([g["mae"] - g["mae_lo"], g["mae_hi"] - g["mae"]])
        ax.errorbar(g["n_train"] + off, g["mae"], yerr=yerr, marker="o", ms=4, capsize=3,
                    label=LABELS.get(arm, arm))  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    for arm in [a for a in dict.fromkeys(summary["arm"]) if a in off_scale]:
        m = summary.loc[summary["arm"] == arm, "mae"]
        handles.append(Line2D([], [], color="none"))
        span = (
            f"{m.min():.1f}"
            if f"{m.min():.1f}" == f"{m.max():.1f}"
            else f"{m.min():.1f}-{m.max():.1f}"
        )
        labels.append(f"{LABELS.get(arm, arm)}: MAE {span} (off the scale)")
    for arm in not_measured:
        handles.append(Line2D([], [], color="none"))
        labels.append(f"{LABELS.get(arm, arm)}: not measured")
    crosses = [] if cross is None else [cross] if isinstance(cross, Mapping) else list(cross)
    if crosses:
        for n in [n for c in crosses for n in c["n_train"]]:
            ax.axvline(n, color="grey", ls=":", lw=1)
        # beside the plot, under the legend
        caption = "\n\n".join(textwrap.fill(c["text"], 60) for c in crosses)
        ax.text(1.02, 0.0, caption, transform=ax.transAxes, fontsize=8, va="bottom",
                bbox=dict(boxstyle="round", fc="white", ec="0.7"))  # fmt: skip
    ax.set_xlabel("training subjects per fold (n)")
    ax.set_ylabel("out-of-fold MAE (years), 95 % CI over subjects")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax.figure


# -----------------------------------------------------------------------------
# rows from elsewhere, and the command


def read_extra(path: str | os.PathLike, folds: pd.DataFrame, subsets: Mapping) -> pd.DataFrame:
    """Learning-curve rows of an arm fitted elsewhere (e.g. a deep model), checked.

    The file (CSV, :data:`PREDICTION_COLUMNS`) must use the same folds and the points of
    ``subsets`` (:func:`learning_curve`'s, i.e. ``subsets.json``): every row's fold is its
    subject's fold, its (fold, subset seed, fraction) is a point of ``subsets`` and its
    ``n_train`` that point's size. (That its model was fitted on that point's ids cannot be
    checked from predictions; the writer must use ``subsets.json``.)

    Returns:
        DataFrame with :data:`PREDICTION_COLUMNS`.
    """
    df = pd.read_csv(path, dtype={"participant_id": str})
    missing = sorted(set(PREDICTION_COLUMNS) - set(df.columns))
    if missing:
        raise DataError(f"{path}: no columns {missing}; a curve file has {PREDICTION_COLUMNS}")
    fold_of = dict(zip(folds["participant_id"].astype(str), folds["fold"].astype(int)))
    for r in df.itertuples(index=False):
        if fold_of.get(r.participant_id) != r.fold:
            raise DataError(
                f"{path}: subject {r.participant_id} is in fold {r.fold} there but "
                f"{fold_of.get(r.participant_id, 'absent')} in the folds table; use the same folds"
            )
        point = f"fold{r.fold}/seed{r.subset_seed}/{float(r.fraction):g}"
        if point not in subsets or len(subsets[point]) != r.n_train:
            raise DataError(
                f"{path}: arm {r.arm} point {point} with n_train {r.n_train} is not a point of "
                "subsets.json; fit it on subsets.json's ids for that point"
            )
    return df[PREDICTION_COLUMNS]


def run_curve(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike, arms: Sequence[str] = ARMS,
    fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), subset_seeds: Sequence[int] = (0, 1, 2),
    folds=None, n_blocks: int = 4, seed: int = 0, imagenet_weights=None, cache_dir=None,
    extra=(), n_boot: int = 2000, progress: bool = True, refit: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The learning curve of a derivative folder, written to ``out_dir``.

    :func:`curve_arms` -> :func:`learning_curve` (stratified by age and sex) ->
    :func:`summarise_curve` (reference ``ridge_roi`` when run) -> :func:`plot_curve` with the
    crossings of the ImageNet slice models (the frozen read-out, and the fine-tuned model when
    ``extra`` has its rows) and the regional-volume ridge (``crossing.json``: arm -> :func:`crossing`).

    Writes ``predictions.csv.gz`` (:data:`PREDICTION_COLUMNS`, the fitted arms' rows; gzip,
    pandas reads it as it is), ``subsets.json``, ``summary.csv``, ``paired.csv``,
    ``crossing.json`` and ``learning_curve.png``. ``refit=False`` fits nothing: it reads the
    predictions and subsets an earlier run left in ``out_dir`` (``arms``, ``fractions`` and
    ``subset_seeds`` are then those of that run), adds ``extra`` and redoes the rest, so rows
    of an arm fitted elsewhere cost no refit. Returns (summary, paired).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    fold_table = read_folds(folds or data_dir / "folds.tsv")
    csv = dict(index=False, float_format="%.4g")
    if refit:
        part = pd.read_csv(data_dir / "participants.tsv", sep="\t", dtype={"participant_id": str})
        part = part.set_index("participant_id")
        ids = fold_table["participant_id"].astype(str).tolist()
        ages = pd.to_numeric(feature_rows(part, ids, str(data_dir / "participants.tsv"))["age"])
        sex = part["sex"].astype(str).to_dict() if "sex" in part.columns else None
        table, info = curve_arms(
            data_dir, ids, arms, n_blocks, seed, imagenet_weights, cache_dir, progress
        )
        pred, subsets = learning_curve(
            fold_table, ages.to_dict(), table, fractions, subset_seeds, sex, progress
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "subsets.json", lambda tmp: tmp.write_text(json.dumps(subsets)))
        # the fits are kept before anything else runs
        atomic_write(
            out_dir / "predictions.csv.gz",
            lambda tmp: _write_gz(pred, tmp, {**csv, "float_format": "%.7g"}),
        )
        if info:
            record = json.dumps(info, indent=1)
            atomic_write(out_dir / "features.json", lambda tmp: tmp.write_text(record))
    else:
        for name in ("predictions.csv.gz", "subsets.json"):
            if not (out_dir / name).is_file():
                raise ConfigError(f"{out_dir / name} does not exist; run once with fitting")
        pred = pd.read_csv(out_dir / "predictions.csv.gz", dtype={"participant_id": str})
        subsets = json.loads((out_dir / "subsets.json").read_text())
    for path in extra:
        pred = pd.concat([pred, read_extra(path, fold_table, subsets)], ignore_index=True)
    reference = "ridge_roi" if "ridge_roi" in set(pred["arm"]) else pred["arm"].iat[0]
    summary, paired = summarise_curve(pred, reference, n_boot=n_boot)
    measured = set(summary["arm"])
    # where the ImageNet slice models (frozen read-out, fine-tuned) cross the regional ridge
    cross = {
        arm: crossing(summary, arm, "ridge_roi", paired)
        for arm in ("ridge_frozen_imagenet", "finetune_imagenet")
        if {arm, "ridge_roi"} <= measured
    }
    if cross:
        text = json.dumps(cross, indent=1)
        atomic_write(out_dir / "crossing.json", lambda tmp: tmp.write_text(text))
    for name, t in (("summary", summary), ("paired", paired)):
        atomic_write(out_dir / f"{name}.csv", lambda tmp, t=t: t.to_csv(tmp, **csv))
    fig = plot_curve(summary, list(cross.values()), [a for a in DEEP_ARMS if a not in measured])
    atomic_write(
        out_dir / "learning_curve.png", lambda tmp: fig.savefig(tmp, format="png", dpi=130)
    )
    return summary, paired


def _write_gz(table: pd.DataFrame, tmp: Path, csv: dict) -> None:
    # atomic_write's temporary name has no .gz suffix, so the compression is named
    table.to_csv(tmp, compression={"method": "gzip", "mtime": 0}, **csv)


def main(argv=None) -> None:
    """``python -m slicelib.curves``: the learning curve of the cached arms (see the module)."""
    ap = argparse.ArgumentParser(
        prog="python -m slicelib.curves", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--data", required=True, help="derivative folder, e.g. data/ixi_hh_4mm")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--folds", default=None, help="folds.tsv (default: DATA/folds.tsv)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--subset-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--extra", nargs="*", default=[], help="curve CSVs of arms fitted elsewhere")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=4, help="frozen arms: slice blocks per axis")
    ap.add_argument("--seed", type=int, default=0, help="the random encoder's seed")
    ap.add_argument("--imagenet-weights", default=None, help="default: slicelib.weights finds it")
    ap.add_argument("--cache-dir", default=None, help="default: $SLICELIB_CACHE or ~/.cache")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--from-predictions", action="store_true",
        help="fit nothing: re-summarise OUT's predictions.csv.gz (with --extra rows)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    summary, paired = run_curve(
        a.data, a.out, a.arms, a.fractions, a.subset_seeds, a.folds, a.blocks, a.seed,
        a.imagenet_weights, a.cache_dir, a.extra, a.n_boot, refit=not a.from_predictions,
    )  # fmt: skip
    print_tables(summary, paired, t0)


if __name__ == "__main__":
    main()
