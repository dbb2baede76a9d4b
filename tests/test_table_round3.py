"""What a data scientist bringing their own table meets, third round: numeric labels that are not classes, a
--limit that leaves a class out, and arrays that are not tables. Each case gives the right result or a one-line
error naming the argument, option, column or file at fault."""
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import DataConversionWarning

from vaelayer_np import VAELayerClassifier
from vaelayer_np.cli import main
from vaelayer_np.run.data import CorruptFileError, load_dataset
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


# ----------------------------------------------------------------------------- 1. numeric labels that are not classes
def labelled(tmp_path, labels, name="t.csv", header=("a", "b", "y")):
    x, y = separable(60, d=2)
    return write_csv(tmp_path / name, list(header), [[*r, labels[k]] for r, k in zip(x, y)])


def test_csv_labels_with_fractions_are_refused_naming_column_value_and_cause(tmp_path, capsys):
    path = labelled(tmp_path, ["0.5", "1", "2.25"])
    with pytest.raises(CorruptFileError, match=r't\.csv: column "y" row 1: the label "0\.5" is not a whole number '
                                               r"\(40 such labels\); class labels are names or whole numbers, as in "
                                               r"an \.npz file\. Numbers with fractions are measurements \(a "
                                               r"regression target\), not classes; the labels are read from the last "
                                               r'column, "y": if another column holds them, name it with --target'):
        load_table(path)
    with pytest.raises(CorruptFileError, match=r'"0\.5" is not a whole number .* is "y" the label column\? --target '
                                               r"names it$"):
        load_table(path, target="y")
    assert main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY]) == 2
    assert "not a whole number" in error_line(capsys) and not (tmp_path / "run").exists()


def test_a_measurement_column_before_the_labels_is_pointed_at_by_target(tmp_path):
    x, y = separable(60, d=2)
    path = write_csv(tmp_path / "m.csv", ["a", "kind", "weight"],
                     [[r[0], k, f"{r[1] * 10 + 0.5:.3f}"] for r, k in zip(x, y)])  # classes coded 0..2
    with pytest.raises(CorruptFileError, match=r'column "weight" row \d+: the label "[-0-9.]+" is not a whole '
                                               r"number .*name it with --target"):
        load_table(path)
    assert load_table(path, target="kind").class_names == ("0", "1", "2")  # what the message says works


@pytest.mark.parametrize("labels, names", [
    (["1.0", "2.0", "3.0"], ("1", "2", "3")),  # whole numbers written with a point
    (["2", "2.00", "1E+1"], None),              # one class "2" and "10": as many rows as classes allow
    (["setosa", "versicolor", "virginica"], ("setosa", "versicolor", "virginica")),
    (["1.5", "b", "c"], ("1.5", "b", "c")),     # text among the labels: names, "1.5" one of them
])
def test_whole_numbers_and_text_labels_stay_accepted(tmp_path, labels, names):
    path = labelled(tmp_path, labels)
    if names is None:
        assert load_table(path, val_fraction=0).class_names == ("2", "10")
    else:
        assert load_table(path).class_names == names


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity"])
def test_a_non_finite_number_among_numeric_labels_is_refused(tmp_path, cell):
    path = labelled(tmp_path, ["1", "2", cell])
    with pytest.raises(CorruptFileError, match=rf'column "y" row 3: the label "{cell}" is not a finite number \(20 '
                                               r"such labels\); every row needs a class label"):
        load_table(path)


def test_npz_fraction_labels_name_an_example_and_the_cause(tmp_path):
    x, y = separable(60, d=2)
    np.savez(tmp_path / "t.npz", X=x, y=np.array([0.0, 1.0, 2.5])[y])
    with pytest.raises(CorruptFileError, match=r"t\.npz: y holds floats that are not whole numbers \(y\[2\] is 2\.5, "
                                               r"20 such labels\); expected class labels .*measurements \(a "
                                               r"regression target\)"):
        load_table(tmp_path / "t.npz")


