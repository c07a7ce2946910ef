"""Tiny synthetic training data shared by the training, compare, frozen, CLI and course tests.

16 x 20 x 16 volumes of 8 mm whose inner sphere shrinks with age, plus an optional 'ad' lesion,
and a matching small training config for the paper's scratch slice CNN.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

SHAPE, VOXEL = (16, 20, 16), 8.0


def make_table(folder: Path, n: int = 16, seed: int = 0, all_ad: int | None = None) -> Path:
    """Write n tiny NIfTI volumes whose inner sphere shrinks with age (+ an 'ad' lesion).

    Returns the participants.tsv path (columns participant_id, age [years], ad [0/1], path).
    """
    from slicelib.data import target_affine

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    X, Y, Z = np.meshgrid(*[np.arange(s) - s / 2 for s in SHAPE], indexing="ij")
    r2 = X**2 + Y**2 + Z**2
    rows = []
    for i in range(n):
        age = float(rng.uniform(20, 90))
        ad = int(i % 3 == 0) if all_ad is None else all_ad
        r = 6.5 - 2.5 * (age - 20) / 70
        vol = 100.0 * (r2 < 49) + 80.0 * (r2 < r**2) - 40.0 * ad * (np.abs(X - 3) < 2) * (r2 < 49)
        vol = vol + rng.normal(0, 5, SHAPE) * (vol > 0)
        p = folder / f"sub-{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.float32), target_affine(SHAPE, VOXEL)), p)
        rows.append(dict(participant_id=f"sub-{i:03d}", age=round(age, 1), ad=ad, path=p.name))
    table = folder / "participants.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return table


def tiny_config(tmp: Path, **over) -> dict:
    d = dict(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        patience=None,
        qc="off",  # toy spheres, not T1 brains: QC would flag (and warn about) every one
        cache_dir=str(tmp / "cache"),
        model=dict(backbone="slice_cnn", embed_dim=8),
        preprocess=dict(volume_shape=list(SHAPE), voxel_size=VOXEL, method="resample"),
    )
    d.update(over)
    return d


def write_toml(path: Path, d: dict) -> Path:
    lines = []
    for k, v in d.items():
        if v is not None and not isinstance(v, dict):
            lines.append(f"{k} = {_toml(v)}")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def tensor_sets(n_train: int = 8, n_val: int = 4):
    """(train, val) TensorDatasets of random volumes (1, *SHAPE) and ages in years (20-80)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 1, *SHAPE, generator=g)
    y = torch.rand(n_train + n_val, generator=g) * 60 + 20  # years
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])
