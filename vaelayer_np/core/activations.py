"""Element-wise activations with their hand-written derivatives.

Every activation is a pair of pure functions::

    out = forward(x)
    dx  = backward(dout, x, out)      # dL/dx given dL/dout

``x`` is the pre-activation and ``out`` the activation; each backward uses
whichever of the two makes the derivative cheapest.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._validate import check_choice

LEAKY_SLOPE = 0.01  # default negative slope of leaky ReLU


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(x, 0)


def relu_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d relu / dx = 1 where x > 0, else 0 (0 at the kink)."""
    return dout * (x > 0)


def leaky_relu(x: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    """x where x > 0, slope * x elsewhere."""
    return np.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    return dout * np.where(x > 0, x.dtype.type(1), x.dtype.type(slope))


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d tanh / dx = 1 - tanh(x)^2."""
    return dout * (1 - out * out)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d sigmoid / dx = s (1 - s)."""
    return dout * out * (1 - out)


def identity(x: np.ndarray) -> np.ndarray:
    return x


def identity_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return dout


@dataclass(frozen=True)
class ActivationFn:
    name: str
    forward: Callable
    backward: Callable


ACTIVATIONS = {
    "relu": ActivationFn("relu", relu, relu_backward),
    "leaky_relu": ActivationFn("leaky_relu", leaky_relu, leaky_relu_backward),
    "tanh": ActivationFn("tanh", tanh, tanh_backward),
    "sigmoid": ActivationFn("sigmoid", sigmoid, sigmoid_backward),
    "identity": ActivationFn("identity", identity, identity_backward),
}


def get_activation(name: str) -> ActivationFn:
    """Look up an activation by name; unknown names raise ``ValueError``."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]
