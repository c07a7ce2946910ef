"""slicelib.io: the one loader (odd files, orientation, "declares MNI" from the original header,
storage formats) and the one grid."""

import nibabel as nib
import numpy as np
import pytest

from slicelib import data as D
from slicelib.errors import DataError
from slicelib.io import GRID_CENTRE_MM, MNI_2MM_AFFINE, declares_mni, grid, load_nifti
from slicelib.utils import mni_template


def _head(shape=(20, 24, 18)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 100, shape).astype(np.float32)


def las_mni(path, voxel_size=4.0, code=4):
    """The MNI152 brain on the grid stored as FSL stores it: LAS (x flipped), sform code 4."""
    shape, aff = grid(voxel_size)
    brain = mni_template(shape, aff, "t1").get_fdata() * (
        mni_template(shape, aff, "mask").get_fdata() > 0.5
    )
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1  # voxel i of the LAS file is voxel (n - 1 - i) of the RAS grid
    las = nib.Nifti1Image(brain[::-1].astype(np.float32), aff @ flip)
    las.set_sform(las.affine, code=code)
    las.set_qform(las.affine, code=code)
    nib.save(las, path)
    return path, brain


def test_grids_match_fsl_2mm_and_cover_the_brain_at_4mm():
    shape, aff = grid(2.0)
    assert shape == (91, 109, 91) and np.array_equal(aff, MNI_2MM_AFFINE)
    assert np.allclose(aff[:3, 3], [-90, -126, -72]) and np.allclose(np.diag(aff)[:3], 2)
    shape4, aff4 = grid(4.0)
    assert shape4 == (45, 54, 45)
    far = aff4 @ np.r_[np.array(shape4) - 1, 1]
    assert np.all(aff4[:3, 3] <= [-88, -124, -70]) and np.all(far[:3] >= [88, 88, 106])
    centre = aff4 @ np.r_[(np.array(shape4) - 1) / 2, 1]
    np.testing.assert_allclose(centre[:3], GRID_CENTRE_MM)
    np.testing.assert_allclose(D.target_affine((45, 54, 45), 4.0), aff4)
    with pytest.raises(ValueError, match="shape"):
        grid(3.0)


def test_las_mni_file_is_reoriented_and_still_declares_mni(tmp_path):
    """nibabel's as_closest_canonical turns sform code 4 into 2; the loader keeps the original."""
    path, brain = las_mni(tmp_path / "las_mni.nii.gz")
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "A", "S")
    img = load_nifti(path)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.affine, grid(4.0)[1])
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), brain.astype(np.float32))
    assert img.extra["declares_mni"] and declares_mni(img) and D.declares_mni(img)
    assert int(img.header["sform_code"]) == 4 and img.extra["source_axcodes"] == ("L", "A", "S")
    # written back and read again, the canonical image still declares MNI
    nib.save(img, tmp_path / "back.nii")
    assert declares_mni(nib.load(tmp_path / "back.nii"))
    # and a file that does not declare MNI is not made to
    plain, _ = las_mni(tmp_path / "las_scanner.nii.gz", code=1)
    assert not declares_mni(load_nifti(plain))


def test_same_voxels_in_every_storage_give_the_same_array(tmp_path):
    """.nii, .nii.gz, int16 and uint8 with a scale factor: one float32 array, bit for bit."""
    data = np.round(_head()).astype(np.float32)  # integer-valued: exact in every dtype below
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = []
    for name, dtype in [("f.nii", np.float32), ("f.nii.gz", np.float32), ("i.nii.gz", np.int16)]:
        img = nib.Nifti1Image(data.astype(dtype), aff)
        nib.save(img, tmp_path / name)
        paths.append(tmp_path / name)
    # uint8 holding 2 * value with scl_slope 0.5 (as the IXI heads: 8 bits and a scale factor)
    nib.save(nib.Nifti1Image((2 * data).astype(np.uint8), aff), tmp_path / "u.nii")
    with open(tmp_path / "u.nii", "r+b") as f:
        f.seek(112)  # scl_slope, float32, in the NIfTI-1 header
        f.write(np.float32(0.5).tobytes())
    paths.append(tmp_path / "u.nii")
    u8 = nib.load(paths[3])
    assert u8.get_data_dtype() == np.uint8 and u8.dataobj.slope == 0.5
    arrays = [np.asarray(load_nifti(p).dataobj) for p in paths]
    for a in arrays:
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, data)


def test_load_squeezes_a_4d_file_with_one_volume(tmp_path):
    data = _head()
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data[..., None], np.diag([2, 2, 2, 1.0])), path)
    img = load_nifti(path)
    assert img.shape == data.shape and img.extra["source"] == str(path)
    assert np.allclose(img.get_fdata(), data)


def test_load_refuses_4d_constant_and_unreadable_files_naming_them(tmp_path):
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_head()] * 2, -1), np.eye(4)), four)
    with pytest.raises(DataError, match=r"four\.nii\.gz.*3D"):
        load_nifti(four)
    const = tmp_path / "const.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 7, np.float32), np.eye(4)), const)
    with pytest.raises(DataError, match=r"const\.nii\.gz: a constant image"):
        load_nifti(const)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.nii\.gz: cannot be read"):
        load_nifti(bad)


def test_load_reads_freesurfer_mgz_with_its_affine(tmp_path):
    data = _head()
    aff = np.array([[-2.0, 0, 0, 40], [0, 0, 2, -30], [0, -2, 0, 50], [0, 0, 0, 1]])
    path = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(data, aff), path)
    img = load_nifti(path)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, aff))
    assert np.allclose(img.affine, canonical.affine)
    assert np.allclose(img.get_fdata(), canonical.get_fdata())
    assert not declares_mni(img)
