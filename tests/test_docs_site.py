"""The documentation site: a strict MkDocs build, then its pages in a real browser.

The build needs the documentation packages (in the ``test`` and ``docs`` extras). The browser test
also needs Debian's Chromium (``apt-get install -y chromium``) and Playwright's Python package,
which drives it; without either it is skipped (Playwright's own browser download is never used).
It serves the built site from 127.0.0.1, refuses every request that leaves that address, and checks
that the maths is typeset by the bundled MathJax, that the figures load and that the API page
documents every module, at a laptop's width and at a phone's (390 px: no page wider than the screen,
display maths scrolls in its own box). Two more checks read the built HTML without a browser: every
link and anchor of every page resolves, and the API page shows every public callable with its true
defaults.
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
NARROW_PAGES = ["maths.html", "index.html", "lessons/02_deriving_gradients.html", "api.html"]


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
    images: images.map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0})),
    title: document.title,
    pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    displays: document.querySelectorAll('.md-content .MathJax_Display').length,
    cutMaths: Array.from(document.querySelectorAll('.md-content .MathJax_Display')).filter(el => {
      const box = el.closest('div.arithmatex') || el;
      const style = getComputedStyle(box);
      return box.scrollWidth > box.clientWidth + 1 && !['auto', 'scroll'].includes(style.overflowX);
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
    pages = ["index.html", "install.html", "maths.html", "method.html", "results.html", "performance.html",
             "api.html", "instructors.html"]
    pages += [f"lessons/{name}.html" for name in lessons()]

    reports, outside, failed, js_errors = {}, [], [], []
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
                page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
                for rel in pages if width == WIDTHS[0][0] else NARROW_PAGES:
                    page.goto(base + rel, wait_until="load")
                    page.wait_for_function("window.siteMath && window.siteMath.done", timeout=180_000)
                    page.evaluate("new Promise(resolve => MathJax.Hub.Queue(resolve))")  # later typesets too
                    reports[(width, rel)] = page.evaluate(PAGE_REPORT)
                    if rel in ("api.html", "maths.html", f"lessons/{lessons()[0]}.html"):
                        page.screenshot(path=str(tmp_path / f"{width}_{rel.replace('/', '_')}.png"))
                page.close()
        finally:
            browser.close()

    assert not outside, f"requests that left 127.0.0.1: {outside}"
    assert not failed, f"missing files: {failed}"
    assert not js_errors, f"JavaScript errors: {js_errors}"
    for (width, rel), rep in reports.items():
        where = f"page /{rel} at {width} px ({rep['title']})"
        assert not rep["errors"], f"{where}: TeX errors {rep['errors']}"
        assert not rep["unrendered"], f"{where}: formulas not typeset {rep['unrendered']}"
        assert not rep["bareArithmatex"], f"{where}: maths left as text {rep['bareArithmatex']}"
        raw = RAW_TEX.search(rep["text"])
        assert raw is None, f"{where}: raw TeX visible: ...{rep['text'][max(raw.start() - 60, 0):raw.end() + 60]}..."
        assert all(img["ok"] for img in rep["images"]), f"{where}: images not loaded {rep['images']}"
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
    vae = re.sub(r"\(\s+", "(", shown["vaelayer_np.core.layers.VAELayer"])
    assert vae.startswith('VAELayer(in_dim, latent_dim, activation="relu", beta=0.001'), vae
