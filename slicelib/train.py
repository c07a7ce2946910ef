"""Training, evaluation and prediction for slice models, in plain PyTorch.

One run = one directory::

    RUN_DIR/
      config.json   the resolved TrainConfig + model config + preprocessing + training stats
      split.csv     participant_id, split (train/val/test), target  (subject-level, seeded)
      last.pt       full training state after the last finished epoch (resume point)
      best.pt       model weights of the best validation epoch (used by evaluate/predict)
      history.csv   epoch, train_loss, val_loss, val_<metric>..., lr, seconds

Reading order: ``TrainConfig`` (every setting), ``train`` (data -> split -> model -> ``fit``),
``fit`` (the loop: epochs, checkpoints, early stopping), then ``evaluate_run`` /
``predict_files`` / ``load_run`` for using a finished run.

Resume and determinism: every epoch re-seeds python, numpy and torch (and the shuffling
generator) from ``(seed, epoch)``, and checkpoints are written at epoch boundaries, atomically
(temp file + ``os.replace``). A run killed at any moment and started again with the same
command resumes from ``last.pt``, redoes the interrupted epoch and ends with bit-identical
weights on the CPU. RNG states are stored too (for inspection and for code that draws random
numbers outside the per-epoch re-seeding).

Distributed: when launched by ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA), training data go through a
DistributedSampler, validation predictions are gathered from every rank, and only rank 0
writes files.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm.auto import tqdm

from slicelib import metrics as M
from slicelib.model import SliceModel

__all__ = [
    "TrainConfig",
    "PRESETS",
    "ConfigError",
    "CheckpointError",
    "resolve_config",
    "load_config_file",
    "train",
    "fit",
    "evaluate_run",
    "predict_files",
    "predict_dataset",
    "load_run",
    "load_checkpoint",
    "save_checkpoint",
    "check_state_dict",
    "pick_device",
]

CHECKPOINT_FORMAT = 1


class ConfigError(ValueError):
    """A configuration is invalid (unknown key, bad value, resume with another config)."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, from another architecture, unreadable)."""


# -----------------------------------------------------------------------------
# configuration

