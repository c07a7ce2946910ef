"""Figures for slicelib: slice importance, brains, learning curves, results, position embeddings.

Every function draws a labelled figure (title, axis labels with units, colorbar labels,
legends), takes an optional ``ax`` / ``axes`` to draw into, and returns the matplotlib
``Figure`` (or the nilearn display for brain plots); nothing is shown or saved. Brain plots
use nilearn over its packaged MNI152 template, so they work offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from slicelib.explain import (
    AXIS_NAMES,
    SliceImportance,
    _axis_id,
    ground_truth_profile,
    importance_profile,
    per_slice_parameters,
    profile_correlation,
    slice_coordinates,
)
from slicelib.io import MNI_2MM_AFFINE
from slicelib.utils import mni_template

__all__ = [
    "plot_slice_importance",
    "plot_importance_on_brain",
    "plot_learning_curves",
    "summarise_runs",
    "plot_results",
    "position_similarity",
    "plot_position_similarity",
    "show_slices",
    "plot_slices",
]

_WORLD = {0: "x", 1: "y", 2: "z"}
_DIRECTION = {0: "left → right", 1: "posterior → anterior", 2: "inferior → superior"}


def _new_axes(ax, figsize=(7, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


# -----------------------------------------------------------------------------
# slice importance


def plot_slice_importance(
    results: SliceImportance | Mapping[str, SliceImportance | np.ndarray] | np.ndarray,
    ground_truth=None,
    axis: str = "sagittal",
    *,
    affine=None,
    normalise: str | None = "max",
    ground_truth_label: str = "ground truth effect",
    title: str | None = None,
    ax=None,
):
    """Per-slice importance curves along one axis, with the ground-truth profile dashed.

    Args:
        results: ``{name: SliceImportance or 1-D profile (S,)}`` (one curve each), or a single
            result / profile. A :class:`~slicelib.explain.SliceImportance` is averaged over its
            batch (:func:`~slicelib.explain.importance_profile`).
        ground_truth: optional known effect: an ``(X, Y, Z)`` effect map (per-slice sums of
            ``|effect|``) or a profile ``(S,)``, dashed black; the legend gives each r with it.
        axis: ``"sagittal"``, ``"coronal"`` or ``"axial"``; affine: optional ``(4, 4)``
            voxel-to-mm affine (adds a top x axis in mm).
        normalise: ``"max"`` (peak = 1), ``"sum"`` or ``None`` (units of the first result).
        ground_truth_label, title, ax: legend text of the ground truth; title; Axes.
    """
    a = _axis_id(axis)
    if isinstance(results, SliceImportance | np.ndarray | list | tuple):
        name = results.method if isinstance(results, SliceImportance) else "importance"
        results = {name: results}
    if not results:
        raise ValueError("results is empty: pass {name: SliceImportance or profile}.")
    gt = None
    if ground_truth is not None:
        g = getattr(ground_truth, "get_fdata", lambda: ground_truth)()
        g = np.asarray(g)  # (X, Y, Z) effect map or (S,) profile
        profile = ground_truth_profile if g.ndim == 3 else importance_profile
        gt = profile(g, a if g.ndim == 3 else None, normalise)
    fig, ax = _new_axes(ax)
    units = ""
    for name, res in results.items():
        p = importance_profile(res, a if isinstance(res, SliceImportance) else None, normalise)
        if isinstance(res, SliceImportance) and not units:
            units = res.units
        label = str(name)
        if gt is not None and len(gt) == len(p):
            label += f" (r = {profile_correlation(p, gt):.2f})"
        ax.plot(np.arange(len(p)), p, marker=".", lw=1.5, label=label)
    if gt is not None:
        ax.plot(np.arange(len(gt)), gt, "k--", lw=1.5, label=ground_truth_label)
    n = len(p)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel(f"{AXIS_NAMES[a]} slice index ({_DIRECTION[a]})")
    if normalise == "max":
        ax.set_ylabel("importance (normalised, peak = 1)")
    elif normalise == "sum":
        ax.set_ylabel("importance (share of total, sums to 1)")
    else:
        ax.set_ylabel(f"importance: {units}" if units else "importance")
    if affine is not None:
        scale, offset = np.asarray(affine, dtype=float)[a, [a, 3]]
        to_mm = (lambda i: scale * i + offset, lambda mm: (mm - offset) / scale)
        ax.secondary_xaxis("top", functions=to_mm).set_xlabel(f"{_WORLD[a]} (mm)")
    ax.set_title(title or f"Per-slice importance along the {AXIS_NAMES[a]} axis")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def plot_importance_on_brain(
    volume_map,
    affine=None,
    kind: str = "stat_map",
    bg_img=None,
    title: str = "Slice importance over the MNI152 template",
    *,
    colorbar_label: str = "importance",
    brain_mask: bool = True,
    threshold: float | str | None = None,
    cmap: str | None = None,
    cut_coords=None,
    display_mode: str = "ortho",
    axes=None,
    figure=None,
    **kwargs,
):
    """Show an importance volume over the brain with nilearn.

    Args:
        volume_map: ``(X, Y, Z)`` array (e.g. :func:`slicelib.explain.to_volume`, or
            :func:`slicelib.explain.gradient_map`) or a nibabel image.
        affine: ``(4, 4)`` voxel-to-mm affine of an array (default: the MNI 2 mm grid).
        kind: ``"stat_map"`` (nilearn ``plot_stat_map`` over ``bg_img``, default nilearn's
            MNI152 T1 on the map's grid) or ``"glass_brain"`` (maximum projection).
        title; colorbar_label: with units, e.g. "|Δ prediction| (years)".
        brain_mask: show the map only inside nilearn's MNI152 brain mask (painted slices from
            :func:`slicelib.explain.to_volume` otherwise fill the whole box).
        threshold: values below it are transparent (default: 5 % of the maximum |value|).
        cmap: default ``"inferno"`` (non-negative maps) or ``"RdBu_r"`` (signed ones).
        cut_coords, display_mode, axes, figure, **kwargs: passed on to nilearn.

    Returns:
        the nilearn display (``display.frame_axes.figure`` is its Figure).
    """
    import nibabel as nib
    from nilearn import plotting

    img = volume_map
    if not isinstance(img, nib.spatialimages.SpatialImage):
        data, affine = _as_volume(img, MNI_2MM_AFFINE if affine is None else affine)
        img = nib.Nifti1Image(data, affine)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if brain_mask:
        mask = np.asarray(mni_template(img.shape[:3], img.affine, "mask").dataobj) > 0.5
        data = np.where(mask, data, 0.0).astype(np.float32)
        img = nib.Nifti1Image(data, img.affine)
    vmax = float(np.max(np.abs(data))) or 1.0
    signed = bool(np.min(data) < -1e-6 * vmax)
    if threshold is None:
        threshold = 0.05 * vmax
    if cmap is None:
        cmap = "RdBu_r" if signed else "inferno"
    common = dict(title=title, threshold=threshold, cmap=cmap, cut_coords=cut_coords, **kwargs)
    common.update(display_mode=display_mode, axes=axes, figure=figure, colorbar=True)
    if kind == "stat_map":
        if bg_img is None:
            bg_img = mni_template(img.shape[:3], img.affine, "t1")
        vmin = -vmax if signed else 0.0
        display = plotting.plot_stat_map(
            img, bg_img=bg_img, symmetric_cbar=signed, vmax=vmax, vmin=vmin, **common
        )
    elif kind == "glass_brain":
        display = plotting.plot_glass_brain(
            img, plot_abs=not signed, symmetric_cbar=signed, vmax=vmax, **common
        )
    else:
        raise ValueError(f"kind must be 'stat_map' or 'glass_brain', got {kind!r}.")
    cbar = getattr(display, "_cbar", None)  # nilearn keeps the colorbar here (private)
    if cbar is not None:
        ticks = cbar.ax.get_yticklabels()
        colour = ticks[0].get_color() if ticks else "k"  # white on nilearn's black background
        cbar.set_label(colorbar_label, fontsize=8, color=colour)
    return display


# -----------------------------------------------------------------------------
# training runs


_METRIC_LABELS = {
    "mae": "validation MAE (target units, e.g. years)",
    "rmse": "validation RMSE (target units, e.g. years)",
    "r": "validation Pearson r",
    "r2": "validation R²",
    "accuracy": "validation accuracy (fraction)",
    "balanced_accuracy": "validation balanced accuracy (fraction)",
    "auc": "validation ROC AUC",
}


def plot_learning_curves(
    history: pd.DataFrame,
    *,
    label: str | None = "label",
    metrics: Sequence[str] | None = None,
    loss_label: str = "loss",
    metric_labels: Mapping[str, str] | None = None,
    title: str = "Learning curves",
    axes=None,
):
    """Train and validation loss per epoch (and validation metrics), one colour per run.

    Args:
        history: ``epoch``, ``train_loss``, ``val_loss`` and optionally ``val_<metric>``
            columns (``history.csv``); several runs stacked with a ``label`` column.
        label: the column naming the run (ignored if absent).
        metrics: columns with a panel each (default: every numeric ``val_*`` column except
            ``val_loss``, ``val_n`` and ``val_baseline_*``).
        loss_label: y label of the loss panel with units, e.g. "loss (MSE, years²)".
        metric_labels: y labels with units, e.g. ``{"val_mae": "validation MAE (years)"}``.
        title; axes: Axes, one per panel (1 + len(metrics)).

    Returns the Figure. Solid lines: training; dashed: validation.
    """
    need = {"epoch", "train_loss", "val_loss"} - set(history.columns)
    if need:
        raise ValueError(f"history lacks columns {sorted(need)}; has {list(history.columns)}.")
    if metrics is None:  # every numeric val_* column but the loss, n and baselines
        numeric = history.select_dtypes("number").columns
        metrics = [c for c in numeric if c.startswith("val_") and c not in ("val_loss", "val_n")]
        metrics = [c for c in metrics if not c.startswith("val_baseline_")]
    n_panels = 1 + len(metrics)
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(4.5 * n_panels, 3.6), layout="constrained")
    axes = list(np.atleast_1d(axes))
    if len(axes) < n_panels:
        raise ValueError(f"Need {n_panels} axes (loss + {list(metrics)}), got {len(axes)}.")
    fig = axes[0].figure
    groups = history.groupby(label, sort=False) if label in history.columns else [(None, history)]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, h) in enumerate(groups):
        c = colours[i % len(colours)]
        h = h.sort_values("epoch")
        prefix = "" if name is None else f"{name}: "
        axes[0].plot(h["epoch"], h["train_loss"], "-", color=c, label=f"{prefix}train")
        axes[0].plot(h["epoch"], h["val_loss"], "--", color=c, label=f"{prefix}validation")
        for ax, m in zip(axes[1:], metrics):
            ax.plot(h["epoch"], h[m], "--", marker=".", color=c, label=f"{prefix}{m}")
    axes[0].set_ylabel(loss_label)
    axes[0].set_title("loss")
    metric_labels = {**_METRIC_LABELS, **(metric_labels or {})}
    for ax, m in zip(axes[1:], metrics):
        name = m.removeprefix("val_")
        ax.set_ylabel(metric_labels.get(m, metric_labels.get(name, f"validation {name}")))
        ax.set_title(f"validation {name}".replace("_", " "))
    for ax in axes[:n_panels]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def summarise_runs(
    runs: pd.DataFrame,
    value: str | Sequence[str],
    by: str | Sequence[str] = "condition",
    seed: str = "seed",
    status: str | None = None,
) -> pd.DataFrame:
    """Mean, sd and the seeds of one or several metrics per condition, from one row per run.

    Args:
        runs: one row per (condition, seed) run with the metric column(s) ``value``.
        value: a metric column (e.g. ``"test_mae"``), or a list; by, seed: the condition
            column(s) and the seed column.
        status: optional column saying whether a run counts ("ok") or not (e.g. "diverged",
            "did not learn"). Runs that are not "ok" are left out of a condition's mean when it
            has an "ok" run; the summary's ``status`` column names them ("ok", "ok (seed 1:
            diverged)", or, when no run of the condition is ok, e.g. "diverged: seeds 0, 1").

    Returns a DataFrame, in first-seen order: the ``by`` columns, ``mean`` and ``sd`` (one
    metric) or ``<metric>_mean`` and ``<metric>_sd`` (a list; sample sd, 0 for one run), ``n``
    (runs in the mean), ``seeds`` (comma-separated) and ``status`` (with ``status``).
    """
    by = [by] if isinstance(by, str) else list(by)
    values = [value] if isinstance(value, str) else list(value)
    used, notes = runs, None
    if status is not None and status in runs:
        ok = runs[status] == "ok"
        used = runs[ok | ~ok.groupby([runs[c] for c in by], sort=False).transform("any")]
        notes = runs.groupby(by, sort=False).apply(_status_note, status, seed, include_groups=False)
    groups = used.groupby(by, sort=False)
    stats = groups[values].agg(["mean", lambda v: v.std(ddof=1) if len(v) > 1 else 0.0])
    one = isinstance(value, str)
    stats.columns = ["mean", "sd"] if one else [f"{v}_{s}" for v in values for s in ("mean", "sd")]
    stats["n"] = groups.size()
    stats["seeds"] = groups[seed].agg(lambda s: ", ".join(map(str, s))) if seed in runs else ""
    if notes is not None:
        stats = stats.reindex(notes.index).assign(status=notes)  # first-seen order of all runs
    return stats.reset_index()


def _status_note(g: pd.DataFrame, status: str, seed: str) -> str:
    """A condition's status from its runs': "ok", "ok (seed 1: diverged)", "diverged: seeds 0, 1"."""
    bad = g[g[status] != "ok"]
    seeds = bad[seed] if seed in bad else bad.index
    if len(bad) == len(g) and bad[status].nunique() == 1:
        return f"{bad[status].iloc[0]}: seed{'s' * (len(bad) > 1)} {', '.join(map(str, seeds))}"
    what = "; ".join(f"seed {s}: {v}" for s, v in zip(seeds, bad[status]))
    return "ok" if bad.empty else f"ok ({what})" if len(bad) < len(g) else what


def _wrap(label: str, width: int = 14) -> str:
    """``label`` with each of its lines wrapped at ``width`` characters (tick labels)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in str(label).split("\n"))


