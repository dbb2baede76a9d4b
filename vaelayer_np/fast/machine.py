"""The machine, in one place: the cores this process may use, the memory it may take, the BLAS threads of
its products (:class:`BlasThreads`), and how many threads a run may use: ``threads="auto"`` looks at the
machine, a number is taken as given (:func:`check_threads`, :func:`resolve_threads`).

``auto`` counts the cores this process may run on (``os.sched_getaffinity``) that are idle now,
from two readings of ``/proc/stat`` 0.2 s apart: a core counts as idle when at least half of its
time in that interval was idle. Time of *niced* processes counts as busy: a nice-5 job still takes a
quarter of a core it shares with a normal thread, and with one thread the scheduler moves such jobs
off our core, with two it cannot (measured: 2 threads beside two nice-5 jobs on 2 cores gave a
1.11-1.24x slower epoch than 1 thread; docs/performance.md). Where ``/proc/stat`` cannot be read,
the load average is used instead (cores minus the 1-minute load, rounded). At least 1; the answer
is kept for the process's lifetime, so a run decides once (its trainer and its BLAS limit agree).

What the count means for training (:class:`vaelayer_np.run.trainer.Trainer`):

* IFFCL on the fast path, 2 or more: the twins run in parallel, one thread and one BLAS thread
  each (:class:`vaelayer_np.fast.parallel.ParallelFastPath`), or the layers pipelined
  (``parallel="layers"``, :mod:`vaelayer_np.fast.pipeline`); 1: the serial step. A step whose matrix
  products are fewer than :data:`PARALLEL_MIN_FLOPS` runs serially whatever the count: there the
  threads' hand-overs cost more than they save. In every case each IFFCL product runs on one BLAS
  thread (:class:`BlasThreads`, set by the trainer), so the count never changes an IFFCL run's bits;
* the backprop baseline (one network, nothing to run side by side): that many BLAS threads.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core._validate import is_bool

AUTO = "auto"

# ----------------------------------------------------------------------------- the machine: cores and memory
def check_threads(n: Any, name: str = "threads", cap: bool = False) -> int | None:
    """``n`` as a positive int, or None (no limit); anything else raises ValueError naming ``name``.

    A count above the cores this process may use (:func:`usable_cores`) is refused, or with
    ``cap=True`` lowered to that number (a stored setting from a larger machine).
    """
    if n is None:
        return None
    if isinstance(n, np.ndarray) and n.ndim == 0:
        n = n[()]
    if is_bool(n) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected a positive integer (BLAS threads) or None, got {n!r}")
    cores = usable_cores()
    if n > cores:
        if cap:
            return cores
        raise ValueError(f"{name}: {n} threads is more than the {cores} core{'' if cores == 1 else 's'} this process "
                         f"may use; expected an integer in 1..{cores}")
    return int(n)


def usable_cores() -> int:
    """The number of cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory a new allocation may use, or None where unknown.

    The smaller of the system's available memory (``MemAvailable`` in /proc/meminfo) and, under
    ``ulimit -v``, the address space left below that limit.
    """
    import resource

    limits = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        soft = resource.RLIM_INFINITY
    if soft != resource.RLIM_INFINITY:
        used = 0
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
        limits.append(max(0, soft - used))
    return min(limits) if limits else None


def format_bytes(n: float) -> str:
    """``"1.5 GB"``, ``"800 MB"``, ``"12 kB"`` (powers of 1000)."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(name: str, nbytes: int, what: str) -> int:
    """Refuse, naming ``name``, an allocation of about ``nbytes`` bytes that the memory available cannot hold."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(f"{name}: {what} needs about {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(available)} available; choose smaller sizes")
    return nbytes


PARALLEL_MIN_FLOPS = 80e6
"""The FLOPs of an IFFCL step's matrix products (:func:`depth_flops`, summed) below which two threads do not
pay: measured on 2 cores (docs/performance.md, "Small steps run serially"), 3 VAE layers with linear
encoders: 11.5 MFLOP per step took 1.86x and 45 MFLOP 1.09-1.24x the serial step's time with the twins in
parallel, 120 MFLOP 0.91-0.92x, 178 MFLOP 0.75x, 700 MFLOP 0.70-0.76x."""


class BlasThreads:
    """The BLAS libraries (OpenBLAS, and any other threadpoolctl sees) at ``n`` threads inside ``with``; the
    counts they had are restored on leaving.

    Why it matters for results, not only for speed: OpenBLAS splits a matrix product between its threads,
    and how it splits (and so which of its kernels adds which partial sums) depends on the thread count
    and on the CPU kernel it picked (``OPENBLAS_CORETYPE``: Haswell, SkylakeX, Sandybridge, ...). The same
    product with one and with two BLAS threads may differ in the last bits under one kernel and agree under
    another. Two computations are therefore equal bit for bit only when they make the same products with
    the same number of BLAS threads; every training path sets that number itself, with this class.

    The libraries are looked up once (threadpoolctl's ``threadpool_limits`` scans the loaded libraries at
    each call); setting and reading the counts is then a few microseconds, cheap enough for every step.
    ``n=None`` leaves the counts as they are.
    """

    def __init__(self, n: int | None = 1) -> None:
        self.n = None if n is None else check_threads(n)
        self._libs: list[Any] | None = None
        self._saved: list[list[int]] = []

    def __enter__(self) -> BlasThreads:
        if self.n is None:
            return self
        if self._libs is None:
            from threadpoolctl import ThreadpoolController

            self._libs = ThreadpoolController().select(user_api="blas").lib_controllers
        assert self._libs is not None
        saved = [lib.get_num_threads() for lib in self._libs]
        self._saved.append(saved)
        for lib, count in zip(self._libs, saved):
            if count != self.n:
                lib.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.n is None or self._libs is None:
            return
        for lib, count in zip(self._libs, self._saved.pop()):
            if count != self.n:
                lib.set_num_threads(count)

    def __getstate__(self) -> dict[str, Any]:  # the library handles are not picklable: looked up again after loading
        return {"n": self.n, "_libs": None, "_saved": []}


def depth_flops(net: Any, n: int) -> list[int]:
    """FLOPs of the matrix products of one IFFCL step at each depth of ``net`` (both twins), batch ``n``.

    Per twin and VAE layer (input D, encoder hidden E or none, latent K): the encoder's product and its
    weight gradient, the heads' product, weight gradient (and input gradient when E is there), the
    decoder's product, weight gradient and latent gradient. The output layer's products are added to the
    last depth; local heads (a few classes wide: a small share) are left out. A list of numbers, one per
    VAE layer: an estimate of each depth's cost, used to balance pipeline stages and to leave small steps
    serial.
    """
    costs = []
    for layer in net.vae_layers:
        d, k, e = layer.in_dim, layer.latent_dim, layer.encoder_hidden
        if e:
            per_twin = 2 * (d * e) * 2 + 2 * (e * 2 * k) * 3 + 2 * (k * d) * 3
        else:
            per_twin = 2 * (d * 2 * k) * 2 + 2 * (k * d) * 3
        costs.append(2 * n * per_twin)
    out = net.output
    costs[-1] += 2 * 2 * n * out.in_dim * out.n_classes * 2
    return costs


def worth_parallel(net: Any, n: int, min_flops: float | None = None) -> bool:
    """True if an IFFCL step of ``net`` on a batch of ``n`` has at least ``min_flops`` FLOPs of matrix
    products (default: :data:`PARALLEL_MIN_FLOPS`, read at the call): large enough for two threads to pay."""
    return sum(depth_flops(net, n)) >= (PARALLEL_MIN_FLOPS if min_flops is None else min_flops)


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """cpu index -> (idle jiffies: idle + iowait, total jiffies), from /proc/stat."""
    times = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name = line.split(maxsplit=1)[0]
            if not name.startswith("cpu") or name == "cpu":
                continue
            index = int(name[3:])
            if index not in cpus:
                continue
            v = [int(f) for f in line.split()[1:]]
            user, nice, system, idle, iowait = v[:5]
            times[index] = (idle + iowait, sum(v[:8]))
    return times


def idle_cores(interval: float = 0.2) -> int | None:
    """The number of this process's cores idle over ``interval`` seconds.

    Returns an int (each core counted when at least half of its time was idle), or None if
    ``/proc/stat`` cannot be read.
    """
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    try:
        before = _cpu_times(cpus)
        time.sleep(interval)
        after = _cpu_times(cpus)
    except (OSError, ValueError, IndexError):
        return None
    count = 0
    for cpu, (avail1, total1) in after.items():
        avail0, total0 = before.get(cpu, (avail1, total1))
        total = total1 - total0
        if total > 0 and (avail1 - avail0) / total >= 0.5:
            count += 1
    return count


@functools.lru_cache(maxsize=1)
def auto_threads() -> int:
    """The thread count of ``threads="auto"``: the idle cores now, at least 1, at most the usable cores."""
    cores = usable_cores()
    if cores == 1:
        return 1
    idle = idle_cores()
    if idle is None:
        try:
            idle = round(cores - os.getloadavg()[0])
        except OSError:
            idle = 1
    return max(1, min(cores, int(idle)))


def resolve_threads(n: int | str | None) -> int | None:
    """``n`` as a number of threads: ``"auto"`` (:func:`auto_threads`), None (None: the libraries' own
    count), or a positive int (capped at the usable cores)."""
    if isinstance(n, str) and n == AUTO:
        return auto_threads()
    if isinstance(n, str) and n.isdigit():
        n = int(n)
    return check_threads(n, cap=True)


# ----------------------------------------------------------------------------- a with-block's BLAS thread limit
@contextlib.contextmanager
def limit_threads(n: int | str | None) -> Iterator[Any]:
    """Run the ``with`` block with at most ``n`` BLAS threads (``None``: leave the libraries as they are).

    The matrix products of a step (``ops.matmul``) run in the BLAS library NumPy was built with (OpenBLAS
    in the wheels), which may start one thread per core; this caps that number for the code inside the
    block, through threadpoolctl. ``vaelayer train --threads N``, ``TrainConfig.threads`` and
    ``VAELayerClassifier(n_threads=N)`` use it. The default, :data:`vaelayer_np.run.config.DEFAULT_THREADS`,
    and the measurement behind it (:mod:`vaelayer_np.tools.threads_bench`) are described in
    docs/performance.md.

    Parameters
    ----------
    n : int >= 1, "auto" (:func:`auto_threads`: the idle cores) or None; more than the cores this process
        may use is lowered to that number

    The previous limits are restored on leaving the block, also after an exception.
    """
    threads = resolve_threads(n)
    if threads is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas") as limiter:
        yield limiter


def blas_threads() -> list[int]:
    """The number of threads of each BLAS library loaded in this process, as a list of ints."""
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
