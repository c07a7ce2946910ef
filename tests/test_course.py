"""Tests of the notebooks' shared helpers in slicelib.course (weights, cohorts, runs)."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pandas as pd
import pytest
import torch

from slicelib import course, synth


def _offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_imagenet_weights_local_then_fallback_then_none(tmp_path, monkeypatch, mobilenet_weights):
    _offline(monkeypatch, tmp_path)
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(mobilenet_weights, folder / "mobilenet_v2_imagenet1k.pth")
    monkeypatch.setenv("SLICELIB_WEIGHTS_DIR", str(folder))

    backbone, weights, note = course.imagenet_weights("mobilenet_v2")
    assert (backbone, weights) == ("mobilenet_v2", str(folder / "mobilenet_v2_imagenet1k.pth"))
    # resnet18 is neither local nor downloadable: the local MobileNetV2 stands in, and says so
    backbone, weights, note = course.imagenet_weights("resnet18")
    assert backbone == "mobilenet_v2" and weights.endswith("mobilenet_v2_imagenet1k.pth")
    assert "resnet18" in note and "instead" in note
    backbone, weights, note = course.imagenet_weights("resnet18", fallback=None)
    assert (backbone, weights) == ("resnet18", None) and "NO ImageNet weights" in note


def test_weights_are_found_in_slicelib_shared(tmp_path, monkeypatch, mobilenet_weights):
    """make demo exports SLICELIB_SHARED (../shared or /work/shared) for a clone anywhere."""
    _offline(monkeypatch, tmp_path)
    monkeypatch.delenv("SLICELIB_WEIGHTS_DIR", raising=False)
    (tmp_path / "assets" / "weights").mkdir(parents=True)
    local = tmp_path / "assets" / "weights" / "mobilenet_v2_imagenet1k.pth"
    local.symlink_to(mobilenet_weights)
    monkeypatch.setenv("SLICELIB_SHARED", str(tmp_path / "assets"))
    assert course.shared_dir() == tmp_path / "assets"
    assert course.imagenet_weights("mobilenet_v2")[:2] == ("mobilenet_v2", str(local))
    monkeypatch.setenv("SLICELIB_SHARED", "")  # empty (make found no assets): beside the repo
    assert course.shared_dir().name == "shared"
    assert course.shared_dir().parent == course.Path(course.__file__).resolve().parents[2]


def test_cohort_is_remade_when_the_generator_changes(tmp_path, monkeypatch):
    made = []

    def fake_make_cohort(folder, n, seed):
        folder.mkdir(parents=True, exist_ok=True)
        made.append((n, seed))

    monkeypatch.setattr(course, "make_cohort", fake_make_cohort)
    folder = course.ensure_synthetic_cohort(3, seed=1, root=tmp_path)
    assert made == [(3, 1)] and folder == tmp_path / "synth-n3-seed1"
    course.ensure_synthetic_cohort(3, seed=1, root=tmp_path)
    assert len(made) == 1  # complete and current: reused
    (folder / ".complete").write_text("n=3 seed=1\n")  # made by an older generator
    course.ensure_synthetic_cohort(3, seed=1, root=tmp_path)
    assert len(made) == 2
    assert f"generator={synth.GENERATOR_VERSION}" in (folder / ".complete").read_text()


def test_runs_dir_names_the_generator_version(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICELIB_DATA", str(tmp_path))
    assert course.runs_dir("02", "cpu") == (
        tmp_path
        / "runs"
        / f"02_cpu_course-v{course.COURSE_RUNS_VERSION}_synth-v{synth.GENERATOR_VERSION}"
    )


def test_train_on_split_uses_the_given_split(tmp_path):
    from tiny_data import SHAPE, VOXEL, make_table

    from slicelib.train import TrainConfig

    table = make_table(tmp_path / "d", n=10)
    ids = pd.read_csv(table, sep="\t")["participant_id"].tolist()
    split = dict(train=ids[:5], unused=ids[5:6], val=ids[6:8], test=ids[8:])
    config = TrainConfig(
        data=str(table),
        target="age",
        out=str(tmp_path / "run"),
        epochs=1,
        batch_size=4,
        patience=None,
        model=dict(backbone="slice_cnn", embed_dim=8),
        preprocess=dict(volume_shape=list(SHAPE), voxel_size=VOXEL, method="resample"),
    )
    row, history = course.train_on_split(config, split)
    assert config.split is None  # the caller's config is left as it was
    saved = pd.read_csv(tmp_path / "run" / "split.csv")  # what training used; unused: left out
    assert saved.groupby("split").size().to_dict() == dict(test=2, train=5, val=2)
    given = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["split"]
    assert given == course.split_mapping(split) and given[ids[5]] == "unused"
    assert row["best_epoch"] == 1 and row["mae"] >= 0 and "baseline_mae" in row
    assert len(history) == 1 and row["run"] == str(tmp_path / "run")


def test_course_split_is_seeded_disjoint_and_nested_balanced():
    import numpy as np

    rng = np.random.default_rng(0)
    people = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(200)],
            "age": rng.uniform(20, 90, 200).round(1),
            "ad": (rng.random(200) < 0.3).astype(int),
        }
    )
    parts, pool = course.course_split(people, (0.6, 0.1, 0.3), seed=0)
    again = course.course_split(people, (0.6, 0.1, 0.3), seed=0)
    assert (parts, pool) == again
    assert sorted(pool) == sorted(parts["train"])
    assert not set(parts["train"]) & set(parts["val"]) | set(parts["test"]) & set(parts["train"])
    assert len(parts["test"]) == pytest.approx(60, abs=6)
    ad = people.set_index("participant_id")["ad"]
    for n in (24, 48, 96):  # each prefix keeps the pool's AD fraction
        assert abs(ad[pool[:n]].mean() - ad[pool].mean()) < 0.06


def test_compare_on_split_trains_every_arm_on_the_given_split(tmp_path):
    from tiny_data import SHAPE, VOXEL, make_table

    from slicelib.train import TrainConfig

    table = make_table(tmp_path / "d", n=12)
    ids = pd.read_csv(table, sep="\t")["participant_id"].tolist()
    split = dict(train=ids[:5], unused=ids[5:8], val=ids[8:10], test=ids[10:])
    base = TrainConfig(
        data=str(table),
        target="age",
        out=str(tmp_path / "cmp"),
        epochs=1,
        batch_size=4,
        patience=None,
        model=dict(backbone="slice_cnn", embed_dim=8),
        preprocess=dict(volume_shape=list(SHAPE), voxel_size=VOXEL, method="resample"),
    )
    grid = dict(backbone=["slice_cnn", "sfcn_3d"])
    results, summary = course.compare_on_split(
        base, split, grid, lrs=[1e-3, 1e-2], seeds=[0], progress=False
    )
    assert len(results) == 2 and results["n_subjects"].tolist() == [2, 2]
    for run in results["run"]:  # every run got the split through its config, none by file
        saved = pd.read_csv(f"{run}/split.csv").groupby("split").size().to_dict()
        assert saved == dict(test=2, train=5, val=2)
        given = json.loads(Path(f"{run}/config.json").read_text())["train"]["split"]
        assert given == course.split_mapping(split)
    names = course.arm_names(results).tolist()
    assert names[1] == "3D CNN (sfcn_3d)" and names[0] == "scratch, fine-tuned"
    hist = course.run_histories(results.assign(arm=names))
    assert set(hist["arm"]) == {f"{n} (seed 0)" for n in names} and len(hist) == 2
    with pytest.raises(ValueError, match="unused"):
        course.compare_on_split(base, dict(train=ids[:5], val=ids[8:10], test=ids[10:]))


def test_plot_size_sweep_draws_one_line_per_group_and_the_references():
    import matplotlib

    matplotlib.use("Agg")
    runs = pd.DataFrame(
        dict(
            arm=["a", "a", "a", "a", "b", "b"],
            n_train=[10, 10, 40, 40, 10, 40],
            seed=[0, 1, 0, 1, 0, 0],
            mae=[9.0, 11.0, 6.0, 6.5, 12.0, 10.0],
        )
    )
    ridge = pd.Series([8.0, 5.0], index=[10, 40])
    fig = course.plot_size_sweep(runs, value="mae", references={"ridge": ridge}, metric_label="y")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["a (mean ± sd, 2 seeds)", "b (mean ± sd, 1 seed)", "ridge"]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "y"
    means = ax.containers[0].lines[0].get_ydata()  # the errorbar line of group "a"
    assert list(means) == [10.0, 6.25]


def test_mae_text_and_versus_read_the_table():
    nan = float("nan")
    table = pd.DataFrame(
        dict(
            mae=[5.0, 9.5, 6.0, nan],
            mae_ci95_lo=[4.0, 8.0, 5.0, nan],
            mae_ci95_hi=[6.0, 11.0, 7.5, nan],
            status=["ok", "did not learn", "ok", "diverged: seed 0"],
        ),
        index=["a", "b", "c", "d"],
    )
    assert course.mae_text(table, "a") == "5.0 years (95 % CI 4.0-6.0; ok)"
    assert course.mae_text(table, "d") == "no result (diverged: seed 0)"
    assert course.versus(table, "a", "b").endswith("a 4.5 years better, CIs apart")
    assert course.versus(table, "c", "a").endswith("c 1.0 years worse, CIs overlap")
    assert "diverged" in course.versus(table, "a", "d")
    assert course.versus(table, "a", "ImageNet, frozen") == (
        "ImageNet, frozen not in this run: no comparison of a with ImageNet, frozen"
    )
