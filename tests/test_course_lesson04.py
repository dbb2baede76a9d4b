"""Lesson 04 checkers (vaelayer_np.course.lesson04): pass on a correct answer, fail on a stub and on planted bugs;
the lesson's forward-forward layer and its locality helper do what the lesson says."""
import numpy as np
import pytest

from vaelayer_np.core import iffcl, ops
from vaelayer_np.core.settings import IFFCLSettings
from vaelayer_np.course import lesson04

from .course_helpers import answer_test, planted_tests


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def cosine_embedding_loss(a, b, target, margin=0.0, eps=1e-8):
    n = a.shape[0]
    sq_a = np.sum(a * a, axis=1) + eps
    sq_b = np.sum(b * b, axis=1) + eps
    norm = np.sqrt(sq_a * sq_b)
    cos = np.sum(a * b, axis=1) / norm
    positive = target > 0
    value = float(np.mean(np.where(positive, 1 - cos, np.maximum(cos - margin, 0))))
    d_cos = np.where(positive, -1.0, (cos > margin).astype(a.dtype)) / n
    d_a = d_cos[:, None] * (b / norm[:, None] - (cos / sq_a)[:, None] * a)
    d_b = d_cos[:, None] * (a / norm[:, None] - (cos / sq_b)[:, None] * b)
    return value, (d_a, d_b)


def make_pairs_balanced(labels, rng):
    n = labels.shape[0]
    partner = np.empty(n, dtype=np.int64)
    want_same = rng.random(n) < 0.5
    for i in range(n):
        same = np.flatnonzero(labels == labels[i])
        other = np.flatnonzero(labels != labels[i])
        pool = same if (want_same[i] or other.size == 0) else other
        partner[i] = pool[rng.integers(pool.size)]
    return partner, np.where(labels == labels[partner], 1.0, -1.0)


def local_step(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin, cosine=cosine_embedding_loss):
    _, cache_a = layer_a.forward(x_a, eps=eps_a)
    _, cache_b = layer_b.forward(x_b, eps=eps_b)
    _, (dz_a, dz_b) = cosine(cache_a["z"], cache_b["z"], target, margin)
    _, grads_a = layer_a.backward(None, cache_a, dz=lam * dz_a, need_dx=False)
    _, grads_b = layer_b.backward(None, cache_b, dz=lam * dz_b, need_dx=False)
    return grads_a, grads_b


# ---------------------------------------------------------------- planted bugs
def cosine_without_projection(a, b, target, margin=0.0):
    value, _ = cosine_embedding_loss(a, b, target, margin)
    n = a.shape[0]
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / norm
    d_cos = np.where(target > 0, -1.0, (cos > margin).astype(a.dtype)) / n
    return value, (d_cos[:, None] * b / norm[:, None], d_cos[:, None] * a / norm[:, None])  # the -cos a/|a|^2 term lost


def cosine_hinge_on_wrong_side(a, b, target, margin=0.0):
    value, (d_a, d_b) = cosine_embedding_loss(a, b, -target, margin)  # negatives pulled, positives pushed
    return value, (d_a, d_b)


def cosine_sum_not_mean(a, b, target, margin=0.0):
    value, (d_a, d_b) = cosine_embedding_loss(a, b, target, margin)
    n = a.shape[0]
    return value * n, (d_a * n, d_b * n)


def cosine_gradient_sign_flipped(a, b, target, margin=0.0):
    value, (d_a, d_b) = cosine_embedding_loss(a, b, target, margin)
    return value, (-d_a, -d_b)


def pairs_random(labels, rng):
    partner = rng.permutation(labels.shape[0])  # the random mode: about 1 positive pair in 10
    return partner, np.where(labels == labels[partner], 1.0, -1.0)


def pairs_wrong_targets(labels, rng):
    partner, target = make_pairs_balanced(labels, rng)
    return partner, np.where(labels == partner, 1.0, -1.0)  # compares a label with an index