@pytest.mark.parametrize("to_labels", [lambda y: y * 0.5, lambda y: np.array([0.0, 1.0, 2.5], dtype=object)[y]])
def test_the_estimator_refuses_fraction_labels_as_npz_does(to_labels):
    x, y = separable(30)
    with pytest.raises(ValueError, match=r"^y: the label of row 1 is (0\.5|1\.0), not a whole number|"
                                         r"^y: the label of row 2 is 2\.5, not a whole number .*continuous target"):
        VAELayerClassifier(**FAST).fit(x, to_labels(y))
    clf = VAELayerClassifier(**FAST).fit(x, y.astype(float) + 1)  # whole numbers as floats: classes
    assert clf.classes_.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"^y: the label of row .* not a whole number"):
        clf.score(x, y + 0.5)


# ----------------------------------------------------------------------------- 2. --limit that leaves a class out
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


# ----------------------------------------------------------------------------- 3. arrays that are not tables
@pytest.fixture(scope="module")
def fitted():
    x, y = separable(30)
    return VAELayerClassifier(**FAST).fit(x, y), x, y


BAD_X = [
    ("dict", {"a": [1.0, 2.0], "b": [3.0, 4.0]}, r"^X: expected a 2-D table of numbers.* got a dict; a dict of "
                                                 r"columns becomes a table with np\.column_stack"),
    ("ragged", [[1.0, 2.0, 3.0], [1.0, 2.0]] * 15, r"^X: rows of different lengths: row 0 has 3 values, row 1 has "
                                                   r"2 values"),
    ("strings", ["a", "b", "c"] * 10, r"^X: element 0 holds the text 'a', not a number"),
    ("text cell", [[1.0, "x", 2.0]] * 30, r"^X: row 0, column 1 holds the text 'x', not a number; encode text "
                                          r"columns as numbers"),
    ("3-D", np.zeros((30, 3, 2)), r"^X: expected a 2-D table \(n_samples, n_features\), got a 3-D array of shape "
                                  r"\(30, 3, 2\); .*reshape"),
    ("None", None, r"^X: expected a 2-D table of numbers.* got None"),
    ("set", {1.0, 2.0}, r"^X: expected .* got a set; a set has no order"),
    ("generator", "generator", r"^X: expected .* got a generator; an iterator is read once"),
    ("None cell", [[1.0, None, 2.0]] * 30, r"^X: row 0, column 1 holds None, not a number .*a missing value\?"),
]


@pytest.mark.parametrize("method", ["fit", "predict", "predict_proba", "score", "transform", "reconstruct"])
@pytest.mark.parametrize("case, X, message", BAD_X, ids=[c[0] for c in BAD_X])
def test_x_that_is_not_a_table_is_named(fitted, method, case, X, message):
    clf, x, y = fitted
    if case == "generator":
        X = (row for row in x)
    if method == "fit":
        with pytest.raises((ValueError, TypeError), match=message):
            VAELayerClassifier(**FAST).fit(X, y)
        return
    args = (X, y) if method == "score" else (X,)
    with pytest.raises((ValueError, TypeError), match=message):
        getattr(clf, method)(*args)


BAD_Y = [
    ("shorter", lambda y: y[:5], r"^y: 5 labels for the 30 rows of X; give one label per row"),
    ("longer", lambda y: np.r_[y, y], r"^y: 60 labels for the 30 rows of X"),
    ("dict", lambda y: dict(enumerate(y)), r"^y: expected one label per row of X.* got a dict"),
    ("text", lambda y: "abc", r"^y: expected one label per row of X.* got a str \('abc'\)"),
    ("two columns", lambda y: np.c_[y, y], r"^y: expected one label per row of X \(1-D\), got shape \(30, 2\)"),
    ("ragged", lambda y: [[1], [1, 2]] * 15, r"^y: expected one label per row of X, got rows of several values"),
]


@pytest.mark.parametrize("method", ["fit", "score"])
@pytest.mark.parametrize("case, make, message", BAD_Y, ids=[c[0] for c in BAD_Y])
def test_y_that_is_not_one_label_per_row_is_named(fitted, method, case, make, message):
    clf, x, y = fitted
    with pytest.raises(ValueError, match=message):
        if method == "fit":
            VAELayerClassifier(**FAST).fit(x, make(y))
        else:
            clf.score(x, make(y))


