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
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torchio as tio

from slicelib.cache import content_hash, default_cache_dir
from slicelib.errors import ConfigError
from slicelib.utils import atomic_write

__all__ = ["AUGMENT_VERSION", "COPY_SEP", "augmentation", "augment_image", "copy_of"]
__all__ += ["training_copies"]

AUGMENT_VERSION = "1"  # bump when augmentation() changes: it is part of every copy's file name
COPY_SEP = "~aug"  # participant id of copy k: f"{id}{COPY_SEP}{k}"


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
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ConfigError(f"augment: a 3D image is needed, got shape {data.shape}")
    if not np.isfinite(data).all() or data.min() < 0:
        raise ConfigError(
            f"augment: intensities must be finite and >= 0 (min {np.nanmin(data):g}); augment "
            "the stored scan or derivative, not a z-scored array"
        )
    subject = tio.Subject(
        t1=tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=img.affine)
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out = augmentation()(subject)["t1"].data[0].numpy().astype(np.float32)  # (X, Y, Z)
    inside = data > 0
    floor = 1e-3 * float(data.max()) if inside.any() else 0.0
    out = np.where(inside, np.maximum(out, floor), 0.0).astype(np.float32)
    copy = nib.Nifti1Image(out, img.affine)
    for code in ("sform", "qform"):  # keep the space the header declares (e.g. MNI)
        _, c = getattr(img, f"get_{code}")(coded=True)
        getattr(copy, f"set_{code}")(img.affine, code=int(c or 0))
    return copy


def copy_of(participant_id: str) -> str | None:
    """The subject a copy id (``<id>~aug<k>``) was made from; None for an original id."""
    pid = str(participant_id)
    return pid.rsplit(COPY_SEP, 1)[0] if COPY_SEP in pid else None


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
