"""Dataset files against hostile input: every bad file is refused at load, naming the file and the problem."""
import gzip
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelayer_np.run import data as data_module
from vaelayer_np.run.data import (
    CIFAR_RECORD,
    CorruptFileError,
    DatasetNotFoundError,
    load_dataset,
    read_cifar_batch,
    read_idx,
)

DATA_ERRORS = (CorruptFileError, DatasetNotFoundError)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx(array, dtype=np.uint8):
    """IDX bytes of ``array`` stored as ``dtype`` (big-endian, as IDX requires)."""
    dt = np.dtype(dtype).newbyteorder(">") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    a = np.asarray(array).astype(dt)
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[f"{dt.kind}{dt.itemsize}"]
    return bytes([0, 0, code, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape) + a.tobytes()


def write_set(folder, n_train=20, n_test=10, size=(28, 28), compress=False, **override):
    """The four IDX files in ``folder``; ``override`` maps a key of NAMES to the bytes to write instead."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "train_images": idx(rng.integers(0, 256, (n_train, *size))),
        "train_labels": idx(np.arange(n_train) % 10),
        "test_images": idx(rng.integers(0, 256, (n_test, *size))),
        "test_labels": idx(np.arange(n_test) % 10),
    }
    content.update(override)
    paths = {}
    for key, raw in content.items():
        path = folder / (NAMES[key] + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(raw) if compress else raw)
        paths[key] = path
    return paths


def write_cifar(folder, n=3, **override):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        raw = override.get(name, np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        (folder / name).write_bytes(raw)


def check_idx_result(array, raw_header):
    """A returned array must match its header exactly."""
    nd = raw_header[3]
    shape = tuple(int.from_bytes(raw_header[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd))
    assert isinstance(array, np.ndarray) and array.shape == shape and array.size > 0
    assert array.dtype == np.dtype(data_module._IDX_DTYPES[raw_header[2]])


# ----------------------------------------------------------------------------- fuzzing
@settings(max_examples=150)
@given(prefix=st.sampled_from([b"", b"\x00\x00", b"\x00\x00\x08", b"\x00\x00\x0d\x01", b"\x00\x00\x08\x03"]),
       rest=st.binary(max_size=300), compress=st.booleans())
def test_fuzz_read_idx_any_bytes(tmp_path_factory, prefix, rest, compress):
    raw = prefix + rest
    path = tmp_path_factory.mktemp("fz") / "f.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    try:
        array = read_idx(path)
    except DATA_ERRORS:
        return
    check_idx_result(array, raw)


@st.composite
def idx_like(draw):
    """Bytes that start like an IDX file: plausible and absurd headers, data of about the right length."""
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]))
    nd = draw(st.integers(0, 5))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.sampled_from([2 ** 31, 2 ** 32 - 1, 65536])),
                         min_size=nd, max_size=nd))
    header = bytes([0, 0, code, nd]) + b"".join(d.to_bytes(4, "big") for d in dims)
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    n = int(np.prod(dims, dtype=object)) * itemsize if dims else 0
    n = min(n, 400) + draw(st.integers(-3, 3))
    body = draw(st.binary(min_size=max(n, 0), max_size=max(n, 0)))
    cut = draw(st.integers(0, len(header)))  # sometimes a truncated header
    return header[:cut] if draw(st.booleans()) and cut < len(header) else header + body


@settings(max_examples=200)
@given(raw=idx_like(), compress=st.booleans(), ndim=st.sampled_from([None, 1, 3]))
def test_fuzz_read_idx_headers(tmp_path_factory, raw, compress, ndim):
    path = tmp_path_factory.mktemp("fz") / "f.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    try:
        array = read_idx(path) if ndim is None else read_idx(path, ndim=ndim)
    except DATA_ERRORS:
        return
    check_idx_result(array, raw)
    assert ndim is None or array.ndim == ndim


@settings(max_examples=100)
@given(labels=st.binary(max_size=6), pixels_cut=st.integers(-2, 2), n=st.integers(0, 3))
def test_fuzz_cifar_batch(tmp_path_factory, labels, pixels_cut, n):
    records = b"".join(bytes([labels[i % len(labels)] if labels else 0]) + bytes(3072) for i in range(n))
    raw = records[:len(records) + pixels_cut] if pixels_cut < 0 else records + bytes(pixels_cut)
    path = tmp_path_factory.mktemp("fz") / "b.bin"
    path.write_bytes(raw)
    try:
        pixels, y = read_cifar_batch(path)
    except DATA_ERRORS:
        return
    assert pixels.shape == (len(raw) // CIFAR_RECORD, 3072) and pixels.dtype == np.uint8
    assert y.shape == (pixels.shape[0],) and y.min() >= 0 and y.max() <= 9 and len(y) > 0


@settings(max_examples=60)
@given(key=st.sampled_from(sorted(NAMES)), how=st.sampled_from(["header", "data", "cut", "extend"]), data=st.data())
def test_fuzz_load_dataset_with_one_damaged_file(tmp_path_factory, key, how, data):
    folder = tmp_path_factory.mktemp("set")
    paths = write_set(folder, n_train=4, n_test=3, size=(3, 2))
    raw = bytearray(paths[key].read_bytes())
    header = 4 + 4 * raw[3]
    if how in ("header", "data"):
        lo, hi = (0, header - 1) if how == "header" else (header, len(raw) - 1)
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(lo, hi))] = data.draw(st.integers(0, 255))
    elif how == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    paths[key].write_bytes(bytes(raw))
    try:
        ds = load_dataset("mnist", data_dir=folder, val_fraction=0.25)
    except DATA_ERRORS as exc:
        assert str(folder) in str(exc)
        return
    d = int(np.prod(ds.image_shape))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and x.shape == (len(y), d) and np.isfinite(x).all()
        assert (x >= 0).all() and (x <= 1).all() and y.dtype == np.int64
        assert y.size == 0 or (y.min() >= 0 and y.max() <= 9)


# ----------------------------------------------------------------------------- IDX header and size
def gzip_bomb(path, header, n_chunks=1040, chunk=1 << 20):
    """A valid gzip file of ~1 MB holding ``header`` then n_chunks MiB of zeros (> 1 GB once expanded).

    The zeros are compressed chunk by chunk; after a full flush deflate output does not refer to
    earlier data, so the compressed chunk is identical every time and is written n_chunks times.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    zeros = bytes(chunk)
    for _ in range(n_chunks):
        crc = zlib.crc32(zeros, crc)
    total = len(header) + n_chunks * chunk
    with open(path, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head)
        for _ in range(n_chunks):
            fh.write(block)
        fh.write(comp.flush() + struct.pack("<II", crc, total & 0xFFFFFFFF))
    return total


def test_gzip_bomb_is_refused_quickly_and_small(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in (10, 28, 28))
    total = gzip_bomb(path, header)
    assert total > 10 ** 9 and path.stat().st_size < 2 * 10 ** 6
    with open(path, "rb") as fh:  # the file really is a valid gzip stream that far
        assert len(gzip.GzipFile(fileobj=fh).read(1 << 20)) == 1 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(CorruptFileError, match=f"{path}.*decompressed file holds more"):
            read_idx(path, ndim=3)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 2.0 and peak < 16 * 2 ** 20


def test_header_too_large_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.idx"
    huge = bytes([0, 0, 0x0E, 3]) + (2 ** 32 - 1).to_bytes(4, "big") * 3  # 8 * (2^32-1)^3 bytes: beyond int64
    path.write_bytes(huge + bytes(100))
    with pytest.raises(CorruptFileError, match=f"{path}: the IDX header declares shape .*more than the"):
        read_idx(path)
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (5000).to_bytes(4, "big") + bytes(5000)))
    with pytest.raises(CorruptFileError, match="more than the 4096-byte limit"):
        read_idx(path, max_bytes=4096)
    assert read_idx(path, max_bytes=5000).shape == (5000,)


