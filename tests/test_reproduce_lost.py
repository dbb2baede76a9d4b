"""``vaelayer reproduce`` on this machine: a run stopped by someone else is lost, never reported as done."""
import os
import signal
import threading
import time

from vaelayer_np.tools.reproduce import run_reproduce


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
