"""Lessons under pytest (nbmake): solutions only, in quick mode.

The student notebooks (notebooks/student/) stop at each exercise with NotImplementedError by
design, so they are not executed here; tests/test_course.py checks that they are the solutions
with the answers removed. Quick mode shortens the lessons' training runs.
"""
import os

from vaelayer_np.tools.release_course import QUICK_ENV

collect_ignore_glob = ["student/*"]
os.environ.setdefault(QUICK_ENV, "1")
