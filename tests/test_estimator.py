"""VAELayerClassifier: scikit-learn's estimator checks, labels of any kind, Pipeline / GridSearchCV,
pickling, save / load."""
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from vaelayer_np import VAELayerClassifier
from vaelayer_np.run.checkpoint import save_npz_atomic
from vaelayer_np.run.estimator import SKLEARN_CHECKS_NOT_APPLICABLE
from vaelayer_np.run.tables import fit_sizes

FAST = dict(epochs=30, batch_size=16, lr=0.01, path="readable", random_state=0)


def _split(loader, labels=None):
    X, y = loader(return_X_y=True)
    if labels is not None:
        y = np.asarray(labels)[y]
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.mark.parametrize("loader, floor", [(load_iris, 0.85), (load_wine, 0.85), (load_breast_cancer, 0.9)])
def test_fit_score_with_string_labels(loader, floor):
    names = np.array(["first kind", "second kind", "third kind"])
    x_tr, x_te, y_tr, y_te = _split(loader, names)
    clf = VAELayerClassifier(**FAST).fit(x_tr, y_tr)
    assert clf.classes_.tolist() == sorted(set(y_tr.tolist()))
    assert clf.n_features_in_ == x_tr.shape[1]
    assert clf.predict(x_te).dtype == y_tr.dtype and set(clf.predict(x_te)) <= set(names)
    assert clf.score(x_te, y_te) >= floor
    proba = clf.predict_proba(x_te)
    assert proba.shape == (len(x_te), len(clf.classes_)) and np.allclose(proba.sum(1), 1.0)
    # the sizes follow the documented rule
    assert (clf.widths_, clf.encoder_hidden_) == fit_sizes(x_tr.shape[1], len(clf.classes_))


@pytest.mark.parametrize("to_labels", [lambda y: y + 1, lambda y: (y + 1).astype(float), lambda y: y == 1])
def test_numeric_and_boolean_labels(to_labels):
    x_tr, x_te, y_tr, y_te = _split(load_wine)
    clf = VAELayerClassifier(**FAST).fit(x_tr, to_labels(y_tr))
    np.testing.assert_array_equal(clf.classes_, np.unique(to_labels(y_tr)))
    assert clf.score(x_te, to_labels(y_te)) > 0.8


def test_one_class_is_refused_clearly():
    with pytest.raises(ValueError, match="one class"):
        VAELayerClassifier(**FAST).fit(np.ones((5, 2)), ["a"] * 5)


@pytest.mark.parametrize("labels, message", [
    (np.array(["a", "b", None, "a"] * 3, dtype=object), "y: the label of row 2 is None; every row needs a label"),
    (np.array(["a", np.nan, "b", "a"] * 3, dtype=object), "y: the label of row 1 is nan"),
    (np.array([1, "b", 1, "b"] * 3, dtype=object), r"y: the labels mix kinds \(number, string\)"),
])
def test_missing_or_mixed_object_labels_are_named(labels, message):
    with pytest.raises(ValueError, match=message):
        VAELayerClassifier(**FAST).fit(np.ones((12, 2)), labels)


def test_standardize_off_keeps_inputs_and_transform_reconstruct_sample_shapes():
    x_tr, x_te, y_tr, _ = _split(load_wine)
    clf = VAELayerClassifier(**FAST, standardize=False, widths=(8, 6), encoder_hidden=0).fit(x_tr, y_tr)
    np.testing.assert_array_equal(clf.mean_, 0.0)
    np.testing.assert_array_equal(clf.scale_, 1.0)
    assert clf.transform(x_te).shape == (len(x_te), 14)
    assert clf.transform(x_te, layer=-1).shape == (len(x_te), 6)
    assert clf.reconstruct(x_te, layer=1).shape == x_te.shape
    assert clf.sample(4, layer=0, random_state=0).shape == (4, x_tr.shape[1])
    with pytest.raises(ValueError, match="layer"):
        clf.transform(x_te, layer=2)


def test_reconstruction_is_in_input_units():
    x_tr, x_te, y_tr, _ = _split(load_iris)
    clf = VAELayerClassifier(**{**FAST, "epochs": 40}).fit(x_tr, y_tr)
    err = np.mean((clf.reconstruct(x_te) - x_te) ** 2, axis=0)
    # far better than predicting the training mean (the error of a reconstruction in the wrong units)
    assert np.all(err < 0.5 * x_tr.var(axis=0))


def test_early_stopping_keeps_best_and_stops():
    x_tr, x_te, y_tr, y_te = _split(load_breast_cancer)
    clf = VAELayerClassifier(**{**FAST, "epochs": 60}, early_stopping=True, n_iter_no_change=3).fit(x_tr, y_tr)
    assert len(clf.validation_scores_) == clf.n_iter_ <= 60
    assert clf.n_iter_ < 60  # breast cancer's validation accuracy saturates within a few epochs
    assert clf.score(x_te, y_te) > 0.9


