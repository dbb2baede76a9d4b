"""No answer on the page before its exercise: each student notebook is read cell by cell.

For every exercise (known by its checker's call), nothing before that call may hold a key
expression of its solution (vaelayer_np.course.answer_keys.KEYS: code of the solution, the final
formula of its derivation), nor print the source of a library function the exercise replaces.
"""
import importlib
import json
import re

import pytest

from vaelayer_np.course.answer_keys import CHECKER_MODULES, KEYS, normalise
from vaelayer_np.tools.release_course import BEGIN, STUDENT, lesson_paths


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def _before_checker(cells, checker):
    """All the text before the first call ``checker(`` (the cells before it, and its cell up to the call)."""
    for i, text in enumerate(cells):
        m = re.search(re.escape(checker) + r"\s*\(", text)
        if m and not text[:m.start()].rstrip().endswith(("import", ",")) and "def " + checker not in text:
            return "\n".join(cells[:i]) + "\n" + text[:m.start()], i
    return None, None


def _forbidden(stem, checker):
    module = importlib.import_module(f"vaelayer_np.course.{CHECKER_MODULES[stem]}")
    forbidden = getattr(module, "FORBIDDEN", {})
    names = set()
    for key, dotted in forbidden.items():
        if key in checker or checker.endswith(key) or key.split("_")[0] in checker:
            names.update(d.rsplit(".", 1)[-1] for d in dotted)
    return names


LESSONS = [p.stem for p in lesson_paths()]


def test_every_lesson_has_answer_keys_for_each_exercise():
    for stem in LESSONS:
        assert stem in KEYS, f"no answer keys for {stem} in vaelayer_np/course/answer_keys.py"
        nb = json.loads((STUDENT.parent / f"{stem}.ipynb").read_text())
        n_exercises = sum(1 for c in nb["cells"] if c["cell_type"] == "code" and BEGIN in "".join(c["source"]))
        assert len(KEYS[stem]) >= min(n_exercises, 2), stem


@pytest.mark.parametrize("stem", LESSONS)
def test_keys_name_real_solutions(stem):
    """Each exercise's keys include at least one expression of the solution notebook: they are not typos."""
    solution = normalise("\n".join(_cells(STUDENT.parent / f"{stem}.ipynb")))
    for checker, keys in KEYS[stem].items():
        assert checker in solution, f"{stem}: no call of {checker}"
        assert any(normalise(k) in solution for k in keys), f"{stem}: none of the keys of {checker} is in the solution"


@pytest.mark.parametrize("stem", LESSONS)
def test_no_answer_before_its_checker_in_the_student_notebook(stem):
    cells = _cells(STUDENT / f"{stem}.ipynb")
    problems = []
    for checker, keys in KEYS[stem].items():
        before, where = _before_checker(cells, checker)
        assert before is not None, f"{stem}: {checker} is never called"
        flat = normalise(before)
        for key in keys:
            if normalise(key) in flat:
                problems.append(f"{checker} (cell {where}): {key!r} appears before it")
        for name in _forbidden(stem, checker):
            if re.search(r"(getsource|show_source)\([^)\n]*\b" + re.escape(name) + r"\b", before):
                problems.append(f"{checker} (cell {where}): the source of {name} is printed before it")
    assert not problems, f"{stem}:\n" + "\n".join(problems)
