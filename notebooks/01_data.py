# %% [markdown]
# # 01 · Brain MRI as data: NIfTI files, slices and a synthetic cohort with known answers
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/slicelib/slicelib/blob/main/notebooks/01_data.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/slicelib/slicelib/main?labpath=notebooks%2F01_data.ipynb)
#
# *(The badges point at the placeholder repository `https://github.com/slicelib/slicelib`; they
# must be changed to the real URL once the project is published.)*
#
# This is the first of four notebooks on reading 3D brain MRI with 2D models pretrained on
# natural images, slice by slice (Gupta et al., *Transferring Models Trained on Natural Images
# to 3D MRI via Position Encoded Slice Models*, ISBI 2023). Before any model, we look at the
# data: what a NIfTI file holds (voxels, an affine that places them in millimetres, an
# orientation), how nilearn draws a brain, how a volume becomes the stack of 2D slices a slice
# model sees, and the **synthetic cohort** used throughout the course. That cohort is generated
# from the MNI152 template with planted, *known* effects of age and of Alzheimer's disease (AD),
# so later notebooks can check what a model learned against the truth. We end with the paths to
# real data: raw heads (ten IXI scans), OASIS-1 and your own BIDS folder.
#
# **Time.** `PRESET="smoke"` (CI): under a minute. `PRESET="cpu"` (a laptop, 2 cores): about
# 2-4 minutes, most of it generating the 200-subject cohort once (the other notebooks reuse it).
# `PRESET="gpu"`: the same work on a larger cohort (1000 subjects, ~5-10 minutes of CPU time for
# the generation; nothing here uses the GPU).

# %%
# Colab: install slicelib if it is missing (Colab keeps its own torch).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("slicelib") is None:
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/slicelib/slicelib"]
    )

# %% tags=["parameters"]
PRESET = os.environ.get("SLICELIB_PRESET", "cpu")  # "smoke" | "cpu" | "gpu"
SEED = 0

# %% [markdown]
# The preset sets the sizes. `N_SUBJECTS` is the cohort size; it is the same in all four
# notebooks of a preset, so the cohort is generated once and then reused (it lives in
# `$SLICELIB_DATA`, default `./slicelib_data`). `N_MEASURE` subjects are segmented from their
# images to plot tissue volumes against age, and `N_IXI` raw IXI heads are preprocessed.

# %%
SIZES = {
    "smoke": dict(N_SUBJECTS=24, N_MEASURE=4, N_IXI=1),
    "cpu": dict(N_SUBJECTS=200, N_MEASURE=24, N_IXI=10),
    "gpu": dict(N_SUBJECTS=1000, N_MEASURE=100, N_IXI=10),
}
if PRESET not in SIZES:
    raise ValueError(f"PRESET must be one of {list(SIZES)}, got {PRESET!r}")
N_SUBJECTS, N_MEASURE, N_IXI = (SIZES[PRESET][k] for k in ("N_SUBJECTS", "N_MEASURE", "N_IXI"))
print(f"preset {PRESET}: {N_SUBJECTS} subjects, {N_MEASURE} measured, {N_IXI} IXI heads")

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import display
from nilearn import plotting
from tqdm.auto import tqdm

from slicelib.course import data_dir, ensure_synthetic_cohort, shared_dir
from slicelib.data import MNI_2MM_AFFINE, MNI_2MM_SHAPE, DataError, PreprocessConfig

plt.rcParams["figure.dpi"] = 80


def label_colorbar(display_, text):
    """Put a label on the colorbar of a nilearn display (nilearn has no argument for it)."""
    cbar = getattr(display_, "_cbar", None)
    if cbar is not None:
        cbar.set_label(text)


# %% [markdown]
# ## 1. The synthetic cohort
#
# Real brain MRI comes with licences, downloads and no ground truth: nobody knows exactly which
# voxels an age or a disease changed. So the course starts from a synthetic cohort whose
# generative model is known. `ensure_synthetic_cohort` writes it once as a BIDS-like folder
# (`sub-XXXX/anat/sub-XXXX_T1w.nii.gz`, `participants.tsv`) and returns the folder; a second call,
# from this or another notebook, finds it complete and returns at once.

# %%
t0 = time.perf_counter()
cohort = ensure_synthetic_cohort(N_SUBJECTS, seed=SEED)
print(f"cohort folder: {cohort} (ready in {time.perf_counter() - t0:.0f} s)")
participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
participants.head()

