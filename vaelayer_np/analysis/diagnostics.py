r"""Diagnostics of a trained stack of VAE layers: what each latent unit carries, and how much noise.

Posterior collapse is read from four numbers per layer, each computed from the encoder's
means :math:`\mu_{nk}` and log-variances :math:`\log\sigma^2_{nk}` on a data set (N examples,
K latent units):

* :func:`kl_per_unit` : the KL of each unit, averaged over the data. A unit whose KL is near
  0 has :math:`q(z_k \mid x) \approx \mathcal N(0, 1)` for every x: it carries nothing.
* :func:`active_units` : units whose mean moves with the input (Burda, Grosse & Salakhutdinov,
  2016): :math:`\mathrm{Var}_n[\mu_{nk}] > \delta`.
* :func:`noise_and_signal` : the noise a sample adds (mean :math:`\sigma`) against how far the
  means spread across the data (std of :math:`\mu` across the data, and its RMS). When the
  noise is larger than the spread, a sample ``z`` says little about ``x``.
* :func:`layer_diagnostics` : all of the above for every VAE layer of a network, in one pass.

The functions read arrays (or run a :class:`~vaelayer_np.core.network.Network` forward); they never
change a network. ``vaelayer_np.core.ops.kl_diag_gaussian`` is the KL the layers minimise;
:func:`kl_per_unit` splits that same number over the units (their sum equals it).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core._validate import check_float_array, check_positive
from ..core.layers import RngLike, _as_rng

COLLAPSE_KL = 0.05        # nats: a unit whose data-averaged KL is below this carries (almost) nothing
ACTIVE_THRESHOLD = 1e-2   # Burda et al. 2016: a unit is active when Var_x[E_q(z|x)[z_k]] > 0.01


def _check_mu_log_var(mu: np.ndarray, log_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    check_float_array("mu", mu, shape=(None, None))
    check_float_array("log_var", log_var, shape=mu.shape)
    return mu.astype(np.float64), log_var.astype(np.float64)


def kl_per_unit(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    r"""KL of each latent unit's posterior from the prior, averaged over the data.

    .. math::
        \mathrm{KL}_k = \frac1N \sum_{n=1}^{N} -\tfrac12\left(1 + \log\sigma^2_{nk}
        - \mu_{nk}^2 - \sigma^2_{nk}\right)

    Summed over k this is exactly the layer's KL term, ``vaelayer_np.core.ops.kl_diag_gaussian``
    (summed over K, averaged over N).

    Parameters
    ----------
    mu, log_var : (N, K) float arrays, the encoder's means and log-variances

    Returns
    -------
    (K,) float64 array, each entry >= 0 (0 exactly where mu = 0 and log_var = 0 for every n)
    """
    mu, log_var = _check_mu_log_var(mu, log_var)
    return -0.5 * np.mean(1.0 + log_var - mu * mu - np.exp(log_var), axis=0)


def mean_variance(mu: np.ndarray) -> np.ndarray:
    r"""Variance of each unit's mean across the data, :math:`A_k = \mathrm{Var}_n[\mu_{nk}]`.

    .. math:: A_k = \frac1N \sum_n (\mu_{nk} - \bar\mu_k)^2, \qquad \bar\mu_k = \frac1N \sum_n \mu_{nk}

    Parameters
    ----------
    mu : (N, K) float array

    Returns
    -------
    (K,) float64 array
    """
    check_float_array("mu", mu, shape=(None, None))
    return np.var(mu.astype(np.float64), axis=0)


def active_units(mu: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> np.ndarray:
    r"""Which latent units are *active*: their mean varies across the data (Burda et al. 2016).

    .. math:: \mathrm{active}_k = \big[\,\mathrm{Var}_n[\mu_{nk}] > \delta\,\big]

    with :math:`\delta` = ``threshold`` (0.01 in the paper). An inactive unit gives (nearly)
    the same mean to every input: the decoder cannot use it to tell inputs apart, whatever
    its variance.

    Parameters
    ----------
    mu : (N, K) float array, the encoder's means on N examples (N >= 2)
    threshold : float >= 0

    Returns
    -------
    (K,) bool array; ``active_units(mu).sum()`` is the number of active units
    """
    check_float_array("mu", mu, shape=(None, None))
    if mu.shape[0] < 2:
        raise ValueError(f"mu: expected at least 2 examples to measure a variance across the data, got {mu.shape[0]}")
    threshold = check_positive("threshold", threshold, allow_zero=True)
    return mean_variance(mu) > threshold


def noise_and_signal(mu: np.ndarray, log_var: np.ndarray) -> dict[str, float]:
    r"""The noise scale of a layer's samples against the scale of its means.

    .. math::
        \text{noise\_std} = \frac{1}{NK}\sum_{n,k} \sigma_{nk}, \qquad
        \text{mean\_spread} = \frac1K \sum_k \sqrt{\mathrm{Var}_n[\mu_{nk}]}, \qquad
        \text{rms\_mean} = \sqrt{\frac{1}{NK}\sum_{n,k} \mu_{nk}^2}

    and ``signal_to_noise = mean_spread / noise_std``. A sample
    :math:`z = \mu + \sigma\epsilon` tells inputs apart only where the means spread
    more than the noise: a ratio well below 1 means the next layer, if it receives z,
    sees mostly noise.

    Parameters
    ----------
    mu, log_var : (N, K) float arrays

    Returns
    -------
    dict of floats: ``noise_std``, ``mean_spread``, ``rms_mean``, ``signal_to_noise``
    """
    mu, log_var = _check_mu_log_var(mu, log_var)
    noise_std = float(np.mean(np.exp(0.5 * log_var)))
    mean_spread = float(np.mean(np.std(mu, axis=0)))
    rms_mean = float(np.sqrt(np.mean(mu * mu)))
    return {"noise_std": noise_std, "mean_spread": mean_spread, "rms_mean": rms_mean,
            "signal_to_noise": mean_spread / max(noise_std, 1e-300)}


def encode_layers(net: Any, x: np.ndarray, sample: bool = False,
                  rng: RngLike = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a network's VAE layers on ``x`` and return each layer's means and log-variances.

    Parameters
    ----------
    net : :class:`~vaelayer_np.core.network.Network`
    x : (N, D) array (cast to the network's dtype)
    sample : bool
        False (default): the evaluation path, every layer receives the layer below's act(mu).
        True: the training path, every layer receives what it receives in training
        (act(z) if the layers pass the sample on), with noise drawn from ``rng``.
    rng : int, Generator or None, the noise when ``sample`` is True

    Returns
    -------
    list with one ``(mu, log_var)`` pair of (N, K_k) arrays per VAE layer
    """
    x = np.asarray(x, dtype=net.dtype)
    net.check_input(x)
    _, caches, _, _ = net.forward(x, rng=_as_rng(rng) if sample else None, sample=sample)
    return [(c["mu"], c["log_var"]) for c in caches]


