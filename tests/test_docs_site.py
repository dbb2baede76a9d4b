"""The documentation site: a strict MkDocs build, then its pages in a real browser.

The build needs the documentation packages (the ``docs`` extra). The browser tests also need Debian's Chromium
(``apt-get install -y chromium``) and Playwright's Python package, which drives it; without either they are
skipped (Playwright's own browser download is never used). They serve the built site from 127.0.0.1, refuse
every request that leaves that address, and check, at a laptop's width and at a phone's (390 px), that the maths
is typeset by the bundled MathJax with no error in the console, that no page is wider than the screen, that a
display formula wider than its box scrolls in it and shows a visible cue, that every figure loads and has alt
text, that a click zooms a lesson figure to its full size and a second click fits it again, and that the API page
documents every module. The student edition (``mkdocs-student.yml``) is built too and read page by page in the
browser, with its search index, its notebooks and its archive: no solution line and no answer key. Checks
without a browser: every link and anchor resolves, the API page shows every public callable with its true
defaults (laid out by the site's own formatter, whether or not Black or Ruff is installed), the install page
names the true extras, the course plans and points, the editions, the repository address and the archive.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import html as html_module
import http.server
import importlib
import inspect
import json
import math
import os
import re
import shutil
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Addresses that must not appear in a built page: the site works without a network.
CDN_HINTS = ("cdnjs", "jsdelivr", "unpkg", "googleapis", "cdn.", "mathjax.org")
# TeX that would be visible if a formula were not typeset.
RAW_TEX = re.compile(r"\$\$|\\frac|\\begin\{|\\sum|\\mathrm|\\\(|\\\[|\$[^\s$][^$\n]{0,200}?[^\s$\\]\$")

# The widths the site is read at: a laptop, and a phone (where the maths must scroll, not overflow).
WIDTHS = [(1280, 900), (390, 844)]
NARROW_PAGES = ["maths.html", "index.html", "lessons/02_deriving_gradients.html", "api.html",
                "lessons/05_training_and_what_goes_wrong.html"]
# The page whose first figure the browser test zooms (its figures are wider than the page).
ZOOM_PAGE = "lessons/05_training_and_what_goes_wrong.html"


def zoom_figure(page):
    """Click the page's first lesson figure twice: (width shown, width zoomed, natural width, width after)."""
    img = page.locator("img.lesson-figure").first
    img.scroll_into_view_if_needed()
    width = "el => el.getBoundingClientRect().width"
    before, natural = img.evaluate(width), img.evaluate("el => el.naturalWidth")
    img.click()
    zoomed = img.evaluate(width)
    img.click(position={"x": 5, "y": 5})
    return before, zoomed, natural, img.evaluate(width)


def public_modules():
    pkg = ROOT / "vaelayer_np"
    names = {p.stem for p in pkg.glob("*.py") if not p.name.startswith("_")}
    names |= {p.parent.name for p in pkg.glob("*/__init__.py") if not p.parent.name.startswith("_")}
    return sorted(names)


def lessons():
    return sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def build(site_build):
    """The session's one strict build (tests/conftest.py: site_build)."""
    return site_build


def test_install_page_python_example_runs():
    """The Python example of docs/install.md runs as written against the current API."""
    text = (ROOT / "docs" / "install.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/install.md has no Python example"
    for block in blocks:
        exec(compile(block, "docs/install.md", "exec"), {"__name__": "docs_example"})


@pytest.mark.slow  # 10-15 s
def test_strict_build(build):
    build.check()
    site = build.site
    for page in ("index.html", "install.html", "method.html", "results.html", "performance.html", "api.html",
                 "tabular.html", "syllabus.html", "instructors.html", "assets/mathjax/MathJax.js"):
        assert (site / page).is_file(), page
    # Every notebook is a lesson page, with its solution .ipynb beside it and the student version in student/,
    # both linked from the page; the solutions on the page are folded.
    assert lessons(), "no notebooks/*.ipynb"
    for name in lessons():
        page = (site / "lessons" / f"{name}.html").read_text()
        assert json.loads((site / "lessons" / f"{name}.ipynb").read_text())["cells"]
        student = json.loads((site / "lessons" / "student" / f"{name}.ipynb").read_text())
        assert "NotImplementedError" in json.dumps(student), name
        assert f'href="student/{name}.ipynb"' in page and f'href="{name}.ipynb"' in page, name
        assert "<details class=\"lesson-solution\">" in page and not re.search(r"<h3[^>]*>\s*BEGIN SOLUTION", page)
    # Every page of the site is in the navigation (the menu of the home page lists them all).
    home = (site / "index.html").read_text()
    for md in sorted((ROOT / "docs").glob("*.md")):
        assert f'href="{md.stem}.html"' in home or md.stem == "index", f"{md.name} is in no menu"
    # The API page has a section for every public module.
    api = (site / "api.html").read_text()
    for name in public_modules():
        assert f'id="vaelayer_np.{name}"' in api, f"API page lacks vaelayer_np.{name}"
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import docs_site

    for module in docs_site.api_order():
        assert f'id="{module}"' in api, f"API page lacks {module}"
    # No page points at a CDN or any other outside address for a script, style or font.
    for html in site.rglob("*.html"):
        text = html.read_text()
        hits = [h for h in CDN_HINTS if h in text]
        assert not hits, f"{html.relative_to(site)} mentions {hits}"
        external = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]+"', text)
        assert not external, f"{html.relative_to(site)} loads {external}"


