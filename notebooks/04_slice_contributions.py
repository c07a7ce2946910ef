# %% [markdown]
# # 04 · Which slices does the model use? Slice contributions, against a known truth and on real heads
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/slicelib/slicelib/blob/main/notebooks/04_slice_contributions.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/slicelib/slicelib/main?labpath=notebooks%2F04_slice_contributions.ipynb)
#
# A slice model turns a 3D scan into a set of 2D slices, encodes each one and pools them. That
# design has a bonus: we can ask **how much each slice contributed** to a prediction. This
# notebook measures per-slice importance three ways: the model's own **attention weights**,
# **occlusion** (blank one slice, see how much the output moves) and **integrated gradients** (a
# gradient method), draws them along the slice axis and paints them back into the brain over the
# MNI152 template with nilearn.
#
# An explanation method is only worth as much as our ability to check it, so we start where the
# answer is known: the synthetic cohort of notebook 01, whose Alzheimer's disease (AD) effect was
# planted by the generator (medial temporal atrophy). Each method's importance profile is
# compared with the generator's ground-truth profile. Then we turn to **real heads**: a brain-age
# model trained on the real IXI scans that ship with slicelib, where no ground truth exists and
# the profile has to be read with anatomical sense and controls.
#
# Both models are trained by `slicelib.train` in its **frozen-encoder** mode (section 2 says why).
#
# **Where the data come from.** The synthetic cohort is generated on the first run (shared with
# notebooks 01-03). The real scans are a compact derivative of 138 IXI heads on the 4 mm MNI
# grid that ships with slicelib: a checkout reads it from `data/ixi_hh_4mm`, and the wheel
# carries the same files (with `data/ixi_demo`) as package data, `slicelib/_data/ixi_hh_4mm`;
# `slicelib.datasets.ixi_derivative()` finds either (`slicelib.datasets.shipped_dir()`), so
# there is nothing to download. The ImageNet encoder
# weights come from a local folder named by the environment variable `SLICELIB_WEIGHTS_DIR`
# (holding `<backbone>_imagenet1k.pth`, e.g. `mobilenet_v2_imagenet1k.pth`) when it is set, else
# from torchvision's download.
#
# **Time.** `PRESET="smoke"` (CI) is a plumbing check on tiny data: its numbers mean nothing.
# `PRESET="cpu"` is made for a laptop with 2 cores and should stay under 10 minutes (the
# measured time is printed at the end); most of it is generating the synthetic cohort (first run
# only) and encoding every slice once. `PRESET="gpu"`: the 2 mm grid for the synthetic cohort
# (the real heads stay on the derivative's 4 mm grid), 1000 subjects and 32-step integrated
# gradients.

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
# The preset sets the sizes. Synthetic part: the cohort (`N`, shared with notebooks 01-03), the
# grid the model reads (`GRID` voxels of `VOXEL` mm), the training length, how many subjects are
# explained (`N_EXPLAIN`) and the integration steps of integrated gradients (`IG_STEPS`: 2 is a
# coarse approximation, 32 a good one). Real part: how many IXI heads (`N_REAL`, `None` = all
# that pass QC; the shipped derivative has a fixed 4 mm grid) and epochs. We slice **axially**
# (along z): the planted AD effect lies in a band of axial slices low in the brain, while ageing
# acts all over the brain and most around the ventricles, higher up.

# %%
SYNTH = {
    "smoke": dict(N=24, GRID=(23, 27, 23), VOXEL=8.0, EPOCHS=3, IG_STEPS=2, N_EXPLAIN=2),
    "cpu": dict(N=200, GRID=(45, 54, 45), VOXEL=4.0, EPOCHS=25, IG_STEPS=2, N_EXPLAIN=8),
    "gpu": dict(N=1000, GRID=(91, 109, 91), VOXEL=2.0, EPOCHS=100, IG_STEPS=32, N_EXPLAIN=100),
}
REAL = {
    "smoke": dict(N_REAL=30, EPOCHS_REAL=3),
    "cpu": dict(N_REAL=None, EPOCHS_REAL=40),
    "gpu": dict(N_REAL=None, EPOCHS_REAL=100),
}
if PRESET not in SYNTH:
    raise ValueError(f"PRESET must be one of {list(SYNTH)}, got {PRESET!r}")
S = {**SYNTH[PRESET], **REAL[PRESET]}
AXIS, BACKBONE_WANTED, LR = "axial", "mobilenet_v2", 1e-3
print(f"preset {PRESET}: {S}")

