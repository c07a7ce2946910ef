"""The course's exercises: a check per exercise, and student notebooks without the solutions.

Each exercise in ``notebooks/*.py`` is a "predict, then try" task. Its solution is written
between two marker lines inside a cell tagged ``solution``::

    # %% tags=["solution"]
    # BEGIN SOLUTION
    ncc_off = qc_without_registration["ncc"]
    # END SOLUTION
    # STUDENT: ncc_off = ...  # the NCC of the head preprocessed without registration
    check("01.ncc_without_registration", ncc_off, ncc_on=qc["ncc"])

:func:`check` looks the exercise up by name in :data:`EXERCISES`, accepts a correct answer and
rejects a wrong one with a hint, and never prints the expected value.
:func:`student_notebook` drops every line between the markers and turns each ``# STUDENT:``
line into code, so ``make student`` writes notebooks a student fills in. Each exercise also
lists wrong answers that its check must reject (``tests/test_exercises.py`` tries them all);
the solution notebooks run in CI with ``$SLICELIB_STRICT_CHECKS=1``, where a rejected answer
raises, so every check accepts its solution.

Exercises are registered in one section per notebook below (``register``); a check is a
function ``(answer, **context) -> None | str``: ``None`` accepts, a string is the hint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slicelib.metrics import correct_age_bias, fit_age_bias

__all__ = [
    "Exercise",
    "EXERCISES",
    "register",
    "check",
    "hint_for",
    "ExerciseNotPassed",
    "SOLUTION_TAG",
    "student_source",
    "student_notebook",
    "write_student_notebooks",
]

SOLUTION_TAG = "solution"
BEGIN, END, STUDENT = "# BEGIN SOLUTION", "# END SOLUTION", "# STUDENT:"


class ExerciseNotPassed(AssertionError):
    """Raised by :func:`check` for a rejected answer when ``$SLICELIB_STRICT_CHECKS`` is set
    (the solution notebooks in CI: a solution its own check rejects is a bug)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``name`` ("01.short_name"), the question in a line, the check, and wrong
    answers (each a dict ``{"answer": ..., **context}``) the check must reject."""

    name: str
    question: str
    test: Callable[..., str | None]
    wrong: tuple[dict, ...] = field(default_factory=tuple)


EXERCISES: dict[str, Exercise] = {}


def register(name: str, question: str, wrong: tuple[dict, ...] | list[dict]):
    """Decorator: add the check ``fn(answer, **context) -> None | str`` to :data:`EXERCISES`."""

    def add(fn):
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        EXERCISES[name] = Exercise(name, question, fn, tuple(wrong))
        return fn

    return add


def hint_for(name: str, answer, **context) -> str | None:
    """The check of exercise ``name`` on ``answer``, silently: None if accepted, else the hint."""
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES)) or "none"
        raise KeyError(f"no exercise named {name!r}; the exercises are: {known}")
    if answer is None or answer is Ellipsis:
        return "no answer yet: replace the ... above with your answer and run the cell again."
    try:
        return EXERCISES[name].test(answer, **context)
    except Exception as err:  # a malformed answer is a hint, not a traceback
        return f"your answer could not be checked ({type(err).__name__}: {err})."


def check(name: str, answer, **context) -> None:
    """Check the answer to exercise ``name``; print a tick, or a hint that does not give it away.

    Args:
        name: the exercise, e.g. ``"01.ncc_without_registration"`` (see :data:`EXERCISES`).
        answer: the student's answer (a number, an array, a function: the exercise says which).
        context: values from the notebook the check compares against (never printed).

    Returns None (so a notebook cell shows only the printed verdict; :func:`hint_for` gives it
    as a value). With ``$SLICELIB_STRICT_CHECKS=1`` a rejected answer raises
    :class:`ExerciseNotPassed` (CI runs the solution notebooks that way).
    """
    hint = hint_for(name, answer, **context)
    if hint is None:
        print(f"✓ {name}: correct.")
        return
    print(f"✗ {name}: not yet. Hint: {hint}")
    if os.environ.get("SLICELIB_STRICT_CHECKS") == "1":
        raise ExerciseNotPassed(f"{name}: the answer was rejected ({hint})")


# Small building blocks for checks ------------------------------------------------------------


def is_number(x) -> bool:
    """True for a real, finite scalar (Python or NumPy; not a bool)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and (
        math.isfinite(float(x))
    )  # fmt: skip


# Notebook 01: data ---------------------------------------------------------------------------

