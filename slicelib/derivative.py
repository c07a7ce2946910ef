"""The shipped real-data derivative ``data/ixi_hh_4mm``: 138 IXI heads, registered brains.

Each subject is ``brains/<participant_id>.nii.gz``: the output of
:func:`slicelib.pipeline.run_pipeline` (deepbet, N4, 12-dof affine to MNI152) on the 4 mm MNI
grid ``slicelib.pipeline.grid(4.0)`` (45 x 54 x 45, sform/qform code 4 = MNI152), the brain
only with a background of exactly 0, stored as int16 with a scale factor (:func:`write_brain`).
Such files go through ``preprocess`` like any registered brain: the header declares MNI, so
the default method takes the "mni" path and z-scores within the brain, which gives back the
pipeline's array (to the int16 step). ``participants.tsv`` lists them (``path`` relative to
the folder, age, sex, the QC status and measures); ``roi_volumes.csv`` holds the DLMUSE
regional volumes of the same subjects for the classical ridge baseline.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = [
    "IXI_DERIVATIVE_PREPROCESS",
    "derivative_dir",
    "ixi_derivative",
    "ixi_derivative_rois",
    "write_brain",
]

#: The preprocessing that trains on the derivative: its own 4 mm grid, so the files pass
#: through unchanged. Method "pipeline": the derivative's files declare MNI and take the "mni"
#: path, while a raw head given to ``predict`` later goes through the same pipeline that made
#: the derivative (method "mni" would resample a raw head in its scanner coordinates).
IXI_DERIVATIVE_PREPROCESS: dict = {
    "method": "pipeline",
    "volume_shape": [45, 54, 45],
    "voxel_size": 4.0,
}


def derivative_dir(root: str | os.PathLike | None = None) -> Path:
    """The derivative folder: ``root``, else ``$SLICELIB_IXI_DERIVATIVE``, else the
    repository's ``data/ixi_hh_4mm``. Raises FileNotFoundError saying where it looked."""
    from slicelib.data import DataError

    env = os.environ.get("SLICELIB_IXI_DERIVATIVE")
    folder = Path(root or env or Path(__file__).resolve().parents[1] / "data" / "ixi_hh_4mm")
    if not (folder / "participants.tsv").is_file():
        raise DataError(
            f"{folder}: no participants.tsv; the ixi_hh_4mm derivative is not there. Pass "
            "root=... or set SLICELIB_IXI_DERIVATIVE to a copy of data/ixi_hh_4mm (or write it "
            "with python data/ixi_hh_4mm/make_derivative.py)."
        )
    return folder


def ixi_derivative(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The derivative's participants table (:func:`slicelib.datasets.read_table`).

    Returns:
        DataFrame, one row per subject: ``participant_id``, ``path`` (absolute, .nii.gz),
        ``age`` (years), ``sex``, ``qc`` (ok / flagged), ``qc_reasons`` and the QC measures.
    """
    from slicelib.datasets import read_table

    table = read_table(derivative_dir(root) / "participants.tsv", target="age")
    table.attrs["preprocess"] = dict(IXI_DERIVATIVE_PREPROCESS)
    return table


def ixi_derivative_rois(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """DLMUSE regional volumes (mm^3), indexed by ``participant_id``, one column per region
    label (the input of the ridge baseline: ``evaluate_run(..., baseline_features=...)``)."""
    rois = pd.read_csv(derivative_dir(root) / "roi_volumes.csv", dtype={"MRID": str})
    return rois.rename(columns={"MRID": "participant_id"}).set_index("participant_id")


def write_brain(path: str | os.PathLike, array: np.ndarray, mask: np.ndarray, affine) -> None:
    """Write a pipeline output as a skull-stripped MNI brain (int16 with a scale factor).

    Args:
        array: (X, Y, Z) z-scored brain, background ``-mean/std`` (``PipelineResult.array``;
            float16 copies are fine). mask: (X, Y, Z) bool brain mask. affine: (4, 4) grid.

    The stored intensity is ``array - background`` inside the mask (> 0; at least one int16
    step) and exactly 0 outside, so z-scoring the non-zero voxels gives ``array`` back.
    sform and qform code 4 (MNI152).
    """
    from slicelib.utils import atomic_write

    array = np.asarray(array, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    background = float(np.median(array[~mask])) if (~mask).any() else float(array.min())
    values = np.where(mask, array - background, 0.0)
    slope = max(float(values.max()), 1e-6) / 32000.0
    ints = np.where(mask, np.maximum(np.round(values / slope), 1), 0).astype(np.int16)
    img = nib.Nifti1Image(ints, np.asarray(affine, dtype=float))
    img.header.set_slope_inter(slope, 0.0)
    img.set_sform(img.affine, code=4)
    img.set_qform(img.affine, code=4)
    raw = img.to_bytes()
    data = gzip.compress(raw, mtime=0) if str(path).endswith(".gz") else raw
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
