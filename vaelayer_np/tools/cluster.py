"""Beyond one machine: the runs of ``vaelayer reproduce`` on a Dask distributed cluster.

``vaelayer reproduce --scheduler tcp://HOST:8786`` hands every (experiment, seed) run to the Dask
scheduler at that address instead of starting local child processes (the default). Dask is an
optional extra: ``pip install -e ".[cluster]"`` (``dask[distributed]``) on this machine and on
every worker, with the same version of vaelayer_np.

A real cluster::

    dask scheduler                                   # on one machine: listens on tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers 2   # on each machine with the package installed
    vaelayer reproduce --scheduler tcp://HOST:8786 --out runs/reproduce

One thread per worker process is the useful setting (a run is one training loop; give a machine as
many worker processes as it has cores, or fewer with ``threads`` > 1). The workers need no shared
folder: each run trains in a temporary folder on its worker, which receives the run's folder from
``--out`` first (so an interrupted run resumes from its checkpoint) and sends the whole folder back
when the run ends; the report is then written here from ``--out`` as after local runs.

Stopping: Ctrl-C (or SIGTERM) sets a Dask ``Event`` that every running run polls about once a second
between training steps: each saves its checkpoint, sends its folder back, and stops; a second
Ctrl-C cancels what is left.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path


def _client(scheduler):
    """A ``dask.distributed.Client`` for ``scheduler`` (an address, or a Client or cluster object)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("--scheduler: Dask is not installed; install the optional extra with "
                         "pip install -e \".[cluster]\" (dask[distributed]) here and on the workers") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(scheduler, timeout="20s"), True
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"--scheduler: cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                         "`dask scheduler` and give its tcp://HOST:PORT address") from None


def _read_folder(folder):
    """{relative path: bytes} of every file under ``folder`` (empty if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_folder(folder, files):
    folder = Path(folder)
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def remote_run(run_one, exp, seed, epochs, limit, files, log_text, stop_event):
    """One run on a worker: (completed, the run's files, its log) after training in a temporary folder.

    ``run_one``: :func:`vaelayer_np.tools.reproduce.run_one` (passed in: this module does not import the
    tools above it; Dask sends it by name); ``exp``: the experiment; ``files``: the run folder as it is in
    ``--out`` (empty for a new run); ``log_text``: its log so far.
    """
    from threadpoolctl import threadpool_limits

    event = None
    if stop_event:
        from dask.distributed import Event

        event = Event(stop_event)
    last = [0.0, False]

    def should_stop():
        now = time.monotonic()
        if event is not None and now - last[0] > 1.0:  # one round trip to the scheduler a second at most
            last[0] = now
            last[1] = event.is_set()
        return last[1]

    with tempfile.TemporaryDirectory(prefix="vaelayer-run-") as out:
        run_dir = Path(out) / exp.name / f"seed{seed}"
        _write_folder(run_dir, files)
        lines = [log_text] if log_text else []
        with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread per run, as the local child processes
            completed = run_one(exp, seed, out, epochs, limit, log=lines.append, should_stop=should_stop)
        return completed, _read_folder(run_dir), "\n".join(lines) + "\n"


def run_tasks_on_cluster(tasks, out, scheduler, epochs, limit, log, stop, experiments, run_one):
    """:func:`vaelayer_np.tools.reproduce.run_tasks` on a Dask cluster. Returns (finished, failed, interrupted).

    ``experiments``: name -> experiment; ``run_one``: the function that trains one seed of one (both from
    :mod:`vaelayer_np.tools.reproduce`, which calls this).
    """
    from dask.distributed import Event, as_completed

    client, own = _client(scheduler)
    out = Path(out)
    stop_name = f"vaelayer-stop-{uuid.uuid4().hex}"
    stop_event = Event(stop_name, client=client)
    finished, failed = [], []
    try:
        futures = {}
        for name, seed in tasks:
            run_dir = out / name / f"seed{seed}"
            log_path = out / name / f"seed{seed}.log"
            log_text = log_path.read_text() if log_path.exists() else ""
            log(f"start {name} seed {seed} (on the cluster at {client.scheduler.address})")
            files = _read_folder(run_dir)
            if sum(len(b) for b in files.values()) > 1_000_000:  # a checkpoint: sent as data, not in the task
                files = client.scatter(files, direct=False)
            future = client.submit(remote_run, run_one, experiments[name], seed, epochs, limit, files, log_text,
                                   stop_name,
                                   key=f"vaelayer-{name}-seed{seed}-{uuid.uuid4().hex[:8]}", pure=False, retries=0)
            futures[future] = (name, seed)
        pending = as_completed(list(futures))
        asked = cancelled = False
        while not pending.is_empty():
            if stop.requested and not asked:
                asked = True
                log("interrupted: asking the runs on the cluster to checkpoint and stop")
                stop_event.set()
            if stop.count >= 2 and not cancelled:
                cancelled = True
                log("second stop signal: cancelling the runs not finished; each resumes from its last checkpoint")
                client.cancel([f for f in futures if not f.done()])
            for future in pending.next_batch(block=False) if pending.has_ready() else ():
                key = futures[future]
                name, seed = key
                if future.status == "cancelled":
                    continue
                try:
                    completed, files, log_text = future.result()
                except Exception as exc:  # the run's own error (it is named in the log here)
                    failed.append(key)
                    log(f"FAILED {name} seed {seed} on the cluster: {type(exc).__name__}: {exc}")
                    continue
                run_dir = out / name / f"seed{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                _write_folder(run_dir, files)
                (out / name / f"seed{seed}.log").write_text(log_text)
                if completed:
                    finished.append(key)
                    log(f"done  {name} seed {seed}")
            time.sleep(0.2)
    finally:
        if own:
            client.close()
    return finished, failed, stop.requested
