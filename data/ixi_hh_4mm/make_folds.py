"""Write folds.tsv: 5 subject-level cross-validation folds of the labelled subjects.

Stratified by age (quantile bins) crossed with sex, seeded (``slicelib.cv.make_folds``:
scikit-learn ``StratifiedKFold``); the same participants.tsv and seed give the same file.

    python data/ixi_hh_4mm/make_folds.py --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from slicelib.cv import make_folds
from slicelib.utils import atomic_write

HERE = Path(__file__).resolve().parent


def main(argv=None) -> Path:
    """Read participants.tsv, write folds.tsv (participant_id, fold, age, sex); return its path."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="StratifiedKFold's shuffle seed")
    ap.add_argument("--folds", type=int, default=5, help="number of folds")
    ap.add_argument("--age-bins", type=int, default=5, help="age quantile bins (x sex)")
    ap.add_argument("--participants", default=HERE / "participants.tsv", type=Path)
    ap.add_argument("--out", default=HERE / "folds.tsv", type=Path)
    a = ap.parse_args(argv)
    table = pd.read_csv(a.participants, sep="\t", dtype={"participant_id": str})
    folds = make_folds(table, n_folds=a.folds, seed=a.seed, n_age_bins=a.age_bins)
    atomic_write(a.out, lambda tmp: folds.to_csv(tmp, sep="\t", index=False))
    summary = folds.groupby("fold").agg(
        n=("age", "size"), mean_age=("age", "mean"), female=("sex", lambda s: (s == "F").mean())
    )
    print(f"{a.out}: {len(folds)} subjects\n{summary.round(2).to_string()}")
    return a.out


if __name__ == "__main__":
    main()
