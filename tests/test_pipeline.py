"""slicelib.pipeline: grids, config, loading of odd files, and the real chain on one shared head."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from slicelib.pipeline import (
    PipelineConfig,
    PipelineError,
    grid,
    load_image,
    run_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared") / "data" / "ixi_hh_2mm"
HEAD = SHARED / "t1" / "IXI012-HH-1211_T1.nii.gz"
LABELS = SHARED / "brain_labels" / "IXI012-HH-1211_T1_DLMUSE.nii.gz"
needs_shared = pytest.mark.skipif(
    not HEAD.exists(), reason=f"shared IXI-HH heads not found at {SHARED} (set SLICELIB_SHARED)"
)


def test_grids_match_fsl_2mm_and_cover_the_brain_at_4mm():
    shape, aff = grid(2.0)
    assert shape == (91, 109, 91)
    assert np.allclose(aff[:3, 3], [-90, -126, -72]) and np.allclose(np.diag(aff)[:3], 2)
    shape4, aff4 = grid(4.0)
    assert shape4 == (45, 54, 45)
    far = aff4 @ np.r_[np.array(shape4) - 1, 1]
    assert np.all(aff4[:3, 3] <= [-88, -124, -70]) and np.all(far[:3] >= [88, 88, 106])
    with pytest.raises(ValueError, match="shape"):
        grid(3.0)


def test_config_round_trip_and_validation():
    cfg = PipelineConfig(bias_correct=False, template_resolution=1)
    d = cfg.to_dict()
    assert d["version"] and "threads" not in d
    assert PipelineConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="brain_extraction"):
        PipelineConfig(brain_extraction="bet")
    with pytest.raises(ValueError, match="unknown"):
        PipelineConfig.from_dict({"colour": 1})


def _head(shape=(20, 24, 18)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 100, shape).astype(np.float32)


def test_load_squeezes_a_4d_file_with_one_volume(tmp_path):
    data = _head()
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data[..., None], np.diag([2, 2, 2, 1.0])), path)
    img, source = load_image(path)
    assert img.shape == data.shape and source == str(path)
    assert np.allclose(img.get_fdata(), data)


def test_load_refuses_4d_constant_and_unreadable_files_naming_them(tmp_path):
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_head()] * 2, -1), np.eye(4)), four)
    with pytest.raises(PipelineError, match=r"four\.nii\.gz.*3D"):
        load_image(four)
    const = tmp_path / "const.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 7, np.float32), np.eye(4)), const)
    with pytest.raises(PipelineError, match=r"const\.nii\.gz: constant image"):
        load_image(const)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(PipelineError, match=r"bad\.nii\.gz: cannot be read"):
        load_image(bad)


def test_load_reads_freesurfer_mgz_with_its_affine(tmp_path):
    data = _head()
    aff = np.array([[-2.0, 0, 0, 40], [0, 0, 2, -30], [0, -2, 0, 50], [0, 0, 0, 1]])
    path = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(data, aff), path)
    img, _ = load_image(path)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, aff))
    assert np.allclose(img.affine, canonical.affine)
    assert np.allclose(img.get_fdata(), canonical.get_fdata())


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
