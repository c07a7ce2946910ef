# %% [markdown]
# # 01 · Brain MRI as data: a real head step by step, the real cohort, and a synthetic one
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/slicelib/slicelib/blob/main/notebooks/01_data.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/slicelib/slicelib/main?labpath=notebooks%2F01_data.ipynb)
#
# This is the first of four notebooks on reading 3D brain MRI with 2D models pretrained on
# natural images, slice by slice (Gupta et al., *Transferring Models Trained on Natural Images
# to 3D MRI via Position Encoded Slice Models*, ISBI 2023). Before any model, we look at the
# data.
#
# **Learning objectives.** After this notebook you can
# - read a NIfTI header (voxel grid, affine, orientation, sform/qform codes) and say in which
#   space a scan is;
# - take a raw T1 head through brain extraction, N4 bias correction and a 12-parameter affine
#   registration to MNI152, one step at a time, and measure each step (mask Dice against a
#   reference parcellation, the bias field, the transform);
# - explain why brain-age work registers with an affine transform and not a nonlinear one;
# - read the quality-control (QC) measures, their thresholds and where those came from, and
#   find the measure that catches a damaged scan;
# - describe the two cohorts the course trains on: 138 real IXI brains in 5 fixed folds, and a
#   synthetic cohort whose effects of age and Alzheimer's disease are known.
#
# **Parts and their time** (`PRESET="cpu"`, 2 CPU cores; the run measures them again and
# prints them at the end):
#
# | part | what | time on 2 idle cores |
# |---|---|---|
# | 1 | one raw IXI head through the pipeline, step by step; QC; 3 exercises | under a minute: deepbet ~3 s, N4 2-5 s, registration 5-10 s |
# | 2 | the real cohort the later notebooks train on (`data/ixi_hh_4mm`) and its folds | seconds |
# | 3 | the synthetic cohort with known answers (made once, reused by notebooks 02-04) | ~35 s the first time (about 6 subjects/s), then seconds |
# | 4 | your own data (a table of files, a BIDS folder, OASIS-1) | seconds |
#
# On a busy machine every step takes several times longer (the step times above are those
# measured in `slicelib.pipeline` and `slicelib.synth`). `PRESET="smoke"` (CI) runs the same steps on a smaller
# synthetic cohort; `PRESET="gpu"` makes a 1000-subject synthetic cohort (nothing here uses the
# GPU).

# %%
# Colab, or this notebook downloaded alone: install slicelib if it is missing (Colab keeps its
# own torch). By name from PyPI; $SLICELIB_PIP overrides what is installed (a wheel, a git URL).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("slicelib") is None:
    SLICELIB_PIP = os.environ.get("SLICELIB_PIP", "slicelib")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", SLICELIB_PIP])

# %% tags=["parameters"]
PRESET = os.environ.get("SLICELIB_PRESET", "cpu")  # "smoke" | "cpu" | "gpu"
SEED = 0

# %% [markdown]
# The preset sets one size: `N_SUBJECTS`, the synthetic cohort's, the same in all four
# notebooks of a preset, so the cohort is generated once and then reused (it lives in
# `$SLICELIB_DATA`, default the user cache folder, `~/.cache/slicelib` on Linux). The real head
# goes through the full pipeline in every preset.

# %%
SIZES = {"smoke": 24, "cpu": 200, "gpu": 1000}
if PRESET not in SIZES:
    raise ValueError(f"PRESET must be one of {list(SIZES)}, got {PRESET!r}")
N_SUBJECTS = SIZES[PRESET]
print(f"preset {PRESET}: {N_SUBJECTS} synthetic subjects")

# %%
import json
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
from IPython.display import Image, Markdown, display
from matplotlib.lines import Line2D
from nilearn import plotting
from scipy.spatial.distance import dice as dice_dissimilarity

from slicelib import qc
from slicelib.course import data_dir, ensure_synthetic_cohort
from slicelib.cv import read_folds
from slicelib.data import DataError, PreprocessConfig, preprocess
from slicelib.datasets import (
    derivative_dir,
    ixi_demo_heads,
    ixi_derivative,
    ixi_table,
    read_table,
    shipped_results,
)
from slicelib.exercises import check
from slicelib.explain import slice_coordinates
from slicelib.io import load_nifti
from slicelib.pipeline import (
    PipelineConfig,
    PipelineError,
    bias_correct,
    extract_brain,
    run_pipeline,
)
from slicelib.plotting import plot_slices
from slicelib.utils import mni_template

plt.rcParams["figure.dpi"] = 80
MNI_MASK = mni_template(what="mask", resolution=2)  # nilearn's MNI152 brain mask, packaged
PART_SECONDS = {}  # wall time of each part, printed at the end
t_part = time.perf_counter()

# %% [markdown]
# ## Part 1 · A raw real head, step by step
#
# The IXI dataset (brain-development.org, CC BY-SA 3.0) holds T1 scans of healthy adults.
# slicelib reads a 2 mm copy of 142 Hammersmith Hospital heads (138 with an age) with
# `slicelib.datasets.ixi_table()`, which looks for a local copy in `$SLICELIB_IXI_DIR`, then in
# `$SLICELIB_SHARED/data/ixi_hh_2mm`, then in the download folder of
# `slicelib.datasets.fetch_ixi()`. Without any of them (on Colab or Binder, say) it uses the two
# raw IXI heads that ship with slicelib (`slicelib.datasets.ixi_demo_heads()`: the labelled
# heads closest to 25 and 70 years; CC BY-SA 3.0). Either way each head comes with its
# **DLMUSE parcellation** (a brain segmented into labelled regions by the NiChart project, in
# the same voxel grid), which we use below as the reference brain.

# %%
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "4 subjects have no age": they are left out
        ixi = ixi_table()
    where = "a local IXI copy"
except DataError:
    ixi = ixi_demo_heads()
    where = "the demo heads shipped with slicelib (no local IXI copy)"
head = ixi.iloc[0]
print(
    f"{len(ixi)} IXI heads with an age from {where}, {ixi['age'].min():.0f}-"
    f"{ixi['age'].max():.0f} years. We follow {head['participant_id']}, {head['age']:.0f} "
    f"years, sex {head['sex']}."
)

# %% [markdown]
# ### The header: voxels, an affine, an orientation
#
# A NIfTI image is a 3D array of voxel values plus a 4 x 4 **affine** that maps a voxel index
# (i, j, k) to a position in millimetres (x, y, z) in a world coordinate system. nibabel reads
# both. `nib.aff2axcodes` names the direction each array axis points to (R/L, A/P, S/I); the
# **sform and qform codes** say which world the affine refers to: 1 = the scanner's own
# coordinates, 4 = MNI152 space. A scan whose header declares MNI (code 4) skips the
# registration below; any other code means "not aligned to a template yet".

