"""Bad input (issue 13 item 6): every odd scan gets a clear error or a QC flag naming the file
and the reason, nothing is cached for a failed scan, and the other scans of the batch still
get their results (``preprocess_many``, ``predict_files``); ``check_qc`` is the contract.

The slow pipeline (deepbet, N4, registration) is replaced by a fast stand-in where a test needs
the "pipeline" method; images are tiny and made here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from slicelib import pipeline as P
from slicelib.cache import check_qc, preprocess_many
from slicelib.data import CACHE_VERSION, DataError, PreprocessConfig

SMALL = (20, 24, 20)  # 4 mm grid
CFG = PreprocessConfig(volume_shape=SMALL, voxel_size=4.0, interpolation="linear")
FAILS_SHAPE = (13, 14, 15)  # the stand-in pipeline's registration fails on this shape
GOOD_QC = {"ncc": 0.55, "wm_gm": 1.0, "brain_ml": 1200.0, "inside": 1.0, "scale": 1.0}


def head(shape=(30, 36, 30), seed=0) -> np.ndarray:
    """An ellipsoid 'head' with noise: float32 (X, Y, Z), many distinct intensities."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = ((g[0] / 0.7) ** 2 + (g[1] / 0.8) ** 2 + (g[2] / 0.7) ** 2) < 1
    return (100.0 * inside + rng.normal(0, 5, shape) * inside).astype(np.float32)


def write(data, path: Path, affine=None) -> Path:
    affine = np.diag([4.0, 4.0, 4.0, 1.0]) if affine is None else affine
    img_type = nib.MGHImage if str(path).endswith(".mgz") else nib.Nifti1Image
    nib.save(img_type(np.asarray(data), affine), str(path))
    return path


def fake_pipeline(img, config=None, volume_shape=SMALL, affine=None, with_qc=True):
    """Stand-in for run_pipeline: a centred brain on the grid with passing QC measures, or a
    registration failure (PipelineError naming the image, as the real one does)."""
    if tuple(img.shape[:3]) == FAILS_SHAPE:
        raise P.PipelineError("<image>: RuntimeError in the pipeline: registration failed")
    rng = np.random.default_rng(0)
    mask = head(volume_shape) > 50
    array = np.where(mask, rng.normal(0, 1, volume_shape), -2.0).astype(np.float32)
    return P.PipelineResult(
        array=array,
        mask=mask,
        affine=np.asarray(affine),
        transform=np.eye(4),
        registration="affine",
        native_mask=nib.Nifti1Image(mask.astype(np.uint8), np.asarray(affine)),
        timings={"total": 0.0},
        qc=dict(GOOD_QC),
        source="<image>",
    )


@pytest.fixture
def batch(tmp_path) -> dict[str, Path]:
    """One scan of each kind, in a folder: name -> path."""
    good = head()
    labels = np.zeros_like(good)
    labels[good > 50] = 1.0
    labels[8:14, 10:20, 8:14] = 2.0  # a label map: 3 values
    return {
        "good": write(good, tmp_path / "good.nii.gz"),
        "constant": write(np.full((10, 12, 10), 7.0, np.float32), tmp_path / "constant.nii.gz"),
        "labels": write(labels, tmp_path / "labels.nii.gz"),
        "one_volume_4d": write(head(seed=1)[..., None], tmp_path / "one_volume_4d.nii.gz"),
        "series_4d": write(np.stack([good] * 3, -1), tmp_path / "series_4d.nii.gz"),
        "freesurfer": write(head(seed=2), tmp_path / "freesurfer.mgz"),
        "registration_fails": write(head(FAILS_SHAPE), tmp_path / "registration_fails.nii.gz"),
    }


EXPECTED = {  # name -> (status, what the reasons say)
    "good": ("ok", ""),
    "constant": ("error", "constant image"),
    "labels": ("flagged", "few distinct intensities"),
    "one_volume_4d": ("ok", ""),
    "series_4d": ("error", "4D series with 3 volumes"),
    "freesurfer": ("ok", ""),
    "registration_fails": ("error", "registration failed"),
}


def _check_rows(qc: pd.DataFrame, batch: dict[str, Path], cache: Path) -> None:
    assert list(qc["path"]) == [str(p) for p in batch.values()]  # the order given
    for (name, path), row in zip(batch.items(), qc.itertuples()):
        status, why = EXPECTED[name]
        assert row.status == status, (name, row.reasons)
        assert why in row.reasons, (name, row.reasons)
        if status == "error":
            assert path.name in row.reasons and row.cache == ""  # named; nothing cached
        else:
            assert Path(row.cache).is_file() and Path(row.cache).parent == cache
            assert np.load(row.cache).shape == SMALL
    # exactly one array and one QC record per scan that worked: nothing for a failed one
    n_ok = sum(s != "error" for s, _ in EXPECTED.values())
    assert len(list(cache.glob("*.npy"))) == n_ok and len(list(cache.glob("*.qc.json"))) == n_ok
    assert not list(cache.glob("*.tmp*"))


def test_preprocess_many_pipeline_bad_inputs(batch, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "run_pipeline", fake_pipeline)
    cache = tmp_path / "cache"
    qc = preprocess_many(batch.values(), CFG, cache, jobs=1, progress=False)
    _check_rows(qc, batch, cache)
    assert set(qc.loc[qc.status != "error", "method"]) == {"register"}
    # the QC record beside the array is the row, and a second call reads it back
    record = json.loads(Path(qc.cache[0]).with_suffix(".qc.json").read_text())
    assert record["status"] == "ok" and record["path"] == str(batch["good"])
    again = preprocess_many(batch.values(), CFG.to_dict(), cache, jobs=1, progress=False)
    pd.testing.assert_frame_equal(again, qc)


