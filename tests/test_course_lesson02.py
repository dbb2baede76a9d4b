"""Lesson 02 checkers (vaelayer_np.course.lesson02): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import ops
from vaelayer_np.course import lesson02


def stub(*args, **kwargs):
    raise NotImplementedError()


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
    d_log_var = 0.5 * d_z * eps * std + kl_weight * kl_grads[1]
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)


def decoder_backward(d_x_hat, z, w_dec):
    return d_x_hat @ w_dec.T, z.T @ d_x_hat, d_x_hat.sum(axis=0)


def encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = {"W_mu": h.T @ d_mu, "b_mu": d_mu.sum(axis=0), "W_lv": h.T @ d_r, "b_lv": d_r.sum(axis=0)}
    d_h = d_mu @ params["W_mu"].T + d_r @ params["W_lv"].T
    d_h_pre = act_backward(d_h, h_pre, h)
    grads.update({"W_enc": x.T @ d_h_pre, "b_enc": d_h_pre.sum(axis=0), "x": d_h_pre @ params["W_enc"].T})
    return grads


# ---------------------------------------------------------------- planted bugs
def bce_naive(logits, target):
    return (np.exp(logits) / (1.0 + np.exp(logits)) - target) / logits.size  # inf / inf at large logits


def latent_backward_without_half(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu = d_z + kl_weight * kl_grads[0]
    d_log_var = d_z * eps * std + kl_weight * kl_grads[1]
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)


def latent_backward_without_bound(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    return ops.reparameterize_backward(d_z, eps, std)[0] + kl_weight * kl_grads[0], \
        0.5 * d_z * eps * std + kl_weight * kl_grads[1]


def latent_backward_unscaled_tanh(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu, _ = latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, bound)
    return d_mu, (0.5 * d_z * eps * std + kl_weight * kl_grads[1]) * (1.0 - log_var ** 2)


def encoder_backward_no_activation(d_mu, d_r, x, h_pre, h, params, act_backward):
    return encoder_backward(d_mu, d_r, x, h_pre, h, params, lambda dout, a, b: dout)


def encoder_backward_mu_path_only(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward)
    d_h_pre = act_backward(d_mu @ params["W_mu"].T, h_pre, h)
    grads.update({"W_enc": x.T @ d_h_pre, "b_enc": d_h_pre.sum(axis=0), "x": d_h_pre @ params["W_enc"].T})
    return grads


CORRECT = [
    (lesson02.check_mse_backward, mse_backward),
    (lesson02.check_bce_backward, bce_with_logits_backward),
    (lesson02.check_kl_gradients, kl_gradients),
    (lesson02.check_kl_gradients, lambda mu, lv: ops.kl_diag_gaussian(mu, lv)[1]),
    (lesson02.check_latent_backward, latent_backward),
    (lesson02.check_latent_backward, ops.latent_backward),
    (lesson02.check_decoder_backward, decoder_backward),
    (lesson02.check_encoder_backward, encoder_backward),
]
CHECKERS = sorted({c for c, _ in CORRECT}, key=lambda c: c.__name__)


@pytest.mark.parametrize("check, answer", CORRECT, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_passes_a_correct_answer(check, answer):
    result = check(answer)
    assert result.passed, str(result)
    assert str(result).startswith("PASS") and result.figure < 1e-7


@pytest.mark.parametrize("check", CHECKERS, ids=lambda v: v.__name__)
def test_checker_reports_a_stub_as_not_implemented(check):
    result = check(stub)
    assert not result.passed and str(result).startswith("FAIL") and "not implemented" in str(result)


@pytest.mark.parametrize("check, bug", [
    (lesson02.check_mse_backward, lambda x_hat, x: (x_hat - x) / x.size),               # factor 2 missing
    (lesson02.check_mse_backward, lambda x_hat, x: 2 * (x_hat - x) / x.shape[0]),       # mean over N only
    (lesson02.check_mse_backward, lambda x_hat, x: 2 * (x - x_hat) / x.size),           # sign
    (lesson02.check_bce_backward, lambda s, t: (t - 1 / (1 + np.exp(-s))) / s.size),    # sign
    (lesson02.check_bce_backward, bce_naive),                                           # unstable form
    (lesson02.check_kl_gradients, lambda mu, lv: (mu / len(mu), (lv - 1) / (2 * len(mu)))),  # variance <-> log-var
    (lesson02.check_kl_gradients, lambda mu, lv: (mu, (np.exp(lv) - 1) / 2)),           # 1/N missing
    (lesson02.check_latent_backward, latent_backward_without_half),
    (lesson02.check_latent_backward, latent_backward_without_bound),
    (lesson02.check_latent_backward, latent_backward_unscaled_tanh),
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w.T, z.T @ g[::-1], g.sum(0))),  # rows misaligned
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w, z.T @ g, g.sum(0))),     # W_dec not transposed
    (lesson02.check_decoder_backward, lambda g, z, w: (g @ w.T, z.T @ g, g.mean(0))),   # mean instead of sum
    (lesson02.check_encoder_backward, encoder_backward_no_activation),
    (lesson02.check_encoder_backward, encoder_backward_mu_path_only),
])
def test_checker_catches_a_planted_bug(check, bug):
    result = check(bug)
    assert not result.passed and str(result).startswith("FAIL"), str(result)


def test_decoder_checker_names_the_wrong_tensor():
    result = lesson02.check_decoder_backward(lambda g, z, w: (g @ w.T, z.T @ g, g.mean(0)))
    assert "b_dec" in str(result) and "z (" not in str(result)


def test_encoder_checker_reports_a_missing_gradient():
    def no_x(*args):
        grads = encoder_backward(*args)
        del grads["x"]
        return grads

    result = lesson02.check_encoder_backward(no_x)
    assert not result.passed and "no gradient for x" in str(result)
