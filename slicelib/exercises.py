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

__all__ = [
    "Exercise",
    "EXERCISES",
    "register",
    "check",
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


def check(name: str, answer, **context) -> bool:
    """Check the answer to exercise ``name``; print a tick, or a hint that does not give it away.

    Args:
        name: the exercise, e.g. ``"01.ncc_without_registration"`` (see :data:`EXERCISES`).
        answer: the student's answer (a number, an array, a function: the exercise says which).
        context: values from the notebook the check compares against (never printed).

    Returns True when accepted. With ``$SLICELIB_STRICT_CHECKS=1`` a rejected answer raises
    :class:`ExerciseNotPassed` (CI runs the solution notebooks that way).
    """
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES)) or "none"
        raise KeyError(f"no exercise named {name!r}; the exercises are: {known}")
    if answer is None or answer is Ellipsis:
        hint = "no answer yet: replace the ... above with your answer and run the cell again."
    else:
        try:
            hint = EXERCISES[name].test(answer, **context)
        except Exception as err:  # a malformed answer is a hint, not a traceback
            hint = f"your answer could not be checked ({type(err).__name__}: {err})."
    if hint is None:
        print(f"✓ {name}: correct.")
        return True
    print(f"✗ {name}: not yet. Hint: {hint}")
    if os.environ.get("SLICELIB_STRICT_CHECKS") == "1":
        raise ExerciseNotPassed(f"{name}: the answer was rejected ({hint})")
    return False


# Small building blocks for checks ------------------------------------------------------------


