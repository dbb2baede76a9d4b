r"""Checkers of the capstone (``notebooks/08_capstone.ipynb``): IFFCL from the student's own code.

The student assembles the functions of lessons 01, 02 and 04 into a VAE layer of their own
(``MyVAELayer``), one local IFFCL step of a twin pair (``my_local_step``), the gradients of one
whole training step (``step_gradients``) and an epoch of training (``train_epoch``); a stack of
three layers trained with them on scikit-learn's digits must reach :data:`MIN_ACCURACY` on the test
set, and locality is proved on the student's code.

* :func:`check_my_vae_layer`: ``MyVAELayer.forward(x, eps) -> (out, cache)`` and
  ``MyVAELayer.backward(cache, dz) -> grads`` against :class:`vaelayer_np.core.layers.VAELayer`
  (MSE, ReLU, ``pass_on="mean"``) with the same parameters and noise;
* :func:`check_my_local_step`: ``my_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin)
  -> (grads_a, grads_b, out_a, out_b)`` against the library's layers on the same noise
  (drawn from ``rng``: ``eps_a`` first, then ``eps_b``);
* :func:`check_capstone_training`: trains the model of ``make_model`` with ``train_epoch`` and
  measures the test accuracy;
* :func:`check_capstone_locality`: ``step_gradients(model, x, y, rng) -> (grads, loss)`` gives layer k's gradients
  bit for bit unchanged when every parameter above layer k changes, and changed when layer k's own do.

In every checker the library's VAE layer, its ops, its losses (but the softmax cross-entropy of the
given output head) and its IFFCL functions are off limits (:func:`vaelayer_np.course.checks.call_student`).
"""
from __future__ import annotations

import numpy as np

from ..core.gradcheck import generic_point
from ..core.layers import VAELayer
from .checks import Diagnosis, call_student, compare_values, run_check, tripwires
from .answer_keys import recorded

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
    "vaelayer_np.core.iffcl._vae_local_step", "vaelayer_np.core.iffcl.train_step",
    "vaelayer_np.core.iffcl.cosine_term",
    "vaelayer_np.run.trainer.Trainer.train_epoch", "vaelayer_np.run.trainer.Trainer.step",
)
FORBIDDEN = {"my_vae_layer": FORBIDDEN_ALL, "my_local_step": FORBIDDEN_ALL, "training": FORBIDDEN_ALL,
             "locality": FORBIDDEN_ALL}
PARAMS = ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "W_dec", "b_dec")


def _twin_layers(seed, d=7, k=4, hidden=5, beta=0.5, bound=3.0):
    """A library VAE layer (float64, relu, MSE, pass_on="mean") at a generic point, and its inputs."""
    rng = np.random.default_rng(seed)
    layer = generic_point(VAELayer(d, k, beta=beta, encoder_hidden=hidden, log_var_bias_init=-1.0,
                                   log_var_bound=bound, rng=rng, dtype=np.float64), rng)
    layer.params["W_lv"] *= 3.0  # some raw log-variances beyond the bound's linear part
    return layer, rng


def _mine(MyVAELayer, layer, seed):
    """The student's layer with the library layer's shape, settings and parameters."""
    d, k = layer.params["W_dec"].shape[1], layer.params["W_dec"].shape[0]
    hidden = layer.params["W_enc"].shape[1]
    mine = MyVAELayer(d, k, hidden, np.random.default_rng(seed), beta=layer.beta, bound=layer.log_var_bound)
    if not isinstance(getattr(mine, "params", None), dict):
        raise Diagnosis("MyVAELayer(...) must have a dict `params` of its parameters")
    missing = [p for p in PARAMS if p not in mine.params]
    if missing:
        raise Diagnosis(f"MyVAELayer's params lack {', '.join(missing)}")
    for name in PARAMS:
        mine.params[name] = layer.params[name].copy()
    return mine


