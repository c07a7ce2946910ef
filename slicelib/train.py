"""Training a slice model, in plain PyTorch: the config, the loop, DDP, checkpoints and resume.

One run = one directory (see :mod:`slicelib.runs` for its files and for using a finished run).
Reading order: the settings live in :mod:`slicelib.config` (``TrainConfig``, ``PRESETS``,
``resolve_config``: defaults < preset < file < flags; imported here too); ``train`` (table ->
subject split -> model -> ``fit``); ``fit`` (the loop, one screen: one epoch of training, one
validation pass, a checkpoint, early stopping).

Resume and determinism: every epoch re-seeds python, numpy, torch and the shuffling generator
from ``(seed, epoch)``, and checkpoints are written at epoch boundaries, atomically. A run
killed at any moment and started again with the same command resumes from ``last.pt``, redoes
the interrupted epoch and ends with bit-identical weights on the CPU (no RNG state is saved).

Distributed, as nanoGPT does it: launched by ``torchrun`` (``WORLD_SIZE > 1``) the model is
wrapped in DistributedDataParallel (the backend follows ``device``: nccl for CUDA, gloo
otherwise; every tensor a collective touches lives on the model's device), training data go
through a DistributedSampler, validation predictions are gathered from every rank, and only
rank 0 writes files. Every rank preprocesses (and, with a frozen encoder, encodes) its own
share of the scans, so no rank idles in a barrier while rank 0 does the whole cohort; the
collectives' timeout (``$SLICELIB_DIST_TIMEOUT``, default 2 h: :func:`slicelib.engine.
dist_timeout`) covers the wait for the slowest rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from slicelib import frozen
from slicelib import metrics as M
from slicelib.augment import premade_copies, training_copies
from slicelib.build import build_model, model_config_dict
from slicelib.cache import check_qc, file_hash, preprocess_many
from slicelib.cnn3d import VolumeCNN
from slicelib.config import (
    PRESETS,
    ConfigError,
    TrainConfig,
    check_resume,
    given_split,
    load_config_file,
    resolve_config,
)
from slicelib.data import CACHE_VERSION, PreprocessConfig
from slicelib.engine import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    barrier,
    check_classes,
    check_state_dict,
    cosine_factor,
    deterministic_kernels,
    dist_setup,
    encode_labels,
    load_checkpoint,
    pick_device,
    predict_dataset,
    read_run_table,
    save_checkpoint,
    use_bf16,
    volume_dataset,
    weight_average,
)
from slicelib.frozen import FrozenHead, cached_features, encode_features
from slicelib.splits import split_subjects
from slicelib.utils import atomic_write

__all__ = ["TrainConfig", "PRESETS", "ConfigError", "CheckpointError", "resolve_config"]
__all__ += ["load_config_file", "train", "fit", "monitor_of", "save_checkpoint"]
__all__ += ["encode_features", "cached_features", "CHECKPOINT_FORMAT"]

# -----------------------------------------------------------------------------
# train(): table -> subject split -> model -> fit


def train(config: TrainConfig | dict, progress: bool | str = True) -> Path:
    """Train a slice model on a participants table; resumable; returns the run directory.

    Steps: read the table, split subjects into train/val/test (``slicelib.datasets.
    split_subjects``, stratified, seeded by ``split_seed``; saved as ``split.csv`` and reused
    on resume), compute the training baseline (mean / majority class), build the
    :class:`SliceModel` (regression head: ``target_mean + target_std * z``), preprocess and
    check every scan (:func:`slicelib.cache.preprocess_many` with ``jobs`` processes; QC rows
    in ``qc.csv``: a scan that cannot be preprocessed stops training with a list of them; one
    that does not look like a registered T1 brain is listed in a warning, or with
    ``qc="exclude"`` left out of training and validation), run :func:`fit` (rerun: resumes).

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        progress: True: bars and a line per epoch; ``"log"``: the lines only; False: quiet.

    Returns:
        Path of the run directory (``config.out``) with config.json, split.csv, best.pt,
        last.pt and history.csv.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    if not cfg.data:
        raise ConfigError("no data: set data (--data TABLE_OR_BIDS_DIR) in the config")
    rank, world, _ = dist_setup(cfg.device)
    run_dir = Path(cfg.out)
    table = _split(read_run_table(cfg.data, cfg.to_dict()), cfg, run_dir / "split.csv")
    codes, classes = encode_labels(table[cfg.target], cfg.task, cfg.target)
    table["_y"] = codes.values
    pcfg = PreprocessConfig.from_dict(dict(cfg.preprocess))
    _train_val(table, np.ones(len(table), dtype=bool), cfg)  # before any scan is preprocessed
    keep = _check_inputs(table, pcfg, cfg, rank, run_dir / "qc.csv", progress is True)
    tr, va = _train_val(table, keep, cfg)
    tr = pd.concat(
        [
            tr,
            training_copies(tr, cfg.augment, cfg.seed, cfg.cache_dir),
            premade_copies(tr, cfg.copies),
        ]
    )
    check_classes(tr["_y"].to_numpy(), cfg.task, classes or [], cfg.target)

    # --- model: the grid comes from the preprocessing, the head's scale from the training set -
    stats = M.train_stats(tr["_y"].to_numpy(), cfg.task, len(classes or []), cfg.class_weights)
    regression = cfg.task == "regression"
    kwargs = dict(cfg.model)
    kwargs.update(
        task=cfg.task,
        num_classes=len(classes) if cfg.task == "multiclass" else None,
        volume_shape=tuple(pcfg.volume_shape),
        target_mean=stats["mean"] if regression else None,
        target_std=stats["std"] if regression else None,
        seed=cfg.seed,
    )
    model = build_model(kwargs)  # a SliceModel, or a VolumeCNN for a 3D backbone
    if cfg.head == "ridge":  # (validate: a frozen slice encoder, regression)
        model = frozen.with_ridge_head(model, cfg.ridge_blocks)
    resolved = dataclasses.replace(cfg, preprocess=pcfg.to_dict())
    meta = _make_meta(
        resolved, model, stats, classes=classes, world_size=world, data=_data_fingerprint(table)
    )
    if rank == 0:
        if not (run_dir / "split.csv").is_file():
            cols = ["participant_id", "split", cfg.target]
            _write_csv(run_dir / "split.csv", table[cols].sort_values("participant_id"))
        _write_json(run_dir / "config.json", meta)

    def dataset(df):
        return volume_dataset(
            df.assign(**{cfg.target: df["_y"]}), cfg.target, pcfg.to_dict(), cfg.cache_dir
        )

    fit(model, dataset(tr), dataset(va), resolved, run_dir, meta=meta, progress=progress)
    return run_dir


