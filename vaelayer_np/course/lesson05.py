r"""Checkers of lesson 05, training and what goes wrong (``notebooks/05_training_and_what_goes_wrong.ipynb``).

* :func:`check_kl_per_unit`: ``kl_per_unit(mu, log_var)`` vs :func:`vaelayer_np.analysis.diagnostics.kl_per_unit`
* :func:`check_active_units`: ``active_units(mu, threshold)`` vs :func:`vaelayer_np.analysis.diagnostics.active_units`
* :func:`check_backprop_epoch`: ``backprop_epoch(net, optimizers, x, y, batch_size, rng)`` trains a small
  network on scikit-learn's digits for a few epochs; the test accuracy it reaches must be high
* :func:`check_head_local_step`: ``head_local_step(layer, head, x, labels, eps, cosine, head_weight)
  -> (loss, grads, head_grads)``, one twin's local step at depth k with its classifier head, against
  :func:`reference_head_local_step` (twin A's part of :func:`vaelayer_np.core.iffcl.vae_local_step`), and the
  student's own gradient check of it, ``gradient_check_head_step(step, seed)``, run on the student's step and
  on wrong steps of the checker's (:func:`make_twin_cosine` gives the exercise its cosine term)

Once :func:`check_head_local_step` has passed, ``reveal("the library's local step with a head")`` prints the
library's code of that step with a reading of it.

The settings of the lesson's decline study are here too (:data:`DECLINE_SETTINGS`), so the notebook
and its tests use one source.

Shapes: N examples, D inputs, K latent units, C classes.
"""
from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..analysis import diagnostics
from ..core import iffcl, ops
from ..core._validate import NonFiniteError
from ..core.backprop import loss_and_grads
from ..core.iffcl import cosine_targets
from ..core.layers import OutputLayer, VAELayer
from ..core.network import Network
from ..core.optim import Adam
from ..run.data import load_dataset
from ..tools.reproduce import PAPER_LIKE
from .answer_keys import recorded, register_reveal
from .checks import (
    CheckResult,
    Diagnosis,
    call_student,
    compare_arrays,
    compare_values,
    describe_value,
    max_relative_error,
    run_check,
    where_in_student_code,
)

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
def check_kl_per_unit(kl_per_unit: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``kl_per_unit(mu, log_var) -> (K,)``:
    :math:`\mathrm{KL}_k = \frac1N\sum_n -\frac12(1 + \log\sigma^2_{nk} - \mu_{nk}^2 - \sigma^2_{nk})`.

    Random (N, K) inputs with log-variances in [-4, 2].
    """
    def make_inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(rng.integers(5, 12)), int(rng.integers(3, 8)))
        return rng.standard_normal(shape), rng.uniform(-4.0, 2.0, shape)

    def slips(args: Any) -> dict[str, Any]:
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
def check_active_units(active_units: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``active_units(mu, threshold) -> (K,) bool``: :math:`\mathrm{Var}_n[\mu_{nk}] > \delta`.

    The units' spreads range from 1e-3 to 1 (variances 1e-6 to 1) around different offsets, so a
    standard deviation in place of the variance, or a mean in place of a variance, gives other units.
    """
    def make_inputs(rng: np.random.Generator) -> tuple[np.ndarray, float]:
        k = 12
        scales = np.logspace(-3, 0, k)
        mu = rng.uniform(-2, 2, k) + scales * rng.standard_normal((40, k))
        return mu, float(rng.choice([1e-3, 1e-2, 3e-2]))

    def body() -> tuple[float, bool, str]:
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


def make_backprop_setup(seed: int = 0, dtype: DTypeLike = np.float32) -> tuple[Network, dict[str, Adam]]:
    """The network and optimisers :func:`check_backprop_epoch` trains: (net, optimizers).

    ``optimizers`` maps each layer's name ("vae0", "vae1", "output") to an Adam optimiser over its
    parameters (lr 1e-3, the output layer 0.01, the library's defaults).
    """
    net = Network(64, BACKPROP_WIDTHS, 10, seed=seed, encoder_hidden=BACKPROP_ENCODER_HIDDEN, dtype=dtype)
    optimizers = {name: Adam(layer.params, lr=0.01 if name == "output" else 1e-3)
                  for name, layer in net.named_layers()}
    return net, optimizers


def reference_backprop_epoch(net: Network, optimizers: dict[str, Adam], x: np.ndarray, y: np.ndarray, batch_size: int,
                             rng: np.random.Generator) -> float:
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
def check_backprop_epoch(backprop_epoch: Callable[..., Any], epochs: int = BACKPROP_EPOCHS,
                         min_accuracy: float = BACKPROP_MIN_ACCURACY, seed: int = 0) -> CheckResult:
    """Train the network of :func:`make_backprop_setup` on digits for ``epochs`` calls of
    ``backprop_epoch(net, optimizers, x, y, batch_size, rng) -> mean loss`` (batch 32) and measure
    the test accuracy (mean path). It must reach ``min_accuracy``; the reference reached 0.889 (seed 0).
    """
    def body() -> tuple[float, bool, str]:
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


# ----------------------------------------------------------------------------- exercise 4: a layer's step with its head
# a local step's answer: (loss, the layer's gradients, the head's gradients)
_StepResult = tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]
HEAD_STEP_TOLERANCE = 1e-9   # the same sums as the library's in another order: only rounding differs
OWN_CHECK_TOLERANCE = 1e-7   # a float64 gradient check (vaelayer_np.core.gradcheck.DEFAULT_TOL)