_MASK_A = np.zeros((4, 4, 4), bool)
_MASK_A[:2] = True  # 32 voxels
_MASK_B = np.zeros((4, 4, 4), bool)
_MASK_B[1:3] = True  # 32 voxels, 16 shared with _MASK_A: Dice 0.5, Jaccard 1/3


@register(
    "01.mask_dice",
    "The Dice overlap of deepbet's brain mask with the DLMUSE labels' brain (label > 0).",
    wrong=[
        {"answer": 1 / 3, "mask": _MASK_A, "reference": _MASK_B},  # the Jaccard index
        {"answer": 0.75, "mask": _MASK_A, "reference": _MASK_B},  # agreement of all voxels
        {"answer": 16, "mask": _MASK_A, "reference": _MASK_B},  # the shared voxel count
    ],
)
def _mask_dice(answer, mask, reference) -> str | None:
    """``answer``: the Dice coefficient, a number in [0, 1]; ``mask``, ``reference``: the two
    (X, Y, Z) boolean masks on one voxel grid."""
    if not is_number(answer) or not 0 <= float(answer) <= 1:
        return "the Dice coefficient is one number between 0 and 1."
    a, b = np.asarray(mask, bool), np.asarray(reference, bool)
    if a.shape != b.shape:
        return f"the two masks must be on one voxel grid (shapes {a.shape} and {b.shape})."
    overlap, total = np.count_nonzero(a & b), np.count_nonzero(a) + np.count_nonzero(b)
    if abs(float(answer) - 2 * overlap / max(total, 1)) < 1e-6:
        return None
    if abs(float(answer) - overlap / max(np.count_nonzero(a | b), 1)) < 1e-6:
        return "that is the Jaccard index (overlap / union); Dice counts the overlap twice."
    return (
        "Dice = 2 |A and B| / (|A| + |B|): count the voxels in both masks, and the voxels of "
        "each mask (only brain voxels count, not the background both leave out)."
    )


@register(
    "01.ncc_without_registration",
    "The template NCC of the raw head preprocessed with method 'translate' (no registration).",
    wrong=[
        {"answer": 0.61, "ncc_on": 0.56},  # higher than registered: not what translate gives
        {"answer": 1.4, "ncc_on": 0.56},  # not a correlation
        {"answer": "lower", "ncc_on": 0.56},  # a word, not the measured number
    ],
)
def _ncc_without_registration(answer, ncc_on) -> str | None:
    """``answer``: the ``ncc`` QC measure of the translated head; ``ncc_on``: that of the
    registered head (the pipeline's result)."""
    if not is_number(answer):
        return "answer with the measured number: the 'ncc' entry of the QC measures."
    if not -1 <= float(answer) <= 1:
        return "an NCC is a correlation, between -1 and 1: take the 'ncc' QC measure."
    if float(answer) >= float(ncc_on) - 0.05:
        return (
            "that is not below the registered head's NCC. Did you preprocess the raw head with "
            "method='translate' (not the registered result) and take its 'ncc' measure?"
        )
    return None


_HALF_HEAD = {"ncc": 0.23, "wm_gm": 0.39, "coverage": 0.50, "brain_ml": 935.0}
_HALF_BOUNDS = {"ncc": (0.03, 1.0), "wm_gm": (0.18, math.inf), "coverage": (0.65, math.inf),
                "brain_ml": (700.0, 2500.0), "inside": None}  # fmt: skip


@register(
    "01.qc_flag_damaged_head",
    "The name of a QC measure that flags the head whose lower half is blanked.",
    wrong=[
        {"answer": "ncc", "measures": _HALF_HEAD, "bounds": _HALF_BOUNDS},  # inside its bounds
        {"answer": "inside", "measures": _HALF_HEAD, "bounds": _HALF_BOUNDS},  # not measured
        {"answer": "age", "measures": _HALF_HEAD, "bounds": _HALF_BOUNDS},  # not a QC measure
        {"answer": 0.5, "measures": _HALF_HEAD, "bounds": _HALF_BOUNDS},  # a value, not a name
    ],
)
def _qc_flag_damaged_head(answer, measures, bounds) -> str | None:
    """``answer``: a measure name (str); ``measures``: the damaged head's QC measures (dict of
    numbers); ``bounds``: ``{measure: (low, high) or None}`` of the method that preprocessed it
    (:func:`slicelib.qc.thresholds`)."""
    names = sorted(k for k, b in bounds.items() if b is not None and measures.get(k) is not None)
    if not isinstance(answer, str) or answer not in names:
        return f"answer with the name of one QC measure (a string), one of {names}."
    lo, hi = bounds[answer]
    if lo <= float(measures[answer]) <= hi:
        return (
            f"{answer} lies inside its bounds for this method: compare every measure with "
            "the bounds of qc.thresholds(method)."
        )
    return None


