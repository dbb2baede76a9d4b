"""Training loops: IFFCL (local, twin networks) and the backpropagation baseline.

A :class:`Trainer` owns the networks, one optimiser per layer, and one seeded
``numpy.random.Generator`` from which every random draw of a run is taken
(batch order, pairing, reparameterisation noise), in a fixed order. Its whole
state (parameters, optimiser moments, generator state, position inside the
epoch) goes into a checkpoint, so an interrupted run resumes exactly where it stopped: on the same machine, with
the same training path (and, for the backprop baseline, the same ``threads``), it ends with the same bits as a run
that was never stopped.

:meth:`Trainer.load_state_dict` checks every entry of a checkpoint first, and refuses one
made with other settings (:mod:`vaelayer_np.run.resume`). Training that diverges (a loss, gradient or parameter turns
NaN or infinite) raises :class:`DivergenceError`, naming the epoch, the step, the
layer and the loss.
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import backprop, iffcl, localnet
from ..core._validate import NonFiniteError, check_float_array, check_labels
from ..core.layers import dropout_mask
from ..core.network import Network
from ..core.optim import OPTIMIZERS
from ..core.settings import IFFCLSettings
from ..fast.machine import BlasThreads
from ..fast.parallel import ParallelFastPath, training_path
from .config import IMAGE_SHAPES, RESUME_MAY_CHANGE, TrainConfig  # noqa: F401  (RESUME_MAY_CHANGE: public here too)
from .data import augment_images
from .resume import _config_json, check_resume_config, check_trainer_state  # noqa: F401  (public here too)

if TYPE_CHECKING:
    from ..fast.pipeline import LayerPipeline


class DivergenceError(ValueError):
    """Training produced NaN or infinite values (a loss, a gradient or a parameter).

    Attributes ``epoch`` (1-based, the epoch being trained), ``step`` (1-based step in
    that epoch), ``layer`` (e.g. "vae1", "output", or None if unknown) and ``what``
    (the loss or parameter that became non-finite).
    """

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None, layer: str | None = None,
                 what: str | None = None) -> None:
        super().__init__(message)
        self.epoch, self.step, self.layer, self.what = epoch, step, layer, what


class InputDropoutPath:
    """A training path whose VAE layers see their inputs with dropout: each input masked by
    :func:`vaelayer_np.core.layers.dropout_mask` (drawn from the step's generator just before the layer's
    noise), the rest of the step unchanged. The layer reconstructs the masked input it saw; its output,
    passed on and read by its head, is computed from it. Evaluation uses no mask."""

    def __init__(self, inner: Any, p: float) -> None:
        self.inner, self.p = inner, float(p)

    def vae_forward(self, layer: Any, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        return self.inner.vae_forward(layer, x * dropout_mask(x.shape, self.p, rng, x.dtype), rng)

    def __getattr__(self, name: str) -> Any:  # every other method of the step: the wrapped path's
        return getattr(self.inner, name)


class StepSchedule:
    """One step after the other: the schedule of a trainer's epoch unless its IFFCL layers are pipelined.

    The interface of :class:`vaelayer_np.fast.pipeline.LayerPipeline`: :meth:`push` runs the batch's step
    at once and returns its metrics (a list of one dict), :meth:`drain` has nothing left to finish, nothing
    is ever in flight. The step is the trainer's method (IFFCL, serially or with the twins on two threads;
    the local-heads baseline; backprop).
    """

    in_flight = 0
    failed_batch: int | None = None

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def push(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None,
             lr_factor: float | None = None, beta: float | None = None) -> list[dict[str, float]]:
        """:meth:`Trainer.step` on batch ``x, y``, at once. Nothing is in flight, so the batch is the trainer's
        current one: its learning-rate factor, beta and generator are the trainer's own (the arguments of the
        pipeline's ``push``, which carries them with its batches, are not needed here)."""
        return [self.trainer.step(x, y)]

    def drain(self) -> list[dict[str, float]]:
        return []

    def close(self) -> None:
        """Nothing to stop (no thread of its own)."""




