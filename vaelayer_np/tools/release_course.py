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

Commands (``scripts/make_student_notebooks.py`` calls the same functions)::

    python -m vaelayer_np.tools.release_course             # regenerate notebooks/student/
    python -m vaelayer_np.tools.release_course --execute   # first run every solution notebook in full
                                                     # and store its outputs, then regenerate
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_ANSWER = "*Your answer here.*"
ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "notebooks"
STUDENT = LESSONS / "student"
QUICK_ENV = "VAELAYER_LESSON_QUICK"  # "1": lessons train briefly (the test suite sets it)


def lesson_paths(folder=LESSONS):
    """The solution notebooks, in order: ``NN_*.ipynb`` directly in ``folder``."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell, text):
    lines = text.split("\n")
    cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


_BLOCK = re.compile(r"^([ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(END) + r"[^\n]*(\n|$)",
                    re.S | re.M)


def strip_solution(text, cell_type):
    """Replace every marked block of one cell's source; unbalanced markers raise ValueError."""
    if text.count(BEGIN) != text.count(END):
        raise ValueError(f"unbalanced solution markers ({text.count(BEGIN)} BEGIN, {text.count(END)} END) in:\n"
                         + text[:300])
    if cell_type == "code":
        return _BLOCK.sub(lambda m: f"{m.group(1)}raise NotImplementedError(){m.group(2)}", text)
    return _BLOCK.sub(lambda m: f"{m.group(1)}{STUDENT_ANSWER}{m.group(2)}", text)


def student_version(nb):
    """The student notebook (a new dict) made from a solution notebook (a dict)."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        _set_source(cell, strip_solution(_source(cell), cell["cell_type"]))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    out.get("metadata", {}).pop("vaelayer_np", None)
    return out


def code_hash(nb):
    """A digest of every code cell's source: stored when a lesson is executed, so a test can
    tell whether the stored outputs come from the current code of the notebook."""
    h = hashlib.sha256()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            h.update(_source(cell).encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def dumps(nb):
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def release(src_folder=LESSONS, dst_folder=STUDENT):
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


def execute(path, timeout=1800, quick=False):
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


def main(argv=None):
    parser = argparse.ArgumentParser(description="Regenerate the student notebooks from the solution lessons.")
    parser.add_argument("--execute", action="store_true", help="run every solution notebook first and store "
                                                               "its outputs")
    parser.add_argument("--only", default=None, help="with --execute: comma-separated notebook names to run")
    args = parser.parse_args(argv)
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