FORBIDDEN["head_local_step"] = (
    "vaelayer_np.core.iffcl.vae_local_step", "vaelayer_np.core.iffcl.local_head_step",
    "vaelayer_np.core.iffcl.twin_backward", "vaelayer_np.core.iffcl._local_step",
    "vaelayer_np.core.iffcl.layer_terms", "vaelayer_np.core.iffcl.output_local_step",
    "vaelayer_np.core.iffcl.ReadablePath.head_backward", "vaelayer_np.core.iffcl.ReadablePath.output_loss",
    "vaelayer_np.core.iffcl.ReadablePath.output_backward",
    "vaelayer_np.core.losses.softmax_cross_entropy", "vaelayer_np.core.losses.bce_one_hot",
    "vaelayer_np.core.ops.softmax_cross_entropy", "vaelayer_np.core.ops.softmax", "vaelayer_np.core.ops.log_softmax",
    "vaelayer_np.core.layers.OutputLayer.loss", "vaelayer_np.core.layers.OutputLayer.backward",
    "vaelayer_np.core.layers.OutputLayer.predict_proba", "vaelayer_np.core.layers.Dense.backward",
    "vaelayer_np.course.lesson05.reference_head_local_step", "vaelayer_np.course.lesson05.slipped_head_local_step")
# the student's gradient check runs the step it is given: the library's own checks of the step are off limits
FORBIDDEN["gradient_check_head_step"] = FORBIDDEN["head_local_step"] + (
    "vaelayer_np.core.gradcheck.check_local_step",)


class TwinCosine:
    """The cosine term of :func:`make_twin_cosine`: ``cosine(z) -> (value, d_z)``, both times ``lam``, against the
    fixed latent ``z_twin`` with the pairs' ``targets``; ``lam`` and ``margin`` say which term it is."""

    def __init__(self, z_twin: np.ndarray, targets: np.ndarray, lam: float, margin: float) -> None:
        self.z_twin, self.targets, self.lam, self.margin = z_twin, targets, lam, margin

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        value, (d_z, _) = ops.cosine_embedding_matrix(np.asarray(z), self.z_twin, self.targets, self.margin)
        return self.lam * value, self.lam * d_z


def make_twin_cosine(z_twin: Any, labels: Any, labels_twin: Any, lam: float = 10.0, margin: float = 0.5
                     ) -> TwinCosine:
    r"""The IFFCL cosine term of twin A with twin B's latent held fixed: a function ``cosine(z) -> (value, d_z)``.

    ``value`` is :math:`\lambda` times the all-pairs cosine embedding loss of the library's default
    (``contrast="all_pairs"``: :func:`vaelayer_np.core.ops.cosine_embedding_matrix`, balanced, every row of
    ``z`` against every row of ``z_twin``, target +1 where ``labels`` and ``labels_twin`` agree) and ``d_z`` its
    gradient with respect to ``z`` (N, K), also times :math:`\lambda` (lesson 04, exercise 1b). Twin B's
    latent is a constant for twin A's parameters, so twin A's gradients of the twins' local loss are those
    of this term plus A's own negative ELBO and head.
    """
    targets = cosine_targets(np.asarray(labels), np.asarray(labels_twin))
    return TwinCosine(np.array(z_twin, dtype=np.float64), targets, float(lam), float(margin))


def reference_head_local_step(layer: VAELayer, head: OutputLayer, x: np.ndarray, labels: np.ndarray, eps: np.ndarray,
                              cosine: Callable[[np.ndarray], tuple[float, np.ndarray]], head_weight: float
                              ) -> _StepResult:
    r"""The library's local step of one twin at depth k with its classifier head, from the library's pieces:
    ``(loss, grads, head_grads)``.

    .. math:: L = \mathrm{negELBO}(x) + \lambda\cos(z, z_B) + w\,\mathrm{CE}(\mathrm{head}(o), y)

    with the noise ``eps`` held fixed and ``cosine(z) -> (value, d_z)`` the cosine term (times lambda,
    :func:`make_twin_cosine`). As :func:`vaelayer_np.core.iffcl.local_head_step` and
    :func:`vaelayer_np.core.iffcl.twin_backward`: the head reads the layer's output ``o`` (act(mu) or act(z)),
    its gradient times ``head_weight`` trains the head and enters the layer as ``dout``; the cosine's gradient
    enters at z (``dz``); no input gradient (``need_dx=False``).
    """
    out, cache = layer.forward(x, eps=eps)
    logits, head_cache = head.forward(out)
    ce, d_logits = head.loss(logits, labels)
    d_out, head_grads = head.backward(head_weight * d_logits, head_cache, need_dx=True)
    cos_value, d_z = cosine(cache["z"])
    _, grads = layer.backward(d_out, cache, dz=d_z, need_dx=False)
    loss = layer.loss_terms(cache)["neg_elbo"] + cos_value + head_weight * ce
    return float(loss), grads, head_grads