def _train_val(table: pd.DataFrame, keep: np.ndarray, cfg: TrainConfig):
    """The training and validation rows of ``table`` among ``keep`` (bool, (len(table),));
    a ConfigError when either is empty."""
    tr, va = (table[keep & (table["split"] == name)] for name in ("train", "val"))
    if len(tr) == 0 or len(va) == 0:
        raise ConfigError(
            f"the split has {len(tr)} training and {len(va)} validation subjects; "
            f"{cfg.data} has {len(table)} subjects ({int((~keep).sum())} left out by "
            "qc='exclude'). Use more subjects or other split_fractions."
        )
    return tr, va


def _check_inputs(table, pcfg, cfg: TrainConfig, rank: int, qc_file: Path, progress: bool):
    """Every rank preprocesses its share of the scans (rows rank, rank + world, ...) into the
    cache; the QC rows are gathered, rank 0 writes qc.csv and every rank checks them.

    Returns a bool array (len(table),): the subjects to train and validate on (``cfg.qc``)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    mine = np.arange(rank, len(table), world)
    paths = table["path"].iloc[mine]
    part = preprocess_many(
        paths, pcfg, cfg.cache_dir, jobs=cfg.jobs, progress=progress and rank == 0
    )
    part = part.assign(participant_id=table["participant_id"].iloc[mine].to_numpy(), _row=mine)
    parts = [part]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, part)
    qc = pd.concat(parts).sort_values("_row").drop(columns="_row").reset_index(drop=True)
    if rank == 0:
        _write_csv(qc_file, qc)
    qc = qc.fillna({"reasons": ""})
    quiet = rank != 0 and cfg.qc == "exclude"  # one printed list, from rank 0
    flagged = "off" if quiet else cfg.qc
    return check_qc(qc, f"training on {cfg.data}", names=qc["participant_id"], flagged=flagged)


def _split(table: pd.DataFrame, cfg: TrainConfig, split_file: Path) -> pd.DataFrame:
    """Add a ``split`` column: the config's given ``split``, else the saved ``split.csv``
    (resume), else a seeded stratified split. Subjects whose split is "unused" are dropped."""
    if cfg.split is not None:
        where, source = given_split(cfg.split), "the config's split"
    elif split_file.is_file():
        saved = pd.read_csv(split_file, dtype={"participant_id": str})
        where, source = dict(zip(saved["participant_id"], saved["split"])), str(split_file)
    else:
        fractions = tuple(cfg.split_fractions)
        parts = split_subjects(table, cfg.target, fractions=fractions, seed=cfg.split_seed)
        where, source = {str(s): name for name, subjects in parts.items() for s in subjects}, ""
    unknown = sorted(set(table["participant_id"]) - set(where))
    if unknown:
        raise ConfigError(
            f"{source} does not list subjects {unknown[:5]} ({len(unknown)} in all) of "
            f"{cfg.data}: either the data changed since this run started (use a new --out "
            "directory) or the split misses them (mark subjects to leave out 'unused')."
        )
    table = table.assign(split=table["participant_id"].map(where))
    return table[table["split"] != "unused"].reset_index(drop=True)


def _make_meta(cfg: TrainConfig, model, train_stats: dict, **extra) -> dict:
    """The run config stored as config.json and inside every checkpoint."""
    meta = dict(slicelib_format=CHECKPOINT_FORMAT, preprocess_version=CACHE_VERSION)
    meta.update(train=cfg.to_dict(), model=model_config_dict(model))
    meta.update(preprocess=dict(cfg.preprocess), train_stats=train_stats, **extra)
    weights = meta["model"].get("weights")
    if weights not in (None, "none", "imagenet") and Path(weights).is_file():
        meta["weights_file_hash"] = file_hash(weights)  # a moved weights file still resumes
    return M.to_jsonable(meta)


def _data_fingerprint(table: pd.DataFrame) -> dict:
    """What identifies the data of a run: subject count and a SHA-1 over (id, split, label,
    image file size in bytes) rows. Cheap (no image is read), and it changes when a cohort is
    regenerated or a scan is replaced by one of another size."""
    h = hashlib.sha1()
    for row in zip(table["participant_id"], table["split"], table["_y"], table["path"]):
        size = os.path.getsize(row[3]) if os.path.exists(row[3]) else -1
        h.update(f"{row[0]},{row[1]},{row[2]},{size}\n".encode())
    return {"n": int(len(table)), "sha1": h.hexdigest()}


# -----------------------------------------------------------------------------
# the loop


@dataclass
class RunState:
    """Where a run stands; saved in ``last.pt`` beside the weights, optimiser and scheduler."""

    epoch: int = -1  # the last finished epoch, 0-based (-1: none yet)
    history: list = field(default_factory=list)  # one row dict per epoch
    best_value: float | None = None  # the monitored validation value of the best epoch
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the last improvement
    stopped_early: bool = False
    diverged: bool = False  # the training loss or the outputs became NaN/inf: training stopped

    def update(self, row: dict, monitor: str, mode: str, patience: int | None) -> bool:
        """Record a finished epoch's history row; returns whether ``row[monitor]`` improved."""
        if monitor not in row:
            raise ConfigError(f"monitor {monitor!r} is not a history column: {list(row)}")
        value, best = row[monitor], self.best_value
        better = value is not None and math.isfinite(value) and not self.diverged
        better = better and (best is None or (value < best if mode == "min" else value > best))
        self.epoch = row["epoch"] - 1
        self.diverged = self.diverged or row.get("status") == "diverged"
        self.history.append(row)
        if better:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped_early = patience is not None and self.bad_epochs >= patience
        return better