# %% [markdown]
# ## 2. One NIfTI file with nibabel
#
# A NIfTI image is a 3D array of voxel values plus a 4 x 4 **affine** matrix that maps a voxel
# index (i, j, k) to a position in millimetres (x, y, z) in a world coordinate system. For our
# images that world is MNI space: x runs left to right, y posterior to anterior, z inferior to
# superior ("RAS+"). The header also records the voxel size and data type.

# %%
first = participants.iloc[0]
path = cohort / first.participant_id / "anat" / f"{first.participant_id}_T1w.nii.gz"
img = nib.load(path)
print(f"file:         {path.name}")
print(f"shape:        {img.shape} voxels")
print(f"voxel size:   {tuple(float(z) for z in img.header.get_zooms())} mm")
print(
    f"data type:    {img.get_data_dtype()} (stored), values {img.get_fdata().min():.0f} to "
    f"{img.get_fdata().max():.0f}"
)
print(f"orientation:  {nib.aff2axcodes(img.affine)}  (the direction each array axis points to)")
print("affine (voxel index -> mm):")
print(img.affine)
print("slicelib's model grid, slicelib.data.MNI_2MM_AFFINE:", MNI_2MM_SHAPE)
print(MNI_2MM_AFFINE)

# %% [markdown]
# The affine says: voxel (0, 0, 0) sits at (-90, -126, -72) mm and each step along an array axis
# moves 2 mm to the right, to the front or upwards. So `nib.aff2axcodes` reads `('R', 'A', 'S')`.
# The synthetic images are already on slicelib's model grid (the FSL MNI152 2 mm grid,
# 91 x 109 x 91), so preprocessing will only normalise their intensities. Raw scans are not:
# section 7 shows a head stored in another orientation.
#
# Where is a world point in the array? Invert the affine:

# %%
world_origin = np.array([0.0, 0.0, 0.0])
ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), world_origin)
print(f"MNI (0, 0, 0) mm is voxel {ijk} of the array")

# %% [markdown]
# ## 3. Drawing a brain with nilearn
#
# nilearn reads the affine, so it draws in world coordinates and labels left and right for us.
# `plot_anat` with `display_mode="ortho"` shows the three orthogonal planes through one point;
# other display modes show a row of cuts along one axis.

# %%
d = plotting.plot_anat(
    img,
    display_mode="ortho",
    cut_coords=(-28, -22, -14),
    title=f"{first.participant_id}: cuts through the left hippocampus (-28, -22, -14) mm",
    colorbar=True,
    dim=-0.5,
)
label_colorbar(d, "T1 intensity (uint8 units)")

# %%
d = plotting.plot_anat(
    img,
    display_mode="z",
    cut_coords=[-30, -14, 0, 16, 32, 48],
    title="axial cuts at z = -30 ... 48 mm",
    colorbar=True,
    dim=-0.5,
)
label_colorbar(d, "T1 intensity (uint8 units)")

# %% [markdown]
# ## 4. A volume is a stack of slices along each axis
#
# A slice model does not see the volume as 3D. It cuts it into all of its 2D slices along one
# axis and sends every slice through the same 2D network, exactly like a batch of photos.
# Cutting along x gives 91 **sagittal** slices (109 x 91 pixels each), along y 109 **coronal**
# slices (91 x 91) and along z 91 **axial** slices (91 x 109). In numpy this is just indexing
# (`vol[i]`, `vol[:, j]`, `vol[:, :, k]`), or moving the slicing axis to the front. The figure
# shows every 8th slice of each stack: the edge slices are empty background, which the model
# must learn to ignore, and the anatomy changes smoothly from one slice to the next, which is
# what a *position embedding* (notebook 03) lets the model use.

# %%
vol = img.get_fdata(dtype=np.float32)
AXIS_NAMES = ["sagittal", "coronal", "axial"]
stacks = {name: np.moveaxis(vol, a, 0) for a, name in enumerate(AXIS_NAMES)}  # (S, H, W)
for name, s in stacks.items():
    print(f"{name:9s} stack: {s.shape[0]} slices of {s.shape[1]} x {s.shape[2]} pixels")

