"""Lessons under pytest (nbmake): solutions only, in quick mode.

The student notebooks (notebooks/student/) stop at each exercise with NotImplementedError by
design, so they are not executed here; tests/test_course.py checks that they are the solutions
with the answers removed. Quick mode shortens the lessons' training runs.

The kernels inherit ``PYTHONWARNINGS``: an old spelling of a choice (``contrast="batch"``, ...,
vaelayer_np.core.settings.RENAMED) raises its DeprecationWarning as an error, so a lesson that
still uses one fails here.
"""
import os

from vaelayer_np.core.settings import RENAMED
from vaelayer_np.tools.release_course import QUICK_ENV

collect_ignore_glob = ["student/*"]
os.environ.setdefault(QUICK_ENV, "1")
_OLD_SPELLINGS = ",".join(f"error:{name}:DeprecationWarning" for name in RENAMED)
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS", ""), _OLD_SPELLINGS]))
