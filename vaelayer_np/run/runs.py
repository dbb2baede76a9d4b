"""Run folders: train, checkpoint, resume and evaluate a configuration on disk.

A run folder holds::

    config.json       every setting of the run
    metrics.jsonl     one JSON line per epoch (per-layer local loss terms, output loss,
                      train / validation / test accuracy, seconds), appended durably;
                      ``val_acc`` is null when the validation split is empty
    checkpoint.npz    the whole trainer state, written atomically after every epoch
                      and when Ctrl-C, SIGTERM or SIGHUP stops a run
    data.json         the fingerprint (size, sha256) of every data file the run read:
                      a resume, ``evaluate`` and ``plot`` refuse data changed since (unless
                      told ``allow_changed_data``); the checkpoint holds a copy (entry
                      ``run.data_json``), so a data.json deleted or edited is noticed too
    run.lock          held (``flock``) by the process training in the folder
    *.png             the plots (see :mod:`.plots`)

Nothing a user has is lost: every option, the dataset (finite values, every split) and the memory
the model needs are checked before the folder is created (an error later in the first epoch, before
any checkpoint, removes the files the run had made); a folder that holds other files is never
written into; a second process on the same folder is refused; each epoch appends its metrics line,
then replaces the checkpoint atomically, so a crash at any moment leaves a checkpoint and the
metrics of every epoch it holds (a resume drops a torn last line and the lines of epochs the
checkpoint does not hold, by an atomic rewrite); training that diverges is stopped before its state
reaches the checkpoint.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..fast import machine
from ..fast.machine import limit_threads, usable_cores
from .checkpoint import (
    CheckpointError,
    _save_error,
    _write_atomic,
    append_jsonl_durable,
    clean_stale_temp_files,
    load_npz,
    read_jsonl,
    save_npz_atomic,
    write_json_atomic,
)
from .config import RESUME_MAY_CHANGE, TrainConfig
from .data import Dataset, changed_files, fingerprint_files, load_dataset
from .signals import StopSignals
from .tables import load_table_for_config
from .trainer import DivergenceError, Trainer, check_resume_config

if TYPE_CHECKING:
    import numpy as np

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, LOCK_FILE = "config.json", "metrics.jsonl", "checkpoint.npz", "run.lock"
DATA_FILE = "data.json"
DATA_ENTRY = "run.data_json"
"""The checkpoint's copy of data.json (its JSON text): the fingerprint survives a lost or edited data.json."""


def new_run_dir(root: str | Path = "runs", config: TrainConfig | None = None) -> Path:
    """A fresh folder ``root/<time>-<dataset>-<method>`` (never an existing one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"-{config.dataset}-{config.method}" if config is not None else ""
    base = Path(root) / f"{stamp}{tag}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def load_run_dataset(config: TrainConfig) -> Dataset:
    """The dataset a configuration trains on (the one place a run loads its data).

    With ``config.data`` set, the table file it names (:func:`vaelayer_np.run.tables.load_table_for_config`,
    which also fits the sizes the config leaves open to the table); otherwise
    :func:`vaelayer_np.run.data.load_dataset`.
    """
    if getattr(config, "data", ""):
        return load_table_for_config(config)
    return load_dataset(config.dataset, config.data_dir, config.val_fraction, config.seed, config.limit)


def _check_is_folder(run_dir: str | Path) -> None:
    """Refuse a path that is a file, a loop of symbolic links, a dangling link or below a file (a missing path is
    fine: the run creates it)."""
    try:
        mode = os.stat(run_dir).st_mode
    except FileNotFoundError:
        if os.path.islink(run_dir):
            raise CheckpointError(f"{run_dir}: is a symbolic link to {os.readlink(run_dir)}, which does not exist; "
                                  "choose another path or create the folder it points to") from None
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{run_dir}: a loop of symbolic links (too many levels of symbolic links); choose "
                                  "another path") from None
        if exc.errno == errno.ENOTDIR:
            raise CheckpointError(f"{run_dir}: a part of the path is a file where a folder should be; choose another "
                                  "path") from None
        raise CheckpointError(f"{run_dir}: cannot look at the path ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISDIR(mode):
        raise CheckpointError(f"{run_dir}: is a file, not a run folder; choose a folder path")


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of a run folder (ValueError naming the file if it is not one of ours)."""
    run_dir = Path(run_dir)
    _check_is_folder(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: no such folder; give the folder of a run (under ./runs by default)")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the config ({exc}); not a run folder's config") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a run configuration (expected a JSON object of settings)")
    threads = data.get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads > usable_cores():
        data["threads"] = usable_cores()  # a run from a larger machine: as many threads as this one has
    try:
        return TrainConfig.from_dict(data).validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid run configuration ({exc})") from None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl ([] if there is none); a torn last line (a crash) is dropped."""
    path = Path(run_dir) / METRICS_FILE
    if not os.path.lexists(path):
        return []
    return read_jsonl(path).rows