@recorded
def check_my_vae_layer(MyVAELayer, seed=0):
    """Check ``MyVAELayer`` (forward and backward) against the library's VAE layer on the same parameters.

    ``MyVAELayer(in_dim, latent_dim, hidden, rng, beta, bound)``; ``forward(x, eps) -> (out, cache)`` with
    ``out = relu(mu)`` and ``cache`` holding at least ``"z"``; ``backward(cache, dz) -> grads`` (a dict with
    the eight parameters), the gradients of the layer's negative ELBO plus ``<dz, z>``.
    """
    def body():
        worst = 0.0
        for trial in range(2):
            layer, rng = _twin_layers(seed + trial)
            mine = _mine(MyVAELayer, layer, seed)
            x = rng.standard_normal((6, 7))
            eps = rng.standard_normal((6, 4))
            dz = rng.standard_normal((6, 4))
            got = call_student(mine.forward, (x.copy(), eps.copy()), ("x", "eps"), FORBIDDEN["my_vae_layer"])
            if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict)):
                raise Diagnosis("forward must return (out, cache), cache a dict")
            out, cache = got
            want_out, want_cache = layer.forward(x, eps=eps)
            if "z" not in cache:
                raise Diagnosis("the forward's cache has no \"z\" (the cosine term needs the latent sample)")
            try:
                worst = max(worst, compare_values((out, cache["z"]), (want_out, want_cache["z"]), ("out", "z"),
                                                  TOLERANCE))
            except Diagnosis as exc:
                raise Diagnosis(f"MyVAELayer.forward: {exc.message} (out = relu(mu), the mean path passed on)",
                                exc.figure) from None
            grads = call_student(mine.backward, (cache, dz.copy()), ("cache", "dz"), FORBIDDEN["my_vae_layer"])
            if not isinstance(grads, dict):
                raise Diagnosis(f"backward must return a dict of gradients, got {type(grads).__name__}")
            missing = [p for p in PARAMS if p not in grads]
            if missing:
                raise Diagnosis(f"MyVAELayer.backward: no gradient for {', '.join(missing)}")
            _, want = layer.backward(None, want_cache, dz=dz, need_dx=False)
            try:
                worst = max(worst, compare_values(tuple(grads[p] for p in PARAMS), tuple(want[p] for p in PARAMS),
                                                  PARAMS, TOLERANCE))
            except Diagnosis as exc:
                raise Diagnosis(f"MyVAELayer.backward: {exc.message}", exc.figure) from None
        return worst, worst < TOLERANCE, "forward and backward"

    return run_check("MyVAELayer (forward, backward)", body, bound=f"below {TOLERANCE:g}")


def _reference_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
    from ..core import ops

    n = x_a.shape[0]
    eps_a = rng.standard_normal((n, layer_a.latent_dim))
    eps_b = rng.standard_normal((n, layer_b.latent_dim))
    out_a, cache_a = layer_a.forward(x_a, eps=eps_a)
    out_b, cache_b = layer_b.forward(x_b, eps=eps_b)
    _, (dz_a, dz_b) = ops.cosine_embedding(cache_a["z"], cache_b["z"], target, margin)
    return (layer_a.backward(None, cache_a, dz=lam * dz_a, need_dx=False)[1],
            layer_b.backward(None, cache_b, dz=lam * dz_b, need_dx=False)[1], out_a, out_b)


@recorded
def check_my_local_step(my_local_step, MyVAELayer, seed=0):
    """Check ``my_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin) -> (grads_a, grads_b, out_a,
    out_b)`` on two of the student's layers, against the library's layers with the same parameters, inputs and
    noise (``eps_a = rng.standard_normal((N, K))`` first, then ``eps_b``)."""
    def body():
        worst = 0.0
        for trial, (lam, margin) in enumerate(((2.0, 0.2), (0.5, -0.3))):
            lib_a, rng = _twin_layers(seed + 10 + trial)
            lib_b, _ = _twin_layers(seed + 20 + trial)
            mine_a, mine_b = _mine(MyVAELayer, lib_a, seed), _mine(MyVAELayer, lib_b, seed)
            x_a, x_b = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
            target = np.where(rng.random(6) < 0.5, 1.0, -1.0)
            target[:2] = (1.0, -1.0)
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
            if not (isinstance(got, tuple) and len(got) == 4):
                raise Diagnosis("expected the return value (grads_a, grads_b, out_a, out_b)")
            want = _reference_local_step(lib_a, lib_b, x_a, x_b, target, np.random.default_rng(noise_seed), lam,
                                         margin)
            names = tuple(f"{t}.{p}" for t in "AB" for p in PARAMS) + ("out_a", "out_b")
            got_flat = tuple(got[i][p] for i in (0, 1) for p in PARAMS) + (got[2], got[3])
            want_flat = tuple(want[i][p] for i in (0, 1) for p in PARAMS) + (want[2], want[3])
            try:
                worst = max(worst, compare_values(got_flat, want_flat, names, TOLERANCE))
            except Diagnosis as exc:
                swapped = tuple(want[i][p] for i in (1, 0) for p in PARAMS)
                hint = ""
                if all(np.shape(g) == np.shape(w) and np.allclose(g, w, rtol=1e-9, atol=1e-12)
                       for g, w in zip(got_flat[:16], swapped)):
                    hint = "; it looks like the twins' gradients swapped"
                raise Diagnosis(f"{exc.message}{hint} (lambda {lam}, margin {margin}; is eps_a drawn before eps_b, "
                                f"both from rng?)", exc.figure) from None
        return worst, worst < TOLERANCE, ""

    return run_check("my_local_step", body, bound=f"below {TOLERANCE:g}")


