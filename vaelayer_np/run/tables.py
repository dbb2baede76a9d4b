"""Your own data: tables from CSV or ``.npz`` files, and model sizes that fit them.

:func:`load_table` reads a table and returns a :class:`~vaelayer_np.run.data.Dataset`
like the image datasets, so ``vaelayer train --data wine.csv --target class``,
``vaelayer evaluate`` and ``vaelayer plot`` work on it:

* **CSV**: a header row naming the columns, then one row per example. ``target``
  names the label column (default: the last column); every other column is a
  feature and every feature cell must be a finite number. Labels may be any text
  or numbers (``"setosa"``, ``1..3``, ``2.0``); the class names are the distinct
  labels, sorted (numerically when every label is a number).
* **.npz**: arrays named ``X`` and ``y`` (or ``x`` and ``y``), X of shape (N, D)
  with numbers, y of shape (N,) with integers, integer-valued floats or strings.
  Read with ``allow_pickle=False``: object arrays are refused.

Every problem raises a ``ValueError`` naming the file and what is wrong, e.g.
``wine.csv: column "alcohol" row 12: "abc" is not a number`` (rows are counted
from 1 after the header; the line in the file is one more).

The split is seeded and stratified: a ``test_fraction`` of the rows is held out
for testing (unless ``test_path`` gives a test file), then ``val_fraction`` of
the rest for validation. Features are standardised with the mean and standard
deviation of the training rows (stored in the Dataset as ``feature_mean`` and
``feature_std``); ``image_shape`` is None, which tells the plots the data are
not images.

:func:`fit_sizes` is the rule that sizes a model to a table when no widths are
given; :class:`~vaelayer_np.run.estimator.VAELayerClassifier` uses the same rule.
"""
from __future__ import annotations

import csv
import io
import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from .data import MAX_DATA_BYTES, CorruptFileError, Dataset, DatasetNotFoundError

TABLE_SUFFIXES = (".csv", ".npz")
TABLE_EPOCHS = 100
"""Default epochs for a table (the image datasets keep theirs): small tables need many short epochs."""
TABLE_BATCH = 32
"""Default mini-batch size for a table."""


# ----------------------------------------------------------------------------- model sizes
def fit_sizes(n_features, n_classes):
    """Latent widths and encoder width that fit a table with ``n_features`` columns and ``n_classes`` classes.

    The rule: each of two VAE layers has width ``w``, the smallest power of two
    at least ``max(n_features, 4 * n_classes)``, clipped to [16, 256]; the hidden
    layer inside each encoder has ``min(4 * w, 1024)`` units. So iris (4 features,
    3 classes) and wine (13, 3) get widths (16, 16) with encoder_hidden 64, breast
    cancer (30, 2) gets (32, 32) with 128; a 64-feature table would get width 64
    and a 784-feature one 256, the widths used for digits and Fashion-MNIST.
    docs/tabular.md compares this size with the digits model on three tables.

    Parameters
    ----------
    n_features, n_classes : int >= 1

    Returns
    -------
    widths : tuple of int, encoder_hidden : int
    """
    n_features, n_classes = int(n_features), int(n_classes)
    if n_features < 1 or n_classes < 1:
        raise ValueError(f"fit_sizes: expected n_features >= 1 and n_classes >= 1, got {n_features}, {n_classes}")
    need = max(n_features, 4 * n_classes)
    width = int(min(256, max(16, 2 ** math.ceil(math.log2(need)))))
    return (width, width), min(4 * width, 1024)


def fit_config_to_table(config, n_features, n_classes):
    """Fill in the sizes of a table's TrainConfig that were not given (see :func:`fit_sizes`).

    ``widths=None`` becomes the fitted widths; ``encoder_hidden`` is fitted when it
    holds the image default (1024), so any other value you give is kept.
    """
    import dataclasses

    image_default = {f.name: f.default for f in dataclasses.fields(config)}["encoder_hidden"]
    widths, hidden = fit_sizes(n_features, n_classes)
    if config.widths is None:
        config.widths = widths
    if config.encoder_hidden == image_default:
        config.encoder_hidden = hidden
    return config


