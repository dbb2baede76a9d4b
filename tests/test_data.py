"""Dataset loaders on small IDX and CIFAR-10 binary files written by the tests."""
import gzip

import numpy as np
import pytest

from vaelayer_np.run.data import CorruptFileError, DatasetNotFoundError, load_dataset, read_cifar_batch, read_idx


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=40, n_test=20, compress=True, rng=None):
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        data = idx_bytes(arr)
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return files


def write_cifar(folder, n=12, rng=None):
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_from_idx_files(tmp_path, compress):
    files = write_idx_set(tmp_path, compress=compress)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.25)
    assert ds.x_train.shape == (30, 784) and ds.x_val.shape == (10, 784) and ds.x_test.shape == (20, 784)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert np.allclose(ds.x_test[3].reshape(28, 28) * 255, files["t10k-images-idx3-ubyte"][3])
    assert ds.n_classes == 10 and ds.image_shape == (28, 28)
    again = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.25)
    assert np.array_equal(again.y_train, ds.y_train)  # fixed-seed split


def test_fashion_mnist_from_data_dir(tmp_path):
    write_idx_set(tmp_path)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.class_names[0] == "T-shirt/top" and len(ds.y_test) == 20


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"Looked in: {tmp_path}.*--data-dir"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-binary"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="no folder given"):
        load_dataset("cifar10")


def test_partial_idx_set_names_missing_files(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_idx_names_the_file(tmp_path):
    write_idx_set(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match=f"{path}.*truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_corrupt_gzip_and_bad_magic(tmp_path):
    write_idx_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"")[:10] + b"garbage")
    with pytest.raises(CorruptFileError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)
    other = tmp_path / "x.idx"
    other.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(CorruptFileError, match="bad magic number"):
        read_idx(other)


def test_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5))))
    with pytest.raises(CorruptFileError, match="20 images but"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_binary(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    write_cifar(folder)
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.1)
    assert ds.x_train.shape[1] == 3072 and len(ds.y_test) == 12
    assert len(ds.y_train) + len(ds.y_val) == 60 and ds.image_shape == (3, 32, 32)


def test_cifar10_truncated_or_wrong(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match="data_batch_3.bin.*truncated"):
        load_dataset("cifar10", data_dir=tmp_path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes([42]) + bytes(3072))
    with pytest.raises(CorruptFileError, match="label byte 42"):
        read_cifar_batch(bad)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks test_batch.bin"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_digits_and_options():
    ds = load_dataset("digits")
    assert ds.x_train.shape[1] == 64 and len(ds.y_test) == 359
    assert len(load_dataset("digits", limit=100).y_train) == 100
    with pytest.raises(ValueError, match="dataset: unknown option 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=0.9)
