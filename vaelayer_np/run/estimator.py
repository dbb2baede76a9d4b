"""``VAELayerClassifier``: the VAE-layer network as a scikit-learn classifier, for your own arrays.

::

    from vaelayer_np import VAELayerClassifier
    clf = VAELayerClassifier().fit(X_train, y_train)
    clf.score(X_test, y_test)

It wraps :class:`~vaelayer_np.run.trainer.Trainer` (IFFCL or the backprop baseline)
in the scikit-learn API: labels of any kind (strings, 1..3, integer-valued
floats) through label encoding, optional input standardisation, early stopping
on a held-out part, ``transform`` (latent means), ``reconstruct``, ``sample``,
and ``save`` / ``load`` to one ``.npz`` file without pickles. It passes
scikit-learn's estimator checks (tests/test_estimator.py), works in ``Pipeline``
and ``GridSearchCV``, and pickles (the trainer is stored as its state dict of
arrays and rebuilt on unpickling).

The comparison with scikit-learn's models in docs/tabular.md is a tool,
:mod:`vaelayer_np.tools.estimator_bench`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..analysis.diagnostics import encode_layers
from ..analysis.generation import decode_to_input, fit_aggregate_posterior
from ..core.settings import DEFAULTS
from ..fast.backend import BACKENDS, path_of_old_backend
from ..fast.machine import AUTO, check_memory, check_threads, limit_threads
from . import model_file
from .config import ARRAYS, CHOICES, DEFAULT_THREADS, TrainConfig
from .model_file import rebuild_trainer
from .tables import (
    MAX_STANDARD_SCORE,
    SEED_LIMIT,
    ConstantColumnWarning,
    check_standardized,
    column_statistics,
    constant_column_message,
    fit_sizes,
    standardize,
)

SKLEARN_CHECKS_NOT_APPLICABLE: dict[str, str] = {}
"""scikit-learn estimator checks that cannot apply to this classifier, by name, with the reason.

Passed to ``parametrize_with_checks(..., expected_failed_checks=...)`` (the mechanism of
scikit-learn >= 1.6, which replaced the ``_xfail_checks`` tag). Empty: every check applies and passes.
"""


def _is_int(v: Any) -> TypeGuard[int | np.integer]:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _big_integer_labels(y: np.ndarray) -> np.ndarray | None:
    """Labels held as Python objects that are all integers, some beyond 64 bits: (N,) object array, else None.

    NumPy and scikit-learn cannot hold such labels as numbers; they are encoded here, exactly."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        return None
    if arr.dtype != object or arr.ndim != 1 or not arr.size or not all(_is_int(v) for v in arr):
        return None
    if all(-2 ** 63 <= int(v) < 2 ** 64 for v in arr):
        return None
    return np.array([int(v) for v in arr], dtype=object)


def _kind(value: Any) -> str:
    """What a value is, for a message: "a dict", "a str ('abc')", "None", "a 3-D array of shape (2, 3, 4)"."""
    if value is None:
        return "None"
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(value, np.generic):
        return _kind(value.item())
    if isinstance(value, (str, bytes, int, float)):
        return f"{article} {name} ({_short(value)})"
    return f"{article} {name}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_NOT_ROWS = (dict, set, frozenset, str, bytes, bytearray)


