"""Run folders: train, checkpoint, resume and evaluate a configuration on disk.

A run folder holds::

    config.json       every setting of the run
    metrics.jsonl     one JSON line per epoch (per-layer local loss terms, output loss,
                      train / validation / test accuracy, seconds)
    checkpoint.npz    the whole trainer state, written atomically after every epoch
                      and when Ctrl-C stops a run
    *.png             the plots (see :mod:`.plots`)
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from .checkpoint import CheckpointError, load_npz, save_npz_atomic, write_json_atomic
from .config import TrainConfig
from .data import load_dataset
from .trainer import Trainer

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.json", "metrics.jsonl", "checkpoint.npz"


def new_run_dir(root="runs", config=None):
    """A fresh folder ``root/<time>-<dataset>-<method>`` (never an existing one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"-{config.dataset}-{config.method}" if config is not None else ""
    base = Path(root) / f"{stamp}{tag}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def read_config(run_dir):
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot read the config ({exc})") from None


def read_metrics(run_dir):
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: line {i} is not valid JSON") from None
    return rows


class _StopFlag:
    """First Ctrl-C asks the loop to stop between two steps; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: no handler, Ctrl-C behaves as usual
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def __call__(self):
        return self.requested


def plot_run(run_dir, trainer=None, dataset=None):
    """Write every plot of a run folder (see :func:`vaelayer_np.plots.plot_all`); returns the paths written."""
    from .plots import plot_all

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: no metrics to plot (metrics.jsonl is empty or missing)")
    config = read_config(run_dir)
    if trainer is None:
        trainer, dataset = load_trainer(run_dir, dataset)
    x = dataset.x_test[:512].astype(trainer.dtype)
    return plot_all(rows, trainer.net_a, x, dataset.image_shape, run_dir, f"{config.dataset}, {config.method}")


def evaluate(trainer, dataset):
    """Accuracy of the trainer's prediction on each split (mean path)."""
    return {
        "train_acc": trainer.accuracy(dataset.x_train, dataset.y_train),
        "val_acc": trainer.accuracy(dataset.x_val, dataset.y_val),
        "test_acc": trainer.accuracy(dataset.x_test, dataset.y_test),
    }


def load_trainer(run_dir, dataset=None):
    """Rebuild a run's trainer from its config and checkpoint."""
    config = read_config(run_dir)
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir, config.val_fraction, config.seed, config.limit)
    trainer = Trainer(config, dataset.n_features, dataset.n_classes)
    trainer.load_state_dict(load_npz(Path(run_dir) / CHECKPOINT_FILE))
    return trainer, dataset


def train_run(config=None, run_dir=None, resume=None, epochs=None, progress=True, plots=True, log=print,
              should_stop=None):
    """Train (or resume) a run in a folder. Returns (run_dir, metrics rows, completed).

    Parameters
    ----------
    config : TrainConfig, for a new run
    run_dir : folder for a new run (default: a new folder under ./runs)
    resume : folder of a run to continue (its config and checkpoint are used)
    epochs : with ``resume``, a new total number of epochs (to extend a finished run)
    progress : show a tqdm progress bar with live loss and accuracy
    plots : write the PNG plots at the end
    should_stop : callable polled between steps (tests use it to simulate Ctrl-C)
    """
    if resume is not None:
        run_dir = Path(resume)
        config = read_config(run_dir)
        if epochs is not None:
            config.epochs = int(epochs)
            config.validate()
        dataset = load_dataset(config.dataset, config.data_dir, config.val_fraction, config.seed, config.limit)
        trainer = Trainer(config, dataset.n_features, dataset.n_classes)
        trainer.load_state_dict(load_npz(run_dir / CHECKPOINT_FILE))
        rows = read_metrics(run_dir)[:trainer.epoch]
        write_json_atomic(run_dir / CONFIG_FILE, config.to_dict())
        log(f"resuming {run_dir} at epoch {trainer.epoch + 1}" +
            (f", batch {trainer.batch_index + 1}" if trainer.batch_index else ""))
    else:
        config = (config or TrainConfig()).validate()
        dataset = load_dataset(config.dataset, config.data_dir, config.val_fraction, config.seed, config.limit)
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config=config)
        if (run_dir / CHECKPOINT_FILE).exists():
            raise ValueError(f"run_dir: {run_dir} already holds a run; use --resume {run_dir} to continue it")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / CONFIG_FILE, config.to_dict())
        trainer = Trainer(config, dataset.n_features, dataset.n_classes)
        rows = []
    log(dataset.summary())
    log(f"method {config.method}, VAE layers {config.resolved_widths()}, run folder {run_dir}")
    metrics_path = run_dir / METRICS_FILE
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    completed = True
    with _StopFlag() as flag:
        stop = (lambda: flag() or should_stop()) if should_stop is not None else flag
        while trainer.epoch < config.epochs:
            bar = _progress_bar(progress, trainer, dataset, config)
            epoch_means = trainer.train_epoch(dataset.x_train, dataset.y_train,
                                              on_step=bar.update_step if bar else None, should_stop=stop)
            if bar:
                bar.close()
            if epoch_means is None:  # interrupted between two steps: save and leave
                save_npz_atomic(run_dir / CHECKPOINT_FILE, trainer.state_dict())
                log(f"interrupted: checkpoint saved in {run_dir}; continue with `vaelayer train --resume {run_dir}`")
                completed = False
                break
            row = {"epoch": trainer.epoch, **epoch_means, **evaluate(trainer, dataset)}
            rows.append(row)
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            save_npz_atomic(run_dir / CHECKPOINT_FILE, trainer.state_dict())
            log(f"epoch {row['epoch']}/{config.epochs}: output loss {row['output_loss']:.4f}, "
                f"train {row['train_acc']:.4f}, val {row['val_acc']:.4f}, test {row['test_acc']:.4f} "
                f"({row['seconds']:.1f} s)")
    if completed and plots:
        written = plot_run(run_dir, trainer=trainer, dataset=dataset)
        log("plots: " + ", ".join(str(p) for p in written))
    if completed:
        log(f"metrics: {metrics_path}")
    return run_dir, rows, completed


class _TqdmBar:
    def __init__(self, total, desc, initial):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)
        self.loss = self.acc = None

    def update_step(self, index, total, metrics):
        # exponential moving averages keep the live figures readable
        a = 0.1
        self.loss = metrics["output_loss"] if self.loss is None else (1 - a) * self.loss + a * metrics["output_loss"]
        self.acc = metrics["batch_acc"] if self.acc is None else (1 - a) * self.acc + a * metrics["batch_acc"]
        self.bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{self.acc:.3f}", refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def _progress_bar(enabled, trainer, dataset, config):
    if not enabled:
        return None
    total = trainer.n_batches(dataset.x_train.shape[0])
    return _TqdmBar(total, f"epoch {trainer.epoch + 1}/{config.epochs}", trainer.batch_index)
