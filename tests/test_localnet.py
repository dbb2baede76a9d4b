"""The local-heads baseline (core/localnet.py): gradients, locality of the updates, learning, and its settings."""
import copy

import numpy as np
import pytest

from vaelayer_np.core import gradcheck
from vaelayer_np.core.layers import OutputLayer, dropout_mask
from vaelayer_np.core.localnet import LocalBlock, LocalNetwork, block_local_step
from vaelayer_np.core.optim import Adam
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import load_dataset
from vaelayer_np.run.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_trainer(**kw):
    cfg = TrainConfig(dataset="digits", widths=(16, 12, 8), method="local-heads", batch_size=32, threads=1, **kw)
    return Trainer(cfg, 64, 10)


def test_every_gradient_of_the_blocks_their_step_and_dropout_passes():
    results = gradcheck._check_dropout_and_local_blocks(np.random.default_rng(11), gradcheck.DEFAULT_STEP,
                                                        gradcheck.DEFAULT_TOL)
    names = {r.name for r in results}
    assert any(n.startswith("LocalBlock[hidden=0") for n in names) and any("block step" in n for n in names)
    assert any(n.startswith("Dropout") for n in names) and any("dropout masks fixed" in n for n in names)
    assert all(r.passed for r in results), gradcheck.format_table([r for r in results if not r.passed])


def test_a_planted_wrong_block_gradient_fails(monkeypatch):
    """The check can fail: a block whose W_hid gradient is 1% off is caught."""
    rng = np.random.default_rng(3)
    block = gradcheck.generic_point(LocalBlock(6, 4, hidden=3, rng=rng), rng)
    x = rng.standard_normal((5, 6))
    right = LocalBlock.backward

    def wrong(self, dout, cache, need_dx=True):
        dx, grads = right(self, dout, cache, need_dx)
        return dx, dict(grads, W_hid=1.01 * grads["W_hid"])

    monkeypatch.setattr(LocalBlock, "backward", wrong)
    verdicts = {r.tensor: r.passed for r in gradcheck.check_layer(block, x, rng)}
    assert verdicts["W_hid"] is False and verdicts["W_out"] is True


def test_block_step_gradient_enters_through_the_head_only():
    """The block's gradients are those of its head's loss: a head of weight 0 (zero W) moves nothing but its bias."""
    rng = np.random.default_rng(4)
    block, head = LocalBlock(6, 4, hidden=3, rng=rng), OutputLayer(4, 3, rng=rng)
    head.params["W"][...] = 0.0
    step = block_local_step(block, head, rng.standard_normal((5, 6)), rng.integers(0, 3, 5))
    assert all(not g.any() for g in step.grads.values())
    assert step.grads_head["b"].any()


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_changing_blocks_above_changes_nothing_below(digits, dropout):
    """Perturb block 2, its head and the output layer: blocks 0 and 1 and their heads get the same update, bit for bit
    (with dropout too: the masks are drawn in the same order whatever the parameters)."""
    x, y = digits.x_train[:32], digits.y_train[:32]
    t1, t2 = small_trainer(dropout=dropout), small_trainer(dropout=dropout)
    for layer in (t2.net_a.blocks[2], t2.net_a.heads[2], t2.net_a.output):
        for v in layer.params.values():
            v += np.random.default_rng(5).standard_normal(v.shape).astype(v.dtype)
    t1.step(x, y)
    t2.step(x, y)
    for k in (0, 1):
        for a, b in ((t1.net_a.blocks[k], t2.net_a.blocks[k]), (t1.net_a.heads[k], t2.net_a.heads[k])):
            for key, v in a.params.items():
                assert np.array_equal(v, b.params[key]), (k, key)
    assert not np.array_equal(t1.net_a.blocks[2].params["W_out"], t2.net_a.blocks[2].params["W_out"])


