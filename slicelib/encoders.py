"""2D slice encoders: torchvision or timm classification models by name, and the scratch CNN.

:func:`build_encoder` is what :class:`slicelib.model.SliceModel` calls: it builds the network,
loads its weights through :mod:`slicelib.weights` (ImageNet, a local file, or none), removes
the classifier so the network returns pooled features, and optionally folds the RGB stem to one
grey channel. Shapes: slices ``(N, C, H, W)`` -> features ``(N, F)``.

``backbone="timm:<name>"`` takes any `timm <https://github.com/huggingface/pytorch-image-models>`_
model that returns pooled features (``timm.create_model(name, num_classes=0)``), wrapped in
:class:`TimmEncoder`, which handles what differs from torchvision's models:

- normalisation: slicelib's z-scored slice is the ImageNet-normalised grey level that torchvision's
  models are fed (``pixel = mean_imagenet + std_imagenet * z``); a timm model whose
  ``pretrained_cfg`` has another mean/std (0.5/0.5 for many ViTs, CLIP's constants, ...) gets that
  same picture in its own normalisation, ``(mean_imagenet + std_imagenet * z - mean) / std`` per
  channel (the identity for models trained with ImageNet's constants, which then cost nothing).
- resolution: slices are read at their own size (no resizing). A model whose
  ``pretrained_cfg`` declares a fixed input size (ViTs) is built with ``dynamic_img_size=True``,
  so its position embedding is
  interpolated (bicubic, timm's ``resample_abs_pos_embed``) to the slice's patch grid, and the
  slice is zero-padded (in the model's normalised space, centred) to a multiple of the patch
  size: a 27 x 23 slice and 16-pixel patches give a 2 x 2 grid, a 109 x 91 slice 7 x 6. Any
  model is padded the same way up to its total stride (``feature_info[-1]["reduction"]``, e.g.
  32 for ConvNeXt, whose last stage needs a 32-pixel input) when a slice is smaller. Models whose
  input size is fixed and that have no ``dynamic_img_size`` option (e.g. LeViT, CrossViT, MViTv2) are refused.
- grey input: ``stem="repeat"`` feeds the grey slice as 3 channels, ``stem="fold"`` folds the
  stem conv (``pretrained_cfg["first_conv"]``) as :func:`fold_rgb_stem` does; folding is exact only
  when the model uses ImageNet's mean/std, so other models refuse ``stem="fold"``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from slicelib.weights import WeightsError, load_backbone, load_timm_backbone

__all__ = ["SliceCNN", "build_encoder", "fold_rgb_stem", "strip_classifier", "TESTED_BACKBONES"]
__all__ += ["TimmEncoder", "timm_model_name", "TIMM_PREFIX", "IMAGENET_MEAN", "IMAGENET_STD"]

TESTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small")
TESTED_BACKBONES += ("efficientnet_b0", "densenet121", "convnext_tiny", "slice_cnn")
TESTED_BACKBONES += ("timm:convnext_atto",)

TIMM_PREFIX = "timm:"
# torchvision's ImageNet normalisation: a z-scored slice is read as grey normalised with these
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SliceCNN(nn.Module):
    """The paper's scratch encoder: 5 blocks [Conv3x3, InstanceNorm, MaxPool2, ReLU].

    Channels 32-64-128-256-256, then a 1x1 conv to 32 channels and global average pooling.
    Input ``(N, 1 or 3, H, W)``; output ``(N, 32)``.
    """

    def __init__(self, in_channels: int = 3, channels=(32, 64, 128, 256, 256), out_dim: int = 32):
        super().__init__()
        blocks, c_in = [], in_channels
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.InstanceNorm2d(c_out)]
            blocks += [nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.reduce = nn.Conv2d(c_in, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.features(x))  # (N, 32, h, w)
        return x.mean(dim=(2, 3))  # (N, 32)


def strip_classifier(net: nn.Module) -> nn.Module:
    """Replace a torchvision classifier by the identity, so ``net`` returns pooled features.

    Looks for ``fc`` (ResNet), ``classifier`` (MobileNet, EfficientNet, DenseNet, ConvNeXt),
    ``heads``/``head``; in a Sequential head the first Linear and all after it (and dropout) go.
    """
    for name in ("fc", "classifier", "heads", "head"):
        head = getattr(net, name, None)
        if isinstance(head, (nn.Linear, nn.Sequential)):
            layers = list(head) if isinstance(head, nn.Sequential) else [head]
            first = next((i for i, m in enumerate(layers) if isinstance(m, nn.Linear)), None)
            kept = [m for m in layers[:first] if not isinstance(m, nn.Dropout)]
            setattr(net, name, nn.Sequential(*kept) if kept else nn.Identity())
            return net
    raise ValueError(
        f"Cannot find the classifier of {type(net).__name__} (looked for fc, classifier, heads); "
        "pass a torchvision classification model name such as 'resnet18'."
    )


def fold_rgb_stem(net: nn.Module, conv_name: str | None = None) -> nn.Module:
    """Fold the first RGB conv into a 1-channel conv (in place), for grey input.

    On a grey image repeated into 3 channels, ``conv(W, [g, g, g]) = conv(sum_c W_c, g)``, so the
    folded net computes the same function on ``(N, 1, H, W)`` input with a third of the stem's
    multiply-adds. ``conv_name``: the stem conv's dotted name (e.g. timm's
    ``pretrained_cfg["first_conv"]``); default: the first Conv2d with 3 input channels in module
    order. Returns ``net``.
    """
    convs = [(p, a, c) for p in net.modules() for a, c in p.named_children()]
    convs = [(p, a, c) for p, a, c in convs if isinstance(c, nn.Conv2d) and c.in_channels == 3]
    if conv_name is not None:
        target = net.get_submodule(conv_name)
        convs = [(p, a, c) for p, a, c in convs if c is target]
    if not convs:
        where = f" named {conv_name!r}" if conv_name else ""
        raise ValueError(
            f"{type(net).__name__} has no Conv2d{where} with 3 input channels to fold."
        )
    parent, attr, conv = convs[0]
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    kw.update(bias=conv.bias is not None, padding_mode=conv.padding_mode)
    # skip_init: no random init, so the caller's RNG stream stays unchanged
    folded = nn.utils.skip_init(nn.Conv2d, 1, conv.out_channels, conv.kernel_size, **kw)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias)
    setattr(parent, attr, folded)
    return net


def timm_model_name(backbone: str) -> str | None:
    """The timm model name of ``backbone = "timm:<name>"``; None for any other backbone.

    Raises ValueError for ``"timm:"`` with no name.
    """
    if not isinstance(backbone, str) or not backbone.startswith(TIMM_PREFIX):
        return None
    name = backbone[len(TIMM_PREFIX) :].strip()
    if not name:
        raise ValueError(
            f"backbone {backbone!r} names no timm model: use 'timm:<name>', e.g. "
            "'timm:convnext_atto' (list them with timm.list_models('*convnext*'))."
        )
    return name


class TimmEncoder(nn.Module):
    """A timm model without classifier, fed slicelib's z-scored grey slices (see module docstring).

    ``net``: a timm model returning pooled features; ``mean``/``std``: its input normalisation
    (3 values, timm's ``pretrained_cfg``); ``min_size``: slices smaller than this (pixels) are
    padded up to it; ``multiple``: height and width are padded to a multiple of it (a ViT's patch
    size, else 1). Input ``(N, C, H, W)``, C = 3 (grey repeated) or 1 (folded stem), z-scored;
    output ``(N, F)`` features. The normalisation map is a pair of non-persistent buffers, so the
    state_dict holds only ``net``'s weights (keys ``net.*``).
    """

    def __init__(self, net: nn.Module, mean, std, min_size: int = 1, multiple: int = 1):
        super().__init__()
        self.net = net
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if mean.shape != (3,) or std.shape != (3,) or not bool((std > 0).all()):
            raise ValueError(f"timm mean/std must be 3 values with std > 0, got {mean}, {std}.")
        scale = torch.tensor(IMAGENET_STD) / std  # (3,)
        shift = (torch.tensor(IMAGENET_MEAN) - mean) / std  # (3,)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.identity = bool(torch.allclose(scale, torch.ones(3)) and (shift.abs() < 1e-6).all())
        self.min_size, self.multiple = int(min_size), int(multiple)

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` zero padding in pixels for a ``height x width`` slice."""
        pads = []
        for n in (width, height):
            target = math.ceil(max(n, self.min_size) / self.multiple) * self.multiple
            pads += [(target - n) // 2, target - n - (target - n) // 2]
        return tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.identity:
            if x.shape[1] != 3:
                raise ValueError(
                    f"TimmEncoder needs 3-channel input for its normalisation, got {list(x.shape)}."
                )
            x = x * self.scale + self.shift  # (N, 3, H, W) in the model's normalisation
        pad = self.padding(*x.shape[2:])
        if any(pad):
            x = F.pad(x, pad)  # (N, C, H', W'), zeros: the model's normalised mean colour
        return self.net(x).flatten(1)


def build_timm_encoder(
    name: str, weights: str | os.PathLike | None = None, stem: str = "repeat"
) -> TimmEncoder:
    """The timm model ``name`` as a :class:`TimmEncoder` (pooled features, no classifier).

    ``weights``: ``None``/``"none"`` (random init), ``"imagenet"`` (timm's pretrained weights,
    needs internet or a local copy) or a path (see :func:`slicelib.weights.load_timm_backbone`);
    ``stem``: ``"repeat"`` or ``"fold"``. A model with a fixed input size is built with
    ``dynamic_img_size=True`` (position embeddings interpolated to each slice's patch grid).
    """
    import timm  # heavy: imported only when a timm backbone is asked for

    if not timm.is_model(name):
        raise ValueError(
            f"Unknown timm model {name!r} (backbone 'timm:{name}'): use a name from "
            f"timm.list_models(), e.g. 'timm:convnext_atto'; search with "
            f"timm.list_models('*{name.split('.')[0][:8]}*')."
        )
    cfg = timm.models.get_pretrained_cfg(name)
    kwargs = dict(dynamic_img_size=True) if cfg is not None and cfg.fixed_input_size else {}
    try:
        net = load_timm_backbone(name, weights, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
        raise ValueError(
            f"timm model {name!r} takes a fixed input size {cfg.input_size[1:]} and has no "
            "dynamic_img_size option, but slicelib reads slices at their own size (e.g. 109 x 91). "
            "Use a ConvNet (timm:convnext_atto, timm:efficientnetv2_rw_t, ...) or a ViT "
            "(timm:vit_small_patch14_dinov2.lvd142m, ...)."
        ) from err
    mean, std = net.pretrained_cfg.get("mean"), net.pretrained_cfg.get("std")
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
    multiple = max(patch) if isinstance(patch, (tuple, list)) else int(patch or 1)
    info = getattr(net, "feature_info", None)
    reduction = info[-1].get("reduction", 1) if isinstance(info, list) and info else 1
    encoder = TimmEncoder(net, mean, std, min_size=max(reduction, multiple), multiple=multiple)
    if stem == "fold":
        if not encoder.identity:
            raise ValueError(
                f"stem='fold' needs a model normalised with ImageNet's mean/std; timm's {name} "
                f"uses mean {tuple(mean)}, std {tuple(std)}, which a folded stem cannot reproduce "
                "exactly at padded borders. Use stem='repeat'."
            )
        first = net.pretrained_cfg.get("first_conv")
        fold_rgb_stem(net, first if isinstance(first, str) else None)
    return encoder


def build_encoder(
    backbone: str = "resnet18", weights: str | os.PathLike | None = None, stem: str = "repeat"
) -> tuple[nn.Module, int]:
    """Build a 2D slice encoder: a torchvision or timm classification model without classifier.

    ``backbone``: a torchvision classification model name, ``"timm:<name>"`` for a timm model
    (:func:`build_timm_encoder`), or ``slice_cnn``; ``weights``: see
    :mod:`slicelib.weights`; ``stem``: ``"repeat"`` (grey repeated to RGB) or ``"fold"``
    (:func:`fold_rgb_stem`). Returns ``(encoder, F)``: the encoder maps ``(N, C, H, W)`` slices
    (C = 3 for ``repeat``, 1 for ``fold``) to ``(N, F)`` pooled features.
    """
    if stem not in ("repeat", "fold"):
        raise ValueError(f"stem must be 'repeat' or 'fold', got {stem!r}.")
    in_channels = 1 if stem == "fold" else 3
    if backbone == "slice_cnn":
        if weights not in (None, "none"):
            raise WeightsError("slice_cnn is the paper's scratch encoder: it has no weights.")
        return SliceCNN(in_channels=in_channels), 32
    name = timm_model_name(backbone)
    if name is not None:
        net = build_timm_encoder(name, weights, stem)
    elif backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"Unknown backbone {backbone!r}: use a torchvision classification model name or "
            f"'timm:<name>', e.g. one of {', '.join(TESTED_BACKBONES)}."
        )
    else:
        net = strip_classifier(load_backbone(backbone, weights))
        if stem == "fold":
            fold_rgb_stem(net)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():  # one dry run to read the feature size
            n_features = net(torch.zeros(1, in_channels, 64, 64)).flatten(1).shape[1]
    except Exception as err:  # noqa: BLE001 - re-raised with the backbone named
        raise ValueError(
            f"Backbone {backbone!r} could not encode a 64 x 64 slice ({type(err).__name__}: "
            f"{err}); it does not return pooled features of 2D images. Pick another model."
        ) from err
    net.train(was_training)
    return net, n_features