# Sizes per preset. Keys are TrainConfig fields; "model"/"preprocess" are merged key-wise.
PRESETS: dict[str, dict] = {
    # seconds on a laptop: tiny 8 mm grid, scratch ResNet18, 2 epochs (plumbing check only)
    "smoke": dict(
        epochs=2,
        batch_size=4,
        patience=None,
        model=dict(backbone="resnet18", weights=None, embed_dim=16),
        preprocess=dict(shape=(23, 27, 23), voxel_size=8.0),
    ),
    # minutes on a laptop CPU: 4 mm grid (45 x 54 x 45), MobileNetV2 in NHWC layout (~2x faster)
    "cpu": dict(
        epochs=20,
        batch_size=8,
        lr=1e-3,
        schedule="cosine",
        patience=8,
        model=dict(backbone="mobilenet_v2", weights="imagenet", channels_last=True),
        preprocess=dict(shape=(45, 54, 45), voxel_size=4.0),
    ),
    # the paper's scale: FSL MNI152 2 mm grid, ResNet18, batch 8, lr 1e-4, up to 100 epochs
    "gpu": dict(
        epochs=100,
        batch_size=8,
        patience=20,
        model=dict(backbone="resnet18", weights="imagenet"),
        preprocess=dict(shape=(91, 109, 91), voxel_size=2.0),
    ),
}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` and inside every checkpoint.

    Data: ``data`` (participants table .tsv/.csv or BIDS folder), ``target`` (column),
    ``task`` ("regression" | "binary" | "multiclass"), ``path_column``/``id_column`` (passed to
    ``slicelib.data.read_table``), ``split_fractions`` (train, val, test) and ``split_seed``
    (the subject split; kept apart from ``seed`` so that seeds share one test set).
    Model: ``model`` = keyword arguments of :class:`slicelib.model.SliceModel` (backbone,
    weights, embed_dim, position, pooling, axes, stem, slice_chunk, ...); task, num_classes,
    volume_shape, target_mean and seed are filled in by :func:`train`.
    Preprocessing: ``preprocess`` = fields of ``slicelib.data.PreprocessConfig`` as a dict
    (grid shape in voxels, voxel_size in mm, normalisation...). ``cache_dir``, ``augment``.
    Optimisation (paper defaults): Adam, ``lr`` 1e-4, ``weight_decay`` 1e-4, ``batch_size`` 8,
    ``schedule`` "constant" | "cosine" (per optimiser step), ``grad_accum`` micro-batches per
    step, ``epochs``, ``patience`` (early stopping, epochs without improvement; None = off),
    ``monitor`` ("auto" = val mae for regression, val loss for classification; or any history
    column such as "val_balanced_accuracy").
    Runtime: ``device`` "auto" | "cuda" | "mps" | "cpu"; ``precision`` "auto" (bf16 autocast on
    CUDA, fp32 elsewhere) | "bf16" | "fp32"; ``num_workers``; ``deterministic``; ``seed``.
    ``scale_head`` (regression): train the output layer in standardised units, i.e. multiply
    its initial weights and its learning rate by the training SD of the target. With Adam
    this is the same as predicting z-scores and rescaling, so the head reaches the target's
    scale (years) in a few epochs; False = the paper's plain parametrisation.
    ``class_weights`` (classification): "balanced" weights each training example by
    n / (n_classes x n_its_class) (as scikit-learn's ``class_weight="balanced"``), so a minority
    class such as AD counts as much as the majority and the 0.5 threshold aims at balanced
    accuracy; "none" = the plain mean loss.
    """

    data: str | None = None
    target: str = "age"
    task: str = "regression"
    out: str = "runs/run"
    path_column: str | None = None
    id_column: str = "participant_id"
    split_fractions: tuple = (0.7, 0.15, 0.15)
    split_seed: int = 0
    model: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)
    cache_dir: str | None = None
    augment: bool = False
    seed: int = 0
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "constant"
    grad_accum: int = 1
    patience: int | None = 10
    monitor: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    deterministic: bool = True
    scale_head: bool = True
    class_weights: str = "balanced"
    preset: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of all fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict, raising :class:`ConfigError` on unknown or invalid keys."""
        _check_keys(d, [f.name for f in dataclasses.fields(cls)], "training config")
        cfg = cls(**copy.deepcopy(d))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check values and nested keys; raise :class:`ConfigError` naming the problem."""
        if self.task not in ("regression", "binary", "multiclass"):
            raise ConfigError(f"task={self.task!r}: use 'regression', 'binary' or 'multiclass'.")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule={self.schedule!r}: use 'constant' or 'cosine'.")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision={self.precision!r}: use 'auto', 'bf16' or 'fp32'.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r}: use one of {', '.join(PRESETS)}.")
        if self.class_weights not in ("balanced", "none"):
            raise ConfigError(f"class_weights={self.class_weights!r}: use 'balanced' or 'none'.")
        for name in ("epochs", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be at least 1.")
        _check_keys(self.model, _model_keys(), "model config ([model] section / model.*)")
        _check_keys(self.preprocess, _preprocess_keys(), "preprocess config ([preprocess])")


def _check_keys(d: dict, valid, what: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"the {what} must be a mapping of keys to values, got {type(d).__name__}")
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in the {what}. "
            f"Valid keys: {', '.join(sorted(valid))}."
        )


# SliceModel arguments that train() sets from the data and the run seed
_MODEL_KEYS_SET_BY_TRAIN = (
    "task",
    "num_classes",
    "volume_shape",
    "target_mean",
    "target_std",
    "seed",
)


def _model_keys() -> list[str]:
    params = inspect.signature(SliceModel.__init__).parameters
    return [k for k in params if k != "self" and k not in _MODEL_KEYS_SET_BY_TRAIN]


def _preprocess_keys() -> list[str]:
    try:
        from slicelib.data import PreprocessConfig
    except ImportError:  # data module not installed: accept anything, data.py validates later
        return []
    return [f.name for f in dataclasses.fields(PreprocessConfig)]


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config file into a dict.

    Top-level keys are :class:`TrainConfig` fields; ``[model]`` and ``[preprocess]`` tables
    hold SliceModel and PreprocessConfig arguments. Unknown keys are rejected later by
    :func:`resolve_config`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        import tomllib

        with open(path, "rb") as f:
            d = tomllib.load(f)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        d = yaml.safe_load(path.read_text()) or {}
    elif path.suffix == ".json":
        d = json.loads(path.read_text())
    else:
        raise ConfigError(f"config file {path}: use a .toml, .yaml/.yml or .json file")
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(d).__name__}")
    return d


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k in ("model", "preprocess") and isinstance(v, dict):
            out[k] = {**out.get(k, {}), **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(
    preset: str | None = None, file: str | os.PathLike | None = None, overrides: dict | None = None
) -> TrainConfig:
    """Resolve defaults < preset < config file < overrides (e.g. command-line flags).

    Args:
        preset: "smoke" | "cpu" | "gpu" or None; a ``preset`` key in the file also works.
        file: TOML/YAML/JSON config file (see :func:`load_config_file`).
        overrides: dict of TrainConfig fields; ``None`` values are ignored; ``model`` and
            ``preprocess`` dicts are merged key-wise.

    Returns:
        a validated :class:`TrainConfig`. Unknown keys raise :class:`ConfigError` naming the
        key and listing the valid ones.
    """
    file_d = load_config_file(file) if file else {}
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(file_d, [f.name for f in dataclasses.fields(TrainConfig)], f"config file {file}")
    preset = over.get("preset") or preset or file_d.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
    d: dict = {}
    if preset:
        d = _merge(d, PRESETS[preset])
    d = _merge(d, file_d)
    d = _merge(d, over)
    d["preset"] = preset
    return TrainConfig.from_dict(d)


# -----------------------------------------------------------------------------
# small utilities: devices, seeding, RNG states, atomic files


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> cuda (``cuda:local_rank``) if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed derived from (seed, epoch), stable across Python versions."""
    h = hashlib.sha256(f"slicelib:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _rng_state(loader_gen: torch.Generator | None) -> dict:
    """All RNG states as tensors/primitives (loadable with ``weights_only=True``)."""
    py = random.getstate()
    npst = np.random.get_state()
    state = {
        "python_version": int(py[0]),
        "python": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2],
        "numpy_keys": torch.from_numpy(np.asarray(npst[1], dtype=np.int64)),
        "numpy_pos": int(npst[2]),
        "numpy_has_gauss": int(npst[3]),
        "numpy_gauss": float(npst[4]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_gen.get_state() if loader_gen is not None else None,
    }
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator | None) -> None:
    random.setstate(
        (state["python_version"], tuple(int(v) for v in state["python"]), state["python_gauss"])
    )
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_gen is not None and state.get("loader") is not None:
        loader_gen.set_state(state["loader"])


def _atomic_write(path: Path, write) -> None:
    """Write via ``write(tmp_path)`` to a temp file in the same folder, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Save ``payload`` (tensors and primitive containers only) atomically to ``path``."""
    _atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a slicelib checkpoint with ``torch.load(weights_only=True)`` on the CPU.

    Returns:
        dict with at least ``model`` (state_dict), ``epoch`` (int, 0-based, last finished
        epoch) and ``config`` (the run config, parsed from JSON into a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Train first (slicelib train --out "
            f"{path.parent}) or pass the run directory that holds best.pt/last.pt."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(f"could not read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(
            f"{path} is not a slicelib checkpoint (expected a dict with 'model' and 'config')."
        )
    ckpt["config"] = (
        json.loads(ckpt["config"]) if isinstance(ckpt["config"], str) else ckpt["config"]
    )
    return ckpt


def _arch(model_config: dict) -> str:
    keys = ("backbone", "embed_dim", "position", "pooling", "axes", "task", "num_classes")
    keys += ("volume_shape", "stem")
    return ", ".join(f"{k}={model_config.get(k)!r}" for k in keys if k in model_config)


def check_state_dict(model: torch.nn.Module, state: dict, ckpt_model_config: dict) -> None:
    """Raise :class:`CheckpointError` if ``state`` does not fit ``model``.

    The message names missing, unexpected and shape-mismatched keys and both architectures
    (``model.config`` vs the checkpoint's model config).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def few(keys):
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    raise CheckpointError(
        "the checkpoint is from another architecture.\n"
        f"  checkpoint: {_arch(ckpt_model_config)}\n"
        f"  model:      {_arch(getattr(model, 'config', {}))}\n"
        f"  {len(missing)} missing keys [{few(missing)}]; {len(unexpected)} unexpected keys "
        f"[{few(unexpected)}]; {len(shapes)} shape mismatches [{few(shapes)}].\n"
        "Build the model from the checkpoint's own config (slicelib.train.load_run), or "
        "train into a new run directory."
    )


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    _atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


# -----------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)


def _dist_setup() -> tuple[int, int, int]:
    """Initialise torch.distributed from torchrun's env vars if WORLD_SIZE > 1.

    Returns:
        (rank, world_size, local_rank); (0, 1, 0) without torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _gather(obj):
    """all_gather_object across ranks -> list (one entry per rank); [obj] without DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# -----------------------------------------------------------------------------
# losses, predictions


def _loss(task: str, output: torch.Tensor, target: torch.Tensor, stats: dict) -> torch.Tensor:
    """Mean loss over the batch. Regression: MSE of standardised targets (unitless).

    output: (B,) years / logits, or (B, C) logits; target: (B,) years or labels.
    Classification with ``stats["class_weights"]`` (one weight per class): the weighted mean
    sum_i w[y_i] * loss_i / B (scikit-learn's "balanced" convention: weights average 1 over the
    training set).
    """
    output = output.float()
    if task == "regression":
        sd = stats.get("std") or 1.0
        return F.mse_loss(output / sd, target.float() / sd)
    weights = stats.get("class_weights")
    if task == "binary":
        per = F.binary_cross_entropy_with_logits(output, target.float(), reduction="none")
    else:
        per = F.cross_entropy(output, target.long(), reduction="none")
    if weights is None:
        return per.mean()
    w = torch.as_tensor(weights, dtype=per.dtype, device=per.device)[target.long()]
    return (w * per).mean()


class _Indexed(Dataset):
    """Wrap a dataset so items become (x, y, index) (to gather predictions across ranks)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i][:2]
        return x, y, i


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    num_workers: int = 0,
    progress: bool = False,
    shard: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over a dataset of ``(x [1,X,Y,Z], y)`` items, in order.

    Args:
        shard: under torch.distributed, each rank predicts every world_size-th item and the
            results are gathered, so every rank returns the full, ordered arrays.

    Returns:
        (outputs, targets): float64 arrays [N] (regression years / binary logits) or [N, C]
        (multiclass logits), and [N] targets.
    """
    device = torch.device(device)
    model.eval()
    n = len(dataset)
    rank, world = (
        (dist.get_rank(), dist.get_world_size()) if shard and dist.is_initialized() else (0, 1)
    )
    ds = Subset(_Indexed(dataset), list(range(rank, n, world)))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outs, ys, idx = [], [], []
    for x, y, i in tqdm(loader, desc="predict", disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x.to(device, non_blocking=True))
        outs.append(out.float().cpu())
        ys.append(y.float().cpu())
        idx.append(i)
    local = (
        torch.cat(idx).numpy() if idx else np.zeros(0, np.int64),
        torch.cat(outs).double().numpy() if outs else np.zeros(0),
        torch.cat(ys).double().numpy() if ys else np.zeros(0),
    )
    if world > 1:
        parts = _gather(local)
        order = np.concatenate([p[0] for p in parts])
        out_all = np.concatenate([p[1] for p in parts if len(p[1])])
        y_all = np.concatenate([p[2] for p in parts])
        perm = np.argsort(order)
        return out_all[perm], y_all[perm]
    return local[1], local[2]


# -----------------------------------------------------------------------------
# the training loop


def _monitor(cfg: TrainConfig) -> tuple[str, str]:
    """(history column, "min"|"max") used for best checkpoint and early stopping."""
    if cfg.monitor == "auto":
        return ("val_mae", "min") if cfg.task == "regression" else ("val_loss", "min")
    name = cfg.monitor if cfg.monitor.startswith("val_") else "val_" + cfg.monitor
    larger = ("accuracy", "auc", "r2", "pearson_r")
    return name, "max" if any(name.endswith(s) for s in larger) else "min"


_RESUME_MAY_CHANGE = ("epochs", "patience", "num_workers", "device", "out", "cache_dir")
# model options that change the memory layout only, not the function or the parameters
_MODEL_MAY_CHANGE = ("channels_last",)


def fit(
    model: SliceModel,
    train_ds: Dataset,
    val_ds: Dataset,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` with checkpoints, resume, early stopping and a history table.

    Args:
        model: a freshly built :class:`SliceModel` (its weights are replaced on resume).
        train_ds, val_ds: datasets of ``(x float32 [1, X, Y, Z], y float32 scalar)``; for
            classification ``y`` holds the class index (0..C-1).
        config: the :class:`TrainConfig` (optimisation and runtime fields are used here).
        run_dir: where ``last.pt``, ``best.pt`` and ``history.csv`` go (rank 0 only).
        meta: the run config stored in checkpoints (see :func:`train`); must contain
            ``train_stats`` (``mean``/``std`` for regression, ``majority_class``/``num_classes``
            otherwise). Built from ``config`` and ``model.config`` if omitted (then
            ``train_stats`` is computed from ``train_ds``).
        progress: show tqdm bars (rank 0). One summary line per epoch goes to stderr anyway.

    Returns:
        dict: ``best_epoch`` (0-based), ``best_value`` (monitored metric), ``epochs_run``,
        ``stopped_early``, ``history`` (list of row dicts).
    """
    cfg = config
    run_dir = Path(run_dir)
    rank, world, local_rank = _dist_setup()
    device = pick_device(cfg.device, local_rank)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if meta is None:
        stats = _train_stats_from_dataset(train_ds, cfg.task, model, cfg.class_weights)
        meta = _make_meta(cfg, model, stats)
    stats = meta["train_stats"]
    meta_json = json.dumps(M.to_jsonable(meta))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    prev_det = torch.are_deterministic_algorithms_enabled()
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _fit_loop(
            model, train_ds, val_ds, cfg, run_dir, meta, meta_json, stats, device, bf16, progress
        )
    finally:
        torch.use_deterministic_algorithms(prev_det)


def _fit_loop(
    model, train_ds, val_ds, cfg, run_dir, meta, meta_json, stats, device, bf16, progress
):
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    show = progress and rank == 0
    model.to(device)
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # --- data: a seeded shuffle, re-seeded every epoch --------------------------------------
    gen = torch.Generator()
    if world > 1:
        sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.seed, drop_last=False)
    else:
        sampler = RandomSampler(train_ds, generator=gen)
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        worker_init_fn=_seed_worker,
        generator=gen,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)

    # --- optimiser (paper: Adam, lr 1e-4, weight decay 1e-4) and optional cosine schedule ---
    head_scale = stats.get("head_scale", 1.0)  # see _scale_output_layer
    out_layer = _output_layer(model) if head_scale != 1.0 else None
    special = {id(p) for p in out_layer.parameters()} if out_layer is not None else set()
    groups = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in special]}
    ]
    if special:
        groups.append({"params": list(out_layer.parameters()), "lr": cfg.lr * head_scale})
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    # --- resume from last.pt if the run directory has one ---------------------------------
    monitor, mode = _monitor(cfg)
    start_epoch, history = 0, []
    best_value, best_epoch, bad_epochs = None, -1, 0
    last = run_dir / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last)
        _check_resume(ckpt["config"], meta, run_dir)
        check_state_dict(model, ckpt["model"], ckpt["config"].get("model", {}))
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], gen)
        start_epoch = ckpt["epoch"] + 1
        history = list(ckpt["history"])
        best_value, best_epoch = ckpt["best_value"], ckpt["best_epoch"]
        bad_epochs = ckpt["bad_epochs"]
        if ckpt.get("stopped_early"):
            start_epoch = cfg.epochs  # nothing left to do
        if rank == 0:
            tqdm.write(f"resuming {run_dir} after epoch {ckpt['epoch'] + 1}", file=sys.stderr)

    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        _seed_everything(_epoch_seed(cfg.seed, epoch))  # dropout, augmentation ...
        gen.manual_seed(_epoch_seed(cfg.seed, epoch) + 1)  # shuffling
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)

        # --- train one epoch ---------------------------------------------------------------
        net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of losses x n, n)
        opt.zero_grad(set_to_none=True)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
        for i, batch in enumerate(bar):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device)
            step_now = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(loader)
            sync = step_now or world == 1
            ctx = net.no_sync() if (world > 1 and not sync) else _nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = net(x)  # (B,) or (B, C)
                loss = _loss(cfg.task, out, y, stats)
                (loss / cfg.grad_accum).backward()
            if step_now:
                opt.step()
                opt.zero_grad(set_to_none=True)
                if sched is not None:
                    sched.step()
            loss_sum += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if world > 1:
            dist.all_reduce(loss_sum)
        train_loss = float(loss_sum[0] / loss_sum[1])

        # --- validate: predictions of every rank gathered, metrics on the full set ---------
        val_out, val_y = predict_dataset(
            model, val_ds, cfg.batch_size, device, bf16, cfg.num_workers, shard=True
        )
        val_loss = float(_loss(cfg.task, torch.from_numpy(val_out), torch.from_numpy(val_y), stats))
        val_metrics = M.compute_metrics(cfg.task, val_y, val_out, stats)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
        for k, v in val_metrics.items():
            if not isinstance(v, list) and not k.startswith("baseline_"):
                row["val_" + k] = v
        row["lr"] = opt.param_groups[0]["lr"]
        row["seconds"] = round(time.time() - t0, 3)
        history.append(M.to_jsonable(row))

        # --- best checkpoint, early stopping -----------------------------------------------
        value = row.get(monitor)
        if value is None and monitor not in row:
            raise ConfigError(f"monitor={cfg.monitor!r}: no column {monitor!r} in {list(row)}")
        improved = value is not None and (
            best_value is None or (value < best_value if mode == "min" else value > best_value)
        )
        if improved:
            best_value, best_epoch, bad_epochs = value, epoch, 0
        else:
            bad_epochs += 1
        stopped_early = cfg.patience is not None and bad_epochs >= cfg.patience
        if rank == 0:
            if improved:
                save_checkpoint(
                    run_dir / "best.pt",
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "metrics": json.dumps(row),
                        "config": meta_json,
                    },
                )
            save_checkpoint(
                last,
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rng": _rng_state(gen),
                    "history": history,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                    "config": meta_json,
                },
            )
            _write_csv(run_dir / "history.csv", pd.DataFrame(history))
            msg = f"epoch {epoch + 1}/{cfg.epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}"
            for key in ("val_mae", "val_auc", "val_balanced_accuracy", monitor):
                if key != "val_loss" and isinstance(row.get(key), float) and key not in msg:
                    msg += f"  {key} {row[key]:.4f}"
            msg += "  *" if improved else ""
            tqdm.write(msg, file=sys.stderr)
        _barrier()
        if stopped_early:
            if rank == 0:
                tqdm.write(
                    f"early stopping: no improvement for {bad_epochs} epochs", file=sys.stderr
                )
            break

    return {
        "best_epoch": best_epoch,
        "best_value": best_value,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "history": history,
    }


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _data_fingerprint(table: pd.DataFrame) -> dict:
    """What identifies the data of a run: subject count and a SHA-1 over (id, split, label,
    image file size in bytes) rows. Cheap (no image is read), and it changes when a cohort is
    regenerated or a scan is replaced by one of another size."""
    h = hashlib.sha1()
    for pid, split, y, path in zip(
        table["participant_id"], table["split"], table["_y"], table["path"]
    ):
        size = os.path.getsize(path) if os.path.exists(path) else -1
        h.update(f"{pid},{split},{y},{size}\n".encode())
    return {"n": int(len(table)), "sha1": h.hexdigest()}


def _drop(d: dict, keys) -> dict:
    """A copy of ``d`` without ``keys``."""
    return {k: v for k, v in d.items() if k not in keys}


def _check_resume(saved: dict, meta: dict, run_dir: Path) -> None:
    """Refuse to resume a run directory whose checkpoint came from another configuration."""
    now = M.to_jsonable(meta)
    new = now.get("data")
    if saved.get("data") is not None and new is not None and saved["data"] != new:
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt) trained on other data (saved "
            f"{saved['data']}, now {new}: the table, the split or the image files changed), so "
            f"it cannot be resumed. Use a new --out directory, or delete {run_dir} to start over."
        )
    a, b = (_drop(d.get("train", {}), _RESUME_MAY_CHANGE) for d in (saved, now))
    for cfg in (a, b):  # the run's own model options (train.model) hold layout flags too
        if isinstance(cfg.get("model"), dict):
            cfg["model"] = _drop(cfg["model"], _MODEL_MAY_CHANGE)
    diffs = [
        f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    ma, mb = (_drop(d.get("model", {}), _MODEL_MAY_CHANGE) for d in (saved, now))
    diffs += [
        f"model.{k}: saved {ma.get(k)!r}, now {mb.get(k)!r}"
        for k in sorted(set(ma) | set(mb))
        if ma.get(k) != mb.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt) with another configuration, so it cannot "
            "be resumed:\n  " + "\n  ".join(diffs) + "\nUse a new --out directory, or delete "
            f"{run_dir} to start over. (May change on resume: "
            f"{', '.join(_RESUME_MAY_CHANGE + tuple('model.' + k for k in _MODEL_MAY_CHANGE))}.)"
        )


# -----------------------------------------------------------------------------
# train(): data -> split -> model -> fit


def _train_stats(
    targets: np.ndarray, task: str, num_classes: int | None, class_weights: str = "none"
) -> dict:
    """Training-set statistics: the baseline predictor, the loss scale and class weights.

    ``class_weights="balanced"`` adds ``class_weights``: n / (n_classes x count) per class.
    """
    t = np.asarray(targets, dtype=np.float64)
    if task == "regression":
        return {"n": int(t.size), "mean": float(t.mean()), "std": float(t.std()) or 1.0}
    counts = np.bincount(t.astype(np.int64), minlength=num_classes or 2)
    stats = {
        "n": int(t.size),
        "counts": counts.tolist(),
        "majority_class": int(counts.argmax()),
        "num_classes": int(num_classes or 2),
    }
    if class_weights == "balanced":
        w = t.size / (len(counts) * np.maximum(counts, 1))
        stats["class_weights"] = [round(float(v), 6) for v in w]
    return stats


def _train_stats_from_dataset(ds: Dataset, task: str, model, class_weights: str = "none") -> dict:
    ys = np.array([float(ds[i][1]) for i in range(len(ds))])
    num_classes = getattr(model, "config", {}).get("num_classes")
    return _train_stats(ys, task, num_classes, class_weights)


def _preprocess_version() -> str:
    from slicelib.data import CACHE_VERSION

    return CACHE_VERSION


def _make_meta(cfg: TrainConfig, model, train_stats: dict, **extra) -> dict:
    meta = {
        "slicelib_format": CHECKPOINT_FORMAT,
        "preprocess_version": _preprocess_version(),
        "train": cfg.to_dict(),
        "model": dict(getattr(model, "config", {})),
        "preprocess": dict(cfg.preprocess),
        "train_stats": train_stats,
    }
    meta.update(extra)
    return M.to_jsonable(meta)


def _output_layer(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The last Linear layer of the model's head (SliceModel.head[-1]), or None."""
    head = getattr(model, "head", None)
    last = head[-1] if isinstance(head, torch.nn.Sequential) and len(head) else None
    return last if isinstance(last, torch.nn.Linear) else None


