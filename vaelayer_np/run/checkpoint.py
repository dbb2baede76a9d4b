"""Checkpoints and run files: written atomically and durably, read without pickles.

A checkpoint is a flat dict of arrays (see ``Trainer.state_dict``). Every
whole-file save (:func:`save_npz_atomic`, :func:`write_json_atomic`) goes

1. into a temporary file ``<name>.<8 random characters>.tmp`` in the same folder,
2. which is flushed and ``fsync``-ed, and given the permissions a new file gets
   under the user's umask (``0o666 & ~umask``, not ``mkstemp``'s 0600),
3. then renamed over ``<name>``, and the folder is ``fsync``-ed so the rename
   itself survives a power cut.

A crash, Ctrl-C, full disk or any other failure therefore leaves either the
previous file or the new one, never a mixture; the temporary file is removed
(and temporary files orphaned by a killed process are removed by the next save
of the same file, see :func:`clean_stale_temp_files`). Every ``OSError`` while
saving becomes a :class:`CheckpointError` whose one-line message names the path
and says what to do.

Line-per-record files (``metrics.jsonl``) use :func:`append_jsonl_durable`
and :func:`read_jsonl`, which survive a torn last line.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
import zipfile
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from ..core._validate import check_path


class CheckpointError(ValueError):
    """A checkpoint or run file is missing, corrupt, cannot be written, or does not fit the model."""


# ----------------------------------------------------------------------------- helpers
_TEMP_RE = re.compile(r"(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # also matches mkstemp's names (older saves)
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand more than this: a larger claim is a lie


def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _save_error(path: str | Path, exc: BaseException, doing: str = "cannot save",
                kept: str = "Any previous file there is unchanged.") -> CheckpointError:
    """A one-line CheckpointError for an OSError met while writing ``path``."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or _one_line(exc) or type(exc).__name__
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        advice = "the disk (or your quota) is full: free some space and try again"
    elif code == errno.EFBIG:
        advice = ("the file is larger than the file-size limit (`ulimit -f`) or the file system allows: "
                  "raise the limit or save elsewhere")
    elif code in (errno.EACCES, errno.EPERM):
        advice = "no permission to write there: check the folder's permissions or choose another folder"
    elif code == errno.EROFS:
        advice = "the file system is read-only: choose a writable folder"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        advice = "a part of the path is a file where a folder should be: choose another path"
    elif code == errno.EISDIR:
        advice = "a folder is in the way: remove it or choose another path"
    elif code == errno.ELOOP:
        advice = "a loop of symbolic links is in the path: choose another path"
    else:
        advice = "check the path and the disk, then try again"
    return CheckpointError(f"{path}: {doing} ({reason}); {advice}. {kept}")


def _append_error(path: str | Path, exc: BaseException) -> CheckpointError:
    return _save_error(path, exc, doing="cannot append to the file", kept="The lines already there are unchanged.")


