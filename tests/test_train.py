"""Training: config resolution, train/evaluate/predict, kill-and-resume, DDP, clear errors.

Everything runs on tiny NIfTI volumes (16 x 20 x 16 voxels of 8 mm) with the paper's scratch
slice CNN, so the whole file takes well under a minute on two CPU cores.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_data import SHAPE, VOXEL, make_table, tiny_config, write_toml

from slicelib.model import SliceModel
from slicelib.runs import (
    CheckpointError,
    check_state_dict,
    evaluate_run,
    load_checkpoint,
    load_run,
    predict_files,
)
from slicelib.train import ConfigError, TrainConfig, resolve_config, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("tiny"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- configuration ----------------------------------------------------------------------------


def test_resolve_config_layers_and_unknown_keys(tmp_path):
    cfg = resolve_config(preset="smoke", overrides={"epochs": 5, "model": {"pooling": "max"}})
    assert cfg.epochs == 5 and cfg.model["pooling"] == "max"
    assert cfg.model["backbone"] == "resnet18" and cfg.preprocess["voxel_size"] == 8.0
    f = write_toml(tmp_path / "c.toml", {"epochs": 3, "model": {"embed_dim": 4}})
    cfg = resolve_config(preset="cpu", file=f, overrides={"epochs": 7})
    assert (
        cfg.epochs == 7 and cfg.model["embed_dim"] == 4 and cfg.model["backbone"] == "mobilenet_v2"
    )
    with pytest.raises(ConfigError, match=r"'epoch'.*Valid keys:.*epochs"):
        resolve_config(file=write_toml(tmp_path / "bad.toml", {"epoch": 3}))
    with pytest.raises(ConfigError, match=r"'backbonee'.*Valid keys:.*backbone"):
        TrainConfig.from_dict({"model": {"backbonee": "resnet18"}})
    with pytest.raises(ConfigError, match=r"'voxelsize'.*voxel_size"):
        TrainConfig.from_dict({"preprocess": {"voxelsize": 2}})
    # fields of older runs: dropped when they changed nothing, refused when they did
    assert TrainConfig.from_dict({"augment": False, "scale_head": True}).epochs == 20
    with pytest.raises(ConfigError, match="flip augmentation was removed"):
        TrainConfig.from_dict({"augment": True})
    (tmp_path / "c.yaml").write_text("lr: 0.01\nmodel:\n  pooling: attention\n")
    assert resolve_config(file=tmp_path / "c.yaml").model == {"pooling": "attention"}


# --- train / evaluate / predict ---------------------------------------------------------------


def test_train_evaluate_predict(table, tmp_path):
    run = train(
        TrainConfig.from_dict(tiny_config(tmp_path, data=str(table), out=str(tmp_path / "r"))),
        progress=False,
    )
    for f in ("config.json", "split.csv", "best.pt", "last.pt", "history.csv"):
        assert (run / f).is_file(), f
    split = pd.read_csv(run / "split.csv")
    assert len(split) == 16 and set(split["split"]) == {"train", "val", "test"}
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2]
    for col in (
        "train_loss",
        "val_loss",
        "val_mae",
        "val_rmse",
        "val_pearson_r",
        "val_r2",
        "seconds",
    ):
        assert col in hist.columns
    assert (hist["val_n"] == (split["split"] == "val").sum()).all()
    ckpt = load_checkpoint(run / "last.pt")  # weights_only=True
    assert ckpt["config"]["preprocess"]["volume_shape"] == list(SHAPE)
    assert ckpt["config"]["model"]["target_mean"] == pytest.approx(
        split.loc[split["split"] == "train", "age"].mean()
    )
    res = evaluate_run(run, split="test", progress=False)
    for k in ("mae", "baseline_mae", "rmse", "pearson_r", "r2", "brain_age_gap"):
        assert k in res
    assert res["n"] == (split["split"] == "test").sum()
    assert res["brain_age_gap"]["bias_slope"] is not None  # fitted on val
    lo, hi = res["mae_ci95"]  # bootstrap over the test subjects
    assert lo <= res["mae"] <= hi and res["baseline_mae_ci95"][0] <= res["baseline_mae"]
    assert res["ridge_mae"] > 0 and len(res["ridge_mae_ci95"]) == 2
    assert "voxels" in res["ridge_features"]
    # a features table for the ridge: the inner sphere's volume (mm^3), which encodes the age
    ages = pd.read_csv(table, sep="\t")
    r = 6.5 - 2.5 * (ages["age"] - 20) / 70
    feats = ages[["participant_id"]].assign(inner=4 / 3 * np.pi * (8 * r) ** 3, head=1.4e6)
    roi = evaluate_run(run, split="test", progress=False, baseline_features=feats, n_boot=100)
    assert (
        roi["ridge_mae"] < 0.2 * roi["baseline_mae"] and "log of 2 columns" in roi["ridge_features"]
    )
    with pytest.raises(ConfigError, match="no row for subjects"):
        evaluate_run(run, progress=False, baseline_features=feats.iloc[:3])
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    files = [table.parent / "sub-000.nii.gz", bad, table.parent / "sub-001.nii.gz"]
    df = predict_files(run, files, progress=False)
    assert list(df["error"] == "") == [True, False, True]
    assert "broken.nii.gz" in df.loc[1, "error"] and df.loc[1, "qc"] == "error"
    # the toy spheres are no T1 brains: QC flags them and their numbers are kept apart
    assert (df.loc[[0, 2], "qc"] == "flagged").all() and df.loc[[0, 2], "prediction"].isna().all()
    assert np.isfinite(df.loc[[0, 2], "prediction_unreliable"].astype(float)).all()
    # predict uses the same preprocessing as training, so it reproduces evaluate's figures
    model, meta = load_run(run)
    assert meta["preprocess"]["voxel_size"] == VOXEL and not model.training
    test = split[split["split"] == "test"]
    files = [table.parent / f"{p}.nii.gz" for p in test["participant_id"]]
    pred = predict_files(run, files, strict=False)  # toy spheres: QC-flagged
    assert (pred["error"] == "").all()
    mae = np.abs(pred["prediction"].astype(float).to_numpy() - test["age"].to_numpy()).mean()
    assert mae == pytest.approx(res["mae"], rel=1e-5)


def test_absurd_lr_diverges_cleanly_and_resume_keeps_it_stopped(table, tmp_path, capfd):
    cfg = tiny_config(tmp_path, data=str(table), out=str(tmp_path / "blown"), lr=1e6, epochs=4)
    run = train(TrainConfig.from_dict(cfg), progress=False)  # no "Input contains NaN"
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["status"]).count("diverged") == 1 and hist["status"].iloc[-1] == "diverged"
    assert len(hist) < 4  # stopped at the diverged epoch
    last = hist.iloc[-1]
    assert not (np.isfinite(last["train_loss"]) and np.isfinite(last["val_mae"]))
    assert "diverged" in capfd.readouterr().err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["diverged"] is True and ckpt["epoch"] == len(hist) - 1
    if (run / "best.pt").is_file():  # a finite epoch before the divergence is the best one
        assert load_checkpoint(run / "best.pt")["epoch"] < len(hist) - 1
    # the same call again resumes into the stopped state: nothing more is trained (jobs, the
    # preprocessing workers, may change on resume)
    stamp = (run / "last.pt").stat().st_mtime_ns
    train(TrainConfig.from_dict(dict(cfg, jobs=2)), progress=False)
    assert (run / "last.pt").stat().st_mtime_ns == stamp
    assert len(pd.read_csv(run / "history.csv")) == len(hist)


def test_binary_task_reports_baseline_side_by_side(table, tmp_path):
    cfg = tiny_config(tmp_path, data=str(table), target="ad", task="binary", epochs=1)
    run = train(TrainConfig.from_dict({**cfg, "out": str(tmp_path / "b")}), progress=False)
    res = evaluate_run(run, split="all", progress=False)
    for k in ("accuracy", "balanced_accuracy", "auc", "confusion_matrix"):
        assert k in res and "baseline_" + k in res
    assert res["baseline_balanced_accuracy"] == pytest.approx(0.5)
    assert "auc_ci95" in res and "balanced_accuracy_ci95" in res
    assert res["n"] == 16
    saved = json.loads((Path(run) / "config.json").read_text())
    assert saved["train"]["class_weights"] == "balanced" and "class_weights" in saved["train_stats"]


def test_balanced_class_weights_count_each_class_equally():
    from slicelib.metrics import train_stats as _train_stats
    from slicelib.train import _loss

    y = np.array([0, 0, 0, 1])
    stats = _train_stats(y, "binary", 2, "balanced")
    assert stats["class_weights"] == pytest.approx([4 / 6, 2.0])
    assert "class_weights" not in _train_stats(y, "binary", 2, "none")
    logits = torch.tensor([0.3, -1.0, 2.0, -0.5])
    target = torch.tensor([0.0, 0.0, 0.0, 1.0])
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = torch.tensor([4 / 6, 4 / 6, 4 / 6, 2.0])
    assert torch.allclose(_loss("binary", logits, target, stats), (w * per).mean())
    # The two classes contribute equal total weight, so a constant logit of 0 is optimal.
    assert float((w * target).sum()) == pytest.approx(float((w * (1 - target)).sum()))
    m = _train_stats(np.array([0, 1, 1, 2, 2, 2]), "multiclass", 3, "balanced")
    assert m["class_weights"] == pytest.approx([2.0, 1.0, 2 / 3])
    with pytest.raises(ConfigError, match="class_weights"):
        TrainConfig.from_dict({"class_weights": "inverse"})


# --- errors that explain themselves -----------------------------------------------------------


def test_one_class_in_training_is_explained(tmp_path):
    t = make_table(tmp_path / "onecls", n=8, all_ad=0)
    cfg = tiny_config(tmp_path, data=str(t), target="ad", task="binary", out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"all \d+ training subjects have ad=0"):
        train(TrainConfig.from_dict(cfg), progress=False)


def test_resume_on_changed_data_is_refused(tmp_path):
    t = make_table(tmp_path / "d", n=8, seed=0)
    cfg = tiny_config(tmp_path, data=str(t), target="age", out=str(tmp_path / "r"), epochs=1)
    run = train(TrainConfig.from_dict(cfg), progress=False)
    before = (Path(run) / "last.pt").read_bytes()
    make_table(tmp_path / "d", n=8, seed=1)  # the cohort is regenerated in place
    with pytest.raises(ConfigError, match="trained on other data"):
        train(TrainConfig.from_dict(cfg), progress=False)
    assert (Path(run) / "last.pt").read_bytes() == before  # the old run is left untouched


def test_run_from_another_preprocessing_version_warns(table, tmp_path, monkeypatch):
    import slicelib.runs

    cfg = tiny_config(tmp_path, data=str(table), target="age", out=str(tmp_path / "v"), epochs=1)
    run = train(TrainConfig.from_dict(cfg), progress=False)
    monkeypatch.setattr(slicelib.runs, "CACHE_VERSION", "999")  # this slicelib's version
    with pytest.warns(UserWarning, match="preprocessing version .* version 999"):
        load_run(run)


def test_missing_target_column_is_explained(table, tmp_path):
    from slicelib.data import DataError

    cfg = tiny_config(tmp_path, data=str(table), target="bmi", out=str(tmp_path / "m"))
    with pytest.raises(DataError, match="bmi"):
        train(TrainConfig.from_dict(cfg), progress=False)


def test_checkpoint_from_other_architecture_is_explained(table, tmp_path):
    a = SliceModel("slice_cnn", embed_dim=8, volume_shape=SHAPE, seed=0)
    b = SliceModel("slice_cnn", embed_dim=8, volume_shape=SHAPE, pooling="attention", seed=0)
    with pytest.raises(
        CheckpointError,
        match=r"(?s)checkpoint:.*pooling='attention'.*model:.*pooling='mean'.*unexpected keys",
    ):
        check_state_dict(a, b.state_dict(), b.config)
    # resuming a run directory with another architecture names what differs
    out = str(tmp_path / "arch")
    train(
        TrainConfig.from_dict(tiny_config(tmp_path, data=str(table), out=out, epochs=1)),
        progress=False,
    )
    other = tiny_config(tmp_path, data=str(table), out=out, epochs=1)
    other["model"] = dict(other["model"], embed_dim=4)
    with pytest.raises(ConfigError, match=r"model.embed_dim: saved 8, now 4"):
        train(TrainConfig.from_dict(other), progress=False)
    # a memory-layout option is not another architecture: the finished run is reused
    layout = tiny_config(tmp_path, data=str(table), out=out, epochs=1)
    layout["model"] = dict(layout["model"], channels_last=True)
    assert train(TrainConfig.from_dict(layout), progress=False) == Path(out)


# --- kill -9 and resume -----------------------------------------------------------------------


def test_sigkill_and_resume_gives_identical_weights(table, tmp_path, capfd):
    cfg = tiny_config(tmp_path, data=str(table), epochs=4, schedule="cosine")
    toml = write_toml(tmp_path / "k.toml", cfg)
    args = ["train", "--config", str(toml), "--no-progress"]
    from slicelib.cli import main

    assert main(args + ["--out", str(tmp_path / "ref")]) == 0  # uninterrupted, in-process

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "slicelib", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    time.sleep(0.2)  # somewhere inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    interrupted_at = load_checkpoint(out / "last.pt")["epoch"]
    assert interrupted_at < 3, "the run finished before it was killed; nothing was resumed"

    # the same command again (in-process, to save a second interpreter start-up)
    capfd.readouterr()
    assert main(args + ["--out", str(out)]) == 0
    assert "resuming" in capfd.readouterr().err
    for name in ("last.pt", "best.pt"):
        ref, got = load_checkpoint(tmp_path / "ref" / name), load_checkpoint(out / name)
        assert ref["epoch"] == got["epoch"]
        assert ref["model"].keys() == got["model"].keys()
        for k in ref["model"]:
            assert torch.equal(ref["model"][k], got["model"][k]), (name, k)
    h_ref = pd.read_csv(tmp_path / "ref" / "history.csv")
    h_got = pd.read_csv(out / "history.csv")
    assert list(h_got["epoch"]) == [1, 2, 3, 4]
    assert np.array_equal(h_ref["val_loss"].to_numpy(), h_got["val_loss"].to_numpy())


# --- distributed data parallel on CPU ---------------------------------------------------------


def test_ddp_two_processes_gloo(table, tmp_path):
    toml = write_toml(tmp_path / "d.toml", tiny_config(tmp_path, epochs=2))
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "slicelib",
        "train",
        "--data",
        str(table),
        "--target",
        "age",
        "--out",
        str(out),
        "--config",
        str(toml),
        "--no-progress",
    ]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["world_size"] == 2 and ckpt["epoch"] == 1
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(out.glob(".*tmp*"))
    split = pd.read_csv(out / "split.csv")
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 2
    assert (hist["val_n"] == (split["split"] == "val").sum()).all()  # all val subjects, once
    assert r.stderr.count("epoch 2/2") == 1  # only rank 0 reports


# --- 3D CNN baselines through the same train / evaluate / predict ----------------------------


def _volume_run(table, tmp_path, backbone: str, **over) -> Path:
    cfg = tiny_config(tmp_path, data=str(table), out=str(tmp_path / backbone), epochs=1, **over)
    cfg["model"] = dict(backbone=backbone)
    return train(TrainConfig.from_dict(cfg), progress=False)


def _check_volume_run(run: Path, table: Path, backbone: str) -> None:
    from slicelib.cnn3d import VolumeCNN

    model, meta = load_run(run)
    assert isinstance(model, VolumeCNN) and meta["model"]["backbone"] == backbone
    res = evaluate_run(run, split="test", progress=False)
    assert res["mae"] is not None and res["baseline_mae"] is not None
    test = pd.read_csv(run / "split.csv").query("split == 'test'")
    files = [table.parent / f"{p}.nii.gz" for p in test["participant_id"]]
    pred = predict_files(run, files, strict=False)  # toy spheres: QC-flagged
    assert (pred["error"] == "").all()
    mae = np.abs(pred["prediction"].astype(float).to_numpy() - test["age"].to_numpy()).mean()
    assert mae == pytest.approx(res["mae"], rel=1e-5)


def test_sfcn_3d_trains_evaluates_and_predicts(table, tmp_path):
    # 12 training volumes in batches of 11: the last batch of one is dropped (BatchNorm on the
    # 1x1x1 map of a 16 x 20 x 16 grid cannot train on one volume)
    run = _volume_run(table, tmp_path, "sfcn_3d", batch_size=11)
    n_train = (pd.read_csv(run / "split.csv")["split"] == "train").sum()
    assert n_train % 11 == 1
    _check_volume_run(run, table, "sfcn_3d")


def test_densenet121_3d_trains_evaluates_and_predicts(table, tmp_path):
    pytest.importorskip("monai")
    run = _volume_run(
        table,
        tmp_path,
        "densenet121_3d",
        batch_size=4,
        preprocess=dict(volume_shape=[29, 29, 29], voxel_size=VOXEL, method="resample"),
    )
    _check_volume_run(run, table, "densenet121_3d")


def test_volume_backbone_config_errors():
    cfg = resolve_config(preset="cpu", overrides={"model": {"backbone": "sfcn_3d"}})
    assert cfg.model == {"backbone": "sfcn_3d"}  # the preset's MobileNetV2 options left out
    with pytest.raises(ConfigError, match=r"3D CNN.*'embed_dim'"):
        resolve_config(preset="smoke", overrides={"model": {"backbone": "sfcn_3d", "embed_dim": 8}})
    with pytest.raises(ConfigError, match="no pretrained weights"):
        TrainConfig.from_dict({"model": {"backbone": "sfcn_3d", "weights": "imagenet"}})
    with pytest.raises(ConfigError, match="freeze_encoder needs a 2D slice encoder"):
        TrainConfig.from_dict({"model": {"backbone": "sfcn_3d"}, "freeze_encoder": True})


def test_qc_exclude_leaves_flagged_scans_out_of_training(table, tmp_path, monkeypatch, capfd):
    """qc='exclude': flagged scans are listed and neither trained nor validated on."""
    import importlib

    from slicelib import cache, runs

    T = importlib.import_module("slicelib.train")  # (slicelib.train is also the function)

    real = cache.preprocess_many

    def half_ok(paths, *a, **kw):  # the toy spheres are all flagged: pass the odd-numbered
        qc = real(paths, *a, **kw)
        odd = [int(Path(p).name[4:7]) % 2 == 1 for p in qc["path"]]  # sub-NNN.nii.gz
        return qc.assign(status=["ok" if o else "flagged" for o in odd])

    monkeypatch.setattr(T, "preprocess_many", half_ok)  # training's QC
    monkeypatch.setattr(runs, "preprocess_many", half_ok)  # evaluation's QC
    cfg = tiny_config(tmp_path, data=str(table), out=str(tmp_path / "ex"), epochs=1, qc="exclude")
    run = train(TrainConfig.from_dict(cfg), progress=False)
    qc = pd.read_csv(run / "qc.csv", dtype={"participant_id": str})
    flagged = set(qc.loc[qc["status"] == "flagged", "participant_id"])
    assert len(flagged) == 8 and f"{len(flagged)} scan(s) left out of" in capfd.readouterr().err
    split = pd.read_csv(run / "split.csv", dtype={"participant_id": str})
    val = split[(split["split"] == "val") & ~split["participant_id"].isin(flagged)]
    assert pd.read_csv(run / "history.csv")["val_n"].tolist() == [len(val)]
    train_ages = split[(split["split"] == "train") & ~split["participant_id"].isin(flagged)]
    mean = load_checkpoint(run / "last.pt")["config"]["model"]["target_mean"]
    assert mean == pytest.approx(train_ages["age"].mean())
    # evaluate applies the run's policy: flagged test scans are named and not scored
    res = evaluate_run(run, split="test", progress=False, n_boot=50)
    test = split[split["split"] == "test"]
    assert res["qc"] == "exclude" and set(res["qc_flagged"]) == flagged & set(
        test["participant_id"]
    )
    assert res["n"] == len(test) - len(res["qc_flagged"]) and set(res["qc_excluded"]) >= flagged
    with pytest.raises(ConfigError, match="qc="):
        TrainConfig.from_dict(dict(cfg, qc="drop"))