# %%
raw = nib.load(head["path"])
hdr = raw.header
print(f"file:        {Path(head['path']).name}")
print(f"shape:       {raw.shape} voxels, stored as {raw.get_data_dtype()}")
print(f"voxel size:  {tuple(round(float(z), 2) for z in hdr.get_zooms())} mm")
print(f"orientation: {nib.aff2axcodes(raw.affine)} (where array axes 0, 1, 2 point)")
print(f"sform code:  {int(hdr['sform_code'])}, qform code: {int(hdr['qform_code'])}")
print("affine (voxel index -> mm):")
print(np.round(raw.affine, 2))

# %% [markdown]
# What to look for: the array is stored in the scanner's order (for these IXI heads the first
# axis runs towards posterior, the second towards superior, the third towards the right: not
# the RAS order of MNI space), and neither code is 4, so the head is in scanner space. Tools
# that index the array directly (`vol[:, :, k]`) would cut it in the wrong plane; nilearn and
# slicelib's pipeline read the affine and reorient first.
#
# Browse it: nilearn's `view_img` draws an interactive viewer (click to move the cross-hair;
# it also works in the exported HTML). The neck, the skull and the scalp are all there.

# %%
display(
    plotting.view_img(
        raw, bg_img=False, cmap="gray", symmetric_cmap=False, vmin=0, threshold=None,
        black_bg=True, dim=0, title=f"raw head {head['participant_id']} (scanner space)",
    )
)  # fmt: skip

# %% [markdown]
# ### The pipeline, one step at a time
#
# `slicelib.pipeline.run_pipeline` chains five steps (each choice is in `PipelineConfig` and
# ends up in a trained model's checkpoint, so prediction repeats it exactly). Here we call the
# library's function for each step ourselves, look at its output and measure it:
#
# 1. **load** (`slicelib.io.load_nifti`): read the file, reject 4D, constant or non-finite
#    images, reorient the array to RAS (the affine changes with it: same head, same world);
# 2. **brain extraction** (`slicelib.pipeline.extract_brain`): deepbet, a network trained on
#    thousands of scans whose weights ship inside its pip package (no download): a brain mask;
# 3. **bias correction** (`slicelib.pipeline.bias_correct`): N4 removes the smooth intensity
#    drift of the receiver coil;
# 4. **registration**: a 12-parameter affine of the extracted brain onto nilearn's MNI152
#    template, then resampling onto the model grid and a z-score inside the brain;
# 5. **quality control** (`slicelib.qc`): does the result look like a registered T1 brain?

# %%
steps = {}  # seconds per step
t0 = time.perf_counter()
img = load_nifti(head["path"])
labels = load_nifti(head["brain_labels"])
steps["load"] = time.perf_counter() - t0
if labels.shape != img.shape or not np.allclose(labels.affine, img.affine, atol=1e-3):
    raise ValueError(f"{head['brain_labels']}: not on the voxel grid of {head['path']}")
reference = np.asarray(labels.dataobj) > 0  # (X, Y, Z) bool: every DLMUSE label is brain
voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000  # one voxel's volume in ml
print(f"after load_nifti: orientation {nib.aff2axcodes(img.affine)}, shape {img.shape}")

# %% [markdown]
# ### Step 2 · Brain extraction, checked against the DLMUSE brain
#
# deepbet returns a boolean mask (X, Y, Z) in the head's own voxel grid. Below, its outline
# (red) and that of the DLMUSE parcellation's brain (cyan) over the head. Both should follow the
# brain's surface: the skull, scalp, eyes and neck outside, the cerebellum and brainstem inside.

# %%
t0 = time.perf_counter()
mask = extract_brain(img)  # (X, Y, Z) bool
steps["brain extraction (deepbet)"] = time.perf_counter() - t0
d = plotting.plot_anat(
    img, display_mode="ortho", dim=-0.5, draw_cross=False,
    title=f"{head['participant_id']}: brain masks over the head (scanner space, RAS)",
)  # fmt: skip
d.add_contours(nib.Nifti1Image(mask.astype(np.uint8), img.affine), levels=[0.5], colors="r")
d.add_contours(nib.Nifti1Image(reference.astype(np.uint8), img.affine), levels=[0.5], colors="c")
d.frame_axes.figure.legend(
    handles=[Line2D([], [], color="r", label="deepbet mask"),
             Line2D([], [], color="c", label="DLMUSE brain (label > 0)")],
    loc="lower right", fontsize="small",
)  # fmt: skip
plt.show()
print(
    f"brain volume: deepbet {mask.sum() * voxel_ml:.0f} ml, DLMUSE {reference.sum() * voxel_ml:.0f} ml"
)

# %% [markdown]
# **Predict:** how well do the two masks agree? The **Dice coefficient**
# 2 |A ∩ B| / (|A| + |B|) is 1 for identical masks and 0 for disjoint ones. Two good brain
# masks of a 2 mm head disagree only in a thin shell along the surface, but a brain is mostly
# near its surface at 2 mm. Write down your guess (above 0.95? below 0.9?), then compute it.

# %% tags=["solution"]
# Exercise 1.1: compute the Dice coefficient of `mask` (deepbet) and `reference` (DLMUSE).
# BEGIN SOLUTION
answer = 2 * np.count_nonzero(mask & reference) / (mask.sum() + reference.sum())
# END SOLUTION
# STUDENT: answer = ...  # Dice of the two (X, Y, Z) boolean masks, a number in [0, 1]
check("01.mask_dice", answer, mask=mask, reference=reference)

# %% [markdown]
# **What to look for.** Dice counts agreement relative to the masks' size, not to the whole
# image: the background both masks leave out earns nothing (counting it would make any two
# masks look excellent). Note where the disagreement sits: the next cell splits it into the
# voxels only deepbet calls brain and those only DLMUSE does.

# %%
only_deepbet, only_dlmuse = mask & ~reference, reference & ~mask
mask_dice = 1 - dice_dissimilarity(mask.ravel(), reference.ravel())  # scipy's Dice
display(Markdown(
    f"Dice (scipy) = **{mask_dice:.3f}**. Voxels only deepbet calls brain: "
    f"{only_deepbet.sum() * voxel_ml:.0f} ml; only DLMUSE: {only_dlmuse.sum() * voxel_ml:.0f} ml "
    f"(of {reference.sum() * voxel_ml:.0f} ml). The two references were made by different "
    "methods, so neither is the truth: a Dice near 1 says deepbet draws the brain's border where "
    "an independent segmentation does, within a voxel or so."
))  # fmt: skip

