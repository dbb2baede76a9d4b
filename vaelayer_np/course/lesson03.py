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

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..core.gradcheck import DEFAULT_STEP, DEFAULT_TOL, numerical_gradient, relative_error
from ..core.layers import Activation, Dense
from .answer_keys import recorded
from .checks import CheckResult, Diagnosis, call_student, check_dtype, explain_difference, max_relative_error, run_check

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

    def __init__(self, dtype: DTypeLike = np.float64) -> None:
        super().__init__("relu", dtype=dtype)

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple:
        x, _ = cache
        return (x > 0).astype(x.dtype), {}


class DenseBiasCountsRows(Dense):
    """A Dense layer whose bias gradient is the number of rows, N, in every entry instead of
    ``dout.sum(axis=0)``: right exactly when ``dout`` is all ones."""

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple:
        dx, grads = super().backward(dout, cache, need_dx)
        grads["b"] = np.full_like(grads["b"], dout.shape[0])
        return dx, grads


def kl_gradient_with_log_var_bug(mu: np.ndarray, log_var: np.ndarray) -> tuple[float, tuple]:
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
def _smooth_problem(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple:
    """A smooth scalar of an array, its analytic gradient and a float64 point."""
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)

    def f():
        return float(np.sum(g * np.tanh(x)) + 0.5 * np.sum(x * x) ** 1.5 / x.size)

    def grad():
        s = np.sum(x * x)
        return g * (1 - np.tanh(x) ** 2) + 1.5 * np.sqrt(s) * x / x.size

    return x, f, grad


def _forward_difference(f: Callable[[], float], x: np.ndarray, h: float) -> np.ndarray:
    grad = np.zeros_like(x)
    base = f()
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f() - base) / h
        x[i] = old
    return grad


@recorded
def check_numerical_gradient(numerical_gradient_fn: Callable[..., Any], tol: float = DEFAULT_TOL) -> CheckResult:
    """Check ``numerical_gradient_fn(f, x, h) -> grad`` (central differences, ``x`` restored).

    On smooth random problems the result is compared with the analytic gradient and with
    :func:`vaelayer_np.core.gradcheck.numerical_gradient`; ``x`` must hold its original values
    afterwards (bit for bit), and ``f`` must be read at the perturbed points (in place).
    The figure is the worst relative error; a forward difference measures about 1e-5 here.
    """
    def body() -> tuple[float, bool, str]:
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
def _error_cases(rng: np.random.Generator) -> list:
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
def check_relative_error(relative_error_fn: Callable[..., Any], tol: float = 1e-12) -> CheckResult:
    r"""Check ``relative_error_fn(numeric, analytic) -> float`` against
    :func:`vaelayer_np.core.gradcheck.relative_error`:
    :math:`\max|a-b| / \max(\max|a|, \max|b|, 10^{-8})`.

    The cases include arrays of very different scales, an element set to zero (an
    element-wise measure would report 1 there) and arrays of zeros (the floor).
    The figure is the worst relative difference between the two measures.
    """
    def body() -> tuple[float, bool, str]:
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
def _correct_layers(rng: np.random.Generator) -> list[tuple]:
    return [("Dense(5, 3)", Dense(5, 3, rng=rng), rng.standard_normal((4, 5))),
            ("Activation(tanh)", Activation("tanh"), rng.standard_normal((4, 6)))]


def _buggy_layers(rng: np.random.Generator) -> list[tuple]:
    x_relu = rng.standard_normal((4, 6))
    x_relu[np.abs(x_relu) < 1e-3] = 0.5  # keep every element away from the kink
    dense = DenseBiasCountsRows(5, 3, rng=rng)
    return [("ReLU whose backward forgets dout", ReluForgetsUpstream(), x_relu, "x"),
            ("Dense whose bias gradient is N", dense, rng.standard_normal((4, 5)), "b")]


@recorded
def check_layer_gradient_errors(layer_gradient_errors_fn: Callable[..., Any], tol: float = DEFAULT_TOL) -> CheckResult:
    """Check ``layer_gradient_errors_fn(layer, x, rng) -> {tensor name: max relative error}``.

    The student's check must (1) report errors below ``tol`` for every parameter and for
    ``"x"`` on correct layers (Dense, tanh), and (2) report an error above 1e-3 on each of two
    planted bugs that an all-ones upstream gradient hides (a ReLU backward that forgets
    ``dout``; a bias gradient equal to N). The figure is the worst error on the correct layers.
    """
    def body() -> tuple[float, bool, str]:
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


