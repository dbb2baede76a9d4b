"""Loss functions: the validated public entry points, each returning its value and its gradients.

Convention: ``value, grads = loss(...)`` where ``grads`` is a tuple with one
array per floating-point input, in argument order (``dL/d first``, ...).
Integer arguments (class labels) and +1/-1 targets have no gradient.

Each function checks its inputs (shape, dtype, NaN/inf, label range) and raises
a ``ValueError`` naming the argument. The arithmetic of the hot losses (KL,
cosine embedding, softmax cross-entropy) is written once, in :mod:`.ops`; the layers
call those operations directly, after validating once. (The compiled kernels that
mirror them are in :mod:`vaelayer_np.fast.kernels`.)
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import DTypeLike

from . import ops
from ._validate import (
    check_choice,
    check_dtype,
    check_float_array,
    check_labels,
    check_same_shape,
    check_targets_pm1,
)
from .ops import COSINE_EPS, log_softmax, softmax  # noqa: F401  (public here too)


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    r"""Mean squared error over all elements.

    .. math:: L = \frac{1}{N D} \sum_{n,d} (\hat x_{nd} - x_{nd})^2

    Parameters
    ----------
    pred, target : (N, D) float arrays

    Returns
    -------
    value : float
    (d_pred, d_target) : (N, D) arrays; ``d_target = -d_pred``.
    """
    check_float_array("pred", pred, shape=(None, None))
    check_float_array("target", target)
    check_same_shape("pred", pred, "target", target)
    diff = pred - target
    value = float(np.mean(diff * diff))
    d_pred = diff * (2.0 / diff.size)
    return value, (d_pred, -d_pred)


def bce_with_logits(logits: np.ndarray, target: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    r"""Binary cross-entropy on logits, mean over all elements, stable for any logit.

    .. math:: \ell = \max(s, 0) - s\,t + \log(1 + e^{-|s|})

    which equals :math:`-t\log\sigma(s) - (1-t)\log(1-\sigma(s))` without ever
    evaluating ``exp`` of a large positive number.

    Parameters
    ----------
    logits : (N, D) float array
    target : (N, D) float array with entries in [0, 1]

    Returns
    -------
    value : float
    (d_logits, d_target) : (N, D) arrays.
    """
    check_float_array("logits", logits, shape=(None, None))
    check_float_array("target", target)
    check_same_shape("logits", logits, "target", target)
    if target.size and (target.min() < 0 or target.max() > 1):
        raise ValueError("target: BCE targets must lie in [0, 1]")
    value = float(np.mean(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))))
    e = np.exp(-np.abs(logits))
    prob = np.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    scale = 1.0 / logits.size
    return value, ((prob - target) * scale, -logits * scale)


def kl_diag_gaussian(mu: np.ndarray, log_var: np.ndarray, backend: str | None = None) -> tuple[float,
                     tuple[np.ndarray, np.ndarray]]:
    r"""KL( N(mu, diag(exp(log_var))) || N(0, I) ), summed over latent units, mean over the batch.

    .. math:: KL = \frac{1}{N} \sum_n -\tfrac12 \sum_k (1 + \log\sigma^2_{nk} - \mu_{nk}^2 - \sigma^2_{nk})

    The formula and its gradients are :func:`vaelayer_np.core.ops.kl_diag_gaussian`, the
    function every :class:`~vaelayer_np.core.layers.VAELayer` runs; this entry point adds the checks.

    Parameters
    ----------
    mu, log_var : (N, K) float arrays
    backend : deprecated, ignored (the kernels are in :mod:`vaelayer_np.fast.kernels`)

    Returns
    -------
    value : float, >= 0, and 0 exactly at mu = 0, log_var = 0.
    (d_mu, d_log_var) : (N, K) arrays: ``mu / N`` and ``(exp(log_var) - 1) / (2N)``.
    """
    check_float_array("mu", mu, shape=(None, None))
    check_float_array("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    _no_backend(backend)
    return ops.kl_diag_gaussian(mu, log_var)


def cosine_similarity(a: np.ndarray, b: np.ndarray, eps: float = COSINE_EPS) -> np.ndarray:
    r"""Row-wise cosine similarity, in [-1, 1]; 0 where a row is the zero vector.

    .. math:: \cos_n = \frac{a_n\cdot b_n}{\sqrt{(\|a_n\|^2+\epsilon)(\|b_n\|^2+\epsilon)}}
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b)
    check_same_shape("a", a, "b", b)
    dot = np.einsum("nk,nk->n", a, b)
    return dot / np.sqrt((np.einsum("nk,nk->n", a, a) + eps) * (np.einsum("nk,nk->n", b, b) + eps))


