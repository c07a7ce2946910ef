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

Intensity standardisation (``PreprocessConfig.normalise``): the z-score (default
``"foreground"``) is linear, so a scan stored with another contrast (a gamma, another sequence
or scanner, FreeSurfer's white-matter scaling) reaches the model with another histogram.
``normalise="quantile"`` (:func:`standardise_histogram`) replaces the z-scored brain's voxels by
the standard-normal quantiles of their ranks: every monotonic change of the intensities (a
gamma, a rescale, uint8 storage) gives the same array, at the cost of the histogram's shape
(the grey/white contrast ratio). ``normalise="template"`` (:func:`within_template`) keeps only
the brain inside the MNI152 brain mask and z-scores it there, so the edge of the scan's own
brain mask (which moves with the scan's resolution and contrast) no longer reaches the model.
``normalise="tissue"`` (:func:`standardise_tissues`) goes one step further: inside the same
region it maps intensities piecewise-linearly so that the CSF, grey- and white-matter means of
a 3-class Gaussian mixture land at fixed values. A smooth monotonic change (a gamma, another
sequence's contrast) then barely moves the tissues, while their extent (atrophy) is kept; the
contrast between the tissues, itself an age cue, is given up.
The cache stores the z-scored volume once and computes either when read, so switching costs
no new preprocessing.

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
from scipy.special import ndtri
from scipy.stats import rankdata

from slicelib import pipeline, qc
from slicelib.centre import border_stats, centre_transform, foreground_mask, head_anchor
from slicelib.errors import DataError, PipelineError
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
#: The intensity normalisations (``PreprocessConfig.normalise``; see the module doc).
NORMALISATIONS = ("foreground", "whole", "quantile", "template", "tissue")
#: The normalisations computed from the stored foreground z-score when a volume is read.
READ_TIME_NORMALISATIONS = ("quantile", "template", "tissue")
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
            :func:`standardise_tissues`; registered brains).
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
        """The config whose volumes the cache stores: ``normalise="quantile"`` and
        ``"template"`` are computed from the foreground z-score when read
        (:func:`read_time_normalise`), so they share its entry."""
        if self.normalise not in READ_TIME_NORMALISATIONS:
            return self
        return dataclasses.replace(self, normalise="foreground")

    @property
    def affine(self) -> np.ndarray:
        """Target grid affine, shape (4, 4), voxel index -> RAS mm."""
        return target_affine(self.volume_shape, self.voxel_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the parameters (``register`` is represented by its name)."""
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "register"
        }
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
    mean, std = _moments(data, None if config.normalise == "whole" else fg, name)
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


def standardise_histogram(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """Quantile (rank) intensity standardisation of a z-scored volume.

    The brain is the voxels above the volume's minimum (the background of a registered or
    skull-stripped brain is one constant below all tissue; for an unstripped head every voxel
    above the darkest counts). Each brain voxel becomes the standard-normal quantile of its
    rank, ``Phi^-1((rank - 0.5) / n)`` (ties share their mean rank); the background becomes the
    lowest of these values. Any strictly increasing change of the intensities (gamma, rescale,
    offset) leaves the result unchanged; the histogram's shape is given up.

    Args:
        volume: array (X, Y, Z), any float dtype (z-scored, unitless).
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z): brain mean ~0 and SD ~1 (unitless), background constant.

    Raises:
        DataError when fewer than 100 voxels lie above the minimum (a constant image).
    """
    v = np.asarray(volume, dtype=np.float32)
    brain = v > v.min()
    n = int(brain.sum())
    if n < 100:
        raise DataError(
            f"{name}: only {n} voxel(s) above the background for the quantile standardisation; "
            "the volume is (nearly) constant. Check the scan, or use normalise='foreground'."
        )
    quantiles = ndtri((rankdata(v[brain], method="average") - 0.5) / n).astype(np.float32)
    out = np.full(v.shape, quantiles.min(), dtype=np.float32)
    out[brain] = quantiles
    return out


def within_template(volume: np.ndarray, affine: np.ndarray, name: str = "volume") -> np.ndarray:
    """The foreground z-score of a brain restricted to the MNI152 brain mask of its grid.

    The brain is the voxels above the volume's minimum (as :func:`standardise_histogram`);
    the region kept is that brain inside the template's brain mask on the grid
    (:func:`slicelib.utils.mni_template`, ``what="mask"``). The region is z-scored again and
    every other voxel gets the value an intensity of 0 maps to, exactly as if the pipeline had
    used (the scan's brain mask AND the template's) as the brain mask. The rim of the scan's own
    mask outside the template's (about 8 % of an IXI brain at 4 mm) changes with the scan's
    brain extraction (a thick-slice scan's deepbet mask is about 4 % larger); it no longer
    reaches the model. Meant for registered brains (method "register", or a brain already in
    MNI space); the volume's own edge is kept where it lies inside the template's mask.

    Args:
        volume: array (X, Y, Z), z-scored (unitless), background constant at its minimum.
        affine: (4, 4) voxel -> MNI mm affine of the grid.
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z): the kept region z-scored (mean 0, SD 1), the rest constant.

    Raises:
        DataError when fewer than 100 brain voxels lie inside the template's mask (the volume
        is not a registered brain, or registration failed).
    """
    v = np.asarray(volume, dtype=np.float32)
    template = mni_template(v.shape, affine, what="mask").get_fdata() > 0.5
    background = float(v.min())
    region = (v > background) & template
    n = int(region.sum())
    if n < 100:
        raise DataError(
            f"{name}: only {n} brain voxel(s) inside the MNI152 brain mask of the grid for "
            "normalise='template'; the volume is not a registered brain (or its registration "
            "failed). Check the scan's QC, or use normalise='foreground'."
        )
    mean, std = _moments(v, region, name)
    out = np.full(v.shape, (background - mean) / std, dtype=np.float32)
    out[region] = (v[region] - mean) / std
    return out


#: Where ``normalise="tissue"`` puts the CSF, grey- and white-matter means (unitless): about
#: where they lie in IXI brains z-scored inside the template's mask on the 4 mm grid.
TISSUE_LEVELS = (-1.35, -0.05, 1.0)


def tissue_means(values: np.ndarray, name: str = "volume") -> np.ndarray:
    """The three means of a 3-class Gaussian mixture of brain intensities (CSF, grey and white
    matter in a T1 scan), by scikit-learn's ``GaussianMixture`` (started from the 10th, 50th
    and 90th percentiles; deterministic).

    Args:
        values: 1D array (N,) of brain voxel intensities (any unit; z-scored here).
        name: what the values come from (the scan's file), named in errors.

    Returns:
        float64 array (3,): the means, ascending (the values' unit).

    Raises:
        DataError when the mixture does not converge, two means lie within 0.05 SD of each
        other or a class holds under 2 % of the voxels: fewer than three intensity levels (a
        label image, not a T1 brain).
    """
    from sklearn.exceptions import ConvergenceWarning  # imported here: sklearn is slow to import
    from sklearn.mixture import GaussianMixture

    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)  # (N, 1)
    start = np.percentile(x, [10, 50, 90]).reshape(3, 1)
    with warnings.catch_warnings():  # judged below: a degenerate image warns in k-means
        warnings.simplefilter("ignore", ConvergenceWarning)
        mix = GaussianMixture(3, means_init=start, random_state=0, max_iter=200).fit(x)
    means = np.sort(mix.means_.ravel())
    if (
        not mix.converged_
        or np.min(np.diff(means)) < 0.05 * float(x.std())
        or mix.weights_.min() < 0.02
    ):
        raise DataError(
            f"{name}: the brain's intensities do not show three tissues (mixture means "
            f"{np.round(means, 3).tolist()}, weights {np.round(mix.weights_, 3).tolist()}) for "
            "normalise='tissue'. Check the scan (a T1 "
            "brain is expected) and its QC, or use normalise='template'."
        )
    return means


def standardise_tissues(volume: np.ndarray, affine: np.ndarray, name: str = "volume") -> np.ndarray:
    """Tissue-landmark intensity standardisation of a registered, z-scored brain.

    The region is :func:`within_template`'s (the brain inside the MNI152 brain mask, z-scored
    there). Its CSF, grey- and white-matter means (:func:`tissue_means`) are mapped to
    :data:`TISSUE_LEVELS` by a piecewise-linear, increasing map, continued beyond the outer
    means with the slope of the nearest segment (the background, below every tissue, follows
    the lower one). A smooth monotonic intensity change (a gamma of 0.7-1.4, another scanner's
    grey/white contrast) becomes nearly the identity after it; the histogram's shape between
    the landmarks and the tissues' extent are kept (unlike ``normalise="quantile"``), the
    tissue contrast is not.

    Args:
        volume: array (X, Y, Z), z-scored (unitless), background constant at its minimum.
        affine: (4, 4) voxel -> MNI mm affine of the grid.
        name: what the volume is (the scan's file), named in errors.

    Returns:
        float32 array (X, Y, Z) (unitless): the tissue means at :data:`TISSUE_LEVELS`.

    Raises:
        DataError as :func:`within_template` and :func:`tissue_means`.
    """
    v = within_template(volume, affine, name)
    background = float(v.min())
    xp = tissue_means(v[v > background], name)
    fp = np.asarray(TISSUE_LEVELS, dtype=np.float64)
    low, high = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[2] - fp[1]) / (xp[2] - xp[1])
    out = np.interp(v, xp, fp)
    out = np.where(v < xp[0], fp[0] + (v - xp[0]) * low, out)
    out = np.where(v > xp[2], fp[2] + (v - xp[2]) * high, out)
    return out.astype(np.float32)


def read_time_normalise(volume: np.ndarray, config: PreprocessConfig, name: str = "volume"):
    """The normalisation of ``config`` computed from a stored foreground z-score: "quantile"
    (:func:`standardise_histogram`), "template" (:func:`within_template`) or "tissue"
    (:func:`standardise_tissues`); the volume unchanged for the others. (X, Y, Z) in,
    (X, Y, Z) out (float32 when changed)."""
    if config.normalise == "quantile":
        return standardise_histogram(volume, name)
    if config.normalise == "template":
        return within_template(volume, config.affine, name)
    if config.normalise == "tissue":
        return standardise_tissues(volume, config.affine, name)
    return volume


def _moments(data: np.ndarray, mask: np.ndarray | None, name: str) -> tuple[float, float]:
    vals = data[mask] if mask is not None else data
    mean = float(vals.mean(dtype=np.float64)) if vals.size else 0.0
    std = float(vals.std(dtype=np.float64)) if vals.size else 0.0
    if not std > 1e-6 * max(1.0, abs(mean)):
        raise DataError(
            f"{name}: intensities are constant inside the brain/foreground on the grid (std "
            f"{std:g}): a binary mask or an empty image? A T1 scan is needed, inside the grid."
        )
    return mean, std


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
