"""Lesson 07, speed and kernels: an honest timer and the checkers of the lesson's exercises.

The exercises of ``notebooks/07_speed_and_kernels.ipynb``:

* :func:`check_relu_backward_kernel` -- a fused Numba kernel for the ReLU backward,
  against :func:`vaelayer_np.core.activations.relu_backward`;
* :func:`check_kl_kernel` -- a fused Numba kernel for the KL value and its two gradients,
  against :func:`vaelayer_np.core.ops.kl_diag_gaussian`;
* :func:`check_adam_kernel` -- a fused Numba kernel for one in-place Adam update,
  against :func:`vaelayer_np.core.ops.adam_update`;
* :func:`check_interleaved_timer` -- a median-of-repeats timer that interleaves two functions.

The kernel checkers compare outputs with the reference on random inputs, in float64 and in
float32, each with its own tolerance. They also time the student's kernel against the reference
with :func:`median_ratio` and print the ratio, as information only: timings on a shared
machine are noisy, so the verdict never depends on them. The timer's checker uses a fake clock,
so its verdict is exact and does not depend on the machine either.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from ..core import activations, ops
from .answer_keys import recorded, register_reveal
from .checks import Diagnosis, call_student, explain_difference, max_relative_error, run_check

# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "relu_backward": ("vaelayer_np.core.activations.relu_backward", "vaelayer_np.fast.kernels._act_backward",
                      "vaelayer_np.fast.kernels.make_activation"),
    "kl": ("vaelayer_np.core.ops.kl_diag_gaussian", "vaelayer_np.core.losses.kl_diag_gaussian",
           "vaelayer_np.fast.kernels.kl_diag_gaussian", "vaelayer_np.fast.kernels._kl_diag_gaussian"),
    "adam": ("vaelayer_np.core.ops.adam_update", "vaelayer_np.fast.kernels.adam_update",
             "vaelayer_np.fast.kernels._adam_update"),
    "timer": ("vaelayer_np.course.lesson07.interleaved_medians", "vaelayer_np.course.lesson07.interleaved_times",
              "vaelayer_np.course.lesson07.median_ratio"),
}

# Tolerances of the kernel checks, relative to the largest entry (checks.max_relative_error).
# float64 kernels agree with NumPy to a few rounding errors; float32 ones to a few float32 ulps.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


# ----------------------------------------------------------------------------- timing
def _yield_cpu():
    """Let the operating system run other jobs now, so that the next timed call starts a fresh time slice."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def interleaved_times(f, g, repeats=21, warmup=2, clock=time.perf_counter, seed=0):
    """Times of ``f()`` and ``g()``, measured alternately in one loop, round by round.

    Each function is first called ``warmup`` times (compilation, caches, page faults are
    paid there and not measured). Then each of ``repeats`` rounds times one call of ``f``
    and one call of ``g``, in an order drawn at random per round: a slow phase of a shared
    machine (another job starting, the CPU clock changing) lands on both functions instead
    of on whichever ran at that moment, and the random order keeps a periodic disturbance
    (the operating system's time slices falling in step with the loop) from always hitting
    the same one of the two. Before each timed call the process gives up the rest of its
    time slice (``os.sched_yield``), so that each call starts on a fresh slice: on a machine
    with more running jobs than cores, a call of a few milliseconds is then far less often
    interrupted half-way.

    Parameters
    ----------
    f, g : callables without arguments
    repeats : int >= 1, timed calls of each function
    warmup : int >= 0, untimed calls of each function before the loop
    clock : callable returning seconds (``time.perf_counter``; a test passes a fake clock)
    seed : int, seeds the order of the two calls in each round

    Returns
    -------
    (times_f, times_g) : two (repeats,) float arrays, seconds per call; entry i of both is round i
    """
    if int(repeats) < 1:
        raise ValueError(f"repeats: expected an integer >= 1, got {repeats!r}")
    if int(warmup) < 0:
        raise ValueError(f"warmup: expected an integer >= 0, got {warmup!r}")
    for _ in range(int(warmup)):
        f()
        g()
    order = np.random.default_rng(seed).random(int(repeats)) < 0.5
    times_f, times_g = [], []
    for f_first in order:
        pair = ((f, times_f), (g, times_g)) if f_first else ((g, times_g), (f, times_f))
        for fn, record in pair:
            _yield_cpu()
            t0 = clock()
            fn()
            record.append(clock() - t0)
    return np.array(times_f), np.array(times_g)


