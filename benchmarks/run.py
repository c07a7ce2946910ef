"""slicelib benchmarks: speed, memory, caching and time-to-accuracy against 3D peers, in one run.

    python benchmarks/run.py --quick   # ~10 min on 2 CPU cores (batch 1, short caps)
    python benchmarks/run.py           # full mode (batch 8, longer caps, torch.compile)
    python benchmarks/run.py --tiny    # a tiny grid, seconds to minutes: checks that it all runs

Writes ``benchmarks/results/<name>.json`` (every number, the machine, the settings) and
``benchmarks/results/<name>.md`` (the report, built with pandas, also printed). One function per
section (``--sections``):

    train    training throughput (volumes/s: forward + backward + Adam) and peak memory per model
    memory   peak training memory, batch 8 x 91 slices, slice chunking + checkpointing off / on
    latency  one scan in eval mode with each exact speed option of ``fast.py``
    cache    decoding + preprocessing .nii.gz vs loading the preprocessed cache
    frozen   epoch time of a frozen ImageNet encoder on cached features vs fine-tuning
    tta      time-to-accuracy on the synthetic brain-age task
    tta_real time-to-accuracy on the real IXI derivative (data/ixi_hh_4mm, 4 mm)
    pipeline seconds per raw 2 mm head through slicelib.pipeline (shared IXI-HH heads)
    gpu      CUDA only: fp32 vs bf16, channels_last, torch.compile; volumes/s and MFU

Each timing: warm-up step(s), then timed steps, the median reported. Nothing here asserts a
time: the targets (issues 6, 13 and 14) are printed as ratios with pass / short.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):  # run from a checkout, without installing
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fast  # noqa: E402  (benchmarks/fast.py)

from slicelib import cache as C  # noqa: E402
from slicelib import data as D  # noqa: E402
from slicelib.cnn3d import SFCN, VolumeCNN  # noqa: E402
from slicelib.course import shared_dir  # noqa: E402
from slicelib.model import SliceModel  # noqa: E402

GB = 1024**3
SECTIONS = ("train", "memory", "latency", "cache", "frozen", "tta", "tta_real", "pipeline", "gpu")

# Dense bf16 peak FLOP/s by device name (first match wins; for MFU as nanoGPT's estimate_mfu).
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("T4", 65e12),  # fp16 tensor cores; T4 has no bf16
)

TARGETS = {
    "train_ratio": 1.5,  # slicelib ResNet18 volumes/s over MONAI 3D DenseNet121 (CPU)
    "memory_gb": 8.0,  # peak training memory, batch 8 x 91 slices, chunking on
    "cache_ratio": 20.0,  # cached loading over decoding .nii.gz
    "frozen_ratio": 20.0,  # fine-tuning epoch time over frozen-encoder epoch time (cached)
    "tta_ratio": 0.5,  # slicelib-ImageNet time-to-accuracy over MONAI DenseNet121-3D
    "pipeline_s": 15.0,  # seconds per raw 2 mm head through slicelib.pipeline (issue 13)
    "mfu": 0.40,  # GPU, bf16
}


# ----------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Sizes of one benchmark mode (times in seconds, shapes in voxels)."""

    mode: str = "full"
    volume_shape: tuple = (91, 109, 91)
    train_batch: int = 8
    train_models: str | None = None  # regex on the training-table names (None: all)
    warmup: int = 1
    steps: int = 3
    memory_batch: int = 8
    memory_steps: int = 2
    memory_variants: tuple = ("off", "chunk", "chunk+checkpoint")
    slice_chunk: int = 32
    latency_reps: int = 10
    cache_files: int = 10
    compile: bool = True
    # the synthetic cohort of the frozen and tta sections
    cohort_subjects: int = 200
    cohort_grid: tuple = (45, 54, 45)
    cohort_voxel: float = 4.0
    tta_batch: int = 8
    tta_lr: float = 1e-3
    tta_target: float = 0.5  # target val MAE = this x the predict-the-training-mean val MAE
    tta_cap_s: float = 900.0  # seconds of training steps per model
    tta_cap_max_s: float = 1800.0  # DenseNet's cap may grow to 2x slicelib-ImageNet's time
    tta_val_steps: int = 10  # validate every this many optimiser steps (and each epoch end)
    frozen_epochs: int = 3  # frozen-encoder epochs timed (median); fine-tuning: one epoch
    real_cap_s: float = 900.0  # tta_real: the real IXI derivative (4 mm), cap per model
    real_cap_max_s: float = 1800.0
    pipeline_heads: int = 5  # raw 2 mm heads timed through slicelib.pipeline (median)
    predict_subjects: int = 4
    isolate: bool = True  # memory and gpu sections: one process per model
    train_isolate: bool = True  # the training table: one process per model
    worker_timeout_s: float = 3600.0


MODES = {
    "full": Settings(),
    "quick": Settings(
        mode="quick",
        train_batch=1,
        steps=3,  # the median of 3: one timed step moved a row by up to 50 % between runs
        memory_steps=1,
        memory_variants=("off", "chunk+checkpoint"),
        latency_reps=3,
        cache_files=4,
        compile=False,
        cohort_subjects=120,
        cohort_grid=(30, 36, 30),  # 6 mm: the coarsest grid MONAI's DenseNet121-3D accepts
        cohort_voxel=6.0,
        tta_cap_s=60.0,
        tta_cap_max_s=120.0,
        tta_val_steps=4,
        frozen_epochs=3,
        real_cap_s=90.0,
        real_cap_max_s=180.0,
        pipeline_heads=3,
        train_isolate=False,  # a fresh process costs ~10 s of imports per model
        worker_timeout_s=300.0,
    ),
    "tiny": Settings(
        mode="tiny",
        volume_shape=(16, 20, 16),
        train_batch=2,
        steps=1,
        memory_batch=2,
        memory_steps=1,
        memory_variants=("off", "chunk+checkpoint"),
        slice_chunk=8,
        latency_reps=1,
        cache_files=2,
        compile=False,
        cohort_subjects=8,
        cohort_grid=(30, 36, 30),
        cohort_voxel=6.0,
        tta_batch=2,
        tta_target=0.9,
        tta_cap_s=5.0,
        tta_cap_max_s=10.0,
        tta_val_steps=0,
        frozen_epochs=1,
        real_cap_s=5.0,
        real_cap_max_s=10.0,
        pipeline_heads=1,
        isolate=False,
        train_isolate=False,
        worker_timeout_s=300.0,
    ),
}

R18 = dict(kind="slice", backbone="resnet18", axes="sagittal")
MNV2 = dict(kind="slice", backbone="mobilenet_v2", axes="sagittal")
# name, model spec (build_model), worker options (train_worker), the row with the option off
TRAIN_MODELS = (
    ("slicelib resnet18, 1 axis", R18, {}, None),
    ("slicelib resnet18, 1 axis + folded stem", dict(R18, stem="fold"), {}, "slicelib resnet18, 1 axis"),
    ("slicelib resnet18, 1 axis + fold + channels_last", dict(R18, stem="fold", channels_last=True), {}, "slicelib resnet18, 1 axis + folded stem"),
    ("slicelib resnet18, 1 axis, fold, BN per volume (slice_chunk 91)", dict(R18, stem="fold", slice_chunk=91), {}, "slicelib resnet18, 1 axis + folded stem"),
    ("slicelib resnet18, 1 axis, frozen BN (IXI head)", dict(R18, freeze_batchnorm=True), dict(input="head"), None),
    ("slicelib resnet18, 1 axis, frozen BN + skip background (IXI head)", dict(R18, freeze_batchnorm=True), dict(fast=dict(skip_constant=True), input="head"), "slicelib resnet18, 1 axis, frozen BN (IXI head)"),
    ("slicelib resnet18, 3 axes", dict(R18, axes="all"), {}, None),
    ("slicelib mobilenet_v2, 1 axis", MNV2, {}, None),
    ("slicelib mobilenet_v2, 1 axis + channels_last", dict(MNV2, channels_last=True), {}, "slicelib mobilenet_v2, 1 axis"),
    ("slicelib mobilenet_v2, 3 axes", dict(MNV2, axes="all"), {}, None),
    ("MONAI DenseNet121-3D", dict(kind="monai_densenet121"), {}, None),
    ("MONAI ResNet18-3D", dict(kind="monai_resnet18"), {}, None),
    ("SFCN-style 3D CNN", dict(kind="sfcn"), {}, None),
)  # fmt: skip

