"""Participant tables, subject splits and the public datasets (IXI heads, OASIS-1).

A *table* is a DataFrame with one row per subject: ``participant_id`` (str), ``path`` (absolute
path of the subject's T1 NIfTI), the target column (float: years, or 0/1 labels) and any other
columns. :func:`read_table` builds and validates one from a BIDS folder, a ``.tsv``/``.csv``
file or a DataFrame; :class:`slicelib.data.VolumeDataset` and ``slicelib train`` read it.

Public data:

- :func:`ixi_table`: 142 real IXI heads (2 mm, Hammersmith site; 138 with ages), from a local
  copy found by :func:`ixi_dir`; :func:`fetch_ixi` downloads the same files (checksummed, with
  pooch) for users with internet.
- :func:`fetch_oasis`: OASIS-1 grey-matter maps with age and a dementia label, via nilearn.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from slicelib.data import DataError, PreprocessConfig, _is_image
from slicelib.derivative import (  # the shipped data/ixi_hh_4mm derivative
    IXI_DERIVATIVE_PREPROCESS,
    ixi_derivative,
    ixi_derivative_rois,
)
from slicelib.utils import atomic_write

__all__ = [
    "read_table",
    "split_subjects",
    "ixi_dir",
    "ixi_table",
    "fetch_ixi",
    "fetch_oasis",
    "ixi_derivative",
    "ixi_derivative_rois",
    "IXI_DERIVATIVE_PREPROCESS",
]

# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

_PATH_COLUMNS = ("path", "file", "filename", "image", "t1w", "t1", "nifti")


def _find_bids_t1w(root: Path, pid: str) -> list[Path]:
    sub = pid if pid.startswith("sub-") else f"sub-{pid}"
    hits = sorted(root.glob(f"{sub}/anat/*_T1w.nii*")) + sorted(
        root.glob(f"{sub}/ses-*/anat/*_T1w.nii*")
    )
    return [h for h in hits if _is_image(h)]


def read_table(
    table_or_bids_dir: str | os.PathLike | pd.DataFrame,
    target: str | None,
    path_column: str | None = None,
    id_column: str = "participant_id",
    check_files: bool = True,
) -> pd.DataFrame:
    """Read and validate a participants table.

    Args:
        table_or_bids_dir: a BIDS folder (``participants.tsv`` + ``sub-*/anat/*_T1w.nii[.gz]``,
            first session's T1w if there are several), a ``.tsv``/``.csv`` file with a path
            column (paths relative to the table's folder), or a DataFrame (paths relative to
            the current folder).
        target: column to predict (numeric: years, or 0/1 labels), or None.
        path_column: column holding image paths; default the first of "path", "file",
            "filename", "image", "t1w", "t1", "nifti" present.
        id_column: subject id column (renamed to ``participant_id``).
        check_files: raise if an image file is missing.

    Returns:
        DataFrame with ``participant_id`` (str), ``path`` (absolute str), the ``target`` column
        (float) and the table's other columns; one row per subject, table order.

    Raises:
        DataError naming the table and row: missing target/id/path column, missing or
        non-numeric target, duplicated subject id, missing image file, no T1w in a BIDS folder.
    """
    if isinstance(table_or_bids_dir, pd.DataFrame):
        df, base, tname = table_or_bids_dir.copy(), Path.cwd(), "<DataFrame>"
        bids = False
    else:
        src = Path(table_or_bids_dir)
        bids = src.is_dir()
        tfile = src / "participants.tsv" if bids else src
        tname = str(tfile)
        if not tfile.is_file():
            raise DataError(
                f"{tname}: table not found. Give a participants.tsv/.csv file or a BIDS "
                "folder containing participants.tsv."
            )
        sep = "," if tfile.suffix.lower() == ".csv" else "\t"
        try:
            df = pd.read_csv(tfile, sep=sep, dtype={id_column: str})
        except Exception as e:
            raise DataError(
                f"{tname}: cannot be parsed as a {'CSV' if sep == ',' else 'TSV'} table ({e})."
            ) from e
        base = tfile.parent
    if id_column not in df.columns:
        raise DataError(
            f"{tname}: no subject id column {id_column!r}; columns are {list(df.columns)}. "
            "Pass id_column=... ."
        )
    df = df.rename(columns={id_column: "participant_id"})
    df["participant_id"] = df["participant_id"].astype(str).str.strip()
    bad_id = df["participant_id"].isin(["", "nan", "None"])
    if bad_id.any():
        row = int(np.flatnonzero(bad_id)[0])
        raise DataError(f"{tname}: row {row + 2} (line) has an empty {id_column!r}; fill it in.")
    dup = df["participant_id"].duplicated(keep=False)
    if dup.any():
        ids = sorted(set(df.loc[dup, "participant_id"]))
        rows = [int(i) + 2 for i in np.flatnonzero(dup)]
        raise DataError(
            f"{tname}: duplicated subject ids {ids[:5]} (lines {rows[:10]}); each subject "
            "must appear once. Remove repeats or keep one scan per subject."
        )
    if target is not None:
        if target not in df.columns:
            raise DataError(
                f"{tname}: no target column {target!r}; columns are "
                f"{[c for c in df.columns]}. Pass an existing column as target."
            )
        numeric = pd.to_numeric(df[target], errors="coerce")
        missing = df[target].isna() | df[target].astype(str).str.strip().isin(
            ["", "n/a", "NA", "nan"]
        )
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{tname}: target {target!r} is missing for {int(missing.sum())} subject(s), "
                f"first {df['participant_id'].iloc[i]!r} (line {i + 2}). Drop these rows or "
                "fill in the values."
            )
        nonnum = numeric.isna()
        if nonnum.any():
            i = int(np.flatnonzero(nonnum)[0])
            raise DataError(
                f"{tname}: target {target!r} is not numeric for subject "
                f"{df['participant_id'].iloc[i]!r} (line {i + 2}): {df[target].iloc[i]!r}. "
                "Use numbers (years, or 0/1 for classes; e.g. map 'CN'->0, 'AD'->1)."
            )
        if not np.all(np.isfinite(numeric.to_numpy(dtype=float))):
            raise DataError(f"{tname}: target {target!r} contains inf values; fix them.")
        df[target] = numeric.astype(float)
    if bids and path_column is None:
        paths = []
        for i, pid in enumerate(df["participant_id"]):
            hits = _find_bids_t1w(base, pid)
            if not hits:
                raise DataError(
                    f"{tname}: subject {pid!r} (line {i + 2}) has no "
                    f"{pid}/anat/*_T1w.nii[.gz] under {base}; add it or drop the row."
                )
            paths.append(str(hits[0].resolve()))
        df["path"] = paths
    else:
        if path_column is None:
            found = [c for c in df.columns if c.lower() in _PATH_COLUMNS]
            if not found:
                raise DataError(
                    f"{tname}: no image path column (looked for {list(_PATH_COLUMNS)}); "
                    f"columns are {list(df.columns)}. Pass path_column=... ."
                )
            path_column = found[0]
        if path_column not in df.columns:
            raise DataError(
                f"{tname}: no path column {path_column!r}; columns are {list(df.columns)}."
            )
        paths = []
        for i, (pid, p) in enumerate(zip(df["participant_id"], df[path_column])):
            if not isinstance(p, str) or not p.strip():
                raise DataError(
                    f"{tname}: subject {pid!r} (line {i + 2}) has an empty path; fill it in."
                )
            q = Path(p.strip()).expanduser()
            q = q if q.is_absolute() else base / q
            paths.append(str(q.resolve()))
        if path_column != "path":
            df = df.drop(columns=["path"], errors="ignore")
        df = df.drop(columns=[path_column]).assign(path=paths)
    if check_files:
        for i, (pid, p) in enumerate(zip(df["participant_id"], df["path"])):
            if not Path(p).is_file():
                raise DataError(
                    f"{tname}: image for subject {pid!r} (line {i + 2}) not found: {p}. "
                    "Fix the path (relative paths are relative to the table) or drop the row."
                )
    cols = ["participant_id", "path"] + ([target] if target is not None else [])
    return df[cols + [c for c in df.columns if c not in cols]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# IXI heads (ixi_hh_2mm)
# --------------------------------------------------------------------------------------------

#: Files, checksums and demographics of the 142 heads (written by data/make_ixi_registry.py).
IXI_REGISTRY = Path(__file__).with_name("ixi_hh_2mm_registry.tsv")
_NICHART = (
    "https://raw.githubusercontent.com/CBICA/NiChart_Project/"
    "c40d6a136adb03b03ac67203fdabd6716c9b4197/test_data/processed/IXI"
)
#: Local folder -> NiChart folder (the labels' folder name is from NiChart's history).
_REMOTE_FOLDER = {"t1": "t1", "brain_labels": "DLMUSE"}
_IXI_NAME = "ixi_hh_2mm"


def _data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Download folder: ``data_home``, else ``$SLICELIB_DATA``, else ``pooch.os_cache("slicelib")``."""
    if data_home is not None:
        return Path(data_home).expanduser()
    if os.environ.get("SLICELIB_DATA"):
        return Path(os.environ["SLICELIB_DATA"]).expanduser()
    import pooch

    return Path(pooch.os_cache("slicelib"))


def _ixi_candidates() -> list[tuple[str, Path]]:
    """Where a local copy of the IXI heads may be, in the order :func:`ixi_dir` looks."""
    out = []
    if os.environ.get("SLICELIB_IXI_DIR"):
        out.append(("$SLICELIB_IXI_DIR", Path(os.environ["SLICELIB_IXI_DIR"]).expanduser()))
    if os.environ.get("SLICELIB_SHARED"):
        shared = Path(os.environ["SLICELIB_SHARED"]).expanduser()
        out.append(("$SLICELIB_SHARED", shared / "data" / _IXI_NAME))
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / _IXI_NAME
    out.append(("beside the checkout", beside))
    out.append(("download cache", _data_home() / _IXI_NAME))
    return out


def ixi_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder of the IXI heads (holding ``participants.tsv``, ``t1/``, ``brain_labels/``).

    Looks in order at: ``root``; ``$SLICELIB_IXI_DIR``; ``$SLICELIB_SHARED/data/ixi_hh_2mm``;
    ``shared/data/ixi_hh_2mm`` beside the checkout; the download folder of :func:`fetch_ixi`
    (``$SLICELIB_DATA/ixi_hh_2mm``, default ``pooch.os_cache("slicelib")/ixi_hh_2mm``).
    A folder given by ``root`` or ``$SLICELIB_IXI_DIR`` must exist.

    Raises:
        DataError: no copy found; the message lists the places and says how to get one.
    """
    explicit = [("root", Path(root).expanduser())] if root is not None else []
    candidates = explicit + _ixi_candidates()
    for where, folder in candidates:
        if (folder / "participants.tsv").is_file():
            return folder
        if where in ("root", "$SLICELIB_IXI_DIR"):
            raise DataError(
                f"{folder} (from {where}) has no participants.tsv; give the ixi_hh_2mm folder "
                "itself (participants.tsv, t1/, brain_labels/)."
            )
    looked = "\n".join(f"  {where}: {folder}" for where, folder in candidates)
    raise DataError(
        f"no local copy of the IXI heads (ixi_hh_2mm) found; looked in:\n{looked}\n"
        "Download them once with slicelib.datasets.fetch_ixi() (needs internet, about 90 MB), "
        "or point at a copy with ixi_table(root=...) or $SLICELIB_IXI_DIR=<folder>."
    )


def ixi_table(
    root: str | os.PathLike | None = None,
    target: str | None = "age",
    demographics: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Table of IXI heads, target ``age`` (years), with absolute paths.

    Args:
        root: a folder holding ``participants.tsv`` with a path column (``t1`` as in
            ``shared/data/ixi_hh_2mm``, or ``path`` as in ``shared/data/ixi10``); default
            :func:`ixi_dir`'s search. A folder of raw ``IXI<nnn>-*-T1*.nii[.gz]`` files without
            a table needs ``demographics``: the IXI spreadsheet saved as CSV/TSV (columns
            ``IXI_ID`` and ``AGE``).
        target: subjects without a value of this column are left out, with a warning naming
            them (4 of the 142 ixi_hh_2mm heads have no age); None keeps every subject.

    Returns:
        :func:`read_table` output: participant_id, path (absolute), age (float years), sex,
        brain_labels (absolute, when present), ...; ``table.attrs["excluded"]`` lists the ids
        left out. Save it with ``table.to_csv("ixi.tsv", sep="\t", index=False)`` to train on
        it (``slicelib train --data ixi.tsv --target age``).
    """
    if root is not None and demographics is not None:
        return _ixi_from_spreadsheet(Path(root), Path(demographics))
    folder = ixi_dir(root)
    tsv = folder / "participants.tsv"
    df = pd.read_csv(tsv, sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
    path_column = "path" if "path" in df.columns else "t1"
    for column in (path_column, "brain_labels"):
        if column in df.columns:
            df[column] = [str((folder / p).resolve()) for p in df[column]]
    excluded: list[str] = []
    if target is not None and target in df.columns:
        missing = df[target].isna()
        excluded = df.loc[missing, "participant_id"].tolist()
        if excluded:
            warnings.warn(
                f"{tsv}: {len(excluded)} subjects have no {target!r} and are left out: "
                f"{', '.join(excluded)}.",
                stacklevel=2,
            )
        df = df[~missing]
    table = read_table(df, target, path_column=path_column)
    table.attrs["excluded"] = excluded
    return table


def _ixi_from_spreadsheet(folder: Path, demographics: Path) -> pd.DataFrame:
    """Table of raw IXI T1 files in ``folder`` with ages from the IXI spreadsheet (CSV/TSV)."""
    files = sorted(f for f in folder.glob("IXI*-T1*.nii*") if _is_image(f))
    if not files:
        raise DataError(f"{folder}: no IXI*-T1*.nii[.gz] files found.")
    sep = "," if demographics.suffix.lower() == ".csv" else "\t"
    demo = pd.read_csv(demographics, sep=sep)
    demo.columns = [str(c).strip().upper() for c in demo.columns]
    if "IXI_ID" not in demo.columns or "AGE" not in demo.columns:
        raise DataError(f"{demographics}: needs columns IXI_ID and AGE; has {list(demo.columns)}.")
    demo = demo.dropna(subset=["AGE"]).drop_duplicates("IXI_ID")
    ages = dict(zip(demo["IXI_ID"].astype(int), demo["AGE"].astype(float)))
    rows = []
    for f in files:
        m = re.match(r"IXI(\d{3})", f.name)
        if m and int(m.group(1)) in ages:
            pid = f.name.split("-T1")[0]
            rows.append(
                {"participant_id": pid, "path": str(f.resolve()), "age": ages[int(m.group(1))]}
            )
    if not rows:
        raise DataError(
            f"{folder}: none of the {len(files)} IXI files has an age in {demographics}."
        )
    return read_table(pd.DataFrame(rows), "age")


def fetch_ixi(
    data_home: str | os.PathLike | None = None,
    labels: bool = False,
    target: str | None = "age",
    progress: bool = False,
) -> pd.DataFrame:
    """Download the 142 IXI heads (about 80 MB; labels 10 MB more) once, checksummed, with pooch.

    Files come from the CBICA NiChart repository at a fixed commit (see :data:`IXI_REGISTRY`)
    and are checked against their SHA256; files already there are not downloaded again. The
    folder, ``<data_home>/ixi_hh_2mm`` (``data_home``: argument, else ``$SLICELIB_DATA``, else
    ``pooch.os_cache("slicelib")``), gets the layout of ``shared/data/ixi_hh_2mm``: ``t1/``,
    ``brain_labels/`` (with ``labels=True``) and ``participants.tsv``.

    Returns:
        :func:`ixi_table` of that folder (``target`` as there).

    Raises:
        DataError: a download failed (e.g. offline) or a checksum did not match; the message
            says how to use a local copy instead.
    """
    import pooch

    folder = _data_home(data_home) / _IXI_NAME
    reg = pd.read_csv(IXI_REGISTRY, sep="\t", comment="#", dtype=str, keep_default_na=False)
    columns = ["t1", "brain_labels"] if labels else ["t1"]
    files = {name: digest for c in columns for name, digest in zip(reg[c], reg[f"{c}_sha256"])}
    urls = {
        name: f"{_NICHART}/{_REMOTE_FOLDER[name.split('/')[0]]}/{name.split('/', 1)[1]}"
        for name in files
    }
    pup = pooch.create(
        path=folder,
        base_url=f"{_NICHART}/",
        registry={n: f"sha256:{d}" for n, d in files.items()},
        urls=urls,
    )
    for name in files:
        try:
            pup.fetch(name, progressbar=progress)
        except Exception as e:  # requests' ConnectionError/HTTPError, checksum ValueError
            raise DataError(
                f"fetch_ixi: {urls[name]} could not be downloaded to {folder} "
                f"({type(e).__name__}: {e}). Without internet, point slicelib at a local copy "
                "of ixi_hh_2mm (participants.tsv, t1/, brain_labels/): ixi_table(root=<folder>) "
                "or set $SLICELIB_IXI_DIR=<folder>; or copy the files into "
                f"{folder} and call fetch_ixi() again (it checks them and skips the download)."
            ) from e
    keep = ["participant_id", "age", "sex"] + columns
    atomic_write(
        folder / "participants.tsv", lambda tmp: reg[keep].to_csv(tmp, sep="\t", index=False)
    )
    return ixi_table(folder, target=target)


def fetch_oasis(
    data_dir: str | os.PathLike | None = None,
    n_subjects: int | None = None,
    dartel_version: bool = True,
) -> pd.DataFrame:
    """OASIS-1 VBM grey-matter maps with age and dementia labels, via ``nilearn.datasets.fetch_oasis_vbm``.

    The images are modulated grey-matter density maps already normalised to MNI space (not
    raw T1), so preprocess them with ``PreprocessConfig(method="resample")`` (also stored in
    ``table.attrs["preprocess"]``). Downloads ~800 MB on first use (OASIS data usage
    agreement applies).

    Args:
        data_dir: nilearn data folder (the files go to ``<data_dir>/oasis1``); default
            nilearn's (``$NILEARN_DATA`` or ``~/nilearn_data``).
        n_subjects: first n subjects (None = all 403 DARTEL / 415 SPM subjects).
        dartel_version: DARTEL-normalised maps (nilearn default) or standard SPM8.

    Returns:
        DataFrame: participant_id (e.g. "OAS1_0001_MR1"), path (grey-matter map), age (years),
        sex ("F"/"M"), mmse (float, NaN if not assessed), cdr (float, NaN if not assessed),
        dementia (int 0/1: 1 if CDR > 0; subjects without a CDR, mostly under 60, are 0),
        plus the other ext_vars columns (educ, ses, etiv, nwbv, asf, ...).

    Raises:
        DataError: the download failed (e.g. offline). The message says where to put the files.
    """
    from nilearn.datasets import fetch_oasis_vbm

    try:
        bunch = fetch_oasis_vbm(
            n_subjects=n_subjects, dartel_version=dartel_version, data_dir=data_dir, verbose=0
        )
    except Exception as e:
        where = Path(data_dir) / "oasis1" if data_dir is not None else "<nilearn data dir>/oasis1"
        raise DataError(
            f"OASIS-1 could not be fetched ({type(e).__name__}: {e}). Without internet, copy an "
            f"existing download to {where} (folders OAS1_xxxx_MR1/ with the mwrc1*.nii.gz maps, "
            "plus oasis_cross-sectional.csv and data_usage_agreement.txt) and call "
            "fetch_oasis(data_dir=<that parent folder>), or set $NILEARN_DATA to it."
        ) from e
    ext = bunch.ext_vars.copy()
    ids = [
        "OAS1" + Path(p).name.split("OAS1", 1)[1][:9] for p in bunch.gray_matter_maps
    ]  # "OAS1_0001_MR1"
    path_of = dict(zip(ids, bunch.gray_matter_maps))
    ext = ext[ext["id"].isin(path_of)].copy()
    ext["path"] = [str(Path(path_of[i]).resolve()) for i in ext["id"]]
    ext = ext.rename(columns={"id": "participant_id", "mf": "sex"})
    ext["cdr"] = pd.to_numeric(ext["cdr"], errors="coerce")
    ext["mmse"] = pd.to_numeric(ext["mmse"], errors="coerce")
    ext["dementia"] = (ext["cdr"] > 0).astype(int)
    cols = ["participant_id", "path", "age", "sex", "mmse", "cdr", "dementia"]
    table = read_table(
        ext[cols + [c for c in ext.columns if c not in cols]], "age", path_column="path"
    )
    table.attrs["preprocess"] = PreprocessConfig(method="resample").to_dict()
    return table


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


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