# Notebook 02: ImageNet vs scratch -------------------------------------------------------------


@register(
    "02.permutation_attention",
    "Build a slice model with attention pooling whose output does not change when its slices "
    "are shuffled.",
    wrong=[{"answer": "attention"}, {"answer": 0.0}],
)
def _permutation_attention(answer, x=None, order=None):
    """``answer``: a SliceModel; ``x`` (1, 1, X, Y, Z) tensor; ``order`` a permutation of X."""
    import torch  # the model's own dependency; a check needs it only for this exercise

    config = getattr(answer, "config", None)
    if config is None or not callable(answer):
        return "assign the model itself (a SliceModel), not its name or one of its outputs."
    if config.pooling not in ("attention", "gated_attention"):
        return f"this model pools with {config.pooling!r}; the exercise asks for attention pooling."
    if answer.training:
        return "put the model in eval mode (model.eval()) before measuring it."
    with torch.no_grad():
        change = float((answer(x) - answer(x[:, :, list(order)])).abs().max())
    if change > 1e-4:
        return (
            f"shuffling the slices changed the output by {change:.2g}: something in the model "
            "depends on the slice order. Which position and norm settings carry a per-slice code?"
        )
    return None


@register(
    "02.scratch_longer",
    "Train the fine-tuned scratch arm at lr 1e-3 with more epochs; its test MAE minus the "
    "fine-tuned ImageNet arm's (years).",
    wrong=[
        {"answer": 1.0, "results_dir": "/nonexistent/age_scratch_longer", "imagenet_mae": 8.0},
        {"answer": "1.0", "results_dir": "/nonexistent/age_scratch_longer", "imagenet_mae": 8.0},
    ],
)
def _scratch_longer(answer, results_dir=None, imagenet_mae=None, min_epochs=0):
    """``results_dir``: the compare folder of the longer run (its results.csv); the gap is
    that run's test MAE minus ``imagenet_mae`` (years); its epochs must exceed ``min_epochs``."""
    import json

    import pandas as pd

    if not is_number(answer):
        return "answer with one number: the scratch run's test MAE minus ImageNet's, in years."
    table = Path(results_dir) / "results.csv"
    if not table.is_file():
        return f"no results in {Path(results_dir).name}: train the longer scratch run there first."
    rows = pd.read_csv(table)
    rows = rows[(rows["weights"] == "none") & (rows["freeze_encoder"] == "no")]
    if rows.empty:
        return (
            "the run there is not a fine-tuned scratch arm (weights='none', freeze_encoder='no')."
        )
    row = rows.iloc[0]
    if not math.isclose(float(row["lr"]), 1e-3):
        return f"the run there used lr {row['lr']:g}; the exercise asks for 1e-3."
    saved = json.loads((Path(row["run"]) / "config.json").read_text())
    epochs = saved.get("train", {}).get("epochs")  # the run's TrainConfig
    if epochs is None or epochs <= min_epochs:
        return f"the run there trained {epochs} epochs; give it more than the arm's {min_epochs}."
    expected = float(row["mae"]) - float(imagenet_mae)
    if math.isclose(float(answer), -expected, abs_tol=0.01) and abs(expected) > 0.01:
        return "the sign is flipped: subtract ImageNet's MAE from the scratch run's."
    if not math.isclose(float(answer), expected, abs_tol=0.01):
        return "not the difference of the two test MAEs: use the run's 'mae' and imagenet_mae."
    return None


