"""The house rules: no import circles, the README's code runs, nothing cited that is not here."""
import ast
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaelayer_np"


def _imports(path):
    """Every vaelayer_np module that ``path`` imports, at any depth of the file (function-level too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                if node.module is None:
                    found.update(alias.name for alias in node.names)
                else:
                    found.add(node.module.split(".")[0])
            elif node.module and node.module.split(".")[0] == "vaelayer_np":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "vaelayer_np":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m if m in modules else "__init__" for m in found}


def import_graph():
    return {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}


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


def test_no_import_circles_among_the_package_modules():
    graph = import_graph()
    assert {"layers", "losses", "backend", "ops", "iffcl", "backprop", "plots", "runs"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_circle():
    graph = import_graph()
    graph["ops"] = graph["ops"] | {"losses"}  # losses -> backend -> ops -> losses
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]


def _readme():
    return (ROOT / "README.md").read_text()


def test_readme_python_blocks_run_as_pasted(capsys):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert "0 failed" in capsys.readouterr().out


def test_readme_commands_use_real_options():
    """Every `vaelayer ...` line of the README parses with the real command-line parser."""
    from vaelayer_np.cli import build_parser

    parser = build_parser()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", _readme(), re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("vaelayer "):
                lines.append(line)
    assert len(lines) >= 8
    for line in lines:
        args = shlex.split(line)[1:]
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse: {line} (exit {exc.code})")


TEXT_FILES = [p for pattern in ("*.md", "docs/*.md", "vaelayer_np/*.py", "tests/*.py", "notebooks/*.ipynb",
                                "setup.cfg", "mkdocs.yml")
              for p in ROOT.glob(pattern)]


GENERATED_DOCS = {"tests.md"}  # pages docs/hooks/docs_site.py writes at build time


def test_nothing_cited_that_is_not_in_the_repository():
    """Paths named in docs, docstrings, tests and notebooks exist; no notes from outside are cited."""
    path_ref = re.compile(r"(?<![\w/.])((?:docs|tests|notebooks|vaelayer_np)/[\w./-]+\.(?:md|py|ipynb|png))")
    link_ref = re.compile(r"\]\(([^)#:]+?\.(?:md|png|ipynb|py))(?:#[^)]*)?\)")
    outside = re.compile(r"\.\./shared|DESIGN\.md|STYLE\.md|\brun\.py\b|\bthe issue\b|issue's", re.I)
    missing, leaks = [], []
    for f in TEXT_FILES:
        text = f.read_text()
        if f.name == "test_house.py":
            continue
        for m in path_ref.finditer(text):
            if "NN_" in m.group(1):  # a naming pattern, not a file
                continue
            if not (ROOT / m.group(1)).exists():
                missing.append(f"{f.relative_to(ROOT)}: {m.group(1)}")
        for m in (link_ref.finditer(text) if f.suffix in (".md", ".ipynb") else ()):
            if f.parent.name == "docs" and m.group(1) in GENERATED_DOCS:
                continue
            target = (f.parent / m.group(1)).resolve()
            if not target.exists() and not (ROOT / m.group(1)).exists():
                missing.append(f"{f.relative_to(ROOT)}: link {m.group(1)}")
        for m in outside.finditer(text):
            leaks.append(f"{f.relative_to(ROOT)}: {m.group(0)!r}")
    assert not missing, "\n".join(missing)
    assert not leaks, "\n".join(leaks)


def test_every_layer_has_one_backward_contract():
    """backward(dout, cache, ...) -> (dx, grads) for every layer; VAELayer's latent gradient is a keyword."""
    import inspect

    from vaelayer_np.layers import Activation, Dense, OutputLayer, VAELayer

    for cls in (Dense, Activation, OutputLayer, VAELayer):
        params = list(inspect.signature(cls.backward).parameters)
        assert params[1] in ("dout", "d_logits") and params[2] == "cache", (cls.__name__, params)
    assert inspect.signature(VAELayer.backward).parameters["dz"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_defaults_have_one_source():
    """A Network built with defaults is the model `vaelayer train` trains."""
    import numpy as np

    from vaelayer_np.config import DEFAULTS, TrainConfig
    from vaelayer_np.network import Network
    from vaelayer_np.trainer import Trainer

    c = TrainConfig(widths=(8, 8), dtype="float64", backend="numpy")
    built = Trainer(c, 64, 10).net_a
    plain = Network(64, (8, 8), 10, dtype=np.float64)
    assert plain.readout == built.readout == DEFAULTS["readout"]
    for a, b in zip(plain.vae_layers, built.vae_layers):
        for name in ("activation", "beta", "recon", "encoder_hidden", "log_var_bound", "pass_on"):
            assert getattr(a, name) == getattr(b, name) == (DEFAULTS[name] if name != "recon" or a is
                                                            plain.vae_layers[0] else "mse"), name
        assert a.params["b_lv"][0] == DEFAULTS["log_var_bias_init"]
    assert plain.output.loss_name == built.output.loss_name == DEFAULTS["output_loss"]
    for name, value in DEFAULTS.items():
        assert getattr(c, name) == value, name
