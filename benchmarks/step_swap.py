"""Which pipeline step moves a thick-slice scan's prediction: intensities, brain mask or
registration? (issue 20, item 5: the thick-slice form of the consistency benchmark.)

For each subject of a consistency run (``per_subject.csv``), the original raw head and its
re-stored form (default ``thick_5.5mm``) are each taken through the pipeline's steps
(``slicelib.pipeline``: deepbet brain extraction, N4 inside the mask, 12-dof affine to MNI152)
and the three results are swapped between the two files: the form's **intensities**
(the scan that is masked and N4-corrected), the **brain mask** (deepbet's, carried to the other
file's voxels through world coordinates) and the **registration** (the ITK transform; both files
share world space). Each of the 8 combinations is resampled to the fold model's 4 mm grid,
z-scored inside its mask and predicted by the fold model (``<runs>/fold<k>``). Combination
``IMT`` names the source of each step (``o`` original, ``t`` the form): ``ooo`` is the original
file, ``ttt`` the form, ``too`` the form's intensities with the original's mask and
registration, and so on. Writes one row per subject and combination (prediction, change from
``ooo``, and how far the form's registration and grid mask lie from the original's:
:func:`differences`) to ``--out``. The volumes are normalised as the fold model's run says
(e.g. ``normalise="template"``)::

    SLICELIB_WEIGHTS_DIR=/work/shared/weights python benchmarks/step_swap.py \\
        --per-subject benchmarks/results/consistency_augment/per_subject.csv \\
        --runs /tmp/slicelib-consistency/runs_augment2 \\
        --out benchmarks/results/consistency_scancopies/step_swap_augment2.csv

About 40 s per subject on 2 CPU cores (two brain extractions, four N4 fits, two registrations).
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from nibabel.processing import resample_from_to

from slicelib.data import PreprocessConfig, read_time_normalise
from slicelib.io import grid, load_nifti
from slicelib.pipeline import (  # the steps, as run
    PipelineConfig,
    _coarse,
    _from_sitk,
    _normalise,
    _ras_matrix,
    _to_sitk,
    bias_correct,
    extract_brain,
    register_affine,
)
from slicelib.runs import load_run
from slicelib.utils import mni_template


def mask_on(masks: dict, imgs: dict, src: str, dst: str) -> np.ndarray:
    """Brain mask of file ``src`` on the voxels of file ``dst`` (linear, > 0.5), (X, Y, Z) bool."""
    if src == dst:
        return masks[src]
    m = nib.Nifti1Image(masks[src].astype(np.float32), imgs[src].affine)
    return np.asarray(resample_from_to(m, imgs[dst], order=1).dataobj) > 0.5


def differences(transforms: dict, grid_masks: dict, shape, affine) -> dict[str, float]:
    """How far the form's registration and brain mask lie from the original's, on the grid.

    ``reg_shift_mm``: mean distance (mm) between where the two transforms map each voxel of
    the template's brain mask; ``mask_extra_in`` / ``mask_extra_out``: voxels of the form's
    grid mask not in the original's, inside / outside the template's brain mask, and
    ``mask_missing``: the original's voxels not in the form's (each as a fraction of the
    original's mask; both masks carried by their own registration)."""
    template = mni_template(shape, affine, what="mask").get_fdata() > 0.5
    ijk = np.c_[np.argwhere(template), np.ones(int(template.sum()))]  # (N, 4)
    mm = ijk @ np.asarray(affine).T  # (N, 4) MNI mm
    a, b = (mm @ _ras_matrix(transforms[f]).T for f in "ot")  # (N, 4) native mm
    o, t = grid_masks["o"], grid_masks["t"]
    n = max(int(o.sum()), 1)
    return {
        "reg_shift_mm": float(np.linalg.norm(a[:, :3] - b[:, :3], axis=1).mean()),
        "mask_extra_in": float((t & ~o & template).sum() / n),
        "mask_extra_out": float((t & ~o & ~template).sum() / n),
        "mask_missing": float((o & ~t).sum() / n),
    }


def swap_subject(original: str, form: str, run: str) -> tuple[dict[str, float], dict]:
    """Predictions (years) of the 8 combinations ``IMT`` for one subject (keys as in the doc),
    and :func:`differences` of its registrations and masks. The volumes are normalised as the
    run's preprocessing says (``PreprocessConfig.normalise``, e.g. "template")."""
    model, meta = load_run(run, "best", device=torch.device("cpu"))
    pre = meta["train"]["preprocess"]
    prep = PreprocessConfig.from_dict(pre)
    shape, affine = tuple(pre["volume_shape"]), grid(float(pre["voxel_size"]))[1]
    config = PipelineConfig.from_dict(pre["pipeline"])
    imgs = {"o": load_nifti(original), "t": load_nifti(form)}
    masks = {f: extract_brain(im, config.brain_extraction) for f, im in imgs.items()}
    brains, transforms = {}, {}
    for f, im in imgs.items():
        data = np.asarray(im.dataobj, np.float32)
        for mf in "ot":  # the file's intensities inside either file's mask, N4-corrected
            m = mask_on(masks, imgs, mf, f)
            b, mi = _to_sitk(np.where(m, data, 0), im.affine), _to_sitk(m, im.affine)
            b = sitk.Mask(bias_correct(b, mi), sitk.Cast(mi > 0.5, sitk.sitkUInt8))
            brains[f, mf] = (b, mi)
        transforms[f] = register_affine(_coarse(brains[f, f][0]), config)
    ref = _to_sitk(np.zeros(shape, np.float32), affine)
    out, grid_masks = {}, {}
    for f, mf, tf in itertools.product("ot", "ot", "ot"):
        b, mi = brains[f, mf]
        values = _from_sitk(sitk.Resample(b, ref, transforms[tf], sitk.sitkLinear, 0.0))
        mask = _from_sitk(sitk.Resample(mi, ref, transforms[tf], sitk.sitkLinear, 0.0)) > 0.5
        if f == mf == tf:
            grid_masks[f] = mask
        vol = read_time_normalise(_normalise(values, mask, form), prep, form)
        x = torch.from_numpy(np.asarray(vol, np.float32))[None, None]  # (1, 1, X, Y, Z)
        with torch.no_grad():
            out[f + mf + tf] = float(model(x)[0])
    return out, differences(transforms, grid_masks, shape, affine)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-subject", required=True, help="a consistency run's per_subject.csv")
    ap.add_argument("--runs", required=True, help="folder of the fold models fold<k>")
    ap.add_argument("--form", default="thick_5.5mm")
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    per = pd.read_csv(a.per_subject, dtype={"participant_id": str})
    rows = []
    for pid, g in per.groupby("participant_id", sort=False):
        files = dict(zip(g["form"], g["file"]))
        k = int(g["fold"].iat[0])
        pred, diff = swap_subject(files["original"], files[a.form], f"{a.runs}/fold{k}")
        for combo, p in pred.items():
            rows.append(dict(participant_id=pid, fold=k, combination=combo, prediction=p,
                             change=p - pred["ooo"], **diff))  # fmt: skip
        print(pid, " ".join(f"{c}:{p - pred['ooo']:+.1f}" for c, p in pred.items()),
              " ".join(f"{k}={v:.3f}" for k, v in diff.items()), flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(a.out, index=False, float_format="%.4g")
    summary = table.groupby("combination")["change"].agg(
        median_abs=lambda c: float(np.median(np.abs(c))), mean="mean"
    )
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
