"""Lesson 05 checkers (vaelayer_np.course.lesson05): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.analysis import diagnostics
from vaelayer_np.core import iffcl
from vaelayer_np.core.backprop import loss_and_grads
from vaelayer_np.core.gradcheck import check_gradients, generic_point
from vaelayer_np.core.layers import OutputLayer, VAELayer
from vaelayer_np.core.settings import IFFCLSettings
from vaelayer_np.course import lesson05
from vaelayer_np.course.lesson05 import make_twin_cosine

from .course_helpers import REQUIRED_KINDS, assert_passes, assert_reports_stub, planted_tests, stub


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def kl_per_unit(mu, log_var):
    return -0.5 * np.mean(1 + log_var - mu ** 2 - np.exp(log_var), axis=0)


def active_units(mu, threshold):
    return np.var(mu, axis=0) > threshold


# ---------------------------------------------------------------- planted bugs
def kl_per_unit_summed_over_data(mu, log_var):
    return -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var), axis=0)


def kl_per_unit_variance_for_log_variance(mu, log_var):
    var = np.exp(log_var)
    return -0.5 * np.mean(1 + var - mu ** 2 - np.exp(var), axis=0)


def active_units_std(mu, threshold):
    return np.std(mu, axis=0) > threshold


def active_units_mean_size(mu, threshold):
    return np.mean(mu ** 2, axis=0) > threshold   # the size of the means, not how they vary


def backprop_epoch_labels_not_shuffled(net, optimizers, x, y, batch_size, rng):
    order = rng.permutation(x.shape[0])
    losses = []
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        result = loss_and_grads(net, x[idx], y[start:start + batch_size], rng=rng)  # labels of other images
        for name, grads in result.grads.items():
            optimizers[name].step(grads)
        losses.append(result.loss)
    return float(np.mean(losses))


def backprop_epoch_without_steps(net, optimizers, x, y, batch_size, rng):
    return float(np.mean([loss_and_grads(net, x[i:i + batch_size], y[i:i + batch_size], rng=rng).loss
                          for i in range(0, x.shape[0], batch_size)]))


def backprop_epoch(net, optimizers, x, y, batch_size, rng):
    order = rng.permutation(x.shape[0])
    losses = []
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        result = loss_and_grads(net, x[idx], y[idx], rng=rng)
        for name, grads in result.grads.items():
            optimizers[name].step(grads)
        losses.append(result.loss)
    return float(np.mean(losses))


def backprop_epoch_shuffles_x_in_place(net, optimizers, x, y, batch_size, rng):
    rng.shuffle(x)  # shuffles the caller's images, not their labels
    return backprop_epoch(net, optimizers, x, y, batch_size, rng)


def backprop_epoch_library(net, optimizers, x, y, batch_size, rng):
    from vaelayer_np.core import backprop
    order = rng.permutation(x.shape[0])
    return float(np.mean([backprop.train_step(net, optimizers, x[order[s:s + batch_size]],
                                              y[order[s:s + batch_size]], rng)["loss"]
                          for s in range(0, x.shape[0], batch_size)]))


# ---------------------------------------------------------------- exercise 4: a layer's local step with its head
def head_local_step(layer, head, x, labels, eps, cosine, head_weight):
    out, cache = layer.forward(x, eps=eps)
    logits, _ = head.forward(out)
    n = x.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ce = -np.mean(log_probs[np.arange(n), labels])
    cos_value, d_z = cosine(cache["z"])
    loss = layer.loss_terms(cache)["neg_elbo"] + cos_value + head_weight * ce
    d_logits = np.exp(log_probs)
    d_logits[np.arange(n), labels] -= 1.0
    d_logits *= head_weight / n
    head_grads = {"W": out.T @ d_logits, "b": d_logits.sum(axis=0)}
    _, grads = layer.backward(d_logits @ head.params["W"].T, cache, dz=d_z, need_dx=False)
    return float(loss), grads, head_grads


def gradient_check_head_step(step, seed=0, head_weight=0.7, lam=2.0, h=1e-5, skip_head=False):
    rng = np.random.default_rng(seed)
    layer = generic_point(VAELayer(5, 3, encoder_hidden=4, beta=0.5, rng=seed), rng)
    head = OutputLayer(3, 4, rng=seed)
    x, eps = rng.uniform(0.0, 1.0, (6, 5)), rng.standard_normal((6, 3))
    labels = rng.permutation(np.arange(6) % 4)
    cosine = make_twin_cosine(rng.standard_normal((6, 3)), labels, rng.permutation(labels), lam=lam, margin=0.3)
    args = (layer, head, x, labels, eps, cosine, head_weight)
    _, grads, head_grads = step(*args)
    tensors, analytic = dict(layer.params), dict(grads)
    if not skip_head:
        tensors.update({"head.W": head.params["W"], "head.b": head.params["b"]})
        analytic.update({"head.W": head_grads["W"], "head.b": head_grads["b"]})
    rows = check_gradients("local step with a head", lambda: step(*args)[0], tensors, analytic, h=h)
    return {r.tensor: r.max_rel_error for r in rows}


solution_check = gradient_check_head_step


def _step_with(slip):
    """The solution with one slip planted, as a student would write it."""
    def step(layer, head, x, labels, eps, cosine, head_weight):
        out, cache = layer.forward(x, eps=eps)
        read = layer.act.forward(cache["z"]) if slip == "reads the sample" else \
            layer.act.forward(cache["mu"]) if slip == "reads the mean" else out
        logits = read @ head.params["W"] + head.params["b"]
        n = x.shape[0]
        if slip == "naive softmax":
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            log_probs = np.log(probs)
        elif slip == "log of softmax":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
            log_probs = np.log(probs)
        else:
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        ce = -(np.sum if slip == "summed" else np.mean)(log_probs[np.arange(n), labels])
        weight = 1.0 if slip == "w forgotten" else head_weight
        cos_value, d_z = cosine(cache["z"])
        loss = layer.loss_terms(cache)["neg_elbo"] + cos_value + weight * ce
        d_logits = np.exp(log_probs)
        if slip != "no one-hot":
            d_logits[np.arange(n), labels] -= 1.0
        d_logits = d_logits * weight / (1 if slip == "summed" else n)
        head_grads = {"W": read.T @ d_logits, "b": d_logits.sum(axis=0)}
        d_read = d_logits @ head.params["W"].T * (head_weight if slip == "w twice" else 1.0)
        if slip == "reads the sample":
            d_z = d_z + layer.act.backward(d_read, cache["z"], read)
            d_read = None
        if slip == "cos as dout":
            d_read, d_z = d_read + d_z, None
        if slip == "leaks":
            _, grads = layer.backward(d_read, cache, dz=d_z)             # need_dx left True: dx computed
        else:
            _, grads = layer.backward(d_read, cache, dz=d_z, need_dx=False)
        if slip == "head from vae":
            head_grads = dict(grads, **head_grads)
        if slip == "head updated":
            head.params["W"] -= 0.1 * head_grads["W"]
        if slip == "returns x":
            grads = dict(grads, x=np.zeros_like(x))
        if slip == "x in place":
            x -= x.mean(axis=0)
        if slip == "float32":
            grads = {k: g.astype(np.float32) for k, g in grads.items()}
        return float(loss), grads, head_grads

    return step


def head_step_library(layer, head, x, labels, eps, cosine, head_weight):
    from vaelayer_np.core import losses
    out, cache = layer.forward(x, eps=eps)
    logits, _ = head.forward(out)
    ce, (d_logits,) = losses.softmax_cross_entropy(logits, labels)
    return head_local_step(layer, head, x, labels, eps, cosine, head_weight)[:1] + (ce,)


def check_never_runs(step, seed=0):
    return {k: 0.0 for k in ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv", "W_dec", "b_dec", "head.W", "head.b")}


def check_of_a_few_elements(step, seed=0):
    errors = gradient_check_head_step(head_local_step, seed)  # the right step, not the one given
    step(*_tiny_problem())                                      # called once: nothing perturbed
    return errors


def _tiny_problem():
    rng = np.random.default_rng(0)
    layer, head = VAELayer(5, 3, encoder_hidden=4, rng=0), OutputLayer(3, 4, rng=0)
    labels = np.arange(6) % 4
    return (layer, head, rng.uniform(0, 1, (6, 5)), labels, rng.standard_normal((6, 3)),
            make_twin_cosine(rng.standard_normal((6, 3)), labels, labels[::-1]), 0.7)


HEAD = lesson05.check_head_local_step


def kl_per_unit_in_place(mu, log_var):
    mu **= 2  # the caller's mu squared
    return -0.5 * np.mean(1 + log_var - mu - np.exp(log_var), axis=0)


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson05.check_kl_per_unit, kl_per_unit_summed_over_data, "slip", ["N times"]),
    (lesson05.check_kl_per_unit, kl_per_unit_variance_for_log_variance, "slip", ["wrong: `KL per unit`"]),
    (lesson05.check_kl_per_unit, lambda mu, lv: -0.5 * np.mean(1 + lv - mu ** 2 - np.exp(0.5 * lv), axis=0), "slip",
     ["the std"]),
    (lesson05.check_kl_per_unit, lambda mu, lv: -0.5 * np.mean(1 + lv - mu ** 2 - np.exp(lv), axis=1), "slip",
     ["shape"]),
    (lesson05.check_kl_per_unit, kl_per_unit_in_place, "in place", ["in place", "`mu`"]),
    (lesson05.check_kl_per_unit, diagnostics.kl_per_unit, "library", ["diagnostics.kl_per_unit"]),
    (lesson05.check_kl_per_unit, lambda mu, lv: kl_per_unit(mu, lv).astype(np.float32), "float32", ["float32"]),
    (lesson05.check_active_units, active_units_std, "slip", ["standard deviation"]),
    (lesson05.check_active_units, active_units_mean_size, "slip", ["mean square"]),
    (lesson05.check_active_units, lambda mu, t: (np.var(mu, axis=0) > t).astype(float), "slip", ["boolean"]),
    (lesson05.check_active_units, lambda mu, t: np.var(mu, axis=1) > t, "slip", ["axis=1"]),
    (lesson05.check_active_units, lambda mu, t: np.var(np.subtract(mu, mu.mean(0), out=mu), axis=0) > t, "in place",
     ["in place", "`mu`"]),
    (lesson05.check_active_units, diagnostics.active_units, "library", ["diagnostics.active_units"]),
    (lesson05.check_active_units, lambda mu, t: np.var(mu.astype(np.float32), axis=0) > t, "float32 (passes)", []),
    (lesson05.check_backprop_epoch, backprop_epoch_shuffles_x_in_place, "in place", ["in place", "`x`"]),
    (lesson05.check_backprop_epoch, backprop_epoch_library, "library", ["backprop.train_step"]),
    (lesson05.check_backprop_epoch, backprop_epoch_without_steps, "slip", ["did not change"]),
    (lesson05.check_backprop_epoch, lambda *a: None, "slip", ["finite float"]),
    # exercise 4: (step, gradient check) pairs
    (HEAD, (_step_with("w forgotten"), gradient_check_head_step), "slip", ["head_weight forgotten", "`W_enc`"]),
    (HEAD, (_step_with("w twice"), gradient_check_head_step), "slip", ["head_weight applied twice"]),
    (HEAD, (_step_with("summed"), gradient_check_head_step), "slip", ["summed over the batch instead of averaged"]),
    (HEAD, (_step_with("no one-hot"), gradient_check_head_step), "slip",
     ["without the one-hot subtraction", "your own gradient check sees it too"]),
    (HEAD, (_step_with("reads the sample"), gradient_check_head_step), "slip",
     ["pass_on='mean'", "the head read act(z), the sample"]),
    (HEAD, (_step_with("reads the mean"), gradient_check_head_step), "slip",
     ["pass_on='sample', tanh, BCE", "the loss and the head's gradients look like the head read act(mu), the mean",
      "it never sees pass_on='sample', tanh, BCE"]),
    (HEAD, (_step_with("cos as dout"), gradient_check_head_step), "slip", ["it enters at z"]),
    (HEAD, (_step_with("leaks"), gradient_check_head_step), "locality",
     ["a gradient sent to the layer below", "need_dx=True"]),
    (HEAD, (_step_with("returns x"), gradient_check_head_step), "locality",
     ["a gradient sent to the layer below", "grads holds 'x'"]),
    (HEAD, (_step_with("head from vae"), gradient_check_head_step), "head from the VAE loss",
     ["head_grads holds the layer's gradients", "from the VAE loss"]),
    (HEAD, (_step_with("head updated"), gradient_check_head_step), "head from the VAE loss",
     ["changed head.params['W'] in place", "updated the head"]),
    (HEAD, (_step_with("naive softmax"), gradient_check_head_step), "slip", ["logits near 1000", "exp overflowed"]),
    (HEAD, (_step_with("log of softmax"), gradient_check_head_step), "slip", ["log(softmax) underflowed"]),
    (HEAD, (head_local_step, check_never_runs), "own check", ["never ran the step"]),
    (HEAD, (head_local_step, check_of_a_few_elements), "own check",
     ["ran the step 1 time(s) for 90 parameters", "too loose"]),
    (HEAD, (head_local_step, lambda step, seed=0: gradient_check_head_step(step, seed, head_weight=1.0)), "own check",
     ["too loose", "forgets head_weight", "head_weight = 1"]),
    (HEAD, (head_local_step, lambda step, seed=0: gradient_check_head_step(step, seed, lam=0.0)), "own check",
     ["too loose", "cosine term has no gradient"]),
    (HEAD, (head_local_step, lambda step, seed=0: gradient_check_head_step(step, seed, skip_head=True)), "own check",
     ["does not report head.W, head.b"]),
    (HEAD, (head_local_step, lambda step, seed=0: gradient_check_head_step(step, seed, h=1e-2)), "own check",
     ["the check itself is off"]),
    (HEAD, (_step_with("x in place"), gradient_check_head_step), "in place", ["in place", "`x`"]),
    (HEAD, (head_step_library, gradient_check_head_step), "library", ["losses.softmax_cross_entropy"]),
    (HEAD, (_step_with("float32"), gradient_check_head_step), "float32", ["float32"]),
    (HEAD, (lambda *a: list(head_local_step(*a)), gradient_check_head_step), "a list (passes)", []),
]


def _call(check, bug):
    if check is lesson05.check_backprop_epoch:
        return check(bug, epochs=1)
    return check(*bug) if check is HEAD else check(bug)



# A variance computed in float32 still gives the right booleans ("float32 (passes)"). backprop_epoch trains a
# float32 network by design and returns one loss: no float32 case; one epoch is enough to diagnose it.
(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(
    PLANTED, call=_call,
    required=lambda check: REQUIRED_KINDS - {"float32"} if check is lesson05.check_backprop_epoch else REQUIRED_KINDS)


def test_fast_checkers_pass_on_correct_answers():
    assert_passes(lesson05.check_kl_per_unit(kl_per_unit))
    assert_passes(lesson05.check_active_units(active_units))


@pytest.mark.parametrize("checker", [lesson05.check_kl_per_unit, lesson05.check_active_units])
def test_fast_checkers_report_a_stub(checker):
    assert_reports_stub(checker(stub))


def test_backprop_epoch_checker_stub():
    assert_reports_stub(lesson05.check_backprop_epoch(stub, epochs=1))


@pytest.mark.slow
def test_backprop_epoch_checker_passes_on_the_solution_and_catches_bugs():
    assert lesson05.check_backprop_epoch(backprop_epoch).passed
    result = lesson05.check_backprop_epoch(backprop_epoch_labels_not_shuffled)
    assert not result.passed and result.figure < 0.5 and "labels" in str(result), str(result)


# ---------------------------------------------------------------- exercise 4
def test_head_step_checker_passes_the_solution_and_reports_stubs():
    assert_passes(HEAD(head_local_step, solution_check), below=1e-9)
    assert_reports_stub(HEAD(stub, stub))

    def gradient_check_head_step(step, seed=0):  # the notebook's stub, by its name
        raise NotImplementedError()

    result = HEAD(head_local_step, gradient_check_head_step)
    assert_reports_stub(result)
    assert "`gradient_check_head_step`" in str(result), str(result)


def test_the_reference_is_twin_a_of_the_library_s_local_step_with_heads():
    """The checker's reference, and its slip-free candidate, equal twin A's gradients of iffcl.vae_local_step."""
    rng = np.random.default_rng(3)
    n, d, k, c, lam, margin, weight = 8, 6, 4, 3, 2.0, 0.3, 0.7
    layers = [generic_point(VAELayer(d, k, encoder_hidden=5, rng=s), rng) for s in (1, 2)]
    heads = [OutputLayer(k, c, rng=s) for s in (3, 4)]
    x_a, x_b = rng.uniform(0, 1, (n, d)), rng.uniform(0, 1, (n, d))
    y_a, y_b = rng.integers(0, c, n), rng.integers(0, c, n)
    settings = IFFCLSettings(lam=lam, margin=margin, contrast="all_pairs", head_weight=weight)
    step = iffcl.vae_local_step(layers[0], layers[1], x_a, x_b, None, np.random.default_rng(9), settings,
                                labels_a=y_a, labels_b=y_b, heads=heads)
    noise = np.random.default_rng(9)
    eps_a, eps_b = noise.standard_normal((n, k)), noise.standard_normal((n, k))
    z_b = layers[1].forward(x_b, eps=eps_b)[1]["z"]
    cosine = make_twin_cosine(z_b, y_a, y_b, lam, margin)
    for answer in (lesson05.reference_head_local_step(layers[0], heads[0], x_a, y_a, eps_a, cosine, weight),
                   lesson05.slipped_head_local_step(layers[0], heads[0], x_a, y_a, eps_a, cosine, weight),
                   head_local_step(layers[0], heads[0], x_a, y_a, eps_a, cosine, weight)):
        _, grads, head_grads = answer
        for name, g in step.grads_a.items():
            np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-14)
        for name, g in step.grads_head_a.items():
            np.testing.assert_allclose(head_grads[name], g, rtol=1e-10, atol=1e-14)