def _layer_grads(layer: VAELayer, cache: dict[str, Any], d_z: np.ndarray | None, d_mu: np.ndarray | None
                 ) -> dict[str, np.ndarray]:
    """The layer's gradients for a gradient ``d_z`` arriving at z and ``d_mu`` at mu (both may be None): the
    backward pass is linear in what arrives, so the part through mu is added to the library's backward."""
    grads = {k: g.copy() for k, g in layer.backward(None, cache, dz=d_z, need_dx=False)[1].items()}
    if d_mu is not None:
        p = layer.params
        enc_in = cache["x"] if cache["h"] is None else cache["h"]
        grads["W_mu"] += enc_in.T @ d_mu
        grads["b_mu"] += d_mu.sum(axis=0)
        if layer.encoder_hidden:
            d_h_pre = layer.act.backward(d_mu @ p["W_mu"].T, cache["h_pre"], cache["h"])
            grads["W_enc"] += cache["x"].T @ d_h_pre
            grads["b_enc"] += d_h_pre.sum(axis=0)
    return grads


HEAD_SLIPS = {
    "w forgotten": "head_weight forgotten: the head's cross-entropy enters the local loss times head_weight, so the "
                   "loss and both gradients (the head's, and the one sent into the layer) carry it",
    "w forgotten in loss": "head_weight forgotten in the loss value (the gradients have it): L = negELBO + cos "
                           "+ head_weight * CE",
    "w forgotten on head": "head_weight forgotten on the head's own gradients: the head learns from the same term "
                           "of the loss, head_weight * CE, as the layer",
    "w forgotten on layer": "head_weight forgotten on the gradient sent into the layer's output (the head's own "
                            "gradients have it)",
    "w twice": "head_weight applied twice on the gradient sent into the layer (head_weight ** 2): the logits' "
               "gradient was scaled by it, then the output's gradient again",
    "w twice everywhere": "head_weight applied twice (head_weight ** 2 in the loss and in every gradient)",
    "ce summed": "the cross-entropy summed over the batch instead of averaged: it is a mean over the N examples, "
                 "so its gradient on the logits has a 1/N",
    "ce summed in grads": "the 1/N of the mean cross-entropy missing in the gradients (the loss is a mean, its "
                          "gradient on the logits is (softmax - onehot) / N)",
    "no one-hot": "the softmax gradient without the one-hot subtraction: d CE / d logits = (softmax - onehot(y)) "
                  "/ N, the label's column gets -1",
    "head on act(z)": "the head read act(z), the sample, but this layer passes act(mu) on (pass_on='mean'): the "
                      "head reads the layer's output, `out` as the forward returns it",
    "head on act(mu)": "the head read act(mu), the mean, but this layer passes act(z) on in training "
                       "(pass_on='sample'): the head reads the layer's output, `out` as the forward returns it",
    "head on z": "the head read the latent z, not the layer's output act(...): the head reads `out`, what the "
                 "layer passes on",
    "head on mu": "the head read mu, not the layer's output act(...): the head reads `out`, what the layer passes on",
    "cos on out": "the cosine term on the layer's output instead of its latent z (the library's cosine_on='latent')",
    "cos as dout": "the cosine's gradient entered at the output (as dout): it is a gradient on z, it enters at z "
                   "(dz=...)",
    "cos missing": "the cosine term left out (of the loss and of the gradients)",
    "cos missing in grads": "the cosine term's gradient left out (the loss has its value): it enters the layer at z",
}


def slipped_head_local_step(layer: VAELayer, head: OutputLayer, x: np.ndarray, labels: np.ndarray, eps: np.ndarray,
                            cosine: Callable[[np.ndarray], tuple[float, np.ndarray]], head_weight: float,
                            slip: str = "") -> _StepResult:
    """:func:`reference_head_local_step` computed step by step, with one slip of :data:`HEAD_SLIPS` planted
    (``slip=""``: none; then equal to the reference): the answers a wrong step is matched against."""
    out, cache = layer.forward(x, eps=eps)
    z, mu, act = cache["z"], cache["mu"], layer.act
    passed_mean = layer.pass_on == "mean"
    n, w = x.shape[0], float(head_weight)
    read = {"head on z": z, "head on mu": mu, "head on act(z)": act.forward(z),
            "head on act(mu)": act.forward(mu)}.get(slip, out)
    logits = read @ head.params["W"] + head.params["b"]
    log_p = ops.log_softmax(logits)
    rows = np.arange(n)
    ce = float(-np.mean(log_p[rows, labels])) * (n if slip == "ce summed" else 1)
    d_logits = np.exp(log_p)
    if slip != "no one-hot":
        d_logits[rows, labels] -= 1.0
    d_logits = d_logits / (1.0 if slip in ("ce summed", "ce summed in grads") else n)
    w_loss = {"w forgotten": 1.0, "w forgotten in loss": 1.0, "w twice everywhere": w * w}.get(slip, w)
    w_head = {"w forgotten": 1.0, "w forgotten on head": 1.0, "w twice everywhere": w * w}.get(slip, w)
    w_layer = {"w forgotten": 1.0, "w forgotten on layer": 1.0, "w twice": w * w, "w twice everywhere": w * w}.get(
        slip, w)
    head_grads = {"W": read.T @ (w_head * d_logits), "b": (w_head * d_logits).sum(axis=0)}
    d_read = (w_layer * d_logits) @ head.params["W"].T
    d_z, d_mu = np.zeros_like(z), np.zeros_like(mu)

    def into_output(d: np.ndarray) -> None:
        # a gradient on the layer's output, through act at what the output is made of
        nonlocal d_z, d_mu
        if passed_mean:
            d_mu = d_mu + act.backward(d, mu, out)
        else:
            d_z = d_z + act.backward(d, z, out)

    if slip == "head on z":
        d_z = d_z + d_read
    elif slip == "head on mu":
        d_mu = d_mu + d_read
    elif slip == "head on act(z)":
        d_z = d_z + act.backward(d_read, z, read)
    elif slip == "head on act(mu)":
        d_mu = d_mu + act.backward(d_read, mu, read)
    else:
        into_output(d_read)
    cos_value, d_cos = cosine(out if slip == "cos on out" else z)
    if slip in ("cos on out", "cos as dout"):
        into_output(d_cos)
    elif slip not in ("cos missing", "cos missing in grads"):
        d_z = d_z + d_cos
    loss = layer.loss_terms(cache)["neg_elbo"] + (0.0 if slip == "cos missing" else cos_value) + w_loss * ce
    return float(loss), _layer_grads(layer, cache, d_z, d_mu), head_grads


