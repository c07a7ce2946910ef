"""slicelib.crossval: trained arms through fixed folds: no out-of-fold prediction from a model
that saw the subject, one prediction per subject, arm and seed, resume without retraining
finished folds, and the command line.

The default run checks crossval's own logic with a stand-in for ``compare`` (it writes each
run's split.csv from the config's given split, as training does, and "predicts" the mean age of
the subjects the run saw); the tests marked slow train real tiny runs (scratch slice CNN and
SFCN on 16 x 20 x 16 volumes: about 90 s of CPU)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_data import make_table, tiny_config

from slicelib import cli, crossval
from slicelib.compare import plan, run_config
from slicelib.config import TrainConfig, given_split
from slicelib.cv import OOF_COLUMNS, read_oof
from slicelib.errors import ConfigError, DataError, PipelineError

pytestmark = pytest.mark.usefixtures("one_thread")

N, K = 15, 3  # subjects, folds


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny table (15 subjects) and a 3-fold table of 14 of them (one subject unused)."""
    folder = tmp_path_factory.mktemp("xval")
    table = make_table(folder, n=N)
    ids = pd.read_csv(table, sep="\t")["participant_id"].tolist()[: N - 1]
    folds = folder / "folds.tsv"
    pd.DataFrame(dict(participant_id=ids, fold=[i % K for i in range(len(ids))])).to_csv(
        folds, sep="\t", index=False
    )
    return table, folds


# -----------------------------------------------------------------------------
# crossval's logic, with a stand-in for compare (fast)


@pytest.fixture
def fake_compare(cohort, monkeypatch):
    """crossval.compare and crossval._predict replaced: each run records the given split in
    its split.csv (train's format) and predicts the mean age of its training subjects; the
    calls (each fold's out folder) are returned."""
    ages = pd.read_csv(cohort[0], sep="\t").set_index("participant_id")["age"]
    calls = []

    def compare(cfg, grid, lrs, seeds, out, eval_split, progress):
        calls.append(Path(out))
        split = given_split(cfg.split)
        rows = []
        for run in plan(cfg, grid, seeds)[1]:
            for lr in lrs:
                run_dir = Path(run_config(cfg, run, out, lr, len(lrs) > 1).out)
                run_dir.mkdir(parents=True, exist_ok=True)
                used = {i: s for i, s in split.items() if s != "unused"}
                pd.DataFrame(dict(participant_id=list(used), split=list(used.values()))).to_csv(
                    run_dir / "split.csv", index=False
                )
                val_best = lr * 1000 + run["seed"]  # the smallest lr wins
                rows.append(dict(run, lr=lr, status="ok", monitor="val_mae", val_best=val_best,
                                 best_epoch=1, run=str(run_dir), chosen=lr == min(lrs)))  # fmt: skip
        pd.DataFrame(rows).to_csv(Path(out) / "lr_selection.csv", index=False)

    def predict(run_dir, ids, paths, device):
        split = pd.read_csv(Path(run_dir) / "split.csv")
        seen = split.loc[split["split"] == "train", "participant_id"]
        return np.full(len(ids), ages[seen].mean())

    monkeypatch.setattr(crossval, "compare", compare)
    monkeypatch.setattr(crossval, "_predict", predict)
    return calls


def _fake_cv(cohort, tmp_path, **kw):
    base = TrainConfig(data=str(cohort[0]), target="age", model=dict(backbone="slice_cnn"))
    grid = dict(backbone=["slice_cnn", "sfcn_3d"], weights=["none", "imagenet"])
    kw = dict(dict(grid=grid, lrs=[1e-3, 3e-3], seeds=[0, 1], out=tmp_path / "cv"), **kw)
    return crossval.cross_validate(base, cohort[1], **kw, n_boot=20, progress=False)


