"""Write the course's two raw demo heads (a sample of the shared ixi_hh_2mm folder).

Notebook 01 walks through the preprocessing pipeline on a raw head. With no local copy of the
IXI data (Colab, Binder, a pip-installed slicelib) it uses these two: one young and one old
healthy adult, each with its DLMUSE brain parcellation (the reference mask for the Dice of the
brain extraction). The files are copied byte for byte; participants.tsv keeps their rows.

    python data/ixi_demo/make_demo.py --source $SLICELIB_SHARED/data/ixi_hh_2mm

The two subjects are the labelled heads whose age is closest to 25 and to 70 years among those
that passed QC in the 4 mm derivative (data/ixi_hh_4mm/participants.tsv), ties broken by id.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
AGES = (25.0, 70.0)


def pick(source: Path) -> pd.DataFrame:
    """The rows of ``source``/participants.tsv closest to each age in :data:`AGES`."""
    table = pd.read_csv(source / "participants.tsv", sep="\t", na_values="n/a")
    ok = pd.read_csv(HERE.parent / "ixi_hh_4mm" / "participants.tsv", sep="\t")
    ok = set(ok.loc[ok["qc"] == "ok", "participant_id"])
    table = table[table["age"].notna() & table["participant_id"].isin(ok)]
    rows = []
    for age in AGES:
        dist = (table["age"] - age).abs()
        rows.append(table.assign(_d=dist).sort_values(["_d", "participant_id"]).iloc[0])
    return pd.DataFrame(rows).drop(columns="_d").reset_index(drop=True)


def main(argv=None) -> None:
    shared = os.environ.get("SLICELIB_SHARED", str(HERE.parents[2] / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(shared) / "data" / "ixi_hh_2mm")
    args = parser.parse_args(argv)
    if not (args.source / "participants.tsv").is_file():
        raise SystemExit(
            f"{args.source}/participants.tsv not found: pass --source <ixi_hh_2mm folder> "
            "(or set SLICELIB_SHARED to the folder holding data/ixi_hh_2mm)."
        )
    rows = pick(args.source)
    sums = []
    for _, row in rows.iterrows():
        for column in ("t1", "brain_labels"):
            dest = HERE / row[column]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.source / row[column], dest)
            sums.append(f"{hashlib.sha256(dest.read_bytes()).hexdigest()}  {row[column]}")
    rows.to_csv(HERE / "participants.tsv", sep="\t", index=False, float_format="%.2f")
    (HERE / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(rows.to_string(index=False))


if __name__ == "__main__":
    main()
