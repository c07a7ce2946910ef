"""Each speed option of benchmarks/fast.py gives the plain model's outputs (within a tolerance).

The options that live in SliceModel itself (folded stem, channels_last, chunking and activation
checkpointing) are tested against the plain model in test_model.py; here only the wrapper's own
code paths (constant-slice skipping, its chunked/checkpointed/autocast encoding, the switch to
the model's channels_last).
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fast import (  # noqa: E402
    FastSliceModel,
    autocast,
    compile_encoder,
    constant_slices,
    max_abs_diff,
    to_channels_last,
)

from slicelib.model import SliceModel  # noqa: E402

SHAPE = (20, 24, 18)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads spin against other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _volume(batch: int = 2) -> torch.Tensor:
    """(B, 1, 20, 24, 18): a noisy 'head' in a constant background, as after z-scoring."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((batch, 1, *SHAPE), -1.2)
    x[:, :, 4:16, 5:20, 3:15] = torch.randn(batch, 1, 12, 15, 12, generator=g)
    return x


def _model(**kw) -> SliceModel:
    kw.setdefault("axes", ("sagittal", "axial"))
    return SliceModel("resnet18", volume_shape=SHAPE, seed=0, **kw).eval()


def test_constant_slices_finds_background():
    images = torch.randn(5, 1, 4, 4)
    images[1] = 2.0
    images[3] = -1.0
    images[4] = 2.0
    is_constant, values, which = constant_slices(images)
    assert is_constant.tolist() == [False, True, False, True, True]
    assert values.tolist() == [-1.0, 2.0]
    assert which.tolist() == [1, 0, 1]


def test_skip_constant_equals_plain_in_eval():
    model, x = _model(), _volume()
    fast = FastSliceModel(model, skip_constant=True)
    with torch.no_grad():
        ref = model(x, return_details=True)
        got = fast(x, return_details=True)
    # 8 + 6 background slices per volume on the two axes, minus one encoded per axis
    assert fast.last_skipped == 2 * (8 + 6) - 2
    assert max_abs_diff(ref, got) < 1e-4


def test_skip_constant_is_off_with_batchnorm_training_and_on_when_frozen():
    x = _volume()
    model = _model().train()
    fast = FastSliceModel(model, skip_constant=True)
    torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)
    assert fast.last_skipped == 0  # batch statistics see every slice: no skipping

    frozen = _model(freeze_batchnorm=True).train()
    fast = FastSliceModel(frozen, skip_constant=True)
    out = fast(x)
    assert fast.last_skipped > 0
    out.sum().backward()
    grads = [p.grad.clone() for p in frozen.parameters() if p.grad is not None]
    frozen.zero_grad()
    ref = frozen(x)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for g, p in zip(grads, [p for p in frozen.parameters() if p.grad is not None]):
        torch.testing.assert_close(g, p.grad, atol=1e-3, rtol=1e-3)


def test_channels_last_equals_plain():
    model, x = _model(), _volume()
    with torch.no_grad():
        ref = model(x)
        got = FastSliceModel(model, skip_constant=False, channels_last=True)(x)
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert max_abs_diff(ref, got) < 1e-4


def test_chunked_and_checkpointed_encoding_equal_plain():
    x = _volume()
    with torch.no_grad():
        ref = _model()(x)
        got = FastSliceModel(_model(slice_chunk=7), skip_constant=True)(x)
    assert max_abs_diff(ref, got) < 1e-4
    model = _model(slice_chunk=7, checkpoint_activations=True, freeze_batchnorm=True).train()
    torch.testing.assert_close(FastSliceModel(model)(x), ref, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_close_to_fp32():
    model, x = _model(), _volume()
    with torch.no_grad():
        ref = model(x, return_details=True)
        got = FastSliceModel(model, autocast_dtype=torch.bfloat16)(x, return_details=True)
        with autocast("cpu"):
            whole = model(x)
    assert got["output"].dtype == torch.float32
    assert max_abs_diff(ref["slice_embeddings"], got["slice_embeddings"]) < 0.15
    assert max_abs_diff(ref["output"], whole) < 0.1


def test_to_channels_last_3d_cnn():
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1)).eval()
    x = torch.randn(1, 1, 8, 9, 7)
    with torch.no_grad():
        ref = net(x)
        to_channels_last(net)
        got = net(x.contiguous(memory_format=torch.channels_last_3d))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert max_abs_diff(ref, got) < 1e-5


@pytest.mark.slow
def test_compile_encoder_equals_plain():
    model, x = _model(axes="sagittal"), _volume(1)
    with torch.no_grad():
        ref = model(x)
        keys = list(model.state_dict())
        compile_encoder(model)
        got = model(x)
    assert list(model.state_dict()) == keys
    assert max_abs_diff(ref, got) < 1e-4
