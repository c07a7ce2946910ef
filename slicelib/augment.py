"""Training augmentation: TorchIO-transformed copies of the training heads, stored as files.

A model that has seen each head only as one scanner and one pipeline stored it learns that
storage's contrast and sharpness as if they were anatomy: the consistency benchmark
(``benchmarks/consistency.py``) shows the same head predicted 10-15 years apart after a gamma of
its intensities or with thick slices. The usual lever is to train on heads re-stored in such
ways, with the same label. Here every training head gets ``n_copies`` copies, each drawn from
:func:`augmentation` (TorchIO: a random gamma, a smooth multiplicative bias field, thick slices
along a random axis), written as NIfTI files with the source's header and then preprocessed,
cached and encoded like any other file. Copies as files (not on-the-fly transforms) suit the
frozen-encoder heads (each copy is encoded once) and keep a run repeatable: copy ``k`` of a head
is a function of the image, the seed and ``k`` only.

Voxels that are exactly 0 in the source (the background of a skull-stripped or registered
brain, such as the shipped derivative) stay 0 in the copy, so a brain mask ``data > 0`` is kept.

The copies' participant ids are ``<id>~aug<k>`` (:func:`copy_of` reads them back); a copy
belongs to its subject's split, so it never reaches validation or test.
"""

from __future__ import annotations

import gzip
import hashlib
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torchio as tio

from slicelib.cache import content_hash, default_cache_dir
from slicelib.datasets import read_table
from slicelib.errors import ConfigError, DataError
from slicelib.utils import atomic_write

__all__ = [
    "AUGMENT_VERSION",
    "SCAN_AUGMENT_VERSION",
    "COPY_SEP",
    "SCAN_COPY_SEP",
    "augmentation",
    "augment_image",
]
__all__ += ["copy_of"]
__all__ += ["training_copies", "scan_augmentation", "augment_scan", "premade_copies"]

AUGMENT_VERSION = "1"  # bump when augmentation() changes: it is part of every copy's file name
SCAN_AUGMENT_VERSION = "1"  # bump when scan_augmentation() changes (it seeds the raw-scan copies)
COPY_SEP = "~aug"  # participant id of copy k: f"{id}{COPY_SEP}{k}"
SCAN_COPY_SEP = "~scan"  # participant id of raw-scan copy k (pre-made): f"{id}{SCAN_COPY_SEP}{k}"


def augmentation() -> tio.Compose:
    """The TorchIO transform a training copy is drawn from.

    - ``RandomGamma(log_gamma=(-0.4, 0.4))`` (gamma 0.67-1.49, p 0.8): the grey/white contrast
      of another sequence or scanner setting;
    - ``RandomBiasField(coefficients=0.5, order=3)`` (p 0.5): a smooth multiplicative field
      left by another coil or bias correction (TorchIO's default law);
    - ``RandomAnisotropy(downsampling=(1.25, 2))`` along a random axis (p 0.5): thick slices
      (5-8 mm on the 4 mm grid), down- then up-sampled linearly.

    The ranges cover the forms of the consistency benchmark (gamma 0.7 and 1.4, a bias field of
    the same law, 5.5 mm slices), which is what a user meets; see docs/results.md for what
    they cost or gain in cross-validated accuracy.
    """
    return tio.Compose(
        [
            tio.RandomGamma(log_gamma=(-0.4, 0.4), p=0.8),
            tio.RandomBiasField(coefficients=0.5, order=3, p=0.5),
            tio.RandomAnisotropy(axes=(0, 1, 2), downsampling=(1.25, 2.0), p=0.5),
        ]
    )


def _draw(transform: tio.Transform, data: np.ndarray, affine: np.ndarray, seed: int) -> np.ndarray:
    """``transform`` applied to ``data`` (X, Y, Z) with ``torch`` seed ``seed`` (float32)."""
    subject = tio.Subject(t1=tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=affine))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return transform(subject)["t1"].data[0].numpy().astype(np.float32)  # (X, Y, Z)


def _intensities(img, what: str) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ConfigError(f"{what}: a 3D image is needed, got shape {data.shape}")
    if not np.isfinite(data).all() or data.min() < 0:
        raise ConfigError(
            f"{what}: intensities must be finite and >= 0 (min {np.nanmin(data):g}); augment "
            "the stored scan or derivative, not a z-scored array"
        )
    return data


