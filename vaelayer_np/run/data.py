"""Datasets: scikit-learn's digits (default), Fashion-MNIST, MNIST and CIFAR-10 from files on disk.

Nothing is downloaded. Every loader returns a :class:`Dataset` with fixed-seed
train / validation / test splits and pixels scaled to [0, 1] as float32.
A missing dataset raises :class:`DatasetNotFoundError` saying where it looked and
how to get the files; a file that is unreadable, corrupt, truncated or simply
not what it should be raises :class:`CorruptFileError` naming the file and the
problem. Both are ``ValueError`` subclasses. CIFAR-10 is read from its *binary*
version: nothing is unpickled.

Every file is checked completely when it is loaded (a bad file never surfaces
later as a NumPy traceback or a silently wrong array):

* IDX: magic number, number of dimensions (images 3-D, labels 1-D), a shape
  whose data fits :data:`MAX_DATA_BYTES` (checked before anything is
  allocated), no empty arrays, data exactly as long as the header says. A
  gzip file is decompressed as a stream, never beyond the size its header
  announces plus one byte (to notice extra data), so a small ``.gz`` that
  would expand to gigabytes behind a small header is refused as soon as that
  byte appears, and one behind a huge header is refused before decompressing.
* Image pixels: unsigned bytes (IDX type 0x08) are divided by 255; float
  images (0x0D, 0x0E) must be finite and already in [0, 1] and are used as
  they are; signed integer images (0x09, 0x0B, 0x0C) are refused, since there
  is no scale that would be right for every producer of such files.
* Labels: integer IDX types only (float labels are refused, never truncated),
  each in 0..9; label and image counts must agree; train and test images
  must have the same size.
* CIFAR-10 binary batches: a non-empty regular file, a whole number of
  3073-byte records, each label byte in 0..9.
"""
from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from ..core._validate import check_choice, check_path

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32
N_CLASSES = 10  # mnist, fashion-mnist and cifar10 all have labels 0..9
MAX_DATA_BYTES = 1 << 30
"""Largest array a dataset file may hold: 1 GiB of data (before the conversion to float32).

The real files are far smaller (MNIST's training images: 47 MB, a CIFAR-10 batch:
31 MB). A header announcing more is corrupt or hostile and is refused before
anything is allocated or decompressed; ``read_idx`` and ``read_cifar_batch``
take a ``max_bytes`` argument to change the limit.
"""
_READ_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """The dataset's files are not where we looked."""


class CorruptFileError(ValueError):
    """A dataset file exists but cannot be used (unreadable, truncated, wrong format or content)."""


@dataclass
class Dataset:
    """Fixed splits of one dataset; x arrays are (N, D) float32 in [0, 1], y arrays int64.

    The validation split may be empty (``val_fraction=0``): ``x_val`` then has
    shape (0, D) and ``y_val`` shape (0,). A table of your own
    (:func:`vaelayer_np.run.tables.load_table`) has ``image_shape`` None, its column
    names in ``feature_names``, and standardised features: ``feature_mean`` and
    ``feature_std`` (D,) are the training rows' statistics used to scale them.
    ``files`` names the files read, as (role, path) pairs: ``("data", path)`` and
    ``("test_data", path)`` for a table, the file's name and its path for IDX and CIFAR-10
    files, nothing for digits (bundled with scikit-learn).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...] | None
    class_names: tuple[str, ...] = field(default=())
    feature_names: tuple[str, ...] = field(default=())
    feature_mean: np.ndarray | None = field(default=None)
    feature_std: np.ndarray | None = field(default=None)
    files: tuple[tuple[str, str], ...] = field(default=())
    """The files the data were read from, as (role, path) pairs (see :func:`fingerprint_files`)."""

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} validation / {len(self.y_test)} test, "
                f"{self.n_features} features, {self.n_classes} classes")


# ----------------------------------------------------------------------------- reading files
def _open_regular_file(path: Path, what: str) -> BinaryIO:
    """Open ``path`` for binary reading; every failure becomes an error naming the file."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise CorruptFileError(f"{path}: is a folder, not a file; expected {what} here")
        if not stat.S_ISREG(mode):
            raise CorruptFileError(f"{path}: is not a regular file (a device, pipe or socket); expected {what}")
        return open(path, "rb")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: file not found") from None
    except PermissionError:
        raise CorruptFileError(f"{path}: cannot open the file (permission denied); check its permissions") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot open the file ({exc.strerror or exc})") from None


