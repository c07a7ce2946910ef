"""Project hygiene: lint and format, one set of pinned versions everywhere, the README's commands."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.strip().lstrip("- ").strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def test_ruff_lint_and_format():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (pip install -e .[dev])")
    lint = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, "run `ruff format .`:\n" + fmt.stdout + fmt.stderr


def test_environment_yml_uses_the_constraints_pins():
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = pins(pip_section)
    assert env_pins, "environment.yml pins nothing"
    for name, version in env_pins.items():
        assert constraints.get(name) == version, (
            f"environment.yml pins {name}=={version}, constraints.txt {constraints.get(name)}"
        )


def test_every_dependency_is_pinned_in_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    deps = project["dependencies"] + [
        d for extra in project["optional-dependencies"].values() for d in extra
    ]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", dep)[0]).lower()
        assert name in constraints, f"{dep} (pyproject.toml) is not pinned in constraints.txt"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