# name, SliceModel options, FastSliceModel options (None: the model itself; "compile")
LATENCY_VARIANTS = (
    ("plain (fp32, repeat stem)", {}, None),
    ("channels_last", dict(channels_last=True), None),
    ("folded 1-channel stem", dict(stem="fold"), None),
    ("bf16 autocast", {}, dict(skip_constant=False, autocast_dtype=torch.bfloat16)),
    ("skip constant (background) slices", {}, dict(skip_constant=True)),
    ("fold + channels_last + skip", dict(stem="fold", channels_last=True), dict(skip_constant=True)),
    ("torch.compile (encoder)", {}, "compile"),
)  # fmt: skip

# the time-to-accuracy arms: the slicelib models use channels_last (same function; ~2x faster
# MobileNetV2 steps on small slices on a CPU); DenseNet121-3D its default layout
TTA_FINETUNED = "slicelib-ImageNet (mobilenet_v2), fine-tuned"
TTA_FROZEN = "slicelib-ImageNet (mobilenet_v2), frozen encoder"
TTA_DENSENET = "MONAI DenseNet121-3D"


# ----------------------------------------------------------------------------- machine, memory


def machine_info() -> dict:
    """The machine and software a result was measured with (JSON-serialisable dict)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info = dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        loadavg=list(os.getloadavg()),
        memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1),
        cpu_bf16_flags=sorted(fast.cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        cpu_bf16_native=fast.bf16_native("cpu"),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )
    with contextlib.suppress(ImportError):
        import monai

        info["monai"] = monai.__version__
    return info


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (0 where unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a block (bytes): CUDA peak allocated, or CPU peak RSS.

    CPU: resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5) on entry and reads
    ``VmHWM`` on exit; without the reset it is the process's lifetime peak (``ru_maxrss``).
    ``delta`` = peak minus the memory in use at entry (what the block added).
    """

    def __init__(self, device: str = "cpu"):
        self.device, self.start, self.peak, self.method = device, 0, 0, ""

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start, self.method = torch.cuda.memory_allocated(), "cuda max_memory_allocated"
            return self
        gc.collect()  # free what Python and malloc hold unused, so RSS shows live memory
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.start = _status_kb("VmRSS") * 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after clear_refs (peak RSS of this process)"
        except OSError:
            self.method = "ru_maxrss (lifetime peak RSS of this process)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self.method.startswith("VmHWM"):
            self.peak = _status_kb("VmHWM") * 1024
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def delta(self) -> int:
        return max(self.peak - self.start, 0)


# ----------------------------------------------------------------------------- models, timing


def build_model(spec: dict, volume_shape, target: tuple | None = None) -> nn.Module:
    """A benchmarked model from ``spec`` (``kind`` + options) for the grid ``volume_shape``.

    Every model maps ``(B, 1, X, Y, Z)`` -> ``(B,)`` or ``(B, 1)`` (regression). ``target``:
    ``(mean, std)`` of the training ages for the slicelib models (``slice``, ``densenet121_3d``
    = :class:`slicelib.cnn3d.VolumeCNN`), whose output is then ``mean + std * head`` in years.
    """
    torch.manual_seed(0)
    kind, (mean, std) = spec["kind"], target or (None, None)
    if kind == "slice":
        axes = ("sagittal", "coronal", "axial") if spec["axes"] == "all" else spec["axes"]
        options = ("stem", "slice_chunk", "checkpoint_activations", "freeze_batchnorm")
        return SliceModel(
            spec["backbone"],
            spec.get("weights"),
            axes=axes,
            volume_shape=tuple(volume_shape),
            channels_last=spec.get("channels_last", False),
            target_mean=mean,
            target_std=std,
            seed=0,
            **{k: spec[k] for k in options if k in spec},
        )
    if kind == "densenet121_3d":  # MONAI's DenseNet121-3D through slicelib (train/compare's)
        shape = tuple(volume_shape)
        return VolumeCNN(kind, volume_shape=shape, target_mean=mean, target_std=std, seed=0)
    if kind == "sfcn":
        return SFCN()
    from monai.networks import nets

    if kind == "monai_densenet121":
        return nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=1)
    if kind == "monai_resnet18":
        return nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=1)
    raise ValueError(f"unknown model kind {kind!r} in {spec}")


def count_flops(fn) -> int:
    """FLOPs (a multiply-add counts 2) that ``fn()`` runs, by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s for a GPU name from :data:`PEAK_BF16_FLOPS`, None if unknown."""
    for key, value in PEAK_BF16_FLOPS:
        if device_name and key.lower() in device_name.lower():
            return value
    return None


def time_calls(fn, warmup: int, steps: int, device: str = "cpu") -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times timed: seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def _timed(fn) -> float:
    """Seconds one call of ``fn()`` takes."""
    return time_calls(fn, 0, 1)[0]


def example_volume(volume_shape, work_dir: Path) -> tuple[torch.Tensor, str]:
    """One realistic z-scored volume ``(1, 1, X, Y, Z)`` and where it came from.

    A real IXI head preprocessed by ``slicelib.data`` on the 2 mm grid when the shared data are
    there (it has constant background slices at the grid edges); else a synthetic ellipsoid.
    """
    files = ixi_files()
    if files and tuple(volume_shape) == tuple(D.PreprocessConfig().volume_shape):
        vol = C.load_preprocessed(files[0], D.PreprocessConfig(), cache_dir=work_dir / "cache")
        return torch.from_numpy(np.asarray(vol, np.float32))[None, None], f"IXI {files[0].name}"
    grid = np.stack(np.meshgrid(*[np.linspace(-1.3, 1.3, n) for n in volume_shape], indexing="ij"))
    inside = (grid**2).sum(0) < 1.0
    noise = np.random.default_rng(0).standard_normal(volume_shape)
    vol = np.where(inside, 1.0 + 0.3 * noise, 0.0).astype(np.float32)
    vol = (vol - vol[inside].mean()) / vol[inside].std()
    return torch.from_numpy(vol)[None, None], "synthetic ellipsoid head"


def ixi_files() -> list[Path]:
    """The shared raw IXI heads (``$SLICELIB_IXI10``, else ``<shared>/data/ixi10``)."""
    root = Path(os.environ.get("SLICELIB_IXI10") or shared_dir() / "data" / "ixi10")
    return sorted(root.glob("*.nii.gz"))


def weights_path() -> Path | None:
    """The offline MobileNetV2 ImageNet weights file, None if absent."""
    folder = Path(os.environ.get("SLICELIB_WEIGHTS_DIR") or shared_dir() / "weights")
    path = folder / "mobilenet_v2_imagenet1k.pth"
    return path if path.is_file() else None


# ----------------------------------------------------------------------------- 1. throughput


