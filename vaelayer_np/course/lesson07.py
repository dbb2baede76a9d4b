"""Lesson 07, speed and kernels: an honest timer and the checkers of the lesson's exercises.

The exercises of ``notebooks/07_speed_and_kernels.ipynb``:

* :func:`check_relu_backward_kernel` -- a fused Numba kernel for the ReLU backward,
  against :func:`vaelayer_np.core.activations.relu_backward`;
* :func:`check_kl_kernel` -- a fused Numba kernel for the KL value and its two gradients,
  against :func:`vaelayer_np.core.ops.kl_diag_gaussian`;
* :func:`check_adam_kernel` -- a fused Numba kernel for one in-place Adam update,
  against :func:`vaelayer_np.core.ops.adam_update`;
* :func:`check_interleaved_timer` -- a median-of-repeats timer that interleaves two functions;
* :func:`check_layer_pipeline` -- the layers pipelined on threads (layer k on batch t while layer k+1 is on
  batch t-1), bit for bit the serial schedule :func:`serial_epoch`.

The kernel checkers compare outputs with the reference on random inputs, in float64 and in
float32, each with its own tolerance. They also time the student's kernel against the reference
with :func:`median_ratio` and print the ratio, as information only: timings on a shared
machine are noisy, so the verdict never depends on them. The timer's checker uses a fake clock,
so its verdict is exact and does not depend on the machine either. The pipeline's checker gives the student's
function controlled steps that wait for each other (a rendezvous of the steps that must run at the same time):
it tells a pipeline from a serial schedule by what ran at once, never by how long anything took.
"""
from __future__ import annotations

import copy
import functools
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import activations, ops
from .answer_keys import recorded, register_reveal
from .checks import (
    CheckResult,
    Diagnosis,
    call_student,
    describe_exception,
    describe_value,
    explain_difference,
    is_library_file,
    max_relative_error,
    nonfinite_report,
    run_check,
    where_in_student_code,
)

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
    "pipeline": ("vaelayer_np.fast.pipeline.LayerPipeline", "vaelayer_np.fast.pipeline.LayerPipeline.push",
                 "vaelayer_np.fast.pipeline.LayerPipeline.drain", "vaelayer_np.fast.pipeline.LayerPipeline._tick"),
}

# Tolerances of the kernel checks, relative to the largest entry (checks.max_relative_error).
# float64 kernels agree with NumPy to a few rounding errors; float32 ones to a few float32 ulps.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


# ----------------------------------------------------------------------------- timing
def _yield_cpu() -> None:
    """Let the operating system run other jobs now, so that the next timed call starts a fresh time slice."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def interleaved_times(f: Callable[[], Any], g: Callable[[], Any], repeats: int = 21, warmup: int = 2,
                      clock: Callable[[], float] = time.perf_counter, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
    times_f: list[float] = []
    times_g: list[float] = []
    for f_first in order:
        pair = ((f, times_f), (g, times_g)) if f_first else ((g, times_g), (f, times_f))
        for fn, record in pair:
            _yield_cpu()
            t0 = clock()
            fn()
            record.append(clock() - t0)
    return np.array(times_f), np.array(times_g)


def interleaved_medians(f: Callable[[], Any], g: Callable[[], Any], repeats: int = 21, warmup: int = 2,
                        clock: Callable[[], float] = time.perf_counter, seed: int = 0) -> tuple[float, float]:
    """Median run time of ``f()`` and of ``g()`` from :func:`interleaved_times` (same parameters).

    The median ignores the occasional very slow repeat that a mean would absorb.

    Returns
    -------
    (median_f, median_g) : floats, seconds per call
    """
    times_f, times_g = interleaved_times(f, g, repeats, warmup, clock, seed)
    return statistics.median(times_f.tolist()), statistics.median(times_g.tolist())


def median_ratio(f: Callable[[], Any], g: Callable[[], Any], repeats: int = 21, warmup: int = 2, seed: int = 0
                 ) -> tuple[float, float, float]:
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


def jit_enabled() -> bool:
    """False when ``NUMBA_DISABLE_JIT=1``: the kernels then run as plain Python (timings mean nothing)."""
    from numba.core import config as numba_config

    return not numba_config.DISABLE_JIT  # type: ignore[attr-defined]  # numba's config is set at run time


def speed_note(kernel_call: Callable[[], Any], reference_call: Callable[[], Any], repeats: int = 11) -> str:
    """One line: the kernel's and the reference's median times and their ratio (information only)."""
    if not jit_enabled():
        return "timing skipped: NUMBA_DISABLE_JIT=1 runs the kernel as plain Python"
    t_kernel, t_ref, ratio = median_ratio(kernel_call, reference_call, repeats=repeats)
    return (f"speed (information, not part of the verdict): kernel {t_kernel * 1e6:.1f} us, "
            f"NumPy {t_ref * 1e6:.1f} us (medians), ratio {ratio:.2f}x (median of per-round ratios)")


# ----------------------------------------------------------------------------- kernel checks
def _compare(got: Any, want: Any, dtype: Any, what: str) -> float:
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


def _kernel_check(name: str, run_student: Callable[..., Any], run_reference: Callable[..., Any],
                  make_inputs: Callable[[np.random.Generator, tuple[int, ...], Any], tuple[Any, ...]],
                  shapes: Sequence[tuple[int, ...]], time_it: bool, timing_shape: tuple[int, ...], seed: int = 0,
                  arg_names: Sequence[str] = (), forbidden: Sequence[str] = (), in_place: Sequence[str] = (),
                  explain: Callable[[tuple[Any, ...], Any], str] | None = None) -> CheckResult:
    """Shared body of the kernel checkers: both dtypes, several random shapes, then an optional timing.

    The student's kernel runs through :func:`~vaelayer_np.course.checks.call_student` (the library's
    version off limits, the inputs other than ``in_place`` watched); ``explain(args, got)`` may name
    the slip behind a wrong answer.
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(seed)
        errors: dict[Any, float] = {}
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


