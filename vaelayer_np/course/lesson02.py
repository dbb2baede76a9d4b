r"""Checkers of lesson 02, deriving the VAE layer's gradients (``notebooks/02_deriving_gradients.ipynb``).

Every checker is a float64 gradient check (:func:`vaelayer_np.course.checks.check_gradient`,
which uses :func:`vaelayer_np.core.gradcheck.check_gradients`): the student's hand-written
gradient against central differences of the scalar it claims to differentiate, with a
*random* upstream gradient (a random scalar factor for a loss, a random array for an
array-valued function), tolerance 1e-7.

* :func:`check_mse_backward`: ``mse_backward(x_hat, x) -> d_x_hat``
* :func:`check_bce_backward`: ``bce_with_logits_backward(logits, target) -> d_logits``
* :func:`check_kl_gradients`: ``kl_gradients(mu, log_var) -> (d_mu, d_log_var)``
* :func:`check_latent_backward`: ``latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
  -> (d_mu, d_r)`` (the library's :func:`vaelayer_np.core.ops.latent_backward`)
* :func:`check_decoder_backward`: ``decoder_backward(d_x_hat, z, W_dec) -> (d_z, d_W_dec, d_b_dec)``
* :func:`check_encoder_backward`: ``encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward) -> grads``
* :func:`check_vae_layer_backward`: ``vae_layer_backward(layer, cache, dout, dz, neg_elbo_weight) -> (dx, grads)``,
  the whole backward pass of a :class:`~vaelayer_np.core.layers.VAELayer` from its forward's cache, in every
  setting (MSE or BCE, ReLU or tanh, ``pass_on`` "mean" or "sample", training or evaluation, bounded or not)

What a student reads only after an exercise passed is registered here for
:func:`vaelayer_np.course.answer_keys.reveal`: the two classic slips of the latent step and what
the checker says of them (``reveal("latent_backward slips")``), the library's ``VAELayer.backward``
read line by line (``reveal("VAELayer.backward")``) and the lesson's table of final formulas
(``reveal("summary of lesson 02")``).

Shapes: N examples, D inputs, H encoder hidden units, K latent units.
"""
from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core import losses, ops
from ..core.activations import ACTIVATIONS
from ..core.gradcheck import check_gradients
from ..core.layers import VAELayer
from .answer_keys import recorded, register_reveal
from .checks import (
    CheckResult,
    Diagnosis,
    call_student,
    check_dtype,
    check_gradient,
    compare_values,
    explain_difference,
    max_relative_error,
    run_check,
    where_in_student_code,
)

TOLERANCE = 1e-7  # float64 central differences (vaelayer_np.core.gradcheck.DEFAULT_TOL)

_BACKWARDS = ("vaelayer_np.core.layers.VAELayer.backward", "vaelayer_np.core.layers.Dense.backward")
# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "mse_backward": ("vaelayer_np.core.losses.mse", "vaelayer_np.core.ops.mse_value_and_grad") + _BACKWARDS,
    "bce_with_logits_backward": ("vaelayer_np.core.losses.bce_with_logits", "vaelayer_np.core.activations.sigmoid")
                                + _BACKWARDS,
    "kl_gradients": ("vaelayer_np.core.ops.kl_diag_gaussian", "vaelayer_np.core.losses.kl_diag_gaussian")
                    + _BACKWARDS,
    "latent_backward": ("vaelayer_np.core.ops.latent_backward", "vaelayer_np.core.ops.reparameterize_backward",
                        "vaelayer_np.core.ops.bound_log_var_backward") + _BACKWARDS,
    "decoder_backward": _BACKWARDS,
    "encoder_backward": _BACKWARDS,
}


def _upstream_scalar(rng: np.random.Generator) -> float:
    """A random factor c in +-[0.5, 2]: the checked scalar is c * loss, so a gradient off by a constant fails."""
    return float(rng.uniform(0.5, 2.0)) * (1.0 if rng.random() < 0.5 else -1.0)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@recorded
