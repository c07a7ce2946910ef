"""Tests for slicelib.data: loading, preprocessing, registration hook, cache, dataset, errors.

All volumes are tiny and generated in tmp_path; the ixi10 test uses ../shared/data/ixi10
(or $SLICELIB_IXI10) and skips when it is absent. Tables, splits and datasets: test_datasets.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED

from slicelib import cache as C
from slicelib import data as D
from slicelib.cache import VolumeDataset, load_preprocessed
from slicelib.data import (
    MNI_2MM_AFFINE,
    MNI_2MM_SHAPE,
    DataError,
    PreprocessConfig,
    load_nifti,
    preprocess,
)
from slicelib.datasets import ixi_table, read_table

torch.set_num_threads(1)

SMALL = (20, 24, 20)  # 4 mm grid, 80 x 96 x 80 mm
SMALL_CFG = PreprocessConfig(
    volume_shape=SMALL, voxel_size=4.0, interpolation="linear", method="translate"
)
IXI10 = Path(os.environ.get("SLICELIB_IXI10", SHARED / "data" / "ixi10"))


def head_volume(shape=(40, 48, 40), seed=0) -> np.ndarray:
    """Ellipsoid 'head' with a bright anterior-superior-right blob, array in RAS order."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = ((g[0] / 0.7) ** 2 + (g[1] / 0.8) ** 2 + (g[2] / 0.7) ** 2) < 1
    vol = 100.0 * head + rng.normal(0, 2, shape) * head
    blob = ((g[0] - 0.3) ** 2 + (g[1] - 0.4) ** 2 + (g[2] - 0.3) ** 2) < 0.03
    vol[blob] = 300.0
    return vol.astype(np.float32)


def save(img_or_data, path, affine=None) -> Path:
    if not isinstance(img_or_data, nib.Nifti1Image):
        img_or_data = nib.Nifti1Image(
            np.asarray(img_or_data), np.eye(4) if affine is None else affine
        )
    nib.save(img_or_data, str(path))
    return Path(path)


