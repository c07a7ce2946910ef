"""Tests for slicelib.datasets: participant tables, subject splits, IXI (local + fetcher), OASIS.

Everything runs offline: tables and images are tiny and made in tmp_path, OASIS and the IXI
download are faked (the network is made to fail); the ixi_hh_2mm tests read
../shared/data/ixi_hh_2mm (or $SLICELIB_SHARED) and skip when it is absent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED
from test_data import SMALL, SMALL_CFG, cohort, head_volume, save  # noqa: F401 (fixture)

from slicelib import datasets as S
from slicelib.cache import VolumeDataset
from slicelib.data import DataError, PreprocessConfig
from slicelib.datasets import read_table
from slicelib.splits import split_subjects

IXI_HH = SHARED / "data" / "ixi_hh_2mm"
needs_ixi_hh = pytest.mark.skipif(
    not (IXI_HH / "participants.tsv").is_file(), reason=f"shared IXI heads not found at {IXI_HH}"
)

# ---------------------------------------------------------------- tables


def test_missing_image_files(tmp_path, cohort):  # noqa: F811
    (cohort / "sub-03" / "anat" / "sub-03_T1w.nii.gz").unlink()
    with pytest.raises(DataError, match=r"participants.tsv: subject 'sub-03' \(line 5\) has no"):
        read_table(cohort, "age")
    t = pd.DataFrame({"participant_id": ["a"], "path": ["missing.nii.gz"], "age": [30]})
    t.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"t.csv: image for subject 'a' \(line 2\) not found"):
        read_table(tmp_path / "t.csv", "age")


def test_table_without_target_column(cohort):  # noqa: F811
    with pytest.raises(DataError, match=r"participants.tsv: no target column 'brain_age'"):
        read_table(cohort, "brain_age")


def test_missing_target(cohort):  # noqa: F811
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t.loc[2, "age"] = np.nan
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"'age' is missing for 1 subject.*'sub-02' \(line 4\)"):
        read_table(cohort, "age")


def test_non_numeric_target(cohort):  # noqa: F811
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t["age"] = t["age"].astype(object)
    t.loc[1, "age"] = "forty"
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"not numeric for subject 'sub-01' \(line 3\): 'forty'"):
        read_table(cohort, "age")
    with pytest.raises(DataError, match=r"'sex' is not numeric"):
        read_table(cohort, "sex")


def test_duplicated_subject_ids(cohort):  # noqa: F811
    t = pd.read_csv(cohort / "participants.tsv", sep="\t")
    t = pd.concat([t, t.iloc[[1]]])
    t.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match=r"duplicated subject ids \['sub-01'\] \(lines \[3, 8\]\)"):
        read_table(cohort, "age")
    with pytest.raises(DataError, match="duplicated"):
        split_subjects(t, "age")


def test_read_table_bids_and_csv(cohort, tmp_path):  # noqa: F811
    t = read_table(cohort, "age")
    assert list(t.columns[:3]) == ["participant_id", "path", "age"]
    assert len(t) == 6 and t["age"].dtype == float and "sex" in t.columns
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in t["path"])
    # CSV with a relative path column and another id column name
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    rel = [os.path.relpath(p, sub) for p in t["path"]]
    pd.DataFrame({"subject": t["participant_id"], "file": rel, "y": t["age"]}).to_csv(
        sub / "table.csv", index=False
    )
    t2 = read_table(sub / "table.csv", "y", id_column="subject")
    assert list(t2["path"]) == list(t["path"]) and list(t2["participant_id"]) == list(
        t["participant_id"]
    )


# ---------------------------------------------------------------- splits


def _people(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "participant_id": [f"s{i:03d}" for i in range(n)],
            "age": rng.uniform(20, 90, n),
            "ad": (np.arange(n) % 4 == 0).astype(int),
        }
    )


def test_split_subjects_seeded_disjoint_sized():
    t = _people()
    s = split_subjects(t, "ad", seed=3)
    assert s == split_subjects(t, "ad", seed=3)
    assert s != split_subjects(t, "ad", seed=4)
    all_ids = s["train"] + s["val"] + s["test"]
    assert sorted(all_ids) == sorted(t.participant_id) and len(set(all_ids)) == len(t)
    assert [len(s[k]) for k in ("train", "val", "test")] == [140, 30, 30]
    assert s["test"] == sorted(s["test"])  # table order
    two = split_subjects(t, None, fractions=(0.8, 0.2))
    assert len(two["train"]) == 160 and two["val"] == [] and len(two["test"]) == 40
    with pytest.raises(ValueError, match="summing to 1"):
        split_subjects(t, "ad", fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="duplicated subject ids"):
        split_subjects(pd.concat([t, t.iloc[:1]]), "ad")


def test_split_subjects_stratifies_classes_and_age_bins():
    t = _people()
    ad = dict(zip(t.participant_id, t.ad))
    for seed in range(5):  # 50 AD subjects: 35 / 7.5 / 7.5 in every split, not just on average
        s = split_subjects(t, "ad", seed=seed)
        for k, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(sum(ad[i] for i in s[k]) - 50 * frac) <= 1, (seed, k)
    age = dict(zip(t.participant_id, t.age))
    edges = np.quantile(t.age, [0.2, 0.4, 0.6, 0.8])
    for seed in range(5):  # each age quintile (40 subjects) gives 6 to the test set
        s = split_subjects(t, "age", seed=seed)
        bins = np.bincount(np.searchsorted(edges, [age[i] for i in s["test"]]), minlength=5)
        assert bins.min() >= 5 and bins.max() <= 7, (seed, bins)
    # unstratified shuffles are worse on the same task: evidence that stratification acts
    spread = []
    for seed in range(5):
        s = split_subjects(t, "age", seed=seed, stratify=False)
        bins = np.bincount(np.searchsorted(edges, [age[i] for i in s["test"]]), minlength=5)
        spread.append(bins.max() - bins.min())
    assert max(spread) > 2


def test_split_subjects_merges_strata_too_small_for_sklearn():
    """A class with one subject cannot be stratified: it is merged, not an error."""
    t = _people(n=20)
    t["label"] = [0] * 12 + [1] * 7 + [2]
    s = split_subjects(t, "label", fractions=(0.6, 0.2, 0.2), seed=0)
    assert sorted(s["train"] + s["val"] + s["test"]) == sorted(t.participant_id)
    assert [len(s[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    label = dict(zip(t.participant_id, t.label))
    assert 1 <= sum(label[i] > 0 for i in s["test"]) <= 2  # 8 of 20 are label 1 or 2


# ---------------------------------------------------------------- IXI heads


def _registry() -> pd.DataFrame:
    return pd.read_csv(S.IXI_REGISTRY, sep="\t", comment="#", dtype=str, keep_default_na=False)


def test_registry_lists_every_head_with_a_checksum():
    reg = _registry()
    assert len(reg) == 142 and reg["participant_id"].is_unique
    for column in ("t1", "brain_labels"):
        assert reg[column].str.startswith(f"{column}/").all()
        assert reg[f"{column}_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    ages = pd.to_numeric(reg["age"], errors="coerce")
    assert ages.isna().sum() == 4 and (reg.loc[ages.isna(), "age"] == "n/a").all()
    assert ages.between(20, 83).sum() == 138


@needs_ixi_hh
def test_registry_matches_the_shared_checksums():
    sums = dict(reversed(line.split()) for line in (IXI_HH / "SHA256SUMS").read_text().splitlines())
    reg = _registry()
    listed = dict(zip(reg["t1"], reg["t1_sha256"])) | dict(
        zip(reg["brain_labels"], reg["brain_labels_sha256"])
    )
    assert listed == sums  # every shared image, each with its checksum
    shared = pd.read_csv(IXI_HH / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    cols = ["participant_id", "age", "sex", "t1", "brain_labels"]
    pd.testing.assert_frame_equal(reg[cols], shared[cols])


@needs_ixi_hh
def test_ixi_table_on_the_shared_heads(monkeypatch):
    with pytest.warns(UserWarning, match="4 subjects have no 'age'"):
        t = S.ixi_table(IXI_HH)
    assert len(t) == 138 and list(t.columns[:3]) == ["participant_id", "path", "age"]
    assert t["age"].between(20, 83).all() and set(t["sex"]) == {"F", "M"}
    assert len(t.attrs["excluded"]) == 4 and not set(t.attrs["excluded"]) & set(t.participant_id)
    for column in ("path", "brain_labels"):
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in t[column])
    assert Path(t.path[0]).name == f"{t.participant_id[0]}_T1.nii.gz"
    everyone = S.ixi_table(IXI_HH, target=None)
    assert len(everyone) == 142 and everyone["age"].isna().sum() == 4
    # the table trains: read_table accepts it back as a file with absolute paths
    monkeypatch.chdir("/")
    assert len(read_table(t, "age")) == 138
    # resolution order: $SLICELIB_IXI_DIR first
    monkeypatch.setenv("SLICELIB_IXI_DIR", str(IXI_HH))
    assert S.ixi_dir() == IXI_HH


def test_ixi_dir_errors_name_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICELIB_IXI_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match=r"from \$SLICELIB_IXI_DIR\) has no participants.tsv"):
        S.ixi_dir()
    monkeypatch.delenv("SLICELIB_IXI_DIR")
    monkeypatch.setattr(S, "_ixi_candidates", lambda: [("beside the checkout", tmp_path / "x")])
    with pytest.raises(
        DataError, match=r"(?s)looked in.*beside the checkout.*fetch_ixi\(\).*SLICELIB_IXI_DIR"
    ):
        S.ixi_dir()


@pytest.fixture
def offline(monkeypatch):
    """Every HTTP request fails as it does without a network."""
    import requests

    def no_network(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'raw.githubusercontent.com'")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(requests.Session, "request", no_network)


def test_fetch_ixi_offline_says_how_to_use_a_local_copy(tmp_path, offline):
    with pytest.raises(DataError) as err:
        S.fetch_ixi(data_home=tmp_path)
    msg = str(err.value)
    assert "could not be downloaded" in msg and "ConnectionError" in msg
    assert "SLICELIB_IXI_DIR" in msg and "ixi_table(root=" in msg and str(tmp_path) in msg
    assert "raw.githubusercontent.com/CBICA/NiChart_Project/c40d6a1" in msg


def test_fetch_ixi_uses_checked_local_files_without_network(tmp_path, offline, monkeypatch):
    """Files already in the cache with the right checksum are used; a wrong one is refused."""
    home = tmp_path / "home"
    folder = home / "ixi_hh_2mm"
    rows = []
    for i, age in enumerate(["30.5", "n/a"]):
        pid = f"IXI90{i}-HH-0000"
        name = f"t1/{pid}_T1.nii.gz"
        (folder / "t1").mkdir(parents=True, exist_ok=True)
        save(head_volume(SMALL, seed=i), folder / name)
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        rows.append([pid, age, "F", name, digest, f"brain_labels/{pid}_T1_DLMUSE.nii.gz", "0" * 64])
    reg = tmp_path / "registry.tsv"
    cols = [
        "participant_id",
        "age",
        "sex",
        "t1",
        "t1_sha256",
        "brain_labels",
        "brain_labels_sha256",
    ]
    reg.write_text("# test\n" + pd.DataFrame(rows, columns=cols).to_csv(sep="\t", index=False))
    monkeypatch.setattr(S, "IXI_REGISTRY", reg)
    monkeypatch.setenv("SLICELIB_DATA", str(home))
    with pytest.warns(UserWarning, match="IXI901-HH-0000"):
        t = S.fetch_ixi()
    assert list(t.participant_id) == ["IXI900-HH-0000"] and t.age.tolist() == [30.5]
    assert (folder / "participants.tsv").is_file() and "brain_labels" not in t.columns
    (folder / "t1" / "IXI900-HH-0000_T1.nii.gz").write_bytes(b"damaged")
    with pytest.raises(DataError, match="could not be downloaded"):  # refetch needed: offline
        S.fetch_ixi(data_home=home)


def test_data_home_is_the_one_default_for_slicelib_data(monkeypatch, tmp_path):
    import pooch

    monkeypatch.delenv("SLICELIB_DATA", raising=False)
    assert S.data_home() == Path(pooch.os_cache("slicelib"))
    monkeypatch.setenv("SLICELIB_DATA", str(tmp_path / "env"))
    assert S.data_home() == tmp_path / "env"
    assert S.data_home(tmp_path / "given") == tmp_path / "given"  # an argument wins
    assert S._ixi_candidates()[-1][1] == tmp_path / "env" / "ixi_hh_2mm"  # fetch_ixi's folder


# ---------------------------------------------------------------- OASIS (offline fixture)


def fake_oasis_bunch(root: Path, n: int = 4):
    """A Bunch shaped like nilearn.datasets.fetch_oasis_vbm's (DARTEL) result, small images."""
    from sklearn.utils import Bunch

    # oasis_cross-sectional.csv columns after nilearn's rename (lowercase, '/' removed);
    # dtypes as pandas reads the real CSV: id/mf/hand str, age/etiv int, others float (NaN blanks)
    ext = pd.DataFrame(
        {
            "id": [f"OAS1_{s:04d}_MR1" for s in range(1, n + 1)],
            "mf": ["F", "M", "F", "M"][:n],
            "hand": ["R"] * n,
            "age": np.array([74, 55, 23, 80][:n], dtype=np.int64),
            "educ": [2.0, 4.0, np.nan, 3.0][:n],
            "ses": [3.0, 1.0, np.nan, 2.0][:n],
            "mmse": [29.0, 29.0, np.nan, 22.0][:n],
            "cdr": [0.0, 0.0, np.nan, 1.0][:n],
            "etiv": np.array([1344, 1147, 1588, 1400][:n], dtype=np.int64),
            "nwbv": [0.743, 0.81, 0.823, 0.7][:n],
            "asf": [1.306, 1.531, 1.105, 1.2][:n],
            "delay": [np.nan] * n,
        }
    )
    gm, wm = [], []
    for sid in ext["id"]:
        d = root / "oasis1" / sid
        d.mkdir(parents=True, exist_ok=True)
        for kind, lst in (("1", gm), ("2", wm)):
            p = d / f"mwrc{kind}{sid}_mpr_anon_fslswapdim_bet.nii.gz"
            save(head_volume(SMALL) / 300.0, p, SMALL_CFG.affine)
            lst.append(str(p))
    ext.to_csv(root / "oasis1" / "oasis_cross-sectional.csv", index=False)
    (root / "oasis1" / "data_usage_agreement.txt").write_text("DUA")
    return Bunch(
        gray_matter_maps=gm,
        white_matter_maps=wm,
        ext_vars=ext,
        data_usage_agreement=str(root / "oasis1" / "data_usage_agreement.txt"),
        description="OASIS",
    )


