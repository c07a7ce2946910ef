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


# Notebook 03: position embeddings -------------------------------------------------------------


# Notebook 04: slice contributions -------------------------------------------------------------


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