def _check_rows_container(X: Any, name: str = "X") -> None:
    """Refuse, naming ``name`` ("X" or "y"), what cannot hold rows at all (a dict, a set, a string, None, a
    number, an iterator), before NumPy turns it into a less clear error."""
    if issparse(X):  # scikit-learn names it (some sparse formats are dicts)
        return
    if isinstance(X, _NOT_ROWS) or X is None or not (hasattr(X, "__len__") or hasattr(X, "shape")
                                                      or hasattr(X, "__array__")):
        hint = ""
        if name == "X":
            expected = "a 2-D table of numbers, shape (n_samples, n_features): an array, a list of rows or a DataFrame"
            if isinstance(X, dict):
                hint = "; a dict of columns becomes a table with np.column_stack(list(X.values()))"
        else:
            expected = "one label per row of X: an array, a list or a pandas Series"
            if isinstance(X, dict):
                hint = "; a dict's labels are list(y.values())"
        if isinstance(X, (set, frozenset)):
            hint = f"; a set has no order: give the {'rows' if name == 'X' else 'labels'} as a list or an array"
        elif hasattr(X, "__next__"):
            hint = f"; an iterator is read once: give list({name}) or an array"
        raise ValueError(f"{name}: expected {expected}, got {_kind(X)}{hint}")


def _n_rows(X: Any) -> int | None:
    """The number of rows of an array-like, or None when it has no length."""
    shape = getattr(X, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) else None
        except (TypeError, IndexError):
            return None
    try:
        return len(X)
    except TypeError:
        return None


