"""Hostile input, second round: the classes of fault a replay of hostile inputs still met after
tests/test_hostile_inputs.py. Each case gives a one-line error naming the argument, option or file at
fault (or the result the user meant), never pathlib's or NumPy's unnamed error, and never a silently
different run."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from vaelayer_np import VAELayerClassifier
from vaelayer_np.cli import main
from vaelayer_np.run.checkpoint import load_npz
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import CorruptFileError, load_dataset, read_cifar_batch, read_idx
from vaelayer_np.run.tables import load_table

TINY = ["--epochs", "1", "--widths", "4", "--encoder-hidden", "0", "--path", "readable", "--no-progress",
        "--no-plots"]
FAST = dict(epochs=1, batch_size=16, path="readable", random_state=0, widths=(4,), encoder_hidden=0)


def separable(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.standard_normal((n, d)) * 0.3 + 2.0 * y[:, None], y


def write_table(path, x, y, header=True):
    lines = ([",".join([*(f"f{j}" for j in range(x.shape[1])), "label"])] if header else []) + \
        [",".join([*(repr(float(v)) for v in row), str(label)]) for row, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = [line for line in err.splitlines() if "error:" in line]
    assert len(line) == 1, err
    for needle in needles:
        assert needle in line[0], line[0]
    return line[0]


@pytest.fixture(scope="module")
def fitted():
    x, y = separable()
    return VAELayerClassifier(**FAST).fit(x, y), x, y


# ----------------------------------------------------------------------------- 1. methods before fit
@pytest.mark.parametrize("call", [
    lambda clf, x, y: clf.score(x, y),
    lambda clf, x, y: clf.reconstruct(x),
    lambda clf, x, y: clf.reconstruct(x, layer=0),
    lambda clf, x, y: clf.transform(x, layer=0),
    lambda clf, x, y: clf.sample(2),
])
def test_every_method_before_fit_is_not_fitted_error(call):
    x, y = separable()
    with pytest.raises(NotFittedError):  # not AttributeError: 'VAELayerClassifier' object has no attribute ...
        call(VAELayerClassifier(), x, y)


# ----------------------------------------------------------------------------- 2. sample beyond the memory
def test_sample_beyond_the_memory_is_refused_by_name(fitted):
    clf, x, _ = fitted
    with pytest.raises(ValueError, match=r"^n: 1000000000000 samples of 3 features needs about .* more than the"):
        clf.sample(10 ** 12)
    assert clf.sample(3).shape == (3, 3)


# ----------------------------------------------------------------------------- 3. a path that is not a path
@pytest.mark.parametrize("call", [
    lambda clf: VAELayerClassifier.load(None),
    lambda clf: VAELayerClassifier.load(3),
    lambda clf: clf.save(None),
    lambda clf: clf.save(b"model.npz"),
    lambda clf: load_table(None),
    lambda clf: load_npz(None),
    lambda clf: read_idx(None),
    lambda clf: read_cifar_batch(7),
])
def test_a_path_of_the_wrong_type_is_a_type_error_naming_it(fitted, call):
    with pytest.raises(TypeError, match=r"^path: expected a file path \(str or os.PathLike\), got "):
        call(fitted[0])


@pytest.mark.parametrize("call", [
    lambda clf: VAELayerClassifier.load(""),
    lambda clf: clf.save(""),
    lambda clf: load_table(" "),
    lambda clf: load_npz(""),
    lambda clf: load_dataset("mnist", data_dir=""),
])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(fitted, call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^(path|data_dir): the path is empty"):
        call(fitted[0])
    assert list(tmp_path.iterdir()) == []


def test_a_test_path_of_the_wrong_type_is_named(tmp_path):
    x, y = separable()
    with pytest.raises(TypeError, match=r"^test_path: expected a file path"):
        load_table(write_table(tmp_path / "t.csv", x, y), test_path=5)


# ----------------------------------------------------------------------------- 4. a CSV without its header row
def test_a_csv_without_a_header_row_is_named_not_trained_one_row_short(tmp_path, capsys):
    x, y = separable()
    path = write_table(tmp_path / "nohead.csv", x, y, header=False)
    with pytest.raises(CorruptFileError, match=r"nohead\.csv: the first row \(.*\) names the columns with numbers "
                                               r"like data; the file seems to lack its header row"):
        load_table(path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--run-dir", str(run), *TINY]) == 2
    one_line_error(capsys, "nohead.csv", "lack its header row")
    assert not run.exists()


def test_a_blank_header_row_does_not_make_the_first_data_row_the_header(tmp_path):
    x, y = separable()
    path = write_table(tmp_path / "blank.csv", x, y, header=False)
    path.write_text(",,,\n" + path.read_text())
    with pytest.raises(CorruptFileError, match="lack its header row"):
        load_table(path)


@pytest.mark.parametrize("header", [["0", "1", "2", "label"], ["0", "1", "2", "3"], ["1.5", "width", "x", "label"],
                                    ["a", "b", "c", "7.5"]])
def test_headers_with_numbers_for_names_still_read(tmp_path, header):
    x, y = separable()
    path = tmp_path / "named.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(",".join([*map(repr, map(float, row)), str(label)])
                                                        for row, label in zip(x, y)) + "\n")
    ds = load_table(path)
    assert ds.feature_names == tuple(header[:3]) and len(ds.y_train) + len(ds.y_test) + len(ds.y_val) == len(y)


# ----------------------------------------------------------------------------- 5. empty option values
@pytest.mark.parametrize("args, option", [
    (["train", "--data", ""], "--data"),
    (["train", "--data", "DATA", "--test-data", ""], "--test-data"),
    (["train", "--data", "DATA", "--target", " "], "--target"),
    (["train", "--dataset", "mnist", "--data-dir", ""], "--data-dir"),
    (["train", "--run-dir", ""], "--run-dir"),
    (["train", "--resume", ""], "--resume"),
    (["evaluate", ""], "run"),
    (["plot", ""], "runs"),
    (["plot", "RUN", "RUN", "--out", ""], "--out"),
])
def test_an_empty_option_value_is_refused_not_taken_as_left_out(tmp_path, capsys, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    x, y = separable()
    data = str(write_table(tmp_path / "t.csv", x, y))
    args = [data if a == "DATA" else str(tmp_path / "run") if a == "RUN" else a for a in args]
    with pytest.raises(SystemExit) as exc:  # before: digits trained, the split kept, the current folder used
        main([*args, *TINY] if args[0] == "train" else args)
    assert exc.value.code == 2
    one_line_error(capsys, f"argument {option}: expected a value")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


# ----------------------------------------------------------------------------- 6. options that would be ignored
@pytest.mark.parametrize("extra, message", [
    (["--test-data", "DATA", "--test-fraction", "0.3"], "--test-fraction: applies only with --data and no --test-data"),
    (["--data-dir", "DIR"], "--data-dir: applies only to the datasets read from files"),
])
def test_options_a_table_run_would_ignore_are_refused(tmp_path, capsys, extra, message):
    x, y = separable()
    data = str(write_table(tmp_path / "t.csv", x, y))
    extra = [data if a == "DATA" else str(tmp_path) if a == "DIR" else a for a in extra]
    run = tmp_path / "run"
    assert main(["train", "--data", data, "--run-dir", str(run), *TINY, *extra]) == 2
    one_line_error(capsys, message)
    assert not run.exists()


def test_options_a_digits_run_would_ignore_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--test-fraction", "0.3", "--run-dir", str(run), *TINY]) == 2
    one_line_error(capsys, "--test-fraction: applies only with --data")
    assert main(["train", "--data-dir", str(tmp_path), "--run-dir", str(run), *TINY]) == 2  # --dataset left out
    one_line_error(capsys, "--data-dir: applies only to the datasets read from files", "digits")
    assert not run.exists()
    with pytest.raises(ValueError, match="data_dir: applies only to the datasets read from files"):
        TrainConfig(dataset="digits", data_dir=str(tmp_path)).validate()
    TrainConfig(dataset="mnist", data_dir=str(tmp_path)).validate()


# ----------------------------------------------------------------------------- 7. errors name the option
def test_errors_from_the_run_folder_and_combined_settings_name_the_options(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--limit", "100", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run), "--limit", "100", *TINY]) == 2
    one_line_error(capsys, f"--run-dir: {run} already holds a run")
    x, y = separable()
    data = str(write_table(tmp_path / "t.csv", x, y))
    assert main(["train", "--data", data, "--augment-flip", "0.5", "--run-dir", str(tmp_path / "r2"), *TINY]) == 2
    one_line_error(capsys, "--augment-shift, --augment-flip: apply to image datasets")
    assert main(["train", "--backend", "foo", *TINY]) == 2
    one_line_error(capsys, "--backend: unknown option 'foo'")


def test_a_run_folder_named_like_a_setting_keeps_its_name_in_the_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").write_text("a file")
    assert main(["train", "--run-dir", "seed", *TINY]) == 2
    assert one_line_error(capsys, "seed: is a file").split("error: ")[1].startswith("seed:")