# (label, layer settings, head_weight, lam, margin, a head whose logits reach about 1000)
HEAD_STEP_CASES = (
    ("pass_on='mean', relu, MSE", dict(pass_on="mean", activation="relu", recon="mse"), 0.7, 2.0, 0.3, False),
    ("pass_on='sample', tanh, BCE", dict(pass_on="sample", activation="tanh", recon="bce"), 2.5, 0.5, 0.0, False),
    ("logits near 1000 (a head with a large bias)", dict(pass_on="mean", activation="relu", recon="mse"), 1.3, 1.0,
     0.5, True),
)


def head_step_problem(case: tuple[str, dict[str, Any], float, float, float, bool], seed: int = 0, n: int = 7,
                      d: int = 6, hidden: int = 5, k: int = 4, n_classes: int = 3) -> dict[str, Any]:
    """One setting of :data:`HEAD_STEP_CASES` on a small float64 layer and head: a dict with ``label``, ``layer``,
    ``head``, ``x``, ``labels``, ``eps``, ``cosine`` and ``head_weight`` (every class among the labels)."""
    label, settings, weight, lam, margin, large = case
    rng = np.random.default_rng(seed)
    layer = VAELayer(d, k, encoder_hidden=hidden, beta=float(rng.uniform(0.3, 0.9)), log_var_bias_init=-1.0,
                     rng=int(rng.integers(2 ** 31)), **settings)
    for name, value in layer.params.items():  # biases off zero, so that no ReLU sits at its kink
        if name.startswith("b_"):
            value += rng.normal(0.0, 0.3, value.shape)
    head = OutputLayer(k, n_classes, rng=int(rng.integers(2 ** 31)))
    head.params["W"][...] = rng.standard_normal((k, n_classes))      # logits of order 1: a softmax far from uniform
    head.params["b"][...] = [1000.0, 0.0, -1000.0] if large else rng.normal(0.0, 0.5, n_classes)
    labels = rng.permutation(np.arange(n) % n_classes)
    cosine = make_twin_cosine(rng.standard_normal((n, k)), labels, rng.permutation(labels), lam, margin)
    return {"label": label, "layer": layer, "head": head, "x": rng.uniform(0.0, 1.0, (n, d)), "labels": labels,
            "eps": rng.standard_normal((n, k)), "cosine": cosine, "head_weight": weight}


_OVERFLOW = ("exp overflowed (e^1000 is inf in float64, and inf / inf is NaN). The softmax does not change when a "
             "constant is subtracted from a row: subtract each row's maximum first")
_STEP_ARGS = ("layer", "head", "x", "labels", "eps", "cosine", "head_weight")
_LEAK = ("a gradient sent to the layer below: {how}. In IFFCL the layer's input x is a constant (data, or the "
         "output of layer k-1 computed before): its local step computes no gradient for it and sends nothing down "
         "(with the layer's backward: need_dx=False)")


def _watched_backward(layer: Any, seen: list[bool]) -> None:
    """Record, on this layer only, whether each call of its backward asked for the input gradient."""
    original = layer.backward

    def backward(dout: np.ndarray | None, cache: dict[str, Any], dz: np.ndarray | None = None,
                 neg_elbo_weight: float = 1.0, need_dx: bool = True) -> Any:
        seen.append(bool(need_dx))
        return original(dout, cache, dz=dz, neg_elbo_weight=neg_elbo_weight, need_dx=need_dx)

    layer.backward = backward


def _flat(answer: tuple[Any, ...], layer: Any) -> tuple[Any, ...]:
    loss, grads, head_grads = answer
    return (loss,) + tuple(grads[k] for k in layer.params) + (head_grads["W"], head_grads["b"])


