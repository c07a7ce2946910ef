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
