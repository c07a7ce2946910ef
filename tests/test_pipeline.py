"""slicelib.pipeline: config, MNI files skip registration, repeatability, and the real chain on one
shared head (grids and loading: test_io.py; ITK geometry, registration, N4: test_geometry.py)."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_io import las_mni

from slicelib import data as D
from slicelib.io import grid
from slicelib.pipeline import (
    PipelineConfig,
    _from_sitk,
    _to_sitk,
    harmonise_resolution,
    run_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared") / "data" / "ixi_hh_2mm"
HEAD = SHARED / "t1" / "IXI012-HH-1211_T1.nii.gz"
LABELS = SHARED / "brain_labels" / "IXI012-HH-1211_T1_DLMUSE.nii.gz"
needs_shared = pytest.mark.skipif(
    not HEAD.exists(), reason=f"shared IXI-HH heads not found at {SHARED} (set SLICELIB_SHARED)"
)


def test_config_round_trip_and_validation():
    cfg = PipelineConfig(bias_correct=False, template_resolution=1)
    d = cfg.to_dict()
    assert d["version"] and "threads" not in d
    assert PipelineConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="brain_extraction"):
        PipelineConfig(brain_extraction="bet")
    with pytest.raises(ValueError, match="unknown"):
        PipelineConfig.from_dict({"colour": 1})
    # resolution harmonisation: off by default and then absent from the dict (older cache
    # keys and runs stay valid); set, it round-trips; nonsense is refused
    assert "resolution_mm" not in d
    assert PipelineConfig.from_dict(PipelineConfig(resolution_mm=6).to_dict()).resolution_mm == 6
    with pytest.raises(ValueError, match="resolution_mm"):
        PipelineConfig(resolution_mm=-1)


def test_resolution_harmonisation_makes_thick_slices_and_a_fine_scan_alike():
    """A 1 mm head and the same head stored as 5 mm-thick slices, resampled onto a 4 mm grid:
    harmonised to 6 mm they differ half as much as they are (the rest: detail the thick
    slices lost)."""
    import SimpleITK as sitk
    from scipy import ndimage

    rng = np.random.default_rng(0)
    fine = ndimage.gaussian_filter(rng.normal(size=(80, 80, 80)), 1.5).astype(np.float32)
    fine_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    thick = fine.reshape(80, 80, 16, 5).mean(axis=3)  # 5 mm slices along z
    thick_aff = np.diag([1.0, 1.0, 5.0, 1.0])
    thick_aff[2, 3] = 2.0  # slice k covers z in [5k, 5k + 5): its centre is at 5k + 2
    grid_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    grid_aff[:3, 3] = 10.0
    ref = _to_sitk(np.zeros((15, 15, 15), np.float32), grid_aff)

    def on_grid(arr, aff, mm):
        im = _to_sitk(arr, aff)
        im = im if mm is None else harmonise_resolution(im, mm)
        out = _from_sitk(sitk.Resample(im, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
        return (out - out.mean()) / out.std()

    raw = np.abs(on_grid(fine, fine_aff, None) - on_grid(thick, thick_aff, None)).mean()
    same = np.abs(on_grid(fine, fine_aff, 6.0) - on_grid(thick, thick_aff, 6.0)).mean()
    assert same < raw / 2
    # an axis already as coarse as the target is left alone
    im = _to_sitk(thick, np.diag([6.0, 6.0, 6.0, 1.0]))
    assert np.array_equal(_from_sitk(harmonise_resolution(im, 6.0)), thick)


@needs_shared
def test_real_head_is_extracted_registered_and_normalised():
    """The whole chain on one shared 2 mm head (deepbet + N4 + affine; ~10-20 s)."""
    r = run_pipeline(HEAD, PipelineConfig(threads=2))
    assert r.array.shape == (91, 109, 91) and r.array.dtype == np.float32
    assert r.registration == "affine"
    brain = r.array[r.mask]
    assert abs(brain.mean()) < 1e-3 and abs(brain.std() - 1) < 1e-3
    assert np.unique(r.array[~r.mask]).size == 1  # constant background
    ref = nib.as_closest_canonical(nib.load(LABELS))
    ref_mask, mask = np.asarray(ref.dataobj) > 0, np.asarray(r.native_mask.dataobj) > 0
    dice = 2 * (mask & ref_mask).sum() / (mask.sum() + ref_mask.sum())
    assert dice > 0.95, dice
    assert r.qc["ncc"] > 0.45, r.qc
    assert set(r.timings) >= {"brain_extraction", "bias_correct", "registration", "total"}


def test_las_stored_mni_file_skips_registration(tmp_path):
    """FSL stores MNI files LAS with sform code 4; reorienting to RAS rewrote the code to 2 and
    the file was registered again. Now the original header decides, in both entry points."""
    path, _ = las_mni(tmp_path / "las_mni.nii.gz")
    config = PipelineConfig(brain_extraction="none", bias_correct=False)
    r = run_pipeline(path, config, *grid(4.0))
    assert r.registration == "none (header declares MNI)"
    np.testing.assert_array_equal(r.transform, np.eye(4))
    assert r.qc["ncc"] > 0.95 and r.qc["coverage"] > 0.99
    cfg = D.PreprocessConfig(volume_shape=(45, 54, 45), voxel_size=4.0, pipeline=config.to_dict())
    _, _, info = D.preprocess(path, cfg, return_info=True)
    assert info["declares_mni"] and info["method"] == "resample"
    assert "declares MNI" in info["method_reason"] and info["status"] == "ok"


@pytest.mark.slow
@needs_shared
def test_same_head_as_nii_and_nii_gz_with_one_or_two_threads_gives_the_same_array(tmp_path):
    """Two storage formats and two thread counts: the arrays agree to 1e-3 z units (the cache's
    float16 step is ~1e-3 at 2 z units); before, two runs differed by up to 2.4 z units."""
    head = nib.load(HEAD)
    nib.save(head, tmp_path / "h.nii")
    nib.save(head, tmp_path / "h.nii.gz")
    a = run_pipeline(tmp_path / "h.nii", PipelineConfig(threads=1), *grid(4.0))
    b = run_pipeline(tmp_path / "h.nii.gz", PipelineConfig(threads=2), *grid(4.0))
    np.testing.assert_array_equal(a.mask, b.mask)
    assert np.abs(a.array - b.array).max() < 1e-3


@pytest.mark.slow
def test_mni_header_skips_registration_and_4mm_grid():
    from slicelib import synth

    vol, _ = synth.synth_subject(0, 0)
    img = nib.Nifti1Image(vol, grid(2.0)[1])
    img.set_sform(grid(2.0)[1], code=4)
    r = run_pipeline(img, PipelineConfig(), *grid(4.0))
    assert r.registration == "none (header declares MNI)"
    assert np.allclose(r.transform, np.eye(4))
    assert r.array.shape == (45, 54, 45)
    assert r.qc["ncc"] > 0.4


DERIVATIVE = ROOT / "data" / "ixi_hh_4mm"


@pytest.mark.skipif(
    not (DERIVATIVE / "participants.tsv").exists(),
    reason="data/ixi_hh_4mm not generated (python data/ixi_hh_4mm/make_derivative.py)",
)
def test_shipped_4mm_derivative_is_complete_small_and_on_the_grid():
    import pandas as pd

    table = pd.read_csv(DERIVATIVE / "participants.tsv", sep="\t")
    assert len(table) == 138 and table.age.between(18, 90).all()
    assert set(table.sex) <= {"M", "F"}
    total = sum(p.stat().st_size for p in DERIVATIVE.rglob("*") if p.is_file())
    assert total < 20e6, f"derivative is {total / 1e6:.1f} MB"
    shape, affine = grid(4.0)
    for rel in table.path.iloc[[0, -1]]:
        img = nib.load(DERIVATIVE / rel)
        assert img.shape == shape and img.get_data_dtype() == np.int16
        assert np.allclose(img.affine, affine) and int(img.header["sform_code"]) == 4
        data = np.asarray(img.dataobj, dtype=np.float32)
        assert data.min() == 0 and 800 < (data > 0).sum() * 64 / 1000 < 2500  # brain ml
    roi = pd.read_csv(DERIVATIVE / "roi_volumes.csv")
    assert sorted(roi.MRID) == sorted(table.participant_id)