# ----------------------------------------------------------------------------- reading files
def _check_file(path):
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: file not found") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot open the file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CorruptFileError(f"{path}: is a folder, not a table file (.csv or .npz)")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path}: is not a regular file; expected a table (.csv or .npz)")
    if st.st_size == 0:
        raise CorruptFileError(f"{path}: the file is empty; expected a table with a header row")
    if st.st_size > MAX_DATA_BYTES:
        raise CorruptFileError(f"{path}: {st.st_size} bytes, more than the {MAX_DATA_BYTES}-byte limit for a table")


def _read_text(path):
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if b"\x00" in raw[:65536]:
        raise CorruptFileError(f"{path}: not a text table (the file holds binary data); expected a CSV file with a "
                               "header row")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{path}: not a UTF-8 text table (undecodable byte at position {exc.start}); "
                               "save the file as UTF-8 CSV") from None


def _read_csv(path, target):
    """(feature names, (N, D) float64 features, (N,) label strings) from a CSV file."""
    text = _read_text(path)
    first = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first:
        delimiter = next((d for d in (";", "\t") if d in first), ",")
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        raise CorruptFileError(f"{path}: the file holds no rows; expected a header row and data rows")
    header = [c.strip() for c in rows[0]]
    if len(header) < 2:
        raise CorruptFileError(f"{path}: the header row has {len(header)} column; a table needs at least one "
                               "feature column and a label column (separated by commas)")
    if any(not h for h in header):
        raise CorruptFileError(f"{path}: column {header.index('') + 1} of the header row has no name")
    seen = set()
    for h in header:
        if h in seen:
            raise CorruptFileError(f'{path}: two columns are named "{h}"; column names must be unique')
        seen.add(h)
    if target is None or target == "":
        t = len(header) - 1
    elif target in header:
        t = header.index(target)
    else:
        raise CorruptFileError(f'{path}: no column "{target}" (the target); the columns are: ' + ", ".join(header))
    data = rows[1:]
    if not data:
        raise CorruptFileError(f"{path}: only a header row, no data rows")
    features = [h for i, h in enumerate(header) if i != t]
    x = np.empty((len(data), len(features)), dtype=np.float64)
    labels = []
    for r, row in enumerate(data, 1):
        if len(row) != len(header):
            raise CorruptFileError(f"{path}: row {r} has {len(row)} cells, the header has {len(header)} columns")
        label = row[t].strip()
        if not label:
            raise CorruptFileError(f'{path}: column "{header[t]}" row {r}: empty label (missing value)')
        labels.append(label)
        j = 0
        for i, cell in enumerate(row):
            if i == t:
                continue
            cell = cell.strip()
            if not cell:
                raise CorruptFileError(f'{path}: column "{header[i]}" row {r}: empty cell (missing value); fill it '
                                       "in or drop the row")
            try:
                v = float(cell)
            except ValueError:
                raise CorruptFileError(f'{path}: column "{header[i]}" row {r}: "{cell}" is not a number') from None
            if not math.isfinite(v):
                raise CorruptFileError(f'{path}: column "{header[i]}" row {r}: "{cell}" is not a finite number '
                                       "(missing values are not supported)")
            x[r - 1, j] = v
            j += 1
    return tuple(features), x, np.array(labels)


