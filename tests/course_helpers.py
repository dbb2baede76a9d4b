"""What the course's checker tests (tests/test_course_lesson*.py) share.

Each lesson's test file keeps its own correct answers, its planted wrong answers and its table
``PLANTED = [(checker, wrong answer, kind, words the diagnosis must contain), ...]``; the
assertions made on them are here, written once, and so are the two tests every table gets
(:func:`planted_tests`), and the test of correct answers and stubs (:func:`answer_test`).
"""
from __future__ import annotations

import pytest

REQUIRED_KINDS = frozenset({"in place", "library", "float32"})


def stub(*args, **kwargs):
    """A student's exercise before it is written."""
    raise NotImplementedError()


def planted_ids(planted):
    """Test ids for a PLANTED table: checker-kind-row."""
    return [f"{check.__name__}-{kind}-{i}" for i, (check, _, kind, _) in enumerate(planted)]


def assert_diagnosed(result, words, passes=False):
    """A checker's verdict on a planted wrong answer: FAIL with every word of the diagnosis in its text
    (``passes=True``: a variant that must pass, e.g. a harmless float32 computation)."""
    text = str(result)
    if passes:
        assert result.passed, text
        return
    assert not result.passed and text.startswith("FAIL"), text
    for word in words:
        assert word in text, f"{word!r} not in: {text}"


def assert_required_kinds(planted, checkers=None, required=REQUIRED_KINDS):
    """Every checker (``checkers``, or all those of the table) has at least four planted wrong answers,
    among them the required kinds (``required``: a set, or a function of the checker giving one). A kind
    may carry a note in parentheses, "float32 (passes)": the note is not part of the kind."""
    for check in checkers if checkers is not None else {c for c, *_ in planted}:
        kinds = [kind for c, _, kind, _ in planted if c is check]
        need = required(check) if callable(required) else required
        assert len(kinds) >= 4 and need <= {kind.split(" (")[0] for kind in kinds}, (check.__name__, kinds)


def assert_passes(result, below=None):
    """A checker's verdict on a correct answer: PASS (with ``below``: a measured error under it)."""
    assert result.passed, str(result)
    assert str(result).startswith("PASS"), str(result)
    if below is not None:
        assert result.figure < below, str(result)


def assert_reports_stub(result):
    """A checker's verdict on a stub: FAIL, "not implemented", no traceback."""
    text = str(result)
    assert not result.passed and text.startswith("FAIL") and "not implemented" in text, text


def planted_tests(planted, call=None, checkers=None, required=REQUIRED_KINDS):
    """The two tests of a lesson's PLANTED table, for its test module to bind to test names:

    * every planted wrong answer is diagnosed (:func:`assert_diagnosed`; a kind ending in "(passes)"
      must pass), one test per row; ``call(check, bug)`` runs a checker when ``check(bug)`` is not how;
    * every checker has four planted wrong answers of the required kinds (:func:`assert_required_kinds`).
    """
    @pytest.mark.parametrize("check, bug, kind, words", planted, ids=planted_ids(planted))
    def test_checker_diagnoses_a_planted_wrong_answer(check, bug, kind, words):
        result = call(check, bug) if call is not None else check(bug)
        assert_diagnosed(result, words, passes=kind.endswith("(passes)"))

    def test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds():
        assert_required_kinds(planted, checkers, required)

    return (test_checker_diagnoses_a_planted_wrong_answer,
            test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds)


def answer_test(answers, below=None):
    """One test per ``(checker, correct answer)`` of ``answers``: the checker passes the answer (with
    ``below``: a measured error under it, :func:`assert_passes`) and reports a stub as not implemented."""
    @pytest.mark.parametrize("check, answer", answers, ids=lambda v: getattr(v, "__name__", ""))
    def test_checker_passes_a_correct_answer_and_reports_a_stub(check, answer):
        assert_passes(check(answer), below=below)
        assert_reports_stub(check(stub))

    return test_checker_passes_a_correct_answer_and_reports_a_stub
