"""``vaelayer reproduce``, the command: its options, their checks, and the two phases (every experiment on
its seeds, then the chosen points of the grids) that end in the results page."""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ...run.config import TrainConfig
from ...run.signals import StopSignals
from .experiments import (
    EXPERIMENTS,
    run_settings,
)
from .report import (
    _record_invocation,
    build_report,
    choose,
    seeds_for,
)
from .runner import run_one, run_tasks


# ---------------------------------------------------------------------------------------- the command
def _describe_experiments() -> str:
    lines = ["experiments (wall minutes per seed, measured on the 2-core machine running two at a time,",
             "--jobs 2, with little other load; a busier machine is several times slower):"]
    for e in EXPERIMENTS.values():
        grid = f", grid {e.group}" if e.group else ""
        minutes = "  not measured" if e.minutes is None else f"{e.minutes:5.1f} min"
        lines.append(f"  {e.name:28s} {minutes}  {e.purpose}{grid}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``vaelayer reproduce`` (the CLI calls this on its sub-parser)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _describe_experiments()
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="folder for the runs and the tables")
    parser.add_argument("--only", default=None, help="comma-separated names of the experiments to run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--digits-seeds", default="0,1,2,3,4",
                        help="seeds of the digits experiments, which are cheap (default: 0,1,2,3,4)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in a child process with one "
                                                            "BLAS thread (default: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="override every experiment's epochs (smoke tests)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training examples (smoke tests)")
    parser.add_argument("--quick", action="store_true", help="2 epochs and 2000 examples each (a smoke test)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="hand the runs to the Dask distributed scheduler at ADDRESS (tcp://HOST:8786) instead "
                             "of local child processes; needs pip install -e \".[cluster]\" (docs/performance.md)")
    parser.add_argument("--report-only", action="store_true",
                        help="start no run: write the tables from the runs already in --out")
    parser.add_argument("--write-docs", type=Path, default=None, metavar="DOCS",
                        help="also write the page to DOCS/results.md and its figures to DOCS/figures")
    return parser


def parse_seeds(text: Any, flag: str = "--seeds") -> list[int]:
    """The seeds of ``--seeds`` (or ``--digits-seeds``): distinct integers in 0..2**32-1, each a run's seed."""
    from ...run.tables import SEED_LIMIT

    try:
        seeds = [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"{flag}: expected distinct integers >= 0, got {text!r}")
    if max(seeds) >= SEED_LIMIT:
        raise ValueError(f"{flag}: seed {max(seeds)} is out of range; a seed is an integer in 0..{SEED_LIMIT - 1}")
    return seeds


def _check_seeds(seeds: Any, flag: str) -> list[int]:
    """Seeds given in Python (a list of integers), checked as :func:`parse_seeds` checks the command line's."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"{flag}: expected a list of seeds (integers), got {seeds!r}")
    seeds = list(seeds)
    from ...run.tables import check_seed

    for s in seeds:
        check_seed(s, flag)
    return parse_seeds(",".join(str(int(s)) for s in seeds) if seeds else "", flag)


def _command_line(args: argparse.Namespace) -> str:
    parts = ["vaelayer reproduce", f"--out {args.out}", f"--seeds {args.seeds}",
             f"--digits-seeds {args.digits_seeds}", f"--jobs {args.jobs}"]
    for flag, value in (("--only", args.only), ("--epochs", args.epochs), ("--limit", args.limit)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if args.quick:
        parts.append("--quick")
    if getattr(args, "report_only", False):
        parts.append("--report-only")
    if getattr(args, "scheduler", None):
        parts.append(f"--scheduler {args.scheduler}")
    if getattr(args, "write_docs", None):
        parts.append(f"--write-docs {args.write_docs}")
    return " ".join(parts)


def run_from_args(args: argparse.Namespace, log: Callable[[str], Any] = print) -> int:
    """Run ``vaelayer reproduce`` from parsed options; returns the exit code (0, 1 if a run failed, 130)."""
    epochs, limit = args.epochs, args.limit
    if args.quick:
        epochs, limit = epochs or 2, limit or 2000
    return run_reproduce(args.out, only=args.only, seeds=parse_seeds(args.seeds),
                         digits_seeds=parse_seeds(args.digits_seeds, "--digits-seeds"), jobs=args.jobs, epochs=epochs,
                         limit=limit, write_docs=getattr(args, "write_docs", None), command=_command_line(args),
                         report_only=getattr(args, "report_only", False), log=log,
                         scheduler=getattr(args, "scheduler", None))


def _check_report_folder(out: Path, names: list[str], seeds: dict[str, list[int]]) -> None:
    """``--report-only`` reports the runs already in ``out``: a folder that is missing or holds none is an error."""
    if not out.is_dir():
        what = "is not a folder" if os.path.lexists(out) else "does not exist"
        raise ValueError(f"--out: {out} {what}; --report-only writes the tables of the runs already in a folder "
                         "(give the --out of an earlier `vaelayer reproduce`)")
    if not any((out / n / f"seed{s}" / "metrics.jsonl").is_file() for n in names for s in seeds[n]):
        raise ValueError(f"--out: {out} holds no runs of the experiments asked for ({', '.join(names)}); "
                         "--report-only starts no run, so there is nothing to report")


def run_reproduce(out: str | Path, only: str | None = None, seeds: Iterable[int] = (0, 1, 2),
                  digits_seeds: Iterable[int] | None = None, jobs: int = 1, epochs: int | None = None,
                  limit: int | None = None, write_docs: str | Path | None = None, command: str | None = None,
                  report_only: bool = False, log: Callable[[str], Any] = print, scheduler: Any = None) -> int:
    """Run the experiments over the seeds (resuming what is there) and write ``out/results.md``.

    ``scheduler``: None (local child processes, ``jobs`` at a time), or the address of a Dask distributed
    scheduler (or a ``dask.distributed.Client``) that runs them (:mod:`vaelayer_np.tools.cluster`).

    Returns the exit code: 0 when every run finished, 1 when one failed or was lost (a run that did not come
    back finished without being asked to stop: a scheduler that died, a child stopped by someone else; named
    in the log and on the results page with the command that resumes it), 130 when interrupted.
    """
    out = Path(out)
    names = list(EXPERIMENTS) if only is None else [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise ValueError(f"--only: unknown experiments {unknown}; expected names from {list(EXPERIMENTS)}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"--jobs: expected a positive integer, got {jobs!r}")
    for value, flag in ((epochs, "--epochs"), (limit, "--limit")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{flag}: expected a positive integer, got {value!r}")
    # every option is checked before anything is written: the seeds, the folders, the scheduler
    seeds = _check_seeds(seeds, "--seeds")
    digits_seeds = None if digits_seeds is None else _check_seeds(digits_seeds, "--digits-seeds")
    if os.path.lexists(out) and not out.is_dir():
        raise ValueError(f"--out: {out} is a file, not a folder; give a folder for the runs and the tables")
    if write_docs is not None and os.path.lexists(write_docs) and not Path(write_docs).is_dir():
        raise ValueError(f"--write-docs: {write_docs} is a file, not a folder")
    for name in names:  # each run's settings, as its child or worker will check them
        exp = EXPERIMENTS[name]
        if exp.kind == "train":
            try:
                TrainConfig(**run_settings(exp, 0, epochs, limit)).validate()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"experiment {name}: its settings are not valid ({exc}); nothing was run") from None
    session = None
    if scheduler is not None and not report_only:
        from ..cluster import connect

        session = connect(scheduler)  # the address checked and the scheduler reached (or named) first
    seeds_of = {n: list(digits_seeds if digits_seeds is not None and EXPERIMENTS[n].dataset == "digits" else seeds)
                for n in names}
    if report_only:
        _check_report_folder(out, names, seeds_of)
    out.mkdir(parents=True, exist_ok=True)
    command = command or f"vaelayer reproduce --out {out} --only {','.join(names)} --jobs {jobs}"
    t0, start_time = time.perf_counter(), time.time()
    failed_all: list[tuple[str, int]] = []
    lost_all: dict[tuple[str, int], str] = {}
    interrupted = False
    stop_file = out / f".stop-{os.getpid()}"
    stop_file.unlink(missing_ok=True)
    with StopSignals(second="count") as stop:  # Ctrl-C, SIGTERM or SIGHUP: the first asks, a second terminates
        # phase 1: every experiment on its seeds (grid points on the first seed); phase 2: the chosen points
        done_tasks: set[tuple[str, int]] = set()  # the runs of phase 1, not started again in phase 2
        for phase in () if report_only else (1, 2):
            chosen: dict[str, str] = choose(out, names, seeds_of, epochs) if phase == 2 else {}
            tasks = [(n, s) for n in names for s in seeds_for(EXPERIMENTS[n], seeds_of, chosen)]
            if phase == 2:
                tasks = [t for t in tasks if t not in done_tasks]
            # in the order of EXPERIMENTS (long runs first), seed by seed
            order = list(EXPERIMENTS)
            tasks.sort(key=lambda t: (order.index(t[0]), t[1]))
            if scheduler is not None:  # the executor hand-off: a Dask cluster instead of local child processes
                from ..cluster import run_tasks_on_cluster

                finished, failed, interrupted, lost = run_tasks_on_cluster(tasks, out, session, epochs, limit, log,
                                                                           stop, EXPERIMENTS, run_one)
            else:
                finished, failed, interrupted, lost = run_tasks(tasks, out, jobs, epochs, limit, log, stop,
                                                                stop_file)
            failed_all += failed
            lost_all.update(lost)
            done_tasks = set(tasks)
            if interrupted or lost:  # the second phase's choices would rest on runs that did not finish
                break
    if session is not None:
        session.close()
    stop_file.unlink(missing_ok=True)
    chosen = choose(out, names, seeds_of, epochs)
    wall = time.perf_counter() - t0
    if not report_only:
        _record_invocation(out, command, start_time, time.time())
    page, _ = build_report(out, names, seeds_of, epochs, chosen, command, wall, limit, lost=lost_all)
    (out / "results.md").write_text(page)
    log(page)
    if write_docs is not None:
        import shutil

        docs = Path(write_docs)
        (docs / "figures").mkdir(parents=True, exist_ok=True)
        (docs / "results.md").write_text(page)
        for png in out.glob("*.png"):
            shutil.copyfile(png, docs / "figures" / png.name)
    if lost_all:
        log(f"NOT FINISHED: {len(lost_all)} run(s) lost: " + "; ".join(f"{n} seed {s} ({why})" for (n, s), why in
                                                               sorted(lost_all.items()))
            + f". Each resumes from the checkpoint in its folder under {out}: run the same command again "
            f"({command})")
        return 1
    if interrupted:
        log(f"interrupted: finished seeds are kept and interrupted ones checkpointed; run the same command "
            f"again to continue ({command})")
        return 130
    return 1 if failed_all else 0
