"""Lesson 05 checkers (vaelayer_np.course.lesson05): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.analysis import diagnostics
from vaelayer_np.core.backprop import loss_and_grads
from vaelayer_np.course import lesson05

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
]


# A variance computed in float32 still gives the right booleans ("float32 (passes)"). backprop_epoch trains a
# float32 network by design and returns one loss: no float32 case; one epoch is enough to diagnose it.
(test_checker_diagnoses_a_planted_wrong_answer,
 test_every_checker_has_four_planted_wrong_answers_of_the_required_kinds) = planted_tests(
    PLANTED, call=lambda check, bug: check(bug, epochs=1) if check is lesson05.check_backprop_epoch else check(bug),
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