def _matches(got: Sequence[Any], candidate: Sequence[Any]) -> bool:
    try:
        return all(np.shape(g) == np.shape(c) and max_relative_error(g, c) < 1e-6 for g, c in zip(got, candidate))
    except Diagnosis:
        return False


def _name_the_slip(got: tuple[Any, ...], p: dict[str, Any]) -> str:
    """The slips of :data:`HEAD_SLIPS` the wrong answer ``got`` (flattened) matches: the whole answer, else
    its parts (the loss, the layer's gradients, the head's gradients) one by one."""
    layer, head, x, labels, eps, cosine, head_weight = (p[a] for a in _STEP_ARGS)
    args = (layer, head, x, labels, eps, cosine, head_weight)
    candidates: dict[str, tuple[Any, ...]] = {}
    for slip in HEAD_SLIPS:
        if (slip == "head on act(mu)" and layer.pass_on == "mean") or (slip == "head on act(z)"
                                                                        and layer.pass_on == "sample"):
            continue  # that is what the head reads: no slip
        with np.errstate(all="ignore"):
            candidates[slip] = _flat(slipped_head_local_step(*args, slip=slip), layer)
    for slip, candidate in candidates.items():
        if _matches(got, candidate):
            return f"it looks like {HEAD_SLIPS[slip]}"
    n_layer = len(layer.params)
    parts = (("the loss", slice(0, 1)), ("the layer's gradients", slice(1, 1 + n_layer)),
             ("the head's gradients", slice(1 + n_layer, None)))
    want = _flat(reference_head_local_step(*args), layer)
    found: dict[str, list[str]] = {}  # slip -> the parts that look like it
    for name, part in parts:
        if _matches(got[part], want[part]):
            continue
        for slip, candidate in candidates.items():
            if _matches(got[part], candidate[part]):
                found.setdefault(slip, []).append(name)
                break
    return "; ".join(f"{' and '.join(names)} look{'s' if names == ['the loss'] else ''} like {HEAD_SLIPS[slip]}"
                     for slip, names in found.items())


def _check_answer(got: Any, p: dict[str, Any], seen: list[bool]) -> None:
    """Structure, locality, the parameters left alone: raise Diagnosis naming what is wrong with one answer."""
    layer, head, label = p["layer"], p["head"], p["label"]
    if True in seen:
        raise Diagnosis(f"{label}: " + _LEAK.format(how="your step called the layer's backward with need_dx=True "
                                                        "(its default), asking for the gradient on x"))
    if isinstance(got, tuple) and len(got) == 4 and np.shape(got[3]) == p["x"].shape:
        raise Diagnosis(f"{label}: " + _LEAK.format(how="your step returns a fourth value shaped like x, a "
                                                        "gradient for the layer below"))
    if not (isinstance(got, tuple) and len(got) == 3 and isinstance(got[1], dict) and isinstance(got[2], dict)):
        raise Diagnosis(f"{label}: expected (loss, grads, head_grads): a float and two dicts, grads keyed like "
                        f"layer.params and head_grads like head.params (W and b); got {describe_value(got)}")
    loss, grads, head_grads = got
    sent_down = [k for k in grads if k in ("x", "dx", "d_x")]
    if sent_down:
        raise Diagnosis(f"{label}: " + _LEAK.format(how=f"grads holds {sent_down[0]!r}, a gradient for the input"))
    vae_in_head = [k for k in head_grads if k in layer.params]
    if vae_in_head:
        raise Diagnosis(f"{label}: head_grads holds the layer's gradients ({', '.join(vae_in_head)}): the head's "
                        f"optimiser would update the head from the VAE loss. The head's parameters appear only in "
                        f"head_weight * CE: head_grads holds their gradients alone, keyed W and b")
    head_in_layer = [k for k in grads if k in head.params]
    if head_in_layer:
        raise Diagnosis(f"{label}: grads holds the head's {', '.join(head_in_layer)}: the layer's gradients and the "
                        f"head's are two dicts, for two optimisers (grads keyed like layer.params, head_grads like "
                        f"head.params)")
    missing = [k for k in layer.params if grads.get(k) is None]
    if missing:
        raise Diagnosis(f"{label}: grads has no {', '.join(missing)} (keyed like layer.params)")
    missing = [k for k in head.params if head_grads.get(k) is None]
    if missing:
        raise Diagnosis(f"{label}: head_grads has no {', '.join(missing)} (keyed like head.params: W and b)")


def _settings_of(layer: Any) -> str:
    """A layer's settings that decide where the head's gradient enters, as words."""
    return (f"pass_on={getattr(layer, 'pass_on', '?')!r}, {getattr(layer, 'activation', '?')}, "
            f"{str(getattr(layer, 'recon', '?')).upper()}")


