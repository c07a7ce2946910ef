"""The training configuration: every setting of a run, its presets and how they are resolved.

``TrainConfig`` holds every setting (saved as ``config.json`` and inside every checkpoint);
``PRESETS`` give sizes for a laptop smoke test, a laptop CPU and the paper's GPU scale;
``resolve_config`` layers defaults < preset < config file < command-line flags and checks every
key, so a typo is an error that lists the valid keys rather than a silently ignored setting.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from slicelib.build import saved_model_config
from slicelib.cnn3d import VolumeCNN, is_volume_backbone
from slicelib.data import PreprocessConfig
from slicelib.errors import ConfigError
from slicelib.model import SliceModel
from slicelib.qc import QC_MODES

__all__ = [
    "ConfigError",
    "PRESETS",
    "TrainConfig",
    "SLICE_ONLY_KEYS",
    "resolve_config",
    "load_config_file",
    "check_resume",
    "RESUME_MAY_CHANGE",
    "QC_MODES",
    "SPLIT_NAMES",
    "given_split",
]

#: The values of a given subject split (``TrainConfig.split``): "unused" subjects take no part.
SPLIT_NAMES = ("train", "val", "test", "unused")

# Sizes per preset. Keys are TrainConfig fields; "model"/"preprocess" are merged key-wise.
PRESETS: dict[str, dict] = {
    # seconds on a laptop: tiny 8 mm grid, scratch ResNet18, 2 epochs (plumbing check only)
    "smoke": dict(
        epochs=2,
        batch_size=4,
        patience=None,
        model=dict(backbone="resnet18", weights=None, embed_dim=16),
        preprocess=dict(volume_shape=(23, 27, 23), voxel_size=8.0),
    ),
    # minutes on a laptop CPU: 4 mm grid (45 x 54 x 45), MobileNetV2 in NHWC layout (~2x faster)
    "cpu": dict(
        epochs=20,
        batch_size=8,
        lr=1e-3,
        schedule="cosine",
        patience=8,
        model=dict(backbone="mobilenet_v2", weights="imagenet", channels_last=True),
        preprocess=dict(volume_shape=(45, 54, 45), voxel_size=4.0),
    ),
    # the paper's scale: FSL MNI152 2 mm grid, ResNet18, batch 8, lr 1e-4, up to 100 epochs
    "gpu": dict(
        epochs=100,
        batch_size=8,
        patience=20,
        model=dict(backbone="resnet18", weights="imagenet"),
        preprocess=dict(volume_shape=(91, 109, 91), voxel_size=2.0),
    ),
}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` and inside every checkpoint.

    Data: ``data`` (participants table .tsv/.csv or BIDS folder), ``target`` (column),
    ``task`` ("regression" | "binary" | "multiclass"), ``path_column``/``id_column`` (passed to
    ``slicelib.datasets.read_table``), ``split_fractions`` (train, val, test) and ``split_seed``
    (the subject split; kept apart from ``seed`` so that seeds share one test set).
    ``split``: a given subject split instead of the seeded one: a mapping participant_id ->
    "train" | "val" | "test" | "unused", or the path of a CSV/TSV table with ``participant_id``
    and ``split`` columns; it must name every subject of the data ("unused" ones take no part).
    Model: ``model`` = keyword arguments of :class:`slicelib.model.SliceModel` (backbone,
    weights, embed_dim, position, norm, pooling, axes, stem, ...), or of
    :class:`slicelib.cnn3d.VolumeCNN` for a 3D backbone (``"sfcn_3d"``, ``"densenet121_3d"``:
    backbone, dropout; no weights); task, num_classes, volume_shape, target_mean, target_std
    and seed are filled in by :func:`slicelib.train.train`.
    ``freeze_encoder``: the 2D encoder stays fixed (eval mode, no gradient, BatchNorm statistics
    fixed); every slice is encoded once, cached on disk, and only the projection, position,
    norm, pooling and head train (the feature-extraction mode of transfer learning); the head
    reads features standardised with the training subjects' per-feature mean and SD.
    ``head``: "mlp" (the SliceModel's own, trained by gradient descent) or, with a frozen
    encoder and a regression target, "ridge": the slice features averaged over ``ridge_blocks``
    contiguous blocks per axis, standardised, and fitted in closed form with scikit-learn
    ``RidgeCV`` on the training subjects (:func:`slicelib.frozen.fit_ridge_head`; no epochs).
    ``augment``: augmented copies of each training head, trained on with its label
    (:func:`slicelib.augment.training_copies`: TorchIO gamma, bias field, thick slices; drawn
    from ``seed``; 0 = none; each copy is one more training volume, so a fine-tuning epoch
    takes ``1 + augment`` times as long); validation and test heads are never augmented.
    ``copies``: None or the participants table of pre-made training copies (raw-scan copies
    preprocessed by the pipeline, ``data/ixi_hh_4mm/make_derivative.py --copies``; ids
    ``<id>~scan<k>``): the copies of the training subjects join training with their subject's
    label (:func:`slicelib.augment.premade_copies`); the others are not used.
    Preprocessing: ``preprocess`` = fields of ``slicelib.data.PreprocessConfig`` as a dict
    (``volume_shape`` in voxels, ``voxel_size`` in mm, normalisation...); ``cache_dir``.
    Optimisation (paper defaults): Adam, ``lr`` 1e-4, ``weight_decay`` 1e-4, ``batch_size`` 8,
    ``schedule`` "constant" | "cosine" (per optimiser step), ``grad_accum`` micro-batches per
    step, ``epochs``, ``patience`` (early stopping, epochs without improvement; None = off),
    ``ema``: 0 (off) or the decay per optimiser step of an exponential moving average of the
    weights and BatchNorm statistics (torch ``AveragedModel``; e.g. 0.95: about the last 20
    steps); the average, not the last step's weights, is validated and saved as ``best.pt``,
    which damps the epoch-to-epoch jumps of the validation metric at small batch sizes;
    ``monitor`` ("auto" = val mae for regression, val loss for classification; or any history
    column such as "val_balanced_accuracy").
    ``class_weights`` (classification): "balanced" weights each training example by
    n / (n_classes x n_its_class) (scikit-learn's ``compute_class_weight("balanced")``), so a
    minority class such as AD counts as much as the majority and the 0.5 threshold aims at
    balanced accuracy; "none" = the plain mean loss. (Regression needs no such option: the
    model's head predicts z-scores, ``output = target_mean + target_std * head``.)
    Runtime: ``device`` "auto" | "cuda" | "mps" | "cpu"; ``precision`` "auto" (bf16 autocast on
    CUDA, fp32 elsewhere; evaluation and prediction follow the run's: :func:`slicelib.engine.
    use_bf16`) | "bf16" | "fp32"; ``num_workers``; ``deterministic``; ``seed``;
    ``jobs``: worker processes that fill the preprocessing cache before training (runtime only:
    it may change when a run resumes and does not change any result).
    Input QC (:func:`slicelib.cache.check_qc`): a scan that cannot be preprocessed always stops
    training; ``qc`` says what happens to scans QC flags (not like a registered T1 brain):
    "warn" (default: trained on, listed in a warning), "exclude" (left out of training and
    validation, listed) or "off" (trained on silently).
    """

    data: str | None = None
    target: str = "age"
    task: str = "regression"
    out: str = "runs/run"
    path_column: str | None = None
    id_column: str = "participant_id"
    split_fractions: tuple = (0.7, 0.15, 0.15)
    split_seed: int = 0
    split: dict | str | None = None
    model: dict = field(default_factory=dict)
    freeze_encoder: bool = False
    head: str = "mlp"
    ridge_blocks: int = 4
    augment: int = 0
    copies: str | None = None
    preprocess: dict = field(default_factory=dict)
    cache_dir: str | None = None
    seed: int = 0
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "constant"
    grad_accum: int = 1
    patience: int | None = 10
    ema: float = 0.0
    monitor: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    jobs: int = 1
    deterministic: bool = True
    class_weights: str = "balanced"
    qc: str = "warn"
    preset: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of all fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict, raising :class:`ConfigError` on unknown or invalid keys."""
        d = drop_removed(d)
        _check_keys(d, [f.name for f in dataclasses.fields(cls)], "training config")
        cfg = cls(**copy.deepcopy(d))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check values and nested keys; raise :class:`ConfigError` naming the problem."""
        choices = dict(
            task=("regression", "binary", "multiclass"),
            schedule=("constant", "cosine"),
            precision=("auto", "bf16", "fp32"),
            class_weights=("balanced", "none"),
            qc=QC_MODES,
            preset=(None, *PRESETS),
            head=("mlp", "ridge"),
        )
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                use = ", ".join(repr(v) for v in valid if v is not None)
                raise ConfigError(f"{name}={getattr(self, name)!r}: use one of {use}.")
        if self.head == "ridge" and (not self.freeze_encoder or self.task != "regression"):
            raise ConfigError(
                f"head='ridge' fits a closed-form read-out of frozen features of a regression "
                f"target: it needs freeze_encoder=True (--freeze-encoder) and task='regression' "
                f"(now freeze_encoder={self.freeze_encoder}, task={self.task!r})."
            )
        for name in ("epochs", "batch_size", "grad_accum", "jobs", "ridge_blocks"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be at least 1.")
        if int(self.augment) < 0:
            raise ConfigError(f"augment={self.augment!r}: copies per training head, 0 or more.")
        if not 0.0 <= float(self.ema) < 1.0:
            raise ConfigError(
                f"ema={self.ema!r}: the weight average's decay per optimiser step, in [0, 1) "
                f"(0 = off; 0.95 averages about the last 20 steps)."
            )
        if self.split is not None and not isinstance(self.split, (dict, str, os.PathLike)):
            raise ConfigError(
                f"split must be a mapping participant_id -> split name or a table's path, got "
                f"{type(self.split).__name__}."
            )
        if isinstance(self.split, dict):
            bad = {k: v for k, v in self.split.items() if v not in SPLIT_NAMES}
            if bad:
                first = next(iter(bad.items()))
                raise ConfigError(
                    f"split: {len(bad)} subject(s) have an unknown split name (first: "
                    f"{first[0]!r} -> {first[1]!r}); use one of {', '.join(SPLIT_NAMES)}."
                )
        _check_keys(self.model, _model_keys(), "model config ([model] section / model.*)")
        _check_keys(self.preprocess, _preprocess_keys(), "preprocess config ([preprocess])")
        if is_volume_backbone(self.model.get("backbone")):
            _check_volume_model(self.model, self.freeze_encoder)


def given_split(split: dict | str) -> dict[str, str]:
    """A ``TrainConfig.split`` as {participant_id: split name}: the mapping itself, or the
    ``participant_id`` and ``split`` columns of a CSV/TSV table."""
    if isinstance(split, dict):
        return {str(k): v for k, v in split.items()}
    path = Path(split)
    if not path.is_file():
        raise ConfigError(f"split table {path} does not exist; give a CSV/TSV file or a mapping")
    df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str)
    if not {"participant_id", "split"} <= set(df.columns):
        raise ConfigError(
            f"split table {path} needs columns participant_id and split; it has {list(df.columns)}"
        )
    bad = sorted(set(df["split"]) - set(SPLIT_NAMES))
    if bad:
        raise ConfigError(f"split table {path}: unknown split names {bad}; use {SPLIT_NAMES}")
    return dict(zip(df["participant_id"], df["split"]))


