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
  checker's.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class Diagnosis(Exception):
    """Raised inside a checker's body: the check is a FAIL, with this message and figure."""

    def __init__(self, message, figure=float("inf")):
        super().__init__(message)
        self.message = message
        self.figure = figure


class LibraryCallError(Diagnosis):
    """Raised by a tripwire: the student's code called a library function the exercise replaces."""


# ----------------------------------------------------------------------------- where an error came from
def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except (ValueError, OSError):
        return False


def is_library_file(filename):
    """True for a file of this package (``vaelayer_np/...``)."""
    return _inside(filename, PACKAGE_DIR)


def student_frame(tb):
    """The innermost frame of a traceback that is the student's: outside this package and outside NumPy.

    Returns a ``traceback.FrameSummary`` or None (the error came from the checker or the library).
    """
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if not is_library_file(f.filename) and not _inside(f.filename, _NUMPY_DIR)
            and "site-packages" not in f.filename and not f.filename.startswith("<frozen")]
    return mine[-1] if mine else None


def where_in_student_code(exc):
    """`` (your line N: code)`` for an exception raised in (or through) the student's code, else ``""``."""
    frame = student_frame(exc.__traceback__)
    if frame is None:
        return ""
    line = (frame.line or "").strip()
    name = "" if frame.name in ("<module>", "<lambda>") else f" in {frame.name}"
    return f" (your line {frame.lineno}{name}: {line})" if line else f" (your line {frame.lineno}{name})"


def run_check(name, body, bound=""):
    """Run ``body() -> (figure, passed, message)`` and turn every failure into a FAIL result.

    A ``NotImplementedError`` from the student's code reads "not implemented yet"; a
    :class:`Diagnosis` reads with its own message; any other exception reads with its type,
    message and the line of the student's code it came from.
    """
    try:
        figure, passed, message = body()
    except NotImplementedError as exc:
        frame = student_frame(exc.__traceback__)
        which = f"`{frame.name}`" if frame is not None and frame.name not in ("<module>", "<lambda>") \
            else "the function"
        return CheckResult(name, False, bound=bound, message=f"not implemented yet ({which} still raises "
                                                             f"NotImplementedError)")
    except Diagnosis as exc:
        return CheckResult(name, False, float(exc.figure), bound, exc.message)
    except Exception as exc:  # noqa: BLE001 - a checker reports, it does not crash the lesson
        return CheckResult(name, False, bound=bound,
                           message=f"your code raised {type(exc).__name__}: {exc}{where_in_student_code(exc)}")
    return CheckResult(name, bool(passed), float(figure), bound, message)


# ----------------------------------------------------------------------------- the library is off limits
def _resolve(dotted):
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


def _unwrap(obj):
    for attr in ("py_func", "__func__", "__wrapped__"):
        obj = getattr(obj, attr, obj)
    return obj


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def library_names_used(fn, forbidden):
    """The dotted names of ``forbidden`` that the code of ``fn`` refers to (a global bound to one of
    them, or an attribute of a module that is one of them). Nested functions and lambdas are read too;
    a Numba function is read through its Python source (``py_func``)."""
    targets = {}
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
    names = set()
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
def tripwires(forbidden):
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

        def tripwire(*args, __fn=fn, __dotted=dotted, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if is_library_file(caller):
                return __fn(*args, **kwargs)
            raise LibraryCallError(f"your function calls the library's {__dotted}, which is what this exercise "
                                   f"asks you to write: write it from the formulas (NumPy only)")

        replacement = tripwire
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
def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: v.copy() for k, v in value.items() if isinstance(v, np.ndarray)}
    if isinstance(value, (tuple, list)):
        return [v.copy() if isinstance(v, np.ndarray) else None for v in value]
    return None


def _changed(before, after):
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


def call_student(fn, args, names, forbidden=(), exercise="this exercise", in_place=()):
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
    with tripwires(forbidden):
        result = fn(*args)
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
def max_relative_error(got, expected, floor=1e-8):
    """max |got - expected| / max(max |got|, max |expected|, floor): the gradient check's own measure
    (:func:`vaelayer_np.core.gradcheck.relative_error`), with a message naming the shapes on a mismatch."""
    from ..core.gradcheck import relative_error

    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise Diagnosis(f"expected an array of shape {expected.shape}, got shape {got.shape}")
    return relative_error(got, expected, floor)


def _fit_factor(got, want):
    """(c, residual): the best constant c with got ~ c * want, and how far got is from c * want (relative)."""
    g = np.asarray(got, dtype=np.float64).ravel()
    w = np.asarray(want, dtype=np.float64).ravel()
    ww = float(w @ w)
    if ww == 0.0 or not np.all(np.isfinite(g)):
        return np.nan, np.inf
    c = float(g @ w) / ww
    scale = max(np.abs(g).max(initial=0.0), np.abs(w).max(initial=0.0), 1e-300)
    return c, float(np.abs(g - c * w).max() / scale)


def explain_difference(got, want, factors=(), slips=()):
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
        bad = int(np.sum(~np.isfinite(got)))
        return f"it holds {bad} NaN or inf value(s) where the answer is finite"
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
        return f"it is the right answer times {c:.4g}: a constant factor is wrong"
    if got.ndim == 2 and got.shape == want.shape and got.shape[0] == got.shape[1] \
            and max_relative_error(got.T, want) < SAME:
        return "it is the transpose of the right answer (a product in the wrong order or a missing .T)"
    return ""


def check_dtype(name, value, dtype=np.float64):
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


def compare_values(got, want, names, tol, dtype=np.float64, factors=(), slips=None, order=None):
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
        errors[name] = max_relative_error(g_arr, w_arr) if np.all(np.isfinite(g_arr.astype(np.float64))) \
            else np.inf
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


def compare_arrays(name, student_fn, reference_fn, make_inputs, tol=1e-7, n_trials=3, seed=0, names=None,
                   arg_names=None, forbidden=(), dtype=np.float64, factors=None, slips=None, order=None):
    """Check ``student_fn(*inputs)`` against ``reference_fn(*inputs)`` on random inputs.

    ``make_inputs(rng)`` returns a tuple of arguments; both functions may return an array
    or a tuple of arrays (and floats). The figure is the worst relative error over the trials.
    ``names`` names the returned values and ``arg_names`` the arguments (for the messages);
    ``forbidden``, the library functions the exercise replaces (see :func:`call_student`);
    ``factors(args)`` and ``slips(args)`` give the constant factors and the common slips to
    recognise on those inputs (see :func:`compare_values`).
    """
    def body():
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


def check_gradient(name, f, student_grad, tensors, tol=1e-7, exact=None, factors=(), slips=None):
    """Check hand-written gradients against float64 central differences.

    ``f()`` is the scalar, reading ``tensors`` (dict name -> float64 array) at call time;
    ``student_grad()`` returns a dict with one gradient per tensor. Uses
    :func:`vaelayer_np.core.gradcheck.check_gradients`, so the verdict is the library's own. A wrong
    gradient is explained (:func:`explain_difference`) against ``exact`` (dict name -> the right
    gradient) with ``factors`` and ``slips`` (dict name -> [(description, candidate)]).
    """
    from ..core.gradcheck import check_gradients

    def body():
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
        results = check_gradients(name, f, tensors, grads, tol=tol)
        worst = max(r.max_rel_error for r in results)
        bad = [r for r in results if not r.passed]
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


def show(*results):
    """Print each result and return True when all passed (the last line of a checker cell)."""
    for r in results:
        print(r)
    return all(bool(r) for r in results)
