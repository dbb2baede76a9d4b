"""The whole method in one file: VAE layers trained by IFFCL (local losses) or by backprop.

Read this first. NumPy only, no input checks, no files: parameters are dicts of arrays, every
function is the equation written above it. With the same settings the library computes the same
numbers (with checks, options and speed): ``tests/test_minimal.py`` shows that a few IFFCL and
backprop steps here give the library's parameters to 1e-12 in float64, and that the loop below
trains the digits to over 95% test accuracy.
Shapes: N examples, D inputs, H encoder width, K latent units, C classes.

Run it: ``python -m vaelayer_np.core.minimal`` (trains on scikit-learn's digits).
"""
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BETA, BOUND, LAM, MARGIN, COS_EPS = 1e-3, 6.0, 10.0, 0.5, 1e-8   # the library's defaults


# ------------------------------------------------------------------ a VAE layer, forward
def init_vae(rng: np.random.Generator, d: int, k: int, h: int, log_var_bias: float = -4.0) -> dict[str, np.ndarray]:
    """Encoder x -> h -> (mu, log_var); decoder z -> x_hat. Initial noise std exp(-1.75) = 0.17."""
    return {"W_enc": rng.standard_normal((d, h)) * np.sqrt(2.0 / d), "b_enc": np.zeros(h),
            "W_mu": rng.standard_normal((h, k)) / np.sqrt(h), "b_mu": np.zeros(k),
            "W_lv": rng.standard_normal((h, k)) * (0.1 / np.sqrt(h)), "b_lv": np.full(k, log_var_bias),
            "W_dec": rng.standard_normal((k, d)) / np.sqrt(k), "b_dec": np.zeros(d)}


