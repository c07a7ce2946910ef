"""A model from a saved config: the one place that turns a config dict into a model.

:func:`build_model` builds a :class:`~slicelib.model.SliceModel` or, for a 3D backbone, a
:class:`~slicelib.cnn3d.VolumeCNN`; :func:`saved_model_config` reads a checkpoint's model config
(older spellings included); :func:`model_config_dict` is the inverse (a model's config as JSON).
"""

from __future__ import annotations

import dataclasses

import torch

from slicelib.cnn3d import VolumeCNN, is_volume_backbone
from slicelib.model import ModelConfig, SliceModel

__all__ = ["build_model", "saved_model_config", "model_config_dict"]


def model_config_dict(model: torch.nn.Module) -> dict:
    """``model.config`` (a ModelConfig or VolumeCNNConfig) as a plain JSON-ready dict."""
    return dataclasses.asdict(model.config)


def build_model(model_kwargs: dict) -> SliceModel | VolumeCNN:
    """The model a run config describes: a :class:`VolumeCNN` for a 3D backbone (``sfcn_3d``,
    ``densenet121_3d``), else a :class:`SliceModel`.

    ``model_kwargs``: constructor arguments: a TrainConfig's ``model`` dict completed by
    ``train``, or ``dataclasses.asdict(model.config)``. ``weights`` "none" means no weights.
    (A checkpoint's saved config goes through :func:`saved_model_config` first.)
    """
    kwargs = dict(model_kwargs)
    if kwargs.get("weights") in ("none", "None", ""):
        kwargs["weights"] = None
    if is_volume_backbone(kwargs.get("backbone")):
        return VolumeCNN(**kwargs)
    return SliceModel(**kwargs)


def saved_model_config(model_config: dict) -> dict:
    """A checkpoint's model config as today's constructor arguments (the same dict for a 3D
    CNN; a slice model's saved by an older slicelib gets today's spelling, e.g. its ``norm``)."""
    if is_volume_backbone(model_config.get("backbone")):
        return dict(model_config)
    return dataclasses.asdict(ModelConfig.from_dict(model_config))
