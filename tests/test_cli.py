"""The slicelib command line, run in-process through slicelib.cli.main (tiny data, 1 epoch)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from tiny_data import VOXEL, make_table

from slicelib.cli import build_parser, main


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """12 tiny NIfTI volumes (tiny_data.make_table) and a one-epoch tiny.toml beside them."""
    folder = tmp_path_factory.mktemp("cli")
    make_table(folder, n=12, seed=1)
    (folder / "tiny.toml").write_text(
        "epochs = 1\nbatch_size = 4\nlr = 1e-3\n"
        f'cache_dir = "{folder / "cache"}"\n'
        '[model]\nbackbone = "slice_cnn"\nembed_dim = 8\n'
        '[preprocess]\nvolume_shape = [16, 20, 16]\nvoxel_size = 8.0\nmethod = "resample"\n'
    )
    return folder / "participants.tsv"


pytestmark = pytest.mark.usefixtures("one_thread")


def _options(parser, command: str) -> set[str]:
    sub = parser._subparsers._group_actions[0].choices[command]
    return {o for action in sub._actions for o in action.option_strings}


def test_train_and_compare_share_one_vocabulary():
    p = build_parser()
    train, compare = _options(p, "train"), _options(p, "compare")
    assert train <= compare, f"compare lacks {sorted(train - compare)}"
    # compare-only: what a grid or a cross-validation needs (--train-ids: with --folds only)
    assert compare - train == {"--eval-split", "--folds", "--train-ids"}
    assert {"--weights", "--position", "--norm", "--pooling", "--axes", "--seed"} <= train


def test_train_ids_without_folds_is_refused(capsys):
    from slicelib import cli

    args = "compare --data t.tsv --target age --out o --train-ids ids.tsv".split()
    assert cli.main(args) == 2
    assert "--train-ids" in capsys.readouterr().err


def test_every_command_speaks_one_vocabulary():
    p = build_parser()
    opts = {c: _options(p, c) for c in ("train", "compare", "predict", "qc", "evaluate")}
    assert all("--out" in o for o in opts.values())  # where the outputs go
    # every command that preprocesses scans takes --jobs
    assert all("--jobs" in opts[c] for c in ("train", "compare", "predict", "qc", "evaluate"))
    assert all("--run" in opts[c] for c in ("predict", "evaluate"))
    assert all("--data" in opts[c] for c in ("train", "compare", "evaluate"))
    assert all("--cache-dir" in opts[c] for c in ("train", "compare"))
    assert all("--no-progress" in o for o in opts.values())
    old = p.parse_args("evaluate --run r --json m.json".split())  # the old spelling still works
    assert old.out == "m.json"
    assert p.parse_args("train --out r --jobs 4".split()).jobs == 4
    for bad in ("train --out r --jobs 0", "predict --run r x.nii --jobs two"):
        with pytest.raises(SystemExit):
            p.parse_args(bad.split())


def test_evaluate_jobs_reach_evaluate_run(monkeypatch, capsys):
    """``slicelib evaluate --jobs N`` preprocesses new scans with N workers (default: the run's)."""
    from slicelib import cli

    seen = []

    def fake(run, **kw):
        seen.append(kw["jobs"])
        return dict(split="test", n=1, checkpoint_epoch=0)

    monkeypatch.setattr(cli, "evaluate_run", fake)
    assert main("evaluate --run r --jobs 3 --no-progress".split()) == 0
    assert main("evaluate --run r --no-progress".split()) == 0
    assert seen == [3, None]
    with pytest.raises(SystemExit):
        main("evaluate --run r --jobs 0".split())


def test_choices_come_from_the_library():
    """The flags offer what the library defines: one table each, no copies in the CLI."""
    from slicelib import cli, config, data, model

    p = build_parser()
    train = p._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices}
    assert choices["position"] == model.POSITIONS and choices["norm"] == model.NORMS
    assert choices["pooling"] == model.POOLINGS and choices["method"] == data.METHODS
    assert choices["preset"] == tuple(config.PRESETS)
    a = p.parse_args(f"train --out r --method {data.METHODS[-1]}".split())
    assert cli._overrides(a)["preprocess"] == {"method": data.METHODS[-1]}


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
    # --freeze-encoder [yes|no] and --lr: one value in train, a list in compare
    assert p.parse_args("train --out r --freeze-encoder --lr 1e-3".split()).freeze_encoder == "yes"
    assert p.parse_args("train --out r --freeze-encoder no".split()).freeze_encoder == "no"
    assert p.parse_args("train --out r".split()).freeze_encoder is None
    a = p.parse_args("compare --out r --freeze-encoder --lr 1e-4,1e-3".split())
    assert a.freeze_encoder == ["yes"] and a.lr == [1e-4, 1e-3]
    assert p.parse_args("compare --out r --freeze-encoder no,yes".split()).freeze_encoder == [
        "no",
        "yes",
    ]
    bad_lines = ["compare --out r --position learned,diagonal", "train --out r --norm batch"]
    bad_lines += ["train --out r --freeze-encoder maybe", "compare --out r --lr 1e-3,fast"]
    for bad in bad_lines:
        with pytest.raises(SystemExit):
            p.parse_args(bad.split())


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
    assert main(argv + ["--pooling", "max", "--qc", "off"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["qc"] == "off"  # the toy spheres are QC-flagged: trained on silently
    assert saved["model"]["position"] == "none" and saved["model"]["pooling"] == "max"
    assert saved["model"]["norm"] == "slice"
    assert saved["preprocess"]["voxel_size"] == VOXEL  # preprocessing saved with the run
    assert (run / "split.csv").is_file() and (run / "train_config.yaml").is_file()

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--split", "all", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 12 and "mae" in res and "baseline_mae" in res
    # --baseline-features: a table keyed by its first column (MRID, as roi_volumes.csv)
    ids = pd.read_csv(table, sep="\t")["participant_id"].astype(str)
    feats = pd.DataFrame({"MRID": ids, "a": np.arange(1.0, len(ids) + 1), "b": 7.0})
    feats.to_csv(tmp_path / "rois.csv", index=False)
    argv = ["evaluate", "--run", str(run), "--split", "test", "--out", str(out)]
    assert main(argv + ["--baseline-features", str(tmp_path / "rois.csv")]) == 0
    res = json.loads(out.read_text())
    assert "log of 2 columns" in res["ridge_features"] and res["ridge_mae"] >= 0
    assert "ridge mae" in capsys.readouterr().out

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b broken")
    good = str(table.parent / "sub-000.nii.gz")
    csv = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), good, str(bad), "--out", str(csv)]) == 1
    err = capsys.readouterr().err
    assert "bad.nii.gz" in err
    df = pd.read_csv(csv, keep_default_na=False)
    assert len(df) == 2 and df.loc[0, "error"] == "" and "bad.nii.gz" in df.loc[1, "error"]
    assert df.loc[0, "qc"] == "flagged" and df.loc[0, "prediction"] == ""  # a toy sphere
    assert float(df.loc[0, "prediction_unreliable"]) > 0

    # an ensemble: --run twice, the mean of the two runs' predictions
    run2 = tmp_path / "run2"
    argv = ["train", *base, "--out", str(run2), "--position", "none", "--norm", "slice"]
    assert main(argv + ["--pooling", "max", "--qc", "off", "--seed", "1"]) == 0
    csv2, ens = tmp_path / "pred2.csv", tmp_path / "ens.csv"
    assert main(["predict", "--run", str(run2), good, "--out", str(csv2)]) == 0
    argv = ["predict", "--run", str(run), "--run", str(run2), good, str(bad), "--out", str(ens)]
    assert main(argv) == 1
    one, two = (float(pd.read_csv(c)["prediction_unreliable"].iat[0]) for c in (csv, csv2))
    df = pd.read_csv(ens, keep_default_na=False)
    assert (
        df.loc[0, "n_runs"] == 2 and df.loc[0, "qc"] == "flagged" and df.loc[0, "prediction"] == ""
    )
    assert float(df.loc[0, "prediction_unreliable"]) == pytest.approx((one + two) / 2)
    assert float(df.loc[0, "prediction_sd"]) == pytest.approx(abs(one - two) / 2**0.5)
    assert "bad.nii.gz" in df.loc[1, "error"] and df.loc[1, "prediction_unreliable"] == ""


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