@pytest.mark.parametrize("compress", [False, True])
def test_data_longer_or_shorter_than_header(tmp_path, compress):
    good = idx(np.arange(12).reshape(3, 2, 2))
    path = tmp_path / "f.idx"
    for raw, words in ((good + b"\x00", "holds more|longer than its header"), (good[:-1], "truncated"),
                       (good[:9], "truncated IDX header")):
        path.write_bytes(gzip.compress(raw) if compress else raw)
        with pytest.raises(CorruptFileError, match=f"{path}.*({words})"):
            read_idx(path)
    path.write_bytes(gzip.compress(good) if compress else good)
    assert np.array_equal(read_idx(path), np.arange(12).reshape(3, 2, 2))


def test_corrupt_gzip_crc_and_truncated_stream(tmp_path):
    raw = bytearray(gzip.compress(idx(np.arange(50) % 10)))
    raw[-8] ^= 0xFF  # CRC
    path = tmp_path / "l.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=f"{path}: cannot decompress"):
        read_idx(path)
    path.write_bytes(bytes(raw[:-10]))
    with pytest.raises(CorruptFileError, match=f"{path}.*(cannot decompress|truncated)"):
        read_idx(path)


def test_wrong_number_of_dimensions_says_so(tmp_path):
    paths = write_set(tmp_path, train_images=idx(np.zeros((20, 1, 28, 28))))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: .*4-D array, expected 3-D .*image"):
        load_dataset("mnist", data_dir=tmp_path)
    paths = write_set(tmp_path, test_labels=idx(np.zeros((10, 1))))
    with pytest.raises(CorruptFileError, match=f"{paths['test_labels']}: .*2-D array, expected 1-D .*label"):
        load_dataset("mnist", data_dir=tmp_path)


