"""Preprocessing of raw T1 heads onto the model grid: brain extraction, N4, affine to MNI152.

The chain (each step optional, every choice in :class:`PipelineConfig`):

1. load: :func:`slicelib.io.load_nifti` (the one loader): NIfTI or FreeSurfer ``.mgz``, a 4D
   file with one volume is squeezed, more volumes / constant / non-finite images raise
   :class:`~slicelib.errors.DataError` naming the file; reoriented to the closest canonical
   (RAS) axes, with "declares MNI" read from the ORIGINAL header (an FSL-style LAS file with
   sform code 4 still declares MNI after the reorientation).
2. brain extraction: deepbet (MIT; its two TorchScript networks ship inside the wheel, so it
   runs offline). ``"none"``: the input is already a brain, its non-zero voxels are the mask.
3. bias-field correction: N4 (SimpleITK) fitted inside the brain on a ~4 mm copy; the field
   is evaluated at full resolution and divided out.
4. registration: 12-dof affine of the extracted brain to nilearn's packaged MNI152 T1 template
   masked by its brain mask (Mattes mutual information, 3-level pyramid; SimpleITK). Scans
   whose original header declares MNI space (sform or qform code 4) skip it, as does
   ``registration="none"`` (the image's world coordinates are trusted).
5. optional resolution harmonisation (``resolution_mm``, off by default): the corrected brain is
   smoothed in native space with a Gaussian of FWHM ``sqrt(resolution_mm^2 - spacing^2)`` along
   each native axis (none along an axis already that coarse), so that a 1 mm, a 2 mm and a
   thick-sliced scan of the same head reach about the same effective resolution before the
   grid sees them.
6. resampling of the brain (linear) and of its mask (linear, > 0.5) onto the caller's grid
   ``(volume_shape, affine)``: the FSL MNI152 2 mm grid 91 x 109 x 91 by default,
   :func:`grid` gives it at 4 mm (45 x 54 x 45) too.
7. intensity normalisation: z-score with the mean and standard deviation of the brain voxels
   on the grid; outside the brain the array holds the value an intensity of 0 maps to,
   ``-mean / std`` (a constant, darker than any brain tissue, as in an unmasked T1).

Repeatability: the same voxels give the same array, whatever the file format and the thread
count. The metric's random sampling has a fixed seed (SimpleITK reads seed 0 as "the wall
clock": two runs on one head differed by up to 2.4 z units on the 4 mm grid, 134 to 265 voxels
of the brain mask) and a fixed number of work units (the metric's sum no longer depends on the
threads: transforms agree to 1e-12 across 1, 2 and 4 threads); N4 runs on one ITK thread (its
B-spline fit gave 0.005 intensity units more or less with 2 threads than with 1; now equal);
torch (deepbet) and ITK threads are set inside the call (``PipelineConfig.threads``) and
restored after it (deepbet's mask was identical for 1 and 2 threads). Measured with
``tests/test_geometry.py`` and ``tests/test_pipeline.py::test_same_head_as_nii_and_nii_gz_...``
(max abs difference < 1e-3 z units; before: masks differed in 134 to 265 voxels).

Why SimpleITK and not ANTsPy: the ``antspyx`` wheels (0.6.x) require ``numpy<2.4`` and
``scipy<1.16``, which conflict with slicelib's pins; SimpleITK has no dependencies and gives
the same NCC (see benchmarks/results/realscan.md).

Speed on the shared host (2 cores shared with other jobs, load 2 to 4), 2 mm IXI head:
deepbet about 3 s, N4 2 to 5 s, registration 5 to 10 s; see ``benchmarks/realscan.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from slicelib import qc
from slicelib.errors import PipelineError
from slicelib.io import declares_mni, grid, load_nifti
from slicelib.utils import mni_template

__all__ = [
    "PipelineConfig",
    "PipelineResult",
    "PipelineError",
    "PIPELINE_VERSION",
    "grid",
    "harmonise_resolution",
    "run_pipeline",
]

#: Bump when the code changes its output (enters :meth:`PipelineConfig.to_dict`, cache keys).
PIPELINE_VERSION = "2"  # 2: seeded registration sampling, fixed work units
#: Seed of the registration metric's random sampling; SimpleITK reads seed 0 as "the wall clock",
#: which made two runs on the same scan differ (up to 2 z units on the grid).
_SEED = 1
#: Work units of the registration metric (fixed: see :func:`register_affine`).
_WORK_UNITS = 8
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's world convention)


@dataclass
class PipelineConfig:
    """Every choice of the pipeline; :meth:`to_dict` enters cache keys and checkpoints.

    Attributes:
        bias_correct: N4 bias-field correction inside the brain (adds 2 to 5 s per 2 mm head;
            raises the template NCC of IXI heads from about 0.45 to 0.55).
        brain_extraction: "deepbet" or "none" (the input is already skull-stripped).
        registration: "affine" (12 dof to MNI152; skipped for headers that declare MNI),
            "none" (trust the image's world coordinates: already in MNI space).
        template_resolution: 1 or 2 mm template used as the registration target (2 is 3x
            faster at the same NCC on 2 mm heads).
        threads: torch and ITK threads used by one scan (speed only: the result does not
            depend on it).
        sampling: fraction of template voxels sampled by the registration metric.
        iterations: gradient-descent iterations per pyramid level.
        resolution_mm: None (default) or the effective resolution in mm every input is smoothed
            to before resampling (:func:`harmonise_resolution`); e.g. 6.0 makes 5-6 mm thick
            slices and 1-2 mm scans of a head look alike on the grid, at some loss of detail.
    """

    bias_correct: bool = True
    brain_extraction: str = "deepbet"
    registration: str = "affine"
    template_resolution: int = 2
    threads: int = 2
    sampling: float = 0.1
    iterations: int = 100
    resolution_mm: float | None = None
    version: str = field(default=PIPELINE_VERSION, init=False)

    def __post_init__(self) -> None:
        if self.brain_extraction not in ("deepbet", "none"):
            raise ValueError(
                f"brain_extraction must be 'deepbet' or 'none', not {self.brain_extraction!r}"
            )
        if self.registration not in ("affine", "none"):
            raise ValueError(f"registration must be 'affine' or 'none', not {self.registration!r}")
        if int(self.template_resolution) not in (1, 2):
            raise ValueError(
                f"template_resolution must be 1 or 2 mm, not {self.template_resolution}"
            )
        if not 0 < float(self.sampling) <= 1:
            raise ValueError(f"sampling must be in (0, 1], not {self.sampling}")
        if self.resolution_mm is not None and not 0 < float(self.resolution_mm) <= 20:
            raise ValueError(
                f"resolution_mm must be None or a resolution in (0, 20] mm, not "
                f"{self.resolution_mm}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (includes ``version``; threads are left out: no effect;
        ``resolution_mm`` only when set, so the keys of earlier caches and runs stay valid)."""
        d = dataclasses.asdict(self)
        d.pop("threads")
        if d["resolution_mm"] is None:
            d.pop("resolution_mm")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PipelineConfig:
        """Rebuild from :meth:`to_dict` output (``version`` is ignored; unknown keys raise)."""
        d = {k: v for k, v in dict(d or {}).items() if k != "version"}
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        if set(d) - names:
            raise ValueError(f"unknown PipelineConfig keys {sorted(set(d) - names)}")
        return cls(**d)


@dataclass
class PipelineResult:
    """Output of :func:`run_pipeline`.

    Attributes:
        array: (X, Y, Z) float32 on the grid, z-scored in the brain, background ``-mean/std``.
        mask: (X, Y, Z) bool brain mask on the grid.
        affine: (4, 4) grid affine (voxel -> MNI mm, RAS).
        transform: (4, 4) RAS matrix mapping MNI mm -> native (canonical) mm; identity when
            registration was skipped.
        registration: what was done: "affine", "none", or "none (header declares MNI)".
        native_mask: the brain mask in the canonical native space (nibabel image, uint8).
        timings: seconds per step (load, brain_extraction, bias_correct, registration,
            resample, total).
        qc: QC measures (see :func:`slicelib.qc.measures`).
        source: the file name, or "<image>".
    """

    array: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    transform: np.ndarray
    registration: str
    native_mask: nib.Nifti1Image
    timings: dict[str, float]
    qc: dict[str, Any]
    source: str


# --------------------------------------------------------------------------------------------
# SimpleITK conversion
# --------------------------------------------------------------------------------------------


def _to_sitk(data: np.ndarray, affine: np.ndarray):
    """(X, Y, Z) array + RAS affine -> SimpleITK image (LPS world, (Z, Y, X) buffer)."""
    import SimpleITK as sitk

    im = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).T))
    lps = (_LPS @ affine)[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    im.SetSpacing(spacing.tolist())
    im.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    im.SetOrigin(lps[:, 3].tolist())
    return im


def _from_sitk(im) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(im).T  # (X, Y, Z)


def _ras_matrix(tx) -> np.ndarray:
    """4x4 RAS matrix of an ITK affine transform (fixed/MNI mm -> moving/native mm)."""
    import SimpleITK as sitk

    a = sitk.AffineTransform(tx.GetNthTransform(0) if hasattr(tx, "GetNthTransform") else tx)
    m = np.eye(4)
    A = np.asarray(a.GetMatrix()).reshape(3, 3)
    c, t = np.asarray(a.GetCenter()), np.asarray(a.GetTranslation())
    m[:3, :3], m[:3, 3] = A, t + c - A @ c
    return _LPS @ m @ _LPS


@contextlib.contextmanager
def _threads(n: int):
    import SimpleITK as sitk
    import torch

    old_torch, old_itk = (
        torch.get_num_threads(),
        sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
    )
    torch.set_num_threads(int(n))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_itk)


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _deepbet():
    from deepbet import BrainExtraction

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load deprecation
        return BrainExtraction(no_gpu=True)