def _image_like(data: np.ndarray, img) -> nib.Nifti1Image:
    copy = nib.Nifti1Image(data.astype(np.float32), img.affine)
    for code in ("sform", "qform"):  # keep the space the header declares (e.g. MNI)
        _, c = getattr(img, f"get_{code}")(coded=True)
        getattr(copy, f"set_{code}")(img.affine, code=int(c or 0))
    return copy


def augment_image(img: nib.spatialimages.SpatialImage, seed: int) -> nib.Nifti1Image:
    """One augmented copy of an image: :func:`augmentation` drawn with ``torch`` seed ``seed``.

    Args:
        img: a 3D image (any intensity unit; negative values are refused: a gamma needs
            intensities >= 0).
        seed: the draw; the same image and seed give the same copy.

    Returns:
        float32 NIfTI image on the same grid (shape (X, Y, Z), same affine); voxels that are 0
        in ``img`` are 0, the others > 0.
    """
    data = _intensities(img, "augment")
    out = _draw(augmentation(), data, img.affine, seed)
    inside = data > 0
    floor = 1e-3 * float(data.max()) if inside.any() else 0.0
    return _image_like(np.where(inside, np.maximum(out, floor), 0.0), img)


def scan_augmentation() -> tio.Compose:
    """The TorchIO transform a raw-scan copy (:func:`augment_scan`) is drawn from.

    Copies of the preprocessed heads (:func:`augmentation`) change intensities on the model's
    grid, after brain extraction and registration. A scan stored with thick slices also
    changes what comes before: its brain mask and its registration (on IXI heads each of the
    three moved a frozen read-out's prediction by up to 6 to 14 years; docs/results.md). A
    raw-scan copy is re-stored before the pipeline and then preprocessed like any scan:

    - thick slices (p 0.8) along a random voxel axis: a Gaussian slice profile (TorchIO
      ``RandomBlur``, sigma 1.5-3 mm along that axis only, i.e. FWHM 3.5-7 mm) and a 2-3.5 x
      coarser sampling (``RandomAnisotropy``: 4-7 mm on a 2 mm scan), back on the scan's grid;
    - ``RandomGamma(log_gamma=(-0.4, 0.4))`` (p 0.5) and ``RandomBiasField(0.5, order=3)``
      (p 0.5), as in :func:`augmentation`.
    """

    def thick(axis: int) -> tio.Compose:
        std = [0.0] * 6
        std[2 * axis : 2 * axis + 2] = [1.5, 3.0]  # mm, along ``axis`` only
        return tio.Compose(
            [tio.RandomBlur(std=tuple(std)), tio.RandomAnisotropy(axes=axis, downsampling=(2, 3.5))]
        )

    return tio.Compose(
        [
            tio.OneOf({thick(0): 1.0, thick(1): 1.0, thick(2): 1.0}, p=0.8),
            tio.RandomGamma(log_gamma=(-0.4, 0.4), p=0.5),
            tio.RandomBiasField(coefficients=0.5, order=3, p=0.5),
        ]
    )


def augment_scan(img: nib.spatialimages.SpatialImage, seed: int) -> nib.Nifti1Image:
    """One raw-scan copy: :func:`scan_augmentation` drawn with ``torch`` seed ``seed``.

    Args:
        img: a raw 3D scan (head or brain; any intensity unit >= 0).
        seed: the draw; the same scan and seed give the same copy.

    Returns:
        float32 NIfTI image on the scan's grid (shape (X, Y, Z), same affine and codes),
        intensities >= 0; to be preprocessed (``slicelib.pipeline``) like any scan.
    """
    data = _intensities(img, "augment_scan")
    out = _draw(scan_augmentation(), data, img.affine, seed)
    return _image_like(np.maximum(out, 0.0), img)


def copy_of(participant_id: str) -> str | None:
    """The subject a copy id (``<id>~aug<k>`` or ``<id>~scan<k>``) was made from; None for an
    original id."""
    pid = str(participant_id)
    for sep in (COPY_SEP, SCAN_COPY_SEP):
        if sep in pid:
            return pid.rsplit(sep, 1)[0]
    return None