class _Recorder:
    """A step handed to the student's gradient check: it runs ``step`` and records how it was called."""

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.calls, self.sizes, self.cos_moves = step, 0, 0, True
        self.weights: set[float] = set()
        self.names: tuple[str, ...] = ()
        self.settings: set[str] = set()

    def __call__(self, layer: Any, head: Any, x: np.ndarray, labels: np.ndarray, eps: np.ndarray,
                 cosine: Callable[[np.ndarray], Any], head_weight: float, *rest: Any) -> Any:
        self.calls += 1
        self.settings.add(_settings_of(layer))
        if self.calls == 1:
            self.sizes = int(sum(np.size(v) for v in layer.params.values()) + sum(np.size(v) for v in
                                                                                 head.params.values()))
            self.names = tuple(layer.params) + tuple(f"head.{k}" for k in head.params)
            with np.errstate(all="ignore"):
                _, cache = layer.forward(x, eps=eps)
                self.cos_moves = bool(np.any(np.asarray(cosine(cache["z"])[1]) != 0))
        self.weights.add(float(head_weight))
        return self.step(layer, head, x, labels, eps, cosine, head_weight, *rest)


def _planted_step(kind: str) -> Callable[..., _StepResult]:
    """A wrong step whose gradients are not those of its loss: a right gradient check must see it."""
    def step(layer: VAELayer, head: OutputLayer, x: np.ndarray, labels: np.ndarray, eps: np.ndarray,
             cosine: Callable[[np.ndarray], tuple[float, np.ndarray]], head_weight: float) -> _StepResult:
        loss, grads, head_grads = reference_head_local_step(layer, head, x, labels, eps, cosine, head_weight)
        args = (layer, head, x, labels, eps, cosine, head_weight)
        if kind == "w":
            grads = slipped_head_local_step(*args, slip="w forgotten on layer")[1]
        elif kind == "one-hot":
            head_grads = slipped_head_local_step(*args, slip="no one-hot")[2]
        elif kind == "cos":
            grads = slipped_head_local_step(*args, slip="cos missing in grads")[1]
        else:  # one element of W_mu's gradient off by 1e-5 of the gradient's size
            grads = dict(grads, W_mu=grads["W_mu"].copy())
            g = grads["W_mu"].reshape(-1)
            g[int(np.argmax(np.abs(g)))] += 1e-5 * max(float(np.abs(g).max()), 1e-12)
        return loss, grads, head_grads

    return step


_PLANTED_FOR_CHECK = (
    ("w", "forgets head_weight in the gradient it sends into the layer (its loss has it)"),
    ("one-hot", "leaves the one-hot subtraction out of the head's gradients"),
    ("cos", "leaves the cosine term's gradient out (its loss has it)"),
    ("element", "has one element of W_mu's gradient wrong by 1e-5 of its size"),
)


def _run_own_check(gradient_check: Callable[..., Any], step: Callable[..., Any]) -> tuple[dict[str, float], _Recorder]:
    """The student's gradient check on ``step``: ({name: error}, the recorder)."""
    recorder = _Recorder(step)
    args: tuple[Any, ...] | None = None
    for candidate in ((recorder, 0), (recorder,)):  # (step, seed), or a check that draws its own numbers
        try:
            inspect.signature(gradient_check).bind(*candidate)
        except TypeError:
            continue
        except ValueError:  # no signature to read (a builtin): call it as asked
            pass
        args = candidate
        break
    if args is None:
        raise Diagnosis("your gradient check cannot be called as gradient_check_head_step(step, seed): it takes the "
                        "step to check and a seed")
    errors = call_student(gradient_check, args, ("step", "seed")[:len(args)], FORBIDDEN["gradient_check_head_step"],
                          exercise="the gradient check")
    if isinstance(errors, (list, tuple)) and all(hasattr(r, "tensor") and hasattr(r, "max_rel_error")
                                                 for r in errors):
        errors = {r.tensor: r.max_rel_error for r in errors}  # check_gradients' rows: the same answer
    if not isinstance(errors, dict):
        raise Diagnosis(f"your gradient check returned {describe_value(errors)}: return a dict {{tensor name: max "
                        f"relative error}}")
    try:
        errors = {str(k): float(v) for k, v in errors.items()}
    except (TypeError, ValueError):
        raise Diagnosis("your gradient check's dict must map each tensor's name to its max relative error (a "
                        "number)") from None
    return errors, recorder