# %% [markdown]
# ### Step 3 · N4 bias-field correction, before and after
#
# The receiver coil's sensitivity falls off with distance, so the same tissue is brighter in
# one part of the head than another: a smooth multiplicative **bias field**. N4 estimates it
# inside the brain mask as a smooth (B-spline) field that makes the intensity histogram
# sharpest, and divides it out. `bias_correct` works on SimpleITK images, which carry their own
# geometry; SimpleITK reads it from the NIfTI files we write here. The estimated field is the
# ratio of the brain before and after correction.

# %%
data = np.asarray(img.dataobj, dtype=np.float32)  # (X, Y, Z), scanner intensity units
brain = np.where(mask, data, 0).astype(np.float32)
with tempfile.TemporaryDirectory() as tmp:
    nib.save(nib.Nifti1Image(brain, img.affine), f"{tmp}/brain.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine), f"{tmp}/mask.nii.gz")
    brain_itk = sitk.ReadImage(f"{tmp}/brain.nii.gz", sitk.sitkFloat32)
    mask_itk = sitk.ReadImage(f"{tmp}/mask.nii.gz", sitk.sitkUInt8)
t0 = time.perf_counter()
corrected = sitk.GetArrayFromImage(bias_correct(brain_itk, mask_itk)).T  # back to (X, Y, Z)
steps["bias correction (N4)"] = time.perf_counter() - t0
corrected = np.where(mask, corrected, 0).astype(np.float32)
field = np.where(mask & (corrected > 0), brain / np.maximum(corrected, 1e-6), np.nan)
field = field / np.nanmedian(field)  # (X, Y, Z) multiplicative field, 1 = the brain's median
lo_f, hi_f = np.nanpercentile(field, [1, 99])
print(f"estimated field inside the brain: {lo_f:.2f} to {hi_f:.2f} of its median (1st-99th pct)")

# %%
k = int(np.argmax(mask.sum(axis=(0, 1))))  # the axial slice with the most brain
fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), layout="constrained")
vmax = np.percentile(brain[mask], 99.5)
for ax, (vol, what, cmap, lim) in zip(axes[:3], [
    (brain, "before N4 (scanner units)", "gray", (0, vmax)),
    (field, "estimated bias field (/ its median)", "coolwarm", (lo_f, hi_f)),
    (corrected, "after N4 (scanner units)", "gray", (0, vmax)),
]):  # fmt: skip
    im = ax.imshow(np.rot90(vol[:, :, k]), cmap=cmap, vmin=lim[0], vmax=lim[1])
    ax.set_title(what)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.8)
bright_cv = {}  # spread of the brightest 30 % of brain voxels (mostly white matter)
for vol, what in [(brain, "before N4"), (corrected, "after N4")]:
    x = vol[mask] / np.median(vol[mask])  # brain intensities relative to their median
    top = x[x > np.percentile(x, 70)]
    bright_cv[what] = float(top.std() / top.mean())
    axes[3].hist(x, bins=np.linspace(0, 2, 51), histtype="step", density=True, label=what)
axes[3].set(xlabel="intensity / the brain's median", ylabel="voxel density (histogram area 1)",
            title="brain intensity histogram")  # fmt: skip
axes[3].legend()
fig.suptitle(f"{head['participant_id']}, axial slice {k}: N4 bias correction")
plt.show()

# %% [markdown]
# N4 models the field as smooth, so it can only remove slow drifts, not anatomy. Its objective
# is a sharper histogram: the same tissue should have the same intensity wherever it lies.

# %%
display(Markdown(
    f"The estimated field spans {lo_f:.2f} to {hi_f:.2f} times its median inside the brain "
    f"(1st-99th percentile). The brightest 30 % of the brain's voxels (mostly white matter, the "
    f"brightest tissue in T1) vary with a coefficient of variation of "
    f"{bright_cv['before N4']:.3f} before and **{bright_cv['after N4']:.3f}** after N4: on the "
    "right, the white-matter peak of the histogram "
    + ("narrows." if bright_cv["after N4"] < bright_cv["before N4"] else "does not narrow here.")
))  # fmt: skip

# %% [markdown]
# ### Step 4 · Affine registration to MNI152
#
# Registration finds the transform that moves this brain onto the MNI152 template, so that
# voxel (i, j, k) means the same anatomy in every subject: that is what makes slice k of one
# brain comparable to slice k of another. We give `run_pipeline` the corrected brain and tell it
# that steps 2 and 3 are done (`brain_extraction="none"`: the non-zero voxels are the brain;
# `bias_correct=False`); it then registers (Mattes mutual information, 3 resolution levels),
# resamples onto the FSL MNI152 2 mm grid (91 x 109 x 91) and z-scores inside the brain.
#
# **Why affine and not nonlinear?** An affine transform has 12 parameters: 3 translations, 3
# rotations, 3 scalings and 3 shears. It lines up position, orientation and overall size, but
# it cannot change the brain's *shape*. A nonlinear warp (thousands to millions of parameters) would also
# shrink the ventricles and fill the widened sulci of an old brain until it looked like the
# template: it would remove the atrophy that a brain-age model must see. (Voxel-based
# morphometry keeps that information in the warp's Jacobian; a model that reads only the
# image cannot.)

# %%
brain_img = nib.Nifti1Image(corrected, img.affine)
t0 = time.perf_counter()
result = run_pipeline(brain_img, PipelineConfig(brain_extraction="none", bias_correct=False))
steps["registration + resampling"] = time.perf_counter() - t0
transform = result.transform  # (4, 4): MNI mm -> native mm (RAS)
stretch = np.linalg.svd(transform[:3, :3], compute_uv=False)  # the scalings along 3 axes
print(f"registration: {result.registration}; transform (MNI mm -> this head's mm):")
print(np.round(transform, 3))
print(
    f"stretch factors {np.round(stretch, 3)}, volume ratio native/MNI = det = "
    f"{abs(np.linalg.det(transform[:3, :3])):.3f}; translation {np.round(transform[:3, 3], 1)} mm"
)

# %% [markdown]
# The matrix maps a point of MNI space to the same anatomy in this head. Its upper-left 3 x 3
# block holds rotation, scaling and shear; its singular values are the stretch along three
# axes, and their product (the determinant) is the volume ratio, between about 0.6 and 0.85
# for IXI adults (measured in `slicelib.qc`): the MNI152 template is larger than an average
# adult brain. The last column is the translation in mm.
#
# Top: the extracted brain where the scanner put it, with the MNI152 brain outline (red) drawn
# at the same world coordinates. Bottom: the registered result on the model grid, which should
# fill the outline.

