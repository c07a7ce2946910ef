"""benchmarks/: the case table's schema, the generic target checker, the report rebuilt from a
stored JSON, and one smoke case run end to end through benchmarks/run.py (a subprocess).
No timing is asserted here. Imports only the small data and report modules (cases.py,
report.py), never the script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import cases  # noqa: E402  (benchmarks/cases.py)
import report  # noqa: E402  (benchmarks/report.py)


def test_case_table_schema():
    names = [c["name"] for c in cases.CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for c in cases.CASES:
        assert set(c) == {"name", "section", "calls", "settings", "modes"}, c["name"]
        assert c["section"] in cases.SECTIONS and c["section"] in report.COLUMNS, c["name"]
        assert c["calls"] in cases.CALLS, c["name"]
        assert c["modes"] and set(c["modes"]) <= set(cases.MODES), c["name"]
        for mode in c["modes"]:  # every per-mode setting has a value in each mode it runs
            resolved = cases.resolve(c["settings"], mode)
            assert not any(isinstance(v, dict) and set(v) <= set(cases.MODES) and v
                           for v in resolved.values()), (c["name"], mode)  # fmt: skip
    by_name = set(names)
    for t in cases.TARGETS:
        assert set(t) == {"name", "metric", "op", "goal"} and t["op"] in cases.OPS, t
        for part in t["metric"].split(" / "):  # every referenced case exists
            case, _, metric = part.rpartition(".")
            assert case in by_name and metric, (t["name"], part)
    assert {c["section"] for c in cases.cases_for("smoke")} <= set(cases.SECTIONS)
    assert all("smoke" in c["name"] for c in cases.cases_for("smoke"))


def test_resolve_picks_the_mode_value():
    s = {"epochs": {"smoke": 1, "quick": 5}, "model": {"backbone": "resnet18"}, "lr": 1e-3}
    assert cases.resolve(s, "quick") == {"epochs": 5, "model": {"backbone": "resnet18"}, "lr": 1e-3}
    with pytest.raises(KeyError, match="'epochs' has no value for mode 'full'"):
        cases.resolve(s, "full")
    with pytest.raises(ValueError, match="mode 'fast'"):
        cases.cases_for("fast")


def case(name, **metrics):
    return {"name": name, "metrics": metrics}


def check(metric, op, goal, *found):
    target = {"name": "t", "metric": metric, "op": op, "goal": goal}
    return report.check_target(target, {c["name"]: c for c in found})


def test_check_target_pass_fail_missing():
    a = case("model a", volumes_per_s=3.0, peak_gb=9.0)
    assert check("model a.volumes_per_s", ">=", 2, a)["status"] == "pass"
    assert check("model a.peak_gb", "<=", 8, a)["status"] == "fail"
    got = check("model a.peak_gb", "<=", 8, a)
    assert got["value"] == 9.0 and got["bound"] == "=" and got["goal"] == 8
    assert check("model a.nothing", ">=", 1, a)["status"] == "missing"
    assert check("model b.volumes_per_s", ">=", 1, a)["status"] == "missing"
    skipped = {"name": "model b", "skipped": "no CUDA device"}  # no metrics at all
    assert check("model b.volumes_per_s", ">=", 1, a, skipped)["status"] == "missing"
    dotted = case("slicelib.pipeline.run_pipeline, 2 mm head", median_s=14.0)  # dots in a name
    assert check(f"{dotted['name']}.median_s", "<=", 15, dotted)["status"] == "pass"
    with pytest.raises(ValueError, match="op '<' must be"):
        check("model a.peak_gb", "<", 8, a)


def test_check_target_ratios_and_bounds():
    fast = case("fast", time_to_target_s=30.0)
    slow = case("slow", time_to_target_s=100.0)
    missed = case("missed", time_to_target_s={"at_least": 61.0})  # not reached in 61 s
    missed_too = case("missed too", time_to_target_s={"at_least": 90.0})
    ratio = "{}.time_to_target_s / {}.time_to_target_s"
    got = check(ratio.format("fast", "slow"), "<=", 0.5, fast, slow)
    assert got["value"] == pytest.approx(0.3) and got["bound"] == "=" and got["status"] == "pass"
    assert check(ratio.format("slow", "fast"), "<=", 0.5, fast, slow)["status"] == "fail"
    got = check(ratio.format("fast", "missed"), "<=", 0.5, fast, missed)  # <= 0.49: decided
    assert (
        got["bound"] == "<=" and got["value"] == pytest.approx(30 / 61) and got["status"] == "pass"
    )
    got = check(ratio.format("slow", "missed"), "<=", 0.5, slow, missed)  # <= 1.64: not decided
    assert got["bound"] == "<=" and got["status"] == "undecided"
    got = check(ratio.format("missed", "fast"), "<=", 0.5, fast, missed)  # >= 2.03: decided
    assert got["bound"] == ">=" and got["status"] == "fail"
    got = check(ratio.format("missed", "missed too"), "<=", 0.5, missed, missed_too)
    assert got["status"] == "missing" and got["value"] is None  # two lower bounds say nothing


def stored_results():
    """A small results dict as benchmarks/run.py stores it (numbers made up)."""
    return {
        "mode": "quick", "note": "made up", "total_s": 12.0, "loadavg_end": [1.5, 1, 1],
        "machine": {"cpu": "cpu", "cores": 2, "torch_threads": 1, "torch": "2", "python": "3.11",
                    "date": "today", "loadavg": [0.2, 0, 0], "gpu": None},
        "cases": [
            {"name": "resnet18", "section": "throughput", "calls": "fit_throughput",
             "settings": {}, "metrics": {"volumes_per_s": 0.5, "epoch_s": 6.0}, "info": "fit"},
            {"name": "densenet", "section": "throughput", "calls": "fit_throughput",
             "settings": {}, "error": "RuntimeError: out of memory"},
            {"name": "slicelib arm", "section": "tta", "calls": "train_to_target",
             "settings": {}, "metrics": {"time_to_target_s": 30.0, "best_val_mae": 9.5}},
            {"name": "3D arm", "section": "tta", "calls": "train_to_target", "settings": {},
             "metrics": {"time_to_target_s": {"at_least": 61.0}, "best_val_mae": 12.2}},
            {"name": "heads", "section": "pipeline", "calls": "pipeline", "settings": {},
             "metrics": {"median_s": 27.4, "heads": 2},
             "rows": [{"subject": "IXI012", "seconds": 29.0}, {"subject": "IXI013", "seconds": 25.8}]},
            {"name": "GPU fp32", "section": "gpu", "calls": "fit_throughput", "settings": {},
             "skipped": "no CUDA device"},
        ],
        "targets": [
            {"name": "ratio", "metric": "resnet18.volumes_per_s / densenet.volumes_per_s",
             "op": ">=", "goal": 1.5},
            {"name": "tta", "metric": "slicelib arm.time_to_target_s / 3D arm.time_to_target_s",
             "op": "<=", "goal": 0.5},
            {"name": "pipeline", "metric": "heads.median_s", "op": "<=", "goal": 15},
        ],
    }  # fmt: skip


def test_report_regenerates_from_stored_json(tmp_path):
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(stored_results()))
    cmd = [sys.executable, str(BENCH / "run.py"), "--report", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "quick.md").read_text()
    assert md == out.stdout.rstrip("\n") + "\n" == report.to_markdown(stored_results())
    assert md.startswith("# slicelib benchmark (quick mode)") and "Note: made up" in md
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "missing" in lines["ratio"]  # densenet failed: no value
    assert "<= 0.492" in lines["tta"] and "pass" in lines["tta"]  # a bound that decides it
    assert "27.4" in lines["pipeline"] and "fail" in lines["pipeline"]
    assert "error: RuntimeError: out of memory" in lines["densenet"]
    assert ">= 61 (not reached)" in lines["3D arm"]
    assert "skipped: no CUDA device" in lines["GPU fp32"]
    assert "| IXI013    |" in md  # the pipeline's per-head rows


def test_report_of_a_missing_file_says_so(tmp_path):
    cmd = [sys.executable, str(BENCH / "run.py"), "--report", str(tmp_path / "none.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0 and "none.json not found" in out.stderr


def test_smoke_case_end_to_end(tmp_path):
    """One tiny case through slicelib.train.fit, the JSON, the target and the report."""
    cmd = [sys.executable, str(BENCH / "run.py"), "--mode", "smoke", "--cases",
           "smoke: slice_cnn, 1 axis", "--threads", "1", "--out", str(tmp_path), "--work-dir",
           str(tmp_path / "work"), "--name", "e2e"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((tmp_path / "e2e.json").read_text())
    (only,) = saved["cases"]
    assert only["name"] == "smoke: slice_cnn, 1 axis" and "error" not in only, only
    assert only["settings"]["volume_shape"] == [16, 20, 16]  # the smoke grid was resolved
    m = only["metrics"]
    assert m["volumes_per_s"] > 0 and m["epoch_s"] > 0 and m["params_m"] > 0
    assert m["volumes_per_s"] == pytest.approx(2 / m["epoch_s"])  # 2 volumes in the timed epoch
    (target,) = report.check_targets(saved)
    assert target["status"] == "pass"
    assert (tmp_path / "e2e.md").read_text() == report.to_markdown(saved)