def test_compare_command_passes_the_grid_to_slicelib_compare(table, monkeypatch, capsys):
    """The command line only parses: the grid, lrs, seeds and base config reach compare()."""
    from slicelib import compare as C

    seen = {}

    def fake(base, grid, **kw):
        seen.update(base=base, grid=grid, **kw)
        summary = pd.DataFrame([dict(dict.fromkeys(C.ARM_FLAGS, "x"), lr="1", status="ok")])
        return pd.DataFrame(), summary

    monkeypatch.setattr(C, "compare", fake)
    argv = "compare --data d --target age --out root --backbone slice_cnn,sfcn_3d --weights "
    argv += "imagenet,none --freeze-encoder no,yes --seed 0,1 --lr 1e-4,1e-3 --patience 0 --jobs 3"
    argv += " --qc exclude"
    assert main(argv.split() + ["--config", str(table.parent / "tiny.toml"), "--no-progress"]) == 0
    assert seen["grid"] == dict(  # --position not given: compare's default grid
        backbone=["slice_cnn", "sfcn_3d"],
        weights=["imagenet", "none"],
        position=["learned", "sinusoidal", "none"],
        freeze_encoder=["no", "yes"],
    )
    assert seen["lrs"] == [1e-4, 1e-3] and seen["seeds"] == [0, 1] and seen["out"] == "root"
    assert seen["eval_split"] == "test" and seen["progress"] is False
    base = seen["base"]  # the config file and the plain flags; no grid flag in it
    assert base.model == {"backbone": "slice_cnn", "embed_dim": 8} and base.lr == 1e-3
    assert base.patience is None and base.jobs == 3 and base.freeze_encoder is False
    assert base.qc == "exclude"
    assert "wrote root/results.csv" in capsys.readouterr().out


