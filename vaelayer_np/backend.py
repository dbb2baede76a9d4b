"""Backend selection: ``numpy`` (the readable reference) or ``numba`` (compiled kernels).

A backend is a small namespace of the hot operations (see :mod:`.ops`). Layers,
losses and optimisers look their operations up here by name, so the same public
functions run on either backend.
"""
from __future__ import annotations

from types import SimpleNamespace

from ._validate import check_choice

BACKENDS = ("numpy", "numba")
_cache = {}


def default_backend():
    """``numba`` (measured faster for training, docs/performance.md) unless its JIT is disabled
    (NUMBA_DISABLE_JIT=1 runs the kernels as plain Python, far slower than NumPy)."""
    from numba.core import config as numba_config

    return "numpy" if numba_config.DISABLE_JIT else "numba"


def get_ops(name="numpy"):
    """Return the namespace of hot operations for backend ``name``."""
    check_choice("backend", name, BACKENDS)
    if name not in _cache:
        if name == "numpy":
            from . import losses, ops
            from .activations import get_activation
            _cache[name] = SimpleNamespace(
                name="numpy",
                matmul=ops.matmul,
                reparam_kl_forward=ops.reparam_kl_forward,
                reparam_kl_backward=ops.reparam_kl_backward,
                adam_update=ops.adam_update,
                cosine_embedding=losses.cosine_embedding,
                cosine_embedding_matrix=losses.cosine_embedding_matrix,
                softmax_cross_entropy=losses.softmax_cross_entropy,
                activation=get_activation,
            )
        else:
            from . import _kernels
            _cache[name] = _kernels.make_ops()
    return _cache[name]