def fit(
    model: torch.nn.Module,
    train_ds,
    val_ds,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    meta: dict | None = None,
    progress: bool | str = True,
) -> dict:
    """Train ``model`` with checkpoints, resume, early stopping and a history table.

    Args:
        model: a freshly built :class:`SliceModel` or :class:`VolumeCNN` (its weights are
            replaced on resume).
        train_ds, val_ds: datasets of ``(x float32 (1, X, Y, Z), y float32 scalar)``
            (classification: ``y`` the class index 0..C-1). ``config.freeze_encoder``: they are
            :class:`slicelib.cache.VolumeDataset` s and :class:`slicelib.frozen.FrozenHead` runs
            on their cached features, standardised with ``train_ds``'s per-feature mean and SD
            (:func:`slicelib.frozen.standardise_inputs`); ``head == "ridge"``: fitted in closed
            form, once (:func:`_fit_ridge`).
        config: the :class:`TrainConfig` (optimisation and runtime fields are used here;
            ``ema`` > 0: a moving average of the weights is validated and saved as best.pt;
            the history's ``raw_<monitor>`` column scores the trained weights themselves).
        run_dir: where ``last.pt``, ``best.pt`` and ``history.csv`` go (rank 0 only).
        meta: the run config stored in checkpoints (see :func:`train`); built from ``config``,
            ``model.config`` and the training targets if omitted.
        progress: True: bars + a stderr line per epoch (rank 0); "log": lines only; False: quiet.

    Returns:
        dict: ``best_epoch`` (0-based), ``best_value`` (monitored metric), ``epochs_run``,
        ``stopped_early``, ``diverged``, ``history`` (row dicts; ``status`` "ok", or "diverged":
        NaN/inf loss or outputs, recorded, never the best checkpoint, training stops there).
    """
    cfg, run_dir = config, Path(run_dir)
    rank, world, local_rank = dist_setup(cfg.device)
    device = pick_device(cfg.device, local_rank)
    bf16 = use_bf16(device, cfg.precision)
    if meta is None:
        ys = [float(train_ds[i][1]) for i in range(len(train_ds))]
        n_classes = model_config_dict(model).get("num_classes")
        meta = _make_meta(cfg, model, M.train_stats(ys, cfg.task, n_classes, cfg.class_weights))
    stats, monitor, mode = meta["train_stats"], *monitor_of(cfg)
    model.to(device)
    runner = model  # what the loop runs: the model, or (frozen encoder) its head on features
    if cfg.freeze_encoder:  # the head reads features standardised with training statistics
        train_ids = getattr(train_ds, "ids", None)  # (N,) row ids: copies, subject folds
        train_ds, val_ds = (_features(model, ds, cfg, rank, world) for ds in (train_ds, val_ds))
        frozen.standardise_inputs(model, *frozen.feature_stats(train_ds.tensors[0]))
        runner = FrozenHead(model)
        if cfg.head == "ridge":
            return _fit_ridge(runner, train_ds, val_ds, cfg, run_dir, meta, device, rank, train_ids)
    net = runner
    if dist.is_initialized():  # (a world of one too: the same code path as many)
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(runner, device_ids=ids)
    loader = _train_loader(train_ds, cfg, world, device, isinstance(model, VolumeCNN))
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    sched = None
    if cfg.schedule == "cosine":
        steps = cfg.epochs * math.ceil(len(loader) / cfg.grad_accum)  # optimiser steps in all
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_factor(steps))
    averaged = weight_average(runner, cfg.ema)  # None, or what is validated and saved as best
    judged = runner if averaged is None else averaged.module
    verbose = bool(progress)
    state = _resume(run_dir / "last.pt", model, opt, sched, meta, cfg.patience, verbose, averaged)
    first = cfg.epochs if state.stopped_early or state.diverged else state.epoch + 1

    with deterministic_kernels(cfg.deterministic, device):
        for epoch in range(first, cfg.epochs):
            t0 = time.time()
            _seed_epoch(cfg.seed, epoch, loader)
            desc = f"epoch {epoch + 1}/{cfg.epochs}" if progress is True and rank == 0 else None
            train_loss = _train_epoch(
                net, loader, opt, sched, cfg, stats, device, bf16, desc, averaged
            )
            row = {"epoch": epoch + 1, "train_loss": train_loss}
            row.update(_validate(judged, val_ds, cfg, stats, device, bf16, monitor))
            if averaged is not None:  # the raw weights' score too: what the average smooths
                raw = _validate(runner, val_ds, cfg, stats, device, bf16, monitor)
                row["raw_" + monitor] = raw[monitor]
            row.update(lr=opt.param_groups[0]["lr"], seconds=round(time.time() - t0, 3))
            finite = row.pop("finite") and math.isfinite(train_loss)
            row["status"] = "ok" if finite else "diverged"
            improved = state.update(M.to_jsonable(row), monitor, mode, cfg.patience)
            if rank == 0:
                _save(run_dir, model, opt, sched, state, meta, improved, averaged)
                _log(state, cfg.epochs, monitor, improved, train_loss, cfg.lr, verbose)
            barrier()
            if state.stopped_early or state.diverged:
                break
    return _result(state)


