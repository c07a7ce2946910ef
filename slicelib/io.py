"""The one loader of scans and the one definition of the model grid.

:func:`load_nifti` reads a NIfTI / FreeSurfer file (or takes a nibabel image), validates it
and returns it in the closest canonical (RAS) orientation. Reorienting rewrites the header's
sform/qform codes (nibabel's ``as_closest_canonical`` turns an FSL-style LAS MNI file's
sform code 4 into 2), so whether the ORIGINAL header declares MNI space is read before and
kept: in ``img.extra["declares_mni"]`` and in the canonical header's codes, so that
:func:`declares_mni` says the same for the file and for the loaded image.

:func:`grid` is the model grid (shape and affine for a voxel size); the constants
:data:`MNI_2MM_SHAPE`, :data:`MNI_2MM_AFFINE`, :data:`GRID_CENTRE_MM`, :data:`GRID_SHAPES`
exist only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from slicelib.errors import DataError

__all__ = [
    "MNI_2MM_SHAPE",
    "MNI_2MM_AFFINE",
    "GRID_CENTRE_MM",
    "GRID_SHAPES",
    "SUFFIXES",
    "grid",
    "target_affine",
    "is_image",
    "load_nifti",
    "declares_mni",
]

#: World point (mm) at the centre of the FSL MNI152 2 mm grid; every grid is centred here.
GRID_CENTRE_MM = np.array([0.0, -18.0, 18.0])
GRID_CENTRE_MM.setflags(write=False)
#: Grid shapes of :func:`grid` without ``shape`` (2 mm: the FSL MNI152 grid; 4 mm: half of it).
GRID_SHAPES: dict[float, tuple[int, int, int]] = {2.0: (91, 109, 91), 4.0: (45, 54, 45)}
#: Shape of the FSL MNI152 2 mm grid, array axes (X, Y, Z) = (left->right, post->ant, inf->sup).
MNI_2MM_SHAPE: tuple[int, int, int] = GRID_SHAPES[2.0]
#: File name endings :func:`load_nifti` reads.
SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")


def grid(
    voxel_size: float = 2.0, shape: Sequence[int] | None = None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The model grid ``(volume_shape, affine)``: RAS, isotropic, centred on (0, -18, 18) mm.

    Args:
        voxel_size: isotropic voxel size, mm.
        shape: grid shape (X, Y, Z) in voxels; default :data:`GRID_SHAPES` (2 or 4 mm only).
    Returns:
        ``(shape, affine)``: shape a tuple of 3 ints, affine (4, 4) voxel index -> RAS mm.
        ``grid(2.0)`` is the FSL MNI152 2 mm grid (91, 109, 91) with origin (-90, -126, -72)
        mm; ``grid(4.0)`` is (45, 54, 45) voxels of 4 mm with origin (-88, -124, -70) mm
        (covers the MNI152 brain, x -88..88, y -124..88, z -70..106 mm).
    """
    voxel_size = float(voxel_size)
    if shape is None:
        if voxel_size not in GRID_SHAPES:
            raise ValueError(f"grid({voxel_size}): give shape= for voxel sizes other than 2 or 4")
        shape = GRID_SHAPES[voxel_size]
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or not voxel_size > 0:
        raise ValueError(
            f"grid: need 3 positive sizes and a voxel size > 0, got {shape}, {voxel_size}"
        )
    aff = np.eye(4)
    aff[:3, :3] *= voxel_size
    aff[:3, 3] = GRID_CENTRE_MM - voxel_size * (np.asarray(shape, dtype=float) - 1) / 2
    return shape, aff  # type: ignore[return-value]


def target_affine(shape: Sequence[int] = MNI_2MM_SHAPE, voxel_size: float = 2.0) -> np.ndarray:
    """The affine (4, 4) of :func:`grid` for ``shape`` voxels of ``voxel_size`` mm."""
    return grid(voxel_size, shape)[1]


#: Canonical-RAS affine (voxel index -> mm) of the FSL MNI152 2 mm grid (FSL stores it as LAS
#: with -2 on x; this has the same voxel centres, mirrored in the x index).
MNI_2MM_AFFINE: np.ndarray = grid(2.0)[1]
MNI_2MM_AFFINE.setflags(write=False)


