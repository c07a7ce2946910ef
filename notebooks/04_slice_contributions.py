# %% [markdown]
# # 04 · Which slices does the model use? Slice contributions against a known ground truth
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/slicelib/slicelib/blob/main/notebooks/04_slice_contributions.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/slicelib/slicelib/main?labpath=notebooks%2F04_slice_contributions.ipynb)
#
# *(The badges point at the placeholder repository `https://github.com/slicelib/slicelib`; they
# must be changed to the real URL once the project is published.)*
#
# A slice model turns a 3D scan into a set of 2D slices, encodes each one and pools them. That
# design has a bonus: we can ask **how much each slice contributed** to a prediction. This
# notebook trains a small slice model to tell Alzheimer's disease (AD) from controls (CN) on the
# synthetic cohort of notebook 01 and measures per-slice importance three ways: the model's own
# **attention weights**, **occlusion** (blank one slice, see how much the output moves) and
# **integrated gradients** (a gradient method). We draw them as curves along the slice axis and
# paint them back into the brain over the MNI152 template with nilearn. Because the cohort was
# generated with a known AD effect (medial temporal atrophy: grey-matter loss in hippocampus,
# amygdala and parahippocampal gyrus, and wider CSF spaces around them), we can check each
# method against the truth: the correlation between its importance profile and the ground-truth
# profile along the slice axis. Real data never offer that check.
#
# **Time.** `PRESET="smoke"` (CI): about a minute, with a tiny cohort and grid (the numbers mean
# nothing). `PRESET="cpu"` (a laptop, 2 cores): under 2 minutes after notebook 01 (80 s measured on
# 2 quiet cores; up to 8.5 minutes on a machine shared with other jobs, or when the 200-subject
# course cohort must first be generated, about 1.5 minutes): preprocessing the scans to a 4 mm grid
# and encoding every slice once with a frozen MobileNetV2 (about a minute), then training the small
# layers after it and the explanations (under a minute; a rerun that finds the stored slice
# features takes only that). `PRESET="gpu"`: the 2 mm grid, 1000 subjects and 32-step integrated
# gradients; minutes on a GPU (the cohort generation runs on the CPU).

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
# The preset sets the sizes: the cohort (`N_SUBJECTS`, shared with notebooks 01-03), the
# grid the model reads (`GRID` voxels of `VOXEL` mm), the 2D encoder, the training length, how
# many subjects are explained (`N_EXPLAIN`) and the integration steps of integrated gradients
# (`IG_STEPS`; 2 on the CPU is a coarse approximation, 32 on a GPU is a good one). We slice
# **axially** (along z): the AD effect lies in a band of axial slices low in the brain (z
# between about -30 and -6 mm, printed in section 4), while ageing acts all over the brain and
# most around the ventricles, higher up; a good importance profile should peak in the AD band.

# %%
SIZES = {
    "smoke": dict(
        N_SUBJECTS=24,
        GRID=(23, 27, 23),
        VOXEL=8.0,
        BACKBONE="mobilenet_v2",
        EPOCHS=3,
        LR=1e-3,
        IG_STEPS=2,
        N_EXPLAIN=2,
    ),
    "cpu": dict(
        N_SUBJECTS=200,
        GRID=(45, 54, 45),
        VOXEL=4.0,
        BACKBONE="mobilenet_v2",
        EPOCHS=40,
        LR=1e-3,
        IG_STEPS=2,
        N_EXPLAIN=12,
    ),
    "gpu": dict(
        N_SUBJECTS=1000,
        GRID=(91, 109, 91),
        VOXEL=2.0,
        BACKBONE="mobilenet_v2",
        EPOCHS=100,
        LR=1e-3,
        IG_STEPS=32,
        N_EXPLAIN=100,
    ),
}
if PRESET not in SIZES:
    raise ValueError(f"PRESET must be one of {list(SIZES)}, got {PRESET!r}")
S = SIZES[PRESET]
AXIS = "axial"
print(f"preset {PRESET}: {S}")

