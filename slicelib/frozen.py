"""Frozen-encoder training (feature extraction): encode every slice once, cache it, train the rest.

Transfer learning has two classic modes: fine-tune the pretrained encoder, or keep it fixed and
use it as a feature extractor. With ``TrainConfig(freeze_encoder=True)`` the 2D encoder of a
:class:`~slicelib.model.SliceModel` stays fixed (eval mode, no gradient, BatchNorm statistics
fixed), so its output for a given volume never changes: every slice is encoded once, the
features ``(S, F)`` of each subject are cached on disk, and training runs the rest of the model
on them::

    volume (1, X, Y, Z) -> encoder, once -> features (S, F)   cached   encode_features
    features (B, S, F) -> project -> position, norm, pooling, head    FrozenHead

:class:`FrozenHead` computes exactly what the full model computes (``model.project`` then
``model.predict_from_embeddings``), and the checkpoints hold the full model's weights, so
evaluate and predict read volumes as usual.

Frozen heads standardise their input features: :func:`standardise_inputs` replaces
``model.project`` by a :class:`StandardisedLinear` that holds the per-feature mean and SD of the
TRAINING subjects' cached slice features (:func:`feature_stats`) as buffers
(``project.feature_mean``, ``project.feature_sd``) and applies ``(f - mean) / sd`` before the
projection. The buffers are part of the model's state_dict, so best.pt/last.pt, evaluate, predict
and the explain tools all apply them; a random-initialised encoder, whose features have an
arbitrary scale, then gives the head the same start as a pretrained one. A checkpoint without
them (older runs) reads as the identity (:func:`match_standardisation`).

The cache: ``<cache_dir>/features/<encoder key>/<volume key>.npy`` (float32, (S, F)). The
encoder key hashes the encoder's weights (every tensor's bytes), the backbone and stem, the
preprocessing, the grid and the axes; the volume key is the preprocessed-volume cache key
(:func:`slicelib.cache.cache_key`: the file's content and the preprocessing). Other weights,
preprocessing, grid or axes give another file, so stale features are never read. Files are
written with :func:`slicelib.utils.save_npy`.

For a linear read-out (the frozen-feature arms of :mod:`slicelib.cv`): :func:`block_pool`
averages each axis's slice features over contiguous slice blocks, and :func:`pooled_features`
gives those of a table's heads as one row per subject (encoded once, through the cache).
A run with ``TrainConfig(head="ridge")`` trains that read-out in closed form
(:func:`fit_ridge_head`: scikit-learn ``RidgeCV`` on the training subjects) and keeps it in a
:class:`RidgeSliceModel` (the SliceModel with a :class:`RidgeReadout`, a torch Linear over the
standardised block-pooled features), so checkpoints, evaluate and predict treat it as any run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from slicelib.augment import copy_of
from slicelib.cache import VolumeDataset, cache_key, default_cache_dir
from slicelib.model import AXES, SliceModel, volume_slices
from slicelib.utils import save_npy

__all__ = ["encode_features", "encoder_key", "cached_features", "fill_feature_cache"]
__all__ += ["feature_dataset", "FrozenHead", "block_pool", "pooled_features"]
__all__ += ["StandardisedLinear", "feature_stats", "standardise_inputs", "match_standardisation"]
__all__ += ["RidgeReadout", "RidgeSliceModel", "with_ridge_head", "fit_ridge_head"]
__all__ += ["penalty_splits"]

FEATURES_VERSION = "1"  # bump when the way features are computed changes


def slice_layout(model) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slice_index (S,), slice_axis (S,))`` of the model's slices, axis by axis, as
    :meth:`SliceModel.encode_slices` orders them."""
    n = [model.n_slices[a] for a in model.axes]
    index = torch.cat([torch.arange(k) for k in n])
    axis = torch.cat([torch.full((k,), AXES[a]) for a, k in zip(model.axes, n)])
    return index, axis


