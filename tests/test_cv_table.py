"""benchmarks/cv_table.py: only complete arms enter the README's CV table, an arm in two files is
refused, and every paired difference has the sign of "row arm minus reference"."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cv_table  # noqa: E402  (benchmarks/cv_table.py)

from slicelib.cv import summarise_oof  # noqa: E402


def _oof(arm, noise, n=20, folds=(0, 1), seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i:02d}" for i in range(n)]
    age = np.linspace(20, 80, n)
    rows = pd.DataFrame(dict(participant_id=ids, fold=[i % 2 for i in range(n)], arm=arm, seed=0,
                             prediction=age + rng.normal(0, noise, n), target=age))  # fmt: skip
    return rows[rows["fold"].isin(folds)]


def _write(tmp_path, name, df):
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    return path


def test_incomplete_arms_are_left_out_and_an_arm_in_two_files_is_refused(tmp_path):
    folds = _write(tmp_path, "folds", _oof("x", 1)[["participant_id", "fold"]])
    folds = folds.rename(folds.with_suffix(".tsv"))
    pd.read_csv(folds).to_csv(folds, sep="\t", index=False)
    a = _write(tmp_path, "a", pd.concat([_oof("good", 1), _oof("half", 1, folds=(0,))]))
    b = _write(tmp_path, "b", _oof("other", 5))
    out = cv_table.combined([a, b], folds)
    assert sorted(set(out["arm"])) == ["good", "other"]
    with pytest.raises(ValueError, match="good"):
        cv_table.combined([a, a], folds)


def test_paired_differences_read_row_minus_reference():
    oof = pd.concat([_oof("good", 1, seed=1), _oof("bad", 8, seed=2)])
    summary, paired = summarise_oof(oof, n_boot=200)
    lines = cv_table.table(summary, paired, ["good", "bad"])
    bad = next(line for line in lines if line.startswith("| bad"))
    good = next(line for line in lines if line.startswith("| good"))
    assert bad.split(" | ")[3].startswith("+") and good.split(" | ")[4].startswith("-")
    assert good.split(" | ")[3] == "-" and bad.split(" | ")[4].rstrip(" |") == "-"


def test_a_renamed_file_and_an_ensemble_enter_the_table(tmp_path):
    folds = tmp_path / "folds.tsv"
    _oof("x", 1)[["participant_id", "fold"]].to_csv(folds, sep="\t", index=False)
    a = _write(tmp_path, "a", pd.concat([_oof("good", 1, seed=1), _oof("ref", 3, seed=3)]))
    b = _write(tmp_path, "b", _oof("good", 2, seed=2))  # the same arm, run again
    out = cv_table.combined([a, f"{b}@_again"], folds)
    assert sorted(set(out["arm"])) == ["good", "good_again", "ref"]
    cv_table.main(
        ["--oof", str(a), f"{b}@_again", "--folds", str(folds), "--out", str(tmp_path / "t"),
         "--reference", "ref", "--n-boot", "50", "--ensemble", "both=good+good_again"]
    )  # fmt: skip
    summary = pd.read_csv(tmp_path / "t" / "summary.csv").set_index("arm")
    assert set(summary.index) == {"good", "good_again", "ref", "both"}
    ga, gb = (out[out.arm == arm].set_index("participant_id") for arm in ("good", "good_again"))
    mean = (ga["prediction"] + gb["prediction"]) / 2
    assert np.isclose(summary.loc["both", "mae"], (mean - ga["target"]).abs().mean(), atol=5e-3)
    assert "| both |" in (tmp_path / "t" / "table.md").read_text()
    with pytest.raises(SystemExit, match="NAME=ARM"):
        cv_table.main(["--oof", str(a), "--folds", str(folds), "--out", str(tmp_path / "u"),
                       "--reference", "ref", "--ensemble", "both=good"])  # fmt: skip


def test_a_file_can_give_only_some_of_its_arms(tmp_path):
    folds = tmp_path / "folds.tsv"
    _oof("x", 1)[["participant_id", "fold"]].to_csv(folds, sep="\t", index=False)
    a = _write(tmp_path, "a", pd.concat([_oof("good", 1, seed=1), _oof("old", 3, seed=3)]))
    b = _write(tmp_path, "b", pd.concat([_oof("good", 2, seed=2), _oof("old", 4, seed=4)]))
    out = cv_table.combined([f"{a}=good", f"{b}=old@_new"], folds)  # "old" of a left out
    assert sorted(set(out["arm"])) == ["good", "old_new"]
    assert len(out) == 40
    with pytest.raises(ValueError, match="no arm 'gone'"):
        cv_table.combined([f"{a}=good,gone"], folds)
