"""Lesson 03 checkers (vaelayer_np.course.lesson03): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import gradcheck, ops
from vaelayer_np.course import lesson03

from .course_helpers import answer_test, planted_tests


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


def numerical_gradient_float32(f, x, h=1e-5):
    return numerical_gradient(f, x, h).astype(np.float32)


def numerical_gradient_half_step(f, x, h=1e-5):
    return numerical_gradient(f, x, h) * 2  # (f(x+h) - f(x-h)) / h: the 2 of 2h forgotten


def relative_error_in_place(numeric, analytic, floor=1e-8):
    numeric -= analytic  # the caller's numeric gradient becomes the difference
    return float(np.abs(numeric).max() / max(np.abs(numeric + analytic).max(), np.abs(analytic).max(), floor))


def relative_error_float32(numeric, analytic, floor=1e-8):
    return np.float32(relative_error(numeric, analytic, floor))


def relative_error_elementwise_array(numeric, analytic, floor=1e-8):
    return np.abs(numeric - analytic) / np.maximum(np.abs(numeric), floor)


def layer_errors_library(layer, x, rng):
    rows = gradcheck.check_layer(layer, x, rng)
    return {r.tensor: r.max_rel_error for r in rows}


def layer_errors_x_left_perturbed(layer, x, rng):
    errors = layer_errors(layer, x, rng)
    x += 1e-3  # the caller's input changed
    return errors


def layer_errors_float32(layer, x, rng):
    return {k: np.float32(v) for k, v in layer_errors(layer, x, rng).items()}


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson03.check_numerical_gradient, forward_difference, "slip", ["forward difference"]),
    (lesson03.check_numerical_gradient, central_not_restored, "in place", ["not restored"]),
    (lesson03.check_numerical_gradient, central_on_a_copy, "slip", ["measured"]),
    (lesson03.check_numerical_gradient, numerical_gradient_half_step, "slip", ["2 times"]),
    (lesson03.check_numerical_gradient, lambda f, x, h: gradcheck.numerical_gradient(f, x, h)[0], "library",
     ["gradcheck.numerical_gradient"]),
    (lesson03.check_numerical_gradient, numerical_gradient_float32, "float32", ["float32"]),
    (lesson03.check_relative_error, elementwise_relative_error, "slip", ["largest magnitude"]),
    (lesson03.check_relative_error, relative_error_one_sided, "slip", ["measured"]),
    (lesson03.check_relative_error, relative_error_elementwise_array, "slip", ["one number"]),
    (lesson03.check_relative_error, relative_error_in_place, "in place", ["in place", "`numeric`"]),
    (lesson03.check_relative_error, gradcheck.relative_error, "library", ["gradcheck.relative_error"]),
    (lesson03.check_relative_error, relative_error_float32, "float32", ["float32"]),
    (lesson03.check_layer_gradient_errors, layer_errors_all_ones, "slip", ["planted bug", "all ones"]),
    (lesson03.check_layer_gradient_errors, layer_errors_without_x, "slip", ["no error reported for x"]),
    (lesson03.check_layer_gradient_errors, layer_errors_that_never_fail, "slip", ["planted bug"]),
    (lesson03.check_layer_gradient_errors, layer_errors_library, "library", ["gradcheck.check_layer"]),
    (lesson03.check_layer_gradient_errors, layer_errors_x_left_perturbed, "in place", ["in place", "`x`"]),
    (lesson03.check_layer_gradient_errors, layer_errors_float32, "float32", ["float32"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(PLANTED)


test_checker_passes_a_correct_answer_and_reports_a_stub = answer_test(
    [(lesson03.check_numerical_gradient, numerical_gradient), (lesson03.check_relative_error, relative_error),
     (lesson03.check_layer_gradient_errors, layer_errors)], below=1e-9)


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
