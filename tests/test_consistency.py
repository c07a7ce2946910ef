"""The consistency benchmark's re-storage functions (benchmarks/restore.py) and its fold
bookkeeping (benchmarks/consistency.py), on a small synthetic head."""

import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import consistency  # noqa: E402  (benchmarks/consistency.py)
import restore  # noqa: E402  (benchmarks/restore.py)

WM, GM = 800.0, 500.0


def _head(shape=(40, 48, 36), zoom=2.0):
    """A synthetic T1 head on a PSR 2 mm grid (as IXI-HH): an ellipsoid of grey matter
    (500) with a white-matter core (800), a bright off-centre blob (fat, 1100), air 20;
    uint8-like values stored float32. Returns (image, brain mask)."""
    idx = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((idx[i] - c[i]) / (0.42 * shape[i])) ** 2 for i in range(3)))
    data = np.full(shape, 20.0, dtype=np.float32)
    brain = r < 0.8
    data[brain] = GM
    data[r < 0.55] = WM
    blob = np.sqrt(sum((idx[i] - c[i] - 0.3 * shape[i]) ** 2 for i in range(3))) < 3
    data[blob] = 1100.0
    # PSR: voxel axis 0 -> posterior, 1 -> superior, 2 -> right
    affine = np.array([[0, 0, zoom, -30], [-zoom, 0, 0, 40], [0, zoom, 0, -30], [0, 0, 0, 1.0]])
    assert nib.aff2axcodes(affine) == ("P", "S", "R")
    return nib.Nifti1Image(data, affine), brain


def _corr(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.corrcoef(a, b)[0, 1])


def _back(img, ref):
    """``img`` resampled (trilinear) onto ``ref``'s grid: its (X, Y, Z) array."""
    return np.asarray(resample_from_to(img, ref, order=1).dataobj, dtype=float)


def test_white_matter_intensity_finds_the_white_matter():
    img, brain = _head()
    data = np.asarray(img.dataobj)
    assert restore.white_matter_intensity(data, brain) == pytest.approx(WM)
    with pytest.raises(ValueError, match="brain mask"):
        restore.white_matter_intensity(data, np.zeros_like(brain))


def test_conform_freesurfer_geometry_intensity_and_content():
    img, brain = _head()
    out = restore.conform_freesurfer(img, restore.white_matter_intensity(img.dataobj, brain))
    assert isinstance(out, nib.MGHImage)
    assert out.shape == (256, 256, 256)
    assert out.get_data_dtype() == np.uint8
    assert np.allclose(out.header.get_zooms()[:3], 1.0)
    assert nib.aff2axcodes(out.affine) == ("L", "I", "A")
    back = _back(out, img)
    # white matter at 110, grey matter at 110 * 500 / 800
    core = np.asarray(img.dataobj) == WM
    assert np.median(back[core]) == pytest.approx(110, abs=1)
    assert np.median(back[np.asarray(img.dataobj) == GM]) == pytest.approx(110 * GM / WM, abs=1)
    assert _corr(back, img.dataobj) > 0.9


def test_conform_clips_to_uint8():
    img, brain = _head()
    small = (64, 64, 64)  # the 256^3 grid is tested above; this one is faster
    out = restore.conform_freesurfer(img, wm_intensity=100.0, out_shape=small)  # WM -> 880
    assert np.asarray(out.dataobj).max() == 255
    with pytest.raises(ValueError, match="> 0"):
        restore.conform_freesurfer(img, wm_intensity=0.0)


@pytest.mark.parametrize("g", [0.7, 1.4])
def test_gamma_keeps_grid_range_and_order(g):
    img, _ = _head()
    data = np.asarray(img.dataobj)
    out = restore.gamma(img, g)
    got = np.asarray(out.dataobj)
    assert out.shape == img.shape and out.get_data_dtype() == np.float32
    assert np.allclose(out.affine, img.affine)
    assert got.min() == pytest.approx(data.min()) and got.max() == pytest.approx(data.max())
    unit = (GM - 20) / (1100 - 20)
    expected = 20 + (1100 - 20) * unit**g
    assert np.median(got[data == GM]) == pytest.approx(expected, rel=1e-5)
    assert _corr(got, data) > 0.9
    with pytest.raises(ValueError, match="gamma"):
        restore.gamma(img, 0)


def test_bias_field_is_smooth_positive_and_seeded():
    field = restore.polynomial_field((20, 24, 18), seed=3)
    assert field.shape == (20, 24, 18) and (field > 0).all()
    assert np.array_equal(field, restore.polynomial_field((20, 24, 18), seed=3))
    assert not np.array_equal(field, restore.polynomial_field((20, 24, 18), seed=4))
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.5  # smooth: no jumps
    img, _ = _head()
    out = restore.bias_field(img, seed=3)
    assert out.shape == img.shape and np.allclose(out.affine, img.affine)
    assert _corr(out.dataobj, img.dataobj) > 0.9


