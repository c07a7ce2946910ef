"""Comparing arms fairly: a grid of training runs on one subject split, each arm's learning rate
chosen on the validation set, reported with its status, test metrics and baselines.

An *arm* is one model setting: one combination of the :data:`ARM_FLAGS` values (backbone,
weights, position, norm, pooling, freeze_encoder). Every arm is trained once per seed and, per
seed, once per learning rate of the lr grid; all runs share the base config's subject split
(``split_seed``), so every arm sees the same training, validation and test subjects.

The learning rate is chosen, not compared: per arm and seed, the run with the best validation
value of the monitored column (:func:`slicelib.train.monitor_of`, e.g. ``val_mae``, at its best
epoch) is reported; the others stay in ``lr_selection.csv``. Each run is judged on validation
(:func:`judge`): ``"ok"``; ``"did not learn"`` (validation MAE no lower than predicting the
training mean, or balanced accuracy no higher than 1/C); ``"diverged"`` (training stopped with
NaN/inf losses or outputs: ``status`` in history.csv, or no best checkpoint). An "ok" run is
chosen before a "did not learn" one, before a "diverged" one; a failed arm is named, never
silently averaged in.

A 3D CNN (``sfcn_3d``, ``densenet121_3d``) has none of the slice-model settings: its arm holds
``"-"`` for :data:`SLICE_ONLY_FLAGS` and is trained once per seed (and lr).

Files under ``out``: one run folder per (arm, seed, lr); ``results.csv`` (per arm and seed the
chosen run: its flags, ``lr``, ``lr_grid``, ``status``, the validation value, the test metrics
with ``*_ci95_lo/hi``, the mean and ridge baselines, ``run``); ``lr_selection.csv`` (every
candidate, ``chosen``); ``summary.csv`` (per arm: mean and sd over the seeds that learned);
``compare.png``. The command line ``slicelib compare`` is a thin wrapper around :func:`compare`.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from slicelib import plotting
from slicelib.cnn3d import is_volume_backbone
from slicelib.config import SLICE_ONLY_KEYS, ConfigError, TrainConfig
from slicelib.metrics import primary_metric
from slicelib.model import SliceModel
from slicelib.runs import evaluate_run
from slicelib.train import monitor_of, train

__all__ = [
    "ARM_FLAGS",
    "GRID_FLAGS",
    "SLICE_ONLY_FLAGS",
    "STATUSES",
    "compare",
    "plan",
    "run_config",
    "judge",
    "choose",
    "split_metrics",
    "summarise",
    "compare_figure",
    "print_summary",
]

# the settings that make an arm (one summary row, one bar); "none" = no weights / no position
ARM_FLAGS = ("backbone", "weights", "position", "norm", "pooling", "freeze_encoder")
GRID_FLAGS = (*ARM_FLAGS, "seed", "lr")  # what a grid varies: the arms, the seeds, the lr grid
SLICE_ONLY_FLAGS = ("weights", "position", "norm", "pooling", "freeze_encoder")
NOT_APPLICABLE = "-"  # a slice-model setting of a 3D CNN arm
STATUSES = ("ok", "did not learn", "diverged")  # best first


# -----------------------------------------------------------------------------
# the grid: arms x seeds, one TrainConfig per (arm, seed, lr)


def plan(
    base: TrainConfig, grid: dict | None = None, seeds: list[int] | None = None
) -> tuple[dict[str, list], list[dict]]:
    """The arms and seeds of a grid.

    Args:
        base: the config every run starts from (data, target, preset sizes, split, ...).
        grid: {ARM_FLAG: [values]}; a flag left out takes the base config's value (SliceModel's
            default if unset). Values as on the command line: weights "imagenet" | "none" |
            PATH, position "learned" | "sinusoidal" | "none", freeze_encoder "yes" | "no"
            (True/False and None are accepted too).
        seeds: model and training seeds (default: ``[base.seed]``).

    Returns:
        ``values`` ({flag: [values]} for ARM_FLAGS and "seed") and ``runs``: one {flag: value}
        per (arm, seed) in grid order; a 3D CNN arm has "-" for SLICE_ONLY_FLAGS (so it appears
        once per seed, not once per setting it does not have).
    """
    unknown = sorted(set(grid or {}) - set(ARM_FLAGS))
    if unknown:
        raise ConfigError(
            f"unknown grid key(s) {unknown}: a grid varies {', '.join(ARM_FLAGS)} (seeds and "
            "learning rates are the seeds= and lrs= arguments)."
        )
    defaults = inspect.signature(SliceModel).parameters
    values = {}
    for flag in ARM_FLAGS:
        if flag == "freeze_encoder":
            given = (grid or {}).get(flag, [base.freeze_encoder])
            values[flag] = [_yes_no(v) for v in given]
            continue
        given = (grid or {}).get(flag, [base.model.get(flag, defaults[flag].default)])
        values[flag] = ["none" if v is None else v for v in given]
    values["seed"] = list(seeds) if seeds else [base.seed]
    runs = []
    for combo in itertools.product(*(values[f] for f in (*ARM_FLAGS, "seed"))):
        run = dict(zip((*ARM_FLAGS, "seed"), combo))
        if is_volume_backbone(run["backbone"]):
            run.update(dict.fromkeys(SLICE_ONLY_FLAGS, NOT_APPLICABLE))
        if run not in runs:
            runs.append(run)
    return values, runs


def _yes_no(v) -> str:
    if v in ("yes", "no"):
        return v
    if isinstance(v, bool | None):
        return "yes" if v else "no"
    raise ConfigError(f"freeze_encoder={v!r} in the grid: use 'yes'/'no' (or True/False).")


def run_config(
    base: TrainConfig, run: dict, out: str | os.PathLike, lr: float, lr_in_name: bool = False
) -> TrainConfig:
    """The TrainConfig of one (arm, seed, lr) run, in ``out/<arm>-seed<s>[-lr<lr>]``.

    A 3D CNN arm keeps none of the base's slice-model settings (embed_dim, axes, weights, ...:
    SLICE_ONLY_KEYS), as a preset's are left out for it.
    """
    model = dict(base.model, backbone=run["backbone"])
    if is_volume_backbone(run["backbone"]):
        model = {k: v for k, v in model.items() if k not in (*SLICE_ONLY_KEYS, "weights")}
        frozen = False
    else:
        model.update({k: run[k] for k in ("position", "norm", "pooling")})
        model["weights"] = None if run["weights"] == "none" else run["weights"]
        frozen = run["freeze_encoder"] == "yes"
    weights = run["weights"]
    if weights not in ("imagenet", "none", NOT_APPLICABLE):
        weights = Path(str(weights)).stem  # a local state_dict
    name = [run["backbone"], weights, *(run[k] for k in ("position", "norm", "pooling"))]
    name = [str(v) for v in name if v != NOT_APPLICABLE]
    name += ["frozen"] * frozen + [f"seed{run['seed']}"] + [f"lr{lr:g}"] * lr_in_name
    d = dict(base.to_dict(), model=model, freeze_encoder=frozen, seed=run["seed"], lr=lr)
    return TrainConfig.from_dict(dict(d, out=str(Path(out) / "-".join(name))))


# -----------------------------------------------------------------------------
# judging a run on validation and choosing its learning rate


def judge(run_dir: str | os.PathLike, cfg: TrainConfig) -> dict:
    """A finished run judged on its validation set (history.csv, config.json, split.csv).

    Returns:
        ``status`` (one of :data:`STATUSES`: "diverged" = an epoch with status "diverged" or a
        non-finite training loss in history.csv, or no best checkpoint; "did not learn" = at
        its best epoch the validation MAE is no lower than the training mean's (regression), or
        the balanced accuracy no higher than 1/C; else "ok"), ``monitor`` (the history column
        that picks the best epoch), ``val_best`` (its value there), ``val_baseline`` (the
        baseline's validation MAE in target units, or 1/C), ``best_epoch`` (1-based) and
        ``note`` (why it diverged).
    """
    run_dir = Path(run_dir)
    monitor, mode = monitor_of(cfg)
    out = dict(status="diverged", monitor=monitor, val_best=None, note="")
    hist = run_dir / "history.csv"
    hist = pd.read_csv(hist) if hist.is_file() else pd.DataFrame({"train_loss": []})
    blown = hist["status"] == "diverged" if "status" in hist else hist["train_loss"].isna()
    blown |= ~np.isfinite(pd.to_numeric(hist["train_loss"], errors="coerce"))
    if blown.any():
        e = int(hist.loc[blown.idxmax(), "epoch"])
        return dict(out, note=f"diverged at epoch {e} (NaN/inf training loss or outputs)")
    if hist.empty or not (run_dir / "best.pt").is_file():
        return dict(out, note="no best checkpoint (no finite validation value)")
    scores = pd.to_numeric(hist[monitor], errors="coerce")
    best = hist.loc[scores.idxmin() if mode == "min" else scores.idxmax()]
    stats = json.loads((run_dir / "config.json").read_text())["train_stats"]
    if cfg.task == "regression":
        split = pd.read_csv(run_dir / "split.csv", dtype={"participant_id": str})
        val = split.loc[split["split"] == "val", cfg.target].astype(float)
        baseline = float(np.mean(np.abs(val - stats["mean"])))
        learned = best["val_mae"] < baseline
    else:
        baseline = 1.0 / stats["num_classes"]
        learned = best["val_balanced_accuracy"] > baseline
    out.update(status="ok" if learned else "did not learn", val_best=float(best[monitor]))
    return dict(out, val_baseline=baseline, best_epoch=int(best["epoch"]))


def choose(candidates: list[dict], mode: str) -> dict:
    """The candidate to report (``mode``: "min" | "max" of ``val_best``): "ok" first, then
    "did not learn", then "diverged"; within a status the best validation value (the first
    learning rate on ties)."""

    def rank(c: dict):
        v = c["val_best"]
        return (
            STATUSES.index(c["status"]),
            v is None,
            0.0 if v is None else v if mode == "min" else -v,
        )

    return min(candidates, key=rank)


def split_metrics(run_dir: str | os.PathLike, split: str = "test") -> dict:
    """:func:`slicelib.runs.evaluate_run`'s numbers for one run (``*_ci95`` pairs as
    ``*_ci95_lo``/``*_ci95_hi``; ``best_epoch`` 1-based, ``n_subjects``)."""
    res = evaluate_run(run_dir, split=split, progress=False)
    out = {"n_subjects": res.pop("n"), "best_epoch": res.pop("checkpoint_epoch") + 1}
    for k, v in res.items():
        if k.endswith("_ci95") and isinstance(v, list) and len(v) == 2:
            out[f"{k}_lo"], out[f"{k}_hi"] = v
        elif isinstance(v, int | float) and not isinstance(v, bool) or v is None:
            out[k] = v
    return out


# -----------------------------------------------------------------------------
# the comparison


def compare(
    base: TrainConfig | dict,
    grid: dict[str, list] | None = None,
    lrs: list[float] | None = None,
    seeds: list[int] | None = None,
    out: str | os.PathLike | None = None,
    eval_split: str = "test",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate every arm of a grid; per arm and seed the lr is chosen on validation.

    Args:
        base: the config every run starts from (a :class:`TrainConfig` or a dict of its fields,
            e.g. ``resolve_config(preset="cpu", overrides=dict(data=..., target="age"))``).
        grid: {ARM_FLAG: [values]}, e.g. ``{"weights": ["imagenet", "none"], "position":
            ["learned", "none"]}`` (see :func:`plan`); flags left out keep the base's value.
        lrs: the learning-rate grid (Adam; default ``[base.lr]``); every (arm, seed) trains
            once per value and keeps the best on validation (module docstring).
        seeds: model and training seeds (default ``[base.seed]``); the subject split is the
            base's ``split_seed`` for every run.
        out: the root folder (default ``base.out``); runs already there resume.
        eval_split: where the reported metrics come from: "test" | "val" | "all".
        progress: a progress bar over (arm, seed).

    Returns:
        ``results`` (one row per arm and seed: ARM_FLAGS, ``seed``, ``lr``, ``lr_grid``,
        ``status``, the monitored validation value, the ``eval_split`` metrics with
        ``*_ci95_lo/hi``, ``baseline_*`` and ``ridge_*``, ``run``; a diverged row has no test
        metrics) and ``summary`` (:func:`summarise`); both also written under ``out`` with
        ``lr_selection.csv`` and ``compare.png``.
    """
    base = base if isinstance(base, TrainConfig) else TrainConfig.from_dict(base)
    root = Path(out or base.out)
    root.mkdir(parents=True, exist_ok=True)
    lrs = list(lrs) if lrs else [base.lr]
    _, runs = plan(base, grid, seeds)
    mode = monitor_of(base)[1]
    lr_grid = ",".join(f"{v:g}" for v in lrs)
    rows, tried = [], []
    for run in tqdm(runs, desc="compare", unit="arm x seed", disable=not progress):
        candidates = [_candidate(base, run, root, lr, len(lrs) > 1) for lr in lrs]
        best = choose(candidates, mode)
        tried += [dict(c, chosen=c is best) for c in candidates]
        row = {**run, "lr": best["lr"], "lr_grid": lr_grid, "status": best["status"]}
        row[best["monitor"]] = best["val_best"]
        if best["status"] != "diverged":
            row.update(split_metrics(best["run"], eval_split))
        rows.append({**row, "run": best["run"]})
        pd.DataFrame(rows).to_csv(root / "results.csv", index=False)  # after every arm x seed
        pd.DataFrame(tried).to_csv(root / "lr_selection.csv", index=False)
    results = pd.DataFrame(rows)
    summary = summarise(results, primary_metric(base.task)[0])
    summary.to_csv(root / "summary.csv", index=False)
    fig = compare_figure(summary, base, eval_split)
    fig.savefig(root / "compare.png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return results, summary


def _candidate(base: TrainConfig, run: dict, root: Path, lr: float, lr_in_name: bool) -> dict:
    """Train one (arm, seed, lr) run; ``run`` with ``lr``, :func:`judge`'s verdict and ``run``
    (the folder)."""
    cfg = run_config(base, run, root, lr, lr_in_name)
    train(cfg, progress=False)
    return dict(run, lr=lr, **judge(cfg.out, cfg), run=cfg.out)


def summarise(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """summary.csv: per arm the chosen learning rates, then mean and sd of every metric over
    the seeds whose run is "ok" (:func:`slicelib.plotting.summarise_runs`; ``status`` names
    the seeds that did not learn or diverged)."""
    skip = {*GRID_FLAGS, "run", "n_subjects", "best_epoch", "status", "lr_grid"}
    numeric = [c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])]
    metrics = [c for c in numeric if c not in skip and results[c].notna().any()]
    arms = list(ARM_FLAGS)
    summary = plotting.summarise_runs(results, metrics, by=arms, status="status")
    summary = summary.drop(columns=[c for c in summary if "_ci95_" in c and c.endswith("_sd")])
    lrs = results.groupby(arms, sort=False)["lr"].agg(lambda s: ", ".join(f"{v:g}" for v in s))
    summary = summary.merge(lrs.reset_index(), on=arms, how="left")
    return summary[arms + ["lr"] + [c for c in summary if c not in (*arms, "lr")]]


