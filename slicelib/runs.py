"""Using a finished run: load its checkpoint, evaluate it, predict new scans.

A run directory (written by :func:`slicelib.train.train`) holds::

    config.json   the run config: train (TrainConfig fields), model (ModelConfig), preprocess,
                  train_stats (baseline mean / majority class, class weights), classes, data
    split.csv     participant_id, split (train/val/test), target
    best.pt       the best validation epoch's weights (used here)
    last.pt       the full training state after the last finished epoch (the resume point)
    history.csv   one row per epoch

Every checkpoint is read with ``torch.load(weights_only=True)``: it holds tensors and plain
containers only (the run config travels inside as a JSON string). Nothing here fetches
pretrained weights: the model is rebuilt from its saved config and the checkpoint's weights.
What training shares with this module (devices, precision, checkpoint I/O, labels, batched
prediction) lives in :mod:`slicelib.engine`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, softmax
from tqdm.auto import tqdm

from slicelib import metrics as M
from slicelib.build import build_model, model_config_dict, saved_model_config
from slicelib.cache import check_qc, preprocess_many
from slicelib.cnn3d import VolumeCNN
from slicelib.data import CACHE_VERSION, PreprocessConfig, read_time_normalise
from slicelib.engine import (
    CheckpointError,
    ConfigError,
    apply_classes,
    check_state_dict,
    load_checkpoint,
    pick_device,
    predict_dataset,
    read_run_table,
    use_bf16,
    volume_dataset,
)
from slicelib.frozen import FrozenHead, feature_dataset, match_standardisation, with_ridge_head
from slicelib.model import SliceModel
from slicelib.utils import block_mean

__all__ = [
    "ConfigError",
    "CheckpointError",
    "build_model",
    "model_config_dict",
    "volume_dataset",
    "load_run",
    "evaluate_run",
    "predict_files",
    "predict_ensemble",
    "ridge_on_run",
]


def load_run(
    run_dir: str | os.PathLike, checkpoint: str = "best", device: str = "cpu"
) -> tuple[SliceModel | VolumeCNN, dict]:
    """Rebuild the model of a run from its checkpoint (no pretrained weights are fetched).

    Args:
        run_dir: run directory, or a path to a ``.pt`` checkpoint file.
        checkpoint: "best" or "last" (ignored when ``run_dir`` is a file).
        device: where to put the model.

    Returns:
        (model in eval mode, run config dict with keys ``train``, ``model``, ``preprocess``,
        ``train_stats``, ``classes``, ``checkpoint_epoch`` (0-based)).
    """
    p = Path(run_dir)
    path = p if p.is_file() else p / f"{checkpoint}.pt"
    ckpt = load_checkpoint(path)
    meta = ckpt["config"]
    # no weight file is read: the weights come from the checkpoint
    model = build_model(dict(saved_model_config(meta["model"]), weights=None))
    if meta["train"].get("head", "mlp") == "ridge":  # a closed-form read-out of the features
        model = with_ridge_head(model, meta["train"]["ridge_blocks"])
    state = match_standardisation(model, ckpt["model"])  # a frozen head's input statistics
    check_state_dict(model, state, meta["model"])
    model.load_state_dict(state)
    model.to(device).eval()
    meta["checkpoint_epoch"] = int(ckpt["epoch"])
    saved = str(meta.get("preprocess_version", "1"))
    if saved != CACHE_VERSION:
        warnings.warn(
            f"{path} was trained with slicelib preprocessing version {saved}; this slicelib "
            f"preprocesses with version {CACHE_VERSION} (see CACHE_VERSION in slicelib.data), "
            "so its inputs may now be placed differently and its predictions shifted. "
            "Retrain the run with this version before trusting its metrics.",
            stacklevel=2,
        )
    return model, meta


def evaluate_run(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    split: str = "test",
    checkpoint: str = "best",
    device: str = "auto",
    progress: bool = True,
    baseline_features=None,
    n_boot: int = 2000,
    jobs: int | None = None,
) -> dict:
    """Evaluate a run's model beside the training baseline (and, for regression, ridge).

    A frozen-encoder run evaluates its head on the cached encoder features (computed and
    cached for subjects not seen yet): the same function as the full model, without
    re-encoding every slice.

    Args:
        run_dir: the run directory.
        data: participants table / BIDS folder; default: the run's own ``data``. Subjects
            not in the run's ``split.csv`` count as "external" (included in ``split="all"``).
        split: "train" | "val" | "test" | "all".
        checkpoint: "best" or "last".
        baseline_features: features for the ridge baseline instead of down-sampled voxels: a
            table (CSV/TSV path or DataFrame) with one row per subject, keyed by
            ``participant_id`` (else its first column), numeric columns >= 0 (e.g. regional
            volumes in mm^3), used as log(1 + x).
        n_boot: bootstrap resamples of the 95 % confidence intervals (seeded: reproducible).
        jobs: preprocessing worker processes for scans not in the cache yet (default: the
            run's own ``jobs``).

    Returns:
        JSON-serialisable dict: ``split``, ``n``, ``task``, ``checkpoint_epoch`` (0-based: the
        training log's "epoch 9/10" is 8), the metrics (e.g. ``mae``/``baseline_mae`` in
        years, ``balanced_accuracy``/``baseline_balanced_accuracy``, ``auc``/``baseline_auc``,
        ``confusion_matrix``), ``qc`` (the run's QC policy), ``qc_flagged`` (evaluated
        subjects whose scan QC flagged; under policy "exclude" they are not evaluated) and
        ``qc_excluded``, percentile-bootstrap 95 % intervals over subjects (``mae_ci95``,
        ``baseline_mae_ci95``; ``auc_ci95``, ``balanced_accuracy_ci95``), and for regression
        ``brain_age_gap`` (linear age-bias correction fitted on the val split) and the ridge
        baseline (:func:`ridge_on_run`: ``ridge_mae``, ``ridge_mae_ci95``, ``ridge_pearson_r``).
    """
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split={split!r}: use train, val, test or all")
    run_dir = Path(run_dir)
    dev = pick_device(device)
    model, meta = load_run(run_dir, checkpoint, device=dev)
    tcfg, stats = meta["train"], meta["train_stats"]
    task, target, data = tcfg["task"], tcfg["target"], data or tcfg["data"]
    bf16 = use_bf16(dev, tcfg.get("precision", "auto"))  # the precision the run trained in
    table = read_run_table(data, tcfg)
    saved = pd.read_csv(run_dir / "split.csv", dtype={"participant_id": str})
    where = dict(zip(saved["participant_id"], saved["split"]))
    table["split"] = table["participant_id"].map(where).fillna("external")
    if task != "regression":
        table[target] = apply_classes(table[target], meta.get("classes")).values

    def run_on(df: pd.DataFrame):
        ds = volume_dataset(df, target, meta["preprocess"], tcfg.get("cache_dir"))
        bs = tcfg.get("batch_size", 8)
        if tcfg.get("freeze_encoder"):  # the same function on cached encoder features
            feats = feature_dataset(model, ds, tcfg.get("cache_dir"), bs)
            return predict_dataset(FrozenHead(model), feats, bs, dev, bf16, progress=progress)
        return predict_dataset(model, ds, bs, dev, bf16, progress=progress)

    sel = table if split == "all" else table[table["split"] == split]
    if len(sel) == 0:
        raise ConfigError(
            f"no subjects of split {split!r} in {data} (splits there: "
            f"{table['split'].value_counts().to_dict()}). Try --split all."
        )
    jobs = tcfg.get("jobs", 1) if jobs is None else jobs
    sel, qc_res = _qc_select(sel, run_dir, meta, progress, jobs)
    table = table[~table["participant_id"].isin(qc_res["qc_excluded"])]
    if len(sel) == 0:
        raise ConfigError(
            f"every scan of split {split!r} was QC flagged and the run's policy is qc='exclude' "
            f"(flagged: {', '.join(qc_res['qc_flagged'][:10])}). Check them with slicelib qc."
        )
    out, y = run_on(sel)
    baseline = (
        f"training mean ({stats['mean']:.3f})"
        if task == "regression"
        else f"training majority class ({stats['majority_class']})"
    )
    res = dict(run=str(run_dir), data=str(data), split=split, task=task, target=target)
    res.update(checkpoint=checkpoint, checkpoint_epoch=meta["checkpoint_epoch"], baseline=baseline)
    res.update(qc_res)
    res.update(M.compute_metrics(task, y, out, stats))
    res.update(M.metric_cis(task, y, out, stats, n_boot=n_boot))
    if task == "regression":
        res.update(ridge_on_run(table, split, meta, baseline_features, n_boot))
        val = table[table["split"] == "val"]
        v_out, v_y = (out, y) if split == "val" else run_on(val) if len(val) else (None, None)
        res["brain_age_gap"] = M.brain_age_gap(y, out, v_y, v_out)
        res["brain_age_gap"]["correction"] = (
            "pred + age - (a*age + b), a, b fitted on the val split "
            "(Beheshti 2019; de Lange & Cole 2020)"
        )
    return M.to_jsonable(res)


def _qc_select(sel: pd.DataFrame, run_dir: Path, meta: dict, progress: bool, jobs: int):
    """Apply the run's QC policy (``train.qc``) to the subjects being evaluated.

    The evaluated scans are QC'd as training QC'd its scans (cached scans only read their QC
    record). "error" scans raise :class:`slicelib.cache.DataError`; "flagged" ones are
    listed in a warning ("warn") or left out ("exclude", also from the ridge baseline's fit,
    using the run's ``qc.csv``). Returns (the rows to evaluate, ``qc``, ``qc_flagged`` (ids),
    ``qc_excluded`` (ids)).
    """
    tcfg = meta["train"]
    policy = tcfg.get("qc", "warn")
    if policy == "off":
        return sel, dict(qc="off", qc_flagged=[], qc_excluded=[])
    qc = preprocess_many(
        sel["path"],
        meta["preprocess"],
        tcfg.get("cache_dir"),
        jobs=jobs,
        progress=progress,
    )
    ids = sel["participant_id"].astype(str)
    keep = check_qc(qc, f"evaluating {run_dir}", names=ids, flagged=policy)
    flagged = ids[(qc["status"] == "flagged").to_numpy()].tolist()
    excluded = ids[~keep].tolist()
    if policy == "exclude" and (run_dir / "qc.csv").is_file():  # what training left out
        trained = pd.read_csv(run_dir / "qc.csv", dtype={"participant_id": str})
        excluded += trained.loc[trained["status"] == "flagged", "participant_id"].tolist()
    return sel[keep], dict(qc=policy, qc_flagged=flagged, qc_excluded=sorted(set(excluded)))


def ridge_on_run(
    table: pd.DataFrame, split: str, meta: dict, baseline_features=None, n_boot: int = 2000
) -> dict:
    """A classical baseline for a regression run: ridge regression evaluated on ``split``.

    Fitted on the run's train and val subjects (train only when ``split`` is "val"; RidgeCV
    picks its penalty by leave-one-out on them), on the preprocessed volumes of the run's cache
    block-averaged to about 8 mm, flattened and standardised; or on ``baseline_features`` (see
    :func:`evaluate_run`). ``table``: the run's table with a ``split`` column.

    Returns:
        ``ridge_mae``, ``ridge_mae_ci95``, ``ridge_pearson_r``, ``ridge_alpha``,
        ``ridge_features`` (what it read); only ``ridge_features`` (why) when it cannot be
        fitted fairly (split "train"/"all": the ridge would be scored on its own subjects).
    """
    if split in ("train", "all"):
        return {"ridge_features": f"not computed for split {split!r}: ridge fits on train+val"}
    fit = table[table["split"].isin(("train",) if split == "val" else ("train", "val"))]
    sel = table[table["split"] == split]
    target = meta["train"]["target"]
    if len(fit) < 3:
        return {"ridge_features": f"not computed: {len(fit)} fitting subjects in the table"}
    if baseline_features is None:
        mm = 8.0
        x_fit, x_eval = (_block_voxels(df, meta, mm) for df in (fit, sel))
        what = f"preprocessed voxels block-averaged to ~{mm:g} mm ({x_fit.shape[1]} features)"
    else:
        feats = _feature_table(baseline_features)
        x_fit, x_eval = (_feature_rows(feats, df["participant_id"]) for df in (fit, sel))
        what = f"log of {feats.shape[1]} columns of the baseline_features table"
    res = M.ridge_baseline(x_fit, fit[target], x_eval, sel[target], n_boot=n_boot)
    return dict(res, ridge_features=what)


def _block_voxels(df: pd.DataFrame, meta: dict, mm: float) -> np.ndarray:
    """(N, P) features: each subject's cached preprocessed volume averaged in blocks of about
    ``mm`` mm (edges padded by repetition), flattened."""
    tcfg = meta["train"]
    ds = volume_dataset(df, None, meta["preprocess"], tcfg.get("cache_dir"))
    f = max(1, round(mm / float(meta["preprocess"].get("voxel_size", 2.0))))
    rows = []
    for i in range(len(ds)):
        rows.append(block_mean(np.asarray(ds.volume(i), dtype=np.float32), f).ravel())
    return np.stack(rows)


def _feature_table(features) -> pd.DataFrame:
    """A baseline features table indexed by subject id, numeric columns, as log(1 + x) (a
    region absent in a few subjects has volume 0)."""
    df = features if isinstance(features, pd.DataFrame) else None
    if df is None:
        path = Path(features)
        df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    key = "participant_id" if "participant_id" in df.columns else df.columns[0]
    df = df.set_index(df[key].astype(str)).drop(columns=[key]).select_dtypes("number")
    bad = [c for c in df.columns if not (df[c] >= 0).all()]
    if bad or df.shape[1] == 0:
        raise ConfigError(
            f"baseline_features: the ridge baseline log-transforms its columns, which must be "
            f"numbers >= 0 (e.g. regional volumes); columns {bad[:5]} are not"
            + ("" if df.shape[1] else " (no numeric column found)")
        )
    return np.log1p(df)


def _feature_rows(feats: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    missing = sorted(set(ids) - set(feats.index))
    if missing:
        raise ConfigError(
            f"baseline_features has no row for subjects {missing[:5]} ({len(missing)} in all); "
            f"its ids look like {list(feats.index[:3])}. Key it by the run's participant_id."
        )
    return feats.loc[list(ids)].to_numpy(np.float64)


def predict_files(
    run_dir: str | os.PathLike,
    files,
    checkpoint: str = "best",
    device: str = "auto",
    progress: bool = True,
    jobs: int = 1,
    strict: bool = True,
) -> pd.DataFrame:
    """Predict from image files with the run's own preprocessing (read from the checkpoint).

    Every file is preprocessed into the run's cache and checked
    (:func:`slicelib.cache.preprocess_many`, ``jobs`` processes), exactly as training did. A
    file that cannot be read or preprocessed does not stop the others: its row has an
    ``error`` message and no prediction. A scan that does not look like a registered T1 brain
    (QC "flagged": a label map or mask given as the T1, inverted contrast, failed
    registration) is never reported as a normal prediction: with ``strict`` its ``prediction``
    is empty and the number goes to ``prediction_unreliable``; a warning lists these scans.

    Args:
        run_dir: run directory (or checkpoint file).
        files: paths to 3D scans (.nii / .nii.gz / .mgz).
        jobs: preprocessing worker processes.
        strict: False keeps flagged scans' predictions in ``prediction`` (``qc`` says flagged).

    Returns:
        DataFrame with one row per file: ``path``, ``prediction`` (years for regression; class
        for classification), ``prediction_unreliable``, ``probability`` (binary: P(class 1))
        or ``prob_<class>`` (multiclass), ``qc`` (ok / flagged / error), ``qc_reasons``,
        ``error`` (empty string if fine).
    """
    dev = pick_device(device)
    model, meta = load_run(run_dir, checkpoint, device=dev)
    bf16 = use_bf16(dev, meta["train"].get("precision", "auto"))  # as evaluate_run
    files = [str(f) for f in files]
    cache_dir = meta["train"].get("cache_dir")
    qc = preprocess_many(files, meta["preprocess"], cache_dir, jobs=jobs, progress=progress)
    flagged = qc[qc["status"] == "flagged"]
    if len(flagged):
        listed = "\n".join(f"  {p}: {r}" for p, r in zip(flagged["path"], flagged["reasons"]))
        warnings.warn(
            f"{len(flagged)} scan(s) do not look like a registered T1 brain (QC flagged); their "
            f"predictions are {'in prediction_unreliable' if strict else 'unreliable'}:\n" + listed,
            stacklevel=2,
        )
    prep = PreprocessConfig.from_dict(meta["preprocess"])
    rows = []
    for f, q in tqdm(list(zip(files, qc.itertuples())), desc="predict", disable=not progress):
        row = {"path": f, "prediction": None, "qc": q.status, "qc_reasons": q.reasons}
        row["error"] = q.reasons if q.status == "error" else ""
        if q.status != "error":
            # training read volumes through the float16 cache, normalised when read
            # ("quantile", "template"): the same array here
            vol = read_time_normalise(np.load(q.cache), prep, f)  # (X, Y, Z)
            x = torch.from_numpy(np.asarray(vol, np.float32))[None, None].to(dev)
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)[0].double().cpu().numpy()  # () or (C,)
            row.update(_prediction(out, meta["model"]["task"], meta.get("classes")))
            if strict and q.status == "flagged":
                row["prediction_unreliable"] = row.pop("prediction")
                row["prediction"] = None
        rows.append(row)
    df = pd.DataFrame(rows)
    first = ["path", "prediction", "prediction_unreliable"]
    df = df.reindex(columns=first + [c for c in df.columns if c not in first])
    last = ["qc", "qc_reasons", "error"]
    return df[[c for c in df.columns if c not in last] + last]


def predict_ensemble(run_dirs, files, strict: bool = True, **kw) -> pd.DataFrame:
    """The mean prediction of several regression runs (seeds, axes or folds) for each file.

    Each run predicts with its own preprocessing (:func:`predict_files`, same ``kw``:
    checkpoint, device, progress, jobs); the ensemble's prediction is the mean over runs, in
    the target's units (years for age). A file is as good as its worst run: an error in any
    run is an error; QC "flagged" in any run is flagged (with ``strict``, the mean goes to
    ``prediction_unreliable``).

    Returns:
        :func:`predict_files`' columns (one row per file) plus ``prediction_sd`` (SD over the
        runs' predictions, target units), ``n_runs`` and ``prediction_<k>`` (run k's value).
    """
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    for run in run_dirs:
        task = load_run(run)[1]["model"]["task"]
        if task != "regression":
            raise ConfigError(f"{run} is a {task} run; ensembles average regression runs only.")
    frames = [predict_files(r, files, strict=False, **kw) for r in run_dirs]
    values = pd.concat([f["prediction"].astype(float) for f in frames], axis=1)
    out = frames[0][["path"]].copy()
    rank = {"ok": 0, "flagged": 1, "error": 2}
    qc = pd.concat([f["qc"].map(rank) for f in frames], axis=1).max(axis=1)
    out["qc"] = qc.map({v: k for k, v in rank.items()})
    worst = [
        [f["qc_reasons"].iat[i] for f in frames if f["qc"].iat[i] != "ok"] for i in range(len(out))
    ]
    out["qc_reasons"] = ["; ".join(dict.fromkeys(r)) for r in worst]
    out["error"] = ["; ".join(e for e in dict.fromkeys(f["error"].iat[i] for f in frames) if e)
                    for i in range(len(out))]  # fmt: skip
    mean = values.mean(axis=1).where(out["qc"] != "error")
    unreliable = strict & (out["qc"] == "flagged")
    out.insert(1, "prediction", mean.where(~unreliable))
    out.insert(2, "prediction_unreliable", mean.where(unreliable))
    out.insert(3, "prediction_sd", values.std(axis=1, ddof=1).where(out["qc"] != "error"))
    out.insert(4, "n_runs", len(run_dirs))
    for k in range(len(run_dirs)):
        out[f"prediction_{k}"] = values.iloc[:, k]
    last = ["qc", "qc_reasons", "error"]
    return out[[c for c in out.columns if c not in last] + last]


def _prediction(out: np.ndarray, task: str, classes: list | None) -> dict:
    """The output row of one model output: () for regression, (C,) or () logits otherwise."""
    if task == "regression":
        return {"prediction": float(out)}
    if task == "binary":
        p = float(expit(out))
        return {"prediction": classes[int(p > 0.5)] if classes else int(p > 0.5), "probability": p}
    prob = softmax(out)
    k = int(prob.argmax())
    row = {"prediction": classes[k] if classes else k}
    row.update({f"prob_{classes[i] if classes else i}": float(q) for i, q in enumerate(prob)})
    return row
