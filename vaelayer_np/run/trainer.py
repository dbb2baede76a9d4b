"""Training loops: IFFCL (local, twin networks) and the backpropagation baseline.

A :class:`Trainer` owns the networks, one optimiser per layer, and one seeded
``numpy.random.Generator`` from which every random draw of a run is taken
(batch order, pairing, reparameterisation noise), in a fixed order. Its whole
state (parameters, optimiser moments, generator state, position inside the
epoch) goes into a checkpoint, so an interrupted run resumes exactly.

A checkpoint also records the settings it was made with (entry ``trainer.config``):
:meth:`Trainer.load_state_dict` refuses a checkpoint whose settings differ from the
trainer's in anything but :data:`RESUME_MAY_CHANGE`, and checks every entry (counters,
generator state, parameters, optimiser moments: shape, dtype, finite values), naming
the entry that is wrong. Training that diverges (a loss, gradient or parameter turns
NaN or infinite) raises :class:`DivergenceError`, naming the epoch, the step, the
layer and the loss.
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from ..core import backprop
from ..core import iffcl
from ..core._validate import NonFiniteError, check_float_array, check_labels
from .checkpoint import CheckpointError
from .config import RESUME_MAY_CHANGE, TrainConfig  # noqa: F401  (RESUME_MAY_CHANGE: public here too)
from ..core.network import Network
from ..core.optim import OPTIMIZERS
from ..fast.training import training_path


class DivergenceError(ValueError):
    """Training produced NaN or infinite values (a loss, a gradient or a parameter).

    Attributes ``epoch`` (1-based, the epoch being trained), ``step`` (1-based step in
    that epoch), ``layer`` (e.g. "vae1", "output", or None if unknown) and ``what``
    (the loss or parameter that became non-finite).
    """

    def __init__(self, message, epoch=None, step=None, layer=None, what=None):
        super().__init__(message)
        self.epoch, self.step, self.layer, self.what = epoch, step, layer, what


def _config_json(config):
    return json.dumps(config.to_dict(), sort_keys=True)


def check_resume_config(config, saved):
    """Refuse to continue with ``config`` a checkpoint made with the settings ``saved``.

    Parameters
    ----------
    config : TrainConfig, the settings that would continue the run
    saved : dict, the settings stored in the checkpoint (entry ``trainer.config``)

    Raises CheckpointError (a ValueError) naming the first setting that differs (other
    than those in :data:`RESUME_MAY_CHANGE`).
    """
    if not isinstance(saved, dict):
        raise CheckpointError("checkpoint: entry 'trainer.config' is not a JSON object of settings; the file is "
                              "corrupt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise CheckpointError(f"checkpoint: entry 'trainer.config' has settings this version does not know "
                              f"({', '.join(unknown)}); it was written by another version of vaelayer_np")
    try:  # settings added after the checkpoint was written take their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: entry 'trainer.config' is not a configuration ({exc})") from None
    now = config.to_dict()
    for name in sorted(known - RESUME_MAY_CHANGE):
        if now[name] != saved[name]:
            raise CheckpointError(f"{name}: config.json says {name}={now[name]!r} but the checkpoint was made with "
                                  f"{name}={saved[name]!r}; a resumed run keeps its settings (only "
                                  f"{', '.join(sorted(RESUME_MAY_CHANGE & known))} may change): restore config.json "
                                  "or start a new run")


def _scalar_int(state, key, minimum=0):
    """An integer counter entry of a checkpoint: a 0-d integer array >= minimum."""
    value = _entry(state, key)
    if value.shape != () or value.dtype.kind not in "iu":
        raise ValueError(f"checkpoint: entry {key!r} must be one integer, got dtype {value.dtype} shape {value.shape}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"checkpoint: entry {key!r} is {v}, expected an integer >= {minimum}")
    return v


def _entry(state, key):
    if key not in state:
        raise ValueError(f"checkpoint: missing entry {key!r}; the file is not a checkpoint of this run's "
                         "configuration")
    value = state[key]
    if not isinstance(value, np.ndarray):
        raise ValueError(f"checkpoint: entry {key!r} is a {type(value).__name__}, expected a numpy array")
    return value


def _json_entry(state, key):
    value = _entry(state, key)
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"checkpoint: entry {key!r} must be one JSON string, got dtype {value.dtype} "
                         f"shape {value.shape}")
    try:
        return json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint: entry {key!r} is not valid JSON ({exc.msg})") from None


def _check_array_entry(state, key, like, nonnegative=False):
    """A parameter-like entry: same shape and dtype as ``like``, finite (and >= 0 if asked)."""
    value = _entry(state, key)
    if value.shape != like.shape:
        raise ValueError(f"checkpoint: entry {key!r} has shape {value.shape}, the model expects {like.shape}")
    if value.dtype != like.dtype:
        raise ValueError(f"checkpoint: entry {key!r} has dtype {value.dtype}, the model expects {like.dtype}")
    if not np.isfinite(value).all():
        raise ValueError(f"checkpoint: entry {key!r} contains NaN or inf")
    if nonnegative and (value < 0).any():
        raise ValueError(f"checkpoint: entry {key!r} has negative values; a second moment is never negative")
    return value


class Trainer:
    """Train one configuration on arrays (x: (N, D) float, y: (N,) int).

    Parameters
    ----------
    config : TrainConfig
    n_features, n_classes : int
    path : None (chosen by ``config.backend``: the readable layers for "numpy", the fast path for
        "numba"), or an object with the methods of :class:`vaelayer_np.core.iffcl.ReadablePath`
    """

    def __init__(self, config: TrainConfig, n_features, n_classes, path=None):
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = config.validate()
        for name, value, least in (("n_features", n_features, 1), ("n_classes", n_classes, 2)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0  # completed epochs
        self.batch_index = 0  # next batch inside the current epoch
        self.epoch_order = None
        self.epoch_sums = {}
        # The readable layers' forward and backward ("numpy"), or the fast path ("numba"): the same steps.
        # (with threads >= 2, IFFCL's twins in parallel: fast/parallel.py)
        self.path = path if path is not None else training_path(
            config.backend, threads=config.threads if config.method == "iffcl" else 1)
        net_names = ("A", "B") if config.method == "iffcl" else ("A",)
        # Twins differ only by their initialisation seed.
        self.nets = {name: self._build_net(seed=config.seed * 1000 + 17 * i + 1) for i, name in enumerate(net_names)}
        self.optimizers, self.base_lr = {}, {}
        for net_name, net in self.nets.items():
            for layer_name, layer in net.named_layers():
                lr = config.output_lr if (layer_name == "output" and config.output_lr) else config.lr
                self.optimizers[f"{net_name}.{layer_name}"] = self._make_optimizer(layer, lr)
                self.base_lr[f"{net_name}.{layer_name}"] = lr
        self.steps_per_epoch = None  # known once the training set is seen
        self._batch_buffers = None  # (x, y) of the current batch, reused (see _gather)
        self._resumed = False  # True after load_state_dict, until the first train_epoch checks the counters

    def _build_net(self, seed):
        c = self.config
        return Network(self.n_features, c.resolved_widths(), self.n_classes, readout=c.readout, seed=seed,
                       activation=c.activation, beta=c.beta, recon=c.recon, log_var_bound=c.log_var_bound or None,
                       log_var_bias_init=c.log_var_bias_init, pass_on=c.pass_on, output_loss=c.output_loss,
                       encoder_hidden=c.encoder_hidden, dtype=self.dtype)

    def _make_optimizer(self, layer, lr):
        c = self.config
        if c.optimizer == "adam":
            return self.path.make_adam(layer, lr=lr, weight_decay=c.weight_decay)
        return OPTIMIZERS["sgd"](layer.params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay)

    @property
    def net_a(self):
        return self.nets["A"]

    @property
    def net_b(self):
        return self.nets.get("B")

    def current_beta(self):
        """beta, ramped linearly over the warm-up epochs."""
        c = self.config
        if c.beta_warmup_epochs <= 0:
            return c.beta
        return c.beta * min(1.0, (self.epoch + 1) / c.beta_warmup_epochs)

    def lr_factor(self):
        r"""Learning-rate multiplier at the current step.

        ``constant``: 1. ``cosine``: :math:`\tfrac12(1 + \cos(\pi t / T))` over the T steps
        of the run, so the last epochs take small steps and settle (see docs/results.md).
        """
        if self.config.lr_schedule == "constant" or not self.steps_per_epoch:
            return 1.0
        total = self.config.epochs * self.steps_per_epoch
        t = min(self.epoch * self.steps_per_epoch + self.batch_index, total)
        return 0.5 * (1.0 + np.cos(np.pi * t / total))

    # ------------------------------------------------------------------ one step
    def step(self, x, y):
        """One mini-batch update. Returns a dict of floats (losses, batch accuracy)."""
        factor = self.lr_factor()
        for name, opt in self.optimizers.items():
            opt.lr = self.base_lr[name] * factor
        beta = self.current_beta()
        for net in self.nets.values():
            for layer in net.vae_layers:
                layer.beta = beta
        if self.config.method == "iffcl":
            return self.iffcl_step(x, y)
        return self.backprop_step(x, y)

    def iffcl_step(self, x, y):
        """IFFCL (:func:`vaelayer_np.core.iffcl.train_step`): every layer pair learns from its own local loss."""
        c = self.config
        step = getattr(self.path, "train_step", iffcl.train_step)  # a path may run the step itself (parallel twins)
        return step(self.net_a, self.net_b, self.optimizers, x, y, self.rng, pairing=c.pairing,
                                lam=c.lam, margin=c.margin, contrast=c.contrast, cosine_on=c.cosine_on,
                                path=self.path)

    def backprop_step(self, x, y):
        """The baseline (:func:`vaelayer_np.core.backprop.train_step`): one network, the loss backpropagated."""
        return backprop.train_step(self.net_a, self.optimizers, x, y, self.rng,
                                   neg_elbo_weight=self.config.backprop_neg_elbo_weight)

    # ------------------------------------------------------------------ epochs
    def n_batches(self, n):
        return -(-n // self.config.batch_size)

    def train_epoch(self, x, y, on_step=None, should_stop=None):
        """Run (the rest of) one epoch. Returns the epoch's mean metrics, or None if stopped early.

        Parameters
        ----------
        x : (N, n_features) float array, finite
        y : (N,) int array of labels in [0, n_classes)
        on_step : callable, optional
            ``on_step(batch_index, n_batches, metrics)`` is called after each step.
        should_stop : callable, optional
            Polled between steps (Ctrl-C handling): the state is then consistent and
            can be checkpointed mid-epoch.

        Raises
        ------
        ValueError
            Bad ``x`` or ``y`` (named), or a resumed epoch whose saved order does not fit ``x``.
        DivergenceError
            A loss, gradient or parameter became NaN or infinite; the trainer's state is
            then unusable (do not checkpoint it).
        """
        check_float_array("x", x, shape=(None, self.n_features))
        check_labels("y", y, x.shape[0], self.n_classes)
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y)
        n = x.shape[0]
        bs = self.config.batch_size
        total = self.n_batches(n)
        if self.epoch_order is None:
            self.epoch_order = self.rng.permutation(n)
            self.batch_index, self.epoch_sums = 0, {}
        elif self.epoch_order.shape[0] != n:
            raise ValueError(f"checkpoint: entry 'trainer.epoch_order' orders {self.epoch_order.shape[0]} examples "
                             f"but the training set has {n}; the checkpoint belongs to other data")
        elif self.batch_index >= total:
            raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {self.batch_index}, but an epoch has only "
                             f"{total} batches")
        if self._resumed:  # the optimiser counters of a loaded checkpoint must fit this training set
            self._check_step_count(total)
            self._resumed = False
        self.steps_per_epoch = total
        t0 = time.perf_counter()
        while self.batch_index < total:
            if should_stop is not None and should_stop():
                if self.batch_index and self._first_nonfinite_parameter() is not None:  # never checkpoint NaNs
                    raise self._divergence(total, what="a parameter became NaN or inf", step=self.batch_index)
                self.epoch_sums["seconds"] = self.epoch_sums.get("seconds", 0.0) + time.perf_counter() - t0
                return None
            idx = self.epoch_order[self.batch_index * bs:(self.batch_index + 1) * bs]
            try:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported below, by name
                    m = self.step(*self._gather(x, y, idx))
            except ValueError as exc:
                # x and y were checked above: a NaN, inf or overflow met inside a step comes from the training
                if not isinstance(exc, NonFiniteError) and self._first_nonfinite_parameter() is None:
                    raise
                raise self._divergence(total, what=f"a value inside the step became non-finite ({exc})",
                                       batch=x[idx]) from None
            bad = [k for k, v in m.items() if not np.isfinite(v)]
            if bad:
                raise self._divergence(total, what=f"the loss {bad[0]!r} is {m[bad[0]]}", metric=bad[0])
            for key, v in m.items():
                self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + v
            self.batch_index += 1
            if on_step is not None:
                on_step(self.batch_index, total, m)
        if self._first_nonfinite_parameter() is not None:  # once per epoch: what a checkpoint would hold
            raise self._divergence(total, what="a parameter became NaN or inf", step=total)
        seconds = self.epoch_sums.pop("seconds", 0.0) + (time.perf_counter() - t0)
        means = {k: v / total for k, v in self.epoch_sums.items()}
        means["seconds"] = seconds
        self.epoch += 1
        self.epoch_order, self.batch_index, self.epoch_sums = None, 0, {}
        return means

    def _gather(self, x, y, idx):
        """The batch ``x[idx], y[idx]``, gathered into buffers kept between steps (a fresh 400 kB array
        per step would be handed back to the OS and faulted in again at every step)."""
        k, buf = idx.shape[0], self._batch_buffers
        if (buf is None or buf[0].shape[0] < k or buf[0].shape[1] != x.shape[1] or buf[0].dtype != x.dtype
                or buf[1].dtype != y.dtype):
            rows = max(k, self.config.batch_size)
            buf = self._batch_buffers = (np.empty((rows, x.shape[1]), dtype=x.dtype), np.empty(rows, dtype=y.dtype))
        xb, yb = buf[0][:k], buf[1][:k]
        np.take(x, idx, axis=0, out=xb)
        np.take(y, idx, axis=0, out=yb)
        return xb, yb

    def _check_step_count(self, total):
        """Every optimiser has made one step per batch so far (a check of a resumed checkpoint)."""
        expected = self.epoch * total + self.batch_index
        for name, opt in self.optimizers.items():
            if opt.t != expected:
                raise ValueError(f"checkpoint: entry 'opt.{name}.t' is {opt.t}, but {self.epoch} epochs of {total} "
                                 f"steps and {self.batch_index} more steps make {expected}; the counters are "
                                 "inconsistent")

    def _first_nonfinite_parameter(self):
        """(net name, layer name, parameter name) of the first parameter holding NaN/inf, or None."""
        for net_name, net in self.nets.items():
            for layer_name, layer in net.named_layers():
                for key, value in layer.params.items():
                    if not np.isfinite(value).all():
                        return net_name, layer_name, key
        return None

    def _locate_nonfinite(self, batch):
        """(net name, layer name) of the first layer whose forward pass on ``batch`` fails or is non-finite."""
        for net_name, net in self.nets.items():
            h, outs = batch, []
            for i, layer in enumerate(net.vae_layers):
                try:
                    h, _ = layer.forward(h, sample=False)
                except ValueError:
                    return net_name, f"vae{i}"
                if not np.isfinite(h).all():
                    return net_name, f"vae{i}"
                outs.append(h)
            try:
                logits, _ = net.output.forward(net.readout_features(outs))
            except ValueError:
                return net_name, "output"
            if not np.isfinite(logits).all():
                return net_name, "output"
        return None

    def _divergence(self, total, what, metric=None, step=None, batch=None):
        """A DivergenceError naming the epoch, the step (default: the current one), the layer and the loss."""
        epoch, step = self.epoch + 1, self.batch_index + 1 if step is None else step
        layer = None
        if metric is not None and metric.startswith("layer"):
            layer = "vae" + metric[len("layer"):].split("_")[0]
        elif metric == "output_loss":
            layer = "output"
        where = self._first_nonfinite_parameter()
        if where is not None:
            layer = layer or where[1]
            what += f"; first non-finite parameter: net {where[0]}, layer {where[1]}, {where[2]}"
        elif layer is None and batch is not None:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                found = self._locate_nonfinite(batch)
            if found is not None:
                layer = found[1]
                what += f"; the forward pass of net {found[0]} first fails in layer {found[1]}"
        c = self.config
        message = (f"training diverged at epoch {epoch}, step {step}/{total}"
                   + (f", layer {layer}" if layer else "") + f": {what}. "
                   f"Start a new run with a lower --lr (now {c.lr:g}) or --output-lr (now {c.output_lr:g}), "
                   "or a smaller --lam or --beta.")
        return DivergenceError(message, epoch=epoch, step=step, layer=layer, what=metric or what)

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, x):
        """Mean-path class probabilities: the twins' average (predict="twins") or net A's."""
        x = np.asarray(x, dtype=self.dtype)
        p = self.net_a.predict_proba(x)
        if self.net_b is not None and self.config.predict == "twins":
            p = 0.5 * (p + self.net_b.predict_proba(x))
        return p

    def accuracy(self, x, y):
        return float(np.mean(self.predict_proba(x).argmax(1) == y))

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Everything needed to resume: a flat dict of arrays (no objects, no pickles)."""
        state = {}
        for name, net in self.nets.items():
            state.update(net.state_dict(prefix=f"net{name}."))
        for name, opt in self.optimizers.items():
            state.update({f"opt.{name}.{k}": v for k, v in opt.state_dict().items()})
        state["trainer.epoch"] = np.array(self.epoch)
        state["trainer.batch_index"] = np.array(self.batch_index)
        state["trainer.epoch_order"] = (np.array([], np.int64) if self.epoch_order is None
                                        else np.asarray(self.epoch_order))
        state["trainer.epoch_sums"] = np.array(json.dumps(self.epoch_sums))
        state["trainer.rng"] = np.array(json.dumps(self.rng.bit_generator.state))
        state["trainer.config"] = np.array(_config_json(self.config))
        return state

    def load_state_dict(self, state):
        """Restore a state written by :meth:`state_dict`.

        Every entry is checked before anything is changed: the settings the checkpoint
        was made with (``trainer.config``, see :func:`check_resume_config`), the counters
        (integers, not negative, consistent), the epoch order (a permutation), the
        generator state, and every parameter and optimiser moment (shape, dtype, finite
        values). Anything wrong raises ValueError naming the entry; the trainer is then
        unchanged.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state: expected a dict of arrays, got {type(state).__name__}")
        check_resume_config(self.config, _json_entry(state, "trainer.config"))
        epoch = _scalar_int(state, "trainer.epoch")
        batch_index = _scalar_int(state, "trainer.batch_index")
        order = _entry(state, "trainer.epoch_order")
        if order.ndim != 1 or order.dtype.kind not in "iu":
            raise ValueError(f"checkpoint: entry 'trainer.epoch_order' must be a 1-d integer array, got dtype "
                             f"{order.dtype} shape {order.shape}")
        if order.size and not np.array_equal(np.sort(order), np.arange(order.size)):
            raise ValueError("checkpoint: entry 'trainer.epoch_order' is not a permutation of 0..N-1")
        if order.size == 0 and batch_index != 0:
            raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {batch_index} between two epochs "
                             "(empty 'trainer.epoch_order'), expected 0")
        if order.size and batch_index >= self.n_batches(order.size):
            raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {batch_index}, but an epoch of "
                             f"{order.size} examples has only {self.n_batches(order.size)} batches")
        sums = _json_entry(state, "trainer.epoch_sums")
        if not isinstance(sums, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in sums.values()):
            raise ValueError("checkpoint: entry 'trainer.epoch_sums' must map names to finite numbers")
        rng_state = _json_entry(state, "trainer.rng")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ValueError(f"checkpoint: entry 'trainer.rng' is not a random generator state ({exc!r})") from None
        # parameters and optimiser moments: compare with the arrays they will be copied into
        for name, net in self.nets.items():
            for key, value in net.state_dict(prefix=f"net{name}.").items():
                _check_array_entry(state, key, value)
        steps = None
        for name, opt in self.optimizers.items():
            for key, value in opt.state_dict().items():
                full = f"opt.{name}.{key}"
                if key == "t":
                    t = _scalar_int(state, full)
                    if steps is not None and t != steps[1]:
                        raise ValueError(f"checkpoint: entry {full!r} is {t} but {steps[0]!r} is {steps[1]}; every "
                                         "optimiser makes one step per batch")
                    steps = steps or (full, t)
                else:
                    _check_array_entry(state, full, value, nonnegative=key.startswith("v."))
        if steps is not None and steps[1] < epoch + batch_index:
            raise ValueError(f"checkpoint: entry {steps[0]!r} is {steps[1]}, fewer than the {epoch} epochs and "
                             f"{batch_index} steps done")
        # everything checked: now copy
        for name, net in self.nets.items():
            net.load_state_dict(state, prefix=f"net{name}.")
        for name, opt in self.optimizers.items():
            prefix = f"opt.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.epoch, self.batch_index = epoch, batch_index
        self.epoch_order = None if order.size == 0 else np.array(order, dtype=np.int64)
        self.epoch_sums = {k: float(v) for k, v in sums.items()}
        self.rng.bit_generator.state = rng_state
        self._resumed = True