def training_copies(
    table: pd.DataFrame, n_copies: int, seed: int = 0, cache_dir=None, path_column: str = "path"
) -> pd.DataFrame:
    """``n_copies`` augmented copies of every head of a table, written once, as table rows.

    Copy ``k`` of a head is :func:`augment_image` with a seed drawn from (``seed``, the
    image's content hash, ``k``), stored as ``<cache_dir>/augmented/<key>.nii.gz`` (written
    atomically; an existing file is reused, so a rerun or a resumed run costs nothing).

    Args:
        table: rows with ``participant_id`` and ``path_column`` (and any label columns, copied).
        n_copies: copies per head (0: an empty table).
        seed: the augmentation seed (a run's ``seed``).
        cache_dir: default :func:`slicelib.cache.default_cache_dir`.

    Returns:
        DataFrame with the columns of ``table``: ``participant_id`` ``<id>~aug<k>``,
        ``path_column`` the copy's file, the other columns those of the source row.
    """
    if n_copies < 0:
        raise ConfigError(f"augment = {n_copies}: the number of copies per head must be >= 0")
    if n_copies == 0:  # (an empty frame of other dtypes would turn a concat's columns to object)
        return table.iloc[:0].copy()
    cache_dir = Path(cache_dir or default_cache_dir())
    folder = cache_dir / "augmented"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in table.to_dict("records"):
        source = str(row[path_column])
        content = content_hash(source, cache_dir)  # memoised: no decoding of a known scan
        for k in range(n_copies):
            key = hashlib.sha1(f"{AUGMENT_VERSION}/{seed}/{content}/{k}".encode()).hexdigest()
            target = folder / f"{key[:24]}.nii.gz"
            if not target.is_file():
                copy = augment_image(nib.load(source), int(key[:8], 16))
                data = gzip.compress(copy.to_bytes(), compresslevel=6)  # a .nii.gz file
                atomic_write(target, lambda tmp, b=data: tmp.write_bytes(b))
            rows.append({**row, "participant_id": f"{row['participant_id']}{COPY_SEP}{k}",
                         path_column: str(target)})  # fmt: skip
    return pd.DataFrame(rows, columns=table.columns).astype(table.dtypes.to_dict())


def premade_copies(
    table: pd.DataFrame, copies: str | Path | None, path_column: str = "path"
) -> pd.DataFrame:
    """The rows of a table of pre-made copies whose subject is in ``table``, as table rows.

    Pre-made copies are scans made from each head before training and stored with their own
    participants table (``data/ixi_hh_4mm/make_derivative.py --copies N --out DIR`` writes
    ``DIR/participants.tsv``: raw-scan copies, :func:`augment_scan`, preprocessed by the
    pipeline). A copy ``<id>~aug<k>`` joins training only when ``<id>`` is a row of ``table``
    (the training subjects), with that row's label and other columns; copies of other subjects
    are left out, so a copy never reaches validation or test. Copies QC flagged (``qc``
    column not ``ok``) are left out and counted in a warning.

    Args:
        table: the training rows (``participant_id``, ``path_column``, labels...).
        copies: path of the copies' table (tsv/csv, paths relative to its folder), or None.

    Returns:
        DataFrame with the columns of ``table``: ``participant_id`` the copy's id,
        ``path_column`` its file; empty when ``copies`` is None.

    Raises:
        DataError naming the table and row: an id that is not a copy id, a missing file.
    """
    if not copies:
        return table.iloc[:0].copy()
    rows = read_table(copies, target=None)
    bad = [i for i, p in enumerate(rows["participant_id"]) if SCAN_COPY_SEP not in str(p)]
    if bad:
        raise DataError(
            f"{copies}: row {bad[0]} has participant_id {rows['participant_id'].iat[bad[0]]!r}, "
            f"not a raw-scan copy id '<id>{SCAN_COPY_SEP}<k>'; give the participants.tsv that "
            "make_derivative.py --copies wrote"
        )
    if "qc" in rows.columns:
        flagged = rows["qc"].astype(str) != "ok"
        if flagged.any():
            warnings.warn(
                f"{copies}: {int(flagged.sum())} QC-flagged copies left out of training "
                f"(e.g. {rows.loc[flagged, 'participant_id'].iat[0]})",
                stacklevel=2,
            )
        rows = rows[~flagged]
    source = table.set_index(table["participant_id"].astype(str), drop=False)
    out = []
    for pid, path in zip(rows["participant_id"], rows["path"]):
        subject = copy_of(pid)
        if subject in source.index:
            out.append({**source.loc[subject].to_dict(), "participant_id": pid, path_column: path})
    return pd.DataFrame(out, columns=table.columns).astype(table.dtypes.to_dict())