def _verify_own_check(gradient_check: Callable[..., Any], step: Callable[..., Any]) -> float:
    """The student's gradient check: run on the student's (right) step it must have run the step and report
    every tensor below the tolerance; run on wrong steps it must see each. Returns its worst error on the
    right step."""
    errors, rec = _run_own_check(gradient_check, step)
    if rec.calls == 0:
        raise Diagnosis("your gradient check never ran the step it was given: it must differentiate the loss that "
                        "step returns by central differences and compare with step's gradients (run it: its "
                        "errors are your proof)")
    bad = [k for k, v in errors.items() if not np.isfinite(v)]
    if bad:
        raise Diagnosis(f"your gradient check reports {errors[bad[0]]} for {bad[0]!r}: a NaN or inf is never an error "
                        f"measure")
    missing = [k for k in rec.names if k not in errors]
    if missing:
        raise Diagnosis(f"your gradient check does not report {', '.join(missing)}: check every parameter of the "
                        f"layer and of the head (as 'head.W' and 'head.b'); a tensor left out is a gradient unproved")
    if rec.calls < 2 * rec.sizes:
        raise Diagnosis(f"your gradient check ran the step {rec.calls} time(s) for {rec.sizes} parameters: central "
                        f"differences evaluate the loss twice per element. A check of a few elements is too loose "
                        f"(a wrong element is missed), and one that never perturbs anything has not been run")
    worst_key = max(rec.names, key=lambda k: errors[k])
    if errors[worst_key] >= OWN_CHECK_TOLERANCE:
        raise Diagnosis(f"your gradient check reports {errors[worst_key]:.2g} for {worst_key!r} on your step, which "
                        f"matches the library's: the check itself is off (a step h far from 1e-5, a one-sided "
                        f"difference, float32, or a ReLU at its kink: move the layer to a generic point)")
    worst = errors[worst_key]
    for kind, description in _PLANTED_FOR_CHECK:
        wrong_errors, wrong_rec = _run_own_check(gradient_check, _planted_step(kind))
        seen = max((wrong_errors.get(k, 0.0) for k in wrong_rec.names), default=0.0)
        if seen >= OWN_CHECK_TOLERANCE:
            continue
        hint = ""
        if kind == "w" and wrong_rec.weights <= {1.0}:
            hint = ("; it calls the step with head_weight = 1, where a forgotten (or doubled) head_weight changes "
                    "nothing: use another weight")
        elif kind == "w" and wrong_rec.weights <= {0.0}:
            hint = "; it calls the step with head_weight = 0, where the head is absent: use a weight other than 0 and 1"
        elif kind == "cos" and not wrong_rec.cos_moves:
            hint = ("; its cosine term has no gradient (lam = 0, or every pair past its margin): give it one, or the "
                    "cosine's part of the step is unproved")
        elif kind == "one-hot":
            hint = "; does it check the head's W and b?"
        elif kind == "element":
            hint = "; a check of a sample of the elements, or an error measured over all tensors at once, misses it"
        raise Diagnosis(f"your gradient check is too loose: on a wrong step of the checker's, which {description}, it "
                        f"reports at most {seen:.2g}, below the tolerance {OWN_CHECK_TOLERANCE:g}{hint}")
    return worst


def _own_check_note(gradient_check: Callable[..., Any], step: Callable[..., Any], layer: Any) -> str:
    """What the student's own gradient check says of the student's (wrong) step, as a clause, or "". ``layer``:
    the layer of the setting where the step is wrong."""
    try:
        errors, rec = _run_own_check(gradient_check, step)
        worst = max((errors.get(k, 0.0) for k in rec.names), default=0.0)
    except Exception:  # noqa: BLE001 - a note only: a check that cannot run says nothing here
        return ""
    if not rec.calls or not np.isfinite(worst):
        return ""
    if worst >= OWN_CHECK_TOLERANCE:
        return f" (your own gradient check sees it too: {worst:.2g})"
    setting = _settings_of(layer)
    if setting not in rec.settings:
        return (f" (your own gradient check passes your step, {worst:.2g}, but it runs the step only with "
                f"{', '.join(sorted(rec.settings))}: it never sees {setting}, where the step is wrong)")
    return (f" (your own gradient check passes it, {worst:.2g}: the slip is in the loss and its gradients alike; a "
            f"gradient check proves that the gradients are those of your loss, not that the loss is the right one)")