def train_worker(spec: dict) -> dict:
    """Measure one model's training step (in its own process when isolated).

    ``spec``: ``model`` (see :func:`build_model`), ``volume_shape``, ``batch``, ``warmup``,
    ``steps``, ``device``, ``threads``, ``bf16``, ``compile``, ``flops`` (count them in the
    first warm-up step), ``fast`` (slice models: options of ``fast.FastSliceModel``), ``input``
    ("random": N(0, 1) voxels; "head": one real head repeated over the batch, from
    ``work_dir``). Returns seconds per step, volumes/s, peak memory (bytes), FLOPs per step,
    achieved FLOP/s and MFU (CUDA, known device).
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, shape, batch = spec.get("device", "cpu"), spec["volume_shape"], int(spec["batch"])
    model = build_model(spec["model"], shape).to(device).train()
    run = fast.FastSliceModel(model, **spec["fast"]).train() if spec.get("fast") else model
    g = torch.Generator().manual_seed(0)
    if spec.get("input") == "head":
        x1, source = example_volume(shape, Path(spec["work_dir"]))
        x = x1.expand(batch, -1, -1, -1, -1).contiguous()  # (B, 1, X, Y, Z)
    else:
        x, source = torch.randn(batch, 1, *shape, generator=g), "N(0, 1) voxels"
    x, y = x.to(device), torch.randn(batch, generator=g).to(device)  # y: (B,) z-scores
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with fast.autocast(device, enabled=bool(spec.get("bf16"))):
            out = run(x).reshape(-1).float()  # (B,)
        nn.functional.mse_loss(out, y).backward()
        opt.step()

    res = dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6, batch=batch)
    res["input"] = source
    warmup = int(spec["warmup"])
    with PeakMemory(device) as mem:
        if spec.get("flops", True):
            res["flops_per_step"] = count_flops(step)  # also the first warm-up step
            warmup = max(warmup - 1, 0)
        if spec.get("compile"):
            run = torch.compile(run)
            res["compile_s"] = _timed(step)
        times = time_calls(step, warmup, int(spec["steps"]), device)
    med = statistics.median(times)
    res.update(step_s=times, median_s=med, volumes_per_s=batch / med)
    res.update(peak_bytes=mem.peak, delta_bytes=mem.delta, memory_method=mem.method)
    res["skipped_slices"] = getattr(run, "last_skipped", None)
    if "flops_per_step" in res:
        res["achieved_flops"] = res["flops_per_step"] / med
        peak = peak_flops(torch.cuda.get_device_name(0)) if device == "cuda" else None
        res["mfu"] = res["achieved_flops"] / peak if peak else None
    return res


def call_worker(spec: dict, s: Settings, isolate: bool) -> dict:
    """:func:`train_worker` in a fresh Python process (or this one); errors become a row."""
    if not isolate:
        try:
            return train_worker(spec)
        except Exception as err:  # noqa: BLE001 - reported in the table
            return dict(error=f"{type(err).__name__}: {err}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=s.worker_timeout_s)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {s.worker_timeout_s:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(error=f"worker exit {proc.returncode}: {' | '.join(tail)}")


def bench_train(s: Settings, work_dir: Path) -> dict:
    """Training throughput and peak memory of every model: same input, same batch."""
    models = [m for m in TRAIN_MODELS if not s.train_models or re.search(s.train_models, m[0])]
    if not models:
        names = "; ".join(m[0] for m in TRAIN_MODELS)
        raise SystemExit(f"--train-models {s.train_models!r} matches none of: {names}")
    isolate, rows = s.isolate and s.train_isolate, []
    for name, model, opts, off in tqdm(models, desc="train throughput"):
        spec = dict(model=model, volume_shape=list(s.volume_shape), batch=s.train_batch)
        spec.update(warmup=s.warmup, steps=s.steps, threads=torch.get_num_threads())
        spec.update(work_dir=str(work_dir), **opts)
        rows.append(
            dict(name=name, off=off, spec=dict(model, **opts), **call_worker(spec, s, isolate))
        )
    return dict(batch=s.train_batch, volume_shape=list(s.volume_shape), isolated=isolate, rows=rows)


# ----------------------------------------------------------------------------- 2. memory


def bench_memory(s: Settings, work_dir: Path) -> dict:
    """Peak training memory for ``memory_batch`` volumes of resnet18 slices, chunking off / on."""
    variants = {
        "off": {},
        "chunk": dict(slice_chunk=s.slice_chunk),
        "chunk+checkpoint": dict(slice_chunk=s.slice_chunk, checkpoint_activations=True),
    }
    rows = []
    for name in tqdm(s.memory_variants, desc="memory"):
        spec = dict(model=dict(R18, **variants[name]), volume_shape=list(s.volume_shape))
        spec.update(batch=s.memory_batch, warmup=0, steps=s.memory_steps, flops=False)
        rows.append(
            dict(
                name=name, **call_worker(dict(spec, threads=torch.get_num_threads()), s, s.isolate)
            )
        )
    return dict(
        batch=s.memory_batch, slices=s.volume_shape[0], slice_chunk=s.slice_chunk, rows=rows
    )


# ----------------------------------------------------------------------------- 3. latency


def bench_latency(s: Settings, work_dir: Path) -> dict:
    """One scan in eval mode with each exact speed option (max abs diff from the plain model)."""
    x, source = example_volume(s.volume_shape, work_dir)
    rows, ref = [], None
    for name, model_kw, fast_kw in tqdm(LATENCY_VARIANTS, desc="latency"):
        if fast_kw == "compile" and not s.compile:
            rows.append(
                dict(name=name, skipped="full mode only (compiling takes minutes on a CPU)")
            )
            continue
        model = SliceModel("resnet18", volume_shape=s.volume_shape, seed=0, **model_kw).eval()
        if fast_kw == "compile":
            run = fast.compile_encoder(model)
        else:
            run = fast.FastSliceModel(model, **fast_kw) if fast_kw else model
        with torch.no_grad():
            first = _timed(lambda run=run: run(x))  # compilation, if any, happens here
            out = run(x)  # (1,)
            times = time_calls(lambda run=run: run(x), 0, s.latency_reps)
        ref = out if ref is None else ref
        rows.append(
            dict(
                name=name,
                median_s=statistics.median(times),
                first_call_s=first,
                d_output=fast.max_abs_diff(ref, out),
                non_finite=not bool(torch.isfinite(out).all()),  # (a kernel's NaN, reported)
                skipped_slices=getattr(run, "last_skipped", 0),
            )
        )
    return dict(input=source, rows=rows)


# ----------------------------------------------------------------------------- 4. cache


def bench_cache(s: Settings, work_dir: Path) -> dict:
    """Seconds per volume: decoding .nii.gz, decoding + preprocessing, loading the cache."""
    import nibabel as nib

    files = ixi_files()[: s.cache_files]
    source = "IXI raw heads (shared data/ixi10)"
    if not files:
        files, source = _phantom_niftis(s.cache_files, work_dir), "synthetic heads (.nii.gz)"
    cfg, cache = D.PreprocessConfig(), Path(tempfile.mkdtemp(prefix="cache-", dir=work_dir))
    decode = [_timed(lambda f=f: np.asanyarray(nib.load(f).dataobj)) for f in files]
    pre = [_timed(lambda f=f: D.preprocess(f, cfg)) for f in files]
    for f in files:  # fill the cache (untimed)
        C.load_preprocessed(f, cfg, cache_dir=cache)

    def cached(f):  # float16 .npy, memory-mapped, materialised as a float32 tensor
        return torch.from_numpy(
            np.asarray(C.load_preprocessed(f, cfg, cache_dir=cache), np.float32)
        )

    hot = [_timed(lambda f=f: cached(f)) for f in files for _ in range(3)]
    rows = [
        dict(name="nibabel decode only", s_per_volume=statistics.median(decode)),
        dict(name="decode + slicelib.data.preprocess", s_per_volume=statistics.median(pre)),
        dict(
            name="slicelib.data.load_preprocessed (cache, page cache warm)",
            s_per_volume=statistics.median(hot),
        ),
    ]
    return dict(
        files=len(files),
        source=source,
        ratio=rows[1]["s_per_volume"] / rows[2]["s_per_volume"],
        rows=rows,
    )


def _phantom_niftis(n: int, work_dir: Path) -> list[Path]:
    """``n`` synthetic heads on the 2 mm MNI grid as uint8 .nii.gz (when IXI is absent)."""
    import nibabel as nib

    folder = work_dir / "phantoms"
    folder.mkdir(parents=True, exist_ok=True)
    x, _ = example_volume((91, 109, 91), work_dir)
    vol = np.clip((x[0, 0].numpy() + 2) * 50, 0, 255).astype(np.uint8)
    paths = [folder / f"phantom-{i}.nii.gz" for i in range(n)]
    for i, p in enumerate(paths):
        if not p.is_file():
            nib.save(nib.Nifti1Image(np.roll(vol, i, axis=0), D.PreprocessConfig().affine), p)
    return paths


# ----------------------------------------------------------------------------- 5. frozen encoder


@dataclass
class Task:
    """A brain-age task for the frozen and tta sections: volumes ``x`` (N, 1, X, Y, Z) z-scored,
    ``ages`` (N,) years, the fixed ``train`` / ``val`` index arrays and how the data were made.
    ``dataset``: a :class:`slicelib.data.VolumeDataset` of the same subjects (None when the
    volumes do not come from NIfTI files)."""

    name: str
    x: torch.Tensor
    ages: np.ndarray
    train: np.ndarray
    val: np.ndarray
    how: str
    dataset: object = None


def load_cohort(s: Settings, work_dir: Path) -> Task:
    """The synthetic cohort on the small grid, split 75 / 25 (seeded) into train / validation."""
    from slicelib import synth

    cohort = work_dir / f"synth_n{s.cohort_subjects}_seed0"
    tsv = cohort / "participants.tsv"
    if not tsv.is_file() or len(pd.read_csv(tsv, sep="\t")) < s.cohort_subjects:
        synth.make_cohort(cohort, n=s.cohort_subjects, seed=0, progress=True)
    table = pd.read_csv(tsv, sep="\t", dtype={"participant_id": str}).head(s.cohort_subjects)
    table["path"] = [str(cohort / p / "anat" / f"{p}_T1w.nii.gz") for p in table["participant_id"]]
    cfg = D.PreprocessConfig(
        volume_shape=tuple(s.cohort_grid), voxel_size=s.cohort_voxel, centre="none"
    )
    dataset = C.VolumeDataset(table, "age", cfg, cache_dir=work_dir / "cache")
    vols = [dataset[i][0] for i in tqdm(range(len(dataset)), desc="cohort", leave=False)]
    how = f"slicelib.data.preprocess to {s.cohort_voxel:g} mm {tuple(s.cohort_grid)}, cached"
    ages = table["age"].to_numpy(np.float32)
    tr, va = split_cohort(ages)
    return Task("synthetic", torch.stack(vols), ages, tr, va, how, dataset)  # x (N, 1, X, Y, Z)


def split_cohort(ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 75 / 25 train / validation split of the cohort's indices."""
    perm = np.random.default_rng(0).permutation(len(ages))
    n_train = int(round(0.75 * len(ages)))
    return perm[:n_train], perm[n_train:]