# %%
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from nilearn import image as nimg
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from slicelib import explain as E
from slicelib import plotting as P
from slicelib.course import course_split, ensure_synthetic_cohort, imagenet_weights, runs_dir
from slicelib.data import CACHE_VERSION, PreprocessConfig, VolumeDataset
from slicelib.datasets import read_table
from slicelib.metrics import compute_metrics
from slicelib.model import AXES, SliceModel

torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## 1. The course cohort: a realistic AD effect, confounded with age
#
# We use the synthetic cohort of notebooks 01-03 (made once, then shared). Its AD effect imitates
# **medial temporal atrophy** as radiologists rate it on the MTA visual scale: 30-50 % local
# grey-matter loss in hippocampus, amygdala and parahippocampal gyrus, plus widening of the CSF
# spaces beside them (temporal horn, choroidal fissure). About 30 % of the subjects have AD.
#
# As in clinical cohorts, AD is more frequent in older subjects, so **age alone** separates the
# groups partly (its AUC is printed below). That confound is the trap for explanations: a model
# can score well by reading ageing (larger ventricles, thinner cortex) instead of the medial
# temporal lobe. So in section 4 the importance profiles are compared not only with the AD
# effect but also with the profile of the age effect: a method that points at the AD band, and
# not at where ageing acts, is evidence that the model uses the AD effect itself.

# %%
cohort = ensure_synthetic_cohort(S["N_SUBJECTS"], seed=SEED)
participants = pd.read_csv(cohort / "participants.tsv", sep="\t")
print(participants["diagnosis"].value_counts().to_string())
print(participants.groupby("diagnosis")["age"].describe()[["mean", "min", "max"]].round(0))
auc_age = roc_auc_score(participants["ad"], participants["age"])
print(f"AUC of age alone for AD vs CN in this cohort: {auc_age:.2f} (0.5 = no information)")

# %% [markdown]
# ## 2. A slice model with a frozen ImageNet encoder
#
# * **Encoder:** MobileNetV2 with ImageNet weights (`slicelib.course.imagenet_weights`: a local
#   file in `SLICELIB_WEIGHTS_DIR` when there is one, else torchvision's download as on Colab,
#   else random weights, and the cell says which). We **freeze** it: it is a fixed feature
#   extractor, as in a "linear probe" of a pretrained network.
# * **Trained part:** the projection to 32 dimensions, a learned **position** embedding (so the
#   model knows where each slice lies), **attention** pooling (so it has its own per-slice
#   weights we can read) and the head: about 50 thousand parameters instead of 2.3 million.
#
# Why frozen? It is a choice for laptop speed, not for accuracy. Fine-tuning the whole encoder
# (notebook 02, `slicelib.train`) pushes every slice of every scan through the 2D network
# forwards *and backwards* in every epoch. With a frozen encoder each scan is encoded once, and
# an epoch of training the small layers on the stored slice features takes well under a second,
# so 200 subjects and tens of epochs fit a laptop CPU. The explanation methods below do not
# care: they see one ordinary `SliceModel`, gradients through the encoder included.


# %%
BACKBONE, WEIGHTS, weights_note = imagenet_weights(S["BACKBONE"])
print(f"encoder {BACKBONE}: {weights_note}")
# the synthetic scans are already in MNI space: keep their coordinates (see below)
pcfg = PreprocessConfig(volume_shape=S["GRID"], voxel_size=S["VOXEL"])
model = SliceModel(
    BACKBONE,
    weights=WEIGHTS,
    embed_dim=32,
    position="learned",
    pooling="attention",
    axes=AXIS,
    task="binary",
    volume_shape=pcfg.volume_shape,
    seed=SEED,
).eval()
for p in model.encoder.parameters():
    p.requires_grad_(False)
trained = [p for p in model.parameters() if p.requires_grad]
print(
    f"trainable parameters: {sum(p.numel() for p in trained):,} "
    f"(encoder, frozen: {sum(p.numel() for p in model.encoder.parameters()):,})"
)