class Trainer:
    """Train one configuration on arrays (x: (N, D) float, y: (N,) int).

    Parameters
    ----------
    config : TrainConfig
    n_features, n_classes : int
    path : None (chosen by ``config.path``: the readable layers for "readable", the fast path for
        "fast"), or an object with the methods of :class:`vaelayer_np.core.iffcl.ReadablePath`
    """

    path: Any  # an object with the methods of core.iffcl.ReadablePath (the fast paths mirror them)

    def __init__(self, config: TrainConfig, n_features: int, n_classes: int, path: Any = None) -> None:
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
        self.epoch_order: np.ndarray | None = None
        self.epoch_sums: dict[str, float] = {}
        # The readable layers' forward and backward (path "readable"), or the fast path ("fast"): the same steps.
        # (with threads >= 2, IFFCL's twins in parallel: fast/parallel.py)
        # (parallel="layers": the layers pipelined over the serial path instead, fast/pipeline.py)
        kind = self.config.path
        assert kind is not None  # TrainConfig fills it in
        self.path = path if path is not None else training_path(
            kind, threads=config.threads if config.method == "iffcl" else 1, parallel=config.parallel)
        if config.method == "local-heads":  # plain layers: the readable path (core/localnet.py)
            self.path = iffcl.ReadablePath()
        elif config.dropout:  # every VAE layer's input masked; the serial step, which draws the masks in order
            self.path = InputDropoutPath(training_path(kind, threads=1), config.dropout)
        self.image_shape: tuple[int, ...] | None = None
        if config.augment_shift or config.augment_flip:
            self.image_shape = IMAGE_SHAPES[config.dataset]
            if int(np.prod(self.image_shape)) != self.n_features:
                raise ValueError(f"augment_shift, augment_flip: {config.dataset} images {self.image_shape} have "
                                 f"{int(np.prod(self.image_shape))} pixels, but the data have {self.n_features} "
                                 "features")
        net_names = ("A", "B") if config.method == "iffcl" else ("A",)
        # Twins differ only by their initialisation seed.
        self.nets = {name: self._build_net(seed=config.seed * 1000 + 17 * i + 1) for i, name in enumerate(net_names)}
        self.optimizers: dict[str, Any] = {}
        self.base_lr: dict[str, float] = {}
        for net_name, net in self.nets.items():
            for layer_name, layer in net.named_layers():
                # the classifiers (the output layer, and the local heads) learn at the output rate
                is_classifier = layer_name == "output" or layer_name.startswith("head")
                lr = config.output_lr if (is_classifier and config.output_lr) else config.lr
                self.optimizers[f"{net_name}.{layer_name}"] = self._make_optimizer(layer, lr)
                self.base_lr[f"{net_name}.{layer_name}"] = lr
        self.steps_per_epoch: int | None = None  # known once the training set is seen
        # (x, y) of the current batch, reused (see _gather)
        self._batch_buffers: tuple[np.ndarray, np.ndarray] | None = None
        self._resumed = False  # True after load_state_dict, until the first train_epoch checks the counters
        # the BLAS thread count of config.threads, set around every step (see blas_threads)
        self._blas: BlasThreads | None = None
        self._iffcl_settings: IFFCLSettings | None = None  # made at the first IFFCL step (see iffcl_settings)

    def _build_net(self, seed: int) -> Network | localnet.LocalNetwork:
        c = self.config
        if c.method == "local-heads":
            return localnet.LocalNetwork(self.n_features, c.resolved_widths(), self.n_classes, readout=c.readout,
                                         seed=seed, activation=c.activation, hidden=c.encoder_hidden,
                                         dtype=self.dtype)
        return Network(self.n_features, c.resolved_widths(), self.n_classes, readout=c.readout, seed=seed,
                       activation=c.activation, beta=c.beta, recon=c.recon, log_var_bound=c.log_var_bound or None,
                       log_var_bias_init=c.log_var_bias_init, pass_on=c.pass_on, output_loss=c.output_loss,
                       encoder_hidden=c.encoder_hidden, dtype=self.dtype, local_heads=c.head_weight > 0)

    def _make_optimizer(self, layer: Any, lr: float) -> Any:
        c = self.config
        if c.optimizer == "adam":
            return self.path.make_adam(layer, lr=lr, weight_decay=c.weight_decay)
        return OPTIMIZERS["sgd"](layer.params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay)

    @property
    def net_a(self) -> Any:
        return self.nets["A"]

    @property
    def net_b(self) -> Any:
        return self.nets.get("B")

    def current_beta(self) -> float:
        """beta, ramped linearly over the warm-up epochs."""
        c = self.config
        if c.beta_warmup_epochs <= 0:
            return c.beta
        return c.beta * min(1.0, (self.epoch + 1) / c.beta_warmup_epochs)

    def lr_factor(self, batch_index: int | None = None) -> float:
        r"""Learning-rate multiplier at the current step (or at batch ``batch_index`` of this epoch).

        ``constant``: 1. ``cosine``: :math:`\tfrac12(1 + \cos(\pi t / T))` over the T steps
        of the run, so the last epochs take small steps and settle (see docs/results.md).
        """
        if self.config.lr_schedule == "constant" or not self.steps_per_epoch:
            return 1.0
        total = self._epochs() * self.steps_per_epoch
        index = self.batch_index if batch_index is None else batch_index
        t = min(self.epoch * self.steps_per_epoch + index, total)
        return float(0.5 * (1.0 + np.cos(np.pi * t / total)))

    def _epochs(self) -> int:
        """``config.epochs``, which :meth:`TrainConfig.validate` has filled in."""
        assert self.config.epochs is not None
        return self.config.epochs

    def _batch_size(self) -> int:
        """``config.batch_size``, which :meth:`TrainConfig.validate` has filled in."""
        assert self.config.batch_size is not None
        return self.config.batch_size

    def blas_threads(self) -> BlasThreads:
        """The BLAS threads of the trainer's products, a context manager the trainer enters around every step
        (:class:`vaelayer_np.fast.machine.BlasThreads`): a trainer computes with the BLAS threads it chooses,
        whoever calls it.

        IFFCL: **one** BLAS thread for every product, whatever ``config.threads`` and ``config.parallel`` say
        (the threads run the twins or the pipeline's stages side by side, each with one BLAS thread, or the
        serial step when a step is too small for threads to pay). The count matters for the last bits of the
        results: OpenBLAS splits a product between its threads, and how it adds the parts depends on the
        count and on its CPU kernel (``OPENBLAS_CORETYPE``: the same product with one and two threads agrees
        under one kernel and differs under another). With one BLAS thread everywhere, an IFFCL run gives the
        same bits on one machine with any ``threads`` and either ``parallel``: parameters, training losses and
        predictions (tests/test_blas_threads.py, tests/test_parallel.py, tests/test_pipeline.py).
        The backprop baseline (one network, nothing to run side by side) uses ``config.threads`` BLAS
        threads: its results may differ in the last bits between thread counts."""
        if self._blas is None:
            from ..fast.machine import resolve_threads

            self._blas = BlasThreads(1 if self.config.method == "iffcl" else resolve_threads(self.config.threads))
        return self._blas

    # ------------------------------------------------------------------ one step
    def step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """One mini-batch update. Returns a dict of floats (losses, batch accuracy)."""
        with self.blas_threads():
            return self._step(x, y)

    def _step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        factor, beta = self.lr_factor(), self.current_beta()
        for name, opt in self.optimizers.items():
            opt.lr = self.base_lr[name] * factor
        for net in self.nets.values():
            for layer in net.vae_layers:
                layer.beta = beta
        if self.config.method == "iffcl":
            return self.iffcl_step(x, y)
        if self.config.method == "local-heads":
            return localnet.train_step(self.net_a, self.optimizers, x, y, self.rng, dropout=self.config.dropout)
        return self.backprop_step(x, y)

    def iffcl_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """IFFCL: every layer pair learns from its own local loss. Run serially
        (:func:`vaelayer_np.core.iffcl.twins_step`) or, on a :class:`vaelayer_np.fast.parallel.ParallelFastPath`,
        with the twins on two threads (its ``twins_step``: the same result, bit for bit); the settings travel
        as one :class:`~vaelayer_np.core.settings.IFFCLSettings` (:attr:`iffcl_settings`)."""
        twins = self.twins()
        if isinstance(self.path, ParallelFastPath):
            return self.path.twins_step(twins, x, y, self.rng, self.iffcl_settings)
        return iffcl.twins_step(twins, x, y, self.rng, self.iffcl_settings)

    @property
    def iffcl_settings(self) -> IFFCLSettings:
        """The run's IFFCL settings as one checked, frozen object, made once from the configuration."""
        if self._iffcl_settings is None:
            c = self.config
            self._iffcl_settings = IFFCLSettings(pairing=c.pairing, lam=c.lam, margin=c.margin, contrast=c.contrast,
                                                 cosine_on=c.cosine_on, head_weight=c.head_weight)
        return self._iffcl_settings

    def twins(self) -> iffcl.Twins:
        """The twins, their optimisers and the training path (:class:`vaelayer_np.core.iffcl.Twins`)."""
        return iffcl.Twins(self.net_a, self.net_b, self.optimizers, self.path)

    def layer_pipeline(self) -> LayerPipeline | None:
        """The pipeline of ``parallel="layers"`` (IFFCL only; None otherwise): the layers split into as many
        stages as threads (one stage for a step too small for threads to pay,
        :func:`vaelayer_np.fast.machine.worth_parallel`), stage s training on the batch stage s-1 trained at
        the tick before (:class:`vaelayer_np.fast.pipeline.LayerPipeline`; the serial training, bit for bit)."""
        c = self.config
        if c.method != "iffcl" or c.parallel != "layers" or c.dropout:  # with dropout: the serial step
            return None
        from ..fast.machine import resolve_threads, worth_parallel
        from ..fast.pipeline import LayerPipeline

        stages = (resolve_threads(c.threads) or 1) if worth_parallel(self.net_a, self._batch_size()) else 1
        return LayerPipeline(self.twins(), self.base_lr, self.iffcl_settings, stages=stages)

    def schedule(self) -> StepSchedule | LayerPipeline:
        """How the epoch's steps run, named: the layers pipelined (:meth:`layer_pipeline`, IFFCL with
        ``parallel="layers"``) or one step after the other (:class:`StepSchedule`). Both take a batch with
        ``push`` (metrics of the batches that finished) and finish with ``drain``."""
        pipeline = self.layer_pipeline()
        return StepSchedule(self) if pipeline is None else pipeline

    def _push(self, schedule: StepSchedule | LayerPipeline, x: np.ndarray, y: np.ndarray,
              batch_index: int) -> list[dict[str, float]]:
        """Batch ``batch_index`` of this epoch into the schedule (its beta and learning-rate factor with it)."""
        return schedule.push(x, y, self.rng, self.lr_factor(batch_index), beta=self.current_beta())

    def backprop_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The baseline (:func:`vaelayer_np.core.backprop.train_step`): one network, the loss backpropagated."""
        return backprop.train_step(self.net_a, self.optimizers, x, y, self.rng,
                                   neg_elbo_weight=self.config.backprop_neg_elbo_weight,
                                   head_weight=self.config.head_weight, dropout=self.config.dropout)

    # ------------------------------------------------------------------ epochs
    def n_batches(self, n: int) -> int:
        return -(-n // self._batch_size())

    def epochs(self, x: np.ndarray, y: np.ndarray, should_stop: Callable[[], bool] | None = None,
               progress: Callable[[Trainer], Any] | None = None) -> Iterator[dict[str, float] | None]:
        """The epoch loop: train epoch after epoch until ``config.epochs`` are done.

        Yields each finished epoch's mean metrics (a dict); if ``should_stop`` ends an epoch between two
        steps, yields None once and stops (the trainer then holds that step's state, ready to be saved).
        The command line's runs and the estimator both train through this loop.

        Parameters
        ----------
        x, y : the training data, as for :meth:`train_epoch`
        should_stop : callable, optional, polled between steps
        progress : callable, optional: ``progress(trainer)`` is called before each epoch and returns None
            or a progress bar (an object with ``update_step(index, total, metrics)`` and ``close()``)
        """
        while self.epoch < self._epochs():
            bar = progress(self) if progress is not None else None
            try:
                means = self.train_epoch(x, y, on_step=bar.update_step if bar else None, should_stop=should_stop)
            finally:
                if bar:
                    bar.close()
            yield means
            if means is None:
                return

    def train_epoch(self, x: np.ndarray, y: np.ndarray, on_step: Callable[..., Any] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
        """Run (the rest of) one epoch. Returns the epoch's mean metrics, or None if stopped early.

        Parameters
        ----------
        x : (N, n_features) float array, finite
        y : (N,) int array of labels in [0, n_classes)
        on_step : callable, optional
            ``on_step(batch_index, n_batches, metrics)`` is called after each step (with
            ``parallel="layers"``: when that batch's last stage is done; the trainer then already holds
            later batches' first stages, so save the trainer from a stop request, not from here).
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
        bs = self._batch_size()
        total = self.n_batches(n)
        if self.epoch_order is None:
            epoch_order = self.epoch_order = self.rng.permutation(n)
            self.batch_index, self.epoch_sums = 0, {}
        elif self.epoch_order.shape[0] != n:
            raise ValueError(f"checkpoint: entry 'trainer.epoch_order' orders {self.epoch_order.shape[0]} examples "
                             f"but the training set has {n}; the checkpoint belongs to other data")
        elif self.batch_index >= total:
            raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {self.batch_index}, but an epoch has only "
                             f"{total} batches")
        else:
            epoch_order = self.epoch_order
        if self._resumed:  # the optimiser counters of a loaded checkpoint must fit this training set
            self._check_step_count(total)
            self._resumed = False
        self.steps_per_epoch = total
        t0 = time.perf_counter()
        schedule = self.schedule()
        in_flight = 0  # batches pushed, not finished yet (only the pipeline holds any)
        first = self.batch_index  # the batch the schedule's first push is
        try:
            while self.batch_index + in_flight < total:
                if should_stop is not None and should_stop():
                    # the batches started are finished: the state is one of a step
                    self._finish(self._guarded(schedule.drain, total, x, None, schedule, first), total, on_step)
                    if self.batch_index and self._first_nonfinite_parameter() is not None:  # never checkpoint NaNs
                        raise self._divergence(total, what="a parameter became NaN or inf", step=self.batch_index)
                    self.epoch_sums["seconds"] = self.epoch_sums.get("seconds", 0.0) + time.perf_counter() - t0
                    return None
                start = self.batch_index + in_flight
                idx = epoch_order[start * bs:(start + 1) * bs]
                xb, yb = self._gather(x, y, idx)
                if self.image_shape is not None:  # drawn from the run's generator, before the step's draws
                    xb = augment_images(xb, self.image_shape, self.config.augment_shift, self.config.augment_flip,
                                        self.rng)
                push = functools.partial(self._push, schedule, xb, yb, start)
                done = self._guarded(push, total, x, start, schedule, first)
                in_flight = schedule.in_flight
                self._finish(done, total, on_step)
            self._finish(self._guarded(schedule.drain, total, x, None, schedule, first), total, on_step)
        finally:
            schedule.close()
        if self._first_nonfinite_parameter() is not None:  # once per epoch: what a checkpoint would hold
            raise self._divergence(total, what="a parameter became NaN or inf", step=total)
        seconds = self.epoch_sums.pop("seconds", 0.0) + (time.perf_counter() - t0)
        means = {k: v / total for k, v in self.epoch_sums.items()}
        means["seconds"] = seconds
        self.epoch += 1
        self.epoch_order, self.batch_index, self.epoch_sums = None, 0, {}
        return means

    def _guarded(self, run: Callable[[], list[dict[str, float]]], total: int, x: np.ndarray, batch: int | None,
                 schedule: StepSchedule | LayerPipeline, first: int = 0) -> list[dict[str, float]]:
        """``run()`` (a schedule's push of batch ``batch`` of this epoch, or its drain), with a
        non-finite value met inside a step reported as a divergence (named, with the failing batch's step)."""
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), self.blas_threads():  # reported below
                return run()
        except ValueError as exc:
            # x and y were checked above: a NaN, inf or overflow met inside a step comes from the training
            if not isinstance(exc, NonFiniteError) and self._first_nonfinite_parameter() is None:
                raise
            if schedule.failed_batch is not None:
                batch = first + schedule.failed_batch  # the batch of the stage that failed (pipeline)
            bs = self._batch_size()
            order = self.epoch_order
            rows = None if batch is None or order is None else x[order[batch * bs:(batch + 1) * bs]]
            raise self._divergence(total, what=f"a value inside the step became non-finite ({exc})",
                                   step=None if batch is None else batch + 1, batch=rows) from None

    def _finish(self, done: list[dict[str, float]], total: int, on_step: Callable[..., Any] | None) -> None:
        """Count the finished steps' metrics (``done``, in batch order) into the epoch's sums."""
        for m in done:
            bad = [k for k, v in m.items() if not np.isfinite(v)]
            if bad:
                raise self._divergence(total, what=f"the loss {bad[0]!r} is {m[bad[0]]}", metric=bad[0])
            for key, v in m.items():
                self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + v
            self.batch_index += 1
            if on_step is not None:
                on_step(self.batch_index, total, m)

    def _gather(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The batch ``x[idx], y[idx]``, gathered into buffers kept between steps (a fresh 400 kB array
        per step would be handed back to the OS and faulted in again at every step)."""
        k, buf = idx.shape[0], self._batch_buffers
        if (buf is None or buf[0].shape[0] < k or buf[0].shape[1] != x.shape[1] or buf[0].dtype != x.dtype
                or buf[1].dtype != y.dtype):
            rows = max(k, min(self._batch_size(), x.shape[0]))  # a batch is never larger than the data
            buf = self._batch_buffers = (np.empty((rows, x.shape[1]), dtype=x.dtype), np.empty(rows, dtype=y.dtype))
        xb, yb = buf[0][:k], buf[1][:k]
        np.take(x, idx, axis=0, out=xb)
        np.take(y, idx, axis=0, out=yb)
        return xb, yb

    def _check_step_count(self, total: int) -> None:
        """Every optimiser has made one step per batch so far (a check of a resumed checkpoint)."""
        expected = self.epoch * total + self.batch_index
        for name, opt in self.optimizers.items():
            if opt.t != expected:
                raise ValueError(f"checkpoint: entry 'opt.{name}.t' is {opt.t}, but {self.epoch} epochs of {total} "
                                 f"steps and {self.batch_index} more steps make {expected}; the counters are "
                                 "inconsistent")

    def _first_nonfinite_parameter(self) -> tuple[str, str, str] | None:
        """(net name, layer name, parameter name) of the first parameter holding NaN/inf, or None."""
        for net_name, net in self.nets.items():
            for layer_name, layer in net.named_layers():
                for key, value in layer.params.items():
                    if not np.isfinite(value).all():
                        return net_name, layer_name, key
        return None

    def _locate_nonfinite(self, batch: np.ndarray) -> tuple[str, str] | None:
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

    def _divergence(self, total: int, what: str, metric: str | None = None, step: int | None = None,
                    batch: np.ndarray | None = None) -> DivergenceError:
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
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Mean-path class probabilities: the twins' average (predict="twins") or net A's, computed with the
        trainer's BLAS threads (:meth:`blas_threads`: one for IFFCL, so its predictions, like its training, have
        the same bits with any ``threads``)."""
        x = np.asarray(x, dtype=self.dtype)
        with self.blas_threads():
            p = self.net_a.predict_proba(x)
            if self.net_b is not None and self.config.predict == "twins":
                p = 0.5 * (p + self.net_b.predict_proba(x))
        return p

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict_proba(x).argmax(1) == y))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume: a flat dict of arrays (no objects, no pickles)."""
        state: dict[str, np.ndarray] = {}
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`.

        Every entry is checked first (:func:`vaelayer_np.run.resume.check_trainer_state`): anything
        wrong raises ValueError naming the entry, and the trainer is then unchanged.
        """
        checked = check_trainer_state(self, state)
        for name, net in self.nets.items():
            net.load_state_dict(state, prefix=f"net{name}.")
        for name, opt in self.optimizers.items():
            prefix = f"opt.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.epoch, self.batch_index = checked.epoch, checked.batch_index
        self.epoch_order = checked.epoch_order
        self.epoch_sums = checked.epoch_sums
        self.rng.bit_generator.state = checked.rng_state
        self._resumed = True