def test_preprocess_many_resample_method_without_mocks(batch, tmp_path):
    """The real resampling path: the same verdicts for what does not need registration."""
    cache = tmp_path / "cache"
    cfg = PreprocessConfig(volume_shape=SMALL, voxel_size=4.0, method="resample")
    qc = preprocess_many(batch.values(), cfg, cache, jobs=1, progress=False).set_index("path")
    for name in ("constant", "series_4d"):
        row = qc.loc[str(batch[name])]
        assert row.status == "error" and EXPECTED[name][1] in row.reasons
        assert batch[name].name in row.reasons
    assert "few distinct intensities" in qc.loc[str(batch["labels"]), "reasons"]
    for name in ("good", "one_volume_4d", "freesurfer"):  # read fine (QC may flag the toys)
        assert qc.loc[str(batch[name]), "status"] != "error"
        assert "few distinct" not in qc.loc[str(batch[name]), "reasons"]


def test_check_qc_errors_stop_flagged_warn_exclude_or_pass(capsys):
    qc = pd.DataFrame(
        {
            "path": ["a.nii.gz", "b.nii.gz", "c.nii.gz"],
            "status": ["ok", "flagged", "ok"],
            "reasons": ["", "n_unique=3 < 20: few distinct intensities", ""],
        }
    )
    with pytest.warns(UserWarning, match=r"(?s)1 scan\(s\) for training.*b.nii.gz: n_unique=3"):
        keep = check_qc(qc)
    assert keep.tolist() == [True, True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_qc(qc, flagged="off").all()
        keep = check_qc(qc, "training on t.tsv", names=["A", "B", "C"], flagged="exclude")
    assert keep.tolist() == [True, False, True]
    err = capsys.readouterr().err
    assert "1 scan(s) left out of training on t.tsv" in err and "B: n_unique=3" in err
    broken = qc.assign(status=["ok", "error", "error"], reasons=["", "b: corrupt", "c: 4D"])
    with pytest.raises(
        DataError, match=r"(?s)2 scan\(s\) cannot be preprocessed.*b: corrupt.*c: 4D"
    ):
        check_qc(broken, flagged="off")  # errors always stop, whatever the mode
    with pytest.raises(ValueError, match="flagged='skip'"):
        check_qc(qc, flagged="skip")


def test_check_qc_lists_the_same_flagged_scans_once_per_process(recwarn):
    """A grid of runs on one table (or train, then evaluate) lists its flagged scans once:
    notebook 02 printed the same QC warning 110 times in the smoke preset."""
    qc = pd.DataFrame({"path": ["a", "b"], "status": ["ok", "flagged"], "reasons": ["", "x"]})
    for what in ("training on t.tsv", "evaluating run r1", "evaluating run r2"):
        assert check_qc(qc, what).tolist() == [True, True]
    assert len([w for w in recwarn if "QC flagged" in str(w.message)]) == 1
    other = qc.assign(reasons=["", "y"])  # other flagged scans (or reasons): listed again
    check_qc(other, "training on t.tsv")
    assert len([w for w in recwarn if "QC flagged" in str(w.message)]) == 2
    assert check_qc(qc, flagged="exclude").tolist() == [True, False]  # excluded all the same


def _tiny_run(run: Path, cache: Path) -> Path:
    """A run directory with an untrained tiny slice model (best.pt), as train writes it."""
    from slicelib.config import TrainConfig
    from slicelib.runs import build_model, model_config_dict
    from slicelib.train import CHECKPOINT_FORMAT, save_checkpoint

    model = build_model(
        dict(
            backbone="slice_cnn",
            embed_dim=4,
            volume_shape=SMALL,
            target_mean=50.0,
            target_std=10.0,
            seed=0,
        )
    )
    meta = {
        "slicelib_format": CHECKPOINT_FORMAT,
        "preprocess_version": CACHE_VERSION,
        "train": TrainConfig(cache_dir=str(cache)).to_dict(),
        "model": model_config_dict(model),
        "preprocess": CFG.to_dict(),
        "train_stats": {"mean": 50.0, "std": 1.0},
    }
    payload = {"format": CHECKPOINT_FORMAT, "epoch": 0, "config": json.dumps(meta)}
    save_checkpoint(run / "best.pt", {**payload, "model": model.state_dict()})
    return run


def test_predict_files_reports_each_bad_scan_and_predicts_the_rest(batch, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "run_pipeline", fake_pipeline)
    torch.manual_seed(0)
    run = _tiny_run(tmp_path / "run", tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"(?s)1 scan\(s\) do not look like.*labels.nii.gz"):
        df = predict_files_quiet(run, list(batch.values()))
    assert list(df["path"]) == [str(p) for p in batch.values()]
    for (name, path), row in zip(batch.items(), df.itertuples()):
        status, why = EXPECTED[name]
        assert row.qc == status and why in row.qc_reasons, (name, row.qc_reasons)
        if status == "error":
            assert path.name in row.error and pd.isna(row.prediction)
        elif status == "flagged":  # never a normal prediction
            assert pd.isna(row.prediction) and np.isfinite(float(row.prediction_unreliable))
        else:
            assert row.error == "" and np.isfinite(float(row.prediction))
    n_ok = sum(s != "error" for s, _ in EXPECTED.values())
    assert len(list((tmp_path / "cache").glob("*.npy"))) == n_ok


def predict_files_quiet(run, files):
    from slicelib.runs import predict_files

    return predict_files(run, files, device="cpu", progress=False)
