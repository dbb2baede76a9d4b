"""Every hand-written gradient against float64 central differences (tolerance 1e-7)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaelayer_np.core import losses
from vaelayer_np.core.activations import ACTIVATIONS
from vaelayer_np.core.gradcheck import (
    DEFAULT_STEP,
    DEFAULT_TOL,
    RESOLUTION_LIMIT,
    check_gradients,
    check_layer,
    check_loss,
    check_network,
    format_table,
    generic_point,
    numerical_gradient,
    relative_error,
    run_all,
    verdict,
)
from vaelayer_np.core.layers import Activation, Dense, OutputLayer, VAELayer

dims = st.integers(1, 6)
batch = st.integers(1, 5)  # batch 1 included
seeds = st.integers(0, 2**31 - 1)


def assert_all_pass(results):
    bad = [r for r in results if not r.passed]
    assert not bad, "\n" + format_table(results)


@given(n=batch, d=dims, k=dims, seed=seeds)
def test_dense(n, d, k, seed):
    rng = np.random.default_rng(seed)
    assert_all_pass(check_layer(Dense(d, k, rng=rng), rng.standard_normal((n, d)), rng))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(n=batch, d=dims, seed=seeds)
def test_activations(name, n, d, seed):
    rng = np.random.default_rng(seed)
    assert_all_pass(check_layer(Activation(name), rng.standard_normal((n, d)), rng))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("pass_on", ["sample", "mean"])
@given(n=batch, d=dims, k=dims, seed=seeds, beta=st.floats(0.0, 2.0))
def test_vae_layer(activation, pass_on, n, d, k, seed, beta):
    rng = np.random.default_rng(seed)
    layer = VAELayer(d, k, activation=activation, beta=beta, pass_on=pass_on, log_var_bias_init=-1.0,
                     encoder_hidden=0, rng=rng)
    assert_all_pass(check_layer(layer, rng.standard_normal((n, d)), rng))


@given(n=batch, d=dims, k=dims, seed=seeds)
def test_vae_layer_bce_unbounded_and_eval(n, d, k, seed):
    rng = np.random.default_rng(seed)
    for act in ("relu", "tanh"):
        for pass_on in ("sample", "mean"):
            layer = VAELayer(d, k, activation=act, encoder_hidden=k + 1, beta=0.3, log_var_bias_init=-1.0,
                             pass_on=pass_on, rng=rng)
            assert_all_pass(check_layer(generic_point(layer, rng), rng.standard_normal((n, d)), rng))
    rng = np.random.default_rng(seed)
    layer = VAELayer(d, k, recon="bce", beta=0.3, encoder_hidden=0, pass_on="sample", rng=rng)
    assert_all_pass(check_layer(layer, rng.uniform(0, 1, (n, d)), rng))
    layer = VAELayer(d, k, log_var_bound=None, beta=0.3, log_var_bias_init=-1.0, encoder_hidden=0, rng=rng)
    assert_all_pass(check_layer(generic_point(layer, rng), rng.standard_normal((n, d)), rng))
    layer = VAELayer(d, k, beta=0.3, log_var_bias_init=-1.0, encoder_hidden=0, rng=rng)
    assert_all_pass(check_layer(generic_point(layer, rng), rng.standard_normal((n, d)), rng, sample=False))


@pytest.mark.parametrize("loss", ["softmax", "bce"])
@given(n=batch, d=dims, c=st.integers(2, 5), seed=seeds)
def test_output_layer(loss, n, d, c, seed):
    rng = np.random.default_rng(seed)
    assert_all_pass(check_layer(OutputLayer(d, c, loss=loss, rng=rng), rng.standard_normal((n, d)), rng))


@given(n=batch, d=dims, seed=seeds)
def test_elementwise_losses(n, d, seed):
    rng = np.random.default_rng(seed)
    assert_all_pass(check_loss("mse", losses.mse, {"pred": rng.standard_normal((n, d)),
                                                   "target": rng.standard_normal((n, d))}, rng=rng))
    assert_all_pass(check_loss("bce", losses.bce_with_logits, {"logits": 3 * rng.standard_normal((n, d)),
                                                               "target": rng.uniform(0, 1, (n, d))}, rng=rng))
    assert_all_pass(check_loss("kl", losses.kl_diag_gaussian, {"mu": rng.standard_normal((n, d)),
                                                               "log_var": rng.standard_normal((n, d))}, rng=rng))


# k >= 2: in one dimension the cosine is a constant +-1 whose gradient is ~eps, numerical noise only.
@given(n=batch, k=st.integers(2, 6), c=st.integers(2, 6), seed=seeds, margin=st.floats(-0.9, 0.9))
def test_cosine_and_classification_losses(n, k, c, seed, margin):
    rng = np.random.default_rng(seed)
    t = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    assert_all_pass(check_loss("cos", losses.cosine_embedding, {"a": rng.standard_normal((n, k)),
                                                                "b": rng.standard_normal((n, k))}, (t,),
                               rng=rng, margin=margin))
    tm = np.where(rng.random((n, n + 1)) < 0.5, 1.0, -1.0)
    for balanced in (True, False):
        assert_all_pass(check_loss("cosm", losses.cosine_embedding_matrix,
                                   {"a": rng.standard_normal((n, k)), "b": rng.standard_normal((n + 1, k))}, (tm,),
                                   rng=rng, margin=margin, balanced=balanced))
    labels = rng.integers(0, c, n)
    assert_all_pass(check_loss("ce", losses.softmax_cross_entropy, {"logits": 2 * rng.standard_normal((n, c))},
                               (labels,), rng=rng))
    assert_all_pass(check_loss("bce1h", losses.bce_one_hot, {"logits": 2 * rng.standard_normal((n, c))},
                               (labels,), rng=rng))


def test_full_sweep_passes():
    results = run_all(seed=3)
    assert len(results) > 80
    assert_all_pass(results)
    assert any(r.name.startswith("Network[backprop") for r in results)


def test_checker_catches_a_planted_wrong_gradient():
    """A Dense layer whose dW misses a factor: the checker must report FAIL for W only."""
    rng = np.random.default_rng(0)

    class BrokenDense(Dense):
        def backward(self, dout, cache, need_dx=True):
            dx, grads = super().backward(dout, cache, need_dx)
            grads["W"] = grads["W"] * 1.001  # a 0.1% error
            return dx, grads

    results = {r.tensor: r for r in check_layer(BrokenDense(4, 3, rng=rng), rng.standard_normal((5, 4)), rng)}
    assert not results["W"].passed and results["W"].max_rel_error > 1e-4
    assert results["b"].passed and results["x"].passed


def test_checker_catches_a_wrong_kl_gradient():
    """Planted bug: the KL gradient uses the log-variance where it needs the variance exp(log_var)."""
    rng = np.random.default_rng(1)
    mu, lv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))

    def wrong_kl(mu, log_var):
        value, (d_mu, _) = losses.kl_diag_gaussian(mu, log_var)
        return value, (d_mu, (log_var - 1) * 0.5 / mu.shape[0])

    assert not all(r.passed for r in check_loss("kl", wrong_kl, {"mu": mu, "log_var": lv}, rng=rng))


def test_planted_kl_bug_in_the_layers_own_path_is_caught(monkeypatch):
    """The same planted bug, put into the KL function the VAE layer actually runs.

    The layer takes its KL and its gradient from :func:`vaelayer_np.core.ops.kl_diag_gaussian`: the
    check of the layer must report the log-variance head as FAIL, and pass again once the bug is
    removed. (The fast path's kernel is compared with the layer in tests/test_speed_equivalence.py.)
    """
    from vaelayer_np.core import ops

    right = ops.kl_diag_gaussian

    def wrong(mu, log_var, var=None):
        value, (d_mu, _) = right(mu, log_var, var)
        return value, (d_mu, (log_var - 1) * (0.5 / mu.shape[0]))  # log-variance where the variance belongs

    def check():
        rng = np.random.default_rng(5)
        layer = VAELayer(5, 4, beta=1.0, encoder_hidden=0, log_var_bias_init=-1.0, rng=rng)
        return {r.tensor: r for r in check_layer(layer, rng.standard_normal((3, 5)), rng)}

    assert check()["W_lv"].passed and check()["b_lv"].passed
    monkeypatch.setattr(ops, "kl_diag_gaussian", wrong)
    results = check()
    assert results["W_lv"].status == "FAIL" and results["b_lv"].status == "FAIL"
    assert results["W_mu"].passed and results["W_dec"].passed
    monkeypatch.setattr(ops, "kl_diag_gaussian", right)
    assert check()["W_lv"].passed


def _cubic_problem(offset, curvature, size, seed=0):
    """f(w) = offset + g.w + curvature * sum(w^3), with its exact gradient.

    The central difference of w^3 is 3 w^2 + h^2 (exactly, in real arithmetic), so the differences at
    steps h and h/4 disagree by curvature * h^2 * 15/16 on every element: the measured resolution is
    set by these numbers, not by one machine's rounding (no BLAS call is involved, and the rounding
    of the float64 sums is far below the planted disagreement).
    """
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 1.0, 6) * rng.choice([-1.0, 1.0], 6)
    w = rng.uniform(-size, size, 6)

    def f():
        return float(offset + np.dot(g, w) + curvature * np.sum(w ** 3))

    return f, w, g + 3 * curvature * w ** 2


def test_pass_rule_uses_the_measured_resolution():
    """A disagreement within the differences' own resolution passes; beyond it, FAIL; too coarse: unresolved.

    Built from controlled numbers: the curvature term makes the finite differences' truncation error
    (curvature * h^2) larger than the tolerance but smaller than their measured resolution.
    """
    h = DEFAULT_STEP
    # resolution about 10 * 6400 * h^2 * 15/16 = 6e-6 (relative to a gradient scale near 1): fine enough to judge
    f, w, exact = _cubic_problem(offset=1e3, curvature=6400.0, size=1e-3)
    scale = np.abs(exact).max()
    row = check_gradients("cubic", f, {"w": w}, {"w": exact})[0]
    expected_resolution = 10 * 6400.0 * h * h * 15 / 16 / scale
    assert row.kinks == 0
    assert 0.8 * expected_resolution < row.resolution < 1.2 * expected_resolution
    assert DEFAULT_TOL < row.max_rel_error < row.resolution <= RESOLUTION_LIMIT
    assert row.status == "pass"
    # the same resolution, an analytic gradient off by far more than it: FAIL
    wrong = exact.copy()
    wrong[2] += 1e-4 * scale
    assert check_gradients("cubic", f, {"w": w}, {"w": wrong})[0].status == "FAIL"
    # resolution about 1e-3, coarser than RESOLUTION_LIMIT: an error inside it cannot be judged
    f, w, exact = _cubic_problem(offset=1e6, curvature=1e6, size=1e-4)
    row = check_gradients("cubic", f, {"w": w}, {"w": exact})[0]
    assert row.resolution > RESOLUTION_LIMIT and DEFAULT_TOL < row.max_rel_error <= row.resolution
    assert row.status == "unresolved"
    assert verdict(2.5e-7, 1e-8) == "FAIL"
    assert verdict(2.5e-7, 6e-6) == "pass"
    assert verdict(2e-4, 1e-3) == "unresolved"
    assert verdict(1e-2, 1e-3) == "FAIL"
    assert verdict(1e-9, 1.0) == "pass"


def test_random_upstream_gradient_catches_transposed_dx():
    """An all-ones upstream gradient could hide a wrong dx; the random one does not."""
    rng = np.random.default_rng(2)

    class SwappedTanh(Activation):
        def backward(self, dout, cache, need_dx=True):
            x, out = cache
            return (1 - out * out) * dout[::-1], {}  # rows of dout in the wrong order

    results = check_layer(SwappedTanh("tanh"), rng.standard_normal((4, 3)), rng)
    assert not results[0].passed


def test_relative_error_and_numerical_gradient():
    x = np.array([1.0, -2.0, 3.0])
    g, kinks, uncertainty = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    assert relative_error(g, 3 * x ** 2) < 1e-8 and kinks == 0 and uncertainty.max() < 1e-8
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda: 0.0, np.zeros(3, np.float32))


def test_kink_is_remeasured_not_skipped():
    """A step across the ReLU kink is measured again with a smaller step; the result still passes."""
    x = np.array([3e-6, -0.5, 0.7])
    g, kinks, _ = numerical_gradient(lambda: float(np.sum(np.maximum(x, 0))), x)
    assert kinks == 1
    assert relative_error(g, (x > 0).astype(float)) < DEFAULT_TOL


def test_check_gradients_requires_every_tensor():
    x = np.zeros(2)
    with pytest.raises(ValueError, match="no gradient for tensor 'x'"):
        check_gradients("f", lambda: 0.0, {"x": x}, {})


@given(n=batch, d=dims, widths=st.lists(st.integers(1, 5), min_size=1, max_size=3), hidden=st.sampled_from([0, 3]),
       readout=st.sampled_from(["last", "all"]), weight=st.sampled_from([0.0, 0.5]),
       pass_on=st.sampled_from(["sample", "mean"]), seed=seeds)
def test_backprop_network_gradients(n, d, widths, hidden, readout, weight, pass_on, seed):
    """The baseline's end-to-end gradients: every layer's dx is used, so every dx is checked here."""
    from vaelayer_np.core.network import Network

    rng = np.random.default_rng(seed)
    net = Network(d, widths, 3, readout=readout, seed=seed, beta=0.3, log_var_bias_init=0.0, encoder_hidden=hidden,
                  activation="tanh", pass_on=pass_on, dtype=np.float64)
    # Unit-scale classifier weights: with the small default initialisation the gradient reaching a
    # deep width-1 layer can be 1e-6 of the loss, below what float64 differences resolve at h = 1e-5.
    net.output.params["W"][...] = rng.standard_normal(net.output.params["W"].shape)
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, 3, n)
    eps = [rng.standard_normal((n, w)) for w in widths]
    assert_all_pass(check_network(net, x, labels, eps, weight))


def test_large_loss_next_to_small_gradients_is_not_mistaken_for_kinks():
    """|f| = 1000 beside O(1) gradients: rounding in the differences is not a kink (re-measuring it with a
    1000x smaller step would only make it worse), so a correct gradient passes."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    results = check_gradients("big", lambda: 1000 + float(np.sum(g * np.sin(x))), {"x": x}, {"x": g * np.cos(x)})
    assert results[0].passed and results[0].kinks == 0, results


