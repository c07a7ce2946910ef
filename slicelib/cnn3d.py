"""3D CNN baselines that train through slicelib like :class:`~slicelib.model.SliceModel`.

The paper compares slice models against a 3D CNN reading the whole volume at once. Two are here:

- ``"sfcn_3d"``: an SFCN-style net (Peng et al., Medical Image Analysis 2021), the lightweight 3D
  brain-age baseline: five blocks [Conv3d 3x3x3, BatchNorm, MaxPool 2, ReLU] with 32-64-128-256-256
  channels, a [Conv3d 1x1x1 to 64, BatchNorm, ReLU] block, global average pooling, dropout and a
  1x1x1 conv to the output. Peng et al. use 160 x 192 x 160 1 mm input and 40 soft age bins;
  here the output is one value (or C logits) and the pooling is adaptive, so any grid works.
- ``"densenet121_3d"``: MONAI's ``DenseNet121(spatial_dims=3)`` (optional dependency:
  ``pip install monai``, or the ``bench`` extra). It downsamples by 32, so every side of the
  grid must be at least ``DENSENET_MIN_SIZE`` = 29 voxels (6 mm MNI, 30 x 36 x 30, is fine).

Both start from random weights (there are no pretrained 3D weights here). The output follows
SliceModel's convention: regression ``target_mean + target_std * net(x)`` in target units (B,),
binary one logit (B,), multiclass (B, C) logits. ``forward(x, return_details=True)`` returns
``dict(output=...)`` only: a 3D CNN has no slices, so the slice explain tools do not apply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "DENSENET_MIN_SIZE",
    "SFCN",
    "VOLUME_BACKBONES",
    "VolumeCNN",
    "VolumeCNNConfig",
    "build_volume_net",
    "is_volume_backbone",
]

VOLUME_BACKBONES = ("sfcn_3d", "densenet121_3d")
TASKS = ("regression", "binary", "multiclass")
DEFAULT_DROPOUT = {"sfcn_3d": 0.5, "densenet121_3d": 0.0}  # Peng et al.; MONAI's default
DENSENET_MIN_SIZE = 29  # stem /4 (ceil), then three 2x2x2 average pools need >= 8 voxels


def is_volume_backbone(name) -> bool:
    """True if ``name`` is a 3D CNN backbone (build a :class:`VolumeCNN`, not a SliceModel)."""
    return str(name) in VOLUME_BACKBONES


class SFCN(nn.Module):
    """SFCN-style 3D CNN: input ``(B, in_channels, X, Y, Z)`` -> output ``(B, out_channels)``.

    Args:
        in_channels: input channels (1 for a T1 volume).
        out_channels: outputs (1 for regression; Peng et al. use 40 age bins).
        channels: the five pooled blocks' widths (default 32-64-128-256-256).
        last: width of the 1x1x1 block (default 64).
        dropout: dropout before the output conv (default 0.5).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        last: int = 64,
        dropout: float = 0.5,
    ):
        super().__init__()
        layers, c_in = [], in_channels
        for c_out in channels:
            layers += [
                nn.Conv3d(c_in, c_out, 3, padding=1),
                nn.BatchNorm3d(c_out),
                nn.MaxPool3d(2, ceil_mode=True),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        layers += [nn.Conv3d(c_in, last, 1), nn.BatchNorm3d(last), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv3d(last, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, X, Y, Z) -> (B, out_channels)."""
        h = self.pool(self.features(x))  # (B, last, 1, 1, 1)
        return self.out(self.dropout(h)).flatten(1)  # (B, out_channels)


def _last_grid(backbone: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Spatial size of the feature map the backbone's last BatchNorm sees, for an input grid."""
    if backbone == "sfcn_3d":
        return tuple(_halve(n, 5) for n in shape)  # five ceil-mode 2x max pools
    return tuple(math.ceil(n / 4) // 8 for n in shape)  # stride-2 conv + pool, three avg pools


def _halve(n: int, times: int) -> int:
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


def _check_grid(backbone: str, shape: Sequence[int]) -> None:
    """Raise if ``backbone`` cannot read a volume of spatial ``shape`` (X, Y, Z)."""
    if backbone == "densenet121_3d" and min(shape) < DENSENET_MIN_SIZE:
        raise ValueError(
            f"densenet121_3d downsamples by 32 and needs every side of the grid >= "
            f"{DENSENET_MIN_SIZE} voxels; got {tuple(shape)}. Use a finer grid (6 mm MNI, "
            "30 x 36 x 30, is the coarsest standard one) or backbone='sfcn_3d' (any grid)."
        )


def build_volume_net(backbone: str, n_out: int, dropout: float) -> nn.Module:
    """A randomly initialised 3D backbone: ``(B, 1, X, Y, Z)`` -> ``(B, n_out)``."""
    if backbone == "sfcn_3d":
        return SFCN(in_channels=1, out_channels=n_out, dropout=dropout)
    try:
        from monai.networks.nets import DenseNet121
    except ImportError as e:
        raise ImportError(
            "backbone 'densenet121_3d' needs MONAI: pip install monai "
            "(or pip install 'slicelib[bench]')."
        ) from e
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=n_out, dropout_prob=dropout)


@dataclass
class VolumeCNNConfig:
    """Everything needed to rebuild a :class:`VolumeCNN` (``dataclasses.asdict`` -> JSON)."""

    backbone: str = "sfcn_3d"
    weights: str | None = None  # always None: no pretrained 3D weights
    task: str = "regression"
    num_classes: int | None = None
    volume_shape: list[int] = field(default_factory=lambda: [91, 109, 91])
    dropout: float | None = None  # None: the backbone's default (DEFAULT_DROPOUT)
    target_mean: float | None = None
    target_std: float | None = None
    seed: int | None = None


class VolumeCNN(nn.Module):
    """A 3D CNN on whole volumes, with SliceModel's constructor, config and output conventions.

    Args:
        backbone: ``"sfcn_3d"`` or ``"densenet121_3d"`` (MONAI; needs ``pip install monai``).
        task: ``"regression"`` (output in target units), ``"binary"`` (one logit) or
            ``"multiclass"`` (``num_classes`` logits).
        num_classes: number of classes for ``multiclass``.
        volume_shape: ``(X, Y, Z)`` voxels of the training grid (checked against the backbone's
            minimum; any grid of at least that size is accepted at run time).
        dropout: SFCN: before the output conv (default 0.5, Peng et al.); DenseNet121: MONAI's
            ``dropout_prob`` inside every dense layer (default 0.0).
        target_mean, target_std: regression outputs are ``target_mean + target_std * net(x)``.
        seed: seed for the random initialisation (the global RNG is left untouched).
        weights: ``None`` (or ``"none"``); there are no pretrained 3D weights.

    Input ``x`` (B, 1, X, Y, Z) float, z-scored. Output (B,) or (B, C), as SliceModel.
    """

    def __init__(
        self,
        backbone: str = "sfcn_3d",
        *,
        task: str = "regression",
        num_classes: int | None = None,
        volume_shape: Sequence[int] = (91, 109, 91),
        dropout: float | None = None,
        target_mean: float | None = None,
        target_std: float | None = None,
        seed: int | None = None,
        weights: str | None = None,
    ):
        super().__init__()
        if backbone not in VOLUME_BACKBONES:
            raise ValueError(f"backbone must be one of {VOLUME_BACKBONES}, got {backbone!r}.")
        if weights not in (None, "none", "None", ""):
            raise ValueError(
                f"backbone {backbone!r} has no pretrained weights (got weights={weights!r}); "
                "3D CNNs start from random weights: use weights=None."
            )
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        if task == "multiclass" and (num_classes is None or num_classes < 2):
            raise ValueError(f"task='multiclass' needs num_classes >= 2, got {num_classes!r}.")
        if target_std is not None and not target_std > 0:
            raise ValueError(f"target_std must be > 0 (the training SD), got {target_std}.")
        volume_shape = [int(s) for s in volume_shape]
        if len(volume_shape) != 3:
            raise ValueError(f"volume_shape must be (X, Y, Z), got {volume_shape}.")
        _check_grid(backbone, volume_shape)
        dropout = DEFAULT_DROPOUT[backbone] if dropout is None else float(dropout)
        self.config = VolumeCNNConfig(
            backbone, None, task, num_classes, volume_shape, dropout, target_mean, target_std, seed
        )
        self.backbone, self.task, self.volume_shape = backbone, task, tuple(volume_shape)
        self.target_mean = 0.0 if target_mean is None else float(target_mean)
        self.target_std = 1.0 if target_std is None else float(target_std)
        n_out = num_classes if task == "multiclass" else 1
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.net = build_volume_net(backbone, n_out, dropout)

    @classmethod
    def from_config(cls, config: VolumeCNNConfig | dict, weights=None) -> VolumeCNN:
        """Rebuild from ``model.config`` or its ``asdict``/JSON form (e.g. a checkpoint's).

        ``m = VolumeCNN.from_config(cfg); m.load_state_dict(sd)``.
        """
        if dataclasses.is_dataclass(config):
            config = dataclasses.asdict(config)
        config = dict(config)
        valid = {f.name for f in dataclasses.fields(VolumeCNNConfig)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(
                f"unknown VolumeCNN config key(s) {unknown}; valid keys: {sorted(valid)}."
            )
        config["weights"] = weights
        return cls(**config)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(
                f"VolumeCNN expects volumes of shape [B, 1, X, Y, Z]; got {list(x.shape)}. "
                "Add the channel with x[:, None] (or x[None, None] for one volume)."
            )
        _check_grid(self.backbone, x.shape[2:])
        if (
            self.training
            and x.shape[0] == 1
            and math.prod(_last_grid(self.backbone, x.shape[2:])) == 1
        ):
            raise ValueError(
                f"{self.backbone} on a {tuple(x.shape[2:])} grid ends in a 1 x 1 x 1 feature map, "
                "where BatchNorm cannot train on a batch of one volume. Use batches of >= 2 "
                "(drop a last batch of one), a finer grid, or model.eval()."
            )

    def forward(self, x: torch.Tensor, return_details: bool = False):
        """Predict from volumes.

        Args:
            x: ``(B, 1, X, Y, Z)`` float volumes, z-scored.
            return_details: return ``dict(output=...)`` (no slice details: a 3D CNN has no
                slices, so the slice explain tools do not apply).
        Returns:
            ``(B,)`` (regression in target units, binary logits) or ``(B, C)`` (multiclass).
        """
        self._check_input(x)
        out = self.net(x)  # (B, n_out)
        if self.task == "regression":
            out = self.target_mean + self.target_std * out  # standardised -> target units
        if self.task != "multiclass":
            out = out[:, 0]  # (B,)
        return dict(output=out) if return_details else out
