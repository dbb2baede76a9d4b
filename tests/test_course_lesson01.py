"""Lesson 01 checkers (vaelayer_np.course.lesson01): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import ops
from vaelayer_np.course import lesson01


def stub(*args, **kwargs):
    raise NotImplementedError()


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def bounded_log_var(r, c):
    return c * np.tanh(r / c)


def reparameterize(mu, log_var, eps):
    return mu + np.exp(0.5 * log_var) * eps


def vae_forward(x, params, eps, act, log_var_bound):
    h = act(x @ params["W_enc"] + params["b_enc"])
    mu = h @ params["W_mu"] + params["b_mu"]
    log_var = log_var_bound * np.tanh((h @ params["W_lv"] + params["b_lv"]) / log_var_bound)
    z = mu + np.exp(0.5 * log_var) * eps
    x_hat = z @ params["W_dec"] + params["b_dec"]
    return x_hat, mu, log_var, z


def neg_elbo(x, x_hat, mu, log_var, beta):
    recon = np.mean((x_hat - x) ** 2)
    kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var)) / x.shape[0]
    return recon, kl, recon + beta * kl


# ---------------------------------------------------------------- planted bugs
def vae_forward_unbounded(x, params, eps, act, log_var_bound):
    h = act(x @ params["W_enc"] + params["b_enc"])
    mu = h @ params["W_mu"] + params["b_mu"]
    log_var = h @ params["W_lv"] + params["b_lv"]  # the bound forgotten
    z = mu + np.exp(0.5 * log_var) * eps
    return z @ params["W_dec"] + params["b_dec"], mu, log_var, z


def vae_forward_no_hidden_activation(x, params, eps, act, log_var_bound):
    return vae_forward(x, params, eps, lambda a: a, log_var_bound)


def vae_forward_decodes_mean(x, params, eps, act, log_var_bound):
    x_hat, mu, log_var, z = vae_forward(x, params, eps, act, log_var_bound)
    return mu @ params["W_dec"] + params["b_dec"], mu, log_var, z  # decodes mu, not the sample z


def neg_elbo_kl_summed_over_batch(x, x_hat, mu, log_var, beta):
    recon, kl, _ = neg_elbo(x, x_hat, mu, log_var, beta)
    kl = kl * x.shape[0]
    return recon, kl, recon + beta * kl


def neg_elbo_std_for_variance(x, x_hat, mu, log_var, beta):
    recon = np.mean((x_hat - x) ** 2)
    kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(0.5 * log_var)) / x.shape[0]  # std where sigma^2 belongs
    return recon, kl, recon + beta * kl


@pytest.mark.parametrize("check, answer", [
    (lesson01.check_bounded_log_var, bounded_log_var),
    (lesson01.check_bounded_log_var, ops.bound_log_var),
    (lesson01.check_reparameterize, reparameterize),
    (lesson01.check_vae_forward, vae_forward),
    (lesson01.check_vae_forward, lesson01.library_forward),
    (lesson01.check_neg_elbo, neg_elbo),
], ids=lambda v: getattr(v, "__name__", ""))
def test_checker_passes_a_correct_answer(check, answer):
    result = check(answer)
    assert result.passed, str(result)
    assert str(result).startswith("PASS") and result.figure < 1e-10


@pytest.mark.parametrize("check", [lesson01.check_bounded_log_var, lesson01.check_reparameterize,
                                   lesson01.check_vae_forward, lesson01.check_neg_elbo],
                         ids=lambda v: v.__name__)
def test_checker_reports_a_stub_as_not_implemented(check):
    result = check(stub)
    assert not result.passed and str(result).startswith("FAIL") and "not implemented" in str(result)


@pytest.mark.parametrize("check, bug", [
    (lesson01.check_bounded_log_var, lambda r, c: np.tanh(r / c)),                        # factor c missing
    (lesson01.check_bounded_log_var, lambda r, c: np.clip(r, -c, c)),                     # hard clip
    (lesson01.check_reparameterize, lambda mu, lv, eps: mu + np.exp(lv) * eps),           # variance as std
    (lesson01.check_reparameterize, lambda mu, lv, eps: mu + lv * eps),                   # log-variance as std
    (lesson01.check_vae_forward, vae_forward_unbounded),
    (lesson01.check_vae_forward, vae_forward_no_hidden_activation),
    (lesson01.check_vae_forward, vae_forward_decodes_mean),
    (lesson01.check_neg_elbo, neg_elbo_kl_summed_over_batch),
    (lesson01.check_neg_elbo, neg_elbo_std_for_variance),
    (lesson01.check_neg_elbo, lambda x, xh, mu, lv, beta: neg_elbo(x, xh, mu, lv, 1.0)),  # beta ignored
])
def test_checker_catches_a_planted_bug(check, bug):
    result = check(bug)
    assert not result.passed and str(result).startswith("FAIL") and "measured" in str(result), str(result)


def test_checker_reports_a_wrong_number_of_return_values():
    result = lesson01.check_vae_forward(lambda *args: vae_forward(*args)[:3])
    assert not result.passed and "expected 4 return values" in str(result)


def test_library_forward_refuses_an_unknown_activation():
    params = {"W_enc": np.zeros((3, 2)), "W_mu": np.zeros((2, 1))}
    with pytest.raises(ValueError, match="act"):
        lesson01.library_forward(np.zeros((1, 3)), params, np.zeros((1, 1)), np.sin, 6.0)