STEP = 8
n_cols = max(len(range(4, s.shape[0] - 4, STEP)) for s in stacks.values())
fig, axes = plt.subplots(3, n_cols, figsize=(1.45 * n_cols, 5.4), layout="constrained")
for row, (a, name) in enumerate(zip(range(3), AXIS_NAMES)):
    s = stacks[name]
    picks = list(range(4, s.shape[0] - 4, STEP))
    for col, ax in enumerate(axes[row]):
        ax.set_xticks([])
        ax.set_yticks([])
        if col >= len(picks):
            ax.axis("off")
            continue
        i = picks[col]
        im = ax.imshow(s[i].T, cmap="gray", origin="lower", vmin=0, vmax=200)
        mm = MNI_2MM_AFFINE[a, a] * i + MNI_2MM_AFFINE[a, 3]
        ax.set_title(f"{i} ({'xyz'[a]}={mm:.0f})", fontsize=7)
    axes[row, 0].set_ylabel(f"{name}\n({s.shape[0]} slices)", fontsize=9)
fig.colorbar(im, ax=axes, shrink=0.6, label="T1 intensity (uint8 units)")
fig.suptitle(f"Every {STEP}th slice along each axis: slice index (world position in mm)")
plt.show()

# %% [markdown]
# ### An interactive slice browser
#
# Move the slider to walk through a stack. The browser needs a live Jupyter kernel (JupyterLab,
# Colab, Binder); in a static copy of this notebook (HTML, GitHub) it does not move, so a
# static figure with three chosen slices follows it.


# %%
from io import BytesIO

from matplotlib.figure import Figure


def slice_png(axis="coronal", index=52):
    """PNG bytes of slice ``index`` of the stack along ``axis``, titled with its world position."""
    a = AXIS_NAMES.index(axis)
    s = stacks[axis]
    index = int(np.clip(index, 0, s.shape[0] - 1))
    fig = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")  # not pyplot: no inline copy
    ax = fig.add_subplot()
    im = ax.imshow(s[index].T, cmap="gray", origin="lower", vmin=0, vmax=200)
    mm = MNI_2MM_AFFINE[a, a] * index + MNI_2MM_AFFINE[a, 3]
    other = [n for n in range(3) if n != a]
    ax.set_xlabel(f"array axis {other[0]} ({'xyz'[other[0]]}, voxels)")
    ax.set_ylabel(f"array axis {other[1]} ({'xyz'[other[1]]}, voxels)")
    ax.set_title(f"{axis} slice {index} of {s.shape[0]} ({'xyz'[a]} = {mm:.0f} mm)")
    fig.colorbar(im, ax=ax, label="T1 intensity (uint8 units)")
    buffer = BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


try:
    import ipywidgets as widgets
except ImportError:  # plain Python without ipywidgets: the static figure below still works
    widgets = None
    print("ipywidgets is not installed: pip install ipywidgets for the interactive browser.")

if widgets is not None:
    axis_w = widgets.ToggleButtons(options=AXIS_NAMES, value="coronal", description="axis")
    index_w = widgets.IntSlider(value=52, min=0, max=108, description="slice")
    image_w = widgets.Image(value=slice_png("coronal", 52), format="png")

    def _redraw(change=None):
        index_w.max = stacks[axis_w.value].shape[0] - 1
        image_w.value = slice_png(axis_w.value, index_w.value)

    axis_w.observe(_redraw, names="value")
    index_w.observe(_redraw, names="value")
    display(widgets.VBox([axis_w, index_w, image_w]))

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained")
for ax, (axis, index) in zip(axes, [("sagittal", 31), ("coronal", 52), ("axial", 29)]):
    a = AXIS_NAMES.index(axis)
    im = ax.imshow(stacks[axis][index].T, cmap="gray", origin="lower", vmin=0, vmax=200)
    mm = MNI_2MM_AFFINE[a, a] * index + MNI_2MM_AFFINE[a, 3]
    other = [n for n in range(3) if n != a]
    ax.set_title(f"{axis} slice {index} ({'xyz'[a]} = {mm:.0f} mm)")
    ax.set_xlabel(f"{'xyz'[other[0]]} (voxels)")
    ax.set_ylabel(f"{'xyz'[other[1]]} (voxels)")
fig.colorbar(im, ax=axes, shrink=0.8, label="T1 intensity (uint8 units)")
fig.suptitle("Static view: three slices through the left hippocampus (x=-28, y=-22, z=-14 mm)")
plt.show()

