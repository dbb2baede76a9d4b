"""``vaelayer bench``: speed of the backends, measured side by side in one run.

Prints medians over repeats and the ratios between them:

1. each Numba kernel against the NumPy expression it replaces;
2. one IFFCL step of the Fashion-MNIST architecture (784 inputs, three VAE layers
   of 256, 10 classes, twin networks, float32) at batch 128 and 32: numba
   backend, numpy backend, and the same step in PyTorch on the CPU if installed
   (``pip install -e ".[bench]"``);
3. the step against the time of its matrix products alone (the BLAS limit);
4. one Fashion-MNIST epoch, peak memory, Numba compile time cold and cached.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .config import TrainConfig
from .trainer import Trainer


def _threads():
    """Threads for every library: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set, else all cores."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(name, t_numba, t_ref, ref_name="numpy"):
    return f"  {name:<34s} numba {t_numba * 1e6:9.1f} us   {ref_name} {t_ref * 1e6:9.1f} us   speed-up {t_ref / t_numba:6.2f}x"


def bench_kernels(repeats):
    from . import _kernels, ops
    from .activations import ACTIVATIONS

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
    relu_nb = _kernels.make_activation("relu")
    relu = ACTIVATIONS["relu"]
    out = relu.forward(mu)
    cases = [
        ("KL value and gradients", lambda: _kernels.kl_diag_gaussian(mu, log_var, var),
         lambda: ops.kl_diag_gaussian(mu, log_var, var)),
        ("latent backward (sample + KL + bound)",
         lambda: _kernels.latent_backward(dz, eps, std, kl_grads, 1e-3, log_var, 6.0),
         lambda: ops.latent_backward(dz, eps, std, kl_grads, 1e-3, log_var, 6.0)),
        ("cosine embedding (fwd+bwd)", lambda: _kernels.cosine_embedding(mu, r, t),
         lambda: ops.cosine_embedding(mu, r, t)),
        ("cosine, all pairs 128x128 (fwd+bwd)", lambda: _kernels.cosine_embedding_matrix(mu, r, tm),
         lambda: ops.cosine_embedding_matrix(mu, r, tm)),
        ("softmax cross-entropy (fwd+bwd)", lambda: _kernels.softmax_cross_entropy(logits, labels),
         lambda: ops.softmax_cross_entropy(logits, labels)),
        ("relu forward", lambda: relu_nb.forward(mu), lambda: relu.forward(mu)),
        ("relu backward", lambda: relu_nb.backward(dz, mu, out), lambda: relu.backward(dz, mu, out)),
        ("adam update 784x256", lambda: _kernels.adam_update(w, g, m, v, 0.9, 0.999, 1e-3, 1e-8),
         lambda: ops.adam_update(w, g, m, v, 0.9, 0.999, 1e-3, 1e-8)),
    ]
    print("1. kernels (float32, batch 128, latent 256): median times")
    for name, fast, ref in cases:
        print(_row(name, median_time(fast, repeats), median_time(ref, repeats)))


def _fashion_step_trainer(backend, batch, encoder_hidden=0):
    cfg = TrainConfig(dataset="fashion-mnist", widths=(256, 256, 256), batch_size=batch, backend=backend,
                      encoder_hidden=encoder_hidden)
    return Trainer(cfg, 784, 10)


