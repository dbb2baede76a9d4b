"""Checkpoint and run files: permissions, durability, clean-up, torn lines, disk errors, hostile checkpoints."""
import errno
import io
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelayer_np.run import checkpoint as ck
from vaelayer_np.run.checkpoint import (
    CheckpointError,
    append_jsonl_durable,
    clean_stale_temp_files,
    load_npz,
    read_jsonl,
    save_npz_atomic,
    write_json_atomic,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
STATE = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.array(7)}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- permissions and durability
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_npz_atomic(tmp_path / "c.npz", STATE)
        write_json_atomic(tmp_path / "config.json", {"a": 1})
        append_jsonl_durable(tmp_path / "metrics.jsonl", {"epoch": 1})
        assert ck._current_umask() == umask
    finally:
        os.umask(old)
    for name in ("c.npz", "config.json", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_saves_fsync_file_then_rename_then_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        return real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for save in (lambda: save_npz_atomic(tmp_path / "c.npz", STATE),
                 lambda: write_json_atomic(tmp_path / "j.json", [1])):
        events.clear()
        save()
        assert events == ["fsync-file", "rename", "fsync-folder"]
    events.clear()
    append_jsonl_durable(tmp_path / "m.jsonl", {"a": 1})  # new file: its folder entry is made durable too
    assert events == ["fsync-file", "fsync-folder"]
    events.clear()
    append_jsonl_durable(tmp_path / "m.jsonl", {"a": 2})
    assert events == ["fsync-file"]


# ----------------------------------------------------------------------------- stale temporary files
def test_clean_stale_temp_files_only_removes_our_pattern(tmp_path):
    ours = ["checkpoint.npz.ab12cd34.tmp", "checkpoint.npz.x_9kq0zz.tmp", "config.json.0123abcd.tmp"]
    others = ["checkpoint.npz", "checkpoint.npz.tmp", "notes.ABCDEFGH.tmp", "checkpoint.npz.abc.tmp",
              "checkpoint.npz.abcdefghi.tmp", "run.abcdefgh.tmp.bak", "metrics.jsonl"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.abcdefgh.tmp").mkdir()
    (tmp_path / "link.abcdefgh.tmp").symlink_to(tmp_path / "metrics.jsonl")
    removed = clean_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + ["folder.abcdefgh.tmp", "link.abcdefgh.tmp"])
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_each_save_removes_its_own_orphans(tmp_path):
    orphans = ["c.npz.deadbeef.tmp", "c.npz.k2z_x8yy.tmp"]
    for name in orphans + ["other.json.deadbeef.tmp"]:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    save_npz_atomic(tmp_path / "c.npz", STATE)
    assert leftovers(tmp_path) == ["other.json.deadbeef.tmp"]  # another file's save is never touched
    write_json_atomic(tmp_path / "other.json", {})
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- disk errors
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class FailingWriter:
    """Wraps a file object: accepts ``budget`` bytes, then fails as a full disk does."""

    def __init__(self, fh, budget):
        self.fh, self.budget = fh, budget

    def write(self, b):
        b = bytes(b)
        if len(b) > self.budget:
            self.fh.write(b[:self.budget])
            self.fh.flush()
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(b)
        return self.fh.write(b)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_full_disk_leaves_old_checkpoint_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "c.npz"
    save_npz_atomic(path, STATE)
    before = path.read_bytes()
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FailingWriter(real_fdopen(fd, *a, **k), 100))
    else:
        monkeypatch.setattr(os, where, full_disk)
    big = {"w": np.ones((100, 100))}
    with pytest.raises(CheckpointError, match=f"^{path}: cannot save .No space left on device.; the disk .* is full"):
        save_npz_atomic(path, big)
    monkeypatch.undo()
    assert path.read_bytes() == before and same(load_npz(path), STATE)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_write_json_atomic_failure_keeps_old_file_and_cleans_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "config.json"
    write_json_atomic(path, {"epochs": 3})
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FailingWriter(real_fdopen(fd, *a, **k), 3))
    else:
        monkeypatch.setattr(os, where, full_disk)
    with pytest.raises(CheckpointError, match=f"^{path}: cannot save"):
        write_json_atomic(path, {"epochs": 5})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"epochs": 3} and leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})  # not serialisable: refused before any file is touched
    assert json.loads(path.read_text()) == {"epochs": 3} and leftovers(tmp_path) == []