def _result(state: RunState) -> dict:
    names = ("best_epoch", "best_value", "stopped_early", "diverged", "history")
    return dict(epochs_run=len(state.history), **{k: getattr(state, k) for k in names})


def _fit_ridge(head, train_ds, val_ds, cfg, run_dir: Path, meta: dict, device, rank, ids) -> dict:
    """``cfg.head == "ridge"``: fit ``head.model.ridge`` on the training features in closed
    form (:func:`slicelib.frozen.fit_ridge_head`), validate once, save best.pt = last.pt
    (epoch 0, no optimiser) and a one-row history (``ridge_alpha``: the penalty chosen)."""
    info = frozen.fit_ridge_head(head.model, *(t.numpy() for t in train_ds.tensors), ids=ids)
    state, (monitor, mode) = RunState(), monitor_of(cfg)
    row = {"epoch": 1, "train_loss": math.nan}
    row.update(_validate(head, val_ds, cfg, meta["train_stats"], device, False, monitor))
    row.update(status="ok" if row.pop("finite") else "diverged", ridge_alpha=info["alpha"])
    improved = state.update(M.to_jsonable(row), monitor, mode, None)
    if rank == 0:
        _save(run_dir, head.model, None, None, state, meta, improved)
    barrier()
    return _result(state)


