"""Re-store one head in the forms a user meets (the consistency benchmark's inputs).

Each function takes a 3D ``nibabel`` image (any orientation, any dtype; intensities in the
scanner's arbitrary units) and returns a new 3D image of the same head stored another way:

- :func:`conform_freesurfer`: 1 mm 256^3 uint8, LIA, white matter at 110 (FreeSurfer-like);
- :func:`gamma`: a gamma curve on the intensities normalised to [0, 1];
- :func:`bias_field`: a smooth multiplicative field (a low-order polynomial, as TorchIO's
  ``RandomBiasField``);
- :func:`thick_slices`: 1 x 1 mm in plane, 5.5 mm thick slices along the head's
  superior-inferior axis (stored thick, as a clinical scan is);
- :func:`rescale`: another intensity scale and dtype (e.g. int16 x 7.3).

``FORMS`` names them as the benchmark stores them; :func:`restore` writes one form to disk.
Used by ``benchmarks/consistency.py``; tested by ``tests/test_consistency.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import conform, resample_from_to
from scipy.ndimage import gaussian_filter

#: White-matter intensity of a FreeSurfer-normalised T1 (``T1.mgz``, ``brain.mgz``).
FS_WM = 110.0


def _data(img) -> np.ndarray:
    """The image's (X, Y, Z) intensities as float32 (scale factors applied); 3D only."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}; give one 3D T1 volume")
    return data


def _float_image(data: np.ndarray, img) -> nib.Nifti1Image:
    """``data`` (X, Y, Z) as a float32 NIfTI on ``img``'s grid (affine and codes kept)."""
    out = nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    return out


def white_matter_intensity(data: np.ndarray, brain: np.ndarray) -> float:
    """The white-matter intensity of a T1 head from a brain mask: the 75th percentile of the
    brain's intensities (the median of its brighter half; white matter, the brightest and
    about half of a T1 brain, fills it). On the IXI-HH heads it is within 3 % of the median
    over the DLMUSE white-matter regions.

    Args:
        data: (X, Y, Z) intensities in any units. brain: (X, Y, Z) bool brain mask.

    Returns:
        The white-matter intensity, in ``data``'s units.
    """
    brain = np.asarray(brain, dtype=bool)
    if brain.shape != data.shape or not brain.any():
        raise ValueError(
            f"brain mask of shape {brain.shape} with {int(brain.sum())} voxels does not fit the "
            f"image {data.shape}; give the head's own non-empty brain mask"
        )
    return float(np.percentile(data[brain], 75))


def conform_freesurfer(
    img, wm_intensity: float, wm: float = FS_WM, out_shape=(256, 256, 256)
) -> nib.MGHImage:
    """The head as FreeSurfer stores it after ``mri_convert --conform`` and intensity
    normalisation: 256^3 voxels of 1 mm, LIA orientation, uint8, white matter at ``wm``.

    The geometry is ``nibabel.processing.conform`` (trilinear, as mri_convert's default). The
    intensities are approximated by one global scale that maps ``wm_intensity`` (e.g.
    :func:`white_matter_intensity`) to ``wm``, clipped to 0..255 and rounded. Not reproduced:
    FreeSurfer's N3 non-uniformity correction and the local (per-region) white-matter
    normalisation of ``mri_normalize``, and ``--conform``'s robust 0..255 rescaling before it
    (the global scale here replaces both).

    Args:
        img: a 3D nibabel image. wm_intensity: its white-matter intensity (its own units).
        wm: the white-matter value (FreeSurfer: 110). out_shape: the grid (FreeSurfer: 256^3;
            a smaller one crops the field of view, for tests).

    Returns:
        nibabel MGHImage ``out_shape`` (default (256, 256, 256)) uint8, 1 mm voxels.
    """
    if not wm_intensity > 0:
        raise ValueError(f"white-matter intensity must be > 0, got {wm_intensity}")
    scaled = _float_image(_data(img) * (wm / wm_intensity), img)
    out = conform(scaled, out_shape=tuple(out_shape), voxel_size=(1.0, 1.0, 1.0), order=1,
                  orientation="LIA")  # fmt: skip
    ints = np.clip(np.rint(np.asarray(out.dataobj)), 0, 255).astype(np.uint8)
    return nib.MGHImage(ints, out.affine)


def gamma(img, g: float) -> nib.Nifti1Image:
    """Intensities through a gamma curve: normalised to [0, 1] by the image's min and max,
    raised to ``g``, rescaled to the original range; stored float32 on the same grid.

    Args:
        img: a 3D nibabel image. g: the exponent (> 0; < 1 brightens grey matter and CSF
            relative to white matter, > 1 darkens them).
    """
    if not g > 0:
        raise ValueError(f"gamma must be > 0, got {g}")
    data = _data(img)
    lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        raise ValueError(f"image is constant ({lo}); nothing to apply a gamma curve to")
    unit = (data - lo) / (hi - lo)
    return _float_image(lo + (hi - lo) * unit**g, img)


def polynomial_field(shape, order: int = 3, strength: float = 0.5, seed: int = 0) -> np.ndarray:
    """A smooth multiplicative bias field, as TorchIO's ``RandomBiasField`` draws it:
    ``exp(sum c_ijk x^i y^j z^k)`` over ``i + j + k <= order``, coordinates in [-1, 1] along
    each axis, coefficients uniform in [-strength, strength] (seeded).

    Args:
        shape: (X, Y, Z) of the volume. order: polynomial order. strength: coefficient range.
        seed: numpy seed of the coefficients.

    Returns:
        (X, Y, Z) float32 field, > 0.
    """
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    log_field = np.zeros(shape, dtype=np.float32)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                c = rng.uniform(-strength, strength)
                log_field += np.float32(c) * x**i * y**j * z**k
    return np.exp(log_field)


