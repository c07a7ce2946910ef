"""NIfTI loading, preprocessing onto the model grid, the preprocessed-volume cache, the Dataset.

Everything a model sees goes through :func:`preprocess`, so a user's own scans, the public
datasets (:mod:`slicelib.datasets`) and the synthetic cohort are prepared the same way:

1. :func:`load_nifti` reads a 3D NIfTI (``.nii`` / ``.nii.gz``) with nibabel and checks it
   (readable, 3D, finite, not all zero); anything else raises :class:`DataError`.
2. Optionally ``PreprocessConfig(register=callable)`` maps the image into MNI space (e.g. a
   wrapper around ANTsPy ``ants.registration(type_of_transform="Affine")``); the registered
   image's own coordinates are then trusted (``centre="none"``).
3. The image is put in canonical RAS orientation (``nibabel.as_closest_canonical``).
4. If it already lies on the target grid (same shape, same affine) it passes through
   unchanged (fast path; e.g. the synthetic cohort written on :data:`MNI_2MM_AFFINE`).
5. Otherwise it is resampled onto the grid with ``nilearn.image.resample_img`` (cropped or
   zero-padded to the grid's field of view). ``centre="none"`` trusts the image's world (mm)
   coordinates: for images already in MNI space (OASIS VBM maps, fMRIPrep/FSL outputs).
   ``centre="brain"`` (default without ``register``) ignores a raw head's scanner coordinates
   and *translates* the head into place (:func:`head_anchor`; optionally shrunk to fit,
   ``scale_to_fit``), except when the header declares MNI152 space (sform or qform code 4, as
   written by FSL/fMRIPrep and :mod:`slicelib.synth`). This is NOT a registration: no rotation,
   no per-axis scaling, no warp; the brain is centred and inside the grid but not aligned
   voxel by voxel to the MNI template.
6. Intensities are z-scored: ``normalise="foreground"`` (default) with the mean and standard
   deviation of the head/brain foreground (Otsu threshold, largest connected component, holes
   filled); ``normalise="whole"`` over the whole array, as in the paper's code.

Preprocessed volumes are cached as float16 ``.npy`` files (memory-mappable), keyed by the
source file's content and the preprocessing parameters (:func:`load_preprocessed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from slicelib.utils import atomic_write

__all__ = [
    "MNI_2MM_SHAPE",
    "MNI_2MM_AFFINE",
    "CACHE_VERSION",
    "DataError",
    "PreprocessConfig",
    "target_affine",
    "load_nifti",
    "declares_mni",
    "foreground_mask",
    "head_anchor",
    "preprocess",
    "default_cache_dir",
    "file_hash",
    "cache_key",
    "load_preprocessed",
    "VolumeDataset",
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
#: Where a raw head is placed by ``centre="brain"`` (MNI mm): the top of the scalp (vertex)
#: goes to z = _HEAD_TOP_Z and the centre of mass of the cranium slab (20 to 80 mm below the
#: vertex, above the eyes) goes to x = 0, y = _CRANIUM_Y (the grid centre). The MNI152 brain
#: top is at z = +82 mm; z = +104 mm for the scalp top was chosen by eye on the ten ixi10 heads
#: (data/show_ixi10.py) so that their brains sit on the MNI152 brain outline.
_HEAD_TOP_Z = 104.0
_CRANIUM_Y = -18.0
_SLAB_MM = (20.0, 80.0)
#: Bump when the preprocessing code changes in a way that changes its output.
CACHE_VERSION = "2"  # 2: images declaring MNI space are not re-centred

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class DataError(ValueError):
    """Bad input data: the message names the file or table row, what is wrong and what to do."""


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class PreprocessConfig:
    """Preprocessing parameters (all of them enter the cache key).

    Attributes:
        volume_shape: target grid shape (X, Y, Z) in voxels; default the FSL MNI152 2 mm grid.
        voxel_size: isotropic target voxel size in mm. The grid is centred on the MNI 2 mm
            grid's centre (0, -18, 18) mm, so the default equals :data:`MNI_2MM_AFFINE`.
        normalise: "foreground" (z-score with the mean/std of the foreground mask) or
            "whole" (z-score over the whole array, as in the paper's code).
        centre: "brain" (translate raw heads into place, see :func:`head_anchor`) or
            "none" (trust the image's world coordinates; for already-registered images).
            Default: "brain", or "none" when ``register`` is given (a registered image must
            not be moved again); ``register`` with an explicit ``centre="brain"`` raises.
        scale_to_fit: with centre="brain", shrink the head isotropically if its left-right or
            anterior-posterior extent would not fit in the grid (never enlarges).
        interpolation: nilearn interpolation, "continuous" (3rd-order spline), "linear"
            or "nearest".
        register: optional callable ``nib.Nifti1Image -> nib.Nifti1Image`` applied after
            loading that maps the image into MNI space (e.g. ANTsPy/FSL affine registration).
            It is not serialised: ``register_name`` stands for it in :meth:`to_dict` and the
            cache key.
        register_name: names the registration step; defaults to the function's
            ``module.qualname``, and is required for a lambda, a ``functools.partial`` or any
            callable without a ``__name__`` (they would otherwise all share one cache key).
    """

    volume_shape: tuple[int, int, int] = MNI_2MM_SHAPE
    voxel_size: float = 2.0
    normalise: str = "foreground"
    centre: str | None = None
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
        if self.normalise not in ("foreground", "whole"):
            raise ValueError(
                f"PreprocessConfig.normalise must be 'foreground' or 'whole', got {self.normalise!r}"
            )
        if self.interpolation not in ("continuous", "linear", "nearest"):
            raise ValueError(
                "PreprocessConfig.interpolation must be 'continuous', 'linear' or 'nearest', "
                f"got {self.interpolation!r}"
            )
        if self.register is not None:
            self._check_register()
        if self.centre is None:
            self.centre = "none" if self.register_name else "brain"
        if self.centre not in ("brain", "none"):
            raise ValueError(
                f"PreprocessConfig.centre must be 'brain' or 'none', got {self.centre!r}"
            )

    def _check_register(self) -> None:
        if not callable(self.register):
            raise ValueError(f"PreprocessConfig.register must be callable, got {self.register!r}")
        if self.centre == "brain":
            raise ValueError(
                "PreprocessConfig(register=..., centre='brain'): re-centring would undo the "
                "registration. Leave centre unset (a registered image is not moved again) or "
                "pass centre='none'."
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
        """JSON-serialisable dict of the parameters (``register`` is represented by its name)."""
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "register"
        }
        return {**d, "volume_shape": list(self.volume_shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys raise; ``register`` is not restored).

        The key ``shape`` of configs saved before the rename is read as ``volume_shape``.
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


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike | nib.Nifti1Image) -> nib.Nifti1Image:
    """Load and validate a 3D NIfTI image.

    Args:
        path: ``.nii`` / ``.nii.gz`` file (or an already loaded nibabel image).

    Returns:
        ``nib.Nifti1Image`` with float32 data of shape (X, Y, Z) held in memory (a 4D image
        with a single volume is squeezed to 3D), its original affine (voxel -> mm) and header.

    Raises:
        DataError: missing/unreadable/corrupt/truncated file, not 3D (2D, or 4D with more than
            one volume), NaN or inf voxels, all-zero data, singular affine. The message names
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
        if p.is_dir() or not _is_nifti(p):
            raise DataError(
                f"{name}: not a NIfTI file; expected a .nii or .nii.gz file "
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
        what = (
            f"a 4D series with {data.shape[3]} volumes"
            if data.ndim == 4
            else f"a {data.ndim}D image"
        )
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
        raise DataError(
            f"{name}: {n_bad} voxels are NaN or inf; fix or replace them "
            "(e.g. numpy.nan_to_num) before use."
        )
    if not np.any(data):
        raise DataError(f"{name}: every voxel is zero; the image is empty. Check the export.")
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
# foreground and centring
# --------------------------------------------------------------------------------------------


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Head/brain foreground of a volume: Otsu threshold, largest connected component, holes filled.

    Args:
        data: float array (X, Y, Z), any intensity units.

    Returns:
        bool array (X, Y, Z). Works for full heads (mask = head) and skull-stripped brains
        (mask = brain); falls back to ``data > data.min()`` if the threshold selects nothing.
    """
    data = np.asarray(data, dtype=np.float32)
    lo = float(data.min())
    if not float(data.max()) > lo:
        return np.zeros(data.shape, dtype=bool)
    thr = _otsu_threshold(data.ravel())
    mask = data > thr
    if not mask.any():
        mask = data > lo
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def head_anchor(img: nib.Nifti1Image, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Locate a raw head in its own world coordinates (for ``centre="brain"``).

    Measured on the foreground mask of ``img`` (canonical RAS):
    ``vertex_z`` = top of the head (99.9th percentile of the mask's z, mm); ``centre`` = the
    centre of mass (x, y) of the cranium slab 20-80 mm below the vertex (above eyes/nose,
    unaffected by how much neck the field of view contains), with z = vertex_z;
    ``extent`` = the slab's left-right and anterior-posterior extents (mm).

    Args:
        img: canonical-RAS image, data (X, Y, Z).
        mask: optional precomputed foreground, bool (X, Y, Z).

    Returns:
        dict(source=(3,) mm point to map to ``target``, target=(3,) MNI mm point
        (0, -18, 104), extent_mm=(2,) LR and AP extent of the slab, mask=bool (X, Y, Z)).
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if mask is None:
        mask = foreground_mask(data)
    idx = np.argwhere(mask)
    world = nib.affines.apply_affine(img.affine, idx)  # (N, 3) mm
    vertex_z = float(np.percentile(world[:, 2], 99.9))
    in_slab = (world[:, 2] <= vertex_z - _SLAB_MM[0]) & (world[:, 2] >= vertex_z - _SLAB_MM[1])
    slab = world[in_slab] if in_slab.sum() > 10 else world
    cx, cy = slab[:, 0].mean(), slab[:, 1].mean()
    lo, hi = np.percentile(slab[:, :2], [0.5, 99.5], axis=0)
    return {
        "source": np.array([cx, cy, vertex_z]),
        "target": np.array([0.0, _CRANIUM_Y, _HEAD_TOP_Z]),
        "extent_mm": hi - lo,
        "mask": mask,
    }


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def _zscore(data: np.ndarray, mask: np.ndarray | None, name: str) -> np.ndarray:
    vals = data[mask] if mask is not None else data
    mean = float(vals.mean(dtype=np.float64))
    std = float(vals.std(dtype=np.float64))
    if not std > 1e-6 * max(1.0, abs(mean)):
        raise DataError(
            f"{name}: intensities are constant inside the grid (std {std:g}); "
            "nothing to normalise. Check that the image is a T1 scan and lies in the grid."
        )
    return ((data - mean) / std).astype(np.float32)


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
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Load, reorient, resample/centre and z-score one volume onto the model grid.

    Args:
        path_or_img: NIfTI path or nibabel image (any orientation, voxel size, 3D).
        config: :class:`PreprocessConfig` (default: MNI152 2 mm grid 91x109x91, centred head,
            foreground z-score).
        return_info: also return a dict describing what was done.

    Returns:
        ``(volume, affine)``: volume float32 (X, Y, Z) = ``config.volume_shape``, z-scored (unitless),
        RAS axes; affine (4, 4) voxel -> mm of the grid (``config.affine``).
        With ``return_info``, a third dict: ``fast_path`` (bool, image was already on the
        grid), ``declares_mni`` (bool, the header's sform/qform code is 4 = MNI152, so
        ``centre="brain"`` did not move it), ``source_shape``, ``source_axcodes`` (e.g.
        ('P', 'S', 'R')), ``shift_mm`` (3,) (translation applied, mm; zeros for
        centre="none"), ``scale`` (float),
        ``mask`` (bool (X, Y, Z) foreground on the grid), ``inside_fraction`` (fraction of the
        source foreground volume that lies inside the grid), ``border_fraction`` (fraction of
        the grid's border voxels that are foreground), ``border_fraction_by_face`` (dict with
        keys "left", "right", "posterior", "anterior", "inferior", "superior"),
        ``com_offset_mm`` (3,) (foreground centre of mass minus grid centre, mm).

    Raises:
        DataError: see :func:`load_nifti`, or constant intensity in the grid.
    """
    from nilearn.image import resample_img

    config = config or PreprocessConfig()
    if config.register_name and config.register is None:
        raise ValueError(
            f"PreprocessConfig names the registration step {config.register_name!r} but holds "
            "no register callable (a config read back from a dict); pass register=... again."
        )
    img = load_nifti(path_or_img)
    name = str(path_or_img) if isinstance(path_or_img, (str, os.PathLike)) else "<image>"
    source_axcodes = nib.aff2axcodes(img.affine)
    source_shape = tuple(img.shape)
    if config.register is not None:
        img = load_nifti(config.register(img))  # in MNI space: centre is "none"
    in_mni = declares_mni(img)
    img = nib.as_closest_canonical(img)
    tgt_aff = config.affine
    shape = config.volume_shape
    shift = np.zeros(3)
    scale = 1.0
    src_mask = None
    fast = tuple(img.shape) == tuple(shape) and np.allclose(img.affine, tgt_aff, atol=1e-4)
    if fast:
        data = np.asarray(img.dataobj, dtype=np.float32)
    else:
        sample_aff = tgt_aff
        if config.centre == "brain" and not in_mni:
            anchor = head_anchor(img)
            src_mask = anchor["mask"]
            if config.scale_to_fit:
                room = np.array([shape[0], shape[1]]) * config.voxel_size - 8.0  # 4 mm margins
                scale = float(max(1.0, np.max(anchor["extent_mm"] / room)))
            # target grid point p (MNI mm) samples source point src + scale * (p - tgt)
            move = np.eye(4)
            move[:3, :3] *= scale
            move[:3, 3] = anchor["source"] - scale * anchor["target"]
            sample_aff = move @ tgt_aff
            shift = anchor["target"] - anchor["source"]
        out = resample_img(
            img,
            target_affine=sample_aff,
            target_shape=shape,
            interpolation=config.interpolation,
            fill_value=0.0,
            force_resample=True,
            copy_header=True,
        )
        data = np.asarray(out.dataobj, dtype=np.float32)
        if config.interpolation == "continuous":
            # spline overshoot must not create values below the image's minimum
            np.clip(data, float(np.min(img.dataobj)), None, out=data)
        if not np.any(data):
            raise DataError(
                f"{name}: no part of the image falls inside the target grid; with "
                "centre='none' the image must already be in MNI space. Use centre='brain' "
                "for raw heads."
            )
    mask = foreground_mask(data) if (config.normalise == "foreground" or return_info) else None
    vol = _zscore(data, mask if config.normalise == "foreground" else None, name)
    if not return_info:
        return vol, tgt_aff
    if src_mask is None:
        src_mask = foreground_mask(np.asarray(img.dataobj, dtype=np.float32))
    src_vox = abs(np.linalg.det(img.affine[:3, :3]))
    tgt_vox = config.voxel_size**3 * scale**3
    inside = float(min(1.0, mask.sum() * tgt_vox / max(src_mask.sum() * src_vox, 1e-9)))
    info = {
        "fast_path": bool(fast),
        "declares_mni": bool(in_mni),
        "source_shape": source_shape,
        "source_axcodes": source_axcodes,
        "shift_mm": shift,
        "scale": scale,
        "mask": mask,
        "inside_fraction": inside,
        **_border_stats(mask, config.voxel_size),
    }
    return vol, tgt_aff, info


def _border_stats(mask: np.ndarray, voxel_size: float) -> dict[str, Any]:
    faces = {
        "left": mask[0],
        "right": mask[-1],
        "posterior": mask[:, 0],
        "anterior": mask[:, -1],
        "inferior": mask[:, :, 0],
        "superior": mask[:, :, -1],
    }
    by_face = {k: float(v.mean()) for k, v in faces.items()}
    total = sum(v.size for v in faces.values())
    border = sum(int(v.sum()) for v in faces.values()) / total
    idx = np.argwhere(mask)
    centre = (np.asarray(mask.shape) - 1) / 2
    com = (idx.mean(0) - centre) * voxel_size if len(idx) else np.full(3, np.nan)
    return {
        "border_fraction": float(border),
        "border_fraction_by_face": by_face,
        "com_offset_mm": com,
    }


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Cache folder: ``$SLICELIB_CACHE`` if set, else ``~/.cache/slicelib``."""
    env = os.environ.get("SLICELIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "slicelib"


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | os.PathLike) -> str:
    """Hex BLAKE2b digest (32 hex chars) of the file's bytes (memoised on path, size and mtime)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"{p}: file not found ({e}); check the path.") from e
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def cache_key(path: str | os.PathLike, config: PreprocessConfig) -> str:
    """Cache key (hex str): hash of the file content, ``config.to_dict()`` and :data:`CACHE_VERSION`."""
    blob = json.dumps(
        {"file": file_hash(path), "config": config.to_dict(), "version": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save(path) would append ".npy" to the name
        np.save(f, array)


def load_preprocessed(
    path: str | os.PathLike,
    config: PreprocessConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    mmap: bool = True,
) -> np.ndarray:
    """Preprocessed volume for a file, from the cache when possible.

    The cache file is ``<cache_dir>/<cache_key>.npy`` (float16, shape ``config.volume_shape``).
    It is written only after preprocessing succeeded, with :func:`slicelib.utils.atomic_write`,
    so a half-written file is never read; an unreadable cache file is recomputed. Changing the file's content or any config parameter changes the key.

    Args:
        path: NIfTI file.
        config: preprocessing parameters (default :class:`PreprocessConfig`).
        cache_dir: default :func:`default_cache_dir`.
        use_cache: False = always preprocess, never read or write the cache.
        mmap: return the cached array memory-mapped (read-only) instead of loading it.

    Returns:
        array (X, Y, Z), z-scored; float16 (cached; memory-mapped if ``mmap``) or float32
        (``use_cache=False``). Callers wanting float32 use ``np.asarray(a, np.float32)``.
    """
    config = config or PreprocessConfig()
    if not use_cache:
        return preprocess(path, config)[0]
    if not Path(path).is_file():
        load_nifti(path)  # raises the DataError naming the file
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cdir / f"{cache_key(path, config)}.npy"
    if target.is_file():
        try:
            arr = np.load(target, mmap_mode="r" if mmap else None)
            if arr.shape == config.volume_shape and arr.dtype == np.float16:
                return arr
        except Exception:  # corrupt cache file: recompute and overwrite
            pass
    vol, _ = preprocess(path, config)
    if not np.all(np.abs(vol) < 65000):
        raise DataError(f"{path}: preprocessed intensities exceed float16 range; check the image.")
    atomic_write(target, lambda tmp: _save_npy(tmp, vol.astype(np.float16)))
    return np.load(target, mmap_mode="r") if mmap else np.load(target)


class VolumeDataset(torch.utils.data.Dataset):
    """Torch Dataset of preprocessed volumes from a table (see :func:`slicelib.datasets.read_table`).

    Args:
        table: DataFrame with ``participant_id``, ``path`` and (unless ``target`` is None)
            the numeric target column.
        target: target column (years or 0/1), or None (items then carry NaN targets).
        preprocess: :class:`PreprocessConfig` or its dict (default: MNI 2 mm grid).
        cache_dir: cache folder (default :func:`default_cache_dir`).
        use_cache: False = preprocess every time, no files written.

    Items: ``(volume, target)``, volume ``torch.float32`` (1, X, Y, Z) z-scored, target
    ``torch.float32`` scalar. ``dataset.ids`` / ``dataset.targets`` give subject ids / targets.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        target: str | None,
        preprocess: PreprocessConfig | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
    ) -> None:
        if isinstance(preprocess, dict):
            preprocess = PreprocessConfig.from_dict(preprocess)
        self.config = preprocess or PreprocessConfig()
        missing = [c for c in ("participant_id", "path") if c not in table.columns]
        if target is not None and target not in table.columns:
            missing.append(target)
        if missing:
            raise DataError(
                f"VolumeDataset: table lacks columns {missing}; build it with read_table()."
            )
        self.table = table.reset_index(drop=True)
        self.target = target
        self.ids = self.table["participant_id"].astype(str).tolist()
        self.paths = self.table["path"].astype(str).tolist()
        y = np.full(len(self.ids), np.nan, dtype=np.float32)
        if target is not None:
            y = pd.to_numeric(self.table[target], errors="coerce").to_numpy(dtype=np.float32)
            if np.isnan(y).any():
                i = int(np.flatnonzero(np.isnan(y))[0])
                raise DataError(
                    f"VolumeDataset: target {target!r} is missing/non-numeric for "
                    f"{self.ids[i]!r}; use read_table() to validate the table."
                )
        self.targets = y
        self.cache_dir = cache_dir
        self.use_cache = use_cache

    def __len__(self) -> int:
        return len(self.paths)

    def volume(self, i: int) -> np.ndarray:
        """Preprocessed volume of item ``i``: array (X, Y, Z), float16 (cached) or float32."""
        return load_preprocessed(
            self.paths[i], self.config, self.cache_dir, use_cache=self.use_cache
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.volume(i), dtype=np.float32))[None]  # (1, X, Y, Z)
        return x, torch.tensor(self.targets[i], dtype=torch.float32)