def _current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Fallback: set-and-restore. 0o077 is the most restrictive value, so a file another
    # thread creates in between gets fewer permissions, never more.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _fsync_folder(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be fsync-ed)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):  # write-only folder (odd but legal): nothing more to do
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _prepare_folder(path: Path) -> Path:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    except OSError as exc:
        raise _save_error(path, exc) from None
    return folder


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new temporary file ``<name>.<8 random characters>.tmp``; returns (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = folder / f"{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file through ``write(binary file object)`` atomically and durably (see the module docstring)."""
    path = check_path("path", path)
    folder = _prepare_folder(path)
    clean_stale_temp_files(folder, name=path.name)
    tmp = None
    try:
        fd, tmp = _create_temp(folder, path.name)
        try:
            fh = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with fh:
            write(fh)
            fh.flush()
            mode = 0o666 & ~_current_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            else:  # pragma: no cover - systems without fchmod
                os.chmod(tmp, mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as exc:
        raise _save_error(path, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def clean_stale_temp_files(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove temporary files left by interrupted saves in ``folder``; returns the paths removed.

    Only regular files named exactly as this module names them,
    ``<name>.<8 characters from a-z, 0-9, _>.tmp``, are removed (never folders,
    links or other files). With ``name``, only the temporary files of that file
    are removed: each save calls this for its own file, so saving one file never
    touches another save that might be in progress in the same folder.
    A file that cannot be removed is left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.fullmatch(entry.name)
        if m is None or (name is not None and m.group("name") != name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


# ----------------------------------------------------------------------------- checkpoints (.npz)
def save_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (dict name -> ndarray) to ``path`` atomically and durably.

    Object arrays are refused (they would need pickles). Any ``OSError``
    (read-only folder, full disk, file-size limit, a file where a folder should
    be) raises :class:`CheckpointError` and leaves a previous checkpoint intact.
    """
    arrays = dict(arrays)
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"checkpoint: entry names must be non-empty strings, got {key!r}")
        if np.asarray(value).dtype.hasobject:
            raise CheckpointError(f"checkpoint: entry {key!r} is an object array; only plain arrays are stored")
    _write_atomic(path, lambda fh: _write_npz(fh, arrays))


def _write_npz(fh: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """The ``.npz`` layout of ``np.savez`` (stored zip of ``<name>.npy``), with any entry name and no pickles."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a checkpoint into a dict of arrays, never unpickling anything.

    Every failure raises :class:`CheckpointError` naming the file: missing, a
    folder, unreadable, not an ``.npz`` zip, an entry that is not a plain NumPy
    array (object/pickled arrays, other files), sizes that do not add up, or
    data that fails its checksum. Sizes are checked against the archive before
    any array is allocated, so a small hostile file cannot claim gigabytes.
    """
    path = check_path("path", path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{path}: is not a regular file; expected a checkpoint (.npz)")
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except PermissionError:
        raise CheckpointError(f"{path}: cannot open the checkpoint (permission denied); check its "
                              "permissions") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open the checkpoint ({exc.strerror or exc})") from None
    try:
        with fh:
            return _read_npz(path, fh)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes can fail anywhere in zipfile or numpy
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {_one_line(exc)}); "
                              "the file is corrupt or truncated") from None


def _read_npz(path: str | Path, fh: BinaryIO) -> dict[str, np.ndarray]:
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes); the file is corrupt or truncated")
    if not zipfile.is_zipfile(fh):
        raise CheckpointError(f"{path}: not a checkpoint (.npz zip archive); the file is corrupt or truncated")
    fh.seek(0)
    out = {}
    with zipfile.ZipFile(fh) as zf:
        twice = duplicate_member(zf)
        if twice is not None:
            raise CheckpointError(f"{path}: the archive holds two members named {twice!r}; np.load would show one "
                                  "and a reader could take the other, so the file is refused as corrupt")
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key is None or not key or info.is_dir():
                raise CheckpointError(f"{path}: entry {info.filename!r} is not a NumPy array (.npy); not a checkpoint")
            if key in out:
                raise CheckpointError(f"{path}: entry {key!r} appears twice; the file is corrupt")
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{path}: entry {key!r} is encrypted; not a checkpoint")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise CheckpointError(f"{path}: entry {key!r} uses an unsupported compression method "
                                      f"({info.compress_type}); not a checkpoint")
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
            if info.compress_size > size or info.file_size > ratio * info.compress_size + 1024:
                raise CheckpointError(f"{path}: entry {key!r} claims {info.file_size} bytes, impossible in a "
                                      f"{size}-byte file; the file is corrupt")
            with zf.open(info) as member:
                shape, dtype, header_len = _npy_header(path, key, member)
            nbytes = math.prod(shape) * dtype.itemsize
            if header_len + nbytes != info.file_size:
                raise CheckpointError(f"{path}: entry {key!r} has shape {shape} {dtype} ({nbytes} bytes) but holds "
                                      f"{info.file_size - header_len}; the file is corrupt or truncated")
            with zf.open(info) as member:  # sizes are consistent: now numpy may allocate and read
                out[key] = np.lib.format.read_array(member, allow_pickle=False)
    return out


def duplicate_member(zf: zipfile.ZipFile) -> str | None:
    """The first name two members of the zip archive ``zf`` share (``X`` and ``X.npy`` count as one: both are
    array ``X`` to ``np.load``), or None. Readers refuse such an archive: ``np.load`` would show one member and
    another reader could take the other."""
    seen = set()
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in seen:
            return info.filename
        seen.add(name)
    return None


def read_npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of an .npy stream, from its header only (nothing is allocated).

    Raises ValueError ("uses .npy format version ...") for a format version other than 1.0 and 2.0.
    Checkpoints and tables both read their arrays' sizes this way before loading anything.
    """
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"uses .npy format version {version}")
    return tuple(int(s) for s in shape), dtype, member.tell()


def _npy_header(path: str | Path, key: str, member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of an .npy member, refusing object dtypes before any allocation."""
    try:
        shape, dtype, header_len = read_npy_header(member)
    except ValueError as exc:
        raise CheckpointError(f"{path}: entry {key!r} {exc}, which checkpoints never use; the file is not a "
                              "checkpoint") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: entry {key!r} holds Python objects (a pickle); refused, checkpoints hold "
                              "plain arrays only")
    return shape, dtype, header_len


# ----------------------------------------------------------------------------- JSON files
def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically and durably (as :func:`save_npz_atomic`)."""
    text = json.dumps(obj, indent=2) + "\n"  # fails (TypeError) before any file is touched
    data = text.encode("utf-8")
    _write_atomic(path, lambda fh: fh.write(data))


JsonlContent = namedtuple("JsonlContent", ["rows", "torn"])
JsonlContent.__doc__ = """Rows of a JSON-lines file; ``torn`` is True when an unterminated last line was dropped."""


def append_jsonl_durable(path: str | Path, row: dict[str, Any]) -> int:
    """Append ``row`` as one JSON line to ``path`` (created if missing), flushed and fsync-ed.

    If the file's last line is torn (no trailing newline: a previous append was
    cut short by a crash), the torn tail is truncated away first so that the
    new line starts a line of its own. Returns the number of torn bytes removed
    (0 normally). Any ``OSError`` raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    line = (json.dumps(row) + "\n").encode("utf-8")  # json.dumps never emits a raw newline
    created = not os.path.lexists(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise _append_error(path, exc) from None
    removed, clean_size = 0, None
    try:
        size = os.fstat(fd).st_size
        if size and _pread(fd, 1, size - 1) != b"\n":
            keep = _end_of_last_full_line(fd, size)
            os.ftruncate(fd, keep)
            removed, size = size - keep, keep
        clean_size = size
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        clean_size = None  # the line is on disk
        if created:
            _fsync_folder(path.parent)
    except OSError as exc:
        if clean_size is not None:  # do not leave half a line behind (the next append would repair it anyway)
            try:
                os.ftruncate(fd, clean_size)
            except OSError:
                pass
        raise _append_error(path, exc) from None
    finally:
        os.close(fd)
    return removed


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - systems without pread
    return os.read(fd, n)


def _end_of_last_full_line(fd: int, size: int, chunk: int = 1 << 16) -> int:
    """Offset just past the last newline of the file (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        block = _pread(fd, end - start, start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def read_jsonl(path: str | Path) -> JsonlContent:
    """Read a JSON-lines file into ``JsonlContent(rows, torn)``.

    Blank lines are skipped. A last line without its newline is a torn write
    (a crash during an append): it is dropped and ``torn`` is True. Any other
    line that is not valid JSON raises :class:`CheckpointError` naming the file
    and the line number, as does a missing or unreadable file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder, not a JSON-lines file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # the part after the last newline: empty when the file ends with one
    complete = lines[:-1]
    rows = []
    for i, raw in enumerate(complete, 1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: line {i} is not valid JSON ({_one_line(exc, 120)}); the file is "
                                  "corrupt") from None
    return JsonlContent(rows, torn)
