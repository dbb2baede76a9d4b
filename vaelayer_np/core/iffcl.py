"""IFFCL: Improved Forward-Forward Contrastive Learning of twin stacks of VAE layers.

The algorithm, one mini-batch (x, y)::

    partner, target = make_pairs(y, pairing)        # net B sees x[partner]
    in_A, in_B = x, x[partner]
    for each VAE layer k (twins layer_A, layer_B):
        # in_A and in_B are constants here: nothing flows back into layer k-1
        z_A, z_B  = the two layers' latents
        loss_k    = negELBO_A + negELBO_B + lambda * cosine_embedding(z_A, z_B, target)
                    (+ head_weight * (CE(head_A(out_A), y) + CE(head_B(out_B), y_B)), with local heads)
        update layer_A and layer_B from d loss_k / d (their own parameters)
        in_A, in_B  = the layers' outputs             # act(mu) or act(z): passed on as data
    output layers: classification loss on each twin, each updated from its own loss

:func:`train_step` is this loop. Each layer's update needs only its own input, its
own output and its twin: :func:`vae_local_step` takes exactly those and nothing
from the layers above. The end-to-end baseline is in :mod:`.backprop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import ops
from ._validate import check_choice, check_float_array, check_targets_pm1
from .layers import _as_rng
from .optim import Adam
from .settings import CHOICES, IFFCLSettings, canonical, settings_from_keywords

PAIRING_MODES = CHOICES["pairing"]


def make_pairs(labels: np.ndarray, mode: str, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Choose, for each example i, the example net B sees beside it, and the cosine target.

    Parameters
    ----------
    labels : (N,) int array
    mode : str, "random", "balanced" or "mirror"
        ``random``: a random permutation; target +1 where the labels agree, -1 elsewhere.
        ``balanced``: each partner is drawn from the same class with probability 1/2,
        else from another class, so about half the pairs are positive.
        ``mirror``: the partner is the example itself, target +1.
    rng : numpy.random.Generator

    Returns
    -------
    partner : (N,) int array of indices into the batch
    target : (N,) float array of +1 / -1
    """
    mode = check_choice("pairing", canonical("pairing", mode), PAIRING_MODES)
    n = labels.shape[0]
    if mode == "mirror":
        partner = np.arange(n)
    elif mode == "random":
        partner = rng.permutation(n)
    else:
        order = np.argsort(labels, kind="stable")
        classes, start, count = np.unique(labels[order], return_index=True, return_counts=True)
        pos = np.searchsorted(classes, labels)
        own_start, own_count = start[pos], count[pos]
        same = order[own_start + (rng.random(n) * own_count).astype(np.int64)]
        n_other = n - own_count
        k = (rng.random(n) * np.maximum(n_other, 1)).astype(np.int64)
        other = order[np.where(k < own_start, k, k + own_count) % n]
        want_same = (rng.random(n) < 0.5) | (n_other == 0)
        partner = np.where(want_same, same, other)
    target = np.where(labels == labels[partner], 1.0, -1.0)
    return partner, target


class Pairs(NamedTuple):
    """A batch's pairing, as the cosine term and the heads read it: the +1/-1 ``target`` of each pair (one
    partner per example) and the labels of twin A's and twin B's rows (all pairs, and the heads)."""

    target: np.ndarray | None
    y_a: np.ndarray | None
    y_b: np.ndarray | None


@dataclass
class LocalStep:
    """What one pair of twin layers computed: outputs to pass on, gradients, loss terms.

    ``terms`` are on one scale, the twins' sum: ``recon`` = recon_A + recon_B,
    ``kl`` = KL_A + KL_B (not multiplied by beta), ``cos`` the shared cosine term, and
    ``loss`` = recon + beta * kl + lam * cos (+ head_weight * head), exactly the local loss L_k
    that was minimised; with local heads ``head`` = CE_A + CE_B of the layer's classifier heads,
    whose gradients are ``grads_head_a`` and ``grads_head_b``.
    """

    out_a: np.ndarray
    out_b: np.ndarray
    grads_a: dict
    grads_b: dict
    terms: dict
    grads_head_a: dict | None = None
    grads_head_b: dict | None = None


