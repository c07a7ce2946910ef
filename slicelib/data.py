"""NIfTI loading, preprocessing onto the model grid, and the Dataset of preprocessed volumes.

Everything a model sees goes through :func:`preprocess`, so a user's own scans, the public
datasets (:mod:`slicelib.datasets`) and the synthetic cohort are prepared the same way. One
of three methods (``PreprocessConfig.method``; the choice and every option enter the cache key
and the run's checkpoint, so predict applies what training did):

``"pipeline"`` (default): :func:`slicelib.pipeline.run_pipeline`: brain extraction (deepbet),
    optional N4, 12-dof affine registration to MNI152, resampling onto the grid, z-score within
    the brain (background = the value an intensity of 0 maps to). Scans whose header declares
    MNI space (sform or qform code 4: FSL/fMRIPrep outputs, the synthetic cohort, the shipped
    ``data/ixi_hh_4mm`` brains) take the ``"mni"`` path instead (``info["method"]``).
``"mni"``: the scan is already in MNI space: resampled onto the grid with nilearn (its world
    coordinates trusted) and z-scored. A skull-stripped brain (exact-zero background) is
    z-scored within its non-zero voxels, as the pipeline does; a head within its foreground
    (Otsu threshold, largest component, holes filled); ``normalise="whole"``: the whole array.
``"centre"``: the old translation-only head centring (:mod:`slicelib.centre`), the explicit
    fallback when no registration is possible; not aligned voxel by voxel.

``PreprocessConfig(register=callable)`` maps the image into MNI space with the user's own
function first (method ``"mni"`` then; ``register_name`` names the step in the cache key).

Every scan also gets quality-control measures (:mod:`slicelib.qc`: NCC with the template,
white-matter/grey-matter contrast, brain volume, distinct values) and a status ok / flagged /
error; :func:`slicelib.cache.preprocess_many` stores them beside the cached array.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np

from slicelib.centre import border_stats, centre_transform, foreground_mask, head_anchor
from slicelib.errors import DataError

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
]

#: Shape of the FSL MNI152 2 mm grid, array axes (X, Y, Z) = (left->right, post->ant, inf->sup).
MNI_2MM_SHAPE: tuple[int, int, int] = (91, 109, 91)
#: Canonical-RAS affine (voxel index -> mm) of the FSL MNI152 2 mm grid (FSL stores it as LAS
#: with -2 on x; this has the same voxel centres, mirrored in the x index).
MNI_2MM_AFFINE: np.ndarray = np.array(
    [[2.0, 0.0, 0.0, -90.0], [0.0, 2.0, 0.0, -126.0], [0.0, 0.0, 2.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)
MNI_2MM_AFFINE.setflags(write=False)
#: World point (mm) at the centre of the MNI 2 mm grid; every target grid is centred here.
_GRID_CENTRE_MM = np.array([0.0, -18.0, 18.0])
#: Bump when the preprocessing code changes in a way that changes its output.
CACHE_VERSION = "3"  # 3: methods pipeline/mni/centre, skull-stripped brains z-scored in the brain
#: The preprocessing methods (see the module doc).
METHODS = ("pipeline", "mni", "centre")

_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")


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
        method: "pipeline" (default; scans declaring MNI take "mni"), "mni" or "centre"
            (see the module doc). Default "mni" when ``register`` is given.
        pipeline: options of :class:`slicelib.pipeline.PipelineConfig` (bias_correct,
            brain_extraction, registration, template_resolution, sampling, iterations),
            stored complete with its version (method "pipeline" only).
        normalise: "foreground" (z-score within the brain / foreground) or "whole" (over the
            whole array, as in the paper's code); methods "mni" and "centre".
        centre: the old spelling of the method: "brain" = "centre", "none" = "mni".
        scale_to_fit: method "centre": shrink a head that would not fit (never enlarges).
        interpolation: methods "mni"/"centre": "continuous" (3rd-order spline), "linear" or
            "nearest" (nilearn).
        register: optional callable ``nib.Nifti1Image -> nib.Nifti1Image`` that maps the image
            into MNI space (e.g. an ANTsPy/FSL wrapper); not serialised: ``register_name``
            stands for it (default ``module.qualname``; required for lambdas and partials).
    """

    volume_shape: tuple[int, int, int] = MNI_2MM_SHAPE
    voxel_size: float = 2.0
    method: str | None = None
    pipeline: dict = field(default_factory=dict)
    normalise: str = "foreground"
    centre: str | None = None
    scale_to_fit: bool = False
    interpolation: str = "continuous"
    register: Callable[[nib.Nifti1Image], nib.Nifti1Image] | None = field(
        default=None, compare=False, repr=False
    )
    register_name: str | None = None

    def __post_init__(self) -> None:
        from slicelib.pipeline import PipelineConfig

        self.volume_shape = tuple(int(s) for s in self.volume_shape)  # type: ignore[assignment]
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 1:
            raise ValueError(
                f"PreprocessConfig.volume_shape must be 3 positive ints, got {self.volume_shape}"
            )
        self.voxel_size = float(self.voxel_size)
        if not self.voxel_size > 0:
            raise ValueError(f"PreprocessConfig.voxel_size must be > 0 mm, got {self.voxel_size}")
        _check_choice("normalise", self.normalise, ("foreground", "whole"))
        _check_choice("interpolation", self.interpolation, ("continuous", "linear", "nearest"))
        if self.register is not None:
            self._check_register()
        self._resolve_method()
        try:
            self.pipeline = PipelineConfig.from_dict(self.pipeline).to_dict()
        except (TypeError, ValueError) as e:
            raise ValueError(f"PreprocessConfig.pipeline: {e}") from e

    def _resolve_method(self) -> None:
        """method and its old spelling ``centre`` agree; register implies "mni"."""
        if self.centre is not None:
            _check_choice("centre", self.centre, ("brain", "none"))
        old = {"brain": "centre", "none": "mni", None: None}[self.centre]
        if self.method is None:
            self.method = "mni" if self.register_name else (old or "pipeline")
        _check_choice("method", self.method, METHODS)
        if (self.centre == "brain") != (self.method == "centre") and self.centre is not None:
            if not (self.centre == "none" and self.method == "pipeline"):
                raise ValueError(
                    f"PreprocessConfig(method={self.method!r}, centre={self.centre!r}) "
                    "disagree; give method only (centre is its old spelling)."
                )
        if self.register_name and self.method != "mni":
            raise ValueError(
                f"PreprocessConfig(register=..., method={self.method!r}): a registered image "
                "is in MNI space and must not be moved again; leave method unset or use 'mni'."
            )
        self.centre = "brain" if self.method == "centre" else "none"

    def _check_register(self) -> None:
        if not callable(self.register):
            raise ValueError(f"PreprocessConfig.register must be callable, got {self.register!r}")
        if self.centre == "brain":
            raise ValueError(
                "PreprocessConfig(register=..., centre='brain'): re-centring would undo the "
                "registration. Leave centre unset (a registered image is not moved again)."
            )
        if not self.register_name:
            name = getattr(self.register, "__qualname__", None)
            if name is None or "<lambda>" in name:
                raise ValueError(
                    f"PreprocessConfig(register={self.register!r}) needs register_name='...': "
                    "a lambda or nameless callable cannot name its step in the cache key "
                    "(every lambda would share one key and reuse the other's cached volumes)."
                )
            self.register_name = f"{self.register.__module__}.{name}"

    @property
    def affine(self) -> np.ndarray:
        """Target grid affine, shape (4, 4), voxel index -> RAS mm."""
        return target_affine(self.volume_shape, self.voxel_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the parameters (``register`` is represented by its name;
        ``centre``, the old spelling of ``method``, is left out)."""
        skip = ("register", "centre")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {**d, "volume_shape": list(self.volume_shape), "pipeline": dict(self.pipeline)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys raise; ``register`` is not restored).

        Configs saved before the methods existed keep their behaviour through ``centre``
        (always saved then): "none" -> "mni", "brain" -> "centre". The key ``shape`` of configs
        saved before the rename is read as ``volume_shape``.
        """
        d = dict(d or {})
        if "shape" in d:
            if "volume_shape" in d:
                raise ValueError("PreprocessConfig: give volume_shape or the old shape, not both")
            d["volume_shape"] = d.pop("shape")
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


def target_affine(shape: Sequence[int] = MNI_2MM_SHAPE, voxel_size: float = 2.0) -> np.ndarray:
    """Affine (4, 4) of an RAS grid of ``shape`` voxels of ``voxel_size`` mm centred on (0, -18, 18) mm.

    ``target_affine((91, 109, 91), 2.0)`` equals :data:`MNI_2MM_AFFINE`.
    """
    shape_arr = np.asarray(shape, dtype=float)
    aff = np.eye(4)
    aff[:3, :3] *= float(voxel_size)
    aff[:3, 3] = _GRID_CENTRE_MM - float(voxel_size) * (shape_arr - 1) / 2
    return aff


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(_SUFFIXES)


def load_nifti(path: str | os.PathLike | nib.Nifti1Image) -> nib.Nifti1Image:
    """Load and validate a 3D image.

    Args:
        path: ``.nii`` / ``.nii.gz`` / FreeSurfer ``.mgz`` file (its affine is used), or an
            already loaded nibabel image.

    Returns:
        ``nib.Nifti1Image`` with float32 data of shape (X, Y, Z) held in memory (a 4D image
        with a single volume is squeezed to 3D), its original affine (voxel -> mm) and header.

    Raises:
        DataError: missing/unreadable/corrupt/truncated file, not 3D (2D, or 4D with more than
            one volume), NaN or inf voxels, all-zero or constant data, singular affine. The message names
            the file and says what to do.
    """
    if isinstance(path, nib.spatialimages.SpatialImage):
        img, name = path, getattr(path, "get_filename", lambda: None)() or "<in-memory image>"
    else:
        p = Path(path)
        name = str(p)
        if not p.exists():
            raise DataError(
                f"{name}: file not found. Check the path (relative paths in a table are "
                "relative to the table's folder)."
            )
        if p.is_dir() or not _is_image(p):
            raise DataError(
                f"{name}: not a NIfTI file; expected .nii, .nii.gz or FreeSurfer .mgz "
                "(convert DICOM with dcm2niix first)."
            )
        try:
            img = nib.load(str(p))
        except Exception as e:  # ImageFileError, gzip errors, OSError, ...
            raise DataError(
                f"{name}: cannot be read as NIfTI ({type(e).__name__}: {e}). The file is "
                "corrupt or not a NIfTI image; re-export or re-download it."
            ) from e
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # truncated gzip: EOFError, zlib.error, OSError, ValueError
        raise DataError(
            f"{name}: the voxel data cannot be read ({type(e).__name__}: {e}). The file is "
            "truncated or corrupt; re-export or re-download it."
        ) from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        n = data.shape[-1]
        what = f"a 4D series with {n} volumes" if data.ndim == 4 else f"a {data.ndim}D image"
        raise DataError(
            f"{name}: shape {data.shape} is {what}; a single 3D T1 volume is needed. "
            "Extract one volume (e.g. nilearn.image.index_img(img, 0)) or use the 3D scan."
        )
    if min(data.shape) < 2:
        raise DataError(
            f"{name}: shape {data.shape} is a single slice (2D), not a 3D volume; "
            "use the full 3D scan."
        )
    n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataError(f"{name}: {n_bad} voxels are NaN or inf; fix them (numpy.nan_to_num).")
    if not np.any(data):
        raise DataError(f"{name}: every voxel is zero; the image is empty. Check the export.")
    if float(data.max()) == float(data.min()):
        raise DataError(
            f"{name}: a constant image (every voxel = {data.flat[0]:g}); a T1 scan is needed."
        )
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise DataError(
            f"{name}: the affine (voxel -> mm) is singular or not finite; "
            "fix the header (qform/sform)."
        )
    header = img.header.copy() if isinstance(img, nib.Nifti1Image) else None
    out = nib.Nifti1Image(data, affine, header)
    out.set_data_dtype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def declares_mni(img: nib.spatialimages.SpatialImage) -> bool:
    """True if a NIfTI header says the image is in MNI152 space (sform or qform code 4)."""
    header = getattr(img, "header", None)
    if not isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        return False
    return int(header["sform_code"]) == 4 or int(header["qform_code"]) == 4


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
        config: :class:`PreprocessConfig` (default: pipeline onto the MNI152 2 mm grid).
        return_info: also return a dict describing what was done.
        threads: CPU threads of the pipeline (default its config's, 2).

    Returns:
        ``(volume, affine)``: volume float32 (X, Y, Z) = ``config.volume_shape``, z-scored
        (unitless), RAS axes; affine (4, 4) voxel -> mm of the grid (``config.affine``).
        With ``return_info``, a third dict: ``method`` (the one applied: a scan declaring MNI
        takes "mni"), ``declares_mni``, ``qc`` (:func:`slicelib.qc.measures` and
        ``n_unique``), ``status`` ("ok" / "flagged") and ``reasons`` (:func:`slicelib.qc.
        qc_status`), ``mask`` (bool (X, Y, Z) brain or foreground on the grid),
        ``inside_fraction``, ``border_fraction``, ``border_fraction_by_face``,
        ``com_offset_mm`` (3,), ``fast_path`` (already on the grid), ``shift_mm`` (3,) and
        ``scale`` (method "centre"), ``source_shape``, ``source_axcodes``.

    Raises:
        DataError naming the file: unreadable, not 3D, non-finite, constant, nothing inside
        the grid, or a pipeline failure (brain extraction, registration).
    """
    from slicelib import qc

    config = config or PreprocessConfig()
    if config.register_name and config.register is None:
        raise ValueError(
            f"PreprocessConfig names the registration step {config.register_name!r} but holds "
            "no register callable (a config read back from a dict); pass register=... again."
        )
    img = load_nifti(path_or_img)
    name = str(path_or_img) if isinstance(path_or_img, (str, os.PathLike)) else "<image>"
    source = {"source_shape": tuple(img.shape), "source_axcodes": nib.aff2axcodes(img.affine)}
    unique = qc.n_unique(np.asarray(img.dataobj))
    if config.register is not None:
        img = load_nifti(config.register(img))
    in_mni = declares_mni(img)
    method = "mni" if config.method == "pipeline" and in_mni else config.method
    if method == "pipeline":
        vol, info = _by_pipeline(img, config, name, threads)
    else:
        vol, info = _by_resampling(img, config, name, move=method == "centre" and not in_mni)
    info["qc"]["n_unique"] = unique
    status, reasons = qc.qc_status(info["qc"])
    info.update(method=method, declares_mni=in_mni, status=status, reasons=reasons, **source)
    return (vol, config.affine, info) if return_info else (vol, config.affine)


def _by_pipeline(img, config: PreprocessConfig, name: str, threads: int | None):
    """Method "pipeline": brain extraction, N4, affine to MNI152, resampling, brain z-score."""
    from slicelib.pipeline import PipelineConfig, PipelineError, run_pipeline

    opts = {**config.pipeline, **({"threads": int(threads)} if threads else {})}
    try:
        r = run_pipeline(img, PipelineConfig.from_dict(opts), config.volume_shape, config.affine)
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
    from nilearn.image import resample_img

    out = resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation=interpolation,
        fill_value=0.0,
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(out.dataobj, dtype=np.float32)


def _by_resampling(img, config: PreprocessConfig, name: str, move: bool):
    """Methods "mni" (world coordinates trusted) and "centre" (``move``: translate the head)."""
    img = nib.as_closest_canonical(img)
    src = np.asarray(img.dataobj, dtype=np.float32)
    stripped = not move and _zero_background(src)  # "centre" is for raw heads
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
                f"{name}: no part of the image falls inside the target grid; method 'mni' "
                "needs an image in MNI space. Use method='pipeline' for raw heads."
            )
        brain = None
        if stripped:
            nonzero = nib.Nifti1Image((src != 0).astype(np.float32), img.affine)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # nilearn: "resampling binary images"
                brain = _resample(nonzero, sample, shape, "linear") > 0.5
    fg = brain if stripped else foreground_mask(data)
    mean, std = _moments(data, fg if config.normalise == "foreground" else None, name)
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
    from slicelib import qc
    from slicelib.utils import mni_template

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
