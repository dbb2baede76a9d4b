"""MkDocs hook for the documentation site (listed under ``hooks:`` in mkdocs.yml).

It does these things, so that mkdocs.yml never needs editing when code or lessons change:

* **Lessons.** Every ``notebooks/*.ipynb`` is added to the site as ``lessons/<name>.ipynb``
  (mkdocs-jupyter renders it) and the nav section titled "Lessons" is filled with them,
  sorted by file name (``01_...``, ``02_...``). A new notebook appears on the next build.
* **Maths without a network.** MathJax 2 is copied from the installed ``jupyter-server-mathjax``
  package into ``assets/mathjax/`` of the built site; ``docs/javascripts/mathjax-config.js``
  configures it. Nothing is fetched from a CDN.
* **API reference.** In ``docs/api.md`` the marker ``<!-- api-modules -->`` becomes one
  mkdocstrings block per public module of ``vaelayer_np`` found on disk, so a module added
  or removed by a refactoring is picked up without editing the page.
* **Tests page.** ``tests.md`` is generated from ``tests/test_*.py``: one section per file and
  one heading per test function, with its docstring and source, each with the anchor
  ``tests.<file>.<function>`` (e.g. ``tests.md#tests.test_kernels.test_kl_diag_gaussian``),
  so that the maths page can link every equation to the test that checks it.
* **Notebook pages.** nbconvert's template writes a ``<script src="">`` for its own MathJax
  URL (this site loads MathJax once, for every page) and a loader that would import Mermaid
  from a CDN; both are removed. At the top, two downloads: the **student notebook**
  (``notebooks/student/``, copied to ``lessons/student/`` after the build) and the solution
  (copied next to the page by mkdocs-jupyter's ``include_source``). Every solution is **folded**:
  a code cell holding a ``### BEGIN SOLUTION`` block and the answer of an inline question each
  become a ``<details>`` element, shown on request. The table of contents keeps only headings
  that exist on the page, with the page's own anchors (nbconvert and the plugin's table of
  contents spell some ids differently). A click on a figure shows it at full size; each figure's alt
  text is made from its cell (the section it is in, the titles and axis labels its code sets).
* **Two editions.** ``mkdocs.yml`` builds the teacher edition (everything above); ``mkdocs-student.yml``
  (``extra: edition: student``) builds the student edition: each lesson page shows the student notebook
  (with the stored outputs of the cells that cannot give an exercise away: :func:`outputs_shown`), without
  solution code, inline answers, solution notebooks, the instructor's guide or the answer-keys module, and with
  the gradient formulas of the maths page (the lessons' exercises) withheld; a test source or docstring that
  states an answer key is withheld too.
  Nothing withheld reaches a page or the search index.
* **Getting started.** ``student-notebooks.zip`` (every student notebook) is built with the site, and
  ``<!-- repository -->`` on a page becomes the repository's address (``repo_url`` in ``mkdocs.yml``,
  or the environment variable ``VAELAYER_REPO_URL``), or says that none was configured.
  ``<!-- course-plans -->`` becomes the 2-week and 3-week plans with the points of each exercise and question.
* **Signatures.** The API page's long signatures are laid out by this hook (one parameter per line), not by
  whichever code formatter (Black, Ruff) happens to be installed, so the page is the same on every machine.
"""
from __future__ import annotations

import ast
import atexit
import html
import io
import json
import re
import shutil
import tempfile
import zipfile
from importlib import util as importlib_util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import CombinedEvent, event_priority
from mkdocs.structure.files import File

PACKAGE = "vaelayer_np"
LESSONS_TITLE = "Lessons"
LESSONS_DIR = "lessons"
MATHJAX_DEST = "assets/mathjax"
API_PAGE = "api.md"
API_MARKER = "<!-- api-modules -->"
TESTS_PAGE = "tests.md"
MATHS_PAGE = "maths.md"
INSTRUCTORS_PAGE = "instructors.md"
ANSWER_KEYS_MODULE = "course.answer_keys"
EDITIONS = ("teacher", "student")
ARCHIVE = "student-notebooks.zip"
ARCHIVE_FOLDER = "vaelayer_np-student-notebooks"
REPOSITORY_MARKER = "<!-- repository -->"
PLANS_MARKER = "<!-- course-plans -->"
REPO_URL_VARIABLE = "VAELAYER_REPO_URL"
# Text shown in one edition only: <!-- teacher only --> ... <!-- end teacher only --> (or student).
_EDITION_BLOCK = re.compile(r"<!-- (teacher|student) only -->\n?(.*?)<!-- end \1 only -->\n?", re.S)
# On the maths page a display equation right after <!-- gradient --> is a gradient the lessons ask to derive.
_GRADIENT_DISPLAY = re.compile(r"<!-- gradient -->[ \t]*\n\$\$\n.*?\n\$\$[ \t]*\n?", re.S)
GRADIENT_WITHHELD = ("*The gradient is left out of the student edition: deriving it is one of the lessons' "
                     "exercises.*\n")