def test_train_freeze_encoder_flag_reaches_the_run(table, tmp_path):
    run = tmp_path / "frozen"
    argv = ["train", "--data", str(table), "--target", "age", "--out", str(run), "--no-progress"]
    assert main(argv + ["--config", str(table.parent / "tiny.toml"), "--freeze-encoder"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["freeze_encoder"] is True


def _shared_heads() -> Path | None:
    import os

    for root in (os.environ.get("SLICELIB_SHARED"), "/work/shared"):
        folder = Path(root or "/nonexistent") / "data" / "ixi_hh_2mm" / "t1"
        if folder.is_dir() and any(folder.glob("*.nii.gz")):
            return folder
    return None


def _constant_image(folder: Path) -> Path:
    from slicelib.data import target_affine

    path = folder / "constant.nii.gz"
    img = nib.Nifti1Image(np.full((40, 48, 40), 7.0, np.float32), target_affine((40, 48, 40), 4.0))
    nib.save(img, path)
    return path


def test_qc_command_arguments_and_a_constant_image(tmp_path, capsys):
    pytest.importorskip("slicelib.qc")
    for bad in (["qc", "--out", str(tmp_path)], ["qc", "x.nii.gz", "--out", "o", "--jobs", "0"]):
        with pytest.raises(SystemExit) as err:
            main(bad)
        assert err.value.code == 2
    const = _constant_image(tmp_path)
    out = tmp_path / "qc"
    assert main(["qc", str(const), "--out", str(out), "--no-progress", "--no-figures"]) == 0
    df = pd.read_csv(out / "qc.csv", keep_default_na=False)
    assert list(df["path"]) == [str(const)] and df.loc[0, "status"] in ("error", "flagged")
    assert df.loc[0, "reasons"]  # says why
    printed = capsys.readouterr().out
    assert "ok       0 of 1" in printed and "constant.nii.gz" in printed


@pytest.mark.slow
def test_qc_passes_a_real_head_and_flags_a_constant_image(tmp_path, capsys):
    """One shared IXI head (brain extraction + registration: tens of seconds on 2 cores)."""
    pytest.importorskip("slicelib.qc")
    heads = _shared_heads()
    if heads is None:
        pytest.skip("no shared IXI heads ($SLICELIB_SHARED/data/ixi_hh_2mm or /work/shared)")
    head, const = sorted(heads.glob("*.nii.gz"))[0], _constant_image(tmp_path)
    out = tmp_path / "qc"
    assert main(["qc", str(head), str(const), "--out", str(out), "--no-progress"]) == 0
    df = pd.read_csv(out / "qc.csv", keep_default_na=False).set_index("path")
    assert df.loc[str(head), "status"] == "ok", df.loc[str(head), "reasons"]
    assert df.loc[str(const), "status"] in ("error", "flagged")
    assert len(list(out.glob("*.png"))) >= 1
    assert "ok       1 of 2" in capsys.readouterr().out


@pytest.mark.parametrize("backbone", ["sfcn_3d", "densenet121_3d"])
def test_3d_backbones_train_and_evaluate_through_the_cli(backbone, table, tmp_path):
    if backbone == "densenet121_3d":
        pytest.importorskip("monai")
    side = [16, 20, 16] if backbone == "sfcn_3d" else [29, 29, 29]  # DenseNet: >= 29 a side
    cfg = tmp_path / "volume.toml"
    cfg.write_text(
        "epochs = 1\nbatch_size = 4\nlr = 1e-3\n"
        f'cache_dir = "{table.parent / "cache"}"\n'
        f'[preprocess]\nvolume_shape = {side}\nvoxel_size = 8.0\nmethod = "resample"\n'
    )
    run, out = tmp_path / backbone, tmp_path / "eval.json"
    argv = ["train", "--data", str(table), "--target", "age", "--config", str(cfg)]
    assert main([*argv, "--backbone", backbone, "--out", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["backbone"] == backbone and "embed_dim" not in saved["model"]
    assert main(["evaluate", "--run", str(run), "--split", "test", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] > 0 and np.isfinite(res["mae"]) and np.isfinite(res["baseline_mae"])