@register(
    "02.bias_corrected_gap",
    "Fit the age-bias line on the validation subjects, correct the test subjects, and give "
    "their mean absolute corrected gap (years).",
    wrong=[
        dict(
            answer=6.0,  # the raw test MAE: no correction applied
            val_age=[20.0, 40.0, 60.0, 80.0], val_pred=[35.0, 44.0, 57.0, 64.0],
            test_age=[30.0, 50.0, 70.0], test_pred=[38.0, 52.0, 62.0],
        ),
        dict(
            answer=0.889,  # the line fitted on the test subjects (a leak)
            val_age=[20.0, 40.0, 60.0, 80.0], val_pred=[35.0, 44.0, 57.0, 64.0],
            test_age=[30.0, 50.0, 70.0], test_pred=[38.0, 52.0, 62.0],
        ),
    ],
)  # fmt: skip
def _bias_corrected_gap(answer, val_age=(), val_pred=(), test_age=(), test_pred=()):
    """Arrays in years; the correction ``pred + age - (a * age + b)`` with (a, b) fitted on val."""
    if not is_number(answer):
        return "answer with one number: the mean absolute corrected gap, in years."
    age, pred = np.asarray(test_age, float), np.asarray(test_pred, float)

    def mean_abs_gap(a, b):
        return float(np.abs(correct_age_bias(age, pred, a, b) - age).mean())

    expected = mean_abs_gap(*fit_age_bias(val_age, val_pred))
    if math.isclose(float(answer), expected, abs_tol=1e-3):
        return None
    if math.isclose(float(answer), float(np.abs(pred - age).mean()), abs_tol=1e-3):
        return "that is the raw error of the test subjects: apply the correction first."
    if math.isclose(float(answer), mean_abs_gap(*fit_age_bias(age, pred)), abs_tol=1e-3):
        return "that line was fitted on the test subjects themselves: fit it on validation."
    return "fit (a, b) on the validation subjects, correct the test ones, then average |gap|."


# Notebook 03: position embeddings -------------------------------------------------------------

_Y3, _A3, _B3 = (
    np.array([30.0, 50.0, 70.0]),
    np.array([33.0, 49.0, 60.0]),
    np.array([35.0, 52.0, 71.0]),
)


@register(
    "03.paired_differences",
    "The per-subject differences of absolute errors, arm a minus arm b (years), one per subject.",
    wrong=[
        {"answer": np.abs(_B3 - _Y3) - np.abs(_A3 - _Y3), "y": _Y3, "pred_a": _A3, "pred_b": _B3},
        {"answer": _A3 - _B3, "y": _Y3, "pred_a": _A3, "pred_b": _B3},
        {"answer": float(np.mean(np.abs(_A3 - _Y3) - np.abs(_B3 - _Y3))), "y": _Y3,
         "pred_a": _A3, "pred_b": _B3},
    ],
)  # fmt: skip
def _paired_differences(answer, y, pred_a, pred_b):
    """``answer``: array [N] (years), ``|a_i - y_i| - |b_i - y_i|`` for the N test subjects in
    the order of ``y``; ``y``, ``pred_a``, ``pred_b``: arrays [N] (years)."""
    y, a, b = (np.asarray(v, dtype=float).reshape(-1) for v in (y, pred_a, pred_b))
    d = np.asarray(answer, dtype=float)
    if d.ndim == 0:
        return "one number per subject is needed (an array), not a single summary value."
    d = d.reshape(-1)
    if d.size != y.size:
        return f"your array has {d.size} values; there is one test subject per value ({y.size})."
    ea, eb = np.abs(a - y), np.abs(b - y)
    if np.allclose(d, ea - eb, atol=1e-6):
        return None
    if np.allclose(d, eb - ea, atol=1e-6):
        return "the sign is reversed: take arm a's absolute error minus arm b's."
    if np.allclose(d, a - b, atol=1e-6) or np.allclose(d, b - a, atol=1e-6):
        return (
            "that is a difference of predictions; compare the absolute errors |prediction - age|."
        )
    return "for each subject: absolute error of arm a minus absolute error of arm b, same order."


def _overlap(subject, fold) -> float:
    """Share of (fold, test subject) pairs whose subject also has slices in that fold's training
    part; ``subject``, ``fold``: arrays [n_slices] (the subject and the fold of each slice)."""
    import pandas as pd  # only the check needs it; numpy-only callers pay nothing

    counts = pd.crosstab(np.asarray(subject), np.asarray(fold)).to_numpy()  # (subjects, folds)
    tested = counts > 0
    trained = (counts.sum(axis=1, keepdims=True) - counts) > 0
    return float((tested & trained).sum() / tested.sum())


_SUBJ3 = np.repeat(np.arange(6), 4)  # 6 subjects x 4 slices
_FOLD3 = np.arange(24) % 3  # slice-level folds: every subject in every fold


