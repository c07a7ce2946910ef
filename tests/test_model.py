"""SliceModel: shapes, order (in)variance, norm/position split, config, weights, stem, chunking."""

import dataclasses
import itertools
import json
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from slicelib.encoders import build_encoder
from slicelib.model import AXES, ModelConfig, SliceModel, WeightsError

SHAPE = (20, 22, 20)  # a tiny (X, Y, Z) grid keeps the combination test fast
FACTORS = dict(
    axes=["sagittal", "coronal", "axial", ("sagittal", "coronal", "axial")],
    position=["learned", "sinusoidal", "none"],
    norm=["set", "slice", "none"],
    pooling=["mean", "max", "attention", "gated_attention"],
    task=["regression", "binary", "multiclass"],
)


def pairwise(factors: dict) -> list[dict]:
    """A covering array of strength 2: rows in which every pair of values of every two factors
    appears at least once. Greedy over the full product (deterministic): each new row is the
    first one that covers the most pairs not covered yet."""
    rows = list(itertools.product(*factors.values()))

    def pairs(row):
        return set(itertools.combinations(enumerate(row), 2))  # ((i, v_i), (j, v_j)), i < j

    todo, design = set().union(*map(pairs, rows)), []
    while todo:
        best = max(rows, key=lambda r: len(pairs(r) & todo))
        design.append(dict(zip(factors, best)))
        todo -= pairs(best)
    return design


DESIGN = pairwise(FACTORS)


def tiny(**kw):
    kw = {"volume_shape": SHAPE, "seed": 0, **kw}
    return SliceModel(kw.pop("backbone", "slice_cnn"), **kw)


def test_pairwise_design_covers_every_pair_with_few_rows():
    names = list(FACTORS)
    for a, b in itertools.combinations(names, 2):
        seen = {(row[a], row[b]) for row in DESIGN}
        assert seen == set(itertools.product(FACTORS[a], FACTORS[b])), (a, b)
    assert len(DESIGN) <= 24 < len(list(itertools.product(*FACTORS.values())))


@pytest.mark.parametrize("combo", DESIGN, ids=lambda c: "-".join(map(str, c.values())))
def test_output_shapes_pairwise(combo):
    model = tiny(num_classes=3, embed_dim=8, **combo).eval()
    x = torch.randn(2, 1, *SHAPE)
    with torch.no_grad():
        d = model(x, return_details=True)
    axes = combo["axes"]
    n_slices = sum(SHAPE[AXES[a]] for a in ([axes] if isinstance(axes, str) else axes))
    assert d["output"].shape == ((2, 3) if combo["task"] == "multiclass" else (2,))
    assert d["slice_embeddings"].shape == (2, n_slices, 8)
    assert d["slice_weights"].shape == (2, n_slices)
    assert torch.allclose(d["slice_weights"].sum(1), torch.ones(2), atol=1e-5)
    assert d["slice_index"].shape == d["slice_axis"].shape == (n_slices,)
    assert torch.isfinite(d["output"]).all()


@pytest.mark.parametrize(
    "backbone",
    [
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "densenet121",
        "convnext_tiny",
    ],
)
def test_torchvision_backbones(backbone):
    model = SliceModel(backbone, volume_shape=(3, 32, 32), seed=0).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, 3, 32, 32))
    assert y.shape == (2,) and torch.isfinite(y).all()


@pytest.mark.parametrize("pooling", ["mean", "max", "attention", "gated_attention"])
def test_no_position_is_invariant_to_slice_order_and_position_is_not(pooling):
    x = torch.randn(2, 1, *SHAPE, generator=torch.Generator().manual_seed(0))  # deterministic
    perm = torch.randperm(SHAPE[0], generator=torch.Generator().manual_seed(1))
    shuffled = x[:, :, perm]
    with torch.no_grad():
        for norm in ("slice", "none"):
            free = tiny(position="none", norm=norm, pooling=pooling).eval()
            torch.testing.assert_close(free(x), free(shuffled), rtol=1e-4, atol=1e-5)
        for position in ("learned", "sinusoidal"):
            placed = tiny(position=position, norm="slice", pooling=pooling).eval()
            assert not torch.allclose(placed(x), placed(shuffled), atol=1e-4)
        # the set norm's per-slice affine parameters are a position code of their own
        coded = tiny(position="none", norm="set", pooling=pooling).eval()
        coded.norm.weight.normal_(1.0, 0.5, generator=torch.Generator().manual_seed(2))
        assert not torch.allclose(coded(x), coded(shuffled), atol=1e-4)


