"""Participant tables and the public datasets (IXI heads, the shipped IXI data, OASIS-1).

A *table* is a DataFrame with one row per subject: ``participant_id`` (str), ``path`` (absolute
path of the subject's T1 NIfTI), the target column (float: years, or 0/1 labels) and any other
columns. :func:`read_table` builds and validates one from a BIDS folder, a ``.tsv``/``.csv``
file or a DataFrame; :class:`slicelib.cache.VolumeDataset` and ``slicelib train`` read it.

Public data:

- :func:`ixi_table`: 142 real IXI heads (2 mm, Hammersmith site; 138 with ages), from a local
  copy found by :func:`ixi_dir`; :func:`fetch_ixi` downloads the same files (checksummed, with
  pooch) for users with internet.
- :func:`ixi_derivative`: the shipped ``data/ixi_hh_4mm`` derivative (138 IXI heads as
  registered brains on the 4 mm MNI grid) and :func:`ixi_derivative_rois` its DLMUSE volumes.
- :func:`fetch_oasis`: OASIS-1 grey-matter maps with age and a dementia label, via nilearn.

Downloads go to :func:`data_home` (``$SLICELIB_DATA``, else ``pooch.os_cache("slicelib")``).
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from slicelib.data import PreprocessConfig
from slicelib.errors import DataError
from slicelib.io import is_image
from slicelib.utils import atomic_write

__all__ = [
    "read_table",
    "data_home",
    "ixi_dir",
    "ixi_table",
    "fetch_ixi",
    "fetch_oasis",
    "ixi_derivative",
    "ixi_derivative_rois",
    "IXI_DERIVATIVE_PREPROCESS",
    "derivative_dir",
    "shipped_dir",
    "shipped_results",
    "ixi_demo_heads",
    "write_brain",
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
    return [h for h in hits if is_image(h)]


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
        checks = (  # (rows that fail, what is wrong, what to do), the first failing row named
            (missing, f"is missing for {int(missing.sum())} subject(s), first", "Drop these "
             "rows or fill in the values."),
            (numeric.isna(), "is not numeric for subject", "Use numbers (years, or 0/1 for "
             "classes; e.g. map 'CN'->0, 'AD'->1)."),
        )  # fmt: skip
        for bad, problem, fix in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                value = "" if bad is missing else f": {df[target].iloc[i]!r}"
                raise DataError(
                    f"{tname}: target {target!r} {problem} {df['participant_id'].iloc[i]!r} "
                    f"(line {i + 2}){value}. {fix}"
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


def data_home(root: str | os.PathLike | None = None) -> Path:
    """slicelib's data folder (downloads, generated cohorts): ``root`` if given, else
    ``$SLICELIB_DATA``, else ``pooch.os_cache("slicelib")`` (``~/.cache/slicelib`` on Linux).

    The one default for ``$SLICELIB_DATA``; the folder is not created here.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("SLICELIB_DATA"):
        return Path(os.environ["SLICELIB_DATA"]).expanduser()
    import pooch

    return Path(pooch.os_cache("slicelib"))


_data_home = data_home  # for fetch_ixi, whose argument data_home hides the function


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
    out.append(("download cache", data_home() / _IXI_NAME))
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
    files = sorted(f for f in folder.glob("IXI*-T1*.nii*") if is_image(f))
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
# the shipped derivative data/ixi_hh_4mm: 138 IXI heads as registered brains
# --------------------------------------------------------------------------------------------
# ``brains/<participant_id>.nii.gz``: run_pipeline's brain on the 4 mm MNI grid (45 x 54 x 45,
# sform/qform code 4, background exactly 0, int16 with a scale: :func:`write_brain`);
# ``participants.tsv`` (path, age, sex, QC) and ``roi_volumes.csv`` (DLMUSE volumes); see
# data/ixi_hh_4mm/README.md.

#: The preprocessing that trains on the derivative: its own 4 mm grid, so the files pass
#: through unchanged. Method "register": the derivative's files declare MNI and are only
#: resampled, while a raw head given to ``predict`` later goes through the same pipeline that
#: made the derivative (method "resample" would resample a raw head in its scanner coordinates).
IXI_DERIVATIVE_PREPROCESS: dict = {
    "method": "register",
    "volume_shape": [45, 54, 45],
    "voxel_size": 4.0,
}


#: Where the shipped data folders are: a checkout's ``data/`` beside the package, else the
#: installed wheel's package data ``slicelib/_data`` (pyproject.toml maps one onto the other).
_SHIPPED = (Path(__file__).resolve().parents[1] / "data", Path(__file__).resolve().parent / "_data")


def shipped_dir(name: str) -> Path:
    """A data folder that ships with slicelib: ``"ixi_hh_4mm"`` (the 4 mm derivative) or
    ``"ixi_demo"`` (two raw heads). The checkout's ``data/<name>`` if there, else the installed
    wheel's ``slicelib/_data/<name>``. Raises DataError naming both places if neither exists."""
    for root in _SHIPPED:
        if (root / name / "participants.tsv").is_file():
            return root / name
    raise DataError(
        f"the shipped data folder {name!r} is in neither {_SHIPPED[0]} (a checkout) nor "
        f"{_SHIPPED[1]} (an installed wheel). Reinstall slicelib from its wheel or a clone "
        "(pip install slicelib, or pip install -e . in the repository)."
    )


