"""The layers pipelined (fast/pipeline.py): the serial training, bit for bit, whatever the stages."""
import itertools

import numpy as np
import pytest

from vaelayer_np.core._validate import NonFiniteError
from vaelayer_np.core.iffcl import ReadablePath
from vaelayer_np.core.settings import IFFCLSettings
from vaelayer_np.fast import machine
from vaelayer_np.fast import pipeline as pipeline_module
from vaelayer_np.fast.machine import depth_flops, limit_threads, usable_cores
from vaelayer_np.fast.pipeline import DrawnNoise, LayerPipeline, split_depths
from vaelayer_np.fast.training import FastPath
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.trainer import DivergenceError, Trainer


@pytest.fixture(autouse=True)
def _stages_even_for_small_steps(monkeypatch):
    """The trainer gives a step this small one stage (fast.machine.PARALLEL_MIN_FLOPS); here: as many as threads."""
    monkeypatch.setattr(machine, "PARALLEL_MIN_FLOPS", 0)


def _data(n=230, d=30, classes=4, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.integers(0, classes, n)


def _trainer(backend="numba", parallel="twins", threads=1, **settings):
    cfg = dict(dataset="arrays", widths=(16, 12, 10), batch_size=32, path="fast" if backend == "numba" else "readable",
               epochs=2,
               lr_schedule="cosine", beta_warmup_epochs=2, threads=min(threads, usable_cores()), parallel=parallel)
    cfg.update(settings)
    path = FastPath(backend) if backend == "numba" else ReadablePath()
    return Trainer(TrainConfig(**cfg), 30, 4, path=path)


def _assert_same_training(serial, other):
    for name in ("A", "B"):
        for key, value in serial.nets[name].state_dict().items():
            assert np.array_equal(value, other.nets[name].state_dict()[key]), f"net {name}, {key}"
    for key, opt in serial.optimizers.items():
        for k, v in opt.state_dict().items():
            assert np.array_equal(v, other.optimizers[key].state_dict()[k]), f"{key} {k}"
    assert serial.rng.bit_generator.state == other.rng.bit_generator.state


def _epochs(trainer, x, y, n=2):
    out = []
    for _ in range(n):
        means = trainer.train_epoch(x, y)
        means.pop("seconds")
        out.append(means)
    return out


SETTINGS = {
    "defaults": {},
    "hidden": {"encoder_hidden": 20},
    "output-partner": {"cosine_on": "output", "contrast": "partner", "pairing": "balanced"},
    "sample-bce": {"pass_on": "sample", "recon": "bce", "output_loss": "bce", "pairing": "mirror"},
    "heads": {"head_weight": 2.0, "encoder_hidden": 8},
    "readout-last": {"readout": "last", "head_weight": 0.5, "cosine_on": "output"},
}


@pytest.mark.parametrize("settings", list(SETTINGS.values()), ids=list(SETTINGS))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_pipelined_epochs_are_the_serial_epochs_bit_for_bit(backend, settings):
    x, y = _data()
    with limit_threads(1):  # the serial reference with one BLAS thread, as each stage has
        serial = _trainer(backend, **settings)
        expected = _epochs(serial, x, y)
    for threads in (1, 2):
        piped = _trainer(backend, parallel="layers", threads=threads, **settings)
        assert _epochs(piped, x, y) == expected, f"threads={threads}"
        _assert_same_training(serial, piped)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_any_number_of_stages_gives_the_serial_steps(stages):
    x, y = _data(n=32 * 7, seed=stages)
    cfg = dict(widths=(16, 12, 10, 8), encoder_hidden=12, head_weight=1.0, beta_warmup_epochs=0)
    with limit_threads(1):
        serial = _trainer(**cfg)
        expected = [serial.step(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    piped = _trainer(**cfg)
    pipe = LayerPipeline(piped.twins(), piped.base_lr, IFFCLSettings(lam=piped.config.lam, margin=piped.config.margin,
                                                                      head_weight=1.0), stages=stages)
    got = []
    for i in range(0, len(x), 32):
        done = pipe.push(x[i:i + 32], y[i:i + 32], piped.rng)
        got += done
        assert len(got) == max(0, i // 32 + 1 - (stages - 1))  # a batch leaves after `stages` ticks
    got += pipe.drain()
    pipe.close()
    assert len(pipe.depths) == stages and [k for r in pipe.depths for k in r] == [0, 1, 2, 3]
    assert got == expected
    _assert_same_training(serial, piped)


def test_the_check_catches_a_planted_fault_in_the_pipeline(monkeypatch):
    """Twin A's and twin B's noise swapped at every depth: the comparison above must see it."""
    x, y = _data()
    with limit_threads(1):
        serial = _trainer()
        expected = _epochs(serial, x, y, n=1)
    original = DrawnNoise.__init__
    monkeypatch.setattr(DrawnNoise, "__init__", lambda self, arrays: original(self, list(arrays)[::-1]))
    piped = _trainer(parallel="layers", threads=2)
    assert _epochs(piped, x, y, n=1) != expected
    with pytest.raises(AssertionError):
        _assert_same_training(serial, piped)


def test_a_stop_between_steps_finishes_the_started_batches_and_resumes_exactly():
    x, y = _data()
    with limit_threads(1):
        serial = _trainer()
        expected = _epochs(serial, x, y)
    piped = _trainer(parallel="layers", threads=2)
    calls = itertools.count()
    assert piped.train_epoch(x, y, should_stop=lambda: next(calls) == 4) is None
    assert piped.batch_index == 4  # the four batches started are finished: a consistent state to save
    state = piped.state_dict()
    resumed = _trainer(parallel="layers", threads=2)
    resumed.load_state_dict(state)
    first = resumed.train_epoch(x, y)
    second = resumed.train_epoch(x, y)
    for means in (first, second):
        means.pop("seconds")
    assert second == expected[1]
    for key in ("output_loss", "layer0_loss"):  # the first epoch's means: the same sums, in two parts
        assert first[key] == pytest.approx(expected[0][key], rel=1e-6)
    _assert_same_training(serial, resumed)


def test_a_failing_stage_raises_and_the_pipeline_refuses_to_go_on():
    x, y = _data()
    piped = _trainer(parallel="layers", threads=2)
    pipe = piped.layer_pipeline()
    pipe.push(x[:32], y[:32], piped.rng)
    layer = piped.nets["B"].vae_layers[2]  # in the second stage: its worker thread raises
    layer.params["W_mu"][...] = 1e30
    with pytest.raises(NonFiniteError):
        pipe.push(x[32:64], y[32:64], piped.rng)
        pipe.drain()
    with pytest.raises(RuntimeError, match="a stage failed earlier"):
        pipe.push(x[:32], y[:32], piped.rng)
    pipe.close()


def test_a_divergence_inside_a_pipelined_epoch_is_reported_by_name():
    x, y = _data()
    piped = _trainer(parallel="layers", threads=2)
    piped.nets["A"].vae_layers[1].params["W_mu"][...] = 1e30
    with pytest.raises(DivergenceError, match="non-finite"):
        piped.train_epoch(x, y)


def test_drawn_noise_serves_the_draws_in_order_and_refuses_any_other():
    a, b = np.ones((3, 2), np.float32), np.zeros((3, 2), np.float32)
    noise = DrawnNoise([a, b])
    out = np.empty((3, 2), np.float32)
    assert noise.standard_normal(out=out, dtype=np.float32) is out and np.array_equal(out, a)
    assert not noise.all_used()
    with pytest.raises(RuntimeError, match=r"\(3, 2\) float32, the step asks for \(3, 2\) float64"):
        noise.standard_normal((3, 2))
    assert noise.standard_normal((3, 2), dtype=np.float32) is b and noise.all_used()
    with pytest.raises(RuntimeError, match="more noise than was drawn"):
        noise.standard_normal((3, 2), dtype=np.float32)


def test_the_split_is_the_best_consecutive_split():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        costs = list(rng.integers(1, 50, n))
        stages = int(rng.integers(1, 6))
        ranges = split_depths(costs, stages)
        assert [k for r in ranges for k in r] == list(range(n)) and all(len(r) for r in ranges)
        assert len(ranges) == min(stages, n)
        best = min(max(sum(costs[a:b]) for a, b in zip((0,) + cut, cut + (n,)))
                   for cut in itertools.combinations(range(1, n), len(ranges) - 1))
        assert max(sum(costs[k] for k in r) for r in ranges) == best


def test_the_cost_of_a_depth_counts_its_products():
    trainer = _trainer(encoder_hidden=20)
    costs = depth_flops(trainer.net_a, 32)
    # depth 1 (input 16, hidden 20, latent 12), both twins: encoder and its weight gradient, the heads'
    # product, weight gradient and input gradient, the decoder's product, weight gradient, latent gradient
    assert costs[1] == 2 * 2 * 32 * (16 * 20 * 2 + 20 * 24 * 3 + 12 * 16 * 3)
    assert len(costs) == 3 and costs[2] > 2 * 2 * 32 * (12 * 20 * 2 + 20 * 20 * 3 + 10 * 12 * 3)  # + output


def test_the_setting_is_checked_and_may_change_on_resume():
    with pytest.raises(ValueError, match="parallel: unknown option 'stages'"):
        TrainConfig(dataset="digits", parallel="stages").validate()
    from vaelayer_np.run.config import RESUME_MAY_CHANGE

    assert "parallel" in RESUME_MAY_CHANGE
    assert _trainer(parallel="twins", threads=2).layer_pipeline() is None
    assert _trainer(parallel="layers", threads=2, method="backprop").layer_pipeline() is None
    assert pipeline_module.LayerPipeline is LayerPipeline


def test_the_trainer_gives_a_small_step_one_stage(monkeypatch):
    monkeypatch.setattr(machine, "PARALLEL_MIN_FLOPS", 80e6)
    small = _trainer(parallel="layers", threads=2, encoder_hidden=0)
    assert sum(depth_flops(small.net_a, 32)) < 80e6
    assert small.layer_pipeline().stages == 1
    big = _trainer(parallel="layers", threads=2, widths=(256, 256), encoder_hidden=1024)
    assert big.layer_pipeline().stages == min(2, usable_cores())


@pytest.mark.parametrize("parallel", ["twins", "layers"])
def test_worker_threads_handle_numpy_errors_as_the_caller(parallel):
    """NumPy's error state is per thread: an overflow on a worker must be reported like one on the caller,
    also when warnings are errors (no RuntimeWarning escaping from the worker)."""
    import warnings

    x, y = _data()
    config = _trainer(parallel=parallel, threads=2, log_var_bound=0).config
    trainer = Trainer(config, 30, 4)  # the trainer's own path: with "twins", twin B on a worker thread
    assert parallel == "layers" or type(trainer.path).__name__ == "ParallelFastPath" or usable_cores() < 2
    trainer.nets["B"].vae_layers[2].params["W_lv"][...] = 1e3  # the last depth: a worker thread's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DivergenceError):
            trainer.train_epoch(x, y)


def test_a_divergence_names_the_step_of_the_batch_that_failed(monkeypatch):
    x, y = _data()
    for parallel in ("twins", "layers"):
        trainer = _trainer(parallel=parallel, threads=2)
        layer, calls = trainer.net_a.vae_layers[0], [0]
        original = type(trainer.path).vae_forward

        def failing(path, lay, xx, rng, layer=layer, calls=calls, original=original):
            if lay is layer:
                calls[0] += 1
                if calls[0] == 4:
                    raise NonFiniteError("x: planted overflow")  # depth 0 of the 4th batch
            return original(path, lay, xx, rng)

        monkeypatch.setattr(type(trainer.path), "vae_forward", failing)
        with pytest.raises(DivergenceError) as caught:
            trainer.train_epoch(x, y)
        assert caught.value.step == 4, parallel
        monkeypatch.undo()


def test_beta_travels_with_its_batch():
    """A beta changed between two pushes reaches each batch's later depths as it was at its push."""
    from vaelayer_np.core import iffcl

    x, y = _data(n=64)

    def set_beta(trainer, beta):
        for net in trainer.nets.values():
            for layer in net.vae_layers:
                layer.beta = beta

    serial = _trainer(beta_warmup_epochs=0)
    with limit_threads(1):
        for beta, rows in ((1.0, slice(0, 32)), (0.1, slice(32, 64))):
            set_beta(serial, beta)
            iffcl.train_step(serial.net_a, serial.net_b, serial.optimizers, x[rows], y[rows], serial.rng,
                             IFFCLSettings(lam=serial.config.lam, margin=serial.config.margin), path=serial.path)
    piped = _trainer(beta_warmup_epochs=0)
    pipe = LayerPipeline(piped.twins(), piped.base_lr, IFFCLSettings(lam=piped.config.lam, margin=piped.config.margin),
                         stages=2)
    set_beta(piped, 7.0)  # the layers' own value is not used when a beta is given
    pipe.push(x[:32], y[:32], piped.rng, beta=1.0)
    pipe.push(x[32:], y[32:], piped.rng, beta=0.1)
    pipe.drain()
    pipe.close()
    _assert_same_training(serial, piped)


def test_drawn_noise_refuses_any_other_draw():
    noise = DrawnNoise([np.ones(2)])
    for draw in (lambda: noise.random(2), lambda: noise.integers(3), lambda: noise.permutation(4)):
        with pytest.raises(RuntimeError, match="only the noise drawn for it"):
            draw()
    assert isinstance(noise, np.random.Generator) and noise.standard_normal(2) is not None


def test_the_command_line_trains_pipelined_and_resumes_in_the_other_mode(tmp_path):
    """`vaelayer train --parallel layers`, then a resume with the twins in parallel: the same run as one
    trained serially (the setting may change on resume: every mode gives the same training)."""
    from vaelayer_np.cli import main
    from vaelayer_np.run.checkpoint import load_npz

    quick = ["--widths", "16,16", "--limit", "300", "--encoder-hidden", "0", "--no-progress", "--no-plots",
             "--lr-schedule", "constant"]  # (a cosine schedule would change with the number of epochs)
    threads = str(min(2, usable_cores()))
    piped, serial = tmp_path / "piped", tmp_path / "serial"
    assert main(["train", "--run-dir", str(piped), "--epochs", "1", "--parallel", "layers", "--threads", threads,
                 *quick]) == 0
    assert main(["train", "--resume", str(piped), "--epochs", "2", "--parallel", "twins"]) == 0
    with limit_threads(1):
        assert main(["train", "--run-dir", str(serial), "--epochs", "2", "--threads", "1", *quick]) == 0
    a, b = (load_npz(run / "checkpoint.npz") for run in (piped, serial))
    for key in a:
        if key.startswith(("A.", "B.", "opt.")):
            assert np.array_equal(a[key], b[key]), key
