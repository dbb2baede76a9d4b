r"""Checkers of the capstone (``notebooks/08_capstone.ipynb``): IFFCL from the student's own code.

The student assembles the functions of lessons 01, 02 and 04 into a VAE layer of their own
(``MyVAELayer``), one local IFFCL step of a twin pair (``my_local_step``), the gradients of one
whole training step (``step_gradients``) and an epoch of training (``train_epoch``); a stack of
three layers trained with them on scikit-learn's digits must reach :data:`MIN_ACCURACY` on the test
set, and locality is proved on the student's code.

* :func:`check_my_vae_layer`: ``MyVAELayer.forward(x, eps) -> (out, cache)`` and
  ``MyVAELayer.backward(cache, dz) -> grads`` against :class:`vaelayer_np.core.layers.VAELayer`
  (MSE or BCE, ReLU, ``pass_on="mean"``) with the same parameters and noise; a wrong tensor is
  matched against the usual slips, which are named;
* :func:`check_my_local_step`: ``my_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin)
  -> (grads_a, grads_b, out_a, out_b)`` against the library's layers on the same noise
  (drawn from ``rng``: ``eps_a`` first, then ``eps_b``), with one partner per row (``target`` (N,)) and
  with all pairs (``target`` (N, N), the balanced all-pairs loss);
* :func:`check_capstone_training`: trains the model of ``make_model`` with ``train_epoch`` and
  measures the test accuracy; checks the process too: the returned loss, a new order of the examples
  every epoch drawn from the given ``rng``, and nothing drawn from NumPy's global generator;
* :func:`check_capstone_locality`: ``step_gradients(model, x, y, rng) -> (grads, loss)`` gives layer k's gradients
  bit for bit unchanged when every parameter above layer k changes, and changed when layer k's own do.

In every checker the library's VAE layer, its ops, its losses (but the softmax cross-entropy of the
given output head) and its IFFCL functions are off limits (:func:`vaelayer_np.course.checks.call_student`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.gradcheck import generic_point
from ..core.layers import VAELayer
from .answer_keys import recorded
from .checks import CheckResult, Diagnosis, call_student, compare_values, run_check, tripwires
from .lesson02 import _GRAD_ORDER, _LAYER_SLIPS, reference_layer_backward

MIN_ACCURACY = 0.95
EPOCHS = 20
BATCH_SIZE = 32
TOLERANCE = 1e-9

# Everything of the library that the capstone's own code replaces.
FORBIDDEN_ALL = (
    "vaelayer_np.core.layers.VAELayer.forward", "vaelayer_np.core.layers.VAELayer.backward",
    "vaelayer_np.core.layers.VAELayer.loss_terms", "vaelayer_np.core.layers.Dense.forward",
    "vaelayer_np.core.layers.Dense.backward",
    "vaelayer_np.core.ops.bound_log_var", "vaelayer_np.core.ops.reparameterize",
    "vaelayer_np.core.ops.kl_diag_gaussian", "vaelayer_np.core.ops.latent_backward",
    "vaelayer_np.core.ops.reparameterize_backward", "vaelayer_np.core.ops.bound_log_var_backward",
    "vaelayer_np.core.ops.cosine_embedding", "vaelayer_np.core.ops.cosine_embedding_matrix",
    "vaelayer_np.core.ops.mse_value_and_grad",
    "vaelayer_np.core.losses.mse", "vaelayer_np.core.losses.kl_diag_gaussian",
    "vaelayer_np.core.losses.cosine_embedding", "vaelayer_np.core.losses.cosine_embedding_matrix",
    "vaelayer_np.core.iffcl.make_pairs", "vaelayer_np.core.iffcl.vae_local_step",
    "vaelayer_np.core.iffcl._local_step", "vaelayer_np.core.iffcl.train_step", "vaelayer_np.core.iffcl.twins_step",
    "vaelayer_np.core.iffcl.layer_pair_update", "vaelayer_np.core.iffcl.twin_backward",
    "vaelayer_np.core.iffcl.cosine_term",
    "vaelayer_np.run.trainer.Trainer.train_epoch", "vaelayer_np.run.trainer.Trainer.step",
)
FORBIDDEN = {"my_vae_layer": FORBIDDEN_ALL, "my_local_step": FORBIDDEN_ALL, "training": FORBIDDEN_ALL,
             "locality": FORBIDDEN_ALL}
PARAMS = ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "W_dec", "b_dec")


def _twin_layers(seed: int, d: int = 7, k: int = 4, hidden: int = 5, beta: float = 0.5, bound: float = 3.0,
                 recon: str = "mse") -> tuple:
    """A library VAE layer (float64, relu, MSE or BCE, pass_on="mean") at a generic point, and its inputs."""
    rng = np.random.default_rng(seed)
    layer = generic_point(VAELayer(d, k, beta=beta, encoder_hidden=hidden, log_var_bias_init=-1.0,
                                   log_var_bound=bound, rng=rng, dtype=np.float64, recon=recon), rng)
    layer.params["W_lv"] *= 3.0  # some raw log-variances beyond the bound's linear part
    return layer, rng


def _mine(MyVAELayer: Callable[..., Any], layer: Any, seed: int) -> Any:
    """The student's layer with the library layer's shape, settings and parameters."""
    d, k = layer.params["W_dec"].shape[1], layer.params["W_dec"].shape[0]
    hidden = layer.params["W_enc"].shape[1]
    settings = {} if layer.recon == "mse" else {"recon": layer.recon}
    try:
        mine = MyVAELayer(d, k, hidden, np.random.default_rng(seed), beta=layer.beta, bound=layer.log_var_bound,
                          **settings)
    except TypeError as exc:
        if not settings:
            raise
        raise Diagnosis(f"MyVAELayer(..., recon={layer.recon!r}) failed ({exc}): the constructor takes the "
                        f"reconstruction loss as `recon` (\"mse\" or \"bce\")") from None
    if not isinstance(getattr(mine, "params", None), dict):
        raise Diagnosis("MyVAELayer(...) must have a dict `params` of its parameters")
    missing = [p for p in PARAMS if p not in mine.params]
    if missing:
        raise Diagnosis(f"MyVAELayer's params lack {', '.join(missing)}")
    for name in PARAMS:
        mine.params[name] = layer.params[name].copy()
    return mine


@recorded
def check_my_vae_layer(MyVAELayer: Callable[..., Any], seed: int = 0) -> CheckResult:
    """Check ``MyVAELayer`` (forward and backward) against the library's VAE layer on the same parameters.

    ``MyVAELayer(in_dim, latent_dim, hidden, rng, beta, bound, recon="mse")``; ``forward(x, eps) -> (out,
    cache)`` with ``out = relu(mu)`` and ``cache`` holding at least ``"z"``; ``backward(cache, dz) -> grads``
    (a dict with the eight parameters), the gradients of the layer's negative ELBO plus ``<dz, z>``. Two MSE
    layers and a BCE layer (``recon="bce"``, inputs in [0, 1]). A wrong value is matched against the usual
    slips, which are named: in the forward the sample passed on, the noise missing, the variance or the
    log-variance where the standard deviation belongs; in the backward those of lesson 02's whole backward
    (:func:`vaelayer_np.course.lesson02.reference_layer_backward`: dz missing or entered at mu, beta
    missing, the other reconstruction loss's gradient, ...).
    """
    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for trial, recon in enumerate(("mse", "mse", "bce")):
            layer, rng = _twin_layers(seed + trial, recon=recon)
            mine = _mine(MyVAELayer, layer, seed)
            x = rng.standard_normal((6, 7)) if recon == "mse" else rng.uniform(0.0, 1.0, (6, 7))
            eps = rng.standard_normal((6, 4))
            dz = rng.standard_normal((6, 4))
            got = call_student(mine.forward, (x.copy(), eps.copy()), ("x", "eps"), FORBIDDEN["my_vae_layer"])
            if not (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[1], dict)):
                raise Diagnosis("forward must return (out, cache), cache a dict")
            out, cache = got
            want_out, want_cache = layer.forward(x, eps=eps)
            if "z" not in cache:
                raise Diagnosis("the forward's cache has no \"z\" (the cosine term needs the latent sample)")
            mu, log_var = want_cache["mu"], want_cache["log_var"]
            forward_slips = {
                "out": [("relu(z): the sample passed on, but this layer passes the mean, out = relu(mu)",
                         np.maximum(want_cache["z"], 0.0)),
                        ("mu without the activation: out = relu(mu)", mu)],
                "z": [("mu: the noise is missing, z = mu + exp(log_var / 2) * eps", mu),
                      ("mu + exp(log_var) * eps: the variance where the standard deviation belongs",
                       mu + np.exp(log_var) * eps),
                      ("mu + log_var * eps: the log-variance where the standard deviation belongs",
                       mu + log_var * eps)]}
            try:
                worst = max(worst, compare_values((out, cache["z"]), (want_out, want_cache["z"]), ("out", "z"),
                                                  TOLERANCE, slips=forward_slips))
            except Diagnosis as exc:
                raise Diagnosis(f"MyVAELayer.forward ({recon}): {exc.message}", exc.figure) from None
            grads = call_student(mine.backward, (cache, dz.copy()), ("cache", "dz"), FORBIDDEN["my_vae_layer"])
            if not isinstance(grads, dict):
                raise Diagnosis(f"backward must return a dict of gradients, got {type(grads).__name__}")
            missing = [p for p in PARAMS if p not in grads]
            if missing:
                raise Diagnosis(f"MyVAELayer.backward: no gradient for {', '.join(missing)}")
            _, want = layer.backward(None, want_cache, dz=dz, need_dx=False)
            slips: dict[str, list[Any]] = {p: [] for p in PARAMS}
            for slip in _LAYER_SLIPS:
                try:
                    _, candidate = reference_layer_backward(layer, want_cache, None, dz, 1.0, slip)
                except ValueError:  # not computable on these inputs (BCE's targets must lie in [0, 1])
                    continue
                for p in PARAMS:
                    slips[p].append((_LAYER_SLIPS[slip], candidate[p]))
            try:
                worst = max(worst, compare_values(tuple(grads[p] for p in PARAMS), tuple(want[p] for p in PARAMS),
                                                  PARAMS, TOLERANCE, slips=slips, order=_GRAD_ORDER[:-1]))
            except Diagnosis as exc:
                raise Diagnosis(f"MyVAELayer.backward ({recon}): {exc.message}", exc.figure) from None
        return worst, worst < TOLERANCE, "forward and backward"

    return run_check("MyVAELayer (forward, backward)", body, bound=f"below {TOLERANCE:g}")


def _reference_local_step(layer_a: Any, layer_b: Any, x_a: np.ndarray, x_b: np.ndarray, target: np.ndarray,
                          rng: np.random.Generator, lam: float, margin: float,
                          balanced: bool = True) -> tuple[Any, ...]:
    """The library's local step: one partner per row (``target`` (N,)) or all pairs (``target`` (N, N))."""
    from ..core import ops

    n = x_a.shape[0]
    eps_a = rng.standard_normal((n, layer_a.latent_dim))
    eps_b = rng.standard_normal((n, layer_b.latent_dim))
    out_a, cache_a = layer_a.forward(x_a, eps=eps_a)
    out_b, cache_b = layer_b.forward(x_b, eps=eps_b)
    if np.ndim(target) == 2:
        _, (dz_a, dz_b) = ops.cosine_embedding_matrix(cache_a["z"], cache_b["z"], target, margin, balanced=balanced)
    else:
        _, (dz_a, dz_b) = ops.cosine_embedding(cache_a["z"], cache_b["z"], target, margin)
    return (layer_a.backward(None, cache_a, dz=lam * dz_a, need_dx=False)[1],
            layer_b.backward(None, cache_b, dz=lam * dz_b, need_dx=False)[1], out_a, out_b)


@recorded
def check_my_local_step(my_local_step: Callable[..., Any], MyVAELayer: Callable[..., Any],
                        seed: int = 0) -> CheckResult:
    """Check ``my_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin) -> (grads_a, grads_b, out_a,
    out_b)`` on two of the student's layers, against the library's layers with the same parameters, inputs and
    noise (``eps_a = rng.standard_normal((N, K))`` first, then ``eps_b``): twice with one partner per row
    (``target`` (N,), the cosine embedding loss) and once with all pairs (``target`` (N, N), the balanced
    all-pairs loss). Named slips: lambda forgotten, a plain mean over all pairs, the twins swapped."""
    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for trial, (lam, margin, contrast) in enumerate(((2.0, 0.2, "partner"), (0.5, -0.3, "partner"),
                                                         (3.0, 0.1, "all_pairs"))):
            lib_a, rng = _twin_layers(seed + 10 + trial)
            lib_b, _ = _twin_layers(seed + 20 + trial)
            mine_a, mine_b = _mine(MyVAELayer, lib_a, seed), _mine(MyVAELayer, lib_b, seed)
            x_a, x_b = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
            target = np.where(rng.random(6) < 0.5, 1.0, -1.0)
            target[:2] = (1.0, -1.0)
            if contrast == "all_pairs":  # labels of A's rows against those of B's: +1 where they agree
                y_a, y_b = rng.integers(0, 3, 6), rng.integers(0, 3, 6)
                y_a[:2], y_b[:2] = (0, 1), (0, 0)
                target = np.where(y_a[:, None] == y_b[None, :], 1.0, -1.0)
            noise_seed = int(rng.integers(1 << 30))
            before = {t: {p: m.params[p].copy() for p in PARAMS} for t, m in (("A", mine_a), ("B", mine_b))}
            got = call_student(my_local_step, (mine_a, mine_b, x_a, x_b, target, np.random.default_rng(noise_seed),
                                               lam, margin),
                               ("layer_a", "layer_b", "x_a", "x_b", "target", "rng", "lam", "margin"),
                               FORBIDDEN["my_local_step"])
            for t, m in (("A", mine_a), ("B", mine_b)):
                if any(not np.array_equal(m.params[p], before[t][p]) for p in PARAMS):
                    raise Diagnosis(f"the parameters of twin {t} changed: a step returns gradients, the optimiser "
                                    f"applies them")
            if not (isinstance(got, (tuple, list)) and len(got) == 4):
                raise Diagnosis("expected the return value (grads_a, grads_b, out_a, out_b)")
            want = _reference_local_step(lib_a, lib_b, x_a, x_b, target, np.random.default_rng(noise_seed), lam,
                                         margin)
            names = tuple(f"{t}.{p}" for t in "AB" for p in PARAMS) + ("out_a", "out_b")
            got_flat = tuple(got[i][p] for i in (0, 1) for p in PARAMS) + (got[2], got[3])
            want_flat = tuple(want[i][p] for i in (0, 1) for p in PARAMS) + (want[2], want[3])
            candidates = [("lambda forgotten: the cosine term's gradient enters as lam * dz",
                           _reference_local_step(lib_a, lib_b, x_a, x_b, target, np.random.default_rng(noise_seed),
                                                 1.0, margin))]
            if contrast == "all_pairs":
                candidates.append(("a plain mean over all pairs: the all-pairs term is balanced, the positive "
                                   "and the negative pairs each carry half of it",
                                   _reference_local_step(lib_a, lib_b, x_a, x_b, target,
                                                         np.random.default_rng(noise_seed), lam, margin,
                                                         balanced=False)))
            slips: dict[str, list[Any]] = {name: [] for name in names}
            for description, cand in candidates:
                flat = tuple(cand[i][p] for i in (0, 1) for p in PARAMS) + (cand[2], cand[3])
                for name, value in zip(names, flat):
                    slips[name].append((description, value))
            try:
                worst = max(worst, compare_values(got_flat, want_flat, names, TOLERANCE, slips=slips))
            except Diagnosis as exc:
                swapped = tuple(want[i][p] for i in (1, 0) for p in PARAMS)
                hint = ""
                if all(np.shape(g) == np.shape(w) and np.allclose(g, w, rtol=1e-9, atol=1e-12)
                       for g, w in zip(got_flat[:16], swapped)):
                    hint = "; it looks like the twins' gradients swapped"
                what = "all pairs, target (N, N)" if contrast == "all_pairs" else "one partner per row, target (N,)"
                raise Diagnosis(f"{what}: {exc.message}{hint} (lambda {lam}, margin {margin}; is eps_a drawn before "
                                f"eps_b, both from rng?)", exc.figure) from None
        return worst, worst < TOLERANCE, ""

    return run_check("my_local_step", body, bound=f"below {TOLERANCE:g}")


class _WatchedGenerator(np.random.Generator):
    """The generator handed to ``train_epoch``: the same stream as ``np.random.default_rng(seed)``, and it
    notes the sizes of the orderings drawn from it (``permutation``, ``shuffle``, ``permuted``, ``choice``
    without replacement), so a checker can tell whether an epoch visited the examples in a new order."""

    def __init__(self, seed: int) -> None:
        super().__init__(np.random.PCG64(seed))
        self.orderings: list[int] = []

    def permutation(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        self.orderings.append(int(x) if np.ndim(x) == 0 else len(x))
        return super().permutation(x, *args, **kwargs)

    def shuffle(self, x: Any, *args: Any, **kwargs: Any) -> None:
        self.orderings.append(len(x))
        return super().shuffle(x, *args, **kwargs)

    def permuted(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        self.orderings.append(np.shape(x)[0] if np.ndim(x) else 0)
        return super().permuted(x, *args, **kwargs)

    def choice(self, a: Any, size: Any = None, replace: bool = True,
               *args: Any, **kwargs: Any) -> Any:
        if not replace and size is not None:
            self.orderings.append(int(np.prod(size)))
        return super().choice(a, size, replace, *args, **kwargs)


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ..run.data import load_dataset

    data = load_dataset("digits")
    return data.x_train.astype(np.float64), data.y_train, data.x_test.astype(np.float64), data.y_test


@recorded
def check_capstone_training(train_epoch: Callable[..., Any], make_model: Callable[..., Any],
                            predict: Callable[..., Any], epochs: int = EPOCHS, min_accuracy: float = MIN_ACCURACY,
                            seed: int = 0) -> CheckResult:
    """Train ``make_model(rng)`` with ``train_epoch(model, x, y, rng, batch_size) -> mean loss`` for ``epochs``
    epochs on the digits' training set and measure ``predict(model, x) -> labels`` on the test set: the
    accuracy must reach ``min_accuracy``. Only the student's code trains: the library's layers, ops and IFFCL
    functions are off limits (the given output head's softmax cross-entropy and Adam are allowed). The
    process is checked too: every epoch draws a new order of the examples from the given ``rng`` (a
    generator that notes its orderings, :class:`_WatchedGenerator`), nothing is drawn from NumPy's global
    generator, and the returned loss is a finite float that is not the same every epoch."""
    def body() -> tuple[float, bool, str]:
        x, y, x_test, y_test = _digits()
        rng = _WatchedGenerator(seed)
        model = call_student(make_model, (rng,), ("rng",), FORBIDDEN["training"])
        losses = []
        for epoch in range(epochs):
            legacy_state: Any = np.random.get_state()  # noqa: NPY002 - the global generator, on purpose
            drawn, global_state = len(rng.orderings), legacy_state[1].copy()
            loss = call_student(train_epoch, (model, x, y, rng, BATCH_SIZE),
                                ("model", "x", "y", "rng", "batch_size"), FORBIDDEN["training"])
            now: Any = np.random.get_state()  # noqa: NPY002 - the global generator, on purpose
            if not np.array_equal(now[1], global_state):
                raise Diagnosis("train_epoch drew from NumPy's global generator (np.random.permutation, "
                                "np.random.shuffle, ...): draw everything from the given `rng`, so that a run is "
                                "reproduced by its seed")
            try:
                loss = float(loss)
            except (TypeError, ValueError):
                raise Diagnosis(f"train_epoch must return the epoch's mean loss, a float; got {loss!r}") from None
            if not np.isfinite(loss):
                raise Diagnosis(f"train_epoch returned a loss of {loss}: the training diverged, or the loss "
                                f"returned is not the mean of the mini-batches' losses")
            if len(x) not in rng.orderings[drawn:]:
                raise Diagnosis(f"epoch {epoch + 1} did not draw a new order of the {len(x)} examples from `rng`: "
                                f"without a shuffle every epoch sees the same mini-batches in the same order "
                                f"(use rng.permutation(len(x)))")
            losses.append(loss)
        if len(set(losses)) == 1:
            raise Diagnosis(f"train_epoch returned the same loss, {losses[0]!r}, every epoch: return the mean of "
                            f"this epoch's mini-batch losses")
        with tripwires(FORBIDDEN["training"]):
            labels = np.asarray(predict(model, x_test))
        if labels.shape != y_test.shape:
            raise Diagnosis(f"predict must return one label per test example, shape {y_test.shape}; got {labels.shape}")
        accuracy = float(np.mean(labels == y_test))
        trend = f"mean loss per epoch {losses[0]:.3f} -> {losses[-1]:.3f}"
        if accuracy < min_accuracy and losses[-1] >= losses[0]:
            trend += ": the loss does not fall; are the optimisers' steps taken, with the gradients of the right twin?"
        return accuracy, accuracy >= min_accuracy, f"{epochs} epochs, {trend}"

    return run_check("capstone: a three-layer stack trained by your code", body,
                     bound=f"test accuracy >= {min_accuracy:g}")


@recorded
def check_capstone_locality(step_gradients: Callable[..., Any], make_model: Callable[..., Any], seed: int = 0,
                            shift: float = 0.1) -> CheckResult:
    """Locality on the student's code: ``step_gradients(model, x, y, rng) -> (grads, loss)`` (one training
    step's gradients, ``grads`` with the keys ``"A.vae0"``, ``"B.vae0"``, ..., ``"A.head"``, ``"B.head"``,
    nothing updated).

    From one model and one seed, for each VAE layer k below the top: the gradients of layer k (both twins)
    must be **bit for bit identical** after ``shift`` is added to every parameter of the layers above k and
    of the heads, and must change when layer k's own parameters move (the experiment can fail). The figure
    is the largest change of layer k's gradients (0 when local).
    """
    def grads_of(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
        got = call_student(step_gradients, (model, x, y, np.random.default_rng(seed + 1)), ("model", "x", "y", "rng"),
                           FORBIDDEN["locality"])
        if isinstance(got, (tuple, list)) and len(got) == 2:  # (grads, loss)
            got = got[0]
        if not isinstance(got, dict):
            raise Diagnosis(f"step_gradients must return (grads, loss), grads a dict name -> gradients; got "
                            f"{type(got).__name__}")
        return got

    def shifted(model: Any, names: Sequence[str], amount: Any) -> None:
        for name in names:
            for p in _params_of(model, name).values():
                p += amount

    def body() -> tuple[float, bool, str]:
        x, y, _, _ = _digits()
        x, y = x[:32], y[:32]
        model = call_student(make_model, (np.random.default_rng(seed),), ("rng",), FORBIDDEN["locality"])
        names = sorted(grads_of(model, x, y))
        vae = sorted({n.split(".", 1)[1] for n in names if ".vae" in n})
        if len(vae) < 2:
            raise Diagnosis(f"expected the gradients of at least two VAE layers (A.vae0, B.vae0, A.vae1 ...), got "
                            f"{names}")
        worst = 0.0
        lines = []
        for k, layer in enumerate(vae[:-1]):
            base = grads_of(model, x, y)
            above = [n for n in names if not n.endswith(tuple(vae[:k + 1]))]
            shifted(model, above, shift)
            after = grads_of(model, x, y)
            shifted(model, above, -shift)
            change = max(float(np.max(np.abs(np.asarray(after[t][p]) - np.asarray(base[t][p]))))
                         for t in (f"A.{layer}", f"B.{layer}") for p in base[t])
            head_change = max(float(np.max(np.abs(np.asarray(after[t][p]) - np.asarray(base[t][p]))))
                              for t in above for p in base[t])
            shifted(model, [f"A.{layer}", f"B.{layer}"], shift)
            own = grads_of(model, x, y)
            shifted(model, [f"A.{layer}", f"B.{layer}"], -shift)
            own_change = max(float(np.max(np.abs(np.asarray(own[t][p]) - np.asarray(base[t][p]))))
                             for t in (f"A.{layer}", f"B.{layer}") for p in base[t])
            if own_change == 0.0:
                raise Diagnosis(f"layer {layer}'s gradients did not change when its own parameters moved: the "
                                f"experiment cannot fail; does step_gradients compute them from the model?")
            if head_change == 0.0:
                raise Diagnosis("the gradients of the layers above did not change when their parameters moved: "
                                "does step_gradients use the model's parameters?")
            worst = max(worst, change)
            lines.append(f"layer {k}: its gradients changed by {change:.1g} when everything above moved, and by "
                         f"up to {own_change:.1g} when its own parameters moved (the control)")
        return worst, worst == 0.0, "; ".join(lines)

    return run_check("capstone: locality on your code", body, bound="0: bit for bit identical")


def _params_of(model: Any, name: str) -> dict[str, np.ndarray]:
    """The parameter dict of ``"A.vae1"`` / ``"B.head"`` in the capstone's model (a dict of twins)."""
    twin, part = name.split(".", 1)
    if part.startswith("vae"):
        return model[twin][int(part[3:])].params
    return model[f"head_{twin}"]