@contextlib.contextmanager
def serve(directory):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# Run in each page once MathJax has finished: what a reader sees of the maths.
PAGE_REPORT = """() => {
  const jax = MathJax.Hub.getAllJax();
  const unrendered = jax.filter(j => !document.getElementById(j.inputID + '-Frame')).map(j => j.originalText);
  const arithmatex = Array.from(document.querySelectorAll('.arithmatex'));
  const bare = arithmatex.filter(el => !el.querySelector('.MathJax, .MathJax_Display')).map(el => el.textContent);
  const main = document.querySelector('.md-content').cloneNode(true);
  main.querySelectorAll('script, style, pre, code, .MathJax, .MathJax_Display, .MathJax_Preview, '
                        + '.MJX_Assistive_MathML').forEach(el => el.remove());
  const images = Array.from(document.images).filter(img => img.closest('.md-content'));
  return {
    formulas: jax.length,
    unrendered: unrendered,
    bareArithmatex: bare,
    errors: window.siteMath.errors,
    text: main.textContent,
    images: images.map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0,
                                alt: img.getAttribute('alt') || ''})),
    title: document.title,
    pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    displays: document.querySelectorAll('.md-content .MathJax_Display').length,
    // A formula wider than its box must scroll in it and show that it does: the class "maths-wide", whose
    // style draws shadows at the cut edges (a background gradient) and a dashed right border.
    cutMaths: Array.from(document.querySelectorAll('.md-content .MathJax_Display')).filter(el => {
      const box = el.closest('div.arithmatex') || el;
      const style = getComputedStyle(box);
      const cue = box.classList.contains('maths-wide') && style.backgroundImage.includes('gradient')
                  && style.borderRightStyle === 'dashed';
      return box.scrollWidth > box.clientWidth + 1 && !(['auto', 'scroll'].includes(style.overflowX) && cue);
    }).map(el => el.textContent.slice(0, 60)),
    scrolling: Array.from(document.querySelectorAll('.md-content .MathJax_Display')).filter(el => {
      const box = el.closest('div.arithmatex') || el;
      return box.scrollWidth > box.clientWidth + 1;
    }).length,
    lineBreaking: !!(MathJax.Hub.config['HTML-CSS'].linebreaks || {}).automatic,
    vaeLayerSection: !!document.getElementById('vaelayer_np.core.layers.VAELayer'),
    visibleText: document.querySelector('.md-content').innerText,
  };
}"""


