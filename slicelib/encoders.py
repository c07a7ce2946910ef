"""2D slice encoders: torchvision classification models by name, and the paper's scratch CNN.

:func:`build_encoder` is what :class:`slicelib.model.SliceModel` calls: it builds the network,
loads its weights through :mod:`slicelib.weights` (ImageNet, a local file, or none), removes
the classifier so the network returns pooled features, and optionally folds the RGB stem to one
grey channel. Shapes: slices ``(N, C, H, W)`` -> features ``(N, F)``.
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn

from slicelib.weights import WeightsError, load_backbone

__all__ = ["SliceCNN", "build_encoder", "fold_rgb_stem", "strip_classifier", "TESTED_BACKBONES"]

TESTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small")
TESTED_BACKBONES += ("efficientnet_b0", "densenet121", "convnext_tiny", "slice_cnn")


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


def fold_rgb_stem(net: nn.Module) -> nn.Module:
    """Fold the first RGB conv into a 1-channel conv (in place), for grey input.

    On a grey image repeated into 3 channels, ``conv(W, [g, g, g]) = conv(sum_c W_c, g)``, so the
    folded net computes the same function on ``(N, 1, H, W)`` input with a third of the stem's
    multiply-adds. Returns ``net``.
    """
    convs = [(p, a, c) for p in net.modules() for a, c in p.named_children()]
    convs = [(p, a, c) for p, a, c in convs if isinstance(c, nn.Conv2d) and c.in_channels == 3]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d with 3 input channels to fold.")
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


def build_encoder(
    backbone: str = "resnet18", weights: str | os.PathLike | None = None, stem: str = "repeat"
) -> tuple[nn.Module, int]:
    """Build a 2D slice encoder: a torchvision classification model without its classifier.

    ``backbone``: a torchvision classification model name, or ``slice_cnn``; ``weights``: see
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
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"Unknown backbone {backbone!r}: use a torchvision classification model name, "
            f"e.g. one of {', '.join(TESTED_BACKBONES)}."
        )
    net = strip_classifier(load_backbone(backbone, weights))
    if stem == "fold":
        fold_rgb_stem(net)
    was_training = net.training
    net.eval()
    with torch.no_grad():  # one dry run to read the feature size
        n_features = net(torch.zeros(1, in_channels, 64, 64)).flatten(1).shape[1]
    net.train(was_training)
    return net, n_features