def test_thick_slices_are_thick_along_the_superior_axis():
    img, _ = _head()
    out = restore.thick_slices(img, 5.5)
    zooms = np.asarray(out.header.get_zooms()[:3])
    assert nib.aff2axcodes(out.affine) == ("P", "S", "R")
    assert np.allclose(zooms, [1.0, 5.5, 1.0])  # voxel axis 1 is superior-inferior
    assert out.shape == (80, round(48 * 2 / 5.5), 72)
    assert out.get_data_dtype() == np.float32
    back = _back(out, img)
    assert _corr(back, img.dataobj) > 0.9
    # the field of view is kept: the head's centre of mass stays within a thick slice
    com = [np.average(np.indices(img.shape)[i], weights=img.dataobj) for i in range(3)]
    com_out = [np.average(np.indices(out.shape)[i], weights=out.dataobj) for i in range(3)]
    mm = img.affine[:3, :3] @ com + img.affine[:3, 3]
    mm_out = out.affine[:3, :3] @ com_out + out.affine[:3, 3]
    assert np.abs(mm - mm_out).max() < 2.75


def test_rescale_to_int16():
    img, _ = _head()
    out = restore.rescale(img, 7.3, np.int16)
    assert out.get_data_dtype() == np.int16
    got = np.asanyarray(out.dataobj)
    assert np.abs(got - 7.3 * np.asarray(img.dataobj)).max() <= 0.5
    with pytest.raises(ValueError, match="int16"):
        restore.rescale(img, 100.0, np.int16)  # 1100 * 100 > 32767


def test_restore_writes_every_form(tmp_path, monkeypatch):
    img, brain = _head((20, 24, 18))
    small = (
        restore.FORMS["conformed_fs"][0],
        lambda img, brain, seed: restore.conform_freesurfer(
            img,
            restore.white_matter_intensity(np.asarray(img.dataobj), brain),
            out_shape=(48, 48, 48),
        ),
    )  # the .mgz file of a smaller grid: writing 256^3 takes seconds
    monkeypatch.setitem(restore.FORMS, "conformed_fs", small)
    src = tmp_path / "head.nii.gz"
    nib.save(img, src)
    for form in restore.FORMS:
        path = restore.restore(src, form, tmp_path / "forms", brain=brain, seed=1)
        assert path.is_file() and nib.load(path).ndim == 3
    with pytest.raises(ValueError, match="brain mask"):
        restore.restore(src, "conformed_fs", tmp_path / "other")
    with pytest.raises(ValueError, match="unknown form"):
        restore.restore(src, "jpeg", tmp_path / "forms")


def _folds(n=30, k=5):
    return pd.DataFrame(
        {"participant_id": [f"s{i:02d}" for i in range(n)], "fold": [i % k for i in range(n)]}
    )


def test_fold_split_never_trains_on_the_test_fold():
    folds = _folds()
    split = consistency.fold_split(folds, 2, seed=0)
    test = set(split.loc[split["split"] == "test", "participant_id"])
    assert test == set(folds.loc[folds["fold"] == 2, "participant_id"])
    assert (split["split"] == "val").sum() == 2  # 10 % of the 24 others
    assert split.equals(consistency.fold_split(folds, 2, seed=0))


