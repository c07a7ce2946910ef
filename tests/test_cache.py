"""slicelib.cache: two processes filling one entry agree (per-key lock), and the key depends on
the decoded image, not on its container (.nii vs .nii.gz)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_data import head_volume, save

from slicelib import cache as C
from slicelib.data import PreprocessConfig

REPO = Path(__file__).resolve().parents[1]
#: The cheap "resample" method on a 4 mm, 20 x 24 x 20 grid.
CFG = {"method": "resample", "volume_shape": [20, 24, 20], "voxel_size": 4.0}

# Each process: wait until both are ready, then load one scan through one cache. Its
# preprocess is wrapped to record each fill, take 1.5 s, and add a per-process offset (it
# stands in for a pipeline whose result varies from run to run), so two fills would give two
# different arrays.
_SCRIPT = """
import os, sys, time
from pathlib import Path
import numpy as np
from slicelib import cache
from slicelib.data import PreprocessConfig

scan, cache_dir, work, name = sys.argv[1:5]
real = cache.preprocess

def recorded(path, config, **kw):
    vol, affine, info = real(path, config, **kw)
    with open(Path(work) / "fills.txt", "a") as f:
        f.write(name + "\\n")
    time.sleep(1.5)
    return vol + np.float32(1.0 if name == "a" else 2.0), affine, info

cache.preprocess = recorded
(Path(work) / f"ready_{name}").touch()
deadline = time.monotonic() + 300
while len(list(Path(work).glob("ready_*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
cfg = PreprocessConfig.from_dict(%r)
out = cache.load_preprocessed(scan, cfg, cache_dir=cache_dir)
np.save(Path(work) / f"{name}.npy", np.asarray(out, dtype=np.float32))
"""


@pytest.mark.slow
def test_two_processes_filling_one_entry_agree_and_fill_once(tmp_path):
    scan = save(head_volume((20, 24, 20)), tmp_path / "head.nii.gz", np.diag([4, 4, 4, 1.0]))
    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent(_SCRIPT % CFG)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(scan), str(cache_dir), str(work), name], env=env
        )
        for name in ("a", "b")
    ]
    try:
        assert [p.wait(timeout=400) for p in procs] == [0, 0]
    finally:
        for p in procs:  # only the processes this test started
            if p.poll() is None:
                p.kill()
                p.wait()
    fills = (work / "fills.txt").read_text().split()
    a, b = np.load(work / "a.npy"), np.load(work / "b.npy")
    assert len(fills) == 1, f"the entry was filled {len(fills)} times ({fills})"
    np.testing.assert_array_equal(a, b)
    assert len(list(cache_dir.glob("*.npy"))) == 1


def test_key_is_the_decoded_image_not_the_container(tmp_path, monkeypatch):
    vol = head_volume((20, 24, 20))
    affine = np.diag([4, 4, 4, 1.0])
    gz = save(vol, tmp_path / "head.nii.gz", affine)
    raw = save(vol, tmp_path / "head.nii", affine)
    other = save(head_volume((20, 24, 20), seed=1), tmp_path / "other.nii", affine)
    moved = affine.copy()
    moved[:3, 3] += 4.0
    shifted = save(vol, tmp_path / "shifted.nii", moved)
    cfg = PreprocessConfig.from_dict(CFG)
    assert C.file_hash(gz) != C.file_hash(raw)  # different bytes on disk
    assert C.cache_key(gz, cfg) == C.cache_key(raw, cfg)  # the same voxels and header
    assert C.cache_key(other, cfg) != C.cache_key(raw, cfg)
    assert C.cache_key(shifted, cfg) != C.cache_key(raw, cfg)
    cache_dir = tmp_path / "cache"
    rows = C.preprocess_many([gz, raw], cfg, cache_dir=cache_dir, progress=False)
    assert set(rows["status"]) <= {"ok", "flagged"}, rows["reasons"].tolist()
    assert rows["cache"][0] == rows["cache"][1] and len(list(cache_dir.glob("*.npy"))) == 1
    # each file's image digest is remembered under its byte digest: a warm cache decodes nothing
    assert sorted(p.name for p in (cache_dir / "content").iterdir()) == sorted(
        [C.file_hash(gz), C.file_hash(raw)]
    )
    monkeypatch.setattr(C, "_IMAGE_MEMO", {})  # as in a new process
    monkeypatch.setattr(C, "image_hash", lambda path: pytest.fail(f"decoded {path}"))
    again = C.preprocess_many([raw, gz], cfg, cache_dir=cache_dir, progress=False)
    assert list(again["cache"]) == list(rows["cache"])


def test_image_hash_of_an_unreadable_file_names_it(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(C.DataError, match="broken.nii.gz"):
        C.cache_key(bad, PreprocessConfig.from_dict(CFG))


@pytest.mark.slow
def test_preprocess_many_in_workers_matches_one_process(tmp_path):
    affine = np.diag([4, 4, 4, 1.0])
    paths = [
        save(head_volume((20, 24, 20), seed=i), tmp_path / f"h{i}.nii", affine) for i in (0, 1)
    ]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    files = [paths[0], bad, paths[1]]
    cfg = PreprocessConfig.from_dict(CFG)
    two = C.preprocess_many(files, cfg, cache_dir=tmp_path / "c2", jobs=2, progress=False)
    one = C.preprocess_many(files, cfg, cache_dir=tmp_path / "c1", jobs=1, progress=False)
    assert list(two["path"]) == [str(f) for f in files]  # input order
    assert list(two["status"] == "error") == [False, True, False]
    assert "bad.nii.gz" in two["reasons"][1]
    for a, b in zip(two["cache"][[0, 2]], one["cache"][[0, 2]]):
        assert Path(a).name == Path(b).name  # the same keys
        np.testing.assert_array_equal(np.load(a), np.load(b))