# %% [markdown]
# ## 5. The cohort and its planted effects
#
# Each synthetic subject is the MNI152 template with changes that depend on its age and
# diagnosis, then a random pose, a smooth warp, a bias field, noise and a contrast change (see
# `slicelib.synth`). The changes are:
#
# * **age**: cortical grey matter (GM) thins (more frontally, with a random regional pattern per
#   subject) and the lateral ventricles grow, faster with age; each subject has its own
#   "brain-age gap" of about ±4 years, so no model can predict age exactly;
# * **AD** (about 30 % of subjects, more often when old): medial temporal atrophy, the pattern
#   radiologists rate on coronal slices with the MTA scale (Scheltens et al., 1992): 30-50 %
#   extra GM loss in the hippocampus, amygdala and parahippocampal gyrus on both sides, and a
#   widening of the CSF spaces around them (temporal horn, choroidal fissure) by a few mm.
#
# AD is more frequent in older subjects, as in real cohorts, so age and AD are confounded: a
# classifier could partly detect AD from age-related atrophy. Keep this in mind for notebook 04.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
bins = np.arange(20, 95, 5)
for dx, colour in [("CN", "C0"), ("AD", "C3")]:
    ages = participants.loc[participants["diagnosis"] == dx, "age"]
    ax.hist(ages, bins=bins, alpha=0.6, color=colour, label=f"{dx} (n = {len(ages)})")
ax.set_xlabel("age (years)")
ax.set_ylabel("subjects")
ax.set_title(f"Synthetic cohort: {len(participants)} subjects, ages and diagnoses")
ax.legend()
plt.show()

# %% [markdown]
# ### A young, an old and an old AD subject
#
# We pick the control closest to 25 years, the control closest to 75 and the AD subject closest
# to 75, and cut all three at the same place: a coronal slice through the hippocampi
# (y = -22 mm) and an axial slice through them (z = -14 mm). Expect larger ventricles and wider
# sulci in the old subjects, and in the AD subject a hippocampus that is darker (less grey
# matter, more CSF) than in the control of the same age.


# %%
def closest(dx, age):
    sub = participants[participants["diagnosis"] == dx]
    if sub.empty:
        return None
    return sub.iloc[int(np.argmin(np.abs(sub["age"].to_numpy() - age)))]


def t1_of(row):
    return nib.load(cohort / row.participant_id / "anat" / f"{row.participant_id}_T1w.nii.gz")


chosen = [
    ("young CN", closest("CN", 25)),
    ("old CN", closest("CN", 75)),
    ("old AD", closest("AD", 75)),
]
chosen = [(label, row) for label, row in chosen if row is not None]
j_cor = int(round((-22 - MNI_2MM_AFFINE[1, 3]) / 2))  # y = -22 mm
k_ax = int(round((-14 - MNI_2MM_AFFINE[2, 3]) / 2))  # z = -14 mm
fig, axes = plt.subplots(2, len(chosen), figsize=(3.6 * len(chosen), 6.4), layout="constrained")
for col, (label, row) in enumerate(chosen):
    v = t1_of(row).get_fdata(dtype=np.float32)
    im = axes[0, col].imshow(v[:, j_cor, :].T, cmap="gray", origin="lower", vmin=0, vmax=200)
    axes[1, col].imshow(v[:, :, k_ax].T, cmap="gray", origin="lower", vmin=0, vmax=200)
    axes[0, col].set_title(f"{label}: {row.participant_id}, {row.age:.0f} y")
    axes[0, col].set_xlabel("x (voxels, left → right)")
    axes[1, col].set_xlabel("x (voxels, left → right)")
axes[0, 0].set_ylabel("coronal y = -22 mm\nz (voxels)")
axes[1, 0].set_ylabel("axial z = -14 mm\ny (voxels)")
fig.colorbar(im, ax=axes, shrink=0.6, label="T1 intensity (uint8 units)")
fig.suptitle(
    "Same cuts in three subjects: age enlarges ventricles and sulci; AD shrinks the hippocampus"
)
plt.show()

# %% [markdown]
# Single subjects are noisy (each has its own anatomy warp, bias field and contrast), so the
# hippocampal difference between the old control and the old AD subject is visible but small by
# eye, most clearly as the dark CSF around the hippocampus (temporal horn) in the coronal cut.
# That is why the ground truth below is also shown as maps and group statistics, not only as
# single images.
#
# ### The ground-truth effect maps
#
# The generator also wrote, in `derivatives/ground_truth/`, how much each voxel's intensity
# changes with age (per year, between 30 and 80) and with AD (at 70 years, mean severity), in
# template space. These maps are the answer key for notebook 04: a model that detects AD
# *should* rely on the slices where the AD map is non-zero.

