"""The position-encoded slice model (Gupta et al., ISBI 2023), top to bottom.

A 3D volume is cut into all of its 2D slices along one or more axes; every slice goes through the
same 2D encoder, is projected to D, gets a position embedding for its slice index (and a plane
embedding when several axes are used), is normalised, and a permutation-invariant pooling turns
the set of slices into one vector that a small head maps to the prediction::

    volume (B, 1, X, Y, Z)
      -> slices (B*S, 1, H, W)       one axis, or several stacked    volume_slices
      -> 2D encoder, in chunks      (B*S, F)                         encode_images
      -> Linear(F, D)               (B, S, D)                        project
      -> + position (+ plane)       (B, S, D)   position=            add_position
      -> normalisation              (B, S, D)   norm=                add_position
      -> pooling                    (B, D)      pooling=             SlicePooling
      -> Linear(D, 64), ReLU, Linear(64, out)                        head

The paper's model is ``SliceModel()``'s defaults: ``backbone="resnet18"`` (``weights="imagenet"``
or ``None`` for scratch), ``embed_dim=32``, ``position="learned"``, ``norm="set"``,
``pooling="mean"``, ``stem="repeat"``, one axis; ``backbone="slice_cnn"`` is the scratch CNN of
its 2021 predecessor. ``norm="set"`` is the authors' code's LayerNorm over the whole (S, D) set of
a volume: its affine parameters, of shape (S, D), are a learned per-slice code of their own, so a
position ablation keeps ``norm`` fixed and changes only ``position`` (``norm="slice"``, LayerNorm
over D shared by all slices, and ``"none"`` carry no per-slice code). The authors' code, and
slicelib before ``norm=`` existed, paired "no position" with no LayerNorm. Pooling: mean (the
paper's ResNet runs), max, attention with one learned query, gated attention (Ilse et al. 2018,
not in the paper); the paper's pooled multi-head attention (PMA) is not implemented. Not in the
paper either: several axes, sinusoidal positions, the folded stem, chunked encoding, target
standardisation. The 2D encoders are built by :mod:`slicelib.encoders`, their weight files
read by :mod:`slicelib.weights`.

Arrays are RAS canonical (X left->right, Y posterior->anterior, Z inferior->superior): sagittal
slices are cut along X, coronal along Y, axial along Z.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from slicelib.encoders import build_encoder
from slicelib.weights import WeightsError

__all__ = ["AXES", "ModelConfig", "SliceModel", "volume_slices", "make_norm"]
__all__ += [
    "LearnedPosition",
    "SinusoidalPosition",
    "SlicePooling",
    "WeightsError",
    "build_encoder",
]

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
POSITIONS = ("learned", "sinusoidal", "none")
NORMS = ("set", "slice", "none")
POOLINGS = ("mean", "max", "attention", "gated_attention")
TASKS = ("regression", "binary", "multiclass")
LEGACY_NORM = {"learned": "set", "sinusoidal": "slice", "none": "none"}  # before norm= existed

# -----------------------------------------------------------------------------
# position embeddings and pooling


class LearnedPosition(nn.Module):
    """A learned vector per slice index (the paper): ``(S,)`` indices -> ``(S, D)`` embeddings.

    The table has shape ``(n_slices, D)``; the slice count is fixed at construction.
    """

    def __init__(self, n_slices: int, dim: int):
        super().__init__()
        self.n_slices = n_slices
        self.table = nn.Parameter(torch.randn(n_slices, dim) * 0.1)  # (S, D)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]  # (S, D)


class SinusoidalPosition(nn.Module):
    """Fixed sine/cosine code of the slice index (Vaswani et al. 2017), any slice count.

    ``(S,)`` indices -> ``(S, D)`` embeddings in [-1, 1]; no parameters.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        freqs = torch.exp(-math.log(base) * torch.arange(0, dim, 2).float() / dim)  # (D/2,)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        angles = index.float()[:, None] * self.freqs[None, :]  # (S, D/2)
        emb = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (S, D)
        return emb[:, : self.dim]


