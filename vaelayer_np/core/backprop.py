r"""The baseline: the same network trained end-to-end with ordinary backpropagation.

One network (no twin). The loss is the classification loss on top, plus, if
``neg_elbo_weight`` > 0, that weight times the sum of every VAE layer's negative ELBO, plus, when
the network has local classifier heads, ``head_weight`` times their losses (the same terms as
IFFCL's local losses, here backpropagated through everything below them)::

    L = CE(output(x), y) + neg_elbo_weight * sum_k neg_elbo_k + head_weight * sum_k CE(head_k(out_k), y)

Its gradient flows down through every layer's input gradient ``dx``: the layer
above hands ``dout`` to the layer below. Compare :mod:`.iffcl`, where each layer
learns from its own loss and ``dx`` is never formed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RngLike = int | np.random.Generator | None


@dataclass
class BackpropResult:
    """One end-to-end pass: the loss, every layer's gradients, the input gradient, and the forward pass."""

    loss: float
    grads: dict          # layer name ("vae0", ..., "output") -> grads dict
    dx: np.ndarray | None  # (N, D) gradient with respect to the input, or None
    logits: np.ndarray   # (N, C)
    vae_caches: list     # the VAE layers' caches of this pass


def loss_and_grads(net: Any, x: np.ndarray, labels: np.ndarray, rng: RngLike = None,
                   eps: Sequence[np.ndarray] | None = None, neg_elbo_weight: float = 0.0,
                   need_dx: bool = False, head_weight: float = 0.0,
                   masks: Sequence[np.ndarray] | None = None) -> BackpropResult:
    r"""End-to-end loss and gradients of :class:`~vaelayer_np.core.network.Network` ``net``.

    Parameters
    ----------
    net : Network
    x : (N, D) array; labels : (N,) int array
    rng, eps : the reparameterisation noise (a generator or seed, or the noise itself)
    neg_elbo_weight : float >= 0, weight of the layers' negative ELBOs in the loss
    need_dx : bool, also return the gradient with respect to x (the gradient check uses it)
    head_weight : float >= 0, weight of the local classifier heads' losses (networks with heads)
    masks : list of dropout masks, one per VAE layer's input (None: no dropout); the gradient reaching
        a layer's unmasked input is the masked one's times the mask

    Returns
    -------
    BackpropResult
    """
    net.check_input(x, labels)
    logits, caches, out_cache, outs = net.forward(x, rng=rng, eps=eps, masks=masks)
    loss, d_logits = net.output.loss(logits, labels)
    if neg_elbo_weight:
        loss += neg_elbo_weight * sum(layer.loss_terms(c)["neg_elbo"] for layer, c in zip(net.vae_layers, caches))
    d_features, g_out = net.output.backward(d_logits, out_cache)
    grads = {"output": g_out}
    # The output layer reads the last VAE layer, or all of them side by side: split its input gradient.
    if net.readout == "last":
        d_outs = [None] * (len(outs) - 1) + [d_features]
    else:
        d_outs = list(np.split(d_features, np.cumsum(net.widths)[:-1], axis=1))
    for i, head in enumerate(net.heads):  # each head's loss reaches its layer's output, then flows down
        head_logits, head_cache = head.forward(outs[i])
        head_loss, d_head_logits = head.loss(head_logits, labels)
        loss += head_weight * head_loss
        d_from_head, grads[f"head{i}"] = head.backward(head_weight * d_head_logits, head_cache)
        d_outs[i] = d_from_head if d_outs[i] is None else d_outs[i] + d_from_head
    d_from_above = None  # the gradient that layer i+1 sends down to layer i's output
    for i in reversed(range(len(net.vae_layers))):
        parts = [g for g in (d_from_above, d_outs[i]) if g is not None]
        dout = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        d_from_above, grads[f"vae{i}"] = net.vae_layers[i].backward(dout, caches[i], neg_elbo_weight=neg_elbo_weight,
                                                                    need_dx=(i > 0 or need_dx))
        if masks is not None and d_from_above is not None:  # through the input's dropout mask
            d_from_above = d_from_above * masks[i]
    return BackpropResult(float(loss), grads, d_from_above, logits, caches)


def train_step(net: Any, optimizers: dict[str, Any], x: np.ndarray, y: np.ndarray, rng: RngLike,
               neg_elbo_weight: float = 0.0, head_weight: float = 0.0, dropout: float = 0.0) -> dict[str, float]:
    """One backpropagation step on a mini-batch: forward, end-to-end backward, every layer updated.

    ``optimizers`` maps "A.vae0", ..., "A.output" (and "A.head0", ... with heads) to the layers' optimisers.
    Returns the step's metrics (floats): ``output_loss`` (the whole loss L), each layer's
    ``recon``, ``kl`` and ``loss`` (its negative ELBO) from this same pass, and ``batch_acc``.
    With ``dropout`` p > 0 every VAE layer's input is masked (:func:`vaelayer_np.core.layers.dropout_mask`;
    the masks are drawn from ``rng`` layer by layer before the noise).
    """
    masks = None
    if dropout:
        from .layers import dropout_mask

        masks = [dropout_mask((x.shape[0], layer.in_dim), dropout, rng, x.dtype) for layer in net.vae_layers]
    result = loss_and_grads(net, x, y, rng=rng, neg_elbo_weight=neg_elbo_weight, head_weight=head_weight,
                            masks=masks)
    for layer_name, g in result.grads.items():
        optimizers[f"A.{layer_name}"].step(g)
    metrics = {"output_loss": result.loss}
    for k, (layer, cache) in enumerate(zip(net.vae_layers, result.vae_caches)):
        terms = layer.loss_terms(cache)
        metrics[f"layer{k}_recon"], metrics[f"layer{k}_kl"] = terms["recon"], terms["kl"]
        metrics[f"layer{k}_loss"] = terms["neg_elbo"]
    metrics["batch_acc"] = float(np.mean(result.logits.argmax(1) == y))
    return metrics