def _timing_shape(quick: bool) -> tuple[int, int]:
    return (64, 64) if quick else (1024, 256)


def _relu_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.1] = 0  # exact zeros: the derivative at the kink is 0
    return rng.standard_normal(shape).astype(dtype), x


@recorded
def check_relu_backward_kernel(kernel: Callable[..., Any], time_it: bool = True, quick: bool = True) -> CheckResult:
    """``kernel(dout, x) -> dx`` against :func:`vaelayer_np.core.activations.relu_backward`.

    ``dx = dout`` where ``x > 0`` and 0 elsewhere (also at ``x == 0``: the inputs contain exact
    zeros). Checked in float64 and float32 on several shapes; the output must keep the input's dtype.
    """
    def explain(args: tuple[Any, ...], got: Any) -> str:
        dout, x = args
        return explain_difference(got, dout * (x > 0), slips=[
            ("dout where x >= 0: at the kink x == 0 the derivative is 0", dout * (x >= 0)),
            ("(x > 0) alone: the upstream gradient dout is forgotten", (x > 0).astype(dout.dtype)),
            ("dout where x < 0: the comparison flipped", dout * (x < 0))])

    return _kernel_check("fused ReLU backward kernel", kernel,
                         # x stands for the forward's output: relu(x) > 0 exactly where x > 0
                         lambda dout, x: activations.relu_backward(dout, x, x),
                         _relu_inputs, _SHAPES, time_it, _timing_shape(quick), arg_names=("dout", "x"),
                         forbidden=FORBIDDEN["relu_backward"], explain=explain)


def _kl_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu = (rng.standard_normal(shape) * 1.5).astype(dtype)
    log_var = (rng.standard_normal(shape) * 1.5).astype(dtype)
    return mu, log_var, np.exp(log_var)


