"""Student code cannot escape or fool a checker, and numbers that are not numbers fail closed.

Every checker of every lesson and of the capstone (found from the lessons' notebooks, and compared with
the ``check_*`` functions of the course's modules) is given the solution notebook's answer with a NaN or
an inf planted in what it returns: each FAILs naming it. A checker runs isolated: every way a student's
function can end (an exit, any ``BaseException``, an exception that cannot be printed, an endless loop,
a huge allocation) and every replacement of NumPy or of the checker's own helpers is a FAIL with its
reason, and the notebook's own process is untouched.
"""
import importlib
import json
import math
import os
import signal
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelayer_np.course import checks, grade, lesson01, lesson02
from vaelayer_np.tools.release_course import lesson_paths

pytestmark = pytest.mark.skipif(not checks.can_isolate(), reason="isolation needs os.fork")

COURSE_MODULES = [f"vaelayer_np.course.lesson0{i}" for i in range(1, 8)] + ["vaelayer_np.course.capstone"]


# ----------------------------------------------------------------------------- every checker, from the notebooks
def _exercises():
    """One exercise per checker (the first notebook that calls it), with its lesson's path."""
    found = {}
    for path in lesson_paths():
        for ex in grade.lesson_exercises(path):
            found.setdefault((ex.module, ex.checker), (path, ex))
    return found


EXERCISES = _exercises()


def test_the_notebooks_call_every_checker_of_the_course():
    defined = {(m, name) for m in COURSE_MODULES for name, f in vars(importlib.import_module(m)).items()
               if name.startswith("check_") and callable(f) and getattr(f, "__module__", "") == m}
    assert len(defined) >= 25
    assert defined == set(EXERCISES), defined ^ set(EXERCISES)


def _solution(path, ex):
    """The checker's arguments from the solution notebook (the exercise's answer, and what the lesson gives)."""
    kept, notes = grade.student_code(json.loads(path.read_text()))
    namespace, failed = grade.namespace_for(ex, kept, path.name)
    assert not notes and not failed, (notes, failed)
    return namespace


# The answers that hold no float, where no NaN can be planted (a boolean mask of the active units, the
# place of a bug), and how many checkers at least have one.
NO_FLOAT_ANSWER = {("vaelayer_np.course.lesson05", "check_active_units"), ("vaelayer_np.course.lesson03",
                                                                          "check_locate_bug")}