def _is_sequence(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _table_problem(X: Any) -> tuple[type[Exception], str] | None:
    """Why ``X`` is not a 2-D table of numbers, when it is something a user would hand over by mistake (rows of
    different lengths, text, a 3-D array, a cell that is not a number): (exception type, message), else None
    (scikit-learn's own message stands: a 1-D array, no rows, NaN, complex numbers, a sparse matrix)."""
    if issparse(X):
        return None
    if isinstance(X, (list, tuple)):
        lengths = [len(r) if _is_sequence(r) else None for r in X]
        if any(n is not None for n in lengths) and len(set(lengths)) > 1:
            i = next(i for i, n in enumerate(lengths) if n != lengths[0])
            a, b = ("a single value" if n is None else f"{n} values" for n in (lengths[0], lengths[i]))
            return ValueError, (f"X: rows of different lengths: row 0 has {a}, row {i} has {b}; every row needs "
                                "one value per feature")
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype == object and arr.ndim == 1 and any(_is_sequence(v) for v in arr.tolist()):
        return ValueError, ("X: its rows do not form a 2-D table (rows of different lengths, or rows of rows); "
                            "every row needs one value per feature")
    if arr.ndim > 2:
        return ValueError, (f"X: expected a 2-D table (n_samples, n_features), got a {arr.ndim}-D array of shape "
                            f"{arr.shape}; give one row of features per sample, e.g. X.reshape(len(X), -1)")
    if arr.dtype.kind not in "OUS":
        return None
    for index, cell in np.ndenumerate(arr):
        try:
            float(cell)
        except (TypeError, ValueError) as exc:
            where = f"row {index[0]}, column {index[1]}" if arr.ndim == 2 else f"element {index[0]}"
            if isinstance(cell, (str, bytes)):
                hint = ("encode text columns as numbers first (e.g. sklearn.preprocessing.OneHotEncoder)"
                        if arr.ndim == 2 else "X is a table of numbers, one row per sample: text must be encoded "
                        "as numbers first")
                return ValueError, f"X: {where} holds the text {_short(cell)}, not a number; {hint}"
            hint = "; a missing value? fill it in or drop the row" if cell is None else ""
            return type(exc), f"X: {where} holds {_kind(cell)}, not a number ({exc}){hint}"
    return None


def _validated_X(X: Any, validate: Any) -> Any:
    """``validate(X)`` (scikit-learn's validate_data), with our message when X is not a table of numbers."""
    _check_rows_container(X, "X")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # scikit-learn's finiteness check sums the values
            return validate(X)
    except (TypeError, ValueError):
        problem = _table_problem(X)
        if problem is None:
            raise
        kind, message = problem
        raise kind(message) from None


def _check_labels_fit_rows(X: Any, y: Any) -> None:
    """y is one label per row of X: a container of labels (1-D, or a column) of X's length. None is left to
    scikit-learn's own message ("requires y to be passed")."""
    if y is None:
        return
    _check_rows_container(y, "y")
    shape = getattr(y, "shape", None)
    if shape is None and isinstance(y, (list, tuple)):
        try:
            shape = np.shape(y)
        except ValueError:  # rows of different lengths: named by _check_object_labels
            shape = None
    if shape is not None and len(shape) > 1 and (len(shape) > 2 or shape[1] != 1):
        raise ValueError(f"y: expected one label per row of X (1-D), got shape {tuple(shape)}; a multi-output "
                         "target is not supported")
    n_x, n_y = _n_rows(X), _n_rows(y)
    if n_x is not None and n_y is not None and n_x != n_y:
        raise ValueError(f"y: {n_y} {'label' if n_y == 1 else 'labels'} for the {n_x} rows of X; give one label "
                         "per row")


def _check_whole_labels(y: Any) -> None:
    """Float labels are classes only when they are whole numbers, as in a table file: ``1.5`` is a measurement
    (a continuous target, for a regressor). Named here with the row, in scikit-learn's words ("continuous")."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        return
    if arr.ndim != 1:
        return
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(np.isfinite(arr) & (arr != np.round(arr)))
    elif arr.dtype == object:
        bad = np.array([i for i, v in enumerate(arr.tolist()) if isinstance(v, float) and np.isfinite(v)
                        and v != round(v)], dtype=np.int64)
    else:
        return
    if bad.size:
        raise ValueError(f"y: the label of row {int(bad[0])} is {_short(arr[bad[0]])}, not a whole number "
                         f"({bad.size} such {'label' if bad.size == 1 else 'labels'}): a continuous target (a "
                         "measurement, for a regressor), not class labels; give class labels that are whole "
                         "numbers or names, as a table file's labels must be")


def _check_object_labels(y: np.ndarray) -> None:
    """Labels held as Python objects (a list or an object array): a missing label (None, NaN) or a mix of
    kinds (numbers and strings) is named here, before scikit-learn's checks fail on it less clearly."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):  # rows of different lengths: not one label per row
        raise ValueError("y: expected one label per row of X, got rows of several values (of different "
                         "lengths); y is 1-D: one class label per row") from None
    if arr.dtype != object or arr.ndim != 1:
        return
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
            raise ValueError(f"y: the label of row {i} is {v!r}; every row needs a label")
    kinds = {"string" if isinstance(v, (str, np.str_)) else "number" if isinstance(v, (int, float, np.number))
             else type(v).__name__ for v in arr}
    if len(kinds) > 1:
        raise ValueError(f"y: the labels mix kinds ({', '.join(sorted(kinds))}); give labels of one kind, "
                         "e.g. all strings")


class VAELayerClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """A stack of VAE layers with an output layer, trained with IFFCL or backpropagation.

    Parameters
    ----------
    method : str, "iffcl" or "backprop"
        IFFCL (twin networks, one local loss per layer) or the end-to-end baseline.
    widths : tuple of int or None
        Latent width of each VAE layer. None: fitted to the data by
        :func:`vaelayer_np.run.tables.fit_sizes` (two layers of width ``w``, the power of
        two >= max(n_features, 4 * n_classes), clipped to [16, 256]).
    encoder_hidden : int or None
        Width of the hidden layer inside each encoder (0: linear encoder). None:
        ``min(4 * w, 1024)`` (the same rule).
    epochs, batch_size, lr : training length, mini-batch size, learning rate of the VAE layers
    output_lr : learning rate of the output layer
    beta, lam, margin, activation, pairing, contrast, readout, pass_on :
        the IFFCL and layer settings of :class:`~vaelayer_np.run.config.TrainConfig`.
    standardize : bool, default True
        Scale each input column with the training mean and standard deviation
        (``mean_``, ``scale_``) before the network sees it.
    validation_fraction : float in (0, 0.5]
        Part of the training rows held out (stratified when every class has two
        rows) to decide early stopping; used only with ``early_stopping=True``.
    early_stopping : bool, default False
        Stop when the validation accuracy has not improved for ``n_iter_no_change``
        epochs and keep the parameters of the best epoch.
    n_iter_no_change : int
    random_state : int, RandomState or None
        Seeds initialisation, pairing, noise, batch order and the validation split.
    n_threads : int, "auto" or None
        BLAS threads during fit and predict ("auto": the idle cores; None: the library's default,
        :data:`vaelayer_np.run.config.DEFAULT_THREADS`).
    path : str or None, the training path: "fast" (compiled kernels) or "readable" (the layers' own NumPy
        code); None: the library default (:func:`vaelayer_np.fast.backend.default_path`)
    backend : deprecated, the old spelling of ``path`` ("numba": fast, "numpy": readable)
    dtype : str, "float32" or "float64"
    verbose : int, 0 silent, 1 one line per epoch

    Attributes
    ----------
    classes_ : ndarray (n_classes,), the labels, sorted
    n_features_in_ : int
    mean_, scale_ : ndarray (n_features,), the standardisation (zeros / ones when off)
    widths_, encoder_hidden_ : the sizes used
    n_iter_ : int, epochs run
    loss_curve_ : list of float, the output layer's mean loss per epoch
    validation_scores_ : list of float, validation accuracy per epoch (early stopping only)
    trainer_ : Trainer, the trained networks
    """

    # the model's and IFFCL's defaults are core.settings.DEFAULTS (one source), read here, not written again
    def __init__(self, method: str = "iffcl", widths: int | Sequence[int] | None = None,
                 encoder_hidden: int | None = None, epochs: int = 100, batch_size: int = 32, lr: float = 1e-3,
                 output_lr: float = 0.01, beta: float = DEFAULTS["beta"], lam: float = DEFAULTS["lam"],
                 margin: float = DEFAULTS["margin"], activation: str = DEFAULTS["activation"],
                 pairing: str = DEFAULTS["pairing"], contrast: str = DEFAULTS["contrast"],
                 readout: str = DEFAULTS["readout"], pass_on: str = DEFAULTS["pass_on"], standardize: bool = True,
                 validation_fraction: float = 0.1, early_stopping: bool = False, n_iter_no_change: int = 10,
                 random_state: int | np.random.RandomState | None = None, n_threads: int | str | None = None,
                 path: str | None = None, backend: str | None = None, dtype: str = "float32",
                 verbose: int = 0) -> None:
        self.method = method
        self.widths = widths
        self.encoder_hidden = encoder_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.output_lr = output_lr
        self.beta = beta
        self.lam = lam
        self.margin = margin
        self.activation = activation
        self.pairing = pairing
        self.contrast = contrast
        self.readout = readout
        self.pass_on = pass_on
        self.standardize = standardize
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_threads = n_threads
        self.path = path
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose

    # ------------------------------------------------------------------ configuration
    def _config(self, n_features: int, n_classes: int, seed: int) -> TrainConfig:
        widths: tuple[int, ...]
        widths, hidden = fit_sizes(n_features, n_classes)
        if self.widths is not None:
            widths = tuple(int(w) for w in np.atleast_1d(self.widths))
        if self.encoder_hidden is not None:
            hidden = self.encoder_hidden
        if isinstance(hidden, np.integer):
            hidden = int(hidden)
        values: dict[str, Any] = dict(
            dataset=ARRAYS, val_fraction=0.0, method=self.method, widths=widths, encoder_hidden=hidden,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, output_lr=self.output_lr, beta=self.beta,
            lam=self.lam, margin=self.margin, activation=self.activation, pairing=self.pairing,
            contrast=self.contrast, readout=self.readout, pass_on=self.pass_on, seed=seed, path=self._path(),
            dtype=self.dtype, threads=self._threads())
        for name in ("epochs", "batch_size"):
            if isinstance(values[name], np.integer):
                values[name] = int(values[name])
        return TrainConfig(**values).validate()

    def _path(self) -> str | None:
        """``path``, or the path the deprecated ``backend`` names (with a DeprecationWarning)."""
        if self.backend is None:
            return self.path
        old = path_of_old_backend(self.backend, "VAELayerClassifier", stacklevel=5)
        if self.path is not None and self.path != old:
            raise ValueError(f"backend: {self.backend!r} (the old spelling of path={old!r}) contradicts "
                             f"path={self.path!r}; give path alone")
        return old

    def _threads(self) -> int | str:
        if isinstance(self.n_threads, str) and self.n_threads == AUTO:
            return AUTO
        n = check_threads(self.n_threads, "n_threads")
        return DEFAULT_THREADS if n is None else n

    def _check_fit_params(self) -> None:
        """Every parameter's type and value, each named (scikit-learn style: checked in ``fit``)."""
        w = self.widths
        if w is not None:
            ok = _is_int(w) and w >= 1
            if isinstance(w, (tuple, list, np.ndarray)) and not isinstance(w, (str, bytes)):
                ok = len(w) > 0 and all(_is_int(v) and v >= 1 for v in (w.tolist() if isinstance(w, np.ndarray)
                                                                         else w))
            if not ok:
                raise ValueError(f"widths: expected None, a positive integer or a sequence of positive integers "
                                 f"like (16, 16), got {w!r}")
        h = self.encoder_hidden
        if h is not None and not (_is_int(h) and h >= 0):
            raise ValueError(f"encoder_hidden: expected None or an integer >= 0, got {h!r}")
        for name in ("epochs", "batch_size", "n_iter_no_change"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        for name in ("lr", "output_lr", "beta", "lam", "margin", "validation_fraction"):
            v = getattr(self, name)
            if not _is_real(v) or not np.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
        for name in ("method", "activation", "pairing", "contrast", "readout", "pass_on", "dtype"):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in CHOICES[name]:
                raise ValueError(f"{name}: unknown option {v!r}; expected one of "
                                 f"{', '.join(map(repr, CHOICES[name]))}")
        if self.path is not None and (not isinstance(self.path, str) or self.path not in CHOICES["path"]):
            raise ValueError(f"path: unknown option {self.path!r}; expected None or one of "
                             f"{', '.join(map(repr, CHOICES['path']))}")
        if self.backend is not None and (not isinstance(self.backend, str) or self.backend not in BACKENDS):
            raise ValueError(f"backend: unknown option {self.backend!r}; expected None or one of "
                             f"{', '.join(map(repr, BACKENDS))}")
        r = self.random_state
        if r is not None and not isinstance(r, np.random.RandomState) and not (_is_int(r) and 0 <= r < SEED_LIMIT):
            raise ValueError(f"random_state: expected None, an integer in 0..{SEED_LIMIT - 1} or a "
                             f"numpy.random.RandomState, got {r!r}")
        if not (_is_int(self.verbose) or isinstance(self.verbose, (bool, np.bool_))) or self.verbose < 0:
            raise ValueError(f"verbose: expected an integer >= 0, got {self.verbose!r}")
        self._threads()
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize: expected True or False, got {self.standardize!r}")
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping: expected True or False, got {self.early_stopping!r}")
        v = self.validation_fraction
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 < v <= 0.5:
            raise ValueError(f"validation_fraction: expected a number in (0, 0.5], got {v!r}")
        n = self.n_iter_no_change
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_iter_no_change: expected a positive integer, got {n!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, X: np.ndarray, y: np.ndarray) -> VAELayerClassifier:
        """Train on ``X`` (n_samples, n_features) numbers and ``y`` (n_samples,) labels of any kind.

        Returns
        -------
        self
        """
        from .runs import check_model_memory
        from .trainer import Trainer

        self._check_fit_params()
        _check_rows_container(X, "X")
        _check_labels_fit_rows(X, y)
        big = _big_integer_labels(y)
        if big is None:
            _check_object_labels(y)
            _check_whole_labels(y)
            X, y = _validated_X(X, lambda X: validate_data(self, X, y, dtype=np.float64))
            check_classification_targets(y)
            if y.dtype.kind in "Mm" and np.isnat(y).any():
                raise ValueError(f"y: the label of row {int(np.flatnonzero(np.isnat(y))[0])} is NaT; every row "
                                 "needs a label")
            self.classes_, y_index = np.unique(y, return_inverse=True)
        else:  # integers beyond 64 bits: encoded exactly here (never through float)
            self.classes_ = np.array(sorted(set(big.tolist())), dtype=object)
            index = {c: i for i, c in enumerate(self.classes_.tolist())}
            X, _ = _validated_X(X, lambda X: validate_data(self, X, np.array([index[v] for v in big.tolist()]),
                                                           dtype=np.float64))
            y_index = np.array([index[v] for v in big.tolist()], dtype=np.int64)
        y_index = np.asarray(y_index, dtype=np.int64).reshape(-1)
        if len(self.classes_) < 2:
            raise ValueError(f"y: only one class ({self.classes_[0]!r}) is present; a classifier needs at least "
                             "two classes")
        if isinstance(self.random_state, (int, np.integer)):
            seed = int(self.random_state)  # the seed itself (0..2**32-1): two seeds, two models
        else:  # None or a RandomState: a seed drawn from it
            seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 1))
        names = [f"{j}" for j in range(X.shape[1])]
        if self.standardize:
            # statistics safe at any magnitude (1e300, 1e-300): scaled by a power of two before squaring
            mean, scale, constant = column_statistics(X)
            if constant.any() and X.shape[0] > 1:
                warnings.warn(constant_column_message("X", [names[j] for j in np.flatnonzero(constant)],
                                                      mean[constant]), ConstantColumnWarning, stacklevel=2)
            scale[constant] = 1.0
            self.mean_, self.scale_ = mean, scale
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        Xs = self._standardized(X)
        config = self._config(X.shape[1], len(self.classes_), seed)
        check_model_memory(config, X.shape[1], len(self.classes_), rows=X.shape[0])
        self.widths_, self.encoder_hidden_ = config.resolved_widths(), config.encoder_hidden
        x_val = y_val = None
        if self.early_stopping:
            Xs, y_index, x_val, y_val = self._validation_split(Xs, y_index, seed)
        trainer = Trainer(config, X.shape[1], len(self.classes_))
        self.loss_curve_, self.validation_scores_ = [], []
        best_score, best_state, stale = -np.inf, None, 0
        with limit_threads(config.threads):
            for means in trainer.epochs(Xs, y_index):
                assert means is not None  # no should_stop: every epoch finishes
                self.loss_curve_.append(float(means["output_loss"]))
                line = f"epoch {trainer.epoch}/{config.epochs}: output loss {means['output_loss']:.4f}"
                if x_val is not None and y_val is not None:
                    score = trainer.accuracy(x_val.astype(trainer.dtype), y_val)
                    self.validation_scores_.append(score)
                    line += f", validation accuracy {score:.4f}"
                    if score > best_score:
                        best_score, stale = score, 0
                        best_state = {k: np.array(v, copy=True) for k, v in trainer.state_dict().items()}
                    else:
                        stale += 1
                if self.verbose:
                    print(line)
                if x_val is not None and stale >= self.n_iter_no_change:
                    break
            self.n_iter_ = trainer.epoch
            if best_state is not None:
                trainer.load_state_dict(best_state)
            self.trainer_ = trainer
            self._store_latent_statistics(Xs)
        return self

    def _validation_split(self, Xs: np.ndarray, y_index: np.ndarray,
                          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.model_selection import train_test_split

        n = len(y_index)
        n_val = max(1, int(round(self.validation_fraction * n)))
        counts = np.bincount(y_index)
        stratify = y_index if (counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts)) else None
        if n - n_val < 1:
            raise ValueError(f"early_stopping: {n} rows are too few to hold out a validation part")
        x_tr, x_val, y_tr, y_val = train_test_split(Xs, y_index, test_size=n_val, random_state=seed,
                                                    stratify=stratify)
        return x_tr, y_tr, x_val, y_val

    def _store_latent_statistics(self, Xs: np.ndarray) -> None:
        """Each layer's aggregate posterior on the training rows, as a diagonal Gaussian (what :meth:`sample`
        draws from): :func:`vaelayer_np.analysis.generation.fit_aggregate_posterior`."""
        with limit_threads(self._threads()):
            layers = encode_layers(self.trainer_.net_a, Xs)
        fitted = [fit_aggregate_posterior(mu, log_var) for mu, log_var in layers]
        self.latent_mean_ = [mean for mean, _ in fitted]
        self.latent_std_ = [std for _, std in fitted]

    # ------------------------------------------------------------------ prediction
    def _standardized(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean_) / scale_`` without overflow, refused (naming the column) beyond what the network takes."""
        z = standardize(X, self.mean_, self.scale_)
        try:
            return check_standardized(z, "X", [f"{j}" for j in range(X.shape[1])], raw=X)
        except ValueError:
            if self.standardize:
                raise
            r, c = (int(v) for v in np.argwhere(~(np.abs(z) <= MAX_STANDARD_SCORE))[0])
            raise ValueError(f"X: column {c} row {r + 1} holds {X[r, c]:.6g}, beyond the +-{MAX_STANDARD_SCORE:g} "
                             "the network can take unscaled; use standardize=True") from None

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = _validated_X(X, lambda X: validate_data(self, X, dtype=np.float64, reset=False))
        return self._standardized(X).astype(self.trainer_.dtype)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_`` (mean path)."""
        x = self._scaled(X)
        with limit_threads(self._threads()):
            p = self.trainer_.predict_proba(x).astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable label of each row, (n_samples,) of the type of ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Mean accuracy of :meth:`predict` on ``X`` against ``y`` (also for integer labels beyond 64 bits)."""
        check_is_fitted(self)
        _check_rows_container(X, "X")
        _check_labels_fit_rows(X, y)
        _check_object_labels(y)
        _check_whole_labels(y)
        if self.classes_.dtype != object:
            return super().score(X, y, sample_weight=sample_weight)
        hits = np.asarray([a == b for a, b in zip(self.predict(X).tolist(), np.asarray(y, dtype=object).tolist())],
                          dtype=np.float64)
        return float(np.average(hits, weights=sample_weight))

    def _latent_means(self, x: np.ndarray) -> list[np.ndarray]:
        net = self.trainer_.net_a
        with limit_threads(self._threads()):
            _, caches, _, _ = net.forward(np.asarray(x, dtype=self.trainer_.dtype), sample=False)
        return [c["mu"].astype(np.float64) for c in caches]

    def transform(self, X: np.ndarray, layer: int | None = None) -> np.ndarray:
        """Latent means of net A's VAE layers (mean path).

        Parameters
        ----------
        X : (n_samples, n_features)
        layer : int or None
            None (what a Pipeline uses): the means of every VAE layer side by side,
            (n_samples, sum(widths_)); an int k: layer k only (0-based, -1 the last),
            (n_samples, widths_[k]).
        """
        mus = self._latent_means(self._scaled(X))
        if layer is None:
            return np.concatenate(mus, axis=1)
        return mus[self._layer_index(layer)]

    def _layer_index(self, layer: Any) -> int:
        check_is_fitted(self)  # before the fitted sizes are read: NotFittedError, as every method gives
        n = len(self.widths_)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
            raise ValueError(f"layer: expected an integer in [{-n}, {n - 1}] (one of the {n} VAE layers), "
                             f"got {layer!r}")
        return int(layer) % n

    def _decode(self, k: int, z: np.ndarray) -> np.ndarray:
        """Carry a latent of layer k down through the decoders to input units
        (:func:`vaelayer_np.analysis.generation.decode_to_input`, then the standardisation undone)."""
        with limit_threads(self._threads()):
            h = decode_to_input(self.trainer_.net_a, k, np.asarray(z, dtype=self.trainer_.dtype))
        return np.asarray(h, dtype=np.float64) * self.scale_ + self.mean_

    def reconstruct(self, X: np.ndarray, layer: int = 0) -> np.ndarray:
        """Reconstruction of ``X`` through VAE layer ``layer`` (0: the first), in the units of ``X``.

        Layer k encodes X up to its latent mean (mean path) and its decoder and those of
        the layers below carry it back down to the inputs (see :mod:`vaelayer_np.run.plots`).

        Returns
        -------
        np.ndarray (n_samples, n_features_in_)
        """
        k = self._layer_index(layer)
        return self._decode(k, self._latent_means(self._scaled(X))[k])

    def sample(self, n: int, layer: int = -1, random_state: int | np.random.RandomState | None = None) -> np.ndarray:
        """``n`` new rows decoded from samples of VAE layer ``layer``'s latent space, in input units.

        The samples are z ~ N(m, diag(s^2)), the layer's aggregate posterior on the training rows
        fitted as a diagonal Gaussian (``latent_mean_``, ``latent_std_``: the mean of the latent means,
        and the spread of the means plus the mean noise variance, as in
        :func:`vaelayer_np.analysis.generation.fit_aggregate_posterior`).

        Returns
        -------
        ndarray (n, n_features_in_)
        """
        check_is_fitted(self)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        k = self._layer_index(layer)
        # every row's latent, the decoders' activations on the way down and the rows in input units, as float64
        row_bytes = 8 * (2 * self.widths_[k] + sum(self.widths_[:k + 1]) + 2 * self.encoder_hidden_
                         + 3 * self.n_features_in_)
        check_memory("n", int(n) * row_bytes, f"{int(n)} samples of {self.n_features_in_} features")
        rng = check_random_state(random_state)
        m, s = self.latent_mean_[k], self.latent_std_[k]
        return self._decode(k, m + s * rng.standard_normal((int(n), m.shape[0])))

    # ------------------------------------------------------------------ pickling, files
    def __getstate__(self) -> dict[str, Any]:
        # The trainer is kept as its state dict of arrays (plus its configuration): its layers
        # hold the backend's functions (closures for numba) and parameter views into flat buffers.
        state = self.__dict__.copy()
        trainer = state.pop("trainer_", None)
        if trainer is not None:
            state["_trainer_state"] = {"config": trainer.config.to_dict(), "n_features": trainer.n_features,
                                       "n_classes": trainer.n_classes, "arrays": trainer.state_dict()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("_trainer_state", None)
        self.__dict__.update(state)
        if saved is not None:
            self.trainer_ = rebuild_trainer(saved["config"], saved["n_features"], saved["n_classes"],
                                             saved["arrays"])

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one ``.npz`` file (atomically; no pickles).

        The file holds the parameters of this estimator (JSON), the training
        configuration (JSON), the input and class counts, the classes, the
        standardisation, the latent statistics and every array of the trainer
        (the format: :mod:`vaelayer_np.run.model_file`). What :meth:`load` would refuse is refused here,
        before anything is written.
        """
        check_is_fitted(self)
        return model_file.write(self, path)

    @classmethod
    def load(cls, path: str | Path) -> VAELayerClassifier:
        """Read a model written by :meth:`save`.

        Every entry is checked before it is used (type, shape, dtype, finite values, ranges, and that
        the entries agree with each other); anything else raises ValueError naming the file and the entry.
        """
        return model_file.read(cls, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