def layer_diagnostics(net: Any, x: np.ndarray, sample: bool = False, rng: RngLike = None,
                      collapse_kl: float = COLLAPSE_KL,
                      active_threshold: float = ACTIVE_THRESHOLD) -> list[dict[str, Any]]:
    """Every diagnostic of this module for each VAE layer of ``net`` on the data ``x``.

    Parameters
    ----------
    net : Network
    x : (N, D) array, N >= 2
    sample, rng : see :func:`encode_layers` (which inputs the deeper layers see)
    collapse_kl : float, a unit whose :func:`kl_per_unit` is below this (nats) counts as collapsed
    active_threshold : float, the :func:`active_units` threshold

    Returns
    -------
    list of dicts, one per layer, with ``kl`` (the layer's KL term: sum of ``kl_per_unit``),
    ``kl_per_unit`` ((K,) array), ``n_units``, ``n_active``, ``n_collapsed`` and the keys of
    :func:`noise_and_signal`
    """
    collapse_kl = check_positive("collapse_kl", collapse_kl, allow_zero=True)
    report = []
    for mu, log_var in encode_layers(net, x, sample=sample, rng=rng):
        kl_units = kl_per_unit(mu, log_var)
        row = {"kl": float(kl_units.sum()), "kl_per_unit": kl_units, "n_units": int(mu.shape[1]),
               "n_active": int(active_units(mu, active_threshold).sum()),
               "n_collapsed": int(np.sum(kl_units < collapse_kl))}
        row.update(noise_and_signal(mu, log_var))
        report.append(row)
    return report


def format_diagnostics(report: Sequence[dict[str, Any]]) -> str:
    """A small text table of :func:`layer_diagnostics` (one line per layer)."""
    lines = [f"layer | KL (nats) | active / units | collapsed (KL < {COLLAPSE_KL:.2g}) | noise std | spread of means | "
             "RMS mean | spread / noise"]
    for k, r in enumerate(report):
        lines.append(f"{k + 1:5d} | {r['kl']:9.1f} | {r['n_active']:6d} / {r['n_units']:<5d} | "
                     f"{r['n_collapsed']:21d} | {r['noise_std']:9.3f} | {r['mean_spread']:15.3f} | "
                     f"{r['rms_mean']:8.3f} | {r['signal_to_noise']:14.2f}")
    return "\n".join(lines)


def probe_accuracy(features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray, y_test: np.ndarray,
                   max_iter: int = 500) -> float:
    r"""Test accuracy of a logistic regression fitted on a layer's features (a *linear probe*).

    It measures how much class information a representation holds, independently of the
    network's own online classifier: fit :math:`\arg\min_W \sum_n \mathrm{CE}(\mathrm{softmax}(W f_n), y_n)
    + \tfrac12\|W\|^2` on the training features (scikit-learn's ``LogisticRegression``,
    standardised features), report accuracy on the test features.

    Parameters
    ----------
    features_train : (N, F) float array; y_train : (N,) int labels
    features_test : (M, F) float array; y_test : (M,) int labels

    Returns
    -------
    float in [0, 1]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_float_array("features_train", features_train, shape=(None, None))
    check_float_array("features_test", features_test, shape=(None, features_train.shape[1]))
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if y_train.shape != (features_train.shape[0],) or y_test.shape != (features_test.shape[0],):
        raise ValueError("y_train, y_test: expected one label per row of features_train, features_test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    model.fit(features_train, y_train)
    return float(model.score(features_test, y_test))