def _poison_value(value, mode):
    """``value`` with a NaN or an inf planted: "all" (every float NaN), "one" (one NaN), "inf" (one inf)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
        out = value.copy()
        if mode == "all":
            out[...] = np.nan
        else:
            out.reshape(-1)[-1] = np.nan if mode == "one" else np.inf
        return out, True
    if isinstance(value, (float, np.floating)):
        return type(value)(np.nan if mode != "inf" else np.inf), True
    if isinstance(value, (tuple, list)):
        parts = [_poison_value(v, mode) for v in value]
        return type(value)(p for p, _ in parts), any(c for _, c in parts)
    if isinstance(value, dict):
        parts = {k: _poison_value(v, mode) for k, v in value.items()}
        return {k: p for k, (p, _) in parts.items()}, any(c for _, c in parts.values())
    return value, False


def _as_lists(value):
    """Every tuple of ``value`` a list (the same answer in the other container)."""
    if isinstance(value, tuple):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _poisoned(fn, mode, planted):
    """``fn`` whose results (and the output arrays it writes in place) carry a planted NaN or inf."""
    if isinstance(fn, type):
        methods = {name: _poisoned(m, mode, planted) for name, m in vars(fn).items()
                   if callable(m) and not name.startswith("_")}
        return type(fn.__name__, (fn,), methods)

    def wrapper(*args, **kwargs):
        before = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
        result = fn(*args, **kwargs)
        for a, b in zip(args, before):
            if b is not None and a.dtype.kind == "f" and a.size and not np.array_equal(a, b, equal_nan=True):
                if mode != "lists":
                    a[...] = _poison_value(a, mode)[0]  # an output written in place
                    planted.append(True)
        if mode == "lists":
            planted.append(isinstance(result, tuple))
            return _as_lists(result)
        if mode == "sleep":
            time.sleep(3600)
        result, changed = _poison_value(result, mode)
        planted.append(changed)
        return result

    wrapper.__name__ = getattr(fn, "__name__", "poisoned")
    return wrapper


def _run_planted(key, mode):
    path, ex = EXERCISES[key]
    namespace = _solution(path, ex)
    planted = []
    args = [namespace[a] for a in ex.args]
    args[0] = _poisoned(args[0], mode, planted)
    checker = getattr(importlib.import_module(ex.module), ex.checker)
    kwargs = dict(ex.keywords, **({"time_it": False} if "time_it" in checker.__wrapped__.__code__.co_varnames
                                   else {}))
    return checker(*args, **kwargs), planted


@pytest.mark.parametrize("mode", ["all", "one", "inf"])
@pytest.mark.parametrize("key", sorted(EXERCISES), ids=lambda k: f"{k[0].rsplit('.', 1)[1]}.{k[1]}")
def test_every_checker_fails_a_planted_nan_or_inf_and_names_it(key, mode):
    result, planted = _run_planted(key, mode)
    text = str(result)
    if key in NO_FLOAT_ANSWER:
        assert not any(planted) and result.passed, text
        return
    assert not result.passed and text.startswith("FAIL"), text
    assert ("NaN" in text) if mode != "inf" else ("inf" in text), text


@pytest.mark.parametrize("key", sorted(EXERCISES), ids=lambda k: f"{k[0].rsplit('.', 1)[1]}.{k[1]}")
def test_every_checker_takes_lists_where_the_answer_has_tuples(key):
    result, planted = _run_planted(key, "lists")
    assert result.passed, str(result)


@pytest.mark.parametrize("key", sorted(EXERCISES), ids=lambda k: f"{k[0].rsplit('.', 1)[1]}.{k[1]}")
def test_every_checker_stops_the_student_code_at_its_time_limit_and_says_so(key):
    start = time.monotonic()
    with checks.limits(seconds=1.5):
        result, _ = _run_planted(key, "sleep")
    assert not result.passed and "took longer than 1.5 s (the time limit of a check)" in str(result), str(result)
    assert time.monotonic() - start < 1.5 + 30


def test_nonfinite_report_names_where():
    a = np.zeros((3, 4))
    a[2, 1] = np.nan
    assert checks.nonfinite_report(a) .startswith("your answer contains NaN at [2, 1] (1 of 12 elements)")
    assert "contains inf at [1][0]" in checks.nonfinite_report((np.ones(2), np.array([np.inf, 1.0])))
    assert checks.nonfinite_report({"W": np.ones(2)}) == ""
    assert "contains NaN at its value" in checks.nonfinite_report(float("nan"))
    with pytest.raises(checks.Diagnosis, match="NaN at"):
        checks.max_relative_error(np.full(3, np.nan), np.ones(3))
    assert checks.max_relative_error(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])) == 0.0
    assert checks.max_relative_error(np.ones(2), np.array([np.nan, 1.0])) == math.inf


def test_a_pass_on_a_nan_figure_is_a_fail():
    r = checks.run_check("x", lambda: (float("nan"), True, ""))
    assert not r.passed and "NaN" in str(r)
    r = checks.run_check("x", lambda: (float("inf"), True, ""))
    assert not r.passed and "inf" in str(r)


# ----------------------------------------------------------------------------- escaping and fooling
def _right_bound(r, c):
    return c * np.tanh(r / c)


def _wrong_bound(r, c):
    return np.tanh(r / c)


def check(fn):
    return lesson01.check_bounded_log_var(fn)


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


class Custom(BaseException):
    pass


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from([SystemExit, KeyboardInterrupt, GeneratorExit, Custom, BaseException, Unprintable,
                             ValueError, MemoryError, RecursionError, StopIteration]),
       code=st.one_of(st.none(), st.integers(-3, 300), st.text(max_size=5)))
def test_every_exception_and_exit_is_a_fail_with_a_reason(kind, code):
    def student(r, c):
        raise kind(code) if kind is not SystemExit else SystemExit(code)

    result = check(student)
    text = str(result)
    assert not result.passed and text.startswith("FAIL  bounded_log_var"), text
    assert kind.__name__ in text or "sys.exit" in text or "memory" in text, text
    if kind is Unprintable:
        assert "could not be printed" in text


@pytest.mark.parametrize("code", [0, 1, 7])
def test_an_exit_of_the_process_is_a_fail_naming_it(code):
    def student(r, c):
        os._exit(code)

    result = check(student)
    assert not result.passed and f"ended the process (exit status {code}" in str(result), str(result)


def test_a_crash_is_a_fail_naming_the_signal():
    def student(r, c):
        os.kill(os.getpid(), signal.SIGSEGV)

    result = check(student)
    assert not result.passed and "crashed (signal SIGSEGV)" in str(result), str(result)


@pytest.mark.parametrize("body", ["while True:\n        pass", "import time\n    time.sleep(3600)",
                                  "import signal\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                  "    while True:\n        pass"])
def test_an_endless_loop_or_sleep_is_stopped_at_the_limit_and_said_so(body):
    namespace = {}
    exec(f"def student(r, c):\n    {body}\n", namespace)
    start = time.monotonic()
    with checks.limits(seconds=1.5):
        result = check(namespace["student"])
    assert time.monotonic() - start < 1.5 + 10
    assert not result.passed and "took longer than 1.5 s (the time limit of a check)" in str(result), str(result)


def test_a_huge_allocation_is_a_fail_and_the_limit_is_named():
    def student(r, c):
        big = np.ones(20 * 2 ** 30 // 8)  # 20 GB
        return c * np.tanh(r / c) + big[0] - 1

    with checks.limits(memory_gb=1):
        result = check(student)
    assert not result.passed and "ran out of memory (the limit is 1 GB per check)" in str(result), str(result)


@pytest.mark.parametrize("target", ["np.tanh", "np.abs", "checks.max_relative_error", "checks.compare_values",
                                    "lesson01.TOLERANCE", "checks.CheckResult"])
def test_replacing_numpy_or_a_checker_helper_is_a_fail(target):
    owner, attr = target.rsplit(".", 1)

    def student(r, c):
        obj = {"np": np, "checks": checks, "lesson01": lesson01}[owner]
        fake = {"TOLERANCE": 1e300, "CheckResult": lambda *a, **k: None}.get(attr, lambda *a, **k: 0.0)
        setattr(obj, attr, fake)
        return np.tanh(r / c)  # wrong, whatever the replaced function would say

    original = getattr({"np": np, "checks": checks, "lesson01": lesson01}[owner], attr)
    result = check(student)
    assert not result.passed and "your code replaced" in str(result), str(result)
    assert getattr({"np": np, "checks": checks, "lesson01": lesson01}[owner], attr) is original  # never here


def test_a_replacement_made_before_the_check_is_not_used_by_the_checker(monkeypatch):
    monkeypatch.setattr(checks, "max_relative_error", lambda *a, **k: 0.0)  # what a notebook cell could do
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    result = check(_wrong_bound)
    assert not result.passed and "without the factor c" in str(result), str(result)
    assert "had been replaced in this notebook; the check used the originals" in str(result)
    assert check(_right_bound).passed


def test_a_replacement_that_puts_itself_back_is_caught():
    original = checks.max_relative_error

    def fake(*a, **k):
        checks.max_relative_error = original
        return 0.0

    def student(r, c):
        checks.max_relative_error = fake
        return np.tanh(r / c)

    result = check(student)
    assert not result.passed and "replaced vaelayer_np.course.checks.max_relative_error" in str(result)


def test_nothing_the_student_code_does_reaches_the_notebook_process():
    marker = []

    def student(r, c):
        marker.append(1)
        sys.modules["numpy"].tanh = None
        os.environ["VAELAYER_TEST_MARK"] = "1"
        return c * np.tanh(r / c)

    before = np.tanh
    assert not check(student).passed
    assert marker == [] and np.tanh is before and "VAELAYER_TEST_MARK" not in os.environ


def test_a_returned_string_is_named_and_lists_equal_tuples():
    result = check(lambda r, c: "tanh")
    assert not result.passed and "returned a string ('tanh')" in str(result), str(result)
    result = lesson01.check_neg_elbo(lambda x, x_hat, mu, lv, beta: [float(np.mean((x_hat - x) ** 2)), 0.0, 0.0])
    assert "contains" not in str(result)
    right = lesson02.check_kl_gradients(lambda mu, lv: [mu / mu.shape[0], (np.exp(lv) - 1) / (2 * mu.shape[0])])
    assert right.passed, str(right)


def test_the_checker_s_own_failure_is_named_as_such():
    result = check(lambda r, c: [[1.0, 2.0], [3.0]])  # ragged: NumPy cannot make an array of it
    text = str(result)
    assert not result.passed and "the checker could not use what your function returned (a list" in text, text
    assert "your code raised" not in text


def test_printed_output_comes_back_and_verdicts_are_right():
    def student(r, c):
        print("hello from the student")
        return c * np.tanh(r / c)

    assert check(student).passed
    assert not check(_wrong_bound).passed


def test_ctrl_c_while_a_check_runs_stops_it_and_reaches_the_caller():
    class Stop(Exception):
        pass

    def on_alarm(signum, frame):
        raise Stop()

    def student(r, c):
        time.sleep(60)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    start = time.monotonic()
    try:
        with pytest.raises(Stop):
            check(student)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - start < 10
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the check's process was ended and reaped


def test_limits_are_validated():
    for bad in (0, -1, float("nan"), float("inf"), "3", True):
        with pytest.raises(ValueError, match="limits: seconds must be a positive number"):
            with checks.limits(seconds=bad):
                pass


_values = st.recursive(st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=4),
                                 st.builds(lambda n: np.full(n, 0.5), st.integers(0, 3))),
                       lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                               st.dictionaries(st.text(max_size=2), inner, max_size=2)),
                       max_leaves=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values)
def test_whatever_a_function_returns_the_checker_gives_a_verdict_with_a_reason(value):
    result = lesson01.check_neg_elbo(lambda x, x_hat, mu, log_var, beta: value)
    assert isinstance(result, checks.CheckResult)
    assert not result.passed and str(result).startswith("FAIL  neg_elbo") and result.message, str(result)


def test_a_tuple_and_a_list_are_the_same_answer():
    def right(x, x_hat, mu, log_var, beta):
        recon = np.mean((x_hat - x) ** 2)
        kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var)) / x.shape[0]
        return recon, kl, recon + beta * kl

    assert lesson01.check_neg_elbo(right).passed
    assert lesson01.check_neg_elbo(lambda *a: list(right(*a))).passed


def test_a_process_the_student_code_starts_ends_with_the_check(tmp_path):
    record = tmp_path / "pid"

    def student(r, c):
        if os.fork() == 0:  # a copy of the check's process, holding the verdict's pipe open
            record.write_text(str(os.getpid()))
            time.sleep(600)
            os._exit(0)
        while not record.exists():
            time.sleep(0.01)
        return c * np.tanh(r / c)

    start = time.monotonic()
    with checks.limits(seconds=20):
        result = check(student)
    assert result.passed, str(result)
    assert time.monotonic() - start < 15
    time.sleep(0.5)
    status = f"/proc/{record.read_text()}/status"
    assert not os.path.exists(status) or "zombie" in open(status).read()  # killed (reaped or not by init)


def test_without_a_fork_the_check_runs_here_with_the_same_verdicts(monkeypatch):
    monkeypatch.setenv("VAELAYER_CHECK_ISOLATION", "0")
    assert not checks.can_isolate()
    seen = []

    def student(r, c):
        seen.append(os.getpid())
        np.tanh = lambda v: v  # replaced here, in this process: put back after the check
        return np.zeros_like(r)

    original = np.tanh
    result = check(student)
    assert seen == [os.getpid()] * len(seen) and seen  # ran in this process
    assert not result.passed and "your code replaced numpy.tanh" in str(result), str(result)
    assert np.tanh is original
    for exc in (SystemExit(0), GeneratorExit(), Custom()):
        def raising(r, c, exc=exc):
            raise exc

        result = check(raising)
        assert not result.passed and str(result).startswith("FAIL  bounded_log_var"), str(result)
    assert check(_right_bound).passed


def test_catch_all_hints_fire_only_when_they_fit():
    assert checks.explain_difference(np.array(3.7), np.array(2.0)) == ""  # one number is a multiple of any other
    assert "2 times the right answer" in checks.explain_difference(np.array(4.0), np.array(2.0))
    assert "constant factor is wrong" in checks.explain_difference(np.full(3, 3.7), np.ones(3))
    with pytest.raises(checks.Diagnosis, match=r"`x` is a string \('abc'\), not numbers"):
        checks.compare_values("abc", np.ones(3), ("x",), 1e-7)
    with pytest.raises(checks.Diagnosis, match="`x` is a dict with the keys 'a', not numbers"):
        checks.compare_values(({"a": 1}, np.ones(2)), (np.ones(3), np.ones(2)), ("x", "y"), 1e-7)