def pairs_first_of_group(labels, rng):
    n = labels.shape[0]
    partner = np.empty(n, dtype=np.int64)
    want_same = rng.random(n) < 0.5
    for i in range(n):
        same, other = np.flatnonzero(labels == labels[i]), np.flatnonzero(labels != labels[i])
        partner[i] = (same if (want_same[i] or other.size == 0) else other)[0]
    return partner, np.where(labels == labels[partner], 1.0, -1.0)


def pairs_uniform_over_classes_without_guard(labels, rng):
    n = labels.shape[0]
    partner = np.empty(n, dtype=np.int64)
    for i in range(n):
        other = np.flatnonzero(labels != labels[i])
        pool = np.flatnonzero(labels == labels[i]) if rng.random() < 0.5 else other
        partner[i] = pool[rng.integers(pool.size)]  # an empty pool raises for a one-class batch
    return partner, np.where(labels == labels[partner], 1.0, -1.0)


def step_without_lambda(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    return local_step(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, 1.0, margin)


def step_cosine_as_upstream_gradient(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    _, cache_a = layer_a.forward(x_a, eps=eps_a)
    _, cache_b = layer_b.forward(x_b, eps=eps_b)
    _, (dz_a, dz_b) = cosine_embedding_loss(cache_a["z"], cache_b["z"], target, margin)
    _, grads_a = layer_a.backward(lam * dz_a, cache_a, need_dx=False)  # enters at act(mu), not at z
    _, grads_b = layer_b.backward(lam * dz_b, cache_b, need_dx=False)
    return grads_a, grads_b


def step_twins_swapped(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    _, cache_a = layer_a.forward(x_a, eps=eps_a)
    _, cache_b = layer_b.forward(x_b, eps=eps_b)
    _, (dz_a, dz_b) = cosine_embedding_loss(cache_a["z"], cache_b["z"], target, margin)
    _, grads_a = layer_a.backward(None, cache_a, dz=lam * dz_b, need_dx=False)
    _, grads_b = layer_b.backward(None, cache_b, dz=lam * dz_a, need_dx=False)
    return grads_a, grads_b


def step_that_updates(layer_a, layer_b, *args):
    grads_a, grads_b = local_step(layer_a, layer_b, *args)
    for layer, grads in ((layer_a, grads_a), (layer_b, grads_b)):
        for key, g in grads.items():
            layer.params[key] -= 0.1 * g
    return grads_a, grads_b


def cosine_in_place(a, b, target, margin=0.0, eps=1e-8):
    a /= np.sqrt(np.sum(a * a, axis=1, keepdims=True) + eps)  # normalises the caller's a
    return cosine_embedding_loss(a, b, target, margin, eps)


def cosine_float32(a, b, target, margin=0.0):
    value, (d_a, d_b) = cosine_embedding_loss(a, b, target, margin)
    return value, (d_a.astype(np.float32), d_b.astype(np.float32))


def cosine_without_eps(a, b, target, margin=0.0):
    return cosine_embedding_loss(a, b, target, margin, eps=0.0)  # 0 / 0 on a zero vector


def pairs_global_random(labels, rng):
    return make_pairs_balanced(labels, np.random.default_rng(np.random.randint(1 << 30)))  # noqa: NPY002


def pairs_own_generator(labels, rng):
    return make_pairs_balanced(labels, np.random.default_rng(0))


def pairs_sorts_labels(labels, rng):
    partner, target = make_pairs_balanced(labels, rng)
    labels.sort()  # the caller's labels reordered
    return partner, target


def pairs_float32(labels, rng):
    partner, target = make_pairs_balanced(labels, rng)
    return partner, target.astype(np.float32)


def step_moves_inputs(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    grads = local_step(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin)
    x_b -= x_a  # the caller's x_b changed
    return grads


def step_library(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    step = iffcl.vae_local_step(layer_a, layer_b, x_a, x_b, target, np.random.default_rng(0),
                                IFFCLSettings(lam=lam, margin=margin, contrast="partner"))
    return step.grads_a, step.grads_b


def step_float32(*args):
    return tuple({k: v.astype(np.float32) for k, v in g.items()} for g in local_step(*args))


def step_wrong_noise(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    return local_step(layer_a, layer_b, x_a, x_b, target, eps_b, eps_a, lam, margin)


def step_targets_flipped(layer_a, layer_b, x_a, x_b, target, eps_a, eps_b, lam, margin):
    return local_step(layer_a, layer_b, x_a, x_b, -target, eps_a, eps_b, lam, margin)


def make_cosine_matrix(weighting="balanced", one_kind_rule=True, hinge_mask=True, projection=True, axes=(1, 0),
                       transpose_g=True, dtype=None, loop=False):
    """Exercise 1b's answer; the defaults are right, each argument plants one slip."""
    def cosine_matrix_loss(a, b, targets, margin, eps=1e-8):
        inv_a = 1.0 / np.sqrt(np.sum(a * a, axis=1) + eps)
        inv_b = 1.0 / np.sqrt(np.sum(b * b, axis=1) + eps)
        if loop:  # one pair at a time: slow but right
            cos = np.array([[a[i] @ b[j] * inv_a[i] * inv_b[j] for j in range(len(b))] for i in range(len(a))])
        else:
            cos = (a * inv_a[:, None]) @ (b * inv_b[:, None]).T
        positive = targets > 0
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        w_pos, w_neg = 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1)
        if one_kind_rule and not (n_pos and n_neg):
            w_pos, w_neg = 2 * w_pos, 2 * w_neg
        if weighting == "mean":
            w_pos = w_neg = 1.0 / cos.size
        elif weighting == "swapped":
            w_pos, w_neg = w_neg, w_pos
        weights = np.where(positive, w_pos, w_neg)
        value = float(np.sum(weights * np.where(positive, 1.0 - cos, np.maximum(cos - margin, 0.0))))
        active = (cos > margin).astype(float) if hinge_mask else np.ones_like(cos)
        g = weights * np.where(positive, -1.0, active)
        g_scaled = g * inv_a[:, None] * inv_b[None, :]
        gt, gt_scaled = (g.T, g_scaled.T) if transpose_g else (g, g_scaled)
        d_a = g_scaled @ b - projection * ((g * cos).sum(axis=axes[0]) * inv_a ** 2)[:, None] * a
        d_b = gt_scaled @ a - projection * ((gt * (cos.T if transpose_g else cos)).sum(axis=1 if axes[1] == 0 else 0)
                                            * inv_b ** 2)[:, None] * b
        if dtype is not None:
            d_a, d_b = d_a.astype(dtype), d_b.astype(dtype)
        return value, (d_a, d_b)

    return cosine_matrix_loss


cosine_matrix_loss = make_cosine_matrix()


def cosine_matrix_normalises_in_place(a, b, targets, margin, eps=1e-8):
    value, grads = cosine_matrix_loss(a.copy(), b, targets, margin, eps)
    a /= np.sqrt(np.sum(a * a, axis=1, keepdims=True) + eps)  # the caller's latents normalised
    return value, grads


def cosine_matrix_library(a, b, targets, margin, eps=1e-8):
    return ops.cosine_embedding_matrix(a, b, targets, margin, eps=eps, balanced=True)


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson04.check_cosine_matrix, make_cosine_matrix(weighting="mean"), "slip", ["`value`", "plain mean"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(weighting="swapped"), "slip", ["two weights swapped"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(one_kind_rule=False), "slip",
     ["one class only", "one kind of pair only"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(hinge_mask=False), "slip", ["`d_a`", "hinge's 0 forgotten"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(projection=False), "slip", ["`d_a`", "is missing"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(axes=(0, 1)), "slip", ["wrong axis"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(transpose_g=False), "slip",
     ["right: `value`, `d_a`", "`d_b`", "instead of its transpose"]),
    (lesson04.check_cosine_matrix, cosine_matrix_normalises_in_place, "in place", ["in place", "`a`"]),
    (lesson04.check_cosine_matrix, cosine_matrix_library, "library", ["cosine_embedding_matrix"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(dtype=np.float32), "float32", ["float32"]),
    (lesson04.check_cosine_matrix, make_cosine_matrix(loop=True), "a loop (passes)", []),
    (lesson04.check_cosine_matrix, lambda *args: list(cosine_matrix_loss(*args)), "a list (passes)", []),
    (lesson04.check_cosine_embedding, lambda *args: [cosine_embedding_loss(*args)[0],
                                                     list(cosine_embedding_loss(*args)[1])], "a list (passes)", []),
    (lesson04.check_make_pairs_balanced, lambda y, rng: list(make_pairs_balanced(y, rng)), "a list (passes)", []),
    (lesson04.check_local_step, lambda *args: list(local_step(*args)), "a list (passes)", []),
    (lesson04.check_cosine_embedding, cosine_without_projection, "slip", ["`d_a`", "is missing"]),
    (lesson04.check_cosine_embedding, cosine_hinge_on_wrong_side, "slip", ["roles swapped"]),
    (lesson04.check_cosine_embedding, cosine_sum_not_mean, "slip", ["N times"]),
    (lesson04.check_cosine_embedding, cosine_gradient_sign_flipped, "slip", ["`d_a`", "sign flipped"]),
    (lesson04.check_cosine_embedding, cosine_without_eps, "edge case", ["zero vector", "NaN"]),
    (lesson04.check_cosine_embedding, cosine_in_place, "in place", ["in place", "`a`"]),
    (lesson04.check_cosine_embedding, lambda a, b, t, margin=0.0: ops.cosine_embedding(a, b, t, margin), "library",
     ["ops.cosine_embedding"]),
    (lesson04.check_cosine_embedding, cosine_float32, "float32", ["float32"]),
    (lesson04.check_make_pairs_balanced, pairs_random, "slip", ["about 1/2"]),
    (lesson04.check_make_pairs_balanced, pairs_wrong_targets, "slip", ["targets are wrong"]),
    (lesson04.check_make_pairs_balanced, pairs_first_of_group, "slip", ["distinct partners"]),
    (lesson04.check_make_pairs_balanced, pairs_uniform_over_classes_without_guard, "slip", ["FAIL"]),
    (lesson04.check_make_pairs_balanced, pairs_global_random, "edge case", ["only `rng`"]),
    (lesson04.check_make_pairs_balanced, pairs_own_generator, "edge case", ["seeded inside"]),
    (lesson04.check_make_pairs_balanced, pairs_sorts_labels, "in place", ["in place", "`labels`"]),
    (lesson04.check_make_pairs_balanced, lambda y, rng: iffcl.make_pairs(y, "balanced", rng), "library",
     ["iffcl.make_pairs"]),
    (lesson04.check_make_pairs_balanced, pairs_float32, "float32", ["`target` has dtype float32"]),
    (lesson04.check_local_step, step_without_lambda, "slip", ["lambda forgotten"]),
    (lesson04.check_local_step, step_twins_swapped, "slip", ["gradient of the wrong twin"]),
    (lesson04.check_local_step, step_wrong_noise, "slip", ["noise of the wrong twin"]),
    (lesson04.check_local_step, step_targets_flipped, "slip", ["targets flipped"]),
    (lesson04.check_local_step, step_cosine_as_upstream_gradient, "slip", ["passed as dout"]),
    (lesson04.check_local_step, lambda *a: local_step(*a)[::-1], "slip", ["twins' gradients swapped"]),
    (lesson04.check_local_step, step_that_updates, "in place", ["parameters of layer_a changed"]),
    (lesson04.check_local_step, step_moves_inputs, "in place", ["in place", "`x_b`"]),
    (lesson04.check_local_step, step_library, "library", ["iffcl.vae_local_step"]),
    (lesson04.check_local_step, lambda *a: local_step(*a, cosine=lambda z_a, z_b, t, m: ops.cosine_embedding(
        z_a, z_b, t, m)), "library", ["ops.cosine_embedding"]),
    (lesson04.check_local_step, step_float32, "float32", ["float32"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(PLANTED)


test_checker_passes_a_correct_answer_and_reports_a_stub = answer_test(
    [(lesson04.check_cosine_embedding, cosine_embedding_loss),
     (lesson04.check_make_pairs_balanced, make_pairs_balanced), (lesson04.check_local_step, local_step),
     (lesson04.check_cosine_matrix, cosine_matrix_loss)])


def test_cosine_matrix_reference_is_the_library_and_each_slip_differs():
    rng = np.random.default_rng(0)
    for a, b, targets, margin in lesson04._matrix_cases(rng):
        want = ops.cosine_embedding_matrix(a, b, targets, margin, balanced=True)
        got = lesson04.reference_cosine_matrix(a, b, targets, margin)
        assert got[0] == want[0] and all(np.array_equal(g, w) for g, w in zip(got[1], want[1]))
    for slip in lesson04._MATRIX_SLIPS:
        cases = list(lesson04._matrix_cases(np.random.default_rng(0)))
        assert any(not np.allclose(lesson04.reference_cosine_matrix(*case, slip=slip)[1][1],
                                   ops.cosine_embedding_matrix(*case, balanced=True)[1][1])
                   or not np.isclose(lesson04.reference_cosine_matrix(*case, slip=slip)[0],
                                     ops.cosine_embedding_matrix(*case, balanced=True)[0])
                   or not np.allclose(lesson04.reference_cosine_matrix(*case, slip=slip)[1][0],
                                      ops.cosine_embedding_matrix(*case, balanced=True)[1][0]) for case in cases), slip


def test_local_step_problem_noise_is_the_reference_noise():
    p = lesson04.local_step_problem(0)
    step = iffcl.vae_local_step(p["layer_a"], p["layer_b"], p["x_a"], p["x_b"], p["target"],
                                np.random.default_rng(p["noise_seed"]), IFFCLSettings(contrast="partner"))
    _, cache_a = p["layer_a"].forward(p["x_a"], eps=p["eps_a"])
    np.testing.assert_array_equal(step.out_a, cache_a["out"])


# ---------------------------------------------------------------- the lesson's demonstrations
def _prototype_data(n=600, d=16, n_classes=3, seed=0):
    """Three classes, each a noisy copy of its own random prototype in [0, 1]^d (no dataset to load)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, d))
    y = rng.integers(0, n_classes, n)
    return np.clip(prototypes[y] + 0.15 * rng.standard_normal((n, d)), 0, 1), y


def test_ff_layer_separates_positive_from_negative_and_classifies():
    x, y = _prototype_data()
    layer, history = lesson04.train_ff_layer(x[:500], y[:500], 3, width=32, epochs=10)
    assert history[-1]["goodness_pos"] > history[-1]["goodness_neg"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert np.mean(lesson04.ff_predict(layer, x[500:], 3) == y[500:]) > 0.8
    np.testing.assert_allclose(lesson04.ff_goodness(np.array([[1.0, 2.0], [0.0, 3.0]])), [5.0, 9.0])
    with pytest.raises(ValueError, match="labels"):
        lesson04.ff_label_inputs(np.zeros((2, 3)), np.array([0, 10]), 10)


def test_locality_helper_iffcl_unchanged_backprop_changed():
    x, y = _prototype_data(n=16, d=12, n_classes=4)
    for method, expect_same in (("iffcl", True), ("backprop", False)):
        plain = lesson04.layer_update_after_one_step(method, 0, False, x, y, encoder_hidden=8, widths=(8, 8))
        shifted = lesson04.layer_update_after_one_step(method, 0, True, x, y, encoder_hidden=8, widths=(8, 8))
        assert any(np.abs(v).max() > 0 for v in plain.values())
        assert all(np.array_equal(plain[k], shifted[k]) for k in plain) == expect_same, method
    with pytest.raises(ValueError, match="k:"):
        lesson04.layer_update_after_one_step("iffcl", 3, False, x, y, widths=(8, 8))
