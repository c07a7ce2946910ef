"""The template-space arrays the synthetic cohort is built from (:func:`templates`).

nilearn's packaged MNI152 (2009) T1, GM, WM and brain-mask templates, resampled once to the
model grid (FSL MNI152 2 mm, (91, 109, 91), RAS), give the tissue maps and the texture every
synthetic subject keeps; from them come the maps the generator (:mod:`slicelib.synth`) acts
on: where age thins grey matter, where the ventricles may grow, where AD acts (medial temporal
lobe), the scalp/skull shell, and the regions its QA measures. Built once per process (~2 s),
cached on disk under ``$SLICELIB_CACHE`` when set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

from slicelib.data import MNI_2MM_AFFINE, MNI_2MM_SHAPE
from slicelib.utils import atomic_write, mni_template

__all__ = ["Templates", "templates"]

# Model grid, shared with the loaders (slicelib.data owns the constants).
_SHAPE = tuple(MNI_2MM_SHAPE)
_AFFINE = np.array(MNI_2MM_AFFINE, dtype=float)
_VOXEL_ML = 0.008  # 2 mm isotropic voxel = 8 mm^3 = 0.008 ml
_TEMPLATE_VERSION = "synth-templates-v2"

# Medial-temporal regions where AD acts, MNI mm: (centre, semi-axes).
_AD_REGIONS = (
    ((28.0, -22.0, -14.0), (5.0, 11.0, 5.0)),  # right hippocampus (long axis antero-posterior)
    ((-28.0, -22.0, -14.0), (5.0, 11.0, 5.0)),  # left hippocampus
    ((23.0, -5.0, -18.0), (5.0, 5.0, 5.0)),  # right amygdala
    ((-23.0, -5.0, -18.0), (5.0, 5.0, 5.0)),  # left amygdala
    ((25.0, -18.0, -27.0), (5.0, 12.0, 4.0)),  # right parahippocampal / entorhinal cortex
    ((-25.0, -18.0, -27.0), (5.0, 12.0, 4.0)),  # left parahippocampal / entorhinal cortex
)
# Where the medial-temporal CSF (temporal horn, choroidal fissure) may widen in AD, MNI mm.
_MTL_CSF_REGIONS = (
    ((28.0, -18.0, -15.0), (12.0, 22.0, 11.0)),
    ((-28.0, -18.0, -15.0), (12.0, 22.0, 11.0)),
)


# --------------------------------------------------------------------------------------------
# Templates (computed once per process, optionally cached on disk)
# --------------------------------------------------------------------------------------------


@dataclass
class Templates:
    """Template-space arrays on the model grid, all float32 / bool of shape (91, 109, 91).

    t1_resid: template T1 minus its tissue-class fit (texture kept in every subject).
    gm, wm, csf: tissue probabilities (sum to ``brain`` inside the brain).
    brain: brain mask. head: scalp/skull intensity outside the brain (fraction of WM).
    gm_weight: where age thins grey matter (0..~1.3). vent_dist: signed distance to the lateral
    ventricles (mm, negative inside). vent_allowed: 0..1, where ventricles may grow.
    ad_map: 0..1, where AD thins grey matter. mtl_csf_dist: signed distance to the medial-temporal
    CSF spaces (mm, negative inside); mtl_csf_allowed: 0..1, where AD may widen them.
    roi_*: measurement regions (bool).
    """

    t1_resid: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    head: np.ndarray
    gm_weight: np.ndarray
    vent_dist: np.ndarray
    vent_allowed: np.ndarray
    ad_map: np.ndarray
    mtl_csf_dist: np.ndarray
    mtl_csf_allowed: np.ndarray
    roi_brain: np.ndarray
    roi_ventricles: np.ndarray
    roi_hippocampus: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: _AFFINE.copy())


def _mm_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable MNI mm coordinates of the voxel centres: (91,1,1), (1,109,1), (1,1,91)."""
    x = (_AFFINE[0, 0] * np.arange(_SHAPE[0]) + _AFFINE[0, 3]).astype(np.float32)
    y = (_AFFINE[1, 1] * np.arange(_SHAPE[1]) + _AFFINE[1, 3]).astype(np.float32)
    z = (_AFFINE[2, 2] * np.arange(_SHAPE[2]) + _AFFINE[2, 3]).astype(np.float32)
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _load_nilearn_templates() -> dict[str, np.ndarray]:
    """nilearn's packaged MNI152 (2009) templates on the model grid, float32 (91, 109, 91)."""
    return {
        what: np.asarray(mni_template(_SHAPE, _AFFINE, what=what).get_fdata(dtype=np.float32))
        for what in ("t1", "gm", "wm", "mask")
    }


