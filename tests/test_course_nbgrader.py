"""The lessons fit nbgrader: its cell metadata in the solution notebooks, its generator makes our student
notebooks, and its autograder scores the check cells (a checker raises with its diagnosis when graded).

``vaelayer_np.tools.release_course.nbgrader_metadata`` marks the cells: exercises are solution cells, check
cells autograded tests (locked, a point per checker), inline questions manually graded answers worth their
rubric's points, every other cell locked. With ``VAELAYER_COURSE_AUTOGRADE=1`` a checker's FAIL raises
``AssertionError`` with its verdict, which is what makes an nbgrader test cell fail.
"""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vaelayer_np.course import lesson02
from vaelayer_np.course.answer_keys import AUTOGRADE_ENV
from vaelayer_np.course.guide import LESSONS as GUIDE
from vaelayer_np.tools.release_course import (
    BEGIN,
    NBGRADER_CONFIG,
    STUDENT,
    lesson_paths,
    nbgrader_metadata,
    student_version,
)

from .course_helpers import stub
from .test_course_lesson02 import mse_backward

PATHS = lesson_paths()


def _load(path):
    return json.loads(path.read_text())


def _text(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_solution_notebooks_carry_the_nbgrader_metadata_of_their_cells(path):
    """Stored as the release tool computes it (run ``python -m vaelayer_np.tools.release_course
    --nbgrader-metadata NAME`` after adding or moving a cell)."""
    nb = _load(path)
    stored = [c.get("metadata", {}).get("nbgrader") for c in nb["cells"]]
    expected = [c["metadata"]["nbgrader"] for c in nbgrader_metadata(_load(path), path.stem)["cells"]]
    assert stored == expected, f"{path.name}: nbgrader metadata missing or stale"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_the_metadata_marks_exercises_checks_questions_and_locks_the_rest(path):
    nb = nbgrader_metadata(_load(path), path.stem)
    metas = [c["metadata"]["nbgrader"] for c in nb["cells"]]
    assert len({m["grade_id"] for m in metas}) == len(metas), "grade ids must be unique"
    questions = []
    for cell, meta in zip(nb["cells"], metas):
        text = _text(cell)
        assert meta["schema_version"] == 3
        if BEGIN in text:
            assert meta["solution"] and not meta["locked"], text[:80]
            if cell["cell_type"] == "markdown":
                assert meta["grade"]
                questions.append(meta["points"])
            else:
                assert not meta["grade"]
        elif meta["grade"]:
            assert cell["cell_type"] == "code" and "check_" in text and meta["locked"] and meta["points"] >= 1
        else:
            assert meta["locked"] and not meta["solution"], text[:80]
    assert any(m["grade"] and not m["solution"] for m in metas), f"{path.name}: no autograded check cell"
    rubric_points = [sum(p for p, _ in rubric) for rubric in GUIDE[path.stem]["rubrics"]]
    assert sum(questions) == sum(rubric_points) and len(questions) <= len(rubric_points)


def test_a_checker_raises_with_its_diagnosis_on_fail_only_when_autograded(monkeypatch):
    monkeypatch.delenv(AUTOGRADE_ENV, raising=False)
    assert not lesson02.check_mse_backward(stub).passed  # a verdict, no exception, in a lesson
    monkeypatch.setenv(AUTOGRADE_ENV, "1")
    with pytest.raises(AssertionError, match="FAIL  mse_backward.*not implemented"):
        lesson02.check_mse_backward(stub)
    with pytest.raises(AssertionError, match="N\\*D times the right answer"):
        lesson02.check_mse_backward(lambda x_hat, x: 2 * (x_hat - x))
    assert lesson02.check_mse_backward(mse_backward).passed  # a PASS does not raise


# ----------------------------------------------------------------------------- with nbgrader itself
def _course(tmp_path, lessons):
    """An nbgrader course folder with the given solution notebooks as assignments, configured with our stubs."""
    config = "c = get_config()\n" + f"c.CourseDirectory.root = {str(tmp_path)!r}\n" + "".join(
        f"c.{section}.{key} = {value!r}\n" for section, options in NBGRADER_CONFIG.items()
        for key, value in options.items())
    (tmp_path / "nbgrader_config.py").write_text(config)
    for path in lessons:
        folder = tmp_path / "source" / path.stem
        folder.mkdir(parents=True)
        shutil.copy(path, folder / path.name)
    return tmp_path


def _nbgrader(course, *args, env=None):
    """``python -m nbgrader`` with this interpreter; its folder of scripts first on PATH, for nbgrader starts
    ``alembic`` (its database migrations) by name, which a venv used without activating it would not find."""
    import os

    pytest.importorskip("nbgrader")
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_nbgrader_generate_assignment_makes_our_student_notebooks(tmp_path):
    lessons = [p for p in PATHS if p.stem.startswith(("02_", "08_"))]
    course = _course(tmp_path, lessons)
    for path in lessons:
        _nbgrader(course, "generate_assignment", path.stem)
        released = _load(course / "release" / path.stem / path.name)
        ours = _load(STUDENT / path.name)
        assert ours == json.loads(json.dumps(student_version(_load(path)))), "the committed student notebook is stale"
        assert [(c["cell_type"], _text(c), c.get("outputs", [])) for c in released["cells"]] == \
            [(c["cell_type"], _text(c), c.get("outputs", [])) for c in ours["cells"]], path.name


@pytest.mark.slow
def test_nbgrader_autograde_scores_the_check_cells(tmp_path):
    """Two submissions of lesson 03: the solutions (every check cell scores) and the untouched student
    notebook (none does, and each failed check cell shows the checker's diagnosis)."""
    import os

    path = next(p for p in PATHS if p.stem.startswith("03_"))
    course = _course(tmp_path, [path])
    _nbgrader(course, "generate_assignment", path.stem)
    for student, source in (("alice", path), ("bob", course / "release" / path.stem / path.name)):
        folder = course / "submitted" / student / path.stem
        folder.mkdir(parents=True)
        shutil.copy(source, folder / path.name)
    env = dict(os.environ, **{AUTOGRADE_ENV: "1", "VAELAYER_LESSON_QUICK": "1"})
    _nbgrader(course, "autograde", path.stem, "--create", env=env)
    script = textwrap.dedent(f"""
        import json
        from nbgrader.api import Gradebook
        with Gradebook("sqlite:///{course / 'gradebook.db'}") as gb:
            out = {{}}
            for student in ("alice", "bob"):
                sub = gb.find_submission({path.stem!r}, student)
                out[student] = {{g.name: [g.auto_score, g.max_score] for nb in sub.notebooks for g in nb.grades
                                 if g.auto_score is not None}}
            print(json.dumps(out))
    """)
    scores = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                       check=True).stdout)
    tests = {name for name in scores["alice"] if name.startswith("test_")}
    assert tests and all(scores["alice"][name][0] == scores["alice"][name][1] > 0 for name in tests), scores
    assert all(scores["bob"][name][0] == 0 for name in tests), scores
    graded = _load(course / "autograded" / "bob" / path.stem / path.name)
    errors = [o for c in graded["cells"] if c["metadata"].get("nbgrader", {}).get("grade")
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == len(tests) and all(o["ename"] == "AssertionError" and "not implemented" in o["evalue"]
                                             for o in errors), errors
