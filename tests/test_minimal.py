"""The one-file version (vaelayer_np.core.minimal) computes what the library computes, and learns."""
import numpy as np
import pytest

from vaelayer_np.core import minimal
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import Trainer

D, C, WIDTHS, HIDDEN, N = 12, 4, (6, 5), 7, 16


def _library_trainer(method):
    config = TrainConfig(dataset="digits", method=method, widths=WIDTHS, encoder_hidden=HIDDEN, dtype="float64",
                         path="readable", batch_size=N, lr_schedule="constant", seed=3)
    return Trainer(config, D, C)


def _minimal_net(library_net):
    """The library network's parameters, copied into the one-file version's dicts (the same start)."""
    return {"vae": [{k: v.copy() for k, v in layer.params.items()} for layer in library_net.vae_layers],
            "out": {k: v.copy() for k, v in library_net.output.params.items()},
            "opt": [{} for _ in range(len(library_net.vae_layers) + 1)]}


def _assert_same(net, library_net, rtol=1e-12):
    for layer, p in zip(library_net.vae_layers, net["vae"]):
        for key, value in layer.params.items():
            assert np.isfinite(value).all(), key  # equal NaNs would pass assert_allclose
            np.testing.assert_allclose(p[key], value, rtol=rtol, atol=1e-12, err_msg=key)
    for key, value in library_net.output.params.items():
        assert np.isfinite(value).all(), f"output.{key}"
        np.testing.assert_allclose(net["out"][key], value, rtol=rtol, atol=1e-12, err_msg=f"output.{key}")


def _batches(steps=3):
    rng = np.random.default_rng(11)
    return [(rng.standard_normal((N, D)), rng.integers(0, C, N)) for _ in range(steps)]


def test_iffcl_steps_give_the_library_parameters():
    trainer = _library_trainer("iffcl")
    net_a, net_b = _minimal_net(trainer.net_a), _minimal_net(trainer.net_b)
    rng = np.random.default_rng()
    rng.bit_generator.state = trainer.rng.bit_generator.state  # the same pairing and noise
    for x, y in _batches():
        metrics = trainer.step(x, y)
        losses = minimal.iffcl_step(net_a, net_b, x, y, rng, lr=trainer.config.lr, out_lr=trainer.config.output_lr)
        assert losses == pytest.approx([metrics[f"layer{k}_loss"] for k in range(len(WIDTHS))], rel=1e-12, abs=0)
    _assert_same(net_a, trainer.net_a)
    _assert_same(net_b, trainer.net_b)


def test_the_one_file_backward_has_the_library_contract():
    """minimal.vae_backward(p, cache, dout, dz, neg_elbo_weight, need_dx) -> (dx, grads), as VAELayer.backward."""
    import inspect

    from vaelayer_np.core.layers import VAELayer

    layer = VAELayer(D, 5, encoder_hidden=HIDDEN, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D))
    out, cache = layer.forward(x, rng=np.random.default_rng(2))
    p = {k: v.copy() for k, v in layer.params.items()}
    _, c = minimal.vae_forward(p, x, cache["eps"])
    dout, dz = rng.standard_normal(out.shape), rng.standard_normal(out.shape)
    dx_lib, g_lib = layer.backward(dout, cache, dz=dz, neg_elbo_weight=0.3, need_dx=True)
    dx_min, g_min = minimal.vae_backward(p, c, dout=dout, dz=dz, neg_elbo_weight=0.3, need_dx=True)
    np.testing.assert_allclose(dx_min, dx_lib, rtol=1e-12, atol=1e-14)
    assert sorted(g_min) == sorted(g_lib)
    for key in g_lib:
        np.testing.assert_allclose(g_min[key], g_lib[key], rtol=1e-12, atol=1e-14, err_msg=key)
    lib_names = list(inspect.signature(VAELayer.backward).parameters)[1:]
    min_names = list(inspect.signature(minimal.vae_backward).parameters)[2:]
    assert lib_names[:2] == ["dout", "cache"] and min_names[0] == "dout"
    assert [n for n in min_names if n != "dout"] == [n for n in lib_names if n not in ("dout", "cache")][:3]


def test_backprop_steps_give_the_library_parameters():
    trainer = _library_trainer("backprop")
    net = _minimal_net(trainer.net_a)
    rng = np.random.default_rng()
    rng.bit_generator.state = trainer.rng.bit_generator.state
    for x, y in _batches():
        trainer.step(x, y)
        minimal.backprop_step(net, x, y, rng, lr=trainer.config.lr, out_lr=trainer.config.output_lr)
    _assert_same(net, trainer.net_a)


def test_the_comparison_catches_a_planted_difference(monkeypatch):
    """The same comparison fails when the one-file version's KL weight is off by a factor 2."""
    trainer = _library_trainer("iffcl")
    net_a, net_b = _minimal_net(trainer.net_a), _minimal_net(trainer.net_b)
    rng = np.random.default_rng()
    rng.bit_generator.state = trainer.rng.bit_generator.state
    monkeypatch.setattr(minimal, "BETA", 2 * minimal.BETA)
    x, y = _batches(1)[0]
    trainer.step(x, y)
    minimal.iffcl_step(net_a, net_b, x, y, rng, lr=trainer.config.lr, out_lr=trainer.config.output_lr)
    with pytest.raises(AssertionError):
        _assert_same(net_a, trainer.net_a)


def test_the_library_defaults_are_the_minimal_constants():
    from vaelayer_np.core.settings import DEFAULTS

    assert (minimal.BETA, minimal.BOUND, minimal.LAM, minimal.MARGIN) == (
        DEFAULTS["beta"], DEFAULTS["log_var_bound"], DEFAULTS["lam"], DEFAULTS["margin"])


@pytest.mark.slow
def test_the_one_file_version_trains_digits_past_95_percent():
    accs = minimal.train(*minimal.digits(), epochs=12, log=lambda *a: None)
    assert accs[-1] >= 0.95, accs