# %% [markdown]
# The data: every subject preprocessed onto the model grid (cached on disk, so a second run or
# another notebook on the same grid reuses it) and a seeded subject split, stratified by
# diagnosis and age quintile: 70 % train, 15 % validation (to pick the epoch), 15 % test. Then
# every slice of every scan goes through the frozen encoder once. This is the slow step of the
# notebook; the features are stored and reused when the notebook runs again.
#
# **Alignment first.** The importance profiles are compared with ground-truth maps in MNI
# space, so the model's grid must be in MNI space too. The synthetic scans are (their NIfTI
# header says so: sform code 4), and `slicelib.data.preprocess` then keeps their coordinates;
# only raw heads are moved into place (`centre="brain"`). An earlier slicelib re-centred these
# scans as if they were raw heads, which lifted them by about 27 mm: section 7 shows what that
# did to the comparison. With real data, check the alignment (plot a preprocessed scan over the
# template) before comparing maps.

# %%
table = read_table(cohort, target="ad")
parts, _ = course_split(table, (0.7, 0.15, 0.15), seed=SEED)  # stratified: AD x age quintile
table["split"] = table["participant_id"].map({s: k for k, v in parts.items() for s in v})
print(table.groupby(["split", "diagnosis"]).size().unstack())

RUN_DIR = runs_dir("04", PRESET) / f"frozen_{BACKBONE}_{AXIS}_prep{CACHE_VERSION}_seed{SEED}"
RUN_DIR.mkdir(parents=True, exist_ok=True)
feature_file = RUN_DIR / "slice_features.pt"
ds = VolumeDataset(table, target="ad", preprocess=pcfg)
if feature_file.is_file():
    features = torch.load(feature_file)  # (N, S, F), reused from an earlier run
    print(f"reusing {feature_file}")
else:
    t0 = time.perf_counter()
    feats = []
    with torch.no_grad():
        for i in tqdm(range(len(ds)), desc="encode slices", unit="scan"):
            volume = ds[i][0][0]  # (X, Y, Z)
            slices = torch.movedim(volume, AXES[AXIS], 0)[:, None]  # axial: (Z, 1, X, Y)
            feats.append(model.encode_images(slices))  # (S, F) encoder features
    features = torch.stack(feats)  # (N, S, F)
    torch.save(features, feature_file)
    print(
        f"encoded {features.shape[0]} scans x {features.shape[1]} slices in "
        f"{time.perf_counter() - t0:.0f} s"
    )
labels = torch.tensor(table["ad"].to_numpy(), dtype=torch.float32)
rows_of = {k: np.flatnonzero(table["split"].to_numpy() == k) for k in ("train", "val", "test")}

# %% [markdown]
# Training the small layers: Adam, mini-batches of 16 scans, `EPOCHS` epochs, and the epoch with
# the lowest validation loss is kept. The loss is **class-balanced** binary cross-entropy (as
# `slicelib.train` does by default): with 30 % AD, each training example is weighted by
# n / (2 x n of its class), so the AD subjects count as much as the controls and a threshold of
# P(AD) = 0.5 aims at balanced accuracy rather than at calling everyone CN. `slice_index` /
# `slice_axis` tell the model which position embedding each slice gets.

# %%
slice_index = torch.arange(features.shape[1])
slice_axis = torch.full_like(slice_index, AXES[AXIS])


def logits_of(rows):
    h = model.project(features[rows])  # (B, S, D)
    return model.predict_from_embeddings(h, slice_index, slice_axis)  # (B,)


counts = np.bincount(table["ad"].iloc[rows_of["train"]].astype(int), minlength=2)
STATS = {"majority_class": int(counts.argmax()), "num_classes": 2}  # the baseline's guess
class_w = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
print(f"training split: {counts[0]} CN, {counts[1]} AD; class weights {class_w.numpy().round(2)}")