@pytest.mark.slow  # the build, then about 20 s in the browser
def test_site_in_browser(request, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (pip install -e '.[test]')")
    build = request.getfixturevalue("build")
    build.check()
    pages = ["index.html", "install.html", "maths.html", "iffcl.html", "method.html", "results.html",
             "performance.html", "tabular.html", "syllabus.html", "api.html", "instructors.html"]
    pages += [f"lessons/{name}.html" for name in lessons()]

    reports, outside, failed, js_errors, console_errors, zooms = {}, [], [], [], [], {}
    with serve(build.site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for width, height in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": height})

                def local_only(route):
                    if route.request.url.startswith(base):
                        route.continue_()
                    else:
                        outside.append(route.request.url)
                        route.abort()

                page.route("**/*", local_only)
                page.on("pageerror", lambda exc: js_errors.append(str(exc)))
                page.on("console", lambda msg: msg.type == "error" and console_errors.append(
                    f"{page.url}: {msg.text}"))  # noqa: B023 - this page's handler, for this page
                page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
                for rel in pages if width == WIDTHS[0][0] else NARROW_PAGES:
                    page.goto(base + rel, wait_until="load")
                    page.wait_for_function("window.siteMath && window.siteMath.done", timeout=180_000)
                    page.evaluate("new Promise(resolve => MathJax.Hub.Queue(resolve))")  # later typesets too
                    reports[(width, rel)] = page.evaluate(PAGE_REPORT)
                    if rel in ("api.html", "maths.html", f"lessons/{lessons()[0]}.html"):
                        page.screenshot(path=str(tmp_path / f"{width}_{rel.replace('/', '_')}.png"))
                    if rel == ZOOM_PAGE:
                        zooms[width] = zoom_figure(page)
                page.close()
        finally:
            browser.close()

    assert not outside, f"requests that left 127.0.0.1: {outside}"
    assert not failed, f"missing files: {failed}"
    assert not js_errors, f"JavaScript errors: {js_errors}"
    assert not console_errors, f"console errors: {console_errors}"
    for (width, rel), rep in reports.items():
        where = f"page /{rel} at {width} px ({rep['title']})"
        assert not rep["errors"], f"{where}: TeX errors {rep['errors']}"
        assert not rep["unrendered"], f"{where}: formulas not typeset {rep['unrendered']}"
        assert not rep["bareArithmatex"], f"{where}: maths left as text {rep['bareArithmatex']}"
        raw = RAW_TEX.search(rep["text"])
        assert raw is None, f"{where}: raw TeX visible: ...{rep['text'][max(raw.start() - 60, 0):raw.end() + 60]}..."
        assert all(img["ok"] for img in rep["images"]), f"{where}: images not loaded {rep['images']}"
        no_alt = [img["src"][:60] for img in rep["images"] if not img["alt"].strip() or "No description" in img["alt"]]
        assert not no_alt, f"{where}: figures without alt text {no_alt}"
        if rel.startswith("lessons/"):
            generic = [img["alt"] for img in rep["images"] if not re.match(r"Figure \d+ of lesson \d\d", img["alt"])]
            assert not generic, f"{where}: lesson figures whose alt text was not generated: {generic}"
        # Nothing is wider than the screen: a wide display equation scrolls inside its own box.
        assert rep["pageOverflow"] <= 1, f"{where}: the page is {rep['pageOverflow']} px wider than the screen"
        assert not rep["cutMaths"], f"{where}: display maths wider than its box and not scrollable {rep['cutMaths']}"
        assert not rep["lineBreaking"], f"{where}: MathJax breaks long formulas over lines (it must scroll instead)"

    # Pages known to hold maths: the API page (its notation section and the docstrings) and the
    # first lesson. The results page has figures; the API page documents the layers.
    wide = WIDTHS[0][0]
    assert reports[(wide, "api.html")]["formulas"] >= 2
    assert reports[(wide, f"lessons/{lessons()[0]}.html")]["formulas"] >= 1
    assert reports[(wide, "results.html")]["images"], "no figures on the results page"
    assert reports[(wide, "api.html")]["vaeLayerSection"] and "VAELayer" in reports[(wide, "api.html")]["visibleText"]
    narrow = WIDTHS[1][0]
    assert reports[(narrow, "maths.html")]["displays"] >= 16
    assert reports[(narrow, "maths.html")]["scrolling"] >= 1, "no display equation needed its scroll box at 390 px?"
    # The figure zoom: a click shows the figure at its full size (wider than it was shown), a second click fits it
    # to the page again; at both widths.
    for width, (before, zoomed, natural, after) in zooms.items():
        assert natural > before + 10, f"{ZOOM_PAGE} at {width} px: the figure ({natural} px) is shown whole already"
        assert abs(zoomed - natural) <= 1, f"{ZOOM_PAGE} at {width} px: zoomed to {zoomed} px, full size {natural} px"
        assert abs(after - before) <= 1, f"{ZOOM_PAGE} at {width} px: a second click left it at {after} px"
    assert set(zooms) == {w for w, _ in WIDTHS}, zooms


# ----------------------------------------------------------------------------- every link of the built site
class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None and tag in ("a", "img", "script", "link", "source", "iframe"):
                self.links.append(attrs[key])


def broken_links(site):
    """Every internal link and resource of every built page whose file or anchor is missing, or that names a
    folder (opened from disk, a folder link shows a file listing). Returns (pages, links checked, problems)."""
    site = Path(site).resolve()
    pages = {}
    for path in site.rglob("*.html"):
        parser = _Links()
        parser.feed(path.read_text(errors="replace"))
        pages[path.resolve()] = parser
    checked, problems = 0, []
    for path, parser in pages.items():
        for url in parser.links:
            parts = urlsplit(url)
            if not url or parts.scheme or url.startswith("//"):
                continue  # outside links (none load anything: test_strict_build), mailto:, data:
            checked += 1
            rel = unquote(parts.path)
            target = (site / rel.lstrip("/")) if rel.startswith("/") else (path.parent / rel) if rel else path
            target = target.resolve()
            where = f"{path.relative_to(site)}: {url}"
            if rel.endswith("/") or target.is_dir():
                problems.append(f"{where} names a folder, not a file")
            elif not target.exists():
                problems.append(f"{where}: no such file")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                problems.append(f"{where}: no element with that id")
    return len(pages), checked, problems


@pytest.mark.slow  # the build, then a second or two
def test_no_broken_link_or_anchor_on_the_whole_site(build, tmp_path):
    build.check()
    n_pages, checked, problems = broken_links(build.site)
    assert n_pages >= 20 and checked > 1000, (n_pages, checked)
    assert not problems, f"{len(problems)} broken links:\n" + "\n".join(problems[:50])
    # The crawl can fail: a planted broken anchor and a missing file are found.
    copy = tmp_path / "site"
    shutil.copytree(build.site, copy)
    page = copy / "maths.html"
    page.write_text(page.read_text().replace('href="api.html#vaelayer_np.core.ops.kl_diag_gaussian"',
                                             'href="api.html#vaelayer_np.core.ops.kl_gone"', 1)
                    + '<a href="lessons/no_such_lesson.html">x</a>')
    found = broken_links(copy)[2]
    assert any("kl_gone" in p for p in found) and any("no_such_lesson" in p for p in found), found


# ----------------------------------------------------------------------------- the API page's signatures
_SIGNATURE = re.compile(r'id="(?P<id>vaelayer_np\.[\w.]+)"[^>]*class="doc doc-heading">(?:(?!</h\d>).)*</h\d>\s*'
                        r'<div class="doc-signature highlight"><pre><span></span><code>(?P<sig>.*?)</code>', re.S)


def rendered_signatures(api_html):
    """{section id: the signature as shown, as plain text} of the API page."""
    return {m.group("id"): " ".join(html_module.unescape(re.sub(r"<[^>]+>", "", m.group("sig"))).split())
            for m in _SIGNATURE.finditer(api_html)}


def public_callables():
    """(id, object, module) of every public function and class of the API page's modules, and of every public
    method of those classes."""
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import docs_site

    for modname in docs_site.api_order():
        module = importlib.import_module(modname)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != modname:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{modname}.{name}", obj, module
                if inspect.isclass(obj) and not issubclass(obj, BaseException):
                    for mname, meth in vars(obj).items():
                        if not mname.startswith("_") and inspect.isfunction(meth):
                            yield f"{modname}.{name}.{mname}", meth, module


def _true_defaults(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    defaults = {k: p.default for k, p in inspect.signature(target).parameters.items()
                if p.default is not inspect.Parameter.empty}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return defaults


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return type(a) is type(b) and bool(a == b) or (isinstance(b, float) and isinstance(a, int) and a == b)
    except Exception:  # noqa: BLE001 - arrays and the like: not equal as defaults
        return False


def default_problems(signature, obj, module):
    """How the defaults shown in ``signature`` differ from the object's true ones (evaluated in its module)."""
    rest = signature.partition("(")[2].rsplit(")", 1)[0]
    args = ast.parse(f"def _f({rest}): pass").body[0].args
    positional = args.posonlyargs + args.args
    shown = {a.arg: ast.unparse(d) for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults)}
    shown.update({a.arg: ast.unparse(d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
    true = _true_defaults(obj)
    problems = []
    if set(shown) != set(true):
        problems.append(f"defaults shown for {sorted(shown)}, the object has them for {sorted(true)}")
    for name in sorted(set(shown) & set(true)):
        try:
            value = eval(shown[name], dict(vars(module)))  # noqa: S307 - the package's own source expressions
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}={shown[name]} does not evaluate in {module.__name__} ({exc})")
            continue
        if not _same(value, true[name]):
            problems.append(f"{name}: shown {shown[name]!r}, true {true[name]!r}")
    return problems


@pytest.mark.slow  # the build, then a few seconds
def test_api_page_shows_each_callable_with_its_true_defaults(build):
    """Every public function, class (its constructor, merged) and method has a signature on the API page, and
    each default it shows evaluates, in its module, to the default inspect.signature reports."""
    build.check()
    shown = rendered_signatures((build.site / "api.html").read_text())
    missing, wrong, n = [], [], 0
    for ident, obj, module in public_callables():
        n += 1
        if inspect.isclass(obj) and (issubclass(obj, (tuple, BaseException)) or not any(
                "__init__" in vars(k) for k in obj.__mro__ if k.__module__.startswith("vaelayer_np"))):
            continue  # no constructor of the package's own (named tuples, exceptions, protocols): no signature
        if ident not in shown:
            missing.append(ident)
            continue
        problems = default_problems(shown[ident], obj, module)
        if problems:
            wrong.append(f"{ident}: {'; '.join(problems)}")
    assert n > 100, n
    assert not missing, f"{len(missing)} callables without a signature on the API page: {missing[:30]}"
    assert not wrong, "\n".join(wrong)
    # The signature as laid out by the site's own formatter (docs/hooks/docs_site.py: format_code), whatever
    # formatter is installed: defaults as Python writes them.
    vae = re.sub(r"\(\s+", "(", shown["vaelayer_np.core.layers.VAELayer"])
    assert vae.startswith("VAELayer(in_dim, latent_dim, activation='relu', beta=0.001"), vae


# ----------------------------------------------------------------------------- signatures on every machine
def _hook():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import docs_site

    return docs_site


def test_signatures_are_laid_out_by_the_site_not_by_an_installed_formatter():
    """mkdocstrings would format long signatures with Black or Ruff when one is installed (quotes, breaks): the
    hook makes it use its own layout, so the API page is the same with or without them."""
    docs_site = _hook()
    from mkdocstrings_handlers.python._internal import rendering

    docs_site.use_site_formatter()
    assert rendering._get_formatter() is docs_site.format_code
    code = ('def xxxxxxxx(a, b: int, /, c="relu", *args, d: float = 1e-3, e=np.float64, **kw) -> None: pass')
    short = docs_site.format_code(code, 200)
    assert short == "def xxxxxxxx(a, b: int, /, c='relu', *args, d: float = 0.001, e=np.float64, **kw) -> None: pass\n"
    long = docs_site.format_code(code, 40)
    assert long.splitlines()[0] == "def xxxxxxxx(" and long.endswith(") -> None: pass\n")
    assert [line.strip() for line in long.splitlines()[1:-1]] == [
        "a,", "b: int,", "/,", "c='relu',", "*args,", "d: float = 0.001,", "e=np.float64,", "**kw,"]
    for text in (short, long):  # the same function: nothing lost or changed
        assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(code))
    assert docs_site.format_code("x = {'a': 1}", 5) == "x = {'a': 1}"  # not a signature: as given
    keyword_only = docs_site.format_code("def f(*, a=1, b=2): pass", 10)
    assert ast.dump(ast.parse(keyword_only)) == ast.dump(ast.parse("def f(*, a=1, b=2): pass"))


# ----------------------------------------------------------------------------- install page, plans
def _extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the extras are the same under 3.10

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {name: [re.split(r"[<>=\[ ]", line.strip())[0].lower() for line in value] for name, value in extras.items()}


def test_install_page_names_the_true_extras():
    """Each `pip install -e ".[EXTRA]"` line of the install page names an extra of pyproject.toml, and its comment
    names every package that extra installs (and the page's `[test]` line does not claim the documentation
    tools)."""
    extras = _extras()
    text = (ROOT / "docs" / "install.md").read_text()
    lines = re.findall(r'^pip install -e "\.\[(\w+)\]"\s+#(.*(?:\n\s+#.*)*)', text, re.M)
    assert {name for name, _ in lines} >= {"test", "docs", "dev", "cluster", "bench"}, lines
    for name, comment in lines:
        assert name in extras, f"install.md names an extra [{name}] that pyproject.toml does not have"
        words = comment.lower()
        for package in extras[name]:
            tokens = {package, package.removeprefix("mkdocs-"), package.split("-")[0]}
            assert any(t in words for t in tokens), f"install.md's [{name}] line does not name {package}"
        if name == "test":
            assert "documentation" not in words and "mkdocs" not in words


def test_course_plans_cover_every_lesson_in_order_with_the_points():
    """The 2-week and 3-week plans list every lesson once, after the lessons it needs, and the points table adds
    the checks' points (1 per exercise checker a cell calls) and each question's rubric points."""
    docs_site = _hook()
    from mkdocs.exceptions import PluginError

    from vaelayer_np.course import guide
    from vaelayer_np.course.answer_keys import KEYS

    paths = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name[:2].isdigit()]
    text = docs_site.plans_markdown(paths)
    assert "### Two weeks" in text and "### Three weeks" in text
    checkers = {name for keys in KEYS.values() for name in keys}
    for stem, info in guide.LESSONS.items():
        cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        calls = [set(re.findall(r"\b(check_\w+)\(", "".join(c["source"]))) & checkers for c in cells
                 if c["cell_type"] == "code" and "BEGIN SOLUTION" not in "".join(c["source"])]
        assert set(KEYS[stem]) <= set().union(*calls), stem  # every exercise of the lesson is checked
        total = sum(len(c) for c in calls) + sum(p for rubric in info["rubrics"] for p, _ in rubric)
        row = next(line for line in text.splitlines() if line.startswith(f"| {stem[:2]}"))
        assert row.endswith(f"| {total} |"), (row, total)
        for i, rubric in enumerate(info["rubrics"], start=1):
            assert f"Q{i}: {sum(p for p, _ in rubric)}" in row
    for plan in docs_site.PLANS.values():
        order = [n for _, week in plan for n in week]
        assert sorted(order) == sorted(p.name[:2] for p in paths)
    assert docs_site.prerequisite_lessons("lessons 01, 02, 04 (their exercises), 05 (a training epoch)") == {
        "01", "02", "04", "05"}
    assert docs_site.prerequisite_lessons("lessons 01-04") == {"01", "02", "03", "04"}
    with pytest.raises(PluginError, match="before lesson"):  # the capstone before lesson 05: refused
        docs_site.plans_markdown(paths, {"bad": [("Week 1", ["01", "02", "03", "04", "08"]),
                                                 ("Week 2", ["05", "06", "07"])]})
    with pytest.raises(PluginError, match="lists lessons"):
        docs_site.plans_markdown(paths, {"short": [("Week 1", ["01", "02"])]})


# ----------------------------------------------------------------------------- the student edition
STUDENT_REPO_URL = "https://git.example.org/course/vaelayer_np"
_SOLUTION = re.compile(r"### BEGIN SOLUTION[^\n]*\n(.*?)### END SOLUTION", re.S)
_CHECK_CALL = re.compile(r"\b(check_\w+)\(")


def _squeeze(text):
    return "".join(str(text).split())


def withheld_items():
    """What the student edition must not show, as (text without whitespace, lesson number, checker or None).

    * Every line of every solution block of the solution notebooks, except the lines the student notebooks hold
      themselves and the lines of the library's own source outside ``vaelayer_np.course``: a line of an inline
      question's answer (checker None) is never shown; a line of solution code is an answer to the exercise of the
      next checker the notebook calls.
    * Every key of ``vaelayer_np.course.answer_keys.KEYS``, with its checker.

    An answer to an exercise may be shown only on the page of another lesson (whose own notebook is checked by the
    leak test), never on its own lesson's page, below the exercise's checker included.
    """
    from vaelayer_np.course.answer_keys import KEYS

    student = _squeeze("".join("".join(c["source"]) for p in (ROOT / "notebooks" / "student").glob("*.ipynb")
                               for c in json.loads(p.read_text())["cells"]))
    library = "\0".join(_squeeze(line) for path in sorted((ROOT / "vaelayer_np").rglob("*.py"))
                         if "course" not in path.parts for line in path.read_text().splitlines())
    items = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            checker = None
            if cell["cell_type"] == "code":
                later = (_CHECK_CALL.search("".join(c["source"])) for c in cells[i + 1:] if c["cell_type"] == "code")
                checker = next((m.group(1) for m in later if m), None)
            for block in _SOLUTION.findall("".join(cell["source"])):
                for line in block.splitlines():
                    text = _squeeze(line)
                    if len(text) >= 16 and text not in student and text not in library:
                        items.add((text, path.name[:2], checker))
    for stem, keys in KEYS.items():
        for checker, exprs in keys.items():
            items |= {(_squeeze(e), stem[:2], checker) for e in exprs}
    return items


def leaks(page, text, items):
    """The items that ``text``, shown at ``page`` (a path of the site), must not show. An answer to an exercise of
    lesson L may be shown by a lesson page other than L's (whose own notebook is checked by the leak test), never by
    L's own page, not even below the call of its checker: a student who scrolls past the exercise must not find its
    answer there (in the notebook, ``reveal`` shows it only once the student's own code passed). An inline
    question's answer (no checker) is shown nowhere."""
    text = _squeeze(text)
    found = []
    lesson = re.match(r"lessons/(?:student/)?(\d\d)_", page)
    for item, number, checker in items:
        if item not in text:
            continue
        if lesson and checker and lesson.group(1) != number:
            continue
        found.append(f"{page}: {item[:80]} (lesson {number}, {checker or 'an inline answer'})")
    return found


def _notebook_text(raw):
    nb = json.loads(raw)
    parts = []
    for cell in nb["cells"]:
        parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    parts.append("".join(value))
    return "\n".join(parts)


def test_leak_rule_catches_an_answer_on_the_wrong_page():
    items = {("d_mu=np.empty_like(mu)", "07", "check_kl_kernel"), ("theansweris42", "05", None)}
    shown = "x = 1\nd_mu = np.empty_like(mu)"
    assert leaks("maths.html", shown, items)                                          # not a lesson page
    assert leaks("search index, api.html", shown, items)
    assert leaks("lessons/07_speed.html", shown, items)                               # before its checker
    assert leaks("lessons/07_speed.html", "check_kl_kernel(f)\n" + shown, items)      # and after it
    assert not leaks("lessons/08_capstone.html", shown, items)                        # another lesson
    assert leaks("lessons/05_training.html", "the answer is 42", items)               # an inline answer: never
    assert leaks("lessons/08_capstone.html", "the answer is 42", items)


@pytest.fixture(scope="module")
def student_site(tmp_path_factory):
    """`mkdocs build --strict -f mkdocs-student.yml`, with a repository address set."""
    import subprocess

    site = tmp_path_factory.mktemp("student") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OPENBLAS_NUM_THREADS="1", VAELAYER_REPO_URL=STUDENT_REPO_URL)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs-student.yml",
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"student build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return site


@pytest.mark.slow  # two builds (the teacher one shared), then a few seconds
def test_editions_repository_address_and_archive(build, student_site):
    """The teacher edition keeps the solutions, the instructor's guide and the answer-keys module; the student
    edition has none of them. Both show the configured repository address on the home and install pages (or
    say none is configured) and carry every student notebook in student-notebooks.zip."""
    import zipfile

    build.check()
    teacher = build.site
    assert (teacher / "instructors.html").is_file() and not (student_site / "instructors.html").exists()
    assert 'id="vaelayer_np.course.answer_keys"' in (teacher / "api.html").read_text()
    assert 'id="vaelayer_np.course.answer_keys' not in (student_site / "api.html").read_text()
    assert 'href="instructors.html"' not in (student_site / "index.html").read_text()
    names = lessons()
    for name in names:
        solution = json.loads((teacher / "lessons" / f"{name}.ipynb").read_text())
        assert "BEGIN SOLUTION" in json.dumps(solution), name
        page = (student_site / "lessons" / f"{name}.html").read_text()
        assert "lesson-solution" not in page and "BEGIN SOLUTION" not in page, name
        assert f'href="student/{name}.ipynb"' in page and f'href="{name}.ipynb"' not in page, name
    from mkdocs.config import load_config

    configured = load_config(str(ROOT / "mkdocs.yml"))["repo_url"]
    for site, url in ((teacher, configured), (student_site, STUDENT_REPO_URL)):
        for page in ("index.html", "install.html"):
            text = (site / page).read_text()
            if url:
                assert f'href="{url}"' in text and f"git clone {url}" in html_module.unescape(text), (site, page)
                # The header links the repository without asking its host's API for facts (no outside request).
                assert 'class="md-source"' in text and 'data-md-component="source"' not in text, (site, page)
            else:
                assert "built without the repository's address" in text, (site, page)
            assert 'href="student-notebooks.zip"' in text, (site, page)
        with zipfile.ZipFile(site / "student-notebooks.zip") as archive:
            stored = {Path(n).name: archive.read(n) for n in archive.namelist()}
        # Every student notebook, as the same build copied it beside the lesson pages.
        assert stored == {f"{n}.ipynb": (site / "lessons" / "student" / f"{n}.ipynb").read_bytes() for n in names}
        assert all("NotImplementedError" in text.decode() for text in stored.values())
    assert "Two weeks" in (student_site / "syllabus.html").read_text()


@pytest.mark.slow  # the student build, then about a minute in the browser
def test_student_edition_shows_no_solution_and_no_key(student_site):
    """Every page of the student edition, as the browser has it (hidden elements included), and its search index
    hold no line of a solution block and no answer key of the page's own lesson (below its exercise's checker
    included), nor any inline answer; nor do its notebooks and archive."""
    import zipfile

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (pip install -e '.[docs]')")
    items = withheld_items()
    assert sum(checker is None for _, _, checker in items) > 20 and len(items) > 200, len(items)
    pages = sorted(p.relative_to(student_site).as_posix() for p in student_site.rglob("*.html")
                   if not p.relative_to(student_site).as_posix().startswith("assets/"))
    assert len(pages) >= 20 and "api.html" in pages and "tests.html" in pages
    found, texts, folded = [], {}, {}
    with serve(student_site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else route.abort())
            for rel in pages:
                page.goto(base + rel, wait_until="load")
                texts[rel] = page.evaluate("document.documentElement.textContent")
                folded[rel] = page.evaluate("document.querySelectorAll('details.lesson-solution, "
                                            "details.lesson-answer').length")
            index = page.evaluate("fetch('search/search_index.json').then(r => r.json())")
        finally:
            browser.close()
    for rel, text in texts.items():
        found += leaks(rel, text, items)
        assert not folded[rel], f"{rel}: {folded[rel]} folded solutions"
    by_page = {}
    for doc in index["docs"]:
        by_page.setdefault(doc["location"].split("#")[0], []).append(doc["title"] + "\n" + doc["text"])
    assert any(p.startswith("lessons/") for p in by_page) and "api.html" in by_page, sorted(by_page)
    for rel, docs in by_page.items():
        found += leaks(f"search index, {rel}", "\n".join(docs), items) if not rel.startswith("lessons/") else \
            leaks(rel, "\n".join(docs), items)
    for nb in sorted(student_site.rglob("*.ipynb")):
        rel = nb.relative_to(student_site).as_posix()
        found += leaks(rel, _notebook_text(nb.read_text()), items)
    with zipfile.ZipFile(student_site / "student-notebooks.zip") as archive:
        for name in archive.namelist():
            found += leaks(f"lessons/student/{Path(name).name}", _notebook_text(archive.read(name)), items)
    assert not found, f"{len(found)} answers shown by the student edition:\n" + "\n".join(found[:40])
    # The check can fail: the teacher edition's lesson pages show their solutions.
    assert leaks("lessons/02_deriving_gradients.html",
                 _notebook_text((ROOT / "notebooks" / "02_deriving_gradients.ipynb").read_text()), items)


def _cell(kind, source, outputs=(), **nbgrader):
    cell = {"cell_type": kind, "metadata": {"nbgrader": {"solution": False, "grade": False, **nbgrader}},
            "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[{"name": "stdout", "output_type": "stream", "text": text}
                                                   for text in outputs])
    return cell


