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

import numpy as np

from ..core import ops
from ..core.gradcheck import check_loss, generic_point
from ..core.iffcl import vae_local_step
from ..core.layers import Dense, VAELayer
from ..core.optim import Adam
from .checks import max_relative_error, run_check


# ----------------------------------------------------------------------------- forward-forward (Hinton 2022)
def ff_goodness(h):
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


def ff_label_inputs(x, labels, n_classes):
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


def ff_wrong_labels(labels, n_classes, rng):
    """A wrong label for each example, uniform over the other classes: (N,) ints."""
    return (labels + rng.integers(1, n_classes, labels.shape[0])) % n_classes


def train_ff_layer(x, labels, n_classes, width=200, epochs=20, batch_size=64, lr=3e-3, threshold=None, seed=0):
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


def ff_predict(layer, x, n_classes):
    """FF classification: try every label, predict the one whose input has the highest goodness: (N,) ints."""
    scores = np.stack([ff_goodness(np.maximum(layer.forward(ff_label_inputs(x, np.full(x.shape[0], c), n_classes))[0],
                                              0)) for c in range(n_classes)], axis=1)
    return scores.argmax(axis=1)


# ----------------------------------------------------------------------------- locality
def layer_update_after_one_step(method, k, perturb_above, x, y, seed=0, encoder_hidden=64, widths=(32, 32, 32),
                                shift=0.1):
    """The change of VAE layer ``k``'s parameters (net A) in one training step, from a fixed state.

    Builds a :class:`~vaelayer_np.run.trainer.Trainer` (``method`` "iffcl" or "backprop", NumPy backend,
    float64, plain SGD so that the update is -lr times the gradient; Adam's first step would be
    lr times the gradient's sign and hide how much it changed), optionally adds ``shift`` to every parameter of the VAE layers above ``k`` and of the
    output layers (both twins), takes one step on ``(x, y)`` and returns, per parameter of layer ``k``,
    ``after - before``. Everything else (seed, data, pairing, noise) is identical between calls.

    Returns
    -------
    dict parameter name -> array
    """
    from ..run.config import TrainConfig
    from ..run.trainer import Trainer

    config = TrainConfig(dataset="digits", method=method, encoder_hidden=encoder_hidden, widths=tuple(widths),
                         seed=seed, backend="numpy", dtype="float64", optimizer="sgd", momentum=0.0,
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
def _cosine_cases(rng):
    for n, k, margin in ((6, 5, 0.0), (8, 4, 0.3), (5, 7, -0.5)):
        a, b = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        target = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        target[:2] = (1.0, -1.0)
        b[2] = a[2] + 0.3 * b[2]  # a negative pair with a high cosine: above any margin
        target[2] = -1.0
        yield a, b, target, margin


def check_cosine_embedding(cosine_embedding_fn, tol=1e-7):
    r"""Check ``cosine_embedding_fn(a, b, target, margin) -> (value, (d_a, d_b))``.

    Two measures, the worse one is the figure: (1) the value and gradients against
    :func:`vaelayer_np.core.ops.cosine_embedding` on random pairs with both targets and margins
    0, 0.3 and -0.5; (2) a float64 gradient check of the student's own gradients
    (:func:`vaelayer_np.core.gradcheck.check_loss`, random upstream scalar).
    """
    def body():
        rng = np.random.default_rng(11)
        worst, where = 0.0, ""
        for a, b, target, margin in _cosine_cases(rng):
            got = cosine_embedding_fn(a.copy(), b.copy(), target.copy(), margin)
            if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], tuple) and len(got[1]) == 2):
                return np.inf, False, "expected the return value (value, (d_a, d_b))"
            want = ops.cosine_embedding(a, b, target, margin)
            for label, g, w in (("value", got[0], want[0]), ("d_a", got[1][0], want[1][0]),
                                ("d_b", got[1][1], want[1][1])):
                err = max_relative_error(np.asarray(g, dtype=np.float64), np.asarray(w))
                if err > worst:
                    worst, where = err, f"{label} (margin {margin})"
            rows = check_loss("cosine", cosine_embedding_fn, {"a": a.copy(), "b": b.copy()}, (target,),
                              rng=int(rng.integers(1 << 30)), margin=margin)
            for r in rows:
                if r.max_rel_error > worst:
                    worst, where = r.max_rel_error, f"gradient check of d_{r.tensor} (margin {margin})"
        ok = worst < tol
        return worst, ok, "" if ok else f"worst: {where}"

    return run_check("cosine_embedding", body, bound=f"below {tol:g}")


