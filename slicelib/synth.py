"""Synthetic T1 cohort with known ground truth: the offline default dataset of slicelib.

Every subject is generated from the MNI152 templates that ship inside nilearn (no download),
resampled once to the model grid (FSL MNI152 2 mm, shape (91, 109, 91), RAS affine).

Generative model (all in template space unless said otherwise)
---------------------------------------------------------------
1. Demographics: age ~ Uniform(age_range) in years, sex M/F 50:50, diagnosis AD with a
   probability that rises with age (x1 below 40 years, up to x4.3 at 90 years, scaled so that the
   expected prevalence is ``ad_prevalence``); AD and CN ages overlap over the whole range, so
   age-matched comparisons are possible.
2. Biological age = age + a subject "brain-age gap" ~ N(0, ``brain_age_gap_sd``); atrophy follows
   the biological age. This gap is the irreducible error of any age predictor.
3. Tissue probability maps (GM, WM, CSF from nilearn's MNI152 GM/WM templates and brain mask) are
   modified:
   - cortical thinning: a fraction of grey matter is replaced by CSF (partial volume), more at
     the pial surface (sulcal widening) and frontally, with a smooth random regional pattern per
     subject; accelerating with age;
   - ventricle enlargement: the lateral ventricles (a seed taken from the template) are dilated
     by an age-dependent radius (signed distance map, soft edge), inside a deep-brain region and
     keeping a septum pellucidum;
   - AD, beyond age, as in medial temporal atrophy (the MTA visual rating of Scheltens et al.):
     grey-matter loss (30-50 % locally, severity varies per subject) in hippocampus, amygdala and
     parahippocampal gyrus (ellipsoids centred at MNI (+-28, -22, -14), (+-23, -5, -18) and
     (+-25, -18, -27) mm), and widening of the CSF spaces around them (temporal horn, choroidal
     fissure): the template's medial-temporal CSF is dilated by ``ad_horn_mm`` x severity / 0.4.
4. A T1-like intensity: template texture residual + class means (WM bright, GM mid, CSF dark,
   jittered per subject), plus a scalp / skull / diploe shell outside the brain.
5. Acquisition: one resampling (order 1) through a composed warp = small random pose (rotation
   of a few degrees, translation of a few mm) + smooth random displacement field (the subject's
   own anatomy, a few mm); multiplicative smooth bias field; Rician noise; random gamma;
   quantisation to uint8.

The ground-truth effect maps (``derivatives/ground_truth/{age_effect,ad_effect}.nii.gz``) are in
template (MNI) space: |d intensity / d age| (fraction of WM intensity per year) and the intensity
change that AD (mean severity) causes at 70 years.

The documented properties of a cohort (ventricle and grey-matter volumes against age, the AD
hippocampal deficit, a ridge-regression baseline) are measured from the written images by
``benchmarks/synth_qa.py`` (``python benchmarks/synth_qa.py COHORT``).
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.special import expit

from slicelib.data import MNI_2MM_AFFINE, MNI_2MM_SHAPE
from slicelib.utils import atomic_write, mni_template

__all__ = [
    "GENERATOR_VERSION",
    "SynthParams",
    "Templates",
    "templates",
    "subject_info",
    "synth_subject",
    "effect_maps",
    "make_cohort",
]

# Model grid, shared with the loaders (slicelib.data owns the constants).
_SHAPE = tuple(MNI_2MM_SHAPE)
_AFFINE = np.array(MNI_2MM_AFFINE, dtype=float)
_VOXEL_ML = 0.008  # 2 mm isotropic voxel = 8 mm^3 = 0.008 ml
_TEMPLATE_VERSION = "synth-templates-v2"
# Bumped whenever the generative model changes, so cached cohorts are remade, not reused.
GENERATOR_VERSION = 2

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


@dataclass
class SynthParams:
    """Knobs of the synthetic cohort (units in the field comments).

    The defaults give the documented properties (measured by ``benchmarks/synth_qa.py``).
    """

    ad_prevalence: float = 0.3  # expected fraction of AD subjects
    age_range: tuple[float, float] = (20.0, 90.0)  # years, ages ~ Uniform(range)
    brain_age_gap_sd: float = 3.0  # years; biological age = age + N(0, sd)
    gm_loss_max: float = 0.5  # GM fraction lost at weight 1 and age 90 (partial volume -> CSF)
    gm_rate_sd: float = 0.06  # subject multiplier on the GM-loss rate ~ N(1, sd)
    regional_sd: float = 0.2  # smooth regional variation of the atrophy pattern (relative)
    ventricle_radius_mm: float = 5.0  # ventricle dilation radius at 90 years (mm)
    ventricle_sd_mm: float = 0.35  # subject variation of the dilation radius (mm)
    ad_loss: tuple[float, float] = (0.3, 0.5)  # local AD GM loss fraction, Uniform(range)
    ad_horn_mm: float = 5.0  # AD widening of medial-temporal CSF at severity 0.4 (mm)
    warp_mm: float = 2.5  # SD of the random displacement at the control points (mm)
    rotation_deg: float = 3.0  # SD of each rotation angle (degrees)
    translation_mm: float = 2.5  # SD of each translation (mm)
    scale_sd: float = 0.0  # SD of an isotropic scale (0: head size removed by registration)
    bias_sd: float = 0.12  # SD of the log bias field at its control points
    noise_sd: float = 0.03  # Rician noise SD, as a fraction of the WM intensity
    contrast_sd: float = 0.015  # SD of the per-subject jitter of the class means (fraction of WM)
    gamma_range: tuple[float, float] = (0.92, 1.09)  # intensity gamma ~ log-uniform(range)

    def to_dict(self) -> dict:
        """JSON-serialisable dict of all fields (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> SynthParams:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown SynthParams fields {sorted(unknown)}; known: {sorted(names)}"
            )
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def validate(self) -> None:
        """Raise ValueError naming the bad value."""
        lo, hi = self.age_range
        if not (0 <= lo < hi <= 120):
            raise ValueError(f"age_range={self.age_range}: need 0 <= low < high <= 120 (years)")
        if not (0.0 <= self.ad_prevalence < 1.0):
            raise ValueError(f"ad_prevalence={self.ad_prevalence}: need 0 <= p < 1")
        if not (0.0 <= self.ad_loss[0] <= self.ad_loss[1] < 1.0):
            raise ValueError(f"ad_loss={self.ad_loss}: need 0 <= low <= high < 1")
        if not (0 < self.gamma_range[0] <= self.gamma_range[1]):
            raise ValueError(f"gamma_range={self.gamma_range}: need 0 < low <= high")


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
        t1_resid=resid.astype(np.float32),
        gm=gm,
        wm=wm,
        csf=csf,
        brain=brain,
        head=head,
        gm_weight=gm_weight,
        vent_dist=vent_dist,
        vent_allowed=vent_allowed,
        ad_map=ad_map,
        mtl_csf_dist=mtl_csf_dist,
        mtl_csf_allowed=mtl_csf_allowed,
        roi_brain=roi_brain,
        roi_ventricles=roi_vent,
        roi_hippocampus=roi_h & brain,
    )


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


