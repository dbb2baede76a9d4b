"""Checkpoints: ``.npz`` files written atomically and read without pickles.

A checkpoint is a flat dict of arrays (see ``Trainer.state_dict``). It is
written to a temporary file in the same folder, flushed to disk, and renamed
over the old one, so a crash or Ctrl-C never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


def save_npz_atomic(path, arrays):
    """Write ``arrays`` (dict name -> ndarray) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"checkpoint: entry {key!r} is an object array; only plain arrays are stored")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npz(path):
    """Read a checkpoint into a dict of arrays (``allow_pickle=False``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc}); the file is corrupt or truncated") from None


def write_json_atomic(path, obj):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
