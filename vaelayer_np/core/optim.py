"""Hand-written optimisers over parameter dicts.

An optimiser is built for one layer's ``params`` dict and updates those arrays
in place from a ``grads`` dict with the same keys::

    opt = Adam(layer.params, lr=1e-3)
    opt.step(grads)

One optimiser per layer keeps IFFCL's updates local: nothing is shared between
layers. ``state_dict()`` / ``load_state_dict()`` carry the moments into a
checkpoint (plain arrays, no pickles).
"""
from __future__ import annotations

import numpy as np

from ._validate import check_positive


def flat_buffer_of(arrays):
    """The one flat buffer that ``arrays`` (a sequence) are consecutive views of, in order, or None.

    Layers keep their parameters (and the training path its gradients) as views into one
    contiguous 1-D buffer (:func:`vaelayer_np.core.layers.flat_views`); an optimiser that sees such
    a layout updates the whole layer in one pass over the buffer.
    """
    arrays = list(arrays)
    if not arrays:
        return None
    base = arrays[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start, offset = base.__array_interface__["data"][0], 0
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.dtype != base.dtype:
            return None
        if a.__array_interface__["data"][0] != start + offset * base.itemsize:
            return None
        offset += a.size
    return base if offset == base.size else None


class Optimizer:
    def __init__(self, params, lr, weight_decay=0.0):
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict name -> ndarray, got {type(params).__name__}")
        self.params = params
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.t = 0

    def _check(self, grads):
        if set(grads) != set(self.params):
            raise ValueError(f"grads: expected keys {sorted(self.params)}, got {sorted(grads)}")
        for k, g in grads.items():
            if g.shape != self.params[k].shape:
                raise ValueError(f"grads[{k!r}]: expected shape {self.params[k].shape}, got {g.shape}")

    def _grad_with_decay(self, name, g):
        """L2 weight decay on weight matrices (names starting with 'W'), added to the gradient."""
        if self.weight_decay and name.startswith("W"):
            return g + self.weight_decay * self.params[name]
        return g

    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError


class SGD(Optimizer):
    r"""SGD with (heavy-ball) momentum: ``v = momentum * v + g``;  ``w -= lr * v``."""

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        self._check(grads)
        self.t += 1
        for name, w in self.params.items():
            g = self._grad_with_decay(name, grads[name])
            v = self.velocity[name]
            v *= self.momentum
            v += g
            w -= self.lr * v

    def state_dict(self):
        out = {"t": np.array(self.t)}
        out.update({f"velocity.{k}": v for k, v in self.velocity.items()})
        return out

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.velocity:
            self.velocity[k][...] = state[f"velocity.{k}"]


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015) with bias correction.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        w \leftarrow w - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, backend="numpy"):
        super().__init__(params, lr, weight_decay)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), got {b!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), check_positive("eps", eps)
        # The moments have the parameters' layout: when the parameters are views into one flat
        # buffer, so are m and v (same keys and shapes in state_dict()), and step() can update
        # the whole layer in one pass.
        self._flat_params = flat_buffer_of(params.values())
        self._param_views = tuple(params.values())
        if self._flat_params is not None:
            self._flat_m, self.m = _zeros_like_views(self._flat_params, params)
            self._flat_v, self.v = _zeros_like_views(self._flat_params, params)
        else:
            self._flat_m = self._flat_v = None
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._grad_views, self._flat_grads = (), None  # the last flat gradient layout seen
        from ..fast.backend import get_ops
        self.ops = get_ops(backend)

    def step(self, grads):
        self._check(grads)
        self.t += 1
        # Bias corrections folded into one step size (same result, fewer array passes).
        step_size = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        eps_hat = self.eps * np.sqrt(1 - self.beta2 ** self.t)
        flat_grads = self._flat_gradient_buffer(grads)
        if flat_grads is not None:
            # One pass over the layer: the same update, element by element, as the loop below.
            self.ops.adam_update(self._flat_params, flat_grads, self._flat_m, self._flat_v, self.beta1, self.beta2,
                                 step_size, eps_hat)
            return
        for name, w in self.params.items():
            g = self._grad_with_decay(name, grads[name])
            self.ops.adam_update(w, g, self.m[name], self.v[name], self.beta1, self.beta2, step_size, eps_hat)

    def _flat_gradient_buffer(self, grads):
        """The flat buffer behind ``grads`` if one pass over flat buffers can do this step, else None."""
        if self._flat_params is None or self.weight_decay:
            return None
        if any(self.params[k] is not view for k, view in zip(self.params, self._param_views)):
            return None  # a parameter array was replaced: update key by key
        views = tuple(grads[k] for k in self.params)
        if len(views) != len(self._grad_views) or any(a is not b for a, b in zip(views, self._grad_views)):
            self._grad_views, self._flat_grads = views, flat_buffer_of(views)
            if self._flat_grads is not None and self._flat_grads.size != self._flat_params.size:
                self._flat_grads = None
        return self._flat_grads

    def state_dict(self):
        out = {"t": np.array(self.t)}
        out.update({f"m.{k}": v for k, v in self.m.items()})
        out.update({f"v.{k}": v for k, v in self.v.items()})
        return out

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]


def _zeros_like_views(flat, params):
    """A zero buffer shaped like ``flat`` and a dict of views into it with the shapes of ``params``."""
    buffer = np.zeros_like(flat)
    views, offset = {}, 0
    for k, p in params.items():
        views[k] = buffer[offset:offset + p.size].reshape(p.shape)
        offset += p.size
    return buffer, views


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
