"""The ``slicelib`` command line: synth, train, evaluate, predict, compare, qc, course.

Examples::

    slicelib synth --out data/synth --n 200 --seed 0
    slicelib train --data data/synth --target age --out runs/age --preset cpu
    slicelib evaluate --run runs/age --split test --out runs/age/test.json
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
import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch.distributed as dist
import yaml

from slicelib import compare as C
from slicelib import crossval
from slicelib.cache import run_qc
from slicelib.compare import ARM_FLAGS, GRID_FLAGS  # the flags a compare grid takes as lists
from slicelib.config import PRESETS, resolve_config
from slicelib.course import run_notebooks
from slicelib.data import METHODS
from slicelib.errors import CheckpointError, ConfigError, DataError, PipelineError, WeightsError
from slicelib.model import NORMS, POOLINGS, POSITIONS
from slicelib.runs import evaluate_run, predict_ensemble, predict_files
from slicelib.synth import make_cohort
from slicelib.train import train

__all__ = ["main", "build_parser", "ARM_FLAGS", "GRID_FLAGS", "KNOWN_ERRORS"]

#: Errors of bad input or files: reported in one line with exit code 2 instead of a traceback.
KNOWN_ERRORS = (FileNotFoundError, DataError, PipelineError, ConfigError, CheckpointError)
KNOWN_ERRORS += (WeightsError,)
YES_NO = ("no", "yes")
JOBS_HELP = "preprocessing worker processes (default 1)"
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
    s.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")

    t = sub.add_parser("train", help="train a slice model (resumes if RUN_DIR has last.pt)")
    _add_train_flags(t)

    e = sub.add_parser("evaluate", help="metrics of a run beside the training baseline")
    e.add_argument("--run", required=True, help="run directory")
    e.add_argument("--data", default=None, help="table/BIDS folder (default: the run's data)")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument(
        "--baseline-features",
        metavar="CSV",
        help="features of the ridge baseline instead of down-sampled voxels: a CSV/TSV table, "
        "one row per subject keyed by participant_id (else its first column, e.g. MRID), "
        "positive numbers used log-transformed (e.g. data/ixi_hh_4mm/roi_volumes.csv)",
    )
    e.add_argument("--out", "--json", default=None, help="write the metrics here (JSON file)")
    e.add_argument("--device", default="auto")
    e.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="preprocessing worker processes for scans not cached yet (default: the run's)",
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    q = sub.add_parser("predict", help="predict from NIfTI files with a run's preprocessing")
    q.add_argument(
        "--run", required=True, action="append",
        help="run directory; give --run several times for an ensemble (mean of the runs)",
    )  # fmt: skip
    q.add_argument("files", nargs="+", help="3D NIfTI scans (.nii/.nii.gz)")
    q.add_argument("--out", default=None, help="CSV file (default: print to stdout)")
    q.add_argument("--checkpoint", default="best", choices=["best", "last"])
    q.add_argument("--device", default="auto")
    q.add_argument("--jobs", type=_positive_int, default=1, help=JOBS_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")

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
    c.add_argument(
        "--folds",
        default=None,
        help="folds table (.tsv: participant_id, fold), e.g. data/ixi_hh_4mm/folds.tsv: "
        "cross-validate the grid (slicelib.crossval): per fold, train on the other folds with "
        "the lr and early stopping chosen on an inner validation split of them, predict the "
        "fold; OUT/oof.csv, lr_choice.csv, summary.csv, paired.csv, runs in OUT/fold<k>; "
        "resumes (--eval-split does not apply)",
    )
    c.add_argument(
        "--train-ids",
        default=None,
        help="with --folds: a table (.tsv: fold, participant_id) of each fold's training "
        "subjects, a subset of the other folds (e.g. one learning-curve point); the rest of "
        "the other folds is left unused",
    )

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
    k.add_argument("--preset", default="cpu", choices=tuple(PRESETS))
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
        "2D torchvision model name (resnet18, mobilenet_v2, ...; slice_cnn), timm:<name> for any "
        "timm model with pooled features (timm:convnext_atto, timm:vit_small_patch14_dinov2, ...) "
        "or a 3D CNN reading "
        "the whole volume: sfcn_3d | densenet121_3d (these take no weights, position, norm, "
        "pooling or frozen encoder)",
    )
    model_flag(
        "weights",
        None,
        "imagenet | none (scratch) | PATH to a state_dict (.pth; .safetensors for timm)",
    )
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
        (
            "--head",
            ("mlp", "ridge"),
            "mlp (default: trained by the epochs loop) | ridge (with --freeze-encoder, "
            "regression: RidgeCV on block-pooled slice features, closed form, no epochs)",
        ),
        ("--ridge-blocks", int, "ridge head: slice blocks per axis (default 4)"),
        (
            "--augment",
            int,
            "augmented copies of each training head (TorchIO gamma, bias "
            "field, thick slices; default 0)",
        ),
        (
            "--copies",
            str,
            "participants table of pre-made training copies (make_derivative.py --copies): "
            "the training subjects' copies join training",
        ),
        ("--epochs", int, None),
        ("--batch-size", int, "volumes per batch"),
        ("--weight-decay", float, None),
        ("--schedule", ("constant", "cosine"), "learning-rate schedule"),
        ("--grad-accum", int, "micro-batches per optimiser step"),
        ("--patience", int, "early stopping patience (epochs); 0 = off"),
        (
            "--ema",
            float,
            "decay per optimiser step of a moving average of the weights, validated and saved "
            "instead of them (e.g. 0.95; default 0 = off)",
        ),
        ("--class-weights", ("balanced", "none"), "balanced (default): each class counts equally"),
        ("--monitor", str, "history column that picks the best epoch, e.g. val_auc"),
        ("--split-seed", int, "seed of the subject split (the same for every seed and arm)"),
        ("--device", str, "auto | cuda | mps | cpu"),
        ("--precision", ("auto", "bf16", "fp32"), None),
        ("--num-workers", int, "DataLoader worker processes"),
        ("--jobs", _positive_int, JOBS_HELP),
        (
            "--qc",
            ("warn", "exclude", "off"),
            "QC-flagged scans: warn (default) | exclude (from "
            "training and validation) | off; a scan that cannot be preprocessed always stops",
        ),
        ("--method", METHODS, "preprocessing method: " + " | ".join(METHODS)),
        ("--cache-dir", str, "preprocessed-volume (and frozen-feature) cache folder"),
        ("--preset", tuple(PRESETS), "sizes: " + " | ".join(PRESETS)),
        ("--config", str, "TOML or YAML config file (TrainConfig keys, [model], [preprocess])"),
    ):
        kw = dict(choices=kind) if isinstance(kind, tuple) else dict(type=kind)
        t.add_argument(flag, help=help, **kw)
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (one line per epoch still goes to stderr)",
    )


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
    keys += ["device", "precision", "num_workers", "jobs", "qc", "cache_dir", "preset"]
    keys += ["head", "ridge_blocks", "augment", "copies", "ema"]
    over = {k: getattr(a, k) for k in keys}
    if a.freeze_encoder is not None:
        over["freeze_encoder"] = a.freeze_encoder == "yes"
    if a.patience is not None and a.patience > 0:
        over["patience"] = a.patience
    model = _model_overrides(a)
    if model:
        over["model"] = model
    if a.method is not None:
        over["preprocess"] = {"method": a.method}
    return over


def _resolve(a: argparse.Namespace):
    """The TrainConfig of a parsed ``train`` command line (or the base config of ``compare``)."""
    cfg = resolve_config(preset=a.preset, file=a.config, overrides=_overrides(a))
    if a.patience == 0:  # --patience 0 switches early stopping off
        cfg.patience = None
    return cfg


def cmd_synth(a: argparse.Namespace) -> int:
    """``slicelib synth``: write a synthetic cohort."""
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
    cfg = _resolve(a)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # torchrun sets RANK
    if rank0:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(
            "# the resolved training config; rerun with: slicelib train --config <this file>\n"
            + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        )
    run_dir = train(cfg, progress="log" if a.no_progress else True)  # epoch lines for logs
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
    if res.get("ridge_mae") is not None:
        lines.append(f"  ridge mae {res['ridge_mae']:.4f} ({res.get('ridge_features', '')})")
    if res.get("qc_flagged"):
        left = "left out" if res.get("qc") == "exclude" else "included (qc warn)"
        ids = ", ".join(res["qc_flagged"][:10])
        lines.append(f"  QC flagged {len(res['qc_flagged'])} scan(s), {left}: {ids}")
    print("\n".join(lines))


def cmd_evaluate(a: argparse.Namespace) -> int:
    """``slicelib evaluate``: metrics beside the baseline, written as JSON."""
    kw = dict(data=a.data, split=a.split, checkpoint=a.checkpoint, device=a.device, jobs=a.jobs)
    kw["baseline_features"] = a.baseline_features
    res = evaluate_run(a.run, **kw, progress=not a.no_progress)
    _print_metrics(res)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.out}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """``slicelib predict``: one row per file; failures reported, exit code 1 if any failed."""
    kw = dict(checkpoint=a.checkpoint, device=a.device, progress=not a.no_progress)
    if len(a.run) == 1:
        df = predict_files(a.run[0], a.files, **kw, jobs=a.jobs)
    else:
        df = predict_ensemble(a.run, a.files, **kw, jobs=a.jobs)
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


def cmd_compare(a: argparse.Namespace) -> int:
    """``slicelib compare``: the grid of the comma-separated flags, run by
    :func:`slicelib.compare.compare` (files under --out: results.csv, lr_selection.csv,
    summary.csv, compare.png); the summary table printed."""
    plain = argparse.Namespace(**{**vars(a), **dict.fromkeys(GRID_FLAGS)})
    base = _resolve(plain)  # the train flags that are not grid flags
    grid = {f: getattr(a, f) for f in ARM_FLAGS if getattr(a, f) is not None}
    if a.train_ids and not a.folds:
        raise ConfigError("--train-ids gives each fold's training subjects: use it with --folds")
    if a.folds:
        return _cross_validate(a, base, grid)
    kw = dict(lrs=a.lr, seeds=a.seed, out=a.out, eval_split=a.eval_split)
    _, summary = C.compare(base, grid, **kw, progress=not a.no_progress)
    C.print_summary(summary, base.task)
    files = ("results.csv", "lr_selection.csv", "summary.csv", "compare.png")
    print("wrote " + ", ".join(str(Path(a.out) / f) for f in files))
    return 0


def _cross_validate(a: argparse.Namespace, base, grid: dict) -> int:
    """``slicelib compare --folds``: :func:`slicelib.crossval.cross_validate`; the summary
    (MAE [CI], r, bias-corrected gap) and the paired differences printed."""
    kw = dict(lrs=a.lr, seeds=a.seed, out=a.out, progress=not a.no_progress)
    if a.train_ids:
        kw["train_ids"] = crossval.read_train_ids(a.train_ids)
    res = crossval.cross_validate(base, a.folds, grid, **kw)
    if res["summary"] is None:
        print("no arm predicted every subject yet: no summary (rerun the same command to resume)")
    else:
        cols = ["arm", "n", "n_seeds", "mae", "mae_lo", "mae_hi", "r", "corrected_gap_mae"]
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(res["summary"][cols].round(3).to_string(index=False))
            if len(res["paired"]):
                print(res["paired"].round(4).to_string(index=False))
    files = ("oof.csv", "lr_choice.csv") + ("summary.csv", "paired.csv") * (
        res["summary"] is not None
    )
    print("wrote " + ", ".join(str(Path(a.out) / f) for f in files))
    return 0


def cmd_qc(a: argparse.Namespace) -> int:
    """``slicelib qc``: OUT/qc.csv and one figure per scan (slicelib.qc.run_qc); a line per
    status. Exit code 0 even with flagged or failed scans: the csv says which and why."""
    df = run_qc(a.scans, a.out, jobs=a.jobs, figures=not a.no_figures, progress=not a.no_progress)
    for status in ("ok", "flagged", "error"):
        names = [Path(p).name for p in df.loc[df["status"] == status, "path"]]
        more = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
        print(f"{status:<8} {len(names)} of {len(df)} scans" + ("" if status == "ok" else more))
    print(f"wrote {Path(a.out) / 'qc.csv'}")
    return 0


def cmd_course(a: argparse.Namespace) -> int:
    """``slicelib course``: run the course notebooks (slicelib.course.run_notebooks)."""
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slicelib`` command. Returns the exit code (0 = success)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KNOWN_ERRORS as err:
        print(f"slicelib {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
