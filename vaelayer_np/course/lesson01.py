r"""Checkers of lesson 01, the VAE layer's forward pass (``notebooks/01_vae_layer_forward.ipynb``).

Each checker runs the student's function on random inputs and compares it with the
library's reference, the code every :class:`~vaelayer_np.core.layers.VAELayer` runs:

* :func:`check_bounded_log_var`: ``bounded_log_var(r, c)`` vs :func:`vaelayer_np.core.ops.bound_log_var`
* :func:`check_reparameterize`: ``reparameterize(mu, log_var, eps)`` vs :func:`vaelayer_np.core.ops.reparameterize`
* :func:`check_vae_forward`: ``vae_forward(x, params, eps, act, log_var_bound)`` vs
  :meth:`vaelayer_np.core.layers.VAELayer.forward`
* :func:`check_neg_elbo`: ``neg_elbo(x, x_hat, mu, log_var, beta)`` vs
  :meth:`vaelayer_np.core.layers.VAELayer.loss_terms` (:func:`vaelayer_np.core.losses.mse` and
  :func:`vaelayer_np.core.ops.kl_diag_gaussian`)

Shapes: N examples, D inputs, H encoder hidden units, K latent units.
"""
from __future__ import annotations

import numpy as np

from ..core import losses
from ..core import ops
from ..core.activations import ACTIVATIONS
from ..core.gradcheck import generic_point
from ..core.layers import VAELayer
from .checks import compare_arrays

TOLERANCE = 1e-10  # float64 comparisons with the library: only rounding may differ


def _activation_name(act):
    """The library's name of an activation function (``relu``, ``tanh`` ...), found by identity."""
    for name, fn in ACTIVATIONS.items():
        if fn.forward is act:
            return name
    raise ValueError(f"act: expected one of the forward functions of vaelayer_np.core.activations "
                     f"({', '.join(ACTIVATIONS)}), got {act!r}")


def check_bounded_log_var(bounded_log_var, n_trials=3, seed=0):
    r"""Check ``bounded_log_var(r, c) -> log_var`` (both (N, K)): :math:`\log\sigma^2 = c\tanh(r/c)`.

    The raw values ``r`` range over [-40, 40], far beyond the bound, and c over [1, 8].
    """
    def make_inputs(rng):
        r = rng.uniform(-40.0, 40.0, size=(5, 4))
        return r, float(rng.uniform(1.0, 8.0))

    return compare_arrays("bounded_log_var", bounded_log_var, ops.bound_log_var, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed)


def check_reparameterize(reparameterize, n_trials=3, seed=0):
    r"""Check ``reparameterize(mu, log_var, eps) -> z`` (all (N, K)): :math:`z = \mu + e^{\log\sigma^2/2}\epsilon`."""
    def make_inputs(rng):
        shape = (6, 3)
        return rng.standard_normal(shape), rng.uniform(-4.0, 2.0, shape), rng.standard_normal(shape)

    def reference(mu, log_var, eps):
        return ops.reparameterize(mu, log_var, eps)[1]

    return compare_arrays("reparameterize", reparameterize, reference, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed)


def library_forward(x, params, eps, act, log_var_bound):
    """The library's answer to ``vae_forward``: (x_hat, mu, log_var, z) from :meth:`VAELayer.forward`.

    Parameters
    ----------
    x : (N, D) float64 array
    params : dict with W_enc (D, H), b_enc (H,), W_mu (H, K), b_mu (K,), W_lv (H, K), b_lv (K,),
        W_dec (K, D), b_dec (D,)
    eps : (N, K) float64 array, the noise held fixed
    act : an activation's forward function from :mod:`vaelayer_np.core.activations` (e.g. ``relu``)
    log_var_bound : float, c in ``c * tanh(r / c)``
    """
    d, h = params["W_enc"].shape
    k = params["W_mu"].shape[1]
    layer = VAELayer(d, k, activation=_activation_name(act), encoder_hidden=h, log_var_bound=log_var_bound,
                     rng=0, dtype=np.float64)
    for name in layer.params:
        layer.params[name] = np.array(params[name], dtype=np.float64)
    _, cache = layer.forward(x, eps=eps)
    return cache["x_hat"], cache["mu"], cache["log_var"], cache["z"]


def check_vae_forward(vae_forward, n_trials=4, seed=0):
    """Check ``vae_forward(x, params, eps, act, log_var_bound) -> (x_hat, mu, log_var, z)``.

    Random layers (D=7, H=6, K=3, relu and tanh, biases moved off zero, the log-variance
    head scaled up so that the bound matters) on random inputs, against
    :meth:`vaelayer_np.core.layers.VAELayer.forward` with the same parameters and noise.
    """
    acts = [ACTIVATIONS["relu"].forward, ACTIVATIONS["tanh"].forward]
    trial = {"i": 0}

    def make_inputs(rng):
        act = acts[trial["i"] % len(acts)]
        trial["i"] += 1
        layer = generic_point(VAELayer(7, 3, encoder_hidden=6, rng=rng, dtype=np.float64), rng, scale=0.5)
        layer.params["W_lv"] *= 30.0  # raw log-variances of several units: the bound is visible
        params = {name: p.copy() for name, p in layer.params.items()}
        return rng.standard_normal((5, 7)), params, rng.standard_normal((5, 3)), act, float(rng.uniform(2.0, 6.0))

    def student(x, params, eps, act, bound):
        return vae_forward(x, {name: p.copy() for name, p in params.items()}, eps, act, bound)

    return compare_arrays("vae_forward (x_hat, mu, log_var, z)", student, library_forward, make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed)


def library_neg_elbo(x, x_hat, mu, log_var, beta):
    """The library's (recon, kl, neg_elbo) for an MSE layer: ``losses.mse`` and ``ops.kl_diag_gaussian``."""
    recon = losses.mse(x_hat, x)[0]
    kl = ops.kl_diag_gaussian(mu, log_var)[0]
    return recon, kl, recon + beta * kl


def check_neg_elbo(neg_elbo, n_trials=3, seed=0):
    r"""Check ``neg_elbo(x, x_hat, mu, log_var, beta) -> (recon, kl, neg_elbo)`` (three floats).

    recon is the MSE averaged over all N*D elements, kl is summed over K and averaged
    over N, and neg_elbo = recon + beta * kl, as in :meth:`vaelayer_np.core.layers.VAELayer.loss_terms`.
    """
    def make_inputs(rng):
        n, d, k = int(rng.integers(3, 9)), 7, 4
        return (rng.standard_normal((n, d)), rng.standard_normal((n, d)), rng.standard_normal((n, k)),
                rng.uniform(-3.0, 1.0, (n, k)), float(rng.uniform(0.1, 2.0)))

    return compare_arrays("neg_elbo (recon, kl, neg_elbo)", neg_elbo, library_neg_elbo, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed)
