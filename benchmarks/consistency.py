"""Consistency benchmark: is the same head, stored in forms a user meets, given the same age?

Issue 20, item 5. Per fold of ``data/ixi_hh_4mm/folds.tsv``, the best slice model so far (a
ridge read-out of frozen ImageNet MobileNetV2 slice features, 3 axes, 4 blocks per axis) is
trained on the other four folds with the library's command line::

    slicelib train --data data/ixi_hh_4mm/participants.tsv --target age --preset cpu \\
        --freeze-encoder --head ridge --ridge-blocks 4 --axes sagittal,coronal,axial \\
        --weights imagenet --seed 0 --config <split.toml> --out <work>/runs/fold<k>

(``split.toml`` gives ``TrainConfig.split``: fold k "test", a seeded 10 % of the other folds
"val", the rest "train"). A seeded choice of ``--per-fold`` test subjects of each fold is then
re-stored from its raw 2 mm head (``ixi_hh_2mm``) in the six forms of
:data:`restore.FORMS` (FreeSurfer-conformed 1 mm uint8, gamma 0.7 and 1.4, a bias field, 5.5 mm
thick slices, int16 x 7.3), and the original file and every form are predicted by that fold's
model with :func:`slicelib.runs.predict_files` (the run's own preprocessing: brain extraction,
N4, affine registration, z-score). It writes to ``--out``:

- ``per_subject.csv``: participant_id, fold, age, form, file, prediction, change (vs the
  original file's prediction), qc, qc_reasons, error, seconds_per_file (the subject's
  predict_files call over its file count);
- ``consistency.md``: per form n, median and 90th percentile of |change|, QC-flagged count,
  pass/fail against median <= 2 years and p90 <= 5 years; the command, seeds and time taken.

``--augment N`` trains the fold models with N augmented copies of each training head
(``slicelib train --augment``). ``--lr-choice <cv>/lr_choice.csv`` predicts with the runs a
cross-validation of trained arms chose (``slicelib compare --folds``: the ``run`` of each fold,
e.g. the fine-tuned slice model) instead of training fold models.

It resumes: finished runs and rows already in ``per_subject.csv`` are kept. The re-stored
files and runs live in ``--work`` (not in the repository)::

    SLICELIB_WEIGHTS_DIR=/work/shared/weights nice -n 5 python benchmarks/consistency.py \\
        --raw /work/shared/data/ixi_hh_2mm --per-fold 2 --seed 0 \\
        --out benchmarks/results/consistency --work /tmp/slicelib-consistency
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore  # noqa: E402  (benchmarks/restore.py)

from slicelib.augment import copy_of  # noqa: E402
from slicelib.intensity import NORMALISATIONS  # noqa: E402
from slicelib.runs import predict_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The bounds of issue 20: median |change| <= 2 years, 90th percentile <= 5 years.
MEDIAN_BOUND, P90_BOUND = 2.0, 5.0
TRAIN_ARGS = [
    "--target", "age", "--preset", "cpu", "--freeze-encoder", "--head", "ridge",
    "--ridge-blocks", "4", "--axes", "sagittal,coronal,axial", "--weights", "imagenet",
    "--no-progress",
]  # fmt: skip


def fold_split(folds: pd.DataFrame, fold: int, seed: int, val_fraction: float = 0.1):
    """The subject split of fold ``fold``'s model: its subjects "test", a seeded
    ``val_fraction`` of the other folds' subjects "val", the rest "train".

    Args:
        folds: folds.tsv table (participant_id, fold). seed: numpy seed of the val choice.

    Returns:
        DataFrame participant_id, split (every subject of ``folds``, in its order).
    """
    if fold not in set(folds["fold"]):
        raise ValueError(
            f"fold {fold} is not in the folds table (folds: {sorted(set(folds.fold))})"
        )
    rest = folds.loc[folds["fold"] != fold, "participant_id"].to_numpy()
    rng = np.random.default_rng(seed + fold)
    val = set(rng.choice(rest, size=max(1, round(val_fraction * len(rest))), replace=False))
    split = [
        "test" if f == fold else "val" if p in val else "train"
        for p, f in zip(folds["participant_id"], folds["fold"])
    ]
    return pd.DataFrame({"participant_id": folds["participant_id"], "split": split})


def train_fold(
    folds: pd.DataFrame, fold: int, data: Path, work: Path, seed: int,
    normalise: str = "foreground", augment: int = 0, resolution_mm: float | None = None,
    copies: str | None = None, smooth_mm: float = 0.0,
) -> Path:  # fmt: skip
    """Train fold ``fold``'s model with ``slicelib train`` (skipped when its best.pt exists),
    its volumes normalised by ``normalise`` (``PreprocessConfig.normalise``: "foreground", the
    z-score, in ``<work>/runs``; "quantile" in ``<work>/runs_quantile``), with ``augment``
    augmented copies of each training head (``--augment``; ``<work>/runs_augment<n>``), and
    raw scans harmonised to ``resolution_mm`` by its pipeline (``PipelineConfig.resolution_mm``;
    ``<work>/runs_res<mm>``; train it on a derivative made with the same setting), and with
    the pre-made raw-scan copies of ``copies`` (``--copies``; ``<work>/runs_scancopies``, or
    ``runs_scancopies<n>`` for ``n`` > 1 copies per head), and volumes smoothed by a Gaussian
    of FWHM ``smooth_mm`` when read (``PreprocessConfig.smooth_mm``; ``<work>/runs_smooth<mm>``).

    Returns:
        The run directory.
    """
    runs = "runs" if normalise == "foreground" else f"runs_{normalise}"
    runs += f"_augment{augment}" if augment else ""
    runs += f"_res{resolution_mm:g}" if resolution_mm else ""
    runs += f"_smooth{smooth_mm:g}" if smooth_mm else ""
    if copies:
        n = per_head(copies)
        runs += "_scancopies" if n == 1 else f"_scancopies{n}"
    run = work / runs / f"fold{fold}"
    if (run / "best.pt").is_file():
        return run
    split_file = work / "splits" / f"fold{fold}.tsv"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    fold_split(folds, fold, seed).to_csv(split_file, sep="\t", index=False)
    res = f"-res{resolution_mm:g}" if resolution_mm else ""
    smooth = f"-smooth{smooth_mm:g}" if smooth_mm else ""
    toml = work / "splits" / f"fold{fold}-{normalise}{res}{smooth}.toml"
    text = f'split = "{split_file}"\n\n[preprocess]\nnormalise = "{normalise}"\n'
    text += f"smooth_mm = {float(smooth_mm)}\n" if smooth_mm else ""
    if resolution_mm:
        text += f"\n[preprocess.pipeline]\nresolution_mm = {float(resolution_mm)}\n"
    toml.write_text(text)
    cmd = [sys.executable, "-m", "slicelib", "train", "--data", str(data), *TRAIN_ARGS]
    cmd += ["--seed", str(seed), "--config", str(toml), "--out", str(run)]
    cmd += ["--augment", str(augment)] + (["--copies", str(copies)] if copies else [])
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run


def per_head(copies: str | os.PathLike) -> int:
    """Raw-scan copies per head in a copies table (the participants.tsv of
    ``make_derivative.py --copies``; ids ``<id>~scan<k>``): the largest count of one head."""
    ids = pd.read_csv(copies, sep="\t", usecols=["participant_id"])["participant_id"]
    return int(ids.map(copy_of).value_counts().max())


def chosen_run(lr_choice: str | os.PathLike, fold: int) -> Path:
    """The run a cross-validation chose for ``fold`` (the ``run`` column of its
    ``lr_choice.csv``, written by ``slicelib compare --folds``; a relative path is read from
    the CSV's folder); one arm and seed only."""
    table = pd.read_csv(lr_choice)
    rows = table[table["fold"] == fold]
    if len(rows) != 1:
        raise SystemExit(
            f"{lr_choice}: {len(rows)} rows for fold {fold}; give the lr_choice.csv of a CV "
            "with one arm and one seed"
        )
    run = Path(lr_choice).parent / rows["run"].iloc[0]  # relative: to the CV's folder
    if not (run / "best.pt").is_file():
        raise SystemExit(f"{lr_choice}: fold {fold}'s run {run} has no best.pt")
    return run


def choose_subjects(folds: pd.DataFrame, per_fold: int, seed: int) -> pd.DataFrame:
    """A seeded choice of ``per_fold`` subjects of each fold: the first ``per_fold`` of a
    seeded permutation of each fold's ids, so a larger ``per_fold`` keeps the smaller one's
    subjects (a rerun with more subjects resumes). Ordered by rank, then fold: the first
    subject of every fold comes before any fold's second, so a partial run covers all folds.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for fold, group in folds.groupby("fold", sort=True):
        ids = sorted(group["participant_id"])
        if per_fold > len(ids):
            raise ValueError(f"--per-fold {per_fold} > the {len(ids)} subjects of fold {fold}")
        order = rng.permutation(len(ids))[:per_fold]
        picked += [(rank, fold, ids[j]) for rank, j in enumerate(order)]
    ids = [pid for _, _, pid in sorted(picked)]
    return folds.set_index("participant_id").loc[ids].reset_index()


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per re-stored form: n, median and 90th percentile of |change| (years), QC-flagged and
    failed counts, and pass/fail against the bounds (a missing prediction counts as a fail)."""
    out = []
    for form, g in rows[rows["form"] != "original"].groupby("form", sort=False):
        change = g["change"].abs().dropna()
        med = float(np.median(change)) if len(change) else np.nan
        p90 = float(np.percentile(change, 90)) if len(change) else np.nan
        out.append(
            dict(
                form=form,
                n=len(g),
                n_predicted=len(change),
                median_abs_change=med,
                p90_abs_change=p90,
                mean_change=float(g["change"].mean()),
                qc_flagged=int((g["qc"] == "flagged").sum()),
                errors=int(g["error"].map(lambda e: isinstance(e, str) and e != "").sum()),
                passes=bool(len(change) == len(g) and med <= MEDIAN_BOUND and p90 <= P90_BOUND),
            )
        )
    return pd.DataFrame(out)


def main(argv=None) -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", required=True, help="ixi_hh_2mm folder (participants.tsv, t1/, ...)")
    ap.add_argument("--data", default=str(ROOT / "data/ixi_hh_4mm/participants.tsv"))
    ap.add_argument("--folds", default=str(ROOT / "data/ixi_hh_4mm/folds.tsv"))
    ap.add_argument("--per-fold", type=int, default=2, help="test subjects per fold")
    ap.add_argument("--seed", type=int, default=0, help="subject choice, val split, model seed")
    ap.add_argument("--forms", nargs="+", default=list(restore.FORMS), choices=list(restore.FORMS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/consistency"))
    ap.add_argument("--work", default="/tmp/slicelib-consistency", help="runs, re-stored files")
    ap.add_argument("--jobs", type=int, default=1, help="preprocessing processes per subject")
    ap.add_argument(
        "--normalise", default="foreground", choices=NORMALISATIONS,
        help="the models' intensity normalisation (PreprocessConfig.normalise)",
    )  # fmt: skip
    ap.add_argument("--augment", type=int, default=0, help="augmented copies per training head")
    ap.add_argument(
        "--smooth-mm", type=float, default=0.0,
        help="FWHM (mm) of a Gaussian applied to every volume when read (PreprocessConfig.smooth_mm)",
    )  # fmt: skip
    ap.add_argument(
        "--resolution-mm", type=float, default=None,
        help="harmonise raw scans to this resolution (PipelineConfig.resolution_mm); --data must "
        "be a derivative made with the same setting (make_derivative.py --resolution-mm)",
    )  # fmt: skip
    ap.add_argument(
        "--copies", default=None,
        help="train the fold models with these pre-made raw-scan copies (the participants.tsv "
        "of make_derivative.py --copies); their subjects' test copies are never used",
    )  # fmt: skip
    ap.add_argument("--lr-choice", help="lr_choice.csv of a CV: predict with its chosen runs")
    ap.add_argument("--train-only", action="store_true", help="train the fold models and stop")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the table from per_subject.csv"
    )
    args = ap.parse_args(argv)
    started = time.time()
    out, work, raw = Path(args.out), Path(args.work), Path(args.raw)
    folds = pd.read_csv(args.folds, sep="\t", dtype={"participant_id": str})
    if args.train_only:
        for k in sorted(set(folds["fold"])):
            train_fold(
                folds, k, Path(args.data), work, args.seed, args.normalise, args.augment,
                args.resolution_mm, args.copies, args.smooth_mm,
            )  # fmt: skip
        return
    raw_table = pd.read_csv(raw / "participants.tsv", sep="\t", dtype={"participant_id": str})
    raw_table = raw_table.set_index("participant_id")
    chosen = choose_subjects(folds, args.per_fold, args.seed)
    csv = out / "per_subject.csv"
    done = pd.read_csv(csv, dtype={"participant_id": str}) if csv.is_file() else pd.DataFrame()
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return report(done, chosen, args, out)
    log_file = out / "invocations.json"  # every predicting call: command, time, host load
    log = json.loads(log_file.read_text()) if log_file.is_file() else []
    log.append(dict(command=shlex.join(sys.argv[1:]), started=time.strftime("%F %T %Z")))
    forms = ["original", *args.forms]
    for row in chosen.itertuples(index=False):
        pid = row.participant_id
        have = set(done["form"][done["participant_id"] == pid]) if len(done) else set()
        todo = [f for f in forms if f not in have]
        if not todo:
            continue
        run = (
            chosen_run(args.lr_choice, row.fold)
            if args.lr_choice
            else train_fold(
                folds,
                row.fold,
                Path(args.data),
                work,
                args.seed,
                args.normalise,
                args.augment,
                args.resolution_mm,
                args.copies,
                args.smooth_mm,
            )
        )
        seed = 1000 * args.seed + int(pid[3:6])  # the bias field's: per subject (IXI number)
        src = raw / raw_table.loc[pid, "t1"]
        brain = raw / raw_table.loc[pid, "brain_labels"]
        files = {
            f: src
            if f == "original"
            else restore.restore(src, f, work / "forms" / pid, brain, seed)
            for f in todo
        }
        t0 = time.time()  # one call per subject: its files preprocess in parallel
        pred = predict_files(
            run, list(files.values()), progress=False, strict=False, jobs=args.jobs
        )
        seconds = round((time.time() - t0) / len(files), 1)
        new = []
        for (form, path), p in zip(files.items(), pred.to_dict("records")):
            new.append(
                dict(
                    participant_id=pid, fold=row.fold, age=row.age, form=form,
                    file=str(path), prediction=p["prediction"], qc=p["qc"],
                    qc_reasons=p.get("qc_reasons", ""), error=p.get("error", ""),
                    seconds_per_file=seconds,
                )
            )  # fmt: skip
            print(pid, form, f"{p['prediction']:.2f}", p["qc"], flush=True)
        done = pd.concat([done, pd.DataFrame(new)], ignore_index=True)
        original = done[done["form"] == "original"].set_index("participant_id")["prediction"]
        done["change"] = done["prediction"] - done["participant_id"].map(original)
        done.to_csv(csv, index=False, float_format="%.4g")
        log[-1].update(minutes=round((time.time() - started) / 60, 1), subjects_done=len(
            set(done["participant_id"])), load_average_1_5_15=os.getloadavg())  # fmt: skip
        log_file.write_text(json.dumps(log, indent=1))
        report(done, chosen, args, out)  # after every subject


def model_text(args) -> str:
    """What the fold models are, in words, for the report."""
    if getattr(args, "lr_choice", None):
        return f"the run chosen in each fold by the cross-validation of `{args.lr_choice}`"
    return (
        "ridge read-out of frozen ImageNet MobileNetV2 slice features (3 axes, 4 blocks), "
        f"volumes normalised by `{args.normalise}` (`PreprocessConfig.normalise`), "
        + (
            f"smoothed by a {args.smooth_mm:g} mm FWHM Gaussian when read (`--smooth-mm`), "
            if getattr(args, "smooth_mm", 0)
            else ""
        )
        + f"{getattr(args, 'augment', 0)} augmented copies of each training head (`--augment`), "
        + (
            f"every scan harmonised to {args.resolution_mm:g} mm (`--resolution-mm`: trained on "
            f"`{args.data}`, made with the same setting), "
            if getattr(args, "resolution_mm", None)
            else ""
        )
        + (
            f"with the pre-made raw-scan copies of `{args.copies}` (`--copies`), "
            if getattr(args, "copies", None)
            else ""
        )
        + "`slicelib train --freeze-encoder --head ridge`"
    )


def report(rows: pd.DataFrame, chosen: pd.DataFrame, args, out: Path) -> None:
    """Write ``summary.csv`` and ``consistency.md`` from the per-subject rows (and the
    predicting invocations recorded in ``invocations.json``)."""
    table = summarise(rows)
    table.to_csv(out / "summary.csv", index=False, float_format="%.4g")
    orig = rows[rows["form"] == "original"]
    lines = [
        "# Consistency benchmark: the same head stored in other forms (issue 20, item 5)",
        "",
        f"{len(orig)} of {len(chosen)} chosen test subjects done ({args.per_fold} per fold, "
        f"seeded choice, seed {args.seed}: {', '.join(chosen['participant_id'])}), each predicted from its raw 2 mm IXI-HH file and from {len(args.forms)} "
        "re-stored forms by the model of its fold (trained on the other four folds, never on "
        f"the subject). Model: {model_text(args)} (see "
        "`benchmarks/consistency.py`). Change = prediction of the form minus prediction of the "
        "original file. Bounds: median |change| <= 2 years, 90th percentile <= 5 years.",
        "",
        "| form | n | median \\|change\\| (y) | p90 \\|change\\| (y) | mean change (y) | QC flagged "
        "| errors | bounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if len(orig) < 10:
        lines[2] += (
            f" With {len(orig)} subjects the 90th percentile is close to the largest change and "
            "pass/fail is indicative only."
        )
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.form} | {r.n} | {r.median_abs_change:.2f} | {r.p90_abs_change:.2f} | "
            f"{r.mean_change:+.2f} | {r.qc_flagged} | {r.errors} | "
            f"{'pass' if r.passes else 'FAIL'} |"
        )
    mae = (orig["prediction"] - orig["age"]).abs().mean()
    lines += [
        "",
        f"Original files: MAE {mae:.2f} years over {len(orig)} subjects, "
        f"{int((orig['qc'] == 'flagged').sum())} QC-flagged.",
        "",
        "Time: prediction (preprocessing included) "
        f"{rows['seconds_per_file'].sum() / 60:.1f} min for all files (`seconds_per_file` in "
        "per_subject.csv), on the shared 2-core host. The predicting invocations (command, "
        "minutes, subjects done, the host's load average: other jobs) are in "
        "`invocations.json`; run from the repository root as",
        "",
    ]
    log_file = out / "invocations.json"
    for call in json.loads(log_file.read_text()) if log_file.is_file() else []:
        lines.append(
            "    SLICELIB_WEIGHTS_DIR=/work/shared/weights nice -n 5 python "
            f"benchmarks/consistency.py {call['command']}"
        )
    lines.append("")
    (out / "consistency.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