def _scale_output_layer(model: torch.nn.Module, scale: float) -> float:
    """Multiply the output layer's initial weights by ``scale`` (the target SD, years).

    Together with an output-layer learning rate multiplied by the same factor (see
    :func:`fit`), Adam then trains ``w / scale`` at the base learning rate: the same dynamics
    as a head predicting z-scores followed by ``mean + sd * z``, while the model's output
    stays in years. Returns the factor actually applied (1.0 if there is no such layer).
    """
    layer = _output_layer(model)
    if layer is None or not scale or scale == 1.0:
        return 1.0
    with torch.no_grad():
        layer.weight.mul_(float(scale))
    return float(scale)


def _encode_labels(values: pd.Series, task: str, target: str) -> tuple[pd.Series, list | None]:
    """Map class values to codes 0..C-1. Returns (codes as float, classes: code -> value).

    Values that already are 0/1 (binary) or 0..C-1 (multiclass) are kept as they are.
    """
    if task == "regression":
        return values.astype(float), None
    uniq = sorted(pd.unique(values.dropna()).tolist())
    codes_ok = all(float(u).is_integer() and float(u) >= 0 for u in uniq)
    if task == "binary":
        if set(float(u) for u in uniq) <= {0.0, 1.0}:
            return values.astype(float), [0, 1]
        if len(uniq) > 2:
            raise ConfigError(
                f"task 'binary' needs two classes in column {target!r}, found {len(uniq)}: "
                f"{uniq[:10]}. Use --task multiclass or a 0/1 column."
            )
    elif codes_ok:
        return values.astype(float), list(range(int(max(uniq)) + 1))
    classes = [int(u) if float(u).is_integer() else u for u in uniq]
    return values.map({u: i for i, u in enumerate(uniq)}).astype(float), classes


