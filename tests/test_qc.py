"""slicelib.qc: thresholds on hand-made measures, and run_qc on real and bad scans."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from slicelib.cache import run_qc
from slicelib.qc import THRESHOLDS, qc_status

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared") / "data" / "ixi_hh_2mm"
HEAD = SHARED / "t1" / "IXI012-HH-1211_T1.nii.gz"
LABELS = SHARED / "brain_labels" / "IXI012-HH-1211_T1_DLMUSE.nii.gz"
needs_shared = pytest.mark.skipif(
    not HEAD.exists(), reason=f"shared IXI-HH heads not found at {SHARED} (set SLICELIB_SHARED)"
)

GOOD = {"ncc": 0.52, "wm_gm": 0.7, "brain_ml": 1500.0, "inside": 1.0, "scale": 0.8, "n_unique": 230}


def test_status_ok_flagged_error():
    assert qc_status(GOOD) == ("ok", [])
    status, reasons = qc_status({**GOOD, "wm_gm": -0.2, "n_unique": 2})
    assert status == "flagged" and len(reasons) == 2
    assert reasons[0].startswith("wm_gm=-0.2 < ") and "inverted" in reasons[0]
    assert "n_unique=2" in reasons[1]
    status, reasons = qc_status({**GOOD, "ncc": float("nan")})
    assert status == "flagged" and "ncc=nan" in reasons[0]
    status, reasons = qc_status({"error": "x.nii.gz: constant image"})
    assert status == "error" and reasons == ["x.nii.gz: constant image"]


def test_every_threshold_bounds_the_measure_the_status_reads():
    for key, (lo, hi) in THRESHOLDS.items():
        assert lo < hi
        if np.isfinite(hi):
            assert qc_status({**GOOD, key: hi * 1.01 + 1})[0] == "flagged"
        assert qc_status({**GOOD, key: lo - abs(lo) * 0.01 - 0.01})[0] == "flagged"


def test_bad_files_give_error_rows_and_the_batch_goes_on(tmp_path):
    const = tmp_path / "const.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), const)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 6, 3)), np.eye(4)), four)
    missing = tmp_path / "missing.nii.gz"
    df = run_qc([const, four, missing], tmp_path / "qc", progress=False)
    assert list(df.path) == [str(const), str(four), str(missing)]
    assert (df.status == "error").all()
    for path, reasons in zip(df.path, df.reasons):
        assert Path(path).name in reasons
    assert "constant image" in df.reasons[0] and "3D" in df.reasons[1]
    on_disk = pd.read_csv(tmp_path / "qc" / "qc.csv")
    assert list(on_disk.columns[:3]) == ["path", "status", "reasons"] and len(on_disk) == 3


@pytest.mark.slow
@needs_shared
def test_real_head_passes_and_bad_inputs_are_flagged(tmp_path):
    """One real head passes; a binary mask, a label map and an inverted head given as T1s are
    flagged (2 jobs; ~1 min on 2 busy cores)."""
    head = nib.load(HEAD)
    data = head.get_fdata()
    labels = nib.load(LABELS)
    binary = tmp_path / "binary_mask.nii.gz"
    nib.save(
        nib.Nifti1Image((np.asarray(labels.dataobj) > 0).astype(np.uint8), labels.affine), binary
    )
    inverted = tmp_path / "inverted.nii.gz"
    nib.save(nib.Nifti1Image((data.max() - data).astype(np.float32), head.affine), inverted)
    paths = [HEAD, binary, LABELS, inverted]
    df = run_qc(paths, tmp_path / "qc", jobs=2, progress=False).set_index("path")
    assert df.loc[str(HEAD), "status"] == "ok", df.loc[str(HEAD)].to_dict()
    assert df.loc[str(HEAD), "ncc"] > THRESHOLDS["ncc"][0]
    for bad in paths[1:]:
        assert df.loc[str(bad), "status"] != "ok", df.loc[str(bad)].to_dict()
    assert "n_unique" in df.loc[str(binary), "reasons"]
    assert "wm_gm" in df.loc[str(inverted), "reasons"]
    assert (tmp_path / "qc" / "IXI012-HH-1211_T1.png").stat().st_size > 10_000
