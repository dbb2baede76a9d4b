"""`vaelayer course grade`: a class of planted submissions, made here from the course's own notebooks, graded
by the library's checkers in a fresh process per notebook, with the grades CSV that must come out."""
import csv
import json
import time

import pytest

from vaelayer_np.cli import main
from vaelayer_np.course import grade as G
from vaelayer_np.course import guide
from vaelayer_np.tools.release_course import STUDENT, lesson_paths

LESSONS = {p.stem: p for p in lesson_paths()}
L01, L03 = "01_vae_layer_forward", "03_gradient_checking"
SECONDS = 10.0


def _nb(stem, student=False):
    return json.loads(((STUDENT / f"{stem}.ipynb") if student else LESSONS[stem]).read_text())


def _replace_def(nb, name, source):
    """The notebook with the cell that defines ``name`` holding ``source`` instead."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and f"def {name}(" in "".join(cell["source"]):
            cell["source"] = source
            return nb
    raise AssertionError(f"no cell defines {name}")


def _add_cell(nb, source, at=None, outputs=()):
    cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": list(outputs), "source": source}
    nb["cells"].insert(len(nb["cells"]) if at is None else at, cell)
    return nb


def _write(folder, stem, nb):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.ipynb").write_text(json.dumps(nb))


WRONG_BOUND = "def bounded_log_var(r, c):\n    return np.tanh(r / c)\n"           # c forgotten
WRONG_REPARAM = "def reparameterize(mu, log_var, eps):\n    return mu + np.exp(log_var) * eps\n"  # var for std
FORWARD_DIFFERENCE = '''def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    f0 = f()
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f() - f0) / h
        x[i] = old
    return grad
'''
FAKE_PASS = {"output_type": "stream", "name": "stdout", "text": ["PASS  bounded_log_var  measured 0\n"]}


def _make_class(root):
    """The planted class: {student: what was planted}."""
    _write(root / "correct", L01, _nb(L01))
    _write(root / "correct", L03, _nb(L03))
    _write(root / "stubs", L01, _nb(L01, student=True))
    _write(root / "stubs", L03, _nb(L03, student=True))
    wrong = _replace_def(_replace_def(_nb(L01), "bounded_log_var", WRONG_BOUND), "reparameterize", WRONG_REPARAM)
    _write(root / "wrong", L01, wrong)
    _write(root / "wrong", L03, _replace_def(_nb(L03), "numerical_gradient", FORWARD_DIFFERENCE))
    # the cheat: a wrong answer, checkers redefined three ways, NumPy's comparison replaced at definition
    # time, and a stored output that says PASS
    cheat = _replace_def(_nb(L01), "bounded_log_var", WRONG_BOUND)
    cheat = _replace_def(cheat, "reparameterize", "def reparameterize(mu, log_var, eps, _=setattr(np, 'allclose', "
                                                  "lambda *a, **k: True)):\n    return mu + np.exp(log_var) * eps\n")
    _add_cell(cheat, "check_bounded_log_var = lambda f: 'PASS'\n", outputs=[FAKE_PASS])
    _add_cell(cheat, "def check_reparameterize(f):\n    return 'PASS'\n")
    _add_cell(cheat, "import vaelayer_np.course.lesson01 as L\nL.check_bounded_log_var = lambda f: 'PASS'\n"
                     "L.TOLERANCE = 1e300\n")
    _write(root / "cheat", L01, cheat)
    loop = _replace_def(_nb(L01), "bounded_log_var", "def bounded_log_var(r, c):\n    while True:\n        pass\n")
    loop = _replace_def(loop, "reparameterize", "def reparameterize(mu, log_var, eps):\n    import time\n"
                                                "    time.sleep(3600)\n")
    _write(root / "loop", L01, loop)
    hog = _replace_def(_nb(L01), "bounded_log_var", "def bounded_log_var(r, c):\n"
                                                    "    big = np.ones(20 * 2 ** 30 // 8)  # 20 GB\n"
                                                    "    return c * np.tanh(r / c) + big[0] - 1\n")
    _write(root / "hog", L01, hog)
    (root / "corrupt").mkdir()
    (root / "corrupt" / f"{L01}.ipynb").write_text(json.dumps(_nb(L01))[:5000])
    exits = _replace_def(_nb(L01), "bounded_log_var", "def bounded_log_var(r, c):\n    import sys\n    sys.exit(0)\n")
    exits = _replace_def(exits, "reparameterize", "def reparameterize(mu, log_var, eps):\n    import os\n"
                                                  "    os._exit(0)\n")
    exits = _replace_def(exits, "vae_forward", "def vae_forward(x, params, eps, act, log_var_bound):\n"
                                               "    raise KeyboardInterrupt\n")
    _write(root / "exits", L01, exits)
    missing = _nb(L01)
    missing["cells"] = [c for c in missing["cells"] if "def neg_elbo(" not in "".join(c["source"])]
    _add_cell(missing, "import not_a_module_anyone_has\n", at=1)
    _add_cell(missing, "def broken(:\n    pass\n", at=2)
    _write(root / "missing", L01, missing)


# The exercise columns of lessons 01 and 03 when this was written, and what each student must get in them
# (1 where listed, 0 elsewhere). An exercise added to these lessons later must give the correct notebook
# its point and the stubs, the cheat and the corrupted notebook none.
KNOWN = ["01 bounded_log_var", "01 reparameterize", "01 vae_forward", "01 neg_elbo", "01 layer_forward",
         "03 numerical_gradient", "03 relative_error", "03 layer_gradient_errors", "03 locate_bug"]
EXPECTED = {
    "cheat":   {},  # NumPy replaced when its definitions load: every check of the notebook FAILs
    "correct": {c: 1 for c in KNOWN},
    "corrupt": {},
    "exits":   {"01 neg_elbo": 1},
    "hog":     {"01 reparameterize": 1, "01 neg_elbo": 1},
    "loop":    {"01 neg_elbo": 1},
    "missing": {"01 bounded_log_var": 1, "01 reparameterize": 1, "01 vae_forward": 1, "01 layer_forward": 1},
    "stubs":   {},
    "wrong":   {"01 neg_elbo": 1, "03 relative_error": 1},  # the others use the wrong bound or difference
}
ALL_OR_NOTHING = {"correct": 1, "stubs": 0, "cheat": 0, "corrupt": 0}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    _make_class(root / "class")
    out = root / "grades"
    start = time.monotonic()
    code = main(["course", "grade", str(root / "class"), "--out", str(out), "--seconds", str(SECONDS),
                 "--memory-gb", "1", "--jobs", "2"])
    elapsed = time.monotonic() - start
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    return code, out, rows, elapsed


def test_the_grades_csv_is_the_expected_one(graded):
    code, out, rows, _ = graded
    assert code == 0
    assert sorted(rows) == sorted(EXPECTED)
    columns = [e.column for stem in (L01, L03) for e in G.lesson_exercises(LESSONS[stem])]
    assert set(KNOWN) <= set(columns) and columns[0] == "01 bounded_log_var"
    for student, row in rows.items():
        got = {c: int(row[f"{c} (1 pt)"]) for c in columns}
        for c in columns:
            if c in KNOWN:
                assert got[c] == EXPECTED[student].get(c, 0), (student, c, row)
            elif student in ALL_OR_NOTHING:
                assert got[c] == ALL_OR_NOTHING[student], (student, c, row)
        assert int(row["exercise points"]) == sum(got.values())
        assert int(row["exercise points possible"]) == len(columns)


def test_the_inline_questions_are_left_for_a_human_with_their_points(graded):
    _, out, rows, _ = graded
    header = next(csv.reader(open(out / "grades.csv")))
    q_cols = [h for h in header if "question" in h and "by hand" in h and "possible" not in h]
    rubrics = guide.LESSONS[L01]["rubrics"] + guide.LESSONS[L03]["rubrics"]
    assert len(q_cols) == len(rubrics)
    for col, rubric in zip(q_cols, rubrics):
        assert col.endswith(f"(by hand, {sum(p for p, _ in rubric)} pts)"), col
    assert all(rows[s][c] == "" for s in rows for c in q_cols)
    assert int(rows["correct"]["question points possible (by hand)"]) == sum(p for r in rubrics for p, _ in r)
    questions = (out / "questions.md").read_text()
    first_answer = guide.inline_questions(LESSONS[L01])[0][1].split("\n")[0]
    assert first_answer in questions  # the solution notebook's answer, as the student "correct" wrote it
    assert "*(no answer)*" in questions  # the stubs' student wrote none
    assert rubrics[0][0][1] in questions


def test_feedback_names_each_fail_and_holds_no_key(graded):
    _, out, rows, _ = graded
    keys = [answer.split("\n")[0] for stem in (L01, L03) for _, answer in guide.inline_questions(LESSONS[stem])]
    criteria = [c for stem in (L01, L03) for rubric in guide.LESSONS[stem]["rubrics"] for _, c in rubric]
    for student in EXPECTED:
        text = (out / "feedback" / f"{student}.md").read_text()
        assert not any(k in text for k in keys + criteria), student
        assert text.count("): FAIL") == int(rows[student]["exercise points possible"]) \
            - int(rows[student]["exercise points"]), student
    fb = {s: (out / "feedback" / f"{s}.md").read_text() for s in EXPECTED}
    assert "not implemented yet" in fb["stubs"]
    assert "took longer than 10 s" in fb["loop"]
    assert "ran out of memory (the limit is 1 GB per check)" in fb["hog"]
    assert "could not be read" in fb["corrupt"]
    assert "sys.exit(0)" in fb["exits"] and "ended the process" in fb["exits"] and "KeyboardInterrupt" in fb["exits"]
    assert "defines no `neg_elbo`" in fb["missing"] and "not_a_module_anyone_has" in fb["missing"]
    assert "does not parse" in fb["missing"]
    assert fb["cheat"].count("replaced numpy.allclose") == len(G.lesson_exercises(LESSONS[L01]))
    assert "no notebook for lesson 03" in fb["cheat"]


def test_the_infinite_loop_is_graded_within_its_limit(graded):
    _, _, rows, elapsed = graded
    assert "took longer" not in rows["correct"]["notes"]
    # nine notebooks, two of them stopped at the limit: far below one notebook's overall budget
    assert elapsed < 2 * SECONDS + 9 * 60, elapsed


def test_submissions_are_found_by_name_and_bad_paths_named(tmp_path):
    assert G.lesson_of(tmp_path / "alice_02_deriving_gradients.ipynb") == "02_deriving_gradients"
    assert G.student_of(tmp_path / "alice_02_deriving_gradients.ipynb") == "alice"
    assert G.student_of(tmp_path / "bob-07-final" / "07_speed_and_kernels.ipynb") == "bob-07-final"
    assert G.lesson_of(tmp_path / "notes.ipynb") is None
    with pytest.raises(ValueError, match="SUBMISSIONS: .* does not exist"):
        G.collect([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="no notebook"):
        G.collect([tmp_path])
    assert main(["course", "grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    for option, value in (("--jobs", "0"), ("--jobs", "1.5"), ("--seconds", "nan"), ("--memory-gb", "-1")):
        with pytest.raises(SystemExit):
            main(["course", "grade", str(tmp_path), "--out", str(tmp_path / "o"), option, value])
    with pytest.raises(ValueError, match="--jobs"):
        G.grade([tmp_path], tmp_path / "o", jobs=0)


def test_a_notebook_too_large_to_be_a_lesson_is_graded_not_read(tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(G, "MAX_NOTEBOOK_BYTES", 1000)
    (tmp_path / f"{L01}.ipynb").write_text(json.dumps(_nb(L01)))
    out = io.StringIO()
    G.worker(tmp_path / f"{L01}.ipynb", LESSONS[L01], 5, 1, stream=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "more than a lesson's notebook can be" in lines[0]["problem"]
    assert len(lines) == 1 + len(G.lesson_exercises(LESSONS[L01])) and not any(r["passed"] for r in lines[1:])


def test_the_instructors_page_states_the_grader_s_limits_and_outputs():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "instructors.md").read_text()
    section = page.split("## Grading a class", 1)[1].split("<!-- instructors-guide -->", 1)[0]
    assert "vaelayer course grade class/* --out grades" in section
    assert f"`--seconds`, {G.DEFAULT_SECONDS:g} by default" in section
    assert f"`--memory-gb`, {G.DEFAULT_MEMORY_GB:g} GB" in section
    assert f"({G.DEFAULT_SECONDS:g} s, {G.DEFAULT_MEMORY_GB:g} GB;" in section
    from vaelayer_np.course import checks

    assert checks.LIMITS == {"seconds": G.DEFAULT_SECONDS, "memory_gb": G.DEFAULT_MEMORY_GB}
    assert G.POINTS_PER_EXERCISE == 1 and "**one point**" in section
    for name in ("grades.csv", "feedback/STUDENT.md", "questions.md"):
        assert f"`{name}`" in section
