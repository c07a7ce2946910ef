"""Quality check of the synthetic cohort: its documented properties, measured from the images.

Usage:
    .venv/bin/python benchmarks/synth_qa.py COHORT            # measure a cohort folder
    .venv/bin/python benchmarks/synth_qa.py COHORT --n 250    # write it first (slicelib.synth)

Prints :func:`format_report` (one property per line with PASS/FAIL), saves it as
``COHORT/derivatives/synth_check.json`` and exits 1 when a property fails. The cohort is
written by ``slicelib synth --out COHORT`` (or here with ``--n``, which also times generation).

Measurement (:func:`measure_cohort`) works from the written images only, never from the saved
ground truth: a brain mask from the image (the dark skull separates brain and scalp), a bias
correction (polynomial fit to white matter), three class means (1-D k-means) and linear
partial-volume unmixing give GM and CSF fractions; volumes are summed over the brain mask, a
template periventricular region and the template hippocampus/amygdala ellipsoids (re-centred per
subject by a local block match, +-6 mm). The true template-space volumes are saved beside
(``derivatives/ground_truth/subjects.tsv``) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from slicelib.synth import (
    _SHAPE,
    _VOXEL_ML,
    SynthParams,
    _intensity,
    _mm_grid,
    _tissues,
    make_cohort,
    synth_subject,
    templates,
)
from slicelib.utils import pearson_r, run_parallel


@lru_cache(maxsize=1)
def _measure_refs() -> dict:
    """Template-space helpers of :func:`measure_volume` (computed once per process)."""
    tp = templates()
    X, _, _ = _mm_grid()
    ref = _intensity(tp, *_tissues(tp, 50.0, 0.0, SynthParams()))  # noise-free 50-year-old
    boxes = []
    for side in (X > 0, X < 0):
        roi = tp.roi_hippocampus & side
        idx = np.argwhere(roi)
        lo, hi = idx.min(0) - 3, idx.max(0) + 4
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        boxes.append((box, roi[box], ref[box]))
    return {
        "search": ndi.binary_dilation(tp.brain, iterations=5),
        "core": ndi.binary_erosion(tp.brain, iterations=8),
        "boxes": boxes,
        "axes": tuple(
            ((np.arange(n, dtype=np.float32) - n / 2) / (n / 2))[
                tuple(slice(None) if i == d else None for i in range(3))
            ]
            for d, n in enumerate(_SHAPE)
        ),
    }


def _poly_terms(axes, idx=None) -> list[np.ndarray]:
    """Cubic polynomial terms (20) on the grid (broadcast) or at voxel indices ``idx`` (3, N)."""
    if idx is not None:
        axes = [a.ravel()[i] for a, i in zip(axes, idx)]
    x, y, z = axes
    return [x**i * y**j * z**k for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]


def _poly_grid(axes, coef: np.ndarray) -> np.ndarray:
    """Evaluate the cubic polynomial of :func:`_poly_terms` on the whole grid, float32."""
    x, y, z = (np.asarray(a, np.float64) for a in axes)
    c = iter(coef)
    out = np.zeros(_SHAPE, np.float32)
    for i in range(4):
        yz = 0.0
        for j in range(4 - i):
            for k in range(4 - i - j):
                yz = yz + next(c) * y**j * z**k
        out += (x**i * yz).astype(np.float32)
    return out


def _kmeans_1d(values: np.ndarray, init: tuple[float, ...], iters: int = 15) -> np.ndarray:
    hist, edges = np.histogram(values, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    means = np.array(init, dtype=float)
    for _ in range(iters):
        assign = np.argmin(np.abs(centres[:, None] - means[None, :]), 1)
        for c in range(len(means)):
            w = hist[assign == c]
            if w.sum() > 0:
                means[c] = np.average(centres[assign == c], weights=w)
    return np.sort(means)


def _best_shift(vol: np.ndarray, box: tuple, ref: np.ndarray, radius: int = 3) -> tuple:
    """Integer shift (voxels) of ``box`` in ``vol`` that best matches ``ref`` (normalised
    cross-correlation), searched in [-radius, radius]^3."""
    r = ref - ref.mean()
    r /= np.linalg.norm(r) + 1e-9
    best, best_score = (0, 0, 0), -np.inf
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            for dz in range(-radius, radius + 1):
                sl = tuple(slice(s.start + d, s.stop + d) for s, d in zip(box, (dx, dy, dz)))
                p = vol[sl]
                if p.shape != ref.shape:
                    continue
                p = p - p.mean()
                score = float((p * r).sum()) / (np.linalg.norm(p) + 1e-9)
                if score > best_score:
                    best, best_score = (dx, dy, dz), score
    return best


def measure_volume(vol: np.ndarray) -> dict:
    """Tissue volumes (ml) of one synthetic T1 measured from its intensities only.

    ``vol``: (91, 109, 91) array on the model grid (any intensity scale). Steps: brain mask from
    the image (threshold between CSF and GM, 2-voxel erosion, the component in the brain centre,
    geodesic re-dilation, hole filling, one-voxel dilation: skull-stripping through the dark
    skull); log-bias field =
    cubic polynomial fitted to white-matter voxels (3 passes); class means by 1-D k-means (CSF <
    GM < WM); linear partial-volume unmixing between neighbouring classes. Returns gm_ml,
    wm_ml, brain_ml (inside the image's brain mask; sulcal CSF outside it is not counted),
    ventricle_ml (CSF in the template's periventricular region) and hippocampus_gm_ml (GM in the
    template hippocampus/amygdala ellipsoids after a local rigid shift found by normalised
    cross-correlation with the template, +-6 mm).
    """
    vol = np.asarray(vol, dtype=np.float32)
    if vol.shape != _SHAPE:
        raise ValueError(f"volume shape {vol.shape}: expected the model grid {_SHAPE}")
    tp = templates()
    refs = _measure_refs()
    wm0 = float(np.percentile(vol[tp.brain], 85))
    if wm0 <= 0:
        raise ValueError("volume is empty inside the template brain: not a synthetic cohort T1?")
    cand = (vol > 0.35 * wm0) & refs["search"]
    lab, _ = ndi.label(ndi.binary_erosion(cand, iterations=2))
    counts = np.bincount(lab[refs["core"]], minlength=lab.max() + 1)
    counts[0] = 0
    mask = ndi.binary_dilation(lab == int(np.argmax(counts)), iterations=2) & cand
    mask = ndi.binary_fill_holes(mask)
    # One more voxel: keeps the partial-volume voxels at the pial surface (dark skull beyond).
    mask = ndi.binary_dilation(mask) & refs["search"]

    # Bias field: cubic polynomial fit to the log intensity of white matter (every 4th voxel).
    axes = refs["axes"]
    idx = tuple(i[::4] for i in np.nonzero(mask))
    sample = vol[idx]
    basis = np.stack(_poly_terms(axes, idx), 1).astype(np.float64)  # (N, 20)
    logv = np.log(np.maximum(sample, 1e-3)).astype(np.float64)
    sel = sample > np.percentile(sample, 60)
    for _ in range(3):
        bs = basis[sel]
        coef = np.linalg.solve(bs.T @ bs + 1e-6 * np.eye(bs.shape[1]), bs.T @ logv[sel])
        sel = np.abs(logv - basis @ coef) < 0.1
    corr = vol * np.exp(-_poly_grid(axes, coef))
    csf_m, gm_m, wm_m = _kmeans_1d(corr[mask], (0.2, 0.65, 1.0))

    def fractions(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gm = np.where(
            c <= gm_m,
            np.clip((c - csf_m) / (gm_m - csf_m), 0, 1),
            np.clip((wm_m - c) / (wm_m - gm_m), 0, 1),
        )
        wm = np.clip((c - gm_m) / (wm_m - gm_m), 0, 1)
        return gm, wm, 1.0 - gm - wm

    gm_in, wm_in, _ = fractions(corr[mask])
    _, _, csf_vent = fractions(corr[tp.roi_ventricles])
    hip = 0.0
    for box, roi, ref in refs["boxes"]:
        dx, dy, dz = _best_shift(corr / wm_m, box, ref)
        sl = tuple(slice(s.start + d, s.stop + d) for s, d in zip(box, (dx, dy, dz)))
        hip += float(fractions(corr[sl][roi])[0].sum())
    return {
        "gm_ml": float(gm_in.sum()) * _VOXEL_ML,
        "wm_ml": float(wm_in.sum()) * _VOXEL_ML,
        "brain_ml": float(mask.sum()) * _VOXEL_ML,
        "ventricle_ml": float(csf_vent.sum()) * _VOXEL_ML,
        "hippocampus_gm_ml": hip * _VOXEL_ML,
    }


def _cohort_images(cohort: Path) -> tuple[pd.DataFrame, list[Path]]:
    table_path = cohort / "participants.tsv" if cohort.is_dir() else cohort
    if not table_path.exists():
        raise FileNotFoundError(
            f"{table_path} not found: pass a folder written by make_cohort (or its participants.tsv)"
        )
    table = pd.read_csv(table_path, sep="\t")
    missing = [c for c in ("participant_id", "age", "diagnosis") if c not in table.columns]
    if missing:
        raise ValueError(f"{table_path}: columns {missing} missing; was it written by make_cohort?")
    root = table_path.parent
    paths = [root / s / "anat" / f"{s}_T1w.nii.gz" for s in table["participant_id"]]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} (listed in {table_path}) does not exist")
    return table, paths


def _block_mean(vol: np.ndarray, block: int) -> np.ndarray:
    """Block-average (91, 109, 91) to (91 // block, 109 // block, 91 // block), z-scored."""
    nx, ny, nz = (s // block for s in vol.shape)
    v = vol[: nx * block, : ny * block, : nz * block].reshape(nx, block, ny, block, nz, block)
    v = v.mean(axis=(1, 3, 5))
    return ((v - v.mean()) / (v.std() + 1e-6)).astype(np.float32)


def _pearson(a, b) -> float:
    """Pearson r, NaN (not None) when undefined, so that the report can format it."""
    r = pearson_r(a, b)
    return float("nan") if r is None else r


def _measure_item(job: tuple) -> tuple[dict, np.ndarray | None]:
    """Worker: (record, path or None, index, (seed, params dict) or None, ridge, block)."""
    rec, path, index, gen, ridge, block = job
    if path is not None:
        vol = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
        if vol.shape != _SHAPE:
            raise ValueError(f"{path}: shape {vol.shape}, expected {_SHAPE}")
    else:
        vol, rec = synth_subject(gen[0], index, SynthParams.from_dict(gen[1]))
    row = {k: rec[k] for k in ("participant_id", "age", "diagnosis")}
    row.update(measure_volume(vol))
    return row, (_block_mean(vol, block).ravel() if ridge else None)


def measure_cohort(
    cohort: str | os.PathLike | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    params: SynthParams | None = None,
    ridge: bool = True,
    block: int = 4,
    progress: bool = True,
    n_jobs: int = 1,
) -> dict:
    """Measure the documented properties of a synthetic cohort from its images.

    ``cohort``: a folder written by :func:`make_cohort` (or its participants.tsv); or None to
    generate ``n`` subjects with ``seed`` / ``params`` in memory (nothing is written).
    Each image (91, 109, 91) is segmented by :func:`measure_volume`. Returns a dict with n,
    n_ad, r_ventricle_age and r_gm_age (Pearson r of the measured volumes in ml with age in
    years), ad_hippocampus_deficit_pct (AD hippocampal-region GM below the CN value predicted at
    the same age by a quadratic fit on CN, in %), ad_hippocampus_deficit_matched_pct (against CN
    within +-5 years), ad_auc_hippocampus (AUC of the age-adjusted measured hippocampal GM for
    AD vs CN), ad_auc_age (AUC of age alone), ridge_mae / ridge_chance_mae / ridge_train_size
    (5-fold cross-validated RidgeCV on ``block``-times block-averaged z-scored voxels, years;
    skipped below 30 subjects or when ``ridge`` is False), per-subject "table" (DataFrame) and
    "checks": name -> (value, rule, passed), "ok" (all checks passed). ``n_jobs`` worker
    processes.
    """

    if cohort is not None:
        table, paths = _cohort_images(Path(cohort))
        jobs = [
            (rec, str(p), 0, None, ridge, block) for rec, p in zip(table.to_dict("records"), paths)
        ]
    else:
        if n is None:
            raise ValueError("give a cohort folder or n (number of subjects to generate)")
        pd_ = (params or SynthParams()).to_dict()
        jobs = [(None, None, i, (seed, pd_), ridge, block) for i in range(int(n))]
    results = run_parallel(
        _measure_item, jobs, int(n_jobs), desc="measure", unit="subj", progress=progress
    )
    rows = [r for r, _ in results]
    feats = [f for _, f in results]
    df = pd.DataFrame(rows)
    out: dict = {"n": len(df), "n_ad": int((df["diagnosis"] == "AD").sum())}
    age = df["age"].to_numpy(float)
    out["r_ventricle_age"] = _pearson(age, df["ventricle_ml"])
    out["r_gm_age"] = _pearson(age, df["gm_ml"])
    out.update(_ad_stats(df))
    if ridge and len(df) >= 30:
        out.update(_ridge_mae(np.stack(feats), age))
    out["table"] = df
    out["checks"] = _checks(out)
    out["ok"] = all(ok for _, _, ok in out["checks"].values())
    return out


def _ad_stats(df: pd.DataFrame) -> dict:
    from sklearn.metrics import roc_auc_score

    res = {
        "ad_hippocampus_deficit_pct": float("nan"),
        "ad_hippocampus_deficit_matched_pct": float("nan"),
        "ad_auc_hippocampus": float("nan"),
        "ad_auc_age": float("nan"),
    }
    cn, ad = df[df["diagnosis"] == "CN"], df[df["diagnosis"] == "AD"]
    if len(cn) < 5 or len(ad) < 2:
        return res
    coef = np.polyfit(cn["age"], cn["hippocampus_gm_ml"], 2 if len(cn) >= 10 else 1)
    pred_ad = np.polyval(coef, ad["age"])
    res["ad_hippocampus_deficit_pct"] = 100.0 * (
        1.0 - ad["hippocampus_gm_ml"].mean() / pred_ad.mean()
    )
    ratios = []
    for a, h in zip(ad["age"], ad["hippocampus_gm_ml"]):
        m = cn["hippocampus_gm_ml"][(cn["age"] - a).abs() <= 5.0]
        if len(m):
            ratios.append(h / m.mean())
    if ratios:
        res["ad_hippocampus_deficit_matched_pct"] = 100.0 * (1.0 - float(np.mean(ratios)))
    y = (df["diagnosis"] == "AD").to_numpy(int)
    adjusted = df["hippocampus_gm_ml"] / np.polyval(coef, df["age"])
    res["ad_auc_hippocampus"] = float(roc_auc_score(y, -adjusted))
    res["ad_auc_age"] = float(roc_auc_score(y, df["age"]))
    return res


def _ridge_mae(x: np.ndarray, age: np.ndarray) -> dict:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
    folds = KFold(5, shuffle=True, random_state=0)
    pred = cross_val_predict(model, x, age, cv=folds)
    chance = np.zeros_like(age)
    for train, test in folds.split(x):
        chance[test] = age[train].mean()
    return {
        "ridge_mae": float(np.mean(np.abs(pred - age))),
        "ridge_chance_mae": float(np.mean(np.abs(chance - age))),
        "ridge_train_size": int(round(len(age) * 0.8)),
        "ridge_features": int(x.shape[1]),
    }


def _checks(m: dict) -> dict:
    c = {
        "ventricle volume vs age": (m["r_ventricle_age"], "r >= 0.8", m["r_ventricle_age"] >= 0.8),
        "grey-matter volume vs age": (m["r_gm_age"], "r <= -0.8", m["r_gm_age"] <= -0.8),
        "AD hippocampal GM below age-matched CN (%)": (
            m["ad_hippocampus_deficit_pct"],
            ">= 15",
            m["ad_hippocampus_deficit_pct"] >= 15.0,
        ),
    }
    if "ridge_mae" in m:
        c["ridge regression test MAE (years)"] = (m["ridge_mae"], ">= 2", m["ridge_mae"] >= 2.0)
    if "cpu_s_per_subject" in m:
        # Per-subject CPU time is what the machine's load changes least (the machine is shared).
        speed = 2.0 / m["cpu_s_per_subject"]
        c["generation speed on 2 idle cores (subjects/s)"] = (speed, ">= 5", speed >= 5.0)
    return c


def format_report(m: dict) -> str:
    """Human-readable report of :func:`measure_cohort`'s dict (one property per line)."""
    lines = [f"synthetic cohort: {m['n']} subjects, {m['n_ad']} AD"]
    if "subjects_per_s" in m:
        lines.append(
            f"generation: {m['subjects_per_s']:.2f} subjects/s with {m.get('n_jobs', 1)} process(es)"
            f" ({m.get('generation_s', float('nan')):.1f} s wall, including writing; "
            f"{m.get('cpu_s_per_subject', float('nan')):.3f} CPU s per subject, i.e. "
            f"{2.0 / m.get('cpu_s_per_subject', float('nan')):.1f} subjects/s on 2 idle cores)"
        )
    lines += [
        f"ventricle volume vs age        r = {m['r_ventricle_age']:+.3f}",
        f"grey-matter volume vs age      r = {m['r_gm_age']:+.3f}",
        f"AD hippocampal GM vs CN at same age: {m['ad_hippocampus_deficit_pct']:.1f} % lower "
        f"(quadratic CN fit), {m['ad_hippocampus_deficit_matched_pct']:.1f} % (CN within 5 y)",
        f"AD vs CN AUC: age-adjusted hippocampal GM {m['ad_auc_hippocampus']:.3f}, "
        f"age alone {m['ad_auc_age']:.3f}",
    ]
    if "ridge_mae" in m:
        lines.append(
            f"ridge on {m['ridge_features']} block-averaged voxels, 5-fold CV "
            f"(train {m['ridge_train_size']}): MAE {m['ridge_mae']:.2f} y "
            f"(chance {m['ridge_chance_mae']:.2f} y)"
        )
    checks = m.get("checks") or _checks(m)
    lines.append("checks:")
    for name, (value, rule, ok) in checks.items():
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value:.3f} (need {rule})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns 1 when a property fails, else 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cohort", help="cohort folder (written by slicelib synth, or here with --n)")
    p.add_argument("--n", type=int, default=None, help="first write a cohort of N subjects")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort written with --n")
    p.add_argument("--n-jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-ridge", action="store_true", help="skip the ridge-regression baseline")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    out = Path(a.cohort)
    timing = None
    if a.n is not None:
        templates()  # template building is a one-off, not part of the per-subject speed
        make_cohort(out, n=a.n, seed=a.seed, progress=not a.no_progress, n_jobs=a.n_jobs)
        timing = json.loads((out / "derivatives/ground_truth/generation.json").read_text())
    m = measure_cohort(out, ridge=not a.no_ridge, progress=not a.no_progress, n_jobs=a.n_jobs)
    if timing is not None:
        m.update(
            subjects_per_s=timing["subjects_per_s"],
            generation_s=timing["wall_s"],
            n_jobs=a.n_jobs,
            cpu_s_per_subject=timing["cpu_s_per_subject"],
        )
        m["checks"] = _checks(m)
        m["ok"] = all(ok for _, _, ok in m["checks"].values())
    print(format_report(m))
    report = {k: v for k, v in m.items() if k not in ("table", "checks")}
    report["checks"] = {
        k: {"value": v, "rule": r, "pass": bool(ok)} for k, (v, r, ok) in m["checks"].items()
    }
    (out / "derivatives").mkdir(parents=True, exist_ok=True)
    (out / "derivatives" / "synth_check.json").write_text(json.dumps(report, indent=2))
    return 0 if m["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