def ixi4mm_dir() -> Path:
    """The shipped real IXI derivative (``$SLICELIB_IXI4MM``, else ``data/ixi_hh_4mm``)."""
    return Path(os.environ.get("SLICELIB_IXI4MM") or ROOT / "data" / "ixi_hh_4mm")


def read_brain(path: Path) -> np.ndarray:
    """One derivative brain as float32 (X, Y, Z): a ``.npz`` (key ``brain``) or a NIfTI file."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            return z["brain"].astype(np.float32)
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def load_ixi4mm(folder: Path | None = None) -> Task:
    """The real IXI-HH derivative (138 labelled heads, 4 mm MNI grid, brain only) with the
    library's fixed split (``slicelib.datasets.split_subjects``: seed 0, 70 / 15 / 15, stratified
    by age; the test subjects are left out). Raises FileNotFoundError naming what is missing."""
    from slicelib.datasets import split_subjects

    folder = Path(folder) if folder else ixi4mm_dir()
    tsv = folder / "participants.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} not found: the real IXI derivative is not there yet")
    table = pd.read_csv(tsv, sep="\t", dtype={"participant_id": str})
    col = "brain" if "brain" in table else "path"
    files = [folder / f for f in table[col]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} brains listed in {tsv} are missing "
            f"(first: {missing[0]}): regenerate with data/ixi_hh_4mm/make_derivative.py"
        )
    x = torch.from_numpy(np.stack([read_brain(f) for f in files]))[:, None]  # (N, 1, X, Y, Z)
    split = split_subjects(table, "age", seed=0)
    index = {p: i for i, p in enumerate(table["participant_id"])}
    tr, va = (np.array([index[p] for p in split[k]]) for k in ("train", "val"))
    flagged = int((table.get("qc", pd.Series(dtype=str)) != "ok").sum()) if "qc" in table else 0
    how = (
        f"{folder.name}: slicelib.pipeline (deepbet, N4, affine to MNI152) at 4 mm "
        f"{tuple(x.shape[2:])}, float16 on disk; {flagged} QC-flagged kept; split_subjects "
        f"seed 0 (70 / 15 / 15, test left out)"
    )
    return Task("real IXI-HH", x, table["age"].to_numpy(np.float32), tr, va, how)


def adam_step(model: nn.Module, lr: float, std: float):
    """``step(x, y)``: one Adam step on ``model``'s trainable parameters; the loss is the MSE in
    training-SD units, ``((model(x) - y) / std)^2`` (model outputs and ``y`` (B,) in years)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x).reshape(-1).float()  # (B,) years
        nn.functional.mse_loss(out / std, y / std).backward()
        opt.step()

    return step


def epoch_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings) -> float:
    """Seconds of training steps for one epoch over ``x`` (N, ...) and ``y`` (N,) years, after
    one untimed warm-up step."""
    step = adam_step(model.train(), s.tta_lr, float(y.std()))
    step(x[: s.tta_batch], y[: s.tta_batch])
    b = s.tta_batch
    return sum(_timed(lambda i=i: step(x[i : i + b], y[i : i + b])) for i in range(0, len(x), b))


def imagenet_spec() -> dict | None:
    """The slicelib-ImageNet model spec (MobileNetV2, sagittal, channels_last), None without
    the offline weights file."""
    weights = weights_path()
    return dict(MNV2, channels_last=True, weights=str(weights)) if weights else None


