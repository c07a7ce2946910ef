"""Pretrained weights for the 2D slice encoders, described apart from the model code.

As in torchvision's ``models/resnet.py``, the model (:mod:`slicelib.model`) says what the network
is and this module says where its weights come from:

- ``"imagenet"``: torchvision's default ImageNet weights through its weights API and download
  cache (``torch.hub.get_dir()``); ``$SLICELIB_WEIGHTS_DIR/<backbone>_imagenet1k.pth`` is used
  first when that variable is set (offline machines, the course's shared folder).
- a path: a local torchvision ``state_dict`` of the backbone, read with ``weights_only=True``
  (no code is unpickled) and loaded strictly.
- ``None`` or ``"none"``: random initialisation.

For a timm backbone (``backbone="timm:<name>"``, :func:`load_timm_backbone`):

- ``"imagenet"``: timm's pretrained weights of ``<name>`` (its default tag, or the one in the
  name, e.g. ``vit_small_patch14_dinov2.lvd142m``), downloaded by timm from the Hugging Face hub
  (or the model's URL) into the Hugging Face cache; ``$SLICELIB_WEIGHTS_DIR/timm_<name>.safetensors``
  (or ``.pth``) is used first when that variable is set.
- a path: a timm ``state_dict`` of the model as ``.safetensors`` (the hub's ``model.safetensors``)
  or a PyTorch file (``torch.save(model.state_dict(), path)``), with or without the classifier;
  loaded strictly (every other key must fit).
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
    "read_state_dict",
    "load_timm_backbone",
    "timm_offline_help",
    "timm_weights_file",
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


def read_state_dict(path: str | os.PathLike, backbone: str, maker: str) -> dict:
    """Read the state_dict file ``path``: ``.safetensors``, else PyTorch (``weights_only=True``).

    ``backbone`` and ``maker`` (the expression that builds the model, e.g.
    ``"torchvision.models.resnet18()"``) only word the errors. Returns ``{key: tensor}`` on the
    CPU. Raises :class:`WeightsError` naming the file when it is absent, unreadable or not a
    plain dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist (backbone {backbone}).")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # ships with timm

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch"
        raise WeightsError(
            f"Could not read weights file {path} as a {kind} state_dict ({err}). "
            f"Expected torch.save({maker}.state_dict(), path)."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path} is not a plain state_dict (a dict of tensors); for backbone {backbone} save "
            "it with torch.save(model.state_dict(), path)."
        )
    return state


def load_state_dict_file(path: str | os.PathLike, net: nn.Module, backbone: str) -> None:
    """Load the torchvision state_dict file ``path`` into ``net`` (in place), strictly.

    Raises :class:`WeightsError` naming the file when it is absent, unreadable, not a plain
    dict of tensors, or made for another architecture (missing/unexpected keys, shapes).
    """
    path = Path(path)
    state = read_state_dict(path, backbone, f"torchvision.models.{backbone}()")
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


# -----------------------------------------------------------------------------
# timm backbones


def timm_weights_file(name: str) -> Path | None:
    """``$SLICELIB_WEIGHTS_DIR/timm_<name>.safetensors`` (or ``.pth``) if set and present, else None."""
    local_dir = os.environ.get("SLICELIB_WEIGHTS_DIR")
    if local_dir:
        for suffix in (".safetensors", ".pth"):
            path = Path(local_dir) / f"timm_{name}{suffix}"
            if path.is_file():
                return path
    return None


def timm_offline_help(name: str, hub_id: str | None = None) -> str:
    """The three ways to get timm's pretrained weights of ``name`` without internet, as text."""
    from huggingface_hub import constants  # ships with timm

    source = f" (the model.safetensors of https://huggingface.co/{hub_id})" if hub_id else ""
    return (
        "To work offline, either\n"
        f"  (1) pass weights='/path/to/{name}.safetensors' (or .pth): a state_dict of timm's "
        f"{name}{source}, or\n"
        f"  (2) set SLICELIB_WEIGHTS_DIR to a folder holding timm_{name}.safetensors "
        "(or .pth), or\n"
        f"  (3) copy the Hugging Face cache {constants.HF_HUB_CACHE} from a machine with "
        "internet (set HF_HOME to move it) and set HF_HUB_OFFLINE=1."
    )


def _timm_pretrained(name: str, **model_kwargs) -> nn.Module:
    """timm's ``name`` with its pretrained weights from the hub/URL (no classifier)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    where = hub_id and f"https://huggingface.co/{hub_id}" or getattr(cfg, "url", None)
    if cfg is None or not (where or cfg.file):
        raise WeightsError(
            f"timm has no pretrained weights for {name!r}; pass weights=None (random init), a "
            f"local state_dict file, or a name with weights (timm.list_pretrained('{name}*'))."
        )
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **model_kwargs)
    except TypeError:
        raise  # a model argument it does not take: not a download problem
    except Exception as err:  # OSError, hub errors (LocalEntryNotFoundError), URLError, HTTP ...
        raise WeightsError(
            f"Could not get timm's pretrained weights of {name} from {where}: "
            f"{type(err).__name__}: {err}\n"
            "timm downloads them into the Hugging Face cache; that needs internet.\n"
            + timm_offline_help(name, hub_id)
        ) from err


def load_timm_backbone(
    name: str, weights: str | os.PathLike | None = None, **model_kwargs
) -> nn.Module:
    """timm's model ``name`` without classifier (``num_classes=0``: it returns pooled features).

    ``weights``: ``"imagenet"`` (timm's pretrained weights; a local copy first, see the module
    docstring), ``None``/``"none"`` (random init from the current RNG) or a path to a
    ``.safetensors``/PyTorch state_dict of the model, with or without its classifier, loaded
    strictly. ``model_kwargs`` go to ``timm.create_model`` (e.g. ``dynamic_img_size=True``).
    """
    import timm  # heavy: imported only when a timm backbone is asked for

    if weights == "imagenet":
        weights = timm_weights_file(name)
        if weights is None:
            return _timm_pretrained(name, **model_kwargs)
    net = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
    if weights in (None, "none"):
        return net
    state = read_state_dict(weights, f"timm:{name}", f"timm.create_model('{name}')")
    expected = net.state_dict()
    classifier = net.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    # the classifier of a full checkpoint (e.g. the hub's model.safetensors) is not used
    head = [
        k for k in state if k not in expected and k.startswith(tuple(c + "." for c in classifier))
    ]
    state = {k: v for k, v in state.items() if k not in head}
    mismatch = state_dict_mismatch(expected, state, ("file", f"timm {name}"))
    if mismatch:
        raise WeightsError(
            f"Weights file {weights} does not fit timm's {name}: {mismatch}. "
            f"Pass the timm model the file was saved from (backbone='timm:<name>'), saved with "
            "torch.save(model.state_dict(), path) or safetensors' save_file."
        )
    net.load_state_dict(state, strict=True)
    return net
