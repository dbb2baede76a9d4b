r"""Checkers of lesson 03, gradient checking (``notebooks/03_gradient_checking.ipynb``).

The exercises rebuild the three parts of :mod:`vaelayer_np.core.gradcheck`:

* ``numerical_gradient(f, x, h)``: central differences, perturbing ``x`` in place and
  restoring it (:func:`check_numerical_gradient`);
* ``relative_error(a, b)``: the error measure of the check (:func:`check_relative_error`);
* ``layer_gradient_errors(layer, x, rng)``: the check of one layer with a random
  upstream gradient (:func:`check_layer_gradient_errors`). A checker that cannot fail
  proves nothing, so this one also plants two bugs that an all-ones upstream gradient
  hides, and requires the student's check to report both.

The planted bugs live here, in copies: the library's own layers are never changed.
"""
from __future__ import annotations

import numpy as np

from ..core.gradcheck import DEFAULT_STEP, DEFAULT_TOL, numerical_gradient, relative_error
from ..core.layers import Activation, Dense
from .checks import Diagnosis, call_student, check_dtype, explain_difference, max_relative_error, run_check
from .answer_keys import recorded

# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "numerical_gradient": ("vaelayer_np.core.gradcheck.numerical_gradient",
                           "vaelayer_np.core.gradcheck.check_gradients", "vaelayer_np.core.gradcheck.check_loss"),
    "relative_error": ("vaelayer_np.core.gradcheck.relative_error",),
    "layer_gradient_errors": ("vaelayer_np.core.gradcheck.check_layer", "vaelayer_np.core.gradcheck.check_gradients",
                              "vaelayer_np.core.gradcheck.numerical_gradient",
                              "vaelayer_np.core.gradcheck.relative_error"),
}

CAUGHT = 1e-3  # a planted bug must show an error at least this large to count as caught


# ----------------------------------------------------------------------------- planted bugs (copies)
class ReluForgetsUpstream(Activation):
    """A ReLU layer whose backward returns the local derivative ``(x > 0)`` and forgets to
    multiply by the upstream gradient ``dout``: right exactly when ``dout`` is all ones."""

    def __init__(self, dtype=np.float64):
        super().__init__("relu", dtype=dtype)

    def backward(self, dout, cache, need_dx=True):
        x, _ = cache
        return (x > 0).astype(x.dtype), {}


class DenseBiasCountsRows(Dense):
    """A Dense layer whose bias gradient is the number of rows, N, in every entry instead of
    ``dout.sum(axis=0)``: right exactly when ``dout`` is all ones."""

    def backward(self, dout, cache, need_dx=True):
        dx, grads = super().backward(dout, cache, need_dx)
        grads["b"] = np.full_like(grads["b"], dout.shape[0])
        return dx, grads


def kl_gradient_with_log_var_bug(mu, log_var):
    r"""A copy of :func:`vaelayer_np.core.ops.kl_diag_gaussian` with the classic bug planted.

    The correct gradient is :math:`\partial KL/\partial\log\sigma^2 = (\sigma^2 - 1)/(2N)`;
    this copy writes the log-variance where the variance belongs, :math:`(\log\sigma^2 - 1)/(2N)`.
    The value is right, so only a gradient check finds the bug.

    Parameters
    ----------
    mu, log_var : (N, K) float arrays

    Returns
    -------
    value : float
    (d_mu, d_log_var) : (N, K) arrays
    """
    n = mu.shape[0]
    var = np.exp(log_var)
    value = float(-0.5 * np.sum(1 + log_var - mu * mu - var) / n)
    return value, (mu / n, (log_var - 1) * (0.5 / n))


# ----------------------------------------------------------------------------- exercise 1
def _smooth_problem(rng, shape):
    """A smooth scalar of an array, its analytic gradient and a float64 point."""
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)

    def f():
        return float(np.sum(g * np.tanh(x)) + 0.5 * np.sum(x * x) ** 1.5 / x.size)

    def grad():
        s = np.sum(x * x)
        return g * (1 - np.tanh(x) ** 2) + 1.5 * np.sqrt(s) * x / x.size

    return x, f, grad


def _forward_difference(f, x, h):
    grad = np.zeros_like(x)
    base = f()
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f() - base) / h
        x[i] = old
    return grad