def vae_forward(p: dict[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, dict]:
    """out = relu(mu) is what the next layer receives; z = mu + std * eps is what the decoder reads."""
    h_pre = x @ p["W_enc"] + p["b_enc"]
    h = np.maximum(h_pre, 0)
    mu = h @ p["W_mu"] + p["b_mu"]
    log_var = BOUND * np.tanh((h @ p["W_lv"] + p["b_lv"]) / BOUND)   # bounded in (-6, 6)
    std = np.exp(0.5 * log_var)
    z = mu + std * eps
    x_hat = z @ p["W_dec"] + p["b_dec"]
    out = np.maximum(mu, 0)
    return out, dict(x=x, h_pre=h_pre, h=h, mu=mu, log_var=log_var, std=std, eps=eps, z=z, x_hat=x_hat)


def vae_loss(c: dict) -> float:
    """The negative ELBO: mean squared reconstruction error + BETA * KL(N(mu, std^2) || N(0, I))."""
    recon = np.mean((c["x_hat"] - c["x"]) ** 2)
    kl = -0.5 * np.sum(1 + c["log_var"] - c["mu"] ** 2 - c["std"] ** 2) / c["mu"].shape[0]
    return recon + BETA * kl


# ------------------------------------------------------------------ a VAE layer, backward
def vae_backward(p: dict[str, np.ndarray], c: dict, dout: np.ndarray | None = None, dz: np.ndarray | None = None,
                 neg_elbo_weight: float = 1.0,
                 need_dx: bool = False) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Gradients of  neg_elbo_weight * neg_elbo + <dz, z> + <dout, out>:  (dx, grads), the order and the
    argument names of the library's ``VAELayer.backward(dout, cache, dz=, neg_elbo_weight=, need_dx=)``."""
    w = neg_elbo_weight
    n, x = c["mu"].shape[0], c["x"]
    d_xhat = (c["x_hat"] - x) * (2.0 / x.size) * w               # d recon / d x_hat
    g = {"W_dec": c["z"].T @ d_xhat, "b_dec": d_xhat.sum(0)}
    d_z = d_xhat @ p["W_dec"].T + (0 if dz is None else dz)
    d_mu = d_z + (w * BETA) * (c["mu"] / n)                       # z = mu + ..., KL: mu / N
    if dout is not None:
        d_mu = d_mu + dout * (c["mu"] > 0)                        # out = relu(mu)
    d_lv = 0.5 * d_z * c["eps"] * c["std"] + (w * BETA) * ((c["std"] ** 2 - 1) * (0.5 / n))  # KL: (var-1)/2N
    d_r = d_lv * (1 - (c["log_var"] / BOUND) ** 2)                # through the tanh bound
    g["W_mu"], g["b_mu"] = c["h"].T @ d_mu, d_mu.sum(0)
    g["W_lv"], g["b_lv"] = c["h"].T @ d_r, d_r.sum(0)
    d_h_pre = (d_mu @ p["W_mu"].T + d_r @ p["W_lv"].T) * (c["h_pre"] > 0)
    g["W_enc"], g["b_enc"] = x.T @ d_h_pre, d_h_pre.sum(0)
    dx = d_h_pre @ p["W_enc"].T - d_xhat if need_dx else None     # x is also the recon target
    return dx, g


# ------------------------------------------------------------------ the twins' cosine term
def cosine_term(z_a: np.ndarray, z_b: np.ndarray, y_a: Any, y_b: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """Every row of z_A against every row of z_B: pull same-label pairs together (1 - cos), push
    other pairs below the margin (max(0, cos - MARGIN)); positives and negatives each weigh 1/2."""
    inv_a = 1 / np.sqrt(np.sum(z_a * z_a, 1) + COS_EPS)
    inv_b = 1 / np.sqrt(np.sum(z_b * z_b, 1) + COS_EPS)
    cos = (z_a * inv_a[:, None]) @ (z_b * inv_b[:, None]).T
    pos = y_a[:, None] == y_b[None, :]
    n_pos, n_neg = pos.sum(), (~pos).sum()
    w_pos, w_neg = 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1)
    if n_pos == 0 or n_neg == 0:
        w_pos, w_neg = 2 * w_pos, 2 * w_neg
    weights = np.where(pos, w_pos, w_neg)
    loss = np.sum(weights * np.where(pos, 1 - cos, np.maximum(cos - MARGIN, 0)))
    g = np.where(pos, -1.0, (cos > MARGIN) * 1.0) * weights        # d loss / d cos
    gs = g * inv_a[:, None] * inv_b[None, :]                        # d cos_ij / d a_i = b_j/(|a||b|) - cos a_i/|a|^2
    d_a = gs @ z_b - ((g * cos).sum(1) * inv_a * inv_a)[:, None] * z_a
    d_b = gs.T @ z_a - ((g * cos).sum(0) * inv_b * inv_b)[:, None] * z_b
    return loss, d_a, d_b


# ------------------------------------------------------------------ output layer and Adam
def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and its gradient (softmax - onehot) / N."""
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    d = np.exp(logp)
    d[np.arange(len(y)), y] -= 1
    return -np.mean(logp[np.arange(len(y)), y]), d / len(y)


def adam(p: dict[str, np.ndarray], g: dict[str, np.ndarray], state: dict, lr: float, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> None:
    """Adam with bias correction, in place: w -= lr * m_hat / (sqrt(v_hat) + eps), with m_hat = m / (1 - b1^t)
    and v_hat = v / (1 - b2^t).

    Written in the folded form of Adam's paper (section 2): the two corrections are moved into the step
    size and epsilon, w -= step * m / (sqrt(v) + eps_hat) with step = lr * sqrt(1 - b2^t) / (1 - b1^t) and
    eps_hat = eps * sqrt(1 - b2^t). Multiply the textbook update's numerator and denominator by
    sqrt(1 - b2^t) to see that the two are the same number; the folded one saves two array divisions per
    parameter. The library's Adam (``core.optim.Adam``) uses the same form."""
    state["t"] = t = state.get("t", 0) + 1
    step, eps_hat = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t), eps * np.sqrt(1 - b2 ** t)
    for k in p:
        m = state.setdefault("m" + k, np.zeros_like(p[k]))
        v = state.setdefault("v" + k, np.zeros_like(p[k]))
        m *= b1
        m += (1 - b1) * g[k]
        v *= b2
        v += (1 - b2) * (g[k] * g[k])
        p[k] -= step * m / (np.sqrt(v) + eps_hat)


# ------------------------------------------------------------------ a network (one twin)
def init_net(rng: np.random.Generator, d: int, widths: Sequence[int], c: int, h: int) -> dict:
    dims = (d,) + tuple(widths)
    net: dict[str, Any] = {"vae": [init_vae(rng, dims[i], dims[i + 1], h) for i in range(len(widths))]}
    net["out"] = {"W": rng.standard_normal((sum(widths), c)) / np.sqrt(sum(widths)) * 0.1, "b": np.zeros(c)}
    net["opt"] = [{} for _ in range(len(widths) + 1)]
    return net


def predict(net: dict, x: np.ndarray) -> np.ndarray:
    """One twin's logits at evaluation: the means (no noise); the output layer reads every VAE layer's output."""
    outs = []
    for p in net["vae"]:
        x = np.maximum(np.maximum(x @ p["W_enc"] + p["b_enc"], 0) @ p["W_mu"] + p["b_mu"], 0)
        outs.append(x)
    return np.concatenate(outs, 1) @ net["out"]["W"] + net["out"]["b"]


def predict_both(nets: Sequence[dict], x: np.ndarray) -> np.ndarray:
    """The prediction of IFFCL's twins (the library's default, ``predict="twins"``): the mean of their softmax
    probabilities."""
    probs = []
    for net in nets:
        logits = predict(net, x)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    return np.mean(probs, axis=0)


