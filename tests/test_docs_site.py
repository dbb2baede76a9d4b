"""The documentation site: a strict MkDocs build, then its pages in a real browser.

The build needs the documentation packages (in the ``test`` and ``docs`` extras). The browser test
also needs Debian's Chromium (``apt-get install -y chromium``) and Playwright's Python package,
which drives it; without either it is skipped (Playwright's own browser download is never used).
It serves the built site from 127.0.0.1, refuses every request that leaves that address, and checks
that the maths is typeset by the bundled MathJax, that the figures load and that the API page
documents every module.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Addresses that must not appear in a built page: the site works without a network.
CDN_HINTS = ("cdnjs", "jsdelivr", "unpkg", "googleapis", "cdn.", "mathjax.org")
# TeX that would be visible if a formula were not typeset.
RAW_TEX = re.compile(r"\$\$|\\frac|\\begin\{|\\sum|\\mathrm|\\\(|\\\[|\$[^\s$][^$\n]{0,200}?[^\s$\\]\$")

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
    for page in ("index.html", "install/index.html", "method/index.html", "results/index.html",
                 "performance/index.html", "api/index.html", "assets/mathjax/MathJax.js"):
        assert (site / page).is_file(), page
    # Every notebook is a lesson page, with its .ipynb beside it for download.
    assert lessons(), "no notebooks/*.ipynb"
    for name in lessons():
        assert (site / "lessons" / name / "index.html").is_file(), name
        assert json.loads((site / "lessons" / name / f"{name}.ipynb").read_text())["cells"]
    # The API page has a section for every public module.
    api = (site / "api" / "index.html").read_text()
    for name in public_modules():
        assert f'id="vaelayer_np.{name}"' in api, f"API page lacks vaelayer_np.{name}"
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
    pages = ["", "install/", "method/", "results/", "performance/", "api/"]
    pages += [f"lessons/{name}/" for name in lessons()]

    reports, outside, failed, js_errors = {}, [], [], []
    with serve(build.site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def local_only(route):
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))
            page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
            for rel in pages:
                page.goto(base + rel, wait_until="load")
                page.wait_for_function("window.siteMath && window.siteMath.done", timeout=180_000)
                page.evaluate("new Promise(resolve => MathJax.Hub.Queue(resolve))")  # later typesets too
                reports[rel] = page.evaluate(PAGE_REPORT)
                if rel in ("api/", f"lessons/{lessons()[0]}/"):
                    page.screenshot(path=str(tmp_path / (rel.strip("/").replace("/", "_") + ".png")))
        finally:
            browser.close()

    assert not outside, f"requests that left 127.0.0.1: {outside}"
    assert not failed, f"missing files: {failed}"
    assert not js_errors, f"JavaScript errors: {js_errors}"
    for rel, rep in reports.items():
        where = f"page /{rel} ({rep['title']})"
        assert not rep["errors"], f"{where}: TeX errors {rep['errors']}"
        assert not rep["unrendered"], f"{where}: formulas not typeset {rep['unrendered']}"
        assert not rep["bareArithmatex"], f"{where}: maths left as text {rep['bareArithmatex']}"
        raw = RAW_TEX.search(rep["text"])
        assert raw is None, f"{where}: raw TeX visible: ...{rep['text'][max(raw.start() - 60, 0):raw.end() + 60]}..."
        assert all(img["ok"] for img in rep["images"]), f"{where}: images not loaded {rep['images']}"

    # Pages known to hold maths: the API page (its notation section and the docstrings) and the
    # first lesson. The results page has figures; the API page documents the layers.
    assert reports["api/"]["formulas"] >= 2
    assert reports[f"lessons/{lessons()[0]}/"]["formulas"] >= 1
    assert reports["results/"]["images"], "no figures on the results page"
    assert reports["api/"]["vaeLayerSection"] and "VAELayer" in reports["api/"]["visibleText"]
