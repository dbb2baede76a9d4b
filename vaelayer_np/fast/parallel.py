"""The twins in parallel: an IFFCL step whose two networks run on two threads, meeting at the cosine.

In an IFFCL step the twins A and B share nothing but the cosine term of each layer's local
loss: twin A's forward, backward and Adam update of layer k read only A's parameters and A's
input, and the same for B. :class:`ParallelFastPath` runs :func:`vaelayer_np.core.iffcl.train_step`
with each twin on its own thread (A on the calling thread, B on one worker thread kept for the
path's lifetime)::

    draw the noise of depth 0 (A0, then B0)
    twin A (calling thread)                       twin B (worker thread)
    forward A_k                                   forward B_k
    wait for B's z_k  <---------------------------  hand over z_k
    cosine term (both gradients)                  draw the noise of depth k+1 (A, then B)
                      ------------------------------>  wait for dz_B
    backward A_k, Adam A_k                        backward B_k, Adam B_k
    ... layer k+1 ...                             ... layer k+1 ...
    output layer A                                output layer B

The matrix products run in OpenBLAS with one thread per caller (the path sets OpenBLAS to one
thread for the step and restores the previous count after it), and the Numba kernels are
compiled with ``nogil=True``: both release Python's lock, so the two twins use two cores.

The result is the serial step's, bit for bit, when the serial step too runs its products on one BLAS
thread, as :class:`vaelayer_np.run.trainer.Trainer` always runs IFFCL (``Trainer.blas_threads``; with two BLAS
threads OpenBLAS may add a product's parts in another order, depending on its CPU kernel): each twin runs the
same operations on the same operands in the same order, the noise is drawn from
the one generator in the serial order (depth 0 before the threads start, each later depth by twin B
while A computes the cosine term, so never by two threads at once; A waits for it before its
forward), and the metrics are summed in
the serial order (``tests/test_parallel.py`` checks the parameters after several steps for
equality). Nothing spins while a twin waits for the other (``threading.Event``), so on a busy
core the step degrades to about the serial time rather than to a cliff.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._validate import check_choice
from ..core.iffcl import Pairs, Twins, layer_terms, output_local_step, pair_batch, twin_backward
from ..core.iffcl import twins_step as iffcl_twins_step
from ..core.settings import IFFCLSettings, settings_from_keywords
from .backend import PATH_OF_OLD_BACKEND, PATHS, path_of_old_backend
from .machine import BlasThreads
from .training import FastPath

if TYPE_CHECKING:
    from ..core.iffcl import ReadablePath


class _Abort(Exception):
    """The other twin failed: stop this one (its error is the one raised)."""


class _Meeting:
    """The exchange of one step: B's latents handed to A, the cosine's gradients handed back to B."""

    def __init__(self, n_layers: int) -> None:
        self.b_ready = [threading.Event() for _ in range(n_layers)]
        self.grad_ready = [threading.Event() for _ in range(n_layers)]
        self.noise_ready = [threading.Event() for _ in range(n_layers)]
        self.b_value: list[Any] = [None] * n_layers  # twin B's latents (or outputs), set before b_ready
        self.grad_b: list[Any] = [None] * n_layers  # the cosine's gradients for twin B, set before grad_ready
        self.results: dict[str, Any] = {}  # what each twin hands back: caches, losses, logits
        self.failed = False

    def wait(self, event: threading.Event) -> None:
        event.wait()
        if self.failed:
            raise _Abort

    def fail(self) -> None:
        self.failed = True
        for event in self.b_ready + self.grad_ready + self.noise_ready:
            event.set()


class ParallelFastPath(FastPath):
    """:class:`FastPath` with a :meth:`train_step` that runs twin A and twin B on two threads.

    The trainer uses it for IFFCL when two or more threads are available (``threads``, see
    :func:`vaelayer_np.fast.machine.resolve_threads`); its layer methods are :class:`FastPath`'s.
    """

    def __init__(self, backend: str = "numba", min_flops: float | None = None) -> None:
        super().__init__(backend)
        # a step with fewer FLOPs than this runs serially (the same result); None: PARALLEL_MIN_FLOPS
        self.min_flops = min_flops
        self._pool: ThreadPoolExecutor | None = None
        self._blas: BlasThreads | None = None

    def __getstate__(self) -> dict[str, Any]:  # a thread pool is not copied with the path: a copy makes its own
        state = dict(self.__dict__)
        state["_pool"] = state["_blas"] = None
        return state

    def close(self) -> None:
        """Stop the worker thread (a later step starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaelayer-twin-B")
        if self._blas is None:
            self._blas = BlasThreads(1)

    # ----------------------------------------------------------------- the step
    def train_step(self, net_a: Any, net_b: Any, optimizers: dict[str, Any], x: np.ndarray, y: np.ndarray,
                   rng: np.random.Generator, settings: IFFCLSettings | None = None, *, path: Any = None,
                   **old_keywords: Any) -> dict[str, float]:
        """:func:`vaelayer_np.core.iffcl.train_step` with the twins on two threads: the same result, bit for bit
        (as the serial step with one BLAS thread). ``path`` is ignored (this path runs the step); ``settings``
        (an :class:`~vaelayer_np.core.settings.IFFCLSettings`, None: the defaults) goes to :meth:`twins_step`,
        and the settings one keyword at a time are the old spelling
        (:func:`~vaelayer_np.core.settings.settings_from_keywords`)."""
        settings = settings_from_keywords("train_step", settings, old_keywords)
        return self.twins_step(Twins(net_a, net_b, optimizers, self), x, y, rng, settings)

    def twins_step(self, twins: Twins, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                   settings: IFFCLSettings) -> dict[str, float]:
        """:func:`vaelayer_np.core.iffcl.twins_step` with twin A on the calling thread and twin B on a worker.

        Each twin's local heads run on that twin's thread. A step smaller than ``min_flops``
        (:data:`vaelayer_np.fast.machine.PARALLEL_MIN_FLOPS` by default) runs the serial
        :func:`~vaelayer_np.core.iffcl.twins_step` on this path. ``twins.path`` is not used: this path runs
        the layers.
        """
        from .machine import worth_parallel

        twins = Twins(twins.net_a, twins.net_b, twins.optimizers, self)
        if not worth_parallel(twins.net_a, len(x), self.min_flops):
            return iffcl_twins_step(twins, x, y, rng, settings)
        twins.net_a.check_input(x, y)
        (x_a, x_b), pairs = pair_batch(x, y, settings.pairing, rng)
        layers_a, layers_b = list(twins.net_a.vae_layers), list(twins.net_b.vae_layers)
        n = x.shape[0]
        # the noise of depth 0 now; that of depth k+1 is drawn by twin B while twin A computes the cosine term
        # of depth k (B would wait there): the serial step's order A0, B0, A1, B1, ... from one thread at a time
        for layer_a, layer_b in zip(layers_a, layers_b):
            for layer in (layer_a, layer_b):
                self._workspace(layer, self.prepare(layer), n)
                self._act(layer.activation)
        self._draw_noise(layers_a, layers_b, 0, n, rng)
        self._start()
        assert self._pool is not None and self._blas is not None
        meeting = _Meeting(len(layers_a))
        with self._blas:
            future = self._pool.submit(self._twin_b, meeting, twins, x_b, pairs, settings, rng, dict(np.geterr()))
            try:
                self._twin_a(meeting, twins, x_a, pairs, settings)
            except _Abort:
                pass
            except BaseException:
                meeting.fail()
                future.exception()  # let B stop before the error leaves the step
                raise
            future.result()  # B's own error, if it had one
        return self._metrics(meeting.results, twins, settings, pairs)

    def _draw_noise(self, layers_a: list[Any], layers_b: list[Any], k: int, n: int, rng: np.random.Generator) -> None:
        """The noise of both twins' layers at depth k into their buffers, A's first (the serial order)."""
        for layer in (layers_a[k], layers_b[k]):
            rng.standard_normal(out=self._workspace(layer, self.prepare(layer), n)["eps"], dtype=layer.dtype)

    def _forward(self, layer: Any, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`FastPath.vae_forward` with the noise already drawn into the layer's buffer."""
        return self.vae_forward_drawn(layer, x)

    def _backward_with_head(self, twins: Twins, twin: str, k: int, forward: tuple[Any, np.ndarray, np.ndarray],
                            d_cos: np.ndarray, settings: IFFCLSettings) -> float | None:
        """One twin's backward at depth k and its updates: the serial step's
        :func:`~vaelayer_np.core.iffcl.twin_backward` on ``forward = (cache, out, labels)``, then the layer's
        (and its head's) Adam step; returns the head's loss (None without heads)."""
        net = twins.net_a if twin == "A" else twins.net_b
        cache, out, labels = forward
        head = net.heads[k] if net.heads else None
        grads, head_loss, grads_head = twin_backward(self, net.vae_layers[k], cache, out, d_cos, settings.cosine_on,
                                                     head, labels, settings.head_weight)
        twins.optimizers[f"{twin}.vae{k}"].step(grads)
        if head is not None:
            twins.optimizers[f"{twin}.head{k}"].step(grads_head)
        return head_loss

    def _twin_a(self, meeting: _Meeting, twins: Twins, x: np.ndarray, pairs: Pairs, settings: IFFCLSettings) -> None:
        net, y = twins.net_a, pairs.y_a
        assert y is not None  # pair_batch labels both twins' rows
        h, outs, caches, coses, heads = x, [], [], [], []
        for k, layer in enumerate(net.vae_layers):
            if k:
                meeting.wait(meeting.noise_ready[k])  # drawn by twin B
            out, cache = self._forward(layer, h)
            meeting.wait(meeting.b_ready[k])
            mine = cache["z"] if settings.cosine_on == "latent" else out
            cos_loss, (d_a, d_b) = self.cosine_term(mine, meeting.b_value[k], pairs.target, y, pairs.y_b,
                                                    settings.contrast, settings.margin)
            meeting.grad_b[k] = settings.lam * d_b
            meeting.grad_ready[k].set()
            heads.append(self._backward_with_head(twins, "A", k, (cache, out, y), settings.lam * d_a, settings))
            h = out
            outs.append(out)
            caches.append(cache)
            coses.append(cos_loss)
        logits, loss, grads = output_local_step(net.output, net.readout_features(outs), y, self)
        twins.optimizers["A.output"].step(grads)
        meeting.results.update(caches_a=caches, cos=coses, logits_a=logits, loss_a=loss, heads_a=heads)

    def _twin_b(self, meeting: _Meeting, twins: Twins, x: np.ndarray, pairs: Pairs, settings: IFFCLSettings,
                rng: np.random.Generator, errstate: dict[str, Any]) -> None:
        with np.errstate(**errstate):  # NumPy's error handling is per thread: the caller's, as in the serial step
            try:
                self._twin_b_step(meeting, twins, x, pairs, settings, rng)
            except _Abort:
                return
            except BaseException:
                meeting.fail()
                raise

    def _twin_b_step(self, meeting: _Meeting, twins: Twins, x: np.ndarray, pairs: Pairs, settings: IFFCLSettings,
                     rng: np.random.Generator) -> None:
        net, y = twins.net_b, pairs.y_b
        assert y is not None  # pair_batch labels both twins' rows
        layers, layers_a = list(net.vae_layers), list(twins.net_a.vae_layers)
        h, outs, caches, heads = x, [], [], []
        for k, layer in enumerate(layers):
            out, cache = self._forward(layer, h)
            meeting.b_value[k] = cache["z"] if settings.cosine_on == "latent" else out
            meeting.b_ready[k].set()
            if k + 1 < len(layers):  # while A computes the cosine term: the next depth's noise
                self._draw_noise(layers_a, layers, k + 1, x.shape[0], rng)
                meeting.noise_ready[k + 1].set()
            meeting.wait(meeting.grad_ready[k])
            heads.append(self._backward_with_head(twins, "B", k, (cache, out, y), meeting.grad_b[k], settings))
            h = out
            outs.append(out)
            caches.append(cache)
        _, loss, grads = output_local_step(net.output, net.readout_features(outs), y, self)
        twins.optimizers["B.output"].step(grads)
        meeting.results.update(caches_b=caches, loss_b=loss, heads_b=heads)

    def _metrics(self, results: dict[str, Any], twins: Twins, settings: IFFCLSettings,
                 pairs: Pairs) -> dict[str, float]:
        """The serial step's metrics (:func:`~vaelayer_np.core.iffcl.layer_terms`), in its order."""
        metrics: dict[str, float] = {}
        for k, (layer_a, layer_b) in enumerate(zip(twins.net_a.vae_layers, twins.net_b.vae_layers)):
            terms = layer_terms(self, layer_a, layer_b, results["caches_a"][k], results["caches_b"][k],
                                results["cos"][k], (results["heads_a"][k], results["heads_b"][k]), settings.lam,
                                settings.head_weight)
            metrics.update({f"layer{k}_{term}": value for term, value in terms.items()})
        metrics["output_loss"] = 0.5 * (results["loss_a"] + results["loss_b"])
        metrics["batch_acc"] = float(np.mean(results["logits_a"].argmax(1) == pairs.y_a))
        return metrics


def training_path(path: str, threads: int | str | None = 1,
                  parallel: str = "twins") -> FastPath | ParallelFastPath | ReadablePath:
    """The path a trainer uses: ``"readable"``, the layers' own NumPy code (:class:`ReadablePath`), or
    ``"fast"``, the fast path with the numba kernels (:data:`vaelayer_np.fast.backend.PATHS`).

    ``threads`` (a number or "auto", :func:`vaelayer_np.fast.machine.resolve_threads`): with 2 or more and
    ``parallel="twins"``, the fast path runs IFFCL's twins on two threads (:class:`ParallelFastPath`);
    with ``parallel="layers"`` the trainer pipelines the layers instead
    (:class:`vaelayer_np.fast.pipeline.LayerPipeline`) over the serial fast path. The old spelling
    ``"numpy"`` (readable) and ``"numba"`` (fast) is accepted with a DeprecationWarning.
    """
    if path in PATH_OF_OLD_BACKEND:
        path = path_of_old_backend(path, "training_path")
    check_choice("path", path, PATHS)
    if path == "readable":
        from ..core.iffcl import ReadablePath

        return ReadablePath()
    from .machine import resolve_threads

    if parallel == "twins" and (resolve_threads(threads) or 1) >= 2:
        return ParallelFastPath("numba")
    return FastPath("numba")
