"""slicelib.augment: seeded TorchIO copies of training heads; copies train, never test."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from slicelib import augment, cv
from slicelib.cli import _resolve, build_parser
from slicelib.config import TrainConfig
from slicelib.errors import ConfigError, DataError

DERIV = Path(__file__).resolve().parents[1] / "data" / "ixi_hh_4mm"


def _brain(tmp_path, name="b.nii.gz"):
    """A small registered-brain-like image: a positive ellipsoid, exactly 0 outside, MNI codes."""
    x, y, z = np.mgrid[:20, :24, :20]
    inside = ((x - 10) / 8) ** 2 + ((y - 12) / 10) ** 2 + ((z - 10) / 8) ** 2 < 1
    rng = np.random.default_rng(0)
    data = np.where(inside, 1.0 + rng.uniform(0, 3, inside.shape), 0.0).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]))
    img.set_sform(img.affine, code=4)
    img.set_qform(img.affine, code=4)
    nib.save(img, tmp_path / name)
    return tmp_path / name, data


def test_a_copy_is_repeatable_keeps_the_background_and_the_header(tmp_path):
    path, data = _brain(tmp_path)
    a = augment.augment_image(nib.load(path), seed=3)
    b = augment.augment_image(nib.load(path), seed=3)
    c = augment.augment_image(nib.load(path), seed=4)
    va, vb, vc = (np.asarray(i.dataobj) for i in (a, b, c))
    assert va.shape == data.shape and np.array_equal(va, vb)  # same seed, same copy
    assert not np.allclose(va, vc)  # another seed, another copy
    assert np.all(va[data == 0] == 0) and np.all(va[data > 0] > 0)  # the mask data > 0 is kept
    assert np.allclose(a.affine, nib.load(path).affine)
    assert int(a.header["sform_code"]) == 4 and int(a.header["qform_code"]) == 4


def test_gamma_changes_contrast_not_just_scale():
    """Some seed draws a gamma: the copy is not a linear function of the source (a z-score
    would undo a linear one, so such a copy would teach the model nothing)."""
    x, y, z = np.mgrid[:16, :16, :16]
    data = (1.0 + (x + y + z) / 10.0).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    nonlinear = 0
    for seed in range(6):
        v = np.asarray(augment.augment_image(img, seed).dataobj).ravel()
        fit = np.polyfit(data.ravel(), v, 1)
        nonlinear += np.abs(np.polyval(fit, data.ravel()) - v).max() > 1e-3 * v.max()
    assert nonlinear >= 3


def test_negative_or_z_scored_input_is_refused():
    img = nib.Nifti1Image(np.full((4, 4, 4), -1.0, np.float32), np.eye(4))
    with pytest.raises(ConfigError, match="not a z-scored array"):
        augment.augment_image(img, seed=0)


def test_training_copies_are_written_once_and_named_after_their_subject(tmp_path):
    p1, _ = _brain(tmp_path, "s1.nii.gz")
    table = pd.DataFrame({"participant_id": ["s1"], "path": [str(p1)], "age": [40.0]})
    copies = augment.training_copies(table, 2, seed=0, cache_dir=tmp_path / "cache")
    assert copies["participant_id"].tolist() == ["s1~aug0", "s1~aug1"]
    assert copies["age"].tolist() == [40.0, 40.0] and list(copies.columns) == list(table.columns)
    assert [augment.copy_of(i) for i in copies["participant_id"]] == ["s1", "s1"]
    assert augment.copy_of("s1") is None
    mtimes = [Path(p).stat().st_mtime_ns for p in copies["path"]]
    again = augment.training_copies(table, 2, seed=0, cache_dir=tmp_path / "cache")
    assert again["path"].tolist() == copies["path"].tolist()
    assert [Path(p).stat().st_mtime_ns for p in again["path"]] == mtimes  # reused, not rewritten
    other = augment.training_copies(table, 1, seed=1, cache_dir=tmp_path / "cache")
    assert other["path"][0] not in set(copies["path"])  # another seed, another file
    assert copies.dtypes.equals(table.dtypes)
    none = augment.training_copies(table, 0, cache_dir=tmp_path / "cache")
    assert none.empty and pd.concat([table, none]).dtypes.equals(table.dtypes)
    with pytest.raises(ConfigError, match=">= 0"):
        augment.training_copies(table, -1, cache_dir=tmp_path / "cache")


class Spy(Ridge):
    log: list = []

    def fit(self, X, y):
        Spy.log.append((list(X.index), np.asarray(y)))
        return super().fit(X.to_numpy(), y)

    def predict(self, X):
        return super().predict(X.to_numpy())


def test_cv_trains_on_the_copies_of_training_subjects_only(tmp_path):
    """By construction: fold k's model sees the copies of the other folds' subjects, with their
    subjects' targets, and no copy of a subject it predicts."""
    rng = np.random.default_rng(0)
    ids = [f"s{i:02d}" for i in range(20)]
    folds = pd.DataFrame({"participant_id": ids, "fold": np.arange(20) % 4})
    age = dict(zip(ids, rng.uniform(20, 80, 20)))
    rows = ids + [f"{i}~aug{k}" for i in ids for k in range(2)]
    x = pd.DataFrame(rng.normal(size=(len(rows), 3)), index=rows)
    Spy.log = []
    oof = cv.run_cv(folds, age, {"spy": (Spy, x)}, tmp_path, progress=False)
    assert set(oof["participant_id"]) == set(ids)  # copies are never predicted
    fits = json.loads((tmp_path / "fits.json").read_text())
    for k, (seen, y) in enumerate(Spy.log):
        test = set(folds.loc[folds["fold"] == k, "participant_id"])
        train = set(ids) - test
        assert {augment.copy_of(i) or i for i in seen} == train
        assert len(seen) == 3 * len(train)  # each training subject and its two copies
        assert np.allclose(y, [age[augment.copy_of(i) or i] for i in seen])
        assert fits[f"spy/fold{k}/seed0"]["n_copies"] == 2 * len(train)


