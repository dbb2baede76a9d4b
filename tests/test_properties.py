"""Mathematical properties of the losses and the VAE layer."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vaelayer_np.core import losses
from vaelayer_np.core.layers import Dense, OutputLayer, VAELayer

finite = st.floats(-50, 50, allow_nan=False, width=64)


@given(mu=arrays(np.float64, (3, 4), elements=finite), lv=arrays(np.float64, (3, 4), elements=st.floats(-10, 10)))
def test_kl_is_non_negative(mu, lv):
    assert losses.kl_diag_gaussian(mu, lv)[0] >= 0


def test_kl_is_zero_exactly_at_the_prior():
    value, (d_mu, d_lv) = losses.kl_diag_gaussian(np.zeros((5, 3)), np.zeros((5, 3)))
    assert value == 0.0 and not d_mu.any() and not d_lv.any()


@given(a=arrays(np.float64, (4, 3), elements=finite), b=arrays(np.float64, (4, 3), elements=finite))
def test_cosine_similarity_in_range(a, b):
    cos = losses.cosine_similarity(a, b)
    assert np.all(cos >= -1 - 1e-12) and np.all(cos <= 1 + 1e-12)


def test_cosine_with_zero_vectors_is_finite():
    a = np.zeros((2, 3))
    b = np.array([[1.0, 2, 3], [0, 0, 0]])
    value, (da, db) = losses.cosine_embedding(a, b, np.array([1.0, -1.0]))
    assert np.isfinite(value) and np.isfinite(da).all() and np.isfinite(db).all()
    assert np.allclose(losses.cosine_similarity(a, b), 0)


def test_cosine_embedding_values():
    a = np.array([[1.0, 0], [1, 0], [1, 0]])
    b = np.array([[1.0, 0], [-1, 0], [0, 1]])
    assert losses.cosine_embedding(a, b, np.array([1.0, 1, 1]))[0] == pytest.approx((0 + 2 + 1) / 3)
    assert losses.cosine_embedding(a, b, np.array([-1.0, -1, -1]))[0] == pytest.approx(1 / 3)
    assert losses.cosine_embedding(a, b, np.array([-1.0, -1, -1]), margin=-0.5)[0] == pytest.approx((1.5 + 0 + 0.5) / 3)


def test_zero_noise_sample_equals_mean(rng):
    layer = VAELayer(6, 4, rng=rng)
    x = rng.standard_normal((5, 6))
    _, cache = layer.forward(x, eps=np.zeros((5, 4)))
    assert np.array_equal(cache["z"], cache["mu"])
    _, cache_eval = layer.forward(x, sample=False)
    assert np.array_equal(cache_eval["z"], cache_eval["mu"]) and cache_eval["eps"] is None


def test_samples_have_mean_mu_and_variance_exp_log_var(rng):
    layer = VAELayer(3, 2, log_var_bias_init=-0.5, rng=rng)
    x = np.repeat(rng.standard_normal((1, 3)), 200_000, axis=0)
    _, cache = layer.forward(x, rng=np.random.default_rng(7))
    mu, var = cache["mu"][0], np.exp(cache["log_var"][0])
    z = cache["z"]
    se_mean = np.sqrt(var / len(z))
    assert np.all(np.abs(z.mean(0) - mu) < 5 * se_mean)
    assert np.allclose(z.var(0), var, rtol=0.02)


def test_softmax_rows_sum_to_one(rng):
    p = losses.softmax(rng.standard_normal((7, 5)) * 100)
    assert np.allclose(p.sum(1), 1) and (p >= 0).all()


@pytest.mark.parametrize("scale", [1e3, -1e3])
def test_losses_are_finite_at_extreme_inputs(scale):
    logits = np.array([[scale, -scale, 0.0], [0.0, scale, -scale]])
    labels = np.array([1, 2])
    for fn in (losses.softmax_cross_entropy, losses.bce_one_hot):
        value, (g,) = fn(logits, labels)
        assert np.isfinite(value) and np.isfinite(g).all()
    value, (g, gt) = losses.bce_with_logits(logits, np.full_like(logits, 0.5))
    assert np.isfinite(value) and np.isfinite(g).all()
    assert losses.bce_with_logits(np.array([[1000.0]]), np.array([[1.0]]))[0] == pytest.approx(0.0, abs=1e-12)
    assert losses.bce_with_logits(np.array([[-1000.0]]), np.array([[1.0]]))[0] == pytest.approx(1000.0)
    value, grads = losses.kl_diag_gaussian(np.full((2, 2), scale), np.full((2, 2), 6.0))
    assert np.isfinite(value)


def test_log_var_bound_keeps_the_sampler_finite(rng):
    layer = VAELayer(4, 3, rng=rng)
    out, cache = layer.forward(rng.standard_normal((3, 4)) * 1e4)
    assert np.all(np.abs(cache["log_var"]) <= 6.0) and np.isfinite(out).all()


def test_backward_twice_gives_the_same_grads(rng):
    for layer, x in ((Dense(5, 3, rng=rng), rng.standard_normal((4, 5))),
                     (OutputLayer(5, 3, rng=rng), rng.standard_normal((4, 5)))):
        out, cache = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        first, second = layer.backward(dout, cache), layer.backward(dout, cache)
        assert np.array_equal(first[0], second[0])
        assert all(np.array_equal(first[1][k], second[1][k]) for k in first[1])
    layer = VAELayer(5, 3, rng=rng)
    out, cache = layer.forward(rng.standard_normal((4, 5)), rng=1)
    dz = rng.standard_normal(out.shape)
    g1, g2 = layer.backward(None, cache, dz=dz)[1], layer.backward(None, cache, dz=dz)[1]
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert set(g1) == set(layer.params)


def test_forward_is_seeded(rng):
    layer = VAELayer(5, 3, rng=0)
    x = rng.standard_normal((4, 5))
    assert np.array_equal(layer.forward(x, rng=3)[1]["z"], layer.forward(x, rng=3)[1]["z"])
    assert not np.array_equal(layer.forward(x, rng=3)[1]["z"], layer.forward(x, rng=4)[1]["z"])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_negative_pair_exactly_at_the_margin_gets_no_gradient(backend):
    """docs/maths.md: at an exact tie cos = m of a negative pair the gradient used is 0 (both backends, both losses)."""
    from vaelayer_np.fast.backend import get_ops

    run = get_ops(backend)
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 2.0]])  # orthogonal rows: cos is exactly 0, the margin below
    value, (d_a, d_b) = run.cosine_embedding(a, b, np.array([-1.0, -1.0]), margin=0.0)
    assert value == 0.0 and not d_a.any() and not d_b.any()
    value, (d_a, d_b) = run.cosine_embedding_matrix(a, b, -np.ones((2, 2)), margin=0.0)
    assert value == 0.0 and not d_a.any() and not d_b.any()
    # just above the tie the pair pulls (the check could fail)
    _, (d_a, _) = run.cosine_embedding(a, b, np.array([-1.0, -1.0]), margin=-1e-9)
    assert d_a.any()
