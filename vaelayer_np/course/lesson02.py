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

Shapes: N examples, D inputs, H encoder hidden units, K latent units.
"""
from __future__ import annotations

import numpy as np

from ..core import losses
from ..core import ops
from ..core.activations import ACTIVATIONS
from ..core.gradcheck import check_gradients
from .checks import check_gradient, run_check

TOLERANCE = 1e-7  # float64 central differences (vaelayer_np.core.gradcheck.DEFAULT_TOL)


def _upstream_scalar(rng):
    """A random factor c in +-[0.5, 2]: the checked scalar is c * loss, so a gradient off by a constant fails."""
    return float(rng.uniform(0.5, 2.0)) * (1.0 if rng.random() < 0.5 else -1.0)


def check_mse_backward(mse_backward, seed=0):
    r"""Check ``mse_backward(x_hat, x) -> d_x_hat`` (N, D): the gradient of :math:`\frac{1}{ND}\sum(\hat x - x)^2`."""
    rng = np.random.default_rng(seed)
    x_hat, x = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    c = _upstream_scalar(rng)
    tensors = {"x_hat": x_hat}
    return check_gradient("mse_backward", lambda: c * losses.mse(x_hat, x)[0],
                          lambda: {"x_hat": c * np.asarray(mse_backward(x_hat.copy(), x.copy()))}, tensors,
                          tol=TOLERANCE)


def check_bce_backward(bce_with_logits_backward, seed=0):
    r"""Check ``bce_with_logits_backward(logits, target) -> d_logits`` (N, D).

    Two parts: a gradient check of c * :func:`vaelayer_np.core.losses.bce_with_logits` at logits in
    [-8, 8]; then logits of +-1000, where the answer must be finite and equal to
    :math:`(\sigma(s) - t)/(ND)` (a form that evaluates ``exp`` of a large positive number gives
    inf/inf = NaN there).
    """
    def body():
        rng = np.random.default_rng(seed)
        logits = rng.uniform(-8.0, 8.0, (4, 5))
        target = rng.uniform(0.0, 1.0, (4, 5))
        c = _upstream_scalar(rng)
        grad = np.asarray(bce_with_logits_backward(logits.copy(), target.copy()), dtype=np.float64)
        if grad.shape != logits.shape:
            return np.inf, False, f"expected shape {logits.shape}, got {grad.shape}"
        (result,) = check_gradients("bce_with_logits_backward", lambda: c * losses.bce_with_logits(logits, target)[0],
                                    {"logits": logits}, {"logits": c * grad}, tol=TOLERANCE)
        if not result.passed:
            return result.max_rel_error, False, f"wrong gradient ({result.status}) at moderate logits"
        extreme = np.array([[-1000.0, 1000.0, -700.0], [800.0, -30.0, 0.0]])
        extreme_target = np.array([[0.0, 1.0, 0.3], [0.2, 1.0, 0.5]])
        with np.errstate(all="ignore"):
            got = np.asarray(bce_with_logits_backward(extreme.copy(), extreme_target.copy()), dtype=np.float64)
        if not np.all(np.isfinite(got)):
            return np.inf, False, "NaN or inf at logits of +-1000: compute the sigmoid without exp of a large number"
        want = losses.bce_with_logits(extreme, extreme_target)[1][0]
        err = float(np.abs(got - want).max() / np.abs(want).max())
        if err > TOLERANCE:
            return err, False, "wrong at logits of +-1000"
        return result.max_rel_error, True, ""

    return run_check("bce_with_logits_backward", body, bound=f"below {TOLERANCE:g}, float64 central differences")


def check_kl_gradients(kl_gradients, seed=0):
    r"""Check ``kl_gradients(mu, log_var) -> (d_mu, d_log_var)`` (both (N, K)).

    The scalar is c * KL with the KL of :func:`vaelayer_np.core.ops.kl_diag_gaussian` (summed over K,
    mean over N).
    """
    rng = np.random.default_rng(seed)
    mu, log_var = rng.standard_normal((5, 3)), rng.uniform(-3.0, 2.0, (5, 3))
    c = _upstream_scalar(rng)

    def student():
        d_mu, d_log_var = kl_gradients(mu.copy(), log_var.copy())
        return {"mu": c * np.asarray(d_mu), "log_var": c * np.asarray(d_log_var)}

    return check_gradient("kl_gradients", lambda: c * ops.kl_diag_gaussian(mu, log_var)[0], student,
                          {"mu": mu, "log_var": log_var}, tol=TOLERANCE)


def check_latent_backward(latent_backward, seed=0):
    r"""Check ``latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound) -> (d_mu, d_r)``.

    The scalar, a function of the mean ``mu`` and the *raw* log-variance ``r`` (both (N, K)),
    with the noise ``eps`` held fixed and a random upstream gradient ``G`` on z:

    .. math:: L = \langle G, \mu + e^{\log\sigma^2/2}\odot\epsilon\rangle + w\,KL(\mu, \log\sigma^2),
              \qquad \log\sigma^2 = c\tanh(r/c)

    The student's function receives ``d_z = G``, ``std``, ``kl_grads`` (the KL's gradients
    with respect to mu and log_var, from :func:`vaelayer_np.core.ops.kl_diag_gaussian`), ``kl_weight = w``,
    the bounded ``log_var`` and ``bound = c``, as :func:`vaelayer_np.core.ops.latent_backward` does.
    """
    rng = np.random.default_rng(seed)
    n, k = 5, 3
    mu, r = rng.standard_normal((n, k)), rng.uniform(-5.0, 3.0, (n, k))
    eps, d_z = rng.standard_normal((n, k)), rng.standard_normal((n, k))
    kl_weight, bound = float(rng.uniform(0.3, 2.0)), float(rng.uniform(2.0, 6.0))

    def scalar():
        log_var = ops.bound_log_var(r, bound)
        _, z = ops.reparameterize(mu, log_var, eps)
        return float(np.sum(d_z * z) + kl_weight * ops.kl_diag_gaussian(mu, log_var)[0])

    def student():
        log_var = ops.bound_log_var(r, bound)
        std, _ = ops.reparameterize(mu, log_var, eps)
        kl_grads = ops.kl_diag_gaussian(mu, log_var)[1]
        d_mu, d_r = latent_backward(d_z.copy(), eps.copy(), std.copy(), tuple(g.copy() for g in kl_grads),
                                    kl_weight, log_var.copy(), bound)
        return {"mu": d_mu, "r": d_r}

    return check_gradient("latent_backward", scalar, student, {"mu": mu, "r": r}, tol=TOLERANCE)


def check_decoder_backward(decoder_backward, seed=0):
    r"""Check ``decoder_backward(d_x_hat, z, W_dec) -> (d_z, d_W_dec, d_b_dec)``.

    The decoder is :math:`\hat x = z W_{dec} + b_{dec}` with z (N, K), W_dec (K, D), b_dec (D,);
    the scalar is :math:`\langle G, \hat x\rangle` with a random upstream gradient G (N, D).
    """
    rng = np.random.default_rng(seed)
    n, k, d = 4, 3, 5
    z, w_dec, b_dec = rng.standard_normal((n, k)), rng.standard_normal((k, d)), rng.standard_normal(d)
    upstream = rng.standard_normal((n, d))

    def student():
        d_z, d_w, d_b = decoder_backward(upstream.copy(), z.copy(), w_dec.copy())
        return {"z": d_z, "W_dec": d_w, "b_dec": d_b}

    return check_gradient("decoder_backward", lambda: float(np.sum(upstream * (z @ w_dec + b_dec))), student,
                          {"z": z, "W_dec": w_dec, "b_dec": b_dec}, tol=TOLERANCE)


ENCODER_GRADS = ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "x")


def check_encoder_backward(encoder_backward, seed=0):
    r"""Check ``encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward) -> grads``.

    The encoder: :math:`h = \mathrm{act}(x W_{enc} + b_{enc})`, :math:`\mu = h W_\mu + b_\mu`,
    :math:`r = h W_{lv} + b_{lv}` (the raw log-variance, before the bound). The scalar is
    :math:`\langle G_\mu, \mu\rangle + \langle G_r, r\rangle` with random G's; ``grads`` must
    hold W_enc, b_enc, W_mu, b_mu, W_lv, b_lv and x. ``act_backward(dout, x, out)`` is an
    activation's derivative from :mod:`vaelayer_np.core.activations`; checked with relu and tanh.
    """
    def body():
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

            def scalar():
                hidden = act.forward(x @ params["W_enc"] + params["b_enc"])
                return float(np.sum(g_mu * (hidden @ params["W_mu"] + params["b_mu"]))
                             + np.sum(g_r * (hidden @ params["W_lv"] + params["b_lv"])))

            h_pre = x @ params["W_enc"] + params["b_enc"]
            hidden = act.forward(h_pre)
            grads = encoder_backward(g_mu.copy(), g_r.copy(), x.copy(), h_pre.copy(), hidden.copy(),
                                     {name: p.copy() for name, p in params.items()}, act.backward)
            if not isinstance(grads, dict):
                return np.inf, False, f"expected a dict of gradients, got {type(grads).__name__}"
            missing = [name for name in ENCODER_GRADS if grads.get(name) is None]
            if missing:
                return np.inf, False, f"no gradient for {', '.join(missing)}"
            tensors = dict(params, x=x)
            results = check_gradients(f"encoder_backward[{act_name}]", scalar, tensors,
                                      {name: grads[name] for name in ENCODER_GRADS}, tol=TOLERANCE)
            worst = max([worst] + [r.max_rel_error for r in results])
            bad = [f"{r.tensor} ({r.status}, error {r.max_rel_error:.2g})" for r in results if not r.passed]
            if bad:
                return worst, False, f"wrong with {act_name}: " + ", ".join(bad)
        return worst, True, ""

    return run_check("encoder_backward", body, bound=f"below {TOLERANCE:g}, float64 central differences")
