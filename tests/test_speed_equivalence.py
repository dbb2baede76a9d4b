"""The optimised training path against the plain reference path, and its buffers.

The training steps run the layers' ``_train_forward`` / ``_train_backward`` (no per-call
checks, buffers allocated once, one Adam pass per layer over flat buffers). Here the same
steps are written out with the public, readable pieces only (``forward``, ``backward``,
``loss_terms``, the cosine reference and :func:`vaelayer_np.core.ops.adam_update` key by key) and
the parameters compared after a few steps.
"""
import numpy as np
import pytest

from vaelayer_np.core import iffcl, ops
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import Trainer

N_FEATURES, N_CLASSES, BATCH, STEPS = 20, 4, 16, 4


def _config(dtype, backend, encoder_hidden, cosine_on="latent", contrast="batch"):
    return TrainConfig(dataset="digits", widths=(12, 8), encoder_hidden=encoder_hidden, batch_size=BATCH,
                       dtype=dtype, backend=backend, lr_schedule="constant", contrast=contrast, cosine_on=cosine_on)


def _batches(dtype, steps=STEPS):
    rng = np.random.default_rng(7)
    return [(rng.random((BATCH, N_FEATURES)).astype(dtype), rng.integers(0, N_CLASSES, BATCH)) for _ in range(steps)]


class ReferenceAdam:
    """Adam written key by key with the reference update (no flat buffers)."""

    def __init__(self, params, lr):
        self.params, self.lr, self.t = params, lr, 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        self.t += 1
        step_size = self.lr * np.sqrt(1 - 0.999 ** self.t) / (1 - 0.9 ** self.t)
        eps_hat = 1e-8 * np.sqrt(1 - 0.999 ** self.t)
        for k, w in self.params.items():
            ops.adam_update(w, grads[k], self.m[k], self.v[k], 0.9, 0.999, step_size, eps_hat)


def reference_step(trainer, optimizers, x, y):
    """One IFFCL step from the public layer methods, in the order iffcl.train_step draws its randomness."""
    c, rng = trainer.config, trainer.rng
    net_a, net_b = trainer.net_a, trainer.net_b
    partner, target = iffcl.make_pairs(y, c.pairing, rng)
    h_a, h_b, y_b = x, x[partner], y[partner]
    outs_a, outs_b, metrics = [], [], {}
    for k, (la, lb) in enumerate(zip(net_a.vae_layers, net_b.vae_layers)):
        out_a, cache_a = la.forward(h_a, rng=rng)
        out_b, cache_b = lb.forward(h_b, rng=rng)
        on_latent = c.cosine_on == "latent"
        za, zb = (cache_a["z"], cache_b["z"]) if on_latent else (out_a, out_b)
        cos, (ga, gb) = iffcl.cosine_term(za, zb, target, y, y_b, c.contrast, c.margin, la.ops)
        if on_latent:
            _, grads_a = la.backward(None, cache_a, dz=c.lam * ga, need_dx=False)
            _, grads_b = lb.backward(None, cache_b, dz=c.lam * gb, need_dx=False)
        else:
            _, grads_a = la.backward(c.lam * ga, cache_a, need_dx=False)
            _, grads_b = lb.backward(c.lam * gb, cache_b, need_dx=False)
        ta, tb = la.loss_terms(cache_a), lb.loss_terms(cache_b)
        metrics[f"layer{k}_loss"] = ta["neg_elbo"] + tb["neg_elbo"] + c.lam * cos
        optimizers[f"A.vae{k}"].step(grads_a)
        optimizers[f"B.vae{k}"].step(grads_b)
        h_a, h_b = out_a, out_b
        outs_a.append(h_a)
        outs_b.append(h_b)
    for net, outs, labels, name in ((net_a, outs_a, y, "A"), (net_b, outs_b, y_b, "B")):
        logits, cache = net.output.forward(net.readout_features(outs))
        _, d_logits = net.output.loss(logits, labels)
        _, grads = net.output.backward(d_logits, cache, need_dx=False)
        optimizers[f"{name}.output"].step(grads)
    return metrics


def _run_both(dtype, backend, encoder_hidden, **kw):
    fast = Trainer(_config(dtype, backend, encoder_hidden, **kw), N_FEATURES, N_CLASSES)
    plain = Trainer(_config(dtype, "numpy", encoder_hidden, **kw), N_FEATURES, N_CLASSES)
    optimizers = {name: ReferenceAdam(opt.params, opt.lr) for name, opt in plain.optimizers.items()}
    for x, y in _batches(dtype):
        m_fast = fast.step(x, y)
        m_plain = reference_step(plain, optimizers, x, y)
    return fast, plain, m_fast, m_plain


@pytest.mark.parametrize("encoder_hidden", [0, 6])
@pytest.mark.parametrize("cosine_on,contrast", [("latent", "batch"), ("output", "pairs")])
def test_optimised_path_gives_the_reference_parameters_float64(encoder_hidden, cosine_on, contrast):
    fast, plain, m_fast, m_plain = _run_both("float64", "numpy", encoder_hidden, cosine_on=cosine_on,
                                             contrast=contrast)
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            np.testing.assert_allclose(value, plain.nets[name].state_dict()[key], rtol=1e-12, atol=1e-12,
                                       err_msg=f"net {name}, {key}")
    for key, value in m_plain.items():
        assert m_fast[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_optimised_path_gives_the_reference_parameters_float32(backend):
    fast, plain, m_fast, m_plain = _run_both("float32", backend, 6)
    for name in fast.nets:
        for key, value in fast.nets[name].state_dict().items():
            # A few Adam steps of size lr move each weight by at most ~lr per step: differences of
            # float32 rounding (and of summation order in the kernels) stay far below that.
            np.testing.assert_allclose(value, plain.nets[name].state_dict()[key], rtol=1e-4, atol=2e-5,
                                       err_msg=f"net {name}, {key}")
    for key, value in m_plain.items():
        assert m_fast[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_steady_state_steps_keep_their_buffers():
    """Parameters, gradients and Adam moments stay in the buffers allocated at construction."""
    trainer = Trainer(_config("float32", "numba", 6), N_FEATURES, N_CLASSES)
    batches = _batches("float32", steps=3)
    trainer.step(*batches[0])

    def buffers():
        out = {}
        for name, net in trainer.nets.items():
            for layer_name, layer in net.named_layers():
                dense = getattr(layer, "dense", layer)
                out[f"{name}.{layer_name}"] = (dense._flat_params, dense._flat_grads,
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
            flat = getattr(layer, "dense", layer)._flat_params
            for key, p in layer.params.items():
                assert np.shares_memory(p, flat), f"{name}.{layer_name}.{key} left the flat buffer"
    # the steps did update the parameters in those buffers
    assert all(not np.array_equal(params_before[k], v[0]) for k, v in buffers().items())


def test_adam_updates_a_flat_layer_in_one_call(monkeypatch):
    """One kernel call per layer and step when the gradients come from the layer's flat buffer."""
    trainer = Trainer(_config("float32", "numba", 6), N_FEATURES, N_CLASSES)
    calls = []
    opt = trainer.optimizers["A.vae0"]
    original = opt.ops.adam_update
    monkeypatch.setattr(opt, "ops", type(opt.ops)(**{**vars(opt.ops), "adam_update":
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
    config = _config("float64", "numpy", 0)
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
