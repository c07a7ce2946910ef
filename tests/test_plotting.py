"""Tests of slicelib.plotting: every figure draws on small inputs and is labelled; offline."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from slicelib import explain as E  # noqa: E402
from slicelib import plotting as P  # noqa: E402
from slicelib.data import MNI_2MM_AFFINE  # noqa: E402
from slicelib.model import SliceModel  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax):
    assert ax.get_title() or ax.figure._suptitle is not None
    assert ax.get_xlabel() and ax.get_ylabel()


def _result(S=10, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return E.SliceImportance(
        rng.random((B, S)),
        np.arange(S),
        np.zeros(S, int),
        ("sagittal",),
        "occlusion",
        "|Δ| (years)",
    )


def test_plot_slice_importance_with_ground_truth_and_mm_axis():
    effect = np.zeros((10, 6, 5))
    effect[4:6] = 1.0
    fig = P.plot_slice_importance(
        {"occlusion": _result(), "attention": _result(seed=1), "profile": np.arange(10.0)},
        ground_truth=effect,
        axis="sagittal",
        affine=MNI_2MM_AFFINE,
    )
    ax = fig.axes[0]
    _labelled(ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == "ground truth effect" and "r =" in labels[0]
    assert ax.lines[-1].get_linestyle() == "--"
    assert max(ax.lines[0].get_ydata()) == pytest.approx(1.0)  # normalised to peak 1
    assert any("mm" in (a.get_xlabel() or "") for a in fig.axes[0].child_axes)


def test_plot_slice_importance_single_result_into_given_axes():
    fig, ax = plt.subplots()
    out = P.plot_slice_importance(_result(), normalise=None, ax=ax)
    assert out is fig
    assert "years" in ax.get_ylabel()


@pytest.mark.parametrize("kind", ["stat_map", "glass_brain"])
def test_plot_importance_on_brain_offline(kind):
    shape = (23, 27, 23)  # coarse 8 mm grid: fast
    affine = MNI_2MM_AFFINE.copy()
    affine[:3, :3] *= 4
    vol = E.to_volume(np.linspace(0, 1, shape[2]), shape, axis="axial")
    display = P.plot_importance_on_brain(
        vol, affine, kind=kind, title="importance", colorbar_label="|Δ| (years)"
    )
    texts = [t.get_text() for ax in display.frame_axes.figure.axes for t in ax.texts]
    assert "importance" in texts  # the title
    assert display._cbar.ax.get_ylabel() == "|Δ| (years)"
    display.close()


def test_plot_importance_on_brain_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        P.plot_importance_on_brain(np.ones((4, 4, 4)), np.eye(4), kind="surface", bg_img=False)


def test_plot_learning_curves_several_runs():
    rows = []
    for label in ["imagenet", "scratch"]:
        for epoch in range(1, 4):
            rows.append(
                dict(
                    label=label,
                    epoch=epoch,
                    train_loss=1 / epoch,
                    val_loss=1.2 / epoch,
                    val_mae=5 / epoch,
                    lr=1e-4,
                )
            )
    fig = P.plot_learning_curves(pd.DataFrame(rows), loss_label="loss (MSE, years²)")
    assert len(fig.axes) == 2  # loss + val_mae
    for ax in fig.axes:
        _labelled(ax)
        assert ax.get_legend() is not None
    assert fig._suptitle.get_text()
    with pytest.raises(ValueError, match="val_loss"):
        P.plot_learning_curves(pd.DataFrame({"epoch": [1], "train_loss": [1.0]}))


def test_plot_results_from_runs_and_from_summary():
    runs = pd.DataFrame(
        dict(
            condition=["imagenet"] * 3 + ["scratch"] * 3,
            seed=[0, 1, 2] * 2,
            test_mae=[4.0, 4.5, 5.0, 6.0, 6.5, 7.5],
        )
    )
    fig = P.plot_results(runs, value="test_mae", metric_label="test MAE (years)")
    ax = fig.axes[0]
    _labelled(ax)
    assert "seeds: 0, 1, 2" in ax.get_title()
    summary = P.summarise_runs(runs, "test_mae")
    assert list(summary["mean"]) == pytest.approx([4.5, 6.666667])
    assert summary.loc[0, "seeds"] == "0, 1, 2" and summary.loc[0, "n"] == 3
    fig2 = P.plot_results(summary, metric_label="test MAE (years)")
    _labelled(fig2.axes[0])
    # bars coloured per condition on request (matching a notebook's other figures)
    fig3 = P.plot_results(
        runs, value="test_mae", metric_label="MAE (years)", colors={"scratch": "tab:orange"}
    )
    bars = fig3.axes[0].patches
    assert mcolors.to_hex(bars[0].get_facecolor(), keep_alpha=False) == mcolors.to_hex("C0")
    assert mcolors.to_hex(bars[1].get_facecolor(), keep_alpha=False) == mcolors.to_hex("tab:orange")


def test_summary_of_several_metrics_and_conditions_drawn_with_a_baseline():
    runs = pd.DataFrame(
        dict(
            weights=["imagenet", "imagenet", "none", "none"],
            position=["learned"] * 4,
            seed=[0, 1, 0, 1],
            mae=[4.0, 6.0, 9.0, 9.0],
            r=[0.9, 0.7, 0.1, 0.3],
        )
    )
    summary = P.summarise_runs(runs, ["mae", "r"], by=["weights", "position"])
    assert list(summary["mae_mean"]) == [5.0, 9.0] and list(summary["mae_sd"]) == [
        pytest.approx(np.sqrt(2)),
        0.0,
    ]
    assert list(summary["r_mean"]) == pytest.approx([0.8, 0.2]) and list(summary["n"]) == [2, 2]
    fig = P.plot_results(
        summary,
        value="mae",
        condition=["weights", "position"],
        colors={"none": "tab:orange"},
        color_by="weights",
        baseline=12.0,
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "imagenet\nlearned\nn = 2",
        "none\nlearned\nn = 2",
    ]
    assert [p.get_height() for p in ax.patches] == [5.0, 9.0]
    assert mcolors.to_hex(ax.patches[1].get_facecolor(), keep_alpha=False) == mcolors.to_hex(
        "tab:orange"
    )
    assert any(list(line.get_ydata()) == [12.0, 12.0] for line in ax.lines)  # the baseline


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_plot_position_similarity(position):
    model = SliceModel(
        "slice_cnn", embed_dim=8, position=position, volume_shape=(18, 20, 18), seed=0
    )
    sim = P.position_similarity(model)
    assert sim.shape == (18, 18)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    fig = P.plot_position_similarity(model)
    ax = fig.axes[0]
    _labelled(ax)
    assert ax.get_xlabel() == "sagittal slice index"
    assert fig.axes[1].get_ylabel() == "cosine similarity"


def test_similarity_of_the_set_norms_rows_and_no_position():
    model = SliceModel("slice_cnn", embed_dim=8, position="none", volume_shape=(18, 20, 18))
    with pytest.raises(ValueError, match="no position embedding"):
        P.position_similarity(model)
    with torch.no_grad():
        model.norm.weight[:9] = 1.0  # slices 0-8 share one scale, 9-17 the opposite one
        model.norm.weight[9:] = -1.0
    sim = P.position_similarity(model, parameter="norm.weight")
    assert sim[0, 8] == pytest.approx(1.0) and sim[0, 9] == pytest.approx(-1.0)
    fig = P.plot_position_similarity(model, parameter="norm.weight")
    assert "norm.weight" in fig.axes[0].get_title()


def test_show_slices_voxels_and_mm():
    vol = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    fig = P.show_slices(vol, title="a volume")
    assert len(fig.axes) == 4  # three planes + colorbar
    for ax in fig.axes[:3]:
        _labelled(ax)
        assert "voxel" in ax.get_xlabel()
    fig2 = P.show_slices(vol, MNI_2MM_AFFINE, index=(3, 4, 5))
    assert "mm" in fig2.axes[0].get_xlabel()
    assert fig2.axes[0].get_title() == "sagittal slice 3 (x = -84 mm)"
    assert fig2.axes[3].get_ylabel() == "intensity (z-score)"


def test_plot_slices_mosaic_picks_evenly_spaced_slices_and_world_positions():
    vol = np.zeros((91, 109, 91), np.float32)
    vol[40] = 1.0  # a bright sagittal plane at x = -10 mm
    fig = P.plot_slices(vol, MNI_2MM_AFFINE, n=5, title="mosaic", colorbar_label="T1 (a.u.)")
    panels, bar = fig.axes[:15], fig.axes[15]
    assert len(fig.axes) == 16 and bar.get_ylabel() == "T1 (a.u.)"
    assert fig._suptitle.get_text() == "mosaic"
    # 5 slices of 91, edges left out: 15, 30, 45, 60, 75 at x = 2 * i - 90 mm
    assert [p.get_title() for p in panels[:5]] == [
        f"slice {i} (x = {2 * i - 90} mm)" for i in (15, 30, 45, 60, 75)
    ]
    assert "mm" in panels[0].get_xlabel() and "mm" in panels[5].get_ylabel()  # first of a row
    assert panels[1].get_xlabel() == ""  # the others are unlabelled
    fig = P.plot_slices(vol, MNI_2MM_AFFINE, coords={"sagittal": [-10], "axial": [0, 14]})
    (x_row,), z_row = [fig.axes[0:1], fig.axes[2:4]]
    assert x_row.images[0].get_array().min() == 1.0  # the bright plane itself
    assert [p.get_title() for p in z_row] == [
        "axial slice 36 (z = 0 mm)",
        "axial slice 43 (z = 14 mm)",
    ]  # two columns: full titles
    assert not fig.axes[1].axison  # the sagittal row has one slice: its second panel is off
    with pytest.raises(ValueError, match="outside"):
        P.plot_slices(vol, MNI_2MM_AFFINE, coords={"coronal": [200]})
    with pytest.raises(ValueError, match="affine"):
        P.plot_slices(vol, coords={"coronal": [0]})


def test_plot_slices_draws_into_given_axes_and_takes_images():
    import nibabel as nib

    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 7)).astype(np.float32), np.eye(4))
    fig, axes = plt.subplots(2, 3)
    out = P.plot_slices(img, axes=("coronal", "axial"), n=1, ax=axes[:, 1], title=None,
                        colorbar_label=None)  # fmt: skip
    assert out is fig and len(fig.axes) == 6  # no colorbar added
    assert axes[0, 1].get_title() == "coronal slice 4 (y = 4 mm)"
    assert axes[0, 0].get_title() == "" and fig._suptitle is None


def test_failed_runs_are_named_not_averaged_and_baselines_drawn_beside_the_arms():
    runs = pd.DataFrame(
        dict(
            weights=["imagenet", "imagenet", "none", "none"],
            seed=[0, 1, 0, 1],
            mae=[4.0, 40.0, 20.0, np.nan],
            lo=[3.0, 30.0, 15.0, np.nan],
            hi=[5.0, 50.0, 25.0, np.nan],
            status=["ok", "did not learn", "diverged", "diverged"],
        )
    )
    summary = P.summarise_runs(runs, ["mae", "lo", "hi"], by="weights", status="status")
    assert list(summary["weights"]) == ["imagenet", "none"]
    assert list(summary["mae_mean"]) == [4.0, 20.0]  # the failed seed of imagenet left out
    assert list(summary["n"]) == [1, 2] and list(summary["seeds"]) == ["0", "0, 1"]
    assert list(summary["status"]) == [
        "ok (seed 1: did not learn)",
        "diverged: seeds 0, 1",
    ]
    assert "status" not in P.summarise_runs(runs, "mae", by="weights").columns
    fig = P.plot_results(
        summary,
        value="mae",
        condition="weights",
        ci=("lo_mean", "hi_mean"),
        references={"mean-age baseline": (17.0, 15.0, 19.0), "ridge": 6.0},
    )
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["imagenet\nn = 1", "none\nn = 2", "mean-age\nbaseline", "ridge"]  # wrapped
    assert [p.get_height() for p in ax.patches] == [4.0, 20.0, 17.0, 6.0]
    assert ax.patches[1].get_hatch() == "//" and not ax.patches[0].get_hatch()
    texts = [t.get_text() for t in ax.texts]
    assert [t.strip() for t in texts] == list(
        summary["status"]
    )  # both named; only the one with no ok run hatched
    assert "95 % CI" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    with pytest.raises(ValueError, match="lo_mean"):
        P.plot_results(summary.drop(columns="lo_mean"), value="mae", condition="weights",
                       ci=("lo_mean", "hi_mean"))  # fmt: skip
