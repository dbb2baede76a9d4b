"""Hostile but realistic input, provoked the way a user meets it: the command line, VAELayerClassifier and
the file loaders. Each section is one class of fault; each case gives the right result or a one-line error
naming the file, option, column or entry at fault, and nothing a user has is lost."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from vaelayer_np import VAELayerClassifier
from vaelayer_np.cli import main
from vaelayer_np.fast import machine
from vaelayer_np.run import runs, signals, tables
from vaelayer_np.run.checkpoint import load_npz, save_npz_atomic
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import CorruptFileError
from vaelayer_np.run.runs import train_run
from vaelayer_np.run.tables import ConstantColumnWarning, load_table, read_table
from vaelayer_np.run.trainer import Trainer

TABLE_ARGS = ["--epochs", "2", "--widths", "8", "--encoder-hidden", "0", "--path", "readable", "--no-progress",
              "--no-plots"]
TINY = dict(dataset="digits", limit=200, widths=(8,), encoder_hidden=0, epochs=2, path="readable")
QUIET = dict(progress=False, plots=False, log=lambda *a: None)
FAST = dict(epochs=20, batch_size=16, lr=0.01, path="readable", random_state=0)


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def separable(n=90, d=3, seed=0):
    """Three classes, well apart in every column."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.standard_normal((n, d)) * 0.3 + 2.0 * y[:, None], y


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_cli(args, **kwargs):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vaelayer_np", *args], env=env, text=True, **kwargs)


# ----------------------------------------------------------------------------- 1. extreme but finite values
@pytest.fixture
def extreme_csv(tmp_path):
    x, y = separable()
    sign = np.where(np.arange(len(y)) % 2, 1.0, -1.0)
    rows = [[x[i, 0] * 1e300, x[i, 1] * 1e-300, (0.5 + 0.1 * x[i, 2]) * 1.7e308 * sign[i], y[i]]
            for i in range(len(y))]
    return write_csv(tmp_path / "extreme.csv", ["huge", "tiny", "edge", "label"], rows)


def test_extreme_columns_are_standardised_not_dropped(extreme_csv):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning, no constant-column warning
        ds = load_table(extreme_csv, seed=1)
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, rtol=1e-4)  # every column kept, none zeroed
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.isfinite(ds.feature_mean).all() and (ds.feature_std > 0).all()


def test_extreme_columns_train_through_the_cli(tmp_path, extreme_csv, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(extreme_csv), "--run-dir", str(run), *TABLE_ARGS]) == 0
    assert "warning" not in capsys.readouterr().err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_constant_column_is_warned_once_by_name_and_a_tiny_one_is_not(tmp_path, capsys):
    x, y = separable()
    rows = [[x[i, 0] * 1e-300, 7.5, x[i, 1], y[i]] for i in range(len(y))]
    path = write_csv(tmp_path / "const.csv", ["tiny", "fixed", "b", "label"], rows)
    with pytest.warns(ConstantColumnWarning, match=r'const\.csv: column "fixed" \(always 7\.5\)') as record:
        load_table(path)
    assert len(record) == 1 and "tiny" not in str(record[0].message)
    assert main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TABLE_ARGS]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and '"fixed"' in warned[0] and warned[0].startswith("vaelayer train: warning:")


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_estimator_keeps_extreme_columns(scale):
    x, y = separable(120)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        clf = VAELayerClassifier(**FAST).fit(x * scale, y)
        assert clf.score(x * scale, y) > 0.9
    assert np.isfinite(clf.mean_).all() and (clf.scale_ > 0).all()


def test_estimator_near_the_float_limit_and_its_constant_columns():
    x, y = separable(120)
    x[:, 0] = np.where(np.arange(len(y)) % 2, 1.0, -1.0) * 1.6e308 * (0.5 + 0.05 * y)
    x[:, 2] = 3.0
    with pytest.warns(ConstantColumnWarning, match=r'X: column "2" \(always 3\)'):
        clf = VAELayerClassifier(**FAST).fit(x, y)
    assert clf.score(x, y) > 0.9
    with pytest.raises(ValueError, match=r'X: column "1" row 1 .*training standard deviations'):
        clf.predict(np.array([[1.0, 1e300, 3.0]]))


