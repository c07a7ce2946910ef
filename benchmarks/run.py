"""slicelib benchmarks: speed, memory and time-to-accuracy against 3D peers, side by side in one run.

    python benchmarks/run.py --quick      # < 10 min on 2 CPU cores (small batches, short caps)
    python benchmarks/run.py              # full mode (batch 8, longer caps, torch.compile)
    python benchmarks/run.py --tiny       # seconds: a tiny grid, checks that everything runs

Writes ``benchmarks/results/<name>.json`` (every number, the machine, the settings) and
``benchmarks/results/<name>.md`` (the Markdown table, also printed). Sections:

1. ``train``    training throughput (volumes/s; forward + backward + Adam step) and peak memory,
                one subprocess per model so each peak is its own: SliceModel resnet18 and
                mobilenet_v2 on one and three axes, MONAI 3D DenseNet121 and 3D ResNet18,
                an SFCN-style 3D CNN.
2. ``memory``   peak training memory for a batch of 8 volumes (8 x 91 slices) with slice
                chunking + activation checkpointing on and off.
3. ``latency``  inference latency for one scan after loading (model forward, and
                ``slicelib.train.predict_files`` when it exists).
4. ``data``     volumes/s decoding + preprocessing .nii.gz vs loading from the cache.
5. ``opts``     each optimisation of :mod:`slicelib.fast` on and off, with its max abs output
                difference from the plain model.
6. ``tta``      time-to-accuracy on the synthetic brain-age task (needs ``slicelib.synth``).
7. ``gpu``      CUDA only: fp32 vs bf16 autocast, channels_last, torch.compile; volumes/s and
                model FLOP utilisation (MFU, as nanoGPT's estimate_mfu).

Each timing: warm-up step(s), then timed steps; the median is reported. Nothing here asserts a
time: the targets of issue 6 are printed as ratios with pass/short.
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
import torch
from torch import nn
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):  # run from a checkout, without installing
    if _p not in sys.path:
        sys.path.insert(0, _p)

from sfcn import SFCN  # noqa: E402

from slicelib import fast  # noqa: E402
from slicelib.course import shared_dir  # noqa: E402
from slicelib.model import SliceModel  # noqa: E402

GB = 1024**3
MB = 1024**2

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
    "tta_ratio": 0.5,  # slicelib-ImageNet time-to-accuracy over MONAI DenseNet121-3D
    "mfu": 0.40,  # GPU, bf16
}


# ----------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Sizes of one benchmark mode (all times in seconds, shapes in voxels)."""

    mode: str = "full"
    shape: tuple = (91, 109, 91)
    train_batch: int = 8
    train_models: str | None = None  # regex on the training-table names (None: all)
    warmup: int = 1
    steps: int = 3
    memory_batch: int = 8
    memory_steps: int = 2
    memory_variants: tuple = ("off", "chunk", "chunk+checkpoint")
    slice_chunk: int = 32
    latency_reps: int = 10
    data_files: int = 10
    opts_reps: int = 5
    opts_train_batch: int = 2
    opts_train_steps: int = 2
    compile: bool = True
    tta_subjects: int = 200
    tta_grid: tuple = (45, 54, 45)
    tta_voxel: float = 4.0
    tta_batch: int = 8
    tta_cap_s: float = 900.0  # seconds of training steps per model
    # DenseNet's cap may grow to 2x slicelib-ImageNet's time to target, up to this
    tta_cap_max_s: float = 1800.0
    tta_target_mae: float = 8.0  # years; used when tta_target_rel is None
    tta_target_rel: float | None = 0.6  # target = this x the predict-the-training-mean val MAE
    tta_lr: float = 1e-3
    tta_val_steps: int = 10  # validate every this many optimiser steps (and each epoch end)
    predict_subjects: int = 4
    isolate: bool = True
    train_isolate: bool = True  # one process per model in the training table (else this one)
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
        data_files=4,
        opts_reps=2,
        opts_train_batch=1,
        opts_train_steps=0,  # training steps are timed in the training table instead
        train_isolate=False,  # a fresh process costs ~10 s of imports per model
        compile=False,
        tta_subjects=120,
        tta_grid=(30, 36, 30),  # 6 mm: the coarsest grid MONAI's DenseNet121-3D accepts
        tta_voxel=6.0,
        tta_batch=8,
        tta_lr=1e-3,
        tta_cap_s=40.0,
        tta_cap_max_s=100.0,
        tta_target_rel=0.7,
        tta_val_steps=4,
        worker_timeout_s=300.0,
    ),
    "tiny": Settings(
        mode="tiny",
        shape=(16, 20, 16),
        train_batch=2,
        steps=1,
        memory_batch=2,
        memory_steps=1,
        memory_variants=("off", "chunk+checkpoint"),
        slice_chunk=8,
        latency_reps=1,
        data_files=2,
        opts_reps=1,
        opts_train_batch=1,
        opts_train_steps=1,
        compile=False,
        tta_subjects=8,
        tta_grid=(30, 36, 30),
        tta_voxel=6.0,
        tta_batch=2,
        tta_cap_s=5.0,
        tta_cap_max_s=10.0,
        tta_target_mae=8.0,
        tta_target_rel=None,
        tta_val_steps=0,
        predict_subjects=4,
        isolate=False,
        worker_timeout_s=300.0,
    ),
}

R18 = dict(kind="slice", backbone="resnet18", axes="sagittal")
# name, model spec (build_model), worker options (train_worker: fast wrapper, input)
TRAIN_MODELS = (
    ("slicelib resnet18, 1 axis", R18, {}),
    ("slicelib resnet18, 1 axis + folded stem", dict(R18, stem="fold"), {}),
    ("slicelib resnet18, 1 axis + fold + channels_last", dict(R18, stem="fold"), dict(fast=dict(skip_constant=False, channels_last=True))),
    ("slicelib resnet18, 1 axis, fold, BN per volume (slice_chunk 91)", dict(R18, stem="fold", slice_chunk=91), {}),
    ("slicelib resnet18, 1 axis, frozen BN (IXI head)", dict(R18, freeze_batchnorm=True), dict(input="head")),
    ("slicelib resnet18, 1 axis, frozen BN + skip background (IXI head)", dict(R18, freeze_batchnorm=True), dict(fast=dict(skip_constant=True), input="head")),
    ("slicelib resnet18, 3 axes", dict(R18, axes="all"), {}),
    ("slicelib mobilenet_v2, 1 axis", dict(kind="slice", backbone="mobilenet_v2", axes="sagittal"), {}),
    ("slicelib mobilenet_v2, 1 axis + channels_last", dict(kind="slice", backbone="mobilenet_v2", axes="sagittal", channels_last=True), {}),
    ("slicelib mobilenet_v2, 3 axes", dict(kind="slice", backbone="mobilenet_v2", axes="all"), {}),
    ("MONAI DenseNet121-3D", dict(kind="monai_densenet121"), {}),
    ("MONAI ResNet18-3D", dict(kind="monai_resnet18"), {}),
    ("SFCN-style 3D CNN", dict(kind="sfcn"), {}),
)  # fmt: skip
# the exact speed options of slicelib.fast measured in the training table (on/off vs the first row)
FAST_TRAIN_ROWS = tuple(name for name, _, opts in TRAIN_MODELS if "+" in name)


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """The machine and software a result was measured with (JSON-serialisable dict)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = fast.cpu_flags()
    info = dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        loadavg=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        memory_gb=_meminfo_gb(),
        cpu_bf16_flags=sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        cpu_bf16_native=fast.bf16_native("cpu"),
        cuda=torch.cuda.is_available(),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )
    with contextlib.suppress(ImportError):
        import monai

        info["monai"] = monai.__version__
    return info


def _meminfo_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


# ----------------------------------------------------------------------------- memory


def _status_kb(field_name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def _trim() -> None:
    """Free what Python and glibc malloc hold but do not use, so RSS shows live memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Measure peak memory of a block: CUDA peak allocated, or CPU peak RSS (bytes).

    CPU: resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5) on entry and reads
    ``VmHWM`` on exit; ``delta`` = peak minus the RSS at entry (what the block added). Where the
    reset is unavailable the peak is the process's lifetime peak (``ru_maxrss``).
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.start = self.peak = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        _trim()
        self.start = (_status_kb("VmRSS") or 0) * 1024
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
            self.peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def delta(self) -> int:
        """Peak minus the memory in use at entry, bytes."""
        return max(self.peak - self.start, 0)


