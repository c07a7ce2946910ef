"""The preprocessing pipeline on the shared real IXI-HH heads: brain Dice, template NCC, time.

For each head: ``slicelib.pipeline.run_pipeline`` (default config, 2 mm MNI grid); the deepbet
brain mask in the native grid is compared with ``brain_labels`` (label > 0, the DLMUSE
parcellation in the same native grid) by Dice; NCC with the MNI152 template inside its brain
mask; seconds per head (wall clock inside the worker). Prints a table and writes
``benchmarks/results/realscan.md``.

    python benchmarks/realscan.py --jobs 2            # all 142 heads
    python benchmarks/realscan.py --jobs 2 --limit 10 # a quick look
    python benchmarks/realscan.py --big               # + a 1 mm 256^3 head (resampled)

Targets (issue 13): Dice median >= 0.95; NCC median >= 0.45 and 10th percentile >= 0.35;
<= 15 s per 2 mm head on 2 idle cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shared_dir() -> Path:
    """``$SLICELIB_SHARED/data/ixi_hh_2mm``, else ``../shared/data/ixi_hh_2mm``."""
    base = os.environ.get("SLICELIB_SHARED") or str(ROOT.parent / "shared")
    return Path(base) / "data" / "ixi_hh_2mm"


def one_head(t1: str, labels: str, config: dict) -> dict:
    """Pipeline + Dice + NCC for one head (runs in a worker process)."""
    import nibabel as nib

    from slicelib.pipeline import PipelineConfig, run_pipeline

    t = time.perf_counter()
    r = run_pipeline(t1, PipelineConfig.from_dict(config))
    seconds = time.perf_counter() - t
    ref = nib.as_closest_canonical(nib.load(labels))
    ref_mask = np.asarray(ref.dataobj) > 0
    mask = np.asarray(r.native_mask.dataobj) > 0
    if mask.shape != ref_mask.shape or not np.allclose(ref.affine, r.native_mask.affine, atol=1e-3):
        raise ValueError(f"{labels}: not on the grid of {t1}")
    dice = 2 * (mask & ref_mask).sum() / (mask.sum() + ref_mask.sum())
    return {
        "subject": Path(t1).name.split("_")[0],
        "dice": float(dice),
        **r.qc,
        **{f"t_{k}": v for k, v in r.timings.items()},
        "seconds": seconds,
    }


def big_head(t1: str, config: dict, out: Path) -> dict:
    """Resample a shared head to a 1 mm 256^3 grid (nilearn, continuous) and time the pipeline."""
    import nibabel as nib
    from nilearn import image

    from slicelib.pipeline import PipelineConfig, run_pipeline

    img = nib.as_closest_canonical(nib.load(t1))
    centre = img.affine @ np.r_[(np.array(img.shape) - 1) / 2, 1]
    aff = np.eye(4)
    aff[:3, 3] = centre[:3] - 127.5
    big = image.resample_img(
        img,
        target_affine=aff,
        target_shape=(256, 256, 256),
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    path = out / "big_1mm.nii.gz"
    big.to_filename(path)
    t = time.perf_counter()
    r = run_pipeline(str(path), PipelineConfig.from_dict(config))
    return {
        "subject": Path(t1).name.split("_")[0] + " (1 mm 256^3)",
        **r.qc,
        **{f"t_{k}": v for k, v in r.timings.items()},
        "seconds": time.perf_counter() - t,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N heads only")
    ap.add_argument("--big", action="store_true", help="also time a 1 mm 256^3 head")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "realscan.md"))
    ap.add_argument("--no-bias", action="store_true", help="bias_correct=False")
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from slicelib.pipeline import PipelineConfig

    d = shared_dir()
    if not d.is_dir():
        print(f"no shared data at {d}: set SLICELIB_SHARED", file=sys.stderr)
        return 2
    table = pd.read_csv(d / "participants.tsv", sep="\t")
    if args.limit:
        table = table.iloc[: args.limit]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    config = {**PipelineConfig(bias_correct=not args.no_bias).to_dict(), "threads": threads}
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows, failed = [], []
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        futs = {
            pool.submit(one_head, str(d / r.t1), str(d / r.brain_labels), config): r.t1
            for r in table.itertuples()
        }
        for f in tqdm(cf.as_completed(futs), total=len(futs), desc="heads"):
            try:
                rows.append(f.result())
            except Exception as e:  # noqa: BLE001
                failed.append(f"{futs[f]}: {type(e).__name__}: {e}")
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    df = pd.DataFrame(rows).sort_values("subject")
    big = None
    if args.big:
        big = big_head(
            str(d / table.t1.iloc[0]), {**config, "threads": os.cpu_count() or 1}, Path("/tmp")
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    text = report(df, failed, wall, args, load0, load1, big, config)
    print(text)
    out.write_text(text)
    return 0


def report(df, failed, wall, args, load0, load1, big, config) -> str:
    q = df.select_dtypes("number").quantile
    lines = [
        "# Preprocessing pipeline on the shared IXI-HH heads",
        "",
        f"Command: `python benchmarks/realscan.py --jobs {args.jobs}"
        + (f" --limit {args.limit}" if args.limit else "")
        + (" --big" if args.big else "")
        + (" --no-bias" if args.no_bias else "")
        + "`",
        f"Config: `{config}`. N = {len(df)} heads ({len(failed)} failed), wall {wall:.0f} s with "
        f"{args.jobs} jobs on {os.cpu_count()} cores; load average before/after "
        f"{load0[0]:.1f} / {load1[0]:.1f} (shared host).",
        "",
        "| measure | median | p10 | p90 | min | target |",
        "|---|---|---|---|---|---|",
    ]
    targets = {
        "dice": ">= 0.95 median",
        "ncc": ">= 0.45 median, p10 >= 0.35",
        "seconds": "<= 15 s (2 idle cores)",
    }
    for key in [
        "dice",
        "ncc",
        "wm_gm",
        "brain_ml",
        "inside",
        "scale",
        "n_unique",
        "seconds",
        "t_brain_extraction",
        "t_bias_correct",
        "t_registration",
    ]:
        if key in df:
            lines.append(
                f"| {key} | {q(0.5)[key]:.3f} | {q(0.1)[key]:.3f} | {q(0.9)[key]:.3f} "
                f"| {df[key].min():.3f} | {targets.get(key, '')} |"
            )
    lines.append("")
    lines.append(f"Throughput: {wall / max(len(df), 1):.1f} s wall per head with {args.jobs} jobs.")
    if big:
        lines += [
            "",
            f"1 mm 256^3 head ({big['subject']}): {big['seconds']:.1f} s "
            f"(timings { ({k: v for k, v in big.items() if k.startswith('t_')}) }), "
            f"ncc {big['ncc']:.3f}.",
        ]
    if failed:
        lines += ["", "Failed:"] + [f"- {f}" for f in failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