# --------------------------------------------------------------------------------------------
# One subject
# --------------------------------------------------------------------------------------------


def _ad_weight(age: np.ndarray | float) -> np.ndarray:
    """Relative AD risk by age (years): 0.3 below 40, rising linearly to 1.3 at 90."""
    return 0.3 + np.clip((np.asarray(age, dtype=float) - 40.0) / 50.0, 0.0, 1.0)


def _ad_probability(age: float, params: SynthParams) -> float:
    lo, hi = params.age_range
    mean_w = float(np.mean(_ad_weight(np.linspace(lo, hi, 701))))
    return float(min(0.95, params.ad_prevalence * _ad_weight(age) / mean_w))


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Subject ``index``'s generator for one stream (0: demographics, 1: image).

    Depends only on (seed, index, stream), so subjects do not depend on the cohort size.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def subject_info(seed: int, index: int, params: SynthParams | None = None) -> dict:
    """Demographics and hidden variables of subject ``index`` (no image is made).

    Returns a dict: participant_id ("sub-0001" for index 0), age (years, 1 decimal), sex ("M"/"F"),
    diagnosis ("CN"/"AD"), ad (0/1), brain_age_gap (years), ad_severity (0 for CN, else 0..1 local
    GM-loss fraction in hippocampus/amygdala).
    """
    params = params or SynthParams()
    rng = _rng(seed, index, 0)
    lo, hi = params.age_range
    age = round(float(rng.uniform(lo, hi)), 1)
    sex = "F" if rng.random() < 0.5 else "M"
    ad = int(rng.random() < _ad_probability(age, params))
    gap = float(rng.normal(0.0, params.brain_age_gap_sd))
    sev = float(rng.uniform(*params.ad_loss)) if ad else 0.0
    return {
        "participant_id": f"sub-{index + 1:04d}",
        "age": age,
        "sex": sex,
        "diagnosis": "AD" if ad else "CN",
        "ad": ad,
        "brain_age_gap": round(gap, 3),
        "ad_severity": round(sev, 4),
    }