def _is_ours(name: str) -> bool:
    """Files a run folder may hold before its config exists: the lock and temporary files of a save."""
    return name == LOCK_FILE or name.endswith(".tmp")


def _check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder for a new run that is a file, holds a run, or holds other files."""
    _check_is_folder(run_dir)
    if not run_dir.exists():
        return
    try:
        names = [e.name for e in os.scandir(run_dir)]
    except OSError as exc:
        raise CheckpointError(f"{run_dir}: cannot list the folder ({exc.strerror or exc}); check its "
                              "permissions") from None
    if CONFIG_FILE in names:
        try:
            read_config(run_dir)
        except ValueError:
            raise CheckpointError(f"run_dir: {run_dir} is not empty and is not a run folder (its {CONFIG_FILE} is "
                                  "not a vaelayer configuration); refusing to write into it: choose a new or empty "
                                  "folder") from None
    if CONFIG_FILE in names or CHECKPOINT_FILE in names:
        raise CheckpointError(f"run_dir: {run_dir} already holds a run; use --resume {run_dir} to continue it, or "
                              "choose a new folder")
    others = sorted(n for n in names if not _is_ours(n))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CheckpointError(f"run_dir: {run_dir} is not empty and is not a run folder (it holds {shown}); "
                              "refusing to write into it: choose a new or empty folder")


class RunLock:
    """An exclusive ``flock`` on ``<run folder>/run.lock``, held while a process trains there.

    A second process gets a :class:`CheckpointError` naming the folder at once
    (no waiting). The lock file stays (removing it would race with another
    process); the lock itself ends with the process, even a killed one.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        path = self.run_dir / LOCK_FILE
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot create the lock file ({exc.strerror or exc}); check that the "
                                  "folder is writable") from None
        fd = self.fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            self.fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CheckpointError(f"{self.run_dir}: another process is training in this run folder (it holds "
                                      f"{LOCK_FILE}); wait for it to finish or stop it first") from None
            raise CheckpointError(f"{path}: cannot lock the run folder ({exc.strerror or exc})") from None
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
        return False


def plot_run(run_dir: str | Path, trainer: Trainer | None = None, dataset: Dataset | None = None,
             allow_changed_data: bool = False) -> list[str | Path]:
    """Write every plot of a run folder (see :func:`vaelayer_np.run.plots.plot_all`); returns the paths written.

    Without ``trainer``, the run's checkpoint and data are loaded (:func:`load_trainer`; changed data
    files are refused unless ``allow_changed_data``)."""
    from .plots import plot_all

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: no metrics to plot (metrics.jsonl is empty or missing)")
    if trainer is None:
        trainer, dataset = load_trainer(run_dir, dataset, allow_changed_data=allow_changed_data)
    assert dataset is not None, "dataset: give the dataset with the trainer"
    x = dataset.x_test[:512].astype(trainer.dtype)
    name = Path(config.data).name if getattr(config, "data", "") else config.dataset
    return plot_all(rows, trainer.net_a, x, dataset.image_shape, run_dir, f"{name}, {config.method}",
                    labels=dataset.y_test[:512], class_names=tuple(dataset.class_names),
                    feature_names=tuple(getattr(dataset, "feature_names", ())))


def evaluate(trainer: Trainer, dataset: Dataset) -> dict[str, float | None]:
    """Accuracy of the trainer's prediction on each split (mean path); None for an empty split."""
    out: dict[str, float | None] = {}
    for split in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        out[f"{split}_acc"] = trainer.accuracy(x, y) if len(y) else None
    return out