# %%
import time

T_START = time.perf_counter()

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from sklearn.metrics import roc_auc_score

from slicelib import explain as E
from slicelib import plotting as P
from slicelib.course import ensure_synthetic_cohort, imagenet_weights, runs_dir
from slicelib.data import PreprocessConfig
from slicelib.datasets import (
    IXI_DERIVATIVE_PREPROCESS,
    ixi_derivative,
    ixi_derivative_rois,
    read_table,
)
from slicelib.frozen import FrozenHead, cached_features
from slicelib.runs import evaluate_run, load_run, volume_dataset
from slicelib.train import TrainConfig, train
from slicelib.utils import mni_template

torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## 1. The synthetic cohort: a realistic AD effect, confounded with age
#
# The cohort's AD effect imitates **medial temporal atrophy** as radiologists rate it on the MTA
# visual scale: local grey-matter loss in hippocampus, amygdala and parahippocampal gyrus, plus
# widening of the CSF spaces beside them (temporal horn, choroidal fissure).
#
# As in clinical cohorts, AD is more frequent in older subjects, so **age alone** separates the
# groups partly (its AUC is printed below). That confound is the trap for explanations: a model
# can score well by reading ageing (larger ventricles, thinner cortex) instead of the medial
# temporal lobe. So the importance profiles are compared not only with the AD effect but also
# with where ageing acts: a method that points at the AD band, and not at where ageing acts, is
# evidence that the model uses the AD effect itself.

# %%
cohort = ensure_synthetic_cohort(S["N"], seed=SEED)
table = read_table(cohort, target="ad")
print(table["diagnosis"].value_counts().to_string())
print(table.groupby("diagnosis")["age"].describe()[["mean", "min", "max"]].round(0))
auc_age = roc_auc_score(table["ad"], table["age"])
print(f"AUC of age alone for AD vs CN in this cohort: {auc_age:.2f} (0.5 = no information)")

# %% [markdown]
# ## 2. A slice model with a frozen ImageNet encoder, trained by the library
#
# * **Encoder:** MobileNetV2 with ImageNet weights (`slicelib.course.imagenet_weights` finds
#   them, or says that it falls back to random weights). It is **frozen**: a fixed feature
#   extractor, the "feature extraction" mode of transfer learning (the other mode, fine-tuning,
#   is notebook 02's).
# * **Trained part:** the projection to 32 dimensions, a learned **position** embedding (so the
#   model knows where each slice lies), the LayerNorm over the slice set, **attention** pooling
#   (so it has its own per-slice weights we can read) and the head.
#
# Why frozen? Fine-tuning pushes every slice of every scan through the 2D network forwards *and
# backwards* in every epoch. With a frozen encoder, `TrainConfig(freeze_encoder=True)` encodes
# every slice once, caches the features on disk (keyed by the encoder's weights, the
# preprocessing and the grid, so stale features are never reused) and trains the small layers on
# them: an epoch takes well under a second on a CPU. The checkpoint holds the whole model, so
# evaluation and the explanations below see one ordinary `SliceModel`, encoder included.
#
# The synthetic scans are already in MNI space (their NIfTI header says so), so preprocessing
# keeps their coordinates and the ground-truth maps line up with the model's grid. `train`
# splits the subjects (70 % train, 15 % validation to pick the epoch, 15 % test; stratified by
# diagnosis, seeded) and weights the loss by class (`class_weights="balanced"`, the default), so
# the AD minority counts as much as the controls.

