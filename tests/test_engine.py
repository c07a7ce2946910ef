"""The engine shared by training and runs: backend choice, collectives on the model's device,
the one precision rule of training, evaluation and prediction, the collectives' timeout."""

import datetime

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from tiny_data import SHAPE, make_table, tiny_config
from torch.utils.data import TensorDataset

from slicelib import engine, runs
from slicelib.config import TrainConfig
from slicelib.engine import ConfigError, dist_backend, dist_timeout, use_bf16
from slicelib.model import SliceModel
from slicelib.train import fit, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cuda", [True, False])
def test_backend_follows_the_configured_device(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert dist_backend("cuda") == "nccl" and dist_backend("cuda:1") == "nccl"
    assert dist_backend("cpu") == "gloo"  # a CPU run on a GPU machine: gloo, never nccl
    assert dist_backend("auto") == ("nccl" if cuda else "gloo")


def test_collective_timeout_is_generous_and_configurable(monkeypatch):
    monkeypatch.delenv("SLICELIB_DIST_TIMEOUT", raising=False)
    assert dist_timeout() >= datetime.timedelta(hours=1)
    monkeypatch.setenv("SLICELIB_DIST_TIMEOUT", "90")
    assert dist_timeout() == datetime.timedelta(seconds=90)
    for bad in ("0", "soon"):
        monkeypatch.setenv("SLICELIB_DIST_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="SLICELIB_DIST_TIMEOUT"):
            dist_timeout()


def test_one_precision_rule():
    table = {
        ("cuda", "auto"): True,
        ("cuda", "bf16"): True,
        ("cuda", "fp32"): False,
        ("cpu", "auto"): False,
        ("cpu", "bf16"): True,
        ("cpu", "fp32"): False,
        ("mps", "auto"): False,
    }
    for (device, precision), want in table.items():
        assert use_bf16(torch.device(device), precision) is want, (device, precision)
        assert use_bf16(device, precision) is want
    with pytest.raises(ConfigError, match="fp16"):
        use_bf16("cpu", "fp16")


def _tiny_sets(n_train=6, n_val=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, 1, *SHAPE, generator=g)
    y = torch.rand(n_train + n_val, generator=g) * 60 + 20  # years
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def _tiny_model(device="cpu"):
    return SliceModel(
        "slice_cnn", embed_dim=8, volume_shape=SHAPE, target_mean=50.0, target_std=15.0, seed=0
    ).to(device)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_every_collective_gets_tensors_on_the_model_device(tmp_path, monkeypatch, device):
    """A one-epoch run inside an explicitly initialised process group of one (gloo on the CPU,
    nccl on a GPU) goes through every collective of the multi-process path; each tensor handed
    to one lives on the model's device (NCCL reduces CUDA tensors only). With a weight average
    (ema), which is updated from the model inside the DDP wrapper."""
    seen = []

    def spy(name):
        real = getattr(dist, name)

        def call(*args, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [
                t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)
            ]
            seen.append((name, [t.device for t in tensors]))
            return real(*args, **kwargs)

        monkeypatch.setattr(dist, name, call)

    for name in ("all_reduce", "all_gather", "broadcast", "reduce", "all_gather_object", "barrier"):
        spy(name)
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _tiny_model()
        cfg = TrainConfig(
            epochs=1, batch_size=4, lr=1e-3, patience=None, device=device, precision="fp32",
            ema=0.9,
        )  # fmt: skip
        train_ds, val_ds = _tiny_sets()
        fit(model, train_ds, val_ds, cfg, tmp_path / "run", progress=False)
        model_device = next(model.parameters()).device
    finally:
        dist.destroy_process_group()
    names = [name for name, _ in seen]
    assert "all_reduce" in names  # the training loss, summed over ranks
    assert "all_gather_object" in names  # the validation predictions, gathered
    devices = {d for _, ds in seen for d in ds}
    assert devices == {model_device}, seen


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prec")
    table = make_table(tmp / "d", n=10)
    cfg = tiny_config(tmp, data=str(table), out=str(tmp / "run"), epochs=1, precision="fp32")
    return train(TrainConfig.from_dict(cfg), progress=False), table


@pytest.mark.filterwarnings("ignore:.*QC flagged")  # toy spheres, not T1 brains
def test_evaluate_and_predict_decide_precision_by_the_one_rule(fp32_run, monkeypatch):
    run, table = fp32_run
    calls = []

    def spy(device, precision):
        calls.append((torch.device(device).type, precision))
        return engine.use_bf16(device, precision)

    monkeypatch.setattr(runs, "use_bf16", spy)
    runs.evaluate_run(run, split="test", device="cpu", progress=False, n_boot=10)
    assert calls == [("cpu", "fp32")]  # the run's precision, not the device's habit
    test = pd.read_csv(run / "split.csv").query("split == 'test'")
    files = [table.parent / f"{p}.nii.gz" for p in test["participant_id"]]
    runs.predict_files(run, files, device="cpu", progress=False, strict=False)
    assert calls == [("cpu", "fp32")] * 2