def _build_templates() -> Templates:
    raw = _load_nilearn_templates()
    X, Y, Z = _mm_grid()
    brain = raw["mask"] > 0.5
    gm = np.where(brain, np.clip(raw["gm"], 0, 1), 0).astype(np.float32)
    wm = np.where(brain, np.clip(raw["wm"], 0, 1), 0).astype(np.float32)
    s = gm + wm
    over = s > 1
    gm[over] /= s[over]
    wm[over] /= s[over]
    csf = np.where(brain, 1 - gm - wm, 0).astype(np.float32)

    # Template texture that the tissue classes do not explain.
    t1 = raw["t1"]
    A = np.stack([gm[brain], wm[brain], csf[brain]], 1)
    coef, *_ = np.linalg.lstsq(A, t1[brain], rcond=None)
    wm_level = coef[1]
    resid = np.zeros(_SHAPE, np.float32)
    resid[brain] = (t1[brain] - A @ coef) / wm_level
    resid = np.clip(resid, -0.15, 0.15)

    depth = ndi.distance_transform_edt(brain).astype(np.float32) * 2.0  # mm from brain edge

    # Where age thins cortex: GM near CSF / the brain surface (sulci), more frontally and
    # temporally, less in the cerebellum and deep grey matter.
    outer = ndi.gaussian_filter(csf + (~brain), 1.0)
    frontal = np.clip((Y + 40.0) / 100.0, 0, 1)  # 0 at y=-40 mm -> 1 at y=+60 mm
    temporal = np.exp(-(((np.abs(X) - 45.0) / 15.0) ** 2) - ((Z + 15.0) / 20.0) ** 2)
    cerebellum = (Z < -20) & (Y < -45)
    gm_weight = 0.45 + 0.9 * np.clip(outer, 0, 1) + 0.35 * frontal + 0.25 * temporal
    gm_weight = np.where(cerebellum, 0.5 * gm_weight, gm_weight)
    gm_weight = np.where(brain, np.clip(gm_weight, 0, 1.4), 0).astype(np.float32)

    # Lateral ventricles: largest CSF component in a central deep box.
    box = (np.abs(X) < 32) & (Y > -80) & (Y < 40) & (Z > -5) & (Z < 40) & (depth > 10)
    seed = (csf > 0.5) & box
    lab, n = ndi.label(seed)
    sizes = ndi.sum(seed, lab, range(1, n + 1))
    vent = lab == (int(np.argmax(sizes)) + 1)
    vent_dist = (
        ndi.distance_transform_edt(~vent) * 2.0 - ndi.distance_transform_edt(vent) * 2.0
    ).astype(np.float32)
    deep = np.clip((depth - 14.0) / 6.0, 0, 1)  # no growth within ~14 mm of the brain surface
    septum = (np.abs(X) < 1.0) & (Z > 6) & (Y > -25)
    vent_allowed = (deep * np.where(septum, 0.35, 1.0) * brain).astype(np.float32)

    # AD: soft ellipsoids (flat top, ~2 mm soft edge) on hippocampus and amygdala.
    ad_map = np.zeros(_SHAPE, np.float32)
    roi_h = np.zeros(_SHAPE, bool)
    for (cx, cy, cz), (ax, ay, az) in _AD_REGIONS:
        d = np.sqrt(((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 + ((Z - cz) / az) ** 2)
        ad_map = np.maximum(ad_map, expit((1.0 - d) / 0.12))
        roi_h |= d <= 1.0
    ad_map = (ad_map * brain).astype(np.float32)
    # AD: the CSF around hippocampus and amygdala (temporal horn, choroidal fissure) may widen.
    mtl = np.zeros(_SHAPE, np.float32)
    for (cx, cy, cz), (ax, ay, az) in _MTL_CSF_REGIONS:
        d = np.sqrt(((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 + ((Z - cz) / az) ** 2)
        mtl = np.maximum(mtl, expit((1.0 - d) / 0.1))
    mtl_seed = (csf > 0.4) & (mtl > 0.5) & brain
    mtl_csf_dist = (
        ndi.distance_transform_edt(~mtl_seed) * 2.0 - ndi.distance_transform_edt(mtl_seed) * 2.0
    ).astype(np.float32)
    mtl_csf_allowed = (mtl * brain).astype(np.float32)

    # Head outside the brain: smooth rounded head surface, then scalp / skull / diploe / CSF.
    head_mask = ndi.gaussian_filter(brain.astype(np.float32), 4.0) > 0.02
    head_mask = ndi.binary_fill_holes(head_mask)
    d_in = ndi.distance_transform_edt(head_mask).astype(np.float32) * 2.0  # mm below head surface
    head = np.zeros(_SHAPE, np.float32)
    head += np.where(d_in > 0, 0.85, 0) * np.exp(-(((d_in - 2.5) / 2.0) ** 2))  # scalp fat
    head += 0.35 * np.exp(-(((d_in - 6.0) / 1.5) ** 2))  # galea / muscle
    head += 0.45 * np.exp(-(((d_in - 10.0) / 1.2) ** 2))  # diploe (marrow)
    head += 0.06 * (d_in > 11)  # CSF / dura between skull and brain
    head = np.where(head_mask & ~brain, head, 0).astype(np.float32)
    head = ndi.gaussian_filter(head, 0.6).astype(np.float32) * (~brain)

    roi_brain = brain
    roi_vent = (vent_dist < 10.0) & (depth > 10.0)
    return Templates(
        t1_resid=resid.astype(np.float32), gm=gm, wm=wm, csf=csf, brain=brain, head=head,
        gm_weight=gm_weight, vent_dist=vent_dist, vent_allowed=vent_allowed, ad_map=ad_map,
        mtl_csf_dist=mtl_csf_dist, mtl_csf_allowed=mtl_csf_allowed, roi_brain=roi_brain,
        roi_ventricles=roi_vent, roi_hippocampus=roi_h & brain,
    )  # fmt: skip


def _cache_file() -> Path | None:
    root = os.environ.get("SLICELIB_CACHE")
    return Path(root) / f"{_TEMPLATE_VERSION}.npz" if root else None


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez(path) would append ".npz"
        np.savez(f, **arrays)


@lru_cache(maxsize=1)
def templates() -> Templates:
    """The template-space arrays (:class:`Templates`, each (91, 109, 91)), built once per process.

    Built from nilearn's packaged MNI152 templates in ~2 s; stored on disk as
    ``$SLICELIB_CACHE/synth-templates-v1.npz`` when that environment variable is set
    (written atomically; a damaged file is rebuilt).
    """
    path = _cache_file()
    names = [f.name for f in fields(Templates)]
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                return Templates(**{k: z[k] for k in names})
        except Exception:  # damaged cache: rebuild below
            pass
    tp = _build_templates()
    if path is not None:
        try:
            atomic_write(path, lambda tmp: _save_npz(tmp, {k: getattr(tp, k) for k in names}))
        except OSError:
            pass
    return tp
