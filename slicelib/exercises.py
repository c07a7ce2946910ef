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
