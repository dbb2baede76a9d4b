"""Tables of your own: load_table (CSV and .npz), clear errors naming the file, the CLI on a table,
table plots, and the BLAS thread limit."""
import csv
import json

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine

from vaelayer_np import cli, runs
from vaelayer_np.fast.machine import blas_threads, limit_threads
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import CorruptFileError, DatasetNotFoundError
from vaelayer_np.run.tables import fit_sizes, load_table


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def wine_csv(tmp_path):
    bunch = load_wine()
    rows = [list(x) + [bunch.target_names[t]] for x, t in zip(bunch.data, bunch.target)]
    # the label column in the middle: `target` must find it by name
    header = list(bunch.feature_names[:5]) + ["class"] + list(bunch.feature_names[5:])
    rows = [r[:5] + [r[-1]] + r[5:-1] for r in rows]
    return write_csv(tmp_path / "wine.csv", header, rows)


def test_load_csv_with_target_column(wine_csv):
    ds = load_table(wine_csv, target="class", seed=3)
    assert ds.name == "wine.csv" and ds.image_shape is None
    assert ds.class_names == ("class_0", "class_1", "class_2")
    assert ds.n_features == 13 and "class" not in ds.feature_names and ds.feature_names[5] == "total_phenols"
    assert len(ds.y_test) == 36 and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 178
    # stratified: every split holds every class in about the file's proportions
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(y) == {0, 1, 2}
    # standardised with the training rows' statistics, which are stored
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-5) and np.allclose(ds.x_train.std(0), 1, atol=1e-4)
    raw = load_wine().data
    assert np.allclose(ds.feature_mean, raw.mean(0), rtol=0.1)
    assert ds.x_train.dtype == np.float32
    # seeded: the same seed gives the same split, another one another
    np.testing.assert_array_equal(load_table(wine_csv, target="class", seed=3).x_test, ds.x_test)
    assert not np.array_equal(load_table(wine_csv, target="class", seed=4).x_test, ds.x_test)


def test_load_csv_with_a_test_file_and_numeric_labels(tmp_path):
    X, y = load_iris(return_X_y=True)
    header = ["a", "b", "c", "d", "species"]
    train = write_csv(tmp_path / "train.csv", header, [list(x) + [float(t + 1)] for x, t in zip(X[::2], y[::2])])
    test = write_csv(tmp_path / "test.csv", ["d", "c", "b", "a", "species"],
                     [list(x[::-1]) + [int(t + 1)] for x, t in zip(X[1::2], y[1::2])])
    ds = load_table(train, test_path=test, val_fraction=0)  # target: the last column
    assert ds.class_names == ("1", "2", "3")
    assert len(ds.y_test) == 75 and len(ds.y_val) == 0
    expected = (X[1::2] - ds.feature_mean) / ds.feature_std  # test columns reordered by name
    np.testing.assert_allclose(ds.x_test, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, y[1::2])


@pytest.mark.parametrize("xname", ["X", "x"])
def test_load_npz(tmp_path, xname):
    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "iris.npz", **{xname: X, "y": np.array(["setosa", "versicolor", "virginica"])[y]})
    ds = load_table(tmp_path / "iris.npz")
    assert ds.name == "iris.npz" and ds.class_names == ("setosa", "versicolor", "virginica")
    assert ds.n_features == 4 and len(ds.y_test) == 30


BAD_CSV = [
    ("missing column", ["a", "b", "label"], [[1, 2, "x"], [3, 4, "y"]], "kind",
     r'bad\.csv: no column "kind" \(the target\); the columns are: a, b, label'),
    ("non-numeric cell", ["alcohol", "b", "kind"], [[1, 2, "x"], [3, 4, "y"]] * 5 + [["abc", 1, "x"]], "kind",
     r'bad\.csv: column "alcohol" row 11: "abc" is not a number'),
    ("NaN", ["a", "b", "kind"], [[1, 2, "x"], [3, "nan", "y"]], "kind",
     r'bad\.csv: column "b" row 2: "nan" is not a finite number'),
    ("empty cell", ["a", "b", "kind"], [[1, 2, "x"], [3, "", "y"]], "kind",
     r'bad\.csv: column "b" row 2: empty cell'),
    ("one class only", ["a", "b", "kind"], [[1, 2, "x"], [3, 4, "x"]], "kind",
     r'bad\.csv: every row has the label "x"; a classifier needs at least two classes'),
    ("fewer rows than classes", ["a", "kind"], [[1, "x"], [2, "y"], [3, "z"]], "kind",
     r"bad\.csv: 3 rows in 3 classes .* too few"),
    ("ragged row", ["a", "b", "kind"], [[1, 2, "x"], [3, "y"]], "kind",
     r"bad\.csv: row 2 has 2 cells, the header has 3 columns"),
]


