"""How far does the frozen ImageNet read-out move when a registered head moves by 1 mm?
(issue 20, item 5: the consistency benchmark's forms are registered 0.4-1.0 mm apart from
their original, and the read-out's changes follow.)

Every labelled head of the 4 mm derivative (``data/ixi_hh_4mm``) is read as stored (the
pipeline's z-score), then normalised and smoothed as ``--normalise`` / ``--smooth-mm`` say
(:func:`slicelib.intensity.read_time_normalise`), and its slices are encoded by the frozen
ImageNet MobileNetV2 (3 axes, 4 slice blocks per axis; ``--scale 2`` reads every slice
upsampled twice, bilinear, as a larger image). A ridge (:func:`slicelib.cv.ridge_estimator`)
is fitted per fold of ``folds.tsv`` on the other folds and predicts the fold: the
out-of-fold MAE. For the first ``--per-fold`` heads of each fold the stored volume is also
moved by -1 and +1 mm along each axis (``scipy.ndimage.shift``, linear, before the
normalisation, as a registration that lands 1 mm away would move it) and predicted by its
fold's ridge: the change from the unmoved head. No training copies (one change at a time
against ``ridge_frozen_imagenet_template`` of ``slicelib.cv``).

    SLICELIB_WEIGHTS_DIR=/work/shared/weights python benchmarks/shift_probe.py \\
        --normalise template --out benchmarks/results/shift_probe/template.csv
    ... --smooth-mm 10 --out .../template_smooth10.csv;  ... --scale 2 --out .../template_x2.csv

Writes one row per head (fold, age, prediction, and ``shift_<axis>_<mm>``: the change in years)
and prints the MAE and the median and 90th percentile of the |change|. About 2.5 min on two
CPU cores at scale 1, four times as long at scale 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.ndimage import shift as nd_shift
from tqdm.auto import tqdm

from slicelib.cache import VolumeDataset
from slicelib.cv import FROZEN_AXES, read_folds, ridge_estimator
from slicelib.datasets import ixi_derivative
from slicelib.frozen import block_pool, encode_features
from slicelib.intensity import read_time_normalise
from slicelib.model import SliceModel

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = [(axis, mm) for axis in range(3) for mm in (-1.0, 1.0)]  # (voxel axis, mm)


def upsampled(model: SliceModel, scale: float) -> SliceModel:
    """``model`` whose encoder reads every slice (N, 1, H, W) resized by ``scale`` (bilinear)."""
    if scale != 1:
        encode = model.encode_images
        model.encode_images = lambda images: encode(
            F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        )  # (N, 1, scale * H, scale * W) -> (N, F)
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data/ixi_hh_4mm"))
    ap.add_argument("--folds", default=str(ROOT / "data/ixi_hh_4mm/folds.tsv"))
    ap.add_argument("--normalise", default="template")
    ap.add_argument("--smooth-mm", type=float, default=0.0)
    ap.add_argument("--scale", type=float, default=1.0, help="slice upsampling before encoding")
    ap.add_argument("--per-fold", type=int, default=8, help="moved heads per fold")
    ap.add_argument("--out", required=True, help="CSV to write")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    folds = read_folds(a.folds).set_index("participant_id")
    table = ixi_derivative(a.data)
    table = table[table.participant_id.isin(folds.index)].reset_index(drop=True)
    stored = VolumeDataset(table, None, preprocess=table.attrs["preprocess"])  # the z-score
    config = dataclasses.replace(stored.config, normalise=a.normalise, smooth_mm=a.smooth_mm)
    model = SliceModel("mobilenet_v2", "imagenet", axes=list(FROZEN_AXES),
                       volume_shape=config.volume_shape).eval()  # fmt: skip
    model = upsampled(model, a.scale)
    n_slices = [model.n_slices[axis] for axis in model.axes]
    moved = set(folds.groupby("fold").head(a.per_fold).index)
    x, x_moved = [], {}
    for i, pid in enumerate(tqdm(table.participant_id, desc="encode")):
        v = np.asarray(stored.volume(i), np.float32)  # (X, Y, Z)
        vols = [v]
        if pid in moved:
            for axis, mm in SHIFTS:
                offset = [0.0, 0.0, 0.0]
                offset[axis] = mm / config.voxel_size
                vols.append(np.maximum(nd_shift(v, offset, order=1, mode="nearest"), v.min()))
        vols = [read_time_normalise(u, config, pid) for u in vols]
        with torch.no_grad():
            f = encode_features(model, torch.from_numpy(np.stack(vols))[:, None])  # (n, S, F)
        pooled = block_pool(f.numpy(), n_slices, 4).reshape(len(vols), -1)  # (n, P)
        x.append(pooled[0])
        if pid in moved:
            x_moved[pid] = pooled[1:]
    x, age = np.stack(x), table.age.to_numpy()
    fold = folds.loc[table.participant_id, "fold"].to_numpy()
    rows = []
    for k in sorted(set(fold)):
        ridge = ridge_estimator().fit(x[fold != k], age[fold != k])
        for j in np.flatnonzero(fold == k):
            pid, pred = table.participant_id[j], float(ridge.predict(x[j : j + 1])[0])
            row = dict(participant_id=pid, fold=int(k), age=age[j], prediction=pred)
            if pid in x_moved:
                change = ridge.predict(x_moved[pid]) - pred
                row.update({f"shift_{ax}_{mm:+g}mm": c for (ax, mm), c in zip(SHIFTS, change)})
            rows.append(row)
    out = pd.DataFrame(rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(a.out, index=False, float_format="%.4g")
    change = out.filter(like="shift_").abs().to_numpy()
    change = change[~np.isnan(change)]
    moves = (
        f"|change| per 1 mm move: median {np.median(change):.2f} y, p90 "
        f"{np.percentile(change, 90):.2f} y ({len(moved)} heads x {len(SHIFTS)} moves)"
        if change.size
        else "no moved heads (--per-fold 0)"
    )
    print(
        f"normalise {a.normalise}, smooth {a.smooth_mm:g} mm, scale {a.scale:g}: out-of-fold MAE "
        f"{np.abs(out.prediction - out.age).mean():.2f} y over {len(out)} heads; {moves}; "
        f"{time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