# ----------------------------------------------------------------------------- models


def build_model(spec: dict, shape) -> nn.Module:
    """Build a benchmarked model from ``spec`` (kind + options) for input grid ``shape`` (X, Y, Z).

    Every model maps ``(B, 1, X, Y, Z)`` -> ``(B,)`` or ``(B, 1)`` (regression).
    """
    torch.manual_seed(0)
    kind = spec["kind"]
    if kind == "slice":
        axes = ("sagittal", "coronal", "axial") if spec.get("axes") == "all" else spec["axes"]
        return SliceModel(
            spec.get("backbone", "resnet18"),
            spec.get("weights"),
            axes=axes,
            volume_shape=tuple(shape),
            stem=spec.get("stem", "repeat"),
            slice_chunk=spec.get("slice_chunk"),
            checkpoint_activations=spec.get("checkpoint_activations", False),
            freeze_batchnorm=spec.get("freeze_batchnorm", False),
            channels_last=spec.get("channels_last", False),
            seed=0,
        )
    if kind == "sfcn":
        return SFCN()
    from monai.networks import nets

    if kind == "monai_densenet121":
        return nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=1)
    if kind == "monai_resnet18":
        return nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=1)
    raise ValueError(f"unknown model kind {kind!r}")


def count_flops(fn) -> int:
    """FLOPs (multiply-add = 2) that ``fn()`` runs, counted by ``torch.utils.flop_counter``."""
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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, warmup: int, steps: int, device: str = "cpu", desc: str = "") -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times timed; seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=not desc):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def train_worker(spec: dict) -> dict:
    """Measure one model's training step (in its own process when isolated).

    ``spec``: ``model`` (see :func:`build_model`), ``shape`` (X, Y, Z), ``batch``, ``warmup``,
    ``steps``, ``device`` ("cpu"/"cuda"), ``bf16``, ``channels_last``, ``compile``, ``flops``,
    ``fast`` (slice models: keyword arguments of :class:`slicelib.fast.FastSliceModel`),
    ``input`` ("random": N(0, 1) voxels; "head": a real preprocessed head, repeated over the
    batch, from ``work_dir``; only the skip-background option depends on the values).
    Returns seconds per step (list and median), volumes/s, peak memory (bytes: ``peak``,
    ``delta`` over the memory held before the first step, i.e. model + batch), FLOPs per
    step, achieved FLOP/s and MFU (CUDA, known device).
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec.get("device", "cpu")
    shape, batch = tuple(spec["shape"]), int(spec["batch"])
    model = build_model(spec["model"], shape).to(device).train()
    run = model
    if spec.get("fast") is not None:  # slice models: FastSliceModel wraps (same parameters)
        run = fast.FastSliceModel(model, **spec["fast"]).train()
    elif spec.get("channels_last"):
        fast.to_channels_last(model)
    g = torch.Generator().manual_seed(0)
    if spec.get("input") == "head":
        x1, source = _example_volume(shape, Path(spec["work_dir"]))
        x = x1.expand(batch, -1, -1, -1, -1).contiguous().to(device)  # (B, 1, X, Y, Z)
    else:
        x, source = torch.randn(batch, 1, *shape, generator=g).to(device), "N(0, 1) voxels"
    y = torch.randn(batch, generator=g).to(device)  # (B,) standardised targets
    if spec.get("channels_last") and spec["model"]["kind"] != "slice":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    use_bf16 = bool(spec.get("bf16"))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with fast.autocast(device, enabled=use_bf16):
            out = run(x).reshape(-1).float()  # (B,)
        loss = nn.functional.mse_loss(out, y)
        loss.backward()
        opt.step()

    n_params = sum(p.numel() for p in model.parameters())
    result = dict(params_m=n_params / 1e6, batch=batch, device=device, input=source)
    with PeakMemory(device) as mem:
        if spec.get("flops", True):
            result["flops_per_step"] = count_flops(step)  # also the first warm-up step
            warmup = max(int(spec["warmup"]) - 1, 0)
        else:
            warmup = int(spec["warmup"])
        if spec.get("compile"):
            t0 = time.perf_counter()
            run = torch.compile(run)
            step()
            result["compile_s"] = time.perf_counter() - t0
        times = time_calls(step, warmup, int(spec["steps"]), device)
    if hasattr(run, "last_skipped"):
        result["skipped_slices"] = run.last_skipped
    med = statistics.median(times)
    result.update(
        step_s=times,
        median_s=med,
        volumes_per_s=batch / med,
        peak_bytes=mem.peak,
        delta_bytes=mem.delta,
        memory_method=mem.method,
    )
    if "flops_per_step" in result:
        result["achieved_flops"] = result["flops_per_step"] / med
        if device == "cuda":
            peak = peak_flops(torch.cuda.get_device_name(0))
            result["peak_flops"] = peak
            result["mfu"] = result["achieved_flops"] / peak if peak else None
    return result


def call_worker(spec: dict, settings: Settings, isolate: bool | None = None) -> dict:
    """Run :func:`train_worker` in a fresh Python process (or in this one if not isolating)."""
    if not (settings.isolate if isolate is None else isolate):
        try:
            return train_worker(spec)
        except Exception as err:  # noqa: BLE001 - reported in the table
            return dict(error=f"{type(err).__name__}: {err}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=settings.worker_timeout_s
        )
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {settings.worker_timeout_s:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(error=f"worker exit {proc.returncode}: {' | '.join(tail)}")


# ----------------------------------------------------------------------------- sections


def bench_train(s: Settings, work_dir: Path, device: str = "cpu") -> dict:
    """Training throughput and peak memory of every model, same input, same batch."""
    rows = []
    models = [m for m in TRAIN_MODELS if not s.train_models or re.search(s.train_models, m[0])]
    if not models:
        names = "; ".join(name for name, _, _ in TRAIN_MODELS)
        raise SystemExit(f"--train-models {s.train_models!r} matches none of: {names}")
    for name, model, opts in tqdm(models, desc="train throughput"):
        spec = dict(
            model=model,
            shape=list(s.shape),
            batch=s.train_batch,
            warmup=s.warmup,
            steps=s.steps,
            device=device,
            threads=torch.get_num_threads(),
            work_dir=str(work_dir),
            **opts,
        )
        res = call_worker(spec, s, isolate=s.isolate and s.train_isolate)
        rows.append(dict(name=name, spec=dict(model, **opts), **res))
        _trim()
    return dict(
        batch=s.train_batch,
        shape=list(s.shape),
        isolated=s.isolate and s.train_isolate,
        rows=rows,
    )


def bench_memory(s: Settings) -> dict:
    """Peak training memory for ``memory_batch`` volumes of resnet18 slices, chunking on/off."""
    variants = {
        "off": dict(),
        "chunk": dict(slice_chunk=s.slice_chunk),
        "chunk+checkpoint": dict(slice_chunk=s.slice_chunk, checkpoint_activations=True),
    }
    rows = []
    for name in tqdm(s.memory_variants, desc="memory"):
        model = dict(kind="slice", backbone="resnet18", axes="sagittal", **variants[name])
        spec = dict(
            model=model,
            shape=list(s.shape),
            batch=s.memory_batch,
            warmup=0,
            steps=s.memory_steps,
            flops=False,
            threads=torch.get_num_threads(),
        )
        rows.append(dict(name=name, spec=model, **call_worker(spec, s)))
    return dict(batch=s.memory_batch, slices=s.shape[0], slice_chunk=s.slice_chunk, rows=rows)


def _example_volume(shape, work_dir: Path) -> tuple[torch.Tensor, str]:
    """One realistic z-scored volume ``(1, 1, X, Y, Z)`` and where it came from.

    A real IXI head preprocessed by ``slicelib.data`` when the shared data are there (it has
    constant background slices at the grid edges); else a synthetic ellipsoid head.
    """
    with contextlib.suppress(Exception):
        from slicelib import data as D

        files = _ixi_files()
        if files and tuple(shape) == tuple(D.MNI_2MM_SHAPE):
            vol = D.load_preprocessed(files[0], D.PreprocessConfig(), cache_dir=work_dir / "cache")
            return torch.from_numpy(np.asarray(vol, np.float32))[None, None], f"IXI {files[0].name}"
    X, Y, Z = shape
    grid = np.stack(np.meshgrid(*[np.linspace(-1.3, 1.3, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 1.0
    rng = np.random.default_rng(0)
    vol = np.where(inside, 1.0 + 0.3 * rng.standard_normal(shape), 0.0).astype(np.float32)
    vol = (vol - vol[inside].mean()) / vol[inside].std()
    return torch.from_numpy(vol)[None, None], "synthetic ellipsoid head"


def _ixi_files() -> list[Path]:
    root = Path(os.environ.get("SLICELIB_IXI10") or shared_dir() / "data" / "ixi10")
    return sorted(root.glob("*.nii.gz"))


def bench_latency(s: Settings, work_dir: Path) -> dict:
    """Inference latency for one scan after loading: model forward, and ``predict_files``."""
    x, source = _example_volume(s.shape, work_dir)
    out = dict(input=source, rows=[])
    configs = [
        ("SliceModel resnet18, 1 axis (plain)", {}, {}),
        (
            "SliceModel resnet18, 1 axis (fold + skip background)",
            dict(stem="fold"),
            dict(skip_constant=True),
        ),
    ]
    for name, model_kw, fast_kw in configs:
        model = SliceModel("resnet18", volume_shape=s.shape, seed=0, **model_kw).eval()
        run = fast.FastSliceModel(model, **fast_kw) if fast_kw else model
        with torch.no_grad():
            times = time_calls(lambda run=run: run(x), 1, s.latency_reps)
        out["rows"].append(dict(name=name, median_s=statistics.median(times), times_s=times))
    out["predict_files"] = _bench_predict_files(s, work_dir)
    return out


def _bench_predict_files(s: Settings, work_dir: Path) -> dict:
    """Time ``slicelib.train.predict_files`` (load run + preprocess + forward) on one file."""
    try:
        from slicelib import data as D
        from slicelib import train as T

        T.predict_files  # noqa: B018 - fail early if it does not exist
    except (ImportError, AttributeError) as err:
        return dict(skipped=f"slicelib.train.predict_files not available ({err})")
    try:
        import nibabel as nib

        cfg = D.PreprocessConfig(shape=tuple(s.shape), voxel_size=2.0, centre="none")
        folder = work_dir / f"predict_{'x'.join(map(str, s.shape))}"
        folder.mkdir(parents=True, exist_ok=True)
        x, source = _example_volume(s.shape, work_dir)
        rows, rng = [], np.random.default_rng(0)
        for i in range(s.predict_subjects):  # a tiny table to make a run directory
            vol = x[0, 0].numpy() + 0.05 * rng.standard_normal(s.shape).astype(np.float32)
            path = folder / f"sub-{i:02d}.nii.gz"
            nib.save(nib.Nifti1Image(vol.astype(np.float32), cfg.affine), path)
            rows.append(f"sub-{i:02d}\t{30 + 10 * i}\t{path}")
        (folder / "participants.tsv").write_text("participant_id\tage\tpath\n" + "\n".join(rows))
        run_dir = folder / "run"
        if not (run_dir / "best.pt").is_file():
            T.train(
                dict(
                    data=str(folder / "participants.tsv"),
                    target="age",
                    out=str(run_dir),
                    model=dict(backbone="resnet18"),
                    preprocess=cfg.to_dict(),
                    cache_dir=str(work_dir / "cache"),
                    split_fractions=[0.5, 0.25, 0.25],
                    epochs=1,
                    batch_size=2,
                    patience=None,
                ),
                progress=False,
            )
        files = [folder / "sub-00.nii.gz"]
        times = time_calls(
            lambda: T.predict_files(run_dir, files, progress=False), 1, s.latency_reps
        )
        return dict(
            name="predict_files: load run + preprocess (on-grid file) + forward",
            input=f"{source} written as .nii.gz on the model grid",
            median_s=statistics.median(times),
            times_s=times,
        )
    except Exception as err:  # noqa: BLE001 - the other sections go on
        return dict(skipped=f"predict_files failed: {type(err).__name__}: {err}")


def bench_data(s: Settings, work_dir: Path) -> dict:
    """Volumes/s decoding + preprocessing .nii.gz files vs loading them from the cache."""
    import nibabel as nib

    files = _ixi_files()[: s.data_files]
    source = "IXI raw heads (../shared/data/ixi10)"
    if not files:
        files, source = _phantom_niftis(s, work_dir), "synthetic heads written as .nii.gz"
    out = dict(files=len(files), source=source)
    decode = [_timed(lambda f=f: np.asanyarray(nib.load(f).dataobj)) for f in files]
    out["decode_only_s"] = statistics.median(decode)
    try:
        from slicelib import data as D

        cfg = D.PreprocessConfig()
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work_dir))
        pre = [_timed(lambda f=f: D.preprocess(f, cfg)) for f in files]
        for f in files:  # fill the cache (untimed)
            D.load_preprocessed(f, cfg, cache_dir=cache)

        def cached(f):
            arr = D.load_preprocessed(f, cfg, cache_dir=cache)  # float16, memory-mapped
            return torch.from_numpy(np.asarray(arr, dtype=np.float32))  # materialised

        hot = [_timed(lambda f=f: cached(f)) for f in files for _ in range(3)]
        out.update(
            pipeline="slicelib.data.preprocess vs slicelib.data.load_preprocessed (float16 .npy "
            "cache, memory-mapped, converted to a float32 tensor; page cache warm)",
            preprocess_s=statistics.median(pre),
            cache_s=statistics.median(hot),
        )
    except ImportError:
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work_dir))
        npys = []
        for i, f in enumerate(files):
            p = cache / f"{i}.npy"
            np.save(p, np.asanyarray(nib.load(f).dataobj).astype(np.float16))
            npys.append(p)
        hot = [
            _timed(lambda p=p: torch.from_numpy(np.load(p, mmap_mode="r").astype(np.float32)))
            for p in npys
            for _ in range(3)
        ]
        out.update(
            pipeline="STAND-IN (slicelib.data missing): nibabel decode vs np.load float16 .npy",
            preprocess_s=out["decode_only_s"],
            cache_s=statistics.median(hot),
        )
    out["preprocess_volumes_per_s"] = 1 / out["preprocess_s"]
    out["cache_volumes_per_s"] = 1 / out["cache_s"]
    out["ratio"] = out["preprocess_s"] / out["cache_s"]
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _phantom_niftis(s: Settings, work_dir: Path) -> list[Path]:
    import nibabel as nib

    folder = work_dir / "phantoms"
    folder.mkdir(parents=True, exist_ok=True)
    x, _ = _example_volume((91, 109, 91), work_dir)
    vol = np.clip((x[0, 0].numpy() + 2) * 50, 0, 255).astype(np.uint8)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    paths = []
    for i in range(s.data_files):
        p = folder / f"phantom-{i}.nii.gz"
        if not p.is_file():
            nib.save(nib.Nifti1Image(np.roll(vol, i, axis=0), affine), p)
        paths.append(p)
    return paths


OPT_VARIANTS = (
    # name, SliceModel kwargs, FastSliceModel kwargs (None = plain model), eval-only
    ("plain (fp32, repeat stem)", {}, None, False),
    ("channels_last", {}, dict(skip_constant=False, channels_last=True), False),
    ("folded 1-channel stem", dict(stem="fold"), None, False),
    ("bf16 autocast", {}, dict(skip_constant=False, autocast_dtype=torch.bfloat16), False),
    ("skip constant (background) slices", {}, dict(skip_constant=True), True),
    ("chunked encoding (slice_chunk)", "chunk", None, False),
    ("chunked + activation checkpointing", "chunk+ckpt", None, False),
    ("torch.compile (encoder)", {}, "compile", False),
    ("fold + channels_last + skip", dict(stem="fold"), dict(channels_last=True), False),
)


def bench_opts(s: Settings, work_dir: Path) -> dict:
    """Each optimisation on and off: eval latency (1 volume) and a training step, with max diffs.

    The model is SliceModel resnet18, sagittal, the same seed (so the same weights) in every
    variant; diffs are against the plain model on the same input: ``d_output`` (output units)
    and ``d_embed`` (LayerNorm-ed slice embeddings, unitless).
    """
    x, source = _example_volume(s.shape, work_dir)
    xb = x.expand(s.opts_train_batch, -1, -1, -1, -1).contiguous()
    y = torch.zeros(s.opts_train_batch)
    out = dict(input=source, train_batch=s.opts_train_batch, rows=[])
    ref = ref_train = None
    for name, model_kw, fast_kw, eval_only in tqdm(OPT_VARIANTS, desc="optimisations"):
        row = dict(name=name)
        if fast_kw == "compile" and not s.compile:
            row["skipped"] = "not in this mode (compiling takes ~2 min on 2 cores); use full mode"
            out["rows"].append(row)
            continue
        if model_kw == "chunk" and s.mode == "quick":
            row["skipped"] = "full mode only (chunking alone saves no training memory)"
            out["rows"].append(row)
            continue
        if model_kw == "chunk":
            model_kw = dict(slice_chunk=16)
        elif model_kw == "chunk+ckpt":
            model_kw = dict(slice_chunk=16, checkpoint_activations=True)

        def build(model_kw=model_kw, fast_kw=fast_kw):
            m = SliceModel("resnet18", volume_shape=s.shape, seed=0, **model_kw)
            if fast_kw == "compile":
                return m, fast.compile_encoder(m)
            return m, (fast.FastSliceModel(m, **fast_kw) if fast_kw else m)

        try:
            model, run = build()
            model.eval()
            with torch.no_grad():
                t0 = time.perf_counter()
                details = run(x, return_details=True)
                row["first_call_s"] = time.perf_counter() - t0
                times = time_calls(lambda run=run: run(x), 0, s.opts_reps)
            row["skipped_slices"] = getattr(run, "last_skipped", 0)
            row["eval_s"] = statistics.median(times)
            if ref is None:
                ref = details
            row["eval_d_output"] = fast.max_abs_diff(ref["output"], details["output"])
            row["eval_d_embed"] = fast.max_abs_diff(
                ref["slice_embeddings"], details["slice_embeddings"]
            )
            if eval_only:
                row["train"] = "n/a: BatchNorm batch statistics see every slice in training"
            else:
                model, run = build()
                model.train()
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)
                first = run(xb).detach()
                if ref_train is None:
                    ref_train = first
                row["train_d_output"] = fast.max_abs_diff(ref_train, first)

                def step(run=run, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    nn.functional.mse_loss(run(xb).reshape(-1).float(), y).backward()
                    opt.step()

                if s.opts_train_steps:
                    times = time_calls(step, 1, s.opts_train_steps)
                    row["train_s"] = statistics.median(times)
                else:
                    row["train"] = "timed in the training / memory tables"
        except Exception as err:  # noqa: BLE001 - reported in the table
            row["error"] = f"{type(err).__name__}: {err}"
        out["rows"].append(row)
    base = out["rows"][0]
    for row in out["rows"]:
        for key in ("eval_s", "train_s"):
            if key in row and key in base:
                row[key.replace("_s", "_speedup")] = base[key] / row[key]
    return out


# ----------------------------------------------------------------------------- time-to-accuracy


class Standardised(nn.Module):
    """Wrap a regression net: prediction (years) = mean + std * net(x); the net learns z-scores.

    Input ``(B, 1, X, Y, Z)``; output ``(B,)`` years. Used for every model alike.
    """

    def __init__(self, net: nn.Module, mean: float, std: float):
        super().__init__()
        self.net, self.mean, self.std = net, float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self.net(x).reshape(-1).float()  # (B,)


def _weights_path() -> Path | None:
    folder = Path(os.environ.get("SLICELIB_WEIGHTS_DIR") or shared_dir() / "weights")
    path = folder / "mobilenet_v2_imagenet1k.pth"
    return path if path.is_file() else None


def _load_cohort(s: Settings, work_dir: Path) -> tuple[torch.Tensor, np.ndarray, str]:
    """The synthetic cohort on the TTA grid: volumes ``(N, 1, X, Y, Z)``, ages ``(N,)`` years."""
    import pandas as pd

    from slicelib import synth

    cohort = work_dir / f"synth_n{s.tta_subjects}_seed0"
    tsv = cohort / "participants.tsv"
    if not tsv.is_file() or len(pd.read_csv(tsv, sep="\t")) < s.tta_subjects:
        synth.make_cohort(cohort, n=s.tta_subjects, seed=0, progress=True)
    table = pd.read_csv(tsv, sep="\t", dtype={"participant_id": str})
    paths = [cohort / p / "anat" / f"{p}_T1w.nii.gz" for p in table["participant_id"]]
    try:
        from slicelib import data as D

        cfg = D.PreprocessConfig(shape=tuple(s.tta_grid), voxel_size=s.tta_voxel, centre="none")
        vols = [
            np.asarray(D.load_preprocessed(p, cfg, cache_dir=work_dir / "cache"), np.float32)
            for p in tqdm(paths, desc="preprocess cohort", leave=False)
        ]
        how = f"slicelib.data.preprocess to {s.tta_voxel:g} mm {tuple(s.tta_grid)}, cached"
    except ImportError:
        import nibabel as nib
        from scipy import ndimage

        vols = []
        for p in paths:
            v = np.asarray(nib.load(p).dataobj, np.float32)
            v = ndimage.zoom(v, [g / n for g, n in zip(s.tta_grid, v.shape)], order=1)
            fg = v > v.mean()
            vols.append((v - v[fg].mean()) / v[fg].std())
        how = f"stand-in: zoom to {tuple(s.tta_grid)} + foreground z-score"
    x = torch.from_numpy(np.stack(vols))[:, None]  # (N, 1, X, Y, Z)
    return x, table["age"].to_numpy(np.float32), how


TTA_HEADLINE = "slicelib-ImageNet (mobilenet_v2)"  # the row the time-to-accuracy target uses


def _tta_models(s: Settings) -> list[tuple[str, dict]]:
    """The time-to-accuracy models: name, spec. The slicelib models use ``channels_last`` (same
    function; about 2x faster steps for MobileNetV2 on small slices on a CPU); the last row is
    the headline model without it, so the table shows that option on and off. MONAI's
    DenseNet121-3D stays in its default layout (``channels_last_3d`` measured 1.01x here)."""
    weights = _weights_path()
    mnv2 = dict(kind="slice", backbone="mobilenet_v2", axes="sagittal", channels_last=True)
    return [
        (TTA_HEADLINE, dict(mnv2, weights=weights)),
        ("slicelib-scratch (mobilenet_v2)", mnv2),
        ("MONAI DenseNet121-3D", dict(kind="monai_densenet121")),
        (f"{TTA_HEADLINE}, channels_last off", dict(mnv2, weights=weights, channels_last=False)),
    ]


def train_to_target(net, x_tr, y_tr, x_va, y_va, s: Settings, desc: str = "") -> dict:
    """Train ``net`` (Adam, MSE on z-scored ages) until validation MAE <= target or the time cap.

    The clock counts training steps only (not the validation passes, reported apart);
    validation every ``tta_val_steps`` optimiser steps (0: none in between), at the end of each
    epoch and when the cap is hit. Returns the history
    (``[train seconds, epoch, val MAE years]``), whether the target was reached and when.
    """
    mean, std = float(y_tr.mean()), float(y_tr.std() + 1e-6)
    model = Standardised(net, mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=s.tta_lr, weight_decay=1e-4)
    ytr, yva = torch.as_tensor(y_tr), torch.as_tensor(y_va)
    g = torch.Generator().manual_seed(0)
    clock = val_clock = 0.0
    history = []

    def validate(epoch: float) -> float:
        model.eval()
        with torch.no_grad():
            pred = torch.cat(
                [model(x_va[i : i + s.tta_batch]) for i in range(0, len(x_va), s.tta_batch)]
            )
        model.train()
        mae = float((pred - yva).abs().mean())
        history.append([clock, epoch, mae])
        return mae

    reached, epoch, steps = None, 0, 0
    bar = tqdm(
        desc=desc,
        total=s.tta_cap_s,
        leave=False,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of training [{elapsed}{postfix}]",
    )
    while reached is None and clock < s.tta_cap_s:
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(perm), s.tta_batch):
            idx = perm[i : i + s.tta_batch]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss((model(x_tr[idx]) - mean) / std, (ytr[idx] - mean) / std)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            clock += dt
            steps += 1
            bar.update(min(dt, max(s.tta_cap_s - bar.n, 0)))
            last = i + s.tta_batch >= len(perm) or clock >= s.tta_cap_s
            if last or (s.tta_val_steps and steps % s.tta_val_steps == 0):
                t0 = time.perf_counter()
                mae = validate(epoch + min(i + s.tta_batch, len(perm)) / len(perm))
                val_clock += time.perf_counter() - t0
                bar.set_postfix(val_mae=f"{mae:.2f}")
                if mae <= s.tta_target_mae:
                    reached = clock
                    break
            if clock >= s.tta_cap_s:
                break
        epoch += 1
    bar.close()
    return dict(
        reached=reached is not None,
        time_to_target_s=reached,
        train_s=clock,
        val_s=val_clock,
        best_val_mae=min(h[2] for h in history),
        history=history,
    )


def bench_tta(s: Settings, work_dir: Path) -> dict:
    """Time-to-accuracy on the synthetic brain-age task (needs ``slicelib.synth``)."""
    try:
        import slicelib.synth  # noqa: F401
    except ImportError as err:
        return dict(skipped=f"slicelib.synth not available yet ({err})")
    x, ages, how = _load_cohort(s, work_dir)
    perm = np.random.default_rng(0).permutation(len(ages))
    n_tr = int(round(0.75 * len(ages)))
    tr, va = perm[:n_tr], perm[n_tr:]
    baseline = float(np.abs(ages[va] - ages[tr].mean()).mean())
    if s.tta_target_rel is not None:
        s = replace(s, tta_target_mae=s.tta_target_rel * baseline)
    out = dict(
        subjects=len(ages),
        train=len(tr),
        val=len(va),
        grid=list(s.tta_grid),
        voxel_mm=s.tta_voxel,
        preprocessing=how,
        batch=s.tta_batch,
        lr=s.tta_lr,
        cap_s=s.tta_cap_s,
        cap_max_s=s.tta_cap_max_s,
        target_mae=s.tta_target_mae,
        target_rel=s.tta_target_rel,
        val_steps=s.tta_val_steps,
        mean_baseline_val_mae=baseline,
        rows=[],
    )
    cap = dict.fromkeys([name for name, _ in _tta_models(s)], s.tta_cap_s)
    for name, spec in _tta_models(s):
        if spec.get("kind") == "slice" and "weights" in spec and spec["weights"] is None:
            out["rows"].append(dict(name=name, skipped="ImageNet weights file not found"))
            continue
        spec = dict(spec, weights=str(spec["weights"])) if spec.get("weights") else spec
        net = build_model(spec, s.tta_grid).train()
        res = train_to_target(
            net, x[tr], ages[tr], x[va], ages[va], replace(s, tta_cap_s=cap[name]), desc=name
        )
        out["rows"].append(dict(name=name, cap_s=cap[name], **res))
        if name == TTA_HEADLINE and res["reached"]:
            # DenseNet's cap: long enough to decide the ratio target (a model that does not
            # reach the target in its cap counts as >= the cap), within tta_cap_max_s
            need = res["time_to_target_s"] / TARGETS["tta_ratio"]
            cap["MONAI DenseNet121-3D"] = min(max(s.tta_cap_s, need * 1.02), s.tta_cap_max_s)
    return out


# ----------------------------------------------------------------------------- GPU


def bench_gpu(s: Settings) -> dict:
    """CUDA: fp32 vs bf16 autocast, channels_last, torch.compile (always: GPU hosts compile fast enough); volumes/s and MFU."""
    if not torch.cuda.is_available():
        return dict(skipped="no CUDA")
    r18 = dict(kind="slice", backbone="resnet18", axes="sagittal")
    variants = [
        ("slicelib resnet18 fp32", r18, {}),
        ("slicelib resnet18 bf16", r18, dict(bf16=True)),
        ("slicelib resnet18 bf16 + channels_last", r18, dict(bf16=True, channels_last=True)),
        (
            "slicelib resnet18 bf16 + channels_last + fold",
            dict(r18, stem="fold"),
            dict(bf16=True, channels_last=True),
        ),
        (
            "slicelib resnet18 bf16 + channels_last + compile",
            r18,
            dict(bf16=True, channels_last=True, compile=True),
        ),
        ("MONAI DenseNet121-3D bf16", dict(kind="monai_densenet121"), dict(bf16=True)),
    ]
    rows = []
    for name, model, opts in tqdm(variants, desc="gpu"):
        spec = dict(
            model=model,
            shape=list(s.shape),
            batch=8,
            warmup=max(s.warmup, 2),
            steps=max(s.steps, 5),
            device="cuda",
            **opts,
        )
        rows.append(dict(name=name, **call_worker(spec, s)))
    return dict(device=torch.cuda.get_device_name(0), rows=rows)


# ----------------------------------------------------------------------------- report


def _row(name: str, sections: dict) -> dict | None:
    for row in sections.get("rows", []):
        if row.get("name") == name:
            return row
    return None


def targets(results: dict) -> list[dict]:
    """The issue's targets as ratios from this run: name, value, target, status, note."""
    out = []
    train = results.get("train", {})
    r18, dn = _row("slicelib resnet18, 1 axis", train), _row("MONAI DenseNet121-3D", train)
    if r18 and dn and "volumes_per_s" in r18 and "volumes_per_s" in dn:
        ratio = r18["volumes_per_s"] / dn["volumes_per_s"]
        out.append(
            _target(
                "training throughput resnet18 / DenseNet121-3D (CPU)",
                ratio,
                ">=",
                TARGETS["train_ratio"],
                "x",
            )
        )
        # the exact options only (same training function): channels_last, folded stem
        exact = [
            r
            for r in train.get("rows", [])
            if r.get("name", "").startswith("slicelib resnet18, 1 axis +") and "volumes_per_s" in r
        ]
        if exact:
            best = max(exact, key=lambda r: r["volumes_per_s"])
            t = _target(
                "training throughput, resnet18 with the best exact fast option / DenseNet121-3D",
                best["volumes_per_s"] / dn["volumes_per_s"],
                ">=",
                TARGETS["train_ratio"],
                "x",
            )
            t["note"] = (
                f"{best['name'].split('1 axis + ')[-1]}: "
                f"{best['volumes_per_s'] / r18['volumes_per_s']:.2f}x the plain resnet18; "
                + t["note"]
            )
            out.append(t)
    else:
        out.append(dict(name="training throughput ratio", status="not measured"))
    mem = results.get("memory", {})
    chunked = [
        r
        for r in mem.get("rows", [])
        if r.get("name", "").startswith("chunk") and "peak_bytes" in r
    ]
    if chunked and mem.get("batch") == 8:
        best = min(chunked, key=lambda r: r["peak_bytes"])
        out.append(
            _target(
                f"peak training memory, 8 x {mem['slices']} slices, {best['name']} (GB, process peak RSS)",
                best["peak_bytes"] / GB,
                "<=",
                TARGETS["memory_gb"],
                " GB",
            )
        )
    else:
        out.append(dict(name="peak training memory batch 8", status="not measured (batch != 8)"))
    data = results.get("data", {})
    if "ratio" in data:
        out.append(
            _target(
                "cached loading / decoding + preprocessing .nii.gz",
                data["ratio"],
                ">=",
                TARGETS["cache_ratio"],
                "x",
            )
        )
    tta = results.get("tta", {})
    si, dn3 = _row(TTA_HEADLINE, tta), _row("MONAI DenseNet121-3D", tta)
    name = "time-to-accuracy slicelib-ImageNet / DenseNet121-3D"
    if si and dn3 and "reached" in si and "reached" in dn3:
        goal = f"<= {TARGETS['tta_ratio']}x"
        aim = f"val MAE <= {tta['target_mae']:.2f} y"
        if si["reached"] and dn3["reached"]:
            t = _target(
                name,
                si["time_to_target_s"] / dn3["time_to_target_s"],
                "<=",
                TARGETS["tta_ratio"],
                "x",
            )
            t["note"] = (
                f"{aim}: {si['time_to_target_s']:.0f} s vs {dn3['time_to_target_s']:.0f} s; "
                + t["note"]
            )
            out.append(t)
        elif si["reached"]:
            # DenseNet did not reach the target in its cap: its time counts as >= the cap, so
            # the ratio is at most slicelib's time / DenseNet's cap (an upper bound)
            bound = si["time_to_target_s"] / dn3["train_s"]
            status = "pass" if bound <= TARGETS["tta_ratio"] else "undecided"
            out.append(
                dict(
                    name=name,
                    value=bound,
                    value_is="upper bound",
                    target=goal,
                    status=status,
                    note=f"{aim}: slicelib-ImageNet {si['time_to_target_s']:.0f} s; DenseNet121-3D not reached in {dn3['train_s']:.0f} s (counts as >= cap): ratio <= {bound:.2f}",
                )
            )
        elif dn3["reached"]:
            # slicelib did not reach it in its cap: its time >= the cap, a lower bound
            bound = si["train_s"] / dn3["time_to_target_s"]
            out.append(
                dict(
                    name=name,
                    value=bound,
                    value_is="lower bound",
                    target=goal,
                    status="short" if bound > TARGETS["tta_ratio"] else "undecided",
                    note=f"{aim}: slicelib-ImageNet not reached in {si['train_s']:.0f} s (best {si['best_val_mae']:.2f}); DenseNet121-3D {dn3['time_to_target_s']:.0f} s: ratio >= {bound:.2f}",
                )
            )
        else:
            out.append(
                dict(
                    name=name,
                    target=goal,
                    status="undecided",
                    note=f"{aim}: neither reached it (best {si['best_val_mae']:.2f} in {si['train_s']:.0f} s vs {dn3['best_val_mae']:.2f} in {dn3['train_s']:.0f} s)",
                )
            )
    else:
        out.append(
            dict(name="time-to-accuracy", status="not measured", note=tta.get("skipped", ""))
        )
    gpu = results.get("gpu", {})
    mfus = [r["mfu"] for r in gpu.get("rows", []) if "bf16" in r.get("name", "") and r.get("mfu")]
    if mfus:
        out.append(_target("GPU MFU, bf16 (best variant)", max(mfus), ">=", TARGETS["mfu"], ""))
    else:
        out.append(
            dict(
                name="GPU MFU bf16 >= 40 %",
                status="skipped: no CUDA" if gpu.get("skipped") else "not measured",
            )
        )
    return out


