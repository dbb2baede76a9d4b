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

The address is checked, and the scheduler reached, before anything is written. A scheduler without
workers (none at the start, or the last one gone mid-run) is named within a few seconds (the runs wait
for a worker to join).

A run that does not come back finished is never counted as done. When the scheduler dies or restarts
mid-run (the client loses its connection, and Dask cancels every run it was following), or a run
stops on its worker without being asked, the run is *lost*: the command names it, exits with code 1,
and the results page lists it with the command that resumes it (its folder in ``--out`` holds what
it held when it was handed out, its checkpoint included; what it trained on the cluster since is lost).

Stopping: Ctrl-C (or SIGTERM) cancels the runs the scheduler has not handed to a worker, and sets a Dask
``Event`` that every run polls when it starts (one its worker had queued ends at once, nothing trained)
and about once a second between training steps: each saves its checkpoint, sends its folder back, and
stops; a second Ctrl-C cancels what is left.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..run.signals import StopSignals

NO_WORKER_SECONDS = 3.0
"""A scheduler that has had no worker for this long after the runs were handed to it is named."""
CONNECT_TIMEOUT = "10s"
"""How long to try to reach the scheduler (at the start, and again after losing it)."""

_ADDRESS = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)"
                      r":(?P<port>\d{1,5})/?")
_SCHEMES = ("tcp", "tls")


def check_scheduler_address(scheduler: Any) -> Any:
    """The address of ``--scheduler`` checked (``tcp://HOST:PORT``, ``tls://HOST:PORT`` or ``HOST:PORT``).

    A ``dask.distributed.Client`` (or a cluster object with a ``scheduler_address``) passes as it is.
    Raises ValueError naming ``--scheduler`` for anything else; nothing is contacted.
    """
    if not isinstance(scheduler, str):
        if hasattr(scheduler, "scheduler_address") or type(scheduler).__name__ == "Client":
            return scheduler
        raise ValueError(f"--scheduler: expected the address of a Dask scheduler like tcp://HOST:8786, got "
                         f"{type(scheduler).__name__} {scheduler!r}")
    text = scheduler.strip()
    match = _ADDRESS.fullmatch(text)
    if match is None:
        why = "no port" if text and ":" not in text.split("://")[-1] else "not HOST:PORT"
        raise ValueError(f"--scheduler: {scheduler!r} is not the address of a Dask scheduler ({why}); expected "
                         "tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786 (what `dask scheduler` prints)")
    scheme, port = match["scheme"], int(match["port"])
    if scheme is not None and scheme.lower() not in _SCHEMES:
        raise ValueError(f"--scheduler: {scheduler!r}: unsupported protocol {scheme}://; expected tcp://HOST:PORT "
                         "(or tls://HOST:PORT)")
    if not 1 <= port <= 65535:
        raise ValueError(f"--scheduler: {scheduler!r}: port {port} is not in 1..65535")
    return text if scheme is not None else "tcp://" + text


class Session:
    """A client of the scheduler, opened by :func:`connect` (closed by :meth:`close`, only if opened here)."""

    def __init__(self, client: Any, own: bool) -> None:
        self.client, self.own = client, own
        self.address = client.scheduler.address

    def close(self) -> None:
        if self.own:
            import logging

            loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.utils")]
            levels = [log.level for log in loggers]
            # closing a client that is trying to reach a scheduler that died makes Dask log the cancelled
            # attempt with a traceback: the lost runs are already named, the traceback would only hide them
            for log in loggers:
                log.setLevel(logging.CRITICAL)
            try:
                self.client.close(timeout=5)
            except Exception:  # noqa: BLE001 - a scheduler already gone: nothing left to close cleanly
                pass
            finally:
                for log, level in zip(loggers, levels):
                    log.setLevel(level)
            self.own = False


def connect(scheduler: Any) -> Session:
    """A :class:`Session` with the scheduler at ``scheduler`` (checked by :func:`check_scheduler_address`).

    Raises ValueError naming ``--scheduler`` when Dask is missing or the scheduler cannot be reached.
    """
    if isinstance(scheduler, Session):
        return scheduler
    scheduler = check_scheduler_address(scheduler)
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("--scheduler: Dask is not installed; install the optional extra with "
                         "pip install -e \".[cluster]\" (dask[distributed]) here and on the workers") from None
    if isinstance(scheduler, Client):
        return Session(scheduler, False)
    try:
        return Session(Client(scheduler, timeout=CONNECT_TIMEOUT), True)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"--scheduler: cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                         "`dask scheduler` and give its tcp://HOST:PORT address") from None


