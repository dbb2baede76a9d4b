"""IFFCL: Improved Forward-Forward Contrastive Learning of twin stacks of VAE layers.

The algorithm, one mini-batch (x, y)::

    partner, target = make_pairs(y, pairing)        # net B sees x[partner]
    h_A, h_B = x, x[partner]
    for each VAE layer k (twins layer_A, layer_B):
        # h_A and h_B are constants here: nothing flows back into layer k-1
        z_A, z_B  = the two layers' latents
        loss_k    = ELBO_A + ELBO_B + lambda * cosine_embedding(z_A, z_B, target)
        update layer_A and layer_B from d loss_k / d (their own parameters)
        h_A, h_B  = act(z_A), act(z_B)              # passed on as data
    output layers: classification loss on each twin, each updated from its own loss

Each layer's update needs only its own input, its own output and its twin:
:func:`vae_local_step` takes exactly those and nothing from the layers above.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import losses
from ._validate import check_choice

PAIRING_MODES = ("labelled", "balanced", "mirror")


def make_pairs(labels, mode, rng):
    """Choose, for each example i, the example net B sees beside it, and the cosine target.

    Parameters
    ----------
    labels : (N,) int array
    mode : {"labelled", "balanced", "mirror"}
        ``labelled``: a random permutation; target +1 where the labels agree, -1 elsewhere.
        ``balanced``: each partner is drawn from the same class with probability 1/2,
        else from another class, so about half the pairs are positive.
        ``mirror``: the partner is the example itself, target +1.
    rng : numpy.random.Generator

    Returns
    -------
    partner : (N,) int array of indices into the batch
    target : (N,) float array of +1 / -1
    """
    check_choice("pairing", mode, PAIRING_MODES)
    n = labels.shape[0]
    if mode == "mirror":
        partner = np.arange(n)
    elif mode == "labelled":
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


@dataclass
class LocalStep:
    """What one pair of twin layers computed: outputs to pass on, gradients, loss terms."""

    out_a: np.ndarray
    out_b: np.ndarray
    grads_a: dict
    grads_b: dict
    terms: dict


def cosine_term(z_a, z_b, target, labels_a, labels_b, contrast, margin, backend="numpy"):
    """The contrastive part of a hidden layer's local loss, and its gradients on z_A, z_B."""
    if contrast == "pairs":
        return losses.cosine_embedding(z_a, z_b, target, margin=margin, backend=backend)
    targets = np.where(labels_a[:, None] == labels_b[None, :], 1.0, -1.0)
    return losses.cosine_embedding_matrix(z_a, z_b, targets, margin=margin, backend=backend)


def vae_local_step(layer_a, layer_b, x_a, x_b, target, rng, lam=1.0, margin=0.0, contrast="pairs",
                   labels_a=None, labels_b=None, cosine_on="latent"):
    r"""One IFFCL step of a pair of twin VAE layers: gradients of their shared local loss.

    .. math:: L_k = ELBO_A + ELBO_B + \lambda\,\mathrm{cos\_emb}(z_A, z_B, t)

    Parameters
    ----------
    layer_a, layer_b : VAELayer, the twins at depth k
    x_a, x_b : (N, D) arrays, their inputs (constants: outputs of depth k-1, or data)
    target : (N,) +1/-1 cosine targets (``contrast="pairs"``)
    rng : Generator for the reparameterisation noise
    lam, margin : weight and margin of the cosine term
    contrast : "pairs" (twin pairs) or "batch" (every A row against every B row, by labels)
    labels_a, labels_b : (N,) labels, needed for ``contrast="batch"``
    cosine_on : "latent" (z, the default) or "output" (act(z), what the next layer receives)

    Returns
    -------
    LocalStep : outputs to pass on, the two layers' gradients, and the loss terms.
    """
    out_a, cache_a = layer_a.forward(x_a, rng=rng)
    out_b, cache_b = layer_b.forward(x_b, rng=rng)
    if cosine_on == "latent":
        cos_loss, (dz_a, dz_b) = cosine_term(cache_a["z"], cache_b["z"], target, labels_a, labels_b, contrast, margin,
                                             layer_a.backend)
        # need_dx=False: the input gradient is never formed, nothing is sent downwards.
        _, grads_a = layer_a.backward(cache_a, dz=lam * dz_a, need_dx=False)
        _, grads_b = layer_b.backward(cache_b, dz=lam * dz_b, need_dx=False)
    else:
        cos_loss, (d_out_a, d_out_b) = cosine_term(out_a, out_b, target, labels_a, labels_b, contrast, margin,
                                                   layer_a.backend)
        _, grads_a = layer_a.backward(cache_a, dout=lam * d_out_a, need_dx=False)
        _, grads_b = layer_b.backward(cache_b, dout=lam * d_out_b, need_dx=False)
    elbo_a, elbo_b = layer_a.elbo(cache_a), layer_b.elbo(cache_b)
    terms = {
        "recon": 0.5 * (elbo_a["recon"] + elbo_b["recon"]),
        "kl": 0.5 * (elbo_a["kl"] + elbo_b["kl"]),
        "cos": cos_loss,
        "loss": elbo_a["elbo"] + elbo_b["elbo"] + lam * cos_loss,
    }
    return LocalStep(out_a, out_b, grads_a, grads_b, terms)


def output_local_step(output_layer, features, labels):
    """The output layer's local step: classification loss on its own input features.

    Returns (probs, loss, grads).
    """
    logits, cache = output_layer.forward(features)
    loss, d_logits = output_layer.loss(logits, labels)
    _, grads = output_layer.backward(d_logits, cache, need_dx=False)
    return output_layer.predict_proba(logits), loss, grads
