"""The ``vaelayer`` command (also ``python -m vaelayer_np``).

Sub-commands::

    vaelayer train [options]          train a run (default: IFFCL on digits) into ./runs/<new folder>
    vaelayer train --resume RUN       continue an interrupted run
    vaelayer evaluate RUN             accuracy of a run's checkpoint on each split
    vaelayer plot RUN [RUN ...]       (re)draw a run's plots; with several runs also compare.png
    vaelayer gradcheck                finite-difference check of every layer and loss
    vaelayer bench                    speed of the numba and numpy backends (and PyTorch if installed)
    vaelayer reproduce                the benchmark runs of docs/results.md, as a table
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import TrainConfig

_EXIT_USAGE = 2


def _parse_widths(text):
    try:
        widths = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,256,256, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return widths


def _add_config_options(parser):
    """One option per TrainConfig field, with its default and help."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.name == "widths":
            parser.add_argument(flag, type=_parse_widths, default=None, help=help_text)
            continue
        kind = {"dataset": str, "data_dir": str, "limit": int, "output_lr": float, "epochs": int,
                "batch_size": int, "backend": str}.get(f.name, type(f.default))
        suffix = "" if f.default is None else f" (default: {f.default})"
        parser.add_argument(flag, type=kind, default=None, help=help_text + suffix)


def _config_from_args(args):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if getattr(args, f.name) is not None}
    return TrainConfig(**values).validate()


def build_parser():
    parser = argparse.ArgumentParser(prog="vaelayer", description="VAE layers trained with IFFCL, in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a run", description="Train a run; every setting is an option.")
    _add_config_options(p)
    p.add_argument("--run-dir", type=Path, default=None, help="folder for the run (default: a new one under ./runs)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN",
                   help="continue the run in folder RUN (only --epochs may change)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots at the end")

    p = sub.add_parser("evaluate", help="accuracy of a run's checkpoint")
    p.add_argument("run", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("plot", help="draw a run's plots (and compare.png for several runs)")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=None, help="where compare.png goes (default: the first run)")

    p = sub.add_parser("gradcheck", help="finite-difference check of every gradient")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("bench", help="speed of the backends against NumPy, PyTorch and the BLAS limit")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (medians are printed)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and no full epoch")

    from .reproduce import add_arguments as add_reproduce_arguments

    add_reproduce_arguments(sub.add_parser("reproduce", help="run the benchmark configurations over several seeds "
                                                             "and write the results tables"))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args, parser)
    except ValueError as exc:  # every user error in the library is a ValueError with a clear message
        print(f"vaelayer {args.command}: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C in another command
        print(f"vaelayer {args.command}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args, parser):
    if args.command == "train":
        from .runs import train_run

        if args.resume is not None:
            given = [f.name for f in dataclasses.fields(TrainConfig)
                     if getattr(args, f.name) is not None and f.name != "epochs"]
            if given or args.run_dir is not None:
                raise ValueError("--resume: a resumed run keeps its settings; only --epochs may be given "
                                 f"(got {', '.join('--' + g.replace('_', '-') for g in given) or '--run-dir'})")
            _, rows, done = train_run(resume=args.resume, epochs=args.epochs, progress=not args.no_progress,
                                      plots=not args.no_plots)
        else:
            config = _config_from_args(args)
            _, rows, done = train_run(config, run_dir=args.run_dir, progress=not args.no_progress,
                                      plots=not args.no_plots)
        return 0 if done else 130
    if args.command == "evaluate":
        from .runs import evaluate, load_trainer

        trainer, dataset = load_trainer(args.run)
        result = {"run": str(args.run), "epoch": trainer.epoch, **evaluate(trainer, dataset)}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.run} after {trainer.epoch} epochs: train {result['train_acc']:.4f}, "
                  f"validation {result['val_acc']:.4f}, test {result['test_acc']:.4f}")
        return 0
    if args.command == "plot":
        from .plots import plot_compare
        from .runs import plot_run, read_config, read_metrics

        for run in args.runs:
            for path in plot_run(run):
                print(path)
        if len(args.runs) > 1:
            runs = []
            for run in args.runs:
                c = read_config(run)
                runs.append((f"{run.name} ({c.method})", read_metrics(run)))
            out = args.out or args.runs[0]
            out.mkdir(parents=True, exist_ok=True)
            print(plot_compare(runs, out / "compare.png"))
        return 0
    if args.command == "gradcheck":
        from .gradcheck import format_table, run_all

        results = run_all(seed=args.seed)
        print(format_table(results))
        return 0 if all(r.passed for r in results) else 1
    if args.command == "bench":
        from .bench import run_bench

        run_bench(repeats=args.repeats, quick=args.quick)
        return 0
    if args.command == "reproduce":
        from .reproduce import run_from_args

        return run_from_args(args)
    parser.error(f"unknown command {args.command}")
    return _EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
