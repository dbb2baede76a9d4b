"""The moonshot settings: image augmentation, dropout and the longer cosine schedule; drawn from the run's generator,
reproducible and resumable, and local (a layer's update does not depend on the layers above)."""
import json
import math

import numpy as np
import pytest

from vaelayer_np.core.layers import dropout_mask
from vaelayer_np.run.checkpoint import load_npz
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import augment_images, load_dataset
from vaelayer_np.run.runs import train_run
from vaelayer_np.run.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def moved(img, dy, dx):
    """An independent reference: pad by the shift on every side, then cut the window the shift points at."""
    h, w = img.shape
    s = max(abs(dy), abs(dx), 1)
    padded = np.pad(img, s)
    return padded[s - dy:s - dy + h, s - dx:s - dx + w]


def test_shifts_and_flips_are_the_drawn_ones():
    rng_seed, n = 7, 40
    x = np.random.default_rng(0).random((n, 5 * 6)).astype(np.float32)
    x_before = x.copy()
    out = augment_images(x, (5, 6), 2, 0.5, np.random.default_rng(rng_seed))
    replay = np.random.default_rng(rng_seed)  # the documented order: every shift, then every flip
    moves, flips = replay.integers(-2, 3, size=(n, 2)), replay.random(n) < 0.5
    assert flips.any() and not flips.all() and (moves != 0).any()
    for i in range(n):
        img = x[i].reshape(5, 6)
        img = img[:, ::-1] if flips[i] else img
        np.testing.assert_array_equal(out[i].reshape(5, 6), moved(img, *moves[i]))
    np.testing.assert_array_equal(x, x_before)  # the input is left as it was
    assert out.dtype == x.dtype


def test_channels_move_together():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, -1)
    out = augment_images(x, (3, 4, 4), 1, 0.5, np.random.default_rng(1)).reshape(2, 3, 4, 4)
    replay = np.random.default_rng(1)
    moves, flips = replay.integers(-1, 2, size=(2, 2)), replay.random(2) < 0.5
    for i in range(2):
        for ch in range(3):
            img = x[i].reshape(3, 4, 4)[ch]
            img = img[:, ::-1] if flips[i] else img
            np.testing.assert_array_equal(out[i, ch], moved(img, *moves[i]))


def test_off_draws_nothing_and_returns_the_batch():
    rng = np.random.default_rng(3)
    state = json.dumps(rng.bit_generator.state)
    x = np.ones((4, 64))
    assert augment_images(x, (8, 8), 0, 0.0, rng) is x
    assert json.dumps(rng.bit_generator.state) == state
    with pytest.raises(ValueError, match="pixels"):
        augment_images(np.ones((4, 63)), (8, 8), 1, 0.0, rng)


def test_dropout_mask():
    m = dropout_mask((200, 500), 0.3, np.random.default_rng(2))
    assert set(np.unique(m)) == {0.0, 1 / 0.7}
    dropped = float(np.mean(m == 0))
    assert abs(dropped - 0.3) < 5 * math.sqrt(0.3 * 0.7 / m.size)  # five binomial standard deviations
    np.testing.assert_array_equal(m, dropout_mask((200, 500), 0.3, np.random.default_rng(2)))
    assert (dropout_mask((3, 4), 0.0, np.random.default_rng(2)) == 1).all()
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="dropout"):
            dropout_mask((2, 2), bad, np.random.default_rng(0))


def test_bad_settings_are_named():
    for kw, name in ((dict(augment_shift=-1), "augment_shift"), (dict(augment_shift=8), "augment_shift"),
                     (dict(augment_flip=0.7), "augment_flip"), (dict(dropout=1.0), "dropout"),
                     (dict(dropout=-0.5), "dropout")):
        with pytest.raises(ValueError, match=name):
            TrainConfig(dataset="digits", **kw).validate()
    with pytest.raises(ValueError, match="image datasets"):
        TrainConfig(dataset="arrays", widths=(4,), augment_shift=1).validate()


def _trainer(method, **kw):
    head = 1.0 if method != "local-heads" else 0.0
    cfg = TrainConfig(dataset="digits", widths=(16, 12, 8), method=method, batch_size=32, threads=1, head_weight=head,
                      **kw)
    return Trainer(cfg, 64, 10)


def test_augmentation_and_dropout_change_the_training_not_the_evaluation(digits):
    x, y = digits.x_train[:64], digits.y_train[:64]
    plain, regular = _trainer("iffcl"), _trainer("iffcl", dropout=0.2, augment_shift=1, augment_flip=0.5)
    plain.train_epoch(x, y)
    regular.train_epoch(x, y)
    assert not np.array_equal(plain.net_a.vae_layers[0].params["W_mu"], regular.net_a.vae_layers[0].params["W_mu"])
    p = regular.predict_proba(digits.x_test[:50])
    np.testing.assert_array_equal(p, regular.predict_proba(digits.x_test[:50]))  # no masks, no draws


