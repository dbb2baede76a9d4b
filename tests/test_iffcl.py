"""IFFCL: locality of the updates, pairing, learning, determinism, exact resume."""
import copy

import numpy as np
import pytest

from vaelayer_np.core.iffcl import Pairs, _local_step, make_pairs
from vaelayer_np.fast.parallel import training_path
from vaelayer_np.run.checkpoint import load_npz
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import load_dataset
from vaelayer_np.run.runs import train_run
from vaelayer_np.run.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_trainer(method="iffcl", **kw):
    cfg = TrainConfig(dataset="digits", widths=(16, 12, 8), method=method, batch_size=32, **kw)
    return Trainer(cfg, 64, 10)


def batch(digits, n=32):
    return digits.x_train[:n], digits.y_train[:n]


def params_of(layer):
    return {k: v.copy() for k, v in layer.params.items()}


@pytest.mark.parametrize("contrast,head_weight,cosine_on", [("partner", 0.0, "latent"), ("all_pairs", 0.0, "latent"),
                                                            ("all_pairs", 1.0, "latent"), ("partner", 0.5, "output")])
def test_changing_layers_above_changes_nothing_below(digits, contrast, head_weight, cosine_on):
    """Perturb layer 2, its local heads and the output layers of both twins: layers 0 and 1 (and their
    heads) get the same update, bit for bit, whatever the settings."""
    x, y = batch(digits)
    kw = dict(contrast=contrast, head_weight=head_weight, cosine_on=cosine_on)
    t1, t2 = small_trainer(**kw), small_trainer(**kw)
    for net in t2.nets.values():
        for layer in [net.vae_layers[2], net.output] + net.heads[2:]:
            for v in layer.params.values():
                v += np.random.default_rng(5).standard_normal(v.shape).astype(v.dtype)
    t1.step(x, y)
    t2.step(x, y)
    for name in ("A", "B"):
        for k in (0, 1):
            below = [t1.nets[name].vae_layers[k]] + t1.nets[name].heads[k:k + 1]
            same = [t2.nets[name].vae_layers[k]] + t2.nets[name].heads[k:k + 1]
            for layer_1, layer_2 in zip(below, same):
                for key, v in layer_1.params.items():
                    assert np.array_equal(v, layer_2.params[key]), (name, k, key)
        assert not np.array_equal(t1.nets[name].output.params["W"], t2.nets[name].output.params["W"])


def test_a_local_head_changes_its_own_layer_only(digits):
    """The head of layer 1 moves layer 1 (its gradient enters that layer's output) and nothing below it."""
    x, y = batch(digits)
    t1, t2 = small_trainer(head_weight=1.0), small_trainer(head_weight=1.0)
    for net in t2.nets.values():
        net.heads[1].params["W"] += 0.5
    t1.step(x, y)
    t2.step(x, y)
    a1, a2 = t1.net_a, t2.net_a
    assert all(np.array_equal(v, a2.vae_layers[0].params[k]) for k, v in a1.vae_layers[0].params.items())
    assert not np.array_equal(a1.vae_layers[1].params["W_mu"], a2.vae_layers[1].params["W_mu"])


def test_backprop_baseline_is_not_local(digits):
    """The same perturbation does change layer 0 under backpropagation: the test above can fail."""
    x, y = batch(digits)
    t1, t2 = small_trainer("backprop"), small_trainer("backprop")
    t2.net_a.output.params["W"] += 0.5
    t1.step(x, y)
    t2.step(x, y)
    assert not np.array_equal(t1.net_a.vae_layers[0].params["W_mu"], t2.net_a.vae_layers[0].params["W_mu"])


@pytest.mark.parametrize("head_weight", [0.0, 0.7])
def test_each_layer_moves_only_by_its_own_local_loss(digits, head_weight):
    """Replay one IFFCL step by hand from the local step alone and compare every VAE layer (and head)."""
    x, y = batch(digits)
    trainer = small_trainer(head_weight=head_weight)
    before = copy.deepcopy(trainer.nets)
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(trainer.rng.bit_generator.state)
    trainer.step(x, y)
    c = trainer.config
    path = training_path(c.path)  # the trainer's kind of path, new: nothing shared with the trainer's
    with trainer.blas_threads():  # bit for bit needs the same BLAS threads as the trainer's step (one)
        _replay(trainer, before, path, rng, x, y, head_weight)


