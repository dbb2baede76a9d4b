"""The numba backend against the NumPy reference, kernel by kernel and for a whole epoch.

Also passes with NUMBA_DISABLE_JIT=1 (the kernels then run as plain Python).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaelayer_np.core import losses, ops
from vaelayer_np.core.activations import ACTIVATIONS
from vaelayer_np.fast import kernels as _kernels
from vaelayer_np.fast.backend import get_ops
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import load_dataset
from vaelayer_np.run.trainer import Trainer

NUMBA = get_ops("numba")

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}
dtypes = st.sampled_from([np.float64, np.float32])
shapes = st.tuples(st.integers(1, 9), st.integers(1, 12))
seeds = st.integers(0, 2**31 - 1)


def close(a, b, dtype):
    assert np.isfinite(a).all() and np.isfinite(b).all(), "a NaN or inf on either side is never 'close'"
    np.testing.assert_allclose(a, b, **TOL[dtype])


@given(shape=shapes, dtype=dtypes, seed=seeds, with_var=st.booleans())
def test_kl_diag_gaussian(shape, dtype, seed, with_var):
    rng = np.random.default_rng(seed)
    mu, log_var = (rng.standard_normal(shape).astype(dtype) * 2 for _ in range(2))
    var = np.exp(log_var) if with_var else None
    v_ref, g_ref = ops.kl_diag_gaussian(mu, log_var, var)
    v_got, g_got = _kernels.kl_diag_gaussian(mu, log_var, var)
    assert v_got == pytest.approx(v_ref, rel=TOL[dtype]["rtol"] * 10, abs=1e-5)
    for a, b in zip(g_ref, g_got):
        assert b.dtype == dtype
        close(b, a, dtype)


@given(shape=shapes, dtype=dtypes, seed=seeds, bound=st.sampled_from([None, 6.0, 2.0]), sample=st.booleans(),
       kl_weight=st.sampled_from([0.0, 0.7]))
def test_latent_backward(shape, dtype, seed, bound, sample, kl_weight):
    rng = np.random.default_rng(seed)
    mu, r, d_z = (rng.standard_normal(shape).astype(dtype) * 3 for _ in range(3))
    eps = rng.standard_normal(shape).astype(dtype) if sample else None
    log_var = ops.bound_log_var(r, bound)
    std, _ = ops.reparameterize(mu, log_var, eps)
    kl_grads = ops.kl_diag_gaussian(mu, log_var)[1]
    ref = ops.latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
    got = _kernels.latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
    for a, b in zip(ref, got):
        assert b.dtype == dtype
        close(b, a, dtype)


def test_backends_offer_the_same_operations_and_kernels_name_their_reference():
    """One namespace per backend with the same names; each kernel says which reference it mirrors."""
    from vaelayer_np.fast.backend import get_ops

    ref, fast = vars(get_ops("numpy")), vars(get_ops("numba"))
    assert set(ref) == set(fast)
    for name, fn in fast.items():
        if name == "name":
            continue
        if fn is ref[name]:  # the reference itself, used by both (BLAS matmul, NumPy exp)
            assert fn.__module__ == "vaelayer_np.core.ops"
            continue
        doc = fn.__doc__ or ""
        assert "mirroring" in doc and ("vaelayer_np.core.ops." in doc or "vaelayer_np.core.activations" in doc), name
    compiled = [v for k, v in vars(_kernels).items() if hasattr(v, "py_func") or type(v).__name__ == "CPUDispatcher"]
    for fn in compiled:
        assert fn.__doc__ and "reference" in fn.__doc__, fn


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_agree_on_non_finite_input(name):
    """NaN and inf go through both backends alike (a NaN is never turned into a number)."""
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -1.0, 2.0]])
    ref = ACTIVATIONS[name].forward(x)
    got = _kernels.make_activation(name).forward(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)])


@given(shape=shapes, dtype=dtypes, seed=seeds, margin=st.floats(-0.5, 0.5))
def test_cosine_embedding(shape, dtype, seed, margin):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    a[0] = 0  # a zero vector
    t = np.where(rng.random(shape[0]) < 0.5, 1.0, -1.0)
    v_ref, g_ref = losses.cosine_embedding(a, b, t, margin)
    v_got, g_got = NUMBA.cosine_embedding(a, b, t, margin)
    assert v_got == pytest.approx(v_ref, rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-6)
    for x, y in zip(g_ref, g_got):
        close(y, x, dtype)


@given(n=st.integers(1, 9), m=st.integers(1, 9), k=st.integers(1, 9), dtype=dtypes, seed=seeds,
       margin=st.floats(-0.5, 0.5), balanced=st.booleans())
def test_cosine_embedding_matrix(n, m, k, dtype, seed, margin, balanced):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((m, k)).astype(dtype)
    t = np.where(rng.random((n, m)) < 0.3, 1.0, -1.0)
    v_ref, g_ref = losses.cosine_embedding_matrix(a, b, t, margin, balanced=balanced)
    v_got, g_got = NUMBA.cosine_embedding_matrix(a, b, t, margin, balanced=balanced)
    assert v_got == pytest.approx(v_ref, rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-6)
    for x, y in zip(g_ref, g_got):
        assert y.dtype == dtype
        close(y, x, dtype)


@given(n=st.integers(1, 9), c=st.integers(2, 7), dtype=dtypes, seed=seeds, scale=st.sampled_from([1.0, 50.0]))
def test_softmax_cross_entropy(n, c, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * scale).astype(dtype)
    labels = rng.integers(0, c, n)
    v_ref, (g_ref,) = losses.softmax_cross_entropy(logits, labels)
    v_got, (g_got,) = NUMBA.softmax_cross_entropy(logits, labels)
    assert v_got == pytest.approx(v_ref, rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-6)
    close(g_got, g_ref, dtype)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=shapes, dtype=dtypes, seed=seeds)
def test_activations(name, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dout = (rng.standard_normal(shape).astype(dtype) * 4 for _ in range(2))
    ref, got = ACTIVATIONS[name], _kernels.make_activation(name)
    out_ref, out_got = ref.forward(x), got.forward(x)
    close(out_got, out_ref, dtype)
    close(got.backward(dout, x, out_got), ref.backward(dout, x, out_ref), dtype)


@given(shape=shapes, dtype=dtypes, seed=seeds)
def test_adam_update(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    w, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = rng.random(shape).astype(dtype)
    copies = [a.copy() for a in (w, m, v)]
    ops.adam_update(w, g, m, v, 0.9, 0.999, 1e-3, 1e-8)
    _kernels.adam_update(*copies[:1], g, *copies[1:], 0.9, 0.999, 1e-3, 1e-8)
    for a, b in zip((w, m, v), copies):
        close(b, a, dtype)


@given(shape=shapes, dtype=dtypes, seed=seeds)
def test_mse_value_and_grad(shape, dtype, seed):
    """Kernel, reference and the validated losses.mse agree; one difference gives value and gradient."""
    rng = np.random.default_rng(seed)
    pred, target = (rng.standard_normal(shape).astype(dtype) * 3 for _ in range(2))
    v_ref, d_ref = ops.mse_value_and_grad(pred, target)
    v_got, d_got = _kernels.mse_value_and_grad(pred, target)
    v_loss, (d_loss, _) = losses.mse(pred, target)
    assert v_ref == v_loss
    np.testing.assert_array_equal(d_ref, d_loss)
    assert v_got == pytest.approx(v_ref, rel=TOL[dtype]["rtol"] * 10, abs=1e-6)
    assert d_got.dtype == dtype
    close(d_got, d_ref, dtype)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_adam_one_flat_pass_equals_the_update_key_by_key(backend):
    """FlatAdam updates a layer's flat buffer in one pass, with the result of the reference Adam key by key;
    the moments keep their keys and shapes in state_dict()."""
    from vaelayer_np.core.layers import VAELayer
    from vaelayer_np.core.optim import Adam
    from vaelayer_np.fast.training import FastPath

    rng = np.random.default_rng(0)
    path = FastPath(backend)
    flat_layer = VAELayer(7, 3, encoder_hidden=5, rng=1)
    plain = {k: p.copy() for k, p in flat_layer.params.items()}
    opt_flat, opt_plain = path.make_adam(flat_layer, lr=1e-3), Adam(plain)
    assert {k: v.shape for k, v in opt_flat.state_dict().items()} == {k: v.shape for k, v in
                                                                      opt_plain.state_dict().items()}
    grad_views = path.prepare(flat_layer).grads
    for _ in range(3):
        grads = {k: rng.standard_normal(p.shape) for k, p in plain.items()}
        for k, g in grads.items():
            grad_views[k][...] = g
        opt_flat.step(grad_views)
        opt_plain.step(grads)
    for k in plain:
        np.testing.assert_allclose(flat_layer.params[k], plain[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt_flat.m[k], opt_plain.m[k], rtol=1e-12, atol=1e-14)
    # gradients from elsewhere take the reference's update, still correct
    grads = {k: np.ones(p.shape) for k, p in plain.items()}
    opt_flat.step(grads)
    opt_plain.step(grads)
    for k in plain:
        np.testing.assert_allclose(flat_layer.params[k], plain[k], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["iffcl", "backprop"])
def test_one_epoch_same_metrics_on_both_backends(method):
    ds = load_dataset("digits", limit=256)
    results = {}
    for backend in ("numpy", "numba"):
        path = {"numpy": "readable", "numba": "fast"}[backend]  # the fast path runs the numba kernels
        cfg = TrainConfig(dataset="digits", widths=(32, 16), method=method, path=path, epochs=1, seed=3)
        trainer = Trainer(cfg, ds.n_features, ds.n_classes)
        metrics = trainer.train_epoch(ds.x_train, ds.y_train)
        metrics.pop("seconds")
        results[backend] = (metrics, trainer.predict_proba(ds.x_test), trainer.net_a.vae_layers[0].params["W_mu"])
    for key, value in results["numpy"][0].items():
        assert results["numba"][0][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    np.testing.assert_allclose(results["numba"][1], results["numpy"][1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(results["numba"][2], results["numpy"][2], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_kernel_tests_pass_without_the_jit():
    """The kernels' Python source (what NUMBA_DISABLE_JIT=1 runs, and what a reader reads) is right too."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_DISABLE_JIT="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
           "not without_the_jit and not one_epoch"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _loop_option_faults(dispatchers):
    """The compiled loops whose options break what fast/kernels.py promises: serial (no ``parallel``, so no
    ``prange``: results do not depend on Numba's thread count) and ``nogil=True`` (the twins run at once)."""
    return sorted(name for name, d in dispatchers.items()
                  if d.targetoptions.get("parallel") or not d.targetoptions.get("nogil"))


def test_every_compiled_loop_is_serial_and_releases_the_gil():
    numba = pytest.importorskip("numba")
    from numba.core.registry import CPUDispatcher

    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    loops = {n: v for n, v in vars(_kernels).items() if isinstance(v, CPUDispatcher)}
    assert len(loops) >= 8, sorted(loops)
    assert _loop_option_faults(loops) == []
    planted = {"holds_the_gil": numba.njit(lambda x: x), "threaded": numba.njit(parallel=True, nogil=True)(lambda x: x)}
    assert _loop_option_faults(planted) == ["holds_the_gil", "threaded"]