def _features(model, dataset, cfg: TrainConfig, rank: int, world: int):
    """The cached encoder features of a VolumeDataset as a dataset of (features (S, F), y)
    (every rank encodes its share of the subjects not cached yet; then all read the cache)."""
    if isinstance(model, VolumeCNN):
        raise ConfigError("freeze_encoder needs a SliceModel; a 3D CNN has no 2D encoder.")
    frozen.fill_feature_cache(model, dataset, cfg.cache_dir, cfg.batch_size, rank=rank, world=world)
    barrier()
    return frozen.feature_dataset(model, dataset, cfg.cache_dir, cfg.batch_size)


def _train_epoch(net, loader, opt, sched, cfg, stats, device, bf16, desc, averaged=None) -> float:
    """One pass over the training data (``averaged``: a weight average, updated after every
    optimiser step); returns the mean training loss over all ranks."""
    net.train()
    world = dist.get_world_size() if dist.is_initialized() else 1
    # (sum of loss x batch size, n), on the model's device: NCCL reduces CUDA tensors only
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    opt.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(tqdm(loader, desc, disable=desc is None, leave=False)):
        x, y = x.to(device, non_blocking=True), y.to(device)
        step = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(loader)
        # DDP: synchronise gradients only on the micro-batch that ends an optimiser step
        no_sync = world > 1 and not step
        with net.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(x)  # (B,) or (B, C)
            loss = _loss(cfg.task, out, y, stats)
            (loss / cfg.grad_accum).backward()
        if step:
            opt.step()
            opt.zero_grad(set_to_none=True)
            if sched is not None:
                sched.step()
            if averaged is not None:  # of the model itself, not of its DDP wrapper
                averaged.update_parameters(net.module if dist.is_initialized() else net)
        loss_sum[0] += loss.detach().double() * len(y)
        loss_sum[1] += len(y)
    if dist.is_initialized():
        dist.all_reduce(loss_sum)
    return float(loss_sum[0] / loss_sum[1])