def test_student_view_shows_no_output_that_can_give_an_exercise_away(tmp_path):
    """The student edition keeps a solution cell's stored output only if the cell cannot give an exercise away:
    not an exercise, not a checker's cell (by its nbgrader metadata or its call), not a reveal, and reading nothing
    that an exercise's code defines, sets or touches, directly or through an earlier cell; demonstrations before
    and after the exercise keep theirs, and so does a name rebound without the exercise's code."""
    from vaelayer_np.tools.release_course import student_version

    docs_site = _hook()
    cells = [
        _cell("markdown", "# A lesson"),
        _cell("code", "import numpy as np\nfrom vaelayer_np.course.answer_keys import reveal", []),
        _cell("code", "x = np.arange(3)\nprint(x)", ["demo before [0 1 2]"]),                    # 2 shown
        _cell("code", "def square(a):\n    ### BEGIN SOLUTION\n    return a * a\n    ### END SOLUTION",
              [], solution=True),                                                                  # 3 exercise
        _cell("code", "print(check_square(square))", ["PASS  square"], grade=True),               # 4 checker
        _cell("code", "print(verdict())", ["PASS  by metadata"], grade=True),                     # 5 graded cell
        _cell("code", 'reveal("square")', ["the library: return a * a"]),                         # 6 reveal
        _cell("code", "y = square(x)\nprint(y)", ["uses it [0 1 4]"]),                            # 7 uses it
        _cell("code", "print(y + 1)", ["through y [1 2 5]"]),                                      # 8 via a value
        _cell("code", "print(x)", ["handed to it [0 1 2]"]),                                       # 9 x was handed on
        _cell("code", "def twice(a):\n    return 2 * square(a)", []),
        _cell("code", "print(twice(2))", ["through a function 8"]),                                # 11
        _cell("code", "z = np.ones(2)\nprint(z, len([v for v in range(3)]))", ["demo after [1. 1.] 3"]),  # 12 shown
        _cell("code", "y = 5\nprint(y)", ["rebound 5"]),                                          # 13 shown
        _cell("code", "for y in range(2):\n    print(y)", ["a loop's own name 0 1"]),             # 14 shown
        _cell("code", "from vaelayer_np.course.lesson01 import check_bounded_log_var as judge\n"
                      "print(judge(np.tanh))", ["PASS  by the course's checker"]),                # 15 a checker
        _cell("code", "print(x[0]", ["does not parse"]),                                           # 16 and after
        _cell("code", "print(np.pi)", ["3.14"]),                                                   # 17
    ]
    solution = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "solution.ipynb").write_text(json.dumps(solution))
    (tmp_path / "student.ipynb").write_text(json.dumps(student_version(solution)))
    view = docs_site.student_view(tmp_path / "solution.ipynb", tmp_path / "student.ipynb")
    shown = {i: "".join(o["text"] for o in c["outputs"]) for i, c in enumerate(view["cells"]) if c.get("outputs")}
    assert shown == {2: "demo before [0 1 2]", 12: "demo after [1. 1.] 3", 13: "rebound 5",
                     14: "a loop's own name 0 1"}, shown
    assert "raise NotImplementedError()" in "".join(view["cells"][3]["source"])
    assert docs_site.outputs_shown(cells) == {1, 2, 12, 13, 14}  # 10 defines a function that calls square


