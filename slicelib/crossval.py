"""Cross-validation of trained arms (fine-tuned, scratch, 3D CNN) through the fixed folds.

:mod:`slicelib.cv` cross-validates the classical baselines and frozen-feature ridge read-outs;
this module puts the *trained* models through the same folds (``data/ixi_hh_4mm/folds.tsv``)
and writes their out-of-fold predictions in the same ``oof.csv`` format
(:data:`slicelib.cv.OOF_COLUMNS`), so :func:`slicelib.cv.summarise_oof` scores all of them
together with paired statistics.

For fold k of the folds table:

- the test subjects are fold k; the other folds are the training subjects;
- an inner validation set is carved out of the training subjects only
  (:func:`slicelib.splits.split_subjects`: stratified by the target, seeded by the base
  config's ``split_seed``; its size is the validation share of ``split_fractions``, e.g.
  0.15 / (0.7 + 0.15) of the training subjects);
- :func:`slicelib.compare.compare` trains the grid (arms x seeds x learning rates) on that
  given split (``TrainConfig.split``: train / val / test = fold k / unused = subjects outside
  the folds), with early stopping and the learning rate both chosen on the inner validation
  set, and the chosen run of every arm and seed predicts fold k.

Before a prediction is written, every candidate run's recorded ``split.csv`` is checked
(:func:`check_run_split`): its training and validation subjects exclude fold k and its test
subjects are fold k, so an out-of-fold prediction never comes from a model that saw the subject.

Files under ``out``: ``fold<k>/`` (the compare folder of fold k: one run folder per arm, seed
and lr, results.csv, lr_selection.csv); ``oof.csv`` (:data:`slicelib.cv.OOF_COLUMNS`, one arm
name per trained arm: :func:`arm_name`, e.g. ``finetune_imagenet``, ``finetune_scratch``,
``sfcn``); ``lr_choice.csv`` (per fold, arm and seed: the chosen lr, its status and validation
value, the best epoch, the subject counts, the training seconds of every lr tried, the run);
``summary.csv`` and ``paired.csv`` (:func:`slicelib.cv.summarise_oof`, over the arms and seeds
that predicted every subject). Resume: a fold whose predictions of every arm and seed are in
``oof.csv`` is skipped (not trained, not evaluated); the runs of an interrupted fold resume from
their ``last.pt`` (:func:`slicelib.train.train`).

``train_ids`` (``--train-ids``) trains each fold on a given subset of its training subjects
(a learning-curve point, :mod:`slicelib.curves`); the subsets are recorded in
``train_ids.tsv`` and a resume with other subsets is refused.

The command line: ``slicelib compare ... --folds data/ixi_hh_4mm/folds.tsv``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from slicelib.cnn3d import is_volume_backbone
from slicelib.compare import NOT_APPLICABLE, compare, plan
from slicelib.config import TrainConfig
from slicelib.cv import OOF_COLUMNS, read_folds, read_oof, summarise_oof
from slicelib.engine import read_run_table
from slicelib.errors import ConfigError, DataError, PipelineError
from slicelib.runs import predict_files
from slicelib.splits import split_subjects
from slicelib.utils import atomic_write

__all__ = [
    "LR_CHOICE_COLUMNS",
    "arm_name",
    "arm_names",
    "fold_split",
    "check_run_split",
    "read_train_ids",
    "write_train_ids",
    "cross_validate",
    "complete_arms",
]

LR_CHOICE_COLUMNS = [
    "fold", "arm", "seed", "lr", "lr_grid", "status", "monitor", "val_best", "best_epoch",
    "n_train", "n_val", "n_test", "train_seconds", "run",
]  # fmt: skip


# -----------------------------------------------------------------------------
# arms and splits


def arm_name(run: dict, varying: tuple[str, ...] = ()) -> str:
    """The oof.csv arm name of one grid run (a :func:`slicelib.compare.plan` row).

    A 3D CNN: its backbone without ``_3d`` (``sfcn``, ``densenet121``). A slice model:
    ``finetune`` or ``frozen`` (``freeze_encoder``), then ``imagenet`` | ``scratch`` (weights
    "none") | the weight file's stem, then the values of the flags named in ``varying``
    (e.g. ``("position",)`` when the grid varies it): ``finetune_imagenet``,
    ``finetune_scratch_none``.
    """
    if is_volume_backbone(run["backbone"]) or run.get("weights") == NOT_APPLICABLE:
        return str(run["backbone"]).removesuffix("_3d")
    w = str(run["weights"])
    w = "scratch" if w == "none" else w if w == "imagenet" else Path(w).stem
    parts = ["frozen" if run["freeze_encoder"] == "yes" else "finetune", w]
    return "_".join(parts + [str(run[k]) for k in varying])


def arm_names(runs: list[dict]) -> list[str]:
    """:func:`arm_name` of every run of a grid (one per run; seeds share their arm's name):
    the backbone, position, norm and pooling are named when the grid's slice runs vary them."""
    slice_runs = [r for r in runs if r.get("weights") != NOT_APPLICABLE]
    varying = tuple(
        k
        for k in ("backbone", "position", "norm", "pooling")
        if len({str(r[k]) for r in slice_runs}) > 1
    )
    names = [arm_name(r, varying) for r in runs]
    keys = {}
    for name, r in zip(names, runs):
        arm = tuple((k, str(v)) for k, v in r.items() if k != "seed")
        if keys.setdefault(name, arm) != arm:
            raise ConfigError(
                f"two arms of the grid share the oof arm name {name!r} ({dict(keys[name])} and "
                f"{dict(arm)}); cross-validate them in separate --out folders"
            )
    return names


def fold_split(
    table: pd.DataFrame, folds: pd.DataFrame, fold: int, target: str,
    fractions=(0.7, 0.15, 0.15), seed: int = 0, train_ids=None,
) -> dict[str, str]:  # fmt: skip
    """The given subject split (``TrainConfig.split``) of one fold.

    Args:
        table: the run table (participant_id, target), every subject of the data.
        folds: participant_id, fold (:func:`slicelib.cv.read_folds`).
        fold: the held-out fold k.
        target: the column the inner validation split is stratified by.
        fractions: (train, val, test) fractions; the inner validation set takes
            ``val / (train + val)`` of the training subjects (the test share is fold k).
        seed: the inner split's seed.
        train_ids: optional, the training subjects to use (a subset of the other folds, e.g.
            a learning-curve point of :func:`slicelib.curves.nested_subsets`); the other
            folds' subjects outside it are "unused". Default: every subject of the other folds.

    Returns:
        participant_id -> "test" (fold k), "train" / "val" (the training subjects, split
        stratified by ``target``: :func:`slicelib.splits.split_subjects`), "unused" (subjects
        of the table outside the folds, or outside ``train_ids``).
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or fr[0] <= 0 or fr[1] <= 0:
        raise ConfigError(
            f"split_fractions {tuple(fractions)}: cross-validation needs (train, val, test) with "
            "train and val > 0 (the validation share of the training folds)"
        )
    val = fr[1] / (fr[0] + fr[1])
    fold_of = dict(zip(folds["participant_id"].astype(str), folds["fold"].astype(int)))
    ids = table["participant_id"].astype(str)
    training = table[ids.map(lambda i: i in fold_of and fold_of[i] != fold).to_numpy()]
    if train_ids is not None:
        keep = {str(i) for i in train_ids}
        stray = sorted(keep - set(training["participant_id"].astype(str)))
        if stray:
            raise ConfigError(
                f"fold {fold}: training ids {stray[:5]} ({len(stray)}) are not subjects of the "
                "other folds in the run table; a fold's training subset must come from its "
                "training folds"
            )
        training = training[training["participant_id"].astype(str).isin(keep).to_numpy()]
    inner = split_subjects(training, target, fractions=(1.0 - val, val, 0.0), seed=seed)
    where = {i: "unused" for i in ids}
    where.update({i: "test" for i in ids if fold_of.get(i) == fold})
    where.update({i: part for part in ("train", "val") for i in inner[part]})
    return where


def check_run_split(run_dir: str | os.PathLike, test_ids) -> dict[str, int]:
    """Check a run's recorded ``split.csv`` against its held-out fold.

    Raises :class:`PipelineError` if any subject of ``test_ids`` was among the run's training
    or validation subjects, or if the run's test subjects are not exactly ``test_ids``.

    Returns:
        the run's subject counts per split name (``train``, ``val``, ``test``).
    """
    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: the run did not record its subjects")
    split = pd.read_csv(path, dtype={"participant_id": str})
    test = set(map(str, test_ids))
    seen = split[split["split"].isin(["train", "val"]) & split["participant_id"].isin(test)]
    if len(seen):
        raise PipelineError(
            f"{path}: held-out subjects {seen['participant_id'].tolist()[:5]} are in the run's "
            f"{sorted(set(seen['split']))} split; this run cannot predict them out of fold"
        )
    run_test = set(split.loc[split["split"] == "test", "participant_id"])
    if run_test != test:
        raise PipelineError(
            f"{path}: the run's test subjects differ from the held-out fold (missing "
            f"{sorted(test - run_test)[:5]}, extra {sorted(run_test - test)[:5]}); delete the run "
            "folder and rerun"
        )
    return split["split"].value_counts().to_dict()


def read_train_ids(path: str | os.PathLike) -> dict[int, list[str]]:
    """A training-subsets table (``--train-ids``): TSV with columns ``fold`` and
    ``participant_id``, one row per (fold, training subject).

    Returns:
        {fold k: [participant_id, ...]} (in file order).
    """
    df = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    missing = sorted({"fold", "participant_id"} - set(df.columns))
    if missing:
        raise DataError(
            f"{path}: no column(s) {missing}; a training-subsets table has one row per fold and "
            "training subject: fold, participant_id (tab-separated)"
        )
    fold = pd.to_numeric(df["fold"], errors="coerce")
    bad = df[fold.isna() | (fold != fold.round()) | df["participant_id"].isna()]
    if len(bad):
        r = bad.index[0]
        raise DataError(
            f"{path}: row {r + 2} (fold {df['fold'].iat[r]!r}, participant_id "
            f"{df['participant_id'].iat[r]!r}) is not an integer fold and a subject id; fix it"
        )
    dup = df[df.duplicated(["fold", "participant_id"])]
    if len(dup):
        raise DataError(
            f"{path}: subject {dup['participant_id'].iat[0]} is listed twice for fold "
            f"{dup['fold'].iat[0]}; list each training subject once per fold"
        )
    return {int(k): g["participant_id"].tolist() for k, g in df.groupby(fold.astype(int))}


def write_train_ids(path: str | os.PathLike, train_ids) -> None:
    """Write ``{fold k: [participant_id, ...]}`` as a training-subsets table
    (:func:`read_train_ids` reads it back): fold, participant_id, sorted by fold."""
    rows = [(int(k), str(i)) for k in sorted(train_ids) for i in train_ids[k]]
    table = pd.DataFrame(rows, columns=["fold", "participant_id"])
    atomic_write(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False))


def complete_arms(oof: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """The (arm, seed) pairs of ``oof`` that predicted every subject of ``folds``.

    Returns:
        DataFrame ``arm``, ``seed``, ``n`` (subjects predicted), ``folds`` (the folds with
        predictions, e.g. "0,1,2"), ``complete`` (bool).
    """
    everyone = set(folds["participant_id"].astype(str))
    rows = []
    for (arm, seed), g in oof.groupby(["arm", "seed"], sort=False):
        done = ",".join(str(f) for f in sorted(set(g["fold"].astype(int))))
        n = int(g["participant_id"].nunique())
        full = everyone <= set(g["participant_id"].astype(str))
        rows.append(dict(arm=arm, seed=int(seed), n=n, folds=done, complete=full))
    return pd.DataFrame(rows, columns=["arm", "seed", "n", "folds", "complete"])


# -----------------------------------------------------------------------------
# the folds


def cross_validate(
    base: TrainConfig | dict, folds: str | os.PathLike | pd.DataFrame,
    grid: dict[str, list] | None = None, lrs: list[float] | None = None,
    seeds: list[int] | None = None, out: str | os.PathLike | None = None, n_boot: int = 2000,
    progress: bool = True, train_ids=None,
) -> dict[str, pd.DataFrame | None]:  # fmt: skip
    """Cross-validate a compare grid through fixed folds (module docstring); resumable.

    Args:
        base: the config every run starts from (regression; its ``data`` table must hold every
            subject of the folds with a target); its ``split_fractions`` give the inner
            validation share and ``split_seed`` seeds the inner split of every fold.
        folds: a folds table path (``folds.tsv``) or DataFrame (participant_id, fold).
        grid, lrs, seeds: as :func:`slicelib.compare.compare` (arms x seeds x lr grid).
        out: the root folder (default ``base.out``).
        n_boot: bootstrap resamples of the summary.
        train_ids: optional {fold k: the training ids of fold k} (a subset of the other
            folds' subjects, e.g. one point of a learning curve); every fold must be given
            (:func:`fold_split`). Default: all of the other folds.

    Returns:
        dict with ``oof`` (every row, [N subjects x arms x seeds], predictions and targets in
        target units), ``lr_choice``, ``coverage`` (:func:`complete_arms`), and ``summary`` and
        ``paired`` (:func:`slicelib.cv.summarise_oof` of the complete arms; None if no arm
        predicted every subject yet); all written under ``out``.
    """
    base = base if isinstance(base, TrainConfig) else TrainConfig.from_dict(base)
    if base.task != "regression":
        raise ConfigError(
            f"--folds: cross-validation writes out-of-fold predictions of a regression target; "
            f"task is {base.task!r}"
        )
    if base.split is not None:
        raise ConfigError("--folds makes each fold's split; leave the config's split unset")
    if not base.data:
        raise ConfigError("no data: set data (--data TABLE) in the config")
    fold_table = folds if isinstance(folds, pd.DataFrame) else read_folds(folds)
    fold_of = dict(zip(fold_table["participant_id"].astype(str), fold_table["fold"].astype(int)))
    table = read_run_table(base.data, base.to_dict())
    targets = dict(zip(table["participant_id"], pd.to_numeric(table[base.target], "coerce")))
    missing = sorted(i for i in fold_of if not np.isfinite(targets.get(i, np.nan)))
    if missing:
        raise DataError(
            f"{base.data}: {len(missing)} subject(s) of the folds have no row or no "
            f"{base.target!r} value (first: {missing[:5]}); the table must hold every subject "
            "of the folds"
        )
    paths = dict(zip(table["participant_id"], table["path"].astype(str)))
    _, runs = plan(base, grid, seeds)
    names = arm_names(runs)
    root = Path(out or base.out)
    root.mkdir(parents=True, exist_ok=True)
    oof_path, choice_path = root / "oof.csv", root / "lr_choice.csv"
    oof = read_oof(oof_path) if oof_path.is_file() else pd.DataFrame(columns=OOF_COLUMNS)
    for p, f in zip(oof["participant_id"], oof["fold"]):
        if fold_of.get(p) != int(f):
            raise ConfigError(
                f"{oof_path} was written with other folds (subject {p} is in fold {f} there, "
                f"{fold_of.get(p, 'not in the folds given')} here); use another --out folder"
            )
    choice = pd.read_csv(choice_path) if choice_path.is_file() else pd.DataFrame()
    if train_ids is not None:
        _record_train_ids(root / "train_ids.tsv", train_ids, set(fold_of.values()))
    elif (root / "train_ids.tsv").is_file():
        raise ConfigError(
            f"{root} holds a cross-validation on the training subsets of "
            f"{root / 'train_ids.tsv'}; give the same train_ids (--train-ids) or another --out"
        )
    for k in sorted(set(fold_of.values())):
        test_ids = sorted(i for i, f in fold_of.items() if f == k)
        done = set(zip(oof.loc[oof["fold"] == k, "arm"], oof.loc[oof["fold"] == k, "seed"]))
        todo = [(n, r) for n, r in zip(names, runs) if (n, int(r["seed"])) not in done]
        if not todo:
            if progress:
                print(f"fold {k}: every arm and seed already in {oof_path}, skipped", flush=True)
            continue
        subset = None if train_ids is None else train_ids[k]
        split = fold_split(
            table, fold_table, k, base.target, base.split_fractions, base.split_seed, subset
        )
        cfg = TrainConfig.from_dict(dict(base.to_dict(), split=split))
        t0 = time.perf_counter()
        compare(cfg, grid, lrs, seeds, out=root / f"fold{k}", eval_split="test", progress=False)
        seconds = time.perf_counter() - t0
        tried = pd.read_csv(root / f"fold{k}" / "lr_selection.csv", keep_default_na=False)
        for run_dir in tried["run"]:  # every candidate, chosen or not: none saw fold k
            check_run_split(run_dir, test_ids)
        new_rows, new_choice = [], []
        for name, run in todo:
            cand = _candidates(tried, run)
            best = cand[cand["chosen"].astype(str) == "True"].iloc[0]
            counts = check_run_split(best["run"], test_ids)
            new_choice.append(
                dict(
                    fold=k,
                    arm=name,
                    seed=int(run["seed"]),
                    lr=float(best["lr"]),
                    lr_grid=",".join(f"{float(v):g}" for v in cand["lr"]),
                    status=best["status"],
                    monitor=best["monitor"],
                    val_best=best["val_best"],
                    best_epoch=best.get("best_epoch"),
                    n_train=counts.get("train", 0),
                    n_val=counts.get("val", 0),
                    n_test=counts.get("test", 0),
                    train_seconds=";".join(f"{_run_seconds(r):.0f}" for r in cand["run"]),
                    run=best["run"],
                )
            )
            if best["status"] == "diverged":  # no best checkpoint: nothing to predict with
                warnings.warn(
                    f"fold {k} {name} seed {run['seed']}: every lr diverged ({best['note']}); "
                    f"no predictions, see {root / f'fold{k}' / 'lr_selection.csv'}",
                    stacklevel=2,
                )
                continue
            pred = _predict(best["run"], test_ids, paths, base.device)
            new_rows.append(
                pd.DataFrame(
                    dict(
                        participant_id=test_ids,
                        fold=k,
                        arm=name,
                        seed=int(run["seed"]),
                        prediction=pred,
                        target=[float(targets[i]) for i in test_ids],
                    )
                )
            )
            if progress:
                mae = float(np.abs(pred - new_rows[-1]["target"].to_numpy()).mean())
                print(
                    f"fold {k} {name} seed {run['seed']}: lr {float(best['lr']):g} "
                    f"(best epoch {best.get('best_epoch')}), MAE {mae:.2f} on {len(test_ids)} "
                    f"subjects; fold trained and evaluated in {seconds / 60:.1f} min",
                    flush=True,
                )
        if new_rows:
            oof = pd.concat([d for d in (oof, *new_rows) if len(d)], ignore_index=True)
        choice = pd.concat([d for d in (choice, pd.DataFrame(new_choice)) if len(d)])
        choice = choice.drop_duplicates(["fold", "arm", "seed"], keep="last")
        atomic_write(oof_path, lambda tmp, t=oof: t[OOF_COLUMNS].to_csv(tmp, index=False))
        atomic_write(
            choice_path,
            lambda tmp, t=choice: t[LR_CHOICE_COLUMNS].to_csv(tmp, index=False),
        )
    oof = read_oof(oof_path) if oof_path.is_file() else pd.DataFrame(columns=OOF_COLUMNS)
    coverage = complete_arms(oof, fold_table)
    result = dict(oof=oof, lr_choice=choice, coverage=coverage, summary=None, paired=None)
    full = coverage[coverage["complete"]]
    if len(full) < len(coverage):
        part = coverage[~coverage["complete"]]
        print(
            "not summarised (not every subject predicted): "
            + ", ".join(
                f"{a} seed {s} (folds {f})" for a, s, f in part[["arm", "seed", "folds"]].values
            ),
            flush=True,
        )
    if len(full):
        keep = oof.set_index(["arm", "seed"]).index.isin(list(zip(full["arm"], full["seed"])))
        summary, paired = summarise_oof(oof[keep], n_boot=n_boot)
        for name, t in (("summary.csv", summary), ("paired.csv", paired)):
            atomic_write(
                root / name, lambda tmp, t=t: t.to_csv(tmp, index=False, float_format="%.4g")
            )
        result.update(summary=summary, paired=paired)
    return result


def _record_train_ids(path: Path, train_ids, folds: set[int]) -> None:
    """Write ``train_ids`` to ``path`` (fold, participant_id), or check it equals the subsets a
    resumed run was started with; refuses subsets that miss a fold."""
    if set(train_ids) != folds:
        raise ConfigError(
            f"train_ids gives folds {sorted(train_ids)}, the folds table has {sorted(folds)}; "
            "give every fold's training subset"
        )
    given = {int(k): sorted(map(str, v)) for k, v in train_ids.items()}
    if path.is_file():
        before = {k: sorted(v) for k, v in read_train_ids(path).items()}
        if before != given:
            raise ConfigError(
                f"{path.parent} was started on other training subsets ({path}); use another "
                "--out folder for another learning-curve point"
            )
        return
    write_train_ids(path, given)


def _candidates(tried: pd.DataFrame, run: dict) -> pd.DataFrame:
    """The lr_selection.csv rows of one (arm, seed) grid run."""
    sel = np.ones(len(tried), dtype=bool)
    for k, v in run.items():
        sel &= (tried[k].astype(str) == str(v)).to_numpy()
    if not sel.any():
        raise PipelineError(f"lr_selection.csv has no candidate of the grid run {run}")
    return tried[sel]


def _run_seconds(run_dir: str | os.PathLike) -> float:
    """The training seconds of a run: the sum of history.csv's per-epoch ``seconds``."""
    hist = Path(run_dir) / "history.csv"
    h = pd.read_csv(hist) if hist.is_file() else pd.DataFrame()
    return float(pd.to_numeric(h["seconds"], errors="coerce").sum()) if "seconds" in h else 0.0


def _predict(run_dir, ids: list[str], paths: dict, device: str) -> np.ndarray:
    """(N,) predictions (target units) of a run's best checkpoint for ``ids``, in order, read
    with the run's own preprocessing (:func:`slicelib.runs.predict_files`). A scan that cannot
    be read stops the fold (its message names the file); QC-flagged scans are predicted, as
    :func:`slicelib.runs.evaluate_run` does under the run's QC policy, with a warning (none
    when the run's policy is ``qc="off"``)."""
    qc = json.loads((Path(run_dir) / "config.json").read_text())["train"].get("qc", "warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predict_files' per-file warning; ours below
        df = predict_files(run_dir, [paths[i] for i in ids], device=device, progress=False,
                           strict=False)  # fmt: skip
    bad = df[df["error"] != ""]
    if len(bad):
        raise DataError(f"{run_dir}: cannot predict {bad['path'].iat[0]}: {bad['error'].iat[0]}")
    flagged = [i for i, q in zip(ids, df["qc"]) if q == "flagged"]
    if flagged and qc != "off":
        warnings.warn(
            f"{run_dir}: {len(flagged)} held-out scan(s) QC flagged, predicted as evaluate "
            f"does under qc={qc!r}: {flagged[:10]}",
            stacklevel=2,
        )
    return df["prediction"].to_numpy(dtype=np.float64)
