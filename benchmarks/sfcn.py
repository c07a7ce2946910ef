"""An SFCN-style 3D CNN (Peng et al., Medical Image Analysis 2021), the lightweight 3D brain-age baseline.

Five blocks [Conv3d 3x3x3, BatchNorm, MaxPool 2, ReLU] with 32-64-128-256-256 channels, one block
[Conv3d 1x1x1 to 64, BatchNorm, ReLU], global average pooling, dropout 0.5 and a 1x1x1 conv to the
output. Peng et al. use 160x192x160 1 mm input and 40 soft age bins; here the output is one value
(regression, like the other benchmarked models) and the pooling is adaptive, so any grid works.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SFCN"]


class SFCN(nn.Module):
    """SFCN-style 3D CNN: input ``(B, 1, X, Y, Z)`` -> output ``(B, out_channels)``.

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
        channels=(32, 64, 128, 256, 256),
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
        """``x`` (B, 1, X, Y, Z) -> (B, out_channels)."""
        h = self.pool(self.features(x))  # (B, last, 1, 1, 1)
        return self.out(self.dropout(h)).flatten(1)  # (B, out_channels)