def test_outputs_shown_follows_walrus_match_and_global_as_the_code_has_them():
    """A name bound by ``:=`` in a comprehension or by a ``match`` case is followed like an assignment's, and only
    the names of a ``global`` statement count as global (not the words on the lines after it)."""
    docs_site = _hook()
    exercise = _cell("code", "def square(a):\n    ### BEGIN SOLUTION\n    return a * a\n    ### END SOLUTION",
                     solution=True)
    walrus = [exercise, _cell("code", "values = [last := square(v) for v in range(3)]"), _cell("code", "print(last)")]
    assert docs_site.outputs_shown(walrus) == set()
    match = [exercise, _cell("code", "match square(3):\n    case [first, *rest]:\n        pass\n    case n:\n"
                                     "        pass"), _cell("code", "print(n, rest)")]
    assert docs_site.outputs_shown(match) == set()
    counter = _cell("code", "calls = 0\n\n\ndef count():\n    global calls\n    print(calls)")
    cells = [counter, exercise, _cell("code", "print(2)"), _cell("code", "print(calls)")]
    assert docs_site.outputs_shown(cells) == {0, 2}  # calls is global, print is not


_VERDICT = re.compile(r"\b(?:PASS|FAIL) {2}\S")


def _reveal_lines():
    """{line of what ``reveal`` shows, without whitespace}, for every text the lessons keep for after an exercise."""
    from vaelayer_np.course import answer_keys

    for module in answer_keys.CHECKER_MODULES.values():
        importlib.import_module(f"vaelayer_np.course.{module}")
    return {_squeeze(line) for _, text, _ in answer_keys._REVEALS.values() for line in text().splitlines()
            if len(_squeeze(line)) >= 16}