def test_no_prediction_comes_from_a_model_that_saw_the_subject(cohort, fake_compare, tmp_path):
    res = _fake_cv(cohort, tmp_path)
    fold_of = pd.read_csv(cohort[1], sep="\t").set_index("participant_id")["fold"]
    ages = pd.read_csv(cohort[0], sep="\t").set_index("participant_id")["age"]
    assert fake_compare == [tmp_path / "cv" / f"fold{k}" for k in range(K)]
    choice = res["lr_choice"]  # 3 arms (scratch, imagenet, sfcn) x 2 seeds x 3 folds
    assert len(choice) == 3 * 2 * K and (choice["lr"] == 1e-3).all()
    assert set(choice["arm"]) == {"finetune_scratch", "finetune_imagenet", "sfcn"}
    for _, c in choice.iterrows():
        split = pd.read_csv(Path(c["run"]) / "split.csv")
        held_out = set(fold_of.index[fold_of == c["fold"]])
        seen = set(split.loc[split["split"] != "test", "participant_id"])
        assert seen == set(fold_of.index) - held_out  # the other folds, nothing else
        assert c["n_val"] == round(0.15 / 0.85 * len(seen)) and c["n_test"] == len(held_out)
        assert c["n_train"] + c["n_val"] == len(seen)
        rows = res["oof"][(res["oof"]["arm"] == c["arm"]) & (res["oof"]["fold"] == c["fold"])]
        # each prediction is its own run's training mean: the run of its fold
        train_ids = split.loc[split["split"] == "train", "participant_id"]
        assert np.allclose(rows["prediction"], ages[train_ids].mean())
        assert set(rows["participant_id"]) == held_out
    summary = pd.read_csv(tmp_path / "cv" / "summary.csv")
    assert list(summary["arm"]) == ["finetune_scratch", "finetune_imagenet", "sfcn"]
    assert len(pd.read_csv(tmp_path / "cv" / "paired.csv")) == 3


def test_each_subject_is_predicted_once_per_arm_and_seed(cohort, fake_compare, tmp_path):
    _fake_cv(cohort, tmp_path)
    oof = read_oof(tmp_path / "cv" / "oof.csv")
    ids = sorted(pd.read_csv(cohort[1], sep="\t")["participant_id"])
    assert list(oof.columns) == OOF_COLUMNS and len(oof) == len(ids) * 3 * 2
    for _, g in oof.groupby(["arm", "seed"]):
        assert sorted(g["participant_id"]) == ids


def test_resume_skips_finished_folds(cohort, fake_compare, tmp_path, capsys):
    _fake_cv(cohort, tmp_path)
    oof_path = tmp_path / "cv" / "oof.csv"
    before = oof_path.read_bytes()
    _fake_cv(cohort, tmp_path)
    assert len(fake_compare) == K and oof_path.read_bytes() == before  # no fold trained again
    oof = pd.read_csv(oof_path)  # killed after fold 0's sfcn rows were lost: fold 0 alone reruns
    oof[(oof["fold"] != 0) | (oof["arm"] != "sfcn")].to_csv(oof_path, index=False)
    res = _fake_cv(cohort, tmp_path)
    assert fake_compare[K:] == [tmp_path / "cv" / "fold0"]
    assert len(res["oof"]) == len(read_oof(pd.io.common.BytesIO(before)))
    # a seed added to the grid: every fold runs once more, the finished rows are kept
    res = _fake_cv(cohort, tmp_path, seeds=[0, 1, 2])
    assert len(fake_compare) == 2 * K + 1 and res["coverage"]["complete"].all()


def test_a_partial_oof_is_named_and_not_summarised(cohort, fake_compare, tmp_path, capsys):
    _fake_cv(cohort, tmp_path, grid=dict(backbone=["slice_cnn"], weights=["none"]), seeds=[0])
    summary_before = (tmp_path / "cv" / "summary.csv").read_text()
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    extra = oof[oof["fold"] != 2].assign(arm="finetune_imagenet")  # e.g. from an earlier grid
    pd.concat([oof, extra]).to_csv(tmp_path / "cv" / "oof.csv", index=False)
    res = _fake_cv(cohort, tmp_path, grid=dict(backbone=["slice_cnn"], weights=["none"]), seeds=[0])
    printed = capsys.readouterr().out
    assert "not summarised" in printed and "finetune_imagenet seed 0 (folds 0,1)" in printed
    assert list(res["summary"]["arm"]) == ["finetune_scratch"]
    assert (tmp_path / "cv" / "summary.csv").read_text() == summary_before
    cov = res["coverage"].set_index("arm")
    assert (
        cov.loc["finetune_imagenet", "folds"] == "0,1"
        and not cov.loc["finetune_imagenet", "complete"]
    )
    with pytest.raises(ConfigError, match="other folds"):
        moved = read_oof(tmp_path / "cv" / "oof.csv")
        moved.loc[0, "fold"] = (moved.loc[0, "fold"] + 1) % K
        moved.to_csv(tmp_path / "cv" / "oof.csv", index=False)
        _fake_cv(cohort, tmp_path)