def bench_frozen(s: Settings, work_dir: Path) -> dict:
    """Epoch time of frozen-encoder training after caching vs fine-tuning, the library's path:
    ``slicelib.frozen.cached_features`` (what ``train(freeze_encoder=True)`` encodes with) and
    ``FrozenHead``; the same MobileNetV2 slice model, training volumes, grid and batch."""
    from slicelib.frozen import FrozenHead, cached_features

    task = load_cohort(s, work_dir)
    x, y = task.x[task.train], torch.as_tensor(task.ages[task.train])  # (N, 1, X, Y, Z), (N,)
    stats = (float(y.mean()), float(y.std()))
    spec = imagenet_spec() or dict(MNV2, channels_last=True)
    fine = epoch_seconds(build_model(spec, s.cohort_grid, stats), x, y, s)
    model = build_model(spec, s.cohort_grid, stats)
    ds = task.dataset
    train_ds = C.VolumeDataset(ds.table.iloc[task.train], "age", ds.config, ds.cache_dir)
    feats = []
    with tempfile.TemporaryDirectory(prefix="features-", dir=work_dir) as cache:  # cold
        encode_s = _timed(lambda: cached_features(model, train_ds, cache, s.tta_batch))
        read_s = _timed(lambda: feats.append(cached_features(model, train_ds, cache)))  # (N, S, F)
    head = FrozenHead(model)
    frozen_s = statistics.median(
        epoch_seconds(head, feats[0], y, s) for _ in range(s.frozen_epochs)
    )
    rows = [
        dict(name="fine-tuning: one epoch", seconds=fine),
        dict(name="frozen: encoding + writing the feature cache (once)", seconds=encode_s),
        dict(name="frozen: reading the feature cache", seconds=read_s),
        dict(name="frozen: one epoch on cached features (FrozenHead)", seconds=frozen_s),
    ]
    return dict(
        subjects=len(x),
        preprocessing=task.how,
        batch=s.tta_batch,
        weights="ImageNet" if imagenet_spec() else "random (ImageNet weights file not found)",
        features=list(feats[0].shape[1:]),
        ratio=fine / frozen_s,
        rows=rows,
    )


# ----------------------------------------------------------------------------- 6. time-to-accuracy


def train_to_target(model, x_tr, y_tr, x_va, y_va, s: Settings, target: float, cap_s: float,
                    clock: float = 0.0) -> dict:  # fmt: skip
    """Train ``model`` (outputs (B,) years) until validation MAE <= ``target`` years or ``cap_s``.

    ``x_tr`` (N, ...) inputs, ``y_tr`` (N,) ages in years; the same for validation. The loss is
    the MSE in training-SD units. The clock counts training steps only (validation passes are
    reported apart) and starts at ``clock`` (e.g. the frozen encoder's one-time encoding).
    Validation every ``tta_val_steps`` optimiser steps (0: none in between), at each epoch end
    and at the cap; a last batch of one volume is dropped (3D CNN BatchNorm). Returns the
    history ``[training seconds, epoch, val MAE]`` and whether and when the target was reached.
    """
    y_tr, y_va = torch.as_tensor(y_tr).float(), torch.as_tensor(y_va).float()
    step = adam_step(model, s.tta_lr, float(y_tr.std()))
    g = torch.Generator().manual_seed(0)
    history, val_s, n_steps, epoch = [], 0.0, 0, 0

    def val_mae() -> float:
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xb).reshape(-1) for xb in x_va.split(s.tta_batch)])  # (N_va,)
        model.train()
        return float((pred - y_va).abs().mean())

    model.train()
    while clock < cap_s and not (history and history[-1][2] <= target):
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(perm), s.tta_batch):
            idx = perm[i : i + s.tta_batch]
            if len(idx) > 1 or len(perm) == 1:
                clock += _timed(lambda idx=idx: step(x_tr[idx], y_tr[idx]))
                n_steps += 1
            last = i + s.tta_batch >= len(perm) or clock >= cap_s
            if last or (s.tta_val_steps and n_steps % s.tta_val_steps == 0):
                t0 = time.perf_counter()
                mae = val_mae()
                val_s += time.perf_counter() - t0
                history.append([clock, epoch + min(i + s.tta_batch, len(perm)) / len(perm), mae])
                if mae <= target or clock >= cap_s:
                    break
        epoch += 1
    reached = history[-1][2] <= target
    return dict(reached=reached, time_to_target_s=clock if reached else None, train_s=clock,
                val_s=val_s, best_val_mae=min(h[2] for h in history), epochs=history[-1][1],
                history=history)  # fmt: skip


def frozen_arm(model, x_tr, x_va, batch: int):
    """The library's frozen-encoder path for one arm: ``slicelib.frozen.encode_features`` of
    the training and validation volumes (N, 1, X, Y, Z) -> (N, S, F), and ``FrozenHead(model)``.
    Returns ``(head, f_tr, f_va, seconds of encoding)``."""
    from slicelib.frozen import FrozenHead, encode_features

    t0 = time.perf_counter()
    f_tr, f_va = encode_features(model, x_tr, batch), encode_features(model, x_va, batch)
    return FrozenHead(model), f_tr, f_va, time.perf_counter() - t0


def tta_arms(task: Task) -> tuple:
    """(name, model spec, frozen encoder) of the time-to-accuracy arms on ``task``."""
    imagenet = imagenet_spec() or dict(MNV2, channels_last=True, missing="ImageNet weights")
    arms = [(TTA_FINETUNED, imagenet, False), (TTA_FROZEN, imagenet, True)]
    if task.name == "synthetic":  # the scratch arm: synthetic task only (time)
        arms.append(("slicelib-scratch (mobilenet_v2)", dict(MNV2, channels_last=True), False))
    return (*arms, (TTA_DENSENET, dict(kind="densenet121_3d"), False))


def run_tta(task: Task, s: Settings, cap_s: float, cap_max_s: float) -> dict:
    """Time-to-accuracy of every arm on ``task``: same data, split, batch, optimiser and loss.
    DenseNet121-3D's cap grows to 2x the fine-tuned slicelib time (within ``cap_max_s``)."""
    x, ages, tr, va = task.x, task.ages, task.train, task.val
    mean, std = float(ages[tr].mean()), float(ages[tr].std())
    baseline = float(np.abs(ages[va] - mean).mean())  # val MAE of predicting the training mean
    target = s.tta_target * baseline
    cap, rows = {}, []
    for name, spec, frozen in tqdm(tta_arms(task), desc=f"tta {task.name}"):
        if spec.get("missing"):
            rows.append(dict(name=name, skipped=f"{spec['missing']} file not found"))
            continue
        model, x_tr, x_va, clock = build_model(spec, x.shape[2:], (mean, std)), x[tr], x[va], 0.0
        if frozen:  # encoding once counts as training time
            model, x_tr, x_va, clock = frozen_arm(model, x_tr, x_va, s.tta_batch)
        arm_cap = cap.get(name, cap_s)
        res = train_to_target(model, x_tr, ages[tr], x_va, ages[va], s, target, arm_cap, clock)
        rows.append(dict(name=name, cap_s=arm_cap, encode_s=clock if frozen else None, **res))
        if name == TTA_FINETUNED and res["reached"]:
            # DenseNet's cap: long enough to decide the ratio target (a model that misses the
            # target counts as >= its cap), within cap_max_s
            need = 1.02 * res["time_to_target_s"] / TARGETS["tta_ratio"]
            cap[TTA_DENSENET] = min(max(cap_s, need), cap_max_s)
    return dict(task=task.name, subjects=len(ages), train=len(tr), val=len(va),
                preprocessing=task.how, batch=s.tta_batch, lr=s.tta_lr, target_rel=s.tta_target,
                target_mae=target, mean_baseline_val_mae=baseline, val_steps=s.tta_val_steps,
                rows=rows)  # fmt: skip


def bench_tta(s: Settings, work_dir: Path) -> dict:
    """Time-to-accuracy on the synthetic brain-age task (:func:`run_tta`)."""
    return run_tta(load_cohort(s, work_dir), s, s.tta_cap_s, s.tta_cap_max_s)