@lru_cache(maxsize=8)
def _basis(n: int, k: int) -> np.ndarray:
    """(n, k) smooth interpolation matrix: Gaussian bumps at k control points, rows sum to 1."""
    centres = np.linspace(0, n - 1, k)
    width = (n - 1) / (k - 1)
    b = np.exp(-0.5 * ((np.arange(n)[:, None] - centres[None, :]) / (0.6 * width)) ** 2)
    return (b / b.sum(1, keepdims=True)).astype(np.float32)


def _smooth_field(ctrl: np.ndarray) -> np.ndarray:
    """Upsample a small control grid (a, b, c) to a smooth (91, 109, 91) float32 field."""
    bx, by, bz = (_basis(n, k) for n, k in zip(_SHAPE, ctrl.shape))
    return np.einsum("ia,jb,kc,abc->ijk", bx, by, bz, ctrl.astype(np.float32), optimize=True)


def _atrophy_levels(bio_age: float) -> tuple[float, float]:
    """(GM-loss level, ventricle level) in [0, ~1.2] for a biological age in years."""
    a = max(0.0, (bio_age - 20.0) / 70.0)
    return a * (0.55 + 0.45 * a), a**1.3


@lru_cache(maxsize=1)
def _ventricle_box() -> tuple[slice, slice, slice]:
    """Bounding box of the voxels that ventricle growth (up to 12 mm) can reach."""
    tp = templates()
    idx = np.argwhere((tp.vent_allowed > 0) & (tp.vent_dist < 12.0))
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))


