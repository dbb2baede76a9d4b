r"""Checkers of lesson 01, the VAE layer's forward pass (``notebooks/01_vae_layer_forward.ipynb``).

Each checker runs the student's function on random inputs and compares it with the
library's reference, the code every :class:`~vaelayer_np.core.layers.VAELayer` runs:

* :func:`check_bounded_log_var`: ``bounded_log_var(r, c)`` vs :func:`vaelayer_np.core.ops.bound_log_var`
* :func:`check_reparameterize`: ``reparameterize(mu, log_var, eps)`` vs :func:`vaelayer_np.core.ops.reparameterize`
* :func:`check_vae_forward`: ``vae_forward(x, params, eps, act, log_var_bound)`` vs
  :meth:`vaelayer_np.core.layers.VAELayer.forward`
* :func:`check_neg_elbo`: ``neg_elbo(x, x_hat, mu, log_var, beta)`` vs
  :meth:`vaelayer_np.core.layers.VAELayer.loss_terms` (:func:`vaelayer_np.core.losses.mse` and
  :func:`vaelayer_np.core.ops.kl_diag_gaussian`)

Shapes: N examples, D inputs, H encoder hidden units, K latent units.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core import losses, ops
from ..core.activations import ACTIVATIONS
from ..core.gradcheck import generic_point
from ..core.layers import VAELayer
from .answer_keys import recorded, register_reveal
from .checks import (
    CheckResult,
    Diagnosis,
    call_student,
    compare_arrays,
    compare_values,
    run_check,
    where_in_student_code,
)

TOLERANCE = 1e-10  # float64 comparisons with the library: only rounding may differ


def _activation_name(act: Callable[..., Any]) -> str:
    """The library's name of an activation function (``relu``, ``tanh`` ...), found by identity."""
    for name, fn in ACTIVATIONS.items():
        if fn.forward is act:
            return name
    raise ValueError(f"act: expected one of the forward functions of vaelayer_np.core.activations "
                     f"({', '.join(ACTIVATIONS)}), got {act!r}")


# The library functions each exercise replaces: calling them is refused (vaelayer_np.course.checks.call_student).
FORBIDDEN = {
    "bounded_log_var": ("vaelayer_np.core.ops.bound_log_var",),
    "reparameterize": ("vaelayer_np.core.ops.reparameterize",),
    "vae_forward": ("vaelayer_np.core.layers.VAELayer.forward", "vaelayer_np.core.ops.bound_log_var",
                    "vaelayer_np.core.ops.reparameterize", "vaelayer_np.course.lesson01.library_forward"),
    "neg_elbo": ("vaelayer_np.core.losses.mse", "vaelayer_np.core.ops.mse_value_and_grad",
                 "vaelayer_np.core.ops.kl_diag_gaussian", "vaelayer_np.core.losses.kl_diag_gaussian",
                 "vaelayer_np.core.layers.VAELayer.loss_terms", "vaelayer_np.course.lesson01.library_neg_elbo"),
}


