"""A trainer sets the BLAS threads of its products itself; IFFCL's bits do not depend on threads or parallel.

Why a test of this: OpenBLAS may split a product between its threads, and how it adds the parts depends on
the thread count and on the CPU kernel it chose (the same product with one and with two BLAS threads
agrees under one kernel and differs in the last bits under another). A bit-for-bit equality between two
training paths is therefore only true when both make their products with the same number of BLAS threads.
These tests record the count inside every product instead of relying on one machine's rounding.
"""
import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from vaelayer_np.core import ops
from vaelayer_np.fast import machine
from vaelayer_np.fast.machine import BlasThreads, limit_threads, usable_cores
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import Trainer

_LIBS = ThreadpoolController().select(user_api="blas").lib_controllers


def _data(n=96, d=30, classes=4, seed=5):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.integers(0, classes, n)


def _trainer(**kw):
    cfg = dict(dataset="arrays", widths=(16, 12), batch_size=32, epochs=1, lr_schedule="cosine", encoder_hidden=20)
    cfg.update(kw)
    return Trainer(TrainConfig(**cfg), 30, 4)


@pytest.fixture
def recorded_counts(monkeypatch):
    """The BLAS thread counts in force at each matrix product (ops.matmul and ops.matmul_into)."""
    counts = []
    matmul, matmul_into = ops.matmul, ops.matmul_into

    def counting(fn):
        def wrapped(*args):
            counts.append(max(lib.get_num_threads() for lib in _LIBS))
            return fn(*args)
        return wrapped

    monkeypatch.setattr(ops, "matmul", counting(matmul))
    monkeypatch.setattr(ops, "matmul_into", counting(matmul_into))
    return counts


@pytest.mark.parametrize("parallel", ["twins", "layers"])
@pytest.mark.parametrize("min_flops", [0, 1e12], ids=["threads-used", "step-too-small"])
def test_iffcl_makes_every_product_with_one_blas_thread_whatever_the_caller_set(recorded_counts, monkeypatch,
                                                                                 parallel, min_flops):
    monkeypatch.setattr(machine, "PARALLEL_MIN_FLOPS", min_flops)
    x, y = _data()
    trainer = _trainer(threads=2, parallel=parallel)
    with limit_threads(usable_cores()):  # the caller allows every core
        trainer.train_epoch(x, y)
    assert recorded_counts and set(recorded_counts) == {1}


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores for two BLAS threads")
def test_backprop_uses_the_threads_of_its_configuration(monkeypatch):
    from vaelayer_np.core import backprop

    counts, step = [], backprop.train_step

    def counting(*args, **kwargs):
        counts.append(max(lib.get_num_threads() for lib in _LIBS))
        return step(*args, **kwargs)

    monkeypatch.setattr(backprop, "train_step", counting)
    x, y = _data()
    trainer = _trainer(method="backprop", threads=2)
    with limit_threads(1):  # the caller's limit is not the trainer's: the configuration says 2
        trainer.train_epoch(x, y)
        assert max(lib.get_num_threads() for lib in _LIBS) == 1  # and the caller's limit is back afterwards
    assert counts and set(counts) == {2}


def test_blas_threads_restores_the_counts_nested_and_after_an_error():
    before = [lib.get_num_threads() for lib in _LIBS]
    outer, inner = BlasThreads(1), BlasThreads(usable_cores())
    with pytest.raises(RuntimeError):
        with outer:
            assert max(lib.get_num_threads() for lib in _LIBS) == 1
            with inner:
                assert max(lib.get_num_threads() for lib in _LIBS) == usable_cores()
            assert max(lib.get_num_threads() for lib in _LIBS) == 1
            raise RuntimeError("stop")
    assert [lib.get_num_threads() for lib in _LIBS] == before
    with BlasThreads(None):  # None: the counts are left alone
        assert [lib.get_num_threads() for lib in _LIBS] == before
    with pytest.raises(ValueError, match="threads"):
        BlasThreads(0)


def _training_bits(trainer, x, y, epochs=2):
    metrics = []
    for _ in range(epochs):
        m = trainer.train_epoch(x, y)
        m.pop("seconds")
        metrics.append(m)
    state = {f"{n}.{k}": v.tobytes() for n, net in trainer.nets.items() for k, v in net.state_dict().items()}
    state["predictions"] = trainer.predict_proba(x).tobytes()  # what the accuracies of metrics.jsonl come from
    return metrics, state


@pytest.mark.parametrize("settings", [{}, {"head_weight": 1.0, "pass_on": "sample"}], ids=["defaults", "heads"])
def test_an_iffcl_run_gives_the_same_bits_with_any_threads_and_either_parallel(monkeypatch, settings):
    """Called as a user calls it (no limit around the trainer): threads 1, 2 with the twins, 2 with the layers
    pipelined, 2 with a step too small for threads (the serial step)."""
    x, y = _data(n=160)
    reference = _training_bits(_trainer(threads=1, epochs=2, **settings), x, y)
    for min_flops, parallel in ((0, "twins"), (0, "layers"), (1e12, "twins")):
        monkeypatch.setattr(machine, "PARALLEL_MIN_FLOPS", min_flops)
        got = _training_bits(_trainer(threads=2, parallel=parallel, epochs=2, **settings), x, y)
        assert got[0] == reference[0], f"metrics, parallel={parallel}, min_flops={min_flops}"
        assert got[1] == reference[1], f"parameters, parallel={parallel}, min_flops={min_flops}"


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores for two BLAS threads")
def test_iffcl_predicts_with_one_blas_thread_whatever_its_threads():
    """The accuracies of metrics.jsonl come from the trainer's predictions: IFFCL computes them with one BLAS
    thread, as its steps (a product split between two threads may round differently under some kernels)."""
    x, y = _data()
    trainer = _trainer(threads=2)
    counts = []
    for net in (trainer.net_a, trainer.net_b):
        predict = net.predict_proba

        def counting(inputs, predict=predict):
            counts.append(max(lib.get_num_threads() for lib in _LIBS))
            return predict(inputs)

        net.predict_proba = counting
    with limit_threads(2):  # the caller's limit is not the trainer's
        trainer.accuracy(x, y)
    assert counts == [1, 1]
