"""Checkers for the lesson notebooks (``notebooks/NN_*.ipynb``).

Each lesson has a module here, ``lessonNN``, whose ``check_*`` functions take the
function a student wrote, run it against the library's reference (a gradient check,
a comparison on random inputs, a small training run) and return a
:class:`~vaelayer_np.course.checks.CheckResult` that prints PASS or FAIL with the
figure it measured. :mod:`.checks` holds the shared machinery.
"""
from .checks import CheckResult, run_check

__all__ = ["CheckResult", "run_check"]
