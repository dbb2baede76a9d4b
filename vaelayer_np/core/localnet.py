r"""Locally supervised layers: plain dense layers, each trained by its own classifier head alone.

The baseline that tells what the local classifier heads do by themselves (the "pred" loss of
local-error-signal training): the VAE layers of :mod:`.iffcl` without their decoders, their noise,
their KL terms and the cosine term, and without a twin. Each block has the encoder of a VAE layer
of the same sizes (input D, hidden width H, output K; H = 0 leaves out the hidden layer)::

    h   = act(x @ W_hid + b_hid)       (N, H)
    out = act(h @ W_out + b_out)       (N, K)     what the next block receives (act(mu) of a VAE layer)

and a softmax head on ``out`` (an :class:`~vaelayer_np.core.layers.OutputLayer`, as the VAE layers'
local heads). Block k's local loss is its head's cross-entropy alone::

    L_k = CE(softmax(out_k @ W_head + b_head), y)

Its gradient enters the block through the head and stops at the block's input: block k's input is a
constant of its update, as a VAE layer's input is in IFFCL, so nothing crosses a block boundary. The
output layer reads the blocks' outputs (``readout``) and learns from its own classification loss, as
IFFCL's output layer does. With ``dropout`` p > 0, each block's input is multiplied in training by a
mask of independent draws, 0 with probability p and 1 / (1 - p) otherwise (inverted dropout, drawn
from the step's generator); evaluation uses no mask.

:func:`train_step` is one mini-batch; :func:`block_local_step` the part of one block, which reads
nothing of the blocks above. Shapes: N examples, D inputs, H hidden units, K outputs, C classes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._validate import check_choice, check_dtype, check_float_array, check_labels, check_positive
from .activations import get_activation
from .iffcl import READABLE, local_head_step, output_local_step
from .layers import Dense, Layer, OutputLayer, RngLike, _as_rng, _check_dims, _check_dtype, dropout_mask
from .network import Stack
from .settings import CHOICES, DEFAULTS


class LocalBlock(Layer):
    r"""A plain dense layer with the sizes of a VAE layer's encoder: ``out = act(act(x W_hid + b_hid) W_out + b_out)``.

    Parameters
    ----------
    in_dim, out_dim : int, D and K
    hidden : int, H (0: ``out = act(x @ W_out + b_out)``)
    activation : str, ``act`` (also the hidden layer's)
    rng : int, Generator or None, seeds the initialisation (as a VAE layer's encoder: He for W_hid,
        ``N(0, 1 / fan_in)`` for W_out, zero biases)
    dtype : float32 or float64
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = DEFAULTS["encoder_hidden"],
                 activation: str = DEFAULTS["activation"], rng: RngLike = None,
                 dtype: DTypeLike = np.float64) -> None:
        _check_dims(in_dim=in_dim, out_dim=out_dim)
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 0:
            raise ValueError(f"hidden: expected an integer >= 0, got {hidden!r}")
        self._dtype = _check_dtype(dtype)
        self.in_dim, self.out_dim, self.hidden = int(in_dim), int(out_dim), int(hidden)
        self.activation = check_choice("activation", activation, CHOICES["activation"])
        self.act = get_activation(activation)
        rng = _as_rng(rng)
        self.params = {}
        self.dense_hid = None
        if self.hidden:
            self.dense_hid = Dense(self.in_dim, self.hidden, rng=rng, dtype=self._dtype)  # He: sqrt(2 / D)
            self.params["W_hid"], self.params["b_hid"] = self.dense_hid.params["W"], self.dense_hid.params["b"]
        self.dense_out = Dense(self.hidden or self.in_dim, self.out_dim, rng=rng, dtype=self._dtype, init_gain=1.0)
        self.params["W_out"], self.params["b_out"] = self.dense_out.params["W"], self.dense_out.params["b"]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """x: (N, D) -> out: (N, K), cache (the inputs and outputs of each step)."""
        check_float_array("x", x, shape=(None, self.in_dim), dtype=self._dtype)
        h_pre = h = None
        if self.dense_hid is not None:
            h_pre = x @ self.params["W_hid"] + self.params["b_hid"]
            h = self.act.forward(h_pre)
        a = (x if h is None else h) @ self.params["W_out"] + self.params["b_out"]
        out = self.act.forward(a)
        return out, {"x": x, "h_pre": h_pre, "h": h, "a": a, "out": out, "layer": id(self)}

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[np.ndarray | None,
                 dict[str, np.ndarray]]:
        """Gradients of ``L = <dout, out>``: dx (N, D) (None if not ``need_dx``) and one per parameter."""
        if not isinstance(cache, dict) or cache.get("layer") != id(self):
            raise ValueError("cache: expected the cache returned by this block's forward")
        x, h = cache["x"], cache["h"]
        self._check_grad("dout", dout, (x.shape[0], self.out_dim))
        d_a = self.act.backward(dout, cache["a"], cache["out"])
        enc_in = x if h is None else h
        grads = {"W_out": enc_in.T @ d_a, "b_out": d_a.sum(axis=0)}
        dx = None
        if h is not None:
            d_h_pre = self.act.backward(d_a @ self.params["W_out"].T, cache["h_pre"], h)
            grads["W_hid"], grads["b_hid"] = x.T @ d_h_pre, d_h_pre.sum(axis=0)
            if need_dx:
                dx = d_h_pre @ self.params["W_hid"].T
        elif need_dx:
            dx = d_a @ self.params["W_out"].T
        return dx, {k: grads[k] for k in self.params}


