"""The fast training path: the layers' arithmetic with reused buffers, compiled kernels and one-pass updates.

The readable layers (:mod:`vaelayer_np.core.layers`) allocate new arrays at every call and check
every input: right for reading and for gradient checks, slow for training. A :class:`FastPath`
runs the same step, up to rounding (not the same bits: the fused heads and the kernels group the sums
differently), for the training steps of :mod:`vaelayer_np.core.iffcl`:

* no per-call input checks (the step checks its batch once);
* the large results (hidden layer, mean, raw log-variance, reconstruction, noise) written into
  buffers allocated once per layer and batch size;
* each layer's parameters moved into one contiguous buffer (``layer.params`` keeps its keys and
  shapes: its entries become views), its gradients written into a second one, so that
  :class:`FlatAdam` updates a whole layer in one compiled pass;
* the mean and log-variance heads fused: in that buffer ``W_mu`` and ``W_lv`` are the two column
  halves of one (H, 2K) block ``[W_mu | W_lv]`` (and ``b_mu``, ``b_lv`` of one (2K,) block), and the
  heads' gradients ``[d_mu | d_r]`` share one (N, 2K) buffer, so the heads' forward, their weight
  gradient and their input gradient are one matrix product each instead of two;
* the hot element-wise work through a backend's operations (:func:`vaelayer_np.fast.backend.get_ops`:
  the Numba kernels, or the NumPy references for testing).

It is passed to the core's steps as ``path=`` (see :class:`vaelayer_np.core.iffcl.ReadablePath`
for the interface and the readable version). ``tests/test_speed_equivalence.py`` checks that both
paths give the same parameters after training steps: with the NumPy references to 1e-12 in float64 in every
setting, with the compiled kernels to 1e-4 relative in float32 (two settings).

Side effects, on purpose: :meth:`FastPath.prepare` rewrites a layer's ``params`` entries as views
into one buffer (values unchanged), and the first use tunes glibc's allocator so that freed
buffers are kept (:func:`vaelayer_np.fast.kernels.keep_freed_memory`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core._validate import NonFiniteError
from ..core.activations import ActivationFn
from ..core.iffcl import cosine_targets
from ..core.layers import VAELayer
from ..core.ops import bound_log_var
from ..core.optim import Adam
from .backend import get_ops

FUSED = (("W_mu", "W_lv", "W_ml"), ("b_mu", "b_lv", "b_ml"))
"""Pairs of parameters laid out side by side as one block, and the block's name: the mean and the
log-variance heads, so that ``h @ [W_mu | W_lv]`` is one matrix product (see :class:`FastPath`)."""


def flat_views(arrays: dict[str, np.ndarray], fill: float | None = None, fuse: tuple[tuple[str, ...], ...] = FUSED,
               ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One contiguous 1-D buffer and a dict of views into it with the shapes of ``arrays``.

    Parameters
    ----------
    arrays : dict name -> ndarray (one dtype)
    fill : None to copy the arrays' values into the buffer, or a number to fill it with
    fuse : pairs ``(first, second, block)``: where ``arrays`` holds both names with the same leading
        shape, the two are the column blocks ``[first | second]`` of one array ``block`` (for
        ``W_mu`` and ``W_lv``: the (H, 2K) block, whose column halves are the two views)

    Returns
    -------
    buffer : (P,) array, P the total number of elements
    views : dict name -> view of ``buffer`` with the array's shape, in the dict's order
    blocks : dict block name -> the fused array (a view of ``buffer``), for the pairs fused

    The layout depends only on the names and shapes, so two calls on arrays of the same names and
    shapes place every element at the same offset (the parameters, gradients and Adam moments of a
    layer correspond element for element).
    """
    dtype = next(iter(arrays.values())).dtype
    buffer = np.empty(sum(a.size for a in arrays.values()), dtype=dtype)
    pairs = {first: (second, block) for first, second, block in fuse
             if first in arrays and second in arrays and arrays[first].shape[:-1] == arrays[second].shape[:-1]}
    seconds = {second for second, _ in pairs.values()}
    views, blocks, offset = {}, {}, 0
    for name, a in arrays.items():
        if name in seconds:
            continue  # placed with its first
        if name in pairs:
            second, block_name = pairs[name]
            b = arrays[second]
            c = a.shape[-1]
            shape = a.shape[:-1] + (c + b.shape[-1],)
            block = buffer[offset:offset + a.size + b.size].reshape(shape)
            views[name], views[second] = block[..., :c], block[..., c:]
            blocks[block_name] = block
            offset += a.size + b.size
        else:
            views[name] = buffer[offset:offset + a.size].reshape(a.shape)
            offset += a.size
    views = {name: views[name] for name in arrays}  # the arrays' order
    for name, a in arrays.items():
        views[name][...] = a if fill is None else fill
    return buffer, views, blocks


