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