#: Where the shipped benchmark results are: a checkout's ``benchmarks/results/``, else the wheel's
#: ``slicelib/_results`` (the small CSVs only; pyproject.toml maps one onto the other).
_RESULTS = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "results",
    Path(__file__).resolve().parent / "_results",
)


def shipped_results(name: str) -> Path:
    """A folder of shipped benchmark results, e.g. ``"ixi_cv_frozen"`` (the 5-fold CV on the
    shipped IXI derivative: ``summary.csv``, ``paired.csv``, ``oof.csv``): the checkout's
    ``benchmarks/results/<name>`` if there, else the installed wheel's ``slicelib/_results/<name>``.
    Raises DataError naming both places if neither exists."""
    for root in _RESULTS:
        if (root / name).is_dir() and any((root / name).glob("*.csv")):
            return root / name
    raise DataError(
        f"the shipped results {name!r} are in neither {_RESULTS[0]} (a checkout) nor "
        f"{_RESULTS[1]} (an installed wheel). Reinstall slicelib from its wheel or a clone."
    )


def derivative_dir(root: str | os.PathLike | None = None) -> Path:
    """The derivative folder: ``root``, else ``$SLICELIB_IXI_DERIVATIVE``, else the shipped
    ``ixi_hh_4mm`` (:func:`shipped_dir`: a checkout's or the installed wheel's). Raises
    DataError saying where it looked."""
    given = root or os.environ.get("SLICELIB_IXI_DERIVATIVE")
    folder = Path(given) if given else shipped_dir("ixi_hh_4mm")
    if not (folder / "participants.tsv").is_file():
        raise DataError(
            f"{folder}: no participants.tsv; the ixi_hh_4mm derivative is not there. Pass "
            "root=... or set SLICELIB_IXI_DERIVATIVE to a copy of data/ixi_hh_4mm (or write it "
            "with python data/ixi_hh_4mm/make_derivative.py)."
        )
    return folder


def ixi_demo_heads() -> pd.DataFrame:
    """The two raw IXI heads that ship with slicelib (``data/ixi_demo``: 2 mm, not
    skull-stripped, not registered; CC BY-SA 3.0, see its README) with their DLMUSE labels.

    Returns:
        DataFrame, one row per head: ``participant_id``, ``age`` (years), ``sex``, ``path``
        (absolute path of the raw T1 .nii.gz) and ``brain_labels`` (absolute path of the DLMUSE
        parcellation in the same voxel grid; label > 0 is brain).
    """
    folder = shipped_dir("ixi_demo")
    table = pd.read_csv(folder / "participants.tsv", sep="\t", dtype={"participant_id": str})
    table["path"] = [str(folder / p) for p in table.pop("t1")]
    table["brain_labels"] = [str(folder / p) for p in table["brain_labels"]]
    return table


def ixi_derivative(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The derivative's participants table (:func:`slicelib.datasets.read_table`).

    Returns:
        DataFrame, one row per subject: ``participant_id``, ``path`` (absolute, .nii.gz),
        ``age`` (years), ``sex``, ``qc`` (ok / flagged), ``qc_reasons`` and the QC measures.
    """
    table = read_table(derivative_dir(root) / "participants.tsv", target="age")
    table.attrs["preprocess"] = dict(IXI_DERIVATIVE_PREPROCESS)
    return table


def ixi_derivative_rois(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """DLMUSE regional volumes (mm^3), indexed by ``participant_id``, one column per region
    label (the input of the ridge baseline: ``evaluate_run(..., baseline_features=...)``)."""
    rois = pd.read_csv(derivative_dir(root) / "roi_volumes.csv", dtype={"MRID": str})
    return rois.rename(columns={"MRID": "participant_id"}).set_index("participant_id")


def write_brain(path: str | os.PathLike, array: np.ndarray, mask: np.ndarray, affine) -> None:
    """Write a pipeline output as a skull-stripped MNI brain (int16 with a scale factor).

    Args:
        array: (X, Y, Z) z-scored brain, background ``-mean/std`` (``PipelineResult.array``;
            float16 copies are fine). mask: (X, Y, Z) bool brain mask. affine: (4, 4) grid.

    The stored intensity is ``array - background`` inside the mask (> 0; at least one int16
    step) and exactly 0 outside, so z-scoring the non-zero voxels gives ``array`` back.
    sform and qform code 4 (MNI152).
    """
    array = np.asarray(array, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    background = float(np.median(array[~mask])) if (~mask).any() else float(array.min())
    values = np.where(mask, array - background, 0.0)
    slope = max(float(values.max()), 1e-6) / 32000.0
    ints = np.where(mask, np.maximum(np.round(values / slope), 1), 0).astype(np.int16)
    img = nib.Nifti1Image(ints, np.asarray(affine, dtype=float))
    img.header.set_slope_inter(slope, 0.0)
    img.set_sform(img.affine, code=4)
    img.set_qform(img.affine, code=4)
    raw = img.to_bytes()
    data = gzip.compress(raw, mtime=0) if str(path).endswith(".gz") else raw
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
