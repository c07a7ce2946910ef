"""What training and using a finished run share: devices, precision, checkpoints, labels, data.

:mod:`slicelib.train` and :mod:`slicelib.runs` both import from here (and ``runs`` never from
``train``): the device choice (:func:`pick_device`, :func:`dist_backend`), the autocast decision
(:func:`use_bf16`, one rule for training, validation, evaluation and prediction), deterministic
kernels (:func:`deterministic_kernels`), the cosine schedule and the weight average a run may
validate instead of its weights (:func:`cosine_factor`, :func:`weight_average`), checkpoint
I/O (:func:`load_checkpoint`, :func:`save_checkpoint`, :func:`check_state_dict`), label
encoding (:func:`encode_labels`, :func:`apply_classes`), a run's table and dataset
(:func:`read_run_table`, :func:`volume_dataset`) and batched prediction
(:func:`predict_dataset`, which gathers predictions across torch.distributed ranks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from slicelib import cache as C
from slicelib import data as D
from slicelib.build import model_config_dict
from slicelib.datasets import read_table
from slicelib.errors import CheckpointError, ConfigError
from slicelib.utils import atomic_write
from slicelib.weights import state_dict_mismatch

__all__ = [
    "ConfigError",
    "CheckpointError",
    "CHECKPOINT_FORMAT",
    "pick_device",
    "dist_backend",
    "dist_setup",
    "dist_timeout",
    "barrier",
    "use_bf16",
    "deterministic_kernels",
    "cosine_factor",
    "weight_average",
    "load_checkpoint",
    "save_checkpoint",
    "check_state_dict",
    "read_run_table",
    "volume_dataset",
    "encode_labels",
    "apply_classes",
    "check_classes",
    "predict_dataset",
]

CHECKPOINT_FORMAT = 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device of a device string: ``"auto"`` -> ``cuda:local_rank`` if CUDA is
    available, else mps, else cpu; ``"cuda"`` -> ``cuda:local_rank``; anything else (``"cpu"``,
    ``"cuda:1"``, ``"mps"``) as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def dist_backend(device: str) -> str:
    """The torch.distributed backend for a configured device string (``TrainConfig.device``):
    ``"nccl"`` when it resolves to a CUDA device (:func:`pick_device`), else ``"gloo"`` (CPU,
    mps). NCCL reduces CUDA tensors only, so it is never chosen for a CPU run on a GPU machine."""
    return "nccl" if pick_device(device).type == "cuda" else "gloo"


def dist_timeout() -> datetime.timedelta:
    """How long a collective (a barrier included) may wait for the slowest rank:
    ``$SLICELIB_DIST_TIMEOUT`` seconds, default 7200 (2 h; torch's default is 10 min for NCCL,
    30 min for gloo). Every rank preprocesses and encodes only its share of the scans, so the
    wait is one rank's share of that work, not rank 0's whole cohort."""
    raw = os.environ.get("SLICELIB_DIST_TIMEOUT", "7200")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(
            f"SLICELIB_DIST_TIMEOUT={raw!r}: give the collective timeout in seconds (> 0)."
        )
    return datetime.timedelta(seconds=seconds)


def dist_setup(device: str = "auto") -> tuple[int, int, int]:
    """Initialise torch.distributed from torchrun's env vars if ``WORLD_SIZE`` > 1, with the
    backend of the configured ``device`` (:func:`dist_backend`) and :func:`dist_timeout`.

    A process group initialised by the caller (any world size) is used as it is.

    Returns:
        (rank, world_size, local_rank); (0, 1, 0) without torch.distributed.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = dist_backend(device)
        if backend == "nccl":
            torch.cuda.set_device(pick_device(device, local_rank))
        dist.init_process_group(backend=backend, timeout=dist_timeout())
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    return 0, 1, 0


def barrier() -> None:
    """``torch.distributed.barrier()`` under a process group; nothing otherwise."""
    if dist.is_initialized():
        dist.barrier()