def test_a_test_value_far_beyond_the_training_rows_is_named(tmp_path):
    x, y = separable()
    train = write_csv(tmp_path / "train.csv", ["a", "b", "label"], [[*x[i, :2], y[i]] for i in range(len(y))])
    test = write_csv(tmp_path / "test.csv", ["a", "b", "label"], [[1.0, 1e300, 0], [1.0, 2.0, 1]])
    with pytest.raises(CorruptFileError, match=r'test\.csv \(the test file\): column "b" row 1 \(the value 1e\+300\)'):
        load_table(train, test_path=test)


def test_errors_found_before_training_leave_no_run_folder(tmp_path, capsys, monkeypatch):
    x, y = separable()
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[*x[i, :2], y[i]] for i in range(len(y))])
    run = tmp_path / "run"
    monkeypatch.setattr(machine, "available_memory", lambda: 10 ** 6)
    assert main(["train", "--data", str(path), "--run-dir", str(run), *TABLE_ARGS[:-2], "--widths", "500"]) == 2
    one_line_error(capsys, "--widths: the model of widths 500", "more than the 1 MB available")
    assert not run.exists()
    monkeypatch.undo()

    def fail(self, *a, **k):  # an error inside the first epoch, before any checkpoint
        raise ValueError("x: something went wrong")

    monkeypatch.setattr(Trainer, "train_epoch", fail)
    assert main(["train", "--data", str(path), "--run-dir", str(run), *TABLE_ARGS]) == 2
    assert not run.exists()
    run.mkdir()  # a folder the user made is kept, empty as it was
    assert main(["train", "--data", str(path), "--run-dir", str(run), *TABLE_ARGS]) == 2
    assert run.is_dir() and list(run.iterdir()) == []


def test_a_batch_size_beyond_the_rows_trains_on_batches_of_every_row(tmp_path):
    """A --batch-size larger than the training rows (however large) is one batch of every row: no buffer of
    the asked size is allocated, for the command line and the estimator alike."""
    x, y = separable()
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[*x[i, :2], y[i]] for i in range(len(y))])
    for method in ("iffcl", "backprop", "local-heads"):
        run = tmp_path / method
        assert main(["train", "--data", str(path), "--run-dir", str(run), *TABLE_ARGS, "--method", method,
                     "--batch-size", str(10 ** 20)]) == 0
        assert (run / "metrics.jsonl").is_file()
    clf = VAELayerClassifier(widths=(8,), encoder_hidden=0, epochs=2, batch_size=10 ** 20).fit(x, y)
    assert clf.predict(x).shape == y.shape


