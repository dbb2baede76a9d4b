r"""Checkers of lesson 06, generation (``notebooks/06_generation.ipynb``).

* :func:`check_decode_to_input`: ``decode_to_input(net, k, z)`` vs :func:`vaelayer_np.analysis.generation.decode_to_input`
* :func:`check_sample_aggregate`: ``sample_aggregate(mu, log_var, n, seed)`` vs
  :func:`vaelayer_np.analysis.generation.fit_aggregate_posterior` then :func:`vaelayer_np.analysis.generation.sample_latents`
* :func:`check_traverse`: ``traverse(net, k, x_point, unit, values)`` vs :func:`vaelayer_np.analysis.generation.traverse`

The networks are small random ones (three VAE layers of different widths), float64, so the
comparison is to rounding.
"""
from __future__ import annotations

import numpy as np

from ..analysis import generation
from ..core.network import Network
from .checks import compare_arrays

TOLERANCE = 1e-10


def _net(rng, recon="mse"):
    return Network(12, (7, 5, 3), 4, seed=int(rng.integers(1 << 30)), encoder_hidden=9, recon=recon,
                   dtype=np.float64)


def check_decode_to_input(decode_to_input, n_trials=4, seed=0):
    r"""Check ``decode_to_input(net, k, z) -> (M, D)``: decoders k, k-1, ..., 0 applied in turn, and a
    sigmoid at the end when the first layer uses ``recon="bce"``. Every depth k is tried, with both
    reconstruction losses.
    """
    def make_inputs(rng):
        net = _net(rng, recon=("mse", "bce")[int(rng.integers(2))])
        k = int(rng.integers(0, 3))
        return net, k, rng.standard_normal((4, net.widths[k]))

    return compare_arrays("decode_to_input", decode_to_input, generation.decode_to_input, make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed)


def reference_sample_aggregate(mu, log_var, n, seed):
    """The library's answer: :func:`~vaelayer_np.analysis.generation.fit_aggregate_posterior`, then
    :func:`~vaelayer_np.analysis.generation.sample_latents` with ``np.random.default_rng(seed)``."""
    mean, std = generation.fit_aggregate_posterior(mu, log_var)
    return generation.sample_latents(n, mean, std, np.random.default_rng(seed))


def check_sample_aggregate(sample_aggregate, n_trials=3, seed=0):
    r"""Check ``sample_aggregate(mu, log_var, n, seed) -> (n, K)``: :math:`z = m + s\odot\epsilon` with
    :math:`m_k = \bar\mu_k`, :math:`s_k^2 = \mathrm{Var}_n[\mu_{nk}] + \overline{\sigma^2_{k}}` and
    ``eps = np.random.default_rng(seed).standard_normal((n, K))``. Log-variances range over [-2, 1], so
    leaving out the noise variance, or using the log-variance as a variance, is seen.
    """
    def make_inputs(rng):
        k = int(rng.integers(3, 7))
        mu = rng.uniform(-1, 1, k) + rng.uniform(0.1, 2.0, k) * rng.standard_normal((30, k))
        return mu, rng.uniform(-2.0, 1.0, (30, k)), int(rng.integers(2, 6)), int(rng.integers(1000))

    return compare_arrays("sample_aggregate", sample_aggregate, reference_sample_aggregate, make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed)


def check_traverse(traverse, n_trials=3, seed=0):
    """Check ``traverse(net, k, x_point, unit, values) -> (V, D)``: layer k's means of one input, one
    unit replaced by each value in turn, decoded with :func:`vaelayer_np.analysis.generation.decode_to_input`."""
    def make_inputs(rng):
        net = _net(rng)
        k = int(rng.integers(0, 3))
        return net, k, rng.random(12), int(rng.integers(net.widths[k])), np.linspace(-3, 3, 5)

    return compare_arrays("traverse", traverse, generation.traverse, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed)