def test_interrupt_during_save_cleans_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_npz_atomic(path, STATE)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_npz_atomic(path, {"w": np.zeros(3)})
    monkeypatch.undo()
    assert same(load_npz(path), STATE) and leftovers(tmp_path) == []


def test_file_size_limit_is_a_clear_error(tmp_path):
    """A real EFBIG: a child process with a 64 KiB file-size limit saves a 400 KB checkpoint."""
    path = tmp_path / "c.npz"
    save_npz_atomic(path, STATE)
    code = (
        "import resource, sys, numpy as np\n"
        "from vaelayer_np.run.checkpoint import save_npz_atomic, CheckpointError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    save_npz_atomic(sys.argv[1], {'w': np.ones(50000)})\n"
        "except CheckpointError as exc:\n"
        "    print(exc); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith(f"{path}: cannot save (File too large); the file is larger than the file-size limit")
    assert len(out.stdout.strip().splitlines()) == 1
    assert same(load_npz(path), STATE) and leftovers(tmp_path) == []


def test_file_where_a_folder_should_be_and_folder_where_a_file_should_be(tmp_path):
    (tmp_path / "runs").write_text("a file, not a folder")
    with pytest.raises(CheckpointError, match=r"runs/r1/c.npz: cannot save .*a part of the path is a file"):
        save_npz_atomic(tmp_path / "runs" / "r1" / "c.npz", STATE)
    with pytest.raises(CheckpointError, match=r"runs/config.json: cannot save .*a part of the path is a file"):
        write_json_atomic(tmp_path / "runs" / "config.json", {})
    (tmp_path / "c.npz").mkdir()
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'c.npz'}: cannot save .*a folder is in the way"):
        save_npz_atomic(tmp_path / "c.npz", STATE)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_npz(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="cannot append to the file .*a folder is in the way"):
        append_jsonl_durable(tmp_path / "c.npz", {})


def test_permission_denied_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_npz_atomic(path, STATE)
    real_open = os.open

    def deny_temp(p, *args, **kwargs):
        if str(p).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny_temp)
    with pytest.raises(CheckpointError, match=f"^{path}: cannot save .Permission denied.; no permission to write"):
        save_npz_atomic(path, {"w": np.zeros(2)})
    monkeypatch.undo()
    assert same(load_npz(path), STATE)

    def deny(p, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(p))

    monkeypatch.setattr(ck, "open", deny, raising=False)
    with pytest.raises(CheckpointError, match=f"^{path}: cannot open the checkpoint .permission denied"):
        load_npz(path)


@pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")
def test_read_only_folder_for_real(tmp_path):
    path = tmp_path / "c.npz"
    save_npz_atomic(path, STATE)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match=f"^{path}: cannot save .*no permission to write"):
            save_npz_atomic(path, {"w": np.zeros(2)})
        with pytest.raises(CheckpointError, match="cannot save"):
            write_json_atomic(tmp_path / "config.json", {})
        path.chmod(0)
        with pytest.raises(CheckpointError, match="permission denied"):
            load_npz(path)
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)
    assert same(load_npz(path), STATE)


# ----------------------------------------------------------------------------- JSON lines
def test_jsonl_roundtrip_and_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in (1, 2):
        assert append_jsonl_durable(path, {"epoch": epoch, "loss": 0.5 / epoch}) == 0
    assert read_jsonl(path) == ([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}], False)
    with open(path, "ab") as fh:  # a crash in the middle of the third append
        fh.write(b'{"epoch": 3, "lo')
    rows, torn = read_jsonl(path)
    assert [r["epoch"] for r in rows] == [1, 2] and torn
    assert append_jsonl_durable(path, {"epoch": 3, "loss": 0.1}) == len(b'{"epoch": 3, "lo')
    content = read_jsonl(path)
    assert [r["epoch"] for r in content.rows] == [1, 2, 3] and not content.torn
    assert path.read_bytes().endswith(b'"loss": 0.1}\n')


