"""A newcomer's own data: the errors of tables in common shapes say what to do (the label column not last,
decimal commas, a measurement or an identifier as the target), a run on image files found by a relative
--data-dir is evaluated from any folder, and the table plots stay readable with many features or classes."""
import json
import struct

import numpy as np
import pytest

from vaelayer_np import cli
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import CorruptFileError
from vaelayer_np.run.tables import load_table

from .test_data import write_idx_set
from .test_hostile_inputs import write_csv

TINY = ["--epochs", "1", "--widths", "8", "--encoder-hidden", "0", "--path", "readable", "--threads", "1",
        "--no-progress"]


def png_size(path):
    """(width, height) in pixels from a PNG file's header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def labelled_rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, np.where(x[:, 0] > 0, "yes", "no")


# ----------------------------------------------------------------------------- 1. what a table's error says
def test_text_in_a_feature_column_names_the_target_option_when_the_labels_are_not_last(tmp_path, capsys):
    x, y = labelled_rows()
    path = write_csv(tmp_path / "first.csv", ["kind", "a", "b", "c"], [[t, *r] for t, r in zip(y, x)])
    with pytest.raises(CorruptFileError, match=r'column "kind" row 1: "(yes|no)" is not a number; the labels are '
                                               r'read from the last column, "c": if "kind" holds them, name it as '
                                               r'the target \(--target "kind"\)'):
        load_table(path)
    assert load_table(path, target="kind").class_names == ("no", "yes")  # what the message says works
    assert cli.main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY]) == 2
    assert '--target "kind"' in capsys.readouterr().err
    # a target that is given: the text column is named, no guess about the labels
    with pytest.raises(CorruptFileError, match=r'"(yes|no)" is not a number$'):
        load_table(write_csv(tmp_path / "two.csv", ["kind", "a", "label"], [[t, r[0], t] for t, r in zip(y, x)]),
                   target="label")


@pytest.mark.parametrize("cell", ["1,5", "-0,25", "1,000"])
def test_a_number_with_a_comma_is_named_as_such(tmp_path, cell):
    x, y = labelled_rows()
    rows = [[f"{v:.2f}", t] for v, t in zip(x[:, 0], y)]
    rows[3][0] = cell  # what a spreadsheet of a decimal-comma locale saves, its separator a semicolon
    path = write_csv(tmp_path / "euro.csv", ["a", "kind"], rows, delimiter=";")
    with pytest.raises(CorruptFileError, match=rf'column "a" row 4: "{cell}" is not a number \(a comma in a number: '
                                               r"write numbers with a decimal point"):
        load_table(path)


@pytest.mark.parametrize("labels", [
    lambda x: np.round(1000 * x @ [1.0, 2.0, -1.0]),  # a regression target in whole numbers (one with fractions
    # is refused as such before: tests/test_table_round3.py)
    lambda x: 1000 + np.arange(len(x)),  # an identifier as the last column
])
def test_labels_that_differ_on_nearly_every_row_are_named_as_no_classes(tmp_path, capsys, labels):
    x, _ = labelled_rows(60)
    path = write_csv(tmp_path / "measured.csv", ["a", "b", "c", "y"], [[*r, t] for r, t in zip(x, labels(x))])
    with pytest.raises(CorruptFileError, match=r"measured\.csv: 60 rows in 60 classes are too few: a stratified "
                                               r"split needs two rows in every class, and 60 classes have one\. "
                                               r"Labels that differ on nearly every row are measurements \(a "
                                               r"regression target\) or identifiers, not classes; the labels are "
                                               r"read from the last column; --target names the label column"):
        load_table(path)
    with pytest.raises(CorruptFileError, match=r'identifiers, not classes; is "y" the label column\?'):
        load_table(path, target="y")
    assert cli.main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY]) == 2
    assert "a regression target" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_tiny_table_or_a_few_rows_of_many_classes_are_not_called_measurements(tmp_path):
    """Only labels with most rows alone in their class are named as measurements or identifiers: a tiny table
    keeps the split's own advice, and a training file of one row per class (with a test file) is told how to
    train on it."""
    x, _ = labelled_rows(3)
    with pytest.raises(CorruptFileError, match=r"3 rows in 2 classes \(smallest class: 1 row\) are too few to hold out "
                                               r"a stratified test part of 0\.2 with every class on both sides; give "
                                               r"a test file or more rows$"):
        load_table(write_csv(tmp_path / "tiny.csv", ["a", "b", "c", "kind"], [[*r, k] for r, k in zip(x, "aab")]))
    x, _ = labelled_rows(12)
    train = write_csv(tmp_path / "train.csv", ["a", "b", "c", "kind"], [[*r, f"k{i}"] for i, r in enumerate(x)])
    test = write_csv(tmp_path / "test.csv", ["a", "b", "c", "kind"], [[*r, f"k{i}"] for i, r in enumerate(x)])
    with pytest.raises(CorruptFileError, match=r"if they are classes, give --val-fraction 0$"):
        load_table(train, test_path=test)
    assert load_table(train, test_path=test, val_fraction=0).n_classes == 12  # what the message says works


def test_an_unnamed_first_column_names_pandas_index(tmp_path):
    x, y = labelled_rows()
    path = write_csv(tmp_path / "frame.csv", ["", "a", "b", "c", "kind"], [[i, *r, t] for i, (r, t) in
                                                                           enumerate(zip(x, y))])
    with pytest.raises(CorruptFileError, match=r"frame\.csv: column 1 of the header row has no name \(pandas writes "
                                               r"its row index there: save with to_csv\(path, index=False\)\)"):
        load_table(path)
    with pytest.raises(CorruptFileError, match=r"column 2 of the header row has no name$"):
        load_table(write_csv(tmp_path / "gap.csv", ["a", "", "kind"], [[*r[:2], t] for r, t in zip(x, y)]))


def test_a_class_of_one_row_is_counted_in_words(tmp_path):
    x, _ = labelled_rows(21)
    rows = [[*r, "a" if i < 10 else "b" if i < 20 else "c"] for i, r in enumerate(x)]
    with pytest.raises(CorruptFileError, match=r"21 rows in 3 classes \(smallest class: 1 row\) are too few"):
        load_table(write_csv(tmp_path / "t.csv", ["a", "b", "c", "kind"], rows))


# ----------------------------------------------------------------------------- 2. image files in a relative folder
def test_a_run_on_files_of_a_relative_data_dir_is_evaluated_from_any_folder(tmp_path, monkeypatch, capsys):
    write_idx_set(tmp_path / "work" / "idx", compress=False)
    monkeypatch.chdir(tmp_path / "work")
    assert TrainConfig(dataset="mnist", data_dir="idx").data_dir == str(tmp_path / "work" / "idx")
    run = tmp_path / "work" / "run"
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", "idx", "--run-dir", str(run), "--no-plots",
                     *TINY]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 0, capsys.readouterr().err
    assert "test" in capsys.readouterr().out
    assert cli.main(["plot", str(run)]) == 0
    assert (run / "reconstructions.png").is_file()


def test_a_data_dir_given_on_resume_is_stored_absolute(tmp_path, monkeypatch, capsys):
    """``--resume RUN --data-dir DIR`` (the files moved) stores DIR absolute like a new run's: evaluate works from
    any folder afterwards."""
    write_idx_set(tmp_path / "work" / "idx", compress=False)
    monkeypatch.chdir(tmp_path / "work")
    run = tmp_path / "work" / "run"
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", "idx", "--run-dir", str(run), "--no-plots",
                     *TINY]) == 0
    (tmp_path / "work" / "idx").rename(tmp_path / "work" / "moved")
    assert cli.main(["train", "--resume", str(run), "--data-dir", "moved", "--epochs", "2", "--no-plots",
                     "--threads", "1", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(tmp_path / "work" / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 0, capsys.readouterr().err


# ----------------------------------------------------------------------------- 3. plots of wide tables, many classes
def test_table_plots_stay_readable_with_many_features_and_classes(tmp_path, capsys, monkeypatch):
    import matplotlib.axes

    rng = np.random.default_rng(0)
    n_classes, n_features = 40, 120
    y = np.repeat(np.arange(n_classes), 3)
    x = rng.normal(size=(len(y), n_features))
    np.savez(tmp_path / "wide.npz", X=x, y=y)
    drawn = {}
    scatter = matplotlib.axes.Axes.scatter

    def spy(self, *args, **kwargs):  # the colour and marker of each class in latent_pca.png
        drawn[kwargs.get("label")] = (tuple(np.ravel(kwargs.get("color"))), kwargs.get("marker", "o"))
        return scatter(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "wide.npz"), "--run-dir", str(run), "--val-fraction", "0",
                     "--test-fraction", "0.34", *TINY]) == 0
    assert "Tight layout" not in capsys.readouterr().err  # the legend fits: no layout warning
    width, _ = png_size(run / "feature_errors.png")
    assert width <= 2000  # a screen's width, not a bar and a name per feature, 0.35 inch each
    assert len(drawn) == n_classes and len(set(drawn.values())) == n_classes  # each class its own look
    assert png_size(run / "latent_pca.png")[0] < 3000


# ----------------------------------------------------------------------------- paths given as path objects
def test_paths_given_as_path_objects_are_stored_like_text(tmp_path, monkeypatch):
    """A researcher writing Python passes pathlib.Path objects: the configuration is the one made from the
    same paths as text (a table is a table, not digits; the saved config.json can be written)."""
    import dataclasses
    import json
    from pathlib import Path

    from vaelayer_np.run.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    for kwargs in (dict(data="t.csv", test_data="u.csv"), dict(dataset="mnist", data_dir="idx")):
        as_text = TrainConfig(**kwargs)
        as_paths = TrainConfig(**{k: Path(v) if k != "dataset" else v for k, v in kwargs.items()})
        assert dataclasses.asdict(as_paths) == dataclasses.asdict(as_text)
        json.dumps(dataclasses.asdict(as_paths))
    assert TrainConfig(data=Path("t.csv")).dataset == "t.csv"


def test_a_path_setting_that_is_no_path_is_named():
    from vaelayer_np.run.config import TrainConfig

    for kwargs, name in ((dict(data=5), "data"), (dict(data=b"t.csv"), "data"), (dict(data="t.csv", test_data=0.5),
                                                                              "test_data"),
                         (dict(dataset="mnist", data_dir=3), "data_dir")):
        with pytest.raises(TypeError, match=f"^{name}: expected a file path"):
            TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="^data: the path is empty"):
        TrainConfig(data="   ")
