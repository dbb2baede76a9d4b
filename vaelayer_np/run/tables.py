"""Your own data: tables from CSV or ``.npz`` files, and model sizes that fit them.

:func:`load_table` reads a table and returns a :class:`~vaelayer_np.run.data.Dataset`
like the image datasets, so ``vaelayer train --data wine.csv --target class``,
``vaelayer evaluate`` and ``vaelayer plot`` work on it:

* **CSV**: a header row naming the columns, then one row per example. ``target``
  names the label column (default: the last column); every other column is a
  feature and every feature cell must be a finite number. Labels may be any text
  or whole numbers (``"setosa"``, ``1..3``, ``2.0``); the class names are the distinct
  labels, sorted (numerically when every label is a number). A label column of numbers
  with a fraction (``1.5``) or a non-finite one (``nan``) is refused, as in an .npz file:
  it holds measurements (a regression target) or missing labels, not classes.
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

import array
import csv
import io
import itertools
import math
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from ..core._validate import check_path
from .checkpoint import duplicate_member, read_npy_header
from .data import MAX_DATA_BYTES, CorruptFileError, Dataset, DatasetNotFoundError

TABLE_SUFFIXES = (".csv", ".npz")
TABLE_EPOCHS = 100
"""Default epochs for a table (the image datasets keep theirs): small tables need many short epochs."""
TABLE_BATCH = 32
"""Default mini-batch size for a table."""
SEED_LIMIT = 2 ** 32
"""Seeds lie in 0..SEED_LIMIT-1 (what NumPy's and scikit-learn's generators accept)."""

_DELIMITERS = (",", ";", "\t")
_SNIFF_BYTES = 1 << 16  # the first bytes decide the delimiter (and show binary data)
_SNIFF_ROWS = 50
_BLOCK_ROWS = 4096  # rows of floats gathered per float64 block while a CSV file is read
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand more than this: a larger claim is a lie
_LONGEST_PLAIN_NUMBER = 400  # digits of a numeric label written out in full; longer ones as 1.5e+400
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+")  # 1,5 or 1,000: a number written with a comma


# ----------------------------------------------------------------------------- model sizes
def fit_sizes(n_features: int, n_classes: int) -> tuple[tuple[int, int], int]:
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


def fit_config_to_table(config: Any, n_features: int, n_classes: int) -> Any:  # a TrainConfig (config imports us)
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
def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: file not found") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot open the file ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CorruptFileError(f"{path}: is a folder, not a table file (.csv or .npz)")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path}: is not a regular file; expected a table (.csv or .npz)")
    if st.st_size == 0:
        raise CorruptFileError(f"{path}: the file is empty; expected a table with a header row")
    if st.st_size > MAX_DATA_BYTES:
        raise CorruptFileError(f"{path}: {st.st_size} bytes, more than the {MAX_DATA_BYTES}-byte limit for a table "
                               "(MAX_DATA_BYTES)")


def _first_bytes(path: str | Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_ENCODING_NAMES = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16",
                   "utf-32": "UTF-32", "utf-32-le": "UTF-32", "utf-32-be": "UTF-32"}


def text_encoding(head: bytes) -> str | None:
    """The encoding of a text file from its first bytes: its byte-order mark (UTF-8, UTF-16, UTF-32), else the
    pattern of its NUL bytes (UTF-16 or UTF-32 without a mark, little- or big-endian), else UTF-8.

    None when the bytes hold NULs in no such pattern (binary data). What Excel and PowerShell write as
    "Unicode" text is UTF-16 with a mark."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\x00" not in head:
        return "utf-8-sig"
    for width, name in ((4, "utf-32"), (2, "utf-16")):
        n = len(head) - len(head) % width
        if n < width:
            continue
        units = [head[i:i + width] for i in range(0, n, width)]
        for order in ("le", "be"):
            # ASCII text (the digits, delimiters and line ends of a table) has one non-NUL byte per unit, at the
            # low end; a table's first bytes are such text
            low = 0 if order == "le" else width - 1
            ascii_units = sum(1 for u in units if u[low] != 0 and not any(u[j] for j in range(width) if j != low))
            if ascii_units >= 0.9 * len(units) and units[0][low] != 0:
                return f"{name}-{order}"
    return None


def _sniff_delimiter(sample: str) -> str:
    """The delimiter (",", ";" or tab) that splits the first rows of ``sample`` into the same number (> 1) of
    cells, the most cells winning; quoted cells are respected (a comma inside quotes separates nothing)."""
    best, best_key = ",", None
    for rank, delimiter in enumerate(_DELIMITERS):
        try:
            rows = [r for r in itertools.islice(csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter),
                                                _SNIFF_ROWS) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        n = len(rows[0])
        key = (all(len(r) == n for r in rows[1:]), n, -rank)
        if best_key is None or key > best_key:
            best, best_key = delimiter, key
    return best


