"""Scratch probe (run once; output in registration_scale_probe.log): IXI204-HH-1651's original
file and its int16 x 7.3 copy through deepbet and N4, then the affine registration of each;
prints the N4 outputs' ratio inside the brain and how far apart the two registrations map the
template's brain (``benchmarks/step_swap.py``'s ``differences``), then the same with each brain
divided by its 99th percentile before registering (fixed units). Run from the repository root
after the consistency run of this folder (it reads that run's per_subject.csv)."""

import sys
import warnings

import numpy as np
import pandas as pd
import SimpleITK as sitk

import slicelib.pipeline as P
from slicelib.io import grid, load_nifti

sys.path.insert(0, "benchmarks")
from step_swap import differences  # noqa: E402  (benchmarks/step_swap.py)

warnings.simplefilter("ignore")
per = pd.read_csv("/work/runs/consistency_finetune_robust/per_subject.csv")
g = per[per.participant_id == "IXI204-HH-1651"]
files = dict(zip(g.form, g.file))
cfg = P.PipelineConfig()
shape, affine = grid(4.0)
transforms, brains, fixed_units = {}, {}, {}
for f in ("original", "int16_x7.3"):
    im = load_nifti(files[f])
    m = P.extract_brain(im, cfg.brain_extraction)
    data = np.asarray(im.dataobj, np.float32)
    b, mi = P._to_sitk(np.where(m, data, 0), im.affine), P._to_sitk(m, im.affine)
    b = sitk.Mask(P.bias_correct(b, mi), sitk.Cast(mi > 0.5, sitk.sitkUInt8))
    brains[f] = sitk.GetArrayFromImage(b)
    transforms[f] = P.register_affine(P._coarse(b), cfg)
    p99 = float(np.percentile(brains[f][brains[f] > 0], 99))
    fixed_units[f] = P.register_affine(P._coarse(sitk.Cast(b / p99, sitk.sitkFloat32)), cfg)
r = brains["int16_x7.3"] / np.maximum(brains["original"], 1e-6)
inside = brains["original"] > 0
print("N4 output ratio inside brain: median", np.median(r[inside]), "p1/p99", np.percentile(r[inside], [1, 99]))  # fmt: skip
empty = np.zeros(shape, bool)
pair = {"o": transforms["original"], "t": transforms["int16_x7.3"]}
print(differences(pair, {"o": empty, "t": empty}, shape, affine))
pair = {"o": fixed_units["original"], "t": fixed_units["int16_x7.3"]}
print(
    "each brain / its 99th percentile first:",
    differences(pair, {"o": empty, "t": empty}, shape, affine),
)