def bench_tta_real(s: Settings, work_dir: Path) -> dict:
    """Time-to-accuracy on the shipped real IXI derivative (:func:`load_ixi4mm`)."""
    try:
        task = load_ixi4mm()
    except FileNotFoundError as err:
        return dict(skipped=str(err))
    return run_tta(task, s, s.real_cap_s, s.real_cap_max_s)


# ----------------------------------------------------------------------------- 7. pipeline


def bench_pipeline(s: Settings, work_dir: Path) -> dict:
    """Seconds per raw 2 mm IXI head through ``slicelib.pipeline.run_pipeline`` (the default
    config, torch/ITK threads = this run's torch threads), median over ``pipeline_heads`` shared
    heads; with ``benchmarks/realscan.py``'s ``one_head`` (also Dice and template NCC)."""
    import realscan  # benchmarks/realscan.py

    from slicelib.pipeline import PipelineConfig

    folder = realscan.shared_dir()
    if not (folder / "participants.tsv").is_file():
        return dict(skipped=f"no shared heads at {folder} (set SLICELIB_SHARED)")
    table = pd.read_csv(folder / "participants.tsv", sep="\t").head(s.pipeline_heads)
    config = dict(PipelineConfig().to_dict(), threads=torch.get_num_threads())
    rows = []
    for r in tqdm(list(table.itertuples()), desc="pipeline"):
        try:
            out = realscan.one_head(str(folder / r.t1), str(folder / r.brain_labels), config)
            rows.append({k: out[k] for k in ("subject", "seconds", "dice", "ncc")})
        except Exception as err:  # noqa: BLE001 - reported in the table
            rows.append(dict(subject=Path(r.t1).name, error=f"{type(err).__name__}: {err}"))
    times = [r["seconds"] for r in rows if "seconds" in r]
    return dict(source=str(folder), threads=config["threads"], heads=rows,
                median_s=statistics.median(times) if times else None,
                rows=[dict(name="slicelib.pipeline.run_pipeline, 2 mm head (median)",
                           seconds=statistics.median(times) if times else None)])  # fmt: skip


# ----------------------------------------------------------------------------- 8. GPU


def bench_gpu(s: Settings, work_dir: Path) -> dict:
    """CUDA: fp32 vs bf16 autocast, channels_last, folded stem, torch.compile; batch 8."""
    if not torch.cuda.is_available():
        return dict(skipped="no CUDA")
    r18cl = dict(R18, channels_last=True)
    variants = (
        ("slicelib resnet18 fp32", R18, {}),
        ("slicelib resnet18 bf16", R18, dict(bf16=True)),
        ("slicelib resnet18 bf16 + channels_last", r18cl, dict(bf16=True)),
        (
            "slicelib resnet18 bf16 + channels_last + fold",
            dict(r18cl, stem="fold"),
            dict(bf16=True),
        ),
        ("slicelib resnet18 bf16 + channels_last + compile", r18cl, dict(bf16=True, compile=True)),
        ("MONAI DenseNet121-3D bf16", dict(kind="monai_densenet121"), dict(bf16=True)),
    )
    rows = []
    for name, model, opts in tqdm(variants, desc="gpu"):
        spec = dict(model=model, volume_shape=list(s.volume_shape), batch=8, device="cuda")
        spec.update(warmup=max(s.warmup, 2), steps=max(s.steps, 5), **opts)
        rows.append(dict(name=name, **call_worker(spec, s, s.isolate)))
    return dict(device=torch.cuda.get_device_name(0), rows=rows)


BENCHES = dict(train=bench_train, memory=bench_memory, latency=bench_latency, cache=bench_cache,
               frozen=bench_frozen, tta=bench_tta, tta_real=bench_tta_real,
               pipeline=bench_pipeline, gpu=bench_gpu)  # fmt: skip


# ----------------------------------------------------------------------------- targets


def _rows(results: dict, section: str) -> dict[str, dict]:
    """A section's rows by name (rows without a result left out)."""
    rows = results.get(section, {}).get("rows", [])
    return {r["name"]: r for r in rows if "error" not in r and "skipped" not in r}


def _target(name: str, value: float, op: str, goal: float, note: str = "") -> dict:
    ok = value >= goal if op == ">=" else value <= goal
    return dict(
        name=name,
        value=value,
        goal=f"{op} {goal:g}",
        status="pass" if ok else "short",
        note=note or f"{value / goal:.2f} of the target",
    )


def tta_target(name: str, fast_row: dict, slow_row: dict, target_mae: float) -> dict:
    """Time-to-accuracy ratio ``fast_row`` / ``slow_row`` against <= ``tta_ratio``.

    A model that misses the target within its cap counts as >= its training time, so when one
    of the two misses it the ratio is a bound: an upper bound when the second misses it, a lower
    bound when the first does; the status is "undecided" when the bound does not settle it.
    """
    goal = TARGETS["tta_ratio"]

    def said(r):
        if r["reached"]:
            return f"{r['time_to_target_s']:.0f} s"
        return f"not reached in {r['train_s']:.0f} s (best {r['best_val_mae']:.2f} y)"

    note = f"val MAE <= {target_mae:.2f} y: {said(fast_row)} vs {said(slow_row)}"
    row = dict(name=name, value=None, goal=f"<= {goal:g}", status="undecided", note=note)
    t_fast = fast_row["time_to_target_s"] if fast_row["reached"] else fast_row["train_s"]
    t_slow = slow_row["time_to_target_s"] if slow_row["reached"] else slow_row["train_s"]
    row["value"] = t_fast / t_slow
    if fast_row["reached"] and slow_row["reached"]:
        row["status"] = "pass" if row["value"] <= goal else "short"
    elif fast_row["reached"]:
        row.update(value_is="upper bound", status="pass" if row["value"] <= goal else "undecided")
    elif slow_row["reached"]:
        row.update(value_is="lower bound", status="short" if row["value"] > goal else "undecided")
    else:
        row["value"] = None
    return row


