"""Running the experiments of ``vaelayer reproduce``: one seed in a child process (its run folder, its
per-layer figures), and the pool of children, ``--jobs`` at a time, that can be stopped and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...run.config import TrainConfig
from .experiments import (
    EXPERIMENTS,
    LAYERS_FILE,
    PREDICTIONS_FILE,
    PROBE_TRAIN,
    _comparable,
    _mlp_sizes,
    run_settings,
)
from .report import read_rows

if TYPE_CHECKING:
    from ...run.signals import StopSignals
    from .experiments import Experiment

CHILD_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1"}
STOP_FILE_ENV, PARENT_ENV = "VAELAYER_REPRODUCE_STOP_FILE", "VAELAYER_REPRODUCE_PARENT"


# ---------------------------------------------------------------------------------------- one run (child)


def run_one(exp: Experiment, seed: int, out: str | Path, epochs: int | None = None, limit: int | None = None,
            log: Callable[[str], Any] = print, should_stop: Callable[[], bool] | None = None) -> bool:
    """Train (or finish, or reuse) one seed of an experiment in ``out/<name>/seed<seed>``.

    ``should_stop()`` is polled between two training steps (and before a context model's fit).
    Returns True when the run is complete, False when it was stopped (its checkpoint is saved).
    """
    run_dir = Path(out) / exp.name / f"seed{seed}"
    settings = run_settings(exp, seed, epochs, limit)
    if should_stop is not None and should_stop() and exp.kind != "train":
        return False
    if exp.kind != "train":
        return _run_context_model(exp, settings, run_dir, log)
    from ...run.checkpoint import load_npz
    from ...run.runs import (
        CHECKPOINT_FILE,
        METRICS_FILE,
        RunLock,
        read_config,
        train_run,
    )

    config = TrainConfig(**settings).validate()
    checkpoint = run_dir / CHECKPOINT_FILE
    if (run_dir / "config.json").exists():
        saved_config = read_config(run_dir)
        saved, wanted = _comparable(saved_config.to_dict()), _comparable(config.to_dict())
        if any(saved[k] != wanted[k] for k in saved.keys() & wanted.keys()):
            raise ValueError(f"{run_dir} holds a run of other settings than experiment {exp.name} "
                             "(the experiment or its overrides changed); use another --out or delete that folder")
        rows = read_rows(run_dir)
        done_epochs = int(load_npz(checkpoint)["trainer.epoch"]) if checkpoint.exists() else 0
        if len(rows) < done_epochs:  # metrics lost after the checkpoint: the rows cannot be recovered
            log(f"{run_dir}: metrics.jsonl has {len(rows)} rows for {done_epochs} checkpointed epochs; "
                "training this seed again from the start")
            with RunLock(run_dir):  # never under a process that is training there
                checkpoint.unlink()
                (run_dir / METRICS_FILE).unlink(missing_ok=True)
        elif config.epochs is not None and done_epochs >= config.epochs:
            log(f"{exp.name} seed {seed}: finished before, reused")
            return _with_layer_figures(run_dir, True, log)
        # a checkpoint: continue from it; none yet (stopped before its first save): start over in the folder
        _, _, completed = train_run(resume=run_dir, progress=False, plots=False, log=log, should_stop=should_stop)
        return _with_layer_figures(run_dir, completed, log)
    _, _, completed = train_run(config, run_dir=run_dir, progress=False, plots=False, log=log,
                                should_stop=should_stop)
    return _with_layer_figures(run_dir, completed, log)




def layer_figures(run_dir: str | Path, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Per layer of a finished run (net A, the mean path): what its output holds and how well it is a VAE.

    For each layer k: ``probe_test`` the test accuracy of a linear probe (a logistic regression,
    :func:`vaelayer_np.analysis.diagnostics.probe_accuracy`) fitted on the layer's outputs for the first
    :data:`PROBE_TRAIN` training examples; ``head_test`` the test accuracy of the layer's own local
    head (None without heads); for a VAE layer ``recon`` its reconstruction error of its input and
    ``kl`` its KL term (nats per example) on the test set, with z = mu (None for a plain layer).
    Written to ``run_dir/layers.json``; returns the dict. For VAE layers on images, also
    ``reconstructions.png`` and ``samples.png`` (:mod:`vaelayer_np.run.plots`) in ``run_dir``.
    """
    import numpy as np

    from ...analysis.diagnostics import probe_accuracy
    from ...run.checkpoint import write_json_atomic
    from ...run.runs import load_trainer

    trainer, data = load_trainer(run_dir, log=log)
    net = trainer.net_a
    blocks = getattr(net, "vae_layers", None) or getattr(net, "blocks", [])
    feats: dict[str, list[tuple[Any, Any]]] = {}
    for split, x in (("train", data.x_train[:PROBE_TRAIN]), ("test", data.x_test)):
        h, per_layer = np.asarray(x, dtype=trainer.dtype), []
        for layer in blocks:
            out, cache = layer.forward(h, sample=False) if hasattr(layer, "loss_terms") else layer.forward(h)
            terms = layer.loss_terms(cache) if hasattr(layer, "loss_terms") else None
            per_layer.append((out, terms))
            h = out
        feats[split] = per_layer
    layers = []
    for k in range(len(blocks)):
        out_tr, out_te = feats["train"][k][0], feats["test"][k][0]
        terms = feats["test"][k][1]
        head_test = None
        if net.heads:
            logits, _ = net.heads[k].forward(out_te)
            head_test = float(np.mean(logits.argmax(1) == data.y_test))
        layers.append({"layer": k, "probe_test": probe_accuracy(out_tr.astype(np.float64), data.y_train[:PROBE_TRAIN],
                                                                out_te.astype(np.float64), data.y_test),
                       "head_test": head_test,
                       "recon": None if terms is None else float(terms["recon"]),
                       "kl": None if terms is None else float(terms["kl"])})
    result = {"probe_train_examples": int(min(PROBE_TRAIN, len(data.y_train))), "layers": layers}
    if net.vae_layers and data.image_shape is not None:  # is it still a VAE? what it reconstructs and samples
        from ...run.plots import plot_reconstructions, plot_samples

        x = np.asarray(data.x_test[:512], dtype=trainer.dtype)
        plot_reconstructions(net, x, data.image_shape, Path(run_dir) / "reconstructions.png")
        plot_samples(net, x, data.image_shape, Path(run_dir) / "samples.png")
    result["twins"] = twin_figures(trainer, data)
    save_test_predictions(trainer, data, run_dir)
    write_json_atomic(Path(run_dir) / LAYERS_FILE, result)
    return result


def save_test_predictions(trainer: Any, data: Any, run_dir: str | Path) -> None:
    """Write ``run_dir/test_predictions.npz``: the run's class probabilities on the test set (``proba``, float64,
    its prediction: for IFFCL the twins' average) and the test labels (``labels``). With them the report
    averages two runs of one-network methods, the same average IFFCL takes over its twins."""
    import numpy as np

    from ...run.checkpoint import save_npz_atomic

    x = np.asarray(data.x_test, dtype=trainer.dtype)
    save_npz_atomic(Path(run_dir) / PREDICTIONS_FILE,
                    {"proba": np.asarray(trainer.predict_proba(x), dtype=np.float64),
                     "labels": np.asarray(data.y_test, dtype=np.int64)})


def twin_figures(trainer: Any, data: Any) -> dict[str, float] | None:
    """An IFFCL run's test accuracy with its prediction (``both``: the twins' probabilities averaged, the
    default ``predict="twins"``) and with each twin alone (``a``, ``b``): how much of the accuracy is the
    average of two networks. None for a run of one network (backprop, local-heads)."""
    import numpy as np

    if trainer.net_b is None:
        return None
    x, y = np.asarray(data.x_test, dtype=trainer.dtype), data.y_test
    return {"both": float(trainer.accuracy(x, y)),
            "a": float(np.mean(trainer.net_a.predict_proba(x).argmax(1) == y)),
            "b": float(np.mean(trainer.net_b.predict_proba(x).argmax(1) == y))}


def _with_layer_figures(run_dir: str | Path, completed: bool, log: Callable[[str], Any]) -> bool:
    """A finished run without its per-layer figures gets them (``layers.json``); one whose figures were
    written before they held the twins' accuracies gets those, and one without its test predictions
    (``test_predictions.npz``) gets them; returns ``completed``."""
    if not completed:
        return completed
    path = Path(run_dir) / LAYERS_FILE
    if not path.exists():
        figures = layer_figures(run_dir, log=log)
        log("per layer (probe test, head test, recon, kl): " + "; ".join(
            f"{r['probe_test']:.4f}, {r['head_test']}, {r['recon']}, {r['kl']}" for r in figures["layers"]))
        return completed
    figures = json.loads(path.read_text())
    lacks_twins, lacks_predictions = "twins" not in figures, not (Path(run_dir) / PREDICTIONS_FILE).exists()
    if lacks_twins or lacks_predictions:
        from ...run.checkpoint import write_json_atomic
        from ...run.runs import load_trainer

        trainer, data = load_trainer(run_dir, log=log)
        if lacks_twins:
            figures["twins"] = twin_figures(trainer, data)
            write_json_atomic(path, figures)
        if lacks_predictions:
            save_test_predictions(trainer, data, run_dir)
    return completed


def _run_context_model(exp: Experiment, settings: dict[str, Any], run_dir: Path, log: Callable[[str], Any]) -> bool:
    """A scikit-learn model fitted on the same splits (same seed), written as a one-row metrics.jsonl."""
    import warnings

    import numpy as np

    from ...run.checkpoint import write_json_atomic
    from ...run.data import load_dataset

    meta_path, metrics_path = run_dir / "context.json", run_dir / "metrics.jsonl"
    meta = {"kind": exp.kind, **settings}
    if meta_path.exists() and metrics_path.exists():
        if json.loads(meta_path.read_text()) != meta:
            raise ValueError(f"{run_dir} holds a model of other settings than experiment {exp.name}; "
                             "use another --out or delete that folder")
        if read_rows(run_dir):
            log(f"{exp.name} seed {settings['seed']}: finished before, reused")
            return True
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, meta)
    data = load_dataset(settings["dataset"], None, 0.1, settings["seed"], settings.get("limit"))
    if exp.kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=300, C=1.0)
        epochs = 1
    else:
        from sklearn.neural_network import MLPClassifier

        epochs = settings.get("epochs", 20)
        batch = TrainConfig(dataset=settings["dataset"]).batch_size
        model = MLPClassifier(hidden_layer_sizes=_mlp_sizes(settings["dataset"]), batch_size=batch,
                              learning_rate_init=1e-3, max_iter=epochs, random_state=settings["seed"])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is the point
        model.fit(data.x_train, data.y_train)
    seconds = time.perf_counter() - t0
    row = {"epoch": epochs, "seconds": seconds,
           "train_acc": float(np.mean(model.predict(data.x_train) == data.y_train)),
           "val_acc": float(np.mean(model.predict(data.x_val) == data.y_val)),
           "test_acc": float(np.mean(model.predict(data.x_test) == data.y_test))}
    metrics_path.write_text(json.dumps(row) + "\n")
    log(f"{exp.name} seed {settings['seed']}: val {row['val_acc']:.4f}, test {row['test_acc']:.4f} ({seconds:.1f} s)")
    return True