def _csv_error(path: str | Path, line: int, exc: BaseException) -> CorruptFileError:
    """A CorruptFileError for a ``csv.Error`` met at ``line`` of ``path``."""
    text = str(exc)
    if "field larger than field limit" in text:
        return CorruptFileError(f"{path}: line {line}: a cell longer than {csv.field_size_limit()} characters, "
                                "the longest a CSV cell may be; is this a CSV table (a quote left open?)")
    if "NUL" in text:
        return CorruptFileError(f"{path}: line {line}: holds a NUL byte (binary data); expected a CSV text table")
    return CorruptFileError(f"{path}: line {line}: not a valid CSV row ({text})")


class _Columns:
    """Rows of floats gathered in float64 blocks (memory: the numbers, not one Python object per cell)."""

    def __init__(self, path: str | Path, width: int) -> None:
        self.path, self.width = path, width
        self.blocks: list[np.ndarray] = []
        self.pending: list[list[float]] = []
        self.rows = 0
        self.max_rows = max(1, MAX_DATA_BYTES // (8 * max(width, 1)))

    def add(self, values: list[float]) -> None:
        self.pending.append(values)
        self.rows += 1
        if self.rows > self.max_rows:
            raise CorruptFileError(f"{self.path}: more than {self.max_rows} rows of {self.width} features: "
                                   f"{self.rows * self.width * 8} bytes as float64, more than the "
                                   f"{MAX_DATA_BYTES}-byte "
                                   "limit for a table's features (MAX_DATA_BYTES); use a part of the rows")
        if len(self.pending) >= _BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.blocks.append(np.array(self.pending, dtype=np.float64).reshape(len(self.pending), self.width))
            self.pending = []

    def array(self) -> np.ndarray:
        self.flush()
        if len(self.blocks) == 1:
            return self.blocks.pop()
        out = np.concatenate(self.blocks, axis=0) if self.blocks else np.empty((0, self.width))
        self.blocks = []
        return out


def _read_csv(path: str | Path, target: str | None) -> tuple[tuple[str, ...], np.ndarray, list[str], np.ndarray]:
    """(feature names, (N, D) float64 features, distinct label texts, (N,) int64 codes into them) of a CSV file.

    The file is read as a stream (memory grows with the numbers, not with the text); line endings
    may be \\n, \\r\\n or \\r alone.
    """
    head = _first_bytes(path, _SNIFF_BYTES)
    encoding = text_encoding(head)
    if encoding is None:
        raise CorruptFileError(f"{path}: not a text table (the file holds NUL bytes in no pattern of UTF-8, UTF-16 "
                               "or UTF-32 text: binary data); expected a CSV file with a header row")
    sample = head.decode(encoding, errors="replace")
    if len(head) == _SNIFF_BYTES:  # only whole lines
        cut = max(sample.rfind("\n"), sample.rfind("\r"))
        sample = sample[:cut] if cut > 0 else sample
    delimiter = _sniff_delimiter(sample)
    try:
        fh = open(path, encoding=encoding, newline="")
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            return _parse_csv(path, target, reader)
        except csv.Error as exc:
            raise _csv_error(path, reader.line_num, exc) from None
        except UnicodeDecodeError:
            name = _ENCODING_NAMES.get(encoding, encoding)
            raise CorruptFileError(f"{path}: not a {name} text table (read as {name}: an undecodable byte near line "
                                   f"{reader.line_num + 1}); save the file as UTF-8 CSV") from None
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _parse_csv(path: str | Path, target: str | None,
               reader: Iterator[list[str]]) -> tuple[tuple[str, ...], np.ndarray, list[str], np.ndarray]:
    header = None
    for row in reader:
        if any(c.strip() for c in row):
            header = [c.strip() for c in row]
            break
    if header is None:
        raise CorruptFileError(f"{path}: the file holds no rows; expected a header row and data rows")
    if len(header) < 2:
        raise CorruptFileError(f"{path}: the header row has {len(header)} column; a table needs at least one "
                               "feature column and a label column (separated by commas, semicolons or tabs)")
    if any(not h for h in header):
        # pandas' to_csv writes the row index as a first column without a name
        index = " (pandas writes its row index there: save with to_csv(path, index=False))" if not header[0] else ""
        raise CorruptFileError(f"{path}: column {header.index('') + 1} of the header row has no name{index}")
    seen = set()
    for h in header:
        if h in seen:
            raise CorruptFileError(f'{path}: two columns are named "{_shorten(h)}"; column names must be unique')
        seen.add(h)
    if target is None or target == "":
        t = len(header) - 1
    elif target in header:
        t = header.index(target)
    else:
        raise CorruptFileError(f'{path}: no column "{_shorten(target)}" (the target); the columns are: '
                               + ", ".join(_shorten(h, 40) for h in header))
    features = [h for i, h in enumerate(header) if i != t]
    feature_columns = [i for i in range(len(header)) if i != t]
    if all(_is_finite_text(h) for h in features) and not all(h.isdigit() for h in features):
        # a file without a header row: its first row of numbers would name the columns and be lost as data
        raise CorruptFileError(f"{path}: the first row ({_shorten(', '.join(header))}) names the columns with "
                               "numbers like data; the file seems to lack its header row: add one naming each "
                               "column (e.g. a,b,label)")
    columns = _Columns(path, len(features))
    texts: dict[str, int] = {}
    codes = array.array("q")
    r = 0
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        r += 1
        if len(row) != len(header):
            spans = any("\n" in c or "\r" in c for c in row)
            raise CorruptFileError(f"{path}: row {r} has {len(row)} cells, the header has {len(header)} columns"
                                   + (" (a cell spans several lines: a quote left open?)" if spans else ""))
        label = row[t].strip()
        if not label:
            raise CorruptFileError(f'{path}: column "{_shorten(header[t])}" row {r}: empty label (missing value)')
        code = texts.get(label)
        if code is None:
            code = texts[label] = len(texts)
        codes.append(code)
        values = []
        for i in feature_columns:
            cell = row[i].strip()
            if not cell:
                raise CorruptFileError(f'{path}: column "{_shorten(header[i])}" row {r}: empty cell (missing value); '
                                       "fill it in or drop the row")
            try:
                v = float(cell)
            except ValueError:
                raise CorruptFileError(f'{path}: column "{_shorten(header[i])}" row {r}: "{_shorten(cell)}" is not a '
                                       "number" + _not_a_number_hint(cell, header[i], header[t], target)) from None
            if not math.isfinite(v):
                what = "is beyond the float64 range (about 1.8e308)" if _is_finite_text(cell) else \
                    "is not a finite number (missing values are not supported)"
                raise CorruptFileError(f'{path}: column "{_shorten(header[i])}" row {r}: "{_shorten(cell)}" {what}')
            values.append(v)
        columns.add(values)
    if r == 0:
        raise CorruptFileError(f"{path}: only a header row, no data rows")
    labels, label_codes = list(texts), np.frombuffer(codes, dtype=np.int64).copy()
    _check_numeric_labels(path, header[t], labels, label_codes, target)
    _check_missing_labels(path, header[t], labels, label_codes)
    return tuple(features), columns.array(), labels, label_codes


def _is_whole(value: Decimal) -> bool:
    """A finite Decimal is a whole number ("2", "2.0", "1E+2", "100e-2"; not "1.5"), decided from its digits
    alone (no arithmetic context to overflow)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent >= 0:
        return True
    text = "".join(map(str, digits))
    return not text.strip("0") or len(text) - len(text.rstrip("0")) >= -exponent


def _check_numeric_labels(path: str | Path, column: str, texts: Sequence[str], codes: np.ndarray,
                          target: str | None) -> None:
    """A label column of numbers holds classes only when every number is whole and finite, as an .npz file's y
    must: ``1.5`` or ``nan`` among numbers is a measurement (a regression target), a missing label or the wrong
    column. Text labels ("setosa", or numbers mixed with text) and whole numbers written "2.0" pass."""
    values = []
    for text in texts:
        try:
            values.append(Decimal(text))
        except (InvalidOperation, ValueError):
            return  # a text label: the labels are names
    nonfinite = [j for j, v in enumerate(values) if not v.is_finite()]
    fraction = [j for j, v in enumerate(values) if v.is_finite() and not _is_whole(v)]
    bad = nonfinite or fraction
    if not bad:
        return
    rows = np.flatnonzero(np.isin(codes, bad))
    r = int(rows[0])
    cell, name = _shorten(texts[int(codes[r])]), _shorten(column, 40)
    where = (f'is "{name}" the label column? --target names it' if target else
             f'the labels are read from the last column, "{name}": if another column holds them, name it with '
             '--target')
    if nonfinite:
        raise CorruptFileError(f'{path}: column "{name}" row {r + 1}: the label "{cell}" is not a finite number '
                               f"({_count(len(rows), 'such label')}); every row needs a class label (a missing "
                               f"label?); {where}")
    raise CorruptFileError(f'{path}: column "{name}" row {r + 1}: the label "{cell}" is not a whole number '
                           f"({_count(len(rows), 'such label')}); class labels are names or whole numbers, as in an "
                           f".npz file. Numbers with fractions are measurements (a regression target), not classes; "
                           f"{where}")


# The texts that spreadsheets, pandas and R write (and read back) for a missing value. A label column of names that
# holds one of them has rows without a label: read as a class of its own, it would be learned and predicted.
MISSING_MARKERS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                             "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _missing_label_rows(texts: Sequence[str], codes: np.ndarray) -> np.ndarray:
    """The rows whose label (``texts[codes[row]]``) is empty or a missing-value marker."""
    missing = [j for j, text in enumerate(texts) if not text.strip() or text.strip() in MISSING_MARKERS]
    return np.flatnonzero(np.isin(codes, missing))


def _check_missing_labels(path: str | Path, column: str, texts: Sequence[str], codes: np.ndarray) -> None:
    """A label that is a missing-value marker (``NA``, ``nan``, ``#N/A``, ``null``, ...) is refused, naming the first
    row that holds one and how many do: such a row has no class."""
    rows = _missing_label_rows(texts, codes)
    if not rows.size:
        return
    r = int(rows[0])
    raise CorruptFileError(f'{path}: column "{_shorten(column, 40)}" row {r + 1}: the label '
                           f'"{_shorten(texts[int(codes[r])])}" marks a missing value (as spreadsheets, pandas and R '
                           f"write it; {_count(len(rows), 'such label')}); every row needs a class label: fill it in "
                           "or drop the row")


def _not_a_number_hint(cell: str, column: str, label_column: str, target: str | None) -> str:
    """What a text in a feature column most likely means: a decimal comma, or the labels in a column that is
    not the target (the target defaults to the last column)."""
    if _DECIMAL_COMMA.fullmatch(cell):
        return " (a comma in a number: write numbers with a decimal point and without thousands separators)"
    if not target:
        name = _shorten(column, 40)
        return (f'; the labels are read from the last column, "{_shorten(label_column, 40)}": if "{name}" holds '
                f'them, name it as the target (--target "{name}")')
    return ""


def _is_finite_text(cell: str) -> bool:
    try:
        return Decimal(cell).is_finite()
    except (InvalidOperation, ValueError):
        return False


def _shorten(text: str, limit: int = 60) -> str:
    """Text for a one-line message: line breaks and tabs written as \\n, \\r, \\t; at most ``limit`` characters."""
    text = str(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _count(n: int, noun: str) -> str:
    """``"1 such value"``, ``"3 such values"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _npz_member(path: str | Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, file_size: int) -> np.ndarray:
    """The array of one ``.npy`` member of an .npz table, its sizes checked before anything is allocated."""
    if info.flag_bits & 0x1:
        raise CorruptFileError(f"{path}: array {key} is encrypted; not an .npz table")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CorruptFileError(f"{path}: array {key} uses an unsupported compression method ({info.compress_type})")
    if info.compress_size > file_size or info.file_size > _DEFLATE_MAX_RATIO * max(info.compress_size, 1) + 1024:
        raise CorruptFileError(f"{path}: array {key} claims {info.file_size} bytes, impossible in a {file_size}-byte "
                               "file; the file is corrupt")
    with zf.open(info) as member:
        try:
            shape, dtype, header_len = read_npy_header(member)
        except ValueError as exc:
            raise CorruptFileError(f"{path}: array {key} {exc}; save it with np.savez") from None
        if dtype.hasobject:
            raise CorruptFileError(f"{path}: holds object arrays (pickled Python objects, array {key}), which are not "
                                   "loaded; store numbers and strings as plain arrays")
        count = math.prod(int(s) for s in shape)
        nbytes = count * dtype.itemsize
        as_float = count * 8 if key in ("X", "x") else nbytes
        if max(nbytes, as_float) > MAX_DATA_BYTES:
            raise CorruptFileError(f"{path}: array {key} has shape {tuple(shape)} {dtype} ({max(nbytes, as_float)} "
                                   f"bytes{' as float64' if as_float > nbytes else ''}), more than the "
                                   f"{MAX_DATA_BYTES}-byte limit for a table (MAX_DATA_BYTES)")
        if header_len + nbytes != info.file_size:
            raise CorruptFileError(f"{path}: array {key} has shape {tuple(shape)} {dtype} ({nbytes} bytes) but holds "
                                   f"{info.file_size - header_len}; the file is corrupt or truncated")
    with zf.open(info) as member:  # the sizes add up: now numpy may allocate and read
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_npz_table(path: str | Path) -> tuple[tuple[str, ...], np.ndarray, list[str], np.ndarray]:
    """(feature names, (N, D) float64 features, distinct label texts, (N,) codes) from an .npz file with X and y."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with fh:
        # np.load would take any other file for a pickle or a single .npy
        if not zipfile.is_zipfile(fh):
            raise CorruptFileError(f"{path}: not an .npz file (not a zip archive of arrays); save one with "
                                   "np.savez(path, X=X, y=y)")
        try:
            fh.seek(0)
            file_size = os.fstat(fh.fileno()).st_size
            with zipfile.ZipFile(fh) as zf:
                twice = duplicate_member(zf)
                if twice is not None:
                    raise CorruptFileError(f"{path}: the archive holds two members named {twice!r}; np.load would "
                                           "show one and training could read the other, so the file is refused. "
                                           "Save it again with np.savez(path, X=X, y=y)")
                infos: dict[str, zipfile.ZipInfo] = {}
                for info in zf.infolist():
                    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    infos.setdefault(name, info)
                names = list(infos)
                xkey = "X" if "X" in names else ("x" if "x" in names else None)
                if xkey is None or "y" not in names:
                    missing = " and ".join(k for k, ok in (("X (or x)", xkey), ("y", "y" in names)) if not ok)
                    shown = ", ".join(_shorten(n, 30) for n in names[:10]) or "no arrays"
                    raise CorruptFileError(f"{path}: no array named {missing}; the file holds {shown}. Save it with "
                                           "np.savez(path, X=X, y=y)")
                x = _npz_member(path, zf, infos[xkey], xkey, file_size)
                y = _npz_member(path, zf, infos["y"], "y", file_size)
        except CorruptFileError:
            raise
        except MemoryError:
            raise CorruptFileError(f"{path}: not enough memory to read the arrays") from None
        except Exception as exc:  # noqa: BLE001 - hostile bytes can fail anywhere in zipfile, zlib or numpy
            raise CorruptFileError(f"{path}: cannot read the .npz file ({type(exc).__name__}: "
                                   f"{_shorten(' '.join(str(exc).split()), 200)}); the file is corrupt or "
                                   "truncated") from None
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
    texts, codes = _npz_labels(path, y)
    return tuple(f"feature {j}" for j in range(x.shape[1])), x, texts, codes


def _npz_labels(path: str | Path, y: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct label texts and (N,) codes of an .npz file's y; integers stay exact at any size."""
    if y.dtype.kind not in "biufUS":
        raise CorruptFileError(f"{path}: y holds {y.dtype} values; expected integers or strings")
    if y.dtype.kind == "f":
        nonfinite = np.flatnonzero(~np.isfinite(y))
        if nonfinite.size:
            raise CorruptFileError(f"{path}: y[{int(nonfinite[0])}] is {y[nonfinite[0]]}; labels must be finite "
                                   f"({_count(nonfinite.size, 'such label')})")
        fraction = np.flatnonzero(y != np.round(y))
        if fraction.size:
            raise CorruptFileError(f"{path}: y holds floats that are not whole numbers (y[{int(fraction[0])}] is "
                                   f"{float(y[fraction[0]])!r}, {_count(fraction.size, 'such label')}); expected class "
                                   "labels (integers, whole numbers or strings). Numbers with fractions are "
                                   "measurements (a regression target), not classes")
    distinct, codes = np.unique(y, return_inverse=True)
    if y.dtype.kind == "S":
        texts = []
        for v in distinct.tolist():
            try:
                texts.append(v.decode("utf-8"))
            except UnicodeDecodeError as exc:
                row = int(np.flatnonzero(y == v)[0])
                raise CorruptFileError(f"{path}: y[{row}] holds bytes that are not UTF-8 text (byte {exc.start}: "
                                       f"{v[exc.start:exc.start + 1]!r}); store labels as numbers or UTF-8 "
                                       "strings") from None
    elif y.dtype.kind == "f":
        texts = [str(int(v)) for v in distinct.tolist()]  # int(float) is exact: no rounding to 2**53 on the way
    else:
        texts = [str(v) for v in distinct.tolist()]  # Python ints from int64 / uint64: exact
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    rows = _missing_label_rows(texts, codes) if y.dtype.kind in "US" else np.empty(0, np.int64)
    if rows.size:
        raise CorruptFileError(f'{path}: y[{int(rows[0])}] is "{_shorten(texts[int(codes[rows[0]])])}", which marks a '
                               f"missing value ({_count(rows.size, 'such label')}); every example needs a class label: "
                               "fill it in or drop the example")
    return texts, codes


def _read_coded(path: str | Path,
                target: str | None = None) -> tuple[tuple[str, ...], np.ndarray, list[str], np.ndarray]:
    """(feature names, x, distinct label texts, codes) of a table file (see :func:`read_table`)."""
    path = check_path("path", path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise CorruptFileError(f"{path}: unknown table format {suffix or '(no suffix)'}; expected .csv or .npz")
    _check_file(path)
    if suffix == ".csv":
        return _read_csv(path, target)
    if target:
        raise ValueError(f"{path}: target {target!r} applies to CSV files; an .npz file holds its labels as y")
    return _read_npz_table(path)


def read_table(path: str | Path, target: str | None = None) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Read a table file without splitting it.

    Parameters
    ----------
    path : str or Path, a ``.csv`` or ``.npz`` file
    target : str, optional, the label column of a CSV file (default: the last column)

    Returns
    -------
    feature_names : tuple of str, length D
    x : np.ndarray (N, D) float64
    labels : np.ndarray (N,) of str, the label of each row as text
    """
    features, x, texts, codes = _read_coded(path, target)
    return features, x, np.array(texts)[codes]


# ----------------------------------------------------------------------------- labels


def _as_number(text: str) -> Decimal | None:
    """The exact value of a label text as a finite Decimal, or None when it is not a number."""
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return value if value.is_finite() else None


def _number_name(value: Any) -> str:
    """The canonical text of a finite Decimal: "2" for 2, 2.0 and 2.00; "2.5"; exact at any size."""
    sign, digits, exponent = value.as_tuple()
    digits = list(digits)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    if digits == [0]:
        return "0"
    text = "".join(map(str, digits))
    minus = "-" if sign else ""
    if 0 <= exponent and len(text) + exponent <= _LONGEST_PLAIN_NUMBER:
        return minus + text + "0" * exponent
    point = len(text) + exponent  # digits before the decimal point
    if exponent < 0 and -_LONGEST_PLAIN_NUMBER < point:
        return minus + (text[:point] + "." + text[point:] if point > 0 else "0." + "0" * -point + text)
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{minus}{mantissa}e{point - 1:+d}"


def _classes(texts: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """(class names, kind) of distinct label texts: numbers when every text is one (sorted by value,
    equal values one class), else the texts sorted; ``key(text)`` gives a text's class name."""
    numbers = [_as_number(t) for t in texts]
    if texts and all(v is not None for v in numbers):
        by_name: dict[str, Decimal] = {}
        for v in (n for n in numbers if n is not None):  # every one is a number here
            by_name.setdefault(_number_name(v), v)
        return tuple(sorted(by_name, key=by_name.__getitem__)), "number"
    return tuple(sorted(set(texts))), "text"


def _class_key(text: str, kind: str) -> str | None:
    if kind == "text":
        return text
    v = _as_number(text)
    return None if v is None else _number_name(v)


def class_names_of(labels: Any) -> tuple[str, ...]:
    """The distinct labels, sorted numerically when every label is a number, else as text.

    Numbers are compared exactly (never through float: 9007199254740993 and 9007199254740992 are two
    classes); integer-valued numbers are written without a decimal point ("2.0" and "2" are one class "2").
    """
    return _classes(sorted(set(str(v) for v in np.asarray(labels).tolist())))[0]


def _encode(path: str | Path, texts: Sequence[str], codes: np.ndarray, class_names: Sequence[str],
            kind: str) -> np.ndarray:
    """Codes into the distinct label texts -> int64 indices into class_names; an unknown label raises naming the
    file and its first row."""
    index: dict[str | None, int] = {c: i for i, c in enumerate(class_names)}
    table = np.empty(len(texts), dtype=np.int64)
    for j, text in enumerate(texts):
        i = index.get(_class_key(text, kind))
        if i is None:
            r = int(np.flatnonzero(codes == j)[0])
            shown = ", ".join(_shorten(c, 40) for c in class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            raise CorruptFileError(f'{path}: row {r + 1} has class "{_shorten(text)}", which the training file does '
                                   f"not have (its classes: {shown})")
        table[j] = i
    return table[codes]


# ----------------------------------------------------------------------------- statistics
class ConstantColumnWarning(UserWarning):
    """A feature column holds one value on every training row: it carries no information and is scaled to 0."""


def column_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of ``x``, safe over the whole float64 range.

    Each column is first divided by a power of two near its largest magnitude (exact, no rounding),
    so no sum or square overflows (values near 1.8e308) or underflows (values near 1e-300); the
    results are scaled back. Returns ``(mean, std, constant)``: float64 (D,) arrays and a bool (D,)
    mask of the columns that hold one value on every row (their std is 0).
    """
    x = np.asarray(x, dtype=np.float64)
    peak = np.max(np.abs(x), axis=0)
    _, exponent = np.frexp(peak)  # peak = m * 2**exponent, m in [0.5, 1)
    shift = np.where(peak > 0, exponent - 1, 0)
    xs = np.ldexp(x, -shift)  # |xs| < 2
    mean_s = xs.mean(axis=0)
    std_s = np.sqrt(np.mean(np.square(xs - mean_s), axis=0))
    constant = np.all(x == x[:1], axis=0)
    mean, std = np.ldexp(mean_s, shift), np.ldexp(std_s, shift)
    mean[constant] = x[0, constant]
    std[constant] = 0.0
    # a column that is not constant keeps a positive spread (only a column spanning >1000 binades could round to 0)
    std[~constant & (std == 0)] = np.finfo(np.float64).smallest_subnormal
    return mean, std, constant


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` in float64 without overflow in the difference (values of opposite signs near
    1.8e308); entries whose result is beyond float64 come out as inf (see :func:`check_standardized`)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        z = (x - mean) / std
        bad = ~np.isfinite(z)
        if bad.any():  # x - mean overflowed: the halves cannot
            half = (x * 0.5 - mean * 0.5) / std
            z = np.where(bad, half * 2.0, z)
    return z


MAX_STANDARD_SCORE = 1e12
"""Largest distance from the training mean, in training standard deviations, of a value the network is given.

Training rows are always within sqrt(N) of it; a validation or test value (or a value given to
``predict``) further away than this is refused with an error naming its column, not passed on
to overflow inside the network."""


def check_standardized(z: np.ndarray, where: str, column_names: Sequence[str],
                       raw: np.ndarray | None = None) -> np.ndarray:
    """Raise a CorruptFileError naming the column when a standardised value is beyond MAX_STANDARD_SCORE."""
    bad = ~(np.abs(z) <= MAX_STANDARD_SCORE)
    if not bad.any():
        return z
    r, c = (int(v) for v in np.argwhere(bad)[0])
    value = f" (the value {raw[r, c]:.6g})" if raw is not None else ""
    raise CorruptFileError(f'{where}: column "{_shorten(column_names[c])}" row {r + 1}{value} lies '
                           f"{abs(z[r, c]):.3g} training standard deviations from the training mean, more than the "
                           f"{MAX_STANDARD_SCORE:g} the network can take ({_count(int(bad.sum()), 'such value')}); "
                           "check the units of that column")


def constant_column_message(where: str | Path, names: Sequence[str], values: Sequence[float]) -> str:
    """One line naming the constant columns (at most five shown)."""
    shown = ", ".join(f'"{n}" (always {v:.6g})' for n, v in list(zip(names, values))[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    one = len(names) == 1
    return (f"{where}: {'column' if one else _count(len(names), 'column')} {shown}{more} "
            f"{'holds' if one else 'hold'} one value on every training row; "
            f"{'it carries' if one else 'they carry'} no information and {'is' if one else 'are'} scaled to 0")


def _labels_not_classes_message(path: Path, n: int, counts: np.ndarray, target: str | None, remedy: str) -> str:
    """More than half the rows alone in their class: no stratified split is possible, and labels that differ on
    nearly every row are measurements (a regression target) or identifiers rather than classes. ``remedy`` says
    what to give if they are classes after all (a few rows of many classes)."""
    if path.suffix.lower() == ".npz":
        where = "y must hold class labels"
    elif target:
        where = f'is "{_shorten(target, 40)}" the label column?'
    else:
        where = "the labels are read from the last column; --target names the label column"
    single = int(np.sum(counts == 1))
    return (f"{path}: {n} rows in {len(counts)} classes are too few: a stratified split needs two rows in every "
            f"class, and {single} {'class has' if single == 1 else 'classes have'} one. Labels that differ on nearly "
            f"every row are measurements (a regression target) or identifiers, not classes; {where}; if they are "
            f"classes, give {remedy}")


def _stratified_split(path: str | Path, x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str,
                      option: str) -> list[np.ndarray]:
    """Seeded stratified split off ``fraction`` of the rows; clear errors when the classes are too small."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_classes = len(np.unique(y))
    n_out = math.ceil(fraction * n)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if n_out < n_classes or n - n_out < n_classes or counts.min() < 2:
        raise CorruptFileError(
            f"{path}: {n} rows in {n_classes} classes (smallest class: {_count(int(counts.min()), 'row')}) are too "
            f"few to hold out a stratified {what} part of {fraction:g} with every class on both sides; "
            f"{option}")
    return train_test_split(x, y, test_size=n_out, random_state=seed % SEED_LIMIT, stratify=y)


def check_seed(seed: int, name: str = "seed") -> int:
    """A seed: an integer in 0..2**32-1 (what NumPy and scikit-learn accept); ValueError naming ``name``."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name}: expected an integer in 0..{SEED_LIMIT - 1}, got {seed!r}")
    return int(seed)


def load_table(path: str | Path, target: str | None = None, test_path: str | Path | None = None,
               test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.1,
               limit: int | None = None) -> Dataset:
    """Load a table file as a :class:`~vaelayer_np.run.data.Dataset` with seeded stratified splits.

    Parameters
    ----------
    path : str or Path, a ``.csv`` (header row) or ``.npz`` (arrays X or x, and y) file
    target : str, optional, the label column of a CSV file (default: the last column)
    test_path : str or Path, optional, a test file of the same columns; without it a
        stratified ``test_fraction`` of ``path`` is held out
    test_fraction : float in (0, 0.5], used without ``test_path``
    seed : int in 0..2**32-1, fixes both splits
    val_fraction : float in [0, 0.5], part of the training rows held out (stratified) for validation
    limit : positive int, optional, keep only this many training rows (every class must keep one:
        :func:`~vaelayer_np.run.data.apply_limit`)

    Returns
    -------
    Dataset
        ``x_*`` float32 (N, D) standardised with the training rows' ``feature_mean`` and
        ``feature_std`` (D,) float64 (computed without overflow at any magnitude, see
        :func:`column_statistics`; a constant column gets std 1 and a
        :class:`ConstantColumnWarning` naming it), ``y_*`` int64 class indices,
        ``class_names`` the sorted labels as text, ``feature_names`` the column names,
        ``image_shape`` None, ``name`` the file's name, ``files`` the files read.
    """
    from .data import _check_limit, _check_val_fraction, apply_limit

    path = check_path("path", path)
    val_fraction = _check_val_fraction(val_fraction)
    limit = _check_limit(limit)
    seed = check_seed(seed)
    if test_path is None or test_path == "":
        try:
            test_fraction = float(test_fraction)
        except (TypeError, ValueError):
            test_fraction = float("nan")
        if not 0.0 < test_fraction <= 0.5:
            raise ValueError(f"test_fraction: expected a number in (0, 0.5], got {test_fraction!r}")
    features, x, texts, codes = _read_coded(path, target)
    class_names, kind = _classes(texts)
    if len(class_names) < 2:
        hint = f' (is "{_shorten(target)}" the right target column?)' if target else ""
        raise CorruptFileError(f"{path}: every row has the label \"{_shorten(class_names[0])}\"; a classifier needs "
                               "at least two classes" + hint)
    y = _encode(path, texts, codes, class_names, kind)
    if len(y) < len(class_names):
        raise CorruptFileError(f"{path}: {len(y)} rows but {len(class_names)} classes; each class needs rows")
    counts = np.bincount(y)
    if 2 * np.sum(counts == 1) > len(y) and (not test_path or val_fraction > 0):
        # more than half the rows are alone in their class: no stratified split is possible, and such labels are
        # rarely classes. A small table with a class of one row is left to the split's own message.
        remedy = "--val-fraction 0" if test_path else "a test file (--test-data) and --val-fraction 0"
        raise CorruptFileError(_labels_not_classes_message(path, len(y), counts, target, remedy))
    files = [("data", path)]
    if test_path is None or test_path == "":
        x_trv, x_test, y_trv, y_test = _stratified_split(path, x, y, test_fraction, seed, "test",
                                                         "give a test file or more rows")
    else:
        test_path = check_path("test_path", test_path)
        files.append(("test_data", test_path))
        test_features, x_test, test_texts, test_codes = _read_coded(test_path, target)
        if test_path.suffix.lower() == ".csv" and path.suffix.lower() == ".csv":
            if set(test_features) != set(features):
                raise CorruptFileError(f"{test_path}: its feature columns ({', '.join(test_features)}) differ from "
                                       f"those of {path} ({', '.join(features)})")
            x_test = x_test[:, [test_features.index(f) for f in features]]
        elif x_test.shape[1] != x.shape[1]:
            raise CorruptFileError(f"{test_path}: {x_test.shape[1]} features, {path} has {x.shape[1]}")
        y_test = _encode(test_path, test_texts, test_codes, class_names, kind)
        x_trv, y_trv = x, y
    del x
    if val_fraction > 0:
        x_train, x_val, y_train, y_val = _stratified_split(path, x_trv, y_trv, val_fraction, seed + 1, "validation",
                                                           "use --val-fraction 0 or more rows")
    else:
        x_train, y_train = x_trv, y_trv
        x_val, y_val = np.empty((0, x_trv.shape[1])), np.empty((0,), np.int64)
    del x_trv
    x_train, y_train = apply_limit(x_train, y_train, limit, class_names, path.name)
    mean, std, constant = column_statistics(x_train)
    if constant.any():
        warnings.warn(constant_column_message(path, [features[j] for j in np.flatnonzero(constant)],
                                              mean[constant]), ConstantColumnWarning, stacklevel=2)
    std[constant] = 1.0

    def scaled(a: np.ndarray, where: str) -> np.ndarray:
        z = check_standardized(standardize(a, mean, std), where, features, raw=a)
        return np.ascontiguousarray(z.astype(np.float32))

    test_where = f"{test_path} (the test file)" if test_path else f"{path} (its test rows)"
    return Dataset(path.name, scaled(x_train, f"{path} (its training rows)"), np.asarray(y_train, np.int64),
                   scaled(x_val, f"{path} (its validation rows)"), np.asarray(y_val, np.int64),
                   scaled(x_test, test_where), np.asarray(y_test, np.int64), None,
                   tuple(class_names), feature_names=tuple(features), feature_mean=mean, feature_std=std,
                   files=tuple((role, str(p)) for role, p in files))


def load_table_for_config(config: Any) -> Dataset:  # a TrainConfig (config imports this module)
    """The Dataset of a TrainConfig with ``data`` set, and the config's sizes fitted to it when not given."""
    ds = load_table(config.data, target=config.target or None, test_path=config.test_data or None,
                    test_fraction=config.test_fraction, seed=config.seed, val_fraction=config.val_fraction,
                    limit=config.limit)
    fit_config_to_table(config, ds.n_features, ds.n_classes)
    return ds


def table_name(path: str | Path) -> str:
    """The name a table's runs carry (folder names, plot titles): the file's name."""
    return os.path.basename(str(path))
