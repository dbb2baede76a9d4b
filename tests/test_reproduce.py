"""``vaelayer reproduce``: seeds, aggregation from metrics files, parallel runs, resume and Ctrl-C."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vaelayer_np.cli import main
from vaelayer_np.tools import reproduce

THREADS = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _write_rows(folder, accs):
    """A fake run: one metrics row per (val, test) pair."""
    folder.mkdir(parents=True)
    rows = [{"epoch": i + 1, "val_acc": v, "test_acc": t, "train_acc": 1.0, "seconds": 2.0}
            for i, (v, t) in enumerate(accs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _table_row(page, name):
    """The row of ``name`` in the results table (the page's first table: the ablation's table below it may
    repeat an experiment's name, with other columns)."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| experiment | what |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [line for line in lines[start:end] if line.startswith(f"| {name} ") or line.startswith(f"| {name}*")]
    assert len(rows) == 1, page
    return [cell.strip() for cell in rows[0].split("|")[1:-1]]


def test_aggregate_mean_std_and_missing_seeds(tmp_path):
    name = "digits-backprop"
    # seed 0: best validation at epoch 2 (test 0.90), last test 0.80; seed 1: best at epoch 1; seed 2 unfinished
    _write_rows(tmp_path / name / "seed0", [(0.5, 0.95), (0.9, 0.90), (0.7, 0.80)])
    _write_rows(tmp_path / name / "seed1", [(0.8, 0.70), (0.6, 0.99), (0.6, 0.60)])
    _write_rows(tmp_path / name / "seed2", [(0.8, 0.70)])
    agg = reproduce.aggregate(tmp_path, name, [0, 1, 2, 3], expected_epochs=3)
    assert agg["n"] == 2
    assert agg["missing"] == [(2, "unfinished (1/3 epochs)"), (3, "not run")]
    assert agg["last_test"] == pytest.approx((0.70, np.std([0.8, 0.6], ddof=1)))
    # chosen on validation, never on test: not 0.95 or 0.99
    assert agg["test_at_best_val"] == pytest.approx((0.80, np.std([0.9, 0.7], ddof=1)))
    assert agg["best_val"][0] == pytest.approx(0.85)
    assert agg["seconds"] == pytest.approx((6.0, 0.0))
    assert reproduce.mean_std([0.5])[0] == 0.5 and math.isnan(reproduce.mean_std([0.5])[1])
    assert all(math.isnan(v) for v in reproduce.mean_std([]))


def test_report_from_fake_runs_names_missing_seeds_and_chooses_on_validation(tmp_path):
    # two grid points: lr2e-3 has the better validation, the default the better test
    _write_rows(tmp_path / "digits-backprop" / "seed0", [(0.80, 0.99)])
    _write_rows(tmp_path / "digits-backprop" / "seed1", [(0.82, 0.97)])
    _write_rows(tmp_path / "digits-backprop-lr2e-3" / "seed0", [(0.90, 0.91)])
    _write_rows(tmp_path / "digits-iffcl" / "seed0", [(0.95, 0.96)])
    names = ["digits-backprop", "digits-backprop-lr2e-3", "digits-iffcl"]
    seeds = [0, 1, 2]
    chosen = reproduce.choose(tmp_path, names, seeds, epochs_override=1)
    assert chosen == {"digits-backprop": "digits-backprop-lr2e-3", "digits-iffcl": "digits-iffcl"}
    page, _ = reproduce.build_report(tmp_path, names, seeds, 1, chosen, "cmd", 0.0)
    cells = _table_row(page, "digits-backprop")
    assert cells[2] == "2/3" and cells[4] == "98.00 ± 1.41" and cells[8] == "2: not run"
    cells = _table_row(page, "digits-backprop-lr2e-3 **chosen**")
    assert cells[4] == "91.00" and "1: not run" in cells[8]
    # the gap is taken seed by seed between the chosen points: 0.96 - 0.91 on seed 0
    assert "* last-epoch test: 5.00 points" in page
    # nothing at all: a table of missing seeds, no crash
    empty = tmp_path / "empty"
    page, _ = reproduce.build_report(empty, names, seeds, 1, {}, "cmd", 0.0)
    assert _table_row(page, "digits-iffcl")[8].startswith("0: not run")


def test_bad_options_are_value_errors(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown experiments ['nope']" in capsys.readouterr().err
    assert main(["reproduce", "--out", str(tmp_path), "--seeds", "0,x"]) == 2
    assert "--seeds: expected comma-separated integers" in capsys.readouterr().err
    assert main(["reproduce", "--out", str(tmp_path), "--jobs", "0"]) == 2


def _reproduce_cmd(out, *extra):
    return [sys.executable, "-m", "vaelayer_np", "reproduce", "--out", str(out), "--only", "digits-iffcl",
            "--digits-seeds", "0,1", "--jobs", "2", *extra]


@pytest.mark.slow
def test_two_seeds_two_jobs_table_and_resume(tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "--out", str(out), "--only", "digits-iffcl,digits-logreg", "--digits-seeds", "0,1",
            "--jobs", "2", "--epochs", "2", "--limit", "300"]
    assert main(args) == 0
    page = (out / "results.md").read_text()
    per_seed = [[json.loads(line) for line in (out / "digits-iffcl" / f"seed{s}" / "metrics.jsonl").read_text()
                 .splitlines()] for s in (0, 1)]
    assert [len(rows) for rows in per_seed] == [2, 2]
    last = [100 * rows[-1]["test_acc"] for rows in per_seed]
    cells = _table_row(page, "digits-iffcl **chosen**")
    assert cells[2] == "2/2" and cells[3] == "2" and cells[8] == "none"
    assert cells[4] == f"{np.mean(last):.2f} ± {np.std(last, ddof=1):.2f}"
    assert _table_row(page, "digits-logreg")[2] == "2/2"
    assert "commit:" in page and "machine:" in page and "--digits-seeds 0,1" in page

    # a lost metrics line (after the checkpoint): that seed alone is trained again, to the same figures
    seed0_mtime = (out / "digits-iffcl" / "seed0" / "checkpoint.npz").stat().st_mtime_ns
    metrics1 = out / "digits-iffcl" / "seed1" / "metrics.jsonl"
    metrics1.write_text(metrics1.read_text().splitlines(keepends=True)[0])
    assert main(args) == 0
    assert (out / "digits-iffcl" / "seed0" / "checkpoint.npz").stat().st_mtime_ns == seed0_mtime
    again = [json.loads(line) for line in metrics1.read_text().splitlines()]
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in per_seed[1]]

    # other settings in the same folder are refused, not mixed in
    code = main(["reproduce", "--out", str(out), "--only", "digits-iffcl", "--digits-seeds", "0", "--epochs", "3",
                 "--limit", "300"])
    assert code == 1
    assert "other settings" in (out / "digits-iffcl" / "seed0.log").read_text()


def _start_and_interrupt(cmd, tmp_path, wait_for, timeout=300):
    """Start the command, poll until ``wait_for(output_so_far)`` holds, send Ctrl-C (SIGINT) to it.

    Returns (exit code, output).
    """
    log = tmp_path / "output.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, **THREADS, PYTHONUNBUFFERED="1"))
        t0 = time.time()
        while not wait_for(log.read_text()):
            assert proc.poll() is None, log.read_text()
            assert time.time() - t0 < timeout, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)
    return proc.returncode, log.read_text()


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_exits_130_with_a_message(tmp_path):
    out = tmp_path / "repro"
    code, text = _start_and_interrupt(_reproduce_cmd(out, "--epochs", "1"), tmp_path,
                                      lambda s: "start digits-iffcl" in s)
    assert code == 130, text
    assert "interrupted" in text and "run the same command again" in text
    assert "Traceback" not in text and "empty sequence" not in text
    assert "0: not run" in (out / "results.md").read_text() or "unfinished" in (out / "results.md").read_text()


@pytest.mark.slow
def test_ctrl_c_stops_every_run_and_the_next_invocation_resumes(tmp_path):
    out = tmp_path / "repro"
    cmd = _reproduce_cmd(out, "--epochs", "8")
    metrics = [out / "digits-iffcl" / f"seed{s}" / "metrics.jsonl" for s in (0, 1)]
    code, text = _start_and_interrupt(
        cmd, tmp_path, lambda s: metrics[0].exists() and metrics[0].read_text().count("\n") >= 1)
    assert code == 130, text
    rows_before = [p.read_text().count("\n") if p.exists() else 0 for p in metrics]
    assert min(rows_before) < 8  # stopped: not every seed finished
    # the children are gone: nothing writes into the folders any more
    time.sleep(1.0)
    assert [p.read_text().count("\n") if p.exists() else 0 for p in metrics] == rows_before
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **THREADS), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for p in metrics:
        rows = [json.loads(line) for line in p.read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, 9))
    log = (out / "digits-iffcl" / "seed0.log").read_text()
    assert "resuming" in log or "finished before" in log
