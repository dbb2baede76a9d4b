"""Lesson 02 checkers (vaelayer_np.course.lesson02): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import losses, ops
from vaelayer_np.core.activations import sigmoid
from vaelayer_np.course import lesson02

from .course_helpers import assert_passes, assert_reports_stub, planted_tests, stub


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def mse_backward(x_hat, x):
    return 2.0 * (x_hat - x) / x.size


def bce_with_logits_backward(logits, target):
    e = np.exp(-np.abs(logits))
    prob = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return (prob - target) / logits.size


def kl_gradients(mu, log_var):
    n = mu.shape[0]
    return mu / n, (np.exp(log_var) - 1.0) / (2.0 * n)


def latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu = d_z + kl_weight * kl_grads[0]
    d_log_var = kl_weight * kl_grads[1] + (0.0 if eps is None else 0.5 * d_z * eps * std)
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)


def decoder_backward(d_x_hat, z, w_dec):
    return d_x_hat @ w_dec.T, z.T @ d_x_hat, d_x_hat.sum(axis=0)


def encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = {"W_mu": h.T @ d_mu, "b_mu": d_mu.sum(axis=0), "W_lv": h.T @ d_r, "b_lv": d_r.sum(axis=0)}
    d_h = d_mu @ params["W_mu"].T + d_r @ params["W_lv"].T
    d_h_pre = act_backward(d_h, h_pre, h)
    grads.update({"W_enc": x.T @ d_h_pre, "b_enc": d_h_pre.sum(axis=0), "x": d_h_pre @ params["W_enc"].T})
    return grads


# ---------------------------------------------------------------- planted wrong answers, each with its diagnosis
def bce_naive(logits, target):
    return (np.exp(logits) / (1.0 + np.exp(logits)) - target) / logits.size  # inf / inf at large logits


def bce_abs_in_place(logits, target):
    positive = logits >= 0
    logits[logits < 0] *= -1  # |s| written into the caller's logits
    e = np.exp(-logits)
    prob = np.where(positive, 1.0 / (1.0 + e), e / (1.0 + e))
    return (prob - target) / logits.size


def latent_backward_without_half(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu = d_z + kl_weight * kl_grads[0]
    d_log_var = d_z * eps * std + kl_weight * kl_grads[1]
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)


def latent_backward_without_bound(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    return d_z + kl_weight * kl_grads[0], 0.5 * d_z * eps * std + kl_weight * kl_grads[1]


def latent_backward_unscaled_tanh(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu, _ = latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
    return d_mu, (0.5 * d_z * eps * std + kl_weight * kl_grads[1]) * (1.0 - log_var ** 2)


def latent_backward_in_place(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_z += kl_weight * kl_grads[0]  # the caller's d_z changed
    d_log_var = 0.5 * (d_z - kl_weight * kl_grads[0]) * eps * std + kl_weight * kl_grads[1]
    return d_z, d_log_var * (1.0 - (log_var / bound) ** 2)


def latent_backward_no_mean_path(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu = d_z + kl_weight * kl_grads[0]
    d_log_var = 0.5 * d_z * eps * std + kl_weight * kl_grads[1]  # eps=None: TypeError
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)


def latent_backward_mean_path_keeps_noise(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    if eps is None:
        eps = np.ones_like(d_z)  # the mean path should get nothing from z
    return latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)


def latent_backward_float32(*args):
    return tuple(g.astype(np.float32) for g in latent_backward(*args))


def encoder_backward_no_activation(d_mu, d_r, x, h_pre, h, params, act_backward):
    return encoder_backward(d_mu, d_r, x, h_pre, h, params, lambda dout, a, b: dout)


def encoder_backward_mu_path_only(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward)
    d_h_pre = act_backward(d_mu @ params["W_mu"].T, h_pre, h)
    grads.update({"W_enc": x.T @ d_h_pre, "b_enc": d_h_pre.sum(axis=0), "x": d_h_pre @ params["W_enc"].T})
    return grads


def encoder_backward_heads_swapped(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward)
    grads["W_mu"], grads["W_lv"] = grads["W_lv"], grads["W_mu"]
    return grads


def encoder_backward_in_place(d_mu, d_r, x, h_pre, h, params, act_backward):
    d_mu += 0.0 * d_mu
    params["W_mu"] -= 0.1  # changes the caller's parameters
    return encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward)


def encoder_backward_library(d_mu, d_r, x, h_pre, h, params, act_backward):
    from vaelayer_np.core.layers import VAELayer
    layer = VAELayer(x.shape[1], d_mu.shape[1], encoder_hidden=h.shape[1])
    layer.backward(None, {})
    return {}


def encoder_backward_float32(*args):
    return {k: v.astype(np.float32) for k, v in encoder_backward(*args).items()}


def mse_in_place(x_hat, x):
    x_hat -= x  # the caller's x_hat becomes the residual: a later cell breaks
    return 2.0 * x_hat / x.size


def mse_library(x_hat, x):
    return losses.mse(x_hat, x)[1][0]


def decoder_in_place(g, z, w):
    g *= 1.0
    z -= 0.0
    w[:] = w.T.T * 2  # the caller's W_dec changed
    return g @ (w / 2).T, z.T @ g, g.sum(0)


def decoder_library(g, z, w):
    from vaelayer_np.core.layers import Dense
    layer = Dense(w.shape[0], w.shape[1])
    layer.params["W"] = w
    dx, grads = layer.backward(g, z)
    return dx, grads["W"], grads["b"]


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson02.check_mse_backward, lambda x_hat, x: (x_hat - x) / x.size, "slip", ["divided by 2"]),
    (lesson02.check_mse_backward, lambda x_hat, x: 2 * (x_hat - x) / x.shape[0], "slip", ["D times"]),
    (lesson02.check_mse_backward, lambda x_hat, x: 2 * (x - x_hat) / x.size, "slip", ["sign flipped"]),
    (lesson02.check_mse_backward, lambda x_hat, x: 2 * (x_hat - x), "slip", ["N*D times"]),
    (lesson02.check_mse_backward, mse_in_place, "in place", ["in place", "`x_hat`"]),
    (lesson02.check_mse_backward, mse_library, "library", ["losses.mse"]),
    (lesson02.check_mse_backward, lambda x_hat, x: (2.0 * (x_hat - x) / x.size).astype(np.float32), "float32",
     ["float32"]),
    (lesson02.check_bce_backward, lambda s, t: (t - 1 / (1 + np.exp(-s))) / s.size, "slip", ["sign flipped"]),
    (lesson02.check_bce_backward, bce_naive, "slip", ["NaN", "exp(-|s|)"]),
    (lesson02.check_bce_backward, lambda s, t: (sigmoid(s) - t) / s.size, "library", ["sigmoid"]),
    (lesson02.check_bce_backward, lambda s, t: bce_with_logits_backward(s, t).astype(np.float32), "float32",
     ["float32"]),
    (lesson02.check_bce_backward, bce_abs_in_place, "in place", ["in place", "`logits`"]),
    (lesson02.check_bce_backward, lambda s, t: bce_with_logits_backward(s, t) * s.shape[0], "slip", ["N times"]),
    (lesson02.check_kl_gradients, lambda mu, lv: (mu / len(mu), (lv - 1) / (2 * len(mu))), "slip",
     ["`log_var`", "log-variance where the variance"]),
    (lesson02.check_kl_gradients, lambda mu, lv: (mu / len(mu), (1 - np.exp(-lv)) / (2 * len(mu))), "slip",
     ["with respect to the variance"]),
    (lesson02.check_kl_gradients, lambda mu, lv: (mu, (np.exp(lv) - 1) / 2), "slip", ["N times"]),
    (lesson02.check_kl_gradients, lambda mu, lv: ops.kl_diag_gaussian(mu, lv)[1], "library", ["kl_diag_gaussian"]),
    (lesson02.check_kl_gradients, lambda mu, lv: tuple(g.astype(np.float32) for g in kl_gradients(mu, lv)),
     "float32", ["float32"]),
    (lesson02.check_kl_gradients, lambda mu, lv: (np.divide(mu, len(mu), out=mu), kl_gradients(mu, lv)[1]),
     "in place", ["in place", "`mu`"]),
    (lesson02.check_latent_backward, latent_backward_without_half, "slip", ["sigma / 2"]),
    (lesson02.check_latent_backward, latent_backward_without_bound, "slip", ["chain rule through the tanh"]),
    (lesson02.check_latent_backward, latent_backward_unscaled_tanh, "slip", ["the bound c is missing"]),
    (lesson02.check_latent_backward, latent_backward_in_place, "in place", ["in place", "`d_z`"]),
    (lesson02.check_latent_backward, ops.latent_backward, "library", ["ops.latent_backward"]),
    (lesson02.check_latent_backward, latent_backward_float32, "float32", ["float32"]),
    (lesson02.check_latent_backward, latent_backward_no_mean_path, "edge case", ["mean path", "TypeError"]),
    (lesson02.check_latent_backward, latent_backward_mean_path_keeps_noise, "edge case", ["mean path", "`d_r`"]),
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w.T, z.T @ g[::-1], g.sum(0)), "slip",
     ["out of step"]),
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w, z.T @ g, g.sum(0)), "error",
     ["ValueError", "your line"]),
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w.T, g.T @ z, g.sum(0)), "slip",
     ["`W_dec`", "transposed"]),
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w.T, z.T @ g, g.mean(0)), "slip",
     ["b_dec", "divided by N"]),
    (lesson02.check_decoder_backward, decoder_in_place, "in place", ["in place", "`W_dec`"]),
    (lesson02.check_decoder_backward, decoder_library, "library", ["Dense.backward"]),
    (lesson02.check_decoder_backward, lambda g, z, w: tuple(a.astype(np.float32) for a in decoder_backward(g, z, w)),
     "float32", ["float32"]),
    (lesson02.check_encoder_backward, encoder_backward_no_activation, "slip", ["activation's derivative forgotten"]),
    (lesson02.check_encoder_backward, encoder_backward_mu_path_only, "slip", ["only the mean head's path"]),
    (lesson02.check_encoder_backward, encoder_backward_heads_swapped, "slip", ["swapped"]),
    (lesson02.check_encoder_backward, encoder_backward_in_place, "in place", ["in place"]),
    (lesson02.check_encoder_backward, encoder_backward_library, "library", ["VAELayer.backward"]),
    (lesson02.check_encoder_backward, encoder_backward_float32, "float32", ["float32"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(PLANTED)


CORRECT = [
    (lesson02.check_mse_backward, mse_backward),
    (lesson02.check_bce_backward, bce_with_logits_backward),
    (lesson02.check_kl_gradients, kl_gradients),
    (lesson02.check_latent_backward, latent_backward),
    (lesson02.check_decoder_backward, decoder_backward),
    (lesson02.check_encoder_backward, encoder_backward),
]
CHECKERS = sorted({c for c, _ in CORRECT}, key=lambda c: c.__name__)


@pytest.mark.parametrize("check, answer", CORRECT, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_passes_a_correct_answer(check, answer):
    assert_passes(check(answer), below=1e-7)


@pytest.mark.parametrize("check", CHECKERS, ids=lambda v: v.__name__)
def test_checker_reports_a_stub_as_not_implemented(check):
    assert_reports_stub(check(stub))


def test_encoder_checker_reports_a_missing_gradient():
    def no_x(*args):
        grads = encoder_backward(*args)
        del grads["x"]
        return grads

    result = lesson02.check_encoder_backward(no_x)
    assert not result.passed and "no gradient for x" in str(result)
