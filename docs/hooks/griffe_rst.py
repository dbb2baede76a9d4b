"""Griffe extension for the API page: the package's reStructuredText markup, rendered as Markdown.

The docstrings are NumPy style and use a few reStructuredText constructs that MkDocs' Markdown
would otherwise show as raw text. This extension (listed under the mkdocstrings ``extensions``
option in mkdocs.yml) rewrites each docstring before it is parsed:

* ``.. math:: EXPR`` (and a ``.. math::`` directive followed by an indented block) -> a
  ``$$ ... $$`` display block, typeset by pymdownx.arithmatex and MathJax;
* ``:math:`EXPR``` -> ``$EXPR$`` (inline maths);
* ``:class:`~a.b.C```, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:obj:``,
  ``:exc:`` -> the name as inline code (the last component when written with ``~``);
* a paragraph ending in ``::`` before an indented literal block -> ends in ``:`` (the block
  itself is already a Markdown code block);
* in the header line of a section item (``name : type``), reST literals in the type part lose their
  double backticks: the API page shows that part as code already, where they would stay literal;
* a parameter's default written as an expression (``DEFAULTS["beta"]``, ``COSINE_EPS``) is shown as
  its value (``0.001``, ``1e-08``) when that value is a plain literal (a number, a string, a bool,
  None or a tuple of them), read from the imported function's ``inspect.signature``.

The docstrings in the source are not changed.
"""
from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|obj|exc|const):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<expr>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match) -> str:
    target = match.group(2).strip()
    if "<" in target and target.endswith(">"):          # :func:`title <target>`
        return f"`{target.split('<', 1)[0].strip()}`"
    short = target.startswith("~")
    target = target.lstrip("~").lstrip(".")
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.group("indent"), match.group("expr").strip()
        j = i + 1
        if not first:                                   # directive alone: blank lines, then the block
            while j < len(lines) and not lines[j].strip():
                j += 1
        block = []
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) > len(indent):
            block.append(lines[j])
            j += 1
        if not first and not block:                     # an empty directive: leave it as it is
            out.append(lines[i])
            i += 1
            continue
        common = min((_indent(b) for b in block), default=0)
        expr = ([first] if first else []) + [b[common:].rstrip() for b in block]
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}$$"] + [f"{indent}{e}" for e in expr] + [f"{indent}$$"]
        if j < len(lines) and lines[j].strip():
            out.append("")
        i = j
    return out


def _literal_markers(lines: list[str]) -> list[str]:
    out = list(lines)
    for i, line in enumerate(out):
        if line.rstrip().endswith("::") and not _MATH_DIRECTIVE.match(line):
            nxt = next((ln for ln in out[i + 1:] if ln.strip()), None)
            if nxt is not None and _indent(nxt) > _indent(line):
                stripped = line.rstrip()[:-2].rstrip()
                out[i] = stripped + ":" if stripped else ""
    return out


_ITEM_HEADER = re.compile(r"^(?P<name>\S[^:\n]*?) : (?P<type>.+)$")
_LITERAL = re.compile(r"``(.+?)``")


def _item_types(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        match = _ITEM_HEADER.match(line)
        if match and "``" in match.group("type"):
            kind = _ROLE.sub(lambda m: _role(m).strip("`"), match.group("type"))
            line = f"{match.group('name')} : {_LITERAL.sub(lambda m: m.group(1), kind)}"
        out.append(line)
    return out


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reStructuredText maths and roles written as Markdown."""
    lines = _math_blocks(text.splitlines())
    lines = _literal_markers(lines)
    lines = _item_types(lines)
    text = "\n".join(lines)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    return _ROLE.sub(_role, text)


def _literal(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(_literal(v) for v in value)


def _true_defaults(path: str) -> dict:
    """{parameter: default} of the object at the dotted ``path`` (a function, or a class's __init__), imported."""
    import importlib
    import inspect

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
            return {k: p.default for k, p in inspect.signature(obj).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        except (AttributeError, TypeError, ValueError):
            return {}
    return {}


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring's reStructuredText maths and cross-reference roles as Markdown, and show each
    parameter's default as its value."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

    def on_function_instance(self, *, func: griffe.Function, **kwargs) -> None:  # noqa: D102
        defaults = None
        for param in func.parameters:
            if param.default is None or param.name not in (defaults if defaults is not None else
                                                            (defaults := _true_defaults(func.path))):
                continue
            value = defaults[param.name]
            if _literal(value) and str(param.default) != repr(value):
                param.default = repr(value)