def test_zero_images_refused(tmp_path):
    paths = write_set(tmp_path, train_images=idx(np.zeros((0, 28, 28))), train_labels=idx(np.zeros(0)))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: .*holds no data"):
        load_dataset("mnist", data_dir=tmp_path)
    path = tmp_path / "x.idx"
    path.write_bytes(idx(np.zeros((3, 0, 28))))
    with pytest.raises(CorruptFileError, match="holds no data"):
        read_idx(path)


# ----------------------------------------------------------------------------- labels and images
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_labels_refused_not_truncated(tmp_path, dtype):
    paths = write_set(tmp_path, train_labels=idx(np.arange(20) % 10 + 0.5, dtype=dtype))
    with pytest.raises(CorruptFileError, match=f"{paths['train_labels']}: labels stored as float.*expected integer"):
        load_dataset("mnist", data_dir=tmp_path)


def test_negative_and_out_of_range_labels_name_the_file(tmp_path):
    paths = write_set(tmp_path, test_labels=idx(np.array([0, 1, -1, 3, 4, 5, 6, 7, 8, 9]), dtype=np.int8))
    with pytest.raises(CorruptFileError, match=f"{paths['test_labels']}: label -1 at position 2"):
        load_dataset("mnist", data_dir=tmp_path)
    paths = write_set(tmp_path, compress=True, train_labels=idx(np.arange(20) % 12))
    with pytest.raises(CorruptFileError, match=f"{paths['train_labels']}: label 10 at position 10 .*outside 0..9"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_integer_labels_of_wider_types_accepted(tmp_path):
    write_set(tmp_path, train_labels=idx(np.arange(20) % 10, dtype=">i4"))
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0)
    assert sorted(ds.y_train.tolist()) == sorted((np.arange(20) % 10).tolist())


def test_count_mismatch_names_both_files(tmp_path):
    paths = write_set(tmp_path, test_labels=idx(np.zeros(7)))
    with pytest.raises(CorruptFileError, match=f"{paths['test_images']}: 10 images but {paths['test_labels']} "
                                               "holds 7 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    paths = write_set(tmp_path, test_images=idx(np.zeros((10, 27, 28))))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: images are 28x28 but "
                                               f"{paths['test_images']} holds 27x28"):
        load_dataset("mnist", data_dir=tmp_path)


