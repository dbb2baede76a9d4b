import numpy as np

from vaelayer_np.core.optim import SGD, Adam


def textbook_adam(w, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def test_adam_matches_the_textbook_with_bias_correction(rng):
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) * 10 ** rng.uniform(-6, 1) for _ in range(25)]
    params = {"W": w0.copy()}
    opt = Adam(params, lr=1e-2)
    for g in grads:
        opt.step({"W": g})
    assert np.allclose(params["W"], textbook_adam(w0, grads, lr=1e-2), rtol=1e-10, atol=1e-12)
    # the first step moves every weight by lr (bias correction at work)
    params = {"W": np.zeros(3)}
    Adam(params, lr=0.1).step({"W": np.array([1e-3, -5.0, 2.0])})
    assert np.allclose(np.abs(params["W"]), 0.1, rtol=1e-4)


def test_sgd_momentum_and_weight_decay():
    params = {"W": np.array([1.0]), "b": np.array([1.0])}
    opt = SGD(params, lr=0.1, momentum=0.5, weight_decay=0.1)
    opt.step({"W": np.array([1.0]), "b": np.array([1.0])})
    # W: g = 1 + 0.1*1 = 1.1 -> W = 1 - 0.11; b has no decay: 1 - 0.1
    assert np.allclose(params["W"], 0.89) and np.allclose(params["b"], 0.9)
    opt.step({"W": np.array([0.0]), "b": np.array([0.0])})
    # v_b = 0.5 * 1 + 0 -> b = 0.9 - 0.05
    assert np.allclose(params["b"], 0.85)


def test_optimizer_state_round_trip(rng):
    params = {"W": rng.standard_normal((2, 3))}
    opt = Adam(params)
    opt.step({"W": rng.standard_normal((2, 3))})
    state = {k: v.copy() for k, v in opt.state_dict().items()}
    params2 = {"W": params["W"].copy()}
    opt2 = Adam(params2)
    opt2.load_state_dict(state)
    g = rng.standard_normal((2, 3))
    opt.step({"W": g})
    opt2.step({"W": g})
    assert np.array_equal(params["W"], params2["W"])