def test_a_batch_too_large_for_memory_is_named_as_the_batch_size(monkeypatch):
    """When the model would fit with batches of the default sizes but not with the batches asked for, the error
    names --batch-size and counts the batch as at most the training rows; a model too wide for any batch is
    named by its widths."""
    config = TrainConfig(dataset="digits", widths=(8,), encoder_hidden=0, batch_size=10 ** 20).validate()
    params, activations = runs._memory_parts(config, 64, 10, rows=10 ** 7)
    assert activations > params
    monkeypatch.setattr(machine, "available_memory", lambda: (params + activations) // 2)
    with pytest.raises(ValueError, match=r"^batch_size: a batch of 10000000 rows through the model of widths 8"):
        runs.check_model_memory(config, 64, 10, rows=10 ** 7)
    runs.check_model_memory(config, 64, 10, rows=10 ** 5)  # a smaller data set: smaller batches, it fits
    wide = TrainConfig(dataset="digits", widths=(4096,), encoder_hidden=0, batch_size=1000).validate()
    params, activations = runs._memory_parts(wide, 64, 10, rows=10 ** 7)
    monkeypatch.setattr(machine, "available_memory", lambda: params // 2)
    with pytest.raises(ValueError, match=r"^widths: the model of widths 4096"):
        runs.check_model_memory(wide, 64, 10, rows=10 ** 7)


# ----------------------------------------------------------------------------- 2. labels stay distinct
@pytest.mark.parametrize("labels, names", [
    ([9007199254740992, 9007199254740993, 5], ("5", "9007199254740992", "9007199254740993")),
    ([10 ** 40, 10 ** 40 + 1, -(10 ** 40)], (str(-(10 ** 40)), str(10 ** 40), str(10 ** 40 + 1))),
    (["2", "2.0", "10"], None),  # "2" and "2.0" are one class: too few rows for a split is not the point here
    (["007", "b", "a"], ("007", "a", "b")),
])
def test_csv_labels_of_any_size_stay_distinct(tmp_path, labels, names):
    x, y = separable()
    path = write_csv(tmp_path / "l.csv", ["a", "label"], [[x[i, 0], labels[y[i]]] for i in range(len(y))])
    if names is None:
        assert tables.class_names_of(labels) == ("2", "10")
        return
    ds = load_table(path, val_fraction=0)
    assert ds.class_names == names and len(set(ds.y_train)) == 3


@pytest.mark.parametrize("y_of", [
    lambda y: np.array([9007199254740992, 9007199254740993, 7], dtype=np.int64)[y],
    lambda y: np.uint64(2 ** 63) + y.astype(np.uint64),
    lambda y: np.array([2.0 ** 60, 2.0 ** 60 + 256, 1e20])[y],
    lambda y: np.array(["x", "y", "z"])[y],
])
def test_npz_labels_of_any_dtype_stay_distinct(tmp_path, y_of):
    x, y = separable()
    np.savez(tmp_path / "t.npz", X=x, y=y_of(y))
    ds = load_table(tmp_path / "t.npz")
    assert ds.n_classes == 3 and len(set(ds.class_names)) == 3
    if y_of(y).dtype.kind in "iu":
        assert sorted(int(c) for c in ds.class_names) == sorted(int(v) for v in set(y_of(y).tolist()))


@pytest.mark.parametrize("labels", [
    np.array([9007199254740992, 9007199254740993, 5], dtype=np.int64),
    np.array([2 ** 63, 2 ** 63 + 1, 2 ** 63 + 2], dtype=np.uint64),
    np.array([2 ** 70, 2 ** 70 + 1, 3], dtype=object),
])
def test_estimator_integer_labels_stay_distinct_and_survive_save_load(tmp_path, labels):
    x, y = separable(120)
    clf = VAELayerClassifier(**{**FAST, "epochs": 5}).fit(x, labels[y])
    assert len(clf.classes_) == 3 and set(clf.classes_.tolist()) == set(labels.tolist())
    again = VAELayerClassifier.load(clf.save(tmp_path / "m.npz"))
    assert again.predict(x[:5]).tolist() == clf.predict(x[:5]).tolist()
    assert set(again.classes_.tolist()) == set(labels.tolist())
    assert 0.0 <= again.score(x, labels[y]) <= 1.0


# ----------------------------------------------------------------------------- 3. data changed after training
def test_changed_data_is_refused_on_resume_evaluate_and_plot(tmp_path, capsys):
    x, y = separable()
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[*x[i, :2], y[i]] for i in range(len(y))])
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--run-dir", str(run), *TABLE_ARGS]) == 0
    recorded = json.loads((run / "data.json").read_text())["files"]["data"]
    assert recorded["size"] == path.stat().st_size and len(recorded["sha256"]) == 64
    text = path.read_bytes()
    path.write_bytes(text.replace(b"label", b"lab3l"))  # same size, other content (a renamed column)
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["train", "--resume", str(run), "--epochs", "3", "--no-progress"],
                    ["plot", str(run)]):
        assert main(command) == 2
        one_line_error(capsys, str(path), "changed since the run", "--allow-changed-data")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    path.write_bytes(text + f"0.1,0.2,{y[0]}\r\n".encode())  # more rows
    assert main(["evaluate", str(run)]) == 2
    assert "bytes" in one_line_error(capsys, str(path))
    assert main(["evaluate", str(run), "--allow-changed-data"]) == 0
    assert "warning" in capsys.readouterr().err
    path.write_bytes(text)  # restored: accepted again
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--no-plots"]) == 0
    assert main(["train", "--data", str(path), "--allow-changed-data", "--run-dir", str(tmp_path / "r2")]) == 2


