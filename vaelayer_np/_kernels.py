"""Numba kernels of the ``numba`` backend (private: use them through :func:`.backend.get_ops`).

Each kernel fuses the element-wise passes of one NumPy expression in
:mod:`.ops`, :mod:`.losses`, :mod:`.activations` or :mod:`.optim` into one loop,
and is tested against that expression on the same inputs. Loops are serial
(no ``prange``): results do not depend on the number of threads, so training
stays deterministic for a seed. Matrix products go to BLAS (``np.dot`` inside
Numba calls the same BLAS as NumPy); the hand-written blocked matmul below is
kept for teaching, with its measured speed in docs/performance.md.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import njit

from .activations import ActivationFn

# Numerical flags in one place. "reassoc" lets LLVM vectorise sums (the order of additions
# changes, as NumPy's own pairwise sums do); "contract" allows fused multiply-adds; "nsz"
# ignores the sign of zero. NaN and inf keep their IEEE meaning, and no approximate reciprocals
# are used. The kernels agree with NumPy to rounding (tests/test_kernels.py), and a compiled
# kernel always adds in the same order: results are deterministic.
FASTMATH = {"reassoc", "contract", "nsz"}


# ----------------------------------------------------------------------------- reparameterisation + KL
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _sample_and_kl(mu, log_var, std, eps, sample):
    """z = mu + std * eps and the KL sum in one pass (tanh and exp stay with NumPy, see below)."""
    n, k = mu.shape
    z = np.empty_like(mu)
    kl = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            m = mu[i, j]
            s = std[i, j]
            z[i, j] = m + s * eps[i, j] if sample else m
            row += 1.0 + log_var[i, j] - m * m - s * s
        kl += row
    return z, -0.5 * kl / n


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _reparam_kl_backward(dz, mu, log_var, std, eps, bound, kl_weight, sample):
    n, k = mu.shape
    d_mu = np.empty_like(mu)
    d_r = np.empty_like(mu)
    a = kl_weight / n
    for i in range(n):
        for j in range(k):
            s = std[i, j]
            d_mu[i, j] = dz[i, j] + a * mu[i, j]
            dlv = 0.5 * a * (s * s - 1.0)
            if sample:
                dlv += 0.5 * dz[i, j] * eps[i, j] * s
            if bound > 0:
                t = log_var[i, j] / bound
                dlv *= 1.0 - t * t
            d_r[i, j] = dlv
    return d_mu, d_r


def reparam_kl_forward(mu, r, eps, bound):
    """Numba version of :func:`vaelayer_np.ops.reparam_kl_forward`.

    ``tanh`` and ``exp`` are left to NumPy: without a vector maths library Numba
    calls scalar libm functions for them, which measured ~10x slower than
    NumPy's SIMD loops (a fully fused kernel took 540 us against NumPy's 47 us
    at 128x256 float32). The sampling and the KL sum are fused into one pass.
    """
    log_var = bound * np.tanh(r * (1.0 / bound)) if bound else r
    std = np.exp(0.5 * log_var)
    sample = eps is not None
    z, kl = _sample_and_kl(mu, log_var, std, eps if sample else mu, sample)
    return log_var, std, z, float(kl)


def reparam_kl_backward(dz, mu, log_var, std, eps, bound, kl_weight):
    sample = eps is not None
    return _reparam_kl_backward(np.ascontiguousarray(dz), mu, log_var, std, eps if sample else mu,
                                float(bound or 0.0), float(kl_weight), sample)


# ----------------------------------------------------------------------------- Adam
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _adam_update(w, g, m, v, beta1, beta2, step_size, eps_hat):
    for i in range(w.size):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        w[i] -= step_size * mi / (math.sqrt(vi) + eps_hat)


def adam_update(w, g, m, v, beta1, beta2, step_size, eps_hat):
    _adam_update(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                 float(beta1), float(beta2), float(step_size), float(eps_hat))


# ----------------------------------------------------------------------------- cosine embedding loss
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cosine_embedding(a, b, target, margin, eps):
    n, k = a.shape
    d_a = np.empty_like(a)
    d_b = np.empty_like(b)
    total = 0.0
    for i in range(n):
        dot = 0.0
        sa = eps
        sb = eps
        for j in range(k):
            dot += a[i, j] * b[i, j]
            sa += a[i, j] * a[i, j]
            sb += b[i, j] * b[i, j]
        norm = math.sqrt(sa * sb)
        cos = dot / norm
        if target[i] > 0:
            total += 1.0 - cos
            g = -1.0 / n
        else:
            if cos > margin:
                total += cos - margin
                g = 1.0 / n
            else:
                g = 0.0
        for j in range(k):
            d_a[i, j] = g * (b[i, j] / norm - cos / sa * a[i, j])
            d_b[i, j] = g * (a[i, j] / norm - cos / sb * b[i, j])
    return total / n, d_a, d_b


def cosine_embedding(a, b, target, margin=0.0, eps=1e-8):
    """Kernel behind :func:`vaelayer_np.losses.cosine_embedding` (inputs already validated)."""
    value, d_a, d_b = _cosine_embedding(a, b, np.asarray(target, dtype=a.dtype), float(margin), float(eps))
    return float(value), (d_a, d_b)


# ----------------------------------------------------------------------------- all-pairs cosine loss
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cosine_matrix_terms(cos, targets, inv_a, inv_b, margin, balanced):
    """The element-wise part of the all-pairs loss in one pass: value, dL/dcos scaled, row and column sums."""
    n, m = cos.shape
    n_pos = 0
    for i in range(n):
        for j in range(m):
            if targets[i, j] > 0:
                n_pos += 1
    n_neg = n * m - n_pos
    if balanced:
        w_pos = 0.5 / max(n_pos, 1)
        w_neg = 0.5 / max(n_neg, 1)
        if n_pos == 0 or n_neg == 0:
            w_pos *= 2.0
            w_neg *= 2.0
    else:
        w_pos = 1.0 / (n * m)
        w_neg = w_pos
    g_scaled = np.empty_like(cos)
    row = np.zeros(n, dtype=cos.dtype)
    col = np.zeros(m, dtype=cos.dtype)
    value = 0.0
    for i in range(n):
        for j in range(m):
            c = cos[i, j]
            if targets[i, j] > 0:
                value += w_pos * (1.0 - c)
                g = -w_pos
            elif c > margin:
                value += w_neg * (c - margin)
                g = w_neg
            else:
                g = 0.0
            g_scaled[i, j] = g * inv_a[i] * inv_b[j]
            row[i] += g * c
            col[j] += g * c
    return value, g_scaled, row, col


def cosine_embedding_matrix(a, b, targets, margin=0.0, eps=1e-8, balanced=True):
    """Kernel behind :func:`vaelayer_np.losses.cosine_embedding_matrix` (inputs already validated)."""
    inv_a = 1 / np.sqrt(np.einsum("nk,nk->n", a, a) + eps)
    inv_b = 1 / np.sqrt(np.einsum("nk,nk->n", b, b) + eps)
    cos = (a * inv_a[:, None]) @ (b * inv_b[:, None]).T
    value, g_scaled, row, col = _cosine_matrix_terms(cos, np.asarray(targets), inv_a, inv_b, float(margin),
                                                     bool(balanced))
    d_a = g_scaled @ b - (row * inv_a * inv_a)[:, None] * a
    d_b = g_scaled.T @ a - (col * inv_b * inv_b)[:, None] * b
    return float(value), (d_a, d_b)


# ----------------------------------------------------------------------------- softmax cross-entropy
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_xent(logits, labels):
    n, c = logits.shape
    d = np.empty_like(logits)
    total = 0.0
    for i in range(n):
        mx = logits[i, 0]
        for j in range(1, c):
            if logits[i, j] > mx:
                mx = logits[i, j]
        s = 0.0
        for j in range(c):
            e = math.exp(logits[i, j] - mx)
            d[i, j] = e
            s += e
        total += math.log(s) + mx - logits[i, labels[i]]
        for j in range(c):
            d[i, j] = d[i, j] / s / n
        d[i, labels[i]] -= 1.0 / n
    return total / n, d


def softmax_cross_entropy(logits, labels):
    value, d = _softmax_xent(logits, labels)
    return float(value), (d,)


# ----------------------------------------------------------------------------- activations
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _act_forward(x, kind, slope):
    out = np.empty_like(x)
    flat_x, flat_o = x.reshape(-1), out.reshape(-1)
    for i in range(flat_x.size):
        v = flat_x[i]
        if kind == 0:
            flat_o[i] = v if v > 0 else 0.0
        elif kind == 1:
            flat_o[i] = v if v > 0 else slope * v
        elif kind == 2:
            flat_o[i] = math.tanh(v)
        elif kind == 3:
            if v >= 0:
                flat_o[i] = 1.0 / (1.0 + math.exp(-v))
            else:
                e = math.exp(v)
                flat_o[i] = e / (1.0 + e)
        else:
            flat_o[i] = v
    return out


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _act_backward(dout, x, out, kind, slope):
    dx = np.empty_like(x)
    fd, fx, fo, fr = dout.reshape(-1), x.reshape(-1), out.reshape(-1), dx.reshape(-1)
    for i in range(fx.size):
        if kind == 0:
            fr[i] = fd[i] if fx[i] > 0 else 0.0
        elif kind == 1:
            fr[i] = fd[i] if fx[i] > 0 else slope * fd[i]
        elif kind == 2:
            fr[i] = fd[i] * (1.0 - fo[i] * fo[i])
        elif kind == 3:
            fr[i] = fd[i] * fo[i] * (1.0 - fo[i])
        else:
            fr[i] = fd[i]
    return dx


_ACT_KIND = {"relu": 0, "leaky_relu": 1, "tanh": 2, "sigmoid": 3, "identity": 4}


def make_activation(name, slope=0.01):
    kind = _ACT_KIND[name]

    def forward(x):
        return _act_forward(np.ascontiguousarray(x), kind, slope)

    def backward(dout, x, out):
        return _act_backward(np.ascontiguousarray(dout), np.ascontiguousarray(x), np.ascontiguousarray(out),
                             kind, slope)

    return ActivationFn(name, forward, backward)


# ----------------------------------------------------------------------------- matmul
@njit(cache=True)
def _matmul_blas(a, b):
    return np.dot(a, b)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _matmul_blocked(a, b, block=64):
    """C = A @ B with cache blocking, for teaching; far slower than BLAS (see docs/performance.md)."""
    n, k = a.shape
    m = b.shape[1]
    c = np.zeros((n, m), dtype=a.dtype)
    for i0 in range(0, n, block):
        for p0 in range(0, k, block):
            for j0 in range(0, m, block):
                for i in range(i0, min(i0 + block, n)):
                    for p in range(p0, min(p0 + block, k)):
                        aip = a[i, p]
                        for j in range(j0, min(j0 + block, m)):
                            c[i, j] += aip * b[p, j]
    return c


def matmul(a, b):
    """The backend's matrix product: NumPy's ``@`` (the same BLAS).

    ``np.dot`` inside Numba (``_matmul_blas``) measured 1.00-1.06x NumPy's speed on
    contiguous operands and much slower on the transposed views the backward
    passes use, and the blocked kernel is ~30x slower than BLAS, so the product
    is left to NumPy (``vaelayer bench`` prints all three).
    """
    return a @ b


def make_ops():
    return SimpleNamespace(
        name="numba",
        matmul=matmul,
        reparam_kl_forward=reparam_kl_forward,
        reparam_kl_backward=reparam_kl_backward,
        adam_update=adam_update,
        cosine_embedding=cosine_embedding,
        cosine_embedding_matrix=cosine_embedding_matrix,
        softmax_cross_entropy=softmax_cross_entropy,
        activation=make_activation,
    )