def test_a_head_moves_its_own_block_and_nothing_below(digits):
    x, y = digits.x_train[:32], digits.y_train[:32]
    t1, t2 = small_trainer(), small_trainer()
    t2.net_a.heads[1].params["W"] += 0.5
    t1.step(x, y)
    t2.step(x, y)
    assert all(np.array_equal(v, t2.net_a.blocks[0].params[k]) for k, v in t1.net_a.blocks[0].params.items())
    assert not np.array_equal(t1.net_a.blocks[1].params["W_out"], t2.net_a.blocks[1].params["W_out"])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_each_block_moves_only_by_its_own_head(digits, dropout):
    """Replay one step block by block from block_local_step alone (the same masks from the same generator)."""
    x, y = digits.x_train[:32], digits.y_train[:32]
    trainer = small_trainer(dropout=dropout)
    before = copy.deepcopy(trainer.net_a)
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(trainer.rng.bit_generator.state)
    trainer.step(x, y)
    c, h = trainer.config, x.astype(np.float32)
    with trainer.blas_threads():  # bit for bit needs the trainer's BLAS thread count (OpenBLAS splits by it)
        for k, (block, head) in enumerate(zip(before.blocks, before.heads)):
            mask = dropout_mask(h.shape, dropout, rng, h.dtype) if dropout else None
            step = block_local_step(block, head, h, y, mask)
            Adam(block.params, lr=c.lr).step(step.grads)
            Adam(head.params, lr=c.output_lr).step(step.grads_head)
            for mine, theirs in ((block, trainer.net_a.blocks[k]), (head, trainer.net_a.heads[k])):
                for key, v in mine.params.items():
                    np.testing.assert_array_equal(v, theirs.params[key])
            h = step.out


def test_local_heads_learns_digits(digits):
    trainer = Trainer(TrainConfig(dataset="digits", method="local-heads", epochs=8, threads=1), 64, 10)
    for _ in range(8):
        trainer.train_epoch(digits.x_train, digits.y_train)
    assert trainer.accuracy(digits.x_test, digits.y_test) > 0.9
    assert trainer.net_b is None and len(trainer.net_a.blocks) == 3 and trainer.net_a.vae_layers == []


def test_local_network_checkpoint_round_trip_and_shapes():
    net = LocalNetwork(10, (6, 5), 3, seed=1, hidden=4, dtype=np.float64)
    assert [n for n, _ in net.named_layers()] == ["block0", "block1", "output", "head0", "head1"]
    assert net.blocks[0].params["W_hid"].shape == (10, 4) and net.blocks[1].params["W_out"].shape == (4, 5)
    other = LocalNetwork(10, (6, 5), 3, seed=2, hidden=4, dtype=np.float64)
    other.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).standard_normal((7, 10))
    np.testing.assert_array_equal(other.predict_proba(x), net.predict_proba(x))
    state = net.state_dict()
    state["block1.W_out"] = state["block1.W_out"][:2]
    with pytest.raises(ValueError, match="block1.W_out"):
        other.load_state_dict(state)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="head_weight"):
        TrainConfig(dataset="digits", method="local-heads", head_weight=1.0).validate()
    with pytest.raises(ValueError, match="hidden"):
        LocalBlock(4, 3, hidden=-1)
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dataset="digits", dropout=1.0).validate()
    with pytest.raises(ValueError, match="cache"):
        block = LocalBlock(4, 3, hidden=2)
        block.backward(np.ones((2, 3)), {"x": np.ones((2, 4))})


def test_the_command_trains_plots_and_resumes_a_local_heads_run(tmp_path):
    from vaelayer_np.cli import main

    run = tmp_path / "run"
    assert main(["train", "--method", "local-heads", "--epochs", "1", "--threads", "1", "--widths", "16,12",
                 "--limit", "300", "--dropout", "0.1", "--augment-shift", "1", "--run-dir", str(run)]) == 0
    assert (run / "local_losses.png").is_file() and (run / "accuracy.png").is_file()
    assert not (run / "reconstructions.png").exists()  # no VAE layers: nothing to reconstruct
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert main(["evaluate", str(run)]) == 0