def use_bf16(device: torch.device | str, precision: str) -> bool:
    """Whether to run the model under bf16 autocast: ``precision`` "bf16" always, "fp32" never,
    "auto" on CUDA devices only. The one rule for training, validation, ``evaluate_run`` and
    ``predict_files`` (a run is evaluated in the precision it was trained in)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision={precision!r}: use one of 'auto', 'bf16', 'fp32'.")
    return precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda")


# -----------------------------------------------------------------------------
# the training loop's runtime: deterministic kernels, the lr schedule, the weight average


@contextlib.contextmanager
def deterministic_kernels(on: bool, device: torch.device):
    """Deterministic kernels inside the block (warning where none exists); restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    if on:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def cosine_factor(steps: int):
    """The cosine schedule as a function of the optimiser step ``t``: the factor
    ``(1 + cos(pi * min(t, steps) / steps)) / 2`` of the base lr (1 at the start, 0 after
    ``steps`` steps; torch's CosineAnnealingLR with eta_min 0, in closed form).

    A plain function of the step count (LambdaLR saves no state of a function), so a run
    resumed with another ``epochs`` follows the new schedule's length from where it stands
    (a restored CosineAnnealingLR keeps the old length and climbs again after the old end)."""
    steps = max(1, int(steps))

    def factor(t: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))

    return factor


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers, or None if
    ``decay`` is 0 (``TrainConfig.ema``).

    torch's ``AveragedModel(model, get_ema_multi_avg_fn(decay), use_buffers=True)``: a copy of
    the model (on its device) whose weights and BatchNorm running statistics follow
    ``avg = decay * avg + (1 - decay) * weights`` at each ``update_parameters(model)`` (call it
    after every optimiser step; the first call copies the weights). Run ``.module`` (the
    averaged model, same input and output shapes); ``state_dict()`` holds ``n_averaged`` and
    the ``module.``-prefixed tensors, for resuming.
    """
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


# -----------------------------------------------------------------------------
# checkpoints


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
    if isinstance(ckpt["config"], str):
        ckpt["config"] = json.loads(ckpt["config"])
    return ckpt


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Save ``payload`` (tensors and primitive containers only) atomically to ``path``."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _arch(model_config) -> str:
    if dataclasses.is_dataclass(model_config):  # a ModelConfig rather than its dict
        model_config = dataclasses.asdict(model_config)
    keys = ("backbone", "embed_dim", "position", "norm", "pooling", "axes", "task")
    keys += ("num_classes", "volume_shape", "stem")
    return ", ".join(f"{k}={model_config.get(k)!r}" for k in keys if k in model_config)


def check_state_dict(model: torch.nn.Module, state: dict, ckpt_model_config) -> None:
    """Raise :class:`CheckpointError` if ``state`` does not fit ``model``.

    The message names missing, unexpected and shape-mismatched keys and both architectures
    (``model.config`` vs ``ckpt_model_config``, a ModelConfig or its dict).
    """
    mismatch = state_dict_mismatch(model.state_dict(), state, ("checkpoint", "model"))
    if not mismatch:
        return
    raise CheckpointError(
        "the checkpoint is from another architecture.\n"
        f"  checkpoint: {_arch(ckpt_model_config)}\n"
        f"  model:      {_arch(model_config_dict(model))}\n"
        f"  {mismatch}.\n"
        "Build the model from the checkpoint's own config (slicelib.runs.load_run), or "
        "train into a new run directory."
    )


# -----------------------------------------------------------------------------
# a run's table and dataset (shared with training)


def read_run_table(data, train_cfg: dict) -> pd.DataFrame:
    """The participants table of a run: ``participant_id`` (str), ``path``, the target column.

    ``train_cfg`` is the run's ``train`` config (``target``, ``path_column``, ``id_column``).
    """
    target, id_column = train_cfg["target"], train_cfg.get("id_column", "participant_id")
    table = read_table(data, target, path_column=train_cfg.get("path_column"), id_column=id_column)
    ids = table[id_column if id_column in table.columns else "participant_id"].astype(str)
    return table.assign(participant_id=ids.values)


def volume_dataset(table: pd.DataFrame, target: str | None, preprocess: dict, cache_dir=None):
    """A :class:`slicelib.cache.VolumeDataset` of ``(x (1, X, Y, Z), y)`` items for a run."""
    pcfg = D.PreprocessConfig.from_dict(dict(preprocess))
    return C.VolumeDataset(table.reset_index(drop=True), target, pcfg, cache_dir=cache_dir)


def encode_labels(values: pd.Series, task: str, target: str) -> tuple[pd.Series, list | None]:
    """Map class values to codes 0..C-1 (training). Returns (codes as float, classes list).

    Values that already are 0/1 (binary) or 0..C-1 (multiclass) are kept as they are.
    """
    if task == "regression":
        return values.astype(float), None
    uniq = sorted(pd.unique(values.dropna()).tolist())
    if task == "binary":
        if {float(u) for u in uniq} <= {0.0, 1.0}:
            return values.astype(float), [0, 1]
        if len(uniq) > 2:
            raise ConfigError(
                f"task 'binary' needs two classes in column {target!r}, found {len(uniq)}: "
                f"{uniq[:10]}. Use --task multiclass or a 0/1 column."
            )
    elif all(float(u).is_integer() and float(u) >= 0 for u in uniq):
        return values.astype(float), list(range(int(max(uniq)) + 1))
    classes = [int(u) if float(u).is_integer() else u for u in uniq]
    return values.map({u: i for i, u in enumerate(uniq)}).astype(float), classes


def check_classes(train_y: np.ndarray, task: str, classes: list, target: str) -> None:
    """Refuse a classification training split with fewer than two classes; warn about classes
    without training subjects. ``train_y``: (N,) class codes 0..C-1 of the training subjects."""
    if task == "regression":
        return
    counts = np.bincount(train_y.astype(np.int64), minlength=len(classes))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = classes[present[0]] if len(present) else None
        raise ConfigError(
            f"a {task} task needs at least two classes in the training split, but all "
            f"{int(counts.sum())} training subjects have {target}={only!r}. Check the target "
            "column, pick another --target, use more subjects, or change --split-seed."
        )
    missing = [classes[i] for i, c in enumerate(counts) if c == 0]
    if missing:
        print(
            f"warning: classes {missing} of {target!r} have no training subjects", file=sys.stderr
        )


def apply_classes(values: pd.Series, classes: list | None) -> pd.Series:
    """Codes 0..C-1 (float, (N,)) for class values, using a run's stored ``classes`` list."""
    if classes is None or list(classes) == list(range(len(classes))):
        return values.astype(float)
    codes = values.astype(float).map({float(c): i for i, c in enumerate(classes)})
    if codes.isna().any():
        bad = sorted(set(values[codes.isna()].tolist()))
        raise ConfigError(f"class values {bad[:5]} were not seen in training (classes {classes})")
    return codes.astype(float)