def make_norm(kind: str, n_slices: int, dim: int) -> nn.Module:
    """The normalisation after the position embedding, on ``(B, S, D)`` embeddings.

    ``"set"``: LayerNorm over the whole ``(S, D)`` set (the paper's code; affine parameters of
    shape ``(S, D)``, so ``S`` is fixed); ``"slice"``: LayerNorm over D, parameters ``(D,)``
    shared by all slices; ``"none"``: the identity.
    """
    if kind == "set":
        return nn.LayerNorm([n_slices, dim])
    return nn.LayerNorm(dim) if kind == "slice" else nn.Identity()


class SlicePooling(nn.Module):
    """Permutation-invariant pooling of a set of slice embeddings.

    ``mean`` and ``max`` have no parameters; ``attention`` scores each slice against one learned
    query; ``gated_attention`` is the gated attention-MIL pooling of Ilse et al. (2018).
    Input ``(B, S, D)``; output ``(pooled (B, D), weights (B, S))`` where the weights say how much
    each slice contributed (they sum to 1 over S).
    """

    def __init__(self, kind: str, dim: int, hidden: int = 64):
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {kind!r}.")
        self.kind = kind
        if kind == "attention":
            self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        elif kind == "gated_attention":
            self.V = nn.Linear(dim, hidden)
            self.U = nn.Linear(dim, hidden)
            self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, D = h.shape
        if self.kind == "mean":
            return h.mean(dim=1), h.new_full((B, S), 1.0 / S)
        if self.kind == "max":
            pooled, arg = h.max(dim=1)  # (B, D), (B, D)
            weights = F.one_hot(arg, S).float().mean(dim=1)  # (B, S): share of features won
            return pooled, weights
        if self.kind == "attention":
            scores = h @ self.query / math.sqrt(D)  # (B, S)
        else:
            scores = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)  # (B, S)
        weights = scores.softmax(dim=1)  # (B, S)
        return (weights[:, :, None] * h).sum(dim=1), weights


# -----------------------------------------------------------------------------
# the configuration


def _choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}.")


