"""Lesson 01 checkers (vaelayer_np.course.lesson01): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.core import losses, ops
from vaelayer_np.course import lesson01

from .course_helpers import planted_tests


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


# ---------------------------------------------------------------- planted wrong answers, each with its diagnosis
def reparameterize_in_place(mu, log_var, eps):
    mu += np.exp(0.5 * log_var) * eps  # changes the caller's mu: the next cell would see another mu
    return mu


def bounded_in_place(r, c):
    r /= c
    return c * np.tanh(r)


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


def vae_forward_in_place(x, params, eps, act, log_var_bound):
    params["W_lv"] /= log_var_bound  # changes the caller's parameters
    h = act(x @ params["W_enc"] + params["b_enc"])
    mu = h @ params["W_mu"] + params["b_mu"]
    log_var = log_var_bound * np.tanh(h @ params["W_lv"] + params["b_lv"] / log_var_bound)
    z = mu + np.exp(0.5 * log_var) * eps
    return z @ params["W_dec"] + params["b_dec"], mu, log_var, z


def vae_forward_float32(x, params, eps, act, log_var_bound):
    return tuple(a.astype(np.float32) for a in vae_forward(x, params, eps, act, log_var_bound))


def vae_forward_library(x, params, eps, act, log_var_bound):
    h = act(x @ params["W_enc"] + params["b_enc"])
    mu = h @ params["W_mu"] + params["b_mu"]
    log_var = ops.bound_log_var(h @ params["W_lv"] + params["b_lv"], log_var_bound)
    z = ops.reparameterize(mu, log_var, eps)[1]
    return z @ params["W_dec"] + params["b_dec"], mu, log_var, z


def neg_elbo_kl_summed_over_batch(x, x_hat, mu, log_var, beta):
    recon, kl, _ = neg_elbo(x, x_hat, mu, log_var, beta)
    kl = kl * x.shape[0]
    return recon, kl, recon + beta * kl


def neg_elbo_std_for_variance(x, x_hat, mu, log_var, beta):
    recon = np.mean((x_hat - x) ** 2)
    kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(0.5 * log_var)) / x.shape[0]  # std where sigma^2 belongs
    return recon, kl, recon + beta * kl


def neg_elbo_in_place(x, x_hat, mu, log_var, beta):
    x_hat -= x  # the caller's x_hat becomes the residual
    recon = np.mean(x_hat ** 2)
    kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var)) / x.shape[0]
    return recon, kl, recon + beta * kl


def neg_elbo_library(x, x_hat, mu, log_var, beta):
    recon = losses.mse(x_hat, x)[0]
    kl = ops.kl_diag_gaussian(mu, log_var)[0]
    return recon, kl, recon + beta * kl


def neg_elbo_float32(x, x_hat, mu, log_var, beta):
    return tuple(np.float32(v) for v in neg_elbo(x, x_hat, mu, log_var, beta))


def make_layer_forward(passed=None, activation=True, bce="stable", kl_mean_over_k=False, with_beta=True, dtype=None,
                       bound_none=True):
    """Exercise 5's answer (the defaults); each argument plants one slip."""
    def layer_forward(layer, x, eps):
        p, act, c = layer.params, layer.act.forward, layer.log_var_bound
        h = act(x @ p["W_enc"] + p["b_enc"])
        mu = h @ p["W_mu"] + p["b_mu"]
        r = h @ p["W_lv"] + p["b_lv"]
        log_var = r if (bound_none and c is None) else c * np.tanh(r / c)
        z = mu if eps is None else mu + np.exp(0.5 * log_var) * eps
        s = z @ p["W_dec"] + p["b_dec"]
        sampled = layer.pass_on == "sample" and eps is not None
        source = {"mu": mu, "z": z, None: z if sampled else mu}[passed]
        out = act(source) if activation else source
        if layer.recon == "bce" and bce == "stable":
            recon = float(np.mean(np.maximum(s, 0.0) - s * x + np.log1p(np.exp(-np.abs(s)))))
        elif layer.recon == "bce" and bce == "naive":
            prob = 1.0 / (1.0 + np.exp(-s))
            recon = float(np.mean(-x * np.log(prob) - (1 - x) * np.log(1 - prob)))
        else:
            recon = float(np.mean((s - x) ** 2))
        terms = 1.0 + log_var - mu ** 2 - np.exp(log_var)
        kl = float(-0.5 * (np.mean(terms) if kl_mean_over_k else np.sum(terms) / x.shape[0]))
        if dtype is not None:
            out = out.astype(dtype)
        return out, recon, kl, recon + (layer.beta if with_beta else 1.0) * kl

    return layer_forward


def layer_forward_in_place(layer, x, eps):
    result = make_layer_forward()(layer, x, eps)
    x *= 1.0 - 1e-3  # the caller's input scaled
    return result


