"""Regenerate the ixi_hh_4mm derivative from the raw shared IXI-HH heads (see README.md here).

For each of the 138 heads with an age: ``slicelib.pipeline.run_pipeline`` (default config:
deepbet, N4, 12-dof affine to the MNI152 template) onto the 4 mm MNI grid
``slicelib.pipeline.grid(4.0)`` (45 x 54 x 45 voxels, origin (-88, -124, -70) mm, RAS);
the brain array (z-scored in the brain, float16) and its mask go to ``brains/<id>.npz``.
Writes ``participants.tsv`` (participant_id, age, sex, brain path, QC measures),
``roi_volumes.csv`` (the DLMUSE regional volumes in mm^3 of the same subjects, copied) and
``pipeline.json`` (config, grid, versions). Resumable: an interrupted run keeps the subjects
it finished (each npz holds its QC row) and the next run does the rest.

    python data/ixi_hh_4mm/make_derivative.py --jobs 2   # 20 to 40 min on 2 (shared) cores
    python data/ixi_hh_4mm/make_derivative.py --source /path/to/ixi_hh_2mm

Read one subject: ``z = np.load(path); z["brain"].astype(np.float32)`` (X, Y, Z) and
``z["mask"]`` (X, Y, Z) bool, ``z["affine"]`` (4, 4).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))


def default_source() -> Path:
    base = os.environ.get("SLICELIB_SHARED") or str(ROOT.parent / "shared")
    return Path(base) / "data" / "ixi_hh_2mm"


def one(pid: str, t1: str, out: str, threads: int) -> dict:
    """Pipeline on one head; writes brains/<pid>.npz; returns its QC row."""
    from slicelib.pipeline import PipelineConfig, grid, run_pipeline
    from slicelib.qc import qc_status

    shape, affine = grid(4.0)
    r = run_pipeline(t1, PipelineConfig(threads=threads), shape, affine)
    rel = f"brains/{pid}.npz"
    tmp = Path(out) / f"brains/.{pid}.tmp.npz"
    status, reasons = qc_status(r.qc)
    row = {
        "participant_id": pid,
        "brain": rel,
        "qc": status,
        "qc_reasons": "; ".join(reasons),
        **{k: float(r.qc[k]) for k in ("ncc", "wm_gm", "brain_ml", "scale")},
    }
    brain = r.array.astype(np.float16)
    np.savez_compressed(tmp, brain=brain, mask=r.mask, affine=affine, row=json.dumps(row))
    os.replace(tmp, Path(out) / rel)
    return row


def done_row(out: Path, pid: str) -> dict | None:
    """The QC row of a subject written by an earlier (interrupted) run, else None."""
    try:
        with np.load(out / "brains" / f"{pid}.npz") as z:
            return json.loads(str(z["row"]))
    except (OSError, KeyError, ValueError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(default_source()))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)

    import deepbet
    import SimpleITK as sitk
    from tqdm.auto import tqdm

    from slicelib.pipeline import PipelineConfig, grid

    src, out = Path(args.source), Path(args.out)
    table = pd.read_csv(src / "participants.tsv", sep="\t", na_values=["n/a"])
    table = table[table.age.notna()].reset_index(drop=True)
    (out / "brains").mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    rows = [row for pid in table.participant_id if (row := done_row(out, pid))]
    todo = table[~table.participant_id.isin([row["participant_id"] for row in rows])]
    print(f"{len(rows)} subjects done by an earlier run, {len(todo)} to do")
    failed = []
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        futs = {
            pool.submit(one, r.participant_id, str(src / r.t1), str(out), threads): r.participant_id
            for r in todo.itertuples()
        }
        for f in tqdm(cf.as_completed(futs), total=len(futs), desc="ixi_hh_4mm"):
            try:
                rows.append(f.result())
            except Exception as e:  # noqa: BLE001 - report, keep going
                failed.append(f"{futs[f]}: {type(e).__name__}: {e}")
    qc = pd.DataFrame(rows)
    part = table[["participant_id", "age", "sex"]].merge(qc, on="participant_id")
    part.to_csv(out / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    roi = pd.read_csv(src / "roi_volumes.csv")
    roi = roi[roi.MRID.isin(part.participant_id)].sort_values("MRID")
    roi.to_csv(out / "roi_volumes.csv", index=False)
    shape, affine = grid(4.0)
    meta = {
        "pipeline": PipelineConfig().to_dict(),
        "grid": {"shape": list(shape), "affine": affine.tolist(), "voxel_size_mm": 4.0},
        "dtype": "float16",
        "versions": {
            "deepbet": getattr(deepbet, "__version__", "1.0.2"),
            "SimpleITK": sitk.Version.VersionString(),
        },
        "n": len(part),
        "failed": failed,
    }
    (out / "pipeline.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(part)} subjects written to {out}; failed: {failed or 'none'}")
    print(part.qc.value_counts().to_string())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