def _format_acc(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _read_checkpoint(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The checkpoint's arrays, or None if the run has none yet (killed before its first save)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not os.path.lexists(path):
        return None
    return load_npz(path)


def load_trainer(run_dir: str | Path, dataset: Dataset | None = None, allow_changed_data: bool = False,
                 log: Callable[[str], Any] = print) -> tuple[Trainer, Dataset]:
    """Rebuild a run's trainer from its config and checkpoint (ValueError naming what is wrong).

    The data files are compared with the run's fingerprint (see :func:`check_data_unchanged`).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = load_npz(run_dir / CHECKPOINT_FILE)
    recorded = _recorded_data(run_dir, state, allow_changed_data, log)
    if "trainer.config" in state:  # compare the settings before the (slower) dataset load
        _check_saved_config(config, state)
    if dataset is None:
        dataset = load_run_dataset(config)
        check_data_unchanged(run_dir, dataset, allow_changed_data, log, recorded=recorded)
    trainer = make_trainer(config, dataset)
    trainer.load_state_dict(state)
    return trainer, dataset


# ----------------------------------------------------------------------------- checks before training
def model_parameter_count(config: TrainConfig, n_features: int, n_classes: int) -> int:
    """The number of parameters of one network of ``config`` on ``n_features`` inputs and ``n_classes`` classes
    (Python integers: exact however large the sizes)."""
    widths = tuple(int(w) for w in config.resolved_widths())
    hidden = int(config.encoder_hidden)
    dims = (int(n_features),) + widths
    total = 0
    for d, k in zip(dims[:-1], dims[1:]):
        e = hidden or d
        if hidden:
            total += d * e + e  # W_enc, b_enc
        total += 2 * (e * k + k) + k * d + d  # W_mu, b_mu, W_lv, b_lv, W_dec, b_dec
    readout = widths[-1] if config.readout == "last" else sum(widths)
    return total + readout * int(n_classes) + int(n_classes)


def _batch_rows(config: TrainConfig, rows: int | None) -> int:
    """The rows of the largest batch: ``config.batch_size``, at most ``rows`` (the training rows) when given."""
    assert config.batch_size is not None  # TrainConfig.validate fills it in
    return int(config.batch_size) if rows is None else min(int(config.batch_size), max(1, int(rows)))


def _memory_parts(config: TrainConfig, n_features: int, n_classes: int, rows: int | None) -> tuple[int, int]:
    """Bytes of (the parameters with their gradients and optimiser moments, a batch's activations), both
    networks of IFFCL counted; the batch is at most ``rows`` rows when that is given (a larger --batch-size
    trains on batches of every row)."""
    import numpy as np

    itemsize = np.dtype(config.dtype).itemsize
    nets = 2 if config.method == "iffcl" else 1
    copies = 1 + 1 + (2 if config.optimizer == "adam" else 1)
    params = model_parameter_count(config, n_features, n_classes)
    widths = config.resolved_widths()
    dims = (int(n_features),) + tuple(int(w) for w in widths)
    per_row = sum((int(config.encoder_hidden) or d) + 4 * k + d for d, k in zip(dims[:-1], dims[1:]))
    batch = _batch_rows(config, rows)
    return nets * copies * params * itemsize, nets * 4 * batch * per_row * itemsize


def training_memory(config: TrainConfig, n_features: int, n_classes: int, rows: int | None = None) -> int:
    """Bytes a Trainer of ``config`` needs, roughly: per network the parameters, their gradients and the
    optimiser's moments (two for Adam, one for SGD), and the activations of a batch (of at most ``rows`` rows,
    the training rows, when given)."""
    return sum(_memory_parts(config, n_features, n_classes, rows))


SMALL_BATCH = 128
"""The largest default batch size: a model that fits with batches of this many rows but not with the batches asked
for is refused as too large a batch (the error names the batch size, not the widths)."""


def check_model_memory(config: TrainConfig, n_features: int, n_classes: int, name: str | None = None,
                       rows: int | None = None) -> int:
    """Refuse a model larger than the memory available, naming the sizes that make it so: the batch size when
    the model would fit with batches of :data:`SMALL_BATCH` rows, else an encoder wider than every layer, else
    the widths. ``rows``: the training rows, the largest batch there can be."""
    params, activations = _memory_parts(config, n_features, n_classes, rows)
    batch = _batch_rows(config, rows)
    widths = ",".join(str(w) for w in config.resolved_widths())
    if name is None:  # the setting that makes the model large
        available = machine.available_memory()
        widest = max(max(config.resolved_widths()), int(n_features))
        small_batch_fits = available is not None and params + activations * SMALL_BATCH / batch <= available
        name = ("batch_size" if batch > SMALL_BATCH and small_batch_fits else
                "encoder_hidden" if config.encoder_hidden > widest else "widths")
    if name == "batch_size":
        what = (f"a batch of {batch} rows through the model of widths {widths}, encoder_hidden "
                f"{config.encoder_hidden} on {n_features} features (its activations)")
    else:
        what = (f"the model of widths {widths}, encoder_hidden {config.encoder_hidden} on {n_features} features "
                f"({model_parameter_count(config, n_features, n_classes)} parameters per network, with gradients "
                "and optimiser moments)")
    return machine.check_memory(name, params + activations, what)


def make_trainer(config: TrainConfig, dataset: Dataset) -> Trainer:
    """A Trainer for ``config`` on ``dataset``, after checking that its memory fits."""
    check_model_memory(config, dataset.n_features, dataset.n_classes, rows=len(dataset.y_train))
    return Trainer(config, dataset.n_features, dataset.n_classes)


def check_recon_inputs(config: TrainConfig, dataset: Dataset) -> None:
    """A BCE reconstruction (``recon="bce"``) needs the first layer's inputs, its targets, in [0, 1]: a value
    outside is named here, with the setting at fault, before any folder exists (a table's columns are
    standardised, so they always hold negative values)."""
    import numpy as np

    if config.recon != "bce":
        return
    dropout = getattr(config, "dropout", 0.0) or 0.0
    if dropout > 0:  # inverted dropout scales the inputs it keeps by 1 / (1 - p), beyond 1
        raise ValueError(f"recon: 'bce' reconstructs inputs in [0, 1] (they are its targets), but dropout {dropout:g} "
                         f"scales the inputs it keeps by {1 / (1 - dropout):.4g}; use recon 'mse' (the default) with "
                         "dropout, or dropout 0")
    x = dataset.x_train
    outside = ~((x >= 0.0) & (x <= 1.0))
    if x.size and outside.any():
        r, c = (int(v) for v in np.argwhere(outside)[0])
        names = getattr(dataset, "feature_names", ()) or ()
        column = f'column "{names[c]}"' if c < len(names) else f"feature {c}"
        table = " (a table's columns are standardised to mean 0, so they hold negative values)" if getattr(
            config, "data", "") else ""
        raise ValueError(f"recon: 'bce' reconstructs inputs in [0, 1] (they are its targets), but {dataset.name} "
                         f"holds {x[r, c]:.6g} in its training rows ({column}, row {r + 1}){table}; use recon 'mse' "
                         "(the default) for such data")


def check_dataset_values(dataset: Dataset) -> None:
    """Every split finite (a value that would stop the first step is named here, before any folder exists)."""
    import numpy as np

    for split in ("train", "val", "test"):
        x = getattr(dataset, f"x_{split}")
        if x.size and not np.isfinite(x).all():
            r, c = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
            names = getattr(dataset, "feature_names", ()) or ()
            column = f'column "{names[c]}"' if c < len(names) else f"feature {c}"
            raise ValueError(f"{dataset.name}: the {split} rows hold NaN or inf after loading ({column}, row "
                             f"{r + 1}); the data cannot be trained on")


def read_data_fingerprint(run_dir: str | Path) -> dict[str, dict[str, Any]] | None:
    """The ``files`` recorded in a run's data.json, or None when it has none (a run of an older version)."""
    path = Path(run_dir) / DATA_FILE
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the data fingerprint ({exc}); the file is corrupt") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise CheckpointError(f"{path}: not a data fingerprint (expected {{\"files\": {{role: {{size, sha256}}}}}})")
    return files


def _parse_data_entry(run_dir: str | Path, state: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The ``files`` of the checkpoint's copy of data.json (entry :data:`DATA_ENTRY`, removed from ``state``),
    or None when the checkpoint has none (written by a version before the copy)."""
    import numpy as np

    entry = state.pop(DATA_ENTRY, None)
    if entry is None:
        return None
    where = f"{Path(run_dir) / CHECKPOINT_FILE}: entry {DATA_ENTRY!r}"
    if not isinstance(entry, np.ndarray) or entry.shape != () or entry.dtype.kind != "U":
        raise CheckpointError(f"{where} must be one JSON string; the file is corrupt")
    try:
        files = json.loads(str(entry)).get("files")
    except (json.JSONDecodeError, AttributeError):
        files = None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise CheckpointError(f"{where} is not a data fingerprint; the file is corrupt")
    return files


def _recorded_data(run_dir: str | Path, state: dict[str, Any] | None, allow_changed_data: bool = False,
                   log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]] | None:
    """The fingerprint of the data a run was trained on: data.json, held against the checkpoint's copy.

    ``state``: the checkpoint's arrays (its copy is removed from them), or None when there is no checkpoint.
    A data.json edited since (it differs from the copy) is refused, naming it; a deleted one is replaced by
    the copy (with a warning); a run that has neither cannot be checked and is refused. With
    ``allow_changed_data`` each of these is only logged. Returns the fingerprint (None: nothing to check).
    """
    path = Path(run_dir) / DATA_FILE
    copy = _parse_data_entry(run_dir, state) if state is not None else None
    on_disk: dict[str, dict[str, Any]] | str | None
    try:
        on_disk = read_data_fingerprint(run_dir)
    except CheckpointError:
        if copy is None:
            raise
        on_disk = "unreadable"
    if copy is not None and on_disk != copy:
        what = "is missing" if on_disk is None else "is unreadable" if on_disk == "unreadable" else \
            "differs from the copy the checkpoint holds (it was changed after the run was trained)"
        if on_disk is not None and not allow_changed_data:
            raise CheckpointError(f"{path}: {what}; restore it (the checkpoint's copy is the run's record), or "
                                  "give --allow-changed-data to go on without the check")
        log(f"warning: {path} {what}; the data are checked against the checkpoint's copy")
        return copy
    if copy is None and on_disk is None and state is not None:
        if not allow_changed_data:
            raise CheckpointError(f"{path}: missing, and the checkpoint holds no copy: the data cannot be checked "
                                  "against those the run was trained on; give --allow-changed-data to use them "
                                  "unchecked")
        log(f"warning: {path} is missing: the data are used unchecked (--allow-changed-data)")
    return on_disk if not isinstance(on_disk, str) else copy


def read_data_fingerprint_or_none(run_dir: str | Path) -> dict[str, dict[str, Any]] | None:
    """:func:`read_data_fingerprint`, None also for an unreadable data.json."""
    try:
        return read_data_fingerprint(run_dir)
    except CheckpointError:
        return None


def check_data_unchanged(run_dir: str | Path, dataset: Dataset, allow_changed_data: bool = False,
                         log: Callable[[str], Any] = print,
                         recorded: dict[str, dict[str, Any]] | str | None = "data.json") -> list[str]:
    """Refuse data files that differ from those the run was trained on (size or sha256), naming them.

    ``recorded``: the fingerprint to compare with (:func:`_recorded_data`), or by default the run's data.json.
    With ``allow_changed_data`` the change is only logged. Nothing recorded (None): nothing to compare.
    """
    if isinstance(recorded, str) and recorded == "data.json":
        recorded = read_data_fingerprint(run_dir)
    if recorded is None or isinstance(recorded, str):
        return []
    changes = changed_files(recorded, getattr(dataset, "files", ()))
    if changes and not allow_changed_data:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise CheckpointError(f"{changes[0]}{more}: the data changed since the run in {run_dir} was trained; "
                              "restore the file, or give --allow-changed-data to use it anyway")
    for change in changes:
        log(f"warning: {change}: the data changed since the run was trained; used anyway (--allow-changed-data)")
    return changes


def _remove_unfinished(run_dir: Path, created: bool) -> None:
    """After an error before the first checkpoint: remove the files the new run made (and its folder if it made it)."""
    for name in (METRICS_FILE, DATA_FILE, CONFIG_FILE, LOCK_FILE):
        try:
            os.unlink(run_dir / name)
        except OSError:
            pass
    if created:
        try:
            os.rmdir(run_dir)
        except OSError:
            pass


def _check_saved_config(config: TrainConfig, state: dict[str, Any]) -> None:
    import numpy as np

    entry = state["trainer.config"]
    if isinstance(entry, np.ndarray) and entry.shape == () and entry.dtype.kind == "U":
        try:
            saved = json.loads(str(entry))
        except json.JSONDecodeError:
            return  # Trainer.load_state_dict names the entry
        if isinstance(saved, dict):
            check_resume_config(config, saved)


def _keep_rows_of_checkpoint(run_dir: Path, epoch: int, log: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Metrics rows of epochs 1..epoch; the file is rewritten (atomically) only if it holds more or a torn line."""
    path = run_dir / METRICS_FILE
    rows: list[Any]
    if not os.path.lexists(path):
        rows, torn = [], False
    else:
        rows, torn = read_jsonl(path)
    keep = [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int) and 1 <= r["epoch"] <= epoch]
    if len(keep) != len(rows) or torn:
        text = "".join(json.dumps(r) + "\n" for r in keep).encode("utf-8")
        _write_atomic(path, lambda fh: fh.write(text))
        log(f"metrics.jsonl: kept the {len(keep)} rows of the checkpoint's {epoch} epochs"
            + (f", dropped {len(rows) - len(keep)} later rows" if len(rows) != len(keep) else "")
            + (" and a torn last line" if torn else ""))
    epochs = [r["epoch"] for r in keep]
    if epochs != list(range(1, epoch + 1)):
        log(f"warning: {path} has rows for epochs {epochs[:5]}{'...' if len(epochs) > 5 else ''}, not 1..{epoch}; "
            "missing rows cannot be recreated")
    return keep


def train_run(config: TrainConfig | None = None, run_dir: str | Path | None = None, resume: str | Path | None = None,
              epochs: int | None = None, progress: bool = True, plots: bool = True, log: Callable[[str], Any] = print,
              should_stop: Callable[[], bool] | None = None, changes: dict[str, Any] | None = None,
              allow_changed_data: bool = False) -> tuple[Path, list[dict[str, Any]], bool]:
    """Train (or resume) a run in a folder. Returns (run_dir, metrics rows, completed).

    Every setting, the run folder and the dataset are checked before anything is
    written; the folder is locked while the run trains (see :class:`RunLock`).

    Parameters
    ----------
    config : TrainConfig, for a new run
    run_dir : folder for a new run (default: a new folder under ./runs); it must not
        exist, or be empty
    resume : folder of a run to continue (its config and checkpoint are used)
    epochs : with ``resume``, a new total number of epochs (to extend a run; never
        fewer than the epochs already done)
    changes : dict, with ``resume``: new values of the other settings a resume may change
        (``data_dir``, ``backend``, ``threads``, ``parallel``; :data:`vaelayer_np.run.config.RESUME_MAY_CHANGE`)
    progress : show a tqdm progress bar with live loss and accuracy
    plots : write the PNG plots at the end
    should_stop : callable polled between steps (tests use it to simulate Ctrl-C)
    allow_changed_data : with ``resume``, go on when a data file differs from the one the run
        was trained on (see data.json); by default that is refused, naming the file

    Raises
    ------
    ValueError (CheckpointError, DivergenceError, ...) with a one-line message.
    """
    if resume is not None:
        run_dir = Path(resume)
        read_config(run_dir)  # a run folder, before the lock file is touched
        with RunLock(run_dir):  # then everything is read under the lock: no other process changes it meanwhile
            config = read_config(run_dir)
            changes = dict(changes or {})
            if epochs is not None:
                changes["epochs"] = epochs
            refused = sorted(set(changes) - RESUME_MAY_CHANGE)
            if refused:
                raise ValueError(f"changes: a resumed run keeps {', '.join(refused)}; only "
                                 f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change")
            for key, value in changes.items():
                setattr(config, key, value)
            if changes.get("data_dir") and config.data_dir:  # stored absolute, as TrainConfig.__post_init__ does
                config.data_dir = os.path.abspath(os.fspath(config.data_dir))
            if changes:
                config.validate()
            state = _read_checkpoint(run_dir)
            recorded = _recorded_data(run_dir, state, allow_changed_data, log)
            if state is not None and "trainer.config" in state:
                _check_saved_config(config, state)  # before the (slower) dataset load
            dataset = load_run_dataset(config)
            check_data_unchanged(run_dir, dataset, allow_changed_data, log, recorded=recorded)
            if recorded is not None and read_data_fingerprint_or_none(run_dir) is None:
                write_json_atomic(run_dir / DATA_FILE, {"files": recorded})  # data.json restored from the copy
            clean_stale_temp_files(run_dir)
            trainer = make_trainer(config, dataset)
            if state is not None:
                trainer.load_state_dict(state)
            elif read_metrics(run_dir):
                raise CheckpointError(f"{run_dir / CHECKPOINT_FILE}: missing, but {METRICS_FILE} holds epochs; "
                                      "the run cannot be continued without its checkpoint")
            assert config.epochs is not None  # TrainConfig.validate fills it in
            if config.epochs < trainer.epoch:
                raise ValueError(f"epochs: {config.epochs} is fewer than the {trainer.epoch} epochs the run has "
                                 f"already done; give --epochs {trainer.epoch} or more")
            rows = _keep_rows_of_checkpoint(run_dir, trainer.epoch, log)
            if changes:
                write_json_atomic(run_dir / CONFIG_FILE, config.to_dict())
            if trainer.epoch >= config.epochs and not trainer.batch_index:
                log(f"{run_dir}: already complete ({trainer.epoch} of {config.epochs} epochs); give --epochs N "
                    "with N larger to train further")
            else:
                log(f"resuming {run_dir} at epoch {trainer.epoch + 1}" +
                    (f", batch {trainer.batch_index + 1}" if trainer.batch_index else ""))
            return _train(config, run_dir, dataset, trainer, rows, progress, plots, log, should_stop,
                          provenance=recorded)
    if config is None:
        config = TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config: expected a TrainConfig, got {type(config).__name__}")
    config.validate()
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config=config)
    _check_new_run_dir(run_dir)  # before the (slower) dataset load
    if allow_changed_data:
        raise ValueError("allow_changed_data: applies only to a resumed run")
    # everything that can be checked is checked before the folder exists
    dataset = load_run_dataset(config)
    check_dataset_values(dataset)
    check_recon_inputs(config, dataset)
    fingerprint = fingerprint_files(getattr(dataset, "files", ()))
    trainer = make_trainer(config, dataset)
    created = not os.path.lexists(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _save_error(run_dir, exc, doing="cannot create the run folder", kept="Nothing was written.") from None
    with RunLock(run_dir):
        _check_new_run_dir(run_dir)  # again, now that no other process can start a run here
        clean_stale_temp_files(run_dir)
        try:
            write_json_atomic(run_dir / CONFIG_FILE, config.to_dict())
            write_json_atomic(run_dir / DATA_FILE, {"files": fingerprint})
            return _train(config, run_dir, dataset, trainer, [], progress, plots, log, should_stop,
                          provenance=fingerprint)
        except (ValueError, OSError, MemoryError) as exc:
            # an error before the first checkpoint (a divergence keeps its folder and says so): nothing to keep
            if not isinstance(exc, DivergenceError) and not os.path.lexists(run_dir / CHECKPOINT_FILE):
                _remove_unfinished(run_dir, created)
            raise


def _save_checkpoint(run_dir: Path, trainer: Trainer, provenance: dict[str, dict[str, Any]] | None) -> None:
    """The trainer's state, with the copy of data.json (:data:`DATA_ENTRY`) when the run has one."""
    import numpy as np

    arrays = trainer.state_dict()
    if provenance is not None:
        arrays = {**arrays, DATA_ENTRY: np.array(json.dumps({"files": provenance}, sort_keys=True))}
    save_npz_atomic(run_dir / CHECKPOINT_FILE, arrays)


_DIVERGENCE_SUSPECTS = (("head_weight", "the weight of the local heads' loss in each layer's loss"),
                        ("backprop_neg_elbo_weight", "the weight of the layers' negative ELBOs in backprop's loss"),
                        ("weight_decay", "the L2 weight decay"))


def _name_suspects(message: str, config: TrainConfig) -> str:
    """A divergence's message with the run's own loss weights among the suspects (the trainer names --lr,
    --output-lr, --lam and --beta): each of :data:`_DIVERGENCE_SUSPECTS` the run set above 0, and an
    unbounded log-variance (--log-var-bound 0)."""
    extra = []
    for name, what in _DIVERGENCE_SUSPECTS:
        value = getattr(config, name, 0.0) or 0.0
        option = "--" + name.replace("_", "-")
        if value > 0 and option not in message:
            extra.append(f"a smaller {option} (now {value:g}, {what})")
    if getattr(config, "log_var_bound", 1.0) == 0 and "--log-var-bound" not in message:
        extra.append("a --log-var-bound above 0 (now 0: the log-variance is unbounded)")
    if not extra:
        return message
    return message.rstrip(".") + ". Suspects among this run's own settings: " + "; ".join(extra) + "."


def _train(config: TrainConfig, run_dir: Path, dataset: Dataset, trainer: Trainer, rows: list[dict[str, Any]],
           progress: bool, plots: bool, log: Callable[[str], Any], should_stop: Callable[[], bool] | None,
           provenance: dict[str, dict[str, Any]] | None = None) -> tuple[Path, list[dict[str, Any]], bool]:
    """The epochs of a run (its folder locked and checked); see :func:`train_run`. ``provenance``: the data
    fingerprint the checkpoints carry (see :func:`_recorded_data`)."""
    log(dataset.summary())
    log(f"method {config.method}, VAE layers {config.resolved_widths()}, run folder {run_dir}")
    metrics_path = run_dir / METRICS_FILE
    completed = True
    with StopSignals() as flag, limit_threads(config.threads):
        stop = (lambda: flag() or should_stop()) if should_stop is not None else flag
        bars = (lambda t: _progress_bar(progress, t, dataset, config)) if progress else None
        epochs = trainer.epochs(dataset.x_train, dataset.y_train, should_stop=stop, progress=bars)
        while True:
            try:
                epoch_means = next(epochs, "done")
            except DivergenceError as exc:
                # nothing of the diverged epoch is saved: the checkpoint and the metrics stay at the last good epoch
                saved = (f" {CHECKPOINT_FILE} and {METRICS_FILE} keep the last good state (nothing of this epoch "
                         "was saved)." if (run_dir / CHECKPOINT_FILE).exists()
                         else " No epoch had finished: there is no checkpoint.")
                raise DivergenceError(f"{run_dir}: {_name_suspects(str(exc), config)}{saved}", epoch=exc.epoch,
                                      step=exc.step, layer=exc.layer, what=exc.what) from None
            if isinstance(epoch_means, str):  # "done"
                break
            if epoch_means is None:  # interrupted between two steps: save and leave
                _save_checkpoint(run_dir, trainer, provenance)
                by = f" by {flag.signal_name}" if flag.signal_name else ""
                log(f"interrupted{by}: checkpoint saved in {run_dir}; continue with "
                    f"`vaelayer train --resume {run_dir}`")
                completed = False
                break
            row = {"epoch": trainer.epoch, **epoch_means, **evaluate(trainer, dataset)}
            # the row first, then the checkpoint: a crash in between leaves a row that the resume drops and redoes
            append_jsonl_durable(metrics_path, row)
            rows.append(row)
            _save_checkpoint(run_dir, trainer, provenance)
            log(f"epoch {row['epoch']}/{config.epochs}: output loss {row['output_loss']:.4f}, "
                f"train {_format_acc(row['train_acc'])}, val {_format_acc(row['val_acc'])}, "
                f"test {_format_acc(row['test_acc'])} ({row['seconds']:.1f} s)")
    if completed and plots and rows:
        written = plot_run(run_dir, trainer=trainer, dataset=dataset)
        log("plots: " + ", ".join(str(p) for p in written))
    if completed:
        log(f"metrics: {metrics_path}")
    return run_dir, rows, completed


class _TqdmBar:
    """The progress bar (on stderr); a closed stderr (a broken pipe) ends the bar, never the training."""

    def __init__(self, total: int, desc: str, initial: int) -> None:
        from tqdm.auto import tqdm
        self.bar = None
        try:
            self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)
        except OSError:
            pass
        self.loss: float | None = None
        self.acc: float | None = None

    def update_step(self, index: int, total: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        # exponential moving averages keep the live figures readable
        a = 0.1
        self.loss = metrics["output_loss"] if self.loss is None else (1 - a) * self.loss + a * metrics["output_loss"]
        self.acc = metrics["batch_acc"] if self.acc is None else (1 - a) * self.acc + a * metrics["batch_acc"]
        try:
            self.bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{self.acc:.3f}", refresh=False)
            self.bar.update(1)
        except OSError:
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            try:
                self.bar.close()
            except OSError:
                pass


def _progress_bar(enabled: bool, trainer: Trainer, dataset: Dataset, config: TrainConfig) -> _TqdmBar | None:
    if not enabled:
        return None
    total = trainer.n_batches(dataset.x_train.shape[0])
    return _TqdmBar(total, f"epoch {trainer.epoch + 1}/{config.epochs}", trainer.batch_index)
