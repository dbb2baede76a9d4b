r"""Checkers of lesson 05, training and what goes wrong (``notebooks/05_training_and_what_goes_wrong.ipynb``).

* :func:`check_kl_per_unit`: ``kl_per_unit(mu, log_var)`` vs :func:`vaelayer_np.analysis.diagnostics.kl_per_unit`
* :func:`check_active_units`: ``active_units(mu, threshold)`` vs :func:`vaelayer_np.analysis.diagnostics.active_units`
* :func:`check_backprop_epoch`: ``backprop_epoch(net, optimizers, x, y, batch_size, rng)`` trains a small
  network on scikit-learn's digits for a few epochs; the test accuracy it reaches must be high

The settings of the lesson's decline study are here too (:data:`DECLINE_SETTINGS`), so the notebook
and its tests use one source.

Shapes: N examples, K latent units.
"""
from __future__ import annotations

import numpy as np

from ..analysis import diagnostics
from ..core.backprop import loss_and_grads
from ..core.network import Network
from ..core.optim import Adam
from ..run.data import load_dataset
from ..tools.reproduce import PAPER_LIKE
from .answer_keys import recorded
from .checks import Diagnosis, call_student, compare_arrays, run_check

# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "kl_per_unit": ("vaelayer_np.analysis.diagnostics.kl_per_unit", "vaelayer_np.core.ops.kl_diag_gaussian",
                    "vaelayer_np.core.losses.kl_diag_gaussian"),
    "active_units": ("vaelayer_np.analysis.diagnostics.active_units",),
    "backprop_epoch": ("vaelayer_np.core.backprop.train_step", "vaelayer_np.course.lesson05.reference_backprop_epoch",
                       "vaelayer_np.run.trainer.Trainer.train_epoch", "vaelayer_np.run.trainer.Trainer.step"),
}

TOLERANCE = 1e-10

# The paper's reading of IFFCL (vaelayer_np.tools.reproduce.PAPER_LIKE) on digits. beta is raised from 1e-3 to
# 0.0125 so that the KL weighs against the reconstruction as it does on Fashion-MNIST: the reconstruction
# is a mean over D pixels and the KL a sum over units, so what matters is beta * D
# (1e-3 * 784 = 0.78 on Fashion-MNIST, 0.0125 * 64 = 0.80 on digits).
DECLINE_SETTINGS = dict(PAPER_LIKE, beta=0.0125)

BACKPROP_WIDTHS = (32, 32)
BACKPROP_ENCODER_HIDDEN = 64
BACKPROP_EPOCHS = 3
BACKPROP_MIN_ACCURACY = 0.80


@recorded
def check_kl_per_unit(kl_per_unit, n_trials=3, seed=0):
    r"""Check ``kl_per_unit(mu, log_var) -> (K,)``:
    :math:`\mathrm{KL}_k = \frac1N\sum_n -\frac12(1 + \log\sigma^2_{nk} - \mu_{nk}^2 - \sigma^2_{nk})`.

    Random (N, K) inputs with log-variances in [-4, 2].
    """
    def make_inputs(rng):
        shape = (int(rng.integers(5, 12)), int(rng.integers(3, 8)))
        return rng.standard_normal(shape), rng.uniform(-4.0, 2.0, shape)

    def slips(args):
        mu, lv = args
        return {"KL per unit": [
            ("the std exp(log_var / 2) where the variance exp(log_var) belongs",
             -0.5 * np.mean(1 + lv - mu ** 2 - np.exp(0.5 * lv), axis=0)),
            ("the log-variance where the variance belongs", -0.5 * np.mean(1 + lv - mu ** 2 - lv, axis=0))]}

    return compare_arrays("kl_per_unit", kl_per_unit, diagnostics.kl_per_unit, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed, names=("KL per unit",), arg_names=("mu", "log_var"),
                          forbidden=FORBIDDEN["kl_per_unit"], factors=lambda a: (("N", a[0].shape[0]),),
                          slips=slips)