# %%
gt_dir = cohort / "derivatives" / "ground_truth"
age_map = nib.load(gt_dir / "age_effect.nii.gz")
ad_map = nib.load(gt_dir / "ad_effect.nii.gz")
print((gt_dir / "effect_maps.json").read_text())

d = plotting.plot_stat_map(
    age_map,
    display_mode="ortho",
    cut_coords=(0, -18, 14),
    title="Ground truth: |d intensity / d age| (fraction of WM intensity per year)",
    cmap="hot",
    threshold=0.1 * float(age_map.get_fdata().max()),
    colorbar=True,
)
label_colorbar(d, "intensity change per year (fraction of WM)")

# %%
d = plotting.plot_stat_map(
    ad_map,
    display_mode="ortho",
    cut_coords=(-28, -20, -15),
    title="Ground truth: |AD - CN| intensity at 70 years (fraction of WM)",
    cmap="hot",
    threshold=0.05 * float(ad_map.get_fdata().max()),
    colorbar=True,
)
label_colorbar(d, "intensity change (fraction of WM)")

# %%
d = plotting.plot_glass_brain(
    ad_map,
    title="AD effect, glass brain (maximum projection): medial temporal lobes, both sides",
    cmap="hot",
    threshold=0.05 * float(ad_map.get_fdata().max()),
    colorbar=True,
    plot_abs=True,
)
label_colorbar(d, "intensity change (fraction of WM)")

# %% [markdown]
# The age effect is spread over the whole cortex and around the ventricles; the AD effect sits in
# the two medial temporal lobes (hippocampus, amygdala, parahippocampal gyrus and the CSF around
# them, left and right). Summed per slice, the AD map is
# what notebook 04 compares each importance profile with:

# %%
ad = ad_map.get_fdata()
fig, axes = plt.subplots(1, 3, figsize=(12, 3), layout="constrained")
for a, ax in enumerate(axes):
    profile = ad.sum(axis=tuple(i for i in range(3) if i != a))
    mm = MNI_2MM_AFFINE[a, a] * np.arange(len(profile)) + MNI_2MM_AFFINE[a, 3]
    ax.plot(mm, profile, "k")
    ax.set_xlabel(f"{'xyz'[a]} (mm)")
    ax.set_ylabel("summed |AD effect| per slice")
    ax.set_title(f"{AXIS_NAMES[a]} slices")
fig.suptitle("Ground-truth AD profile along each slicing axis")
plt.show()

# %% [markdown]
# ### Tissue volumes against age
#
# The generator records each subject's true tissue volumes (before warping, noise and bias) in
# `derivatives/ground_truth/subjects.tsv`. Plotted against age they show the planted effects at
# the group level: ventricles grow and grey matter (GM) shrinks with age in everyone, and
# hippocampal GM is lower in AD than in controls of the same age.

# %%
truth = pd.read_csv(gt_dir / "subjects.tsv", sep="\t")
VOLUMES = {
    "ventricle_ml": "ventricle CSF",
    "gm_ml": "grey matter",
    "hippocampus_gm_ml": "hippocampus + amygdala GM",
}


def volume_scatter(df, title, ylabel_suffix):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, (col, what) in zip(axes, VOLUMES.items()):
        for dx, colour in [("CN", "C0"), ("AD", "C3")]:
            m = df[df["diagnosis"] == dx]
            ax.scatter(m["age"], m[col], s=12, color=colour, label=f"{dx} (n = {len(m)})")
        r = np.corrcoef(df["age"], df[col])[0, 1] if len(df) > 2 else np.nan
        ax.set_xlabel("age (years)")
        ax.set_ylabel(f"{what} (ml, {ylabel_suffix})")
        ax.set_title(f"{what}: r(age) = {r:+.2f}")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    plt.show()


volume_scatter(truth, f"True tissue volumes of all {len(truth)} subjects (generator)", "true")

