"""Translation-only head centring (``PreprocessConfig(method="translate")``): the explicit fallback.

A raw head's scanner coordinates are ignored and the head is *translated* (optionally shrunk)
so that its top and its cranium sit where an MNI152 head's would. This is NOT a registration:
no rotation, no per-axis scaling, no warp. On 40 real IXI heads the result correlates with the
MNI152 template at a median NCC of 0.12 (registered brains: 0.55), so :mod:`slicelib.qc` judges
it with thresholds of its own; use the default ``method="register"`` (:mod:`slicelib.pipeline`)
for raw heads whenever possible.

Also here: the foreground mask (Otsu threshold, largest component, holes filled) that the
resampling paths normalise with, and the grid-border statistics of a mask.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["foreground_mask", "head_anchor", "centre_transform", "border_stats"]

#: Where a raw head is placed (MNI mm): the top of the scalp (vertex) goes to z = _HEAD_TOP_Z and
#: the centre of mass of the cranium slab (20 to 80 mm below the vertex, above the eyes) goes to
#: x = 0, y = _CRANIUM_Y. The MNI152 brain top is at z = +82 mm; +104 mm for the scalp top was
#: chosen by eye on the ten ixi10 heads (data/show_ixi10.py).
_HEAD_TOP_Z = 104.0
_CRANIUM_Y = -18.0
_SLAB_MM = (20.0, 80.0)


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
        bool array (X, Y, Z); falls back to ``data > data.min()`` if the threshold selects
        nothing, all False for a constant array.
    """
    data = np.asarray(data, dtype=np.float32)
    lo = float(data.min())
    if not float(data.max()) > lo:
        return np.zeros(data.shape, dtype=bool)
    mask = data > _otsu_threshold(data.ravel())
    if not mask.any():
        mask = data > lo
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def head_anchor(img: nib.Nifti1Image, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Locate a raw head in its own world coordinates.

    Measured on the foreground mask of ``img`` (canonical RAS): the vertex (99.9th percentile
    of the mask's z, mm) and the centre of mass (x, y) of the cranium slab 20-80 mm below it
    (above eyes and nose, unaffected by how much neck the field of view holds).

    Returns:
        dict(source=(3,) mm point to map to ``target``, target=(3,) MNI mm point
        (0, -18, 104), extent_mm=(2,) LR and AP extent of the slab, mask=bool (X, Y, Z)).
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if mask is None:
        mask = foreground_mask(data)
    world = nib.affines.apply_affine(img.affine, np.argwhere(mask))  # (N, 3) mm
    vertex_z = float(np.percentile(world[:, 2], 99.9))
    in_slab = (world[:, 2] <= vertex_z - _SLAB_MM[0]) & (world[:, 2] >= vertex_z - _SLAB_MM[1])
    slab = world[in_slab] if in_slab.sum() > 10 else world
    lo, hi = np.percentile(slab[:, :2], [0.5, 99.5], axis=0)
    return {
        "source": np.array([slab[:, 0].mean(), slab[:, 1].mean(), vertex_z]),
        "target": np.array([0.0, _CRANIUM_Y, _HEAD_TOP_Z]),
        "extent_mm": hi - lo,
        "mask": mask,
    }


def centre_transform(
    img: nib.Nifti1Image, volume_shape, voxel_size: float, scale_to_fit: bool = False
) -> dict[str, Any]:
    """The translation (and optional shrink) that puts a raw head into the grid.

    Returns:
        dict(move=(4, 4) matrix mapping grid mm -> source mm (sample the source at
        ``move @ grid_affine``), shift_mm=(3,) translation applied, scale=float (>= 1, the
        shrink factor), mask=bool (X, Y, Z) source foreground).
    """
    anchor = head_anchor(img)
    scale = 1.0
    if scale_to_fit:
        room = np.array(volume_shape[:2], dtype=float) * voxel_size - 8.0  # 4 mm margins
        scale = float(max(1.0, np.max(anchor["extent_mm"] / room)))
    move = np.eye(4)  # grid point p (MNI mm) samples source point src + scale * (p - tgt)
    move[:3, :3] *= scale
    move[:3, 3] = anchor["source"] - scale * anchor["target"]
    shift = anchor["target"] - anchor["source"]
    return {"move": move, "shift_mm": shift, "scale": scale, "mask": anchor["mask"]}


def border_stats(mask: np.ndarray, voxel_size: float) -> dict[str, Any]:
    """How much of a grid mask (X, Y, Z) touches the grid's faces, and its centre offset.

    Returns:
        dict(border_fraction=float, border_fraction_by_face={left, right, posterior,
        anterior, inferior, superior: float}, com_offset_mm=(3,) mask centre minus grid
        centre, mm).
    """
    faces = {
        "left": mask[0],
        "right": mask[-1],
        "posterior": mask[:, 0],
        "anterior": mask[:, -1],
        "inferior": mask[:, :, 0],
        "superior": mask[:, :, -1],
    }
    total = sum(v.size for v in faces.values())
    idx = np.argwhere(mask)
    centre = (np.asarray(mask.shape) - 1) / 2
    com = (idx.mean(0) - centre) * voxel_size if len(idx) else np.full(3, np.nan)
    return {
        "border_fraction": float(sum(int(v.sum()) for v in faces.values()) / total),
        "border_fraction_by_face": {k: float(v.mean()) for k, v in faces.items()},
        "com_offset_mm": com,
    }
