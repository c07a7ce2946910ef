"""timm encoders as slice encoders: backbone="timm:<name>" (small random-initialised models, offline).

convnext_atto (3.4 M parameters, ImageNet mean/std, total stride 32) and timm's test_vit (0.3 M
parameters, 16-pixel patches, 160 x 160 position grid, mean = std = 0.5) stand for timm's ConvNets
and ViTs. Nothing here touches the network: the pretrained download is replaced by one that fails.
"""

import json
import time

import pytest
import torch
from tiny_data import make_table

from slicelib.cli import main
from slicelib.encoders import IMAGENET_MEAN, IMAGENET_STD, TimmEncoder, timm_model_name
from slicelib.model import SliceModel
from slicelib.runs import load_run
from slicelib.weights import WeightsError

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch):
    """timm's Hugging Face download fails as it does without internet; returns the call log."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def no_internet(*args, **kwargs):
        calls.append(kwargs.get("repo_id", args[0] if args else None))
        raise LocalEntryNotFoundError("no internet in this test (name resolution failed)")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_internet)
    monkeypatch.delenv("SLICELIB_WEIGHTS_DIR", raising=False)
    return calls


def test_timm_backbone_names_are_parsed():
    assert timm_model_name("timm:convnext_atto") == "convnext_atto"
    assert timm_model_name("timm:vit_small_patch14_dinov2.lvd142m") == (
        "vit_small_patch14_dinov2.lvd142m"
    )
    assert timm_model_name("resnet18") is None
    with pytest.raises(ValueError, match="names no timm model"):
        timm_model_name("timm:")
    with pytest.raises(ValueError, match="Unknown timm model 'no_such_net'"):
        SliceModel("timm:no_such_net", volume_shape=(16, 20, 16))


def test_convnext_atto_reads_slices_smaller_than_its_stride():
    # 20 x 16 and 16 x 16 slices: ConvNeXt's last stage needs 32 pixels, so they are padded to 32
    model = SliceModel("timm:convnext_atto", weights=None, volume_shape=(16, 20, 16), seed=0)
    model.train()
    assert isinstance(model.encoder, TimmEncoder) and model.encoder.identity
    assert model.encoder.padding(20, 16) == (8, 8, 6, 6)
    x = torch.randn(2, 1, 16, 20, 16, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2,) and torch.isfinite(out).all()
    out.sum().backward()
    stem = model.encoder.net.stem[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert model.project.in_features == model.encoder.net.num_features == 320


def test_vit_on_slices_smaller_than_its_patch_grid():
    # 10 x 9 sagittal and 12 x 10 axial slices, 16-pixel patches: one patch each, the 10 x 10
    # position grid of test_vit interpolated to 1 x 1
    model = SliceModel(
        "timm:test_vit", weights=None, volume_shape=(12, 10, 9), axes="sagittal,axial", seed=0
    )
    vit = model.encoder.net
    assert vit.dynamic_img_size and vit.pos_embed.shape[1] == 1 + 10 * 10
    assert (model.encoder.min_size, model.encoder.multiple) == (16, 16)
    x = torch.randn(3, 1, 12, 10, 9, generator=torch.Generator().manual_seed(1))
    details = model(x, return_details=True)
    assert details["output"].shape == (3,) and torch.isfinite(details["output"]).all()
    assert details["slice_embeddings"].shape == (3, 12 + 9, 32)
    # the MRI slices of the issue: padded to a multiple of 16, centred
    assert model.encoder.padding(27, 23) == (4, 5, 2, 3)  # (left, right, top, bottom)
    assert model.encoder.padding(109, 91) == (2, 3, 1, 2)  # 112 x 96: a 7 x 6 patch grid
    with torch.no_grad():
        feats = model.encoder(torch.randn(2, 3, 27, 23))
    assert feats.shape == (2, vit.num_features)


def test_timm_normalisation_comes_from_the_model_config():
    model = SliceModel("timm:test_vit", weights=None, volume_shape=(12, 10, 9), seed=0).eval()
    enc = model.encoder
    cfg = timm.models.get_pretrained_cfg("test_vit")
    assert enc.net.pretrained_cfg["mean"] == cfg.mean and enc.net.pretrained_cfg["std"] == cfg.std
    mean, std = torch.tensor(cfg.mean), torch.tensor(cfg.std)
    assert not enc.identity  # test_vit is normalised with 0.5 / 0.5, not ImageNet's constants
    # a z-scored slice is ImageNet-normalised grey: the ViT gets the same pixels in its own units
    z = torch.randn(2, 1, 16, 32, generator=torch.Generator().manual_seed(2)).expand(-1, 3, -1, -1)
    pixels = (
        torch.tensor(IMAGENET_MEAN)[:, None, None] + torch.tensor(IMAGENET_STD)[:, None, None] * z
    )
    expected_input = (pixels - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        assert torch.allclose(enc(z), enc.net(expected_input), atol=1e-5)
    convnext = SliceModel("timm:convnext_atto", volume_shape=(16, 20, 16), seed=0).encoder
    assert convnext.identity  # ImageNet's mean/std: the slice goes in unchanged


def test_fold_stem_matches_repeat_and_is_refused_where_inexact():
    kw = dict(weights=None, volume_shape=(16, 20, 16), seed=3)
    repeat = SliceModel("timm:convnext_atto", stem="repeat", **kw).eval()
    fold = SliceModel("timm:convnext_atto", stem="fold", **kw).eval()
    assert fold.encoder.net.stem[0].in_channels == 1
    x = torch.randn(2, 1, 16, 20, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(repeat(x), fold(x), atol=1e-4)
    with pytest.raises(ValueError, match="stem='fold' needs a model normalised with ImageNet"):
        SliceModel("timm:test_vit", stem="fold", volume_shape=(12, 10, 9))


def test_fixed_size_models_without_dynamic_size_are_refused():
    with pytest.raises(ValueError, match="fixed input size .* no dynamic_img_size option"):
        SliceModel("timm:levit_128s", volume_shape=(16, 20, 16))


def test_imagenet_weights_offline_say_how_to_use_a_local_file(offline):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        SliceModel("timm:test_vit", weights="imagenet", volume_shape=(12, 10, 9))
    assert time.perf_counter() - start < 10
    assert offline and offline[0] == "timm/test_vit.r160_in1k"  # timm's real loader was used
    text = str(err.value)
    assert "https://huggingface.co/timm/test_vit.r160_in1k" in text
    assert "weights='/path/to/test_vit.safetensors'" in text
    assert "SLICELIB_WEIGHTS_DIR" in text and "timm_test_vit.safetensors" in text
    assert "HF_HUB_OFFLINE=1" in text


def test_imagenet_weights_go_through_timms_hub_loader(tmp_path, monkeypatch):
    # the hub "download" returns a local file: timm's own loader (num_classes=0) reads it
    torch.manual_seed(6)
    full = timm.create_model("test_vit", pretrained=False)
    safetensors_torch.save_file(full.state_dict(), tmp_path / "model.safetensors")
    asked = []

    def cached_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", cached_download)
    monkeypatch.delenv("SLICELIB_WEIGHTS_DIR", raising=False)
    model = SliceModel("timm:test_vit", weights="imagenet", volume_shape=(12, 10, 9), seed=9)
    assert asked == [("timm/test_vit.r160_in1k", "model.safetensors")]
    got = model.encoder.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in full.state_dict().items() if k in got)
    assert "head.weight" not in got


def test_local_weights_files_load(tmp_path, offline, monkeypatch):
    torch.manual_seed(4)
    full = timm.create_model("test_vit", pretrained=False)  # with its 1000-class head
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(full.state_dict(), path)
    model = SliceModel("timm:test_vit", weights=path, volume_shape=(12, 10, 9), seed=9)
    got = model.encoder.net.state_dict()
    assert "head.weight" in full.state_dict() and "head.weight" not in got
    assert all(torch.equal(got[k], v) for k, v in full.state_dict().items() if k in got)

    # weights="imagenet" reads $SLICELIB_WEIGHTS_DIR/timm_<name>.pth first (no download)
    torch.manual_seed(5)
    headless = timm.create_model("test_vit", pretrained=False, num_classes=0)
    torch.save(headless.state_dict(), tmp_path / "timm_test_vit.pth")
    monkeypatch.setenv("SLICELIB_WEIGHTS_DIR", str(tmp_path))
    model = SliceModel("timm:test_vit", weights="imagenet", volume_shape=(12, 10, 9), seed=9)
    got = model.encoder.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in headless.state_dict().items())
    assert offline == []  # nothing was downloaded


def test_a_weights_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "convnext.safetensors"
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=0)
    safetensors_torch.save_file(convnext.state_dict(), path)
    with pytest.raises(WeightsError, match=r"convnext\.safetensors does not fit timm's test_vit"):
        SliceModel("timm:test_vit", weights=path, volume_shape=(12, 10, 9))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="broken.safetensors as a safetensors state_dict"):
        SliceModel(
            "timm:test_vit", weights=tmp_path / "broken.safetensors", volume_shape=(12, 10, 9)
        )


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """8 tiny 16 x 20 x 16 volumes (tiny_data.make_table) and a one-epoch config, shared."""
    folder = tmp_path_factory.mktemp("timm_cli")
    table = make_table(folder, n=8, seed=2)
    cfg = folder / "tiny.toml"
    cfg.write_text(
        "epochs = 1\nbatch_size = 4\nlr = 1e-3\n"
        f'cache_dir = "{folder / "cache"}"\n'
        '[model]\nembed_dim = 8\nweights = "none"\n'
        '[preprocess]\nvolume_shape = [16, 20, 16]\nvoxel_size = 8.0\nmethod = "resample"\n'
    )
    return table, cfg


@pytest.mark.parametrize("backbone", ["timm:convnext_atto", "timm:test_vit"])
def test_timm_backbones_train_through_the_cli(backbone, tiny_grid, tmp_path):
    table, cfg = tiny_grid
    run = tmp_path / "run"
    argv = ["train", "--data", str(table), "--target", "age", "--config", str(cfg), "--qc", "off"]
    assert main([*argv, "--backbone", backbone, "--out", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["backbone"] == backbone
    model, config = load_run(run)  # rebuilt from the checkpoint, no weights fetched
    assert isinstance(model.encoder, TimmEncoder)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 16, 20, 16))
    assert out.shape == (2,) and torch.isfinite(out).all()