def interleaved_medians(f, g, repeats=21, warmup=2, clock=time.perf_counter, seed=0):
    """Median run time of ``f()`` and of ``g()`` from :func:`interleaved_times` (same parameters).

    The median ignores the occasional very slow repeat that a mean would absorb.

    Returns
    -------
    (median_f, median_g) : floats, seconds per call
    """
    times_f, times_g = interleaved_times(f, g, repeats, warmup, clock, seed)
    return statistics.median(times_f.tolist()), statistics.median(times_g.tolist())


def median_ratio(f, g, repeats=21, warmup=2, seed=0):
    """How many times longer ``g()`` takes than ``f()``: the median over rounds of ``t_g / t_f``.

    Each round's two calls ran back to back (:func:`interleaved_times`), so a round's ratio
    compares the two functions under the same conditions. On a machine shared with other
    jobs, where a call either has the CPU or waits for it, the times of each function can
    have two humps of similar weight and the median of each can land in either hump; the
    median of the per-round ratios stays near the true ratio, because rounds where only one
    of the two calls waited fall on both sides of it equally often.

    Returns
    -------
    (median_f, median_g, ratio) : seconds, seconds, and the median of t_g / t_f
    """
    times_f, times_g = interleaved_times(f, g, repeats, warmup, seed=seed)
    return float(np.median(times_f)), float(np.median(times_g)), float(np.median(times_g / times_f))


def jit_enabled():
    """False when ``NUMBA_DISABLE_JIT=1``: the kernels then run as plain Python (timings mean nothing)."""
    from numba.core import config as numba_config

    return not numba_config.DISABLE_JIT


def speed_note(kernel_call, reference_call, repeats=11):
    """One line: the kernel's and the reference's median times and their ratio (information only)."""
    if not jit_enabled():
        return "timing skipped: NUMBA_DISABLE_JIT=1 runs the kernel as plain Python"
    t_kernel, t_ref, ratio = median_ratio(kernel_call, reference_call, repeats=repeats)
    return (f"speed (information, not part of the verdict): kernel {t_kernel * 1e6:.1f} us, "
            f"NumPy {t_ref * 1e6:.1f} us (medians), ratio {ratio:.2f}x (median of per-round ratios)")