@dataclass
class ModelConfig:
    """Everything that defines a :class:`SliceModel`; ``dataclasses.asdict`` it for JSON.

    The defaults are the paper's model (see the module docstring); ``__post_init__`` normalises
    spellings (``position=None`` -> ``"none"``, ``axes="sagittal,axial"`` -> a list) and
    checks every value.
    """

    backbone: str = "resnet18"  # torchvision name, "timm:<name>", or "slice_cnn" (scratch)
    weights: str | None = None  # "imagenet", None (random init, seeded) or a state_dict path
    embed_dim: int = 32  # D, the slice embedding size
    position: str = "learned"  # "learned" | "sinusoidal" (any slice count) | "none"
    norm: str = "set"  # "set" (LayerNorm over (S, D), fixes S) | "slice" (over D) | "none"
    pooling: str = "mean"  # "mean" | "max" | "attention" | "gated_attention"
    axes: list[str] = field(default_factory=lambda: ["sagittal"])  # several: shared encoder
    task: str = "regression"  # "regression" (target units) | "binary" (1 logit) | "multiclass"
    num_classes: int | None = None  # for "multiclass"
    volume_shape: list[int] = field(default_factory=lambda: [91, 109, 91])  # MNI152 2 mm grid
    stem: str = "repeat"  # "repeat" (grey -> RGB, paper) | "fold" (1-channel first conv)
    slice_chunk: int | None = None  # encode at most this many slices at once (memory)
    checkpoint_activations: bool = False  # recompute encoder activations in backward (memory)
    channels_last: bool = False  # NHWC encoder weights and slices (CPU MobileNetV2: ~2x)
    freeze_batchnorm: bool = False  # encoder BatchNorm stays in eval mode while training
    dropout: float = 0.0  # before the head's last layer
    target_mean: float | None = None  # regression output = mean + std * head(.)
    target_std: float | None = None
    seed: int | None = None  # seeds every random init, so equal seeds give equal models

    def __post_init__(self):
        self.position = "none" if self.position is None else self.position
        self.weights = None if self.weights is None else str(self.weights)
        axes = self.axes.split(",") if isinstance(self.axes, str) else self.axes
        self.axes = [a.strip() for a in axes]
        if not self.axes or len(set(self.axes)) != len(self.axes) or set(self.axes) - set(AXES):
            raise ValueError(
                f"axes must be distinct names among {tuple(AXES)}, e.g. 'sagittal' or "
                f"('sagittal', 'coronal', 'axial'); got {axes!r}."
            )
        self.volume_shape = [int(s) for s in self.volume_shape]
        if len(self.volume_shape) != 3:
            raise ValueError(f"volume_shape must be (X, Y, Z), got {self.volume_shape}.")
        _choice("position", self.position, POSITIONS)
        _choice("norm", self.norm, NORMS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("task", self.task, TASKS)
        _choice("stem", self.stem, ("repeat", "fold"))
        if self.task == "multiclass" and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(f"task='multiclass' needs num_classes >= 2, got {self.num_classes}.")
        if self.slice_chunk is not None and self.slice_chunk < 1:
            raise ValueError(f"slice_chunk must be a positive count, got {self.slice_chunk}.")
        if self.target_std is not None and not self.target_std > 0:
            raise ValueError(f"target_std must be > 0 (the target's SD), got {self.target_std}.")

    @classmethod
    def from_dict(cls, config: dict) -> ModelConfig:
        """Read ``asdict(config)`` back, also from old checkpoints (before ``norm`` existed).

        An old config without ``"norm"`` gets the normalisation its position implied then:
        learned -> ``"set"``, sinusoidal -> ``"slice"``, none -> ``"none"``.
        """
        config = dict(config)
        if "norm" not in config:
            config["norm"] = LEGACY_NORM.get(config.get("position") or "none", "set")
        return cls(**config)


# -----------------------------------------------------------------------------
# the slice model


def volume_slices(x: torch.Tensor, axis: str) -> torch.Tensor:
    """Cut volumes ``x`` (B, 1, X, Y, Z) into grey images along ``axis`` -> (B*S, 1, H, W).

    ``axis`` is ``"sagittal"`` (S = X), ``"coronal"`` (S = Y) or ``"axial"`` (S = Z); images of
    volume b are rows ``b*S .. b*S + S-1``.
    """
    order = {0: (0, 1, 2, 3), 1: (0, 2, 1, 3), 2: (0, 3, 1, 2)}[AXES[axis]]
    s = x[:, 0].permute(order)  # (B, S, H, W)
    return s.reshape(-1, 1, *s.shape[2:])  # (B*S, 1, H, W)


class SliceModel(nn.Module):
    """A 3D volume model built from a 2D image encoder applied to every slice.

    Arguments: the fields of :class:`ModelConfig` (``backbone`` and ``weights`` may be given by
    position). ``model.config`` is that ModelConfig; rebuild with :meth:`from_config`.

    Input: ``x`` of shape ``(B, 1, X, Y, Z)``, float, z-scored intensities (the slicelib
    preprocessing). A z-scored slice has mean 0 and sd 1 over the head, the statistics
    torchvision's ImageNet normalisation gives natural images, so it is fed to the encoder as
    the normalised grey level of all three channels.

    Output: ``(B,)`` predictions (regression, in target units) or logits (binary); ``(B, C)``
    logits (multiclass). With ``return_details=True`` a dict (see :meth:`forward`).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights: str | os.PathLike | None = None,
        *,
        embed_dim: int = 32,
        position: str | None = "learned",
        norm: str = "set",
        pooling: str = "mean",
        axes: str | Sequence[str] = "sagittal",
        task: str = "regression",
        num_classes: int | None = None,
        volume_shape: Sequence[int] = (91, 109, 91),
        stem: str = "repeat",
        slice_chunk: int | None = None,
        checkpoint_activations: bool = False,
        channels_last: bool = False,
        freeze_batchnorm: bool = False,
        dropout: float = 0.0,
        target_mean: float | None = None,
        target_std: float | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        args = {k: v for k, v in locals().items() if k in ModelConfig.__dataclass_fields__}
        # the arguments above, checked and normalised: the one description of the architecture
        self.config = c = ModelConfig(**args)
        self.axes, self.volume_shape = tuple(c.axes), tuple(c.volume_shape)
        self.task, self.position, self.stem = c.task, c.position, c.stem
        self.slice_chunk, self.checkpoint_activations = c.slice_chunk, c.checkpoint_activations
        self.channels_last, self.freeze_batchnorm = c.channels_last, c.freeze_batchnorm
        self.n_slices = {a: self.volume_shape[AXES[a]] for a in self.axes}
        self.target_mean = 0.0 if c.target_mean is None else float(c.target_mean)
        self.target_std = 1.0 if c.target_std is None else float(c.target_std)
        D, n_out = c.embed_dim, c.num_classes if c.task == "multiclass" else 1

        with torch.random.fork_rng(devices=[]):  # same seed, same model; caller's RNG untouched
            if c.seed is not None:
                torch.manual_seed(c.seed)
            self.encoder, n_features = build_encoder(c.backbone, c.weights, c.stem)
            self.project = nn.Linear(n_features, D)
            if c.position == "learned":  # one table per axis
                self.pos = nn.ModuleDict(
                    {a: LearnedPosition(n, D) for a, n in self.n_slices.items()}
                )
            else:
                self.pos = SinusoidalPosition(D) if c.position == "sinusoidal" else None
            self.norm = make_norm(c.norm, sum(self.n_slices.values()), D)
            self.plane = nn.Parameter(torch.randn(len(self.axes), D) * 0.02)  # (n_axes, D)
            plane_row = [self.axes.index(a) if a in self.axes else 0 for a in AXES]
            self.register_buffer("plane_row", torch.tensor(plane_row), persistent=False)
            self.pool = SlicePooling(c.pooling, D)
            self.head = nn.Sequential(
                nn.Linear(D, 64), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(64, n_out)
            )
        if c.channels_last:
            self.encoder.to(memory_format=torch.channels_last)  # conv weights as NHWC
        if len(self.axes) == 1:
            self.plane.requires_grad_(False)  # one plane: the plane embedding is a constant

    @classmethod
    def from_config(cls, config: ModelConfig | dict, weights=None) -> SliceModel:
        """Rebuild a model from ``model.config`` (or its dict, also an old checkpoint's).

        ``weights`` replaces the saved ``weights`` (default: none loaded), so loading a
        checkpoint reads no weight file: ``m = SliceModel.from_config(cfg); m.load_state_dict(sd)``.
        """
        if not isinstance(config, ModelConfig):
            config = ModelConfig.from_dict(config)
        return cls(**dataclasses.asdict(dataclasses.replace(config, weights=weights)))

    def train(self, mode: bool = True) -> SliceModel:
        """Set train/eval mode; with ``freeze_batchnorm`` the encoder's BatchNorm stays in eval."""
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # --- the pieces, in forward order -------------------------------------------------------

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(B, 1, X, Y, Z)`` with the slice counts it needs."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(
                f"SliceModel expects volumes of shape [B, 1, X, Y, Z]; got {list(x.shape)}. "
                "Add the channel with x[:, None] (or x[None, None] for one volume)."
            )
        fixed = ["position='learned'"] * (self.position == "learned")
        fixed += ["norm='set'"] * (self.config.norm == "set")  # both have one row per slice
        for a, n in self.n_slices.items():
            got = x.shape[2 + AXES[a]]
            if fixed and got != n:
                raise ValueError(
                    f"This model ({' and '.join(fixed)}) was built for {n} {a} slices "
                    f"(volume_shape={self.volume_shape}), but the input has {got} "
                    f"(shape {list(x.shape)}). "
                    "Preprocess the scan to the model's grid (the run's PreprocessConfig), or use "
                    "position='sinusoidal'/'none' with norm='slice'/'none': any slice count."
                )

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode grey 2D slices: ``(N, 1, H, W)`` -> ``(N, F)`` encoder features (unprojected)."""
        if self.stem == "repeat":
            images = images.expand(-1, 3, -1, -1)  # grey -> RGB, no copy
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # (N, C, H, W) as NHWC
        return self.encoder(images).flatten(1)

    def _encode_chunked(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, F), ``slice_chunk`` images at a time, optionally checkpointed."""
        chunk = self.slice_chunk or images.shape[0]
        feats = []
        for part in images.split(chunk):
            if self.checkpoint_activations and torch.is_grad_enabled():
                feats.append(checkpoint(self.encode_images, part, use_reentrant=False))
            else:
                feats.append(self.encode_images(part))
        return torch.cat(feats)

    def encode_slices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode every slice of every axis and project it to D.

        Args:
            x: ``(B, 1, X, Y, Z)`` volumes.
        Returns:
            ``(h, slice_index, slice_axis)``: ``h`` (B, S, D) projected slice embeddings (no
            position yet); ``slice_index`` (S,) index of each slice along its axis;
            ``slice_axis`` (S,) axis id (0 sagittal, 1 coronal, 2 axial). S sums over axes.
        """
        self.check_input(x)
        B = x.shape[0]
        out, index, axis = [], [], []
        for a in self.axes:
            f = self._encode_chunked(volume_slices(x, a))  # (B*S_a, F)
            out.append(self.project(f.reshape(B, -1, f.shape[1])))  # (B, S_a, D)
            index.append(torch.arange(out[-1].shape[1], device=x.device))  # (S_a,)
            axis.append(torch.full_like(index[-1], AXES[a]))  # (S_a,)
        return torch.cat(out, dim=1), torch.cat(index), torch.cat(axis)

    def add_position(self, h, slice_index, slice_axis) -> torch.Tensor:
        """Add position (and plane) embeddings, then normalise: h (B, S, D) -> (B, S, D).

        ``slice_index`` (S,) and ``slice_axis`` (S,) as :meth:`encode_slices` returns them.
        """
        if len(self.axes) > 1:
            h = h + self.plane[self.plane_row[slice_axis]]  # (B, S, D)
        if self.position == "learned":
            pos = [self.pos[a](slice_index[slice_axis == AXES[a]]) for a in self.axes]
            h = h + torch.cat(pos)  # (B, S, D)
        elif self.position == "sinusoidal":
            h = h + self.pos(slice_index)  # (B, S, D)
        return self.norm(h)

    def forward(self, x: torch.Tensor, return_details: bool = False):
        """Predict from volumes.

        Args:
            x: ``(B, 1, X, Y, Z)`` float volumes, z-scored.
            return_details: also return what the interpretability tools need.
        Returns:
            ``(B,)`` (regression, binary) or ``(B, C)`` (multiclass). With ``return_details``, a
            dict with ``output`` (as above), ``slice_embeddings`` (B, S, D) after position and
            normalisation, ``slice_weights`` (B, S) pooling weights (sum to 1 over S),
            ``slice_index`` (S,) and ``slice_axis`` (S,).
        """
        h, index, axis = self.encode_slices(x)  # (B, S, D)
        return self.predict_from_embeddings(h, index, axis, return_details)

    def predict_from_embeddings(self, h, slice_index, slice_axis, return_details: bool = False):
        """The model after the encoder: position, norm, pooling and head.

        ``h`` (B, S, D) projected slice embeddings as :meth:`encode_slices` returns them (the
        explain tools swap single slices' embeddings here); returns what :meth:`forward` returns.
        """
        h = self.add_position(h, slice_index, slice_axis)  # (B, S, D)
        pooled, weights = self.pool(h)  # (B, D), (B, S)
        out = self.head(pooled)  # (B, n_out)
        if self.task == "regression":
            out = self.target_mean + self.target_std * out  # standardised -> target units
        if self.task != "multiclass":
            out = out[:, 0]  # (B,)
        if not return_details:
            return out
        details = dict(output=out, slice_embeddings=h, slice_weights=weights)
        return dict(details, slice_index=slice_index, slice_axis=slice_axis)
