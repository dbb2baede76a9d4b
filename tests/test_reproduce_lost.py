"""``vaelayer reproduce`` on this machine: a run stopped by someone else is lost, never reported as done."""
import os
import signal
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from vaelayer_np.tools import reproduce
from vaelayer_np.tools.reproduce import run_reproduce, runner


def _children_running(marker):
    """Process ids of this process's children whose command line holds ``marker`` (read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and marker.encode() in cmdline:
            pids.append(int(entry))
    return pids


def test_a_child_stopped_by_a_signal_this_command_did_not_send_is_lost(tmp_path):
    out = tmp_path / "out"
    sent = []

    def stop_the_child():  # another user (or the OOM killer's kin) stops the run: SIGTERM to the child alone
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for pid in _children_running("--child"):
                if (out / "digits-iffcl" / "seed0" / "checkpoint.npz").exists():  # training has begun
                    os.kill(pid, signal.SIGTERM)
                    sent.append(pid)
                    return
            time.sleep(0.1)

    threading.Thread(target=stop_the_child, daemon=True).start()
    lines = []
    code = run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=500, limit=200,
                         log=lines.append, command="vaelayer reproduce --again")
    text = "\n".join(lines)
    assert sent, text
    assert code == 1, text
    assert "LOST  digits-iffcl seed 0: stopped before finishing" in text and "done  digits-iffcl" not in text
    assert "run the same command again (vaelayer reproduce --again)" in text
    page = (out / "results.md").read_text()
    assert "NOT FINISHED: 1 run(s) lost by this invocation" in page
    row = next(line for line in page.splitlines() if line.startswith("| digits-iffcl"))
    assert "0: LOST, stopped before finishing" in row and "unfinished" in row


class _Exited:
    """A child process that has already exited with ``code``."""

    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code

    def terminate(self):
        pass


class _Stop:
    def __init__(self, requested):
        self.requested, self.count = requested, int(requested)



@settings(max_examples=30, deadline=None)  # each example waits one 0.2 s poll
@given(st.lists(st.integers(-64, 255), min_size=1, max_size=4), st.booleans())
def test_no_exit_of_a_child_is_taken_for_a_finished_run_but_success(codes, stop_requested):
    """Whatever code each child exits with, a run counts as finished only with exit code 0; without a stop
    request every other code is a failure or a lost run (named), never silently dropped."""
    tasks = [("digits-iffcl", seed) for seed in range(len(codes))]
    by_seed = dict(enumerate(codes))
    lines = []
    real = runner._launch
    runner._launch = lambda name, seed, *a: _Exited(by_seed[seed])
    try:
        finished, failed, interrupted, lost = reproduce.run_tasks(tasks, "/nonexistent", 4, None, None,
                                                                  lines.append, _Stop(stop_requested), "/nonexistent")
    finally:
        runner._launch = real
    assert interrupted == stop_requested
    for key, code in zip(tasks, codes):
        if stop_requested:
            continue  # nothing is started after a stop request
        assert (key in finished) == (code == 0)
        if code != 0:
            assert (key in failed) != (key in lost), (code, lines)
            word = "LOST " if key in lost else "FAILED"
            assert any(line.startswith(f"{word} digits-iffcl seed {key[1]}") for line in lines), lines