@recorded
def check_head_local_step(head_local_step: Callable[..., Any], gradient_check_head_step: Callable[..., Any],
                          seed: int = 0) -> CheckResult:
    r"""Check ``head_local_step(layer, head, x, labels, eps, cosine, head_weight) -> (loss, grads, head_grads)``:
    one twin's local step at depth k with its classifier head, and the student's own gradient check of it,
    ``gradient_check_head_step(step, seed) -> {tensor name: max relative error}``.

    The loss is :math:`\mathrm{negELBO} + \lambda\cos(z, z_B) + w\,\mathrm{CE}(\mathrm{head}(o), y)`, the noise
    fixed, ``cosine(z) -> (value, d_z)`` the given cosine term (:func:`make_twin_cosine`). Compared with
    :func:`reference_head_local_step` (the library's pieces; equal to twin A's part of
    :func:`vaelayer_np.core.iffcl.vae_local_step`) in the settings of :data:`HEAD_STEP_CASES` (pass_on "mean"
    and "sample", relu and tanh, MSE and BCE, head_weight 0.7, 2.5 and 1.3, a head whose logits reach 1000),
    each value by name. Diagnosed: a gradient sent to the layer below (the layer's backward asked for dx, or
    a gradient for x returned), the head's and the layer's gradients mixed (the head updated from the VAE
    loss), a parameter changed in place, and every slip of :data:`HEAD_SLIPS` (head_weight forgotten or
    applied twice, the cross-entropy summed, the one-hot subtraction missing, the head reading the wrong
    tensor, the cosine term misplaced), a softmax or log-softmax that overflows. Then the student's gradient
    check: run on the student's step it must run the step at perturbed parameters, report every tensor of the
    layer and the head, each below 1e-7; run on four wrong steps of the checker's it must see each (else it is
    too loose, and the checker says why: head_weight 1, no cosine gradient, the head not checked, a sample of
    elements). The library's softmax, cross-entropy, head backward and local steps are off limits.
    """
    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for i, case in enumerate(HEAD_STEP_CASES):
            p = head_step_problem(case, seed=seed + i)
            layer, head, label = p["layer"], p["head"], p["label"]
            args = tuple(p[a] for a in _STEP_ARGS)
            want = reference_head_local_step(*args)
            before = {f"layer.params[{k!r}]": v.copy() for k, v in layer.params.items()}
            before.update({f"head.params[{k!r}]": v.copy() for k, v in head.params.items()})
            seen: list[bool] = []
            _watched_backward(layer, seen)
            try:
                with np.errstate(all="ignore"):
                    got = call_student(head_local_step, args, _STEP_ARGS, FORBIDDEN["head_local_step"])
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
            except NonFiniteError as exc:
                if not case[5]:
                    raise
                raise Diagnosis(f"{label}: your step raised {type(exc).__name__} ({exc}){where_in_student_code(exc)}: "
                                f"{_OVERFLOW}") from None
            finally:
                layer.__dict__.pop("backward", None)  # the layer's own method again
            now = {f"layer.params[{k!r}]": v for k, v in layer.params.items()}
            now.update({f"head.params[{k!r}]": v for k, v in head.params.items()})
            moved = [k for k in before if not np.array_equal(before[k], now[k])]
            if moved:
                who = "the head itself (from the layer's loss?)" if moved[0].startswith("head") else "the layer"
                raise Diagnosis(f"{label}: your step changed {moved[0]} in place: it updated {who}. A step returns "
                                f"gradients; each part's optimiser applies its own (the head's: head_grads)")
            _check_answer(got, p, seen)
            got_flat = _flat(got, layer)
            want_flat = _flat(want, layer)
            names = ("loss",) + tuple(layer.params) + ("head.W", "head.b")
            if case[5]:
                values = [np.asarray(v, dtype=np.float64) for v in got_flat]
                if not all(np.all(np.isfinite(v)) for v in values[1:]):
                    raise Diagnosis(f"{label}: your gradients hold NaN or inf: {_OVERFLOW}")
                if not np.isfinite(values[0]):
                    raise Diagnosis(f"{label}: your loss is inf or NaN (your gradients are finite): log(softmax) "
                                    f"underflowed, a probability of exp(-1000) is 0 and log(0) = -inf. Compute the "
                                    f"log-probabilities directly: shifted - log(sum(exp(shifted))), with shifted = "
                                    f"logits - each row's max")
            try:
                worst = max(worst, compare_values(got_flat, want_flat, names, HEAD_STEP_TOLERANCE,
                                                  factors=(("N", p["x"].shape[0]), ("head_weight", p["head_weight"]))))
            except Diagnosis as exc:
                why = _name_the_slip(got_flat, p) if np.isfinite(exc.figure) else ""
                message = f"{label}: {exc.message}" + (f"; {why}" if why else "")
                note = _own_check_note(gradient_check_head_step, head_local_step, layer) \
                    if exc.message.startswith("wrong:") else ""
                raise Diagnosis(message + note, exc.figure) from None
        own = _verify_own_check(gradient_check_head_step, head_local_step)
        return worst, True, (f"in all {len(HEAD_STEP_CASES)} settings; your gradient check proves your step "
                             f"(worst {own:.1e}) and catches the checker's four wrong steps")

    return run_check("head_local_step", body, bound=f"below {HEAD_STEP_TOLERANCE:g} against the library's step")


# ----------------------------------------------------------------------------- shown once exercise 4 is done
_HEAD_STEP_READING = """
Read against yours:

1. `local_head_step`: the head reads the layer's output `out` (act(mu) with pass_on="mean", act(z) with
   pass_on="sample"); `output_loss` is the mean softmax cross-entropy and its gradient on the logits,
   (softmax - onehot) / N, computed from the row-shifted log-softmax (`ops.softmax_cross_entropy`, above).
   The logits' gradient is multiplied by head_weight once, before the head's backward: so the head's own
   gradients and the gradient it sends into `out` both carry head_weight, as the loss does.
2. `head_backward` asks the head for its input gradient (need_dx=True): that input is the layer's output,
   inside depth k. It is the only input gradient of the step.
3. `twin_backward`: the cosine's gradient (already times lambda) enters the layer at z as `dz`; the head's
   enters at the output as `dout`, and the layer's backward takes it through act to mu or to z.
   `vae_backward` is `layer.backward(dout, cache, dz=dz, need_dx=False)`: nothing is sent below.
"""


def _head_step_library_text() -> str:
    parts = ["The library's local step of one twin with its head (vaelayer_np/core/iffcl.py), then its "
             "softmax cross-entropy (vaelayer_np/core/ops.py):\n"]
    for fn in (iffcl.local_head_step, iffcl.twin_backward, iffcl.ReadablePath.vae_backward,
               iffcl.ReadablePath.head_backward, ops.log_softmax, ops.softmax_cross_entropy):
        parts.append(textwrap.dedent(inspect.getsource(fn)))
    return "\n".join(parts) + _HEAD_STEP_READING


register_reveal("the library's local step with a head", ("check_head_local_step",), _head_step_library_text)
