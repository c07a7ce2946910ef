"""Tests for slicelib.data: loading, preprocessing, tables, cache, splits, OASIS/IXI, errors.

All volumes are tiny and generated in tmp_path; the ixi10 tests use ../shared/data/ixi10
(or $SLICELIB_IXI10) and skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED

from slicelib import data as D
from slicelib.data import (
    MNI_2MM_AFFINE,
    MNI_2MM_SHAPE,
    DataError,
    PreprocessConfig,
    VolumeDataset,
    load_nifti,
    load_preprocessed,
    preprocess,
    read_table,
    split_subjects,
)

torch.set_num_threads(1)

SMALL = (20, 24, 20)  # 4 mm grid, 80 x 96 x 80 mm
SMALL_CFG = PreprocessConfig(shape=SMALL, voxel_size=4.0, interpolation="linear")
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
    cfg = PreprocessConfig(shape=(10, 12, 10), voxel_size=3, normalise="whole", centre="none")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        PreprocessConfig(normalise="minmax")


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
    cfg = PreprocessConfig(**{**SMALL_CFG.to_dict(), "centre": "none"})
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
    cfg = PreprocessConfig(shape=(46, 55, 46), voxel_size=4.0, interpolation="linear")  # MNI box
    out, _, info = preprocess(path, cfg, return_info=True)
    assert info["inside_fraction"] > 0.97 and info["border_fraction"] == 0
    assert abs(info["com_offset_mm"][0]) < 4 and abs(info["com_offset_mm"][1]) < 8
    # the vertex goes to z = +104 mm, 4 mm below the grid top (+108 mm)
    top = np.flatnonzero(info["mask"].any(axis=(0, 1))).max()
    assert 104 - 8 <= cfg.affine[2, 3] + 4 * top <= 104 + 4
    none = PreprocessConfig(**{**cfg.to_dict(), "centre": "none"})
    with pytest.raises(DataError, match="no part of the image"):
        preprocess(path, none)


def test_image_declaring_mni_space_is_not_recentred(tmp_path):
    """A synthetic (MNI-space, sform code 4) scan resampled to 4 mm keeps its MNI coordinates."""
    from slicelib import synth

    vol, _ = synth.synth_subject(0, 0)
    path = tmp_path / "sub-0001_T1w.nii.gz"
    nib.save(synth._nifti(vol), path)
    assert nib.load(path).header["sform_code"] == 4
    cfg = PreprocessConfig(shape=(45, 54, 45), voxel_size=4.0)  # centre="brain" (default)
    out, _, info = preprocess(path, cfg, return_info=True)
    assert info["declares_mni"] and not info["fast_path"]
    np.testing.assert_allclose(info["shift_mm"], 0.0)
    ref, _ = preprocess(path, PreprocessConfig(**{**cfg.to_dict(), "centre": "none"}))
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
    cfg = PreprocessConfig(shape=(30, 36, 30), voxel_size=4.0, interpolation="linear")
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


def test_register_hook_is_applied(tmp_path):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    calls = []

    def flip_x(img):
        calls.append(img.shape)
        return nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine)

    cfg = PreprocessConfig(**{**SMALL_CFG.to_dict(), "centre": "none"}, register=flip_x)
    assert cfg.to_dict()["register_name"] == "flip_x"
    out, _ = preprocess(path, cfg)
    ref, _ = preprocess(path, SMALL_CFG)
    assert calls and np.allclose(out, ref[::-1], atol=1e-4)


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


def test_missing_file(tmp_path, cohort):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"nope.nii.gz: file not found"):
        load_preprocessed(tmp_path / "nope.nii.gz", SMALL_CFG, cache_dir=cache)
    _assert_nothing_written(cache)
    (cohort / "sub-03" / "anat" / "sub-03_T1w.nii.gz").unlink()
    with pytest.raises(DataError, match=r"participants.tsv: subject 'sub-03' \(line 5\) has no"):
        read_table(cohort, "age")
    t = pd.DataFrame({"participant_id": ["a"], "path": ["missing.nii.gz"], "age": [30]})
    t.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"t.csv: image for subject 'a' \(line 2\) not found"):
        read_table(tmp_path / "t.csv", "age")


def test_table_without_target_column(cohort):
    with pytest.raises(DataError, match=r"participants.tsv: no target column 'brain_age'"):
        read_table(cohort, "brain_age")


def test_missing_target(cohort):
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t.loc[2, "age"] = np.nan
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"'age' is missing for 1 subject.*'sub-02' \(line 4\)"):
        read_table(cohort, "age")


def test_non_numeric_target(cohort):
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t["age"] = t["age"].astype(object)
    t.loc[1, "age"] = "forty"
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"not numeric for subject 'sub-01' \(line 3\): 'forty'"):
        read_table(cohort, "age")
    with pytest.raises(DataError, match=r"'sex' is not numeric"):
        read_table(cohort, "sex")


def test_duplicated_subject_ids(cohort):
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t = pd.concat([t, t.iloc[[1]]])
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"duplicated subject ids \['sub-01'\] \(lines \[3, 8\]\)"):
        read_table(cohort, "age")
    with pytest.raises(DataError, match="duplicated"):
        split_subjects(t, "age")


# ---------------------------------------------------------------- tables and datasets


def test_read_table_bids_and_csv(cohort, tmp_path):
    t = read_table(cohort, "age")
    assert list(t.columns[:3]) == ["participant_id", "path", "age"]
    assert len(t) == 6 and t["age"].dtype == float and "sex" in t.columns
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in t["path"])
    # CSV with a relative path column and another id column name
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    rel = [os.path.relpath(p, sub) for p in t["path"]]
    pd.DataFrame({"subject": t["participant_id"], "file": rel, "y": t["age"]}).to_csv(
        sub / "table.csv", index=False
    )
    t2 = read_table(sub / "table.csv", "y", id_column="subject")
    assert list(t2["path"]) == list(t["path"]) and list(t2["participant_id"]) == list(
        t["participant_id"]
    )


def test_volume_dataset_items_and_augmentation(cohort, tmp_path):
    table = read_table(cohort, "age")
    ds = VolumeDataset(table, "age", SMALL_CFG, cache_dir=tmp_path / "c")
    x, y = ds[2]
    assert x.shape == (1, *SMALL) and x.dtype == torch.float32
    assert y.dtype == torch.float32 and y.ndim == 0 and float(y) == 40.0
    ref, _ = preprocess(table.path[2], SMALL_CFG)
    np.testing.assert_allclose(x[0].numpy(), ref, atol=5e-3)  # float16 cache
    aug = VolumeDataset(
        table, "age", SMALL_CFG.to_dict(), cache_dir=tmp_path / "c", augment=True, seed=1
    )
    a1, _ = aug[2]
    a2, _ = aug[2]
    assert torch.equal(a1, a2)  # same seed, epoch and index -> same draw
    assert not torch.allclose(a1, x, atol=1e-2)
    aug.set_epoch(1)
    assert not torch.equal(aug[2][0], a1)
    assert torch.isfinite(a1).all() and abs(float(a1.mean() - x.mean())) < 0.5
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    xb, yb = next(iter(loader))
    assert xb.shape == (3, 1, *SMALL) and yb.shape == (3,)
    nt = VolumeDataset(table, None, SMALL_CFG, use_cache=False)
    assert torch.isnan(nt[0][1])


def test_augment_volume_identity_when_ranges_zero():
    x = torch.from_numpy(head_volume(SMALL))[None]
    zero = D.AugmentConfig(0, 0, 0, 0, 0, 0)
    y = D.augment_volume(x, np.random.default_rng(0), zero, 4.0)
    torch.testing.assert_close(y, x, atol=1e-3, rtol=1e-4)


# ---------------------------------------------------------------- cache


def test_cache_hit_invalidation_and_atomic_write(tmp_path, monkeypatch):
    path = save(head_volume(SMALL), tmp_path / "a.nii.gz", SMALL_CFG.affine)
    cache = tmp_path / "cache"
    a = load_preprocessed(path, SMALL_CFG, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and a.dtype == np.float16 and isinstance(a, np.memmap)
    calls = []
    monkeypatch.setattr(
        D, "preprocess", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError)
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
    k1 = D.cache_key(path, SMALL_CFG)
    save(head_volume(SMALL, seed=5), path, SMALL_CFG.affine)
    os.utime(path, ns=(1, 1))
    assert D.cache_key(path, SMALL_CFG) != k1
    # a corrupt (e.g. half-written by an old version) cache file is recomputed, not read
    target = cache / f"{D.cache_key(path, SMALL_CFG)}.npy"
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
    assert D.default_cache_dir() == tmp_path / "cc"
    monkeypatch.delenv("SLICELIB_CACHE")
    assert D.default_cache_dir() == Path.home() / ".cache" / "slicelib"


# ---------------------------------------------------------------- splits


def test_split_subjects_seeded_disjoint_stratified():
    n = 200
    rng = np.random.default_rng(0)
    t = pd.DataFrame(
        {
            "participant_id": [f"s{i}" for i in range(n)],
            "age": rng.uniform(20, 90, n),
            "ad": (np.arange(n) % 4 == 0).astype(int),
        }
    )
    s = split_subjects(t, "ad", seed=3)
    assert s == split_subjects(t, "ad", seed=3)
    assert s != split_subjects(t, "ad", seed=4)
    all_ids = s["train"] + s["val"] + s["test"]
    assert sorted(all_ids) == sorted(t.participant_id) and len(set(all_ids)) == n
    assert [len(s[k]) for k in ("train", "val", "test")] == [140, 30, 30]
    ad = dict(zip(t.participant_id, t.ad))
    for k, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(sum(ad[i] for i in s[k]) - 50 * frac) <= 1  # 50 AD subjects split 35/7.5/7.5
    s_age = split_subjects(t, "age", seed=0)
    age = dict(zip(t.participant_id, t.age))
    means = [np.mean([age[i] for i in s_age[k]]) for k in ("train", "val", "test")]
    assert max(means) - min(means) < 4  # age bins balance the splits
    two = split_subjects(t, None, fractions=(0.8, 0.2))
    assert len(two["train"]) == 160 and two["val"] == [] and len(two["test"]) == 40


# ---------------------------------------------------------------- OASIS (offline fixture)


def fake_oasis_bunch(root: Path, n: int = 4):
    """A Bunch shaped like nilearn.datasets.fetch_oasis_vbm's (DARTEL) result, small images."""
    from sklearn.utils import Bunch

    # oasis_cross-sectional.csv columns after nilearn's rename (lowercase, '/' removed);
    # dtypes as pandas reads the real CSV: id/mf/hand str, age/etiv int, others float (NaN blanks)
    ext = pd.DataFrame(
        {
            "id": [f"OAS1_{s:04d}_MR1" for s in range(1, n + 1)],
            "mf": ["F", "M", "F", "M"][:n],
            "hand": ["R"] * n,
            "age": np.array([74, 55, 23, 80][:n], dtype=np.int64),
            "educ": [2.0, 4.0, np.nan, 3.0][:n],
            "ses": [3.0, 1.0, np.nan, 2.0][:n],
            "mmse": [29.0, 29.0, np.nan, 22.0][:n],
            "cdr": [0.0, 0.0, np.nan, 1.0][:n],
            "etiv": np.array([1344, 1147, 1588, 1400][:n], dtype=np.int64),
            "nwbv": [0.743, 0.81, 0.823, 0.7][:n],
            "asf": [1.306, 1.531, 1.105, 1.2][:n],
            "delay": [np.nan] * n,
        }
    )
    gm, wm = [], []
    for sid in ext["id"]:
        d = root / "oasis1" / sid
        d.mkdir(parents=True, exist_ok=True)
        for kind, lst in (("1", gm), ("2", wm)):
            p = d / f"mwrc{kind}{sid}_mpr_anon_fslswapdim_bet.nii.gz"
            save(head_volume(SMALL) / 300.0, p, SMALL_CFG.affine)
            lst.append(str(p))
    ext.to_csv(root / "oasis1" / "oasis_cross-sectional.csv", index=False)
    (root / "oasis1" / "data_usage_agreement.txt").write_text("DUA")
    return Bunch(
        gray_matter_maps=gm,
        white_matter_maps=wm,
        ext_vars=ext,
        data_usage_agreement=str(root / "oasis1" / "data_usage_agreement.txt"),
        description="OASIS",
    )


