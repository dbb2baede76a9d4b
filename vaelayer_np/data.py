"""Datasets: scikit-learn's digits (default), Fashion-MNIST, MNIST and CIFAR-10 from files on disk.

Nothing is downloaded. Every loader returns a :class:`Dataset` with fixed-seed
train / validation / test splits and pixels scaled to [0, 1] as float32.
A missing dataset raises :class:`DatasetNotFoundError` saying where it looked and
how to get the files; a corrupt or truncated file raises :class:`CorruptFileError`
naming the file. CIFAR-10 is read from its *binary* version: nothing is unpickled.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import check_choice

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


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """The dataset's files are not where we looked."""


class CorruptFileError(ValueError):
    """A dataset file exists but cannot be read (truncated, wrong format)."""


@dataclass
class Dataset:
    """Fixed splits of one dataset; x arrays are (N, D) float32 in [0, 1], y arrays int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple
    class_names: tuple = field(default=())

    @property
    def n_features(self):
        return self.x_train.shape[1]

    @property
    def n_classes(self):
        return len(self.class_names)

    def summary(self):
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} validation / {len(self.y_test)} test, "
                f"{self.n_features} features, {self.n_classes} classes")


# ----------------------------------------------------------------------------- IDX files
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into an ndarray.

    Raises :class:`CorruptFileError` naming the file if the header is wrong or
    the data is shorter or longer than the header says.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DatasetNotFoundError(f"{path}: file not found") from None
        raise CorruptFileError(f"{path}: cannot decompress ({exc}); the file is corrupt or truncated") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptFileError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptFileError(f"{path}: IDX header says {shape} ({expected} bytes of data), "
                               f"the file holds {len(raw) - header}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = Path(folder) / name
        if p.exists():
            return p
    return None


def _load_idx_folder(name, folders, how_to_get):
    tried = []
    for folder in folders:
        if folder is None:
            continue
        paths = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
        tried.append(str(folder))
        if all(paths.values()):
            arrays = {key: read_idx(p) for key, p in paths.items()}
            for split in ("train", "test"):
                images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
                if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                    raise CorruptFileError(
                        f"{paths[split + '_images']}: {images.shape[0]} images but "
                        f"{paths[split + '_labels']} holds {labels.shape[0]} labels (shape {labels.shape})")
            return arrays
        if any(paths.values()):
            missing = [IDX_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
            raise DatasetNotFoundError(f"{name}: {folder} holds some IDX files but not {', '.join(missing)}")
    raise DatasetNotFoundError(
        f"{name}: no IDX files found. Looked in: {', '.join(tried) or '(no folder given)'}. "
        f"Expected the four files {', '.join(v + '[.gz]' for v in IDX_FILES.values())}. {how_to_get}")


# ----------------------------------------------------------------------------- CIFAR-10 binary
def read_cifar_batch(path):
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (3x32x32, CHW)."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) == 0 or len(raw) % CIFAR_RECORD:
        raise CorruptFileError(f"{path}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 "
                               "records; the file is truncated or not the binary version")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CorruptFileError(f"{path}: label byte {labels.max()} outside 0..9; not a CIFAR-10 binary batch")
    return records[:, 1:], labels


def _load_cifar(data_dir):
    if data_dir is None:
        raise DatasetNotFoundError(
            "cifar10: no folder given. Pass --data-dir pointing at the extracted 'CIFAR-10 binary version' "
            "(cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), the folder holding "
            f"{', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE}")
    candidates = [Path(data_dir), Path(data_dir) / "cifar-10-batches-bin"]
    for folder in candidates:
        if (folder / CIFAR_TEST_FILE).exists() or any((folder / f).exists() for f in CIFAR_TRAIN_FILES):
            missing = [f for f in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,) if not (folder / f).exists()]
            if missing:
                raise DatasetNotFoundError(f"cifar10: {folder} lacks {', '.join(missing)}")
            parts = [read_cifar_batch(folder / f) for f in CIFAR_TRAIN_FILES]
            x_test, y_test = read_cifar_batch(folder / CIFAR_TEST_FILE)
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test)
    raise DatasetNotFoundError(
        f"cifar10: no CIFAR-10 binary batches found. Looked in: {', '.join(map(str, candidates))}. Download "
        "cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html), extract it, and pass --data-dir")


# ----------------------------------------------------------------------------- splits
def _split_train_val(x, y, val_fraction, seed):
    """Shuffle with a fixed seed and cut off a validation part."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def load_dataset(name="digits", data_dir=None, val_fraction=0.1, seed=0, limit=None):
    """Load a dataset by name.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "mnist", "cifar10"}
    data_dir : str or Path, optional
        Folder with the files (required for mnist and cifar10; fashion-mnist also
        looks in the Debian package's folder /usr/share/datasets/fashion-mnist).
    val_fraction : float in [0, 0.5], part of the training set held out for validation
    seed : int, fixes the splits
    limit : int, optional, keep only the first ``limit`` training examples (quick runs)
    """
    check_choice("dataset", name, DATASETS)
    if not 0.0 <= float(val_fraction) <= 0.5:
        raise ValueError(f"val_fraction: expected a number in [0, 0.5], got {val_fraction!r}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFoundError(f"{name}: --data-dir {data_dir} is not a folder")
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
            env = os.environ.get("VAELAYER_FASHION_MNIST_DIR")
            folders = [data_dir] if data_dir is not None else [env, *FASHION_MNIST_DIRS]
            how = ("Install the Debian package with `apt-get install -y dataset-fashion-mnist`, or pass --data-dir "
                   "with the four files.")
            classes = FASHION_CLASSES
        else:
            folders = [data_dir]
            how = "Pass --data-dir pointing at a folder with the four MNIST IDX files (http://yann.lecun.com/exdb/mnist/)."
            classes = tuple(str(i) for i in range(10))
        arrays = _load_idx_folder(name, folders, how)
        x_trv = arrays["train_images"].reshape(len(arrays["train_images"]), -1).astype(np.float32) / 255.0
        x_test = arrays["test_images"].reshape(len(arrays["test_images"]), -1).astype(np.float32) / 255.0
        y_trv = arrays["train_labels"].astype(np.int64)
        y_test = arrays["test_labels"].astype(np.int64)
        for split, yy in (("train", y_trv), ("test", y_test)):
            if yy.size and yy.max() > 9:
                raise CorruptFileError(f"{name}: {split} labels hold {yy.max()}, expected 0..9")
        image_shape = arrays["train_images"].shape[1:]
    else:
        xtr, y_trv, xte, y_test = _load_cifar(data_dir)
        x_trv = xtr.astype(np.float32) / 255.0
        x_test = xte.astype(np.float32) / 255.0
        image_shape, classes = (3, 32, 32), CIFAR_CLASSES
    x_train, y_train, x_val, y_val = _split_train_val(x_trv, y_trv, val_fraction, seed)
    if limit is not None:
        x_train, y_train = x_train[:int(limit)], y_train[:int(limit)]
    return Dataset(name, np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_val), y_val,
                   np.ascontiguousarray(x_test), y_test, tuple(image_shape), tuple(classes))
