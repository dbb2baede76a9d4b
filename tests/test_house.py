"""The house rules: the README's code runs, nothing cited that is not here (the import rules: test_layout.py)."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaelayer_np"


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
                                "pyproject.toml", "mkdocs.yml")
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

    from vaelayer_np.core.layers import Activation, Dense, OutputLayer, VAELayer

    for cls in (Dense, Activation, OutputLayer, VAELayer):
        params = list(inspect.signature(cls.backward).parameters)
        assert params[1] in ("dout", "d_logits") and params[2] == "cache", (cls.__name__, params)
    assert inspect.signature(VAELayer.backward).parameters["dz"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_defaults_have_one_source():
    """A Network built with defaults is the model `vaelayer train` trains."""
    import numpy as np

    from vaelayer_np.core.network import Network
    from vaelayer_np.run.config import DEFAULTS, TrainConfig
    from vaelayer_np.run.trainer import Trainer

    c = TrainConfig(widths=(8, 8), dtype="float64", path="readable")
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


# ----------------------------------------------------------------------------- annotations
def _modules_annotated_by_their_owners():
    """The modules pyproject.toml's mypy overrides still exempt (``ignore_errors = true``): their owners annotate
    them; the patterns end in ``.*`` for a package's modules."""
    text = (ROOT / "pyproject.toml").read_text()
    exempt = []
    for block in re.findall(r"\[\[tool\.mypy\.overrides\]\](.*?)(?=\n\[|\Z)", text, re.S):
        if re.search(r"^ignore_errors\s*=\s*true", block, re.M):
            exempt += re.findall(r'"([\w.*]+)"', block.split("ignore_errors")[0])
    return exempt


def _exempt(name, patterns):
    return any(name == p or (p.endswith(".*") and name.startswith(p[:-1])) for p in patterns)


def missing_annotations(module):
    """``module.function: parameter`` (or ``: return``) for every public function, method, property and
    constructor defined in ``module`` whose parameter or return has no annotation."""
    import inspect

    missing = []

    def check(qualname, fn):
        fn = inspect.unwrap(getattr(fn, "py_func", fn))  # a Numba function: its Python function
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        annotations = getattr(fn, "__annotations__", {})
        for param in signature.parameters.values():
            if param.name not in ("self", "cls") and param.name not in annotations:
                missing.append(f"{qualname}: {param.name}")
        if "return" not in annotations:
            missing.append(f"{qualname}: return")

    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                member = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if inspect.isfunction(member):
                    check(f"{module.__name__}.{name}.{attr}", member)
        elif inspect.isfunction(obj) or hasattr(obj, "py_func"):
            check(f"{module.__name__}.{name}", obj)
    return missing


def test_every_public_function_is_annotated():
    """Every public function and method of the package has annotations on all its parameters and its return
    (mypy checks what they say; the modules pyproject.toml's mypy overrides exempt are their owners' to do)."""
    import importlib
    import pkgutil

    import vaelayer_np

    exempt = _modules_annotated_by_their_owners()
    missing, checked = [], 0
    for info in pkgutil.walk_packages(vaelayer_np.__path__, "vaelayer_np."):
        if info.name.endswith(".__main__") or _exempt(info.name, exempt):
            continue
        missing += missing_annotations(importlib.import_module(info.name))
        checked += 1
    assert checked >= 40
    assert missing == [], "\n".join(missing)


def test_the_annotation_check_catches_a_missing_annotation():
    import types

    planted = types.ModuleType("planted")
    code = ("class Layer:\n"
            "    def __init__(self, n: int) -> None: ...\n"
            "    def forward(self, x) -> float: ...\n"
            "    @property\n"
            "    def width(self): ...\n"
            "    def _private(self, y): ...\n"
            "def step(a: int, *, b): ...\n"
            "def _helper(c): ...\n")
    exec(compile(code, "planted", "exec"), planted.__dict__)
    for obj in (planted.Layer, planted.step, planted._helper):
        obj.__module__ = "planted"
    assert sorted(missing_annotations(planted)) == ["planted.Layer.forward: x", "planted.Layer.width: return",
                                                    "planted.step: b", "planted.step: return"]
    assert _exempt("vaelayer_np.tools.reproduce.runner", ["vaelayer_np.tools.reproduce.*"])
    assert not _exempt("vaelayer_np.tools.bench", ["vaelayer_np.tools.reproduce.*"])


def test_the_shims_go_in_one_release():
    import vaelayer_np._compat as compat
    from vaelayer_np.core import settings

    assert compat.REMOVED_IN == settings.REMOVED_IN


def test_no_public_function_has_overloaded_signatures():
    """The API page shows one signature per callable (and its test checks every default shown): a
    ``typing.overload`` stack renders as several, so the package states one signature with a union instead."""
    root = Path(__file__).resolve().parent.parent / "vaelayer_np"
    found = [f"{path.relative_to(root.parent)}:{n}" for path in sorted(root.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.match(r"\s*@(typing\.)?overload\b", line)]
    assert found == [], f"overloaded signatures (one signature with a union instead): {found}"
