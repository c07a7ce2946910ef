"""The ``slicelib`` command line: synth, train, evaluate, predict, compare, qc, course.

Examples::

    slicelib synth --out data/synth --n 200 --seed 0
    slicelib train --data data/synth --target age --out runs/age --preset cpu
    slicelib evaluate --run runs/age --split test --json runs/age/test.json
    slicelib predict --run runs/age scan1.nii.gz scan2.nii.gz --out predictions.csv
    slicelib compare --data data/synth --target age --out runs/cmp --preset smoke \\
        --weights imagenet,none --position learned,none --pooling mean --seed 0,1 --lr 1e-4,1e-3
    slicelib qc scan1.nii.gz scan2.nii.gz --out qc --jobs 2
    torchrun --nproc_per_node=2 -m slicelib train --data ... --target age --out runs/ddp

``train`` and ``compare`` take the same flags. In ``compare`` the flags of :data:`GRID_FLAGS`
take comma-separated values: one arm per combination of :data:`ARM_FLAGS`, trained per seed
and per learning rate; each arm and seed keeps the learning rate with the best validation
metric (``--axes`` is not a grid flag: ``sagittal,coronal`` is one model that reads both planes).

Training settings come from (later wins): defaults < ``--preset`` < ``--config FILE``
(TOML or YAML with TrainConfig keys and [model]/[preprocess] tables) < flags.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import itertools
import json
import os
import re
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "ARM_FLAGS", "GRID_FLAGS"]

POSITIONS = ("learned", "sinusoidal", "none")
NORMS = ("set", "slice", "none")
POOLINGS = ("mean", "max", "attention", "gated_attention")
YES_NO = ("no", "yes")
# the conditions of a compare grid: one arm (one summary row, one bar) per combination
ARM_FLAGS = ("backbone", "weights", "position", "norm", "pooling", "freeze_encoder")
# the flags a compare grid takes as comma-separated lists: the arms, the seeds, the lr grid
GRID_FLAGS = (*ARM_FLAGS, "seed", "lr")
# arm flags that mean nothing to a 3D CNN (sfcn_3d, densenet121_3d): "-" in its results
SLICE_ONLY_FLAGS = ("weights", "position", "norm", "pooling", "freeze_encoder")
NOT_APPLICABLE = "-"
COMPARE_DEFAULTS = {
    "weights": "imagenet,none",
    "position": "learned,sinusoidal,none",
    "seed": "0,1",
}


def _positive_int(s: str) -> int:
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"{s!r}: give a whole number >= 1")
    return int(s)


def _csv_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def _one_of(choices: tuple[str, ...] | None, cast=str):
    """argparse type: a comma-separated list whose items are each one of ``choices``."""

    def parse(s: str) -> list:
        values = [cast(v) for v in _csv_list(s)]
        bad = [v for v in values if choices and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{s!r}: give comma-separated values from {', '.join(choices or ['...'])}"
            )
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``slicelib`` command (one sub-parser per command)."""
    p = argparse.ArgumentParser(
        prog="slicelib", description="Position-encoded slice models for 3D brain MRI."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "synth",
        help="write a synthetic BIDS-like cohort",
        description="Write a synthetic BIDS-like cohort. To measure its properties (tissue "
        "volumes, planted effects), run: python benchmarks/synth_qa.py COHORT",
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, default=200, help="number of subjects (default 200)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ad-prevalence", type=float, default=None)
    s.add_argument("--jobs", type=int, default=1, help="worker processes")

    t = sub.add_parser("train", help="train a slice model (resumes if RUN_DIR has last.pt)")
    _add_train_flags(t)

    e = sub.add_parser("evaluate", help="metrics of a run beside the training baseline")
    e.add_argument("--run", required=True, help="run directory")
    e.add_argument("--data", default=None, help="table/BIDS folder (default: the run's data)")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--json", default=None, help="write the metrics here (JSON)")
    e.add_argument("--device", default="auto")

    q = sub.add_parser("predict", help="predict from NIfTI files with a run's preprocessing")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("files", nargs="+", help="3D NIfTI scans (.nii/.nii.gz)")
    q.add_argument("--out", default=None, help="CSV file (default: print to stdout)")
    q.add_argument("--checkpoint", default="best", choices=["best", "last"])
    q.add_argument("--device", default="auto")

    c = sub.add_parser(
        "compare",
        help="a grid of runs: the train flags, comma-separated values of "
        + "/".join(f.replace("_", "-") for f in GRID_FLAGS),
        description="Train and evaluate a grid of arms on one split; per arm and seed the --lr "
        "with the best validation metric is reported (results.csv: lr, lr_grid, status ok | "
        "diverged | did not learn; lr_selection.csv: every candidate); summary.csv and "
        "compare.png show the arms beside the mean and ridge baselines (95 %% bootstrap CIs).",
    )
    _add_train_flags(c, grid=True)
    c.add_argument("--eval-split", default="test", choices=["val", "test", "all"])

    g = sub.add_parser(
        "qc",
        help="quality control of T1 scans: OUT/qc.csv (ok | flagged | error) and one figure each",
        description="Preprocess each scan (brain extraction, registration to MNI152) and check "
        "that it looks like a registered T1 brain. Exit code 0 even when scans are flagged (read "
        "OUT/qc.csv), 2 on bad arguments.",
    )
    g.add_argument("scans", nargs="+", help="T1 scans (.nii/.nii.gz)")
    g.add_argument("--out", required=True, help="output folder (qc.csv and one PNG per scan)")
    g.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    g.add_argument("--no-figures", action="store_true", help="skip the per-scan figures")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    k = sub.add_parser("course", help="run the course notebooks (slicelib.course)")
    k.add_argument("--preset", default="cpu")
    k.add_argument("--out", default="outputs/course")
    k.add_argument("--names", default=None, help="comma-separated notebook names (default: all)")
    return p


