"""Preprocessing onto the model grid, and the Dataset of preprocessed volumes.

Everything a model sees goes through :func:`preprocess`, so a user's own scans, the public
datasets (:mod:`slicelib.datasets`) and the synthetic cohort are prepared the same way. Scans
are read by :func:`slicelib.io.load_nifti` (re-exported here), the one loader. One of three
methods (:data:`METHODS`, ``PreprocessConfig.method``; the choice and every option enter the
cache key and the run's checkpoint, so predict applies what training did):

``"register"`` (default): :func:`slicelib.pipeline.run_pipeline`: brain extraction (deepbet),
    optional N4, 12-dof affine registration to MNI152, resampling onto the grid, z-score within
    the brain (background = the value an intensity of 0 maps to). A scan whose ORIGINAL header
    declares MNI space (sform or qform code 4: FSL/fMRIPrep outputs, also when stored LAS, the
    synthetic cohort, the shipped ``data/ixi_hh_4mm`` brains) is not registered again: it is
    resampled (method ``"resample"``), and ``info["method"]`` / ``info["method_reason"]`` say so.
``"resample"``: the scan is already in MNI space: resampled onto the grid with nilearn (its world
    coordinates trusted) and z-scored. A skull-stripped brain (exact-zero background) is
    z-scored within its non-zero voxels, as the pipeline does; a head within its foreground
    (Otsu threshold, largest component, holes filled); ``normalise="whole"``: the whole array.
``"translate"``: translation-only head centring (:mod:`slicelib.centre`), the explicit
    fallback when no registration is possible; not aligned voxel by voxel.

Intensity standardisation (``PreprocessConfig.normalise``, ``smooth_mm``): the z-score within
the brain (default ``"foreground"``), or a standardisation computed from it when a volume is
read (:mod:`slicelib.intensity`: ranks, the template's mask, tissue landmarks, a Gaussian
smoothing). The cache stores the z-scored volume once, so switching costs no new preprocessing.

Old names (``"pipeline"``, ``"mni"``, ``"centre"`` and the old ``centre`` key) are read only by
:meth:`PreprocessConfig.from_dict`, where saved configs and checkpoints are loaded.

``PreprocessConfig(register=callable)`` maps the image into MNI space with the user's own
function first (method ``"resample"`` then; ``register_name`` names the step in the cache key).

Every scan also gets quality-control measures (:mod:`slicelib.qc`: NCC with the template,
white-matter/grey-matter contrast, brain volume, coverage of the template's brain, distinct
values) and a status ok / flagged / error judged with the thresholds of the method applied.

Repeatability: the same voxels give the same array whatever the storage (``.nii``/``.nii.gz``,
uint8/int16/float32: :func:`load_nifti` reads them into float32 once) and whatever the caller's
thread count (the pipeline pins its threads; see :mod:`slicelib.pipeline`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np

from slicelib import pipeline, qc
from slicelib.centre import border_stats, centre_transform, foreground_mask, head_anchor
from slicelib.errors import DataError, PipelineError
from slicelib.intensity import (  # the last three re-exported (defined there since 2026-12-08)
    NORMALISATIONS,
    READ_TIME_NORMALISATIONS,
    moments,
    read_time_normalise,
    standardise_histogram,
    within_template,
)
from slicelib.io import MNI_2MM_AFFINE, MNI_2MM_SHAPE, declares_mni, load_nifti, target_affine
from slicelib.pipeline import PipelineConfig
from slicelib.utils import mni_template, resample

__all__ = [
    "MNI_2MM_SHAPE",
    "MNI_2MM_AFFINE",
    "CACHE_VERSION",
    "METHODS",
    "DataError",
    "PreprocessConfig",
    "target_affine",
    "load_nifti",
    "declares_mni",
    "foreground_mask",
    "head_anchor",
    "preprocess",
    "standardise_histogram",
    "within_template",
    "read_time_normalise",
]

#: Bump when the preprocessing code changes in a way that changes its output.
CACHE_VERSION = "4"  # 4: methods register/resample/translate, MNI read from the original header
#: The preprocessing methods (see the module doc).
METHODS = ("register", "resample", "translate")
#: Old method names, read by :meth:`PreprocessConfig.from_dict` only.
OLD_METHODS = {"pipeline": "register", "mni": "resample", "centre": "translate"}
_OLD_CENTRE = {"brain": "translate", "none": "resample"}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class PreprocessConfig:
    """Preprocessing parameters (all of them enter the cache key and the run's checkpoint).

    Attributes:
        volume_shape: target grid shape (X, Y, Z) in voxels; default the FSL MNI152 2 mm grid.
        voxel_size: isotropic target voxel size in mm. The grid is centred on the MNI 2 mm
            grid's centre (0, -18, 18) mm, so the default equals :data:`MNI_2MM_AFFINE`.
        method: one of :data:`METHODS`: "register" (default; scans declaring MNI are
            resampled), "resample" or "translate" (see the module doc). Default "resample"
            when ``register`` is given. Old names raise here; ``from_dict`` maps them.
        pipeline: options of :class:`slicelib.pipeline.PipelineConfig` (bias_correct,
            brain_extraction, registration, template_resolution, sampling, iterations),
            stored complete with its version (method "register" only).
        normalise: "foreground" (z-score within the brain / foreground), "whole" (over the
            whole array, as in the paper's code; methods "resample" and "translate"), or
            "quantile" (the foreground z-score, then :func:`standardise_histogram`: invariant
            to monotonic intensity changes; every method), or "template" (the foreground
            z-score inside the MNI152 brain mask only, :func:`within_template`: the edge of the
            scan's own brain mask no longer reaches the model; registered brains), or "tissue"
            (as "template", then the tissue means put at fixed values,
            :func:`slicelib.intensity.standardise_tissues`; registered brains). All but the
            first two are computed from the stored z-score when read (:mod:`slicelib.intensity`).
        smooth_mm: FWHM (mm) of an isotropic Gaussian applied after ``normalise`` when a
            volume is read (:func:`slicelib.intensity.smooth`); 0 (default): none. Left out of
            :meth:`to_dict` when 0, so earlier configs and cache keys are unchanged.
        scale_to_fit: method "translate": shrink a head that would not fit (never enlarges).
        interpolation: methods "resample"/"translate": "continuous" (3rd-order spline),
            "linear" or "nearest" (nilearn).
        register: optional callable ``nib.Nifti1Image -> nib.Nifti1Image`` that maps the image
            into MNI space (e.g. an ANTsPy/FSL wrapper); not serialised: ``register_name``
            stands for it (default ``module.qualname``; required for lambdas and partials).
    """

    volume_shape: tuple[int, int, int] = MNI_2MM_SHAPE
    voxel_size: float = 2.0
    method: str | None = None
    pipeline: dict = field(default_factory=dict)
    normalise: str = "foreground"
    smooth_mm: float = 0.0
    scale_to_fit: bool = False
    interpolation: str = "continuous"
    register: Callable[[nib.Nifti1Image], nib.Nifti1Image] | None = field(
        default=None, compare=False, repr=False
    )
    register_name: str | None = None

    def __post_init__(self) -> None:
        self.volume_shape = tuple(int(s) for s in self.volume_shape)  # type: ignore[assignment]
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 1:
            raise ValueError(
                f"PreprocessConfig.volume_shape must be 3 positive ints, got {self.volume_shape}"
            )
        self.voxel_size = float(self.voxel_size)
        if not self.voxel_size > 0:
            raise ValueError(f"PreprocessConfig.voxel_size must be > 0 mm, got {self.voxel_size}")
        _check_choice("normalise", self.normalise, NORMALISATIONS)
        self.smooth_mm = float(self.smooth_mm)
        if not 0 <= self.smooth_mm < 100:
            raise ValueError(
                f"PreprocessConfig.smooth_mm must be a FWHM in mm in [0, 100), got "
                f"{self.smooth_mm}; 0 turns the smoothing off"
            )
        _check_choice("interpolation", self.interpolation, ("continuous", "linear", "nearest"))
        if self.register is not None:
            self._check_register()
        if self.method in OLD_METHODS:
            raise ValueError(
                f"PreprocessConfig(method={self.method!r}): the method is now called "
                f"{OLD_METHODS[self.method]!r}; use method={OLD_METHODS[self.method]!r} "
                "(PreprocessConfig.from_dict still reads saved configs with the old name)."
            )
        if self.method is None:
            self.method = "resample" if self.register_name else "register"
        _check_choice("method", self.method, METHODS)
        if self.register_name and self.method != "resample":
            raise ValueError(
                f"PreprocessConfig(register=..., method={self.method!r}): a registered image "
                "is in MNI space and must not be moved again; leave method unset or use "
                "'resample'."
            )
        try:
            self.pipeline = PipelineConfig.from_dict(self.pipeline).to_dict()
        except (TypeError, ValueError) as e:
            raise ValueError(f"PreprocessConfig.pipeline: {e}") from e

    def _check_register(self) -> None:
        if not callable(self.register):
            raise ValueError(f"PreprocessConfig.register must be callable, got {self.register!r}")
        if not self.register_name:
            name = getattr(self.register, "__qualname__", None)
            if name is None or "<lambda>" in name:
                raise ValueError(
                    f"PreprocessConfig(register={self.register!r}) needs register_name='...': "
                    "a lambda or nameless callable cannot name its step in the cache key "
                    "(every lambda would share one key and reuse the other's cached volumes)."
                )
            self.register_name = f"{self.register.__module__}.{name}"

    def stored(self) -> PreprocessConfig:
        """The config whose volumes the cache stores: the read-time normalisations
        (:data:`READ_TIME_NORMALISATIONS`) and the smoothing are computed from the foreground
        z-score when read (:func:`read_time_normalise`), so they share its entry."""
        if self.normalise not in READ_TIME_NORMALISATIONS and not self.smooth_mm:
            return self
        normalise = "foreground" if self.normalise in READ_TIME_NORMALISATIONS else self.normalise
        return dataclasses.replace(self, normalise=normalise, smooth_mm=0.0)

    @property
    def affine(self) -> np.ndarray:
        """Target grid affine, shape (4, 4), voxel index -> RAS mm."""
        return target_affine(self.volume_shape, self.voxel_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the parameters (``register`` is represented by its name)."""
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "register"
        }
        if not self.smooth_mm:
            del d["smooth_mm"]
        return {**d, "volume_shape": list(self.volume_shape), "pipeline": dict(self.pipeline)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys raise; ``register`` is not restored).

        Saved configs and checkpoints keep their behaviour: the old method names map to the new
        ones (:data:`OLD_METHODS`: "pipeline" -> "register", "mni" -> "resample", "centre" ->
        "translate"); the old key ``centre`` (saved before the methods existed) maps "none" ->
        "resample", "brain" -> "translate" (with method "pipeline", "none" was its default);
        the key ``shape`` is read as ``volume_shape``.
        """
        d = dict(d or {})
        if "shape" in d:
            if "volume_shape" in d:
                raise ValueError("PreprocessConfig: give volume_shape or the old shape, not both")
            d["volume_shape"] = d.pop("shape")
        centre = d.pop("centre", None)
        method = OLD_METHODS.get(d.get("method"), d.get("method"))
        if centre is not None:
            if centre not in _OLD_CENTRE:
                raise ValueError(
                    f"PreprocessConfig: old key centre must be 'brain' or 'none', got {centre!r}"
                )
            implied = _OLD_CENTRE[centre]
            if method is None:
                method = implied
            elif method != implied and not (centre == "none" and method == "register"):
                raise ValueError(
                    f"PreprocessConfig.from_dict: method {d.get('method')!r} and the old key "
                    f"centre={centre!r} disagree; keep method only."
                )
        if method is not None:
            d["method"] = method
        names = {f.name for f in dataclasses.fields(cls)} - {"register"}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown PreprocessConfig keys {sorted(unknown)}; known: {sorted(names)}"
            )
        if d.get("register_name") is not None:
            warnings.warn(
                f"PreprocessConfig.from_dict: register step {d['register_name']!r} cannot be "
                "restored from a dict; pass register=... yourself.",
                stacklevel=2,
            )
        return cls(**d)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"PreprocessConfig.{name} must be one of {list(choices)}, got {value!r}")


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def preprocess(
    path_or_img: str | os.PathLike | nib.Nifti1Image,
    config: PreprocessConfig | None = None,
    return_info: bool = False,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Load one scan and bring it onto the model grid with ``config.method`` (see module doc).

    Args:
        path_or_img: NIfTI or FreeSurfer .mgz path, or a nibabel image (any orientation,
            voxel size; 3D, or 4D with one volume).
        config: :class:`PreprocessConfig` (default: register onto the MNI152 2 mm grid).
        return_info: also return a dict describing what was done.
        threads: CPU threads of the pipeline (default its config's, 2); the result does not
            depend on it.

    Returns:
        ``(volume, affine)``: volume float32 (X, Y, Z) = ``config.volume_shape``, z-scored
        (unitless), RAS axes; affine (4, 4) voxel -> mm of the grid (``config.affine``).
        With ``return_info``, a third dict: ``method`` (the one applied: a "register" request
        on a scan whose original header declares MNI is resampled), ``method_reason`` (why
        that method), ``declares_mni``, ``qc`` (:func:`slicelib.qc.measures` and
        ``n_unique``), ``status`` ("ok" / "flagged") and ``reasons`` (:func:`slicelib.qc.
        qc_status` with the thresholds of the method applied), ``mask`` (bool (X, Y, Z) brain
        or foreground on the grid), ``inside_fraction``, ``border_fraction``,
        ``border_fraction_by_face``, ``com_offset_mm`` (3,), ``fast_path`` (already on the
        grid), ``shift_mm`` (3,) and ``scale`` (method "translate"), ``source_shape``,
        ``source_axcodes`` (as stored in the file).

    Raises:
        DataError naming the file: unreadable, not 3D, non-finite, constant, nothing inside
        the grid, or a pipeline failure (brain extraction, registration).
    """
    config = config or PreprocessConfig()
    if config.register_name and config.register is None:
        raise ValueError(
            f"PreprocessConfig names the registration step {config.register_name!r} but holds "
            "no register callable (a config read back from a dict); pass register=... again."
        )
    img = load_nifti(path_or_img)
    name = img.extra["source"]
    source = {k: img.extra[k] for k in ("source_shape", "source_axcodes")}
    unique = qc.n_unique(np.asarray(img.dataobj))
    in_mni = declares_mni(img)
    method, why = config.method, "requested"
    if config.register is not None:
        img = load_nifti(config.register(img))
        why = f"requested; the register step {config.register_name} mapped the image to MNI"
    elif config.method == "register" and in_mni:
        method = "resample"
        why = "register requested, but the header declares MNI (sform/qform code 4): resampled"
    elif config.method == "translate" and in_mni:
        why = "translate requested; the header declares MNI (sform/qform code 4): not moved"
    if method == "register":
        vol, info = _by_pipeline(img, config, name, threads)
    else:
        vol, info = _by_resampling(img, config, name, move=method == "translate" and not in_mni)
    vol = read_time_normalise(vol, config, name)
    info["qc"]["n_unique"] = unique
    status, reasons = qc.qc_status(info["qc"], method)
    info.update(method=method, method_reason=why, declares_mni=in_mni, **source)
    info.update(status=status, reasons=reasons)
    return (vol, config.affine, info) if return_info else (vol, config.affine)


def _by_pipeline(img, config: PreprocessConfig, name: str, threads: int | None):
    """Method "register": brain extraction, N4, affine to MNI152, resampling, brain z-score."""
    opts = {**config.pipeline, **({"threads": int(threads)} if threads else {})}
    try:
        r = pipeline.run_pipeline(
            img, PipelineConfig.from_dict(opts), config.volume_shape, config.affine
        )
    except PipelineError as e:
        raise DataError(str(e).replace("<image>", name)) from e
    info = {
        "fast_path": False,
        "shift_mm": np.zeros(3),
        "scale": 1.0,
        "mask": r.mask,
        "inside_fraction": float(r.qc["inside"]),
        "registration": r.registration,
        "timings": r.timings,
        "qc": dict(r.qc),
        **border_stats(r.mask, config.voxel_size),
    }
    return r.array, info


def _zero_background(data: np.ndarray) -> bool:
    """A skull-stripped brain: minimum 0, the eight corners 0, and the non-zero voxels are the
    foreground (>= 80 % of them inside the Otsu mask; a raw head's zero-padded background with
    noise around the head is not)."""
    corners = data[np.ix_(*[[0, -1]] * 3)]
    if float(data.min()) != 0.0 or corners.any():
        return False
    nonzero = int(np.count_nonzero(data))
    return nonzero > 0 and int(foreground_mask(data).sum()) >= 0.8 * nonzero


def _resample(img, affine: np.ndarray, shape, interpolation: str) -> np.ndarray:
    return np.asarray(resample(img, affine, shape, interpolation).dataobj, dtype=np.float32)


def _by_resampling(img, config: PreprocessConfig, name: str, move: bool):
    """Methods "resample" (world coordinates trusted) and "translate" (``move``: translate the
    head); ``img`` canonical RAS (:func:`load_nifti`)."""
    src = np.asarray(img.dataobj, dtype=np.float32)
    stripped = not move and _zero_background(src)  # "translate" is for raw heads
    shape, tgt = config.volume_shape, config.affine
    shift, scale = np.zeros(3), 1.0
    fast = tuple(src.shape) == tuple(shape) and np.allclose(img.affine, tgt, atol=1e-4)
    if fast:
        data, brain = src, src != 0
    else:
        sample = tgt
        if move:
            c = centre_transform(img, shape, config.voxel_size, config.scale_to_fit)
            sample, shift, scale = c["move"] @ tgt, c["shift_mm"], c["scale"]
        data = _resample(img, sample, shape, config.interpolation)
        if config.interpolation == "continuous":  # no spline overshoot below the minimum
            np.clip(data, float(src.min()), None, out=data)
        if not np.any(data):
            raise DataError(
                f"{name}: no part of the image falls inside the target grid; method "
                "'resample' needs an image in MNI space. Use method='register' for raw heads."
            )
        brain = None
        if stripped:
            nonzero = nib.Nifti1Image((src != 0).astype(np.float32), img.affine)
            brain = _resample(nonzero, sample, shape, "linear") > 0.5
    fg = brain if stripped else foreground_mask(data)
    mean, std = moments(data, None if config.normalise == "whole" else fg, name)
    vol = (data - mean) / std
    if stripped:
        vol[~brain] = -mean / std  # as the pipeline: the value an intensity of 0 maps to
    info = {
        "fast_path": bool(fast),
        "shift_mm": shift,
        "scale": scale,
        "mask": fg,
        "qc": _resampled_qc(vol, fg, stripped, img, config, scale),
        **border_stats(fg, config.voxel_size),
    }
    info["inside_fraction"] = float(info["qc"]["inside"])
    return vol.astype(np.float32), info


def _resampled_qc(vol, fg, stripped: bool, img, config: PreprocessConfig, scale: float) -> dict:
    """QC measures (:func:`slicelib.qc.measures`) of a resampled volume. A head (not skull-
    stripped) in MNI space has its brain where the template's is."""
    shape, aff = config.volume_shape, config.affine
    if stripped:
        mask = fg
        native = nib.Nifti1Image((np.asarray(img.dataobj) != 0).astype(np.uint8), img.affine)
    else:
        mask = fg & (mni_template(shape, aff, what="mask").get_fdata() > 0.5)
        native = nib.Nifti1Image(mask.astype(np.uint8), aff)
    result = SimpleNamespace(
        array=vol, mask=mask, affine=aff, transform=np.diag([scale] * 3 + [1.0]), native_mask=native
    )
    return qc.measures(result)
