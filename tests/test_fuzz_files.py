"""Fuzzing the files a user hands over: CSV and .npz tables and saved VAELayerClassifier models.

Hypothesis builds contents over value ranges (up to the ends of float64), label types and sizes
(integers beyond 64 bits, strings, bytes that are not UTF-8), line endings, separators, compression
and truncation. Whatever the bytes, a loader either returns a usable result (finite float32 features,
labels in range, the exact number of distinct labels) or raises a one-line ValueError naming the file;
never another exception.
"""
import csv
import io
import itertools
import warnings
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from vaelayer_np import VAELayerClassifier
from vaelayer_np.run.checkpoint import load_npz, save_npz_atomic
from vaelayer_np.run.tables import load_table

FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()

finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # the whole float64 range, subnormals included
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
    st.integers(min_value=-10, max_value=10).map(float),
)
labels = st.one_of(
    st.lists(st.integers(min_value=-(2 ** 80), max_value=2 ** 80), min_size=2, max_size=4, unique=True),
    st.lists(st.sampled_from([2 ** 53, 2 ** 53 + 1, 2 ** 63, 2 ** 63 + 1, 2 ** 64 + 1, 0, -1]), min_size=2,
             max_size=4, unique=True),
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                     min_size=1, max_size=8).map(str.strip).filter(bool), min_size=2, max_size=4, unique=True),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _fresh(folder, suffix):
    return folder / f"f{next(_counter)}{suffix}"


def _check_loaded(ds, path):
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == np.float32 and np.isfinite(x).all(), (path, split)
        assert y.dtype == np.int64 and ((0 <= y) & (y < ds.n_classes)).all()


def _load_or_named_error(path, **kwargs):
    """load_table's result, or None after checking that the error is one line naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant columns are warned (tested elsewhere)
            ds = load_table(path, **kwargs)
    except ValueError as exc:
        text = str(exc)
        assert "\n" not in text and "\r" not in text, text
        assert path.name in text, text
        event("refused")
        return None
    _check_loaded(ds, path)
    event("loaded")
    return ds


def _distinct(values):
    """The number of distinct label values, compared exactly (numbers by value, text as text)."""
    texts = [str(v).strip() for v in values]
    try:
        return len({Decimal(t) for t in texts})
    except ArithmeticError:
        return len(set(texts))


@FUZZ
@given(classes=labels, rows=st.lists(st.tuples(st.lists(finite, min_size=2, max_size=2), st.integers(0, 3)),
                                     min_size=6, max_size=30),
       delimiter=st.sampled_from([",", ";", "\t"]), newline=st.sampled_from(["\n", "\r\n", "\r"]),
       quote_all=st.booleans(), cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4000)))
def test_fuzz_csv_tables(folder, classes, rows, delimiter, newline, quote_all, cut):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline,
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["width, cm", "height", "kind"])
    used = []
    for values, k in rows:
        label = classes[k % len(classes)]
        used.append(label)
        writer.writerow([repr(v) for v in values] + [label])
    data = buffer.getvalue().encode("utf-8")
    if cut is not None:
        data = data[:cut]
    path = _fresh(folder, ".csv")
    path.write_bytes(data)
    ds = _load_or_named_error(path, val_fraction=0, test_fraction=0.5)
    if ds is not None:
        assert ds.feature_names == ("width, cm", "height")
        if cut is None:
            assert ds.n_classes == _distinct(used)  # no two labels merged, at any size


@FUZZ
@given(n=st.integers(min_value=0, max_value=20), d=st.integers(min_value=0, max_value=3),
       x_kind=st.sampled_from(["float64", "float32", "int64", "uint8", "<U3"]), scale=finite,
       y_kind=st.sampled_from(["int64", "uint64", "bigfloat", "str", "bytes", "bad-bytes", "bool", "float-frac"]),
       compressed=st.booleans(), cut=st.one_of(st.none(), st.integers(min_value=0, max_value=3000)),
       seed=st.integers(0, 2 ** 32 - 1))
def test_fuzz_npz_tables(folder, n, d, x_kind, scale, y_kind, compressed, cut, seed):
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n, d))
    with np.errstate(over="ignore", invalid="ignore"):
        x = (raw * scale).astype(x_kind) if x_kind != "<U3" else raw.astype("<U3")
    k = np.arange(n) % 3
    y = {"int64": lambda: np.array([2 ** 53, 2 ** 53 + 1, -(2 ** 63)], dtype=np.int64)[k],
         "uint64": lambda: np.uint64(2 ** 64 - 3) + k.astype(np.uint64),
         "bigfloat": lambda: np.array([2.0 ** 70, 2.0 ** 70 + 2.0 ** 18, -1.0])[k],
         "str": lambda: np.array(["α", "b", "ß"])[k],
         "bytes": lambda: np.array([b"a", b"b", b"c"])[k],
         "bad-bytes": lambda: np.array([b"\xff", b"ok", b"\xc3"])[k],
         "bool": lambda: k == 1,
         "float-frac": lambda: np.array([0.5, 1.0, 2.0])[k]}[y_kind]()
    path = _fresh(folder, ".npz")
    (np.savez_compressed if compressed else np.savez)(path, X=x, y=y)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    ds = _load_or_named_error(path, val_fraction=0, test_fraction=0.5)
    if ds is not None and cut is None:
        assert ds.n_classes == len({v for v in y.tolist()})


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.standard_normal((60, 3)) + 2.0 * y[:, None]
    clf = VAELayerClassifier(epochs=2, batch_size=16, path="readable", random_state=0).fit(x, y)
    path = clf.save(tmp_path_factory.mktemp("model") / "model.npz")
    return path, load_npz(path), x


replacements = st.one_of(
    st.just(np.array(np.nan)), st.just(np.array("text")), st.just(np.array("[]")), st.just(np.array("{}")),
    st.just(np.array('{"widths": [2, 2]}')), st.just(np.zeros(0)), st.just(np.zeros((3, 1))),
    st.just(np.array([np.inf, 1.0, 1.0])), st.just(np.array(-1)), st.just(np.array(10 ** 6)),
    st.just(np.array([b"\xff"])), st.just(np.zeros(3, dtype=np.int8)), st.just(np.zeros(16, dtype=np.float32)),
    st.integers(-5, 5).map(np.array), st.floats(allow_nan=True).map(lambda v: np.full(3, v)),
)


@FUZZ
@given(data=st.data(), cut=st.integers(min_value=0, max_value=100_000), truncate=st.integers(0, 3))
def test_fuzz_saved_model_files(folder, saved_model, data, cut, truncate):
    _, arrays, x = saved_model
    keys = sorted(arrays)
    tampered = dict(arrays)
    for _ in range(data.draw(st.integers(0, 1), label="entries changed")):
        key = data.draw(st.sampled_from(keys), label="entry")
        if data.draw(st.booleans(), label="remove"):
            tampered.pop(key, None)
        else:
            tampered[key] = data.draw(replacements, label="value")
    path = _fresh(folder, ".npz")
    save_npz_atomic(path, tampered)
    if truncate == 0:  # one example in four is cut short
        assume(cut < path.stat().st_size)
        path.write_bytes(path.read_bytes()[:cut])
    try:
        model = VAELayerClassifier.load(path)
    except ValueError as exc:
        assert path.name in str(exc) and "\n" not in str(exc), str(exc)
        event("refused")
        return
    event("loaded")
    predicted = model.predict(x[:5])
    assert predicted.shape == (5,) and set(predicted.tolist()) <= set(model.classes_.tolist())
    assert model.transform(x[:2]).shape[0] == 2 and np.isfinite(model.sample(2, random_state=0)).all()
