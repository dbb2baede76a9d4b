r"""Lesson 04, the forward-forward family and IFFCL (``notebooks/04_forward_forward_and_iffcl.ipynb``).

Two parts:

* a small forward-forward (FF) layer in Hinton's style, for the lesson's first picture:
  :func:`ff_goodness`, :func:`ff_label_inputs`, :func:`train_ff_layer`, :func:`ff_predict`;
* the checkers of the exercises:
  :func:`check_cosine_embedding` (the cosine embedding loss and its gradients),
  :func:`check_make_pairs_balanced` (the ``balanced`` pairing mode),
  :func:`check_local_step` (one pair of twin layers' local step, against
  :func:`vaelayer_np.core.iffcl.vae_local_step` on the same inputs and noise).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..core import ops
from ..core.gradcheck import check_loss, generic_point
from ..core.iffcl import vae_local_step
from ..core.layers import Dense, VAELayer
from ..core.optim import Adam
from ..core.settings import IFFCLSettings
from .answer_keys import recorded, register_reveal
from .checks import CheckResult, Diagnosis, call_student, check_dtype, compare_values, max_relative_error, run_check


# ----------------------------------------------------------------------------- forward-forward (Hinton 2022)
def ff_goodness(h: np.ndarray) -> np.ndarray:
    r"""FF goodness of each row: the sum of squares of a layer's activity, :math:`G = \sum_j h_j^2`.

    Parameters
    ----------
    h : (N, H) array

    Returns
    -------
    (N,) array
    """
    h = np.asarray(h)
    if h.ndim != 2:
        raise ValueError(f"h: expected a 2-d array (N, H), got shape {h.shape}")
    return np.einsum("nh,nh->n", h, h)


def ff_label_inputs(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Supervised FF input: a one-hot label placed in front of each example.

    With the right label the row is *positive* data, with a wrong label *negative* data.

    Parameters
    ----------
    x : (N, D) array; labels : (N,) ints in [0, n_classes)

    Returns
    -------
    (N, n_classes + D) array of x's dtype
    """
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x, labels: expected shapes (N, D) and (N,), got {x.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels: expected integers in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    one_hot = np.zeros((x.shape[0], n_classes), dtype=x.dtype)
    one_hot[np.arange(x.shape[0]), labels] = 1
    return np.concatenate([one_hot, x], axis=1)


def ff_wrong_labels(labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A wrong label for each example, uniform over the other classes: (N,) ints."""
    return (labels + rng.integers(1, n_classes, labels.shape[0])) % n_classes


def train_ff_layer(x: np.ndarray, labels: np.ndarray, n_classes: int, width: int = 200, epochs: int = 20,
                   batch_size: int = 64, lr: float = 3e-3, threshold: float | None = None, seed: int = 0) -> tuple:
    r"""Train one ReLU layer with Hinton's forward-forward objective; returns the layer and its history.

    Positive data: each example with its own label (:func:`ff_label_inputs`); negative data: with a wrong
    label drawn afresh each batch. With goodness :math:`G = \sum_j h_j^2` of ``h = relu(x W + b)`` and
    threshold :math:`\theta` (default: the width, i.e. mean square activity 1), the loss is

    .. math:: L = \mathrm{softplus}(\theta - G_{pos}) + \mathrm{softplus}(G_{neg} - \theta)

    averaged over the batch: positive data should have goodness above :math:`\theta`, negative data below.
    Its gradient needs only this layer's input and activity: :math:`\partial L/\partial h = 2h\,\partial L/\partial G`.

    Parameters
    ----------
    x : (N, D) float array; labels : (N,) ints; n_classes : int
    width, epochs, batch_size, lr : the layer and its Adam optimiser
    threshold : float or None
    seed : int

    Returns
    -------
    layer : :class:`~vaelayer_np.core.layers.Dense` (apply ``relu(layer.forward(inputs)[0])``)
    history : list of dicts per epoch: mean goodness of positive and negative data, and the loss
    """
    rng = np.random.default_rng(seed)
    theta = float(width if threshold is None else threshold)
    layer = Dense(n_classes + x.shape[1], width, rng=rng, dtype=x.dtype)
    opt = Adam(layer.params, lr=lr)
    history = []
    for _ in range(epochs):
        order = rng.permutation(x.shape[0])
        sums = np.zeros(3)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            pos = ff_label_inputs(x[idx], labels[idx], n_classes)
            neg = ff_label_inputs(x[idx], ff_wrong_labels(labels[idx], n_classes, rng), n_classes)
            both = np.concatenate([pos, neg])
            pre, cache = layer.forward(both)
            h = np.maximum(pre, 0)
            g = ff_goodness(h)
            n = idx.size
            sign = np.concatenate([-np.ones(n), np.ones(n)]).astype(x.dtype)  # softplus(sign * (G - theta))
            margin = sign * (g - theta)
            loss = np.logaddexp(0, margin)
            d_g = 0.5 * (1 + np.tanh(0.5 * margin)) * sign / n  # d softplus(m) / dm = sigmoid(m), no overflow
            d_pre = (2 * h * d_g[:, None]) * (pre > 0)
            _, grads = layer.backward(d_pre.astype(x.dtype), cache, need_dx=False)
            opt.step(grads)
            sums += (g[:n].sum(), g[n:].sum(), loss.sum() / n)
        batches = -(-x.shape[0] // batch_size)
        history.append({"goodness_pos": sums[0] / x.shape[0], "goodness_neg": sums[1] / x.shape[0],
                        "loss": sums[2] / batches})
    return layer, history


def ff_predict(layer: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """FF classification: try every label, predict the one whose input has the highest goodness: (N,) ints."""
    scores = np.stack([ff_goodness(np.maximum(layer.forward(ff_label_inputs(x, np.full(x.shape[0], c), n_classes))[0],
                                              0)) for c in range(n_classes)], axis=1)
    return scores.argmax(axis=1)


# ----------------------------------------------------------------------------- locality
def layer_update_after_one_step(method: str, k: int, perturb_above: bool, x: np.ndarray, y: np.ndarray,
                                seed: int = 0, encoder_hidden: int = 64, widths: Sequence[int] = (32, 32, 32),
                                shift: float = 0.1) -> dict[str, np.ndarray]:
    """The change of VAE layer ``k``'s parameters (net A) in one training step, from a fixed state.

    Builds a :class:`~vaelayer_np.run.trainer.Trainer` (``method`` "iffcl" or "backprop", the readable path,
    float64, plain SGD so that the update is -lr times the gradient; Adam's first step would be
    lr times the gradient's sign and hide how much it changed), optionally adds ``shift`` to every
    parameter of the VAE layers above ``k`` and of the output layers (both twins), takes one step on
    ``(x, y)`` and returns, per parameter of layer ``k``, ``after - before``. Everything else (seed,
    data, pairing, noise) is identical between calls.

    Returns
    -------
    dict parameter name -> array
    """
    from ..run.config import TrainConfig
    from ..run.trainer import Trainer

    config = TrainConfig(dataset="digits", method=method, encoder_hidden=encoder_hidden, widths=tuple(widths),
                         seed=seed, path="readable", dtype="float64", optimizer="sgd", momentum=0.0,
                         lr=0.1)
    trainer = Trainer(config, x.shape[1], int(y.max()) + 1)
    if not 0 <= k < len(widths):
        raise ValueError(f"k: expected a VAE layer index in [0, {len(widths)}), got {k!r}")
    if perturb_above:
        for net in trainer.nets.values():
            for layer in net.vae_layers[k + 1:] + [net.output]:
                for value in layer.params.values():
                    value += shift
    params = trainer.net_a.vae_layers[k].params
    before = {name: value.copy() for name, value in params.items()}
    trainer.step(x.astype(np.float64), y)
    return {name: params[name] - before[name] for name in params}


# ----------------------------------------------------------------------------- exercise 1: cosine embedding
# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
_COSINE = ("vaelayer_np.core.ops.cosine_embedding", "vaelayer_np.core.losses.cosine_embedding",
           "vaelayer_np.core.losses.cosine_similarity", "vaelayer_np.core.ops.cosine_embedding_matrix",
           "vaelayer_np.core.losses.cosine_embedding_matrix")
FORBIDDEN = {
    "cosine_embedding": _COSINE,
    "make_pairs_balanced": ("vaelayer_np.core.iffcl.make_pairs",),
    "local_step": ("vaelayer_np.core.iffcl.vae_local_step", "vaelayer_np.core.iffcl._local_step",
                   "vaelayer_np.core.iffcl.twin_backward", "vaelayer_np.core.iffcl.cosine_term",
                   "vaelayer_np.core.iffcl.train_step", "vaelayer_np.core.iffcl.twins_step") + _COSINE,
}




def _cosine_cases(rng: np.random.Generator) -> Iterator:
    for n, k, margin in ((6, 5, 0.0), (8, 4, 0.3), (5, 7, -0.5)):
        a, b = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        target = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        target[:2] = (1.0, -1.0)
        b[2] = a[2] + 0.3 * b[2]  # a negative pair with a high cosine: above any margin
        target[2] = -1.0
        yield a, b, target, margin


def _cosine_slips(a: np.ndarray, b: np.ndarray, target: np.ndarray, margin: float) -> tuple[list[Any], list[Any]]:
    """What the common slips give on these inputs: (value slips, d_a slips)."""
    n = a.shape[0]
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / (norm_a * norm_b)
    positive = target > 0
    d_cos = np.where(positive, -1.0, (cos > margin).astype(float)) / n
    no_projection = d_cos[:, None] * b / (norm_a * norm_b)[:, None]
    wrong_side = np.where(positive, -1.0, (cos < margin).astype(float)) / n
    value = [("the hinge on the wrong side: max(0, margin - cos) for a negative pair",
              float(np.mean(np.where(positive, 1 - cos, np.maximum(margin - cos, 0))))),
             ("the targets' roles swapped (+1 pairs pushed apart, -1 pairs pulled together)",
              float(np.mean(np.where(~positive, 1 - cos, np.maximum(cos - margin, 0))))),
             ("cos instead of 1 - cos for a positive pair", float(np.mean(np.where(positive, cos,
                                                                                  np.maximum(cos - margin, 0)))))]
    grad = [("b / (|a| |b|) alone: the term - cos * a / |a|^2 (the part of b along a) is missing", no_projection),
            ("the gradient of the hinge's wrong side", wrong_side[:, None] * (b / (norm_a * norm_b)[:, None]
                                                                           - (cos / norm_a ** 2)[:, None] * a)),
            ("every negative pair pushed, also below the margin (the hinge's 0 forgotten)",
             np.where(positive, -1.0, 1.0)[:, None] / n * (b / (norm_a * norm_b)[:, None]
                                                           - (cos / norm_a ** 2)[:, None] * a))]
    return value, grad


@recorded
def check_cosine_embedding(cosine_embedding_fn: Callable[..., Any], tol: float = 1e-7) -> CheckResult:
    r"""Check ``cosine_embedding_fn(a, b, target, margin) -> (value, (d_a, d_b))``.

    Two measures, the worse one is the figure: (1) the value and gradients against
    :func:`vaelayer_np.core.ops.cosine_embedding` on random pairs with both targets and margins
    0, 0.3 and -0.5; (2) a float64 gradient check of the student's own gradients
    (:func:`vaelayer_np.core.gradcheck.check_loss`, random upstream scalar). Then the promise of the
    text: a **zero vector** gives cos = 0 and a finite loss and gradient, never NaN. The library's cosine
    functions are off limits; the inputs must not change; a wrong value or gradient is compared with the
    common slips (the projection term, the hinge's side, a mean over the pairs, the sign).
    """
    names = ("a", "b", "target", "margin")

    def run(a: np.ndarray, b: np.ndarray, target: Any, margin: float) -> tuple[Any, tuple[Any, ...]]:
        got = call_student(cosine_embedding_fn, (a.copy(), b.copy(), target.copy(), margin), names,
                           FORBIDDEN["cosine_embedding"])
        if not (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[1], (tuple, list))
                and len(got[1]) == 2):
            raise Diagnosis("expected the return value (value, (d_a, d_b))")
        return got[0], tuple(got[1])

    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(11)
        worst = 0.0
        for a, b, target, margin in _cosine_cases(rng):
            value, (d_a, d_b) = run(a, b, target, margin)
            want = ops.cosine_embedding(a, b, target, margin)
            value_slips, grad_slips = _cosine_slips(a, b, target, margin)
            try:
                worst = max(worst, compare_values((value, d_a, d_b), (want[0], want[1][0], want[1][1]),
                                                  ("value", "d_a", "d_b"), tol,
                                                  factors=(("N", a.shape[0]),),
                                                  slips={"value": value_slips, "d_a": grad_slips}))
            except Diagnosis as exc:
                raise Diagnosis(f"{exc.message} (margin {margin})", exc.figure) from None
            rows = check_loss("cosine", lambda a_, b_, t_, margin=0.0: run(a_, b_, t_, margin),
                              {"a": a.copy(), "b": b.copy()}, (target,), rng=int(rng.integers(1 << 30)),
                              margin=margin)
            for r in rows:
                if not r.passed:
                    raise Diagnosis(f"your gradient d_{r.tensor} fails its own gradient check (error "
                                    f"{r.max_rel_error:.2g}, margin {margin}): it is not the gradient of your value",
                                    r.max_rel_error)
                worst = max(worst, r.max_rel_error)
        # a zero vector: cos = 0 (eps in each squared norm), never NaN
        a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
        a[0] = 0.0
        b[1] = 0.0
        target = np.array([1.0, -1.0, 1.0, -1.0])
        with np.errstate(all="ignore"):
            value, (d_a, d_b) = run(a, b, target, -0.2)
        if not (np.isfinite(value) and np.all(np.isfinite(d_a)) and np.all(np.isfinite(d_b))):
            raise Diagnosis("a zero vector gives NaN or inf: 0 / 0 in the cosine. Add eps to each squared norm "
                            "(|a|^2 + eps) so that a zero vector has cos = 0 and a finite gradient")
        want = ops.cosine_embedding(a, b, target, -0.2)
        try:
            worst = max(worst, compare_values((value, d_a, d_b), (want[0], want[1][0], want[1][1]),
                                              ("value", "d_a", "d_b"), tol))
        except Diagnosis as exc:
            raise Diagnosis(f"with a zero vector among the rows: {exc.message} (cos must be 0 there, with eps "
                            f"added to each squared norm)", exc.figure) from None
        return worst, worst < tol, "zero vectors included"

    return run_check("cosine_embedding", body, bound=f"below {tol:g}")


# ----------------------------------------------------------------------------- exercise 2: balanced pairs
@recorded
def check_make_pairs_balanced(make_pairs_fn: Callable[..., Any], low: float = 0.47, high: float = 0.53) -> CheckResult:
    """Check ``make_pairs_fn(labels, rng) -> (partner, target)`` for the ``balanced`` mode.

    * ``partner``: N valid indices; ``target``: float64, +1 exactly where ``labels == labels[partner]``,
      else -1;
    * the fraction of positive pairs lies in [low, high] on a batch of 4000 with 10 equal classes
      (the figure; ``random`` pairing gives about 0.1 there) and on an imbalanced batch
      (70% of one class);
    * the partners are spread (at least a quarter of the batch serves as a partner);
    * a batch of one class gives only positive pairs;
    * the randomness comes from ``rng`` only: the same seed gives the same pairs whatever the state of
      ``np.random``, and two seeds give different pairs;
    * ``labels`` is left unchanged, and ``iffcl.make_pairs`` is off limits.
    """
    def one(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        out = call_student(make_pairs_fn, (labels, np.random.default_rng(seed)), ("labels", "rng"),
                           FORBIDDEN["make_pairs_balanced"])
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise Diagnosis("expected the return value (partner, target)")
        partner, target = np.asarray(out[0]), np.asarray(out[1])
        n = labels.shape[0]
        if partner.shape != (n,) or target.shape != (n,):
            raise Diagnosis(f"partner and target must have shape ({n},), got {partner.shape} and {target.shape}")
        if partner.dtype.kind not in "iu" or partner.min() < 0 or partner.max() >= n:
            raise Diagnosis(f"partner must hold integer indices in [0, {n}), got dtype {partner.dtype}, "
                            f"range {partner.min()}..{partner.max()}")
        check_dtype("target", target)
        right = np.where(labels == labels[partner], 1.0, -1.0)
        if not np.array_equal(target, right):
            wrong = int(np.sum(target != right))
            how = " (all with the sign flipped)" if np.array_equal(target, -right) else ""
            raise Diagnosis(f"{wrong} of {n} targets are wrong{how}: +1 exactly where labels[i] == "
                            f"labels[partner[i]], -1 elsewhere")
        return partner, target

    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(12)
        uniform = rng.integers(0, 10, 4000)
        np.random.seed(101)  # noqa: NPY002 - the global generator, on purpose
        partner, target = one(uniform, 1)
        fraction = float(np.mean(target > 0))
        if not low <= fraction <= high:
            return fraction, False, ("the positive fraction should be about 1/2: with probability 1/2 a partner "
                                     "of the same class, else one of another class")
        if np.unique(partner).size < uniform.size // 4:
            return fraction, False, (f"only {np.unique(partner).size} distinct partners among {uniform.size}: "
                                     f"draw each partner at random within its group")
        np.random.seed(202)  # noqa: NPY002 - the global generator, on purpose
        again, _ = one(uniform, 1)
        if not np.array_equal(again, partner):
            return fraction, False, ("the same rng seed gave other pairs: use only `rng` for randomness "
                                     "(rng.random, rng.integers, rng.choice), not np.random.* or random.*")
        other, _ = one(uniform, 2)
        if np.array_equal(other, partner):
            return fraction, False, ("two different rng seeds gave the same pairs: draw from the `rng` you are "
                                     "given, not from a generator seeded inside your function")
        skewed = np.where(rng.random(4000) < 0.7, 0, rng.integers(1, 10, 4000))
        _, target = one(skewed, 2)
        skew_fraction = float(np.mean(target > 0))
        if not low <= skew_fraction <= high:
            return skew_fraction, False, ("with 70% of the batch in one class the positive fraction is "
                                          f"{skew_fraction:.3f}: choose same class / other class first, "
                                          "each with probability 1/2")
        _, target = one(np.full(50, 3), 3)
        if not np.all(target > 0):
            return fraction, False, "a batch of one class must give only positive pairs"
        return fraction, True, f"imbalanced batch {skew_fraction:.3f}; randomness from rng only"

    return run_check("make_pairs (balanced)", body, bound=f"between {low:g} and {high:g}")


# ----------------------------------------------------------------------------- exercise 3: the local step


def local_step_problem(seed: int = 0, n: int = 6, d: int = 7, k: int = 4) -> dict[str, Any]:
    """Twin float64 VAE layers with different initialisations, their inputs, targets and noise.

    Returns
    -------
    dict with layer_a, layer_b, x_a, x_b (N, D), target (N,), eps_a, eps_b (N, K), and noise_seed:
    ``vae_local_step(..., rng=np.random.default_rng(noise_seed))`` draws exactly eps_a, then eps_b.
    """
    rng = np.random.default_rng(seed)
    layer_a = generic_point(VAELayer(d, k, beta=0.5, encoder_hidden=5, log_var_bias_init=-1.0, rng=rng), rng)
    layer_b = generic_point(VAELayer(d, k, beta=0.5, encoder_hidden=5, log_var_bias_init=-1.0, rng=rng), rng)
    target = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    target[:2] = (1.0, -1.0)
    noise_seed = int(rng.integers(1 << 30))
    noise = np.random.default_rng(noise_seed)
    eps_a = noise.standard_normal((n, k))
    eps_b = noise.standard_normal((n, k))
    return {"layer_a": layer_a, "layer_b": layer_b, "x_a": rng.standard_normal((n, d)),
            "x_b": rng.standard_normal((n, d)), "target": target, "eps_a": eps_a, "eps_b": eps_b,
            "noise_seed": noise_seed}


def _reference_local_step(p: dict[str, Any], lam: float, margin: float, swap_eps: bool = False,
                          target_sign: float = 1.0, on_output: bool = False, swap_dz: bool = False,
                          as_dout: bool = False) -> tuple:
    """The local step written out, with optional slips (for the diagnosis of a wrong answer)."""
    eps_a, eps_b = (p["eps_b"], p["eps_a"]) if swap_eps else (p["eps_a"], p["eps_b"])
    out_a, cache_a = p["layer_a"].forward(p["x_a"], eps=eps_a)
    out_b, cache_b = p["layer_b"].forward(p["x_b"], eps=eps_b)
    a, b = (out_a, out_b) if on_output else (cache_a["z"], cache_b["z"])
    _, (d_a, d_b) = ops.cosine_embedding(a, b, target_sign * p["target"], margin)
    if swap_dz:
        d_a, d_b = d_b, d_a
    if on_output or as_dout:
        return (p["layer_a"].backward(lam * d_a, cache_a, need_dx=False)[1],
                p["layer_b"].backward(lam * d_b, cache_b, need_dx=False)[1])
    return (p["layer_a"].backward(None, cache_a, dz=lam * d_a, need_dx=False)[1],
            p["layer_b"].backward(None, cache_b, dz=lam * d_b, need_dx=False)[1])


@recorded
def check_local_step(local_step_fn: Callable[..., Any], tol: float = 1e-9) -> CheckResult:
    """Check ``local_step_fn(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin) -> (grads_a, grads_b)``.

    The reference is :func:`vaelayer_np.core.iffcl.vae_local_step` on the same layers, inputs, targets and
    noise (``cosine_on="latent"``, ``contrast="partner"``), for two settings of lambda and the margin. The
    figure is the worst relative error over every parameter of both twins; the layers' parameters and the
    inputs must be left unchanged (a step computes gradients; the optimiser applies them). The library's
    local step and cosine functions are off limits (use your ``cosine_embedding_loss``). A wrong answer is
    compared with the common slips: the twins swapped, lambda forgotten, the targets flipped, the noise of
    the wrong twin, the cosine on the outputs instead of the latents.
    """
    names = ("layer_a", "layer_b", "x_a", "x_b", "target", "eps_a", "eps_b", "lam", "margin")

    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for seed, lam, margin in ((0, 2.0, 0.2), (1, 0.5, -0.3)):
            p = local_step_problem(seed)
            before = {name: {k: v.copy() for k, v in p[name].params.items()} for name in ("layer_a", "layer_b")}
            got = call_student(local_step_fn, (p["layer_a"], p["layer_b"], p["x_a"], p["x_b"], p["target"],
                                               p["eps_a"], p["eps_b"], lam, margin), names, FORBIDDEN["local_step"])
            for name in ("layer_a", "layer_b"):
                changed = [k for k, v in p[name].params.items() if not np.array_equal(v, before[name][k])]
                if changed:
                    return np.inf, False, (f"the parameters of {name} changed ({', '.join(changed)}): return "
                                           f"gradients, do not update (the optimiser applies them)")
            if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(g, dict) for g in got)):
                return np.inf, False, "expected the return value (grads_a, grads_b), two dicts"
            want = vae_local_step(p["layer_a"], p["layer_b"], p["x_a"], p["x_b"], p["target"],
                                  np.random.default_rng(p["noise_seed"]),
                                  IFFCLSettings(lam=lam, margin=margin, contrast="partner", cosine_on="latent"))
            keys = sorted(want.grads_a)
            for twin, g in (("A", got[0]), ("B", got[1])):
                missing = sorted(set(keys) - set(g))
                if missing:
                    return np.inf, False, f"twin {twin}: no gradient for {', '.join(missing)}"
            slip_cases = {
                "the twins' gradients swapped (A's returned as B's)": (want.grads_b, want.grads_a),
                "lambda forgotten (the cosine term's gradient not multiplied by lam)":
                    _reference_local_step(p, 1.0, margin),
                "the targets flipped (+1 pairs pushed apart)": _reference_local_step(p, lam, margin, target_sign=-1),
                "the noise of the wrong twin (eps_b for A, eps_a for B)":
                    _reference_local_step(p, lam, margin, swap_eps=True),
                "the cosine on the outputs act(mu) instead of the latents z": _reference_local_step(p, lam, margin,
                                                                                                 on_output=True),
                "the cosine term left out (only the negative ELBOs)": _reference_local_step(p, 0.0, margin),
                "the cosine gradient of the wrong twin (dz_b given to A, dz_a to B)":
                    _reference_local_step(p, lam, margin, swap_dz=True),
                "the cosine's gradient on z passed as dout: it enters at z, as dz=":
                    _reference_local_step(p, lam, margin, as_dout=True),
            }
            got_flat = tuple(np.asarray(got[t][k]) for t in (0, 1) for k in keys)
            want_flat = tuple(w[k] for w in (want.grads_a, want.grads_b) for k in keys)
            labels = tuple(f"{t}.{k}" for t in ("A", "B") for k in keys)
            try:
                worst = max(worst, compare_values(got_flat, want_flat, labels, tol))
            except Diagnosis as exc:
                for description, (ga, gb) in slip_cases.items():
                    cand = tuple(w[k] for w in (ga, gb) for k in keys)
                    if all(g.shape == c.shape and max_relative_error(g, c) < 1e-6 for g, c in zip(got_flat, cand)):
                        raise Diagnosis(f"{exc.message}; it looks like {description}", exc.figure) from None
                raise Diagnosis(f"{exc.message} (lambda {lam}, margin {margin})", exc.figure) from None
        return worst, worst < tol, ""

    return run_check("local step of a twin pair", body, bound=f"below {tol:g}")


# ----------------------------------------------------------------------------- shown once the exercise is done
_IFFCL_STEP = "\n".join([
    '`vaelayer_np.core.iffcl.train_step(net_a, net_b, optimizers, x, y, rng, settings)` (settings: an '
    '`IFFCLSettings` with pairing, lam, margin, contrast, cosine_on):',
    '',
    '```python',
    'partner, target = make_pairs(y, pairing, rng)          # B sees x[partner]',
    'h_a, h_b = x, x[partner]',
    'for k, (layer_a, layer_b) in enumerate(zip(net_a.vae_layers, net_b.vae_layers)):',
    '    step = vae_local_step(layer_a, layer_b, h_a, h_b, target, rng, settings, ...)',
    '    optimizers[f"A.vae{k}"].step(step.grads_a)          # each layer: its own optimiser',
    '    optimizers[f"B.vae{k}"].step(step.grads_b)',
    '    h_a, h_b = step.out_a, step.out_b                   # constants for layer k + 1',
    '# output layers: softmax cross-entropy on their own input, each twin its own update',
    '```',
    '',
    'and inside `vae_local_step`, with `cosine_on="latent"` and the one-partner form `contrast="partner"` of',
    'the exercise (the default is `contrast="all_pairs"`: every A row against every B row):',
    '',
    '```python',
    'out_a, cache_a = layer_a.forward(x_a, rng=rng)         # noise eps_a drawn first,',
    'out_b, cache_b = layer_b.forward(x_b, rng=rng)         # then eps_b',
    'cos_loss, (dz_a, dz_b) = ops.cosine_embedding(cache_a["z"], cache_b["z"], target, margin)',
    '_, grads_a = layer_a.backward(None, cache_a, dz=lam * dz_a, need_dx=False)',
    '_, grads_b = layer_b.backward(None, cache_b, dz=lam * dz_b, need_dx=False)',
    '```',
    '',
    '`backward(None, ...)`: no upstream gradient arrives from above; `need_dx=False`: no input gradient is sent',
    "below; `dz`: the cosine term's gradient enters at the latent $z$, beside the layer's own negative ELBO.",
])
register_reveal("IFFCL step", ("check_local_step",), lambda: _IFFCL_STEP, markdown=True)


# ----------------------------------------------------------------------------- exercise 2b: all pairs, balanced
FORBIDDEN["cosine_matrix"] = _COSINE + ("vaelayer_np.core.ops.cosine_pair_weights",)

_MATRIX_SLIPS = {
    "plain mean": "a plain mean over all N*M pairs: with balanced weights the positive pairs share one half of "
                  "the loss (each 1 / (2 n_pos)) and the negative pairs the other (each 1 / (2 n_neg))",
    "weights swapped": "the two weights swapped: a positive pair weighs 1 / (2 n_pos), a negative one "
                       "1 / (2 n_neg)",
    "one kind": "a batch with one kind of pair only (all positive or all negative) keeps weight 1 / (2 n) per "
                "pair: that kind then carries the whole loss, 1 / n each",
    "hinge unmasked": "every negative pair pushed, also those with cos below the margin (the hinge's 0 forgotten: "
                      "its gradient is 0 there)",
    "no projection": "(g / (|a| |b|^T)) b alone: the term that removes the part along a_i, "
                     "- (sum_j g_ij cos_ij) a_i / |a_i|^2, is missing",
    "wrong axis": "the projection term summed over the wrong axis: for d_a sum g * cos over j (axis 1), for d_b "
                  "over i (axis 0)",
    "g not transposed": "d_b computed from g instead of its transpose: b_j meets the column j of g",
}


def reference_cosine_matrix(a: np.ndarray, b: np.ndarray, targets: np.ndarray, margin: float, eps: float = 1e-8,
                            slip: str = "") -> tuple[float, tuple]:
    """The balanced all-pairs cosine embedding loss and its gradients (``slip=""``: the library's
    :func:`vaelayer_np.core.ops.cosine_embedding_matrix` with ``balanced=True``), or with one slip of
    :data:`_MATRIX_SLIPS` planted: the candidates a diagnosis is matched against."""
    inv_a = 1 / np.sqrt(np.einsum("nk,nk->n", a, a) + eps)
    inv_b = 1 / np.sqrt(np.einsum("nk,nk->n", b, b) + eps)
    cos = (a * inv_a[:, None]) @ (b * inv_b[:, None]).T
    positive = targets > 0
    n_pos, n_neg = int(positive.sum()), positive.size - int(positive.sum())
    w_pos, w_neg = 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1)
    if (n_pos == 0 or n_neg == 0) and slip != "one kind":
        w_pos, w_neg = 2 * w_pos, 2 * w_neg
    if slip == "weights swapped":
        w_pos, w_neg = w_neg, w_pos
    weights = np.full(cos.shape, 1.0 / cos.size) if slip == "plain mean" else np.where(positive, w_pos, w_neg)
    value = float(np.sum(weights * np.where(positive, 1 - cos, np.maximum(cos - margin, 0))))
    active = np.ones_like(cos) if slip == "hinge unmasked" else (cos > margin).astype(float)
    g = np.where(positive, -1.0, active) * weights
    g_scaled = g * inv_a[:, None] * inv_b[None, :]
    keep = 0.0 if slip == "no projection" else 1.0
    wrong_axis = slip == "wrong axis"
    d_a = g_scaled @ b - keep * ((g * cos).sum(axis=0 if wrong_axis else 1) * inv_a * inv_a)[:, None] * a
    if slip == "g not transposed":
        d_b = g_scaled @ a - ((g * cos).sum(axis=1) * inv_b * inv_b)[:, None] * b
    else:
        d_b = g_scaled.T @ a - keep * ((g * cos).sum(axis=1 if wrong_axis else 0) * inv_b * inv_b)[:, None] * b
    return value, (d_a, d_b)


def _matrix_cases(rng: np.random.Generator) -> Iterator:
    """(a, b, targets, margin): labels of A against those of B (N = M, as twins see one batch), a margin of
    0 and of 0.3 (with a negative pair above it), and a batch of one class (positive pairs only)."""
    for n, k, margin, classes in ((7, 5, 0.0, 3), (8, 4, 0.3, 4), (6, 3, -0.2, 1)):
        a, b = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        y_a, y_b = rng.integers(0, classes, n), rng.integers(0, classes, n)
        if classes > 1:
            y_a[:2], y_b[:2] = (0, 1), (0, 0)  # at least one pair of each kind
            b[1] = a[1] + 0.2 * b[1]           # a negative pair with a high cosine
        yield a, b, np.where(y_a[:, None] == y_b[None, :], 1.0, -1.0), margin


@recorded
def check_cosine_matrix(cosine_matrix_fn: Callable[..., Any], tol: float = 1e-7) -> CheckResult:
    r"""Check ``cosine_matrix_fn(a, b, targets, margin) -> (value, (d_a, d_b))``: the all-pairs cosine embedding
    loss with class-balanced weights, and its gradients with respect to a (N, K) and b (M, K).

    :math:`L = \sum_{ij} w_{ij}\,\ell(\cos_{ij}, t_{ij})` with :math:`w = 1/(2n_+)` on the positive pairs and
    :math:`1/(2n_-)` on the negative ones (one kind only: :math:`1/n` each), :math:`\ell = 1 - \cos` or
    :math:`\max(0, \cos - m)`, norms with :math:`10^{-8}` added to their squares. Compared with
    :func:`vaelayer_np.core.ops.cosine_embedding_matrix` on three batches (margins 0, 0.3 and -0.2, one of a
    single class), then the student's own gradients against float64 central differences of the student's
    own value. Slips named (:data:`_MATRIX_SLIPS`): a plain mean, the weights swapped, the one-kind rule, the
    hinge's 0 forgotten, the projection term missing or summed over the wrong axis, g not transposed for b.
    """
    names = ("a", "b", "targets", "margin")

    def run(a: np.ndarray, b: np.ndarray, targets: np.ndarray, margin: float) -> tuple[Any, tuple[Any, ...]]:
        got = call_student(cosine_matrix_fn, (a.copy(), b.copy(), targets.copy(), margin), names,
                           FORBIDDEN["cosine_matrix"])
        if not (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[1], (tuple, list))
                and len(got[1]) == 2):
            raise Diagnosis("expected the return value (value, (d_a, d_b))")
        return got[0], tuple(got[1])

    def body() -> tuple[float, bool, str]:
        rng = np.random.default_rng(5)
        worst = 0.0
        for a, b, targets, margin in _matrix_cases(rng):
            value, (d_a, d_b) = run(a, b, targets, margin)
            want = ops.cosine_embedding_matrix(a, b, targets, margin, balanced=True)
            slips: dict[str, list[Any]] = {"value": [], "d_a": [], "d_b": []}
            for slip, description in _MATRIX_SLIPS.items():
                cand = reference_cosine_matrix(a, b, targets, margin, slip=slip)
                for name, c in zip(("value", "d_a", "d_b"), (cand[0], cand[1][0], cand[1][1])):
                    slips[name].append((description, c))
            kinds = "one class only" if np.all(targets > 0) else f"margin {margin}"
            try:
                worst = max(worst, compare_values((value, d_a, d_b), (want[0], want[1][0], want[1][1]),
                                                  ("value", "d_a", "d_b"), tol, slips=slips,
                                                  factors=(("N", a.shape[0]), ("N*N", a.shape[0] ** 2))))
            except Diagnosis as exc:
                raise Diagnosis(f"{exc.message} ({kinds})", exc.figure) from None
            rows = check_loss("cosine matrix", lambda a_, b_, t_, margin=0.0: run(a_, b_, t_, margin),
                              {"a": a.copy(), "b": b.copy()}, (targets,), rng=int(rng.integers(1 << 30)),
                              margin=margin)
            for r in rows:
                worst = max(worst, r.max_rel_error)
                if not r.passed:
                    raise Diagnosis(f"your d_{r.tensor} fails its own gradient check (error {r.max_rel_error:.2g}, "
                                    f"{kinds}): it is not the gradient of your value", r.max_rel_error)
        return worst, worst < tol, "three batches, one of a single class"

    return run_check("cosine_matrix", body, bound=f"below {tol:g}")