def _torch_step(batch, cfg):
    """The same IFFCL step in PyTorch: autograd inside each layer, inputs detached between layers."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(_threads())
    dims = (784, 256, 256, 256)

    def make_net():
        layers = []
        hidden = cfg.encoder_hidden
        for i in range(3):
            enc_out = hidden or dims[i]
            mods = torch.nn.ModuleDict({"mu": torch.nn.Linear(enc_out, dims[i + 1]),
                                        "lv": torch.nn.Linear(enc_out, dims[i + 1]),
                                        "dec": torch.nn.Linear(dims[i + 1], dims[i])})
            if hidden:
                mods["enc"] = torch.nn.Linear(dims[i], hidden)
            layers.append((mods, torch.optim.Adam(mods.parameters(), lr=cfg.lr)))
        head = torch.nn.Linear(sum(dims[1:]), 10)
        return layers, (head, torch.optim.Adam(head.parameters(), lr=cfg.output_lr))

    nets = [make_net(), make_net()]
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))

    def step():
        perm = torch.randperm(batch)
        xs, ys = [x, x[perm]], [y, y[perm]]
        targets = torch.where(ys[0][:, None] == ys[1][None, :], 1.0, -1.0)
        pos = targets > 0
        w = torch.where(pos, 0.5 / pos.sum().clamp(min=1), 0.5 / (~pos).sum().clamp(min=1))
        hs = [xs[0], xs[1]]
        feats = [[], []]
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


def bench_step(repeats):
    for hidden in (0, 1024):
        _bench_step(repeats, hidden)


def _bench_step(repeats, hidden):
    from .backend import get_ops

    print(f"\n2./3. one IFFCL step, Fashion-MNIST architecture 784-256-256-256-10, twins, float32, "
          f"encoder hidden layer {hidden or 'none (the linear encoder)'}")
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("  (PyTorch not installed: pip install -e '.[bench]' to add the PyTorch column)")
    rng = np.random.default_rng(0)
    for batch in (128, 32):
        x = rng.random((batch, 784)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        times = {}
        for backend in ("numba", "numpy"):
            trainer = _fashion_step_trainer(backend, batch, hidden)
            times[backend] = median_time(lambda: trainer.step(x, y), repeats)
        # matmuls alone: replay the exact operands of one step
        trainer = _fashion_step_trainer("numpy", batch, hidden)
        ops = get_ops("numpy")
        original = ops.matmul
        recorded = []
        ops.matmul = lambda a, b: (recorded.append((a.copy(), b.copy())), original(a, b))[1]
        try:
            trainer.step(x, y)
        finally:
            ops.matmul = original
        times["matmuls"] = median_time(lambda: [a @ b for a, b in recorded], repeats)
        line = (f"  batch {batch:3d}: numba {times['numba'] * 1e3:7.2f} ms   numpy {times['numpy'] * 1e3:7.2f} ms   "
                f"matmuls alone {times['matmuls'] * 1e3:7.2f} ms ({len(recorded)} products)")
        if have_torch:
            times["torch"] = median_time(_torch_step(batch, trainer.config), repeats)
            line += f"   pytorch {times['torch'] * 1e3:7.2f} ms"
        print(line)
        print(f"      ratios: numba/numpy {times['numba'] / times['numpy']:.2f}   "
              f"numba/matmuls {times['numba'] / times['matmuls']:.2f}" +
              (f"   numba/pytorch {times['numba'] / times['torch']:.2f}   numpy/pytorch "
               f"{times['numpy'] / times['torch']:.2f}" if have_torch else ""))


def bench_compile():
    print("\n4b. Numba compile time for the whole backend (fresh process each)")
    template = ("import time, numpy as np; t=time.perf_counter();"
                "from vaelayer_np.config import TrainConfig; from vaelayer_np.trainer import Trainer;"
                "tr=Trainer(TrainConfig(dataset='fashion-mnist', widths=(8,8), backend='{}'), 16, 10);"
                "x=np.random.default_rng(0).random((4,16)).astype(np.float32); tr.step(x, np.arange(4));"
                "tr.predict_proba(x); print(time.perf_counter()-t)")
    code, ref = template.format("numba"), template.format("numpy")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda c: float(subprocess.run([sys.executable, "-c", c], env=env, capture_output=True,  # noqa: E731
                                             text=True, check=True).stdout.strip().splitlines()[-1])
        cold = run(code)
        warm = statistics.median(run(code) for _ in range(3))
        base = statistics.median(run(ref) for _ in range(3))
    print(f"  first step incl. compile: cold cache {cold:.2f} s, warm cache {warm:.2f} s, "
          f"numpy backend (no compile) {base:.2f} s; compile share with warm cache {max(warm - base, 0):.2f} s")


def bench_epoch():
    import resource

    from .data import load_dataset

    print("\n4a. one Fashion-MNIST epoch (54,000 examples, batch 128), default settings")
    try:
        ds = load_dataset("fashion-mnist")
    except ValueError as exc:
        print(f"  skipped: {exc}")
        return
    for backend in ("numba", "numpy"):
        trainer = Trainer(TrainConfig(dataset="fashion-mnist", backend=backend), ds.n_features, ds.n_classes)
        t0 = time.perf_counter()
        trainer.train_epoch(ds.x_train, ds.y_train)
        print(f"  {backend}: {time.perf_counter() - t0:.1f} s per epoch")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident memory of this process so far: {peak:.0f} MB")


def run_bench(repeats=20, quick=False):
    import numba
    print(f"vaelayer bench: numpy {np.__version__}, numba {numba.__version__}, {os.cpu_count()} cores, "
          f"{_threads()} thread(s) for BLAS and PyTorch (set OPENBLAS_NUM_THREADS and OMP_NUM_THREADS to "
          f"change); medians of {repeats} repeats\n")
    bench_kernels(repeats)
    bench_step(repeats)
    if not quick:
        bench_epoch()
        bench_compile()
