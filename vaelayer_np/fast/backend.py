"""The kernel backend of the fast path: ``numpy`` (the reference operations of :mod:`vaelayer_np.core.ops`)
or ``numba`` (compiled kernels); and the training path a run takes (:data:`PATHS`).

Two different choices, named apart: a run trains on the **readable** path (the layers' own NumPy forward
and backward, :class:`vaelayer_np.core.iffcl.ReadablePath`) or on the **fast** path
(:class:`vaelayer_np.fast.training.FastPath`: the same steps in reused buffers, with this module's
``numba`` kernels); ``TrainConfig.path``, ``vaelayer train --path`` and ``VAELayerClassifier(path=...)``
choose it. A backend, below, is what the fast path computes with.

A backend is a small namespace of the hot operations. Both namespaces have the
same names; the table below is the one place that says which implementation
each backend uses:

=======================  ===================================  ===========================================
name                     ``numpy`` (reference)                ``numba``
=======================  ===================================  ===========================================
matmul                   :func:`.ops.matmul` (BLAS)           the same function
matmul_into              :func:`.ops.matmul_into` (BLAS)      the same function
mse_value_and_grad       :func:`.ops.mse_value_and_grad`      kernel ``kernels.mse_value_and_grad``
reparameterize           :func:`.ops.reparameterize`          the same function (NumPy's SIMD ``exp``)
kl_diag_gaussian         :func:`.ops.kl_diag_gaussian`        kernel ``kernels.kl_diag_gaussian``
latent_backward          :func:`.ops.latent_backward`         kernel ``kernels.latent_backward``
adam_update              :func:`.ops.adam_update`             kernel ``kernels.adam_update``
cosine_embedding         :func:`.ops.cosine_embedding`        kernel ``kernels.cosine_embedding``
cosine_embedding_matrix  :func:`.ops.cosine_embedding_matrix` kernel ``kernels.cosine_embedding_matrix``
softmax_cross_entropy    :func:`.ops.softmax_cross_entropy`   kernel ``kernels.softmax_cross_entropy``
activation(name)         :func:`.activations.get_activation`  kernels ``kernels.make_activation``
=======================  ===================================  ===========================================

Layers, losses and optimisers look their operations up here by name. None of
these functions validates its inputs; the public functions and methods that
call them do.
"""
from __future__ import annotations

from types import SimpleNamespace

from ..core._validate import check_choice

BACKENDS = ("numpy", "numba")
_cache: dict[str, SimpleNamespace] = {}

PATHS = ("readable", "fast")
"""The training paths a run can take (``TrainConfig.path``): the layers' own NumPy code, or the fast path."""

# The old spelling of the training path: ``backend="numpy"`` was the readable path, ``backend="numba"`` the
# fast path (with the numba kernels). Accepted until core.settings.REMOVED_IN, with a DeprecationWarning.
PATH_OF_OLD_BACKEND = {"numpy": "readable", "numba": "fast"}


def default_path() -> str:
    """``fast`` (measured faster for a training step, docs/performance.md) unless Numba's JIT is disabled
    (``NUMBA_DISABLE_JIT=1`` runs the kernels as plain Python, far slower than NumPy): then ``readable``."""
    return "fast" if default_backend() == "numba" else "readable"


def path_of_old_backend(value: str, where: str, stacklevel: int = 3) -> str:
    """The training path the old spelling ``backend=value`` meant (``"numpy"``: readable, ``"numba"``: fast),
    with a DeprecationWarning naming ``where`` it was given (``stacklevel``: the caller's frame to blame);
    a value other than those two raises ValueError."""
    import warnings

    from ..core.settings import REMOVED_IN

    check_choice("backend", value, BACKENDS)
    path = PATH_OF_OLD_BACKEND[value]
    warnings.warn(f"{where}: backend={value!r} is now path={path!r} (the training path; the numba and numpy "
                  f"backends are the fast path's kernels); the old spelling will be removed in release {REMOVED_IN}",
                  DeprecationWarning, stacklevel=stacklevel)
    return path


def default_backend() -> str:
    """``numba`` (measured faster for a training step, docs/performance.md) unless its JIT is disabled
    (``NUMBA_DISABLE_JIT=1`` runs the kernels as plain Python, far slower than NumPy)."""
    from numba.core import config as numba_config

    return "numpy" if numba_config.DISABLE_JIT else "numba"  # type: ignore[attr-defined]  # numba's config is set at run time


def get_ops(name: str = "numpy") -> SimpleNamespace:
    """Return the namespace of hot operations for backend ``name``."""
    check_choice("backend", name, BACKENDS)
    if name not in _cache:
        if name == "numpy":
            from ..core import ops
            from ..core.activations import get_activation

            _cache[name] = SimpleNamespace(
                name="numpy",
                matmul=ops.matmul,
                matmul_into=ops.matmul_into,
                mse_value_and_grad=ops.mse_value_and_grad,
                reparameterize=ops.reparameterize,
                kl_diag_gaussian=ops.kl_diag_gaussian,
                latent_backward=ops.latent_backward,
                adam_update=ops.adam_update,
                cosine_embedding=ops.cosine_embedding,
                cosine_embedding_matrix=ops.cosine_embedding_matrix,
                softmax_cross_entropy=ops.softmax_cross_entropy,
                activation=get_activation,
            )
        else:
            from . import kernels as fast_kernels

            _cache[name] = fast_kernels.make_ops()
    return _cache[name]