def declares_mni(img: nib.spatialimages.SpatialImage) -> bool:
    """True if the image's ORIGINAL NIfTI header says MNI152 space (sform or qform code 4).

    For an image from :func:`load_nifti` this is what the file's header said before the
    reorientation (``img.extra["declares_mni"]``); for any other image, its header's codes.
    """
    extra = getattr(img, "extra", None) or {}
    if "declares_mni" in extra:
        return bool(extra["declares_mni"])
    header = getattr(img, "header", None)
    if not isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        return False
    return int(header["sform_code"]) == 4 or int(header["qform_code"]) == 4


def is_image(path: str | os.PathLike) -> bool:
    """True if the file name ends like an image :func:`load_nifti` reads (:data:`SUFFIXES`)."""
    return Path(path).name.lower().endswith(SUFFIXES)


def _read(path_or_img) -> tuple[nib.spatialimages.SpatialImage, str]:
    if isinstance(path_or_img, nib.spatialimages.SpatialImage):
        extra = getattr(path_or_img, "extra", None) or {}
        name = extra.get("source") or getattr(path_or_img, "get_filename", lambda: None)()
        name = name or "<image>"
        return path_or_img, name
    p = Path(path_or_img)
    name = str(p)
    if not p.exists():
        raise DataError(
            f"{name}: file not found. Check the path (relative paths in a table are "
            "relative to the table's folder)."
        )
    if p.is_dir() or not is_image(p):
        raise DataError(
            f"{name}: not a NIfTI file; expected .nii, .nii.gz or FreeSurfer .mgz "
            "(convert DICOM with dcm2niix first)."
        )
    try:
        return nib.load(str(p)), name
    except Exception as e:  # ImageFileError, gzip errors, OSError, ...
        raise DataError(
            f"{name}: cannot be read as NIfTI ({type(e).__name__}: {e}). The file is "
            "corrupt or not a NIfTI image; re-export or re-download it."
        ) from e


def _check(data: np.ndarray, affine: np.ndarray, name: str) -> np.ndarray:
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
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise DataError(
            f"{name}: the affine (voxel -> mm) is singular or not finite; "
            "fix the header (qform/sform)."
        )
    return data


def load_nifti(path_or_img: str | os.PathLike | nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """Load, validate and reorient one 3D scan; the one loader of slicelib.

    Args:
        path_or_img: ``.nii`` / ``.nii.gz`` / FreeSurfer ``.mgz``/``.mgh`` file (its affine is
            used), or an already loaded nibabel image.

    Returns:
        ``nib.Nifti1Image`` in the closest canonical (RAS) orientation, float32 data of shape
        (X, Y, Z) held in memory (a 4D image with one volume is squeezed; the stored dtype and
        scale factors are applied once, in float32, so the same voxels stored as uint8, int16
        or float32, in ``.nii`` or ``.nii.gz``, give the same array), its affine (voxel -> mm)
        and the original header's sform/qform codes. ``img.extra`` holds ``source`` (the file
        name or "<image>"), ``declares_mni`` (the ORIGINAL header has sform or qform
        code 4), ``source_shape`` and ``source_axcodes`` (as stored).

    Raises:
        DataError naming the file: missing/unreadable/corrupt/truncated file, not 3D (2D, or
        4D with more than one volume), NaN or inf voxels, all-zero or constant data, singular
        affine. The message says what to do.
    """
    img, name = _read(path_or_img)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # truncated gzip: EOFError, zlib.error, OSError, ValueError
        raise DataError(
            f"{name}: the voxel data cannot be read ({type(e).__name__}: {e}). The file is "
            "truncated or corrupt; re-export or re-download it."
        ) from e
    affine = np.asarray(img.affine, dtype=float)
    data = _check(data, affine, name)
    mni = declares_mni(img)
    codes = (0, 0)
    header = None
    if isinstance(img.header, (nib.Nifti1Header, nib.Nifti2Header)):
        codes = (int(img.header["sform_code"]), int(img.header["qform_code"]))
        header = nib.Nifti1Header.from_header(img.header)
    extra: dict[str, Any] = {
        "source": name,
        "declares_mni": mni,
        "source_shape": tuple(int(s) for s in data.shape),
        "source_axcodes": nib.aff2axcodes(affine),
    }
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, affine, header))
    out = nib.Nifti1Image(
        np.ascontiguousarray(canon.dataobj, dtype=np.float32), canon.affine, canon.header, extra
    )
    out.set_data_dtype(np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    # as_closest_canonical rewrites the codes (LAS sform code 4 -> 2): put the original back
    out.set_sform(out.affine, code=codes[0] or (4 if mni else 2))
    out.set_qform(out.affine, code=codes[1])
    return out
