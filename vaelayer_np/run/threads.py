"""BLAS threads: a limit for training and prediction.

The matrix products of a step (``ops.matmul``) run in the BLAS library NumPy was
built with (OpenBLAS in the wheels), which may start one thread per core.
:func:`limit_threads` caps that number for the code inside a ``with`` block,
through threadpoolctl; ``vaelayer train --threads N``, ``TrainConfig.threads``
and ``VAELayerClassifier(n_threads=N)`` use it. The default,
:data:`vaelayer_np.run.config.DEFAULT_THREADS`, and the measurement behind it
(:mod:`vaelayer_np.tools.threads_bench`) are described in docs/performance.md.
"""
from __future__ import annotations

import contextlib

from ..fast.machine import check_threads  # noqa: F401  (public here too)


@contextlib.contextmanager
def limit_threads(n):
    """Run the ``with`` block with at most ``n`` BLAS threads (``None``: leave the libraries as they are).

    Parameters
    ----------
    n : int >= 1, "auto" (:func:`vaelayer_np.fast.machine.auto_threads`: the idle cores) or None; more than
        the cores this process may use is lowered to that number

    The previous limits are restored on leaving the block, also after an exception.
    """
    from ..fast.machine import resolve_threads

    n = resolve_threads(n)
    if n is None:
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas") as limiter:
        yield limiter


def blas_threads():
    """The number of threads of each BLAS library loaded in this process, as a list of ints."""
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