def _stop_requested_by_parent() -> Callable[[], bool]:
    """In a child: a callable that is true once the parent asked to stop (its stop file exists) or is gone."""
    stop_file, parent = os.environ.get(STOP_FILE_ENV), os.environ.get(PARENT_ENV)

    def should_stop() -> bool:
        if stop_file and os.path.exists(stop_file):
            return True
        if not parent:
            return False
        return os.getppid() != int(parent)  # the parent died: do not run on unattended

    return should_stop


def _child_main(argv: list[str]) -> int:
    """Entry point of a child process:
    ``python -m vaelayer_np.tools.reproduce --child NAME SEED OUT [EPOCHS LIMIT]``."""
    name, seed, out, epochs, limit = argv
    exp = EXPERIMENTS[name]
    to_int = lambda s: None if s == "-" else int(s)  # noqa: E731
    log_path = Path(out) / name / f"seed{seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as fh:
        def log(text: str) -> None:
            fh.write(text + "\n")
            fh.flush()
        try:
            completed = run_one(exp, int(seed), out, to_int(epochs), to_int(limit), log=log,
                                should_stop=_stop_requested_by_parent())
        except KeyboardInterrupt:  # stopped before training started (or a second Ctrl-C)
            log("interrupted before a checkpoint could be written")
            return 130
        except ValueError as exc:
            log(f"error: {exc}")
            print(f"{name} seed {seed}: error: {exc}", file=sys.stderr)
            return 2
    return 0 if completed else 130