def test_train_config_and_command_line_take_augment():
    assert TrainConfig.from_dict({"augment": 2}).augment == 2
    assert TrainConfig.from_dict({"augment": False}).augment == 0  # version 1's flag, off
    with pytest.raises(ConfigError, match="augment=-1"):
        TrainConfig.from_dict({"augment": -1})
    a = build_parser().parse_args(["train", "--data", "x.tsv", "--out", "r", "--augment", "2"])
    assert _resolve(a).augment == 2


def _head(tmp_path, name="raw.nii.gz"):
    """A small raw-scan-like head: a bright ellipsoid on a noisy, non-zero background."""
    x, y, z = np.mgrid[:24, :24, :20]
    inside = ((x - 12) / 9) ** 2 + ((y - 12) / 9) ** 2 + ((z - 10) / 8) ** 2 < 1
    rng = np.random.default_rng(1)
    data = (np.where(inside, 300.0, 5.0) + rng.uniform(0, 20, inside.shape)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(img, tmp_path / name)
    return tmp_path / name, data


def test_a_raw_scan_copy_is_repeatable_non_negative_and_on_the_scans_grid(tmp_path):
    path, data = _head(tmp_path)
    a, b = (augment.augment_scan(nib.load(path), seed=5) for _ in range(2))
    va, vb = np.asarray(a.dataobj), np.asarray(b.dataobj)
    assert va.shape == data.shape and np.array_equal(va, vb) and va.min() >= 0
    assert np.allclose(a.affine, nib.load(path).affine)
    changed = [not np.allclose(np.asarray(augment.augment_scan(nib.load(path), s).dataobj), data)
               for s in range(4)]  # fmt: skip
    assert sum(changed) >= 3  # some transform is drawn for (almost) every seed
    with pytest.raises(ConfigError, match="augment_scan"):
        augment.augment_scan(nib.Nifti1Image(-data, np.eye(4)), seed=0)


def test_thick_slices_of_a_raw_scan_copy_blur_along_one_axis_only():
    """The thick-slice branch alone: a copy's sharpness drops along the drawn axis and stays
    on the other two (the mean gradient along each axis, copy over source, of a pattern that
    varies along each axis on its own: a sum of one 10 mm wave per axis)."""
    wave = np.sin(2 * np.pi * np.arange(24) * 2.0 / 10.0)  # 2 mm voxels, 10 mm period
    data = (4 + wave[:, None, None] + wave[None, :, None] + wave[None, None, :]).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    thick = augment.scan_augmentation().transforms[0]  # the OneOf over the three axes
    for seed in range(3):
        out = augment._draw(thick, data, img.affine, seed)
        ratio = [np.abs(np.diff(out, axis=a)).mean() / np.abs(np.diff(data, axis=a)).mean()
                 for a in range(3)]  # fmt: skip
        assert sorted(ratio)[0] < 0.75 and sorted(ratio)[1] > 0.9


def _copies_table(tmp_path, rows):
    (tmp_path / "copies").mkdir(exist_ok=True)
    for pid, _ in rows:
        _brain(tmp_path / "copies", f"{pid}.nii.gz")
    table = pd.DataFrame(
        {"participant_id": [p for p, _ in rows], "age": 0.0, "path": [f"{p}.nii.gz" for p, _ in rows],
         "qc": [q for _, q in rows]}
    )  # fmt: skip
    table.to_csv(tmp_path / "copies" / "participants.tsv", sep="\t", index=False)
    return tmp_path / "copies" / "participants.tsv"


def test_premade_copies_join_training_for_training_subjects_only(tmp_path):
    p1, _ = _brain(tmp_path, "s1.nii.gz")
    train = pd.DataFrame({"participant_id": ["s1", "s2"], "path": [str(p1)] * 2,
                          "age": [40.0, 60.0]})  # fmt: skip
    copies = _copies_table(
        tmp_path, [("s1~scan0", "ok"), ("s1~scan1", "flagged"), ("s3~scan0", "ok")]
    )
    with pytest.warns(UserWarning, match="1 QC-flagged copies left out"):
        rows = augment.premade_copies(train, copies)
    assert rows["participant_id"].tolist() == ["s1~scan0"]  # s3 is not training; s1~scan1 flagged
    assert rows["age"].tolist() == [40.0]  # the subject's label, not the copies table's
    assert rows["path"].iat[0] == str(tmp_path / "copies" / "s1~scan0.nii.gz")
    assert rows.dtypes.equals(train.dtypes)
    assert augment.copy_of("s1~scan0") == "s1"
    assert augment.premade_copies(train, None).empty


def test_premade_copies_refuse_a_table_that_is_not_of_copies(tmp_path):
    table = _copies_table(tmp_path, [("s1~scan0", "ok"), ("s2", "ok")])
    train = pd.DataFrame({"participant_id": ["s1"], "path": ["x"], "age": [40.0]})
    with pytest.raises(DataError, match="row 1 has participant_id 's2'"):
        augment.premade_copies(train, table)


def test_train_config_and_command_line_take_copies():
    assert TrainConfig.from_dict({"copies": "c/participants.tsv"}).copies == "c/participants.tsv"
    argv = ["train", "--data", "x.tsv", "--out", "r", "--copies", "c/participants.tsv"]
    assert _resolve(build_parser().parse_args(argv)).copies == "c/participants.tsv"
