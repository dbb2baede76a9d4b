"""``vaelayer reproduce --scheduler``: the runs handed to a Dask distributed cluster (here on 127.0.0.1 only).

A run that does not come back finished is never reported as done: a scheduler killed mid-run makes the
command exit non-zero, naming the lost run and the command that resumes it (in the log and on the results
page). A scheduler without workers is named; Ctrl-C then returns at once. The address is checked, and the
scheduler reached, before anything is written.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

distributed = pytest.importorskip("distributed")  # the optional extra "cluster", installed by .ci/run

from vaelayer_np.tools.cluster import check_scheduler_address  # noqa: E402
from vaelayer_np.tools.reproduce import run_reproduce  # noqa: E402


@pytest.fixture
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as local:
        yield local


def test_reproduce_runs_on_a_dask_cluster(tmp_path, cluster):
    out = tmp_path / "out"
    lines = []
    code = run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=300,
                         scheduler=cluster.scheduler_address, log=lines.append)
    assert code == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "on the cluster at tcp://127.0.0.1" in text and "done  digits-iffcl seed 0" in text
    assert "LOST" not in text and "NOT FINISHED" not in (out / "results.md").read_text()
    rows = [json.loads(line) for line in (out / "digits-iffcl" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and 0.0 <= rows[-1]["val_acc"] <= 1.0
    assert (out / "digits-iffcl" / "seed0.log").read_text().strip()
    assert "digits-iffcl" in (out / "results.md").read_text()
    # a second call finds the run finished (the folder came back from the worker) and reuses it
    lines.clear()
    assert run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=300,
                         scheduler=cluster.scheduler_address, log=lines.append) == 0
    assert "finished before, reused" in (out / "digits-iffcl" / "seed0.log").read_text()


def test_an_unreachable_scheduler_is_named_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="--scheduler: cannot reach"):
        run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=100,
                      scheduler="tcp://127.0.0.1:1", log=lambda s: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1", "tcp://", "http://127.0.0.1:8786",
                                     "tcp://127.0.0.1:0", "tcp://127.0.0.1:70000", "tcp://a b:1", ""])
def test_a_malformed_scheduler_address_names_the_option_before_anything_is_written(tmp_path, address):
    with pytest.raises(ValueError, match="^--scheduler: "):
        run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1,
                      scheduler=address, log=lambda s: None)
    assert not (tmp_path / "out").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_text_is_an_address_or_refused_naming_the_option(text):
    try:
        address = check_scheduler_address(text)
    except ValueError as exc:
        assert str(exc).startswith("--scheduler: ")
    else:  # what passes has a tcp or tls scheme, a host and a port in range
        scheme, rest = address.split("://", 1)
        host, port = rest.rstrip("/").rsplit(":", 1)
        assert scheme.lower() in ("tcp", "tls") and host and 1 <= int(port) <= 65535


@given(st.sampled_from(["tcp://", "tls://", ""]), st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
       st.integers(1, 65535))
def test_every_well_formed_address_passes(scheme, host, port):
    address = check_scheduler_address(f"{scheme}{host}:{port}")
    assert address == f"{scheme or 'tcp://'}{host}:{port}"


def test_out_of_range_seeds_are_refused_before_anything_is_written(tmp_path):
    for seeds, flag in (((0, 2 ** 32), "--seeds"), ((-1,), "--seeds")):
        with pytest.raises(ValueError, match=f"^{flag}: "):
            run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=seeds, epochs=1, log=lambda s: None)
    with pytest.raises(ValueError, match="^--digits-seeds: .*0..4294967295"):
        run_reproduce(tmp_path / "out", only="digits-iffcl", digits_seeds=[2 ** 40], epochs=1, log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_a_scheduler_without_workers_is_named_and_ctrl_c_returns_at_once(tmp_path):
    lines = []

    def log(text):
        lines.append(text)
        if "has no workers" in text:  # the user reads it and presses Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)

    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as empty:
        t0 = time.monotonic()
        timer = _ctrl_c_after(120)
        code = run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1,
                             limit=100, scheduler=empty.scheduler_address, log=log)
        timer.cancel()
        elapsed = time.monotonic() - t0
    text = "\n".join(lines)
    assert code == 130, text
    assert f"the Dask scheduler at {empty.scheduler_address} has no workers" in text
    assert "cancelling 1 run(s) not handed to a worker yet" in text
    assert "LOST" not in text  # cancelled on request: interrupted, not lost
    assert elapsed < 120, f"{elapsed:.0f} s: Ctrl-C waited for a worker that never came"


def _ctrl_c_after(seconds):
    """A Ctrl-C of last resort: a test whose message never comes fails instead of waiting for ever."""
    import threading

    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    return timer


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _start_scheduler(port):
    scheduler = _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"])
    deadline = time.monotonic() + 60
    while True:  # the scheduler is listening
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return scheduler
        except OSError:
            assert time.monotonic() < deadline and scheduler.poll() is None, "the scheduler did not start"
            time.sleep(0.3)


@pytest.mark.parametrize("restart", [False, True], ids=["killed", "killed-and-restarted"])
def test_a_scheduler_killed_mid_run_is_reported_with_the_lost_run_and_a_nonzero_exit(tmp_path, caplog, restart):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    schedulers = [_start_scheduler(port)]
    scheduler = schedulers[0]
    worker = None
    try:
        worker = _start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                         "--no-dashboard", "--host", "127.0.0.1"])
        killed = []

        def kill_when_running():  # the run has started on the worker: the scheduler dies (kill -9)
            with distributed.Client(address, timeout="30s") as watcher:
                deadline = time.monotonic() + 120
                while not any(watcher.processing().values()):
                    assert time.monotonic() < deadline, "the run never started on the worker"
                    time.sleep(0.2)
            time.sleep(1.0)
            scheduler.kill()
            killed.append(time.monotonic())
            if restart:  # a new scheduler on the same address: the client reconnects, the runs are still lost
                scheduler.wait(timeout=30)
                schedulers.append(_start_scheduler(port))

        import threading

        killer = threading.Thread(target=kill_when_running, daemon=True)
        killer.start()
        lines = []
        out = tmp_path / "out"
        # 200 epochs: far longer than the test waits before killing the scheduler
        code = run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=200, limit=300,
                             scheduler=address, log=lines.append, command="vaelayer reproduce --the-same-command")
        killer.join(timeout=90)
        text = "\n".join(lines)
        assert killed, "the scheduler was not killed while the run was running:\n" + text
        assert code == 1, text
        assert "LOST  digits-iffcl seed 0: the connection to the scheduler" in text
        assert "done  digits-iffcl seed 0" not in text
        assert "NOT FINISHED: 1 run(s) lost: digits-iffcl seed 0" in text
        assert "run the same command again (vaelayer reproduce --the-same-command)" in text
        tracebacks = [r for r in caplog.records if r.name.startswith("distributed") and r.exc_info]
        assert not tracebacks, tracebacks  # the lost runs named, not buried under Dask's tracebacks
        page = (out / "results.md").read_text()
        assert "NOT FINISHED: 1 run(s) lost by this invocation" in page and "digits-iffcl seed 0" in page
        assert "run `vaelayer reproduce --the-same-command` again" in page
        row = next(line for line in page.splitlines() if line.startswith("| digits-iffcl"))
        assert "0: LOST, the connection to the scheduler" in row
    finally:
        for proc in (worker, *schedulers):
            if proc is not None:
                _stop(proc)


def test_ctrl_c_cancels_the_queued_runs_and_brings_the_running_one_back_checkpointed(tmp_path, cluster):
    import threading

    out = tmp_path / "out"
    lines = []

    def interrupt_once_running():
        with distributed.Client(cluster.scheduler_address, timeout="30s") as watcher:
            deadline = time.monotonic() + 120
            while not any(watcher.processing().values()):
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.1)
        time.sleep(1.5)  # the run is training
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    code = run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0, 1], epochs=300, limit=300,
                         scheduler=cluster.scheduler_address, log=lines.append)
    text = "\n".join(lines)
    assert code == 130, text
    assert "interrupted: cancelling " in text and "asking the " in text
    assert "LOST" not in text and "done  digits-iffcl" not in text
    assert (out / "digits-iffcl" / "seed0" / "checkpoint.npz").exists()  # the running one came back checkpointed
    assert not (out / "digits-iffcl" / "seed1").exists()  # the queued one never started: nothing written


def test_the_last_worker_dying_mid_run_is_named_and_ctrl_c_returns(tmp_path):
    import threading

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start_scheduler(port)
    worker = _start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                     "--host", "127.0.0.1"])
    try:
        def kill_the_worker_when_running():
            with distributed.Client(address, timeout="30s") as watcher:
                deadline = time.monotonic() + 120
                while not any(watcher.processing().values()):
                    assert time.monotonic() < deadline, "the run never started on the worker"
                    time.sleep(0.2)
            time.sleep(1.0)
            worker.kill()

        threading.Thread(target=kill_the_worker_when_running, daemon=True).start()
        lines = []

        def log(text):
            lines.append(text)
            if "has no workers" in text:  # the user reads it and presses Ctrl-C
                os.kill(os.getpid(), signal.SIGINT)

        timer = _ctrl_c_after(120)
        code = run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=200,
                             limit=300, scheduler=address, log=log)
        timer.cancel()
        text = "\n".join(lines)
        assert code == 130, text
        assert f"the Dask scheduler at {address} has no workers: the 1 run(s) wait" in text
        assert "done  digits-iffcl" not in text and "LOST" not in text
    finally:
        for proc in (worker, scheduler):
            _stop(proc)
