"""slicelib benchmarks: run the cases of ``benchmarks/cases.py`` and write JSON + Markdown.

    python benchmarks/run.py --quick --threads 1     # every quick case (CPU: ~20 min)
    python benchmarks/run.py --mode full             # full sizes (CPU: hours)
    python benchmarks/run.py --mode smoke            # tiny cases: checks that it all runs
    python benchmarks/run.py --quick --cases "tta"   # the cases whose name contains "tta"
    python benchmarks/run.py --report results/quick.json   # the report again, from the JSON

Each case calls the library (``benchmarks/measure.py``); the targets are data
(``cases.TARGETS``) checked by ``report.check_target``; the report is built from the stored
JSON alone (``report.to_markdown``). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import cases as K  # noqa: E402  (benchmarks/cases.py)
import report  # noqa: E402  (benchmarks/report.py)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=K.MODES, default="full", help="sizes of the cases")
    ap.add_argument(
        "--quick", action="store_const", const="quick", dest="mode", help="--mode quick"
    )
    ap.add_argument("--cases", help="run only the cases whose name contains this text")
    ap.add_argument("--name", help="results file name (default: the mode)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder")
    ap.add_argument("--work-dir", help="cohorts, caches, runs (default $SLICELIB_CACHE/bench)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--note", default="", help="a line for the report header")
    ap.add_argument("--report", metavar="JSON", help="only rebuild the report of a results file")
    return ap.parse_args(argv)


def rebuild_report(path: Path) -> str:
    """Write ``<path>.md`` beside a stored results JSON, from that JSON alone; return it."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: give a results file written by benchmarks/run.py")
    md = report.to_markdown(json.loads(path.read_text()))
    path.with_suffix(".md").write_text(md)
    return md


def run_case(case: dict, ctx: dict) -> dict:
    """One case: its measurement's dict plus ``seconds``; an exception becomes ``error``."""
    import measure  # benchmarks/measure.py (imports torch and slicelib)

    t0 = time.perf_counter()
    try:
        out = measure.CALLS[case["calls"]](case["settings"], ctx)
    except Exception as err:  # noqa: BLE001 - one failed case does not lose the others
        traceback.print_exc()
        out = {"error": f"{type(err).__name__}: {err}"}
    return {**case, **out, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict:
    """Run the selected cases; write ``<out>/<name>.json`` and ``.md``; print the report."""
    args = parse_args(argv)
    if args.report:
        print(rebuild_report(Path(args.report)))
        return {}
    selected = K.cases_for(args.mode, args.cases)
    if not selected:
        raise SystemExit(f"no {args.mode} case matches {args.cases!r}; see benchmarks/cases.py")
    import measure
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(os.environ.get("SLICELIB_CACHE") or Path.home() / ".cache" / "slicelib")
    work_dir = Path(args.work_dir) if args.work_dir else base / "bench"
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = dict(work_dir=str(work_dir), mode=args.mode)
    t_start = time.perf_counter()
    results = dict(mode=args.mode, machine=measure.machine_info(), note=args.note, cases=[])
    for i, case in enumerate(selected):
        print(f"[{time.perf_counter() - t_start:5.0f} s] {i + 1}/{len(selected)} {case['name']}",
              file=sys.stderr, flush=True)  # fmt: skip
        results["cases"].append(run_case(case, ctx))
    results.update(total_s=time.perf_counter() - t_start, loadavg_end=list(os.getloadavg()))
    names = {c["name"] for c in selected}
    results["targets"] = [t for t in K.TARGETS if any(n in t["metric"] for n in names)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name or args.mode}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(rebuild_report(path))
    print(f"wrote {path} and {path.with_suffix('.md')}; total {results['total_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