def test_a_subject_of_the_folds_without_a_target_is_refused(cohort, tmp_path):
    table, folds = cohort
    t = pd.read_csv(table, sep="\t")
    t.loc[t["participant_id"] == "sub-003", "age"] = None
    t["path"] = [str(table.parent / p) for p in t["path"]]
    t.to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match="sub-003"):
        crossval.cross_validate(TrainConfig(data=str(tmp_path / "p.tsv"), target="age"), folds)


# -----------------------------------------------------------------------------
# the same with real (tiny) training runs (slow)


@pytest.fixture(scope="module")
def finished(cohort, tmp_path_factory):
    """One cross-validation of two arms (slice CNN scratch, SFCN) x two seeds, one lr."""
    table, folds = cohort
    tmp = tmp_path_factory.mktemp("xval_run")
    base = tiny_config(tmp, data=str(table), target="age", epochs=1)
    grid = dict(backbone=["slice_cnn", "sfcn_3d"], weights=["none"])
    kw = dict(grid=grid, lrs=[1e-3], seeds=[0, 1], out=tmp / "cv", n_boot=50)
    res = crossval.cross_validate(base, folds, **kw, progress=False)
    return base, folds, kw, res


@pytest.mark.slow
def test_trained_runs_never_saw_their_held_out_fold(finished):
    _, folds, kw, res = finished
    fold_of = pd.read_csv(folds, sep="\t").set_index("participant_id")["fold"].to_dict()
    root = kw["out"]
    runs = 0
    for k in range(K):
        held_out = {i for i, f in fold_of.items() if f == k}
        tried = pd.read_csv(root / f"fold{k}" / "lr_selection.csv")
        assert len(tried) == 2 * 2  # arms x seeds, every one checked below
        for run in tried["run"]:
            split = pd.read_csv(Path(run) / "split.csv")
            seen = set(split.loc[split["split"].isin(["train", "val"]), "participant_id"])
            assert not seen & held_out and seen, run
            assert set(split.loc[split["split"] == "test", "participant_id"]) == held_out
            # the subject outside the folds took no part; the training folds all did
            assert seen | held_out == set(fold_of)
            assert (split["split"] == "val").sum() >= 1
            cfg = json.loads((Path(run) / "config.json").read_text())["train"]
            assert cfg["split"][split["participant_id"].iat[0]] in ("train", "val", "test")
            runs += 1
    assert runs == K * 4
    oof = res["oof"]
    # every prediction's model: the lr_choice row of its fold, arm and seed, whose run held out
    # exactly that fold (checked above for every run)
    choice = res["lr_choice"]
    assert len(choice) == K * 2 * 2 and set(choice["arm"]) == {"finetune_scratch", "sfcn"}
    for _, c in choice.iterrows():
        assert Path(c["run"]).parent == root / f"fold{c['fold']}"
        rows = oof[(oof["fold"] == c["fold"]) & (oof["arm"] == c["arm"])]
        assert {fold_of[i] for i in rows["participant_id"]} == {c["fold"]}
        assert c["n_test"] == len(rows) / 2  # two seeds
        assert c["n_train"] + c["n_val"] + c["n_test"] == len(fold_of)
        assert c["lr"] == 1e-3 and c["lr_grid"] == "0.001"


@pytest.mark.slow
def test_trained_runs_predict_each_subject_once_per_arm_and_seed(finished, cohort):
    _, folds, kw, res = finished
    oof = read_oof(kw["out"] / "oof.csv")
    assert list(oof.columns) == OOF_COLUMNS
    ids = set(pd.read_csv(folds, sep="\t")["participant_id"])
    for (arm, seed), g in oof.groupby(["arm", "seed"]):
        assert sorted(g["participant_id"]) == sorted(ids), (arm, seed)
    assert len(oof) == len(ids) * 2 * 2
    ages = pd.read_csv(cohort[0], sep="\t").set_index("participant_id")["age"]
    assert np.allclose(oof["target"], ages[oof["participant_id"]].to_numpy())
    # the oof predictions are the chosen runs' test predictions: compare's MAE per fold
    for k in range(K):
        results = pd.read_csv(kw["out"] / f"fold{k}" / "results.csv")
        for run, mae in zip(results["run"], results["mae"]):
            c = res["lr_choice"].set_index("run").loc[run]
            rows = oof[(oof["fold"] == k) & (oof["arm"] == c["arm"]) & (oof["seed"] == c["seed"])]
            assert np.abs(rows["prediction"] - rows["target"]).mean() == pytest.approx(mae, 1e-4)
    summary = pd.read_csv(kw["out"] / "summary.csv")
    assert list(summary["arm"]) == ["finetune_scratch", "sfcn"] and (summary["n"] == 14).all()
    assert res["coverage"]["complete"].all()