class _LayerBuffers:
    """What the fast path keeps for one layer: its flat parameter and gradient buffers and workspaces."""

    def __init__(self, layer: Any) -> None:
        self.flat_params, views, self.param_blocks = flat_views(layer.params)
        layer.params.update(views)  # the same dict (an OutputLayer shares it with its Dense), now views
        self.param_views = tuple(views.values())
        self.flat_grads, self.grads, self.grad_blocks = flat_views(layer.params, fill=0)
        self.workspaces: dict[int, dict[str, Any]] = {}  # batch size -> buffers

    def valid_for(self, layer: Any) -> bool:
        """False if a parameter array of ``layer`` was replaced since (then the layout is made again)."""
        return all(a is b for a, b in zip(self.param_views, layer.params.values()))




class FastPath:
    """The training path on backend ``backend`` ("numba": the compiled kernels; "numpy": the references).

    Methods mirror :class:`vaelayer_np.core.iffcl.ReadablePath`; the returned arrays and gradient
    dicts are buffers of the layer, valid until its next training step.
    """

    def __init__(self, backend: str = "numba") -> None:
        self.ops = get_ops(backend)
        self.backend = self.ops.name
        self._layers: dict[int, _LayerBuffers] = {}  # id(layer) -> _LayerBuffers
        self._acts: dict[str, ActivationFn] = {}
        if self.backend == "numba":
            from .kernels import keep_freed_memory

            keep_freed_memory()

    # ----------------------------------------------------------------- layout
    def prepare(self, layer: Any) -> _LayerBuffers:
        """The layer's buffers: its parameters moved into one flat buffer on first use (values unchanged)."""
        buffers = self._layers.get(id(layer))
        if buffers is None or not buffers.valid_for(layer):
            buffers = self._layers[id(layer)] = _LayerBuffers(layer)
        return buffers

    def make_adam(self, layer: Any, lr: float, weight_decay: float = 0.0) -> FlatAdam:
        """An Adam optimiser for ``layer`` that updates its whole flat buffer in one pass."""
        return FlatAdam(self, layer, lr=lr, weight_decay=weight_decay)

    def _act(self, name: str) -> ActivationFn:
        if name not in self._acts:
            self._acts[name] = self.ops.activation(name)
        return self._acts[name]

    def _workspace(self, layer: Any, buffers: _LayerBuffers, n: int) -> dict[str, Any]:
        ws = buffers.workspaces.get(n)
        if ws is None:
            k, dt = layer.latent_dim, layer.dtype
            ws = {"eps": np.empty((n, k), dt), "mu": np.empty((n, k), dt), "r": np.empty((n, k), dt),
                  "ml": np.empty((n, 2 * k), dt), "d_ml": np.empty((n, 2 * k), dt),
                  "x_hat": np.empty((n, layer.in_dim), dt)}
            if layer.encoder_hidden:
                ws["h_pre"] = np.empty((n, layer.encoder_hidden), dt)
            buffers.workspaces[n] = ws
        return ws

    # ----------------------------------------------------------------- VAE layer
    def vae_forward(self, layer: VAELayer, x: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """``layer.forward(x, rng=rng)`` (training: sample=True), into the layer's reused buffers."""
        ws = self._workspace(layer, self.prepare(layer), x.shape[0])
        rng.standard_normal(out=ws["eps"], dtype=layer.dtype)
        return self.vae_forward_drawn(layer, x)

    def vae_forward_drawn(self, layer: VAELayer, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`vae_forward` with the noise already drawn into the layer's buffer for this batch size
        (``self._workspace(layer, self.prepare(layer), len(x))["eps"]``)."""
        buffers = self.prepare(layer)
        ws = self._workspace(layer, buffers, x.shape[0])
        p, ops, act = layer.params, self.ops, self._act(layer.activation)
        eps = ws["eps"]
        h_pre = h = None
        if layer.encoder_hidden:
            h_pre = ops.matmul_into(x, p["W_enc"], ws["h_pre"])
            h_pre += p["b_enc"]
            h = act.forward(h_pre)
        enc_in = x if h is None else h
        k = layer.latent_dim
        # the two heads in one product: [mu | r] = h @ [W_mu | W_lv] + [b_mu | b_lv]
        ml = ops.matmul_into(enc_in, buffers.param_blocks["W_ml"], ws["ml"])
        ml += buffers.param_blocks["b_ml"]
        mu, r = ws["mu"], ws["r"]  # contiguous copies for the element-wise kernels
        np.copyto(mu, ml[:, :k])
        np.copyto(r, ml[:, k:])
        log_var = bound_log_var(r, layer.log_var_bound)
        std, z = ops.reparameterize(mu, log_var, eps)
        kl, kl_grads = ops.kl_diag_gaussian(mu, log_var, std * std)
        if not np.isfinite(kl):
            raise NonFiniteError("x: the KL term overflowed (inf or NaN): the inputs or the weights are too large "
                                 "for this dtype; scale the inputs or lower the learning rate")
        x_hat = ops.matmul_into(z, p["W_dec"], ws["x_hat"])
        x_hat += p["b_dec"]
        out = act.forward(mu if layer.pass_on == "mean" else z)
        cache = {"x": x, "h_pre": h_pre, "h": h, "mu": mu, "log_var": log_var, "std": std, "eps": eps, "z": z,
                 "x_hat": x_hat, "out": out, "kl": kl, "kl_grads": kl_grads}
        return out, cache

    def vae_backward(self, layer: VAELayer, dout: np.ndarray | None, cache: Any,
                     dz: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The parameter gradients of ``layer.backward(dout, cache, dz=dz, need_dx=False)``, into its buffer.

        Also stores the reconstruction's value in ``cache["recon"]`` (computed with its gradient in one
        pass), which :meth:`vae_loss_terms` reads.
        """
        buffers = self.prepare(layer)
        x, z, mu = cache["x"], cache["z"], cache["mu"]
        p, ops, g, act = layer.params, self.ops, buffers.grads, self._act(layer.activation)
        if layer.recon == "mse":
            cache["recon"], d_xhat = ops.mse_value_and_grad(cache["x_hat"], x)
        else:
            cache["recon"], (d_xhat, _) = layer._recon(cache["x_hat"], x)
        ops.matmul_into(z.T, d_xhat, g["W_dec"])
        np.add.reduce(d_xhat, axis=0, out=g["b_dec"])
        d_z = ops.matmul(d_xhat, p["W_dec"].T)
        if dz is not None:
            d_z += dz
        d_mu_extra = None
        if dout is not None:
            passed_mean = layer.pass_on == "mean"
            d_passed = act.backward(dout, mu if passed_mean else z, cache["out"])
            if passed_mean:
                d_mu_extra = d_passed
            else:
                d_z += d_passed
        d_mu, d_r = ops.latent_backward(d_z, cache["eps"], cache["std"], cache["kl_grads"], layer.beta,
                                        cache["log_var"], layer.log_var_bound)
        k = layer.latent_dim
        d_ml = self._workspace(layer, buffers, x.shape[0])["d_ml"]  # [d_mu | d_r]: the heads' gradients side by side
        if d_mu_extra is not None:
            np.add(d_mu, d_mu_extra, out=d_ml[:, :k])
        else:
            np.copyto(d_ml[:, :k], d_mu)
        np.copyto(d_ml[:, k:], d_r)
        enc_in = x if cache["h"] is None else cache["h"]
        ops.matmul_into(enc_in.T, d_ml, buffers.grad_blocks["W_ml"])  # [g_W_mu | g_W_lv] in one product
        np.add.reduce(d_ml, axis=0, out=buffers.grad_blocks["b_ml"])
        if layer.encoder_hidden:
            d_h = ops.matmul(d_ml, buffers.param_blocks["W_ml"].T)  # d_mu W_mu^T + d_r W_lv^T in one product
            d_h_pre = act.backward(d_h, cache["h_pre"], cache["h"])
            ops.matmul_into(x.T, d_h_pre, g["W_enc"])
            np.add.reduce(d_h_pre, axis=0, out=g["b_enc"])
        return g

    def vae_loss_terms(self, layer: VAELayer, cache: Any) -> dict[str, Any]:
        """``layer.loss_terms(cache)`` from the values the fast forward and backward computed."""
        recon, kl = cache["recon"], cache["kl"]
        return {"recon": recon, "kl": kl, "neg_elbo": recon + layer.beta * kl}

    # ----------------------------------------------------------------- output layer
    def output_forward(self, layer: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``layer.forward(x)`` without the input check: logits and the cache (the input)."""
        return self.ops.matmul(x, layer.params["W"]) + layer.params["b"], x

    def output_loss(self, layer: Any, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        if layer.loss_name == "softmax":
            value, (d_logits,) = self.ops.softmax_cross_entropy(logits, labels)
            return value, d_logits
        return layer.loss(logits, labels)

    def output_backward(self, layer: Any, d_logits: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """The gradients of ``layer.backward(d_logits, x, need_dx=False)``, into the layer's buffer."""
        g = self.prepare(layer).grads
        self.ops.matmul_into(x.T, d_logits, g["W"])
        np.add.reduce(d_logits, axis=0, out=g["b"])
        return g

    def head_backward(self, layer: Any, d_logits: np.ndarray,
                      x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A local head's gradients (into its buffer) and the gradient it sends into its layer's output."""
        return self.ops.matmul(d_logits, layer.params["W"].T), self.output_backward(layer, d_logits, x)

    # ----------------------------------------------------------------- the cosine term
    def cosine_term(self, z_a: np.ndarray, z_b: np.ndarray, target: Any, labels_a: Any, labels_b: Any, contrast: str,
                    margin: float) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        """:func:`vaelayer_np.core.iffcl.cosine_term` through the backend's kernels."""
        if contrast == "partner":
            return self.ops.cosine_embedding(z_a, z_b, target, margin)
        return self.ops.cosine_embedding_matrix(z_a, z_b, cosine_targets(labels_a, labels_b), margin)


class FlatAdam(Adam):
    """:class:`vaelayer_np.core.optim.Adam` over a layer's flat buffers: the whole layer in one pass.

    The moments ``m`` and ``v`` have the parameters' layout (views into two flat buffers, the same
    keys and shapes in ``state_dict()``). When ``step`` gets the fast path's own gradient views the
    update is one call of the backend's ``adam_update`` over the flat buffers; any other gradient
    dict, or weight decay, takes the reference's per-array update.
    """

    def __init__(self, path: FastPath, layer: Any, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self._buffers = path.prepare(layer)
        self._ops = path.ops
        super().__init__(layer.params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
        self._flat_m, self.m, _ = flat_views(self.params, fill=0)
        self._flat_v, self.v, _ = flat_views(self.params, fill=0)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        buffers = self._buffers
        one_pass = (not self.weight_decay and buffers.valid_for(self)
                    and all(grads.get(k) is g for k, g in buffers.grads.items()))
        if not one_pass:
            return super().step(grads)
        self.t += 1
        step_size, eps_hat = self.step_sizes()
        self._ops.adam_update(buffers.flat_params, buffers.flat_grads, self._flat_m, self._flat_v, self.beta1,
                              self.beta2, step_size, eps_hat)