def drop_removed(d: dict) -> dict:
    """Drop fields that older versions saved, so that the configs of their runs still load."""
    d = dict(d)
    if isinstance(d.get("augment"), bool):  # version 1's on/off flip augmentation
        if d.pop("augment"):
            raise ConfigError(
                "augment=true: version 1's flip augmentation was removed; augment is now the "
                "number of augmented copies of each training head (e.g. augment = 2), or 0."
            )
    d.pop("scale_head", None)  # had no effect since the head predicts z-scores (target_std)
    return d


def _check_keys(d: dict, valid, what: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"the {what} must be a mapping of keys to values, got {type(d).__name__}")
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in the {what}. "
            f"Valid keys: {', '.join(sorted(valid))}."
        )


# model arguments that train() sets from the data and the run seed
_SET_BY_TRAIN = ("task", "num_classes", "volume_shape", "target_mean", "target_std", "seed")


def _params(cls) -> list[str]:
    return [k for k in inspect.signature(cls.__init__).parameters if k != "self"]


def _model_keys() -> list[str]:
    """The model keys a config may set: SliceModel's and VolumeCNN's, less what train sets."""
    keys = dict.fromkeys(_params(SliceModel) + _params(VolumeCNN))
    return [k for k in keys if k not in _SET_BY_TRAIN]


