"""Shared machinery of the exercise checkers: a verdict, and a diagnosis when the verdict is FAIL.

A checker is a function ``check_x(student_fn) -> CheckResult``. It runs the student's
function on inputs it chooses, measures one figure (an error against the reference,
an accuracy after a short training run, ...) and compares it with a bound. A stub
that still raises ``NotImplementedError``, or any other exception, is a FAIL with a
message that says so, never a traceback in the middle of a lesson.

A FAIL says *why* where it can. The pieces, used by every lesson's checkers:

* :func:`call_student` runs the student's function with **tripwires** on the library
  functions the exercise replaces (a call of one of them is a FAIL that names it), refuses
  a function whose code names one of them, and compares every array argument before and
  after the call (an input changed **in place** is a FAIL that names the argument: a later
  cell reusing it would see the changed values);
* :func:`compare_values` compares returned values with the reference **by name** (which of
  the three or four returned values is wrong), checks their **dtype** and shape (a transposed
  result is named as such) and explains a wrong value: a flipped sign, a constant factor
  (N, N*D, 2 ...), or one of the exercise's **common slips** (each a candidate answer the
  checker computes from the same inputs, e.g. the variance where the log-variance belongs);
* :func:`run_check` turns a :class:`Diagnosis` raised anywhere in a checker into a FAIL with
  its message, and any other exception into a FAIL that points at the line of the
  **student's** code it came from (the innermost frame outside the package), not at the
  checker's; an exception raised by the checker itself while it uses what the student's
  function returned is named as the checker's, with what the function returned.

Numbers that are not numbers **fail closed**: a NaN compares False with every bound, so an
answer holding a NaN or an inf is a FAIL that names it ("your answer contains NaN at [2, 3]"),
whatever the comparison of the checker (:func:`nonfinite_report`, :func:`max_relative_error`,
and a last look at everything the student's function returned, :func:`fail_closed`).

Every lesson's checker runs **isolated** (:func:`isolated`, :func:`run_isolated`): on Linux and
macOS the whole check runs in a forked copy of the Python process, with a time limit and a memory
limit (:data:`LIMITS`, :func:`limits`), and only its verdict comes back, through a pipe. Whatever
the student's code does there (``sys.exit(0)``, any exception or ``BaseException``, an exception
whose message cannot be printed, an endless loop or sleep, a huge allocation, replacing a NumPy
function or a checker's helper) ends in a FAIL that says what happened, and the notebook's own
Python process is untouched. The library's functions and NumPy's are put back to what they were
when the checkers were imported before the check runs (the checker uses its own references, not
what a notebook may have replaced), and a replacement made while the check runs is a FAIL.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import math
import os
import select
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # vaelayer_np/
_NUMPY_DIR = Path(np.__file__).resolve().parent
SAME = 1e-6  # a wrong answer "looks like" a slip when it matches the slip to this relative error


@dataclass
class CheckResult:
    """The verdict of one checker: what was checked, PASS or FAIL, the figure and its bound."""

    name: str
    passed: bool
    figure: float = float("nan")
    bound: str = ""
    message: str = ""

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        parts = [f"{verdict}  {self.name}"]
        if np.isfinite(self.figure):
            parts.append(f"measured {self.figure:.3g}" + (f" (expected {self.bound})" if self.bound else ""))
        if self.message:
            parts.append(self.message)
        return ": ".join(parts[:1]) + ("  " + "; ".join(parts[1:]) if len(parts) > 1 else "")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the verdict line, not the dataclass
        printer.text(str(self))

    def __bool__(self) -> bool:
        return self.passed


class Diagnosis(Exception):
    """Raised inside a checker's body: the check is a FAIL, with this message and figure."""

    def __init__(self, message: str, figure: Any = float("inf")) -> None:
        super().__init__(message)
        self.message = message
        self.figure = figure


class LibraryCallError(Diagnosis):
    """Raised by a tripwire: the student's code called a library function the exercise replaces."""


# The checks' own state (a dict, so that the watch on module attributes never mistakes it for a replacement).
_STATE: dict[str, Any] = {
    "in_child": False,       # True in the forked process of an isolated check (no second fork there)
    "depth": 0,              # how many run_check calls are running (the outermost one reports NaN seen)
    "nonfinite": [],         # what the student's functions returned that is NaN or inf, as sentences
    "tampered": [],          # what the student's code replaced while the check ran, as dotted names
    "last_return": None,     # a short description of what the student's function last returned
}


# ----------------------------------------------------------------------------- numbers that are not numbers
def _nonfinite_in(value: Any, where: str, found: list[tuple[str, str, int, int]], depth: int = 0) -> None:
    """Append (location, kinds, count, size) for every non-finite float in ``value`` (arrays, floats, tuples,
    lists and dicts of them, to a small depth)."""
    if depth > 4 or len(found) > 20:
        return
    if isinstance(value, (bool, int, np.integer)):
        return
    if isinstance(value, (float, np.floating, complex, np.complexfloating)):
        if not np.isfinite(value):
            found.append((where, "NaN" if value != value else "inf", 1, 1))
        return
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fc" or value.size == 0:
            return
        mask = ~np.isfinite(value)
        if not mask.any():
            return
        first = tuple(int(i) for i in np.argwhere(mask)[0]) if value.ndim else ()
        kinds = []
        if np.isnan(value).any():
            kinds.append("NaN")
        if np.isinf(value).any():
            kinds.append("inf")
        loc = where + ("[" + ", ".join(map(str, first)) + "]" if value.ndim else "")
        found.append((loc, " and ".join(kinds), int(mask.sum()), value.size))
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value[:64]):
            _nonfinite_in(v, f"{where}[{i}]", found, depth + 1)
    elif isinstance(value, dict):
        for k, v in list(value.items())[:64]:
            _nonfinite_in(v, f"{where}[{k!r}]", found, depth + 1)