@recorded
def check_numerical_gradient(numerical_gradient_fn, tol=DEFAULT_TOL):
    """Check ``numerical_gradient_fn(f, x, h) -> grad`` (central differences, ``x`` restored).

    On smooth random problems the result is compared with the analytic gradient and with
    :func:`vaelayer_np.core.gradcheck.numerical_gradient`; ``x`` must hold its original values
    afterwards (bit for bit), and ``f`` must be read at the perturbed points (in place).
    The figure is the worst relative error; a forward difference measures about 1e-5 here.
    """
    def body():
        rng = np.random.default_rng(3)
        worst, why = 0.0, ""
        for shape in ((6,), (3, 4), (2, 3, 2)):
            x, f, grad = _smooth_problem(rng, shape)
            before = x.copy()
            # x is perturbed in place by design: only its final values are checked (restored), so the
            # library is kept off limits here without the in-place watch of call_student.
            from .checks import library_names_used, tripwires
            used = library_names_used(numerical_gradient_fn, FORBIDDEN["numerical_gradient"])
            if used:
                raise Diagnosis(f"your function uses the library's {', '.join(used)}, which is what this exercise "
                                f"asks you to write")
            with tripwires(FORBIDDEN["numerical_gradient"]):
                got = numerical_gradient_fn(f, x, DEFAULT_STEP)
            if got is None:
                return np.inf, False, "returned None: return the gradient array"
            if isinstance(got, tuple):
                return np.inf, False, "return one array (the gradient), not a tuple"
            if not np.array_equal(x, before):
                changed = int(np.sum(x != before))
                return np.inf, False, (f"x was not restored ({changed} of {x.size} elements changed): after each "
                                       f"element's two evaluations put its old value back (x[i] = old)")
            if np.shape(got) != x.shape:
                return np.inf, False, f"expected a gradient of shape {x.shape}, got {np.shape(got)}"
            check_dtype("grad", got)
            got = np.asarray(got, dtype=np.float64)
            reference, _, _ = numerical_gradient(f, x, DEFAULT_STEP)
            err = max(max_relative_error(got, grad()), max_relative_error(got, reference))
            if err > worst:
                worst, why = err, explain_difference(got, reference, (("h", DEFAULT_STEP),), [
                    ("a forward difference (f(x+h) - f(x)) / h: its error is O(h), about 1e-5 here",
                     _forward_difference(f, x, DEFAULT_STEP))])
        return worst, worst < tol, "" if worst < tol else (why or "a forward difference (f(x+h) - f(x)) / h "
                                                                  "measures ~1e-5")

    return run_check("numerical_gradient (central differences)", body, bound=f"below {tol:g}")


# ----------------------------------------------------------------------------- exercise 2
def _error_cases(rng):
    """Pairs (a, b) that tell the library's measure from look-alikes."""
    cases = []
    for scale in (1.0, 1e-3, 1e3):
        a = scale * rng.standard_normal((4, 5))
        cases.append((a, a + scale * 1e-6 * rng.standard_normal((4, 5))))
    a = rng.standard_normal(7)
    b = a.copy()
    b[0] = 0.0  # one element of very different size: max over the tensor, not per element
    cases.append((a, b))
    a = rng.standard_normal((3, 3)) * 1e-3
    a[0, 0] = 5.0  # a large element sets the scale for the small ones
    b = a * (1 + 1e-2 * rng.standard_normal((3, 3)))
    cases.append((a, b))
    cases.append((np.zeros(4), np.zeros(4)))  # both zero: the floor keeps it finite, error 0
    cases.append((np.zeros(3), np.full(3, 1e-12)))  # below the floor: measured against the floor
    return cases


