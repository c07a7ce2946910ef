"""Shared test fixtures: paths to the read-only shared assets (weights, ixi10), small settings."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    """The read-only shared assets: $SLICELIB_SHARED, else ../shared beside the checkout, else
    /work/shared (where this project's build machines keep them)."""
    if os.environ.get("SLICELIB_SHARED"):  # (make exports it empty when it finds no assets)
        return Path(os.environ["SLICELIB_SHARED"])
    for candidate in (ROOT.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared"


SHARED = _shared_dir()

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def _hermetic_user_folders(tmp_path_factory):
    """Every test session gets its own preprocessing cache and data home ($SLICELIB_CACHE,
    $SLICELIB_DATA), so nothing a user, an earlier session or another checkout left under
    ~/.cache/slicelib (runs, cohorts, cached scans) can change a result. A test that needs
    other folders sets them itself (monkeypatch)."""
    root = tmp_path_factory.mktemp("user")
    saved = {k: os.environ.get(k) for k in ("SLICELIB_CACHE", "SLICELIB_DATA")}
    os.environ["SLICELIB_CACHE"] = str(root / "cache")
    os.environ["SLICELIB_DATA"] = str(root / "data")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _qc_reports_start_afresh():
    """check_qc lists a set of flagged scans once per process; each test starts afresh."""
    from slicelib import cache

    cache._REPORTED.clear()


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """The real ImageNet MobileNetV2 state_dict in ../shared/weights (or $SLICELIB_WEIGHTS_DIR)."""
    folder = Path(os.environ.get("SLICELIB_WEIGHTS_DIR", SHARED / "weights"))
    path = folder / "mobilenet_v2_imagenet1k.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found: set SLICELIB_WEIGHTS_DIR to the shared weights folder")
    return path


@pytest.fixture(scope="session")
def ixi10_dir() -> Path:
    """The ten real IXI heads in ../shared/data/ixi10 (or $SLICELIB_IXI10)."""
    path = Path(os.environ.get("SLICELIB_IXI10", SHARED / "data" / "ixi10"))
    if not (path / "participants.tsv").is_file():
        pytest.skip(f"{path} not found: set SLICELIB_IXI10 to the ixi10 folder")
    return path


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (tiny models: threads cost more than they give)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
