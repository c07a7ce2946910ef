"""TrainConfig.ema: a moving average of the weights is what is validated and saved as best.pt,
and a run with one resumes exactly."""

import numpy as np
import pytest
import torch
from tiny_data import SHAPE, tensor_sets

from slicelib import cli
from slicelib.config import ConfigError, TrainConfig
from slicelib.engine import load_checkpoint
from slicelib.model import SliceModel
from slicelib.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    return SliceModel(
        "slice_cnn", embed_dim=8, volume_shape=SHAPE, target_mean=50.0, target_std=15.0, seed=0
    )


def _fit(run_dir, **over):
    cfg = TrainConfig(**{**dict(batch_size=4, lr=1e-2, patience=None, device="cpu"), **over})
    return fit(_model(), *tensor_sets(), cfg, run_dir, progress=False)


def test_best_checkpoint_holds_the_average_and_its_validation_score(tmp_path):
    """One epoch (two optimiser steps, decay 0.5): best.pt holds the averaged weights, which
    differ from the last step's (kept in last.pt for resuming), and the history's val_mae is
    the average's MAE on the validation set."""
    out = _fit(tmp_path / "r", epochs=1, ema=0.5)
    best, last = (load_checkpoint(tmp_path / "r" / f) for f in ("best.pt", "last.pt"))
    averaged = {k.removeprefix("module."): v for k, v in last["averaged"].items()}
    assert int(averaged.pop("n_averaged")) == 2  # one update per optimiser step
    assert best["model"].keys() == last["model"].keys()
    for k, v in best["model"].items():
        assert torch.equal(v, averaged[k]), k
    moved = [k for k, v in best["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in moved)

    model = _model()
    model.load_state_dict(best["model"])
    x, y = tensor_sets()[1].tensors
    with torch.no_grad():
        mae = (model.eval()(x) - y).abs().mean().item()
    assert out["history"][0]["val_mae"] == pytest.approx(mae, rel=1e-5)


def test_without_ema_best_is_the_trained_weights(tmp_path):
    _fit(tmp_path / "r", epochs=1)
    best, last = (load_checkpoint(tmp_path / "r" / f) for f in ("best.pt", "last.pt"))
    assert last["averaged"] is None
    for k, v in best["model"].items():
        assert torch.equal(v, last["model"][k]), k


def test_the_average_does_not_change_training(tmp_path):
    """The average only watches: the trained weights follow the same path with and without it,
    and its run's raw_val_mae column is the val_mae of the run without it."""
    plain = _fit(tmp_path / "plain", epochs=2)
    averaged = _fit(tmp_path / "ema", epochs=2, ema=0.5)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("plain", "ema"))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    raw = [r["raw_val_mae"] for r in averaged["history"]]
    np.testing.assert_array_equal(raw, [r["val_mae"] for r in plain["history"]])
    assert raw != [r["val_mae"] for r in averaged["history"]]


def test_a_run_with_an_average_resumes_bit_identically(tmp_path):
    """Two epochs in one go, or one epoch and then resumed to two: the same average, weights
    and history (the average is saved in last.pt and restored)."""
    whole = _fit(tmp_path / "whole", epochs=2, ema=0.8)
    _fit(tmp_path / "parts", epochs=1, ema=0.8)
    resumed = _fit(tmp_path / "parts", epochs=2, ema=0.8)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("whole", "parts"))
    for key in ("model", "averaged"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    vals = [[r["val_mae"] for r in h["history"]] for h in (whole, resumed)]
    np.testing.assert_array_equal(*vals)


def test_ema_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match="ema=1.0.*0 = off"):
        TrainConfig(ema=1.0).validate()
    with pytest.raises(ConfigError, match="ema=-0.1"):
        TrainConfig.from_dict({"ema": -0.1})


def test_changing_ema_is_refused_on_resume(tmp_path):
    """ema is a training setting: a run cannot be resumed with another (its best.pt would mix
    two definitions of the weights validated)."""
    _fit(tmp_path / "r", epochs=1, ema=0.5)
    with pytest.raises(ConfigError, match="ema"):
        _fit(tmp_path / "r", epochs=2, ema=0.9)


def test_the_ema_flag_reaches_the_training_config():
    """``--ema`` in train and compare (one value for every arm), absent = the default 0."""
    p = cli.build_parser()
    assert cli._overrides(p.parse_args("train --out r --ema 0.95".split()))["ema"] == 0.95
    assert cli._overrides(p.parse_args("compare --out r --ema 0.9".split()))["ema"] == 0.9
    assert cli._overrides(p.parse_args("train --out r".split()))["ema"] is None
