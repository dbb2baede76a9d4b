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


def make_locate_bug(errors_fn=None, threshold=1e-6, end_to_end=False, name_of=None):
    """Exercise 4's answer (the defaults) or a planted slip: the whole network checked at once, another
    threshold or layer check, a wrong choice of tensor."""
    errors_fn = errors_fn or layer_errors

    def locate_bug(net, x, rng):
        if end_to_end:  # the network's own check; the lowest failing layer is blamed
            out, caches = net.forward(x)
            g = rng.standard_normal(out.shape)
            _, grads = net.backward(g, caches)
            for k, layer in enumerate(net.layers):
                for name, p in layer.params.items():
                    num = numerical_gradient(lambda: float(np.sum(g * net.forward(x)[0])), p)
                    if relative_error(num, grads[k][name]) > threshold:
                        return k, name
            return None
        h = x
        for k, layer in enumerate(net.layers):
            errors = errors_fn(layer, h.copy(), rng)
            worst = max(errors, key=errors.get)
            if errors[worst] > threshold:
                return k, (name_of(errors) if name_of else worst)
            h, _ = layer.forward(h)
        return None

    return locate_bug


def layer_errors_not_restoring(layer, x, rng):
    errors = layer_errors(layer, x, rng)
    first = next(iter(layer.params.values()))
    first.flat[0] += 1e-5  # one perturbed element left behind
    return errors


def layer_errors_in_float32(layer, x, rng):
    out, cache = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx, grads = layer.backward(dout, cache)
    errors = {}
    for name, p in list(layer.params.items()) + [("x", x)]:
        kept = p.copy()
        num = np.zeros_like(p)
        for i in range(p.size):  # float32 differences: about 1e-3 of noise
            p.flat[i] = kept.flat[i] + 1e-3
            f_plus = np.float32(np.sum(dout * layer.forward(x)[0]))
            p.flat[i] = kept.flat[i] - 1e-3
            f_minus = np.float32(np.sum(dout * layer.forward(x)[0]))
            p.flat[i] = kept.flat[i]
            num.flat[i] = (f_plus - f_minus) / np.float32(2e-3)
        errors[name] = relative_error(num, grads[name] if name != "x" else dx)
    return errors


def locate_bug_library(net, x, rng):
    h = x
    for k, layer in enumerate(net.layers):
        bad = [r.tensor for r in gradcheck.check_layer(layer, h.copy(), rng=1) if not r.passed]
        if bad:
            return k, bad[0]
        h, _ = layer.forward(h)
    return None


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson03.check_locate_bug, make_locate_bug(end_to_end=True), "slip",
     ["network 1", "layer 0, whose backward is right", "on its own"]),
    (lesson03.check_locate_bug, lambda net, x, rng: None, "slip", ["network 1 has a bug", "found none"]),
    (lesson03.check_locate_bug, make_locate_bug(name_of=lambda errors: min(errors, key=errors.get)), "slip",
     ["is the one with the bug", "gradient is right"]),
    (lesson03.check_locate_bug, make_locate_bug(threshold=1e-16), "slip", ["layer 0, whose backward is right"]),
    (lesson03.check_locate_bug, make_locate_bug(errors_fn=layer_errors_not_restoring), "in place",
     ["not restored"]),
    (lesson03.check_locate_bug, locate_bug_library, "library", ["gradcheck.check_layer"]),
    (lesson03.check_locate_bug, make_locate_bug(errors_fn=layer_errors_in_float32), "float32",
     ["layer 0, whose backward is right"]),
    (lesson03.check_locate_bug, lambda net, x, rng: [1, "x"] if len(x) else None, "a list (passes on network 1)",
     []),
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


def test_locate_bug_checker_passes_the_answer_and_reports_a_stub():
    from .course_helpers import assert_reports_stub, stub

    result = lesson03.check_locate_bug(make_locate_bug())
    assert result.passed and "found the bug in 4 networks" in str(result), str(result)
    assert_reports_stub(lesson03.check_locate_bug(stub))


def test_a_false_alarm_on_the_clean_network_is_named():
    def always_layer_one(net, x, rng):
        return 1, "x"

    text = str(lesson03.check_locate_bug(always_layer_one))
    assert text.startswith("FAIL") and "network 2" in text, text  # right on network 1, wrong on network 2
    answers = iter([(1, "x"), (0, "W_enc"), (2, "W"), (1, "W_lv"), (0, "W_enc")])
    text = str(lesson03.check_locate_bug(lambda net, x, rng: next(answers)))
    assert "network 5 has no bug" in text and "false alarm" in text, text


def test_every_mystery_network_has_its_bug_where_the_cases_say():
    """Each planted bug is a bug of that layer alone: the layer's own check fails there and nowhere else."""
    for case, planted in enumerate(lesson03.MYSTERY_CASES):
        net, x = lesson03.mystery_network(case, seed=case)
        h, failing = x, set()
        for k, layer in enumerate(net.layers):
            if any(not r.passed for r in gradcheck.check_layer(layer, h.copy(), rng=1)):
                failing.add(k)
            h, _ = layer.forward(h)
        assert failing == (set() if planted is None else {planted[0]}), (case, failing)
