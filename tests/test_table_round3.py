"""What a data scientist bringing their own table meets, third round: a --limit that leaves a class out. Each
case gives the right result or a one-line error naming the option and the numbers."""
import re

import pytest

from vaelayer_np.cli import main
from vaelayer_np.run.data import load_dataset
from vaelayer_np.run.tables import load_table

from .test_hostile_inputs import separable, write_csv

TINY = ["--epochs", "1", "--widths", "4", "--encoder-hidden", "0", "--path", "readable", "--threads", "1",
        "--no-progress", "--no-plots"]
FAST = dict(epochs=1, batch_size=16, path="readable", random_state=0, widths=(4,), encoder_hidden=0)


def error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- 1. --limit that leaves a class out
@pytest.mark.parametrize("limit", [1, 5, 9])
def test_a_limit_that_leaves_a_class_without_examples_is_named(limit):
    with pytest.raises(ValueError, match=rf"^limit: --limit {limit} keeps {limit} of the \d+ training examples of "
                                         r"digits, which leaves \d+ of its 10 classes without a training example "
                                         r"\(.*\); a classifier needs an example of every class to train on: give "
                                         r"--limit (\d+) or more") as info:
        load_dataset("digits", limit=limit)
    need = int(re.search(r"give --limit (\d+)", str(info.value)).group(1))
    ds = load_dataset("digits", limit=need)  # what the message says works
    assert len(ds.y_train) == need and set(ds.y_train.tolist()) == set(range(10))
    with pytest.raises(ValueError, match=rf"--limit {need - 1} keeps"):
        load_dataset("digits", limit=need - 1)


def test_a_table_limit_is_checked_the_same_way(tmp_path, capsys):
    x, y = separable(90)
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "kind"], [[*r, "pqr"[k]] for r, k in zip(x, y)])
    with pytest.raises(ValueError, match=r"^limit: --limit 1 keeps 1 of the \d+ training examples of t\.csv, which "
                                         r"leaves 2 of its 3 classes without a training example"):
        load_table(path, limit=1)
    assert main(["train", "--data", str(path), "--limit", "1", "--run-dir", str(tmp_path / "run"), *TINY]) == 2
    line = error_line(capsys)
    assert "--limit 1 keeps 1 of the" in line and not (tmp_path / "run").exists()
    assert main(["train", "--limit", "1", "--run-dir", str(tmp_path / "run2"), *TINY]) == 2
    assert "--limit 1 keeps 1 of the" in error_line(capsys) and not (tmp_path / "run2").exists()
    assert len(load_table(path, limit=20).y_train) == 20  # a limit that keeps every class works
