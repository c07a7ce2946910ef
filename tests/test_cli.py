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
        '[preprocess]\nshape = [16, 20, 16]\nvoxel_size = 8.0\ncentre = "none"\n'
    )
    return folder / "participants.tsv"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_parser_has_the_contract_flags():
    p = build_parser()
    a = p.parse_args(
        "train --data d --target age --out r --task binary --backbone resnet18 --weights none "
        "--position sinusoidal --pooling attention --axes sagittal,coronal --epochs 3 "
        "--batch-size 2 --seed 1 --preset smoke --config c.toml".split()
    )
    assert (a.position, a.pooling, a.axes, a.batch_size, a.preset) == (
        "sinusoidal",
        "attention",
        "sagittal,coronal",
        2,
        "smoke",
    )
    a = p.parse_args("evaluate --run r --data t --split all --json o.json".split())
    assert (a.split, a.json) == ("all", "o.json")
    a = p.parse_args("predict --run r a.nii.gz b.nii.gz --out p.csv".split())
    assert a.files == ["a.nii.gz", "b.nii.gz"]
    a = p.parse_args("synth --out d --n 5 --seed 2 --check".split())
    assert (a.n, a.seed, a.check) == (5, 2, True)
    for cmd in ("compare", "course"):
        assert cmd in p._subparsers._group_actions[0].choices


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
    argv = ["train", *base, "--out", str(run), "--position", "none", "--pooling", "max"]
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["position"] is None and saved["model"]["pooling"] == "max"
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
    argv += ["--inits", "scratch", "--positions", "none,learned", "--poolings", "mean"]
    assert main(argv + ["--seeds", "0,1"]) == 0
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 4 and set(res["seed"]) == {0, 1}
    assert {"mae", "baseline_mae", "init", "position", "pooling"} <= set(res.columns)
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 2 and (summ["n_seeds"] == 2).all() and (summ["seeds"] == "0;1").all()
    assert {"mae_mean", "mae_sd", "baseline_mae_mean"} <= set(summ.columns)
    assert (out / "compare.png").stat().st_size > 1000
