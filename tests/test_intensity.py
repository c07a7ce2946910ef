"""Quantile intensity standardisation (``PreprocessConfig(normalise="quantile")``): invariant to
monotonic intensity changes, one cache entry shared with the z-score, its own feature cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import ndtri
from test_data import head_volume, save

from slicelib import cache as C
from slicelib.data import DataError, PreprocessConfig, preprocess, standardise_histogram
from slicelib.frozen import encoder_key
from slicelib.model import SliceModel

#: An on-grid 4 mm brain (the "resample" fast path: no interpolation), zero background.
GRID = dict(method="resample", volume_shape=(20, 24, 20), voxel_size=4.0)


def _brain(tmp_path, name, transform=lambda v: v, dtype=np.float32):
    cfg = PreprocessConfig(**GRID)
    vol = head_volume(GRID["volume_shape"], seed=3)  # 0 outside, ~100-300 inside
    return save(transform(vol).astype(dtype), tmp_path / f"{name}.nii.gz", cfg.affine)


def test_values_are_normal_quantiles_of_the_ranks_and_background_is_the_lowest():
    rng = np.random.default_rng(0)
    vol = np.full((10, 12, 10), -10.0, np.float32)
    vol[2:8, 2:10, 2:8] = rng.normal(0, 1, (6, 8, 6))
    out = standardise_histogram(vol)
    brain = vol > -10.0
    n = int(brain.sum())
    expected = ndtri((np.arange(1, n + 1) - 0.5) / n)  # distinct values: ranks 1..n
    np.testing.assert_allclose(np.sort(out[brain]), expected, rtol=0, atol=1e-5)
    assert np.all(out[~brain] == out[brain].min())
    assert abs(out[brain].mean()) < 1e-4 and 0.9 < out[brain].std() < 1.0  # z-score-like
    # ranks kept: the brightest input voxel is the brightest output voxel
    assert np.unravel_index(np.argmax(vol), vol.shape) == np.unravel_index(
        np.argmax(out), out.shape
    )


def test_a_constant_volume_is_refused_with_a_message():
    with pytest.raises(DataError, match="scan.nii.gz: only 0 voxel.*constant"):
        standardise_histogram(np.zeros((8, 8, 8), np.float32), "scan.nii.gz")


@pytest.mark.parametrize(
    "name, transform, dtype",
    [
        ("gamma_0.7", lambda v: 300.0 * (v / 300.0) ** 0.7, np.float32),
        ("gamma_1.4", lambda v: 300.0 * (v / 300.0) ** 1.4, np.float32),
        ("int16_x7.3", lambda v: np.round(v * 7.3), np.int16),
    ],
)
def test_quantile_undoes_a_monotonic_change_the_z_score_does_not(tmp_path, name, transform, dtype):
    original = _brain(tmp_path, "original")
    changed = _brain(tmp_path, name, transform, dtype)
    z = PreprocessConfig(**GRID)
    q = dataclasses.replace(z, normalise="quantile")
    zscore_gap = np.abs(preprocess(original, z)[0] - preprocess(changed, z)[0]).max()
    quantile_gap = np.abs(preprocess(original, q)[0] - preprocess(changed, q)[0]).max()
    # rounding (float32 after the power, int16) merges a few neighbouring intensities into ties,
    # which share their mean rank: a voxel moves by < 1e-3 SD (float32), < 0.1 SD (int16 of
    # this toy, whose brain is one tissue: 9,000 voxels in a narrow band of integers)
    assert quantile_gap < (0.1 if dtype == np.int16 else 1e-3)
    if name.startswith("gamma"):
        assert zscore_gap > 0.2  # what the linear z-score leaves to the model


def test_quantile_reads_the_z_scored_cache_entry_and_matches_preprocessing(tmp_path):
    path = _brain(tmp_path, "head")
    z = PreprocessConfig(**GRID)
    q = dataclasses.replace(z, normalise="quantile")
    assert q.stored() == z and z.stored() is z
    cdir = tmp_path / "cache"
    first = C.load_preprocessed(path, z, cdir)
    entries = sorted(cdir.glob("*.npy"))
    cached = C.load_preprocessed(path, q, cdir)
    assert sorted(cdir.glob("*.npy")) == entries  # no second entry: standardised when read
    np.testing.assert_array_equal(cached, standardise_histogram(first))
    direct = preprocess(path, q)[0]  # float32 all the way: float16 storage moves a few ranks
    assert np.median(np.abs(cached - direct)) < 1e-3 and np.abs(cached - direct).max() < 0.1
    rows = C.preprocess_many([path], q, cdir, progress=False)  # QC: the z-scored entry's
    same = C.preprocess_many([path], z, cdir, progress=False)
    assert rows.loc[0, "cache"] == same.loc[0, "cache"] == str(entries[0])
    assert rows.loc[0, "status"] == same.loc[0, "status"] != "error"


def test_the_feature_cache_and_the_volume_key_tell_the_normalisations_apart(tmp_path):
    path = _brain(tmp_path, "head")
    z = PreprocessConfig(**GRID)
    q = dataclasses.replace(z, normalise="quantile")
    model = SliceModel("mobilenet_v2", weights=None, seed=0)
    assert encoder_key(model, z.to_dict()) != encoder_key(model, q.to_dict())
    assert C.cache_key(path, z) != C.cache_key(path, q)
    assert PreprocessConfig.from_dict(q.to_dict()) == q


def test_an_unknown_normalisation_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="quantile"):
        PreprocessConfig(normalise="histogram")


# normalise="template": the z-score inside the MNI152 brain mask only (slicelib.data.within_template)


def _mni_grid_brain(rim: bool, seed: int = 0):
    """A z-scored 'registered brain' on the 4 mm MNI grid: the template's brain mask with
    random tissue values, optionally with a rim of one voxel outside it (a larger own mask)."""
    from scipy.ndimage import binary_dilation

    from slicelib.io import grid
    from slicelib.utils import mni_template

    shape, affine = grid(4.0)
    template = mni_template(shape, affine, what="mask").get_fdata() > 0.5
    brain = binary_dilation(template) if rim else template
    rng = np.random.default_rng(seed)
    raw = np.where(brain, rng.uniform(100, 300, shape), 0.0)  # intensities, 0 outside
    if rim:
        raw[brain & ~template] = 250.0  # bright dura in the rim
    mean, std = raw[brain].mean(), raw[brain].std()
    return ((raw - mean) / std).astype(np.float32), affine, template, raw


def test_template_normalisation_is_the_z_score_inside_the_template_and_ignores_the_rim():
    from slicelib.data import read_time_normalise, within_template

    with_rim, affine, template, raw = _mni_grid_brain(rim=True)
    without, _, _, _ = _mni_grid_brain(rim=False)
    out = within_template(with_rim, affine, "head.nii.gz")
    inside = raw[template]
    expected = (raw - inside.mean()) / inside.std()  # as if the pipeline's mask were the template's
    np.testing.assert_allclose(out[template], expected[template], atol=1e-4)
    assert np.allclose(out[~template], -inside.mean() / inside.std(), atol=1e-4)
    # the rim (a larger own brain mask, e.g. a thick-slice scan's) no longer reaches the model
    np.testing.assert_allclose(out, within_template(without, affine), atol=1e-4)
    assert np.abs(with_rim - without).max() > 0.1  # while the plain z-score moves
    cfg = PreprocessConfig(method="resample", volume_shape=with_rim.shape, voxel_size=4.0,
                           normalise="template")  # fmt: skip
    np.testing.assert_array_equal(read_time_normalise(with_rim, cfg), out)
    assert cfg.stored().normalise == "foreground"  # one cache entry with the z-score


def test_template_normalisation_refuses_a_volume_outside_the_template():
    from slicelib.data import within_template
    from slicelib.io import grid

    shape, affine = grid(4.0)
    vol = np.full(shape, -1.0, np.float32)
    vol[:3, :3, :3] = 1.0  # a corner: no registered brain there
    with pytest.raises(DataError, match="scan.nii.gz: only 0 brain voxel.*MNI152 brain mask"):
        within_template(vol, affine, "scan.nii.gz")


# normalise="tissue": the template's region, tissue means put at fixed values (standardise_tissues)


def _three_tissue_brain(transform=lambda raw: raw, seed: int = 0):
    """A z-scored 'registered brain' on the 4 mm MNI grid: the template's brain mask holding
    CSF, grey and white matter (20/40/40 % of voxels at T1-like intensities 100/180/250, SD 8),
    after ``transform`` of the raw intensities; and the tissue label of every voxel."""
    from slicelib.io import grid
    from slicelib.utils import mni_template

    shape, affine = grid(4.0)
    brain = mni_template(shape, affine, what="mask").get_fdata() > 0.5
    rng = np.random.default_rng(seed)
    label = rng.choice(3, size=shape, p=[0.2, 0.4, 0.4])
    raw = np.where(brain, np.array([100.0, 180.0, 250.0])[label] + rng.normal(0, 8, shape), 0.0)
    raw = transform(raw)
    mean, std = raw[brain].mean(), raw[brain].std()
    return ((raw - mean) / std).astype(np.float32), affine, brain, label


def test_tissue_normalisation_puts_the_tissue_means_at_the_levels_and_undoes_a_gamma():
    from slicelib.intensity import (
        TISSUE_LEVELS,
        read_time_normalise,
        standardise_tissues,
        within_template,
    )

    vol, affine, brain, label = _three_tissue_brain()
    out = standardise_tissues(vol, affine, "head.nii.gz")
    means = [out[brain & (label == k)].mean() for k in range(3)]
    np.testing.assert_allclose(means, TISSUE_LEVELS, atol=0.02)
    assert np.all(out[~brain] < out[brain].min())  # the background stays below every tissue
    cfg = PreprocessConfig(method="resample", volume_shape=vol.shape, voxel_size=4.0,
                           normalise="tissue")  # fmt: skip
    np.testing.assert_array_equal(read_time_normalise(vol, cfg), out)
    assert cfg.stored().normalise == "foreground"  # one cache entry with the z-score
    for gamma in (0.7, 1.4):
        changed, *_ = _three_tissue_brain(lambda raw, g=gamma: 300.0 * (raw / 300.0) ** g)
        by_template = np.abs(within_template(changed, affine) - within_template(vol, affine))
        by_template = by_template[brain].mean()
        by_tissue = np.abs(standardise_tissues(changed, affine) - out)[brain].mean()
        assert by_tissue < 0.25 * by_template  # the gamma is (nearly) undone; the z-score is not


def test_tissue_normalisation_refuses_a_brain_without_three_tissues():
    from slicelib.intensity import standardise_tissues

    two_levels = lambda raw: np.where(raw > 0, np.where(raw > 150, 250.0, 100.0), 0.0)  # noqa: E731
    vol, affine, _, _ = _three_tissue_brain(two_levels)  # a label image, not a T1 brain
    with pytest.raises(DataError, match="scan.nii.gz: the brain's intensities do not show three"):
        standardise_tissues(vol, affine, "scan.nii.gz")


# smooth_mm: a Gaussian of that FWHM after the normalisation, when read (slicelib.intensity.smooth)


def test_smoothing_is_read_time_a_gaussian_of_the_fwhm_and_left_out_of_old_keys(tmp_path):
    from scipy.ndimage import gaussian_filter

    path = _brain(tmp_path, "head")
    z = PreprocessConfig(**GRID)
    s = dataclasses.replace(z, normalise="template", smooth_mm=9.42)
    assert "smooth_mm" not in z.to_dict()  # earlier configs and cache keys unchanged
    assert PreprocessConfig.from_dict(s.to_dict()) == s and s.to_dict()["smooth_mm"] == 9.42
    assert s.stored() == z  # one cache entry with the z-score
    assert dataclasses.replace(z, smooth_mm=4.0).stored() == z
    cdir = tmp_path / "cache"
    first = np.asarray(C.load_preprocessed(path, z, cdir), np.float32)
    entries = sorted(cdir.glob("*.npy"))
    smoothed = C.load_preprocessed(path, dataclasses.replace(z, smooth_mm=9.42), cdir)
    assert sorted(cdir.glob("*.npy")) == entries
    sigma = 9.42 / 2.3548 / GRID["voxel_size"]  # FWHM -> SD, in voxels: about 1
    np.testing.assert_allclose(smoothed, gaussian_filter(first, sigma, mode="nearest"), atol=1e-3)
    assert smoothed.std() < first.std()
    model = SliceModel("mobilenet_v2", weights=None, seed=0)
    assert encoder_key(model, z.to_dict()) != encoder_key(model, s.to_dict())
    with pytest.raises(ValueError, match="smooth_mm must be a FWHM in mm"):
        PreprocessConfig(smooth_mm=-1)