def test_norm_is_its_own_choice_and_position_changes_only_the_position_code():
    S, D = SHAPE[0], 8
    expected = {"set": [(S, D), (S, D)], "slice": [(D,), (D,)], "none": []}
    for norm, shapes in expected.items():
        models = {p: tiny(position=p, norm=norm, embed_dim=D) for p in ("learned", "sinusoidal")}
        models["none"] = tiny(position=None, norm=norm, embed_dim=D)
        for position, model in models.items():
            assert model.position == position and model.config.norm == norm
            assert [tuple(p.shape) for p in model.norm.parameters()] == shapes, (position, norm)
            assert type(model.norm) is type(models["learned"].norm)
        # the position parameters do not depend on the norm either
        assert [k for k in models["learned"].state_dict() if k.startswith("pos.")] == [
            "pos.sagittal.table"
        ]
        assert not any(k.startswith("pos.") for k in models["sinusoidal"].state_dict())


def test_paper_combination_is_the_old_learned_default():
    """learned + set + mean, resnet18, D = 32: the defaults, and what old checkpoints hold."""
    default = ModelConfig()
    assert (default.backbone, default.embed_dim, default.position) == ("resnet18", 32, "learned")
    assert (default.norm, default.pooling, default.stem) == ("set", "mean", "repeat")
    old_config = {k: v for k, v in dataclasses.asdict(ModelConfig(seed=3)).items() if k != "norm"}
    old = SliceModel.from_config({**old_config, "volume_shape": SHAPE})
    new = SliceModel(volume_shape=SHAPE, seed=3)
    a, b = old.state_dict(), new.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert tuple(b["norm.weight"].shape) == (SHAPE[0], 32)  # LayerNorm over the (S, D) set


@pytest.mark.parametrize(
    "position,norm,layer",
    [("learned", "set", nn.LayerNorm), ("sinusoidal", "slice", nn.LayerNorm)]
    + [(None, "none", nn.Identity), ("none", "none", nn.Identity)],
)
def test_old_configs_without_norm_keep_their_normalisation(position, norm, layer):
    old = {"backbone": "slice_cnn", "position": position, "volume_shape": list(SHAPE)}
    model = SliceModel.from_config(old)
    assert model.config.norm == norm and isinstance(model.norm, layer)
    assert model.position == (position or "none")


def test_config_round_trip_and_seed_rebuild_the_same_model():
    a = tiny(backbone="resnet18", axes="sagittal,axial", pooling="attention", target_mean=50.0)
    b = tiny(backbone="resnet18", axes=["sagittal", "axial"], pooling="attention", target_mean=50.0)
    assert a.config == b.config and a.config.axes == ["sagittal", "axial"]
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    saved = json.loads(json.dumps(dataclasses.asdict(a.config)))  # as in a checkpoint
    assert ModelConfig.from_dict(saved) == a.config
    for config in (saved, a.config):
        rebuilt = SliceModel.from_config(config)
        assert rebuilt.config == a.config
        rebuilt.load_state_dict(a.state_dict())
        x = torch.randn(1, 1, *SHAPE)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(x), a.eval()(x))
    # regression outputs start near the mean and move on the target's scale
    with torch.no_grad():
        y = tiny(target_mean=50.0, target_std=15.0, seed=1).eval()(x).item()
        z = tiny(target_mean=50.0, seed=1).eval()(x).item()
    assert abs(y - 50.0) < 15.0 and abs((y - 50.0) - 15.0 * (z - 50.0)) < 1e-3


def test_fixed_slice_counts_are_explained():
    other = torch.randn(1, 1, 9, 22, 20)  # 9 sagittal slices instead of 20
    with pytest.raises(ValueError, match=r"position='learned'.*built for 20 sagittal.*has 9"):
        tiny(position="learned", norm="slice")(other)
    with pytest.raises(ValueError, match=r"\(norm='set'\) was built for 20 sagittal"):
        tiny(position="sinusoidal", norm="set")(other)
    for norm in ("slice", "none"):
        assert tiny(position="sinusoidal", norm=norm).eval()(other).shape == (1,)
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        tiny(position="none", norm="none")(torch.randn(1, 20, 22, 20))


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet19'"):
        SliceModel("resnet19")
    with pytest.raises(ValueError, match="axes must be"):
        tiny(axes="transverse")
    with pytest.raises(ValueError, match="num_classes"):
        tiny(task="multiclass")
    with pytest.raises(ValueError, match=r"norm must be one of \('set', 'slice', 'none'\)"):
        tiny(norm="batch")
    with pytest.raises(ValueError, match="position must be one of"):
        tiny(position="rotary")


# --- weights (slicelib.weights), stems, memory layouts, chunking ------------------------------