def to_psr(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Same image stored with axes (P, S, R) like the IXI files."""
    ornt = nib.orientations.axcodes2ornt(("P", "S", "R"))
    tr = nib.orientations.ornt_transform(nib.io_orientation(img.affine), ornt)
    return img.as_reoriented(tr)


@pytest.fixture
def cohort(tmp_path) -> Path:
    """BIDS-like folder with 6 small subjects and participants.tsv."""
    rows = []
    for i in range(6):
        pid = f"sub-{i:02d}"
        (tmp_path / pid / "anat").mkdir(parents=True)
        save(
            head_volume(SMALL, seed=i),
            tmp_path / pid / "anat" / f"{pid}_T1w.nii.gz",
            SMALL_CFG.affine,
        )
        rows.append({"participant_id": pid, "age": 20 + 10 * i, "sex": "MF"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    return tmp_path


# ---------------------------------------------------------------- grid and config


def test_grid_constants_and_config_roundtrip():
    assert MNI_2MM_SHAPE == (91, 109, 91)
    np.testing.assert_allclose(D.target_affine(MNI_2MM_SHAPE, 2.0), MNI_2MM_AFFINE)
    np.testing.assert_allclose(PreprocessConfig().affine, MNI_2MM_AFFINE)
    assert PreprocessConfig().method == "register" and D.METHODS == (
        "register",
        "resample",
        "translate",
    )
    cfg = PreprocessConfig(
        volume_shape=(10, 12, 10), voxel_size=3, normalise="whole", method="resample"
    )
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["volume_shape"] == [10, 12, 10] and "shape" not in cfg.to_dict()
    with pytest.raises(ValueError):
        PreprocessConfig(normalise="minmax")


def test_from_dict_reads_the_old_shape_key():
    """Checkpoints written before the rename store the grid as "shape"."""
    old = {"shape": [10, 12, 10], "voxel_size": 3.0, "normalise": "whole", "centre": "none"}
    cfg = PreprocessConfig.from_dict(old)
    assert cfg.volume_shape == (10, 12, 10) and cfg.normalise == "whole"
    with pytest.raises(ValueError, match="not both"):
        PreprocessConfig.from_dict({**old, "volume_shape": [10, 12, 10]})
    with pytest.raises(ValueError, match="unknown PreprocessConfig keys"):
        PreprocessConfig.from_dict({"grid": [1, 2, 3]})


@pytest.mark.parametrize(
    ("old", "new"), [("pipeline", "register"), ("mni", "resample"), ("centre", "translate")]
)
def test_old_method_names_raise_naming_the_new_one_and_from_dict_maps_them(old, new):
    with pytest.raises(ValueError, match=f"now called '{new}'"):
        PreprocessConfig(method=old)
    assert PreprocessConfig.from_dict({"method": old}).method == new


def test_from_dict_reads_the_old_centre_key():
    """Configs saved before the methods existed have only ``centre``; later ones both."""
    assert PreprocessConfig.from_dict({"centre": "brain"}).method == "translate"
    assert PreprocessConfig.from_dict({"centre": "none"}).method == "resample"
    both = {"method": "pipeline", "centre": "none"}
    assert PreprocessConfig.from_dict(both).method == "register"
    assert "centre" not in PreprocessConfig.from_dict(both).to_dict()
    with pytest.raises(ValueError, match="disagree"):
        PreprocessConfig.from_dict({"method": "mni", "centre": "brain"})


def test_dataclasses_replace_changes_the_method():
    """The legacy ``centre`` field written back in __post_init__ made this raise."""
    cfg = dataclasses.replace(PreprocessConfig(method="resample"), method="translate")
    assert cfg.method == "translate"
    assert dataclasses.replace(cfg, voxel_size=4.0).method == "translate"


# ---------------------------------------------------------------- preprocessing


def test_on_grid_image_passes_through_unchanged(tmp_path):
    vol = head_volume(SMALL)
    path = save(vol, tmp_path / "on_grid.nii.gz", SMALL_CFG.affine)
    out, aff, info = preprocess(path, SMALL_CFG, return_info=True)
    assert info["fast_path"]
    assert out.shape == SMALL and out.dtype == np.float32
    np.testing.assert_allclose(aff, SMALL_CFG.affine)
    # geometry untouched: output is an affine function of the input
    assert np.corrcoef(out.ravel(), vol.ravel())[0, 1] > 0.9999


def test_psr_image_is_reoriented_to_ras(tmp_path):
    vol = head_volume(SMALL)
    ras = nib.Nifti1Image(vol, SMALL_CFG.affine)
    psr = to_psr(ras)
    assert nib.aff2axcodes(psr.affine) == ("P", "S", "R")
    path = save(psr, tmp_path / "psr.nii.gz")
    cfg = PreprocessConfig(**{**SMALL_CFG.to_dict(), "method": "resample"})
    out, _, info = preprocess(path, cfg, return_info=True)
    assert info["source_axcodes"] == ("P", "S", "R")
    ref, _ = preprocess(ras, cfg)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # bright blob is anterior-superior-right in RAS index space
    i, j, k = np.unravel_index(np.argmax(out), out.shape)
    assert i > SMALL[0] / 2 and j > SMALL[1] / 2 and k > SMALL[2] / 2


def test_centre_brain_moves_a_far_away_head_into_the_grid(tmp_path):
    vol = head_volume((40, 48, 40))  # 4 mm voxels: ellipsoid head of 112 x 154 x 112 mm
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [300.0, -250.0, 140.0]  # scanner coordinates far from MNI
    path = save(vol, tmp_path / "far.nii.gz", aff)
    cfg = PreprocessConfig(
        volume_shape=(46, 55, 46), voxel_size=4.0, interpolation="linear", method="translate"
    )  # MNI box
    out, _, info = preprocess(path, cfg, return_info=True)
    assert info["inside_fraction"] > 0.97 and info["border_fraction"] == 0
    assert abs(info["com_offset_mm"][0]) < 4 and abs(info["com_offset_mm"][1]) < 8
    # the vertex goes to z = +104 mm, 4 mm below the grid top (+108 mm)
    top = np.flatnonzero(info["mask"].any(axis=(0, 1))).max()
    assert 104 - 8 <= cfg.affine[2, 3] + 4 * top <= 104 + 4
    none = PreprocessConfig(**{**cfg.to_dict(), "method": "resample"})
    with pytest.raises(DataError, match="no part of the image"):
        preprocess(path, none)


def test_image_declaring_mni_space_is_not_recentred(tmp_path):
    """A synthetic (MNI-space, sform code 4) scan resampled to 4 mm keeps its MNI coordinates."""
    from slicelib import synth

    vol, _ = synth.synth_subject(0, 0)
    path = tmp_path / "sub-0001_T1w.nii.gz"
    nib.save(synth._nifti(vol), path)
    assert nib.load(path).header["sform_code"] == 4
    cfg = PreprocessConfig(volume_shape=(45, 54, 45), voxel_size=4.0, method="translate")
    out, _, info = preprocess(path, cfg, return_info=True)
    assert info["declares_mni"] and not info["fast_path"]
    np.testing.assert_allclose(info["shift_mm"], 0.0)
    ref, _ = preprocess(path, PreprocessConfig(**{**cfg.to_dict(), "method": "resample"}))
    np.testing.assert_allclose(out, ref)
    # the same scan without the MNI code is treated as a raw head and translated
    raw = nib.Nifti1Image(np.asarray(vol), nib.load(path).affine)
    raw.set_sform(raw.affine, code=1)
    raw.set_qform(raw.affine, code=1)
    _, _, moved = preprocess(raw, cfg, return_info=True)
    assert not moved["declares_mni"] and np.abs(moved["shift_mm"]).max() > 0


def test_scale_to_fit_shrinks_big_heads(tmp_path):
    vol = head_volume((40, 48, 40))
    path = save(vol, tmp_path / "big.nii.gz", np.diag([5.0, 5.0, 5.0, 1.0]))  # 200 x 240 mm head
    cfg = PreprocessConfig(
        volume_shape=(30, 36, 30), voxel_size=4.0, interpolation="linear", method="translate"
    )
    _, _, plain = preprocess(path, cfg, return_info=True)
    cfg_fit = PreprocessConfig(**{**cfg.to_dict(), "scale_to_fit": True})
    _, _, fit = preprocess(path, cfg_fit, return_info=True)
    assert plain["scale"] == 1.0 and fit["scale"] > 1.1
    assert fit["border_fraction_by_face"]["left"] < plain["border_fraction_by_face"]["left"]


def test_normalisation_modes(tmp_path):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    fg, _, info = preprocess(path, SMALL_CFG, return_info=True)
    m = info["mask"]
    assert 0.1 < m.mean() < 0.6
    assert abs(fg[m].mean()) < 1e-4 and abs(fg[m].std() - 1) < 1e-3
    whole, _ = preprocess(path, PreprocessConfig(**{**SMALL_CFG.to_dict(), "normalise": "whole"}))
    assert abs(whole.mean()) < 1e-4 and abs(whole.std() - 1) < 1e-3


def _flip_x(img):
    return nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine)


def test_register_hook_is_applied(tmp_path):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    calls = []

    def flip_x(img):
        calls.append(img.shape)
        return _flip_x(img)

    cfg = PreprocessConfig(volume_shape=SMALL, voxel_size=4.0, register=flip_x)
    assert cfg.to_dict()["register_name"].endswith("test_register_hook_is_applied.<locals>.flip_x")
    out, _ = preprocess(path, cfg)
    ref, _ = preprocess(path, PreprocessConfig(**{**SMALL_CFG.to_dict(), "method": "resample"}))
    assert calls and np.allclose(out, ref[::-1], atol=1e-4)


def test_register_implies_no_recentring(tmp_path):
    """A registered image keeps its (MNI) place: method defaults to "resample" with register."""
    far = np.diag([4.0, 4.0, 4.0, 1.0])
    far[:3, 3] = [300.0, -250.0, 140.0]  # scanner coordinates far from the grid
    path = save(head_volume(SMALL), tmp_path / "raw.nii.gz", far)
    fine = (40, 48, 40)  # the registration's output grid: 2 mm, same field of view as SMALL

    def to_mni(img):  # stands in for a registration to MNI space
        return nib.Nifti1Image(head_volume(fine), D.target_affine(fine, 2.0))

    cfg = PreprocessConfig(**{**SMALL_CFG.to_dict(), "method": None}, register=to_mni)
    assert cfg.method == "resample"
    out, _, info = preprocess(path, cfg, return_info=True)
    assert not info["fast_path"] and np.allclose(info["shift_mm"], 0)
    none = PreprocessConfig(**{**SMALL_CFG.to_dict(), "method": "resample"})
    np.testing.assert_allclose(out, preprocess(to_mni(None), none)[0], atol=1e-5)
    # centring the same registered image would have moved it: the trap this rule closes
    _, _, moved = preprocess(to_mni(None), SMALL_CFG, return_info=True)
    assert np.abs(moved["shift_mm"]).max() > 4
    with pytest.raises(ValueError, match="must not be moved again"):
        PreprocessConfig(method="translate", register=to_mni)


def test_register_name_is_in_the_cache_key_and_required_for_lambdas(tmp_path):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    with pytest.raises(ValueError, match="needs register_name"):
        PreprocessConfig(register=lambda img: img)
    import functools

    with pytest.raises(ValueError, match="needs register_name"):
        PreprocessConfig(register=functools.partial(_flip_x))
    a = PreprocessConfig(
        volume_shape=SMALL, voxel_size=4.0, register=lambda i: i, register_name="ants-affine"
    )
    b = PreprocessConfig(
        volume_shape=SMALL, voxel_size=4.0, register=lambda i: i, register_name="flirt"
    )
    assert a.to_dict()["register_name"] == "ants-affine"
    assert len({C.cache_key(path, c) for c in (a, b, SMALL_CFG)}) == 3
    # read back from a dict the step is named but missing: preprocessing refuses, not skips it
    with pytest.warns(UserWarning, match="cannot be restored"):
        back = PreprocessConfig.from_dict(a.to_dict())
    assert back.method == "resample" and C.cache_key(path, back) == C.cache_key(path, a)
    with pytest.raises(ValueError, match="no register callable"):
        preprocess(path, back)


# ---------------------------------------------------------------- bad inputs (one test each)


def _assert_nothing_written(cache: Path):
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_corrupt_or_truncated_gz(tmp_path, kind):
    good = save(head_volume(SMALL), tmp_path / "good.nii.gz", SMALL_CFG.affine)
    bad = tmp_path / f"{kind}.nii.gz"
    raw = good.read_bytes()
    if kind == "corrupt":
        bad.write_bytes(b"this is not a nifti file at all" * 10)
    else:
        bad.write_bytes(raw[: len(raw) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"{kind}.nii.gz.*(corrupt|truncated)"):
        load_preprocessed(bad, SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)


def test_4d_image_rejected_but_single_volume_4d_accepted(tmp_path):
    vol = head_volume(SMALL)
    four = save(np.stack([vol, vol], -1), tmp_path / "bold.nii.gz", SMALL_CFG.affine)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"bold.nii.gz.*4D series with 2 volumes"):
        load_preprocessed(four, SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)
    one = save(vol[..., None], tmp_path / "one.nii.gz", SMALL_CFG.affine)
    assert load_nifti(one).shape == SMALL


def test_2d_image_rejected(tmp_path):
    two = save(head_volume(SMALL)[:, :, 10], tmp_path / "slice.nii.gz")
    flat = save(head_volume(SMALL)[:, :, 10:11], tmp_path / "flat.nii.gz")
    with pytest.raises(DataError, match=r"slice.nii.gz.*2D image"):
        load_nifti(two)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"flat.nii.gz.*single slice"):
        load_preprocessed(flat, SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_voxels(tmp_path, value):
    vol = head_volume(SMALL)
    vol[3, 4, 5] = value
    path = save(vol, tmp_path / "nonfinite.nii.gz", SMALL_CFG.affine)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"nonfinite.nii.gz: 1 voxels are NaN or inf"):
        load_preprocessed(path, SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)


def test_all_zero_volume(tmp_path):
    path = save(np.zeros(SMALL, np.float32), tmp_path / "empty.nii.gz", SMALL_CFG.affine)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"empty.nii.gz: every voxel is zero"):
        load_preprocessed(path, SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)


def test_missing_file(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"nope.nii.gz: file not found"):
        load_preprocessed(tmp_path / "nope.nii.gz", SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)


# ---------------------------------------------------------------- dataset


def test_volume_dataset_items(cohort, tmp_path):
    table = read_table(cohort, "age")
    ds = VolumeDataset(table, "age", SMALL_CFG, cache_dir=tmp_path / "c")
    x, y = ds[2]
    assert x.shape == (1, *SMALL) and x.dtype == torch.float32
    assert y.dtype == torch.float32 and y.ndim == 0 and float(y) == 40.0
    ref, _ = preprocess(table.path[2], SMALL_CFG)
    np.testing.assert_allclose(x[0].numpy(), ref, atol=5e-3)  # float16 cache
    again = VolumeDataset(table, "age", SMALL_CFG.to_dict(), cache_dir=tmp_path / "c")
    assert torch.equal(again[2][0], x)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    xb, yb = next(iter(loader))
    assert xb.shape == (3, 1, *SMALL) and yb.shape == (3,)
    nt = VolumeDataset(table, None, SMALL_CFG, use_cache=False)
    assert torch.isnan(nt[0][1])
    with pytest.raises(DataError, match=r"lacks columns \['brain_age'\]"):
        VolumeDataset(table, "brain_age", SMALL_CFG)


# ---------------------------------------------------------------- cache


def test_cache_hit_invalidation_and_atomic_write(tmp_path, monkeypatch):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    cache = tmp_path / "cache"
    a = load_preprocessed(path, SMALL_CFG, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and a.dtype == np.float16 and isinstance(a, np.memmap)
    calls = []
    monkeypatch.setattr(
        C, "preprocess", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError)
    )
    b = load_preprocessed(path, SMALL_CFG, cache_dir=cache)  # hit: preprocess not called
    assert not calls and np.array_equal(a, b)
    monkeypatch.undo()
    # a parameter change -> another key
    load_preprocessed(
        path, PreprocessConfig(**{**SMALL_CFG.to_dict(), "normalise": "whole"}), cache_dir=cache
    )
    assert len(list(cache.glob("*.npy"))) == 2
    # a content change -> another key
    k1 = C.cache_key(path, SMALL_CFG)
    save(head_volume(SMALL, seed=5), path, SMALL_CFG.affine)
    os.utime(path, ns=(1, 1))
    assert C.cache_key(path, SMALL_CFG) != k1
    # a corrupt (e.g. half-written by an old version) cache file is recomputed, not read
    target = cache / f"{C.cache_key(path, SMALL_CFG)}.npy"
    target.write_bytes(b"\x93NUMPY garbage")
    c = load_preprocessed(path, SMALL_CFG, cache_dir=cache)
    assert c.shape == SMALL and np.isfinite(np.asarray(c, np.float32)).all()

    # a crash while writing leaves neither the target nor a temp file
    def boom(f, arr):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(D.np, "save", boom)
    cache2 = tmp_path / "cache2"
    with pytest.raises(KeyboardInterrupt):
        load_preprocessed(path, SMALL_CFG, cache_dir=cache2)
    assert list(cache2.iterdir()) == []


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SLICELIB_CACHE", str(tmp_path / "cc"))
    assert C.default_cache_dir() == tmp_path / "cc"
    monkeypatch.delenv("SLICELIB_CACHE")
    assert C.default_cache_dir() == Path.home() / ".cache" / "slicelib"


# ---------------------------------------------------------------- real heads


@pytest.mark.skipif(not (IXI10 / "participants.tsv").is_file(), reason="ixi10 not available")
def test_ixi10_heads_land_inside_the_grid():
    """The ten raw PSR heads end up centred in the 91x109x91 grid with the head inside it."""
    t = ixi_table(IXI10)
    cfg = PreprocessConfig(interpolation="linear", method="translate")  # linear: test speed
    for row in t.itertuples():
        vol, aff, info = preprocess(row.path, cfg, return_info=True)
        assert vol.shape == MNI_2MM_SHAPE and np.allclose(aff, MNI_2MM_AFFINE)
        assert info["source_axcodes"] == ("P", "S", "R")
        faces = info["border_fraction_by_face"]
        # the neck leaves through the bottom and part of the face through the front; the
        # back, the top and the sides are clear
        assert info["border_fraction"] < 0.1, (row.participant_id, faces)
        assert faces["anterior"] < 0.15, (row.participant_id, faces)
        for side in ("left", "right", "superior"):
            assert faces[side] < 0.02, (row.participant_id, faces)
        assert faces["posterior"] < 0.05, (row.participant_id, faces)
        # orientation: the neck leaves inferiorly (not superiorly), the face anteriorly
        assert faces["inferior"] > faces["superior"] + 0.1, (row.participant_id, faces)
        assert faces["anterior"] > faces["posterior"], (row.participant_id, faces)
        com = info["com_offset_mm"]
        assert abs(com[0]) < 5 and abs(com[1]) < 10 and abs(com[2]) < 20, (row.participant_id, com)
        assert info["inside_fraction"] > 0.75
