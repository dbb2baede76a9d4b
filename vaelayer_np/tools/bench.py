"""``vaelayer bench``: speed of the training paths, measured side by side in one process.

Its output names the two paths by their kernels: ``numba`` is the fast path (``path="fast"``: buffers,
compiled kernels), ``numpy`` the readable path (``path="readable"``: the layers' own NumPy code).

Prints medians over repeats and the ratios between them:

1. each Numba kernel against the NumPy expression it replaces;
2. one IFFCL step of the Fashion-MNIST architecture (784 inputs, three VAE layers
   of 256, 10 classes, twin networks, float32), linear and hidden-1024 encoders at
   batch 32 and 128: the fast path (numba), the readable path (numpy), and the same step in PyTorch on
   the CPU if installed (``pip install -e ".[bench]"``), with its default Adam and
   with ``Adam(fused=True)`` (``foreach=True`` where fused does not run on the CPU);
   minor page faults per step (``getrusage``);
3. the step against its floors, measured in the same process: the products alone
   (every matrix product of one step, the all-pairs cosine's included, replayed
   with the step's operand layouts into preallocated outputs) and the parts floor
   (products + one flat Adam pass over all parameters + the noise draw);
4. one Fashion-MNIST epoch per training path in a fresh process (time, page faults, peak
   memory), Numba compile time cold and cached;
5. the machine's limit: every configuration's FLOPs per step and per Fashion-MNIST epoch
   (54,000 examples), the large-SGEMM rate measured here with 1 and with every core, the epoch's
   FLOP limit (its FLOPs over that rate with every core) and a measured epoch with the defaults
   (``threads="auto"``, a fresh process, a stated fraction of the epoch's steps scaled to the epoch);
6. the memory a step holds: the peak of NumPy's allocations during one step, IFFCL against
   backprop, at 3 and 8 VAE layers (:func:`step_memory`).

Threads: IFFCL with 2 or more threads runs its twins in parallel, one BLAS thread each
(:mod:`vaelayer_np.fast.parallel`); PyTorch's eager step and the products floor get that many
threads (``torch.set_num_threads``, OpenBLAS); the backprop baseline, one network with nothing to run
side by side, would get them as BLAS threads.

The step, its floors and PyTorch run round-robin (one call of each per repeat), so a
change of the machine's load reaches them alike. ``vaelayer bench --json`` prints
sections 2/3 and 5, one JSON object per configuration and line (the measured epoch on the default
configuration's line).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..fast.machine import limit_threads
from ..run.config import DEFAULT_THREADS, TrainConfig
from ..run.trainer import Trainer

_THREADS = None  # set by run_bench(threads=...)


def _threads() -> int:
    """Threads for BLAS and PyTorch in the step measurements: ``vaelayer bench --threads N`` if given,
    else OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set, else :data:`DEFAULT_THREADS`, the number
    ``vaelayer train`` runs with (so that the bench measures the step as training runs it).

    With more than one thread, the libraries' idle worker threads spin for a while after each call
    (OpenBLAS's and PyTorch's OpenMP pools); measured round-robin on 2 cores, each library's spinning
    workers then slow the next one down, which is part of what such a figure shows.
    """
    if _THREADS is not None:
        return _THREADS
    from ..fast.machine import resolve_threads

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return resolve_threads(int(os.environ[var])) or 1
    return resolve_threads(DEFAULT_THREADS) or 1


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(name: str, t_numba: float, t_ref: float, ref_name: str = "numpy") -> str:
    return (f"  {name:<40s} numba {t_numba * 1e6:9.1f} us   {ref_name} {t_ref * 1e6:9.1f} us   "
            f"speed-up {t_ref / t_numba:6.2f}x")


def bench_kernels(repeats: int) -> None:
    from ..core import ops
    from ..core.activations import ACTIVATIONS
    from ..fast import kernels as fast_kernels

    rng = np.random.default_rng(0)
    f32 = np.float32
    n, k, d = 128, 256, 784
    mu, r, eps, dz = (rng.standard_normal((n, k)).astype(f32) for _ in range(4))
    log_var = ops.bound_log_var(r, 6.0)
    std, _ = ops.reparameterize(mu, log_var, eps)
    var = std * std
    kl_grads = ops.kl_diag_gaussian(mu, log_var, var)[1]
    t = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(f32)
    labels_pairs = rng.integers(0, 10, n)
    tm = np.where(labels_pairs[:, None] == labels_pairs[None, :], 1.0, -1.0)
    logits = rng.standard_normal((n, 10)).astype(f32)
    labels = rng.integers(0, 10, n)
    w, g, m = (rng.standard_normal((d, k)).astype(f32) for _ in range(3))
    v = rng.random((d, k)).astype(f32)
    x, x_hat = rng.random((n, d)).astype(f32), rng.standard_normal((n, d)).astype(f32)
    relu_nb = fast_kernels.make_activation("relu")
    relu = ACTIVATIONS["relu"]
    out = relu.forward(mu)
    cases = [
        ("KL value and gradients", lambda: fast_kernels.kl_diag_gaussian(mu, log_var, var),
         lambda: ops.kl_diag_gaussian(mu, log_var, var)),
        ("latent backward (sample + KL + bound)",
         lambda: fast_kernels.latent_backward(dz, eps, std, kl_grads, 1e-3, log_var, 6.0),
         lambda: ops.latent_backward(dz, eps, std, kl_grads, 1e-3, log_var, 6.0)),
        ("cosine embedding (fwd+bwd)", lambda: fast_kernels.cosine_embedding(mu, r, t),
         lambda: ops.cosine_embedding(mu, r, t)),
        ("cosine, all pairs 128x128 (fwd+bwd)", lambda: fast_kernels.cosine_embedding_matrix(mu, r, tm),
         lambda: ops.cosine_embedding_matrix(mu, r, tm)),
        ("softmax cross-entropy (fwd+bwd)", lambda: fast_kernels.softmax_cross_entropy(logits, labels),
         lambda: ops.softmax_cross_entropy(logits, labels)),
        ("relu forward", lambda: relu_nb.forward(mu), lambda: relu.forward(mu)),
        ("relu backward", lambda: relu_nb.backward(dz, mu, out), lambda: relu.backward(dz, mu, out)),
        ("adam update 784x256", lambda: fast_kernels.adam_update(w, g, m, v, 0.9, 0.999, 1e-3, 1e-8),
         lambda: ops.adam_update(w, g, m, v, 0.9, 0.999, 1e-3, 1e-8)),
        ("reconstruction MSE 128x784 (value+grad)", lambda: fast_kernels.mse_value_and_grad(x_hat, x),
         lambda: ops.mse_value_and_grad(x_hat, x)),
    ]
    print("1. kernels (float32, batch 128, latent 256): median times")
    for name, fast, ref in cases:
        print(_row(name, median_time(fast, repeats), median_time(ref, repeats)))


CONFIGS = ((0, 32), (0, 128), (1024, 32), (1024, 128))  # (encoder hidden width, batch)
EPOCH_EXAMPLES = 54000  # a Fashion-MNIST training epoch (60,000 less the validation tenth)


def _fashion_step_trainer(path: str, batch: int, encoder_hidden: int = 0, threads: int | None = None) -> Trainer:
    """A Fashion-MNIST-size trainer; ``threads`` (default: the bench's): 2 or more run the twins in parallel."""
    cfg = TrainConfig(dataset="fashion-mnist", widths=(256, 256, 256), batch_size=batch, path=path,
                      encoder_hidden=encoder_hidden, threads=threads or _threads())
    return Trainer(cfg, 784, 10)


def _torch_step(batch: int, cfg: TrainConfig, optimizer: str = "default") -> Callable[[], None]:
    """The same IFFCL step in PyTorch: autograd inside each layer, inputs detached between layers.

    ``optimizer``: "default" (``torch.optim.Adam`` as constructed with no options), "fused"
    (``fused=True``) or "foreach" (``foreach=True``).
    """
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(_threads())
    dims = (784, 256, 256, 256)
    options = {"default": {}, "fused": {"fused": True}, "foreach": {"foreach": True}}[optimizer]

    def make_net() -> tuple[list[tuple[Any, Any]], tuple[Any, Any]]:
        layers = []
        hidden = cfg.encoder_hidden
        for i in range(3):
            enc_out = hidden or dims[i]
            mods = torch.nn.ModuleDict({"mu": torch.nn.Linear(enc_out, dims[i + 1]),
                                        "lv": torch.nn.Linear(enc_out, dims[i + 1]),
                                        "dec": torch.nn.Linear(dims[i + 1], dims[i])})
            if hidden:
                mods["enc"] = torch.nn.Linear(dims[i], hidden)
            layers.append((mods, torch.optim.Adam(mods.parameters(), lr=cfg.lr, **options)))
        head = torch.nn.Linear(sum(dims[1:]), 10)
        return layers, (head, torch.optim.Adam(head.parameters(), lr=cfg.output_lr, **options))

    nets = [make_net(), make_net()]
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        perm = torch.randperm(batch)
        xs, ys = [x, x[perm]], [y, y[perm]]
        targets = torch.where(ys[0][:, None] == ys[1][None, :], 1.0, -1.0)
        pos = targets > 0
        w = torch.where(pos, 0.5 / pos.sum().clamp(min=1), 0.5 / (~pos).sum().clamp(min=1))
        hs = [xs[0], xs[1]]
        feats: list[list[Any]] = [[], []]
        for k in range(3):
            zs, elbos, outs = [], [], []
            for t in range(2):
                mods, _ = nets[t][0][k]
                h = hs[t].detach()
                e = torch.relu(mods["enc"](h)) if "enc" in mods else h
                mu, lv = mods["mu"](e), 6 * torch.tanh(mods["lv"](e) / 6)
                z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
                recon = torch.mean((mods["dec"](z) - h) ** 2)
                kl = -0.5 * torch.sum(1 + lv - mu ** 2 - lv.exp()) / batch
                elbos.append(recon + cfg.beta * kl)
                zs.append(z)
                outs.append(torch.relu(mu))
            a = torch.nn.functional.normalize(zs[0], dim=1)
            b = torch.nn.functional.normalize(zs[1], dim=1)
            cos = a @ b.T
            cos_loss = torch.sum(w * torch.where(pos, 1 - cos, torch.clamp(cos - cfg.margin, min=0)))
            loss = elbos[0] + elbos[1] + cfg.lam * cos_loss
            for t in range(2):
                nets[t][0][k][1].zero_grad()
            loss.backward()
            for t in range(2):
                nets[t][0][k][1].step()
                hs[t] = outs[t].detach()
                feats[t].append(hs[t])
        for t in range(2):
            head, opt = nets[t][1]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(torch.cat(feats[t], 1)), ys[t]).backward()
            opt.step()

    return step


