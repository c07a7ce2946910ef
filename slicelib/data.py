"""Loading, preprocessing, tables, datasets, cache and splits for 3D brain MRI.

Everything a model sees goes through :func:`preprocess`, so a user's own scans, the public
datasets and the synthetic cohort are prepared the same way:

1. :func:`load_nifti` reads a 3D NIfTI (``.nii`` / ``.nii.gz``) with nibabel and checks it
   (readable, 3D, finite, not all zero); anything else raises :class:`DataError`.
2. The image is put in canonical RAS orientation (``nibabel.as_closest_canonical``).
3. If it already lies on the target grid (same shape, same affine) it passes through
   unchanged (fast path; e.g. the synthetic cohort written on :data:`MNI_2MM_AFFINE`).
4. Otherwise it is resampled onto the target grid with ``nilearn.image.resample_img``.
   This crops or zero-pads it to the grid's field of view. With ``centre="none"`` the
   image's own world (mm) coordinates are trusted: use this for images already registered
   to MNI space (OASIS VBM maps, fMRIPrep/FSL outputs). With ``centre="brain"`` (default)
   the scanner coordinates of a raw head are ignored and the head is *translated* (see
   :func:`head_anchor`) -- except when the NIfTI header declares MNI152 space (sform or
   qform code 4, as written by FSL/fMRIPrep and by :mod:`slicelib.synth`): such an image is
   already in place, and its own coordinates are used as with ``centre="none"`` -- so that it sits where a head sits in MNI space, optionally also
   shrunk to fit (``scale_to_fit``). This is NOT a registration: there is no rotation,
   no per-axis scaling and no non-linear warp, so the brain is centred and inside the grid
   but not aligned voxel-by-voxel to the MNI template. For a real (affine) registration,
   register the scans to the MNI152 template first with a dedicated tool (ANTsPy
   ``ants.registration(type_of_transform="Affine")``, FSL FLIRT, or SPM) and then use
   ``centre="none"``; ``PreprocessConfig(register=callable)`` lets you plug such a step in.
5. Intensities are z-scored: ``normalise="foreground"`` (default) uses the mean and
   standard deviation of the head/brain foreground (Otsu threshold, largest connected
   component, holes filled) and applies them to the whole volume; ``normalise="whole"``
   uses the whole array, as in the paper's code.

Preprocessed volumes can be cached as float16 ``.npy`` files (memory-mappable), keyed by
the source file's content and the preprocessing parameters (:func:`load_preprocessed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
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

__all__ = [
    "MNI_2MM_SHAPE",
    "MNI_2MM_AFFINE",
    "CACHE_VERSION",
    "declares_mni",
    "DataError",
    "PreprocessConfig",
    "AugmentConfig",
    "target_affine",
    "load_nifti",
    "foreground_mask",
    "head_anchor",
    "preprocess",
    "foreground_fraction_inside",
    "default_cache_dir",
    "file_hash",
    "cache_key",
    "load_preprocessed",
    "read_table",
    "ixi_table",
    "fetch_oasis",
    "split_subjects",
    "augment_volume",
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
        shape: target grid shape (X, Y, Z) in voxels; default the FSL MNI152 2 mm grid.
        voxel_size: isotropic target voxel size in mm. The grid is centred on the MNI 2 mm
            grid's centre (0, -18, 18) mm, so the default equals :data:`MNI_2MM_AFFINE`.
        normalise: "foreground" (z-score with the mean/std of the foreground mask) or
            "whole" (z-score over the whole array, as in the paper's code).
        centre: "brain" (translate raw heads into place, see :func:`head_anchor`) or
            "none" (trust the image's world coordinates; for already-registered images).
        scale_to_fit: with centre="brain", shrink the head isotropically if its left-right or
            anterior-posterior extent would not fit in the grid (never enlarges).
        interpolation: nilearn interpolation, "continuous" (3rd-order spline), "linear"
            or "nearest".
        register: optional callable ``nib.Nifti1Image -> nib.Nifti1Image`` applied after
            loading (e.g. a wrapper around ANTsPy/FSL affine registration to MNI space);
            not serialised, so give it a distinct ``register_name`` for the cache key.
        register_name: identifies ``register`` in :meth:`to_dict` and the cache key.
    """

    shape: tuple[int, int, int] = MNI_2MM_SHAPE
    voxel_size: float = 2.0
    normalise: str = "foreground"
    centre: str = "brain"
    scale_to_fit: bool = False
    interpolation: str = "continuous"
    register: Callable[[nib.Nifti1Image], nib.Nifti1Image] | None = field(
        default=None, compare=False, repr=False
    )
    register_name: str | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"PreprocessConfig.shape must be 3 positive ints, got {self.shape}")
        self.voxel_size = float(self.voxel_size)
        if not self.voxel_size > 0:
            raise ValueError(f"PreprocessConfig.voxel_size must be > 0 mm, got {self.voxel_size}")
        if self.normalise not in ("foreground", "whole"):
            raise ValueError(
                f"PreprocessConfig.normalise must be 'foreground' or 'whole', got {self.normalise!r}"
            )
        if self.centre not in ("brain", "none"):
            raise ValueError(
                f"PreprocessConfig.centre must be 'brain' or 'none', got {self.centre!r}"
            )
        if self.interpolation not in ("continuous", "linear", "nearest"):
            raise ValueError(
                "PreprocessConfig.interpolation must be 'continuous', 'linear' or 'nearest', "
                f"got {self.interpolation!r}"
            )
        if self.register is not None and not self.register_name:
            self.register_name = getattr(self.register, "__name__", "custom")

    @property
    def affine(self) -> np.ndarray:
        """Target grid affine, shape (4, 4), voxel index -> RAS mm."""
        return target_affine(self.shape, self.voxel_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the parameters (``register`` is represented by its name)."""
        return {
            "shape": list(self.shape),
            "voxel_size": self.voxel_size,
            "normalise": self.normalise,
            "centre": self.centre,
            "scale_to_fit": self.scale_to_fit,
            "interpolation": self.interpolation,
            "register_name": self.register_name,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys raise; ``register`` is not restored)."""
        d = dict(d or {})
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
        ``(volume, affine)``: volume float32 (X, Y, Z) = ``config.shape``, z-scored (unitless),
        RAS axes; affine (4, 4) voxel -> mm of the grid (``config.affine``).
        With ``return_info``, a third dict: ``fast_path`` (bool, image was already on the
        grid), ``declares_mni`` (bool, the header's sform/qform code is 4 = MNI152, so
        ``centre="brain"`` did not move it), ``source_shape``, ``source_axcodes`` (e.g. ('P','S','R')), ``shift_mm`` (3,)
        (translation applied, mm; zeros for centre="none"), ``scale`` (float),
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
    img = load_nifti(path_or_img)
    name = img.get_filename() or (
        str(path_or_img)
        if not isinstance(path_or_img, nib.spatialimages.SpatialImage)
        else "<image>"
    )
    if isinstance(path_or_img, (str, os.PathLike)):
        name = str(path_or_img)
    source_axcodes = nib.aff2axcodes(img.affine)
    source_shape = tuple(img.shape)
    if config.register is not None:
        img = load_nifti(config.register(img))
    in_mni = declares_mni(img)
    img = nib.as_closest_canonical(img)
    tgt_aff = config.affine
    shape = config.shape
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


def foreground_fraction_inside(
    path_or_img: str | os.PathLike | nib.Nifti1Image, config: PreprocessConfig | None = None
) -> float:
    """Fraction (0-1) of the source image's foreground volume (mm^3) that lands inside the grid.

    A raw head with neck in the field of view loses the neck below the grid (typically 0.7-0.9);
    a brain image already in MNI space gives about 1.
    """
    return float(preprocess(path_or_img, config, return_info=True)[2]["inside_fraction"])


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


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_preprocessed(
    path: str | os.PathLike,
    config: PreprocessConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    mmap: bool = True,
) -> np.ndarray:
    """Preprocessed volume for a file, from the cache when possible.

    The cache file is ``<cache_dir>/<cache_key>.npy`` (float16, shape ``config.shape``). It
    is written only after preprocessing succeeded, through a temporary file in the same folder
    and ``os.replace``, so a half-written file is never read; an unreadable cache file is
    recomputed. Changing the file's content or any config parameter changes the key.

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
            if arr.shape == tuple(config.shape) and arr.dtype == np.float16:
                return arr
        except Exception:  # corrupt cache file: recompute and overwrite
            pass
    vol, _ = preprocess(path, config)
    if not np.all(np.abs(vol) < 65000):
        raise DataError(f"{path}: preprocessed intensities exceed float16 range; check the image.")
    _atomic_save_npy(target, vol.astype(np.float16))
    return np.load(target, mmap_mode="r") if mmap else np.load(target)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

_PATH_COLUMNS = ("path", "file", "filename", "image", "t1w", "t1", "nifti")


def _find_bids_t1w(root: Path, pid: str) -> list[Path]:
    sub = pid if pid.startswith("sub-") else f"sub-{pid}"
    hits = sorted(root.glob(f"{sub}/anat/*_T1w.nii*")) + sorted(
        root.glob(f"{sub}/ses-*/anat/*_T1w.nii*")
    )
    return [h for h in hits if _is_nifti(h)]


def read_table(
    table_or_bids_dir: str | os.PathLike | pd.DataFrame,
    target: str | None,
    path_column: str | None = None,
    id_column: str = "participant_id",
    check_files: bool = True,
) -> pd.DataFrame:
    """Read and validate a participants table.

    Args:
        table_or_bids_dir: a BIDS folder (``participants.tsv`` + ``sub-*/anat/*_T1w.nii[.gz]``,
            first session's T1w if there are several), a ``.tsv``/``.csv`` file with a path
            column (paths relative to the table's folder), or a DataFrame (paths relative to
            the current folder).
        target: column to predict (numeric: years, or 0/1 labels), or None.
        path_column: column holding image paths; default the first of "path", "file",
            "filename", "image", "t1w", "t1", "nifti" present.
        id_column: subject id column (renamed to ``participant_id``).
        check_files: raise if an image file is missing.

    Returns:
        DataFrame with ``participant_id`` (str), ``path`` (absolute str), the ``target`` column
        (float) and the table's other columns; one row per subject, table order.

    Raises:
        DataError naming the table and row: missing target/id/path column, missing or
        non-numeric target, duplicated subject id, missing image file, no T1w in a BIDS folder.
    """
    if isinstance(table_or_bids_dir, pd.DataFrame):
        df, base, tname = table_or_bids_dir.copy(), Path.cwd(), "<DataFrame>"
        bids = False
    else:
        src = Path(table_or_bids_dir)
        bids = src.is_dir()
        tfile = src / "participants.tsv" if bids else src
        tname = str(tfile)
        if not tfile.is_file():
            raise DataError(
                f"{tname}: table not found. Give a participants.tsv/.csv file or a BIDS "
                "folder containing participants.tsv."
            )
        sep = "," if tfile.suffix.lower() == ".csv" else "\t"
        try:
            df = pd.read_csv(tfile, sep=sep, dtype={id_column: str})
        except Exception as e:
            raise DataError(
                f"{tname}: cannot be parsed as a {'CSV' if sep == ',' else 'TSV'} table ({e})."
            ) from e
        base = tfile.parent
    if id_column not in df.columns:
        raise DataError(
            f"{tname}: no subject id column {id_column!r}; columns are {list(df.columns)}. "
            "Pass id_column=... ."
        )
    df = df.rename(columns={id_column: "participant_id"})
    df["participant_id"] = df["participant_id"].astype(str).str.strip()
    bad_id = df["participant_id"].isin(["", "nan", "None"])
    if bad_id.any():
        row = int(np.flatnonzero(bad_id)[0])
        raise DataError(f"{tname}: row {row + 2} (line) has an empty {id_column!r}; fill it in.")
    dup = df["participant_id"].duplicated(keep=False)
    if dup.any():
        ids = sorted(set(df.loc[dup, "participant_id"]))
        rows = [int(i) + 2 for i in np.flatnonzero(dup)]
        raise DataError(
            f"{tname}: duplicated subject ids {ids[:5]} (lines {rows[:10]}); each subject "
            "must appear once. Remove repeats or keep one scan per subject."
        )
    if target is not None:
        if target not in df.columns:
            raise DataError(
                f"{tname}: no target column {target!r}; columns are "
                f"{[c for c in df.columns]}. Pass an existing column as target."
            )
        numeric = pd.to_numeric(df[target], errors="coerce")
        missing = df[target].isna() | df[target].astype(str).str.strip().isin(
            ["", "n/a", "NA", "nan"]
        )
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{tname}: target {target!r} is missing for {int(missing.sum())} subject(s), "
                f"first {df['participant_id'].iloc[i]!r} (line {i + 2}). Drop these rows or "
                "fill in the values."
            )
        nonnum = numeric.isna()
        if nonnum.any():
            i = int(np.flatnonzero(nonnum)[0])
            raise DataError(
                f"{tname}: target {target!r} is not numeric for subject "
                f"{df['participant_id'].iloc[i]!r} (line {i + 2}): {df[target].iloc[i]!r}. "
                "Use numbers (years, or 0/1 for classes; e.g. map 'CN'->0, 'AD'->1)."
            )
        if not np.all(np.isfinite(numeric.to_numpy(dtype=float))):
            raise DataError(f"{tname}: target {target!r} contains inf values; fix them.")
        df[target] = numeric.astype(float)
    if bids and path_column is None:
        paths = []
        for i, pid in enumerate(df["participant_id"]):
            hits = _find_bids_t1w(base, pid)
            if not hits:
                raise DataError(
                    f"{tname}: subject {pid!r} (line {i + 2}) has no "
                    f"{pid}/anat/*_T1w.nii[.gz] under {base}; add it or drop the row."
                )
            paths.append(str(hits[0].resolve()))
        df["path"] = paths
    else:
        if path_column is None:
            found = [c for c in df.columns if c.lower() in _PATH_COLUMNS]
            if not found:
                raise DataError(
                    f"{tname}: no image path column (looked for {list(_PATH_COLUMNS)}); "
                    f"columns are {list(df.columns)}. Pass path_column=... ."
                )
            path_column = found[0]
        if path_column not in df.columns:
            raise DataError(
                f"{tname}: no path column {path_column!r}; columns are {list(df.columns)}."
            )
        paths = []
        for i, (pid, p) in enumerate(zip(df["participant_id"], df[path_column])):
            if not isinstance(p, str) or not p.strip():
                raise DataError(
                    f"{tname}: subject {pid!r} (line {i + 2}) has an empty path; fill it in."
                )
            q = Path(p.strip()).expanduser()
            q = q if q.is_absolute() else base / q
            paths.append(str(q.resolve()))
        if path_column != "path":
            df = df.drop(columns=["path"], errors="ignore")
        df = df.drop(columns=[path_column]).assign(path=paths)
    if check_files:
        for i, (pid, p) in enumerate(zip(df["participant_id"], df["path"])):
            if not Path(p).is_file():
                raise DataError(
                    f"{tname}: image for subject {pid!r} (line {i + 2}) not found: {p}. "
                    "Fix the path (relative paths are relative to the table) or drop the row."
                )
    cols = ["participant_id", "path"] + ([target] if target is not None else [])
    return df[cols + [c for c in df.columns if c not in cols]].reset_index(drop=True)


def ixi_table(
    folder: str | os.PathLike | None = None, demographics: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Table of an IXI-style folder, target ``age`` (years).

    Args:
        folder: folder with IXI T1 files; default ``$SLICELIB_IXI10``. If it holds a
            ``participants.tsv`` (participant_id, age, sex, path), that is used (as in
            ``shared/data/ixi10``). Otherwise the ``IXI<nnn>-*-T1*.nii[.gz]`` files are listed
            and ages are read from ``demographics``: the IXI spreadsheet saved as CSV/TSV
            (columns ``IXI_ID`` and ``AGE``; the original IXI.xls must be converted first).

    Returns:
        :func:`read_table` output: participant_id, path, age (float years), other columns.
    """
    if folder is None:
        folder = os.environ.get("SLICELIB_IXI10")
        if not folder:
            raise DataError("ixi_table: no folder given and $SLICELIB_IXI10 is not set.")
    folder = Path(folder)
    if (folder / "participants.tsv").is_file():
        return read_table(folder / "participants.tsv", "age")
    files = sorted(f for f in folder.glob("IXI*-T1*.nii*") if _is_nifti(f))
    if not files:
        raise DataError(f"{folder}: neither participants.tsv nor IXI*-T1*.nii[.gz] files found.")
    if demographics is None:
        raise DataError(
            f"{folder}: no participants.tsv; pass demographics=<IXI.csv with IXI_ID and "
            "AGE columns> (save the IXI spreadsheet as CSV)."
        )
    demo_path = Path(demographics)
    sep = "," if demo_path.suffix.lower() == ".csv" else "\t"
    demo = pd.read_csv(demo_path, sep=sep)
    demo.columns = [str(c).strip().upper() for c in demo.columns]
    if "IXI_ID" not in demo.columns or "AGE" not in demo.columns:
        raise DataError(f"{demo_path}: needs columns IXI_ID and AGE; has {list(demo.columns)}.")
    demo = demo.dropna(subset=["AGE"]).drop_duplicates("IXI_ID")
    ages = dict(zip(demo["IXI_ID"].astype(int), demo["AGE"].astype(float)))
    rows = []
    for f in files:
        m = re.match(r"IXI(\d{3})", f.name)
        if m and int(m.group(1)) in ages:
            pid = f.name.split("-T1")[0]
            rows.append(
                {"participant_id": pid, "path": str(f.resolve()), "age": ages[int(m.group(1))]}
            )
    if not rows:
        raise DataError(f"{folder}: none of the {len(files)} IXI files has an age in {demo_path}.")
    return read_table(pd.DataFrame(rows), "age")


def fetch_oasis(
    data_dir: str | os.PathLike | None = None,
    n_subjects: int | None = None,
    dartel_version: bool = True,
) -> pd.DataFrame:
    """OASIS-1 VBM grey-matter maps with age and dementia labels, via ``nilearn.datasets.fetch_oasis_vbm``.

    The images are modulated grey-matter density maps already normalised to MNI space (not
    raw T1), so preprocess them with ``PreprocessConfig(centre="none")`` (also stored in
    ``table.attrs["preprocess"]``). Downloads ~800 MB on first use (OASIS data usage
    agreement applies).

    Args:
        data_dir: nilearn data folder (the files go to ``<data_dir>/oasis1``); default
            nilearn's (``$NILEARN_DATA`` or ``~/nilearn_data``).
        n_subjects: first n subjects (None = all 403 DARTEL / 415 SPM subjects).
        dartel_version: DARTEL-normalised maps (nilearn default) or standard SPM8.

    Returns:
        DataFrame: participant_id (e.g. "OAS1_0001_MR1"), path (grey-matter map), age (years),
        sex ("F"/"M"), mmse (float, NaN if not assessed), cdr (float, NaN if not assessed),
        dementia (int 0/1: 1 if CDR > 0; subjects without a CDR, mostly under 60, are 0),
        plus the other ext_vars columns (educ, ses, etiv, nwbv, asf, ...).

    Raises:
        DataError: the download failed (e.g. offline). The message says where to put the files.
    """
    from nilearn.datasets import fetch_oasis_vbm

    try:
        bunch = fetch_oasis_vbm(
            n_subjects=n_subjects, dartel_version=dartel_version, data_dir=data_dir, verbose=0
        )
    except Exception as e:
        where = Path(data_dir) / "oasis1" if data_dir is not None else "<nilearn data dir>/oasis1"
        raise DataError(
            f"OASIS-1 could not be fetched ({type(e).__name__}: {e}). Without internet, copy an "
            f"existing download to {where} (folders OAS1_xxxx_MR1/ with the mwrc1*.nii.gz maps, "
            "plus oasis_cross-sectional.csv and data_usage_agreement.txt) and call "
            "fetch_oasis(data_dir=<that parent folder>), or set $NILEARN_DATA to it."
        ) from e
    ext = bunch.ext_vars.copy()
    ids = [
        "OAS1" + Path(p).name.split("OAS1", 1)[1][:9] for p in bunch.gray_matter_maps
    ]  # "OAS1_0001_MR1"
    path_of = dict(zip(ids, bunch.gray_matter_maps))
    ext = ext[ext["id"].isin(path_of)].copy()
    ext["path"] = [str(Path(path_of[i]).resolve()) for i in ext["id"]]
    ext = ext.rename(columns={"id": "participant_id", "mf": "sex"})
    ext["cdr"] = pd.to_numeric(ext["cdr"], errors="coerce")
    ext["mmse"] = pd.to_numeric(ext["mmse"], errors="coerce")
    ext["dementia"] = (ext["cdr"] > 0).astype(int)
    cols = ["participant_id", "path", "age", "sex", "mmse", "cdr", "dementia"]
    table = read_table(
        ext[cols + [c for c in ext.columns if c not in cols]], "age", path_column="path"
    )
    table.attrs["preprocess"] = PreprocessConfig(centre="none").to_dict()
    return table


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def split_subjects(
    table: pd.DataFrame,
    target: str | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: bool = True,
    n_bins: int = 5,
) -> dict[str, list[str]]:
    """Seeded subject-level train/val/test split, stratified by class or by target quantile bins.

    Strata: the target's values if it has at most 10 distinct values (class labels), else
    ``n_bins`` quantile bins (e.g. age bins). Subjects are shuffled (seeded) within strata,
    strata are concatenated, and each subject in turn goes to the split furthest below its
    quota, so every stratum is divided in (close to) the given fractions.

    Args:
        table: DataFrame with ``participant_id`` (unique) and the target column.
        target: column to stratify by (None or ``stratify=False``: plain seeded shuffle).
        fractions: (train, val, test) fractions summing to 1 (a 2-tuple gives train/test).
        seed: RNG seed; the same table and seed give the same split.
        n_bins: quantile bins for a continuous target.

    Returns:
        dict ``train``/``val``/``test`` -> list of participant ids (disjoint, covering the table).
    """
    fr = [float(f) for f in fractions]
    if len(fr) == 2:
        fr = [fr[0], 0.0, fr[1]]
    if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}"
        )
    if "participant_id" not in table.columns:
        raise DataError("split_subjects: the table has no participant_id column; use read_table().")
    ids = table["participant_id"].astype(str).to_numpy()
    if len(set(ids)) != len(ids):
        dups = sorted({i for i in ids if (ids == i).sum() > 1})
        raise DataError(
            f"split_subjects: duplicated subject ids {dups[:5]}; split needs one row per subject."
        )
    rng = np.random.default_rng(seed)
    n = len(ids)
    strata = np.zeros(n, dtype=int)
    if stratify and target is not None:
        if target not in table.columns:
            raise DataError(
                f"split_subjects: no target column {target!r}; columns {list(table.columns)}."
            )
        y = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
        if np.isnan(y).any():
            raise DataError(f"split_subjects: target {target!r} has missing/non-numeric values.")
        uniq = np.unique(y)
        if len(uniq) <= 10:
            strata = np.searchsorted(uniq, y)
        else:
            edges = np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1])
            strata = np.searchsorted(edges, y, side="right")
    order = np.lexsort((rng.permutation(n), strata))
    names = ("train", "val", "test")
    counts = np.zeros(3)
    out: dict[str, list[str]] = {k: [] for k in names}
    fr_arr = np.asarray(fr)
    for k, i in enumerate(order):
        deficit = fr_arr * (k + 1) - counts
        deficit[fr_arr == 0] = -np.inf
        j = int(np.argmax(deficit))
        counts[j] += 1
        out[names[j]].append(str(ids[i]))
    return out


# --------------------------------------------------------------------------------------------
# augmentation and dataset
# --------------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Light training augmentation (each draw uniform in +-range).

    Attributes:
        rotate_deg: max rotation about each axis, degrees.
        translate_mm: max translation along each axis, mm (converted with the voxel size).
        scale: max relative isotropic scaling (0.05 = +-5 %).
        intensity_scale: max relative intensity scaling.
        intensity_shift: max intensity shift, in z-score units.
        gamma: max |log gamma| of a gamma change applied on the min-max rescaled volume.
    """

    rotate_deg: float = 5.0
    translate_mm: float = 4.0
    scale: float = 0.05
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    gamma: float = 0.1


def augment_volume(
    volume: torch.Tensor,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
    voxel_size: float = 2.0,
) -> torch.Tensor:
    """Random small affine (``affine_grid``/``grid_sample``, trilinear) plus intensity changes.

    Args:
        volume: float tensor (1, X, Y, Z) (or (X, Y, Z)), z-scored.
        rng: numpy Generator (seeded by the caller for reproducibility).
        config: ranges (default :class:`AugmentConfig`).
        voxel_size: mm per voxel, to convert ``translate_mm``.

    Returns:
        float32 tensor with the same shape. Rotations/scaling act about the volume centre in
        physical (isotropic voxel) space; outside values are filled from the border.
    """
    cfg = config or AugmentConfig()
    x = volume.float()
    squeeze = x.dim() == 3
    if squeeze:
        x = x[None]
    spatial = x.shape[1:]
    a, b, c = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    m = rx @ ry @ rz * (1.0 + rng.uniform(-cfg.scale, cfg.scale))  # voxel space, out -> in
    t = rng.uniform(-cfg.translate_mm, cfg.translate_mm, 3) / voxel_size  # voxels
    d = 2.0 / np.maximum(np.asarray(spatial, dtype=float) - 1, 1)  # normalised units per voxel
    a_norm = np.diag(d) @ m @ np.diag(1 / d)
    b_norm = d * t
    perm = [2, 1, 0]  # grid_sample's last grid dim is ordered (W, H, D) = (Z, Y, X)
    theta = np.zeros((3, 4))
    theta[:, :3] = a_norm[np.ix_(perm, perm)]
    theta[:, 3] = b_norm[perm]
    theta_t = torch.as_tensor(theta, dtype=torch.float32)[None]
    grid = torch.nn.functional.affine_grid(theta_t, [1, 1, *spatial], align_corners=True)
    y = torch.nn.functional.grid_sample(
        x[None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0]
    lo, hi = float(y.min()), float(y.max())
    if hi > lo:
        g = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        y = ((y - lo) / (hi - lo)).clamp_(0, 1).pow_(g) * (hi - lo) + lo
    y = y * float(1 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale))
    y = y + float(rng.uniform(-cfg.intensity_shift, cfg.intensity_shift))
    return (y[0] if squeeze else y).contiguous()


class VolumeDataset(torch.utils.data.Dataset):
    """Torch Dataset of preprocessed volumes from a table (see :func:`read_table`).

    Args:
        table: DataFrame with ``participant_id``, ``path`` and (unless ``target`` is None)
            the numeric target column.
        target: target column (years or 0/1), or None (items then carry NaN targets).
        preprocess: :class:`PreprocessConfig` or its dict (default: MNI 2 mm grid).
        cache_dir: cache folder (default :func:`default_cache_dir`).
        augment: False (default), True (:class:`AugmentConfig` defaults) or an AugmentConfig.
        seed: augmentation seed; item i in epoch e always gets the same draw
            (``np.random.default_rng([seed, e, i])``; call :meth:`set_epoch` each epoch).
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
        augment: bool | AugmentConfig = False,
        seed: int = 0,
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
        if target is not None:
            y = pd.to_numeric(self.table[target], errors="coerce").to_numpy(dtype=np.float32)
            if np.isnan(y).any():
                i = int(np.flatnonzero(np.isnan(y))[0])
                raise DataError(
                    f"VolumeDataset: target {target!r} is missing/non-numeric for "
                    f"{self.ids[i]!r}; use read_table() to validate the table."
                )
        else:
            y = np.full(len(self.ids), np.nan, dtype=np.float32)
        self.targets = y
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def volume(self, i: int) -> np.ndarray:
        """Preprocessed (not augmented) volume of item ``i``: array (X, Y, Z), float16 or float32."""
        return load_preprocessed(
            self.paths[i], self.config, self.cache_dir, use_cache=self.use_cache
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.volume(i), dtype=np.float32))[None]  # (1, X, Y, Z)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            x = augment_volume(x, rng, self.augment, self.config.voxel_size)
        return x, torch.tensor(self.targets[i], dtype=torch.float32)