# ---------------------------------------------------------------------------------------- the pool
def _launch(name: str, seed: int, out: str | Path, epochs: int | None, limit: int | None,
            stop_file: str | Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **CHILD_THREAD_ENV, **{STOP_FILE_ENV: str(stop_file), PARENT_ENV: str(os.getpid())})
    cmd = [sys.executable, "-m", "vaelayer_np.tools.reproduce", "--child", name, str(seed), str(out),
           "-" if epochs is None else str(epochs), "-" if limit is None else str(limit)]
    # a session of its own: a terminal's Ctrl-C reaches only this command, which then asks every child to
    # stop through the stop file (a signal could land while a child is still importing and kill it mid-way)
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def run_tasks(tasks: Iterable[tuple[str, int]], out: str | Path, jobs: int, epochs: int | None, limit: int | None,
              log: Callable[[str], Any], stop: StopSignals, stop_file: str | Path
              ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], bool, dict[tuple[str, int], str]]:
    """Run (name, seed) tasks, ``jobs`` child processes at a time.

    Returns (finished, failed, interrupted, lost); ``lost``: {(name, seed): why} of the children that
    stopped unfinished (exit code 130, or killed by a signal) without this command asking them to.
    """
    pending = list(tasks)
    running: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
    finished: list[tuple[str, int]] = []
    failed: list[tuple[str, int]] = []
    lost: dict[tuple[str, int], str] = {}
    asked = False
    while pending or running:
        if stop.requested and not asked:
            asked = True
            log(f"interrupted: asking {len(running)} running run(s) to checkpoint and stop")
            Path(stop_file).touch()
        if stop.count >= 2 and running:
            log(f"second stop signal: terminating {len(running)} run(s); each resumes from its last checkpoint")
            for proc in running.values():
                proc.terminate()
            stop.count = 1
        while not stop.requested and pending and len(running) < jobs:
            name, seed = pending.pop(0)
            log(f"start {name} seed {seed}")
            running[(name, seed)] = _launch(name, seed, out, epochs, limit, stop_file)
        for key, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[key]
            if code == 0:
                finished.append(key)
                log(f"done  {key[0]} seed {key[1]}")
            elif stop.requested and code in (130, -signal.SIGINT, -signal.SIGTERM, 143):
                pass  # asked to stop: checkpointed (or terminated by the second Ctrl-C)
            elif code in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP, 143):
                why = f"stopped before finishing by {'a signal' if code < 0 else 'an interruption'} this command " \
                      f"did not send (exit code {code})"
                lost[key] = why
                log(f"LOST  {key[0]} seed {key[1]}: {why}; see {Path(out) / key[0]}/seed{key[1]}.log")
            else:
                failed.append(key)
                log(f"FAILED {key[0]} seed {key[1]} (exit code {code}; see {Path(out) / key[0]}/seed{key[1]}.log)")
        if stop.requested and not running:
            break
        time.sleep(0.2)
    return finished, failed, stop.requested, lost


