# %% [markdown]
# # 01 · Brain MRI as data: a real head through the pipeline, and a synthetic cohort with known answers
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/slicelib/slicelib/blob/main/notebooks/01_data.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/slicelib/slicelib/main?labpath=notebooks%2F01_data.ipynb)
#
# This is the first of four notebooks on reading 3D brain MRI with 2D models pretrained on
# natural images, slice by slice (Gupta et al., *Transferring Models Trained on Natural Images
# to 3D MRI via Position Encoded Slice Models*, ISBI 2023). Before any model, we look at the
# data, in two parts:
#
# 1. **A real head.** One raw T1-weighted scan from the IXI dataset goes through slicelib's
#    preprocessing pipeline step by step: what its header says, brain extraction, registration
#    to the MNI152 template, and the quality control (QC) that decides whether a model may read
#    it, including what a failed QC looks like.
# 2. **A synthetic cohort with known answers.** Generated from the MNI152 template with
#    planted effects of age and of Alzheimer's disease (AD), so that later notebooks can check
#    what a model learned against the truth.
#
# It ends with the ways in for your own data (a BIDS folder, a table of files, OASIS-1).
#
# **Time.** `PRESET="smoke"` (CI) skips registration and the failed-QC example (it says so);
# `PRESET="cpu"` (a laptop, 2 cores) runs everything: the pipeline twice on one head and the
# 200-subject cohort, generated once and reused by the other notebooks. `PRESET="gpu"`: the
# same on a 1000-subject cohort (nothing here uses the GPU).

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
# The preset sets the sizes. `N_SUBJECTS` is the cohort size, the same in all four notebooks of
# a preset, so the cohort is generated once and then reused (it lives in `$SLICELIB_DATA`,
# default the user cache folder, `~/.cache/slicelib` on Linux). `REGISTER` runs the full pipeline (N4 bias correction and the
# registration to MNI152, tens of seconds per head on 2 cores); `FAILED_QC` runs it once more on a broken input.

# %%
SIZES = {
    "smoke": dict(N_SUBJECTS=24, REGISTER=False, FAILED_QC=False),
    "cpu": dict(N_SUBJECTS=200, REGISTER=True, FAILED_QC=True),
    "gpu": dict(N_SUBJECTS=1000, REGISTER=True, FAILED_QC=True),
}
if PRESET not in SIZES:
    raise ValueError(f"PRESET must be one of {list(SIZES)}, got {PRESET!r}")
N_SUBJECTS, REGISTER, FAILED_QC = SIZES[PRESET].values()
print(f"preset {PRESET}: {N_SUBJECTS} synthetic subjects, registration {REGISTER}")

# %%
import json
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display
from nilearn import plotting

from slicelib import qc
from slicelib.course import data_dir, ensure_synthetic_cohort
from slicelib.data import DataError, PreprocessConfig, preprocess
from slicelib.datasets import ixi_demo_heads, ixi_table, read_table
from slicelib.explain import slice_coordinates
from slicelib.io import load_nifti
from slicelib.pipeline import PipelineConfig, PipelineError, run_pipeline
from slicelib.plotting import plot_slices
from slicelib.utils import mni_template

plt.rcParams["figure.dpi"] = 80
MNI_MASK = mni_template(what="mask", resolution=2)  # nilearn's MNI152 brain mask, packaged

# %% [markdown]
# ## Part 1 · A raw real head through the pipeline
#
# The IXI dataset (brain-development.org, CC BY-SA 3.0) holds T1 scans of healthy adults. slicelib reads a 2 mm copy of 142 of them (Hammersmith Hospital, ages from the IXI
# table) with `slicelib.datasets.ixi_table()`, which looks for a local copy in
# `$SLICELIB_IXI_DIR`, then in `$SLICELIB_SHARED/data/ixi_hh_2mm`, then in the download folder
# of `slicelib.datasets.fetch_ixi()` (which downloads the ~80 MB once, with checksums, when you
# have internet). Without any of them (on Colab or Binder, say) it uses the two raw IXI heads
# that ship with slicelib (`slicelib.datasets.ixi_demo_heads()`: a 25- and a 70-year-old, with
# their brain parcellations; CC BY-SA 3.0).

# %%
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "4 subjects have no age": listed in attrs below
        ixi = ixi_table()
except DataError as err:
    ixi = ixi_demo_heads()
    ixi.attrs["excluded"] = []
    print(
        f"No local IXI copy ({str(err)[:120]}...): using the {len(ixi)} demo heads shipped with slicelib."
    )
