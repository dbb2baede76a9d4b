"""One source, two notebooks: solution lessons -> student lessons (nbgrader's convention).

The solution notebooks ``notebooks/NN_*.ipynb`` are the source. In them, the part a
student writes is marked::

    ### BEGIN SOLUTION
    ...the solution...
    ### END SOLUTION

In a code cell the marked lines become ``raise NotImplementedError()`` (at the indentation
of the BEGIN line); in a markdown cell (an inline question's answer) they become
``*Your answer here.*``. The student notebooks ``notebooks/student/NN_*.ipynb`` are
generated from the solutions with their outputs cleared. Both are committed; a test
regenerates the student notebooks and fails when they differ from the committed ones.

The solution notebooks also carry nbgrader's cell metadata (:func:`nbgrader_metadata`), so that
``nbgrader generate_assignment`` makes the same student notebooks from them, configured with our stubs
(:data:`NBGRADER_CONFIG`): an exercise's cell is a *solution* cell; a cell that runs an exercise's
checker is an *autograded test* cell worth one point per checker (a checker raises ``AssertionError``
with its diagnosis on FAIL when the environment variable ``VAELAYER_COURSE_AUTOGRADE`` is ``1``, as it
should be set for ``nbgrader autograde``); an inline question's answer is a *manually graded* answer
worth its rubric's points (:mod:`vaelayer_np.course.guide`); every other cell is *locked* (read-only).

Commands (``scripts/make_student_notebooks.py`` calls the same functions)::

    python -m vaelayer_np.tools.release_course             # regenerate notebooks/student/
    python -m vaelayer_np.tools.release_course --execute   # first run every solution notebook in full
                                                     # and store its outputs, then regenerate
    python -m vaelayer_np.tools.release_course --nbgrader-metadata NAME...   # (re)write the nbgrader
                                                     # metadata of the named lessons (and their student copies)
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_ANSWER = "*Your answer here.*"
ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "notebooks"
STUDENT = LESSONS / "student"
QUICK_ENV = "VAELAYER_LESSON_QUICK"  # "1": lessons train briefly (the test suite sets it)


def lesson_paths(folder: str | Path = LESSONS) -> list[Path]:
    """The solution notebooks, in order: ``NN_*.ipynb`` directly in ``folder``."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict[str, Any], text: str) -> None:
    lines = text.split("\n")
    cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


_BLOCK = re.compile(r"^([ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(END) + r"[^\n]*(\n|$)",
                    re.S | re.M)


def strip_solution(text: str, cell_type: str) -> str:
    """Replace every marked block of one cell's source; unbalanced markers raise ValueError."""
    if text.count(BEGIN) != text.count(END):
        raise ValueError(f"unbalanced solution markers ({text.count(BEGIN)} BEGIN, {text.count(END)} END) in:\n"
                         + text[:300])
    if cell_type == "code":
        return _BLOCK.sub(lambda m: f"{m.group(1)}raise NotImplementedError(){m.group(2)}", text)
    return _BLOCK.sub(lambda m: f"{m.group(1)}{STUDENT_ANSWER}{m.group(2)}", text)


# ----------------------------------------------------------------------------- nbgrader
NBGRADER_CONFIG = {"ClearSolutions": {"code_stub": {"python": "raise NotImplementedError()"},
                                      "text_stub": STUDENT_ANSWER}}
_DEFINED = re.compile(r"^\s*(?:def|class)\s+(\w+)", re.M)
_CHECKER_CALL = re.compile(r"(?<![\w.])(check_\w+)\s*\(")


def _exercise_checkers() -> set[str]:
    from ..course.answer_keys import KEYS

    return {checker for by_checker in KEYS.values() for checker in by_checker}


def _question_points(stem: str) -> list[int]:
    """Points of each inline question of a lesson, in order (from its rubric in the instructor's guide)."""
    from ..course.guide import LESSONS as GUIDE

    lesson: dict[str, Any] = GUIDE.get(stem, {})
    return [sum(points for points, _ in rubric) for rubric in lesson.get("rubrics", [])]


