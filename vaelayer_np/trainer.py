"""Training loops: IFFCL (local, twin networks) and the backpropagation baseline.

A :class:`Trainer` owns the networks, one optimiser per layer, and one seeded
``numpy.random.Generator`` from which every random draw of a run is taken
(batch order, pairing, reparameterisation noise), in a fixed order. Its whole
state (parameters, optimiser moments, generator state, position inside the
epoch) goes into a checkpoint, so an interrupted run resumes exactly.
"""
from __future__ import annotations

import json
import time

import numpy as np

from . import backprop, iffcl
from .config import TrainConfig
from .network import Network
from .optim import OPTIMIZERS


class Trainer:
    """Train one configuration on arrays (x: (N, D) float, y: (N,) int).

    Parameters
    ----------
    config : TrainConfig
    n_features, n_classes : int
    """

    def __init__(self, config: TrainConfig, n_features, n_classes):
        self.config = config.validate()
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0  # completed epochs
        self.batch_index = 0  # next batch inside the current epoch
        self.epoch_order = None
        self.epoch_sums = {}
        net_names = ("A", "B") if config.method == "iffcl" else ("A",)
        # Twins differ only by their initialisation seed.
        self.nets = {name: self._build_net(seed=config.seed * 1000 + 17 * i + 1) for i, name in enumerate(net_names)}
        self.optimizers, self.base_lr = {}, {}
        for net_name, net in self.nets.items():
            for layer_name, layer in net.named_layers():
                lr = config.output_lr if (layer_name == "output" and config.output_lr) else config.lr
                self.optimizers[f"{net_name}.{layer_name}"] = self._make_optimizer(layer.params, lr)
                self.base_lr[f"{net_name}.{layer_name}"] = lr
        self.steps_per_epoch = None  # known once the training set is seen

    def _build_net(self, seed):
        c = self.config
        return Network(self.n_features, c.resolved_widths(), self.n_classes, readout=c.readout, seed=seed,
                       activation=c.activation, beta=c.beta, recon=c.recon, log_var_bound=c.log_var_bound or None,
                       log_var_bias_init=c.log_var_bias_init, pass_on=c.pass_on, output_loss=c.output_loss,
                       encoder_hidden=c.encoder_hidden,
                       dtype=self.dtype, backend=c.backend)

    def _make_optimizer(self, params, lr):
        c = self.config
        if c.optimizer == "adam":
            return OPTIMIZERS["adam"](params, lr=lr, weight_decay=c.weight_decay, backend=c.backend)
        return OPTIMIZERS["sgd"](params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay)

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
        """IFFCL (:func:`vaelayer_np.iffcl.train_step`): every layer pair learns from its own local loss."""
        c = self.config
        return iffcl.train_step(self.net_a, self.net_b, self.optimizers, x, y, self.rng, pairing=c.pairing,
                                lam=c.lam, margin=c.margin, contrast=c.contrast, cosine_on=c.cosine_on)

    def backprop_step(self, x, y):
        """The baseline (:func:`vaelayer_np.backprop.train_step`): one network, the loss backpropagated."""
        return backprop.train_step(self.net_a, self.optimizers, x, y, self.rng,
                                   neg_elbo_weight=self.config.backprop_neg_elbo_weight)

    # ------------------------------------------------------------------ epochs
    def n_batches(self, n):
        return -(-n // self.config.batch_size)

    def train_epoch(self, x, y, on_step=None, should_stop=None):
        """Run (the rest of) one epoch. Returns the epoch's mean metrics, or None if stopped early.

        ``on_step(batch_index, n_batches, metrics)`` is called after each step;
        ``should_stop()`` is polled between steps (Ctrl-C handling): the state is
        then consistent and can be checkpointed mid-epoch.
        """
        x = np.asarray(x, dtype=self.dtype)
        n = x.shape[0]
        bs = self.config.batch_size
        if self.epoch_order is None:
            self.epoch_order = self.rng.permutation(n)
            self.batch_index, self.epoch_sums = 0, {}
        total = self.n_batches(n)
        self.steps_per_epoch = total
        t0 = time.perf_counter()
        while self.batch_index < total:
            if should_stop is not None and should_stop():
                self.epoch_sums["seconds"] = self.epoch_sums.get("seconds", 0.0) + time.perf_counter() - t0
                return None
            idx = self.epoch_order[self.batch_index * bs:(self.batch_index + 1) * bs]
            m = self.step(x[idx], y[idx])
            for key, v in m.items():
                self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + v
            self.batch_index += 1
            if on_step is not None:
                on_step(self.batch_index, total, m)
        seconds = self.epoch_sums.pop("seconds", 0.0) + (time.perf_counter() - t0)
        means = {k: v / total for k, v in self.epoch_sums.items()}
        means["seconds"] = seconds
        self.epoch += 1
        self.epoch_order, self.batch_index, self.epoch_sums = None, 0, {}
        return means

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
        return state

    def load_state_dict(self, state):
        """Restore a state written by :meth:`state_dict`; a missing entry raises ValueError naming it."""
        try:
            self._load_state_dict(state)
        except KeyError as exc:
            raise ValueError(f"checkpoint: missing entry {exc.args[0]!r}; the file is not a checkpoint of this "
                             "run's configuration") from None

    def _load_state_dict(self, state):
        for name, net in self.nets.items():
            net.load_state_dict(state, prefix=f"net{name}.")
        for name, opt in self.optimizers.items():
            prefix = f"opt.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.epoch = int(state["trainer.epoch"])
        self.batch_index = int(state["trainer.batch_index"])
        order = state["trainer.epoch_order"]
        self.epoch_order = None if order.size == 0 else np.array(order, dtype=np.int64)
        self.epoch_sums = json.loads(str(state["trainer.epoch_sums"]))
        try:
            self.rng.bit_generator.state = json.loads(str(state["trainer.rng"]))
        except (ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, KeyError) and exc.args and exc.args[0] == "trainer.rng":
                raise
            raise ValueError(f"checkpoint: the random generator state is unreadable ({exc})") from None