def is_number(x) -> bool:
    """True for a real, finite scalar (Python or NumPy; not a bool)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and (
        math.isfinite(float(x))
    )  # fmt: skip


# Notebook 01: data ---------------------------------------------------------------------------


# Notebook 02: ImageNet vs scratch -------------------------------------------------------------


# Notebook 03: position embeddings -------------------------------------------------------------


# Notebook 04: slice contributions -------------------------------------------------------------


def _pearson(a, b) -> float | None:
    """Pearson r of two 1-D arrays (``scipy.stats.pearsonr``); None when one is constant."""
    from scipy.stats import pearsonr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(pearsonr(a, b).statistic)


def _shifted(truth: np.ndarray, shift: int, wrap: bool) -> np.ndarray:
    """``truth`` moved by ``shift`` slices: rolled round (wrap) or padded with zeros."""
    if wrap:
        return np.roll(truth, shift)
    out = np.zeros_like(truth)
    if shift > 0:
        out[shift:] = truth[:-shift]
    elif shift < 0:
        out[:shift] = truth[-shift:]
    else:
        out[:] = truth
    return out


@register(
    "04.shifted_truth",
    "Shift the ground-truth AD profile by two slices: what is its Pearson r with the occlusion "
    "profile now?",
    wrong=[
        {"answer": 1.0, "profile": [0, 1, 3, 1, 0, 0, 0], "truth": [0, 1, 3, 1, 0, 0, 0]},
        {"answer": 0.2, "profile": [0, 1, 3, 1, 0, 0, 0], "truth": [0, 1, 3, 1, 0, 0, 0]},
    ],
)
def _shifted_truth(answer, profile, truth, shift: int = 2):
    """``profile``, ``truth``: ``(S,)`` occlusion profile and ground-truth AD profile (any
    units); ``answer``: Pearson r of ``profile`` with ``truth`` moved by ``shift`` slices (either
    direction, rolled round or zero-padded)."""
    if not is_number(answer):
        return "give one number: a Pearson correlation, between -1 and 1."
    p, t = np.asarray(profile, dtype=float), np.asarray(truth, dtype=float)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"profile {p.shape} and truth {t.shape} must be 1-D of one length")
    shifted = [_shifted(t, s, w) for s in (shift, -shift) for w in (True, False)]
    if any(
        r is not None and abs(answer - r) < 1e-3 for r in map(lambda q: _pearson(p, q), shifted)
    ):
        return None
    r0 = _pearson(p, t)
    if r0 is not None and abs(answer - r0) < 1e-3:
        return "that is the correlation with the truth where it is: move the truth first."
    return (
        f"move the ground-truth profile by {shift} slices (np.roll(truth, {shift})), then take "
        "E.profile_correlation(occlusion profile, shifted truth)."
    )


@register(
    "04.ig_completeness",
    "For each number of integration steps: the relative completeness error of integrated "
    "gradients, |sum of attributions - (f(x) - f(x0))| / |f(x) - f(x0)|",
    wrong=[
        {"answer": {1: 0.25, 4: 0.05}, "sums": {1: 1.5, 4: 1.1}, "f_x": 2.0, "f_x0": 1.0},
        {"answer": {1: 0.5}, "sums": {1: 1.5, 4: 1.1}, "f_x": 2.0, "f_x0": 1.0},
        {"answer": {1: 1.5, 4: 1.1}, "sums": {1: 1.5, 4: 1.1}, "f_x": 2.0, "f_x0": 1.0},
    ],
)
def _ig_completeness(answer, sums, f_x, f_x0):
    """``sums``: {steps: sum of the attribution map (output units)} of one volume; ``f_x``,
    ``f_x0``: the output for the volume and for its baseline volume; ``answer``: {steps: the
    relative completeness error} (a fraction, not a percentage)."""
    if not isinstance(answer, dict):
        return "give a dict {steps: relative error}, one entry per key of ig_sums."
    got = {int(k): v for k, v in answer.items()}
    if set(got) != {int(k) for k in sums}:
        return "give one entry per step count of ig_sums, with the same keys."
    delta = float(f_x) - float(f_x0)
    if delta == 0:
        raise ValueError("f(x) = f(x0): the relative error is undefined for this volume")
    for steps, total in sums.items():
        value = got[int(steps)]
        if not is_number(value):
            return f"the entry for {int(steps)} steps is not a finite number."
        want = abs(float(total) - delta) / abs(delta)
        if abs(value - want) > 1e-4 * max(1.0, want):
            if abs(value - abs(float(total) - delta)) < 1e-4 * max(1.0, abs(delta)):
                return "divide by |f(x) - f(x0)|: the error is relative to the output change."
            return (
                "the error is |sum of the attributions - (f(x) - f(x0))| / |f(x) - f(x0)|, "
                "where f(x0) is the output for the baseline volume."
            )
    return None


@register(
    "04.randomised_rank",
    "Spearman rank correlation between the trained model's and its untrained copy's mean "
    "occlusion profiles",
    wrong=[
        {"answer": 1.0, "trained": [1, 2, 3, 4, 5], "randomised": [5, 4, 3, 2, 1]},
        {"answer": 0.3, "trained": [1, 2, 3, 4, 5], "randomised": [1, 3, 2, 5, 4]},
    ],
)
def _randomised_rank(answer, trained, randomised):
    """``trained``, ``randomised``: ``(S,)`` mean occlusion profiles of the trained model and of
    its untrained copy; ``answer``: their Spearman rank correlation."""
    from scipy.stats import spearmanr

    a, b = np.asarray(trained, dtype=float), np.asarray(randomised, dtype=float)
    rho = float(spearmanr(a, b).statistic)
    if not math.isfinite(rho):  # a constant profile: no ranks to correlate
        ok = isinstance(answer, float) and math.isnan(answer)
        return None if ok else "one profile is constant here: the rank correlation is nan."
    if not is_number(answer):
        return "give one number: a rank correlation, between -1 and 1."
    if abs(answer - rho) < 1e-3:
        return None
    r = _pearson(a, b)
    if r is not None and abs(answer - r) < 1e-3:
        return "that is Pearson's r of the values; Spearman's correlates their ranks."
    return (
        "rank-correlate the two mean occlusion profiles (one value per slice): "
        "scipy.stats.spearmanr(trained, randomised).statistic."
    )


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