def _tissues(
    tp: Templates,
    bio_age: float,
    ad_severity: float,
    params: SynthParams,
    gm_rate: float = 1.0,
    regional: np.ndarray | float = 1.0,
    vent_offset_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject tissue fractions (gm, wm, csf), each (91, 109, 91) float32, in template space."""
    s_gm, s_v = _atrophy_levels(bio_age)
    # Ventricles: soft dilation of the template lateral ventricles (inside their bounding box).
    radius = max(0.0, params.ventricle_radius_mm * s_v + vent_offset_mm)
    box = _ventricle_box()
    vent = tp.vent_allowed[box] * expit((radius - tp.vent_dist[box]) / 0.8)
    take = np.clip(vent - tp.csf[box], 0.0, None)  # tissue turned into ventricle CSF
    tissue = tp.gm[box] + tp.wm[box]
    keep = 1.0 - np.clip(take / np.maximum(tissue, 1e-3), 0.0, 1.0)
    gm = tp.gm.copy()
    wm = tp.wm.copy()
    gm[box] *= keep
    wm[box] *= keep
    # Cortical thinning with age, plus AD medial-temporal loss (both GM -> CSF).
    loss = params.gm_loss_max * s_gm * gm_rate * tp.gm_weight * regional
    if ad_severity > 0:
        loss = 1.0 - (1.0 - loss) * (1.0 - ad_severity * tp.ad_map)
    gm = gm * (1.0 - np.clip(loss, 0.0, 0.9))
    if ad_severity > 0 and params.ad_horn_mm > 0:
        # AD: medial-temporal CSF spaces widen (soft dilation, like the ventricles above).
        radius = params.ad_horn_mm * ad_severity / 0.4
        horn = tp.mtl_csf_allowed * expit((radius - tp.mtl_csf_dist) / 0.8)
        csf_now = np.where(tp.brain, 1.0 - gm - wm, 0.0)
        take = np.clip(horn - csf_now, 0.0, None)
        keep = 1.0 - np.clip(take / np.maximum(gm + wm, 1e-3), 0.0, 1.0)
        gm = gm * keep
        wm = wm * keep
    gm = gm.astype(np.float32)
    wm = wm.astype(np.float32)
    csf = np.where(tp.brain, 1.0 - gm - wm, 0.0).astype(np.float32)
    return gm, wm, csf


_CLASS_MEANS = (0.62, 1.0, 0.12)  # GM, WM, CSF T1 intensity (fraction of WM)


def _intensity(
    tp: Templates, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, means=_CLASS_MEANS
) -> np.ndarray:
    """Noise-free template-space T1 intensity (fraction of WM), (91, 109, 91) float32."""
    mg, mw, mc = means
    img = tp.t1_resid * (gm + wm) + mg * gm + mw * wm + mc * csf + tp.head
    return img.astype(np.float32)


def synth_subject(
    seed: int, index: int, params: SynthParams | None = None, *, return_tissues: bool = False
) -> tuple[np.ndarray, dict]:
    """Generate subject ``index`` of the cohort with seed ``seed`` in memory.

    Returns (volume, info): volume is float32 (91, 109, 91) on the model grid (RAS, affine
    ``[[2,0,0,-90],[0,2,0,-126],[0,0,2,-72],[0,0,0,1]]``), values 0..255 exactly as written to the
    uint8 NIfTI (WM about 150-200); info is :func:`subject_info` plus the true template-space
    volumes in ml: gm_ml, wm_ml, csf_ml, ventricle_ml, hippocampus_gm_ml. Deterministic: depends
    only on (seed, index, params). With ``return_tissues`` info also holds the template-space
    tissue maps "tissues": (gm, wm, csf), each float32 (91, 109, 91).
    """
    params = params or SynthParams()
    tp = templates()
    info = subject_info(seed, index, params)
    rng = _rng(seed, index, 1)

    bio_age = info["age"] + info["brain_age_gap"]
    gm_rate = float(max(0.3, rng.normal(1.0, params.gm_rate_sd)))
    regional = 1.0 + params.regional_sd * _smooth_field(rng.standard_normal((4, 5, 4)) * 2.0)
    vent_offset = float(rng.normal(0.0, params.ventricle_sd_mm))
    gm, wm, csf = _tissues(tp, bio_age, info["ad_severity"], params, gm_rate, regional, vent_offset)

    means = np.array(_CLASS_MEANS) + rng.normal(0.0, params.contrast_sd, 3) * np.array([1, 0, 1])
    img = _intensity(tp, gm, wm, csf, means)
    img *= np.float32(rng.uniform(0.9, 1.1))  # head tissue / coil scaling differences

    # Composed warp: pose (rotation + translation + scale about the MNI origin) + smooth field.
    ang = np.deg2rad(rng.normal(0.0, params.rotation_deg, 3))
    cx, sx = np.cos(ang), np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx[0], -sx[0]], [0, sx[0], cx[0]]])
    ry = np.array([[cx[1], 0, sx[1]], [0, 1, 0], [-sx[1], 0, cx[1]]])
    rz = np.array([[cx[2], -sx[2], 0], [sx[2], cx[2], 0], [0, 0, 1]])
    rot = (rz @ ry @ rx) * (1.0 + rng.normal(0.0, params.scale_sd))
    shift = rng.normal(0.0, params.translation_mm / 2.0, 3)  # voxels
    centre = -_AFFINE[:3, 3] / 2.0  # voxel index of MNI (0, 0, 0)
    ctrl = rng.standard_normal((3, 5, 6, 5)) * (params.warp_mm / 2.0) * 1.6
    grids = [np.arange(n, dtype=np.float32) - c for n, c in zip(_SHAPE, centre)]
    gx, gy, gz = grids[0][:, None, None], grids[1][None, :, None], grids[2][None, None, :]
    coords = np.empty((3, *_SHAPE), np.float32)
    for d in range(3):
        coords[d] = rot[d, 0] * gx + rot[d, 1] * gy + rot[d, 2] * gz
        coords[d] += centre[d] + shift[d]
        coords[d] += _smooth_field(ctrl[d])
    vol = ndi.map_coordinates(img, coords, order=1, mode="constant", cval=0.0, prefilter=False)

    # Bias field, Rician noise, gamma, quantisation.
    vol *= np.exp(_smooth_field(rng.standard_normal((4, 4, 4)) * params.bias_sd * 1.7))
    sd = np.float32(params.noise_sd)
    n1 = rng.standard_normal(_SHAPE, dtype=np.float32)
    n2 = rng.standard_normal(_SHAPE, dtype=np.float32)
    vol = np.sqrt((vol + sd * n1) ** 2 + (sd * n2) ** 2)
    g = float(np.exp(rng.uniform(*np.log(params.gamma_range))))
    vol = np.clip(vol / 1.35, 0.0, 1.0) ** g * 255.0
    vol = np.floor(vol + 0.5).astype(np.float32)

    info.update(_true_volumes(tp, gm, wm, csf))
    if return_tissues:
        info["tissues"] = (gm, wm, csf)
    return vol, info


def _true_volumes(tp: Templates, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray) -> dict:
    return {
        "gm_ml": round(float(gm.sum()) * _VOXEL_ML, 2),
        "wm_ml": round(float(wm.sum()) * _VOXEL_ML, 2),
        "csf_ml": round(float(csf.sum()) * _VOXEL_ML, 2),
        "ventricle_ml": round(float(csf[tp.roi_ventricles].sum()) * _VOXEL_ML, 2),
        "hippocampus_gm_ml": round(float(gm[tp.roi_hippocampus].sum()) * _VOXEL_ML, 3),
    }


def effect_maps(params: SynthParams | None = None) -> dict[str, np.ndarray]:
    """Ground-truth effect maps in template space, each float32 (91, 109, 91), >= 0.

    "age_effect": |d intensity / d age| between 30 and 80 years (CN, no gap, mean pattern), in
    fraction of WM intensity per year. "ad_effect": |intensity(AD, severity = mean of ad_loss)
    - intensity(CN)| at 70 years, in fraction of WM intensity.
    """
    params = params or SynthParams()
    tp = templates()
    young = _intensity(tp, *_tissues(tp, 30.0, 0.0, params))
    old = _intensity(tp, *_tissues(tp, 80.0, 0.0, params))
    cn70 = _intensity(tp, *_tissues(tp, 70.0, 0.0, params))
    ad70 = _intensity(tp, *_tissues(tp, 70.0, float(np.mean(params.ad_loss)), params))
    return {
        "age_effect": (np.abs(old - young) / 50.0).astype(np.float32),
        "ad_effect": np.abs(ad70 - cn70).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# Writing a cohort
# --------------------------------------------------------------------------------------------

_PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "diagnosis", "ad"]


def _nifti(data: np.ndarray, dtype=np.uint8, description: str = "") -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), _AFFINE.copy())
    img.header.set_xyzt_units("mm")
    img.set_sform(_AFFINE, code=4)  # MNI152 space
    img.set_qform(_AFFINE, code=4)
    img.header["descrip"] = description[:79].encode()
    return img


def _save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Write ``img`` as .nii.gz atomically; gzip level 1 (nibabel's) and mtime 0: same bytes
    for the same image."""
    data = gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _write_subject(job: tuple[str, int, int, dict]) -> dict:
    """Worker: generate and write one subject; returns its info (without maps)."""
    out_dir, seed, index, params_dict = job
    cpu0 = time.process_time()
    params = SynthParams.from_dict(params_dict)
    vol, info = synth_subject(seed, index, params)
    sub = info["participant_id"]
    anat = Path(out_dir) / sub / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    _save_nifti(_nifti(vol, np.uint8, "slicelib.synth T1w"), anat / f"{sub}_T1w.nii.gz")
    info["_cpu_s"] = time.process_time() - cpu0
    return info


def _pool(n_jobs: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in mp.get_all_start_methods() else None
    ctx = mp.get_context(method)
    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx)


def make_cohort(
    out_dir: str | os.PathLike,
    n: int = 200,
    seed: int = 0,
    ad_prevalence: float = 0.3,
    age_range: tuple[float, float] = (20, 90),
    progress: bool = True,
    n_jobs: int = 1,
    params: SynthParams | None = None,
) -> Path:
    """Write a BIDS-like synthetic cohort of ``n`` subjects and return the participants.tsv path.

    Layout under ``out_dir``: ``sub-XXXX/anat/sub-XXXX_T1w.nii.gz`` (uint8, (91, 109, 91), 2 mm,
    RAS affine of the model grid), ``participants.tsv`` (participant_id, age [years], sex [M/F],
    diagnosis [CN/AD], ad [0/1]) with ``participants.json``, ``dataset_description.json``, and
    ``derivatives/ground_truth/``: ``age_effect.nii.gz`` and ``ad_effect.nii.gz`` (float32, template
    space, see :func:`effect_maps`), ``subjects.tsv`` (hidden variables and true tissue volumes in
    ml) and ``effect_maps.json`` (units). Subject i depends only on (seed, i, params): a larger
    ``n`` adds subjects without changing the first ones. ``ad_prevalence`` and ``age_range``
    override the fields of ``params``. ``n_jobs`` worker processes (1: in this process).
    Speed: about 0.33 CPU s per subject (generation + gzip writing), i.e. about 6 subjects/s on
    2 idle cores; the timing is saved in ``derivatives/ground_truth/generation.json``.
    """
    from tqdm.auto import tqdm

    if int(n) < 1:
        raise ValueError(f"n={n}: the cohort needs at least one subject")
    base = params.to_dict() if params is not None else SynthParams().to_dict()
    base.update(ad_prevalence=float(ad_prevalence), age_range=[float(a) for a in age_range])
    params = SynthParams.from_dict(base)
    params.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    templates()  # build once before forking workers

    jobs = [(str(out), int(seed), i, params.to_dict()) for i in range(int(n))]
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="synth cohort", unit="subj", disable=not progress)
    rows: list[dict] = []
    if n_jobs <= 1:
        for job in jobs:
            rows.append(_write_subject(job))
            bar.update()
    else:
        with _pool(int(n_jobs)) as pool:
            for info in pool.map(_write_subject, jobs, chunksize=4):
                rows.append(info)
                bar.update()
    bar.close()

    wall = time.perf_counter() - t0
    cpu = [r.pop("_cpu_s") for r in rows]
    table = pd.DataFrame(rows)
    _write_tsv(table[_PARTICIPANT_COLUMNS], out / "participants.tsv")
    (out / "participants.json").write_text(json.dumps(_PARTICIPANTS_JSON, indent=2))
    description = {
        "Name": f"slicelib synthetic T1 cohort (seed {seed}, n {n})",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0 (generated from the MNI152 2009 templates shipped with nilearn)",
        "GeneratedBy": [
            {
                "Name": "slicelib.synth",
                "Version": str(GENERATOR_VERSION),
                "Description": __doc__.splitlines()[0],
            }
        ],
        "slicelib_synth": {"seed": int(seed), "n": int(n), "params": params.to_dict()},
    }
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2))

    gt = out / "derivatives" / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    for name, arr in effect_maps(params).items():
        _save_nifti(_nifti(arr, np.float32, f"slicelib.synth {name}"), gt / f"{name}.nii.gz")
    (gt / "effect_maps.json").write_text(json.dumps(_EFFECT_MAPS_JSON, indent=2))
    _write_tsv(table, gt / "subjects.tsv")
    timing = {
        "n": int(n),
        "n_jobs": int(n_jobs),
        "wall_s": wall,
        "subjects_per_s": int(n) / wall,
        "cpu_s_per_subject": float(np.mean(cpu)),
        "note": "wall time includes writing; cpu_s_per_subject is generation + gzip per subject",
    }
    (gt / "generation.json").write_text(json.dumps(timing, indent=2))
    return out / "participants.tsv"


_PARTICIPANTS_JSON = {
    "age": {"Description": "age at scan", "Units": "years"},
    "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
    "diagnosis": {"Description": "diagnosis", "Levels": {"CN": "control", "AD": "Alzheimer's"}},
    "ad": {"Description": "1 if diagnosis is AD else 0"},
}

_EFFECT_MAPS_JSON = {
    "space": "MNI152 2 mm model grid (91, 109, 91), RAS; subjects are warped a few mm from it",
    "age_effect": "|d intensity / d age| between 30 and 80 years, fraction of WM intensity per year",
    "ad_effect": "|intensity(AD) - intensity(CN)| at 70 years, mean severity, fraction of WM",
    "subjects.tsv": "hidden variables (brain_age_gap in years, ad_severity as local GM-loss "
    "fraction) and true template-space volumes in ml before warping, noise and bias",
}


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, sep="\t", index=False))
