r"""Checkers of lesson 06, generation (``notebooks/06_generation.ipynb``).

* :func:`check_decode_to_input`: ``decode_to_input(net, k, z)`` vs
  :func:`vaelayer_np.analysis.generation.decode_to_input`
* :func:`check_sample_aggregate`: ``sample_aggregate(mu, log_var, n, seed)`` vs
  :func:`vaelayer_np.analysis.generation.fit_aggregate_posterior` then
  :func:`vaelayer_np.analysis.generation.sample_latents`
* :func:`check_traverse`: ``traverse(net, k, x_point, unit, values)`` vs
  :func:`vaelayer_np.analysis.generation.traverse`

The networks are small random ones (three VAE layers of different widths), float64, so the
comparison is to rounding.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..analysis import generation
from ..core.network import Network
from .answer_keys import recorded
from .checks import CheckResult, Diagnosis, call_student, compare_arrays, compare_values, run_check

# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "decode_to_input": ("vaelayer_np.analysis.generation.decode_to_input",
                        "vaelayer_np.analysis.generation.reconstruct", "vaelayer_np.analysis.generation.traverse"),
    "sample_aggregate": ("vaelayer_np.analysis.generation.fit_aggregate_posterior",
                         "vaelayer_np.analysis.generation.sample_latents",
                         "vaelayer_np.analysis.generation.sample_images",
                         "vaelayer_np.course.lesson06.reference_sample_aggregate"),
    "traverse": ("vaelayer_np.analysis.generation.traverse", "vaelayer_np.analysis.generation.decode_to_input"),
}

TOLERANCE = 1e-10


def _net(rng: np.random.Generator, recon: str = "mse") -> Network:
    return Network(12, (7, 5, 3), 4, seed=int(rng.integers(1 << 30)), encoder_hidden=9, recon=recon,
                   dtype=np.float64)


@recorded
def check_decode_to_input(decode_to_input: Callable[..., Any], n_trials: int = 4, seed: int = 0) -> CheckResult:
    r"""Check ``decode_to_input(net, k, z) -> (M, D)``: decoders k, k-1, ..., 0 applied in turn, and a
    sigmoid at the end when the first layer uses ``recon="bce"``. Every depth k is tried, with both
    reconstruction losses.
    """
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        net = _net(rng, recon=("mse", "bce")[int(rng.integers(2))])
        k = int(rng.integers(0, 3))
        return net, k, rng.standard_normal((4, net.widths[k]))

    def slips(args: Any) -> dict[str, Any]:
        net, k, z = args
        h = z
        for j in range(k, -1, -1):
            h = net.vae_layers[j].decode(h)
        h_relu = z
        for j in range(k, -1, -1):
            h_relu = net.vae_layers[j].decode(h_relu)
            if j > 0:
                h_relu = np.maximum(h_relu, 0)
        bce = net.vae_layers[0].recon == "bce"

        def sig(a: np.ndarray) -> np.ndarray:
            return 1 / (1 + np.exp(-a))

        return {"images": [("the decoders' outputs without the final sigmoid (layer 0 uses recon='bce')", h),
                           ("a sigmoid although layer 0 uses recon='mse'", sig(h)),
                           ("a ReLU between the decoders: each decoder gets the one above's output as is",
                            sig(h_relu) if bce else h_relu)]}

    return compare_arrays("decode_to_input", decode_to_input, generation.decode_to_input, make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed, names=("images",),
                          arg_names=("net", "k", "z"), forbidden=FORBIDDEN["decode_to_input"], slips=slips)


def reference_sample_aggregate(mu: np.ndarray, log_var: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The library's answer: :func:`~vaelayer_np.analysis.generation.fit_aggregate_posterior`, then
    :func:`~vaelayer_np.analysis.generation.sample_latents` with ``np.random.default_rng(seed)``."""
    mean, std = generation.fit_aggregate_posterior(mu, log_var)
    return generation.sample_latents(n, mean, std, np.random.default_rng(seed))