def test_the_report_states_the_tolerance_and_step_that_were_used():
    rng = np.random.default_rng(0)
    rows = check_layer(Dense(3, 2, rng=0), rng.standard_normal((4, 3)), rng, h=1e-4, tol=1e-6)
    footer = format_table(rows).splitlines()[-1]
    assert "tolerance 1e-06" in footer and "h=0.0001" in footer


def test_the_local_step_check_catches_a_wrong_head_gradient(monkeypatch):
    """The IFFCL local-loss check FAILs when a head sends twice its gradient into its layer, and names the layer."""
    from vaelayer_np.core import iffcl
    from vaelayer_np.core.gradcheck import check_local_step
    from vaelayer_np.core.settings import IFFCLSettings

    def problem():
        rng = np.random.default_rng(3)
        layers = [generic_point(VAELayer(5, 4, activation="tanh", beta=0.5, encoder_hidden=3, log_var_bias_init=-1.0,
                                         rng=rng), rng) for _ in range(2)]
        heads = tuple(generic_point(OutputLayer(4, 3, rng=rng), rng) for _ in range(2))
        labels = rng.integers(0, 3, 6), rng.integers(0, 3, 6)
        return dict(layer_a=layers[0], layer_b=layers[1], x_a=rng.standard_normal((6, 5)),
                    x_b=rng.standard_normal((6, 5)), labels_a=labels[0], labels_b=labels[1], heads=heads,
                    settings=IFFCLSettings(lam=0.5, margin=0.0, contrast="all_pairs", head_weight=0.9))

    assert all(r.passed for r in check_local_step(**problem()))
    right = iffcl.ReadablePath.head_backward

    def doubled(self, layer, d_logits, cache):
        dx, grads = right(self, layer, d_logits, cache)
        return 2 * dx, grads

    monkeypatch.setattr(iffcl.ReadablePath, "head_backward", doubled)
    rows = {r.tensor: r for r in check_local_step(**problem())}
    assert rows["A.W_mu"].status == "FAIL" and rows["B.W_mu"].status == "FAIL"
    assert rows["A.head.W"].passed and rows["A.W_dec"].passed  # the head itself and the decoder are right
