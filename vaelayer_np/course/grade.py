"""Grade a class's notebooks: ``vaelayer course grade SUBMISSIONS... --out DIR``.

For each submitted student notebook the grader reads the student's code (the functions, classes,
imports and constants of its code cells; nothing else of the notebook runs, its stored outputs are
never read) and runs **the library's** checkers on it, the same calls the lesson's own notebook makes
(``notebooks/NN_*.ipynb``). Each notebook is graded in a fresh Python process of its own, and each
exercise in a forked copy of that process with a time and a memory limit
(:func:`vaelayer_np.course.checks.run_isolated`), into which the student's code is loaded anew: a
checker the notebook redefines is never called, a NumPy function it replaces is put back, and a
notebook that crashes, loops, exhausts the memory, misses cells, does not parse or imports a module
that is not installed is graded (its exercises FAIL with the reason), never the end of the run.

What it writes in ``DIR``:

* ``grades.csv``: one row per student, one column per exercise (1 point when its checker passes, 0
  otherwise; the course gives each exercise one point), the exercise total and the points possible,
  one empty column per inline question for the instructor to fill in from the rubric, and notes;
* ``feedback/STUDENT.md``: each exercise's verdict with the checker's diagnosis of every FAIL, for the
  student (no answer key in it);
* ``questions.md``: for the instructor only, each inline question with every student's answer and the
  question's rubric (from :mod:`vaelayer_np.course.guide`).

A submission is a notebook file or a folder: a folder holding notebooks is one student (the folder's
name); a folder holding only folders is a class, each sub-folder one student. A notebook named like a
lesson (``02_deriving_gradients.ipynb``) belongs to the student of its folder; one named
``alice_02_deriving_gradients.ipynb`` (or ``alice-02...``) to ``alice``. The lesson is found from the
name (the lesson's file name, or its number ``02_``).
"""
from __future__ import annotations

import argparse
import ast
import csv
import functools
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..tools.release_course import BEGIN, lesson_paths

if TYPE_CHECKING:
    from .checks import CheckResult

DEFAULT_SECONDS = 300.0   # per exercise: the slowest checker (a short training run) takes well under a minute
DEFAULT_MEMORY_GB = 4.0   # per exercise, beyond what the grading process holds
POINTS_PER_EXERCISE = 1   # the course gives each checked exercise one point
MAX_NOTEBOOK_BYTES = 200 * 2 ** 20  # a notebook larger than this is not read (its figures make a lesson ~1 MB)
COURSE_PACKAGE = "vaelayer_np.course"


@dataclass(frozen=True)
class Exercise:
    """One checked exercise of a lesson: the checker call of the lesson's own notebook."""

    lesson: str       # the notebook's stem, "02_deriving_gradients"
    module: str       # "vaelayer_np.course.lesson02"
    checker: str      # "check_mse_backward"
    args: tuple[str, ...]  # the names of the student's definitions it is given, in order
    keywords: tuple[tuple[Any, Any], ...]  # (name, literal value) pairs of the call
    # (name, source) of the arguments the lesson gives (not exercises): the lesson's own code
    given: tuple[tuple[str, Any], ...] = ()
    setup: tuple[str, ...] = ()  # sources of the lesson's imports and of its assignments the code needs (x_train = ...)
    points: int = POINTS_PER_EXERCISE

    @property
    def column(self) -> str:
        return f"{self.lesson[:2]} {self.args[0]}"


