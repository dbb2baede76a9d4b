"""Lesson 03 checkers (vaelayer_np.course.lesson03): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import gradcheck, ops
from vaelayer_np.course import lesson03


def stub(*args, **kwargs):
    raise NotImplementedError()


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(numeric, analytic, floor=1e-8):
    numeric, analytic = np.asarray(numeric, dtype=np.float64), np.asarray(analytic, dtype=np.float64)
    scale = max(np.abs(numeric).max(), np.abs(analytic).max(), floor)
    return float(np.abs(numeric - analytic).max() / scale)


def layer_errors(layer, x, rng, upstream=None):
    out, cache = layer.forward(x)
    dout = rng.standard_normal(out.shape) if upstream is None else upstream(out.shape)
    dx, grads = layer.backward(dout, cache)

    def loss():
        return float(np.sum(dout * layer.forward(x)[0]))

    errors = {name: relative_error(numerical_gradient(loss, p), grads[name]) for name, p in layer.params.items()}
    errors["x"] = relative_error(numerical_gradient(loss, x), dx)
    return errors


# ---------------------------------------------------------------- planted bugs
def forward_difference(f, x, h=1e-5):
    grad = np.zeros_like(x)
    f0 = f()
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        gflat[i] = (f() - f0) / h
        flat[i] = old
    return grad


def central_not_restored(f, x, h=1e-5):
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        gflat[i] = (f_plus - f()) / (2 * h)  # x stays at old - h
    return grad


def central_on_a_copy(f, x, h=1e-5):
    grad = np.zeros_like(x)
    y = x.copy()  # perturbs a copy that f never reads: every difference is 0
    flat, gflat = y.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        gflat[i] = (f_plus - f()) / (2 * h)
        flat[i] = old
    return grad


def elementwise_relative_error(numeric, analytic):
    return float(np.max(np.abs(numeric - analytic) / np.maximum(np.abs(numeric) + np.abs(analytic), 1e-8)))


def relative_error_one_sided(numeric, analytic):
    return float(np.abs(numeric - analytic).max() / max(np.abs(analytic).max(), 1e-8))


def layer_errors_all_ones(layer, x, rng):
    return layer_errors(layer, x, rng, upstream=np.ones)


def layer_errors_without_x(layer, x, rng):
    errors = layer_errors(layer, x, rng)
    errors.pop("x")
    return errors


def layer_errors_that_never_fail(layer, x, rng):
    return {name: 0.0 for name in list(layer.params) + ["x"]}


# ---------------------------------------------------------------- the checkers
def test_numerical_gradient_checker():
    assert lesson03.check_numerical_gradient(numerical_gradient).passed
    assert lesson03.check_numerical_gradient(lambda f, x, h: gradcheck.numerical_gradient(f, x, h)[0]).passed
    r = lesson03.check_numerical_gradient(stub)
    assert not r.passed and "not implemented" in str(r)
    r = lesson03.check_numerical_gradient(forward_difference)
    assert not r.passed and 1e-7 < r.figure < 1e-3, r
    r = lesson03.check_numerical_gradient(central_not_restored)
    assert not r.passed and "restored" in str(r)
    assert not lesson03.check_numerical_gradient(central_on_a_copy).passed


def test_relative_error_checker():
    assert lesson03.check_relative_error(relative_error).passed
    assert lesson03.check_relative_error(gradcheck.relative_error).passed
    r = lesson03.check_relative_error(stub)
    assert not r.passed and "not implemented" in str(r)
    assert not lesson03.check_relative_error(elementwise_relative_error).passed
    assert not lesson03.check_relative_error(relative_error_one_sided).passed


def test_layer_check_checker_needs_a_check_that_can_fail():
    r = lesson03.check_layer_gradient_errors(layer_errors)
    assert r.passed and r.figure < 1e-9, r
    r = lesson03.check_layer_gradient_errors(stub)
    assert not r.passed and "not implemented" in str(r)
    r = lesson03.check_layer_gradient_errors(layer_errors_all_ones)
    assert not r.passed and "planted bug" in str(r) and "all ones" in str(r)
    r = lesson03.check_layer_gradient_errors(layer_errors_without_x)
    assert not r.passed and "no error reported for x" in str(r)
    assert not lesson03.check_layer_gradient_errors(layer_errors_that_never_fail).passed


def test_planted_bugs_are_bugs_and_only_in_copies():
    rng = np.random.default_rng(0)
    mu, log_var = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    rows = gradcheck.check_loss("kl bug", lesson03.kl_gradient_with_log_var_bug, {"mu": mu, "log_var": log_var}, rng=1)
    assert [r.status for r in rows] == ["pass", "FAIL"]
    assert all(r.passed for r in gradcheck.check_loss("kl", ops.kl_diag_gaussian, {"mu": mu, "log_var": log_var},
                                                       rng=1))
    assert lesson03.kl_gradient_with_log_var_bug(mu, log_var)[0] == pytest.approx(ops.kl_diag_gaussian(mu, log_var)[0])
    for layer in (lesson03.ReluForgetsUpstream(), lesson03.DenseBiasCountsRows(3, 2, rng=0)):
        x = rng.standard_normal((4, 3))
        x[np.abs(x) < 1e-3] = 0.5
        rows = gradcheck.check_layer(layer, x, rng=2)
        assert any(r.status == "FAIL" for r in rows)