def test_what_scikit_learn_already_names_keeps_its_words(fitted):
    clf, x, y = fitted
    with pytest.raises(ValueError, match="Reshape your data"):
        clf.predict(x[:, 0])
    with pytest.raises(ValueError, match="X has 2 features, but VAELayerClassifier is expecting 3"):
        clf.predict(x[:, :2])
    with pytest.raises(ValueError, match="Complex data not supported"):
        clf.predict(x + 1j)
    for sparse in (scipy.sparse.csr_matrix(x), scipy.sparse.dok_matrix(x)):  # a dok_matrix is a dict: not named so
        with pytest.raises(TypeError, match="^Sparse data was passed for X"):
            clf.predict(sparse)
    with pytest.raises(TypeError, match="argument must be .* string.* number"):  # a cell of another kind
        VAELayerClassifier(**FAST).fit(np.array([[{"a": 1}, 1.0]] * 30, dtype=object), y)
    with pytest.warns(DataConversionWarning):  # a column of labels is one label per row
        column = VAELayerClassifier(**FAST).fit(x, y[:, None])
    assert column.classes_.tolist() == [0, 1, 2]


def test_the_limit_example_of_the_docs_is_what_iris_gives(tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    path = write_csv(tmp_path / "iris.csv", [*iris.feature_names, "species"],
                     [[*r, iris.target_names[t]] for r, t in zip(iris.data, iris.target)])
    with pytest.raises(ValueError) as info:
        load_table(path, limit=1)
    assert str(info.value).startswith("limit: --limit 1 keeps 1 of the 108 training examples of iris.csv, which "
                                      "leaves 2 of its 3 classes without a training example")
    assert str(info.value).split("; ")[-1].startswith("a classifier needs an example of every class to train on: "
                                                      "give --limit 4 or more")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "tabular.md").read_text()
    assert "keeps 1 of the 108 training examples of iris.csv" in " ".join(docs.split())
    assert "give --limit 4 or more" in " ".join(docs.split())


# --------------------------------------------------------------- missing-value markers among text labels (CSV, .npz)
@pytest.mark.parametrize("marker", ["NA", "nan", "N/A", "#N/A", "null", "NULL", "None", "<NA>"])
def test_a_missing_value_marker_among_text_labels_is_refused(tmp_path, capsys, marker):
    path = labelled(tmp_path, ["setosa", "versicolor", marker])
    first = next(i for i, line in enumerate(path.read_text().splitlines()[1:], 1) if line.endswith("," + marker))
    with pytest.raises(CorruptFileError, match=rf'^{re.escape(str(path))}: column "y" row {first}: the label '
                                               rf'"{re.escape(marker)}" marks a missing value .*; 20 such labels\); '
                                               r"every row needs a class label: fill it in or drop the row$"):
        load_table(path)
    assert main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY]) == 2
    assert "marks a missing value" in error_line(capsys) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("labels", [["NAB", "nanny", "n/a/b"], ["Nan", "none", "na"]])
def test_labels_that_only_look_like_markers_stay_classes(tmp_path, labels):
    assert sorted(load_table(labelled(tmp_path, labels)).class_names) == sorted(labels)


@pytest.mark.parametrize("dtype", ["U", "S"])
@pytest.mark.parametrize("marker", ["", " ", "NA", "nan"])
def test_npz_string_labels_with_a_missing_value_marker_are_refused(tmp_path, dtype, marker):
    x, y = separable(60, d=2)
    np.savez(tmp_path / "t.npz", X=x, y=np.array(["a", "b", marker]).astype(dtype)[y])
    first = int(np.flatnonzero(y == 2)[0])
    with pytest.raises(CorruptFileError, match=rf'^.*t\.npz: y\[{first}\] is ".*", which marks a missing value '
                                               r"\(20 such labels\); every example needs a class label"):
        load_table(tmp_path / "t.npz")
