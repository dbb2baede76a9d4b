"""Layers pipelined: depth k trains on batch t while depth k+1 trains on batch t-1.

Why this is allowed. In an IFFCL step no gradient crosses a layer boundary: depth k's update on
batch t needs depth k's parameters (as batch t-1 left them) and its input on batch t, which depth
k-1 computed *before* its own update. Nothing of depth k+1 enters it. So the work of one step is a
chain of depths, and the chains of consecutive batches can overlap: while depth 0 trains on batch
t, depth 1 can train on batch t-1, whose depth-0 output was kept from the tick before::

    tick        stage 0 (depth 0)        stage 1 (depths 1, 2, output layer)
    t           batch t                  batch t-1
    t+1         batch t+1                batch t

:class:`LayerPipeline` splits the depths into consecutive stages of about equal cost (the matrix
products' FLOPs, :func:`split_depths`). In each tick the first stage that has a batch runs on the
calling thread and the others on a pool of worker threads (one task per stage, one BLAS thread each);
the tick ends when all are done, and every batch moves one stage further.

What it changes: the order in which independent work is done, and nothing else. Every depth sees
the same inputs, parameters, noise and learning rate as in the serial step
(:func:`vaelayer_np.core.iffcl.train_step`), because

* the pairing and the noise of batch t are drawn by stage 0, from the one generator, in the serial
  step's order (the pairs, then A0, B0, A1, B1, ...), and handed to the later stages with the
  batch (:class:`DrawnNoise`);
* the learning rate of the batch's step (the schedule's factor at that batch) and its beta travel
  with it, and each stage sets them on its own depths' optimisers and layers;
* the two twins' outputs of each depth are copied as soon as they are computed (the fast path reuses
  its buffers at the layer's next step), and the metrics of a batch are returned when its last
  stage is done, in batch order.

So the training is the serial one **bit for bit** (``tests/test_pipeline.py``), as the serial step runs with one
BLAS thread per product (each stage has one; the trainer runs every IFFCL product so): the same parameters,
optimiser moments, metrics and generator state after any number of batches. The dynamics are not
those of a pipeline with stale weights (as in pipelined backpropagation): IFFCL's locality makes
the pipeline exact. What differs is when a batch's metrics are known (one tick per stage later)
and that an epoch ends with ``stages - 1`` ticks that drain the pipeline (:meth:`LayerPipeline.drain`).
Between two ticks the networks hold *different* numbers of steps per depth (depth 0 is ahead): only
after :meth:`LayerPipeline.drain` are they the state of a whole number of steps, the state to save.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core.iffcl import Pairs, Twins, layer_pair_update, output_pair_update, pair_batch
from ..core.settings import IFFCLSettings
from .machine import BlasThreads, depth_flops

_OTHER_DRAWS = frozenset(name for name in dir(np.random.Generator)
                         if not name.startswith("_") and name not in ("standard_normal", "bit_generator"))




class DrawnNoise(np.random.Generator):
    """A generator that hands out, in order, noise drawn earlier from the real one.

    Stage 0 draws a batch's noise for every depth in the serial step's order; the stage that trains
    depth k later gives the layers this object instead of the generator, and each call of
    ``standard_normal`` (with ``size`` or ``out``, as the readable and the fast layers call it) returns
    the next array. Any other request is an error: another shape or dtype, one draw too many, or any
    other method of a generator (``random``, ``integers``, ...): it would mean the step draws
    differently from the way the noise was drawn.
    """

    def __getattribute__(self, name: str) -> Any:
        if name in _OTHER_DRAWS:
            raise RuntimeError(f"DrawnNoise: the step asked for {name}(); only the noise drawn for it "
                               "(standard_normal) can be served")
        return super().__getattribute__(name)

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        super().__init__(np.random.PCG64(0))  # unused: every draw this object serves is in ``arrays``
        self._arrays = list(arrays)
        self._next = 0

    def standard_normal(self, size: Any = None, dtype: Any = np.float64,  # type: ignore[override]  # serves only the draws made for it
                        out: np.ndarray | None = None) -> np.ndarray:
        if self._next >= len(self._arrays):
            raise RuntimeError("DrawnNoise: the step asked for more noise than was drawn for it")
        value = self._arrays[self._next]
        shape = out.shape if out is not None else ((size,) if isinstance(size, int) else tuple(size or ()))
        if value.shape != shape or value.dtype != np.dtype(dtype):
            raise RuntimeError(f"DrawnNoise: draw {self._next} was {value.shape} {value.dtype}, "
                               f"the step asks for {shape} {np.dtype(dtype)}")
        self._next += 1
        if out is None:
            return value
        np.copyto(out, value)
        return out

    def all_used(self) -> bool:
        return self._next == len(self._arrays)


def split_depths(costs: Sequence[float], stages: int) -> list[range]:
    """Consecutive groups of depths, ``stages`` of them (at most one per depth), whose largest total cost
    is the smallest possible. Returns a list of ``range`` objects covering ``range(len(costs))``."""
    n = len(costs)
    stages = max(1, min(int(stages), n))
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(costs, dtype=float))])
    # best[s][i]: the smallest largest-stage cost of the first i depths in s stages; cut[s][i] its last cut
    best = np.full((stages + 1, n + 1), np.inf)
    cut = np.zeros((stages + 1, n + 1), dtype=int)
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    bounds, i = [], n
    for s in range(stages, 0, -1):
        bounds.append((cut[s][i], i))
        i = cut[s][i]
    return [range(a, b) for a, b in reversed(bounds)]


class _Batch:
    """One batch on its way through the stages: what the serial step would hold at that point."""

    def __init__(self, index: int, pairs: Pairs, lr_factor: float, beta: float | None,
                 noise: list[list[np.ndarray] | None], inputs: tuple[np.ndarray, np.ndarray]) -> None:
        self.index = index
        self.pairs = pairs  # targets and both twins' labels (core.iffcl.Pairs)
        self.lr_factor, self.beta = lr_factor, beta
        self.noise = noise  # depth -> [noise of A, noise of B]
        self.inputs = inputs  # the twins' inputs to the next depth
        self.outs_a: list[np.ndarray] = []
        self.outs_b: list[np.ndarray] = []
        self.metrics: dict[str, float] = {}


class LayerPipeline:
    """IFFCL training with the depths split into ``stages`` consecutive stages, one thread each.

    Parameters
    ----------
    twins : :class:`vaelayer_np.core.iffcl.Twins`: the twin networks, their optimisers ("A.vae0", ...,
        "A.output", "B.output", as for ``train_step``) and the training path of the layers
        (:class:`vaelayer_np.fast.training.FastPath`, or the readable
        :class:`vaelayer_np.core.iffcl.ReadablePath`); the path must keep each layer's buffers to itself,
        as both do
    base_lr : dict optimiser name -> learning rate before the schedule's factor
    settings : :class:`vaelayer_np.core.settings.IFFCLSettings` (None: the defaults)
    stages : the number of stages (threads); at most one per depth

    Use :meth:`push` for every batch, in order, then :meth:`drain`; each returns the metrics of the
    batches that finished (the dicts ``train_step`` returns), in batch order.
    """

    def __init__(self, twins: Twins, base_lr: dict[str, float], settings: IFFCLSettings | None = None,
                 stages: int = 2) -> None:
        self.twins, self.base_lr = twins, dict(base_lr)
        self.settings = IFFCLSettings() if settings is None else settings
        if not isinstance(self.settings, IFFCLSettings):
            raise ValueError(f"settings: expected an IFFCLSettings, got {type(settings).__name__}")
        self.depths: list[range] | None = None  # split at the first batch, when its size is known
        self.requested_stages = max(1, int(stages))
        self._slots: list[_Batch | None] | None = None  # stage -> the batch it trains at the next tick
        self._pool: ThreadPoolExecutor | None = None
        self._blas: BlasThreads | None = None
        self._count = 0
        self._broken: BaseException | None = None
        self.failed_batch: int | None = None  # the batch (pushed before it: this many) whose stage failed

    @property
    def stages(self) -> int:
        return len(self.depths) if self.depths is not None else min(self.requested_stages,
                                                                     len(self.twins.net_a.vae_layers))

    @property
    def in_flight(self) -> int:
        """Batches pushed whose metrics are not returned yet."""
        return 0 if self._slots is None else sum(b is not None for b in self._slots)

    def close(self) -> None:
        """Stop the worker threads (the pipeline must be drained first to keep its batches)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = state["_blas"] = None
        return state

    # ----------------------------------------------------------------- one tick
    def push(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, lr_factor: float = 1.0,
             beta: float | None = None) -> list[dict[str, float]]:
        """Start batch ``x, y`` (stage 0 trains its first depths now) and move every batch one stage on.

        ``rng`` is the step's generator (pairing and noise: drawn here, in the serial order);
        ``lr_factor`` the learning-rate schedule's factor at this batch; ``beta`` the KL weight of its step
        (None: the layers' own). Returns the metrics of the batch that left the last stage in this tick
        (a list of 0 or 1 dicts). If a stage fails, its error is raised (the one of the earliest stage)
        and :attr:`failed_batch` is that stage's batch (the number of batches pushed before it).
        """
        self._check_usable()
        net_a, net_b = self.twins.net_a, self.twins.net_b
        net_a.check_input(x, y)
        if self.depths is None:
            self.depths = split_depths(depth_flops(net_a, x.shape[0]), self.requested_stages)
            self._slots = [None] * len(self.depths)
        inputs, pairs = pair_batch(x, np.array(y), self.settings.pairing, rng)
        noise: list[list[np.ndarray] | None] = [
            [rng.standard_normal((x.shape[0], layer.latent_dim), dtype=layer.dtype) for layer in pair]
            for pair in zip(net_a.vae_layers, net_b.vae_layers)]
        batch = _Batch(self._count, pairs, lr_factor, beta, noise, inputs)
        self._count += 1
        return self._tick(batch)

    def drain(self) -> list[dict[str, float]]:
        """Finish every batch in the pipeline; returns their metrics in batch order."""
        self._check_usable()
        done = []
        while self.in_flight:
            done += self._tick(None)
        return done

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise RuntimeError("LayerPipeline: a stage failed earlier "
                               f"({type(self._broken).__name__}: {self._broken}); the networks' state is not a "
                               "consistent step any more")

    def _tick(self, new_batch: _Batch | None) -> list[dict[str, float]]:
        assert self._slots is not None and self.depths is not None  # set at the first push
        slots = [new_batch] + self._slots[1:]  # stage s trains slots[s] in this tick
        work = [(s, batch) for s, batch in enumerate(slots) if batch is not None]
        errors: dict[int, BaseException] = {}
        errstate = dict(np.geterr())  # NumPy's error handling is per thread: the workers get the caller's
        try:
            if len(self.depths) > 1:  # one BLAS thread per stage, in every tick (the same sums in each)
                self._start()
                assert self._pool is not None and self._blas is not None
                with self._blas:
                    futures = [(s, self._pool.submit(self._run_stage, s, batch, errstate)) for s, batch in work[1:]]
                    try:
                        self._run_stage(*work[0], errstate)
                    except Exception as exc:  # noqa: BLE001 - raised below, once the other stages are done
                        errors[work[0][0]] = exc
                    for s, future in futures:
                        error = future.exception()
                        if error is not None:
                            errors[s] = error
            else:
                try:
                    self._run_stage(*work[0], errstate)
                except Exception as exc:  # noqa: BLE001
                    errors[0] = exc
        except BaseException as exc:  # interrupted while the stages ran: the state is not a tick's
            self._broken = exc
            raise
        if errors:
            first = min(errors)
            broken, failed = errors[first], slots[first]
            self._broken, self.failed_batch = broken, None if failed is None else failed.index
            raise broken
        last = slots[-1]
        finished = [last.metrics] if last is not None else []
        self._slots = [None, *slots[:-1]]  # the batch of stage s goes to stage s+1
        return finished

    def _start(self) -> None:
        assert self.depths is not None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.depths) - 1),
                                            thread_name_prefix="vaelayer-stage")
        if self._blas is None:
            self._blas = BlasThreads(1)

    def _set_lr(self, names: Sequence[str], factor: float) -> None:
        optimizers = self.twins.optimizers
        for name in names:
            if name in optimizers:
                optimizers[name].lr = self.base_lr[name] * factor

    def _run_stage(self, s: int, batch: _Batch, errstate: dict[str, Any]) -> None:
        """Train the depths of stage ``s`` (and, in the last stage, the output layers) on ``batch``."""
        with np.errstate(**errstate):
            self._train_stage(s, batch)

    def _train_stage(self, s: int, batch: _Batch) -> None:
        assert self.depths is not None
        twins = self.twins
        for k in self.depths[s]:
            self._set_lr((f"A.vae{k}", f"B.vae{k}", f"A.head{k}", f"B.head{k}"), batch.lr_factor)
            if batch.beta is not None:
                twins.net_a.vae_layers[k].beta = twins.net_b.vae_layers[k].beta = batch.beta
            drawn = batch.noise[k]
            assert drawn is not None  # each depth's noise is served once
            noise = DrawnNoise(drawn)
            out_a, out_b, terms = layer_pair_update(twins, k, batch.inputs, batch.pairs, noise, self.settings)
            if not noise.all_used():
                raise RuntimeError(f"LayerPipeline: depth {k} drew less noise than the serial step")
            batch.noise[k] = None
            batch.metrics.update({f"layer{k}_{term}": value for term, value in terms.items()})
            # copies, at once: the fast path writes the next batch's outputs into the same buffers
            batch.inputs = (out_a.copy(), out_b.copy())
            batch.outs_a.append(batch.inputs[0])
            batch.outs_b.append(batch.inputs[1])
        if s == len(self.depths) - 1:
            self._set_lr(("A.output", "B.output"), batch.lr_factor)
            batch.metrics.update(output_pair_update(twins, batch.outs_a, batch.outs_b, batch.pairs))
