"""Pretrained weights for the 2D slice encoders, described apart from the model code.

As in torchvision's ``models/resnet.py``, the model (:mod:`slicelib.model`) says what the network
is and this module says where its weights come from:

- ``"imagenet"``: torchvision's default ImageNet weights through its weights API and download
  cache (``torch.hub.get_dir()``); ``$SLICELIB_WEIGHTS_DIR/<backbone>_imagenet1k.pth`` is used
  first when that variable is set (offline machines, the course's shared folder).
- a path: a local torchvision ``state_dict`` of the backbone, read with ``weights_only=True``
  (no code is unpickled) and loaded strictly.
- ``None`` or ``"none"``: random initialisation.

Every failure raises :class:`WeightsError` with the file, what was wrong and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from slicelib.errors import WeightsError

__all__ = [
    "WeightsError",
    "load_backbone",
    "load_state_dict_file",
    "imagenet_backbone",
    "offline_help",
    "state_dict_mismatch",
]


def offline_help(backbone: str) -> str:
    """The three ways to get ImageNet weights for ``backbone`` without internet, as text."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        "To work offline, either\n"
        f"  (1) pass weights='/path/to/{backbone}.pth' "
        f"(a torchvision state_dict of {backbone}), or\n"
        f"  (2) put the file torchvision downloads into the cache {hub} "
        "(set TORCH_HOME to move the cache), e.g. copy it from a machine with internet, or\n"
        f"  (3) set SLICELIB_WEIGHTS_DIR to a folder holding {backbone}_imagenet1k.pth."
    )


def state_dict_mismatch(expected: dict, state: dict, names=("file", "model")) -> str:
    """Describe how ``state`` does not fit ``expected`` (two state_dicts); "" when it fits.

    Lists missing and unexpected keys and shape mismatches (at most five of each), with the
    shapes labelled by ``names`` (the source of ``state``, the source of ``expected``).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} ({names[0]} {tuple(state[k].shape)} vs {names[1]} {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return ""

    def few(keys):
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    return (
        f"{len(missing)} missing keys [{few(missing)}], {len(unexpected)} unexpected keys "
        f"[{few(unexpected)}], {len(shapes)} shape mismatches [{few(shapes)}]"
    )


def load_state_dict_file(path: str | os.PathLike, net: nn.Module, backbone: str) -> None:
    """Load the torchvision state_dict file ``path`` into ``net`` (in place), strictly.

    Raises :class:`WeightsError` naming the file when it is absent, unreadable, not a plain
    dict of tensors, or made for another architecture (missing/unexpected keys, shapes).
    """
    path = Path(path)
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
    mismatch = state_dict_mismatch(net.state_dict(), state, ("file", backbone))
    if mismatch:
        raise WeightsError(
            f"Weights file {path} does not fit torchvision's {backbone}: {mismatch}. "
            "Pass the backbone the file was saved from (backbone=...)."
        )
    net.load_state_dict(state, strict=True)


def imagenet_backbone(backbone: str) -> nn.Module:
    """torchvision ``backbone`` with ImageNet weights: SLICELIB_WEIGHTS_DIR first, then the hub."""
    local_dir = os.environ.get("SLICELIB_WEIGHTS_DIR")
    if local_dir:
        for name in (f"{backbone}_imagenet1k.pth", f"{backbone}.pth"):
            if (Path(local_dir) / name).is_file():
                net = torchvision.models.get_model(backbone, weights=None)
                load_state_dict_file(Path(local_dir) / name, net, backbone)
                return net
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        return torchvision.models.get_model(backbone, weights=weights)
    except Exception as err:  # URLError, socket errors, SSL errors, HTTP errors ...
        raise WeightsError(
            f"Could not get ImageNet weights {weights} for {backbone}: "
            f"{type(err).__name__}: {err}.\n"
            f"torchvision downloads them from {weights.url} into {torch.hub.get_dir()}; "
            "that needs internet.\n" + offline_help(backbone)
        ) from err


def load_backbone(backbone: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """The torchvision classification model ``backbone`` (classifier included) with ``weights``.

    ``weights``: ``"imagenet"``, ``None``/``"none"`` (random init from the current RNG) or a
    path to a local state_dict of ``backbone`` (see the module docstring).
    """
    if weights == "imagenet":
        return imagenet_backbone(backbone)
    net = torchvision.models.get_model(backbone, weights=None)
    if weights not in (None, "none"):
        load_state_dict_file(weights, net, backbone)
    return net
