"""Preprocess the ten ixi10 heads onto the model grid and draw their mid-slices.

Usage:
    .venv/bin/python data/show_ixi10.py outputs/ixi10_preprocessed.png [--folder ../shared/data/ixi10]

One row per subject, columns: sagittal (x = 0 mm), coronal (y = -18 mm) and axial (z = 18 mm)
slices through the centre of the 91 x 109 x 91 MNI 2 mm grid. Sagittal: anterior (nose) to the
right, superior up; coronal: subject's right on the right, superior up; axial: anterior up,
subject's right on the right (neurological convention).
The red contour is the MNI152 brain (nilearn's packaged template) resampled to the same grid:
the head was only translated (slicelib.data, method="translate"), not registered, so the outline
shows where a registered brain would sit. IXI images: CC BY-SA 3.0 (brain-development.org).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slicelib.course import shared_dir  # noqa: E402
from slicelib.data import MNI_2MM_AFFINE, MNI_2MM_SHAPE, PreprocessConfig, preprocess  # noqa: E402
from slicelib.datasets import ixi_table  # noqa: E402
from slicelib.utils import mni_template  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", help="output image path (.png)")
    default = os.environ.get("SLICELIB_IXI10") or str(shared_dir() / "data" / "ixi10")
    ap.add_argument("--folder", default=default, help="ixi10 folder (default $SLICELIB_IXI10)")
    args = ap.parse_args()

    table = ixi_table(args.folder)
    config = PreprocessConfig()
    mask = mni_template(MNI_2MM_SHAPE, MNI_2MM_AFFINE, what="mask")
    brain = np.asarray(mask.dataobj) > 0.5  # (91, 109, 91) MNI152 brain
    cx, cy, cz = (np.asarray(MNI_2MM_SHAPE) - 1) // 2
    fig, axes = plt.subplots(len(table), 3, figsize=(7.5, 2.6 * len(table)))
    axes = np.atleast_2d(axes)
    for r, row in enumerate(table.itertuples()):
        t0 = time.perf_counter()
        vol, _, info = preprocess(row.path, config, return_info=True)
        dt = time.perf_counter() - t0
        print(
            f"{row.participant_id}: {dt:.2f} s, source {info['source_axcodes']} {info['source_shape']}, "
            f"shift {np.round(info['shift_mm'], 1)} mm, inside {info['inside_fraction']:.2f}, "
            f"border {info['border_fraction']:.3f}, com offset {np.round(info['com_offset_mm'], 1)} mm"
        )
        planes = [
            (vol[cx].T, brain[cx].T, "sagittal x=0 (A right, S up)"),
            (vol[:, cy].T, brain[:, cy].T, "coronal y=-18 (S up, R right)"),
            (vol[:, :, cz].T, brain[:, :, cz].T, "axial z=18 (A up, R right)"),
        ]
        for c, (img, msk, title) in enumerate(planes):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", origin="lower", vmin=-1.5, vmax=2.5)
            ax.contour(msk.astype(float), levels=[0.5], colors="r", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{row.participant_id}\nage {row.age:.0f}", fontsize=7)
    fig.suptitle(
        "ixi10 on the MNI 2 mm grid (slicelib.data.preprocess, translation only)\n"
        "red: MNI152 brain outline for reference. IXI data CC BY-SA 3.0",
        fontsize=8,
    )
    fig.tight_layout()
    fig.subplots_adjust(top=1 - 1.0 / fig.get_figheight())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
