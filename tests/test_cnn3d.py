"""Tests of slicelib.cnn3d: the 3D CNN baselines (SFCN-style and MONAI DenseNet121-3D)."""

import dataclasses
import json

import pytest
import torch

from slicelib.cnn3d import (
    DENSENET_MIN_SIZE,
    SFCN,
    VOLUME_BACKBONES,
    VolumeCNN,
    VolumeCNNConfig,
    is_volume_backbone,
)

GRID = (16, 16, 16)  # SFCN: any grid works; five 2x pools take 16 to 1


def _x(b=2, grid=GRID, seed=0):
    return torch.randn(b, 1, *grid, generator=torch.Generator().manual_seed(seed))


def _sfcn(**kw):
    kw = dict(volume_shape=GRID, seed=0) | kw
    return VolumeCNN("sfcn_3d", **kw)


@pytest.mark.parametrize(
    "task, num_classes, shape",
    [("regression", None, (3,)), ("binary", None, (3,)), ("multiclass", 4, (3, 4))],
)
def test_output_shapes_for_the_three_tasks(task, num_classes, shape):
    model = _sfcn(task=task, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(_x(3))
        details = model(_x(3), return_details=True)
    assert out.shape == shape
    assert set(details) == {"output"}
    torch.testing.assert_close(details["output"], out)


def test_sfcn_any_grid_and_raw_module():
    net = SFCN(out_channels=2, channels=(4, 4, 4, 4, 4), last=4).eval()
    assert net(torch.randn(2, 1, 9, 13, 7)).shape == (2, 2)


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = _sfcn(seed=3), _sfcn(seed=3), _sfcn(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.net.out.weight, c.net.out.weight)


def test_from_config_round_trip_through_asdict_and_json():
    model = _sfcn(task="multiclass", num_classes=3, dropout=0.1, seed=7)
    d = json.loads(json.dumps(dataclasses.asdict(model.config)))
    assert d["backbone"] == "sfcn_3d" and d["dropout"] == 0.1 and d["volume_shape"] == list(GRID)
    again = VolumeCNN.from_config(d)
    assert again.config == model.config
    assert VolumeCNN.from_config(model.config).config == model.config  # the dataclass itself
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_default_dropout_is_resolved_into_the_config():
    assert _sfcn().config.dropout == 0.5  # Peng et al.
    assert VolumeCNNConfig().backbone == "sfcn_3d"


def test_regression_output_is_in_target_units():
    x = _x()
    plain = _sfcn().eval()
    scaled = _sfcn(target_mean=50.0, target_std=10.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), 50.0 + 10.0 * plain(x))
    binary = _sfcn(task="binary", target_mean=50.0, target_std=10.0).eval()
    with torch.no_grad():  # classification logits are not rescaled
        torch.testing.assert_close(binary(x), plain(x))
    assert (scaled.target_mean, scaled.target_std, scaled.task) == (50.0, 10.0, "regression")
    assert scaled.volume_shape == GRID


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights="imagenet"), "sfcn_3d"),
        (dict(task="multiclass"), "num_classes"),
        (dict(task="ordinal"), "task"),
        (dict(target_std=0.0), "target_std"),
        (dict(volume_shape=(16, 16)), "volume_shape"),
    ],
)
def test_clear_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sfcn(**kwargs)


def test_unknown_backbone_and_unknown_config_key():
    with pytest.raises(ValueError, match="sfcn_3d"):
        VolumeCNN("resnet18_3d")
    with pytest.raises(ValueError, match="embed_dim"):
        VolumeCNN.from_config(dict(backbone="sfcn_3d", embed_dim=32))


def test_weights_none_spellings_are_accepted():
    for w in (None, "none"):
        assert _sfcn(weights=w).config.weights is None


def test_bad_input_shape_is_explained():
    model = _sfcn()
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        model(torch.randn(2, *GRID))
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        model(torch.randn(2, 3, *GRID))


def test_batch_of_one_in_training_at_a_1x1x1_feature_map_is_explained():
    model = _sfcn().train()
    with pytest.raises(ValueError, match="batch of one"):
        model(_x(1))
    model.eval()
    assert model(_x(1)).shape == (1,)  # eval uses running statistics: fine


def test_is_volume_backbone():
    assert all(is_volume_backbone(b) for b in VOLUME_BACKBONES)
    assert not is_volume_backbone("resnet18") and not is_volume_backbone(None)


def test_state_dict_save_load_round_trip(tmp_path):
    model = _sfcn(target_mean=40.0, target_std=5.0, seed=1)
    model.train()
    with torch.no_grad():
        model(_x(4))  # move BatchNorm running statistics away from their initial values
    model.eval()
    path = tmp_path / "m.pt"
    torch.save({"config": dataclasses.asdict(model.config), "model": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    again = VolumeCNN.from_config(ckpt["config"])
    again.load_state_dict(ckpt["model"])
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(_x()), model(_x()))


def test_one_optimiser_step_reduces_the_loss():
    model = _sfcn(dropout=0.0, target_mean=50.0, target_std=10.0).train()
    x, y = _x(4), torch.tensor([30.0, 45.0, 60.0, 70.0])
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)  # small plain step: first order

    def loss():
        return torch.nn.functional.mse_loss((model(x) - 50.0) / 10.0, (y - 50.0) / 10.0)

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


# --- MONAI DenseNet121-3D (optional dependency) ------------------------------------------------


def test_densenet_grid_minimum_is_checked_before_building():
    shape = (DENSENET_MIN_SIZE - 1, 40, 40)
    with pytest.raises(ValueError, match=f">= {DENSENET_MIN_SIZE}"):
        VolumeCNN("densenet121_3d", volume_shape=shape)
    with pytest.raises(ValueError, match="densenet121_3d"):
        VolumeCNN("densenet121_3d", volume_shape=(32, 32, 32), weights="imagenet")


def test_densenet121_3d_shapes_seed_and_minimum_grid():
    pytest.importorskip("monai")
    n = DENSENET_MIN_SIZE
    a = VolumeCNN("densenet121_3d", task="multiclass", num_classes=3, volume_shape=(n,) * 3, seed=0)
    b = VolumeCNN.from_config(json.loads(json.dumps(dataclasses.asdict(a.config))))
    a.eval(), b.eval()
    x = _x(2, (n,) * 3)
    with torch.no_grad():
        out = a(x)
        torch.testing.assert_close(b(x), out)
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match=f">= {n}"):  # the input is checked too
        a(_x(2, (n - 1, n, n)))
    assert a.train()(x).shape == (2, 3)  # MONAI really reads the minimum grid in training mode