def _add_train_flags(t: argparse.ArgumentParser, grid: bool = False) -> None:
    """The flags of ``train``; with ``grid`` (``compare``) the GRID_FLAGS take lists."""

    def model_flag(name, choices, help, cast=str, const=None, each="one arm each"):
        flag = "--" + name.replace("_", "-")
        opt = {} if const is None else dict(nargs="?", const=[const] if grid else const)
        if grid:
            kw = dict(type=_one_of(choices, cast), default=COMPARE_DEFAULTS.get(name), **opt)
            extra = f" (default {kw['default']})" if kw["default"] else ""
            t.add_argument(flag, help=f"{help}; comma-separated, {each}{extra}", **kw)
        else:
            t.add_argument(flag, type=cast, choices=choices, help=help, **opt)

    t.add_argument("--data", help="participants table (.tsv/.csv) or BIDS folder")
    t.add_argument("--target", help="column to predict (e.g. age, ad)")
    t.add_argument("--out", required=True, help="run directory" + (" root" if grid else ""))
    t.add_argument("--task", choices=["regression", "binary", "multiclass"])
    model_flag(
        "backbone",
        None,
        "2D torchvision model name (resnet18, mobilenet_v2, ...; slice_cnn) or a 3D CNN reading "
        "the whole volume: sfcn_3d | densenet121_3d (these take no weights, position, norm, "
        "pooling or frozen encoder)",
    )
    model_flag("weights", None, "imagenet | none (scratch) | PATH to a torchvision state_dict")
    model_flag("position", POSITIONS, "slice position embedding: learned | sinusoidal | none")
    model_flag(
        "norm",
        NORMS,
        "LayerNorm after the position: set (over the (S, D) slice set, per-slice affine: the "
        "paper's, default) | slice (over D) | none",
    )
    model_flag("pooling", POOLINGS, "slice pooling: " + " | ".join(POOLINGS))
    model_flag("seed", None, "model and training seed", cast=int)
    model_flag(
        "freeze_encoder",
        YES_NO,
        "keep the 2D encoder fixed and train on its cached slice features (no = fine-tune, the "
        "default; the flag alone means yes; slice models only)",
        const="yes",
    )
    t.add_argument(
        "--axes",
        help="slicing axes of one model: sagittal[,coronal,axial]"
        + (" (one model for the whole grid, not a grid flag)" if grid else ""),
    )
    model_flag(
        "lr",
        None,
        "learning rate (Adam)",
        cast=float,
        each="each arm and seed trains one run per value and keeps the one with the best "
        "validation metric (the lr is chosen, not compared)",
    )
    t.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="encoder in NHWC memory layout (same model; ~2x faster MobileNetV2 training on a "
        "CPU; the cpu preset turns it on)",
    )
    for flag, kind, help in (  # kind: a type, or the choices of a string flag
        ("--embed-dim", int, "slice embedding size D"),
        ("--epochs", int, None),
        ("--batch-size", int, "volumes per batch"),
        ("--weight-decay", float, None),
        ("--schedule", ("constant", "cosine"), "learning-rate schedule"),
        ("--grad-accum", int, "micro-batches per optimiser step"),
        ("--patience", int, "early stopping patience (epochs); 0 = off"),
        ("--class-weights", ("balanced", "none"), "balanced (default): each class counts equally"),
        ("--monitor", str, "history column that picks the best epoch, e.g. val_auc"),
        ("--split-seed", int, "seed of the subject split (the same for every seed and arm)"),
        ("--device", str, "auto | cuda | mps | cpu"),
        ("--precision", ("auto", "bf16", "fp32"), None),
        ("--num-workers", int, None),
        ("--cache-dir", str, "preprocessed-volume (and frozen-feature) cache folder"),
        ("--preset", ("smoke", "cpu", "gpu"), "sizes: laptop smoke test | laptop CPU | paper GPU"),
        ("--config", str, "TOML or YAML config file (TrainConfig keys, [model], [preprocess])"),
    ):
        kw = dict(type=kind) if isinstance(kind, type) else dict(choices=kind)
        t.add_argument(flag, help=help, **kw)
    t.add_argument("--no-progress", action="store_true", help="no progress bars")


