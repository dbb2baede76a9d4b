"""The command line: every command writes what it promises; bad input gives clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaelayer_np.cli import build_parser, main
from vaelayer_np.run.checkpoint import CheckpointError, load_npz, save_npz_atomic

from .test_data import write_idx_set

QUICK = ["--epochs", "2", "--widths", "16,16", "--limit", "300", "--encoder-hidden", "0", "--no-progress"]


@pytest.mark.slow
def test_train_writes_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), *QUICK]) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.npz", "local_losses.png", "accuracy.png",
                 "reconstructions.png", "samples.png"):
        assert (run / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("layer0_recon", "layer0_kl", "layer0_cos", "layer1_loss", "output_loss", "train_acc", "val_acc",
                "test_acc", "seconds"):
        assert key in rows[0]
    config = json.loads((run / "config.json").read_text())
    assert config["widths"] == [16, 16] and config["dataset"] == "digits"
    out = capsys.readouterr().out
    assert "plots:" in out and str(run) in out

    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] == pytest.approx(rows[-1]["test_acc"])

    (run / "accuracy.png").unlink()
    assert main(["plot", str(run)]) == 0
    assert (run / "accuracy.png").exists()


@pytest.mark.slow
def test_resume_extends_a_finished_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-plots", *QUICK]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--no-plots"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert main(["train", "--resume", str(run), "--lam", "2"]) == 2


@pytest.mark.slow
def test_resume_may_change_the_path_threads_and_data_dir_and_says_when_complete(tmp_path, capsys):
    """The settings a resume may change are accepted on the command line (saved to config.json); a
    finished run resumed without more epochs says it is complete."""
    write_idx_set(tmp_path / "data", n_train=64, n_test=16)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--run-dir", str(run),
                 "--no-plots", "--path", "fast", *QUICK]) == 0
    (tmp_path / "data").rename(tmp_path / "moved")  # the user's data folder moved
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--data-dir", str(tmp_path / "moved"),
                 "--path", "readable", "--threads", "2", "--no-progress", "--no-plots"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["path"], config["threads"], config["epochs"]) == ("readable", 2, 3)
    assert config["data_dir"] == str(tmp_path / "moved")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress", "--no-plots"]) == 0
    assert "already complete (3 of 3 epochs)" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "only --data-dir, --epochs, --parallel, --path, --threads may be given (got --seed)" in err


@pytest.mark.slow
def test_compare_plot_for_two_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--run-dir", str(a), "--no-plots", *QUICK]) == 0
    assert main(["train", "--run-dir", str(b), "--method", "backprop", "--no-plots", *QUICK]) == 0
    assert main(["plot", str(a), str(b), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "compare.png").exists()


@pytest.mark.slow
def test_train_on_idx_files(tmp_path):
    write_idx_set(tmp_path / "data", n_train=64, n_test=16)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--run-dir", str(run),
                 "--no-plots", *QUICK]) == 0
    assert (run / "checkpoint.npz").exists()


@pytest.mark.parametrize("args, message", [
    (["evaluate", "no/such/run"], "no/such/run: no such folder"),
    (["train", "--resume", "no/such/run"], "no/such/run: no such folder"),
    (["train", "--pairing", "shuffled"], "pairing: unknown option 'shuffled'"),
    (["train", "--activation", "swish"], "activation: unknown option 'swish'"),
    (["train", "--lr", "-1"], "lr: expected a finite number > 0"),
    (["train", "--margin", "3"], "margin: expected a number in [-1, 1]"),
    (["train", "--dataset", "mnist"], "mnist: no IDX files found"),
    (["evaluate", str(Path(__file__).parent)], "not a run folder (no config.json)"),
    (["train", "--limit", "0"], "limit: expected a positive integer"),
    (["train", "--epochs", "0"], "epochs: expected a positive integer"),
    (["train", "--margin", "nan"], "margin: expected a number in [-1, 1]"),
    (["train", "--data-dir", "/nonexistent", "--dataset", "mnist"], "is not a folder"),
])
def test_bad_options_give_clear_errors(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("widths", ["64,x", "4,,4", "4,", ",4", "0,4", " "])
def test_bad_widths_is_a_usage_error(capsys, widths):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--widths", widths])
    assert exc.value.code == 2
    assert "--widths" in capsys.readouterr().err


def test_run_folder_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-plots", *QUICK]) == 0
    assert main(["train", "--run-dir", str(run), *QUICK]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_corrupt_checkpoint_is_reported(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-plots", *QUICK]) == 0
    ckpt = run / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    assert main(["evaluate", str(run)]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_checkpoints_refuse_pickles_and_are_atomic(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(ValueError, match="object array"):
        save_npz_atomic(path, {"bad": np.array([{"a": 1}], dtype=object)})
    assert not path.exists() and not list(tmp_path.iterdir())  # no temporary file left behind
    np.savez(path, bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError):
        load_npz(path)


def test_gradcheck_command(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "VAELayer" in out and "FAIL" not in out and "0 failed" in out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "vaelayer_np", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "gradcheck" in out.stdout


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    """A real SIGINT to a training process: it stops between two steps, saves, and resumes."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaelayer_np", "train", "--epochs", "500", "--widths", "16", "--encoder-hidden", "0",
           "--no-progress", "--no-plots", "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT: checkpoint saved" in out
    state = load_npz(run / "checkpoint.npz")
    done_epochs = int(state["trainer.epoch"])
    assert 1 <= done_epochs < 500
    assert main(["train", "--resume", str(run), "--epochs", str(done_epochs + 1), "--no-progress", "--no-plots"]) == 0
    assert len(metrics.read_text().splitlines()) == done_epochs + 1