def targets(results: dict) -> list[dict]:
    """The issues' targets as ratios from this run: name, value, goal, status, note."""
    out = []
    train = _rows(results, "train")
    r18, dn = train.get("slicelib resnet18, 1 axis"), train.get("MONAI DenseNet121-3D")
    if r18 and dn:
        what = "training throughput resnet18 / DenseNet121-3D (CPU)"
        out.append(
            _target(what, r18["volumes_per_s"] / dn["volumes_per_s"], ">=", TARGETS["train_ratio"])
        )
        exact = [r for n, r in train.items() if n.startswith("slicelib resnet18, 1 axis +")]
        if exact:  # the exact options (same training function): folded stem, channels_last
            best = max(exact, key=lambda r: r["volumes_per_s"])
            note = f"{best['name']}: {best['volumes_per_s'] / r18['volumes_per_s']:.2f}x the plain"
            what = "training throughput, best exact option / DenseNet121-3D"
            out.append(
                _target(
                    what,
                    best["volumes_per_s"] / dn["volumes_per_s"],
                    ">=",
                    TARGETS["train_ratio"],
                    note,
                )
            )
    else:
        out.append(dict(name="training throughput ratio", status="not measured"))
    memory = results.get("memory", {})
    chunked = [r for n, r in _rows(results, "memory").items() if n.startswith("chunk")]
    if chunked and memory.get("batch") == 8:
        best = min(chunked, key=lambda r: r["peak_bytes"])
        what = f"peak training memory, 8 x {memory['slices']} slices, {best['name']} (GB, peak RSS)"
        out.append(_target(what, best["peak_bytes"] / GB, "<=", TARGETS["memory_gb"]))
    else:
        out.append(dict(name="peak training memory, batch 8", status="not measured"))
    for section, what, key in (
        ("cache", "cached loading / decoding + preprocessing .nii.gz", "cache_ratio"),
        ("frozen", "epoch time fine-tuning / frozen encoder on cached features", "frozen_ratio"),
    ):
        if "ratio" in results.get(section, {}):
            out.append(_target(what, results[section]["ratio"], ">=", TARGETS[key]))
    for section, task in (("tta", "synthetic"), ("tta_real", "real IXI")):
        tta = _rows(results, section)
        for arm in (TTA_FINETUNED, TTA_FROZEN):
            if arm in tta and TTA_DENSENET in tta:
                what = f"time-to-accuracy ({task}) {arm} / DenseNet121-3D"
                mae = results[section]["target_mae"]
                out.append(tta_target(what, tta[arm], tta[TTA_DENSENET], mae))
        if not any(t["name"].startswith(f"time-to-accuracy ({task})") for t in out):
            out.append(dict(name=f"time-to-accuracy ({task})", status="not measured"))
    pipe = results.get("pipeline", {})
    if pipe.get("median_s") is not None:
        what = f"preprocessing pipeline, s per 2 mm head ({pipe['threads']} thread(s))"
        out.append(_target(what, pipe["median_s"], "<=", TARGETS["pipeline_s"]))
    mfus = [r["mfu"] for n, r in _rows(results, "gpu").items() if "bf16" in n and r.get("mfu")]
    if mfus:
        out.append(_target("GPU MFU, bf16 (best variant)", max(mfus), ">=", TARGETS["mfu"]))
    else:
        gpu = results.get("gpu", {})
        out.append(dict(name="GPU MFU, bf16", status=f"skipped: {gpu.get('skipped', 'not run')}"))
    return out


# ----------------------------------------------------------------------------- report (pandas)


def table(rows: list[dict], columns: dict[str, str]) -> str:
    """Markdown table of ``rows`` with ``columns`` (key -> header); a row's ``error`` or
    ``skipped`` message goes into its second column. Floats: 3 significant digits."""
    df = pd.DataFrame(rows)
    for key in ("error", "skipped"):
        if key in df:
            first = next(k for k in columns if k != "name")
            df[first] = df[first].astype(object).where(df[key].isna(), key + ": " + df[key])
    df = df.reindex(columns=list(columns)).rename(columns=columns)
    return df.astype(object).where(df.notna(), "").to_markdown(index=False, floatfmt=".3g")


def _train_report(sec: dict) -> list[str]:
    numbers = ["volumes_per_s", "flops_per_step", "achieved_flops", "peak_bytes", "delta_bytes"]
    df = pd.DataFrame(sec["rows"])
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *numbers])))
    vps = df.set_index("name")["volumes_per_s"]
    df["vs_densenet"] = df["volumes_per_s"] / vps.get("MONAI DenseNet121-3D", np.nan)
    df["on_off"] = df["volumes_per_s"] / df["off"].map(vps).astype(float)
    df["gflop"], df["gflops"] = df["flops_per_step"] / 1e9, df["achieved_flops"] / 1e9
    df["peak_gb"], df["delta_gb"] = df["peak_bytes"] / GB, df["delta_bytes"] / GB
    columns = dict(
        name="model",
        params_m="params (M)",
        median_s="s/step",
        volumes_per_s="volumes/s",
        vs_densenet="x DenseNet121-3D",
        on_off="x option off",
        skipped_slices="slices skipped",
        gflop="GFLOP/step",
        gflops="GFLOP/s",
        peak_gb="peak RSS (GB)",
        delta_gb="training delta (GB)",
    )
    where = "one process per model" if sec["isolated"] else "all models in one process"
    return [
        f"## Training throughput and memory (batch {sec['batch']}; forward + backward + Adam)",
        table(df.to_dict("records"), columns),
        f"Peak RSS: the process's peak while the model trained ({where}); training delta: peak "
        "minus the RSS before the first step. The first (FLOP-counting) step is the warm-up. "
        "x option off: volumes/s over the row without that option (folded stem, channels_last: "
        "the same training function; BN per volume: BatchNorm statistics per volume, the same as "
        "the folded-stem row at batch 1; skip background: exact with frozen BatchNorm only).",
    ]


def _memory_report(sec: dict) -> list[str]:
    rows = [
        dict(r, peak_gb=r.get("peak_bytes", 0) / GB, delta_gb=r.get("delta_bytes", 0) / GB)
        for r in sec["rows"]
    ]
    title = f"## Peak training memory, batch {sec['batch']} x {sec['slices']} slices (resnet18, sagittal; slice_chunk {sec['slice_chunk']})"
    columns = dict(
        name="slice encoding",
        median_s="s/step",
        peak_gb="peak RSS (GB)",
        delta_gb="training delta (GB)",
    )
    return [title, table(rows, columns)]


def _latency_report(sec: dict) -> list[str]:
    plain = sec["rows"][0].get("median_s")
    rows = [
        dict(r, speedup=plain / r["median_s"] if "median_s" in r else None) for r in sec["rows"]
    ]
    columns = dict(
        name="path",
        median_s="median s",
        speedup="speed-up",
        d_output="max abs d output",
        skipped_slices="slices skipped",
        first_call_s="first call s",
    )
    bad = [r["name"] for r in sec["rows"] if r.get("non_finite")]
    return [
        f"## Inference latency, one scan after loading (resnet18, sagittal; {sec['input']})",
        table(rows, columns),
        "d output: max abs difference from the plain model on the same input and weights.",
        *([f"Non-finite (NaN/inf) output in this run: {', '.join(bad)}."] if bad else []),
    ]


def _cache_report(sec: dict) -> list[str]:
    rows = [dict(r, volumes_per_s=1 / r["s_per_volume"]) for r in sec["rows"]]
    columns = dict(name="path", s_per_volume="s/volume", volumes_per_s="volumes/s")
    title = f"## Data pipeline ({sec['files']} files: {sec['source']}): cache {sec['ratio']:.0f}x"
    return [title, table(rows, columns)]


def _frozen_report(sec: dict) -> list[str]:
    return [
        f"## Frozen encoder vs fine-tuning: {sec['ratio']:.0f}x cheaper epochs after caching",
        table(sec["rows"], dict(name="what", seconds="seconds")),
        f"MobileNetV2 slice model ({sec['weights']} weights, channels_last), {sec['subjects']} "
        f"training volumes, {sec['preprocessing']}; batch {sec['batch']}, Adam, measured side "
        "by side in this run. Frozen, the library's path (what `TrainConfig(freeze_encoder="
        "True)` runs): `slicelib.frozen.cached_features` encodes every slice once in eval mode "
        f"and writes per-subject (S, F) = {tuple(sec.get('features', ()))} float32 files; "
        "`FrozenHead` trains the projection, position, norm, pooling and head on them.",
    ]


def _pipeline_report(sec: dict) -> list[str]:
    rows = [dict(h, name=h["subject"]) for h in sec["heads"]]
    median = f"{sec['median_s']:.1f} s" if sec["median_s"] is not None else "no head"
    columns = dict(name="head", seconds="seconds", dice="brain Dice", ncc="template NCC")
    return [
        f"## Preprocessing pipeline: {median} per raw 2 mm head (median; target <= 15 s)",
        table(rows, columns),
        f"`slicelib.pipeline.run_pipeline` (default config: deepbet, N4, 12-dof affine to "
        f"MNI152, 2 mm grid), {sec['threads']} torch/ITK thread(s), one head at a time, via "
        f"`benchmarks/realscan.py`'s `one_head` on {sec['source']}. All heads: "
        "`python benchmarks/realscan.py --jobs 2` (results/realscan.md).",
    ]


