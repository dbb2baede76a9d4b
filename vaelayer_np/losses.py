"""Loss functions, each returning its value and its hand-written gradients.

Convention: ``value, grads = loss(...)`` where ``grads`` is a tuple with one
array per floating-point input, in argument order (``dL/d first``, ...).
Integer arguments (class labels) and +1/-1 targets have no gradient.

All reductions are stated in each docstring; the VAE layer and the trainers
use exactly these functions, so their gradients are checked once, here.
"""
from __future__ import annotations

import numpy as np

from .backend import get_ops
from ._validate import (
    check_float_array,
    check_labels,
    check_same_shape,
    check_targets_pm1,
)

COSINE_EPS = 1e-8  # added to squared norms: zero vectors give cos = 0, no NaN


def mse(pred, target):
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


def bce_with_logits(logits, target):
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


def kl_diag_gaussian(mu, log_var):
    r"""KL( N(mu, diag(exp(log_var))) || N(0, I) ), summed over latent units, mean over the batch.

    .. math:: KL = \frac{1}{N} \sum_n -\tfrac12 \sum_k (1 + \log\sigma^2_{nk} - \mu_{nk}^2 - \sigma^2_{nk})

    (Kingma & Welling 2014, appendix B.)

    Returns
    -------
    value : float, >= 0, and 0 exactly at mu = 0, log_var = 0.
    (d_mu, d_log_var) : (N, K) arrays: ``mu / N`` and ``(exp(log_var) - 1) / (2N)``.
    """
    check_float_array("mu", mu, shape=(None, None))
    check_float_array("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    n = mu.shape[0]
    var = np.exp(log_var)
    value = float(-0.5 * np.sum(1 + log_var - mu * mu - var) / n)
    return value, (mu / n, (var - 1) * (0.5 / n))


def cosine_similarity(a, b, eps=COSINE_EPS):
    r"""Row-wise cosine similarity, in [-1, 1]; 0 where a row is the zero vector.

    .. math:: \cos_n = \frac{a_n\cdot b_n}{\sqrt{(\|a_n\|^2+\epsilon)(\|b_n\|^2+\epsilon)}}
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b)
    check_same_shape("a", a, "b", b)
    return _cosine_parts(a, b, eps)[0]


def _cosine_parts(a, b, eps):
    dot = np.einsum("nk,nk->n", a, b)
    sq_a = np.einsum("nk,nk->n", a, a) + eps
    sq_b = np.einsum("nk,nk->n", b, b) + eps
    norm = np.sqrt(sq_a * sq_b)
    return dot / norm, norm, sq_a, sq_b


def cosine_embedding(a, b, target, margin=0.0, eps=COSINE_EPS, backend="numpy"):
    r"""Cosine embedding loss, mean over the N pairs (as ``torch.nn.CosineEmbeddingLoss``).

    .. math::
        \ell_n = \begin{cases} 1 - \cos_n & t_n = +1 \\
                               \max(0, \cos_n - m) & t_n = -1 \end{cases}

    Parameters
    ----------
    a, b : (N, K) float arrays
    target : (N,) array of +1 / -1
    margin : float in [-1, 1]
    eps : float, added to each squared norm (a zero vector then has cos = 0).
    backend : "numpy" (this code) or "numba" (a fused kernel, same result)

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) arrays. With n = sqrt((|a|^2+eps)(|b|^2+eps)):
        d cos / d a = b / n - cos * a / (|a|^2 + eps), and symmetrically for b.
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b)
    check_same_shape("a", a, "b", b)
    check_targets_pm1("target", target, a.shape[0])
    if not -1.0 <= float(margin) <= 1.0:
        raise ValueError(f"margin: expected a number in [-1, 1], got {margin!r}")
    if backend != "numpy":
        return get_ops(backend).cosine_embedding(a, b, target, margin, eps)
    cos, norm, sq_a, sq_b = _cosine_parts(a, b, eps)
    positive = target > 0
    losses = np.where(positive, 1 - cos, np.maximum(cos - margin, 0))
    n = a.shape[0]
    # dL/dcos per pair: -1 for positive pairs, 1 for negatives inside the margin.
    d_cos = np.where(positive, -1.0, (cos > margin).astype(a.dtype)).astype(a.dtype) / n
    d_a = d_cos[:, None] * (b / norm[:, None] - (cos / sq_a)[:, None] * a)
    d_b = d_cos[:, None] * (a / norm[:, None] - (cos / sq_b)[:, None] * b)
    return float(np.mean(losses)), (d_a, d_b)