# %% [markdown]
# Do the effects also show up in the *images*, after the random warp, bias field and noise?
# `measure_volume` of the cohort's quality check (`benchmarks/synth_qa.py` in the repository,
# not part of the installed package) segments an image on its own (bias correction, three tissue
# classes, partial-volume unmixing), as a simple segmentation pipeline would. It takes a few
# seconds per subject, so we measure `N_MEASURE` of them and compare with the truth.

# %%
from slicelib.course import notebook_dir

sys.path.insert(0, str(notebook_dir().parent / "benchmarks"))  # the repository's benchmarks/
from synth_qa import measure_volume  # noqa: E402

pick = participants.sample(min(N_MEASURE, len(participants)), random_state=SEED)
rows = []
for rec in tqdm(pick.itertuples(), total=len(pick), desc="measure", unit="subject"):
    vols = measure_volume(t1_of(rec).get_fdata(dtype=np.float32))
    rows.append(
        {"participant_id": rec.participant_id, "age": rec.age, "diagnosis": rec.diagnosis, **vols}
    )
measured = pd.DataFrame(rows)
volume_scatter(
    measured, f"Volumes measured from the images of {len(measured)} subjects", "measured"
)
both = measured.merge(
    truth[["participant_id", *VOLUMES]], on="participant_id", suffixes=("", "_true")
)
for col, what in VOLUMES.items():
    if len(both) > 2:
        r = np.corrcoef(both[col], both[f"{col}_true"])[0, 1]
        print(f"{what:26s}: measured vs true volume, r = {r:.2f} ({len(both)} subjects)")

# %% [markdown]
# What the two figures show. **Ventricles** grow with age in the truth and in the measured
# volumes alike: a large, high-contrast structure is easy to measure. **Grey matter** shrinks
# tightly with age in the truth, but the image-based measurement is much noisier (its
# correlation with the true volume, printed above, is far from 1): segmenting a thin cortex in a
# 2 mm image with bias field and noise is hard, and this simple pipeline is no FreeSurfer. The
# **hippocampal** panels carry the AD effect: AD subjects sit far below controls of the same age,
# in the true volumes (about half the control volume: the planted 30-50 % grey-matter loss plus
# the tissue taken by the widened CSF spaces around the hippocampus) and, with more scatter, in
# the measured ones: measuring a small region in a warped, noisy image adds error. This is a
# strong effect, like the marked atrophy of an MTA score of 3-4 on a radiologist's scale, and
# stronger than in mild, early AD. (The correlation of this volume with age is partly *due to*
# AD, since AD subjects are older on average.) A model sees only the images, and the AD effect
# is confined to two small regions a few voxels wide on a coarse grid, while ageing changes the
# whole brain: notebooks 02 and 04 show what that means for the grid a model needs. With the
# smoke preset these numbers rest on a handful of subjects and mean little.
#
# ## 6. The model's view: preprocessing and the dataset
#
# Every image a model sees goes through `slicelib.data.preprocess`: load and check the file,
# put it in RAS orientation, resample it onto the model grid (here it already is, so this is
# skipped) and z-score the intensities. A `VolumeDataset` does this for every row of a table and
# caches the result. `read_table` builds the table; it accepts a BIDS folder such as our
# cohort, a TSV/CSV file with a path column, or a DataFrame.

# %%
from slicelib.data import VolumeDataset, preprocess
from slicelib.datasets import read_table

table = read_table(cohort, target="age")  # a BIDS folder: participants.tsv + sub-*/anat/*_T1w
display(table.head(3))
ds = VolumeDataset(table.head(4), target="age", preprocess=PreprocessConfig())
x, y = ds[0]
print(
    f"one item: volume {tuple(x.shape)} {x.dtype}, mean {x.mean():.2f}, sd {x.std():.2f}; "
    f"target {float(y):.1f} years"
)

# %% [markdown]
# The mean is not 0 because the z-score uses the mean and standard deviation of the head (the
# foreground), not of the whole array: the air around the head is strongly negative.
#
# The notebooks in this course train on a coarser **4 mm grid** (45 x 54 x 45) on the CPU,
# because every slice is a separate image for the 2D network: a 4 mm volume has half as many
# slices of a quarter of the pixels, about 8 times less work. The same call with another
# `PreprocessConfig` gives it:

# %%
small, small_affine = preprocess(path, PreprocessConfig(volume_shape=(45, 54, 45), voxel_size=4.0))
print(f"4 mm grid: {small.shape}, voxel size {small_affine[0, 0]:.0f} mm")
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), layout="constrained")
for ax, (v, label) in zip(
    axes, [(x[0].numpy(), "2 mm (91 x 109 x 91)"), (small, "4 mm (45 x 54 x 45)")]
):
    im = ax.imshow(v[:, v.shape[1] * 52 // 109, :].T, cmap="gray", origin="lower")
    ax.set_title(f"coronal slice, {label}")
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("z (voxels)")
fig.colorbar(im, ax=axes, shrink=0.8, label="intensity (z-score)")
fig.suptitle("What the model sees after preprocessing")
plt.show()

# %% [markdown]
# ## 7. Raw heads: the ten IXI scans
#
# Real scans are not on the model grid. The IXI dataset (healthy adults, CC BY-SA 3.0) stores
# full heads, not skull-stripped, not registered, in the scanner's own orientation. The course
# machine has ten of them (downsampled to 2 mm); set `SLICELIB_IXI10` to their folder. On Colab
# or Binder they are absent and this section only prints a note: the code is the same for any
# folder of T1 scans with an age table.
#
# `preprocess(..., centre="brain")` (the default) reorients the head to RAS, *translates* it so
# the top of the head and the centre of the cranium sit where they sit in MNI space, resamples
# it onto the grid and z-scores it. This is **not** a registration: no rotation, scaling or
# warping, so brains are centred but not aligned voxel by voxel. For real studies, register to
# MNI152 first (ANTsPy, FSL FLIRT, SPM) and use `PreprocessConfig(centre="none")`.

# %%
IXI_DIR = Path(os.environ.get("SLICELIB_IXI10") or shared_dir() / "data" / "ixi10")
HAVE_IXI = (IXI_DIR / "participants.tsv").is_file()
if HAVE_IXI:
    from slicelib.datasets import ixi_table

    ixi = ixi_table(IXI_DIR).head(N_IXI)
    display(ixi[["participant_id", "age", "sex"]])
    raw = nib.load(ixi["path"].iloc[0])
    print(
        f"{ixi['participant_id'].iloc[0]}: shape {raw.shape}, voxel size "
        f"{raw.header.get_zooms()} mm, orientation {nib.aff2axcodes(raw.affine)}"
    )
    print(
        "array axis 0 points to",
        nib.aff2axcodes(raw.affine)[0],
        "(posterior), axis 1 to",
        nib.aff2axcodes(raw.affine)[1],
        "(superior), axis 2 to",
        nib.aff2axcodes(raw.affine)[2],
        "(right): not RAS",
    )
else:
    ixi = None
    print(
        f"No IXI heads at {IXI_DIR} (set SLICELIB_IXI10 to a folder with participants.tsv); "
        "skipping section 7. The code below is what you run on your own folder."
    )

# %% [markdown]
# nilearn uses the affine, so the raw head is drawn upright even though its array is stored
# posterior-superior-right. Then we preprocess every head and report what was done: the
# translation applied, and which fraction of the head's volume lies inside the grid (the neck
# falls below it).

# %%
if HAVE_IXI:
    d = plotting.plot_anat(
        raw,
        display_mode="ortho",
        title=f"raw IXI head {ixi['participant_id'].iloc[0]} (scanner space)",
        colorbar=True,
        dim=-0.3,
    )
    label_colorbar(d, "intensity (scanner units)")
    report, volumes = [], []
    for rec in tqdm(ixi.itertuples(), total=len(ixi), desc="preprocess IXI", unit="head"):
        v, aff, info = preprocess(rec.path, PreprocessConfig(), return_info=True)
        volumes.append(v)
        report.append(
            {
                "participant_id": rec.participant_id,
                "age": rec.age,
                "from": "".join(info["source_axcodes"]),
                "source shape": info["source_shape"],
                "shift (mm)": np.round(info["shift_mm"], 1),
                "inside grid": round(info["inside_fraction"], 2),
            }
        )
    display(pd.DataFrame(report))

# %%
if HAVE_IXI:
    from nilearn.datasets import load_mni152_brain_mask

    d = plotting.plot_anat(
        nib.Nifti1Image(volumes[0], aff),
        display_mode="ortho",
        cut_coords=(0, -18, 18),
        title=f"{ixi['participant_id'].iloc[0]} on the model grid; red: MNI152 brain outline",
        colorbar=True,
        dim=-0.3,
    )
    d.add_contours(load_mni152_brain_mask(), levels=[0.5], colors="r", linewidths=1)
    label_colorbar(d, "intensity (z-score)")

    n = len(volumes)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n + 1, 2.6), layout="constrained", squeeze=False)
    for ax, v, rec in zip(axes[0], volumes, ixi.itertuples()):
        im = ax.imshow(v[45].T, cmap="gray", origin="lower", vmin=-2, vmax=3)
        ax.set_title(f"{rec.participant_id[:6]}, {rec.age:.0f} y", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("z (inferior → superior)")
    axes[0, 0].set_xlabel("y (posterior → anterior)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="intensity (z-score)")
    fig.suptitle("Mid-sagittal slice (x = 0 mm) of each preprocessed IXI head")
    plt.show()

# %% [markdown]
# The heads land centred on the grid with the brain inside the MNI outline, give or take the
# head-size and tilt differences that a translation cannot remove; the neck is cut off below the
# grid (the "inside grid" column). These ten scans are for trying the "bring your own scans"
# path and for inference, not for training.
#
# ## 8. Your own data
#
# ### A BIDS folder or a table of files
#
# Point `read_table` at a BIDS folder (a `participants.tsv` with `participant_id` and your target
# column, and `sub-<id>/anat/*_T1w.nii.gz`), or at a TSV/CSV with a path column (relative paths
# are relative to the table). It checks every row and explains what is wrong. Here we write a
# small CSV that points at two of our files, and then one with a mistake:

# %%
own = data_dir() / "own_table_example"
own.mkdir(parents=True, exist_ok=True)
rows = participants.head(2)
pd.DataFrame(
    {
        "participant_id": rows["participant_id"],
        "t1": [str(cohort / p / "anat" / f"{p}_T1w.nii.gz") for p in rows["participant_id"]],
        "age": rows["age"],
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
# For your own folder (uncomment; `MY_FOLDER` is a BIDS dataset, `MY_TABLE` a CSV):
#
# ```python
# table = read_table("MY_FOLDER", target="age")                       # BIDS
# table = read_table("MY_TABLE.csv", target="age", path_column="t1")  # a table of files
# ds = VolumeDataset(table, target="age", preprocess=PreprocessConfig())  # raw heads: centre="brain"
# ```
#
# ### OASIS-1 (real data with age and dementia ratings)
#
# OASIS-1 has 403 adults (18 to 96 years) with MMSE and CDR ratings (CDR > 0: very mild to
# moderate dementia). nilearn downloads a version of it with one call, about **800 MB**, under
# the OASIS data usage agreement. The images are grey-matter density maps already normalised to
# MNI space (not raw T1), so they are preprocessed with `centre="none"` (stored in
# `table.attrs["preprocess"]`). The download is off by default; set `DOWNLOAD_OASIS = True` to
# fetch it (it needs internet and a few minutes), then use the table exactly like the synthetic
# one, with target `age` or `dementia`.

# %%
DOWNLOAD_OASIS = False

if DOWNLOAD_OASIS:
    from slicelib.datasets import fetch_oasis

    oasis = fetch_oasis(n_subjects=None)  # files go to $NILEARN_DATA or ~/nilearn_data
    display(oasis[["participant_id", "age", "sex", "mmse", "cdr", "dementia"]].head())
    print(oasis["dementia"].value_counts())
    oasis_ds = VolumeDataset(oasis, target="dementia", preprocess=oasis.attrs["preprocess"])
else:
    print("OASIS-1 download skipped (DOWNLOAD_OASIS = False).")

# %% [markdown]
# ## Summary
#
# * A NIfTI image = a voxel array + an affine (voxel -> mm) + a header; `nib.aff2axcodes` tells
#   the orientation, and nilearn plots in world coordinates.
# * A slice model sees a volume as a stack of 2D slices along one axis: 91 sagittal, 109
#   coronal or 91 axial images on the 2 mm grid.
# * The synthetic cohort has known effects: age (cortical thinning, ventricle growth, clearly
#   visible in measured volumes) and AD (hippocampal/amygdala GM loss, small, overlapping with
#   normal variation, and confounded with age). Its ground-truth maps are in
#   `derivatives/ground_truth/`.
# * Raw heads go through reorientation, centring (not registration), resampling and
#   z-scoring; your own data enter through `read_table`.
#
# Next: notebook 02 trains the same slice model from ImageNet weights and from scratch.