def _model_overrides(a: argparse.Namespace) -> dict:
    """Model flags given on the command line -> the ``model`` table of TrainConfig."""
    model = {}
    for key in ("backbone", "embed_dim", "position", "norm", "pooling", "channels_last"):
        if getattr(a, key) is not None:
            model[key] = getattr(a, key)
    if a.weights is not None:
        model["weights"] = None if a.weights == "none" else a.weights
    if a.axes is not None:
        axes = _csv_list(a.axes)
        model["axes"] = axes[0] if len(axes) == 1 else axes
    return model


def _overrides(a: argparse.Namespace) -> dict:
    """Flags given on the command line -> TrainConfig overrides (None = not given)."""
    keys = ["data", "target", "out", "task", "seed", "epochs", "batch_size", "lr"]
    keys += ["weight_decay", "schedule", "grad_accum", "split_seed", "class_weights", "monitor"]
    keys += ["device", "precision", "num_workers", "cache_dir", "preset"]
    over = {k: getattr(a, k) for k in keys}
    if a.freeze_encoder is not None:
        over["freeze_encoder"] = a.freeze_encoder == "yes"
    if a.patience is not None and a.patience > 0:
        over["patience"] = a.patience
    model = _model_overrides(a)
    if model:
        over["model"] = model
    return over


def _resolve(a: argparse.Namespace):
    """The TrainConfig of a parsed ``train`` command line (or one run of a compare grid).

    For the 3D CNN arm of a compare grid (``a.volume_arm``) the config file's slice-model
    settings (embed_dim, position, weights, ...) are left out, as a preset's are.
    """
    from slicelib.config import SLICE_ONLY_KEYS, load_config_file, resolve_config

    file, over = a.config, _overrides(a)
    if getattr(a, "volume_arm", False) and file:
        d = load_config_file(file)
        drop = (*SLICE_ONLY_KEYS, "weights")
        model = {k: v for k, v in d.pop("model", {}).items() if k not in drop}
        given = {k: v for k, v in over.items() if v is not None}
        over = {**d, **given, "model": {**model, **given.get("model", {})}}
        file = None
    cfg = resolve_config(preset=a.preset, file=file, overrides=over)
    if a.patience == 0:  # --patience 0 switches early stopping off
        cfg.patience = None
    return cfg


