"""Every compiled kernel gives the same bits wherever its arrays sit in memory.

A compiled loop may be vectorised differently depending on where its arrays lie (LLVM checks at run time
whether an output is close to an input and may then take its plain loop, which adds in another order).
The kernels that sum are compiled so that their additions keep the code's order (``kernels.ORDERED``);
these tests place every input and output buffer of every kernel at many offsets, next to each other and
apart, and require identical results, in float32 and float64, for short and long arrays.
"""
import numpy as np
import pytest

from vaelayer_np.fast import kernels as K

SHAPES = [(1, 3), (1, 24), (3, 7), (5, 33), (16, 40)]
DTYPES = [np.float32, np.float64]
# (offset of the first array in elements, gap between consecutive arrays in elements)
PLACEMENTS = [(o, g) for o in (0, 1, 2, 3, 5, 8, 13) for g in (0, 1, 3, 8, 17)]


def _placed(arrays, offset, gap):
    """Copies of ``arrays`` (same dtype) laid out one after the other in one buffer: the first at ``offset``
    elements from the buffer's start, ``gap`` elements between consecutive arrays. Returns the views."""
    dtype = arrays[0].dtype
    total = offset + sum(a.size + gap for a in arrays)
    buf = np.full(total + 64, np.nan, dtype=dtype)
    views, at = [], offset
    for a in arrays:
        v = buf[at:at + a.size].reshape(a.shape)
        v[...] = a
        views.append(v)
        at += a.size + gap
    return views


def _bits(result):
    """The bytes of every array and float in a kernel's (nested) result."""
    if isinstance(result, (tuple, list)):
        return b"".join(_bits(r) for r in result)
    return np.asarray(result).tobytes()


def _cases(shape, dtype, rng):
    n, k = shape
    a, b = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    log_var = (0.5 * rng.standard_normal(shape)).astype(dtype)
    pm1 = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(dtype)
    labels = rng.integers(0, k, n)
    cos = np.clip(rng.standard_normal((n, n)), -1, 1).astype(dtype)
    targets = np.where(rng.random((n, n)) < 0.4, 1, -1)
    inv = (1.0 + rng.random(n)).astype(dtype)
    g = rng.standard_normal(n * k).astype(dtype)
    m = rng.standard_normal(n * k).astype(dtype)
    v = rng.random(n * k).astype(dtype)
    w = rng.standard_normal(n * k).astype(dtype)
    s = dtype(1)
    return {
        # name: (arrays to place, function of the placed arrays -> result)
        "mse": ([a, b, np.zeros_like(a)], lambda p, t, d: (K._mse_value_and_grad(p, t, d), d)),
        "kl": ([a, log_var, np.exp(log_var)], K._kl_diag_gaussian),
        "cosine": ([a, b, pm1], lambda x, y, t: K._cosine_embedding(x, y, t, 0.1, 1e-8)),
        "cosine_matrix": ([cos, inv, inv.copy()],
                          lambda c, ia, ib: K._cosine_matrix_terms(c, targets, ia, ib, 0.1, True)),
        "softmax": ([a], lambda x: K._softmax_xent(x, labels)),
        "latent_backward": ([a, b, np.exp(0.5 * log_var), a * 0.1, b * 0.1, log_var],
                            lambda dz, eps, std, dmu, dlv, lv: K._latent_backward(dz, eps, std, dmu, dlv, 0.01, lv,
                                                                                  6.0, True)),
        "adam": ([w, g, m, v], lambda w_, g_, m_, v_: (K._adam_update(w_, g_, m_, v_, s * 0.9, s * 0.1, s * 0.999,
                                                                      s * 0.001, s * 0.01, s * 1e-7), w_, m_, v_)),
        "act_forward": ([a], lambda x: [K._act_forward(x, kind, 0.01) for kind in range(5)]),
        "act_backward": ([a, b, np.tanh(a)], lambda d, x, o: [K._act_backward(d, x, o, kind, 0.01)
                                                             for kind in range(5)]),
    }


def _assert_placement_free(arrays, fn, name):
    results = []
    for offset, gap in PLACEMENTS:
        results.append(_bits(fn(*_placed(arrays, offset, gap))))
    differing = [p for p, r in zip(PLACEMENTS, results) if r != results[0]]
    assert not differing, f"{name}: the result depends on where the arrays sit (offset, gap): {differing[:5]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_kernel_gives_the_same_bits_wherever_its_arrays_sit(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    for name, (arrays, fn) in _cases(shape, dtype, rng).items():
        _assert_placement_free(arrays, fn, name)


def test_the_mse_example_that_once_depended_on_its_output_buffer():
    """The case that showed it: float64 arrays of 24 elements, the output right after an input, or 8 further."""
    rng = np.random.default_rng(2)
    p, q = rng.standard_normal((1, 24)), rng.standard_normal((1, 24))
    buf = np.empty(200)
    P, Q = buf[8:32].reshape(1, 24), buf[35:59].reshape(1, 24)
    P[...], Q[...] = p, q
    values = {K._mse_value_and_grad(P, Q, buf[59 + g:83 + g].reshape(1, 24)) for g in range(0, 40)}
    assert len(values) == 1


def test_the_placement_check_catches_a_result_that_depends_on_an_address():
    """A planted kernel whose last bit follows the output's address: the check above must fail on it."""
    def planted(p, t, d):
        d[...] = p - t
        return float(np.sum(d * d)) * (1.0 + np.finfo(float).eps * (d.ctypes.data % 64 != 0))

    a, b = np.ones((2, 5)), np.zeros((2, 5))
    with pytest.raises(AssertionError, match="depends on where"):
        _assert_placement_free([a, b, np.zeros_like(a)], planted, "planted")
