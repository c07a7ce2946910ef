"""The position-encoded slice model (Gupta et al., ISBI 2023), top to bottom.

A 3D volume ``[B, 1, X, Y, Z]`` is cut into all of its 2D slices along one or more axes. Every
slice goes through the same 2D encoder (any torchvision classification backbone, optionally
ImageNet-pretrained), is projected to ``embed_dim``, gets a position embedding for its slice
index (and a plane embedding when several axes are used), and a permutation-invariant pooling
turns the set of slices into one vector, which a small head maps to the prediction.

    volume (B, 1, X, Y, Z)
      -> slices (B*S, 1, H, W)            one axis, or several axes stacked
      -> 2D encoder, in chunks           (B*S, F)
      -> Linear(F, D)                    (B, S, D)
      -> + position (+ plane) embedding, LayerNorm
      -> pooling (mean | max | attention | gated attention)   (B, D)
      -> head Linear(D, 64), ReLU, Linear(64, out)

Array axes are RAS canonical: X left->right, Y posterior->anterior, Z inferior->superior, so
"sagittal" slices are cut along X, "coronal" along Y and "axial" along Z.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "AXES",
    "TESTED_BACKBONES",
    "SliceModel",
    "build_encoder",
    "fold_rgb_stem",
    "LearnedPosition",
    "SinusoidalPosition",
    "SlicePooling",
    "WeightsError",
]

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
TESTED_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "slice_cnn",
)
POSITIONS = ("learned", "sinusoidal", None)
POOLINGS = ("mean", "max", "attention", "gated_attention")
TASKS = ("regression", "binary", "multiclass")


class WeightsError(RuntimeError):
    """Pretrained weights could not be found, downloaded or loaded."""


# -----------------------------------------------------------------------------
# 2D encoders


class SliceCNN(nn.Module):
    """The paper's scratch encoder: 5 blocks [Conv3x3, InstanceNorm, MaxPool2, ReLU].

    Channels 32-64-128-256-256, then a 1x1 conv to 32 channels and global average pooling.
    Input ``(N, 1 or 3, H, W)``; output ``(N, 32)``.
    """

    def __init__(self, in_channels: int = 3, channels=(32, 64, 128, 256, 256), out_dim: int = 32):
        super().__init__()
        blocks, c_in = [], in_channels
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.InstanceNorm2d(c_out),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.reduce = nn.Conv2d(c_in, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.features(x))  # (N, 32, h, w)
        return x.mean(dim=(2, 3))  # (N, 32)


def _strip_classifier(net: nn.Module) -> nn.Module:
    """Replace a torchvision classifier head by the identity so the net returns pooled features.

    Handles ``fc`` (ResNet), ``classifier`` (MobileNet, EfficientNet, DenseNet, ConvNeXt, VGG)
    and ``heads`` (ViT). Inside a Sequential head everything from the first Linear on is
    dropped (and dropout before it), so the output is the backbone's pooled feature vector.
    """
    for name in ("fc", "classifier", "heads", "head"):
        head = getattr(net, name, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(net, name, nn.Identity())
            return net
        if isinstance(head, nn.Sequential):
            kept = []
            for layer in head:
                if isinstance(layer, nn.Linear):
                    break
                if not isinstance(layer, nn.Dropout):
                    kept.append(layer)
            setattr(net, name, nn.Sequential(*kept) if kept else nn.Identity())
            return net
    raise ValueError(
        f"Cannot find the classifier of {type(net).__name__} (looked for fc, classifier, heads); "
        "pass a torchvision classification model name such as 'resnet18'."
    )


def _first_rgb_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """Return (parent, attribute, conv) of the first Conv2d that takes 3 input channels."""
    for parent in net.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                return parent, attr, child
    raise ValueError(f"{type(net).__name__} has no Conv2d with 3 input channels to fold.")


def fold_rgb_stem(net: nn.Module) -> nn.Module:
    """Fold the first RGB conv into a 1-channel conv (in place), for grey input.

    On a grey image repeated into 3 channels, ``conv(W, [g, g, g]) = conv(sum_c W_c, g)``, so the
    folded net computes the same function on ``(N, 1, H, W)`` input with a third of the stem's
    multiply-adds. Returns ``net``.
    """
    parent, attr, conv = _first_rgb_conv(net)
    folded = nn.utils.skip_init(  # no random init: keeps the caller's RNG stream unchanged
        nn.Conv2d,
        1,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias)
    setattr(parent, attr, folded)
    return net


def _offline_help(backbone: str) -> str:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        "To work offline, either\n"
        f"  (1) pass weights='/path/to/{backbone}.pth' (a torchvision state_dict of {backbone}), or\n"
        f"  (2) put the file torchvision downloads into the cache {hub} "
        "(set TORCH_HOME to move the cache), e.g. copy it from a machine with internet, or\n"
        f"  (3) set SLICELIB_WEIGHTS_DIR to a folder holding {backbone}_imagenet1k.pth."
    )


def _load_state_dict_file(path: Path, net: nn.Module, backbone: str) -> None:
    """Load a torchvision state_dict file into ``net`` strictly, with errors that explain."""
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist (backbone {backbone}).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise WeightsError(
            f"Could not read weights file {path} as a PyTorch state_dict ({err}). "
            f"Expected torch.save(torchvision.models.{backbone}().state_dict(), path)."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path} is not a plain state_dict (a dict of tensors); for backbone {backbone} save "
            "it with torch.save(model.state_dict(), path)."
        )
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs {backbone} {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:

        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise WeightsError(
            f"Weights file {path} does not fit torchvision's {backbone}: "
            f"{len(missing)} missing keys [{few(missing)}], "
            f"{len(unexpected)} unexpected keys [{few(unexpected)}], "
            f"{len(shapes)} shape mismatches [{few(shapes)}]. "
            "Pass the backbone the file was saved from (backbone=...)."
        )
    net.load_state_dict(state, strict=True)


def _imagenet_backbone(backbone: str) -> nn.Module:
    """torchvision ``backbone`` with ImageNet weights: SLICELIB_WEIGHTS_DIR first, then the hub."""
    local_dir = os.environ.get("SLICELIB_WEIGHTS_DIR")
    if local_dir:
        for name in (f"{backbone}_imagenet1k.pth", f"{backbone}.pth"):
            if (Path(local_dir) / name).is_file():
                net = torchvision.models.get_model(backbone, weights=None)
                _load_state_dict_file(Path(local_dir) / name, net, backbone)
                return net
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        return torchvision.models.get_model(backbone, weights=weights)
    except Exception as err:  # URLError, socket errors, SSL errors, HTTP errors ...
        raise WeightsError(
            f"Could not get ImageNet weights {weights} for {backbone}: "
            f"{type(err).__name__}: {err}.\n"
            f"torchvision downloads them from {weights.url} into {torch.hub.get_dir()}; "
            "that needs internet.\n" + _offline_help(backbone)
        ) from err


def build_encoder(
    backbone: str = "resnet18", weights: str | os.PathLike | None = None, stem: str = "repeat"
) -> tuple[nn.Module, int]:
    """Build a 2D slice encoder: a torchvision classification model without its classifier.

    Args:
        backbone: any torchvision classification model name (``torchvision.models.list_models``),
            e.g. ``resnet18`` (the paper's), or ``slice_cnn`` (the paper's scratch encoder).
        weights: ``"imagenet"`` (torchvision's default ImageNet weights through its weights
            API and cache; ``$SLICELIB_WEIGHTS_DIR/<backbone>_imagenet1k.pth`` is used first if
            set), ``None`` (random init), or a path to a local torchvision state_dict.
        stem: ``"repeat"`` (the encoder takes the grey slice repeated to RGB, as in the paper)
            or ``"fold"`` (the first conv's RGB filters are summed into a 1-channel conv: the
            same function on grey input, a third of the stem's work).

    Returns:
        ``(encoder, n_features)``: the encoder maps ``(N, C, H, W)`` slices (C = 3 for
        ``repeat``, 1 for ``fold``) to ``(N, n_features)`` pooled features.
    """
    if stem not in ("repeat", "fold"):
        raise ValueError(f"stem must be 'repeat' or 'fold', got {stem!r}.")
    if backbone == "slice_cnn":
        if weights not in (None, "none"):
            raise WeightsError(
                "slice_cnn is the paper's scratch encoder: it has no pretrained weights."
            )
        net: nn.Module = SliceCNN(in_channels=1 if stem == "fold" else 3)
        return net, 32
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"Unknown backbone {backbone!r}: use a torchvision classification model name, "
            f"e.g. one of {', '.join(TESTED_BACKBONES)}."
        )
    if weights == "imagenet":
        net = _imagenet_backbone(backbone)
    else:
        net = torchvision.models.get_model(backbone, weights=None)
        if weights not in (None, "none"):
            _load_state_dict_file(Path(weights), net, backbone)
    net = _strip_classifier(net)
    if stem == "fold":
        fold_rgb_stem(net)
    was_training = net.training
    net.eval()
    with torch.no_grad():  # one dry run to read the feature size
        n_features = net(torch.zeros(1, 1 if stem == "fold" else 3, 64, 64)).flatten(1).shape[1]
    net.train(was_training)
    return net, n_features


# -----------------------------------------------------------------------------
# position embeddings and pooling


class LearnedPosition(nn.Module):
    """A learned vector per slice index (the paper), added to the slice embeddings.

    Shape: ``(n_slices, D)``; the slice count is fixed at construction.
    """

    def __init__(self, n_slices: int, dim: int):
        super().__init__()
        self.n_slices = n_slices
        self.table = nn.Parameter(torch.randn(n_slices, dim) * 0.1)  # (S, D)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """``index``: ``(S,)`` slice indices -> ``(S, D)`` embeddings."""
        return self.table[index]


class SinusoidalPosition(nn.Module):
    """Fixed sine/cosine embedding of the slice index (Vaswani et al. 2017); any slice count."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        freqs = torch.exp(-math.log(base) * torch.arange(0, dim, 2).float() / dim)  # (D/2,)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """``index``: ``(S,)`` slice indices -> ``(S, D)`` embeddings in [-1, 1]."""
        angles = index.float()[:, None] * self.freqs[None, :]  # (S, D/2)
        emb = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (S, D)
        return emb[:, : self.dim]


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
# the slice model


def _as_axes(axes: str | Sequence[str]) -> tuple[str, ...]:
    names = tuple(a.strip() for a in axes.split(",")) if isinstance(axes, str) else tuple(axes)
    bad = [a for a in names if a not in AXES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"axes must be distinct names among {tuple(AXES)}, e.g. 'sagittal' or "
            f"('sagittal', 'coronal', 'axial'); got {axes!r}."
        )
    return names


def _slices(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Cut ``x`` (B, X, Y, Z) into slices along ``axis`` -> (B, S, H, W)."""
    order = {0: (0, 1, 2, 3), 1: (0, 2, 1, 3), 2: (0, 3, 1, 2)}[axis]
    return x.permute(order)


class SliceModel(nn.Module):
    """A 3D volume model built from a 2D image encoder applied to every slice.

    Args:
        backbone: torchvision classification model name (default ``resnet18``, the paper's),
            or ``slice_cnn`` (the paper's scratch CNN).
        weights: ``"imagenet"``, ``None`` (random init, seeded by ``seed``) or a path to a
            local torchvision state_dict of ``backbone`` (loaded with ``weights_only=True``,
            strict).
        embed_dim: size D of the slice embeddings (paper: 32).
        position: ``"learned"`` (paper: one vector per slice index, then LayerNorm over the
            whole (S, D) set), ``"sinusoidal"`` (fixed, any slice count, LayerNorm over D) or
            ``None`` (no position: the model is invariant to slice order).
        pooling: ``"mean"``, ``"max"``, ``"attention"`` or ``"gated_attention"``.
        axes: one of ``"sagittal"``, ``"coronal"``, ``"axial"``, or several (a sequence or a
            comma-separated string): one shared encoder, a plane embedding, all slices pooled
            together.
        task: ``"regression"`` (output in target units, e.g. years), ``"binary"`` (one logit)
            or ``"multiclass"`` (``num_classes`` logits).
        num_classes: number of classes for ``multiclass``.
        volume_shape: ``(X, Y, Z)`` voxels of the input grid; fixes the slice counts of the
            learned position embedding (default: the FSL MNI152 2 mm grid, 91 x 109 x 91).
        stem: ``"repeat"`` (grey slice repeated into RGB, paper) or ``"fold"`` (first conv
            folded to one input channel; same function, less work).
        slice_chunk: encode at most this many slices at once (memory); ``None`` = all at once.
        checkpoint_activations: recompute encoder activations in the backward pass (memory).
        channels_last: store the encoder's conv weights and feed it slices as channels_last
            (NHWC). Same function and parameters (float rounding aside: gradients within ~1 %
            of float64); on a CPU it makes MobileNetV2 on small slices (the 8 mm grid's
            27 x 23) about 2x faster to train, and gives ResNet18 at 2 mm nothing
            (``benchmarks/``).
        freeze_batchnorm: keep the encoder's BatchNorm layers in eval mode while training
            (running ImageNet statistics; makes chunked training identical to unchunked).
        dropout: dropout before the head's last layer.
        target_mean, target_std: regression outputs are ``target_mean + target_std * head(.)``,
            so the head works in standardised units (it starts at the mean training age, as in
            the paper, and reaches the age scale in a few steps) while outputs stay in years.
        seed: seed for the random initialisation (encoder when ``weights=None``, projection,
            position, pooling and head), so two models built with the same seed are equal.

    Input: ``x`` of shape ``(B, 1, X, Y, Z)``, float, z-scored intensities (the slicelib
    preprocessing). A z-scored slice has mean 0 and sd 1 over the head, the same statistics
    torchvision's ImageNet normalisation gives natural images, so it is fed to the encoder
    as the normalised grey level of all three channels (black background lands near -2, where
    a black ImageNet pixel lands).

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
        position = None if position in (None, "none") else position
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        if task == "multiclass" and (num_classes is None or num_classes < 2):
            raise ValueError(f"task='multiclass' needs num_classes >= 2, got {num_classes!r}.")
        if slice_chunk is not None and slice_chunk < 1:
            raise ValueError(f"slice_chunk must be a positive number of slices, got {slice_chunk}.")
        volume_shape = tuple(int(s) for s in volume_shape)
        if len(volume_shape) != 3:
            raise ValueError(f"volume_shape must be (X, Y, Z), got {volume_shape}.")
        self.axes = _as_axes(axes)
        self.config = dict(
            backbone=backbone,
            weights=None if weights is None else str(weights),
            embed_dim=embed_dim,
            position=position,
            pooling=pooling,
            axes=list(self.axes),
            task=task,
            num_classes=num_classes,
            volume_shape=list(volume_shape),
            stem=stem,
            slice_chunk=slice_chunk,
            checkpoint_activations=checkpoint_activations,
            channels_last=channels_last,
            freeze_batchnorm=freeze_batchnorm,
            dropout=dropout,
            target_mean=target_mean,
            target_std=target_std,
            seed=seed,
        )
        self.task, self.position, self.stem = task, position, stem
        self.slice_chunk = slice_chunk
        self.checkpoint_activations = checkpoint_activations
        self.channels_last = channels_last
        self.freeze_batchnorm = freeze_batchnorm
        self.volume_shape = volume_shape
        self.n_slices = {a: volume_shape[AXES[a]] for a in self.axes}
        n_out = num_classes if task == "multiclass" else 1

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder, n_features = build_encoder(backbone, weights, stem)
            self.project = nn.Linear(n_features, embed_dim)
            if position == "learned":
                self.pos = nn.ModuleDict(
                    {a: LearnedPosition(n, embed_dim) for a, n in self.n_slices.items()}
                )
                self.norm = nn.LayerNorm([sum(self.n_slices.values()), embed_dim])
            else:
                self.pos = SinusoidalPosition(embed_dim) if position == "sinusoidal" else None
                self.norm = nn.LayerNorm(embed_dim) if position == "sinusoidal" else nn.Identity()
            self.plane = nn.Parameter(torch.randn(len(self.axes), embed_dim) * 0.02)
            plane_row = [self.axes.index(a) if a in self.axes else 0 for a in AXES]
            self.register_buffer("plane_row", torch.tensor(plane_row), persistent=False)
            self.pool = SlicePooling(pooling, embed_dim)
            self.head = nn.Sequential(
                nn.Linear(embed_dim, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, n_out)
            )
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)  # conv weights as NHWC
        if target_std is not None and not target_std > 0:
            raise ValueError(
                f"target_std must be > 0 (the training SD of the target), got {target_std}."
            )
        self.target_mean = 0.0 if target_mean is None else float(target_mean)
        self.target_std = 1.0 if target_std is None else float(target_std)
        if len(self.axes) == 1:
            self.plane.requires_grad_(False)  # one plane: the plane embedding is a constant

    @classmethod
    def from_config(cls, config: dict, weights=None) -> SliceModel:
        """Rebuild a model from ``model.config`` without loading pretrained weights.

        Use it to load a checkpoint: ``m = SliceModel.from_config(cfg); m.load_state_dict(sd)``.
        """
        config = dict(config)
        config["weights"] = weights
        backbone = config.pop("backbone")
        return cls(backbone, **config)

    def train(self, mode: bool = True) -> SliceModel:
        """Set train/eval mode; with ``freeze_batchnorm`` the encoder's BatchNorm stays in eval."""
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # --- the pieces, in forward order -------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(
                f"SliceModel expects volumes of shape [B, 1, X, Y, Z]; got {list(x.shape)}. "
                "Add the channel with x[:, None] (or x[None, None] for one volume)."
            )
        if self.position == "learned":
            for a, n in self.n_slices.items():
                got = x.shape[2 + AXES[a]]
                if got != n:
                    raise ValueError(
                        f"This model's learned position embedding was built for {n} {a} slices "
                        f"(volume_shape={self.volume_shape}), but the input has {got} "
                        f"(input shape {list(x.shape)}). Preprocess the scan to the model's grid "
                        "(slicelib.data.preprocess with the run's PreprocessConfig), or use "
                        "position='sinusoidal' or None, which work for any slice count."
                    )

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode grey 2D slices: ``(N, 1, H, W)`` -> ``(N, F)`` encoder features (no projection)."""
        if self.stem == "repeat":
            images = images.expand(-1, 3, -1, -1)  # grey -> RGB, no copy
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # (N, C, H, W) as NHWC
        return self.encoder(images).flatten(1)

    def _encode_chunked(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, F), ``slice_chunk`` images at a time, optionally checkpointed."""
        chunk = self.slice_chunk or images.shape[0]
        feats = []
        for start in range(0, images.shape[0], chunk):
            part = images[start : start + chunk]
            if self.checkpoint_activations and torch.is_grad_enabled():
                feats.append(checkpoint(self.encode_images, part, use_reentrant=False))
            else:
                feats.append(self.encode_images(part))
        return torch.cat(feats)

    def encode_slices(
        self, x: torch.Tensor, encode=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode every slice of every axis and project it to D.

        Args:
            x: ``(B, 1, X, Y, Z)`` volumes.
            encode: optional function ``(N, 1, H, W) -> (N, F)`` that replaces the model's own
                chunked encoding (``slicelib.fast`` passes its optimised encoders here).
        Returns:
            ``(h, slice_index, slice_axis)``: ``h`` (B, S, D) projected slice embeddings (no
            position yet); ``slice_index`` (S,) index of each slice along its axis;
            ``slice_axis`` (S,) axis id (0 sagittal, 1 coronal, 2 axial). S sums over axes.
        """
        self._check_input(x)
        B = x.shape[0]
        out, index, axis = [], [], []
        for a in self.axes:
            s = _slices(x[:, 0], AXES[a])  # (B, S_a, H, W)
            S_a, H, W = s.shape[1:]
            images = s.reshape(B * S_a, 1, H, W)  # (B*S_a, 1, H, W)
            f = (encode or self._encode_chunked)(images).reshape(B, S_a, -1)  # (B, S_a, F)
            out.append(self.project(f))  # (B, S_a, D)
            index.append(torch.arange(S_a, device=x.device))
            axis.append(torch.full((S_a,), AXES[a], device=x.device))
        return torch.cat(out, dim=1), torch.cat(index), torch.cat(axis)

    def add_position(
        self, h: torch.Tensor, slice_index: torch.Tensor, slice_axis: torch.Tensor
    ) -> torch.Tensor:
        """Add position (and plane) embeddings and normalise: (B, S, D) -> (B, S, D)."""
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

    def predict_from_embeddings(
        self,
        h: torch.Tensor,
        slice_index: torch.Tensor,
        slice_axis: torch.Tensor,
        return_details: bool = False,
    ):
        """The model after the encoder: position, pooling and head.

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
        return dict(
            output=out,
            slice_embeddings=h,
            slice_weights=weights,
            slice_index=slice_index,
            slice_axis=slice_axis,
        )
