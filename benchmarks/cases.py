"""The benchmark cases and targets, as data.

A case is a dict:

- ``name``: unique; the row label in the report.
- ``section``: the report section it belongs to (one of :data:`SECTIONS`).
- ``calls``: which measurement of ``benchmarks/measure.py`` runs it (a key of ``CALLS``
  there); each one calls the library (``slicelib.train.train`` / ``fit``, ``SliceModel``,
  ``slicelib.pipeline.run_pipeline``, ``slicelib.data.preprocess``,
  ``slicelib.cache.load_preprocessed``), never a training loop of its own.
- ``settings``: keyword settings of that measurement. A value given as a dict keyed by mode
  (``{"smoke": 1, "quick": 5, "full": 30}``) takes the value of the mode that runs.
- ``modes``: the modes the case runs in (default: quick and full).

A target is a dict: ``name``, ``metric`` (``"<case>.<metric>"`` or a ratio
``"<case>.<metric> / <case>.<metric>"``), ``op`` (``"<="`` or ``">="``) and ``goal`` (a number).
``benchmarks/report.py``'s ``check_target`` checks any of them against stored results.
"""

from __future__ import annotations

MODES = ("smoke", "quick", "full")
DEFAULT_MODES = ("quick", "full")
SECTIONS = ("throughput", "memory", "latency", "cache", "tta", "tta_real", "pipeline", "gpu")
CALLS = ("fit_throughput", "latency", "cache", "train_to_target", "pipeline")
OPS = ("<=", ">=")

GRID = {"smoke": (16, 20, 16), "quick": (91, 109, 91), "full": (91, 109, 91)}  # voxels (2 mm)
R18 = {"backbone": "resnet18", "axes": ["sagittal"]}
MNV2 = {"backbone": "mobilenet_v2", "axes": ["sagittal"]}
IMAGENET = "imagenet-file"  # the offline MobileNetV2 ImageNet weights (measure.weights_file)


def _throughput(name: str, model: dict, modes=DEFAULT_MODES, **extra) -> dict:
    """A training-throughput case: ``slicelib.train.fit`` on random volumes; the last epoch
    (training steps + a one-volume validation pass) timed, the first one a warm-up."""
    settings = {"model": model, "volume_shape": GRID, "batch": {"smoke": 1, "quick": 1, "full": 8}}
    settings |= {"volumes": {"smoke": 2, "quick": 3, "full": 16}, "epochs": 2}
    return {"name": name, "section": "throughput", "calls": "fit_throughput",
            "settings": settings | extra, "modes": modes}  # fmt: skip


def _memory(name: str, model: dict) -> dict:
    """Peak memory of one ``fit`` epoch: 8 volumes of 91 x 109 x 91 in one batch."""
    settings = {"model": model, "volume_shape": GRID["full"], "batch": 8, "volumes": 8, "epochs": 1}
    return {"name": name, "section": "memory", "calls": "fit_throughput", "settings": settings,
            "modes": DEFAULT_MODES}  # fmt: skip


def _latency(name: str, model: dict, speed: str | None = None, modes=DEFAULT_MODES) -> dict:
    """One scan through ``SliceModel`` in eval mode, with a speed option of ``fast.py``."""
    settings = {
        "model": model,
        "volume_shape": GRID,
        "speed": speed,
        "reps": {"smoke": 1, "quick": 3, "full": 10},
    }
    return {"name": name, "section": "latency", "calls": "latency", "settings": settings,
            "modes": modes}  # fmt: skip


def _tta(name: str, task: str, model: dict, epochs: dict, cap_s: dict, **extra) -> dict:
    """Time to a validation MAE target through ``slicelib.train.train`` on a table."""
    section = "tta" if task == "synthetic" else "tta_real"
    modes = extra.pop("modes", DEFAULT_MODES)
    settings = {"task": task, "model": model, "max_epochs": epochs, "cap_s": cap_s, "lr": 1e-3,
                "batch": 8, "target_rel": 0.5}  # fmt: skip
    if task == "synthetic":  # quick: 6 mm, the coarsest grid MONAI's DenseNet121-3D accepts
        settings["subjects"] = {"smoke": 12, "quick": 120, "full": 200}
        settings["grid"] = {"smoke": [30, 36, 30], "quick": [30, 36, 30], "full": [45, 54, 45]}
        settings["voxel_mm"] = {"smoke": 6.0, "quick": 6.0, "full": 4.0}
    settings.update(extra)
    return {"name": name, "section": section, "calls": "train_to_target", "settings": settings,
            "modes": modes}  # fmt: skip


