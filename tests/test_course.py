"""The course: seven lessons or more, each with checked exercises; student notebooks generated from them."""
import json

import pytest

from vaelayer_np.course.checks import CheckResult, compare_arrays, run_check
from vaelayer_np.tools.release_course import (
    BEGIN,
    END,
    STUDENT,
    code_hash,
    dumps,
    lesson_paths,
    strip_solution,
    student_version,
)

MAX_BYTES = 1_500_000  # a lesson with its stored figures stays small enough to read on the web


def _load(path):
    return json.loads(path.read_text())


def _code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_at_least_seven_lessons_in_order():
    names = [p.name for p in lesson_paths()]
    assert len(names) >= 7, names
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)]


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda p: p.stem)
def test_each_lesson_has_checked_exercises(path):
    nb = _load(path)
    code = _code(nb)
    exercises = [c for c in code if BEGIN in c]
    assert len(exercises) >= 2, f"{path.name}: {len(exercises)} exercises"
    assert sum(c.count("check_") for c in code) >= 2, f"{path.name}: no checker called"
    questions = [c for c in nb["cells"] if c["cell_type"] == "markdown" and BEGIN in "".join(c["source"])]
    assert questions, f"{path.name}: no inline question with an answer"


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda p: p.stem)
def test_lessons_are_stored_with_current_outputs_and_no_errors(path):
    nb = _load(path)
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    meta = nb.get("metadata", {}).get("vaelayer_np", {})
    assert meta.get("code_hash") == code_hash(nb), (
        f"{path.name}: the stored outputs come from other code; run "
        f"`python scripts/make_student_notebooks.py --execute --only {path.name}`")
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        assert cell.get("execution_count") is not None, f"{path.name}: a code cell was not executed"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: an error output is stored"
            text = "".join(out.get("text", "")) if isinstance(out.get("text"), (list, str)) else ""
            assert "FAIL" not in text, f"{path.name}: a checker's FAIL is stored in the solution:\n{text}"
            assert "DeprecationWarning" not in text, f"{path.name}: a DeprecationWarning is stored:\n{text}"


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda p: p.stem)
def test_student_notebooks_are_the_solutions_with_answers_removed(path):
    committed = STUDENT / path.name
    assert committed.exists(), f"missing {committed}; run python scripts/make_student_notebooks.py"
    regenerated = dumps(student_version(_load(path)))
    assert committed.read_text() == regenerated, (
        f"{committed.name} is out of sync with {path.name}; run python scripts/make_student_notebooks.py")
    text = committed.read_text()
    assert BEGIN not in text and END not in text and "NotImplementedError" in text


def test_no_student_notebook_without_a_lesson():
    lessons = {p.name for p in lesson_paths()}
    extra = {p.name for p in STUDENT.glob("*.ipynb")} - lessons
    assert not extra, extra


def test_strip_solution_keeps_indentation_and_refuses_unbalanced_markers():
    src = f"def f(x):\n    {BEGIN}\n    return x + 1\n    {END}\n\nprint(f)"
    assert strip_solution(src, "code") == "def f(x):\n    raise NotImplementedError()\n\nprint(f)"
    assert strip_solution(f"Answer:\n{BEGIN}\nbecause\n{END}", "markdown") == "Answer:\n*Your answer here.*"
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solution(f"{BEGIN}\nx = 1\n", "code")


def test_checkers_report_stubs_and_errors_as_fail_not_tracebacks():
    def stub(x):
        raise NotImplementedError()

    def broken(x):
        return x[10]

    ref = lambda x: x * 2  # noqa: E731
    inputs = lambda rng: (rng.standard_normal(3),)  # noqa: E731
    r = compare_arrays("double", stub, ref, inputs)
    assert not r.passed and "not implemented" in str(r) and str(r).startswith("FAIL")
    r = compare_arrays("double", broken, ref, inputs)
    assert not r.passed and "IndexError" in str(r)
    r = compare_arrays("double", lambda x: x * 2.001, ref, inputs)
    assert not r.passed and "measured" in str(r)
    r = compare_arrays("double", lambda x: x + x, ref, inputs)
    assert r.passed and str(r).startswith("PASS")
    assert isinstance(run_check("x", lambda: (0.0, True, "")), CheckResult)


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda p: p.stem)
def test_every_inline_question_has_an_answer_key_and_a_rubric(path):
    """The instructor's guide (vaelayer_np.course.guide): goals, prerequisites and time per lesson, and a rubric
    for each inline question, whose answer key is the solution notebook's answer."""
    from vaelayer_np.course import guide

    info = guide.LESSONS[path.stem]
    assert info["goals"] and info["prerequisites"] and info["minutes"] > 0
    questions = guide.inline_questions(path)
    assert questions and len(info["rubrics"]) == len(questions), (path.name, len(questions), len(info["rubrics"]))
    for (question, answer), rubric in zip(questions, info["rubrics"]):
        assert question and len(answer) > 100, question
        assert rubric and all(points > 0 and criterion for points, criterion in rubric)
    page = guide.instructors_markdown([path])
    assert all(answer.split("\n")[0] in page for _, answer in questions)