def nonfinite_report(value: Any, name: str = "your answer") -> str:
    """``""`` when every number in ``value`` is finite; else a sentence that names the first NaN or inf and
    how many there are, e.g. ``"your answer contains NaN at [2, 3] (1 of 20 elements)"``.

    ``value`` may be an array, a float, or tuples, lists and dicts of them (a returned tuple is read
    element by element: ``"your answer contains inf at [1][0, 2] ..."``).
    """
    found: list[tuple[str, str, int, int]] = []
    _nonfinite_in(value, "", found)
    if not found:
        return ""
    loc, kinds, count, size = found[0]
    text = f"{name} contains {kinds} at {loc or 'its value'}"
    if size > 1:
        text += f" ({count} of {size} elements)"
    if len(found) > 1:
        text += f", and in {len(found) - 1} other returned value(s)"
    return text + ": a NaN or inf is never a right answer here (a NaN compares False with every bound)"


def _note_nonfinite(value: Any, name: str = "your answer") -> None:
    """Remember that the student's code produced a NaN or inf (a check ending with it is a FAIL)."""
    report = nonfinite_report(value, name)
    if report and report not in _STATE["nonfinite"]:
        _STATE["nonfinite"].append(report)


def fail_closed(result: CheckResult) -> CheckResult:
    """The last word on a verdict: a PASS measured on a figure that is NaN or inf, or on an answer the
    student's code returned with a NaN or inf in it, is a FAIL naming it; a FAIL whose message does not
    say so gets the NaN named too."""
    seen = _STATE["nonfinite"]
    if result.passed and not np.isfinite(result.figure) and not np.isnan(result.figure):
        result.passed = False
        result.message = "; ".join(m for m in (result.message, "the measured figure is inf") if m)
    if result.passed and seen:
        result.passed = False
        result.message = seen[0]
    elif not result.passed and seen and "NaN" not in result.message and "inf" not in result.message:
        result.message = "; ".join(m for m in (result.message, seen[0]) if m)
    return result


def describe_exception(exc: BaseException) -> str:
    """``"TypeError: message"`` for any exception, even one whose ``__str__`` (or its class's name) raises."""
    try:
        kind = type(exc).__name__
    except BaseException:  # noqa: BLE001 - a hostile class
        kind = "an exception"
    try:
        text = str(exc)
        if not isinstance(text, str):
            raise TypeError("__str__ did not return a string")
    except BaseException as inner:  # noqa: BLE001
        try:
            why = type(inner).__name__
        except BaseException:  # noqa: BLE001
            why = "an error"
        return f"{kind} (its message could not be printed: its __str__ raised {why})"
    text = text if len(text) <= 500 else text[:500] + "..."
    return f"{kind}: {text}" if text else kind


def describe_value(value: Any) -> str:
    """A short description of a returned value for a message: its type, and shape or length."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (str, bytes)):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        return f"a {'string' if isinstance(value, str) else 'bytes object'} ({shown})"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"a dict with the keys {', '.join(map(repr, list(value)[:8]))}"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- where an error came from
def _inside(path: str | Path, folder: str | Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except (ValueError, OSError):
        return False


def is_library_file(filename: str | Path) -> bool:
    """True for a file of this package (``vaelayer_np/...``)."""
    return _inside(filename, PACKAGE_DIR)


def student_frame(tb: TracebackType | None) -> traceback.FrameSummary | None:
    """The innermost frame of a traceback that is the student's: outside this package and outside NumPy.

    Returns a ``traceback.FrameSummary`` or None (the error came from the checker or the library).
    """
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if not is_library_file(f.filename) and not _inside(f.filename, _NUMPY_DIR)
            and "site-packages" not in f.filename and not f.filename.startswith("<frozen")]
    return mine[-1] if mine else None


def where_in_student_code(exc: BaseException) -> str:
    """`` (your line N: code)`` for an exception raised in (or through) the student's code, else ``""``."""
    frame = student_frame(exc.__traceback__)
    if frame is None:
        return ""
    line = (frame.line or "").strip()
    name = "" if frame.name in ("<module>", "<lambda>") else f" in {frame.name}"
    return f" (your line {frame.lineno}{name}: {line})" if line else f" (your line {frame.lineno}{name})"


def _exit_message(exc: BaseException) -> str:
    """What the student's code did when it raised SystemExit, KeyboardInterrupt or GeneratorExit."""
    if isinstance(exc, SystemExit):
        return (f"your code called sys.exit({exc.code!r}) (or raised SystemExit): it would end the whole program; "
                f"a function must return its answer")
    if isinstance(exc, KeyboardInterrupt):
        return "your code raised KeyboardInterrupt: it stops the program as Ctrl-C does; return the answer instead"
    return f"your code raised {describe_exception(exc)}: a function must return its answer"


def _checker_error(exc: BaseException) -> str:
    """The message for an exception raised inside the checker, not in the student's code: most often the
    checker could not use what the student's function returned (the wrong type or structure)."""
    returned = _STATE["last_return"]
    if returned is not None:
        return (f"the checker could not use what your function returned ({returned}): "
                f"{describe_exception(exc)}; return what the exercise asks for")
    return f"the checker failed before your function returned ({describe_exception(exc)})"


def run_check(name: str, body: Callable[[], tuple[Any, bool, str]], bound: str = "") -> CheckResult:
    """Run ``body() -> (figure, passed, message)`` and turn every failure into a FAIL result.

    A ``NotImplementedError`` from the student's code reads "not implemented yet"; a
    :class:`Diagnosis` reads with its own message; any other exception reads with its type,
    message and the line of the student's code it came from, or, when it was raised by the
    checker itself (no frame of the student's code in the traceback), as the checker's failure to
    use what the student's function returned. ``SystemExit``, ``GeneratorExit`` and every other
    ``BaseException`` are FAILs too (``KeyboardInterrupt`` only inside an isolated check: in the
    notebook's own process it is the user's Ctrl-C and stops the cell). A PASS measured on a NaN or
    inf figure, or on an answer holding NaN or inf, is a FAIL (:func:`fail_closed`).
    """
    outermost = _STATE["depth"] == 0
    if outermost and not _STATE["in_child"]:
        _STATE["nonfinite"].clear()
        _STATE["last_return"] = None
    _STATE["depth"] += 1
    try:
        result = _run_body(name, body, bound)
    finally:
        _STATE["depth"] -= 1
    return fail_closed(result) if outermost else result