# ----------------------------------------------------------------------------- kernel checks
def _compare(got, want, dtype, what):
    """Worst relative error of ``got`` against ``want`` (tuples of arrays or floats), dtypes checked."""
    got_t = tuple(got) if isinstance(got, (tuple, list)) and isinstance(want, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    if len(got_t) != len(want_t):
        raise Diagnosis(f"{what}: expected {len(want_t)} return values, got {len(got_t)}")
    worst = 0.0
    for i, (g, w) in enumerate(zip(got_t, want_t)):
        if g is None:
            raise Diagnosis(f"{what}: return value {i} is None (a missing `return`?)")
        if isinstance(w, np.ndarray):
            g = np.asarray(g)
            if g.dtype != dtype:
                raise Diagnosis(f"{what}: return value {i} has dtype {g.dtype}, expected {np.dtype(dtype)}: a kernel "
                                f"keeps the dtype of its inputs (allocate with np.empty_like of an input)")
        worst = max(worst, max_relative_error(g, w))
    return worst


def _kernel_check(name, run_student, run_reference, make_inputs, shapes, time_it, timing_shape, seed=0,
                  arg_names=(), forbidden=(), in_place=(), explain=None):
    """Shared body of the kernel checkers: both dtypes, several random shapes, then an optional timing.

    The student's kernel runs through :func:`~vaelayer_np.course.checks.call_student` (the library's
    version off limits, the inputs other than ``in_place`` watched); ``explain(args, got)`` may name
    the slip behind a wrong answer.
    """
    def body():
        rng = np.random.default_rng(seed)
        errors = {}
        for dtype in (np.float64, np.float32):
            worst = 0.0
            for shape in shapes:
                args = make_inputs(rng, shape, dtype)
                student_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
                got = call_student(run_student, student_args, arg_names, forbidden, in_place=in_place)
                want = run_reference(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
                err = _compare(got, want, dtype, f"{np.dtype(dtype).name} input of shape {shape}")
                if err >= TOL[dtype] and explain is not None:
                    why = explain(args, got)
                    if why:
                        raise Diagnosis(f"{np.dtype(dtype).name} input of shape {shape}: error {err:.2g} "
                                        f"(tolerance {TOL[dtype]:g}); {why}", err / TOL[dtype])
                worst = max(worst, err)
            errors[dtype] = worst
        passed = all(errors[d] < TOL[d] for d in errors)
        notes = [f"float64 error {errors[np.float64]:.2g} (below {TOL[np.float64]:g}), "
                 f"float32 error {errors[np.float32]:.2g} (below {TOL[np.float32]:g})"]
        if passed and time_it:
            args = make_inputs(rng, timing_shape, np.float32)
            student_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            notes.append(speed_note(lambda: run_student(*student_args), lambda: run_reference(*args)))
        return max(errors[np.float64] / TOL[np.float64], errors[np.float32] / TOL[np.float32]), passed, \
            "; ".join(notes)

    return run_check(name, body, bound="below 1 = error / tolerance, worst of both dtypes")


_SHAPES = [(1, 1), (7, 5), (33, 17)]


def _timing_shape(quick):
    return (64, 64) if quick else (1024, 256)


def _relu_inputs(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.1] = 0  # exact zeros: the derivative at the kink is 0
    return rng.standard_normal(shape).astype(dtype), x


@recorded
def check_relu_backward_kernel(kernel, time_it=True, quick=True):
    """``kernel(dout, x) -> dx`` against :func:`vaelayer_np.core.activations.relu_backward`.

    ``dx = dout`` where ``x > 0`` and 0 elsewhere (also at ``x == 0``: the inputs contain exact
    zeros). Checked in float64 and float32 on several shapes; the output must keep the input's dtype.
    """
    def explain(args, got):
        dout, x = args
        return explain_difference(got, dout * (x > 0), slips=[
            ("dout where x >= 0: at the kink x == 0 the derivative is 0", dout * (x >= 0)),
            ("(x > 0) alone: the upstream gradient dout is forgotten", (x > 0).astype(dout.dtype)),
            ("dout where x < 0: the comparison flipped", dout * (x < 0))])

    return _kernel_check("fused ReLU backward kernel", kernel,
                         lambda dout, x: activations.relu_backward(dout, x, None),
                         _relu_inputs, _SHAPES, time_it, _timing_shape(quick), arg_names=("dout", "x"),
                         forbidden=FORBIDDEN["relu_backward"], explain=explain)


def _kl_inputs(rng, shape, dtype):
    mu = (rng.standard_normal(shape) * 1.5).astype(dtype)
    log_var = (rng.standard_normal(shape) * 1.5).astype(dtype)
    return mu, log_var, np.exp(log_var)


@recorded
def check_kl_kernel(kernel, time_it=True, quick=True):
    """``kernel(mu, log_var, var) -> (value, d_mu, d_log_var)`` against :func:`vaelayer_np.core.ops.kl_diag_gaussian`.

    ``value`` is the KL summed over K and averaged over N; ``d_log_var`` is the gradient with
    respect to the *log*-variance. Checked in float64 and float32; the gradients keep the dtype.
    """
    def reference(mu, log_var, var):
        value, (d_mu, d_log_var) = ops.kl_diag_gaussian(mu, log_var, var)
        return value, d_mu, d_log_var

    def student(mu, log_var, var):
        out = kernel(mu, log_var, var)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Diagnosis("expected the tuple (value, d_mu, d_log_var)")
        return float(out[0]), out[1], out[2]

    student.__wrapped__ = kernel  # the static check of library names reads the kernel's code

    def explain(args, got):
        mu, log_var, var = args
        n = mu.shape[0]
        for i, (label, want, slips) in enumerate((
                ("d_mu", mu / n, []),
                ("d_log_var", (var - 1) * (0.5 / n),
                 [("(1 - 1/var) / (2N): the gradient with respect to the variance, not the log-variance",
                   (1 - 1 / var) * (0.5 / n)),
                  ("(log_var - 1) / (2N): the log-variance where the variance belongs", (log_var - 1) * (0.5 / n))]))):
            if max_relative_error(got[i + 1], want) > TOL[np.float32]:
                why = explain_difference(got[i + 1], want, (("N", n),), slips)
                return f"`{label}`: {why}" if why else ""
        return ""

    return _kernel_check("fused KL kernel (value and gradients)", student, reference, _kl_inputs, _SHAPES,
                         time_it, _timing_shape(quick), arg_names=("mu", "log_var", "var"),
                         forbidden=FORBIDDEN["kl"], explain=explain)


ADAM_SETTINGS = dict(beta1=0.9, beta2=0.999, lr=1e-2, eps=1e-8)


def _adam_inputs(rng, shape, dtype):
    w = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    return (w, *grads)


def _adam_run(update, w, *grads):
    """Three Adam steps with the bias corrections folded as :class:`vaelayer_np.core.optim.Adam` does."""
    w = np.ascontiguousarray(w).reshape(-1)
    m, v = np.zeros_like(w), np.zeros_like(w)
    b1, b2, lr, eps = (ADAM_SETTINGS[k] for k in ("beta1", "beta2", "lr", "eps"))
    for t, g in enumerate(grads, start=1):
        step_size = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        eps_hat = eps * np.sqrt(1 - b2 ** t)
        update(w, np.ascontiguousarray(g).reshape(-1), m, v, b1, b2, step_size, eps_hat)
    return w, m, v


@recorded
def check_adam_kernel(kernel, time_it=True, quick=True):
    """``kernel(w, g, m, v, beta1, beta2, step_size, eps_hat)`` (in place, flat arrays) against
    :func:`vaelayer_np.core.ops.adam_update`, over three steps; w, m and v are compared."""
    def student(w, *grads):
        return _adam_run(kernel, w, *grads)

    student.__wrapped__ = kernel
    return _kernel_check("fused Adam update kernel", student,
                         lambda *a: _adam_run(ops.adam_update, *a), _adam_inputs, _SHAPES, time_it,
                         _timing_shape(quick), arg_names=("w", "g", "g (step 2)", "g (step 3)"),
                         forbidden=FORBIDDEN["adam"], in_place=("w",))


# ----------------------------------------------------------------------------- timer check
class _FakeMachine:
    """A clock and two functions whose every call advances the clock by a chosen duration.

    The durations of the calls are known in advance (with warm-up calls far slower and a few
    outliers), so the correct medians are known exactly and the order of the calls is recorded.
    """

    def __init__(self, durations_f, durations_g):
        self.now = 0.0
        self.log = []
        self._f, self._g = list(durations_f), list(durations_g)

    def clock(self):
        return self.now

    def _call(self, name, durations):
        if not durations:
            raise RuntimeError(f"{name} was called more often than the timer needs")
        self.log.append(name)
        self.now += durations.pop(0)

    def f(self):
        self._call("f", self._f)

    def g(self):
        self._call("g", self._g)


@recorded
def check_interleaved_timer(timer):
    """``timer(f, g, repeats, warmup, clock) -> (median_f, median_g)`` against the specification
    of :func:`interleaved_medians`, on a fake clock (exact: nothing is really timed).

    Checks: ``warmup`` untimed calls of each function come first; then the calls alternate,
    one ``f`` and one ``g`` per round (in either order); the results are the medians (not the means,
    not the minima) of the timed calls.
    """
    def body():
        rng = np.random.default_rng(7)
        worst = 0.0
        for repeats, warmup in ((9, 2), (15, 1), (5, 3)):
            timed_f = list(rng.uniform(1.0, 2.0, repeats))
            timed_g = list(rng.uniform(3.0, 5.0, repeats))
            timed_f[1] = 50.0   # outliers: a mean or a maximum would show them
            timed_g[-1] = 80.0
            timed_f[2] = 0.01  # and a minimum would show this one
            machine = _FakeMachine([1000.0] * warmup + timed_f, [1000.0] * warmup + timed_g)
            def run(f, g, repeats=repeats, warmup=warmup):
                return timer(f, g, repeats=repeats, warmup=warmup, clock=machine.clock)  # noqa: B023 - this round's

            run.__wrapped__ = timer
            got = call_student(run, (machine.f, machine.g), ("f", "g"), FORBIDDEN["timer"])
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                return np.inf, False, "expected the tuple (median_f, median_g)"
            calls_f, calls_g = machine.log.count("f"), machine.log.count("g")
            if (calls_f, calls_g) != (warmup + repeats, warmup + repeats):
                return np.inf, False, (f"with repeats={repeats}, warmup={warmup}: f was called {calls_f} times "
                                       f"and g {calls_g} times, expected {warmup + repeats} each")
            timed_log = machine.log[2 * warmup:]
            rounds = [set(timed_log[i:i + 2]) for i in range(0, len(timed_log), 2)]
            if any(r != {"f", "g"} for r in rounds):
                return np.inf, False, ("the timed calls do not alternate (one f and one g per round, in either "
                                       "order): " + "".join(timed_log[:12]) + "...")
            want = (statistics.median(timed_f), statistics.median(timed_g))
            err = max(abs(float(a) - b) / b for a, b in zip(got, want))
            if err > 1e-9:
                return err, False, (f"with repeats={repeats}, warmup={warmup}: got ({float(got[0]):.4g}, "
                                    f"{float(got[1]):.4g}), expected the medians ({want[0]:.4g}, {want[1]:.4g}); "
                                    f"were the warm-up calls timed, or a mean or minimum taken?")
            worst = max(worst, err)
        return worst, True, "warm-up untimed, calls interleaved, medians exact"

    return run_check("interleaved median-of-repeats timer", body, bound="below 1e-09, on a fake clock")


# ----------------------------------------------------------------------------- what is shown after an exercise
def _source(fn):
    """The Python source of ``fn`` (of its Python function, for a compiled Numba kernel)."""
    import inspect

    return inspect.getsource(getattr(fn, "py_func", fn))


def _kernel_beside_reference():
    from ..fast import kernels

    return "\n".join(["# the NumPy reference, vaelayer_np/core/ops.py", _source(ops.softmax_cross_entropy),
                      "# its kernel, vaelayer_np/fast/kernels.py: the compiled loop and the wrapper the backend "
                      "table lists", _source(kernels._softmax_xent), _source(kernels.softmax_cross_entropy)])


def _library_kl_kernel():
    from ..fast import kernels

    return "# vaelayer_np/fast/kernels.py\n" + _source(kernels._kl_diag_gaussian)


register_reveal("a kernel beside its reference", ("check_interleaved_timer",), _kernel_beside_reference)
register_reveal("the library's KL kernel", ("check_kl_kernel",), _library_kl_kernel)
