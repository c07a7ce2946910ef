"""One version source: the package metadata reads ``slicelib.__version__``."""

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest

import slicelib

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_takes_the_version_from_the_package():
    """The metadata a build writes (setuptools expands pyproject.toml) has __version__."""
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    project = pyprojecttoml.read_configuration(ROOT / "pyproject.toml", expand=True)["project"]
    assert project["version"] == slicelib.__version__
    assert project["requires-python"] == ">=3.11"  # config.py imports tomllib (3.11+)
    assert sys.version_info >= (3, 11)


def test_installed_metadata_has_the_package_version():
    """The installed distribution's version is __version__ (after ``pip install -e .`` of this
    checkout: an install made from an older pyproject.toml says what that one said)."""
    try:
        dist = importlib.metadata.distribution("slicelib")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("slicelib is not installed (pip install -e .)")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if url.startswith("file://") and Path(url[7:]).resolve() != ROOT.resolve():
        pytest.skip(f"the installed slicelib is another checkout's ({url})")
    installed = dist.version
    assert installed == slicelib.__version__, (
        f"installed slicelib metadata says {installed}, slicelib.__version__ "
        f"{slicelib.__version__}: reinstall (pip install -e .)"
    )