def plot_results(
    table: pd.DataFrame,
    *,
    value: str | None = None,
    condition: str | Sequence[str] = "condition",
    metric_label: str = "metric",
    seed: str = "seed",
    title: str = "Test results (mean ± sd over seeds)",
    show_runs: bool = True,
    colors: Mapping | None = None,
    color_by: str | None = None,
    baseline: float | None = None,
    ci: tuple[str, str] | None = None,
    references: Mapping[str, float | Sequence[float]] | None = None,
    status: str = "status",
    ax=None,
):
    """Bar chart of a metric per condition with sd error bars; the seeds are listed.

    Args:
        table: a summary with ``mean`` and ``sd`` columns (:func:`summarise_runs`), one of
            several metrics (``<value>_mean``, ``<value>_sd``), or one row per run with a
            ``value`` column, summarised here (single runs drawn as dots if ``show_runs``).
        value: the metric column (not needed for a one-metric summary).
        condition: the column(s) naming the condition, one bar each (several are joined).
        metric_label: y label, with units (e.g. "test MAE (years)"); seed: the seed column.
        title: figure title; the seeds are added below it.
        colors: optional {value of ``color_by`` (default: the condition label): colour};
            others are "C0".
        baseline: draw this value as a dashed grey line (e.g. the training-mean predictor).
        ci: the summary's (lower, upper) columns of a 95 % interval (e.g. bootstrap over
            subjects), drawn as a thin grey bar beside the sd error bar.
        references: grey bars after the conditions, ``{name: value or (value, lo, hi)}``
            (e.g. the mean-age and ridge baselines with their 95 % intervals).
        status: a summary column (if present) naming failed runs (e.g. "seed 0: diverged"):
            written on the bar, hatched when no run of the condition is "ok". ax: the Axes.
    """
    cond = [condition] if isinstance(condition, str) else list(condition)
    runs = None
    if value is None or {"mean", "sd"} <= set(table.columns):
        summary = table
    elif f"{value}_mean" in table.columns:
        summary = table.assign(mean=table[f"{value}_mean"], sd=table[f"{value}_sd"])
    else:
        runs, summary = table, summarise_runs(table, value, cond, seed)
    need = set(cond) | {"mean", "sd"} | set(ci or ())
    if need - set(summary.columns):
        raise ValueError(
            f"table lacks columns {sorted(need - set(summary.columns))}; pass a summary "
            "(condition, mean, sd) or a per-run table with value=<metric column>."
        )
    label = summary[cond].astype(str).agg(" / ".join, axis=1)
    keys = label if color_by is None else summary[color_by]
    refs = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in (references or {}).items()}
    fig, ax = _new_axes(ax, figsize=(max(4.0, 1.1 * (len(summary) + len(refs)) + 2), 4))
    pos = np.arange(len(summary))
    colours = [(colors or {}).get(k, "C0") for k in keys]
    height = summary["mean"].astype(float)
    sd = summary["sd"].astype(float).fillna(0)
    bars = ax.bar(pos, height, yerr=sd, capsize=4, color=colours, alpha=0.75, label="mean ± sd")
    if ci is not None:
        lo, hi = (summary[c].astype(float).to_numpy() for c in ci)
        kw = dict(fmt="none", ecolor="0.4", elinewidth=2, label="95 % CI (bootstrap, subjects)")
        ax.errorbar(pos + 0.3, (lo + hi) / 2, yerr=(hi - lo) / 2, **kw)
    if runs is not None and show_runs:
        run_label = runs[cond].astype(str).agg(" / ".join, axis=1)
        for i, c in enumerate(label):
            v = runs.loc[run_label == c, value].astype(float).to_numpy()
            jitter = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(1)
            ax.plot(i + jitter, v, "k.", ms=5, label="single runs" if i == 0 else None)
    for i, note in enumerate(summary[status] if status in summary.columns else []):
        if not note.startswith("ok"):  # no run of the condition counts: hatched bar
            bars[i].set(hatch="//", edgecolor="tab:red", alpha=0.4)
        if note != "ok":
            kw = dict(rotation=90, ha="center", va="bottom", fontsize=7, color="tab:red")
            ax.text(i, 0, " " + note, clip_on=True, **kw)  # inside the bar, from its foot
    for x, v in enumerate(refs.values(), start=len(summary)):
        err = None if len(v) < 3 else [[v[0] - v[1]], [v[2] - v[0]]]
        ax.bar([x], v[:1], yerr=err, capsize=4, color="0.8", edgecolor="0.4")
    if baseline is not None and np.isfinite(baseline):
        ax.axhline(baseline, ls="--", color="grey", label="baseline")
    ticks = label.str.replace(" / ", "\n")
    if "n" in summary.columns:
        ticks += "\nn = " + summary["n"].astype(int).astype(str)
    wrapped = [_wrap(t) for t in [*ticks, *refs]]  # long arm names would overlap
    ax.set_xticks(np.arange(len(summary) + len(refs)), wrapped, fontsize="small")
    ax.set_xlabel(" / ".join(cond).replace("_", " "))
    ax.set_ylabel(metric_label)
    seeds = []
    for entry in summary["seeds"].astype(str) if "seeds" in summary.columns else []:
        seeds += [t.strip() for t in entry.split(",") if t.strip() and t.strip() not in seeds]
    ax.set_title(title + (f"\nseeds: {', '.join(seeds)}" if seeds else ""), fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


# -----------------------------------------------------------------------------
# position embeddings


def position_similarity(model, axis: str | None = None, parameter: str = "position") -> np.ndarray:
    """Cosine similarity between the per-slice vectors of all slice indices: ``(S, S)``.

    Args:
        model: a :class:`~slicelib.model.SliceModel`; axis: default the model's first.
        parameter: one of :func:`slicelib.explain.per_slice_parameters`: ``"position"`` (the
            learned table, or the sinusoidal code at ``0..S-1``), or, with ``norm="set"``,
            the LayerNorm's per-slice rows ``"norm.weight"`` / ``"norm.bias"``.
    """
    params = per_slice_parameters(model, axis)
    if parameter not in params:
        what = "no position embedding" if parameter == "position" else f"no {parameter!r}"
        raise ValueError(
            f"This model has {what} (position={model.position!r}): nothing to compare. "
            f"Its per-slice parameters: {sorted(params) or 'none'}."
        )
    t = params[parameter]  # (S, D)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return t @ t.T


def plot_position_similarity(
    model,
    axis: str | None = None,
    parameter: str = "position",
    *,
    title: str | None = None,
    ax=None,
):
    """Heat map of :func:`position_similarity`: which slice positions the model tells apart.

    ``model``, ``axis``, ``parameter`` as :func:`position_similarity`; ``title`` defaults to
    naming the parameter and axis. Returns the Figure (colorbar: cosine similarity, -1 to 1).
    """
    axis = axis or model.axes[0]
    sim = position_similarity(model, axis, parameter)
    fig, ax = _new_axes(ax, figsize=(5, 4.3))
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
    ax.set_xlabel(f"{axis} slice index")
    ax.set_ylabel(f"{axis} slice index")
    what = f"{model.position} position" if parameter == "position" else parameter
    ax.set_title(title or f"Per-slice similarity of the {what}\n({axis} axis)")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    return fig


# -----------------------------------------------------------------------------
# volumes


def _as_volume(volume, affine):
    """``(array (X, Y, Z) float32, affine (4, 4) or None)`` of an array or a nibabel image."""
    if hasattr(volume, "get_fdata"):
        affine = volume.affine if affine is None else affine
        volume = volume.get_fdata(dtype=np.float32)
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError(f"volume must be 3-D (X, Y, Z), got shape {v.shape}.")
    return v, None if affine is None else np.asarray(affine, dtype=float)


def _draw_plane(ax, v, A, a: int, n: int, short: bool = False, **imshow):
    """Draw slice ``n`` of ``v`` (X, Y, Z) along axis ``a`` into ``ax``, labelled (mm with A)."""
    b, c = [d for d in range(3) if d != a]
    where = f"slice {n}" if short else f"{AXIS_NAMES[a]} slice {n}"
    extent, unit = (-0.5, v.shape[b] - 0.5, -0.5, v.shape[c] - 0.5), "voxel"
    if A is not None:
        cb, cc = (slice_coordinates(A, d, v.shape[d]) for d in (b, c))
        hb, hc = abs(A[b, b]) / 2, abs(A[c, c]) / 2
        extent, unit = (cb[0] - hb, cb[-1] + hb, cc[0] - hc, cc[-1] + hc), "mm"
        where += f" ({_WORLD[a]} = {slice_coordinates(A, a, n + 1)[-1]:.0f} mm)"
    im = ax.imshow(np.take(v, n, axis=a).T, origin="lower", extent=extent, **imshow)
    ax.set_title(where, fontsize="small" if short else "medium")
    ax.set_xlabel(f"{_WORLD[b]} ({unit}, {_DIRECTION[b]})", fontsize="small" if short else None)
    ax.set_ylabel(f"{_WORLD[c]} ({unit}, {_DIRECTION[c]})", fontsize="small" if short else None)
    return im


def _range(v, vmin, vmax):  # display range: vmin / vmax, else the 1st / 99th percentile
    lo, hi = np.percentile(v, [1, 99])
    return (lo if vmin is None else vmin), (hi if vmax is None else vmax)


def show_slices(
    volume,
    affine=None,
    *,
    index: Sequence[int] | None = None,
    title: str = "Mid-planes",
    cmap: str = "gray",
    colorbar_label: str = "intensity (z-score)",
    vmin: float | None = None,
    vmax: float | None = None,
    axes=None,
):
    """Sagittal, coronal and axial planes through voxel ``index`` ``(i, j, k)`` (default: the
    middle) side by side, in three ``axes``; the other arguments as :func:`plot_slices`.
    Returns the Figure (neurological convention: left on the left)."""
    v, A = _as_volume(volume, affine)
    index = index if index is not None else [s // 2 for s in v.shape]
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    axes = list(np.atleast_1d(axes))
    vmin, vmax = _range(v, vmin, vmax)
    for a, (ax, n) in enumerate(zip(axes, index)):
        im = _draw_plane(ax, v, A, a, int(n), cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0].figure.colorbar(im, ax=axes, label=colorbar_label, shrink=0.8)
    axes[0].figure.suptitle(title)
    return axes[0].figure


def plot_slices(
    volume,
    affine=None,
    *,
    axes: Sequence[str] = ("sagittal", "coronal", "axial"),
    n: int = 8,
    coords: Mapping[str, Sequence[float]] | None = None,
    title: str | None = "Slices along each axis",
    cmap: str = "gray",
    colorbar_label: str | None = "intensity",
    vmin: float | None = None,
    vmax: float | None = None,
    ax=None,
):
    """A mosaic of 2-D slices, one row per slicing axis: what a slice model sees.

    Args:
        volume: ``(X, Y, Z)`` array in RAS order or a nibabel image.
        affine: ``(4, 4)`` voxel-to-mm affine (default: the image's): panels in mm, titled
            ``"<index> (<x|y|z> = <mm> mm)"``; without one, in voxels.
        axes: the slicing axes, one row each; n: slices per row, evenly spaced (edges left out).
        coords: instead, the slices nearest these world positions ``{axis: [mm, ...]}``.
        title, colorbar_label (with units): None leaves the title / colorbar out.
        cmap, vmin, vmax: display range (default: 1st-99th percentile of the volume).
        ax: a (rows, columns) grid of Axes to draw into (e.g. one column of a larger figure).

    Returns the Figure (axis labels on the first panel of each row). Raises ValueError for a
    slice outside the volume or coords without an affine.
    """
    v, A = _as_volume(volume, affine)
    if coords is not None and A is None:
        raise ValueError("plot_slices(coords=...) gives mm: pass an affine (or a nibabel image).")
    picks = {}  # axis id -> slice indices
    for k in coords or axes:
        a = _axis_id(k)
        idx = np.linspace(0, v.shape[a] - 1, n + 2)[1:-1] if coords is None else None
        idx = (np.atleast_1d(coords[k]) - A[a, 3]) / A[a, a] if idx is None else idx
        picks[a] = [int(round(i)) for i in idx]
        if not all(0 <= i < v.shape[a] for i in picks[a]):
            raise ValueError(f"plot_slices: {k} slices {picks[a]} outside 0..{v.shape[a] - 1}")
    rows, cols = len(picks), max(len(p) for p in picks.values())
    if ax is None:
        size = (1.9 * cols + 1.4, 1.9 * rows + 0.6)
        _, ax = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False)
    ax = np.asarray(ax, dtype=object).reshape(rows, cols)
    vmin, vmax = _range(v, vmin, vmax)
    for r, (a, idx) in enumerate(picks.items()):
        for c, panel in enumerate(ax[r]):
            if c >= len(idx):
                panel.axis("off")
                continue
            im = _draw_plane(panel, v, A, a, idx[c], cols > 2, cmap=cmap, vmin=vmin, vmax=vmax)
            if c:
                panel.set(xlabel="", ylabel="", xticks=[], yticks=[])
    fig = ax[0, 0].figure
    if colorbar_label is not None:
        fig.colorbar(im, ax=list(ax.ravel()), label=colorbar_label, shrink=0.8)
    if title is not None:
        fig.suptitle(title)
    return fig
