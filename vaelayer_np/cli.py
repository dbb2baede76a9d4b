"""The ``vaelayer`` command (also ``python -m vaelayer_np``).

Sub-commands::

    vaelayer train [options]          train a run (default: IFFCL on digits) into ./runs/<new folder>
    vaelayer train --resume RUN       continue an interrupted run
    vaelayer evaluate RUN             accuracy of a run's checkpoint on each split
    vaelayer plot RUN [RUN ...]       (re)draw a run's plots; with several runs also compare.png
    vaelayer gradcheck                finite-difference check of every layer and loss
    vaelayer bench                    speed of the fast and readable training paths (and PyTorch if installed)
    vaelayer reproduce                the benchmark runs of docs/results.md, as a table

Every error is one line on stderr naming the option, file or folder at fault and what
to do, with a non-zero exit code: 2 for bad input (options, data files, run folders,
checkpoints) and for a file that cannot be written (read-only folder, full disk,
file-size limit: the previous file is kept), 1 for training that diverged, for running
out of memory and for any other operating-system error, 130 for a run stopped by Ctrl-C,
SIGTERM or SIGHUP (its checkpoint saved). ``--debug`` (before or after the command) shows
the traceback instead. A warning (a constant column, changed data used anyway) is one line
on stderr too. A closed standard output (``vaelayer train ... | head -1``) stops the
printing, never the command: a line on stderr says so and the run goes on.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .run.config import RESUME_MAY_CHANGE, TrainConfig

# the options a resumed run accepts: the settings it may change (one source: config.RESUME_MAY_CHANGE)
_RESUME_OPTIONS = ", ".join("--" + k.replace("_", "-") for k in sorted(RESUME_MAY_CHANGE))
_EXIT_USAGE = 2
_EXIT_FAILURE = 1


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, refused with ``what`` in the message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer in 0..2**32-1."""
    from .run.tables import SEED_LIMIT

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{SEED_LIMIT - 1}, got {text!r}")
    return value


def _thread_count(text: str) -> int:
    """An argparse type: a number of threads, 1..the cores this process may use."""
    from .fast.machine import usable_cores

    cores = usable_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(f"expected an integer in 1..{cores} (the cores this process may use), "
                                         f"got {text!r}")
    return value


