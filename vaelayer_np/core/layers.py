"""Layers with explicit forward and backward passes: the readable reference.

Every layer follows one contract (CS231n style, but as small classes that own
their parameters so that checkpoints and optimisers can see them):

* ``layer.params`` : dict name -> ndarray
* ``out, cache = layer.forward(x, ...)`` : the cache holds what backward needs
* ``dx, grads = layer.backward(dout, cache, ...)`` : ``grads`` has the same keys as ``params``.

Both are pure: they read the layer's parameters and their arguments and write nothing
else (the caller's arrays and the cache are left as they were), so calling backward
twice gives the same result. Shapes: N examples, D inputs, K latent units / outputs,
C classes.

This is the one forward and the one backward of each layer, written as plainly as the
maths. The training path of :mod:`vaelayer_np.fast.training` computes the same thing with
reused buffers and compiled kernels; ``tests/test_speed_equivalence.py`` checks that the
two agree: to 1e-12 in float64 with the NumPy references in every combination of the settings that change a
step's arithmetic, and to 1e-4 relative in float32 with the compiled kernels (two settings).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import losses, ops
from ._validate import NonFiniteError, check_choice, check_dtype, check_finite, check_float_array, check_positive
from .activations import get_activation, sigmoid
from .ops import bound_log_var, softmax
from .settings import CHOICES, DEFAULTS

RngLike = int | np.random.Generator | None


def _as_rng(rng: RngLike, name: str = "rng") -> np.random.Generator:
    """A numpy Generator from None, a seed (an int >= 0) or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"{name}: expected a seed >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name}: expected None, an int seed >= 0 or a numpy.random.Generator, "
                     f"got {type(rng).__name__}")


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _check_dtype(dtype: DTypeLike) -> np.dtype:
    return check_dtype(dtype)


def _no_backend(backend: str | None) -> None:
    """The readable layers always compute with NumPy; the fast path is chosen by whoever trains.

    The old ``backend`` argument is still accepted (one of "numpy", "numba"), with a warning.
    """
    if backend is not None:
        check_choice("backend", backend, ("numpy", "numba"))
        warnings.warn("backend: the layers no longer take a backend (they are the NumPy reference); the fast "
                      "path is chosen by the trainer: TrainConfig(path='fast') or "
                      "vaelayer_np.fast.training.FastPath", DeprecationWarning, stacklevel=3)


class Layer:
    """Shared helpers: parameter bookkeeping and upstream-gradient checks."""

    params: dict
    _dtype: np.dtype

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _check_grad(self, name: str, g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return check_float_array(name, g, shape=shape, dtype=self._dtype)

    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))


class Dense(Layer):
    r"""Affine layer ``out = x @ W + b``.

    Parameters
    ----------
    in_dim, out_dim : int
    rng : int, Generator or None
        Seeds the initialisation ``W ~ N(0, init_gain^2 / in_dim)``, ``b = 0``.
    init_gain : float
        sqrt(2) (He) suits ReLU; 1 (LeCun) suits tanh / identity.
    """

    def __init__(self, in_dim: int, out_dim: int, rng: RngLike = None, dtype: DTypeLike = np.float64,
                 init_gain: float = np.sqrt(2.0), backend: str | None = None) -> None:
        _check_dims(in_dim=in_dim, out_dim=out_dim)
        _no_backend(backend)
        self._dtype = _check_dtype(dtype)
        rng = _as_rng(rng)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.params = {
            "W": (rng.standard_normal((in_dim, out_dim)) * (init_gain / np.sqrt(in_dim))).astype(self._dtype),
            "b": np.zeros(out_dim, dtype=self._dtype),
        }

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """x: (N, D) -> out: (N, K); cache = x."""
        check_float_array("x", x, shape=(None, self.in_dim), dtype=self._dtype)
        return x @ self.params["W"] + self.params["b"], x

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[np.ndarray | None,
                 dict[str, np.ndarray]]:
        """dout: (N, K) -> dx: (N, D) (None if not need_dx), grads {W: (D, K), b: (K,)}."""
        x = cache
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"cache: expected the cache returned by this layer's forward (its input, shape "
                             f"(N, {self.in_dim})), got {type(x).__name__}")
        self._check_grad("dout", dout, (x.shape[0], self.out_dim))
        grads = {"W": x.T @ dout, "b": dout.sum(axis=0)}
        dx = dout @ self.params["W"].T if need_dx else None
        return dx, grads