def cosine_embedding(a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float = 0.0, eps: float = COSINE_EPS,
                     backend: str | None = None) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    r"""Cosine embedding loss, mean over the N pairs (a_n, b_n).

    .. math::
        \ell_n = \begin{cases} 1 - \cos_n & t_n = +1 \\
                               \max(0, \cos_n - m) & t_n = -1 \end{cases}

    The loss of ``torch.nn.CosineEmbeddingLoss`` (mean reduction), with two
    differences: ``eps`` (1e-8 here, 1e-12 in torch) is added to each squared norm,
    so values differ for vectors of norm near 1e-4 or below; and at an exact tie
    :math:`\cos_n = m` of a negative pair the gradient used here is 0 (torch's is
    that of :math:`\cos_n - m`). Arithmetic: :func:`vaelayer_np.core.ops.cosine_embedding`.

    Parameters
    ----------
    a, b : (N, K) float arrays
    target : (N,) array of +1 / -1
    margin : float in [-1, 1]
    eps : float, added to each squared norm (a zero vector then has cos = 0).
    backend : deprecated, ignored (the kernels are in :mod:`vaelayer_np.fast.kernels`)

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) arrays. With s = sqrt((|a|^2+eps)(|b|^2+eps)):
        d cos / d a = b / s - cos * a / (|a|^2 + eps), and symmetrically for b.
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b)
    check_same_shape("a", a, "b", b)
    check_targets_pm1("target", target, a.shape[0])
    _check_margin(margin)
    _no_backend(backend)
    return ops.cosine_embedding(a, b, target, margin, eps)


def _no_backend(backend: str | None) -> None:
    if backend is not None:
        check_choice("backend", backend, ("numpy", "numba"))
        warnings.warn("backend: the losses are the NumPy reference; the compiled kernels are "
                      "vaelayer_np.fast.backend.get_ops('numba')", DeprecationWarning, stacklevel=3)


def _check_margin(margin: float) -> None:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise ValueError(f"margin: expected a number in [-1, 1], got {margin!r}") from None
    if not -1.0 <= m <= 1.0:  # also refuses NaN
        raise ValueError(f"margin: expected a number in [-1, 1], got {margin!r}")


def cosine_embedding_matrix(a: np.ndarray, b: np.ndarray, targets: np.ndarray, margin: float = 0.0,
                            eps: float = COSINE_EPS, balanced: bool = True, backend: str | None = None) -> tuple[float,
                            tuple[np.ndarray, np.ndarray]]:
    r"""Cosine embedding loss over every pair (a_i, b_j), weighted over the N*M pairs.

    The "all_pairs" contrast: with ``targets[i, j] = +1`` where examples i and j share
    a label and -1 elsewhere, every example is pulled towards all of its class
    and pushed from all others, not just from one partner. Arithmetic:
    :func:`vaelayer_np.core.ops.cosine_embedding_matrix`.

    Parameters
    ----------
    a : (N, K), b : (M, K) float arrays
    targets : (N, M) array of +1 / -1
    margin, eps : as in :func:`cosine_embedding`
    balanced : bool
        If True (default), positive and negative pairs each contribute half of
        the loss (``0.5 * mean over positives + 0.5 * mean over negatives``);
        with 10 classes the negatives would otherwise outweigh the positives 9:1.
        If False, a plain mean over all N*M pairs.
    backend : deprecated, ignored (the kernels are in :mod:`vaelayer_np.fast.kernels`)

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) and (M, K) arrays
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b, shape=(None, a.shape[1]))
    if not isinstance(targets, np.ndarray) or targets.shape != (a.shape[0], b.shape[0]):
        got = targets.shape if isinstance(targets, np.ndarray) else type(targets).__name__
        raise ValueError(f"targets: expected shape {(a.shape[0], b.shape[0])}, got {got}")
    check_targets_pm1("targets", targets.reshape(-1), a.shape[0] * b.shape[0])
    _check_margin(margin)
    _no_backend(backend)
    return ops.cosine_embedding_matrix(a, b, targets, margin, eps, balanced)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, backend: str | None = None) -> tuple[float,
                          tuple[np.ndarray]]:
    r"""Softmax cross-entropy with integer labels, mean over the batch (validated entry point).

    .. math:: L = -\frac1N\sum_n \log \mathrm{softmax}(s_n)_{y_n},\qquad
              \frac{\partial L}{\partial s} = (\mathrm{softmax}(s) - \mathrm{onehot}(y)) / N

    Parameters
    ----------
    logits : (N, C) float array
    labels : (N,) integer array in [0, C)
    backend : deprecated, ignored (the kernels are in :mod:`vaelayer_np.fast.kernels`)

    Returns
    -------
    value : float
    (d_logits,) : (N, C) array
    """
    check_float_array("logits", logits, shape=(None, None))
    n, c = logits.shape
    check_labels("labels", labels, n, c)
    _no_backend(backend)
    return ops.softmax_cross_entropy(logits, labels)


def one_hot(labels: np.ndarray, n_classes: int, dtype: DTypeLike = np.float64) -> np.ndarray:
    dtype = check_dtype(dtype)
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def bce_one_hot(logits: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[np.ndarray]]:
    r"""The paper's output loss: BCE with logits against one-hot targets.

    Summed over the C classes and averaged over the batch (so its scale matches
    softmax cross-entropy): ``C * bce_with_logits(logits, onehot(labels))``.
    """
    check_float_array("logits", logits, shape=(None, None))
    n, c = logits.shape
    check_labels("labels", labels, n, c)
    value, (d_logits, _) = bce_with_logits(logits, one_hot(labels, c, logits.dtype))
    return value * c, (d_logits * c,)


OUTPUT_LOSSES = {"softmax": softmax_cross_entropy, "bce": bce_one_hot}