@recorded
def check_active_units(active_units, n_trials=3, seed=0):
    r"""Check ``active_units(mu, threshold) -> (K,) bool``: :math:`\mathrm{Var}_n[\mu_{nk}] > \delta`.

    The units' spreads range from 1e-3 to 1 (variances 1e-6 to 1) around different offsets, so a
    standard deviation in place of the variance, or a mean in place of a variance, gives other units.
    """
    def make_inputs(rng):
        k = 12
        scales = np.logspace(-3, 0, k)
        mu = rng.uniform(-2, 2, k) + scales * rng.standard_normal((40, k))
        return mu, float(rng.choice([1e-3, 1e-2, 3e-2]))

    def body():
        rng = np.random.default_rng(seed)
        wrong = 0
        for _ in range(n_trials):
            mu, threshold = make_inputs(rng)
            got = np.asarray(call_student(active_units, (mu.copy(), threshold), ("mu", "threshold"),
                                          FORBIDDEN["active_units"]))
            want = diagnostics.active_units(mu, threshold)
            if got.shape != want.shape:
                hint = " (a variance over the units, axis=1, instead of over the data, axis=0?)" \
                    if got.shape == (mu.shape[0],) else ""
                return np.inf, False, f"expected a ({mu.shape[1]},) array, got shape {got.shape}{hint}"
            if got.dtype != bool:
                return np.inf, False, (f"expected a boolean array (True = active), got dtype {got.dtype}: "
                                       f"return the comparison itself, var > threshold")
            if not np.array_equal(got, want):
                for description, candidate in (
                        ("the standard deviation where the variance belongs", np.std(mu, axis=0) > threshold),
                        ("the mean square of mu (its size) instead of its variance", np.mean(mu ** 2, axis=0)
                         > threshold),
                        ("'>=' or '<' flipped: True must mean active", np.var(mu, axis=0) < threshold)):
                    if np.array_equal(got, candidate):
                        raise Diagnosis(f"{int(np.sum(got != want))} of {want.size} units classified differently; "
                                        f"it looks like {description}", int(np.sum(got != want)))
            wrong += int(np.sum(got != want))
        return wrong, wrong == 0, "" if wrong == 0 else "units classified differently from the reference"

    return run_check("active_units", body, bound="0 units classified differently")


def make_backprop_setup(seed=0, dtype=np.float32):
    """The network and optimisers :func:`check_backprop_epoch` trains: (net, optimizers).

    ``optimizers`` maps each layer's name ("vae0", "vae1", "output") to an Adam optimiser over its
    parameters (lr 1e-3, the output layer 0.01, the library's defaults).
    """
    net = Network(64, BACKPROP_WIDTHS, 10, seed=seed, encoder_hidden=BACKPROP_ENCODER_HIDDEN, dtype=dtype)
    optimizers = {name: Adam(layer.params, lr=0.01 if name == "output" else 1e-3)
                  for name, layer in net.named_layers()}
    return net, optimizers


def reference_backprop_epoch(net, optimizers, x, y, batch_size, rng):
    """One epoch of end-to-end training (the notebook's solution): shuffle, then per mini-batch
    :func:`vaelayer_np.core.backprop.loss_and_grads` and every layer's optimiser step. Returns the mean loss."""
    order = rng.permutation(x.shape[0])
    total = []
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        result = loss_and_grads(net, x[idx], y[idx], rng=rng)
        for name, grads in result.grads.items():
            optimizers[name].step(grads)
        total.append(result.loss)
    return float(np.mean(total))


@recorded
def check_backprop_epoch(backprop_epoch, epochs=BACKPROP_EPOCHS, min_accuracy=BACKPROP_MIN_ACCURACY, seed=0):
    """Train the network of :func:`make_backprop_setup` on digits for ``epochs`` calls of
    ``backprop_epoch(net, optimizers, x, y, batch_size, rng) -> mean loss`` (batch 32) and measure
    the test accuracy (mean path). It must reach ``min_accuracy``; the reference reached 0.889 (seed 0).
    """
    def body():
        data = load_dataset("digits")
        net, optimizers = make_backprop_setup(seed)
        rng = np.random.default_rng(seed)
        x, y = data.x_train.copy(), data.y_train.copy()
        before = [v.copy() for _, layer in net.named_layers() for v in layer.params.values()]
        losses = []
        for _ in range(epochs):
            loss = call_student(backprop_epoch, (net, optimizers, x, y, 32, rng),
                                ("net", "optimizers", "x", "y", "batch_size", "rng"), FORBIDDEN["backprop_epoch"])
            if loss is None or not np.isfinite(float(loss)):
                return np.inf, False, f"expected the epoch's mean loss (a finite float), got {loss!r}"
            losses.append(float(loss))
        after = [v for _, layer in net.named_layers() for v in layer.params.values()]
        if all(np.array_equal(a, b) for a, b in zip(after, before)):
            raise Diagnosis("the network's parameters did not change: call each layer's optimizers[name].step(grads)")
        accuracy = float(np.mean(net.predict_proba(data.x_test).argmax(1) == data.y_test))
        if accuracy < min_accuracy and np.isfinite(losses).all() and losses[-1] >= losses[0] * 0.95:
            return accuracy, False, (f"mean loss per epoch: {', '.join(f'{v:.3f}' for v in losses)}: it does not "
                                     f"fall. Does each mini-batch take x[idx] with its own labels y[idx]?")
        message = f"mean loss per epoch: {', '.join(f'{v:.3f}' for v in losses)}"
        return accuracy, accuracy >= min_accuracy, message

    return run_check("backprop_epoch", body, bound=f"test accuracy >= {min_accuracy:g} after {epochs} epochs")
