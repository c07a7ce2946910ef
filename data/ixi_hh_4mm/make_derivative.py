"""Regenerate the ixi_hh_4mm derivative from the raw shared IXI-HH heads (see README.md here).

For each of the 138 heads with an age: ``slicelib.pipeline.run_pipeline`` (default config:
deepbet, N4, 12-dof affine to the MNI152 template) onto the 4 mm MNI grid
``slicelib.pipeline.grid(4.0)`` (45 x 54 x 45 voxels, origin (-88, -124, -70) mm, RAS); the
brain goes to ``brains/<id>.nii.gz`` through ``slicelib.datasets.write_brain`` (int16 with a
scale factor, sform/qform code 4 = MNI152, background exactly 0). Writes ``participants.tsv``
(participant_id, age, sex, ``path`` relative to this folder, qc, qc_reasons, the QC
measures), ``roi_volumes.csv`` (the DLMUSE regional volumes in mm^3 of the same subjects,
copied) and ``pipeline.json`` (config, grid, versions). Resumable: finished subjects are
recorded in ``brains/.progress.jsonl`` as they finish, and the next run does the rest.

    python data/ixi_hh_4mm/make_derivative.py --jobs 2   # 20 to 40 min on 2 (shared) cores
    python data/ixi_hh_4mm/make_derivative.py --source /path/to/ixi_hh_2mm
    python data/ixi_hh_4mm/make_derivative.py --from-npz  # convert an older run's brains/*.npz
    python data/ixi_hh_4mm/make_derivative.py --copies 1 --out DIR  # raw-scan training copies

``--copies N`` writes, instead of the heads, ``N`` raw-scan copies of each head into another
folder: copy ``k`` of head ``<id>`` is ``slicelib.augment.augment_scan`` of the raw scan (thick
slices along a random axis, gamma, bias field; seeded by ``--seed``, the id and ``k``), run
through the same pipeline to ``brains/<id>~scan<k>.nii.gz``; its ``participants.tsv`` lists the
copies (id ``<id>~scan<k>``, the source's age and sex, QC). Training takes them with
``--copies DIR/participants.tsv`` (each copy joins its subject's split: training only).

``--from-npz`` converts the output of the earlier version of this script (``brains/<id>.npz``
with ``brain`` float16 (X, Y, Z), ``mask`` bool, ``affine`` (4, 4) and ``row``, its QC row as
JSON) into this layout without rerunning the pipeline, then removes the npz files.
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


def one(pid: str, t1: str, out: str, threads: int, resolution_mm=None, copy_seed=None) -> dict:
    """Pipeline on one head (or, with ``copy_seed``, on its raw-scan copy drawn with that seed:
    ``slicelib.augment.augment_scan``); writes brains/<pid>.nii.gz; returns its QC row."""
    import nibabel as nib

    from slicelib.augment import augment_scan
    from slicelib.pipeline import PipelineConfig, grid, run_pipeline
    from slicelib.qc import qc_status

    shape, affine = grid(4.0)
    config = PipelineConfig(threads=threads, resolution_mm=resolution_mm)
    scan = t1 if copy_seed is None else augment_scan(nib.load(t1), copy_seed)
    r = run_pipeline(scan, config, shape, affine)
    status, reasons = qc_status(r.qc)
    row = {
        "participant_id": pid,
        "qc": status,
        "qc_reasons": "; ".join(reasons),
        **{k: float(r.qc[k]) for k in MEASURES},
    }
    return save_brain(Path(out), pid, r.array, r.mask, affine, row)


MEASURES = ("ncc", "wm_gm", "brain_ml", "scale")


def save_brain(out: Path, pid: str, array, mask, affine, row: dict) -> dict:
    """Write brains/<pid>.nii.gz (int16 + scale, code 4, background 0); the row with its path."""
    from slicelib.datasets import write_brain

    rel = f"brains/{pid}.nii.gz"
    write_brain(out / rel, array, mask, affine)
    return {**{k: v for k, v in row.items() if k != "brain"}, "path": rel}


def done_rows(out: Path) -> dict[str, dict]:
    """QC rows of subjects an earlier (interrupted) run finished: participant_id -> row."""
    progress = out / "brains" / ".progress.jsonl"
    rows = {}
    if progress.is_file():
        for line in progress.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if (out / row["path"]).is_file():
                rows[row["participant_id"]] = row
    return rows


def from_npz(out: Path) -> list[dict]:
    """Convert brains/<id>.npz (brain, mask, affine, row) to brains/<id>.nii.gz; QC rows."""
    rows = []
    npz = sorted((out / "brains").glob("*.npz"))
    if not npz:
        raise SystemExit(
            f"--from-npz: no brains/*.npz in {out} to convert. Run without --from-npz to "
            "regenerate the derivative from the raw heads (--source)."
        )
    for f in npz:
        with np.load(f) as z:
            row = json.loads(str(z["row"]))
            array, mask, affine = z["brain"], z["mask"], z["affine"]
        rows.append(save_brain(out, row["participant_id"], array, mask, affine, row))
    for f in npz:  # only once every file is converted
        f.unlink()
    print(f"converted {len(npz)} npz files to NIfTI in {out / 'brains'} and removed them")
    return rows


def write_tables(
    out: Path, src: Path, table: pd.DataFrame, rows, failed, converted: bool, resolution_mm=None
):
    """participants.tsv, roi_volumes.csv and pipeline.json of the finished derivative."""
    import deepbet
    import SimpleITK as sitk

    from slicelib.pipeline import PipelineConfig, grid

    qc = pd.DataFrame(rows)
    cols = ["participant_id", "path", "qc", "qc_reasons", *MEASURES]
    part = table[["participant_id", "age", "sex"]].merge(qc[cols], on="participant_id")
    part = part.sort_values("participant_id")
    part.to_csv(out / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    roi = pd.read_csv(src / "roi_volumes.csv")
    roi = roi[roi.MRID.isin(part.participant_id)].sort_values("MRID")
    roi.to_csv(out / "roi_volumes.csv", index=False)
    shape, affine = grid(4.0)
    meta = {
        "pipeline": PipelineConfig(resolution_mm=resolution_mm).to_dict(),
        "grid": {"shape": list(shape), "affine": affine.tolist(), "voxel_size_mm": 4.0},
        "format": "NIfTI-1 .nii.gz, int16 with a scale factor, sform/qform code 4, background 0",
        "converted_from_npz": converted,
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


def copy_table(table: pd.DataFrame, n_copies: int, seed: int) -> pd.DataFrame:
    """Rows of the copies to make: ``<id>~scan<k>``, the source's columns, ``copy_seed``."""
    import hashlib

    from slicelib.augment import SCAN_AUGMENT_VERSION, SCAN_COPY_SEP

    rows = []
    for r in table.to_dict("records"):
        for k in range(n_copies):
            key = hashlib.sha1(
                f"scan{SCAN_AUGMENT_VERSION}/{seed}/{r['participant_id']}/{k}".encode()
            )
            rows.append({**r, "participant_id": f"{r['participant_id']}{SCAN_COPY_SEP}{k}",
                         "copy_seed": int(key.hexdigest()[:8], 16)})  # fmt: skip
    return pd.DataFrame(rows)


