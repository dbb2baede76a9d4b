"""The fast training path against the readable one, in every setting, and the fast path's buffers.

A trainer with ``path="readable"`` runs the core's steps through the layers' own ``forward`` and
``backward`` (:class:`vaelayer_np.core.iffcl.ReadablePath`); with ``path="fast"`` through
:class:`vaelayer_np.fast.training.FastPath` (buffers allocated once, compiled kernels, one Adam
pass per layer). ``FastPath("numpy")`` is the fast path's bookkeeping with the NumPy references in
place of the kernels: in float64 it must give the readable path's parameters to 1e-12 in every
combination of settings; the kernels then agree to float32 rounding.
"""
import itertools

import numpy as np
import pytest

from vaelayer_np.fast.training import FastPath, FlatAdam
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import Trainer

N_FEATURES, N_CLASSES, BATCH, STEPS = 20, 4, 16, 4


def _config(dtype, path, encoder_hidden, cosine_on="latent", contrast="all_pairs", **kw):
    return TrainConfig(dataset="digits", widths=(12, 8), encoder_hidden=encoder_hidden, batch_size=BATCH,
                       dtype=dtype, path=path, lr_schedule="constant", contrast=contrast, cosine_on=cosine_on,
                       **kw)


def _batches(dtype, steps=STEPS, features=N_FEATURES):
    rng = np.random.default_rng(7)
    return [(rng.random((BATCH, features)).astype(dtype), rng.integers(0, N_CLASSES, BATCH)) for _ in range(steps)]


def _run_both(dtype, fast_path, encoder_hidden, **kw):
    readable = Trainer(_config(dtype, "readable", encoder_hidden, **kw), N_FEATURES, N_CLASSES)
    fast = Trainer(_config(dtype, "readable", encoder_hidden, **kw), N_FEATURES, N_CLASSES, path=fast_path)
    assert isinstance(fast.optimizers["A.vae0"], FlatAdam) or kw.get("optimizer") == "sgd"
    for x, y in _batches(dtype):
        m_fast = fast.step(x, y)
        m_readable = readable.step(x, y)
    return fast, readable, m_fast, m_readable


# every combination of the settings that change the arithmetic of a step
SETTINGS = [dict(zip(("encoder_hidden", "cosine_on", "contrast", "pass_on", "activation", "recon", "output_loss"),
                     values))
            for values in itertools.product((0, 6), ("latent", "output"), ("partner", "all_pairs"), ("mean", "sample"),
                                            ("relu", "tanh"), ("mse", "bce"), ("softmax", "bce"))]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_fast_path_gives_the_readable_parameters_float64(settings):
    fast, readable, m_fast, m_readable = _run_both("float64", FastPath("numpy"), **settings)
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            np.testing.assert_allclose(value, readable.nets[name].state_dict()[key], rtol=1e-12, atol=1e-12,
                                       err_msg=f"net {name}, {key}")
    assert m_fast.keys() == m_readable.keys()
    for key, value in m_readable.items():
        assert m_fast[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("method", ["iffcl", "backprop"])
@pytest.mark.parametrize("cosine_on", ["latent", "output"])
def test_fast_path_with_local_heads(method, cosine_on):
    fast, readable, m_fast, m_readable = _run_both("float64", FastPath("numpy"), 6, method=method, head_weight=0.8,
                                                   cosine_on=cosine_on)
    assert readable.net_a.heads
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            np.testing.assert_allclose(value, readable.nets[name].state_dict()[key], rtol=1e-12, atol=1e-12)
    for key, value in m_readable.items():
        assert m_fast[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("adam", 1e-3)])