def compare_figure(summary: pd.DataFrame, cfg: TrainConfig, split: str = "test"):
    """compare.png: the primary metric per arm (mean ± sd over seeds, 95 % CI), the baselines
    (training mean / majority class, ridge) as grey bars beside the arms. Returns the Figure."""
    metric = primary_metric(cfg.task)[0]

    def ref(name: str):
        cols = [f"{name}_mean", f"{name}_ci95_lo_mean", f"{name}_ci95_hi_mean"]
        cols = [c for c in cols if c in summary and summary[c].notna().any()]
        return tuple(float(summary[c].mean()) for c in cols) if cols else None

    regression = cfg.task == "regression"
    label = "training-mean baseline" if regression else "majority-class baseline"
    references = {label: ref(f"baseline_{metric}"), "ridge (voxels)": ref(f"ridge_{metric}")}
    varying = [k for k in ARM_FLAGS if summary[k].nunique() > 1] or ["backbone"]
    ci = (f"{metric}_ci95_lo_mean", f"{metric}_ci95_hi_mean")
    name = f"{split} {metric.replace('_', ' ')}"
    unit = ""
    if regression:
        unit = " (years)" if cfg.target.lower() in ("age", "age_years") else f" ({cfg.target})"
    return plotting.plot_results(
        summary,
        value=metric,
        condition=varying,
        metric_label=name + unit,
        title=f"{cfg.target}: {name} per arm (mean ± sd over seeds, lr chosen on validation)",
        colors={"none": "tab:orange"},
        color_by="weights",
        ci=ci if set(ci) <= set(summary) else None,
        references={k: v for k, v in references.items() if v is not None},
    )


def print_summary(summary: pd.DataFrame, task: str) -> None:
    """The summary table on stdout; a warning on stderr per arm whose runs did not all learn."""
    metric = primary_metric(task)[0]
    cols = [k for k in ARM_FLAGS if summary[k].nunique() > 1] or ["backbone"]
    cols += ["lr", f"{metric}_mean", f"{metric}_sd", f"{metric}_ci95_lo_mean"]
    cols += [f"{metric}_ci95_hi_mean", f"baseline_{metric}_mean", f"ridge_{metric}_mean"]
    cols += ["n", "seeds", "status"]
    print(summary[[c for c in cols if c in summary]].to_string(index=False))
    for _, r in summary[summary["status"] != "ok"].iterrows():
        arm = " / ".join(str(r[k]) for k in ARM_FLAGS)
        print(f"warning: {arm}: {r['status']} (not a normal result)", file=sys.stderr)
