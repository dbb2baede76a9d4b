"""Numba kernels of the ``numba`` backend (private: use them through :func:`.backend.get_ops`).

Each public function here mirrors one NumPy reference in :mod:`.ops` or
:mod:`.activations` (its docstring names it), fuses that reference's element-wise
passes into one loop, and is tested against it on the same inputs
(``tests/test_kernels.py``, also run with ``NUMBA_DISABLE_JIT=1``). The private
``_name`` functions are the compiled loops; the public wrappers only prepare
arguments. Loops are serial (no ``prange``): results do not depend on the number
of threads, so training stays deterministic for a seed on one machine. Every loop is compiled with
``nogil=True``: it releases Python's lock, so that the two twins of an IFFCL step can run their
kernels at the same time on two threads (:mod:`.parallel`). Matrix products are not
here: both backends use NumPy's BLAS (:func:`.ops.matmul`, looked up at call time so
that ``vaelayer bench`` can count every product).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
from numba import njit

from ..core import ops as _ops
from ..core.activations import LEAKY_SLOPE, ActivationFn
from ..core.ops import COSINE_EPS

# Numerical flags in one place. "contract" allows fused multiply-adds; "nsz" ignores the sign of zero;
# "reassoc" lets LLVM reorder additions. NaN and inf keep their IEEE meaning, and no approximate
# reciprocals are used. The kernels agree with NumPy to rounding (tests/test_kernels.py).
#
# Loops that only work element by element (activations, the latent's backward, Adam) get FASTMATH: one
# element's result does not depend on its neighbours. Loops that *sum* (the losses' values, KL, the
# cosine terms, softmax) get ORDERED, without "reassoc": with it, LLVM vectorises a sum in another
# order, and in a loop that also writes an array it adds a run-time check of whether the output lies
# close to an input in memory, falling back to the plain loop when it does. The sum's last bits then
# depended on where NumPy happened to place the output buffer (measured: 1 ulp of the MSE's value for
# arrays under 32 elements). Without "reassoc" the additions happen in the order the code writes them,
# wherever the arrays sit: results are deterministic (tests/test_kernel_placement.py moves every buffer to
# several offsets). The MSE's long sum keeps most of its speed with four running sums written out in the code.
FASTMATH = {"reassoc", "contract", "nsz"}
ORDERED = {"contract", "nsz"}


# ----------------------------------------------------------------------------- KL and the latent's backward
@njit(cache=True, nogil=True, fastmath=ORDERED, error_model="numpy")
def _kl_diag_gaussian(mu: np.ndarray, log_var: np.ndarray, var: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Compiled loop of :func:`kl_diag_gaussian` (reference: :func:`vaelayer_np.core.ops.kl_diag_gaussian`)."""
    n, k = mu.shape
    d_mu = np.empty_like(mu)
    d_lv = np.empty_like(mu)
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            m = mu[i, j]
            s2 = var[i, j]
            row += 1.0 + log_var[i, j] - m * m - s2
            d_mu[i, j] = m * inv_n
            d_lv[i, j] = (s2 - 1.0) * (0.5 * inv_n)
        total += row
    return -0.5 * total * inv_n, d_mu, d_lv


