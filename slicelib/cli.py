"""The ``slicelib`` command line: synth, train, evaluate, predict, compare, course.

Examples::

    slicelib synth --out data/synth --n 200 --seed 0 --check
    slicelib train --data data/synth --target age --out runs/age --preset cpu
    slicelib evaluate --run runs/age --split test --json runs/age/test.json
    slicelib predict --run runs/age scan1.nii.gz scan2.nii.gz --out predictions.csv
    slicelib compare --data data/synth --target age --out runs/cmp --preset smoke \\
        --inits imagenet,scratch --positions none,learned --poolings mean --seeds 0,1
    torchrun --nproc_per_node=2 -m slicelib train --data ... --target age --out runs/ddp

Training settings come from (later wins): defaults < ``--preset`` < ``--config FILE``
(TOML or YAML with TrainConfig keys and [model]/[preprocess] tables) < flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _csv_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def _weights(s: str | None):
    if s is None:
        return None
    return "none" if s.lower() in ("none", "scratch") else s


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``slicelib`` command (one sub-parser per command)."""
    p = argparse.ArgumentParser(
        prog="slicelib", description="Position-encoded slice models for 3D brain MRI."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic BIDS-like cohort")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, default=200, help="number of subjects (default 200)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ad-prevalence", type=float, default=None)
    s.add_argument("--jobs", type=int, default=1, help="worker processes")
    s.add_argument("--check", action="store_true", help="measure the cohort and print a report")

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

    c = sub.add_parser("compare", help="grid of runs: init x position x pooling x seeds")
    _add_train_flags(c, compare=True)
    c.add_argument("--inits", default="imagenet,scratch", help="imagenet,scratch")
    c.add_argument("--positions", default="learned,sinusoidal,none")
    c.add_argument("--poolings", default="mean")
    c.add_argument("--seeds", default="0,1")
    c.add_argument("--eval-split", default="test", choices=["val", "test", "all"])

    k = sub.add_parser("course", help="run the course notebooks (slicelib.course)")
    k.add_argument("--preset", default="cpu")
    k.add_argument("--out", default="outputs/course")
    k.add_argument("--names", default=None, help="comma-separated notebook names (default: all)")
    return p


def _add_train_flags(t: argparse.ArgumentParser, compare: bool = False) -> None:
    t.add_argument("--data", help="participants table (.tsv/.csv) or BIDS folder")
    t.add_argument("--target", help="column to predict (e.g. age, ad)")
    t.add_argument("--out", required=True, help="run directory" + (" root" if compare else ""))
    t.add_argument("--task", choices=["regression", "binary", "multiclass"])
    t.add_argument("--backbone", help="torchvision model name, e.g. resnet18, mobilenet_v2")
    if not compare:
        t.add_argument("--weights", help="imagenet | none | PATH to a torchvision state_dict")
        t.add_argument("--position", choices=["learned", "sinusoidal", "none"])
        t.add_argument("--pooling", choices=["mean", "max", "attention", "gated_attention"])
        t.add_argument("--seed", type=int)
    else:
        t.add_argument(
            "--imagenet-weights",
            default=None,
            help="PATH of a local ImageNet state_dict used for the 'imagenet' init (offline)",
        )
    t.add_argument("--axes", help="sagittal[,coronal,axial]")
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


def _overrides(a: argparse.Namespace) -> dict:
    """Flags given on the command line -> TrainConfig overrides (None = not given)."""
    model = {}
    for flag, key in (("backbone", "backbone"), ("embed_dim", "embed_dim")):
        if getattr(a, flag, None) is not None:
            model[key] = getattr(a, flag)
    if getattr(a, "weights", None) is not None:
        model["weights"] = None if _weights(a.weights) == "none" else a.weights
    if getattr(a, "position", None) is not None:
        model["position"] = None if a.position == "none" else a.position
    if getattr(a, "pooling", None) is not None:
        model["pooling"] = a.pooling
    if getattr(a, "channels_last", None) is not None:
        model["channels_last"] = a.channels_last
    if a.axes is not None:
        axes = _csv_list(a.axes)
        model["axes"] = axes[0] if len(axes) == 1 else axes
    over = {
        "data": a.data,
        "target": a.target,
        "out": a.out,
        "task": a.task,
        "seed": getattr(a, "seed", None),
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "weight_decay": a.weight_decay,
        "schedule": a.schedule,
        "grad_accum": a.grad_accum,
        "split_seed": a.split_seed,
        "class_weights": a.class_weights,
        "monitor": a.monitor,
        "device": a.device,
        "precision": a.precision,
        "num_workers": a.num_workers,
        "cache_dir": a.cache_dir,
        "preset": a.preset,
    }
    if a.patience is not None and a.patience > 0:
        over["patience"] = a.patience
    if model:
        over["model"] = model
    return over


def _resolve(a: argparse.Namespace, extra: dict | None = None):
    from slicelib.train import resolve_config

    over = _overrides(a)
    if extra:
        for k, v in extra.items():
            over[k] = {**over.get(k, {}), **v} if k == "model" else v
    cfg = resolve_config(preset=a.preset, file=a.config, overrides=over)
    if a.patience == 0:  # --patience 0 switches early stopping off
        cfg.patience = None
    return cfg


def cmd_synth(a: argparse.Namespace) -> int:
    """``slicelib synth``: write a synthetic cohort (and optionally measure it)."""
    from slicelib import synth

    kw = dict(n=a.n, seed=a.seed, progress=True)
    if a.ad_prevalence is not None:
        kw["ad_prevalence"] = a.ad_prevalence
    if a.jobs != 1:
        kw["n_jobs"] = a.jobs
    table = synth.make_cohort(a.out, **kw)
    print(f"wrote {a.n} subjects: {table}")
    if a.check:
        if not hasattr(synth, "measure_cohort"):
            print("error: slicelib.synth.measure_cohort is not available", file=sys.stderr)
            return 1
        report = synth.measure_cohort(a.out)
        fmt = getattr(synth, "format_report", None)
        print(fmt(report) if fmt else json.dumps(report, indent=2, default=str))
        if isinstance(report, dict) and report.get("ok") is False:
            return 1
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """``slicelib train``: resolve the config, split by subject, train (resumable)."""
    import yaml

    from slicelib.train import _dist_setup, train

    cfg = _resolve(a)
    rank, _, _ = _dist_setup()
    if rank == 0:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(
            "# the resolved training config; rerun with: slicelib train --config <this file>\n"
            + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        )
    run_dir = train(cfg, progress=not a.no_progress)
    if rank == 0:
        print(f"run: {run_dir}  (best.pt, last.pt, history.csv, split.csv, config.json)")
    return 0


def _print_metrics(res: dict) -> None:
    keys = [
        "mae",
        "rmse",
        "pearson_r",
        "r2",
        "accuracy",
        "balanced_accuracy",
        "auc",
    ]
    lines = [f"{res['split']} (n={res['n']}, checkpoint epoch {res['checkpoint_epoch'] + 1})"]
    for k in keys:
        if k in res:
            m, b = res.get(k), res.get("baseline_" + k)
            fm = "-" if m is None else f"{m:.4f}"
            fb = "-" if b is None else f"{b:.4f}"
            lines.append(f"  {k:<18} model {fm:>9}   baseline {fb:>9}")
    print("\n".join(lines))


def cmd_evaluate(a: argparse.Namespace) -> int:
    """``slicelib evaluate``: metrics beside the baseline, written as JSON."""
    from slicelib.train import evaluate_run

    res = evaluate_run(a.run, data=a.data, split=a.split, checkpoint=a.checkpoint, device=a.device)
    _print_metrics(res)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """``slicelib predict``: one row per file; failures reported, exit code 1 if any failed."""
    from slicelib.train import predict_files

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


def cmd_compare(a: argparse.Namespace) -> int:
    """``slicelib compare``: train/evaluate a grid of runs; results.csv, summary.csv, figure."""
    import pandas as pd
    from tqdm.auto import tqdm

    from slicelib.metrics import primary_metric
    from slicelib.train import evaluate_run, train

    inits, positions = _csv_list(a.inits), _csv_list(a.positions)
    poolings, seeds = _csv_list(a.poolings), [int(s) for s in _csv_list(a.seeds)]
    for i in inits:
        if i not in ("imagenet", "scratch"):
            raise SystemExit(f"slicelib compare: --inits takes imagenet,scratch; got {i!r}")
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    grid = [(i, p, q, s) for i in inits for p in positions for q in poolings for s in seeds]
    rows = []
    for init, pos, pool, seed in tqdm(grid, desc="compare", unit="run"):
        name = f"{init}-{pos}-{pool}-seed{seed}"
        weights = (a.imagenet_weights or "imagenet") if init == "imagenet" else None
        model = {"weights": weights, "position": None if pos == "none" else pos, "pooling": pool}
        cfg = _resolve(a, extra={"model": model, "seed": seed, "out": str(root / name)})
        run_dir = train(cfg, progress=False)
        res = evaluate_run(run_dir, split=a.eval_split, progress=False)
        row = {"init": init, "position": pos, "pooling": pool, "seed": seed, "run": str(run_dir)}
        row.update({k: v for k, v in res.items() if isinstance(v, (int, float)) or v is None})
        row.pop("checkpoint_epoch", None)
        row["best_epoch"] = res["checkpoint_epoch"] + 1
        rows.append(row)
        pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    results = pd.DataFrame(rows)
    keys = ["init", "position", "pooling"]
    metric_cols = [
        c
        for c in results.columns
        if c not in keys + ["seed", "run", "n"] and results[c].notna().any()
    ]
    agg = results.groupby(keys, sort=False)
    summary = agg[metric_cols].mean().add_suffix("_mean")
    sd = agg[metric_cols].std(ddof=1).add_suffix("_sd")
    summary = pd.concat([summary, sd], axis=1)
    summary["n_seeds"] = agg["seed"].count()
    summary["seeds"] = agg["seed"].apply(lambda s: ";".join(map(str, sorted(s))))
    summary = summary.reset_index()
    summary.to_csv(root / "summary.csv", index=False)
    metric, mode = primary_metric(cfg.task)
    title = (
        f"{cfg.target}: {a.eval_split} {metric.replace('_', ' ')} per condition "
        f"(seeds {', '.join(map(str, seeds))})"
    )
    _compare_figure(summary, metric, root / "compare.png", cfg.task, cfg.target, title)
    print(summary[keys + [f"{metric}_mean", f"{metric}_sd", f"baseline_{metric}_mean", "seeds"]])
    print(f"wrote {root / 'results.csv'}, {root / 'summary.csv'}, {root / 'compare.png'}")
    return 0


def _compare_figure(summary, metric: str, path: Path, task: str, target: str, title: str) -> None:
    """Bar chart of ``<metric>_mean`` ± ``<metric>_sd`` per condition of a compare grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r.init}\n{r.position}\n{r.pooling}" for r in summary.itertuples()]
    mean = summary[f"{metric}_mean"].to_numpy(dtype=float)
    sd = np.nan_to_num(summary[f"{metric}_sd"].to_numpy(dtype=float))
    colors = ["tab:blue" if i == "imagenet" else "tab:orange" for i in summary["init"]]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(labels) + 1.5), 3.8))
    ax.bar(range(len(labels)), mean, yerr=sd, capsize=4, color=colors)
    base = summary.get(f"baseline_{metric}_mean")
    if base is not None and base.notna().any():
        ax.axhline(float(base.mean()), ls="--", color="grey", label="baseline")
        ax.legend(loc="best")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    unit = ""
    if task == "regression":
        unit = " (years)" if target.lower() in ("age", "age_years") else f" (units of {target})"
    ax.set_ylabel(f"{metric.replace('_', ' ')}{unit}, mean ± sd over seeds")
    ax.set_xlabel("init / position embedding / pooling")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_course(a: argparse.Namespace) -> int:
    """``slicelib course``: run the course notebooks (slicelib.course.run_notebooks)."""
    try:
        from slicelib.course import run_notebooks
    except ImportError as err:
        print(f"slicelib course: not available yet ({err})", file=sys.stderr)
        return 2
    names = _csv_list(a.names) if a.names else None
    res = run_notebooks(a.out, preset=a.preset, names=names)
    failed = [r for r in res or [] if isinstance(r, dict) and r.get("ok") is False]
    return 1 if failed else 0


COMMANDS = {
    "synth": cmd_synth,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "compare": cmd_compare,
    "course": cmd_course,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slicelib`` command. Returns the exit code (0 = success)."""
    from slicelib.train import CheckpointError, ConfigError

    known: tuple = (ConfigError, CheckpointError, FileNotFoundError)
    try:
        from slicelib.data import DataError

        known += (DataError,)
    except ImportError:
        pass
    try:
        from slicelib.model import WeightsError

        known += (WeightsError,)
    except ImportError:
        pass
    args = build_parser().parse_args(argv)
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
