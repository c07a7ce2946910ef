"""slicelib.utils.run_parallel: results in input order, errors per item, and no worker outlives
a parent killed with SIGKILL (as a scheduler or the out-of-memory killer does)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slicelib.utils import run_parallel

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of ``pid``, read from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry.name), cmd))
    return out


def test_results_in_input_order_and_errors_reported_per_item():
    assert run_parallel(math.sqrt, [9.0, 4.0, 1.0], jobs=1, progress=False) == [3.0, 2.0, 1.0]
    seen = []
    out = run_parallel(
        math.sqrt,
        [16.0, -1.0, 25.0],
        jobs=1,
        on_error=lambda item, e: seen.append((item, type(e).__name__)) or "bad",
        progress=False,
    )
    assert out == [4.0, "bad", 5.0] and seen == [(-1.0, "ValueError")]
    with pytest.raises(RuntimeError, match=r"item 1 \(-1.0\) failed: ValueError"):
        run_parallel(math.sqrt, [16.0, -1.0, 25.0], jobs=1, progress=False)


def test_spawned_workers_keep_input_order_and_report_errors():
    items = [0.2, 0.0, -4.0, 0.1]  # the first takes longest: completion order differs
    out = run_parallel(
        _sleep_then_sqrt, items, jobs=2, on_error=lambda item, e: f"error {item}", progress=False
    )
    assert out == [math.sqrt(0.2), 0.0, "error -4.0", math.sqrt(0.1)]


def _sleep_then_sqrt(x: float) -> float:
    time.sleep(abs(x))
    return math.sqrt(x)


def _mark_then_sleep(marker: str) -> None:
    """A slow item: write this worker's pid to ``marker``, then sleep two minutes."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_and_resource_tracker_exit_when_the_parent_is_killed(tmp_path):
    markers = [str(tmp_path / f"item{i}") for i in range(4)]
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_parallel import _mark_then_sleep
        from slicelib.utils import run_parallel
        run_parallel(_mark_then_sleep, {markers!r}, jobs=2, progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    kids: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 180  # spawned workers import slicelib (slow when busy)
        while time.monotonic() < deadline and sum(Path(m).exists() for m in markers) < 2:
            assert parent.poll() is None, "the parent exited early"
            time.sleep(0.2)
        kids = _children(parent.pid)
        assert sum("spawn_main" in cmd for _, cmd in kids) == 2, kids
        assert any("resource_tracker" in cmd for _, cmd in kids), kids
        os.kill(parent.pid, signal.SIGKILL)  # both workers are inside a slow item
        parent.wait(10)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and any(_alive(pid) for pid, _ in kids):
            time.sleep(0.2)
        left = [(pid, cmd) for pid, cmd in kids if _alive(pid)]
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid, _ in kids:  # only the processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