# SliceModel arguments that a 3D CNN does not take (embed_dim, position, norm, pooling, axes...)
SLICE_ONLY_KEYS = tuple(k for k in _params(SliceModel) if k not in _params(VolumeCNN))


def _check_volume_model(model: dict, freeze_encoder: bool) -> None:
    """Raise :class:`ConfigError` for settings a 3D CNN backbone cannot honour."""
    backbone = model["backbone"]
    asked = [k for k in model if k in SLICE_ONLY_KEYS]
    if asked:
        raise ConfigError(
            f"backbone {backbone!r} is a 3D CNN: it reads whole volumes and takes no "
            f"{', '.join(repr(k) for k in asked)} (slice-model options). Remove them from the "
            "config/flags, or use a 2D backbone such as 'resnet18'."
        )
    if model.get("weights") not in (None, "none", "None", ""):
        raise ConfigError(
            f"backbone {backbone!r} has no pretrained weights (weights={model['weights']!r}); "
            "3D CNNs train from random weights: use weights none."
        )
    if freeze_encoder:
        raise ConfigError(
            f"freeze_encoder needs a 2D slice encoder; backbone {backbone!r} is a 3D CNN with no "
            "separate encoder. Drop --freeze-encoder or use a 2D backbone such as 'mobilenet_v2'."
        )


