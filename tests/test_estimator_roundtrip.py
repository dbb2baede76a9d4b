"""VAELayerClassifier: seeds map one-to-one onto models, and every label type it accepts survives save / load.

Written as a user would break it: two seeds that a modulo would fold together, datetime and timedelta labels,
strings that differ by a trailing NUL, pandas categoricals and strings, integers beyond 64 bits; and a model
whose labels could not be read back is refused by ``save`` before anything is written.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaelayer_np import VAELayerClassifier

try:
    import pandas as pd
except ImportError:  # the pandas cases are skipped; the NumPy dtypes are tested alone below
    pd = None
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.tables import SEED_LIMIT
from vaelayer_np.run.trainer import Trainer

TINY = dict(epochs=1, batch_size=8, widths=(2,), encoder_hidden=0, path="readable", dtype="float64")
X = np.random.default_rng(0).standard_normal((16, 3))
BASE = np.arange(16) % 2


def _fit(y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VAELayerClassifier(**{**TINY, "random_state": 0, **params}).fit(X, y)


# ------------------------------------------------------------------------------------------------ seeds
def _params(clf):
    return clf.trainer_.state_dict()


@pytest.mark.parametrize("a, b", [(0, 2 ** 31 - 1), (5, 5 + 2 ** 31 - 1), (2 ** 31, 1), (SEED_LIMIT - 1, 2 ** 31)])
def test_seeds_a_modulo_would_fold_together_give_different_models(a, b):
    fa, fb = _fit(BASE, random_state=a), _fit(BASE, random_state=b)
    assert fa.trainer_.config.seed == a and fb.trainer_.config.seed == b
    sa, sb = _params(fa), _params(fb)
    assert any(not np.array_equal(sa[k], sb[k]) for k in sa if sa[k].dtype.kind == "f"), (a, b)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, SEED_LIMIT - 1), st.integers(0, SEED_LIMIT - 1))
def test_distinct_seeds_give_distinct_generator_states_and_initial_weights(a, b):
    assume(a != b)
    ta = Trainer(TrainConfig(dataset="arrays", seed=a, widths=(2,), encoder_hidden=0, path="readable"), 3, 2)
    tb = Trainer(TrainConfig(dataset="arrays", seed=b, widths=(2,), encoder_hidden=0, path="readable"), 3, 2)
    assert ta.rng.bit_generator.state != tb.rng.bit_generator.state
    wa, wb = ta.net_a.state_dict(prefix=""), tb.net_a.state_dict(prefix="")
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, SEED_LIMIT - 1))
def test_the_estimator_trains_with_the_seed_it_was_given(seed):
    assert _fit(BASE, random_state=seed).trainer_.config.seed == seed


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, 2 ** 64, 1.5, "3", True])
def test_a_seed_out_of_range_is_refused_naming_random_state(seed):
    with pytest.raises(ValueError, match="^random_state: expected None, an integer in 0..4294967295"):
        _fit(BASE, random_state=seed)


# ------------------------------------------------------------------------------------------------ labels
def _same_labels(a, b):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert [type(v) for v in a.tolist()] == [type(v) for v in b.tolist()]
    assert a.tolist() == b.tolist()


def _round_trip(clf, tmp_path):
    again = VAELayerClassifier.load(clf.save(tmp_path / "model.npz"))
    _same_labels(clf.classes_, again.classes_)
    return again


def _numpy_and_pandas_labels():
    two = lambda a, b, dtype=None: np.array([a, b], dtype=dtype)[BASE]  # noqa: E731
    cases = {f"int {t}": two(3, 7, t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                                  "uint64")}
    cases.update({
        "uint64 beyond int64": two(2 ** 63, 2 ** 64 - 1, np.uint64), "bool": BASE.astype(bool),
        "float32": two(1.0, 2.0, np.float32), "float64 integer-valued": two(-1.0, 3.0),
        "str": two("red", "green"), "str with internal NUL": two("a\x00b", "a"),
        "object str with trailing NUL": two("a", "a\x00", object),
        "object str differing by NULs": two("a\x00\x00", "a\x00", object),
        "object str and numpy str": np.array(["a", np.str_("b")], dtype=object)[BASE],
        "object integers beyond 64 bits": two(1, 2 ** 70, object),
        **{f"datetime64[{u}]": two("2020-01-01", "2021-06-30", f"M8[{u}]") for u in ("D", "s", "ms", "us", "ns")},
        **{f"timedelta64[{u}]": two(1, 2, f"m8[{u}]") for u in ("D", "h", "s", "ns")},
    })
    if pd is None:
        return cases
    cases.update({
        "pandas Categorical of str": pd.Categorical(two("x", "y")),
        "pandas Categorical of int": pd.Series(pd.Categorical(two(5, 6))),
        "pandas string": pd.Series(two("a", "b"), dtype="string"),
        "pandas object str": pd.Series(two("a", "b"), dtype=object),
        "pandas Int64": pd.Series(BASE, dtype="Int64"),
        "pandas Timestamp": pd.Series(pd.to_datetime(two("2020-01-01", "2021-01-01"))),
        "pandas Timedelta": pd.Series(pd.to_timedelta(two(1, 2), unit="h")),
    })
    return cases


@pytest.mark.parametrize("name", list(_numpy_and_pandas_labels()))
def test_every_label_type_fit_accepts_survives_save_and_load(tmp_path, name):
    y = _numpy_and_pandas_labels()[name]
    clf = _fit(y)
    again = _round_trip(clf, tmp_path)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    _same_labels(clf.predict(X), again.predict(X))
    assert again.score(X, y) == clf.score(X, y) > 0.0  # the labels still match the user's (not strings of them)


def test_labels_without_pandas_too(tmp_path):  # the NumPy dtypes alone, where pandas is not installed
    for y in (np.array(["2020-01-01", "2021-01-01"], dtype="M8[D]")[BASE], np.array([1, 2], dtype="m8[s]")[BASE],
              np.array(["a", "a\x00"], dtype=object)[BASE]):
        clf = _fit(y)
        again = _round_trip(clf, tmp_path)
        assert again.score(X, y) == clf.score(X, y) > 0.0


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
_label_arrays = st.one_of(
    hnp.arrays(hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | st.just(np.dtype(bool)), 6),
    hnp.arrays(hnp.floating_dtypes(sizes=(32, 64)), 6, elements=st.floats(-1e6, 1e6, width=32)),
    hnp.arrays(hnp.datetime64_dtypes(), 6), hnp.arrays(hnp.timedelta64_dtypes(), 6),
    hnp.arrays(hnp.unicode_string_dtypes(max_len=5), 6),
    st.lists(_text.map(lambda s: s + "\x00" * (len(s) % 3)), min_size=2, max_size=6).map(
        lambda v: np.array(v + [None], dtype=object)[:-1]),
    st.lists(st.integers(-2 ** 80, 2 ** 80), min_size=2, max_size=6).map(
        lambda v: np.array(v + [None], dtype=object)[:-1]),
)


@pytest.fixture(scope="module")
def fitted():
    return _fit(BASE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=_label_arrays)
def test_any_classes_fit_could_hold_come_back_unchanged_or_are_refused_by_save(fitted, tmp_path, labels):
    """``classes_`` as fit builds it (np.unique of the labels) from generated arrays: saved and loaded unchanged,
    or refused by ``save`` (naming the labels) when ``load`` would refuse them, with nothing written."""
    classes = np.unique(labels) if labels.dtype != object else np.array(sorted(set(labels.tolist())) + [None],
                                                                          dtype=object)[:-1]
    assume(len(classes) >= 2)
    classes = classes[:2]  # the fitted model has two classes: the labels are the only change
    clf = VAELayerClassifier(**{**TINY, "random_state": 0})
    clf.__setstate__({**fitted.__getstate__(), "classes_": classes})
    path = tmp_path / "model.npz"
    path.unlink(missing_ok=True)
    bad = (classes.dtype.kind == "f" and not np.isfinite(classes).all()) or (
        classes.dtype.kind in "Mm" and np.isnat(classes).any())
    if bad:
        with pytest.raises(ValueError, match="cannot save"):
            clf.save(path)
        assert not path.exists()
        return
    again = VAELayerClassifier.load(clf.save(path))
    _same_labels(classes, again.classes_)


def test_save_refuses_labels_load_would_refuse_and_writes_nothing(fitted, tmp_path):
    path = tmp_path / "model.npz"
    for classes, message in ((np.array(["a", "b", "c"]), "would not load.*output"),
                             (np.array([b"a", b"b"]), "labels of dtype |S1 cannot be saved"),
                             (np.array([1.5, np.nan]), "would not load.*NaN or inf"),
                             (np.array(["b", "a"]), "would not load.*distinct labels in sorted order"),
                             (np.array([object(), object()], dtype=object), "cannot be saved")):
        clf = VAELayerClassifier(**TINY)
        clf.__setstate__({**fitted.__getstate__(), "classes_": classes})
        with pytest.raises(ValueError, match=message):
            clf.save(path)
        assert not path.exists()


def test_nat_labels_are_named_by_fit():
    y = np.array(["2020-01-01", "NaT"], dtype="M8[D]")[BASE]
    with pytest.raises(ValueError, match="y: the label of row 1 is NaT"):
        _fit(y)


@pytest.mark.parametrize("params", [dict(widths=np.array([4])), dict(widths=[np.int64(4)]),
                                    dict(encoder_hidden=np.int64(2)), dict(random_state=np.uint32(7))])
def test_parameters_given_as_numpy_values_are_saved(tmp_path, params):
    clf = _fit(BASE, **{**params, "widths": params.get("widths", (2,))})
    again = VAELayerClassifier.load(clf.save(tmp_path / "m.npz"))
    for key, value in params.items():
        assert np.asarray(again.get_params()[key]).tolist() == np.asarray(value).tolist()
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_a_parameter_changed_after_fit_that_load_would_refuse_is_refused_by_save(tmp_path):
    clf = _fit(BASE)
    clf.lr = float("nan")
    with pytest.raises(ValueError, match=r"cannot save: the file would not load .*lr: expected a finite number"):
        clf.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
