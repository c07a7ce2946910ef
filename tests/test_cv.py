"""slicelib.cv: out-of-fold predictions never from a model that saw the subject; resume; summary."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

from slicelib import cv, frozen
from slicelib import metrics as M
from slicelib.datasets import ixi_derivative
from slicelib.errors import ConfigError, DataError
from slicelib.frozen import block_pool

DERIV = Path(__file__).resolve().parents[1] / "data" / "ixi_hh_4mm"


class Spy(Ridge):
    """A ridge that records the subjects (the feature table's index) it was fitted on."""

    log: list = []

    def fit(self, X, y):
        Spy.log.append(set(X.index))
        return super().fit(X.to_numpy(), y)

    def predict(self, X):
        return super().predict(X.to_numpy())


class Refuse:
    """An estimator that must not be fitted (resume must skip it)."""

    def fit(self, X, y):
        raise AssertionError("refitted a finished fold")


def _problem(n=40, k=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i:02d}" for i in range(n)]
    folds = pd.DataFrame({"participant_id": ids, "fold": np.arange(n) % k})
    age = rng.uniform(20, 80, n)
    x = pd.DataFrame(np.c_[age + rng.normal(0, 5, n), rng.normal(size=(n, 3))], index=ids)
    return folds, dict(zip(ids, age)), x


def test_oof_predictions_never_come_from_a_model_that_saw_the_subject(tmp_path):
    folds, targets, x = _problem()
    Spy.log = []
    oof = cv.run_cv(folds, targets, {"spy": (Spy, x)}, tmp_path, progress=False)
    assert len(Spy.log) == 4 and len(oof) == 40 and set(oof["participant_id"]) == set(x.index)
    fits = json.loads((tmp_path / "fits.json").read_text())
    for k, g in oof.groupby("fold"):
        seen = Spy.log[k]  # what the model of fold k was actually fitted on
        assert not seen & set(g["participant_id"])
        assert seen == set(folds.loc[folds["fold"] != k, "participant_id"])  # all other folds
        assert set(fits[f"spy/fold{k}/seed0"]["train_ids"]) == seen
    # and the predictions are that model's: refit on the other folds by hand
    g = oof[oof["fold"] == 2]
    tr = folds.loc[folds["fold"] != 2, "participant_id"]
    ref = Ridge().fit(x.loc[tr].to_numpy(), [targets[i] for i in tr])
    assert np.allclose(g["prediction"], ref.predict(x.loc[g["participant_id"]].to_numpy()))
    assert np.allclose(g["target"], [targets[i] for i in g["participant_id"]])


def test_resume_skips_finished_folds_and_refuses_other_folds(tmp_path):
    folds, targets, x = _problem()
    first = cv.run_cv(folds, targets, {"spy": (Spy, x)}, tmp_path, progress=False)
    again = cv.run_cv(folds, targets, {"spy": (Refuse, x)}, tmp_path, progress=False)
    pd.testing.assert_frame_equal(first, again)  # nothing refitted, nothing lost
    part = first[first["fold"] != 2]  # an interrupted run: fold 2 missing
    part.to_csv(tmp_path / "oof.csv", index=False)
    Spy.log = []
    resumed = cv.run_cv(folds, targets, {"spy": (Spy, x)}, tmp_path, progress=False)
    assert len(Spy.log) == 1  # only fold 2 was fitted
    key = ["arm", "participant_id"]
    pd.testing.assert_frame_equal(
        resumed.sort_values(key).reset_index(drop=True),
        first.sort_values(key).reset_index(drop=True),
    )
    other = folds.assign(fold=(folds["fold"] + 1) % 4)
    with pytest.raises(ConfigError, match="other folds .*in fold"):
        cv.run_cv(other, targets, {"spy": (Spy, x)}, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="s00 is in fold 0 there, not in the folds given"):
        cv.run_cv(folds.iloc[1:], targets, {"spy": (Spy, x)}, tmp_path, progress=False)
    bad = folds.astype({"fold": object})
    bad.loc[3, "fold"] = "two"
    with pytest.raises(DataError, match="row 3 \\(s03\\) has fold 'two'"):
        cv.run_cv(bad, targets, {"spy": (Spy, x)}, tmp_path / "new", progress=False)


def _oof():
    rng = np.random.default_rng(1)
    n = 30
    ids = [f"s{i:02d}" for i in range(n)]
    age = rng.uniform(20, 80, n)
    rows = []
    for arm, noise, seeds in (("a", 3, [0]), ("b", 6, [0, 1]), ("c", 9, [0])):
        for s in seeds:
            pred = age + rng.normal(0, noise, n)
            rows.append(
                pd.DataFrame(dict(participant_id=ids, fold=np.arange(n) % 3, arm=arm, seed=s))
            )
            rows[-1]["prediction"], rows[-1]["target"] = pred, age
    return pd.concat(rows, ignore_index=True)


def test_summarise_oof_matches_direct_statistics_for_any_arms():
    oof = _oof()
    summary, paired = cv.summarise_oof(oof, n_boot=300)
    assert summary["arm"].tolist() == ["a", "b", "c"]
    assert summary.set_index("arm")["n_seeds"].to_dict() == {"a": 1, "b": 2, "c": 1}
    b = oof[oof["arm"] == "b"].groupby("participant_id")[["prediction", "target"]].mean()
    row = summary.set_index("arm").loc["b"]
    assert row["mae"] == pytest.approx(np.abs(b["prediction"] - b["target"]).mean())  # ensemble
    assert row["mae_lo"] < row["mae"] < row["mae_hi"]
    a = oof[oof["arm"] == "a"].set_index("participant_id")
    corrected, _ = M.fold_bias_correction(a["target"], a["prediction"], a["fold"])
    arow = summary.set_index("arm").loc["a"]
    assert arow["corrected_gap_mae"] == pytest.approx(np.abs(corrected - a["target"]).mean())
    assert [tuple(r) for r in paired[["arm_a", "arm_b"]].to_numpy()] == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    direct = M.paired_difference(a["target"], a["prediction"], b.loc[a.index, "prediction"], 300)
    got = paired.iloc[0].to_dict()
    for key, value in direct.items():
        assert got[key] == pytest.approx(value), key
    each, paired_each = cv.summarise_oof(oof, n_boot=50, seeds="each")
    assert each["arm"].tolist() == ["a", "b/seed0", "b/seed1", "c"] and len(paired_each) == 6


def test_oof_tables_with_bad_rows_are_refused(tmp_path):
    oof = _oof()
    bad = oof.copy()
    bad.loc[5, "prediction"] = np.nan
    with pytest.raises(DataError, match="row 5 .*s05.* prediction"):
        cv.summarise_oof(bad)
    bad = oof.copy()
    bad.loc[0, "target"] += 1.0
    with pytest.raises(DataError, match="s00 has different targets"):
        cv.summarise_oof(bad)
    with pytest.raises(DataError, match="2 rows for arm a seed 0"):
        cv.summarise_oof(pd.concat([oof, oof.iloc[:1]]))
    oof.drop(columns="seed").to_csv(tmp_path / "oof.csv", index=False)
    with pytest.raises(DataError, match=r"columns \['seed'\] missing"):
        cv.read_oof(tmp_path / "oof.csv")


def test_baselines_on_a_subset_of_the_derivative(tmp_path):
    """The three baselines end to end on 9 of the shipped heads (3 folds)."""
    folds = cv.read_folds(DERIV / "folds.tsv")
    sub = folds[folds["fold"] < 3].groupby("fold").head(3)
    sub.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    summary, paired = cv.cv_baselines(DERIV, tmp_path / "out", tmp_path / "folds.tsv", n_boot=100)
    assert summary["arm"].tolist() == ["mean", "ridge_roi", "ridge_voxels"]
    assert (summary["n"] == 9).all() and len(paired) == 3
    oof = cv.read_oof(tmp_path / "out" / "oof.csv")
    age = sub.set_index("participant_id")["age"]
    for k, g in oof[oof["arm"] == "mean"].groupby("fold"):  # the training-mean age
        assert np.allclose(g["prediction"], age[sub.loc[sub["fold"] != k, "participant_id"]].mean())
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert fits["ridge_voxels/fold0/seed0"]["alpha"] in cv.RIDGE_ALPHAS
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["arm"].tolist() == summary["arm"].tolist()
    with pytest.raises(ConfigError, match="unknown arms"):
        cv.cv_baselines(DERIV, tmp_path / "out", tmp_path / "folds.tsv", arms=["sfcn"])


# -----------------------------------------------------------------------------
# the frozen-feature arms


def test_block_pool_gives_the_mean_of_contiguous_blocks_axis_by_axis():
    rng = np.random.default_rng(0)
    n_slices = [5, 7, 4]  # three axes
    f = rng.normal(size=(2, sum(n_slices), 3)).astype(np.float32)  # (N, S, F)
    out = block_pool(f, n_slices, 2)
    assert out.shape == (2, 3 * 2, 3) and out.dtype == np.float32
    # axis 0: slices 0-2 and 3-4; axis 1: 5-8 and 9-11; axis 2: 12-13 and 14-15
    for row, (a, b) in enumerate([(0, 3), (3, 5), (5, 9), (9, 12), (12, 14), (14, 16)]):
        assert np.allclose(out[:, row], f[:, a:b].mean(axis=1))
    assert np.allclose(block_pool(f, n_slices, 1)[:, 1], f[:, 5:12].mean(axis=1))
    four = block_pool(torch.as_tensor(f), n_slices, 4)  # a tensor in, the same blocks
    assert four.shape == (2, 12, 3) and np.allclose(four[:, 4], f[:, 5:7].mean(axis=1))
    assert np.allclose(four[:, 7], f[:, 11]) and np.allclose(four[:, 11], f[:, 15])
    with pytest.raises(ValueError, match="n_blocks=5; use 1 to 4"):
        block_pool(f, n_slices, 5)
    with pytest.raises(ValueError, match=r"\(N, 15, F\)"):
        block_pool(f, [5, 6, 4], 2)


class SpyPipeline:
    """The frozen arms' ridge (cv.ridge_estimator), recording the subjects it is fitted on."""

    log: list = []

    def __init__(self):
        self.model = cv.ridge_estimator()

    def fit(self, X, y):
        SpyPipeline.log.append(set(X.index))
        self.model.fit(X, y)
        return self

    def predict(self, X):
        return self.model.predict(X)


def test_frozen_feature_arm_is_fitted_on_training_folds_only_and_resumes_without_encoding(
    tmp_path, monkeypatch
):
    """A tiny frozen encoder (slice_cnn, random init) on 6 shipped heads in 3 folds."""
    folds = cv.read_folds(DERIV / "folds.tsv")
    sub = folds[folds["fold"] < 3].groupby("fold").head(2).reset_index(drop=True)
    ids = sub["participant_id"].tolist()
    table = ixi_derivative(DERIV)
    heads = table.set_index("participant_id").loc[ids].reset_index()
    kw = dict(backbone="slice_cnn", weights=None, cache_dir=tmp_path / "cache")
    x, info = frozen.pooled_features(heads, table.attrs["preprocess"], 3, **kw)
    assert x.shape == (6, 3 * 3 * 32) and list(x.index) == ids and info["n_encoded"] == 6
    assert np.isfinite(x.to_numpy()).all() and x.to_numpy().std() > 0

    def refuse(*args, **kwargs):
        raise AssertionError("re-encoded a cached head")

    monkeypatch.setattr(frozen, "encode_features", refuse)
    again, info2 = frozen.pooled_features(heads[::-1], table.attrs["preprocess"], 3, **kw)
    assert info2["n_encoded"] == 0 and info2["encoder_key"] == info["encoder_key"]
    pd.testing.assert_frame_equal(again.loc[ids], x)
    with pytest.raises(AssertionError, match="re-encoded"):  # another seed: another encoder
        frozen.pooled_features(heads, table.attrs["preprocess"], 3, seed=1, **kw)

    targets = sub.set_index("participant_id")["age"].to_dict()
    SpyPipeline.log = []
    oof = cv.run_cv(sub, targets, {"frozen": (SpyPipeline, x)}, tmp_path / "out", progress=False)
    assert len(SpyPipeline.log) == 3 and sorted(oof["participant_id"]) == sorted(ids)
    for k, g in oof.groupby("fold"):
        train = set(sub.loc[sub["fold"] != k, "participant_id"])
        assert SpyPipeline.log[k] == train and not train & set(g["participant_id"])
        ref = cv.ridge_estimator().fit(x.loc[sorted(train)], [targets[i] for i in sorted(train)])
        assert np.allclose(g["prediction"], ref.predict(x.loc[g["participant_id"]]))


def test_ensemble_is_the_mean_of_its_members_seed_means_and_refuses_mismatches():
    folds, targets, x = _problem(n=12, k=3)
    rows = []
    for arm, offset in (("a", 1.0), ("b", -3.0)):
        for seed in (0, 1):
            for pid, f in zip(folds["participant_id"], folds["fold"]):
                pred = targets[pid] + offset + seed  # a: +1.5 on average over seeds, b: -2.5
                rows.append(dict(participant_id=pid, fold=f, arm=arm, seed=seed,
                                 prediction=pred, target=targets[pid]))  # fmt: skip
    oof = pd.DataFrame(rows)
    ens = cv.ensemble_oof(oof, ["a", "b"], "ab")
    assert list(ens.columns) == cv.OOF_COLUMNS and set(ens["arm"]) == {"ab"}
    assert len(ens) == 12 and (ens["seed"] == 0).all()
    direct = np.array([targets[p] - 0.5 for p in ens["participant_id"]])  # (1.5 - 2.5) / 2
    assert np.allclose(ens["prediction"], direct)
    assert dict(zip(ens["participant_id"], ens["fold"])) == dict(
        zip(folds["participant_id"], folds["fold"])
    )
    with pytest.raises(DataError, match="no arm 'c'"):
        cv.ensemble_oof(oof, ["a", "c"], "ac")
    moved = oof.copy()
    moved.loc[moved["arm"] == "b", "fold"] = (moved.loc[moved["arm"] == "b", "fold"] + 1) % 3
    with pytest.raises(DataError, match="other folds"):
        cv.ensemble_oof(moved, ["a", "b"], "ab")
    fewer = oof[~((oof["arm"] == "b") & (oof["participant_id"] == "s00"))]
    with pytest.raises(DataError, match="same subjects"):
        cv.ensemble_oof(fewer, ["a", "b"], "ab")


def test_frozen_arms_train_on_premade_copies_of_training_subjects_only(tmp_path):
    """``cv_baselines(copies=...)``: a frozen arm is renamed ``<arm>_scancopies`` and each fold's
    ridge is fitted on its training subjects and their pre-made copies, never a test subject's."""
    folds = cv.read_folds(DERIV / "folds.tsv")
    sub = folds[folds["fold"] < 3].groupby("fold").head(2).reset_index(drop=True)
    sub.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    table = ixi_derivative(DERIV).set_index("participant_id")
    (tmp_path / "copies").mkdir()
    rows = []
    for pid in sub["participant_id"]:  # one "copy" per head: its own file, under a copy id
        target = tmp_path / "copies" / f"{pid}~scan0.nii.gz"
        target.write_bytes(Path(table.loc[pid, "path"]).read_bytes())
        rows.append(dict(participant_id=f"{pid}~scan0", age=0.0, path=target.name, qc="ok"))
    pd.DataFrame(rows).to_csv(tmp_path / "copies" / "participants.tsv", sep="\t", index=False)
    summary, _ = cv.cv_baselines(
        DERIV, tmp_path / "out", tmp_path / "folds.tsv", arms=["mean", "ridge_frozen_random"],
        n_boot=50, cache_dir=tmp_path / "cache", progress=False,
        copies=tmp_path / "copies" / "participants.tsv",
    )  # fmt: skip
    assert summary["arm"].tolist() == ["mean", "ridge_frozen_random_scancopies"]
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    for k in range(3):
        fit = fits[f"ridge_frozen_random_scancopies/fold{k}/seed0"]
        assert fit["n_train"] == 4 and fit["n_copies"] == 4  # the 4 training subjects' copies
        assert fits[f"mean/fold{k}/seed0"]["n_copies"] == 0  # baselines: no copies
    features = json.loads((tmp_path / "out" / "features.json").read_text())
    assert set(features) == {"ridge_frozen_random_scancopies"}


def test_the_ridge_penalty_is_chosen_over_subjects_when_copies_train(tmp_path):
    """With copies, leave-one-out over rows keeps each head's copy in training and picks the
    smallest penalty (it reproduces a head from its copy); subject folds do not."""
    assert frozen.penalty_splits(["a", "b", "c"]) is None and frozen.penalty_splits(None) is None
    ids = [f"s{i:02d}" for i in range(30)]
    rows = ids + [f"{i}~scan0" for i in ids] + [f"{i}~aug0" for i in ids]
    splits = frozen.penalty_splits(rows)
    subject = np.array([i.split("~")[0] for i in rows])
    assert len(splits) == 5
    for train, test in splits:  # a subject and its copies are on one side only
        assert not set(subject[train]) & set(subject[test])
    assert sorted(np.concatenate([t for _, t in splits]).tolist()) == list(range(len(rows)))

    rng = np.random.default_rng(0)  # features unrelated to the target: a large penalty is right
    x1, y1 = rng.normal(size=(30, 200)), rng.uniform(20, 80, 30)
    x = pd.DataFrame(np.r_[x1, x1 + 0.01 * rng.normal(size=x1.shape)], index=ids + rows[30:60])
    y = np.r_[y1, y1]
    loo = cv.ridge_estimator().fit(x, y)[-1].alpha_
    grouped = cv.ridge_estimator().set_params(ridgecv__cv=frozen.penalty_splits(list(x.index)))
    assert loo == cv.RIDGE_ALPHAS[0] and grouped.fit(x, y)[-1].alpha_ > 100 * loo

    folds = pd.DataFrame({"participant_id": ids, "fold": np.arange(30) % 3})
    targets = dict(zip(ids, y1))
    cv.run_cv(folds, targets, {"r": (cv.ridge_estimator, x)}, tmp_path, progress=False)
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert all(fits[f"r/fold{k}/seed0"]["alpha"] > 100 * loo for k in range(3))  # run_cv too
