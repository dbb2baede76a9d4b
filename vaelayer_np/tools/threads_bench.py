"""The measurement behind the default number of BLAS threads (a tool, not the library).

    nice -n 19 python -m vaelayer_np.tools.threads_bench --measure

times a digits epoch and a Fashion-MNIST-size IFFCL step with 1 and 2 BLAS threads, first on the
machine as it is and then with a competing CPU load that it starts itself (one process per core
doing matrix products), and prints medians and ratios (docs/performance.md, section "BLAS threads").
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..fast.machine import blas_threads, limit_threads
from ..run.config import DEFAULT_THREADS


def _busy(seconds: float, parent: int) -> None:
    """A competing CPU load: matrix products for ``seconds``, or until process ``parent`` is gone (a child process)."""
    with contextlib.suppress(OSError):
        os.nice(19)
    a = np.random.default_rng(0).standard_normal((400, 400))
    end = time.time() + seconds
    while time.time() < end and os.getppid() == parent:
        a = np.tanh(a @ a.T / 400.0)


def _digits_epoch() -> tuple[str, Callable[[], None]]:
    """The workload's name (with the training split's size, read from the data) and the timed call."""
    from ..run.config import TrainConfig
    from ..run.data import load_dataset
    from ..run.trainer import Trainer

    ds = load_dataset("digits")
    trainer = Trainer(TrainConfig(dataset="digits"), ds.n_features, ds.n_classes)
    trainer.train_epoch(ds.x_train[:64], ds.y_train[:64])  # compile and warm up

    def run() -> None:
        trainer.train_epoch(ds.x_train, ds.y_train)
    batch = TrainConfig(dataset="digits").batch_size
    return f"digits epoch ({ds.x_train.shape[0]:,} examples, batch {batch})", run


def _fashion_step() -> Callable[[], None]:
    from ..run.config import TrainConfig
    from ..run.trainer import Trainer

    rng = np.random.default_rng(0)
    trainer = Trainer(TrainConfig(dataset="fashion-mnist"), 784, 10)
    x = rng.random((128, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    trainer.step(x, y)

    def run() -> None:
        trainer.step(x, y)
    return run


def _time_pair(fn: Callable[[], Any], repeats: int) -> dict[int, float]:
    """Median seconds of ``fn`` with 1 and with 2 BLAS threads, the repeats interleaved."""
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for n in (1, 2):
            with limit_threads(n):
                t0 = time.perf_counter()
                fn()
                times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def measure(repeats: int = 5, load_processes: int | None = None,
            log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Time a digits epoch and a Fashion-MNIST-size step with 1 and 2 BLAS threads, without and with a load.

    Parameters
    ----------
    repeats : int, timed repeats per case (medians are reported; 1 and 2 threads alternate)
    load_processes : int, competing processes for the loaded case (default: one per core)
    log : callable receiving each printed line

    Returns
    -------
    list of dict, one per (machine state, workload): ``state``, ``workload``, ``t1``, ``t2`` (seconds),
    ``ratio`` (t2 / t1; below 1 means 2 threads are faster).
    """
    load_processes = load_processes or os.cpu_count() or 1
    workloads = (_digits_epoch(),
                 ("Fashion-MNIST-size IFFCL step (batch 128)", _fashion_step()))
    log(f"BLAS threads measurement: {os.cpu_count()} cores, load average before: "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; {repeats} repeats, medians")
    results = []
    for state in ("as it is", f"+ {load_processes} competing processes"):
        procs = []
        if state != "as it is":
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_busy, args=(3600, os.getpid()), daemon=True) for _ in range(load_processes)]
            for p in procs:
                p.start()
            time.sleep(2.0)
        try:
            load = os.getloadavg()[0]
            for name, fn in workloads:
                t = _time_pair(fn, repeats)
                row = {"state": state, "workload": name, "t1": t[1], "t2": t[2], "ratio": t[2] / t[1],
                       "load1": load}
                results.append(row)
                log(f"  {state:<28s} {name:<44s} 1 thread {t[1] * 1e3:9.1f} ms   2 threads {t[2] * 1e3:9.1f} ms"
                    f"   2/1 {row['ratio']:.2f}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.join()
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """The results of :func:`measure` as a Markdown table."""
    lines = ["| machine | workload | 1 thread | 2 threads | time ratio 2/1 |", "|---|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['state']} (load avg {r['load1']:.1f}) | {r['workload']} | {r['t1'] * 1e3:.1f} ms | "
                     f"{r['t2'] * 1e3:.1f} ms | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelayer_np.tools.threads_bench",
                                     description="BLAS thread count: measure 1 against 2 threads.")
    parser.add_argument("--measure", action="store_true", help="run the measurement and print a Markdown table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-processes", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.measure:
        print(f"BLAS threads now: {blas_threads()}; default limit for training: {DEFAULT_THREADS}")
        return 0
    t0 = time.perf_counter()
    results = measure(args.repeats, args.load_processes)
    print()
    print(format_table(results))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
