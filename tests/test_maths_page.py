"""The maths page (docs/maths.md): every equation links its code and its tests, and every link works.

Fast checks read the Markdown: each equation's section names a function that computes it, a
function that computes its gradient and at least one test, all as links; each linked function
imports, and each linked test is a function of its ``tests/`` file. The slow check builds the site
(``mkdocs build --strict`` into a temporary folder) and follows every link of the maths page and of
the IFFCL algorithm page (docs/iffcl.md) to a file and an element id of the built site (pages are
``NAME.html``: ``use_directory_urls: false``).
"""
from __future__ import annotations

import ast
import importlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATHS = ROOT / "docs" / "maths.md"
PAGES_WITH_CODE_LINKS = ["maths.md", "iffcl.md"]
LINK = re.compile(r"\]\(((?:api|tests)\.md)#([^)\s]+)\)")
ROLES = ("Computed by", "Gradient", "Checked by")


def links(markdown):
    """(page, anchor) of every link to the API or the Tests page."""
    return LINK.findall(markdown)


def equation_sections(markdown):
    """{heading: body} of the ``###`` sections (one equation each)."""
    parts = re.split(r"^### (.+)$", markdown, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def resolve_python(dotted):
    """Import ``vaelayer_np.module.Name.attr``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def functions_of_test_file(module_stem):
    path = ROOT / "tests" / f"{module_stem}.py"
    assert path.is_file(), f"no tests/{module_stem}.py"
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def check_targets(markdown):
    """Every API link imports; every test link names a test function of its file. Returns the problems."""
    problems = []
    for page, anchor in links(markdown):
        if page == "api.md":
            if not anchor.startswith("vaelayer_np."):
                problems.append(f"{anchor}: API anchors start with vaelayer_np.")
                continue
            try:
                resolve_python(anchor)
            except (ImportError, AttributeError) as exc:
                problems.append(f"{anchor}: does not import ({exc})")
        else:
            kind, _, rest = anchor.partition(".")
            module_stem, _, function = rest.partition(".")
            if kind != "tests" or not function.startswith("test_"):
                problems.append(f"{anchor}: test anchors read tests.<file>.<test function>")
            elif function not in functions_of_test_file(module_stem):
                problems.append(f"{anchor}: no function {function} in tests/{module_stem}.py")
    return problems


def test_every_equation_links_its_forward_its_gradient_and_a_test():
    text = MATHS.read_text()
    sections = equation_sections(text)
    assert len(sections) >= 15, list(sections)
    for heading, body in sections.items():
        assert "$$" in body, f"section '{heading}' has no displayed equation"
        for role in ROLES:
            line = re.search(rf"^- \*\*{role}:\*\* (.+)$", body, flags=re.M)
            assert line, f"section '{heading}' has no '{role}' line"
            wanted = "tests.md" if role == "Checked by" else "api.md"
            assert any(page == wanted for page, _ in links(line.group(1))), (
                f"section '{heading}': the '{role}' line has no link to {wanted}")
    # The equations the method needs, by name.
    for needed in ("Reparameterisation", "Decoder", "Mean squared", "Binary cross-entropy", "KL", "Cosine embedding",
                   "All-pairs", "Softmax cross-entropy", "IFFCL local loss", "backpropagation baseline", "Adam"):
        assert any(needed.lower() in h.lower() for h in sections), f"no section on {needed}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE_LINKS)
def test_linked_functions_and_tests_exist(page):
    problems = check_targets((ROOT / "docs" / page).read_text())
    assert not problems, "\n".join(problems)


def test_gradient_displays_are_marked_for_the_student_edition():
    """The student edition leaves out the displays marked ``<!-- gradient -->`` (the gradients the lessons ask to
    derive): each marker stands right before a display that holds a derivative, each section keeps a display
    without one (its forward equation), and the gradients of the layer's loss terms are among the marked ones."""
    import sys

    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import docs_site

    text = MATHS.read_text()
    marked = docs_site._GRADIENT_DISPLAY.findall(text)
    assert len(marked) == text.count("<!-- gradient -->") >= 8
    assert all(r"\partial" in display for display in marked)
    student = docs_site._GRADIENT_DISPLAY.sub(docs_site.GRADIENT_WITHHELD, text)
    for heading, body in equation_sections(student).items():
        assert "$$" in body, f"section '{heading}' keeps no equation in the student edition"
    for heading in ("Mean squared", "Binary cross-entropy", "KL divergence", "Decoder", "Cosine embedding"):
        body = next(b for h, b in equation_sections(student).items() if h.startswith(heading))
        assert docs_site.GRADIENT_WITHHELD.strip() in body and r"\partial" not in body, heading


def test_the_link_check_catches_a_missing_function_and_a_missing_test():
    bad = ("[x](api.md#vaelayer_np.core.ops.kl_diag_gaussian_renamed) [y](tests.md#tests.test_kernels.test_gone) "
           "[z](api.md#vaelayer_np.no_such_module.f) [ok](api.md#vaelayer_np.core.ops.kl_diag_gaussian)")
    problems = check_targets(bad)
    assert len(problems) == 3, problems


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def parse_html(path):
    collector = _Collector()
    collector.feed(path.read_text())
    return collector


def broken_links(site, page_stem):
    """Links of ``site/page_stem.html`` into the API or the Tests page whose file or element id is missing."""
    page = site / f"{page_stem}.html"
    base = f"http://site/{page_stem}.html"
    problems, checked, cache = [], 0, {}
    for href in parse_html(page).hrefs:
        url = urlparse(urljoin(base, href))
        if url.netloc != "site" or not url.fragment or not url.path.startswith(("/api", "/tests")):
            continue
        checked += 1
        target = site / unquote(url.path).lstrip("/")
        if target.is_dir() or url.path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"{href}: no file {target.relative_to(site)}")
            continue
        if target not in cache:
            cache[target] = parse_html(target).ids
        ids = cache[target]
        if unquote(url.fragment) not in ids:
            problems.append(f"{href}: no element with id {url.fragment!r} in {target.relative_to(site)}")
    return checked, problems


@pytest.fixture(scope="module")
def site(site_build):
    """The session's one strict build (tests/conftest.py: site_build), shared with tests/test_docs_site.py."""
    site_build.check()
    return site_build.site


@pytest.mark.slow  # one strict site build: 40-80 s on a busy 2-core machine
def test_links_resolve_in_the_built_site(site):
    for page in PAGES_WITH_CODE_LINKS:
        page_stem = page.removesuffix(".md")
        expected = len(links((ROOT / "docs" / page).read_text()))
        checked, problems = broken_links(site, page_stem)
        assert not problems, f"{page}:\n" + "\n".join(problems)
        assert checked == expected, f"{page}: {checked} links found in the built page, {expected} in the Markdown"
    # The Tests page shows every test function of tests/ under its anchor.
    tests_ids = parse_html(site / "tests.html").ids
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for name in functions_of_test_file(path.stem):
            if name.startswith("test_"):
                assert f"tests.{path.stem}.{name}" in tests_ids, f"Tests page lacks {path.stem}.{name}"
    # A broken anchor is reported (the check can fail).
    maths_html = site / "maths.html"
    original = maths_html.read_text()
    try:
        broken = original.replace("#vaelayer_np.core.ops.kl_diag_gaussian", "#vaelayer_np.core.ops.kl_gone", 1)
        maths_html.write_text(broken)
        assert any("kl_gone" in p for p in broken_links(site, "maths")[1])
    finally:
        maths_html.write_text(original)
