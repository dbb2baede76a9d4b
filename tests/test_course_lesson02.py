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
    return d_mu, d_log_var if bound is None else d_log_var * (1.0 - (log_var / bound) ** 2)


def decoder_backward(d_x_hat, z, w_dec):
    return d_x_hat @ w_dec.T, z.T @ d_x_hat, d_x_hat.sum(axis=0)


def encoder_backward(d_mu, d_r, x, h_pre, h, params, act_backward):
    grads = {"W_mu": h.T @ d_mu, "b_mu": d_mu.sum(axis=0), "W_lv": h.T @ d_r, "b_lv": d_r.sum(axis=0)}
    d_h = d_mu @ params["W_mu"].T + d_r @ params["W_lv"].T
    d_h_pre = act_backward(d_h, h_pre, h)
    grads.update({"W_enc": x.T @ d_h_pre, "b_enc": d_h_pre.sum(axis=0), "x": d_h_pre @ params["W_enc"].T})
    return grads


def make_layer_backward(target=True, bce_target=True, dz_weight=False, dz_added=True, dout_at="out", dout_act=True,
                        kl_weight="w*beta", weight_recon=True, container=tuple, dtype=None):
    """The whole backward of exercise 7 from the functions above; the defaults are the right answer, each
    argument plants one slip (``dout_at``: "out" where out comes from, "mu" always, "z" always)."""
    def vae_layer_backward(layer, cache, dout=None, dz=None, neg_elbo_weight=1.0):
        p, w, x = layer.params, neg_elbo_weight, cache["x"]
        w_recon = w if weight_recon else 1.0
        if layer.recon == "mse":
            d_x_hat = w_recon * mse_backward(cache["x_hat"], x)
            d_target = -d_x_hat
        else:
            d_x_hat = w_recon * bce_with_logits_backward(cache["x_hat"], x)
            d_target = -w_recon * cache["x_hat"] / x.size if bce_target else -d_x_hat
        d_z, d_w_dec, d_b_dec = decoder_backward(d_x_hat, cache["z"], p["W_dec"])
        if dz is not None and dz_added:
            d_z = d_z + (w * dz if dz_weight else dz)
        at_z = {"out": layer.pass_on == "sample" and cache["eps"] is not None, "z": True, "mu": False}[dout_at]
        if dout is not None:
            d_out = layer.act.backward(dout, cache["z"] if at_z else cache["mu"], cache["out"]) if dout_act else dout
        if dout is not None and at_z:
            d_z = d_z + d_out
        kl_w = {"w*beta": w * layer.beta, "w": w, "beta": layer.beta}[kl_weight]
        d_mu, d_r = latent_backward(d_z, cache["eps"], cache["std"], kl_gradients(cache["mu"], cache["log_var"]),
                                    kl_w, cache["log_var"], layer.log_var_bound)
        if dout is not None and not at_z:
            d_mu = d_mu + d_out
        grads = encoder_backward(d_mu, d_r, x, cache["h_pre"], cache["h"], p, layer.act.backward)
        grads.update(W_dec=d_w_dec, b_dec=d_b_dec)
        dx = grads.pop("x") + (d_target if target else 0.0)
        if dtype is not None:
            dx, grads = dx.astype(dtype), {k: v.astype(dtype) for k, v in grads.items()}
        return container((dx, grads))

    return vae_layer_backward


vae_layer_backward = make_layer_backward()


def layer_backward_library(layer, cache, dout=None, dz=None, neg_elbo_weight=1.0):
    return layer.backward(dout, cache, dz=dz, neg_elbo_weight=neg_elbo_weight)


def layer_backward_cache_in_place(layer, cache, dout=None, dz=None, neg_elbo_weight=1.0):
    cache["x_hat"] -= cache["x"]  # the residual written into the caller's cache
    cache["x_hat"] += cache["x"]
    cache["x_hat"] *= 1.5
    return vae_layer_backward(layer, cache, dout, dz, neg_elbo_weight)


def layer_backward_steps_params(layer, cache, dout=None, dz=None, neg_elbo_weight=1.0):
    dx, grads = vae_layer_backward(layer, cache, dout, dz, neg_elbo_weight)
    for name, g in grads.items():
        layer.params[name] -= 0.1 * g  # an update: not the backward's job
    return dx, grads