# %%
out_img = nib.Nifti1Image(result.array, result.affine)
fig, axes = plt.subplots(2, 1, figsize=(10, 7))
for ax, im, what in [
    (axes[0], brain_img, "corrected brain, scanner space (scanner units)"),
    (axes[1], out_img, f"model grid, registration: {result.registration} (z-score)"),
]:
    d = plotting.plot_anat(
        im, axes=ax, cut_coords=(0, -18, 18), dim=-0.3, title=what, draw_cross=False
    )
    d.add_contours(MNI_MASK, levels=[0.5], colors="r", linewidths=1)
plt.show()
display(pd.Series(steps, name="seconds").round(1).to_frame().T)

# %% [markdown]
# The table gives the seconds of each step in this run. On two idle cores `slicelib.pipeline`
# measured about 3 s for deepbet, 2-5 s for N4 and 5-10 s for the registration; a busy machine
# takes several times longer.
#
# ### Step 5 · Quality control: does the result look like a registered T1 brain?
#
# A model trained on registered T1 brains answers something for *any* array it is given: a
# mask, an inverted image, a failed registration. `slicelib.qc` measures the result and flags
# it when a measure leaves the range measured on real heads: `ncc` (correlation with the MNI152
# template inside its brain mask), `wm_gm` (white matter brighter than grey matter, in z
# units), `brain_ml`, `inside` (fraction of the brain inside the grid), `scale` (the volume
# change of the registration: the determinant above), `n_unique` (distinct intensities of the
# input: a label map has few) and `coverage` (the share of the template's brain the registered
# brain covers: a scan that missed the cerebellum falls short).

# %%
result.qc["n_unique"] = qc.n_unique(data)  # of the raw head (the pipeline saw the brain only)
status, reasons = qc.qc_status(result.qc)
bounds = pd.DataFrame(qc.thresholds("register"), index=["lower bound", "upper bound"]).T
display(bounds.assign(value=pd.Series(result.qc)))
print(f"QC status: {status}" + "".join(f"\n  - {r}" for r in reasons))

# %% [markdown]
# **Where the thresholds come from.** They were not guessed: the `slicelib.qc` module measured
# 48 real IXI heads with the default pipeline and a set of bad inputs (an inverted head, a
# binary mask, a label map, heads with half the field of view missing), and put each bound
# about halfway between the real heads and the bad inputs; the bounds differ per preprocessing
# method (`qc.THRESHOLDS`; `None`: the measure does not apply). The measurements, from the
# module's documentation:

# %%
doc = qc.__doc__ or ""
rules = [i for i, line in enumerate(doc.splitlines()) if set(line.strip()) == {"=", " "}]
if len(rules) >= 3:  # the first table of the docstring (its rule lines are "=== ===")
    print("\n".join(doc.splitlines()[rules[0] : rules[2] + 1]))
display(pd.DataFrame({m: {k: b for k, b in t.items()} for m, t in qc.THRESHOLDS.items()}))

# %% [markdown]
# The QC figure that `slicelib qc` writes for every scan (`slicelib.qc.qc_figure`): the
# preprocessed brain with the MNI152 brain outline, the status in the title.

# %%
qc.qc_figure(result, "qc_real_head.png", status, reasons)  # written in the working folder
display(Image("qc_real_head.png"))

# %% [markdown]
# ### Without registration
#
# When no registration is possible (no brain extraction model, a scan too odd to register),
# slicelib's fallback is `PreprocessConfig(method="translate")`: it only shifts the head so that
# it sits centred on the grid, without skull stripping, rotation or scaling.
#
# **Predict:** will the translated head's `ncc` with the template be higher or lower than the
# registered brain's, and by a little or a lot? Think of what is still in the image (skull,
# scalp, neck) and what still differs (tilt, size).

# %% tags=["solution"]
# Exercise 1.2: preprocess the raw head with method "translate"; answer with its QC "ncc".
# BEGIN SOLUTION
_, _, info_translate = preprocess(
    head["path"], PreprocessConfig(method="translate"), return_info=True
)
answer = info_translate["qc"]["ncc"]
# END SOLUTION
# STUDENT: answer = ...  # the "ncc" of preprocess(..., return_info=True)[2]["qc"]
check("01.ncc_without_registration", answer, ncc_on=result.qc["ncc"])

# %% [markdown]
# **What to look for.** The NCC compares the image with the template voxel by voxel inside the
# template's brain. Without registration the skull and scalp sit where the template has cortex
# and the brain keeps its own size and tilt, so the correlation collapses. This is why
# `qc.thresholds("translate")` has much lower NCC and coverage bounds than "register": the
# same bound would flag every translated head.
#
# ### What a failed QC looks like
#
# Some inputs fail before any step: a constant image raises a clear error naming the file.

# %%
nib.save(nib.Nifti1Image(np.full((40, 40, 40), 7.0, np.float32), np.eye(4)), "constant.nii.gz")
try:
    run_pipeline("constant.nii.gz")
except (DataError, PipelineError) as err:
    print(f"{type(err).__name__}: {err}")

# %% [markdown]
# Others run through every step and produce a plausible-looking array. We damage the same head
# in two ways and preprocess each with the cheap "translate" method: its intensities inverted
# (bright CSF, dark white matter, as in a T2-weighted scan), and its lower half blanked (every
# voxel below mid-height set to 0: a scan whose field of view missed the cerebellum and the
# temporal lobes). A model would read both without complaint; QC must not.

# %%
z_world = nib.affines.apply_affine(img.affine, np.indices(data.shape).reshape(3, -1).T)[:, 2]
z_world = z_world.reshape(data.shape)  # (X, Y, Z) height of each voxel in mm
damaged = {
    "intact": data,
    "inverted": data.max() - data,
    "lower half blanked": np.where(z_world < (z_world.min() + z_world.max()) / 2, 0, data),
}
translated = {
    name: preprocess(
        nib.Nifti1Image(d, img.affine), PreprocessConfig(method="translate"), return_info=True
    )  # fmt: skip
    for name, d in damaged.items()
}
half_qc = translated["lower half blanked"][2]["qc"]
measured = pd.DataFrame({name: info["qc"] for name, (_, _, info) in translated.items()}).T
display(measured.drop(columns=["scale", "inside"]))
display(pd.DataFrame(qc.thresholds("translate"), index=["lower", "upper"]).drop(
    columns=["scale", "inside"]))  # fmt: skip

# %% [markdown]
# **Predict:** which measure flags the head with its lower half missing? The NCC (less of the
# head to match)? `brain_ml`? `coverage`? Decide before comparing the table with the bounds.