def kl_diag_gaussian(mu: np.ndarray, log_var: np.ndarray,
                     var: np.ndarray | None = None) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.kl_diag_gaussian`: value and both gradients in one pass.

    ``exp`` stays with NumPy (``var`` is passed in, or computed here with ``np.exp``): without a
    vector maths library Numba calls scalar libm functions, which measured slower than NumPy's
    SIMD loops.
    """
    if var is None:
        var = np.exp(log_var)
    value, d_mu, d_lv = _kl_diag_gaussian(mu, log_var, var)
    return float(value), (d_mu, d_lv)


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _latent_backward(d_z: np.ndarray, eps: np.ndarray, std: np.ndarray, d_mu_kl: np.ndarray, d_lv_kl: np.ndarray,
                     kl_weight: float, log_var: np.ndarray, bound: float,
                     sample: bool) -> tuple[np.ndarray, np.ndarray]:
    """Compiled loop of :func:`latent_backward` (reference: :func:`vaelayer_np.core.ops.latent_backward`)."""
    n, k = d_z.shape
    d_mu = np.empty_like(d_z)
    d_r = np.empty_like(d_z)
    for i in range(n):
        for j in range(k):
            d_mu[i, j] = d_z[i, j] + kl_weight * d_mu_kl[i, j]
            dlv = kl_weight * d_lv_kl[i, j]
            if sample:
                dlv += 0.5 * d_z[i, j] * eps[i, j] * std[i, j]
            if bound > 0:
                t = log_var[i, j] / bound
                dlv *= 1.0 - t * t
            d_r[i, j] = dlv
    return d_mu, d_r


def latent_backward(d_z: np.ndarray, eps: np.ndarray | None, std: np.ndarray, kl_grads: tuple[np.ndarray, np.ndarray],
                    kl_weight: float, log_var: np.ndarray, bound: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.latent_backward` (sample path + KL + bound, one pass)."""
    sample = eps is not None
    d_mu_kl, d_lv_kl = kl_grads
    return _latent_backward(np.ascontiguousarray(d_z), eps if eps is not None else d_z, std, d_mu_kl, d_lv_kl,
                            float(kl_weight), log_var, float(bound or 0.0), sample)


# ----------------------------------------------------------------------------- Adam
@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, beta1: float, one_minus_beta1: float,
                 beta2: float, one_minus_beta2: float, step_size: float, eps_hat: float) -> None:
    """Compiled loop of :func:`adam_update` over flat arrays (reference: :func:`vaelayer_np.core.ops.adam_update`).

    The scalars arrive in the arrays' dtype, so float32 arrays are updated in float32 arithmetic
    (8 lanes per AVX2 instruction instead of 4): the loop is one read of w, g, m, v and one write
    of w, m, v per parameter.
    """
    for i in range(w.size):
        gi = g[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        w[i] -= step_size * mi / (math.sqrt(vi) + eps_hat)


def adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, beta1: float, beta2: float,
                step_size: float, eps_hat: float) -> None:
    """Kernel mirroring :func:`vaelayer_np.core.ops.adam_update`: m, v and w updated in one pass.

    Given one layer's flat buffers (see :class:`vaelayer_np.core.optim.Adam`) this is one call per layer.
    """
    scalar = w.dtype.type
    _adam_update(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                 scalar(beta1), scalar(1.0 - beta1), scalar(beta2), scalar(1.0 - beta2), scalar(step_size),
                 scalar(eps_hat))


# ----------------------------------------------------------------------------- reconstruction loss
@njit(cache=True, nogil=True, fastmath=ORDERED, error_model="numpy")
def _mse_value_and_grad(pred: np.ndarray, target: np.ndarray, d_pred: np.ndarray) -> float:
    """Compiled loop of :func:`mse_value_and_grad` (reference: :func:`vaelayer_np.core.ops.mse_value_and_grad`)."""
    p, t, d = pred.reshape(-1), target.reshape(-1), d_pred.reshape(-1)
    n = p.size
    scale = 2.0 / n
    # four running sums (element i goes to sum i % 4), added up in a fixed order at the end: the additions
    # happen in the order written here (ORDERED), and four independent chains keep the loop fast
    s0 = s1 = s2 = s3 = 0.0
    body = n - n % 4
    for i in range(0, body, 4):
        e0, e1, e2, e3 = p[i] - t[i], p[i + 1] - t[i + 1], p[i + 2] - t[i + 2], p[i + 3] - t[i + 3]
        s0 += e0 * e0
        s1 += e1 * e1
        s2 += e2 * e2
        s3 += e3 * e3
        d[i], d[i + 1], d[i + 2], d[i + 3] = e0 * scale, e1 * scale, e2 * scale, e3 * scale
    for i in range(body, n):
        e = p[i] - t[i]
        s0 += e * e
        d[i] = e * scale
    return ((s0 + s1) + (s2 + s3)) / n


def mse_value_and_grad(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.mse_value_and_grad`: value and gradient in one pass."""
    pred, target = np.ascontiguousarray(pred), np.ascontiguousarray(target)
    d_pred = np.empty_like(pred)
    value = _mse_value_and_grad(pred, target, d_pred)
    return float(value), d_pred