def latent_backward_bound_as_number(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    d_mu = d_z + kl_weight * kl_grads[0]
    d_log_var = kl_weight * kl_grads[1] + (0.0 if eps is None else 0.5 * d_z * eps * std)
    return d_mu, d_log_var * (1.0 - (log_var / bound) ** 2)  # bound=None: TypeError


def latent_backward_bound_none_as_one(d_z, eps, std, kl_grads, kl_weight, log_var, bound):
    return latent_backward(d_z, eps, std, kl_grads, kl_weight, log_var, 1.0 if bound is None else bound)


def bce_textbook_sigmoid(logits, target):
    return (1.0 / (1.0 + np.exp(-logits)) - target) / logits.size  # exp overflows at -1000: 1/inf = 0


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
    (lesson02.check_latent_backward, latent_backward_bound_as_number, "edge case",
     ["bound=None", "TypeError", "d_r = d_log_var"]),
    (lesson02.check_latent_backward, latent_backward_bound_none_as_one, "edge case", ["bound=None", "`d_r`"]),
    (lesson02.check_bce_backward, bce_textbook_sigmoid, "textbook sigmoid (passes)", []),
    (lesson02.check_vae_layer_backward, make_layer_backward(target=False), "slip",
     ["MSE, relu", "`dx`", "second use of x forgotten"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(bce_target=False), "slip",
     ["BCE, tanh", "`dx`", "MSE's rule", "-s / (N D)"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dz_added=False), "slip", ["`dz`", "never added"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dz_weight=True), "slip",
     ["BCE, tanh", "`dz` was multiplied by neg_elbo_weight"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dout_at="mu"), "slip",
     ["pass_on='sample'", "`dout` entered at mu", "enters at z"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dout_at="z"), "slip",
     ["pass_on='mean'", "`dout` entered at z", "enters at mu"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dout_act=False), "slip",
     ["without the activation's derivative"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(kl_weight="w"), "slip", ["without beta"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(kl_weight="beta"), "slip",
     ["neg_elbo_weight forgotten on the KL"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(kl_weight="beta", weight_recon=False), "slip",
     ["neg_elbo_weight forgotten: it weights the whole negative ELBO"]),
    (lesson02.check_vae_layer_backward, layer_backward_library, "library", ["VAELayer.backward"]),
    (lesson02.check_vae_layer_backward, layer_backward_cache_in_place, "in place", ["in place", "`cache"]),
    (lesson02.check_vae_layer_backward, layer_backward_steps_params, "in place", ["layer.params", "optimiser"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(dtype=np.float32), "float32", ["float32"]),
    (lesson02.check_vae_layer_backward, make_layer_backward(container=list), "container (passes)", []),
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
    (lesson02.check_vae_layer_backward, vae_layer_backward),
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


def test_layer_backward_reference_is_the_library_and_each_slip_differs_from_it():
    """The candidates the diagnoses are matched against: the right one is VAELayer.backward to the last bit
    (the same operations in the same order), every planted slip differs in at least one setting."""
    for slip in [""] + list(lesson02._LAYER_SLIPS):
        differs = False
        for i, case in enumerate(lesson02.LAYER_BACKWARD_CASES):
            _, layer, cache, dout, dz, w = lesson02.layer_backward_problem(case, seed=i)
            want_dx, want = layer.backward(dout, cache, dz=dz, neg_elbo_weight=w)
            dx, got = lesson02.reference_layer_backward(layer, cache, dout, dz, w, slip)
            same = np.array_equal(dx, want_dx) and all(np.array_equal(got[k], want[k]) for k in want)
            differs = differs or not same
            assert same or slip, case[0]
        assert differs or not slip, slip


def test_textbook_sigmoid_passes_with_a_note_on_the_overflow():
    result = lesson02.check_bce_backward(bce_textbook_sigmoid)
    assert result.passed and "exp overflowed" in str(result), str(result)
    assert "overflow" not in str(lesson02.check_bce_backward(bce_with_logits_backward))