def _apply_classes(values: pd.Series, classes: list | None) -> pd.Series:
    """Codes 0..C-1 for class values, using a run's stored ``classes`` list."""
    if classes is None or list(classes) == list(range(len(classes))):
        return values.astype(float)
    lookup = {float(c): i for i, c in enumerate(classes)}
    codes = values.astype(float).map(lookup)
    if codes.isna().any():
        bad = sorted(set(values[codes.isna()].tolist()))
        raise ConfigError(f"class values {bad[:5]} were not seen in training (classes {classes})")
    return codes.astype(float)


def _check_classes(train_y: np.ndarray, task: str, classes: list, target: str) -> None:
    if task == "regression":
        return
    counts = np.bincount(train_y.astype(np.int64), minlength=len(classes))
    present = [i for i, c in enumerate(counts) if c > 0]
    if len(present) < 2 or (task == "binary" and len(present) < 2):
        only = classes[present[0]] if present else None
        raise ConfigError(
            f"a {task} task needs at least two classes in the training split, but all "
            f"{int(counts.sum())} training subjects have {target}={only!r} (class "
            f"{present[0] if present else '?'}). Check the target column, pick another "
            "--target, use more subjects, or change --split-seed."
        )
    missing = [classes[i] for i, c in enumerate(counts) if c == 0]
    if missing:
        print(
            f"warning: classes {missing} of {target!r} have no training subjects",
            file=sys.stderr,
        )