# ------------------------------------------------------------------ the two training steps
def iffcl_step(net_a: dict, net_b: dict, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, lr: float = 1e-3,
               out_lr: float = 0.01) -> list[float]:
    """IFFCL: twin B sees a random partner of each example; each layer pair minimises
    L_k = negELBO_A + negELBO_B + LAM * cosine_term(z_A, z_B), from its own input. No dx, ever.
    Returns each L_k (before the update), as the library's ``layer{k}_loss`` metrics."""
    partner = rng.permutation(len(y))
    h_a, h_b, y_b = x, x[partner], y[partner]
    outs_a, outs_b, losses = [], [], []
    for k, (p_a, p_b) in enumerate(zip(net_a["vae"], net_b["vae"])):
        out_a, c_a = vae_forward(p_a, h_a, rng.standard_normal((len(y), p_a["b_mu"].size)))
        out_b, c_b = vae_forward(p_b, h_b, rng.standard_normal((len(y), p_b["b_mu"].size)))
        cos, d_a, d_b = cosine_term(c_a["z"], c_b["z"], y, y_b)
        losses.append(vae_loss(c_a) + vae_loss(c_b) + LAM * cos)
        adam(p_a, vae_backward(p_a, c_a, dz=LAM * d_a)[1], net_a["opt"][k], lr)
        adam(p_b, vae_backward(p_b, c_b, dz=LAM * d_b)[1], net_b["opt"][k], lr)
        h_a, h_b = out_a, out_b                       # data for the next layer: constants there
        outs_a.append(h_a)
        outs_b.append(h_b)
    for net, outs, labels in ((net_a, outs_a, y), (net_b, outs_b, y_b)):
        feats = np.concatenate(outs, 1)
        _, d_logits = softmax_xent(feats @ net["out"]["W"] + net["out"]["b"], labels)
        adam(net["out"], {"W": feats.T @ d_logits, "b": d_logits.sum(0)}, net["opt"][-1], out_lr)
    return losses


def backprop_step(net: dict, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, lr: float = 1e-3,
                  out_lr: float = 0.01, elbo_weight: float = 0.0) -> None:
    """The baseline: one network, L = CE + elbo_weight * sum of negELBOs, gradients through every dx."""
    caches, outs, h = [], [], x
    for p in net["vae"]:
        h, c = vae_forward(p, h, rng.standard_normal((len(y), p["b_mu"].size)))
        caches.append(c)
        outs.append(h)
    feats = np.concatenate(outs, 1)
    _, d_logits = softmax_xent(feats @ net["out"]["W"] + net["out"]["b"], y)
    d_feats = d_logits @ net["out"]["W"].T
    adam(net["out"], {"W": feats.T @ d_logits, "b": d_logits.sum(0)}, net["opt"][-1], out_lr)
    d_outs = np.split(d_feats, np.cumsum([o.shape[1] for o in outs])[:-1], axis=1)
    d_h, grads = None, []
    for i in reversed(range(len(caches))):
        dout = d_outs[i] if d_h is None else d_h + d_outs[i]
        d_h, g = vae_backward(net["vae"][i], caches[i], dout=dout, neg_elbo_weight=elbo_weight, need_dx=i > 0)
        grads.append((i, g))
    for i, g in grads:                                  # update after the whole backward pass
        adam(net["vae"][i], g, net["opt"][i], lr)


# ------------------------------------------------------------------ a training loop
def train(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, method: str = "iffcl",
          widths: Sequence[int] = (64, 64, 64), hidden: int = 256, epochs: int = 20, batch: int = 32, seed: int = 0,
          log: Callable[..., Any] = print) -> list[float]:
    """Train on standardised arrays; returns the test accuracy after each epoch."""
    rng, c = np.random.default_rng(seed), int(y.max()) + 1
    nets = [init_net(np.random.default_rng(seed * 1000 + 17 * i + 1), x.shape[1], widths, c, hidden)
            for i in range(2 if method == "iffcl" else 1)]
    accs = []
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        for s in range(0, len(y), batch):
            idx = order[s:s + batch]
            if method == "iffcl":
                iffcl_step(nets[0], nets[1], x[idx], y[idx], rng)
            else:
                backprop_step(nets[0], x[idx], y[idx], rng)
        accs.append(float(np.mean(predict_both(nets, x_test).argmax(1) == y_test)))  # both twins, or the one net
        log(f"epoch {epoch + 1}: test accuracy {accs[-1]:.4f}")
    return accs


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, standardised with the training split's statistics; 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.data[order], data.target[order]
    cut = int(0.8 * len(y))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-8
    return (x[:cut] - mean) / std, y[:cut], (x[cut:] - mean) / std, y[cut:]


if __name__ == "__main__":
    train(*digits())