# ----------------------------------------------------------------------------- the lessons' exercises
def _imports(tree: ast.AST) -> dict[str, tuple[str, str | None]]:
    """{name used in the notebook: (module, attribute or None)} for the imports of the course's modules."""
    found: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(COURSE_PACKAGE):
            for alias in node.names:
                if node.module == COURSE_PACKAGE:
                    found[alias.asname or alias.name] = (f"{COURSE_PACKAGE}.{alias.name}", None)
                else:
                    found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def _defined(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(_without_magics(source))
    except (SyntaxError, ValueError):
        return None


def _without_magics(source: str) -> str:
    """A cell's code without IPython's ``%magic`` and ``!shell`` lines (they are not Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def lesson_exercises(path: str | Path) -> list[Exercise]:
    """The checked exercises of a lesson's solution notebook, in order.

    An exercise is a call of one of the lessons' checkers (a ``check_*`` function of a module of
    ``vaelayer_np.course`` other than ``checks``) whose first argument is a name the notebook defines in
    an exercise cell (one holding a solution); calls that demonstrate a checker on other functions are
    not. Its other arguments may be code the lesson gives (``make_model``): the grader uses the lesson's
    own copy of that code, not the student's.
    """
    nb = json.loads(Path(path).read_text())
    cells = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"]
             if c["cell_type"] == "code"]
    trees = [_parse(c) for c in cells]
    names: dict[str, tuple[str, str | None]] = {}
    for tree in trees:
        if tree is not None:
            names.update(_imports(tree))
    solved: set[str] = set()
    defined: dict[str, str | None] = {}
    for source, tree in zip(cells, trees):
        if tree is None:
            continue
        if BEGIN in source:
            solved |= _defined(tree)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined[node.name] = ast.get_source_segment(_without_magics(source), node)
    setup = _setup(cells, trees, solved, defined)
    found: list[Exercise] = []
    for tree in trees:
        if tree is None:
            continue
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            target = _checker_of(call.func, names)
            args: list[Any] = call.args  # ast.Name nodes, checked below
            if target is None or target[1] is None or not args or not all(
                    isinstance(a, ast.Name) and a.id in defined for a in args) or args[0].id not in solved:
                continue
            given = tuple((a.id, defined[a.id]) for a in args if a.id not in solved)
            keywords: list[tuple[Any, Any]] = []  # (name, value); a name is None only for **mapping
            for kw in call.keywords:
                try:
                    keywords.append((kw.arg, ast.literal_eval(kw.value)))
                except ValueError:
                    continue  # a setting of the notebook's own (QUICK): the checker's default is used
            ex = Exercise(Path(path).stem, target[0], target[1], tuple(a.id for a in args), tuple(keywords),
                          given, setup)
            if ex not in found:
                found.append(ex)
    return found


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _assigned_names(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _global_names(source: str) -> set[str]:
    """The global names a definition's code reads (not its parameters or local variables)."""
    import symtable

    try:
        table = symtable.symtable(_without_magics(source), "<definition>", "exec")
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    stack = list(table.get_children())
    while stack:
        t = stack.pop()
        names |= {sym.get_name() for sym in t.get_symbols() if sym.is_global() and sym.is_referenced()}
        stack.extend(t.get_children())
    return names


def _setup(cells: Sequence[str], trees: Sequence[ast.Module | None], solved: set[str],
           defined: dict[str, str | None]) -> tuple[str, ...]:
    """The lesson's own imports, and those of its top-level assignments that the exercises' code and the code
    it gives need (``x_train = data.x_train ...``, and ``data = load_dataset(...)`` that it needs in turn), in
    notebook order; assignments that call a checker or print are left out."""
    statements: list[tuple[Any, str]] = []
    for source, tree in zip(cells, trees):
        if tree is None:
            continue
        code = _without_magics(source)
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
                statements.append((node, ast.get_source_segment(code, node) or ast.unparse(node)))
    needed: set[str] = set()
    for definition in defined.values():
        needed |= _global_names(definition or "")
    chosen: set[int] = set()
    grew = True
    while grew:
        grew = False
        for i, (node, _source) in enumerate(statements):
            if i in chosen or isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            calls = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if any(c.startswith("check_") or c in ("print", "reveal", "show") for c in calls):
                continue
            if _assigned_names(node) & needed:
                chosen.add(i)
                needed |= _loaded_names(node)
                grew = True
    return tuple(source for i, (node, source) in enumerate(statements)
                 if i in chosen or isinstance(node, (ast.Import, ast.ImportFrom)))