def _count(n, noun):
    """``"1 such value"``, ``"3 such values"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _read_npz_table(path):
    """(feature names, (N, D) float64 features, (N,) labels) from an .npz file with arrays X (or x) and y."""
    if not zipfile.is_zipfile(path):  # np.load would take any other file for a pickle or a single .npy
        raise CorruptFileError(f"{path}: not an .npz file (not a zip archive of arrays); save one with "
                               "np.savez(path, X=X, y=y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            xkey = "X" if "X" in names else ("x" if "x" in names else None)
            if xkey is None or "y" not in names:
                missing = " and ".join(k for k, ok in (("X (or x)", xkey), ("y", "y" in names)) if not ok)
                raise CorruptFileError(f"{path}: no array named {missing}; the file holds "
                                       f"{', '.join(names) or 'no arrays'}. Save it with np.savez(path, X=X, y=y)")
            x, y = archive[xkey], archive["y"]
    except CorruptFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CorruptFileError(f"{path}: holds object arrays (pickled Python objects), which are not loaded; "
                                   "store numbers and strings as plain arrays") from None
        raise CorruptFileError(f"{path}: cannot read the .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CorruptFileError(f"{path}: not an .npz file ({type(exc).__name__}: {exc})") from None
    if x.ndim != 2:
        raise CorruptFileError(f"{path}: {xkey} has shape {x.shape}; expected 2-D (rows, features)")
    if y.ndim != 1:
        raise CorruptFileError(f"{path}: y has shape {y.shape}; expected 1-D (one label per row)")
    if x.shape[0] != y.shape[0]:
        raise CorruptFileError(f"{path}: {xkey} has {x.shape[0]} rows but y has {y.shape[0]} labels")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise CorruptFileError(f"{path}: {xkey} has shape {x.shape}; it holds no data")
    if x.dtype.kind not in "biuf":
        raise CorruptFileError(f"{path}: {xkey} holds {x.dtype} values; expected numbers")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        raise CorruptFileError(f"{path}: {xkey}[{r}, {c}] is {x[r, c]}; features must be finite numbers "
                               f"({_count(len(bad), 'such value')})")
    if y.dtype.kind not in "biufUS":
        raise CorruptFileError(f"{path}: y holds {y.dtype} values; expected integers or strings")
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8")
    if y.dtype.kind == "f":
        nonfinite = np.flatnonzero(~np.isfinite(y))
        if nonfinite.size:
            raise CorruptFileError(f"{path}: y[{int(nonfinite[0])}] is {y[nonfinite[0]]}; labels must be finite "
                                   f"({_count(nonfinite.size, 'such label')})")
        if np.any(y != np.round(y)):
            raise CorruptFileError(f"{path}: y holds floats that are not whole numbers; expected class labels")
        y = y.astype(np.int64)
    labels = np.array([str(v) for v in y.tolist()])
    return tuple(f"feature {j}" for j in range(x.shape[1])), x, labels


def read_table(path, target=None):
    """Read a table file without splitting it.

    Parameters
    ----------
    path : str or Path, a ``.csv`` or ``.npz`` file
    target : str, optional, the label column of a CSV file (default: the last column)

    Returns
    -------
    feature_names : tuple of str, length D
    x : ndarray (N, D) float64
    labels : ndarray (N,) of str, the label of each row as text
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise CorruptFileError(f"{path}: unknown table format {suffix or '(no suffix)'}; expected .csv or .npz")
    _check_file(path)
    if suffix == ".csv":
        return _read_csv(path, target)
    if target:
        raise ValueError(f"{path}: target {target!r} applies to CSV files; an .npz file holds its labels as y")
    return _read_npz_table(path)


def class_names_of(labels):
    """The distinct labels, sorted numerically when every label is a number, else as text.

    Integer-valued numbers are written without a decimal point ("2.0" and "2" are one class "2").
    """
    labels = np.asarray(labels)
    try:
        values = np.array([float(v) for v in labels])
    except ValueError:
        return tuple(sorted(set(labels.tolist())))
    if np.isfinite(values).all():
        distinct = sorted(set(values.tolist()))
        return tuple(str(int(v)) if v == int(v) else repr(v) for v in distinct)
    return tuple(sorted(set(labels.tolist())))


def _encode(path, labels, class_names):
    """Label texts -> int64 indices into class_names; unknown labels raise naming the file."""
    try:
        values = [float(v) for v in labels]
        keys = [str(int(v)) if v == int(v) else repr(v) for v in values]
    except (ValueError, OverflowError):
        keys = list(labels)
    index = {c: i for i, c in enumerate(class_names)}
    out = np.empty(len(keys), dtype=np.int64)
    for r, k in enumerate(keys):
        if k not in index:
            raise CorruptFileError(f'{path}: row {r + 1} has class "{k}", which the training file does not have '
                                   f"(its classes: {', '.join(class_names)})")
        out[r] = index[k]
    return out