@pytest.mark.slow
def test_reproduce_writes_a_table_from_the_runs(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "--out", str(out), "--only", "digits-iffcl,digits-backprop", "--quick",
                 "--digits-seeds", "0"]) == 0
    table = (out / "results.md").read_text()
    lines = table.splitlines()  # the results table, the page's first (the ablation table below repeats names)
    start = next(i for i, line in enumerate(lines) if line.startswith("| experiment | what |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [line for line in lines[start:end] if line.startswith("| digits")]
    assert len(rows) == 2
    last_test = float(rows[0].split("|")[5])
    metrics = [json.loads(line) for line in (out / "digits-iffcl" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert last_test == pytest.approx(100 * metrics[-1]["test_acc"], abs=0.006)
    assert (out / "compare-digits.png").exists()
    assert main(["reproduce", "--out", str(out), "--only", "nope"]) == 2


@pytest.mark.slow
def test_bench_command_prints_medians_and_ratios(capsys):
    assert main(["bench", "--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "numba/numpy" in out and "numba/matmuls" in out
    assert "encoder hidden layer 1024" in out


def test_checkpoint_of_another_shape_or_missing_entries(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-plots", *QUICK]) == 0
    state = load_npz(run / "checkpoint.npz")
    rng_state = state.pop("trainer.rng")
    save_npz_atomic(run / "checkpoint.npz", state)
    assert main(["evaluate", str(run)]) == 2
    assert "missing entry 'trainer.rng'" in capsys.readouterr().err
    state["trainer.rng"] = rng_state
    state["netA.vae0.W_mu"] = np.zeros((3, 3), np.float32)
    save_npz_atomic(run / "checkpoint.npz", state)
    assert main(["evaluate", str(run)]) == 2
    assert "has shape (3, 3)" in capsys.readouterr().err


def test_the_training_path_has_its_name_and_the_old_backend_spelling_still_works():
    """``path`` ("readable" or "fast") names the trainer's choice; ``backend="numpy"``/``"numba"`` (and
    ``--backend``), its old spelling, still work with a DeprecationWarning; a saved config.json that says
    backend is read as the path it meant, without a warning (a file is not code to fix)."""
    import warnings

    from vaelayer_np.core.iffcl import ReadablePath
    from vaelayer_np.core.settings import REMOVED_IN
    from vaelayer_np.fast.parallel import training_path
    from vaelayer_np.fast.training import FastPath
    from vaelayer_np.run.config import TrainConfig

    assert TrainConfig(path="readable").path == "readable" and "backend" not in TrainConfig().to_dict()
    for old, new in (("numpy", "readable"), ("numba", "fast")):
        with pytest.warns(DeprecationWarning, match=f"backend='{old}' is now path='{new}'.*{REMOVED_IN}"):
            assert TrainConfig(backend=old).path == new
        with pytest.warns(DeprecationWarning, match="training_path"):
            assert isinstance(training_path(old, threads=1), ReadablePath if new == "readable" else FastPath)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert TrainConfig.from_dict({"dataset": "digits", "backend": old}).path == new
    with pytest.raises(ValueError, match="contradicts"), pytest.warns(DeprecationWarning):
        TrainConfig(backend="numpy", path="fast")
    with pytest.raises(ValueError, match="path: unknown option"):
        TrainConfig(path="numba").validate()
    parser = build_parser()
    assert parser.parse_args(["train", "--path", "readable"]).path == "readable"
    assert parser.parse_args(["train", "--backend", "numpy"]).backend == "numpy"


def test_the_old_backend_option_resumes_a_run_as_the_path_it_meant(tmp_path, capsys):
    """``vaelayer train --resume RUN --backend numpy``, the old spelling, is ``--path readable`` (with a warning
    on stderr), also where a resume refuses every other setting."""
    run = tmp_path / "run"
    quick = ["--limit", "64", "--widths", "4", "--encoder-hidden", "0", "--no-progress", "--no-plots"]
    assert main(["train", "--run-dir", str(run), "--epochs", "1", "--path", "fast", *quick]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--backend", "numpy", "--no-progress",
                 "--no-plots"]) == 0
    assert "--backend: backend='numpy' is now path='readable'" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["path"] == "readable"