def _read_at_most(stream: IO[bytes] | gzip.GzipFile, n: int) -> bytearray:
    """Read up to ``n`` bytes (fewer only at the end of the stream), in chunks.

    Memory grows with the bytes actually read, never with ``n`` up front, so a
    header that lies about the size cannot make us allocate it.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_READ_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


# ----------------------------------------------------------------------------- IDX files
_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
                   0x0E: "float64"}
_IDX_NDIM_MEANING = {3: "an image file holds (count, rows, columns)", 1: "a label file holds one label per image"}


def read_idx(path: str | Path, ndim: int | None = None, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an ndarray of the file's type.

    Parameters
    ----------
    path : str or Path
    ndim : int, optional
        Required number of dimensions (3 for image files, 1 for label files).
    max_bytes : int
        Refuse a header announcing more data than this (see :data:`MAX_DATA_BYTES`).

    Raises :class:`CorruptFileError` naming the file when it is not a readable
    regular file, the magic number, type code or number of dimensions is wrong,
    the shape is empty or too large, or the data is shorter or longer than the
    header says; :class:`DatasetNotFoundError` when it does not exist. A gzip
    file is decompressed as a stream and never past the announced size + 1 byte.
    """
    path = check_path("path", path)
    with _open_regular_file(path, "an IDX file") as fh:
        compressed = False
        try:
            compressed = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=fh, mode="rb") as stream:
                    return _parse_idx(path, stream, None, ndim, max_bytes)
            return _parse_idx(path, fh, os.fstat(fh.fileno()).st_size, ndim, max_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            if compressed:
                raise CorruptFileError(f"{path}: cannot decompress ({exc}); the gzip file is corrupt or "
                                       "truncated") from None
            raise CorruptFileError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None


def _parse_idx(path: Path, stream: IO[bytes] | gzip.GzipFile, file_size: int | None, ndim: int | None,
               max_bytes: int) -> np.ndarray:
    """The IDX header and data from ``stream``; ``file_size`` is None for a decompressed stream."""
    magic = bytes(_read_at_most(stream, 4))
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'none'}; an IDX file "
                               "starts with 00 00, a type code and the number of dimensions)")
    code, nd = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic number: unknown data type code 0x{code:02X}; "
                               f"known: {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)})")
    if nd == 0:
        raise CorruptFileError(f"{path}: the IDX header declares 0 dimensions; the file is corrupt")
    if ndim is not None and nd != ndim:
        raise CorruptFileError(f"{path}: the IDX header declares a {nd}-D array, expected {ndim}-D "
                               f"({_IDX_NDIM_MEANING.get(ndim, f'{ndim} dimensions')})")
    dims = bytes(_read_at_most(stream, 4 * nd))
    if len(dims) < 4 * nd:
        raise CorruptFileError(f"{path}: truncated IDX header ({nd} dimensions announced, the file ends after "
                               f"{len(dims) // 4})")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(nd))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)  # Python integers: no overflow, however large the header's sizes
    if count == 0:
        raise CorruptFileError(f"{path}: the IDX header declares shape {shape}, which holds no data "
                               "(an empty file of images or labels)")
    expected = count * dtype.itemsize
    if expected > max_bytes:
        raise CorruptFileError(f"{path}: the IDX header declares shape {shape} ({expected} bytes of data), more "
                               f"than the {max_bytes}-byte limit; the header is corrupt")
    header = 4 + 4 * nd
    if file_size is not None:  # a plain file: compare sizes before reading anything more
        held = file_size - header
        if held != expected:
            problem = "truncated" if held < expected else "longer than its header says"
            raise CorruptFileError(f"{path}: IDX header says {shape} ({expected} bytes of data), the file holds "
                                   f"{held}; the file is {problem} or corrupt")
        data = _read_at_most(stream, expected)
        if len(data) != expected:
            raise CorruptFileError(f"{path}: the file ended after {len(data)} of {expected} bytes of data while "
                                   "reading; the file is truncated")
    else:  # decompressed: read at most one byte more than announced, never the whole stream
        data = _read_at_most(stream, expected + 1)
        if len(data) < expected:
            raise CorruptFileError(f"{path}: IDX header says {shape} ({expected} bytes of data), the decompressed "
                                   f"file holds {len(data)}; the file is truncated or corrupt")
        if len(data) > expected:
            raise CorruptFileError(f"{path}: IDX header says {shape} ({expected} bytes of data), the decompressed "
                                   "file holds more; the file is corrupt (decompression stopped there)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _idx_type_name(array: np.ndarray) -> str:
    for code, dt in _IDX_DTYPES.items():
        if np.dtype(dt) == array.dtype:
            return f"{_IDX_TYPE_NAMES[code]} (IDX type 0x{code:02X})"
    return str(array.dtype)


def _images_to_float(path: str | Path, images: np.ndarray) -> np.ndarray:
    """(N, ...) IDX images -> (N, D) float32 in [0, 1]; see the module docstring for the rules per type."""
    flat = images.reshape(images.shape[0], -1)
    if images.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(255.0)
    if images.dtype.kind == "f":
        if not np.isfinite(flat).all():
            raise CorruptFileError(f"{path}: holds NaN or infinite pixel values; the file is corrupt")
        lo, hi = float(flat.min()), float(flat.max())
        if lo < 0.0 or hi > 1.0:
            raise CorruptFileError(f"{path}: float pixel values must lie in [0, 1], found [{lo:g}, {hi:g}]; "
                                   "rescale the file or store unsigned bytes 0..255 (IDX type 0x08)")
        return flat.astype(np.float32)
    raise CorruptFileError(f"{path}: images stored as {_idx_type_name(images)} are not supported; expected "
                           "unsigned bytes 0..255 (IDX type 0x08) or floats in [0, 1] (0x0D, 0x0E)")


def _labels_to_int(path: str | Path, labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """1-D IDX labels -> int64 after checking they are integers in 0..n_classes-1."""
    if labels.dtype.kind not in "iu":
        raise CorruptFileError(f"{path}: labels stored as {_idx_type_name(labels)}; expected integer labels "
                               f"0..{n_classes - 1} (IDX type 0x08)")
    y = labels.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise CorruptFileError(f"{path}: label {int(y[i])} at position {i} ({bad.size} labels in all) is outside "
                               f"0..{n_classes - 1}")
    return y


def _find_idx(folder: str | Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = Path(folder) / name
        if os.path.lexists(p):
            return p
    return None


def _load_idx_folder(name: str, folders: Iterable[str | Path | None], how_to_get: str) -> dict[str, Any]:
    """The four IDX files of the first folder that holds any, checked and converted.

    Returns a dict with float32 ``(N, D)`` images ``x_train``, ``x_test``, int64
    labels ``y_train``, ``y_test`` and the ``image_shape``.
    """
    tried = []
    for folder in folders:
        if folder is None:
            continue
        tried.append(str(folder))
        try:
            os.listdir(folder)
        except PermissionError:
            raise DatasetNotFoundError(f"{name}: cannot look inside {folder} (permission denied)") from None
        except OSError:
            continue
        paths = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
        if all(paths.values()):
            return _read_idx_set(paths)
        if any(paths.values()):
            missing = [IDX_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
            raise DatasetNotFoundError(f"{name}: {folder} holds some IDX files but not {', '.join(missing)}")
    raise DatasetNotFoundError(
        f"{name}: no IDX files found. Looked in: {', '.join(tried) or '(no folder given)'}. "
        f"Expected the four files {', '.join(v + '[.gz]' for v in IDX_FILES.values())}. {how_to_get}")


def _read_idx_set(paths: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images = read_idx(img_path, ndim=3)
        labels = read_idx(lab_path, ndim=1)
        if images.shape[0] != labels.shape[0]:
            raise CorruptFileError(f"{img_path}: {images.shape[0]} images but {lab_path} holds {labels.shape[0]} "
                                   "labels; the two files must describe the same examples")
        out[f"x_{split}"] = _images_to_float(img_path, images)
        out[f"y_{split}"] = _labels_to_int(lab_path, labels)
        out[f"shape_{split}"] = images.shape[1:]
    if out["shape_train"] != out["shape_test"]:
        tr, te = ("x".join(map(str, out[f"shape_{s}"])) for s in ("train", "test"))
        raise CorruptFileError(f"{paths['train_images']}: images are {tr} but {paths['test_images']} holds {te} "
                               "images; train and test images must have the same size")
    out["image_shape"] = out.pop("shape_train")
    out.pop("shape_test")
    out["files"] = tuple((Path(p).name, str(p)) for p in paths.values())
    return out


# ----------------------------------------------------------------------------- CIFAR-10 binary
def read_cifar_batch(path: str | Path, max_bytes: int = MAX_DATA_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (3x32x32, CHW).

    Returns ``(pixels, labels)``: uint8 ``(N, 3072)`` and int64 ``(N,)`` in 0..9.
    Raises :class:`CorruptFileError` naming the file when it is a folder or
    unreadable, empty, not a whole number of records, larger than ``max_bytes``,
    or holds a label byte above 9; :class:`DatasetNotFoundError` when missing.
    """
    path = check_path("path", path)
    with _open_regular_file(path, "a CIFAR-10 binary batch") as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise CorruptFileError(f"{path}: the file is empty; expected {CIFAR_RECORD}-byte CIFAR-10 records")
            if size % CIFAR_RECORD:
                raise CorruptFileError(f"{path}: {size} bytes is not a whole number of {CIFAR_RECORD}-byte "
                                       "CIFAR-10 records; the file is truncated or not the binary version")
            if size > max_bytes:
                raise CorruptFileError(f"{path}: {size} bytes, more than the {max_bytes}-byte limit for one batch "
                                       "(a real batch holds 10000 records, 30730000 bytes)")
            raw = _read_at_most(fh, size)
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None
    if len(raw) != size:
        raise CorruptFileError(f"{path}: the file ended after {len(raw)} of {size} bytes while reading; it is "
                               "truncated")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= N_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise CorruptFileError(f"{path}: record {i} has label byte {labels[i]} outside 0..{N_CLASSES - 1} "
                               f"({bad.size} such records); not a CIFAR-10 binary batch")
    return records[:, 1:], labels


def _load_cifar(data_dir: str | Path | None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[tuple[str, str], ...]]:
    if data_dir is None:
        raise DatasetNotFoundError(
            "cifar10: no folder given. Pass --data-dir pointing at the extracted 'CIFAR-10 binary version' "
            "(cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), the folder holding "
            f"{', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE}")
    candidates = [Path(data_dir), Path(data_dir) / "cifar-10-batches-bin"]
    for folder in candidates:
        present = {f: os.path.lexists(folder / f) for f in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,)}
        if any(present.values()):
            missing = [f for f, here in present.items() if not here]
            if missing:
                raise DatasetNotFoundError(f"cifar10: {folder} lacks {', '.join(missing)}")
            parts = [read_cifar_batch(folder / f) for f in CIFAR_TRAIN_FILES]
            x_test, y_test = read_cifar_batch(folder / CIFAR_TEST_FILE)
            files = tuple((f, str(folder / f)) for f in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,))
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test,
                    files)
    raise DatasetNotFoundError(
        f"cifar10: no CIFAR-10 binary batches found. Looked in: {', '.join(map(str, candidates))}. Download "
        "cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html), extract it, and pass --data-dir")


# ----------------------------------------------------------------------------- splits
def _split_train_val(x: np.ndarray, y: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with a fixed seed and cut off a validation part (possibly empty, shape (0, D))."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, (bool, np.bool_)) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit: expected a positive integer, got {limit!r}")
    return int(limit)


def apply_limit(x: np.ndarray, y: np.ndarray, limit: int | None, class_names: Sequence[str],
                name: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` training examples (all with None); ValueError naming --limit when they leave a class
    of the training split without an example.

    A class with no training example can never be predicted and its test examples are all errors: every class
    of ``y`` must be among the examples kept (at least one each, so never fewer examples than classes). The
    message gives the smallest limit that keeps every class, from the order of the (shuffled) training split.
    """
    if limit is None or limit >= len(y):
        return x, y
    present = np.unique(y)
    kept = np.unique(y[:limit])
    missing = np.setdiff1d(present, kept)
    if missing.size:
        firsts = [int(np.flatnonzero(y == c)[0]) for c in present]
        need = max(firsts) + 1
        shown = ", ".join(str(class_names[int(c)]) if int(c) < len(class_names) else str(int(c))
                          for c in missing[:10]) + (", ..." if missing.size > 10 else "")
        raise ValueError(f"limit: --limit {limit} keeps {limit} of the {len(y)} training examples of {name}, "
                         f"which leaves {missing.size} of its {present.size} classes without a training example "
                         f"({shown}); a classifier needs an example of every class to train on: give --limit {need} "
                         f"or more (the first {need} training examples hold every class)")
    return x[:limit], y[:limit]


def _check_val_fraction(val_fraction: Any) -> float:
    try:
        v = float(val_fraction)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(val_fraction, (bool, np.bool_)) or not 0.0 <= v <= 0.5:
        raise ValueError(f"val_fraction: expected a number in [0, 0.5], got {val_fraction!r}")
    return v


def load_dataset(name: str = "digits", data_dir: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str, "digits", "fashion-mnist", "mnist" or "cifar10"
    data_dir : str or Path, optional
        Folder with the files (required for mnist and cifar10; fashion-mnist also
        looks in the folder named by $VAELAYER_FASHION_MNIST_DIR and in the Debian
        package's folder /usr/share/datasets/fashion-mnist).
    val_fraction : float in [0, 0.5], part of the training set held out for validation.
        With 0 the validation split is empty: ``x_val`` has shape (0, D), ``y_val`` (0,).
    seed : int, fixes the splits
    limit : positive int, optional, keep only the first ``limit`` training examples (quick runs); a limit
        that leaves a class without a training example raises ValueError (see :func:`apply_limit`)

    Every file is checked completely here (see the module docstring): a bad
    file raises :class:`CorruptFileError` naming it, a missing one
    :class:`DatasetNotFoundError`; a bad argument raises ``ValueError`` naming it.
    """
    check_choice("dataset", name, DATASETS)
    val_fraction = _check_val_fraction(val_fraction)
    limit = _check_limit(limit)
    if data_dir is not None and not os.path.isdir(check_path("data_dir", data_dir)):
        raise DatasetNotFoundError(f"{name}: --data-dir {data_dir} is not a folder")
    files: tuple[tuple[str, str], ...] = ()
    image_shape: tuple[int, ...]
    folders: list[str | Path | None]
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32)
        y = bunch.target.astype(np.int64)
        # digits has no official test split: a fixed 20% is held out first.
        x_trv, y_trv, x_test, y_test = _split_train_val(x, y, 0.2, seed=12345)
        image_shape, classes = (8, 8), tuple(str(i) for i in range(10))
    elif name in ("fashion-mnist", "mnist"):
        if name == "fashion-mnist":
            env = os.environ.get("VAELAYER_FASHION_MNIST_DIR") or None
            folders = [data_dir] if data_dir is not None else [env, *FASHION_MNIST_DIRS]
            how = ("Install the Debian package with `apt-get install -y dataset-fashion-mnist`, or pass --data-dir "
                   "with the four files.")
            classes = FASHION_CLASSES
        else:
            folders = [data_dir]
            how = "Pass --data-dir pointing at a folder with the four MNIST IDX files (http://yann.lecun.com/exdb/mnist/)."
            classes = tuple(str(i) for i in range(10))
        arrays = _load_idx_folder(name, folders, how)
        x_trv, y_trv, x_test, y_test = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
        image_shape, files = arrays["image_shape"], arrays["files"]
    else:
        xtr, y_trv, xte, y_test, files = _load_cifar(data_dir)
        x_trv = xtr.astype(np.float32) / np.float32(255.0)
        x_test = xte.astype(np.float32) / np.float32(255.0)
        image_shape, classes = (3, 32, 32), CIFAR_CLASSES
    x_train, y_train, x_val, y_val = _split_train_val(x_trv, y_trv, val_fraction, seed)
    x_train, y_train = apply_limit(x_train, y_train, limit, classes, name)
    return Dataset(name, np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_val), y_val,
                   np.ascontiguousarray(x_test), y_test, tuple(image_shape), tuple(classes), files=files)


# ----------------------------------------------------------------------------- fingerprints
def fingerprint_file(path: str | Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file, read as a stream (CorruptFileError naming it if unreadable)."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with _open_regular_file(path, "a data file") as fh:
        try:
            while True:
                chunk = fh.read(_READ_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None
    return {"size": size, "sha256": digest.hexdigest()}


def fingerprint_files(files: Iterable[tuple[str, str | Path]]) -> dict[str, dict[str, Any]]:
    """``{role: {"path", "size", "sha256"}}`` of a Dataset's ``files`` (pairs of role and path)."""
    return {role: {"path": str(p), **fingerprint_file(p)} for role, p in files}


def changed_files(recorded: dict[str, dict[str, Any]], files: Iterable[tuple[str, str | Path]]) -> list[str]:
    """The data files whose size or sha256 differ from ``recorded`` (a :func:`fingerprint_files` result).

    Returns a list of one-line descriptions naming each file (empty: the same data). A role that
    was recorded but is not read now, or the reverse, counts as a change.
    """
    now = dict(files)
    changes: list[str] = []
    for role, old in recorded.items():
        if role not in now:
            changes.append(f"{old.get('path', role)}: was read when the run was trained, is not read now")
            continue
        path = now[role]
        try:
            new = fingerprint_file(path)
        except ValueError as exc:
            changes.append(str(exc))
            continue
        if new["size"] != old.get("size"):
            changes.append(f"{path}: {new['size']} bytes, {old.get('size')} when the run was trained")
        elif new["sha256"] != old.get("sha256"):
            changes.append(f"{path}: same size, other content (sha256 {new['sha256'][:12]}..., "
                           f"{str(old.get('sha256'))[:12]}... when the run was trained)")
    for role, path in now.items():
        if role not in recorded:
            changes.append(f"{path}: is read now but was not when the run was trained")
    return changes


# ----------------------------------------------------------------------------- augmentation
def augment_images(x: np.ndarray, image_shape: tuple[int, ...], shift: int, flip: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Randomly shifted and flipped copies of a batch of flattened images (training-time augmentation).

    Each image (a row of ``x``, the pixels of ``image_shape`` = (H, W) or (C, H, W) in C order) is
    flipped left to right with probability ``flip``, then moved by (dy, dx) pixels, each drawn
    uniformly from -shift..shift; the pixels that enter are 0 (the background of these datasets),
    those that leave are dropped. The draws come from ``rng`` in a fixed order (the shifts of every
    image, then its flips), so the same generator state gives the same batch; with ``shift`` 0 and
    ``flip`` 0 nothing is drawn and ``x`` is returned as it is.

    Returns a new (N, D) array of x's dtype (``x`` is left as it was).
    """
    if not shift and not flip:
        return x
    n = x.shape[0]
    h, w = image_shape[-2:]
    c = int(np.prod(image_shape[:-2], dtype=np.int64))
    if x.ndim != 2 or x.shape[1] != c * h * w:
        raise ValueError(f"x: expected rows of {c * h * w} pixels (images {tuple(image_shape)}), got shape {x.shape}")
    moves = rng.integers(-shift, shift + 1, size=(n, 2)) if shift else np.zeros((n, 2), np.int64)
    flips = np.asarray(rng.random(n) < flip) if flip else np.zeros(n, bool)
    images = x.reshape(n, c, h, w)
    out = np.zeros_like(images)
    for i in range(n):
        img = images[i, :, :, ::-1] if flips[i] else images[i]
        dy, dx = int(moves[i, 0]), int(moves[i, 1])
        # the part of the image that stays inside the grid, and where it lands
        out[i, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            img[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out.reshape(n, c * h * w)