def _read_folder(folder: str | Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``folder`` (empty if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_folder(folder: str | Path, files: dict[str, bytes]) -> None:
    folder = Path(folder)
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def remote_run(run_one: Callable[..., Any], exp: Any, seed: int, epochs: int | None, limit: int | None,
               files: dict[str, bytes], log_text: str,
               stop_event: str | None) -> tuple[bool | None, dict[str, bytes], str]:
    """One run on a worker: (completed, the run's files, its log) after training in a temporary folder.

    ``run_one``: :func:`vaelayer_np.tools.reproduce.run_one` (passed in: this module does not import the
    tools above it; Dask sends it by name); ``exp``: the experiment; ``files``: the run folder as it is in
    ``--out`` (empty for a new run); ``log_text``: its log so far. A run that can no longer ask the
    scheduler whether to stop (the scheduler is gone) checkpoints and stops: nobody would receive its result.
    ``completed`` is None for a run that was asked to stop before it started (nothing was trained).
    """
    from threadpoolctl import threadpool_limits

    event = None
    if stop_event:
        from dask.distributed import Event

        event = Event(stop_event)
    last: list[Any] = [-2.0, False]  # the time of the last question, and its answer

    def should_stop() -> bool:
        now = time.monotonic()
        if event is not None and now - last[0] > 1.0:  # one round trip to the scheduler a second at most
            last[0] = now
            try:
                last[1] = bool(event.is_set())
            except Exception:  # noqa: BLE001 - the scheduler unreachable: the run's result has no receiver
                last[1] = True
        return last[1]

    if should_stop():  # stopped before it started (queued on its worker when Ctrl-C came): nothing to do
        return None, {}, log_text
    with tempfile.TemporaryDirectory(prefix="vaelayer-run-") as out:
        run_dir = Path(out) / exp.name / f"seed{seed}"
        _write_folder(run_dir, files)
        lines = [log_text] if log_text else []
        with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread per run, as the local child processes
            completed = run_one(exp, seed, out, epochs, limit, log=lines.append, should_stop=should_stop)
        return completed, _read_folder(run_dir), "\n".join(lines) + "\n"


def _cancel_reason(future: Any) -> str | None:
    """Dask's reason for cancelling ``future`` (e.g. "scheduler-connection-lost"), or None."""
    state = getattr(future, "_state", None)
    exc = getattr(state, "exception", None)
    return getattr(exc, "reason", None)


def _processing_keys(client: Any) -> set[str]:
    """Keys of the tasks a worker has started (empty when the scheduler cannot say)."""
    try:
        return {k for keys in client.processing().values() for k in keys}
    except Exception:  # noqa: BLE001 - the scheduler gone: nothing is known to be running
        return set()


def _worker_count(client: Any) -> int | None:
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - the scheduler gone: the lost runs are named by the main loop
        return None


def run_tasks_on_cluster(tasks: Iterable[tuple[str, int]], out: str | Path, scheduler: Any, epochs: int | None,
                         limit: int | None, log: Callable[[str], Any], stop: StopSignals, experiments: dict[str, Any],
                         run_one: Callable[..., Any]) -> tuple[list[tuple[str, int]], list[tuple[str, int]], bool,
                                                                dict[tuple[str, int], str]]:
    """:func:`vaelayer_np.tools.reproduce.run_tasks` on a Dask cluster.

    ``scheduler``: an address, a Client or a :class:`Session` (from :func:`connect`); ``experiments``:
    name -> experiment; ``run_one``: the function that trains one seed of one (both from
    :mod:`vaelayer_np.tools.reproduce`, which calls this).

    Returns (finished, failed, interrupted, lost): lists of (name, seed), the flag, and
    {(name, seed): why} of the runs that did not come back finished without being asked to stop.
    """
    from dask.distributed import Event

    session = connect(scheduler)
    opened_here = session is not scheduler and session.own
    client, address = session.client, session.address
    out = Path(out)
    stop_name = f"vaelayer-stop-{uuid.uuid4().hex}"
    stop_event = Event(stop_name, client=client)
    finished: list[tuple[str, int]] = []
    failed: list[tuple[str, int]] = []
    lost: dict[tuple[str, int], str] = {}
    ours: set[str] = set()  # keys of the futures cancelled here (Ctrl-C), as opposed to by Dask
    try:
        futures = {}
        for name, seed in tasks:
            run_dir = out / name / f"seed{seed}"
            log_path = out / name / f"seed{seed}.log"
            log_text = log_path.read_text() if log_path.exists() else ""
            log(f"start {name} seed {seed} (on the cluster at {address})")
            files = _read_folder(run_dir)
            if sum(len(b) for b in files.values()) > 1_000_000:  # a checkpoint: sent as data, not in the task
                files = client.scatter(files, direct=False)
            future = client.submit(remote_run, run_one, experiments[name], seed, epochs, limit, files, log_text,
                                   stop_name,
                                   key=f"vaelayer-{name}-seed{seed}-{uuid.uuid4().hex[:8]}", pure=False, retries=0)
            futures[future] = (name, seed)
        waiting = dict(futures)
        asked = cancelled = False
        counted, named_idle = time.monotonic(), False  # the workers are counted every NO_WORKER_SECONDS
        while waiting:
            if stop.requested and not asked:
                asked = True
                assigned = _processing_keys(client)
                queued = [f for f in waiting if f.key not in assigned and not f.done()]
                log(f"interrupted: cancelling {len(queued)} run(s) not handed to a worker yet; asking the "
                    f"{len(waiting) - len(queued)} others to checkpoint and stop (those their worker has not "
                    "started end at once)")
                ours.update(f.key for f in queued)
                if queued:
                    client.cancel(queued)
                try:
                    stop_event.set()
                except Exception:  # noqa: BLE001 - the scheduler gone: its runs are named lost below
                    pass
            if stop.count >= 2 and not cancelled:
                cancelled = True
                log("second stop signal: cancelling the runs not finished; each resumes from its last checkpoint")
                rest = [f for f in waiting if not f.done()]
                ours.update(f.key for f in rest)
                client.cancel(rest)
            if not asked and time.monotonic() - counted > NO_WORKER_SECONDS:  # none at the start, or all gone
                counted = time.monotonic()
                workers = _worker_count(client)
                if workers == 0 and not named_idle:
                    named_idle = True
                    log(f"the Dask scheduler at {address} has no workers: the {len(waiting)} run(s) wait until one "
                        f"joins (start one with `dask worker {address} --nthreads 1`); Ctrl-C stops this command")
                elif workers and named_idle:
                    named_idle = False
                    log(f"{workers} worker(s) joined the scheduler at {address}: the runs go on")
            for future in [f for f in waiting if f.done()]:
                name, seed = key = waiting.pop(future)
                if future.status == "cancelled":
                    if future.key not in ours:
                        why = _cancel_reason(future) or "cancelled by Dask"
                        if why == "scheduler-connection-lost":
                            why = f"the connection to the scheduler at {address} was lost (it died or restarted)"
                        lost[key] = why
                        log(f"LOST  {name} seed {seed}: {why}")
                    continue
                try:
                    completed, files, log_text = future.result()
                except Exception as exc:  # the run's own error (it is named in the log here)
                    failed.append(key)
                    log(f"FAILED {name} seed {seed} on the cluster: {type(exc).__name__}: {exc}")
                    continue
                if completed is None:  # asked to stop before it started: its folder here is as it was
                    if not stop.requested:
                        lost[key] = "the run could not ask the scheduler whether to start (it lost the scheduler)"
                        log(f"LOST  {name} seed {seed}: {lost[key]}")
                    continue
                run_dir = out / name / f"seed{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                _write_folder(run_dir, files)
                (out / name / f"seed{seed}.log").write_text(log_text)
                if completed:
                    finished.append(key)
                    log(f"done  {name} seed {seed}")
                elif not stop.requested:  # stopped on its worker without being asked: not done
                    lost[key] = "the run stopped on its worker before finishing (it lost the scheduler)"
                    log(f"LOST  {name} seed {seed}: {lost[key]}")
            time.sleep(0.2)
    finally:
        if opened_here:
            session.close()
    return finished, failed, stop.requested, lost