def _run_body(name: str, body: Callable[[], tuple[Any, bool, str]], bound: str) -> CheckResult:
    catch = BaseException if _STATE["in_child"] else (Exception, SystemExit, GeneratorExit)
    try:
        figure, passed, message = body()
        figure = float(figure)
    except NotImplementedError as exc:
        frame = student_frame(exc.__traceback__)
        which = f"`{frame.name}`" if frame is not None and frame.name not in ("<module>", "<lambda>") \
            else "the function"
        return CheckResult(name, False, bound=bound, message=f"not implemented yet ({which} still raises "
                                                             f"NotImplementedError)")
    except Diagnosis as exc:
        try:
            figure = float(exc.figure)
        except (TypeError, ValueError):
            figure = float("inf")
        return CheckResult(name, False, figure, bound, str(exc.message))
    except (SystemExit, GeneratorExit, KeyboardInterrupt) as exc:
        if not isinstance(exc, catch):
            raise
        return CheckResult(name, False, bound=bound, message=_exit_message(exc) + where_in_student_code(exc))
    except catch as exc:  # noqa: BLE001 - a checker reports, it does not crash the lesson
        if isinstance(exc, MemoryError):
            return CheckResult(name, False, bound=bound, message=(
                f"ran out of memory ({_memory_text()}): your code allocates far more than the exercise needs"
                f"{where_in_student_code(exc)}"))
        if student_frame(exc.__traceback__) is None and not isinstance(exc, RecursionError):
            return CheckResult(name, False, bound=bound, message=_checker_error(exc))
        return CheckResult(name, False, bound=bound,
                           message=f"your code raised {describe_exception(exc)}{where_in_student_code(exc)}")
    try:
        passed = bool(passed)
    except (TypeError, ValueError):
        return CheckResult(name, False, figure, bound, "the checker measured no single verdict")
    if passed and not np.isfinite(figure):
        return CheckResult(name, False, figure, bound, f"the measured figure is {figure}: a NaN or inf never passes")
    return CheckResult(name, passed, figure, bound, str(message))