def loss_fn(out, y):
    """Class-balanced binary cross-entropy: sum_i w[y_i] * bce_i / B."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
    return (class_w[y.long()] * bce).mean()


torch.manual_seed(SEED)
optimiser = torch.optim.Adam(trained, lr=S["LR"], weight_decay=1e-4)
history, best = [], (np.inf, None)
rng = np.random.default_rng(SEED)
for epoch in tqdm(range(1, S["EPOCHS"] + 1), desc="train head", unit="epoch"):
    model.train()
    order = rng.permutation(rows_of["train"])
    for start in range(0, len(order), 16):
        rows = order[start : start + 16]
        loss = loss_fn(logits_of(rows), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        train_loss = float(loss_fn(logits_of(rows_of["train"]), labels[rows_of["train"]]))
        val_out = logits_of(rows_of["val"])
        val_loss = float(loss_fn(val_out, labels[rows_of["val"]]))
    m = compute_metrics("binary", labels[rows_of["val"]].numpy(), val_out.numpy(), STATS)
    history.append(
        dict(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_auc=m["auc"],
            val_balanced_accuracy=m["balanced_accuracy"],
        )
    )
    if val_loss < best[0]:
        best = (val_loss, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
model.load_state_dict(best[1])
model.eval()
torch.save(model.state_dict(), RUN_DIR / "model.pt")
history = pd.DataFrame(history)
print(f"best validation loss {best[0]:.3f} at epoch {best[2]}")

# %%
fig = P.plot_learning_curves(
    history,
    metrics=["val_auc", "val_balanced_accuracy"],
    loss_label="loss (class-balanced binary cross-entropy)",
    title=f"AD vs CN: frozen {BACKBONE} slice features, attention pooling ({AXIS})",
)
plt.show()
with torch.no_grad():
    test_out = logits_of(rows_of["test"]).numpy()
test = compute_metrics("binary", labels[rows_of["test"]].numpy(), test_out, STATS)
age_test = roc_auc_score(table["ad"].iloc[rows_of["test"]], table["age"].iloc[rows_of["test"]])
keys = ["n", "auc", "balanced_accuracy", "baseline_balanced_accuracy"]
display(pd.Series({**{k: test[k] for k in keys}, "auc of age alone": age_test}, name="test split"))

# the age confound: held-out subjects (validation + test) aged 60 or more only
held = np.concatenate([rows_of["val"], rows_of["test"]])
old = held[table["age"].iloc[held].to_numpy() >= 60]
y_old = table["ad"].iloc[old].to_numpy()
if 0 < y_old.sum() < len(y_old):
    with torch.no_grad():
        auc_model_old = roc_auc_score(y_old, logits_of(old).numpy())
    auc_age_old = roc_auc_score(y_old, table["age"].iloc[old])
    print(
        f"held-out subjects aged 60+ ({len(old)}, {int(y_old.sum())} AD): "
        f"AUC of the model {auc_model_old:.2f}, of age alone {auc_age_old:.2f}"
    )

# %% [markdown]
# Chance is an AUC of 0.5, and the baseline that calls everyone CN has a balanced accuracy of
# 0.5. The test split holds only 30 subjects (9 with AD), so a test AUC is uncertain by roughly
# ±0.1; the validation curves show how stable training was. In our `cpu` run the model needed
# about 15-25 epochs to learn (the validation AUC climbs from 0.83 to 1.0 between epochs 15 and
# 30); after epoch 25 the validation loss jumps from epoch to epoch, so the kept epoch (33) is
# partly luck of a 30-subject validation split. The last line is a first
# check of the age confound: among subjects aged 60 or more, age separates AD from CN much less,
# so a model that only read age would lose most of its AUC there (the validation subjects chose
# the epoch, a small optimism).
#
# ## 3. Per-slice importance, three ways
#
# We explain the model's AD logit on AD subjects it did not train on (validation and test
# splits), because the ground-truth AD effect exists only in them.
#
# * **Attention:** the softmax pooling weights, free to read, but they say where the pooling
#   looked, not what changed the answer.
# * **Occlusion:** replace one slice by background and measure |Δ logit|; in principle one model
#   run per slice, but `slicelib.explain` swaps slice embeddings, so it costs one pass.
# * **Integrated gradients:** the gradient of the logit with respect to every voxel, averaged on
#   the path from a blank volume to the scan, times (scan - blank), summed per slice. It needs
#   backward passes through the encoder, so it is the costly one; the voxel map itself can also
#   be shown in the brain.

# %%
ad_rows = [i for i in held if table["ad"].iloc[i] == 1] or list(np.flatnonzero(table["ad"]))
ad_rows = ad_rows[: S["N_EXPLAIN"]]
x = torch.stack([ds[i][0] for i in ad_rows])  # (B, 1, X, Y, Z)
print(f"explaining {len(ad_rows)} held-out AD subjects, volumes {tuple(x.shape)}")

t0 = time.perf_counter()
results = {
    "attention": E.attention_importance(model, x),
    "occlusion": E.occlusion_importance(model, x, target=1),
}
ig = E.gradient_importance(
    model, x, "integrated_gradients", steps=S["IG_STEPS"], target=1, return_map=True, batch_size=2
)
results["integrated gradients"] = ig
print(f"three methods in {time.perf_counter() - t0:.0f} s")
prob = torch.sigmoid(torch.as_tensor(results["occlusion"].output)).numpy()
print(
    f"predicted P(AD) on these AD subjects: mean {prob.mean():.2f} (min {prob.min():.2f}, max {prob.max():.2f})"
)

# %% [markdown]
# ## 4. The ground truth on the model's grid
#
# The generator's AD effect map (`derivatives/ground_truth/ad_effect.nii.gz`) is on the 2 mm
# MNI grid; the model reads a coarser grid, so we resample the map onto it. Summing |effect| in
# each axial slice gives the **ground-truth profile**. For comparison we also build the profile
# of the **age** effect (where ageing changes the image) and of the plain **brain extent** (brain
# voxels per slice). The last two are controls: a method that only finds "where the brain is" or
# "where ageing acts" would correlate with them as well as, or better than, with the AD profile.

# %%
gt_dir = cohort / "derivatives" / "ground_truth"


def on_grid(img_or_path, interpolation="continuous"):
    """Resample a 2 mm template-space image onto the model grid: array (X, Y, Z)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn warns when a binary mask is interpolated
        out = nimg.resample_img(
            nib.load(img_or_path) if isinstance(img_or_path, Path) else img_or_path,
            target_affine=pcfg.affine,
            target_shape=pcfg.volume_shape,
            interpolation=interpolation,
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(out.get_fdata(), dtype=np.float64)


from nilearn.datasets import load_mni152_brain_mask

ad_effect = np.clip(on_grid(gt_dir / "ad_effect.nii.gz"), 0, None)
age_effect = np.clip(on_grid(gt_dir / "age_effect.nii.gz"), 0, None)
brain = on_grid(load_mni152_brain_mask(resolution=2), "linear")
profiles = {
    "AD effect (ground truth)": E.ground_truth_profile(ad_effect, AXIS),
    "age effect (control)": E.ground_truth_profile(age_effect, AXIS),
    "brain extent (control)": E.ground_truth_profile(brain, AXIS),
}
z_mm = E.slice_coordinates(pcfg.affine, AXIS, pcfg.volume_shape[2])
band = z_mm[
    profiles["AD effect (ground truth)"] > 0.05 * profiles["AD effect (ground truth)"].max()
]
print(f"AD ground-truth band: z = {band.min():.0f} to {band.max():.0f} mm")

# %% [markdown]
# ## 5. Importance along the slice axis
#
# Each curve is scaled to a peak of 1; the dashed black line is the ground-truth AD profile, and
# the legend gives each method's Pearson r with it. The grey band marks the slices where the AD
# effect lies.

# %%
fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
P.plot_slice_importance(
    results,
    ground_truth=profiles["AD effect (ground truth)"],
    axis=AXIS,
    affine=pcfg.affine,
    ground_truth_label="ground-truth AD effect",
    title=f"Per-slice importance for the AD logit ({len(ad_rows)} held-out AD subjects)",
    ax=ax,
)
k = np.flatnonzero(
    profiles["AD effect (ground truth)"] > 0.05 * profiles["AD effect (ground truth)"].max()
)
ax.axvspan(k.min() - 0.5, k.max() + 0.5, color="0.85", zorder=0, label="AD band")
ax.plot(
    E.importance_profile(profiles["age effect (control)"], normalise="max"),
    ":",
    color="0.4",
    label="age effect (control)",
)
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.show()

# %% [markdown]
# ### The comparison table
#
# Pearson r between each importance profile (mean over subjects) and each reference profile,
# along the axial slice axis. Also given: the slice where each profile peaks, and the share of
# its total importance inside the AD band (the band holds a fixed share of the slices, printed in
# the last row, which is what a flat profile would get).

# %%
gt = profiles["AD effect (ground truth)"]
in_band = gt > 0.05 * gt.max()
rows = []
for name, res in results.items():
    p = E.importance_profile(res, AXIS)
    row = {"method": name}
    for ref, q in profiles.items():
        row[f"r with {ref}"] = E.profile_correlation(p, q)
    row["peak z (mm)"] = z_mm[int(np.argmax(p))]
    row["share in AD band"] = p[in_band].sum() / p.sum()
    rows.append(row)
flat = np.ones_like(gt)
rows.append(
    {
        "method": "flat profile (reference)",
        **{f"r with {ref}": np.nan for ref in profiles},
        "peak z (mm)": np.nan,
        "share in AD band": in_band.mean(),
    }
)
summary = pd.DataFrame(rows).set_index("method")
display(summary.round(2))

# %% [markdown]
# ## 6. Back into the brain
#
# A per-slice profile can be painted back into the volume (every voxel of slice *k* gets slice
# *k*'s importance) and shown over the MNI152 template. For a single axis this gives horizontal
# bands (the axial cut is one painted slice, so it is a single colour). The integrated-gradients
# map has a value per voxel, so it could be finer: compare its glass brain with the ground-truth
# AD map drawn right after it, then see it over the template at the same cuts as the occlusion
# map (through the left hippocampus).

# %%
CUTS = (-28, -22, -14)
occ_vol = E.to_volume(results["occlusion"], pcfg.volume_shape, AXIS) * (
    brain > 0.5
)  # inside the brain
d = P.plot_importance_on_brain(
    occ_vol,
    pcfg.affine,
    kind="stat_map",
    title="Occlusion importance painted per axial slice",
    colorbar_label="|Δ AD logit| when the slice is blanked",
    cut_coords=CUTS,
)
plt.show()

# %%
ig_map = np.abs(ig.extra["map"]).mean(axis=0)  # (X, Y, Z), mean |attribution| over subjects
d = P.plot_importance_on_brain(
    ig_map,
    pcfg.affine,
    kind="glass_brain",
    title="Integrated gradients, mean |attribution| per voxel (glass brain)",
    colorbar_label="|attribution| (AD logit per voxel)",
    threshold=np.percentile(ig_map, 99),
)
plt.show()
d = P.plot_importance_on_brain(
    ad_effect,
    pcfg.affine,
    kind="glass_brain",
    title="Ground truth: AD effect on the model grid (glass brain)",
    colorbar_label="intensity change (fraction of WM)",
)
plt.show()

# %%
d = P.plot_importance_on_brain(
    ig_map,
    pcfg.affine,
    kind="stat_map",
    title="Integrated gradients over the MNI152 template (top 1 % of voxels)",
    colorbar_label="|attribution| (AD logit per voxel)",
    threshold=np.percentile(ig_map, 99),
    cut_coords=CUTS,
)
plt.show()
voxel_r = np.corrcoef(ig_map.ravel(), ad_effect.ravel())[0, 1]
top = ig_map > np.percentile(ig_map, 99)
print(
    f"voxel-wise r(|IG|, AD effect) = {voxel_r:.2f}; "
    f"{(ad_effect[top] > 0.05 * ad_effect.max()).mean():.0%} of the top-1 % IG voxels lie in the "
    f"AD region ({(ad_effect > 0.05 * ad_effect.max()).mean():.1%} of the grid)"
)

# %% [markdown]
# ## 7. What the numbers say
#
# First a plain reading of the table for this run (it is computed, so it stays true whatever
# preset or seed produced the numbers):

# %%
ad_col, age_col, brain_col = (f"r with {ref}" for ref in profiles)
test_auc = test["auc"] if test["auc"] is not None else float("nan")
print(
    f"classifier: test AUC {test_auc:.2f}, balanced accuracy {test['balanced_accuracy']:.2f} "
    f"on {test['n']} subjects (chance 0.5; age alone: AUC {age_test:.2f})"
)
for name, row in summary.iloc[: len(results)].iterrows():
    r_ad, r_age, r_brain = row[ad_col], row[age_col], row[brain_col]
    if not np.isfinite(r_ad):
        verdict = "is flat: it says nothing about where the effect is"
    elif r_ad > 0.5 and r_ad > max(r_age, r_brain):
        verdict = "follows the AD band better than the controls: it points at the planted effect"
    elif r_ad > 0.3:
        verdict = "overlaps the AD band, but not better than a control profile"
    else:
        verdict = "does not follow the AD band"
    print(
        f"{name:22s} r(AD) = {r_ad:+.2f}, r(age) = {r_age:+.2f}, r(brain) = {r_brain:+.2f}, "
        f"{row['share in AD band']:.0%} of importance in the AD band "
        f"(flat: {in_band.mean():.0%}): {verdict}"
    )

# %% [markdown]
# **What we found in the `cpu` preset (seed 0).** The model learned the AD effect: test AUC
# 0.91 and balanced accuracy 0.90 on 30 subjects, where age alone gives an AUC of 0.74. Among
# held-out subjects aged 60 or more, where age hardly separates the groups (AUC 0.56), the model
# still reached 0.97, so it is not just reading age. (One AD subject of the 12 explained got
# P(AD) near 0; the mean was 0.83.)
#
# * **All three methods point at the planted effect.** Attention, occlusion and integrated
#   gradients peak at z = -18 or -14 mm, inside the AD band (-30 to -6 mm), and correlate with
#   the ground-truth AD profile at r = 0.91, 0.93 and 0.87, far better than with the age-effect
#   control (0.36, 0.50, 0.67) or the brain-extent control (0.30, 0.46, 0.63). They put 74 %,
#   61 % and 55 % of their importance in the band, which holds 16 % of the slices.
# * **They differ in how sharp they are.** Attention is the most concentrated: a model that has
#   learned where the effect is also learns to attend there. Integrated gradients (2 steps here,
#   a coarse approximation) leaks most into the slices above the band, where ageing acts; that
#   is why its r with the age control is the highest of the three.
# * **Within a slice, the voxel map is not localised.** The integrated-gradients glass brain
#   shows a horizontal band at the right height, not two blobs in the medial temporal lobes:
#   voxel-wise r with the AD map is only 0.11, and 2 % of its top-1 % voxels lie in the AD region
#   (7 times the 0.3 % of the grid that region covers, but most are elsewhere in the same
#   slices). A frozen ImageNet encoder pools each slice into one feature vector, and the
#   gradient through it spreads over the whole slice; a slice model answers "which slices", not
#   "which voxels".
# * **What went wrong first.** Our first run used an earlier slicelib whose head centring (see
#   section 2) treated the synthetic scans as raw heads and lifted them by about 27 mm. The model
#   learned just as well (test AUC 0.94), but all three profiles then peaked at z = +14 to +30 mm,
#   correlated negatively with the AD profile (r = -0.09 to -0.21) and positively with the age
#   control (0.47 to 0.62). A logistic regression on each slice's features alone found the AD
#   information at z = +6 to +18 mm: the AD band, moved up by 7 slices. The explanations were
#   right; the ground truth was on a different grid. An importance map that disagrees with the
#   expected anatomy can mean misalignment, not a wrong model, so check the alignment first.
#
# One seed, one split, 12 explained subjects: the numbers will move with another seed, but the
# gap between r with the AD profile (about 0.9) and with the controls (at most 0.67) is large.
#
# **What carries over to real data.** There is no ground truth there, so (1) check that the
# model works, and that it beats confounds such as age, before reading its explanations; (2)
# compare several methods (here all three agreed on the slices, and attention was the sharpest);
# (3) compare importance profiles with trivial controls such as the amount of brain per slice or
# where ageing acts: a profile that only tracks "where the brain is" says nothing about the
# disease; and (4) check that the scans and any reference map share one grid.

# %%
results_table = summary.reset_index()
results_table.to_csv(RUN_DIR / "slice_importance_vs_truth.csv", index=False)
print(f"table saved to {RUN_DIR / 'slice_importance_vs_truth.csv'}")