def _below_the_first_stub(cells):
    """The stored outputs of the cells after a lesson's first exercise stub: [(cell index, text)]."""
    stub = next(i for i, (source, _) in enumerate(cells) if "NotImplementedError" in source)
    return [(i, text) for i, (_, text) in enumerate(cells) if i > stub and text.strip()]


@pytest.mark.slow  # the student build
def test_student_lesson_pages_show_no_verdict_or_answer_below_an_exercise(student_site):
    """Below an exercise's stub, a student lesson page (and the notebook it is rendered from) shows no checker's
    verdict (the solution's PASS) and no line of what ``reveal`` keeps for after an exercise (the library's own
    code of what the exercise asks for, its slips, its summary), unless the student notebook itself holds it."""
    from bs4 import BeautifulSoup

    kept = _reveal_lines()
    assert len(kept) > 50, len(kept)
    found = []
    for name in lessons():
        student = _squeeze(_notebook_text((ROOT / "notebooks" / "student" / f"{name}.ipynb").read_text()))
        answers = {line for line in kept if line not in student}
        soup = BeautifulSoup((student_site / "lessons" / f"{name}.html").read_text(), "html.parser")
        top = [c for c in soup.select("div.jp-Cell") if c.find_parent("div", class_="jp-Cell") is None]
        page = [((c.select_one(".jp-InputArea") or c).get_text(), "\n".join(o.get_text() for o in
                                                                          c.select(".jp-OutputArea"))) for c in top]
        nb = json.loads((student_site / "lessons" / f"{name}.ipynb").read_text())
        notebook = [("".join(c["source"]), _notebook_text(json.dumps({"cells": [dict(c, source=[])]})))
                    for c in nb["cells"]]
        for where, cells in ((f"lessons/{name}.html", page), (f"lessons/{name}.ipynb", notebook)):
            for i, text in _below_the_first_stub(cells):
                if _VERDICT.search(text):
                    found.append(f"{where}, cell {i}: a verdict: {_VERDICT.search(text).group(0)!r}")
                squeezed = _squeeze(text)
                found += [f"{where}, cell {i}: {line[:80]}" for line in answers if line in squeezed]
    assert not found, f"{len(found)} answers below an exercise:\n" + "\n".join(found[:40])


def test_figure_alt_text_is_made_from_its_cell():
    """A lesson figure's alt text names the figure, its section and what its code labels (titles, axes, legend;
    Matplotlib's TeX in words, an f-string's fields as "..."), or the cell's longer strings when nothing is labelled."""
    docs_site = _hook()
    code = ('fig, ax = plt.subplots()\nax.plot(h, err, label="rounding $\\\\epsilon|f|/h$")\n'
            'ax.set_title(f"error after {steps} steps")\nax.set_xlabel("step h")\n')
    alt = docs_site.figure_alt("03", 2, "The result first", code)
    assert alt == ('Figure 2 of lesson 03, section "The result first": rounding epsilon |f|/h; '
                   'error after ... steps; step h'), alt
    unlabelled = docs_site.figure_alt("05", 1, "", 'plot_decline(rows, "one change at a time (digits)")\n')
    assert unlabelled == "Figure 1 of lesson 05: one change at a time (digits)", unlabelled
    many = "\n".join(f'ax.set_title("{"x" * 50} {i}")' for i in range(20))
    assert len(docs_site.figure_alt("01", 1, "s", many)) <= 400
