"""Lesson 07 (speed and kernels): each checker passes a correct kernel, and fails a stub and a planted bug.

The kernels here are the notebook's solutions, written again; they run compiled, or as plain
Python under NUMBA_DISABLE_JIT=1 (the arrays of the checks are small either way). The checkers
are called with ``time_it=False``: their verdict never depends on a timing.
"""
import copy
import math
import queue
import statistics
import threading

import numpy as np
import pytest
from numba import njit

from vaelayer_np.course import lesson07
from vaelayer_np.course.lesson07 import (
    check_adam_kernel,
    check_interleaved_timer,
    check_kl_kernel,
    check_layer_pipeline,
    check_relu_backward_kernel,
    interleaved_medians,
    serial_epoch,
)

from .course_helpers import (
    assert_diagnosed,
    assert_passes,
    assert_reports_stub,
    assert_required_kinds,
    planted_ids,
    planted_tests,
    stub,
)


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


# ----------------------------------------------------------------------------- exercise 5: the layer pipeline
# The solution of the notebook, written again, and planted slips, each with the words its diagnosis must hold.
# No assertion is on a time: the checker's controlled steps wait for each other (a rendezvous), and its time
# limits (shortened here) are guards against a hang.
END = None


def pipelined_epoch(layer_steps, batches):
    n = len(layer_steps)
    queues = [queue.Queue() for _ in range(n + 1)]
    failures = []

    def worker(k):
        while True:
            item = queues[k].get()
            if item is END:
                queues[k + 1].put(END)
                return
            if failures:
                continue
            h, y = item
            try:
                out = copy.deepcopy(layer_steps[k](h, y))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failures.append(exc)
                continue
            queues[k + 1].put((out, y))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for x, y in batches:
        queues[0].put((x, y))
    queues[0].put(END)
    outputs = []
    while (item := queues[n].get()) is not END:
        outputs.append(item[0])
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return outputs


def _pipeline(layer_steps, batches, feed=None, hand_on=copy.deepcopy, sentinel=True, join=True, on_error="keep",
              collect=None, result=lambda outputs: outputs, group=None, lag=False):
    """The solution with one thing changed (each planted slip below picks one):

    feed(batches): what the caller puts on the first queue; hand_on(out): what a worker hands on (lag: the output
    of the batch before, with this batch's labels); sentinel: the
    end-of-epoch sentinel is sent; join: the caller joins its threads; on_error: "keep" (raise it in the caller),
    "skip" (swallowed), "die" (the worker's thread ends with it), "text" (the caller raises another exception);
    collect: how many outputs the caller waits for (None: until the sentinel); result(outputs): what is returned;
    group: the layers each thread runs (default: one layer per thread)."""
    groups = group or [[k] for k in range(len(layer_steps))]
    queues = [queue.Queue() for _ in range(len(groups) + 1)]
    failures = []

    def worker(g):
        previous = None
        while True:
            item = queues[g].get()
            if item is END:
                if sentinel:
                    queues[g + 1].put(END)
                return
            if failures:
                continue
            h, y = item
            try:
                for k in groups[g]:
                    h = hand_on(layer_steps[k](h, y))
            except BaseException as exc:  # noqa: BLE001
                if on_error == "die":
                    raise
                if on_error != "skip":
                    failures.append(exc)
                continue
            if previous is not None and lag:
                queues[g + 1].put((previous, y))
            else:
                queues[g + 1].put((h, y))
            previous = h

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in range(len(groups))]
    for t in threads:
        t.start()
    for x, y in (feed(batches) if feed is not None else batches):
        queues[0].put((x, y))
    if sentinel:
        queues[0].put(END)
    outputs = []
    if collect is None and sentinel:
        while (item := queues[-1].get()) is not END:
            outputs.append(item[0])
    else:
        for _ in range(len(batches) if collect is None else collect):
            outputs.append(queues[-1].get()[0])
    if join:
        for t in threads:
            t.join()
    if failures:
        if on_error == "text":
            raise RuntimeError(f"a worker failed: {failures[0]}") from None
        raise failures[0]
    return result(outputs)


def pipeline_serial_layer_major(layer_steps, batches):
    """Serial too, layer after layer: layer 0 on every batch, then layer 1 on every batch, ..."""
    hs = [x for x, _ in batches]
    for step in layer_steps:
        hs = [copy.deepcopy(step(h, y)) for h, (_, y) in zip(hs, batches)]
    return hs


def pipeline_two_stages(layer_steps, batches):
    """Layer 0 on one thread, every other layer on a second one: not one thread per layer."""
    return _pipeline(layer_steps, batches, group=[[0], list(range(1, len(layer_steps)))])


def pipeline_swaps_two_batches(layer_steps, batches):
    return _pipeline(layer_steps, batches, feed=lambda b: b[:3] + b[4:5] + b[3:4] + b[5:])


def pipeline_drops_the_last_batch(layer_steps, batches):
    return _pipeline(layer_steps, batches, feed=lambda b: b[:-1])


def pipeline_hands_on_the_previous_batch(layer_steps, batches):
    return _pipeline(layer_steps, batches, lag=True)


def pipeline_without_copies(layer_steps, batches):
    return _pipeline(layer_steps, batches, hand_on=lambda out: out)


def pipeline_copies_arrays_only(layer_steps, batches):
    return _pipeline(layer_steps, batches, hand_on=lambda out: out.copy())


def pipeline_swallows_the_exception(layer_steps, batches):
    return _pipeline(layer_steps, batches, on_error="skip")


def pipeline_worker_dies(layer_steps, batches):
    return _pipeline(layer_steps, batches, on_error="die")