# %% tags=["solution"]
# Exercise 1.3: name a QC measure of `half_qc` that lies outside qc.thresholds("translate").
# BEGIN SOLUTION
answer = next(
    name
    for name, b in qc.thresholds("translate").items()
    if b is not None and name in half_qc and not b[0] <= half_qc[name] <= b[1]
)
# END SOLUTION
# STUDENT: answer = ...  # a measure name such as "ncc", as a string
check("01.qc_flag_damaged_head", answer, measures=half_qc, bounds=qc.thresholds("translate"))

# %% [markdown]
# **What to look for.** A missing half does not make the image look less like a brain: the
# upper half of a head may even correlate *better* with the template than the whole translated
# head, because the skull base and neck are gone. Only a measure of *how much* of the template's
# brain the scan covers catches it. Each damage has its own measure, which is why QC reports the
# reasons and not just a status:

# %%
fig, axes = plt.subplots(len(translated), 1, figsize=(10, 3.2 * len(translated)))
for ax, (name, (vol, aff, info)) in zip(axes, translated.items()):
    why = ", ".join(r.split("=")[0] for r in info["reasons"]) or "none"
    d = plotting.plot_anat(
        nib.Nifti1Image(vol, aff), axes=ax, cut_coords=(0, -18, 18), dim=-0.3,
        draw_cross=False, title=f"{name}, translate: {info['status']} (out of bounds: {why})",
    )  # fmt: skip
    d.add_contours(MNI_MASK, levels=[0.5], colors="r", linewidths=1)
plt.show()

# %% [markdown]
# `slicelib predict` runs these checks on every scan and writes `qc` and `qc_reasons` columns
# beside the prediction, so a flagged scan is never reported as a normal prediction;
# `slicelib qc SCAN... --out DIR` writes the table and one figure per scan.

# %%
PART_SECONDS["1 · a raw head, step by step"] = time.perf_counter() - t_part
t_part = time.perf_counter()

# %% [markdown]
# ## Part 2 · The real cohort of notebooks 02-04: `data/ixi_hh_4mm`
#
# Notebooks 02-04 train on real heads, but running the pipeline above on every head each time
# would take most of a lab session. So the repository ships its output once: the 138 IXI heads
# with an age, each taken through the default pipeline of part 1 (deepbet, N4, 12-dof
# affine to MNI152) and resampled onto a coarser **4 mm grid** (45 x 54 x 45 voxels), stored as
# skull-stripped brains in MNI space (header code 4, so they are not registered again). The
# folder's README says how they were made; `pipeline.json` holds the configuration used.
# `slicelib.datasets.ixi_derivative()` reads its table.

# %%
deriv = ixi_derivative()  # the checkout's data/ixi_hh_4mm, or the installed wheel's copy
folds = read_folds(derivative_dir() / "folds.tsv")
made_with = json.loads((derivative_dir() / "pipeline.json").read_text())["pipeline"]
deriv = deriv.merge(folds[["participant_id", "fold"]], on="participant_id", validate="1:1")
print(f"{len(deriv)} brains, ages {deriv['age'].min():.0f}-{deriv['age'].max():.0f} years, "
      f"{(deriv['sex'] == 'F').mean():.0%} women; QC: {deriv['qc'].value_counts().to_dict()}")  # fmt: skip
print("made with PipelineConfig", {k: v for k, v in made_with.items() if k != "version"})

# %% [markdown]
# **The folds.** Every real-data comparison in the course uses the same five subject-level
# folds (`folds.tsv`, `slicelib.cv.read_folds`): fold k is predicted by a model fitted on the
# other four only, and a subject is never in two folds. They are stratified by age and sex, so
# each fold spans the whole age range:

# %%
per_fold = deriv.groupby("fold").agg(
    subjects=("age", "size"), mean_age=("age", "mean"), min_age=("age", "min"),
    max_age=("age", "max"), women=("sex", lambda s: (s == "F").mean()),
).round({"mean_age": 1, "min_age": 0, "max_age": 0, "women": 2})  # fmt: skip
display(per_fold)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
axes[0].boxplot([deriv.loc[deriv["fold"] == f, "age"] for f in per_fold.index])
axes[0].set_xticks(range(1, len(per_fold) + 1), [str(f) for f in per_fold.index])
axes[0].set(xlabel="fold", ylabel="age (years)", title="Age per fold (stratified by age and sex)")
axes[1].hist(deriv["ncc"], bins=20, color="C0", label=f"{len(deriv)} IXI brains")
ncc_lo = qc.thresholds("register")["ncc"][0]
axes[1].axvline(ncc_lo, color="r", ls="--", label=f"QC lower bound ({ncc_lo:g})")
own = deriv.loc[deriv["participant_id"] == head["participant_id"], "ncc"]
if len(own):
    axes[1].axvline(float(own.iloc[0]), color="k", label=f"{head['participant_id']} (part 1)")
axes[1].set(xlabel="NCC with the MNI152 template (4 mm grid)", ylabel="brains",
            title="Registration quality of the shipped brains")  # fmt: skip
axes[1].legend(fontsize="small")
plt.show()

# %% [markdown]
# The NCC of every shipped brain lies far above the QC bound: the bound is there for broken
# inputs, not to trim the tail of good ones. Here is one shipped brain on its 4 mm grid (the
# head of part 1 when it is among them): what the models of notebooks 02-04 read.

# %%
row = deriv.set_index("participant_id").loc[
    head["participant_id"] if head["participant_id"] in set(deriv["participant_id"])
    else deriv["participant_id"].iloc[0]
]  # fmt: skip
shipped = nib.load(row["path"])
print(f"{row.name}: shape {shipped.shape}, voxel {tuple(float(z) for z in shipped.header.get_zooms())} mm, "
      f"sform code {int(shipped.header['sform_code'])}, age {row['age']:.0f}, fold {row['fold']}")  # fmt: skip
d = plotting.plot_anat(shipped, cut_coords=(0, -18, 18), dim=-0.3, draw_cross=False,
                       title=f"{row.name}, shipped 4 mm brain (stored intensity)")  # fmt: skip
d.add_contours(MNI_MASK, levels=[0.5], colors="r", linewidths=1)
plt.show()

# %% [markdown]
# What a model of these brains can reach is measured once for the whole course: the full
# 5-fold cross-validation of the classical baselines and of frozen ImageNet features, shipped
# with the repository (`slicelib.datasets.shipped_results("ixi_cv_frozen")`, not run here).
# Notebook 02 puts its own, budget-limited runs beside these numbers.

# %%
summary = pd.read_csv(shipped_results("ixi_cv_frozen") / "summary.csv")
display(
    summary[["arm", "n", "mae", "mae_lo", "mae_hi", "r"]]
    .rename(columns={"mae": "MAE (years)", "mae_lo": "95% CI low", "mae_hi": "95% CI high"})
    .round(2)
)
PART_SECONDS["2 · the real cohort (ixi_hh_4mm)"] = time.perf_counter() - t_part
t_part = time.perf_counter()