def cmd_synth(a: argparse.Namespace) -> int:
    """``slicelib synth``: write a synthetic cohort."""
    from slicelib.synth import make_cohort

    kw = dict(n=a.n, seed=a.seed, progress=True)
    if a.ad_prevalence is not None:
        kw["ad_prevalence"] = a.ad_prevalence
    if a.jobs != 1:
        kw["n_jobs"] = a.jobs
    table = make_cohort(a.out, **kw)
    print(f"wrote {a.n} subjects: {table}")
    print(f"measure it with: python benchmarks/synth_qa.py {a.out}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """``slicelib train``: resolve the config, split by subject, train (resumes)."""
    import yaml

    from slicelib.train import train

    cfg = _resolve(a)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # torchrun sets RANK
    if rank0:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(
            "# the resolved training config; rerun with: slicelib train --config <this file>\n"
            + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        )
    run_dir = train(cfg, progress=not a.no_progress)
    if rank0:
        print(f"run: {run_dir}  (best.pt, last.pt, history.csv, split.csv, config.json)")
    return 0


def _print_metrics(res: dict) -> None:
    keys = ["mae", "rmse", "pearson_r", "r2", "accuracy", "balanced_accuracy", "auc"]
    lines = [f"{res['split']} (n={res['n']}, checkpoint epoch {res['checkpoint_epoch'] + 1})"]
    for k in [k for k in keys if k in res]:
        m, b = res.get(k), res.get("baseline_" + k)
        fm = "-" if m is None else f"{m:.4f}"
        fb = "-" if b is None else f"{b:.4f}"
        lines.append(f"  {k:<18} model {fm:>9}   baseline {fb:>9}")
    print("\n".join(lines))


def cmd_evaluate(a: argparse.Namespace) -> int:
    """``slicelib evaluate``: metrics beside the baseline, written as JSON."""
    from slicelib.runs import evaluate_run

    res = evaluate_run(a.run, data=a.data, split=a.split, checkpoint=a.checkpoint, device=a.device)
    _print_metrics(res)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """``slicelib predict``: one row per file; failures reported, exit code 1 if any failed."""
    from slicelib.runs import predict_files

    df = predict_files(a.run, a.files, checkpoint=a.checkpoint, device=a.device)
    bad = df[df["error"] != ""]
    for _, r in bad.iterrows():
        print(f"slicelib predict: {r['path']}: {r['error']}", file=sys.stderr)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.out, index=False)
        print(f"wrote {len(df)} rows ({len(bad)} failed) to {a.out}", file=sys.stderr)
    else:
        df.to_csv(sys.stdout, index=False)
    return 1 if len(bad) else 0


def _grid(a: argparse.Namespace) -> tuple[dict[str, list], list[dict]]:
    """{flag: values} of every GRID_FLAG, and one {flag: value} per (arm, seed) over ARM_FLAGS
    and seed (each trained once per ``values["lr"]``). A flag not given takes the value the
    config resolves to (SliceModel's default; "none" = no weights/position). A 3D CNN arm has
    "-" for SLICE_ONLY_FLAGS: one run per seed, not one per setting it does not have."""
    from slicelib.cnn3d import is_volume_backbone
    from slicelib.model import SliceModel

    base = _resolve(_one_run(a, dict.fromkeys(GRID_FLAGS)))
    defaults = inspect.signature(SliceModel).parameters
    values = {}
    for flag in GRID_FLAGS:
        if getattr(a, flag) is not None:
            values[flag] = getattr(a, flag)
            continue
        default = defaults[flag].default if flag in defaults else None
        value = base.model.get(flag, default)
        if flag in ("seed", "lr", "freeze_encoder"):
            value = getattr(base, flag)
            value = YES_NO[int(value)] if flag == "freeze_encoder" else value
        values[flag] = ["none" if value is None else value]
    runs = []
    for combo in itertools.product(*(values[f] for f in (*ARM_FLAGS, "seed"))):
        run = dict(zip((*ARM_FLAGS, "seed"), combo))
        if is_volume_backbone(run["backbone"]):
            run.update(dict.fromkeys(SLICE_ONLY_FLAGS, NOT_APPLICABLE))
        if run not in runs:
            runs.append(run)
    return values, runs


def _one_run(a: argparse.Namespace, run: dict) -> argparse.Namespace:
    """The ``train`` arguments of one run of a compare grid (None: not given; ``run`` may hold
    an ``lr``). A 3D CNN arm gets no slice-model flag (``"-"``, --embed-dim, --axes, ...)."""
    from slicelib.cnn3d import is_volume_backbone

    one = argparse.Namespace(**vars(a))
    one.lr = None if isinstance(a.lr, list) else a.lr  # compare's lr grid: set per candidate
    for flag, value in run.items():
        setattr(one, flag, None if value == NOT_APPLICABLE else value)
    one.volume_arm = is_volume_backbone(run.get("backbone"))
    if one.volume_arm:
        one.embed_dim = one.axes = one.channels_last = None
    weights = run.get("weights")
    if weights not in ("imagenet", "none", None, NOT_APPLICABLE):
        weights = Path(str(weights)).stem  # a local state_dict
    name = [run.get("backbone"), weights, *(run.get(k) for k in ("position", "norm", "pooling"))]
    name = [str(v) for v in name if v != NOT_APPLICABLE]
    name += ["frozen"] * (run.get("freeze_encoder") == "yes") + [f"seed{run.get('seed')}"]
    if run.get("lr") is not None and len(a.lr or []) > 1:
        name.append(f"lr{run['lr']:g}")
    one.out = str(Path(a.out) / "-".join(name))
    return one


def _non_finite(err: Exception) -> bool:
    """Whether a training error comes from NaN/inf outputs (a diverged run)."""
    return bool(re.search(r"\bnan\b|infinit|non-finite|\binf\b", str(err), re.IGNORECASE))


def _candidate(a: argparse.Namespace, run: dict, lr: float) -> dict:
    """Train one (arm, seed, lr) run; returns ``run`` with ``lr``, :func:`_judge`'s verdict and
    ``run`` (the folder). A training error from NaN/inf outputs makes it "diverged"."""
    from slicelib.train import train

    cfg = _resolve(_one_run(a, {**run, "lr": lr}))
    error = None
    try:
        train(cfg, progress=False)
    except (ValueError, RuntimeError, FloatingPointError) as err:
        if not _non_finite(err):
            raise
        error = f"{type(err).__name__}: {err}"
    return dict(run, lr=lr, **_judge(Path(cfg.out), cfg, error), run=cfg.out)


def _judge(run_dir: Path, cfg, error: str | None = None) -> dict:
    """A finished run judged on its validation set (history.csv, config.json, split.csv).

    Returns ``status`` ("ok" | "diverged": a training error from NaN/inf, a non-finite training
    loss or no best checkpoint | "did not learn": at its best epoch the validation MAE is no
    lower than the training mean's (regression), or the balanced accuracy no higher than the
    majority class's 1/C), ``monitor`` (the history column that picks the best epoch),
    ``val_best`` (its value there), ``val_baseline`` (the baseline's MAE or 1/C), ``best_epoch``
    (1-based) and ``note`` (why it diverged).
    """
    import numpy as np
    import pandas as pd

    from slicelib.train import monitor_of

    monitor, mode = monitor_of(cfg)
    out = dict(status="diverged", monitor=monitor, val_best=None, note=error or "")
    hist = run_dir / "history.csv"
    hist = pd.read_csv(hist) if hist.is_file() else pd.DataFrame({"train_loss": []})
    if error is None and not np.isfinite(pd.to_numeric(hist["train_loss"])).all():
        out["note"] = "non-finite training loss in history.csv"
    if out["note"] or hist.empty or not (run_dir / "best.pt").is_file():
        out["note"] = out["note"] or "no best checkpoint (no finite validation value)"
        return out
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


def _choose(candidates: list[dict], mode: str) -> dict:
    """The candidate to report: "ok" first, then "did not learn", then "diverged"; within a
    status the best validation value (the first learning rate on ties)."""

    def rank(c: dict):
        v = c["val_best"]
        order = ("ok", "did not learn", "diverged").index(c["status"])
        return order, v is None, 0.0 if v is None else v if mode == "min" else -v

    return min(candidates, key=rank)


def _test_metrics(run_dir: str, split: str) -> dict:
    """evaluate_run's numbers for one run: metrics, ``*_ci95`` as ``*_ci95_lo``/``*_ci95_hi``."""
    from slicelib.runs import evaluate_run

    res = evaluate_run(run_dir, split=split, progress=False)
    out = {"n_subjects": res.pop("n"), "best_epoch": res.pop("checkpoint_epoch") + 1}
    for k, v in res.items():
        if k.endswith("_ci95") and isinstance(v, list) and len(v) == 2:
            out[f"{k}_lo"], out[f"{k}_hi"] = v
        elif isinstance(v, int | float) and not isinstance(v, bool) or v is None:
            out[k] = v
    return out


def cmd_compare(a: argparse.Namespace) -> int:
    """``slicelib compare``: per arm (ARM_FLAGS) and seed one run per learning rate, the best on
    validation reported. results.csv: per arm and seed its flags, ``lr``, ``lr_grid``,
    ``status``, the validation value, the test metrics with ``*_ci95_lo/hi`` and ridge, the run;
    lr_selection.csv: every candidate; summary.csv (:func:`_summary`); compare.png."""
    import pandas as pd
    from tqdm.auto import tqdm

    from slicelib.metrics import primary_metric
    from slicelib.train import monitor_of

    values, grid = _grid(a)
    cfg = _resolve(_one_run(a, dict.fromkeys(GRID_FLAGS)))
    mode = monitor_of(cfg)[1]
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    lr_grid = ",".join(f"{v:g}" for v in values["lr"])
    rows, tried = [], []
    for run in tqdm(grid, desc="compare", unit="arm x seed", disable=a.no_progress):
        candidates = [_candidate(a, run, lr) for lr in values["lr"]]
        best = _choose(candidates, mode)
        tried += [dict(c, chosen=c is best) for c in candidates]
        row = {**run, "lr": best["lr"], "lr_grid": lr_grid, "status": best["status"]}
        row[best["monitor"]] = best["val_best"]
        if best["status"] != "diverged":
            row.update(_test_metrics(best["run"], a.eval_split))
        rows.append({**row, "run": best["run"]})
        pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
        pd.DataFrame(tried).to_csv(root / "lr_selection.csv", index=False)
    results = pd.DataFrame(rows)
    metric = primary_metric(cfg.task)[0]
    summary = _summary(results, metric)
    summary.to_csv(root / "summary.csv", index=False)
    _compare_figure(summary, metric, cfg, a.eval_split).savefig(root / "compare.png", dpi=120)
    _print_summary(summary, metric)
    files = ", ".join(str(root / f) for f in ("results.csv", "lr_selection.csv", "summary.csv"))
    print(f"wrote {files}, {root / 'compare.png'}")
    return 0


def _summary(results, metric: str):
    """summary.csv: per arm the chosen learning rates, then mean and sd of every metric over
    the seeds whose run is "ok" (:func:`slicelib.plotting.summarise_runs`)."""
    import pandas as pd

    from slicelib import plotting

    skip = {*GRID_FLAGS, "run", "n_subjects", "best_epoch", "status", "lr_grid"}
    numeric = [c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])]
    metrics = [c for c in numeric if c not in skip and results[c].notna().any()]
    arms = list(ARM_FLAGS)
    summary = plotting.summarise_runs(results, metrics, by=arms, status="status")
    summary = summary.drop(columns=[c for c in summary if "_ci95_" in c and c.endswith("_sd")])
    lrs = results.groupby(arms, sort=False)["lr"].agg(lambda s: ", ".join(f"{v:g}" for v in s))
    summary = summary.merge(lrs.reset_index(), on=arms, how="left")
    return summary[arms + ["lr"] + [c for c in summary if c not in (*arms, "lr")]]


def _compare_figure(summary, metric: str, cfg, split: str):
    """compare.png: the primary metric per arm (mean ± sd over seeds, 95 % CI), the baselines
    (training mean / majority class, ridge) as grey bars beside the arms."""
    from slicelib import plotting

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


def _print_summary(summary, metric: str) -> None:
    """The summary table on stdout; a warning on stderr per arm whose runs did not all learn."""
    cols = [k for k in ARM_FLAGS if summary[k].nunique() > 1] or ["backbone"]
    cols += ["lr", f"{metric}_mean", f"{metric}_sd", f"{metric}_ci95_lo_mean"]
    cols += [f"{metric}_ci95_hi_mean", f"baseline_{metric}_mean", f"ridge_{metric}_mean"]
    cols += ["n", "seeds", "status"]
    print(summary[[c for c in cols if c in summary]].to_string(index=False))
    for _, r in summary[summary["status"] != "ok"].iterrows():
        arm = " / ".join(str(r[k]) for k in ARM_FLAGS)
        print(f"warning: {arm}: {r['status']} (not a normal result)", file=sys.stderr)


def cmd_qc(a: argparse.Namespace) -> int:
    """``slicelib qc``: OUT/qc.csv and one figure per scan (slicelib.qc.run_qc); a line per
    status. Exit code 0 even with flagged or failed scans: the csv says which and why."""
    from slicelib.qc import run_qc

    df = run_qc(a.scans, a.out, jobs=a.jobs, figures=not a.no_figures, progress=not a.no_progress)
    for status in ("ok", "flagged", "error"):
        names = [Path(p).name for p in df.loc[df["status"] == status, "path"]]
        more = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
        print(f"{status:<8} {len(names)} of {len(df)} scans" + ("" if status == "ok" else more))
    print(f"wrote {Path(a.out) / 'qc.csv'}")
    return 0


def cmd_course(a: argparse.Namespace) -> int:
    """``slicelib course``: run the course notebooks (slicelib.course.run_notebooks)."""
    from slicelib.course import run_notebooks

    names = _csv_list(a.names) if a.names else None
    run_notebooks(a.out, preset=a.preset, names=names)  # raises naming the failed cell
    return 0


COMMANDS = {
    "synth": cmd_synth,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "compare": cmd_compare,
    "qc": cmd_qc,
    "course": cmd_course,
}


def _known_errors() -> tuple[type[Exception], ...]:
    """The errors slicelib raises for bad input or files (``*Error`` classes of its modules):
    reported in one line with exit code 2 instead of a traceback."""
    errors: list[type[Exception]] = [FileNotFoundError]
    for name in ("config", "train", "runs", "data", "datasets", "weights", "model"):
        try:
            found = vars(importlib.import_module(f"slicelib.{name}")).items()
        except ModuleNotFoundError:
            continue
        found = [v for k, v in found if k.endswith("Error") and isinstance(v, type)]
        errors += [v for v in found if issubclass(v, Exception) and v.__module__[:8] == "slicelib"]
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slicelib`` command. Returns the exit code (0 = success)."""
    args = build_parser().parse_args(argv)
    known = _known_errors()
    try:
        return COMMANDS[args.command](args)
    except known as err:
        print(f"slicelib {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