def _replay(trainer, before, path, rng, x, y, head_weight):
    c = trainer.config
    partner, target = make_pairs(y, c.pairing, rng)
    h_a, h_b = x, x[partner]
    for k, (la, lb) in enumerate(zip(before["A"].vae_layers, before["B"].vae_layers)):
        # _local_step: vae_local_step without the copies, so the fast path's Adam takes its one-pass update
        heads = (before["A"].heads[k], before["B"].heads[k]) if head_weight else None
        step = _local_step(path, (la, lb), (h_a, h_b), Pairs(target, y, y[partner]), rng, trainer.iffcl_settings,
                           heads)
        for layer, grads, name in ((la, step.grads_a, "A"), (lb, step.grads_b, "B")):
            path.make_adam(layer, lr=c.lr).step(grads)
            for key, v in layer.params.items():
                np.testing.assert_array_equal(v, trainer.nets[name].vae_layers[k].params[key])
        if heads is not None:
            for head, grads, name in ((heads[0], step.grads_head_a, "A"), (heads[1], step.grads_head_b, "B")):
                path.make_adam(head, lr=c.output_lr).step(grads)
                for key, v in head.params.items():
                    np.testing.assert_array_equal(v, trainer.nets[name].heads[k].params[key])
        h_a, h_b = step.out_a, step.out_b


@pytest.mark.parametrize("mode", ["random", "balanced", "mirror"])
def test_pairing_modes(mode):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    partner, target = make_pairs(labels, mode, rng)
    assert partner.shape == labels.shape and set(np.unique(target)) <= {1.0, -1.0}
    assert np.array_equal(target == 1, labels == labels[partner])
    frac = np.mean(target == 1)
    expected = {"random": 0.1, "balanced": 0.5, "mirror": 1.0}[mode]
    assert abs(frac - expected) < 0.04
    if mode == "random":
        assert np.array_equal(np.sort(partner), np.arange(4000))
    if mode == "mirror":
        assert np.array_equal(partner, np.arange(4000))


def test_balanced_pairing_with_a_single_class():
    partner, target = make_pairs(np.zeros(6, dtype=int), "balanced", np.random.default_rng(0))
    assert np.all(target == 1)


@pytest.mark.slow
def test_seeded_short_run_learns_digits(tmp_path):
    _, rows, done = train_run(TrainConfig(dataset="digits", epochs=10, seed=0), run_dir=tmp_path / "r",
                              progress=False, plots=False, log=lambda *a: None)
    assert done and rows[-1]["test_acc"] >= 0.90, rows[-1]


@pytest.mark.slow
def test_backprop_baseline_learns_digits(tmp_path):
    _, rows, _ = train_run(TrainConfig(dataset="digits", method="backprop", epochs=5), run_dir=tmp_path / "r",
                           progress=False, plots=False, log=lambda *a: None)
    assert rows[-1]["test_acc"] >= 0.90


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    cfg = dict(dataset="digits", epochs=3, widths=(16, 16))
    runs = [train_run(TrainConfig(**cfg), run_dir=tmp_path / f"r{i}", progress=False, plots=False,
                      log=lambda *a: None)[1] for i in range(2)]
    assert strip_time(runs[0]) == strip_time(runs[1])
    other = train_run(TrainConfig(seed=1, **cfg), run_dir=tmp_path / "r9", progress=False, plots=False,
                      log=lambda *a: None)[1]
    assert strip_time(other) != strip_time(runs[0])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["iffcl", "backprop"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, method):
    cfg = dict(dataset="digits", epochs=3, widths=(16, 16), method=method)
    _, rows_full, _ = train_run(TrainConfig(**cfg), run_dir=tmp_path / "full", progress=False, plots=False,
                                log=lambda *a: None)
    calls = {"n": 0}

    def stop_mid_epoch():  # like Ctrl-C after 50 steps (the second epoch is half done)
        calls["n"] += 1
        return calls["n"] > 50

    _, _, done = train_run(TrainConfig(**cfg), run_dir=tmp_path / "cut", progress=False, plots=False,
                           log=lambda *a: None, should_stop=stop_mid_epoch)
    assert not done
    state = load_npz(tmp_path / "cut" / "checkpoint.npz")
    assert int(state["trainer.batch_index"]) > 0  # saved mid-epoch
    _, rows_resumed, done = train_run(resume=tmp_path / "cut", progress=False, plots=False, log=lambda *a: None)
    assert done
    full, resumed = load_npz(tmp_path / "full" / "checkpoint.npz"), load_npz(tmp_path / "cut" / "checkpoint.npz")
    assert set(full) == set(resumed)
    for key in full:
        if key != "trainer.epoch_sums":
            assert np.array_equal(full[key], resumed[key]), key
    assert strip_time(rows_full) == strip_time(rows_resumed)