# ----------------------------------------------------------------------------- the library is off limits
def _resolve(dotted: str) -> tuple[Any, str, Any] | None:
    """(owner, attribute name, object) of ``"vaelayer_np.core.ops.cosine_embedding"`` or of a method
    ``"vaelayer_np.core.layers.VAELayer.forward"``; None when it does not exist (a refactoring)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:-1]:
                owner = getattr(owner, attr)
            return owner, parts[-1], inspect.getattr_static(owner, parts[-1])
        except AttributeError:
            return None
    return None


def _unwrap(obj: Any) -> Any:
    for attr in ("py_func", "__func__", "__wrapped__"):
        obj = getattr(obj, attr, obj)
    return obj




def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def library_names_used(fn: Callable[..., Any], forbidden: Iterable[str]) -> list[str]:
    """The dotted names of ``forbidden`` that the code of ``fn`` refers to (a global bound to one of
    them, or an attribute of a module that is one of them). Nested functions and lambdas are read too;
    a Numba function is read through its Python source (``py_func``)."""
    targets: dict[int, str] = {}
    for dotted in forbidden:
        found = _resolve(dotted)
        if found is not None:
            targets[id(_unwrap(found[2]))] = dotted
    fn = _unwrap(fn)
    if id(fn) in targets:  # the library function itself handed in
        return [targets[id(fn)]]
    code = getattr(fn, "__code__", None)
    if code is None or not targets:
        return []
    glb = getattr(fn, "__globals__", {})
    names: set[str] = set()
    for c in _code_objects(code):
        names.update(c.co_names)
    used = []
    for name in sorted(names):
        value = glb.get(name)
        if value is not None and id(_unwrap(value)) in targets:
            used.append(targets[id(_unwrap(value))])
        if isinstance(value, (types.ModuleType, type)):
            for attr in names:
                member = getattr(value, attr, None)
                if member is not None and id(_unwrap(member)) in targets:
                    used.append(targets[id(_unwrap(member))])
    return sorted(set(used))


@contextlib.contextmanager
def tripwires(forbidden: Iterable[str]) -> Iterator[None]:
    """Replace each library function of ``forbidden`` (dotted names) by a tripwire while the block runs.

    A tripwire called from the library itself (a layer's ``forward`` calling ``ops.reparameterize``)
    passes the call on; called from anywhere else (the student's code) it raises
    :class:`LibraryCallError` naming the function. Everything is put back afterwards.
    """
    patched = []
    for dotted in forbidden:
        found = _resolve(dotted)
        if found is None:
            continue
        owner, attr, original = found
        fn = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        if not callable(fn):
            continue

        def tripwire(*args: Any, __fn: Callable[..., Any] = fn, __dotted: str = dotted, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if is_library_file(caller):
                return __fn(*args, **kwargs)
            raise LibraryCallError(f"your function calls the library's {__dotted}, which is what this exercise "
                                   f"asks you to write: write it from the formulas (NumPy only)")

        replacement: Any = tripwire
        if isinstance(original, staticmethod):
            replacement = staticmethod(tripwire)
        elif isinstance(original, classmethod):
            replacement = classmethod(tripwire)
        setattr(owner, attr, replacement)
        patched.append((owner, attr, original))
    try:
        yield
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


# ----------------------------------------------------------------------------- calling the student's code
def _snapshot(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: v.copy() for k, v in value.items() if isinstance(v, np.ndarray)}
    if isinstance(value, (tuple, list)):
        return [v.copy() if isinstance(v, np.ndarray) else None for v in value]
    return None


def _changed(before: Any, after: Any) -> tuple[int, int]:
    """(number of elements changed, total) between a snapshot and the value now; (0, n) if unchanged."""
    if isinstance(before, np.ndarray):
        after = np.asarray(after)
        if after.shape != before.shape:
            return before.size, before.size
        diff = ~((after == before) | (np.isnan(after) & np.isnan(before)) if after.dtype.kind == "f" else
                 (after == before))
        return int(np.sum(diff)), before.size
    if isinstance(before, dict):
        total = changed = 0
        for k, v in before.items():
            c, n = _changed(v, after.get(k, v))
            changed, total = changed + c, total + n
        return changed, total
    if isinstance(before, list):
        total = changed = 0
        for v, a in zip(before, after):
            if v is not None:
                c, n = _changed(v, a)
                changed, total = changed + c, total + n
        return changed, total
    return 0, 0


def _holds_array(value: Any) -> bool:
    """True for an array, a dict or tuple, or a list holding one: a list of such values is a tuple of answers
    (a list of plain numbers, even nested, may be one array)."""
    if isinstance(value, (np.ndarray, dict, tuple)):
        return True
    return isinstance(value, list) and any(isinstance(v, (np.ndarray, dict, tuple)) for v in value)


def call_student(fn: Callable[..., Any], args: Sequence[Any], names: Sequence[str], forbidden: Iterable[str] = (),
                 exercise: str = "this exercise", in_place: Sequence[str] = ()) -> Any:
    """``fn(*args)`` with the library's versions of ``forbidden`` off limits and the inputs watched.

    Parameters
    ----------
    fn : the student's function
    args : its arguments; arrays (and dicts or tuples of arrays) are compared before and after
    names : the name of each argument, for the messages
    forbidden : dotted names of the library functions the exercise replaces
    in_place : names of the arguments the function is meant to update in place (not watched)

    Raises :class:`Diagnosis` when ``fn``'s code names a forbidden function, when a tripwire fires or
    when an input changed in place; returns ``fn``'s result otherwise.
    """
    used = library_names_used(fn, forbidden)
    if used:
        raise LibraryCallError(f"your function uses the library's {', '.join(used)}, which is what {exercise} "
                               f"asks you to write: write it from the formulas (NumPy only)")
    before = [_snapshot(a) for a in args]
    _STATE["last_return"] = None
    try:
        with tripwires(forbidden):
            result = fn(*args)
    finally:
        _watch_after_student()
    _STATE["last_return"] = describe_value(result)
    if isinstance(result, (str, bytes)):
        raise Diagnosis(f"your function returned {describe_value(result)}, not numbers: return the NumPy array "
                        f"(or the tuple of values) the exercise asks for, not a text about it")
    if isinstance(result, list) and len(result) > 1 and any(_holds_array(v) for v in result):
        result = tuple(result)  # a list of the values is the same answer as their tuple
    _note_nonfinite(result)
    for name, value in zip(names, args):
        if name in in_place:
            _note_nonfinite(value, f"`{name}` (written by your function)")
    for name, snap, value in zip(names, before, args):
        if snap is None or name in in_place:
            continue
        if isinstance(snap, dict):  # name the entry: params["W_mu"]
            keys = [k for k in snap if _changed(snap[k], value.get(k, snap[k]))[0]]
            if keys:
                name, snap, value = f'{name}["{keys[0]}"]', snap[keys[0]], value[keys[0]]
        changed, total = _changed(snap, value)
        if changed:
            raise Diagnosis(f"your function changed its input `{name}` in place ({changed} of {total} elements; "
                            f"e.g. `{name} -= ...`, `{name} *= ...`, `{name}[...] = ...`, `np.xxx(..., out={name})` "
                            f"or a shuffle): the caller's `{name}` is changed, and a later cell that reuses it sees "
                            f"other values. Compute into a new array instead (`{name} - ...`, or `{name}.copy()` "
                            f"first)")
    return result


# ----------------------------------------------------------------------------- comparing and explaining
def max_relative_error(got: Any, expected: Any, floor: float = 1e-8) -> float:
    """max |got - expected| / max(max |got|, max |expected|, floor): the gradient check's own measure
    (:func:`vaelayer_np.core.gradcheck.relative_error`), with a message naming the shapes on a mismatch.

    Fails closed: a NaN or inf in ``got`` where ``expected`` does not hold the same raises
    :class:`Diagnosis` naming it, and a measure that is not a finite number is inf (never below a bound).
    """
    from ..core.gradcheck import relative_error

    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise Diagnosis(f"expected an array of shape {expected.shape}, got shape {got.shape}")
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    bad = ~np.isfinite(got) & ~same
    if bad.any():
        raise Diagnosis(nonfinite_report(np.where(bad, got, 0.0)), float("inf"))
    both = ~np.isfinite(expected) & same
    if both.any():  # the same NaN or inf on both sides: equal there, measured on the rest
        got, expected = np.where(both, 0.0, got), np.where(both, 0.0, expected)
    err = relative_error(got, expected, floor)
    return err if math.isfinite(err) else float("inf")


def _fit_factor(got: Any, want: Any) -> tuple[float, float]:
    """(c, residual): the best constant c with got ~ c * want, and how far got is from c * want (relative)."""
    g = np.asarray(got, dtype=np.float64).ravel()
    w = np.asarray(want, dtype=np.float64).ravel()
    ww = float(w @ w)
    if ww == 0.0 or not np.all(np.isfinite(g)):
        return np.nan, np.inf
    c = float(g @ w) / ww
    scale = max(np.abs(g).max(initial=0.0), np.abs(w).max(initial=0.0), 1e-300)
    return c, float(np.abs(g - c * w).max() / scale)


def explain_difference(got: Any, want: Any, factors: Sequence[tuple[str, float]] = (),
                       slips: Sequence[tuple[str, Any]] = ()) -> str:
    """A sentence on how a wrong array relates to the right one, or ``""`` when nothing recognisable.

    Parameters
    ----------
    got, want : arrays of one shape
    factors : (name, value) pairs the answer could be off by, e.g. ``("N", 5), ("N*D", 20)``
    slips : (description, candidate array) pairs: the answers a common slip would give on these inputs
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return nonfinite_report(got, "it") or "it holds NaN or inf values where the answer is finite"
    for description, candidate in slips:
        candidate = np.asarray(candidate, dtype=np.float64)
        if candidate.shape == got.shape and max_relative_error(got, candidate) < SAME:
            return f"it looks like {description}"
    c, residual = _fit_factor(got, want)
    if residual < SAME:
        if abs(c + 1) < SAME:
            return "it is the right answer with the sign flipped (a relative error of 2 is a flipped sign)"
        for name, value in list(factors) + [("2", 2.0)]:
            if value and abs(c / value - 1) < SAME:
                return (f"it is {name} times the right answer: a division by {name} is missing "
                        f"(or a factor {name} too many)")
            if value and abs(c * value - 1) < SAME:
                return (f"it is the right answer divided by {name}: a factor {name} is missing "
                        f"(or a division by {name} too many)")
            if value and abs(c / value + 1) < SAME:
                return f"it is -{name} times the right answer: the sign is flipped and a division by {name} is missing"
            if value and abs(c * value + 1) < SAME:
                return (f"it is minus the right answer divided by {name}: the sign is flipped and a factor {name} "
                        "is missing")
        if got.size > 1:  # one number is always some multiple of another: that says nothing
            return f"it is the right answer times {c:.4g}: a constant factor is wrong"
        return ""
    if got.ndim == 2 and got.shape == want.shape and got.shape[0] == got.shape[1] \
            and max_relative_error(got.T, want) < SAME:
        return "it is the transpose of the right answer (a product in the wrong order or a missing .T)"
    return ""


def check_dtype(name: str, value: Any, dtype: DTypeLike = np.float64) -> None:
    """Raise :class:`Diagnosis` when an array result does not have the expected dtype (named as the reason)."""
    value = np.asarray(value)
    if value.dtype == np.dtype(dtype):
        return
    if value.dtype == np.float32 and np.dtype(dtype) == np.float64:
        raise Diagnosis(f"`{name}` has dtype float32, the inputs are float64: the answer must be float64 too. "
                        f"float32 keeps about 7 significant digits, so its rounding (about 1e-7 relative) is as "
                        f"large as the tolerance and a check could not tell a right answer from a wrong one; "
                        f"remove the .astype(np.float32) or the float32 array you compute in")
    if value.dtype == object:
        raise Diagnosis(f"`{name}` is not a numeric array (dtype object): return NumPy arrays or floats")
    raise Diagnosis(f"`{name}` has dtype {value.dtype}, expected {np.dtype(dtype)}")


def compare_values(got: Any, want: Any, names: Sequence[str], tol: float, dtype: DTypeLike = np.float64,
                   factors: Sequence[tuple[str, float]] = (), slips: dict[str, Any] | None = None,
                   order: Sequence[str] | None = None) -> float:
    """Compare the student's returned value(s) with the reference's, each by its name.

    Parameters
    ----------
    got, want : a value or a tuple of values (arrays or floats)
    names : one name per value (``("recon", "kl", "neg_elbo")``)
    tol : the bound of the worst relative error
    dtype : the dtype every returned array must have (None: not checked)
    factors : (name, value) pairs for :func:`explain_difference`
    slips : dict name -> [(description, candidate)] for :func:`explain_difference`
    order : the names in the order they are computed (default ``names``): the first wrong value that
        can be explained is, since the later ones are usually wrong because of it

    Returns the worst relative error; raises :class:`Diagnosis` naming every wrong value (the first one
    explained) when it is not below ``tol``, and on a wrong count, a None, a wrong shape or dtype.
    """
    slips = slips or {}
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    if len(want_t) > 1 and isinstance(got, list) and len(got) == len(want_t):
        got_t = tuple(got)
    if len(got_t) != len(want_t):
        raise Diagnosis(f"expected {len(want_t)} return values ({', '.join(names)}), got {len(got_t)}")
    errors = {}
    for name, g, w in zip(names, got_t, want_t):
        if g is None:
            raise Diagnosis(f"`{name}` is None: return it (a missing `return`?)")
        if isinstance(g, (str, bytes, dict)) or (isinstance(g, (list, tuple)) and not isinstance(w, (list, tuple))
                                                 and any(isinstance(v, (str, bytes, dict)) for v in g)):
            raise Diagnosis(f"`{name}` is {describe_value(g)}, not numbers: return a NumPy array or a float")
        g_arr, w_arr = np.asarray(g), np.asarray(w)
        if g_arr.shape != w_arr.shape:
            hint = ""
            if g_arr.ndim == 2 and g_arr.shape == w_arr.shape[::-1]:
                hint = ": it is transposed (a product in the wrong order or a missing .T)"
            elif g_arr.size == 1 and w_arr.ndim == 0:
                hint = ": return a float, not an array"
            elif g_arr.ndim == w_arr.ndim + 1 or g_arr.ndim == 0:
                hint = ": summed or averaged over the wrong axis?"
            raise Diagnosis(f"`{name}` has shape {g_arr.shape}, expected {w_arr.shape}{hint}")
        if dtype is not None and (w_arr.ndim > 0 or g_arr.dtype.kind == "f"):
            check_dtype(name, g_arr, dtype)
        if g_arr.dtype.kind in "fc" and not np.all(np.isfinite(g_arr)) and \
                np.all(np.isfinite(np.asarray(w_arr, dtype=np.float64))):
            raise Diagnosis(nonfinite_report(g_arr, f"`{name}`"), float("inf"))
        errors[name] = max_relative_error(g_arr, w_arr)
    worst = max(errors.values())
    if worst < tol:
        return worst
    wrong = [n for n in names if not errors[n] < tol]
    right = [n for n in names if errors[n] < tol]
    parts = ["wrong: " + ", ".join(f"`{n}` (relative error {errors[n]:.2g})" for n in wrong)]
    if right and len(names) > 1:
        parts.append("right: " + ", ".join(f"`{n}`" for n in right))
    for name in [n for n in (order or names) if n in wrong]:  # the first wrong value computed explains the rest
        why = explain_difference(got_t[names.index(name)], want_t[names.index(name)], factors, slips.get(name, ()))
        if why:
            parts.append(f"`{name}`: {why}")
            break
    raise Diagnosis("; ".join(parts), worst)


def compare_arrays(name: str, student_fn: Callable[..., Any], reference_fn: Callable[..., Any],
                   make_inputs: Callable[[np.random.Generator], Sequence[Any]], tol: float = 1e-7, n_trials: int = 3,
                   seed: int = 0, names: Sequence[str] | None = None, arg_names: Sequence[str] | None = None,
                   forbidden: Iterable[str] = (), dtype: DTypeLike = np.float64,
                   factors: Callable[[list[Any]], Sequence[tuple[str, float]]] | None = None,
                   slips: Callable[[list[Any]], dict[str, Any]] | None = None,
                   order: Sequence[str] | None = None) -> CheckResult:
    """Check ``student_fn(*inputs)`` against ``reference_fn(*inputs)`` on random inputs.

    ``make_inputs(rng)`` returns a tuple of arguments; both functions may return an array
    or a tuple of arrays (and floats). The figure is the worst relative error over the trials.
    ``names`` names the returned values and ``arg_names`` the arguments (for the messages);
    ``forbidden``, the library functions the exercise replaces (see :func:`call_student`);
    ``factors(args)`` and ``slips(args)`` give the constant factors and the common slips to
    recognise on those inputs (see :func:`compare_values`).
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(n_trials):
            args = make_inputs(rng)
            kept = [_snapshot(a) if _snapshot(a) is not None else a for a in args]
            reference_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            want = reference_fn(*reference_args)
            n_out = len(want) if isinstance(want, tuple) else 1
            out_names = tuple(names) if names else (("return value",) if n_out == 1 else
                                                     tuple(f"return value {i}" for i in range(n_out)))
            a_names = arg_names or [f"argument {i}" for i in range(len(args))]
            got = call_student(student_fn, args, a_names, forbidden)
            worst = max(worst, compare_values(got, want, out_names, tol, dtype=dtype,
                                              factors=factors(kept) if factors else (),
                                              slips=slips(kept) if slips else None, order=order))
        return worst, worst < tol, ""

    return run_check(name, body, bound=f"below {tol:g}")


def check_gradient(name: str, f: Callable[[], float], student_grad: Callable[[], Any], tensors: dict[str, np.ndarray],
                   tol: float = 1e-7, exact: dict[str, np.ndarray] | None = None,
                   factors: Sequence[tuple[str, float]] = (), slips: dict[str, Any] | None = None) -> CheckResult:
    """Check hand-written gradients against float64 central differences.

    ``f()`` is the scalar, reading ``tensors`` (dict name -> float64 array) at call time;
    ``student_grad()`` returns a dict with one gradient per tensor. Uses
    :func:`vaelayer_np.core.gradcheck.check_gradients`, so the verdict is the library's own. A wrong
    gradient is explained (:func:`explain_difference`) against ``exact`` (dict name -> the right
    gradient) with ``factors`` and ``slips`` (dict name -> [(description, candidate)]).
    """
    from ..core.gradcheck import check_gradients

    def body() -> tuple[float, bool, str]:
        grads = student_grad()
        if not isinstance(grads, dict):
            return np.inf, False, f"expected a dict of gradients, got {type(grads).__name__}"
        missing = [k for k in tensors if k not in grads or grads[k] is None]
        if missing:
            return np.inf, False, f"no gradient for {', '.join(missing)}"
        for k in tensors:
            g = np.asarray(grads[k])
            if g.shape != tensors[k].shape:
                raise Diagnosis(f"the gradient for `{k}` has shape {g.shape}, expected {tensors[k].shape} "
                                f"(a gradient has the shape of what it differentiates)"
                                + (": it is transposed" if g.ndim == 2 and g.shape == tensors[k].shape[::-1] else ""))
            check_dtype(f"d_{k}", g)
            if g.dtype.kind in "fc" and not np.all(np.isfinite(g)):
                raise Diagnosis(nonfinite_report(g, f"your gradient for `{k}`"), float("inf"))
        results = check_gradients(name, f, tensors, grads, tol=tol)
        worst = max(float(r.max_rel_error) for r in results)
        if not math.isfinite(worst):
            worst = float("inf")
        bad = [r for r in results if not (r.passed and math.isfinite(float(r.max_rel_error)))]
        if not bad:
            return worst, True, ""
        message = "wrong: " + ", ".join(f"{r.tensor} ({r.status}, error {r.max_rel_error:.2g})" for r in bad)
        first = bad[0].tensor
        if exact is not None and first in exact:
            why = explain_difference(grads[first], exact[first], factors, (slips or {}).get(first, ()))
            if why:
                message += f"; `{first}`: {why}"
        return worst, False, message

    return run_check(name, body, bound=f"below {tol:g}, float64 central differences")


def show(*results: CheckResult) -> bool:
    """Print each result and return True when all passed (the last line of a checker cell)."""
    for r in results:
        print(r)
    return all(bool(r) for r in results)


# ----------------------------------------------------------------------------- the checker's own references
# The values of NumPy's, Python's and this package's functions, classes and numbers as the checkers saw them
# first: (owner, attribute) -> value. A check puts them back before it runs, and a value the student's code
# replaced while it ran is a FAIL (:func:`_watch_after_student`).
_PRISTINE: dict[tuple[Any, str], Any] = {}
_WATCHED_MODULES = ("builtins", "math", "numpy", "numpy.linalg", "numpy.random", "numpy.fft")


def _worth_watching(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, np.number)):
        return True
    return callable(value) or isinstance(value, (staticmethod, classmethod, property, types.ModuleType))


_NOT_WATCHED = {("builtins", "input")}  # a Jupyter kernel swaps input() for its own around every cell


def _remember(owner: Any, label: str) -> None:
    for attr, value in list(vars(owner).items()):
        if attr.startswith("__") or not _worth_watching(value) or (label, attr) in _NOT_WATCHED:
            continue
        _PRISTINE.setdefault((id(owner), attr), (owner, attr, value, f"{label}.{attr}"))
        if isinstance(value, type) and getattr(value, "__module__", "").startswith("vaelayer_np") \
                and (id(value), "") not in _PRISTINE:
            _PRISTINE[(id(value), "")] = (value, "", None, "")
            _remember(value, f"{label}.{attr}")


def remember_references() -> None:
    """Record the functions, classes and numbers of NumPy, ``math``, the builtins and every loaded module of
    this package, where not yet recorded. Called when the checkers are imported, when a checker is defined
    and before every check: the first value seen is the one a check restores."""
    for name in _WATCHED_MODULES + tuple(m for m in list(sys.modules) if m.startswith("vaelayer_np")):
        module = sys.modules.get(name)
        if isinstance(module, types.ModuleType) and (id(module), "") not in _PRISTINE:
            _remember(module, name)
            if not name.startswith("vaelayer_np") or name == __name__:
                _PRISTINE[(id(module), "")] = (module, "", None, "")  # NumPy's do not change: read once


def _replaced() -> list[tuple[Any, str, Any, Any]]:
    """[(owner, attribute, original, dotted name)] of every recorded value that is not in place now."""
    missing = object()
    out = []
    for owner, attr, value, dotted in list(_PRISTINE.values()):
        if attr and vars(owner).get(attr, missing) is not value:
            out.append((owner, attr, value, dotted))
    return out


def restore_references() -> list[str]:
    """Put back every recorded value that was replaced; return their dotted names."""
    names = []
    for owner, attr, value, dotted in _replaced():
        try:
            setattr(owner, attr, value)
        except (AttributeError, TypeError):
            continue
        names.append(dotted)
    return names


def _watch_after_student() -> None:
    """After the student's code ran: anything it replaced is put back and remembered (the check FAILs)."""
    for dotted in restore_references():
        if dotted not in _STATE["tampered"]:
            _STATE["tampered"].append(dotted)


# ----------------------------------------------------------------------------- isolation: time and memory
LIMITS = {"seconds": float(os.environ.get("VAELAYER_CHECK_SECONDS", 300)),
          "memory_gb": float(os.environ.get("VAELAYER_CHECK_MEMORY_GB", 4))}
"""The limits of one isolated check: wall-clock seconds and the memory (GB) it may allocate beyond what the
process held when it started. Change them with :func:`limits` or the environment variables
``VAELAYER_CHECK_SECONDS`` and ``VAELAYER_CHECK_MEMORY_GB``."""


@contextlib.contextmanager
def limits(seconds: float | None = None, memory_gb: float | None = None) -> Iterator[dict[str, float]]:
    """Run the checks of the block with other limits, e.g. ``with limits(seconds=10): check_x(f)``."""
    for value, what in ((seconds, "seconds"), (memory_gb, "memory_gb")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"limits: {what} must be a positive number, got {value!r}")
    old = dict(LIMITS)
    LIMITS.update({k: float(v) for k, v in (("seconds", seconds), ("memory_gb", memory_gb)) if v is not None})
    try:
        yield LIMITS
    finally:
        LIMITS.clear()
        LIMITS.update(old)


def _memory_text() -> str:
    return f"the limit is {_STATE.get('memory_gb', LIMITS['memory_gb']):g} GB per check"


def _virtual_size() -> int | None:
    """Bytes of address space this process holds now (Linux), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _set_memory_limit(gigabytes: float) -> None:
    try:
        import resource
    except ImportError:
        return
    held = _virtual_size()
    if held is None:
        return
    limit = held + int(gigabytes * 2 ** 30)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass


def can_isolate() -> bool:
    """True where a check can run in a forked process (Linux, macOS), unless ``VAELAYER_CHECK_ISOLATION=0``."""
    return hasattr(os, "fork") and os.environ.get("VAELAYER_CHECK_ISOLATION", "1") != "0"


def _verdict_of(thunk: Callable[[], Any], name: str) -> CheckResult:
    """Run the check ``thunk`` in this process; every way it can end becomes a CheckResult."""
    _STATE["nonfinite"].clear()
    _STATE["tampered"].clear()
    _STATE["last_return"] = None
    before = restore_references()  # a checker uses the values it was written against
    try:
        result = thunk()
    except MemoryError as exc:
        result = CheckResult(name, False, message=f"ran out of memory ({_memory_text()}): your code allocates "
                                                  f"far more than the exercise needs{where_in_student_code(exc)}")
    except Diagnosis as exc:
        result = CheckResult(name, False, message=str(exc.message))
    except BaseException as exc:  # noqa: BLE001 - the check reports, whatever was raised
        if isinstance(exc, KeyboardInterrupt) and not _STATE["in_child"]:
            raise  # in the notebook's own process it is the user's Ctrl-C: it stops the cell
        if isinstance(exc, (SystemExit, KeyboardInterrupt, GeneratorExit)):
            message = _exit_message(exc)
        else:
            message = f"your code raised {describe_exception(exc)}"
        result = CheckResult(name, False, message=message + where_in_student_code(exc))
    _watch_after_student()
    if not isinstance(result, CheckResult):
        result = CheckResult(name, False, message=f"the checker returned {describe_value(result)}, not a verdict")
    if _STATE["tampered"]:
        shown = ", ".join(_STATE["tampered"][:5]) + (" ..." if len(_STATE["tampered"]) > 5 else "")
        result = CheckResult(result.name, False, result.figure, result.bound,
                             f"your code replaced {shown} while the check ran: a function must compute its answer, "
                             f"not change the library, NumPy or the checker (put back now)"
                             + (f"; the check said: {result.message}" if result.message and not result.passed
                                else ""))
    result = fail_closed(result)
    if before:
        note = (f"note: {', '.join(before[:3])}{' ...' if len(before) > 3 else ''} had been replaced in this "
                f"notebook; the check used the originals")
        result.message = "; ".join(m for m in (result.message, note) if m)
    return result


def _result_from_payload(payload: bytes, name: str, bound: str) -> tuple[CheckResult, str]:
    data = json.loads(payload.decode("utf-8"))
    figure = data.get("figure")
    return CheckResult(str(data["name"]), data["passed"] is True,
                       float("nan") if figure is None else float(figure), str(data.get("bound", bound)),
                       str(data.get("message", ""))), str(data.get("output", ""))


def _child_main(thunk: Callable[[], Any], name: str, write_fd: int, memory_gb: float) -> None:
    """The forked process: limits, the check, its verdict as JSON on the pipe, then exit without cleanup."""
    status = 0
    try:
        _STATE["in_child"], _STATE["memory_gb"] = True, memory_gb
        with contextlib.suppress(Exception):
            import faulthandler

            faulthandler.disable()  # a crash of the student's code is reported, not dumped as the notebook's
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _set_memory_limit(memory_gb)
        captured = io.StringIO()
        sys.stdout = sys.stderr = captured
        result = _verdict_of(thunk, name)
        figure = result.figure if math.isfinite(result.figure) else None
        payload = json.dumps({"name": str(result.name), "passed": bool(result.passed), "figure": figure,
                              "bound": str(result.bound), "message": str(result.message),
                              "output": captured.getvalue()[-20000:]}).encode("utf-8")
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - nothing may escape the child
        status = 70
    finally:
        os._exit(status)


def _ended_without_verdict(status: int, seconds: float) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return ("the check was killed (signal SIGKILL) before it finished: most often the machine ran out of "
                    f"memory ({_memory_text()})")
        if sig == getattr(signal, "SIGXCPU", None):
            return f"took longer than {seconds:g} s of processor time (the time limit of a check)"
        try:
            sig_name = signal.Signals(sig).name
        except ValueError:
            sig_name = str(sig)
        return f"the process running your code crashed (signal {sig_name}) before the check finished"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return (f"your code ended the process (exit status {code}, e.g. os._exit) before the check finished: "
            f"a function must return its answer")


def run_isolated(thunk: Callable[[], Any], name: str, bound: str = "", seconds: float | None = None,
                 memory_gb: float | None = None) -> CheckResult:
    """Run the check ``thunk() -> CheckResult`` isolated and return its verdict.

    Where the platform can fork (:func:`can_isolate`), the check runs in a forked copy of this process with
    a wall-clock time limit (``seconds``, default ``LIMITS["seconds"]``) and a memory limit (``memory_gb``
    beyond what the process holds, default ``LIMITS["memory_gb"]``); the verdict comes back as JSON and
    what the code printed is printed here. An endless loop or sleep is stopped at the limit ("took longer
    than N s"), an exit or a crash is named, and nothing the student's code changed reaches this process.
    Ctrl-C stops the check and is raised here. Elsewhere, or inside an isolated check, the check runs in
    this process with the same verdicts but no limits (the recorded references are put back after it).
    """
    seconds = LIMITS["seconds"] if seconds is None else float(seconds)
    memory_gb = LIMITS["memory_gb"] if memory_gb is None else float(memory_gb)
    remember_references()
    if _STATE["in_child"] or not can_isolate():
        saved = dict(_STATE, nonfinite=list(_STATE["nonfinite"]), tampered=list(_STATE["tampered"]))
        try:
            return _verdict_of(thunk, name)
        finally:
            if _STATE["in_child"]:
                _STATE.update(saved)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, in a process group of its own: it ends with every process it started
        os.close(read_fd)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        _child_main(thunk, name, write_fd, memory_gb)
    os.close(write_fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    try:
        chunks, timed_out = _collect(read_fd, pid, time.monotonic() + seconds)
    except BaseException:  # Ctrl-C (or anything else) here: stop the check and let it through
        _kill(pid)
        raise
    finally:
        os.close(read_fd)
    status = _kill(pid)  # what the student's code left running (a process it started) ends with the check
    if timed_out:
        return CheckResult(name, False, bound=bound, message=(
            f"took longer than {seconds:g} s (the time limit of a check) and was stopped: an endless loop, a "
            f"sleep, or far more work than the exercise needs"))
    payload = b"".join(chunks)
    if payload:
        try:
            result, output = _result_from_payload(payload, name, bound)
        except (ValueError, KeyError, TypeError):
            result, output = CheckResult(name, False, bound=bound,
                                         message="the check sent back no readable verdict"), ""
        if output:
            print(output, end="" if output.endswith("\n") else "\n")
        return result
    return CheckResult(name, False, bound=bound, message=_ended_without_verdict(status, seconds))


def _exited(pid: int, block: bool) -> bool:
    """True once the child has exited; it is not reaped (its process group stays reserved until it is)."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    try:
        return os.waitid(os.P_PID, pid, flags) is not None
    except ChildProcessError:
        return True


def _collect(read_fd: int, pid: int, deadline: float) -> tuple[list[bytes], bool]:
    """Read the child's verdict until it has exited and the pipe is drained, or the deadline passes:
    (chunks, timed out)."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return chunks, True
        ready, _, _ = select.select([read_fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:  # every writer gone: the child is ending
                _exited(pid, block=True)
                return chunks, False
            chunks.append(chunk)
        elif _exited(pid, block=False):  # exited, but a process it started may hold the pipe open
            while select.select([read_fd], [], [], 0)[0]:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
            return chunks, False


def _kill(pid: int) -> int:
    """End the check's process group (and the process, if still running), reap it, return its exit status.
    The process is reaped last, so its process group cannot have been reused in between."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0


def isolated(check: Callable[..., Any]) -> Callable[..., CheckResult]:
    """Decorate a checker so that it runs isolated (:func:`run_isolated`), with the limits of :data:`LIMITS`."""
    import functools

    remember_references()
    name = check.__name__[len("check_"):] if check.__name__.startswith("check_") else check.__name__

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> CheckResult:
        return run_isolated(lambda: check(*args, **kwargs), name)

    wrapper.isolated = True  # type: ignore[attr-defined]  # a mark the grader reads on the function
    return wrapper


remember_references()