def _from_seed_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` watched: a call that draws from NumPy's global generator, or that gives another answer when
    called again with the same arguments, is a FAIL that says so (the samples must come from ``seed`` alone)."""
    def watched(*args: Any) -> Any:
        legacy_state: Any = np.random.get_state()  # noqa: NPY002 - the global generator, on purpose
        state = legacy_state[1].copy()
        kept = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        first = fn(*args)
        if any(isinstance(a, np.ndarray) and not np.array_equal(a, b) for a, b in zip(args, kept)):
            return first  # an input changed in place: that is reported first (call_student)
        now: Any = np.random.get_state()  # noqa: NPY002 - the global generator, on purpose
        if not np.array_equal(now[1], state):
            raise Diagnosis("your function drew from NumPy's global generator (np.random.standard_normal, ...): "
                            "draw the noise from np.random.default_rng(seed), so that a seed gives the same "
                            "samples everywhere")
        again = fn(*kept)
        again_a, first_a = np.asarray(again), np.asarray(first)
        if np.shape(again) == np.shape(first) and not np.array_equal(again_a, first_a, equal_nan=(
                again_a.dtype.kind in "fc" and first_a.dtype.kind in "fc")):  # a NaN is reported as a NaN
            raise Diagnosis("two calls with the same seed gave different samples: the noise must come from "
                            "np.random.default_rng(seed) alone")
        return first

    watched.__wrapped__ = fn  # type: ignore[attr-defined]  # the library-name check reads the student's own code
    return watched


@recorded
def check_sample_aggregate(sample_aggregate: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``sample_aggregate(mu, log_var, n, seed) -> (n, K)``: :math:`z = m + s\odot\epsilon` with
    :math:`m_k = \bar\mu_k`, :math:`s_k^2 = \mathrm{Var}_n[\mu_{nk}] + \overline{\sigma^2_{k}}` and
    ``eps = np.random.default_rng(seed).standard_normal((n, K))``. Log-variances range over [-2, 1], so
    leaving out the noise variance, or using the log-variance as a variance, is seen. The process too: a
    draw from NumPy's global generator, or samples that change from call to call with one seed, are named.
    Other named slips: the variance as the std, the prior's samples, exp of the mean log-variance, ddof=1,
    the noise drawn transposed.
    """
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        k = int(rng.integers(3, 7))
        mu = rng.uniform(-1, 1, k) + rng.uniform(0.1, 2.0, k) * rng.standard_normal((30, k))
        return mu, rng.uniform(-2.0, 1.0, (30, k)), int(rng.integers(2, 6)), int(rng.integers(1000))

    def slips(args: Any) -> dict[str, Any]:
        mu, lv, n, s = args
        eps = np.random.default_rng(s).standard_normal((n, mu.shape[1]))
        m = mu.mean(axis=0)
        return {"samples": [("the noise variance left out: s^2 = Var[mu] + mean(sigma^2)", m + mu.std(axis=0) * eps),
                            ("the mean log-variance used as a variance",
                             m + np.sqrt(np.abs(mu.var(axis=0) + lv.mean(axis=0))) * eps),
                            ("the variance used as the std (no square root)",
                             m + (mu.var(axis=0) + np.exp(lv).mean(axis=0)) * eps),
                            ("samples of the prior N(0, I), not of the aggregate posterior", eps),
                            ("exp of the mean log-variance: the mean noise variance is mean(exp(log_var)), not "
                             "exp(mean(log_var))", m + np.sqrt(mu.var(axis=0) + np.exp(lv.mean(axis=0))) * eps),
                            ("the variance of the means with ddof=1: the aggregate posterior's is the plain "
                             "variance over the N encoded examples (ddof=0)",
                             m + np.sqrt(mu.var(axis=0, ddof=1) + np.exp(lv).mean(axis=0)) * eps),
                            ("the noise drawn in the shape (K, n) and transposed: draw it as (n, K) in one call",
                             m + np.sqrt(mu.var(axis=0) + np.exp(lv).mean(axis=0))
                             * np.random.default_rng(s).standard_normal((mu.shape[1], n)).T)]}

    return compare_arrays("sample_aggregate", _from_seed_only(sample_aggregate), reference_sample_aggregate,
                          make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed, names=("samples",),
                          arg_names=("mu", "log_var", "n", "seed"), forbidden=FORBIDDEN["sample_aggregate"],
                          slips=slips)


@recorded
def check_traverse(traverse: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    """Check ``traverse(net, k, x_point, unit, values) -> (V, D)``: layer k's means of one input, one
    unit replaced by each value in turn, decoded with :func:`vaelayer_np.analysis.generation.decode_to_input`.
    Named slips: the values added instead of replacing, the unit next to the one asked for, layer 0's means
    traversed whatever k, a ReLU between the decoders."""
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        net = _net(rng)
        k = int(rng.integers(0, 3))
        return net, k, rng.random(12), int(rng.integers(net.widths[k])), np.linspace(-3, 3, 5)

    def slips(args: Any) -> dict[str, Any]:
        net, k, x_point, unit, values = args
        from ..analysis.diagnostics import encode_layers
        mu = encode_layers(net, x_point.reshape(1, -1))[k][0]
        z = np.repeat(mu, len(values), axis=0)
        z[:, unit] += values
        candidates = [("the values added to the unit's mean instead of replacing it",
                       generation.decode_to_input(net, k, z))]
        if unit + 1 < mu.shape[1]:
            shifted = np.repeat(mu, len(values), axis=0)
            shifted[:, unit + 1] = values
            candidates.append(("the unit next to the one asked for (an index off by one)",
                               generation.decode_to_input(net, k, shifted)))
        if k > 0:
            mu0 = encode_layers(net, x_point.reshape(1, -1))[0][0]
            first = np.repeat(mu0, len(values), axis=0)
            if unit < first.shape[1]:
                first[:, unit] = values
                candidates.append(("layer 0's means traversed whatever k: encode up to layer k and traverse its "
                                   "means", generation.decode_to_input(net, 0, first)))
        raw = np.repeat(mu, len(values), axis=0)
        raw[:, unit] = values
        h = raw
        for j in range(k, -1, -1):
            h = net.vae_layers[j].decode(h)
            if j > 0:
                h = np.maximum(h, 0.0)
        candidates.append(("a ReLU between the decoders: each decoder gets the one above's output as is", h))
        return {"images": candidates}

    return compare_arrays("traverse", traverse, generation.traverse, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed, names=("images",),
                          arg_names=("net", "k", "x_point", "unit", "values"), forbidden=FORBIDDEN["traverse"],
                          slips=slips)


# ----------------------------------------------------------------------------- exercise 4: inverting the decoders
FORBIDDEN["decode_gradient"] = FORBIDDEN["decode_to_input"] + (
    "vaelayer_np.core.layers.VAELayer.backward", "vaelayer_np.core.layers.Dense.backward",
    "vaelayer_np.core.losses.mse", "vaelayer_np.core.losses.bce_with_logits")


def reference_decode_gradient(net: Any, k: int, z: np.ndarray, target: np.ndarray,
                              slip: str = "") -> tuple[float, np.ndarray]:
    """``(loss, d_z)``: the mean squared error between ``decode_to_input(net, k, z)`` and ``target`` (M, D), over
    all M*D elements, and its gradient with respect to z, through every decoder from k down to 0 (and the final
    sigmoid when layer 0 uses BCE); with ``slip`` one of the slips the checker recognises planted."""
    h = z
    for j in range(k, -1, -1):
        h = net.vae_layers[j].decode(h)
    bce = net.vae_layers[0].recon == "bce"
    image = 1.0 / (1.0 + np.exp(-h)) if bce else h
    loss = float(np.mean((image - target) ** 2))
    d = 2.0 * (image - target) / (image.size if slip != "mean over M" else image.shape[0])
    if bce and slip != "no sigmoid derivative":
        d = d * (image if slip == "sigmoid as its derivative" else image * (1.0 - image))
    for j in range(0, k + 1):  # back up through the decoders: layer 0's first
        d = d @ net.vae_layers[j].params["W_dec"].T
    return loss, d


_DECODE_SLIPS = {
    "mean over M": "a mean over the M images only: the loss is the mean over all M*D pixels",
    "no sigmoid derivative": "the sigmoid's derivative forgotten: layer 0 reconstructs with BCE, so the images "
                             "are sigmoid(h) and the gradient meets sigma (1 - sigma) on its way to h",
    "sigmoid as its derivative": "sigma where its derivative sigma (1 - sigma) belongs",
}




def _decode_cases(rng: np.random.Generator) -> Iterator:
    for recon, k in (("mse", 2), ("bce", 1), ("bce", 0), ("mse", 0)):
        net = _net(rng, recon=recon)
        yield net, k, rng.standard_normal((4, net.widths[k])), rng.uniform(0.0, 1.0, (4, 12))


@recorded
def check_decode_gradient(decode_gradient: Callable[..., Any], seed: int = 0, tol: float = 1e-9) -> CheckResult:
    r"""Check ``decode_gradient(net, k, z, target) -> (loss, d_z)``: the mean squared error of the decoded
    images against ``target`` over all M*D pixels, and its gradient with respect to the latents z (M, K_k) of
    layer k, through the decoders k, ..., 0 and the final sigmoid when layer 0 uses BCE. Against
    :func:`reference_decode_gradient` on four networks (MSE and BCE, k = 0, 1, 2), the figure; then the
    student's own d_z against float64 central differences of the student's own loss (the library's verdict).
    Named slips: a mean over the images only, the sigmoid's derivative forgotten or taken as the sigmoid, the
    sign, a factor.
    """
    from ..core.gradcheck import check_gradients

    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(seed)
        worst = 0.0
        for net, k, z, target in _decode_cases(rng):
            label = f"layer {k}, layer 0 with recon={net.vae_layers[0].recon!r}"
            got = call_student(decode_gradient, (net, k, z.copy(), target.copy()), ("net", "k", "z", "target"),
                               FORBIDDEN["decode_gradient"])
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise Diagnosis(f"{label}: expected (loss, d_z)")
            want = reference_decode_gradient(net, k, z, target)
            slips: dict[str, list[Any]] = {"loss": [], "d_z": []}
            for slip, description in _DECODE_SLIPS.items():
                candidate = reference_decode_gradient(net, k, z, target, slip)
                slips["d_z"].append((description, candidate[1]))
            try:
                worst = max(worst, compare_values(tuple(got), want, ("loss", "d_z"), tol, slips=slips,
                                                  factors=(("D", target.shape[1]), ("M", target.shape[0]))))
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
            point = z.copy()
            def loss_at(net: Any = net, k: int = k, point: np.ndarray = point, target: np.ndarray = target) -> float:
                return float(call_student(decode_gradient, (net, k, point, target), ("net", "k", "z", "target"),
                                          FORBIDDEN["decode_gradient"])[0])

            (row,) = check_gradients("decode_gradient", loss_at, {"z": point}, {"z": np.asarray(got[1])})
            if not row.passed:
                raise Diagnosis(f"{label}: your d_z is not the gradient of your loss (error {row.max_rel_error:.2g})")
        return worst, True, "four networks, MSE and BCE, layers 0 to 2; your d_z passes its own gradient check"

    return run_check("decode_gradient", body, bound=f"below {tol:g}")