def test_train_fold_passes_the_normalisation_and_keeps_each_in_its_own_runs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(consistency.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    data = tmp_path / "participants.tsv"
    for normalise, augment, res, runs in (
        ("foreground", 0, None, "runs"), ("quantile", 0, None, "runs_quantile"),
        ("foreground", 2, None, "runs_augment2"), ("foreground", 0, 6.0, "runs_res6"),
    ):  # fmt: skip
        run = consistency.train_fold(_folds(), 1, data, tmp_path, 0, normalise, augment, res)
        assert run == tmp_path / runs / "fold1"
        assert calls[-1][calls[-1].index("--augment") + 1] == str(augment)
        config = Path(calls[-1][calls[-1].index("--config") + 1])
        parsed = tomllib.loads(config.read_text())
        pipeline = {"pipeline": {"resolution_mm": res}} if res else {}
        assert parsed["preprocess"] == {"normalise": normalise, **pipeline}
        assert Path(parsed["split"]).is_file() and calls[-1][calls[-1].index("--out") + 1] == str(
            run
        )


def test_runs_with_pre_made_copies_are_named_by_their_copies_per_head(tmp_path, monkeypatch):
    monkeypatch.setattr(consistency.subprocess, "run", lambda cmd, **kw: None)
    data = tmp_path / "participants.tsv"
    for n, runs in (
        (1, "runs_tissue_augment2_scancopies"),
        (3, "runs_tissue_augment2_scancopies3"),
    ):
        copies = tmp_path / f"copies{n}.tsv"
        ids = [f"IXI{i:03d}-HH-1~scan{k}" for i in range(4) for k in range(n)]
        pd.DataFrame({"participant_id": ids, "age": 50.0}).to_csv(copies, sep="\t", index=False)
        assert consistency.per_head(copies) == n
        run = consistency.train_fold(_folds(), 1, data, tmp_path, 0, "tissue", 2, None, copies)
        assert run == tmp_path / runs / "fold1"  # a 3-copy model never reuses a 1-copy one


def test_choose_subjects_is_seeded_and_per_fold():
    folds = _folds().assign(age=40.0)
    a = consistency.choose_subjects(folds, 2, seed=0)
    assert a.equals(consistency.choose_subjects(folds, 2, seed=0))
    assert a.groupby("fold").size().tolist() == [2] * 5
    with pytest.raises(ValueError, match="per-fold"):
        consistency.choose_subjects(folds, 7, seed=0)


def test_summarise_applies_the_bounds():
    rows = pd.DataFrame(
        {
            "participant_id": ["a", "b", "a", "b", "a", "b"],
            "form": ["original", "original", "x", "x", "y", "y"],
            "change": [0.0, 0.0, 1.0, -1.5, 1.0, 9.0],
            "qc": ["ok"] * 5 + ["flagged"],
            "error": [""] * 6,
        }
    )
    table = consistency.summarise(rows).set_index("form")
    assert table.loc["x", "median_abs_change"] == pytest.approx(1.25)
    assert bool(table.loc["x", "passes"]) and not bool(table.loc["y", "passes"])
    assert table.loc["y", "qc_flagged"] == 1


def test_report_writes_the_table(tmp_path):
    rows = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b", "b"],
            "fold": [0, 0, 1, 1],
            "age": [40.0, 40.0, 60.0, 60.0],
            "form": ["original", "gamma_0.7", "original", "gamma_0.7"],
            "prediction": [42.0, 30.0, 58.0, 50.0],
            "change": [0.0, -12.0, 0.0, -8.0],
            "qc": ["ok"] * 4,
            "error": [""] * 4,
            "seconds_per_file": [60.0] * 4,
        }
    )
    chosen = rows.drop_duplicates("participant_id")[["participant_id", "fold", "age"]]
    args = SimpleNamespace(per_fold=1, seed=0, forms=["gamma_0.7"], normalise="quantile", augment=2)
    consistency.report(rows, chosen, args, tmp_path)
    text = (tmp_path / "consistency.md").read_text()
    assert "| gamma_0.7 | 2 | 10.00 |" in text and "FAIL" in text
    assert "MAE 2.00 years over 2 subjects" in text and "4.0 min" in text
    assert "volumes normalised by `quantile`" in text  # the models' normalisation is named
    assert "2 augmented copies of each training head" in text
    assert pd.read_csv(tmp_path / "summary.csv")["passes"].tolist() == [False]


def test_chosen_run_reads_the_cv_choice_of_each_fold(tmp_path):
    runs = [tmp_path / f"fold{k}" / "run-lr0.001" for k in range(2)]
    for r in runs:
        r.mkdir(parents=True)
        (r / "best.pt").write_bytes(b"x")
    table = pd.DataFrame({"fold": [0, 1], "arm": "a", "seed": 0, "run": [str(r) for r in runs]})
    table.to_csv(tmp_path / "lr_choice.csv", index=False)
    assert consistency.chosen_run(tmp_path / "lr_choice.csv", 1) == runs[1]
    pd.concat([table, table]).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(SystemExit, match="2 rows for fold 0"):
        consistency.chosen_run(tmp_path / "two.csv", 0)
    (runs[0] / "best.pt").unlink()
    with pytest.raises(SystemExit, match="no best.pt"):
        consistency.chosen_run(tmp_path / "lr_choice.csv", 0)


def test_step_swap_measures_a_registration_shift_and_the_masks_difference():
    """benchmarks/step_swap.differences: a form registered 3 mm off along x moves every
    template voxel by 3 mm; a form mask with a rim outside the template counts as outside."""
    import SimpleITK as sitk
    import step_swap  # noqa: E402  (benchmarks/step_swap.py)
    from scipy.ndimage import binary_dilation

    from slicelib.io import grid
    from slicelib.utils import mni_template

    shape, affine = grid(4.0)
    template = mni_template(shape, affine, what="mask").get_fdata() > 0.5
    moved = sitk.AffineTransform(3)
    moved.SetTranslation((3.0, 0.0, 0.0))
    rim = binary_dilation(template) & ~template
    diff = step_swap.differences(
        {"o": sitk.AffineTransform(3), "t": moved}, {"o": template, "t": template | rim},
        shape, affine,
    )  # fmt: skip
    assert diff["reg_shift_mm"] == pytest.approx(3.0)
    assert diff["mask_extra_in"] == 0 and diff["mask_missing"] == 0
    assert diff["mask_extra_out"] == pytest.approx(rim.sum() / template.sum())