@register(
    "03.leakage_overlap",
    "In the slice-level split, the share of a fold's test subjects that also have slices in "
    "that fold's training part (0 to 1).",
    wrong=[
        {"answer": 0.0, "subject": _SUBJ3, "fold": _FOLD3},
        {"answer": 0.2, "subject": _SUBJ3, "fold": _FOLD3},
        {"answer": 1.5, "subject": _SUBJ3, "fold": _FOLD3},
    ],
)
def _leakage_overlap(answer, subject, fold):
    """``answer``: a share in [0, 1]; ``subject``, ``fold``: arrays [n_slices], the subject and
    the slice-level fold of every slice."""
    if not is_number(answer):
        return "give one number: a share between 0 and 1."
    if not 0 <= float(answer) <= 1:
        return "a share lies between 0 and 1."
    if abs(float(answer) - _overlap(subject, fold)) < 1e-6:
        return None
    return (
        "for every fold: take the subjects of its test slices, and count those that also have a "
        "slice in the other folds; divide by all (fold, test subject) pairs."
    )


def _arm_rows(pooling, seeds=(0,), n=5) -> dict:
    """A small results table (compare's columns) for the wrong answers below."""
    k = len(seeds)
    return dict(position=["learned"] * k, norm=["set"] * k, pooling=[pooling] * k,
                seed=list(seeds), status=["ok"] * k, n_subjects=[n] * k, mae=[7.0] * k)  # fmt: skip


@register(
    "03.attention_pooling",
    "compare_on_split's results for the paper's arm (learned / set) with attention pooling, "
    "every seed, on the notebook's IXI split.",
    wrong=[
        {"answer": _arm_rows("mean", (0, 1)), "seeds": [0, 1], "n_test": 5},
        {"answer": _arm_rows("attention", (0,)), "seeds": [0, 1], "n_test": 5},
        {"answer": _arm_rows("attention", (0, 1), n=9), "seeds": [0, 1], "n_test": 5},
    ],
)
def _attention_pooling(answer, seeds, n_test):
    """``answer``: compare's results (a DataFrame, or a dict of its columns), one row per seed;
    ``seeds``: the notebook's seeds; ``n_test``: the number of IXI test subjects."""
    import pandas as pd  # only this check reads a table

    r = pd.DataFrame(answer)
    missing = [c for c in ("position", "norm", "pooling", "seed", "n_subjects") if c not in r]
    if missing:
        return f"pass the results table that compare_on_split returns (no column {missing[0]!r})."
    if set(r["pooling"]) != {"attention"}:
        return "these runs do not pool with attention: add 'pooling': ['attention'] to the grid."
    if set(r["position"]) != {"learned"} or set(r["norm"]) != {"set"}:
        return "keep everything else as in the paper's arm: position 'learned', norm 'set'."
    if sorted(int(s) for s in r["seed"]) != sorted(int(s) for s in seeds):
        return "train every seed of the notebook (seeds=S['SEEDS']), so seeds can be compared."
    if (pd.to_numeric(r["n_subjects"]) != n_test).any():
        return "train on the notebook's IXI split (ixi_split), so the test subjects are the same."
    return None


# Notebook 04: slice contributions -------------------------------------------------------------


def _pearson(a, b) -> float | None:
    """Pearson r of two 1-D arrays (``scipy.stats.pearsonr``); None when one is constant."""
    from scipy.stats import pearsonr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return None if np.ptp(a) == 0 or np.ptp(b) == 0 else float(pearsonr(a, b).statistic)


_PROFILE = [0, 1, 3, 1, 0, 0, 0]


@register(
    "04.shifted_truth",
    "Pearson r of the occlusion profile with the ground-truth AD profile moved by two slices",
    wrong=[{"answer": a, "profile": _PROFILE, "truth": _PROFILE} for a in (1.0, 0.2)],
)
def _shifted_truth(answer, profile, truth, shift: int = 2):
    """``profile``, ``truth``: ``(S,)`` profiles; ``answer``: r of ``profile`` with ``truth``
    moved by ``shift`` slices (either way; rolled round or zero-padded)."""
    if not is_number(answer):
        return "give one number: a Pearson correlation, between -1 and 1."
    p, t = np.asarray(profile, dtype=float), np.asarray(truth, dtype=float)
    padded = (
        np.concatenate([np.zeros(shift), t[:-shift]]),
        np.concatenate([t[shift:], np.zeros(shift)]),
    )
    moved = [np.roll(t, shift), np.roll(t, -shift), *padded]
    if any(r is not None and abs(answer - r) < 1e-3 for r in (_pearson(p, m) for m in moved)):
        return None
    if abs(answer - (_pearson(p, t) or np.nan)) < 1e-3:
        return "that is the correlation with the truth where it is: move the truth first."
    return f"move the truth by {shift} slices (np.roll), then E.profile_correlation(profile, it)."