FINE = {**MNV2, "weights": IMAGENET, "channels_last": True}
SCRATCH = {**MNV2, "channels_last": True}
DENSENET = {"backbone": "densenet121_3d"}
SYN, REAL = "tta synthetic: ", "tta real IXI: "

CASES: list[dict] = [
    # --- training throughput (volumes/s) and memory, through slicelib.train.fit
    _throughput("slicelib resnet18, 1 axis", R18),
    _throughput(
        "slicelib resnet18, 1 axis, folded stem + channels_last",
        {**R18, "stem": "fold", "channels_last": True},
    ),
    _throughput("slicelib resnet18, 3 axes", {**R18, "axes": ["sagittal", "coronal", "axial"]}),
    _throughput("slicelib mobilenet_v2, 1 axis", MNV2),
    _throughput("slicelib mobilenet_v2, 1 axis + channels_last", {**MNV2, "channels_last": True}),
    _throughput("slicelib DenseNet121-3D (VolumeCNN, MONAI)", DENSENET),
    _throughput("slicelib SFCN-3D (VolumeCNN)", {"backbone": "sfcn_3d"}),
    _throughput(
        "smoke: slice_cnn, 1 axis",
        {"backbone": "slice_cnn", "axes": ["sagittal"]},
        modes=("smoke",),
    ),
    _memory("resnet18, batch 8, whole volumes", R18),
    _memory(
        "resnet18, batch 8, slice_chunk 32 + checkpointing",
        {**R18, "slice_chunk": 32, "checkpoint_activations": True},
    ),
    # --- one scan, eval mode
    _latency("plain (fp32)", {"backbone": "resnet18"}),
    _latency("channels_last", {"backbone": "resnet18", "channels_last": True}),
    _latency("folded 1-channel stem", {"backbone": "resnet18", "stem": "fold"}),
    _latency("bf16 autocast", {"backbone": "resnet18"}, speed="bf16"),
    _latency("skip constant (background) slices", {"backbone": "resnet18"}, speed="skip"),
    _latency("torch.compile (encoder)", {"backbone": "resnet18"}, speed="compile", modes=("full",)),
    _latency("smoke: slice_cnn", {"backbone": "slice_cnn"}, modes=("smoke",)),
    # --- data: decoding + preprocessing vs the cache
    {
        "name": "preprocess vs cache",
        "section": "cache",
        "calls": "cache",
        "settings": {"files": {"smoke": 2, "quick": 20, "full": 138}},
        "modes": DEFAULT_MODES,
    },
    # --- time-to-accuracy (ImageNet weights from the offline file; same lr, batch, loss)
    _tta(
        SYN + "ImageNet mobilenet_v2, fine-tuned",
        "synthetic",
        FINE,
        {"quick": 8, "full": 60},
        {"quick": 60, "full": 900},
    ),
    _tta(
        SYN + "ImageNet mobilenet_v2, frozen encoder",
        "synthetic",
        FINE,
        {"quick": 200, "full": 2000},
        {"quick": 60, "full": 900},
        freeze_encoder=True,
    ),
    _tta(
        SYN + "scratch mobilenet_v2",
        "synthetic",
        SCRATCH,
        {"quick": 8, "full": 60},
        {"quick": 60, "full": 900},
    ),
    _tta(
        SYN + "DenseNet121-3D",
        "synthetic",
        DENSENET,
        {"quick": 20, "full": 200},
        {"quick": 120, "full": 1800},
    ),
    _tta(
        REAL + "ImageNet mobilenet_v2, fine-tuned",
        "ixi4mm",
        FINE,
        {"quick": 10, "full": 60},
        {"quick": 120, "full": 900},
    ),
    _tta(
        REAL + "ImageNet mobilenet_v2, frozen encoder",
        "ixi4mm",
        FINE,
        {"quick": 1000, "full": 3000},
        {"quick": 60, "full": 900},
        freeze_encoder=True,
    ),
    _tta(
        REAL + "DenseNet121-3D",
        "ixi4mm",
        DENSENET,
        {"quick": 30, "full": 200},
        {"quick": 240, "full": 1800},
    ),
    _tta(
        "smoke: tta slice_cnn",
        "synthetic",
        {"backbone": "slice_cnn", "axes": ["sagittal"]},
        {"smoke": 2},
        {"smoke": 30},
        subjects=12,
        modes=("smoke",),
    ),
    # --- the registration pipeline on raw 2 mm heads
    {
        "name": "slicelib.pipeline.run_pipeline, 2 mm head",
        "section": "pipeline",
        "calls": "pipeline",
        "settings": {"heads": {"smoke": 1, "quick": 3, "full": 5}},
        "modes": DEFAULT_MODES,
    },
    # --- CUDA only (skipped elsewhere): fit in fp32 and bf16 autocast, batch 8
    _throughput("GPU resnet18 fp32", R18, device="cuda", precision="fp32", batch=8, volumes=32),
    _throughput("GPU resnet18 bf16", R18, device="cuda", precision="bf16", batch=8, volumes=32),
    _throughput(
        "GPU resnet18 bf16 + channels_last",
        {**R18, "channels_last": True},
        device="cuda",
        precision="bf16",
        batch=8,
        volumes=32,
    ),
    _throughput(
        "GPU DenseNet121-3D bf16", DENSENET, device="cuda", precision="bf16", batch=8, volumes=32
    ),
]
for _c in CASES:
    if _c["name"].startswith("GPU "):
        _c["section"] = "gpu"