WITHHELD = "withheld in the student edition: it states the answer to one of the lessons' exercises"
# A check cell earns this many points per exercise checker it calls, on PASS. A question earns its rubric's points.
EXERCISE_POINTS = 1
# The course plans: (week, lessons); lessons of OPTIONAL are extras for those who finish early.
OPTIONAL = ("06", "07")
PLANS = {
    "Two weeks": [("Week 1", ["01", "02", "03"]), ("Week 2", ["04", "05", "08", "06", "07"])],
    "Three weeks": [("Week 1", ["01", "02"]), ("Week 2", ["03", "04", "05"]), ("Week 3", ["08", "06", "07"])],
}


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _notebooks(config) -> list[Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def _student_notebook(config, name):
    return _root(config) / "notebooks" / "student" / name


def edition(config) -> str:
    """``teacher`` (the default) or ``student``: ``extra: edition:`` of the configuration."""
    value = (config.extra or {}).get("edition", "teacher")
    if value not in EDITIONS:
        raise PluginError(f"extra.edition of {config.config_file_path} is {value!r}: it must be one of {EDITIONS}")
    return value


def _mathjax_static() -> Path:
    spec = importlib_util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("MathJax is taken from the 'jupyter-server-mathjax' package, which is not "
                          "installed: pip install -e '.[docs]'")
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    if not (static / "MathJax.js").is_file():
        raise PluginError(f"jupyter-server-mathjax has no MathJax.js under {static}")
    return static


# ----------------------------------------------------------------------------- signatures
def _parameter(arg, default):
    text = arg.arg + (f": {ast.unparse(arg.annotation)}" if arg.annotation is not None else "")
    if default is not None:
        text += (" = " if arg.annotation is not None else "=") + ast.unparse(default)
    return text


def _parameters(args: ast.arguments) -> list[str]:
    out = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        out.append(_parameter(arg, default))
        if args.posonlyargs and i == len(args.posonlyargs) - 1:
            out.append("/")
    if args.vararg is not None:
        out.append("*" + _parameter(args.vararg, None))
    elif args.kwonlyargs:
        out.append("*")
    out += [_parameter(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg is not None:
        out.append("**" + _parameter(args.kwarg, None))
    return out


def format_code(code: str, line_length: int) -> str:
    """The API page's layout of a long signature, the same on every machine.

    mkdocstrings hands ``def NAME(PARAMETERS): pass`` to a code formatter when a signature is longer than
    its line length, and uses Black or Ruff, whichever is installed (or none): the page then depends on
    optional tools (quotes, line breaks). This function replaces them: the one-line form if it fits, else one
    parameter per line; defaults are written as Python writes them (``ast.unparse``). Code that is not a
    single function definition is returned as given.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return code
    node = tree.body[0]
    params = _parameters(node.args)
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    one_line = f"def {node.name}({', '.join(params)}){returns}: pass"
    if len(one_line) <= line_length or not params:
        return one_line + "\n"
    return f"def {node.name}(\n" + "".join(f"    {p},\n" for p in params) + f"){returns}: pass\n"


def use_site_formatter():
    """Make mkdocstrings lay out signatures with :func:`format_code` whatever formatters are installed."""
    try:
        from mkdocstrings_handlers.python._internal import rendering
    except ImportError as exc:
        raise PluginError(f"mkdocstrings-python's rendering module moved ({exc}): update docs/hooks/docs_site.py "
                          "(use_site_formatter) for this version") from exc
    if not hasattr(rendering, "_get_formatter"):
        raise PluginError("mkdocstrings-python no longer chooses its formatter with _get_formatter: update "
                          "docs/hooks/docs_site.py (use_site_formatter) for this version")
    rendering._get_formatter = lambda: format_code


# ----------------------------------------------------------------------------- what the student edition withholds
def normalise(text) -> str:
    """Text without any whitespace: comparisons ignore layout."""
    return "".join(str(text).split())


_SOLUTION = re.compile(r"### BEGIN SOLUTION[^\n]*\n(.*?)### END SOLUTION", re.S)
MIN_ANSWER_CHARS = 16  # shorter lines ("return out", "pass") are no answer on their own


def _cells_text(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])


def answers(root: Path) -> set[str]:
    """What the student edition must not show, without whitespace: every line of a solution block (code and
    inline answers) of the solution notebooks that the student notebooks do not hold themselves, and every
    answer key of ``vaelayer_np.course.answer_keys.KEYS``."""
    from vaelayer_np.course.answer_keys import KEYS

    student = normalise("".join(_cells_text(p) for p in sorted((root / "notebooks" / "student").glob("*.ipynb"))))
    found = set()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for block in _SOLUTION.findall(_cells_text(path)):
            for line in block.splitlines():
                text = normalise(line)
                if len(text) >= MIN_ANSWER_CHARS and text not in student:
                    found.add(text)
    found |= {normalise(key) for keys in KEYS.values() for exprs in keys.values() for key in exprs}
    return found


def holds_answer(text, withheld) -> bool:
    text = normalise(text)
    return any(answer in text for answer in withheld)


# ----------------------------------------------------------------------------- which stored outputs a student sees
# The student edition shows a solution cell's stored output only if it cannot give an exercise away: never for an
# exercise, a checker's cell or a reveal, nor for a cell that uses what an exercise's code defines, sets or touches
# (directly, or through an earlier cell that does). Uses are read from the code (outputs_shown).
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
REVEAL = "reveal"
CHECKER_PREFIX = "check_"
COURSE = f"{PACKAGE}.course"
ANSWER_KEYS = f"{PACKAGE}.{ANSWER_KEYS_MODULE}"


def _targets(node) -> set[str]:
    """The names an assignment target binds (``a``, ``a, (b, *c)``; not ``a[0]`` or ``a.b``, which read ``a``)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*(_targets(e) for e in node.elts))
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return set()


def _arguments(args: ast.arguments) -> set[str]:
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    return {a.arg for a in every}


def _expr_reads(node, bound: frozenset) -> set[str]:
    """The names an expression (or any node) reads that are not bound around it (its free names)."""
    if isinstance(node, ast.Name):
        return {node.id} - bound if isinstance(node.ctx, ast.Load) else set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return _stmt_reads(node, bound)
    if isinstance(node, ast.Lambda):
        outer = set().union(*(_expr_reads(d, bound) for d in node.args.defaults + node.args.kw_defaults if d))
        return outer | _expr_reads(node.body, bound | _arguments(node.args))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        reads, inner = set(), bound
        for gen in node.generators:
            reads |= _expr_reads(gen.iter, inner)
            inner = inner | _targets(gen.target)
            reads |= set().union(*(_expr_reads(c, inner) for c in gen.ifs))
        parts = (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)
        return reads | set().union(*(_expr_reads(p, inner) for p in parts))
    return set().union(*(_expr_reads(child, bound) for child in ast.iter_child_nodes(node)))


def _imported(stmt) -> set[str]:
    """The names an import binds: ``import a.b`` binds ``a``, ``import a.b as c`` and ``from a import b as c`` ``c``."""
    return {(a.asname or a.name).split(".")[0] for a in stmt.names}


def _block_reads(body, bound: frozenset) -> set[str]:
    """The free names of statements run in order: a name a plain assignment binds is then bound for those after."""
    reads = set()
    for stmt in body:
        reads |= _stmt_reads(stmt, bound)
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and getattr(stmt, "value", None) is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            bound = bound | set().union(*(_targets(t) for t in targets))
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = bound | {stmt.name}
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            bound = bound | _imported(stmt)
    return reads


def _stmt_reads(stmt, bound: frozenset) -> set[str]:
    """The free names of one statement: what it reads from outside itself (a function's body counts: it reads
    them when it is called)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        outer = set().union(*(_expr_reads(n, bound) for n in stmt.decorator_list + stmt.args.defaults
                              + [d for d in stmt.args.kw_defaults if d]))
        return outer | _block_reads(stmt.body, bound | _arguments(stmt.args) | {stmt.name})
    if isinstance(stmt, ast.ClassDef):
        outer = set().union(*(_expr_reads(n, bound) for n in stmt.decorator_list + stmt.bases
                              + [k.value for k in stmt.keywords]))
        # a method does not see the class body's names: each statement of the body is read on its own
        return outer | set().union(*(_stmt_reads(s, bound | {stmt.name}) for s in stmt.body))
    if isinstance(stmt, ast.AugAssign):  # x += 1 reads x
        return _targets(stmt.target) - bound | _expr_reads(stmt.target, bound) | _expr_reads(stmt.value, bound)
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return (_expr_reads(stmt.iter, bound) | _block_reads(stmt.body, bound | _targets(stmt.target))
                | _block_reads(stmt.orelse, bound))
    if isinstance(stmt, (ast.While, ast.If)):
        return _expr_reads(stmt.test, bound) | _block_reads(stmt.body, bound) | _block_reads(stmt.orelse, bound)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        reads = set().union(*(_expr_reads(item.context_expr, bound) for item in stmt.items))
        names = set().union(*(_targets(item.optional_vars) for item in stmt.items if item.optional_vars))
        return reads | _block_reads(stmt.body, bound | names)
    if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        reads = _block_reads(stmt.body, bound) | _block_reads(stmt.orelse, bound) | _block_reads(stmt.finalbody, bound)
        for handler in stmt.handlers:
            reads |= (_expr_reads(handler.type, bound) if handler.type else set()) | \
                _block_reads(handler.body, bound | ({handler.name} if handler.name else set()))
        return reads
    return _expr_reads(stmt, bound)


def _binds(stmt) -> set[str]:
    """Every global name a statement may bind or declare: assigned, defined, imported, a loop's, a with's or a
    ``match`` case's target, a ``global`` of a function in it (a comprehension's or a function's own names are not
    global; a ``:=`` in a comprehension binds the name outside it, so it is)."""
    names = set()

    def visit(node, top, in_function):
        if isinstance(node, ast.Global):
            names.update(node.names)
        if top and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if top and isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(_imported(node))
        if top and isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        if not in_function and isinstance(node, ast.NamedExpr):  # [y := f(v) for v in data] binds y here
            names.update(_targets(node.target))
        if top and isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if top and isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:  # case [first, *rest] as whole
            names.add(node.name)
        if top and isinstance(node, ast.MatchMapping) and node.rest:  # case {"k": v, **rest}
            names.add(node.rest)
        for child in ast.iter_child_nodes(node):
            visit(child, top and not isinstance(node, _SCOPES),
                  in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)))

    visit(stmt, True, False)
    return names


def _calls(tree) -> set[str]:
    """The names of the functions a cell calls (``f(...)``, ``module.f(...)``)."""
    return {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))}


def _is_exercise(cell) -> bool:
    grading = cell.get("metadata", {}).get("nbgrader", {})
    return bool(grading.get("solution")) or "BEGIN SOLUTION" in "".join(cell["source"])


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


def _rebinds(stmt) -> set[str]:
    """The names a top-level statement binds whatever happens: a plain assignment's, a definition's, an import's."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return _imported(stmt)
    if isinstance(stmt, ast.Assign):
        return set().union(*(_targets(t) for t in stmt.targets))
    return set()


def outputs_shown(cells) -> set[int]:
    """The indices of the code cells (of a solution notebook's list of cells) whose stored outputs the student
    edition shows: those that cannot give an exercise away.

    A cell's outputs are withheld when it is an exercise (nbgrader's *solution* cell, or a ``### BEGIN SOLUTION``
    block); when it judges one (nbgrader's graded test cell, or a call of an exercise's checker of
    ``answer_keys.KEYS`` or of a ``check_*`` function imported from ``vaelayer_np.course``: its verdicts are the
    solution's); when it calls ``reveal`` or anything else imported from the answer-keys module (``reveal`` prints
    the library's answer once a checker passed); and when it *depends on an exercise*: one of its statements reads
    a name that an exercise cell binds or reads, or that an earlier dependent statement binds or reads (the code it
    ran may have changed that value in place), or a name whose value or function body was made from such a name.
    Names are followed statement by statement in the order the cells run: a name rebound by a plain assignment, a
    definition or an import that depends on no exercise is free again; builtins, imported names and the notebook's
    own functions and classes are not taken to be changed by the code they are handed to; a name that a function
    declares ``global`` counts as dependent once an exercise has run. A cell that does not parse, and every cell
    after it, shows no output."""
    from vaelayer_np.course.answer_keys import KEYS

    tainted: set[str] = set()
    reads_of: dict[str, set[str]] = {}  # name -> the free names of the statements that bound it
    definitions: set[str] = set()  # names last bound by an import, a def or a class
    declared_global = set()  # the names of every `global` statement of the notebook's code
    for cell in cells:
        if cell["cell_type"] == "code":
            try:
                tree = ast.parse("".join(cell["source"]))
            except SyntaxError:
                continue  # the loop below stops at this cell
            declared_global |= {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
    checkers = {checker for by_checker in KEYS.values() for checker in by_checker}
    course: set[str] = set()  # the names of the course's checkers and answer-keys module, as imported
    shown = set()

    def depends(names) -> bool:
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in tainted or (tainted and name in declared_global):
                return True
            if name not in seen:
                seen.add(name)
                todo += reads_of.get(name, ())
        return False

    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            break
        exercise, dependent = _is_exercise(cell), False
        for stmt in tree.body:
            reads, binds, rebinds = _stmt_reads(stmt, frozenset()), _binds(stmt), _rebinds(stmt)
            if exercise or depends(reads):
                dependent = True
                tainted |= binds | {name for name in reads if name in reads_of and name not in definitions}
                definitions -= binds
                reads_of.update((name, reads_of.get(name, set()) | reads) for name in binds)
                continue
            tainted -= rebinds
            for name in binds:
                reads_of[name] = set(reads) if name in rebinds else reads_of.get(name, set()) | reads
            definitions = (definitions - binds) | (rebinds if isinstance(stmt, _DEFINITIONS) else set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(COURSE):
                course |= {(a.asname or a.name) for a in node.names
                           if a.name.startswith(CHECKER_PREFIX) or node.module == ANSWER_KEYS}
        grading = cell.get("metadata", {}).get("nbgrader", {})
        if not (dependent or grading.get("grade") or _calls(tree) & (course | checkers | {REVEAL})):
            shown.add(i)
    return shown


def student_view(solution: Path, student: Path) -> dict:
    """The student notebook, with the stored outputs of each cell it shares (same type, same source) with the
    solution notebook and that :func:`outputs_shown` lets the student edition show: the lesson's tables and
    figures, and nothing that comes from or tells about an exercise's code."""
    sol_cells = json.loads(solution.read_text())["cells"]
    shown = outputs_shown(sol_cells)
    nb = json.loads(student.read_text())
    cells, start = [], 0
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        for j in range(start, len(sol_cells)):
            other = sol_cells[j]
            if other["cell_type"] == cell["cell_type"] and "".join(other["source"]) == source:
                if other["cell_type"] != "code" or j in shown:
                    cell = other
                start = j + 1
                break
        cells.append(cell)
    nb["cells"] = cells
    return nb


_STUDENT_DIRS: list[str] = []


def _lesson_sources(config) -> dict[str, Path]:
    """{notebook name: the file its lesson page is rendered from} for this edition."""
    notebooks = _notebooks(config)
    if edition(config) == "teacher":
        return {nb.name: nb for nb in notebooks}
    missing = [nb.name for nb in notebooks if not _student_notebook(config, nb.name).is_file()]
    if missing:
        raise PluginError(f"the student edition needs notebooks/student/{missing[0]} (and {len(missing) - 1} more):"
                          " python scripts/make_student_notebooks.py")
    if not _STUDENT_DIRS:
        folder = tempfile.mkdtemp(prefix="vaelayer-student-lessons-")
        atexit.register(shutil.rmtree, folder, True)
        _STUDENT_DIRS.append(folder)
    folder = Path(_STUDENT_DIRS[0])
    sources = {}
    for nb in notebooks:
        target = folder / nb.name
        target.write_text(json.dumps(student_view(nb, _student_notebook(config, nb.name)), indent=1))
        sources[nb.name] = target
    return sources


# The student notebooks as read once per build: the archive and the copies beside the lesson pages are the same
# bytes even if a notebook is regenerated while the site builds.
_STUDENT_BYTES: dict[str, bytes] = {}


def _read_student_notebooks(config) -> dict[str, bytes]:
    _STUDENT_BYTES.clear()
    for nb in _notebooks(config):
        student = _student_notebook(config, nb.name)
        if student.is_file():
            _STUDENT_BYTES[nb.name] = student.read_bytes()
    return _STUDENT_BYTES


def student_archive(notebooks: dict[str, bytes]) -> bytes:
    """``student-notebooks.zip``: the student notebooks ({name: bytes}) in one folder (fixed dates: the same
    bytes for the same notebooks)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(notebooks.items()):
            info = zipfile.ZipInfo(f"{ARCHIVE_FOLDER}/{name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- generated Markdown
def api_order() -> list[str]:
    """The API page's modules: the package's module map (``vaelayer_np.MODULE_MAP``), in its reading order."""
    import vaelayer_np

    return [f"{PACKAGE}.{module}" for _, group in vaelayer_np.MODULE_MAP for module, _ in group]


def api_markdown(site_edition: str = "teacher") -> str:
    """One section per sub-package, one mkdocstrings block per module, in the module map's order (the student
    edition without the answer-keys module)."""
    import vaelayer_np

    parts = []
    for package, group in vaelayer_np.MODULE_MAP:
        parts.append(f"## {PACKAGE}.{package} {{ #{PACKAGE}.{package} }}")
        parts += [f"::: {PACKAGE}.{module}" for module, _ in group
                  if not (site_edition == "student" and module == ANSWER_KEYS_MODULE)]
    return "\n\n".join(parts)


def tests_page_markdown(root: Path, withheld: set[str] | None = None) -> str:
    """The Tests page: every ``test_*`` function of ``tests/test_*.py`` with its docstring and source (a source
    holding one of ``withheld`` is left out, with a note)."""
    lines = ["# Tests", "",
             "Every test function of the suite, file by file, with its docstring and source (generated from "
             "`tests/` at each build). Run them with `python -m pytest -q --nbmake tests notebooks`; the "
             "[maths page](maths.md) links each equation to the tests that check it.", ""]
    for path in sorted((root / "tests").glob("test_*.py")):
        source = path.read_text()
        module = ast.parse(source)
        text_lines = source.splitlines()
        lines += [f"## tests/{path.name} {{ #tests.{path.stem} }}", ""]
        doc = ast.get_docstring(module)
        if doc and not (withheld and holds_answer(doc, withheld)):
            lines += [html.escape(doc.strip().splitlines()[0]), ""]
        for node in module.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test_"):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            body = "\n".join(text_lines[first - 1:node.end_lineno])
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", body)), default=0))
            lines += [f"### {node.name} {{ #tests.{path.stem}.{node.name} }}", ""]
            doc = ast.get_docstring(node)
            if withheld and (holds_answer(body, withheld)):
                lines += [f"`tests/{path.name}`, line {first}: the source is {WITHHELD}.", ""]
                continue
            if doc:
                lines += [f"<p>{html.escape(' '.join(doc.split()))}</p>", ""]
            lines += [f"`tests/{path.name}`, line {first}:", "", f"{fence}python", body, fence, ""]
    return "\n".join(lines)


def repository_markdown(url: str | None) -> str:
    """Where the code is: the configured ``repo_url``, or a note that none was configured."""
    if url:
        return (f"**The repository:** <{url}>. Get the code from there (`git clone {url}`, or an archive "
                "of it), then install it as below.")
    return ("**The repository:** this copy of the site was built without the repository's address: ask whoever "
            "gave you the site where the code is. (Teachers: write it as `repo_url` in `mkdocs.yml`, or set the "
            f"environment variable `{REPO_URL_VARIABLE}`, and build the site again.)")


def prerequisite_lessons(text: str) -> set[str]:
    """The lesson numbers a prerequisite names: "lessons 01-04" -> 01..04, "lessons 01, 02, 04 (their exercises),
    05 (a training epoch)", "lesson 05". Prerequisites are separated by ";"; one that names no lesson gives none."""
    found = set()
    for part in text.split(";"):
        if not re.search(r"\blessons?\b", part):
            continue
        for a, b in re.findall(r"\b(\d\d)\s*-\s*(\d\d)\b", part):
            found |= {f"{i:02d}" for i in range(int(a), int(b) + 1)}
        found |= set(re.findall(r"\b\d\d\b", re.sub(r"\b\d\d\s*-\s*\d\d\b", "", part)))
    return found


_CHECK_CALL = re.compile(r"\b(check_\w+)\(")


def lesson_points(path: Path) -> tuple[list[tuple[str, int]], list[int]]:
    """([(checker, points)] of a lesson's graded checks, [points] of its inline questions). A code cell that calls
    exercise checkers (the ``check_*`` names of the answer-keys table) earns one point per checker it calls, each
    counted once per cell; a question earns its rubric's points."""
    from vaelayer_np.course import guide
    from vaelayer_np.course.answer_keys import KEYS

    checkers = {name for keys in KEYS.values() for name in keys}
    exercises = []
    for cell in json.loads(Path(path).read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "BEGIN SOLUTION" in source:
            continue
        calls = [m.group(1) for m in _CHECK_CALL.finditer(source) if m.group(1) in checkers]
        exercises += [(name, EXERCISE_POINTS) for name in dict.fromkeys(calls)]
    questions = [sum(p for p, _ in rubric) for rubric in guide.LESSONS[Path(path).stem]["rubrics"]]
    return exercises, questions


def plans_markdown(lesson_paths, plans=None) -> str:
    """The course plans: per plan, per week its core and optional lessons with their time and points; then
    the points of every exercise and question. Fails if a plan leaves out a lesson, lists one twice or puts
    one before a lesson it needs."""
    from vaelayer_np.course import guide

    plans = PLANS if plans is None else plans
    stems = {Path(p).stem[:2]: Path(p).stem for p in lesson_paths}
    info = {n: guide.LESSONS[stem] for n, stem in stems.items()}
    points = {Path(p).stem[:2]: lesson_points(Path(p)) for p in lesson_paths}
    total = {n: sum(p for _, p in ex) + sum(q) for n, (ex, q) in points.items()}
    out = []
    for plan, weeks in plans.items():
        order = [n for _, lessons in weeks for n in lessons]
        if sorted(order) != sorted(stems):
            raise PluginError(f"course plan {plan!r} lists lessons {sorted(order)}, the course has {sorted(stems)}")
        for i, n in enumerate(order):
            late = prerequisite_lessons("; ".join(info[n]["prerequisites"])) - set(order[:i])
            if late:
                raise PluginError(f"course plan {plan!r} puts lesson {n} before lesson(s) {sorted(late)} it needs")
        core_minutes = sum(info[n]["minutes"] for n in order if n not in OPTIONAL)
        core_points = sum(total[n] for n in order if n not in OPTIONAL)
        out += [f"### {plan}", "", "| week | core lessons | optional lessons | time (core + optional) | "
                "points (core + optional) |", "|---|---|---|---|---|"]
        for week, lessons in weeks:
            core = [n for n in lessons if n not in OPTIONAL]
            extra = [n for n in lessons if n in OPTIONAL]

            def names(ns):
                return ", ".join(f"[{n} {info[n]['title']}](lessons/{stems[n]}.ipynb)" for n in ns) or "-"

            minutes = (sum(info[n]["minutes"] for n in core), sum(info[n]["minutes"] for n in extra))
            pts = (sum(total[n] for n in core), sum(total[n] for n in extra))
            out.append(f"| {week} | {names(core)} | {names(extra)} | {minutes[0]} + {minutes[1]} min | "
                       f"{pts[0]} + {pts[1]} |")
        out += ["", f"Core: {core_minutes / 60:.1f} hours of work, {core_points} points.", ""]
    out += ["### Points", "",
            f"Each check cell is worth {EXERCISE_POINTS} point per exercise checker it calls, earned when the checker "
            "says PASS (the capstone also checks again functions of earlier lessons); each inline question is worth "
            "the points of its rubric, marked by a person.", "",
            "| lesson | checks (checker: points) | inline questions (points) | total |", "|---|---|---|---|"]
    for n in sorted(stems):
        exercises, questions = points[n]
        ex = ", ".join(f"`{c}`: {p}" for c, p in exercises) or "-"
        qs = ", ".join(f"Q{i}: {p}" for i, p in enumerate(questions, start=1)) or "-"
        out.append(f"| {n}{' (optional)' if n in OPTIONAL else ''} | {ex} | {qs} | {total[n]} |")
    return "\n".join(out)


def tests_page_withheld(config):
    return answers(_root(config)) if edition(config) == "student" else None


# ----------------------------------------------------------------------------- events
def _drop_from_nav(items, page):
    kept = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if value == page:
                continue
            if isinstance(value, list):
                item = {title: _drop_from_nav(value, page)}
        elif item == page:
            continue
        kept.append(item)
    return kept


def on_config(config):
    _mathjax_static()  # fail early, with the install command, if the assets are missing
    use_site_formatter()
    lessons = [f"{LESSONS_DIR}/{nb.name}" for nb in _notebooks(config)]
    for item in config.nav or []:
        if isinstance(item, dict) and LESSONS_TITLE in item:
            item[LESSONS_TITLE] = lessons
    if edition(config) == "student" and config.nav:
        config.nav = _drop_from_nav(config.nav, INSTRUCTORS_PAGE)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, so that it sees the lessons as notebooks
def _add_files(files, config):
    for name, source in _lesson_sources(config).items():
        files.append(File.generated(config, f"{LESSONS_DIR}/{name}", abs_src_path=str(source)))
    files.append(File.generated(config, TESTS_PAGE,
                                content=tests_page_markdown(_root(config), tests_page_withheld(config))))
    files.append(File.generated(config, ARCHIVE, content=student_archive(_read_student_notebooks(config))))
    if edition(config) == "student":
        instructors = files.get_file_from_path(INSTRUCTORS_PAGE)
        if instructors is not None:
            files.remove(instructors)
    static = _mathjax_static()
    for path in sorted(static.rglob("*")):
        if path.is_file():
            rel = path.relative_to(static).as_posix()
            files.append(File.generated(config, f"{MATHJAX_DEST}/{rel}", abs_src_path=str(path)))
    return files


@event_priority(-100)  # after mkdocs-jupyter has wrapped the lessons in its NotebookFile
def _lessons_source_paths(files, config):
    # The wrapper recomputes abs_src_path from src_dir, which a generated file does not have.
    for name, source in _lesson_sources(config).items():
        f = files.get_file_from_path(f"{LESSONS_DIR}/{name}")
        if f is not None and f.abs_src_path is None:
            f.abs_src_path = str(source)
    return files


on_files = CombinedEvent(_add_files, _lessons_source_paths)


GUIDE_PAGES = {"instructors.md": "<!-- instructors-guide -->", "syllabus.md": "<!-- syllabus -->"}


def on_page_markdown(markdown, page, config, files):
    site_edition = edition(config)
    markdown = _EDITION_BLOCK.sub(lambda m: m.group(2) if m.group(1) == site_edition else "", markdown)
    if REPOSITORY_MARKER in markdown:
        markdown = markdown.replace(REPOSITORY_MARKER, repository_markdown(config.repo_url))
    lessons = [p for p in _notebooks(config) if p.name[:2].isdigit()]
    if PLANS_MARKER in markdown:
        markdown = markdown.replace(PLANS_MARKER, plans_markdown(lessons))
    if site_edition == "student" and page.file.src_uri == MATHS_PAGE:
        markdown = _GRADIENT_DISPLAY.sub(GRADIENT_WITHHELD, markdown)
    if page.file.src_uri in GUIDE_PAGES:
        from vaelayer_np.course import guide

        marker = GUIDE_PAGES[page.file.src_uri]
        if marker not in markdown:
            raise PluginError(f"{page.file.src_uri} lost its marker {marker!r}")
        build = guide.instructors_markdown if page.file.src_uri == "instructors.md" else guide.syllabus_markdown
        return markdown.replace(marker, build(lessons))
    if page.file.src_uri != API_PAGE:
        return markdown
    if API_MARKER not in markdown:
        raise PluginError(f"{API_PAGE} lost its marker {API_MARKER!r}")
    return markdown.replace(API_MARKER, api_markdown(site_edition))


_EMPTY_SCRIPT = re.compile(r'<script src="">\s*</script>')
# nbconvert's loader for Mermaid diagrams imports Mermaid from a CDN when a notebook has one;
# the lessons have none, and the site must not point at a CDN, so the loader is left out.
_MERMAID_LOADER = re.compile(r'<script type="module">(?:(?!</script>).)*?\.jp-Mermaid.*?</script>', re.S)


# In a lesson's inline question the answer sits between "### BEGIN SOLUTION" and "### END SOLUTION"
# lines (the markers the student notebooks are generated from); Markdown renders them as headings.
# On the site the answer between them is folded in a <details> element.
_MARKER_TITLE = re.compile(r"^\s*(BEGIN|END) SOLUTION\s*$")
_HEADING = re.compile(r'<h([1-6])[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def _text(fragment):
    """The visible text of an HTML fragment (tags and the permalink sign removed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("¶", "").split())


# What a figure's code says about it: its titles, axis labels and legend labels.
_FIGURE_WORDS = re.compile(r"\b(?:set_title|suptitle|title|set_xlabel|set_ylabel|xlabel|ylabel|label)\s*[(=]\s*"
                           r"[rf]?(\"|')(.+?)(?<!\\)\1")
_STRING = re.compile(r"[rf]?(\"|')((?:(?!\1).){12,}?)(?<!\\)\1")


def figure_description(code: str) -> list[str]:
    """The words of a figure's cell that say what it shows: titles and labels (else the cell's longer string
    literals), f-string fields shown as "...", escapes as spaces."""
    words = [m.group(2) for m in _FIGURE_WORDS.finditer(code)]
    if not words:
        words = [m.group(2) for m in _STRING.finditer(code) if " " in m.group(2)]
    cleaned = []
    for word in words:
        if "$" in word:  # Matplotlib's TeX in words: $\epsilon|f|$ -> epsilon |f|
            word = re.sub(r"\$([^$]*)\$", lambda m: re.sub(r"\\([A-Za-z]+)\s*", r"\1 ", m.group(1))
                          .replace("{", "").replace("}", "").replace("\\", ""), word)
        word = " ".join(re.sub(r"\{[^{}]*\}", "...", word).replace("\\n", " ").replace("\\t", " ").split())
        if word and word not in cleaned:
            cleaned.append(word)
    return cleaned


def figure_alt(lesson: str, number: int, section: str, code: str) -> str:
    """Alt text of a lesson figure: which figure, the section it illustrates, and what its code labels."""
    alt = f"Figure {number} of lesson {lesson}" + (f', section "{section}"' if section else "")
    words = figure_description(code)
    if words:
        alt += ": " + "; ".join(words)
    return alt if len(alt) <= 400 else alt[:397] + "..."


def _rework_lesson(content, lesson):
    """Fold every solution (markdown answers and code cells with a solution block, each in <details>), and give
    every figure its alt text and the zoom on click."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(content, "html.parser")
    section, figures = "", 0
    for cell in soup.select("div.jp-Cell"):
        if cell.find_parent("div", class_="jp-Cell") is not None:  # the template nests a cell in a cell
            continue
        classes = cell.get("class", [])
        text = cell.get_text()
        if "jp-MarkdownCell" in classes:
            for heading in cell.find_all(["h1", "h2"]):
                title = " ".join(heading.get_text().replace("¶", "").split())
                if title and not _MARKER_TITLE.match(title):
                    section = title
        if "jp-CodeCell" in classes:
            editor = cell.select_one(".jp-InputArea-editor") or cell
            for img in cell.select("div.jp-OutputArea img"):
                figures += 1
                img["alt"] = figure_alt(lesson, figures, section, editor.get_text())
                # Figures are embedded (data: URLs, which a browser will not open as a page): a click zooms the
                # figure to its full size in place (docs/javascripts/lesson-figures.js), scrolling sideways.
                img["class"] = img.get("class", []) + ["lesson-figure"]
                img["title"] = "click to see the figure at full size (click again to fit it)"
        if "jp-CodeCell" in classes and "BEGIN SOLUTION" in text:
            details = soup.new_tag("details", attrs={"class": "lesson-solution"})
            summary = soup.new_tag("summary")
            summary.string = "Solution code (try the exercise first; click to show)"
            cell.wrap(details)
            details.insert(0, summary)
        elif "jp-MarkdownCell" in classes:
            for begin in cell.find_all("h3"):
                if not _MARKER_TITLE.match(begin.get_text().replace("¶", "")) or "BEGIN" not in begin.get_text():
                    continue
                details = soup.new_tag("details", attrs={"class": "lesson-answer"})
                summary = soup.new_tag("summary")
                summary.string = "Answer (think first; click to show)"
                details.append(summary)
                node = begin.next_sibling
                while node is not None and not (getattr(node, "name", None) == "h3"
                                                and "END SOLUTION" in node.get_text()):
                    following = node.next_sibling
                    details.append(node.extract())
                    node = following
                if node is not None:
                    node.decompose()
                begin.replace_with(details)
    return str(soup)


def _fix_toc(page, content):
    """Keep the table of contents entries whose heading is on the page, pointing at the page's own ids."""
    headings = [(m.group(2), _text(m.group(3))) for m in _HEADING.finditer(content)]
    used = set()

    def anchor_for(title):
        for hid, text in headings:
            if hid not in used and text == title:
                used.add(hid)
                return hid
        return None

    def walk(items):
        kept = []
        for item in items:
            title = _text(item.title)
            if _MARKER_TITLE.match(title):
                continue
            hid = anchor_for(title)
            item.children = walk(item.children)
            if hid is None:
                kept.extend(item.children)
                continue
            item.id = hid
            kept.append(item)
        return kept

    if page.toc is not None:
        page.toc.items = walk(list(page.toc.items))


def _withhold_in_api(content, withheld):
    """Student edition: each docstring paragraph, formula, table or example of the API page that states an
    answer key is replaced by a note."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(content, "html.parser")
    for block in soup.select("div.doc-contents > p, div.doc-contents > div.arithmatex, div.doc-contents > table, "
                             "div.doc-contents > ul, div.doc-contents > ol, div.doc-contents > div.highlight, "
                             "div.doc-contents > pre, div.doc-contents details"):
        if block.find(class_="doc") is None and holds_answer(block.get_text(), withheld):
            note = soup.new_tag("p")
            em = soup.new_tag("em")
            em.string = f"(This part of the docstring is {WITHHELD}.)"
            note.append(em)
            block.replace_with(note)
    return str(soup)


def on_page_content(content, page, config, files):
    site_edition = edition(config)
    if page.file.src_uri == API_PAGE and site_edition == "student":
        return _withhold_in_api(content, answers(_root(config)))
    if not page.file.src_uri.endswith(".ipynb"):
        return content
    content = _MERMAID_LOADER.sub("", _EMPTY_SCRIPT.sub("", content))
    name = Path(page.file.src_uri).name
    content = _rework_lesson(content, name[:2])
    _fix_toc(page, content)
    name = html.escape(name)
    student = _student_notebook(config, Path(page.file.src_uri).name)
    parts = ['<div class="lesson-download admonition note"><p class="admonition-title">Download this lesson</p><p>']
    if student.is_file():
        parts.append(f'<a href="student/{name}" download><strong>the student notebook</strong> '
                     f'<code>{name}</code></a>: the exercises to do, with their checkers (open it in Jupyter; '
                     f'<a href="../{ARCHIVE}" download>every lesson\'s student notebook in one archive</a>)')
    if site_edition == "teacher":
        parts.append(f'; <a href="{name}" download>the solution notebook</a>, with every answer and its outputs '
                     f'(or open <code>notebooks/student/{name}</code> and <code>notebooks/{name}</code> in a clone of '
                     f'the repository). Solutions are folded below: try each exercise first.</p></div>\n')
    else:
        parts.append('. Below, the lesson as the student notebook has it, with the stored outputs of the cells that '
                     'cannot give an exercise away (none for an exercise, a checker, <code>reveal</code>, or a cell '
                     'that uses an exercise\'s code): the exercises are yours to write.</p></div>\n')
    return "".join(parts) + content


def on_post_build(config):
    """Copy the student notebooks beside the lesson pages: ``lessons/student/NN_*.ipynb``."""
    target = Path(config.site_dir) / LESSONS_DIR / "student"
    target.mkdir(parents=True, exist_ok=True)
    for name, data in _STUDENT_BYTES.items():  # as read for the archive
        (target / name).write_bytes(data)


def on_shutdown():
    while _STUDENT_DIRS:
        shutil.rmtree(_STUDENT_DIRS.pop(), ignore_errors=True)