class Activation(Layer):
    """A parameter-free element-wise activation as a layer (see :mod:`.activations`)."""

    def __init__(self, name: str = DEFAULTS["activation"], dtype: DTypeLike = np.float64) -> None:
        self.fn = get_activation(name)
        self.name = name
        self._dtype = _check_dtype(dtype)
        self.params = {}

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        check_float_array("x", x, dtype=self._dtype)
        out = self.fn.forward(x)
        return out, (x, out)

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[np.ndarray | None,
                 dict[str, np.ndarray]]:
        if not (isinstance(cache, tuple) and len(cache) == 2):
            raise ValueError(f"cache: expected the (x, out) pair returned by this layer's forward, "
                             f"got {type(cache).__name__}")
        x, out = cache
        self._check_grad("dout", dout, x.shape)
        return self.fn.backward(dout, x, out), {}


def dropout_mask(shape: tuple, p: float, rng: RngLike, dtype: DTypeLike = np.float64) -> np.ndarray:
    r"""An inverted-dropout mask: each entry 0 with probability ``p``, else :math:`1 / (1 - p)`.

    One uniform draw per entry from ``rng`` (``u < p`` drops), so the same generator state gives the
    same mask. Multiplying a layer's input by it in training keeps the input's expectation; evaluation
    uses no mask. See :class:`Dropout`.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {p!r}")
    keep = _as_rng(rng).random(shape) >= p
    return (keep / (1.0 - p)).astype(_check_dtype(dtype))


class Dropout(Layer):
    r"""Inverted dropout with its mask given: ``out = x * mask`` (the mask from :func:`dropout_mask`).

    With the mask held fixed it is a linear map, and its gradient is ``dx = dout * mask``.
    """

    def __init__(self, dtype: DTypeLike = np.float64) -> None:
        self._dtype = _check_dtype(dtype)
        self.params = {}

    def forward(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        check_float_array("x", x, dtype=self._dtype)
        check_float_array("mask", mask, shape=x.shape)
        return x * mask, mask

    def backward(self, dout: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[np.ndarray | None,
                 dict[str, np.ndarray]]:
        mask = cache
        if not isinstance(mask, np.ndarray):
            raise ValueError("cache: expected the mask returned by this layer's forward")
        self._check_grad("dout", dout, mask.shape)
        return (dout * mask if need_dx else None), {}


class VAELayer(Layer):
    r"""A variational autoencoder used as one layer of a network.

    Forward (input x: (N, D), latent size K, encoder width H)::

        h       = act(x @ W_enc + b_enc)                (N, H)   encoder hidden layer (H = encoder_hidden)
        h       = x                                     (N, D)   instead, when encoder_hidden = 0
        mu      = h @ W_mu + b_mu                       (N, K)
        log_var = c * tanh((h @ W_lv + b_lv) / c)       (N, K)   bounded, c = log_var_bound
        std     = exp(0.5 * log_var)
        z       = mu + std * eps,  eps ~ N(0, I)        (N, K)   training; z = mu when sample=False
        x_hat   = z @ W_dec + b_dec                     (N, D)   decoder back to the layer's input
        out     = act(z)    (pass_on="sample")          (N, K)   what the next layer receives
        out     = act(mu)   (pass_on="mean", and always in evaluation)

    Local loss, the negative ELBO, which training minimises (a trainer may add a
    cosine term on z, see :mod:`.iffcl`)::

        neg_elbo = recon(x_hat, x) + beta * KL(N(mu, std^2) || N(0, I))

    Every default comes from :data:`vaelayer_np.core.settings.DEFAULTS`, so a layer built
    with defaults is the layer ``vaelayer train`` trains.

    Parameters
    ----------
    in_dim, latent_dim : int
    activation : str
        Output activation ``act`` (see :mod:`.activations`), also used in the encoder's hidden layer.
    beta : float >= 0
        Weight of the KL term (the KL is summed over K and averaged over N).
    recon : str, "mse" or "bce"
        Reconstruction loss, mean over all N*D elements. ``"bce"`` treats x_hat
        as logits and needs x in [0, 1].
    log_var_bound : float or None
        c in ``c * tanh(r / c)``; None or 0 leaves the log-variance unbounded.
    log_var_bias_init : float
        Initial b_lv. With the defaults (c = 6, b_lv = -4) the initial log-variance is
        6 tanh(-4/6) = -3.50 and the noise std exp(-1.75) = 0.17; at b_lv = 0 the noise
        (std 1) swamps the signal and the next layers see mostly noise.
    pass_on : str, "sample" or "mean"
        What ``out`` is made from in training: the sample z (the paper's layer)
        or the mean mu. Evaluation (``sample=False``) always uses the mean.
    encoder_hidden : int
        Width H of the hidden layer inside the encoder; 0 gives the linear encoder
        ``mu = x @ W_mu + b_mu``. Standard VAEs use an MLP encoder (Kingma &
        Welling 2014 used one hidden layer); with it the local loss trains a
        non-linear map.
    rng : int, Generator or None
        Seeds the initialisation.
    dtype : float32 or float64
    backend : deprecated, ignored (the layer is the NumPy reference; see :mod:`vaelayer_np.fast`)
    """

    PARAM_NAMES = ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "W_dec", "b_dec")
    CACHE_KEYS = ("x", "h_pre", "h", "mu", "log_var", "std", "eps", "z", "x_hat", "out", "kl", "kl_grads")

    def __init__(self, in_dim: int, latent_dim: int, activation: str = DEFAULTS["activation"],
                 beta: float = DEFAULTS["beta"], recon: str = DEFAULTS["recon"],
                 log_var_bound: float | None = DEFAULTS["log_var_bound"],
                 log_var_bias_init: float = DEFAULTS["log_var_bias_init"], pass_on: str = DEFAULTS["pass_on"],
                 encoder_hidden: int = DEFAULTS["encoder_hidden"], rng: RngLike = None, dtype: DTypeLike = np.float64,
                 backend: str | None = None) -> None:
        _check_dims(in_dim=in_dim, latent_dim=latent_dim)
        _no_backend(backend)
        self._dtype = _check_dtype(dtype)
        self.in_dim, self.latent_dim = int(in_dim), int(latent_dim)
        self.activation = check_choice("activation", activation, CHOICES["activation"])
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.recon = check_choice("recon", recon, CHOICES["recon"])
        self.log_var_bound = None if not log_var_bound else check_positive("log_var_bound", log_var_bound)
        log_var_bias_init = check_finite("log_var_bias_init", log_var_bias_init)
        self.pass_on = check_choice("pass_on", pass_on, CHOICES["pass_on"])
        self.act = get_activation(activation)
        if isinstance(encoder_hidden, bool) or not isinstance(encoder_hidden, (int, np.integer)) or encoder_hidden < 0:
            raise ValueError(f"encoder_hidden: expected an integer >= 0, got {encoder_hidden!r}")
        self.encoder_hidden = int(encoder_hidden)
        rng = _as_rng(rng)
        d, k, dt = self.in_dim, self.latent_dim, self._dtype
        e = self.encoder_hidden or d  # the width the mu / log_var heads read
        self.params = {}
        if self.encoder_hidden:
            self.params["W_enc"] = (rng.standard_normal((d, e)) * np.sqrt(2.0 / d)).astype(dt)
            self.params["b_enc"] = np.zeros(e, dt)
        self.params.update({
            "W_mu": (rng.standard_normal((e, k)) / np.sqrt(e)).astype(dt),
            "b_mu": np.zeros(k, dt),
            "W_lv": (rng.standard_normal((e, k)) * (0.1 / np.sqrt(e))).astype(dt),
            "b_lv": np.full(k, log_var_bias_init, dt),
            "W_dec": (rng.standard_normal((k, d)) / np.sqrt(k)).astype(dt),
            "b_dec": np.zeros(d, dt),
        })

    # ----------------------------------------------------------------- forward
    def forward(self, x: np.ndarray, eps: np.ndarray | None = None, rng: RngLike = None,
                sample: bool = True) -> tuple[np.ndarray, Any]:
        """Run the layer.

        Parameters
        ----------
        x : (N, D) array of the layer's dtype
        eps : (N, K) array, optional
            The reparameterisation noise. If None and ``sample`` is True it is
            drawn from ``rng`` (a seeded Generator, or an int seed).
        sample : bool
            False gives the evaluation path z = mu (no noise).

        Returns
        -------
        out : (N, K) array, ``act(z)`` (``act(mu)`` if pass_on="mean" or sample=False)
        cache : dict with x, h_pre, h, mu, log_var, std, eps, z, x_hat, out, kl and kl_grads
        """
        check_float_array("x", x, shape=(None, self.in_dim), dtype=self._dtype)
        if self.recon == "bce" and (x.min() < 0 or x.max() > 1):
            raise ValueError("x: recon='bce' needs inputs in [0, 1]")
        n, k = x.shape[0], self.latent_dim
        if sample:
            if eps is None:
                eps = _as_rng(rng).standard_normal((n, k), dtype=self._dtype)
            else:
                check_float_array("eps", eps, shape=(n, k), dtype=self._dtype)
        else:
            eps = None
        p = self.params
        h_pre = h = None
        if self.encoder_hidden:
            h_pre = x @ p["W_enc"] + p["b_enc"]
            h = self.act.forward(h_pre)
        enc_in = x if h is None else h
        mu = enc_in @ p["W_mu"] + p["b_mu"]
        log_var = bound_log_var(enc_in @ p["W_lv"] + p["b_lv"], self.log_var_bound)
        std, z = ops.reparameterize(mu, log_var, eps)
        kl, kl_grads = ops.kl_diag_gaussian(mu, log_var, std * std)
        if not np.isfinite(kl):
            raise NonFiniteError("x: the KL term overflowed (inf or NaN): the inputs or the weights are too large "
                             "for this dtype; scale the inputs or lower the learning rate")
        x_hat = z @ p["W_dec"] + p["b_dec"]
        out = self.act.forward(mu if (self.pass_on == "mean" or not sample) else z)
        cache = {"x": x, "h_pre": h_pre, "h": h, "mu": mu, "log_var": log_var, "std": std, "eps": eps, "z": z,
                 "x_hat": x_hat, "out": out, "kl": kl, "kl_grads": kl_grads, "layer": id(self)}
        return out, cache

    # -------------------------------------------------------------- local loss
    def _recon(self, x_hat: np.ndarray, x: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        fn = losses.mse if self.recon == "mse" else losses.bce_with_logits
        return fn(x_hat, x)

    def loss_terms(self, cache: Any) -> dict[str, float]:
        """The layer's local loss and its parts: {"recon", "kl", "neg_elbo"} (floats).

        ``neg_elbo = recon + beta * kl`` is the negative ELBO, the quantity training minimises.
        """
        self._check_cache(cache)
        recon, _ = self._recon(cache["x_hat"], cache["x"])
        kl = cache["kl"]
        return {"recon": recon, "kl": kl, "neg_elbo": recon + self.beta * kl}

    def _check_cache(self, cache: Any) -> None:
        if not isinstance(cache, dict) or any(key not in cache for key in self.CACHE_KEYS):
            raise ValueError(f"cache: expected the cache returned by this layer's forward, got "
                             f"{type(cache).__name__ if not isinstance(cache, dict) else 'a dict without its keys'}")
        if cache.get("layer") != id(self):
            raise ValueError("cache: it was made by another layer's forward; pass the cache from this layer")

    # ---------------------------------------------------------------- backward
    def backward(self, dout: np.ndarray | None, cache: Any, dz: np.ndarray | None = None, neg_elbo_weight: float = 1.0,
                 need_dx: bool = True) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        r"""Gradients of ``L = neg_elbo_weight * neg_elbo + <dout, out> + <dz, z>``.

        Parameters
        ----------
        dout : (N, K) array or None
            Upstream gradient reaching ``out`` (backpropagation from the layers above).
            None (zero) in IFFCL: the gradients then depend only on this layer's input,
            its own cache and ``dz``; that is what makes the update local.
        cache : dict from :meth:`forward`
        dz : (N, K) array or None
            A gradient applied directly to the latent z (the IFFCL cosine term's entry point).
        neg_elbo_weight : float
            Weight of the layer's own loss (1 in IFFCL; the backprop baseline's setting).
        need_dx : bool
            False skips the input gradient (IFFCL never sends anything downwards).

        Returns
        -------
        dx : (N, D) array, or None if ``need_dx`` is False
        grads : dict with the keys of ``params``
        """
        self._check_cache(cache)
        weight = check_finite("neg_elbo_weight", neg_elbo_weight)
        x, z, mu = cache["x"], cache["z"], cache["mu"]
        n, k = mu.shape
        p = self.params
        # Reconstruction: the gradient reaches x_hat, and x itself as the target.
        _, (d_xhat, d_target) = self._recon(cache["x_hat"], x)
        d_xhat = d_xhat * weight
        grads = {"W_dec": z.T @ d_xhat, "b_dec": d_xhat.sum(axis=0)}
        d_z = d_xhat @ p["W_dec"].T
        if dz is not None:
            d_z = d_z + self._check_grad("dz", dz, (n, k))
        d_mu_extra = None
        if dout is not None:
            self._check_grad("dout", dout, (n, k))
            passed_mean = self.pass_on == "mean" or cache["eps"] is None
            d_passed = self.act.backward(dout, mu if passed_mean else z, cache["out"])
            if passed_mean:
                d_mu_extra = d_passed
            else:
                d_z = d_z + d_passed
        # through z = mu + std * eps, the KL and the log-variance bound: gradients on mu and on r
        d_mu, d_r = ops.latent_backward(d_z, cache["eps"], cache["std"], cache["kl_grads"], weight * self.beta,
                                        cache["log_var"], self.log_var_bound)
        if d_mu_extra is not None:
            d_mu = d_mu + d_mu_extra
        enc_in = x if cache["h"] is None else cache["h"]
        grads["W_mu"] = enc_in.T @ d_mu
        grads["b_mu"] = d_mu.sum(axis=0)
        grads["W_lv"] = enc_in.T @ d_r
        grads["b_lv"] = d_r.sum(axis=0)
        d_x_enc = None  # gradient reaching the encoder's input through mu and log_var
        if self.encoder_hidden:
            d_h = d_mu @ p["W_mu"].T + d_r @ p["W_lv"].T
            d_h_pre = self.act.backward(d_h, cache["h_pre"], cache["h"])
            grads["W_enc"] = x.T @ d_h_pre
            grads["b_enc"] = d_h_pre.sum(axis=0)
            if need_dx:
                d_x_enc = d_h_pre @ p["W_enc"].T
        elif need_dx:
            d_x_enc = d_mu @ p["W_mu"].T + d_r @ p["W_lv"].T
        dx = d_x_enc + weight * d_target if need_dx and d_x_enc is not None else None
        return dx, {name: grads[name] for name in self.PARAM_NAMES if name in self.params}

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decoder alone: z (M, K) -> x_hat (M, D) (logits if recon='bce')."""
        check_float_array("z", z, shape=(None, self.latent_dim), dtype=self._dtype)
        return z @ self.params["W_dec"] + self.params["b_dec"]


class OutputLayer(Layer):
    """The classifier on top of the stack: a Dense layer and its classification loss.

    Parameters
    ----------
    in_dim, n_classes : int
    loss : str, "softmax" or "bce"
        Softmax cross-entropy (default) or the paper's BCE on one-hot targets.
    """

    def __init__(self, in_dim: int, n_classes: int, loss: str = DEFAULTS["output_loss"], rng: RngLike = None,
                 dtype: DTypeLike = np.float64, backend: str | None = None) -> None:
        _check_dims(in_dim=in_dim, n_classes=n_classes)
        _no_backend(backend)
        if n_classes < 2:
            raise ValueError(f"n_classes: expected at least 2, got {n_classes}")
        self.loss_name = check_choice("loss", loss, CHOICES["output_loss"])
        self.dense = Dense(in_dim, n_classes, rng=rng, dtype=dtype, init_gain=1.0)
        self.dense.params["W"] *= 0.1  # small initial logits: the first predictions are near uniform
        self._dtype = self.dense.dtype
        self.in_dim, self.n_classes = int(in_dim), int(n_classes)
        self.params = self.dense.params

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """x: (N, D) -> logits: (N, C), cache."""
        return self.dense.forward(x)

    def loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """value, d_logits for the configured classification loss."""
        if self.loss_name == "softmax":
            value, (d_logits,) = losses.softmax_cross_entropy(logits, labels)
        else:
            value, (d_logits,) = losses.bce_one_hot(logits, labels)
        return value, d_logits

    def backward(self, d_logits: np.ndarray, cache: Any, need_dx: bool = True) -> tuple[np.ndarray | None,
                 dict[str, np.ndarray]]:
        return self.dense.backward(d_logits, cache, need_dx=need_dx)

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax rows (loss="softmax") or normalised sigmoids (loss="bce")."""
        if self.loss_name == "softmax":
            return softmax(logits)
        s = sigmoid(logits)
        return s / s.sum(axis=1, keepdims=True)
