"""The bench's measurements that need a process of their own (``python -m vaelayer_np.tools._bench_child``).

A fresh process gives a measurement its own memory peak, page faults, BLAS threads and compiled-kernel
cache state, and nothing left over from the bench's other sections. :mod:`vaelayer_np.tools.bench`
starts it and reads the one line it prints.

* ``epoch-steps STEPS PARALLEL``: ``STEPS`` training steps of a Fashion-MNIST trainer with the default
  settings (``threads="auto"``, ``parallel=PARALLEL``), after two steps of warm-up; prints a JSON object.
* ``epoch BACKEND``: one whole Fashion-MNIST epoch with the default settings on the path ``BACKEND`` names
  (``numba``: the fast path, ``numpy``: the readable path; ``fast`` and ``readable`` work too), then the page
  faults per step of two short epochs and the process's peak resident memory; prints seven numbers.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np


def epoch_steps(steps: int, parallel: str = "twins") -> None:
    from ..fast.machine import limit_threads, resolve_threads
    from ..fast.parallel import ParallelFastPath
    from ..run.config import TrainConfig
    from ..run.trainer import Trainer

    try:
        from ..run.data import load_dataset

        ds = load_dataset("fashion-mnist")
        x, y, source = ds.x_train, ds.y_train, "fashion-mnist"
    except Exception:  # noqa: BLE001 - no data files: the same shapes (a step's time does not depend on the values)
        rng = np.random.default_rng(0)
        x, y, source = rng.random((54000, 784), dtype=np.float32), rng.integers(0, 10, 54000), "synthetic"
    config = TrainConfig(dataset="fashion-mnist", parallel=parallel)  # the defaults, threads="auto" included
    trainer = Trainer(config, x.shape[1], 10)
    bs = config.batch_size
    assert bs is not None  # filled in when the trainer validated the configuration
    with limit_threads(config.threads):  # as `vaelayer train` runs it
        trainer.train_epoch(x[:2 * bs], y[:2 * bs])  # compile and warm up
        n = steps * bs
        t0 = time.perf_counter()
        trainer.train_epoch(x[:n], y[:n])
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "steps": steps, "batch": config.batch_size, "source": source,
                      "threads": resolve_threads(config.threads),
                      "parallel_twins": isinstance(trainer.path, ParallelFastPath), "parallel": parallel}))


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def epoch(backend: str) -> None:
    from ..fast.machine import limit_threads
    from ..run.config import TrainConfig
    from ..run.data import load_dataset
    from ..run.trainer import Trainer

    ds = load_dataset("fashion-mnist")
    # the bench names the two paths by their kernels: "numba" is the fast path, "numpy" the readable one
    config = TrainConfig(dataset="fashion-mnist", path={"numba": "fast", "numpy": "readable"}.get(backend, backend))
    trainer = Trainer(config, ds.n_features, ds.n_classes)
    with limit_threads(config.threads):  # as `vaelayer train` runs it
        trainer.step(ds.x_train[:128], ds.y_train[:128])  # compile (cached) outside the timed epoch
        f0 = _faults()
        t0 = time.perf_counter()
        trainer.train_epoch(ds.x_train, ds.y_train)
        seconds = time.perf_counter() - t0
        first = _faults() - f0
        per_step, last = [], [_faults()]

        def on_step(i: int, n: int, m: dict[str, float]) -> None:
            now = _faults()
            per_step.append(now - last[0])
            last[0] = now

        for _ in range(2):  # two more epochs of 50 steps; the faults of each step after the first epoch
            trainer.train_epoch(ds.x_train[:128 * 50], ds.y_train[:128 * 50], on_step=on_step)
    # VmHWM is this process's own peak; ru_maxrss would also count the parent's peak before exec
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as status:
        peak = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")), peak)
    print(seconds, trainer.steps_per_epoch, first, statistics.median(per_step), sum(per_step) / len(per_step), peak,
          config.threads)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["epoch-steps"] and len(argv) in (2, 3):
        epoch_steps(int(argv[1]), *argv[2:])
    elif argv[:1] == ["epoch"] and len(argv) == 2:
        epoch(argv[1])
    else:
        raise SystemExit("usage: python -m vaelayer_np.tools._bench_child "
                         "(epoch-steps STEPS [PARALLEL] | epoch BACKEND)")


if __name__ == "__main__":
    main()