@pytest.mark.slow
def test_trained_runs_resume_without_retraining_finished_folds(finished, monkeypatch):
    base, folds, kw, _ = finished
    root = kw["out"]
    calls = []
    real = crossval.compare

    def counting(cfg, *args, **kwargs):
        calls.append(kwargs["out"])
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(crossval, "compare", counting)
    oof_before = (root / "oof.csv").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in root.glob("fold*/*/best.pt")}
    crossval.cross_validate(base, folds, **kw, progress=False)
    assert calls == [] and (root / "oof.csv").read_bytes() == oof_before
    # fold 1 lost its predictions (e.g. killed before they were written): only fold 1 reruns,
    # and its finished runs resume instead of retraining
    oof = pd.read_csv(root / "oof.csv")
    oof[oof["fold"] != 1].to_csv(root / "oof.csv", index=False)
    res = crossval.cross_validate(base, folds, **kw, progress=False)
    assert calls == [root / "fold1"]
    assert {p: p.stat().st_mtime_ns for p in root.glob("fold*/*/best.pt")} == mtimes
    again = res["oof"].sort_values(["fold", "arm", "seed", "participant_id"])
    assert np.allclose(
        again["prediction"],
        read_oof(pd.io.common.BytesIO(oof_before)).sort_values(
            ["fold", "arm", "seed", "participant_id"]
        )["prediction"],
    )


@pytest.mark.slow
def test_a_partial_oof_is_not_summarised(finished, tmp_path, capsys):
    base, folds, kw, _ = finished
    partial = tmp_path / "partial"
    partial.mkdir()
    oof = pd.read_csv(kw["out"] / "oof.csv")
    oof[(oof["fold"] != 2) | (oof["arm"] != "sfcn")].to_csv(partial / "oof.csv", index=False)
    cov = crossval.complete_arms(read_oof(partial / "oof.csv"), pd.read_csv(folds, sep="\t"))
    assert list(cov["complete"]) == [True, True, False, False]
    assert list(cov.loc[~cov["complete"], "folds"]) == ["0,1", "0,1"]


def test_a_run_that_saw_the_held_out_fold_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    split = dict(participant_id=["a", "b", "c", "d"], split=["train", "val", "test", "test"])
    pd.DataFrame(split).to_csv(run / "split.csv", index=False)
    assert crossval.check_run_split(run, ["c", "d"]) == dict(train=1, val=1, test=2)
    with pytest.raises(
        PipelineError, match=r"held-out subjects \['b'\] are in the run's \['val'\]"
    ):
        crossval.check_run_split(run, ["b", "c", "d"])
    with pytest.raises(PipelineError, match="test subjects differ"):
        crossval.check_run_split(run, ["c"])


def test_training_subsets_train_on_their_ids_only_and_resume_only_on_the_same(
    cohort, fake_compare, tmp_path
):
    """A learning-curve point (--train-ids): each fold's runs saw exactly its subset, the
    whole held-out fold is still predicted, and a resume with other subsets is refused."""
    f = pd.read_csv(cohort[1], sep="\t")
    subsets = {k: f.loc[f["fold"] != k, "participant_id"].tolist()[:6] for k in range(K)}
    path = tmp_path / "ids.tsv"
    rows = [(k, i) for k in subsets for i in subsets[k]]
    pd.DataFrame(rows, columns=["fold", "participant_id"]).to_csv(path, sep="\t", index=False)
    assert crossval.read_train_ids(path) == subsets
    res = _fake_cv(cohort, tmp_path, train_ids=crossval.read_train_ids(path))
    for _, c in res["lr_choice"].iterrows():
        split = pd.read_csv(Path(c["run"]) / "split.csv")
        assert set(split.loc[split["split"] != "test", "participant_id"]) == set(subsets[c["fold"]])
        assert c["n_train"] + c["n_val"] == 6
    assert sorted(res["oof"].groupby(["arm", "seed"]).size().unique()) == [N - 1]
    _fake_cv(cohort, tmp_path, train_ids=subsets)  # the same subsets resume
    with pytest.raises(ConfigError, match="other training subsets"):
        _fake_cv(cohort, tmp_path, train_ids={**subsets, 0: subsets[0][:5]})
    with pytest.raises(ConfigError, match="the same train_ids"):
        _fake_cv(cohort, tmp_path)
    with pytest.raises(ConfigError, match="every fold"):
        _fake_cv(cohort, tmp_path / "b", train_ids={0: subsets[0]})
    held_out = f.loc[f["fold"] == 0, "participant_id"].tolist()[:1]
    with pytest.raises(ConfigError, match="not subjects of the other folds"):
        _fake_cv(cohort, tmp_path / "c", train_ids={**subsets, 0: held_out})
    path.write_text("fold\tparticipant_id\nzero\tsub-1\n")
    with pytest.raises(DataError, match="row 2 .*not an integer fold"):
        crossval.read_train_ids(path)