@torch.no_grad()
def encode_features(model, volumes: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Encoder features of every slice of every axis, with the encoder in eval mode.

    Args:
        model: a :class:`~slicelib.model.SliceModel` (its encoder and slicing are used).
        volumes: ``(B, 1, X, Y, Z)`` float volumes, z-scored (what the model reads).
        batch_size: volumes per encoder pass (default: all at once); ``model.slice_chunk``
            further limits the slices per encoder call.

    Returns:
        ``(B, S, F)`` float32 features on the CPU (S sums the slices over ``model.axes``, in
        the order of :meth:`SliceModel.encode_slices`; F the encoder's feature size), such
        that ``model.predict_from_embeddings(model.project(f), *slice_layout(model))`` equals
        ``model(volumes)`` in eval mode.
    """
    model.check_input(volumes)
    device = next(model.encoder.parameters()).device
    was_training = model.encoder.training
    model.encoder.eval()
    feats = []
    try:
        for xb in volumes.split(batch_size or len(volumes)):  # (b, 1, X, Y, Z)
            xb = xb.to(device).float()
            per_axis = []
            for a in model.axes:
                images = volume_slices(xb, a)  # (b*S_a, 1, H, W)
                chunk = model.slice_chunk or len(images)
                f = torch.cat([model.encode_images(p) for p in images.split(chunk)])  # (b*S_a, F)
                per_axis.append(f.reshape(len(xb), -1, f.shape[1]))  # (b, S_a, F)
            feats.append(torch.cat(per_axis, dim=1).float().cpu())  # (b, S, F)
    finally:
        model.encoder.train(was_training)
    return torch.cat(feats)


def block_pool(features, n_slices, n_blocks: int):
    """Mean slice features over contiguous slice blocks, axis by axis.

    The slices of each axis (in the order of :func:`encode_features`: ``n_slices[0]`` slices of
    the first axis, then the second's, ...) are cut into ``n_blocks`` contiguous blocks of
    near-equal size (``numpy.array_split``: the first ``S_a % n_blocks`` blocks hold one slice
    more) and each block's features are averaged.

    Args:
        features: ``(N, S, F)`` array or tensor (N volumes, S = sum(n_slices) slices, F features).
        n_slices: the slice count of each axis, e.g. ``[model.n_slices[a] for a in model.axes]``.
        n_blocks: blocks per axis (1: the mean over each axis; at most min(n_slices)).

    Returns:
        ``(N, len(n_slices) * n_blocks, F)`` float32 numpy array: row ``a * n_blocks + b`` is
        block b of axis a.
    """
    f = np.asarray(features, dtype=np.float32)
    n_slices = [int(n) for n in n_slices]
    if f.ndim != 3 or f.shape[1] != sum(n_slices):
        raise ValueError(
            f"block_pool: features of shape {f.shape} do not hold (N, {sum(n_slices)}, F) "
            f"slices for the axes' slice counts {n_slices}"
        )
    if not 1 <= n_blocks <= min(n_slices):
        raise ValueError(
            f"block_pool: n_blocks={n_blocks}; use 1 to {min(n_slices)} (the fewest slices of "
            f"an axis, counts {n_slices})"
        )
    out = []
    for part in np.split(f, np.cumsum(n_slices)[:-1], axis=1):  # (N, S_a, F) per axis
        out += [b.mean(axis=1) for b in np.array_split(part, n_blocks, axis=1)]  # (N, F) each
    return np.stack(out, axis=1)


def pooled_features(
    table, preprocess, n_blocks: int, backbone: str = "mobilenet_v2", weights=None,
    axes=("sagittal", "coronal", "axial"), seed: int = 0, cache_dir=None, progress: bool = False,
) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Block-pooled slice features of a frozen encoder for the heads of a table, one row each.

    ``SliceModel(backbone, weights, axes=axes, seed=seed)`` on the grid of ``preprocess``,
    in eval mode, encodes every head of ``table`` (``participant_id``, ``path``) once
    (:func:`cached_features`: cached in ``<cache_dir>/features/<encoder key>/``); the features
    of each axis are averaged over ``n_blocks`` contiguous slice blocks (:func:`block_pool`).
    ``weights``: ``"imagenet"`` (:mod:`slicelib.weights`), a state_dict file, or None (random
    initialisation seeded by ``seed``).

    Returns:
        (features, info): DataFrame [N, len(axes) * n_blocks * F] float32 indexed by
        participant_id (block b of axis a in columns ``(a * n_blocks + b) * F ...``); info a
        dict with the ``encoder_key``, ``n_encoded`` (heads this call encoded, 0 when all were
        cached), ``n_features``, ``seconds`` and the arguments.
    """
    t0 = time.perf_counter()
    dataset = VolumeDataset(table, None, preprocess=preprocess, cache_dir=cache_dir)
    shape = dataset.config.volume_shape
    model = SliceModel(backbone, weights, axes=list(axes), volume_shape=shape, seed=seed).eval()
    n_cached = sum(_read(f) is not None for f in _feature_files(model, dataset, cache_dir))
    feats = cached_features(model, dataset, cache_dir, progress=progress)  # (N, S, F)
    x = block_pool(feats, [model.n_slices[a] for a in model.axes], n_blocks)
    info = dict(
        encoder_key=encoder_key(model, dataset.config.to_dict()), backbone=backbone,
        weights=None if weights is None else str(weights), seed=seed, axes=list(model.axes),
        n_blocks=n_blocks, n_features=x.shape[1] * x.shape[2],
        n_encoded=len(dataset.paths) - n_cached, seconds=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    index = pd.Index(dataset.ids, name="participant_id")
    return pd.DataFrame(x.reshape(len(x), -1), index=index), info


def encoder_key(model, preprocess: dict) -> str:
    """Hex key of what the cached features depend on: the encoder's weights (the bytes of every
    tensor of its state_dict, BatchNorm statistics included), backbone, stem, grid, axes and the
    preprocessing dict. (``channels_last`` is left out: it changes the memory layout only.)"""
    c = model.config
    what = dict(version=FEATURES_VERSION, backbone=c.backbone, stem=c.stem, axes=list(c.axes))
    what.update(volume_shape=list(c.volume_shape), preprocess=preprocess)
    h = hashlib.blake2b(json.dumps(what, sort_keys=True, default=str).encode(), digest_size=16)
    for name, t in model.encoder.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _feature_files(model, dataset, cache_dir) -> list[Path]:
    """The feature cache file of every volume of ``dataset`` (see :func:`cached_features`)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "features" / encoder_key(model, dataset.config.to_dict())
    return [folder / f"{cache_key(p, dataset.config, cache_dir)}.npy" for p in dataset.paths]


def fill_feature_cache(
    model,
    dataset,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
) -> dict[int, torch.Tensor]:
    """Encode the volumes of ``dataset`` whose features are not cached yet, and cache them.

    With ``world`` > 1 (torch.distributed ranks) this rank encodes only the missing volumes
    whose index is ``rank`` modulo ``world``, so the ranks share the work; once every rank is
    done (a barrier), each can read every volume's features with :func:`cached_features`.

    Returns:
        {dataset index: (S, F) float32 CPU tensor} of the volumes this call encoded.
    """
    files = _feature_files(model, dataset, cache_dir)
    todo = [i for i, f in enumerate(files) if i % world == rank and _read(f) is None]
    return _encode_into(model, dataset, files, todo, batch_size, progress)


def _encode_into(model, dataset, files, todo, batch_size, progress) -> dict[int, torch.Tensor]:
    """Encode the volumes ``todo`` (dataset indices), write ``files[i]``; {i: (S, F)}."""
    done = {}
    bar = tqdm(total=len(todo), desc="encode slices", disable=not progress, leave=False)
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        x = torch.stack([dataset[i][0] for i in part])  # (b, 1, X, Y, Z)
        for i, f in zip(part, encode_features(model, x)):  # f (S, F)
            save_npy(files[i], f.numpy())
            done[i] = f
        bar.update(len(part))
    bar.close()
    return done


def cached_features(
    model,
    dataset,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Encoder features of every volume of ``dataset``, from the feature cache when possible.

    Args:
        model: the :class:`~slicelib.model.SliceModel` whose encoder is frozen.
        dataset: a :class:`slicelib.cache.VolumeDataset` (its ``paths``, ``config`` and items
            ``(x (1, X, Y, Z), y)`` are used).
        cache_dir: the cache folder (default :func:`slicelib.cache.default_cache_dir`); the
            features go to ``<cache_dir>/features/<encoder_key>/``.
        batch_size: volumes per encoder pass for the subjects not cached yet.

    Returns:
        ``(N, S, F)`` float32 tensor on the CPU, in dataset order (see :func:`encode_features`).
    """
    files = _feature_files(model, dataset, cache_dir)
    feats: list = [_read(f) for f in files]
    todo = [i for i, f in enumerate(feats) if f is None]
    for i, f in _encode_into(model, dataset, files, todo, batch_size, progress).items():
        feats[i] = f
    return torch.stack([torch.as_tensor(f) for f in feats])


def _read(path: Path) -> np.ndarray | None:
    try:
        return np.load(path) if path.is_file() else None
    except (OSError, ValueError):  # a damaged file is recomputed
        return None


def feature_dataset(model, dataset, cache_dir=None, batch_size: int = 8) -> TensorDataset:
    """A dataset of ``(features (S, F), y)`` items for a VolumeDataset (see :func:`cached_features`)."""
    feats = cached_features(model, dataset, cache_dir, batch_size)
    return TensorDataset(feats, torch.as_tensor(dataset.targets, dtype=torch.float32))


class FrozenHead(nn.Module):
    """The trainable part of a SliceModel over cached encoder features.

    ``forward(f)``: features ``(B, S, F)`` -> ``model.project`` -> ``(B, S, D)`` ->
    ``model.predict_from_embeddings`` (position, norm, pooling, head) -> ``(B,)`` or ``(B, C)``,
    the same function as ``model(x)`` on the volumes the features came from. The encoder's
    parameters stop requiring gradients and it stays in eval mode.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        model.encoder.requires_grad_(False)
        index, axis = slice_layout(model)
        device = next(model.parameters()).device
        self.register_buffer("index", index.to(device), persistent=False)  # (S,)
        self.register_buffer("axis", axis.to(device), persistent=False)  # (S,)

    def train(self, mode: bool = True) -> FrozenHead:
        super().train(mode)
        self.model.encoder.eval()  # BatchNorm statistics stay fixed
        return self

    def forward(self, f: torch.Tensor, return_details: bool = False):
        if isinstance(self.model, RidgeSliceModel):  # a ridge read-out of pooled features
            return self.model.ridge(f)  # (B,)
        h = self.model.project(f)  # (B, S, D)
        return self.model.predict_from_embeddings(h, self.index, self.axis, return_details)


# -----------------------------------------------------------------------------
# standardised inputs of a frozen head

STANDARDISE_KEYS = ("project.feature_mean", "project.feature_sd")


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and SD over every slice of every subject.

    Args:
        features: ``(N, S, F)`` encoder features (tensor or array) of the TRAINING subjects only.

    Returns:
        ``(mean (F,), sd (F,))`` float32 CPU tensors in feature units (computed in float64;
        population SD). A feature that is constant over the training slices (SD 0, e.g. a ReLU
        unit that never fires) gets SD 1, so it is only centred.
    """
    f = torch.as_tensor(features).double()
    if f.ndim != 3 or f.shape[0] == 0 or not torch.isfinite(f).all():
        raise ValueError(
            f"feature_stats: need finite (N >= 1, S, F) features of the training subjects; "
            f"got shape {tuple(f.shape)}"
            + ("" if f.ndim != 3 or torch.isfinite(f).all() else " with NaN/inf values")
        )
    f = f.reshape(-1, f.shape[-1])  # (N*S, F)
    mean, sd = f.mean(dim=0), f.std(dim=0, unbiased=False)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return mean.float(), sd.float()


class StandardisedLinear(nn.Linear):
    """``nn.Linear`` on standardised inputs: ``x (..., F) -> W ((x - mean) / sd) + b (..., D)``.

    ``mean`` and ``sd`` ``(F,)`` are buffers (``feature_mean``, ``feature_sd``: saved in the
    state_dict, not trained); the weight and bias are the given Linear's own Parameters (shared,
    so an optimiser built on them keeps working).
    """

    def __init__(self, linear: nn.Linear, mean: torch.Tensor, sd: torch.Tensor):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        if tuple(mean.shape) != (self.in_features,) or tuple(sd.shape) != (self.in_features,):
            raise ValueError(
                f"StandardisedLinear: mean {tuple(mean.shape)} and sd {tuple(sd.shape)} must "
                f"have one value per input feature ({self.in_features},)"
            )
        kw = dict(device=linear.weight.device, dtype=linear.weight.dtype)
        self.register_buffer("feature_mean", mean.detach().to(**kw).clone())
        self.register_buffer("feature_sd", sd.detach().to(**kw).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.feature_mean.to(x.dtype)) / self.feature_sd.to(x.dtype)
        return F.linear(x, self.weight, self.bias)


def standardise_inputs(model, mean: torch.Tensor, sd: torch.Tensor) -> StandardisedLinear:
    """Make ``model.project`` standardise its input features with ``mean``/``sd`` ``(F,)``.

    A plain Linear is replaced by a :class:`StandardisedLinear` sharing its weight and bias; one
    that is already standardised gets the new statistics. Returns ``model.project``.
    """
    if isinstance(model.project, StandardisedLinear):
        model.project.feature_mean.copy_(mean)
        model.project.feature_sd.copy_(sd)
    else:
        model.project = StandardisedLinear(model.project, mean, sd)
    return model.project


def match_standardisation(model, state: dict) -> dict:
    """Fit a model and a checkpoint's state_dict on the standardisation buffers.

    A state with ``project.feature_mean``/``feature_sd`` gets a model whose projection holds
    them (placeholders, filled by ``load_state_dict``); a state without them (a run saved
    before frozen heads standardised) given to a model that has them gets the identity (mean
    0, SD 1) added, so it loads and computes what it computed then. Returns the state to load
    (the input, or a copy with the identity buffers).
    """
    project = getattr(model, "project", None)  # (a VolumeCNN has none)
    has = all(k in state for k in STANDARDISE_KEYS)
    if has and isinstance(project, nn.Linear) and not isinstance(project, StandardisedLinear):
        n = project.in_features
        standardise_inputs(model, torch.zeros(n), torch.ones(n))
    if not has and isinstance(project, StandardisedLinear):
        n = project.in_features
        state = {**state, STANDARDISE_KEYS[0]: torch.zeros(n), STANDARDISE_KEYS[1]: torch.ones(n)}
    return state


# -----------------------------------------------------------------------------
# a ridge head: closed-form read-out of block-pooled frozen features

RIDGE_ALPHAS = np.logspace(-2, 7, 19)  # penalties RidgeCV chooses among (also slicelib.cv's)
CLIP_SD = 5.0  # standardised pooled features are clipped to +-CLIP_SD (also slicelib.cv's)


class RidgeReadout(nn.Module):
    """A linear read-out of block-pooled slice features: ``(B, S, F) -> (B,)`` target units.

    ``forward(f)``: the slices of each axis (``n_slices``, in :func:`encode_features` order)
    are averaged over ``n_blocks`` contiguous blocks (as :func:`block_pool`), flattened to
    ``(B, P)`` (P = len(n_slices) * n_blocks * F), standardised with the buffers
    ``feature_mean``/``feature_sd`` (P,), clipped to +-``CLIP_SD`` and mapped by ``linear``
    (P -> 1). ``alpha`` (buffer, ()) records the ridge penalty chosen (NaN before fitting).
    """

    def __init__(self, n_slices, n_blocks: int, n_features: int):
        super().__init__()
        self.n_slices, self.n_blocks = [int(n) for n in n_slices], int(n_blocks)
        if not 1 <= self.n_blocks <= min(self.n_slices):
            raise ValueError(
                f"ridge head: {n_blocks} blocks per axis; use 1 to {min(self.n_slices)} (the "
                f"fewest slices of an axis, counts {self.n_slices})"
            )
        n_in = len(self.n_slices) * self.n_blocks * int(n_features)
        self.linear = nn.Linear(n_in, 1)
        self.register_buffer("feature_mean", torch.zeros(n_in))
        self.register_buffer("feature_sd", torch.ones(n_in))
        self.register_buffer("alpha", torch.tensor(float("nan")))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        blocks = [
            b.mean(dim=1)  # (B, F)
            for part in f.split(self.n_slices, dim=1)  # (B, S_a, F) per axis
            for b in torch.tensor_split(part, self.n_blocks, dim=1)  # numpy.array_split's blocks
        ]
        z = torch.stack(blocks, dim=1).flatten(1).float()  # (B, P), as block_pool's rows
        z = ((z - self.feature_mean) / self.feature_sd).clamp(-CLIP_SD, CLIP_SD)
        return self.linear(z).squeeze(-1)  # (B,)


class RidgeSliceModel(SliceModel):
    """A :class:`SliceModel` whose output is its :class:`RidgeReadout` (``self.ridge``) of the
    encoder's slice features: ``forward(x (B, 1, X, Y, Z)) -> (B,)`` target units. (The
    SliceModel's own projection, position, pooling and head are kept, unused, so its
    state_dict and config are a SliceModel's plus ``ridge.*``.) Regression only."""

    def forward(self, x: torch.Tensor, return_details: bool = False):
        if return_details:
            raise ValueError(
                "a ridge-head run has no slice embeddings or pooling weights to return; "
                "explain it by its block coefficients (model.ridge.linear.weight) instead"
            )
        self.check_input(x)
        feats = []
        for a in self.axes:
            f = self._encode_chunked(volume_slices(x, a))  # (B*S_a, F)
            feats.append(f.reshape(x.shape[0], -1, f.shape[1]))  # (B, S_a, F)
        return self.ridge(torch.cat(feats, dim=1))


def with_ridge_head(model: SliceModel, n_blocks: int) -> RidgeSliceModel:
    """The same model (config and weights) as a :class:`RidgeSliceModel` with an unfitted
    :class:`RidgeReadout` of ``n_blocks`` blocks per axis, on the model's device."""
    if model.task != "regression":
        raise ValueError(f"a ridge head predicts a regression target; this model's is {model.task}")
    new = RidgeSliceModel.from_config(model.config)
    new.ridge = RidgeReadout(
        [model.n_slices[a] for a in model.axes], n_blocks, model.project.in_features
    )
    new.load_state_dict(model.state_dict(), strict=False)  # everything but ridge.*
    new.config = model.config  # (with the weights it was built from)
    return new.to(next(model.parameters()).device)


def penalty_splits(ids, n_splits: int = 5) -> list | None:
    """How a ridge penalty is chosen on training rows ``ids``: None (scikit-learn ``RidgeCV``'s
    efficient leave-one-out) when every row is its own subject; with training copies
    (``<id>~aug<k>``, ``<id>~scan<k>``: :func:`slicelib.augment.copy_of`) a subject-level
    ``GroupKFold`` instead, as a list of ``(train_rows, test_rows)`` index arrays.

    Leave-one-out over rows would leave a copy's own subject in training: the penalty is then
    chosen to reproduce a head from its copies (the smallest penalty of the grid won in every
    fold with copies), not to predict a new subject.

    Args:
        ids: participant ids of the training rows, in row order (N,).
        n_splits: folds of subjects (at most the number of subjects).
    """
    if ids is None:
        return None
    groups = np.array([copy_of(i) or str(i) for i in ids])
    n_subjects = len(set(groups.tolist()))
    if n_subjects == len(groups):
        return None
    from sklearn.model_selection import GroupKFold

    k = max(2, min(int(n_splits), n_subjects))
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))


def fit_ridge_head(model: RidgeSliceModel, features, targets, ids=None) -> dict:
    """Fit ``model.ridge`` in closed form on the TRAINING subjects' features.

    The block-pooled features (:func:`block_pool`) are standardised with these subjects' mean
    and SD (SD 0 -> 1), clipped to +-CLIP_SD and fitted with scikit-learn ``RidgeCV`` (penalty
    among :data:`RIDGE_ALPHAS` by efficient leave-one-out on the same subjects, or, when
    ``ids`` holds training copies, by 5-fold cross-validation over subjects:
    :func:`penalty_splits`).

    Args:
        model: a :class:`RidgeSliceModel`; its ``ridge`` buffers and Linear are set.
        features: ``(N, S, F)`` encoder features of the training rows.
        targets: ``(N,)`` targets in their units (e.g. years).
        ids: the rows' participant ids (N,), or None (every row its own subject).

    Returns:
        dict ``alpha`` (penalty chosen), ``n_train``, ``n_features`` (P).
    """
    from sklearn.linear_model import RidgeCV

    ridge = model.ridge
    x = block_pool(features, ridge.n_slices, ridge.n_blocks).reshape(len(features), -1)  # (N, P)
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(y) != len(x) or len(y) < 3 or not np.isfinite(y).all():
        raise ValueError(
            f"ridge head: need finite targets for each of at least 3 training subjects; got "
            f"{len(y)} targets for {len(x)} feature rows"
        )
    x = x.astype(np.float64)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = np.clip((x - mean) / sd, -CLIP_SD, CLIP_SD)
    fitted = RidgeCV(alphas=RIDGE_ALPHAS, cv=penalty_splits(ids)).fit(z, y)
    with torch.no_grad():
        for buf, v in ((ridge.feature_mean, mean), (ridge.feature_sd, sd)):
            buf.copy_(torch.as_tensor(v))
        ridge.linear.weight.copy_(torch.as_tensor(fitted.coef_).reshape(1, -1))
        ridge.linear.bias.fill_(float(fitted.intercept_))
        ridge.alpha.fill_(float(fitted.alpha_))
    return dict(alpha=float(fitted.alpha_), n_train=len(y), n_features=x.shape[1])
