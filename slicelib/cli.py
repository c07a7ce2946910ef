"""The ``slicelib`` command line: synth, train, evaluate, predict, compare, course.

Examples::

    slicelib synth --out data/synth --n 200 --seed 0
    slicelib train --data data/synth --target age --out runs/age --preset cpu
    slicelib evaluate --run runs/age --split test --json runs/age/test.json
    slicelib predict --run runs/age scan1.nii.gz scan2.nii.gz --out predictions.csv
    slicelib compare --data data/synth --target age --out runs/cmp --preset smoke \\
        --weights imagenet,none --position learned,none --pooling mean --seed 0,1
    torchrun --nproc_per_node=2 -m slicelib train --data ... --target age --out runs/ddp

``train`` and ``compare`` take the same flags. In ``compare`` the model flags of
:data:`GRID_FLAGS` take comma-separated values: one run per combination (``--axes`` is not a
grid flag: ``sagittal,coronal`` is one model that reads both planes).

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
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "GRID_FLAGS"]

POSITIONS = ("learned", "sinusoidal", "none")
NORMS = ("set", "slice", "none")
POOLINGS = ("mean", "max", "attention", "gated_attention")
# model flags (and --seed) that a compare grid takes as comma-separated lists
GRID_FLAGS = ("backbone", "weights", "position", "norm", "pooling", "seed")
COMPARE_DEFAULTS = {
    "weights": "imagenet,none",
    "position": "learned,sinusoidal,none",
    "seed": "0,1",
}


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
        help="a grid of runs: the train flags, comma-separated values of " + "/".join(GRID_FLAGS),
    )
    _add_train_flags(c, grid=True)
    c.add_argument("--eval-split", default="test", choices=["val", "test", "all"])

    k = sub.add_parser("course", help="run the course notebooks (slicelib.course)")
    k.add_argument("--preset", default="cpu")
    k.add_argument("--out", default="outputs/course")
    k.add_argument("--names", default=None, help="comma-separated notebook names (default: all)")
    return p


def _add_train_flags(t: argparse.ArgumentParser, grid: bool = False) -> None:
    """The flags of ``train``; with ``grid`` (``compare``) the GRID_FLAGS take lists."""

    def model_flag(name, choices, help, cast=str):
        kw = dict(type=_one_of(choices, cast), default=COMPARE_DEFAULTS.get(name))
        if grid:
            extra = f" (default {kw['default']})" if kw["default"] else ""
            t.add_argument(f"--{name}", help=f"{help}; comma-separated, one run each{extra}", **kw)
        else:
            t.add_argument(f"--{name}", type=cast, choices=choices, help=help)

    t.add_argument("--data", help="participants table (.tsv/.csv) or BIDS folder")
    t.add_argument("--target", help="column to predict (e.g. age, ad)")
    t.add_argument("--out", required=True, help="run directory" + (" root" if grid else ""))
    t.add_argument("--task", choices=["regression", "binary", "multiclass"])
    model_flag("backbone", None, "torchvision model name, e.g. resnet18, mobilenet_v2, slice_cnn")
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
    t.add_argument(
        "--axes",
        help="slicing axes of one model: sagittal[,coronal,axial]"
        + (" (one model for the whole grid, not a grid flag)" if grid else ""),
    )
    t.add_argument("--embed-dim", type=int)
    t.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="encoder in NHWC memory layout (same model; ~2x faster MobileNetV2 training on a "
        "CPU; the cpu preset turns it on)",
    )
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--schedule", choices=["constant", "cosine"])
    t.add_argument("--grad-accum", type=int)
    t.add_argument("--patience", type=int, help="early stopping patience (epochs); 0 = off")
    t.add_argument(
        "--class-weights",
        choices=["balanced", "none"],
        help="classification loss weights (default balanced: each class counts equally)",
    )
    t.add_argument(
        "--monitor", help="history column that picks the best epoch, e.g. val_balanced_accuracy"
    )
    t.add_argument("--split-seed", type=int)
    t.add_argument("--device", help="auto | cuda | mps | cpu")
    t.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    t.add_argument("--num-workers", type=int)
    t.add_argument("--cache-dir")
    t.add_argument("--preset", choices=["smoke", "cpu", "gpu"])
    t.add_argument("--config", help="TOML or YAML config file")
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
    if a.patience is not None and a.patience > 0:
        over["patience"] = a.patience
    model = _model_overrides(a)
    if model:
        over["model"] = model
    return over


def _resolve(a: argparse.Namespace):
    """The TrainConfig of a parsed ``train`` command line (or one run of a compare grid)."""
    from slicelib.train import resolve_config

    cfg = resolve_config(preset=a.preset, file=a.config, overrides=_overrides(a))
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
    """The conditions of a compare grid: {flag: values} and one {flag: value} per run.

    A GRID_FLAG not given takes the one value the config resolves to (SliceModel's default
    when the config has none; ``"none"`` for no weights or no position).
    """
    from slicelib.model import SliceModel

    base = _resolve(_one_run(a, dict.fromkeys(GRID_FLAGS)))
    defaults = inspect.signature(SliceModel).parameters
    values = {}
    for flag in GRID_FLAGS:
        if getattr(a, flag) is not None:
            values[flag] = getattr(a, flag)
            continue
        default = defaults[flag].default if flag in defaults else None
        value = base.seed if flag == "seed" else base.model.get(flag, default)
        values[flag] = ["none" if value is None else value]
    runs = [dict(zip(GRID_FLAGS, combo)) for combo in itertools.product(*values.values())]
    return values, runs


def _one_run(a: argparse.Namespace, run: dict) -> argparse.Namespace:
    """The ``train`` arguments of one run of a compare grid (None: not given)."""
    one = argparse.Namespace(**vars(a))
    for flag, value in run.items():
        setattr(one, flag, value)
    weights = run["weights"]
    if weights not in ("imagenet", "none", None):
        weights = Path(str(weights)).stem  # a local state_dict
    name = [run["backbone"], weights, run["position"], run["norm"], run["pooling"]]
    one.out = str(Path(a.out) / ("-".join(map(str, name)) + f"-seed{run['seed']}"))
    return one


def cmd_compare(a: argparse.Namespace) -> int:
    """``slicelib compare``: train/evaluate a grid of runs; results.csv, summary.csv, figure.

    results.csv has one row per run (its GRID_FLAGS values, the evaluation metrics, the run
    folder); summary.csv the mean and sd of every metric over seeds per condition
    (:func:`slicelib.plotting.summarise_runs`); compare.png the primary metric per condition
    (:func:`slicelib.plotting.plot_results`).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from slicelib import plotting
    from slicelib.metrics import primary_metric
    from slicelib.runs import evaluate_run
    from slicelib.train import train

    values, grid = _grid(a)
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in tqdm(grid, desc="compare", unit="run"):
        cfg = _resolve(_one_run(a, run))
        run_dir = train(cfg, progress=False)
        res = evaluate_run(run_dir, split=a.eval_split, progress=False)
        numbers = {k: v for k, v in res.items() if isinstance(v, int | float) or v is None}
        numbers["n_subjects"] = numbers.pop("n")
        numbers["best_epoch"] = numbers.pop("checkpoint_epoch") + 1
        rows.append({**run, **numbers, "run": str(run_dir)})
        pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    results = pd.DataFrame(rows)
    keys = [k for k in GRID_FLAGS if k != "seed"]
    skip = set(GRID_FLAGS) | {"run", "n_subjects", "best_epoch"}
    metrics = [c for c in results.columns if c not in skip and results[c].notna().any()]
    summary = plotting.summarise_runs(results, metrics, by=keys)
    summary.to_csv(root / "summary.csv", index=False)

    metric, _ = primary_metric(cfg.task)
    name = f"{a.eval_split} {metric.replace('_', ' ')}"
    unit = ""
    if cfg.task == "regression":
        unit = " (years)" if cfg.target.lower() in ("age", "age_years") else f" ({cfg.target})"
    fig = plotting.plot_results(
        summary,
        value=metric,
        condition=[k for k in keys if len(values[k]) > 1] or keys,
        metric_label=name + unit,
        title=f"{cfg.target}: {name} per condition (mean ± sd over seeds)",
        colors={"none": "tab:orange"},
        color_by="weights",
        baseline=summary[f"baseline_{metric}_mean"].mean(),
    )
    fig.savefig(root / "compare.png", dpi=120)
    print(summary[keys + [f"{metric}_mean", f"{metric}_sd", f"baseline_{metric}_mean", "seeds"]])
    print(f"wrote {root / 'results.csv'}, {root / 'summary.csv'}, {root / 'compare.png'}")
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
    "course": cmd_course,
}


def _known_errors() -> tuple[type[Exception], ...]:
    """The errors slicelib raises for bad input or files (``*Error`` classes of its modules):
    reported in one line with exit code 2 instead of a traceback."""
    errors: list[type[Exception]] = [FileNotFoundError]
    for name in ("config", "train", "runs", "data", "datasets", "weights", "model"):
        try:
            module = importlib.import_module(f"slicelib.{name}")
        except ModuleNotFoundError:
            continue
        errors += [
            v
            for k, v in vars(module).items()
            if k.endswith("Error")
            and isinstance(v, type)
            and issubclass(v, Exception)
            and v.__module__.startswith("slicelib")
        ]
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
