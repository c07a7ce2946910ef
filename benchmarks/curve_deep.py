"""Learning-curve points of a trained arm (fine-tuned, scratch, 3D CNN): issue 20, item 6.

``python -m slicelib.curves`` fits the ridge arms of the learning curve on nested training
subsets of every fold and writes the training ids of every point to ``subsets.json``. A trained
arm cannot be fitted there (minutes per run); this script trains it on **the same ids**: for
each fraction it writes that point's training subsets (subset seed ``--subset-seed``) as a
``--train-ids`` table and runs the library's cross-validation on them::

    slicelib compare --data data/ixi_hh_4mm/participants.tsv --target age \\
        --folds data/ixi_hh_4mm/folds.tsv --train-ids <work>/f<fraction>/train_ids.tsv \\
        --out <work>/f<fraction> <the arm's flags after -->

so per fold the model is trained on the point's subjects only (an inner validation split of
them chooses the lr and the early-stopping epoch) and predicts the whole held-out fold. The
out-of-fold predictions become curve rows (:data:`slicelib.curves.PREDICTION_COLUMNS`; arm
named as in ``oof.csv``, ``n_train`` = the point's subset size, the number the ridges were fitted
on) in ``--rows``; rows of the same arm and fraction are replaced. ``--full OOF`` adds the 100 %
point from a finished cross-validation of the same arm on all training subjects
(``benchmarks/results/ixi_cv_finetune/oof.csv``: the 100 % subset is every training subject).
Then::

    python -m slicelib.curves --data data/ixi_hh_4mm --out benchmarks/results/learning_curve \\
        --from-predictions --extra <rows>

Example (the fine-tuned ImageNet slice model at the README's CV settings)::

    SLICELIB_WEIGHTS_DIR=/work/shared/weights nice -n 5 python benchmarks/curve_deep.py \\
        --fractions 0.25 0.5 0.75 --work /work/runs/curve_finetune \\
        --full benchmarks/results/ixi_cv_finetune/oof.csv \\
        --rows benchmarks/results/learning_curve/deep_rows.csv -- \\
        --preset cpu --epochs 12 --patience 5 --weights imagenet --position learned \\
        --norm set --pooling mean --seed 0 --lr 1e-3,3e-3

``--constant-steps`` multiplies the arm's ``--epochs`` and ``--patience`` by 1 / fraction
(rounded), so a model trained on a quarter of the subjects gets the same number of optimisation
steps as on all of them: with a fixed epoch count a small training set also gets fewer steps, and
the curve would mix the effect of data with that of training time.

It resumes: a fraction whose cross-validation is finished is read, not retrained (the
cross-validation itself resumes per fold and run).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from slicelib.crossval import write_train_ids
from slicelib.curves import PREDICTION_COLUMNS
from slicelib.cv import read_folds, read_oof
from slicelib.utils import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def point_ids(subsets: dict, fraction: float, subset_seed: int) -> dict[int, list[str]]:
    """{fold k: training ids} of one learning-curve point of ``subsets.json``."""
    if fraction == 1.0:  # the full set is every seed's, stored once under the first seed
        subset_seed = next((int(k.split("/")[1][4:]) for k in subsets if k.endswith("/1")), 0)
    key = f"/seed{subset_seed}/{fraction:g}"
    ids = {int(k.split("/")[0][4:]): v for k, v in subsets.items() if k.endswith(key)}
    if not ids:
        raise SystemExit(f"subsets.json has no point for fraction {fraction:g}, seed {subset_seed}")
    return ids


def curve_rows(oof: pd.DataFrame, ids: dict[int, list[str]], fraction: float, seed: int):
    """Curve rows (PREDICTION_COLUMNS) of an oof.csv trained on the point ``ids``."""
    rows = oof.copy()
    rows["fraction"] = fraction
    rows["subset_seed"] = seed
    rows["n_train"] = rows["fold"].astype(int).map({k: len(v) for k, v in ids.items()})
    return rows[PREDICTION_COLUMNS]


def scaled_flags(flags: list[str], fraction: float) -> list[str]:
    """``flags`` with the values of ``--epochs`` and ``--patience`` multiplied by 1 / fraction
    (rounded): the same number of optimisation steps at every training-set size."""
    out = list(flags)
    for name in ("--epochs", "--patience"):
        if name in out:
            i = out.index(name) + 1
            out[i] = str(max(1, round(int(out[i]) / fraction)))
        elif name == "--epochs":
            raise SystemExit("--constant-steps needs the arm's --epochs among the flags after --")
    return out


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    arm_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/ixi_hh_4mm/participants.tsv")
    ap.add_argument("--folds", default="data/ixi_hh_4mm/folds.tsv")
    ap.add_argument("--subsets", default="benchmarks/results/learning_curve/subsets.json")
    ap.add_argument(
        "--fractions", type=float, nargs="*", default=[0.25, 0.5, 0.75],
        help="points below 100 %% to train (none: only --full's rows)",
    )  # fmt: skip
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--work", required=True, help="where the runs go (not the repository)")
    ap.add_argument("--full", default=None, help="oof.csv of the same arm on all training ids")
    ap.add_argument("--rows", required=True, help="the curve rows CSV to write or update")
    ap.add_argument(
        "--constant-steps", action="store_true",
        help="scale --epochs and --patience by 1 / fraction (the same number of steps)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    if a.fractions and not arm_flags:
        raise SystemExit("give the arm's slicelib compare flags after --")
    if not a.fractions and not a.full:
        raise SystemExit("nothing to do: give --fractions to train or --full to add")
    subsets = json.loads(Path(a.subsets).read_text())
    folds = read_folds(a.folds)
    rows = []
    for f in sorted(a.fractions):
        ids = point_ids(subsets, f, a.subset_seed)
        out = Path(a.work) / f"f{f:g}"
        out.mkdir(parents=True, exist_ok=True)
        given = out / "train_ids_given.tsv"
        write_train_ids(given, ids)
        cmd = [sys.executable, "-m", "slicelib", "compare", "--data", a.data, "--target", "age"]
        cmd += ["--folds", a.folds, "--train-ids", str(given), "--out", str(out), "--no-progress"]
        cmd += scaled_flags(arm_flags, f) if a.constant_steps else arm_flags
        print("$ " + shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"fraction {f:g}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        oof = read_oof(out / "oof.csv")
        if set(oof["participant_id"]) != set(folds["participant_id"]):
            raise SystemExit(f"{out / 'oof.csv'} does not predict every subject; rerun to resume")
        rows.append(curve_rows(oof, ids, f, a.subset_seed))
    if a.full:
        rows.append(curve_rows(read_oof(a.full), point_ids(subsets, 1.0, 0), 1.0, 0))
    new = pd.concat(rows, ignore_index=True)
    path = Path(a.rows)
    if path.is_file():
        old = pd.read_csv(path, dtype={"participant_id": str})
        replaced = old.set_index(["arm", "fraction"]).index.isin(
            list(new.set_index(["arm", "fraction"]).index.unique())
        )
        new = pd.concat([old[~replaced], new], ignore_index=True)
    new = new.sort_values(["arm", "fraction", "fold", "participant_id"])
    atomic_write(path, lambda tmp: new.to_csv(tmp, index=False, float_format="%.7g"))
    print(f"wrote {len(new)} rows to {path}")


if __name__ == "__main__":
    main()