# %%
BACKBONE, WEIGHTS, weights_note = imagenet_weights(BACKBONE_WANTED)
print(f"encoder {BACKBONE}: {weights_note}")
MODEL = dict(backbone=BACKBONE, weights=WEIGHTS, embed_dim=32, position="learned")
MODEL.update(pooling="attention", axes=AXIS)
RUNS = runs_dir("04", PRESET)
ad_config = TrainConfig(
    data=str(cohort),
    target="ad",
    task="binary",
    out=str(RUNS / f"ad_frozen_{BACKBONE}_{AXIS}_seed{SEED}"),
    model=MODEL,
    freeze_encoder=True,
    preprocess=dict(volume_shape=S["GRID"], voxel_size=S["VOXEL"]),
    epochs=S["EPOCHS"],
    batch_size=16,
    lr=LR,
    patience=None,
    seed=SEED,
    split_seed=SEED,
)
t0 = time.perf_counter()
ad_run = train(ad_config)
print(f"trained (or reused) {ad_run.name} in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# The learning curves, then the test split scored by `slicelib.runs.evaluate_run` with 95 %
# bootstrap intervals: the test split is small, so the interval matters more than the point.

# %%
ad_history = pd.read_csv(ad_run / "history.csv")
P.plot_learning_curves(
    ad_history,
    metrics=["val_auc", "val_balanced_accuracy"],
    loss_label="loss (class-balanced binary cross-entropy)",
    title=f"AD vs CN: frozen {BACKBONE} slice features, attention pooling ({AXIS})",
)
plt.show()
ad_test = evaluate_run(ad_run, split="test", progress=False)
keys = ["n", "auc", "auc_ci95", "balanced_accuracy", "balanced_accuracy_ci95"]
display(pd.Series({k: ad_test[k] for k in keys + ["baseline_balanced_accuracy"]}, name="test"))

# %% [markdown]
# A first check of the age confound: among held-out subjects (validation and test) aged 60 or
# more, age separates AD from CN much less, so a model that only read age would lose most of its
# AUC there. The outputs come from the cached slice features through the trained layers
# (`FrozenHead`): the same function as the full model, without encoding again. (The validation
# subjects chose the epoch: a small optimism.)

# %%
model, meta = load_run(ad_run)
split = pd.read_csv(ad_run / "split.csv", dtype={"participant_id": str})
table = table.merge(split[["participant_id", "split"]], on="participant_id")
held = table[table["split"].isin(["val", "test"])].reset_index(drop=True)
held_ds = volume_dataset(held, "ad", meta["preprocess"])
with torch.no_grad():
    held["logit"] = FrozenHead(model)(cached_features(model, held_ds)).numpy()
old = held[held["age"] >= 60]
auc_old = {"model": np.nan, "age alone": np.nan}
if 0 < old["ad"].sum() < len(old):
    auc_old = {
        k: roc_auc_score(old["ad"], old[c]) for k, c in [("model", "logit"), ("age alone", "age")]
    }
print(f"held-out subjects aged 60+: {len(old)} ({int(old['ad'].sum())} AD); AUC {auc_old}")

# %% [markdown]
# ## 3. Per-slice importance, three ways
#
# We explain the model's AD logit on held-out AD subjects (the ground-truth AD effect exists
# only in AD subjects).
#
# * **Attention:** the softmax pooling weights, free to read, but they say where the pooling
#   looked, not what changed the answer.
# * **Occlusion:** replace one slice by background and measure |Δ logit|; in principle one model
#   run per slice, but `slicelib.explain` swaps slice embeddings, so it costs one pass.
# * **Integrated gradients:** the gradient of the logit with respect to every voxel, averaged on
#   the path from a blank volume to the scan, times (scan - blank), summed per slice. It needs
#   backward passes through the encoder, so it is the costly one; its voxel map can also be
#   shown in the brain.

# %%
ad_held = held[held["ad"] == 1].head(S["N_EXPLAIN"])
ds = volume_dataset(ad_held, "ad", meta["preprocess"])
x = torch.stack([ds[i][0] for i in range(len(ds))])  # (B, 1, X, Y, Z)
print(f"explaining {len(ad_held)} held-out AD subjects, volumes {tuple(x.shape)}")
t0 = time.perf_counter()
results = {
    "attention": E.attention_importance(model, x),
    "occlusion": E.occlusion_importance(model, x, target=1),
    "integrated gradients": E.gradient_importance(
        model, x, steps=S["IG_STEPS"], target=1, return_map=True, batch_size=2
    ),
}
p_ad = torch.sigmoid(torch.as_tensor(results["occlusion"].output)).numpy()
print(f"three methods in {time.perf_counter() - t0:.0f} s")
print(f"P(AD) on these AD subjects: mean {p_ad.mean():.2f}, min {p_ad.min():.2f}")

# %% [markdown]
# ## 4. The ground truth on the model's grid
#
# The generator's AD effect map (`derivatives/ground_truth/ad_effect.nii.gz`) is on the 2 mm
# MNI grid; the model reads a coarser grid, so we resample it onto that grid
# (`explain.resample_to_grid`). Summing |effect| in each axial slice gives the **ground-truth
# profile**. Two controls: the profile of the **age** effect (where ageing changes the image) and
# the **brain extent** (brain voxels per slice). A method that only finds "where the brain is" or
# "where ageing acts" would correlate with them as well as, or better than, with the AD profile.

# %%
pcfg = PreprocessConfig.from_dict(meta["preprocess"])
grid = (pcfg.affine, pcfg.volume_shape)
truth_dir = cohort / "derivatives" / "ground_truth"
ad_effect = np.clip(E.resample_to_grid(truth_dir / "ad_effect.nii.gz", *grid), 0, None)
age_effect = np.clip(E.resample_to_grid(truth_dir / "age_effect.nii.gz", *grid), 0, None)
brain = mni_template(pcfg.volume_shape, pcfg.affine, "mask").get_fdata()
profiles = {
    "AD effect": E.ground_truth_profile(ad_effect, AXIS),
    "age effect": E.ground_truth_profile(age_effect, AXIS),
    "brain extent": E.ground_truth_profile(brain, AXIS),
}
z_mm = E.slice_coordinates(pcfg.affine, AXIS, pcfg.volume_shape[2])
in_band = profiles["AD effect"] > 0.05 * profiles["AD effect"].max()
print(f"AD ground-truth band: z = {z_mm[in_band].min():.0f} to {z_mm[in_band].max():.0f} mm")

# %% [markdown]
# ## 5. Importance along the slice axis
#
# Each curve is scaled to a peak of 1; the dashed black line is the ground-truth AD profile, and
# the legend gives each method's Pearson r with it. The grey band marks the slices holding the
# AD effect; the dotted grey line is the age-effect control.

# %%
fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
P.plot_slice_importance(
    results,
    ground_truth=profiles["AD effect"],
    axis=AXIS,
    affine=pcfg.affine,
    ground_truth_label="ground-truth AD effect",
    title=f"Per-slice importance for the AD logit ({len(ad_held)} held-out AD subjects)",
    ax=ax,
)
k = np.flatnonzero(in_band)
ax.axvspan(k.min() - 0.5, k.max() + 0.5, color="0.85", zorder=0, label="AD band")
age_curve = E.importance_profile(profiles["age effect"], normalise="max")
ax.plot(age_curve, ":", color="0.4", label="age effect (control)")
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()

# %% [markdown]
# ### The comparison table
#
# Pearson r between each importance profile (mean over subjects) and each reference profile, the
# axial position of each profile's peak, and the share of its total importance inside the AD
# band; the last row is what a flat profile gets (the band's share of the slices).

# %%
summary = E.profile_table(results, profiles, AXIS, band=in_band, coords=z_mm)
display(summary.round(2))

# %% [markdown]
# ## 6. Back into the brain
#
# A per-slice profile can be painted back into the volume (every voxel of slice *k* gets slice
# *k*'s importance) and shown over the MNI152 template: for one axis this gives horizontal
# bands. The integrated-gradients map has a value per voxel, so it could be finer: compare its
# glass brain with the ground-truth AD map drawn after it. The cuts go through the peak of the
# ground-truth AD map.

# %%
CUTS = tuple(
    pcfg.affine[:3, :3] @ np.argwhere(ad_effect == ad_effect.max())[0] + pcfg.affine[:3, 3]
)
P.plot_importance_on_brain(
    E.to_volume(results["occlusion"], pcfg.volume_shape, AXIS),
    pcfg.affine,
    title="Occlusion importance painted per axial slice (synthetic AD model)",
    colorbar_label="|Δ AD logit| when the slice is blanked",
    cut_coords=CUTS,
)
plt.show()

# %%
ig_map = np.abs(results["integrated gradients"].extra["map"]).mean(axis=0)  # (X, Y, Z)
top = ig_map > np.percentile(ig_map, 99)
for volume, title, label in [
    (ig_map, "Integrated gradients, mean |attribution| per voxel", "|attribution| (AD logit)"),
    (ad_effect, "Ground truth: AD effect on the model grid", "intensity change (fraction of WM)"),
]:
    P.plot_importance_on_brain(
        volume, pcfg.affine, "glass_brain", title=title, colorbar_label=label
    )
    plt.show()
ad_region = ad_effect > 0.05 * ad_effect.max()
voxel_r = E.profile_correlation(ig_map.ravel(), ad_effect.ravel())
print(f"voxel-wise r(|IG|, AD effect) = {voxel_r:.2f}")
print(
    f"{ad_region[top].mean():.1%} of the top-1 % IG voxels lie in the AD region, which covers "
    f"{ad_region.mean():.1%} of the grid"
)

# %% [markdown]
# ## 7. What the synthetic numbers say
#
# The reading below is computed from this run's table, so it stays true whatever preset or seed
# produced it. A method "points at the planted effect" when its profile correlates with the AD
# profile (r > 0.5) better than with either control.

# %%
lo, hi = np.array(ad_test["auc_ci95"], dtype=float)  # NaN if undefined (tiny test split)
lines = [
    f"Classifier: test AUC {ad_test['auc']:.2f} (95 % CI {lo:.2f}-{hi:.2f}) on "
    f"{ad_test['n']} subjects; age alone: {auc_age:.2f}. "
    f"Held-out subjects aged 60+: model {auc_old['model']:.2f}, age alone "
    f"{auc_old['age alone']:.2f}."
]
for name, row in summary.drop(index="flat profile (reference)").iterrows():
    r_ad, r_age, r_brain = (row[f"r with {k}"] for k in profiles)
    verdict = (
        "is flat: it says nothing"
        if not np.isfinite(r_ad)
        else "points at the planted effect"
        if r_ad > 0.5 and r_ad > max(r_age, r_brain)
        else "overlaps the AD band, but no better than a control"
        if r_ad > 0.3
        else "does not follow the AD band"
    )
    lines.append(
        f"**{name}** {verdict}: r = {r_ad:+.2f} with the AD profile ({r_age:+.2f} age, "
        f"{r_brain:+.2f} brain extent), peak at z = {row['peak (mm)']:.0f} mm, "
        f"{row['share in band']:.0%} of its importance in the AD band "
        f"(flat: {summary.loc['flat profile (reference)', 'share in band']:.0%})."
    )
display(Markdown("\n".join(f"- {s}" for s in lines)))

# %% [markdown]
# **How to read it.** First check that the model works and that it beats the age confound: if
# its AUC among the over-60s falls to that of age alone, it is reading ageing and its
# explanations will point where ageing acts. Then compare the methods: attention is usually the
# sharpest (a model that has learned where the effect is also learns to attend there), occlusion
# measures what actually changes the answer, and integrated gradients with few steps is coarse and
# tends to leak into neighbouring slices. Within a slice, the voxel map is usually not localised:
# a 2D encoder pools each slice into one feature vector, and the gradient through it spreads over
# the whole slice, so the glass brain shows a band at the right height rather than two medial
# temporal blobs. A slice model answers "which slices", not "which voxels".
#
# **Alignment first.** An earlier slicelib placed the synthetic scans as if they were raw heads
# and shifted them upwards by several slices. The model learned just as well, but every profile
# then peaked above the AD band and correlated better with the age control: the explanations
# were right, the ground truth was on a different grid. An importance map that disagrees with
# the expected anatomy can mean misalignment rather than a wrong model.
#
# ## 8. Real heads: where does a brain-age model look?
#
# Now the same recipe on real scans: a brain-age model (regression, years) on the IXI heads that
# ship with slicelib, preprocessed to the same 4 mm MNI grid by `slicelib.pipeline` (brain
# extraction, bias correction, affine registration; see notebook 01). Heads that failed the
# automatic QC are left out. Again frozen MobileNetV2, learned position, attention pooling, axial
# slices; `IXI_DERIVATIVE_PREPROCESS` tells the library that these volumes are already on the
# grid (no resampling or registration again).
#
# **There is no ground truth here.** Nobody knows which slices carry a real head's age. What we
# can say in general: ageing enlarges the ventricles and widens the sulci, and the medial
# temporal lobe (hippocampus) shrinks, so a sensible brain-age model should draw on slices
# through the lateral ventricles and the medial temporal lobe more than on the top of the head
# or the cerebellum, and its profile should not merely follow the amount of brain per slice. As
# references we use the brain extent (a control) and, for orientation, the synthetic
# generator's own ageing and AD maps on this grid: they mark where ventricles, cortex and medial
# temporal lobe lie, not what real ageing does.

# %%
ixi = ixi_derivative()
ixi = ixi[ixi["qc"] == "ok"]
if S["N_REAL"] is not None:
    ixi = ixi.sample(n=min(S["N_REAL"], len(ixi)), random_state=SEED)
RUNS.mkdir(parents=True, exist_ok=True)
ixi_file = RUNS / f"ixi_derivative_{len(ixi)}.tsv"
ixi.to_csv(ixi_file, sep="\t", index=False)
print(f"{len(ixi)} real IXI heads that pass QC, aged {ixi['age'].min():.0f}-{ixi['age'].max():.0f}")

# %%
age_config = TrainConfig(
    data=str(ixi_file),
    target="age",
    task="regression",
    out=str(RUNS / f"ixi_age_frozen_{BACKBONE}_{AXIS}_n{len(ixi)}_seed{SEED}"),
    model=MODEL,
    freeze_encoder=True,
    preprocess=dict(IXI_DERIVATIVE_PREPROCESS),
    epochs=S["EPOCHS_REAL"],
    batch_size=16,
    lr=LR,
    schedule="cosine",
    patience=None,
    seed=SEED,
    split_seed=SEED,
)
t0 = time.perf_counter()
age_run = train(age_config)
print(f"trained (or reused) {age_run.name} in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# Before reading any explanation: does the model predict age better than the baselines? The
# table gives the test MAE with its 95 % interval beside predicting the training mean age and a
# classical model (ridge regression on the log regional volumes of each head: one per DLMUSE
# label id, 260 in all, from the parcellation the CBICA NiChart project made on the raw heads'
# 2 mm grid, at a resolution it does not document; structures with a zero volume in some head
# are left out).

# %%
rois = ixi_derivative_rois()  # indexed by participant_id, volumes in mm^3
rois = rois.loc[:, (rois > 0).all()].copy().reset_index()  # the ridge works on log volumes: > 0
age_test = evaluate_run(age_run, split="test", baseline_features=rois, progress=False)
rows = {
    "slice model (frozen ImageNet)": ("mae", "mae_ci95"),
    "training mean age": ("baseline_mae", "baseline_mae_ci95"),
    "ridge on regional volumes": ("ridge_mae", "ridge_mae_ci95"),
}
age_table = pd.DataFrame(
    [(age_test[m], *age_test[ci]) for m, ci in rows.values()],
    index=list(rows),
    columns=["MAE (years)", "95 % CI low", "95 % CI high"],
)
r_pred = np.nan if age_test["pearson_r"] is None else age_test["pearson_r"]  # None: constant
print(f"test split: {age_test['n']} heads; Pearson r of predicted with true age {r_pred:.2f}")
display(age_table.round(1))

# %% [markdown]
# Where does it look? Attention and occlusion (|Δ predicted age| in years when one slice is
# blanked) on the test heads, against the brain extent per slice and, for orientation, the
# synthetic generator's ageing and medial temporal maps on this grid.

# %%
age_model, age_meta = load_run(age_run)
rcfg = PreprocessConfig.from_dict(age_meta["preprocess"])
rgrid = (rcfg.affine, rcfg.volume_shape)
age_split = pd.read_csv(age_run / "split.csv", dtype={"participant_id": str})
test_ids = set(age_split.loc[age_split["split"] == "test", "participant_id"])
test_heads = read_table(ixi_file, "age").query("participant_id in @test_ids")
rds = volume_dataset(test_heads, "age", age_meta["preprocess"])
xr = torch.stack([rds[i][0] for i in range(len(rds))])  # (B, 1, X, Y, Z)
real = {
    "attention": E.attention_importance(age_model, xr),
    "occlusion": E.occlusion_importance(age_model, xr),
}
print(f"{len(xr)} test heads explained; predicted ages {np.round(real['occlusion'].output)}")

# %% [markdown]
# The references on this grid: the brain extent (control) and the two synthetic maps, used only
# to locate anatomy (ventricles and cortex for the ageing map, the medial temporal lobe for the
# AD map).

# %%
brain_r = mni_template(rcfg.volume_shape, rcfg.affine, "mask").get_fdata()
real_refs = {
    "brain extent": E.ground_truth_profile(brain_r, AXIS),
    "synthetic ageing map": E.ground_truth_profile(
        E.resample_to_grid(truth_dir / "age_effect.nii.gz", *rgrid), AXIS
    ),
    "medial temporal lobe": E.ground_truth_profile(
        E.resample_to_grid(truth_dir / "ad_effect.nii.gz", *rgrid), AXIS
    ),
}
rz = E.slice_coordinates(rcfg.affine, AXIS, rcfg.volume_shape[2])
mtl = real_refs["medial temporal lobe"] > 0.05 * real_refs["medial temporal lobe"].max()
print(f"medial temporal band: z = {rz[mtl].min():.0f} to {rz[mtl].max():.0f} mm")

# %%
fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
P.plot_slice_importance(
    real,
    ground_truth=real_refs["brain extent"],
    axis=AXIS,
    affine=rcfg.affine,
    ground_truth_label="brain extent (control)",
    title=f"Brain age on real IXI heads: per-slice importance ({len(xr)} test heads)",
    ax=ax,
)
k = np.flatnonzero(mtl)
ax.axvspan(k.min() - 0.5, k.max() + 0.5, color="0.85", zorder=0, label="medial temporal band")
ageing_curve = E.importance_profile(real_refs["synthetic ageing map"], normalise="max")
ax.plot(ageing_curve, ":", color="0.4", label="synthetic ageing map (orientation)")
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()
real_summary = E.profile_table(real, real_refs, AXIS, band=mtl, coords=rz)
display(real_summary.round(2))

# %%
occ_real = E.to_volume(real["occlusion"], rcfg.volume_shape, AXIS)  # (X, Y, Z), years
peak_z = real_summary.loc["occlusion", "peak (mm)"]
P.plot_importance_on_brain(
    occ_real,
    rcfg.affine,
    title=f"Brain age, real heads: occlusion per axial slice (peak at z = {peak_z:.0f} mm)",
    colorbar_label="|Δ predicted age| (years) when the slice is blanked",
    cut_coords=(0.0, -20.0, peak_z),
)
plt.show()

# %% [markdown]
# ## 9. What the real-data numbers say (and do not say)

# %%
occ = real_summary.loc["occlusion"]
mae, base, ridge = age_test["mae"], age_test["baseline_mae"], age_test["ridge_mae"]
lo, hi = np.array(age_test["mae_ci95"], dtype=float)  # NaN if undefined (tiny test split)
agree = E.profile_correlation(real["attention"].profile(), real["occlusion"].profile())
flat = real_summary.loc["flat profile (reference)", "share in band"]
r_lo, r_hi = np.array(age_test["ridge_mae_ci95"], dtype=float)
verdict = (
    "learned (better than the mean age)" if hi < base else "is not clearly better than the mean age"
)
verdict += (
    f", and is {'better' if mae < ridge else 'worse'} than ridge (95 % CI {r_lo:.1f}-{r_hi:.1f})"
)
display(
    Markdown(f"""
- The slice model's test MAE is {mae:.1f} years (95 % CI {lo:.1f}-{hi:.1f}) against {base:.1f}
  for the mean age and {ridge:.1f} for ridge on regional volumes, on {age_test["n"]} test heads:
  it {verdict}.
- Occlusion peaks at z = {occ["peak (mm)"]:.0f} mm. Its profile correlates at
  r = {occ["r with brain extent"]:+.2f} with the brain extent per slice and
  {occ["r with synthetic ageing map"]:+.2f} with the synthetic ageing map, and puts
  {occ["share in band"]:.0%} of its importance in the medial temporal band (a flat profile:
  {flat:.0%}).
- Attention and occlusion profiles agree at r = {agree:+.2f}.
""")
)

# %% [markdown]
# **Caveats.** These profiles are not validated: no ground truth exists for real heads, the test
# split is small, and one seed of a frozen encoder trained on a small set of heads (the counts are
# printed above) is a weak basis. Read them as hypotheses: a profile that mostly follows the brain
# extent says "the model uses the whole brain" and little else; one that stands out over the slices
# through the ventricles or the medial temporal lobe is anatomically plausible for ageing, and one
# that peaks at the top of the head or in the cerebellum asks for a closer look (misalignment, a
# scanner or QC artefact, a bias of the cohort). On the synthetic cohort we could check the methods
# against the truth; here the same methods only tell us where this model looked. The lessons that
# carry over: (1) check that the model works, and beats the baselines and confounds, before reading
# its explanations; (2) compare several methods; (3) compare the profiles with trivial controls
# such as the amount of brain per slice; (4) check that scans and reference maps share one grid.

# %%
out = RUNS / "slice_importance_tables.csv"
tables = pd.concat({"synthetic AD": summary, "real brain age": real_summary}, names=["model"])
tables.to_csv(out)
print(f"tables saved to {out}; notebook ran in {time.perf_counter() - T_START:.0f} s")