def test_fetch_oasis_with_nilearn_shaped_fixture(tmp_path, monkeypatch):
    import nilearn.datasets

    bunch = fake_oasis_bunch(tmp_path)
    seen = {}

    def fake_fetch(
        n_subjects=None, dartel_version=True, data_dir=None, url=None, resume=True, verbose=1
    ):
        seen.update(n_subjects=n_subjects, data_dir=data_dir)
        return bunch

    monkeypatch.setattr(nilearn.datasets, "fetch_oasis_vbm", fake_fetch)
    t = S.fetch_oasis(data_dir=tmp_path, n_subjects=4)
    assert seen == {"n_subjects": 4, "data_dir": tmp_path}
    assert list(t.columns[:7]) == [
        "participant_id",
        "path",
        "age",
        "sex",
        "mmse",
        "cdr",
        "dementia",
    ]
    assert list(t.participant_id) == [
        "OAS1_0001_MR1",
        "OAS1_0002_MR1",
        "OAS1_0003_MR1",
        "OAS1_0004_MR1",
    ]
    assert list(t.dementia) == [0, 0, 0, 1] and list(t.sex) == ["F", "M", "F", "M"]
    assert t.age.dtype == float and np.isnan(t.cdr[2])
    assert all("mwrc1" in Path(p).name for p in t.path)
    cfg = PreprocessConfig.from_dict(t.attrs["preprocess"])
    assert cfg.method == "resample"
    ds = VolumeDataset(
        t,
        "dementia",
        PreprocessConfig(**{**SMALL_CFG.to_dict(), "method": "resample"}),
        use_cache=False,
    )
    assert ds[3][1] == 1.0


def test_fetch_oasis_offline_error_says_how_to_provide_data(tmp_path, monkeypatch):
    import nilearn.datasets

    def offline(**kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(nilearn.datasets, "fetch_oasis_vbm", offline)
    with pytest.raises(DataError, match=r"could not be fetched.*oasis1.*data_dir"):
        S.fetch_oasis(data_dir=tmp_path)