HAVE_IXI = True  # a local IXI copy or the shipped demo heads
if HAVE_IXI:
    head = ixi.iloc[0]
    print(
        f"{len(ixi)} IXI heads with an age ({ixi['age'].min():.0f}-{ixi['age'].max():.0f} "
        f"years; left out without age: {len(ixi.attrs['excluded'])}). We follow "
        f"{head['participant_id']}, {head['age']:.0f} years, sex {head['sex']}."
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
if HAVE_IXI:
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
if HAVE_IXI:
    display(
        plotting.view_img(
            raw, bg_img=False, cmap="gray", symmetric_cmap=False, vmin=0, threshold=None,
            black_bg=True, dim=0, title=f"raw head {head['participant_id']} (scanner space)",
        )
    )  # fmt: skip

# %% [markdown]
# ### The pipeline
#
# `slicelib.pipeline.run_pipeline` does, step by step (each choice is in `PipelineConfig` and
# ends up in a trained model's checkpoint, so prediction repeats it exactly):
#
# 1. **load** (`slicelib.io.load_nifti`): read the file, reject 4D, constant or non-finite images,
#    reorient to RAS;
# 2. **brain extraction** (`extract_brain`): deepbet, a network trained on thousands of scans
#    whose weights ship inside its pip package (no download): a brain mask;
# 3. **bias correction** (`bias_correct`): N4 removes the smooth intensity drift of the coil;
# 4. **registration** (`register_affine`): a 12-parameter affine (rotation, translation,
#    scaling, shear) of the extracted brain onto nilearn's MNI152 template, so that voxel
#    (i, j, k) means the same anatomy in every subject, which is what makes slice k of one
#    brain comparable to slice k of another;
# 5. **resample** onto the model grid and z-score the intensities inside the brain.
#
# The smoke preset runs only steps 1, 2 and 5 (the head is then resampled where it lies).

# %%
config = PipelineConfig() if REGISTER else PipelineConfig(bias_correct=False, registration="none")
if not REGISTER:
    print("smoke preset: N4 and registration skipped (run PRESET='cpu' for the full pipeline)")
if HAVE_IXI:
    img = load_nifti(head["path"])
    print(f"after load_nifti: orientation {nib.aff2axcodes(img.affine)}; pipeline running ...")
    result = run_pipeline(img, config)
    print(f"registration: {result.registration}")
    display(pd.Series(result.timings, name="seconds").to_frame().T)

# %% [markdown]
# The table gives the seconds of each step on this machine (`total` is their sum); brain
# extraction and registration dominate.
#
# ### Brain extraction
#
# The red line is deepbet's brain mask over the head. It should follow the brain's surface:
# the skull, scalp, eyes and neck outside, the cerebellum and brainstem inside.

# %%
if HAVE_IXI:
    d = plotting.plot_anat(
        img, display_mode="ortho", dim=-0.5, colorbar=True,
        title=f"{head['participant_id']}: deepbet brain mask (red), scanner space",
    )  # fmt: skip
    d.add_contours(result.native_mask, levels=[0.5], colors="r", linewidths=1)
    print(f"brain volume: {result.qc['brain_ml']:.0f} ml")

# %% [markdown]
# ### Registration to MNI152
#
# Top: the extracted brain where the scanner put it, with the MNI152 brain outline (red) drawn
# at the same world coordinates. Bottom: the result of the pipeline on the model grid. After a
# successful registration the brain fills the outline; without registration (smoke preset) it
# sits where the scanner put it, shifted, tilted and of its own size.

# %%
if HAVE_IXI:
    brain = nib.Nifti1Image(img.get_fdata() * result.native_mask.get_fdata(), img.affine)
    out_img = nib.Nifti1Image(result.array, result.affine)
    fig, axes = plt.subplots(2, 1, figsize=(10, 7))
    for ax, im, what in [
        (axes[0], brain, "extracted brain, scanner space (colour: scanner units)"),
        (axes[1], out_img, f"model grid, registration: {result.registration} (z-score)"),
    ]:
        d = plotting.plot_anat(
            im, axes=ax, cut_coords=(0, -18, 18), dim=-0.3, title=what, draw_cross=False
        )
        d.add_contours(MNI_MASK, levels=[0.5], colors="r", linewidths=1)
    plt.show()

# %% [markdown]
# ### Quality control: does the result look like a registered T1 brain?
#
# A model trained on registered T1 brains answers something for *any* array it is given: a
# mask, an inverted image, a failed registration. `slicelib.qc` measures the result and flags
# it when a measure leaves the range measured on real heads: `ncc` (correlation with the MNI152
# template inside its brain mask), `wm_gm` (white matter brighter than grey matter, in z
# units), `brain_ml`, `inside` (fraction of the brain inside the grid), `scale` (the volume
# change of the registration), `n_unique` (distinct intensities: a label map has few) and
# `coverage` (the share of the template's brain the registered brain covers: a scan that missed
# the cerebellum or the top of the head falls short). The bounds depend on the preprocessing
# method (`qc.thresholds(method)`); a measure that cannot apply to a method has none.

# %%
if HAVE_IXI:
    status, reasons = qc.qc_status(result.qc)
    bounds = pd.DataFrame(qc.thresholds("register"), index=["lower bound", "upper bound"]).T
    display(bounds.assign(value=pd.Series(result.qc)))
    print(f"QC status: {status}" + "".join(f"\n  - {r}" for r in reasons))

# %% [markdown]
# The QC figure that `slicelib qc` writes for every scan (`slicelib.qc.qc_figure`): the
# preprocessed brain with the MNI152 brain outline, the status in the title.

# %%
if HAVE_IXI:
    qc.qc_figure(result, "qc_real_head.png", status, reasons)
    display(Image("qc_real_head.png"))

# %% [markdown]
# ### What a failed QC looks like
#
# Some inputs fail before any step: a constant image raises a clear error naming the file.
# Others run through every step and produce a plausible-looking array. Here we give the
# pipeline the same head with its intensities inverted (bright CSF, dark white matter, as in a
# T2-weighted scan): a model would read it without complaint; QC must not.

# %%
nib.save(nib.Nifti1Image(np.full((40, 40, 40), 7.0, np.float32), np.eye(4)), "constant.nii.gz")
try:
    run_pipeline("constant.nii.gz")
except (DataError, PipelineError) as err:
    print(f"{type(err).__name__}: {err}")

# %%
if HAVE_IXI and FAILED_QC:
    inverted = nib.Nifti1Image(img.get_fdata().max() - img.get_fdata(), img.affine)
    bad = run_pipeline(inverted, config)
    bad.source = "inverted head"
    bad_status, bad_reasons = qc.qc_status(bad.qc)
    display(pd.DataFrame({"real head": result.qc, "inverted head": bad.qc}).T)
    print(f"inverted head: {bad_status}" + "".join(f"\n  - {r}" for r in bad_reasons))
    qc.qc_figure(bad, "qc_inverted_head.png", bad_status, bad_reasons)
    display(Image("qc_inverted_head.png"))
elif HAVE_IXI:
    print("smoke preset: the failed-QC example (a second pipeline run) runs in PRESET='cpu'")

# %% [markdown]
# Read the reasons, not only the status: the inverted head should fail on `wm_gm` (its white
# matter is darker than its grey matter) and on `ncc` (it does not look like the template).
# `slicelib predict` runs these checks on every scan and writes `qc` and `qc_reasons` columns
# beside the prediction, so a flagged scan is never reported as a normal prediction;
# `slicelib qc SCAN... --out DIR` writes the table and one figure per scan.
#
# ## Part 2 · The synthetic cohort
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

# %% [markdown]
# ## Part 3 · Your own data
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
    print("DataError:", err)

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

# %% [markdown]
# ## Summary

# %%
real = (
    f"the IXI head {head['participant_id']} went through the pipeline in "
    f"{result.timings['total']:.0f} s (registration: {result.registration}) and its QC says "
    f"**{status}**" + (f"; its inverted copy: **{bad_status}**" if FAILED_QC else "")
    if HAVE_IXI
    else "no local IXI heads were found, so part 1 was skipped"
)
display(Markdown(f"""
* A NIfTI image = a voxel array + an affine (voxel -> mm) + a header whose sform/qform codes
  say which space it is in; raw scans are stored in the scanner's order and space.
* Raw heads go through brain extraction, bias correction and a 12-dof affine registration to
  MNI152, then QC; in this run {real}.
* A slice model sees a volume as a stack of 2D slices along one axis.
* The synthetic cohort ({len(participants)} subjects) has known effects: age (GM loss,
  ventricle growth; brain-age gap SD {params["brain_age_gap_sd"]:g} years) and AD (marked but focal
  medial temporal atrophy, {params["ad_loss"][0]:g}-{params["ad_loss"][1]:g} local GM loss, confounded with
  age). Its ground-truth maps are in `derivatives/ground_truth/`.

Next: notebook 02 trains slice models from ImageNet weights and from scratch.
"""))  # fmt: skip
