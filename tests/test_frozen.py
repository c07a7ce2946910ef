"""Frozen-encoder training: features equal the full model, the cache and its invalidation,
train / resume / evaluate / predict end to end, a model that beats the mean baseline, input
features standardised with training statistics, and the closed-form ridge head."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_data import SHAPE, make_table, tiny_config, write_toml

from slicelib import frozen
from slicelib.cache import VolumeDataset
from slicelib.cli import main
from slicelib.config import ConfigError
from slicelib.model import SliceModel
from slicelib.runs import evaluate_run, load_checkpoint, load_run, predict_files
from slicelib.train import TrainConfig, cached_features, encode_features, fit, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("tiny"))


def _mobilenet(seed: int = 0, weights=None, **kw) -> SliceModel:
    kw = dict(embed_dim=8, volume_shape=SHAPE, seed=seed, **kw)
    return SliceModel("mobilenet_v2", weights, **kw).eval()


def test_frozen_head_computes_the_full_model():
    x = torch.randn(3, 1, *SHAPE)
    for kw in (dict(), dict(axes="sagittal,axial", pooling="attention", slice_chunk=7)):
        model = _mobilenet(target_mean=50.0, target_std=10.0, **kw)
        feats = encode_features(model, x, batch_size=2)  # (B, S, F)
        n_slices = sum(model.n_slices.values())
        assert feats.shape == (3, n_slices, 1280) and feats.dtype == torch.float32
        head = frozen.FrozenHead(model).eval()
        with torch.no_grad():
            torch.testing.assert_close(head(feats), model(x), atol=1e-5, rtol=1e-5)
        assert not any(p.requires_grad for p in model.encoder.parameters())
        head.train()
        assert not model.encoder.training and model.head.training  # BatchNorm stays fixed


def test_feature_cache_is_keyed_by_the_encoder_weights(table, tmp_path, monkeypatch):
    df = pd.read_csv(table, sep="\t").head(4)
    df["path"] = [str(table.parent / p) for p in df["path"]]
    pre = dict(volume_shape=list(SHAPE), voxel_size=8.0, method="resample")
    ds = VolumeDataset(df, "age", pre, cache_dir=tmp_path / "vol")
    a, b = _mobilenet(seed=0), _mobilenet(seed=1)
    fa = cached_features(a, ds, tmp_path / "c", batch_size=3)
    fb = cached_features(b, ds, tmp_path / "c", batch_size=3)
    folders = sorted((tmp_path / "c" / "features").iterdir())
    assert len(folders) == 2 and all(len(list(f.glob("*.npy"))) == 4 for f in folders)
    x = torch.stack([ds[i][0] for i in range(4)])
    torch.testing.assert_close(fb, encode_features(b, x))  # b did not read a's features
    assert not torch.equal(fa, fb)
    # the same encoder again reads its cache and encodes nothing
    monkeypatch.setattr(frozen, "encode_features", lambda *a, **k: pytest.fail("re-encoded"))
    assert torch.equal(cached_features(_mobilenet(seed=0), ds, tmp_path / "c"), fa)
    # other preprocessing: another key, so it encodes again
    ds2 = VolumeDataset(df, "age", dict(pre, normalise="whole"), cache_dir=tmp_path / "vol")
    with pytest.raises(pytest.fail.Exception, match="re-encoded"):
        cached_features(a, ds2, tmp_path / "c")


def _frozen_config(tmp_path, table, out: str, **over) -> TrainConfig:
    d = tiny_config(tmp_path, data=str(table), out=str(tmp_path / out), freeze_encoder=True)
    d.update(over)
    return TrainConfig.from_dict(d)


def test_frozen_train_resume_evaluate_predict(table, tmp_path, mobilenet_weights):
    model = dict(backbone="mobilenet_v2", weights=str(mobilenet_weights), embed_dim=8)
    ref = train(_frozen_config(tmp_path, table, "ref", model=model, epochs=3), progress=False)
    run = train(_frozen_config(tmp_path, table, "run", model=model, epochs=2), progress=False)
    cache = tmp_path / "cache" / "features"
    (key,) = [p.name for p in cache.iterdir()]
    n_cached = len(list((cache / key).glob("*.npy")))
    split = pd.read_csv(run / "split.csv")
    assert n_cached == split["split"].isin(["train", "val"]).sum()
    # resume to 3 epochs from the cached features: the same weights as the uninterrupted run
    train(_frozen_config(tmp_path, table, "run", model=model, epochs=3), progress=False)
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run / "last.pt")
    assert b["epoch"] == 2 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the encoder kept its ImageNet weights
    init = SliceModel("mobilenet_v2", str(mobilenet_weights), embed_dim=8, volume_shape=SHAPE)
    enc = {k: v for k, v in b["model"].items() if k.startswith("encoder.")}
    assert all(torch.equal(v, init.state_dict()[k]) for k, v in enc.items())
    # evaluate runs the head on cached features, predict the full model on volumes: same numbers
    res = evaluate_run(run, split="test", progress=False)
    test = split[split["split"] == "test"]
    files = [table.parent / f"{p}.nii.gz" for p in test["participant_id"]]
    pred = predict_files(run, files, strict=False)  # toy spheres: QC-flagged
    mae = np.abs(pred["prediction"].astype(float).to_numpy() - test["age"].to_numpy()).mean()
    assert mae == pytest.approx(res["mae"], rel=1e-5)
    # a scratch encoder in the same cache folder gets its own features
    scratch = dict(model, weights=None)
    train(_frozen_config(tmp_path, table, "scratch", model=scratch, epochs=1), progress=False)
    assert len(list(cache.iterdir())) == 2
    load_run(run)  # (checkpoints load with weights_only=True)


def test_frozen_imagenet_model_beats_the_mean_baseline(tmp_path, mobilenet_weights):
    """An easy task: the age sets the radius of a bright inner sphere (make_table). A frozen
    ImageNet MobileNetV2 with a trained head must predict it much better than the training
    mean. (The scratch slice CNN is no use here: its five pooling blocks leave a 1 x 1 map of a
    20 x 16 slice.)"""
    t = make_table(tmp_path / "easy", n=40)
    cfg = tiny_config(
        tmp_path,
        data=str(t),
        out=str(tmp_path / "easy_run"),
        epochs=30,
        batch_size=8,
        lr=3e-3,
        freeze_encoder=True,
        split_fractions=(0.6, 0.2, 0.2),
        model=dict(backbone="mobilenet_v2", weights=str(mobilenet_weights), embed_dim=16),
    )
    res = evaluate_run(train(TrainConfig.from_dict(cfg), progress=False), n_boot=100)
    assert res["n"] == 8
    assert res["mae"] < 0.7 * res["baseline_mae"], res


# -----------------------------------------------------------------------------
# frozen heads standardise their input features with training statistics


def _scratch_config(tmp_path, table, out: str, **over) -> TrainConfig:
    over = dict(dict(epochs=1, model=dict(backbone="slice_cnn")), **over)
    return _frozen_config(tmp_path, table, out, **over)


def test_feature_statistics_come_from_the_training_subjects_only(table, tmp_path):
    a = train(_scratch_config(tmp_path, table, "a"), progress=False)
    split = pd.read_csv(a / "split.csv", dtype={"participant_id": str})
    (folder,) = (tmp_path / "cache" / "features").iterdir()
    model, meta = load_run(a)
    df = pd.read_csv(table, sep="\t").assign(path=lambda d: [table.parent / p for p in d["path"]])
    ds = VolumeDataset(df, "age", meta["preprocess"], cache_dir=tmp_path / "cache")
    feats = cached_features(model, ds, tmp_path / "cache")  # (N, S, F), read from the cache
    is_train = df["participant_id"].map(dict(zip(split["participant_id"], split["split"])))
    mean, sd = frozen.feature_stats(feats[torch.as_tensor((is_train == "train").to_numpy())])
    assert isinstance(model.project, frozen.StandardisedLinear)
    torch.testing.assert_close(model.project.feature_mean, mean)
    torch.testing.assert_close(model.project.feature_sd, sd)
    assert not torch.allclose(frozen.feature_stats(feats)[0], mean)  # all subjects differ
    # a validation subject with huge (cached) features leaves the statistics unchanged
    files = frozen._feature_files(model, ds, tmp_path / "cache")
    val = int(np.flatnonzero((is_train == "val").to_numpy())[0])
    np.save(files[val], 1e4 * np.load(files[val]))
    b = train(_scratch_config(tmp_path, table, "b"), progress=False)
    assert [p.name for p in (tmp_path / "cache" / "features").iterdir()] == [folder.name]
    sb = load_checkpoint(b / "last.pt")["model"]
    torch.testing.assert_close(sb["project.feature_mean"], mean)
    torch.testing.assert_close(sb["project.feature_sd"], sd)


def test_feature_scale_of_a_random_encoder_does_not_change_the_trained_head(table, tmp_path):
    """The point of standardising: a random encoder whose features are 1e3 times larger (its
    last, linear, 1x1 convolution scaled) trains to the same predictions."""
    df = pd.read_csv(table, sep="\t").assign(path=lambda d: [table.parent / p for p in d["path"]])
    pre = dict(volume_shape=list(SHAPE), voxel_size=8.0, method="resample")
    tr, va = (VolumeDataset(d, "age", pre, cache_dir=tmp_path / "c") for d in (df[:12], df[12:]))
    cfg = _scratch_config(tmp_path, table, "unused", epochs=4, preprocess=pre)
    x = torch.stack([va[i][0] for i in range(len(va))])  # (4, 1, X, Y, Z)
    mean, sd = float(df["age"][:12].mean()), float(df["age"][:12].std())
    preds = []
    for scale in (1.0, 1e3):
        kw = dict(embed_dim=8, volume_shape=SHAPE, seed=0, target_mean=mean, target_std=sd)
        model = SliceModel("slice_cnn", None, **kw)
        with torch.no_grad():
            model.encoder.reduce.weight.mul_(scale)
            model.encoder.reduce.bias.mul_(scale)
        fit(model, tr, va, cfg, tmp_path / f"run{scale:g}", progress=False)
        with torch.no_grad():
            preds.append(model.eval()(x))
        # the saved run (best.pt = last.pt after the improving last epoch) predicts the same
        files = [table.parent / f"{p}.nii.gz" for p in df["participant_id"][12:]]
        saved = predict_files(tmp_path / f"run{scale:g}" / "last.pt", files, strict=False)
        got = saved["prediction"].astype(float).to_numpy()
        np.testing.assert_allclose(got, preds[-1].numpy(), rtol=1e-5, atol=1e-4)
    assert preds[0].std() > 0
    torch.testing.assert_close(preds[1], preds[0], rtol=1e-3, atol=1e-2)  # years


def test_a_checkpoint_without_feature_statistics_loads_as_the_identity(table, tmp_path):
    run = train(_scratch_config(tmp_path, table, "old"), progress=False)
    ckpt = load_checkpoint(run / "best.pt")
    for k in frozen.STANDARDISE_KEYS:  # a run saved before frozen heads standardised
        del ckpt["model"][k]
    torch.save(ckpt, tmp_path / "old.pt")
    model, _ = load_run(tmp_path / "old.pt")
    assert type(model.project) is torch.nn.Linear
    x = torch.randn(2, 1, *SHAPE)
    new, _ = load_run(run)
    frozen.standardise_inputs(new, torch.zeros(32), torch.ones(32))  # identity statistics
    with torch.no_grad():
        torch.testing.assert_close(model(x), new(x))
    # an old last.pt resumes (with the identity: what it trained with)
    last = load_checkpoint(run / "last.pt")
    for k in frozen.STANDARDISE_KEYS:
        del last["model"][k]
    torch.save(last, run / "last.pt")
    train(_scratch_config(tmp_path, table, "old", epochs=2), progress=False)
    state = load_checkpoint(run / "last.pt")["model"]
    assert state["project.feature_sd"].eq(1).all() and state["project.feature_mean"].eq(0).all()


# -----------------------------------------------------------------------------
# a ridge head: RidgeCV on block-pooled frozen features, saved as a torch Linear


def test_ridge_head_is_fitted_on_the_training_subjects_and_predicts_as_sklearn(table, tmp_path):
    from sklearn.linear_model import RidgeCV

    cfg = _scratch_config(tmp_path, table, "ridge", head="ridge", ridge_blocks=2)
    run = train(cfg, progress=False)
    assert load_checkpoint(run / "last.pt")["optimizer"] is None  # closed form: no epochs loop
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 1 and history.loc[0, "ridge_alpha"] > 0
    model, meta = load_run(run)
    assert isinstance(model, frozen.RidgeSliceModel)
    df = pd.read_csv(table, sep="\t").assign(path=lambda d: [table.parent / p for p in d["path"]])
    split = pd.read_csv(run / "split.csv", dtype={"participant_id": str})
    df = df.merge(split[["participant_id", "split"]], on="participant_id")
    ds = VolumeDataset(df, "age", meta["preprocess"], cache_dir=tmp_path / "cache")
    n_slices = [model.n_slices[a] for a in model.axes]
    x = frozen.block_pool(cached_features(model, ds, tmp_path / "cache"), n_slices, 2)
    x = x.reshape(len(df), -1).astype(np.float64)  # (N, P)
    tr, te = (df["split"] == "train").to_numpy(), (df["split"] == "test").to_numpy()
    mean, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd == 0] = 1.0
    z = np.clip((x - mean) / sd, -frozen.CLIP_SD, frozen.CLIP_SD)
    ref = RidgeCV(alphas=frozen.RIDGE_ALPHAS).fit(z[tr], df["age"][tr])  # training rows only
    assert model.ridge.alpha.item() == pytest.approx(ref.alpha_)
    np.testing.assert_allclose(model.ridge.feature_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(x[tr | (df["split"] == "val").to_numpy()].mean(0), mean)
    # the saved run predicts what sklearn predicts: from volumes (predict) and features (evaluate)
    want = ref.predict(z[te])
    pred = predict_files(run, list(df["path"][te]), strict=False)
    np.testing.assert_allclose(pred["prediction"].astype(float), want, rtol=1e-4, atol=1e-3)
    res = evaluate_run(run, split="test", progress=False, n_boot=10)
    assert res["mae"] == pytest.approx(np.abs(want - df["age"][te]).mean(), rel=1e-4)


def test_ridge_head_needs_a_frozen_encoder_and_a_regression_target():
    with pytest.raises(ConfigError, match="freeze_encoder=True"):
        TrainConfig.from_dict(dict(head="ridge"))
    with pytest.raises(ConfigError, match="task='regression'"):
        TrainConfig.from_dict(dict(head="ridge", freeze_encoder=True, task="binary"))
    with pytest.raises(ConfigError, match="head="):
        TrainConfig.from_dict(dict(head="linear", freeze_encoder=True))


def test_cli_trains_evaluates_and_predicts_a_ridge_head(table, tmp_path, capsys):
    cfg = write_toml(tmp_path / "tiny.toml", tiny_config(tmp_path))
    run, out, csv = tmp_path / "run", tmp_path / "eval.json", tmp_path / "pred.csv"
    argv = ["train", "--data", str(table), "--target", "age", "--config", str(cfg)]
    argv += ["--out", str(run), "--no-progress", "--freeze-encoder", "--head", "ridge"]
    assert main(argv + ["--ridge-blocks", "3"]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["head"] == "ridge" and saved["ridge_blocks"] == 3
    assert main(["evaluate", "--run", str(run), "--split", "test", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    files = [str(table.parent / f"{p}.nii.gz") for p in ("sub-000", "sub-001")]
    assert main(["predict", "--run", str(run), *files, "--out", str(csv), "--no-progress"]) == 0
    got = pd.read_csv(csv)["prediction_unreliable"].to_numpy()  # toy spheres: QC-flagged
    np.testing.assert_allclose(got, predict_files(run, files, strict=False)["prediction"])
    assert res["n"] > 0 and np.isfinite(res["mae"]) and np.isfinite(got).all()
    bad = ["train", "--data", str(table), "--out", str(tmp_path / "x"), "--head", "ridge"]
    capsys.readouterr()
    assert main(bad) == 2 and "freeze_encoder=True" in capsys.readouterr().err


def test_ridge_head_chooses_its_penalty_over_subjects_when_copies_train():
    """fit_ridge_head(ids=...): with near-duplicate copies among the rows, leave-one-out would
    pick the grid's smallest penalty; subject folds (frozen.penalty_splits) pick a larger one
    on features unrelated to the target."""
    model = frozen.with_ridge_head(SliceModel("slice_cnn", None, volume_shape=SHAPE), 1)
    n_slices = sum(model.n_slices[a] for a in model.axes)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(24, n_slices, model.project.in_features)).astype(np.float32)  # (N, S, F)
    y = rng.uniform(20, 80, 24)
    features = np.concatenate([f, f + 0.01 * rng.normal(size=f.shape).astype(np.float32)])
    ids = [f"s{i}" for i in range(24)] + [f"s{i}~scan0" for i in range(24)]
    loo = frozen.fit_ridge_head(model, features, np.r_[y, y])["alpha"]
    grouped = frozen.fit_ridge_head(model, features, np.r_[y, y], ids=ids)["alpha"]
    assert loo == frozen.RIDGE_ALPHAS[0] and grouped > 100 * loo
    assert model.ridge.alpha.item() == pytest.approx(grouped)


def test_predict_reads_volumes_normalised_as_training_did(table, tmp_path):
    """A run trained on quantile-standardised volumes (normalised when read from the cache)
    predicts files from the same arrays: predict_files agrees with evaluate_run, which reads
    through the training dataset. (predict_files once fed the cache's z-score to such a run.)"""
    cfg = _frozen_config(tmp_path, table, "q", model=dict(backbone="mobilenet_v2", weights=None,
                         embed_dim=8), epochs=1)  # fmt: skip
    cfg.preprocess["normalise"] = "quantile"
    run = train(cfg, progress=False)
    split = pd.read_csv(run / "split.csv")
    test = split[split["split"] == "test"]
    files = [table.parent / f"{p}.nii.gz" for p in test["participant_id"]]
    pred = predict_files(run, files, strict=False)["prediction"].astype(float).to_numpy()
    res = evaluate_run(run, split="test", progress=False)
    assert np.abs(pred - test["age"].to_numpy()).mean() == pytest.approx(res["mae"], rel=1e-5)
