"""Synthetic T1 cohort with known ground truth: the offline default dataset of slicelib.

Every subject is generated from the MNI152 templates that ship inside nilearn (no download),
resampled once to the model grid (FSL MNI152 2 mm, shape (91, 109, 91), RAS affine) by
:mod:`slicelib.templates`.

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
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.special import expit

from slicelib.templates import (
    _AFFINE,
    _SHAPE,
    _VOXEL_ML,
    Templates,
    _mm_grid,  # noqa: F401 - benchmarks/synth_qa.py imports it here
    templates,
)
from slicelib.utils import atomic_write, run_parallel

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

# Bumped whenever the generative model changes, so cached cohorts are remade, not reused.
GENERATOR_VERSION = 2


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
    override the fields of ``params``. ``n_jobs`` worker processes (1: in this process;
    :func:`slicelib.utils.run_parallel`: spawned, each builds :func:`templates` once, ~2 s).
    Speed: about 0.33 CPU s per subject (generation + gzip writing), i.e. about 6 subjects/s on
    2 idle cores; the timing is saved in ``derivatives/ground_truth/generation.json``.
    """
    if int(n) < 1:
        raise ValueError(f"n={n}: the cohort needs at least one subject")
    base = params.to_dict() if params is not None else SynthParams().to_dict()
    base.update(ad_prevalence=float(ad_prevalence), age_range=[float(a) for a in age_range])
    params = SynthParams.from_dict(base)
    params.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    templates()  # build (or read) once here: effect_maps below needs them too

    jobs = [(str(out), int(seed), i, params.to_dict()) for i in range(int(n))]
    t0 = time.perf_counter()
    rows = run_parallel(
        _write_subject, jobs, int(n_jobs), desc="synth cohort", unit="subj", progress=progress
    )

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