@recorded
def check_bounded_log_var(bounded_log_var: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``bounded_log_var(r, c) -> log_var`` (both (N, K)): :math:`\log\sigma^2 = c\tanh(r/c)`.

    The raw values ``r`` range over [-40, 40], far beyond the bound, and c over [1, 8]. Recognised
    slips: a hard clip, the factor c forgotten inside or outside the tanh.
    """
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        r = rng.uniform(-40.0, 40.0, size=(5, 4))
        return r, float(rng.uniform(1.0, 8.0))

    def slips(args: Any) -> dict[str, Any]:
        r, c = args
        return {"log_var": [("a hard clip of r to [-c, c]: the bound is smooth, c * tanh(r / c)", np.clip(r, -c, c)),
                            ("tanh(r) without the c inside: c * tanh(r / c)", c * np.tanh(r)),
                            ("tanh(r / c) without the factor c in front", np.tanh(r / c)),
                            ("tanh(r), the c left out twice", np.tanh(r))]}

    return compare_arrays("bounded_log_var", bounded_log_var, ops.bound_log_var, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed, names=("log_var",), arg_names=("r", "c"),
                          forbidden=FORBIDDEN["bounded_log_var"], factors=lambda a: (("c", a[1]),), slips=slips)


@recorded
def check_reparameterize(reparameterize: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``reparameterize(mu, log_var, eps) -> z`` (all (N, K)): :math:`z = \mu + e^{\log\sigma^2/2}\epsilon`.

    Recognised slips: the variance or the log-variance used as the std, the noise forgotten, the std
    inverted.
    """
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        shape = (6, 3)
        return rng.standard_normal(shape), rng.uniform(-4.0, 2.0, shape), rng.standard_normal(shape)

    def reference(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> Any:
        return ops.reparameterize(mu, log_var, eps)[1]

    def slips(args: Any) -> dict[str, Any]:
        mu, lv, eps = args
        return {"z": [("the variance exp(log_var) where the std exp(log_var / 2) belongs", mu + np.exp(lv) * eps),
                      ("the log-variance used as the std: std = exp(log_var / 2)", mu + lv * eps),
                      ("mu + std: the noise eps is missing", mu + np.exp(0.5 * lv)),
                      ("exp(-log_var / 2), the inverse of the std", mu + np.exp(-0.5 * lv) * eps),
                      ("the noise without mu", np.exp(0.5 * lv) * eps)]}

    return compare_arrays("reparameterize", reparameterize, reference, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed, names=("z",), arg_names=("mu", "log_var", "eps"),
                          forbidden=FORBIDDEN["reparameterize"], slips=slips)


def library_forward(x: np.ndarray, params: dict[str, np.ndarray], eps: np.ndarray, act: Callable[..., Any],
                    log_var_bound: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The library's answer to ``vae_forward``: (x_hat, mu, log_var, z) from :meth:`VAELayer.forward`.

    Parameters
    ----------
    x : (N, D) float64 array
    params : dict with W_enc (D, H), b_enc (H,), W_mu (H, K), b_mu (K,), W_lv (H, K), b_lv (K,),
        W_dec (K, D), b_dec (D,)
    eps : (N, K) float64 array, the noise held fixed
    act : an activation's forward function from :mod:`vaelayer_np.core.activations` (e.g. ``relu``)
    log_var_bound : float, c in ``c * tanh(r / c)``
    """
    d, h = params["W_enc"].shape
    k = params["W_mu"].shape[1]
    layer = VAELayer(d, k, activation=_activation_name(act), encoder_hidden=h, log_var_bound=log_var_bound,
                     rng=0, dtype=np.float64)
    for name in layer.params:
        layer.params[name] = np.array(params[name], dtype=np.float64)
    _, cache = layer.forward(x, eps=eps)
    return cache["x_hat"], cache["mu"], cache["log_var"], cache["z"]


def _forward_slips(args: Any) -> dict[str, list[tuple]]:
    """The answers of vae_forward's common slips on these inputs, by returned value."""
    x, params, eps, act, c = args
    p = params
    h = act(x @ p["W_enc"] + p["b_enc"])
    mu = h @ p["W_mu"] + p["b_mu"]
    r = h @ p["W_lv"] + p["b_lv"]
    log_var = c * np.tanh(r / c)
    z = mu + np.exp(0.5 * log_var) * eps
    h_lin = x @ p["W_enc"] + p["b_enc"]
    return {
        "x_hat": [("the decoder applied to mu instead of the sample z", mu @ p["W_dec"] + p["b_dec"]),
                  ("the decoder without its bias b_dec", z @ p["W_dec"])],
        "mu": [("the hidden layer without its activation act(...)", h_lin @ p["W_mu"] + p["b_mu"]),
               ("the mean head without its bias b_mu", h @ p["W_mu"])],
        "log_var": [("the raw head output r: the bound c * tanh(r / c) is missing", r),
                    ("the bound without c inside the tanh: c * tanh(r / c)", c * np.tanh(r)),
                    ("tanh(r / c) without the factor c", np.tanh(r / c))],
        "z": [("mu + exp(log_var) * eps: the variance where the std belongs", mu + np.exp(log_var) * eps),
              ("the sample from the raw r, unbounded", mu + np.exp(0.5 * r) * eps),
              ("mu alone: the noise is missing", mu)],
    }


@recorded
def check_vae_forward(vae_forward: Callable[..., Any], n_trials: int = 4, seed: int = 0) -> CheckResult:
    """Check ``vae_forward(x, params, eps, act, log_var_bound) -> (x_hat, mu, log_var, z)``.

    Random layers (D=7, H=6, K=3, relu and tanh, biases moved off zero, the log-variance
    head scaled up so that the bound matters) on random inputs, against
    :meth:`vaelayer_np.core.layers.VAELayer.forward` with the same parameters and noise. The message
    names which of the four returned values are wrong and recognises the common slips.
    """
    acts = [ACTIVATIONS["relu"].forward, ACTIVATIONS["tanh"].forward]
    trial = {"i": 0}

    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        act = acts[trial["i"] % len(acts)]
        trial["i"] += 1
        layer = generic_point(VAELayer(7, 3, encoder_hidden=6, rng=rng, dtype=np.float64), rng, scale=0.5)
        layer.params["W_lv"] *= 30.0  # raw log-variances of several units: the bound is visible
        params = {name: p.copy() for name, p in layer.params.items()}
        return rng.standard_normal((5, 7)), params, rng.standard_normal((5, 3)), act, float(rng.uniform(2.0, 6.0))

    def reference(x: np.ndarray, params: dict[str, np.ndarray], eps: np.ndarray, act: Any, bound: float) -> Any:
        return library_forward(x, {name: p.copy() for name, p in params.items()}, eps, act, bound)

    return compare_arrays("vae_forward (x_hat, mu, log_var, z)", vae_forward, reference, make_inputs,
                          tol=TOLERANCE, n_trials=n_trials, seed=seed, names=("x_hat", "mu", "log_var", "z"),
                          arg_names=("x", "params", "eps", "act", "log_var_bound"),
                          forbidden=FORBIDDEN["vae_forward"], slips=_forward_slips,
                          order=("mu", "log_var", "z", "x_hat"))


def library_neg_elbo(x: np.ndarray, x_hat: np.ndarray, mu: np.ndarray, log_var: np.ndarray,
                     beta: float) -> tuple[float, float, float]:
    """The library's (recon, kl, neg_elbo) for an MSE layer: ``losses.mse`` and ``ops.kl_diag_gaussian``."""
    recon = losses.mse(x_hat, x)[0]
    kl = ops.kl_diag_gaussian(mu, log_var)[0]
    return recon, kl, recon + beta * kl


@recorded
def check_neg_elbo(neg_elbo: Callable[..., Any], n_trials: int = 3, seed: int = 0) -> CheckResult:
    r"""Check ``neg_elbo(x, x_hat, mu, log_var, beta) -> (recon, kl, neg_elbo)`` (three floats).

    recon is the MSE averaged over all N*D elements, kl is summed over K and averaged
    over N, and neg_elbo = recon + beta * kl, as in :meth:`vaelayer_np.core.layers.VAELayer.loss_terms`.
    The message names which of the three values is wrong and why, when it recognises the slip (a mean
    over the wrong elements, the std or the log-variance where the variance belongs, beta forgotten).
    """
    def make_inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        n, d, k = int(rng.integers(3, 9)), 7, 4
        return (rng.standard_normal((n, d)), rng.standard_normal((n, d)), rng.standard_normal((n, k)),
                rng.uniform(-3.0, 1.0, (n, k)), float(rng.uniform(0.1, 2.0)))

    def factors(args: Any) -> Sequence[tuple[str, float]]:
        x, _, mu, _, _ = args
        n, d = x.shape
        return (("N", n), ("D", d), ("N*D", n * d), ("K", mu.shape[1]))

    def slips(args: Any) -> dict[str, Any]:
        x, x_hat, mu, lv, beta = args
        n = x.shape[0]
        recon = float(np.mean((x_hat - x) ** 2))
        kl = float(-0.5 * np.sum(1 + lv - mu ** 2 - np.exp(lv)) / n)
        return {
            "recon": [("the mean absolute error, not the mean squared error", float(np.mean(np.abs(x_hat - x))))],
            "kl": [("the std exp(log_var / 2) where the variance exp(log_var) belongs",
                    float(-0.5 * np.sum(1 + lv - mu ** 2 - np.exp(0.5 * lv)) / n)),
                   ("the log-variance where the variance exp(log_var) belongs",
                    float(-0.5 * np.sum(1 + lv - mu ** 2 - lv) / n)),
                   ("the KL without its 1 inside the sum", float(-0.5 * np.sum(lv - mu ** 2 - np.exp(lv)) / n)),
                   ("a mean over all N*K elements: sum over the units, mean over the examples",
                    float(-0.5 * np.mean(1 + lv - mu ** 2 - np.exp(lv))))],
            "neg_elbo": [("recon + kl: beta is forgotten", recon + kl),
                         ("beta * recon + kl: beta on the wrong term", beta * recon + kl),
                         ("recon - beta * kl: the KL's sign", recon - beta * kl)],
        }

    return compare_arrays("neg_elbo (recon, kl, neg_elbo)", neg_elbo, library_neg_elbo, make_inputs, tol=TOLERANCE,
                          n_trials=n_trials, seed=seed, names=("recon", "kl", "neg_elbo"),
                          arg_names=("x", "x_hat", "mu", "log_var", "beta"), forbidden=FORBIDDEN["neg_elbo"],
                          factors=factors, slips=slips)


# ----------------------------------------------------------------------------- exercise 5: the layer, every setting
FORBIDDEN["layer_forward"] = tuple(sorted({n for names in FORBIDDEN.values() for n in names} | {
    "vaelayer_np.core.losses.bce_with_logits", "vaelayer_np.core.activations.sigmoid",
    "vaelayer_np.core.layers.VAELayer.decode"}))

# (label, layer settings, training?, extreme logits?)
LAYER_FORWARD_CASES = (
    ("MSE, relu, pass_on='mean', training", dict(recon="mse", activation="relu", pass_on="mean",
                                                 log_var_bound=6.0), True, False),
    ("BCE, tanh, pass_on='sample', training, logits up to +-1000",
     dict(recon="bce", activation="tanh", pass_on="sample", log_var_bound=3.0), True, True),
    ("MSE, tanh, pass_on='sample', training, no bound (log_var_bound=None)",
     dict(recon="mse", activation="tanh", pass_on="sample", log_var_bound=None), True, False),
    ("BCE, relu, pass_on='sample', evaluation (eps None)",
     dict(recon="bce", activation="relu", pass_on="sample", log_var_bound=6.0), False, False),
)

_LAYER_FORWARD_SLIPS = {
    "out of mu": "out = act(mu), but with pass_on='sample' in training the sample is passed on: out = act(z)",
    "out of z": "out = act(z), but with pass_on='mean' the mean is passed on: out = act(mu)",
    "out without act": "out without the activation: out = act(mu) or act(z)",
    "mse for bce": "the MSE in a BCE layer: with recon='bce' the decoder's outputs are logits and the loss is the "
                   "binary cross-entropy on them",
    "bce of probabilities": "the BCE of sigmoid(x_hat) taken as logits: x_hat already is the logit",
    "kl mean over K": "the KL averaged over the K units: it is summed over the units and averaged over the examples",
    "beta missing": "neg_elbo = recon + kl: beta is forgotten",
}


def reference_layer_forward(layer: Any, x: np.ndarray, eps: np.ndarray | None, slip: str = "") -> tuple[Any, ...]:
    """(out, recon, kl, neg_elbo) of ``layer`` (a VAELayer) on ``x`` with the noise ``eps`` (None: evaluation),
    from the equations; with ``slip`` one of the slips this checker recognises planted."""
    p, act = layer.params, layer.act.forward
    h = act(x @ p["W_enc"] + p["b_enc"])
    mu = h @ p["W_mu"] + p["b_mu"]
    r = h @ p["W_lv"] + p["b_lv"]
    log_var = r if not layer.log_var_bound else layer.log_var_bound * np.tanh(r / layer.log_var_bound)
    z = mu if eps is None else mu + np.exp(0.5 * log_var) * eps
    s = z @ p["W_dec"] + p["b_dec"]
    sampled = layer.pass_on == "sample" and eps is not None
    if slip == "out of mu":
        sampled = False
    if slip == "out of z":
        sampled = True
    out = (z if sampled else mu) if slip == "out without act" else act(z if sampled else mu)
    if layer.recon == "mse" or slip == "mse for bce":
        recon = float(np.mean((s - x) ** 2))
    else:
        logits = 1 / (1 + np.exp(-np.clip(s, -700, 700))) if slip == "bce of probabilities" else s
        recon = float(np.mean(np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))))
    terms = 1 + log_var - mu ** 2 - np.exp(log_var)
    kl = float(-0.5 * (np.mean(terms) if slip == "kl mean over K" else np.sum(terms) / x.shape[0]))
    return out, recon, kl, recon + (1.0 if slip == "beta missing" else layer.beta) * kl


def layer_forward_problem(case: tuple[str, Any, bool, bool], seed: int = 0, n: int = 5, d: int = 7,
                          hidden: int = 6, k: int = 3) -> tuple[str, Any, np.ndarray, np.ndarray | None]:
    """One setting of :data:`LAYER_FORWARD_CASES` on a small float64 layer: (label, layer, x, eps)."""
    label, settings, training, extreme = case
    rng = np.random.default_rng(seed)
    layer = generic_point(VAELayer(d, k, encoder_hidden=hidden, beta=float(rng.uniform(0.3, 2.0)),
                                   log_var_bias_init=-1.0, rng=int(rng.integers(1 << 30)), dtype=np.float64,
                                   **settings), rng, scale=0.5)
    layer.params["W_lv"] *= 10.0  # log-variances out where the bound matters
    if extreme:
        layer.params["b_dec"][:2] = (1000.0, -1000.0)  # two pixels' logits near +-1000: exp overflows there
    x = rng.uniform(0.0, 1.0, (n, d))
    return label, layer, x, (rng.standard_normal((n, k)) if training else None)


@recorded
def check_layer_forward(layer_forward: Callable[..., Any], seed: int = 0) -> CheckResult:
    r"""Check ``layer_forward(layer, x, eps) -> (out, recon, kl, neg_elbo)``: the whole forward pass and the
    local loss of a :class:`~vaelayer_np.core.layers.VAELayer` from its parameters and settings, in every
    setting (:data:`LAYER_FORWARD_CASES`: MSE and a BCE that stays finite at logits of +-1000, relu and tanh,
    pass_on "mean" and "sample", training and evaluation (``eps=None``), with and without a bound), against
    ``layer.forward`` and ``layer.loss_terms``. Named slips (:data:`_LAYER_FORWARD_SLIPS`): the wrong variable
    passed on, the activation forgotten, the MSE in a BCE layer, the sigmoid applied to the logits, the KL
    averaged over the units, beta forgotten; a BCE that overflows and ``None`` used as a bound are named too.
    """
    names = ("out", "recon", "kl", "neg_elbo")

    def body() -> tuple[float, bool, str]:
        worst = 0.0
        for i, case in enumerate(LAYER_FORWARD_CASES):
            label, layer, x, eps = layer_forward_problem(case, seed=seed + i)
            want_out, cache = layer.forward(x, eps=eps, sample=eps is not None)
            terms = layer.loss_terms(cache)
            want = (want_out, terms["recon"], terms["kl"], terms["neg_elbo"])
            try:
                with np.errstate(all="ignore"):
                    got = call_student(layer_forward, (layer, x, eps), ("layer", "x", "eps"),
                                       FORBIDDEN["layer_forward"])
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
            except TypeError as exc:
                if layer.log_var_bound is None:
                    raise Diagnosis(f"{label}: your function raised TypeError ({exc}){where_in_student_code(exc)}: "
                                    f"a layer without a bound has log_var_bound None, and then log_var = r") from None
                raise
            if not (isinstance(got, (tuple, list)) and len(got) == 4):
                raise Diagnosis(f"{label}: expected (out, recon, kl, neg_elbo)")
            if layer.recon == "bce" and not np.isfinite(float(got[1])):
                raise Diagnosis(f"{label}: the BCE is {float(got[1])}: log(sigmoid(s)) or exp(s) overflows at a "
                                f"logit of +-1000. Write the BCE per element as max(s, 0) - s t + log(1 + e^-|s|), "
                                f"which never exponentiates a positive number (np.log1p)")
            slips: dict[str, list[Any]] = {name: [] for name in names}
            for slip, description in _LAYER_FORWARD_SLIPS.items():
                with np.errstate(all="ignore"):
                    candidate = reference_layer_forward(layer, x, eps, slip)
                for name, value in zip(names, candidate):
                    slips[name].append((description, value))
            try:
                worst = max(worst, compare_values(tuple(got), want, names, TOLERANCE, slips=slips,
                                                  factors=(("D", x.shape[1]), ("K", layer.latent_dim)),
                                                  order=("out", "kl", "recon", "neg_elbo")))
            except Diagnosis as exc:
                raise Diagnosis(f"{label}: {exc.message}", exc.figure) from None
        return worst, True, f"in all {len(LAYER_FORWARD_CASES)} settings"

    return run_check("layer_forward", body, bound=f"below {TOLERANCE:g} against VAELayer.forward and loss_terms")


# ----------------------------------------------------------------------------- shown once the exercises are done
_SUMMARY = "\n".join([
    '* $h = \\mathrm{act}(xW_{enc} + b_{enc})$, $\\mu = hW_\\mu + b_\\mu$, '
    '$\\log\\sigma^2 = c\\tanh((hW_{lv} + b_{lv})/c)$,',
    '  $z = \\mu + \\sigma\\odot\\epsilon$, $\\hat x = zW_{dec} + b_{dec}$, '
    'out $= \\mathrm{act}(\\mu)$ or $\\mathrm{act}(z)$.',
    '* Local loss: $\\text{negELBO} = \\text{recon}(\\hat x, x) + \\beta\\,KL$, minimised by each layer on its own.',
    '* The library: `VAELayer.forward` / `VAELayer.loss_terms` (`vaelayer_np/core/layers.py`),',
    '  `bound_log_var`, `reparameterize`, `kl_diag_gaussian` (`vaelayer_np/core/ops.py`), `mse`, `bce_with_logits`',
    '  (`vaelayer_np/core/losses.py`).',
])
register_reveal("summary of lesson 01", ("check_bounded_log_var", "check_reparameterize", "check_vae_forward",
                                         "check_neg_elbo", "check_layer_forward"), lambda: _SUMMARY, markdown=True)