# -----------------------------------------------------------------------------
# prediction


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
    """Run ``model`` over a dataset of ``(x, y)`` items (x e.g. (1, X, Y, Z)), in order.

    Args:
        shard: under torch.distributed, each rank predicts every world_size-th item and the
            results are gathered, so every rank returns the full, ordered arrays.

    Returns:
        (outputs, targets): float64 arrays (N,) (regression in target units / binary logits)
        or (N, C) (multiclass logits), and (N,) targets.
    """
    device = torch.device(device)
    model.eval()
    on = shard and dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
    ds = Subset(_Indexed(dataset), list(range(rank, len(dataset), world)))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    idx, outs, ys = [], [], []
    for x, y, i in tqdm(loader, desc="predict", disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x.to(device, non_blocking=True))  # (B,) or (B, C)
        idx.append(i)
        outs.append(out.float().cpu())
        ys.append(y.float().cpu())
    # (an empty shard, possible when world_size > N, has no batches)
    local = [torch.cat(t).double().numpy() if t else np.zeros(0) for t in (idx, outs, ys)]
    if not on:
        return local[1], local[2]
    parts = [None] * world
    dist.all_gather_object(parts, local)
    order = np.argsort(np.concatenate([p[0] for p in parts]))
    out_all = np.concatenate([p[1] for p in parts if len(p[1])])
    return out_all[order], np.concatenate([p[2] for p in parts])[order]