def _read_table(data, target: str, cfg: TrainConfig) -> pd.DataFrame:
    from slicelib import data as D

    table = D.read_table(data, target, path_column=cfg.path_column, id_column=cfg.id_column)
    if target not in table.columns:  # read_table should already have said so
        raise ConfigError(
            f"{data} has no column {target!r}; columns: {', '.join(map(str, table.columns))}"
        )
    return table


def _preprocess_config(d: dict):
    from slicelib import data as D

    return D.PreprocessConfig.from_dict(dict(d)) if d else D.PreprocessConfig()


def _dataset(table: pd.DataFrame, target: str | None, pcfg, cfg: TrainConfig, augment=False):
    from slicelib import data as D

    return D.VolumeDataset(
        table.reset_index(drop=True),
        target,
        pcfg,
        cache_dir=cfg.cache_dir,
        augment=augment,
        seed=cfg.seed,
    )


def train(config: TrainConfig | dict, progress: bool = True) -> Path:
    """Train a slice model on a participants table; resumable; returns the run directory.

    Steps: read the table (``slicelib.data.read_table``), split subjects into train/val/test
    (``slicelib.data.split_subjects``, seeded by ``split_seed``; saved as ``split.csv`` and
    reused on resume), compute the training baseline (mean / majority class), build the
    :class:`SliceModel` (regression head bias = training mean, as in the paper), and run
    :func:`fit`. Rerunning the same call resumes from ``last.pt``.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        progress: show progress bars.

    Returns:
        Path of the run directory (``config.out``) with config.json, split.csv, best.pt,
        last.pt and history.csv.
    """
    from slicelib import data as D

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    if not cfg.data:
        raise ConfigError("no data: set data (--data TABLE_OR_BIDS_DIR) in the config")
    rank, world, _ = _dist_setup()
    run_dir = Path(cfg.out)
    table = _read_table(cfg.data, cfg.target, cfg)
    ids = table[cfg.id_column if cfg.id_column in table.columns else "participant_id"].astype(str)
    table = table.assign(participant_id=ids.values)

    # --- subject split: reuse the saved one (resume), else a seeded stratified split -------
    split_file = run_dir / "split.csv"
    if split_file.is_file():
        saved = pd.read_csv(split_file, dtype={"participant_id": str})
        where = dict(zip(saved["participant_id"], saved["split"]))
        unknown = sorted(set(table["participant_id"]) - set(where))
        if unknown:
            raise ConfigError(
                f"{split_file} does not list subjects {unknown[:5]} of {cfg.data}; the data "
                "changed since this run started. Use a new --out directory."
            )
    else:
        parts = D.split_subjects(
            table, cfg.target, fractions=tuple(cfg.split_fractions), seed=cfg.split_seed
        )
        where = {str(s): name for name, subjects in parts.items() for s in subjects}
    table["split"] = table["participant_id"].map(where)
    codes, classes = _encode_labels(table[cfg.target], cfg.task, cfg.target)
    table["_y"] = codes.values
    tr, va = table[table["split"] == "train"], table[table["split"] == "val"]
    if len(tr) == 0 or len(va) == 0:
        raise ConfigError(
            f"the split has {len(tr)} training and {len(va)} validation subjects; "
            f"{cfg.data} has {len(table)} subjects. Use more subjects or other split_fractions."
        )
    _check_classes(tr["_y"].to_numpy(), cfg.task, classes or [], cfg.target)

    # --- model: the grid comes from the preprocessing, the head bias from the training mean -
    pcfg = _preprocess_config(cfg.preprocess)
    n_classes = len(classes) if classes else None
    stats = _train_stats(tr["_y"].to_numpy(), cfg.task, n_classes, cfg.class_weights)
    kwargs = dict(cfg.model)
    kwargs.update(
        task=cfg.task,
        num_classes=len(classes) if cfg.task == "multiclass" else None,
        volume_shape=tuple(pcfg.shape),
        target_mean=stats["mean"] if cfg.task == "regression" else None,
        seed=cfg.seed,
    )
    if cfg.task == "regression" and "target_std" in inspect.signature(SliceModel).parameters:
        kwargs["target_std"] = stats["std"]  # output = mean + std * head(...): unit-scale head
    if "weights" in kwargs and kwargs["weights"] in ("none", "None", ""):
        kwargs["weights"] = None
    model = SliceModel(**kwargs)
    if cfg.task == "regression" and cfg.scale_head and "target_std" not in kwargs:
        stats["head_scale"] = _scale_output_layer(model, stats["std"])
    resolved = copy.deepcopy(cfg)
    resolved.preprocess = pcfg.to_dict()
    meta = _make_meta(
        resolved, model, stats, classes=classes, world_size=world, data=_data_fingerprint(table)
    )

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not split_file.is_file():
            _write_csv(
                split_file,
                table[["participant_id", "split", cfg.target]].sort_values("participant_id"),
            )
        _write_json(run_dir / "config.json", meta)
    _barrier()

    train_ds = _dataset(tr.assign(**{cfg.target: tr["_y"]}), cfg.target, pcfg, cfg, cfg.augment)
    val_ds = _dataset(va.assign(**{cfg.target: va["_y"]}), cfg.target, pcfg, cfg)
    fit(model, train_ds, val_ds, resolved, run_dir, meta=meta, progress=progress)
    return run_dir