@register(
    "04.ig_completeness",
    "The relative completeness error of integrated gradients for each number of steps",
    wrong=[
        {"answer": a, "sums": {1: 1.5, 4: 1.1}, "f_x": 2.0, "f_x0": 1.0}
        for a in ({1: 0.25, 4: 0.05}, {1: 0.5}, {1: 1.5, 4: 1.1})
    ],
)
def _ig_completeness(answer, sums, f_x, f_x0):
    """``sums``: {steps: Σ attributions of one volume}; ``f_x``, ``f_x0``: the output for it and
    for its baseline; ``answer``: {steps: |Σ - (f_x - f_x0)| / |f_x - f_x0|} (a fraction)."""
    if not isinstance(answer, dict) or {int(k) for k in answer} != {int(k) for k in sums}:
        return "give a dict {steps: relative error} with the same keys as ig_sums."
    got, delta = {int(k): v for k, v in answer.items()}, float(f_x) - float(f_x0)
    for steps, total in sums.items():
        value, want = got[int(steps)], abs(float(total) - delta) / abs(delta)
        if not is_number(value) or abs(value - want) > 1e-4 * max(1.0, want):
            return (
                "the error is |sum of the attributions - (f(x) - f(x0))| / |f(x) - f(x0)|, "
                "relative to the output change, for every step count."
            )
    return None


@register(
    "04.randomised_rank",
    "Spearman rank correlation of the trained and the untrained copy's mean occlusion profiles",
    wrong=[
        {"answer": a, "trained": [1, 2, 3, 4, 5], "randomised": b}
        for a, b in ((1.0, [5, 4, 3, 2, 1]), (0.3, [1, 3, 2, 5, 4]))
    ],
)
def _randomised_rank(answer, trained, randomised):
    """``trained``, ``randomised``: ``(S,)`` mean profiles; ``answer``: their Spearman rho."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(trained, randomised).statistic)
    if not math.isfinite(rho):  # a constant profile has no ranks
        ok = isinstance(answer, float) and math.isnan(answer)
        return None if ok else "one profile is constant here: the rank correlation is nan."
    if is_number(answer) and abs(answer - rho) < 1e-3:
        return None
    if is_number(answer) and abs(answer - (_pearson(trained, randomised) or np.nan)) < 1e-3:
        return "that is Pearson's r of the values; Spearman's correlates their ranks."
    return "rank-correlate the two mean profiles: scipy.stats.spearmanr(a, b).statistic."


# Student notebooks -----------------------------------------------------------------------------


def student_source(cell_source: str) -> str:
    """A solution cell's source as the student sees it: the lines between ``# BEGIN SOLUTION``
    and ``# END SOLUTION`` dropped; the ``# STUDENT: code`` lines right after a block become
    ``code`` in its place (``...  # your code here`` when there are none). Raises ValueError on
    unbalanced markers."""
    out, inside, pending, indent = [], False, False, ""
    for line in cell_source.splitlines():
        text = line.strip()
        if pending and not text.startswith(STUDENT):
            out.append(f"{indent}...  # your code here")
        if text.startswith(STUDENT) and not inside:
            out.append(line[: len(line) - len(line.lstrip())] + text[len(STUDENT) :].strip())
            pending = False
            continue
        pending = False
        if text == BEGIN:
            if inside:
                raise ValueError("'# BEGIN SOLUTION' twice without '# END SOLUTION'")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
        elif text == END:
            if not inside:
                raise ValueError("'# END SOLUTION' without '# BEGIN SOLUTION'")
            inside, pending = False, True
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'# BEGIN SOLUTION' without '# END SOLUTION'")
    if pending:
        out.append(f"{indent}...  # your code here")
    return "\n".join(out)


def student_notebook(source: str | os.PathLike):
    """The student version of one ``notebooks/*.py`` source as an nbformat notebook: every
    cell tagged ``solution`` rewritten by :func:`student_source`, its outputs cleared."""
    import jupytext  # the notebooks' own dependency (the [notebooks] extra), not the library's

    nb = jupytext.read(Path(source))
    for cell in nb.cells:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cell.source = student_source(cell.source)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
    return nb


def write_student_notebooks(sources, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<name>.ipynb`` (student version) for each source into ``out_dir``; the paths."""
    import nbformat

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        path = out / f"{Path(source).stem}.ipynb"
        nbformat.write(student_notebook(source), path)
        written.append(path)
    return written
