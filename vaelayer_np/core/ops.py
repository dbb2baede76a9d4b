r"""The hot operations, written once as plain NumPy: the reference backend.

Every operation that the ``numba`` backend replaces with a compiled kernel has its
one readable definition here (activations live in :mod:`.activations`). The
kernels in :mod:`vaelayer_np.fast.kernels` each name the function they mirror and are tested
against it on the same inputs (``tests/test_kernels.py``).

Nothing here validates its inputs: the public functions of :mod:`.losses` and
the layers' public methods do that before calling in. Shapes: N examples, K
latent units, C classes.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from ._validate import check_dtype

COSINE_EPS = 1e-8  # added to squared norms: a zero vector gives cos = 0, never NaN


# ----------------------------------------------------------------------------- matrix product
def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through the BLAS that NumPy links (both backends use it: no kernel beats BLAS here)."""
    return a @ b


def matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = a @ b`` through BLAS, into an array the caller keeps (no new allocation).

    The training steps use it for the products whose results live in buffers that are
    allocated once (a layer's gradients, its latent), so that a steady-state step
    allocates no large arrays. Returns ``out``.
    """
    return np.matmul(a, b, out=out)


# ----------------------------------------------------------------------------- the VAE layer's latent
def bound_log_var(r: np.ndarray, bound: float | None) -> np.ndarray:
    r"""Smoothly bound the raw log-variance: :math:`\log\sigma^2 = c\tanh(r / c)`.

    With ``bound`` = c = 6 the variance lies in (e^-6, e^6): the sampler can never
    produce an overflowing ``exp`` and the KL stays finite. ``bound=None`` (or 0)
    leaves ``log_var = r``.
    """
    if not bound:
        return r
    return bound * np.tanh(r / bound)


def bound_log_var_backward(d_log_var: np.ndarray, log_var: np.ndarray, bound: float | None) -> np.ndarray:
    r""":math:`\partial\log\sigma^2/\partial r = 1 - \tanh^2(r/c) = 1 - (\log\sigma^2/c)^2`."""
    if not bound:
        return d_log_var
    t = log_var / bound
    return d_log_var * (1 - t * t)


def reparameterize(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    r"""The sample :math:`z = \mu + \sigma\odot\epsilon` with :math:`\sigma = e^{\frac12\log\sigma^2}`.

    Parameters
    ----------
    mu, log_var : (N, K) arrays
    eps : (N, K) array of N(0, 1) noise, or None for the mean path (z = mu)

    Returns
    -------
    std : (N, K) array (the one place std is computed from log_var)
    z : (N, K) array
    """
    std = np.exp(0.5 * log_var)
    z = mu if eps is None else mu + std * eps
    return std, z


def reparameterize_backward(d_z: np.ndarray, eps: np.ndarray | None, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :math:`\langle d_z, z\rangle` with the noise held fixed.

    .. math:: \frac{\partial}{\partial\mu} = d_z,\qquad
              \frac{\partial}{\partial\log\sigma^2} = \tfrac12\, d_z\odot\epsilon\odot\sigma

    (:math:`\partial\sigma/\partial\log\sigma^2 = \sigma/2`). On the mean path
    (``eps`` None) the log-variance gets no gradient from z.

    Returns
    -------
    d_mu, d_log_var : (N, K) arrays (d_log_var is 0 on the mean path)
    """
    if eps is None:
        return d_z, np.zeros_like(d_z)
    return d_z, 0.5 * d_z * eps * std


def kl_diag_gaussian(mu: np.ndarray, log_var: np.ndarray, var: np.ndarray | None = None) -> tuple[float,
                     tuple[np.ndarray, np.ndarray]]:
    r"""KL( N(mu, diag(exp(log_var))) || N(0, I) ), summed over K, mean over N, and its gradients.

    .. math::
        KL = \frac{1}{N} \sum_n -\tfrac12 \sum_k (1 + \log\sigma^2_{nk} - \mu_{nk}^2 - \sigma^2_{nk}),\qquad
        \frac{\partial KL}{\partial\mu} = \frac{\mu}{N},\qquad
        \frac{\partial KL}{\partial\log\sigma^2} = \frac{\sigma^2 - 1}{2N}

    (Kingma & Welling 2014, appendix B.) The gradient is with respect to the
    *log*-variance; using the variance in its place is the classic bug that the
    gradient check catches (``tests/test_gradients.py``).

    Parameters
    ----------
    mu, log_var : (N, K) arrays
    var : (N, K) array, optional: ``exp(log_var)`` if the caller has it already

    Returns
    -------
    value : float, >= 0, and 0 exactly at mu = 0, log_var = 0
    (d_mu, d_log_var) : (N, K) arrays
    """
    n = mu.shape[0]
    if var is None:
        var = np.exp(log_var)
    value = float(-0.5 * np.sum(1 + log_var - mu * mu - var) / n)
    return value, (mu / n, (var - 1) * (0.5 / n))


def latent_backward(d_z: np.ndarray, eps: np.ndarray | None, std: np.ndarray, kl_grads: tuple[np.ndarray, np.ndarray],
                    kl_weight: float, log_var: np.ndarray, bound: float | None) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradient reaching the encoder's mean and *raw* log-variance heads.

    Adds the sample path (:func:`reparameterize_backward`) and ``kl_weight`` times
    the KL gradients (from :func:`kl_diag_gaussian`), then applies the chain rule
    through the bound (:func:`bound_log_var_backward`).

    Returns
    -------
    d_mu, d_r : (N, K) arrays
    """
    d_mu, d_log_var = reparameterize_backward(d_z, eps, std)
    d_mu_kl, d_log_var_kl = kl_grads
    d_mu = d_mu + kl_weight * d_mu_kl
    d_log_var = d_log_var + kl_weight * d_log_var_kl
    return d_mu, bound_log_var_backward(d_log_var, log_var, bound)


# ----------------------------------------------------------------------------- reconstruction loss
def mse_value_and_grad(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    r"""Mean squared error over all elements and its gradient with respect to ``pred``, from one difference.

    .. math:: L = \frac{1}{N D} \sum_{n,d} (\hat x_{nd} - x_{nd})^2,\qquad
              \frac{\partial L}{\partial \hat x} = \frac{2}{N D} (\hat x - x)

    The same arithmetic as :func:`vaelayer_np.core.losses.mse` (which validates its inputs and also
    returns the target's gradient); the layers' training path computes the value and the
    gradient here once and keeps the value for :meth:`~vaelayer_np.core.layers.VAELayer.loss_terms`.

    Parameters
    ----------
    pred, target : (N, D) arrays

    Returns
    -------
    value : float
    d_pred : (N, D) array
    """
    diff = pred - target
    value = float(np.mean(diff * diff))
    return value, diff * (2.0 / diff.size)


# ----------------------------------------------------------------------------- cosine embedding losses
def cosine_embedding(a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float = 0.0,
                     eps: float = COSINE_EPS) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    r"""Cosine embedding loss over N pairs (a_n, b_n), mean over the pairs, and its gradients.

    .. math::
        \cos_n = \frac{a_n\cdot b_n}{\sqrt{(\|a_n\|^2+\epsilon)(\|b_n\|^2+\epsilon)}},\qquad
        \ell_n = \begin{cases} 1 - \cos_n & t_n = +1 \\ \max(0, \cos_n - m) & t_n = -1 \end{cases}

    With :math:`s_n = \sqrt{(\|a_n\|^2+\epsilon)(\|b_n\|^2+\epsilon)}`:
    :math:`\partial\cos_n/\partial a_n = b_n / s_n - \cos_n\, a_n / (\|a_n\|^2+\epsilon)`,
    and symmetrically for b. At an exact tie :math:`\cos_n = m` of a negative pair the
    hinge is not differentiable; the gradient used there is 0.

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) arrays
    """
    dot = np.einsum("nk,nk->n", a, b)
    sq_a = np.einsum("nk,nk->n", a, a) + eps
    sq_b = np.einsum("nk,nk->n", b, b) + eps
    norm = np.sqrt(sq_a * sq_b)
    cos = dot / norm
    positive = target > 0
    losses = np.where(positive, 1 - cos, np.maximum(cos - margin, 0))
    n = a.shape[0]
    # dL/dcos per pair: -1 for positive pairs, +1 for negatives above the margin, 0 otherwise.
    d_cos = np.where(positive, -1.0, (cos > margin).astype(a.dtype)).astype(a.dtype) / n
    d_a = d_cos[:, None] * (b / norm[:, None] - (cos / sq_a)[:, None] * a)
    d_b = d_cos[:, None] * (a / norm[:, None] - (cos / sq_b)[:, None] * b)
    return float(np.mean(losses)), (d_a, d_b)


def cosine_pair_weights(positive: np.ndarray, balanced: bool, dtype: DTypeLike) -> np.ndarray:
    """Weight of each pair in the all-pairs loss (see :func:`cosine_embedding_matrix`)."""
    dtype = check_dtype(dtype)
    if not balanced:
        return np.full(positive.shape, 1.0 / positive.size, dtype=dtype)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    w_pos, w_neg = 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1)
    if n_pos == 0 or n_neg == 0:  # only one kind of pair: it carries the whole loss
        w_pos, w_neg = 2 * w_pos, 2 * w_neg
    return np.where(positive, w_pos, w_neg).astype(dtype)


def cosine_embedding_matrix(a: np.ndarray, b: np.ndarray, targets: np.ndarray, margin: float = 0.0,
                            eps: float = COSINE_EPS, balanced: bool = True) -> tuple[float,
                            tuple[np.ndarray, np.ndarray]]:
    r"""Cosine embedding loss over every pair (a_i, b_j), and its gradients.

    ``targets[i, j]`` is +1 where examples i and j share a label, -1 elsewhere. With
    ``balanced`` the positive and the negative pairs each carry half of the loss
    (:func:`cosine_pair_weights`); otherwise a plain mean over the N*M pairs.

    .. math::
        \frac{\partial\cos_{ij}}{\partial a_i} = \frac{b_j}{\|a_i\|\|b_j\|} - \cos_{ij}\frac{a_i}{\|a_i\|^2}

    (norms with :math:`\epsilon` added to their squares), so with :math:`g_{ij} = \partial L/\partial\cos_{ij}`
    the gradients are two matrix products:
    :math:`d_a = (g / (\|a\|\|b\|^T))\, b - \mathrm{diag}((g\odot\cos)\mathbf{1} / \|a\|^2)\, a`.

    Returns
    -------
    value : float
    (d_a, d_b) : (N, K) and (M, K) arrays
    """
    inv_a = 1 / np.sqrt(np.einsum("nk,nk->n", a, a) + eps)
    inv_b = 1 / np.sqrt(np.einsum("nk,nk->n", b, b) + eps)
    cos = matmul(a * inv_a[:, None], (b * inv_b[:, None]).T)
    positive = targets > 0
    weights = cosine_pair_weights(positive, balanced, a.dtype)
    losses = np.where(positive, 1 - cos, np.maximum(cos - margin, 0))
    value = float(np.sum(weights * losses))
    g = np.where(positive, -1.0, (cos > margin).astype(a.dtype)).astype(a.dtype) * weights
    g_scaled = g * inv_a[:, None] * inv_b[None, :]
    d_a = matmul(g_scaled, b) - ((g * cos).sum(axis=1) * inv_a * inv_a)[:, None] * a
    d_b = matmul(g_scaled.T, a) - ((g * cos).sum(axis=0) * inv_b * inv_b)[:, None] * b
    return value, (d_a, d_b)


# ----------------------------------------------------------------------------- softmax cross-entropy
def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax through log-sum-exp, shifted by the row maximum (never overflows)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[np.ndarray]]:
    r"""Softmax cross-entropy with integer labels, mean over the batch, and its gradient.

    .. math:: L = -\frac1N\sum_n \log \mathrm{softmax}(s_n)_{y_n},\qquad
              \frac{\partial L}{\partial s} = (\mathrm{softmax}(s) - \mathrm{onehot}(y)) / N

    Returns
    -------
    value : float
    (d_logits,) : (N, C) array
    """
    n = logits.shape[0]
    logp = log_softmax(logits)
    value = float(-np.mean(logp[np.arange(n), labels]))
    d_logits = np.exp(logp)
    d_logits[np.arange(n), labels] -= 1
    return value, (d_logits / n,)


# ----------------------------------------------------------------------------- Adam
def adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, beta1: float, beta2: float,
                step_size: float, eps_hat: float) -> None:
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
