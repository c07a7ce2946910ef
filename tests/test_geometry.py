"""Geometry of the pipeline in well under a second: RAS <-> LPS (ITK) conversions, the affine
registration recovering a known affine, and N4 removing a synthetic bias field."""

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from slicelib.pipeline import (
    PipelineConfig,
    _from_sitk,
    _ras_matrix,
    _to_sitk,
    bias_correct,
    register_affine,
)
from slicelib.utils import mni_template, resample

OBLIQUE = np.array(
    [[0.0, 0.0, 2.0, -40.0], [-1.9, 0.3, 0.0, 60.0], [0.2, 2.1, 0.0, -30.0], [0, 0, 0, 1.0]]
)


def _rotation(deg_x: float, deg_z: float) -> np.ndarray:
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rx @ rz


def test_array_and_world_coordinates_round_trip_through_itk():
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    im = _to_sitk(data, OBLIQUE)
    np.testing.assert_array_equal(_from_sitk(im), data)
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        lps = np.asarray(im.TransformIndexToPhysicalPoint(ijk))
        ras = (OBLIQUE @ np.r_[ijk, 1.0])[:3]
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-5)


def test_ras_matrix_of_an_itk_transform_round_trips():
    m = np.eye(4)
    m[:3, :3] = _rotation(10, -7) * [1.1, 0.9, 1.05]
    m[:3, 3] = [3.0, -8.0, 12.0]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m @ np.diag([-1.0, -1.0, 1.0, 1.0])
    c = np.array([5.0, -2.0, 7.0])  # ITK: T(x) = A (x - c) + c + t
    t = lps[:3, 3] - c + lps[:3, :3] @ c
    tx = sitk.AffineTransform(lps[:3, :3].ravel().tolist(), t.tolist(), c.tolist())
    np.testing.assert_allclose(_ras_matrix(tx), m, atol=1e-9)
    p = np.array([20.0, -30.0, 40.0])
    mapped = np.asarray(tx.TransformPoint((p * [-1, -1, 1]).tolist())) * [-1, -1, 1]
    np.testing.assert_allclose(mapped, (m @ np.r_[p, 1])[:3], atol=1e-9)


def test_affine_registration_recovers_a_known_affine_of_the_template():
    t1 = mni_template(what="t1", resolution=1)  # the packaged file (about 1 s to read)
    aff = t1.affine @ np.diag([8.0, 8.0, 8.0, 1.0])  # every 8th voxel: an 8 mm template
    brain = np.asarray(t1.dataobj, dtype=np.float32)[::8, ::8, ::8]
    fixed_img = nib.Nifti1Image(brain, aff)
    known = np.eye(4)  # MNI mm -> native mm
    known[:3, :3] = _rotation(6, -4) * [1.06, 0.95, 1.0]
    known[:3, 3] = [4.0, -6.0, 5.0]
    # native image: its value at native point x is the template's at known^-1 x
    moving = resample(fixed_img, np.linalg.inv(known) @ aff, brain.shape, "linear").get_fdata()
    config = PipelineConfig(iterations=50, sampling=0.5)
    tx = register_affine(_to_sitk(moving, aff), config, fixed=_to_sitk(brain, aff))
    found = _ras_matrix(tx)
    pts = nib.affines.apply_affine(aff, np.argwhere(brain > 0))
    err = np.linalg.norm(pts @ (found - known)[:3, :3].T + (found - known)[:3, 3], axis=1)
    assert err.max() < 4.0, err.max()  # half an 8 mm voxel; the identity is off by > 15 mm
    assert np.linalg.norm(pts @ (np.eye(4) - known)[:3, :3].T - known[:3, 3], axis=1).max() > 15


def test_n4_removes_a_synthetic_bias_field():
    rng = np.random.default_rng(0)
    ijk = np.indices((14, 14, 14)).astype(np.float32)
    r = np.sqrt(((ijk - 6.5) ** 2).sum(0))
    mask = r < 6.5
    tissue = np.where(r < 3, 120.0, 80.0) + rng.normal(0, 2, r.shape)  # "WM" core, "GM" shell
    field = np.exp(0.5 * (ijk[0] - 6.5) / 7 - 0.4 * (ijk[2] - 6.5) / 7)
    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    biased = np.where(mask, tissue * field, 0).astype(np.float32)
    out = _from_sitk(bias_correct(_to_sitk(biased, aff), _to_sitk(mask.astype(np.float32), aff)))

    def cv(a):  # coefficient of variation in the "GM" shell
        v = a[mask & (r > 3.5)]
        return v.std() / v.mean()

    assert cv(out) < 0.6 * cv(biased), (cv(biased), cv(out))


def test_registration_is_repeatable_whatever_the_thread_count():
    """Seed 0 meant "the wall clock" to SimpleITK, and the metric's sum depended on the thread
    count: two runs on the same scan differed. Now: equal to 1e-9 mm in the matrix."""
    t1 = mni_template(what="t1", resolution=1)
    aff = t1.affine @ np.diag([8.0, 8.0, 8.0, 1.0])
    brain = np.asarray(t1.dataobj, dtype=np.float32)[::8, ::8, ::8]
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -4.0, 3.0]
    moving = _to_sitk(
        resample(nib.Nifti1Image(brain, aff), shift @ aff, brain.shape).get_fdata(), aff
    )
    config = PipelineConfig(iterations=30, sampling=0.2)
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    found = []
    try:
        for n in (1, 2, 1):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
            found.append(_ras_matrix(register_affine(moving, config, fixed=_to_sitk(brain, aff))))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)
    for m in found[1:]:
        np.testing.assert_allclose(m, found[0], rtol=0, atol=1e-9)
