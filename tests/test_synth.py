"""Tests of the synthetic cohort (slicelib.synth): files, determinism, planted effects; and of
its quality check, benchmarks/synth_qa.py (the planted effects measured from the images)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from slicelib import synth

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import synth_qa  # noqa: E402  (benchmarks/synth_qa.py)

N_SMALL = 16  # subjects in the shared small cohort (ages spread over 20-90)

MNI_RAS = np.array(
    [[2.0, 0.0, 0.0, -90.0], [0.0, 2.0, 0.0, -126.0], [0.0, 0.0, 2.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small cohort written to disk once: (folder, participants table)."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    tsv = synth.make_cohort(out, n=N_SMALL, seed=0, progress=False, n_jobs=2)
    return out, pd.read_csv(tsv, sep="\t")


@pytest.fixture(scope="module")
def measured(cohort):
    """measure_cohort on the small cohort, from its written images (no ridge)."""
    return synth_qa.measure_cohort(cohort[0], ridge=False, progress=False, n_jobs=2)


def _load(folder, sub):
    return nib.load(folder / sub / "anat" / f"{sub}_T1w.nii.gz")


def test_subject_volume_is_a_plausible_head():
    vol, info = synth.synth_subject(0, 0)
    assert vol.shape == (91, 109, 91) and vol.dtype == np.float32
    assert np.isfinite(vol).all()
    assert vol.min() >= 0 and vol.max() <= 255
    assert np.array_equal(vol, np.round(vol))  # exactly the uint8 values written to disk
    head = vol > 40
    assert 0.25 < head.mean() < 0.8  # a head, not an empty or full box
    # WM (centre of the brain) brighter than CSF (ventricle) and background.
    brain = synth.templates().brain
    assert vol[brain].std() > 10
    assert info["participant_id"] == "sub-0001"
    assert info["diagnosis"] in ("CN", "AD") and info["ad"] == int(info["diagnosis"] == "AD")


def test_deterministic_by_seed_and_index():
    a, ia = synth.synth_subject(5, 3)
    b, ib = synth.synth_subject(5, 3)
    c, _ = synth.synth_subject(6, 3)
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)


def test_files_tables_and_header(cohort):
    out, table = cohort
    assert list(table.columns) == ["participant_id", "age", "sex", "diagnosis", "ad"]
    assert list(table["participant_id"]) == [f"sub-{i:04d}" for i in range(1, N_SMALL + 1)]
    assert table["age"].between(20, 90).all()
    assert set(table["sex"]) <= {"M", "F"} and set(table["diagnosis"]) <= {"CN", "AD"}
    assert (table["ad"] == (table["diagnosis"] == "AD").astype(int)).all()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["slicelib_synth"]["seed"] == 0
    assert (out / "participants.json").exists()
    img = _load(out, "sub-0001")
    assert img.shape == (91, 109, 91)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, MNI_RAS)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    truth = pd.read_csv(out / "derivatives" / "ground_truth" / "subjects.tsv", sep="\t")
    assert {"brain_age_gap", "ad_severity", "gm_ml", "ventricle_ml"} <= set(truth.columns)
    assert not any(p.name.endswith(".tmp.nii.gz") for p in out.rglob("*"))  # atomic writes
    timing = json.loads((out / "derivatives" / "ground_truth" / "generation.json").read_text())
    assert timing["n"] == N_SMALL and timing["cpu_s_per_subject"] > 0


def test_written_file_equals_in_memory_subject(cohort):
    out, _ = cohort
    vol, _ = synth.synth_subject(0, 2)
    disk = np.asarray(_load(out, "sub-0003").dataobj)
    assert np.array_equal(disk.astype(np.float32), vol)


def test_prefix_stability(cohort, tmp_path):
    """A smaller cohort with the same seed has the same first subjects."""
    out, table = cohort
    small = synth.make_cohort(tmp_path / "small", n=2, seed=0, progress=False)
    small_table = pd.read_csv(small, sep="\t")
    pd.testing.assert_frame_equal(small_table, table.iloc[:2])
    for sub in small_table["participant_id"]:
        a = np.asarray(_load(tmp_path / "small", sub).dataobj)
        b = np.asarray(_load(out, sub).dataobj)
        assert np.array_equal(a, b)


def test_effect_maps_are_where_planted(cohort):
    gt = cohort[0] / "derivatives" / "ground_truth"
    ad_img = nib.load(gt / "ad_effect.nii.gz")
    age = np.asarray(nib.load(gt / "age_effect.nii.gz").dataobj, dtype=np.float32)
    ad = np.asarray(ad_img.dataobj, dtype=np.float32)
    assert ad.shape == age.shape == (91, 109, 91)
    np.testing.assert_allclose(ad_img.affine, MNI_RAS)
    assert np.isfinite(ad).all() and np.isfinite(age).all() and ad.max() > 0 and age.max() > 0
    # AD peak in a medial temporal lobe (hippocampus / amygdala), both hemispheres affected.
    x, y, z = nib.affines.apply_affine(MNI_RAS, np.unravel_index(np.argmax(ad), ad.shape))
    assert 15 <= abs(x) <= 38 and -36 <= y <= 2 and -28 <= z <= -4
    left, right = ad[:45].sum(), ad[46:].sum()
    assert 0.7 < left / right < 1.4
    strong = ad > 0.5 * ad.max()
    coords = nib.affines.apply_affine(MNI_RAS, np.argwhere(strong))
    assert (coords[:, 2] < 0).all() and (np.abs(coords[:, 0]) > 10).all()
    # Age acts broadly: cortex and around the ventricles, not only in the MTL.
    tp = synth.templates()
    assert age[tp.roi_ventricles].mean() > 0 and (age > 0.2 * age.max()).sum() > 5000


def test_small_cohort_properties_measured_from_images(measured):
    assert measured["n"] == N_SMALL and measured["n_ad"] >= 2
    assert measured["r_ventricle_age"] > 0.6
    assert measured["r_gm_age"] < -0.6
    assert measured["ad_hippocampus_deficit_pct"] > 5.0
    table = measured["table"]
    assert np.isfinite(table[["gm_ml", "ventricle_ml", "hippocampus_gm_ml"]].to_numpy()).all()
    report = synth_qa.format_report(measured)
    assert "ventricle volume vs age" in report and "PASS" in report


def test_demographics_prevalence_and_age_overlap():
    params = synth.SynthParams(ad_prevalence=0.3)
    info = pd.DataFrame([synth.subject_info(1, i, params) for i in range(3000)])
    assert info["age"].between(20, 90).all()
    assert abs(info["ad"].mean() - 0.3) < 0.03
    assert abs((info["sex"] == "F").mean() - 0.5) < 0.04
    ad_age = info.loc[info["ad"] == 1, "age"]
    cn_age = info.loc[info["ad"] == 0, "age"]
    assert ad_age.mean() > cn_age.mean()  # AD more likely when older
    assert ad_age.min() < 40 and cn_age.max() > 85  # ages overlap: age-matching possible


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="age_range"):
        synth.make_cohort(tmp_path / "x", n=1, age_range=(50, 40), progress=False)
    with pytest.raises(ValueError, match="ad_prevalence"):
        synth.make_cohort(tmp_path / "x", n=1, ad_prevalence=1.5, progress=False)
    with pytest.raises(ValueError, match="n=0"):
        synth.make_cohort(tmp_path / "x", n=0, progress=False)
    with pytest.raises(FileNotFoundError, match="participants.tsv"):
        synth_qa.measure_cohort(tmp_path / "missing", progress=False)
    with pytest.raises(ValueError, match="model grid"):
        synth_qa.measure_volume(np.zeros((10, 10, 10), np.float32))


def test_synth_qa_command_line(cohort, measured, capsys, monkeypatch):
    """``python benchmarks/synth_qa.py COHORT`` prints the report, saves it as JSON, and exits
    1 when a property fails (the measurement itself is the ``measured`` fixture's)."""
    seen = {}

    def measure(folder, **kw):
        seen.update(folder=Path(folder), **kw)
        return dict(measured)

    monkeypatch.setattr(synth_qa, "measure_cohort", measure)
    code = synth_qa.main([str(cohort[0]), "--no-ridge", "--no-progress", "--n-jobs", "1"])
    assert seen == dict(folder=cohort[0], ridge=False, progress=False, n_jobs=1)
    printed = capsys.readouterr().out
    saved = json.loads((cohort[0] / "derivatives" / "synth_check.json").read_text())
    assert "ventricle volume vs age" in printed and saved["n"] == N_SMALL
    assert code == (0 if all(c["pass"] for c in saved["checks"].values()) else 1)
    failing = dict(measured, r_gm_age=0.0)
    failing["checks"] = synth_qa._checks(failing)
    failing["ok"] = False
    monkeypatch.setattr(synth_qa, "measure_cohort", lambda folder, **kw: failing)
    assert synth_qa.main([str(cohort[0]), "--no-progress"]) == 1
    assert "[FAIL] grey-matter volume vs age" in capsys.readouterr().out


def test_params_round_trip():
    p = synth.SynthParams(age_range=(30, 80), ad_loss=(0.25, 0.3))
    assert synth.SynthParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="unknown"):
        synth.SynthParams.from_dict({"bogus": 1})


@pytest.mark.slow
def test_full_cohort_meets_documented_properties(tmp_path, capsys):
    """The issue's figures, measured from 250 written subjects (ridge CV trains on 200)."""
    code = synth_qa.main([str(tmp_path / "c"), "--n", "250", "--no-progress"])
    printed = capsys.readouterr().out
    assert "ridge" in printed
    checks = json.loads((tmp_path / "c" / "derivatives" / "synth_check.json").read_text())["checks"]
    failed = {k: v for k, v in checks.items() if not v["pass"] and "speed" not in k}
    assert not failed, printed
    assert code in (0, 1)  # speed depends on the (shared) machine; the report prints it