def nbgrader_metadata(nb: dict[str, Any], stem: str) -> dict[str, Any]:
    """Set nbgrader's metadata (schema 3) on every cell of a solution notebook (a dict, changed in place).

    * a code cell with a solution block: a solution cell, ``grade_id`` the name it defines;
    * a code cell that calls an exercise's checker (a ``check_*`` name of ``answer_keys.KEYS``): an
      autograded test cell, locked, one point per checker it calls (each counted once), ``grade_id``
      "test_" + the first;
    * a markdown cell with a solution block: a manually graded answer, worth its questions' rubric points;
    * every other cell: locked.
    Returns the notebook."""
    checkers = _exercise_checkers()
    points = _question_points(stem)
    question = 0
    used = set()

    def unique(name: str) -> str:
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    for i, cell in enumerate(nb["cells"]):
        text = _source(cell)
        meta: dict[str, Any] = {"schema_version": 3, "solution": False, "grade": False, "locked": True}
        calls = [] if cell["cell_type"] != "code" else \
            [m.group(1) for m in _CHECKER_CALL.finditer(text) if m.group(1) in checkers]
        if BEGIN in text and cell["cell_type"] == "code":
            defined = _DEFINED.search(text)
            meta.update(solution=True, locked=False, grade_id=unique(defined.group(1) if defined else f"solution_{i}"))
        elif BEGIN in text:
            n = text.count(BEGIN)
            worth = sum(points[question:question + n]) if question + n <= len(points) else n
            question += n
            meta.update(solution=True, grade=True, locked=False, task=False, points=worth,
                        grade_id=unique(f"question_{question}"))
        elif calls:
            meta.update(grade=True, points=len(set(calls)), grade_id=unique(f"test_{calls[0]}"))
        else:
            meta["grade_id"] = unique(f"cell_{cell.get('id', i)}")
        cell.setdefault("metadata", {})["nbgrader"] = meta
    return nb


def student_version(nb: dict[str, Any]) -> dict[str, Any]:
    """The student notebook (a new dict) made from a solution notebook (a dict)."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        _set_source(cell, strip_solution(_source(cell), cell["cell_type"]))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    out.get("metadata", {}).pop("vaelayer_np", None)
    return out


def code_hash(nb: dict[str, Any]) -> str:
    """A digest of every code cell's source: stored when a lesson is executed, so a test can
    tell whether the stored outputs come from the current code of the notebook."""
    h = hashlib.sha256()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            h.update(_source(cell).encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def release(src_folder: str | Path = LESSONS, dst_folder: str | Path = STUDENT) -> list[Path]:
    """Write the student version of every lesson; returns the paths written."""
    dst_folder = Path(dst_folder)
    dst_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in lesson_paths(src_folder):
        nb = json.loads(path.read_text())
        target = dst_folder / path.name
        target.write_text(dumps(student_version(nb)))
        written.append(target)
    return written




def execute(path: str | Path, timeout: int = 1800, quick: bool = False) -> Path:
    """Run one solution notebook top to bottom in a fresh kernel and store its outputs in place."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get(QUICK_ENV)
    os.environ[QUICK_ENV] = "1" if quick else "0"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_before is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = env_before
    data = json.loads(nbformat.writes(nb))
    data.setdefault("metadata", {})["vaelayer_np"] = {"code_hash": code_hash(data), "quick": bool(quick)}
    path.write_text(dumps(data))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the student notebooks from the solution lessons.")
    parser.add_argument("--execute", action="store_true", help="run every solution notebook first and store "
                                                               "its outputs")
    parser.add_argument("--only", default=None, help="with --execute: comma-separated notebook names to run")
    parser.add_argument("--nbgrader-metadata", nargs="+", default=None, metavar="NAME",
                        help="write nbgrader's cell metadata into the named solution notebooks and regenerate "
                             "their student notebooks (nothing else)")
    args = parser.parse_args(argv)
    if args.nbgrader_metadata:
        for name in args.nbgrader_metadata:
            path = LESSONS / (name if name.endswith(".ipynb") else f"{name}.ipynb")
            if not path.exists():
                parser.error(f"--nbgrader-metadata: no lesson {path.name} in {LESSONS}")
            nb = nbgrader_metadata(json.loads(path.read_text()), path.stem)
            path.write_text(dumps(nb))
            (STUDENT / path.name).write_text(dumps(student_version(nb)))
            print(f"nbgrader metadata written into {path.relative_to(ROOT)}; "
                  f"wrote {(STUDENT / path.name).relative_to(ROOT)}")
        return 0
    if args.execute:
        names = None if args.only is None else {n.strip() for n in args.only.split(",")}
        for path in lesson_paths():
            if names is None or path.name in names or path.stem in names:
                print(f"executing {path.name} ...", flush=True)
                execute(path)
    for path in release():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
