"""vaelayer_np.analysis.diagnostics: each diagnostic on constructed cases whose answer is known."""
import numpy as np
import pytest

from vaelayer_np.analysis import diagnostics as dg
from vaelayer_np.core.network import Network
from vaelayer_np.core.ops import kl_diag_gaussian


def test_kl_per_unit_known_values():
    n = 4
    mu = np.zeros((n, 3))
    log_var = np.zeros((n, 3))
    mu[:, 1] = 2.0                       # KL = mu^2 / 2 = 2
    log_var[:, 2] = np.log(0.25)         # KL = 0.5 * (s2 - 1 - log s2) = 0.5 * (0.25 - 1 + log 4)
    got = dg.kl_per_unit(mu, log_var)
    np.testing.assert_allclose(got, [0.0, 2.0, 0.5 * (0.25 - 1 + np.log(4.0))], rtol=1e-12, atol=1e-15)


def test_kl_per_unit_averages_over_data_and_sums_to_the_layer_kl(rng):
    mu = rng.standard_normal((7, 5))
    log_var = rng.standard_normal((7, 5))
    got = dg.kl_per_unit(mu, log_var)
    assert got.shape == (5,) and np.all(got >= 0)
    np.testing.assert_allclose(got.sum(), kl_diag_gaussian(mu, log_var)[0], rtol=1e-12)
    # one example with mu = 3 among three at 0: the unit's average is 9/2 / 4
    mu1 = np.zeros((4, 1))
    mu1[0] = 3.0
    np.testing.assert_allclose(dg.kl_per_unit(mu1, np.zeros((4, 1))), [4.5 / 4])


def test_active_units_threshold_on_the_variance_of_the_means():
    signs = np.array([1.0, -1.0, 1.0, -1.0])[:, None]
    mu = np.hstack([np.full((4, 1), 5.0),   # constant: variance 0, inactive however large
                    0.2 * signs,            # variance 0.04 > 0.01: active
                    0.05 * signs])          # variance 0.0025 < 0.01: inactive
    np.testing.assert_array_equal(dg.active_units(mu), [False, True, False])
    np.testing.assert_array_equal(dg.active_units(mu, threshold=0.001), [False, True, True])
    np.testing.assert_allclose(dg.mean_variance(mu), [0.0, 0.04, 0.0025])


def test_noise_and_signal_known_values():
    mu = np.array([[1.0, -1.0], [-1.0, 1.0]])
    log_var = np.full((2, 2), np.log(0.25))
    r = dg.noise_and_signal(mu, log_var)
    assert r["noise_std"] == pytest.approx(0.5)
    assert r["mean_spread"] == pytest.approx(1.0)
    assert r["rms_mean"] == pytest.approx(1.0)
    assert r["signal_to_noise"] == pytest.approx(2.0)
    # shifting every mean moves the RMS, not the spread
    r2 = dg.noise_and_signal(mu + 3.0, log_var)
    assert r2["mean_spread"] == pytest.approx(1.0) and r2["rms_mean"] > 3.0


def test_layer_diagnostics_finds_a_collapsed_layer():
    net = Network(6, (4, 3), 2, seed=0, encoder_hidden=0, dtype=np.float64)
    layer = net.vae_layers[0]
    for name in ("W_mu", "b_mu", "W_lv", "b_lv"):   # the encoder outputs the prior for every input
        layer.params[name][...] = 0.0
    x = np.random.default_rng(0).random((20, 6))
    report = dg.layer_diagnostics(net, x)
    assert len(report) == 2
    first = report[0]
    assert first["kl"] == pytest.approx(0.0, abs=1e-12)
    assert first["n_collapsed"] == 4 and first["n_active"] == 0 and first["n_units"] == 4
    assert first["noise_std"] == pytest.approx(1.0) and first["mean_spread"] == pytest.approx(0.0)
    # the second layer's KL is the layer's own KL term on the mean path
    _, caches, _, _ = net.forward(x, sample=False)
    assert report[1]["kl"] == pytest.approx(caches[1]["kl"], rel=1e-10)
    assert "collapsed" in dg.format_diagnostics(report)


def test_encode_layers_training_path_differs_from_the_mean_path():
    net = Network(6, (4, 3), 2, seed=0, encoder_hidden=0, pass_on="sample", dtype=np.float64)
    x = np.random.default_rng(1).random((10, 6))
    mean_path = dg.encode_layers(net, x)
    train_path = dg.encode_layers(net, x, sample=True, rng=0)
    np.testing.assert_allclose(mean_path[0][0], train_path[0][0])          # layer 1 sees the data either way
    assert not np.allclose(mean_path[1][0], train_path[1][0])              # layer 2 sees act(z) in training


@pytest.mark.slow  # imports scikit-learn's logistic regression (seconds on a busy machine)
def test_probe_accuracy_on_separable_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    f = rng.standard_normal((40, 3)) * 0.1
    f[:, 0] += 3 * y
    assert dg.probe_accuracy(f, y, f, y) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: dg.kl_per_unit(np.zeros((3, 2)), np.zeros((3, 3))), "log_var"),
    (lambda: dg.kl_per_unit(np.zeros(3), np.zeros(3)), "mu"),
    (lambda: dg.active_units(np.zeros((1, 2))), "at least 2"),
    (lambda: dg.active_units(np.zeros((3, 2)), threshold=-1), "threshold"),
    (lambda: dg.noise_and_signal(np.zeros((3, 2)), np.full((3, 2), np.nan)), "NaN"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
