"""vaelayer_np: the Variational Autoencoder Layer and IFFCL local training, in plain NumPy.

The package is split by what a reader wants from it (imports run one way, down this list):

- :mod:`vaelayer_np.core` : the teaching core. The maths and the two training methods, plain
  NumPy, one forward and one backward per layer. Imports nothing else from the package.
- :mod:`vaelayer_np.analysis` : what the trained layers carry (diagnostics) and what they
  generate; built on the core.
- :mod:`vaelayer_np.fast` : the fast path: Numba kernels, the backend table, the buffered
  training step. Built on the core and tested equal to it; chosen by whoever trains.
- :mod:`vaelayer_np.run` : the machinery: settings of a run, datasets and tables,
  checkpoints, run folders, the trainer, plots, the scikit-learn estimator, the command line.
- :mod:`vaelayer_np.tools` : reproduce (experiments over seeds), bench, the course release.
- :mod:`vaelayer_np.course` : the lessons' exercise checkers.

:data:`MODULE_MAP` is the reading order, one place (the README and the docs take theirs
from it). Start with :mod:`vaelayer_np.core.minimal`: the whole method in one file.
Nothing runs at import time.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

# (module, what it holds): the reading order. A student reads the core in this order; the other
# groups are for whoever trains, measures or maintains.
MODULE_MAP = (
    ("core", (
        ("core.minimal", "the whole method in one file: a VAE layer, the cosine term, IFFCL and backprop steps, "
                         "Adam, a training loop on digits (read this first)"),
        ("core.settings", "the model's and the methods' settings: defaults and allowed values (one source)"),
        ("core.activations", "element-wise activations, each with its hand-written gradient"),
        ("core.ops", "the primitives the layers are built from: reparameterisation, KL, latent backward, "
                     "cosine embedding, softmax cross-entropy, Adam's update (one NumPy reference each)"),
        ("core.losses", "the losses as checked public functions (value and gradients)"),
        ("core.layers", "Dense, Activation, VAELayer, OutputLayer: forward -> (out, cache), "
                        "backward(dout, cache) -> (dx, grads)"),
        ("core.network", "a stack of VAE layers and an output layer (one twin)"),
        ("core.optim", "SGD with momentum and Adam over parameter dicts"),
        ("core.iffcl", "IFFCL: twins, pairing, one local loss per layer, no gradient between layers"),
        ("core.backprop", "the baseline: the same network trained end to end"),
        ("core.localnet", "the local-heads baseline: plain dense layers, each trained by its own classifier head "
                          "alone"),
        ("core.gradcheck", "float64 central differences with random upstream gradients; an honest verdict"),
    )),
    ("analysis", (
        ("analysis.diagnostics", "what each latent unit carries: KL per unit, active units, noise against signal"),
        ("analysis.generation", "decoding down the stack, the aggregate posterior, samples and traversals"),
    )),
    ("fast", (
        ("fast.kernels", "Numba kernels mirroring core.ops, each tested against it"),
        ("fast.backend", "the kernel backends of the fast path (which implementation each hot operation uses) "
                         "and the training paths a run can take (readable, fast)"),
        ("fast.training", "the buffered, fused training path of the layers and the optimiser"),
        ("fast.machine", "the machine: cores, memory, BLAS threads (BlasThreads, limit_threads: a with-block's "
                         "limit) and how many threads a run may use (threads='auto' looks at the idle cores)"),
        ("fast.parallel", "IFFCL's twins on two threads, one BLAS thread each: bit-identical to the serial step "
                          "with one BLAS thread (same machine); the path a trainer uses"),
        ("fast.pipeline", "the layers pipelined: depth k on batch t while depth k+1 is on batch t-1, "
                          "bit-identical to the serial step with one BLAS thread (same machine)"),
    )),
    ("run", (
        ("run.config", "TrainConfig: every setting of a run (model, method, data, schedule, threads)"),
        ("run.data", "the datasets: digits, Fashion-MNIST, MNIST, CIFAR-10 from files; checked readers"),
        ("run.tables", "your own tables (CSV, npz): checked, standardised, split"),
        ("run.checkpoint", "atomic, pickle-free checkpoints"),
        ("run.model_file", "the saved estimator's file: what save writes and load checks, entry by entry"),
        ("run.trainer", "the training loop around either method: optimisers, schedule, state"),
        ("run.resume", "what a checkpoint must hold to resume a trainer, every entry checked"),
        ("run.signals", "one stop flag for Ctrl-C, SIGTERM and SIGHUP: a run saves, then stops"),
        ("run.runs", "run folders: train, resume, evaluate, plot"),
        ("run.plots", "the figures of a run and of several runs"),
        ("run.estimator", "VAELayerClassifier: the scikit-learn estimator"),
        ("cli", "the vaelayer command, at the package's top: every sub-command of every sub-package"),
    )),
    ("tools", (
        ("tools.reproduce.command", "`vaelayer reproduce`: every experiment over seeds, resumable; the results tables"),
        ("tools.reproduce.experiments", "the catalogue: what each experiment runs and why"),
        ("tools.reproduce.runner", "one seed in a child process; the pool of children, stopped and resumed"),
        ("tools.reproduce.report", "statistics over seeds, a grid's point chosen on validation, the results page"),
        ("tools.cluster", "reproduce's runs handed to a Dask cluster instead of local child processes"),
        ("tools.bench", "speed against floors and PyTorch, in one run"),
        ("tools.threads_bench", "the measurement behind the default number of BLAS threads"),
        ("tools.estimator_bench", "the estimator beside scikit-learn's models on small tables"),
        ("tools.release_course", "the student notebooks, generated from the solutions"),
    )),
    ("course", (
        ("course.checks", "the checkers' shared machinery (PASS/FAIL with a diagnosis)"),
        ("course.answer_keys", "what gives each exercise's answer away (the answer-leak test reads it)"),
        ("course.capstone", "the capstone's checkers: a student's own VAE layers, IFFCL step and training loop"),
        ("course.guide", "the instructor's guide and syllabus as data: goals, times, rubrics per question"),
        ("course.grade", "grading a class: each submitted notebook's own code checked by the library's checkers "
                         "in a fresh process; grades.csv and feedback per student"),
    )),
)

# The names of the 0.2 flat layout (``vaelayer_np.layers`` ...) still import, with a warning: the
# compatibility shims are in one place, vaelayer_np/_compat.py, with the version that removes them.
from ._compat import MOVED, install_moved_modules  # noqa: E402

install_moved_modules()

# Public names, imported on first use (nothing heavy at import time).
_PUBLIC = {
    "VAELayer": "core.layers", "Dense": "core.layers", "Activation": "core.layers", "OutputLayer": "core.layers",
    "Network": "core.network", "SGD": "core.optim", "Adam": "core.optim",
    "ACTIVATIONS": "core.activations", "get_activation": "core.activations",
    "DEFAULTS": "core.settings", "CHOICES": "run.config", "TrainConfig": "run.config", "Trainer": "run.trainer",
    "VAELayerClassifier": "run.estimator", "load_table": "run.tables", "limit_threads": "fast.machine",
    "NonFiniteError": "core._validate",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    if name in MOVED and "." not in name:
        return importlib.import_module(f".{name}", __name__)  # the old module names, through the hook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC) + ["MODULE_MAP", "__version__"]
