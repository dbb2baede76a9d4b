"""Argument checks by class: values that fail to parse, and comparisons that must fail closed on NaN and inf.

NumPy and Python make some invalid values look valid: ``np.dtype(None)`` is float64 and NumPy compares a
dtype equal to None; NaN compares False both ways; ``bool`` is an ``int``; ``float("3")`` parses a string;
a 0-d array passes ``float()``. Every check of a single value goes through ``core._validate``, which
handles these once; these tests feed every check the values that fail to parse, not only wrong values.
"""
import inspect
import math
import pkgutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import vaelayer_np
from vaelayer_np.core import _validate as V
from vaelayer_np.core.gradcheck import check_layer, verdict
from vaelayer_np.core.layers import Activation, Dense, OutputLayer, VAELayer
from vaelayer_np.fast import machine
from vaelayer_np.run.config import TrainConfig

UNPARSEABLE_DTYPES = ["abc", None, True, False, 1, 0, "f2", "int64", "U3", object, [("a", "f4")], "", b"abc"]
GOOD_DTYPES = [np.float32, np.float64, "float32", "float64", "f4", "f8", np.dtype("float32"), float]


def _dtype_takers():
    """Every public class and function of the package (the course excepted) with a ``dtype`` parameter."""
    found = {}
    for info in pkgutil.walk_packages(vaelayer_np.__path__, "vaelayer_np."):
        if ".course" in info.name or info.name.endswith("__main__") or "._" in info.name:
            continue
        module = __import__(info.name, fromlist=["_"])
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            if "dtype" in params:
                found[f"{info.name}.{name}"] = obj
    return found


# How to call each of them with a given dtype (everything else valid). A new public callable with a dtype
# parameter fails test_every_dtype_taker_is_listed until it is added here.
def _losses_one_hot(dtype):
    from vaelayer_np.core.losses import one_hot
    return one_hot(np.array([0, 1]), 3, dtype=dtype)


def _ops_pair_weights(dtype):
    from vaelayer_np.core.ops import cosine_pair_weights
    return cosine_pair_weights(np.array([[True, False]]), True, dtype)


def _dropout_mask(dtype):
    from vaelayer_np.core.layers import dropout_mask
    return dropout_mask((2, 3), 0.5, 0, dtype=dtype)


def _network(dtype):
    from vaelayer_np.core.network import Network
    return Network(5, (4, 3), 2, dtype=dtype)


def _local_net(dtype):
    from vaelayer_np.core import localnet
    cls = [c for n, c in vars(localnet).items() if inspect.isclass(c) and "dtype" in inspect.signature(c).parameters
           and "widths" in inspect.signature(c).parameters][0]
    return cls(5, (4, 3), 2, dtype=dtype)


def _local_block(dtype):
    from vaelayer_np.core.localnet import LocalBlock
    return LocalBlock(5, 4, dtype=dtype)


def _estimator(dtype):
    from vaelayer_np.run.estimator import VAELayerClassifier
    X, y = np.random.default_rng(0).random((20, 4)), np.arange(20) % 2
    return VAELayerClassifier(dtype=dtype, epochs=1, widths=(3,), n_threads=1).fit(X, y)


def _train_config(dtype):
    return TrainConfig(dataset="digits", dtype=dtype).validate()


CALLS = {
    "vaelayer_np.core.layers.Dense": lambda dt: Dense(4, 3, dtype=dt),
    "vaelayer_np.core.layers.Activation": lambda dt: Activation("relu", dtype=dt),
    "vaelayer_np.core.layers.VAELayer": lambda dt: VAELayer(8, 4, dtype=dt),
    "vaelayer_np.core.layers.OutputLayer": lambda dt: OutputLayer(4, 3, dtype=dt),
    "vaelayer_np.core.layers.dropout_mask": _dropout_mask,
    "vaelayer_np.core.layers.Dropout": lambda dt: __import__("vaelayer_np.core.layers", fromlist=["_"]).Dropout(
        dtype=dt),
    "vaelayer_np.core.network.Network": _network,
    "vaelayer_np.core.losses.one_hot": _losses_one_hot,
    "vaelayer_np.core.ops.cosine_pair_weights": _ops_pair_weights,
    "vaelayer_np.core.localnet.LocalBlock": _local_block,
    "vaelayer_np.core.localnet.LocalNetwork": _local_net,
    "vaelayer_np.run.estimator.VAELayerClassifier": _estimator,
    "vaelayer_np.run.config.TrainConfig": _train_config,
}
# Callables whose dtype is not a float choice of the user's (e.g. a generator's draw): not checked here.
NOT_A_SETTING = {"vaelayer_np.fast.pipeline.DrawnNoise"}


def test_every_dtype_taker_is_listed():
    found = set(_dtype_takers()) - NOT_A_SETTING
    missing = sorted(found - set(CALLS))
    assert not missing, f"public callables with a dtype parameter and no entry in CALLS: {missing}"


@pytest.mark.parametrize("bad", UNPARSEABLE_DTYPES, ids=repr)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_unparseable_dtype_is_an_error_that_names_dtype(name, bad):
    if name not in _dtype_takers():
        pytest.skip(f"{name} does not exist in this version")
    with pytest.raises(ValueError, match="dtype"):
        CALLS[name](bad)


