"""Every accuracy the prose states about what the method achieves is a figure of a generated table.

The tables of docs/results.md are written by ``vaelayer reproduce`` from the run folders' metrics (nothing
typed in). The prose that summarises them (README's "Results at a glance", the results page's "What each
part contributes", the method page's paragraph on what the heads contribute, lesson 05's section on what
carries the accuracy) is written by hand, so it can drift from the tables or quote a run that no table
holds. This test reads each accuracy of that prose and of the tables written by hand in it ("90.05 ± 0.04%",
"80.61%") and looks for it among the tables' figures, rounded to the digits the prose gives. The only
exception is the moonshot's target, which is a goal, not a measurement (its value is read from the
experiments' catalogue).
"""
import json
import re
from pathlib import Path

import pytest

from vaelayer_np.tools.reproduce.experiments import MOONSHOT_TARGET

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"(\d+\.\d+)(?: ± (\d+\.\d+))?%")
TABLE_FIGURE = re.compile(r"(\d+\.\d+)(?: ± (\d+\.\d+))?")


def _section(text, heading):
    """The text under ``heading`` (a markdown heading line's text) up to the next heading of its level or above."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip("#").strip() == heading and line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith("#") and len(lines[j]) - len(lines[j].lstrip("#")) <= level),
                       len(lines))
            return "\n".join(lines[i + 1:end])
    raise AssertionError(f"no section {heading!r}")


def _table_figures(text):
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    return [(float(m[0]), m[1] and float(m[1]), m[0], m[1]) for row in rows for m in TABLE_FIGURE.findall(row)]


def _decimals(s):
    return len(s.split(".")[1])


def _rounds_to(exact, written):
    """Does ``exact`` round to ``written`` (a string) at the digits it has (half a unit either way)?"""
    return abs(exact - float(written)) <= 0.5 * 10.0 ** -_decimals(written) + 1e-9


def _matches(value, std, table):
    """Is the prose's figure (strings as written) one of the table's figures rounded to its digits?"""
    return any(_rounds_to(tv, value) and (not std or (ts_text and _rounds_to(ts, std)))
               for tv, ts, _tv_text, ts_text in table)


def unmatched(prose, table, allowed=()):
    """The accuracies of ``prose`` that no figure of ``table`` gives (the ``allowed`` values apart).

    Every line is read, the rows of a hand-written table too (a figure with a percent sign); the generated
    tables write their figures without one."""
    text = re.sub(r"\s+", " ", prose)
    return [f"{v} ± {s}%" if s else f"{v}%" for v, s in FIGURE.findall(text)
            if float(v) not in allowed and not _matches(v, s, table)]


def _results_tables():
    return _table_figures((ROOT / "docs" / "results.md").read_text())


TARGET = (round(100 * MOONSHOT_TARGET, 1),)


def _lesson05_markdown():
    path = ROOT / "notebooks" / "05_training_and_what_goes_wrong.ipynb"
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def _paragraph(text, start):
    """The paragraph of ``text`` that begins with ``start``."""
    i = text.index(start)
    end = text.find("\n\n", i)
    return text[i:] if end < 0 else text[i:end]


CLAIMS = {
    "README.md, Results at a glance": lambda: _section((ROOT / "README.md").read_text(), "Results at a glance"),
    "docs/results.md, What each part contributes":
        lambda: _section((ROOT / "docs" / "results.md").read_text(), "What each part contributes"),
    "docs/method.md, What the heads contribute":
        lambda: _paragraph((ROOT / "docs" / "method.md").read_text(), "What the heads contribute, measured"),
    "lesson 05, What carries the accuracy":
        lambda: _section(_lesson05_markdown(), "What carries the accuracy on Fashion-MNIST (measured)"),
}


@pytest.mark.parametrize("where", list(CLAIMS))
def test_every_accuracy_the_prose_states_is_in_a_generated_table(where):
    prose = CLAIMS[where]()
    assert FIGURE.search(prose), f"{where}: no accuracy found (the section moved?)"
    missing = unmatched(prose, _results_tables(), allowed=TARGET)
    assert not missing, (f"{where} states accuracies that no table of docs/results.md gives: {missing}; "
                         "regenerate the tables (vaelayer reproduce --report-only) or correct the prose")


def test_the_check_catches_a_figure_no_table_holds():
    table = _table_figures("| a | 90.05 ± 0.04 | 87.34 |\n| b | 31.23 ± 7.11 | 80.61 |")
    assert unmatched("reaches 90.05 ± 0.04% and 87.34%; declines to 31.2 ± 7.1%", table) == []
    assert unmatched("reaches 90.06 ± 0.04%", table) == ["90.06 ± 0.04%"]      # a mean that is not there
    assert unmatched("reaches 90.05 ± 0.05%", table) == ["90.05 ± 0.05%"]      # the wrong spread
    assert unmatched("a single run at 87.3%", table) == []                      # rounded to the prose's digits
    assert unmatched("a single run at 87.4%", table) == ["87.4%"]
    assert unmatched("a single run at 87.33%", table) == ["87.33%"]
    assert unmatched("| 99.99 | a generated table's figure has no percent sign", table) == []
    assert unmatched("| IFFCL | 99.99% | a hand-written table row |", table) == ["99.99%"]
    assert unmatched("the target 91.5%", table, allowed=(91.5,)) == []
    assert unmatched("87.92 ±\n0.05%", _table_figures("| 87.92 ± 0.05 |")) == []  # a figure broken over lines