def bias_field(img, order: int = 3, strength: float = 0.5, seed: int = 0) -> nib.Nifti1Image:
    """The head times a smooth field (:func:`polynomial_field`); float32, same grid."""
    data = _data(img)
    return _float_image(data * polynomial_field(data.shape, order, strength, seed), img)


def _superior_axis(affine) -> int:
    """The voxel axis most aligned with the world's superior-inferior (z) axis."""
    direction = np.abs(np.asarray(affine, dtype=float)[:3, :3])
    direction = direction / np.linalg.norm(direction, axis=0)
    return int(np.argmax(direction[2]))


def thick_slices(img, thickness: float = 5.5, in_plane: float = 1.0, axis: int | None = None):
    """The head stored as thick slices: ``in_plane`` mm voxels in the slice plane and
    ``thickness`` mm between slices along ``axis`` (default: the superior-inferior axis, as an
    axial clinical scan), stored thick (not resampled back).

    Each thick slice integrates the signal over its thickness: the volume is first smoothed
    along ``axis`` by a Gaussian with the variance of a ``thickness``-wide box (sd
    thickness / sqrt(12)), then sampled (trilinear) on the new grid, which keeps the original
    direction cosines and field of view.

    Returns:
        float32 Nifti1Image; voxel sizes ``in_plane`` except ``thickness`` along ``axis``.
    """
    data = _data(img)
    affine = np.asarray(img.affine, dtype=float)
    axis = _superior_axis(affine) if axis is None else axis
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma = [0.0, 0.0, 0.0]
    sigma[axis] = thickness / np.sqrt(12.0) / zooms[axis]
    smooth = gaussian_filter(data, sigma, mode="nearest")
    new_zooms = np.full(3, in_plane)
    new_zooms[axis] = thickness
    extent = zooms * np.array(data.shape)  # field of view, mm
    shape = tuple(int(max(1, np.round(e / z))) for e, z in zip(extent, new_zooms))
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] / zooms * new_zooms
    # keep the field of view's corner: voxel centres shift by half the voxel-size change
    corner = affine[:3, :3] @ (-0.5 * np.ones(3))
    new_affine[:3, 3] = affine[:3, 3] + corner - new_affine[:3, :3] @ (-0.5 * np.ones(3))
    out = resample_from_to(_float_image(smooth, img), (shape, new_affine), order=1)
    return _float_image(np.asarray(out.dataobj), out)


def rescale(img, factor: float, dtype=np.int16) -> nib.Nifti1Image:
    """Intensities times ``factor``, stored as ``dtype`` (rounded for integer types, no scale
    factor in the header), same grid: another scanner's or converter's arbitrary units."""
    data = _data(img) * factor
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        if data.max() > info.max or data.min() < info.min:
            raise ValueError(
                f"intensities x {factor} span {data.min():.1f}..{data.max():.1f}, outside "
                f"{np.dtype(dtype).name}; use a smaller factor or a wider type"
            )
        data = np.rint(data)
    out = nib.Nifti1Image(data.astype(dtype), img.affine)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    out.header.set_slope_inter(1.0, 0.0)
    return out


#: form name -> (file suffix, function of (image, brain mask, seed) -> image). ``brain``:
#: (X, Y, Z) bool mask of the head (only the FreeSurfer form uses it); ``seed``: the subject's.
FORMS = {
    "conformed_fs": (
        ".mgz",
        lambda img, brain, seed: conform_freesurfer(img, white_matter_intensity(_data(img), brain)),
    ),
    "gamma_0.7": (".nii.gz", lambda img, brain, seed: gamma(img, 0.7)),
    "gamma_1.4": (".nii.gz", lambda img, brain, seed: gamma(img, 1.4)),
    "bias_field": (".nii.gz", lambda img, brain, seed: bias_field(img, seed=seed)),
    "thick_5.5mm": (".nii.gz", lambda img, brain, seed: thick_slices(img, 5.5)),
    "int16_x7.3": (".nii.gz", lambda img, brain, seed: rescale(img, 7.3, np.int16)),
}


def restore(src, form: str, dst_dir, brain=None, seed: int = 0) -> Path:
    """Write the head ``src`` (a path) re-stored as ``form`` (a key of :data:`FORMS`) into
    ``dst_dir`` as ``<form><suffix>``; an existing file is kept (the forms are deterministic).

    Args:
        brain: path of a label image on ``src``'s grid (labels > 0 are brain), or an (X, Y, Z)
            bool array; needed by "conformed_fs". seed: the bias field's seed.

    Returns:
        The written file's path.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose among {list(FORMS)}")
    suffix, make = FORMS[form]
    dst = Path(dst_dir) / f"{form}{suffix}"
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(brain, (str, os.PathLike)):
            brain = np.asarray(nib.load(str(brain)).dataobj) > 0
        if brain is None and form == "conformed_fs":
            raise ValueError(f"{src}: the form conformed_fs needs the head's brain mask (brain=)")
        out = make(nib.load(str(src)), brain, seed)
        tmp = dst.with_name(f".tmp-{dst.name}")
        nib.save(out, str(tmp))
        os.replace(tmp, dst)
    return dst
