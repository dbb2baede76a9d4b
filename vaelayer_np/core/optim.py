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

import warnings

import numpy as np

from ._validate import check_positive
from .ops import adam_update


class Optimizer:
    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float = 0.0) -> None:
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict name -> ndarray, got {type(params).__name__}")
        self.params = params
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.t = 0

    def _check(self, grads: dict[str, np.ndarray]) -> None:
        if set(grads) != set(self.params):
            raise ValueError(f"grads: expected keys {sorted(self.params)}, got {sorted(grads)}")
        for k, g in grads.items():
            if g.shape != self.params[k].shape:
                raise ValueError(f"grads[{k!r}]: expected shape {self.params[k].shape}, got {g.shape}")

    def _grad_with_decay(self, name: str, g: np.ndarray) -> np.ndarray:
        """L2 weight decay on weight matrices (names starting with 'W'), added to the gradient."""
        if self.weight_decay and name.startswith("W"):
            return g + self.weight_decay * self.params[name]
        return g

    def state_dict(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    r"""SGD with (heavy-ball) momentum: ``v = momentum * v + g``;  ``w -= lr * v``."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self._check(grads)
        self.t += 1
        for name, w in self.params.items():
            g = self._grad_with_decay(name, grads[name])
            v = self.velocity[name]
            v *= self.momentum
            v += g
            w -= self.lr * v

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"t": np.array(self.t)}
        out.update({f"velocity.{k}": v for k, v in self.velocity.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
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

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, backend: str | None = None) -> None:
        super().__init__(params, lr, weight_decay)
        if backend is not None:
            warnings.warn("backend: Adam is the NumPy reference; the one-pass compiled update is "
                          "vaelayer_np.fast.training.FlatAdam", DeprecationWarning, stacklevel=2)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), got {b!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), check_positive("eps", eps)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step_sizes(self) -> tuple[float, float]:
        """The bias corrections folded into one step size and one epsilon (same update, fewer array passes):
        ``w -= step_size * m / (sqrt(v) + eps_hat)`` with ``step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t)``
        and ``eps_hat = eps sqrt(1 - beta2^t)``."""
        step_size = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        eps_hat = self.eps * np.sqrt(1 - self.beta2 ** self.t)
        return step_size, eps_hat

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self._check(grads)
        self.t += 1
        step_size, eps_hat = self.step_sizes()
        for name, w in self.params.items():
            g = self._grad_with_decay(name, grads[name])
            adam_update(w, g, self.m[name], self.v[name], self.beta1, self.beta2, step_size, eps_hat)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"t": np.array(self.t)}
        out.update({f"m.{k}": v for k, v in self.m.items()})
        out.update({f"v.{k}": v for k, v in self.v.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
