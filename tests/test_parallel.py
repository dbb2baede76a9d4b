"""The twins in parallel (fast/parallel.py): the same parameters and metrics as the serial step, bit for bit."""
import numpy as np
import pytest

from vaelayer_np.core._validate import NonFiniteError
from vaelayer_np.fast.machine import auto_threads, limit_threads, resolve_threads
from vaelayer_np.fast.parallel import ParallelFastPath, training_path
from vaelayer_np.fast.training import FastPath
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import Trainer


def _pair(backend="numba", **kw):
    path = {"numba": "fast", "numpy": "readable"}[backend]  # the config's name of the path these kernels are on
    cfg = dict(dataset="digits", widths=(24, 16, 12), batch_size=32, path=path, lr_schedule="constant", **kw)
    serial = Trainer(TrainConfig(**cfg), 40, 5, path=FastPath(backend))
    parallel = Trainer(TrainConfig(**cfg), 40, 5, path=ParallelFastPath(backend, min_flops=0))  # even this small
    return serial, parallel


@pytest.mark.parametrize("settings", [{}, {"encoder_hidden": 20}, {"cosine_on": "output", "contrast": "partner"},
                                      {"pass_on": "sample", "recon": "bce", "output_loss": "bce"},
                                      {"head_weight": 2.0}, {"head_weight": 0.5, "cosine_on": "output"}],
                         ids=["defaults", "hidden", "output-pairs", "sample-bce", "heads", "heads-output"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_parallel_step_is_bit_identical_to_the_serial_step(backend, settings):
    serial, parallel = _pair(backend, **settings)
    rng = np.random.default_rng(3)
    with limit_threads(1):  # the serial reference with one BLAS thread, as each twin has
        for _ in range(5):
            x, y = rng.random((32, 40)).astype(np.float32), rng.integers(0, 5, 32)
            m_serial, m_parallel = serial.step(x, y), parallel.step(x, y)
            assert m_serial == m_parallel
    for name in ("A", "B"):
        for key, value in serial.nets[name].state_dict().items():
            assert np.array_equal(value, parallel.nets[name].state_dict()[key]), f"net {name}, {key}"
    for key, opt in serial.optimizers.items():
        for k, v in opt.state_dict().items():
            assert np.array_equal(v, parallel.optimizers[key].state_dict()[k]), f"{key} {k}"
    assert serial.rng.bit_generator.state == parallel.rng.bit_generator.state


def test_an_error_in_a_twin_is_raised_and_the_path_still_works():
    serial, parallel = _pair()
    x, y = np.random.default_rng(0).random((32, 40)).astype(np.float32), np.arange(32) % 5
    parallel.step(x, y)
    layer = parallel.nets["B"].vae_layers[1]
    saved = layer.params["W_mu"].copy()
    layer.params["W_mu"][...] = 1e30  # twin B's KL overflows: its forward raises on the worker thread
    with pytest.raises(NonFiniteError):
        parallel.step(x, y)
    layer.params["W_mu"][...] = saved
    fresh = Trainer(parallel.config, 40, 5, path=parallel.path)  # the worker thread is still usable
    assert np.isfinite(fresh.step(x, y)["output_loss"])


def test_threads_choose_the_path():
    assert isinstance(training_path("fast", threads=2), ParallelFastPath)
    assert type(training_path("fast", threads=1)) is FastPath
    assert not isinstance(training_path("readable", threads=2), FastPath)
    assert 1 <= auto_threads() <= resolve_threads(64)
    assert resolve_threads("auto") == auto_threads() and resolve_threads("2") == min(2, resolve_threads(64))
    assert TrainConfig(dataset="digits").threads == "auto"
    assert TrainConfig(dataset="digits", threads="1").validate().threads == 1
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(dataset="digits", threads="many").validate()


def test_a_step_too_small_for_threads_runs_serially_with_the_same_result():
    from vaelayer_np.fast.machine import PARALLEL_MIN_FLOPS, depth_flops

    cfg = dict(dataset="digits", widths=(24, 16, 12), batch_size=32, encoder_hidden=0, lr_schedule="constant")
    small = Trainer(TrainConfig(**cfg), 40, 5, path=ParallelFastPath("numba"))
    assert sum(depth_flops(small.net_a, 32)) < PARALLEL_MIN_FLOPS
    serial = Trainer(TrainConfig(**cfg), 40, 5, path=FastPath("numba"))
    x, y = np.random.default_rng(0).random((32, 40)).astype(np.float32), np.arange(32) % 5
    with limit_threads(1):
        assert small.step(x, y) == serial.step(x, y)
    assert small.path._pool is None  # no worker thread was started
    big = Trainer(TrainConfig(**cfg), 40, 5, path=ParallelFastPath("numba", min_flops=1))
    big.step(x, y)
    assert big.path._pool is not None


def test_the_default_model_of_every_dataset_is_above_the_serial_threshold():
    """docs/performance.md: the defaults are above PARALLEL_MIN_FLOPS on every dataset, so threads are used."""
    from math import prod

    from vaelayer_np.fast.machine import PARALLEL_MIN_FLOPS, depth_flops
    from vaelayer_np.run.config import IMAGE_SHAPES
    from vaelayer_np.run.data import DATASETS

    for name in DATASETS:
        config = TrainConfig(dataset=name, path="readable")
        net = Trainer(config, prod(IMAGE_SHAPES[name]), 10).net_a
        assert sum(depth_flops(net, config.batch_size)) >= PARALLEL_MIN_FLOPS, name
    assert sum(depth_flops(net, 32)) > sum(depth_flops(net, 16))  # the count grows with the batch