@pytest.mark.parametrize("case, header, rows, target, message", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv_files_give_clear_errors_naming_the_file(tmp_path, capsys, case, header, rows, target, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(ValueError, match=message):
        load_table(path, target=target)
    # the command line: exit code 2 and the same message on stderr, before any run folder is made
    code = cli.main(["train", "--data", str(path), "--target", target, "--run-dir", str(tmp_path / "run"),
                     "--no-progress", "--path", "readable"])
    assert code == 2
    assert "bad.csv" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_files_that_are_not_tables(tmp_path):
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\x00\x00\x01")
    with pytest.raises(CorruptFileError, match=r"image\.csv: not a text table"):
        load_table(binary)
    with pytest.raises(DatasetNotFoundError, match=r"nowhere\.csv: file not found"):
        load_table(tmp_path / "nowhere.csv")
    with pytest.raises(CorruptFileError, match=r"data\.txt: unknown table format \.txt"):
        load_table(tmp_path / "data.txt")
    header_only = write_csv(tmp_path / "empty.csv", ["a", "b"], [])
    with pytest.raises(CorruptFileError, match=r"empty\.csv: only a header row"):
        load_table(header_only)
    fake_npz = tmp_path / "fake.npz"
    fake_npz.write_text("a,b\n1,2\n")
    with pytest.raises(CorruptFileError, match=r"fake\.npz: not an \.npz file"):
        load_table(fake_npz)


@pytest.mark.parametrize("arrays, message", [
    ({"features": np.ones((4, 2)), "y": np.arange(4) % 2}, r"no array named X \(or x\)"),
    ({"X": np.ones((4, 2))}, r"no array named y"),
    ({"X": np.ones((4, 2, 1)), "y": np.arange(4) % 2}, r"X has shape \(4, 2, 1\); expected 2-D"),
    ({"X": np.ones((4, 2)), "y": np.ones((4, 1))}, r"y has shape \(4, 1\); expected 1-D"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1], dtype=object)}, r"object arrays"),
    ({"X": np.array([["a", "b"]] * 4), "y": np.arange(4) % 2}, r"X holds <U1 values; expected numbers"),
    ({"X": np.ones((4, 2)), "y": np.arange(3)}, r"X has 4 rows but y has 3 labels"),
    ({"X": np.ones((4, 2)), "y": np.array([0.5, 1, 0, 1])}, r"not whole numbers"),
    ({"X": np.ones((4, 2)), "y": np.array([0, 1, np.nan, 1])},
     r"y\[2\] is nan; labels must be finite \(1 such label\)"),
    ({"X": np.array([[1.0, np.nan]] + [[1.0, 2.0]] * 3), "y": np.arange(4) % 2}, r"X\[0, 1\] is nan.*\(1 such value\)"),
])
def test_bad_npz_files(tmp_path, arrays, message):
    path = tmp_path / "table.npz"
    np.savez(path, **arrays)
    with pytest.raises(CorruptFileError, match=r"table\.npz: .*" + message):
        load_table(path)


def test_fit_sizes_rule():
    assert fit_sizes(4, 3) == ((16, 16), 64)      # iris
    assert fit_sizes(13, 3) == ((16, 16), 64)     # wine
    assert fit_sizes(30, 2) == ((32, 32), 128)    # breast cancer
    assert fit_sizes(64, 10) == ((64, 64), 256)   # digits-sized table: the digits width
    assert fit_sizes(784, 10) == ((256, 256), 1024)


def test_config_for_a_table(wine_csv):
    config = TrainConfig(data=str(wine_csv), target="class").validate()
    assert config.dataset == "wine.csv" and config.epochs == 100 and config.batch_size == 32
    with pytest.raises(ValueError, match="data"):
        TrainConfig(data="table.xlsx").validate()
    with pytest.raises(ValueError, match="target: applies only with --data"):
        TrainConfig(target="class").validate()
    with pytest.raises(ValueError, match="give only --data"):
        TrainConfig(data=str(wine_csv), dataset="mnist").validate()
    # image datasets keep their defaults
    digits = TrainConfig()
    assert digits.resolved_widths() == (64, 64, 64) and digits.encoder_hidden == 1024 and digits.epochs == 50


@pytest.mark.slow
def test_cli_train_evaluate_plot_on_csv_and_npz(tmp_path, capsys, wine_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "iris.npz", X=X, y=y)
    for data, extra in ((wine_csv, ["--target", "class"]), (tmp_path / "iris.npz", [])):
        assert cli.main(["train", "--data", str(data), *extra, "--epochs", "2", "--path", "readable",
                         "--no-progress"]) == 0
        run = sorted((tmp_path / "runs").glob(f"*-{data.name}-iffcl"))[-1]  # the folder says the file's name
        config = json.loads((run / "config.json").read_text())
        assert config["widths"] == [16, 16] and config["encoder_hidden"] == 64 and config["threads"] == "auto"
        assert {p.name for p in run.glob("*.png")} == {"local_losses.png", "accuracy.png", "feature_errors.png",
                                                       "latent_pca.png"}
        capsys.readouterr()
        assert cli.main(["evaluate", str(run), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["epoch"] == 2 and 0.0 <= result["test_acc"] <= 1.0
        for png in run.glob("*.png"):
            png.unlink()
        assert cli.main(["plot", str(run)]) == 0
        assert (run / "latent_pca.png").stat().st_size > 0


def test_limit_threads_sets_and_restores_the_blas_limit():
    before = blas_threads()
    with limit_threads(1):
        assert blas_threads() and all(n == 1 for n in blas_threads())
    with limit_threads(2):
        assert all(n == 2 for n in blas_threads())
    assert blas_threads() == before
    with limit_threads(None):
        assert blas_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with limit_threads(0):
            pass


def test_train_run_applies_the_thread_limit(tmp_path, monkeypatch):
    seen = []
    real = runs.limit_threads

    def spy(n):
        seen.append(n)
        return real(n)

    monkeypatch.setattr(runs, "limit_threads", spy)
    monkeypatch.setattr(runs.Trainer, "train_epoch", lambda self, *a, **k: seen.append(blas_threads()) or None)
    config = TrainConfig(epochs=1, limit=30, path="readable", threads=2, widths=(4,), encoder_hidden=0)
    runs.train_run(config, run_dir=tmp_path / "run", progress=False, plots=False, log=lambda *a: None)
    assert seen[0] == 2 and all(n == 2 for n in seen[1])
