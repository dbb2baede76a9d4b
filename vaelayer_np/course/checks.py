"""Shared machinery of the exercise checkers.

A checker is a function ``check_x(student_fn) -> CheckResult``. It runs the student's
function on inputs it chooses, measures one figure (an error against the reference,
an accuracy after a short training run, ...) and compares it with a bound. A stub
that still raises ``NotImplementedError``, or any other exception, is a FAIL with a
message that says so, never a traceback in the middle of a lesson.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np


@dataclass
class CheckResult:
    """The verdict of one checker: what was checked, PASS or FAIL, the figure and its bound."""

    name: str
    passed: bool
    figure: float = float("nan")
    bound: str = ""
    message: str = ""

    def __str__(self):
        verdict = "PASS" if self.passed else "FAIL"
        parts = [f"{verdict}  {self.name}"]
        if np.isfinite(self.figure):
            parts.append(f"measured {self.figure:.3g}" + (f" (expected {self.bound})" if self.bound else ""))
        if self.message:
            parts.append(self.message)
        return ": ".join(parts[:1]) + ("  " + "; ".join(parts[1:]) if len(parts) > 1 else "")

    def _repr_pretty_(self, printer, cycle):  # IPython shows the verdict line, not the dataclass
        printer.text(str(self))

    def __bool__(self):
        return self.passed


def run_check(name, body, bound=""):
    """Run ``body() -> (figure, passed, message)`` and turn every failure into a FAIL result.

    A ``NotImplementedError`` from the student's code reads "not implemented yet"; any other
    exception reads with its type, message and the line of the student's code it came from.
    """
    try:
        figure, passed, message = body()
    except NotImplementedError:
        return CheckResult(name, False, bound=bound, message="not implemented yet (the function still raises "
                                                             "NotImplementedError)")
    except Exception as exc:  # noqa: BLE001 - a checker reports, it does not crash the lesson
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(name, False, bound=bound, message=f"your code raised {type(exc).__name__}: {exc} "
                                                             f"(line {where.lineno}: {where.line})")
    return CheckResult(name, bool(passed), float(figure), bound, message)


def max_relative_error(got, expected, floor=1e-8):
    """max |got - expected| / max(max |got|, max |expected|, floor): the gradient check's own measure
    (:func:`vaelayer_np.core.gradcheck.relative_error`), with a message naming the shapes on a mismatch."""
    from ..core.gradcheck import relative_error

    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"expected an array of shape {expected.shape}, got shape {got.shape}")
    return relative_error(got, expected, floor)


def compare_arrays(name, student_fn, reference_fn, make_inputs, tol=1e-7, n_trials=3, seed=0):
    """Check ``student_fn(*inputs)`` against ``reference_fn(*inputs)`` on random inputs.

    ``make_inputs(rng)`` returns a tuple of arguments; both functions may return an array
    or a tuple of arrays (and floats). The figure is the worst relative error over the trials.
    """
    def body():
        rng = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(n_trials):
            args = make_inputs(rng)
            got = student_fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
            want = reference_fn(*args)
            got_t = got if isinstance(got, tuple) else (got,)
            want_t = want if isinstance(want, tuple) else (want,)
            if len(got_t) != len(want_t):
                return np.inf, False, f"expected {len(want_t)} return values, got {len(got_t)}"
            for g, w in zip(got_t, want_t):
                if g is None:
                    return np.inf, False, "a return value is None"
                worst = max(worst, max_relative_error(g, w))
        return worst, worst < tol, ""

    return run_check(name, body, bound=f"below {tol:g}")


def check_gradient(name, f, student_grad, tensors, tol=1e-7):
    """Check hand-written gradients against float64 central differences.

    ``f()`` is the scalar, reading ``tensors`` (dict name -> float64 array) at call time;
    ``student_grad()`` returns a dict with one gradient per tensor. Uses
    :func:`vaelayer_np.core.gradcheck.check_gradients`, so the verdict is the library's own.
    """
    from ..core.gradcheck import check_gradients

    def body():
        grads = student_grad()
        if not isinstance(grads, dict):
            return np.inf, False, f"expected a dict of gradients, got {type(grads).__name__}"
        missing = [k for k in tensors if k not in grads or grads[k] is None]
        if missing:
            return np.inf, False, f"no gradient for {', '.join(missing)}"
        results = check_gradients(name, f, tensors, grads, tol=tol)
        worst = max(r.max_rel_error for r in results)
        bad = [f"{r.tensor} ({r.status}, error {r.max_rel_error:.2g})" for r in results if not r.passed]
        return worst, not bad, ("wrong: " + ", ".join(bad)) if bad else ""

    return run_check(name, body, bound=f"below {tol:g}, float64 central differences")


def show(*results):
    """Print each result and return True when all passed (the last line of a checker cell)."""
    for r in results:
        print(r)
    return all(bool(r) for r in results)
