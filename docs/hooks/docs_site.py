"""MkDocs hook for the documentation site (listed under ``hooks:`` in mkdocs.yml).

It does five things, so that mkdocs.yml never needs editing when code or lessons change:

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
  contents spell some ids differently). A click on a figure shows it at full size.
"""
from __future__ import annotations

import html
import re
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

def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _notebooks(config) -> list[Path]:
    return sorted((_root(config) / "notebooks").glob("*.ipynb"))


def _mathjax_static() -> Path:
    spec = importlib_util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("MathJax is taken from the 'jupyter-server-mathjax' package, which is not "
                          "installed: pip install -e '.[docs]'")
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    if not (static / "MathJax.js").is_file():
        raise PluginError(f"jupyter-server-mathjax has no MathJax.js under {static}")
    return static


def api_order() -> list[str]:
    """The API page's modules: the package's module map (``vaelayer_np.MODULE_MAP``), in its reading order."""
    import vaelayer_np

    return [f"{PACKAGE}.{module}" for _, group in vaelayer_np.MODULE_MAP for module, _ in group]


def api_markdown() -> str:
    """One section per sub-package, one mkdocstrings block per module, in the module map's order."""
    import vaelayer_np

    parts = []
    for package, group in vaelayer_np.MODULE_MAP:
        parts.append(f"## {PACKAGE}.{package} {{ #{PACKAGE}.{package} }}")
        parts += [f"::: {PACKAGE}.{module}" for module, _ in group]
    return "\n\n".join(parts)


def tests_page_markdown(root: Path) -> str:
    """The Tests page: every ``test_*`` function of ``tests/test_*.py`` with its docstring and source."""
    import ast

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
        if doc:
            lines += [html.escape(doc.strip().splitlines()[0]), ""]
        for node in module.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test_"):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            body = "\n".join(text_lines[first - 1:node.end_lineno])
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", body)), default=0))
            lines += [f"### {node.name} {{ #tests.{path.stem}.{node.name} }}", ""]
            doc = ast.get_docstring(node)
            if doc:
                lines += [f"<p>{html.escape(' '.join(doc.split()))}</p>", ""]
            lines += [f"`tests/{path.name}`, line {first}:", "", f"{fence}python", body, fence, ""]
    return "\n".join(lines)


def on_config(config):
    _mathjax_static()  # fail early, with the install command, if the assets are missing
    lessons = [f"{LESSONS_DIR}/{nb.name}" for nb in _notebooks(config)]
    for item in config.nav or []:
        if isinstance(item, dict) and LESSONS_TITLE in item:
            item[LESSONS_TITLE] = lessons
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, so that it sees the lessons as notebooks
def _add_files(files, config):
    for nb in _notebooks(config):
        files.append(File.generated(config, f"{LESSONS_DIR}/{nb.name}", abs_src_path=str(nb)))
    files.append(File.generated(config, TESTS_PAGE, content=tests_page_markdown(_root(config))))
    static = _mathjax_static()
    for path in sorted(static.rglob("*")):
        if path.is_file():
            rel = path.relative_to(static).as_posix()
            files.append(File.generated(config, f"{MATHJAX_DEST}/{rel}", abs_src_path=str(path)))
    return files


@event_priority(-100)  # after mkdocs-jupyter has wrapped the lessons in its NotebookFile
def _lessons_source_paths(files, config):
    # The wrapper recomputes abs_src_path from src_dir, which a generated file does not have.
    for nb in _notebooks(config):
        f = files.get_file_from_path(f"{LESSONS_DIR}/{nb.name}")
        if f is not None and f.abs_src_path is None:
            f.abs_src_path = str(nb)
    return files


on_files = CombinedEvent(_add_files, _lessons_source_paths)


GUIDE_PAGES = {"instructors.md": "<!-- instructors-guide -->", "syllabus.md": "<!-- syllabus -->"}


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri in GUIDE_PAGES:
        from vaelayer_np.course import guide

        marker = GUIDE_PAGES[page.file.src_uri]
        if marker not in markdown:
            raise PluginError(f"{page.file.src_uri} lost its marker {marker!r}")
        lessons = [p for p in _notebooks(config) if p.name[:2].isdigit()]
        build = guide.instructors_markdown if page.file.src_uri == "instructors.md" else guide.syllabus_markdown
        return markdown.replace(marker, build(lessons))
    if page.file.src_uri != API_PAGE:
        return markdown
    if API_MARKER not in markdown:
        raise PluginError(f"{API_PAGE} lost its marker {API_MARKER!r}")
    return markdown.replace(API_MARKER, api_markdown())


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


def _fold_solutions(content):
    """Fold every solution: markdown answers and code cells with a solution block, each in <details>."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(content, "html.parser")
    for cell in soup.select("div.jp-Cell"):
        if cell.find_parent("div", class_="jp-Cell") is not None:  # the template nests a cell in a cell
            continue
        classes = cell.get("class", [])
        text = cell.get_text()
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
    for img in soup.select("div.jp-OutputArea img, div.jp-RenderedImage img"):
        # Figures are embedded (data: URLs, which a browser will not open as a page): a click zooms the
        # figure to its full size in place (docs/javascripts/lesson-figures.js), scrolling sideways if wider.
        img["class"] = img.get("class", []) + ["lesson-figure"]
        img["title"] = "click to see the figure at full size (click again to fit it)"
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


def _student_notebook(config, name):
    return _root(config) / "notebooks" / "student" / name


def on_page_content(content, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return content
    content = _MERMAID_LOADER.sub("", _EMPTY_SCRIPT.sub("", content))
    content = _fold_solutions(content)
    _fix_toc(page, content)
    name = html.escape(Path(page.file.src_uri).name)
    student = _student_notebook(config, Path(page.file.src_uri).name)
    parts = ['<div class="lesson-download admonition note"><p class="admonition-title">Download this lesson</p><p>']
    if student.is_file():
        parts.append(f'<a href="student/{name}" download><strong>the student notebook</strong> '
                     f'<code>{name}</code></a>: the exercises to do, with their checkers (open it in Jupyter); ')
    parts.append(f'<a href="{name}" download>the solution notebook</a>, with every answer and its outputs '
                 f'(or open <code>notebooks/student/{name}</code> and <code>notebooks/{name}</code> in a clone of '
                 f'the repository). Solutions are folded below: try each exercise first.</p></div>\n')
    return "".join(parts) + content


def on_post_build(config):
    """Copy the student notebooks beside the lesson pages: ``lessons/student/NN_*.ipynb``."""
    target = Path(config.site_dir) / LESSONS_DIR / "student"
    target.mkdir(parents=True, exist_ok=True)
    for nb in _notebooks(config):
        student = _student_notebook(config, nb.name)
        if student.is_file():
            (target / nb.name).write_bytes(student.read_bytes())