# ## Part 3 · The synthetic cohort
#
# Real scans come without ground truth: nobody knows which voxels an age or a disease changed.
# So the course also uses a synthetic cohort whose generative model is known.
# `ensure_synthetic_cohort` writes it once as a BIDS-like folder
# (`sub-XXXX/anat/sub-XXXX_T1w.nii.gz`, `participants.tsv`) and returns the folder; a second
# call, from this or another notebook, finds it complete and returns at once. The generator's
# parameters (`slicelib.synth.SynthParams`) are stored in its `dataset_description.json`.

# %%
t0 = time.perf_counter()
cohort = ensure_synthetic_cohort(N_SUBJECTS, seed=SEED)
print(f"cohort ready in {time.perf_counter() - t0:.0f} s: {cohort.name}")
participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
truth = pd.read_csv(cohort / "derivatives" / "ground_truth" / "subjects.tsv", sep="\t")
synth = json.loads((cohort / "dataset_description.json").read_text())["slicelib_synth"]
params = synth["params"]
display(pd.Series({k: str(v) for k, v in params.items()}, name="value").to_frame())

# %% [markdown]
# ### The planted effects, from the parameters above
#
# Each subject is the MNI152 template changed according to its age and diagnosis, then given
# a random pose, a smooth warp (its own anatomy), a bias field, noise and a contrast change.
# The next cell states the effects with the numbers of *this* cohort's parameters.

# %%
gap_sd = truth["brain_age_gap"].std()
display(
    Markdown(f"""
* **Age.** Atrophy follows a *biological* age = age + a subject's brain-age gap drawn from
  N(0, {params["brain_age_gap_sd"]:g}) years (in this cohort its SD is {gap_sd:.1f} years): no model
  can predict age more precisely than that. Cortical grey matter (GM) thins, turning into CSF,
  up to a fraction {params["gm_loss_max"]:g} of the GM at the most affected places at 90 years
  (more frontally, with a random regional pattern of relative SD {params["regional_sd"]:g}); the
  lateral ventricles grow by a dilation radius of up to {params["ventricle_radius_mm"]:g} mm at 90.
* **AD** (expected prevalence {params["ad_prevalence"]:.0%}, more often when old): medial temporal
  atrophy, the pattern radiologists rate with the MTA scale (Scheltens et al., 1992). Each AD
  subject loses a fraction between {params["ad_loss"][0]:g} and {params["ad_loss"][1]:g} of the GM of the
  hippocampus, amygdala and parahippocampal gyrus (both sides), and the CSF spaces around them
  (temporal horn, choroidal fissure) widen by about {params["ad_horn_mm"]:g} mm at severity 0.4.
  Locally this is **marked** atrophy, the kind an MTA score of 3-4 describes, not the subtle
  change of early AD; but it is **confined to small regions** (measured below), while ageing
  changes the whole brain.
""")
)

# %%
fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
for dx, colour in [("CN", "C0"), ("AD", "C3")]:
    ages = participants.loc[participants["diagnosis"] == dx, "age"]
    ax.hist(
        ages, bins=np.arange(20, 95, 5), alpha=0.6, color=colour, label=f"{dx} (n = {len(ages)})"
    )
ax.set(xlabel="age (years)", ylabel="subjects")
ax.set_title(f"Synthetic cohort: {len(participants)} subjects, ages and diagnoses")
ax.legend()
plt.show()

# %% [markdown]
# AD is more frequent in older subjects, as in real cohorts, so age and AD are confounded: a
# classifier could partly detect AD from age-related atrophy. Keep this in mind for notebook 04.
#
# ### One synthetic subject: already in MNI space
#
# The synthetic images are written on slicelib's model grid (the FSL MNI152 2 mm grid,
# 91 x 109 x 91, RAS) with a header that declares MNI space (code 4), so the pipeline does not
# register them again. Compare with the raw head above.

# %%
first = participants.iloc[0]
t1_path = cohort / first["participant_id"] / "anat" / f"{first['participant_id']}_T1w.nii.gz"
sub = nib.load(t1_path)
print(f"{first['participant_id']}: {first['age']:.0f} years, {first['diagnosis']}")
print(f"shape {sub.shape}, voxel size {tuple(float(z) for z in sub.header.get_zooms())} mm")
print(f"orientation {nib.aff2axcodes(sub.affine)}, sform code {int(sub.header['sform_code'])}")
display(
    plotting.view_img(
        sub, bg_img=False, cmap="gray", symmetric_cmap=False, vmin=0, threshold=None,
        black_bg=True, dim=0, cut_coords=(-28, -22, -14),
        title=f"{first['participant_id']}: cross-hair in the left hippocampus",
    )
)  # fmt: skip

# %% [markdown]
# ### A volume is a stack of slices along each axis
#
# A slice model does not see the volume as 3D. It cuts it into all of its 2D slices along one
# axis and sends every slice through the same 2D network, like a batch of photos: 91
# **sagittal** slices (cut along x), 109 **coronal** (along y) or 91 **axial** (along z) on this
# grid. `slicelib.plotting.plot_slices` draws a few of each, titled with the slice index and its
# world position. The edge slices are empty background, which the model must learn to ignore;
# the anatomy changes smoothly from one slice to the next, which is what a *position embedding*
# (notebook 03) lets the model use.

# %%
fig = plot_slices(
    sub, n=8, vmin=0, vmax=200, colorbar_label="T1 intensity (uint8 units)",
    title=f"{first['participant_id']}: 8 slices along each axis (slice index, world position)",
)  # fmt: skip
plt.show()

# %% [markdown]
# ### A young, an old and an old AD subject
#
# The control closest to 25 years, the control closest to 75 and the AD subject closest to 75,
# cut at the same places: a coronal slice through the hippocampi (y = -22 mm) and an axial slice
# through them (z = -14 mm). Expect larger ventricles and wider sulci in the old subjects, and
# in the AD subject a darker hippocampus (less grey matter, more CSF) than in the old control.

# %%
chosen = []
for label, dx, age in [("young CN", "CN", 25), ("old CN", "CN", 75), ("old AD", "AD", 75)]:
    group = participants[participants["diagnosis"] == dx]
    if len(group):
        chosen.append((label, group.loc[(group["age"] - age).abs().idxmin()]))
