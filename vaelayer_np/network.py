"""A network: a stack of VAE layers and an output layer (one of IFFCL's twins).

The network only holds layers and runs them; *how* it learns lives in
:mod:`.iffcl` (local losses, no gradient between layers) and :mod:`.backprop`
(the end-to-end baseline).
"""
from __future__ import annotations

import numpy as np

from ._validate import check_choice, check_float_array, check_labels
from .layers import OutputLayer, VAELayer


class Network:
    """VAE layers ``in_dim -> widths[0] -> ... -> widths[-1]`` and an output layer.

    Parameters
    ----------
    in_dim : int
    widths : sequence of int, the latent size of each VAE layer
    n_classes : int
    readout : {"last", "all"}
        What the output layer reads: the last VAE layer's output (the paper) or
        the concatenation of every VAE layer's output.
    seed : int, seeds the initialisation (twins use different seeds)
    activation, beta, recon, log_var_bound, log_var_bias_init, pass_on :
        passed to every :class:`~vaelayer_np.layers.VAELayer`
    output_loss : {"softmax", "bce"}
    dtype, backend : as for the layers
    """

    def __init__(self, in_dim, widths, n_classes, readout="last", seed=0, activation="relu", beta=1e-3,
                 recon="mse", log_var_bound=6.0, log_var_bias_init=-4.0, pass_on="sample", output_loss="softmax",
                 encoder_hidden=0, dtype=np.float32, backend="numpy"):
        widths = tuple(int(w) for w in widths)
        if not widths:
            raise ValueError("widths: expected at least one VAE layer width")
        self.readout = check_choice("readout", readout, ("last", "all"))
        self.in_dim, self.widths, self.n_classes = int(in_dim), widths, int(n_classes)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        dims = (self.in_dim,) + widths
        self.vae_layers = [
            VAELayer(dims[i], dims[i + 1], activation=activation, beta=beta, recon=recon if i == 0 else "mse",
                     log_var_bound=log_var_bound, log_var_bias_init=log_var_bias_init, pass_on=pass_on,
                     encoder_hidden=encoder_hidden, rng=rng,
                     dtype=dtype, backend=backend)
            for i in range(len(widths))
        ]
        readout_dim = widths[-1] if readout == "last" else sum(widths)
        self.output = OutputLayer(readout_dim, n_classes, loss=output_loss, rng=rng, dtype=dtype, backend=backend)

    def named_layers(self):
        """[("vae0", layer), ("vae1", layer), ..., ("output", layer)]"""
        return [(f"vae{i}", layer) for i, layer in enumerate(self.vae_layers)] + [("output", self.output)]

    def readout_features(self, outs):
        """The output layer's input from the list of VAE-layer outputs."""
        return outs[-1] if self.readout == "last" else np.concatenate(outs, axis=1)

    def check_input(self, x, labels=None):
        check_float_array("x", x, shape=(None, self.in_dim), dtype=self.dtype)
        if labels is not None:
            check_labels("labels", labels, x.shape[0], self.n_classes)

    def forward(self, x, rng=None, eps=None, sample=True):
        """Run every layer. Returns (logits, vae_caches, output_cache, outs)."""
        caches, outs, h = [], [], x
        for i, layer in enumerate(self.vae_layers):
            h, cache = layer.forward(h, eps=None if eps is None else eps[i], rng=rng, sample=sample)
            caches.append(cache)
            outs.append(h)
        logits, out_cache = self.output.forward(self.readout_features(outs))
        return logits, caches, out_cache, outs

    def predict_proba(self, x, batch_size=1024):
        """Class probabilities on the mean path (no sampling), in batches."""
        self.check_input(x)
        probs = []
        for start in range(0, x.shape[0], batch_size):
            logits = self.forward(x[start:start + batch_size], sample=False)[0]
            probs.append(self.output.predict_proba(logits))
        return np.concatenate(probs)

    def backprop_loss_and_grads(self, x, labels, rng=None, eps=None, elbo_weight=0.0, need_dx=False,
                                return_forward=False):
        r"""End-to-end loss and gradients (the backpropagation baseline).

        ``L = classification loss + elbo_weight * sum_k ELBO_k``; the gradient of
        the classification loss flows down through every layer's ``dx``.

        Returns
        -------
        loss : float
        grads : dict layer name -> grads dict
        dx : (N, D) array or None
        (logits, vae_caches) : only with ``return_forward=True``, the training pass itself
        """
        self.check_input(x, labels)
        logits, caches, out_cache, outs = self.forward(x, rng=rng, eps=eps)
        loss, d_logits = self.output.loss(logits, labels)
        if elbo_weight:
            loss += elbo_weight * sum(layer.elbo(c)["elbo"] for layer, c in zip(self.vae_layers, caches))
        d_feat, g_out = self.output.backward(d_logits, out_cache)
        grads = {"output": g_out}
        if self.readout == "last":
            d_outs = [None] * (len(outs) - 1) + [d_feat]
        else:
            splits = np.cumsum(self.widths)[:-1]
            d_outs = np.split(d_feat, splits, axis=1)
        d_h = None
        for i in reversed(range(len(self.vae_layers))):
            dout = d_outs[i] if d_h is None else (d_h if d_outs[i] is None else d_h + d_outs[i])
            d_h, grads[f"vae{i}"] = self.vae_layers[i].backward(
                caches[i], dout=dout, elbo_weight=elbo_weight, need_dx=(i > 0 or need_dx))
        if return_forward:
            return loss, grads, d_h, (logits, caches)
        return loss, grads, d_h

    # -------------------------------------------------------------- state
    def state_dict(self, prefix=""):
        return {f"{prefix}{ln}.{k}": v for ln, layer in self.named_layers() for k, v in layer.params.items()}

    def load_state_dict(self, state, prefix=""):
        for ln, layer in self.named_layers():
            for k, v in layer.params.items():
                key = f"{prefix}{ln}.{k}"
                if key not in state:
                    raise ValueError(f"checkpoint: missing parameter {key!r}")
                if state[key].shape != v.shape:
                    raise ValueError(f"checkpoint: parameter {key!r} has shape {state[key].shape}, "
                                     f"the model expects {v.shape}")
                v[...] = state[key]
