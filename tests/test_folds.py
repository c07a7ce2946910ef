"""The shipped cross-validation folds (data/ixi_hh_4mm/folds.tsv) and slicelib.cv.make_folds."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slicelib.cv import make_folds, read_folds
from slicelib.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
DERIV = ROOT / "data" / "ixi_hh_4mm"


def _script():
    spec = importlib.util.spec_from_file_location("make_folds", DERIV / "make_folds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_folds_equal_a_fresh_run(tmp_path):
    out = _script().main(["--seed", "0", "--out", str(tmp_path / "folds.tsv")])
    assert out.read_bytes() == (DERIV / "folds.tsv").read_bytes()


def test_shipped_folds_cover_every_labelled_subject_once_and_are_stratified():
    part = pd.read_csv(DERIV / "participants.tsv", sep="\t", dtype={"participant_id": str})
    labelled = part[part["age"].notna()]
    folds = read_folds(DERIV / "folds.tsv")
    assert sorted(folds["participant_id"]) == sorted(labelled["participant_id"])  # once each
    assert not folds["participant_id"].duplicated().any()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1  # 138 = 28 + 28 + 28 + 27 + 27
    ages = labelled.set_index("participant_id")["age"]
    female = labelled.set_index("participant_id")["sex"].eq("F")
    for k, g in folds.groupby("fold"):
        ids = g["participant_id"]
        assert abs(ages[ids].mean() - ages.mean()) < 3.0, k  # years
        assert abs(ages[ids].std() - ages.std()) < 3.0, k
        assert abs(female[ids].mean() - female.mean()) < 0.1, k
        assert np.allclose(g["age"].to_numpy(), ages[ids].to_numpy())  # the file's age column


def _table(n=60, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "participant_id": [f"s{i:03d}" for i in range(n)],
            "age": rng.uniform(20, 85, n).round(2),
            "sex": rng.choice(["M", "F"], n),
        }
    )


def test_make_folds_is_seeded_skips_unlabelled_and_merges_small_strata():
    t = _table()
    t.loc[[3, 7], "age"] = np.nan  # unlabelled: left out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "least populated class" warning: strata merged
        a = make_folds(t, n_folds=5, seed=0, n_age_bins=8)
    pd.testing.assert_frame_equal(a, make_folds(t, n_folds=5, seed=0, n_age_bins=8))
    assert len(a) == 58 and not {"s003", "s007"} & set(a["participant_id"])
    assert not a.equals(make_folds(t, n_folds=5, seed=1, n_age_bins=8))
    assert a["fold"].value_counts().max() - a["fold"].value_counts().min() <= 1


def test_make_folds_refuses_bad_tables():
    t = _table(20)
    with pytest.raises(DataError, match="duplicated participant_id"):
        make_folds(pd.concat([t, t.iloc[:1]]))
    bad = t.astype({"age": object})
    bad.loc[4, "age"] = "forty"
    with pytest.raises(DataError, match="non-numeric 'age'.*s004"):
        make_folds(bad)
    with pytest.raises(DataError, match="no column 'sex'"):
        make_folds(t.drop(columns="sex"))
