"""``vaelayer reproduce``: the benchmark runs behind docs/results.md, over several seeds, and their tables.

Every experiment is run once per seed, each run in its own folder ``OUT/<experiment>/seed<k>``
(an ordinary run folder, see :mod:`.runs`; the context rows fitted with scikit-learn write the
same ``metrics.jsonl``). The tables are computed from those ``metrics.jsonl`` files, nothing is
typed in: per experiment the mean and the standard deviation over the seeds of the last-epoch test
accuracy, of the test accuracy at the epoch of best validation accuracy, of that validation
accuracy, and of the training seconds.

Fair comparison. Both methods get the same budget (epochs), the same cosine learning-rate
schedule and the same small grid of learning rates. A grid is a *group* of experiments: every
point runs on every seed, and the point with the best validation accuracy (mean over the seeds)
is the one compared (an experiment may also be declared to run its points on the first seed only,
``grid_seeds="first"``, the chosen point then on every seed). Test accuracy plays no part in any
choice.

Robustness. Runs go to child processes (``--jobs`` at a time), each with one BLAS and one Numba
thread. A finished seed is reused, an interrupted one resumed from its checkpoint, so the same
command continues where it stopped. Ctrl-C (or SIGTERM, SIGHUP) stops the whole command: the children (in sessions of
their own, so a terminal's Ctrl-C does not reach them directly) see the command's stop file and
checkpoint between two steps, nothing new is started, and the command exits with code 130; a
second Ctrl-C terminates the children (each then resumes from its last checkpoint). A child whose
parent has gone stops too.

The code is in three rooms: :mod:`.experiments` (the catalogue: what each experiment runs and why),
:mod:`.runner` (one seed in a child process, and the pool of children) and :mod:`.report` (statistics over
the seeds, the choice of a grid's point, the results page). :mod:`.command` is the command; this package
re-exports the public names of all four.

Example::

    vaelayer reproduce --seeds 0,1,2 --jobs 2                 # everything; the same command resumes
    vaelayer reproduce --only digits-iffcl,digits-backprop    # a subset
    vaelayer reproduce --report-only --write-docs docs        # the tables of what is there, no training
"""
from __future__ import annotations

from ...run.signals import StopSignals
from .command import add_arguments, parse_seeds, run_from_args, run_reproduce
from .experiments import (
    ABLATION,
    ABLATION_BASELINES,
    DIGITS_ABLATION,
    DIGITS_ABLATION_BASELINES,
    EXPERIMENTS,
    LAYERS_FILE,
    MOONSHOT_ATTRIBUTION,
    PAPER_LIKE,
    PREDICTIONS_FILE,
    Experiment,
    run_settings,
)
from .report import (
    ablation_table,
    aggregate,
    build_report,
    choose,
    mean_std,
    moonshot_section,
    seeds_for,
    summarise_run,
)
from .runner import layer_figures, run_one, run_tasks

__all__ = ["ABLATION", "ABLATION_BASELINES", "DIGITS_ABLATION", "DIGITS_ABLATION_BASELINES", "EXPERIMENTS",
           "LAYERS_FILE", "MOONSHOT_ATTRIBUTION", "PAPER_LIKE", "PREDICTIONS_FILE", "Experiment", "StopSignals",
           "ablation_table", "add_arguments", "aggregate", "build_report", "choose", "layer_figures", "mean_std",
           "moonshot_section", "parse_seeds", "run_from_args", "run_one", "run_reproduce", "run_settings", "run_tasks",
           "seeds_for", "summarise_run"]
