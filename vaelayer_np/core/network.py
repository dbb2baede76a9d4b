"""A network: a stack of VAE layers and an output layer (one of IFFCL's twins).

The network only holds layers and runs them forward; *how* it learns lives beside
it, in two modules that can each be read on their own: :mod:`.iffcl` (local
losses, no gradient between layers) and :mod:`.backprop` (the end-to-end baseline).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._validate import check_choice, check_dtype, check_float_array, check_labels
from .layers import OutputLayer, VAELayer, _as_rng, _no_backend
from .settings import CHOICES, DEFAULTS

RngLike = int | np.random.Generator | None


class Stack:
    """What the layer stacks share (:class:`Network`, and the local-heads baseline's
    :class:`vaelayer_np.core.localnet.LocalNetwork`): the output layer's input and the batch check.
    A stack has ``readout`` ("last" or "all"), ``in_dim``, ``n_classes`` and ``dtype``."""

    readout: str
    in_dim: int
    n_classes: int
    dtype: np.dtype

    def readout_features(self, outs: list[np.ndarray]) -> np.ndarray:
        """The output layer's input from the list of the layers' outputs: the last one, or all side by side."""
        return outs[-1] if self.readout == "last" else np.concatenate(outs, axis=1)

    def check_input(self, x: np.ndarray, labels: np.ndarray | None = None) -> None:
        """A batch ``x`` of this stack's inputs (and its labels), checked; errors name ``x`` or ``labels``."""
        check_float_array("x", x, shape=(None, self.in_dim), dtype=self.dtype)
        if labels is not None:
            check_labels("labels", labels, x.shape[0], self.n_classes)


