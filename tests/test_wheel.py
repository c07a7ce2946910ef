"""The wheel carries what the course needs, and a notebook runs on its own with only the wheel.

Built once per session with ``pip wheel`` (what ``make wheel`` runs), installed into a fresh
virtual environment. To keep CI short, that environment borrows the project's pinned
dependencies through a ``.pth`` line (a path, not a site dir: the checkout's editable install of
slicelib is not seen); slicelib itself comes from the wheel alone, and everything runs from an
empty folder outside the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (path,) = out.glob("slicelib-*.whl")
    return path


@pytest.fixture(scope="session")
def fresh_env(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(python of a new venv holding only the wheel's slicelib, environment to run it in)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLICELIB_IXI_DERIVATIVE")
    }
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", MPLBACKEND="Agg")
    return python, env


def test_the_wheel_carries_the_derivative_the_demo_heads_and_their_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "ixi_hh_4mm": ["participants.tsv", "roi_volumes.csv", "README.md", "folds.tsv"],
        "ixi_demo": ["participants.tsv", "README.md", "SHA256SUMS"],
    }
    for folder, files in shipped.items():
        for name in files:
            assert f"slicelib/_data/{folder}/{name}" in names, (
                f"{folder}/{name} not in {wheel.name}"
            )
    brains = [n for n in names if n.startswith("slicelib/_data/ixi_hh_4mm/brains/")]
    assert len(brains) == len(list((ROOT / "data" / "ixi_hh_4mm" / "brains").glob("*.nii.gz")))
    heads = [n for n in names if n.startswith("slicelib/_data/ixi_demo/") and n.endswith(".nii.gz")]
    assert len(heads) == 4
    assert "slicelib/ixi_hh_2mm_registry.tsv" in names  # fetch_ixi's checksums
    for name in ("summary.csv", "paired.csv", "oof.csv"):  # the results notebooks show
        assert f"slicelib/_results/ixi_cv_frozen/{name}" in names
    assert not [n for n in names if n.startswith("slicelib/_results/") and n.endswith(".png")]


def test_ixi_derivative_works_from_the_installed_wheel_outside_the_checkout(fresh_env, tmp_path):
    python, env = fresh_env
    script = (
        "import json, slicelib\n"
        "assert (slicelib.datasets.shipped_results('ixi_cv_frozen') / 'summary.csv').is_file()\n"
        "from slicelib.datasets import ixi_derivative, ixi_demo_heads\n"
        "from slicelib.data import preprocess, PreprocessConfig\n"
        "t = ixi_derivative(); demo = ixi_demo_heads()\n"
        "cfg = PreprocessConfig.from_dict(t.attrs['preprocess'])\n"
        "vol, _ = preprocess(t['path'].iloc[0], cfg)\n"
        "print(json.dumps(dict(file=slicelib.__file__, n=len(t), shape=list(vol.shape),\n"
        "    demo=[__import__('os').path.isfile(p) for p in demo['path']],\n"
        "    version=slicelib.__version__)))\n"
    )
    run = subprocess.run(
        [python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(python.parents[1]), got["file"]
    assert got["n"] == 138 and got["shape"] == [45, 54, 45] and got["demo"] == [True, True]


def test_a_notebook_copied_alone_runs_offline_with_only_the_wheel(fresh_env, tmp_path):
    """Notebook 02 (the real-data one), downloaded alone as on Colab, in the smoke preset.

    Offline: ImageNet weights come from $SLICELIB_WEIGHTS_DIR when the shared folder is there
    (else the notebook says its ImageNet arm starts from random weights)."""
    python, env = fresh_env
    name = "02_imagenet_vs_scratch.ipynb"
    folder = tmp_path / "alone"
    folder.mkdir()
    shutil.copyfile(ROOT / "notebooks" / name, folder / name)
    env = {**env, "SLICELIB_DATA": str(tmp_path / "data"), "SLICELIB_CACHE": str(tmp_path / "c")}
    weights = Path(os.environ.get("SLICELIB_SHARED") or ROOT.parent / "shared") / "weights"
    if weights.is_dir():
        env.setdefault("SLICELIB_WEIGHTS_DIR", str(weights))
    run = subprocess.run(
        [python, "-m", "papermill", name, "executed.ipynb", "-p", "PRESET", "smoke",
         "-k", "python3", "--language", "python", "--no-progress-bar"],
        cwd=folder, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    executed = json.loads((folder / "executed.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("ename")]
    assert not errors