@pytest.mark.parametrize("good", GOOD_DTYPES, ids=repr)
def test_float_dtypes_given_any_way_are_accepted(good):
    assert VAELayer(8, 4, dtype=good).dtype == np.dtype(good)
    assert TrainConfig(dataset="digits", dtype=good).validate().dtype == np.dtype(good).name


# ----------------------------------------------------------------------------- single values
NOT_NUMBERS = [None, True, False, np.True_, "3", "nan", b"1", [1.0], (1,), {}, np.array([1.0]), object(), 1j]
NON_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf"), np.array(np.nan)]


@pytest.mark.parametrize("value", NOT_NUMBERS + NON_FINITE, ids=repr)
def test_check_number_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match="^lam: expected"):
        V.check_number("lam", value)


@pytest.mark.parametrize("value", NOT_NUMBERS + [1.5, np.float64(2.0), math.nan, "2"], ids=repr)
def test_check_int_refuses_what_is_not_an_integer(value):
    with pytest.raises(ValueError, match="^epochs: expected"):
        V.check_int("epochs", value, minimum=1)


@given(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True)))
def test_numbers_given_as_numpy_scalars_or_0d_arrays_are_the_numbers_they_hold(value):
    for form in (value, np.float64(value), np.array(float(value))) if isinstance(value, float) else \
            (value, np.int64(value), np.array(value)):
        if isinstance(value, float) and not math.isfinite(value):
            with pytest.raises(ValueError, match="finite"):
                V.check_number("x", form)
            continue
        got = V.check_number("x", form)
        assert type(got) is float and got == float(value)
        if isinstance(value, int):
            got_int = V.check_int("n", form)
            assert type(got_int) is int and got_int == value


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1e6))
def test_a_bound_fails_closed(figure, bound):
    fails = V.fails_bound(figure, bound)
    assert fails == (not (math.isfinite(figure) and figure <= bound))
    assert V.fails_bound(np.array([0.0, figure]), bound)  # an array is not a figure: fails, never compared


def test_check_choice_never_compares_element_wise_or_across_types():
    choices = ("mirror", "balanced")
    for bad in (np.array(["mirror"]), ["mirror"], None, 0, True, b"mirror", float("nan")):
        with pytest.raises(ValueError, match="pairing: unknown option"):
            V.check_choice("pairing", bad, choices)
    assert V.check_choice("pairing", np.str_("mirror"), choices) == "mirror"  # NumPy's strings are strings
    with pytest.raises(ValueError, match="unknown option"):
        V.check_choice("kind", True, (1, 2))  # a bool is not the integer 1


@pytest.mark.parametrize("bad", [True, np.True_, 0, -1, 1.0, "2", np.array([2]), math.nan])
def test_check_threads_refuses_what_is_not_a_thread_count(bad):
    with pytest.raises(ValueError, match="threads"):
        machine.check_threads(bad)


FIELDS = {  # TrainConfig's number fields: (name, a valid value)
    "lr": 1e-3, "beta": 1e-3, "lam": 10.0, "margin": 0.0, "weight_decay": 0.0, "head_weight": 0.0,
    "log_var_bias_init": -4.0, "val_fraction": 0.1, "epochs": 2, "batch_size": 32, "seed": 3, "encoder_hidden": 0,
    "beta_warmup_epochs": 2,
}


@pytest.mark.parametrize("bad", NOT_NUMBERS + NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_train_config_names_the_field_of_a_value_that_is_not_a_number(field, bad):
    if bad is None and field in ("epochs", "batch_size"):
        pytest.skip("None: the dataset's default")
    with pytest.raises(ValueError, match=f"^{field}: "):
        TrainConfig(dataset="digits", **{field: bad}).validate()


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_train_config_takes_numpy_scalars_and_stores_python_numbers(field):
    good = FIELDS[field]
    for form in (np.asarray(good)[()], np.array(good)):
        config = TrainConfig(dataset="digits", **{field: form}).validate()
        value = getattr(config, field)
        assert type(value) is type(good) and value == good


# ----------------------------------------------------------------------------- the gradient check's pass rule
@pytest.mark.parametrize("error, resolution", [(math.nan, 0.0), (math.inf, 0.0), (0.0, math.nan), (1e-12, math.inf)])
def test_the_pass_rule_fails_on_nan_and_inf(error, resolution):
    assert verdict(error, resolution) == "FAIL"


def test_a_nan_in_one_element_of_a_gradient_is_a_fail():
    rng = np.random.default_rng(0)

    class NanDense(Dense):
        def backward(self, dout, cache, need_dx=True):
            dx, grads = super().backward(dout, cache, need_dx)
            grads["b"] = grads["b"].copy()
            grads["b"][0] = np.nan
            return dx, grads

    results = {r.tensor: r for r in check_layer(NanDense(4, 3, rng=rng), rng.standard_normal((5, 4)), rng)}
    assert not results["b"].passed and results["b"].status == "FAIL"
    assert results["W"].passed