def _validate(model, val_ds, cfg, stats, device, bf16, monitor: str) -> dict:
    """Validation loss and metrics (``val_mae``, ``val_auc``, ...) on the whole set, all ranks;
    ``finite``: whether every output was finite (if not, only ``val_loss`` and ``monitor``,
    both NaN: metrics of NaN outputs are undefined)."""
    out, y = predict_dataset(
        model, val_ds, cfg.batch_size, device, bf16, cfg.num_workers, shard=True
    )
    row = {"val_loss": float(_loss(cfg.task, torch.from_numpy(out), torch.from_numpy(y), stats))}
    row["finite"] = bool(np.isfinite(out).all())
    if not row["finite"]:
        return {**row, "val_loss": math.nan, monitor: math.nan}
    for k, v in M.compute_metrics(cfg.task, y, out, stats).items():
        if not isinstance(v, list) and not k.startswith("baseline_"):
            row["val_" + k] = v
    return row


def _loss(task: str, output: torch.Tensor, target: torch.Tensor, stats: dict) -> torch.Tensor:
    """Mean loss over the batch. Regression: MSE of standardised targets (unitless).

    output: (B,) target units / logits, or (B, C) logits; target: (B,) values or labels.
    Classification with ``stats["class_weights"]`` (one weight per class): the weighted mean
    sum_i w[y_i] * loss_i / B.
    """
    output = output.float()
    if task == "regression":
        sd = stats.get("std") or 1.0
        return F.mse_loss(output / sd, target.float() / sd)
    if task == "binary":
        per = F.binary_cross_entropy_with_logits(output, target.float(), reduction="none")
    else:
        per = F.cross_entropy(output, target.long(), reduction="none")
    if stats.get("class_weights") is None:
        return per.mean()
    w = torch.as_tensor(stats["class_weights"], dtype=per.dtype, device=per.device)
    return (w[target.long()] * per).mean()


def monitor_of(cfg: TrainConfig) -> tuple[str, str]:
    """(history column, "min"|"max") that picks the best checkpoint and stops early."""
    if cfg.monitor == "auto":
        return ("val_mae", "min") if cfg.task == "regression" else ("val_loss", "min")
    name = cfg.monitor if cfg.monitor.startswith("val_") else "val_" + cfg.monitor
    larger = ("accuracy", "auc", "r2", "pearson_r")
    return name, "max" if name.endswith(larger) else "min"


def _train_loader(train_ds, cfg: TrainConfig, world: int, device, pairs: bool) -> DataLoader:
    """A shuffling loader whose order depends only on (seed, epoch): see :func:`_seed_epoch`.

    ``pairs``: drop a last batch of a single volume (a 3D CNN: its BatchNorm on a 1x1x1 map,
    as on small grids, cannot train on one volume).
    """
    gen = torch.Generator()
    if world > 1:
        sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.seed)
    else:
        sampler = RandomSampler(train_ds, generator=gen)
    n = len(sampler)  # volumes per rank and epoch
    if pairs and n < 2:
        raise ConfigError(
            f"{n} training volume(s) per process: a 3D CNN with BatchNorm needs batches of at "
            "least two volumes. Use more subjects or fewer processes."
        )
    return DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=sampler, generator=gen,
        drop_last=pairs and n % cfg.batch_size == 1,  # no batch of one volume (BatchNorm)
        num_workers=cfg.num_workers, worker_init_fn=_seed_worker,
        pin_memory=device.type == "cuda",
    )  # fmt: skip