fig, axes = plt.subplots(2, len(chosen), figsize=(3.6 * len(chosen), 6.4), layout="constrained")
axes = np.asarray(axes).reshape(2, -1)
for col, (label, row) in enumerate(chosen):
    path = cohort / row["participant_id"] / "anat" / f"{row['participant_id']}_T1w.nii.gz"
    cuts = {"coronal": [-22], "axial": [-14]}
    plot_slices(nib.load(path), coords=cuts, ax=axes[:, col], vmin=0, vmax=200,
                title=None, colorbar_label=None)  # fmt: skip
    axes[0, col].set_title(f"{label}: {row['participant_id']}, {row['age']:.0f} y\ny = -22 mm")
fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.6, label="T1 intensity (uint8 units)")
fig.suptitle("Same cuts in three subjects: age widens ventricles and sulci; AD, the hippocampus")
plt.show()

# %% [markdown]
# Single subjects are noisy (each has its own anatomy warp, bias field and contrast), so by eye
# the difference between the old control and the old AD subject shows mostly as the dark CSF
# around the hippocampus (temporal horn) in the coronal cut. That is why the ground truth below
# is also given as maps and group statistics.
#
# ### The ground-truth effect maps
#
# The generator also wrote, in `derivatives/ground_truth/`, how much each voxel's intensity
# changes with age (per year, between 30 and 80) and with AD (at 70 years, mean severity), in
# template space. These maps are the answer key for notebook 04: a model that detects AD
# *should* rely on the slices where the AD map is non-zero.

# %%
gt_dir = cohort / "derivatives" / "ground_truth"
age_map, ad_map = (nib.load(gt_dir / f"{k}_effect.nii.gz") for k in ("age", "ad"))
for name, m, cuts, what in [
    ("age", age_map, (0, -18, 14), "|d intensity / d age| (fraction of WM intensity per year)"),
    ("AD", ad_map, (-28, -20, -15), "|AD - CN| intensity at 70 years (fraction of WM)"),
]:
    d = plotting.plot_stat_map(
        m, display_mode="ortho", cut_coords=cuts, cmap="hot", colorbar=True,
        threshold=0.05 * float(m.get_fdata().max()), title=f"Ground truth, {name}: {what}",
    )  # fmt: skip
plt.show()

# %%
ad = ad_map.get_fdata()
voxel_ml = abs(np.linalg.det(ad_map.affine[:3, :3])) / 1000
ad_ml = (ad > 0.05 * ad.max()).sum() * voxel_ml
age_ml = (age_map.get_fdata() > 0.05 * age_map.get_fdata().max()).sum() * voxel_ml
brain_ml = (MNI_MASK.get_fdata() > 0.5).sum() * abs(np.linalg.det(MNI_MASK.affine[:3, :3])) / 1000
print(f"AD effect above 5 % of its peak:  {ad_ml:6.0f} ml ({ad_ml / brain_ml:.1%} of the brain)")
print(f"age effect above 5 % of its peak: {age_ml:6.0f} ml ({age_ml / brain_ml:.1%} of the brain)")
fig, axes = plt.subplots(1, 3, figsize=(12, 3), layout="constrained")
for a, ax in enumerate(axes):
    profile = ad.sum(axis=tuple(i for i in range(3) if i != a))  # (S,) summed |effect|
    ax.plot(slice_coordinates(ad_map.affine, a, len(profile)), profile, "k")
    ax.set(xlabel=f"{'xyz'[a]} (mm)", ylabel="summed |AD effect| per slice")
    ax.set_title(f"{['sagittal', 'coronal', 'axial'][a]} slices")
fig.suptitle("Ground-truth AD profile along each slicing axis (what notebook 04 compares with)")
plt.show()

# %% [markdown]
# The age effect is spread over the whole cortex and around the ventricles; the AD effect sits
# in the two medial temporal lobes only, which is why a few sagittal slices on each side and a
# narrow band of coronal and axial slices carry it.
#
# ### Tissue volumes against age
#
# `subjects.tsv` also records each subject's true tissue volumes (in template space, before the
# warp, noise and bias). Plotted against age they show the planted effects at the group level.

# %%
VOLUMES = {"ventricle_ml": "ventricle CSF", "gm_ml": "grey matter",
           "hippocampus_gm_ml": "hippocampus + amygdala GM"}  # fmt: skip
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
for ax, (col, what) in zip(axes, VOLUMES.items()):
    for dx, colour in [("CN", "C0"), ("AD", "C3")]:
        m = truth[truth["diagnosis"] == dx]
        ax.scatter(m["age"], m[col], s=12, color=colour, label=f"{dx} (n = {len(m)})")
    ax.set(xlabel="age (years)", ylabel=f"{what} (ml)")
    ax.set_title(f"{what}: r(age) = {np.corrcoef(truth['age'], truth[col])[0, 1]:+.2f}")
    ax.legend(fontsize="small")
fig.suptitle(f"True tissue volumes of all {len(truth)} subjects (generator)")
plt.show()

# %% [markdown]
# The same in numbers: a straight line through the controls gives the average change per
# decade (the ventricles accelerate with age, so it is only an average), and
# the AD subjects' hippocampal volume is compared with what that line predicts at their age
# (age-matched: the hippocampal r(age) above is partly *due to* AD, since AD subjects are
# older on average; this comparison is not).

# %%
cn, ad_rows = truth[truth["diagnosis"] == "CN"], truth[truth["diagnosis"] == "AD"]
slope = {c: 10 * np.polyfit(cn["age"], cn[c], 1)[0] for c in VOLUMES}
fit = np.poly1d(np.polyfit(cn["age"], cn["hippocampus_gm_ml"], 1))
ratio = (ad_rows["hippocampus_gm_ml"] / fit(ad_rows["age"])).median() if len(ad_rows) else np.nan
display(Markdown(f"""
In the controls, per decade of age: ventricles {slope["ventricle_ml"]:+.1f} ml, grey matter
{slope["gm_ml"]:+.0f} ml, hippocampal GM {slope["hippocampus_gm_ml"]:+.2f} ml. The median AD
subject ({len(ad_rows)} of them) keeps **{ratio:.0%}** of the hippocampal GM a control of the same
age has: the planted GM loss plus the tissue taken by the widened CSF around it. Large locally,
small in extent: the AD map covers {ad_ml:.0f} ml, {ad_ml / brain_ml:.1%} of the brain.
{"With the smoke preset these numbers rest on a handful of subjects and mean little."
 if PRESET == "smoke" else ""}
"""))  # fmt: skip

# %% [markdown]
# These are true volumes. A model sees only the images, after the warp, bias field and noise;
# the AD effect is confined to two small regions a few voxels wide on a coarse grid, while
# ageing changes the whole brain: notebooks 02 and 04 show what that means for a model.
#
# ### What the model reads: the preprocessed volume
#
# Every scan a model sees goes through `slicelib.data.preprocess`, the pipeline of part 1 for
# raw heads; a scan whose header declares MNI space, like these, is only resampled and
# z-scored. The course trains on a coarser **4 mm grid** (45 x 54 x 45) on the CPU, because
# every slice is a separate image for the 2D network: about 8 times less work than 2 mm.

