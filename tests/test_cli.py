"""The slicelib command line, run in-process through slicelib.cli.main (tiny data, 1 epoch)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from slicelib.cli import build_parser, main

SHAPE, VOXEL = (16, 20, 16), 8.0


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """12 tiny NIfTI volumes on an 8 mm grid; the inner sphere shrinks with age."""
    from slicelib.data import target_affine

    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    X, Y, Z = np.meshgrid(*[np.arange(s) - s / 2 for s in SHAPE], indexing="ij")
    r2 = X**2 + Y**2 + Z**2
    rows = []
    for i in range(12):
        age = float(rng.uniform(20, 90))
        vol = 100.0 * (r2 < 49) + 80.0 * (r2 < (6.5 - 2.5 * (age - 20) / 70) ** 2)
        vol = vol + rng.normal(0, 5, SHAPE) * (vol > 0)
        p = folder / f"s{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.float32), target_affine(SHAPE, VOXEL)), p)
        rows.append(dict(participant_id=f"s{i:02d}", age=round(age, 1), ad=i % 2, path=p.name))
    pd.DataFrame(rows).to_csv(folder / "participants.tsv", sep="\t", index=False)
    (folder / "tiny.toml").write_text(
        "epochs = 1\nbatch_size = 4\nlr = 1e-3\n"
        f'cache_dir = "{folder / "cache"}"\n'
        '[model]\nbackbone = "slice_cnn"\nembed_dim = 8\n'
        '[preprocess]\nvolume_shape = [16, 20, 16]\nvoxel_size = 8.0\ncentre = "none"\n'
    )
    return folder / "participants.tsv"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _options(parser, command: str) -> set[str]:
    sub = parser._subparsers._group_actions[0].choices[command]
    return {o for action in sub._actions for o in action.option_strings}


def test_train_and_compare_share_one_vocabulary():
    p = build_parser()
    train, compare = _options(p, "train"), _options(p, "compare")
    assert train <= compare, f"compare lacks {sorted(train - compare)}"
    assert compare - train == {"--eval-split"}
    assert {"--weights", "--position", "--norm", "--pooling", "--axes", "--seed"} <= train


def test_compare_takes_comma_separated_values_of_the_train_flags():
    p = build_parser()
    a = p.parse_args(
        "compare --out r --weights imagenet,none --position learned,none --norm set "
        "--pooling mean,max --seed 0,1 --axes sagittal,coronal".split()
    )
    assert (a.weights, a.position, a.norm) == (["imagenet", "none"], ["learned", "none"], ["set"])
    assert (a.pooling, a.seed, a.axes) == (["mean", "max"], [0, 1], "sagittal,coronal")
    a = p.parse_args("train --out r --position none --norm slice --seed 3".split())
    assert (a.position, a.norm, a.seed) == ("none", "slice", 3)
    for bad in ("compare --out r --position learned,diagonal", "train --out r --norm batch"):
        with pytest.raises(SystemExit):
            p.parse_args(bad.split())


def test_compare_grid_runs_every_combination_with_its_flags(monkeypatch):
    from slicelib import cli

    p = build_parser()
    a = p.parse_args(
        "compare --data d --target age --out root --weights w/r18.pth,none --position learned,none "
        "--norm set --seed 4".split()
    )
    values, runs = cli._grid(a)
    assert values["weights"] == ["w/r18.pth", "none"] and values["pooling"] == ["mean"]
    assert len(runs) == 4 and {r["seed"] for r in runs} == {4}
    configs = [cli._resolve(cli._one_run(a, r)) for r in runs]
    assert [(c.model["weights"], c.model["position"]) for c in configs] == [
        ("w/r18.pth", "learned"),
        ("w/r18.pth", "none"),
        (None, "learned"),
        (None, "none"),
    ]
    assert all(c.model["norm"] == "set" and c.seed == 4 for c in configs)
    assert configs[0].out == str(Path("root") / "resnet18-r18-learned-set-mean-seed4")


def test_channels_last_flag_and_cpu_preset():
    from slicelib.cli import _resolve

    p = build_parser()
    cpu = _resolve(p.parse_args("train --data d --target age --out r --preset cpu".split()))
    assert cpu.model["channels_last"] is True and cpu.model["backbone"] == "mobilenet_v2"
    off = "train --data d --target age --out r --preset cpu --no-channels-last".split()
    assert _resolve(p.parse_args(off)).model["channels_last"] is False
    plain = _resolve(p.parse_args("train --data d --target age --out r".split()))
    assert "channels_last" not in plain.model  # SliceModel's default (False)


def test_train_evaluate_predict_commands(table, tmp_path, capsys):
    cfg, run = table.parent / "tiny.toml", tmp_path / "run"
    base = ["--data", str(table), "--target", "age", "--config", str(cfg), "--no-progress"]
    argv = ["train", *base, "--out", str(run), "--position", "none", "--norm", "slice"]
    assert main(argv + ["--pooling", "max"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["position"] == "none" and saved["model"]["pooling"] == "max"
    assert saved["model"]["norm"] == "slice"
    assert saved["preprocess"]["voxel_size"] == VOXEL  # preprocessing saved with the run
    assert (run / "split.csv").is_file() and (run / "train_config.yaml").is_file()

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--split", "all", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 12 and "mae" in res and "baseline_mae" in res

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b broken")
    good = str(table.parent / "s00.nii.gz")
    csv = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), good, str(bad), "--out", str(csv)]) == 1
    err = capsys.readouterr().err
    assert "bad.nii.gz" in err
    df = pd.read_csv(csv, keep_default_na=False)
    assert len(df) == 2 and df.loc[0, "error"] == "" and "bad.nii.gz" in df.loc[1, "error"]
    assert float(df.loc[0, "prediction"]) > 0


def test_unknown_config_key_is_an_error_naming_it(table, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rate: 0.1\n")
    argv = ["train", "--data", str(table), "--target", "age", "--out", str(tmp_path / "x")]
    assert main(argv + ["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'learning_rate'" in err and "Valid keys" in err and "lr" in err


def test_missing_target_is_an_error_naming_it(table, tmp_path, capsys):
    argv = ["train", "--data", str(table), "--target", "bmi", "--out", str(tmp_path / "y")]
    assert main(argv + ["--config", str(table.parent / "tiny.toml")]) == 2
    assert "bmi" in capsys.readouterr().err


def test_compare_grid_writes_results_summary_and_figure(table, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(table), "--target", "age", "--out", str(out)]
    argv += ["--config", str(table.parent / "tiny.toml"), "--no-progress"]
    argv += ["--weights", "none", "--position", "none,learned", "--norm", "set"]
    assert main(argv + ["--seed", "0,1"]) == 0
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 4 and set(res["seed"]) == {0, 1}
    assert {"mae", "baseline_mae", "weights", "position", "norm", "pooling"} <= set(res.columns)
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 2 and (summ["n"] == 2).all() and (summ["seeds"] == "0, 1").all()
    assert list(summ["position"]) == ["none", "learned"]
    mean = res.groupby("position", sort=False)["mae"].mean()
    assert summ["mae_mean"].to_numpy() == pytest.approx(mean.to_numpy())
    assert {"mae_sd", "baseline_mae_mean"} <= set(summ.columns)
    assert (out / "compare.png").stat().st_size > 1000