def test_local_weights_match_torchvision(mobilenet_weights):
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    ref.classifier = nn.Identity()  # the pooled 1280-d features
    encoder, n_features = build_encoder("mobilenet_v2", mobilenet_weights)
    model = SliceModel("mobilenet_v2", mobilenet_weights, volume_shape=(4, 40, 36)).eval()
    ref.eval(), encoder.eval()
    x = torch.randn(4, 3, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), ref(x))
        grey = torch.randn(4, 1, 40, 36)
        torch.testing.assert_close(model.encode_images(grey), ref(grey.expand(-1, 3, -1, -1)))
    assert n_features == 1280


def test_wrong_weights_file_is_explained(tmp_path, mobilenet_weights):
    with pytest.raises(WeightsError, match=r"missing keys.*unexpected keys.*backbone"):
        SliceModel("resnet18", mobilenet_weights)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        SliceModel("mobilenet_v2", garbage)
    with pytest.raises(WeightsError, match="does not exist"):
        SliceModel("mobilenet_v2", tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="no weights"):
        SliceModel("slice_cnn", "imagenet")


def test_imagenet_without_network_explains_offline_options(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SLICELIB_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError) as err:
        SliceModel("resnet18", "imagenet")
    message = str(err.value)
    assert "resnet18" in message and str(tmp_path) in message  # where the cache is
    assert "weights='/path/to/resnet18.pth'" in message and "TORCH_HOME" in message


def test_imagenet_from_local_weights_dir(monkeypatch, mobilenet_weights):
    monkeypatch.setenv("SLICELIB_WEIGHTS_DIR", str(mobilenet_weights.parent))
    a = SliceModel("mobilenet_v2", "imagenet", volume_shape=(2, 32, 32)).eval()
    b = SliceModel("mobilenet_v2", mobilenet_weights, volume_shape=(2, 32, 32)).eval()
    for p, q in zip(a.encoder.parameters(), b.encoder.parameters()):
        assert torch.equal(p, q)


def test_folded_stem_equals_repeated_rgb_stem(mobilenet_weights):
    x = torch.randn(2, 1, 4, 40, 36)
    for backbone, weights in [("mobilenet_v2", mobilenet_weights), ("resnet18", None)]:
        kw = dict(volume_shape=(4, 40, 36), seed=3)
        rgb = SliceModel(backbone, weights, stem="repeat", **kw).eval()
        grey = SliceModel(backbone, weights, stem="fold", **kw).eval()
        first = next(m for m in grey.encoder.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == 1
        with torch.no_grad():
            torch.testing.assert_close(grey(x), rgb(x), rtol=1e-4, atol=1e-4)


def test_channels_last_model_equals_plain_and_shares_checkpoints(mobilenet_weights):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 27, 23)
    kw = dict(volume_shape=(6, 27, 23), seed=1, stem="fold")
    plain = SliceModel("mobilenet_v2", mobilenet_weights, **kw).eval()
    fast = SliceModel("mobilenet_v2", mobilenet_weights, channels_last=True, **kw).eval()
    conv = next(m for m in fast.encoder.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
    # the same parameters: checkpoints move between the two layouts, and the flag is in the config
    rebuilt = SliceModel.from_config(fast.config)
    assert rebuilt.channels_last and fast.config.channels_last is True
    rebuilt.load_state_dict(plain.state_dict())
    assert next(
        m for m in rebuilt.encoder.modules() if isinstance(m, nn.Conv2d)
    ).weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), plain(x), rtol=1e-4, atol=1e-4)
    # training mode (BatchNorm on batch statistics): all gradients, as one vector, within 5 % of
    # a float64 reference (NHWC kernels reduce in another order: ~1 % here, NCHW ~0.05 %)
    ref = SliceModel("mobilenet_v2", mobilenet_weights, **kw).double().train()
    fast.train()
    ref(x.double()).sum().backward()
    fast(x).sum().backward()
    got = torch.cat([p.grad.double().flatten() for p in fast.parameters() if p.grad is not None])
    want = torch.cat([p.grad.flatten() for p in ref.parameters() if p.grad is not None])
    assert ((got - want).norm() / want.norm()).item() < 0.05


def test_chunked_equals_unchunked():
    x = torch.randn(2, 1, 6, 32, 32)
    kw = dict(volume_shape=(6, 32, 32), seed=0, pooling="attention")
    whole = SliceModel("resnet18", **kw).eval()
    chunked = SliceModel("resnet18", slice_chunk=5, **kw).eval()
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), whole(x))
    # training mode with frozen BatchNorm and activation checkpointing: same loss, same gradients
    ckpt = SliceModel(
        "resnet18", slice_chunk=4, checkpoint_activations=True, freeze_batchnorm=True, **kw
    )
    plain = SliceModel("resnet18", freeze_batchnorm=True, **kw)
    ckpt.train(), plain.train()
    ckpt(x).sum().backward()
    plain(x).sum().backward()
    for (name, a), b in zip(ckpt.named_parameters(), plain.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