def _digits():
    from ..run.data import load_dataset

    data = load_dataset("digits")
    return data.x_train.astype(np.float64), data.y_train, data.x_test.astype(np.float64), data.y_test


@recorded
def check_capstone_training(train_epoch, make_model, predict, epochs=EPOCHS, min_accuracy=MIN_ACCURACY, seed=0):
    """Train ``make_model(rng)`` with ``train_epoch(model, x, y, rng, batch_size) -> mean loss`` for ``epochs``
    epochs on the digits' training set and measure ``predict(model, x) -> labels`` on the test set: the
    accuracy must reach ``min_accuracy``. Only the student's code trains: the library's layers, ops and IFFCL
    functions are off limits (the given output head's softmax cross-entropy and Adam are allowed)."""
    def body():
        x, y, x_test, y_test = _digits()
        rng = np.random.default_rng(seed)
        model = call_student(make_model, (rng,), ("rng",), FORBIDDEN["training"])
        losses = []
        for _ in range(epochs):
            loss = call_student(train_epoch, (model, x, y, rng, BATCH_SIZE),
                                ("model", "x", "y", "rng", "batch_size"), FORBIDDEN["training"])
            if loss is None or not np.isfinite(float(loss)):
                raise Diagnosis(f"train_epoch must return the epoch's mean loss, a finite float; got {loss!r}")
            losses.append(float(loss))
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
def check_capstone_locality(step_gradients, make_model, seed=0, shift=0.1):
    """Locality on the student's code: ``step_gradients(model, x, y, rng) -> (grads, loss)`` (one training
    step's gradients, ``grads`` with the keys ``"A.vae0"``, ``"B.vae0"``, ..., ``"A.head"``, ``"B.head"``,
    nothing updated).

    From one model and one seed, for each VAE layer k below the top: the gradients of layer k (both twins)
    must be **bit for bit identical** after ``shift`` is added to every parameter of the layers above k and
    of the heads, and must change when layer k's own parameters move (the experiment can fail). The figure
    is the largest change of layer k's gradients (0 when local).
    """
    def grads_of(model, x, y):
        got = call_student(step_gradients, (model, x, y, np.random.default_rng(seed + 1)), ("model", "x", "y", "rng"),
                           FORBIDDEN["locality"])
        if isinstance(got, tuple) and len(got) == 2:  # (grads, loss)
            got = got[0]
        if not isinstance(got, dict):
            raise Diagnosis(f"step_gradients must return (grads, loss), grads a dict name -> gradients; got "
                            f"{type(got).__name__}")
        return got

    def shifted(model, names, amount):
        for name in names:
            for p in _params_of(model, name).values():
                p += amount

    def body():
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
            lines.append(f"layer {k}: change {change:.1g} (own parameters moved: {own_change:.1g})")
        return worst, worst == 0.0, "; ".join(lines)

    return run_check("capstone: locality on your code", body, bound="0: bit for bit identical")


def _params_of(model, name):
    """The parameter dict of ``"A.vae1"`` / ``"B.head"`` in the capstone's model (a dict of twins)."""
    twin, part = name.split(".", 1)
    if part.startswith("vae"):
        return model[twin][int(part[3:])].params
    return model[f"head_{twin}"]