def _stratified_split(path, x, y, fraction, seed, what, option):
    """Seeded stratified split off ``fraction`` of the rows; clear errors when the classes are too small."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_classes = len(np.unique(y))
    n_out = math.ceil(fraction * n)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if n_out < n_classes or n - n_out < n_classes or counts.min() < 2:
        raise CorruptFileError(
            f"{path}: {n} rows in {n_classes} classes (smallest class: {int(counts.min())} rows) are too few to "
            f"hold out a stratified {what} part of {fraction:g} with every class on both sides; "
            f"{option}")
    return train_test_split(x, y, test_size=n_out, random_state=seed, stratify=y)


def load_table(path, target=None, test_path=None, test_fraction=0.2, seed=0, val_fraction=0.1, limit=None):
    """Load a table file as a :class:`~vaelayer_np.run.data.Dataset` with seeded stratified splits.

    Parameters
    ----------
    path : str or Path, a ``.csv`` (header row) or ``.npz`` (arrays X or x, and y) file
    target : str, optional, the label column of a CSV file (default: the last column)
    test_path : str or Path, optional, a test file of the same columns; without it a
        stratified ``test_fraction`` of ``path`` is held out
    test_fraction : float in (0, 0.5], used without ``test_path``
    seed : int, fixes both splits
    val_fraction : float in [0, 0.5], part of the training rows held out (stratified) for validation
    limit : positive int, optional, keep only this many training rows

    Returns
    -------
    Dataset
        ``x_*`` float32 (N, D) standardised with the training rows' ``feature_mean`` and
        ``feature_std`` (D,) (a constant column gets std 1), ``y_*`` int64 class indices,
        ``class_names`` the sorted labels as text, ``feature_names`` the column names,
        ``image_shape`` None, ``name`` the file's name.
    """
    from .data import _check_limit, _check_val_fraction

    path = Path(path)
    val_fraction = _check_val_fraction(val_fraction)
    limit = _check_limit(limit)
    if test_path is None or test_path == "":
        try:
            test_fraction = float(test_fraction)
        except (TypeError, ValueError):
            test_fraction = float("nan")
        if not 0.0 < test_fraction <= 0.5:
            raise ValueError(f"test_fraction: expected a number in (0, 0.5], got {test_fraction!r}")
    features, x, labels = read_table(path, target)
    class_names = class_names_of(labels)
    if len(class_names) < 2:
        raise CorruptFileError(f"{path}: every row has the label \"{class_names[0]}\"; a classifier needs at least "
                               "two classes" + (f' (is "{target}" the right target column?)' if target else ""))
    y = _encode(path, labels, class_names)
    if len(y) < len(class_names):
        raise CorruptFileError(f"{path}: {len(y)} rows but {len(class_names)} classes; each class needs rows")
    if test_path is None or test_path == "":
        x_trv, x_test, y_trv, y_test = _stratified_split(path, x, y, test_fraction, seed, "test",
                                                         "give a test file or more rows")
    else:
        test_path = Path(test_path)
        test_features, x_test, test_labels = read_table(test_path, target)
        if test_path.suffix.lower() == ".csv" and path.suffix.lower() == ".csv":
            if set(test_features) != set(features):
                raise CorruptFileError(f"{test_path}: its feature columns ({', '.join(test_features)}) differ from "
                                       f"those of {path} ({', '.join(features)})")
            x_test = x_test[:, [test_features.index(f) for f in features]]
        elif x_test.shape[1] != x.shape[1]:
            raise CorruptFileError(f"{test_path}: {x_test.shape[1]} features, {path} has {x.shape[1]}")
        y_test = _encode(test_path, test_labels, class_names)
        x_trv, y_trv = x, y
    if val_fraction > 0:
        x_train, x_val, y_train, y_val = _stratified_split(path, x_trv, y_trv, val_fraction, seed + 1, "validation",
                                                           "use --val-fraction 0 or more rows")
    else:
        x_train, y_train = x_trv, y_trv
        x_val, y_val = np.empty((0, x.shape[1])), np.empty((0,), np.int64)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0

    def scaled(a):
        return np.ascontiguousarray(((a - mean) / std).astype(np.float32))

    return Dataset(path.name, scaled(x_train), np.asarray(y_train, np.int64), scaled(x_val),
                   np.asarray(y_val, np.int64), scaled(x_test), np.asarray(y_test, np.int64), None,
                   tuple(class_names), feature_names=tuple(features), feature_mean=mean.astype(np.float32),
                   feature_std=std.astype(np.float32))


def load_table_for_config(config):
    """The Dataset of a TrainConfig with ``data`` set, and the config's sizes fitted to it when not given."""
    ds = load_table(config.data, target=config.target or None, test_path=config.test_data or None,
                    test_fraction=config.test_fraction, seed=config.seed, val_fraction=config.val_fraction,
                    limit=config.limit)
    fit_config_to_table(config, ds.n_features, ds.n_classes)
    return ds


def table_name(path):
    """The name a table's runs carry (folder names, plot titles): the file's name."""
    return os.path.basename(str(path))
