"""Run folders under faults: nothing a user has is lost, and every bad input is named.

Each test trains tiny runs (digits, 200 examples, one VAE layer of width 8, a linear
encoder, the readable path) so that a run takes well under a second in-process.
"""
import fcntl
import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelayer_np.cli import main
from vaelayer_np.run.checkpoint import CheckpointError, load_npz, read_jsonl, save_npz_atomic
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.runs import load_run_dataset, load_trainer, read_metrics, train_run
from vaelayer_np.run.trainer import DivergenceError, Trainer

TINY = dict(dataset="digits", limit=200, widths=(8,), encoder_hidden=0, epochs=2, path="readable")
TINY_ARGS = ["--limit", "200", "--widths", "8", "--encoder-hidden", "0", "--path", "readable", "--no-progress",
             "--no-plots"]
QUIET = dict(progress=False, plots=False, log=lambda *a: None)


def tiny_run(run_dir, **overrides):
    settings_ = dict(TINY, **overrides)
    return train_run(TrainConfig(**settings_), run_dir=run_dir, **QUIET)


def metric_epochs(run_dir):
    return [r["epoch"] for r in read_jsonl(Path(run_dir) / "metrics.jsonl").rows]


def run_cli(args, **kwargs):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "vaelayer_np", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kwargs)