def _checker_of(func: ast.expr, names: dict[str, tuple[str, str | None]]) -> tuple[str, str | None] | None:
    """(module, checker name) when ``func`` names a lesson's checker, else None."""
    if isinstance(func, ast.Name) and func.id.startswith("check_") and func.id in names:
        module, attr = names[func.id]
        target = (module, attr)
    elif isinstance(func, ast.Attribute) and func.attr.startswith("check_") and isinstance(func.value, ast.Name) \
            and func.value.id in names and names[func.value.id][1] is None:
        target = (names[func.value.id][0], func.attr)
    else:
        return None
    if target[0] == f"{COURSE_PACKAGE}.checks" or not target[1] or not target[1].startswith("check_"):
        return None
    return target


def lesson_questions(path: str | Path) -> list[tuple[str, list[tuple[int, str]], int]]:
    """[(question, rubric, points)] of a lesson's inline questions (rubrics from the instructors' guide)."""
    from . import guide

    questions = guide.inline_questions(path)
    lesson: dict[str, Any] = guide.LESSONS.get(Path(path).stem, {})
    rubrics = lesson.get("rubrics", [])
    out = []
    for i, (question, _) in enumerate(questions):
        rubric = rubrics[i] if i < len(rubrics) else []
        out.append((question, rubric, sum(p for p, _ in rubric)))
    return out