def check_mse_backward(mse_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``mse_backward(x_hat, x) -> d_x_hat`` (N, D): the gradient of :math:`\frac{1}{ND}\sum(\hat x - x)^2`.

    A wrong answer is compared with the right one: a flipped sign, a missing 2, a mean over N only
    (a factor D) or a sum (a factor N*D) are named.
    """
    rng = np.random.default_rng(seed)
    n, d = 4, 5
    x_hat, x = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    c = _upstream_scalar(rng)
    exact = {"x_hat": 2.0 * (x_hat - x) / x.size}
    got: dict[str, Any] = {}

    def student():
        got["x_hat"] = call_student(mse_backward, (x_hat.copy(), x.copy()), ("x_hat", "x"),
                                    FORBIDDEN["mse_backward"])
        check_dtype("d_x_hat", np.asarray(got["x_hat"]))
        return {"x_hat": c * np.asarray(got["x_hat"])}

    result = check_gradient("mse_backward", lambda: c * losses.mse(x_hat, x)[0], student, {"x_hat": x_hat},
                            tol=TOLERANCE)
    return _explained(result, got, exact, (("N", n), ("D", d), ("N*D", n * d)))


def _explained(result: CheckResult, got: Any, exact: dict[str, Any], factors: Sequence[tuple[str, float]] = (),
               slips: dict[str, Any] | None = None) -> CheckResult:
    """Add to a failed gradient check's message what the wrong gradient looks like (against ``exact``)."""
    if result.passed or not np.isfinite(result.figure):
        return result
    for name, want in exact.items():
        if name in got and np.shape(got[name]) == np.shape(want):
            if max_relative_error(got[name], want) < TOLERANCE:
                continue
            why = explain_difference(got[name], want, factors, (slips or {}).get(name, ()))
            if why:
                result.message += f"; the gradient for `{name}`: {why}"
            break
    return result


@recorded
def check_bce_backward(bce_with_logits_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``bce_with_logits_backward(logits, target) -> d_logits`` (N, D).

    Two parts: a gradient check of c * :func:`vaelayer_np.core.losses.bce_with_logits` at logits in
    [-8, 8]; then logits of +-1000, where the answer must be finite and equal to the library's
    (a form ``e^s / (1 + e^s)`` gives inf/inf = NaN there). The form ``1 / (1 + exp(-s))`` is
    finite and right there (exp overflows to inf, 1/inf = 0): it passes, with a note that exp
    overflowed on the way. The library's ``sigmoid`` and ``bce_with_logits`` are off limits.
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(seed)
        n, d = 4, 5
        logits = rng.uniform(-8.0, 8.0, (n, d))
        target = rng.uniform(0.0, 1.0, (n, d))
        c = _upstream_scalar(rng)
        raw = call_student(bce_with_logits_backward, (logits.copy(), target.copy()), ("logits", "target"),
                           FORBIDDEN["bce_with_logits_backward"])
        grad = np.asarray(raw)
        if grad.shape != logits.shape:
            raise Diagnosis(f"expected shape {logits.shape}, got {grad.shape}")
        check_dtype("d_logits", grad)
        (result,) = check_gradients("bce_with_logits_backward", lambda: c * losses.bce_with_logits(logits, target)[0],
                                    {"logits": logits}, {"logits": c * grad}, tol=TOLERANCE)
        if not result.passed:
            exact = (_sigmoid(logits) - target) / logits.size
            why = explain_difference(grad, exact, (("N", n), ("D", d), ("N*D", n * d)),
                                     [("sigmoid(-s) - t: the sigmoid of the wrong sign",
                                       (_sigmoid(-logits) - target) / logits.size),
                                      ("the gradient of the loss with respect to the probability sigmoid(s), "
                                       "not the logit s", (_sigmoid(logits) - target)
                                       / (_sigmoid(logits) * (1 - _sigmoid(logits))) / logits.size)])
            return result.max_rel_error, False, (f"wrong gradient ({result.status}) at moderate logits"
                                                 + (f"; {why}" if why else ""))
        extreme = np.array([[-1000.0, 1000.0, -700.0], [800.0, -30.0, 0.0]])
        extreme_target = np.array([[0.0, 1.0, 0.3], [0.2, 1.0, 0.5]])
        overflowed = []
        with np.errstate(all="call", call=lambda kind, flag: overflowed.append(kind)):
            got = np.asarray(call_student(bce_with_logits_backward, (extreme.copy(), extreme_target.copy()),
                                          ("logits", "target")), dtype=np.float64)
        if not np.all(np.isfinite(got)):
            return np.inf, False, ("NaN or inf at logits of +-1000: exp(1000) overflows to inf and inf / inf is NaN; "
                                   "compute the sigmoid from e = exp(-|s|), which never overflows")
        want = losses.bce_with_logits(extreme, extreme_target)[1][0]
        err = float(np.abs(got - want).max() / np.abs(want).max())
        if err > TOLERANCE:
            return err, False, "wrong at logits of +-1000 (finite, but not the gradient of the mean BCE)"
        if "overflow" in overflowed:
            return result.max_rel_error, True, ("right, also at logits of +-1000; but exp overflowed to inf on the "
                                                "way (harmless in 1 / (1 + inf) = 0, NumPy warns): the form built "
                                                "on e = exp(-|s|) never overflows")
        return result.max_rel_error, True, ""

    return run_check("bce_with_logits_backward", body, bound=f"below {TOLERANCE:g}, float64 central differences")


@recorded
def check_kl_gradients(kl_gradients: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``kl_gradients(mu, log_var) -> (d_mu, d_log_var)`` (both (N, K)).

    The scalar is c * KL with the KL of :func:`vaelayer_np.core.ops.kl_diag_gaussian` (summed over K,
    mean over N). Recognised slips: the log-variance where the variance belongs, the gradient with
    respect to the variance, a missing 1/N or 1/2.
    """
    rng = np.random.default_rng(seed)
    n, k = 5, 3
    mu, log_var = rng.standard_normal((n, k)), rng.uniform(-3.0, 2.0, (n, k))
    c = _upstream_scalar(rng)
    var = np.exp(log_var)
    exact = {"mu": mu / n, "log_var": (var - 1) / (2 * n)}
    slips = {"log_var": [("(log_var - 1) / (2N): the log-variance where the variance exp(log_var) belongs",
                          (log_var - 1) / (2 * n)),
                         ("(1 - 1/var) / (2N): the gradient with respect to the variance, not the log-variance",
                          (1 - 1 / var) / (2 * n)),
                         ("(1 - var) / (2N): the sign of the KL's -1/2 lost", (1 - var) / (2 * n))]}
    got: dict[str, Any] = {}

    def student():
        out = call_student(kl_gradients, (mu.copy(), log_var.copy()), ("mu", "log_var"), FORBIDDEN["kl_gradients"])
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Diagnosis("expected the pair (d_mu, d_log_var)")
        got["mu"], got["log_var"] = np.asarray(out[0]), np.asarray(out[1])
        return {"mu": c * got["mu"], "log_var": c * got["log_var"]}

    result = check_gradient("kl_gradients", lambda: c * ops.kl_diag_gaussian(mu, log_var)[0], student,
                            {"mu": mu, "log_var": log_var}, tol=TOLERANCE)
    return _explained(result, got, exact, (("N", n), ("K", k)), slips)


@recorded
def check_latent_backward(latent_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound) -> (d_mu, d_r)``.

    The scalar, a function of the mean ``mu`` and the *raw* log-variance ``r`` (both (N, K)),
    with the noise ``eps`` held fixed and a random upstream gradient ``G`` on z:

    .. math:: L = \langle G, \mu + e^{\log\sigma^2/2}\odot\epsilon\rangle + w\,KL(\mu, \log\sigma^2),
              \qquad \log\sigma^2 = c\tanh(r/c)

    The student's function receives ``d_z = G``, ``std``, ``kl_grads`` (the KL's gradients
    with respect to mu and log_var, from :func:`vaelayer_np.core.ops.kl_diag_gaussian`), ``kl_weight = w``,
    the bounded ``log_var`` and ``bound = c``, as :func:`vaelayer_np.core.ops.latent_backward` does.
    Then the **mean path**: with ``eps=None`` (z = mu) the answer must equal the library's, where the
    log-variance gets nothing from z. Then **no bound**: with ``bound=None`` (a valid setting of the
    layer, ``log_var_bound=None``) the log-variance is the raw head's output and ``d_r = d_log_var``.
    Recognised slips: the 1/2 of the std's derivative, the chain rule through the tanh bound forgotten
    or without its c, the KL term left out, ``None`` used as a number.
    """
    rng = np.random.default_rng(seed)
    n, k = 5, 3
    mu, r = rng.standard_normal((n, k)), rng.uniform(-5.0, 3.0, (n, k))
    eps, d_z = rng.standard_normal((n, k)), rng.standard_normal((n, k))
    kl_weight, bound = float(rng.uniform(0.3, 2.0)), float(rng.uniform(2.0, 6.0))
    log_var = ops.bound_log_var(r, bound)
    std, _ = ops.reparameterize(mu, log_var, eps)
    kl_grads = ops.kl_diag_gaussian(mu, log_var)[1]
    slope = 1.0 - (log_var / bound) ** 2
    d_v = 0.5 * d_z * eps * std + kl_weight * kl_grads[1]
    exact = {"mu": d_z + kl_weight * kl_grads[0], "r": d_v * slope}
    slips = {"r": [("the chain rule through the tanh bound forgotten: multiply by 1 - (log_var / c)^2", d_v),
                   ("1 - log_var^2: the bound c is missing in 1 - (log_var / c)^2", d_v * (1 - log_var ** 2)),
                   ("d sigma / d log_var taken as sigma: it is sigma / 2",
                    (d_z * eps * std + kl_weight * kl_grads[1]) * slope),
                   ("the KL's gradient is missing (add kl_weight * kl_grads[1])", 0.5 * d_z * eps * std * slope),
                   ("the KL's gradient is added without kl_weight", (0.5 * d_z * eps * std + kl_grads[1]) * slope),
                   ("the noise path without eps", (0.5 * d_z * std + kl_weight * kl_grads[1]) * slope)],
             "mu": [("the KL's gradient is missing (add kl_weight * kl_grads[0])", d_z),
                    ("the KL's gradient is added without kl_weight", d_z + kl_grads[0])]}
    got: dict[str, Any] = {}
    args = lambda e: (d_z.copy(), None if e is None else e.copy(), std.copy(),  # noqa: E731
                      tuple(g.copy() for g in kl_grads), kl_weight, log_var.copy(), bound)
    names = ("d_z", "eps", "std", "kl_grads", "kl_weight", "log_var", "bound")

    def scalar():
        lv = ops.bound_log_var(r, bound)
        _, z = ops.reparameterize(mu, lv, eps)
        return float(np.sum(d_z * z) + kl_weight * ops.kl_diag_gaussian(mu, lv)[0])

    def student():
        out = call_student(latent_backward, args(eps), names, FORBIDDEN["latent_backward"])
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Diagnosis("expected the pair (d_mu, d_r)")
        got["mu"], got["r"] = np.asarray(out[0]), np.asarray(out[1])
        return dict(got)

    def body() -> tuple[float, bool, str]:
        result = _explained(check_gradient("latent_backward", scalar, student, {"mu": mu, "r": r}, tol=TOLERANCE),
                            got, exact, slips=slips)
        if not result.passed:
            return result.figure, False, result.message
        want = ops.latent_backward(d_z, None, std, kl_grads, kl_weight, log_var, bound)
        try:
            with np.errstate(all="ignore"):
                out = call_student(latent_backward, args(None), names, FORBIDDEN["latent_backward"])
            compare_values(tuple(out), want, ("d_mu", "d_r"), TOLERANCE,
                           slips={"d_r": [("the noise path kept with eps = None: on the mean path z = mu and the "
                                           "log-variance gets nothing from z", exact["r"])]})
        except Diagnosis as exc:
            raise Diagnosis(f"the mean path (eps=None, z = mu) is wrong: {exc.message}") from None
        except (TypeError, ValueError) as exc:
            raise Diagnosis(f"the mean path (eps=None, z = mu) failed with {type(exc).__name__}: {exc}"
                            f"{where_in_student_code(exc)}; when eps is None there is no noise term: the "
                            f"log-variance gets only the KL's gradient") from None
        unbounded_lv = r.copy()  # bound=None: no tanh, the log-variance is the head's output r itself
        unbounded_std = np.exp(0.5 * unbounded_lv)
        unbounded_kl = ops.kl_diag_gaussian(mu, unbounded_lv)[1]
        want = ops.latent_backward(d_z, eps, unbounded_std, unbounded_kl, kl_weight, unbounded_lv, None)
        try:
            with np.errstate(all="ignore"):
                out = call_student(latent_backward, (d_z.copy(), eps.copy(), unbounded_std.copy(),
                                                     tuple(g.copy() for g in unbounded_kl), kl_weight,
                                                     unbounded_lv.copy(), None), names, FORBIDDEN["latent_backward"])
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise Diagnosis("expected the pair (d_mu, d_r)")
            compare_values(tuple(out), want, ("d_mu", "d_r"), TOLERANCE)
        except Diagnosis as exc:
            raise Diagnosis(f"with bound=None (no bound: log_var is the head's output r, d_r = d_log_var) it is "
                            f"wrong: {exc.message}") from None
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise Diagnosis(f"with bound=None (a valid setting: no bound, log_var = r) your function raised "
                            f"{type(exc).__name__}: {exc}{where_in_student_code(exc)}; without a bound there is "
                            f"no tanh to differentiate, so d_r = d_log_var") from None
        return result.figure, True, "and the mean path (eps=None), and without a bound (bound=None)"

    return run_check("latent_backward", body, bound=f"below {TOLERANCE:g}, float64 central differences")


@recorded
def check_decoder_backward(decoder_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``decoder_backward(d_x_hat, z, W_dec) -> (d_z, d_W_dec, d_b_dec)``.

    The decoder is :math:`\hat x = z W_{dec} + b_{dec}` with z (N, K), W_dec (K, D), b_dec (D,);
    the scalar is :math:`\langle G, \hat x\rangle` with a random upstream gradient G (N, D).
    """
    rng = np.random.default_rng(seed)
    n, k, d = 4, 3, 5
    z, w_dec, b_dec = rng.standard_normal((n, k)), rng.standard_normal((k, d)), rng.standard_normal(d)
    upstream = rng.standard_normal((n, d))
    exact = {"z": upstream @ w_dec.T, "W_dec": z.T @ upstream, "b_dec": upstream.sum(axis=0)}
    slips = {"W_dec": [("the rows of d_x_hat out of step with those of z", z.T @ upstream[::-1])]}
    got: dict[str, Any] = {}

    def student():
        out = call_student(decoder_backward, (upstream.copy(), z.copy(), w_dec.copy()), ("d_x_hat", "z", "W_dec"),
                           FORBIDDEN["decoder_backward"])
        if not (isinstance(out, (tuple, list)) and len(out) == 3):
            raise Diagnosis("expected the triple (d_z, d_W_dec, d_b_dec)")
        got.update(z=np.asarray(out[0]), W_dec=np.asarray(out[1]), b_dec=np.asarray(out[2]))
        return dict(got)

    result = check_gradient("decoder_backward", lambda: float(np.sum(upstream * (z @ w_dec + b_dec))), student,
                            {"z": z, "W_dec": w_dec, "b_dec": b_dec}, tol=TOLERANCE)
    return _explained(result, got, exact, (("N", n),), slips)


ENCODER_GRADS = ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "x")


@recorded
def check_encoder_backward(encoder_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward) -> grads``.

    The encoder: :math:`h = \mathrm{act}(x W_{enc} + b_{enc})`, :math:`\mu = h W_\mu + b_\mu`,
    :math:`r = h W_{lv} + b_{lv}` (the raw log-variance, before the bound). The scalar is
    :math:`\langle G_\mu, \mu\rangle + \langle G_r, r\rangle` with random G's; ``grads`` must
    hold W_enc, b_enc, W_mu, b_mu, W_lv, b_lv and x. ``act_backward(dout, x, out)`` is an
    activation's derivative from :mod:`vaelayer_np.core.activations`; checked with relu and tanh.
    Recognised slips: the activation's derivative forgotten, only the mean head's path into h, the
    pre-activation where h belongs, the twin heads' gradients swapped.
    """
    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(seed)
        worst = 0.0
        for act_name in ("relu", "tanh"):
            act = ACTIVATIONS[act_name]
            n, d, h_dim, k = 4, 5, 6, 3
            x = rng.standard_normal((n, d))
            params = {"W_enc": rng.standard_normal((d, h_dim)) * 0.6, "b_enc": rng.standard_normal(h_dim) * 0.5,
                      "W_mu": rng.standard_normal((h_dim, k)), "b_mu": rng.standard_normal(k),
                      "W_lv": rng.standard_normal((h_dim, k)), "b_lv": rng.standard_normal(k)}
            g_mu, g_r = rng.standard_normal((n, k)), rng.standard_normal((n, k))

            def scalar(act: Any = act, x: np.ndarray = x, params: dict[str, np.ndarray] = params, g_mu: Any = g_mu,
                       g_r: Any = g_r) -> float:  # this round's values
                hidden = act.forward(x @ params["W_enc"] + params["b_enc"])
                return float(np.sum(g_mu * (hidden @ params["W_mu"] + params["b_mu"]))
                             + np.sum(g_r * (hidden @ params["W_lv"] + params["b_lv"])))

            h_pre = x @ params["W_enc"] + params["b_enc"]
            hidden = act.forward(h_pre)
            grads = call_student(encoder_backward, (g_mu.copy(), g_r.copy(), x.copy(), h_pre.copy(), hidden.copy(),
                                                    {name: p.copy() for name, p in params.items()}, act.backward),
                                 ("d_mu", "d_r", "x", "h_pre", "h", "params", "act_backward"),
                                 FORBIDDEN["encoder_backward"])
            if not isinstance(grads, dict):
                return np.inf, False, f"expected a dict of gradients, got {type(grads).__name__}"
            missing = [name for name in ENCODER_GRADS if grads.get(name) is None]
            if missing:
                return np.inf, False, f"no gradient for {', '.join(missing)}"
            tensors = dict(params, x=x)
            for name in ENCODER_GRADS:
                g = np.asarray(grads[name])
                if g.shape != tensors[name].shape:
                    raise Diagnosis(f"the gradient for `{name}` has shape {g.shape}, expected {tensors[name].shape}"
                                    + (": it is transposed" if g.ndim == 2 and g.shape == tensors[name].shape[::-1]
                                       else ""))
                check_dtype(name, g)
            results = check_gradients(f"encoder_backward[{act_name}]", scalar, tensors,
                                      {name: grads[name] for name in ENCODER_GRADS}, tol=TOLERANCE)
            worst = max([worst] + [r.max_rel_error for r in results])
            bad = [f"{r.tensor} ({r.status}, error {r.max_rel_error:.2g})" for r in results if not r.passed]
            if bad:
                d_h = g_mu @ params["W_mu"].T + g_r @ params["W_lv"].T
                d_pre = act.backward(d_h, h_pre, hidden)
                exact = {"W_mu": hidden.T @ g_mu, "W_lv": hidden.T @ g_r, "W_enc": x.T @ d_pre,
                         "x": d_pre @ params["W_enc"].T}
                mu_only = act.backward(g_mu @ params["W_mu"].T, h_pre, hidden)
                slips = {"W_mu": [("h_pre.T @ d_mu: the pre-activation where h belongs", h_pre.T @ g_mu),
                                  ("h.T @ d_r: the heads' gradients swapped", hidden.T @ g_r)],
                         "W_lv": [("h_pre.T @ d_r: the pre-activation where h belongs", h_pre.T @ g_r),
                                  ("h.T @ d_mu: the heads' gradients swapped", hidden.T @ g_mu)],
                         "W_enc": [("the activation's derivative forgotten: d_h_pre = act_backward(d_h, h_pre, h)",
                                    x.T @ d_h),
                                   ("only the mean head's path into h: d_h is the sum of both heads' paths",
                                    x.T @ mu_only)],
                         "x": [("the activation's derivative forgotten", d_h @ params["W_enc"].T),
                               ("only the mean head's path into h", mu_only @ params["W_enc"].T)]}
                why = ""
                for name in ("W_mu", "W_lv", "W_enc", "x"):
                    if max_relative_error(grads[name], exact[name]) > TOLERANCE:
                        why = explain_difference(grads[name], exact[name], (("N", n),), slips[name])
                        if why:
                            why = f"; the gradient for `{name}`: {why}"
                            break
                return worst, False, f"wrong with {act_name}: " + ", ".join(bad) + why
        return worst, True, ""

    return run_check("encoder_backward", body, bound=f"below {TOLERANCE:g}, float64 central differences")



# ----------------------------------------------------------------------------- exercise 7: the whole backward pass
LAYER_BACKWARD_TOLERANCE = 1e-9  # the same sums in another order: only rounding differs from the library
_ALL_FORBIDDEN = tuple(sorted({name for names in FORBIDDEN.values() for name in names}))
FORBIDDEN["vae_layer_backward"] = _ALL_FORBIDDEN
_GRAD_ORDER = ("W_dec", "b_dec", "b_mu", "W_mu", "b_lv", "W_lv", "b_enc", "W_enc", "dx")  # computed in this order

# (label, layer settings, training?, dout given?, dz given?, neg_elbo_weight)
LAYER_BACKWARD_CASES = (
    ("MSE, relu, pass_on='mean', training", dict(recon="mse", activation="relu", pass_on="mean", log_var_bound=6.0),
     True, True, True, 1.0),
    ("BCE, tanh, pass_on='sample', training", dict(recon="bce", activation="tanh", pass_on="sample",
                                                   log_var_bound=3.0), True, True, True, 0.7),
    ("MSE, tanh, pass_on='sample', training, no bound (log_var_bound=None), dout None",
     dict(recon="mse", activation="tanh", pass_on="sample", log_var_bound=None), True, False, True, 1.3),
    ("MSE, relu, pass_on='sample', evaluation (sample=False), dz None",
     dict(recon="mse", activation="relu", pass_on="sample", log_var_bound=6.0), False, True, False, 1.0),
)

_LAYER_SLIPS = {
    "no target": "the second use of x forgotten: x is both the encoder's input and the reconstruction's target, "
                 "so `dx` also gets neg_elbo_weight times the reconstruction loss's gradient with respect to x",
    "bce target": "the target's gradient taken as -d_x_hat, which is the MSE's rule: the BCE per element is "
                  "log(1 + e^s) - s t, whose gradient with respect to the target t is -s / (N D)",
    "dz at mu": "`dz` added to the gradient of mu after the latent step: it is a gradient on z, so it enters "
                "before the latent step (and also reaches the log-variance through the noise)",
    "dz missing": "`dz` (the gradient on the latent z) was never added to the gradient reaching z",
    "dz weighted": "`dz` was multiplied by neg_elbo_weight: the weight is the negative ELBO's only, dz enters as it is",
    "dout at mu": "`dout` entered at mu, but with pass_on='sample' in training out = act(z): it enters at z, "
                  "before the latent step (and so also reaches the log-variance through the noise)",
    "dout at z": "`dout` entered at z, but out = act(mu) here (pass_on='mean', or evaluation where z = mu): it "
                 "enters at mu, after the latent step",
    "dout at mu, act of z": "`dout` entered at mu, but with pass_on='sample' in training out = act(z): it enters "
                            "at z, before the latent step (and so also reaches the log-variance through the noise)",
    "dout at z, act of mu": "`dout` entered at z, but out = act(mu) here (pass_on='mean', or evaluation where "
                            "z = mu): it enters at mu, after the latent step",
    "recon swapped": "the gradient of the wrong reconstruction loss: the MSE's in a BCE layer or the BCE's in an "
                     "MSE layer (layer.recon says which)",
    "dout no act": "`dout` was added without the activation's derivative: out = act(...), so dout goes through "
                   "act.backward first",
    "beta missing": "the KL weighted by neg_elbo_weight without beta: the KL enters the loss as "
                    "neg_elbo_weight * beta * KL",
    "w missing in kl": "neg_elbo_weight forgotten on the KL: the KL enters the loss as neg_elbo_weight * beta * KL",
    "w missing": "neg_elbo_weight forgotten: it weights the whole negative ELBO (the reconstruction, its target "
                 "and the KL)",
}


def reference_layer_backward(layer: Any, cache: Any, dout: np.ndarray | None, dz: np.ndarray | None,
                             neg_elbo_weight: float = 1.0, slip: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """The layer's backward pass assembled from the library's pieces, or with one named slip planted
    (``slip``, a key of the slips this checker recognises): the candidates a diagnosis is matched against.
    With ``slip=""`` it equals ``layer.backward(dout, cache, dz=dz, neg_elbo_weight=neg_elbo_weight)``."""
    p, w, beta = layer.params, neg_elbo_weight, layer.beta
    x, z, mu, eps = cache["x"], cache["z"], cache["mu"], cache["eps"]
    recon = layer.recon if slip != "recon swapped" else {"mse": "bce", "bce": "mse"}[layer.recon]
    _, (d_xhat, d_target) = (losses.mse if recon == "mse" else losses.bce_with_logits)(cache["x_hat"], x)
    if slip == "bce target":
        d_target = -d_xhat
    w_recon = 1.0 if slip == "w missing" else w
    d_xhat = d_xhat * w_recon
    grads = {"W_dec": z.T @ d_xhat, "b_dec": d_xhat.sum(axis=0)}
    d_z = d_xhat @ p["W_dec"].T
    if dz is not None and slip not in ("dz missing", "dz at mu"):
        d_z = d_z + (w * dz if slip == "dz weighted" else dz)
    d_mu_extra = None
    if dout is not None:
        passed_mean = layer.pass_on == "mean" or eps is None
        at_mean = passed_mean != slip.startswith(("dout at mu", "dout at z"))
        source = at_mean if slip in ("dout at mu", "dout at z") else passed_mean  # the variable act() is taken of
        d_passed = dout if slip == "dout no act" else layer.act.backward(dout, mu if source else z, cache["out"])
        if at_mean:
            d_mu_extra = d_passed
        else:
            d_z = d_z + d_passed
    kl_weight = {"beta missing": w, "w missing": beta, "w missing in kl": beta}.get(slip, w * beta)
    d_mu, d_r = ops.latent_backward(d_z, eps, cache["std"], cache["kl_grads"], kl_weight, cache["log_var"],
                                    layer.log_var_bound)
    if d_mu_extra is not None:
        d_mu = d_mu + d_mu_extra
    if dz is not None and slip == "dz at mu":
        d_mu = d_mu + dz
    h = cache["h"]
    grads.update(W_mu=h.T @ d_mu, b_mu=d_mu.sum(axis=0), W_lv=h.T @ d_r, b_lv=d_r.sum(axis=0))
    d_h_pre = layer.act.backward(d_mu @ p["W_mu"].T + d_r @ p["W_lv"].T, cache["h_pre"], h)
    grads.update(W_enc=x.T @ d_h_pre, b_enc=d_h_pre.sum(axis=0))
    dx = d_h_pre @ p["W_enc"].T + (0.0 if slip == "no target" else w_recon * d_target)
    return dx, {name: grads[name] for name in VAELayer.PARAM_NAMES}


def layer_backward_problem(case: tuple[Any, ...], seed: int = 0, n: int = 4, d: int = 6, hidden: int = 5,
                           k: int = 3) -> tuple[Any, ...]:
    """One setting of :data:`LAYER_BACKWARD_CASES` on a small float64 layer: (label, layer, cache, dout, dz, w)."""
    label, settings, training, with_dout, with_dz, weight = case
    rng = np.random.default_rng(seed)
    layer = VAELayer(d, k, encoder_hidden=hidden, beta=float(rng.uniform(0.3, 0.9)), log_var_bias_init=-1.0,
                     rng=int(rng.integers(2 ** 31)), **settings)
    for name, value in layer.params.items():  # biases off zero, so no ReLU sits at its kink
        if name.startswith("b_"):
            value += rng.normal(0.0, 0.3, value.shape)
    x = rng.uniform(0.0, 1.0, (n, d))
    _, cache = layer.forward(x, rng=rng, sample=training)
    dout = rng.standard_normal((n, k)) if with_dout else None
    dz = rng.standard_normal((n, k)) if with_dz else None
    return label, layer, cache, dout, dz, weight


@recorded
def check_vae_layer_backward(vae_layer_backward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``vae_layer_backward(layer, cache, dout, dz, neg_elbo_weight) -> (dx, grads)``: the whole
    backward pass of a :class:`~vaelayer_np.core.layers.VAELayer` (with an encoder hidden layer), the
    gradients of :math:`L = w\,\text{negELBO} + \langle\text{dout}, \text{out}\rangle + \langle dz, z\rangle`
    from the cache of the layer's forward.

    Compared with ``layer.backward`` in four settings (:data:`LAYER_BACKWARD_CASES`: MSE and BCE, relu and
    tanh, pass_on "mean" and "sample", training and evaluation, bounded and unbounded log-variance, dout
    or dz absent, w not 1), each gradient by name. A wrong answer is matched against the answers of the
    usual slips (:func:`reference_layer_backward`), which are named: the target's gradient of x
    forgotten (or the MSE's rule used for BCE), dz not added or weighted, dout entered at the wrong
    place or without the activation's derivative, beta or w missing. The library's backward and
    gradient pieces are off limits; the layer's parameters and the cache must not change.
    """
    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for i, case in enumerate(LAYER_BACKWARD_CASES):
            label, layer, cache, dout, dz, w = layer_backward_problem(case, seed=seed + i)
            want_dx, want_grads = layer.backward(dout, cache, dz=dz, neg_elbo_weight=w)
            before = {name: value.copy() for name, value in layer.params.items()}
            try:
                out = call_student(vae_layer_backward, (layer, dict(cache), dout, dz, w),
                                   ("layer", "cache", "dout", "dz", "neg_elbo_weight"), FORBIDDEN["vae_layer_backward"])
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
            moved = [name for name in before if not np.array_equal(before[name], layer.params[name])]
            if moved:
                raise Diagnosis(f"{label}: your function changed layer.params[{moved[0]!r}] in place: a backward "
                                f"pass only computes gradients, the optimiser updates the parameters")
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], dict)):
                raise Diagnosis(f"{label}: expected the pair (dx, grads) with grads a dict keyed like layer.params")
            dx, grads = out
            missing = [name for name in VAELayer.PARAM_NAMES if grads.get(name) is None]
            if missing:
                raise Diagnosis(f"{label}: grads has no {', '.join(missing)}")
            names = ("dx",) + VAELayer.PARAM_NAMES
            want = (want_dx,) + tuple(want_grads[name] for name in VAELayer.PARAM_NAMES)
            got = (dx,) + tuple(grads[name] for name in VAELayer.PARAM_NAMES)
            slips: dict[str, list[Any]] = {name: [] for name in names}
            for slip, description in _LAYER_SLIPS.items():
                if slip == "bce target" and layer.recon != "bce":
                    continue
                if slip.startswith("dout at z" if layer.pass_on == "sample" and cache["eps"] is not None
                                   else "dout at mu"):
                    continue
                try:
                    cand_dx, cand_grads = reference_layer_backward(layer, cache, dout, dz, w, slip)
                except ValueError:  # a slip that cannot be computed on these inputs (BCE targets outside [0, 1])
                    continue
                for name, candidate in zip(names, (cand_dx,) + tuple(cand_grads[n] for n in VAELayer.PARAM_NAMES)):
                    slips[name].append((description, candidate))
            try:
                worst = max(worst, compare_values(got, want, names, LAYER_BACKWARD_TOLERANCE, slips=slips,
                                                  order=_GRAD_ORDER))
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
        return worst, True, f"in all {len(LAYER_BACKWARD_CASES)} settings"

    return run_check("vae_layer_backward", body, bound=f"below {LAYER_BACKWARD_TOLERANCE:g} against VAELayer.backward")


# ----------------------------------------------------------------------------- shown once an exercise is done
def _slip_without_half(d_z: np.ndarray, eps: np.ndarray, std: np.ndarray, kl_grads: np.ndarray, kl_weight: float,
                       log_var: np.ndarray, bound: float) -> tuple:
    d_log_var = d_z * eps * std + kl_weight * kl_grads[1]                         # d sigma / d v taken as sigma
    return d_z + kl_weight * kl_grads[0], d_log_var * (1.0 - (log_var / bound) ** 2)


def _slip_without_bound(d_z: np.ndarray, eps: np.ndarray, std: np.ndarray, kl_grads: np.ndarray, kl_weight: float,
                        log_var: np.ndarray, bound: float) -> tuple:
    d_log_var = 0.5 * d_z * eps * std + kl_weight * kl_grads[1]
    return d_z + kl_weight * kl_grads[0], d_log_var                                # chain rule through tanh forgotten


def _latent_slips_text() -> str:
    lines = ["Two classic slips, and what the checker says about each (it recognises them):", ""]
    for slip in (_slip_without_half, _slip_without_bound):
        lines.append(inspect.getsource(slip).replace("_slip_", ""))
        result = check_latent_backward(slip)
        lines.append(f"-> passed {result.passed}, error {result.figure:.2g}; {result.message.split('; ')[-1]}\n")
    return "\n".join(lines)


_BACKWARD_READING = """
Line by line:

1. `self._recon(...)`: the reconstruction gradient (exercise 1 or 2), times w = `neg_elbo_weight`. It also
   returns `d_target`, the gradient with respect to x as the *target* of the reconstruction: x is used twice,
   as the encoder's input and as the target, so its gradient is the sum of both uses (the last line,
   `dx = d_x_enc + weight * d_target`).
2. The decoder (exercise 5): `W_dec`, `b_dec`, and `d_z`.
3. `dz` (IFFCL's contrastive term on the latent) is added to `d_z`.
4. `dout`, the gradient reaching `out` from the layer above, goes through the activation's derivative: with
   `pass_on="mean"` (and in evaluation) `out = act(mu)`, so it is added to the gradient of mu after the latent
   step; with `pass_on="sample"` `out = act(z)`, so it is added to `d_z` before it.
5. `ops.latent_backward` (exercise 4) with `kl_weight = weight * beta` and the KL gradients the forward stored
   (exercise 3).
6. The heads and the hidden layer (exercise 6). With `need_dx=False` (IFFCL: nothing is sent downwards) the
   input gradient is not computed at all.
"""


def _backward_source_text() -> str:
    source = inspect.getsource(VAELayer.backward)
    body = source[source.rindex("\n", 0, source.index("self._check_cache")) + 1:]
    return ("The library's VAELayer.backward (vaelayer_np/core/layers.py), from its first line of code:\n\n"
            + textwrap.dedent(body) + _BACKWARD_READING)


_SUMMARY = "\n".join([
    "| gradient | formula | library |", "|---|---|---|",
    r"| MSE | $\bar{\hat x} = 2(\hat x - x)/(ND)$ | `losses.mse` |",
    r"| BCE with logits | $\bar s = (\sigma(s) - t)/(ND)$, stable sigmoid | `losses.bce_with_logits` |",
    r"| KL | $\bar\mu = \mu/N$, $\bar v = (\sigma^2 - 1)/(2N)$ | `ops.kl_diag_gaussian` |",
    r"| sample, $\epsilon$ fixed | $\bar\mu = \bar z$, $\bar v = \tfrac12\bar z\odot\epsilon\odot\sigma$ | "
    r"`ops.reparameterize_backward` |",
    r"| bound | $\bar r = \bar v\odot(1 - (v/c)^2)$; no bound: $\bar r = \bar v$ | `ops.bound_log_var_backward` |",
    r"| affine $y = aW + b$ | $\bar W = a^\top\bar y$, $\bar b = \mathbf 1^\top\bar y$, $\bar a = \bar yW^\top$ | "
    r"`Dense.backward` |",
    r"| activation | $\bar u = \bar h\odot\mathrm{act}'(u)$ | `activations.*_backward` |",
    r"| a variable used twice | the gradients of both uses add | ($\bar h$, $\bar v$, $\bar x$) |",
    r"| the whole layer | $\bar x$ = encoder path + $w$ times the target's gradient; `dout` at $\mu$ or $z$ | "
    r"`VAELayer.backward` |"])

_ALL_CHECKERS = ("check_mse_backward", "check_bce_backward", "check_kl_gradients", "check_latent_backward",
                 "check_decoder_backward", "check_encoder_backward", "check_vae_layer_backward")
register_reveal("latent_backward slips", ("check_latent_backward",), _latent_slips_text)
register_reveal("VAELayer.backward", ("check_vae_layer_backward",), _backward_source_text)
register_reveal("summary of lesson 02", _ALL_CHECKERS, lambda: _SUMMARY, markdown=True)
