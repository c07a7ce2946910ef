"""Write slicelib/ixi_hh_2mm_registry.tsv, the file list that slicelib.datasets.fetch_ixi downloads.

Usage:
    .venv/bin/python data/make_ixi_registry.py [../shared/data/ixi_hh_2mm]

Reads the shared folder's participants.tsv (participant_id, age, sex, t1, brain_labels) and
SHA256SUMS, and writes one row per subject: the same columns plus ``t1_sha256`` and
``brain_labels_sha256``. Ages stay as written there (``n/a`` for the 4 subjects the IXI table
has no age for). Every image listed must have a checksum, or the script stops.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "slicelib" / "ixi_hh_2mm_registry.tsv"
HEADER = """\
# IXI heads, Hammersmith site, 2 mm (CC BY-SA 3.0; IXI, brain-development.org/ixi-dataset).
# 2 mm images and DLMUSE labels: CBICA NiChart_Project, commit
# c40d6a136adb03b03ac67203fdabd6716c9b4197, folder test_data/processed/IXI/.
# Written by data/make_ixi_registry.py from participants.tsv and SHA256SUMS.
"""


def main(folder: Path) -> None:
    table = pd.read_csv(folder / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    sums = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.strip()] = digest
    for column in ("t1", "brain_labels"):
        missing = sorted(set(table[column]) - set(sums))
        if missing:
            raise SystemExit(f"{folder}/SHA256SUMS has no checksum for {missing[:3]}")
        table[f"{column}_sha256"] = table[column].map(sums)
    columns = ["participant_id", "age", "sex", "t1", "t1_sha256", "brain_labels"]
    with open(OUT, "w") as f:
        f.write(HEADER)
        table[columns + ["brain_labels_sha256"]].to_csv(f, sep="\t", index=False)
    print(f"wrote {OUT}: {len(table)} subjects")


if __name__ == "__main__":
    default = ROOT.parent / "shared" / "data" / "ixi_hh_2mm"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