# ----------------------------------------------------------------------------- the student's code
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def student_code(nb: dict[str, Any]) -> tuple[list[tuple[int, str]], list[str]]:
    """([(cell number, source)], notes): the definitions of a notebook's code cells, in order.

    Kept: imports, ``def``, ``class``, and assignments of plain constants (``LAM = 10.0``). Not kept:
    everything else (calls, training, plots, prints, the checker cells, a redefined checker that is
    not a ``def``). A cell that does not parse is named in the notes and left out.
    """
    kept: list[tuple[int, str]] = []
    notes: list[str] = []
    for number, cell in enumerate(nb.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if not isinstance(source, str):
            notes.append(f"cell {number}: its code is not text; left out")
            continue
        code = _without_magics(source)
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            where = f"line {getattr(exc, 'lineno', None)}: " if getattr(exc, "lineno", None) else ""
            notes.append(f"cell {number} does not parse ({where}{getattr(exc, 'msg', exc)}); its definitions are "
                         f"missing")
            continue
        for node in tree.body:
            if isinstance(node, _KEPT) or (isinstance(node, (ast.Assign, ast.AnnAssign)) and _constant(node)):
                kept.append((number, _segment(code, node)))
    return kept, notes


def _segment(code: str, node: ast.stmt) -> str:
    """A top-level statement's source with its decorators, preceded by blank lines so that its line numbers
    are the cell's."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    lines = code.splitlines()[start - 1:node.end_lineno]
    return "\n" * (start - 1) + "\n".join(lines) + "\n"


def _constant(node: ast.Assign | ast.AnnAssign) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if node.value is None or not all(isinstance(t, ast.Name) or (isinstance(t, ast.Tuple) and all(
            isinstance(e, ast.Name) for e in t.elts)) for t in targets):
        return False
    try:
        ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def load_student(kept: Sequence[tuple[int | str, str]], label: str,
                 namespace: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Run the kept definitions in ``namespace`` (a fresh one by default); (namespace, notes on the statements
    that failed)."""
    if namespace is None:
        namespace = {"__name__": "__student__", "__builtins__": __builtins__}
    import linecache

    notes: list[str] = []
    for number, source in kept:
        filename = f"<{label}, cell {number}>"
        lines = source.splitlines(True)
        entry: Any = linecache.cache.get(filename, (0, None, [], filename))
        known: list[str] = entry[2]
        merged = [b if b.strip() else a for a, b in zip(known + [""] * len(lines), lines)] + known[len(lines):]
        linecache.cache[filename] = (sum(map(len, merged)), None, merged, filename)  # the lines a message shows
        try:
            exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - grading runs it
        except Exception as exc:  # noqa: BLE001 - a failing import or definition is graded, not fatal
            from .checks import describe_exception

            first = source.strip().splitlines()[0][:80] if source.strip() else ""
            notes.append(f"cell {number}: `{first}` failed ({describe_exception(exc)})")
    return namespace, notes


def namespace_for(exercise: Exercise, kept: Sequence[tuple[int, str]], label: str) -> tuple[dict[str, Any], list[str]]:
    """The namespace an exercise is checked in: the lesson's setup (its imports and the data its code reads),
    then the student's definitions, then the lesson's own copy of what it gives; (namespace, notes)."""
    namespace, _ = load_student([("setup", source) for source in exercise.setup], "the lesson's setup")
    namespace, notes = load_student(kept, label, namespace)
    for name, source in exercise.given:  # the lesson's own code for what it gives, reading the student's names
        exec(compile(source, f"<the lesson's {name}>", "exec"), namespace)  # noqa: S102
    return namespace, notes


# ----------------------------------------------------------------------------- one notebook (its own process)
def _grade_one(exercise: Exercise, kept: Sequence[tuple[int, str]], label: str) -> CheckResult:
    """The check of one exercise on the student's code, run inside the isolated process."""
    import importlib

    from .checks import CheckResult, _watch_after_student

    namespace, notes = namespace_for(exercise, kept, label)
    _watch_after_student()  # a definition that replaced NumPy or the library: put back, and a FAIL
    missing = [a for a in exercise.args if a not in namespace]
    if missing:
        text = f"your notebook defines no `{missing[0]}` (a missing or renamed cell?)"
        failed = [n for n in notes if any(m in n for m in missing)] or notes
        if failed:
            text += f"; {failed[0]}"
        return CheckResult(exercise.checker[len("check_"):], False, message=text)
    checker = getattr(importlib.import_module(exercise.module), exercise.checker)
    return checker(*[namespace[a] for a in exercise.args], **dict(exercise.keywords))


def worker(notebook: str | Path, lesson_path: str | Path, seconds: float, memory_gb: float,
           stream: TextIO | None = None) -> None:
    """Grade one notebook against one lesson; one JSON line per exercise on ``stream`` (stdout)."""
    from .checks import run_isolated

    stream = stream or sys.stdout
    exercises = lesson_exercises(lesson_path)
    try:
        nb = _read_notebook(notebook)
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise ValueError("it is JSON, but not a notebook (no list of cells)")
        kept, notes = student_code(nb)
        problem: str | None = None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        kept, notes, problem = [], [], f"the notebook could not be read ({type(exc).__name__}: {exc})"
    stream.write(json.dumps({"notes": notes, "problem": problem}) + "\n")
    stream.flush()
    for exercise in exercises:
        if problem is not None:
            passed, message = False, problem
        else:
            result = run_isolated(functools.partial(_grade_one, exercise, kept, Path(notebook).name),
                                  exercise.checker[len("check_"):], seconds=seconds, memory_gb=memory_gb)
            passed, message = result.passed, str(result)
        stream.write(json.dumps({"column": exercise.column, "passed": bool(passed), "message": message}) + "\n")
        stream.flush()


# ----------------------------------------------------------------------------- a class
def _lessons() -> dict[str, Path]:
    return {p.stem: p for p in lesson_paths()}


def lesson_of(path: str | Path, lessons: dict[str, Path] | None = None) -> str | None:
    """The stem of the lesson a submitted notebook belongs to (from its name), or None."""
    lessons = lessons or _lessons()
    name = Path(path).stem
    for stem in sorted(lessons, key=len, reverse=True):
        if stem in name:
            return stem
    for stem in lessons:
        if re.search(rf"(^|[^0-9]){re.escape(stem[:2])}_", name + "_"):
            return stem
    return None


def student_of(path: str | Path, lessons: dict[str, Path] | None = None) -> str:
    """A student's name from a notebook's path: ``alice/02_x.ipynb`` and ``alice_02_x.ipynb`` are ``alice``."""
    path = Path(path)
    stem = lesson_of(path, lessons)
    name = path.stem
    if stem is not None:
        cut = name.find(stem) if stem in name else name.find(stem[:2] + "_")
        name = name[:cut].rstrip("_- .")
    return name or path.parent.name or path.stem


def collect(submissions: Iterable[str | Path], lessons: dict[str, Path] | None = None) -> dict[str, list[Path]]:
    """{student: [notebook paths]} from the command's SUBMISSIONS (files and folders)."""
    lessons = lessons or _lessons()
    students: dict[str, list[Path]] = {}
    for entry in map(Path, submissions):
        if entry.is_dir():
            notebooks = sorted(p for p in entry.iterdir() if p.suffix == ".ipynb" and p.is_file())
            if notebooks:
                students.setdefault(entry.name, []).extend(notebooks)
            else:
                for sub in sorted(p for p in entry.iterdir() if p.is_dir()):
                    found = sorted(p for p in sub.iterdir() if p.suffix == ".ipynb" and p.is_file())
                    if found:
                        students.setdefault(sub.name, []).extend(found)
        elif entry.is_file():
            own = entry.stem in lessons
            students.setdefault(entry.parent.name if own else student_of(entry, lessons), []).append(entry)
        else:
            raise ValueError(f"SUBMISSIONS: {entry} does not exist")
    if not students:
        raise ValueError("SUBMISSIONS: no notebook (*.ipynb) found in " + ", ".join(map(str, submissions)))
    return students


# CPython 3.11 keeps one recursion counter for turning AST objects into compiled ones per interpreter, not per
# thread: two threads in ``ast.literal_eval`` or ``compile`` at once can end with "SystemError: AST constructor
# recursion depth mismatch". The threads of :func:`grade` read the lesson notebooks one at a time.
_AST_LOCK = threading.Lock()




def _read_notebook(notebook: str | Path) -> Any:
    """A submitted notebook's JSON; ValueError when the file is larger than a lesson's notebook can be."""
    size = Path(notebook).stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"it is {size / 2 ** 20:.0f} MB, more than a lesson's notebook can be "
                         f"({MAX_NOTEBOOK_BYTES / 2 ** 20:.0f} MB)")
    return json.loads(Path(notebook).read_text(encoding="utf-8"))


