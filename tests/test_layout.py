"""The package's layout: imports run one way, no circles, one module map, old names still work."""
import ast
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

import vaelayer_np

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaelayer_np"

# Which sub-package may import which (besides itself). The teaching core imports nothing else of
# the package; the fast path and the analysis build on the core; the run machinery on those; the
# tools and the course checkers may use anything.
ALLOWED = {
    "core": set(),
    "analysis": {"core"},
    "fast": {"core"},
    "run": {"core", "fast", "analysis"},
    "tools": {"core", "fast", "analysis", "run", "course"},
    "course": {"core", "fast", "analysis", "run", "tools"},
}


def module_name(path):
    """'core.layers' for vaelayer_np/core/layers.py, 'core' for vaelayer_np/core/__init__.py."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def module_imports(path):
    """Every vaelayer_np module that ``path`` imports, at any depth of the file (function-level too),
    as dotted names relative to the package ('core.layers')."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
            elif node.module and node.module.split(".")[0] == "vaelayer_np":
                base = []
                node_module = node.module.split(".", 1)[1] if "." in node.module else None
                parts = base + (node_module.split(".") if node_module else [])
                found.update(_targets(parts, node.names))
                continue
            else:
                continue
            parts = base + (node.module.split(".") if node.module else [])
            found.update(_targets(parts, node.names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "vaelayer_np":
                    found.add(".".join(parts[1:]))
    return {m for m in found if m}


def _targets(parts, names):
    """``from <parts> import names``: the modules named, where the names are modules themselves."""
    dotted = ".".join(parts)
    out = set()
    for alias in names:
        candidate = f"{dotted}.{alias.name}" if dotted else alias.name
        as_path = PACKAGE / candidate.replace(".", "/")
        if as_path.with_suffix(".py").exists() or as_path.is_dir():
            out.add(candidate)
        else:
            out.add(dotted)
    return out


def all_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def import_graph():
    graph = {}
    for path in all_modules():
        name = module_name(path)
        if name in ("", "__main__"):
            continue
        graph[name] = {m for m in module_imports(path) if m != name and not name.startswith(m + ".")
                       and m != name.split(".")[0]}
    return graph


def find_cycle(graph):
    """A list of modules forming a cycle, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(graph):
        if node not in colour:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


# The command line, at the package's top, is the entry point of everything: it dispatches to every
# sub-package's commands by name, so it may import any of them (nothing imports it).
ENTRY_POINTS = {"cli"}


def direction_violations(graph):
    bad = []
    for module, targets in graph.items():
        if module in ENTRY_POINTS:
            continue
        group = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != group and other not in ALLOWED.get(group, set()):
                bad.append(f"{module} imports {target}")
    return sorted(bad)


def test_every_module_is_in_a_known_sub_package():
    for path in all_modules():
        name = module_name(path)
        assert name in ("", "__main__", "_compat") or name in ENTRY_POINTS or name.split(".")[0] in ALLOWED, \
            f"{path}: outside the layout"


def test_imports_run_one_way():
    graph = import_graph()
    assert {"core.layers", "core.iffcl", "fast.kernels", "run.trainer", "tools.bench"} <= set(graph)
    assert direction_violations(graph) == []


def test_the_direction_check_catches_a_planted_import():
    graph = import_graph()
    graph["core.layers"] = graph["core.layers"] | {"fast.backend"}
    assert direction_violations(graph) == ["core.layers imports fast.backend"]


def test_no_import_circles():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_circle():
    graph = import_graph()
    graph["core.ops"] = graph["core.ops"] | {"core.losses"}  # losses -> ops -> losses
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]


def test_the_core_imports_only_numpy_from_outside():
    """NumPy and the standard library only (the one-file version loads scikit-learn's digits in its demo)."""
    stdlib = set(sys.stdlib_module_names)
    for path in (PACKAGE / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module.split(".")[0]]
            allowed = stdlib | {"numpy", "vaelayer_np"}
            if path.name == "minimal.py":
                allowed.add("sklearn")
            for name in names:
                assert name in allowed, f"{path.name} imports {name}"


# ----------------------------------------------------------------------------- the module map
def map_modules():
    return [module for _, group in vaelayer_np.MODULE_MAP for module, _ in group]


def test_the_module_map_covers_every_module_once():
    listed = map_modules()
    assert len(listed) == len(set(listed))
    files = {module_name(p) for p in all_modules()} - {"", "__main__"}
    packages = {m for m in files if (PACKAGE / m.replace(".", "/")).is_dir()}
    private = {m for m in files if m.rsplit(".", 1)[-1].startswith("_")}
    lessons = {m for m in files if re.fullmatch(r"course\.lesson\d\d", m)}
    assert set(listed) == files - packages - private - lessons


def readme_map_table():
    """The README's module map, as generated from MODULE_MAP (the text between its markers)."""
    lines = ["| # | module | what it holds |", "|---|---|---|"]
    number = 0
    for _, group in vaelayer_np.MODULE_MAP:
        for module, text in group:
            number += 1
            lines.append(f"| {number} | `{module}` | {text} |")
    return "\n".join(lines)


def test_the_readme_shows_the_module_map():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- module map: begin -->\n(.*?)\n<!-- module map: end -->", readme, re.S)
    assert found, "README.md: no module map between its markers"
    assert found.group(1).strip() == readme_map_table(), (
        "README.md's module map differs from vaelayer_np.MODULE_MAP; paste this:\n" + readme_map_table())


def test_the_docs_take_their_api_order_from_the_module_map():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        hooks = importlib.import_module("docs_site")
    finally:
        sys.path.pop(0)
    assert [m for m in hooks.api_order()] == ["vaelayer_np." + m for m in map_modules()]


# ----------------------------------------------------------------------------- old names
@pytest.mark.parametrize("old", sorted(vaelayer_np.MOVED))
def test_old_module_names_still_import_with_a_warning(old):
    new = importlib.import_module(f"vaelayer_np.{vaelayer_np.MOVED[old]}")
    sys.modules.pop(f"vaelayer_np.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"vaelayer_np.{old}")
    assert module is new and module.__spec__.name == new.__name__  # the module keeps its own spec
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)


def test_the_core_public_api_is_annotated():
    """Every public function and method of the core has type hints (mypy checks them in .ci/run)."""
    missing = []
    for path in sorted((PACKAGE / "core").glob("*.py")):
        if path.name.startswith("_"):
            continue

        def visit(body, prefix):
            for node in body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    visit(node.body, f"{prefix}{node.name}.")
                elif isinstance(node, ast.FunctionDef) and (not node.name.startswith("_") or node.name == "__init__"):
                    args = [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
                    if any(a.annotation is None for a in args) or node.returns is None:
                        missing.append(f"{path.name}: {prefix}{node.name}")  # noqa: B023 - called in this iteration

        visit(ast.parse(path.read_text()).body, "")
    assert missing == []


# Names the package no longer has: a docstring, a doc page or the README that uses one sends a reader to
# nothing. The old spellings are allowed where they are introduced as such (a line that says "0.2", the
# era they come from) and in the shims (vaelayer_np/_compat.py, core.settings.RENAMED).
REMOVED = {
    r"\b_kernels\b": "fast.kernels (the module's name since 0.3)",
    r"run\.config\.DEFAULTS": "core.settings.DEFAULTS",
    r"contrast=[\"']batch[\"']|[\"']batch[\"'] contrast": "contrast='all_pairs'",
    r"contrast=[\"']pairs[\"']": "contrast='partner'",
    r"pairing=[\"']labelled[\"']|``labelled``": "pairing='random'",
    r"\b_BlasOneThread\b": "fast.machine.BlasThreads",
    r"_validate\.(usable_cores|available_memory|check_threads|check_memory|format_bytes)": "fast.machine",
    r"\brun\.threads\b|\bfrom \.threads import": "fast.machine (limit_threads, blas_threads)",
}


def _documentation_files():
    files = [p for p in PACKAGE.rglob("*.py") if p.name != "_compat.py"]
    return files + sorted((PACKAGE.parent / "docs").glob("*.md")) + [PACKAGE.parent / "README.md",
                                                                     PACKAGE.parent / "CONTRIBUTING.md"]


def stale_names(files):
    found = []
    for path in files:
        in_renamed = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            in_renamed = (in_renamed or line.startswith("RENAMED")) and line.strip() != "}"
            if in_renamed or "0.2" in line:
                continue
            for pattern, now in REMOVED.items():
                if re.search(pattern, line):
                    found.append(f"{path.name}:{number}: {line.strip()[:80]} (now: {now})")
    return found


def test_no_docstring_or_page_names_a_removed_module_function_or_choice():
    assert stale_names(_documentation_files()) == []


def test_the_stale_name_check_finds_a_planted_one(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("The kernels live in `_kernels.py`; see run.config.DEFAULTS.\n")
    assert len(stale_names([page])) == 2