def test_fast_path_with_sgd_and_weight_decay(optimizer, weight_decay):
    fast, readable, _, _ = _run_both("float64", FastPath("numpy"), 6, optimizer=optimizer, weight_decay=weight_decay)
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            np.testing.assert_allclose(value, readable.nets[name].state_dict()[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("encoder_hidden", [0, 6])
def test_kernels_give_the_readable_parameters_float32(encoder_hidden):
    fast, readable, m_fast, m_readable = _run_both("float32", FastPath("numba"), encoder_hidden)
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            # A few Adam steps of size lr move each weight by at most ~lr per step: differences of
            # float32 rounding (and of summation order in the kernels) stay far below that.
            np.testing.assert_allclose(value, readable.nets[name].state_dict()[key], rtol=1e-4, atol=2e-5,
                                       err_msg=f"net {name}, {key}")
    for key, value in m_readable.items():
        assert m_fast[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_the_equivalence_check_catches_a_planted_difference(monkeypatch):
    """A fast path that forgets the KL's log-variance factor is caught by the float64 comparison."""
    path = FastPath("numpy")
    right = path.ops.latent_backward

    def wrong(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
        d_mu, d_r = right(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
        return d_mu, 0.5 * d_r
    path.ops = type(path.ops)(**{**vars(path.ops), "latent_backward": wrong})
    fast, readable, _, _ = _run_both("float64", path, 6)
    w_fast = fast.net_a.vae_layers[0].params["W_lv"]
    assert not np.allclose(w_fast, readable.net_a.vae_layers[0].params["W_lv"], rtol=1e-12, atol=1e-12)


def test_readable_layers_are_left_alone_by_the_readable_path():
    """Training through the readable path never rewrites a layer's parameter arrays or the caller's batch."""
    trainer = Trainer(_config("float64", "readable", 6), N_FEATURES, N_CLASSES)
    arrays = {k: id(v) for k, v in trainer.net_a.vae_layers[0].params.items()}
    x, y = _batches("float64", steps=1)[0]
    x_before = x.copy()
    trainer.step(x, y)
    assert {k: id(v) for k, v in trainer.net_a.vae_layers[0].params.items()} == arrays
    np.testing.assert_array_equal(x, x_before)


def test_steady_state_steps_keep_their_buffers():
    """Parameters, gradients and Adam moments stay in the buffers the fast path allocated."""
    trainer = Trainer(_config("float32", "fast", 6), N_FEATURES, N_CLASSES)
    batches = _batches("float32", steps=3)
    trainer.step(*batches[0])

    def buffers():
        out = {}
        for name, net in trainer.nets.items():
            for layer_name, layer in net.named_layers():
                b = trainer.path.prepare(layer)
                out[f"{name}.{layer_name}"] = (b.flat_params, b.flat_grads,
                                               trainer.optimizers[f"{name}.{layer_name}"]._flat_m)
        return out

    before = {k: tuple(a.__array_interface__["data"][0] for a in v) for k, v in buffers().items()}
    params_before = {k: v[0].copy() for k, v in buffers().items()}
    for x, y in batches[1:]:
        trainer.step(x, y)
    after = {k: tuple(a.__array_interface__["data"][0] for a in v) for k, v in buffers().items()}
    assert after == before
    for name, net in trainer.nets.items():
        for layer_name, layer in net.named_layers():
            flat = trainer.path.prepare(layer).flat_params
            for key, p in layer.params.items():
                assert np.shares_memory(p, flat), f"{name}.{layer_name}.{key} left the flat buffer"
    # the steps did update the parameters in those buffers
    assert all(not np.array_equal(params_before[k], v[0]) for k, v in buffers().items())


def test_adam_updates_a_flat_layer_in_one_call(monkeypatch):
    """One kernel call per layer and step when the gradients come from the layer's flat buffer."""
    trainer = Trainer(_config("float32", "fast", 6), N_FEATURES, N_CLASSES)
    calls = []
    opt = trainer.optimizers["A.vae0"]
    original = opt._ops.adam_update
    monkeypatch.setattr(opt, "_ops", type(opt._ops)(**{**vars(opt._ops), "adam_update":
                                                       lambda *a: (calls.append(a[0].shape), original(*a))}))
    trainer.step(*_batches("float32", steps=1)[0])
    layer = trainer.net_a.vae_layers[0]
    assert calls == [(layer.n_params(),)]


def test_epoch_gathers_batches_into_kept_buffers_with_the_same_result():
    """train_epoch gathers each batch into buffers kept between steps; the run is the one of x[idx]
    steps in the same order, the last, shorter batch included, and the buffers are reused."""
    rng = np.random.default_rng(3)
    n = 3 * BATCH + 5  # a partial last batch
    x = rng.random((n, N_FEATURES))
    y = rng.integers(0, N_CLASSES, n)
    config = _config("float64", "readable", 0)
    epoch_run, step_run = Trainer(config, N_FEATURES, N_CLASSES), Trainer(config, N_FEATURES, N_CLASSES)
    seen = []
    epoch_run.train_epoch(x, y, on_step=lambda i, total, m: seen.append(id(epoch_run._batch_buffers[0])))
    order = np.random.default_rng(config.seed).permutation(n)  # the trainer's first draw: the epoch order
    step_run.rng.permutation(n)
    for start in range(0, n, BATCH):
        idx = order[start:start + BATCH]
        step_run.step(x[idx], y[idx])
    for name, net in epoch_run.nets.items():
        for (layer_name, layer), (_, other) in zip(net.named_layers(), step_run.nets[name].named_layers()):
            for key in layer.params:
                np.testing.assert_array_equal(layer.params[key], other.params[key], err_msg=f"{layer_name}.{key}")
    assert len(set(seen)) == 1  # one buffer for the whole epoch, the short batch a view of it
