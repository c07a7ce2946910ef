"""A cheap probe of consistency levers on the model grid (issue 20, item 5), before building one.

Every head's preprocessed array is changed the same way for training and for testing, then the
ridge read-out of frozen ImageNet MobileNetV2 slice features (3 axes, 4 blocks; the CV's
estimator, :func:`slicelib.cv.ridge_estimator`) is fitted per fold on the other four folds of
``data/ixi_hh_4mm`` and predicts (a) the held-out fold (the CV's MAE) and (b) the original and
re-stored files of the consistency benchmark's subjects (``--per-subject``: its
``per_subject.csv``; their arrays come from the preprocessing cache that benchmark filled, read
with the preprocessing of its fold-0 run, ``--run``). The changes (one per call):

- ``--smooth-fwhm F``: a Gaussian of FWHM F mm on the grid, the same for every head;
- ``--harmonise-mm R``: a Gaussian of FWHM ``sqrt(R^2 - s^2)`` per axis, where ``s`` is the
  scan's native voxel size along that grid axis (2 mm for the training heads and the original
  files, 1 mm for the conformed form, 1 x 1 x 5.5 mm for the thick-slice form): an
  approximation, on the grid, of ``PipelineConfig.resolution_mm`` (which smooths in native
  space before resampling);
- ``--erode N``: the brain mask eroded by N voxels; ``--norm robust|upper``: median and IQR, or
  median and 90th percentile, instead of the brain's mean and SD.

Prints the CV MAE and the per-form median / p90 / mean change. Fits only; about 5 minutes of
encoding (173 arrays) on 2 CPU cores::

    SLICELIB_WEIGHTS_DIR=/work/shared/weights python benchmarks/grid_probe.py --harmonise-mm 6
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from slicelib.cache import load_preprocessed, preprocess_many
from slicelib.cv import read_folds, ridge_estimator
from slicelib.data import PreprocessConfig
from slicelib.datasets import ixi_derivative
from slicelib.frozen import block_pool, encode_features
from slicelib.model import SliceModel
from slicelib.runs import load_run

#: native voxel size (mm) along the grid's x, y, z of each consistency form; others: 2 mm
NATIVE_MM = {"thick_5.5mm": (1.0, 1.0, 5.5), "conformed_fs": (1.0, 1.0, 1.0)}


def change(a, voxel_mm: float, native=(2.0, 2.0, 2.0), smooth_fwhm=0.0, harmonise_mm=None,
           erode=0, norm="z") -> np.ndarray:  # fmt: skip
    """One (X, Y, Z) z-scored grid array changed as the module docstring says; z-scored again
    (background: the value a raw 0 maps to)."""
    a = np.asarray(a, np.float32)
    bg = a.min()  # the background holds the z-score of a raw 0, the array's minimum
    m = a > bg + 1e-3
    if erode:
        m = ndimage.binary_erosion(m, iterations=erode)
    fwhm = np.full(3, float(smooth_fwhm))
    if harmonise_mm:
        fwhm = np.sqrt(np.maximum(harmonise_mm**2 - np.asarray(native) ** 2, 0.0))
    if fwhm.any():
        a = ndimage.gaussian_filter(np.where(m, a, bg), fwhm / np.sqrt(8 * np.log(2)) / voxel_mm)
    v = a[m]
    if norm == "robust":
        q25, mu, q75 = np.percentile(v, [25, 50, 75])
        sd = (q75 - q25) / 1.349
    elif norm == "upper":
        mu, q90 = np.percentile(v, [50, 90])
        sd = (q90 - mu) / 1.2816
    else:
        mu, sd = v.mean(), v.std()
    out = (a - mu) / sd
    out[~m] = (bg - mu) / sd
    return out.astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/ixi_hh_4mm")
    ap.add_argument("--per-subject", default="benchmarks/results/consistency/per_subject.csv")
    ap.add_argument("--run", default="/tmp/slicelib-consistency/runs/fold0")
    ap.add_argument("--smooth-fwhm", type=float, default=0.0)
    ap.add_argument("--harmonise-mm", type=float, default=None)
    ap.add_argument("--erode", type=int, default=0)
    ap.add_argument("--norm", default="z", choices=["z", "robust", "upper"])
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t = ixi_derivative(a.data)
    pre = PreprocessConfig.from_dict(t.attrs["preprocess"])
    folds = read_folds(f"{a.data}/folds.tsv")
    ids = folds["participant_id"].tolist()
    path, age = dict(zip(t["participant_id"], t["path"])), dict(zip(t["participant_id"], t["age"]))
    forms = pd.read_csv(a.per_subject)[["participant_id", "fold", "form", "file"]]
    _, meta = load_run(a.run, "best", device=torch.device("cpu"))
    kw = dict(smooth_fwhm=a.smooth_fwhm, harmonise_mm=a.harmonise_mm, erode=a.erode, norm=a.norm)
    model = SliceModel("mobilenet_v2", "imagenet", axes=["sagittal", "coronal", "axial"],
                       volume_shape=pre.volume_shape, seed=0).eval()  # fmt: skip

    def features(arrays, natives):  # (N, 3 axes x 4 blocks x F)
        x = np.stack([change(v, pre.voxel_size, n, **kw) for v, n in zip(arrays, natives)])
        f = torch.cat([encode_features(model, xb) for xb in torch.from_numpy(x)[:, None].split(4)])
        return block_pool(f, [model.n_slices[ax] for ax in model.axes], 4).reshape(len(x), -1)

    train = features([load_preprocessed(path[i], pre) for i in ids], [(2.0,) * 3] * len(ids))
    cache = preprocess_many(forms["file"].tolist(), meta["preprocess"],
                            meta["train"].get("cache_dir"), progress=False)["cache"]  # fmt: skip
    test = features(
        [np.load(c) for c in cache], [NATIVE_MM.get(f, (2.0,) * 3) for f in forms["form"]]
    )
    y, fold = np.array([age[i] for i in ids]), folds["fold"].to_numpy()
    oof, pred = np.zeros(len(ids)), np.zeros(len(forms))
    for k in sorted(set(fold)):
        ridge = ridge_estimator().fit(train[fold != k], y[fold != k])
        oof[fold == k] = ridge.predict(train[fold == k])
        sel = (forms["fold"] == k).to_numpy()
        pred[sel] = ridge.predict(test[sel])
    forms["change"] = pred - forms["participant_id"].map(
        dict(
            zip(
                forms.loc[forms.form == "original", "participant_id"],
                pred[forms.form == "original"],
            )
        )
    )
    stats = (
        forms[forms.form != "original"]
        .groupby("form")["change"]
        .agg(
            median=lambda c: np.median(np.abs(c)),
            p90=lambda c: np.quantile(np.abs(c), 0.9),
            mean="mean",
        )
    )
    print(f"{kw}: CV MAE {np.abs(oof - y).mean():.2f} years on {len(ids)} heads")
    print(stats.round(2).to_string())


if __name__ == "__main__":
    main()