# ----------------------------------------------------------------------------- 1. data never lost
@pytest.mark.slow
def test_torn_metrics_line_is_dropped_for_resume_evaluate_and_plot(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "layer0_re')  # a crash in the middle of an append
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    assert main(["evaluate", str(run)]) == 0
    assert main(["plot", str(run)]) == 0
    assert (run / "accuracy.png").exists()
    _, rows, done = train_run(resume=run, epochs=3, **QUIET)
    assert done and [r["epoch"] for r in rows] == [1, 2, 3]
    assert metric_epochs(run) == [1, 2, 3]
    assert not read_jsonl(run / "metrics.jsonl").torn


def test_rows_beyond_the_checkpoint_are_dropped_and_redone(tmp_path):
    run = tmp_path / "run"
    tiny_run(run)
    fake = {"epoch": 3, "output_loss": -1.0}  # a row whose checkpoint save never happened (a crash in between)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(fake) + "\n")
    _, rows, _ = train_run(resume=run, epochs=3, **QUIET)
    assert metric_epochs(run) == [1, 2, 3]
    assert read_jsonl(run / "metrics.jsonl").rows[-1]["output_loss"] > 0


def test_folder_that_is_not_a_run_is_refused_before_anything_is_written(tmp_path, capsys):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    assert main(["train", "--run-dir", str(folder), *TINY_ARGS, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "not empty and is not a run folder" in err and "chapter1.tex" in err
    assert sorted(p.name for p in folder.iterdir()) == ["chapter1.tex"]
    assert (folder / "chapter1.tex").read_text() == "precious"


def test_a_folder_with_a_foreign_config_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text('{"editor": "vim"}')
    assert main(["train", "--run-dir", str(folder), *TINY_ARGS, "--epochs", "1"]) == 2
    assert "is not a vaelayer configuration" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["config.json"]


def test_an_empty_existing_folder_is_fine(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    _, rows, done = tiny_run(folder, epochs=1)
    assert done and len(rows) == 1


def _hold_lock(run):
    fd = os.open(run / "run.lock", os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_second_process_on_a_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    before = (run / "metrics.jsonl").read_bytes(), (run / "checkpoint.npz").read_bytes()
    fd = _hold_lock(run)  # as another process training in the folder would
    try:
        with pytest.raises(CheckpointError, match="another process is training in this run folder") as exc:
            train_run(resume=run, epochs=2, **QUIET)
        assert str(run) in str(exc.value) and "\n" not in str(exc.value)
        empty = tmp_path / "new"
        empty.mkdir()
        fd2 = _hold_lock(empty)  # two new runs into one folder
        try:
            assert main(["train", "--run-dir", str(empty), *TINY_ARGS, "--epochs", "1"]) == 2
            assert "another process is training" in capsys.readouterr().err
            assert not (empty / "config.json").exists()
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
    assert ((run / "metrics.jsonl").read_bytes(), (run / "checkpoint.npz").read_bytes()) == before
    train_run(resume=run, epochs=2, **QUIET)  # the lock released, the resume goes on
    assert metric_epochs(run) == [1, 2]


def test_orphaned_temporary_files_are_removed_at_resume(tmp_path):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    orphans = [run / "metrics.jsonl.ab12cd34.tmp", run / "checkpoint.npz.zz99yy88.tmp",
               run / "config.json.q1w2e3r4.tmp"]
    for path in orphans:
        path.write_bytes(b"half a file")
    (run / "notes.tmp").write_text("not ours")  # a name our saves never use: left alone
    train_run(resume=run, epochs=2, **QUIET)
    assert not any(p.exists() for p in orphans)
    assert (run / "notes.tmp").exists()


@pytest.mark.slow
def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        run = tmp_path / "run"
        train_run(TrainConfig(**dict(TINY, epochs=1)), run_dir=run, progress=False, plots=True, log=lambda *a: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.stat().st_mode) == 0o750
    for path in run.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


# ----------------------------------------------------------------------------- 2. resume as a different model
@pytest.mark.parametrize("setting, value", [("activation", "tanh"), ("seed", 5), ("method", "backprop"),
                                            ("dtype", "float64"), ("lr", 0.5), ("widths", [8, 8])])
def test_an_edited_config_is_refused_naming_the_setting(tmp_path, capsys, setting, value):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    config = json.loads((run / "config.json").read_text())
    config[setting] = value
    (run / "config.json").write_text(json.dumps(config))
    for call in (lambda: train_run(resume=run, epochs=2, **QUIET), lambda: load_trainer(run)):
        with pytest.raises(ValueError, match=rf"^{setting}: config.json says {setting}="):
            call()
    assert metric_epochs(run) == [1]


def test_resuming_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(run, epochs=2)
    config_before = (run / "config.json").read_text()
    assert main(["train", "--resume", str(run), "--epochs", "1", "--no-progress", "--no-plots"]) == 2
    assert "--epochs: 1 is fewer than the 2 epochs" in capsys.readouterr().err
    assert (run / "config.json").read_text() == config_before
    assert metric_epochs(run) == [1, 2]


def _tampered(state, key, value):
    state = dict(state)
    state[key] = value
    return state


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run interrupted in the middle of its second epoch (so the epoch order is saved)."""
    run = tmp_path_factory.mktemp("saved") / "run"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 9  # 7 steps per epoch: stop before step 3 of epoch 2

    train_run(TrainConfig(**dict(TINY, epochs=3)), run_dir=run, should_stop=stop, **QUIET)
    state = load_npz(run / "checkpoint.npz")
    assert int(state["trainer.epoch"]) == 1 and int(state["trainer.batch_index"]) > 0
    return run, state


@pytest.mark.parametrize("key, value, message", [
    ("trainer.epoch", np.array(-3), "'trainer.epoch' is -3"),
    ("trainer.epoch", np.array(1.5), "'trainer.epoch' must be one integer"),
    ("trainer.batch_index", np.array(99), "'trainer.batch_index' is 99"),
    ("trainer.batch_index", np.array([1, 2]), "'trainer.batch_index' must be one integer"),
    ("trainer.epoch_order", np.zeros(180, np.int64), "'trainer.epoch_order' is not a permutation"),
    ("trainer.epoch_order", np.arange(190), "'trainer.epoch_order' orders 190 examples"),
    ("trainer.rng", np.array("{}"), "'trainer.rng' is not a random generator state"),
    ("trainer.rng", np.array("[1, 2"), "'trainer.rng' is not valid JSON"),
    ("trainer.epoch_sums", np.array('{"output_loss": NaN}'), "'trainer.epoch_sums'"),
    ("trainer.config", np.array("3"), "'trainer.config'"),
    ("opt.A.vae0.t", np.array(-1), "'opt.A.vae0.t' is -1"),
    ("opt.A.vae0.t", np.array(3), "'opt.A.vae0.t' is 3"),
    ("opt.B.output.m.W", np.full((8, 10), np.nan, np.float32), "'opt.B.output.m.W' contains NaN or inf"),
    ("opt.A.vae0.v.W_mu", -np.ones((64, 8), np.float32), "'opt.A.vae0.v.W_mu' has negative values"),
    ("opt.A.vae0.m.W_mu", np.zeros((64, 8), np.float64), "'opt.A.vae0.m.W_mu' has dtype float64"),
    ("opt.A.vae0.m.W_mu", np.zeros((8, 64), np.float32), "'opt.A.vae0.m.W_mu' has shape (8, 64)"),
    ("netA.vae0.W_mu", np.full((64, 8), np.inf, np.float32), "'netA.vae0.W_mu' contains NaN or inf"),
])
def test_tampered_checkpoint_entries_are_named(saved_run, tmp_path, key, value, message):
    run, state = saved_run
    config = TrainConfig(**dict(TINY, epochs=3)).validate()
    dataset = load_run_dataset(config)
    trainer = Trainer(config, dataset.n_features, dataset.n_classes)
    with pytest.raises(ValueError) as exc:
        trainer.load_state_dict(_tampered(state, key, value))
        trainer.train_epoch(dataset.x_train, dataset.y_train)  # counters that only the data can check
    assert message in str(exc.value)


_MUTATIONS = ("delete", "shape", "dtype", "nan", "value")


@pytest.mark.slow
@settings(max_examples=40)
@given(index=st.integers(0, 10_000), mutation=st.sampled_from(_MUTATIONS), scale=st.sampled_from([-1e9, -1, 0, 2, 1e9]))
def test_fuzz_one_tampered_entry_gives_a_named_value_error(saved_run, index, mutation, scale):
    run, state = saved_run
    keys = sorted(state)
    key = keys[index % len(keys)]
    state = dict(state)
    value = state[key]
    if mutation == "delete":
        del state[key]
    elif mutation == "shape":
        state[key] = np.zeros(value.shape + (2,), value.dtype) if value.dtype.kind != "U" else np.array(["{}", "{}"])
    elif mutation == "dtype":
        state[key] = value.astype(np.complex64) if value.dtype.kind != "U" else np.array(1.0)
    elif mutation == "nan":
        state[key] = np.full(value.shape, np.nan) if value.dtype.kind != "U" else np.array("NaN")
    else:  # a different value of the same kind
        if value.dtype.kind == "U":
            state[key] = np.array(json.dumps(scale))
        else:
            changed = np.array(value, copy=True)
            changed.reshape(-1)[:1] = scale
            state[key] = changed
    config = TrainConfig(**dict(TINY, epochs=3)).validate()
    dataset = _dataset(config)
    trainer = Trainer(config, dataset.n_features, dataset.n_classes)
    try:
        trainer.load_state_dict(state)
        trainer.accuracy(dataset.x_test, dataset.y_test)
        trainer.train_epoch(dataset.x_train, dataset.y_train)
    except DivergenceError:
        assert mutation == "value"  # a legal but huge parameter may make training diverge: named as such
        return
    except ValueError as exc:
        assert key in str(exc) or key.split(".")[-1] in str(exc), (key, mutation, str(exc))
        return
    assert mutation == "value", f"{mutation} of {key} was accepted"


_DATASETS = {}


def _dataset(config):
    if "tiny" not in _DATASETS:
        _DATASETS["tiny"] = load_run_dataset(config)
    return _DATASETS["tiny"]


# ----------------------------------------------------------------------------- 3. divergence
def test_divergence_is_reported_and_the_last_good_state_kept(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    checkpoint_before = (run / "checkpoint.npz").read_bytes()
    metrics_before = (run / "metrics.jsonl").read_bytes()
    real_step = Trainer.step

    def step(self, x, y):
        m = real_step(self, x, y)
        if self.epoch == 1 and self.batch_index == 3:
            m["layer0_kl"] = float("nan")
        return m

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(DivergenceError) as exc:
        train_run(resume=run, epochs=3, **QUIET)
    text = str(exc.value)
    assert "diverged at epoch 2, step 4/7, layer vae0" in text and "'layer0_kl'" in text and "--lr" in text
    assert exc.value.epoch == 2 and exc.value.step == 4 and exc.value.layer == "vae0"
    assert (run / "checkpoint.npz").read_bytes() == checkpoint_before
    assert (run / "metrics.jsonl").read_bytes() == metrics_before
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--no-plots"]) == 1
    assert "training diverged" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_divergence_exits_non_zero_without_traceback(tmp_path):
    run = tmp_path / "run"
    out = run_cli(["train", "--run-dir", str(run), *TINY_ARGS, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e6",
                   "--output-lr", "1e6"])
    assert out.returncode == 1, out.stderr
    assert "training diverged at epoch 1" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (run / "checkpoint.npz").exists()


def test_checkpoint_with_nan_weights_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    state = load_npz(run / "checkpoint.npz")
    state["netB.output.W"] = np.array(state["netB.output.W"])
    state["netB.output.W"][0, 0] = np.nan
    save_npz_atomic(run / "checkpoint.npz", state)
    assert main(["evaluate", str(run)]) == 2
    assert "'netB.output.W' contains NaN or inf" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4. empty validation split
@pytest.mark.slow
def test_an_empty_validation_split(tmp_path, capsys):
    run = tmp_path / "run"
    _, rows, done = train_run(TrainConfig(**dict(TINY, val_fraction=0.0)), run_dir=run, progress=False, plots=True,
                              log=lambda *a: None)
    assert done and all(r["val_acc"] is None for r in rows)
    assert all(r["val_acc"] is None for r in read_jsonl(run / "metrics.jsonl").rows)
    assert (run / "accuracy.png").exists()
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_acc"] is None and 0 <= result["test_acc"] <= 1
    assert main(["evaluate", str(run)]) == 0
    assert "validation - (empty split)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 5. options
@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed: expected an integer >= 0"),
    (["--val-fraction", "0.9"], "--val-fraction: expected a number in [0, 0.5]"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer"),
    (["--data-dir", "/nonexistent/data", "--dataset", "mnist"], "is not a folder"),
])
def test_bad_options_create_nothing(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), *args]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_bench_repeats_zero_is_refused_up_front(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--repeats", "0"])
    assert exc.value.code == 2
    assert "--repeats: expected a positive integer" in capsys.readouterr().err


def test_run_folder_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "afile"
    path.write_text("keep me")
    assert main(["train", "--run-dir", str(path), *TINY_ARGS]) == 2
    assert f"{path}: is a file, not a run folder" in capsys.readouterr().err
    for command in (["evaluate", str(path)], ["train", "--resume", str(path)], ["plot", str(path)]):
        assert main(command) == 2
        assert "is a file, not a run folder" in capsys.readouterr().err
    assert path.read_text() == "keep me"


# ----------------------------------------------------------------------------- 6. file system
@pytest.mark.slow
def test_a_file_in_the_path_is_one_line_and_debug_shows_the_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "run"
    out = run_cli(["train", "--run-dir", str(target), *TINY_ARGS, "--epochs", "1"])
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert str(target) in out.stderr and "file where a folder should be" in out.stderr
    out = run_cli(["--debug", "train", "--run-dir", str(target), *TINY_ARGS, "--epochs", "1"])
    assert out.returncode != 0 and "Traceback" in out.stderr


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    tiny_run(run, epochs=1)
    size = (run / "checkpoint.npz").stat().st_size
    out = run_cli(["train", "--resume", str(run), "--epochs", "2", "--no-progress", "--no-plots"],
                  preexec_fn=_limit_file_size(size // 2))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "file-size limit" in out.stderr and "checkpoint.npz" in out.stderr
    assert int(load_npz(run / "checkpoint.npz")["trainer.epoch"]) == 1  # the previous checkpoint, intact
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    train_run(resume=run, epochs=2, **QUIET)  # without the limit the run goes on
    assert metric_epochs(run) == [1, 2]


# ----------------------------------------------------------------------------- 7. trainer API misuse
def test_trainer_misuse_is_named():
    config = TrainConfig(**TINY)
    with pytest.raises(ValueError, match="n_features: expected an integer >= 1"):
        Trainer(config, n_features=0, n_classes=10)
    with pytest.raises(ValueError, match="n_classes: expected an integer >= 2"):
        Trainer(config, n_features=64, n_classes=1)
    trainer = Trainer(config, n_features=64, n_classes=10)
    x = np.random.default_rng(0).random((40, 64)).astype(np.float32)
    y = np.arange(40) % 10
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 10\)"):
        trainer.train_epoch(x, y + 5)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 64\), got \(40, 63\)"):
        trainer.train_epoch(x[:, :63], y)
    with pytest.raises(ValueError, match="y: expected shape"):
        trainer.train_epoch(x, y[:-1])
    assert trainer.train_epoch(x, y) is not None  # nothing was changed by the refused calls
    assert trainer.epoch == 1


# ----------------------------------------------------------------------------- kills during writes
def _train_until_killed(run, first):
    """Child process: train (a new run, or a resume) for far longer than the test waits."""
    if first:
        train_run(TrainConfig(**dict(TINY, epochs=10_000)), run_dir=run, **QUIET)
    else:
        train_run(resume=run, **QUIET)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    """SIGKILL a training process at random moments (also inside the writes); every resume works.

    The child is forked from this process (no interpreter start-up), and killed a random
    0-0.3 s after its first checkpoint replacement, which lands anywhere in an epoch of
    this tiny run: in a step, in the metrics append, in the checkpoint write.
    """
    import multiprocessing

    run = tmp_path / "run"
    checkpoint = run / "checkpoint.npz"
    chooser = random.Random(20261125)
    context = multiprocessing.get_context("fork")
    tiny_run(tmp_path / "warm-up", epochs=1)  # every lazy import done once, before the forks
    for attempt in range(8):
        start = checkpoint.stat().st_ino if checkpoint.exists() else None
        child = context.Process(target=_train_until_killed, args=(run, attempt == 0))
        child.start()
        deadline = time.time() + 120
        while (time.time() < deadline and child.is_alive()
               and not (checkpoint.exists() and checkpoint.stat().st_ino != start)):
            time.sleep(0.002)
        time.sleep(chooser.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=60)
        assert child.exitcode == -signal.SIGKILL
        epoch = int(load_npz(checkpoint)["trainer.epoch"])  # always a whole checkpoint
        epochs = metric_epochs(run)  # a torn last line is dropped, never fatal
        assert epochs in (list(range(1, epoch + 1)), list(range(1, epoch + 2))), (epoch, epochs)
    done = int(load_npz(checkpoint)["trainer.epoch"]) + 1
    assert main(["train", "--resume", str(run), "--epochs", str(done), "--no-progress", "--no-plots"]) == 0
    assert metric_epochs(run) == list(range(1, done + 1))
    assert not read_jsonl(run / "metrics.jsonl").torn
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