TARGETS: list[dict] = [
    {"name": "training throughput resnet18 / DenseNet121-3D (>= 1.5x, issue 6)",
     "metric": "slicelib resnet18, 1 axis.volumes_per_s / "
               "slicelib DenseNet121-3D (VolumeCNN, MONAI).volumes_per_s", "op": ">=", "goal": 1.5},
    {"name": "peak training memory, batch 8, chunking + checkpointing (GB)",
     "metric": "resnet18, batch 8, slice_chunk 32 + checkpointing.peak_gb", "op": "<=", "goal": 8},
    {"name": "cached loading vs decoding + preprocessing",
     "metric": "preprocess vs cache.speedup", "op": ">=", "goal": 20},
    {"name": "epoch time fine-tuning / frozen encoder (synthetic, issue 14)",
     "metric": f"{SYN}ImageNet mobilenet_v2, fine-tuned.epoch_s / "
               f"{SYN}ImageNet mobilenet_v2, frozen encoder.epoch_s", "op": ">=", "goal": 20},
    *[{"name": f"time-to-accuracy {prefix}{arm} / DenseNet121-3D (issue 14)",
       "metric": f"{prefix}{arm}.time_to_target_s / {prefix}DenseNet121-3D.time_to_target_s",
       "op": "<=", "goal": 0.5}
      for prefix in (SYN, REAL)
      for arm in ("ImageNet mobilenet_v2, fine-tuned", "ImageNet mobilenet_v2, frozen encoder")],
    {"name": "preprocessing pipeline, s per raw 2 mm head (issue 13)",
     "metric": "slicelib.pipeline.run_pipeline, 2 mm head.median_s", "op": "<=", "goal": 15},
    {"name": "smoke: slice_cnn trains (volumes/s > 0)",
     "metric": "smoke: slice_cnn, 1 axis.volumes_per_s", "op": ">=", "goal": 1e-9},
]  # fmt: skip


def resolve(settings: dict, mode: str) -> dict:
    """``settings`` with every per-mode value (a dict keyed by mode names) replaced by the
    value for ``mode``; a per-mode dict without ``mode`` raises KeyError naming the key."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value and set(value) <= set(MODES):
            if mode not in value:
                raise KeyError(f"setting {key!r} has no value for mode {mode!r}: {value}")
            value = value[mode]
        out[key] = value
    return out


def cases_for(mode: str, pattern: str | None = None) -> list[dict]:
    """The cases that run in ``mode`` (and whose name contains ``pattern``), settings resolved."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {MODES}")
    return [
        {**c, "settings": resolve(c["settings"], mode)}
        for c in CASES
        if mode in c["modes"] and (not pattern or pattern in c["name"])
    ]
