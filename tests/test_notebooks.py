"""The course notebooks: paired .ipynb in sync with the .py source, a parameters cell, and a
headless run of each in the ``smoke`` preset (what CI executes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slicelib.course import NOTEBOOKS, notebook_dir, run_notebooks

JUPYTEXT = [sys.executable, "-m", "jupytext"]


def _without_ids(nb: dict) -> dict:
    """jupytext gives new cells random ids; everything else must be equal."""
    for cell in nb["cells"]:
        cell.pop("id", None)
    return nb


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_is_regenerated_from_py_without_difference(name):
    folder = notebook_dir()
    source, paired = folder / f"{name}.py", folder / f"{name}.ipynb"
    assert source.is_file() and paired.is_file(), f"{name}: need both .py and paired .ipynb"
    fresh = subprocess.run(
        [*JUPYTEXT, "--to", "ipynb", "--output", "-", str(source)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert _without_ids(json.loads(fresh)) == _without_ids(json.loads(paired.read_text())), (
        f"{paired} differs from what jupytext makes of {source.name}: run `make notebooks` "
        "(jupytext --to ipynb notebooks/*.py) and commit both files."
    )
    for cell in json.loads(paired.read_text())["cells"]:
        assert not cell.get("outputs"), f"{paired} must be committed with outputs stripped"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_starts_with_a_parameters_cell_holding_preset(name):
    cells = json.loads((notebook_dir() / f"{name}.ipynb").read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{name}: no cell tagged 'parameters' (papermill needs one)"
    assert "PRESET" in "".join(tagged[0]["source"])
    assert code.index(tagged[0]) <= 1, f"{name}: the parameters cell must come first"


STDERR_LINES = 36  # a bound on the stderr lines of one executed smoke notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless_in_smoke_preset(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("SLICELIB_STRICT_CHECKS", "1")  # every solution must pass its check
    monkeypatch.setenv("SLICELIB_CACHE", str(tmp_path / "cache"))
    (row,) = run_notebooks(tmp_path, preset="smoke", names=[name], html=False)
    assert Path(row["ipynb"]).is_file()
    # a student reads the executed notebook: a few dozen stderr lines at most, not a log wall
    cells = json.loads(Path(row["ipynb"]).read_text())["cells"]
    err = [
        (i, line)
        for i, cell in enumerate(cells)
        for out in cell.get("outputs", [])
        if out.get("name") == "stderr"
        for line in "".join(out.get("text", "")).splitlines()
        if line.strip()
    ]
    assert len(err) <= STDERR_LINES, f"{name}: {len(err)} stderr lines, e.g. {err[:5]}"