# ----------------------------------------------------------------------------- 4. SIGTERM and SIGHUP
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_saves_and_the_run_resumes(tmp_path, monkeypatch, signum):
    run = tmp_path / "run"
    real_step = Trainer.step

    def step(self, x, y):
        if self.epoch == 1 and self.batch_index == 2:
            os.kill(os.getpid(), signum)  # as `timeout -s TERM`, a closed terminal or Ctrl-C would
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "step", step)
    lines = []
    _, rows, completed = train_run(TrainConfig(**dict(TINY, epochs=3)), run_dir=run, progress=False, plots=False,
                                   log=lines.append)
    assert not completed and [r["epoch"] for r in rows] == [1]
    assert any(f"interrupted by {signal.Signals(signum).name}: checkpoint saved" in line for line in lines)
    state = load_npz(run / "checkpoint.npz")
    assert int(state["trainer.epoch"]) == 1 and int(state["trainer.batch_index"]) > 0
    monkeypatch.setattr(Trainer, "step", real_step)
    lines.clear()
    _, rows, completed = train_run(resume=run, progress=False, plots=False, log=lines.append)
    assert completed and [r["epoch"] for r in rows] == [1, 2, 3]
    assert any("resuming" in line and "at epoch 2, batch" in line for line in lines)


def test_one_stop_signal_class_for_training_and_reproduce():
    from vaelayer_np.tools import reproduce

    assert reproduce.StopSignals is signals.StopSignals and runs.StopSignals is signals.StopSignals
    with signals.StopSignals(second="count") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        assert stop.requested and stop.count == 2 and stop.signal_name == "SIGTERM" and stop.exit_code == 143
    with pytest.raises(KeyboardInterrupt):
        with signals.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop()
            os.kill(os.getpid(), signal.SIGTERM)  # a second one: stop at once


