"""The README's real-data table: every cross-validated arm of several result folders, together.

Reads the ``oof.csv`` of each folder (the classical baselines and frozen read-outs of
``python -m slicelib.cv``, the trained arms of ``slicelib compare --folds``), keeps the arms that
predicted every subject of the folds, scores them together with
:func:`slicelib.cv.summarise_oof` (MAE, r, bias-corrected gap with bootstrap CIs; every paired
difference of absolute errors) and writes ``summary.csv``, ``paired.csv`` and ``table.md`` (one
row per arm: MAE [CI], r, and the paired difference to each reference arm [CI], Wilcoxon p)::

    python benchmarks/cv_table.py --oof benchmarks/results/ixi_cv_frozen/oof.csv \\
        benchmarks/results/ixi_cv_finetune/oof.csv --out benchmarks/results/ixi_cv_all \\
        --reference finetune_imagenet ridge_roi \\
        --ensemble ensemble_finetune_frozen=finetune_imagenet+ridge_frozen_imagenet

``--oof FILE@SUFFIX`` appends SUFFIX to the arm names of that file (the same arm run again
with one change, e.g. a wider learning-rate grid); ``--oof FILE=ARM,ARM`` keeps only those arms
of the file (e.g. leaving out an arm whose recipe has changed since, or one that another file
holds too); both can be combined, ``FILE=ARM,ARM@SUFFIX``. ``--ensemble NAME=A+B`` adds the arm NAME, the mean of arms A and B's out-of-fold predictions
(:func:`slicelib.cv.ensemble_oof`; no weight is fitted).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from slicelib.crossval import complete_arms
from slicelib.cv import ensemble_oof, read_folds, read_oof, summarise_oof

ROOT = Path(__file__).resolve().parents[1]
#: How the table names the arms (others keep their oof name).
NAMES = {
    "finetune_imagenet": "slice model, ImageNet MobileNetV2, fine-tuned (lr from 1e-3, 3e-3 and "
    "epoch chosen on an inner validation split)",
    "ridge_frozen_imagenet": "ridge on frozen ImageNet MobileNetV2 slice features (3 axes, 4 "
    "blocks each)",
    "ridge_frozen_imagenet_quantile": "the same read-out, quantile-standardised intensities",
    "ridge_voxels": "ridge on block-averaged registered voxels (classical baseline)",
    "ridge_roi": "ridge on the log regional volumes (classical baseline)",
    "ridge_frozen_random": "the same read-out of a random-initialised MobileNetV2",
    "mean": "training-mean age",
    "ensemble_finetune_frozen": "mean of the fine-tuned slice model and the frozen ImageNet "
    "read-out (an ensemble of two slice models, no weight fitted)",
    "finetune_imagenet_lr3grid": "the same fine-tuned model with 3e-4 added to its learning-rate "
    "grid (lr from 3e-4, 1e-3, 3e-3)",
    "finetune_scratch": "slice model, random-initialised MobileNetV2, fine-tuned (lr from 1e-3, "
    "3e-3 and epoch chosen on an inner validation split)",
    "ridge_frozen_imagenet_augment": "the ImageNet read-out trained with 2 augmented copies of "
    "each training head (TorchIO gamma, bias field, thick slices)",
    "ridge_frozen_imagenet_scancopies": "the ImageNet read-out trained with 1 raw-scan copy of "
    "each training head (thick slices, gamma, bias field before the pipeline)",
    "ridge_frozen_imagenet_augment_scancopies": "the ImageNet read-out trained with 2 augmented "
    "copies and 1 raw-scan copy of each training head",
    "ensemble_finetune_scancopies": "mean of the fine-tuned slice model and the read-out trained "
    "with raw-scan copies (no weight fitted)",
    "finetune_imagenet_copies": "the fine-tuned ImageNet slice model trained with 2 augmented "
    "copies and 1 raw-scan copy of each training head (lr 1e-3)",
    "ensemble_finetune_copies_scancopies": "mean of the fine-tuned slice model trained with the "
    "copies and the read-out trained with raw-scan copies (no weight fitted)",
    "sfcn": "3D CNN, SFCN-style (Peng et al. 2021), whole volume, random init (lr from 1e-3, "
    "3e-3 and epoch chosen on an inner validation split; 30 epochs)",
}


def combined(oof_files, folds_file) -> pd.DataFrame:
    """The rows of the complete (arm, seed) pairs of every ``oof.csv``, one table (a file
    given as ``FILE=ARM,ARM``: only those arms; ``FILE@SUFFIX``: its arms renamed
    ``<arm>SUFFIX``).

    Raises:
        ValueError naming the arm when two files hold the same arm and seed, or naming the
        file and the arm when a kept arm is not in the file.
    """
    folds = read_folds(folds_file)
    parts = []
    for spec in oof_files:
        f, _, suffix = str(spec).partition("@")
        f, _, arms = f.partition("=")
        oof = read_oof(f)
        if arms:
            wanted = arms.split(",")
            absent = sorted(set(wanted) - set(oof["arm"]))
            if absent:
                raise ValueError(f"{f}: no arm {absent[0]!r} (it holds {sorted(set(oof['arm']))})")
            oof = oof[oof["arm"].isin(wanted)].reset_index(drop=True)
        oof["arm"] = oof["arm"] + suffix
        full = complete_arms(oof, folds).query("complete")
        keep = oof.set_index(["arm", "seed"]).index.isin(list(zip(full["arm"], full["seed"])))
        parts.append(oof[keep])
    out = pd.concat(parts, ignore_index=True)
    twice = out.duplicated(["participant_id", "arm", "seed"])
    if twice.any():
        arm = out.loc[twice, "arm"].iloc[0]
        raise ValueError(f"arm {arm!r} is in more than one of {oof_files}; keep one")
    return out


def table(summary: pd.DataFrame, paired: pd.DataFrame, references) -> list[str]:
    """Markdown rows: arm, MAE [CI], r, and per reference the paired difference [CI], p."""

    def diff(arm, ref):
        if arm == ref:
            return "-"
        row = paired[(paired.arm_a == arm) & (paired.arm_b == ref)]
        sign = 1
        if not len(row):
            row, sign = paired[(paired.arm_a == ref) & (paired.arm_b == arm)], -1
        r = row.iloc[0]
        lo, hi = sorted((sign * r.diff_lo, sign * r.diff_hi))
        return f"{sign * r['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}], p = {r.wilcoxon_p:.2g}"

    head = ["arm (5-fold CV, all labelled heads)", "MAE, years [95 % CI]", "r"]
    head += [f"paired difference vs {NAMES.get(r, r).split(' (')[0]}" for r in references]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in summary.sort_values("mae").itertuples():
        r = "-" if s.arm == "mean" else f"{s.r:.2f}"
        cells = [NAMES.get(s.arm, s.arm), f"{s.mae:.2f} [{s.mae_lo:.2f}, {s.mae_hi:.2f}]", r]
        cells += [diff(s.arm, ref) for ref in references]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oof", nargs="+", required=True, help="oof.csv files")
    ap.add_argument("--folds", default=str(ROOT / "data/ixi_hh_4mm/folds.tsv"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", nargs="+", default=["ridge_roi"], help="arms to pair with")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--ensemble", nargs="*", default=[], help="NAME=ARM+ARM[+ARM...]")
    a = ap.parse_args(argv)
    oof = combined(a.oof, a.folds)
    for spec in a.ensemble:
        name, _, members = spec.partition("=")
        if not members or "+" not in members:
            raise SystemExit(f"--ensemble {spec!r}: write NAME=ARM+ARM (two or more arms)")
        oof = pd.concat([oof, ensemble_oof(oof, members.split("+"), name)], ignore_index=True)
    missing = sorted(set(a.reference) - set(oof["arm"]))
    if missing:
        raise SystemExit(f"reference arm(s) {missing} are not complete in {a.oof}")
    summary, paired = summarise_oof(oof, n_boot=a.n_boot)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.4g")
    paired.to_csv(out / "paired.csv", index=False, float_format="%.4g")
    lines = table(summary, paired, a.reference)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