def _tta_report(sec: dict) -> list[str]:
    every = f"every {sec['val_steps']} steps and " if sec["val_steps"] else ""
    rows = [
        dict(
            r,
            when=f"{r['time_to_target_s']:.3g}"
            if r["reached"]
            else f"not reached in {r['train_s']:.3g} (>= cap)",
        )
        if "reached" in r
        else r
        for r in sec["rows"]
    ]
    columns = dict(
        name="model",
        when="time to target (s)",
        cap_s="cap (s)",
        train_s="training s",
        encode_s="of which encoding once",
        best_val_mae="best val MAE (y)",
        epochs="epochs",
    )
    return [
        f"## Time-to-accuracy ({sec.get('task', 'synthetic')} brain-age task)",
        f"{sec['subjects']} subjects ({sec['train']} train / {sec['val']} val), "
        f"{sec['preprocessing']}; batch {sec['batch']}, Adam lr {sec['lr']:g} for every model. "
        f"Target: validation MAE <= {sec['target_rel']:g} x the predict-the-training-mean "
        f"baseline ({sec['mean_baseline_val_mae']:.2f} y) = {sec['target_mae']:.2f} y; validation "
        f"{every}at each epoch end; the clock counts "
        "training steps (and the frozen encoder's one-time encoding). DenseNet121-3D's cap grows "
        "to 2x the fine-tuned slicelib time so that the <= 0.5x target is decided; a model that "
        "misses the target counts as >= its cap (a bound, never a time). Models: `SliceModel` "
        "MobileNetV2 (sagittal, channels_last); frozen: `slicelib.frozen.encode_features` + "
        "`FrozenHead`; DenseNet121-3D: `slicelib.cnn3d.VolumeCNN('densenet121_3d')` (MONAI); "
        "every output is mean + SD x head (training ages), the loss the MSE in SD units.",
        table(rows, columns),
    ]


def _gpu_report(sec: dict) -> list[str]:
    if "skipped" in sec:
        return ["## GPU (CUDA)", f"skipped: {sec['skipped']}"]
    rows = [
        dict(r, tflops=r.get("achieved_flops", 0) / 1e12, peak_gb=r.get("peak_bytes", 0) / GB)
        for r in sec["rows"]
    ]
    columns = dict(
        name="variant",
        volumes_per_s="volumes/s",
        tflops="TFLOP/s",
        mfu="MFU (bf16 dense peak)",
        peak_gb="peak GB",
    )
    return [f"## GPU (CUDA): {sec['device']}, batch 8", table(rows, columns)]


REPORTS = dict(
    train=_train_report,
    memory=_memory_report,
    latency=_latency_report,
    cache=_cache_report,
    frozen=_frozen_report,
    tta=_tta_report,
    tta_real=_tta_report,
    pipeline=_pipeline_report,
    gpu=_gpu_report,
)


def to_markdown(results: dict) -> str:
    """The Markdown report of a results dict (see :func:`main`): header, targets, sections."""
    m, st = results["machine"], results["settings"]
    load = m["loadavg"][0]
    bf16 = "native" if m["cpu_bf16_native"] else "emulated (no avx512_bf16 / amx_bf16)"
    parts = [
        f"# slicelib benchmark ({st['mode']} mode)",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"{m['memory_gb']} GB RAM; GPU: {m['gpu'] or 'none'}; torch {m['torch']}, MONAI "
        f"{m.get('monai', '-')}, Python {m['python']}; {m['date']}. CPU bf16: {bf16}. Load "
        f"average {load:.2f} at start, {results['loadavg_end'][0]:.2f} at end; total "
        f"{results['total_s']:.0f} s. Input {tuple(st['volume_shape'])} voxels.",
    ]
    if load > 0.5 * m["cores"]:  # at the start: by the end the average includes this run
        parts.append("**Measured on a loaded machine: timings are noisy and slow.**")
    if results.get("note"):
        parts.append(f"Note: {results['note']}")
    bound = {"upper bound": "<= ", "lower bound": ">= "}
    tg = [
        dict(t, value=f"{bound.get(t.get('value_is'), '')}{t['value']:.3g}")
        if t.get("value") is not None
        else t
        for t in results["targets"]
    ]
    columns = dict(name="target", value="value", goal="goal", status="status", note="note")
    parts += ["## Targets (ratios from this run)", table(tg, columns)]
    for name in results["sections"]:
        sec = results[name]
        if "skipped" in sec and name != "gpu":
            parts += [f"## {name}", f"skipped: {sec['skipped']}"]
        else:
            parts += REPORTS[name](sec)
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="quick mode: ~10 min on 2 cores")
    mode.add_argument("--tiny", "--dry-run", dest="tiny", action="store_true", help="a tiny grid")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--name", help="results file name (default: the mode)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder")
    ap.add_argument("--work-dir", help="cohort/cache folder (default $SLICELIB_CACHE/bench)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile rows")
    ap.add_argument("--tta-cap", type=float, help="time-to-accuracy cap per model (s)")
    ap.add_argument("--tta-lr", type=float, help="time-to-accuracy Adam learning rate")
    ap.add_argument("--real-cap", type=float, help="tta_real cap per model (s)")
    ap.add_argument(
        "--tta-target",
        type=float,
        help="time-to-accuracy target: val MAE <= this x the predict-the-training-mean "
        "val MAE (default 0.5, issue 14)",
    )
    ap.add_argument("--no-isolate", action="store_true", help="measure every model in this process")
    ap.add_argument("--train-batch", type=int, help="batch of the training table (quick: 1)")
    ap.add_argument("--train-models", help="regex: only the training-table models it matches")
    ap.add_argument("--note", default="", help="a line for the report header")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write ``<out>/<name>.json`` and ``.md``; print the report."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(train_worker(json.loads(args.worker))), flush=True)
        return {}
    overrides = dict(
        compile=args.compile,
        tta_cap_s=args.tta_cap,
        real_cap_s=args.real_cap,
        tta_lr=args.tta_lr,
        tta_target=args.tta_target,
        train_batch=args.train_batch,
        train_models=args.train_models,
        isolate=False if args.no_isolate else None,
    )
    s = MODES["quick" if args.quick else "tiny" if args.tiny else "full"]
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if set(sections) - set(SECTIONS):
        raise SystemExit(
            f"unknown sections {sorted(set(sections) - set(SECTIONS))}; choose from {SECTIONS}"
        )
    base = Path(os.environ.get("SLICELIB_CACHE") or Path.home() / ".cache" / "slicelib")
    work_dir = Path(args.work_dir) if args.work_dir else base / "bench"
    work_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    results = dict(machine=machine_info(), settings=asdict(s), sections=sections, note=args.note)
    results["section_s"] = {}
    for name in sections:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = BENCHES[name](s, work_dir)
        except Exception as err:  # noqa: BLE001 - one failed section does not lose the others
            results[name] = dict(skipped=f"failed: {type(err).__name__}: {err}")
        results["section_s"][name] = time.perf_counter() - t0
    results.update(total_s=time.perf_counter() - t_start, loadavg_end=list(os.getloadavg()))
    results["targets"] = targets(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or s.mode
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    md = to_markdown(results)
    (out / f"{name}.md").write_text(md)
    print(md)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in results["section_s"].items())
    print(f"wrote {out / name}.json and .md; total {results['total_s']:.0f} s ({times})")
    return results


if __name__ == "__main__":
    main()