def test_cosine_schedule_decays_to_zero_and_constant_does_not():
    ds = load_dataset("digits", limit=64)
    for schedule, expect_end in (("cosine", 0.0), ("constant", 1.0)):
        trainer = Trainer(TrainConfig(dataset="digits", widths=(8,), epochs=2, batch_size=32, lr_schedule=schedule),
                          64, 10)
        factors = []
        for _ in range(2):
            trainer.train_epoch(ds.x_train, ds.y_train,
                                on_step=lambda i, n, m: factors.append(trainer.optimizers["A.vae0"].lr))  # noqa: B023
        assert factors[0] == pytest.approx(trainer.config.lr)
        assert factors[-1] / trainer.config.lr == pytest.approx(expect_end, abs=0.2)
        assert all(a >= b - 1e-15 for a, b in zip(factors, factors[1:]))


@pytest.mark.slow
def test_encoder_hidden_layer_trains_and_checkpoints(tmp_path):
    _, rows, _ = train_run(TrainConfig(dataset="digits", epochs=2, encoder_hidden=32, widths=(16, 16)),
                           run_dir=tmp_path / "r", progress=False, plots=False, log=lambda *a: None)
    state = load_npz(tmp_path / "r" / "checkpoint.npz")
    assert state["netA.vae0.W_enc"].shape == (64, 32) and state["netB.vae1.W_enc"].shape == (16, 32)
    assert rows[-1]["test_acc"] > 0.5


def test_old_spellings_of_choices_still_work_with_a_warning(digits):
    """pairing='labelled', contrast='pairs'/'batch' and predict='a' (0.2) are read as their new names."""
    with pytest.warns(DeprecationWarning, match="now spelled 'random'"):
        config = TrainConfig(pairing="labelled", contrast="batch", predict="a")
    assert (config.pairing, config.contrast, config.predict) == ("random", "all_pairs", "twin_a")
    with pytest.warns(DeprecationWarning, match="'partner'"):
        assert TrainConfig(contrast="pairs").validate().contrast == "partner"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 10)
    with pytest.warns(DeprecationWarning):
        old = make_pairs(labels, "labelled", np.random.default_rng(1))
    new = make_pairs(labels, "random", np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(old, new))
    with pytest.raises(ValueError, match="pairing: unknown option 'labeled'"):
        make_pairs(labels, "labeled", rng)


def test_the_settings_one_keyword_at_a_time_still_work_with_a_warning():
    """The IFFCL steps take one IFFCLSettings; the old keywords (lam=, margin=, ...) give the same step, with a
    DeprecationWarning naming the release that removes them, and an unknown keyword is refused."""
    import warnings

    from vaelayer_np.core import iffcl
    from vaelayer_np.core.gradcheck import check_local_step
    from vaelayer_np.core.layers import VAELayer
    from vaelayer_np.core.settings import REMOVED_IN, IFFCLSettings

    rng = np.random.default_rng(0)
    layers = [VAELayer(5, 3, encoder_hidden=0, rng=s, dtype=np.float64) for s in (1, 2)]
    x_a, x_b = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    target = np.array([1.0, -1.0, 1.0, -1.0])
    new = iffcl.vae_local_step(layers[0], layers[1], x_a, x_b, target, 3,
                               IFFCLSettings(lam=2.0, margin=0.1, contrast="partner"))
    with pytest.warns(DeprecationWarning, match=f"IFFCLSettings.*{REMOVED_IN}"):
        old = iffcl.vae_local_step(layers[0], layers[1], x_a, x_b, target, 3, lam=2.0, margin=0.1, contrast="partner")
    for key in new.grads_a:
        np.testing.assert_array_equal(new.grads_a[key], old.grads_a[key])
    assert new.terms == old.terms
    with pytest.raises(TypeError, match="lamda"):
        iffcl.vae_local_step(layers[0], layers[1], x_a, x_b, target, 3, lamda=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        rows = check_local_step(layers[0], layers[1], x_a, x_b, np.arange(4), np.arange(4), target,
                                settings=IFFCLSettings(lam=0.5, margin=0.0, contrast="partner"))
    assert all(r.passed for r in rows)
