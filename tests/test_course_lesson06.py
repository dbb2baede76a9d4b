"""Lesson 06 checkers (vaelayer_np.course.lesson06): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.analysis import generation
from vaelayer_np.analysis.diagnostics import encode_layers
from vaelayer_np.core.activations import sigmoid
from vaelayer_np.course import lesson06

from .course_helpers import assert_passes, assert_reports_stub, planted_tests, stub


# ---------------------------------------------------------------- correct answers (the notebook's solutions)
def decode_to_input(net, k, z):
    h = z
    for j in range(k, -1, -1):
        h = net.vae_layers[j].decode(h)
    if net.vae_layers[0].recon == "bce":
        h = sigmoid(h)
    return h


def sample_aggregate(mu, log_var, n, seed):
    mean = mu.mean(axis=0)
    std = np.sqrt(mu.var(axis=0) + np.exp(log_var).mean(axis=0))
    eps = np.random.default_rng(seed).standard_normal((n, mu.shape[1]))
    return mean + std * eps


def traverse(net, k, x_point, unit, values):
    mu = encode_layers(net, x_point.reshape(1, -1))[k][0]
    z = np.repeat(mu, len(values), axis=0)
    z[:, unit] = values
    return decode_to_input(net, k, z)


# ---------------------------------------------------------------- planted bugs
def decode_to_input_skips_first_decoder(net, k, z):
    h = z if k == 0 else z
    for j in range(k, 0, -1):
        h = net.vae_layers[j].decode(h)
    return net.vae_layers[0].decode(h) if k == 0 else h


def decode_to_input_forgets_sigmoid(net, k, z):
    h = z
    for j in range(k, -1, -1):
        h = net.vae_layers[j].decode(h)
    return h


def decode_to_input_applies_activation_between(net, k, z):
    h = z
    for j in range(k, -1, -1):
        h = net.vae_layers[j].decode(h)
        if j > 0:
            h = np.maximum(h, 0)  # not what the library does (nor what the decoders were trained on)
    return sigmoid(h) if net.vae_layers[0].recon == "bce" else h


def sample_aggregate_means_only(mu, log_var, n, seed):
    eps = np.random.default_rng(seed).standard_normal((n, mu.shape[1]))
    return mu.mean(axis=0) + mu.std(axis=0) * eps


def sample_aggregate_log_var_as_variance(mu, log_var, n, seed):
    eps = np.random.default_rng(seed).standard_normal((n, mu.shape[1]))
    return mu.mean(axis=0) + np.sqrt(np.abs(mu.var(axis=0) + log_var.mean(axis=0))) * eps


def traverse_adds_to_the_mean(net, k, x_point, unit, values):
    mu = encode_layers(net, x_point.reshape(1, -1))[k][0]
    z = np.repeat(mu, len(values), axis=0)
    z[:, unit] += values
    return decode_to_input(net, k, z)


def decode_in_place(net, k, z):
    z *= 1.0
    z[:, 0] = 0.0  # the caller's latents changed
    return decode_to_input(net, k, z)


def sample_in_place(mu, log_var, n, seed):
    mu -= mu.mean(axis=0)  # the caller's means centred
    return sample_aggregate(mu, log_var, n, seed) + 0.0


def traverse_in_place(net, k, x_point, unit, values):
    x_point *= 2.0  # the caller's image changed
    return traverse(net, k, x_point / 2.0, unit, values)


def sample_aggregate_global_generator(mu, log_var, n, seed):
    std = np.sqrt(mu.var(axis=0) + np.exp(log_var).mean(axis=0))
    return mu.mean(axis=0) + std * np.random.standard_normal((n, mu.shape[1]))  # the global generator  # noqa: NPY002


def sample_aggregate_unseeded(mu, log_var, n, seed):
    std = np.sqrt(mu.var(axis=0) + np.exp(log_var).mean(axis=0))
    return mu.mean(axis=0) + std * np.random.default_rng().standard_normal((n, mu.shape[1]))  # the seed unused


def sample_aggregate_exp_of_mean(mu, log_var, n, seed):
    std = np.sqrt(mu.var(axis=0) + np.exp(log_var.mean(axis=0)))
    return mu.mean(axis=0) + std * np.random.default_rng(seed).standard_normal((n, mu.shape[1]))


def sample_aggregate_ddof1(mu, log_var, n, seed):
    std = np.sqrt(mu.var(axis=0, ddof=1) + np.exp(log_var).mean(axis=0))
    return mu.mean(axis=0) + std * np.random.default_rng(seed).standard_normal((n, mu.shape[1]))


def traverse_off_by_one(net, k, x_point, unit, values):
    return traverse(net, k, x_point, unit + 1 if unit + 1 < net.widths[k] else unit, values)


def traverse_first_layer(net, k, x_point, unit, values):
    return traverse(net, 0, x_point, unit, values) if unit < net.widths[0] else traverse(net, k, x_point, 0, values)


def decode_gradient(net, k, z, target):
    image = decode_to_input(net, k, z)
    d = 2.0 * (image - target) / image.size
    if net.vae_layers[0].recon == "bce":
        d = d * image * (1.0 - image)
    for j in range(0, k + 1):
        d = d @ net.vae_layers[j].params["W_dec"].T
    return float(np.mean((image - target) ** 2)), d


def decode_gradient_mean_over_images(net, k, z, target):
    loss, d_z = decode_gradient(net, k, z, target)
    return loss, d_z * target.shape[1]


def decode_gradient_without_sigmoid(net, k, z, target):
    image = decode_to_input(net, k, z)
    d = 2.0 * (image - target) / image.size
    for j in range(0, k + 1):
        d = d @ net.vae_layers[j].params["W_dec"].T
    return float(np.mean((image - target) ** 2)), d


def decode_gradient_in_place(net, k, z, target):
    result = decode_gradient(net, k, z.copy(), target)
    target -= 0.0 * target + 1e-3  # the caller's target moved
    return result


def decode_gradient_library(net, k, z, target):
    from vaelayer_np.core import losses
    image = decode_to_input(net, k, z)
    loss, (d_image, _) = losses.mse(image, target)
    return loss, d_image


PLANTED = [  # (checker, wrong answer, kind, words the diagnosis must contain)
    (lesson06.check_decode_gradient, decode_gradient_mean_over_images, "slip", ["`d_z`", "mean over the M images"]),
    (lesson06.check_decode_gradient, decode_gradient_without_sigmoid, "slip", ["recon='bce'", "derivative forgotten"]),
    (lesson06.check_decode_gradient, lambda *a: (decode_gradient(*a)[0], -decode_gradient(*a)[1]), "slip",
     ["sign flipped"]),
    (lesson06.check_decode_gradient, decode_gradient_in_place, "in place", ["in place", "`target`"]),
    (lesson06.check_decode_gradient, decode_gradient_library, "library", ["losses.mse"]),
    (lesson06.check_decode_gradient, lambda *a: (decode_gradient(*a)[0], decode_gradient(*a)[1].astype(np.float32)),
     "float32", ["float32"]),
    (lesson06.check_decode_gradient, lambda *a: list(decode_gradient(*a)), "a list (passes)", []),
    (lesson06.check_sample_aggregate, sample_aggregate_global_generator, "process", ["global generator"]),
    (lesson06.check_sample_aggregate, sample_aggregate_unseeded, "process", ["same seed gave different samples"]),
    (lesson06.check_sample_aggregate, sample_aggregate_exp_of_mean, "slip", ["exp of the mean log-variance"]),
    (lesson06.check_sample_aggregate, sample_aggregate_ddof1, "slip", ["ddof=1"]),
    (lesson06.check_traverse, traverse_off_by_one, "slip", ["index off by one"]),
    (lesson06.check_traverse, traverse_first_layer, "slip", ["layer 0's means traversed whatever k"]),
    (lesson06.check_decode_to_input, decode_to_input_skips_first_decoder, "slip", ["`images` has shape"]),
    (lesson06.check_decode_to_input, decode_to_input_forgets_sigmoid, "slip", ["without the final sigmoid"]),
    (lesson06.check_decode_to_input, decode_to_input_applies_activation_between, "slip", ["ReLU between"]),
    (lesson06.check_decode_to_input, decode_in_place, "in place", ["in place", "`z`"]),
    (lesson06.check_decode_to_input, generation.decode_to_input, "library", ["generation.decode_to_input"]),
    (lesson06.check_decode_to_input, lambda net, k, z: decode_to_input(net, k, z).astype(np.float32), "float32",
     ["float32"]),
    (lesson06.check_sample_aggregate, sample_aggregate_means_only, "slip", ["noise variance left out"]),
    (lesson06.check_sample_aggregate, sample_aggregate_log_var_as_variance, "slip", ["log-variance used"]),
    (lesson06.check_sample_aggregate, lambda mu, lv, n, s: np.random.default_rng(s).standard_normal(
        (n, mu.shape[1])), "slip", ["prior"]),
    (lesson06.check_sample_aggregate, sample_in_place, "in place", ["in place", "`mu`"]),
    (lesson06.check_sample_aggregate, lesson06.reference_sample_aggregate, "library", ["library"]),
    (lesson06.check_sample_aggregate, lambda *a: sample_aggregate(*a).astype(np.float32), "float32", ["float32"]),
    (lesson06.check_traverse, traverse_adds_to_the_mean, "slip", ["added to the unit's mean"]),
    (lesson06.check_traverse, traverse_in_place, "in place", ["in place", "`x_point`"]),
    (lesson06.check_traverse, generation.traverse, "library", ["generation.traverse"]),
    (lesson06.check_traverse, lambda *a: traverse(*a).astype(np.float32), "float32", ["float32"]),
    (lesson06.check_traverse, lambda net, k, x, u, v: traverse(net, k, x, u, v)[::-1], "slip", ["wrong: `images`"]),
]


(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(PLANTED)


CHECKERS = [(lesson06.check_decode_to_input, decode_to_input),
            (lesson06.check_sample_aggregate, sample_aggregate),
            (lesson06.check_traverse, traverse)]


@pytest.mark.parametrize("checker, solution", CHECKERS)
def test_checkers_pass_on_correct_answers(checker, solution):
    assert_passes(checker(solution))


@pytest.mark.parametrize("checker", sorted({c for c, _ in CHECKERS}, key=lambda c: c.__name__))
def test_checkers_report_a_stub(checker):
    assert_reports_stub(checker(stub))


def test_decode_gradient_checker_passes_the_answer_and_reports_a_stub():
    assert_passes(lesson06.check_decode_gradient(decode_gradient), below=1e-9)
    assert_reports_stub(lesson06.check_decode_gradient(stub))