def _nonempty_text(text: str) -> str:
    """An argparse type: a value that is not empty (``--data ""``, an unset shell variable, would otherwise
    read as the option left out, or a path as the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a value, got {text!r}; leave the option out for its default")
    return text


def _path(text: str) -> Path:
    """An argparse type: a file or folder path, not empty (``Path("")`` is the current folder)."""
    return Path(_nonempty_text(text))


def _option_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


# the command line's own settings that an error from the library names by their Python names
_OPTION_SETTINGS = {f.name for f in dataclasses.fields(TrainConfig)} | {"run_dir", "resume"}


def _name_the_option(exc: BaseException, paths: Sequence[Path | None] = ()) -> str:
    """A config error 'seed: ...' says '--seed: ...' on the command line (and 'augment_shift, augment_flip: ...'
    '--augment-shift, --augment-flip: ...'); an error that starts with one of the ``paths`` given (a run folder
    named like a setting) is left as it is."""
    message = str(exc)
    head, sep, rest = message.partition(":")
    names = [name.strip() for name in head.split(",")]
    if sep and all(name in _OPTION_SETTINGS for name in names) and head not in {str(p) for p in paths if p}:
        return f"{', '.join(_option_name(name) for name in names)}: {rest.lstrip()}"
    return message


def _os_error_message(exc: OSError) -> str:
    """One line for an OSError: the path, what happened and what to do."""
    path = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice: str = {
        errno.ENOSPC: "the disk is full: free some space and try again",
        errno.EDQUOT: "your disk quota is full: free some space and try again",
        errno.EFBIG: "the file-size limit (`ulimit -f`) was reached: raise it or write elsewhere",
        errno.EACCES: "no permission: check the permissions or choose another folder",
        errno.EPERM: "not permitted: check the permissions or choose another folder",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.ENOTDIR: "a part of the path is a file where a folder should be: choose another path",
        errno.EISDIR: "a folder is in the way: choose another path",
        errno.ENOENT: "check the path",
        errno.ELOOP: "a loop of symbolic links is in the path: choose another path",
        errno.ENOMEM: "out of memory: choose smaller sizes or a part of the data",
    }.get(exc.errno or 0, "check the path and the disk, then try again")
    return f"{path}: {reason}; {advice}"


def _parse_widths(text: str) -> tuple[int, ...]:
    items = text.replace(" ", "").split(",")
    if "" in items and text.strip():  # "4,,4" or "4,": a width left out is refused, not skipped
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,256,256, got {text!r} "
                                         "(an empty width between or after the commas)")
    try:
        widths = tuple(int(t) for t in items if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,256,256, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return widths


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its default and help."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.name == "widths":
            parser.add_argument(flag, type=_parse_widths, default=None, help=help_text)
            continue
        kind: Callable[[str], Any] = {"dataset": str, "data_dir": str, "limit": int, "output_lr": float,
                                      "epochs": int, "batch_size": int, "path": str,
                                      "backend": str}.get(f.name, type(f.default))
        if kind is str:
            kind = _nonempty_text
        shown = f.default not in (None, "") and "(default:" not in help_text
        suffix = f" (default: {f.default})" if shown else ""
        parser.add_argument(flag, type=kind, default=None, help=help_text + suffix)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if getattr(args, f.name) is not None}
    try:
        return TrainConfig(**values).validate()
    except ValueError as exc:
        raise ValueError(_name_the_option(exc)) from None




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaelayer", description="VAE layers trained with IFFCL, in NumPy.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add_command("train", help="train a run", description="Train a run; every setting is an option.")
    _add_config_options(p)
    p.add_argument("--run-dir", type=_path, default=None, help="folder for the run (default: a new one under ./runs)")
    p.add_argument("--resume", type=_path, default=None, metavar="RUN",
                   help=f"continue the run in folder RUN (only {_RESUME_OPTIONS} may be given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots at the end")
    changed_help = ("use the run's data files even if they changed since it was trained (by default a changed "
                    "file, by size or sha256, is refused)")
    p.add_argument("--allow-changed-data", action="store_true", help="with --resume: " + changed_help)

    p = add_command("evaluate", help="accuracy of a run's checkpoint")
    p.add_argument("run", type=_path, help="a run folder (written by `vaelayer train`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--allow-changed-data", action="store_true", help=changed_help)

    p = add_command("plot", help="draw a run's plots (and compare.png for several runs)")
    p.add_argument("runs", type=_path, nargs="+", help="one or more run folders (written by `vaelayer train`)")
    p.add_argument("--out", type=_path, default=None, help="where compare.png goes (default: the first run)")
    p.add_argument("--allow-changed-data", action="store_true", help=changed_help)

    p = add_command("gradcheck", help="finite-difference check of every gradient")
    p.add_argument("--seed", type=_seed, default=0)

    p = add_command("bench", help="speed of the backends against NumPy, PyTorch and the BLAS limit")
    p.add_argument("--repeats", type=_positive_int, default=20,
                   help="timed repeats per measurement (medians are printed)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and no full epoch")
    p.add_argument("--threads", type=_thread_count, default=None,
                   help="threads for BLAS and PyTorch in the step measurements (default: OPENBLAS_NUM_THREADS or "
                        "OMP_NUM_THREADS if set, else the number `vaelayer train` uses)")
    p.add_argument("--json", action="store_true", help="print one JSON object per step configuration (medians) "
                                                       "and nothing else")

    from .tools.reproduce import add_arguments as add_reproduce_arguments

    add_reproduce_arguments(add_command("reproduce", help="run the benchmark configurations over several seeds "
                                                      "and write the results tables"))

    from .course.grade import add_arguments as add_grade_arguments

    p = add_command("course", help="the course's tools for a teacher (grade a class's notebooks)")
    course = p.add_subparsers(dest="course_command", required=True, metavar="{grade}")
    add_grade_arguments(course.add_parser(
        "grade", parents=[common], help="grade student notebooks with the library's checkers",
        description="Grade student notebooks: run the library's checkers on each notebook's code in a fresh "
                    "process, with a time and a memory limit per exercise; write grades.csv, one feedback file "
                    "per student and the inline questions to grade by hand."))
    return parser


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a closed pipe (``| head -1``) stops the printing, not the command.

    The first write that fails with a broken pipe (or EIO, a terminal gone) prints one line on
    stderr; the real standard output is then pointed at /dev/null (so the exit-time flush cannot
    fail either) and every later write is dropped.
    """

    def __init__(self, stream: TextIO, command: str) -> None:
        self.stream, self.command, self.lost = stream, command, False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except OSError as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except OSError as exc:
                self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        if exc.errno not in (errno.EPIPE, errno.EIO, errno.ECONNRESET, errno.EBADF):
            raise exc
        self.lost = True
        if self.stream is sys.__stdout__:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
        try:
            print(f"vaelayer {self.command}: standard output was closed ({exc.strerror or exc}); printing stops, "
                  "the command goes on", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout, args.command)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *a, **k: _warn(args.command, message)
            return _main(args, parser)
    finally:
        if sys.stdout.__class__ is _GuardedStdout:
            sys.stdout = stdout