# %%
grids = {2.0: (91, 109, 91), 4.0: (45, 54, 45)}
views = {
    s: preprocess(t1_path, PreprocessConfig(volume_shape=g, voxel_size=s)) for s, g in grids.items()
}
lo, hi = np.percentile(views[2.0][0], [1, 99])  # one display range for both panels
fig, axes = plt.subplots(1, 2, figsize=(9.5, 4), layout="constrained")
for ax, (size, (vol, aff)) in zip(axes, views.items()):
    plot_slices(vol, aff, coords={"coronal": [-22]}, ax=[ax], title=None, colorbar_label=None,
                vmin=lo, vmax=hi)  # fmt: skip
    ax.set_title(f"{size:g} mm grid, {' x '.join(map(str, grids[size]))}: y = -22 mm")
fig.colorbar(axes[0].images[0], ax=axes, shrink=0.8, label="intensity (z-score)")
fig.suptitle("What the model sees after preprocessing")
plt.show()

# %%
PART_SECONDS["3 · the synthetic cohort"] = time.perf_counter() - t_part
t_part = time.perf_counter()

# %% [markdown]
# ## Part 4 · Your own data
#
# ### A BIDS folder or a table of files
#
# Point `read_table` at a BIDS folder (a `participants.tsv` with `participant_id` and your target
# column, and `sub-<id>/anat/*_T1w.nii.gz`), or at a TSV/CSV with a path column (relative paths
# are relative to the table). It checks every row and explains what is wrong. Here a small CSV
# that points at two of our files, and then one with a mistake:

# %%
own = data_dir() / "own_table_example"
own.mkdir(parents=True, exist_ok=True)
ids = participants["participant_id"].head(2)
pd.DataFrame(
    {
        "participant_id": ids,
        "t1": [str(cohort / p / "anat" / f"{p}_T1w.nii.gz") for p in ids],
        "age": participants["age"].head(2),
    }
).to_csv(own / "my_scans.csv", index=False)
display(read_table(own / "my_scans.csv", target="age"))
pd.DataFrame({"participant_id": ["s1"], "t1": ["missing.nii.gz"], "age": ["forty"]}).to_csv(
    own / "broken.csv", index=False
)
try:
    read_table(own / "broken.csv", target="age")
except DataError as err:
    print("DataError:", str(err).replace(str(data_dir()), "<data dir>"))

# %% [markdown]
# For your own data: `read_table("MY_FOLDER", target="age")` (BIDS) or
# `read_table("MY_TABLE.csv", target="age", path_column="t1")`; then `slicelib qc` on the files
# before training, and `slicelib train --data MY_TABLE.csv --target age`.
#
# ### OASIS-1 (online only: real data with age and dementia ratings)
#
# OASIS-1 has 403 adults (18 to 96 years) with MMSE and CDR ratings (CDR > 0: very mild to
# moderate dementia). nilearn downloads a version of it, about **800 MB**, under the OASIS data
# usage agreement: grey-matter density maps already normalised to MNI space (not raw T1), so
# `table.attrs["preprocess"]` skips registration. Set `DOWNLOAD_OASIS = True` to fetch it (it
# needs internet and a few minutes); then use the table like the synthetic one, with target
# `age` or `dementia`.

# %%
DOWNLOAD_OASIS = False
if DOWNLOAD_OASIS:
    from slicelib.datasets import fetch_oasis

    oasis = fetch_oasis(n_subjects=None)  # files go to $NILEARN_DATA or ~/nilearn_data
    display(oasis[["participant_id", "age", "sex", "mmse", "cdr", "dementia"]].head())
    print(oasis["dementia"].value_counts())
else:
    print("OASIS-1 download skipped (DOWNLOAD_OASIS = False).")

# %%
PART_SECONDS["4 · your own data"] = time.perf_counter() - t_part

# %% [markdown]
# ## What you learned
#
# The numbers below are those of this run.

# %%
ncc_translate = float(measured.loc["intact", "ncc"])
half_flags = [r.split("=")[0] for r in translated["lower half blanked"][2]["reasons"]]
inv_flags = [r.split("=")[0] for r in translated["inverted"][2]["reasons"]]
display(Markdown(f"""
* A NIfTI image = a voxel array + an affine (voxel -> mm) + a header whose sform/qform codes
  say which space it is in; the raw IXI head {head["participant_id"]} is stored in the
  scanner's order ({"".join(nib.aff2axcodes(raw.affine))}) and space (codes
  {int(hdr["sform_code"])}/{int(hdr["qform_code"])}).
* **Brain extraction**: deepbet's mask agrees with the DLMUSE brain with a Dice of
  **{mask_dice:.3f}** ({mask.sum() * voxel_ml:.0f} vs {reference.sum() * voxel_ml:.0f} ml).
* **N4** estimated a smooth bias field of {lo_f:.2f} to {hi_f:.2f} times its median inside the
  brain; dividing it out changed the spread of the brightest (white-matter) voxels from
  {bright_cv["before N4"]:.3f} to {bright_cv["after N4"]:.3f} (coefficient of variation).
* **Registration** is affine (12 parameters: position, orientation, size, shear), never
  nonlinear, so that the atrophy a brain-age model reads survives; this head's volume ratio to
  MNI152 is {result.qc["scale"]:.2f}.
* **QC**: the registered brain correlates with the template at NCC {result.qc["ncc"]:.2f}
  (status **{status}**); the same head only translated reaches {ncc_translate:.2f}, which is why
  each preprocessing method has its own bounds, set halfway between real heads and bad inputs.
  The inverted head is flagged by {", ".join(inv_flags) or "no measure"}; the head with its
  lower half blanked by {", ".join(half_flags) or "no measure"}.
* Notebooks 02-04 train on {len(deriv)} real IXI brains preprocessed by this pipeline onto a
  4 mm grid, split into {deriv["fold"].nunique()} fixed subject-level folds, and on a synthetic
  cohort ({len(participants)} subjects here) whose effects of age and AD are known, with
  ground-truth maps in `derivatives/ground_truth/`.

Time of each part in this run ({PRESET} preset):
{" ".join(f"{k}: {v:.0f} s;" for k, v in PART_SECONDS.items())} total
{sum(PART_SECONDS.values()) / 60:.1f} min.

Next: notebook 02 trains slice models from ImageNet weights and from scratch.
"""))  # fmt: skip