def test_fetch_oasis_with_nilearn_shaped_fixture(tmp_path, monkeypatch):
    import nilearn.datasets

    bunch = fake_oasis_bunch(tmp_path)
    seen = {}

    def fake_fetch(
        n_subjects=None, dartel_version=True, data_dir=None, url=None, resume=True, verbose=1
    ):
        seen.update(n_subjects=n_subjects, data_dir=data_dir)
        return bunch

    monkeypatch.setattr(nilearn.datasets, "fetch_oasis_vbm", fake_fetch)
    t = D.fetch_oasis(data_dir=tmp_path, n_subjects=4)
    assert seen == {"n_subjects": 4, "data_dir": tmp_path}
    assert list(t.columns[:7]) == [
        "participant_id",
        "path",
        "age",
        "sex",
        "mmse",
        "cdr",
        "dementia",
    ]
    assert list(t.participant_id) == [
        "OAS1_0001_MR1",
        "OAS1_0002_MR1",
        "OAS1_0003_MR1",
        "OAS1_0004_MR1",
    ]
    assert list(t.dementia) == [0, 0, 0, 1] and list(t.sex) == ["F", "M", "F", "M"]
    assert t.age.dtype == float and np.isnan(t.cdr[2])
    assert all("mwrc1" in Path(p).name for p in t.path)
    cfg = PreprocessConfig.from_dict(t.attrs["preprocess"])
    assert cfg.centre == "none"
    ds = VolumeDataset(
        t,
        "dementia",
        PreprocessConfig(**{**SMALL_CFG.to_dict(), "centre": "none"}),
        use_cache=False,
    )
    assert ds[3][1] == 1.0


def test_fetch_oasis_offline_error_says_how_to_provide_data(tmp_path, monkeypatch):
    import nilearn.datasets

    def offline(**kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(nilearn.datasets, "fetch_oasis_vbm", offline)
    with pytest.raises(DataError, match=r"could not be fetched.*oasis1.*data_dir"):
        D.fetch_oasis(data_dir=tmp_path)


# ---------------------------------------------------------------- IXI


needs_ixi10 = pytest.mark.skipif(
    not (IXI10 / "participants.tsv").is_file(), reason="ixi10 not available"
)


@needs_ixi10
def test_ixi_table_and_env_override(monkeypatch):
    t = D.ixi_table(IXI10)
    assert len(t) == 10 and t.age.between(20, 60).all()
    monkeypatch.setenv("SLICELIB_IXI10", str(IXI10))
    assert D.ixi_table().equals(t)


@needs_ixi10
def test_ixi10_heads_land_inside_the_grid():
    """The ten raw PSR heads end up centred in the 91x109x91 grid with the head inside it."""
    t = D.ixi_table(IXI10)
    cfg = PreprocessConfig(interpolation="linear")  # default grid; linear for test speed
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