@recorded
def check_kl_kernel(kernel: Callable[..., Any], time_it: bool = True, quick: bool = True) -> CheckResult:
    """``kernel(mu, log_var, var) -> (value, d_mu, d_log_var)`` against :func:`vaelayer_np.core.ops.kl_diag_gaussian`.

    ``value`` is the KL summed over K and averaged over N; ``d_log_var`` is the gradient with
    respect to the *log*-variance. Checked in float64 and float32; the gradients keep the dtype.
    """
    def reference(mu: np.ndarray, log_var: np.ndarray, var: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        value, (d_mu, d_log_var) = ops.kl_diag_gaussian(mu, log_var, var)
        return value, d_mu, d_log_var

    def student(mu: np.ndarray, log_var: np.ndarray, var: np.ndarray) -> tuple[float, Any, Any]:
        out = kernel(mu, log_var, var)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Diagnosis("expected the tuple (value, d_mu, d_log_var)")
        return float(out[0]), out[1], out[2]

    functools.update_wrapper(student, kernel, assigned=(), updated=())  # __wrapped__: the static check of library
    # names reads the kernel's code

    def explain(args: tuple[Any, ...], got: Any) -> str:
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


def _adam_inputs(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, ...]:
    w = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    return (w, *grads)


def _adam_run(update: Callable[..., Any], w: np.ndarray, *grads: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
def check_adam_kernel(kernel: Callable[..., Any], time_it: bool = True, quick: bool = True) -> CheckResult:
    """``kernel(w, g, m, v, beta1, beta2, step_size, eps_hat)`` (in place, flat arrays) against
    :func:`vaelayer_np.core.ops.adam_update`, over three steps; w, m and v are compared."""
    def student(w: np.ndarray, *grads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _adam_run(kernel, w, *grads)

    functools.update_wrapper(student, kernel, assigned=(), updated=())  # __wrapped__, as above
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

    def __init__(self, durations_f: Sequence[float], durations_g: Sequence[float]) -> None:
        self.now = 0.0
        self.log: list[str] = []
        self._f, self._g = list(durations_f), list(durations_g)

    def clock(self) -> float:
        return self.now

    def _call(self, name: str, durations: list[float]) -> None:
        if not durations:
            raise RuntimeError(f"{name} was called more often than the timer needs")
        self.log.append(name)
        self.now += durations.pop(0)

    def f(self) -> None:
        self._call("f", self._f)

    def g(self) -> None:
        self._call("g", self._g)


@recorded
def check_interleaved_timer(timer: Callable[..., Any]) -> CheckResult:
    """``timer(f, g, repeats, warmup, clock) -> (median_f, median_g)`` against the specification
    of :func:`interleaved_medians`, on a fake clock (exact: nothing is really timed).

    Checks: ``warmup`` untimed calls of each function come first; then the calls alternate,
    one ``f`` and one ``g`` per round (in either order); the results are the medians (not the means,
    not the minima) of the timed calls.
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(7)
        worst = 0.0
        for repeats, warmup in ((9, 2), (15, 1), (5, 3)):
            timed_f = list(rng.uniform(1.0, 2.0, repeats))
            timed_g = list(rng.uniform(3.0, 5.0, repeats))
            timed_f[1] = 50.0   # outliers: a mean or a maximum would show them
            timed_g[-1] = 80.0
            timed_f[2] = 0.01  # and a minimum would show this one
            machine = _FakeMachine([1000.0] * warmup + timed_f, [1000.0] * warmup + timed_g)
            def run(f: Callable[[], Any], g: Callable[[], Any], repeats: int = repeats, warmup: int = warmup) -> Any:
                return timer(f, g, repeats=repeats, warmup=warmup, clock=machine.clock)  # noqa: B023 - this round's

            functools.update_wrapper(run, timer, assigned=(), updated=())  # __wrapped__: the student's code
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


# ----------------------------------------------------------------------------- the layer pipeline
# How long the controlled steps of the pipeline's checker wait (seconds). These are guards, never measurements:
# a correct pipeline meets every rendezvous within microseconds, and its verdict does not depend on the clock.
# "patience": how long the steps of one rendezvous wait for each other before the schedule is named serial;
# "run": how long one run of the student's function may take before it is stopped and named as hanging;
# "grace": how long the threads the function started may take to end after it returned.
PIPELINE_SECONDS = {"patience": 5.0, "run": 12.0, "grace": 2.0}


def serial_epoch(layer_steps: Sequence[Callable[[Any, Any], Any]], batches: Sequence[tuple[Any, Any]]) -> list[Any]:
    """The serial schedule, the reference of the pipeline exercise: every batch through every layer, in order.

    ``layer_steps[k](h, y)`` trains layer k on its input ``h`` (the labels ``y`` travel with the batch) and
    returns its output, computed before its update: the input of layer k+1. A step may return its output in an
    array it rewrites at its next call (the library's fast path reuses its buffers so), so the last layer's
    output is copied before the next batch. Returns the list of the last layer's outputs, one per batch.
    """
    outputs = []
    for x, y in batches:
        h = x
        for step in layer_steps:
            h = step(h, y)
        outputs.append(copy.deepcopy(h))
    return outputs


class PlantedStepError(RuntimeError):
    """The exception a step of the pipeline's checker raises on purpose: the function must raise it too."""


class _Pipeline:
    """The controlled layers of one run of the pipeline's checker, and everything they saw.

    Layer k holds a small weight matrix. Its step on batch t (recognised by the batch's labels) writes a mark
    into the array it returns at every call (the output array is reused, as the fast path's buffers are),
    waits at the rendezvous when (k, t) is on the chosen diagonal k + t = d (all the steps of that diagonal must
    be running at once, or the schedule is not a pipeline), then reads its input, compares it with the input
    the serial schedule gives it, computes its output from its weights *before* its update, updates them, and
    returns the output in its reused array. Steps on the diagonal read their input only once every step of the
    diagonal has started, so an output handed on without a copy is always seen rewritten there: the verdict
    does not depend on which thread the system runs first.
    """

    def __init__(self, n_layers: int, batches: Sequence[tuple[np.ndarray, np.ndarray]], diagonal: int | None = None,
                 fail_at: tuple[int, int] | None = None, twins: bool = False,
                 expected: dict[tuple[int, int | None], np.ndarray] | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n_layers, self.batches, self.twins = n_layers, batches, twins
        width = batches[0][0].shape[1] if batches else 3
        self.weights = [rng.standard_normal((width, width)) * 0.5 for _ in range(n_layers)]
        self.buffers: list[tuple[np.ndarray, ...] | None] = [None] * n_layers
        self.by_labels = {y.tobytes(): t for t, (_, y) in enumerate(batches)}
        self.expected = expected          # (k, t) -> the serial input of layer k on batch t
        self.diagonal, self.fail_at = diagonal, fail_at
        self.cond = threading.Condition()
        self.calls: list[list[int | None]] = [[] for _ in range(n_layers)]  # per layer: its batches, in order
        self.started: set[tuple[int, int | None]] = set()
        self.arrived: set[tuple[int, int | None]] = set()
        # (k, t, [(k', t') that never came], [those that came]): timed out
        self.missed: tuple[int, int, list[tuple[int, int]], list[tuple[int, int]]] | None = None
        self.inputs: dict[tuple[int, int | None], Any] = {}  # (k, t) -> a copy of the input it read (first call)
        self.outputs: dict[tuple[int, int | None], np.ndarray] = {}  # (k, t) -> a copy of its output (first call)
        self.bad_labels: list[tuple[int, str]] = []  # (k, description of what came as labels)
        self.steps = [self._step(k) for k in range(n_layers)]

    def _mark(self, k: int, t: int) -> float:
        return float(-1000.0 - 10.0 * k - t)

    def _step(self, k: int) -> Callable[[Any, Any], Any]:
        def step(h: Any, y: Any) -> Any:
            return self.run(k, h, y)

        step.__name__ = f"layer_{k}_step"
        return step

    def _members(self) -> list[tuple[int, int]]:
        d = self.diagonal
        if d is None:
            return []
        return [(k, d - k) for k in range(self.n_layers) if 0 <= d - k < len(self.batches)]

    def run(self, k: int, h: Any, y: Any) -> Any:
        t = self.by_labels.get(np.asarray(y).tobytes()) if isinstance(y, np.ndarray) else None
        with self.cond:
            if t is None:
                self.bad_labels.append((k, describe_value(y)))
            self.calls[k].append(t)
            self.started.add((k, t))
            self.cond.notify_all()
        if self.fail_at == (k, t):
            raise PlantedStepError(f"planted by the checker: layer {k}'s step fails on batch {t}")
        buffers = self.buffers[k]
        if buffers is not None and t is not None:  # the step rewrites the array it returned last time, as the fast
            for buffer in buffers:                   # path does (with a mark naming this layer and batch)
                buffer[...] = self._mark(k, t)
        if self.diagonal is not None and t is not None and (k, t) in self._members():
            self._meet(k, t)
        given = self._input(h)
        if (k, t) not in self.inputs:
            self.inputs[(k, t)] = given.copy() if given is not None else describe_value(h)
        if given is None:
            given = np.zeros((self.batches[0][0].shape[0], self.weights[0].shape[0]))
        w = self.weights[k]
        label = (np.asarray(y, dtype=np.float64) if t is not None else np.zeros(given.shape[0]))[:, None]
        out = np.tanh(given @ w + 0.1 * label)          # the output, from the weights before the update
        self.weights[k] = w + 0.05 * (given.T @ out) / given.shape[0] - 0.01 * w * w
        if buffers is None:
            buffers = (np.empty_like(out), np.empty_like(out)) if self.twins else (np.empty_like(out),)
            self.buffers[k] = buffers
        buffers[0][...] = out
        if self.twins:
            buffers[1][...] = -out
        if (k, t) not in self.outputs:
            self.outputs[(k, t)] = out.copy()
        return buffers if self.twins else buffers[0]

    def _input(self, h: Any) -> np.ndarray | None:
        """The input as one array (the first twin's, for a pair), or None when it is not usable."""
        shape = (self.batches[0][0].shape[0], self.weights[0].shape[0])
        if self.twins and isinstance(h, (tuple, list)) and len(h) == 2:
            h = h[0]
        if not isinstance(h, np.ndarray) or h.shape != shape or h.dtype.kind != "f":
            return None
        return h

    def _meet(self, k: int, t: int) -> None:
        """Wait until every step of the diagonal has arrived here, each having rewritten its previous output array
        (or until the patience runs out: the schedule is serial)."""
        members = self._members()
        deadline = time.monotonic() + PIPELINE_SECONDS["patience"]
        with self.cond:
            self.arrived.add((k, t))
            self.cond.notify_all()
            while self.missed is None and not all(m in self.arrived for m in members):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.missed = (k, t, [m for m in members if m not in self.arrived],
                                   [m for m in members if m in self.arrived and m != (k, t)])
                    self.cond.notify_all()
                    break
                self.cond.wait(min(left, 0.5))

    # the reference: the serial schedule on a copy of these layers
    @classmethod
    def reference(cls, n_layers: int, batches: Sequence[tuple[np.ndarray, np.ndarray]], twins: bool = False,
                  seed: int = 0) -> tuple[_Pipeline, list[Any], dict[tuple[int, int | None], np.ndarray]]:
        probe = cls(n_layers, batches, twins=twins, seed=seed)
        finals = serial_epoch(probe.steps, batches)
        expected: dict[tuple[int, int | None], np.ndarray] = {(0, t): x for t, (x, _) in enumerate(batches)}
        for (k, t), out in probe.outputs.items():
            expected[(k + 1, t)] = out
        return probe, finals, expected


def _pipeline_batches(rng: np.random.Generator, n_batches: int, rows: int = 4, width: int = 3
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rng.standard_normal((rows, width)), rng.permutation(rows * 3)[:rows] + 10 * t)
            for t in range(n_batches)]


def _span(batches: Sequence[int | None]) -> str:
    """"batches 0-4" for a list of consecutive batch numbers."""
    return f"batch {batches[0]}" if len(batches) == 1 else f"batches {batches[0]}-{batches[-1]}"


def _where_threads_wait(threads: Sequence[threading.Thread]) -> list[str]:
    """Where each thread is now, as "its line N (code)": the innermost frame of the student's code."""
    import sysconfig

    stdlib = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
    frames = sys._current_frames()
    found = []
    for thread in threads:
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is None:
            continue
        stack = [f for f in traceback.extract_stack(frame)
                 if not is_library_file(f.filename) and not str(Path(f.filename).resolve()).startswith(stdlib)
                 and "site-packages" not in f.filename]
        if stack:
            line = (stack[-1].line or "").strip()
            where = f"your line {stack[-1].lineno}" + (f" in {stack[-1].name}" if stack[-1].name not in
                                                         ("<module>", "<lambda>") else "")
            found.append(f"{thread.name!r} at {where}" + (f" (`{line}`)" if line else ""))
    return found


def _run_pipeline(fn: Callable[..., Any], steps: Sequence[Callable[..., Any]], batches: Sequence[Any], label: str
                  ) -> tuple[bool, Any, BaseException | None, threading.Thread, list[threading.Thread]]:
    """Run the student's ``fn(steps, batches)`` on a thread of the checker, with a time limit.

    Returns (finished, value, error, runner, new_threads): ``finished`` False when it had not returned after
    ``PIPELINE_SECONDS["run"]`` seconds; ``new_threads``, the threads it started that were still alive after it
    returned (and after the grace).
    """
    before = set(threading.enumerate())
    box: dict[str, Any] = {}

    def run(layer_steps: Sequence[Callable[..., Any]], batches_: Sequence[Any]) -> Any:
        return fn(layer_steps, batches_)

    functools.update_wrapper(run, fn, assigned=(), updated=())  # __wrapped__: the check of library names reads
    # the student's code

    def target() -> None:
        try:
            box["value"] = call_student(run, (steps, batches), ("layer_steps", "batches"), FORBIDDEN["pipeline"],
                                        exercise="this exercise")
        except BaseException as exc:  # noqa: BLE001 - handed to the checker's thread
            box["error"] = exc

    runner = threading.Thread(target=target, name=f"checker: {label}", daemon=True)
    runner.start()
    runner.join(PIPELINE_SECONDS["run"])
    finished = not runner.is_alive()
    new = [t for t in threading.enumerate() if t not in before and t is not runner]
    if finished:
        deadline = time.monotonic() + PIPELINE_SECONDS["grace"]
        for thread in new:
            thread.join(max(0.0, deadline - time.monotonic()))
        new = [t for t in new if t.is_alive()]
    return finished, box.get("value"), box.get("error"), runner, new


def _diagnose_serial(probe: _Pipeline) -> str:
    assert probe.missed is not None, "called for a run whose rendezvous timed out"
    k, t, missing, started = probe.missed
    names = " nor ".join(f"layer {k2} batch {t2}" for k2, t2 in missing)
    text = (f"your schedule is serial: layer {k} held batch {t} and waited "
            f"{PIPELINE_SECONDS['patience']:g} s, and meanwhile " + (
                f"layer {missing[0][0]} never started batch {missing[0][1]}" if len(missing) == 1 else
                f"neither {names} started") + ". In a pipeline they run at the same time (layer j on batch "
            "t while layer j+1 is on batch t-1)")
    if started:
        text += ("; " + ", ".join(f"layer {a} did start batch {b}" for a, b in started) + ", so some layers "
                 "share a thread: give every layer a thread of its own")
    else:
        text += ": give every layer a thread of its own, connected to the next by a queue"
    return text + " (the checker never times your code: this wait is a rendezvous of its steps)"


def _diagnose_hang(probe: _Pipeline, runner: threading.Thread, threads: list[threading.Thread]) -> str:
    n_batches = len(probe.batches)
    done = [sorted(t for t in probe.calls[k] if t is not None) for k in range(probe.n_layers)]
    places = _where_threads_wait([runner] + threads)
    where = ("; waiting now: " + "; ".join(places)) if places else ""
    limit = f"your function had not returned after {PIPELINE_SECONDS['run']:g} s (the time limit of one run) and " \
            "was stopped"
    if all(d == list(range(n_batches)) for d in done):
        return (f"{limit}: every layer trained on every batch, so a thread waits for something that never "
                f"comes: a worker still blocked on its queue's get() (no end-of-epoch sentinel: after the last "
                f"batch, put one, e.g. None, on the first queue; each worker passes it on and returns) or the "
                f"caller waiting for more outputs than batches{where}")
    stuck = next(k for k in range(probe.n_layers) if done[k] != list(range(n_batches)))
    got = f"trained on {_span(done[stuck])}" if done[stuck] else "never trained"
    return (f"{limit}: layer {stuck} {got} of {n_batches} batches and then got nothing more: a thread is "
            f"blocked (a worker waiting on the wrong queue, a full queue nobody reads, a lock held, or a deadlock "
            f"between the caller and its workers){where}")


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_as_tuple(v) for v in value)
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _as_tuple(a), _as_tuple(b)
    if isinstance(b, tuple):
        return isinstance(a, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if not isinstance(a, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b))


def _first(value: Any) -> Any:
    value = _as_tuple(value)
    return value[0] if isinstance(value, tuple) and value else value


def _identify(probe: _Pipeline, expected: dict[tuple[int, int | None], np.ndarray], got: Any, k: int
              ) -> str | tuple[Any, ...]:
    """What an array that is not the right input of layer k is: another batch's output, a rewritten one, ..."""
    if not isinstance(got, np.ndarray) or not got.size:
        return "something else"
    for t2 in range(len(probe.batches)):
        if (k, t2) in expected and got.shape == expected[(k, t2)].shape and np.array_equal(got, expected[(k, t2)]):
            return ("batch", t2)
    values = np.unique(got)
    if values.size == 1 and values[0] <= -1000.0:
        code = int(round(-1000.0 - values[0]))
        return ("mark", code // 10, code % 10)
    for k2 in range(probe.n_layers + 1):
        for t2 in range(len(probe.batches)):
            want = expected.get((k2, t2))
            if k2 != k and want is not None and got.shape == want.shape and np.array_equal(got, want):
                return ("layer", k2, t2)
    return "something else"


def _diagnose_inputs(probe: _Pipeline, expected: dict[tuple[int, int | None], np.ndarray]) -> str:
    """The first wrong input a layer read, named: the output of another batch, an array rewritten meanwhile."""
    wrong: list[tuple[int, int, str | tuple[Any, ...]]] = []
    for (k, t), given in probe.inputs.items():
        if t is None or (k, t) not in expected:
            continue
        if isinstance(given, str):
            wrong.append((k, t, ("unusable", given)))
        elif not np.array_equal(given, expected[(k, t)]):
            wrong.append((k, t, _identify(probe, expected, given, k)))
    if not wrong:
        return ""
    # first what is certain whatever the threads' timing: a rewritten array read on the rendezvous' diagonal
    members = set(probe._members()) if probe.diagonal is not None else set()
    k, t, what = sorted(wrong, key=lambda w: (not (isinstance(w[2], tuple) and w[2][0] == "mark"),
                                              (w[0], w[1]) not in members, w[1], w[0]))[0]
    source = "its input batch" if k == 0 else f"layer {k - 1}'s output on batch {t}"
    if isinstance(what, tuple) and what[0] == "unusable":
        return (f"layer {k} on batch {t} was fed {what[1]} instead of {source} (an array"
                + (", or for twin outputs the tuple of the two arrays" if probe.twins else "") + "): hand on what "
                "the step returned, copied as it is (`copy.deepcopy(out)` copies a tuple of arrays too)")
    if isinstance(what, tuple) and what[0] == "mark":
        return (f"layer {k} on batch {t} read its input after layer {what[1]} had started rewriting it for batch "
                f"{what[2]}: the step returns its output in an array it rewrites at its next call (the library's "
                f"fast path reuses its buffers so), and you handed that array on without a copy. Copy it in the "
                f"producer's thread, right after the step returns (`copy.deepcopy(out)`: an output may be a tuple "
                f"of arrays), before that thread calls the step again")
    if isinstance(what, tuple) and what[0] == "batch":
        fed = "batch" if k == 0 else f"layer {k - 1}'s output on batch"
        return (f"layer {k} on batch {t} was fed {fed} {what[1]} instead of {source}: a layer's input on batch "
                f"t must be the output of the layer below on that same batch t (keep a batch's output and labels "
                f"together in one queue item)")
    if isinstance(what, tuple) and what[0] == "layer":
        fed = "the batch's input x" if what[1] == 0 else f"layer {what[1] - 1}'s output"
        return (f"layer {k} on batch {t} was fed {fed} (of batch {what[2]}) instead of {source}: layer k reads "
                f"the queue that layer k-1 writes")
    return (f"layer {k} on batch {t} was fed an array that is not {source} (nor any other batch's or layer's "
            f"output): hand on what the step returned, unchanged")


def _diagnose_calls(probe: _Pipeline, partial: bool = False) -> str:
    """The first layer whose batches were not 0, 1, 2, ... in order, once each (``partial``: so far)."""
    n_batches = len(probe.batches)
    if probe.bad_labels:
        k, what = probe.bad_labels[0]
        return (f"layer {k}'s step was given as labels {what}, which are no batch's labels: pass each batch's "
                f"labels y unchanged to every layer's step, with that batch's input")
    for k, seen in enumerate(probe.calls):
        if seen == list(range(len(seen) if partial else n_batches)):
            continue
        i = next((i for i, t in enumerate(seen) if t != i), len(seen))
        if i < len(seen) and seen[i] in seen[:i]:
            return (f"layer {k} trained twice on batch {seen[i]} (its batches, in order: {seen}): each layer "
                    f"trains once per batch")
        if i not in seen and partial:
            return (f"layer {k} trained on its batches in the order {seen} (before the checker stopped your "
                    f"function): batch {i} is missing there, dropped or out of order; every layer trains on every "
                    f"batch, in their order")
        if i not in seen:
            return (f"layer {k} never trained on batch {i} (its batches, in order: {seen}): a batch was dropped "
                    f"on its way up; every layer trains on every batch")
        return (f"layer {k} trained on the batches in the order {seen}, not in their order 0, 1, 2, ...: each "
                f"update starts from the parameters the layer's previous batch left, so the order of a layer's "
                f"batches is part of the result (keep one FIFO queue per layer, one worker reading it)")
    return ""


def _diagnose_outputs(probe: _Pipeline, expected: dict[tuple[int, int | None], np.ndarray], finals: list[Any], got: Any
                      ) -> str:
    n_batches = len(probe.batches)
    if isinstance(got, (str, bytes, dict)) or not isinstance(got, (tuple, list)):
        return (f"your function returned {describe_value(got)}: return the list of the last layer's outputs, one "
                f"per batch, in batch order (what serial_epoch returns)")
    got = list(got)
    if len(got) != n_batches:
        return (f"your function returned {len(got)} outputs for {n_batches} batches: return one per batch, the "
                f"last layer's output, in batch order")
    last = probe.n_layers
    last_buffers = probe.buffers[last - 1]
    reused = [id(b) for b in last_buffers] if last_buffers is not None else []
    for t, g in enumerate(got):
        if id(g) in reused or id(_first(g)) in reused:
            return (f"output {t} you returned is the last layer's own output array, which its step rewrites at its "
                    f"next call: copy each output (`copy.deepcopy(out)`) as soon as the step returns it")
    for t, (g, want) in enumerate(zip(got, finals)):
        if _same(g, want):
            continue
        what = _identify(probe, expected, _first(g), last)
        if isinstance(what, tuple) and what[0] == "batch":
            order: list[Any] = []
            for g2 in got:
                w2 = _identify(probe, expected, _first(g2), last)
                order.append(w2[1] if isinstance(w2, tuple) and w2[0] == "batch" else "?")
            return (f"the outputs you returned are those of batches {order}, in that order: return them in batch "
                    f"order (output t is the last layer's output on batch t)")
        if isinstance(what, tuple) and what[0] == "mark":
            return (f"output {t} you returned was rewritten by layer {what[1]} (for batch {what[2]}) after you "
                    f"kept it: the last layer reuses its output array too; copy each output before the step is "
                    f"called again")
        if isinstance(what, tuple) and what[0] == "layer":
            return (f"output {t} you returned is layer {what[1] - 1}'s output on batch {what[2]}, not the last "
                    f"layer's (layer {last - 1}) on batch {t}")
        return (f"output {t} you returned is not the last layer's output on batch {t} "
                f"({describe_value(_first(g))}): it must be bit for bit what the serial schedule returns")
    return ""


def _one_run(fn: Callable[..., Any], n_layers: int, n_batches: int, diagonal: int | None, rng: np.random.Generator,
             twins: bool = False, fail_at: tuple[int, int] | None = None, seed: int = 0
             ) -> tuple[_Pipeline, list[Any], dict[tuple[int, int | None], np.ndarray], bool, Any, BaseException | None,
                        threading.Thread, list[threading.Thread], str]:
    batches = _pipeline_batches(rng, n_batches)
    _, finals, expected = _Pipeline.reference(n_layers, batches, twins=twins, seed=seed)
    probe = _Pipeline(n_layers, batches, diagonal=diagonal, fail_at=fail_at, twins=twins, expected=expected,
                      seed=seed)
    label = f"{n_layers} layers, {n_batches} batches" + (", twin outputs" if twins else "")
    finished, value, error, runner, alive = _run_pipeline(fn, probe.steps, batches, label)
    return probe, finals, expected, finished, value, error, runner, alive, label


def _threads_left(alive: list[threading.Thread], label: str) -> str:
    places = _where_threads_wait(alive)
    return (f"({label}) your function returned, but {len(alive)} thread(s) it started were still running "
            f"{PIPELINE_SECONDS['grace']:g} s later" + (": " + "; ".join(places) if places else "")
            + ": end every worker (an end-of-epoch sentinel on its queue) and join it before returning")


# The runs of the checker: (layers, batches, the diagonal of the rendezvous, twin outputs)
PIPELINE_RUNS = [(3, 6, 2, False), (2, 5, 3, True), (4, 2, 1, False), (2, 0, None, False)]
PIPELINE_FAILURE = (3, 6, (1, 2))   # layers, batches, the step that raises: layer 1 on batch 2


@recorded
def check_layer_pipeline(pipelined_epoch: Callable[..., Any]) -> CheckResult:
    """``pipelined_epoch(layer_steps, batches) -> outputs``: the layers pipelined on threads, bit for bit the
    serial schedule (:func:`serial_epoch`), with controlled steps (no timing in the verdict).

    Runs: three layers on six batches, two layers with twin outputs (a tuple of two arrays per step) on five,
    four layers on two batches, an empty epoch, and three layers whose step raises on purpose. In each run the
    steps of one diagonal (layer k on batch d-k for every k) wait for each other: a schedule in which they do
    not run at the same time is named serial. Each step records the batches it trains on and the input it
    reads (compared with the serial schedule's); every step rewrites the array it returned last time, so an
    output handed on without a copy is seen. The function must return the last layer's outputs in batch
    order, leave no thread running, never hang, and re-raise the exception of a step.
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(11)
        for seed, (n_layers, n_batches, diagonal, twins) in enumerate(PIPELINE_RUNS):
            probe, finals, expected, finished, value, error, runner, alive, label = _one_run(
                pipelined_epoch, n_layers, n_batches, diagonal, rng, twins=twins, seed=seed)
            if probe.missed is not None or not finished:
                why = _diagnose_calls(probe, partial=True)
                if why:
                    stopped = "" if finished else (f"; and your function had not returned after "
                                                   f"{PIPELINE_SECONDS['run']:g} s (stopped)")
                    raise Diagnosis(f"({label}) {why}{stopped}")
                raise Diagnosis(f"({label}) " + (_diagnose_serial(probe) if probe.missed is not None else
                                                 _diagnose_hang(probe, runner, alive)))
            if error is not None:
                raise error
            why = _diagnose_calls(probe) or _diagnose_inputs(probe, expected)
            if why:
                raise Diagnosis(f"({label}) {why}")
            report = nonfinite_report(value)
            if report:
                raise Diagnosis(report)
            if alive:
                raise Diagnosis(_threads_left(alive, label))
            why = _diagnose_outputs(probe, expected, finals, value)
            if why:
                raise Diagnosis(f"({label}) {why}")
        n_layers, n_batches, fail_at = PIPELINE_FAILURE
        probe, finals, expected, finished, value, error, runner, alive, label = _one_run(
            pipelined_epoch, n_layers, n_batches, None, rng, fail_at=fail_at, seed=len(PIPELINE_RUNS))
        planted = f"layer {fail_at[0]}'s step raised PlantedStepError on batch {fail_at[1]} (planted by the checker)"
        if not finished:
            places = _where_threads_wait([runner] + alive)
            raise Diagnosis(
                f"({label}) {planted}, and your function had not returned after {PIPELINE_SECONDS['run']:g} s (the "
                f"time limit of one run; stopped): the exception ended that worker, and the threads after it, or "
                f"the caller, wait for batches that will never come" + ("; waiting now: " + "; ".join(places)
                                                                        if places else "")
                + ". Catch the exception in the worker (`except BaseException as exc`), keep it for the caller, "
                  "still pass the end-of-epoch sentinel on, and raise it in the caller after joining the threads")
        if error is None:
            raise Diagnosis(f"({label}) {planted}, and your function returned {describe_value(value)} as if nothing "
                            f"had happened: an exception in a worker thread ends that thread, and nobody sees it "
                            f"unless the worker hands it to the caller, which raises it (after joining its threads)")
        chain: BaseException | None = error
        seen: list[BaseException] = []
        while chain is not None and not any(chain is e for e in seen):
            seen.append(chain)
            chain = chain.__cause__ or chain.__context__
        if not any(isinstance(e, PlantedStepError) for e in seen):
            if isinstance(error, (Diagnosis, KeyboardInterrupt, SystemExit, MemoryError)):
                raise error
            raise Diagnosis(f"({label}) {planted}, and your function raised {describe_exception(error)} instead"
                            f"{where_in_student_code(error)}: raise the step's own exception (`raise exc`), so "
                            f"that the caller sees what went wrong")
        if alive:
            raise Diagnosis(_threads_left(alive, f"{label}, after {planted}"))
        return 0.0, True, ("bit for bit the serial schedule in every run, every diagonal of layers running at once, "
                           "the planted step's exception raised, no thread left running")

    return run_check("layer pipeline on threads", body, bound="the serial schedule's outputs, bit for bit")


# ----------------------------------------------------------------------------- what is shown after an exercise
def _source(fn: Any) -> str:
    """The Python source of ``fn`` (of its Python function, for a compiled Numba kernel)."""
    import inspect

    return inspect.getsource(getattr(fn, "py_func", fn))


def _kernel_beside_reference() -> str:
    from ..fast import kernels

    return "\n".join(["# the NumPy reference, vaelayer_np/core/ops.py", _source(ops.softmax_cross_entropy),
                      "# its kernel, vaelayer_np/fast/kernels.py: the compiled loop and the wrapper the backend "
                      "table lists", _source(kernels._softmax_xent), _source(kernels.softmax_cross_entropy)])


def _library_kl_kernel() -> str:
    from ..fast import kernels

    return "# vaelayer_np/fast/kernels.py\n" + _source(kernels._kl_diag_gaussian)


def _library_pipeline() -> str:
    from ..fast import pipeline

    return "\n".join(["# vaelayer_np/fast/pipeline.py: one tick (every stage on its batch, side by side), one stage",
                      _source(pipeline.LayerPipeline._tick), _source(pipeline.LayerPipeline._train_stage)])


register_reveal("a kernel beside its reference", ("check_interleaved_timer",), _kernel_beside_reference)
register_reveal("the library's KL kernel", ("check_kl_kernel",), _library_kl_kernel)
register_reveal("the library's layer pipeline", ("check_layer_pipeline",), _library_pipeline)