@pytest.mark.parametrize("method", ["iffcl", "backprop", "local-heads"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, method):
    """Augmentation and dropout draw from the run's generator, which the checkpoint holds: a run stopped mid-epoch
    and resumed ends with the very parameters of the uninterrupted run."""
    cfg = dict(dataset="digits", epochs=2, widths=(16, 16), method=method, dropout=0.2, augment_shift=1,
               augment_flip=0.5, threads=1, head_weight=1.0 if method != "local-heads" else 0.0)
    quiet = dict(progress=False, plots=False, log=lambda *a: None)
    _, rows_full, _ = train_run(TrainConfig(**cfg), run_dir=tmp_path / "full", **quiet)
    calls = {"n": 0}

    def stop_mid_epoch():
        calls["n"] += 1
        return calls["n"] > 60

    _, _, done = train_run(TrainConfig(**cfg), run_dir=tmp_path / "cut", should_stop=stop_mid_epoch, **quiet)
    assert not done and int(load_npz(tmp_path / "cut" / "checkpoint.npz")["trainer.batch_index"]) > 0
    _, rows_resumed, done = train_run(resume=tmp_path / "cut", **quiet)
    assert done
    full, resumed = load_npz(tmp_path / "full" / "checkpoint.npz"), load_npz(tmp_path / "cut" / "checkpoint.npz")
    assert set(full) == set(resumed)
    for key in full:
        if key != "trainer.epoch_sums":
            assert np.array_equal(full[key], resumed[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_full]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_resumed]


def test_iffcl_with_dropout_stays_local(digits):
    """Perturb layer 2 and the output layers of both twins: with dropout and augmentation, layers 0 and 1 (and their
    heads) get the same update, bit for bit."""
    x, y = digits.x_train[:32], digits.y_train[:32]
    kw = dict(dropout=0.25, augment_shift=1, augment_flip=0.5)
    t1, t2 = _trainer("iffcl", **kw), _trainer("iffcl", **kw)
    for net in t2.nets.values():
        for layer in (net.vae_layers[2], net.output, net.heads[2]):
            for v in layer.params.values():
                v += np.random.default_rng(5).standard_normal(v.shape).astype(v.dtype)
    t1.train_epoch(x, y)
    t2.train_epoch(x, y)
    for name in ("A", "B"):
        for k in (0, 1):
            for a, b in ((t1.nets[name].vae_layers[k], t2.nets[name].vae_layers[k]),
                         (t1.nets[name].heads[k], t2.nets[name].heads[k])):
                for key, v in a.params.items():
                    assert np.array_equal(v, b.params[key]), (name, k, key)
        above_1, above_2 = t1.nets[name].vae_layers[2], t2.nets[name].vae_layers[2]
        assert not np.array_equal(above_1.params["W_mu"], above_2.params["W_mu"])


def test_iffcl_dropout_on_the_fast_path_equals_the_readable_one(digits):
    """The masks wrap whichever serial path the config names: the fast one computes the readable one's step."""
    x, y = digits.x_train[:32].astype(np.float64), digits.y_train[:32]
    trainers = [Trainer(TrainConfig(dataset="digits", widths=(16, 12), threads=1, dtype="float64", head_weight=1.0,
                                    dropout=0.2, path=p), 64, 10) for p in ("readable", "fast")]
    for t in trainers:
        for _ in range(3):
            t.step(x, y)
    readable, fast = trainers
    for k in range(2):
        for key, v in readable.net_a.vae_layers[k].params.items():
            np.testing.assert_allclose(fast.net_a.vae_layers[k].params[key], v, rtol=0, atol=1e-12)


def test_a_longer_cosine_schedule_is_the_same_curve_stretched():
    """--epochs sets the schedule's length: at the same fraction of the run, 10 and 60 epochs take the same step."""
    factors = {}
    for epochs in (10, 60):
        t = _trainer("iffcl", epochs=epochs)
        t.steps_per_epoch = 12
        for frac in (0.0, 0.25, 0.5, 0.9):
            t.epoch, t.batch_index = divmod(int(frac * epochs * 12), 12)
            factors[epochs, frac] = t.lr_factor()
    for frac in (0.0, 0.25, 0.5, 0.9):
        assert factors[10, frac] == pytest.approx(factors[60, frac], abs=1e-12)
        assert factors[10, frac] == pytest.approx(0.5 * (1 + math.cos(math.pi * frac)), abs=1e-12)
