"""Bad input raises ValueError naming the argument and what was expected."""
import numpy as np
import pytest

from vaelayer_np.core import losses
from vaelayer_np.core.activations import get_activation
from vaelayer_np.core.layers import Dense, OutputLayer, VAELayer
from vaelayer_np.core.optim import SGD, Adam


def test_wrong_shape():
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 4\), got \(3, 5\)"):
        Dense(4, 2).forward(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"x: expected shape"):
        VAELayer(4, 2).forward(np.zeros(4))
    with pytest.raises(ValueError, match=r"target: expected the same shape as pred"):
        losses.mse(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"eps: expected shape \(3, 2\)"):
        VAELayer(4, 2).forward(np.zeros((3, 4)), eps=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"dout: expected shape"):
        layer = Dense(4, 2)
        _, cache = layer.forward(np.zeros((3, 4)))
        layer.backward(np.zeros((3, 3)), cache)


def test_wrong_dtype():
    with pytest.raises(ValueError, match="x: expected dtype float32 or float64, got int64"):
        Dense(4, 2).forward(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"x: expected dtype float32 \(the layer's dtype\), got float64"):
        Dense(4, 2, dtype=np.float32).forward(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="labels: expected integer class labels, got dtype float64"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="x: expected a numpy ndarray, got list"):
        Dense(2, 2).forward([[1.0, 2.0]])
    with pytest.raises(ValueError, match="dtype: expected float32 or float64"):
        Dense(2, 2, dtype=np.int32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(bad):
    x = np.zeros((2, 4))
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        VAELayer(4, 2).forward(x)
    with pytest.raises(ValueError, match="logits: contains NaN or inf"):
        losses.softmax_cross_entropy(x, np.array([0, 1]))


def test_cosine_targets_must_be_plus_or_minus_one():
    a = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"target: every target must be \+1 or -1"):
        losses.cosine_embedding(a, a, np.array([1.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match=r"target: expected shape \(3,\)"):
        losses.cosine_embedding(a, a, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="margin"):
        losses.cosine_embedding(a, a, np.ones(3), margin=2.0)


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels: labels must lie in \[0, 3\)"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target: BCE targets must lie in \[0, 1\]"):
        losses.bce_with_logits(np.zeros((1, 2)), np.array([[0.5, 2.0]]))
    with pytest.raises(ValueError, match="x: recon='bce' needs inputs in"):
        VAELayer(2, 2, recon="bce").forward(np.array([[0.5, 3.0]]))


def test_unknown_options():
    with pytest.raises(ValueError, match="activation: unknown option 'relu6'"):
        get_activation("relu6")
    with pytest.raises(ValueError, match="recon: unknown option"):
        VAELayer(2, 2, recon="l1")
    with pytest.raises(ValueError, match="loss: unknown option"):
        OutputLayer(2, 3, loss="hinge")
    with pytest.raises(ValueError, match="backend: unknown option 'cuda'"):
        Dense(2, 2, backend="cuda")
    with pytest.raises(ValueError, match="in_dim: expected a positive integer"):
        Dense(0, 2)
    with pytest.raises(ValueError, match="beta: expected a finite number >= 0"):
        VAELayer(2, 2, beta=-1)


def test_optimizer_inputs():
    params = {"W": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        Adam(params, lr=0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(params, momentum=1.5)
    with pytest.raises(ValueError, match=r"grads: expected keys \['W'\]"):
        Adam(params).step({"b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"grads\['W'\]: expected shape \(2, 2\)"):
        SGD(params).step({"W": np.zeros(3)})


def test_thread_counts_seeds_and_memory_are_bounded_by_name(monkeypatch):
    from vaelayer_np.fast import machine as _validate  # the machine's facts and their checks

    cores = _validate.usable_cores()
    assert cores >= 1 and _validate.check_threads(cores) == cores
    with pytest.raises(ValueError, match=rf"n_threads: {cores + 1} threads is more than the {cores} core"):
        _validate.check_threads(cores + 1, "n_threads")
    assert _validate.check_threads(10 ** 6, cap=True) == cores
    with pytest.raises(ValueError, match="threads: expected a positive integer"):
        _validate.check_threads(True)
    monkeypatch.setattr(_validate, "available_memory", lambda: 2 * 10 ** 9)
    assert _validate.check_memory("widths", 10 ** 9, "the model") == 10 ** 9
    with pytest.raises(ValueError, match=r"widths: the model needs about 3 GB of memory, more than the 2 GB available"):
        _validate.check_memory("widths", 3 * 10 ** 9, "the model")
    monkeypatch.undo()
    available = _validate.available_memory()
    assert available is None or available > 0
