"""vaelayer_np.analysis.generation: decoding down the stack, reconstructions, samples, traversals."""
import numpy as np
import pytest

from vaelayer_np.analysis import generation as gen
from vaelayer_np.core.activations import sigmoid
from vaelayer_np.core.network import Network


def _net(**kw):
    kw.setdefault("encoder_hidden", 8)
    return Network(6, (4, 3), 2, seed=0, dtype=np.float64, **kw)


def test_decode_to_input_is_the_decoders_composed():
    net = _net()
    z = np.random.default_rng(0).standard_normal((5, 3))
    p1, p0 = net.vae_layers[1].params, net.vae_layers[0].params
    want = (z @ p1["W_dec"] + p1["b_dec"]) @ p0["W_dec"] + p0["b_dec"]
    np.testing.assert_allclose(gen.decode_to_input(net, 1, z), want, rtol=1e-12)
    z0 = z[:, :2] @ np.ones((2, 4))
    np.testing.assert_allclose(gen.decode_to_input(net, 0, z0), net.vae_layers[0].decode(z0))


def test_decode_to_input_applies_the_sigmoid_of_a_bce_first_layer():
    net = _net(recon="bce")
    z = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(gen.decode_to_input(net, 0, z), sigmoid(net.vae_layers[0].decode(z)))


def test_decoding_down_is_exact_for_the_identity_activation():
    """With act = identity, layer 2's reconstruction of its input IS a latent of layer 1."""
    net = _net(activation="identity", encoder_hidden=0)
    x = np.random.default_rng(2).random((5, 6))
    _, caches, _, _ = net.forward(x, sample=False)
    x_hat_1 = caches[1]["x_hat"]   # layer 2 reconstructs act(mu_1) = mu_1
    np.testing.assert_allclose(gen.reconstruct(net, x)[1], net.vae_layers[0].decode(x_hat_1), rtol=1e-12)


def test_reconstruct_layer_one_is_its_own_reconstruction():
    net = _net()
    x = np.random.default_rng(1).random((5, 6))
    _, caches, _, _ = net.forward(x, sample=False)
    recs = gen.reconstruct(net, x)
    assert [r.shape for r in recs] == [(5, 6), (5, 6)]
    np.testing.assert_allclose(recs[0], caches[0]["x_hat"], rtol=1e-12)


def test_fit_aggregate_posterior_known_values():
    mu = np.array([[-1.0, 2.0], [1.0, 2.0]])
    log_var = np.log(np.array([[0.5, 1.0], [0.5, 3.0]]))
    mean, std = gen.fit_aggregate_posterior(mu, log_var)
    np.testing.assert_allclose(mean, [0.0, 2.0])
    np.testing.assert_allclose(std, np.sqrt([1.0 + 0.5, 0.0 + 2.0]))


def test_sample_latents_draws_mean_plus_std_times_noise():
    mean, std = np.array([1.0, -2.0, 0.0]), np.array([0.5, 2.0, 0.0])
    z = gen.sample_latents(4, mean, std, rng=7)
    np.testing.assert_allclose(z, mean + std * np.random.default_rng(7).standard_normal((4, 3)))
    big = gen.sample_latents(20000, mean, std, rng=0)
    np.testing.assert_allclose(big.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(big.std(0), std, atol=0.05)


def test_sample_images_prior_and_aggregate():
    net = _net()
    x = np.random.default_rng(3).random((30, 6))
    prior = gen.sample_images(net, 1, 5, source="prior", rng=0)
    np.testing.assert_allclose(prior, gen.decode_to_input(net, 1, gen.sample_latents(5, np.zeros(3), np.ones(3), 0)))
    agg = gen.sample_images(net, 0, 5, source="aggregate", x=x, rng=0)
    assert agg.shape == (5, 6)
    with pytest.raises(ValueError, match="x: source='aggregate'"):
        gen.sample_images(net, 0, 5, source="aggregate")


def test_traverse_changes_only_the_chosen_unit():
    net = _net()
    x = np.random.default_rng(4).random(6)
    values = np.linspace(-2, 2, 5)
    imgs = gen.traverse(net, 1, x, unit=2, values=values)
    assert imgs.shape == (5, 6)
    mu = net.forward(x[None].astype(np.float64), sample=False)[1][1]["mu"]
    for i, v in enumerate(values):
        z = mu.copy()
        z[0, 2] = v
        np.testing.assert_allclose(imgs[i], gen.decode_to_input(net, 1, z)[0], rtol=1e-12)
    net.vae_layers[1].params["W_dec"][2] = 0.0   # a unit the decoder ignores changes nothing
    flat = gen.traverse(net, 1, x, unit=2, values=values)
    np.testing.assert_allclose(flat, np.repeat(flat[:1], 5, axis=0))


@pytest.mark.slow  # imports matplotlib (seconds on a busy machine)
def test_image_grid_draws_every_row():
    fig = gen.image_grid([np.zeros((3, 64)), np.ones((2, 64))], (8, 8), ["a", "b"], title="t")
    assert len(fig.axes) == 6
    import matplotlib.pyplot as plt
    plt.close(fig)


@pytest.mark.parametrize("call, message", [
    (lambda net: gen.decode_to_input(net, 2, np.zeros((1, 3))), "k: expected"),
    (lambda net: gen.decode_to_input(net, 1, np.zeros((1, 4))), "z: expected shape"),
    (lambda net: gen.traverse(net, 0, np.zeros(6), unit=4, values=np.zeros(2)), "unit"),
    (lambda net: gen.sample_latents(0, np.zeros(2), np.ones(2)), "n: expected"),
    (lambda net: gen.sample_latents(2, np.zeros(2), -np.ones(2)), "std"),
    (lambda net: gen.sample_images(net, 0, 2, source="posterior"), "source"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(_net())


def test_nearest_neighbour_error_known_values():
    data = np.array([[0.0, 0.0], [1.0, 1.0]])
    samples = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 3.0]])
    # nearest errors per pixel: 0; min(0.5, 0.5) = 0.5; ((2^2 + 2^2) / 2) = 4
    assert gen.nearest_neighbour_error(samples, data) == pytest.approx((0 + 0.5 + 4) / 3)
    assert gen.nearest_neighbour_error(samples, data, chunk=1) == pytest.approx((0 + 0.5 + 4) / 3)
    with pytest.raises(ValueError, match="data: expected shape"):
        gen.nearest_neighbour_error(samples, np.zeros((2, 3)))