def cosine_embedding_matrix(a, b, targets, margin=0.0, eps=COSINE_EPS, balanced=True, backend="numpy"):
    r"""Cosine embedding loss over every pair (a_i, b_j), mean over the N*M pairs.

    The "batch" contrast: with ``targets[i, j] = +1`` where examples i and j share
    a label and -1 elsewhere, every example is pulled towards all of its class
    and pushed from all others, not just from one partner.

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
    backend : "numpy" (this code) or "numba" (the element-wise part fused in one kernel)

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) and (M, K) arrays
    """
    check_float_array("a", a, shape=(None, None))
    check_float_array("b", b, shape=(None, a.shape[1]))
    check_targets_pm1("targets", targets.reshape(-1), a.shape[0] * b.shape[0])
    if targets.shape != (a.shape[0], b.shape[0]):
        raise ValueError(f"targets: expected shape {(a.shape[0], b.shape[0])}, got {targets.shape}")
    if backend != "numpy":
        return get_ops(backend).cosine_embedding_matrix(a, b, targets, margin, eps, balanced)
    inv_a = 1 / np.sqrt(np.einsum("nk,nk->n", a, a) + eps)
    inv_b = 1 / np.sqrt(np.einsum("nk,nk->n", b, b) + eps)
    cos = (a * inv_a[:, None]) @ (b * inv_b[:, None]).T
    positive = targets > 0
    losses = np.where(positive, 1 - cos, np.maximum(cos - margin, 0))
    if balanced:
        n_pos, n_neg = positive.sum(), cos.size - positive.sum()
        weights = np.where(positive, 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1)).astype(a.dtype)
        if n_pos == 0 or n_neg == 0:
            weights *= 2
    else:
        weights = np.full(cos.shape, 1.0 / cos.size, dtype=a.dtype)
    value = float(np.sum(weights * losses))
    g = np.where(positive, -1.0, (cos > margin).astype(a.dtype)).astype(a.dtype) * weights
    # d cos_ij / d a_i = b_j / (|a_i| |b_j|) - cos_ij a_i / |a_i|^2
    g_scaled = g * inv_a[:, None] * inv_b[None, :]
    d_a = g_scaled @ b - ((g * cos).sum(axis=1) * inv_a * inv_a)[:, None] * a
    d_b = g_scaled.T @ a - ((g * cos).sum(axis=0) * inv_b * inv_b)[:, None] * b
    return value, (d_a, d_b)


def softmax(logits):
    """Row-wise softmax, shifted by the row maximum so that exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits):
    """log softmax through log-sum-exp."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels, backend="numpy"):
    r"""Softmax cross-entropy with integer labels, mean over the batch.

    .. math:: L = -\frac1N\sum_n \log \mathrm{softmax}(s_n)_{y_n},\qquad
              \frac{\partial L}{\partial s} = (\mathrm{softmax}(s) - \mathrm{onehot}(y)) / N

    Parameters
    ----------
    logits : (N, C) float array
    labels : (N,) integer array in [0, C)

    Returns
    -------
    value : float
    (d_logits,) : (N, C) array
    """
    check_float_array("logits", logits, shape=(None, None))
    n, c = logits.shape
    check_labels("labels", labels, n, c)
    if backend != "numpy":
        return get_ops(backend).softmax_cross_entropy(logits, labels)
    logp = log_softmax(logits)
    value = float(-np.mean(logp[np.arange(n), labels]))
    d_logits = np.exp(logp)
    d_logits[np.arange(n), labels] -= 1
    return value, (d_logits / n,)


def one_hot(labels, n_classes, dtype=np.float64):
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def bce_one_hot(logits, labels):
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