def test_timeout_sends_sigterm_to_a_real_training_process(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["train", "--epochs", "500", "--widths", "8", "--encoder-hidden", "0", "--limit", "200",
                    "--path", "readable", "--no-progress", "--no-plots", "--run-dir", str(run)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists()
                                          and (run / "metrics.jsonl").read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted by SIGTERM: checkpoint saved" in out, err
    done = int(load_npz(run / "checkpoint.npz")["trainer.epoch"])
    assert done >= 1
    lines = []
    train_run(resume=run, epochs=done + 1, progress=False, plots=False, log=lines.append)
    assert any(f"resuming {run} at epoch {done + 1}" in line for line in lines)


# ----------------------------------------------------------------------------- 5. a closed standard output
class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_never_stops_training(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    code = main(["train", "--run-dir", str(run), "--limit", "200", *TABLE_ARGS, "--epochs", "3"])
    monkeypatch.undo()
    assert code == 0
    assert int(load_npz(run / "checkpoint.npz")["trainer.epoch"]) == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    err = capsys.readouterr().err
    assert err.count("standard output was closed") == 1 and "the command goes on" in err


def test_train_piped_into_head(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["train", "--epochs", "4", "--widths", "8", "--encoder-hidden", "0", "--limit", "200",
                    "--path", "readable", "--no-progress", "--no-plots", "--run-dir", str(run)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "standard output was closed" in err and "Traceback" not in err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


# ----------------------------------------------------------------------------- 6. memory
def test_a_compressed_npz_that_expands_beyond_the_limit_is_refused_before_decompression(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((1000, 300)), y=np.zeros(1000))
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(tables, "MAX_DATA_BYTES", 1_000_000)
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("decompressed"))
    with pytest.raises(CorruptFileError, match=r"bomb\.npz: array X has shape \(1000, 300\) float64 \(2400000 "
                                               r"bytes\), more than the 1000000-byte limit"):
        load_table(path)


def test_an_npz_whose_header_lies_about_its_size_is_refused(tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("X.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (10 ** 6, 10 ** 6)})
        with zf.open("y.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros(3))
    with pytest.raises(CorruptFileError, match=r"lie\.npz: array X has shape \(1000000, 1000000\).*limit"):
        load_table(path)


def test_a_csv_is_read_in_memory_proportional_to_its_numbers(tmp_path):
    import sklearn.model_selection  # noqa: F401  (imports are not the reader's memory)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10000, 10))
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write(",".join(f"f{j}" for j in range(10)) + ",label\n")
        fh.writelines(",".join(f"{v:.6f}" for v in row) + f",{i % 3}\n" for i, row in enumerate(x))
    load_table(path)
    tracemalloc.start()
    try:
        load_table(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * path.stat().st_size  # the whole-text reader of before peaked at ~13x


def test_a_csv_with_more_numbers_than_the_limit_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "wide.csv"
    path.write_text("a,b,c,label\n" + "0,0,0,x\n0,1,0,y\n" * 200)
    monkeypatch.setattr(tables, "MAX_DATA_BYTES", path.stat().st_size + 1)
    with pytest.raises(CorruptFileError, match=r"wide\.csv: more than \d+ rows of 3 features: .* more than the "
                                               r"\d+-byte limit for a table's features \(MAX_DATA_BYTES\)"):
        load_table(path)


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(config):
        raise MemoryError("Unable to allocate 3.7 GiB for an array")

    monkeypatch.setattr(runs, "load_run_dataset", no_memory)
    assert main(["train", "--run-dir", str(tmp_path / "run"), *TABLE_ARGS]) == 1
    one_line_error(capsys, "vaelayer train: error: out of memory: Unable to allocate 3.7 GiB", "--limit")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 7. CSV syntax
def test_csv_syntax_cases(tmp_path):
    x, y = separable()
    cr = tmp_path / "cr.csv"
    cr.write_bytes(("a;b;label\r" + "".join(f"{x[i, 0]};{x[i, 1]};{y[i]}\r" for i in range(len(y)))).encode())
    assert load_table(cr).n_features == 2
    quoted = tmp_path / "semi.csv"
    quoted.write_text('"width, cm";"height";label\n' + "".join(f"{x[i, 0]};{x[i, 1]};{y[i]}\n"
                                                               for i in range(len(y))))
    assert read_table(quoted)[0] == ("width, cm", "height")
    tabs = write_csv(tmp_path / "tabs.csv", ["a", "b", "label"], [[*x[i, :2], y[i]] for i in range(len(y))], "\t")
    assert load_table(tabs).n_features == 2


@pytest.mark.parametrize("content, message", [
    ("a,label\n1," + "x" * 140_000 + "\n", r"line 2: a cell longer than 131072 characters"),
    ('a,label\n"1,never closed\n' + "2,y\n" * 10,
     r"row 1 has 1 cells, the header has 2 columns \(a cell spans several lines: a quote left open\?\)"),
    ("a,label\n1,x\n2,\x00y\n", r"(NUL byte|binary data)"),
    ("a,label\n1,x\n" + "2,\xff\n", r"not a UTF-8 text table"),
])
def test_csv_errors_are_named(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content.encode("utf-8", "surrogateescape") if "\xff" not in content
                     else content.encode("latin-1"))
    with pytest.raises(CorruptFileError, match=r"bad\.csv: .*" + message):
        load_table(path)
    assert main(["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TABLE_ARGS]) == 2
    one_line_error(capsys, "bad.csv")


# ----------------------------------------------------------------------------- 8. tampered model files
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    x, y = separable(60)
    clf = VAELayerClassifier(**{**FAST, "epochs": 2}).fit(x, np.array(["a", "b", "c"])[y])
    path = clf.save(tmp_path_factory.mktemp("model") / "model.npz")
    return path, load_npz(path), x


@pytest.mark.parametrize("key, value, message", [
    ("classes", np.array([["a"], ["b"], ["c"]]), r"entry 'classes' must be 3 strings .* shape \(3, 1\)"),
    ("classes", np.array(["c", "b", "a"]), r"entry 'classes' must hold distinct labels in sorted order"),
    ("latent_mean.0", np.zeros(5), r"entry 'latent_mean.0' must be floats of shape \(16,\)"),
    ("latent_std.1", np.full(16, -1.0), r"entry 'latent_std.1' holds -1.0; expected numbers >= 0"),
    ("mean", np.array([0.0, np.nan, 0.0]), r"entry 'mean' holds NaN or inf"),
    ("scale", np.zeros(3), r"entry 'scale' holds 0.0; expected numbers > 0"),
    ("params_json", np.array("[]"), r"entry 'params_json' must be a JSON object of settings, got list"),
    ("params_json", np.array('{"widths": "8,8"}'), r"entry 'params_json': widths: expected None"),
    ("params_json", np.array('{"colour": 1}'), r"entry 'params_json' holds parameters this version does not know"),
    ("format_version", np.array("1.5"), r"entry 'format_version' must be one integer"),
    ("format_version", np.array(2), r"a VAELayerClassifier file of format version 2"),
    ("n_classes", np.array(4), r"entry 'classes' must be 4 strings"),
    ("n_features_in", np.array(-3), r"entry 'n_features_in' is -3, expected an integer >= 1"),
    ("config_json", np.array('{"widths": [16, 16], "lr": -1}'), r"entry 'config_json' is not a valid configuration"),
    ("trainer/netA.vae0.W_mu", np.zeros((2, 2), np.float32), r"entry 'trainer/netA.vae0.W_mu' has shape \(2, 2\)"),
    ("validation_scores", np.array([2.0]), r"entry 'validation_scores' holds 2.0; expected numbers <= 1"),
])
def test_tampered_model_entries_are_named(tmp_path, saved_model, key, value, message):
    _, arrays, x = saved_model
    tampered = dict(arrays, **{key: value})
    path = tmp_path / "tampered.npz"
    save_npz_atomic(path, tampered)
    with pytest.raises(ValueError, match=r"tampered\.npz: " + message):
        VAELayerClassifier.load(path)


def test_a_missing_model_entry_is_named(tmp_path, saved_model):
    _, arrays, x = saved_model
    path = tmp_path / "short.npz"
    save_npz_atomic(path, {k: v for k, v in arrays.items() if k != "latent_std.0"})
    with pytest.raises(ValueError, match=r"short\.npz: missing entry 'latent_std.0'"):
        VAELayerClassifier.load(path)
    good = VAELayerClassifier.load(saved_model[0])
    assert good.predict(x[:4]).shape == (4,)


# ----------------------------------------------------------------------------- 9. options bounded and named
def test_thread_counts_are_bounded_by_the_cores(capsys):
    cores = machine.usable_cores()
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--threads", "10000"])
    assert exc.value.code == 2
    assert f"--threads: expected an integer in 1..{cores}" in capsys.readouterr().err
    assert main(["train", "--threads", "10000", *TABLE_ARGS]) == 2
    one_line_error(capsys, "--threads: 10000 threads is more than the")
    with pytest.raises(ValueError, match="n_threads: 10000 threads"):
        VAELayerClassifier(**FAST, n_threads=10000).fit(*separable())
    from vaelayer_np.fast.machine import blas_threads, limit_threads
    with limit_threads(10000):  # a stored setting from a larger machine: capped, not refused
        assert max(blas_threads()) <= cores


def test_a_config_from_a_larger_machine_is_read_with_this_machines_cores(tmp_path):
    run = tmp_path / "run"
    train_run(TrainConfig(**dict(TINY, epochs=1)), run_dir=run, **QUIET)
    config = json.loads((run / "config.json").read_text())
    config["threads"] = 4096
    (run / "config.json").write_text(json.dumps(config))
    assert runs.read_config(run).threads == machine.usable_cores()


def test_seeds_are_bounded_and_named(tmp_path, capsys):
    x, y = separable()
    path = write_csv(tmp_path / "t.csv", ["a", "label"], [[x[i, 0], y[i]] for i in range(len(y))])
    assert main(["train", "--data", str(path), "--seed", "99999999999999999999", *TABLE_ARGS]) == 2
    one_line_error(capsys, "--seed: expected an integer >= 0 and <= 4294967295")
    assert main(["train", "--data", str(path), "--seed", "4294967295", "--run-dir", str(tmp_path / "r"),
                 *TABLE_ARGS]) == 0
    with pytest.raises(SystemExit):
        main(["gradcheck", "--seed", "4294967296"])
    with pytest.raises(ValueError, match="random_state: expected None, an integer in 0..4294967295"):
        VAELayerClassifier(**{**FAST, "random_state": 2 ** 40}).fit(x, y)


@pytest.mark.parametrize("params, message", [
    ({"widths": "8,8"}, r"widths: expected None, a positive integer or a sequence of positive integers"),
    ({"widths": 8.7}, r"widths: .* got 8\.7"),
    ({"widths": (8, True)}, r"widths: "),
    ({"encoder_hidden": 2.5}, r"encoder_hidden: expected None or an integer >= 0"),
    ({"epochs": True}, r"epochs: expected a positive integer"),
    ({"lr": "0.1"}, r"lr: expected a finite number, got '0\.1'"),
    ({"beta": float("nan")}, r"beta: expected a finite number"),
    ({"activation": 3}, r"activation: unknown option 3"),
    ({"backend": "cuda"}, r"backend: unknown option 'cuda'"),
    ({"verbose": -1}, r"verbose: expected an integer >= 0"),
    ({"standardize": "yes"}, r"standardize: expected True or False"),
])
def test_estimator_parameters_are_checked_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        VAELayerClassifier(**{**FAST, **params}).fit(*separable())


def test_model_memory_is_checked_before_allocation(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--widths", "100000000", "--run-dir", str(run)]) == 2
    one_line_error(capsys, "--widths: the model of widths 100000000", "TB of memory, more than the")
    assert main(["train", "--encoder-hidden", "1000000000", "--run-dir", str(run)]) == 2
    one_line_error(capsys, "--encoder-hidden: the model of widths 64,64,64, encoder_hidden 1000000000")
    assert not run.exists()
    with pytest.raises(ValueError, match=r"widths: the model of widths 100000000"):
        VAELayerClassifier(**{**FAST, "widths": 100000000}).fit(*separable())


def test_symbolic_link_loops_and_dangling_links_are_named(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for command in (["train", "--run-dir", str(loop), *TABLE_ARGS], ["evaluate", str(loop)],
                    ["train", "--resume", str(loop)]):
        assert main(command) == 2
        one_line_error(capsys, str(loop), "a loop of symbolic links")
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    assert main(["train", "--run-dir", str(dangling), *TABLE_ARGS]) == 2
    one_line_error(capsys, "is a symbolic link to", "which does not exist")


def test_reproduce_report_only_on_a_folder_without_runs(tmp_path, capsys):
    typo = tmp_path / "typo"
    assert main(["reproduce", "--report-only", "--out", str(typo)]) == 2
    one_line_error(capsys, f"--out: {typo} does not exist")
    assert not typo.exists()
    typo.mkdir()
    assert main(["reproduce", "--report-only", "--out", str(typo)]) == 2
    one_line_error(capsys, "holds no runs of the experiments")
    assert list(typo.iterdir()) == []


def test_non_utf8_npz_labels_name_the_file(tmp_path):
    x, y = separable()
    np.savez(tmp_path / "bytes.npz", X=x, y=np.array([b"ok", b"\xff\xfe", b"no"])[y])
    with pytest.raises(CorruptFileError, match=r"bytes\.npz: y\[1\] holds bytes that are not UTF-8 text"):
        load_table(tmp_path / "bytes.npz")