def test_fold_split_carves_validation_out_of_the_training_folds_only(cohort):
    table, folds = cohort
    t = pd.read_csv(table, sep="\t")
    f = pd.read_csv(folds, sep="\t")
    where = crossval.fold_split(t, f, 2, "age", (0.6, 0.2, 0.2), seed=3)
    assert set(where) == set(t["participant_id"])
    assert {i for i, s in where.items() if s == "test"} == set(
        f.loc[f["fold"] == 2, "participant_id"]
    )
    assert [i for i, s in where.items() if s == "unused"] == [t["participant_id"].iat[-1]]
    val = [i for i, s in where.items() if s == "val"]
    assert len(val) == round(0.25 * 9) and set(val) <= set(f.loc[f["fold"] != 2, "participant_id"])
    assert where == crossval.fold_split(t, f, 2, "age", (0.6, 0.2, 0.2), seed=3)  # seeded
    with pytest.raises(ConfigError, match="val > 0"):
        crossval.fold_split(t, f, 2, "age", (0.8, 0.0, 0.2))


def test_arm_names_and_refusals():
    runs = [
        dict(backbone="mobilenet_v2", weights=w, position="learned", norm="set", pooling="mean",
             freeze_encoder=fr, seed=0)
        for w in ("imagenet", "none") for fr in ("no", "yes")
    ]  # fmt: skip
    runs.append(dict(dict.fromkeys(runs[0], "-"), backbone="sfcn_3d", seed=0))
    names = crossval.arm_names(runs)
    assert names == [
        "finetune_imagenet", "frozen_imagenet", "finetune_scratch", "frozen_scratch", "sfcn"
    ]  # fmt: skip
    two = [dict(runs[0], position=p) for p in ("learned", "none")]
    assert crossval.arm_names(two) == ["finetune_imagenet_learned", "finetune_imagenet_none"]
    with pytest.raises(ConfigError, match="task"):
        crossval.cross_validate(TrainConfig(data="x", target="ad", task="binary"), "f.tsv")


@pytest.mark.slow
def test_the_command_line_cross_validates_with_the_lr_chosen_per_fold(cohort, tmp_path, capsys):
    table, folds = cohort
    out = tmp_path / "c"
    args = ["compare", "--data", str(table), "--target", "age", "--out", str(out)]
    args += ["--backbone", "slice_cnn", "--weights", "none", "--position", "none"]
    args += ["--embed-dim", "8", "--epochs", "1", "--batch-size", "4", "--qc", "off"]
    args += ["--method", "resample", "--cache-dir", str(tmp_path / "cache"), "--seed", "0"]
    args += ["--lr", "1e-3,1e6", "--folds", str(folds), "--no-progress"]
    config = tmp_path / "grid.toml"
    config.write_text("[preprocess]\nvolume_shape = [16, 20, 16]\nvoxel_size = 8.0\n")
    assert cli.main(args + ["--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "finetune_scratch" in printed and "mae_lo" in printed and "oof.csv" in printed
    assert len(read_oof(out / "oof.csv")) == N - 1
    choice = pd.read_csv(out / "lr_choice.csv")
    assert list(choice["fold"]) == [0, 1, 2] and set(choice["lr_grid"]) == {"0.001,1e+06"}
    for _, c in choice.iterrows():  # the lr chosen on the fold's inner validation set
        tried = pd.read_csv(out / f"fold{c['fold']}" / "lr_selection.csv")
        assert tried.loc[tried["chosen"], "run"].tolist() == [c["run"]]
        assert c["lr"] == 1e-3 and c["status"] != "diverged"  # lr 1e6 diverges
        assert len(c["train_seconds"].split(";")) == 2
    assert (out / "paired.csv").is_file()  # one arm: no pair, the header only