# -----------------------------------------------------------------------------
# using a finished run: load, evaluate, predict


def load_run(
    run_dir: str | os.PathLike, checkpoint: str = "best", device: str = "cpu"
) -> tuple[SliceModel, dict]:
    """Rebuild the model of a run from its checkpoint (no pretrained weights are fetched).

    Args:
        run_dir: run directory, or a path to a ``.pt`` checkpoint file.
        checkpoint: "best" or "last" (ignored when ``run_dir`` is a file).
        device: where to put the model.

    Returns:
        (model in eval mode, run config dict with keys ``train``, ``model``, ``preprocess``,
        ``train_stats``, ``classes``).
    """
    p = Path(run_dir)
    path = p if p.is_file() else p / f"{checkpoint}.pt"
    ckpt = load_checkpoint(path)
    meta = ckpt["config"]
    model = SliceModel.from_config(meta["model"])
    check_state_dict(model, ckpt["model"], meta["model"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    meta["checkpoint_epoch"] = int(ckpt["epoch"])
    saved, current = str(meta.get("preprocess_version", "1")), _preprocess_version()
    if saved != current:
        warnings.warn(
            f"{path} was trained with slicelib preprocessing version {saved}; this slicelib "
            f"preprocesses with version {current} (see CACHE_VERSION in slicelib.data), "
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
) -> dict:
    """Evaluate a run's model and the training baseline side by side.

    Args:
        run_dir: the run directory.
        data: participants table / BIDS folder; default: the run's own ``data``. Subjects
            not in the run's ``split.csv`` count as "external" (included in ``split="all"``).
        split: "train" | "val" | "test" | "all".
        checkpoint: "best" or "last".

    Returns:
        JSON-serialisable dict: ``split``, ``n``, ``task``, ``checkpoint_epoch`` (0-based: the
        training log's "epoch 9/10" is 8), the metrics
        (e.g. ``mae``/``baseline_mae`` in years, ``balanced_accuracy``/
        ``baseline_balanced_accuracy``, ``auc``/``baseline_auc``, ``confusion_matrix``) and for
        regression ``brain_age_gap`` (linear age-bias correction fitted on the val split).
    """
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split={split!r}: use train, val, test or all")
    run_dir = Path(run_dir)
    dev = pick_device(device)
    model, meta = load_run(run_dir, checkpoint, device=dev)
    tcfg = TrainConfig.from_dict(meta["train"])
    task, target = tcfg.task, tcfg.target
    table = _read_table(data or tcfg.data, target, tcfg)
    ids = table[tcfg.id_column if tcfg.id_column in table.columns else "participant_id"]
    table = table.assign(participant_id=ids.astype(str).values)
    saved = pd.read_csv(run_dir / "split.csv", dtype={"participant_id": str})
    where = dict(zip(saved["participant_id"], saved["split"]))
    table["split"] = table["participant_id"].map(where).fillna("external")
    if task != "regression":
        table[target] = _apply_classes(table[target], meta.get("classes")).values
    pcfg = _preprocess_config(meta["preprocess"])
    bf16 = dev.type == "cuda"

    def run_on(df: pd.DataFrame):
        ds = _dataset(df, target, pcfg, tcfg)
        return predict_dataset(model, ds, tcfg.batch_size, dev, bf16, progress=progress)

    sel = table if split == "all" else table[table["split"] == split]
    if len(sel) == 0:
        raise ConfigError(
            f"no subjects of split {split!r} in {data or tcfg.data} (splits there: "
            f"{table['split'].value_counts().to_dict()}). Try --split all."
        )
    out, y = run_on(sel)
    res = {
        "run": str(run_dir),
        "data": str(data or tcfg.data),
        "split": split,
        "task": task,
        "target": target,
        "checkpoint": checkpoint,
        "checkpoint_epoch": meta["checkpoint_epoch"],
        "baseline": (
            f"training mean ({meta['train_stats']['mean']:.3f})"
            if task == "regression"
            else f"training majority class ({meta['train_stats']['majority_class']})"
        ),
    }
    res.update(M.compute_metrics(task, y, out, meta["train_stats"]))
    if task == "regression":
        val = table[table["split"] == "val"]
        if split == "val":
            v_out, v_y = out, y
        elif len(val):
            v_out, v_y = run_on(val)
        else:
            v_out = v_y = None
        res["brain_age_gap"] = M.brain_age_gap(y, out, v_y, v_out)
        res["brain_age_gap"]["correction"] = (
            "pred + age - (a*age + b), a, b fitted on the val split (Beheshti 2019; de Lange & Cole 2020)"
        )
    return M.to_jsonable(res)


def predict_files(
    run_dir: str | os.PathLike,
    files,
    checkpoint: str = "best",
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Predict from NIfTI files with the run's own preprocessing (read from the checkpoint).

    A file that cannot be read or preprocessed does not stop the others: its row has an
    ``error`` message and empty predictions.

    Args:
        run_dir: run directory (or checkpoint file).
        files: sequence of paths to 3D NIfTI scans (.nii / .nii.gz).

    Returns:
        DataFrame with one row per file: ``path``, ``prediction`` (years for regression; class
        for classification), ``probability`` (binary: P(class 1)) or ``prob_<class>``
        (multiclass), ``error`` (empty string if fine).
    """
    from slicelib import data as D

    dev = pick_device(device)
    model, meta = load_run(run_dir, checkpoint, device=dev)
    pcfg = _preprocess_config(meta["preprocess"])
    task, classes = meta["model"]["task"], meta.get("classes")
    rows = []
    for f in tqdm(list(files), desc="predict", disable=not progress):
        row = {"path": str(f), "prediction": None, "error": ""}
        try:
            arr, _ = D.preprocess(f, pcfg)
            # training read volumes through the float16 cache: round the same way
            arr = np.asarray(arr, dtype=np.float16).astype(np.float32)
            x = torch.from_numpy(arr)[None, None].to(dev)
            with torch.no_grad():
                out = model(x)[0].float().cpu()
        except Exception as err:  # noqa: BLE001 - reported per file, the others go on
            row["error"] = f"{type(err).__name__}: {err}".replace("\n", " ")
            rows.append(row)
            continue
        if task == "regression":
            row["prediction"] = float(out)
        elif task == "binary":
            p = float(torch.sigmoid(out))
            row["prediction"] = classes[int(p > 0.5)] if classes else int(p > 0.5)
            row["probability"] = p
        else:
            prob = torch.softmax(out, dim=0)
            k = int(prob.argmax())
            row["prediction"] = classes[k] if classes else k
            for i, p in enumerate(prob.tolist()):
                row[f"prob_{classes[i] if classes else i}"] = p
        rows.append(row)
    df = pd.DataFrame(rows)
    cols = ["path", "prediction"] + [
        c for c in df.columns if c not in ("path", "prediction", "error")
    ]
    return df[cols + ["error"]]
