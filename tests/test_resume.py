"""Resuming with settings that may change (epochs, patience): the run follows the new config."""

import math

import pytest
import torch
from tiny_data import SHAPE, tensor_sets

from slicelib.config import TrainConfig
from slicelib.model import SliceModel
from slicelib.train import cosine_factor, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(run_dir, **over):
    model = SliceModel(
        "slice_cnn", embed_dim=8, volume_shape=SHAPE, target_mean=50.0, target_std=15.0, seed=0
    )
    cfg = TrainConfig(**{**dict(batch_size=4, lr=1e-2, patience=None, device="cpu"), **over})
    return fit(model, *tensor_sets(), cfg, run_dir, progress=False)


def test_cosine_factor_is_the_closed_form():
    f = cosine_factor(10)
    assert f(0) == 1.0 and f(10) == pytest.approx(0.0, abs=1e-15) and f(15) == f(10)
    assert f(5) == pytest.approx(0.5)
    assert all(f(t + 1) <= f(t) for t in range(12))


def test_resume_with_more_epochs_follows_the_new_cosine_schedule(tmp_path):
    """Two epochs, then resumed to four: epochs 3 and 4 take the lr of a four-epoch schedule
    (a restored scheduler kept the old length: after the old end the lr climbed again)."""
    _fit(tmp_path / "r", epochs=2, schedule="cosine")
    hist = _fit(tmp_path / "r", epochs=4, schedule="cosine")["history"]
    fresh = _fit(tmp_path / "fresh", epochs=4, schedule="cosine")["history"]
    lrs = [row["lr"] for row in hist]
    assert len(lrs) == 4
    steps = 4 * 2  # epochs x optimiser steps per epoch (8 volumes, batches of 4)
    for epoch in (3, 4):  # the lr after each resumed epoch: the four-epoch schedule's
        want = 1e-2 * 0.5 * (1 + math.cos(math.pi * epoch * 2 / steps))
        assert lrs[epoch - 1] == pytest.approx(want, rel=1e-9, abs=1e-15)
        assert lrs[epoch - 1] == pytest.approx(fresh[epoch - 1]["lr"], rel=1e-9, abs=1e-15)
    assert lrs[3] <= lrs[2]  # never climbs


def test_resume_with_a_larger_patience_continues_an_early_stopped_run(tmp_path):
    """``val_n`` never improves after epoch 1: patience 1 stops after epoch 2; resumed with
    patience 3 the run continues, and stops again when the new patience runs out."""
    first = _fit(tmp_path / "r", epochs=8, patience=1, monitor="val_n")
    assert first["stopped_early"] and first["epochs_run"] == 2
    again = _fit(tmp_path / "r", epochs=8, patience=3, monitor="val_n")
    assert again["stopped_early"] and [r["epoch"] for r in again["history"]] == [1, 2, 3, 4]
    same = _fit(tmp_path / "r", epochs=8, patience=3, monitor="val_n")  # nothing left to do
    assert same["epochs_run"] == 4 and same["stopped_early"]


def test_a_moved_weights_file_still_resumes_and_other_weights_do_not(tmp_path, mobilenet_weights):
    """The same ImageNet file at another path (a moved shared folder, another machine) resumes;
    a file with other bytes is refused, naming the weights."""
    import shutil

    from slicelib.config import ConfigError

    first, moved, other = (tmp_path / d for d in ("a", "b", "c"))
    for folder in (first, moved, other):
        folder.mkdir()
    shutil.copy(mobilenet_weights, first / "w.pth")
    shutil.copy(mobilenet_weights, moved / "w.pth")
    state = torch.load(mobilenet_weights, weights_only=True)
    state["features.0.0.weight"] = state["features.0.0.weight"] + 1.0
    torch.save(state, other / "w.pth")

    def fit_with(path, epochs):
        model = SliceModel(
            "mobilenet_v2", weights=str(path), embed_dim=8, volume_shape=SHAPE, axes="axial",
            target_mean=50.0, target_std=15.0, seed=0,
        )  # fmt: skip
        cfg = TrainConfig(batch_size=4, lr=1e-3, epochs=epochs, device="cpu")
        return fit(model, *tensor_sets(), cfg, tmp_path / "run", progress=False)

    fit_with(first / "w.pth", 1)
    assert fit_with(moved / "w.pth", 2)["epochs_run"] == 2
    with pytest.raises(ConfigError, match="model.weights"):
        fit_with(other / "w.pth", 3)