def _warn(command: str, message: Warning | str) -> None:
    try:
        print(f"vaelayer {command}: warning: {_one_line(message)}", file=sys.stderr)
    except (OSError, ValueError):
        pass


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .run.trainer import DivergenceError

    try:
        return _dispatch(args, parser)
    except MemoryError as exc:
        if args.debug:
            raise
        from .fast.machine import available_memory, format_bytes

        available = available_memory()
        shown = f" ({format_bytes(available)} available now)" if available is not None else ""
        detail = f": {_one_line(exc)}" if str(exc) else ""
        print(f"vaelayer {args.command}: error: out of memory{detail}{shown}; choose smaller sizes (--widths, "
              "--encoder-hidden, --batch-size) or a part of the data (--limit)", file=sys.stderr)
        return _EXIT_FAILURE
    except DivergenceError as exc:  # the run's checkpoint and metrics stay at the last good epoch
        if args.debug:
            raise
        print(f"vaelayer {args.command}: error: {exc}", file=sys.stderr)
        return _EXIT_FAILURE
    except ValueError as exc:  # every user error in the library is a ValueError with a clear message
        if args.debug:
            raise
        message = _name_the_option(exc, (args.run_dir, args.resume)) if args.command == "train" else str(exc)
        print(f"vaelayer {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return _EXIT_USAGE
    except OSError as exc:  # a file-system failure outside the checkpoint writers (plots, folders, ...)
        if args.debug:
            raise
        print(f"vaelayer {args.command}: error: {_one_line(_os_error_message(exc))} (--debug shows the "
              "traceback)", file=sys.stderr)
        return _EXIT_FAILURE
    except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C in another command
        if args.debug:
            raise
        print(f"vaelayer {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "train":
        from .run.runs import train_run

        if args.backend is not None:  # --backend, the old spelling of --path (a new run or a resume)
            from .fast.backend import path_of_old_backend

            old = path_of_old_backend(args.backend, "--backend", stacklevel=2)
            if args.path is not None and args.path != old:
                raise ValueError(f"--backend: {args.backend} (the old spelling of --path {old}) contradicts --path "
                                 f"{args.path}; give --path alone")
            args.path, args.backend = old, None

        if args.resume is not None:
            given = [f.name for f in dataclasses.fields(TrainConfig)
                     if getattr(args, f.name) is not None and f.name not in RESUME_MAY_CHANGE]
            if given or args.run_dir is not None:
                raise ValueError(f"--resume: a resumed run keeps its settings; only {_RESUME_OPTIONS} may be given "
                                 f"(got {', '.join('--' + g.replace('_', '-') for g in given) or '--run-dir'})")
            changes = {k: getattr(args, k) for k in sorted(RESUME_MAY_CHANGE)
                       if k != "epochs" and getattr(args, k) is not None}
            try:
                _, rows, done = train_run(resume=args.resume, epochs=args.epochs, progress=not args.no_progress,
                                          plots=not args.no_plots, changes=changes,
                                          allow_changed_data=args.allow_changed_data)
            except ValueError as exc:
                if type(exc) is not ValueError:
                    raise
                raise ValueError(_name_the_option(exc)) from None
        else:
            if args.allow_changed_data:
                raise ValueError("--allow-changed-data: applies only with --resume (a new run records its data)")
            if args.test_fraction is not None and (not args.data or args.test_data):
                raise ValueError("--test-fraction: applies only with --data and no --test-data (the part of the "
                                 "table held out for testing)")
            config = _config_from_args(args)
            try:
                _, rows, done = train_run(config, run_dir=args.run_dir, progress=not args.no_progress,
                                          plots=not args.no_plots)
            except ValueError as exc:
                if type(exc) is not ValueError:
                    raise
                raise ValueError(_name_the_option(exc)) from None
        return 0 if done else 130
    if args.command == "evaluate":
        from .run.runs import evaluate, load_trainer

        trainer, dataset = load_trainer(args.run, allow_changed_data=args.allow_changed_data,
                                        log=lambda text: _warn(args.command, text.removeprefix("warning: ")))
        result = {"run": str(args.run), "epoch": trainer.epoch, **evaluate(trainer, dataset)}
        if args.json:
            print(json.dumps(result))
        else:
            shown = {k: "- (empty split)" if v is None else f"{v:.4f}" for k, v in result.items()
                     if k.endswith("_acc")}
            print(f"{args.run} after {trainer.epoch} epochs: train {shown['train_acc']}, "
                  f"validation {shown['val_acc']}, test {shown['test_acc']}")
        return 0
    if args.command == "plot":
        from .run.plots import plot_compare
        from .run.runs import plot_run, read_config, read_metrics

        for run in args.runs:
            for path in plot_run(run, allow_changed_data=args.allow_changed_data):
                print(path)
        if len(args.runs) > 1:
            runs = []
            for run in args.runs:
                c = read_config(run)
                runs.append((f"{run.name} ({c.method})", read_metrics(run)))
            out = args.out or args.runs[0]
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out: {out} is a file, not a folder; choose a folder for compare.png")
            out.mkdir(parents=True, exist_ok=True)
            print(plot_compare(runs, out / "compare.png"))
        return 0
    if args.command == "gradcheck":
        from .core.gradcheck import format_table, run_all

        results = run_all(seed=args.seed)
        print(format_table(results))
        return 0 if all(r.passed for r in results) else 1
    if args.command == "bench":
        from .tools.bench import run_bench

        run_bench(repeats=args.repeats, quick=args.quick, json_lines=args.json, threads=args.threads)
        return 0
    if args.command == "reproduce":
        from .tools.reproduce import run_from_args

        return run_from_args(args)
    if args.command == "course":
        from .course.grade import run_from_args as grade_from_args

        return grade_from_args(args)
    parser.error(f"unknown command {args.command}")
    return _EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