class LocalNetwork(Stack):
    """Blocks ``in_dim -> widths[0] -> ... -> widths[-1]``, a softmax head on each, and an output layer.

    Parameters
    ----------
    in_dim : int; widths : the blocks' output sizes K; n_classes : int
    readout : "last" or "all", what the output layer reads (as :class:`~vaelayer_np.core.network.Network`)
    seed : int, seeds the initialisation
    activation : str; hidden : int, H of every block (as a VAE layer's ``encoder_hidden``)
    dtype : float32 or float64

    It has no VAE layers (``vae_layers`` is empty): nothing to reconstruct or sample from.
    """

    vae_layers: list = []

    def __init__(self, in_dim: int, widths: Sequence[int], n_classes: int, readout: str = DEFAULTS["readout"],
                 seed: int = 0, activation: str = DEFAULTS["activation"], hidden: int = DEFAULTS["encoder_hidden"],
                 dtype: DTypeLike = np.float32) -> None:
        try:
            widths = tuple(int(w) for w in widths)
        except (TypeError, ValueError):
            raise ValueError(f"widths: expected a sequence of positive integers, got {widths!r}") from None
        if not widths:
            raise ValueError("widths: expected at least one block width")
        self.readout = check_choice("readout", readout, CHOICES["readout"])
        self.in_dim, self.widths, self.n_classes = int(in_dim), widths, int(n_classes)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        dims = (self.in_dim,) + widths
        self.blocks = [LocalBlock(dims[i], dims[i + 1], hidden=hidden, activation=activation, rng=rng, dtype=dtype)
                       for i in range(len(widths))]
        readout_dim = widths[-1] if readout == "last" else sum(widths)
        self.output = OutputLayer(readout_dim, n_classes, rng=rng, dtype=dtype)
        self.heads = [OutputLayer(w, n_classes, rng=rng, dtype=dtype) for w in widths]

    def named_layers(self) -> list[tuple[str, Any]]:
        """[("block0", block), ..., ("output", layer), ("head0", head), ...]: every layer with parameters."""
        return ([(f"block{i}", b) for i, b in enumerate(self.blocks)] + [("output", self.output)]
                + [(f"head{i}", h) for i, h in enumerate(self.heads)])


    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """The evaluation path (no dropout): logits (N, C) and the blocks' outputs."""
        outs, h = [], x
        for block in self.blocks:
            h, _ = block.forward(h)
            outs.append(h)
        return self.output.forward(self.readout_features(outs))[0], outs

    def predict_proba(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        self.check_input(x)
        return np.concatenate([self.output.predict_proba(self.forward(x[s:s + batch_size])[0])
                               for s in range(0, x.shape[0], batch_size)])

    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{ln}.{k}": v for ln, layer in self.named_layers() for k, v in layer.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        from .network import Network

        # the same checks as a Network's, entry by entry (they read only named_layers)
        Network.load_state_dict(self, state, prefix)  # type: ignore[arg-type]


@dataclass
class BlockStep:
    """One block's local step: its output (computed before the update, passed on), its head's loss and the
    gradients of the block and of its head."""

    out: np.ndarray
    loss: float
    grads: dict
    grads_head: dict


def block_local_step(block: LocalBlock, head: OutputLayer, x: np.ndarray, labels: np.ndarray,
                     mask: np.ndarray | None = None) -> BlockStep:
    r"""Block k's local step: :math:`L_k = \mathrm{CE}(\mathrm{head}(\mathrm{block}(x \odot m)), y)`, its gradients.

    Parameters
    ----------
    block, head : the block and its head
    x : (N, D) the block's input, a constant (data, or the block below's output)
    labels : (N,) int labels
    mask : (N, D) dropout mask (None: no dropout), see :func:`vaelayer_np.core.layers.dropout_mask`

    The output passed on is the one computed from the masked input: the next block sees in training what
    this block computed.
    """
    check_labels("labels", labels, x.shape[0], head.n_classes)
    x_in = x if mask is None else x * mask
    out, cache = block.forward(x_in)
    loss, d_out, grads_head = local_head_step(READABLE, head, out, labels, 1.0)
    _, grads = block.backward(d_out, cache, need_dx=False)  # nothing is sent below
    return BlockStep(out, float(loss), grads, grads_head)


def train_step(net: LocalNetwork, optimizers: dict[str, Any], x: np.ndarray, y: np.ndarray, rng: Any,
               dropout: float = 0.0) -> dict[str, float]:
    """One mini-batch: each block learns from its own head's loss, then the output layer from its own.

    ``optimizers`` maps "A.block0", ..., "A.head0", ..., "A.output" to the layers' optimisers; ``rng``
    draws the dropout masks (block by block, nothing when ``dropout`` is 0).
    Returns ``layer{k}_loss`` (block k's head cross-entropy), ``output_loss`` and ``batch_acc``.
    """
    net.check_input(x, y)
    dropout = check_positive("dropout", dropout, allow_zero=True)
    if dropout >= 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    metrics: dict[str, float] = {}
    outs, h = [], x
    for k, (block, head) in enumerate(zip(net.blocks, net.heads)):
        mask = dropout_mask(h.shape, dropout, rng, h.dtype) if dropout else None
        step = block_local_step(block, head, h, y, mask)
        optimizers[f"A.block{k}"].step(step.grads)
        optimizers[f"A.head{k}"].step(step.grads_head)
        metrics[f"layer{k}_loss"] = step.loss
        outs.append(step.out)
        h = step.out
    logits, loss, grads = output_local_step(net.output, net.readout_features(outs), y)
    optimizers["A.output"].step(grads)
    metrics["output_loss"] = float(loss)
    metrics["batch_acc"] = float(np.mean(logits.argmax(1) == y))
    return metrics