def _torch_fused_kind() -> str:
    """"fused" if ``torch.optim.Adam(fused=True)`` steps on the CPU in this PyTorch, else "foreach"."""
    import torch

    p = torch.nn.Parameter(torch.zeros(4))
    try:
        opt = torch.optim.Adam([p], fused=True)
        p.grad = torch.ones(4)
        opt.step()
        return "fused"
    except (RuntimeError, ValueError, TypeError):
        return "foreach"


class ProductRecorder:
    """Record every matrix product of the code run inside ``with`` (operands copied with their layout).

    Products go through :func:`.ops.matmul` / :func:`.ops.matmul_into`, looked up at call time by
    the layers (through the backend namespaces) and by both all-pairs cosine implementations (through
    the module :mod:`.ops`): patching those names sees all of them.
    """

    def __init__(self) -> None:
        from ..core import ops
        from ..fast.backend import get_ops

        # (a, b) with a and b copied in their own memory layout (order="K")
        self.products: list[tuple[np.ndarray, np.ndarray]] = []
        self.threads: list[int] = []  # the thread that ran each product (threading.get_ident())
        self._targets: list[Any] = [ops] + [get_ops(name) for name in ("numpy", "numba")]
        self._saved: list[tuple[Any, Any, Any]] = []
        self._lock = __import__("threading").Lock()

    def _record(self, a: np.ndarray, b: np.ndarray) -> None:
        import threading

        with self._lock:
            self.products.append((a.copy(order="K"), b.copy(order="K")))
            self.threads.append(threading.get_ident())

    def __enter__(self) -> ProductRecorder:
        from ..core import ops

        matmul, matmul_into = ops.matmul, ops.matmul_into

        def recorded_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            self._record(a, b)
            return matmul(a, b)

        def recorded_matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
            self._record(a, b)
            return matmul_into(a, b, out)

        for target in self._targets:
            self._saved.append((target, target.matmul, target.matmul_into))
            target.matmul, target.matmul_into = recorded_matmul, recorded_matmul_into
        return self

    def __exit__(self, *exc: object) -> None:
        for target, matmul, matmul_into in self._saved:
            target.matmul, target.matmul_into = matmul, matmul_into
        self._saved = []

    def replay_function(self) -> Callable[[], None]:
        """A function that runs every recorded product into preallocated outputs (nothing kept alive)."""
        outs = [np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b)) for a, b in self.products]
        products = list(zip(self.products, outs))

        def replay() -> None:
            for (a, b), out in products:
                np.matmul(a, b, out=out)

        return replay

    def parallel_replay_function(self) -> Callable[[], None]:
        """The products replayed as the parallel twins ran them when recorded: each thread's products, in
        their order, on a thread of their own with one BLAS thread (the recording's calling thread here)."""
        from concurrent.futures import ThreadPoolExecutor

        from ..fast.machine import BlasThreads

        outs = [np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b)) for a, b in self.products]
        groups: dict[int, list[Any]] = {}
        for thread, product, out in zip(self.threads, self.products, outs):
            groups.setdefault(thread, []).append((product, out))
        first = groups.pop(self.threads[0]) if self.threads else []
        others = list(groups.values())
        pool, blas = ThreadPoolExecutor(max_workers=max(1, len(others))), BlasThreads(1)

        def run(group: list[Any]) -> None:
            for (a, b), out in group:
                np.matmul(a, b, out=out)

        def replay() -> None:
            with blas:
                futures = [pool.submit(run, group) for group in others]
                run(first)
                for future in futures:
                    future.result()

        return replay

    def flops(self) -> int:
        return sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in self.products)


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_medians(functions: dict[str, Callable[[], Any]], repeats: int,
                        warmup: int = 3) -> dict[str, tuple[float, float]]:
    """Time each of ``functions`` (name -> callable) round-robin in one process.

    Every repeat runs each function once in turn, so a change of the machine's load reaches all
    of them alike. Returns name -> (median seconds, median minor page faults per call).
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    faults: dict[str, list[int]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            f0 = _minor_faults()
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            faults[name].append(_minor_faults() - f0)
            times[name].append(t1 - t0)
    return {name: (statistics.median(times[name]), statistics.median(faults[name])) for name in functions}


def step_parts(batch: int, hidden: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """The measured pieces of one IFFCL step (Fashion-MNIST architecture, float32), ready to time.

    Returns name -> callable: "step" (numba backend), "numpy_step", "products" (every matrix
    product of one step replayed with its operands' layouts into preallocated outputs), "adam"
    (one flat Adam pass over all parameters of both twins, the Numba kernel), "noise" (the step's
    reparameterisation noise drawn as float32 into a kept buffer), and "torch", "torch_fused" if
    PyTorch is installed; and a dict of facts (product count, FLOPs, parameters, noise values).
    With 2 or more threads the step runs the twins in parallel, and the floor's products and Adam pass
    run as it does: on two threads with one BLAS thread each (each thread's products as recorded from a
    parallel step, Adam by halves).
    """
    from ..fast import kernels as fast_kernels

    rng = np.random.default_rng(0)
    x = rng.random((batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    trainer = _fashion_step_trainer("fast", batch, hidden)
    reference = _fashion_step_trainer("readable", batch, hidden)
    # the products of one steady-state step, recorded as the step runs them (with parallel twins: per thread)
    recording = _fashion_step_trainer("fast", batch, hidden)
    recording.step(x, y)
    with ProductRecorder() as recorder:
        recording.step(x, y)
    n_params = sum(opt.params[k].size for opt in trainer.optimizers.values() for k in opt.params)
    w, g, m, v = (rng.standard_normal(n_params).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    n_noise = 2 * batch * sum(trainer.config.resolved_widths())
    noise = np.empty(n_noise, dtype=np.float32)
    noise_rng = np.random.default_rng(1)
    parallel = hasattr(trainer.path, "train_step")  # the twins in parallel: so are the floor's products and Adam
    if parallel:
        from concurrent.futures import ThreadPoolExecutor

        pool, half = ThreadPoolExecutor(max_workers=1), n_params // 2

        def adam() -> None:
            future = pool.submit(fast_kernels.adam_update, w[half:], g[half:], m[half:], v[half:], 0.9, 0.999,
                                 1e-7, 1e-8)
            fast_kernels.adam_update(w[:half], g[:half], m[:half], v[:half], 0.9, 0.999, 1e-7, 1e-8)
            future.result()
    else:
        def adam() -> None:
            fast_kernels.adam_update(w, g, m, v, 0.9, 0.999, 1e-7, 1e-8)
    parts = {
        "step": lambda: trainer.step(x, y),
        "numpy_step": lambda: reference.step(x, y),
        "products": recorder.parallel_replay_function() if parallel else recorder.replay_function(),
        "adam": adam,
        "noise": lambda: noise_rng.standard_normal(out=noise, dtype=np.float32),
    }
    facts = {"products": len(recorder.products), "gflop": recorder.flops() / 1e9, "params": n_params,
             "noise_values": n_noise, "torch_fused_kind": None, "parallel_twins": parallel}
    try:
        import torch  # noqa: F401
    except ImportError:
        return parts, facts
    facts["torch_fused_kind"] = _torch_fused_kind()
    parts["torch"] = _torch_step(batch, trainer.config, "default")
    parts["torch_fused"] = _torch_step(batch, trainer.config, facts["torch_fused_kind"])
    return parts, facts


def bench_step_config(hidden: int, batch: int, repeats: int) -> dict[str, Any]:
    """One configuration's medians as a dict (times in ms; the JSON line of ``vaelayer bench --json``)."""
    parts, facts = step_parts(batch, hidden)
    if _threads() > 1:
        # With 2 or more threads, the idle workers of a multi-threaded library (OpenBLAS's after the readable
        # step, PyTorch's OpenMP pool) spin for a while after each call and take a core from whatever runs
        # next: each group is timed round-robin among itself, one group after the other (the step and its
        # floor, then the readable step, then PyTorch's two steps), so that no group runs beside another's
        # spinning workers.
        med = {}
        for group in (("step", "products", "adam", "noise"), ("numpy_step",), ("torch", "torch_fused")):
            med.update(interleaved_medians({name: parts[name] for name in group if name in parts}, repeats))
    else:
        med = interleaved_medians(parts, repeats)
    ms = {name: value[0] * 1e3 for name, value in med.items()}
    parts_floor = ms["products"] + ms["adam"] + ms["noise"]
    row = {
        "config": f"{'linear' if not hidden else f'hidden{hidden}'}-batch{batch}",
        "encoder_hidden": hidden, "batch": batch, "repeats": repeats, "threads": _threads(),
        "parallel_twins": facts["parallel_twins"],
        "step_ms": ms["step"], "numpy_step_ms": ms["numpy_step"],
        "products_ms": ms["products"], "adam_ms": ms["adam"], "noise_ms": ms["noise"],
        "parts_floor_ms": parts_floor,
        "torch_ms": ms.get("torch"), "torch_fused_ms": ms.get("torch_fused"),
        "torch_fused_kind": facts["torch_fused_kind"],
        "page_faults_per_step": med["step"][1], "numpy_page_faults_per_step": med["numpy_step"][1],
        "products_page_faults": med["products"][1],
        "n_products": facts["products"], "products_gflop_per_s": facts["gflop"] / (ms["products"] / 1e3),
        "step_gflop": facts["gflop"], "epoch_tflop": facts["gflop"] * EPOCH_EXAMPLES / batch / 1e3,
        "n_params": facts["params"], "noise_values": facts["noise_values"],
        "step_over_parts_floor": ms["step"] / parts_floor, "step_over_products": ms["step"] / ms["products"],
    }
    if "torch" in ms:
        row["step_over_torch"] = ms["step"] / ms["torch"]
        row["step_over_torch_fused"] = ms["step"] / ms["torch_fused"]
    return row


def _print_step_row(row: dict[str, Any]) -> None:
    hidden = row["encoder_hidden"]
    print(f"\n2./3. one IFFCL step, Fashion-MNIST architecture 784-256-256-256-10, twins, float32, "
          f"encoder hidden layer {hidden or 'none (the linear encoder)'}, batch {row['batch']} "
          f"(medians of {row['repeats']} interleaved repeats)")
    print(f"  step: numba {row['step_ms']:8.2f} ms ({row['page_faults_per_step']:.0f} page faults)   "
          f"numpy {row['numpy_step_ms']:8.2f} ms ({row['numpy_page_faults_per_step']:.0f} page faults)")
    print(f"  floors: products alone {row['products_ms']:8.2f} ms ({row['n_products']} products, "
          f"{row['products_gflop_per_s']:.1f} GFLOP/s)   + Adam over {row['n_params'] / 1e6:.2f}M parameters "
          f"{row['adam_ms']:6.2f} ms   + noise ({row['noise_values']} values) {row['noise_ms']:5.2f} ms   "
          f"= parts floor {row['parts_floor_ms']:8.2f} ms")
    if row["torch_ms"] is not None:
        print(f"  pytorch: default Adam {row['torch_ms']:8.2f} ms   Adam({row['torch_fused_kind']}=True) "
              f"{row['torch_fused_ms']:8.2f} ms")
    else:
        print("  pytorch: not installed (pip install -e '.[bench]' adds the PyTorch columns)")
    ratios = (f"      ratios: numba/numpy {row['step_ms'] / row['numpy_step_ms']:.2f}   "
              f"numba/matmuls (products alone) {row['step_over_products']:.2f}   "
              f"numba/parts floor {row['step_over_parts_floor']:.2f}")
    if row["torch_ms"] is not None:
        ratios += (f"   numba/pytorch {row['step_over_torch']:.2f}   "
                   f"numba/pytorch {row['torch_fused_kind']} {row['step_over_torch_fused']:.2f}")
    print(ratios)


def bench_step(repeats: int, json_lines: bool = False, quick: bool = False) -> list[dict[str, Any]]:
    """Sections 2/3 and 5 for every configuration; ``json_lines``: print one JSON object per configuration."""
    gemm = gemm_rates(quick=quick)
    rows = [bench_step_config(hidden, batch, repeats) for hidden, batch in CONFIGS]
    epoch, epoch_layers = measure_epochs(steps=10 if quick else 100, rounds=1 if quick else 3)
    for row in rows:
        add_limits(row, gemm, epoch, epoch_layers)
    for row in rows:
        if json_lines:
            print(json.dumps(row), flush=True)
        else:
            _print_step_row(row)
    if not json_lines:
        _print_limits(rows, gemm, epoch, epoch_layers)
    return rows


# ----------------------------------------------------------------------------- the machine's limit
def gemm_rates(size: int | None = None, repeats: int = 5, quick: bool = False) -> dict[int, float]:
    """GFLOP/s of one large float32 matrix product (size x size x size) with 1 thread and with every core.

    Returns {1: rate, n: rate} (n the cores this process may use; one entry on one core): the best of
    ``repeats`` timings, since this is the machine's limit (on these shared machines the rate on two
    threads moved between 106 and 192 GFLOP/s from one minute to the next; a median would move the limit
    with whatever else ran, the best is what the machine can do).
    """
    from ..fast.machine import usable_cores

    size = size or (1024 if quick else 2048)
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty((size, size), np.float32)
    rates = {}
    for n in sorted({1, usable_cores()}):
        with limit_threads(n):
            np.matmul(a, b, out=out)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                np.matmul(a, b, out=out)
                times.append(time.perf_counter() - t0)
        rates[n] = 2.0 * size ** 3 / min(times) / 1e9
    return rates




_CHILD = "vaelayer_np.tools._bench_child"  # the measurements that need a fresh process


def measure_epoch(steps: int = 100, parallel: str = "twins") -> dict[str, Any] | None:
    """A Fashion-MNIST epoch with the default settings in a fresh process: ``steps`` training steps timed
    (after two of warm-up) and scaled to the epoch's 54,000 examples.

    ``parallel``: the setting of that name ("twins", the default, or "layers": the layers pipelined).
    Returns a dict (``epoch_s``, ``steps``, ``threads`` chosen by "auto", ``parallel_twins``, ``parallel``,
    the data ``source``, the load average before), or None if the child failed.
    """
    load = os.getloadavg()
    done = subprocess.run([sys.executable, "-m", _CHILD, "epoch-steps", str(steps), parallel],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return None
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["epoch_s"] = out["seconds"] / (out["steps"] * out["batch"]) * EPOCH_EXAMPLES
    out["load_before"] = load
    return out


def measure_epochs(steps: int = 100,
                   rounds: int = 3) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """:func:`measure_epoch` for ``parallel="twins"`` (the default) and ``"layers"``, in alternation, ``rounds``
    times each; returns the two runs of median ``epoch_s`` (the other keys of that run), None where all failed."""
    runs: dict[str, list[dict[str, Any]]] = {"twins": [], "layers": []}
    for _ in range(rounds):
        for mode, found in runs.items():
            result = measure_epoch(steps, parallel=mode)
            if result is not None:
                found.append(result)
    medians = []
    for found in runs.values():
        found.sort(key=lambda r: r["epoch_s"])
        medians.append(dict(found[(len(found) - 1) // 2], rounds=len(found),
                            epoch_s_all=[r["epoch_s"] for r in found]) if found else None)
    return medians[0], medians[1]


def add_limits(row: dict[str, Any], gemm: dict[int, float], epoch: dict[str, Any] | None,
               epoch_layers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Section 5's keys on a configuration's row (see ``vaelayer bench --json``)."""
    every = max(gemm)
    row["gemm_gflops_1"] = gemm[1]
    row["gemm_gflops_all"] = gemm[every]
    row["gemm_threads_all"] = every
    row["flop_limit_epoch_s"] = row["epoch_tflop"] * 1e3 / gemm[every]
    row["flop_limit_step_ms"] = row["step_gflop"] / gemm[every] * 1e3
    default = (row["encoder_hidden"], row["batch"]) == (DEFAULT_HIDDEN, DEFAULT_BATCH)
    row["epoch_s"] = epoch["epoch_s"] if (default and epoch) else None
    row["epoch_steps_measured"] = epoch["steps"] if (default and epoch) else None
    row["epoch_threads"] = epoch["threads"] if (default and epoch) else None
    row["epoch_parallel_twins"] = epoch["parallel_twins"] if (default and epoch) else None
    row["epoch_over_flop_limit"] = row["epoch_s"] / row["flop_limit_epoch_s"] if row["epoch_s"] else None
    row["epoch_layers_s"] = epoch_layers["epoch_s"] if (default and epoch_layers) else None
    row["epoch_layers_over_flop_limit"] = (row["epoch_layers_s"] / row["flop_limit_epoch_s"]
                                           if row["epoch_layers_s"] else None)
    row["load_average"] = os.getloadavg()[0]
    return row


def _print_limits(rows: list[dict[str, Any]], gemm: dict[int, float], epoch: dict[str, Any] | None,
                  epoch_layers: dict[str, Any] | None = None) -> None:
    every = max(gemm)
    print(f"\n5. the machine's limit: large SGEMM (float32) {gemm[1]:.1f} GFLOP/s on 1 thread, "
          f"{gemm[every]:.1f} GFLOP/s on {every}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for row in rows:
        print(f"  {row['config']:<20s} {row['step_gflop']:6.3f} GFLOP per step, {row['epoch_tflop']:6.3f} TFLOP per "
              f"epoch (54,000 examples): FLOP limit {row['flop_limit_step_ms']:7.2f} ms per step, "
              f"{row['flop_limit_epoch_s']:6.1f} s per epoch; step measured {row['step_ms']:7.2f} ms "
              f"= {row['step_ms'] / row['flop_limit_step_ms']:.2f}x its limit")
    if epoch is None:
        print("  measured epoch: failed")
        return
    row = next(r for r in rows if r["epoch_s"] is not None)
    print(f"  measured epoch, default settings (threads=auto chose {epoch['threads']}"
          f"{', twins in parallel' if epoch['parallel_twins'] else ', serial step'}; {epoch['source']} data): "
          f"{epoch['steps']} steps in {epoch['seconds']:.2f} s, scaled to 54,000 examples: {epoch['epoch_s']:.1f} s "
          f"= {row['epoch_over_flop_limit']:.2f}x the FLOP limit {row['flop_limit_epoch_s']:.1f} s "
          f"(load average before it {epoch['load_before'][0]:.2f}; median of {epoch.get('rounds', 1)} runs: "
          f"{', '.join(f'{v:.1f}' for v in epoch.get('epoch_s_all', [epoch['epoch_s']]))} s)")
    if row.get("epoch_layers_s") and epoch_layers is not None:
        e = epoch_layers
        print(f"  measured epoch, the layers pipelined instead (parallel=layers, {e['threads']} stage(s)): "
              f"{row['epoch_layers_s']:.1f} s = {row['epoch_layers_over_flop_limit']:.2f}x the FLOP limit "
              f"(median of {e['rounds']} runs, alternating with the one above: "
              f"{', '.join(f'{v:.1f}' for v in e['epoch_s_all'])} s)")


# ----------------------------------------------------------------------------- memory held by a step
def step_memory(n_layers: int, method: str, batch: int = 128, hidden: int = 1024, width: int = 256) -> int:
    """Peak bytes of NumPy allocations during one training step beyond what exists before it (tracemalloc).

    The readable path (``path="readable"``: the layers' own forward and backward), Fashion-MNIST
    size (784 inputs, ``n_layers`` VAE layers of ``width``, encoders of ``hidden``, float32, batch
    ``batch``). IFFCL drops a layer's cache once the layer is updated (the next layer needs only its
    output); backprop keeps every layer's cache until the backward pass reaches it. Parameters and
    optimiser moments exist before the step and are not counted.
    """
    import tracemalloc

    cfg = TrainConfig(dataset="fashion-mnist", widths=(width,) * n_layers, encoder_hidden=hidden, batch_size=batch,
                      path="readable", method=method, threads=1)
    trainer = Trainer(cfg, 784, 10)
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)
    trainer.step(x, y)  # first-step allocations (optimiser state) out of the way
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        trainer.step(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def bench_memory(depths: Sequence[int] = (3, 8)) -> dict[int, tuple[int, int]]:
    """Section 6: the peak memory of one step, IFFCL (twins) against backprop (one network), per depth."""
    print("\n6. memory held during one step (peak of NumPy allocations beyond the parameters and optimiser "
          "state, tracemalloc; readable path, 784 inputs, VAE layers of 256, encoders of 1024, batch 128, float32)")
    out = {}
    for depth in depths:
        iffcl_bytes, backprop_bytes = step_memory(depth, "iffcl"), step_memory(depth, "backprop")
        out[depth] = (iffcl_bytes, backprop_bytes)
        print(f"  {depth} VAE layers: IFFCL (two networks) {iffcl_bytes / 1e6:6.1f} MB   "
              f"backprop (one network) {backprop_bytes / 1e6:6.1f} MB   "
              f"per network: IFFCL {iffcl_bytes / 2e6:6.1f} MB, backprop/IFFCL {2 * backprop_bytes / iffcl_bytes:.2f}")
    return out


def bench_compile() -> None:
    print("\n4b. Numba compile time for the whole backend (fresh process each)")
    template = ("import time, numpy as np; t=time.perf_counter();"
                "from vaelayer_np.run.config import TrainConfig; from vaelayer_np.run.trainer import Trainer;"
                "tr=Trainer(TrainConfig(dataset='fashion-mnist', widths=(8,8), path='{}'), 16, 10);"
                "x=np.random.default_rng(0).random((4,16)).astype(np.float32); tr.step(x, np.arange(4));"
                "tr.predict_proba(x); print(time.perf_counter()-t)")
    code, ref = template.format("fast"), template.format("readable")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda c: float(subprocess.run([sys.executable, "-c", c], env=env, capture_output=True,  # noqa: E731
                                             text=True, check=True).stdout.strip().splitlines()[-1])
        cold = run(code)
        warm = statistics.median(run(code) for _ in range(3))
        base = statistics.median(run(ref) for _ in range(3))
    print(f"  first step incl. compile: cold cache {cold:.2f} s, warm cache {warm:.2f} s, "
          f"numpy backend (no compile) {base:.2f} s; compile share with warm cache {max(warm - base, 0):.2f} s")




_FASHION = TrainConfig(dataset="fashion-mnist")
DEFAULT_HIDDEN, DEFAULT_BATCH = _FASHION.encoder_hidden, _FASHION.batch_size  # the epoch's configuration


def bench_epoch(backends: Sequence[str] = ("numba", "numpy"), floor_ms: float | None = None) -> None:
    """One Fashion-MNIST epoch with the default settings, each backend in a fresh process.

    ``floor_ms``: the parts floor of one step of the default configuration measured in section 3,
    printed times the epoch's steps (what no implementation of the epoch can go below).
    """
    print("\n4a. one Fashion-MNIST epoch (54,000 examples, batch 128), default settings (BLAS threads as "
          "`vaelayer train` sets them), fresh process per backend")
    if floor_ms is not None:
        floor_steps = -(-54000 // (DEFAULT_BATCH or 1))  # TrainConfig fills the batch size in
        print(f"  floor: {floor_steps} steps x parts floor {floor_ms:.1f} ms (section 3, {_threads()} thread(s)) = "
              f"{floor_steps * floor_ms / 1e3:.1f} s per epoch")
    for backend in backends:
        done = subprocess.run([sys.executable, "-m", _CHILD, "epoch", backend], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  {backend}: skipped ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'})")
            continue
        seconds, steps, first, median, mean, peak, threads = done.stdout.split()[-7:]
        print(f"  {backend}: {float(seconds):.1f} s per epoch ({threads} BLAS thread(s)); page faults per step: "
              f"{int(first) / int(steps):.1f} in the first epoch, median {float(median):.0f} and mean "
              f"{float(mean):.2f} in the 100 steps after it; peak resident memory of the process {float(peak):.0f} MB")


def run_bench(repeats: int = 20, quick: bool = False, json_lines: bool = False, threads: int | None = None) -> None:
    """``vaelayer bench``: print the sections listed at the top of this module (``json_lines``: only
    the step configurations, one JSON object per line; ``threads``: see :func:`_threads`)."""
    global _THREADS
    _THREADS = threads
    if quick:
        repeats = min(repeats, 5)
    with limit_threads(_threads()):
        if json_lines:
            bench_step(repeats, json_lines=True, quick=quick)
            return
        import numba
        twins = "the twins in parallel, one BLAS thread each" if _threads() > 1 else "the serial step"
        print(f"vaelayer bench: numpy {np.__version__}, numba {numba.__version__}, {os.cpu_count()} cores, "
              f"{_threads()} thread(s) in sections 1-3 (--threads N to change; IFFCL: {twins}; PyTorch, the "
              f"products floor and the backprop baseline: {_threads()} BLAS/OpenMP thread(s)); load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; medians of {repeats} repeats\n")
        bench_kernels(repeats)
        rows = bench_step(repeats, quick=quick)
    bench_memory()
    if not quick:
        bench_epoch(floor_ms=next((r["parts_floor_ms"] for r in rows
                                   if (r["encoder_hidden"], r["batch"]) == (DEFAULT_HIDDEN, DEFAULT_BATCH)), None))
        bench_compile()
