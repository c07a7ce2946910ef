"""The exercises: checks accept solutions and reject wrong answers; student notebooks hold no
solution. (The solution notebooks run with strict checks in tests/test_notebooks.py.)"""

import re

import pytest

from slicelib.course import NOTEBOOKS, notebook_sources, write_student_notebooks
from slicelib.exercises import (
    BEGIN,
    END,
    EXERCISES,
    ExerciseNotPassed,
    check,
    hint_for,
    register,
    student_source,
)


def _solution_lines(text: str) -> list[str]:
    """Every non-blank line between the solution markers of a notebook source."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def test_student_source_drops_the_solution_and_keeps_the_student_lines():
    cell = "x = 1\n# BEGIN SOLUTION\ny = secret(2)\n# END SOLUTION\n# STUDENT: y = ...\nprint(y)"
    assert student_source(cell) == "x = 1\ny = ...\nprint(y)"
    cell = "for i in r:\n    # BEGIN SOLUTION\n    z = 3\n    # END SOLUTION\nprint(z)"
    assert student_source(cell) == "for i in r:\n    ...  # your code here\nprint(z)"
    with pytest.raises(ValueError, match="END SOLUTION"):
        student_source("# BEGIN SOLUTION\nx = 1")


def test_check_accepts_rejects_with_a_hint_and_never_prints_the_expected_value(capsys, monkeypatch):
    monkeypatch.delenv("SLICELIB_STRICT_CHECKS", raising=False)
    name = "test.answer_is_42"
    secret = 42.0

    @register(name, "What is the answer?", wrong=[{"answer": 41}])
    def _test(answer, target=secret):
        return None if abs(answer - target) < 0.5 else "count again."

    try:
        assert hint_for(name, 42) is None and hint_for(name, 41) == "count again."
        assert "no answer yet" in hint_for(name, None)
        assert "could not be checked" in hint_for(name, "forty-two")  # a hint, not a traceback
        for answer in (42, 41, None, "forty-two"):
            assert check(name, answer) is None  # a cell shows the printed verdict only
        out = capsys.readouterr().out
        assert out.count("✓") == 1 and out.count("✗") == 3
        assert "count again" in out and "42" not in out.replace(name, "")
        monkeypatch.setenv("SLICELIB_STRICT_CHECKS", "1")
        with pytest.raises(ExerciseNotPassed):
            check(name, 41)
        with pytest.raises(KeyError, match="no exercise named"):
            check("test.nope", 1)
    finally:
        EXERCISES.pop(name)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_check_rejects_its_wrong_answers(name, monkeypatch):
    monkeypatch.delenv("SLICELIB_STRICT_CHECKS", raising=False)
    exercise = EXERCISES[name]
    assert exercise.wrong, f"{name} lists no wrong answer to reject"
    for case in exercise.wrong:
        case = dict(case)
        assert hint_for(name, case.pop("answer"), **case) is not None


def test_every_notebook_check_names_a_registered_exercise():
    for source in notebook_sources():
        for name in re.findall(r"check\(\s*[\"']([\w.]+)[\"']", source.read_text()):
            assert name in EXERCISES, f"{source.name} checks {name!r}, which is not registered"


def test_student_notebooks_hold_no_solution(tmp_path):
    paths = write_student_notebooks(notebook_sources(), tmp_path)
    assert [p.stem for p in paths] == list(NOTEBOOKS)
    for source, path in zip(notebook_sources(), paths):
        student = path.read_text()
        assert BEGIN not in student and END not in student
        for line in _solution_lines(source.read_text()):
            if len(line) > 12 and not line.startswith("#"):  # code, not a shared comment
                assert line not in student, f"{path.name} still holds solution line {line!r}"
