"""The ixi_hh_4mm derivative: make_derivative.py's npz -> NIfTI converter (on a temporary
folder with fake npz files) and, when the derivative is in the repository, ixi_derivative()."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from slicelib.data import PreprocessConfig, preprocess
from slicelib.datasets import IXI_DERIVATIVE_PREPROCESS, ixi_derivative, ixi_derivative_rois
from slicelib.pipeline import grid

ROOT = Path(__file__).resolve().parents[1]
DERIVATIVE = ROOT / "data" / "ixi_hh_4mm"


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_derivative", DERIVATIVE / "make_derivative.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_npz(out: Path, pid: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """brains/<pid>.npz as the earlier script wrote it; returns (brain array, mask)."""
    shape, affine = grid(4.0)
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (g**2).sum(0) < 0.5
    vals = rng.normal(0, 1, int(mask.sum()))
    z = (vals - vals.mean()) / vals.std()
    brain = np.full(shape, z.min() - 0.5, np.float32)  # the pipeline's background: below all
    brain[mask] = z
    row = dict(participant_id=pid, brain=f"brains/{pid}.npz", qc="ok", qc_reasons="")
    row.update(ncc=0.55, wm_gm=0.7, brain_ml=1500.0, scale=0.8)
    np.savez_compressed(
        out / "brains" / f"{pid}.npz",
        brain=brain.astype(np.float16),
        mask=mask,
        affine=affine,
        row=json.dumps(row),
    )
    return brain.astype(np.float16).astype(np.float32), mask


def test_from_npz_converts_to_nifti_and_removes_the_npz(tmp_path):
    src, out = tmp_path / "ixi_hh_2mm", tmp_path / "ixi_hh_4mm"
    (out / "brains").mkdir(parents=True)
    src.mkdir()
    ids = ["IXI002-HH-1", "IXI005-HH-2"]
    pd.DataFrame(
        dict(participant_id=[*ids, "IXI009-HH-3"], age=[30.5, 60.25, None], sex=["F", "M", "F"])
    ).to_csv(src / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    pd.DataFrame({"MRID": [*ids, "IXI009-HH-3"], "4": [1e4, 2e4, 3e4]}).to_csv(
        src / "roi_volumes.csv", index=False
    )
    brains = {pid: _fake_npz(out, pid, i) for i, pid in enumerate(ids)}
    argv = ["--from-npz", "--source", str(src), "--out", str(out)]
    assert _script().main(argv) == 0
    assert not list((out / "brains").glob("*.npz"))
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert list(table.participant_id) == ids and list(table.age) == [30.5, 60.25]
    assert list(table.path) == [f"brains/{pid}.nii.gz" for pid in ids] and "brain" not in table
    assert {"sex", "qc", "qc_reasons", "ncc", "wm_gm", "brain_ml", "scale"} <= set(table.columns)
    assert json.loads((out / "pipeline.json").read_text())["converted_from_npz"] is True
    assert list(pd.read_csv(out / "roi_volumes.csv").MRID) == ids
    shape, affine = grid(4.0)
    cfg = PreprocessConfig.from_dict(IXI_DERIVATIVE_PREPROCESS)
    for pid, (brain, mask) in brains.items():
        img = nib.load(out / f"brains/{pid}.nii.gz")
        assert img.get_data_dtype() == np.int16 and img.shape == shape
        assert int(img.header["sform_code"]) == 4 and np.allclose(img.affine, affine)
        stored = np.asarray(img.dataobj)
        assert (stored[~mask] == 0).all() and (stored[mask] > 0).all()  # background 0
        vol, _, info = preprocess(out / f"brains/{pid}.nii.gz", cfg, return_info=True)
        assert info["method"] == "resample"  # the header declares MNI: no registration
        assert np.abs(vol[mask] - brain[mask]).max() < 0.02  # the pipeline's array back
    # ixi_derivative reads the converted folder: absolute paths, the preprocessing attached
    df = ixi_derivative(out)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert df.attrs["preprocess"] == IXI_DERIVATIVE_PREPROCESS
    assert list(ixi_derivative_rois(out).index) == ids


@pytest.mark.skipif(
    not (DERIVATIVE / "participants.tsv").exists(),
    reason="data/ixi_hh_4mm not generated (python data/ixi_hh_4mm/make_derivative.py)",
)
def test_shipped_ixi_derivative_loads_offline():
    df = ixi_derivative()
    assert len(df) == 138 and df["age"].between(18, 90).all()
    assert set(df["qc"]) <= {"ok", "flagged"} and (df["qc"] == "ok").mean() > 0.9
    assert all(Path(p).suffix == ".gz" and Path(p).is_file() for p in df["path"])
    rois = ixi_derivative_rois()
    assert sorted(rois.index) == sorted(df["participant_id"]) and (rois.to_numpy() >= 0).all()
    from slicelib.runs import _feature_table  # what evaluate --baseline-features reads

    assert np.isfinite(_feature_table(DERIVATIVE / "roi_volumes.csv").to_numpy()).all()
    cfg = PreprocessConfig.from_dict(df.attrs["preprocess"])
    vol, _, info = preprocess(df["path"].iloc[0], cfg, return_info=True)
    assert info["method"] == "resample" and info["status"] == "ok" and vol.shape == (45, 54, 45)


def test_copies_are_named_seeded_per_head_and_refused_into_the_shipped_folder(tmp_path):
    """make_derivative.py --copies: copy k of <id> is <id>~scan<k>, its seed a function of
    (--seed, id, k) only; copies never go into the folder of the shipped derivative."""
    script = _script()
    table = pd.DataFrame({"participant_id": ["a", "b"], "age": [30.0, 60.0], "t1": ["x", "y"]})
    rows = script.copy_table(table, 2, seed=0)
    assert rows["participant_id"].tolist() == ["a~scan0", "a~scan1", "b~scan0", "b~scan1"]
    assert rows["age"].tolist() == [30.0, 30.0, 60.0, 60.0]
    assert len(set(rows["copy_seed"])) == 4
    again = script.copy_table(table.iloc[::-1], 2, seed=0).set_index("participant_id")
    assert (again.loc[rows["participant_id"], "copy_seed"].to_numpy() == rows["copy_seed"]).all()
    other = script.copy_table(table, 2, seed=1)
    assert not set(other["copy_seed"]) & set(rows["copy_seed"])
    with pytest.raises(SystemExit, match="another --out"):
        script.main(["--copies", "1", "--source", str(tmp_path)])
