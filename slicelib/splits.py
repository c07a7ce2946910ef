"""Subject-level splits: every scan of a subject falls in one part (a split by slice or by scan
would leak the subject's anatomy from training into testing).

:func:`split_subjects` gives a stratified, seeded train/val(/test) split of a participant table
(:func:`slicelib.datasets.read_table`); the fixed cross-validation folds of the shipped IXI
derivative come from :func:`make_folds` (age x sex strata, scikit-learn
``StratifiedKFold``); :mod:`slicelib.cv` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from slicelib.errors import DataError

__all__ = ["split_subjects", "make_folds"]


def split_subjects(
    table: pd.DataFrame,
    target: str | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: bool = True,
    n_bins: int = 5,
) -> dict[str, list[str]]:
    """Seeded subject-level train/val/test split, stratified by class or by target quantile bins.

    Two ``sklearn.model_selection.train_test_split(stratify=...)`` calls: test from all
    subjects, then val from the rest. Strata: the target's values if it has at most 10
    distinct values (class labels), else ``n_bins`` quantile bins (e.g. age bins). When a
    stratum is too small for sklearn (fewer than 2 subjects, or more strata than subjects in
    a split), it is merged with its neighbour (the adjacent class or bin) until the split works.

    Args:
        table: DataFrame with ``participant_id`` (unique) and the target column.
        target: column to stratify by (None or ``stratify=False``: plain seeded shuffle).
        fractions: (train, val, test) fractions summing to 1 (a 2-tuple gives train/test);
            the val and test sizes are ``round(fraction * n)``.
        seed: random_state; the same table and seed give the same split.
        n_bins: quantile bins for a continuous target.

    Returns:
        dict ``train``/``val``/``test`` -> participant ids in table order (disjoint, covering
        the table).
    """
    fr = [float(f) for f in fractions]
    if len(fr) == 2:
        fr = [fr[0], 0.0, fr[1]]
    if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}"
        )
    if "participant_id" not in table.columns:
        raise DataError("split_subjects: the table has no participant_id column; use read_table().")
    ids = table["participant_id"].astype(str).to_numpy()
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(
            f"split_subjects: duplicated subject ids {sorted(set(ids[dup]))[:5]}; split needs "
            "one row per subject."
        )
    strata = None
    if stratify and target is not None:
        strata = _strata(table, target, n_bins)
    n = len(ids)
    n_test, n_val = round(fr[2] * n), round(fr[1] * n)
    rest, test = _split_off(np.arange(n), n_test, strata, seed)
    train, val = _split_off(rest, n_val, strata, seed)
    return {
        k: [str(ids[i]) for i in sorted(v)]
        for k, v in (("train", train), ("val", val), ("test", test))
    }


def _strata(table: pd.DataFrame, target: str, n_bins: int) -> np.ndarray:
    """Stratum code per row, (N,) int: class index (<= 10 distinct values) or quantile bin."""
    if target not in table.columns:
        raise DataError(
            f"split_subjects: no target column {target!r}; columns {list(table.columns)}."
        )
    y = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
    if np.isnan(y).any():
        raise DataError(f"split_subjects: target {target!r} has missing/non-numeric values.")
    classes = np.unique(y)
    if len(classes) <= 10:
        return np.searchsorted(classes, y)
    edges = np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def _split_off(rows: np.ndarray, size: int, strata: np.ndarray | None, seed: int):
    """(kept, taken): ``size`` of ``rows`` taken by a stratified ``train_test_split``."""
    from sklearn.model_selection import train_test_split

    if size <= 0:
        return rows, rows[:0]
    if size >= len(rows):
        return rows[:0], rows
    codes = None if strata is None else strata[rows]
    while True:
        if codes is not None and len(np.unique(codes)) < 2:
            codes = None
        try:
            return train_test_split(rows, test_size=size, random_state=seed, stratify=codes)
        except ValueError:
            if codes is None:
                raise
            codes = _merge_smallest(codes)


def _merge_smallest(codes: np.ndarray) -> np.ndarray:
    """Merge the smallest stratum into its smaller neighbour (strata are ordered codes)."""
    values, counts = np.unique(codes, return_counts=True)
    k = int(np.argmin(counts))
    if k == 0:
        other = 1
    elif k == len(values) - 1:
        other = k - 1
    else:
        other = k - 1 if counts[k - 1] <= counts[k + 1] else k + 1
    return np.where(codes == values[k], values[other], codes)


def make_folds(
    table: pd.DataFrame, n_folds: int = 5, seed: int = 0, n_age_bins: int = 5, age: str = "age",
    sex: str = "sex",
) -> pd.DataFrame:  # fmt: skip
    """Subject-level folds stratified by age bins crossed with sex.

    Subjects with a missing age are left out (unlabelled). The stratum of a subject is its age
    quantile bin (``n_age_bins`` bins over the labelled subjects) crossed with its sex; a
    stratum with fewer than ``n_folds`` subjects is merged into the neighbouring age bin of the
    same sex until every stratum has at least ``n_folds`` (or one bin is left).
    ``sklearn.model_selection.StratifiedKFold(n_folds, shuffle=True, random_state=seed)``
    assigns the folds: the same table and seed give the same folds.

    Args: ``table``: one row per subject with ``participant_id``, ``age`` (years), ``sex``;
    ``n_folds`` (>= 2); ``seed``; ``n_age_bins`` before merging; ``age``, ``sex``: column names.
    Returns: DataFrame ``participant_id``, ``fold`` (0 .. n_folds-1), ``age``, ``sex`` of the
    labelled subjects, sorted by participant_id.
    """
    from sklearn.model_selection import StratifiedKFold

    for col in ("participant_id", age, sex):
        if col not in table.columns:
            raise DataError(f"make_folds: no column {col!r}; columns are {list(table.columns)}")
    ids = table["participant_id"].astype(str)
    if ids.duplicated().any():
        raise DataError(
            f"make_folds: duplicated participant_id {sorted(set(ids[ids.duplicated()]))[:5]}; "
            "folds need one row per subject"
        )
    ages = pd.to_numeric(table[age], errors="coerce")
    bad = table[ages.isna() & table[age].notna()]
    if len(bad):
        raise DataError(
            f"make_folds: non-numeric {age!r} {bad[age].tolist()[:3]} for "
            f"{bad['participant_id'].tolist()[:3]}; fix or blank those cells"
        )
    df = pd.DataFrame({"participant_id": ids, "age": ages, "sex": table[sex].astype(str)})
    df = df[df["age"].notna()].sort_values("participant_id").reset_index(drop=True)
    if len(df) < n_folds * 2:
        raise DataError(f"make_folds: {len(df)} labelled subjects are too few for {n_folds} folds")
    edges = np.quantile(df["age"], np.linspace(0, 1, n_age_bins + 1)[1:-1])
    bins = np.searchsorted(edges, df["age"].to_numpy(), side="right")  # (N,) 0 .. n_age_bins-1
    for s in df["sex"].unique():  # merge a small bin into its neighbour, within one sex
        rows = (df["sex"] == s).to_numpy()
        while True:
            values, counts = np.unique(bins[rows], return_counts=True)
            if len(values) < 2 or counts.min() >= n_folds:
                break
            k = int(np.argmin(counts))
            other = values[k + 1] if k == 0 else values[k - 1]
            bins[rows & (bins == values[k])] = other
    strata = df["sex"] + "_" + pd.Series(bins).astype(str)
    df["fold"] = -1
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(len(df)), strata)):
        df.loc[test, "fold"] = k
    return df[["participant_id", "fold", "age", "sex"]]