# ----------------------------------------------------------------------------- cosine embedding loss
@njit(cache=True, nogil=True, fastmath=ORDERED, error_model="numpy")
def _cosine_embedding(a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float,
                      eps: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Compiled loop of :func:`cosine_embedding` (reference: :func:`vaelayer_np.core.ops.cosine_embedding`)."""
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


def cosine_embedding(a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float = 0.0,
                     eps: float = COSINE_EPS) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.cosine_embedding`: norms, loss and gradients per row in one pass."""
    value, d_a, d_b = _cosine_embedding(a, b, np.asarray(target, dtype=a.dtype), float(margin), float(eps))
    return float(value), (d_a, d_b)


# ----------------------------------------------------------------------------- all-pairs cosine loss
@njit(cache=True, nogil=True, fastmath=ORDERED, error_model="numpy")
def _cosine_matrix_terms(cos: np.ndarray, targets: np.ndarray, inv_a: np.ndarray, inv_b: np.ndarray, margin: float,
                         balanced: bool) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The element-wise part of the reference :func:`vaelayer_np.core.ops.cosine_embedding_matrix` in one pass:
    value, dL/dcos scaled by the norms, and its row and column sums weighted by cos (pair weights as
    :func:`.ops.cosine_pair_weights`)."""
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


def cosine_embedding_matrix(a: np.ndarray, b: np.ndarray, targets: np.ndarray, margin: float = 0.0,
                            eps: float = COSINE_EPS,
                            balanced: bool = True) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.cosine_embedding_matrix`.

    The three matrix products stay with BLAS (:func:`.ops.matmul`); the element-wise
    work between them (pair weights, loss, dL/dcos, row and column sums) is one pass.
    """
    inv_a = 1 / np.sqrt(np.einsum("nk,nk->n", a, a) + eps)
    inv_b = 1 / np.sqrt(np.einsum("nk,nk->n", b, b) + eps)
    cos = _ops.matmul(a * inv_a[:, None], (b * inv_b[:, None]).T)
    value, g_scaled, row, col = _cosine_matrix_terms(cos, np.asarray(targets), inv_a, inv_b, float(margin),
                                                     bool(balanced))
    d_a = _ops.matmul(g_scaled, b) - (row * inv_a * inv_a)[:, None] * a
    d_b = _ops.matmul(g_scaled.T, a) - (col * inv_b * inv_b)[:, None] * b
    return float(value), (d_a, d_b)


# ----------------------------------------------------------------------------- softmax cross-entropy
@njit(cache=True, nogil=True, fastmath=ORDERED, error_model="numpy")
def _softmax_xent(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Compiled loop of :func:`softmax_cross_entropy` (reference:
    :func:`vaelayer_np.core.ops.softmax_cross_entropy`)."""
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


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[np.ndarray]]:
    """Kernel mirroring :func:`vaelayer_np.core.ops.softmax_cross_entropy`: one pass per row."""
    value, d = _softmax_xent(logits, labels)
    return float(value), (d,)


# ----------------------------------------------------------------------------- activations
@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _act_forward(x: np.ndarray, kind: int, slope: float) -> np.ndarray:
    """Compiled forward of every activation (references: :mod:`vaelayer_np.core.activations`); ``kind`` picks one."""
    out = np.empty_like(x)
    flat_x, flat_o = x.reshape(-1), out.reshape(-1)
    for i in range(flat_x.size):
        v = flat_x[i]
        if kind == 0:
            flat_o[i] = 0.0 if v <= 0 else v  # NaN stays NaN, as np.maximum(NaN, 0)
        elif kind == 1:
            flat_o[i] = slope * v if v <= 0 else v
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


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _act_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray, kind: int, slope: float) -> np.ndarray:
    """Compiled backward of every activation (references: the ``*_backward`` functions of
    :mod:`vaelayer_np.core.activations`)."""
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


def make_activation(name: str, slope: float = LEAKY_SLOPE) -> ActivationFn:
    """Kernels mirroring the activation ``name`` of :mod:`vaelayer_np.core.activations` (forward and backward)."""
    kind = _ACT_KIND[name]

    def forward(x: np.ndarray) -> np.ndarray:
        return _act_forward(np.ascontiguousarray(x), kind, slope)

    def backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return _act_backward(np.ascontiguousarray(dout), np.ascontiguousarray(x), np.ascontiguousarray(out),
                             kind, slope)

    return ActivationFn(name, forward, backward)


def make_ops() -> SimpleNamespace:
    """The ``numba`` backend's namespace (same names as the ``numpy`` one, see :mod:`.backend`)."""
    from ..core import ops

    return SimpleNamespace(
        name="numba",
        matmul=ops.matmul,                    # BLAS, as in the reference
        matmul_into=ops.matmul_into,          # BLAS into a kept buffer, as in the reference
        mse_value_and_grad=mse_value_and_grad,
        reparameterize=ops.reparameterize,    # NumPy's SIMD exp beats a scalar-libm loop: the reference itself
        kl_diag_gaussian=kl_diag_gaussian,
        latent_backward=latent_backward,
        adam_update=adam_update,
        cosine_embedding=cosine_embedding,
        cosine_embedding_matrix=cosine_embedding_matrix,
        softmax_cross_entropy=softmax_cross_entropy,
        activation=make_activation,
    )


# ----------------------------------------------------------------------------- memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_memory_kept: list[Any] = []


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory for reuse instead of returning it to the system.

    By default glibc gives large freed blocks back (``munmap``, or a trim of the heap's top)
    and a later allocation of the same size takes fresh pages, each costing a page fault
    (measured 1,000-4,400 per training step, up to half of the step's time). With the trim
    threshold at 1 GiB and ``mmap`` kept for blocks of 32 MiB or more, the temporaries of one
    step reuse the pages of the previous one. Called once by the layers' training path;
    does nothing where the C library is not glibc. Returns True if the settings were applied.
    """
    if _memory_kept:
        return _memory_kept[0]
    applied = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None:
            applied = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
    except OSError:
        applied = False
    _memory_kept.append(applied)
    return applied