def test_jsonl_torn_only_line_and_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"epo')
    assert read_jsonl(path) == ([], True)
    assert append_jsonl_durable(path, {"epoch": 1}) == 5
    assert path.read_bytes() == b'{"epoch": 1}\n'
    path.write_bytes(b'{"a": 1}\n\n  \n{"a": 2}\n')
    assert read_jsonl(path) == ([{"a": 1}, {"a": 2}], False)


def test_jsonl_corruption_before_the_end_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(CheckpointError, match=f"^{path}: line 2 is not valid JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(CheckpointError, match=f"^{path}: line 2 is not valid JSON"):
        read_jsonl(path)
    with pytest.raises(CheckpointError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_jsonl_append_failure_leaves_lines_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    append_jsonl_durable(path, {"epoch": 1})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(CheckpointError, match=f"^{path}: cannot append to the file .No space left"):
        append_jsonl_durable(path, {"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == b'{"epoch": 1}\n'


@settings(max_examples=40)
@given(lines=st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.floats(allow_nan=False) | st.text()),
                      max_size=5), cut=st.integers(0, 400))
def test_fuzz_jsonl_any_prefix_of_a_good_file(tmp_path_factory, lines, cut):
    """Any crash point while appending: the complete lines come back, the torn rest is flagged."""
    path = tmp_path_factory.mktemp("j") / "m.jsonl"
    full = b"".join((json.dumps(r) + "\n").encode() for r in lines)
    path.write_bytes(full[:cut])
    rows, torn = read_jsonl(path)
    n_complete = full[:cut].count(b"\n")
    assert rows == lines[:n_complete] and torn == (full[:cut] != b"" and not full[:cut].endswith(b"\n"))
    append_jsonl_durable(path, {"next": True})
    assert read_jsonl(path) == (lines[:n_complete] + [{"next": True}], False)


# ----------------------------------------------------------------------------- hostile checkpoints
def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_load_npz_refuses_pickles_npy_and_non_arrays(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match=f"^{path}: entry 'bad' holds Python objects"):
        load_npz(path)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_npz(tmp_path / "a.npy")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", b"")  # an empty member
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=f"^{path}: "):
        load_npz(path)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_npz(tmp_path / "empty.npz")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_npz(tmp_path / "missing.npz")


def test_load_npz_refuses_a_header_claiming_gigabytes(tmp_path):
    """A 1 KB file whose array header claims 8 TB is refused before numpy allocates anything."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10 ** 12,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("w.npy", buf.getvalue() + bytes(64))
    with pytest.raises(CheckpointError, match=f"^{path}: entry 'w' has shape \\(1000000000000,\\)"):
        load_npz(path)


def test_load_npz_roundtrip_keeps_dtypes_and_shapes(tmp_path):
    state = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.float32(1.5) * np.ones((0, 4), np.float32),
             "c": np.array(3.0), "d": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "e": np.array([True, False]),
             "file": np.array([1, 2], np.uint8), "allow_pickle": np.array(["text"])}  # names np.savez cannot store
    save_npz_atomic(tmp_path / "c.npz", state)
    back = load_npz(tmp_path / "c.npz")
    assert same(back, state) and all(back[k].dtype == state[k].dtype for k in state)
    back["a"][0, 0] = 5  # loaded arrays are ordinary writable arrays


@settings(max_examples=120)
@given(data=st.data())
def test_fuzz_load_npz(tmp_path_factory, data):
    good = npz_bytes(**STATE)
    how = data.draw(st.sampled_from(["random", "flip", "cut"]))
    if how == "random":
        raw = data.draw(st.binary(max_size=400))
    elif how == "flip":
        raw = bytearray(good)
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    else:
        raw = good[:data.draw(st.integers(0, len(good) - 1))]
    path = tmp_path_factory.mktemp("n") / "c.npz"
    path.write_bytes(raw)
    try:
        state = load_npz(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert isinstance(state, dict) and all(isinstance(v, np.ndarray) and not v.dtype.hasobject
                                           for v in state.values())