# ----------------------------------------------------------------------------- exercise 4: a network with a bug
class NoisyVAE:
    """A VAE layer with its noise drawn once and held fixed, and without its own loss: ``forward(x) -> (out,
    cache)`` and ``backward(dout, cache) -> (dx, grads)`` differentiate ``<dout, out>`` alone, like any other
    layer, so a layer check with a random ``dout`` applies to it as it is."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int, rng: np.random.Generator,
                 pass_on: str = "sample") -> None:
        from ..core.layers import VAELayer

        self.vae = VAELayer(in_dim, latent_dim, encoder_hidden=hidden, activation="tanh", pass_on=pass_on,
                            log_var_bias_init=-1.0, rng=rng, dtype=np.float64)
        self.params = self.vae.params
        self.dtype = self.vae.dtype
        self.eps: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if self.eps is None or self.eps.shape[0] != x.shape[0]:
            self.eps = np.random.default_rng(x.shape[0]).standard_normal((x.shape[0], self.vae.latent_dim))
        return self.vae.forward(x, eps=self.eps)

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[Any, dict[str, np.ndarray]]:
        return self.vae.backward(dout, cache, neg_elbo_weight=0.0, need_dx=need_dx)


class MysteryNetwork:
    """Two VAE layers (tanh, the sample passed on) and a Dense layer on top, trained by backpropagation:
    ``forward(x) -> (out, caches)``, ``backward(dout, caches) -> (dx, [grads of each layer])``, ``layers``."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x)
            caches.append(cache)
        return x, caches

    def backward(self, dout: np.ndarray, caches: list[Any]) -> tuple[np.ndarray, list[Any]]:
        grads: list[Any] = [None] * len(self.layers)
        for k in range(len(self.layers) - 1, -1, -1):
            dout, grads[k] = self.layers[k].backward(dout, caches[k])
        return dout, grads