def cosine_targets(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """(N, M) targets of the all-pairs contrast: +1 where ``labels_a[i] == labels_b[j]``, -1 elsewhere."""
    return np.where(labels_a[:, None] == labels_b[None, :], 1.0, -1.0)


def cosine_term(z_a: np.ndarray, z_b: np.ndarray, target: Any, labels_a: Any, labels_b: Any, contrast: str,
                margin: float) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """The contrastive part of a hidden layer's local loss, and its gradients on z_A, z_B.

    ``contrast="partner"``: one partner per example, targets ``target``.
    ``contrast="all_pairs"``: every A row against every B row, +1 where the labels agree.
    """
    if contrast == "partner":
        return ops.cosine_embedding(z_a, z_b, target, margin)
    return ops.cosine_embedding_matrix(z_a, z_b, cosine_targets(labels_a, labels_b), margin)


class ReadablePath:
    """How a training step runs each layer: through the layers' own ``forward`` and ``backward``.

    The steps below (:func:`vae_local_step`, :func:`train_step`) call a layer only through these
    methods, so that another object with the same methods can run the same step faster:
    :class:`vaelayer_np.fast.training.FastPath` (reused buffers, compiled kernels), tested equal
    to this one. This one is the reference: every call is the layer's public, checked method.
    """

    def vae_forward(self, layer: Any, x: np.ndarray, rng: Any) -> tuple[np.ndarray, dict]:
        return layer.forward(x, rng=rng)

    def vae_backward(self, layer: Any, dout: np.ndarray | None, cache: Any,
                     dz: np.ndarray | None = None) -> dict[str, np.ndarray]:
        # need_dx=False: nothing is sent to the layer below
        return layer.backward(dout, cache, dz=dz, need_dx=False)[1]

    def vae_loss_terms(self, layer: Any, cache: Any) -> dict[str, float]:
        return layer.loss_terms(cache)

    def output_forward(self, layer: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return layer.forward(x)

    def output_loss(self, layer: Any, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        return layer.loss(logits, labels)

    def output_backward(self, layer: Any, d_logits: np.ndarray, cache: Any) -> dict[str, np.ndarray]:
        return layer.backward(d_logits, cache, need_dx=False)[1]

    def head_backward(self, layer: Any, d_logits: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # a local head sends its gradient into its own VAE layer's output (never further down)
        dx, grads = layer.backward(d_logits, cache, need_dx=True)
        return dx, grads

    def cosine_term(self, z_a: np.ndarray, z_b: np.ndarray, target: Any, labels_a: Any, labels_b: Any,
                    contrast: str, margin: float) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        return cosine_term(z_a, z_b, target, labels_a, labels_b, contrast, margin)

    def make_adam(self, layer: Any, lr: float, weight_decay: float = 0.0) -> Adam:
        return Adam(layer.params, lr=lr, weight_decay=weight_decay)


READABLE = ReadablePath()


def vae_local_step(layer_a: Any, layer_b: Any, x_a: np.ndarray, x_b: np.ndarray, target: np.ndarray | None, rng: Any,
                   settings: IFFCLSettings | None = None, *, labels_a: np.ndarray | None = None,
                   labels_b: np.ndarray | None = None, path: Any = None, heads: Any = None,
                   **old_keywords: Any) -> LocalStep:
    r"""One IFFCL step of a pair of twin VAE layers: gradients of their shared local loss.

    .. math:: L_k = \mathrm{negELBO}_A + \mathrm{negELBO}_B + \lambda\,\mathrm{cos\_emb}(z_A, z_B, t)
              \;\big[+\, w_h\,(\mathrm{CE}(\mathrm{head}_A(o_A), y_A) + \mathrm{CE}(\mathrm{head}_B(o_B), y_B))\big]

    Parameters
    ----------
    layer_a, layer_b : VAELayer, the twins at depth k
    x_a, x_b : (N, D) arrays, their inputs (constants: outputs of depth k-1, or data)
    target : (N,) +1/-1 cosine targets (used by ``contrast="partner"``)
    rng : Generator (or seed) for the reparameterisation noise
    settings : :class:`~vaelayer_np.core.settings.IFFCLSettings` (None: the defaults), of which the step reads
        ``lam`` and ``margin`` (the cosine term's weight and margin), ``contrast`` ("partner": one partner per
        example; "all_pairs": every A row against every B row, by labels), ``cosine_on`` ("latent": z;
        "output": the layer's output, act(mu) with pass_on="mean", act(z) with pass_on="sample") and
        ``head_weight`` (w_h, the heads' weight in the local loss)
    labels_a, labels_b : (N,) labels, needed for ``contrast="all_pairs"``
    path : None (the layers' own forward and backward, :class:`ReadablePath`) or a fast path
    heads : None, or the twins' local classifier heads ``(head_a, head_b)`` at depth k (softmax
        :class:`~vaelayer_np.core.layers.OutputLayer` s reading the layers' outputs); they need
        ``labels_a`` and ``labels_b``
    old_keywords : ``lam=``, ``margin=``, ``contrast=``, ``cosine_on=``, ``head_weight=`` one by one, the
        old spelling (:func:`~vaelayer_np.core.settings.settings_from_keywords`: a DeprecationWarning)

    Returns
    -------
    LocalStep : outputs to pass on, the two layers' gradients, and the loss terms.
    """
    settings = settings_from_keywords("vae_local_step", settings, old_keywords)
    if settings.contrast == "partner":
        check_targets_pm1("target", target, x_a.shape[0])
    if settings.contrast == "all_pairs" and (labels_a is None or labels_b is None):
        raise ValueError("labels_a, labels_b: contrast='all_pairs' needs the labels of both twins' batches")
    if heads is not None and (labels_a is None or labels_b is None):
        raise ValueError("labels_a, labels_b: local heads need the labels of both twins' batches")
    for name, layer, x in (("x_a", layer_a, x_a), ("x_b", layer_b, x_b)):
        check_float_array(name, x, shape=(None, layer.in_dim), dtype=layer.dtype)
    step = _local_step(path or READABLE, (layer_a, layer_b), (x_a, x_b), Pairs(target, labels_a, labels_b),
                       _as_rng(rng), settings, heads)

    def copied(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: g.copy() for k, g in grads.items()}

    # a fast path reuses its buffers at the layers' next step: hand the caller copies
    return LocalStep(step.out_a.copy(), step.out_b.copy(), copied(step.grads_a), copied(step.grads_b), step.terms,
                     None if step.grads_head_a is None else copied(step.grads_head_a),
                     None if step.grads_head_b is None else copied(step.grads_head_b))


def local_head_step(path: Any, head: Any, out: np.ndarray, labels: np.ndarray,
                    head_weight: float) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """A local classifier head on a layer's output: its loss, the gradient it sends into that output,
    and its own gradients (both scaled by ``head_weight``, its weight in the layer's local loss)."""
    logits, cache = path.output_forward(head, out)
    loss, d_logits = path.output_loss(head, logits, labels)
    d_out, grads = path.head_backward(head, head_weight * d_logits, cache)
    return loss, d_out, grads


def twin_backward(path: Any, layer: Any, cache: Any, out: np.ndarray, d_cos: np.ndarray, cosine_on: str,
                  head: Any = None, labels: np.ndarray | None = None,
                  head_weight: float = 0.0) -> tuple[dict[str, np.ndarray], float | None, dict | None]:
    """One twin's gradients at depth k, from the terms of its local loss that sit above the layer.

    ``d_cos`` is the cosine term's gradient (already times lambda) on the layer's latent z
    (``cosine_on="latent"``) or on its output; a local ``head`` adds its own gradient on the output.
    Nothing arrives from layer k+1 and no dx is computed: nothing is sent below. The serial step
    (:func:`_local_step`) and the twins on two threads (:mod:`vaelayer_np.fast.parallel`) both call this.

    Returns (the layer's gradients, the head's loss or None, the head's gradients or None).
    """
    dz, dout = (d_cos, None) if cosine_on == "latent" else (None, d_cos)
    head_loss, grads_head = None, None
    if head is not None:
        if labels is None:
            raise ValueError("labels: a local head needs the labels of its twin's rows")
        head_loss, d_head, grads_head = local_head_step(path, head, out, labels, head_weight)
        dout = d_head if dout is None else dout + d_head
    return path.vae_backward(layer, dout, cache, dz=dz), head_loss, grads_head


def layer_terms(path: Any, layer_a: Any, layer_b: Any, cache_a: Any, cache_b: Any, cos_loss: float,
                head_losses: tuple[float | None, float | None], lam: float, head_weight: float) -> dict[str, float]:
    r"""The loss terms of depth k's pair, as the metrics report them: ``recon``, ``kl`` and ``loss`` summed
    over the twins, ``cos``, and ``head`` (the two heads' losses) when there are heads.

    .. math:: L_k = \mathrm{negELBO}_A + \mathrm{negELBO}_B + \lambda\,\mathrm{cos}
              + w_h\,(\mathrm{CE}_A + \mathrm{CE}_B)
    """
    terms_a, terms_b = path.vae_loss_terms(layer_a, cache_a), path.vae_loss_terms(layer_b, cache_b)
    head_a, head_b = head_losses
    head_loss = 0.0 if head_a is None or head_b is None else head_a + head_b
    terms = {
        "recon": terms_a["recon"] + terms_b["recon"],
        "kl": terms_a["kl"] + terms_b["kl"],
        "cos": cos_loss,
        "loss": terms_a["neg_elbo"] + terms_b["neg_elbo"] + lam * cos_loss + head_weight * head_loss,
    }
    if head_a is not None:
        terms["head"] = head_loss
    return terms


def _local_step(path: Any, layers: tuple[Any, Any], inputs: tuple[np.ndarray, np.ndarray], pairs: Pairs, rng: Any,
                settings: IFFCLSettings, heads: tuple[Any, Any] | None = None) -> LocalStep:
    """:func:`vae_local_step` on checked inputs: the twins ``layers`` at depth k on their ``inputs``."""
    (layer_a, layer_b), (x_a, x_b) = layers, inputs
    out_a, cache_a = path.vae_forward(layer_a, x_a, rng)
    out_b, cache_b = path.vae_forward(layer_b, x_b, rng)
    # the cosine term of L_k on the twins' latents z (or their outputs), then each twin's backward from it
    # (and from its local head): gradients reach the layer from the terms of L_k that sit above it, never
    # from layer k+1
    on_a, on_b = (cache_a["z"], cache_b["z"]) if settings.cosine_on == "latent" else (out_a, out_b)
    cos_loss, (d_cos_a, d_cos_b) = path.cosine_term(on_a, on_b, pairs.target, pairs.y_a, pairs.y_b,
                                                    settings.contrast, settings.margin)
    lam, cosine_on, weight = settings.lam, settings.cosine_on, settings.head_weight
    head_a, head_b = heads if heads is not None else (None, None)
    grads_a, loss_ha, grads_head_a = twin_backward(path, layer_a, cache_a, out_a, lam * d_cos_a, cosine_on, head_a,
                                                   pairs.y_a, weight)
    grads_b, loss_hb, grads_head_b = twin_backward(path, layer_b, cache_b, out_b, lam * d_cos_b, cosine_on, head_b,
                                                   pairs.y_b, weight)
    terms = layer_terms(path, layer_a, layer_b, cache_a, cache_b, cos_loss, (loss_ha, loss_hb), lam, weight)
    return LocalStep(out_a, out_b, grads_a, grads_b, terms, grads_head_a, grads_head_b)


def output_local_step(output_layer: Any, features: np.ndarray, labels: np.ndarray,
                      path: Any = None) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """The output layer's local step: classification loss on its own input features.

    Returns (logits, loss, grads).
    """
    path = path or READABLE
    logits, cache = path.output_forward(output_layer, features)
    loss, d_logits = path.output_loss(output_layer, logits, labels)
    return logits, loss, path.output_backward(output_layer, d_logits, cache)


def train_step(net_a: Any, net_b: Any, optimizers: dict[str, Any], x: np.ndarray, y: np.ndarray, rng: Any,
               settings: IFFCLSettings | None = None, *, path: Any = None, **old_keywords: Any) -> dict[str, float]:
    """One IFFCL step on a mini-batch: every layer pair learns from its own local loss.

    Parameters
    ----------
    net_a, net_b : the twin :class:`~vaelayer_np.core.network.Network` s
    optimizers : dict "A.vae0", "B.vae0", ..., "A.output", "B.output" -> optimiser
    x : (N, D) array; y : (N,) int labels
    rng : Generator (pairing and noise)
    settings : :class:`~vaelayer_np.core.settings.IFFCLSettings` (None: the defaults of :mod:`.settings`):
        ``pairing``, ``lam``, ``margin``, ``contrast``, ``cosine_on``, and ``head_weight``, the weight of each
        layer's local classifier head in its local loss when the networks have heads
        (``Network(local_heads=True)``; their optimisers "A.head0", ...)
    path : None (the layers' own forward and backward) or a fast path
        (:class:`vaelayer_np.fast.training.FastPath`): the same step, faster
    old_keywords : the settings one keyword at a time (``lam=1.0``), the old spelling
        (:func:`~vaelayer_np.core.settings.settings_from_keywords`: a DeprecationWarning)

    Returns
    -------
    dict of floats: ``layer{k}_recon``, ``layer{k}_kl``, ``layer{k}_cos``, ``layer{k}_loss`` (see
    :class:`LocalStep`), ``output_loss`` (mean of the twins' classification losses; each twin's
    output layer minimises its own) and ``batch_acc`` (net A on this batch).
    """
    settings = settings_from_keywords("train_step", settings, old_keywords)
    return twins_step(Twins(net_a, net_b, optimizers, path or READABLE), x, y, rng, settings)


@dataclass
class Twins:
    """IFFCL's two networks, their optimisers ("A.vae0", ..., "B.output") and the path that runs their layers:
    what a step changes, in one object."""

    net_a: Any
    net_b: Any
    optimizers: dict[str, Any]
    path: Any = READABLE


def pair_batch(x: np.ndarray, y: np.ndarray, pairing: str, rng: Any) -> tuple[tuple[np.ndarray, np.ndarray], Pairs]:
    """The batch as the twins see it: their inputs ``(x, x[partner])`` and the :class:`Pairs` (targets and
    both twins' labels), the partners drawn by :func:`make_pairs`."""
    partner, target = make_pairs(y, pairing, rng)
    return (x, x[partner]), Pairs(target, y, y[partner])


def twins_step(twins: Twins, x: np.ndarray, y: np.ndarray, rng: Any, settings: IFFCLSettings) -> dict[str, float]:
    """:func:`train_step` with its settings as one :class:`~vaelayer_np.core.settings.IFFCLSettings` (the
    trainer's call): the serial step, depth after depth, then the output layers."""
    twins.net_a.check_input(x, y)  # the batch is checked once here
    inputs, pairs = pair_batch(x, y, settings.pairing, rng)  # each twin's input to the current layer
    metrics: dict[str, float] = {}
    outs_a: list[np.ndarray] = []
    outs_b: list[np.ndarray] = []
    for k in range(len(twins.net_a.vae_layers)):
        out_a, out_b, terms = layer_pair_update(twins, k, inputs, pairs, rng, settings)
        metrics.update({f"layer{k}_{term}": value for term, value in terms.items()})
        inputs = (out_a, out_b)  # data for layer k+1, computed before the update
        outs_a.append(out_a)
        outs_b.append(out_b)
    metrics.update(output_pair_update(twins, outs_a, outs_b, pairs))
    return metrics


def layer_pair_update(twins: Twins, k: int, inputs: tuple[np.ndarray, np.ndarray], pairs: Pairs, rng: Any,
                      settings: IFFCLSettings) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The part of :func:`train_step` at depth k: the twins' local step and their updates.

    Reads only depth k's layers, heads and optimisers and the batch's inputs to depth k. Returns the twins'
    outputs (computed before the update), the inputs of depth k+1, and the loss terms of depth k (the
    metrics ``layer{k}_...``). Nothing here depends on depth k+1, which is why depth k of the next batch may
    run while depth k+1 runs this batch (:mod:`vaelayer_np.fast.pipeline`).
    """
    net_a, net_b, optimizers = twins.net_a, twins.net_b, twins.optimizers
    heads = (net_a.heads[k], net_b.heads[k]) if net_a.heads else None
    step = _local_step(twins.path, (net_a.vae_layers[k], net_b.vae_layers[k]), inputs, pairs, rng, settings, heads)
    optimizers[f"A.vae{k}"].step(step.grads_a)
    optimizers[f"B.vae{k}"].step(step.grads_b)
    if heads is not None:
        optimizers[f"A.head{k}"].step(step.grads_head_a)
        optimizers[f"B.head{k}"].step(step.grads_head_b)
    return step.out_a, step.out_b, step.terms


def output_pair_update(twins: Twins, outs_a: list[np.ndarray], outs_b: list[np.ndarray],
                       pairs: Pairs) -> dict[str, float]:
    """The last part of :func:`train_step`: each twin's output layer on its readout of its outputs, updated.
    Returns ``{"output_loss": the twins' mean loss, "batch_acc": net A's accuracy on this batch}``."""
    net_a, net_b, path = twins.net_a, twins.net_b, twins.path
    y_a, y_b = pairs.y_a, pairs.y_b
    if y_a is None or y_b is None:
        raise ValueError("pairs: the output layers need the labels of both twins' rows")
    logits_a, loss_a, grads_a = output_local_step(net_a.output, net_a.readout_features(outs_a), y_a, path)
    _, loss_b, grads_b = output_local_step(net_b.output, net_b.readout_features(outs_b), y_b, path)
    twins.optimizers["A.output"].step(grads_a)
    twins.optimizers["B.output"].step(grads_b)
    # argmax of the logits = of the probabilities
    return {"output_loss": 0.5 * (loss_a + loss_b), "batch_acc": float(np.mean(logits_a.argmax(1) == y_a))}
