"""Quality control of preprocessed scans: does the input look like a T1 brain registered to MNI?

Measures (:func:`measures`, one dict per scan):
    ncc: Pearson correlation of the preprocessed brain with nilearn's MNI152 T1 template inside
        the template's brain mask, on the grid (low: failed registration, not a T1, not a brain).
    wm_gm: mean intensity (z units) in the template's white matter (probability > 0.5) minus
        that in its grey matter, inside the brain mask (T1: WM brighter, > 0; inverted or T2: < 0).
    brain_ml: brain-mask volume in the native scan, ml.
    inside: fraction of the (registered) brain volume that lies inside the grid.
    scale: native / MNI volume ratio of the affine (det of the transform); 0.6 - 0.85 for the
        IXI adults (the MNI152 brain is larger than an average brain).
    n_unique: distinct intensity values of the raw input (binary masks 2, label maps < ~300;
        the 8-bit IXI heads up to 256, so it only flags very few values).
    slice_ratio: the input's thickest voxel edge over the model grid's voxel edge (mm / mm):
        slices thicker than the grid's voxels blur the brain in a way no training head was;
        in the consistency benchmark (benchmarks/results/consistency*) 5.5 mm slices on the
        4 mm grid (ratio 1.375) moved predicted age by 7-25 years with every other measure ok.
        Bound <= 1.25; the 142 shared IXI-HH heads (2 mm) are at 0.5, 1 mm heads at 0.25.
    coverage: share of the template's brain (nilearn's MNI152 brain mask on the grid, > 0.5)
        covered by the registered brain mask: a partial field of view (a scan that misses the
        cerebellum and temporal lobes) covers too little of it, while NCC may still pass.

Thresholds per preprocessing method (:data:`THRESHOLDS`; ``None``: the measure does not apply).

"register" (the default pipeline): from measurements with the default PipelineConfig on the
2 mm grid (``python benchmarks/realscan.py --jobs 2 --limit 48``, results in
benchmarks/results/realscan.csv; the bad inputs in ``tests/test_qc.py``):

    ================  ============  ==========  ==========  ===========  ========
    input             ncc           wm_gm       brain_ml    scale        n_unique
    ================  ============  ==========  ==========  ===========  ========
    48 IXI-HH heads   0.46 - 0.60   0.65 - 0.78 1180 - 1738 0.58 - 0.84  186 - 244
    3 synthetic       0.49 - 0.66   0.76 - 0.99 1915 - 1958 1 (MNI hdr)  235 - 256
    inverted head     -0.02         -0.14       2013        0.67         240
    binary mask       0.17          0.09        1656        0.81         2
    DLMUSE labels     -0.04         -0.15       1754        0.65         149
    ================  ============  ==========  ==========  ===========  ========

(inside >= 0.991 for all heads). A constant image is an error before any step. The bounds
sit about halfway between the real heads and the bad inputs: ncc 0.30, wm_gm 0.30; the others
are plausibility ranges with a wide margin (brain 700 - 2500 ml, scale 0.4 - 1.6, >= 20
distinct values, >= 95 % of the brain inside the grid).

Coverage and the other methods, 4 mm grid (``grid(4.0)``), the first heads of
``$SLICELIB_SHARED/data/ixi_hh_2mm/t1`` in name order; "half": the head with every voxel below
mid-height (scanner z) zeroed (``tests/test_qc.py::_half``); resample: the first 20 brains of
``data/ixi_hh_4mm`` (MNI space). Per head: ``run_pipeline(path, PipelineConfig(threads=1),
*grid(4.0)).qc`` (register) and ``preprocess(path, PreprocessConfig(volume_shape=(45, 54, 45),
voxel_size=4.0, method=m), return_info=True)[2]["qc"]`` (translate, resample):

    ==========  =============  ===========  ============  ============  ===========
    method      input          ncc          wm_gm         coverage      brain_ml
    ==========  =============  ===========  ============  ============  ===========
    register    16 heads       0.53 - 0.60  0.69 - 0.78   0.988 - 0.995 1208 - 1738
    register    5 half heads   0.26 - 0.39  0.43 - 0.60   0.886 - 0.950  918 - 1409
    resample    20 brains      0.53 - 0.60  0.69 - 0.77   0.987 - 0.994 (n/a)
    resample    20 half brains 0.25 - 0.27  0.71 - 0.84   0.42 - 0.43   (n/a)
    translate   20 heads       0.09 - 0.18  0.27 - 0.42   0.74 - 0.85   1402 - 1609
    translate   20 half heads  0.08 - 0.24  0.33 - 0.51   0.22 - 0.56    420 - 1052
    translate   3 inverted     -0.21 - -0.02 -0.38 - -0.10 0.24 - 1.00   445 - 1885
    translate   3 binary masks 0.16 - 0.17  0.04 - 0.10   0.51 - 0.59    960 - 1105
    translate   3 DLMUSE maps  0.14 - 0.16  -0.18 - -0.08 0.36 - 0.45    682 - 844
    ==========  =============  ===========  ============  ============  ===========

Coverage >= 0.97 for register and resample (halfway between 0.950 and 0.987); half of the
registered half heads keep an NCC above 0.30, so coverage is what flags them. "resample":
the grid's brain mask stands in for the native mask, so ``inside`` and ``brain_ml`` cannot
fire (``None``). "translate" (not aligned voxel by voxel: the register bounds flagged every
head): ncc >= 0.03 (between the inverted heads and the real ones), wm_gm >= 0.18 (between the
binary masks and the real heads), coverage >= 0.65 (between half heads / binary masks and real
heads); binary masks are also caught by n_unique, label maps and inverted heads by wm_gm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slicelib.utils import atomic_write, mni_template

__all__ = ["QC_MODES", "THRESHOLDS", "thresholds", "measures", "qc_status", "qc_figure"]

#: What training and evaluation do with a flagged scan (``TrainConfig.qc``).
QC_MODES = ("warn", "exclude", "off")

_REGISTER: dict[str, tuple[float, float] | None] = {
    "ncc": (0.30, 1.0),
    "wm_gm": (0.30, np.inf),
    "brain_ml": (700.0, 2500.0),
    "inside": (0.95, np.inf),
    "scale": (0.4, 1.6),
    "n_unique": (20, np.inf),
    "coverage": (0.97, np.inf),
    "slice_ratio": (0.0, 1.25),
}
#: Flag a scan when a measure falls outside the bounds of the method that preprocessed it
#: (``None``: the measure does not apply to that method); see the module doc for the data.
THRESHOLDS: dict[str, dict[str, tuple[float, float] | None]] = {
    "register": _REGISTER,
    # the grid's brain mask stands in for the native mask: inside and brain_ml cannot fire
    "resample": {**_REGISTER, "brain_ml": None, "inside": None},
    # not aligned voxel by voxel: NCC and contrast are measured on a translated head
    "translate": {
        **_REGISTER,
        "ncc": (0.03, 1.0),
        "wm_gm": (0.18, np.inf),
        "coverage": (0.65, np.inf),
    },
}
_WHY = {
    "ncc": "low correlation with the MNI152 template (failed registration or not a T1 brain)",
    "wm_gm": "white matter not brighter than grey matter (inverted or not T1 contrast)",
    "brain_ml": "implausible brain volume",
    "inside": "part of the brain lies outside the grid",
    "scale": "implausible scaling in the registration",
    "n_unique": "few distinct intensities (a label map or binary mask?)",
    "coverage": "the brain covers too little of the template's brain (partial field of view?)",
    "slice_ratio": "slices thicker than the model grid's voxels (predictions can shift by years)",
}


def _template(shape, affine, what: str) -> np.ndarray:
    return mni_template(shape, affine, what=what).get_fdata(dtype=np.float32)


def n_unique(data: np.ndarray, max_voxels: int = 2_000_000) -> int:
    """Distinct values of ``data`` (a strided subsample of at most ~max_voxels voxels)."""
    step = max(1, int(np.ceil((data.size / max_voxels) ** (1 / 3))))
    sub = data[::step, ::step, ::step] if data.ndim == 3 else data
    return int(np.unique(sub).size)


def coverage(mask: np.ndarray, template_mask: np.ndarray) -> float:
    """Share of the template's brain covered by a brain mask, both bool (X, Y, Z) on one grid.

    Returns ``|mask & template_mask| / |template_mask|`` in [0, 1] (0 for an empty template).
    A partial field of view (a head cut below the temporal lobes) covers too little of it.
    """
    n = int(np.count_nonzero(template_mask))
    return float(np.count_nonzero(mask & template_mask) / n) if n else 0.0


def measures(result, img=None) -> dict[str, Any]:
    """QC measures of a :class:`slicelib.pipeline.PipelineResult` (see the module doc).

    Args:
        result: the pipeline output (array (X, Y, Z), mask, affine, transform, native_mask).
        img: the loaded input (for ``n_unique`` and ``slice_ratio``); ``None`` leaves them out.
    Returns:
        dict of floats: ncc, wm_gm, brain_ml, inside, scale, coverage (and n_unique,
        slice_ratio).
    """
    shape, affine = result.array.shape, result.affine
    t1 = _template(shape, affine, "t1")
    tmask = _template(shape, affine, "mask") > 0.5
    a = result.array
    ncc = float(np.corrcoef(a[tmask], t1[tmask])[0, 1]) if a[tmask].std() > 0 else 0.0
    wm = (_template(shape, affine, "wm") > 0.5) & result.mask
    gm = (_template(shape, affine, "gm") > 0.5) & result.mask
    wm_gm = float(a[wm].mean() - a[gm].mean()) if wm.any() and gm.any() else float("nan")
    native = np.asarray(result.native_mask.dataobj) > 0
    native_ml = native.sum() * abs(np.linalg.det(result.native_mask.affine[:3, :3])) / 1000
    scale = abs(float(np.linalg.det(result.transform[:3, :3])))
    grid_ml = result.mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000
    out = {
        "ncc": round(ncc, 4),
        "wm_gm": round(wm_gm, 4),
        "brain_ml": round(float(native_ml), 1),
        "inside": round(float(min(1.0, grid_ml * scale / max(native_ml, 1e-6))), 4),
        "scale": round(scale, 4),
        "coverage": round(coverage(result.mask, tmask), 4),
    }
    if img is not None:
        out["n_unique"] = n_unique(np.asarray(img.dataobj))
        grid_mm = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).min())
        out["slice_ratio"] = round(float(max(img.header.get_zooms()[:3])) / grid_mm, 4)
    return out


def thresholds(method: str = "register") -> dict[str, tuple[float, float] | None]:
    """The bounds ``{measure: (low, high) or None}`` of one preprocessing method.

    Raises ValueError naming the method when it is not one of :data:`THRESHOLDS`.
    """
    if method not in THRESHOLDS:
        raise ValueError(
            f"qc: unknown preprocessing method {method!r}; one of {list(THRESHOLDS)} "
            "(old names: pipeline = register, mni = resample, centre = translate)."
        )
    return THRESHOLDS[method]


def qc_status(m: dict[str, Any], method: str = "register") -> tuple[str, list[str]]:
    """``("ok" | "flagged" | "error", reasons)`` from :func:`measures` output.

    Args:
        m: the measures of one scan (missing or ``None`` values are skipped).
        method: the preprocessing method that produced them ("register", "resample",
            "translate"); its :data:`THRESHOLDS` apply, a measure with bound ``None`` is not
            applicable to that method and never fires.
    A dict with an ``"error"`` entry is an error; each measure outside its bounds (or NaN)
    adds a reason such as ``"ncc=0.12 < 0.30: low correlation ..."``.
    """
    reasons = []
    for key, bounds in thresholds(method).items():
        if bounds is None or key not in m or m[key] is None:
            continue
        lo, hi = bounds
        v = float(m[key])
        if np.isnan(v) or v < lo:
            reasons.append(f"{key}={v:.4g} < {lo:g}: {_WHY[key]}")
        elif v > hi:
            reasons.append(f"{key}={v:.4g} > {hi:g}: {_WHY[key]}")
    if m.get("error"):
        return "error", [str(m["error"])] + reasons
    return ("flagged" if reasons else "ok"), reasons


def qc_figure(result, path, status: str = "", reasons=()) -> None:
    """PNG of the preprocessed brain (nilearn plot_anat) with the MNI152 brain outline."""
    import nibabel as nib
    from matplotlib.figure import Figure
    from nilearn import plotting

    img = nib.Nifti1Image(result.array, result.affine)
    title = f"{result.source}: {status}" + (f" ({'; '.join(reasons)})" if reasons else "")
    fig = Figure(figsize=(10, 3.6), facecolor="k")  # not pyplot: the backend stays as it is
    display = plotting.plot_anat(img, figure=fig, cut_coords=(0, -18, 18), dim=0)
    display.add_contours(mni_template(what="mask", resolution=2), levels=[0.5], colors="r")
    fig.suptitle(title[:200], fontsize=8, wrap=True, color="w")  # plot_anat: black background
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