def write_copy_tables(out: Path, table: pd.DataFrame, rows, failed, args) -> None:
    """participants.tsv (the copies: id, age, sex, path, QC) and pipeline.json of a copies run."""
    from slicelib.augment import SCAN_AUGMENT_VERSION
    from slicelib.pipeline import PipelineConfig, grid

    qc = pd.DataFrame(rows)
    cols = ["participant_id", "path", "qc", "qc_reasons", *MEASURES]
    part = table[["participant_id", "age", "sex"]].merge(qc[cols], on="participant_id")
    part.sort_values("participant_id").to_csv(
        out / "participants.tsv", sep="\t", index=False, na_rep="n/a"
    )
    shape, affine = grid(4.0)
    meta = {
        "pipeline": PipelineConfig(resolution_mm=args.resolution_mm).to_dict(),
        "grid": {"shape": list(shape), "affine": affine.tolist(), "voxel_size_mm": 4.0},
        "copies": {
            "per_head": args.copies,
            "seed": args.seed,
            "version": SCAN_AUGMENT_VERSION,
            "transform": "slicelib.augment.scan_augmentation",
        },  # fmt: skip
        "n": len(part),
        "failed": failed,
    }
    (out / "pipeline.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(part)} copies written to {out}; failed: {failed or 'none'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(default_source()))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--from-npz", action="store_true", help="convert brains/*.npz of an older run to NIfTI"
    )
    ap.add_argument(
        "--resolution-mm", type=float, default=None,
        help="harmonise every head to this effective resolution (PipelineConfig.resolution_mm); "
        "not the shipped derivative's setting: write it to another --out",
    )  # fmt: skip
    ap.add_argument(
        "--copies", type=int, default=0,
        help="write N raw-scan copies of each head (slicelib.augment.augment_scan, then the "
        "pipeline) instead of the heads, to another --out; train with --copies OUT/participants.tsv",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="the copies' seed (with --copies)")
    args = ap.parse_args(argv)
    if args.copies < 0 or (args.copies and Path(args.out).resolve() == HERE):
        raise SystemExit(
            f"--copies {args.copies}: give N >= 1 and another --out folder (this folder holds "
            "the shipped derivative)"
        )

    from tqdm.auto import tqdm

    src, out = Path(args.source), Path(args.out)
    table = pd.read_csv(src / "participants.tsv", sep="\t", na_values=["n/a"])
    table = table[table.age.notna()].reset_index(drop=True)
    (out / "brains").mkdir(parents=True, exist_ok=True)
    if args.from_npz:
        write_tables(out, src, table, from_npz(out), [], converted=True)
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.copies:
        table = copy_table(table, args.copies, args.seed)
    done = done_rows(out)
    rows = [done[pid] for pid in table.participant_id if pid in done]
    todo = table[~table.participant_id.isin(list(done))]
    print(f"{len(rows)} subjects done by an earlier run, {len(todo)} to do")
    failed = []
    progress = open(out / "brains" / ".progress.jsonl", "a")
    with progress, cf.ProcessPoolExecutor(args.jobs) as pool:
        futs = {
            pool.submit(
                one,
                r.participant_id,
                str(src / r.t1),
                str(out),
                threads,
                args.resolution_mm,
                r.copy_seed if args.copies else None,
            ): r.participant_id
            for r in todo.itertuples()
        }
        for f in tqdm(cf.as_completed(futs), total=len(futs), desc="ixi_hh_4mm"):
            try:
                rows.append(f.result())
            except Exception as e:  # noqa: BLE001 - report, keep going
                failed.append(f"{futs[f]}: {type(e).__name__}: {e}")
                continue
            progress.write(json.dumps(rows[-1]) + "\n")
            progress.flush()
    if args.copies:
        write_copy_tables(out, table, rows, failed, args)
    else:
        write_tables(
            out, src, table, rows, failed, converted=False, resolution_mm=args.resolution_mm
        )
    if not failed:
        (out / "brains" / ".progress.jsonl").unlink()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
