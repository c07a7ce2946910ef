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
