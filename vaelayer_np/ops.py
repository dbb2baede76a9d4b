"""The hot operations of a VAE layer, written as plain NumPy (the reference backend).

These are the steps that the ``numba`` backend replaces with compiled kernels
(:mod:`vaelayer_np._kernels`); the kernels are tested against the functions
here on the same inputs. Nothing in this module validates its inputs: the
public layer and loss functions do that before calling in.
"""
from __future__ import annotations

import numpy as np


def bound_log_var(r, bound):
    r"""Smoothly bound the raw log-variance: ``log_var = c * tanh(r / c)``.

    With ``bound`` = c = 6 the variance lies in (e^-6, e^6): the sampler can
    never produce an overflowing ``exp`` and the KL stays finite. ``bound=None``
    (or 0) leaves ``log_var = r``.
    """
    if not bound:
        return r
    return bound * np.tanh(r / bound)


def bound_log_var_backward(d_log_var, log_var, bound):
    """d log_var / d r = 1 - tanh(r/c)^2 = 1 - (log_var / c)^2."""
    if not bound:
        return d_log_var
    t = log_var / bound
    return d_log_var * (1 - t * t)


def reparam_kl_forward(mu, r, eps, bound):
    r"""Bound the log-variance, sample by reparameterisation and compute the KL.

    .. math::
        \log\sigma^2 = c\tanh(r/c),\quad \sigma = e^{\frac12\log\sigma^2},\quad
        z = \mu + \sigma\odot\epsilon,\quad
        KL = \frac1N\sum_{n}-\tfrac12\sum_k(1 + \log\sigma^2 - \mu^2 - \sigma^2)

    Parameters
    ----------
    mu, r : (N, K) arrays, the encoder's mean and raw log-variance
    eps : (N, K) array of N(0, 1) noise, or None for the mean path (z = mu)
    bound : float or None

    Returns
    -------
    log_var, std, z : (N, K) arrays
    kl : float (per-example sum over K, mean over N)
    """
    log_var = bound_log_var(r, bound)
    std = np.exp(0.5 * log_var)  # the one place std is computed from log_var
    z = mu if eps is None else mu + std * eps
    var = std * std
    kl = float(-0.5 * np.sum(1 + log_var - mu * mu - var) / mu.shape[0])
    return log_var, std, z, kl


def reparam_kl_backward(dz, mu, log_var, std, eps, bound, kl_weight):
    r"""Gradients of ``<dz, z> + kl_weight * KL`` with respect to mu and the raw r.

    .. math::
        \frac{\partial}{\partial\mu} = dz + w\,\frac{\mu}{N},\qquad
        \frac{\partial}{\partial\log\sigma^2} = \tfrac12\,dz\odot\epsilon\odot\sigma
            + w\,\frac{\sigma^2 - 1}{2N}

    followed by the chain rule through the tanh bound.
    """
    n = mu.shape[0]
    d_mu = dz + (kl_weight / n) * mu
    d_log_var = (kl_weight * 0.5 / n) * (std * std - 1)
    if eps is not None:
        d_log_var = d_log_var + 0.5 * dz * eps * std
    return d_mu, bound_log_var_backward(d_log_var, log_var, bound)


def matmul(a, b):
    """a @ b through the BLAS that NumPy links."""
    return a @ b


def adam_update(w, g, m, v, beta1, beta2, step_size, eps_hat):
    r"""One in-place Adam update of w, m and v.

    ``step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`` and
    ``eps_hat = eps * sqrt(1 - beta2^t)`` fold the bias corrections in, so that
    ``w -= step_size * m / (sqrt(v) + eps_hat)`` equals the textbook
    ``w -= lr * m_hat / (sqrt(v_hat) + eps)``.
    """
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    w -= step_size * m / (np.sqrt(v) + eps_hat)
