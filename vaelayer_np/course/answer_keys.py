"""What gives an exercise's answer away: its key expressions, per lesson and checker.

A student notebook must not hold an exercise's answer anywhere before the cell that runs its
checker: no code that computes it, no final formula of its derivation (the derivations stop one
step before it), no library source printed. ``KEYS[lesson][checker]`` lists, for the exercise
that ``checker`` checks, the expressions that would give it away: code of the solution and the
final formula in the TeX of the text. ``tests/test_course_leaks.py`` reads every student notebook
and fails when one of them appears before that checker's call (compared without whitespace), or
when a cell there prints the source (``getsource``, ``show_source``) of a library function the
exercise replaces (the checkers' ``FORBIDDEN`` lists).
"""
from __future__ import annotations

KEYS = {
    "01_vae_layer_forward": {
        "check_bounded_log_var": ["c * np.tanh(r / c)", "np.tanh(r / c) * c"],
        "check_reparameterize": ["np.exp(0.5 * log_var) * eps", "np.exp(log_var / 2) * eps"],
        "check_vae_forward": ['h @ params["W_mu"]', 'z @ params["W_dec"]', 'x @ params["W_enc"]'],
        "check_neg_elbo": ["np.mean((x_hat - x) ** 2)", "1 + log_var - mu ** 2 - np.exp(log_var)"],
    },
    "02_deriving_gradients": {
        "check_mse_backward": ["2.0 / diff.size", "2.0 * (x_hat - x) / x.size", "2 * (x_hat - x) / x.size",
                               r"\frac{2(\hat x_{nd} - x_{nd})}{ND}"],
        "check_bce_backward": ["(prob - target) / logits.size", r"\sigma(s) - t", r"\frac{e}{1+e}",
                               "e / (1.0 + e)"],
        "check_kl_gradients": ["(var - 1) * (0.5 / n)", "(np.exp(log_var) - 1.0) / (2.0 * n)",
                               r"\frac{\sigma^2_{nk} - 1}{2N}", r"\frac{\mu_{nk}}{N}", r"\frac{\sigma^2 - 1}{2N}"],
        "check_latent_backward": ["0.5 * d_z * eps * std", r"\tfrac12\,\epsilon_{nk}\,\sigma_{nk}",
                                  r"1 - \left(\frac{v}{c}\right)^2", r"\bar r = \bar v \odot"],
        "check_decoder_backward": ["z.T @ d_x_hat", "d_x_hat @ W_dec.T", r"z^\top\bar{\hat x}",
                                   r"\bar{\hat x}\,W^\top", r"\sum_n z_{nk}\,\bar{\hat x}_{nd}"],
        "check_encoder_backward": ['d_mu @ params["W_mu"].T', "h.T @ d_mu", r"\bar W_\mu = h^\top\bar\mu",
                                   r"\bar h = \bar\mu\,W_\mu^\top + \bar r\,W_{lv}^\top"],
    },
    "03_gradient_checking": {
        "check_numerical_gradient": ["x[i] = old  #", "grad[i] = (f_plus - f_minus) / (2 * h)"],
        "check_relative_error": ["np.abs(numeric - analytic).max() / scale"],
        "check_layer_gradient_errors": ["errors[\"x\"] = relative_error(numerical_gradient(loss, x), dx)",
                                        "dout = rng.standard_normal(out.shape)"],
    },
    "04_forward_forward_and_iffcl": {
        "check_cosine_embedding": [r"\frac{b}{s} - \cos\,\frac{a}{\|a\|^2}", "(cos / sq_a)[:, None] * a",
                                   "b / norm[:, None]"],
        "check_make_pairs_balanced": ["np.flatnonzero(labels == labels[i])", "pool[rng.integers(pool.size)]"],
        "check_local_step": ["dz=lam * dz_a", "dz=lam * dz_b", "layer_a.backward(None, cache_a"],
    },
    "05_training_and_what_goes_wrong": {
        "check_backprop_epoch": ["optimizers[name].step(grads)", "loss_and_grads(net, x[idx], y[idx]"],
        "check_kl_per_unit": ["np.mean(1.0 + log_var - mu ** 2 - np.exp(log_var), axis=0)"],
        "check_active_units": ["np.var(mu, axis=0) > threshold"],
    },
    "06_generation": {
        "check_decode_to_input": ["range(k, -1, -1)", "net.vae_layers[j].decode(h)"],
        "check_sample_aggregate": ["np.sqrt(mu.var(axis=0) + np.exp(log_var).mean(axis=0))"],
        "check_traverse": ["z[:, unit] = values"],
    },
    "07_speed_and_kernels": {
        "check_interleaved_timer": ["statistics.median(times_f)"],
        "check_relu_backward_kernel": ["flat_dout[i] if flat_x[i] > 0 else 0.0"],
        "check_kl_kernel": ["(s2 - 1.0) * (0.5 * inv_n)", "(var[i, j] - 1.0)", "d_log_var[i, j] ="],
        "check_adam_kernel": ["mi / (math.sqrt(vi) + eps_hat)", "m[i] / (math.sqrt(v[i]) + eps_hat)"],
    },
    "08_capstone": {
        "check_my_vae_layer": ['decoder_backward(d_x_hat, cache["z"], p["W_dec"])', 'del grads["x"]'],
        "check_my_local_step": ["layer_a.backward(cache_a, lam * dz_a)"],
        "check_capstone_training": ["make_pairs_balanced(y, rng)", 'model["opt"][name].step(g)',
                                    "grads, loss = step_gradients(model, x[idx], y[idx], rng)"],
        "check_capstone_locality": ["make_pairs_balanced(y, rng)"],
    },
}

# The checker module of each lesson (its FORBIDDEN lists name the library functions an exercise replaces).
CHECKER_MODULES = {
    "01_vae_layer_forward": "lesson01", "02_deriving_gradients": "lesson02", "03_gradient_checking": "lesson03",
    "04_forward_forward_and_iffcl": "lesson04", "05_training_and_what_goes_wrong": "lesson05",
    "06_generation": "lesson06", "07_speed_and_kernels": "lesson07", "08_capstone": "capstone",
}


def normalise(text):
    """Text without any whitespace: the comparison ignores layout."""
    return "".join(str(text).split())
