"""Regenerate notebooks/student/ from the solution lessons (see vaelayer_np/tools/release_course.py).

    python scripts/make_student_notebooks.py             # regenerate the student notebooks
    python scripts/make_student_notebooks.py --execute   # run the lessons in full first, storing outputs
"""
import sys

from vaelayer_np.tools.release_course import main

if __name__ == "__main__":
    sys.exit(main())
