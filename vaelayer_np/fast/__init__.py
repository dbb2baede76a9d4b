"""The fast path: Numba kernels, the backend table and the buffered training step.

Built on :mod:`vaelayer_np.core` and tested equal to it (``tests/test_speed_equivalence.py``,
``tests/test_kernels.py``). The readable core never imports this package: whoever trains
(the trainer, the estimator, the bench) chooses it with ``path="fast"``.
"""
