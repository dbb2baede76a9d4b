r"""Finite-difference gradient checks (library code: the tests and ``vaelayer gradcheck`` use it).

Method (CS231n's, made strict):

* Everything in float64.
* A *random* upstream gradient ``g`` turns a layer into a scalar
  ``L = sum(g * out)`` (plus the layer's local loss where it has one), so that a
  wrong input gradient cannot hide behind an all-ones ``g``.
* Central differences ``(L(w + h) - L(w - h)) / 2h`` for every element of every
  parameter and of the input.
* Error per tensor: ``max |numeric - analytic| / max(max |numeric|, max |analytic|, floor)``,
  the worst element measured against the tensor's own gradient scale. The rounding
  error of a difference is about machine-eps * |L| / h, so a tensor whose gradients are
  1e-4 of |L| or smaller reaches the float64 limit near the 1e-7 tolerance: the checks
  use problems where every tensor's gradient is resolvable.

ReLU-like kinks: if a step of size h crosses a kink, the central difference is
wrong there although the analytic gradient is right. Such elements are found by
comparing the differences at steps h and h/4 (equal to O(h^2) where the function
is smooth); they are measured again with a step 1000 times smaller, and counted
in the ``kinks`` column. Nothing is skipped, so a planted wrong gradient is still
reported.

The verdict is honest about float64 (see :func:`verdict`): each tensor's
``resolution`` is how precisely its finite differences themselves are known.
A tensor passes when its error is below the tolerance, or when the error is
within the resolution *and* that resolution is fine enough to judge; a tensor
whose differences are too imprecise to judge is reported ``unresolved``, which
is not a pass.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .settings import IFFCLSettings, settings_from_keywords

DEFAULT_STEP = 1e-5
DEFAULT_TOL = 1e-7
SCALE_FLOOR = 1e-8
RESOLUTION_LIMIT = 1e-4  # differences less precise than this (relative) cannot judge a gradient


@dataclass
class GradResult:
    """One row of a gradient check: which tensor, its error, and the verdict."""

    name: str
    tensor: str
    shape: tuple
    max_rel_error: float
    status: str  # "pass", "FAIL" or "unresolved" (see :func:`verdict`)
    kinks: int = 0
    resolution: float = 0.0  # the finite differences' own uncertainty, relative to the tensor's scale
    tol: float = DEFAULT_TOL  # the tolerance this row was judged with
    h: float = DEFAULT_STEP  # the finite-difference step used

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def verdict(error: float, resolution: float, tol: float = DEFAULT_TOL) -> str:
    """The pass rule: ``"pass"``, ``"FAIL"`` or ``"unresolved"``.

    * error < tol: pass.
    * error > max(tol, resolution): FAIL: the analytic gradient disagrees with the
      differences by more than the differences' own uncertainty.
    * otherwise (tol <= error <= resolution): the disagreement is within what float64
      differences can resolve. Pass if that resolution is fine (<= RESOLUTION_LIMIT),
      else ``unresolved``: the check cannot judge this tensor and says so.
    * an error or a resolution that is NaN or infinite: FAIL (a comparison with NaN is False both
      ways, so without this a NaN gradient would fall through to "pass").
    """
    if not (np.isfinite(error) and np.isfinite(resolution)):
        return "FAIL"
    if error < tol:
        return "pass"
    if error > max(tol, resolution):
        return "FAIL"
    return "pass" if resolution <= RESOLUTION_LIMIT else "unresolved"


def relative_error(numeric: np.ndarray, analytic: np.ndarray, floor: float = SCALE_FLOOR) -> float:
    """max |numeric - analytic| / max(max |numeric|, max |analytic|, floor)."""
    numeric = np.asarray(numeric, dtype=np.float64)
    analytic = np.asarray(analytic, dtype=np.float64)
    if numeric.shape != analytic.shape:
        raise ValueError(f"analytic: expected shape {numeric.shape}, got {analytic.shape}")
    if numeric.size == 0:
        return 0.0
    scale = max(np.abs(numeric).max(), np.abs(analytic).max(), floor)
    return float(np.abs(numeric - analytic).max() / scale)


def _central(f: Callable[[], float], flat: np.ndarray, i: int, old: float, h: float) -> tuple[float, float]:
    """(f(x + h e_i) - f(x - h e_i)) / 2h, and the larger |f| of the two (for the rounding estimate)."""
    flat[i] = old + h
    f_plus = f()
    flat[i] = old - h
    f_minus = f()
    flat[i] = old
    return (f_plus - f_minus) / (2 * h), max(abs(f_plus), abs(f_minus))


class NumericalGradient(NamedTuple):
    """What :func:`numerical_gradient` measured: the gradient, and how far it can be trusted.

    It unpacks like a tuple, ``grad, kinks, uncertainty = numerical_gradient(f, x)``, or reads by
    name, ``numerical_gradient(f, x).grad``.
    """

    grad: np.ndarray  # the central-difference gradient, shaped like x
    kinks: int  # elements re-measured with a small step (a kink within the step)
    uncertainty: np.ndarray  # |D(h) - D(h/4)| per element, 0 where re-measured


ROUNDING_MARGIN = 64  # a difference D(h/4) can be off by about this many eps * |f| / (h/4) through rounding


def numerical_gradient(f: Callable[[], float], x: np.ndarray,
                       h: float = DEFAULT_STEP) -> NumericalGradient:
    """Central-difference gradient of the scalar ``f()`` with respect to the array ``x``.

    Each element is measured with steps h and h/4. For a smooth function the two
    agree to O(h^2) (about 1e-10 here) plus rounding; if they differ by more than both
    1e-8 (relative) and the rounding the differences can carry
    (``ROUNDING_MARGIN * eps * |f| / (h/4)``: large when |f| is large next to the
    gradient), a kink lies within the step (ReLU at 0, a hinge at its margin): the
    element is measured again with a step h/1000 and counted in ``kinks``. ``x`` is
    perturbed in place (and restored), so ``f`` must read it at call time.

    Returns
    -------
    NumericalGradient, a named tuple:
        grad : array like x
        kinks : int, number of elements re-measured with the small step
        uncertainty : array like x, |D(h) - D(h/4)| for smooth elements (0 where re-measured):
            how far the difference itself can be trusted (rounding, about eps * |f| / h)
    """
    if x.dtype != np.float64:
        raise ValueError(f"x: gradient checks need float64, got {x.dtype}")
    grad = np.zeros_like(x)
    uncertainty = np.zeros_like(x)
    kinks = 0
    flat = x.reshape(-1)  # a view: writing to it perturbs x
    gflat, uflat = grad.reshape(-1), uncertainty.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        coarse, f_size = _central(f, flat, i, old, h)
        fine, _ = _central(f, flat, i, old, h / 4)
        rounding = ROUNDING_MARGIN * np.finfo(np.float64).eps * f_size / (h / 4)
        if abs(coarse - fine) > max(1e-8 * max(1.0, abs(coarse)), rounding):
            kinks += 1
            gflat[i] = _central(f, flat, i, old, h * 1e-3)[0]
        else:
            gflat[i] = coarse
            uflat[i] = abs(coarse - fine)
    return NumericalGradient(grad, kinks, uncertainty)


def check_gradients(name: str, f: Callable[[], float], tensors: dict[str, np.ndarray], analytic: dict[str, Any],
                    h: float = DEFAULT_STEP, tol: float = DEFAULT_TOL) -> list[GradResult]:
    """Compare ``analytic[k]`` with the numerical gradient of ``f`` for each tensor k.

    Parameters
    ----------
    name : str, label for the report
    f : callable () -> float, reads ``tensors`` at call time
    tensors : dict name -> float64 array (perturbed in place, restored)
    analytic : dict name -> array, the hand-written gradients

    The error is :func:`relative_error`. The ``resolution`` is 10x the differences' own
    uncertainty ``|D(h) - D(h/4)|`` relative to the tensor's scale: where gradients are
    tiny next to ``f`` itself, float64 differences cannot confirm their last digits. The
    verdict is :func:`verdict`.
    """
    results = []
    for key, x in tensors.items():
        if key not in analytic:
            raise ValueError(f"analytic: no gradient for tensor {key!r}")
        numeric, kinks, uncertainty = numerical_gradient(f, x, h)
        ana = np.asarray(analytic[key], dtype=np.float64)
        err = relative_error(numeric, ana)
        scale = max(np.abs(numeric).max(initial=0), np.abs(ana).max(initial=0), SCALE_FLOOR)
        resolution = float(10 * uncertainty.max(initial=0.0)) / scale
        results.append(GradResult(name, key, tuple(x.shape), err, verdict(err, resolution, tol), kinks, resolution,
                                  tol, h))
    return results


# ----------------------------------------------------------------------------- layers
def generic_point(layer: Any, rng: Any, scale: float = 0.1) -> Any:
    """Add small random values to every bias of ``layer`` (in place) and return it.

    Freshly initialised biases are exactly 0; with a ReLU encoder a row whose hidden
    units are all inactive then gives mu exactly 0, a kink of act(mu) *at* the point
    itself, where no finite difference can tell the one-sided slopes apart. Checks
    are made at a generic point instead.
    """
    rng = np.random.default_rng(rng)
    for name, p in layer.params.items():
        if name.startswith("b"):
            p += scale * rng.standard_normal(p.shape).astype(p.dtype)
    return layer


def check_layer(layer: Any, x: np.ndarray, rng: Any = None, name: str | None = None, h: float = DEFAULT_STEP,
                tol: float = DEFAULT_TOL, **forward_kwargs: Any) -> list[GradResult]:
    """Check every parameter gradient and the input gradient of ``layer`` at ``x``.

    The scalar is ``L = sum(g * out)`` with a random upstream gradient ``g``.
    For a :class:`~vaelayer_np.core.layers.VAELayer`, ``L`` also includes
    ``neg_elbo_weight`` times the layer's own loss (its negative ELBO) and a random
    gradient ``dz`` on the latent (the IFFCL cosine term's entry point), with the
    noise ``eps`` held fixed.
    """
    from .layers import VAELayer

    rng = np.random.default_rng(rng)
    if layer.dtype != np.float64 or x.dtype != np.float64:
        raise ValueError("layer/x: gradient checks need float64 (build the layer with dtype=np.float64)")
    name = name or type(layer).__name__
    if isinstance(layer, VAELayer):
        sample = forward_kwargs.pop("sample", True)
        eps = forward_kwargs.pop("eps", None)
        if sample and eps is None:
            eps = rng.standard_normal((x.shape[0], layer.latent_dim))
        weight = forward_kwargs.pop("neg_elbo_weight", 1.0)
        out, cache = layer.forward(x, eps=eps, sample=sample)
        dout = rng.standard_normal(out.shape)
        dz = rng.standard_normal(out.shape)

        def f():
            o, c = layer.forward(x, eps=eps, sample=sample)
            return float(np.sum(dout * o) + np.sum(dz * c["z"]) + weight * layer.loss_terms(c)["neg_elbo"])

        dx, grads = layer.backward(dout, cache, dz=dz, neg_elbo_weight=weight)
    else:
        out, cache = layer.forward(x, **forward_kwargs)
        dout = rng.standard_normal(out.shape)

        def f():
            return float(np.sum(dout * layer.forward(x, **forward_kwargs)[0]))

        dx, grads = layer.backward(dout, cache)
    tensors = dict(layer.params)
    tensors["x"] = x
    analytic: dict[str, Any] = dict(grads)
    analytic["x"] = dx
    return check_gradients(name, f, tensors, analytic, h, tol)


def check_loss(name: str, loss_fn: Callable[..., Any], float_args: dict[str, np.ndarray], other_args: tuple = (),
               rng: Any = None, h: float = DEFAULT_STEP, tol: float = DEFAULT_TOL, **kwargs: Any) -> list[GradResult]:
    """Check a loss ``value, grads = loss_fn(*float_args, *other_args, **kwargs)``.

    ``float_args`` is a dict argument name -> float64 array (in call order).
    The scalar is ``c * value`` with a random upstream scalar c, and ``grads``
    must hold one gradient per array in ``float_args``.
    """
    rng = np.random.default_rng(rng)
    names, arrays = list(float_args), list(float_args.values())
    upstream = float(rng.uniform(0.5, 2.0)) * (1 if rng.random() < 0.5 else -1)
    _, grads = loss_fn(*arrays, *other_args, **kwargs)

    def f():
        return upstream * loss_fn(*arrays, *other_args, **kwargs)[0]

    tensors = dict(zip(names, arrays))
    analytic = {key: upstream * g for key, g in zip(names, grads)}
    return check_gradients(name, f, tensors, analytic, h, tol)


# ----------------------------------------------------------------------------- the full sweep
def run_all(seed: int = 0, h: float = DEFAULT_STEP, tol: float = DEFAULT_TOL) -> list[GradResult]:
    """Check every layer and every loss of the library on small float64 problems."""
    from . import losses
    from .activations import ACTIVATIONS
    from .layers import Activation, Dense, OutputLayer, VAELayer
    from .settings import CHOICES

    rng = np.random.default_rng(seed)
    n, d, k, c = 4, 7, 5, 3
    results = []

    def x_(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape)

    results += check_layer(Dense(d, k, rng=rng), x_((n, d)), rng, "Dense")
    for act in ACTIVATIONS:
        results += check_layer(Activation(act), x_((n, d)), rng, f"Activation[{act}]")
    for act in ("relu", "tanh", "identity"):
        for pass_on in CHOICES["pass_on"]:
            layer = VAELayer(d, k, activation=act, beta=0.5, pass_on=pass_on, log_var_bias_init=-1.0,
                             encoder_hidden=0, rng=rng)
            results += check_layer(layer, x_((n, d)), rng, f"VAELayer[{act},{pass_on}]")
    layer = VAELayer(d, k, recon="bce", beta=0.5, log_var_bias_init=-1.0, encoder_hidden=0, rng=rng)
    results += check_layer(layer, rng.uniform(0, 1, (n, d)), rng, "VAELayer[bce]")
    layer = VAELayer(d, k, beta=0.5, log_var_bound=None, encoder_hidden=0, rng=rng)
    results += check_layer(layer, x_((n, d)), rng, "VAELayer[unbounded]")
    layer = VAELayer(d, k, beta=0.5, encoder_hidden=0, rng=rng)
    results += check_layer(layer, x_((n, d)), rng, "VAELayer[eval]", sample=False)
    layer = generic_point(VAELayer(d, k, beta=0.5, encoder_hidden=6, log_var_bias_init=-1.0, rng=rng), rng)
    results += check_layer(layer, x_((n, d)), rng, "VAELayer[defaults,encoder_hidden=6]")
    for act in ("relu", "tanh"):
        layer = generic_point(VAELayer(d, k, activation=act, beta=0.5, encoder_hidden=6, log_var_bias_init=-1.0,
                                       rng=rng), rng)
        results += check_layer(layer, x_((n, d)), rng, f"VAELayer[{act},encoder_hidden=6]")
    for loss in CHOICES["output_loss"]:
        results += check_layer(OutputLayer(d, c, loss=loss, rng=rng), x_((n, d)), rng, f"OutputLayer[{loss}]")

    labels = rng.integers(0, c, n)
    results += check_loss("mse", losses.mse, {"pred": x_((n, d)), "target": x_((n, d))}, rng=rng)
    results += check_loss("bce_with_logits", losses.bce_with_logits,
                          {"logits": 3 * x_((n, d)), "target": rng.uniform(0, 1, (n, d))}, rng=rng)
    results += check_loss("kl_diag_gaussian", losses.kl_diag_gaussian, {"mu": x_((n, k)), "log_var": x_((n, k))},
                          rng=rng)
    target = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    target[:2] = (1.0, -1.0)
    results += check_loss("cosine_embedding", losses.cosine_embedding, {"a": x_((n, k)), "b": x_((n, k))}, (target,),
                          rng=rng, margin=-0.5)
    targets = np.where(rng.random((n, n + 1)) < 0.5, 1.0, -1.0)
    results += check_loss("cosine_embedding_matrix", losses.cosine_embedding_matrix,
                          {"a": x_((n, k)), "b": x_((n + 1, k))}, (targets,), rng=rng, margin=-0.3)
    results += check_loss("softmax_cross_entropy", losses.softmax_cross_entropy, {"logits": x_((n, c))}, (labels,),
                          rng=rng)
    results += check_loss("bce_one_hot", losses.bce_one_hot, {"logits": x_((n, c))}, (labels,), rng=rng)
    results += _check_networks(rng, h, tol)
    results += _check_local_steps(rng, h, tol)
    results += _check_dropout_and_local_blocks(rng, h, tol)
    return results


def _heads_network_point(rng: np.random.Generator, n: int, d: int, c: int) -> tuple:
    """A small float64 Network with a local head on each of its two VAE layers (readout of all layers,
    sampled path, tanh), at a generic point, with a batch, its labels and its noise: (net, x, labels, eps)."""
    from .network import Network

    net = Network(d, (5, 4), c, dtype=np.float64, seed=int(rng.integers(1 << 31)), beta=0.3, log_var_bias_init=0.0,
                  encoder_hidden=3, readout="all", pass_on="sample", activation="tanh", local_heads=True)
    for _, layer in net.named_layers():
        generic_point(layer, rng)
    x, labels = rng.standard_normal((n, d)), rng.integers(0, c, n)
    eps = [rng.standard_normal((n, w)) for w in (5, 4)]
    return net, x, labels, eps


def _check_dropout_and_local_blocks(rng: np.random.Generator, h: float, tol: float) -> list[GradResult]:
    """Dropout with its mask fixed (alone, and in the backprop baseline), and the local-heads method's blocks."""
    from .layers import Dropout, OutputLayer, dropout_mask
    from .localnet import LocalBlock, block_local_step

    n, d, k, c = 5, 6, 4, 3
    mask = dropout_mask((n, d), 0.3, rng)
    mask[0, :2] = (0.0, 1 / 0.7)  # one dropped and one kept entry at least
    results = check_layer(Dropout(), rng.standard_normal((n, d)), rng, "Dropout[mask fixed]", mask=mask)
    net, x, labels, eps = _heads_network_point(rng, n, d, c)
    masks = [dropout_mask((n, w), 0.3, rng) for w in (d, 5)]
    results += check_network(net, x, labels, eps, 0.7, "Network[backprop,heads,dropout masks fixed]", h, tol,
                             head_weight=0.8, masks=masks)
    for hidden, act in ((0, "tanh"), (3, "relu"), (3, "tanh")):
        block = generic_point(LocalBlock(d, k, hidden=hidden, activation=act, rng=rng), rng)
        results += check_layer(block, rng.standard_normal((n, d)), rng, f"LocalBlock[hidden={hidden},{act}]")
        head = generic_point(OutputLayer(k, c, rng=rng), rng)
        x, labels = rng.standard_normal((n, d)), rng.integers(0, c, n)
        mask = dropout_mask((n, d), 0.3, rng)
        step = block_local_step(block, head, x, labels, mask)
        tensors = {f"block.{name}": v for name, v in block.params.items()}
        tensors |= {f"head.{name}": v for name, v in head.params.items()}
        analytic = {f"block.{name}": g for name, g in step.grads.items()}
        analytic |= {f"head.{name}": g for name, g in step.grads_head.items()}
        results += check_gradients(f"local-heads block step[hidden={hidden},{act},dropout mask fixed]",
                                   lambda: block_local_step(block, head, x, labels, mask).loss,  # noqa: B023
                                   tensors, analytic,
                                   h, tol)
    return results


def _check_networks(rng: np.random.Generator, h: float, tol: float) -> list[GradResult]:
    """Whole-network gradients for the backpropagation baseline (every layer's dx is used)."""
    from .network import Network

    n, d, c = 4, 6, 3
    results = []
    for hidden in (0, 3):
        # log_var bias 0 (std 1): with neg_elbo_weight 0 the log-variance heads get their gradient only
        # through the noise, and a small std would make it too small for float64 differences to resolve
        net = Network(d, (5, 4), c, dtype=np.float64, seed=int(rng.integers(1 << 31)), beta=0.3,
                      log_var_bias_init=0.0, encoder_hidden=hidden, readout="last", pass_on="sample")
        for _, layer in net.named_layers():
            generic_point(layer, rng)
        x = rng.standard_normal((n, d))
        labels = rng.integers(0, c, n)
        eps = [rng.standard_normal((n, w)) for w in (5, 4)]
        for weight in (0.0, 0.7):
            name = f"Network[backprop,encoder_hidden={hidden},neg_elbo_weight={weight}]"
            results += check_network(net, x, labels, eps, weight, name, h, tol)
    # with a local classifier head on every VAE layer, their losses added (readout of all layers)
    net, x, labels, eps = _heads_network_point(rng, n, d, c)
    results += check_network(net, x, labels, eps, 0.7, "Network[backprop,local heads]", h, tol, head_weight=0.8)
    return results


CHECK_SETTINGS = IFFCLSettings(lam=1.0, margin=0.0, contrast="partner", cosine_on="latent", head_weight=0.0)
"""The IFFCL settings :func:`check_local_step` checks by default: a plain weight and margin, one partner per row."""


def check_local_step(layer_a: Any, layer_b: Any, x_a: np.ndarray, x_b: np.ndarray, labels_a: np.ndarray,
                     labels_b: np.ndarray, target: np.ndarray | None = None, heads: Any = None,
                     settings: IFFCLSettings | None = None, *, seed: int = 0, name: str = "IFFCL local step",
                     h: float = DEFAULT_STEP, tol: float = DEFAULT_TOL, **old_keywords: Any) -> list[GradResult]:
    r"""Check the gradients of IFFCL's local loss :math:`L_k` of one twin pair (and its local heads).

    The scalar is the step's own ``terms["loss"]`` (:func:`vaelayer_np.core.iffcl.vae_local_step` with
    ``settings``, default :data:`CHECK_SETTINGS`): both twins' negative ELBOs, ``lam`` times the cosine term
    and ``head_weight`` times the heads' losses, with the noise held fixed (drawn from a generator seeded
    with ``seed`` at every call). Every parameter of both twins and of both heads is checked against the
    step's gradients. The settings one keyword at a time (``lam=0.7``) are the old spelling
    (:func:`~vaelayer_np.core.settings.settings_from_keywords`: a DeprecationWarning).
    """
    from .iffcl import vae_local_step

    chosen = settings_from_keywords("check_local_step", settings, old_keywords, base=CHECK_SETTINGS)

    def step() -> Any:
        return vae_local_step(layer_a, layer_b, x_a, x_b, target, np.random.default_rng(seed), chosen,
                              labels_a=labels_a, labels_b=labels_b, heads=heads)

    result = step()
    tensors = {f"A.{k}": v for k, v in layer_a.params.items()} | {f"B.{k}": v for k, v in layer_b.params.items()}
    analytic = {f"A.{k}": g for k, g in result.grads_a.items()} | {f"B.{k}": g for k, g in result.grads_b.items()}
    if heads is not None:
        for twin, head, grads in (("A", heads[0], result.grads_head_a), ("B", heads[1], result.grads_head_b)):
            tensors |= {f"{twin}.head.{k}": v for k, v in head.params.items()}
            analytic |= {f"{twin}.head.{k}": g for k, g in grads.items()}
    return check_gradients(name, lambda: step().terms["loss"], tensors, analytic, h, tol)


def _check_local_steps(rng: np.random.Generator, h: float, tol: float) -> list[GradResult]:
    """IFFCL's local loss of a twin pair: the cosine term on z or on the outputs, with and without heads."""
    from .layers import OutputLayer, VAELayer

    n, d, k, c = 5, 6, 4, 3
    results = []
    for cosine_on, contrast, with_heads in (("latent", "all_pairs", True), ("output", "partner", False),
                                            ("latent", "partner", True)):
        layer_a, layer_b = (generic_point(VAELayer(d, k, activation="tanh", beta=0.5, encoder_hidden=3,
                                                   log_var_bias_init=-1.0, rng=rng), rng) for _ in range(2))
        heads = tuple(generic_point(OutputLayer(k, c, rng=rng), rng) for _ in range(2)) if with_heads else None
        labels_a, labels_b = rng.integers(0, c, n), rng.integers(0, c, n)
        labels_a[:2], labels_b[:2] = (0, 1), (0, 2)  # a positive and a negative pair at least
        target = np.where(labels_a == labels_b, 1.0, -1.0)
        settings = IFFCLSettings(lam=0.7, margin=-0.4, contrast=contrast, cosine_on=cosine_on,
                                 head_weight=0.6 if with_heads else 0.0)
        results += check_local_step(layer_a, layer_b, rng.standard_normal((n, d)), rng.standard_normal((n, d)),
                                    labels_a, labels_b, target, heads, settings, seed=int(rng.integers(1 << 31)),
                                    name=f"IFFCL[{cosine_on},{contrast},heads={with_heads}]", h=h, tol=tol)
    return results


def check_network(net: Any, x: np.ndarray, labels: np.ndarray, eps: Sequence[np.ndarray], neg_elbo_weight: float = 0.0,
                  name: str = "Network", h: float = DEFAULT_STEP, tol: float = DEFAULT_TOL,
                  head_weight: float = 0.0, masks: Sequence[np.ndarray] | None = None) -> list[GradResult]:
    """Check the backpropagation baseline's gradients: every parameter of every layer, and the input.

    The scalar is the network's end-to-end loss (:func:`vaelayer_np.core.backprop.loss_and_grads`)
    with the noise ``eps`` held fixed (with the local heads' losses if the network has heads, and the
    dropout ``masks`` held fixed if given).
    """
    from .backprop import loss_and_grads

    def f():
        return loss_and_grads(net, x, labels, eps=eps, neg_elbo_weight=neg_elbo_weight, head_weight=head_weight,
                              masks=masks).loss

    result = loss_and_grads(net, x, labels, eps=eps, neg_elbo_weight=neg_elbo_weight, need_dx=True,
                            head_weight=head_weight, masks=masks)
    grads, dx = result.grads, result.dx
    tensors = {f"{ln}.{k}": v for ln, layer in net.named_layers() for k, v in layer.params.items()}
    tensors["x"] = x
    analytic: dict[str, Any] = {f"{ln}.{k}": v for ln, g in grads.items() for k, v in g.items()}
    analytic["x"] = dx
    return check_gradients(name, f, tensors, analytic, h, tol)


def format_table(results: list[GradResult]) -> str:
    """The report printed by ``vaelayer gradcheck``."""
    rows = [("name", "tensor", "shape", "max rel error", "resolution", "kinks", "result")]
    for r in results:
        rows.append((r.name, r.tensor, "x".join(map(str, r.shape)) or "()", f"{r.max_rel_error:.2e}",
                     f"{r.resolution:.1e}", str(r.kinks), r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n_fail = sum(r.status == "FAIL" for r in results)
    n_unresolved = sum(r.status == "unresolved" for r in results)
    tols = ", ".join(f"{t:g}" for t in sorted({r.tol for r in results})) or f"{DEFAULT_TOL:g}"
    steps = ", ".join(f"{s:g}" for s in sorted({r.h for r in results})) or f"{DEFAULT_STEP:g}"
    lines.append(f"\n{len(results)} tensors checked, {n_fail} failed, {n_unresolved} unresolved (tolerance "
                 f"{tols}, or within a resolution <= {RESOLUTION_LIMIT:g}; float64 central differences, "
                 f"h={steps})")
    return "\n".join(lines)