class Network(Stack):
    """VAE layers ``in_dim -> widths[0] -> ... -> widths[-1]`` and an output layer.

    Every default comes from :data:`vaelayer_np.core.settings.DEFAULTS`: a network built
    with defaults is the model ``vaelayer train`` trains.

    Parameters
    ----------
    in_dim : int
    widths : sequence of int, the latent size of each VAE layer
    n_classes : int
    readout : str, "last" or "all"
        What the output layer reads: the last VAE layer's output (the paper) or
        the concatenation of every VAE layer's output.
    seed : int, seeds the initialisation (twins use different seeds)
    activation, beta, log_var_bound, log_var_bias_init, pass_on, encoder_hidden :
        passed to every :class:`~vaelayer_np.core.layers.VAELayer`
    recon : str, "mse" or "bce"
        the *first* VAE layer's reconstruction loss; deeper layers reconstruct the
        previous layer's output, which is not in [0, 1], and always use "mse"
    output_loss : str, "softmax" or "bce"
    local_heads : bool
        Give every VAE layer a classifier head of its own (a softmax layer on the layer's output,
        ``heads[k]``), trained as part of that layer's local loss (see :mod:`.iffcl`). The heads are
        made after every other layer, so the other layers' initialisation does not depend on them.
    dtype : float32 or float64
    backend : deprecated, ignored (the layers are the NumPy reference; the trainer chooses the fast path)
    """

    def __init__(self, in_dim: int, widths: Sequence[int], n_classes: int, readout: str = DEFAULTS["readout"],
                 seed: int = 0, activation: str = DEFAULTS["activation"], beta: float = DEFAULTS["beta"],
                 recon: str = DEFAULTS["recon"], log_var_bound: float | None = DEFAULTS["log_var_bound"],
                 log_var_bias_init: float = DEFAULTS["log_var_bias_init"], pass_on: str = DEFAULTS["pass_on"],
                 output_loss: str = DEFAULTS["output_loss"], encoder_hidden: int = DEFAULTS["encoder_hidden"],
                 dtype: DTypeLike = np.float32, backend: str | None = None, local_heads: bool = False) -> None:
        try:
            widths = tuple(int(w) for w in widths)
        except (TypeError, ValueError):
            raise ValueError(f"widths: expected a sequence of positive integers, got {widths!r}") from None
        if not widths:
            raise ValueError("widths: expected at least one VAE layer width")
        _no_backend(backend)
        self.readout = check_choice("readout", readout, CHOICES["readout"])
        self.in_dim, self.widths, self.n_classes = int(in_dim), widths, int(n_classes)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        dims = (self.in_dim,) + widths
        self.vae_layers = [
            VAELayer(dims[i], dims[i + 1], activation=activation, beta=beta, recon=recon if i == 0 else "mse",
                     log_var_bound=log_var_bound, log_var_bias_init=log_var_bias_init, pass_on=pass_on,
                     encoder_hidden=encoder_hidden, rng=rng, dtype=dtype)
            for i in range(len(widths))
        ]
        readout_dim = widths[-1] if readout == "last" else sum(widths)
        self.output = OutputLayer(readout_dim, n_classes, loss=output_loss, rng=rng, dtype=dtype)
        self.heads = [OutputLayer(w, n_classes, rng=rng, dtype=dtype) for w in widths] if local_heads else []

    def named_layers(self) -> list[tuple[str, Any]]:
        """[("vae0", layer), ..., ("output", layer), ("head0", layer), ...]: every layer with parameters."""
        return ([(f"vae{i}", layer) for i, layer in enumerate(self.vae_layers)] + [("output", self.output)]
                + [(f"head{i}", head) for i, head in enumerate(self.heads)])


    def forward(self, x: np.ndarray, rng: RngLike = None, eps: Sequence[np.ndarray] | None = None,
                sample: bool = True, masks: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, list, Any, list]:
        """Run every layer.

        Parameters
        ----------
        x : (N, D) array
        rng : int, Generator or None; one generator is made from it and shared by the
            layers, so each layer draws its own noise
        eps : list of (N, K_i) arrays, optional: the noise of each layer (overrides rng)
        sample : bool, False for the evaluation path (means, no noise)
        masks : list of (N, D_i) dropout masks, optional: layer i reads its input times ``masks[i]``
            (:func:`vaelayer_np.core.layers.dropout_mask`; training only)

        Returns
        -------
        logits : (N, C) array
        vae_caches : list of the VAE layers' caches
        output_cache : the output layer's cache
        outs : list of the VAE layers' outputs
        """
        rng = _as_rng(rng) if (sample and eps is None) else None
        caches, outs, layer_input = [], [], x
        for i, layer in enumerate(self.vae_layers):
            if masks is not None:
                layer_input = layer_input * masks[i]
            out, cache = layer.forward(layer_input, eps=None if eps is None else eps[i], rng=rng, sample=sample)
            caches.append(cache)
            outs.append(out)
            layer_input = out
        logits, out_cache = self.output.forward(self.readout_features(outs))
        return logits, caches, out_cache, outs

    def predict_proba(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities on the mean path (no sampling), in batches."""
        self.check_input(x)
        probs = []
        for start in range(0, x.shape[0], batch_size):
            logits = self.forward(x[start:start + batch_size], sample=False)[0]
            probs.append(self.output.predict_proba(logits))
        return np.concatenate(probs)

    # -------------------------------------------------------------- state
    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{ln}.{k}": v for ln, layer in self.named_layers() for k, v in layer.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        for ln, layer in self.named_layers():
            for k, v in layer.params.items():
                key = f"{prefix}{ln}.{k}"
                if key not in state:
                    raise ValueError(f"checkpoint: missing parameter {key!r}")
                value = state[key]
                if not isinstance(value, np.ndarray) or value.shape != v.shape:
                    got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
                    raise ValueError(f"checkpoint: parameter {key!r} has shape {got}, the model expects {v.shape}")
                if value.dtype.kind != "f":
                    raise ValueError(f"checkpoint: parameter {key!r} has dtype {value.dtype}, expected floats")
                if not np.isfinite(value).all():
                    raise ValueError(f"checkpoint: parameter {key!r} contains NaN or inf")
                v[...] = value
