"""benchmarks/run.py: its --tiny mode writes the JSON and Markdown, and the optimisations it times
give the plain model's outputs. No timing is asserted here."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads spin against other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def test_sfcn_maps_volume_to_one_output(bench):
    net = bench.SFCN().eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 20, 16)).shape == (2, 1)


def test_peak_flops_table(bench):
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert bench.peak_flops("Some Unknown GPU") is None


def test_targets_from_results(bench):
    results = dict(
        train=dict(
            rows=[
                dict(name="slicelib resnet18, 1 axis", volumes_per_s=0.3),
                dict(name="MONAI DenseNet121-3D", volumes_per_s=0.1),
            ]
        ),
        memory=dict(batch=8, slices=91, rows=[dict(name="chunk+checkpoint", peak_bytes=9 * 2**30)]),
        data=dict(ratio=50.0),
        tta=dict(
            target_mae=8.0,
            rows=[
                dict(name="slicelib-ImageNet (mobilenet_v2)", reached=True, time_to_target_s=30.0, train_s=30.0, best_val_mae=7.0),
                dict(name="MONAI DenseNet121-3D", reached=False, time_to_target_s=None, train_s=100.0, best_val_mae=12.0),
            ],
        ),
        gpu=dict(skipped="no CUDA"),
    )  # fmt: skip
    status = [t["status"] for t in bench.targets(results)]
    assert status == ["pass", "short", "pass", "pass", "skipped: no CUDA"]


def test_targets_fast_option_and_tta_bounds(bench):
    train = dict(
        rows=[
            dict(name="slicelib resnet18, 1 axis", volumes_per_s=0.10),
            dict(name="slicelib resnet18, 1 axis + folded stem", volumes_per_s=0.11),
            dict(name="slicelib resnet18, 1 axis + channels_last", volumes_per_s=0.09),
            dict(name="MONAI DenseNet121-3D", volumes_per_s=0.10),
        ]
    )
    si = dict(
        name="slicelib-ImageNet (mobilenet_v2)",
        reached=False,
        time_to_target_s=None,
        train_s=40.0,
        best_val_mae=15.0,
    )
    dn = dict(
        name="MONAI DenseNet121-3D",
        reached=True,
        time_to_target_s=20.0,
        train_s=20.0,
        best_val_mae=9.0,
    )
    out = bench.targets(dict(train=train, tta=dict(target_mae=12.0, rows=[si, dn])))
    fast_row = out[1]
    assert "folded stem" in fast_row["note"] and fast_row["status"] == "short"
    assert abs(fast_row["value"] - 1.1) < 1e-9
    tta = [t for t in out if t["name"].startswith("time-to-accuracy")][0]
    assert tta["value_is"] == "lower bound" and tta["status"] == "short"  # >= 2x
    si2 = dict(si, reached=True, time_to_target_s=30.0)
    dn2 = dict(dn, reached=False, time_to_target_s=None, train_s=45.0)
    tta2 = [
        t
        for t in bench.targets(dict(tta=dict(target_mae=12.0, rows=[si2, dn2])))
        if t["name"].startswith("time-to")
    ][0]
    assert tta2["value_is"] == "upper bound" and tta2["status"] == "undecided"  # <= 0.67
    assert (
        bench._train_off_row("slicelib resnet18, 1 axis, frozen BN + skip background (IXI head)")
        == "slicelib resnet18, 1 axis, frozen BN (IXI head)"
    )
    assert (
        bench._train_off_row("slicelib resnet18, 1 axis + folded stem")
        == "slicelib resnet18, 1 axis"
    )
    assert bench._train_off_row("MONAI DenseNet121-3D") is None  # fmt: skip


def test_train_worker_fast_options(bench, tmp_path):
    base = dict(shape=[16, 20, 16], batch=2, warmup=0, steps=1, flops=False, work_dir=str(tmp_path))
    for model, opts in (
        (dict(bench.R18, stem="fold"), dict(fast=dict(skip_constant=False, channels_last=True))),
        (dict(bench.R18, freeze_batchnorm=True), dict(fast=dict(skip_constant=True), input="head")),
    ):
        res = bench.train_worker(dict(base, model=model, **opts))
        assert res["volumes_per_s"] > 0 and res["peak_bytes"] > 0
    assert res["skipped_slices"] > 0  # the head's edge slices are all background
    assert res["input"] == "synthetic ellipsoid head"


def test_train_to_target_stops_at_target(bench):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 4, 4, 4)
    ages = torch.linspace(20, 90, 8).numpy()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    s = bench.replace(
        bench.MODES["tiny"], tta_batch=4, tta_cap_s=5.0, tta_target_mae=1e6, tta_val_steps=1
    )
    res = bench.train_to_target(net, x, ages, x, ages, s)
    assert res["reached"] and len(res["history"]) == 1 and res["time_to_target_s"] == res["train_s"]
    s = bench.replace(s, tta_target_mae=0.0, tta_cap_s=0.05)
    res = bench.train_to_target(net, x, ages, x, ages, s)
    assert not res["reached"] and res["train_s"] >= 0.05  # fmt: skip


def test_tiny_run_writes_json_and_markdown(bench, tmp_path):
    results = bench.main(
        ["--tiny", "--threads", "1", "--sections", "memory,data,opts,gpu", "--out", str(tmp_path),
         "--work-dir", str(tmp_path / "work")]
    )  # fmt: skip
    saved = json.loads((tmp_path / "tiny.json").read_text())
    md = (tmp_path / "tiny.md").read_text()
    assert saved["machine"]["cpu"] and "loadavg" in saved["machine"]
    assert md.startswith("# slicelib benchmark (tiny mode)")
    assert "## Optimisations on/off" in md and "## Targets" in md
    assert saved["gpu"] == {"skipped": "no CUDA"} or torch.cuda.is_available()
    rows = {r["name"]: r for r in results["opts"]["rows"]}
    for name, row in rows.items():  # every optimisation keeps the plain model's eval output
        if "eval_d_output" in row:
            tol = 0.1 if "bf16" in name else 1e-4
            assert row["eval_d_output"] < tol, (name, row)
    assert rows["skip constant (background) slices"]["skipped_slices"] > 0
    assert "peak_bytes" in results["memory"]["rows"][0]


@pytest.mark.slow
def test_tiny_run_all_sections(bench, tmp_path):
    results = bench.main(
        ["--tiny", "--threads", "1", "--out", str(tmp_path), "--work-dir", str(tmp_path / "w")]
    )
    for section in ("train", "memory", "latency", "data", "opts", "tta", "gpu"):
        assert section in results
    assert all("error" not in r for r in results["train"]["rows"])