@recorded
def check_relative_error(relative_error_fn, tol=1e-12):
    r"""Check ``relative_error_fn(numeric, analytic) -> float`` against
    :func:`vaelayer_np.core.gradcheck.relative_error`:
    :math:`\max|a-b| / \max(\max|a|, \max|b|, 10^{-8})`.

    The cases include arrays of very different scales, an element set to zero (an
    element-wise measure would report 1 there) and arrays of zeros (the floor).
    The figure is the worst relative difference between the two measures.
    """
    def body():
        rng = np.random.default_rng(4)
        worst = 0.0
        for a, b in _error_cases(rng):
            with np.errstate(all="ignore"):
                got = call_student(relative_error_fn, (a.copy(), b.copy()), ("numeric", "analytic"),
                                   FORBIDDEN["relative_error"])
            if got is None:
                return np.inf, False, "returned None: return a float"
            if np.size(got) != 1:
                return np.inf, False, (f"returned an array of shape {np.shape(got)}: the error is one number for the "
                                       f"whole tensor (the max over its elements)")
            if np.asarray(got).dtype == np.float32:
                check_dtype("the error", np.asarray(got))
            got = float(np.asarray(got))
            want = relative_error(a, b)
            if not np.isfinite(got):
                return np.inf, False, f"returned {got} for arrays of shape {a.shape} (is the floor 1e-8 used?)"
            worst = max(worst, abs(got - want) / max(abs(want), 1e-300) if want else abs(got))
        return worst, worst < tol, "" if worst < tol else "the scale is the largest magnitude over both whole arrays"

    return run_check("relative_error", body, bound=f"below {tol:g}")


# ----------------------------------------------------------------------------- exercise 3
def _correct_layers(rng):
    return [("Dense(5, 3)", Dense(5, 3, rng=rng), rng.standard_normal((4, 5))),
            ("Activation(tanh)", Activation("tanh"), rng.standard_normal((4, 6)))]


def _buggy_layers(rng):
    x_relu = rng.standard_normal((4, 6))
    x_relu[np.abs(x_relu) < 1e-3] = 0.5  # keep every element away from the kink
    dense = DenseBiasCountsRows(5, 3, rng=rng)
    return [("ReLU whose backward forgets dout", ReluForgetsUpstream(), x_relu, "x"),
            ("Dense whose bias gradient is N", dense, rng.standard_normal((4, 5)), "b")]


@recorded
def check_layer_gradient_errors(layer_gradient_errors_fn, tol=DEFAULT_TOL):
    """Check ``layer_gradient_errors_fn(layer, x, rng) -> {tensor name: max relative error}``.

    The student's check must (1) report errors below ``tol`` for every parameter and for
    ``"x"`` on correct layers (Dense, tanh), and (2) report an error above 1e-3 on each of two
    planted bugs that an all-ones upstream gradient hides (a ReLU backward that forgets
    ``dout``; a bias gradient equal to N). The figure is the worst error on the correct layers.
    """
    def body():
        rng = np.random.default_rng(5)
        worst = 0.0
        for label, layer, x in _correct_layers(rng):
            params_before = {k: v.copy() for k, v in layer.params.items()}
            errors = call_student(layer_gradient_errors_fn, (layer, x, np.random.default_rng(6)), ("layer", "x", "rng"),
                                 FORBIDDEN["layer_gradient_errors"])
            for k, v in layer.params.items():
                if not np.array_equal(v, params_before[k]):
                    raise Diagnosis(f"{label}: layer.params[{k!r}] was not restored: a finite difference must put "
                                    f"every perturbed element back")
            if not isinstance(errors, dict):
                return np.inf, False, f"expected a dict tensor name -> error, got {type(errors).__name__}"
            for k, e in errors.items():
                if np.asarray(e).dtype == np.float32:
                    check_dtype(f"the error of {k}", np.asarray(e))
            missing = sorted((set(layer.params) | {"x"}) - set(errors))
            if missing:
                return np.inf, False, f"{label}: no error reported for {', '.join(missing)}"
            worst = max(worst, max(float(e) for e in errors.values()))
        if not worst < tol:
            return worst, False, ("a correct layer does not pass your check: is the difference central, "
                                  "(f(x+h) - f(x-h)) / 2h, in float64, with the same dout for every evaluation?")
        for label, layer, x, tensor in _buggy_layers(rng):
            errors = call_student(layer_gradient_errors_fn, (layer, x, np.random.default_rng(7)),
                                  ("layer", "x", "rng"), FORBIDDEN["layer_gradient_errors"])
            err = float(errors.get(tensor, 0.0)) if isinstance(errors, dict) else 0.0
            if not err > CAUGHT:
                return worst, False, (f"your check did not catch a planted bug ({label}): it measured "
                                      f"{err:.2g} on {tensor!r}. Is the upstream gradient random, not all ones?")
        return worst, True, "and both planted bugs caught"

    return run_check("layer_gradient_errors", body, bound=f"below {tol:g} on correct layers")
