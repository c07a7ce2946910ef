"""slicelib.qc: thresholds per method on hand-made measures, coverage and the translate method on
real heads (4 mm grid), and run_qc on real and bad scans."""

import os
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from slicelib.cache import run_qc
from slicelib.data import PreprocessConfig, preprocess
from slicelib.io import grid
from slicelib.pipeline import PipelineConfig, run_pipeline
from slicelib.qc import THRESHOLDS, measures, qc_status
from slicelib.utils import mni_template

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared") / "data" / "ixi_hh_2mm"
HEAD = SHARED / "t1" / "IXI012-HH-1211_T1.nii.gz"
LABELS = SHARED / "brain_labels" / "IXI012-HH-1211_T1_DLMUSE.nii.gz"
needs_shared = pytest.mark.skipif(
    not HEAD.exists(), reason=f"shared IXI-HH heads not found at {SHARED} (set SLICELIB_SHARED)"
)

GOOD = {
    "ncc": 0.52,
    "wm_gm": 0.7,
    "brain_ml": 1500.0,
    "inside": 1.0,
    "scale": 0.8,
    "n_unique": 230,
    "coverage": 0.99,
    "slice_ratio": 0.5,
}
#: what a real head gives with the translate method (IXI-HH, 4 mm grid; see qc's module doc)
TRANSLATED = {**GOOD, "ncc": 0.12, "wm_gm": 0.35, "scale": 1.0, "coverage": 0.8}
GRID4 = dict(volume_shape=grid(4.0)[0], voxel_size=4.0)


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
    assert set(THRESHOLDS) == {"register", "resample", "translate"}
    for method, bounds in THRESHOLDS.items():
        good = TRANSLATED if method == "translate" else GOOD
        assert qc_status(good, method) == ("ok", [])
        for key, b in bounds.items():
            if b is None:  # not applicable: never fires
                assert qc_status({**good, key: -1e9}, method)[0] == "ok"
                continue
            lo, hi = b
            assert lo < hi
            if np.isfinite(hi):
                assert qc_status({**good, key: hi * 1.01 + 1}, method)[0] == "flagged"
            assert qc_status({**good, key: lo - abs(lo) * 0.01 - 0.01}, method)[0] == "flagged"
    with pytest.raises(ValueError, match="unknown preprocessing method 'mni'"):
        qc_status(GOOD, "mni")


def test_measures_that_cannot_fire_for_resample_are_not_applicable():
    """With the resample method the grid's brain mask stands in for the native one."""
    odd = {**GOOD, "inside": 0.5, "brain_ml": 100.0}
    assert qc_status(odd, "register")[0] == "flagged"
    assert qc_status(odd, "resample") == ("ok", [])
    assert THRESHOLDS["resample"]["inside"] is None and THRESHOLDS["resample"]["brain_ml"] is None


def test_a_translated_real_head_passes_with_its_own_thresholds():
    """The register thresholds flagged every translated head (NCC about 0.12 < 0.30)."""
    assert qc_status(TRANSLATED, "register")[0] == "flagged"
    assert qc_status(TRANSLATED, "translate") == ("ok", [])
    status, reasons = qc_status({**TRANSLATED, "coverage": 0.45}, "translate")
    assert status == "flagged" and reasons[0].startswith("coverage=0.45")


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
    assert "every voxel is zero" in df.reasons[0] and "3D" in df.reasons[1]
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
    assert df.loc[str(HEAD), "ncc"] > THRESHOLDS["register"]["ncc"][0]
    for bad in paths[1:]:
        assert df.loc[str(bad), "status"] != "ok", df.loc[str(bad)].to_dict()
    assert "n_unique" in df.loc[str(binary), "reasons"]
    assert "wm_gm" in df.loc[str(inverted), "reasons"]
    assert (tmp_path / "qc" / "IXI012-HH-1211_T1.png").stat().st_size > 10_000


def _half(path) -> nib.Nifti1Image:
    """The head with every voxel below mid-height (scanner z) zeroed: a partial field of view
    that misses the cerebellum and the temporal lobes."""
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    ijk = np.indices(data.shape).reshape(3, -1).T
    z = nib.affines.apply_affine(img.affine, ijk)[:, 2].reshape(data.shape)
    data[z < (z.min() + z.max()) / 2] = 0
    return nib.Nifti1Image(data, img.affine)


@pytest.mark.slow
@needs_shared
def test_translate_method_passes_a_real_head_and_flags_bad_inputs():
    """Real head ok with the translate method on the 4 mm grid; its lower half alone, the
    inverted head and a binary brain mask are flagged (4 scans, ~3 s CPU)."""
    cfg = PreprocessConfig(**GRID4, method="translate")
    _, _, info = preprocess(HEAD, cfg, return_info=True)
    assert info["method"] == "translate" and info["status"] == "ok", info["reasons"]
    head = nib.load(HEAD)
    data = head.get_fdata()
    labels = nib.load(LABELS)
    bad = {
        "half": (_half(HEAD), "coverage"),
        "inverted": (nib.Nifti1Image((data.max() - data).astype(np.float32), head.affine), ""),
        "binary": (
            nib.Nifti1Image((np.asarray(labels.dataobj) > 0).astype(np.uint8), labels.affine),
            "n_unique",
        ),
    }
    for name, (img, why) in bad.items():
        _, _, info = preprocess(img, cfg, return_info=True)
        assert info["status"] == "flagged", (name, info["qc"])
        assert why in "; ".join(info["reasons"]), (name, info["reasons"])


@pytest.mark.slow
@needs_shared
def test_registered_half_head_is_flagged_by_coverage_and_the_intact_head_is_ok():
    """A real head whose lower half is blanked passed QC as ok (NCC 0.39 here); coverage of the
    template's brain flags it (two pipeline runs on the 4 mm grid, ~1 min)."""
    head = SHARED / "t1" / "IXI013-HH-1212_T1.nii.gz"
    config = PipelineConfig(threads=2)
    intact = run_pipeline(head, config, *grid(4.0))
    assert qc_status(intact.qc) == ("ok", []), intact.qc
    half = run_pipeline(_half(head), config, *grid(4.0))
    status, reasons = qc_status(half.qc)
    assert status == "flagged" and any(r.startswith("coverage=") for r in reasons), half.qc
    assert half.qc["coverage"] < intact.qc["coverage"] - 0.02


def test_slices_thicker_than_the_grid_are_flagged():
    """A 1 x 1 x 5.5 mm input on the 4 mm grid (the consistency benchmark's thick form, which
    moved predicted age by 7-25 years with every other measure ok) is flagged; 2 mm is not."""
    shape, affine = grid(4.0)
    brain = mni_template(shape, affine, what="t1").get_fdata(dtype=np.float32)
    mask = mni_template(shape, affine, what="mask").get_fdata() > 0.5
    native = nib.Nifti1Image(mask.astype(np.uint8), affine)
    result = SimpleNamespace(array=brain, mask=mask, affine=affine, native_mask=native,
                             transform=np.eye(4))  # fmt: skip
    for zooms, ratio in (((1.0, 1.0, 5.5), 5.5 / 4), ((2.0, 2.0, 2.0), 0.5)):
        img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([*zooms, 1.0]))
        assert measures(result, img)["slice_ratio"] == pytest.approx(ratio, abs=1e-4)
    status, reasons = qc_status({**GOOD, "slice_ratio": 5.5 / 4})
    assert status == "flagged" and reasons[0].startswith("slice_ratio=1.375 > 1.25: slices")
    assert qc_status({**GOOD, "slice_ratio": 1.0}) == ("ok", [])  # the grid's own voxels