def layer_forward_library(layer, x, eps):
    out, cache = layer.forward(x, eps=eps, sample=eps is not None)
    terms = layer.loss_terms(cache)
    return out, terms["recon"], terms["kl"], terms["neg_elbo"]


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson01.check_layer_forward, make_layer_forward(passed="mu"), "slip",
     ["pass_on='sample'", "`out`", "out = act(z)"]),
    (lesson01.check_layer_forward, make_layer_forward(passed="z"), "slip", ["pass_on='mean'", "out = act(mu)"]),
    (lesson01.check_layer_forward, make_layer_forward(activation=False), "slip", ["without the activation"]),
    (lesson01.check_layer_forward, make_layer_forward(bce="mse"), "slip", ["BCE", "the MSE in a BCE layer"]),
    (lesson01.check_layer_forward, make_layer_forward(bce="naive"), "slip", ["+-1000", "log1p"]),
    (lesson01.check_layer_forward, make_layer_forward(kl_mean_over_k=True), "slip", ["`kl`", "averaged over the K"]),
    (lesson01.check_layer_forward, make_layer_forward(with_beta=False), "slip", ["beta is forgotten"]),
    (lesson01.check_layer_forward, make_layer_forward(bound_none=False), "edge case",
     ["log_var_bound=None", "TypeError", "log_var = r"]),
    (lesson01.check_layer_forward, layer_forward_in_place, "in place", ["in place", "`x`"]),
    (lesson01.check_layer_forward, layer_forward_library, "library", ["VAELayer.forward"]),
    (lesson01.check_layer_forward, make_layer_forward(dtype=np.float32), "float32", ["float32"]),
    (lesson01.check_layer_forward, lambda *a: list(make_layer_forward()(*a)), "a list (passes)", []),
    (lesson01.check_bounded_log_var, lambda r, c: np.tanh(r / c), "slip", ["without the factor c"]),
    (lesson01.check_bounded_log_var, lambda r, c: np.clip(r, -c, c), "slip", ["hard clip"]),
    (lesson01.check_bounded_log_var, bounded_in_place, "in place", ["in place", "`r`"]),
    (lesson01.check_bounded_log_var, ops.bound_log_var, "library", ["ops.bound_log_var"]),
    (lesson01.check_bounded_log_var, lambda r, c: (c * np.tanh(r / c)).astype(np.float32), "float32",
     ["float32", "float64"]),
    (lesson01.check_reparameterize, lambda mu, lv, eps: mu + np.exp(lv) * eps, "slip", ["the variance"]),
    (lesson01.check_reparameterize, lambda mu, lv, eps: mu + lv * eps, "slip", ["log-variance used as the std"]),
    (lesson01.check_reparameterize, reparameterize_in_place, "in place", ["in place", "`mu`"]),
    (lesson01.check_reparameterize, lambda mu, lv, eps: ops.reparameterize(mu, lv, eps)[1], "library",
     ["ops.reparameterize"]),
    (lesson01.check_reparameterize, lambda mu, lv, eps: reparameterize(mu, lv, eps).astype(np.float32), "float32",
     ["float32"]),
    (lesson01.check_reparameterize, lambda mu, lv, eps: mu + np.exp(0.5 * lv) * eps[:2], "error",
     ["ValueError", "your line"]),
    (lesson01.check_vae_forward, vae_forward_unbounded, "slip", ["`log_var`", "bound", "right: `mu`"]),
    (lesson01.check_vae_forward, vae_forward_no_hidden_activation, "slip", ["`mu`", "activation"]),
    (lesson01.check_vae_forward, vae_forward_decodes_mean, "slip", ["wrong: `x_hat`", "applied to mu"]),
    (lesson01.check_vae_forward, vae_forward_in_place, "in place", ["in place", "`params[\"W_lv\"]`"]),
    (lesson01.check_vae_forward, vae_forward_float32, "float32", ["`x_hat` has dtype float32"]),
    (lesson01.check_vae_forward, vae_forward_library, "library", ["ops.bound_log_var", "ops.reparameterize"]),
    (lesson01.check_vae_forward, lesson01.library_forward, "library", ["library"]),
    (lesson01.check_neg_elbo, neg_elbo_kl_summed_over_batch, "slip", ["`kl`", "N times"]),
    (lesson01.check_neg_elbo, neg_elbo_std_for_variance, "slip", ["`kl`", "std"]),
    (lesson01.check_neg_elbo, lambda x, xh, mu, lv, beta: neg_elbo(x, xh, mu, lv, 1.0), "slip",
     ["wrong: `neg_elbo`", "beta is forgotten"]),
    (lesson01.check_neg_elbo, lambda x, xh, mu, lv, beta: (np.mean((xh - x) ** 2) * x.shape[1],)
     + neg_elbo(x, xh, mu, lv, beta)[1:], "slip", ["`recon`", "D times"]),
    (lesson01.check_neg_elbo, neg_elbo_in_place, "in place", ["in place", "`x_hat`"]),
    (lesson01.check_neg_elbo, neg_elbo_library, "library", ["losses.mse"]),
    (lesson01.check_neg_elbo, neg_elbo_float32, "float32", ["float32"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(PLANTED)


def test_checker_reports_a_wrong_number_of_return_values():
    result = lesson01.check_vae_forward(lambda *args: vae_forward(*args)[:3])
    assert not result.passed and "expected 4 return values" in str(result)


def test_library_forward_refuses_an_unknown_activation():
    params = {"W_enc": np.zeros((3, 2)), "W_mu": np.zeros((2, 1))}
    with pytest.raises(ValueError, match="act"):
        lesson01.library_forward(np.zeros((1, 3)), params, np.zeros((1, 1)), np.sin, 6.0)


def test_layer_forward_checker_passes_the_answer_and_reports_a_stub():
    from .course_helpers import assert_passes, assert_reports_stub, stub

    assert_passes(lesson01.check_layer_forward(make_layer_forward()), below=1e-10)
    assert_reports_stub(lesson01.check_layer_forward(stub))


def test_layer_forward_reference_is_the_library():
    for i, case in enumerate(lesson01.LAYER_FORWARD_CASES):
        _, layer, x, eps = lesson01.layer_forward_problem(case, seed=i)
        out, cache = layer.forward(x, eps=eps, sample=eps is not None)
        terms = layer.loss_terms(cache)
        ref = lesson01.reference_layer_forward(layer, x, eps)
        assert np.allclose(ref[0], out, rtol=1e-12, atol=0)
        assert ref[1:] == pytest.approx((terms["recon"], terms["kl"], terms["neg_elbo"]), rel=1e-12)