def test_float_images_nan_range_and_scaling(tmp_path):
    rng = np.random.default_rng(1)
    pix = rng.random((20, 4, 4)).astype(np.float32)
    paths = write_set(tmp_path, train_images=idx(pix, dtype=np.float32),
                      test_images=idx(rng.random((10, 4, 4)), dtype=np.float64))
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0)
    assert np.allclose(np.sort(ds.x_train.ravel()), np.sort(pix.ravel()))  # used as they are, not divided by 255
    bad = pix.copy()
    bad[3, 1, 2] = np.nan
    paths = write_set(tmp_path, train_images=idx(bad, dtype=np.float32))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: holds NaN or infinite pixel"):
        load_dataset("mnist", data_dir=tmp_path)
    paths = write_set(tmp_path, train_images=idx(pix * 255, dtype=np.float32))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: float pixel values must lie in"):
        load_dataset("mnist", data_dir=tmp_path)
    paths = write_set(tmp_path, train_images=idx(np.zeros((20, 4, 4)), dtype=">i2"))
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: images stored as int16.*not supported"):
        load_dataset("mnist", data_dir=tmp_path)


def test_uint8_pixels_divided_by_255(tmp_path):
    write_set(tmp_path, train_images=idx(np.full((20, 2, 2), 255)), test_images=idx(np.full((10, 2, 2), 51)))
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert np.all(ds.x_train == 1.0) and np.allclose(ds.x_test, 0.2)


def test_folder_where_a_file_should_be(tmp_path):
    write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte").mkdir()
    with pytest.raises(CorruptFileError, match="train-labels-idx1-ubyte: is a folder, not a file"):
        load_dataset("mnist", data_dir=tmp_path)


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    paths = write_set(tmp_path)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data_module, "open", denied, raising=False)
    with pytest.raises(CorruptFileError, match=f"{paths['train_images']}: cannot open the file .permission denied"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")
def test_unreadable_file_for_real(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_2.bin"
    path.chmod(0)
    try:
        with pytest.raises(CorruptFileError, match=f"{path}: cannot open the file .permission denied"):
            load_dataset("cifar10", data_dir=tmp_path)
    finally:
        path.chmod(0o644)


# ----------------------------------------------------------------------------- CIFAR-10
def test_cifar_folder_empty_and_bad_label(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "data_batch_4.bin"
    batch.unlink()
    batch.mkdir()
    with pytest.raises(CorruptFileError, match=f"{batch}: is a folder, not a file"):
        load_dataset("cifar10", data_dir=tmp_path)
    batch.rmdir()
    batch.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=f"{batch}: the file is empty"):
        load_dataset("cifar10", data_dir=tmp_path)
    batch.write_bytes(bytes(CIFAR_RECORD * 2 + 5))
    with pytest.raises(CorruptFileError, match=f"{batch}: {CIFAR_RECORD * 2 + 5} bytes is not a whole number"):
        load_dataset("cifar10", data_dir=tmp_path)
    batch.write_bytes(bytes(CIFAR_RECORD) + bytes([10]) + bytes(CIFAR_RECORD - 1))
    with pytest.raises(CorruptFileError, match=f"{batch}: record 1 has label byte 10 outside 0..9"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_unreadable_batch(tmp_path, monkeypatch):
    write_cifar(tmp_path)

    def failing(path, *args, **kwargs):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(data_module, "open", failing, raising=False)
    with pytest.raises(CorruptFileError, match="data_batch_1.bin: cannot open the file .Input/output error"):
        load_dataset("cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------- arguments
def test_val_fraction_zero_gives_empty_but_shaped_split(tmp_path):
    ds = load_dataset("digits", val_fraction=0)
    assert ds.x_val.shape == (0, 64) and ds.y_val.shape == (0,) and ds.x_val.dtype == np.float32
    write_set(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.0)
    assert ds.x_val.shape == (0, 784) and ds.y_val.shape == (0,) and len(ds.y_train) == 20
    assert "0 validation" in ds.summary()


@pytest.mark.parametrize("limit", [0, -3, 2.5, "10", True, np.float64(4)])
def test_limit_must_be_a_positive_integer(limit):
    with pytest.raises(ValueError, match="limit: expected a positive integer"):
        load_dataset("digits", limit=limit)


def test_limit_and_val_fraction_accepted_forms():
    assert len(load_dataset("digits", limit=np.int64(40)).y_train) == 40
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction="a lot")
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=float("nan"))
