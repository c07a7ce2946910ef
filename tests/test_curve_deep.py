"""benchmarks/curve_deep.py: a trained arm's learning-curve points are trained on the ids of
subsets.json (handed to ``slicelib compare --train-ids``), their rows pass
:func:`slicelib.curves.read_extra`, and --constant-steps scales epochs and patience."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import curve_deep  # noqa: E402  (benchmarks/curve_deep.py)

from slicelib import curves  # noqa: E402
from slicelib.crossval import read_train_ids  # noqa: E402


def _setup(tmp_path):
    ids = [f"s{i:02d}" for i in range(20)]
    folds = pd.DataFrame(dict(participant_id=ids, fold=[i % 2 for i in range(20)]))
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    age = dict(zip(ids, np.linspace(20, 80, 20)))
    subsets = {}  # as curves.learning_curve writes them: the full set once, under seed 0
    for k in (0, 1):
        train = folds.loc[folds["fold"] != k, "participant_id"].tolist()
        for s in (0, 1):
            nested = curves.nested_subsets(train, [age[i] for i in train], (0.5, 1.0), s)
            subsets.update(
                {f"fold{k}/seed{s}/{f:g}": v for f, v in nested.items() if f < 1 or s == 0}
            )
    (tmp_path / "subsets.json").write_text(json.dumps(subsets))
    return folds, age, subsets


def test_points_train_on_the_subsets_ids_and_their_rows_are_curve_rows(tmp_path, monkeypatch):
    folds, age, subsets = _setup(tmp_path)
    calls = []

    def fake_run(cmd, check, cwd):  # what `slicelib compare --folds --train-ids` would write
        calls.append(cmd)
        given = read_train_ids(cmd[cmd.index("--train-ids") + 1])
        out = Path(cmd[cmd.index("--out") + 1])
        rows = [dict(participant_id=i, fold=f, arm="finetune_imagenet", seed=0,
                     prediction=np.mean([age[j] for j in given[f]]), target=age[i])
                for i, f in zip(folds["participant_id"], folds["fold"])]  # fmt: skip
        pd.DataFrame(rows).to_csv(out / "oof.csv", index=False)

    monkeypatch.setattr(curve_deep.subprocess, "run", fake_run)
    rows = tmp_path / "rows.csv"
    args = ["--folds", str(tmp_path / "folds.tsv"), "--subsets", str(tmp_path / "subsets.json")]
    args += ["--fractions", "0.5", "--subset-seed", "1", "--work", str(tmp_path / "w")]
    args += ["--rows", str(rows), "--constant-steps", "--", "--epochs", "12", "--patience", "5"]
    curve_deep.main(args)
    (cmd,) = calls
    assert cmd[cmd.index("--epochs") + 1] == "24" and cmd[cmd.index("--patience") + 1] == "10"
    given = read_train_ids(cmd[cmd.index("--train-ids") + 1])
    assert given == {k: subsets[f"fold{k}/seed1/0.5"] for k in (0, 1)}
    back = curves.read_extra(rows, folds, subsets)  # the points and sizes of subsets.json
    assert len(back) == 20 and set(back["n_train"]) == {5} and set(back["subset_seed"]) == {1}
    for f, g in back.groupby("fold"):  # each fold's prediction came from its own subset
        assert np.allclose(g["prediction"], np.mean([age[j] for j in given[f]]))
    curve_deep.main(args)  # rerun: the arm's rows at 0.5 are replaced, not doubled
    assert len(pd.read_csv(rows)) == 20


def test_the_full_point_is_every_training_subject():
    subsets = {"fold0/seed0/0.5": ["a"], "fold0/seed0/1": ["a", "b"], "fold0/seed1/0.5": ["b"]}
    assert curve_deep.point_ids(subsets, 1.0, 1) == {0: ["a", "b"]}
    assert curve_deep.point_ids(subsets, 0.5, 1) == {0: ["b"]}
    assert curve_deep.scaled_flags(["--epochs", "12", "--lr", "1e-3"], 0.25) == [
        "--epochs", "48", "--lr", "1e-3"
    ]  # fmt: skip
