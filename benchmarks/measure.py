"""The measurements behind the cases of ``benchmarks/cases.py``: each calls the library.

Every function here takes a case's resolved ``settings`` and a context ``ctx`` (``work_dir``:
a folder for cohorts, caches and runs; ``mode``) and returns a dict: ``metrics`` (numbers, or
``{"at_least": x}`` for a bound), optional ``rows`` (per-item details for the report), and
``info`` (what was measured, in words); or ``{"skipped": reason}``. None of them has a training
loop, optimiser step or model builder of its own: training goes through
``slicelib.train.train`` / ``fit``, models are ``SliceModel`` / ``VolumeCNN``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import gc
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):  # run from a checkout, without installing
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fast  # noqa: E402  (benchmarks/fast.py: the speed options)
from cases import IMAGENET  # noqa: E402

from slicelib import cache as C  # noqa: E402
from slicelib import data as D  # noqa: E402
from slicelib.cnn3d import VOLUME_BACKBONES, VolumeCNN  # noqa: E402
from slicelib.config import TrainConfig  # noqa: E402
from slicelib.model import SliceModel  # noqa: E402
from slicelib.train import fit, train  # noqa: E402

GB = 1024**3


def shared_dir() -> Path:
    """The read-only shared assets: ``$SLICELIB_SHARED``, else ``shared/`` beside the checkout."""
    return Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared")


def weights_file() -> Path | None:
    """The offline MobileNetV2 ImageNet weights file, None if absent."""
    folder = Path(os.environ.get("SLICELIB_WEIGHTS_DIR") or shared_dir() / "weights")
    path = folder / "mobilenet_v2_imagenet1k.pth"
    return path if path.is_file() else None


def machine_info() -> dict:
    """The machine and software of a run (JSON-serialisable)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info = dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                loadavg=list(os.getloadavg()), cpu_bf16_native=fast.bf16_native("cpu"),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)  # fmt: skip
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
    """Peak memory of a block in bytes: CUDA peak allocated, or the CPU peak RSS of this process
    (``VmHWM`` after resetting it through ``/proc/self/clear_refs``). ``delta``: peak minus the
    memory in use on entry (what the block added)."""

    def __init__(self, device: str = "cpu"):
        self.device, self.start, self.peak = device, 0, 0

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.start = _status_kb("VmRSS") * 1024
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.peak = _status_kb("VmHWM") * 1024

    @property
    def delta(self) -> int:
        return max(self.peak - self.start, 0)


def model_kwargs(model: dict) -> dict | None:
    """A case's model options with ``weights`` = the offline ImageNet file where the case asks
    for it; None when that file is absent."""
    if model.get("weights") != IMAGENET:
        return dict(model)
    path = weights_file()
    return {**model, "weights": str(path)} if path else None


def library_model(model: dict, volume_shape, mean: float, std: float):
    """``VolumeCNN`` for a 3D backbone, else ``SliceModel``: the two library classes that
    ``slicelib.train.train`` builds, with a regression head ``mean + std * z`` (years)."""
    cls = VolumeCNN if model.get("backbone") in VOLUME_BACKBONES else SliceModel
    return cls(**model, volume_shape=tuple(volume_shape), target_mean=mean, target_std=std, seed=0)


# ----------------------------------------------------------------------------- throughput