def _seed_epoch(seed: int, epoch: int, loader: DataLoader) -> None:
    """Seed python, numpy, torch (dropout) and the loader's shuffle from (seed, epoch)."""
    h = hashlib.sha256(f"slicelib:{seed}:{epoch}".encode()).digest()
    s = int.from_bytes(h[:4], "little") & 0x7FFFFFFF  # stable across Python versions
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # also seeds all CUDA devices
    loader.generator.manual_seed(s + 1)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _log(state: RunState, epochs, monitor: str, improved: bool, loss: float, lr, verbose) -> None:
    """The epoch's line (and early stopping) on stderr when ``verbose``; divergence always."""
    if state.diverged:
        why = f"training loss {loss}" if not math.isfinite(loss) else "NaN/inf outputs"
        tqdm.write(f"diverged ({why}): stopped. Try a lower lr than {lr:g}.", file=sys.stderr)
    row = state.history[-1]
    msg = f"epoch {row['epoch']}/{epochs}  train_loss {loss:.4f}"
    keys = dict.fromkeys(("val_loss", "val_mae", "val_auc", "val_balanced_accuracy", monitor))
    msg += "".join(f"  {k} {row[k]:.4f}" for k in keys if isinstance(row.get(k), float))
    if verbose:
        tqdm.write(msg + ("  *" if improved else ""), file=sys.stderr)
    if verbose and state.stopped_early:
        tqdm.write(f"early stopping: no improvement for {state.bad_epochs} epochs", file=sys.stderr)


# -----------------------------------------------------------------------------
# checkpoints and resume


def _save(run_dir: Path, model, opt, sched, state: RunState, meta: dict, improved, averaged=None):
    """Write best.pt (if the epoch improved: the weights validated, the average's if there is
    one), last.pt (the resume point: weights, average, optimiser) and history.csv."""
    common = {"format": CHECKPOINT_FORMAT, "epoch": state.epoch, "config": json.dumps(meta)}
    judged = model if averaged is None else averaged.module
    judged = judged.model if isinstance(judged, FrozenHead) else judged
    if improved:
        metrics = json.dumps(state.history[-1])
        save_checkpoint(
            run_dir / "best.pt", {**common, "model": judged.state_dict(), "metrics": metrics}
        )
    save_checkpoint(
        run_dir / "last.pt",
        {
            **common,
            "model": model.state_dict(),
            "optimizer": opt.state_dict() if opt is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "averaged": averaged.state_dict() if averaged is not None else None,
            **dataclasses.asdict(state),
        },
    )
    _write_csv(run_dir / "history.csv", pd.DataFrame(state.history))


def _resume(
    last: Path, model, opt, sched, meta: dict, patience, verbose, averaged=None
) -> RunState:
    """Load ``last.pt`` into the model, optimiser, scheduler (and weight average); a fresh state
    if none.

    What may change on resume follows the config now: the scheduler takes only the step count
    (its length is the current ``epochs``'), and early stopping is judged with ``patience``."""
    if not last.is_file():
        return RunState()
    ckpt = load_checkpoint(last)
    check_resume(ckpt["config"], M.to_jsonable(meta), last.parent)
    state_dict = frozen.match_standardisation(model, ckpt["model"])  # older runs: identity
    check_state_dict(model, state_dict, ckpt["config"].get("model", {}))
    model.load_state_dict(state_dict)
    if averaged is not None:  # (ema is a training setting: a resumed run has the same)
        averaged.load_state_dict(ckpt["averaged"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt.get("scheduler") is not None:
        sched.last_epoch = t = int(ckpt["scheduler"]["last_epoch"])  # optimiser steps so far
        sched._last_lr = [base * f(t) for base, f in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, lr in zip(opt.param_groups, sched._last_lr):
            group["lr"] = lr
    names = [f.name for f in dataclasses.fields(RunState) if f.name in ckpt]  # older: fewer
    state = RunState(**{k: ckpt[k] for k in names})
    state.stopped_early = patience is not None and state.bad_epochs >= patience
    if verbose and (not dist.is_initialized() or dist.get_rank() == 0):
        tqdm.write(f"resuming {last.parent} after epoch {state.epoch + 1}", file=sys.stderr)
    return state


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))
