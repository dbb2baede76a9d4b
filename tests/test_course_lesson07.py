"""Lesson 07 (speed and kernels): each checker passes a correct kernel, and fails a stub and a planted bug.

The kernels here are the notebook's solutions, written again; they run compiled, or as plain
Python under NUMBA_DISABLE_JIT=1 (the arrays of the checks are small either way). The checkers
are called with ``time_it=False``: their verdict never depends on a timing.
"""
import math
import statistics

import numpy as np
import pytest
from numba import njit

from vaelayer_np.course import lesson07
from vaelayer_np.course.lesson07 import (
    check_adam_kernel,
    check_interleaved_timer,
    check_kl_kernel,
    check_relu_backward_kernel,
    interleaved_medians,
)

from .course_helpers import planted_tests, stub


# ----------------------------------------------------------------------------- correct kernels
@njit(cache=False)
def relu_backward_kernel(dout, x):
    dx = np.empty_like(dout)
    fd, fx, fr = dout.reshape(-1), x.reshape(-1), dx.reshape(-1)
    for i in range(fx.size):
        fr[i] = fd[i] if fx[i] > 0 else 0.0
    return dx


@njit(cache=False)
def kl_kernel(mu, log_var, var):
    n, k = mu.shape
    d_mu = np.empty_like(mu)
    d_lv = np.empty_like(mu)
    total = 0.0
    for i in range(n):
        for j in range(k):
            total += 1.0 + log_var[i, j] - mu[i, j] * mu[i, j] - var[i, j]
            d_mu[i, j] = mu[i, j] / n
            d_lv[i, j] = (var[i, j] - 1.0) * 0.5 / n
    return -0.5 * total / n, d_mu, d_lv


@njit(cache=False)
def adam_kernel(w, g, m, v, beta1, beta2, step_size, eps_hat):
    for i in range(w.size):
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
        w[i] -= step_size * m[i] / (math.sqrt(v[i]) + eps_hat)


def timer(f, g, repeats=21, warmup=2, clock=None):
    for _ in range(warmup):
        f()
        g()
    tf, tg = [], []
    for _ in range(repeats):
        t0 = clock()
        f()
        t1 = clock()
        g()
        t2 = clock()
        tf.append(t1 - t0)
        tg.append(t2 - t1)
    return statistics.median(tf), statistics.median(tg)


# ----------------------------------------------------------------------------- planted wrong answers, in plain
# Python (no compilation: a checker takes any function), each with the diagnosis it must get
def relu_py(dout, x):
    return dout * (x > 0)


def relu_py_in_place(dout, x):
    dout[x <= 0] = 0  # writes into the caller's dout
    return dout


def relu_py_kink(dout, x):
    return dout * (x >= 0)


def relu_py_library(dout, x):
    from vaelayer_np.core.activations import relu_backward
    return relu_backward(dout, x, None)


def kl_py(mu, log_var, var):
    n = mu.shape[0]
    return -0.5 * float(np.sum(1 + log_var - mu * mu - var)) / n, mu / n, (var - 1) * (0.5 / n)


def kl_py_in_place(mu, log_var, var):
    value, d_mu, _ = kl_py(mu, log_var, var)
    var -= 1.0  # the caller's var changed
    return value, d_mu, var * (0.5 / mu.shape[0])


def kl_py_float64_out(mu, log_var, var):
    value, d_mu, d_lv = kl_py(mu, log_var, var)
    return value, d_mu.astype(np.float64), d_lv.astype(np.float64)


def kl_py_library(mu, log_var, var):
    from vaelayer_np.core import ops
    value, (d_mu, d_lv) = ops.kl_diag_gaussian(mu, log_var, var)
    return value, d_mu, d_lv


def kl_py_sign(mu, log_var, var):
    value, d_mu, d_lv = kl_py(mu, log_var, var)
    return value, d_mu, -d_lv


def adam_py(w, g, m, v, beta1, beta2, step_size, eps_hat):
    m[:] = beta1 * m + (1 - beta1) * g
    v[:] = beta2 * v + (1 - beta2) * g * g
    w -= step_size * m / (np.sqrt(v) + eps_hat)


def adam_py_clips_g(w, g, m, v, beta1, beta2, step_size, eps_hat):
    np.clip(g, -1, 1, out=g)  # the caller's gradient changed
    adam_py(w, g, m, v, beta1, beta2, step_size, eps_hat)