def grade_notebook(notebook: str | Path, lesson_path: str | Path, seconds: float = DEFAULT_SECONDS,
                   memory_gb: float = DEFAULT_MEMORY_GB) -> tuple[list[str], dict[str, tuple[bool, str]]]:
    """Grade one notebook in a fresh Python process: (notes, {column: (passed, message)})."""
    with _AST_LOCK:
        exercises = lesson_exercises(lesson_path)
    budget = len(exercises) * (seconds + 10) + 120
    command = [sys.executable, "-m", "vaelayer_np.course.grade", "--worker", str(notebook), str(lesson_path),
               "--seconds", repr(float(seconds)), "--memory-gb", repr(float(memory_gb))]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget, env=env,
                              stdin=subprocess.DEVNULL)
        out, why = done.stdout, f"the grading process ended with status {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        why = f"the grading process took longer than {budget:g} s and was stopped"
    notes: list[str] = []
    results: dict[str, tuple[bool, str]] = {}
    for line in out.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        if "column" in row:
            results[row["column"]] = (row.get("passed") is True, str(row.get("message", "")))
        else:
            notes += [str(n) for n in row.get("notes", [])]
            if row.get("problem"):
                notes.append(str(row["problem"]))
    for exercise in exercises:
        results.setdefault(exercise.column, (False, f"FAIL  {exercise.checker[6:]}: not graded ({why})"))
    return notes, results