def test_bad_parameters_raise_value_errors_naming_them():
    X, y = np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
    for params, name in (({"method": "magic"}, "method"), ({"n_threads": 0}, "n_threads"),
                         ({"validation_fraction": 0.9}, "validation_fraction"), ({"epochs": 0}, "epochs")):
        with pytest.raises(ValueError, match=name):
            VAELayerClassifier(**{**FAST, **params}).fit(X, y)


def test_pipeline_and_grid_search():
    x_tr, x_te, y_tr, y_te = _split(load_iris)
    pipe = Pipeline([("scale", StandardScaler()), ("vae", VAELayerClassifier(**FAST, standardize=False))])
    search = GridSearchCV(pipe, {"vae__method": ["iffcl", "backprop"], "vae__lr": [0.01]}, cv=2).fit(x_tr, y_tr)
    assert search.best_params_["vae__method"] in ("iffcl", "backprop")
    assert search.score(x_te, y_te) > 0.8
    # as a transformer inside a pipeline: latent means feed another classifier
    from sklearn.linear_model import LogisticRegression
    features = Pipeline([("vae", VAELayerClassifier(**FAST)), ("logreg", LogisticRegression(max_iter=500))])
    assert features.fit(x_tr, y_tr).score(x_te, y_te) > 0.8


@pytest.mark.parametrize("path", ["fast", "readable"])
def test_joblib_round_trip_gives_identical_predictions(tmp_path, path):
    x_tr, x_te, y_tr, _ = _split(load_wine, np.array(["a", "b", "c"]))
    clf = VAELayerClassifier(**{**FAST, "path": path, "epochs": 3}).fit(x_tr, y_tr)
    joblib.dump(clf, tmp_path / "clf.joblib")
    again = joblib.load(tmp_path / "clf.joblib")
    np.testing.assert_array_equal(again.predict_proba(x_te), clf.predict_proba(x_te))
    np.testing.assert_array_equal(again.predict(x_te), clf.predict(x_te))
    np.testing.assert_array_equal(again.transform(x_te), clf.transform(x_te))


@pytest.mark.parametrize("labels", [np.array(["red", "green", "blue"]), np.array([1.0, 2.0, 3.0])])
def test_save_load_round_trip(tmp_path, labels):
    x_tr, x_te, y_tr, _ = _split(load_wine, labels)
    clf = VAELayerClassifier(**{**FAST, "epochs": 3, "path": "fast"}).fit(x_tr, y_tr)
    path = clf.save(tmp_path / "model.npz")
    again = VAELayerClassifier.load(path)
    np.testing.assert_array_equal(again.predict(x_te), clf.predict(x_te))
    np.testing.assert_array_equal(again.predict_proba(x_te), clf.predict_proba(x_te))
    np.testing.assert_array_equal(again.classes_, clf.classes_)
    assert again.classes_.dtype.kind == clf.classes_.dtype.kind
    assert again.get_params() == clf.get_params()
    np.testing.assert_array_equal(again.sample(3, random_state=1), clf.sample(3, random_state=1))


def test_load_refuses_files_that_are_not_a_saved_model(tmp_path):
    foreign = tmp_path / "arrays.npz"
    save_npz_atomic(foreign, {"X": np.ones((3, 2)), "y": np.arange(3)})
    with pytest.raises(ValueError, match=r"arrays\.npz: not a saved VAELayerClassifier"):
        VAELayerClassifier.load(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.npz"):
        VAELayerClassifier.load(text)
    wrong_format = tmp_path / "other.npz"
    save_npz_atomic(wrong_format, {"format": np.array("something else")})
    with pytest.raises(ValueError, match="not a saved VAELayerClassifier"):
        VAELayerClassifier.load(wrong_format)


# scikit-learn's own checks: a few epochs each (they fit dozens of times); float64 so that predictions on
# subsets of the rows agree with those on all rows to the checks' tolerance.
@pytest.mark.slow
@parametrize_with_checks([VAELayerClassifier(epochs=10, batch_size=16, lr=0.01, dtype="float64", path="readable")],
                         expected_failed_checks=lambda est: SKLEARN_CHECKS_NOT_APPLICABLE)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_threads_default_to_auto_and_a_number_is_used_as_given():
    """docs/tabular.md: n_threads None (the default) is the library's threads="auto"; a number is taken as given."""
    X, y = load_iris(return_X_y=True)
    tiny = dict(FAST, epochs=1, widths=(4,), encoder_hidden=0)
    assert VAELayerClassifier(**tiny).fit(X, y).trainer_.config.threads == "auto"
    assert VAELayerClassifier(**tiny, n_threads=1).fit(X, y).trainer_.config.threads == 1
    assert VAELayerClassifier(**tiny, n_threads="auto").fit(X, y).trainer_.config.threads == "auto"
    with pytest.raises(ValueError, match="n_threads"):
        VAELayerClassifier(**tiny, n_threads="many").fit(X, y)


def test_no_estimator_check_is_marked_not_applicable():
    """docs/tabular.md says none is: a check skipped by this classifier would have to be named there."""
    assert SKLEARN_CHECKS_NOT_APPLICABLE == {}