def fit_throughput(s: dict, ctx: dict) -> dict:
    """Training volumes/s and peak memory of ``slicelib.train.fit`` on random volumes.

    ``s``: ``model``, ``volume_shape`` (X, Y, Z), ``batch``, ``volumes`` (training set size),
    ``epochs`` (the last one is timed: ``fit``'s history ``seconds``, which include a
    validation pass over one volume), ``device``, ``precision``.
    """
    device = s.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    n, shape = int(s["volumes"]), tuple(s["volume_shape"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 1, 1, *shape, generator=g)  # (N + 1, 1, X, Y, Z) z-scored voxels
    y = 50 + 15 * torch.randn(n + 1, generator=g)  # (N + 1,) "ages", years
    data = [(x[i], y[i]) for i in range(n + 1)]
    model = library_model(s["model"], shape, 50.0, 15.0)
    cfg = TrainConfig(model=s["model"], epochs=int(s["epochs"]), batch_size=int(s["batch"]),
                      patience=None, device=device, precision=s.get("precision", "fp32"))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fit-", dir=ctx["work_dir"]) as run_dir:
        with PeakMemory(device) as mem:
            out = fit(model, data[:n], data[n:], cfg, run_dir, progress=False)
    epoch_s = float(out["history"][-1]["seconds"])
    metrics = dict(volumes_per_s=n / epoch_s, epoch_s=epoch_s, peak_gb=mem.peak / GB,
                   delta_gb=mem.delta / GB,
                   params_m=sum(p.numel() for p in model.parameters()) / 1e6)  # fmt: skip
    info = (f"fit: {n} random volumes {shape}, batch {s['batch']}, {cfg.epochs} epoch(s), "
            f"last timed; {device}, {cfg.precision}")  # fmt: skip
    return dict(metrics=metrics, info=info)


# ----------------------------------------------------------------------------- latency


def example_volume(shape) -> tuple[torch.Tensor, str]:
    """A synthetic head ``(1, 1, X, Y, Z)``, z-scored: an ellipsoid of noisy tissue in a
    constant background (so the grid's edge slices are constant, as on a registered head)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1.3, 1.3, k) for k in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 1.0
    noise = np.random.default_rng(0).standard_normal(shape)
    vol = np.where(inside, 1.0 + 0.3 * noise, 0.0).astype(np.float32)
    vol = (vol - vol[inside].mean()) / vol[inside].std()
    return torch.from_numpy(vol)[None, None], "synthetic ellipsoid head"


def latency(s: dict, ctx: dict) -> dict:
    """Seconds per scan of ``SliceModel`` in eval mode with one speed option (``s["speed"]``:
    None, "bf16" autocast, "skip" constant slices, "compile"; model options in ``s["model"]``),
    and the max abs difference from the plain model's output (years)."""
    x, source = example_volume(tuple(s["volume_shape"]))
    shape, speed = tuple(s["volume_shape"]), s.get("speed")
    plain = SliceModel(s["model"]["backbone"], volume_shape=shape, seed=0).eval()
    model = SliceModel(**s["model"], volume_shape=shape, seed=0).eval()
    run = model
    if speed == "compile":
        run = fast.compile_encoder(model)
    elif speed in ("bf16", "skip"):
        dtype = torch.bfloat16 if speed == "bf16" else None
        run = fast.FastSliceModel(model, skip_constant=speed == "skip", autocast_dtype=dtype)
    with torch.no_grad():
        ref = plain(x)  # (1,)
        t0 = time.perf_counter()
        out = run(x)  # the first call (compiles, if any)
        first = time.perf_counter() - t0
        times = []
        for _ in range(int(s["reps"])):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
    metrics = dict(median_s=statistics.median(times), first_call_s=first,
                   d_output=fast.max_abs_diff(ref, out),
                   non_finite=int(not bool(torch.isfinite(out).all())),
                   skipped_slices=getattr(run, "last_skipped", 0) or 0)  # fmt: skip
    return dict(metrics=metrics, info=f"{source}, {s['reps']} timed call(s)")


# ----------------------------------------------------------------------------- cache


def cache(s: dict, ctx: dict) -> dict:
    """Seconds per volume: nibabel decoding, ``slicelib.data.preprocess`` (decode + preprocess)
    and ``slicelib.cache.load_preprocessed`` (float16 .npy, memory-mapped, to float32), on the
    first ``files`` brains of the shipped 4 mm derivative with the preprocessing the
    time-to-accuracy cases train with (they declare MNI: resampling and z-scoring, no
    registration; the registration's cost per raw head is the ``pipeline`` case)."""
    import nibabel as nib

    table, pre, _ = task_table({"task": "ixi4mm"}, Path(ctx["work_dir"]))
    if not table.is_file():
        return {"skipped": f"{table} not found"}
    paths = pd.read_csv(table, sep="\t")["path"].head(int(s["files"]))
    files = [table.parent / p for p in paths]
    cfg = D.PreprocessConfig.from_dict(pre)
    folder = Path(tempfile.mkdtemp(prefix="cache-", dir=ctx["work_dir"]))

    def seconds(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    decode = [seconds(lambda f=f: np.asanyarray(nib.load(f).dataobj)) for f in files]
    prep = [seconds(lambda f=f: D.preprocess(f, cfg)) for f in files]
    for f in files:  # fill the cache (untimed)
        C.load_preprocessed(f, cfg, cache_dir=folder)

    def cached(f):
        return torch.from_numpy(np.asarray(C.load_preprocessed(f, cfg, cache_dir=folder), "f4"))

    hot = [seconds(lambda f=f: cached(f)) for f in files for _ in range(3)]
    shutil.rmtree(folder, ignore_errors=True)
    d, p, h = (statistics.median(t) for t in (decode, prep, hot))
    metrics = dict(decode_s=d, preprocess_s=p, cached_s=h, speedup=p / h)
    return dict(metrics=metrics, info=f"{len(files)} brains of {table.parent.name}, 4 mm grid")


# ----------------------------------------------------------------------------- time-to-accuracy


def task_table(s: dict, work_dir: Path) -> tuple[Path, dict, str]:
    """The participants table of a task (a file ``slicelib.train.train`` reads), the
    preprocessing dict and a description. ``synthetic``: ``slicelib.synth.make_cohort``
    (made once in ``work_dir``) on ``s["grid"]`` at ``s["voxel_mm"]``; ``ixi4mm``: the shipped
    real derivative ``data/ixi_hh_4mm`` (``$SLICELIB_IXI4MM``), 4 mm grid (45, 54, 45)."""
    if s["task"] == "ixi4mm":
        folder = Path(os.environ.get("SLICELIB_IXI4MM") or ROOT / "data" / "ixi_hh_4mm")
        pre = {"volume_shape": [45, 54, 45], "voxel_size": 4.0}
        how = f"{folder.name}: real IXI-HH heads, slicelib.pipeline at 4 mm (45, 54, 45)"
        return folder / "participants.tsv", pre, how
    from slicelib import synth

    n = int(s["subjects"])
    cohort = work_dir / f"synth_n{n}_seed0"
    tsv = cohort / "participants.tsv"
    if not tsv.is_file():
        synth.make_cohort(cohort, n=n, seed=0, progress=False)
    table = pd.read_csv(tsv, sep="\t", dtype={"participant_id": str})
    table["path"] = [f"{p}/anat/{p}_T1w.nii.gz" for p in table["participant_id"]]
    out = cohort / "table.csv"
    table[["participant_id", "age", "path"]].to_csv(out, index=False)
    pre = {"volume_shape": list(s["grid"]), "voxel_size": float(s["voxel_mm"])}
    return out, pre, f"synthetic cohort (slicelib.synth), {s['voxel_mm']:g} mm {tuple(s['grid'])}"


def warm_cache(table: Path, pre: dict, cache_dir: Path) -> None:
    """Preprocess and QC every scan of ``table`` into ``cache_dir`` once, untimed, with the
    function ``slicelib.train.train`` checks its inputs with (``slicelib.cache.preprocess_many``),
    so that no arm's clock holds the one-time preprocessing."""
    df = pd.read_csv(table, sep="\t" if table.suffix == ".tsv" else ",")
    C.preprocess_many([table.parent / p for p in df["path"]], pre, cache_dir, progress=False)


def train_to_target(s: dict, ctx: dict) -> dict:
    """Wall time of ``slicelib.train.train`` to reach validation MAE <= ``target_rel`` x the
    MAE of predicting the training mean (on the run's own split, from its split.csv).

    The library trains whole epochs and has no stop-at-target hook, so the run goes in chunks:
    ``train`` with ``epochs`` = 1, then (resuming, as the library allows) more epochs at a
    time, about a quarter of ``cap_s`` each, until the target, ``cap_s`` or ``max_epochs``.
    The feature cache of a frozen encoder (``<cache>/features``) is emptied first, the
    preprocessed scans are not (see :func:`warm_cache`).
    Clock: the first call's time outside its epoch (reading the table, checking the cache,
    building the model, the frozen encoder's feature encoding, a checkpoint) + the
    history.csv ``seconds`` of every epoch (training + validation) up to the epoch that
    reached the target. Missed: ``{"at_least": clock at the end}``.
    """
    model = model_kwargs(s["model"])
    if model is None:
        return {"skipped": "ImageNet weights file not found (mobilenet_v2_imagenet1k.pth)"}
    work = Path(ctx["work_dir"])
    table, pre, how = task_table(s, work)
    if not table.is_file():
        return {"skipped": f"{table} not found"}
    warm_cache(table, pre, work / "cache")
    shutil.rmtree(work / "cache" / "features", ignore_errors=True)  # the encoding is timed
    run_dir = Path(tempfile.mkdtemp(prefix="tta-", dir=work))
    cfg = TrainConfig(data=str(table), model=model, freeze_encoder=bool(s.get("freeze_encoder")),
                      preprocess=pre, cache_dir=str(work / "cache"), out=str(run_dir),
                      lr=float(s["lr"]), batch_size=int(s["batch"]), patience=None, epochs=1,
                      device="cpu", precision="fp32")  # fmt: skip
    split = target = None
    setup, epochs, clock, reached_at = 0.0, 1, 0.0, None
    while True:
        t0 = time.perf_counter()
        train(dataclasses.replace(cfg, epochs=epochs), progress=False)
        wall = time.perf_counter() - t0
        hist = pd.read_csv(run_dir / "history.csv")
        if split is None:
            split = pd.read_csv(run_dir / "split.csv", dtype={"participant_id": str})
            tr, va = (split.loc[split["split"] == k, "age"].to_numpy() for k in ("train", "val"))
            baseline = float(np.abs(va - tr.mean()).mean())
            target = s["target_rel"] * baseline
            setup = wall - float(hist["seconds"].sum())
        clock = setup + float(hist["seconds"].sum())
        hit = np.flatnonzero(hist["val_mae"].to_numpy() <= target)
        if hit.size:
            reached_at = setup + float(hist["seconds"].iloc[: hit[0] + 1].sum())
            break
        if clock >= s["cap_s"] or epochs >= s["max_epochs"] or len(hist) < epochs:
            break  # the cap, the epoch budget, or the run stopped itself (diverged)
        chunk = max(1, math.floor(0.25 * s["cap_s"] / max(hist["seconds"].median(), 1e-3)))
        epochs = min(int(s["max_epochs"]), len(hist) + chunk)
    metrics = dict(time_to_target_s=reached_at if reached_at is not None else {"at_least": clock},
                   target_epoch=int(hit[0]) + 1 if hit.size else None,
                   best_val_mae=float(hist["val_mae"].min()), target_mae=target,
                   baseline_mae=baseline, epochs=int(len(hist)), setup_s=setup,
                   epoch_s=float(hist["seconds"].median()), train_n=int(len(tr)),
                   val_n=int(len(va)), diverged=int((hist["status"] != "ok").any()))  # fmt: skip
    info = (
        f"{how}; slicelib.train.train, batch {s['batch']}, Adam lr {s['lr']:g}, "
        f"split_subjects seed 0 ({len(tr)} train / {len(va)} val)"
    )
    return dict(metrics=metrics, info=info)


# ----------------------------------------------------------------------------- pipeline


def pipeline(s: dict, ctx: dict) -> dict:
    """Seconds per raw 2 mm IXI head through ``slicelib.pipeline.run_pipeline`` (default
    config, this run's torch threads), median over ``heads`` shared heads, via
    ``benchmarks/realscan.py``'s ``one_head`` (which also gives brain Dice and template NCC)."""
    import realscan

    from slicelib.pipeline import PipelineConfig

    folder = realscan.shared_dir()
    if not (folder / "participants.tsv").is_file():
        return {"skipped": f"no shared heads at {folder} (set SLICELIB_SHARED)"}
    table = pd.read_csv(folder / "participants.tsv", sep="\t").head(int(s["heads"]))
    config = dict(PipelineConfig().to_dict(), threads=torch.get_num_threads())
    rows = []
    for r in table.itertuples():
        out = realscan.one_head(str(folder / r.t1), str(folder / r.brain_labels), config)
        rows.append({k: out[k] for k in ("subject", "seconds", "dice", "ncc")})
    median = statistics.median(r["seconds"] for r in rows)
    info = f"default PipelineConfig, {config['threads']} thread(s), {folder}"
    return dict(metrics=dict(median_s=median, heads=len(rows)), rows=rows, info=info)


CALLS = dict(fit_throughput=fit_throughput, latency=latency, cache=cache,
             train_to_target=train_to_target, pipeline=pipeline)  # fmt: skip