def _planted(layer: Any, bug: str) -> Any:
    """``layer`` with one bug planted in its backward (a subclass made here: the library is never changed)."""
    base = type(layer)

    def backward(self: Any, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[Any, dict[str, np.ndarray]]:
        if bug == "h_pre for h":          # the heads' weight gradients from the pre-activation
            cache = dict(cache, h=cache["h_pre"])
            return base.backward(self, dout, cache, need_dx)
        if bug == "noise dropped":        # the sample's path to the log-variance forgotten
            cache = dict(cache, eps=np.zeros_like(cache["eps"]))
            dx, grads = base.backward(self, dout, cache, need_dx)
            return dx, grads
        dx, grads = base.backward(self, dout, cache, need_dx)
        if bug == "rows reversed":        # the input gradient's rows out of step with the examples
            return dx[::-1].copy(), grads
        if bug == "mean not sum":         # the weight gradient averaged over the batch where it is summed
            return dx, dict(grads, W=grads["W"] / dout.shape[0])
        raise ValueError(bug)

    planted: Any = type(f"{base.__name__}", (base,), {"backward": backward})
    layer.__class__ = planted
    return layer


# (layer where the bug is, the bug): the cases of the checker; None: a network without a bug
MYSTERY_CASES = ((1, "rows reversed"), (0, "h_pre for h"), (2, "mean not sum"), (1, "noise dropped"), None)


def mystery_network(case: int = 0, seed: int = 0) -> tuple[MysteryNetwork, np.ndarray]:
    """A :class:`MysteryNetwork` (10 inputs -> 6 -> 5 -> 3) with the bug of ``MYSTERY_CASES[case]`` planted,
    and a batch ``x`` (8, 10) for it. Case 0 is the lesson's."""
    rng = np.random.default_rng(100 + seed)
    layers: list[Any] = [NoisyVAE(10, 6, 8, rng), NoisyVAE(6, 5, 7, rng), Dense(5, 3, rng=rng)]
    for layer in layers:  # biases off zero: no tanh near saturation questions, no kinks
        for name, value in layer.params.items():
            if name.startswith("b"):
                value += rng.normal(0.0, 0.2, value.shape)
    planted = MYSTERY_CASES[case]
    if planted is not None:
        _planted(layers[planted[0]], planted[1])
    return MysteryNetwork(layers), rng.standard_normal((8, 10))


def _wrong_tensors(net: Any, x: np.ndarray, k: int) -> set[str]:
    """The tensors of layer k whose gradient differs from the right one (the layer's class without the bug),
    on layer k's own input and a random upstream gradient: what an answer may name."""
    h = x
    for layer in net.layers[:k]:
        h, _ = layer.forward(h)
    layer = net.layers[k]
    out, cache = layer.forward(h)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, grads = layer.backward(dout, cache)
    right: Any = type(layer).__mro__[1]
    dx_ok, grads_ok = right.backward(layer, dout, cache)
    wrong = {name for name in grads if not np.allclose(grads[name], grads_ok[name], rtol=1e-9, atol=1e-12)}
    return wrong | ({"x"} if not np.allclose(dx, dx_ok, rtol=1e-9, atol=1e-12) else set())


@recorded
def check_locate_bug(locate_bug_fn: Callable[..., Any], threshold: float = 1e-6) -> CheckResult:
    """Check ``locate_bug_fn(net, x, rng) -> (k, name)`` or ``None``: the layer of a :class:`MysteryNetwork`
    whose backward is wrong, and one of its tensors (a key of its ``params``, or ``"x"`` for the input
    gradient) whose gradient is wrong; ``None`` when every layer is right.

    Run on every case of :data:`MYSTERY_CASES`: four networks with a bug in a different place (the input
    gradient of a middle layer, a first layer's head weights, the top layer's weights, a middle layer's
    log-variance path) and one without. Diagnoses: a layer below the culprit named (its gradients are
    wrong only because the layer above sends it a wrong gradient), a layer that passes a check of its own
    named, the right layer with a tensor that is right, a false alarm on the clean network, a bug missed,
    parameters left changed.
    """
    def body() -> tuple[float, bool, str]:
        found = 0
        for case, planted in enumerate(MYSTERY_CASES):
            net, x = mystery_network(case, seed=case)
            before = [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]
            answer = call_student(locate_bug_fn, (net, x, np.random.default_rng(case)), ("net", "x", "rng"),
                                  FORBIDDEN["layer_gradient_errors"])
            for k, layer in enumerate(net.layers):
                moved = [n for n, v in layer.params.items() if not np.array_equal(v, before[k][n])]
                if moved:
                    raise Diagnosis(f"network {case + 1}: layer {k}'s {moved[0]} was not restored: a finite "
                                    f"difference must put every perturbed element back")
            if planted is None:
                if answer is not None:
                    raise Diagnosis(f"network {case + 1} has no bug, but your function names {answer!r}: a false "
                                    f"alarm (a correct layer's error is about 1e-9 in float64; is your threshold "
                                    f"below that, or do you compare with something else than each layer's own "
                                    f"check?)")
                continue
            culprit = planted[0]
            if answer is None:
                raise Diagnosis(f"network {case + 1} has a bug, and your function found none: does it check every "
                                f"layer, with a random upstream gradient, every parameter and the input?")
            if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
                raise Diagnosis(f"expected (layer index, tensor name) or None, got {answer!r}")
            k, name = answer
            wrong = _wrong_tensors(net, x, culprit)
            if k == culprit and name in wrong:
                found += 1
                continue
            if not isinstance(k, (int, np.integer)) or not 0 <= k < len(net.layers):
                raise Diagnosis(f"network {case + 1}: {k!r} is not a layer index (0 to {len(net.layers) - 1})")
            if k < culprit:
                raise Diagnosis(f"network {case + 1}: you named layer {k}, whose backward is right: its gradients "
                                f"are wrong in the network only because a layer above sends it a wrong upstream "
                                f"gradient. Check each layer on its own (its own input, a random dout), not the "
                                f"network end to end")
            if k != culprit:
                raise Diagnosis(f"network {case + 1}: layer {k} passes a check of its own; the bug is elsewhere")
            raise Diagnosis(f"network {case + 1}: layer {k} is the one with the bug, but its {name!r} gradient is "
                            f"right: name a tensor whose own check fails")
        return float(found), True, f"found the bug in {found} networks, no false alarm on the clean one"

    return run_check("locate_bug", body, bound="every bug found, no false alarm")