def _preprocess_keys() -> list[str]:
    """PreprocessConfig's fields, and the old keys ``centre``/``shape`` that
    :meth:`PreprocessConfig.from_dict` still reads from old config files."""
    return [f.name for f in dataclasses.fields(PreprocessConfig)] + ["centre", "shape"]


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a TOML (.toml), YAML (.yaml/.yml) or JSON config file into a dict.

    Top-level keys are :class:`TrainConfig` fields; ``[model]`` and ``[preprocess]`` tables
    hold SliceModel and PreprocessConfig arguments. Unknown keys are rejected later by
    :func:`resolve_config`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        d = tomllib.loads(path.read_text())
    elif path.suffix in (".yaml", ".yml"):
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
        nested = k in ("model", "preprocess") and isinstance(v, dict)
        out[k] = {**out.get(k, {}), **v} if nested else copy.deepcopy(v)
    return out


def _preset_for_volume(preset: dict, backbone) -> dict:
    """A preset without its slice-model settings when the backbone is a 3D CNN.

    (The cpu preset's MobileNetV2 options, say, mean nothing to ``sfcn_3d``; the same options
    set explicitly in a file or by a flag are an error, see :func:`_check_volume_model`.)
    """
    if not is_volume_backbone(backbone) or "model" not in preset:
        return preset
    drop = (*SLICE_ONLY_KEYS, "weights", "backbone")
    return {**preset, "model": {k: v for k, v in preset["model"].items() if k not in drop}}


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
        key and listing the valid ones. With a 3D CNN backbone (``sfcn_3d``,
        ``densenet121_3d``) the preset's slice-model settings are left out.
    """
    file_d = drop_removed(load_config_file(file)) if file else {}
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(file_d, [f.name for f in dataclasses.fields(TrainConfig)], f"config file {file}")
    preset = over.get("preset") or preset or file_d.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
    explicit = _merge(file_d, over)
    backbone = explicit.get("model", {}).get("backbone")
    d = _merge(_preset_for_volume(PRESETS.get(preset, {}), backbone), explicit)
    d["preset"] = preset
    return TrainConfig.from_dict(d)


# -----------------------------------------------------------------------------
# resume: which settings may change

RESUME_MAY_CHANGE = ("epochs", "patience", "num_workers", "jobs", "device", "out", "cache_dir")
# model options that change the memory layout only, not the function or the parameters
_MODEL_MAY_CHANGE = ("channels_last",)


def _drop(d: dict, keys) -> dict:
    """A copy of ``d`` without ``keys``."""
    return {k: v for k, v in d.items() if k not in keys}


def check_resume(saved: dict, now: dict, run_dir: Path) -> None:
    """Refuse to resume a run directory whose checkpoint came from another configuration.

    Args:
        saved: the run config stored in ``last.pt`` (``train``, ``model``, ``data`` keys).
        now: the same dict of the run about to start (JSON-able).
        run_dir: the run directory (named in the error).

    Only :data:`RESUME_MAY_CHANGE` (runtime settings) and layout-only model options may
    differ; a training setting that a run saved by an older slicelib lacks counts as its
    default. The weights file may have moved: when both dicts carry the same
    ``weights_file_hash`` (the file's bytes), its path is not compared. Raises
    :class:`ConfigError` listing every difference.
    """
    new = now.get("data")
    if saved.get("data") is not None and new is not None and saved["data"] != new:
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt) trained on other data (saved "
            f"{saved['data']}, now {new}: the table, the split or the image files changed), so "
            f"it cannot be resumed. Use a new --out directory, or delete {run_dir} to start over."
        )
    defaults = TrainConfig().to_dict()
    a, b = (
        _drop({**defaults, **drop_removed(d.get("train", {}))}, RESUME_MAY_CHANGE)
        for d in (saved, now)
    )
    same_file = saved.get("weights_file_hash") is not None and saved.get(
        "weights_file_hash"
    ) == now.get("weights_file_hash")
    layout = _MODEL_MAY_CHANGE + (("weights",) if same_file else ())
    for cfg in (a, b):  # the run's own model options (train.model) hold layout flags too
        if isinstance(cfg.get("model"), dict):
            cfg["model"] = _drop(cfg["model"], layout)
    # (a model config saved by an older slicelib reads as today's: no "norm", position None)
    ma, mb = (saved_model_config(d["model"]) if d.get("model") else {} for d in (saved, now))
    ma, mb = _drop(ma, layout), _drop(mb, layout)
    diffs = [
        f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(a | b) if a.get(k) != b.get(k)
    ]
    diffs += [
        f"model.{k}: saved {ma.get(k)!r}, now {mb.get(k)!r}"
        for k in sorted(ma | mb)
        if ma.get(k) != mb.get(k)
    ]
    if diffs:
        may = RESUME_MAY_CHANGE + tuple("model." + k for k in _MODEL_MAY_CHANGE)
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt) with another configuration, so it cannot "
            "be resumed:\n  " + "\n  ".join(diffs) + "\nUse a new --out directory, or delete "
            f"{run_dir} to start over. (May change on resume: {', '.join(may)}.)"
        )