def extract_brain(img: nib.Nifti1Image, method: str = "deepbet") -> np.ndarray:
    """Brain mask (X, Y, Z) bool of a canonical head. ``"none"``: the non-zero voxels."""
    data = np.asarray(img.dataobj)
    if method == "none":
        return data != 0
    _, mask, _ = _deepbet().run(img)
    return np.asarray(mask.dataobj) > 0


def bias_correct(brain, mask):
    """N4 on a ~4 mm copy inside ``mask`` (SimpleITK images); returns the corrected brain.

    Runs on one ITK thread: N4's B-spline fit sums in an order that depends on the thread count
    (0.005 intensity units between 1 and 2 threads on an IXI head), on a copy small enough for
    one thread.
    """
    import SimpleITK as sitk

    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        shrink = [max(1, int(round(4.0 / s))) for s in brain.GetSpacing()]
        small = sitk.Shrink(brain, shrink)
        small_mask = sitk.Cast(sitk.Shrink(mask, shrink) > 0.5, sitk.sitkUInt8)
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations([50, 50, 30])  # [30, 20]: 3x faster, NCC -0.1
        n4.Execute(small, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(brain)
        return sitk.Cast(brain / sitk.Exp(log_field), sitk.sitkFloat32)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def harmonise_resolution(brain, resolution_mm: float):
    """Smooth a native-space image to an effective resolution of ``resolution_mm``.

    Along each native axis with voxel spacing ``s`` (mm) a Gaussian of FWHM
    ``sqrt(max(resolution_mm**2 - s**2, 0))`` mm is applied (the FWHM of a Gaussian blur of a
    voxel of width s adds in quadrature, approximately), so a 1 mm, a 2 mm and a 5.5 mm-thick
    scan all end near ``resolution_mm`` along every axis.

    Args:
        brain: SimpleITK image (the masked, bias-corrected brain; 0 outside).
        resolution_mm: the target effective resolution, mm.

    Returns:
        SimpleITK image on the same voxels (float32).
    """
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    spacing = np.asarray(brain.GetSpacing(), dtype=float)  # (x, y, z) mm, ITK order
    fwhm = np.sqrt(np.maximum(float(resolution_mm) ** 2 - spacing**2, 0.0))  # mm per axis
    sigma = fwhm / np.sqrt(8 * np.log(2)) / spacing  # voxels per axis
    arr = sitk.GetArrayFromImage(brain).astype(np.float32)  # (z, y, x)
    out = sitk.GetImageFromArray(gaussian_filter(arr, sigma[::-1], mode="constant"))
    out.CopyInformation(brain)
    return out


@functools.lru_cache(maxsize=2)
def _fixed_template(resolution: int):
    t1 = mni_template(what="t1", resolution=resolution)
    mask = mni_template(what="mask", resolution=resolution).get_fdata() > 0.5
    return _to_sitk(t1.get_fdata() * mask, t1.affine)


def _coarse(image, mm: float = 2.0):
    """Average voxels (BinShrink) so that spacing is about ``mm``: a 1 mm head registers as fast
    as a 2 mm one (the template is 2 mm; the transform is applied to the full-resolution brain)."""
    import SimpleITK as sitk

    factors = [max(1, int(round(mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def register_affine(moving, config: PipelineConfig, fixed=None):
    """12-dof affine of a SimpleITK brain to the masked MNI152 template (MI, 3 levels).

    Args:
        moving: SimpleITK image (LPS world, mm) of the brain to register.
        config: its ``sampling`` and ``iterations`` are used.
        fixed: the target SimpleITK image; default the masked MNI152 template at
            ``config.template_resolution`` mm.
    Returns:
        the ITK transform (fixed/MNI -> native/moving points, LPS mm); :func:`_ras_matrix`
        gives its (4, 4) RAS matrix.
    """
    import SimpleITK as sitk

    if fixed is None:
        fixed = _fixed_template(int(config.template_resolution))
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(config.sampling), seed=_SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        1.0, 1e-4, int(config.iterations), relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([3, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    # the metric sums per work unit; a fixed number of them makes the sum (and the result)
    # the same whatever the number of threads
    reg.SetNumberOfWorkUnits(_WORK_UNITS)
    return reg.Execute(fixed, moving)


def _normalise(values: np.ndarray, mask: np.ndarray, source: str) -> np.ndarray:
    """z-score with the brain's mean/std; outside the brain the value 0 maps to (-mean/std)."""
    brain = values[mask]
    if brain.size < 100 or brain.std() == 0:
        raise PipelineError(
            f"{source}: only {brain.size} brain voxels on the grid (or constant brain); "
            "brain extraction or registration failed"
        )
    mean, std = float(brain.mean()), float(brain.std())
    out = (values - mean) / std
    out[~mask] = -mean / std
    return out.astype(np.float32)


def run_pipeline(
    img_or_path,
    config: PipelineConfig | None = None,
    volume_shape=(91, 109, 91),
    affine=None,
    with_qc: bool = True,
) -> PipelineResult:
    """Preprocess one raw T1 scan onto the grid ``(volume_shape, affine)`` (see module doc).

    Args:
        img_or_path: path (NIfTI, .mgz) or nibabel image.
        config: :class:`PipelineConfig` (default: deepbet + N4 + affine to the 2 mm template).
        volume_shape: grid shape (X, Y, Z) in voxels; affine: its (4, 4) RAS voxel -> mm
            affine (default :func:`grid` for 2 mm, i.e. the FSL MNI152 2 mm grid).
        with_qc: compute :func:`slicelib.qc.measures` into ``result.qc``.
    Returns:
        :class:`PipelineResult` (array (X, Y, Z) float32, mask (X, Y, Z) bool, ...).
    Raises:
        PipelineError naming the file (unreadable, 4D, constant, empty brain, ITK failure).
    """
    import SimpleITK as sitk

    config = config or PipelineConfig()
    volume_shape = tuple(int(s) for s in volume_shape)
    affine = grid(2.0)[1] if affine is None else np.asarray(affine, dtype=float)
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()

    img = load_nifti(img_or_path)
    source = img.extra["source"]
    tick("load")
    with _threads(config.threads):
        try:
            native_mask = extract_brain(img, config.brain_extraction)
            if native_mask.sum() < 1000:
                raise PipelineError(f"{source}: brain extraction found {native_mask.sum()} voxels")
            tick("brain_extraction")
            data = np.asarray(img.dataobj, dtype=np.float32)
            brain = _to_sitk(np.where(native_mask, data, 0), img.affine)
            mask_im = _to_sitk(native_mask, img.affine)
            if config.bias_correct:
                brain = sitk.Mask(
                    bias_correct(brain, mask_im), sitk.Cast(mask_im > 0.5, sitk.sitkUInt8)
                )
            tick("bias_correct")
            if config.registration == "none" or declares_mni(img):
                how = "none" if config.registration == "none" else "none (header declares MNI)"
                tx = sitk.AffineTransform(3)
            else:
                how, tx = "affine", register_affine(_coarse(brain), config)
            tick("registration")
            if config.resolution_mm is not None:
                brain = harmonise_resolution(brain, config.resolution_mm)
                tick("harmonise")
            ref = _to_sitk(np.zeros(volume_shape, np.float32), affine)
            values = _from_sitk(sitk.Resample(brain, ref, tx, sitk.sitkLinear, 0.0))
            mask = _from_sitk(sitk.Resample(mask_im, ref, tx, sitk.sitkLinear, 0.0)) > 0.5
            array = _normalise(values, mask, source)
            tick("resample")
        except RuntimeError as e:  # ITK errors
            raise PipelineError(f"{source}: {type(e).__name__} in the pipeline: {e}") from e
    timings["total"] = round(time.perf_counter() - t0, 3)
    native = nib.Nifti1Image(native_mask.astype(np.uint8), img.affine)
    result = PipelineResult(
        array=array,
        mask=mask,
        affine=affine,
        transform=_ras_matrix(tx),
        registration=how,
        native_mask=native,
        timings=timings,
        qc={},
        source=Path(source).name if source != "<image>" else source,
    )
    if with_qc:
        result.qc = qc.measures(result, img)
    return result