def grade(submissions: Iterable[str | Path], out: str | Path, seconds: float = DEFAULT_SECONDS,
          memory_gb: float = DEFAULT_MEMORY_GB, jobs: int = 1,
          log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Grade every student's notebooks; write ``grades.csv``, ``feedback/`` and ``questions.md`` in ``out``.

    ``jobs`` notebooks are graded at a time (each in its own process). Returns the rows of ``grades.csv``
    as dicts.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs: expected a positive whole number, got {jobs!r}")
    lessons = _lessons()
    students = collect(submissions, lessons)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: {out_dir} is a file, not a folder")
    work: dict[str, dict[str, Path]] = {}   # student -> {lesson stem: notebook}
    notes: dict[str, list[str]] = {s: [] for s in students}
    for student, notebooks in students.items():
        work[student] = {}
        for nb in notebooks:
            stem = lesson_of(nb, lessons)
            if stem is None:
                notes[student].append(f"{nb.name}: not a lesson's notebook (its name holds no lesson number); "
                                      f"not graded")
            elif stem in work[student]:
                notes[student].append(f"{nb.name}: a second notebook for lesson {stem}; graded "
                                      f"{work[student][stem].name} only")
            else:
                work[student][stem] = nb
    graded = sorted({stem for w in work.values() for stem in w})
    if not graded:
        raise ValueError("SUBMISSIONS: no notebook named after a lesson (e.g. 02_deriving_gradients.ipynb)")
    exercises = {stem: lesson_exercises(lessons[stem]) for stem in graded}
    questions = {stem: lesson_questions(lessons[stem]) for stem in graded}
    results: dict[str, dict[str, tuple[bool, str]]] = {s: {} for s in work}
    answers: dict[tuple[str, str], list[str | None]] = {}
    tasks: list[tuple[str, str, Path]] = []
    for student in sorted(work):
        for stem in graded:
            submitted = work[student].get(stem)
            if submitted is None:
                notes[student].append(f"no notebook for lesson {stem}")
            else:
                tasks.append((student, stem, submitted))

    def one(task: tuple[str, str, Path]) -> tuple[list[str], dict[str, tuple[bool, str]]]:
        student, stem, nb = task
        log(f"grading {student}: {nb.name}")
        return grade_notebook(nb, lessons[stem], seconds, memory_gb)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads that wait for the notebooks' processes
        for (student, stem, nb), (nb_notes, nb_results) in zip(tasks, pool.map(one, tasks)):
            notes[student] += [f"{nb.name}: {n}" for n in nb_notes]
            results[student].update(nb_results)
            with _AST_LOCK:
                answers[(student, stem)] = _answers(nb, lessons[stem])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _write_csv(out_dir / "grades.csv", sorted(work), graded, exercises, questions, results, notes)
    _write_feedback(out_dir / "feedback", sorted(work), graded, exercises, questions, results, notes)
    _write_questions(out_dir / "questions.md", sorted(work), graded, questions, answers)
    return rows


def _answers(notebook: str | Path, lesson_path: str | Path) -> list[str | None]:
    """The student's answers to a lesson's inline questions, in order (None where not found)."""
    from ..tools.release_course import student_version

    try:
        nb = _read_notebook(notebook)
        cells = ["".join(c["source"]) if isinstance(c["source"], list) else str(c["source"])
                 for c in nb["cells"] if c.get("cell_type") == "markdown"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return []
    template = student_version(json.loads(Path(lesson_path).read_text()))
    found: list[str | None] = []
    for cell in template["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for part in text.split("*Your answer here.*")[:-1]:
            anchor = part.strip().splitlines()[-1] if part.strip() else ""
            answer = None
            for mine in cells:
                if anchor and anchor in mine:
                    rest = mine.split(anchor, 1)[1].strip()
                    answer = None if not rest or rest == "*Your answer here.*" else rest
                    break
            found.append(answer)
    return found


def _columns(graded: Sequence[str], exercises: dict[str, list[Exercise]],
             questions: dict[str, list[Any]]) -> tuple[list[str], list[str]]:
    ex_cols = [f"{e.column} ({e.points} pt)" for stem in graded for e in exercises[stem]]
    q_cols = [f"{stem[:2]} question {i + 1} (by hand, {points} pts)" for stem in graded
              for i, (_, _, points) in enumerate(questions[stem])]
    return ex_cols, q_cols


def _write_csv(path: Path, students: Sequence[str], graded: Sequence[str], exercises: dict[str, list[Exercise]],
               questions: dict[str, list[Any]], results: dict[str, dict[str, tuple[bool, str]]],
               notes: dict[str, list[str]]) -> list[dict[str, Any]]:
    ex_cols, q_cols = _columns(graded, exercises, questions)
    possible = sum(e.points for stem in graded for e in exercises[stem])
    q_possible = sum(p for stem in graded for _, _, p in questions[stem])
    header = ["student", *ex_cols, "exercise points", "exercise points possible", *q_cols,
              "question points possible (by hand)", "notes"]
    rows: list[dict[str, Any]] = []
    for student in students:
        row: dict[str, Any] = {"student": student}
        total = 0
        for stem in graded:
            for e in exercises[stem]:
                passed = results[student].get(e.column, (False, ""))[0]
                row[f"{e.column} ({e.points} pt)"] = e.points if passed else 0
                total += e.points if passed else 0
        row.update({"exercise points": total, "exercise points possible": possible,
                    "question points possible (by hand)": q_possible, "notes": " | ".join(notes[student])})
        row.update({c: "" for c in q_cols})
        rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _safe_name(student: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", student).strip(".") or "student"


def _write_feedback(folder: Path, students: Sequence[str], graded: Sequence[str],
                    exercises: dict[str, list[Exercise]], questions: dict[str, list[Any]],
                    results: dict[str, dict[str, tuple[bool, str]]], notes: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for student in students:
        lines = [f"# Feedback for {student}", ""]
        total = possible = 0
        for stem in graded:
            lines += [f"## {stem}", ""]
            for e in exercises[stem]:
                passed, message = results[student].get(e.column, (False, "no notebook submitted for this lesson"))
                total += e.points if passed else 0
                possible += e.points
                verdict = "PASS" if passed else "FAIL"
                lines.append(f"- **{e.args[0]}** ({e.points} pt): {verdict}")
                if not passed:
                    lines.append(f"  - {message}")
            if questions[stem]:
                lines += ["", f"Inline questions: {len(questions[stem])}, graded by your instructor.", ""]
        lines += ["", f"Exercises: {total} of {possible} points."]
        if notes[student]:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes[student]]
        (folder / f"{_safe_name(student)}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_questions(path: Path, students: Sequence[str], graded: Sequence[str], questions: dict[str, list[Any]],
                     answers: dict[tuple[str, str], list[str | None]]) -> None:
    lines = ["# Inline questions to grade by hand (instructor only: holds the rubrics)", ""]
    for stem in graded:
        for i, (question, rubric, points) in enumerate(questions[stem]):
            lines += [f"## {stem}, question {i + 1} ({points} points)", "", question, "", "**Rubric:**", ""]
            lines += [f"- {p} pt: {criterion}" for p, criterion in rubric] + [""]
            for student in students:
                got = answers.get((student, stem))
                answer = got[i] if got and i < len(got) else None
                lines += [f"### {student}", "", answer if answer else "*(no answer)*", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``vaelayer course grade``."""
    parser.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSIONS",
                        help="student notebooks, folders of one student's notebooks, or a folder of such folders")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for grades.csv, feedback/ and questions.md")
    parser.add_argument("--seconds", type=_positive, default=DEFAULT_SECONDS,
                        help=f"time limit of one exercise's check, in seconds (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--memory-gb", type=_positive, default=DEFAULT_MEMORY_GB,
                        help=f"memory limit of one exercise's check, in GB (default {DEFAULT_MEMORY_GB:g})")
    parser.add_argument("--jobs", type=_positive_int, default=1,
                        help="notebooks graded at a time, each in its own process (default 1)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def run_from_args(args: argparse.Namespace) -> int:
    rows = grade(args.submissions, args.out, seconds=args.seconds, memory_gb=args.memory_gb, jobs=args.jobs)
    print(f"{len(rows)} student(s) graded: {args.out / 'grades.csv'}, {args.out / 'feedback'}, "
          f"{args.out / 'questions.md'}")
    return 0


def _worker_main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelayer_np.course.grade --worker")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("lesson", type=Path)
    parser.add_argument("--seconds", type=_positive, default=DEFAULT_SECONDS)
    parser.add_argument("--memory-gb", type=_positive, default=DEFAULT_MEMORY_GB)
    args = parser.parse_args(argv)
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the student's code prints goes to stderr, never among the verdicts
    sys.stdout = sys.stderr
    worker(args.notebook, args.lesson, args.seconds, args.memory_gb, stream=results)
    results.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="python -m vaelayer_np.course.grade", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run_from_args(parser.parse_args()))