def adam_py_library(w, g, m, v, beta1, beta2, step_size, eps_hat):
    from vaelayer_np.core import ops
    ops.adam_update(w, g, m, v, beta1, beta2, step_size, eps_hat)


def adam_py_float64_state(w, g, m, v, beta1, beta2, step_size, eps_hat):
    m64 = m.astype(np.float64)
    adam_py(w, g, m64, v, beta1, beta2, step_size, eps_hat)  # m is never updated: a float64 copy was


def adam_py_no_bias(w, g, m, v, beta1, beta2, step_size, eps_hat):
    m[:] = beta1 * m + g
    v[:] = beta2 * v + (1 - beta2) * g * g
    w -= step_size * m / (np.sqrt(v) + eps_hat)


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (check_relu_backward_kernel, relu_py_kink, "slip", ["kink"]),
    (check_relu_backward_kernel, lambda dout, x: (x > 0).astype(dout.dtype), "slip", ["dout is forgotten"]),
    (check_relu_backward_kernel, relu_py_in_place, "in place", ["in place", "`dout`"]),
    (check_relu_backward_kernel, relu_py_library, "library", ["relu_backward"]),
    (check_relu_backward_kernel, lambda dout, x: relu_py(dout, x).astype(np.float32), "float32",
     ["dtype float32, expected float64"]),
    (check_relu_backward_kernel, lambda dout, x: relu_py(dout, x).astype(np.float64), "float32",
     ["dtype float64, expected float32"]),
    (check_kl_kernel, kl_py_sign, "slip", ["`d_log_var`", "sign flipped"]),
    (check_kl_kernel, kl_py_in_place, "in place", ["in place", "`var`"]),
    (check_kl_kernel, kl_py_library, "library", ["kl_diag_gaussian"]),
    (check_kl_kernel, kl_py_float64_out, "float32", ["expected float32"]),
    (check_kl_kernel, lambda mu, lv, var: (kl_py(mu, lv, var)[0], mu, (var - 1) / 2), "slip", ["N times"]),
    (check_adam_kernel, adam_py_clips_g, "in place", ["in place", "`g`"]),
    (check_adam_kernel, adam_py_library, "library", ["adam_update"]),
    (check_adam_kernel, adam_py_float64_state, "float32", ["FAIL"]),
    (check_adam_kernel, adam_py_no_bias, "slip", ["FAIL"]),
    (check_interleaved_timer, interleaved_medians, "library", ["interleaved_medians"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_kernel_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(
    PLANTED, call=lambda check, bug: check(bug) if check is check_interleaved_timer else check(bug, time_it=False),
    checkers=(check_relu_backward_kernel, check_kl_kernel, check_adam_kernel))


@pytest.mark.parametrize("check, answer", [(check_relu_backward_kernel, relu_py), (check_kl_kernel, kl_py),
                                           (check_adam_kernel, adam_py)], ids=lambda v: getattr(v, "__name__", ""))
def test_kernel_checkers_pass_a_plain_python_answer(check, answer):
    result = check(answer, time_it=False)
    assert result.passed, str(result)


# ----------------------------------------------------------------------------- planted bugs (compiled)
@njit(cache=False)
def relu_backward_at_zero_is_one(dout, x):
    dx = np.empty_like(dout)
    fd, fx, fr = dout.reshape(-1), x.reshape(-1), dx.reshape(-1)
    for i in range(fx.size):
        fr[i] = fd[i] if fx[i] >= 0 else 0.0
    return dx


def relu_backward_float64_output(dout, x):
    return (dout * (x > 0)).astype(np.float64)


@njit(cache=False)
def kl_kernel_gradient_of_variance(mu, log_var, var):
    # d KL / d var = (1 - 1/var) / (2N) in place of d KL / d log_var = (var - 1) / (2N)
    n, k = mu.shape
    d_mu = np.empty_like(mu)
    d_lv = np.empty_like(mu)
    total = 0.0
    for i in range(n):
        for j in range(k):
            total += 1.0 + log_var[i, j] - mu[i, j] * mu[i, j] - var[i, j]
            d_mu[i, j] = mu[i, j] / n
            d_lv[i, j] = (1.0 - 1.0 / var[i, j]) * 0.5 / n
    return -0.5 * total / n, d_mu, d_lv


@njit(cache=False)
def adam_kernel_without_square(w, g, m, v, beta1, beta2, step_size, eps_hat):
    for i in range(w.size):
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1.0 - beta2) * abs(g[i])
        w[i] -= step_size * m[i] / (math.sqrt(v[i]) + eps_hat)


def timer_not_interleaved(f, g, repeats=21, warmup=2, clock=None):
    for _ in range(warmup):
        f()
        g()
    tf, tg = [], []
    for times, fn in ((tf, f), (tg, g)):
        for _ in range(repeats):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return statistics.median(tf), statistics.median(tg)


def timer_mean(f, g, repeats=21, warmup=2, clock=None):
    med_f, med_g = timer(f, g, repeats, warmup, clock)
    return med_f * 1.1, med_g * 1.1  # stands for any statistic other than the median


def timer_timing_the_warmup(f, g, repeats=21, warmup=2, clock=None):
    tf, tg = [], []
    for _ in range(warmup + repeats):
        t0 = clock()
        f()
        t1 = clock()
        g()
        tf.append(t1 - t0)
        tg.append(clock() - t1)
    return statistics.median(tf), statistics.median(tg)


CHECKS = [
    (check_relu_backward_kernel, relu_backward_kernel, [relu_backward_at_zero_is_one, relu_backward_float64_output]),
    (check_kl_kernel, kl_kernel, [kl_kernel_gradient_of_variance]),
    (check_adam_kernel, adam_kernel, [adam_kernel_without_square]),
]


@pytest.mark.slow  # compiling the kernels for two dtypes: 3-7 s each on a busy machine
@pytest.mark.parametrize("check, good, bugs", CHECKS, ids=lambda c: getattr(c, "__name__", ""))
def test_kernel_checkers(check, good, bugs):
    result = check(good, time_it=False)
    assert result.passed, str(result)
    assert str(result).startswith("PASS") and "float32 error" in str(result)
    result = check(stub, time_it=False)
    assert not result.passed and "not implemented" in str(result)
    for bug in bugs:
        result = check(bug, time_it=False)
        assert not result.passed, f"{bug.__name__} passed: {result}"
        assert str(result).startswith("FAIL")


@njit(cache=False)
def compiled_stub(dout, x):
    raise NotImplementedError()


def test_a_compiled_stub_reads_not_implemented():
    """The student notebook's exercise cells are @njit functions whose body raises NotImplementedError."""
    result = check_relu_backward_kernel(compiled_stub, time_it=False)
    assert not result.passed and "not implemented" in str(result)


def test_kernel_checker_prints_the_speed_ratio_as_information():
    result = check_kl_kernel(kl_kernel, time_it=True, quick=True)
    assert result.passed, str(result)
    assert ("ratio" in str(result) and "not part of the verdict" in str(result)) or "timing skipped" in str(result)


def test_the_solution_passes_the_timer_checker_and_the_library_timer_is_refused():
    assert "library" in str(check_interleaved_timer(interleaved_medians))
    result = check_interleaved_timer(timer)
    assert result.passed and "medians exact" in str(result)
    assert "not implemented" in str(check_interleaved_timer(stub))


@pytest.mark.parametrize("bug, words", [(timer_not_interleaved, "alternate"), (timer_mean, "medians"),
                                        (timer_timing_the_warmup, "warm-up")])
def test_timer_checker_catches_bugs(bug, words):
    result = check_interleaved_timer(bug)
    assert not result.passed and words in str(result), str(result)


def test_interleaved_medians_validates_and_measures():
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians(lambda: None, lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        interleaved_medians(lambda: None, lambda: None, warmup=-1)
    t_f, t_g = interleaved_medians(lambda: sum(range(20000)), lambda: None, repeats=5, warmup=1)
    assert t_f > t_g >= 0


def test_median_ratio_is_the_median_of_per_round_ratios(monkeypatch):
    fake_f = np.array([1.0, 1.0, 5.0, 5.0, 1.0])   # two humps: the median of each side can mislead,
    fake_g = np.array([2.0, 10.0, 10.0, 2.0, 2.0])  # the per-round ratios are 2, 10, 2, 0.4, 2
    monkeypatch.setattr(lesson07, "interleaved_times", lambda *a, **k: (fake_f, fake_g))
    assert lesson07.median_ratio(None, None) == (1.0, 2.0, 2.0)


def test_speed_note_without_the_jit(monkeypatch):
    monkeypatch.setattr(lesson07, "jit_enabled", lambda: False)
    assert "timing skipped" in lesson07.speed_note(lambda: None, lambda: None)
