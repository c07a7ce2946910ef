"""benchmarks/shift_probe.py's slice upsampling: the encoder reads each slice resized."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shift_probe  # noqa: E402  (benchmarks/shift_probe.py)

from slicelib.model import SliceModel  # noqa: E402


def test_upsampled_encoder_reads_each_slice_twice_as_large():
    model = SliceModel("mobilenet_v2", weights=None, seed=0).eval()
    images = torch.randn(3, 1, 20, 24)  # (N, 1, H, W)
    with torch.no_grad():
        direct = model.encode_images(F.interpolate(images, scale_factor=2, mode="bilinear"))
        shift_probe.upsampled(model, 2)
        via = model.encode_images(images)  # (N, F)
    torch.testing.assert_close(via, direct)
    assert shift_probe.upsampled(model, 1) is model  # scale 1: unchanged