# ----------------------------------------------------------------------------- exercise 2: balanced pairs
def check_make_pairs_balanced(make_pairs_fn, low=0.47, high=0.53):
    """Check ``make_pairs_fn(labels, rng) -> (partner, target)`` for the ``balanced`` mode.

    * ``partner``: N valid indices; ``target``: +1 exactly where ``labels == labels[partner]``, else -1;
    * the fraction of positive pairs lies in [low, high] on a batch of 4000 with 10 equal classes
      (the figure; ``labelled`` pairing gives about 0.1 there) and on an imbalanced batch
      (70% of one class);
    * the partners are spread (at least a quarter of the batch serves as a partner);
    * a batch of one class gives only positive pairs.
    """
    def one(labels, seed):
        partner, target = make_pairs_fn(labels.copy(), np.random.default_rng(seed))
        partner, target = np.asarray(partner), np.asarray(target)
        n = labels.shape[0]
        if partner.shape != (n,) or target.shape != (n,):
            raise ValueError(f"partner and target must have shape ({n},), got {partner.shape} and {target.shape}")
        if partner.dtype.kind not in "iu" or partner.min() < 0 or partner.max() >= n:
            raise ValueError(f"partner must hold integer indices in [0, {n})")
        right = np.where(labels == labels[partner], 1.0, -1.0)
        if not np.array_equal(target.astype(np.float64), right):
            wrong = int(np.sum(target != right))
            raise ValueError(f"{wrong} of {n} targets are wrong: +1 exactly where labels[i] == labels[partner[i]]")
        return partner, target

    def body():
        rng = np.random.default_rng(12)
        uniform = rng.integers(0, 10, 4000)
        partner, target = one(uniform, 1)
        fraction = float(np.mean(target > 0))
        if not low <= fraction <= high:
            return fraction, False, "the positive fraction should be about 1/2"
        if np.unique(partner).size < uniform.size // 4:
            return fraction, False, (f"only {np.unique(partner).size} distinct partners among {uniform.size}: "
                                     f"draw each partner at random within its group")
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
        return fraction, True, f"imbalanced batch {skew_fraction:.3f}"

    return run_check("make_pairs (balanced)", body, bound=f"between {low:g} and {high:g}")


# ----------------------------------------------------------------------------- exercise 3: the local step
def local_step_problem(seed=0, n=6, d=7, k=4):
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


def check_local_step(local_step_fn, tol=1e-9):
    """Check ``local_step_fn(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin) -> (grads_a, grads_b)``.

    The reference is :func:`vaelayer_np.core.iffcl.vae_local_step` on the same layers, inputs, targets and
    noise (``cosine_on="latent"``, ``contrast="pairs"``), for two settings of lambda and the margin. The
    figure is the worst relative error over every parameter of both twins; the layers' parameters must
    be left unchanged (a step computes gradients; the optimiser applies them).
    """
    def body():
        worst, where = 0.0, ""
        for seed, lam, margin in ((0, 2.0, 0.2), (1, 0.5, -0.3)):
            p = local_step_problem(seed)
            before = {name: {k: v.copy() for k, v in p[name].params.items()} for name in ("layer_a", "layer_b")}
            got = local_step_fn(p["layer_a"], p["layer_b"], p["x_a"].copy(), p["x_b"].copy(), p["target"].copy(),
                                p["eps_a"].copy(), p["eps_b"].copy(), lam, margin)
            for name in ("layer_a", "layer_b"):
                if any(not np.array_equal(v, before[name][k]) for k, v in p[name].params.items()):
                    return np.inf, False, f"the parameters of {name} changed: return gradients, do not update"
            if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(g, dict) for g in got)):
                return np.inf, False, "expected the return value (grads_a, grads_b), two dicts"
            want = vae_local_step(p["layer_a"], p["layer_b"], p["x_a"], p["x_b"], p["target"],
                                  np.random.default_rng(p["noise_seed"]), lam=lam, margin=margin)
            for twin, g_got, g_want in (("A", got[0], want.grads_a), ("B", got[1], want.grads_b)):
                missing = sorted(set(g_want) - set(g_got))
                if missing:
                    return np.inf, False, f"twin {twin}: no gradient for {', '.join(missing)}"
                for key, w in g_want.items():
                    err = max_relative_error(g_got[key], w)
                    if err > worst:
                        worst, where = err, f"twin {twin}, {key} (lambda {lam}, margin {margin})"
        ok = worst < tol
        return worst, ok, "" if ok else f"worst: {where}"

    return run_check("local step of a twin pair", body, bound=f"below {tol:g}")