def _target(name, value, op, goal, unit) -> dict:
    ok = value >= goal if op == ">=" else value <= goal
    return dict(
        name=name,
        value=value,
        target=f"{op} {goal:g}{unit}",
        status="pass" if ok else "short",
        note=f"{value / goal:.2f} of the target" if value else "",
    )


BOUND_PREFIX = {"upper bound": "<= ", "lower bound": ">= "}


def _f(v, fmt="{:.2f}", none="-") -> str:
    return none if v is None else fmt.format(v)


def _train_off_row(name: str) -> str | None:
    """The training-table row that a speed-option row is compared with (option off)."""
    if "+ skip background" in name:
        return name.replace(" + skip background", "")
    if name == "slicelib resnet18, 1 axis + fold + channels_last":
        return "slicelib resnet18, 1 axis + folded stem"
    if name.startswith("slicelib mobilenet_v2, 1 axis +"):
        return "slicelib mobilenet_v2, 1 axis"
    if "BN per volume" in name:  # encodes one volume's slices at a time: BatchNorm per volume
        return "slicelib resnet18, 1 axis + folded stem"
    if name.startswith("slicelib resnet18, 1 axis +"):
        return "slicelib resnet18, 1 axis"
    return None


def to_markdown(results: dict) -> str:
    """Render a results dict (see :func:`main`) as the Markdown report."""
    m, st = results["machine"], results["settings"]
    load = m.get("loadavg") or [0, 0, 0]
    L = [
        f"# slicelib benchmark ({st['mode']} mode)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"{m.get('memory_gb')} GB RAM; GPU: {m.get('gpu') or 'none'}; torch {m['torch']}, "
        f"MONAI {m.get('monai', '-')}, Python {m['python']}; {m['date']}.",
        f"CPU bf16: {'native (' + ', '.join(m['cpu_bf16_flags']) + ')' if m['cpu_bf16_native'] else 'not native (no avx512_bf16/amx_bf16 flag): bf16 is emulated'}.",
        f"Load average at start {load[0]:.2f}, at end {results.get('loadavg_end', [0])[0]:.2f} "
        f"on {m['cores']} cores; total run {results.get('total_s', 0):.0f} s.",
    ]
    # the load at start only: by the end the 1-min average includes this run's own threads
    if load[0] > 0.5 * (m["cores"] or 1):
        L.append(
            "**Measured on a shared, loaded machine: timings are noisy and slower than on a quiet one.**"
        )
    if results.get("note"):
        L.append(f"Note: {results['note']}")
    L += [
        "",
        f"Input {tuple(st['shape'])} voxels; timings are medians after {st['warmup']} warm-up step(s).",
        "",
    ]

    L += [
        "## Targets (ratios from this run)",
        "",
        "| target | value | goal | status | note |",
        "|---|---|---|---|---|",
    ]
    for t in results.get("targets", []):
        L.append(
            f"| {t['name']} | {BOUND_PREFIX.get(t.get('value_is'), '')}{_f(t.get('value'))} | {t.get('target', '')} | {t['status']} | {t.get('note', '')} |"
        )

    tr = results.get("train")
    if tr:
        L += [
            "",
            f"## Training throughput and memory (batch {tr['batch']}{', smaller than 8 for time in this mode' if tr['batch'] < 8 else ''}; forward + backward + Adam)",
            "",
        ]
        L += [
            "| model | params (M) | s/step | volumes/s | vs DenseNet121-3D | option on/off | GFLOP/step | achieved GFLOP/s | peak RSS (GB) | training delta (GB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        dn = _row("MONAI DenseNet121-3D", tr)
        for r in tr["rows"]:
            if "error" in r:
                L.append(f"| {r['name']} | error: {r['error']} | | | | | | | | |")
                continue
            rel = r["volumes_per_s"] / dn["volumes_per_s"] if dn and "volumes_per_s" in dn else None
            off = _row(_train_off_row(r["name"]), tr) if _train_off_row(r["name"]) else None
            onoff = (
                r["volumes_per_s"] / off["volumes_per_s"]
                if off and "volumes_per_s" in off
                else None
            )
            if onoff is not None and r.get("skipped_slices") is not None and "skip" in r["name"]:
                onoff_s = f"{onoff:.2f}x ({r['skipped_slices']} of {r['batch'] * tr['shape'][0]} slices skipped)"
            else:
                onoff_s = _f(onoff, "{:.2f}x", "")
            L.append(
                f"| {r['name']} | {r['params_m']:.1f} | {r['median_s']:.2f} | {r['volumes_per_s']:.3f} | {_f(rel, '{:.2f}x')} | {onoff_s} | "
                f"{_f(r.get('flops_per_step') and r['flops_per_step'] / 1e9, '{:.0f}')} | {_f(r.get('achieved_flops') and r['achieved_flops'] / 1e9, '{:.0f}')} | "
                f"{r['peak_bytes'] / GB:.2f} | {r['delta_bytes'] / GB:.2f} |"
            )
        L.append("")
        L.append(
            "Peak RSS: the process's peak while this model trained (torch, model, batch and the training step); training delta: peak minus the RSS before the first step. "
            + (
                "One process per model. "
                if tr.get("isolated", True)
                else "All models in one process (quick mode, to save ~10 s of imports per model): the peak RSS may include memory an earlier model freed but the allocator kept; the delta is this model's. "
            )
            + "Steps: the first (FLOP-counting) step is the warm-up, the table gives the median of the timed ones. "
            "Option on/off: volumes/s over the same model without the option (folded stem: the plain resnet18 row; fold + channels_last: the folded-stem row; both the same training function up to float rounding; mobilenet_v2 + channels_last: the plain mobilenet_v2 row, the same function; "
            "BN per volume: the folded-stem row; the encoder sees one volume's slices at a time, so BatchNorm's batch statistics are per volume, not per batch: not the same training function, and the same as the folded-stem row at batch 1; "
            "skip background: the frozen-BN row on the same IXI head, exact only with frozen BatchNorm, which itself changes training)."
        )

    mem = results.get("memory")
    if mem:
        L += [
            "",
            f"## Peak training memory, batch {mem['batch']} x {mem['slices']} slices (resnet18, sagittal; slice_chunk {mem['slice_chunk']})",
            "",
        ]
        L += [
            "| slice encoding | s/step | peak RSS (GB) | training delta (GB) |",
            "|---|---|---|---|",
        ]
        for r in mem["rows"]:
            if "error" in r:
                L.append(f"| {r['name']} | error: {r['error']} | | |")
            else:
                L.append(
                    f"| {r['name']} | {r['median_s']:.1f} | {r['peak_bytes'] / GB:.2f} | {r['delta_bytes'] / GB:.2f} |"
                )

    lat = results.get("latency")
    if lat:
        L += [
            "",
            f"## Inference latency, one scan after loading ({lat['input']})",
            "",
            "| path | median s |",
            "|---|---|",
        ]
        for r in lat["rows"]:
            L.append(f"| {r['name']} | {r['median_s']:.3f} |")
        pf = lat.get("predict_files", {})
        L.append(
            f"| {pf.get('name', 'predict_files')} | {_f(pf.get('median_s'), '{:.3f}', pf.get('skipped', '-'))} |"
        )

    d = results.get("data")
    if d:
        L += ["", f"## Data pipeline ({d['files']} files: {d['source']})", "", d["pipeline"], ""]
        L += ["| path | s/volume | volumes/s |", "|---|---|---|"]
        L.append(
            f"| nibabel decode only | {d['decode_only_s']:.3f} | {1 / d['decode_only_s']:.1f} |"
        )
        L.append(
            f"| decode + preprocess .nii.gz | {d['preprocess_s']:.3f} | {d['preprocess_volumes_per_s']:.1f} |"
        )
        L.append(f"| from the cache | {d['cache_s']:.4f} | {d['cache_volumes_per_s']:.0f} |")
        L.append(f"| ratio | | {d['ratio']:.0f}x |")

    o = results.get("opts")
    if o:
        L += [
            "",
            f"## Optimisations on/off (SliceModel resnet18, sagittal; eval: 1 volume, train: batch {o['train_batch']}; input: {o['input']})",
            "",
        ]
        L += [
            "| variant | eval s | eval speed-up | max abs d output | max abs d embedding | skipped slices | train s/step | train speed-up | train max abs d output |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in o["rows"]:
            if "skipped" in r or "error" in r:
                L.append(
                    f"| {r['name']} | {r.get('skipped') or 'error: ' + r['error']} | | | | | | | |"
                )
                continue
            L.append(
                f"| {r['name']} | {r['eval_s']:.3f} | {_f(r.get('eval_speedup'), '{:.2f}x')} | {r['eval_d_output']:.1e} | {r['eval_d_embed']:.1e} | {r['skipped_slices']} | "
                f"{_f(r.get('train_s'), '{:.2f}', r.get('train', '-'))} | {_f(r.get('train_speedup'), '{:.2f}x')} | {_f(r.get('train_d_output'), '{:.1e}')} |"
            )
        L += [
            "",
            "d = max abs difference from the plain model on the same input and weights (output in "
            "output units; embedding: the LayerNorm-ed slice embeddings). In training mode the "
            "chunked rows differ because BatchNorm normalises each chunk with its own batch "
            "statistics (freeze_batchnorm=True makes them identical); bf16 differs at bf16 "
            "precision."
            + "".join(
                f" torch.compile's first call (compilation included): {r['first_call_s']:.0f} s."
                for r in o["rows"]
                if "compile" in r["name"] and "first_call_s" in r
            ),
        ]

    t = results.get("tta")
    if t:
        L += ["", "## Time-to-accuracy (synthetic brain-age task)", ""]
        if "skipped" in t:
            L.append(f"skipped: {t['skipped']}")
        else:
            goal = (
                f"{t['target_rel']:g} x the predict-the-training-mean baseline ({t['mean_baseline_val_mae']:.2f} y) = {t['target_mae']:.2f} y"
                if t.get("target_rel")
                else f"{t['target_mae']:g} y (predicting the training mean: {t['mean_baseline_val_mae']:.2f} y)"
            )
            L.append(
                f"{t['subjects']} synthetic subjects ({t['train']} train / {t['val']} val), {t['preprocessing']}; batch {t['batch']}, Adam lr {t['lr']:g}, "
                f"the same for every model; target: validation MAE <= {goal}; validation every {t.get('val_steps') or 'epoch'}"
                f"{' optimiser steps and each epoch end' if t.get('val_steps') else ''}; the clock counts training steps only. "
                f"Cap {t['cap_s']:.0f} s of training per model; DenseNet121-3D's cap is raised to 2x slicelib-ImageNet's time to target "
                f"(at most {t.get('cap_max_s', t['cap_s']):.0f} s) so that the <= 0.5x target can be decided: a model that does not reach the target within its cap counts as >= its cap. "
                "The slicelib models run with channels_last (the row marked 'channels_last off' is the headline model without it); DenseNet121-3D in its default layout."
            )
            L += [
                "",
                "| model | time to target (s) | cap (s) | training s | best val MAE (y) | epochs |",
                "|---|---|---|---|---|---|",
            ]
            for r in t["rows"]:
                if "skipped" in r:
                    L.append(f"| {r['name']} | skipped: {r['skipped']} | | | | |")
                    continue
                ttt = (
                    f"{r['time_to_target_s']:.0f}"
                    if r["reached"]
                    else f"not reached in {r['train_s']:.0f} s"
                )
                L.append(
                    f"| {r['name']} | {ttt} | {r.get('cap_s', t['cap_s']):.0f} | {r['train_s']:.0f} | {r['best_val_mae']:.2f} | {r['history'][-1][1]:.1f} |"
                )

    g = results.get("gpu")
    L += ["", "## GPU (CUDA)", ""]
    if not g or "skipped" in g:
        L.append(f"skipped: {(g or {}).get('skipped', 'not run')}")
    else:
        L += [
            f"Device: {g['device']}; batch 8.",
            "",
            "| variant | volumes/s | TFLOP/s | MFU (bf16 dense peak) | peak GB |",
            "|---|---|---|---|---|",
        ]
        for r in g["rows"]:
            if "error" in r:
                L.append(f"| {r['name']} | error: {r['error']} | | | |")
                continue
            L.append(
                f"| {r['name']} | {r['volumes_per_s']:.1f} | {_f(r.get('achieved_flops') and r['achieved_flops'] / 1e12, '{:.1f}')} | {_f(r.get('mfu'), '{:.1%}')} | {r['peak_bytes'] / GB:.2f} |"
            )
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------- main

SECTIONS = ("train", "memory", "latency", "data", "opts", "tta", "gpu")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write ``<out>/<name>.json`` and ``.md``; print the table. Returns the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="quick mode: < 10 min on 2 cores")
    mode.add_argument(
        "--tiny", "--dry-run", dest="tiny", action="store_true", help="seconds; a tiny grid"
    )
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--name", help="results file name (default: the mode)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder")
    ap.add_argument(
        "--work-dir",
        help="cohort/cache folder (default $SLICELIB_CACHE/bench or ~/.cache/slicelib/bench)",
    )
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure torch.compile",
    )
    ap.add_argument("--tta-cap", type=float, help="time-to-accuracy cap per model (s)")
    ap.add_argument("--tta-lr", type=float, help="time-to-accuracy Adam learning rate")
    ap.add_argument("--tta-target", type=float, help="time-to-accuracy target val MAE (years)")
    ap.add_argument(
        "--tta-target-rel",
        type=float,
        help="time-to-accuracy target as a fraction of the predict-the-training-mean val MAE",
    )
    ap.add_argument(
        "--no-isolate", action="store_true", help="measure train/memory in this process"
    )
    ap.add_argument(
        "--train-batch", type=int, help="batch of the training-throughput table (quick: 1)"
    )
    ap.add_argument(
        "--train-models",
        help="regular expression: only the training-table models whose name matches, e.g. "
        "'^slicelib resnet18, 1 axis( \\+ folded stem)?$|DenseNet121'",
    )
    ap.add_argument("--note", default="", help="a line for the table header (e.g. the load)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(train_worker(json.loads(args.worker))), flush=True)
        return {}
    s = MODES["quick" if args.quick else "tiny" if args.tiny else "full"]
    s = replace(s)
    if args.compile is not None:
        s.compile = args.compile
    if args.tta_cap is not None:
        s.tta_cap_s = args.tta_cap
    if args.tta_lr is not None:
        s.tta_lr = args.tta_lr
    if args.tta_target is not None:
        s.tta_target_mae, s.tta_target_rel = args.tta_target, None
    if args.tta_target_rel is not None:
        s.tta_target_rel = args.tta_target_rel
    if args.no_isolate:
        s.isolate = False
    if args.train_batch is not None:
        s.train_batch = args.train_batch
    if args.train_models is not None:
        s.train_models = args.train_models
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.work_dir:
        work_dir = Path(args.work_dir)
    else:
        base = os.environ.get("SLICELIB_CACHE")
        work_dir = (Path(base) if base else Path.home() / ".cache" / "slicelib") / "bench"
    work_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    results = dict(
        machine=machine_info(), settings=_jsonable(asdict(s)), sections=sections, section_s={}
    )
    results["note"] = args.note
    runners = dict(
        train=lambda: bench_train(s, work_dir),
        memory=lambda: bench_memory(s),
        latency=lambda: bench_latency(s, work_dir),
        data=lambda: bench_data(s, work_dir),
        opts=lambda: bench_opts(s, work_dir),
        tta=lambda: bench_tta(s, work_dir),
        gpu=lambda: bench_gpu(s),
    )
    for name in sections:
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - t_start:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = runners[name]()
        except Exception as err:  # noqa: BLE001 - one failed section does not lose the others
            results[name] = dict(skipped=f"failed: {type(err).__name__}: {err}")
        results["section_s"][name] = time.perf_counter() - t0
    results["total_s"] = time.perf_counter() - t_start
    results["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["targets"] = targets(results)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or s.mode
    (out_dir / f"{name}.json").write_text(json.dumps(_jsonable(results), indent=1))
    md = to_markdown(results)
    (out_dir / f"{name}.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / name}.json and .md", file=sys.stderr)
    print(
        f"total {results['total_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["section_s"].items())
        + ")",
        flush=True,
    )
    return results


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (torch.dtype, Path)):
        return str(obj)
    return obj


if __name__ == "__main__":
    main()
