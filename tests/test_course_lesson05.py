"""Lesson 05 checkers (vaelayer_np.course.lesson05): pass on a correct answer, fail on a stub and on planted bugs."""
import numpy as np
import pytest

from vaelayer_np.analysis import diagnostics
from vaelayer_np.core.backprop import loss_and_grads
from vaelayer_np.course import lesson05


def stub(*args, **kwargs):
    raise NotImplementedError()


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


# ---------------------------------------------------------------- tests
def test_fast_checkers_pass_on_correct_answers():
    assert lesson05.check_kl_per_unit(kl_per_unit).passed
    assert lesson05.check_kl_per_unit(diagnostics.kl_per_unit).passed
    assert lesson05.check_active_units(active_units).passed
    assert lesson05.check_active_units(diagnostics.active_units).passed


@pytest.mark.parametrize("checker", [lesson05.check_kl_per_unit, lesson05.check_active_units])
def test_fast_checkers_report_a_stub(checker):
    result = checker(stub)
    assert not result.passed and "not implemented" in str(result) and str(result).startswith("FAIL")


@pytest.mark.parametrize("checker, bug", [
    (lesson05.check_kl_per_unit, kl_per_unit_summed_over_data),
    (lesson05.check_kl_per_unit, kl_per_unit_variance_for_log_variance),
    (lesson05.check_active_units, active_units_std),
    (lesson05.check_active_units, active_units_mean_size),
])
def test_fast_checkers_catch_planted_bugs(checker, bug):
    result = checker(bug)
    assert not result.passed and "measured" in str(result), str(result)


def test_active_units_checker_asks_for_booleans():
    result = lesson05.check_active_units(lambda mu, t: (np.var(mu, axis=0) > t).astype(float))
    assert not result.passed and "boolean" in str(result)


def test_backprop_epoch_checker_stub():
    result = lesson05.check_backprop_epoch(stub, epochs=1)
    assert not result.passed and "not implemented" in str(result)


@pytest.mark.slow
def test_backprop_epoch_checker_passes_on_the_solution_and_catches_bugs():
    assert lesson05.check_backprop_epoch(lesson05.reference_backprop_epoch).passed
    for bug in (backprop_epoch_labels_not_shuffled, backprop_epoch_without_steps):
        result = lesson05.check_backprop_epoch(bug)
        assert not result.passed and result.figure < 0.5, str(result)