def pipeline_raises_another_exception(layer_steps, batches):
    return _pipeline(layer_steps, batches, on_error="text")


def pipeline_leaves_threads_running(layer_steps, batches):
    return _pipeline(layer_steps, batches, sentinel=False, join=False)


def pipeline_without_sentinel(layer_steps, batches):
    return _pipeline(layer_steps, batches, sentinel=False, collect=len(batches))


def pipeline_reversed_outputs(layer_steps, batches):
    return _pipeline(layer_steps, batches, result=lambda outputs: outputs[::-1])


def pipeline_returns_a_tuple(layer_steps, batches):
    return _pipeline(layer_steps, batches, result=tuple)


def pipeline_library(layer_steps, batches):
    from vaelayer_np.fast.pipeline import LayerPipeline
    return LayerPipeline(layer_steps, {}, stages=len(layer_steps))


def pipeline_nan(layer_steps, batches):
    return _pipeline(layer_steps, batches, result=lambda outputs: [np.full_like(np.asarray(o, dtype=float), np.nan)
                                                                   for o in outputs])


PLANTED_PIPELINE = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (check_layer_pipeline, serial_epoch, "serial", ["your schedule is serial", "layer 2 held batch 0",
                                                    "a thread of its own"]),
    (check_layer_pipeline, pipeline_serial_layer_major, "serial", ["your schedule is serial",
                                                                   "layer 0 held batch 2"]),
    (check_layer_pipeline, pipeline_two_stages, "serial", ["your schedule is serial", "share a thread"]),
    (check_layer_pipeline, pipeline_swaps_two_batches, "order", ["layer 0 trained on the batches in the order "
                                                                 "[0, 1, 2, 4, 3, 5]"]),
    (check_layer_pipeline, pipeline_drops_the_last_batch, "dropped", ["layer 0 never trained on batch 5"]),
    (check_layer_pipeline, pipeline_hands_on_the_previous_batch, "wrong batch",
     ["layer 1 on batch 1 was fed layer 0's output on batch 0", "same batch t"]),
    (check_layer_pipeline, pipeline_without_copies, "not copied",
     ["read its input after layer", "had started rewriting it", "without a copy"]),
    (check_layer_pipeline, pipeline_copies_arrays_only, "tuple", ["AttributeError", "tuple"]),
    (check_layer_pipeline, pipeline_swallows_the_exception, "swallowed",
     ["layer 1's step raised PlantedStepError on batch 2", "as if nothing had happened"]),
    (check_layer_pipeline, pipeline_worker_dies, "hang", ["layer 1's step raised PlantedStepError on batch 2",
                                                          "had not returned after", "waiting now",
                                                          "end-of-epoch sentinel"]),
    (check_layer_pipeline, pipeline_raises_another_exception, "another exception",
     ["raised RuntimeError: a worker failed", "instead", "raise the step's own exception"]),
    (check_layer_pipeline, pipeline_leaves_threads_running, "threads left", ["still running", "join"]),
    (check_layer_pipeline, pipeline_without_sentinel, "hang", ["had not returned after", "every layer trained on "
                                                               "every batch", "end-of-epoch sentinel",
                                                               "waiting now", "t.join()"]),
    (check_layer_pipeline, pipeline_reversed_outputs, "order of outputs", ["batches [5, 4, 3, 2, 1, 0]",
                                                                           "in batch order"]),
    (check_layer_pipeline, pipeline_returns_a_tuple, "tuple (passes)", []),
    (check_layer_pipeline, pipeline_library, "library", ["LayerPipeline"]),
    (check_layer_pipeline, pipeline_nan, "nan", ["NaN"]),
]


@pytest.fixture
def short_guards(monkeypatch):
    """The checker's guards, shortened: a hang or a serial schedule is named within seconds."""
    monkeypatch.setitem(lesson07.PIPELINE_SECONDS, "patience", 2.0)
    monkeypatch.setitem(lesson07.PIPELINE_SECONDS, "run", 5.0)
    monkeypatch.setitem(lesson07.PIPELINE_SECONDS, "grace", 1.0)


@pytest.mark.parametrize("check, bug, kind, words", PLANTED_PIPELINE, ids=planted_ids(PLANTED_PIPELINE))
def test_pipeline_checker_diagnoses_a_planted_slip(short_guards, check, bug, kind, words):
    assert_diagnosed(check(bug), words, passes=kind.endswith("(passes)"))


def test_pipeline_checker_has_a_planted_slip_of_every_kind():
    assert_required_kinds(PLANTED_PIPELINE, (check_layer_pipeline,), {
        "serial", "order", "dropped", "wrong batch", "not copied", "swallowed", "hang", "another exception",
        "threads left", "order of outputs", "library", "nan"})


def test_pipeline_checker_passes_the_solution_and_reports_a_stub(short_guards):
    result = check_layer_pipeline(pipelined_epoch)
    assert_passes(result)
    assert "bit for bit the serial schedule" in str(result)
    assert_reports_stub(check_layer_pipeline(stub))


def test_the_serial_schedule_is_the_reference():
    """serial_epoch gives every layer its batches in order and copies the reused output arrays."""
    rng = np.random.default_rng(0)
    batches = lesson07._pipeline_batches(rng, 4)
    probe, finals, _ = lesson07._Pipeline.reference(3, batches)
    assert probe.calls == [[0, 1, 2, 3]] * 3
    assert len(finals) == 4 and len({f.tobytes() for f in finals}) == 4
    assert all(np.array_equal(f, probe.outputs[(2, t)]) for t, f in enumerate(finals))
