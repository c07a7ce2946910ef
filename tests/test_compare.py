"""slicelib.compare: the grid, the per-run configs, judging a run on validation, choosing the
learning rate, and one small comparison end to end (tiny volumes, scratch slice CNN and SFCN)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from tiny_data import make_table, tiny_config

from slicelib.compare import ARM_FLAGS, choose, compare, judge, plan, run_config
from slicelib.config import ConfigError, TrainConfig


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("cmp"), n=12)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_runs_every_combination_with_its_settings():
    base = TrainConfig(data="d", target="age", seed=7, lr=3e-4)
    grid = dict(weights=["w/r18.pth", None], position=["learned", "none"], norm=["set"])
    values, runs = plan(base, grid, seeds=[4])
    assert values["weights"] == ["w/r18.pth", "none"] and values["pooling"] == ["mean"]
    assert values["freeze_encoder"] == ["no"] and values["backbone"] == ["resnet18"]
    assert len(runs) == 4 and {r["seed"] for r in runs} == {4}
    configs = [run_config(base, r, "root", lr=1e-3) for r in runs]
    assert [(c.model["weights"], c.model["position"]) for c in configs] == [
        ("w/r18.pth", "learned"),
        ("w/r18.pth", "none"),
        (None, "learned"),
        (None, "none"),
    ]
    assert all(c.model["norm"] == "set" and c.seed == 4 and c.lr == 1e-3 for c in configs)
    assert configs[0].out == str(Path("root") / "resnet18-r18-learned-set-mean-seed4")
    tagged = run_config(base, runs[0], "root", lr=1e-3, lr_in_name=True)
    assert tagged.out.endswith("-seed4-lr0.001")
    assert plan(base)[0]["seed"] == [7]  # seeds default to the base's
    with pytest.raises(ConfigError, match="seeds= and lrs="):
        plan(base, {"lr": [1e-3]})
    with pytest.raises(ConfigError, match="freeze_encoder"):
        plan(base, {"freeze_encoder": ["maybe"]})


def test_a_3d_cnn_arm_is_one_run_per_seed_without_slice_settings():
    base = TrainConfig.from_dict(
        dict(model=dict(backbone="slice_cnn", embed_dim=8, channels_last=True), lr=1e-3)
    )
    grid = dict(
        backbone=["resnet18", "sfcn_3d"],
        weights=["imagenet", "none"],
        position=["learned", "none"],
        freeze_encoder=[False, True],
    )
    _, runs = plan(base, grid, seeds=[0, 1])
    slice_runs = [r for r in runs if r["backbone"] == "resnet18"]
    volume_runs = [r for r in runs if r["backbone"] == "sfcn_3d"]
    assert len(slice_runs) == 16
    assert volume_runs == [
        dict(dict.fromkeys(ARM_FLAGS, "-"), backbone="sfcn_3d", seed=s) for s in (0, 1)
    ]
    cfg = run_config(base, volume_runs[0], "root", lr=1e-3)
    # no slice-model key reaches the 3D CNN, not even the base's embed_dim or channels_last
    assert cfg.model == {"backbone": "sfcn_3d"} and cfg.freeze_encoder is False
    assert cfg.out == str(Path("root") / "sfcn_3d-seed0")
    frozen = [r for r in slice_runs if r["freeze_encoder"] == "yes"][0]
    cfg = run_config(base, frozen, "root", lr=1e-3)
    assert cfg.freeze_encoder is True and cfg.model["embed_dim"] == 8
    assert cfg.out == str(Path("root") / "resnet18-imagenet-learned-set-mean-frozen-seed0")


def _fake_run(folder: Path, train_loss, val_mae, best_pt=True, status=None) -> Path:
    """A finished regression run's files: history, config (training mean 50), split."""
    folder.mkdir()
    n = len(val_mae)
    hist = dict(epoch=range(1, n + 1), train_loss=train_loss, val_loss=[1.0] * n, val_mae=val_mae)
    if status is not None:
        hist["status"] = status
    pd.DataFrame(hist).to_csv(folder / "history.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"train_stats": {"mean": 50.0}}))
    split = dict(participant_id=["a", "b", "c"], split=["train", "val", "val"], age=[1, 40, 70])
    pd.DataFrame(split).to_csv(folder / "split.csv", index=False)
    if best_pt:
        (folder / "best.pt").write_bytes(b"")
    return folder


def test_a_run_is_judged_against_the_baseline_on_the_validation_set(tmp_path):
    cfg = TrainConfig(target="age", task="regression")  # val baseline: (10 + 20) / 2 = 15 years
    ok = judge(_fake_run(tmp_path / "ok", [2.0, 1.0, 1.5], [16.0, 9.0, 12.0]), cfg)
    assert ok == dict(
        status="ok", monitor="val_mae", val_best=9.0, note="", val_baseline=15.0, best_epoch=2
    )
    flat = judge(_fake_run(tmp_path / "flat", [1.0, 1.0], [15.0, 15.5]), cfg)
    assert flat["status"] == "did not learn" and flat["val_best"] == 15.0
    # what train writes when it stops on NaN/inf: the epoch with status "diverged"
    blown = _fake_run(tmp_path / "blown", [1.0, None], [9.0, None], status=["ok", "diverged"])
    blown = judge(blown, cfg)
    assert blown["status"] == "diverged" and "epoch 2" in blown["note"]
    old = judge(_fake_run(tmp_path / "old", [1.0, float("inf")], [9.0, 9.0]), cfg)
    assert old["status"] == "diverged"  # a history without a status column
    no_best = judge(_fake_run(tmp_path / "nobest", [1.0], [9.0], best_pt=False), cfg)
    assert no_best["status"] == "diverged" and "no best" in no_best["note"]
    # the reported lr: an ok run before any other, then the best validation value
    cands = [dict(ok, lr=1), dict(flat, lr=2), dict(blown, lr=3), dict(ok, val_best=8.0, lr=4)]
    assert choose(cands, "min")["lr"] == 4 and choose(cands[1:3], "min")["lr"] == 2
    assert choose([dict(ok, lr=1), dict(ok, val_best=8.0, lr=4)], "max")["lr"] == 1
    assert choose([blown, dict(blown, lr=5)], "min") is blown


def test_compare_chooses_the_lr_on_validation_and_runs_a_3d_cnn_once_per_seed(table, tmp_path):
    out = tmp_path / "cmp"
    base = tiny_config(tmp_path, data=str(table), target="age", epochs=1)
    grid = dict(backbone=["slice_cnn", "sfcn_3d"], weights=["none"], position=["none", "learned"])
    res, summ = compare(base, grid, lrs=[1e-3, 1e6], seeds=[0, 1], out=out, progress=False)
    assert len(res) == 6 and summ.equals(pd.read_csv(out / "summary.csv", keep_default_na=False))
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(res) == 6 and list(res["backbone"]) == ["slice_cnn"] * 4 + ["sfcn_3d"] * 2
    slice_only = ["weights", "position", "norm", "pooling", "freeze_encoder"]
    assert (res.loc[4:, slice_only] == "-").all(axis=None)  # not applicable to a 3D CNN
    assert set(res["lr"].astype(float)) == {1e-3} and set(res["lr_grid"]) == {"0.001,1e+06"}
    assert set(res["status"]) <= {"ok", "did not learn"} and "val_mae" in res
    need = {"mae", "baseline_mae", "mae_ci95_lo", "mae_ci95_hi", "ridge_mae", "run"}
    assert need <= set(res.columns)
    sel = pd.read_csv(out / "lr_selection.csv", keep_default_na=False)
    assert len(sel) == 12 and sel["chosen"].sum() == 6
    blown = sel[(sel["backbone"] == "slice_cnn") & (sel["lr"] == 1e6)]
    assert (blown["status"] == "diverged").all() and not blown["chosen"].any()
    assert blown["note"].str.contains("diverged at epoch").all()  # train's status, no crash
    assert len(summ) == 3 and list(summ["position"]) == ["none", "learned", "-"]
    for (_, s), (_, g) in zip(summ.iterrows(), res.groupby("position", sort=False)):
        ok = g[g["status"] == "ok"]
        used = ok if len(ok) else g  # the mean is over the seeds that learned, if any
        assert s["mae_mean"] == pytest.approx(used["mae"].astype(float).mean())
        assert s["n"] == len(used) and (s["status"] == "ok") == (len(ok) == len(g))
    assert {"lr", "baseline_mae_mean", "ridge_mae_mean", "mae_ci95_lo_mean"} <= set(summ.columns)
    assert (out / "compare.png").stat().st_size > 1000
